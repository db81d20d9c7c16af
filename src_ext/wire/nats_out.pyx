# The NATS protocol's output side: MSG / HMSG lines written into an OutBuf,
# and the wire target of a NATS subscription (its header block made once per
# message for every subscriber that shares the hook).

cdef inline int _nats_msg(OutBuf ob, const char *sid, Py_ssize_t sidn, const char *s,
                          Py_ssize_t sn, const char *r, Py_ssize_t rn, const char *h,
                          Py_ssize_t hn, const char *d, Py_ssize_t dn) except -1:
    """Append ``MSG <s> <sid> [<r>] <dn>`` + data (no headers: ``h`` NULL)
    or ``HMSG <s> <sid> [<r>] <hn> <hn+dn>`` + headers + data; 0 if it was
    dropped (over max_pending, closed)."""
    cdef Py_ssize_t bound = 5 + sn + 1 + sidn + 1 + rn + 1 + 40 + 2 + hn + dn + 2
    cdef bint was_empty = ob.n == 0
    cdef char *p0 = ob._reserve(bound)
    cdef char *p = p0
    if p == NULL:
        return 0
    if h != NULL:
        memcpy(p, b'HMSG ', 5)
        p += 5
    else:
        memcpy(p, b'MSG ', 4)
        p += 4
    memcpy(p, s, sn)
    p += sn
    p[0] = 32
    memcpy(p + 1, sid, sidn)
    p += 1 + sidn
    p[0] = 32
    p += 1
    if rn:
        memcpy(p, r, rn)
        p += rn
        p[0] = 32
        p += 1
    if h != NULL:
        p = _put_int(p, hn)
        p[0] = 32
        p = _put_int(p + 1, hn + dn)
    else:
        p = _put_int(p, dn)
    p[0] = 13
    p[1] = 10
    p += 2
    if hn:
        memcpy(p, h, hn)
        p += hn
    if dn:
        memcpy(p, d, dn)
        p += dn
    p[0] = 13
    p[1] = 10
    p += 2
    ob._wrote(p - p0, was_empty, True)
    return 1


cdef int _nats_plain(const char *rec, Py_ssize_t rn, const char *dp, Py_ssize_t dn,
                     const char **data, Py_ssize_t *datan) except -1:
    """Where the data of a record (``rec``, or a header in ``rec`` and the
    data at ``dp``) is; 1 if the event carries nothing but the defaults a
    NATS subscriber would not see (a generated id, type = the subject, no
    lineage, no optional attribute or extension): it goes as a plain MSG."""
    cdef Py_ssize_t off
    if dp != NULL:                      # the router's record of a default event
        data[0] = dp
        datan[0] = dn
        return 1
    off = _ev_data_offset(rec, rn)
    data[0] = rec + off
    datan[0] = rn - off
    return ((<uint8_t>rec[1] & (EVF_GENID | EVF_TYPE_SUBJECT)) == (EVF_GENID | EVF_TYPE_SUBJECT)
            and _rd16(rec + 10) == 0 and _rd32(rec + 12) == 0)


# What NATS targets compute once per message (WireMsg.gen) and header hook:
# whether it goes as a plain MSG, where its data is, its header block.
cdef uint64_t _hdr_gen = 0
cdef object _hdr_hook = None
cdef object _hdr_block = None        # (holds the bytes _hdr_p points into)
cdef const char *_hdr_p = NULL
cdef Py_ssize_t _hdr_n = 0
cdef const char *_hdr_data = NULL
cdef Py_ssize_t _hdr_data_n = 0


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class NatsTarget(WireTarget):
    """A NATS subscription: MSG lines with its ``sid``, or HMSG lines with
    the header block ``headers(event, generated_id)`` returns (bytes) for an
    event that carries more than a NATS subscriber would see by default
    (``headers`` None: always a plain MSG)."""

    def __init__(self, OutBuf outbuf not None, sid, bint echo=True, headers=None):
        WireTarget.__init__(self, outbuf, echo)
        if isinstance(sid, str):
            sid = (<str>sid).encode('utf-8')
        if type(sid) is not bytes or not sid:
            raise TypeError('sid must be a non-empty str or bytes (a NATS sid)')
        self.sid = sid
        self.headers = headers

    cdef int _write(self, WireMsg *m) except -1:
        if m.gen != _hdr_gen or self.headers is not _hdr_hook:
            self._prepare(m)
        return _nats_msg(self.outbuf, PyBytes_AS_STRING(self.sid), PyBytes_GET_SIZE(self.sid),
                         m.subject, m.subject_n, m.reply, m.reply_n, _hdr_p, _hdr_n,
                         _hdr_data, _hdr_data_n)

    cdef int _prepare(self, WireMsg *m) except -1:
        """What every NATS target with this hook writes for ``m``: a plain
        MSG or a header block, and where the data is (once per message)."""
        global _hdr_gen, _hdr_hook, _hdr_block, _hdr_p, _hdr_n, _hdr_data, _hdr_data_n
        cdef Event ev
        cdef Event hev
        cdef object hdr = None
        _hdr_gen = 0                    # (until it is complete)
        if not _nats_plain(m.rec, m.rec_n, m.data, m.data_n, &_hdr_data, &_hdr_data_n) \
                and self.headers is not None:
            if m.event != NULL:
                # the event as published: without this flow's lineage
                # entry (which only the in-process deliveries carry)
                ev = <Event>m.event
                hev = Event.__new__(Event)
                _ev_copy(hev, ev)
                hev._origin = None
                hdr = self.headers(hev, ev._gid != 0)
            else:
                hdr = self.headers(
                    _ev_decode(<object>m.subject_obj, m.rec, m.rec_n, m.seq,
                               <object>m.stream, m.ts, None),
                    (<uint8_t>m.rec[1] & EVF_GENID) != 0)
            if type(hdr) is not bytes:
                raise TypeError('NatsTarget.headers must return bytes')
        _hdr_block = hdr
        _hdr_p = PyBytes_AS_STRING(hdr) if hdr is not None else NULL
        _hdr_n = PyBytes_GET_SIZE(hdr) if hdr is not None else 0
        _hdr_hook = self.headers
        _hdr_gen = m.gen
        return 0


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class ClusterTarget(WireTarget):
    """A cluster link's forwarder (docs/cluster.md): the events of this
    node that another node wants, written to the backbone's output as
    ``PUB <prefix><subject> [<reply_prefix><reply>] <size>`` with the event's
    record as the payload (byte for byte), but none larger than
    ``max_payload`` or with a line longer than ``max_line`` (the backbone's
    limits: counted in ``too_large``).  One target serves every
    pattern of one kind (the remote plain interest of an account, or one
    queue group's): registered under each, it writes an event once however
    many of them matched (``WireMsg.gen``).  ``remote``: a queue group
    prefers its local members to it.  Its ``echo`` is False: what came from
    the backbone (the link's OutBuf the origin) never goes back."""

    def __init__(self, OutBuf outbuf not None, prefix=b'', reply_prefix=b''):
        WireTarget.__init__(self, outbuf, False)
        if isinstance(prefix, str):
            prefix = (<str>prefix).encode('utf-8')
        if isinstance(reply_prefix, str):
            reply_prefix = (<str>reply_prefix).encode('utf-8')
        if type(prefix) is not bytes or type(reply_prefix) is not bytes:
            raise TypeError('prefix and reply_prefix must be str or bytes')
        for b in (prefix, reply_prefix):
            if b and (b' ' in b or b'\t' in b or b'\r' in b or b'\n' in b or b'\0' in b
                      or not (<bytes>b).endswith(b'.')):
                raise ValueError('a subject prefix ends with "." and has no space, tab, '
                                 'CR, LF or NUL: {!r}'.format(b))
        self.prefix = prefix
        self.reply_prefix = reply_prefix
        self.remote = True
        self.last_gen = 0
        self.fwd_msgs = 0
        self.fwd_bytes = 0
        self.max_payload = 0
        self.max_line = 4096
        self.too_large = 0

    cdef int _write(self, WireMsg *m) except -1:
        cdef Py_ssize_t pn, rpn, bound, total
        cdef bint was_empty
        cdef char *p0
        cdef char *p
        cdef OutBuf ob = self.outbuf
        if m.gen == self.last_gen:
            return 1                    # (another of its patterns matched this event)
        self.last_gen = m.gen
        pn = PyBytes_GET_SIZE(self.prefix)
        rpn = PyBytes_GET_SIZE(self.reply_prefix) if m.reply_n else 0
        total = m.rec_n + m.data_n
        if (self.max_payload and total > self.max_payload) or \
                (self.max_line and 4 + pn + m.subject_n + 1 + rpn + m.reply_n + 1 + 20
                 > self.max_line):
            self.too_large += 1     # (the backbone would close the link for it)
            return 1
        bound = 4 + pn + m.subject_n + 1 + rpn + m.reply_n + 1 + 20 + 2 + total + 2
        was_empty = ob.n == 0
        p0 = ob._reserve(bound)
        if p0 == NULL:
            return 0
        p = p0
        memcpy(p, b'PUB ', 4)
        p += 4
        if pn:
            memcpy(p, PyBytes_AS_STRING(self.prefix), pn)
            p += pn
        memcpy(p, m.subject, m.subject_n)
        p += m.subject_n
        p[0] = 32
        p += 1
        if m.reply_n:
            if rpn:
                memcpy(p, PyBytes_AS_STRING(self.reply_prefix), rpn)
                p += rpn
            memcpy(p, m.reply, m.reply_n)
            p += m.reply_n
            p[0] = 32
            p += 1
        p = _put_int(p, total)
        p[0] = 13
        p[1] = 10
        p += 2
        memcpy(p, m.rec, m.rec_n)
        p += m.rec_n
        if m.data_n:
            memcpy(p, m.data, m.data_n)
            p += m.data_n
        p[0] = 13
        p[1] = 10
        p += 2
        ob._wrote(p - p0, was_empty, True)
        self.fwd_msgs += 1
        self.fwd_bytes += total
        return 1
