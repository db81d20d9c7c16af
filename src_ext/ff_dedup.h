/* The duplicate window of a log (Log.append_unique, a stream's dedup): the
 * keys (an event's id and source, or a msg_id) seen within dedup_window
 * seconds, at most dedup_max of them, each with the seq it was stored as.
 *
 * Entries are kept in arrival order in a ring (arrival order is time order,
 * so expiry and the count limit both drop from the head), and found through
 * an open-addressing table (linear probing, backward-shift deletion: no
 * tombstones, so a table under constant churn never degrades).  A slot holds
 * the key's hash (its low 32 bits) beside the entry's number, so that a
 * probe, a removal and a move read the table only: the ring entry is read
 * when the hashes agree.
 *
 * Forgetting is logical first: entries before `live` are not in the window
 * (a lookup passes over them), and they leave the table FF_DEDUP_BATCH at a
 * time, their slots prefetched together, so that the cache misses of the
 * removals overlap instead of costing one each per event.  At most
 * FF_DEDUP_MAX entries are kept (the oldest go first past it).
 *
 * The hash is the core's seeded ff_hash: keys a remote producer chooses
 * cannot be made to collide on purpose.  Keys of up to FF_DEDUP_INLINE bytes
 * live in their entry; longer ones in their own allocation.  Everything is
 * allocated here and freed by ff_dedup_free; a failed allocation returns -1
 * and leaves the window as it was. */
#ifndef FF_DEDUP_H
#define FF_DEDUP_H

#include "ff_core.h"

#define FF_DEDUP_INLINE 40
#define FF_DEDUP_MSGID 0x10000u     /* a tag (an id's length is at most 0xffff) */
#define FF_DEDUP_MAX (1u << 30)     /* entries at most (the table's slots: 2**31) */
#define FF_DEDUP_BATCH 32           /* forgotten entries removed together */
#define FF_DEDUP_AHEAD 8            /* removals between a slot's prefetch and its own */

#if defined(__GNUC__) || defined(__clang__)
#define FF_PREFETCH(p) __builtin_prefetch(p, 1, 1)
#else
#define FF_PREFETCH(p) ((void)0)
#endif

typedef struct {
    uint64_t hash;
    int64_t seq;                /* the seq the key was stored as */
    int64_t mono;               /* when (CLOCK_MONOTONIC ns) */
    uint32_t tag;               /* the key's kind: an id's length, or FF_DEDUP_MSGID */
    uint32_t len;               /* bytes of the key */
    union {
        char inl[FF_DEDUP_INLINE];
        char *ptr;
    } key;
} ff_dedup_ent;

typedef struct {
    ff_dedup_ent *ring;         /* rcap entries (a power of two, at most 2**30) */
    uint64_t rcap;
    uint64_t head, tail;        /* numbers of the entries held: [head, tail) */
    uint64_t live;              /* those in the window: [live, tail) */
    uint64_t *table;            /* tcap slots, 0 when empty, else ff_dedup_slot() */
    uint64_t tcap;
} ff_dedup;

/* A table slot: the hash's low 32 bits (its home slot is hash & mask, the
 * table being at most 2**31 slots) and the entry's number modulo 2**31,
 * plus 1 (never 0; the ring's position is that number & (rcap - 1)). */
static inline uint64_t ff_dedup_slot(uint64_t hash, uint64_t num) {
    return ((uint64_t)(uint32_t)hash << 32) | ((num & 0x7fffffffu) + 1);
}

/* The number of the entry a slot holds (entries held span under 2**31). */
static inline uint64_t ff_dedup_num(const ff_dedup *d, uint64_t slot) {
    return d->head + ((((uint32_t)slot) - 1 - d->head) & 0x7fffffffu);
}

static inline ff_dedup_ent *ff_dedup_ring(const ff_dedup *d, uint64_t num) {
    return &d->ring[num & (d->rcap - 1)];
}

/* Keys in the window. */
static inline uint64_t ff_dedup_count(const ff_dedup *d) { return d->tail - d->live; }

static inline const char *ff_dedup_key(const ff_dedup_ent *e) {
    return e->len <= FF_DEDUP_INLINE ? e->key.inl : e->key.ptr;
}

static void ff_dedup_free(ff_dedup *d) {
    uint64_t i;
    if (d->ring != NULL) {
        for (i = d->head; i != d->tail; i++) {
            ff_dedup_ent *e = ff_dedup_ring(d, i);
            if (e->len > FF_DEDUP_INLINE)
                free(e->key.ptr);
        }
    }
    free(d->ring);
    free(d->table);
    memset(d, 0, sizeof(*d));
}

/* The entry in the window with this key, or NULL. */
static inline ff_dedup_ent *ff_dedup_find(const ff_dedup *d, uint64_t hash, uint32_t tag,
                                          const char *key, uint32_t len) {
    uint64_t mask, i, v;
    if (d->tail == d->live)
        return NULL;
    mask = d->tcap - 1;
    for (i = hash & mask; (v = d->table[i]) != 0; i = (i + 1) & mask) {
        if ((uint32_t)(v >> 32) == (uint32_t)hash) {
            uint64_t num = ff_dedup_num(d, v);
            ff_dedup_ent *e = ff_dedup_ring(d, num);
            if (num >= d->live && e->hash == hash && e->tag == tag && e->len == len
                    && ff_eq(ff_dedup_key(e), key, len))
                return e;
        }
    }
    return NULL;
}

/* Bring the table slot where a lookup of this hash begins into the cache
 * (a batch asks for a later event's while it handles an earlier one). */
static inline void ff_dedup_prefetch(const ff_dedup *d, uint64_t hash) {
    if (d->tcap)
        FF_PREFETCH(&d->table[hash & (d->tcap - 1)]);
}

static inline void ff_dedup_place(uint64_t *table, uint64_t mask, uint64_t hash,
                                  uint64_t num) {
    uint64_t i = hash & mask;
    while (table[i] != 0)
        i = (i + 1) & mask;
    table[i] = ff_dedup_slot(hash, num);
}

/* Remove the oldest entry held (there is one) from the table and the ring. */
static void ff_dedup_pop(ff_dedup *d) {
    uint64_t mask = d->tcap - 1, i, j, k, v;
    ff_dedup_ent *e = ff_dedup_ring(d, d->head);
    uint64_t slot = ff_dedup_slot(e->hash, d->head);
    i = e->hash & mask;
    while (d->table[i] != slot)
        i = (i + 1) & mask;
    /* backward-shift deletion: pull later entries of the probe run into the
     * hole when their home slot is not between the hole and them */
    j = i;
    for (;;) {
        j = (j + 1) & mask;
        v = d->table[j];
        if (v == 0)
            break;
        k = (v >> 32) & mask;
        if ((j > i && (k <= i || k > j)) || (j < i && k <= i && k > j)) {
            d->table[i] = v;
            i = j;
        }
    }
    d->table[i] = 0;
    if (e->len > FF_DEDUP_INLINE)
        free(e->key.ptr);
    d->head++;
    if (d->live < d->head)
        d->live = d->head;
}

/* Remove the forgotten entries (before live) once there are `at_least`. */
static void ff_dedup_sweep(ff_dedup *d, uint64_t at_least) {
    uint64_t i, n = d->live - d->head;
    if (n == 0 || n < at_least)
        return;
    /* each slot is fetched FF_DEDUP_AHEAD removals before its own */
    for (i = d->head; i != d->live && i - d->head < FF_DEDUP_AHEAD; i++)
        FF_PREFETCH(&d->table[ff_dedup_ring(d, i)->hash & (d->tcap - 1)]);
    while (d->head != d->live) {
        if (i != d->live) {
            FF_PREFETCH(&d->table[ff_dedup_ring(d, i)->hash & (d->tcap - 1)]);
            i++;
        }
        ff_dedup_pop(d);
    }
}

/* Room for one more entry: the ring and the table (kept at most half
 * full) grown by doubling.  -1: out of memory (nothing changed). */
static int ff_dedup_reserve(ff_dedup *d) {
    uint64_t n = d->tail - d->head, i;
    if (n + 1 > d->rcap) {
        uint64_t cap = d->rcap ? d->rcap * 2 : 64;
        ff_dedup_ent *ring = (ff_dedup_ent *)malloc(cap * sizeof(ff_dedup_ent));
        if (ring == NULL)
            return -1;
        for (i = d->head; i != d->tail; i++)
            ring[i & (cap - 1)] = *ff_dedup_ring(d, i);
        free(d->ring);
        d->ring = ring;
        d->rcap = cap;
    }
    if ((n + 1) * 2 > d->tcap) {
        uint64_t cap = d->tcap ? d->tcap * 2 : 128;
        uint64_t *table = (uint64_t *)calloc(cap, sizeof(uint64_t));
        if (table == NULL)
            return -1;
        for (i = d->head; i != d->tail; i++)
            ff_dedup_place(table, cap - 1, ff_dedup_ring(d, i)->hash, i);
        free(d->table);
        d->table = table;
        d->tcap = cap;
    }
    return 0;
}

/* Remember a key that is not in the window (ff_dedup_find said so).
 * -1: out of memory (nothing changed). */
static int ff_dedup_add(ff_dedup *d, uint64_t hash, uint32_t tag, const char *key,
                        uint32_t len, int64_t seq, int64_t mono) {
    ff_dedup_ent *e;
    char *copy = NULL;
    ff_dedup_sweep(d, FF_DEDUP_BATCH);
    if (d->tail - d->head >= FF_DEDUP_MAX) {
        if (d->live == d->head)
            d->live++;
        ff_dedup_sweep(d, 1);
    }
    if (ff_dedup_reserve(d) < 0)
        return -1;
    if (len > FF_DEDUP_INLINE) {
        copy = (char *)malloc(len);
        if (copy == NULL)
            return -1;
        memcpy(copy, key, len);
    }
    e = ff_dedup_ring(d, d->tail);
    e->hash = hash;
    e->seq = seq;
    e->mono = mono;
    e->tag = tag;
    e->len = len;
    if (copy != NULL)
        e->key.ptr = copy;
    else
        memcpy(e->key.inl, key, len);
    ff_dedup_place(d->table, d->tcap - 1, hash, d->tail);
    d->tail++;
    return 0;
}

/* Forget the entries remembered at or before cutoff, and the oldest past
 * max entries (max 0: no count limit). */
static inline void ff_dedup_trim(ff_dedup *d, int64_t cutoff, uint64_t max) {
    while (d->live != d->tail && ff_dedup_ring(d, d->live)->mono <= cutoff)
        d->live++;
    if (max && d->tail - d->live > max)
        d->live = d->tail - max;
}

#endif
