# The event log (included by core.pyx); the contract is docs/log.md.
#
# In memory: one payload arena (a byte ring; each payload contiguous) and
# one ring of fixed-size index entries in seq order.  Evicting the oldest
# record moves the heads; a record deleted in the middle (per-subject limit,
# subject purge) is marked in its entry and its bytes stay until the next
# rebuild, which copies the live records into fresh rings (to grow, or to
# drop the holes).  While no entry has been dropped by a rebuild the entry of
# seq s is at a fixed distance from the head (O(1)); otherwise a binary
# search finds it.  Subjects are interned: each has its record count, its
# oldest and newest seq, and the entries of one subject are chained in seq
# order (per-subject eviction and last-per-subject are O(1)).

import datetime as _datetime
import json
import logging
import time as _time
from collections import deque

from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.ref cimport Py_INCREF, Py_DECREF, Py_XDECREF
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM
from libc.string cimport memcpy, memset, memcmp
from libc.stdlib cimport malloc, free
from libc.stdint cimport INT64_MIN
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND
from array import array as _array

from fastflow.errors import (
    EventTooLarge, LogFullError, GapError, StaleRecordError, CorruptLogError, StorageFullError)

_logger = logging.getLogger('fastflow.log')

cdef enum:
    ENTRY_DELETED = 0x80000000
    AGE_EVICT_STEP = 4096           # expired records evicted per append at most
    LOG_MIN_INDEX = 1024            # index entries
    LOG_MIN_ARENA = 65536           # bytes
    LOG_MIN_SUBJECTS = 64

cdef enum:                          # eviction reasons (counter index)
    EV_EVENTS = 0
    EV_BYTES = 1
    EV_AGE = 2
    EV_PER_SUBJECT = 3
    EV_PURGE = 4


cdef extern from *:
    """
    #define _ff_is_bytes(o) PyBytes_CheckExact((PyObject *)(o))
    #define _ff_bytes_size(o) PyBytes_GET_SIZE((PyObject *)(o))
    #define _ff_bytes_data(o) PyBytes_AS_STRING((PyObject *)(o))
    """
    # a list item's bytes without taking a reference (the macros write nothing)
    bint _is_bytes "_ff_is_bytes"(void *o) noexcept
    Py_ssize_t _bytes_size "_ff_bytes_size"(void *o) noexcept
    const char *_bytes_data "_ff_bytes_data"(void *o) noexcept


cdef inline int64_t _now_ns() noexcept nogil:
    return ff_now_ns()


cdef inline int64_t _mono_ns() noexcept nogil:
    # time.monotonic_ns()'s clock (the duplicate window's), without a Python call
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef int64_t _ptime(object t) except? -1:
    """A producer time: an int of ns in the int64 range."""
    if not isinstance(t, int):
        raise TypeError('time must be an int (ns since the epoch), not {}'.format(
            type(t).__name__))
    if not -(1 << 63) <= t < (1 << 63):
        raise ValueError('time {} is outside the int64 range of ns'.format(t))
    return t


def _seek_time_ns(t):
    """ns since the epoch from an int (ns) or a datetime (naive = local time)."""
    if isinstance(t, _datetime.datetime):
        return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000
    if isinstance(t, int) and not isinstance(t, bool):
        if not -(1 << 63) <= t < (1 << 63):
            raise ValueError('time {} is outside the int64 range of ns'.format(t))
        return t
    raise TypeError('time must be an int (ns since the epoch) or a datetime, not {}'.format(
        type(t).__name__))


@cython.final
cdef class Position:
    """Where a read starts: ``seq`` and the number of records ``lost``
    (requested but evicted)."""

    def __init__(self, int64_t seq, int64_t lost=0):
        self.seq = seq
        self.lost = lost

    def __iter__(self):
        return iter((self.seq, self.lost))

    def __eq__(self, other):
        return tuple(self) == tuple(other)

    def __repr__(self):
        return 'Position(seq={}, lost={})'.format(self.seq, self.lost)


@cython.final
cdef class Record:
    """One record as a zero-copy view of its bytes in the log's arena.

    ``memoryview(rec)`` pins the record: while the view is held, an append
    that would evict or move it raises ``BufferError``.  Using a record that
    was evicted since raises ``StaleRecordError``.
    """

    cdef int _resolve(self) except -1:
        cdef LogEntry *e
        if self.log.closed_:
            raise StaleRecordError('record {}: the log is closed'.format(self.seq))
        e = self.log._entry(self.seq)
        if e == NULL:
            raise StaleRecordError('record {} was evicted (retained: {}..{})'.format(
                self.seq, self.log.first_seq, self.log.last_seq))
        self.pos = e.pos
        self.gen = self.log.agen
        return 0

    @property
    def data(self):
        """The payload as bytes (a copy)."""
        self._resolve()
        return PyBytes_FromStringAndSize(self.log.arena + self.pos, self.len)

    def __bytes__(self):
        return self.data

    def __len__(self):
        return self.len

    def __getbuffer__(self, Py_buffer *buf, int flags):
        self._resolve()
        self.log._pin(self.seq)
        self.exports += 1
        buf.buf = self.log.arena + self.pos
        buf.obj = self
        buf.len = self.len
        buf.readonly = 1
        buf.itemsize = 1
        buf.format = <char *>b'B' if flags & PyBUF_FORMAT else NULL
        buf.ndim = 1
        self.shape[0] = self.len
        self.strides[0] = 1
        buf.shape = self.shape if flags & PyBUF_ND else NULL
        buf.strides = self.strides if flags & PyBUF_STRIDES else NULL
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        self.exports -= 1
        self.log._unpin(self.seq)

    def __repr__(self):
        return 'Record(seq={}, ts={}, subject={!r}, {} bytes)'.format(
            self.seq, self.ts, self.subject, self.len)


@cython.final
cdef class Batch:
    """Records read in one call: one contiguous ``buffer`` of payloads and
    ``Int64Array`` columns ``offsets`` (len + 1), ``seqs``, ``ts``, ``times``;
    ``subjects`` is a list of str.  ``next_seq`` is where the next read
    starts.  ``lost``: for a read, the records from the requested seq up to
    the first readable one that existed and are gone (as
    ``seek(seq=...).lost``); for a replay's batch, the records the replay
    skipped so far."""

    def __len__(self):
        return self.seqs.n

    def subject(self, Py_ssize_t i):
        if i < 0:
            i += self.seqs.n
        if not 0 <= i < self.seqs.n:
            raise IndexError('batch index {} out of range for length {}'.format(i, self.seqs.n))
        return self.subjects[i]

    def data(self, Py_ssize_t i):
        """Payload ``i`` as a memoryview slice of ``buffer``."""
        if i < 0:
            i += self.seqs.n
        if not 0 <= i < self.seqs.n:
            raise IndexError('batch index {} out of range for length {}'.format(i, self.seqs.n))
        return memoryview(self.buffer)[self.offsets.data[i]:self.offsets.data[i + 1]]

    def __iter__(self):
        mv = memoryview(self.buffer)
        cdef Py_ssize_t i
        for i in range(self.seqs.n):
            yield (self.seqs.data[i], self.ts.data[i], self.subjects[i],
                   mv[self.offsets.data[i]:self.offsets.data[i + 1]])

    @property
    def nbytes(self):
        return len(self.buffer)

    def __repr__(self):
        return 'Batch({} records, {} bytes, next_seq={})'.format(
            self.seqs.n, len(self.buffer), self.next_seq)


cdef Batch _new_batch(Py_ssize_t n):
    cdef Batch b = Batch.__new__(Batch)
    b.offsets = Int64Array.new(n + 1)
    b.seqs = Int64Array.new(n)
    b.ts = Int64Array.new(n)
    b.times = Int64Array.new(n)
    b.subjects = []
    b.buffer = b''
    return b


@cython.final
cdef class Log:
    """An append-only log of records with bounded retention, replay,
    cursors and optional segment files.  See docs/log.md."""

    AGE_EVICT_STEP = 4096  # expired records evicted per append at most

    # configuration

    def __cinit__(self):
        self.pins = {}
        self._cursors = {}
        self.dense = True

    def __init__(self, *, max_events=0, max_bytes=0, max_age=0, max_per_subject=0,
                 max_event_size=1 << 20, discard='old', dedup_window=120.0,
                 dedup_max=100_000, path=None, fsync='interval', fsync_interval=1.0,
                 segment_size=64 << 20, strict=False, chain=None, chain_name=None,
                 notify=False):
        for name, v in (('max_events', max_events), ('max_bytes', max_bytes),
                        ('max_per_subject', max_per_subject), ('dedup_max', dedup_max)):
            if not isinstance(v, int) or v < 0:
                raise ValueError('{} must be an int >= 0, got {!r}'.format(name, v))
        if not isinstance(max_event_size, int) or not 0 <= max_event_size <= 0xffffffff:
            raise ValueError('max_event_size must be an int in 0..4294967295 (0: no limit), '
                             'got {!r}'.format(max_event_size))
        if not isinstance(max_age, (int, float)) or not max_age >= 0 or max_age == float('inf'):
            raise ValueError('max_age must be a finite number of seconds >= 0, got {!r}'.format(
                max_age))
        if not isinstance(dedup_window, (int, float)) or not dedup_window >= 0:
            raise ValueError('dedup_window must be a number of seconds >= 0, got {!r}'.format(
                dedup_window))
        if discard not in ('old', 'new'):
            raise ValueError("discard must be 'old' or 'new', got {!r}".format(discard))
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.max_age_ns = <int64_t>(max_age * 1e9)
        self.max_per_subject = max_per_subject
        self.max_event_size = max_event_size if max_event_size else 0xffffffff
        self.discard_mode = DISCARD_OLD if discard == 'old' else DISCARD_NEW
        self.dedup_window = dedup_window
        self.dedup_window_ns = <int64_t>(dedup_window * 1e9) if dedup_window < 1e9 else 0
        self.dedup_max = dedup_max
        self.limited = bool(max_events or max_bytes or max_per_subject or discard == 'new')
        self.last_sid = -1
        self.idx = <LogEntry *>ff_talloc(LOG_MIN_INDEX * sizeof(LogEntry))
        self.arena = <char *>ff_talloc(LOG_MIN_ARENA)
        self.stab = <uint32_t *>ff_talloc(LOG_MIN_SUBJECTS * 2 * sizeof(uint32_t))
        if self.idx == NULL or self.arena == NULL or self.stab == NULL:
            raise MemoryError()
        self.icap = LOG_MIN_INDEX
        self.acap = LOG_MIN_ARENA
        memset(self.stab, 0, LOG_MIN_SUBJECTS * 2 * sizeof(uint32_t))
        self.smask = LOG_MIN_SUBJECTS * 2 - 1
        if fsync not in ('always', 'interval', 'never'):
            raise ValueError("fsync must be 'always', 'interval' or 'never', got {!r}".format(fsync))
        if not isinstance(fsync_interval, (int, float)) or not fsync_interval > 0:
            raise ValueError('fsync_interval must be a number of seconds > 0, got {!r}'.format(
                fsync_interval))
        if not isinstance(segment_size, int) or segment_size < 4096:
            raise ValueError('segment_size must be an int >= 4096, got {!r}'.format(segment_size))
        if chain not in (None, True, False):
            raise ValueError('chain must be True, False or None (on for a file-backed log), '
                             'got {!r}'.format(chain))
        if chain_name is not None and (not isinstance(chain_name, str) or not chain_name):
            raise ValueError('chain_name must be a non-empty str, got {!r}'.format(chain_name))
        self.path = path
        if path is not None:
            if notify not in (True, False):
                raise ValueError('notify must be True or False, got {!r}'.format(notify))
            self.store = SegmentStore(self, path, fsync, fsync_interval, segment_size, strict,
                                      chain is not False, chain_name, notify)
            # replay the segments through the append path; under the limits
            # of this open, the oldest records give way (never a rejection)
            self.loading = True
            mode = self.discard_mode
            self.discard_mode = DISCARD_OLD
            try:
                self.store.load()
            except BaseException:
                self.store.abort()
                raise
            finally:
                self.loading = False
                self.discard_mode = mode
            # the counters describe this open; what the load did is in 'loaded'
            self.n_loaded = self.count
            self.n_appended = 0
            self.n_rejected = 0
            for i in range(5):
                self.n_evicted[i] = 0
            try:
                self._cursors = self.store.load_cursors()
            except BaseException:
                self.store.abort()
                raise
            for name, c in list(self._cursors.items()):
                if c > self._last_seq:
                    _logger.warning('cursor %r at %d is past last_seq %d after recovery: moved '
                                    'back', name, c, self._last_seq)
                    self._cursors[name] = self._last_seq

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.subj != NULL:
            for i in range(self.sused):
                if self.subj[i].bytes != NULL:
                    free(self.subj[i].bytes)
                    Py_XDECREF(self.subj[i].name)
        ff_tfree(self.subj)
        ff_dedup_free(&self.dedup)
        ff_tfree(self.stab)
        ff_tfree(self.idx)
        ff_tfree(self.arena)

    # -- sizes -----------------------------------------------------------------

    @property
    def first_seq(self):
        self._check_open()
        return self.idx[self.ihead].seq if self.icount else self._last_seq + 1

    @property
    def last_seq(self):
        self._check_open()
        return self._last_seq

    @property
    def bytes(self):
        self._check_open()
        return self.nbytes

    @property
    def subjects(self):
        self._check_open()
        return self.slive

    @property
    def discard(self):
        return 'old' if self.discard_mode == DISCARD_OLD else 'new'

    def __len__(self):
        self._check_open()
        return self.count

    def stats(self):
        self._check_open()
        d = {
            'records': self.count,
            'bytes': self.nbytes,
            'subjects': self.slive,
            'first_seq': self.first_seq,
            'last_seq': self._last_seq,
            'appended': self.n_appended,
            'evicted': (self.n_evicted[EV_EVENTS] + self.n_evicted[EV_BYTES] +
                        self.n_evicted[EV_AGE] + self.n_evicted[EV_PER_SUBJECT]),
            'evicted_max_events': self.n_evicted[EV_EVENTS],
            'evicted_max_bytes': self.n_evicted[EV_BYTES],
            'evicted_max_age': self.n_evicted[EV_AGE],
            'evicted_max_per_subject': self.n_evicted[EV_PER_SUBJECT],
            'purged': self.n_evicted[EV_PURGE],
            'rejected': self.n_rejected,
            'duplicates': self.n_duplicates,
            'loaded': self.n_loaded,
            'arena_bytes': self.acap,
            'index_entries': self.icap,
        }
        if self.store is not None:
            d.update(self.store.stats())
        return d

    # -- index -------------------------------------------------------------------

    cdef inline LogEntry *_at(self, Py_ssize_t k) noexcept:
        """The k-th entry from the head."""
        return &self.idx[(self.ihead + k) & (self.icap - 1)]

    cdef Py_ssize_t _lower_bound(self, int64_t v, bint by_ts) noexcept:
        """Ring offset of the first entry whose seq (or ts) is >= v."""
        cdef Py_ssize_t lo = 0, hi = self.icount, mid
        cdef LogEntry *e
        while lo < hi:
            mid = (lo + hi) >> 1
            e = self._at(mid)
            if (e.ts if by_ts else e.seq) < v:
                lo = mid + 1
            else:
                hi = mid
        return lo

    cdef Py_ssize_t _find(self, int64_t seq) noexcept:
        """Ring offset of the first entry with entry.seq >= seq (icount if none)."""
        cdef int64_t first
        if self.icount == 0:
            return 0
        first = self.idx[self.ihead].seq
        if seq <= first:
            return 0
        if self.dense:
            return min(<Py_ssize_t>(seq - first), self.icount)
        return self._lower_bound(seq, False)

    cdef LogEntry *_entry(self, int64_t seq) noexcept:
        """The live entry of seq, or NULL."""
        cdef Py_ssize_t k = self._find(seq)
        cdef LogEntry *e
        if k >= self.icount:
            return NULL
        e = self._at(k)
        if e.seq != seq or e.sid & ENTRY_DELETED:
            return NULL
        return e

    cdef Py_ssize_t _find_time(self, int64_t t) noexcept:
        """Ring offset of the first entry with ts >= t (binary search)."""
        return self._lower_bound(t, True)

    # -- subjects ----------------------------------------------------------------

    cdef int32_t _sid_find(self, const char *p, Py_ssize_t n, uint32_t h) noexcept:
        cdef uint64_t i = h & self.smask
        cdef uint32_t v
        cdef LogSubject *s
        while True:
            v = self.stab[i]
            if v == 0:
                return -1
            s = &self.subj[v - 1]
            if s.hash == h and s.len == n and ff_eq(s.bytes, p, n):
                return <int32_t>(v - 1)
            i = (i + 1) & self.smask

    cdef int32_t _sid_intern(self, object subject, const char *p, Py_ssize_t n,
                             uint32_t h) except -1:
        """Find or add a subject (already validated)."""
        cdef int32_t sid = self._sid_find(p, n, h)
        cdef uint64_t i
        cdef LogSubject *s
        cdef char *b
        if sid >= 0:
            return sid
        if (self.slive + 1) * 2 > <Py_ssize_t>(self.smask + 1):
            self._stab_grow()
        if self.sfree:
            sid = self.sfree - 1
        else:
            _grow(<void **>&self.subj, &self.scap, self.sused + 1, sizeof(LogSubject),
                  LOG_MIN_SUBJECTS, True)
            sid = <int32_t>self.sused
        b = <char *>malloc(n if n else 1)
        if b == NULL:
            raise MemoryError()
        name = subject if isinstance(subject, str) else PyUnicode_DecodeUTF8(p, n, 'strict')
        if sid == self.sused:
            self.sused += 1
        else:
            self.sfree = self.subj[sid].next_free
        s = &self.subj[sid]
        memcpy(b, p, n)
        s.bytes = b
        s.len = <uint32_t>n
        s.hash = h
        s.first = 0
        s.last = 0
        s.count = 0
        s.memo = 0
        Py_INCREF(name)
        s.name = <PyObject *>name
        i = h & self.smask
        while self.stab[i]:
            i = (i + 1) & self.smask
        self.stab[i] = sid + 1
        self.slive += 1
        return sid

    cdef int _stab_grow(self) except -1:
        cdef uint64_t cap = (self.smask + 1) * 2, i, j
        cdef uint32_t *t = <uint32_t *>ff_talloc(cap * sizeof(uint32_t))
        if t == NULL:
            raise MemoryError()
        memset(t, 0, cap * sizeof(uint32_t))
        for i in range(self.smask + 1):
            if self.stab[i]:
                j = self.subj[self.stab[i] - 1].hash & (cap - 1)
                while t[j]:
                    j = (j + 1) & (cap - 1)
                t[j] = self.stab[i]
        ff_tfree(self.stab)
        self.stab = t
        self.smask = cap - 1
        return 0

    cdef void _sid_release(self, uint32_t sid) noexcept:
        """Forget a subject with no records left."""
        cdef LogSubject *s = &self.subj[sid]
        cdef uint64_t i = s.hash & self.smask, j, k, mask = self.smask
        cdef PyObject *name = s.name
        while self.stab[i] != sid + 1:
            i = (i + 1) & mask
        j = i
        while True:
            j = (j + 1) & mask
            if self.stab[j] == 0:
                break
            k = self.subj[self.stab[j] - 1].hash & mask
            if ((j - k) & mask) >= ((j - i) & mask):
                self.stab[i] = self.stab[j]
                i = j
        self.stab[i] = 0
        free(s.bytes)
        s.bytes = NULL
        s.name = NULL
        s.next_free = self.sfree
        self.sfree = sid + 1
        self.slive -= 1
        Py_XDECREF(name)

    cdef int32_t _subject_sid(self, object subject, bint add) except -2:
        """Validate and intern ``subject``; -1 if unknown and not ``add``."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef uint32_t h
        cdef int32_t sid
        cdef Parsed ps
        as_utf8(subject, &p, &n, False)
        h = <uint32_t>ff_hash(p, n, _SEED)
        sid = self._sid_find(p, n, h)
        if sid >= 0:
            return sid
        parse_subject(p, n, &ps, False, subject)
        if not add:
            return -1
        return self._sid_intern(subject, p, n, h)

    # -- pins ----------------------------------------------------------------------

    cdef _pin(self, int64_t seq):
        self.pins[seq] = self.pins.get(seq, 0) + 1
        self.npins += 1

    cdef _unpin(self, int64_t seq):
        c = self.pins.get(seq, 0) - 1
        if c > 0:
            self.pins[seq] = c
        else:
            self.pins.pop(seq, None)
        self.npins -= 1

    cdef int _check_pins_head(self, Py_ssize_t k) except -1:
        """Raise BufferError if one of the k oldest entries is pinned."""
        cdef int64_t last
        if self.npins == 0 or k == 0:
            return 0
        last = self._at(k - 1).seq
        for seq in self.pins:
            if seq <= last:
                raise BufferError(
                    'record {} is exported as a buffer (memoryview); release it before '
                    'the log can evict or move it'.format(seq))
        return 0

    cdef int _check_no_pins(self) except -1:
        if self.npins:
            raise BufferError(
                'records {} are exported as buffers (memoryview); release them before '
                'the log can move its arena'.format(sorted(self.pins)))
        return 0

    # -- eviction ------------------------------------------------------------------

    cdef void _drop_entry(self, LogEntry *e, int reason) noexcept:
        """Account for the removal of live entry ``e`` (bytes, counts, subject)."""
        cdef uint32_t sid = e.sid
        cdef LogSubject *s = &self.subj[sid]
        self.count -= 1
        self.nbytes -= e.len + s.len
        self.apay -= e.len
        self.n_evicted[reason] += 1
        s.count -= 1
        if s.count == 0:
            self._sid_release(sid)
        else:
            s.first = e.next_same

    cdef void _pop_head(self) noexcept:
        """Remove the head entry from the ring, then any deleted entries."""
        self.ihead = (self.ihead + 1) & (self.icap - 1)
        self.icount -= 1
        self.habs += 1
        while self.icount and self.idx[self.ihead].sid & ENTRY_DELETED:
            self.adead -= self.idx[self.ihead].len
            self.ihead = (self.ihead + 1) & (self.icap - 1)
            self.icount -= 1
            self.ideleted -= 1
            self.habs += 1
        if self.icount == 0:
            self.atail = 0
            self.adead = 0
            self.ideleted = 0
            self.dense = True

    cdef void _evict_head(self, int reason) noexcept:
        self._drop_entry(&self.idx[self.ihead], reason)
        self._pop_head()

    cdef void _delete(self, LogEntry *e, int reason) noexcept:
        """Delete a live entry anywhere (its subject's oldest)."""
        if e == &self.idx[self.ihead]:
            self._evict_head(reason)
            return
        self._drop_entry(e, reason)
        e.sid |= ENTRY_DELETED
        self.ideleted += 1
        self.adead += e.len

    cdef int _expire(self, int64_t now, Py_ssize_t step) except -1:
        """Evict up to ``step`` expired records (stops at a pinned one)."""
        cdef int64_t cutoff = now - self.max_age_ns
        cdef Py_ssize_t done = 0
        if self.max_age_ns == 0:
            return 0
        while self.icount and self.idx[self.ihead].ts < cutoff and done < step:
            if self.npins and self.idx[self.ihead].seq in self.pins:
                break
            self._evict_head(EV_AGE)
            done += 1
        return done

    # -- space -----------------------------------------------------------------------

    cdef Py_ssize_t _place(self, Py_ssize_t n) noexcept:
        """Arena offset where n payload bytes fit contiguously, or -1."""
        cdef Py_ssize_t head
        if self.icount == 0:
            self.atail = 0
            return 0 if n <= self.acap else -1
        head = <Py_ssize_t>self.idx[self.ihead].pos
        if self.atail > head:
            if n <= self.acap - self.atail:
                return self.atail
            if n <= head:
                return 0
            return -1
        if self.atail == head:
            # full, or every retained payload is empty (no byte of the arena
            # in use: the record starts where the head's empty one is)
            if n == 0 or (self.apay == 0 and self.adead == 0 and n <= self.acap - self.atail):
                return self.atail
            return -1
        return self.atail if n <= head - self.atail else -1

    cdef int _rebuild(self, Py_ssize_t acap, Py_ssize_t icap) except -1:
        """Copy the live records into fresh rings of the given capacities
        (drops deleted entries and arena holes)."""
        cdef char *a
        cdef LogEntry *ix
        cdef Py_ssize_t k, n = 0, used = 0
        cdef LogEntry *e
        self._check_no_pins()
        a = <char *>ff_talloc(acap)
        ix = <LogEntry *>ff_talloc(icap * sizeof(LogEntry))
        if a == NULL or ix == NULL:
            ff_tfree(a)
            ff_tfree(ix)
            raise MemoryError()
        for k in range(self.icount):
            e = self._at(k)
            if e.sid & ENTRY_DELETED:
                continue
            memcpy(a + used, self.arena + e.pos, e.len)
            ix[n] = e[0]
            ix[n].pos = used
            used += e.len
            n += 1
        if n != self.icount:
            self.dense = False
        ff_tfree(self.arena)
        ff_tfree(self.idx)
        self.arena = a
        self.idx = ix
        self.acap = acap
        self.icap = icap
        self.ihead = 0
        self.icount = n
        self.ideleted = 0
        self.adead = 0
        self.atail = used
        self.agen += 1
        self.repoch += 1
        return 0

    cdef int _make_room(self, Py_ssize_t nrec) except -1:
        """Room in the index for ``nrec`` more entries: drop the deleted
        entries if they are many (a rebuild), else grow the index alone (the
        arena does not move; in place when the ring is not wrapped)."""
        cdef Py_ssize_t icap = self.icap, k
        cdef LogEntry *ix
        if self.icount + nrec <= self.icap:
            return 0
        if self.ideleted * 4 >= self.icount:
            while icap < self.icount - self.ideleted + nrec:
                icap *= 2
            return self._rebuild(self.acap, icap)
        while icap < self.icount + nrec:
            icap *= 2
        if self.ihead + self.icount <= self.icap:
            ix = <LogEntry *>ff_trealloc(self.idx, icap * sizeof(LogEntry))
            if ix == NULL:
                raise MemoryError()
            self.idx = ix
            self.icap = icap
            return 0
        ix = <LogEntry *>ff_talloc(icap * sizeof(LogEntry))
        if ix == NULL:
            raise MemoryError()
        for k in range(self.icount):
            ix[k] = self._at(k)[0]
        ff_tfree(self.idx)
        self.idx = ix
        self.icap = icap
        self.ihead = 0
        return 0

    cdef Py_ssize_t _reserve_bytes(self, Py_ssize_t n) except -2:
        """An arena offset for n contiguous bytes: grow the arena in place
        when it is not wrapped and has few holes, else rebuild it (compact,
        and grow to twice the live bytes)."""
        cdef Py_ssize_t pos = self._place(n), live = self.apay, acap
        cdef char *a
        if pos >= 0:
            return pos
        acap = self.acap
        while acap < 2 * (live + n):
            acap *= 2
        if self.adead * 2 <= live and (self.icount == 0 or
                                       self.atail > <Py_ssize_t>self.idx[self.ihead].pos):
            # remapped, offsets unchanged; exported memoryviews hold pointers
            self._check_no_pins()
            if acap == self.acap:
                acap *= 2
            a = <char *>ff_trealloc(self.arena, acap)
            if a == NULL:
                raise MemoryError()
            self.arena = a
            self.acap = acap
            return self._place(n)
        self._rebuild(acap, self.icap)
        pos = self._place(n)
        if pos < 0:
            raise FastflowError('Log._reserve_bytes: no room for {} bytes after a rebuild of '
                                '{} bytes'.format(n, acap))
        return pos

    # -- appending ------------------------------------------------------------------

    cdef int _check_open(self) except -1:
        if self.closed_:
            raise FastflowError('log is closed')
        return 0

    cdef inline int _enter(self) except -1:
        """Start a call that may use the segment store: ``close()`` (from
        another thread) waits until it ends, and a call after close raises
        FastflowError('log is closed').  The check and the count happen
        under the GIL with nothing in between that could release it."""
        if self.closed_:
            raise FastflowError('log is closed')
        self.busy += 1
        return 0

    cdef int _admit(self, int32_t sid, Py_ssize_t slen, Py_ssize_t dlen) except -1:
        """Apply the count/bytes/per-subject limits for one more record of
        subject ``sid`` (-1: a new subject): evict (discard old) or raise
        (discard new).  Nothing is changed when it raises."""
        cdef int64_t rsize = slen + dlen
        cdef Py_ssize_t k = 0
        cdef int64_t c, b
        cdef LogEntry *e
        cdef LogSubject *s
        if self.max_bytes and rsize > self.max_bytes:
            raise EventTooLarge('record of {} bytes (subject and payload) exceeds '
                                'max_bytes={}'.format(rsize, self.max_bytes))
        if self.discard_mode == DISCARD_NEW:
            if self.max_age_ns and (
                    (self.max_events and self.count + 1 > self.max_events) or
                    (self.max_bytes and self.nbytes + rsize > self.max_bytes) or
                    (self.max_per_subject and sid >= 0 and
                     self.subj[sid].count + 1 > self.max_per_subject)):
                # expired records never cause a rejection
                self._expire(_now_ns(), 1 << 62)
                if sid >= 0 and self.subj[sid].bytes == NULL:
                    sid = -1
            if self.max_events and self.count + 1 > self.max_events:
                self.n_rejected += 1
                raise LogFullError("log full: max_events={} reached (discard='new')".format(
                    self.max_events))
            if self.max_bytes and self.nbytes + rsize > self.max_bytes:
                self.n_rejected += 1
                raise LogFullError("log full: max_bytes={} reached, the record needs {} "
                                   "more (discard='new')".format(self.max_bytes, rsize))
            if self.max_per_subject and sid >= 0 and \
                    self.subj[sid].count + 1 > self.max_per_subject:
                self.n_rejected += 1
                raise LogFullError("log full: max_per_subject={} reached for subject {!r} "
                                   "(discard='new')".format(
                                       self.max_per_subject, <object>self.subj[sid].name))
            return 0
        if self.max_bytes and rsize > self.max_bytes:
            raise EventTooLarge('record of {} bytes (subject and payload) exceeds '
                                'max_bytes={}'.format(rsize, self.max_bytes))
        # pinned records: check the whole plan before changing anything (an
        # upper bound: the head evictions as if no per-subject one happened)
        if self.npins:
            if self.max_per_subject and sid >= 0 and \
                    self.subj[sid].count + 1 > self.max_per_subject and \
                    self.subj[sid].first in self.pins:
                raise BufferError('record {} is exported as a buffer (memoryview); '
                                  'release it before the log can evict it'.format(
                                      self.subj[sid].first))
            c = self.count
            b = self.nbytes
            while k < self.icount and ((self.max_events and c + 1 > self.max_events) or
                                       (self.max_bytes and b + rsize > self.max_bytes)):
                e = self._at(k)
                if not (e.sid & ENTRY_DELETED):
                    c -= 1
                    b -= e.len + self.subj[e.sid].len
                k += 1
            self._check_pins_head(k)
        # per subject: the subject's oldest record goes
        if self.max_per_subject and sid >= 0:
            s = &self.subj[sid]
            if s.count + 1 > self.max_per_subject:
                if self.store is not None and not self.loading:
                    # its delete marker goes after the new record (see
                    # _append_known): a crash between the two frames must
                    # not leave the old record deleted and the new one unwritten
                    self.del_after = s.first
                self._delete(self._entry(s.first), EV_PER_SUBJECT)
        # count and bytes: the oldest records go
        while self.max_events and self.count + 1 > self.max_events:
            self._evict_head(EV_EVENTS)
        while self.max_bytes and self.nbytes + rsize > self.max_bytes:
            self._evict_head(EV_BYTES)
        return 0

    cdef int64_t _store(self, int32_t sid, const char *d, Py_ssize_t dlen, int64_t ts,
                        int64_t ptime) except -1:
        """Write one admitted record (room in the index is reserved)."""
        cdef Py_ssize_t pos
        cdef LogEntry *prev
        cdef LogSubject *s
        if self.icount == self.icap:
            self._make_room(1)
        if self.icount and self.atail > <Py_ssize_t>self.idx[self.ihead].pos \
                and dlen <= self.acap - self.atail:
            pos = self.atail            # the common case: room after the tail
        else:
            pos = self._reserve_bytes(dlen)
        if self.npre:
            # a record in two pieces (the router's event header, then the data)
            memcpy(self.arena + pos, self.pre, self.npre)
            if dlen > self.npre:
                memcpy(self.arena + pos + self.npre, d, dlen - self.npre)
        else:
            memcpy(self.arena + pos, d, dlen)
        if FASTFLOW_DEBUG:
            s = &self.subj[sid]
            if s.count and s.hint_epoch == self.repoch:
                prev = &self.idx[(self.ihead + (s.last_abs - self.habs)) & (self.icap - 1)]
                if prev.seq != s.last:
                    raise FastflowError('Log._store: stale entry hint for seq {}'.format(s.last))
        # the index entry and the counters: the batch paths' own step
        return self._index(sid, pos, dlen, ts, ptime)

    cdef int64_t _append1(self, object subject, const char *d, Py_ssize_t dlen,
                          int64_t ptime, int64_t now) except -1:
        cdef const char *p
        cdef Py_ssize_t n
        cdef uint32_t h
        cdef LogSubject *sj
        cdef Parsed ps
        if dlen > self.max_event_size:
            raise EventTooLarge('payload of {} bytes exceeds max_event_size={}'.format(
                dlen, self.max_event_size))
        as_utf8(subject, &p, &n, False)
        if self.store is not None and \
                REC_HEADER + self.store.frame_extra + n + dlen > self.store.segment_size:
            raise EventTooLarge('record of {} bytes exceeds segment_size={}'.format(
                REC_HEADER + self.store.frame_extra + n + dlen, self.store.segment_size))
        h = <uint32_t>ff_hash(p, n, _SEED)
        sj = &self.subj[self.last_sid] if self.last_sid >= 0 else NULL
        if not (sj != NULL and sj.bytes != NULL and sj.hash == h and sj.len == n
                and ff_eq(sj.bytes, p, n)) and self._sid_find(p, n, h) < 0:
            parse_subject(p, n, &ps, False, subject)   # a new subject: validate it
        if self.max_age_ns:
            self._expire(now, AGE_EVICT_STEP)
        self._append_known(subject, p, n, h, d, dlen, ptime, now)
        return self._last_seq

    cdef int64_t _append_routed(self, object subject, const char *p, Py_ssize_t n, uint32_t h,
                                const char *pre, Py_ssize_t npre, const char *d,
                                Py_ssize_t dlen, int64_t now) except -1:
        """Append one record for the router: ``pre[:npre] + d[:dlen]``
        (copied once, into the arena); the subject ``p[:n]`` (hash ``h``)
        was validated by the matcher already."""
        self._enter()
        self.pre = pre
        self.npre = npre
        try:
            return self._append_routed1(subject, p, n, h, d, npre + dlen, now)
        finally:
            self.npre = 0
            self.busy -= 1

    cdef int64_t _append_routed1(self, object subject, const char *p, Py_ssize_t n, uint32_t h,
                                 const char *d, Py_ssize_t dlen, int64_t now) except -1:
        if self.closed_:
            self._check_open()
        if dlen > self.max_event_size:
            raise EventTooLarge('event of {} bytes exceeds max_event_size={}'.format(
                dlen, self.max_event_size))
        if self.store is not None and \
                REC_HEADER + self.store.frame_extra + n + dlen > self.store.segment_size:
            raise EventTooLarge('record of {} bytes exceeds segment_size={}'.format(
                REC_HEADER + self.store.frame_extra + n + dlen, self.store.segment_size))
        if self.max_age_ns:
            self._expire(now, AGE_EVICT_STEP)
        self._append_known(subject, p, n, h, d, dlen, 0, now)
        if self.store is not None:
            self.store.after_append()
        return self._last_seq

    def append(self, subject, data, time=0):
        """Append one record; returns its seq."""
        self._enter()
        try:
            return self._append(subject, data, time)
        finally:
            self.busy -= 1

    cdef int64_t _append(self, object subject, object data, object time) except -1:
        cdef Py_buffer view
        cdef int64_t seq
        cdef int64_t ptime = 0 if time is 0 else _ptime(time)
        if type(data) is bytes:
            seq = self._append1(subject, PyBytes_AS_STRING(data), len(<bytes>data),
                                ptime, _now_ns())
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                seq = self._append1(subject, <const char *>view.buf, view.len, ptime, _now_ns())
            finally:
                PyBuffer_Release(&view)
        if self.store is not None and not self.loading:
            self.store.after_append()
        if FASTFLOW_DEBUG and self.icount < 2000:
            self._check()
        return seq

    def append_at(self, seq, subject, data, time=0):
        """Append one record at ``seq`` (> last_seq), a mirror's append: the
        seqs between last_seq and ``seq`` are skipped (they never exist);
        returns ``seq``."""
        self._enter()
        try:
            return self._append_at(seq, subject, data, time)
        finally:
            self.busy -= 1

    cdef int64_t _append_at(self, object seq, object subject, object data,
                            object time) except -1:
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError('seq must be an int, not {}'.format(type(seq).__name__))
        if not self._last_seq < seq < (1 << 63):
            raise ValueError('append_at: seq {} must be after last_seq {} (and below '
                             '2**63)'.format(seq, self._last_seq))
        # (_append_known moves last_seq once the record is admitted and its
        # disk space reserved: an append refused before that skips nothing,
        # and a new segment is named after the old last_seq + 1, so that a
        # reopening scan sees no seqs missing between two segments)
        self.skip_to = seq
        try:
            return self._append(subject, data, time)
        finally:
            self.skip_to = 0

    cdef void _skip_gap(self) noexcept:
        """The record being appended takes seq ``skip_to``: the seqs before
        it never exist (entries no longer at seq - first: not dense)."""
        if self.skip_to - 1 > self._last_seq:
            if self.icount:
                self.dense = False
            self._last_seq = self.skip_to - 1
        self.skip_to = 0

    def append_batch(self, subjects, datas, time=0):
        """Append many records in one call; returns ``(first_seq, last_seq)``.
        ``datas`` is a sequence of bytes-like payloads.  Validated as a whole
        first; atomic under ``discard="new"``."""
        cdef Py_ssize_t n, i
        cdef list datas_l
        cdef Int64Array sizes
        self._check_open()
        datas_l = datas if type(datas) is list else list(datas)
        n = len(datas_l)
        sizes = Int64Array.new(n)
        for i in range(n):
            # (a borrowed pointer: no reference count written per payload)
            if _is_bytes(PyList_GET_ITEM(datas_l, i)):
                sizes.data[i] = _bytes_size(PyList_GET_ITEM(datas_l, i))
                continue
            d = <object>PyList_GET_ITEM(datas_l, i)
            try:
                sizes.data[i] = memoryview(d).nbytes
            except TypeError:
                raise TypeError('datas[{}]: a bytes-like object is required, not {}'.format(
                    i, type(d).__name__)) from None
        sizes.n = n
        return self._append_many(subjects, datas_l, NULL, NULL, sizes, time)

    def append_buffer(self, subjects, buffer, offsets, time=0):
        """Append the payloads ``buffer[offsets[i]:offsets[i + 1]]`` (``offsets``
        int64: an ``Int64Array``, ``array('q')``, numpy, or a list of ints)
        with no Python object per payload; ``batch.subjects, batch.buffer,
        batch.offsets`` of a ``read`` append a batch as it was read."""
        cdef Py_buffer bview, oview
        cdef const int64_t *offs
        cdef Py_ssize_t n, i
        cdef Int64Array sizes
        self._check_open()
        if isinstance(offsets, list):
            offsets = _array('q', offsets)
        PyObject_GetBuffer(buffer, &bview, PyBUF_SIMPLE)
        try:
            try:
                PyObject_GetBuffer(offsets, &oview, PyBUF_FORMAT | PyBUF_ND)
            except (TypeError, BufferError):
                raise TypeError('offsets must be a buffer of int64 (Int64Array, array("q"), '
                                'numpy int64) or a list of ints, not {}'.format(
                                    type(offsets).__name__)) from None
            try:
                if oview.itemsize != 8 or oview.format == NULL or \
                        oview.format[0] not in (b'q', b'l', b'<', b'=') or oview.ndim != 1:
                    raise TypeError('offsets must hold int64 values')
                n = oview.shape[0] - 1
                offs = <const int64_t *>oview.buf
                if n < 0:
                    raise ValueError('offsets needs at least one entry (len(payloads) + 1)')
                sizes = Int64Array.new(max(n, 0))
                for i in range(n):
                    if offs[i] < 0 or offs[i + 1] < offs[i] or offs[i + 1] > bview.len:
                        raise ValueError('offsets[{}:{}] = {}..{} is not a slice of the {}-byte '
                                         'buffer'.format(i, i + 2, offs[i], offs[i + 1],
                                                         bview.len))
                    sizes.data[i] = offs[i + 1] - offs[i]
                sizes.n = n
                return self._append_many(subjects, None, <const char *>bview.buf, offs,
                                         sizes, time)
            finally:
                PyBuffer_Release(&oview)
        finally:
            PyBuffer_Release(&bview)

    cdef tuple _append_many(self, object subjects, list datas_l, const char *base,
                            const int64_t *offs, Int64Array sizes, object time):
        """The batch append: payload i is datas_l[i], or base[offs[i]:offs[i+1]]."""
        self._enter()
        try:
            return self._append_many1(subjects, datas_l, base, offs, sizes, time)
        finally:
            self.busy -= 1

    cdef tuple _append_many1(self, object subjects, list datas_l, const char *base,
                             const int64_t *offs, Int64Array sizes, object time):
        cdef Py_ssize_t n = sizes.n, i, dlen
        cdef bint one = isinstance(subjects, (str, bytes))
        cdef int64_t now, first, ptime
        cdef const char *p
        cdef Py_ssize_t slen = 0
        cdef uint32_t h = 0
        cdef list subj_l = None
        cdef Py_ssize_t total
        if not one:
            subj_l = list(subjects)
            if len(subj_l) != n:
                raise ValueError('subjects has {} items but datas has {}'.format(
                    len(subj_l), n))
        ptime = _ptime(time)
        if n == 0:
            return (self._last_seq + 1, self._last_seq)
        # validate everything first: the sizes (a C loop), then the subjects
        for i in range(n):
            if sizes.data[i] > self.max_event_size:
                raise EventTooLarge('datas[{}]: payload of {} bytes exceeds '
                                    'max_event_size={}'.format(i, sizes.data[i],
                                                               self.max_event_size))
        for i in range(n):
            if self.store is None and one and i:
                break                   # one subject, checked at i == 0
            dlen = sizes.data[i]
            s = subjects if one else subj_l[i]
            if self.store is not None and \
                    REC_HEADER + LINK_LEN + len(s) * 4 + dlen > self.store.segment_size:
                as_utf8(s, &p, &slen, False)
                if REC_HEADER + self.store.frame_extra + slen + dlen > self.store.segment_size:
                    raise EventTooLarge('datas[{}]: record of {} bytes exceeds '
                                        'segment_size={}'.format(
                                            i, REC_HEADER + self.store.frame_extra + slen + dlen,
                                            self.store.segment_size))
            if one and i:
                continue
            try:
                self._subject_sid(s, False)
            except SubjectError as exc:
                raise SubjectError('{} (subjects[{}])'.format(exc, i)) from None
        now = _now_ns()
        if self.max_age_ns:
            self._expire(now, AGE_EVICT_STEP)
        if self.discard_mode == DISCARD_NEW:
            self._admit_batch(subjects if one else subj_l, sizes, one)
        if one:
            as_utf8(subjects, &p, &slen, False)
            h = <uint32_t>ff_hash(p, slen, _SEED)
        if self.store is not None:
            # the disk space of the whole batch at once where it fits in the
            # live segment: a full disk then refuses it before anything is stored
            total = 0
            for i in range(n):
                if not one:
                    as_utf8(subj_l[i], &p, &slen, False)
                total += (REC_HEADER + self.store.frame_extra + slen) * \
                    (2 if self.max_per_subject else 1) + sizes.data[i]
            self.store.reserve_ahead(total)
            if not one:
                p = NULL
        first = self._last_seq + 1
        if self.discard_mode == DISCARD_OLD and self.max_events and not self.max_bytes \
                and not self.max_per_subject:
            # the oldest records that the batch will push out go in one sweep
            # (the records of the batch itself are evicted one by one below)
            self._evict_for(min(self.count, self.count + n - self.max_events))
        if self.icount + n > self.icap:
            self._make_room(n)
        if one and self._run_ok(n):
            # the common batch: one subject, a memory log whose limits the
            # sweep above settled; one C loop stores the records
            self._append_run(self._sid_intern(subjects, p, slen, h), NULL, datas_l, base,
                             offs, sizes, ptime, NULL, now)
            if FASTFLOW_DEBUG and self.icount < 2000:
                self._check()
            return (first, self._last_seq)
        try:
            self._append_loop(subjects, subj_l, datas_l, base, offs, sizes,
                              ptime, now, one, p, slen, h)
        except StorageFullError:
            # records before the refused one (a batch that needed a new
            # segment) are stored: they are made durable as any append
            if self.store is not None:
                self.store.after_append()
            raise
        if self.store is not None:
            self.store.after_append()
        if FASTFLOW_DEBUG and self.icount < 2000:
            self._check()
        return (first, self._last_seq)

    cdef int _append_loop(self, object subjects, list subj_l, list datas_l, const char *base,
                          const int64_t *offs, Int64Array sizes, int64_t ptime, int64_t now,
                          bint one, const char *p, Py_ssize_t slen, uint32_t h) except -1:
        cdef Py_ssize_t i, n = sizes.n
        cdef Py_buffer view
        for i in range(n):
            if not one:
                s = subj_l[i]
                as_utf8(s, &p, &slen, False)
                h = <uint32_t>ff_hash(p, slen, _SEED)
            if base != NULL:
                self._append_known(subjects if one else s, p, slen, h, base + offs[i],
                                   sizes.data[i], ptime, now)
                continue
            d = datas_l[i]
            if type(d) is bytes:
                self._append_known(subjects if one else s, p, slen, h,
                                   PyBytes_AS_STRING(d), PyBytes_GET_SIZE(d), ptime, now)
            else:
                PyObject_GetBuffer(d, &view, PyBUF_SIMPLE)
                try:
                    self._append_known(subjects if one else s, p, slen, h,
                                       <const char *>view.buf, view.len, ptime, now)
                finally:
                    PyBuffer_Release(&view)
        return 0

    cdef int _evict_for(self, int64_t k) except -1:
        """Evict the k oldest records (max_events) in one sweep."""
        cdef Py_ssize_t j = 0, live = 0
        cdef LogEntry *e
        cdef LogSubject *s
        cdef uint64_t mask = self.icap - 1
        cdef Py_ssize_t h = self.ihead
        cdef int64_t done, i, nb = 0, pay = 0
        if k <= 0:
            return 0
        if self.ideleted == 0:
            j = min(k, <int64_t>self.icount)
        else:
            while live < k and j < self.icount:
                if not (self._at(j).sid & ENTRY_DELETED):
                    live += 1
                j += 1
        self._check_pins_head(j)
        if self.ideleted:
            while k > 0 and self.icount:
                self._evict_head(EV_EVENTS)
                k -= 1
            return 0
        # no deleted entry in the ring: _evict_head's work inline, the heads
        # and the totals moved once at the end
        done = j
        for i in range(done):
            e = &self.idx[(h + i) & mask]
            s = &self.subj[e.sid]
            pay += e.len
            nb += e.len + s.len
            s.count -= 1
            if s.count == 0:
                self._sid_release(e.sid)
            else:
                s.first = e.next_same
        self.count -= done
        self.nbytes -= nb
        self.apay -= pay
        self.n_evicted[EV_EVENTS] += done
        self.ihead = (h + done) & mask
        self.icount -= done
        self.habs += done
        if self.icount == 0:
            self.atail = 0
            self.adead = 0
            self.dense = True
        return 0

    cdef inline bint _run_ok(self, Py_ssize_t n) noexcept:
        """Whether ``_append_run`` may store ``n`` records now: a memory log
        (no frames to write), no limit but max_events, which leaves room for
        them (the caller's sweep evicted what they push out)."""
        return (self.store is None and not self.loading and self.npre == 0 and
                self.discard_mode == DISCARD_OLD and not self.max_bytes and
                not self.max_per_subject and
                (self.max_events == 0 or self.count + n <= self.max_events) and
                self.icount + n <= self.icap)

    cdef int _append_run(self, int32_t sid, const int32_t *sids, list datas_l, const char *base,
                         const int64_t *offs, Int64Array sizes, int64_t ptime,
                         const int64_t *ptimes, int64_t now) except -1:
        """Store ``sizes.n`` admitted records in one C loop (see _run_ok):
        payload i is ``datas_l[i]`` or ``base[offs[i]:offs[i] + sizes[i]]``,
        its subject ``sid`` or ``sids[i]`` (interned), its producer time
        ``ptime`` or ``ptimes[i]``.  The log is consistent after every
        record (an error stops the loop with the records before stored)."""
        cdef Py_ssize_t i = 0, n = sizes.n, dlen
        cdef int64_t ts = now if now > self.last_ts else self.last_ts
        cdef Py_buffer view
        cdef object o
        if sids == NULL and base == NULL and ptimes == NULL:
            i = self._run_bytes(sid, datas_l, sizes, ts, ptime)
        for i in range(i, n):
            dlen = sizes.data[i]
            if sids != NULL:
                sid = sids[i]
            if base != NULL:
                self._put(sid, NULL, 0, base + offs[i], dlen, ts,
                          ptime if ptimes == NULL else ptimes[i])
                continue
            if _is_bytes(PyList_GET_ITEM(datas_l, i)):
                # (borrowed: the list holds it, and no Python code runs here)
                self._put(sid, NULL, 0, _bytes_data(PyList_GET_ITEM(datas_l, i)), dlen, ts,
                          ptime)
                continue
            o = <object>PyList_GET_ITEM(datas_l, i)
            PyObject_GetBuffer(o, &view, PyBUF_SIMPLE)
            try:
                if view.len != dlen:
                    raise ValueError('datas[{}] changed size during the append'.format(i))
                self._put(sid, NULL, 0, <const char *>view.buf, dlen, ts, ptime)
            finally:
                PyBuffer_Release(&view)
        self.last_sid = sid
        return 0

    cdef Py_ssize_t _run_bytes(self, int32_t sid, list datas_l, Int64Array sizes, int64_t ts,
                               int64_t ptime) except -1:
        """_append_run's loop for bytes payloads of one subject with the
        log's state in locals (written back once): stores records while
        each is a bytes object that fits after the tail without moving
        anything; returns how many it stored (_put does the others)."""
        cdef Py_ssize_t i, n = sizes.n, dlen, pos
        cdef Py_ssize_t icount = self.icount, atail = self.atail, acap = self.acap
        cdef Py_ssize_t head, room
        cdef uint64_t mask = self.icap - 1, ihead = self.ihead
        cdef LogEntry *idx = self.idx
        cdef LogEntry *e
        cdef LogEntry *prev = NULL
        cdef LogSubject *s = &self.subj[sid]
        cdef char *arena = self.arena
        cdef int64_t seq = self._last_seq, first = seq + 1, total = 0
        cdef void *o
        if icount == 0 or icount + n > self.icap:
            return 0
        head = <Py_ssize_t>idx[ihead].pos
        if s.count:
            if s.hint_epoch == self.repoch:
                prev = &idx[(ihead + (s.last_abs - self.habs)) & mask]
            else:
                prev = self._entry(s.last)
        i = 0
        while i < n:
            o = PyList_GET_ITEM(datas_l, i)
            if not _is_bytes(o):
                break
            dlen = sizes.data[i]
            # room after the tail: to the end of the arena, or to the head
            room = (acap - atail) if atail > head else (head - atail)
            if dlen > room or atail == head:
                if atail > head and dlen <= head and dlen:
                    atail = 0           # wrap to the start
                    room = head
                else:
                    break
            pos = atail
            memcpy(arena + pos, _bytes_data(o), dlen)
            atail = pos + dlen
            seq += 1
            e = &idx[(ihead + icount) & mask]
            e.seq = seq
            e.ts = ts
            e.ptime = ptime
            e.next_same = 0
            e.pos = pos
            e.len = <uint32_t>dlen
            e.sid = <uint32_t>sid
            icount += 1
            if prev != NULL:
                prev.next_same = seq
            prev = e
            total += dlen
            i += 1
        if i == 0:
            return 0
        self.icount = icount
        self.atail = atail
        if s.count == 0:
            s.first = first
        s.last = seq
        s.last_abs = self.habs + icount - 1
        s.hint_epoch = self.repoch
        s.count += i
        self.count += i
        self.nbytes += total + <int64_t>i * s.len
        self.apay += total
        self._last_seq = seq
        self.last_ts = ts
        self.n_appended += i
        return i

    cdef inline Py_ssize_t _slot(self, Py_ssize_t size) except -2:
        """Arena offset for a new record of ``size`` bytes: after the tail,
        or wrapped to the start (``_reserve_bytes`` when neither fits)."""
        cdef Py_ssize_t head
        if self.icount == self.icap:
            self._make_room(1)
        if self.icount:
            head = <Py_ssize_t>self.idx[self.ihead].pos
            if self.atail > head:
                if size <= self.acap - self.atail:
                    return self.atail
                if size <= head:
                    return 0
            elif self.atail < head and size <= head - self.atail:
                return self.atail
        return self._reserve_bytes(size)

    cdef inline int64_t _index(self, int32_t sid, Py_ssize_t pos, Py_ssize_t size, int64_t ts,
                               int64_t ptime) noexcept:
        """The index entry and the counters of a record just copied to
        ``pos`` (room in the index made by ``_slot``); returns its seq."""
        cdef LogEntry *e
        cdef LogEntry *prev
        cdef LogSubject *s = &self.subj[sid]
        cdef int64_t seq = self._last_seq + 1
        e = &self.idx[(self.ihead + self.icount) & (self.icap - 1)]
        e.seq = seq
        e.ts = ts
        e.ptime = ptime
        e.next_same = 0
        e.pos = pos
        e.len = <uint32_t>size
        e.sid = <uint32_t>sid
        self.icount += 1
        self.atail = pos + size
        if s.count:
            if s.hint_epoch == self.repoch:
                prev = &self.idx[(self.ihead + (s.last_abs - self.habs)) & (self.icap - 1)]
            else:
                prev = self._entry(s.last)
            prev.next_same = seq
        else:
            s.first = seq
        s.last = seq
        s.last_abs = self.habs + self.icount - 1
        s.hint_epoch = self.repoch
        s.count += 1
        self.count += 1
        self.nbytes += size + s.len
        self.apay += size
        self._last_seq = seq
        self.last_ts = ts
        self.n_appended += 1
        return seq

    cdef inline int64_t _put(self, int32_t sid, const char *pre, Py_ssize_t npre, const char *d,
                             Py_ssize_t dlen, int64_t ts, int64_t ptime) except -1:
        """Store one admitted record ``pre[:npre] + d[:dlen]`` of the interned
        subject ``sid`` (a memory log: no frame to write); returns its seq."""
        cdef Py_ssize_t pos = self._slot(npre + dlen)
        if npre:
            memcpy(self.arena + pos, pre, npre)
        memcpy(self.arena + pos + npre, d, dlen)
        return self._index(sid, pos, npre + dlen, ts, ptime)

    cdef inline bint _pre_ok(self, Py_ssize_t size) noexcept:
        """Whether ``_append_event`` may store a record of ``size`` bytes now:
        an open memory log whose only limits are max_events and max_age
        (discard='old'), no record exported as a buffer."""
        return (not self.closed_ and self.store is None and not self.loading and
                self.npre == 0 and self.npins == 0 and self.discard_mode == DISCARD_OLD and
                not self.max_bytes and not self.max_per_subject and
                size <= self.max_event_size)

    cdef inline int64_t _append_event(self, object subject, const char *p, Py_ssize_t n,
                                      uint32_t h, uint64_t gid, const char *src,
                                      Py_ssize_t srcn, uint16_t hops, const char *d,
                                      Py_ssize_t dlen, int64_t now) except -1:
        """The router's batch append (after ``_pre_ok``): the record of an
        event with every attribute a default (its header, generated id
        ``gid`` and source written in place, then ``d[:dlen]``) on the
        validated subject ``p[:n]`` (hash ``h``); the oldest record goes when
        max_events is reached.  Returns its seq."""
        cdef int32_t sid
        cdef LogSubject *sj
        cdef Py_ssize_t pos, size = EV_HEADER + EV_GENID + srcn + dlen
        if self.max_age_ns:
            self._expire(now, AGE_EVICT_STEP)
        if self.max_events and self.count >= self.max_events:
            if self.ideleted == 0 and self.subj[self.idx[self.ihead].sid].count > 1:
                # _evict_head inline: the head's subject keeps records
                sj = &self.subj[self.idx[self.ihead].sid]
                sj.count -= 1
                sj.first = self.idx[self.ihead].next_same
                self.count -= 1
                self.nbytes -= self.idx[self.ihead].len + sj.len
                self.apay -= self.idx[self.ihead].len
                self.n_evicted[EV_EVENTS] += 1
                self.ihead = (self.ihead + 1) & (self.icap - 1)
                self.icount -= 1
                self.habs += 1
            else:
                self._evict_head(EV_EVENTS)
        sid = self.last_sid
        if sid >= 0:
            sj = &self.subj[sid]
            if not (sj.bytes != NULL and sj.hash == h and sj.len == n and ff_eq(sj.bytes, p, n)):
                sid = self._sid_find(p, n, h)
        else:
            sid = self._sid_find(p, n, h)
        if sid < 0:
            sid = self._sid_intern(subject, p, n, h)
        self.last_sid = sid
        pos = self._slot(size)
        _ev_default_head(self.arena + pos, gid, src, srcn, hops)
        memcpy(self.arena + pos + EV_HEADER + EV_GENID + srcn, d, dlen)
        return self._index(sid, pos, size, now if now > self.last_ts else self.last_ts, 0)

    cdef inline int _append_known(self, object subject, const char *p, Py_ssize_t n,
                                  uint32_t h, const char *d, Py_ssize_t dlen,
                                  int64_t ptime, int64_t now) except -1:
        """Append one record of a validated subject (bytes p[:n], hash h)."""
        cdef int32_t sid = self.last_sid
        cdef LogSubject *sj
        cdef int64_t seq
        if self.store is not None and not self.loading:
            # the disk space first (and a delete marker's): a full disk
            # refuses the append before anything changes
            self.store.reserve(REC_HEADER + self.store.frame_extra + n + dlen +
                               (REC_HEADER + self.store.frame_extra + n
                                if self.max_per_subject else 0),
                               self._last_seq + 1)
        # the subject of the previous append is the likely one
        if sid >= 0:
            sj = &self.subj[sid]
            if not (sj.bytes != NULL and sj.hash == h and sj.len == n and ff_eq(sj.bytes, p, n)):
                sid = self._sid_find(p, n, h)
        else:
            sid = self._sid_find(p, n, h)
        if self.limited and (
                self.discard_mode == DISCARD_NEW
                or (self.max_events and self.count + 1 > self.max_events)
                or (self.max_bytes and self.nbytes + n + dlen > self.max_bytes)
                or (self.max_per_subject and sid >= 0
                    and self.subj[sid].count + 1 > self.max_per_subject)):
            try:
                self._admit(sid, n, dlen)
                if sid >= 0 and self.subj[sid].bytes == NULL:
                    sid = self._sid_find(p, n, h)   # released by the evictions
                return self._store_known(subject, p, n, h, sid, d, dlen, ptime, now)
            finally:
                if self.del_after:
                    # the subject's evicted record: its delete marker after
                    # the record that replaced it (written first), so that a
                    # crash in between never loses both (the reopening replay
                    # evicts it again by max_per_subject); written also when
                    # the append failed after the eviction (it was deleted)
                    seq = self.del_after
                    self.del_after = 0
                    self.store.write_marker(KIND_DELETE, seq, p, n)
        return self._store_known(subject, p, n, h, sid, d, dlen, ptime, now)

    cdef inline int _store_known(self, object subject, const char *p, Py_ssize_t n,
                                 uint32_t h, int32_t sid, const char *d, Py_ssize_t dlen,
                                 int64_t ptime, int64_t now) except -1:
        """_append_known once admitted: the record indexed and written."""
        cdef int64_t seq
        if sid < 0:
            sid = self._sid_intern(subject, p, n, h)
        self.last_sid = sid
        if self.skip_to:
            self._skip_gap()            # append_at: admitted, the disk space reserved
        seq = self._store(sid, d, dlen, now if now > self.last_ts else self.last_ts, ptime)
        if self.store is not None and not self.loading:
            # from the arena: the record is whole there (see _append_routed)
            self.store.write_record(seq, self.last_ts, ptime, p, n,
                                    self.arena + self.atail - dlen, dlen)
        return 0

    cdef int _admit_batch(self, object subjects, Int64Array sizes, bint one) except -1:
        """discard='new': raise unless the whole batch fits."""
        cdef int64_t c = self.count, b = self.nbytes, rsize
        cdef const char *p
        cdef Py_ssize_t n, i
        cdef int32_t sid
        cdef Py_ssize_t count = sizes.n
        per = {}
        if self.max_age_ns and (
                (self.max_events and c + count > self.max_events) or self.max_bytes or
                self.max_per_subject):
            self._expire(_now_ns(), 1 << 62)   # expired records never cause a rejection
            c = self.count
            b = self.nbytes
        for i in range(count):
            s = subjects if one else subjects[i]
            as_utf8(s, &p, &n, False)
            rsize = n + sizes.data[i]
            c += 1
            b += rsize
            if self.max_events and c > self.max_events:
                self.n_rejected += count
                raise LogFullError("log full: max_events={} reached at datas[{}]; nothing "
                                   "of the batch was stored (discard='new')".format(
                                       self.max_events, i))
            if self.max_bytes and b > self.max_bytes:
                self.n_rejected += count
                raise LogFullError("log full: max_bytes={} reached at datas[{}]; nothing "
                                   "of the batch was stored (discard='new')".format(
                                       self.max_bytes, i))
            if self.max_per_subject:
                key = p[:n]
                if key not in per:
                    sid = self._sid_find(p, n, <uint32_t>ff_hash(p, n, _SEED))
                    per[key] = self.subj[sid].count if sid >= 0 else 0
                per[key] += 1
                if per[key] > self.max_per_subject:
                    self.n_rejected += count
                    raise LogFullError("log full: max_per_subject={} reached for {!r} at "
                                       "datas[{}]; nothing of the batch was stored "
                                       "(discard='new')".format(
                                           self.max_per_subject, key.decode(), i))
        return 0

    def append_unique(self, subject, data, msg_id, time=0):
        """Append unless ``msg_id`` was seen within the dedup window; returns
        ``(seq, duplicate)``."""
        cdef bytes key
        cdef int64_t now, hit, seq
        cdef uint64_t h
        cdef uint32_t n
        self._check_open()
        if isinstance(msg_id, str):
            key = msg_id.encode('utf-8')
        elif isinstance(msg_id, (bytes, bytearray)):
            key = bytes(msg_id)
        else:
            raise TypeError('msg_id must be str or bytes, not {}'.format(type(msg_id).__name__))
        if PyBytes_GET_SIZE(key) > 0xffff:
            raise ValueError('msg_id of {} bytes is over the limit of 65535 bytes'.format(
                PyBytes_GET_SIZE(key)))
        n = <uint32_t>PyBytes_GET_SIZE(key)
        h = ff_hash(PyBytes_AS_STRING(key), n, _SEED ^ FF_DEDUP_MSGID)
        now = _mono_ns()
        hit = self._dedup_seen(FF_DEDUP_MSGID, PyBytes_AS_STRING(key), n, h, now)
        if hit >= 0:
            return (hit, True)
        seq = self.append(subject, data, time)
        self._dedup_remember(FF_DEDUP_MSGID, PyBytes_AS_STRING(key), n, h, seq, now)
        return (seq, False)

    cdef int64_t _dedup_seen(self, uint32_t tag, const char *key, uint32_t n, uint64_t h,
                             int64_t mono) noexcept:
        """The seq stored with this key within the duplicate window, or -1
        (the window's expired keys are forgotten first).  ``tag`` keeps
        kinds of key apart (an event's id length, or FF_DEDUP_MSGID); ``h``
        is ff_hash of the key, seeded with ``_SEED ^ tag``."""
        cdef ff_dedup_ent *e
        if self.dedup_window_ns:
            ff_dedup_trim(&self.dedup, mono - self.dedup_window_ns, 0)
        e = ff_dedup_find(&self.dedup, h, tag, key, n)
        if e == NULL:
            return -1
        self.n_duplicates += 1
        return e.seq

    cdef int _dedup_remember(self, uint32_t tag, const char *key, uint32_t n, uint64_t h,
                             int64_t seq, int64_t mono) except -1:
        """Remember a key _dedup_seen did not find, stored as ``seq``; the
        oldest keys past dedup_max are forgotten."""
        if ff_dedup_add(&self.dedup, h, tag, key, n, seq, mono) < 0:
            raise MemoryError()
        ff_dedup_trim(&self.dedup, INT64_MIN, <uint64_t>self.dedup_max)
        return 0

    def expire(self):
        """Evict every expired record now; returns how many."""
        self._check_open()
        return self._expire(_now_ns(), 1 << 62)

    # -- purge -----------------------------------------------------------------------

    def purge(self, subject=None, up_to=None):
        """Remove all records, or those matching the pattern ``subject``,
        and/or those with ``seq <= up_to``; returns how many."""
        self._enter()
        try:
            return self._purge_call(subject, up_to)
        finally:
            self.busy -= 1

    cdef _purge_call(self, object subject, object up_to):
        cdef int64_t limit
        if up_to is not None and (not isinstance(up_to, int) or isinstance(up_to, bool)):
            raise TypeError('up_to must be an int seq, not {}'.format(type(up_to).__name__))
        if up_to is not None and up_to < 0:
            raise ValueError('up_to must be >= 0, got {}'.format(up_to))
        limit = self._last_seq if up_to is None else min(<int64_t>up_to, self._last_seq)
        if self.store is not None:      # the marker's disk space first
            self.store.reserve(REC_HEADER + self.store.frame_extra +
                               (len(subject) * 4 if isinstance(subject, (str, bytes)) else 0),
                               self._last_seq + 1)
        removed = self._purge(subject, limit)
        if self.store is not None:
            if subject is None:
                self.store.write_marker(KIND_PURGE, limit, NULL, 0)
            else:
                pb = subject.encode('utf-8') if isinstance(subject, str) else bytes(subject)
                self.store.write_marker(KIND_DELETE, limit, <const char *>pb, len(pb))
            self.store.after_append()
        if FASTFLOW_DEBUG and self.icount < 2000:
            self._check()
        return removed

    cdef int64_t _purge(self, object subject, int64_t limit) except -1:
        cdef int64_t removed = 0
        cdef Parsed ps
        cdef PTok pt[MAX_TOKENS]
        cdef const char *p
        cdef Py_ssize_t n, k
        cdef LogEntry *e
        cdef LogSubject *s
        cdef int32_t one
        if subject is None:
            k = 0
            while k < self.icount and self._at(k).seq <= limit:
                k += 1
            self._check_pins_head(k)
            while self.icount and self.idx[self.ihead].seq <= limit:
                self._evict_head(EV_PURGE)
                removed += 1
            return removed
        as_utf8(subject, &p, &n, True)
        parse_subject(p, n, &ps, True, subject)
        ptoks_of(&ps, pt)
        if self.npins:
            for seq in self.pins:
                e = self._entry(seq)
                if e != NULL and seq <= limit and pattern_matches(
                        pt, ps.ntok, self.subj[e.sid].bytes, self.subj[e.sid].len):
                    raise BufferError('record {} is exported as a buffer (memoryview); '
                                      'release it before purging it'.format(seq))
        if ps.nwild == 0:               # one subject: found by its hash, not by a walk
            one = self._sid_find(p, n, <uint32_t>ff_hash(p, n, _SEED))
            if one < 0:
                return 0
            s = &self.subj[one]
            while s.bytes != NULL and s.count and s.first <= limit:
                self._delete(self._entry(s.first), EV_PURGE)
                removed += 1
            return removed
        for sid in range(self.sused):
            s = &self.subj[sid]
            if s.bytes == NULL or not pattern_matches(pt, ps.ntok, s.bytes, s.len):
                continue
            while s.bytes != NULL and s.count and s.first <= limit:
                self._delete(self._entry(s.first), EV_PURGE)
                removed += 1
        return removed

    # -- reading ---------------------------------------------------------------------

    cdef int64_t _lo(self) except -1:
        """The first seq reads may return: first_seq, past expired records."""
        cdef Py_ssize_t k = 0
        if self.icount == 0:
            return self._last_seq + 1
        if self.max_age_ns:
            k = self._find_time(_now_ns() - self.max_age_ns)
        while k < self.icount and self._at(k).sid & ENTRY_DELETED:
            k += 1
        return self._at(k).seq if k < self.icount else self._last_seq + 1

    cdef inline bint _is_expired(self, LogEntry *e) noexcept:
        return self.max_age_ns != 0 and e.ts < _now_ns() - self.max_age_ns

    def get(self, int64_t seq):
        """One retained record as a zero-copy ``Record`` view."""
        cdef LogEntry *e
        cdef Record r
        self._check_open()
        if seq < 0:
            raise ValueError('seq must be >= 0, got {}'.format(seq))
        e = self._entry(seq)
        if e == NULL or self._is_expired(e):
            if self.count:
                raise KeyError('record {} is not retained (retained: {}..{})'.format(
                    seq, self._lo(), self._last_seq))
            raise KeyError('record {} is not retained (the log is empty; last_seq {})'.format(
                seq, self._last_seq))
        r = Record.__new__(Record)
        r.log = self
        r.seq = seq
        r.ts = e.ts
        r.time = e.ptime
        r.subject = <str>self.subj[e.sid].name
        r.pos = e.pos
        r.len = e.len
        r.gen = self.agen
        return r

    cdef int _filter_prepare(self, object flt, Parsed *ps, PTok *pt) except -1:
        cdef const char *p
        cdef Py_ssize_t n
        if flt is None:
            return 0
        as_utf8(flt, &p, &n, True)
        parse_subject(p, n, ps, True, flt)
        ptoks_of(ps, pt)
        self.memo_stamp += 1
        if self.memo_stamp >= (1 << 29):
            self.memo_stamp = 1
            for i in range(self.sused):
                self.subj[i].memo = 0
        return 1

    cdef inline bint _filter_ok(self, uint32_t sid, PTok *pt, int ntok) noexcept:
        cdef LogSubject *s = &self.subj[sid]
        cdef bint ok
        if (s.memo >> 2) == self.memo_stamp:
            return s.memo & 1
        ok = pattern_matches(pt, ntok, s.bytes, s.len)
        s.memo = (self.memo_stamp << 2) | (1 if ok else 0)
        return ok

    cdef Batch _read_batch(self, int64_t seq, Py_ssize_t limit, Py_ssize_t max_bytes,
                           object filter, int64_t stop):
        """Up to ``limit`` retained records with seq in [seq, stop], in order."""
        cdef Parsed ps
        cdef PTok pt[MAX_TOKENS]
        cdef bint filtered = self._filter_prepare(filter, &ps, pt)
        cdef Py_ssize_t k, total = 0, i, nsel = 0
        cdef LogEntry *e
        cdef I64Vec sel
        cdef Batch b
        cdef char *out
        cdef int64_t next_seq, lo = self._lo()
        cdef object lst
        k = self._find(max(seq, lo))
        sel.data = NULL
        sel.n = 0
        sel.cap = 0
        next_seq = max(seq, lo)
        try:
            while k < self.icount and nsel < limit:
                e = self._at(k)
                if e.seq > stop:
                    break
                if not (e.sid & ENTRY_DELETED) and (not filtered or self._filter_ok(
                        e.sid, pt, ps.ntok)):
                    if max_bytes and nsel and total + e.len > max_bytes:
                        next_seq = e.seq    # left for the next read (not past a gap
                        break               # in the index: seqs there may be missing)
                    _i64_push(&sel, k)
                    total += e.len
                    nsel += 1
                next_seq = e.seq + 1
                k += 1
            if k >= self.icount or (k < self.icount and self._at(k).seq > stop):
                next_seq = max(next_seq, stop + 1)
            next_seq = min(next_seq, self._last_seq + 1)
            b = _new_batch(nsel)
            b.buffer = PyBytes_FromStringAndSize(NULL, total)
            out = PyBytes_AS_STRING(b.buffer)
            lst = PyList_New(nsel)
            total = 0
            b.offsets.data[0] = 0
            for i in range(nsel):
                e = self._at(sel.data[i])
                memcpy(out + total, self.arena + e.pos, e.len)
                total += e.len
                b.offsets.data[i + 1] = total
                b.seqs.data[i] = e.seq
                b.ts.data[i] = e.ts
                b.times.data[i] = e.ptime
                Py_INCREF(<object>self.subj[e.sid].name)
                PyList_SET_ITEM(lst, i, <object>self.subj[e.sid].name)
            b.offsets.n = nsel + 1
            b.seqs.n = b.ts.n = b.times.n = nsel
            b.subjects = lst
            b.next_seq = next_seq
            # records from seq up to the first readable one that existed and are
            # gone (as seek(seq=...).lost; a replay sets its own running count)
            b.lost = max(0, min(lo, stop + 1) - max(seq, 1)) if seq < lo else 0
            return b
        finally:
            free(sel.data)

    def read(self, int64_t seq=1, Py_ssize_t limit=1024, Py_ssize_t max_bytes=0, filter=None):
        """Records with seq >= ``seq``, in order, as one ``Batch``; its
        ``lost`` counts the records from ``seq`` up to the first readable one
        that are gone."""
        self._check_open()
        if seq < 0:
            raise ValueError('seq must be >= 0, got {}'.format(seq))
        if limit < 1:
            raise ValueError('limit must be >= 1, got {}'.format(limit))
        if max_bytes < 0:
            raise ValueError('max_bytes must be >= 0, got {}'.format(max_bytes))
        return self._read_batch(seq, limit, max_bytes, filter, self._last_seq)

    def read_into(self, buffer, int64_t seq=1, Py_ssize_t limit=1024, filter=None):
        """Copy payloads of records with seq >= ``seq`` into ``buffer``;
        returns ``(count, next_seq, offsets)``."""
        cdef Py_buffer view
        cdef Parsed ps
        cdef PTok pt[MAX_TOKENS]
        cdef bint filtered
        cdef Py_ssize_t k, total = 0, nsel = 0
        cdef LogEntry *e
        cdef Int64Array offs
        cdef int64_t next_seq, lo
        self._check_open()
        if seq < 0:
            raise ValueError('seq must be >= 0, got {}'.format(seq))
        if limit < 1:
            raise ValueError('limit must be >= 1, got {}'.format(limit))
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError('read_into needs a writable buffer, got {}'.format(
                type(buffer).__name__)) from None
        try:
            filtered = self._filter_prepare(filter, &ps, pt)
            offs = Int64Array.new(16)
            offs.push(0)
            lo = self._lo()
            k = self._find(max(seq, lo))
            next_seq = max(seq, lo)
            while k < self.icount and nsel < limit:
                e = self._at(k)
                if not (e.sid & ENTRY_DELETED) and (not filtered or self._filter_ok(
                        e.sid, pt, ps.ntok)):
                    if total + e.len > view.len:
                        if nsel == 0:
                            raise ValueError('buffer too small: record {} has {} bytes, the '
                                             'buffer {}'.format(e.seq, e.len, view.len))
                        next_seq = e.seq    # left for the next call (as in _read_batch)
                        break
                    memcpy(<char *>view.buf + total, self.arena + e.pos, e.len)
                    total += e.len
                    offs.push(total)
                    nsel += 1
                next_seq = e.seq + 1
                k += 1
            if k >= self.icount:
                next_seq = max(next_seq, self._last_seq + 1)
            return (nsel, min(next_seq, self._last_seq + 1), offs)
        finally:
            PyBuffer_Release(&view)

    def columns(self, start='first', *, seq=None, time=None, stop=None, limit=None,
                filter=None, events=False):
        """The records from a position (``start``/``seq``/``time`` as in
        ``seek``) up to seq ``stop`` (excluded) or ``limit`` records, matching
        ``filter``, as numpy arrays: a ``Columns`` (``seq``, ``ts``,
        ``time``, ``subject_id`` + ``subjects``, ``offsets`` into one
        ``payload``, ``lost``, ``next_seq``).  ``events=True``: the records
        are CloudEvents records (a Flow stream's) and ``payload`` holds each
        event's data.  Needs numpy."""
        return _log_columns(self, start, seq, time, stop, limit, filter, events)

    def append_columns(self, payload, offsets=None, *, subject=None, subject_id=None,
                       subjects=None, time=None):
        """Append records from arrays; returns ``(first_seq, last_seq)``.
        ``payload``: a buffer with ``offsets`` (int64, len + 1), or without
        them a structured or 2-d array (one record per row), or a
        ``Columns``; ``subject`` (one for all) or ``subject_id`` (integer
        array) into the table ``subjects``; ``time``: an int or an int64
        array of producer times.  Validated as a whole first; atomic under
        ``discard="new"``; no Python object per record."""
        return _log_append_columns(self, payload, offsets, subject, subject_id, subjects, time)

    def seek(self, start='first', *, seq=None, time=None, strict=False):
        """Resolve a start position; returns ``Position(seq, lost)``."""
        cdef int64_t lo, s, t
        cdef Py_ssize_t k
        self._check_open()
        if seq is not None and time is not None:
            raise ValueError('seek: give seq= or time=, not both')
        lo = self._lo()
        if seq is not None:
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError('seq must be an int, not {}'.format(type(seq).__name__))
            if seq < 0 or seq >= (1 << 63):
                raise ValueError('seq must be in 0..2**63-1, got {}'.format(seq))
            s = seq
            if s < lo:
                lost = max(0, min(lo, self._last_seq + 1) - max(s, 1))
                if strict and lost:
                    raise GapError('requested seq {} but the first retained record is {}: {} '
                                   'records lost'.format(s, lo, lost))
                return Position(lo, lost)
            return Position(min(s, self._last_seq + 1), 0)
        if time is not None:
            t = _seek_time_ns(time)
            k = self._find_time(t)
            while k < self.icount and self._at(k).sid & ENTRY_DELETED:
                k += 1
            s = self._at(k).seq if k < self.icount else self._last_seq + 1
            return Position(max(s, lo), 0)
        if start == 'first':
            return Position(lo, 0)
        if start == 'last':
            k = self.icount - 1
            while k >= 0 and self._at(k).sid & ENTRY_DELETED:
                k -= 1
            if k >= 0 and self._at(k).seq >= lo:
                return Position(self._at(k).seq, 0)
            return Position(self._last_seq + 1, 0)
        if start == 'new':
            return Position(self._last_seq + 1, 0)
        raise ValueError("start must be 'first', 'last' or 'new' (or give seq= or time=), "
                         "got {!r}".format(start))

    def last_per_subject(self, filter=None):
        """The newest record of every subject (matching ``filter``), in seq order."""
        cdef Parsed ps
        cdef PTok pt[MAX_TOKENS]
        cdef bint filtered
        cdef Py_ssize_t sid
        cdef LogSubject *s
        cdef int64_t lo
        self._check_open()
        filtered = self._filter_prepare(filter, &ps, pt)
        lo = self._lo()
        seqs = []
        for sid in range(self.sused):
            s = &self.subj[sid]
            if s.bytes != NULL and s.count and s.last >= lo and (not filtered or self._filter_ok(
                    sid, pt, ps.ntok)):
                seqs.append(s.last)
        seqs.sort()
        return self._gather(seqs)

    def latest_only(self, Batch batch not None):
        """The records of ``batch`` (a read of this log) that are the newest
        retained record of their subject, in order: a conflating consumer's
        backlog without what newer records superseded.  Its ``next_seq``
        is ``batch``'s (the superseded ones are read too)."""
        cdef Py_ssize_t i, n = batch.seqs.n
        cdef int32_t sid
        cdef list seqs = []
        cdef Batch out
        self._check_open()
        for i in range(n):
            sid = self._subject_sid(<object>PyList_GET_ITEM(batch.subjects, i), False)
            if sid >= 0 and self.subj[sid].last == batch.seqs.data[i]:
                seqs.append(batch.seqs.data[i])
        if len(seqs) == n:
            return batch
        out = self._gather(seqs)
        out.next_seq = batch.next_seq
        out.lost = batch.lost
        return out

    cdef Batch _gather(self, list seqs):
        cdef Py_ssize_t n = len(seqs), i, total = 0
        cdef LogEntry *e
        cdef Batch b = _new_batch(n)
        cdef char *out
        for s in seqs:
            total += self._entry(s).len
        b.buffer = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(b.buffer)
        total = 0
        b.offsets.data[0] = 0
        lst = []
        for i in range(n):
            e = self._entry(seqs[i])
            memcpy(out + total, self.arena + e.pos, e.len)
            total += e.len
            b.offsets.data[i + 1] = total
            b.seqs.data[i] = e.seq
            b.ts.data[i] = e.ts
            b.times.data[i] = e.ptime
            lst.append(<object>self.subj[e.sid].name)
        b.offsets.n = n + 1
        b.seqs.n = b.ts.n = b.times.n = n
        b.subjects = lst
        b.next_seq = self._last_seq + 1
        return b

    def replay(self, start='first', *, seq=None, time=None, filter=None, limit=None,
               strict=False, batch=1024, speed=None):
        """Iterate from a position: ``Batch``es as fast as possible, or with a
        ``speed`` factor one ``Record`` at a time at the original pace.  The
        iterator has ``lost`` (the gap notice) and ``next_seq``."""
        return Replay(self, *self._replay_args(start, seq, time, filter, limit, strict,
                                               batch, speed))

    def areplay(self, start='first', *, seq=None, time=None, filter=None, limit=None,
                strict=False, batch=1024, speed=None):
        """The asyncio form of ``replay`` (an async iterator; the event loop
        stays out of the core: fastflow.replay drives the replay)."""
        from fastflow.replay import AsyncReplay
        return AsyncReplay(Replay(self, *self._replay_args(start, seq, time, filter, limit,
                                                           strict, batch, speed)))

    def _replay_args(self, start, seq, time, filter, limit, strict, batch, speed):
        self._check_open()
        if not isinstance(batch, int) or batch < 1:
            raise ValueError('batch must be an int >= 1, got {!r}'.format(batch))
        if speed is not None and not (isinstance(speed, (int, float)) and speed > 0):
            raise ValueError('speed must be > 0, got {!r}'.format(speed))
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ValueError('limit must be an int >= 0, got {!r}'.format(limit))
        if filter is not None:
            validate_pattern(filter)
        pos = self.seek(start, seq=seq, time=time, strict=strict)
        return (pos, filter, limit, strict, batch, speed)

    def _replay_read(self, int64_t seq, Py_ssize_t n, filter, int64_t stop):
        return self._read_batch(seq, n, 0, filter, stop)

    # -- cursors ---------------------------------------------------------------------

    def set_cursor(self, name, int64_t seq):
        self._enter()
        try:
            self._set_cursor(name, seq)
        finally:
            self.busy -= 1

    cdef _set_cursor(self, object name, int64_t seq):
        if not isinstance(name, str) or not name:
            raise ValueError('cursor name must be a non-empty str, got {!r}'.format(name))
        if seq < 0 or seq > self._last_seq:
            raise ValueError('cursor {!r}: seq {} is outside 0..{} (last_seq)'.format(
                name, seq, self._last_seq))
        self._cursors[name] = seq
        if self.store is not None:
            self.store.save_cursors(self._cursors)

    def cursor(self, name):
        self._check_open()
        return self._cursors.get(name, 0)

    def cursors(self):
        self._check_open()
        return dict(self._cursors)

    def delete_cursor(self, name):
        self._enter()
        try:
            if name not in self._cursors:
                raise KeyError('no cursor named {!r}'.format(name))
            del self._cursors[name]
            if self.store is not None:
                self.store.save_cursors(self._cursors)
        finally:
            self.busy -= 1

    def lag(self, name):
        self._check_open()
        return self._last_seq - max(<int64_t>self._cursors.get(name, 0), self._lo() - 1)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def closed(self):
        return self.closed_

    def flush(self):
        self._enter()
        try:
            if self.store is not None:
                self.store.flush()
        finally:
            self.busy -= 1

    def close(self):
        if self.closed_:
            return
        self.closed_ = True
        if self.store is not None:
            # a call in another thread may be using the store (it released
            # the GIL in a file operation): it finishes first; later calls
            # raise 'log is closed'
            while self.busy:
                _time.sleep(0.0002)
            self.store.close()

    @staticmethod
    def open_reader(path, start='first', *, seq=None, time=None, filter=None, wait='spin',
                    strict=False, spin=None, poll_interval=0.001):
        """A ``TailReader`` of the file-backed log in directory ``path``, from
        this process or another one (docs/latency.md)."""
        return TailReader(path, start, seq=seq, time=time, filter=filter, wait=wait,
                          strict=strict, spin=spin, poll_interval=poll_interval)

    def chain_head(self):
        """``(seq, link)``: the last seq and the chain link of the last frame
        written (32 bytes; ``None`` for a log without a chain: in memory, or
        ``chain=False``)."""
        self._check_open()
        if self.store is None or not self.store.chain:
            return (self._last_seq, None)
        return (self._last_seq, self.store.link[:LINK_LEN])

    @property
    def chain_name(self):
        """The name the chain's genesis link is derived from (None: no chain)."""
        if self.store is None or not self.store.chain:
            return None
        return self.store.chain_name

    @property
    def losses(self):
        """Records lost to damaged segment files, found when the log was
        opened: a list of dicts ``first_seq``, ``last_seq``, ``file``,
        ``offset``, ``reason`` (each also logged at ERROR)."""
        return [] if self.store is None else [dict(l) for l in self.store.losses]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        if self.closed_:
            return 'Log(closed)'
        return 'Log(first_seq={}, last_seq={}, records={}, bytes={}{})'.format(
            self.first_seq, self._last_seq, self.count, self.nbytes,
            ', path={!r}'.format(self.path) if self.path is not None else '')

    def _check(self):
        """Check every internal invariant; raise FastflowError naming the
        first broken one.  O(records): for tests and debug builds."""
        cdef Py_ssize_t k, live = 0, deleted = 0, payload = 0
        cdef int64_t prev_seq = 0, prev_ts = -(1 << 62), nbytes = 0, seq
        cdef LogEntry *e
        cdef LogSubject *s
        cdef Py_ssize_t sid
        def bad(msg):
            return FastflowError('Log._check: ' + msg)
        if self.icount > self.icap or self.icap & (self.icap - 1):
            raise bad('index ring {} of {}'.format(self.icount, self.icap))
        counts = {}
        firsts = {}
        lasts = {}
        for k in range(self.icount):
            e = self._at(k)
            if e.seq <= prev_seq:
                raise bad('seq {} after {}'.format(e.seq, prev_seq))
            if self.dense and prev_seq and e.seq != prev_seq + 1:
                raise bad('dense index with a gap at seq {}'.format(e.seq))
            if e.ts < prev_ts:
                raise bad('timestamp of seq {} goes back'.format(e.seq))
            prev_seq = e.seq
            prev_ts = e.ts
            if e.sid & ENTRY_DELETED:
                if k == 0:
                    raise bad('deleted entry {} at the head'.format(e.seq))
                deleted += 1
                continue
            if e.pos + e.len > <uint64_t>self.acap:
                raise bad('record {} outside the arena'.format(e.seq))
            if e.sid >= <uint32_t>self.sused or self.subj[e.sid].bytes == NULL:
                raise bad('record {} has no subject'.format(e.seq))
            live += 1
            payload += e.len
            nbytes += e.len + self.subj[e.sid].len
            counts[e.sid] = counts.get(e.sid, 0) + 1
            firsts.setdefault(e.sid, e.seq)
            lasts[e.sid] = e.seq
        if prev_seq > self._last_seq:
            raise bad('an entry past last_seq')
        if live != self.count or deleted != self.ideleted:
            raise bad('{} live / {} deleted entries, counters say {} / {}'.format(
                live, deleted, self.count, self.ideleted))
        if nbytes != self.nbytes or payload != self.apay:
            raise bad('bytes {} / payload {}, counters say {} / {}'.format(
                nbytes, payload, self.nbytes, self.apay))
        nsub = 0
        for sid in range(self.sused):
            s = &self.subj[sid]
            if s.bytes == NULL:
                continue
            nsub += 1
            if self._sid_find(s.bytes, s.len, s.hash) != sid:
                raise bad('subject {} not found by its hash'.format(sid))
            if s.count != counts.get(sid, 0) or s.count == 0:
                raise bad('subject {!r} counts {} records, the index {}'.format(
                    <object>s.name, s.count, counts.get(sid, 0)))
            if s.first != firsts[sid] or s.last != lasts[sid]:
                raise bad('subject {!r} spans {}..{}, the index {}..{}'.format(
                    <object>s.name, s.first, s.last, firsts[sid], lasts[sid]))
            # the chain visits exactly the subject's records, in order
            seq = s.first
            n = 0
            while seq:
                e = self._entry(seq)
                if e == NULL or e.sid != <uint32_t>sid:
                    raise bad('subject {!r}: chain reaches seq {}, not one of its '
                              'records'.format(<object>s.name, seq))
                n += 1
                if seq == s.last:
                    break
                seq = e.next_same
            if n != s.count:
                raise bad('subject {!r}: chain of {} records, count {}'.format(
                    <object>s.name, n, s.count))
        if nsub != self.slive:
            raise bad('{} subjects, counter says {}'.format(nsub, self.slive))

    # -- used by the segment store when loading --------------------------------------

    cdef int _load_record(self, int64_t seq, int64_t ts, int64_t ptime, const char *p,
                          Py_ssize_t n, const char *d, Py_ssize_t dlen) except -1:
        cdef uint32_t h = <uint32_t>ff_hash(p, n, _SEED)
        cdef int32_t sid = self._sid_find(p, n, h)
        if seq <= self._last_seq:
            raise CorruptLogError('record seq {} after seq {}'.format(seq, self._last_seq))
        self._admit(sid, n, dlen)
        if sid >= 0 and self.subj[sid].bytes == NULL:
            sid = self._sid_find(p, n, h)   # released by the evictions (max_per_subject)
        if sid < 0:
            sid = self._sid_intern(PyUnicode_DecodeUTF8(p, n, 'strict'), p, n, h)
        if seq != self._last_seq + 1 and self.icount:
            self.dense = False  # a gap in the sequence: offsets are no longer seq - first
        self._last_seq = seq - 1
        self._store(sid, d, dlen, ts if ts > self.last_ts else self.last_ts, ptime)
        return 0

    cdef int _load_gap(self, int64_t last_seq) except -1:
        """Sequences up to last_seq were used (e.g. purged, or before the
        first retained segment)."""
        if last_seq > self._last_seq:
            if self.icount:
                self.dense = False
            self._last_seq = last_seq
        return 0


class _ReplayBase:
    def __init__(self, log, pos, filter, limit, strict, batch, speed):
        self._log = log
        self.lost = pos.lost
        self.next_seq = pos.seq
        self._stop = log.last_seq          # records appended later are not replayed
        self._filter = filter
        self._remaining = limit
        self._strict = strict
        self._batch = batch
        self._speed = speed
        self._pending = deque()
        self._t0 = None
        self._done = False

    def _read(self):
        log = self._log
        if self._done or self._remaining == 0:
            return None
        lo = log.seek().seq
        if self.next_seq < lo:
            gap = min(lo, self._stop + 1) - self.next_seq
            if gap > 0:
                if self._strict:
                    raise GapError('replay gap: seq {} is no longer retained, the first '
                                   'retained seq is {} ({} records lost)'.format(
                                       self.next_seq, lo, gap))
                self.lost += gap
        n = self._batch if self._remaining is None else min(self._batch, self._remaining)
        b = log._replay_read(self.next_seq, n, self._filter, self._stop)
        self.next_seq = b.next_seq
        if self._remaining is not None:
            self._remaining -= len(b)
        if not len(b):
            self._done = True
            return None
        b.lost = self.lost
        return b

    def _next_paced(self):
        """(record, seconds to wait before yielding it) or None at the end."""
        if not self._pending:
            b = self._read()
            if b is None:
                return None
            self._pending.extend(b.seqs)
        seq = self._pending.popleft()
        try:
            rec = self._log.get(seq)
        except KeyError:
            self.lost += 1
            return self._next_paced()
        now = _time.monotonic_ns()
        if self._t0 is None:
            self._t0 = (now, rec.ts)
            return rec, 0.0
        t0, ts0 = self._t0
        due = t0 + (rec.ts - ts0) / self._speed
        return rec, max(0.0, (due - now) / 1e9)


class Replay(_ReplayBase):
    """Iterator returned by ``Log.replay``: ``lost`` (the gap notice, growing
    if records are evicted before the replay reaches them) and ``next_seq``."""

    def __iter__(self):
        return self

    def __next__(self):
        if self._speed is None:
            b = self._read()
            if b is None:
                raise StopIteration
            return b
        r = self._next_paced()
        if r is None:
            raise StopIteration
        rec, delay = r
        if delay > 0:
            _time.sleep(delay)
        return rec
