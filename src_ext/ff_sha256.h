/* SHA-256 for the hash chain of file-backed logs (docs/log.md).
 *
 * When setup.py finds OpenSSL's libcrypto (every Debian/Ubuntu with python3
 * has libcrypto.so.3; no headers are needed) it defines FF_LIBCRYPTO and the
 * core calls OpenSSL's low-level SHA256_Init/Update/Final, which use the
 * processor's SHA extensions (SHA-NI, ARMv8 SHA2) where present: about 2
 * cycles a byte against 12-15 for portable C.  The low-level calls skip the
 * EVP provider lookup that costs more than hashing a small record.
 * Otherwise the portable implementation below is compiled in.
 *
 * The portable SHA-256 below was written for fastflow from FIPS 180-4; it is
 * dedicated to the public domain (CC0 1.0): use it for anything.
 */
#ifndef FF_SHA256_H
#define FF_SHA256_H

#include <stdint.h>
#include <string.h>

#define FF_SHA256_LEN 32

#ifdef FF_LIBCRYPTO

/* OpenSSL's SHA256_CTX (openssl/sha.h; the same layout in 1.1 and 3.x),
 * declared here so that the build needs the shared library only. */
typedef struct {
    unsigned int h[8];
    unsigned int Nl, Nh;
    unsigned int data[16];
    unsigned int num, md_len;
} ff_sha256_ctx;

int SHA256_Init(void *c);
int SHA256_Update(void *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, void *c);

static const char ff_sha256_impl[] = "openssl";

static inline void ff_sha256_init(ff_sha256_ctx *c) { SHA256_Init(c); }
static inline void ff_sha256_update(ff_sha256_ctx *c, const void *p, size_t n) {
    SHA256_Update(c, p, n);
}
static inline void ff_sha256_final(ff_sha256_ctx *c, unsigned char *out) {
    SHA256_Final(out, c);
}

#else

typedef struct {
    uint32_t h[8];
    uint64_t total;             /* bytes hashed */
    unsigned char buf[64];
    size_t nbuf;
} ff_sha256_ctx;

static const char ff_sha256_impl[] = "portable";

static const uint32_t ff_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define FF_ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void ff_sha256_block(uint32_t *h, const unsigned char *p) {
    uint32_t w[64], a, b, c, d, e, f, g, k, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = ((uint32_t)p[4 * i] << 24) | ((uint32_t)p[4 * i + 1] << 16) |
               ((uint32_t)p[4 * i + 2] << 8) | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = FF_ROR32(w[i - 15], 7) ^ FF_ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = FF_ROR32(w[i - 2], 17) ^ FF_ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; k = h[7];
    for (i = 0; i < 64; i++) {
        t1 = k + (FF_ROR32(e, 6) ^ FF_ROR32(e, 11) ^ FF_ROR32(e, 25)) + ((e & f) ^ (~e & g)) +
             ff_sha256_k[i] + w[i];
        t2 = (FF_ROR32(a, 2) ^ FF_ROR32(a, 13) ^ FF_ROR32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

static inline void ff_sha256_init(ff_sha256_ctx *c) {
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(c->h, iv, sizeof(iv));
    c->total = 0;
    c->nbuf = 0;
}

static void ff_sha256_update(ff_sha256_ctx *c, const void *data, size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    c->total += n;
    if (c->nbuf) {
        size_t take = 64 - c->nbuf < n ? 64 - c->nbuf : n;
        memcpy(c->buf + c->nbuf, p, take);
        c->nbuf += take;
        p += take;
        n -= take;
        if (c->nbuf < 64)
            return;
        ff_sha256_block(c->h, c->buf);
        c->nbuf = 0;
    }
    while (n >= 64) {
        ff_sha256_block(c->h, p);
        p += 64;
        n -= 64;
    }
    memcpy(c->buf, p, n);
    c->nbuf = n;
}

static void ff_sha256_final(ff_sha256_ctx *c, unsigned char *out) {
    uint64_t bits = c->total * 8;
    int i;
    c->buf[c->nbuf++] = 0x80;
    if (c->nbuf > 56) {
        memset(c->buf + c->nbuf, 0, 64 - c->nbuf);
        ff_sha256_block(c->h, c->buf);
        c->nbuf = 0;
    }
    memset(c->buf + c->nbuf, 0, 56 - c->nbuf);
    for (i = 0; i < 8; i++)
        c->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    ff_sha256_block(c->h, c->buf);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(c->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(c->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(c->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)c->h[i];
    }
}

#endif /* FF_LIBCRYPTO */

/* One link of the chain: SHA-256(prev || body), into out (32 bytes; out may
 * be prev). */
static inline void ff_chain_link(const unsigned char *prev, const char *body, size_t n,
                                 unsigned char *out) {
    ff_sha256_ctx c;
    ff_sha256_init(&c);
    ff_sha256_update(&c, prev, FF_SHA256_LEN);
    ff_sha256_update(&c, body, n);
    ff_sha256_final(&c, out);
}

#endif /* FF_SHA256_H */
