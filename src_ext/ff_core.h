/* Small C helpers of fastflow's native core: build flags, table memory,
 * hashing, comparison and CRC32C. */
#ifndef FF_CORE_H
#define FF_CORE_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define FF_HAVE_MMAP 1
#endif

#ifndef FASTFLOW_DEBUG
#define FASTFLOW_DEBUG 0
#endif

/* The matcher's tables (nodes, edges, token arena, subscriptions, result
 * cache) are allocated through ff_talloc / ff_trealloc / ff_tfree.  Past
 * FF_MAP_MIN bytes a table lives in its own anonymous mapping, grown with
 * mremap where the system has it (no copy) and given back to the OS whole
 * when it is freed or moved: growing to a million subscriptions leaves no
 * freed heap behind, which the C allocator would otherwise keep resident.
 * A 64-byte header holds the size and keeps the data cache-line aligned. */
#define FF_MAP_MIN (256 * 1024)

typedef struct {
    size_t size;
    size_t mapped;
    char pad[48];
} ff_hdr;

static void *ff_talloc(size_t size) {
    ff_hdr *h;
#ifdef FF_HAVE_MMAP
    if (size >= FF_MAP_MIN) {
        void *m = mmap(NULL, size + sizeof(ff_hdr), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
#ifdef MADV_HUGEPAGE
        /* big tables fault in 2 MiB at a time where the kernel allows it */
        madvise(m, size + sizeof(ff_hdr), MADV_HUGEPAGE);
#endif
        h = (ff_hdr *)m;
        h->size = size;
        h->mapped = 1;
        return h + 1;
    }
#endif
    h = (ff_hdr *)aligned_alloc(64, sizeof(ff_hdr) + ((size + 63) & ~(size_t)63));
    if (h == NULL)
        return NULL;
    h->size = size;
    h->mapped = 0;
    return h + 1;
}

static void ff_tfree(void *p) {
    ff_hdr *h;
    if (p == NULL)
        return;
    h = (ff_hdr *)p - 1;
#ifdef FF_HAVE_MMAP
    if (h->mapped) {
        munmap(h, h->size + sizeof(ff_hdr));
        return;
    }
#endif
    free(h);
}

static void *ff_trealloc(void *p, size_t size) {
    ff_hdr *h;
    void *q;
    if (p == NULL)
        return ff_talloc(size);
    h = (ff_hdr *)p - 1;
#if defined(__linux__) && defined(MREMAP_MAYMOVE)
    if (h->mapped && size >= FF_MAP_MIN) {
        void *m = mremap(h, h->size + sizeof(ff_hdr), size + sizeof(ff_hdr), MREMAP_MAYMOVE);
        if (m == MAP_FAILED)
            return NULL;
#ifdef MADV_HUGEPAGE
        madvise(m, size + sizeof(ff_hdr), MADV_HUGEPAGE);
#endif
        h = (ff_hdr *)m;
        h->size = size;
        return h + 1;
    }
#endif
    q = ff_talloc(size);
    if (q == NULL)
        return NULL;
    memcpy(q, p, h->size < size ? h->size : size);
    ff_tfree(p);
    return q;
}

/* Sentinels and bit fields of the matcher's tables (uint32). */
#define FF_EMPTY      0xFFFFFFFFu   /* empty edge slot */
#define AOFF_PWC      0xFFFFFFFEu   /* edge kind '*' (instead of an arena offset) */
#define AOFF_FWC      0xFFFFFFFDu   /* edge kind '>' */
#define AOFF_WILD     0xFFFFFFFDu   /* aoff < AOFF_WILD: a literal token */
#define HASH_PWC      0x2a2a2a2au   /* the hash that places a '*' edge */
#define HASH_FWC      0x3e3e3e3eu   /* the hash that places a '>' edge */
#define NODE_HAS_PWC  0x40000000u   /* node has a '*' child */
#define NODE_HAS_FWC  0x80000000u   /* node has a '>' child */
#define NODE_WILD     0xC0000000u
#define NODE_COUNT    0x3FFFFFFFu   /* children + subscriptions */
#define NODE_FREE     0xFFFFFFFFu   /* a free node slot */
#define HASH_MASK     0x00000000FFFFFFFFull  /* cache entries: subject hash bits */

#if defined(__GNUC__) || defined(__clang__)
#define ff_prefetch(p) __builtin_prefetch((const void *)(p), 0, 3)
#else
#define ff_prefetch(p) ((void)(p))
#endif

/* The number of trailing zero bits of x (x != 0). */
static inline int ff_ctz64(uint64_t x) {
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
#endif
}

/* 64-bit multiply-xorshift finaliser (splitmix64). */
static inline uint64_t ff_mix(uint64_t x) {
    x ^= x >> 30; x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27; x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t ff_r8(const char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint64_t ff_r4(const char *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/* 64x64 -> 128 multiply, folded (the "mum" step of wyhash). */
static inline uint64_t ff_mum(uint64_t a, uint64_t b) {
#ifdef __SIZEOF_INT128__
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    uint64_t ha = a >> 32, hb = b >> 32, la = (uint32_t)a, lb = (uint32_t)b;
    uint64_t rh = ha * hb, rm0 = ha * lb, rm1 = hb * la, rl = la * lb;
    uint64_t t = rl + (rm0 << 32), c = t < rl;
    uint64_t lo = t + (rm1 << 32);
    c += lo < t;
    return lo ^ (rh + (rm0 >> 32) + (rm1 >> 32) + c);
#endif
}

/* Seeded hash of a byte string, in the manner of wyhash: short inputs are
 * read with (overlapping) fixed-size loads, never byte by byte and never
 * past the end.  The seed is drawn at module import so that subjects chosen
 * by a remote peer cannot be made to collide on purpose (hash flooding of
 * the open-addressing tables). */
static inline uint64_t ff_hash(const char *p, size_t n, uint64_t seed) {
    uint64_t a, b, h = seed ^ ((uint64_t)n * 0x9e3779b97f4a7c15ULL);
    if (n <= 16) {
        if (n >= 4) {
            size_t k = (n >> 3) << 2;
            a = (ff_r4(p) << 32) | ff_r4(p + k);
            b = (ff_r4(p + n - 4) << 32) | ff_r4(p + n - 4 - k);
        } else if (n > 0) {
            a = ((uint64_t)(uint8_t)p[0] << 16) | ((uint64_t)(uint8_t)p[n >> 1] << 8)
                | (uint8_t)p[n - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        while (n > 16) {
            h = ff_mum(ff_r8(p) ^ 0xa0761d6478bd642fULL, ff_r8(p + 8) ^ h);
            p += 16;
            n -= 16;
        }
        a = ff_r8(p + n - 16);
        b = ff_r8(p + n - 8);
    }
    return ff_mum(a ^ 0xe7037ed1a0b428dbULL, b ^ h ^ 0x8ebc6af09c88c6e3ULL);
}

/* Equality of two byte strings of the same length n; short ones (the
 * common subject token or subject) compared with fixed-size loads instead
 * of a call into memcmp. */
static inline int ff_eq(const char *a, const char *b, size_t n) {
    if (n >= 8) {
        if (n <= 16)
            return ff_r8(a) == ff_r8(b) && ff_r8(a + n - 8) == ff_r8(b + n - 8);
        return memcmp(a, b, n) == 0;
    }
    if (n >= 4)
        return ff_r4(a) == ff_r4(b) && ff_r4(a + n - 4) == ff_r4(b + n - 4);
    while (n--) {
        if (a[n] != b[n])
            return 0;
    }
    return 1;
}

/* CRC32C (Castagnoli, reflected 0x82F63B78): the SSE4.2 instruction when the
 * processor has it, else slicing-by-8 tables built at import. */
static uint32_t ff_crc_tab[8][256];

static void ff_crc32c_init(void) {
    uint32_t i, j, c;
    for (i = 0; i < 256; i++) {
        c = i;
        for (j = 0; j < 8; j++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        ff_crc_tab[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (j = 1; j < 8; j++)
            ff_crc_tab[j][i] = (ff_crc_tab[j - 1][i] >> 8) ^ ff_crc_tab[0][ff_crc_tab[j - 1][i] & 0xff];
}

static uint32_t ff_crc32c_sw(uint32_t crc, const char *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    crc = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, b, 8);
        v ^= crc;
        crc = ff_crc_tab[7][v & 0xff] ^ ff_crc_tab[6][(v >> 8) & 0xff] ^
              ff_crc_tab[5][(v >> 16) & 0xff] ^ ff_crc_tab[4][(v >> 24) & 0xff] ^
              ff_crc_tab[3][(v >> 32) & 0xff] ^ ff_crc_tab[2][(v >> 40) & 0xff] ^
              ff_crc_tab[1][(v >> 48) & 0xff] ^ ff_crc_tab[0][v >> 56];
        b += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ ff_crc_tab[0][(crc ^ *b++) & 0xff];
    return ~crc;
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("sse4.2")))
static uint32_t ff_crc32c_hw(uint32_t crc, const char *p, size_t n) {
    uint64_t c = ~crc;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = __builtin_ia32_crc32di(c, v);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = __builtin_ia32_crc32qi((uint32_t)c, (unsigned char)*p++);
    return ~(uint32_t)c;
}
static int ff_crc_hw = -1;
static inline uint32_t ff_crc32c(uint32_t crc, const char *p, size_t n) {
    if (ff_crc_hw < 0)
        ff_crc_hw = __builtin_cpu_supports("sse4.2") ? 1 : 0;
    return ff_crc_hw ? ff_crc32c_hw(crc, p, n) : ff_crc32c_sw(crc, p, n);
}
#else
static inline uint32_t ff_crc32c(uint32_t crc, const char *p, size_t n) {
    return ff_crc32c_sw(crc, p, n);
}
#endif

/* Wall-clock nanoseconds for record timestamps.  clock_gettime costs 20-25 ns
 * on some machines, a large share of an append; on x86-64 the time stamp
 * counter is read instead and converted with a rate measured against
 * CLOCK_REALTIME, re-anchored about every millisecond, so the error stays
 * within a few tens of ns.  (The log keeps its timestamps non-decreasing on
 * top of this.)  Called with the GIL held: the static state is not shared
 * between threads running at the same time. */
#include <time.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <x86intrin.h>
#define FF_HAVE_TSC 1
#endif

static inline int64_t ff_clock_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

#ifdef FF_HAVE_TSC
static int64_t ff_anchor_ns;
static uint64_t ff_anchor_tsc;
static double ff_ns_per_tick;
static uint64_t ff_resync_ticks;   /* 0 until the rate is known */

static int64_t ff_now_slow(uint64_t tsc) {
    int64_t now = ff_clock_ns();
    if (ff_anchor_tsc && tsc > ff_anchor_tsc) {
        int64_t dns = now - ff_anchor_ns;
        uint64_t dt = tsc - ff_anchor_tsc;
        if (dns > 500000 && dns < 1000000000) {
            double r = (double)dns / (double)dt;
            ff_ns_per_tick = ff_ns_per_tick > 0 ? 0.75 * ff_ns_per_tick + 0.25 * r : r;
            ff_resync_ticks = (uint64_t)(1000000.0 / ff_ns_per_tick);
        }
    }
    if (!ff_anchor_tsc || now - ff_anchor_ns > 500000 || ff_resync_ticks) {
        ff_anchor_ns = now;
        ff_anchor_tsc = tsc;
    }
    return now;
}

static inline int64_t ff_now_ns(void) {
    uint64_t tsc = __rdtsc();
    uint64_t d = tsc - ff_anchor_tsc;
    if (d < ff_resync_ticks)
        return ff_anchor_ns + (int64_t)((double)d * ff_ns_per_tick);
    return ff_now_slow(tsc);
}
#else
static inline int64_t ff_now_ns(void) { return ff_clock_ns(); }
#endif


/* METH_FASTCALL | METH_KEYWORDS methods whose bodies are Cython functions.
   Cython builds a dict for **kwargs on every call, even when no keyword is
   passed; a method called once per event (Router.publish,
   Publisher.publish) is installed through one of these trampolines
   instead.  One slot per method: a trampoline knows its body by its slot. */
typedef PyObject *(*ff_fastcall_t)(PyObject *, PyObject *const *, Py_ssize_t, PyObject *);
#define FF_FASTCALL_SLOTS 2
static ff_fastcall_t ff_fastcall_impl[FF_FASTCALL_SLOTS];
static PyMethodDef ff_fastcall_def[FF_FASTCALL_SLOTS];

static PyObject *ff_fastcall_tramp0(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
    return ff_fastcall_impl[0](self, args, nargs, kwnames);
}

static PyObject *ff_fastcall_tramp1(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                    PyObject *kwnames) {
    return ff_fastcall_impl[1](self, args, nargs, kwnames);
}

static ff_fastcall_t ff_fastcall_tramps[FF_FASTCALL_SLOTS] = {ff_fastcall_tramp0,
                                                               ff_fastcall_tramp1};

/* Install ``impl`` as method ``name`` of ``type`` through trampoline ``slot``. */
static int ff_install_fastcall(PyObject *type, int slot, const char *name, ff_fastcall_t impl,
                               const char *doc) {
    PyObject *descr;
    PyMethodDef *def;
    int r;
    if (slot < 0 || slot >= FF_FASTCALL_SLOTS || ff_fastcall_impl[slot] != NULL) {
        PyErr_Format(PyExc_SystemError, "fastcall slot %d is invalid or taken", slot);
        return -1;
    }
    ff_fastcall_impl[slot] = impl;
    def = &ff_fastcall_def[slot];
    def->ml_name = name;
    def->ml_meth = (PyCFunction)(void (*)(void))ff_fastcall_tramps[slot];
    def->ml_flags = METH_FASTCALL | METH_KEYWORDS;
    def->ml_doc = doc;
    descr = PyDescr_NewMethod((PyTypeObject *)type, def);
    if (descr == NULL)
        return -1;
    r = PyDict_SetItemString(((PyTypeObject *)type)->tp_dict, name, descr);
    Py_DECREF(descr);
    PyType_Modified((PyTypeObject *)type);
    return r;
}

/* The pending exception as an object (a new reference), cleared; NULL if
   none is set. */
static PyObject *ff_fetch_exception(void) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (t == NULL)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(v, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(t);
    return v;
}

/* Whether o is an instance of base: its type, or a direct subclass (the
   protocols' wire targets) at the cost of two loads, else the MRO walk. */
static inline int ff_is_kind(PyObject *o, PyObject *base) {
    PyTypeObject *t = Py_TYPE(o);
    if (t->tp_base == (PyTypeObject *)base || t == (PyTypeObject *)base)
        return 1;
    return PyObject_TypeCheck(o, (PyTypeObject *)base);
}

static inline PyObject *ff_call1(PyObject *f, PyObject *a) {
#if PY_VERSION_HEX >= 0x03090000
    return PyObject_CallOneArg(f, a);
#else
    return PyObject_CallFunctionObjArgs(f, a, NULL);
#endif
}


#endif
