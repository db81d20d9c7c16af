# The interface of subindex.pyx's class (the bodies and docstrings are there).

cdef class SubscriptionIndex:
    # exact and prefix keys: one open-addressing table (linear probing,
    # backward-shift deletion), keyed by (tag, value bytes)
    cdef SiEntry *slots
    cdef Py_ssize_t nslots              # 2**k
    cdef Py_ssize_t nentries            # keys in the table
    cdef Py_ssize_t nexact[3]           # exact keys per attribute (SI_ATTRS)
    # prefix lengths in use, sorted by (attr, len); pstart[a]..pstart[a+1] are attr a's
    cdef SiLen *plens
    cdef Py_ssize_t nplens
    cdef Py_ssize_t plens_cap
    cdef Py_ssize_t pstart[4]
    # routing patterns: the matcher (None until the first), matcher slot -> handle
    cdef Matcher matcher
    cdef int32_t *rmap
    cdef Py_ssize_t rmap_cap
    # handles that hold no key: candidates of every event
    cdef int32_t *unindexed
    cdef Py_ssize_t nunindexed
    cdef Py_ssize_t unindexed_cap
    # one event's candidates: found[:nfound], deduplicated by stamps[handle] == epoch
    cdef uint32_t *stamps
    cdef int32_t *found
    cdef Py_ssize_t nfound
    cdef Py_ssize_t handles_cap         # of stamps and found: the largest handle + 1
    cdef uint32_t epoch
    cdef dict held                      # handle -> list of (tag, value bytes) / matcher handle
    cdef list ints                      # handle -> its int object (the results share them)
    # the sinks route_batch delivers to itself: handle -> its sink
    cdef SiSink *sinks
    cdef list sink_objs                 # handle -> its subject (a str), else None
    cdef Py_ssize_t nsinks              # handles with a sink
    cdef char *scratch                  # a record being rewritten for a sink
    cdef I64Vec pairs                   # route_batch's (row << 32 | handle) of a batch
    cdef Py_ssize_t scratch_cap

    cdef inline uint64_t _hash(self, uint32_t tag, const char *p, Py_ssize_t n) noexcept
    cdef inline SiEntry *_find(self, uint32_t tag, const char *p, Py_ssize_t n) noexcept
    cdef int _resize(self, Py_ssize_t nslots) except -1
    cdef int _key_add(self, uint32_t tag, bytes value, int32_t handle) except -1
    cdef void _key_remove(self, uint32_t tag, bytes value, int32_t handle) noexcept
    cdef int _plen_add(self, uint32_t attr, uint32_t len) except -1
    cdef void _plen_remove(self, uint32_t attr, uint32_t len) noexcept
    cdef int _drop_keys(self, int32_t h) except -1
    cdef int _reserve_handle(self, Py_ssize_t handle) except -1
    cdef inline void _take(self, const int32_t *hs, Py_ssize_t n) noexcept
    cdef inline void _attr(self, uint32_t attr, const char *p, Py_ssize_t n) noexcept
    cdef int _record(self, object rsubj, const char *p, Py_ssize_t n,
                     const int64_t *routed, Py_ssize_t nrouted) except -1
    cdef list _found_list(self)
    cdef tuple _batch(self, Batch batch, Router router)
    cdef int _sink_publish(self, Router router, int32_t h, object rsubj, const char *rec,
                           Py_ssize_t rn) except -1
