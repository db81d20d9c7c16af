# The interface of matcher.pyx's classes (the bodies and docstrings are there).

cdef class MatchBatch:
    cdef readonly Matcher matcher
    cdef readonly Int64Array offsets
    cdef readonly Int64Array handles


cdef class Matcher:
    cdef Node *nodes
    cdef Py_ssize_t nodes_cap
    cdef Py_ssize_t nodes_used          # high-water mark
    cdef int32_t nodes_free
    cdef Py_ssize_t nodes_live
    # edges: one table for every node's children
    cdef Edge *edges
    cdef Py_ssize_t edges_cap           # any size (fastrange), grown by half
    cdef Py_ssize_t edges_live
    # token bytes of the literal edges: [uint16 length][bytes] each
    cdef char *arena
    cdef Py_ssize_t arena_cap
    cdef Py_ssize_t arena_used
    cdef Py_ssize_t arena_holes
    # subscriptions
    cdef Sub *subs
    cdef Py_ssize_t subs_cap
    cdef Py_ssize_t subs_used
    cdef int32_t subs_free
    cdef Py_ssize_t subs_live
    # queue groups
    cdef dict qids                      # name -> qid
    cdef list qnames                    # qid -> name or None
    cdef uint32_t *qrefs
    cdef uint32_t *qrr                  # round-robin counters
    cdef Py_ssize_t qcap
    cdef list qfree
    # result cache
    cdef CacheEntry *cache
    cdef uint64_t cache_mask            # buckets - 1 (CACHE_WAYS entries each)
    cdef Py_ssize_t cache_slots         # entries
    cdef Py_ssize_t cache_count         # blocks held, stale ones included
    cdef Py_ssize_t cache_valid         # entries that can be served
    cdef uint32_t cgen                  # global generation
    cdef uint32_t *fgen                 # generation per first-token slot
    cdef uint32_t *fcnt                 # valid entries per first-token slot
    cdef Py_ssize_t cache_bytes
    cdef Py_ssize_t cache_max_bytes
    # scratch
    cdef I32Vec found
    cdef I64Vec result
    # counters
    cdef uint64_t n_matches
    cdef uint64_t n_hits
    cdef uint64_t n_misses
    cdef uint64_t n_inserts
    cdef uint64_t n_removes
    cdef uint64_t n_cache_inserts
    cdef uint64_t n_cache_evictions
    cdef uint64_t n_cache_invalidations
    cdef uint64_t n_cache_flushes
    cdef uint64_t n_cache_uncacheable

    cdef int32_t _node_new(self, int32_t parent, uint32_t thash) except -1
    cdef void _node_free(self, int32_t nid) noexcept
    cdef inline Py_ssize_t _home(self, uint32_t parent, uint32_t thash) noexcept
    cdef inline uint32_t _edge_hash(self, Edge *e) noexcept
    cdef inline int32_t _edge_find(self, int32_t parent, const char *p, uint32_t n,
                            uint32_t h) noexcept
    cdef inline int32_t _wild_find(self, int32_t parent, uint32_t kind) noexcept
    cdef Py_ssize_t _edge_slot_of(self, int32_t child) noexcept
    cdef void _edge_insert(self, uint32_t parent, uint32_t child, uint32_t aoff,
                           uint32_t thash) noexcept
    cdef void _edge_delete(self, Py_ssize_t i) noexcept
    cdef int _edges_reserve(self, Py_ssize_t extra) except -1
    cdef void _arena_compact(self) noexcept
    cdef int32_t _qid(self, object queue) except -2
    cdef int32_t _slot_of(self, object handle) except -1
    cdef int _pattern_of(self, int32_t node, PTok *pt) noexcept
    cdef PyObject *_remove_sid(self, int32_t sid, bint invalidate) noexcept
    cdef void _qid_free(self, int32_t qid) noexcept
    cdef inline int _push_subs(self, int32_t node) except -1
    cdef int _collect(self, int32_t node, Parsed *ps, int level) except -1
    cdef int _build_result(self) except -1
    cdef int _match_res(self, object subject, const char *p, Py_ssize_t n,
                        uint64_t h, const int64_t **res) except -1
    cdef object _values(self, const int64_t *res)
    cdef int _handles(self, const int64_t *res, Int64Array out) except -1
    cdef inline CacheEntry *_cache_find(self, uint64_t h, const char *p,
                                        Py_ssize_t n) noexcept
    cdef inline bint _blk_valid(self, CacheBlock *b) noexcept
    cdef void _cache_free_entry(self, CacheEntry *e) noexcept
    cdef void _cache_clear_all(self) noexcept
    cdef void _cache_invalidate(self, PTok *pt, int ntok) noexcept
    cdef void _cache_bump_first(self, uint32_t fslot) noexcept
    cdef void _cache_flush(self) noexcept
