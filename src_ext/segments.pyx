# Segment files of a file-backed log (included by core.pyx); the format is
# in docs/log.md.
#
# The newest segment is preallocated and written through a shared memory
# map: an append is a memcpy and a CRC32C, and the bytes are in the page
# cache as soon as it returns (they survive the process being killed);
# msync makes them durable per the fsync policy.  Opening replays the
# segments through the log's own append path (same limits, same evictions),
# so the in-memory state after a reopen is the state before it.

import mmap as _mmap
import os as _os

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_WRITABLE, PyBUF_SIMPLE

ff_crc32c_init()

cdef enum:
    REC_HEADER = 36                 # bytes before the subject
    KIND_RECORD = 1
    KIND_PURGE = 2
    IDX_EVERY = 4096                # records between sparse index entries

cdef enum FsyncPolicy:
    FSYNC_ALWAYS = 0
    FSYNC_INTERVAL = 1
    FSYNC_NEVER = 2


cdef inline void _put_u32(char *p, uint32_t v) noexcept:
    memcpy(p, &v, 4)

cdef inline uint32_t _get_u32(const char *p) noexcept:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v

cdef inline void _put_i64(char *p, int64_t v) noexcept:
    memcpy(p, &v, 8)

cdef inline int64_t _get_i64(const char *p) noexcept:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


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


@cython.final
cdef class SegmentStore:
    cdef Log log
    cdef object path
    cdef FsyncPolicy policy
    cdef double interval
    cdef Py_ssize_t segment_size
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
    cdef int64_t live_base
    cdef int64_t live_records
    cdef list live_index                # (seq, ts, offset) every IDX_EVERY records
    cdef int64_t last_sync_ns
    cdef int64_t interval_ns
    # counters
    cdef int64_t n_fsyncs
    cdef int64_t n_truncated
    cdef int64_t n_corrupt
    cdef int64_t n_deleted_segments

    def __init__(self, Log log, path, fsync, fsync_interval, segment_size, strict):
        if fsync not in ('always', 'interval', 'never'):
            raise ValueError("fsync must be 'always', 'interval' or 'never', got {!r}".format(fsync))
        if not isinstance(fsync_interval, (int, float)) or fsync_interval <= 0:
            raise ValueError('fsync_interval must be a number of seconds > 0, got {!r}'.format(
                fsync_interval))
        if not isinstance(segment_size, int) or segment_size < 4096:
            raise ValueError('segment_size must be an int >= 4096, got {!r}'.format(segment_size))
        self.log = log
        self.path = _os.fspath(path)
        self.policy = {'always': FSYNC_ALWAYS, 'interval': FSYNC_INTERVAL,
                       'never': FSYNC_NEVER}[fsync]
        self.interval = fsync_interval
        self.interval_ns = <int64_t>(fsync_interval * 1e9)
        self.segment_size = segment_size
        self.strict = strict
        self.bases = []
        self.live_index = []
        _os.makedirs(self.path, exist_ok=True)

    def stats(self):
        return {'segments': len(self.bases), 'fsyncs': self.n_fsyncs,
                'truncated_bytes': self.n_truncated, 'corrupt_records': self.n_corrupt,
                'deleted_segments': self.n_deleted_segments}

    # -- opening ---------------------------------------------------------------------

    def load(self):
        names = sorted(n for n in _os.listdir(self.path) if n.endswith('.seg'))
        bases = []
        for n in names:
            try:
                bases.append(int(n[:len(n) - 4]))
            except ValueError:
                raise CorruptLogError('{}: not a segment file name'.format(
                    _os.path.join(self.path, n))) from None
        self.bases = bases
        for i, b in enumerate(bases):
            self._load_segment(b, i == len(bases) - 1,
                               bases[i + 1] if i + 1 < len(bases) else 0)
        if not bases:
            self._open_live(self.log._last_seq + 1, 0)

    cdef _load_segment(self, int64_t base, bint newest, int64_t next_base):
        cdef const char *p
        cdef Py_ssize_t n, off = 0, rlen, slen
        cdef uint32_t crc
        cdef int kind
        cdef int64_t seq, ts, ptime
        cdef bint bad = False
        cdef bytes data
        fname = _os.path.join(self.path, _seg_name(base))
        with open(fname, 'rb') as f:
            data = f.read()
        p = data
        n = len(data)
        reason = ''
        while off + 4 <= n:
            rlen = _get_u32(p + off)
            if rlen == 0:
                break
            if rlen < REC_HEADER or off + rlen > n:
                bad = True
                reason = 'record length {} out of bounds'.format(rlen)
                break
            crc = ff_crc32c(0, p + off + 8, rlen - 8)
            if crc != _get_u32(p + off + 4):
                bad = True
                reason = 'checksum mismatch'
                break
            seq = _get_i64(p + off + 8)
            ts = _get_i64(p + off + 16)
            ptime = _get_i64(p + off + 24)
            slen = (<uint8_t>p[off + 32]) | ((<uint8_t>p[off + 33]) << 8)
            kind = <uint8_t>p[off + 34]
            if REC_HEADER + slen > rlen or seq <= 0:
                bad = True
                reason = 'malformed header'
                break
            if kind == KIND_RECORD:
                if seq <= self.log._last_seq:
                    bad = True
                    reason = 'sequence {} after {}'.format(seq, self.log._last_seq)
                    break
                self.log._load_record(seq, ts, ptime, p + off + REC_HEADER, slen,
                                      p + off + REC_HEADER + slen, rlen - REC_HEADER - slen)
                if newest:
                    self.live_records += 1
                    if self.live_records % IDX_EVERY == 1:
                        self.live_index.append((seq, ts, off))
            elif kind == KIND_PURGE:
                pattern = (p + off + REC_HEADER)[:slen].decode('utf-8') if slen else None
                self.log._load_gap(seq)
                self.log._purge(pattern, ts)
            else:
                bad = True
                reason = 'unknown record kind {}'.format(kind)
                break
            off += rlen
        if bad:
            if newest:
                _logger.warning('%s: torn or corrupt tail at offset %d (%s): %d bytes '
                                'truncated, never served', fname, off, reason, n - off)
                self.n_truncated += n - off
            else:
                msg = '{}: offset {}: {}'.format(fname, off, reason)
                if self.strict:
                    raise CorruptLogError(msg)
                lost = max(0, next_base - 1 - self.log._last_seq)
                _logger.error('%s; the rest of the segment (%d records) is skipped', msg, lost)
                self.n_corrupt += max(1, lost)
        if not newest:
            if next_base:
                self.log._load_gap(next_base - 1)
            return
        # the newest segment stays the live one: continue writing after the
        # last good record, and clear what lies beyond it
        self._open_live(base, off)

    cdef _open_live(self, int64_t base, Py_ssize_t wpos):
        fname = _os.path.join(self.path, _seg_name(base))
        size = max(self.segment_size, wpos)
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
        if wpos < cur:
            # a reopened segment: clear what lay beyond the last good record
            # (a fresh one is all zeros already: leave its pages untouched)
            memset(self.base_ptr + wpos, 0, cur - wpos)
        self.wpos = wpos
        self.synced = wpos
        self.live_base = base
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

    cdef int _room(self, Py_ssize_t need, int64_t seq) except -1:
        if self.wpos + need + 4 <= self.size:
            return 0
        self._seal()
        self._open_live(seq, 0)
        if need + 4 > self.size:
            # a record bigger than a segment gets a segment of its own size
            self._unmap()
            _os.ftruncate(self.file.fileno(), need + 4)
            self.file.close()
            self._open_live(seq, 0)
        return 0

    cdef int write_record(self, int64_t seq, int64_t ts, int64_t ptime, const char *s,
                          Py_ssize_t slen, const char *d, Py_ssize_t dlen) except -1:
        cdef Py_ssize_t rlen = REC_HEADER + slen + dlen
        cdef char *p
        self._room(rlen, seq)
        p = self.base_ptr + self.wpos
        _put_i64(p + 8, seq)
        _put_i64(p + 16, ts)
        _put_i64(p + 24, ptime)
        p[32] = <char>(slen & 0xff)
        p[33] = <char>(slen >> 8)
        p[34] = KIND_RECORD
        p[35] = 0
        memcpy(p + REC_HEADER, s, slen)
        memcpy(p + REC_HEADER + slen, d, dlen)
        _put_u32(p + 4, ff_crc32c(0, p + 8, rlen - 8))
        # the length last: a record is complete once its length is there
        _put_u32(p, <uint32_t>rlen)
        self.live_records += 1
        if self.live_records % IDX_EVERY == 1:
            self.live_index.append((seq, ts, self.wpos))
        self.wpos += rlen
        return 0

    def write_purge(self, int64_t last_seq, int64_t up_to, pattern):
        cdef bytes pat = pattern.encode('utf-8') if isinstance(pattern, str) else (pattern or b'')
        cdef Py_ssize_t slen = len(pat), rlen = REC_HEADER + slen
        cdef char *p
        self._room(rlen, last_seq + 1)
        p = self.base_ptr + self.wpos
        _put_i64(p + 8, last_seq)
        _put_i64(p + 16, up_to)
        _put_i64(p + 24, 0)
        p[32] = <char>(slen & 0xff)
        p[33] = <char>(slen >> 8)
        p[34] = KIND_PURGE
        p[35] = 0
        memcpy(p + REC_HEADER, <const char *>pat, slen)
        _put_u32(p + 4, ff_crc32c(0, p + 8, rlen - 8))
        _put_u32(p, <uint32_t>rlen)
        self.wpos += rlen

    cdef int after_append(self) except -1:
        if self.policy == FSYNC_ALWAYS:
            self.sync(True)
        elif self.policy == FSYNC_INTERVAL:
            if ff_now_ns() - self.last_sync_ns >= self.interval_ns:
                self.sync(True)
        if len(self.bases) > 1:
            self._drop_old_segments()
        return 0

    cpdef sync(self, bint force):
        cdef Py_ssize_t start
        if not self.mapped or self.wpos == self.synced:
            self.last_sync_ns = ff_now_ns()
            return
        if self.policy == FSYNC_NEVER and not force:
            return
        start = self.synced - self.synced % _mmap.ALLOCATIONGRANULARITY
        self.mm.flush(start, self.wpos - start)
        self.synced = self.wpos
        self.n_fsyncs += 1
        self.last_sync_ns = ff_now_ns()

    cdef _drop_old_segments(self):
        cdef int64_t first = self.log.first_seq
        while len(self.bases) > 1 and self.bases[1] <= first:
            b = self.bases.pop(0)
            for ext in ('.seg', '.idx'):
                try:
                    _os.unlink(_os.path.join(self.path, '{:020d}{}'.format(b, ext)))
                except FileNotFoundError:
                    pass
            self.n_deleted_segments += 1

    cdef _unmap(self):
        if self.mapped:
            PyBuffer_Release(&self.view)
            self.mapped = False
            self.mm.close()

    cdef _seal(self):
        """Close the live segment: flush, cut to its used size, write its
        sparse index."""
        if self.policy != FSYNC_NEVER:
            self.sync(True)
        self._unmap()
        self.file.truncate(self.wpos)
        if self.policy != FSYNC_NEVER:
            _os.fsync(self.file.fileno())
        self.file.close()
        self._write_index(self.live_base, self.live_index)
        self.live_index = []
        self.live_records = 0

    cdef _write_index(self, int64_t base, list entries):
        fname = _os.path.join(self.path, '{:020d}.idx'.format(base))
        tmp = fname + '.tmp'
        body = b''.join(seq.to_bytes(8, 'little') + ts.to_bytes(8, 'little', signed=True) +
                        off.to_bytes(8, 'little') for seq, ts, off in entries)
        with open(tmp, 'wb') as f:
            f.write(body)
            if self.policy != FSYNC_NEVER:
                f.flush()
                _os.fsync(f.fileno())
        _os.replace(tmp, fname)

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
        fname = _os.path.join(self.path, 'cursors.json')
        tmp = fname + '.tmp'
        with open(tmp, 'wb') as f:
            f.write(json.dumps(cursors, sort_keys=True).encode())
            if self.policy != FSYNC_NEVER:
                f.flush()
                _os.fsync(f.fileno())
        _os.replace(tmp, fname)

    def close(self):
        if self.policy != FSYNC_NEVER:
            self.sync(True)
        self._unmap()
        if self.file is not None:
            self.file.close()
            self.file = None

    def __dealloc__(self):
        if self.mapped:
            PyBuffer_Release(&self.view)
            self.mapped = False
