# Columnar export and import of a log (included by core.pyx, after event.pyx:
# a stream's records are CloudEvents records).  The contract is docs/log.md,
# "Columns"; the pure-Python twin is fastflow/_ref/log.py.
#
# numpy is optional for fastflow: it is imported on the first call.  The
# arrays are made with numpy.empty and filled here, through their buffers,
# in C loops over the log's index: no Python object per record.

from cpython.buffer cimport PyBUF_STRIDES, PyBuffer_IsContiguous
from cpython.buffer cimport PyBUF_RECORDS_RO
from libc.stdint cimport INT64_MAX, int8_t, int16_t

_np = None


def _numpy():
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            raise ImportError('columns need numpy, which is not installed: pip install numpy '
                              '(fastflow does not depend on it otherwise)') from None
        _np = numpy
    return _np


class Columns:
    """Records of a log as numpy arrays (``Log.columns``): ``seq``, ``ts``
    (append time), ``time`` (producer time), ``subject_id`` (int32, into
    ``subjects``, a tuple of str), ``offsets`` (int64, len + 1) into the
    one ``payload`` buffer (uint8); ``lost`` (records from the requested
    seq up to the first readable one that are gone) and ``next_seq`` (where
    the next export starts)."""

    __slots__ = ('seq', 'ts', 'time', 'subject_id', 'subjects', 'offsets', 'payload', 'lost',
                 'next_seq')

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
            raise IndexError('columns index {} out of range for length {}'.format(i, n))
        return memoryview(self.payload)[int(self.offsets[j]):int(self.offsets[j + 1])]

    def view(self, dtype):
        """``payload`` as a structured numpy array of ``dtype``, one element
        per record, without a copy; every payload must have
        ``dtype.itemsize`` bytes (``ValueError`` naming the first that has
        not)."""
        np = _numpy()
        dt = np.dtype(dtype)
        if dt.itemsize == 0:
            raise ValueError('view: dtype {} has no bytes'.format(dt))
        sizes = np.diff(self.offsets)
        bad = np.flatnonzero(sizes != dt.itemsize)
        if len(bad):
            i = int(bad[0])
            raise ValueError('view: record at index {} (seq {}) has {} bytes, dtype {} needs {} '
                             '({} of {} records differ)'.format(
                                 i, int(self.seq[i]), int(sizes[i]), dt, dt.itemsize,
                                 len(bad), len(sizes)))
        return self.payload[:len(sizes) * dt.itemsize].view(dt)

    def __repr__(self):
        n = len(self.seq)
        return 'Columns({} records, seq {}..{}, {} subjects, {} payload bytes, lost={})'.format(
            n, int(self.seq[0]) if n else '-', int(self.seq[n - 1]) if n else '-',
            len(self.subjects), len(self.payload), self.lost)


cdef inline char *_wbuf(object arr, Py_buffer *view) except NULL:
    """The writable buffer of a fresh numpy array (released by the caller)."""
    PyObject_GetBuffer(arr, view, PyBUF_WRITABLE)
    return <char *>view.buf


cdef inline Py_ssize_t _event_data_off(const char *p, Py_ssize_t n) noexcept:
    """Where the data of CloudEvents record ``p[:n]`` starts (-1: not one)."""
    cdef Py_ssize_t off
    if n < EV_HEADER:
        return -1
    off = (EV_HEADER + (EV_GENID if <uint8_t>p[1] & EVF_GENID else _rd16(p + 4)) + _rd16(p + 6)
           + _rd16(p + 8) + _rd16(p + 10) + _rd32(p + 12))
    return off if off <= n else -1


cdef object _log_columns(Log log, object start, object seq, object time, object stop,
                         object limit, object filter, bint events):
    cdef Parsed ps
    cdef PTok pt[MAX_TOKENS]
    cdef bint filtered
    cdef Py_ssize_t k, k0, nsel, total, i, off, dl
    cdef int64_t lo, first, stopseq, next_seq, lim, nxt
    cdef LogEntry *e
    cdef int32_t *cmap = NULL
    cdef int32_t nsub
    cdef Py_buffer vs[6]
    cdef int nv = 0
    cdef int64_t *oseq
    cdef int64_t *ots
    cdef int64_t *otime
    cdef int32_t *osid
    cdef int64_t *ooff
    cdef char *opay
    cdef const char *rp
    cdef tuple stamp
    np = _numpy()
    log._check_open()
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError('limit must be an int >= 0 or None, got {!r}'.format(limit))
    if stop is not None and (not isinstance(stop, int) or isinstance(stop, bool) or stop < 0):
        raise ValueError('stop must be a seq (an int >= 0) or None, got {!r}'.format(stop))
    pos = log.seek(start, seq=seq, time=time)
    lo = log._lo()
    stopseq = log._last_seq if stop is None else min(<int64_t>stop - 1, log._last_seq)
    lim = (1 << 62) if limit is None else <int64_t>limit
    first = pos.seq
    lost = pos.lost
    if seq is not None and seq < lo:
        lost = max(0, min(lo, stopseq + 1) - max(<int64_t>seq, 1))
    filtered = log._filter_prepare(filter, &ps, pt)
    while True:
        # pass 1: what is selected (count, payload bytes, the subject table)
        stamp = (log.habs, log.icount, log._last_seq, log.agen, log.repoch, log.ideleted)
        k0 = k = log._find(first)
        nsel = 0
        total = 0
        next_seq = first
        subjects = []
        free(cmap)
        cmap = <int32_t *>malloc((log.sused + 1) * sizeof(int32_t))
        if cmap == NULL:
            raise MemoryError()
        memset(cmap, 0xff, (log.sused + 1) * sizeof(int32_t))
        nsub = 0
        try:
            while k < log.icount and nsel < lim:
                e = log._at(k)
                if e.seq > stopseq:
                    break
                if not (e.sid & ENTRY_DELETED) and (not filtered or log._filter_ok(
                        e.sid, pt, ps.ntok)):
                    if events:
                        off = _event_data_off(log.arena + e.pos, e.len)
                        if off < 0:
                            raise ValueError('record {} is not a CloudEvents record (a stream '
                                             'of a Flow holds them; events=False exports the '
                                             'stored bytes)'.format(e.seq))
                        total += e.len - off
                    else:
                        total += e.len
                    if cmap[e.sid] < 0:
                        cmap[e.sid] = nsub
                        nsub += 1
                        subjects.append(<object>log.subj[e.sid].name)
                    nsel += 1
                next_seq = e.seq + 1
                k += 1
            if k >= log.icount or log._at(k).seq > stopseq:
                next_seq = max(next_seq, stopseq + 1)
            next_seq = min(next_seq, log._last_seq + 1)
            a_seq = np.empty(nsel, np.int64)
            a_ts = np.empty(nsel, np.int64)
            a_time = np.empty(nsel, np.int64)
            a_sid = np.empty(nsel, np.int32)
            a_off = np.empty(nsel + 1, np.int64)
            a_pay = np.empty(total, np.uint8)
            if stamp != (log.habs, log.icount, log._last_seq, log.agen, log.repoch,
                         log.ideleted):
                continue            # the allocations ran Python that changed the log
            # pass 2: fill the arrays
            nv = 0
            oseq = <int64_t *>_wbuf(a_seq, &vs[0])
            nv = 1
            ots = <int64_t *>_wbuf(a_ts, &vs[1])
            nv = 2
            otime = <int64_t *>_wbuf(a_time, &vs[2])
            nv = 3
            osid = <int32_t *>_wbuf(a_sid, &vs[3])
            nv = 4
            ooff = <int64_t *>_wbuf(a_off, &vs[4])
            nv = 5
            opay = _wbuf(a_pay, &vs[5])
            nv = 6
            k = k0
            i = 0
            total = 0
            ooff[0] = 0
            while i < nsel:
                e = log._at(k)
                k += 1
                if e.sid & ENTRY_DELETED or (filtered and not log._filter_ok(e.sid, pt, ps.ntok)):
                    continue
                rp = log.arena + e.pos
                dl = e.len
                if events:
                    off = _event_data_off(rp, dl)
                    rp += off
                    dl -= off
                memcpy(opay + total, rp, dl)
                total += dl
                ooff[i + 1] = total
                oseq[i] = e.seq
                ots[i] = e.ts
                otime[i] = e.ptime
                osid[i] = cmap[e.sid]
                i += 1
            return Columns(a_seq, a_ts, a_time, a_sid, subjects, a_off, a_pay, lost, next_seq)
        finally:
            while nv > 0:
                nv -= 1
                PyBuffer_Release(&vs[nv])
            free(cmap)
            cmap = NULL


cdef int _int_column(object arr, str name, Py_ssize_t n, Py_buffer *view, int *kind) except -1:
    """Get the buffer of an integer column of ``n`` values (kind: its
    itemsize, negative when signed)."""
    cdef bytes fmt
    cdef char c
    try:
        PyObject_GetBuffer(arr, view, PyBUF_RECORDS_RO)
    except (TypeError, BufferError):
        raise TypeError('{} must be an integer array (numpy, array.array), not {}'.format(
            name, type(arr).__name__)) from None
    if view.ndim != 1 or not PyBuffer_IsContiguous(view, b'C'):
        PyBuffer_Release(view)
        raise ValueError('{} must be a contiguous 1-d array'.format(name))
    fmt = view.format if view.format != NULL else b'B'
    c = fmt[len(fmt) - 1]
    if fmt[:1] in (b'>', b'!') or c not in b'bBhHiIlLqQ' or view.itemsize not in (1, 2, 4, 8):
        PyBuffer_Release(view)
        raise TypeError('{} must hold native integers, not format {!r}'.format(
            name, fmt.decode('ascii', 'replace')))
    if view.shape[0] != n:
        PyBuffer_Release(view)
        raise ValueError('{} has {} values, the payloads are {}'.format(name, view.shape[0], n))
    kind[0] = -view.itemsize if c in b'bhilq' else view.itemsize
    return 0


cdef inline int64_t _int_at(const char *p, int kind, Py_ssize_t i) noexcept:
    if kind == -1:
        return (<const int8_t *>p)[i]
    if kind == 1:
        return (<const uint8_t *>p)[i]
    if kind == -2:
        return (<const int16_t *>p)[i]
    if kind == 2:
        return (<const uint16_t *>p)[i]
    if kind == -4:
        return (<const int32_t *>p)[i]
    if kind == 4:
        return (<const uint32_t *>p)[i]
    if kind == 8 and (<const uint64_t *>p)[i] > <uint64_t>INT64_MAX:
        return -1
    return (<const int64_t *>p)[i]


cdef object _log_append_columns(Log log, object payload, object offsets, object subject,
                                object subject_id, object subjects, object time):
    """Log.append_columns (docstring there)."""
    cdef Py_buffer pview, oview, sview, tview
    cdef bint has_o = False, has_s = False, has_t = False
    cdef Py_ssize_t n, i, width = 0, j, nt
    cdef const int64_t *offs
    cdef const int64_t *ptimes = NULL
    cdef int64_t ptime = 0, now, first, dlen
    cdef int skind = 0
    cdef Int64Array sizes
    cdef int32_t *ids = NULL            # table index of each record
    cdef int32_t *tsid = NULL           # the log's sid of each table entry (-1: unused)
    cdef const char **tp = NULL         # each table entry's UTF-8 bytes, length, hash
    cdef Py_ssize_t *tn = NULL
    cdef uint32_t *th = NULL
    cdef const char *p
    cdef Py_ssize_t sn
    cdef Parsed ps
    cdef int64_t v
    cdef const char *base
    cdef Int64Array woffs = None
    if type(payload) is Columns:
        cols = payload
        if offsets is not None:
            raise ValueError('append_columns(columns) takes no offsets: they are the columns\'')
        payload = cols.payload
        offsets = cols.offsets
        if subject is None and subject_id is None and subjects is None:
            subject_id = cols.subject_id
            subjects = cols.subjects
        if time is None:
            time = cols.time
    if subject is not None and (subject_id is not None or subjects is not None):
        raise ValueError('append_columns: give subject= (one for every record) or '
                         'subject_id= with subjects= (the table), not both')
    if subject is None and (subject_id is None or subjects is None):
        raise ValueError('append_columns: give subject= (one for every record) or '
                         'subject_id= and subjects= (the table)')
    if subject is not None and not isinstance(subject, (str, bytes)):
        raise TypeError('subject must be str or bytes, not {}'.format(type(subject).__name__))
    if isinstance(offsets, list):
        offsets = _array('q', offsets)
    try:
        PyObject_GetBuffer(payload, &pview, PyBUF_RECORDS_RO)
    except (TypeError, BufferError):
        raise TypeError('payload must be a buffer (bytes, numpy array), not {}'.format(
            type(payload).__name__)) from None
    try:
        if not PyBuffer_IsContiguous(&pview, b'C'):
            raise ValueError('payload must be C-contiguous')
        base = <const char *>pview.buf
        if offsets is None:
            # fixed width: one record per row (a structured array, a 2-d array)
            if pview.ndim == 0 or (pview.ndim == 1 and pview.itemsize == 1):
                raise ValueError('payload: a buffer of single bytes needs offsets (or give a '
                                 'structured or 2-d array: one record per row)')
            n = pview.shape[0]
            width = pview.len // n if n else 0
            woffs = Int64Array.new(n + 1)
            for i in range(n + 1):
                woffs.data[i] = i * width
            woffs.n = n + 1
            offs = woffs.data
        else:
            try:
                PyObject_GetBuffer(offsets, &oview, PyBUF_RECORDS_RO)
            except (TypeError, BufferError):
                raise TypeError('offsets must be a buffer of int64 (numpy int64, array("q")) '
                                'or a list of ints, not {}'.format(
                                    type(offsets).__name__)) from None
            has_o = True
            if oview.itemsize != 8 or oview.format == NULL or \
                    oview.format[0] not in (b'q', b'l', b'<', b'=') or oview.ndim != 1 or \
                    not PyBuffer_IsContiguous(&oview, b'C'):
                raise TypeError('offsets must be a contiguous 1-d array of int64')
            n = oview.shape[0] - 1
            if n < 0:
                raise ValueError('offsets needs at least one entry (len(payloads) + 1)')
            offs = <const int64_t *>oview.buf
        sizes = Int64Array.new(max(n, 1))
        for i in range(n):
            if offs[i] < 0 or offs[i + 1] < offs[i] or offs[i + 1] > pview.len:
                raise ValueError('offsets[{}:{}] = {}..{} is not a slice of the {}-byte payload '
                                 'buffer'.format(i, i + 2, offs[i], offs[i + 1], pview.len))
            dlen = offs[i + 1] - offs[i]
            if dlen > log.max_event_size:
                raise EventTooLarge('payload {}: {} bytes exceeds max_event_size={}'.format(
                    i, dlen, log.max_event_size))
            sizes.data[i] = dlen
        sizes.n = n
        # the producer times
        if time is None or time is 0:
            ptime = 0
        elif isinstance(time, int) and not isinstance(time, bool):
            ptime = _ptime(time)
        else:
            try:
                PyObject_GetBuffer(time, &tview, PyBUF_RECORDS_RO)
            except (TypeError, BufferError):
                raise TypeError('time must be an int (ns) or an int64 array, not {}'.format(
                    type(time).__name__)) from None
            has_t = True
            if tview.itemsize != 8 or tview.format == NULL or \
                    tview.format[0] not in (b'q', b'l', b'<', b'=') or tview.ndim != 1 or \
                    not PyBuffer_IsContiguous(&tview, b'C'):
                raise TypeError('time must be a contiguous 1-d array of int64 (ns)')
            if tview.shape[0] != n:
                raise ValueError('time has {} values, the payloads are {}'.format(
                    tview.shape[0], n))
            ptimes = <const int64_t *>tview.buf
        # the subjects: a table of (bytes, length, hash), one index per record
        if subject is not None:
            table = (subject,)
        else:
            if isinstance(subjects, (str, bytes)):
                raise TypeError('subjects must be a sequence of subjects (the table), not one '
                                '{}'.format(type(subjects).__name__))
            table = tuple(subjects)
        nt = len(table)
        tp = <const char **>malloc((nt + 1) * sizeof(char *))
        tn = <Py_ssize_t *>malloc((nt + 1) * sizeof(Py_ssize_t))
        th = <uint32_t *>malloc((nt + 1) * sizeof(uint32_t))
        tsid = <int32_t *>malloc((nt + 1) * sizeof(int32_t))
        ids = <int32_t *>malloc((n + 1) * sizeof(int32_t))
        if tp == NULL or tn == NULL or th == NULL or tsid == NULL or ids == NULL:
            raise MemoryError()
        for j in range(nt):
            s = table[j]
            if not isinstance(s, (str, bytes)):
                raise TypeError('subjects[{}] must be str or bytes, not {}'.format(
                    j, type(s).__name__))
            try:
                as_utf8(s, &p, &sn, False)
                parse_subject(p, sn, &ps, False, s)
            except SubjectError as exc:
                raise SubjectError('{} (subjects[{}])'.format(exc, j) if subject is None
                                   else str(exc)) from None
            tp[j] = p
            tn[j] = sn
            th[j] = <uint32_t>ff_hash(p, sn, _SEED)
            tsid[j] = -1
        if subject is not None:
            memset(ids, 0, (n + 1) * sizeof(int32_t))
        else:
            _int_column(subject_id, 'subject_id', n, &sview, &skind)
            has_s = True
            for i in range(n):
                v = _int_at(<const char *>sview.buf, skind, i)
                if not 0 <= v < nt:
                    raise ValueError('subject_id[{}] = {} is not an index of the {}-subject '
                                     'table'.format(i, (<object>subject_id)[i], nt))
                ids[i] = <int32_t>v
        if log.store is not None:
            for i in range(n):
                if REC_HEADER + log.store.frame_extra + tn[ids[i]] + sizes.data[i] > \
                        log.store.segment_size:
                    raise EventTooLarge('payload {}: record of {} bytes exceeds '
                                        'segment_size={}'.format(
                                            i, REC_HEADER + log.store.frame_extra + tn[ids[i]]
                                            + sizes.data[i], log.store.segment_size))
        if n == 0:
            return (log._last_seq + 1, log._last_seq)
        log._enter()
        try:
            return _columns_store(log, table, ids, tsid, tp, tn, th, base, offs, sizes, ptime,
                                  ptimes)
        finally:
            log.busy -= 1
    finally:
        PyBuffer_Release(&pview)
        if has_o:
            PyBuffer_Release(&oview)
        if has_s:
            PyBuffer_Release(&sview)
        if has_t:
            PyBuffer_Release(&tview)
        free(ids)
        free(tsid)
        free(tp)
        free(tn)
        free(th)


cdef tuple _columns_store(Log log, tuple table, int32_t *ids, int32_t *tsid, const char **tp,
                          Py_ssize_t *tn, uint32_t *th, const char *base, const int64_t *offs,
                          Int64Array sizes, int64_t ptime, const int64_t *ptimes):
    """Store validated columns: admitted as a whole (discard='new'), then
    the C loop of append_batch, or the per-record path (files, limits)."""
    cdef Py_ssize_t n = sizes.n, i, nt = len(table)
    cdef int64_t now = _now_ns(), first, total
    cdef int32_t *sids = NULL
    if log.max_age_ns:
        log._expire(now, AGE_EVICT_STEP)
    if log.discard_mode == DISCARD_NEW:
        _columns_admit(log, ids, nt, tp, tn, th, sizes)
    if log.store is not None:
        total = 0
        for i in range(n):
            total += (REC_HEADER + log.store.frame_extra + tn[ids[i]]) * \
                (2 if log.max_per_subject else 1) + sizes.data[i]
        log.store.reserve_ahead(total)
    first = log._last_seq + 1
    if log.discard_mode == DISCARD_OLD and log.max_events and not log.max_bytes \
            and not log.max_per_subject:
        log._evict_for(min(log.count, log.count + n - log.max_events))
    if log.icount + n > log.icap:
        log._make_room(n)
    if log._run_ok(n):
        for i in range(n):
            if tsid[ids[i]] < 0:
                tsid[ids[i]] = log._sid_intern(table[ids[i]], tp[ids[i]], tn[ids[i]], th[ids[i]])
        if nt == 1:
            log._append_run(tsid[0], NULL, None, base, offs, sizes, ptime, ptimes, now)
        else:
            sids = <int32_t *>malloc(n * sizeof(int32_t))
            if sids == NULL:
                raise MemoryError()
            try:
                for i in range(n):
                    sids[i] = tsid[ids[i]]
                log._append_run(-1, sids, None, base, offs, sizes, ptime, ptimes, now)
            finally:
                free(sids)
    else:
        try:
            for i in range(n):
                log._append_known(table[ids[i]], tp[ids[i]], tn[ids[i]], th[ids[i]],
                                  base + offs[i], sizes.data[i],
                                  ptime if ptimes == NULL else ptimes[i], now)
        finally:
            if log.store is not None:
                log.store.after_append()
    if FASTFLOW_DEBUG and log.icount < 2000:
        log._check()
    return (first, log._last_seq)


cdef int _columns_admit(Log log, int32_t *ids, Py_ssize_t nt, const char **tp, Py_ssize_t *tn,
                        uint32_t *th, Int64Array sizes) except -1:
    """discard='new': raise LogFullError unless every record fits."""
    cdef Py_ssize_t n = sizes.n, i
    cdef int64_t c, b
    cdef int64_t *per = NULL
    cdef int32_t sid
    if log.max_age_ns and (log.max_events or log.max_bytes or log.max_per_subject):
        log._expire(_now_ns(), 1 << 62)     # expired records never cause a rejection
    c = log.count
    b = log.nbytes
    for i in range(n):
        c += 1
        b += tn[ids[i]] + sizes.data[i]
        if log.max_events and c > log.max_events:
            log.n_rejected += n
            raise LogFullError("log full: max_events={} reached at payload {}; nothing of the "
                               "columns was stored (discard='new')".format(log.max_events, i))
        if log.max_bytes and b > log.max_bytes:
            log.n_rejected += n
            raise LogFullError("log full: max_bytes={} reached at payload {}; nothing of the "
                               "columns was stored (discard='new')".format(log.max_bytes, i))
    if log.max_per_subject:
        per = <int64_t *>malloc((nt + 1) * sizeof(int64_t))
        if per == NULL:
            raise MemoryError()
        try:
            for i in range(nt):
                sid = log._sid_find(tp[i], tn[i], th[i])
                per[i] = log.subj[sid].count if sid >= 0 else 0
            for i in range(n):
                per[ids[i]] += 1
                if per[ids[i]] > log.max_per_subject:
                    log.n_rejected += n
                    raise LogFullError("log full: max_per_subject={} reached for {!r} at payload "
                                       "{}; nothing of the columns was stored "
                                       "(discard='new')".format(
                                           log.max_per_subject,
                                           PyUnicode_DecodeUTF8(tp[ids[i]], tn[ids[i]], 'strict'),
                                           i))
        finally:
            free(per)
    return 0
