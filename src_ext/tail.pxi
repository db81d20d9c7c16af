# Tailing a file-backed log from another process: the C side (ff_tail.h,
# whose comment gives the protocol; docs/latency.md).

from libc.stdint cimport int64_t, uint32_t

cdef extern from "ff_tail.h":
    int FF_TAIL_CTL_SIZE
    int FF_TAIL_VERSION
    int FF_TAIL_MAGIC
    int FF_TAIL_VERSION_OFF
    int FF_TAIL_NOTIFY
    int FF_TAIL_PID
    int FF_TAIL_EPOCH
    int FF_TAIL_FIRST_SEQ
    int FF_TAIL_LIVE_BASE
    int FF_TAIL_FIRST_BASE
    int FF_TAIL_CLOSED
    int FF_TAIL_LAST_SEQ
    int FF_TAIL_WORD
    int FF_TAIL_WAITERS
    void ff_publish32(char *p, uint32_t v) nogil
    uint32_t ff_acquire32(const char *p) nogil
    void ff_ctl_store64(char *ctl, int off, int64_t v) nogil
    int64_t ff_ctl_load64(const char *ctl, int off) nogil
    void ff_load_fence() nogil
    void ff_cpu_relax() nogil
    void ff_yield() nogil
    void ff_sleep_ns(int64_t ns) nogil
    int ff_futex_wait(char *ctl, uint32_t seen, int64_t timeout_ns) nogil
    void ff_tail_wake(char *ctl) nogil
    uint32_t ff_tail_word(const char *ctl) nogil
    void ff_tail_enter(char *ctl) nogil
    void ff_tail_leave(char *ctl) nogil
