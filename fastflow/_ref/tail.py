"""Tailing a file-backed log from another process: the pure-Python twin of
``src_ext/tail.pyx`` (the reader) and of the writer's side of tail.ctl in
``src_ext/segments.pyx``.  The protocol is in ``src_ext/ff_tail.h`` and
docs/latency.md; this twin follows it with the same file layout, so either
core's reader tails either core's writer.  Python has no futex: a blocking
reader of this core looks every ``poll_interval``."""

import mmap
import os
import struct
import time as _time
from array import array

from fastflow._ref.log import (
    FRAME_V1,
    FRAME_V2,
    KIND_EVICT,
    KIND_RECORD,
    LINK_LEN,
    RECORD_HEADER,
    Batch,
    _time_ns,
    crc32c,
)
from fastflow._ref.subjects import tokenize
from fastflow.errors import CorruptLogError, FastflowError, GapError

CTL_SIZE = 4096
VERSION = 1
MAGIC = b"FFTAIL01"
# byte offsets in tail.ctl (ff_tail.h)
NOTIFY = 12
PID = 16
EPOCH = 24
FIRST_SEQ = 64
LIVE_BASE = 128
FIRST_BASE = 136
CLOSED = 144
LAST_SEQ = 192
WORD = 256
WAITERS = 320

_Q = struct.Struct("<q")
_I = struct.Struct("<I")
_FRAME = struct.Struct("<IIQqqHBB")


class TailCtl:
    """The writer's side of tail.ctl."""

    def __init__(self, path, notify, live_base, first_base, first_seq, last_seq):
        fname = os.path.join(path, "tail.ctl")
        fd = os.open(fname, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < CTL_SIZE:
                os.ftruncate(fd, CTL_SIZE)
            self.mm = mmap.mmap(fd, CTL_SIZE)
        finally:
            os.close(fd)
        mm = self.mm
        # (this core has no futex: it never wakes blocked readers, who then
        # poll; notify stays 0 so that they do not wait for a wake)
        struct.pack_into("<II", mm, 8, VERSION, 0)
        _Q.pack_into(mm, PID, os.getpid())
        _Q.pack_into(mm, EPOCH, _Q.unpack_from(mm, EPOCH)[0] + 1)
        _Q.pack_into(mm, FIRST_BASE, first_base)
        _Q.pack_into(mm, LIVE_BASE, live_base)
        _Q.pack_into(mm, FIRST_SEQ, first_seq)
        _Q.pack_into(mm, LAST_SEQ, last_seq)
        _Q.pack_into(mm, CLOSED, 0)
        _I.pack_into(mm, WAITERS, 0)
        mm[4:8] = MAGIC[4:]
        mm[0:4] = MAGIC[:4]

    def set(self, off, value):
        _Q.pack_into(self.mm, off, value)

    def get(self, off):
        return _Q.unpack_from(self.mm, off)[0]

    def appended(self, first_seq, last_seq):
        _Q.pack_into(self.mm, LAST_SEQ, last_seq)
        if _Q.unpack_from(self.mm, FIRST_SEQ)[0] != first_seq:
            _Q.pack_into(self.mm, FIRST_SEQ, first_seq)

    def close(self):
        if self.mm is not None:
            _Q.pack_into(self.mm, CLOSED, 1)
            self.mm.close()
            self.mm = None


def _matches(toks, subject):
    """The subject pattern ``toks`` against a literal subject (str)."""
    parts = subject.split(".")
    if toks[0] in ("*", ">") and subject.startswith("$"):
        return False
    for i, t in enumerate(toks):
        if t == ">":
            return i < len(parts)
        if i >= len(parts) or (t != "*" and t != parts[i]):
            return False
    return len(parts) == len(toks)


class TailReader:
    """Reads a file-backed log as its writer appends to it (see the native
    core's class for the whole contract)."""

    def __init__(self, path, start="first", *, seq=None, time=None, filter=None,
                 wait="spin", strict=False, spin=None, poll_interval=0.001):
        self.path = os.fspath(path)
        if not isinstance(self.path, str):
            raise TypeError("path must be a str or os.PathLike of str, got {!r}".format(path))
        if seq is not None and time is not None:
            raise ValueError("TailReader: give seq= or time=, not both")
        if seq is not None:
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("seq must be an int, not {}".format(type(seq).__name__))
            if not 0 <= seq < (1 << 63):
                raise ValueError("seq must be in 0..2**63-1, got {}".format(seq))
        elif time is not None:
            time = _time_ns("time", time)
        elif start not in ("first", "last", "new"):
            raise ValueError("start must be 'first', 'last' or 'new', got {!r}".format(start))
        if wait not in ("spin", "yield", "block"):
            raise ValueError("wait must be 'spin', 'yield' or 'block', got {!r}".format(wait))
        self._mode = wait
        if spin is None:
            spin = {"spin": 0, "yield": 20000, "block": 2000}[wait]
        if not isinstance(spin, int) or isinstance(spin, bool) or spin < 0:
            raise ValueError("spin must be an int >= 0 (rounds before yielding or sleeping), "
                             "got {!r}".format(spin))
        self._spin = spin
        if not isinstance(poll_interval, (int, float)) or isinstance(poll_interval, bool) \
                or not 0 < poll_interval <= 1:
            raise ValueError("poll_interval must be a number of seconds in (0, 1], got "
                             "{!r}".format(poll_interval))
        self._poll = max(1e-6, poll_interval)
        self._start, self._start_seq, self._start_time = start, seq, time
        self.strict = bool(strict)
        self.filter = filter
        self._toks = None
        if filter is not None:
            f = filter.decode() if isinstance(filter, (bytes, bytearray)) else filter
            tokenize(f, True)               # SubjectError for a bad pattern
            self._toks = f.split(".")
        self._ctl = None
        self._seg = None
        self.segment = -1
        self._off = 0
        self._expect = 0
        self.lost = 0
        self.closed = False
        self._n = dict(read=0, gaps=0, rolls=0, waits=0, sleeps=0)
        self._batch_lost = 0
        self._busy = 0
        self._attach()

    # -- attaching, segments -------------------------------------------------------

    def _attach(self):
        if self._ctl is not None:
            return True
        fname = os.path.join(self.path, "tail.ctl")
        try:
            with open(fname, "rb") as f:
                if os.fstat(f.fileno()).st_size < CTL_SIZE:
                    return False
                mm = mmap.mmap(f.fileno(), CTL_SIZE, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            return False
        if mm[:8] != MAGIC:
            mm.close()
            return False
        if _I.unpack_from(mm, 8)[0] != VERSION:
            mm.close()
            raise FastflowError("{}: tail.ctl has version {}, this reader knows {}".format(
                self.path, _I.unpack_from(mm, 8)[0], VERSION))
        self._ctl = mm
        if self._start_time is not None:
            self._locate_time(self._start_time)
        elif self._start_seq is not None:
            self._expect = max(1, self._start_seq)
            self._locate(self._expect)
        elif self._start == "first":
            self._expect = max(1, self._get(FIRST_SEQ))
            self._locate(self._expect)
        elif self._start == "new":
            self._expect = self._get(LAST_SEQ) + 1
            self._locate(self._expect)
        else:
            last, first = self._get(LAST_SEQ), self._get(FIRST_SEQ)
            self._expect = max(1, last if last >= first else last + 1)
            self._locate(self._expect)
        return True

    def _get(self, off):
        return _Q.unpack_from(self._ctl, off)[0]

    def _bases(self):
        floor = self._get(FIRST_BASE)
        out = []
        for name in os.listdir(self.path):
            if len(name) == 24 and name.endswith(".seg") and name[:20].isdigit():
                b = int(name[:20])
                if b >= floor:
                    out.append(b)
        return sorted(out)

    def _open_segment(self, base):
        self._close_segment()
        try:
            with open(os.path.join(self.path, "{:020d}.seg".format(base)), "rb") as f:
                for _ in range(8):
                    n = os.fstat(f.fileno()).st_size
                    if n == 0:
                        return False
                    try:
                        self._seg = mmap.mmap(f.fileno(), n, access=mmap.ACCESS_READ)
                        break
                    except ValueError:
                        continue  # cut (sealed) between fstat and mmap: again
                else:
                    raise FastflowError("{}: the segment {:020d}.seg keeps changing size".format(
                        self.path, base))
        except FileNotFoundError:
            return False
        self.segment = base
        self._off = 0
        return True

    def _close_segment(self):
        if self._seg is not None:
            self._seg.close()
            self._seg = None
        self.segment = -1

    def _frame(self, off):
        """(length, kind, seq, ts, time, subject bytes, data bytes) of the
        verified frame at ``off``; length 0: none (yet), -1: does not
        verify, -2: ends past the map."""
        p = self._seg
        n = len(p)
        if off + 4 > n:
            return (0,)
        rlen = _I.unpack_from(p, off)[0]
        if rlen == 0:
            return (0,)
        if rlen < RECORD_HEADER:
            return (-1,)
        if off + rlen > n:
            return (-2,)
        _, crc, seq, ts, ptime, slen, kind, version = _FRAME.unpack_from(p, off)
        extra = LINK_LEN if version == FRAME_V2 else 0
        if not KIND_RECORD <= kind <= KIND_EVICT or version not in (FRAME_V1, FRAME_V2) or \
                RECORD_HEADER + slen + extra > rlen:
            return (-1,)
        body = p[off + 8:off + rlen]
        if crc32c(body) != crc:
            return (-1,)
        s = body[RECORD_HEADER - 8:RECORD_HEADER - 8 + slen]
        d = body[RECORD_HEADER - 8 + slen:len(body) - extra]
        return (rlen, kind, seq, ts, ptime, s, d)

    def _locate(self, target):
        bases = self._bases()
        if not bases:
            self._close_segment()
            return
        i = len(bases) - 1
        while i > 0 and bases[i] > target:
            i -= 1
        if not self._open_segment(bases[i]):
            return
        while True:
            f = self._frame(self._off)
            if f[0] <= 0:
                return
            if f[1] == KIND_RECORD and f[2] >= target:
                return
            self._off += f[0]

    def _locate_time(self, t):
        bases = self._bases()
        self._expect = max(1, self._get(FIRST_SEQ))
        if not bases:
            return
        i = len(bases) - 1
        while i > 0:
            if self._open_segment(bases[i]):
                f = self._frame(0)
                if f[0] > 0 and f[1] == KIND_RECORD and f[3] <= t:
                    break
            i -= 1
        seen = 0
        while i < len(bases):
            if self._open_segment(bases[i]):
                while True:
                    f = self._frame(self._off)
                    if f[0] <= 0:
                        break
                    if f[1] == KIND_RECORD:
                        if f[3] >= t and f[2] >= self._expect:
                            self._expect = f[2]
                            return
                        seen = f[2]
                    self._off += f[0]
                if i == len(bases) - 1:
                    # on after the last record looked at
                    self._expect = max(self._expect, seen + 1, bases[i])
                    return
            i += 1

    # -- reading -------------------------------------------------------------------

    def _take(self, limit, max_bytes, cap):
        """(records, status): records as (seq, ts, time, subject, data)."""
        if self._seg is None:
            return [], "none"
        floor = self._get(FIRST_SEQ)
        out = []
        total = 0
        off, expect, lost = self._off, self._expect, 0
        status = "data"
        while len(out) < limit:
            f = self._frame(off)
            if f[0] <= 0:
                status = {0: "empty", -1: "suspect", -2: "end"}[f[0]]
                break
            rlen, kind, seq, ts, ptime, s, d = f
            if kind != KIND_RECORD or seq < expect:
                off += rlen
                continue
            if self.strict and (lost or seq < floor or seq > expect):
                # a gap: the records before it go first, GapError next (at
                # this record: the read after it goes on from here)
                if out:
                    break
                if seq < floor:
                    lost += seq - expect + 1
                    expect = seq + 1
                    off += rlen
                    continue
                lost += seq - expect
                expect = seq
                break
            if seq < floor:
                lost += seq - expect + 1
                expect = seq + 1
                off += rlen
                continue
            subject = s.decode("utf-8")
            if self._toks is not None and not _matches(self._toks, subject):
                lost += seq - expect
                expect = seq + 1
                off += rlen
                continue
            if out and max_bytes and total + len(d) > max_bytes:
                break
            if cap is not None and total + len(d) > cap:
                if out:
                    break
                raise ValueError("buffer too small: record {} has {} bytes, the buffer "
                                 "{}".format(seq, len(d), cap))
            out.append((seq, ts, ptime, subject, d))
            total += len(d)
            lost += seq - expect
            expect = seq + 1
            off += rlen
        if self._get(FIRST_BASE) > self.segment:
            return [], "gone"
        if lost and self.strict:
            # (no record in this batch: the next read goes on after the gap)
            first = self._expect
            self._off, self._expect = off, expect
            self.lost += lost
            raise GapError("tail gap: {} records from seq {} are no longer in {} (the writer "
                           "evicted them before this reader came); the next read goes on "
                           "from seq {}".format(lost, first, self.path, expect))
        self._off, self._expect = off, expect
        self.lost += lost
        self._batch_lost += lost
        self._n["read"] += len(out)
        return out, status

    def _settle(self, status):
        if status == "none" or self.segment < 0:
            self._locate(self._expect)
            return
        first_base = self._get(FIRST_BASE)
        if status == "gone" or first_base > self.segment:
            self._n["gaps"] += 1
            self._locate(max(self._expect, first_base))
            return
        if status == "end":
            try:
                size = os.path.getsize(os.path.join(self.path,
                                                    "{:020d}.seg".format(self.segment)))
            except FileNotFoundError:
                return self._settle("gone")
            if size > len(self._seg):
                off = self._off
                if self._open_segment(self.segment):
                    self._off = off
                return
            if self._off + 4 <= len(self._seg):
                status = "suspect"  # a length past the end of a file that did not grow
        if status == "suspect":
            for _ in range(100):
                _time.sleep(1e-6)
                if self._frame(self._off)[0] >= 0:
                    return
                if self._get(FIRST_BASE) > self.segment:
                    return self._settle("gone")
            raise CorruptLogError("corrupt record in {} at offset {} (tailing seq {})".format(
                os.path.join(self.path, "{:020d}.seg".format(self.segment)), self._off,
                self._expect))
        if self._get(LIVE_BASE) != self.segment:
            if self._frame(self._off)[0] != 0:
                return
            for b in self._bases():
                if b > self.segment:
                    self._n["rolls"] += 1
                    self._open_segment(b)
                    return

    def _read(self, limit, max_bytes, cap):
        self._batch_lost = 0
        if self.closed or not self._attach():
            return []
        for _ in range(64):
            out, status = self._take(limit, max_bytes, cap)
            if out or status == "data":
                return out
            if status == "empty" and self._get(LIVE_BASE) == self.segment and \
                    self._get(FIRST_BASE) <= self.segment:
                return []
            self._settle(status)
            if self.segment < 0:
                return []
        return []

    # -- waiting -------------------------------------------------------------------

    def _ready(self):
        if self.closed:
            return True
        if self._ctl is None:
            return False
        if self._seg is None:
            return self._get(LAST_SEQ) >= self._expect
        if self._off + 4 <= len(self._seg) and _I.unpack_from(self._seg, self._off)[0]:
            return True
        return self._get(LIVE_BASE) != self.segment or self._get(FIRST_BASE) > self.segment

    def _wait(self, deadline):
        self._n["waits"] += 1
        rounds = 0
        while True:
            if self._ctl is None:
                self._attach()
            if self._ready():
                return True
            now = _time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            rounds += 1
            if self._ctl is None or (self._mode == "block" and rounds > self._spin):
                self._n["sleeps"] += 1
                _time.sleep(self._poll if deadline is None else
                            max(0.0, min(self._poll, deadline - now)))
            elif self._mode == "yield" and rounds > self._spin:
                os.sched_yield()

    def _deadline(self, timeout):
        if timeout is None:
            return None
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or \
                not timeout >= 0:
            raise ValueError("timeout must be a number of seconds >= 0 or None, got "
                             "{!r}".format(timeout))
        return _time.monotonic() + timeout

    # -- the API -------------------------------------------------------------------

    def read(self, limit=1024, max_bytes=0, timeout=0.0):
        if limit < 1:
            raise ValueError("limit must be >= 1, got {}".format(limit))
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0, got {}".format(max_bytes))
        deadline = self._deadline(timeout)
        self._enter()
        try:
            while True:
                out = self._read(limit, max_bytes, None)
                if out or timeout == 0 or self.closed or (
                        deadline is not None and _time.monotonic() >= deadline) or \
                        not self._wait(deadline):
                    break
        finally:
            self._leave()
        b = Batch([], self._expect)
        b.buffer = b"".join(r[4] for r in out)
        offs = array("q", [0])
        pos = 0
        for r in out:
            pos += len(r[4])
            offs.append(pos)
        b.offsets = offs
        b.seqs = array("q", [r[0] for r in out])
        b.ts = array("q", [r[1] for r in out])
        b.times = array("q", [r[2] for r in out])
        b._subjects = [r[3] for r in out]
        b.lost = self._batch_lost
        return b

    def read_into(self, buffer, limit=1024, timeout=0.0):
        if limit < 1:
            raise ValueError("limit must be >= 1, got {}".format(limit))
        deadline = self._deadline(timeout)
        try:
            mv = memoryview(buffer).cast("B")
        except TypeError:
            raise TypeError("read_into needs a writable buffer, got {}".format(
                type(buffer).__name__)) from None
        if mv.readonly:
            raise TypeError("read_into needs a writable buffer, got {}".format(
                type(buffer).__name__))
        self._enter()
        try:
            while True:
                out = self._read(limit, 0, len(mv))
                if out or timeout == 0 or self.closed or (
                        deadline is not None and _time.monotonic() >= deadline) or \
                        not self._wait(deadline):
                    break
        finally:
            self._leave()
        offs = array("q", [0])
        pos = 0
        for r in out:
            mv[pos:pos + len(r[4])] = r[4]
            pos += len(r[4])
            offs.append(pos)
        return (len(out), self._expect, offs)

    def wait(self, timeout=None):
        deadline = self._deadline(timeout)
        self._enter()
        try:
            return self._wait(deadline) and not self.closed
        finally:
            self._leave()

    def __iter__(self):
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
        return self._expect

    @property
    def attached(self):
        return self._ctl is not None

    @property
    def last_seq(self):
        return self._get(LAST_SEQ) if self._ctl is not None else 0

    @property
    def lag(self):
        if self._ctl is None:
            return 0
        return max(0, self._get(LAST_SEQ) - self._expect + 1)

    @property
    def writer_closed(self):
        return self._ctl is not None and self._get(CLOSED) != 0

    def stats(self):
        return {"read": self._n["read"], "lost": self.lost, "gaps": self._n["gaps"],
                "rolls": self._n["rolls"], "waits": self._n["waits"],
                "sleeps": self._n["sleeps"], "segment": self.segment,
                "next_seq": self._expect, "lag": self.lag}

    def close(self):
        if not self.closed:
            self.closed = True
            if not self._busy:
                self._detach()

    def _detach(self):
        self._close_segment()
        if self._ctl is not None:
            self._ctl.close()
            self._ctl = None

    def _enter(self):
        if self.closed:
            raise FastflowError("tail reader is closed")
        self._busy += 1

    def _leave(self):
        self._busy -= 1
        if self.closed and not self._busy:
            self._detach()  # closed by another thread while this call waited

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "TailReader({!r}, next_seq={}, lost={}{})".format(
            self.path, self._expect, self.lost, ", closed" if self.closed else "")
