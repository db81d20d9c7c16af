# The native protocol's output side: frames written into an OutBuf (the
# byte layout of docs/protocol.md, here only), the wire target of a native
# subscription (MSG frames) and the client's Publisher (PUB frames).

cdef inline char *_frame_head(char *p, Py_ssize_t size, int op, int flags, uint32_t fid,
                              const char *s, Py_ssize_t sn, const char *r,
                              Py_ssize_t rn) noexcept:
    """Write a frame's 16-byte header (``size``: the whole frame), its subject
    and its reply at ``p``; returns where the body goes."""
    _wr32(p, <uint32_t>(size - 4))
    p[4] = <char>FR_VERSION
    p[5] = <char>op
    _wr16(p + 6, <uint16_t>flags)
    _wr32(p + 8, fid)
    _wr16(p + 12, <uint16_t>sn)
    _wr16(p + 14, <uint16_t>rn)
    p += FR_HEADER
    if sn:
        memcpy(p, s, sn)
        p += sn
    if rn:
        memcpy(p, r, rn)
        p += rn
    return p


cdef inline int _native_frame(OutBuf ob, int op, int flags, uint32_t fid, const char *s,
                              Py_ssize_t sn, const char *r, Py_ssize_t rn, const char *b0,
                              Py_ssize_t bn0, const char *b1, Py_ssize_t bn1) except -1:
    """Append one frame (body = b0[:bn0] + b1[:bn1]); 0 if it was dropped."""
    cdef Py_ssize_t size = FR_HEADER + sn + rn + bn0 + bn1
    cdef bint was_empty = ob.n == 0
    cdef char *p = ob._reserve(size)
    if p == NULL:
        return 0
    p = _frame_head(p, size, op, flags, fid, s, sn, r, rn)
    if bn0:
        memcpy(p, b0, bn0)
        p += bn0
    if bn1:
        memcpy(p, b1, bn1)
    ob._wrote(size, was_empty, op == OP_MSG)
    return 1


cdef int _native_pub(OutBuf ob, const char *sp, Py_ssize_t sn, const char *rp, Py_ssize_t rn,
                     const char *src, Py_ssize_t srcn, const char *d, Py_ssize_t dn,
                     uint32_t fid, int flags) except -1:
    """A PUB frame of an event with every default: a new generated id,
    ``source``, type = the subject."""
    global _id_counter
    cdef Py_ssize_t size = FR_HEADER + sn + rn + EV_HEADER + EV_GENID + srcn + dn
    cdef bint was_empty = ob.n == 0
    cdef char *p = ob._reserve(size)
    if p == NULL:
        return 0
    _id_counter += 1
    p = _frame_head(p, size, OP_PUB, flags, fid, sp, sn, rp, rn)
    p += _ev_default_head(p, _id_counter, src, srcn, 0)
    if dn:
        memcpy(p, d, dn)
    ob._wrote(size, was_empty, False)
    return 1


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class Publisher:
    """A client's ``publish(subject, data=b'', /, *, reply=None,
    **attributes)`` with its common case in C: bytes on the subject
    validated last (``vsubj``), no attributes, within ``max_data`` -> a
    PUB frame of a default event appended to ``out``.  Everything else goes
    to ``slow(subject, data, reply, attributes)``; a frame that does not fit
    to ``on_overflow(subject, data)``."""

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
            if not _native_pub(P.out, sp, sn, NULL, 0, srcp, srcn, PyBytes_AS_STRING(data),
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


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class NativeTarget(WireTarget):
    """A native subscription: MSG frames with its ``sid``."""

    def __init__(self, OutBuf outbuf not None, uint32_t sid, bint echo=True):
        WireTarget.__init__(self, outbuf, echo)
        self.sid = sid

    cdef int _write(self, WireMsg *m) except -1:
        return _native_frame(self.outbuf, OP_MSG, 0, self.sid, m.subject, m.subject_n, m.reply,
                             m.reply_n, m.rec, m.rec_n, m.data, m.data_n)
