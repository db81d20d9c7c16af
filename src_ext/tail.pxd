# The interface of tail.pyx's class (the bodies and docstrings are there).

ctypedef struct TailFrame:         # a frame's header, read once (the map may change under it)
    int64_t seq
    int64_t ts
    int64_t time
    Py_ssize_t slen
    Py_ssize_t dlen
    int kind

cdef class TailReader:
    cdef readonly str path
    cdef object start
    cdef object start_seq
    cdef object start_time
    cdef readonly object filter
    cdef bytes filter_b
    cdef bint filtered
    cdef Parsed ps
    cdef PTok pt[MAX_TOKENS]
    cdef readonly bint strict
    cdef int mode
    cdef int64_t spin
    cdef int64_t poll_ns
    # tail.ctl
    cdef object ctl_mm
    cdef Py_buffer ctl_view
    cdef char *ctl
    cdef bint ctl_rw
    # the segment being read
    cdef object seg_mm
    cdef Py_buffer seg_view
    cdef const char *seg
    cdef Py_ssize_t seg_len
    cdef int seg_fd
    cdef readonly int64_t segment      # its base seq (-1: none)
    cdef Py_ssize_t off
    cdef int64_t expect                # the next seq to deliver
    cdef readonly int64_t lost
    cdef int64_t batch_lost
    cdef int status
    cdef readonly bint closed
    cdef int busy                      # calls in progress (close() waits for them to end)
    # a read()'s scratch: payloads, subjects
    cdef char *scratch
    cdef Py_ssize_t scap
    cdef char *sbuf
    cdef Py_ssize_t sbcap
    # counters
    cdef int64_t n_read
    cdef int64_t n_rolls
    cdef int64_t n_gaps
    cdef int64_t n_waits
    cdef int64_t n_sleeps

    cdef bint _attach(self) except -1
    cdef _detach(self)
    cdef list _bases(self)
    cdef bint _open_segment(self, int64_t base) except -1
    cdef _close_segment(self)
    cdef int _locate(self, int64_t target) except -1
    cdef int _locate_time(self, int64_t t) except -1
    cdef Py_ssize_t _frame(self, Py_ssize_t off, TailFrame *f) noexcept
    cdef Py_ssize_t _take(self, char *out, Py_ssize_t cap, Py_ssize_t limit,
                          Py_ssize_t max_bytes, bint grow, Int64Array offs, Int64Array seqs,
                          Int64Array tss, Int64Array times, Int64Array soffs) except -1
    cdef Py_ssize_t _read(self, char *out, Py_ssize_t cap, Py_ssize_t limit,
                          Py_ssize_t max_bytes, bint grow, Int64Array offs, Int64Array seqs,
                          Int64Array tss, Int64Array times, Int64Array soffs) except -1
    cdef int _settle(self) except -1
    cdef bint _ready(self) noexcept nogil
    cdef bint _wait(self, int64_t deadline) except -1
    cdef int _enter(self) except -1
    cdef int _leave(self) except -1
