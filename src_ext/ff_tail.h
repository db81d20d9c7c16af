/* Tailing a file-backed log from another process (docs/latency.md).
 *
 * The writer publishes each frame with a release store of its length after
 * the rest of the frame; a reader loads the length with acquire semantics,
 * then reads the frame and checks its CRC.  Beside the segments, the file
 * tail.ctl (4096 bytes, mapped shared by the writer and every reader)
 * carries what a reader cannot see in the frames: where the live segment
 * is, the lowest segment whose bytes are intact, and the futex word that
 * blocked readers sleep on.  Its fields sit on separate cache lines, by
 * who writes them and how often, so that a spinning reader never shares a
 * line with the writer's per-append stores.
 */
#ifndef FF_TAIL_H
#define FF_TAIL_H

#include <stdint.h>
#include <string.h>
#include <time.h>
#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sched.h>

#define FF_TAIL_CTL_SIZE 4096
#define FF_TAIL_VERSION 1

/* byte offsets in tail.ctl (little-endian) */
#define FF_TAIL_MAGIC 0          /* 8 bytes "FFTAIL01", written last on creation */
#define FF_TAIL_VERSION_OFF 8    /* u32 */
#define FF_TAIL_NOTIFY 12        /* u32: 1 when the writer wakes blocked readers */
#define FF_TAIL_PID 16           /* i64: the writer's pid */
#define FF_TAIL_EPOCH 24         /* i64: opens of the log by a writer */
#define FF_TAIL_FIRST_SEQ 64     /* i64: the log's first retained seq (on change) */
#define FF_TAIL_LIVE_BASE 128    /* i64: base seq of the live segment */
#define FF_TAIL_FIRST_BASE 136   /* i64: segments below it may be deleted or reused */
#define FF_TAIL_CLOSED 144       /* i64: 1 after a clean close */
#define FF_TAIL_LAST_SEQ 192     /* i64: last seq written (after every append call) */
#define FF_TAIL_WORD 256         /* u32: futex word, bumped when the writer wakes */
#define FF_TAIL_WAITERS 320      /* i32: readers asleep on the word */

static inline void ff_publish32(char *p, uint32_t v) {
    /* everything stored before is visible before the length is */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(p, &v, 4);           /* one 32-bit store */
}

static inline uint32_t ff_acquire32(const char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return v;
}

static inline void ff_ctl_store64(char *ctl, int off, int64_t v) {
    __atomic_store_n((int64_t *)(ctl + off), v, __ATOMIC_RELEASE);
}

static inline int64_t ff_ctl_load64(const char *ctl, int off) {
    return __atomic_load_n((const int64_t *)(ctl + off), __ATOMIC_ACQUIRE);
}

/* every load before it (the copied frames) happens before the loads after it */
static inline void ff_load_fence(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

static inline void ff_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void ff_yield(void) { sched_yield(); }

static inline void ff_sleep_ns(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    nanosleep(&ts, NULL);
}

static inline int ff_futex_wait(char *ctl, uint32_t seen, int64_t timeout_ns) {
#if defined(__linux__)
    struct timespec ts;
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    /* a shared futex: the word is in a file mapping of several processes */
    return (int)syscall(SYS_futex, (uint32_t *)(ctl + FF_TAIL_WORD), FUTEX_WAIT, seen, &ts,
                        NULL, 0);
#else
    (void)ctl; (void)seen;
    ff_sleep_ns(timeout_ns < 1000000 ? timeout_ns : 1000000);
    return 0;
#endif
}

/* the writer, after a frame is published, when ctl's notify is on: a full
 * fence orders the frame's length before the load of the waiter count
 * (the reader counts itself in before it checks the length the last time) */
static inline void ff_tail_wake(char *ctl) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n((int32_t *)(ctl + FF_TAIL_WAITERS), __ATOMIC_RELAXED) > 0) {
        __atomic_add_fetch((uint32_t *)(ctl + FF_TAIL_WORD), 1, __ATOMIC_SEQ_CST);
#if defined(__linux__)
        syscall(SYS_futex, (uint32_t *)(ctl + FF_TAIL_WORD), FUTEX_WAKE, 0x7fffffff, NULL,
                NULL, 0);
#endif
    }
}

static inline uint32_t ff_tail_word(const char *ctl) {
    return __atomic_load_n((const uint32_t *)(ctl + FF_TAIL_WORD), __ATOMIC_ACQUIRE);
}

static inline void ff_tail_enter(char *ctl) {
    __atomic_add_fetch((int32_t *)(ctl + FF_TAIL_WAITERS), 1, __ATOMIC_SEQ_CST);
}

/* leave the waiters; never below zero (a reopening writer resets the count) */
static inline void ff_tail_leave(char *ctl) {
    int32_t v = __atomic_load_n((int32_t *)(ctl + FF_TAIL_WAITERS), __ATOMIC_RELAXED);
    while (v > 0 && !__atomic_compare_exchange_n((int32_t *)(ctl + FF_TAIL_WAITERS), &v, v - 1,
                                                 0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED)) {
    }
}

#endif
