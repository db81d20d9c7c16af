# The interface of log.pyx's classes (the bodies and docstrings are there).

cdef class Position:
    cdef readonly int64_t seq
    cdef readonly int64_t lost


cdef class Record:
    cdef readonly Log log
    cdef readonly int64_t seq
    cdef readonly int64_t ts
    cdef readonly int64_t time
    cdef readonly str subject
    cdef uint64_t pos
    cdef uint32_t len
    cdef uint64_t gen
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    cdef int _resolve(self) except -1


cdef class Batch:
    cdef readonly object buffer
    cdef readonly Int64Array offsets
    cdef readonly Int64Array seqs
    cdef readonly Int64Array ts
    cdef readonly Int64Array times
    cdef readonly list subjects
    cdef readonly int64_t next_seq
    cdef public int64_t lost


cdef class Log:
    cdef readonly int64_t max_events
    cdef readonly int64_t max_bytes
    cdef readonly double max_age
    cdef int64_t max_age_ns
    cdef readonly int64_t max_per_subject
    cdef readonly int64_t max_event_size
    cdef Discard discard_mode
    cdef readonly double dedup_window
    cdef readonly int64_t dedup_max
    # index ring
    cdef LogEntry *idx
    cdef Py_ssize_t icap                # power of two
    cdef Py_ssize_t ihead
    cdef Py_ssize_t icount              # entries in the ring (deleted included)
    cdef Py_ssize_t ideleted            # deleted entries in the ring
    cdef bint dense                     # no entry dropped by a rebuild: O(1) lookup
    cdef int64_t habs                   # absolute number of the head entry
    cdef uint64_t repoch                # bumped by every rebuild (entries renumbered)
    # arena
    cdef char *arena
    cdef Py_ssize_t acap
    cdef Py_ssize_t atail
    cdef Py_ssize_t adead               # payload bytes of deleted entries
    cdef readonly uint64_t agen         # bumped when records move
    # subjects
    cdef LogSubject *subj
    cdef Py_ssize_t scap
    cdef Py_ssize_t sused
    cdef uint32_t sfree                 # free list head (sid + 1), 0 = empty
    cdef Py_ssize_t slive
    cdef uint32_t *stab                 # open addressing: sid + 1, 0 = empty
    cdef uint64_t smask
    cdef uint32_t memo_stamp
    # state
    cdef int64_t _last_seq
    cdef int64_t last_ts
    cdef int64_t count
    cdef int64_t nbytes                 # subject + payload bytes retained
    cdef Py_ssize_t apay                # payload bytes retained
    cdef dict pins                      # seq -> exported views
    cdef Py_ssize_t npins
    cdef dict _cursors
    cdef ff_dedup dedup                 # the duplicate window (ff_dedup.h)
    cdef int64_t dedup_window_ns
    cdef bint closed_
    cdef Py_ssize_t busy                # calls using the segment store now (close waits)
    cdef readonly object path
    cdef SegmentStore store             # None for an in-memory log
    cdef bint loading
    cdef bint limited                   # any of max_events, max_bytes, max_per_subject
    cdef int32_t last_sid               # subject of the last append (a hint)
    cdef const char *pre                # _append_routed: the record's first piece
    cdef int64_t skip_to                # _append_at: the seq the next record takes (0: next)
    cdef int64_t del_after              # _admit: a per-subject eviction's delete marker bound,
                                        # written after the new record (0: none)
    cdef Py_ssize_t npre                # (0 = a record in one piece)
    # counters
    cdef int64_t n_appended
    cdef int64_t n_evicted[5]
    cdef int64_t n_rejected
    cdef int64_t n_duplicates
    cdef int64_t n_loaded

    cdef inline LogEntry *_at(self, Py_ssize_t k) noexcept
    cdef Py_ssize_t _lower_bound(self, int64_t v, bint by_ts) noexcept
    cdef Py_ssize_t _find(self, int64_t seq) noexcept
    cdef LogEntry *_entry(self, int64_t seq) noexcept
    cdef Py_ssize_t _find_time(self, int64_t t) noexcept
    cdef int32_t _sid_find(self, const char *p, Py_ssize_t n, uint32_t h) noexcept
    cdef int32_t _sid_intern(self, object subject, const char *p, Py_ssize_t n,
                             uint32_t h) except -1
    cdef int _stab_grow(self) except -1
    cdef void _sid_release(self, uint32_t sid) noexcept
    cdef int32_t _subject_sid(self, object subject, bint add) except -2
    cdef _pin(self, int64_t seq)
    cdef _unpin(self, int64_t seq)
    cdef int _check_pins_head(self, Py_ssize_t k) except -1
    cdef int _check_no_pins(self) except -1
    cdef void _drop_entry(self, LogEntry *e, int reason) noexcept
    cdef void _pop_head(self) noexcept
    cdef void _evict_head(self, int reason) noexcept
    cdef void _delete(self, LogEntry *e, int reason) noexcept
    cdef int _expire(self, int64_t now, Py_ssize_t step) except -1
    cdef Py_ssize_t _place(self, Py_ssize_t n) noexcept
    cdef int _rebuild(self, Py_ssize_t acap, Py_ssize_t icap) except -1
    cdef int _make_room(self, Py_ssize_t nrec) except -1
    cdef Py_ssize_t _reserve_bytes(self, Py_ssize_t n) except -2
    cdef int _check_open(self) except -1
    cdef inline int _enter(self) except -1
    cdef int _admit(self, int32_t sid, Py_ssize_t slen, Py_ssize_t dlen) except -1
    cdef int64_t _store(self, int32_t sid, const char *d, Py_ssize_t dlen, int64_t ts,
                        int64_t ptime) except -1
    cdef int64_t _append1(self, object subject, const char *d, Py_ssize_t dlen,
                          int64_t ptime, int64_t now) except -1
    cdef int64_t _append_routed(self, object subject, const char *p, Py_ssize_t n, uint32_t h,
                                const char *pre, Py_ssize_t npre, const char *d,
                                Py_ssize_t dlen, int64_t now) except -1
    cdef int64_t _append_routed1(self, object subject, const char *p, Py_ssize_t n, uint32_t h,
                                 const char *d, Py_ssize_t dlen, int64_t now) except -1
    cdef int64_t _append(self, object subject, object data, object time) except -1
    cdef int64_t _append_at(self, object seq, object subject, object data,
                            object time) except -1
    cdef void _skip_gap(self) noexcept
    cdef tuple _append_many(self, object subjects, list datas_l, const char *base,
                            const int64_t *offs, Int64Array sizes, object time)
    cdef tuple _append_many1(self, object subjects, list datas_l, const char *base,
                             const int64_t *offs, Int64Array sizes, object time)
    cdef int _append_loop(self, object subjects, list subj_l, list datas_l, const char *base,
                          const int64_t *offs, Int64Array sizes, int64_t ptime, int64_t now,
                          bint one, const char *p, Py_ssize_t slen, uint32_t h) except -1
    cdef int _evict_for(self, int64_t k) except -1
    cdef inline bint _run_ok(self, Py_ssize_t n) noexcept
    cdef int _append_run(self, int32_t sid, const int32_t *sids, list datas_l, const char *base,
                         const int64_t *offs, Int64Array sizes, int64_t ptime,
                         const int64_t *ptimes, int64_t now) except -1
    cdef Py_ssize_t _run_bytes(self, int32_t sid, list datas_l, Int64Array sizes, int64_t ts,
                               int64_t ptime) except -1
    cdef inline Py_ssize_t _slot(self, Py_ssize_t size) except -2
    cdef inline int64_t _index(self, int32_t sid, Py_ssize_t pos, Py_ssize_t size, int64_t ts,
                               int64_t ptime) noexcept
    cdef inline int64_t _put(self, int32_t sid, const char *pre, Py_ssize_t npre, const char *d,
                             Py_ssize_t dlen, int64_t ts, int64_t ptime) except -1
    cdef inline bint _pre_ok(self, Py_ssize_t size) noexcept
    cdef inline int64_t _append_event(self, object subject, const char *p, Py_ssize_t n,
                                      uint32_t h, uint64_t gid, const char *src,
                                      Py_ssize_t srcn, uint16_t hops, const char *d,
                                      Py_ssize_t dlen, int64_t now) except -1
    cdef inline int _append_known(self, object subject, const char *p, Py_ssize_t n,
                                  uint32_t h, const char *d, Py_ssize_t dlen,
                                  int64_t ptime, int64_t now) except -1
    cdef inline int _store_known(self, object subject, const char *p, Py_ssize_t n,
                                 uint32_t h, int32_t sid, const char *d, Py_ssize_t dlen,
                                 int64_t ptime, int64_t now) except -1
    cdef int _admit_batch(self, object subjects, Int64Array sizes, bint one) except -1
    cdef int64_t _dedup_seen(self, uint32_t tag, const char *key, uint32_t n, uint64_t h,
                             int64_t mono) noexcept
    cdef int _dedup_remember(self, uint32_t tag, const char *key, uint32_t n, uint64_t h,
                             int64_t seq, int64_t mono) except -1
    cdef _purge_call(self, object subject, object up_to)
    cdef int64_t _purge(self, object subject, int64_t limit) except -1
    cdef int64_t _lo(self) except -1
    cdef inline bint _is_expired(self, LogEntry *e) noexcept
    cdef int _filter_prepare(self, object flt, Parsed *ps, PTok *pt) except -1
    cdef inline bint _filter_ok(self, uint32_t sid, PTok *pt, int ntok) noexcept
    cdef Batch _read_batch(self, int64_t seq, Py_ssize_t limit, Py_ssize_t max_bytes,
                           object filter, int64_t stop)
    cdef Batch _gather(self, list seqs)
    cdef _set_cursor(self, object name, int64_t seq)
    cdef int _load_record(self, int64_t seq, int64_t ts, int64_t ptime, const char *p,
                          Py_ssize_t n, const char *d, Py_ssize_t dlen) except -1
    cdef int _load_gap(self, int64_t last_seq) except -1
