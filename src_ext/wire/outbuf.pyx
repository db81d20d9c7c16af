# A connection's output (OutBuf) and the wire target base (WireTarget): the
# router hands every network subscription the message it is to get as a
# WireMsg and calls its target's ``_write``; each protocol writes it in its
# own format (native_out.pyx, nats_out.pyx).  The router knows no protocol.
#
# Conflation lives here too, once for every protocol: while a connection is
# behind (``OutBuf.behind``), the router hands a conflating target's
# messages to ``OutBuf._keep`` instead of ``_write``; ``flush_kept`` writes
# the latest per (target, subject) through ``_write`` when it can write again.

from cpython.dict cimport PyDict_GetItem
from cpython.unicode cimport PyUnicode_DecodeUTF8

@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class OutBuf:
    """A connection's pending output: frames appended in C, taken by the
    connection once per loop tick (``take()``), written with one syscall.

    ``max_pending`` bounds the bytes waiting here (0 = no limit); a frame
    that would pass it is not added and ``overflow`` is set (the
    connection is then cut as a slow consumer).  ``on_data`` is called
    (no arguments) when the buffer goes from empty to non-empty."""

    def __init__(self, Py_ssize_t max_pending=64 << 20, on_data=None):
        self.max_pending = max_pending
        self.on_data = on_data
        self.kept = {}

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.n

    cdef char *_reserve(self, Py_ssize_t size) except? NULL:
        """Room for ``size`` more bytes, or NULL (and ``overflow``) past the limit."""
        if self.closed:
            self.dropped += 1
            return NULL
        if self.max_pending and self.n + self.kept_bytes + size > self.max_pending:
            self.dropped += 1
            if not self.overflow:
                self.overflow = True
                # nothing may be pending here (the socket holds the rest):
                # make the connection look now, not at its next tick
                if self.n == 0 and self.on_data is not None:
                    self.on_data()
            return NULL
        _grow(<void **>&self.buf, &self.cap, self.n + size, 1, OUTBUF_FIRST)
        return self.buf + self.n

    cdef inline int _wrote(self, Py_ssize_t size, bint was_empty, bint msg) except -1:
        """``size`` bytes were written at the end (after ``_reserve``)."""
        self.n += size
        self.frames += 1
        if msg:
            self.msgs += 1
        if was_empty and self.on_data is not None:
            self.on_data()
        if self.flush_at and self.n >= self.flush_at and self.on_flush is not None:
            self.on_flush()
        return 0

    def write(self, data):
        """Append raw bytes (a text protocol's control lines).  Returns
        False if they were dropped (over ``max_pending`` or closed)."""
        cdef Py_buffer view
        cdef bint was_empty = self.n == 0
        cdef char *p
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            p = self._reserve(view.len)
            if p == NULL:
                return False
            memcpy(p, view.buf, view.len)
            self._wrote(view.len, was_empty, False)
            return True
        finally:
            PyBuffer_Release(&view)

    def nats_msg(self, subject, sid, reply=None, headers=None, data=b''):
        """Append a NATS ``MSG`` (``headers`` None) or ``HMSG`` line with
        its payload.  Returns False if it was dropped."""
        cdef const char *sp
        cdef const char *ip
        cdef const char *rp = NULL
        cdef Py_ssize_t sn, idn, rn = 0
        cdef bytes hb = None
        cdef Py_buffer view
        as_utf8(subject, &sp, &sn, False)
        as_utf8(sid, &ip, &idn, False)
        if reply is not None:
            as_utf8(reply, &rp, &rn, False)
        if headers is not None:
            hb = bytes(headers)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return _nats_msg(self, ip, idn, sp, sn, rp, rn,
                             PyBytes_AS_STRING(hb) if hb is not None else NULL,
                             PyBytes_GET_SIZE(hb) if hb is not None else 0,
                             <const char *>view.buf, view.len) == 1
        finally:
            PyBuffer_Release(&view)

    def frame(self, int op, int flags=0, uint32_t id=0, subject=b'', reply=b'', body=b''):
        """Append one frame (Python use: control frames).  Returns False if
        it was dropped (over ``max_pending`` or closed)."""
        cdef const char *sp
        cdef const char *rp
        cdef Py_ssize_t sn, rn
        cdef Py_buffer view
        as_utf8(subject, &sp, &sn, True) if subject else None
        if not subject:
            sp = NULL
            sn = 0
        if reply:
            as_utf8(reply, &rp, &rn, True)
        else:
            rp = NULL
            rn = 0
        if sn > 65535 or rn > 65535:
            raise ValueError('subject and reply are limited to 65535 bytes')
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            return _native_frame(self, op, flags, id, sp, sn, rp, rn, <const char *>view.buf,
                                 view.len, NULL, 0) == 1
        finally:
            PyBuffer_Release(&view)

    def publish(self, subject, data, source, reply=None, uint32_t id=0, int flags=0):
        """Append a PUB frame of an event with the defaults (a new id,
        ``source`` (str), type = ``subject``) and payload ``data``, in C:
        the client's fast path.  Returns False if it was dropped."""
        cdef const char *sp
        cdef const char *rp = NULL
        cdef const char *srcp
        cdef Py_ssize_t sn, rn = 0, srcn
        cdef Py_buffer view
        as_utf8(subject, &sp, &sn, False)
        if reply is not None:
            as_utf8(reply, &rp, &rn, False)
        as_utf8(source, &srcp, &srcn, False)
        if sn > 65535 or rn > 65535 or srcn > EV_MAX_STRING or srcn == 0:
            raise ValueError('subject, reply and source are limited to 65535 bytes '
                             '(and source must not be empty)')
        if type(data) is bytes:
            return _native_pub(self, sp, sn, rp, rn, srcp, srcn, PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data), id, flags) == 1
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return _native_pub(self, sp, sn, rp, rn, srcp, srcn, <const char *>view.buf,
                                     view.len, id, flags) == 1
        finally:
            PyBuffer_Release(&view)

    def publish_many(self, subject, datas, source):
        """``publish`` of every payload of ``datas`` (a list or tuple of
        bytes) on one subject; returns how many were appended."""
        cdef const char *sp
        cdef const char *srcp
        cdef Py_ssize_t sn, srcn, i, n
        cdef object d
        as_utf8(subject, &sp, &sn, False)
        as_utf8(source, &srcp, &srcn, False)
        if sn > 65535 or srcn > EV_MAX_STRING or srcn == 0:
            raise ValueError('subject and source are limited to 65535 bytes '
                             '(and source must not be empty)')
        if type(datas) is not tuple:
            datas = tuple(datas)
        n = len(datas)
        for i in range(n):
            d = <object>PyTuple_GET_ITEM(datas, i)
            if type(d) is not bytes:
                raise TypeError('datas[{}]: expected bytes, got {}'.format(i, type(d).__name__))
            if not _native_pub(self, sp, sn, NULL, 0, srcp, srcn, PyBytes_AS_STRING(d),
                                     PyBytes_GET_SIZE(d), 0, 0):
                return i
        return n

    def take(self):
        """Everything pending, as one bytes object (the buffer empties)."""
        cdef bytes out
        if self.n == 0:
            return b''
        out = PyBytes_FromStringAndSize(self.buf, self.n)
        self.bytes_out += self.n
        self.n = 0
        if self.cap > 4 * OUTBUF_MIN * 16:   # do not keep a burst's memory
            free(self.buf)
            self.buf = NULL
            self.cap = 0
        return out

    def clear(self):
        self.n = 0

    # -- conflation ---------------------------------------------------------------

    cdef int _keep(self, WireTarget t, WireMsg *m) except -1:
        """Keep ``m`` for conflating target ``t`` while the connection is
        behind: it replaces the message ``t`` keeps for its subject (where
        that one stands), or is kept after the others.  2 if it replaced
        one, 1 if kept, 0 if dropped (closed, or over ``max_pending``:
        ``overflow`` is set, as for a frame)."""
        cdef Py_ssize_t size = m.rec_n + m.data_n + m.reply_n + KEPT_OVERHEAD
        cdef object subject = <object>m.subject_obj
        cdef object key
        cdef PyObject *op
        cdef _Kept k
        cdef bint replace
        if self.closed:
            self.dropped += 1
            return 0
        if type(subject) is not str:
            subject = PyUnicode_DecodeUTF8(m.subject, m.subject_n, NULL)
        key = (t, subject)
        op = PyDict_GetItem(self.kept, key)
        replace = op != NULL
        if replace:
            k = <_Kept>op
            size -= k.size
        if self.max_pending and self.n + self.kept_bytes + size > self.max_pending:
            self.dropped += 1
            if not self.overflow:
                self.overflow = True
                if self.n == 0 and self.on_data is not None:
                    self.on_data()
            return 0
        if not replace:
            k = _Kept.__new__(_Kept)
            k.target = t
            k.subject = subject
            k.size = 0
            self.kept[key] = k
        if m.data != NULL:
            k.record = PyBytes_FromStringAndSize(NULL, m.rec_n + m.data_n)
            memcpy(PyBytes_AS_STRING(k.record), m.rec, m.rec_n)
            memcpy(PyBytes_AS_STRING(k.record) + m.rec_n, m.data, m.data_n)
        else:
            k.record = PyBytes_FromStringAndSize(m.rec, m.rec_n)
        k.reply = PyBytes_FromStringAndSize(m.reply, m.reply_n) if m.reply_n else None
        k.stream = <object>m.stream if m.stream != NULL else None
        k.seq = m.seq
        k.ts = m.ts
        k.size += size
        self.kept_bytes += size
        if replace:
            self.conflated += 1
            return 2
        return 1

    @property
    def kept_messages(self):
        """How many messages conflating targets keep (one per target and subject)."""
        return len(self.kept)

    def flush_kept(self, live=None):
        """Write the messages conflating targets kept while the connection
        was behind, each through its target, in the order they were first
        kept (the connection calls it when it can write again).  A target
        whose handle is not in ``live`` (a Matcher: the subscription ended
        meanwhile) has its messages forgotten.  Returns how many were
        written; one the OutBuf drops (its limit) is counted in its
        target's ``dropped`` and ``overflow`` is set."""
        cdef dict kept = self.kept
        cdef _Kept k
        cdef WireMsg m
        cdef int64_t written = 0
        if not kept:
            return 0
        self.kept = {}
        self.kept_bytes = 0
        for k in kept.values():
            if live is not None and k.target.handle not in live:
                continue
            as_utf8(k.subject, &m.subject, &m.subject_n, False)
            _stored_msg(&m, k.subject, PyBytes_AS_STRING(k.record),
                        PyBytes_GET_SIZE(k.record), k.stream, k.seq, k.ts)
            if k.reply is not None:
                m.reply = PyBytes_AS_STRING(k.reply)
                m.reply_n = PyBytes_GET_SIZE(k.reply)
            if k.target._write(&m) == 1:
                written += 1
            else:
                k.target.dropped += 1
        return written


@cython.final
@cython.freelist(64)
@cython.auto_pickle(False)     # engine state: not picklable
cdef class _Kept:
    """A message kept by conflation (OutBuf._keep)."""


cdef uint64_t _wire_gen = 0         # the last WireMsg.gen handed out


cdef inline uint64_t _next_wire_gen() noexcept:
    global _wire_gen
    _wire_gen += 1
    return _wire_gen


@cython.auto_pickle(False)     # engine state: not picklable
cdef class WireTarget:
    """A network subscription: the router appends the events it is to get
    to its connection's output (``outbuf``) in C, through ``_write``, which
    each protocol's target implements (NativeTarget: MSG frames;
    NatsTarget: NATS MSG/HMSG lines).  Engine use; see fastflow.server."""

    def __init__(self, OutBuf outbuf not None, bint echo=True):
        if type(self) is WireTarget:
            raise TypeError('WireTarget is the base of the protocols\' targets '
                            '(NativeTarget, NatsTarget)')
        self.outbuf = outbuf
        self.echo = echo

    cdef int _write(self, WireMsg *m) except -1:
        """Append the message ``m``; 1 if written, 0 if the output dropped it."""
        raise NotImplementedError

    def write_record(self, subject, record, str stream=None, int64_t seq=0, int64_t ts=0):
        """Append a stored event (a replay's, a stream resume's) as this
        target writes a delivery: ``record`` its bytes, stored under
        ``subject`` in ``stream`` with ``seq`` and ``ts``.  True if written,
        False if the OutBuf dropped it (its limit; ``overflow`` is then
        set).  The router's bookkeeping (``delivered``, ``dropped``,
        ``remaining``) is left to the caller."""
        cdef WireMsg m
        cdef Py_buffer view
        cdef Parsed ps
        if type(subject) is bytes:
            subject = (<bytes>subject).decode('utf-8')
        as_utf8(subject, &m.subject, &m.subject_n, False)
        parse_subject(m.subject, m.subject_n, &ps, False, subject)
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            _ev_check(subject, <const char *>view.buf, view.len)
            _stored_msg(&m, subject, <const char *>view.buf, view.len, stream, seq, ts)
            return self._write(&m) == 1
        finally:
            PyBuffer_Release(&view)

    def write_batch(self, Batch batch not None, str stream=None, last_seq=None):
        """Append the events of a log read (``Log.read``'s Batch, from
        ``stream``) in order, as ``write_record`` does, up to seq
        ``last_seq`` (None: all of them).  Returns how many were written:
        fewer than that when the OutBuf dropped one (it then has
        ``overflow`` set) and stopped there."""
        cdef WireMsg m
        cdef Py_buffer view
        cdef Py_ssize_t i, n = batch.seqs.n
        cdef int64_t stop = 0x7fffffffffffffff if last_seq is None else last_seq
        cdef object subject
        cdef const int64_t *offs = batch.offsets.data
        PyObject_GetBuffer(batch.buffer, &view, PyBUF_SIMPLE)
        try:
            for i in range(n):
                if batch.seqs.data[i] > stop:
                    return i
                subject = <object>PyList_GET_ITEM(batch.subjects, i)
                as_utf8(subject, &m.subject, &m.subject_n, False)
                _stored_msg(&m, subject, <const char *>view.buf + offs[i], offs[i + 1] - offs[i],
                            stream, batch.seqs.data[i], batch.ts.data[i])
                if self._write(&m) != 1:
                    return i
            return n
        finally:
            PyBuffer_Release(&view)


cdef inline void _stored_msg(WireMsg *m, object subject, const char *rec, Py_ssize_t rn,
                             object stream, int64_t seq, int64_t ts) noexcept:
    """Fill ``m`` (its subject's UTF-8 set) for a stored record."""
    m.reply = NULL
    m.reply_n = 0
    m.rec = rec
    m.rec_n = rn
    m.data = NULL
    m.data_n = 0
    m.gen = _next_wire_gen()
    m.subject_obj = <PyObject *>subject
    m.event = NULL
    m.origin = NULL
    m.stream = <PyObject *>stream
    m.seq = seq
    m.ts = ts
