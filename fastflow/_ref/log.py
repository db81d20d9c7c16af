"""Event log, pure-Python reference for src_ext/log.pyx (docs/log.md).

Same behaviour as the native log, written for clarity: the retained records
are ``_Entry`` objects in a list indexed by ``seq - base`` (``None`` once a
record is gone), with a parallel ``array('q')`` of timestamps for the binary
searches and one deque per subject (oldest first) for the per-subject limit.
Appends are O(1) amortised: the list is compacted once its dead head is
longer than its live part.

File-backed logs (``path=``) write every record and marker through an
``mmap`` of the live segment; the on-disk format is the one of
docs/log.md (see ``_HEADER``), with these details the document leaves open:

* ``length`` is the size of the whole record, the 8-byte length/CRC
  prefix included; records are packed (no padding); a zero length ends the
  data of a segment (the preallocated tail is zeros).
* the CRC32C covers everything after the CRC field (seq .. data).
* kinds: 1 record, 2 delete marker, 3 purge-up-to marker.  A delete marker
  deletes every record whose subject matches the pattern in its subject
  field and whose seq is <= its seq field; a purge-up-to marker deletes
  every record with seq <= its seq field.  In both, the ``time`` field
  holds the log's ``first_seq`` when the marker was written (so that
  global evictions that preceded it are not undone by a crash).
* ``.idx``: little-endian ``[u64 seq][i64 ts][u64 offset]`` entries for
  the 1st, 4097th, ... record (kind 1) of the segment.
"""

import bisect
import datetime as _dt
import json
import logging
import math
import mmap
import operator
import errno
import functools
import hashlib
import os
import re
import struct
import threading
import time as _time
from array import array
from collections import OrderedDict, deque
from typing import NamedTuple

from fastflow._ref.matcher import Matcher
from fastflow._ref.subjects import _show, as_bytes, tokenize
from fastflow.errors import (
    CorruptLogError,
    EventTooLarge,
    FastflowError,
    GapError,
    LogFullError,
    StaleRecordError,
    StorageFullError,
)

try:  # advisory lock on the log directory (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ("AGE_EVICT_STEP", "Batch", "COUNTERS", "Log", "Position", "Record", "crc32c")

# The counters Log.stats() reports on both cores (file-backed logs add more).
COUNTERS = (
    "appended",
    "evicted",
    "evicted_max_events",
    "evicted_max_bytes",
    "evicted_max_age",
    "evicted_max_per_subject",
    "rejected",
    "duplicates",
    "purged",
    "loaded",
)

logger = logging.getLogger("fastflow.log")

AGE_EVICT_STEP = 4096  # expired records evicted per append call, at most
INDEX_INTERVAL = 4096  # records between two .idx entries
MIN_SEGMENT_SIZE = 4096  # bytes (a page)
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1

KIND_RECORD = 1
KIND_DELETE = 2
KIND_PURGE = 3
KIND_EVICT = 4  # segments deleted: seqs time..seq; data: the link at seq, first seq, reason
_KINDS = (KIND_RECORD, KIND_DELETE, KIND_PURGE, KIND_EVICT)
FRAME_V1 = 0  # byte 35 of a frame: format 1, no chain link
FRAME_V2 = 2  # format 2: a 32-byte chain link ends the frame
_VERSIONS = (FRAME_V1, FRAME_V2)
LINK_LEN = 32
CHAIN_HASH = "sha256"
CHAIN_IMPL = "hashlib"


def chain_genesis(name):
    """The link before the first frame of the log named ``name``."""
    return hashlib.sha256(b"fastflow.chain.v1\0" + name.encode("utf-8")).digest()


def sha256_of_digests(parts):
    """SHA-256 of the concatenated SHA-256s of ``parts`` (bytes-like; None
    hashes as the empty string): the CloudEvents verifiability extension's
    digest in one call (fastflow.trust)."""
    out = hashlib.sha256()
    for part in parts:
        out.update(hashlib.sha256(b"" if part is None else part).digest())
    return out.digest()


def chain_link(prev, body):
    """SHA-256(prev || body): the link of a frame whose body (the bytes
    between its CRC and its link) is ``body``."""
    prev = bytes(prev)
    if len(prev) != LINK_LEN:
        raise ValueError("a chain link is {} bytes, got {}".format(LINK_LEN, len(prev)))
    h = hashlib.sha256(prev)
    h.update(body)
    return h.digest()


def chain_walk(buf, off, prev, after, stop):
    """The audit's fast path (see the native chain_walk): verify format-2
    record frames from ``off`` while whole, CRC-good, with a seq above
    ``after`` and the right link from ``prev``; stop before anything else
    or after the record whose seq reaches ``stop`` (0: none).  Returns
    ``(offset, link, records, last seq)``."""
    link = bytes(prev)
    if len(link) != LINK_LEN:
        raise ValueError("a chain link is {} bytes, got {}".format(LINK_LEN, len(link)))
    with memoryview(buf) as whole, whole.cast("B") as mv:
        return _chain_walk(mv, max(off, 0), link, after, stop)


def _chain_walk(mv, off, link, after, stop):
    n = len(mv)
    count = 0
    while off + RECORD_HEADER <= n:
        length, crc, seq, _, _, slen, kind, version = _HEADER.unpack_from(mv, off)
        if length < RECORD_HEADER + LINK_LEN or length > n - off or kind != KIND_RECORD \
                or version != FRAME_V2 or RECORD_HEADER + slen + LINK_LEN > length \
                or seq <= after:
            break
        if crc32c(mv[off + 8 : off + length]) != crc:
            break
        got = hashlib.sha256(link)
        got.update(mv[off + 8 : off + length - LINK_LEN])
        got = got.digest()
        if got != mv[off + length - LINK_LEN : off + length]:
            break
        link = got
        after = seq
        count += 1
        off += length
        if stop and seq >= stop:
            break
    return off, link, count, after


# [u32 length][u32 crc32c][u64 seq][i64 ts][i64 time][u16 subject length][u8 kind][u8 format]
# [subject][data][link: 32 bytes, format 2 only]
_HEADER = struct.Struct("<IIQqqHBB")
_BODY = struct.Struct("<QqqHBB")  # the fixed part covered by the CRC
_PREFIX = struct.Struct("<II")
_IDX = struct.Struct("<QqQ")
RECORD_HEADER = _HEADER.size  # 36 bytes
_SEG_NAME = re.compile(r"^(\d{20})\.seg$")
RESERVE_STEP = 1 << 20  # bytes of the live segment allocated on disk at a time
_NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _allocate(fd, offset, length):
    """Allocate ``offset:offset + length`` of a file on disk so that
    writing it through a map can never fault (SIGBUS on a full disk)."""
    try:
        os.posix_fallocate(fd, offset, length)
        return
    except AttributeError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    end = offset + length
    while offset < end:  # no fallocate here: zeros (the range holds zeros)
        offset += os.pwrite(fd, bytes(min(end - offset, 1 << 16)), offset)


def _exclusive(method):
    """A call that may use the segment files: ``close()`` from another
    thread waits until it ends (and later calls see the log closed)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        with self._oplock:
            return method(self, *args, **kwargs)

    return call

_REASONS = ("max_events", "max_bytes", "max_age", "max_per_subject")
_DISCARDS = ("old", "new")
_FSYNCS = ("always", "interval", "never")
_STARTS = ("first", "last", "new")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


# -- CRC32C (Castagnoli, reflected polynomial 0x82F63B78) -----------------------


def _crc_table():
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    """CRC32C of ``data`` (bytes-like), continuing from ``crc``.

    ``crc32c(b"123456789") == 0xE3069283``.
    """
    table = _CRC_TABLE
    crc ^= 0xFFFFFFFF
    for b in memoryview(data).cast("B"):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- argument checks ---------------------------------------------------------------


def _int(name, value, minimum=0, maximum=_I64_MAX):
    if isinstance(value, float):
        raise TypeError("{} must be an int, not float".format(name))
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            "{} must be an int, not {}".format(name, type(value).__name__)
        ) from None
    if v < minimum:
        raise ValueError("{} must be >= {}, got {}".format(name, minimum, v))
    if v > maximum:
        raise ValueError("{} must be <= {}, got {}".format(name, maximum, v))
    return v


def _seconds(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            "{} must be a number of seconds, not {}".format(name, type(value).__name__)
        )
    v = float(value)
    if math.isnan(v) or v < 0:
        raise ValueError("{} must be >= 0 seconds, got {!r}".format(name, value))
    return v


def _ns(seconds):
    return 0 if math.isinf(seconds) else int(round(seconds * 1e9))


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            "{} must be one of {}, got {!r}".format(
                name, ", ".join(repr(c) for c in choices), value
            )
        )
    return value


_TAIL_LIVE_BASE = 128  # tail.ctl offsets (fastflow/_ref/tail.py)
_TAIL_GAP = 8  # zero bytes always left after a segment's last frame


def _zero_tail(fd, start, end):
    """Zero what lies in ``start:end`` of a file, up to its last non-zero
    byte, without shrinking it (a reader in another process may map it:
    cutting a mapped file is SIGBUS there)."""
    dirty = start
    off = start
    while off < end:
        chunk = os.pread(fd, min(1 << 20, end - off), off)
        if not chunk:
            break
        stripped = chunk.rstrip(b"\0")
        if stripped:
            dirty = off + len(stripped)
        off += len(chunk)
    off = start
    while off < dirty:
        off += os.pwrite(fd, bytes(min(1 << 20, dirty - off)), off)
_TAIL_FIRST_BASE = 136


def _sealed_size(used, size):
    """A sealed or closed segment keeps the rest of its last page (8 bytes
    past its frames at least): a tailing reader never reads past the end."""
    page = mmap.PAGESIZE
    return min(size, (used + 8 + page - 1) // page * page)


def _time_ns(name, t):
    """An int (ns since the epoch) or a datetime (naive = local time) as ns."""
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.astimezone()
        d = t - _EPOCH
        return (d.days * 86400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000
    if isinstance(t, float):
        raise TypeError(
            "{} must be an int (ns since the epoch) or a datetime, not float".format(name)
        )
    return _int(name, t, _I64_MIN)


def _payload(value, what="data"):
    if isinstance(value, str):
        raise TypeError("{} must be a bytes-like object, not str".format(what))
    try:
        mv = memoryview(value)
    except TypeError:
        raise TypeError(
            "{} must be a bytes-like object, not {}".format(what, type(value).__name__)
        ) from None
    return mv.tobytes()


def _matcher(pattern):
    """A one-pattern matching function (with a per-call cache), or None."""
    if pattern is None:
        return None
    m = Matcher()
    m.add(pattern, True)
    cache = {}

    def match(subject):
        r = cache.get(subject)
        if r is None:
            r = cache[subject] = bool(m.match(subject))
        return r

    return match


def _is_literal(pattern_bytes):
    return all(t not in (b"*", b">") for t in pattern_bytes.split(b"."))


# -- public value types ------------------------------------------------------------


class Position(NamedTuple):
    """Where a read or replay starts: ``seq``, and ``lost``, the number of
    requested records that are no longer retained."""

    seq: int
    lost: int


class _Entry:
    __slots__ = ("seq", "ts", "time", "subject", "sbytes", "data", "alive")

    def __init__(self, seq, ts, time, subject, sbytes, data):
        self.seq = seq
        self.ts = ts
        self.time = time
        self.subject = subject
        self.sbytes = sbytes
        self.data = data
        self.alive = True

    @property
    def size(self):
        return len(self.sbytes) + len(self.data)


class Record:
    """One record of a log, as returned by ``Log.get`` and paced replays.

    ``seq``, ``ts``, ``time`` and ``subject`` are captured when the record
    is handed out and stay readable; the payload (``data``, ``bytes(rec)``,
    ``len(rec)``) raises ``StaleRecordError`` once the record was evicted or
    purged or the log closed.  The reference cannot export its payload
    through the buffer protocol on Python < 3.12 (no ``__buffer__``), and
    never pins it: ``BufferError`` on appends is native-only.
    """

    __slots__ = ("_log", "_entry", "seq", "ts", "time", "subject")

    def __init__(self, log, entry):
        self._log = log
        self._entry = entry
        self.seq = entry.seq
        self.ts = entry.ts
        self.time = entry.time
        self.subject = entry.subject

    def _payload(self):
        if not self._entry.alive or self._log._closed:
            raise StaleRecordError(
                "record seq={} is no longer retained (evicted, purged or the log "
                "closed)".format(self.seq)
            )
        return self._entry.data

    @property
    def data(self):
        """The payload, a bytes copy."""
        return self._payload()

    def __bytes__(self):
        return self._payload()

    def __len__(self):
        return len(self._payload())

    def __buffer__(self, flags):  # Python >= 3.12 (PEP 688)
        return memoryview(self._payload())

    def __repr__(self):
        state = "" if self._entry.alive and not self._log._closed else ", stale"
        return "Record(seq={}, ts={}, time={}, subject={!r}{})".format(
            self.seq, self.ts, self.time, self.subject, state
        )


class Batch:
    """Records read in one call: one contiguous ``buffer`` of the payloads,
    ``offsets`` (``len + 1`` entries), ``seqs``, ``ts`` and ``times``
    (``array('q')``), ``subject(i)``, ``data(i)`` and ``next_seq``; ``lost``:
    for a read, the records from the requested seq up to the first readable
    one that existed and are gone (as ``seek(seq=...).lost``); for a
    replay's batch, the records the replay skipped so far."""

    __slots__ = ("buffer", "offsets", "seqs", "ts", "times", "_subjects", "next_seq", "lost")

    def __init__(self, entries, next_seq):
        self.buffer = b"".join(e.data for e in entries)
        offsets = array("q", [0])
        pos = 0
        for e in entries:
            pos += len(e.data)
            offsets.append(pos)
        self.offsets = offsets
        self.seqs = array("q", [e.seq for e in entries])
        self.ts = array("q", [e.ts for e in entries])
        self.times = array("q", [e.time for e in entries])
        self._subjects = [e.subject for e in entries]
        self.next_seq = next_seq
        self.lost = 0

    @property
    def subjects(self):
        """The subject of every record, a list of str."""
        return self._subjects

    def __len__(self):
        return len(self.seqs)

    def _index(self, i):
        n = len(self.seqs)
        i = operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("batch index {} out of range for {} records".format(i, n))
        return i

    def subject(self, i):
        return self._subjects[self._index(i)]

    def data(self, i):
        i = self._index(i)
        return memoryview(self.buffer)[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self):
        mv = memoryview(self.buffer)
        offs = self.offsets
        for i in range(len(self.seqs)):
            yield self.seqs[i], self.ts[i], self._subjects[i], mv[offs[i] : offs[i + 1]]

    def __repr__(self):
        if not len(self):
            return "Batch(0 records, next_seq={})".format(self.next_seq)
        return "Batch({} records, seqs {}..{}, {} bytes, next_seq={})".format(
            len(self), self.seqs[0], self.seqs[-1], len(self.buffer), self.next_seq
        )


# -- replay iterators --------------------------------------------------------------


class Replay:
    """Iterator returned by ``Log.replay``: ``lost`` (the gap notice, growing
    if records are evicted before the replay reaches them) and ``next_seq``
    (where a later read would continue).  ``_read()`` and ``_next_paced()``
    are also what fastflow.replay.AsyncReplay iterates with."""

    def __init__(self, log, pos, matcher, limit, strict, batch, speed):
        self._log = log
        self.lost = pos.lost
        self.next_seq = pos.seq
        self._stop = log._last_seq  # records appended later are not replayed
        self._match = matcher
        self._remaining = limit  # None: no limit
        self._strict = strict
        self._batch = batch
        self._speed = speed
        self._pending = deque()  # paced mode: entries read but not yielded
        self._t0 = None  # paced mode: (monotonic ns, ts) of the first record
        self._done = False

    def _read(self):
        """The next Batch (None at the end) and advance."""
        entries = self._entries()
        if not entries:
            return None
        b = Batch(entries, self.next_seq)
        b.lost = self.lost
        return b

    def _entries(self):
        """The next entries (a list, empty at the end) and advance."""
        log = self._log
        log._check_open()
        if self._done or self._remaining == 0:
            return []
        lo = log._lo()
        if self.next_seq < lo:
            gap = min(lo, self._stop + 1) - self.next_seq
            if gap > 0:
                if self._strict:
                    raise GapError(
                        "replay gap: seq {} is no longer retained, the first retained "
                        "seq is {} ({} records lost)".format(self.next_seq, lo, gap)
                    )
                self.lost += gap
        n = self._batch if self._remaining is None else min(self._batch, self._remaining)
        entries, nxt = log._scan(self.next_seq, self._stop, n, 0, self._match)
        self.next_seq = nxt
        if self._remaining is not None:
            self._remaining -= len(entries)
        if not entries:
            self._done = True
        return entries

    def _next_paced(self):
        """(record, seconds to wait before yielding it) or None at the end."""
        if not self._pending:
            self._pending.extend(self._entries())
            if not self._pending:
                return None
        e = self._pending.popleft()
        now = _time.monotonic_ns()
        if self._t0 is None:
            self._t0 = (now, e.ts)
            delay = 0.0
        else:
            t0, ts0 = self._t0
            due = t0 + (e.ts - ts0) / self._speed
            delay = max(0.0, (due - now) / 1e9)
        return Record(self._log, e), delay

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


# -- the log -----------------------------------------------------------------------


class _Live:
    """The segment being written: its fd, its map and its fill level."""

    __slots__ = ("base", "path", "fd", "mm", "size", "used", "nrecords", "index", "dirty",
                 "reserved")

    def __init__(self, base, path, fd, size, used, nrecords, index):
        self.base = base
        self.path = path
        self.fd = fd
        self.size = size
        self.mm = mmap.mmap(fd, size)
        self.used = used
        self.nrecords = nrecords
        self.index = index  # [(seq, ts, offset)]
        self.dirty = False
        self.reserved = used  # allocated on disk up to here



# -- columns (Log.columns, Log.append_columns) ---------------------------------

_EV_HEADER = struct.Struct("<BBHHHHHI")     # a CloudEvents record's header (event.py)
_np = None


def _numpy():
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            raise ImportError("columns need numpy, which is not installed: pip install numpy "
                              "(fastflow does not depend on it otherwise)") from None
        _np = numpy
    return _np


def _event_data_off(rec):
    """Where the data of CloudEvents record ``rec`` starts (-1: not one)."""
    if len(rec) < 16:
        return -1
    _, flags, _, idn, srcn, typn, trn, restn = _EV_HEADER.unpack_from(rec, 0)
    off = 16 + (16 if flags & 1 else idn) + srcn + typn + trn + restn
    return off if off <= len(rec) else -1


class Columns:
    """Records of a log as numpy arrays (see the native core)."""

    __slots__ = ("seq", "ts", "time", "subject_id", "subjects", "offsets", "payload", "lost",
                 "next_seq")

    def __init__(self, seq, ts, time, subject_id, subjects, offsets, payload, lost=0,
                 next_seq=0):
        self.seq = seq
        self.ts = ts
        self.time = time
        self.subject_id = subject_id
        self.subjects = tuple(subjects)
        self.offsets = offsets
        self.payload = payload
        self.lost = lost
        self.next_seq = next_seq

    def __len__(self):
        return len(self.seq)

    def subject(self, i):
        """The subject of record ``i`` (str)."""
        return self.subjects[self.subject_id[i]]

    def data(self, i):
        """The payload of record ``i`` as a memoryview slice of ``payload``."""
        n = len(self.seq)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise IndexError("columns index {} out of range for length {}".format(i, n))
        return memoryview(self.payload)[int(self.offsets[j]):int(self.offsets[j + 1])]

    def view(self, dtype):
        """``payload`` as a structured array of ``dtype`` (see the native core)."""
        np = _numpy()
        dt = np.dtype(dtype)
        if dt.itemsize == 0:
            raise ValueError("view: dtype {} has no bytes".format(dt))
        sizes = np.diff(self.offsets)
        bad = np.flatnonzero(sizes != dt.itemsize)
        if len(bad):
            i = int(bad[0])
            raise ValueError("view: record at index {} (seq {}) has {} bytes, dtype {} needs {} "
                             "({} of {} records differ)".format(
                                 i, int(self.seq[i]), int(sizes[i]), dt, dt.itemsize,
                                 len(bad), len(sizes)))
        return self.payload[:len(sizes) * dt.itemsize].view(dt)

    def __repr__(self):
        n = len(self.seq)
        return "Columns({} records, seq {}..{}, {} subjects, {} payload bytes, lost={})".format(
            n, int(self.seq[0]) if n else "-", int(self.seq[n - 1]) if n else "-",
            len(self.subjects), len(self.payload), self.lost)


def _int_column(arr, name, n):
    np = _numpy()
    try:
        mv = memoryview(arr)
    except TypeError:
        raise TypeError("{} must be an integer array (numpy, array.array), not {}".format(
            name, type(arr).__name__)) from None
    if mv.ndim != 1 or not mv.c_contiguous:
        raise ValueError("{} must be a contiguous 1-d array".format(name))
    fmt = mv.format
    if fmt[:1] in (">", "!") or fmt[-1:] not in tuple("bBhHiIlLqQ") or \
            mv.itemsize not in (1, 2, 4, 8):
        raise TypeError("{} must hold native integers, not format {!r}".format(name, fmt))
    if len(mv) != n:
        raise ValueError("{} has {} values, the payloads are {}".format(name, len(mv), n))
    return np.asarray(arr)


def _i64_column(arr, name, n):
    try:
        mv = memoryview(arr)
    except TypeError:
        raise TypeError("{} must be an int (ns) or an int64 array, not {}".format(
            name, type(arr).__name__)) from None
    if mv.itemsize != 8 or mv.format not in ("q", "l", "<q", "=q", "<l", "=l") or \
            mv.ndim != 1 or not mv.c_contiguous:
        raise TypeError("{} must be a contiguous 1-d array of int64 (ns)".format(name))
    if len(mv) != n:
        raise ValueError("{} has {} values, the payloads are {}".format(name, len(mv), n))
    return mv.tolist()


class Log:
    """Reference event log; see docs/log.md for the contract."""

    AGE_EVICT_STEP = AGE_EVICT_STEP

    def __init__(
        self,
        *,
        max_events=0,
        max_bytes=0,
        max_age=0,
        max_per_subject=0,
        max_event_size=1 << 20,
        discard="old",
        dedup_window=120.0,
        dedup_max=100_000,
        path=None,
        fsync="interval",
        fsync_interval=1.0,
        segment_size=64 << 20,
        strict=False,
        chain=None,
        chain_name=None,
        notify=False,
    ):
        self._closed = True  # until fully open
        self._ctl = None
        self._oplock = threading.RLock()
        self._losses = []
        self._max_events = _int("max_events", max_events)
        self._max_bytes = _int("max_bytes", max_bytes)
        self._max_age = _seconds("max_age", max_age)
        self._max_age_ns = _ns(self._max_age)
        self._max_per_subject = _int("max_per_subject", max_per_subject)
        self._max_event_size = _int("max_event_size", max_event_size, 0, 0xFFFFFFFF)
        self._discard = _choice("discard", discard, _DISCARDS)
        self._dedup_window = _seconds("dedup_window", dedup_window)
        self._dedup_window_ns = _ns(self._dedup_window)
        self._dedup_max = _int("dedup_max", dedup_max)
        self._fsync = _choice("fsync", fsync, _FSYNCS)
        self._fsync_interval = _seconds("fsync_interval", fsync_interval)
        self._segment_size = _int("segment_size", segment_size, MIN_SEGMENT_SIZE, 1 << 40)
        self._strict = bool(strict)
        if chain not in (None, True, False):
            raise ValueError("chain must be True, False or None (on for a file-backed log), "
                             "got {!r}".format(chain))
        if chain_name is not None and (not isinstance(chain_name, str) or not chain_name):
            raise ValueError("chain_name must be a non-empty str, got {!r}".format(chain_name))
        if path is not None and notify not in (True, False):
            raise ValueError("notify must be True or False, got {!r}".format(notify))
        self._notify = bool(notify)
        if path is not None:
            path = os.fspath(path)
            if isinstance(path, bytes):
                path = os.fsdecode(path)
        self._path = path
        # the hash chain (docs/log.md): link = SHA-256(previous link || frame body)
        self._chain = path is not None and chain is not False
        self._frame_extra = LINK_LEN if self._chain else 0
        self._chain_name = None
        if path is not None:
            self._chain_name = chain_name if chain_name is not None else \
                os.path.basename(os.path.normpath(os.path.abspath(path)))
            self._genesis = chain_genesis(self._chain_name)
            self._link = self._genesis
        self._tails = {}  # base seq -> the link that ends that segment

        # the records
        self._entries = []  # _Entry or None, index seq - _base
        self._tss = array("q")  # ts of every slot (dead ones too): sorted
        self._base = 1
        self._head = 0  # index of the first live entry (len when empty)
        self._last_seq = 0
        self._last_ts = 0
        self._count = 0
        self._bytes = 0
        self._by_subject = {}  # subject -> deque of live entries, oldest first
        self._cursors = {}
        self._dedup = OrderedDict()  # msg_id bytes -> (seq, monotonic ns)
        self._stats = dict.fromkeys(COUNTERS, 0)

        # the files
        self._lock_fd = None
        self._segments = []  # base seqs, oldest first; the live one is last
        self._live = None
        self._last_sync = _time.monotonic()
        if path is not None:
            self._stats.update(fsyncs=0, segments=0, truncated_bytes=0, corrupt_records=0,
                               lost_records=0, storage_full=0)
            self._open_dir()
            self._stats["loaded"] = self._count
        self._closed = False
        if path is not None:
            try:
                self._enforce_limits()
                self._delete_old_segments()
                self._write_meta(tolerant=True)
                self._ctl_open()
            except BaseException:
                self._release()
                raise

    # -- state helpers -------------------------------------------------------

    def _check_open(self):
        if self._closed:
            raise FastflowError("log is closed")

    @property
    def _first(self):
        return self._base + self._head

    def _cutoff(self):
        """Records with ``ts`` below this are expired (None: no max_age)."""
        if not self._max_age_ns:
            return None
        return _time.time_ns() - self._max_age_ns

    def _skip_dead(self, i):
        entries = self._entries
        n = len(entries)
        while i < n and entries[i] is None:
            i += 1
        return i

    def _lo(self):
        """The first seq reads may return: first_seq, past expired records."""
        cutoff = self._cutoff()
        if cutoff is None:
            return self._first
        i = bisect.bisect_left(self._tss, cutoff, self._head)
        return self._base + self._skip_dead(i)

    def _entry(self, seq):
        i = seq - self._base
        if 0 <= i < len(self._entries):
            return self._entries[i]
        return None

    def _advance_head(self):
        self._head = self._skip_dead(self._head)
        if self._head >= 1024 and 2 * self._head >= len(self._entries):
            del self._entries[: self._head]
            del self._tss[: self._head]
            self._base += self._head
            self._head = 0

    def _drop(self, e, reason):
        """Forget entry ``e`` (already removed from its subject's deque)."""
        e.alive = False
        self._entries[e.seq - self._base] = None
        self._count -= 1
        self._bytes -= e.size
        if reason == "purged":
            self._stats["purged"] += 1
        else:
            self._stats["evicted"] += 1
            self._stats["evicted_" + reason] += 1
        if e.seq - self._base == self._head:
            self._advance_head()

    def _evict_oldest(self, reason):
        e = self._entries[self._head]
        dq = self._by_subject[e.subject]
        dq.popleft()
        if not dq:
            del self._by_subject[e.subject]
        self._drop(e, reason)

    def _evict_oldest_of(self, subject, reason, mark=True):
        """Evict the oldest record of ``subject``; its delete marker is
        written unless ``mark`` is false (the caller writes it: _append_many,
        after the record that replaces it)."""
        dq = self._by_subject[subject]
        e = dq.popleft()
        if not dq:
            del self._by_subject[subject]
        self._drop(e, reason)
        if self._path is not None and mark:
            self._write_marker(KIND_DELETE, e.seq, e.sbytes)
        return e

    def _evict_aged(self, step):
        cutoff = self._cutoff()
        n = 0
        if cutoff is None:
            return 0
        while self._count and (step is None or n < step):
            if self._entries[self._head].ts >= cutoff:
                break
            self._evict_oldest("max_age")
            n += 1
        return n

    # -- sizes ---------------------------------------------------------------

    @property
    def first_seq(self):
        self._check_open()
        return self._first

    @property
    def last_seq(self):
        self._check_open()
        return self._last_seq

    def __len__(self):
        self._check_open()
        return self._count

    @property
    def bytes(self):
        self._check_open()
        return self._bytes

    @property
    def subjects(self):
        self._check_open()
        return len(self._by_subject)

    @property
    def closed(self):
        return self._closed

    @property
    def losses(self):
        """Records lost to damaged segment files, found at open: dicts
        ``first_seq``, ``last_seq``, ``file``, ``offset``, ``reason``."""
        return [dict(x) for x in self._losses]

    @property
    def path(self):
        return self._path

    def stats(self):
        self._check_open()
        s = dict(self._stats)
        if self._path is not None:
            s["segments"] = len(self._segments)
        return s

    def __repr__(self):
        if self._closed:
            return "<Log closed>"
        return "<Log {} records, seqs {}..{}, {} bytes{}>".format(
            self._count,
            self._first,
            self._last_seq,
            self._bytes,
            "" if self._path is None else ", path={!r}".format(self._path),
        )

    # -- appending -----------------------------------------------------------

    def _check_subject(self, subject, where=""):
        try:
            tokenize(subject, False)
        except Exception as exc:
            if where:
                raise type(exc)("{}: {}".format(where, exc)) from None
            raise
        sb = as_bytes(subject)
        return sb.decode("utf-8"), sb

    def _check_data(self, data, sbytes, where=""):
        prefix = where + ": " if where else ""
        try:
            b = _payload(data)
        except TypeError as exc:
            raise TypeError(prefix + str(exc)) from None
        if self._max_event_size and len(b) > self._max_event_size:
            raise EventTooLarge(
                "{}event too large: {} bytes > max_event_size={}".format(
                    prefix, len(b), self._max_event_size
                )
            )
        size = len(sbytes) + len(b)
        if self._max_bytes and size > self._max_bytes:
            raise EventTooLarge(
                "{}event too large: {} bytes (subject + data) > max_bytes={}".format(
                    prefix, size, self._max_bytes
                )
            )
        if self._path is not None and RECORD_HEADER + self._frame_extra + size > \
                self._segment_size:
            raise EventTooLarge(
                "{}event too large: a record of {} bytes does not fit in a segment "
                "(segment_size={})".format(prefix, RECORD_HEADER + self._frame_extra + size,
                                           self._segment_size)
            )
        return b

    def _full(self, items):
        """The LogFullError message if ``items`` [(subject, size)] cannot all
        be stored without evicting (discard='new'), else None."""
        n = len(items)
        if self._max_events and self._count + n > self._max_events:
            return "log full: max_events={} reached (discard='new')".format(self._max_events)
        if self._max_bytes:
            need = sum(size for _, size in items)
            if self._bytes + need > self._max_bytes:
                return (
                    "log full: max_bytes={} reached (discard='new'): {} bytes retained, "
                    "{} more needed".format(self._max_bytes, self._bytes, need)
                )
        if self._max_per_subject:
            per = {}
            for subject, _ in items:
                per[subject] = per.get(subject, 0) + 1
            for subject, k in per.items():
                dq = self._by_subject.get(subject)
                if (len(dq) if dq else 0) + k > self._max_per_subject:
                    return ("log full: max_per_subject={} reached for subject {} "
                            "(discard='new')".format(self._max_per_subject, _show(subject)))
        return None

    def _make_room(self, subject, size, unmarked):
        """discard='old': evict what the limits require for one new record
        (the seqs evicted by max_per_subject are added to ``unmarked``: their
        delete markers are the caller's to write, after the new record)."""
        if self._max_per_subject:
            while True:
                dq = self._by_subject.get(subject)
                if not dq or len(dq) < self._max_per_subject:
                    break
                unmarked.append(self._evict_oldest_of(subject, "max_per_subject", False).seq)
        if self._max_events:
            while self._count >= self._max_events:
                self._evict_oldest("max_events")
        if self._max_bytes:
            while self._count and self._bytes + size > self._max_bytes:
                self._evict_oldest("max_bytes")

    def _store(self, subject, sbytes, data, time, ts):
        seq = self._last_seq + 1
        e = _Entry(seq, ts, time, subject, sbytes, data)
        if self._path is not None:
            self._write(KIND_RECORD, seq, ts, time, sbytes, data)
        self._entries.append(e)
        self._tss.append(ts)
        self._last_seq = seq
        self._count += 1
        self._bytes += e.size
        dq = self._by_subject.get(subject)
        if dq is None:
            dq = self._by_subject[subject] = deque()
        dq.append(e)
        self._stats["appended"] += 1
        return seq

    def _now_ts(self):
        ts = _time.time_ns()
        if ts < self._last_ts:
            ts = self._last_ts
        self._last_ts = ts
        return ts

    def _append_many(self, items, time, at=0):
        """Store [(subject, sbytes, data)] under the retention rules (``at``:
        the seq of the one record, ``append_at``)."""
        self._evict_aged(AGE_EVICT_STEP)
        if self._discard == "new":
            sizes = [(s, len(sb) + len(d)) for s, sb, d in items]
            msg = self._full(sizes)
            if msg is not None:
                self._evict_aged(None)  # expired records never block an append
                msg = self._full(sizes)
                if msg is not None:
                    self._stats["rejected"] += len(items)
                    self._after_change()
                    raise LogFullError(msg)
        ts = self._now_ts()
        first = self._last_seq + 1
        marker = RECORD_HEADER + self._frame_extra if self._max_per_subject else 0
        if self._path is not None:
            # the disk space first, of the whole batch where it fits in the
            # live segment: a full disk refuses it before anything changes
            self._reserve_ahead(sum(RECORD_HEADER + self._frame_extra + marker + 2 * len(sb)
                                    + len(d) for _, sb, d in items))
        try:
            times = time if isinstance(time, list) else None    # (append_columns: one each)
            for i, (subject, sbytes, data) in enumerate(items):
                if self._path is not None:
                    self._reserve(RECORD_HEADER + self._frame_extra + len(sbytes) + len(data) +
                                  (marker + len(sbytes) if marker else 0))
                unmarked = []
                try:
                    if self._discard == "old":
                        self._make_room(subject, len(sbytes) + len(data), unmarked)
                    if at:
                        # admitted, its disk space reserved (a new segment was
                        # named after the old last_seq + 1): the seqs before it go
                        self._skip_gap(at)
                        first = at
                    self._store(subject, sbytes, data, time if times is None else times[i], ts)
                finally:
                    # the delete markers of the subject's evicted records after
                    # the record that replaced them (written first): a crash in
                    # between never loses both (the reopening replay evicts them
                    # again by max_per_subject); written also when the append
                    # failed after the eviction (they were deleted)
                    if self._path is not None:
                        for seq in unmarked:
                            self._write_marker(KIND_DELETE, seq, sbytes)
        finally:
            self._after_change()
        return first, self._last_seq

    @_exclusive
    def append(self, subject, data, time=0):
        """Append one record; returns its seq."""
        self._check_open()
        s, sb = self._check_subject(subject)
        b = self._check_data(data, sb)
        t = _int("time", time, _I64_MIN)
        return self._append_many([(s, sb, b)], t)[0]

    @_exclusive
    def append_at(self, seq, subject, data, time=0):
        """Append one record at ``seq`` (> last_seq), a mirror's append: the
        seqs between last_seq and ``seq`` are skipped (they never exist);
        returns ``seq``."""
        self._check_open()
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError("seq must be an int, not {}".format(type(seq).__name__))
        if not self._last_seq < seq < (1 << 63):
            raise ValueError("append_at: seq {} must be after last_seq {} (and below "
                             "2**63)".format(seq, self._last_seq))
        s, sb = self._check_subject(subject)
        b = self._check_data(data, sb)
        t = _int("time", time, _I64_MIN)
        return self._append_many([(s, sb, b)], t, seq)[0]

    def _skip_gap(self, seq):
        """The next record takes ``seq``: the slots before it stay empty (an
        empty log starts its slots afresh at ``seq``)."""
        if self._count == 0:
            del self._entries[:]
            del self._tss[:]
            self._base = seq
            self._head = 0
        else:
            ts = self._tss[-1] if len(self._tss) else 0
            while self._base + len(self._entries) < seq:
                self._entries.append(None)
                self._tss.append(ts)
        self._last_seq = seq - 1

    @_exclusive
    def append_buffer(self, subjects, buffer, offsets, time=0):
        """Append ``buffer[offsets[i]:offsets[i + 1]]`` for each i (see the
        native core); the same validation and atomicity as append_batch."""
        self._check_open()
        mv = memoryview(buffer).cast("B")
        if isinstance(offsets, list):
            offsets = array("q", offsets)
        try:
            om = memoryview(offsets)
        except TypeError:
            raise TypeError(
                "offsets must be a buffer of int64 (Int64Array, array(\"q\"), numpy int64) "
                "or a list of ints, not {}".format(type(offsets).__name__)
            ) from None
        if om.itemsize != 8 or om.format not in ("q", "l", "<q", "=q") or om.ndim != 1:
            raise TypeError("offsets must hold int64 values")
        offs = om.tolist()
        if not offs:
            raise ValueError("offsets needs at least one entry (len(payloads) + 1)")
        datas = []
        for i in range(len(offs) - 1):
            a, b = offs[i], offs[i + 1]
            if a < 0 or b < a or b > len(mv):
                raise ValueError(
                    "offsets[{}:{}] = {}..{} is not a slice of the {}-byte buffer".format(
                        i, i + 2, a, b, len(mv))
                )
            datas.append(bytes(mv[a:b]))
        return self.append_batch(subjects, datas, time)

    @_exclusive
    def append_batch(self, subjects, datas, time=0):
        """Append records atomically validated; returns (first_seq, last_seq)."""
        self._check_open()
        if isinstance(datas, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                "datas must be a sequence of bytes-like objects, not {}".format(
                    type(datas).__name__
                )
            )
        datas = list(datas)
        t = _int("time", time, _I64_MIN)
        if isinstance(subjects, (str, bytes, bytearray, memoryview)):
            s, sb = self._check_subject(subjects)
            subjects = [(s, sb)] * len(datas)
        else:
            subjects = list(subjects)
            if len(subjects) != len(datas):
                raise ValueError(
                    "subjects has {} items but datas has {}".format(len(subjects), len(datas))
                )
            subjects = [
                self._check_subject(x, "subjects[{}]".format(i)) for i, x in enumerate(subjects)
            ]
        items = []
        for i, ((s, sb), d) in enumerate(zip(subjects, datas)):
            items.append((s, sb, self._check_data(d, sb, "datas[{}]".format(i))))
        if not items:
            return self._last_seq + 1, self._last_seq
        return self._append_many(items, t)

    @_exclusive
    def append_unique(self, subject, data, msg_id, time=0):
        """Append unless ``msg_id`` is in the dedup window: (seq, duplicate)."""
        self._check_open()
        s, sb = self._check_subject(subject)
        b = self._check_data(data, sb)
        t = _int("time", time, _I64_MIN)
        if isinstance(msg_id, str):
            key = msg_id.encode("utf-8")
        elif isinstance(msg_id, (bytes, bytearray, memoryview)):
            key = bytes(msg_id)
        else:
            raise TypeError("msg_id must be str or bytes, not {}".format(type(msg_id).__name__))
        if len(key) > 0xffff:
            raise ValueError("msg_id of {} bytes is over the limit of 65535 bytes".format(
                len(key)))
        now = _time.monotonic_ns()
        dedup = self._dedup
        if self._dedup_window_ns:
            while dedup:
                k, (_, at) = next(iter(dedup.items()))
                if now - at <= self._dedup_window_ns:
                    break
                del dedup[k]
        hit = dedup.get(key)
        if hit is not None:
            self._stats["duplicates"] += 1
            return hit[0], True
        seq = self._append_many([(s, sb, b)], t)[0]
        dedup[key] = (seq, now)
        if self._dedup_max:
            while len(dedup) > self._dedup_max:
                dedup.popitem(last=False)
        return seq, False

    @_exclusive
    def expire(self):
        """Evict every expired record now; returns how many."""
        self._check_open()
        n = self._evict_aged(None)
        self._after_change()
        return n

    def _enforce_limits(self):
        """Bring the stored records within the limits (after reopening)."""
        self._evict_aged(None)
        if self._max_per_subject:
            for subject in list(self._by_subject):
                while len(self._by_subject.get(subject, ())) > self._max_per_subject:
                    self._evict_oldest_of(subject, "max_per_subject")
        if self._max_events:
            while self._count > self._max_events:
                self._evict_oldest("max_events")
        if self._max_bytes:
            while self._bytes > self._max_bytes:
                self._evict_oldest("max_bytes")

    # -- purge ---------------------------------------------------------------

    @_exclusive
    def purge(self, subject=None, up_to=None):
        """Remove all records, those matching ``subject`` (a pattern), those
        with ``seq <= up_to``, or both conditions; returns how many."""
        self._check_open()
        match = _matcher(subject)
        if up_to is not None:
            up_to = _int("up_to", up_to)
        bound = self._last_seq if up_to is None else min(up_to, self._last_seq)
        if self._path is not None:  # the marker's disk space first
            self._reserve(RECORD_HEADER + self._frame_extra +
                          (len(subject) * 4 if isinstance(subject, (str, bytes)) else 0))
        n = 0
        names = self._by_subject
        if isinstance(subject, (str, bytes)) and _is_literal(as_bytes(subject, "pattern")):
            # (one subject: looked up, not found by a walk)
            key = subject.decode("utf-8") if isinstance(subject, bytes) else subject
            names = (key,) if key in self._by_subject else ()
        for s in list(names):
            if match is not None and not match(s):
                continue
            dq = self._by_subject[s]
            while dq and dq[0].seq <= bound:
                e = dq.popleft()
                self._drop(e, "purged")
                n += 1
            if not dq:
                del self._by_subject[s]
        if n and self._path is not None:
            if subject is None:
                self._write_marker(KIND_PURGE, bound, b"")
            else:
                self._write_marker(KIND_DELETE, bound, as_bytes(subject, "pattern"))
        self._after_change()
        return n

    # -- reading -------------------------------------------------------------

    def _scan(self, start, stop, limit, max_bytes, match, capacity=None):
        """Live, unexpired entries from ``start`` to ``stop`` (inclusive)."""
        seq = min(max(start, self._lo()), self._last_seq + 1)
        out = []
        total = 0
        base, entries = self._base, self._entries
        while seq <= stop and len(out) < limit:
            e = entries[seq - base]
            if e is not None and (match is None or match(e.subject)):
                size = len(e.data)
                if max_bytes and out and total + size > max_bytes:
                    break
                if capacity is not None and total + size > capacity:
                    if not out:
                        raise ValueError(
                            "buffer too small: record seq={} has {} bytes, the buffer "
                            "{}".format(e.seq, size, capacity)
                        )
                    break
                out.append(e)
                total += size
            seq += 1
        return out, seq

    def _not_retained(self, seq):
        lo = self._lo()
        if lo > self._last_seq:
            return KeyError(
                "seq {} is not retained (no records retained, last_seq={})".format(
                    seq, self._last_seq
                )
            )
        return KeyError(
            "seq {} is not retained (retained range {}..{})".format(seq, lo, self._last_seq)
        )

    def get(self, seq):
        """The record ``seq`` (KeyError if it is not retained)."""
        self._check_open()
        seq = _int("seq", seq)
        e = self._entry(seq)
        if e is None or seq < self._lo():
            raise self._not_retained(seq)
        return Record(self, e)

    def read(self, seq, limit=1024, max_bytes=0, filter=None):
        """Retained records from ``seq`` on, as a Batch; its ``lost`` counts
        the records from ``seq`` up to the first readable one that are gone."""
        self._check_open()
        seq = _int("seq", seq)
        limit = _int("limit", limit, 1)
        max_bytes = _int("max_bytes", max_bytes)
        match = _matcher(filter)
        entries, nxt = self._scan(seq, self._last_seq, limit, max_bytes, match)
        b = Batch(entries, nxt)
        lo = self._lo()                 # (last_seq + 1 when nothing is readable)
        if seq < lo:
            b.lost = lo - max(seq, 1)   # (seq 0 on a log starting at 1 loses nothing)
        return b

    def read_into(self, buffer, seq, limit=1024, filter=None):
        """Copy payloads into ``buffer``: (count, next_seq, offsets)."""
        self._check_open()
        mv = memoryview(buffer)
        if mv.readonly:
            raise TypeError("buffer must be writable, got a read-only {}".format(
                type(buffer).__name__))
        mv = mv.cast("B")
        seq = _int("seq", seq)
        limit = _int("limit", limit, 1)
        match = _matcher(filter)
        entries, nxt = self._scan(seq, self._last_seq, limit, 0, match, capacity=mv.nbytes)
        offsets = array("q", [0])
        pos = 0
        for e in entries:
            mv[pos : pos + len(e.data)] = e.data
            pos += len(e.data)
            offsets.append(pos)
        return len(entries), nxt, offsets

    def columns(self, start="first", *, seq=None, time=None, stop=None, limit=None,
                filter=None, events=False):
        """The records from a position as numpy arrays (see the native core)."""
        np = _numpy()
        self._check_open()
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            raise ValueError("limit must be an int >= 0 or None, got {!r}".format(limit))
        if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool) or stop < 0):
            raise ValueError("stop must be a seq (an int >= 0) or None, got {!r}".format(stop))
        pos = self._seek(start, seq, time, False)
        lo = self._lo()
        stopseq = self._last_seq if stop is None else min(stop - 1, self._last_seq)
        lost = pos.lost
        if seq is not None and seq < lo:
            lost = max(0, min(lo, stopseq + 1) - max(seq, 1))
        match = _matcher(filter)
        if limit == 0:
            entries, nxt = [], pos.seq
        else:
            entries, nxt = self._scan(pos.seq, stopseq, (1 << 62) if limit is None else limit,
                                      0, match)
        if nxt > stopseq:
            nxt = max(nxt, stopseq + 1)
        nxt = min(nxt, self._last_seq + 1)
        datas = []
        for e in entries:
            d = e.data
            if events:
                off = _event_data_off(d)
                if off < 0:
                    raise ValueError("record {} is not a CloudEvents record (a stream of a Flow "
                                     "holds them; events=False exports the stored "
                                     "bytes)".format(e.seq))
                d = d[off:]
            datas.append(d)
        ids = {}
        n = len(entries)
        offsets = np.zeros(n + 1, np.int64)
        if n:
            offsets[1:] = np.cumsum([len(d) for d in datas])
        return Columns(
            np.array([e.seq for e in entries], np.int64),
            np.array([e.ts for e in entries], np.int64),
            np.array([e.time for e in entries], np.int64),
            np.array([ids.setdefault(e.subject, len(ids)) for e in entries], np.int32),
            list(ids), offsets, np.frombuffer(bytearray(b"".join(datas)), np.uint8),
            lost, nxt)

    @_exclusive
    def append_columns(self, payload, offsets=None, *, subject=None, subject_id=None,
                       subjects=None, time=None):
        """Append records from arrays (see the native core)."""
        self._check_open()
        if type(payload) is Columns:
            cols = payload
            if offsets is not None:
                raise ValueError("append_columns(columns) takes no offsets: they are the "
                                 "columns'")
            payload, offsets = cols.payload, cols.offsets
            if subject is None and subject_id is None and subjects is None:
                subject_id, subjects = cols.subject_id, cols.subjects
            if time is None:
                time = cols.time
        if subject is not None and (subject_id is not None or subjects is not None):
            raise ValueError("append_columns: give subject= (one for every record) or "
                             "subject_id= with subjects= (the table), not both")
        if subject is None and (subject_id is None or subjects is None):
            raise ValueError("append_columns: give subject= (one for every record) or "
                             "subject_id= and subjects= (the table)")
        if subject is not None and not isinstance(subject, (str, bytes)):
            raise TypeError("subject must be str or bytes, not {}".format(type(subject).__name__))
        try:
            mv = memoryview(payload)
        except TypeError:
            raise TypeError("payload must be a buffer (bytes, numpy array), not {}".format(
                type(payload).__name__)) from None
        if not mv.c_contiguous:
            raise ValueError("payload must be C-contiguous")
        if offsets is None:
            if mv.ndim == 0 or (mv.ndim == 1 and mv.itemsize == 1):
                raise ValueError("payload: a buffer of single bytes needs offsets (or give a "
                                 "structured or 2-d array: one record per row)")
            n = mv.shape[0]
            width = mv.nbytes // n if n else 0
            offs = [i * width for i in range(n + 1)]
        else:
            if isinstance(offsets, list):
                offsets = array("q", offsets)
            try:
                om = memoryview(offsets)
            except TypeError:
                raise TypeError("offsets must be a buffer of int64 (numpy int64, array(\"q\")) "
                                "or a list of ints, not {}".format(
                                    type(offsets).__name__)) from None
            if om.itemsize != 8 or om.format not in ("q", "l", "<q", "=q", "<l", "=l") or \
                    om.ndim != 1 or not om.c_contiguous:
                raise TypeError("offsets must be a contiguous 1-d array of int64")
            offs = om.tolist()
            if not offs:
                raise ValueError("offsets needs at least one entry (len(payloads) + 1)")
            n = len(offs) - 1
        raw = mv.cast("B") if mv.ndim == 1 and mv.format == "B" else memoryview(mv.tobytes())
        datas = []
        for i in range(n):
            a, b = offs[i], offs[i + 1]
            if a < 0 or b < a or b > len(raw):
                raise ValueError("offsets[{}:{}] = {}..{} is not a slice of the {}-byte payload "
                                 "buffer".format(i, i + 2, a, b, len(raw)))
            if self._max_event_size and b - a > self._max_event_size:
                raise EventTooLarge("payload {}: {} bytes exceeds max_event_size={}".format(
                    i, b - a, self._max_event_size))
            datas.append(bytes(raw[a:b]))
        if time is None or (type(time) is int and time == 0):
            times = None
            t = 0
        elif isinstance(time, int) and not isinstance(time, bool):
            times = None
            t = _int("time", time, _I64_MIN)
        else:
            times = _i64_column(time, "time", n)
        if subject is not None:
            table = [self._check_subject(subject)]
            ids = [0] * n
        else:
            if isinstance(subjects, (str, bytes)):
                raise TypeError("subjects must be a sequence of subjects (the table), not one "
                                "{}".format(type(subjects).__name__))
            table = []
            for j, x in enumerate(subjects):
                if not isinstance(x, (str, bytes)):
                    raise TypeError("subjects[{}] must be str or bytes, not {}".format(
                        j, type(x).__name__))
                table.append(self._check_subject(x, "subjects[{}]".format(j)))
            ids = _int_column(subject_id, "subject_id", n).tolist()
            for i, v in enumerate(ids):
                if not 0 <= v < len(table):
                    raise ValueError("subject_id[{}] = {} is not an index of the {}-subject "
                                     "table".format(i, v, len(table)))
        items = []
        for i in range(n):
            s, sb = table[ids[i]]
            items.append((s, sb, self._check_data(datas[i], sb, "payload {}".format(i))))
        if not items:
            return self._last_seq + 1, self._last_seq
        if times is None:
            return self._append_many(items, t)
        return self._append_many(items, times)

    # -- positions and replay ------------------------------------------------

    def seek(self, start="first", *, seq=None, time=None, strict=False):
        """Resolve a start position: a Position(seq, lost)."""
        self._check_open()
        return self._seek(start, seq, time, strict)

    def _seek(self, start, seq, time, strict):
        _choice("start", start, _STARTS)
        if seq is not None and time is not None:
            raise ValueError("give seq= or time=, not both")
        lo = self._lo()
        end = self._last_seq + 1
        if seq is not None:
            seq = _int("seq", seq)
            if seq < lo:
                lost = lo - max(seq, 1)
                if lost > 0 and strict:
                    raise GapError(
                        "seq {} is no longer retained: the first retained seq is {} "
                        "({} records lost)".format(seq, lo, lost)
                    )
                return Position(lo, max(lost, 0))
            return Position(min(seq, end), 0)
        if time is not None:
            t = _time_ns("time", time)
            i = bisect.bisect_left(self._tss, t, self._head)
            i = self._skip_dead(max(i, lo - self._base))
            return Position(self._base + i, 0)
        if start == "first":
            return Position(lo, 0)
        if start == "new":
            return Position(end, 0)
        i = len(self._entries) - 1  # "last"
        while i >= 0 and self._entries[i] is None:
            i -= 1
        if i < 0 or self._base + i < lo:
            return Position(end, 0)
        return Position(self._base + i, 0)

    def last_per_subject(self, filter=None):
        """The newest retained record of every subject, in seq order."""
        self._check_open()
        match = _matcher(filter)
        lo = self._lo()
        newest = [
            dq[-1]
            for s, dq in self._by_subject.items()
            if dq[-1].seq >= lo and (match is None or match(s))
        ]
        newest.sort(key=lambda e: e.seq)
        return Batch(newest, self._last_seq + 1)

    def latest_only(self, batch):
        """The records of ``batch`` (a read of this log) that are the newest
        retained record of their subject, in order: a conflating consumer's
        backlog without what newer records superseded.  Its ``next_seq``
        is ``batch``'s (the superseded ones are read too)."""
        if not isinstance(batch, Batch):
            raise TypeError("Argument 'batch' has incorrect type (expected {}.{}, got {})".format(
                Batch.__module__, Batch.__qualname__, type(batch).__name__))
        self._check_open()
        keep = []
        for s, seq in zip(batch.subjects, batch.seqs):
            dq = self._by_subject.get(s)
            if dq and dq[-1].seq == seq:
                keep.append(self._entry(seq))
        if len(keep) == len(batch):
            return batch
        out = Batch(keep, batch.next_seq)
        out.lost = batch.lost
        return out

    def _replay(self, cls, start, seq, time, filter, limit, strict, batch, speed):
        self._check_open()
        match = _matcher(filter)
        if limit is not None:
            limit = _int("limit", limit)
        batch = _int("batch", batch, 1)
        if speed is not None:
            if isinstance(speed, bool) or not isinstance(speed, (int, float)):
                raise TypeError("speed must be a number or None, not {}".format(
                    type(speed).__name__))
            if not speed > 0:
                raise ValueError("speed must be > 0, got {!r}".format(speed))
            speed = float(speed)
        pos = self._seek(start, seq, time, strict)
        return cls(self, pos, match, limit, strict, batch, speed)

    def replay(self, start="first", *, seq=None, time=None, filter=None, limit=None,
               strict=False, batch=1024, speed=None):
        """Iterate from a position: Batches, or paced Records with ``speed``."""
        return self._replay(Replay, start, seq, time, filter, limit, strict, batch, speed)

    def areplay(self, start="first", *, seq=None, time=None, filter=None, limit=None,
                strict=False, batch=1024, speed=None):
        """``replay`` as an async iterator (fastflow.replay.AsyncReplay)."""
        from fastflow.replay import AsyncReplay  # (here: asyncio stays out of the core)

        return AsyncReplay(self.replay(start, seq=seq, time=time, filter=filter, limit=limit,
                                       strict=strict, batch=batch, speed=speed))

    # -- cursors -------------------------------------------------------------

    @staticmethod
    def _cursor_name(name):
        if not isinstance(name, str):
            raise TypeError("cursor name must be str, not {}".format(type(name).__name__))
        if not name:
            raise ValueError("cursor name must not be empty")
        return name

    @_exclusive
    def set_cursor(self, name, seq):
        self._check_open()
        name = self._cursor_name(name)
        seq = _int("seq", seq)
        if seq > self._last_seq:
            raise ValueError(
                "cursor {!r} cannot move past last_seq={}: got seq={}".format(
                    name, self._last_seq, seq
                )
            )
        self._cursors[name] = seq
        self._save_cursors()

    def cursor(self, name):
        self._check_open()
        return self._cursors.get(self._cursor_name(name), 0)

    def cursors(self):
        self._check_open()
        return dict(self._cursors)

    @_exclusive
    def delete_cursor(self, name):
        self._check_open()
        name = self._cursor_name(name)
        if name not in self._cursors:
            raise KeyError("unknown cursor {!r}".format(name))
        del self._cursors[name]
        self._save_cursors()

    def lag(self, name):
        """Records after the cursor that still exist (holes included)."""
        self._check_open()
        c = self._cursors.get(self._cursor_name(name), 0)
        return max(0, self._last_seq - max(c, self._lo() - 1))

    # -- lifecycle -----------------------------------------------------------

    @_exclusive
    def flush(self):
        """Flush the live segment to stable storage and save the metadata."""
        self._check_open()
        if self._path is not None:
            self._sync(force=True)
            self._write_meta(tolerant=True)

    @_exclusive
    def close(self):
        """Flush and close; idempotent.  Records handed out become stale."""
        if self._closed:
            return
        try:
            if self._path is not None:
                if self._fsync != "never":
                    self._sync(force=True)
                self._write_meta(tolerant=True)
                live = self._live
                if live is not None:
                    live.mm.close()
                    os.ftruncate(live.fd, _sealed_size(live.used, live.size))
                    os.close(live.fd)
                    self._live = None
        finally:
            self._closed = True
            if self._ctl is not None:
                self._ctl.close()
                self._ctl = None
            self._release()

    def _release(self):
        self._closed = True
        if self._live is not None:
            try:
                self._live.mm.close()
            finally:
                os.close(self._live.fd)
                self._live = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc):
        self.close()

    # -- files: writing ------------------------------------------------------

    def chain_head(self):
        """``(seq, link)``: the last seq and the chain link of the last frame
        written (None for a log without a chain)."""
        self._check_open()
        return (self._last_seq, self._link if self._chain else None)

    @property
    def chain_name(self):
        """The name the chain's genesis link is derived from (None: no chain)."""
        return self._chain_name if self._chain else None

    def _seg_path(self, base, ext="seg"):
        return os.path.join(self._path, "{:020d}.{}".format(base, ext))

    def _after_change(self):
        if self._path is not None:
            self._delete_old_segments()
            self._sync()
            if self._ctl is not None:
                self._ctl.appended(self._first, self._last_seq)

    def _ctl_open(self):
        """tail.ctl: what readers in other processes see of this writer
        (fastflow/_ref/tail.py, docs/latency.md)."""
        from fastflow._ref.tail import TailCtl

        live = self._live
        base = live.base if live is not None else self._last_seq + 1
        try:
            self._ctl = TailCtl(self._path, self._notify, base,
                                self._segments[0] if self._segments else base, self._first,
                                self._last_seq)
        except OSError as exc:
            logger.warning("fastflow: %s: no tail.ctl (%s): other processes cannot tail this "
                           "log", self._path, exc)

    @staticmethod
    def open_reader(path, start="first", *, seq=None, time=None, filter=None, wait="spin",
                    strict=False, spin=None, poll_interval=0.001):
        """A ``TailReader`` of the file-backed log in directory ``path``, from
        this process or another one (docs/latency.md)."""
        from fastflow._ref.tail import TailReader

        return TailReader(path, start, seq=seq, time=time, filter=filter, wait=wait,
                          strict=strict, spin=spin, poll_interval=poll_interval)

    def _sync(self, force=False):
        live = self._live
        if live is None or not live.dirty:
            return
        if not force:
            if self._fsync == "never":
                return
            if self._fsync == "interval":
                if _time.monotonic() - self._last_sync < self._fsync_interval:
                    return
        live.mm.flush()
        live.dirty = False
        self._last_sync = _time.monotonic()
        self._stats["fsyncs"] += 1

    def _write_marker(self, kind, seq, sbytes, data=b""):
        self._write(kind, seq, self._now_ts(), self._first, sbytes, data)

    def _write(self, kind, seq, ts, time, sbytes, data):
        length = RECORD_HEADER + len(sbytes) + len(data) + self._frame_extra
        self._reserve(length)
        live = self._live
        body = _BODY.pack(seq, ts, time, len(sbytes), kind,
                          FRAME_V2 if self._chain else FRAME_V1) + sbytes + data
        if self._chain:
            self._link = chain_link(self._link, body)
            body += self._link
        off = live.used
        # the body first, the length last: a record is visible only when whole
        live.mm[off + 8 : off + length] = body
        live.mm[off : off + 8] = _PREFIX.pack(length, crc32c(body))
        live.used += length
        live.dirty = True
        if kind == KIND_RECORD:
            if live.nrecords % INDEX_INTERVAL == 0:
                live.index.append((seq, ts, off))
            live.nrecords += 1

    def _reserve(self, length):
        """Room for ``length`` bytes in the live segment, allocated on disk
        (roll to a new segment, or grow one of markers only); a full disk
        raises StorageFullError and changes nothing."""
        live = self._live
        if live is not None and live.used + length + _TAIL_GAP <= live.reserved:
            return
        # (a segment never fills to its last byte: a zero length stays after
        # the last frame, where a tailing reader waits)
        if live is None or live.used + length + _TAIL_GAP > live.size:
            if live is not None and live.base == self._last_seq + 1:
                self._grow_live(length)  # a segment of markers only: no new name
            else:
                self._roll()
            live = self._live
        if live.used + length + _TAIL_GAP > live.reserved:
            self._allocate(live, min(live.size, live.used + length + _TAIL_GAP))

    def _reserve_ahead(self, length):
        live = self._live
        if live is not None and live.reserved < live.used + length <= live.size:
            self._allocate(live, live.used + length)

    def _allocate(self, live, end):
        upto = min(live.size, max(end, live.reserved + RESERVE_STEP))
        try:
            _allocate(live.fd, live.reserved, upto - live.reserved)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            upto = end  # what this write needs, no more
            try:
                _allocate(live.fd, live.reserved, upto - live.reserved)
            except OSError as exc2:
                if exc2.errno not in _NO_SPACE:
                    raise
                raise self._no_space(live.path, end - live.used,
                                 "at offset {}".format(live.used)) from None
        live.reserved = upto

    def _no_space(self, path, wanted, what):
        self._stats["storage_full"] += 1
        return StorageFullError(
            "storage full: no space left on the device of {} for {} more bytes ({}); the "
            "append was refused, the log stays readable and takes appends again once space "
            "is free".format(path, wanted, what), path, wanted)

    def _grow_live(self, length):
        live = self._live
        size = live.size + max(self._segment_size, length + _TAIL_GAP)
        live.mm.close()
        os.ftruncate(live.fd, size)
        live.mm = mmap.mmap(live.fd, size)
        live.size = size
        live.reserved = live.used

    def _roll(self):
        if self._live is not None:
            self._seal()
        base = self._last_seq + 1
        path = self._seg_path(base)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, self._segment_size)
            self._live = _Live(base, path, fd, self._segment_size, 0, 0, [])
        except BaseException:
            os.close(fd)
            raise
        self._segments.append(base)
        if self._ctl is not None:
            self._ctl.set(_TAIL_LIVE_BASE, base)

    def _seal(self):
        live = self._live
        if self._fsync != "never":
            live.mm.flush()
            self._stats["fsyncs"] += 1
        live.mm.close()
        os.ftruncate(live.fd, _sealed_size(live.used, live.size))
        os.close(live.fd)
        self._live = None
        self._tails[live.base] = self._link
        # on a full disk the index and meta.json may be left out: opening
        # rebuilds both from the segments
        idx = b"".join(_IDX.pack(s, t, o) for s, t, o in live.index)
        self._atomic_write(self._seg_path(live.base, "idx"), idx, tolerant=True)
        self._write_meta(tolerant=True)

    def _delete_old_segments(self):
        segs = self._segments
        if len(segs) < 2 or segs[1] > self._first:
            return
        if not self._write_meta(tolerant=True):
            return  # first_seq is on disk before the records go (no space: not yet)
        if self._chain:
            # history shrinks in the open: an eviction marker in the chain
            # says which seqs went and the link they ended on
            k = 1
            while k + 1 < len(segs) and segs[k + 1] <= self._first:
                k += 1
            body = (self._tails.get(segs[k - 1], self._genesis) + segs[0].to_bytes(8, "little")
                    + "segments deleted: first_seq {}".format(self._first).encode())
            try:
                self._write_marker(KIND_EVICT, segs[k] - 1, b"", body)
            except StorageFullError:
                return  # no marker, no deletion (tried again after the next append)
            if self._fsync == "always":
                self._sync(force=True)
        if self._ctl is not None:
            # readers learn that these segments go before any byte of them does
            k = 0
            while k + 1 < len(segs) and segs[k + 1] <= self._first:
                k += 1
            self._ctl.set(_TAIL_FIRST_BASE, segs[k])
        while len(segs) >= 2 and segs[1] <= self._first:
            base = segs.pop(0)
            self._tails.pop(base, None)
            for ext in ("seg", "idx"):
                try:
                    os.unlink(self._seg_path(base, ext))
                except FileNotFoundError:
                    pass

    def _atomic_write(self, path, data, tolerant=False):
        """tmp + rename; on a full disk the old file stays: False when
        ``tolerant`` (logged), else StorageFullError."""
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                if self._fsync != "never":
                    os.fsync(f.fileno())
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exc.errno not in _NO_SPACE:
                raise
            if tolerant:
                logger.warning("no space left to write %s (%d bytes): kept the old one", path,
                               len(data))
                return False
            raise self._no_space(path, len(data), "writing it") from None
        os.replace(tmp, path)
        if self._fsync == "always" and hasattr(os, "O_DIRECTORY"):
            dfd = os.open(self._path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _write_meta(self, tolerant=False):
        if self._path is None:
            return True
        meta = {
            "format": 1,
            "first_seq": self._first,
            "last_seq": self._last_seq,
            "max_events": self._max_events,
            "max_bytes": self._max_bytes,
            "max_age": self._max_age,
            "max_per_subject": self._max_per_subject,
            "max_event_size": self._max_event_size,
            "discard": self._discard,
            "segment_size": self._segment_size,
            "chain": CHAIN_HASH if self._chain else None,
            "chain_name": self._chain_name,
        }
        return self._atomic_write(
            os.path.join(self._path, "meta.json"),
            json.dumps(meta, indent=1, sort_keys=True).encode(),
            tolerant,
        ) is not False

    def _save_cursors(self):
        if self._path is not None:
            self._atomic_write(
                os.path.join(self._path, "cursors.json"),
                json.dumps(self._cursors, indent=1, sort_keys=True).encode(),
            )

    # -- files: opening ------------------------------------------------------

    def _corrupt(self, msg):
        if self._strict:
            raise CorruptLogError(msg)
        logger.error("%s", msg)

    def _read_json(self, name):
        p = os.path.join(self._path, name)
        try:
            with open(p, "rb") as f:
                value = json.loads(f.read().decode("utf-8"))
            if not isinstance(value, dict):
                raise ValueError("not a JSON object")
            return value
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            self._corrupt("corrupt {}: {}; ignored".format(p, exc))
            return {}

    def _open_dir(self):
        os.makedirs(self._path, exist_ok=True)
        if fcntl is not None:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise FastflowError(
                    "log directory {!r} is already open (locked by another Log)".format(self._path)
                ) from None
            self._lock_fd = fd
        try:
            self._load()
        except BaseException:
            self._release()
            raise

    def _record_at(self, buf, off, expect, limit):
        """The length of a record at ``off`` that verifies (header, CRC, a
        record's seq in expect .. limit - 1; no bound when limit is 0), else 0."""
        n = len(buf)
        if off + RECORD_HEADER > n:
            return 0
        length, crc, seq, _, _, slen, kind, version = _HEADER.unpack_from(buf, off)
        if length < RECORD_HEADER or off + length > n or kind not in _KINDS \
                or version not in _VERSIONS \
                or RECORD_HEADER + slen + (LINK_LEN if version == FRAME_V2 else 0) > length:
            return 0
        if kind == KIND_RECORD and (seq < expect or (limit and seq >= limit)):
            return 0
        if crc32c(memoryview(buf)[off + 8 : off + length]) != crc:
            return 0
        return length

    def _scan_segment(self, base, path, newest, next_base, found):
        """Parse one segment: (records, markers, good_end, nrecords, index,
        last record seq, torn tail (offset, problem) or None, whether the end
        of a sealed segment was unreadable); its corrupt stretches go to
        ``found``: after a bad record the scan resynchronises at the next
        record whose header and CRC verify and whose seq follows."""
        with open(path, "rb") as f:
            buf = f.read()
        n = len(buf)
        off = 0
        expect = base
        records = []  # (seq, ts, time, subject, sbytes, data)
        markers = []  # (kind, seq, ts, first_seq, sbytes)
        index = []
        nrec = 0
        last_rec = 0
        hole = None  # (first seq lost, offset, what)
        torn = None
        tail_lost = False
        framed = False  # a frame verified
        last_link = None  # the last frame's link (None: format 1)
        while True:
            problem = None
            if off + 4 > n:
                if not buf[off:].strip(b"\0"):
                    break
                problem = "truncated length field"
            else:
                (length,) = struct.unpack_from("<I", buf, off)
                if length == 0:
                    if not buf[off:].strip(b"\0"):
                        break
                    problem = "zero length followed by non-zero bytes"
                elif length < RECORD_HEADER or off + length > n:
                    problem = "record length {} out of range ({} bytes left)".format(
                        length, n - off)
                else:
                    _, crc, seq, ts, time, slen, kind, version = _HEADER.unpack_from(buf, off)
                    extra = LINK_LEN if version == FRAME_V2 else 0
                    if crc32c(memoryview(buf)[off + 8 : off + length]) != crc:
                        problem = "checksum mismatch"
                    elif kind not in _KINDS or version not in _VERSIONS \
                            or RECORD_HEADER + slen + extra > length:
                        problem = "invalid header (kind {}, format byte {}, subject length " \
                                  "{})".format(kind, version, slen)
                    else:
                        sb = buf[off + RECORD_HEADER : off + RECORD_HEADER + slen]
                        try:
                            subject = sb.decode("utf-8")
                        except UnicodeDecodeError:
                            problem = "subject is not UTF-8"
                        else:
                            if kind == KIND_RECORD and seq < expect:
                                problem = "seq {} after seq {}".format(seq, expect - 1)
            if problem is not None:
                o = off + 1
                limit = 0 if newest else next_base
                while o + RECORD_HEADER <= n and not self._record_at(buf, o, expect, limit):
                    o += 1
                    if not buf[o : o + 4].strip(b"\0"):
                        # zeros (a sparse tail): the next record's nonzero
                        # length has a nonzero byte among its 4
                        o = max(o, n - len(buf[o:].lstrip(b"\0")) - 3)
                if o + RECORD_HEADER > n:
                    if newest:
                        torn = (off, problem)
                    else:
                        self._corrupt_at(path, off, problem)
                        found.append((expect, next_base - 1, path, off,
                                      "corrupt record ({}); the rest of the segment is "
                                      "unreadable".format(problem), True))
                        self._stats["corrupt_records"] += max(1, next_base - expect)
                        tail_lost = True
                    break
                self._corrupt_at(path, off, problem)
                if hole is None:
                    hole = (expect, off, "corrupt record ({}), resynchronised at offset {}".format(
                        problem, o))
                off = o
                continue
            if kind == KIND_RECORD:
                if hole is not None:
                    found.append((hole[0], seq - 1, path, hole[1], hole[2], True))
                    self._stats["corrupt_records"] += max(1, seq - hole[0])
                    hole = None
                # increasing; a seq may be skipped after a recovered torn tail
                if nrec % INDEX_INTERVAL == 0:
                    index.append((seq, ts, off))
                nrec += 1
                expect = seq + 1
                last_rec = seq
                records.append((seq, ts, time, subject, sb,
                                buf[off + RECORD_HEADER + slen : off + length - extra]))
            elif kind != KIND_EVICT:  # (an eviction marker only feeds the chain)
                markers.append((kind, seq, ts, time, sb))
            framed = True
            last_link = buf[off + length - LINK_LEN : off + length] if extra else None
            if ts > self._last_ts:
                self._last_ts = ts
            off += length
        if hole is not None and torn is None and not tail_lost:
            found.append((hole[0], 0 if newest else next_base - 1, path, hole[1], hole[2], True))
            self._stats["corrupt_records"] += 1
            tail_lost = True
        if torn is not None:
            tail = len(buf[off:].rstrip(b"\0"))
            logger.warning(
                "torn tail in %s at offset %d: %s; truncated %d bytes", path, off, torn[1], tail
            )
            self._stats["truncated_bytes"] += tail
        return records, markers, off, nrec, index, last_rec, torn, tail_lost, framed, last_link

    def _corrupt_at(self, path, off, problem):
        if self._strict:
            raise CorruptLogError("corrupt record in {} at offset {}: {}".format(
                path, off, problem))

    def _report_losses(self, bases, scans, found, meta_first, meta_last, floor):
        """The seq ranges lost to damaged files (at or above ``floor``), each
        logged at ERROR (see the native SegmentStore._report_losses)."""
        if bases and meta_first and meta_first < bases[0]:
            found.append((meta_first, bases[0] - 1, self._seg_path(bases[0]), 0,
                          "no segment holds them (meta.json says first_seq {}, the oldest "
                          "segment starts at {}): a deleted segment".format(meta_first, bases[0]),
                          False))
        for i, (base, end, last_rec, torn, tail_lost) in enumerate(scans):
            path = self._seg_path(base)
            upto = last_rec if last_rec else base - 1
            if i + 1 < len(scans):
                if not tail_lost and upto + 1 < bases[i + 1]:
                    found.append((upto + 1, bases[i + 1] - 1, path, end,
                                  "the segment ends at seq {}, the next one starts at {}: a "
                                  "truncated segment or a deleted one".format(upto, bases[i + 1]),
                                  False))
            elif meta_last > upto and not tail_lost:
                # meta.json had recorded more than the newest segment holds
                found.append((upto + 1, meta_last, path, end if torn is None else torn[0],
                              "torn tail ({}); meta.json recorded last_seq {}".format(
                                  torn[1], meta_last) if torn is not None else
                              "the newest segment ends at seq {}, meta.json recorded last_seq "
                              "{}: a truncated or deleted segment".format(upto, meta_last),
                              False))
        if not bases and meta_first and meta_first <= meta_last:
            found.append((meta_first, meta_last, self._path, 0, "no segment file (meta.json "
                          "recorded seqs {}..{})".format(meta_first, meta_last), False))
        for first, last, path, off, reason, corrupt in found:
            if last == 0:
                last = meta_last
            a, b = max(first, floor), last
            if a > b:
                if corrupt:
                    logger.error("corrupt bytes in %s at offset %d: %s; no retained record lost",
                                 path, off, reason)
                continue
            msg = "records {}..{} lost ({} records): {} at offset {}: {}".format(
                a, b, b - a + 1, path, off, reason)
            if self._strict:
                raise CorruptLogError(msg)
            logger.error("%s", msg)
            self._losses.append({"first_seq": a, "last_seq": b, "file": path, "offset": off,
                                 "reason": reason})
            self._stats["lost_records"] += b - a + 1

    def _load(self):
        meta = self._read_json("meta.json")
        bases = []
        for name in os.listdir(self._path):
            m = _SEG_NAME.match(name)
            if m:
                bases.append(int(m.group(1)))
        bases.sort()
        records = []
        markers = []
        live_info = None
        found = []
        scans = []
        for i, base in enumerate(bases):
            newest = i == len(bases) - 1
            path = self._seg_path(base)
            next_base = bases[i + 1] if not newest else 0
            recs, marks, end, nrec, index, last_rec, torn, tail_lost, framed, last_link = \
                self._scan_segment(base, path, newest, next_base, found)
            # the chain goes on from the last verified frame (format 1: from genesis)
            if framed:
                self._link = last_link if last_link is not None else self._genesis
            self._tails[base] = self._link
            records.extend(recs)
            markers.extend(marks)
            scans.append((base, end, last_rec, torn, tail_lost))
            if newest:
                live_info = (base, path, end, nrec, index)

        def meta_int(key):
            v = meta.get(key, 0)
            return v if isinstance(v, int) and v >= 0 else 0

        # a new segment is named after the next seq: the counter reached base - 1
        last = max([meta_int("last_seq")] + [r[0] for r in records] + [b - 1 for b in bases])
        floor = max([meta_int("first_seq"), 1] + [m[3] for m in markers if m[3] > 0])
        literal = {}  # subject -> delete up to
        wild = []  # (match, bound)
        for kind, seq, _ts, _first, sb in markers:
            if kind == KIND_PURGE:
                floor = max(floor, seq + 1)
            elif _is_literal(sb):
                s = sb.decode("utf-8")
                literal[s] = max(literal.get(s, 0), seq)
            else:
                try:
                    wild.append((_matcher(sb), seq))
                except ValueError:
                    logger.error("ignoring a delete marker with an invalid pattern %r", sb)
        self._report_losses(bases, scans, found, meta_int("first_seq"), meta_int("last_seq"),
                            floor)
        bounds = {}

        def deleted(subject, seq):
            b = bounds.get(subject)
            if b is None:
                b = literal.get(subject, 0)
                for match, bound in wild:
                    if bound > b and match(subject):
                        b = bound
                bounds[subject] = b
            return seq <= b

        self._last_seq = max(last, floor - 1)
        kept = [r for r in records if r[0] >= floor and not deleted(r[3], r[0])]
        self._base = kept[0][0] if kept else self._last_seq + 1
        prev_ts = 0
        for seq, ts, time, subject, sb, data in kept:
            while self._base + len(self._entries) < seq:  # a hole
                self._entries.append(None)
                self._tss.append(prev_ts)
            e = _Entry(seq, ts, time, subject, sb, data)
            self._entries.append(e)
            self._tss.append(ts)
            prev_ts = ts
            self._count += 1
            self._bytes += e.size
            dq = self._by_subject.get(subject)
            if dq is None:
                dq = self._by_subject[subject] = deque()
            dq.append(e)
        while self._base + len(self._entries) <= self._last_seq:
            self._entries.append(None)
            self._tss.append(prev_ts)
        self._head = 0
        self._advance_head()

        cursors = self._read_json("cursors.json")
        for name, seq in cursors.items():
            if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 and name:
                if seq > self._last_seq:
                    logger.warning(
                        "cursor %r at %d is past last_seq=%d after recovery; moved back",
                        name, seq, self._last_seq,
                    )
                    seq = self._last_seq
                self._cursors[name] = seq

        self._segments = bases
        if live_info is not None:
            base, path, end, nrec, index = live_info
            try:
                os.unlink(self._seg_path(base, "idx"))  # it is live again
            except FileNotFoundError:
                pass
            fd = os.open(path, os.O_RDWR)
            try:
                cur = os.fstat(fd).st_size
                size = max(cur, self._segment_size, end)
                _zero_tail(fd, end, cur)  # drop a torn tail (in place: readers map it)
                if size > cur:
                    os.ftruncate(fd, size)
                self._live = _Live(base, path, fd, size, end, nrec, index)
            except BaseException:
                os.close(fd)
                raise
