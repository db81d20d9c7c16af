# The native protocol's frame codec (docs/protocol.md), shared by the
# server and the client: OutBuf collects a connection's output frames in C
# (the router appends MSG frames to it directly), FrameParser cuts frames out
# of a byte stream (any split) and routes PUB frames to the router in C,
# handing every other frame to Python.

cdef enum:
    FR_HEADER = 16
    FR_VERSION = 1
    FR_MIN_SIZE = 12                # size field minimum (header after the size)
    OUTBUF_MIN = 65536

cdef enum Op:
    OP_INFO = 1
    OP_CONNECT = 2
    OP_PUB = 3
    OP_PUBACK = 4
    OP_PUB_BATCH = 5
    OP_SUB = 6
    OP_UNSUB = 7
    OP_MSG = 8
    OP_PING = 9
    OP_PONG = 10
    OP_OK = 11
    OP_ERR = 12
    OP_STREAM = 13
    OP_REPLAY = 14
    OP_CONSUMER = 15
    OP_ACK = 16
    OP_LAST = 16

cdef enum:
    FL_ACK = 1                      # PUB, PUB_BATCH: answer with PUBACK
    FL_NO_RESPONDERS = 2            # MSG: no subscriber for the request
    FL_CLOSE = 1                    # ERR: the connection closes after it

OPS = {'INFO': OP_INFO, 'CONNECT': OP_CONNECT, 'PUB': OP_PUB, 'PUBACK': OP_PUBACK,
       'PUB_BATCH': OP_PUB_BATCH, 'SUB': OP_SUB, 'UNSUB': OP_UNSUB, 'MSG': OP_MSG,
       'PING': OP_PING, 'PONG': OP_PONG, 'OK': OP_OK, 'ERR': OP_ERR, 'STREAM': OP_STREAM,
       'REPLAY': OP_REPLAY, 'CONSUMER': OP_CONSUMER, 'ACK': OP_ACK}
FLAGS = {'ACK': FL_ACK, 'NO_RESPONDERS': FL_NO_RESPONDERS, 'CLOSE': FL_CLOSE}


class ProtocolError(FastflowError):
    """A malformed frame; ``code`` is the protocol's error code."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code
        self.frames = []        # what the parser handled before the bad frame

    def __reduce__(self):
        return (ProtocolError, (self.code, str(self)))


cdef inline void _put_u16(char *p, uint16_t v) noexcept:
    memcpy(p, &v, 2)


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class OutBuf:
    """A connection's pending output: frames appended in C, taken by the
    connection once per loop tick (``take()``), written with one syscall.

    ``max_pending`` bounds the bytes waiting here (0 = no limit); a frame
    that would pass it is not added and ``overflow`` is set (the
    connection is then cut as a slow consumer).  ``on_data`` is called
    (no arguments) when the buffer goes from empty to non-empty."""
    cdef char *buf
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef public Py_ssize_t max_pending
    cdef public object on_data
    cdef public Py_ssize_t flush_at         # call on_flush once this many bytes wait (0: never)
    cdef public object on_flush             # (a burst is written before the tick ends)
    cdef public bint overflow
    cdef public bint closed
    cdef readonly int64_t frames
    cdef readonly int64_t msgs
    cdef readonly int64_t bytes_out
    cdef readonly int64_t dropped

    def __init__(self, Py_ssize_t max_pending=64 << 20, on_data=None):
        self.max_pending = max_pending
        self.on_data = on_data

    def __dealloc__(self):
        free(self.buf)

    def __len__(self):
        return self.n

    cdef char *_reserve(self, Py_ssize_t size) except? NULL:
        """Room for ``size`` more bytes, or NULL (and ``overflow``) past the limit."""
        if self.closed:
            self.dropped += 1
            return NULL
        if self.max_pending and self.n + size > self.max_pending:
            self.dropped += 1
            if not self.overflow:
                self.overflow = True
                # nothing may be pending here (the socket holds the rest):
                # make the connection look now, not at its next tick
                if self.n == 0 and self.on_data is not None:
                    self.on_data()
            return NULL
        _grow(<void **>&self.buf, &self.cap, self.n + size, 1, OUTBUF_MIN)
        return self.buf + self.n

    cdef int _frame(self, int op, int flags, uint32_t fid, const char *s, Py_ssize_t sn,
                    const char *r, Py_ssize_t rn, const char *b0, Py_ssize_t bn0,
                    const char *b1, Py_ssize_t bn1) except -1:
        """Append one frame (body = b0[:bn0] + b1[:bn1]); 0 if it was dropped."""
        cdef Py_ssize_t size = FR_HEADER + sn + rn + bn0 + bn1
        cdef bint was_empty = self.n == 0
        cdef char *p = self._reserve(size)
        if p == NULL:
            return 0
        _put_u32(p, <uint32_t>(size - 4))
        p[4] = <char>FR_VERSION
        p[5] = <char>op
        _put_u16(p + 6, <uint16_t>flags)
        _put_u32(p + 8, fid)
        _put_u16(p + 12, <uint16_t>sn)
        _put_u16(p + 14, <uint16_t>rn)
        p += FR_HEADER
        if sn:
            memcpy(p, s, sn)
            p += sn
        if rn:
            memcpy(p, r, rn)
            p += rn
        if bn0:
            memcpy(p, b0, bn0)
            p += bn0
        if bn1:
            memcpy(p, b1, bn1)
        self._wrote(size, was_empty, op == OP_MSG)
        return 1

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
            return self._frame(op, flags, id, sp, sn, rp, rn, <const char *>view.buf, view.len,
                               NULL, 0) == 1
        finally:
            PyBuffer_Release(&view)

    cdef int _pub_default(self, const char *sp, Py_ssize_t sn, const char *rp, Py_ssize_t rn,
                          const char *src, Py_ssize_t srcn, const char *d, Py_ssize_t dn,
                          uint32_t fid, int flags) except -1:
        """A PUB frame of an event with every default: a new generated id,
        ``source``, type = the subject."""
        global _id_counter
        cdef char hdr[EV_HEADER + EV_GENID]
        cdef uint64_t h0 = (<uint64_t>EV_VERSION | (<uint64_t>(EVF_GENID | EVF_TYPE_SUBJECT) << 8)
                            | (<uint64_t>srcn << 48))
        cdef uint64_t h1 = 0
        cdef Py_ssize_t size = FR_HEADER + sn + rn + EV_HEADER + EV_GENID + srcn + dn
        cdef bint was_empty = self.n == 0
        cdef char *p = self._reserve(size)
        if p == NULL:
            return 0
        _id_counter += 1
        _put_u32(p, <uint32_t>(size - 4))
        p[4] = <char>FR_VERSION
        p[5] = <char>OP_PUB
        _put_u16(p + 6, <uint16_t>flags)
        _put_u32(p + 8, fid)
        _put_u16(p + 12, <uint16_t>sn)
        _put_u16(p + 14, <uint16_t>rn)
        p += FR_HEADER
        memcpy(p, sp, sn)
        p += sn
        if rn:
            memcpy(p, rp, rn)
            p += rn
        memcpy(p, &h0, 8)
        memcpy(p + 8, &h1, 8)
        memcpy(p + 16, &_id_prefix, 8)
        memcpy(p + 24, &_id_counter, 8)
        memcpy(p + 32, src, srcn)
        if dn:
            memcpy(p + 32 + srcn, d, dn)
        self._wrote(size, was_empty, False)
        return 1

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
            return self._pub_default(sp, sn, rp, rn, srcp, srcn, PyBytes_AS_STRING(data),
                                     PyBytes_GET_SIZE(data), id, flags) == 1
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._pub_default(sp, sn, rp, rn, srcp, srcn, <const char *>view.buf,
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
            if not self._pub_default(sp, sn, NULL, 0, srcp, srcn, PyBytes_AS_STRING(d),
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


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class MsgBatch:
    """The MSG frames of one ``FrameParser.feed`` run (``batch_msgs``):
    columns over one buffer of records, events made only when asked."""
    cdef readonly Int64Array sids
    cdef readonly Int64Array flags
    cdef readonly Int64Array offsets        # record i: buffer[offsets[i]:offsets[i+1]]
    cdef readonly list subjects
    cdef readonly list replies              # str, or None
    cdef readonly bytes buffer
    cdef char *b
    cdef Py_ssize_t bn
    cdef Py_ssize_t bcap

    def __dealloc__(self):
        free(self.b)

    def __len__(self):
        return self.sids.n

    cdef int _add(self, int64_t sid, int flags, object subject, object reply, const char *rec,
                  Py_ssize_t rn) except -1:
        _grow(<void **>&self.b, &self.bcap, self.bn + rn, 1, 65536)
        memcpy(self.b + self.bn, rec, rn)
        self.bn += rn
        self.sids.push(sid)
        self.flags.push(flags)
        self.offsets.push(self.bn)
        self.subjects.append(subject)
        self.replies.append(reply)
        return 0

    cdef int _seal(self) except -1:
        self.buffer = PyBytes_FromStringAndSize(self.b, self.bn)
        free(self.b)
        self.b = NULL
        self.bcap = 0
        return 0

    def record(self, Py_ssize_t i):
        """The record of message ``i`` (bytes)."""
        if i < 0 or i >= self.sids.n:
            raise IndexError('message {} of {}'.format(i, self.sids.n))
        return self.buffer[self.offsets.data[i]:self.offsets.data[i + 1]]

    def event(self, Py_ssize_t i):
        """Message ``i`` as an Event."""
        if i < 0 or i >= self.sids.n:
            raise IndexError('message {} of {}'.format(i, self.sids.n))
        return _ev_decode(<object>PyList_GET_ITEM(self.subjects, i),
                          PyBytes_AS_STRING(self.buffer) + self.offsets.data[i],
                          self.offsets.data[i + 1] - self.offsets.data[i], 0, None, 0, None)

    def events(self):
        """Every message as an Event (a list; decoded in C)."""
        cdef Py_ssize_t i, n = self.sids.n
        cdef list out = PyList_New(n)
        cdef Event e
        cdef const char *base = PyBytes_AS_STRING(self.buffer)
        for i in range(n):
            e = _ev_decode(<object>PyList_GET_ITEM(self.subjects, i),
                           base + self.offsets.data[i],
                           self.offsets.data[i + 1] - self.offsets.data[i], 0, None, 0, None)
            Py_INCREF(e)
            PyList_SET_ITEM(out, i, e)
        return out

    def datas(self):
        """The data of every message (a list of bytes), without making events."""
        cdef Py_ssize_t i, n = self.sids.n, rn, off
        cdef list out = PyList_New(n)
        cdef const char *r
        cdef object d
        for i in range(n):
            r = PyBytes_AS_STRING(self.buffer) + self.offsets.data[i]
            rn = self.offsets.data[i + 1] - self.offsets.data[i]
            off = _ev_data_offset(r, rn)
            d = PyBytes_FromStringAndSize(r + off, rn - off)
            Py_INCREF(d)
            PyList_SET_ITEM(out, i, d)
        return out


cdef MsgBatch _new_msg_batch():
    cdef MsgBatch m = MsgBatch.__new__(MsgBatch)
    m.sids = Int64Array.new(64)
    m.flags = Int64Array.new(64)
    m.offsets = Int64Array.new(65)
    m.offsets.push(0)
    m.subjects = []
    m.replies = []
    return m


@cython.auto_pickle(False)     # engine state: not picklable
cdef class DoorParser:
    """The input side of a front door's parser (FrameParser: the native
    protocol; NatsParser: NATS): bytes fed in any pieces are kept until an
    op is complete, ``_parse`` (the subclass) handles the complete ones and
    routes PUBs to ``router`` in C; the state both doors share (limits,
    publish permissions, counters, the last PUB subject) lives here.

    ``feed(data)`` returns the entries for what it completed; a malformed
    stream raises the door's error (its ``frames``: the entries handled
    before it), and the parser then refuses more input."""
    cdef char *buf
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t need                    # bytes the buffered op needs (0: unknown)
    cdef public Router router              # None: return PUBs too
    cdef public OutBuf out                 # this connection's output (echo, acks)
    cdef public Matcher pub_allow          # None: everything allowed
    cdef public Matcher pub_deny           # None: nothing denied
    cdef public object resp_check          # (subject) -> bool: a publish the Matchers refuse
                                           # may still go (a response); None: refused
    cdef public Py_ssize_t max_payload
    cdef public Py_ssize_t max_control
    cdef public Py_ssize_t max_connect     # before CONNECT: the largest frame (0: none)
    cdef public bint route_pubs            # False until CONNECT (auth) is done
    cdef bytes last_pb                     # the last PUB subject (bytes and str):
    cdef str last_ps                       # a stream of one subject decodes it once
    cdef readonly int64_t bytes_in
    cdef readonly int64_t pubs_in
    cdef readonly int64_t denied
    cdef object failed                     # the error that stopped the parser

    def __dealloc__(self):
        free(self.buf)

    @property
    def buffered(self):
        """Bytes of an incomplete op held."""
        return self.n

    def feed(self, data):
        cdef Py_buffer view
        cdef list out = []
        cdef Py_ssize_t used
        if self.failed is not None:
            raise self._malformed_before()
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self.bytes_in += view.len
            if self.n == 0:
                self.need = 0
                used = self._parse(<const char *>view.buf, view.len, out)
                if used < view.len:
                    self._keep(<const char *>view.buf + used, view.len - used)
            else:
                self._keep(<const char *>view.buf, view.len)
                if self.need and self.n < self.need:
                    return out          # a payload still arriving: nothing to parse yet
                self.need = 0
                used = self._parse(self.buf, self.n, out)
                if used:
                    memmove(self.buf, self.buf + used, self.n - used)
                    self.n -= used
        except (ProtocolError, NatsError) as exc:
            # the ops before the bad one were handled: hand them over too;
            # the stream cannot be resynchronised, so the parser stops here
            exc.frames = out
            self.failed = exc
            self.n = 0
            raise
        finally:
            PyBuffer_Release(&view)
        return out

    cdef int _keep(self, const char *p, Py_ssize_t n) except -1:
        _grow(<void **>&self.buf, &self.cap, self.n + n, 1, 4096)
        memcpy(self.buf + self.n, p, n)
        self.n += n
        return 0

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Handle the complete ops of p[:n]; returns the bytes used."""
        raise NotImplementedError

    cdef object _malformed_before(self):
        raise NotImplementedError

    cdef object _pub_subject(self, const char *s, Py_ssize_t sn):
        """The str of a PUB subject (a stream of one subject: decoded once)."""
        if (self.last_pb is not None and sn == PyBytes_GET_SIZE(self.last_pb)
                and memcmp(PyBytes_AS_STRING(self.last_pb), s, sn) == 0):
            return self.last_ps
        subject = self._subject_str(s, sn)
        self.last_pb = PyBytes_FromStringAndSize(s, sn)
        self.last_ps = subject
        return subject

    cdef object _subject_str(self, const char *s, Py_ssize_t sn):
        raise NotImplementedError

    cdef int _allowed(self, object subject) except -1:
        """0 if the publish permissions refuse ``subject`` (it must be valid)."""
        if (self.pub_allow is None or self.pub_allow.match(subject)) \
                and (self.pub_deny is None or not self.pub_deny.match(subject)):
            return 1
        if self.resp_check is not None and self.resp_check(subject):
            return 1
        return 0


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class FrameParser(DoorParser):
    """Cuts frames of the native protocol out of a byte stream fed in any
    pieces (a ``DoorParser``).

    ``feed(data)`` returns the frames it completed, except the PUB frames
    without ACK it could route itself (``router`` set, ``route_pubs``):
    those go to ``router`` in C (a problem with one becomes an ``('error',
    code, message, id)`` entry, a request nobody received a ``('noresp',
    reply)`` entry).  Each returned frame is a tuple ``(op, flags, id,
    subject, reply, body)`` (subject and reply str, body bytes); with
    ``batch_msgs``, runs of MSG frames come as ``('msgs', MsgBatch)``.  A
    malformed frame raises ``ProtocolError`` (with the code) whose
    ``frames`` are the frames before it (handled); the parser then refuses
    more input.
    """
    cdef public bint batch_msgs            # MSG frames as ('msgs', MsgBatch) runs
    cdef bytes last_sb                     # the last MSG subject (bytes and str):
    cdef str last_ss                       # a stream of one subject decodes it once
    cdef readonly int64_t frames_in

    def __init__(self, Router router=None, OutBuf out=None, Py_ssize_t max_payload=1 << 20,
                 Py_ssize_t max_control=65536):
        self.router = router
        self.out = out
        self.max_payload = max_payload
        self.max_control = max_control

    cdef object _malformed_before(self):
        return ProtocolError(self.failed.code, 'the stream was malformed before: {}'.format(
            self.failed))

    cdef object _subject_str(self, const char *s, Py_ssize_t sn):
        return _frame_str(s, sn, 'subject')

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Handle the complete frames of p[:n]; returns the bytes used."""
        cdef Py_ssize_t off = 0, size, total, sn, rn, bn
        cdef uint32_t size32, fid
        cdef uint16_t u16
        cdef int op, flags
        cdef const char *f
        cdef MsgBatch mb = None
        cdef object subj
        # PUBs are routed here only until a frame goes back to Python: a SUB
        # (or anything) before a PUB must be handled before that PUB
        cdef bint in_order = True
        while n - off >= 4:
            memcpy(&size32, p + off, 4)
            size = size32
            if size < FR_MIN_SIZE:
                raise ProtocolError(400, 'malformed frame: size {} is below {}'.format(
                    size, FR_MIN_SIZE))
            if self.max_connect and size > self.max_connect + FR_HEADER:
                # an unauthenticated client may not make the server buffer more
                raise ProtocolError(431, 'frame of {} bytes before CONNECT exceeds '
                                    'max_connect={}'.format(size, self.max_connect))
            if size > self.max_payload + self.max_control + FR_HEADER and size > 65536:
                raise ProtocolError(413, 'frame of {} bytes exceeds max_payload={}'.format(
                    size, self.max_payload))
            total = size + 4
            if n - off < total:
                break
            f = p + off
            if <uint8_t>f[4] != FR_VERSION:
                raise ProtocolError(505, 'unsupported protocol version {}'.format(<uint8_t>f[4]))
            op = <uint8_t>f[5]
            if op < 1 or op > OP_LAST:
                raise ProtocolError(400, 'unknown op {}'.format(op))
            memcpy(&u16, f + 6, 2)
            flags = u16
            memcpy(&fid, f + 8, 4)
            memcpy(&u16, f + 12, 2)
            sn = u16
            memcpy(&u16, f + 14, 2)
            rn = u16
            if FR_HEADER + sn + rn > total:
                raise ProtocolError(400, 'malformed frame: subject ({}) and reply ({}) overrun '
                                    'a frame of {} bytes'.format(sn, rn, size))
            bn = total - FR_HEADER - sn - rn
            self.frames_in += 1
            if op == OP_PUB or op == OP_PUB_BATCH or op == OP_MSG:
                if bn > self.max_payload and op != OP_PUB_BATCH:
                    raise ProtocolError(413, 'payload of {} bytes exceeds max_payload={}'.format(
                        bn, self.max_payload))
            elif sn + rn + bn > self.max_control:
                raise ProtocolError(431, 'control frame of {} bytes exceeds max_control={}'.format(
                    sn + rn + bn, self.max_control))
            if op == OP_MSG and self.batch_msgs:
                if mb is None:
                    mb = _new_msg_batch()
                if (self.last_sb is not None and sn == PyBytes_GET_SIZE(self.last_sb)
                        and memcmp(PyBytes_AS_STRING(self.last_sb), f + FR_HEADER, sn) == 0):
                    subj = self.last_ss
                else:
                    subj = _frame_str(f + FR_HEADER, sn, 'subject')
                    self.last_sb = PyBytes_FromStringAndSize(f + FR_HEADER, sn)
                    self.last_ss = subj
                mb._add(fid, flags, subj,
                        _frame_str(f + FR_HEADER + sn, rn, 'reply') if rn else None,
                        f + FR_HEADER + sn + rn, bn)
                off += total
                continue
            if mb is not None:          # keep the order: the run of MSGs first
                mb._seal()
                out.append(('msgs', mb))
                mb = None
            if (op == OP_PUB or op == OP_PUB_BATCH) and in_order and self.route_pubs \
                    and self.router is not None and not flags & FL_ACK:
                if op == OP_PUB:
                    self.pubs_in += 1
                    self._route_pub(f + FR_HEADER, sn, f + FR_HEADER + sn, rn,
                                    f + FR_HEADER + sn + rn, bn, fid, out)
                else:
                    self._route_batch(f + FR_HEADER + sn + rn, bn, fid, out)
            else:
                in_order = False
                out.append((op, flags, fid, _frame_str(f + FR_HEADER, sn, 'subject'),
                            _frame_str(f + FR_HEADER + sn, rn, 'reply'),
                            PyBytes_FromStringAndSize(f + FR_HEADER + sn + rn, bn)))
            off += total
        if mb is not None:
            mb._seal()
            out.append(('msgs', mb))
        return off

    cdef int _route_batch(self, const char *b, Py_ssize_t bn, uint32_t fid,
                          list out) except -1:
        """The items of a PUB_BATCH body, routed one by one."""
        cdef Py_ssize_t off = 0, sn, rn, k, i = 0
        cdef uint16_t u16
        cdef uint32_t u32
        while off < bn:
            if bn - off < 6:
                raise ProtocolError(400, 'malformed PUB_BATCH: {} bytes left, an item header '
                                    'is 6'.format(bn - off))
            memcpy(&u16, b + off, 2)
            memcpy(&u32, b + off + 2, 4)
            sn = u16
            rn = u32
            if 6 + sn + rn > bn - off:
                raise ProtocolError(400, 'malformed PUB_BATCH: an item of {} + {} bytes overruns '
                                    'the frame'.format(sn, rn))
            if rn > self.max_payload:
                raise ProtocolError(413, 'payload of {} bytes exceeds max_payload={}'.format(
                    rn, self.max_payload))
            self.pubs_in += 1
            k = len(out)
            self._route_pub(b + off + 6, sn, NULL, 0, b + off + 6 + sn, rn, fid, out)
            if len(out) > k and out[k][0] == 'error':
                # a bad item stops the batch: the items before it stay published
                e = out[k]
                out[k] = ('error', e[1], 'PUB_BATCH item {}: {} ({} items before it published, '
                          'the rest not)'.format(i, e[2], i), fid)
                del out[k + 1:]
                return 0
            off += 6 + sn + rn
            i += 1
        return 0

    cdef int _route_pub(self, const char *s, Py_ssize_t sn, const char *r, Py_ssize_t rn,
                        const char *b, Py_ssize_t bn, uint32_t fid, list out) except -1:
        """A PUB without ACK: route it here; problems go to ``out`` as
        ('error', code, message, id) and ('noresp', reply) entries."""
        cdef object subject
        cdef object reply = _frame_str(r, rn, 'reply') if rn else None
        cdef int64_t before
        subject = self._pub_subject(s, sn)
        before = self.router.n_delivered
        try:
            if (self.pub_allow is not None or self.pub_deny is not None) \
                    and not self._allowed(subject):
                self.denied += 1
                out.append(('error', 403, "permission denied: publish to '{}'".format(subject),
                            fid))
                return 0
            self.router._publish_wire(subject, r, rn, b, bn, self.out)
        except (SubjectError, EventError, FastflowError) as exc:
            out.append(('error', _error_code(exc), str(exc), fid))
            return 0
        if reply is not None and self.router.n_delivered == before:
            out.append(('noresp', reply))
        return 0


cdef str _frame_str(const char *p, Py_ssize_t n, str what):
    try:
        return PyUnicode_DecodeUTF8(p, n, 'strict')
    except UnicodeDecodeError:
        raise ProtocolError(400, 'malformed frame: its {} is not UTF-8'.format(what)) from None


cdef int _error_code(exc):
    if isinstance(exc, LogFullError):
        return 507
    if isinstance(exc, EventTooLarge):
        return 413
    if isinstance(exc, (SubjectError, EventError)):
        return 422
    return 400


def error_code(exc):
    """The protocol error code of an engine exception."""
    return _error_code(exc)


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class Publisher:
    """A client's ``publish(subject, data=b'', /, *, reply=None,
    **attributes)`` with its common case in C: bytes on the subject
    validated last (``vsubj``), no attributes, within ``max_data`` -> a
    PUB frame of a default event appended to ``out``.  Everything else goes
    to ``slow(subject, data, reply, attributes)``; a frame that does not fit
    to ``on_overflow(subject, data)``."""
    cdef readonly OutBuf out
    cdef public object slow
    cdef public object on_overflow
    cdef public str source
    cdef public object vsubj
    cdef public Py_ssize_t max_data

    def __init__(self, OutBuf out not None, slow, on_overflow, str source):
        self.out = out
        self.slow = slow
        self.on_overflow = on_overflow
        self.source = source


_PUBLISH2_DOC = b"""publish(subject, data=b'', /, *, reply=None, **attributes)
--

Publish an event; not awaited: the frame is buffered and written with this
loop tick's other output.  ``attributes`` are CloudEvents attributes and
extensions; ``reply`` a reply subject for responders."""


cdef object _publish2_fc(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    cdef Publisher P = <Publisher>self
    cdef Py_ssize_t i, nk = 0
    cdef dict attributes
    cdef object subject, data, reply = None
    cdef const char *sp
    cdef const char *srcp
    cdef Py_ssize_t sn, srcn
    if nargs < 1 or nargs > 2:
        raise TypeError('publish() takes a subject and optional data ({} positional '
                        'arguments given)'.format(nargs))
    subject = <object>args[0]
    data = <object>args[1] if nargs == 2 else b''
    if kwnames != NULL:
        nk = PyTuple_GET_SIZE(<object>kwnames)
    if nk == 0:
        if (subject is P.vsubj and type(data) is bytes
                and PyBytes_GET_SIZE(data) <= P.max_data):
            as_utf8(subject, &sp, &sn, False)
            as_utf8(P.source, &srcp, &srcn, False)
            if not P.out._pub_default(sp, sn, NULL, 0, srcp, srcn, PyBytes_AS_STRING(data),
                                      PyBytes_GET_SIZE(data), 0, 0):
                P.on_overflow(subject, data)
            return None
        P.slow(subject, data, None, {})
        return None
    attributes = {}
    for i in range(nk):
        attributes[<object>PyTuple_GET_ITEM(<object>kwnames, i)] = <object>args[nargs + i]
    if 'data' in attributes:
        if nargs == 2:
            raise TypeError("publish() got data both as an argument and as a keyword")
        data = attributes.pop('data')
    reply = attributes.pop('reply', None)
    P.slow(subject, data, reply, attributes)
    return None


ff_install_fastcall(Publisher, 1, b'publish', <ff_fastcall_t>_publish2_fc, _PUBLISH2_DOC)
