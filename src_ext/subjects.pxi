# Types of the subject tokeniser (subjects.pyx), shared by the whole core.

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.ref cimport PyObject

cdef extern from "ff_core.h":
    uint64_t ff_hash(const char *p, size_t n, uint64_t seed) nogil
    uint64_t ff_mix(uint64_t x) nogil
    bint ff_eq(const char *a, const char *b, size_t n) nogil
    void ff_prefetch(const void *p) nogil
    int ff_ctz64(uint64_t x) nogil
    void *ff_talloc(size_t size) nogil
    void *ff_trealloc(void *p, size_t size) nogil
    void ff_tfree(void *p) nogil
    void ff_crc32c_init() nogil
    uint32_t ff_crc32c(uint32_t crc, const char *p, size_t n) nogil
    int64_t ff_now_ns() nogil
    ctypedef PyObject *(*ff_fastcall_t)(PyObject *, PyObject **, Py_ssize_t, PyObject *)
    int ff_install_fastcall(object type, int slot, const char *name, ff_fastcall_t impl,
                            const char *doc) except -1
    PyObject *ff_call1(object f, object a)
    bint ff_is_kind(object o, object base)
    PyObject *ff_fetch_exception()
    const int FASTFLOW_DEBUG
    const uint32_t FF_EMPTY
    const uint32_t AOFF_PWC
    const uint32_t AOFF_FWC
    const uint32_t AOFF_WILD
    const uint32_t HASH_PWC
    const uint32_t HASH_FWC
    const uint32_t NODE_HAS_PWC
    const uint32_t NODE_HAS_FWC
    const uint32_t NODE_WILD
    const uint32_t NODE_COUNT
    const uint32_t NODE_FREE
    const uint64_t HASH_MASK

ctypedef struct Tok:
    uint32_t off                # byte offset in the subject
    uint32_t len                # byte length
    uint32_t hash               # seeded token hash (literal tokens only)
    uint8_t kind                # TokKind

ctypedef struct PTok:           # a pattern token (pointing into pattern bytes)
    const char *p
    uint32_t len
    uint8_t kind

ctypedef struct Parsed:
    const char *p               # borrowed: valid while the source object lives
    Py_ssize_t n
    int ntok
    int nwild                   # number of wildcard tokens
    Tok toks[MAX_TOKENS]
