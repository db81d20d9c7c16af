# The interface of segments.pyx's class (the bodies and docstrings are there).

cdef enum FsyncPolicy:
    FSYNC_ALWAYS = 0
    FSYNC_INTERVAL = 1
    FSYNC_NEVER = 2


cdef class SegmentStore:
    cdef Log log
    cdef object path
    cdef FsyncPolicy policy
    cdef double interval
    cdef readonly Py_ssize_t segment_size
    cdef bint strict
    cdef list bases                     # base seq of every segment, oldest first
    # the live segment
    cdef object file
    cdef object mm
    cdef Py_buffer view
    cdef bint mapped
    cdef char *base_ptr
    cdef Py_ssize_t size
    cdef Py_ssize_t wpos
    cdef Py_ssize_t synced
    cdef Py_ssize_t reserved            # allocated on disk up to here (writable via the map)
    cdef int64_t live_base
    cdef int64_t live_records
    cdef list live_index                # (seq, ts, offset) every IDX_EVERY records
    cdef int64_t last_sync_ns
    cdef int64_t interval_ns
    cdef object __weakref__
    cdef list spares                    # old segment files kept for reuse
    cdef list pending                   # fsync="interval": files the flusher fsyncs
    cdef int64_t spare_counter
    cdef object lock                    # held while the live map is msync'd or replaced
    cdef object wake
    cdef object flusher
    cdef bint stopping
    # counters
    cdef int64_t n_fsyncs
    cdef int64_t n_truncated
    cdef int64_t n_corrupt
    cdef int64_t n_deleted_segments
    cdef int64_t n_storage_full
    cdef int lock_fd
    cdef readonly list losses           # records lost to damaged files, found at open
    # the hash chain (docs/log.md): link = SHA-256(previous link || frame body)
    cdef readonly bint chain            # frames written in format 2 (with a link)
    cdef readonly Py_ssize_t frame_extra    # bytes a frame carries past its payload
    cdef readonly str chain_name        # the genesis link is derived from it
    cdef bytes genesis
    cdef unsigned char link[32]         # the link of the last frame written
    cdef dict tails                     # base seq -> the link that ends that segment
    # tail.ctl (ff_tail.h): what readers in other processes see of the writer
    cdef object ctl_mm
    cdef Py_buffer ctl_view
    cdef char *ctl                      # NULL until the log is loaded (or without a map)
    cdef readonly bint notify           # wake blocked readers after every append call

    cdef _lock(self)
    cdef _unlock(self)
    cdef _load(self)
    cdef _report_losses(self, list bases, list scans, list found, int64_t meta_first,
                        int64_t meta_last, int64_t floor)
    cdef tuple _scan(self, int64_t base, bint newest, int64_t next_base, list markers,
                     list found)
    cdef _corrupt(self, fname, Py_ssize_t off, problem)
    cdef _replay_records(self, bytes data, list spans, int64_t floor, dict literal,
                         list wild, dict deleted_bound)
    cdef bint _write_file(self, fname, bytes body, bint tolerant, bint sync,
                          str what) except -1
    cdef _full(self, fname, Py_ssize_t wanted, what)
    cdef _open_live(self, int64_t base, Py_ssize_t wpos, Py_ssize_t dirty=*)
    cdef _sync_dir(self)
    cdef int reserve(self, Py_ssize_t need, int64_t seq) except -1
    cdef int reserve_ahead(self, Py_ssize_t need) except -1
    cdef _allocate(self, Py_ssize_t end)
    cdef int write_record(self, int64_t seq, int64_t ts, int64_t ptime, const char *s,
                          Py_ssize_t slen, const char *d, Py_ssize_t dlen) except -1
    cdef int write_marker(self, int kind, int64_t seq, const char *sb,
                          Py_ssize_t slen, const char *d=*, Py_ssize_t dlen=*) except -1
    cdef void _frame_end(self, char *p, Py_ssize_t rlen) noexcept
    cdef _grow_live(self, Py_ssize_t need)
    cdef int after_append(self) except -1
    cpdef sync(self, bint force)
    cdef _sync_locked(self, bint force)
    cdef _stop_flusher(self)
    cdef bint _reuse_spare(self, fname)
    cdef _drop_old_segments(self)
    cdef _unmap(self)
    cdef _unmap_locked(self)
    cdef _seal(self, int64_t last_on_disk)
    cdef _write_index(self, int64_t base, list entries)
    cdef _ctl_open(self)
    cdef _ctl_close(self)
    cdef Py_ssize_t _sealed_size(self) noexcept
