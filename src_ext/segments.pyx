# Segment files of a file-backed log (included by core.pyx); the format is
# in docs/log.md.
#
# The newest segment is preallocated and written through a shared memory
# map: an append is a memcpy and a CRC32C, and the bytes are in the page
# cache as soon as it returns (they survive the process being killed);
# msync makes them durable per the fsync policy.  Opening replays the
# segments through the log's own append path (same limits, same evictions),
# so the in-memory state after a reopen is the state before it.

import errno as _errno
import hashlib
import mmap as _mmap
import os as _os
import threading as _threading
import weakref as _weakref

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE

ff_crc32c_init()

cdef extern from "<sys/mman.h>":
    int msync(void *addr, size_t length, int flags) nogil
    int MS_SYNC


def _flusher(ref, wake, double interval):
    """fsync="interval": make the live segment durable every ``interval``
    seconds on this thread, so that the appends never wait for the disk."""
    while True:
        wake.wait(interval)
        store = ref()
        if store is None or store._stopping():
            return
        try:
            store._background_sync()
        except Exception:  # the next round, or close(), tries again
            _logger.exception('fastflow: background sync of %s failed', store._path())
        del store


cdef enum:
    MAX_SPARES = 2                  # old segment files kept for reuse
    TAIL_GAP = 8                    # zero bytes always left after a segment's last frame
    RESERVE_STEP = 1 << 20          # bytes of the live segment allocated on disk at a time


_NO_SPACE = (_errno.ENOSPC, getattr(_errno, 'EDQUOT', _errno.ENOSPC))


def _allocate(int fd, Py_ssize_t offset, Py_ssize_t length):
    """Allocate ``offset:offset + length`` of a file on disk, so that
    writing it through a map can never fail (SIGBUS on a full disk):
    posix_fallocate, or zeros written where the file system has no
    fallocate (the range is known to hold zeros)."""
    try:
        _os.posix_fallocate(fd, offset, length)
        return
    except AttributeError:
        pass
    except OSError as exc:
        if exc.errno not in (_errno.EOPNOTSUPP, _errno.ENOSYS, _errno.EINVAL):
            raise
    zeros = bytes(min(length, 1 << 16))
    end = offset + length
    while offset < end:
        offset += _os.pwrite(fd, zeros[:end - offset], offset)


cdef Py_ssize_t _dirty_end(const char *p, Py_ssize_t start, Py_ssize_t n) noexcept:
    """The end of the last non-zero byte of p[start:n] (start if none)."""
    while n > start and p[n - 1] == 0:
        n -= 1
    return n


cdef Py_ssize_t _record_at(const char *p, Py_ssize_t n, Py_ssize_t off, int64_t expect,
                           int64_t limit) noexcept:
    """The length of a record that starts at ``off`` and verifies (length,
    CRC, header; a record's seq in ``expect`` .. ``limit - 1``, no upper
    bound when ``limit`` is 0), else 0: used to resynchronise after a
    corrupt record."""
    cdef Py_ssize_t rlen, slen
    cdef int64_t seq
    cdef int kind, version
    if off + REC_HEADER > n:
        return 0
    rlen = _rd32(p + off)
    if rlen < REC_HEADER or off + rlen > n:
        return 0
    kind = <uint8_t>p[off + 34]
    version = <uint8_t>p[off + 35]
    if kind not in (KIND_RECORD, KIND_DELETE, KIND_PURGE, KIND_EVICT) or \
            version not in (FRAME_V1, FRAME_V2):
        return 0
    slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
    if REC_HEADER + slen + (LINK_LEN if version == FRAME_V2 else 0) > rlen:
        return 0
    if kind == KIND_RECORD:
        seq = _rdi64(p + off + 8)
        if seq < expect or (limit and seq >= limit):
            return 0
    if ff_crc32c(0, p + off + 8, rlen - 8) != _rd32(p + off + 4):
        return 0
    return rlen


def crc32c(data, uint32_t crc=0):
    """CRC32C (Castagnoli) of a bytes-like object, chainable through ``crc``."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return ff_crc32c(crc, <const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def _seg_name(int64_t base):
    return '{:020d}.seg'.format(base)


def chain_genesis(name):
    """The link before the first frame of the log named ``name`` (a str:
    by default the directory's name, a stream's name)."""
    return hashlib.sha256(b'fastflow.chain.v1\0' + name.encode('utf-8')).digest()


def sha256_of_digests(parts):
    """SHA-256 of the concatenated SHA-256s of ``parts`` (bytes-like; None
    hashes as the empty string): the CloudEvents verifiability extension's
    digest in one call (fastflow.trust), the hashing in C."""
    cdef ff_sha256_ctx outer, inner
    cdef unsigned char d[32]
    cdef Py_buffer view
    ff_sha256_init(&outer)
    for part in parts:
        ff_sha256_init(&inner)
        if part is not None:
            PyObject_GetBuffer(part, &view, PyBUF_SIMPLE)
            ff_sha256_update(&inner, view.buf, <size_t>view.len)
            PyBuffer_Release(&view)
        ff_sha256_final(&inner, d)
        ff_sha256_update(&outer, d, 32)
    ff_sha256_final(&outer, d)
    return PyBytes_FromStringAndSize(<char *>d, 32)


def chain_link(prev, body):
    """SHA-256(prev || body): the link of a frame whose body (the bytes
    between its CRC and its link) is ``body``."""
    cdef Py_buffer pv, bv
    cdef unsigned char out[32]
    PyObject_GetBuffer(prev, &pv, PyBUF_SIMPLE)
    try:
        if pv.len != LINK_LEN:
            raise ValueError('a chain link is {} bytes, got {}'.format(LINK_LEN, pv.len))
        PyObject_GetBuffer(body, &bv, PyBUF_SIMPLE)
        try:
            ff_chain_link(<const unsigned char *>pv.buf, <const char *>bv.buf, bv.len, out)
        finally:
            PyBuffer_Release(&bv)
    finally:
        PyBuffer_Release(&pv)
    return out[:LINK_LEN]


def chain_walk(buf, Py_ssize_t off, prev, int64_t after, int64_t stop):
    """The audit's fast path (fastflow.audit): verify the format-2 record
    frames of ``buf`` from ``off`` while each one is whole, has a good CRC,
    a seq above ``after`` and the link SHA-256(previous link || body),
    starting from the link ``prev``; stop before any other frame (a marker,
    a format-1 frame, the end, a damaged one: the caller looks at it) or
    after the record whose seq reaches ``stop`` (0: none).  Returns
    ``(offset, link, records, last seq)``."""
    cdef Py_buffer view, pv
    cdef const char *p
    cdef Py_ssize_t n, rlen, slen
    cdef int64_t seq, count = 0
    cdef unsigned char link[32]
    cdef unsigned char got[32]
    PyObject_GetBuffer(prev, &pv, PyBUF_SIMPLE)
    try:
        if pv.len != LINK_LEN:
            raise ValueError('a chain link is {} bytes, got {}'.format(LINK_LEN, pv.len))
        memcpy(link, pv.buf, LINK_LEN)
    finally:
        PyBuffer_Release(&pv)
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    p = <const char *>view.buf
    n = view.len
    if off < 0:
        off = 0
    try:
        while off + REC_HEADER <= n:
            rlen = _rd32(p + off)
            if rlen < REC_HEADER + LINK_LEN or rlen > n - off:
                break
            slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
            seq = _rdi64(p + off + 8)
            if <uint8_t>p[off + 34] != KIND_RECORD or <uint8_t>p[off + 35] != FRAME_V2 \
                    or REC_HEADER + slen + LINK_LEN > rlen or seq <= after:
                break
            if ff_crc32c(0, p + off + 8, rlen - 8) != _rd32(p + off + 4):
                break
            ff_chain_link(link, p + off + 8, rlen - 8 - LINK_LEN, got)
            if memcmp(got, p + off + rlen - LINK_LEN, LINK_LEN) != 0:
                break
            memcpy(link, got, LINK_LEN)
            after = seq
            count += 1
            off += rlen
            if stop and seq >= stop:
                break
    finally:
        PyBuffer_Release(&view)
    return (off, link[:LINK_LEN], count, after)


CHAIN_HASH = 'sha256'
CHAIN_IMPL = ff_sha256_impl.decode()


@cython.final
cdef class SegmentStore:

    def __init__(self, Log log, path, fsync, fsync_interval, segment_size, strict, chain=True,
                 chain_name=None, notify=False):
        # the arguments were validated by Log.__init__
        self.log = log
        self.path = _os.fspath(path)
        self.chain = chain
        self.frame_extra = LINK_LEN if chain else 0
        self.chain_name = chain_name if chain_name is not None else \
            _os.path.basename(_os.path.normpath(_os.path.abspath(self.path)))
        self.genesis = chain_genesis(self.chain_name)
        memcpy(self.link, <const char *>self.genesis, LINK_LEN)
        self.tails = {}
        self.policy = {'always': FSYNC_ALWAYS, 'interval': FSYNC_INTERVAL,
                       'never': FSYNC_NEVER}[fsync]
        self.interval = fsync_interval
        self.interval_ns = <int64_t>(fsync_interval * 1e9)
        self.segment_size = segment_size
        self.strict = strict
        self.bases = []
        self.live_index = []
        self.lock_fd = -1
        self.lock = _threading.Lock()
        self.wake = _threading.Event()
        self.spares = []
        self.pending = []
        self.losses = []
        self.notify = notify
        _os.makedirs(self.path, exist_ok=True)

    def stats(self):
        return {'segments': len(self.bases), 'fsyncs': self.n_fsyncs,
                'truncated_bytes': self.n_truncated, 'corrupt_records': self.n_corrupt,
                'deleted_segments': self.n_deleted_segments,
                'lost_records': sum([l['last_seq'] - l['first_seq'] + 1 for l in self.losses]),
                'storage_full': self.n_storage_full}

    # -- opening ---------------------------------------------------------------------

    def load(self):
        """Open the directory: lock it, scan every segment (verifying every
        record), apply the markers and hand the surviving records to the
        log's append path (the limits of this open apply)."""
        self._lock()
        try:
            self._load()
        except BaseException:
            self._unlock()
            raise

    cdef _lock(self):
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory lock
            return
        fd = _os.open(self.path, _os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            _os.close(fd)
            raise FastflowError('log directory {!r} is already open (locked by another '
                                'Log)'.format(self.path)) from None
        self.lock_fd = fd

    cdef _unlock(self):
        if self.lock_fd >= 0:
            _os.close(self.lock_fd)  # closing the descriptor releases the lock
            self.lock_fd = -1

    cdef _load(self):
        cdef int64_t last, floor, bound
        cdef Log log = self.log
        meta = self._read_json('meta.json')
        bases = []
        for name in _os.listdir(self.path):
            if name.endswith('.spare'):
                if len(self.spares) < MAX_SPARES:
                    self.spares.append(_os.path.join(self.path, name))
                else:
                    _os.unlink(_os.path.join(self.path, name))
            if name.endswith('.seg'):
                stem = name[:len(name) - 4]
                if len(stem) == 20 and stem.isdigit():
                    bases.append(int(stem))
        bases.sort()
        self.bases = bases
        scans = []
        markers = []
        found = []                  # (first seq, last seq or 0, file, offset, reason, corrupt)
        for i in range(len(bases)):
            newest = i == len(bases) - 1
            scans.append(self._scan(bases[i], newest,
                                    0 if newest else bases[i + 1], markers, found))

        def meta_int(key):
            v = meta.get(key, 0)
            return v if isinstance(v, int) and v >= 0 else 0

        last = max([meta_int('last_seq')] + [sc[3] for sc in scans] + [b - 1 for b in bases])
        floor = max([meta_int('first_seq'), 1] + [m[3] for m in markers if m[3] > 0])
        literal = {}
        wild = []
        for kind, seq, ts, first, sb in markers:
            if kind == KIND_PURGE:
                floor = max(floor, seq + 1)
            elif not {b'*', b'>'}.isdisjoint(sb.split(b'.')):
                wild.append((sb, seq))
            else:
                literal[sb] = max(literal.get(sb, 0), seq)
        self._report_losses(bases, scans, found, meta_int('first_seq'), meta_int('last_seq'),
                            floor)
        deleted_bound = {}
        for sc in scans:
            self._replay_records(sc[0], sc[4], floor, literal, wild, deleted_bound)
        log._load_gap(max(last, floor - 1))
        # the chain goes on from the last verified frame (a format-1 frame:
        # from the genesis link); every segment's closing link is kept for
        # the eviction marker written when it is deleted
        link = self.genesis
        self.tails = {}
        for i in range(len(scans)):
            sc = scans[i]
            if sc[8]:
                link = sc[9] if sc[9] is not None else self.genesis
            self.tails[bases[i]] = link
        memcpy(self.link, <const char *>link, LINK_LEN)
        if bases:
            sc = scans[len(scans) - 1]
            self._open_live(sc[2], sc[1], sc[5])
        else:
            self._open_live(log._last_seq + 1, 0)
        self.write_meta(None, True)
        self._ctl_open()

    cdef _report_losses(self, list bases, list scans, list found, int64_t meta_first,
                        int64_t meta_last, int64_t floor):
        """Turn what the scans found into ``losses`` (seq ranges at or above
        ``floor``: what lies below was evicted or purged anyway), each logged
        at ERROR: corrupt stretches, sealed segments that end before the next
        one starts (truncated or deleted files), records that meta.json
        recorded beyond the newest segment's end, a missing oldest segment."""
        cdef int64_t a, b
        if bases and meta_first and meta_first < bases[0]:
            found.append((meta_first, bases[0] - 1, _os.path.join(self.path, _seg_name(bases[0])),
                          0, 'no segment holds them (meta.json says first_seq {}, the oldest '
                          'segment starts at {}): a deleted segment'.format(meta_first, bases[0]),
                          False))
        for i in range(len(scans)):
            sc = scans[i]
            fname = _os.path.join(self.path, _seg_name(sc[2]))
            upto = sc[3] if sc[3] else sc[2] - 1    # the last record's seq
            if i + 1 < len(scans):
                if not sc[7] and upto + 1 < bases[i + 1]:
                    found.append((upto + 1, bases[i + 1] - 1, fname, sc[1],
                                  'the segment ends at seq {}, the next one starts at {}: a '
                                  'truncated segment or a deleted one'.format(
                                      upto, bases[i + 1]), False))
            elif meta_last > upto and not sc[7]:
                # meta.json had recorded more than the newest segment holds
                found.append((upto + 1, meta_last, fname, sc[1] if sc[6] is None else sc[6][0],
                              ('torn tail ({}); meta.json recorded last_seq {}'.format(
                                  sc[6][1], meta_last) if sc[6] is not None else
                               'the newest segment ends at seq {}, meta.json recorded last_seq '
                               '{}: a truncated or deleted segment'.format(upto, meta_last)),
                              False))
        if not bases and meta_first and meta_first <= meta_last:
            found.append((meta_first, meta_last, self.path, 0, 'no segment file (meta.json '
                          'recorded seqs {}..{})'.format(meta_first, meta_last), False))
        for first, last, fname, off, reason, corrupt in found:
            if last == 0:                   # a corrupt stretch at the end of the newest segment
                last = meta_last
            a = max(first, floor)
            b = last
            if a > b:
                if corrupt:
                    _logger.error('corrupt bytes in %s at offset %d: %s; no retained record '
                                  'lost', fname, off, reason)
                continue
            msg = 'records {}..{} lost ({} records): {} at offset {}: {}'.format(
                a, b, b - a + 1, fname, off, reason)
            if self.strict:
                raise CorruptLogError(msg)
            _logger.error('%s', msg)
            self.losses.append({'first_seq': a, 'last_seq': b, 'file': fname, 'offset': off,
                                'reason': reason})

    cdef tuple _scan(self, int64_t base, bint newest, int64_t next_base, list markers,
                     list found):
        """Verify one segment; returns (data, good end, base, last record seq,
        spans [(start, end)] of verified records, dirty end, torn tail
        (offset, problem) or None, whether the end of a sealed segment was
        unreadable, whether it holds a verified frame, the last frame's
        chain link or None (a format-1 frame)), collects
        its markers, and in ``found`` its corrupt stretches: after a bad
        record the scan resynchronises at the next record whose header and
        CRC verify and whose seq follows."""
        cdef const char *p
        cdef Py_ssize_t n, off = 0, rlen = 0, slen = 0, start = 0, o
        cdef int kind = 0
        cdef int64_t seq = 0, expect = base, last_rec = 0
        cdef bint tail_lost = False
        cdef bint framed = False
        cdef bytes data
        cdef int version = 0
        last_link = None
        fname = _os.path.join(self.path, _seg_name(base))
        with open(fname, 'rb') as f:
            data = f.read()
        p = data
        n = len(data)
        spans = []
        hole = None                         # (first seq lost, offset, what) of a bad stretch
        torn = None
        while True:
            problem = None
            if off + 4 > n:
                if data[off:].strip(b'\0'):
                    problem = 'truncated length field'
                else:
                    break
            else:
                rlen = _rd32(p + off)
                if rlen == 0:
                    if data[off:].strip(b'\0'):
                        problem = 'zero length followed by non-zero bytes'
                    else:
                        break
                elif rlen < REC_HEADER or off + rlen > n:
                    problem = 'record length {} out of range ({} bytes left)'.format(rlen, n - off)
                elif ff_crc32c(0, p + off + 8, rlen - 8) != _rd32(p + off + 4):
                    problem = 'checksum mismatch'
                else:
                    seq = _rdi64(p + off + 8)
                    slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
                    kind = <uint8_t>p[off + 34]
                    version = <uint8_t>p[off + 35]
                    if kind not in (KIND_RECORD, KIND_DELETE, KIND_PURGE, KIND_EVICT) \
                            or version not in (FRAME_V1, FRAME_V2) \
                            or REC_HEADER + slen + (LINK_LEN if version == FRAME_V2 else 0) > rlen:
                        problem = 'invalid header (kind {}, format byte {}, subject length ' \
                                  '{})'.format(kind, version, slen)
                    elif kind == KIND_RECORD and seq < expect:
                        problem = 'seq {} after seq {}'.format(seq, expect - 1)
            if problem is not None:
                if start < off:
                    spans.append((start, off))
                start = off
                # the next record that verifies and follows
                o = off + 1
                while o + REC_HEADER <= n and \
                        _record_at(p, n, o, expect, 0 if newest else next_base) == 0:
                    o += 1
                if o + REC_HEADER > n:
                    if newest:
                        torn = (off, problem)
                    else:
                        self._corrupt(fname, off, problem)
                        found.append((expect, next_base - 1, fname, off,
                                      'corrupt record ({}); the rest of the segment is '
                                      'unreadable'.format(problem), True))
                        self.n_corrupt += max(1, next_base - expect)
                        tail_lost = True
                    break
                self._corrupt(fname, off, problem)
                if hole is None:
                    hole = (expect, off, 'corrupt record ({}), resynchronised at offset {}'.format(
                        problem, o))
                off = start = o
                continue
            if kind == KIND_RECORD:
                if hole is not None:
                    found.append((hole[0], seq - 1, fname, hole[1], hole[2], True))
                    self.n_corrupt += max(1, seq - hole[0])
                    hole = None
                expect = seq + 1
                last_rec = seq
            elif kind != KIND_EVICT:        # (an eviction marker only feeds the chain)
                markers.append((kind, seq, _rdi64(p + off + 16), _rdi64(p + off + 24),
                                data[off + REC_HEADER:off + REC_HEADER + slen]))
            framed = True
            last_link = data[off + rlen - LINK_LEN:off + rlen] if version == FRAME_V2 else None
            off += rlen
        if start < off:
            spans.append((start, off))
        if hole is not None and torn is None and not tail_lost:
            # corrupt stretches followed by no record: up to the next segment,
            # or (newest) up to what meta.json recorded
            found.append((hole[0], 0 if newest else next_base - 1, fname, hole[1], hole[2], True))
            self.n_corrupt += 1
            tail_lost = True
        if torn is not None:
            tail = _dirty_end(p, off, n) - off
            _logger.warning('torn tail in %s at offset %d: %s; truncated %d bytes, never '
                            'served', fname, off, torn[1], tail)
            self.n_truncated += tail
        return (data, off, base, last_rec, spans, _dirty_end(p, off, n), torn, tail_lost,
                framed, last_link)

    cdef _corrupt(self, fname, Py_ssize_t off, problem):
        if self.strict:
            raise CorruptLogError('corrupt record in {} at offset {}: {}'.format(
                fname, off, problem))

    cdef _replay_records(self, bytes data, list spans, int64_t floor, dict literal,
                         list wild, dict deleted_bound):
        cdef const char *p = data
        cdef Py_ssize_t off, end, rlen, slen
        cdef int64_t seq
        cdef Log log = self.log
        cdef Parsed ps
        cdef PTok pt[MAX_TOKENS]
        for off, end in spans:
            while off < end:
                rlen = _rd32(p + off)
                seq = _rdi64(p + off + 8)
                slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
                if <uint8_t>p[off + 35] == FRAME_V2:
                    rlen -= LINK_LEN        # the link ends the frame
                if <uint8_t>p[off + 34] == KIND_RECORD and seq >= floor:
                    sb = data[off + REC_HEADER:off + REC_HEADER + slen]
                    bound = deleted_bound.get(sb)
                    if bound is None:
                        bound = literal.get(sb, 0)
                        for pat, b in wild:
                            if b > bound:
                                parse_subject(<const char *>pat, len(pat), &ps, True, pat)
                                ptoks_of(&ps, pt)
                                if pattern_matches(pt, ps.ntok, <const char *>sb, slen):
                                    bound = b
                        deleted_bound[sb] = bound
                    if seq > bound:
                        log._load_record(seq, _rdi64(p + off + 16), _rdi64(p + off + 24),
                                         p + off + REC_HEADER, slen, p + off + REC_HEADER + slen,
                                         rlen - REC_HEADER - slen)
                off += _rd32(p + off)

    def _read_json(self, name):
        fname = _os.path.join(self.path, name)
        try:
            with open(fname, 'rb') as f:
                value = json.loads(f.read().decode('utf-8'))
            if not isinstance(value, dict):
                raise ValueError('not a JSON object')
            return value
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            msg = 'corrupt {}: {}'.format(fname, exc)
            if self.strict:
                raise CorruptLogError(msg) from None
            _logger.error('%s; ignored', msg)
            return {}

    def write_meta(self, last_seq=None, tolerant=False):
        """Save first_seq, last_seq and the limits (``last_seq``: the last
        record on disk, when a record being written is already counted).
        ``tolerant``: a full disk is logged and False returned (the segments
        hold what meta.json would add), else StorageFullError."""
        cdef Log log = self.log
        meta = {
            'format': 1,
            'first_seq': log.idx[log.ihead].seq if log.icount else log._last_seq + 1,
            'last_seq': log._last_seq if last_seq is None else last_seq,
            'max_events': log.max_events, 'max_bytes': log.max_bytes,
            'max_age': log.max_age, 'max_per_subject': log.max_per_subject,
            'max_event_size': log.max_event_size, 'discard': log.discard,
            'segment_size': self.segment_size,
            'chain': CHAIN_HASH if self.chain else None, 'chain_name': self.chain_name,
        }
        return self._write_file(_os.path.join(self.path, 'meta.json'),
                                json.dumps(meta, indent=1, sort_keys=True).encode(), tolerant,
                                self.policy == FSYNC_ALWAYS, 'writing it')

    cdef bint _write_file(self, fname, bytes body, bint tolerant, bint sync,
                          str what) except -1:
        """Write a small file atomically (tmp + rename), fsynced first when
        ``sync``.  On a full disk the old file stays: False when ``tolerant``
        (logged), else StorageFullError (``what``: the step that failed)."""
        tmp = fname + '.tmp'
        try:
            with open(tmp, 'wb') as f:
                f.write(body)
                if sync:
                    f.flush()
                    _os.fsync(f.fileno())
        except OSError as exc:
            try:
                _os.unlink(tmp)
            except OSError:
                pass
            if exc.errno not in _NO_SPACE:
                raise
            if tolerant:
                _logger.warning('no space left to write %s (%d bytes): kept the old one', fname,
                                len(body))
                return False
            raise self._full(fname, len(body), what) from None
        _os.replace(tmp, fname)
        if self.policy == FSYNC_INTERVAL and not sync:
            self.pending.append(fname)
        return True

    cdef _full(self, fname, Py_ssize_t wanted, what):
        self.n_storage_full += 1
        return StorageFullError('storage full: no space left on the device of {} for {} more '
                                'bytes ({}); the append was refused, the log stays readable '
                                'and takes appends again once space is free'.format(
                                    fname, wanted, what), fname, wanted)

    cdef _open_live(self, int64_t base, Py_ssize_t wpos, Py_ssize_t dirty=-1):
        """Map segment ``base`` as the live one, writing at ``wpos``; a
        reopened one has bytes up to ``dirty`` cleared (only those: writing
        zeros to its unallocated pages could fail on a full disk).  Nothing
        of it is allocated on disk past ``wpos`` until ``reserve``."""
        fname = _os.path.join(self.path, _seg_name(base))
        size = max(self.segment_size, wpos)
        if wpos == 0 and self.spares and not _os.path.exists(fname):
            self._reuse_spare(fname)
        fd = _os.open(fname, _os.O_RDWR | _os.O_CREAT, 0o644)
        try:
            cur = _os.fstat(fd).st_size
            if cur < size:
                _os.ftruncate(fd, size)
            self.file = _os.fdopen(fd, 'r+b')
        except BaseException:
            _os.close(fd)
            raise
        self.size = max(size, cur)
        self.mm = _mmap.mmap(self.file.fileno(), self.size)
        PyObject_GetBuffer(self.mm, &self.view, PyBUF_WRITABLE)
        self.mapped = True
        self.base_ptr = <char *>self.view.buf
        if dirty < 0:
            dirty = cur
        if wpos < min(dirty, cur):
            # a reopened segment: clear what lay beyond the last good record
            # (a fresh one is all zeros already: leave its pages untouched)
            memset(self.base_ptr + wpos, 0, min(dirty, cur) - wpos)
        self.wpos = wpos
        self.reserved = wpos
        self.synced = wpos
        self.live_base = base
        if self.ctl != NULL:
            # (the previous segment is sealed: a reader that sees the new
            # base finds every frame of the old one in place)
            ff_ctl_store64(self.ctl, FF_TAIL_LIVE_BASE, base)
        if not self.bases or self.bases[len(self.bases) - 1] != base:
            self.bases.append(base)
        self.last_sync_ns = ff_now_ns()
        if wpos == 0:
            self._sync_dir()

    cdef _sync_dir(self):
        if self.policy == FSYNC_NEVER:
            return
        try:
            fd = _os.open(self.path, _os.O_RDONLY)
        except OSError:
            return
        try:
            _os.fsync(fd)
        except OSError:
            pass
        finally:
            _os.close(fd)

    # -- writing ---------------------------------------------------------------------

    cdef int reserve(self, Py_ssize_t need, int64_t seq) except -1:
        """Room for ``need`` bytes before writing ``seq`` (or a marker, with
        ``seq`` = last_seq + 1), allocated on disk: roll to a segment named
        ``seq``, or grow the live one if it holds no record yet (a new one
        would get its name); then allocate up to the end of what will be
        written (RESERVE_STEP at a time), so that writing through the map
        can never fault.  A full disk raises StorageFullError and changes
        nothing the log holds (the log calls this before storing)."""
        if self.wpos + need + TAIL_GAP <= self.reserved:
            return 0
        if not self.mapped:
            # a roll whose new segment could not be made (no space): retry
            self._open_live(seq, 0)
        elif self.wpos + need + TAIL_GAP > self.size:
            # (a segment never fills to its last byte: a zero length stays
            # after the last frame, where a tailing reader waits)
            if self.live_base >= seq:
                self._grow_live(need)
            else:
                self._seal(seq - 1)
                self._open_live(seq, 0)
        if self.wpos + need + TAIL_GAP > self.reserved:
            self._allocate(min(self.size, self.wpos + need + TAIL_GAP))
        return 0

    cdef int reserve_ahead(self, Py_ssize_t need) except -1:
        """Allocate ``need`` more bytes of the live segment if they fit in
        it (a batch: refused as a whole on a full disk); a roll is left to
        ``reserve``."""
        if self.mapped and self.reserved < self.wpos + need <= self.size:
            self._allocate(self.wpos + need)
        return 0

    cdef _allocate(self, Py_ssize_t end):
        cdef Py_ssize_t upto = min(self.size, max(end, self.reserved + RESERVE_STEP))
        fd = self.file.fileno()
        try:
            _allocate(fd, self.reserved, upto - self.reserved)
        except OSError as exc:
            if exc.errno not in _NO_SPACE:
                raise
            upto = end                  # what this write needs, no more
            try:
                _allocate(fd, self.reserved, upto - self.reserved)
            except OSError as exc2:
                if exc2.errno not in _NO_SPACE:
                    raise
                raise self._full(_os.path.join(self.path, _seg_name(self.live_base)),
                                 end - self.wpos, 'at offset {}'.format(self.wpos)) from None
        self.reserved = upto

    cdef int write_record(self, int64_t seq, int64_t ts, int64_t ptime, const char *s,
                          Py_ssize_t slen, const char *d, Py_ssize_t dlen) except -1:
        cdef Py_ssize_t rlen = REC_HEADER + slen + dlen + self.frame_extra
        cdef char *p
        self.reserve(rlen, seq)
        p = self.base_ptr + self.wpos
        _wri64(p + 8, seq)
        _wri64(p + 16, ts)
        _wri64(p + 24, ptime)
        p[32] = <char>(slen & 0xff)
        p[33] = <char>(slen >> 8)
        p[34] = KIND_RECORD
        p[35] = FRAME_V2 if self.chain else FRAME_V1
        memcpy(p + REC_HEADER, s, slen)
        memcpy(p + REC_HEADER + slen, d, dlen)
        self._frame_end(p, rlen)
        # the length last, by a release store: a record is complete (to a
        # reader in another process too) once its length is there
        ff_publish32(p, <uint32_t>rlen)
        self.live_records += 1
        if self.live_records % IDX_EVERY == 1:
            self.live_index.append((seq, ts, self.wpos))
        self.wpos += rlen
        return 0

    cdef void _frame_end(self, char *p, Py_ssize_t rlen) noexcept:
        """The chain link (format 2) and the CRC of the frame at ``p``,
        whose other fields are written."""
        if self.chain:
            # link = SHA-256(previous link || the frame between CRC and link)
            ff_chain_link(self.link, p + 8, rlen - 8 - LINK_LEN, self.link)
            memcpy(p + rlen - LINK_LEN, self.link, LINK_LEN)
        _wr32(p + 4, ff_crc32c(0, p + 8, rlen - 8))

    cdef int write_marker(self, int kind, int64_t seq, const char *sb,
                          Py_ssize_t slen, const char *d=NULL, Py_ssize_t dlen=0) except -1:
        """A delete (pattern, bound), purge-up-to (bound) or eviction marker
        (``d``: the link at ``seq``, the first seq removed, the reason); its
        time field holds the log's first_seq, so that a crash cannot bring
        back records evicted before it."""
        cdef Py_ssize_t rlen = REC_HEADER + slen + dlen + self.frame_extra
        cdef char *p
        cdef Log log = self.log
        self.reserve(rlen, log._last_seq + 1)
        p = self.base_ptr + self.wpos
        _wri64(p + 8, seq)
        _wri64(p + 16, log.last_ts)
        _wri64(p + 24, log.idx[log.ihead].seq if log.icount else log._last_seq + 1)
        p[32] = <char>(slen & 0xff)
        p[33] = <char>(slen >> 8)
        p[34] = kind
        p[35] = FRAME_V2 if self.chain else FRAME_V1
        memcpy(p + REC_HEADER, sb, slen)
        if dlen:
            memcpy(p + REC_HEADER + slen, d, dlen)
        self._frame_end(p, rlen)
        ff_publish32(p, <uint32_t>rlen)
        self.wpos += rlen
        return 0

    cdef _grow_live(self, Py_ssize_t need):
        cdef Py_ssize_t wpos = self.wpos
        self._unmap()
        size = self.size + max(self.segment_size, need + TAIL_GAP)
        _os.ftruncate(self.file.fileno(), size)
        self.file.close()
        self.file = None
        self._open_live(self.live_base, wpos)

    cdef int after_append(self) except -1:
        cdef Log log
        cdef int64_t first
        if self.ctl != NULL:
            log = self.log
            ff_ctl_store64(self.ctl, FF_TAIL_LAST_SEQ, log._last_seq)
            first = log.idx[log.ihead].seq if log.icount else log._last_seq + 1
            # (written only when it moves: a reader's line stays clean)
            if ff_ctl_load64(self.ctl, FF_TAIL_FIRST_SEQ) != first:
                ff_ctl_store64(self.ctl, FF_TAIL_FIRST_SEQ, first)
            if self.notify:
                ff_tail_wake(self.ctl)
        if self.policy == FSYNC_ALWAYS:
            self.sync(True)
        elif self.policy == FSYNC_INTERVAL and self.flusher is None:
            self.flusher = _threading.Thread(
                target=_flusher, args=(_weakref.ref(self), self.wake, self.interval),
                name='fastflow-log-flusher', daemon=True)
            self.flusher.start()
        if len(self.bases) > 1:
            self._drop_old_segments()
        return 0

    cpdef sync(self, bint force):
        with self.lock:
            self._sync_locked(force)

    cdef _sync_locked(self, bint force):
        cdef Py_ssize_t start, end
        cdef char *p
        cdef int rc
        if not self.mapped or self.wpos == self.synced:
            self.last_sync_ns = ff_now_ns()
            return
        if self.policy == FSYNC_NEVER and not force:
            return
        start = self.synced - self.synced % _mmap.ALLOCATIONGRANULARITY
        end = self.wpos
        p = self.base_ptr
        # the appends may go on meanwhile: the lock keeps the map in place
        with nogil:
            rc = msync(p + start, end - start, MS_SYNC)
        if rc != 0:
            raise OSError('msync of {} failed'.format(self._path()))
        if end > self.synced:
            self.synced = end
        self.n_fsyncs += 1
        self.last_sync_ns = ff_now_ns()

    def _background_sync(self):
        self.sync(True)
        self._sync_pending()

    def _sync_pending(self):
        """fsync the files sealed or rewritten since the last round, and the
        directory (renames), outside the lock: appends go on meanwhile."""
        paths, self.pending = self.pending, []
        if not paths:
            return
        for path in dict.fromkeys(paths):
            try:
                fd = _os.open(path, _os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted or recycled since
            try:
                _os.fsync(fd)
            finally:
                _os.close(fd)
            self.n_fsyncs += 1
        self._sync_dir()

    def _stopping(self):
        return self.stopping

    def _path(self):
        return self.path

    cdef _stop_flusher(self):
        if self.flusher is not None:
            self.stopping = True
            self.wake.set()
            if self.flusher is not _threading.current_thread():
                self.flusher.join()
            self.flusher = None

    cdef bint _reuse_spare(self, fname):
        """Turn a spare (an old segment) into the new live segment: its page
        cache pages are resident, so writing through them costs no page
        allocation and zeroing by the kernel, which dominates the cost of a
        fresh file.  It is cleared under its spare name first, so a crash can
        never leave stale records under a segment name."""
        cdef Py_buffer v
        spare = self.spares.pop()
        try:
            with open(spare, 'r+b') as f:
                n = _os.fstat(f.fileno()).st_size
                if n:
                    mm = _mmap.mmap(f.fileno(), n)
                    PyObject_GetBuffer(mm, &v, PyBUF_WRITABLE)
                    memset(v.buf, 0, n)
                    PyBuffer_Release(&v)
                    mm.close()
            _os.rename(spare, fname)
            return True
        except OSError:
            try:
                _os.unlink(spare)
            except OSError:
                pass
            return False

    cdef _drop_old_segments(self):
        cdef Log log = self.log
        cdef int64_t first = log.idx[log.ihead].seq if log.icount else log._last_seq + 1
        if self.bases[1] > first:
            return
        if not self.write_meta(None, True):
            return  # first_seq is on disk before the records go (no space: not yet)
        if self.chain:
            # history shrinks in the open: an eviction marker in the chain
            # says which seqs went and the link they ended on, so that the
            # audit can tell this from a removed record
            k = 1
            while k + 1 < len(self.bases) and self.bases[k + 1] <= first:
                k += 1
            gone_to = self.bases[k] - 1
            body = (self.tails.get(self.bases[k - 1], self.genesis) +
                    (<int64_t>self.bases[0]).to_bytes(8, 'little') +
                    'segments deleted: first_seq {}'.format(first).encode())
            try:
                self.write_marker(KIND_EVICT, gone_to, NULL, 0, <const char *>body, len(body))
            except StorageFullError:
                return  # no marker, no deletion (tried again after the next append)
            if self.policy == FSYNC_ALWAYS:
                self.sync(True)
        if self.ctl != NULL:
            # readers learn that these segments go before any of their
            # bytes does (a spare is cleared and rewritten later)
            k = 0
            while k + 1 < len(self.bases) and self.bases[k + 1] <= first:
                k += 1
            ff_ctl_store64(self.ctl, FF_TAIL_FIRST_BASE, self.bases[k])
        while len(self.bases) > 1 and self.bases[1] <= first:
            b = self.bases.pop(0)
            self.tails.pop(b, None)
            seg = _os.path.join(self.path, _seg_name(b))
            try:
                _os.unlink(_os.path.join(self.path, '{:020d}.idx'.format(b)))
            except FileNotFoundError:
                pass
            try:
                if len(self.spares) < MAX_SPARES:
                    self.spare_counter += 1
                    spare = _os.path.join(self.path, 'recycle-{}-{}.spare'.format(
                        _os.getpid(), self.spare_counter))
                    _os.rename(seg, spare)
                    self.spares.append(spare)
                else:
                    _os.unlink(seg)
            except FileNotFoundError:
                pass
            self.n_deleted_segments += 1

    cdef _unmap(self):
        with self.lock:
            self._unmap_locked()

    cdef _unmap_locked(self):
        self.reserved = 0
        if self.mapped:
            PyBuffer_Release(&self.view)
            self.mapped = False
            self.mm.close()

    cdef _seal(self, int64_t last_on_disk):
        """Close the live segment: flush, cut to its used size, write its
        sparse index.  fsync="always" waits for the disk here; "interval"
        leaves the file to the flusher, so that a roll never stalls appends."""
        if self.policy == FSYNC_ALWAYS:
            self.sync(True)
        self._unmap()
        self.file.truncate(self._sealed_size())
        if self.policy == FSYNC_ALWAYS:
            _os.fsync(self.file.fileno())
        elif self.policy == FSYNC_INTERVAL:
            self.pending.append(_os.path.join(self.path, _seg_name(self.live_base)))
        self.file.close()
        self.file = None
        self.tails[self.live_base] = self.link[:LINK_LEN]
        # on a full disk the index and meta.json may be left out: opening
        # rebuilds both from the segments
        self._write_index(self.live_base, self.live_index)
        self.live_index = []
        self.live_records = 0
        self.write_meta(last_on_disk, True)

    cdef _write_index(self, int64_t base, list entries):
        self._write_file(_os.path.join(self.path, '{:020d}.idx'.format(base)),
                         b''.join(seq.to_bytes(8, 'little') +
                                  ts.to_bytes(8, 'little', signed=True) +
                                  off.to_bytes(8, 'little') for seq, ts, off in entries), True,
                         self.policy == FSYNC_ALWAYS, 'writing it')

    cdef Py_ssize_t _sealed_size(self) noexcept:
        """What a closed or sealed segment is cut to: its frames and the rest
        of their last page (at least the 8 bytes after them), so that a
        reader in another process reading the zero length after the last
        frame never touches a page past the end of the file (SIGBUS)."""
        cdef Py_ssize_t page = _mmap.PAGESIZE
        return min(self.size, (self.wpos + 8 + page - 1) // page * page)

    # -- tail.ctl (ff_tail.h, docs/latency.md) --------------------------------------------

    cdef _ctl_open(self):
        """Map tail.ctl (made on the first open) and publish the state of this
        open; a reader attaches once the magic is there.  Readers that wait
        on it keep their map across reopens (the same file: never replaced)."""
        cdef Log log = self.log
        cdef char *c
        fname = _os.path.join(self.path, 'tail.ctl')
        try:
            fd = _os.open(fname, _os.O_RDWR | _os.O_CREAT, 0o644)
        except OSError as exc:
            _logger.warning('fastflow: %s: no tail.ctl (%s): other processes cannot tail '
                            'this log', self.path, exc)
            return
        try:
            if _os.fstat(fd).st_size < FF_TAIL_CTL_SIZE:
                _os.ftruncate(fd, FF_TAIL_CTL_SIZE)
                _allocate(fd, 0, FF_TAIL_CTL_SIZE)
            mm = _mmap.mmap(fd, FF_TAIL_CTL_SIZE)
        except OSError as exc:
            _logger.warning('fastflow: %s: tail.ctl could not be mapped (%s): other processes '
                            'cannot tail this log', self.path, exc)
            return
        finally:
            _os.close(fd)
        self.ctl_mm = mm
        PyObject_GetBuffer(mm, &self.ctl_view, PyBUF_WRITABLE)
        c = <char *>self.ctl_view.buf
        _wr32(c + FF_TAIL_VERSION_OFF, FF_TAIL_VERSION)
        _wr32(c + FF_TAIL_NOTIFY, 1 if self.notify else 0)
        ff_ctl_store64(c, FF_TAIL_PID, _os.getpid())
        ff_ctl_store64(c, FF_TAIL_EPOCH, ff_ctl_load64(c, FF_TAIL_EPOCH) + 1)
        ff_ctl_store64(c, FF_TAIL_FIRST_BASE, self.bases[0] if self.bases else self.live_base)
        ff_ctl_store64(c, FF_TAIL_LIVE_BASE, self.live_base)
        ff_ctl_store64(c, FF_TAIL_FIRST_SEQ,
                       log.idx[log.ihead].seq if log.icount else log._last_seq + 1)
        ff_ctl_store64(c, FF_TAIL_LAST_SEQ, log._last_seq)
        ff_ctl_store64(c, FF_TAIL_CLOSED, 0)
        # readers asleep before this open count themselves in again when
        # their wait times out (one killed while asleep is not counted forever)
        _wr32(c + FF_TAIL_WAITERS, 0)
        # the magic "FFTAIL01" last: its first half by a release store
        _wr32(c + FF_TAIL_MAGIC + 4, 0x31304c49)             # "IL01"
        ff_publish32(c + FF_TAIL_MAGIC, 0x41544646)          # "FFTA"
        self.ctl = c
        if self.notify:
            ff_tail_wake(c)

    cdef _ctl_close(self):
        if self.ctl != NULL:
            self.ctl = NULL
            PyBuffer_Release(&self.ctl_view)
            try:
                self.ctl_mm.close()
            except Exception:
                pass
            self.ctl_mm = None

    # -- cursors -----------------------------------------------------------------------

    def load_cursors(self):
        fname = _os.path.join(self.path, 'cursors.json')
        try:
            with open(fname, 'rb') as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or not all(
                    isinstance(k, str) and isinstance(v, int) for k, v in d.items()):
                raise ValueError('not an object of int cursors')
        except ValueError as exc:
            raise CorruptLogError('{}: {}'.format(fname, exc)) from None
        return d

    def save_cursors(self, dict cursors):
        self._write_file(_os.path.join(self.path, 'cursors.json'),
                         json.dumps(cursors, sort_keys=True).encode(), False,
                         self.policy != FSYNC_NEVER, 'saving the cursors')

    def abort(self):
        """Release everything of a failed open, writing nothing."""
        self._ctl_close()
        self._stop_flusher()
        self._unmap()
        if self.file is not None:
            self.file.close()
            self.file = None
        self._unlock()

    def close(self):
        self._stop_flusher()
        try:
            if self.policy != FSYNC_NEVER:
                self.sync(True)
            self._unmap()
            if self.file is not None:
                self.file.truncate(self._sealed_size())
                self.file.close()
                self.file = None
            self.write_meta(None, True)
            self._sync_pending()
        finally:
            if self.ctl != NULL:
                ff_ctl_store64(self.ctl, FF_TAIL_CLOSED, 1)
                if self.notify:
                    ff_tail_wake(self.ctl)
            self._ctl_close()
            self._unlock()

    def flush(self):
        """Everything written so far made durable now (any policy)."""
        self.sync(True)
        self.write_meta(None, True)
        self._sync_pending()

    def __dealloc__(self):
        if self.ctl != NULL:
            PyBuffer_Release(&self.ctl_view)
            self.ctl = NULL
        if self.mapped:
            PyBuffer_Release(&self.view)
            self.mapped = False
        if self.lock_fd >= 0:
            _os.close(self.lock_fd)
            self.lock_fd = -1
