# The native protocol's input side: FrameParser cuts frames out of a byte
# stream (any split) and routes PUB frames to the router in C, handing every
# other frame to Python; a client's runs of MSG frames come as MsgBatches.

@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class MsgBatch:
    """The MSG frames of one ``FrameParser.feed`` run (``batch_msgs``):
    columns over one buffer of records, events made only when asked."""

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
