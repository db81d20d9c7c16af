# The NATS client protocol as a front door (docs/nats.md): NatsParser cuts
# the text protocol (PUB, HPUB, SUB, UNSUB, CONNECT, PING, PONG, ...) out of a
# byte stream fed in any pieces, op names in any case, and routes PUB to the
# router in C as an event with the defaults (a new id, the flow's source,
# type = the subject).

from libc.string cimport memchr

cdef enum:
    NATS_MAX_ARGS = 5
    NATS_NUM_MAX = 18               # digits of a size or a max (fits an int64)

cdef enum NatsOp:
    NOP_PUB = 1
    NOP_HPUB = 2
    NOP_SUB = 3
    NOP_UNSUB = 4
    NOP_PING = 5
    NOP_PONG = 6
    NOP_CONNECT = 7
    NOP_INFO = 8
    NOP_OK = 9
    NOP_ERR = 10
    NOP_MSG = 11
    NOP_HMSG = 12


cdef inline char _lower(char c) noexcept:
    if c >= 65 and c <= 90:
        return c + 32
    return c


cdef inline bint _is_space(char c) noexcept:
    return c == 32 or c == 9


cdef inline uint32_t _lower3(const char *p) noexcept:
    # the bytes in a word, letters lowered (| 0x20 maps only 'X' and 'x'
    # to 'x' among the letters the ops are made of)
    return (<uint32_t><uint8_t>p[0] | (<uint32_t><uint8_t>p[1] << 8)
            | (<uint32_t><uint8_t>p[2] << 16)) | 0x202020


cdef inline uint32_t _lower4(const char *p) noexcept:
    return _lower3(p) | ((<uint32_t><uint8_t>p[3] | 0x20) << 24)


cdef int _op_of(const char *p, Py_ssize_t n) noexcept:
    """The op of the name p[:n] (any case), 0 if unknown."""
    cdef uint32_t w
    if n == 3:
        w = _lower3(p)
        if w == 0x627570:               # pub
            return NOP_PUB
        if w == 0x627573:               # sub
            return NOP_SUB
        if w == 0x6b6f2b and p[0] == 43:    # +ok
            return NOP_OK
        if w == 0x67736d:               # msg
            return NOP_MSG
    elif n == 4:
        w = _lower4(p)
        if w == 0x676e6970:             # ping
            return NOP_PING
        if w == 0x676e6f70:             # pong
            return NOP_PONG
        if w == 0x62757068:             # hpub
            return NOP_HPUB
        if w == 0x6f666e69:             # info
            return NOP_INFO
        if w == 0x7272652d and p[0] == 45:  # -err
            return NOP_ERR
        if w == 0x67736d68:             # hmsg
            return NOP_HMSG
    elif n == 5:
        if _lower4(p) == 0x75736e75 and (<uint8_t>p[4] | 0x20) == 0x62:     # unsub
            return NOP_UNSUB
    elif n == 7:
        if _lower4(p) == 0x6e6e6f63 and _lower3(p + 4) == 0x746365:         # connect
            return NOP_CONNECT
    return 0


cdef int64_t _num(const char *p, Py_ssize_t n) noexcept:
    """The decimal number p[:n], -1 if it is not one."""
    cdef int64_t v = 0
    cdef Py_ssize_t i
    if n == 0 or n > NATS_NUM_MAX:
        return -1
    for i in range(n):
        if p[i] < 48 or p[i] > 57:
            return -1
        v = v * 10 + (p[i] - 48)
    return v


@cython.final
@cython.auto_pickle(False)
cdef class NatsRoute:
    """Where a cluster link's parser routes the MSGs of one sid (the link's
    subscription on the backbone, docs/cluster.md): into ``router`` as an
    event from another node, its subject without the first ``strip`` bytes
    (the backbone's prefix), a reply subject without ``reply_prefix``;
    ``group`` None: to the targets outside queue groups, else to one local
    member of that queue group."""

    def __init__(self, Router router not None, Py_ssize_t strip=0, group=None,
                 reply_prefix=b''):
        if isinstance(reply_prefix, str):
            reply_prefix = (<str>reply_prefix).encode('utf-8')
        if strip < 0:
            raise ValueError('strip must be >= 0')
        self.router = router
        self.strip = strip
        self.group = group
        self.reply_prefix = reply_prefix
        self.msgs = 0
        self.bad = 0


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class NatsParser(DoorParser):
    """Cuts the NATS client protocol out of a byte stream fed in any pieces
    (a ``DoorParser``).

    ``feed(data)`` returns entries for what it completed, except the PUBs it
    routes itself (``router`` set, ``route_pubs``, and no other op before
    them in this feed): those go to ``router`` in C as events with the
    defaults.  Entries: ``('connect', json bytes)``, ``('sub', subject,
    queue or None, sid)``, ``('unsub', sid, max)``, ``('ping',)``,
    ``('pong',)``, ``('pub', subject, reply or None, payload)``,
    ``('hpub', subject, reply or None, headers, payload)``, ``('info',
    json bytes)``, ``('+ok',)``, ``('-err', text)``, and from routed PUBs
    ``('error', text)`` (a non-closing -ERR: invalid publish subject,
    permissions) and ``('noresp', reply)`` (a request nobody received).
    ``client``: the parser of a cluster link (a client of a NATS server):
    it takes the server's ``MSG`` and ``HMSG`` too, as ``('msg', subject,
    sid, reply or None, headers or None, payload)``, except the MSGs of a
    sid in ``routes`` (a ``NatsRoute``), which it routes itself in C
    (problems: ``('bad', text)``, counted in the route's ``bad``); it
    stops after the first other entry (the rest stays buffered: ``feed(b'')``
    goes on), so that the caller handles it before the MSGs that follow.
    A protocol error raises ``NatsError`` (its ``text`` is the -ERR text)
    whose ``frames`` are the entries before it; the parser then refuses
    more input.
    """

    def __init__(self, Router router=None, OutBuf out=None, Py_ssize_t max_payload=1 << 20,
                 Py_ssize_t max_control=4096, *, bint client=False, dict routes=None):
        self.router = router
        self.out = out
        self.client = client
        self.routes = routes
        self.max_payload = max_payload
        self.max_control = max_control

    cdef object _malformed_before(self):
        return NatsError(self.failed.text, 'the stream was malformed before: {}'.format(
            self.failed))

    cdef object _subject_str(self, const char *s, Py_ssize_t sn):
        return _nats_str(s, sn, 'subject')

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Handle the complete ops of p[:n]; returns the bytes used."""
        cdef Py_ssize_t off = 0, ll, end, i, na, k, body, hn, tn
        cdef const char *line
        cdef const char *e
        cdef const char *a[NATS_MAX_ARGS]
        cdef Py_ssize_t an[NATS_MAX_ARGS]
        cdef int op
        cdef int64_t v
        # PUBs are routed here only until an op goes back to Python: a SUB
        # before a PUB must be handled before that PUB
        cdef bint in_order = True
        while off < n:
            if self.client and not in_order:
                # a cluster link's: it handles that op before the MSGs after
                # it are routed (in C, at its next feed) -- in order
                break
            line = p + off
            e = <const char *>memchr(line, 10, n - off)
            if e == NULL:
                # (a read may end between the CR and the LF of a line)
                if n - off - (p[n - 1] == 13) > self.max_control:
                    raise NatsError('maximum control line exceeded', 'no line end within {} '
                                    'bytes (max_control)'.format(self.max_control))
                break
            ll = e - line                   # without the \n
            end = off + ll + 1              # where the next op (or the payload) starts
            if ll and line[ll - 1] == 13:
                ll -= 1
            if ll > self.max_control:
                raise NatsError('maximum control line exceeded', 'a line of {} bytes, '
                                'max_control is {}'.format(ll, self.max_control))
            k = 0
            while k < ll and not _is_space(line[k]):
                k += 1
            op = _op_of(line, k)
            if op == 0:
                raise NatsError('Unknown Protocol Operation', repr(
                    PyBytes_FromStringAndSize(line, min(ll, 32))))
            self.ops_in += 1
            if op == NOP_CONNECT or op == NOP_INFO or op == NOP_ERR:
                while k < ll and _is_space(line[k]):
                    k += 1
                in_order = False
                if op == NOP_CONNECT:
                    out.append(('connect', PyBytes_FromStringAndSize(line + k, ll - k)))
                elif op == NOP_INFO:
                    out.append(('info', PyBytes_FromStringAndSize(line + k, ll - k)))
                else:
                    out.append(('-err', PyUnicode_DecodeUTF8(line + k, ll - k, 'replace')))
                off = end
                continue
            # the arguments, separated by spaces or tabs
            na = 0
            i = k
            while i < ll:
                while i < ll and _is_space(line[i]):
                    i += 1
                if i >= ll:
                    break
                if na == NATS_MAX_ARGS:
                    raise NatsError('Parser Error', 'too many arguments in {!r}'.format(
                        PyBytes_FromStringAndSize(line, min(ll, 64))))
                a[na] = line + i
                while i < ll and not _is_space(line[i]):
                    i += 1
                an[na] = line + i - a[na]
                na += 1
            if op == NOP_MSG or op == NOP_HMSG:
                if not self.client:
                    raise NatsError('Unknown Protocol Operation', '{} is sent by servers, '
                                    'not clients'.format('MSG' if op == NOP_MSG else 'HMSG'))
                # a server's MSG <subject> <sid> [reply] <size> (HMSG: <hsize> <size>)
                hn = 0
                if op == NOP_MSG:
                    if na != 3 and na != 4:
                        raise NatsError('Parser Error', 'MSG takes a subject, a sid, an '
                                        'optional reply subject and a size, got {} '
                                        'arguments'.format(na))
                else:
                    if na != 4 and na != 5:
                        raise NatsError('Parser Error', 'HMSG takes a subject, a sid, an '
                                        'optional reply subject, a header size and a total '
                                        'size, got {} arguments'.format(na))
                    hn = _num(a[na - 2], an[na - 2])
                tn = _num(a[na - 1], an[na - 1])
                if tn < 0 or hn < 0 or hn > tn:
                    raise NatsError('Parser Error', 'bad size in {!r}'.format(
                        PyBytes_FromStringAndSize(line, min(ll, 64))))
                if tn > self.max_payload:
                    raise NatsError('Maximum Payload Violation', 'a payload of {} bytes, '
                                    'max_payload is {}'.format(tn, self.max_payload))
                body = end
                if n - body < tn + 2:
                    self.need = body + tn + 2 - off
                    self.ops_in -= 1
                    break
                if p[body + tn] != 13 or p[body + tn + 1] != 10:
                    raise NatsError('Parser Error', 'the payload of {} bytes is not followed '
                                    'by CRLF'.format(tn))
                rt_ = None
                if op == NOP_MSG and in_order and self.routes is not None:
                    rt_ = self.routes.get(PyBytes_FromStringAndSize(a[1], an[1]))
                if rt_ is not None:
                    self._route_msg(<NatsRoute>rt_, a[0], an[0], a[2] if na == 4 else NULL,
                                    an[2] if na == 4 else 0, p + body, tn, out)
                else:
                    in_order = False
                    out.append(('msg', _nats_str(a[0], an[0], 'subject'),
                                _nats_str(a[1], an[1], 'sid'),
                                _nats_str(a[2], an[2], 'reply subject')
                                if na == (4 if op == NOP_MSG else 5) else None,
                                PyBytes_FromStringAndSize(p + body, hn) if hn else None,
                                PyBytes_FromStringAndSize(p + body + hn, tn - hn)))
                off = body + tn + 2
                continue
            if op == NOP_PUB or op == NOP_HPUB:
                if op == NOP_PUB:
                    if na != 2 and na != 3:
                        raise NatsError('Parser Error', 'PUB takes a subject, an optional reply '
                                        'subject and a size, got {} arguments'.format(na))
                    hn = 0
                    tn = _num(a[na - 1], an[na - 1])
                else:
                    if na != 3 and na != 4:
                        raise NatsError('Parser Error', 'HPUB takes a subject, an optional '
                                        'reply subject, a header size and a total size, got {} '
                                        'arguments'.format(na))
                    hn = _num(a[na - 2], an[na - 2])
                    tn = _num(a[na - 1], an[na - 1])
                    if hn < 0 or (tn >= 0 and hn > tn):
                        raise NatsError('Parser Error', 'HPUB header size {!r} is not a number '
                                        'up to the total size'.format(
                                            PyBytes_FromStringAndSize(a[na - 2], an[na - 2])))
                if tn < 0:
                    raise NatsError('Parser Error', 'size {!r} is not a number'.format(
                        PyBytes_FromStringAndSize(a[na - 1], an[na - 1])))
                if tn > self.max_payload:
                    raise NatsError('Maximum Payload Violation', 'a payload of {} bytes, '
                                    'max_payload is {}'.format(tn, self.max_payload))
                body = end
                if n - body < tn + 2:
                    self.need = body + tn + 2 - off
                    self.ops_in -= 1        # (counted when it is complete)
                    break                   # the payload is not all here yet
                if p[body + tn] != 13 or p[body + tn + 1] != 10:
                    raise NatsError('Parser Error', 'the payload of {} bytes is not followed '
                                    'by CRLF'.format(tn))
                if op == NOP_PUB:
                    if in_order and self.route_pubs and self.router is not None:
                        self.pubs_in += 1
                        self._route(a[0], an[0], a[1] if na == 3 else NULL,
                                    an[1] if na == 3 else 0, p + body, tn, out)
                    else:
                        in_order = False
                        out.append(('pub', _nats_str(a[0], an[0], 'subject'),
                                    _nats_str(a[1], an[1], 'reply subject') if na == 3 else None,
                                    PyBytes_FromStringAndSize(p + body, tn)))
                else:
                    in_order = False
                    out.append(('hpub', _nats_str(a[0], an[0], 'subject'),
                                _nats_str(a[1], an[1], 'reply subject') if na == 4 else None,
                                PyBytes_FromStringAndSize(p + body, hn),
                                PyBytes_FromStringAndSize(p + body + hn, tn - hn)))
                off = body + tn + 2
                continue
            in_order = False
            if op == NOP_SUB:
                if na != 2 and na != 3:
                    raise NatsError('Parser Error', 'SUB takes a subject, an optional queue '
                                    'group and a sid, got {} arguments'.format(na))
                out.append(('sub', _nats_str(a[0], an[0], 'subject'),
                            _nats_str(a[1], an[1], 'queue group') if na == 3 else None,
                            _nats_str(a[na - 1], an[na - 1], 'sid')))
            elif op == NOP_UNSUB:
                if na != 1 and na != 2:
                    raise NatsError('Parser Error', 'UNSUB takes a sid and an optional max, '
                                    'got {} arguments'.format(na))
                v = 0
                if na == 2:
                    v = _num(a[1], an[1])
                    if v < 0:
                        raise NatsError('Parser Error', 'UNSUB max {!r} is not a number'.format(
                            PyBytes_FromStringAndSize(a[1], an[1])))
                out.append(('unsub', _nats_str(a[0], an[0], 'sid'), v))
            elif op == NOP_PING:
                out.append(('ping',))
            elif op == NOP_PONG:
                out.append(('pong',))
            elif op == NOP_OK:
                out.append(('+ok',))
            else:                           # MSG / HMSG: the server's ops, not a client's
                raise NatsError('Unknown Protocol Operation', '{} is sent by servers, not '
                                'clients'.format('MSG' if op == NOP_MSG else 'HMSG'))
            off = end
        return off

    cdef int _route_msg(self, NatsRoute rt_, const char *s, Py_ssize_t sn, const char *r,
                        Py_ssize_t rn, const char *d, Py_ssize_t dn, list out) except -1:
        """A cluster link's MSG: the event record ``d[:dn]`` from another
        node, into the router of its sid's route (``rt_``)."""
        cdef Router rt = rt_.router
        cdef Py_ssize_t rpn = PyBytes_GET_SIZE(rt_.reply_prefix)
        cdef int32_t only = -2
        cdef object q
        rt_.msgs += 1
        self.pubs_in += 1
        if sn <= rt_.strip:
            rt_.bad += 1
            out.append(('bad', 'subject {!r} lacks its prefix'.format(
                PyBytes_FromStringAndSize(s, sn))))
            return 0
        if rn and rpn and rn > rpn and memcmp(r, PyBytes_AS_STRING(rt_.reply_prefix), rpn) == 0:
            r += rpn
            rn -= rpn
        if rt_.group is not None:
            q = rt.matcher.qids.get(rt_.group)
            if q is None:
                return 0                # its last local member is gone
            only = <int32_t>q
        try:
            subject = self._pub_subject(s + rt_.strip, sn - rt_.strip)
            rt.only_q = only
            rt._publish_wire(subject, r, rn, d, dn, self.out, False)
        except (LogFullError, EventTooLarge):
            pass                        # a stream refused it; the subscribers got it
        except (FastflowError, ValueError) as exc:
            rt_.bad += 1
            out.append(('bad', str(exc)))
        finally:
            rt.only_q = -1
        return 0

    def route(self, subject, reply, payload):
        """Publish ``payload`` on ``subject`` (with ``reply``) as the C path
        does; returns the ('error', text) / ('noresp', reply) entries."""
        cdef list out = []
        cdef const char *sp
        cdef const char *rp = NULL
        cdef Py_ssize_t sn, rn = 0
        cdef Py_buffer view
        if self.router is None:
            raise TypeError('NatsParser.route() needs a router (router is None)')
        as_utf8(subject, &sp, &sn, False)
        if reply is not None:
            as_utf8(reply, &rp, &rn, False)
        PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
        try:
            self.pubs_in += 1
            self._route(sp, sn, rp, rn, <const char *>view.buf, view.len, out)
        finally:
            PyBuffer_Release(&view)
        return out

    cdef int _route(self, const char *s, Py_ssize_t sn, const char *r, Py_ssize_t rn,
                    const char *d, Py_ssize_t dn, list out) except -1:
        """A PUB: an event with the defaults, routed; problems go to ``out``."""
        cdef object subject
        cdef Router rt = self.router
        cdef int64_t before
        subject = self._pub_subject(s, sn)
        if rn:
            _nats_str(r, rn, 'reply subject')      # (a Parser Error, as on the other path)
        if self.pub_allow is not None or self.pub_deny is not None:
            try:
                if not self._allowed(subject):
                    self.denied += 1
                    out.append(('error', 'Permissions Violation for Publish to "{}"'.format(
                        subject)))
                    return 0
            except SubjectError:
                out.append(('error', 'Invalid Publish Subject'))
                return 0
        before = rt.n_delivered
        try:
            self._publish_default(subject, r, rn, d, dn)
        except SubjectError:
            out.append(('error', 'Invalid Publish Subject'))
            return 0
        except UnicodeDecodeError:
            out.append(('error', 'Invalid Publish Subject'))
            return 0
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it: as nats-server, no -ERR
        except SignatureError as exc:
            # the trust policy: in a publish permission's words, the refusal
            # NATS clients report without taking the connection down
            out.append(('error', 'Permissions Violation for Publish to "{}": {}'.format(
                subject, exc)))
            return 0
        except FastflowError as exc:        # the flow is closed
            out.append(('error', str(exc)))
            return 0
        if rn and rt.n_delivered == before:
            out.append(('noresp', PyUnicode_DecodeUTF8(r, rn, 'replace')))
        return 0


cdef str _nats_str(const char *p, Py_ssize_t n, str what):
    try:
        return PyUnicode_DecodeUTF8(p, n, 'strict')
    except UnicodeDecodeError:
        raise NatsError('Parser Error', 'the {} is not UTF-8'.format(what)) from None
