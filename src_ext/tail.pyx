# Tailing a file-backed log from another process (included by core.pyx;
# the protocol: ff_tail.h and docs/latency.md).
#
# A TailReader maps the log's segments read-only, without the writer's
# directory lock, and follows the writer: a frame is there once its length
# is (a release store after the rest of the frame); the reader loads the
# length with acquire semantics, checks the frame's CRC, copies it out, and
# after the copy checks in tail.ctl that the segment it copied from was not
# given up by the writer meanwhile (deleted, or recycled as a spare): the
# writer publishes that before it touches a byte of it.  So a reader never
# hands out a torn or overwritten record; what it could not read is counted
# in ``lost`` (or raises GapError under ``strict``).

from libc.stdlib cimport realloc, free
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.exc cimport PyErr_CheckSignals

cdef enum:
    WAIT_SPIN = 0
    WAIT_YIELD = 1
    WAIT_BLOCK = 2

cdef enum:
    ST_DATA = 0         # stopped at the limit (more may be there)
    ST_EMPTY = 1        # a zero length at the read position
    ST_END = 2          # the map ends before the next frame does
    ST_SUSPECT = 3      # a frame that does not verify (yet)
    ST_GONE = 4         # the segment was given up by the writer
    ST_NONE = 5         # no segment is open

cdef int64_t _BLOCK_SLICE_NS = 50_000_000      # a blocked reader looks again this often
cdef int64_t _SIGNAL_SLICE_NS = 20_000_000     # a spinning one checks for signals


cdef inline int64_t _mono() noexcept nogil:
    return _mono_ns()


@cython.final
cdef class TailReader:
    """Reads a file-backed log as its writer (in this process or another)
    appends to it: ``read``/``read_into`` return what is there now, or wait
    up to ``timeout`` seconds for it (``None``: until it comes) in the
    ``wait`` mode: ``"spin"`` (a busy loop, the lowest latency, one core
    busy), ``"yield"`` (spins ``spin`` rounds, then yields the processor
    between looks) or ``"block"`` (sleeps; woken by a writer opened with
    ``notify=True``, else it looks every ``poll_interval`` seconds).  The
    start is a position as for ``Log.seek``: ``"first"``, ``"last"``,
    ``"new"``, ``seq=`` or ``time=``; ``filter`` a subject pattern.  The
    log need not exist yet: the reader attaches when it does."""

    def __cinit__(self):
        self.seg_fd = -1
        self.segment = -1
        self.status = ST_NONE

    def __init__(self, path, start='first', *, seq=None, time=None, filter=None,
                 wait='spin', strict=False, spin=None, poll_interval=0.001):
        cdef const char *p
        cdef Py_ssize_t n
        self.path = _os.fspath(path)
        if not isinstance(self.path, str):
            raise TypeError('path must be a str or os.PathLike of str, got {!r}'.format(path))
        if seq is not None and time is not None:
            raise ValueError('TailReader: give seq= or time=, not both')
        if seq is not None:
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError('seq must be an int, not {}'.format(type(seq).__name__))
            if not 0 <= seq < (1 << 63):
                raise ValueError('seq must be in 0..2**63-1, got {}'.format(seq))
        elif time is not None:
            time = _seek_time_ns(time)
        elif start not in ('first', 'last', 'new'):
            raise ValueError("start must be 'first', 'last' or 'new', got {!r}".format(start))
        modes = {'spin': WAIT_SPIN, 'yield': WAIT_YIELD, 'block': WAIT_BLOCK}
        if wait not in modes:
            raise ValueError("wait must be 'spin', 'yield' or 'block', got {!r}".format(wait))
        self.mode = modes[wait]
        if spin is None:
            spin = {WAIT_SPIN: 0, WAIT_YIELD: 20000, WAIT_BLOCK: 2000}[self.mode]
        if not isinstance(spin, int) or isinstance(spin, bool) or spin < 0:
            raise ValueError('spin must be an int >= 0 (rounds before yielding or sleeping), '
                             'got {!r}'.format(spin))
        self.spin = spin
        if not isinstance(poll_interval, (int, float)) or isinstance(poll_interval, bool) \
                or not 0 < poll_interval <= 1:
            raise ValueError('poll_interval must be a number of seconds in (0, 1], got '
                             '{!r}'.format(poll_interval))
        self.poll_ns = max(1000, <int64_t>(poll_interval * 1e9))
        self.start = start
        self.start_seq = seq
        self.start_time = time
        self.strict = bool(strict)
        self.filter = filter
        if filter is not None:
            self.filter_b = filter.encode('utf-8') if isinstance(filter, str) else bytes(filter)
            as_utf8(self.filter_b, &p, &n, True)
            parse_subject(p, n, &self.ps, True, filter)
            ptoks_of(&self.ps, self.pt)
            self.filtered = True
        self._attach()

    def __dealloc__(self):
        if self.seg != NULL:
            PyBuffer_Release(&self.seg_view)
            self.seg = NULL
        if self.ctl != NULL:
            PyBuffer_Release(&self.ctl_view)
            self.ctl = NULL
        if self.seg_fd >= 0:
            _os.close(self.seg_fd)
            self.seg_fd = -1
        free(self.scratch)
        free(self.sbuf)

    # -- attaching, segments --------------------------------------------------------

    cdef bint _attach(self) except -1:
        """Map tail.ctl once the writer made it, and find the start."""
        cdef const char *c
        if self.ctl != NULL:
            return True
        fname = _os.path.join(self.path, 'tail.ctl')
        rw = True
        try:
            fd = _os.open(fname, _os.O_RDWR)
        except PermissionError:
            rw = False
            fd = _os.open(fname, _os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            if _os.fstat(fd).st_size < FF_TAIL_CTL_SIZE:
                return False
            mm = _mmap.mmap(fd, FF_TAIL_CTL_SIZE,
                            access=_mmap.ACCESS_WRITE if rw else _mmap.ACCESS_READ)
        finally:
            _os.close(fd)
        PyObject_GetBuffer(mm, &self.ctl_view, PyBUF_WRITABLE if rw else PyBUF_SIMPLE)
        c = <const char *>self.ctl_view.buf
        if ff_acquire32(c + FF_TAIL_MAGIC) != 0x41544646 or _rd32(c + FF_TAIL_MAGIC + 4) != \
                0x31304c49:
            PyBuffer_Release(&self.ctl_view)
            mm.close()
            return False                # being made
        if _rd32(c + FF_TAIL_VERSION_OFF) != FF_TAIL_VERSION:
            PyBuffer_Release(&self.ctl_view)
            mm.close()
            raise FastflowError('{}: tail.ctl has version {}, this reader knows {}'.format(
                self.path, _rd32(c + FF_TAIL_VERSION_OFF), FF_TAIL_VERSION))
        self.ctl_mm = mm
        self.ctl_rw = rw
        self.ctl = <char *>self.ctl_view.buf
        try:
            if self.start_time is not None:
                self._locate_time(self.start_time)
            elif self.start_seq is not None:
                self.expect = max(1, self.start_seq)
                self._locate(self.expect)
            elif self.start == 'first':
                self.expect = max(1, ff_ctl_load64(self.ctl, FF_TAIL_FIRST_SEQ))
                self._locate(self.expect)
            elif self.start == 'new':
                self.expect = ff_ctl_load64(self.ctl, FF_TAIL_LAST_SEQ) + 1
                self._locate(self.expect)
            else:
                last = ff_ctl_load64(self.ctl, FF_TAIL_LAST_SEQ)
                first = ff_ctl_load64(self.ctl, FF_TAIL_FIRST_SEQ)
                self.expect = max(1, last if last >= first else last + 1)
                self._locate(self.expect)
        except BaseException:
            self._detach()
            raise
        return True

    cdef _detach(self):
        self._close_segment()
        if self.ctl != NULL:
            self.ctl = NULL
            PyBuffer_Release(&self.ctl_view)
            self.ctl_mm.close()
            self.ctl_mm = None

    cdef list _bases(self):
        """The segments' base seqs that the writer has not given up, ascending."""
        cdef int64_t floor = ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE)
        out = []
        for name in _os.listdir(self.path):
            if len(name) == 24 and name.endswith('.seg') and name[:20].isdigit():
                b = int(name[:20])
                if b >= floor:
                    out.append(b)
        out.sort()
        return out

    cdef bint _open_segment(self, int64_t base) except -1:
        cdef Py_buffer v
        self._close_segment()
        try:
            fd = _os.open(_os.path.join(self.path, _seg_name(base)), _os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            for _ in range(8):
                n = _os.fstat(fd).st_size
                if n == 0:
                    _os.close(fd)
                    return False
                try:
                    mm = _mmap.mmap(fd, n, access=_mmap.ACCESS_READ)
                    break
                except ValueError:
                    continue            # cut (sealed) between fstat and mmap: again
            else:
                raise FastflowError('{}: the segment {} keeps changing size'.format(
                    self.path, _seg_name(base)))
        except BaseException:
            _os.close(fd)
            raise
        PyObject_GetBuffer(mm, &v, PyBUF_SIMPLE)
        self.seg_view = v
        self.seg_mm = mm
        self.seg = <const char *>v.buf
        self.seg_len = n
        self.seg_fd = fd
        self.segment = base
        self.off = 0
        self.status = ST_EMPTY
        return True

    cdef _close_segment(self):
        if self.seg != NULL:
            self.seg = NULL
            PyBuffer_Release(&self.seg_view)
            self.seg_mm.close()
            self.seg_mm = None
        if self.seg_fd >= 0:
            _os.close(self.seg_fd)
            self.seg_fd = -1
        self.segment = -1
        self.status = ST_NONE

    cdef Py_ssize_t _frame(self, Py_ssize_t off, TailFrame *f) noexcept:
        """The length of the verified frame at ``off``, 0 if there is none
        (yet), -1 if what is there does not verify, -2 if it ends past the
        map (the live segment grew); its header in ``f``, read once (a
        segment given up may change under the reader: only these values,
        checked together, are used)."""
        cdef const char *p = self.seg
        cdef Py_ssize_t rlen, slen, extra
        cdef int kind, version
        if off + 4 > self.seg_len:
            return 0
        rlen = ff_acquire32(p + off)
        if rlen == 0:
            return 0
        if rlen < REC_HEADER:
            return -1
        if off + rlen > self.seg_len:
            return -2
        kind = <uint8_t>p[off + 34]
        version = <uint8_t>p[off + 35]
        slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
        extra = LINK_LEN if version == FRAME_V2 else 0
        if kind < KIND_RECORD or kind > KIND_EVICT or (version != FRAME_V1 and
                                                        version != FRAME_V2) or \
                REC_HEADER + slen + extra > rlen:
            return -1
        f.seq = _rdi64(p + off + 8)
        f.ts = _rdi64(p + off + 16)
        f.time = _rdi64(p + off + 24)
        f.kind = kind
        f.slen = slen
        f.dlen = rlen - REC_HEADER - slen - extra
        if ff_crc32c(0, p + off + 8, rlen - 8) != _rd32(p + off + 4):
            return -1
        return rlen

    cdef int _locate(self, int64_t target) except -1:
        """Open the segment that holds ``target`` (or the first one after
        it) at the first record >= target, or at its end."""
        cdef Py_ssize_t rlen
        cdef TailFrame f
        bases = self._bases()
        if not bases:
            self._close_segment()
            return 0
        i = len(bases) - 1
        while i > 0 and bases[i] > target:
            i -= 1
        if not self._open_segment(bases[i]):
            self._close_segment()
            return 0
        while True:
            rlen = self._frame(self.off, &f)
            if rlen <= 0:
                break
            if f.kind == KIND_RECORD and f.seq >= target:
                break
            self.off += rlen
        return 0

    cdef int _locate_time(self, int64_t t) except -1:
        """The first record with an append time >= t (the log's ``seek(time=)``)."""
        cdef Py_ssize_t rlen
        cdef TailFrame f
        cdef int64_t seen = 0
        bases = self._bases()
        self.expect = max(1, ff_ctl_load64(self.ctl, FF_TAIL_FIRST_SEQ))
        if not bases:
            return 0
        # the last segment whose first record is not after t
        i = len(bases) - 1
        while i > 0:
            if self._open_segment(bases[i]):
                rlen = self._frame(0, &f)
                if rlen > 0 and f.kind == KIND_RECORD and f.ts <= t:
                    break
            i -= 1
        while i < len(bases):
            if self._open_segment(bases[i]):
                while True:
                    rlen = self._frame(self.off, &f)
                    if rlen <= 0:
                        break
                    if f.kind == KIND_RECORD:
                        if f.ts >= t and f.seq >= self.expect:
                            self.expect = f.seq
                            return 0
                        seen = f.seq
                    self.off += rlen
                if i == len(bases) - 1:
                    # nothing at or after t yet: on after the last record
                    # looked at (a record appended since is read next)
                    self.expect = max(self.expect, seen + 1, bases[i])
                    return 0
            i += 1
        return 0

    # -- reading --------------------------------------------------------------------

    cdef Py_ssize_t _take(self, char *out, Py_ssize_t cap, Py_ssize_t limit,
                          Py_ssize_t max_bytes, bint grow, Int64Array offs, Int64Array seqs,
                          Int64Array tss, Int64Array times, Int64Array soffs) except -1:
        """Copy the records there now, up to ``limit`` (and ``cap`` bytes of
        ``out``, or into the growing scratch with ``grow``); the columns get
        one entry per record.  Nothing is kept (position, counters) unless
        the segment was still the writer's after the copy."""
        cdef const char *p = self.seg
        cdef Py_ssize_t n = 0, total = 0, stotal = 0, off = self.off, rlen, slen, dlen, ncap
        cdef int64_t seq, expect = self.expect, lost = 0, floor
        cdef TailFrame f
        cdef char *dst = out
        cdef char *grown
        if p == NULL:
            self.status = ST_NONE
            return 0
        floor = ff_ctl_load64(self.ctl, FF_TAIL_FIRST_SEQ)
        self.status = ST_DATA
        while n < limit:
            if off + 4 > self.seg_len:
                self.status = ST_END
                break
            rlen = self._frame(off, &f)
            if rlen <= 0:
                self.status = ST_EMPTY if rlen == 0 else ST_END if rlen == -2 else ST_SUSPECT
                break
            if f.kind != KIND_RECORD:
                off += rlen
                continue
            seq = f.seq
            if seq < expect:            # before the start
                off += rlen
                continue
            if self.strict and (lost or seq < floor or seq > expect):
                # a gap: the records before it go first, GapError next (at
                # this record: the read after it goes on from here)
                if n:
                    self.status = ST_DATA
                    break
                if seq < floor:
                    lost += seq - expect + 1
                    expect = seq + 1
                    off += rlen
                    continue
                lost += seq - expect
                expect = seq
                self.status = ST_DATA
                break
            if seq < floor:             # evicted by the writer: not served
                lost += seq - expect + 1
                expect = seq + 1
                off += rlen
                continue
            slen = f.slen
            dlen = f.dlen
            if self.filtered and not pattern_matches(self.pt, self.ps.ntok, p + off + REC_HEADER,
                                                     slen):
                lost += seq - expect
                expect = seq + 1
                off += rlen
                continue
            if n and max_bytes and total + dlen > max_bytes:
                break
            if total + dlen > cap:
                if grow:
                    ncap = max(total + dlen, 2 * cap, 4096)
                    grown = <char *>realloc(self.scratch, ncap)
                    if grown == NULL:
                        raise MemoryError()
                    self.scratch = dst = grown
                    self.scap = cap = ncap
                elif n:
                    break
                else:
                    raise ValueError('buffer too small: record {} has {} bytes, the buffer '
                                     '{}'.format(seq, dlen, cap))
            if soffs is not None:
                if stotal + slen > self.sbcap:
                    ncap = max(stotal + slen, 2 * self.sbcap, 4096)
                    grown = <char *>realloc(self.sbuf, ncap)
                    if grown == NULL:
                        raise MemoryError()
                    self.sbuf = grown
                    self.sbcap = ncap
                memcpy(self.sbuf + stotal, p + off + REC_HEADER, slen)
                stotal += slen
                soffs.push(stotal)
                seqs.push(seq)
                tss.push(f.ts)
                times.push(f.time)
            memcpy(dst + total, p + off + REC_HEADER + slen, dlen)
            total += dlen
            offs.push(total)
            lost += seq - expect
            expect = seq + 1
            off += rlen
            n += 1
        # the copies done, was the segment still the writer's?  (it publishes
        # giving one up before it touches a byte of it)
        ff_load_fence()
        if ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE) > self.segment:
            self.status = ST_GONE
            offs.n = 1
            if soffs is not None:
                soffs.n = 1
                seqs.n = tss.n = times.n = 0
            return 0
        if lost and self.strict:
            # (no record in this batch: the next read goes on after the gap)
            first = self.expect
            self.off = off
            self.expect = expect
            self.lost += lost
            raise GapError('tail gap: {} records from seq {} are no longer in {} (the writer '
                           'evicted them before this reader came); the next read goes on '
                           'from seq {}'.format(lost, first, self.path, expect))
        self.off = off
        self.expect = expect
        self.lost += lost
        self.batch_lost += lost
        self.n_read += n
        return n

    cdef int _settle(self) except -1:
        """After a read that stopped short: follow a roll, a grown map, a
        segment given up, or look again at a frame that did not verify."""
        cdef Py_ssize_t rlen
        cdef int64_t live, first_base
        cdef int tries
        cdef TailFrame f
        if self.status == ST_NONE or self.segment < 0:
            self._locate(self.expect)
            return 0
        first_base = ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE)
        if self.status == ST_GONE or first_base > self.segment:
            # behind retention: on from the first record the writer still has
            self.n_gaps += 1
            self._locate(max(self.expect, first_base))
            return 0
        if self.status == ST_END:
            if _os.fstat(self.seg_fd).st_size > self.seg_len:      # the live segment grew
                off = self.off
                if self._open_segment(self.segment):
                    self.off = off
                return 0
            if self.off + 4 <= self.seg_len:
                # a length past the end of a file that did not grow: looked
                # at while being stored, or damage (below)
                self.status = ST_SUSPECT
        if self.status == ST_SUSPECT:
            # a torn look (a length read while being stored across a cache
            # line) settles at once; a frame that stays bad is damage
            for tries in range(100):
                ff_sleep_ns(1000)
                rlen = self._frame(self.off, &f)
                if rlen >= 0 or (rlen == -2 and _os.fstat(self.seg_fd).st_size > self.seg_len):
                    return 0
                if ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE) > self.segment:
                    self.status = ST_GONE
                    return self._settle()
            raise CorruptLogError('corrupt record in {} at offset {} (tailing seq {})'.format(
                _os.path.join(self.path, _seg_name(self.segment)), self.off, self.expect))
        # the end of what is there: has the writer moved to a newer segment?
        live = ff_ctl_load64(self.ctl, FF_TAIL_LIVE_BASE)
        if live != self.segment:
            if self._frame(self.off, &f) != 0:
                return 0                    # the last frames came meanwhile
            for b in self._bases():
                if b > self.segment:
                    self.n_rolls += 1
                    self._open_segment(b)
                    return 0
        return 0

    cdef Py_ssize_t _read(self, char *out, Py_ssize_t cap, Py_ssize_t limit,
                          Py_ssize_t max_bytes, bint grow, Int64Array offs, Int64Array seqs,
                          Int64Array tss, Int64Array times, Int64Array soffs) except -1:
        cdef Py_ssize_t n
        cdef int rounds
        self.batch_lost = 0
        if self.closed or not self._attach():
            return 0
        for rounds in range(64):
            n = self._take(out, cap, limit, max_bytes, grow, offs, seqs, tss, times, soffs)
            if n or self.status == ST_DATA:
                return n
            if self.status == ST_EMPTY and \
                    ff_ctl_load64(self.ctl, FF_TAIL_LIVE_BASE) == self.segment and \
                    ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE) <= self.segment:
                return 0                    # nothing new (the common case)
            self._settle()
            if self.segment < 0:
                return 0
        return 0

    # -- waiting --------------------------------------------------------------------

    cdef bint _ready(self) noexcept nogil:
        """Anything to do at the read position (cheap: two loads)?  (Also
        True once the reader is closed from another thread: the wait ends.)"""
        if self.closed:
            return True
        if self.seg == NULL:
            return ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE) >= 0 and \
                ff_ctl_load64(self.ctl, FF_TAIL_LAST_SEQ) >= self.expect
        if self.off + 4 <= self.seg_len and ff_acquire32(self.seg + self.off) != 0:
            return True
        return ff_ctl_load64(self.ctl, FF_TAIL_LIVE_BASE) != self.segment or \
            ff_ctl_load64(self.ctl, FF_TAIL_FIRST_BASE) > self.segment

    cdef bint _wait(self, int64_t deadline) except -1:
        """Wait in this reader's mode until there may be something to read,
        or ``deadline`` (monotonic ns; -1: none); False on the deadline."""
        cdef int64_t now, until, rounds = 0, slice_end
        cdef uint32_t word
        cdef bint ready = False
        cdef bint notify
        cdef int mode = self.mode
        cdef int64_t spin = self.spin
        while True:
            if self.closed:
                return True
            if self.ctl == NULL:
                # not there yet: look again every poll_interval
                if self._attach():
                    if self._ready():
                        return True
                    continue
                now = _mono()
                if deadline >= 0 and now >= deadline:
                    return False
                until = now + self.poll_ns if deadline < 0 else min(deadline, now + self.poll_ns)
                with nogil:
                    ff_sleep_ns(until - now)
                PyErr_CheckSignals()
                continue
            now = _mono()
            slice_end = now + _SIGNAL_SLICE_NS if deadline < 0 else \
                min(deadline, now + _SIGNAL_SLICE_NS)
            self.n_waits += 1
            # (a writer reopening may turn it on or off: read each slice)
            notify = _rd32(self.ctl + FF_TAIL_NOTIFY) != 0 and self.ctl_rw
            with nogil:
                while True:
                    if self._ready():
                        ready = True
                        break
                    rounds += 1
                    if mode == WAIT_SPIN or rounds <= spin:
                        ff_cpu_relax()
                        if rounds & 1023 == 0 and _mono() >= slice_end:
                            break
                        continue
                    if mode == WAIT_YIELD:
                        ff_yield()
                        if _mono() >= slice_end:
                            break
                        continue
                    # blocking: on the futex when the writer wakes readers,
                    # else a sleep of poll_interval
                    now = _mono()
                    if now >= slice_end:
                        break
                    until = min(slice_end, now + (_BLOCK_SLICE_NS if notify else self.poll_ns))
                    if notify:
                        word = ff_tail_word(self.ctl)
                        ff_tail_enter(self.ctl)
                        if self._ready():
                            ff_tail_leave(self.ctl)
                            ready = True
                            break
                        ff_futex_wait(self.ctl, word, until - now)
                        ff_tail_leave(self.ctl)
                    else:
                        ff_sleep_ns(until - now)
                    self.n_sleeps += 1
            if ready:
                return True
            PyErr_CheckSignals()
            if deadline >= 0 and _mono() >= deadline:
                return False

    # -- the API --------------------------------------------------------------------

    def read(self, Py_ssize_t limit=1024, Py_ssize_t max_bytes=0, timeout=0.0):
        """The records there now (at most ``limit``, ``max_bytes`` of payload
        but at least one) as a ``Batch``; with ``timeout`` (seconds, None:
        no limit) it waits that long for the first one.  ``batch.lost``
        counts the records this read could not serve (gone before it came)."""
        cdef Batch b
        cdef Py_ssize_t n, i
        cdef int64_t deadline
        if limit < 1:
            raise ValueError('limit must be >= 1, got {}'.format(limit))
        if max_bytes < 0:
            raise ValueError('max_bytes must be >= 0, got {}'.format(max_bytes))
        deadline = self._deadline(timeout)
        b = _new_batch(0)
        b.offsets.push(0)
        soffs = Int64Array.new(16)
        soffs.push(0)
        self._enter()
        try:
            while True:
                n = self._read(self.scratch, self.scap, limit, max_bytes, True, b.offsets,
                               b.seqs, b.ts, b.times, soffs)
                if n or deadline == 0 or self.closed or (deadline > 0 and _mono() >= deadline) \
                        or not self._wait(deadline):
                    break
        finally:
            self._leave()
        b.buffer = PyBytes_FromStringAndSize(self.scratch, b.offsets.data[n]) if n else b''
        for i in range(n):
            b.subjects.append(PyUnicode_DecodeUTF8(self.sbuf + soffs.data[i],
                                                   soffs.data[i + 1] - soffs.data[i], NULL))
        b.next_seq = self.expect
        b.lost = self.batch_lost
        return b

    def read_into(self, buffer, Py_ssize_t limit=1024, timeout=0.0):
        """Copy the payloads there now into the writable ``buffer``; returns
        ``(count, next_seq, offsets)`` as ``Log.read_into`` (waits as ``read``)."""
        cdef Py_buffer view
        cdef Int64Array offs
        cdef Py_ssize_t n
        cdef int64_t deadline
        if limit < 1:
            raise ValueError('limit must be >= 1, got {}'.format(limit))
        deadline = self._deadline(timeout)
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError('read_into needs a writable buffer, got {}'.format(
                type(buffer).__name__)) from None
        try:
            offs = Int64Array.new(min(limit, 4096) + 1)
            offs.push(0)
            self._enter()
            try:
                while True:
                    n = self._read(<char *>view.buf, view.len, limit, 0, False, offs, None,
                                   None, None, None)
                    if n or deadline == 0 or self.closed or \
                            (deadline > 0 and _mono() >= deadline) or not self._wait(deadline):
                        break
            finally:
                self._leave()
            return (n, self.expect, offs)
        finally:
            PyBuffer_Release(&view)

    def wait(self, timeout=None):
        """Wait (in the reader's mode) until a record may be there; False
        when ``timeout`` seconds passed first."""
        cdef int64_t deadline = self._deadline(timeout)
        self._enter()
        try:
            return self._wait(deadline) and not self.closed
        finally:
            self._leave()

    cdef int _enter(self) except -1:
        if self.closed:
            raise FastflowError('tail reader is closed')
        self.busy += 1
        return 0

    cdef int _leave(self) except -1:
        self.busy -= 1
        if self.closed and self.busy == 0:
            self._detach()      # closed by another thread while this call waited
        return 0

    def _deadline(self, timeout):
        if timeout is None:
            return -1
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
                not timeout >= 0:
            raise ValueError('timeout must be a number of seconds >= 0 or None, got '
                             '{!r}'.format(timeout))
        if timeout == 0:
            return 0
        return _mono() + <int64_t>(timeout * 1e9)

    def __iter__(self):
        """Batches, waiting for each (until the reader is closed)."""
        while not self.closed:
            try:
                b = self.read(timeout=None)
            except FastflowError:
                if self.closed:
                    return
                raise
            if len(b):
                yield b

    @property
    def next_seq(self):
        """The seq the next read starts from."""
        return self.expect

    @property
    def attached(self):
        """Whether the log exists and the reader has found its start."""
        return self.ctl != NULL

    @property
    def last_seq(self):
        """The writer's last seq (0 before the reader is attached)."""
        return ff_ctl_load64(self.ctl, FF_TAIL_LAST_SEQ) if self.ctl != NULL else 0

    @property
    def lag(self):
        """Records written that this reader has not read yet."""
        if self.ctl == NULL:
            return 0
        return max(0, ff_ctl_load64(self.ctl, FF_TAIL_LAST_SEQ) - self.expect + 1)

    @property
    def writer_closed(self):
        """Whether the writer closed the log (it may be opened again)."""
        return self.ctl != NULL and ff_ctl_load64(self.ctl, FF_TAIL_CLOSED) != 0

    def stats(self):
        return {'read': self.n_read, 'lost': self.lost, 'gaps': self.n_gaps,
                'rolls': self.n_rolls, 'waits': self.n_waits, 'sleeps': self.n_sleeps,
                'segment': self.segment, 'next_seq': self.expect, 'lag': self.lag}

    def close(self):
        """Close the reader; a call waiting in another thread returns (what
        it read: nothing) and the maps go when it has."""
        if not self.closed:
            self.closed = True
            if self.busy == 0:
                self._detach()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return 'TailReader({!r}, next_seq={}, lost={}{})'.format(
            self.path, self.expect, self.lost, ', closed' if self.closed else '')
