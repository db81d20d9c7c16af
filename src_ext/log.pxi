# Types of the event log (log.pyx).

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from cpython.ref cimport PyObject

ctypedef struct LogEntry:       # 48 bytes per record
    int64_t seq
    int64_t ts                  # append time, ns, never decreasing
    int64_t ptime               # producer time, ns (0: none)
    int64_t next_same           # seq of the next record of the subject (0: none)
    uint64_t pos                # payload offset in the arena
    uint32_t len                # payload bytes
    uint32_t sid                # subject id; ENTRY_DELETED bit when deleted

ctypedef struct LogSubject:     # one per distinct retained subject
    PyObject *name              # the subject as str (owned)
    char *bytes                 # its UTF-8 bytes (malloc'd), NULL when free
    uint32_t len
    uint32_t hash
    int64_t first               # oldest retained seq of the subject
    int64_t last                # newest
    int64_t count               # retained records
    uint32_t memo               # filter memo: stamp << 2 | result
    uint32_t next_free
    int64_t last_abs            # absolute index entry of `last` (a hint)
    uint64_t hint_epoch         # valid while equal to the log's rebuild epoch

cdef extern from "ff_dedup.h":
    # the duplicate window (its comment says how it works)
    ctypedef struct ff_dedup_ent:
        int64_t seq
    ctypedef struct ff_dedup:
        pass
    uint32_t FF_DEDUP_MSGID
    uint64_t ff_dedup_count(const ff_dedup *d) nogil
    ff_dedup_ent *ff_dedup_find(const ff_dedup *d, uint64_t hash, uint32_t tag,
                                const char *key, uint32_t len) nogil
    int ff_dedup_add(ff_dedup *d, uint64_t hash, uint32_t tag, const char *key, uint32_t len,
                     int64_t seq, int64_t mono) nogil
    void ff_dedup_trim(ff_dedup *d, int64_t cutoff, uint64_t max) nogil
    void ff_dedup_prefetch(const ff_dedup *d, uint64_t hash) nogil
    void ff_dedup_free(ff_dedup *d) nogil

cdef extern from "ff_sha256.h":
    # the hash chain of file-backed logs: SHA-256(prev || body)
    const char *ff_sha256_impl
    ctypedef struct ff_sha256_ctx:
        pass
    void ff_sha256_init(ff_sha256_ctx *c) nogil
    void ff_sha256_update(ff_sha256_ctx *c, const void *p, size_t n) nogil
    void ff_sha256_final(ff_sha256_ctx *c, unsigned char *out) nogil
    void ff_chain_link(const unsigned char *prev, const char *body, size_t n,
                       unsigned char *out) nogil

cdef enum Discard:                  # what a full log does with an append
    DISCARD_OLD = 0
    DISCARD_NEW = 1

# The segment file format (segments.pyx, docs/log.md).
cdef enum:
    REC_HEADER = 36                 # bytes before the subject
    KIND_RECORD = 1
    KIND_DELETE = 2                 # subject field: a pattern; seq field: the bound
    KIND_PURGE = 3                  # every record with seq <= the seq field
    KIND_EVICT = 4                  # segments deleted: seqs time..seq; data: the link at seq
    FRAME_V1 = 0                    # byte 35 of a frame: format 1, no chain link
    FRAME_V2 = 2                    # format 2: a 32-byte chain link ends the frame
    LINK_LEN = 32                   # bytes of a chain link (SHA-256)
    IDX_EVERY = 4096                # records between sparse index entries
