"""The NATS client protocol's input side (docs/nats.md), pure-Python twin of
src_ext/wire/nats_in.pyx: ``NatsParser`` cuts the text protocol (PUB,
HPUB, SUB, UNSUB, CONNECT, PING, PONG, ...) out of a byte stream fed in
any pieces, op names in any case, and routes PUB to the router as an
event with the defaults (a new id, the flow's source, type = the
subject).  The MSG / HMSG lines of NATS subscriptions are written by
their NatsTargets (nats_out.py).
"""

import re

from fastflow._ref import event as _event
from fastflow._ref.event import (
    _GENID,
    _HEADER,
    EV_VERSION,
    EVF_GENID,
    EVF_TYPE_SUBJECT,
    _final,
    _record_bytes,
    _ro,
)
from fastflow._ref.wire.door import DoorParser
from fastflow._ref.wire.outbuf import _as_utf8
from fastflow.errors import (EventTooLarge, FastflowError, LogFullError, NatsError,
                             SignatureError, SubjectError)

__all__ = ("NatsParser", "NatsRoute")

NATS_MAX_ARGS = 5
NATS_NUM_MAX = 18               # digits of a size or a max (fits an int64)

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

# op names, lower case (only ASCII letters are folded, as bytes.lower() does)
_OPS = {b"pub": NOP_PUB, b"hpub": NOP_HPUB, b"sub": NOP_SUB, b"unsub": NOP_UNSUB,
        b"ping": NOP_PING, b"pong": NOP_PONG, b"connect": NOP_CONNECT, b"info": NOP_INFO,
        b"+ok": NOP_OK, b"-err": NOP_ERR, b"msg": NOP_MSG, b"hmsg": NOP_HMSG}

_NAME = re.compile(rb"[^ \t]*")         # the op name: up to a space or a tab
_ARG = re.compile(rb"[^ \t]+")          # the arguments, separated by spaces or tabs


def _num(b):
    """The decimal number ``b`` (bytes), -1 if it is not one."""
    if not b or len(b) > NATS_NUM_MAX or not b.isdigit():
        return -1
    return int(b)


def _nats_str(b, what):
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise NatsError("Parser Error", f"the {what} is not UTF-8") from None


@_final
class NatsRoute:
    """Where a cluster link's parser routes the MSGs of one sid (the link's
    subscription on the backbone, docs/cluster.md): into ``router`` as an
    event from another node, its subject without the first ``strip`` bytes
    (the backbone's prefix), a reply subject without ``reply_prefix``;
    ``group`` None: to the targets outside queue groups, else to one local
    member of that queue group."""

    __slots__ = ("_router", "_strip", "_group", "_reply_prefix", "msgs", "bad")

    def __init__(self, router, strip=0, group=None, reply_prefix=b""):
        if router is None:
            raise TypeError("Argument 'router' must not be None")
        if isinstance(reply_prefix, str):
            reply_prefix = reply_prefix.encode("utf-8")
        strip = int(strip)
        if strip < 0:
            raise ValueError("strip must be >= 0")
        self._router = router
        self._strip = strip
        self._group = group
        self._reply_prefix = reply_prefix
        self.msgs = 0
        self.bad = 0

    router = _ro("_router")
    strip = _ro("_strip")
    group = _ro("_group")
    reply_prefix = _ro("_reply_prefix")


@_final
class NatsParser(DoorParser):
    """Cuts the NATS client protocol out of a byte stream fed in any pieces
    (a ``DoorParser``).

    ``feed(data)`` returns entries for what it completed, except the PUBs it
    routes itself (``router`` set, ``route_pubs``, and no other op before
    them in this feed): those go to ``router`` as events with the
    defaults.  Entries: ``('connect', json bytes)``, ``('sub', subject,
    queue or None, sid)``, ``('unsub', sid, max)``, ``('ping',)``,
    ``('pong',)``, ``('pub', subject, reply or None, payload)``,
    ``('hpub', subject, reply or None, headers, payload)``, ``('info',
    json bytes)``, ``('+ok',)``, ``('-err', text)``, and from routed PUBs
    ``('error', text)`` (a non-closing -ERR: invalid publish subject,
    permissions) and ``('noresp', reply)`` (a request nobody received).
    A protocol error raises ``NatsError`` (its ``text`` is the -ERR text)
    whose ``frames`` are the entries before it; the parser then refuses
    more input.
    """

    __slots__ = ("_ops_in", "client", "routes")

    _error = NatsError

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native NatsParser before __init__
        o = DoorParser.__new__(cls)
        o._ops_in = 0
        o.client = False
        o.routes = None
        return o

    def __init__(self, router=None, out=None, max_payload=1 << 20, max_control=4096, *,
                 client=False, routes=None):
        DoorParser.__init__(self, router, out, max_payload, max_control)
        if routes is not None and type(routes) is not dict:
            raise TypeError("routes must be a dict (sid bytes -> NatsRoute) or None")
        self.client = bool(client)      # a cluster link's: a server's ops (MSG, HMSG)
        self.routes = routes            # (client) sid bytes -> NatsRoute: MSGs routed here

    ops_in = _ro("_ops_in")

    def _malformed_before(self):
        return NatsError(self._failed.text, f"the stream was malformed before: {self._failed}")

    def _subject_str(self, s):
        return _nats_str(s, "subject")

    def _parse(self, p, out):
        """Handle the complete ops of ``p``; returns the bytes used."""
        off = 0
        n = len(p)
        mc = self._max_control
        # PUBs are routed here only until an op goes back to Python: a SUB
        # before a PUB must be handled before that PUB
        in_order = True
        while off < n:
            if self.client and not in_order:
                # a cluster link's: it handles that op before the MSGs after
                # it are routed (at its next feed) -- in order
                break
            e = p.find(b"\n", off)
            if e < 0:
                # (a CR last may be the CR of the CRLF: not part of the line)
                if n - off - (p[n - 1] == 13) > mc:
                    raise NatsError("maximum control line exceeded",
                                    f"no line end within {mc} bytes (max_control)")
                break
            ll = e - off                    # without the \n
            end = e + 1                     # where the next op (or the payload) starts
            if ll and p[e - 1] == 13:
                ll -= 1
            if ll > mc:
                raise NatsError("maximum control line exceeded",
                                f"a line of {ll} bytes, max_control is {mc}")
            line = p[off:off + ll]
            k = _NAME.match(line).end()
            op = _OPS.get(line[:k].lower(), 0)
            if op == 0:
                raise NatsError("Unknown Protocol Operation", repr(line[:32]))
            self._ops_in += 1
            if op == NOP_CONNECT or op == NOP_INFO or op == NOP_ERR:
                rest = line[k:].lstrip(b" \t")
                in_order = False
                if op == NOP_CONNECT:
                    out.append(("connect", rest))
                elif op == NOP_INFO:
                    out.append(("info", rest))
                else:
                    out.append(("-err", rest.decode("utf-8", "replace")))
                off = end
                continue
            a = _ARG.findall(line, k)
            na = len(a)
            if na > NATS_MAX_ARGS:
                raise NatsError("Parser Error", f"too many arguments in {line[:64]!r}")
            if op == NOP_MSG or op == NOP_HMSG:
                if not self.client:
                    raise NatsError("Unknown Protocol Operation", "{} is sent by servers, not "
                                    "clients".format("MSG" if op == NOP_MSG else "HMSG"))
                # a server's MSG <subject> <sid> [reply] <size> (HMSG: <hsize> <size>)
                hn = 0
                if op == NOP_MSG:
                    if na != 3 and na != 4:
                        raise NatsError("Parser Error", "MSG takes a subject, a sid, an "
                                        "optional reply subject and a size, got "
                                        f"{na} arguments")
                else:
                    if na != 4 and na != 5:
                        raise NatsError("Parser Error", "HMSG takes a subject, a sid, an "
                                        "optional reply subject, a header size and a total "
                                        f"size, got {na} arguments")
                    hn = _num(a[na - 2])
                tn = _num(a[na - 1])
                if tn < 0 or hn < 0 or hn > tn:
                    raise NatsError("Parser Error", f"bad size in {line[:64]!r}")
                if tn > self._max_payload:
                    raise NatsError("Maximum Payload Violation", f"a payload of {tn} bytes, "
                                    f"max_payload is {self._max_payload}")
                body = end
                if n - body < tn + 2:
                    self._need = body + tn + 2 - off
                    self._ops_in -= 1
                    break
                if p[body + tn] != 13 or p[body + tn + 1] != 10:
                    raise NatsError("Parser Error", f"the payload of {tn} bytes is not "
                                    "followed by CRLF")
                rt_ = None
                if op == NOP_MSG and in_order and self.routes is not None:
                    rt_ = self.routes.get(bytes(a[1]))
                if rt_ is not None:
                    self._route_msg(rt_, a[0], a[2] if na == 4 else None,
                                    bytes(p[body:body + tn]), out)
                else:
                    in_order = False
                    out.append(("msg", _nats_str(a[0], "subject"), _nats_str(a[1], "sid"),
                                _nats_str(a[2], "reply subject")
                                if na == (4 if op == NOP_MSG else 5) else None,
                                bytes(p[body:body + hn]) if hn else None,
                                bytes(p[body + hn:body + tn])))
                off = body + tn + 2
                continue
            if op == NOP_PUB or op == NOP_HPUB:
                if op == NOP_PUB:
                    if na != 2 and na != 3:
                        raise NatsError("Parser Error", "PUB takes a subject, an optional reply "
                                        f"subject and a size, got {na} arguments")
                    hn = 0
                    tn = _num(a[na - 1])
                else:
                    if na != 3 and na != 4:
                        raise NatsError("Parser Error", "HPUB takes a subject, an optional "
                                        "reply subject, a header size and a total size, got "
                                        f"{na} arguments")
                    hn = _num(a[na - 2])
                    tn = _num(a[na - 1])
                    if hn < 0 or (tn >= 0 and hn > tn):
                        raise NatsError("Parser Error", f"HPUB header size {a[na - 2]!r} is "
                                        "not a number up to the total size")
                if tn < 0:
                    raise NatsError("Parser Error", f"size {a[na - 1]!r} is not a number")
                if tn > self._max_payload:
                    raise NatsError("Maximum Payload Violation", f"a payload of {tn} bytes, "
                                    f"max_payload is {self._max_payload}")
                body = end
                if n - body < tn + 2:
                    self._need = body + tn + 2 - off
                    self._ops_in -= 1       # (counted once, when it is all here)
                    break                   # the payload is not all here yet
                if p[body + tn] != 13 or p[body + tn + 1] != 10:
                    raise NatsError("Parser Error", f"the payload of {tn} bytes is not "
                                    "followed by CRLF")
                if op == NOP_PUB:
                    if in_order and self._route_pubs and self._router is not None:
                        self._pubs_in += 1
                        self._route(a[0], a[1] if na == 3 else None, p[body:body + tn], out)
                    else:
                        in_order = False
                        out.append(("pub", _nats_str(a[0], "subject"),
                                    _nats_str(a[1], "reply subject") if na == 3 else None,
                                    p[body:body + tn]))
                else:
                    in_order = False
                    out.append(("hpub", _nats_str(a[0], "subject"),
                                _nats_str(a[1], "reply subject") if na == 4 else None,
                                p[body:body + hn], p[body + hn:body + tn]))
                off = body + tn + 2
                continue
            in_order = False
            if op == NOP_SUB:
                if na != 2 and na != 3:
                    raise NatsError("Parser Error", "SUB takes a subject, an optional queue "
                                    f"group and a sid, got {na} arguments")
                out.append(("sub", _nats_str(a[0], "subject"),
                            _nats_str(a[1], "queue group") if na == 3 else None,
                            _nats_str(a[na - 1], "sid")))
            elif op == NOP_UNSUB:
                if na != 1 and na != 2:
                    raise NatsError("Parser Error", "UNSUB takes a sid and an optional max, "
                                    f"got {na} arguments")
                v = 0
                if na == 2:
                    v = _num(a[1])
                    if v < 0:
                        raise NatsError("Parser Error", f"UNSUB max {a[1]!r} is not a number")
                out.append(("unsub", _nats_str(a[0], "sid"), v))
            elif op == NOP_PING:
                out.append(("ping",))
            elif op == NOP_PONG:
                out.append(("pong",))
            elif op == NOP_OK:
                out.append(("+ok",))
            else:                           # MSG / HMSG: the server's ops, not a client's
                raise NatsError("Unknown Protocol Operation", "{} is sent by servers, not "
                                "clients".format("MSG" if op == NOP_MSG else "HMSG"))
            off = end
        return off

    def _route_msg(self, rt_, s, r, d, out):
        """A cluster link's MSG: the event record ``d`` from another node,
        into the router of its sid's route ``rt_``."""
        rt_.msgs += 1
        self._pubs_in += 1
        s = bytes(s)
        if len(s) <= rt_.strip:
            rt_.bad += 1
            out.append(("bad", f"subject {s!r} lacks its prefix"))
            return
        rp = rt_.reply_prefix
        if r:
            r = bytes(r)
            if rp and len(r) > len(rp) and r.startswith(rp):
                r = r[len(rp):]
        try:
            subject = self._pub_subject(s[rt_.strip:])
            if rt_.group is not None:
                rt_.router.publish_record(subject, d, r, self._out, group=rt_.group)
            else:
                rt_.router.publish_record(subject, d, r, self._out, groups=False)
        except (LogFullError, EventTooLarge):
            pass                        # a stream refused it; the subscribers got it
        except (FastflowError, ValueError) as exc:
            rt_.bad += 1
            out.append(("bad", str(exc)))

    def route(self, subject, reply, payload):
        """Publish ``payload`` on ``subject`` (with ``reply``) as the C path
        does; returns the ('error', text) / ('noresp', reply) entries."""
        if self._router is None:
            raise TypeError("NatsParser.route() needs a router (router is None)")
        out = []
        s = _as_utf8(subject, False)
        r = _as_utf8(reply, False) if reply is not None else None
        d = _record_bytes(payload)
        self._pubs_in += 1
        self._route(s, r, d, out)
        return out

    def _route(self, s, r, d, out):
        """A PUB (``s`` the subject, ``r`` the reply or None / empty, ``d``
        the payload: bytes): an event with the defaults, routed; problems
        go to ``out``."""
        rt = self._router
        subject = self._pub_subject(s)
        if r:
            _nats_str(r, "reply subject")   # (as a PUB that comes back as an entry)
        try:
            if (self._pub_allow is not None or self._pub_deny is not None) \
                    and not self._allowed(subject):
                self._denied += 1
                out.append(("error", f'Permissions Violation for Publish to "{subject}"'))
                return
        except SubjectError:
            # (no pattern matches an invalid subject: it is refused as such)
            out.append(("error", "Invalid Publish Subject"))
            return
        # the record: as Event.encode() of an event with every default
        srcb = rt.source.encode("utf-8", "surrogatepass")    # (as the Router keeps it)
        rec = b"".join((
            _HEADER.pack(EV_VERSION, EVF_GENID | EVF_TYPE_SUBJECT, 0, 0, len(srcb) & 0xFFFF,
                         0, 0, 0),
            _GENID.pack(_event._id_prefix, _event._next_gid() & 0xFFFFFFFFFFFFFFFF),
            srcb, d))
        before = rt.n_delivered
        try:
            rt.publish_wire(subject, r, rec, self._out, True)
        except (SubjectError, UnicodeDecodeError):
            out.append(("error", "Invalid Publish Subject"))
            return
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it: as nats-server, no -ERR
        except SignatureError as exc:
            # the trust policy: in a publish permission's words, the refusal
            # NATS clients report without taking the connection down
            out.append(("error", 'Permissions Violation for Publish to "{}": {}'.format(
                subject, exc)))
            return
        except FastflowError as exc:        # the flow is closed
            out.append(("error", str(exc)))
            return
        if r and rt.n_delivered == before:
            out.append(("noresp", r.decode("utf-8", "replace")))
