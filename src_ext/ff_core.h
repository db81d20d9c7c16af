/* Small C helpers of fastflow's native core: hashing and build flags. */
#ifndef FF_CORE_H
#define FF_CORE_H

#include <stdint.h>
#include <string.h>

#ifndef FASTFLOW_DEBUG
#define FASTFLOW_DEBUG 0
#endif

/* Sentinels of the matcher's tables (uint32 ids). */
#define FF_EMPTY    0xFFFFFFFFu     /* empty edge slot */
#define FF_TOK_ROOT 0xFFFFFFFFu     /* the root's token */
#define FF_TOK_PWC  0xFFFFFFFEu     /* edge kind '*' */
#define FF_TOK_FWC  0xFFFFFFFDu     /* edge kind '>' */
#define FF_TOK_FREE 0xFFFFFFFCu     /* a free node slot */

/* 64-bit multiply-xorshift finaliser (splitmix64). */
static inline uint64_t ff_mix(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Seeded hash of a byte string, 8 bytes per step.  The seed is drawn at
 * module import so that subjects chosen by a remote peer cannot be made to
 * collide on purpose (hash flooding of the open-addressing tables). */
static inline uint64_t ff_hash(const char *p, size_t n, uint64_t seed) {
    uint64_t h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        h = (h ^ v) * 0x9fb21c651e98df25ULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, p, n);
        h = (h ^ v) * 0x9fb21c651e98df25ULL;
        h ^= h >> 29;
    }
    return ff_mix(h);
}

#endif
