"""The native protocol's frame codec (docs/protocol.md), pure-Python
reference for src_ext/codec.pyx: OutBuf collects a connection's output
frames (the router appends MSG frames to it directly; for the NATS door,
raw control lines (``write``) and MSG / HMSG lines), FrameParser cuts
frames out of a byte stream (any split) and routes PUB frames to the
router, handing every other frame to Python (runs of MSG frames, on the
client side, as MsgBatch columns).  DoorParser, its base, is the input
side both front doors share (FrameParser and natsproto's NatsParser).

A frame: a 16-byte header (u32 size = bytes after this field, u8 version,
u8 op, u16 flags, u32 id, u16 subject_len, u16 reply_len), then the
subject, the reply and the body; all integers little-endian.
"""

import struct
from array import array

from fastflow._ref import event as _event
from fastflow._ref.event import (
    _GENID,
    _HEADER,
    EV_GENID,
    EV_HEADER,
    EV_MAX_STRING,
    EV_VERSION,
    EVF_GENID,
    EVF_TYPE_SUBJECT,
    _c_int,
    _c_ssize,
    _ev_data_offset,
    _ev_decode,
    _final,
    _record_bytes,
    _ro,
)
from fastflow._ref.matcher import Matcher
from fastflow._ref.subjects import subject_error
from fastflow.errors import EventError, EventTooLarge, FastflowError, LogFullError, SubjectError

__all__ = ("FLAGS", "OPS", "DoorParser", "FrameParser", "MsgBatch", "OutBuf", "ProtocolError",
           "error_code")

FR_HEADER = 16
FR_VERSION = 1
FR_MIN_SIZE = 12                # size field minimum (header after the size)

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

FL_ACK = 1                      # PUB, PUB_BATCH: answer with PUBACK
FL_NO_RESPONDERS = 2            # MSG: no subscriber for the request
FL_CLOSE = 1                    # ERR: the connection closes after it

OPS = {"INFO": OP_INFO, "CONNECT": OP_CONNECT, "PUB": OP_PUB, "PUBACK": OP_PUBACK,
       "PUB_BATCH": OP_PUB_BATCH, "SUB": OP_SUB, "UNSUB": OP_UNSUB, "MSG": OP_MSG,
       "PING": OP_PING, "PONG": OP_PONG, "OK": OP_OK, "ERR": OP_ERR, "STREAM": OP_STREAM,
       "REPLAY": OP_REPLAY, "CONSUMER": OP_CONSUMER, "ACK": OP_ACK}
FLAGS = {"ACK": FL_ACK, "NO_RESPONDERS": FL_NO_RESPONDERS, "CLOSE": FL_CLOSE}

_FRAME = struct.Struct("<IBBHIHH")
_U32 = struct.Struct("<I")


class ProtocolError(FastflowError):
    """A malformed frame; ``code`` is the protocol's error code."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code
        self.frames = []        # what the parser handled before the bad frame

    def __reduce__(self):
        return (ProtocolError, (self.code, str(self)))


# -- the native core's argument conversions ------------------------------------------


def _c_uint32(v):
    """``v`` as a C uint32_t argument."""
    if type(v) is not int:
        if isinstance(v, int):
            v = int(v)
        else:
            conv = getattr(type(v), "__int__", None)
            if conv is None:
                raise TypeError("an integer is required")
            v = conv(v)
    if v < 0:
        raise OverflowError("can't convert negative value to uint32_t")
    if v > 0xFFFFFFFF:
        raise OverflowError("value too large to convert to uint32_t")
    return v


def _as_utf8(s, pattern):
    """The UTF-8 bytes of a str or bytes argument (the native ``as_utf8``:
    bytes are taken as they are)."""
    if isinstance(s, str):
        try:
            return s.encode("utf-8")
        except UnicodeEncodeError:
            raise subject_error("pattern" if pattern else "subject", s,
                                "not encodable as UTF-8") from None
    if isinstance(s, bytes):
        return bytes(s)
    raise TypeError("{} must be str or bytes, not {}".format(
        "pattern" if pattern else "subject", type(s).__name__))


def _typed(v, cls):
    """Assignment to a typed attribute of a native class (None allowed)."""
    if v is not None and not isinstance(v, cls):
        raise TypeError("Cannot convert {} to {}.{}".format(
            type(v).__name__, cls.__module__, cls.__qualname__))
    return v


def _typed_arg(name, v, cls):
    """A typed argument of a native method (None allowed)."""
    if v is not None and not isinstance(v, cls):
        raise TypeError("Argument '{}' has incorrect type (expected {}.{}, got {})".format(
            name, cls.__module__, cls.__qualname__, type(v).__name__))
    return v


def _router_cls():
    from fastflow._ref.router import Router     # (router.py imports this module)
    return Router


# -- output ---------------------------------------------------------------------------


@_final
class OutBuf:
    """A connection's pending output: frames appended by the router, taken
    by the connection once per loop tick (``take()``), written with one
    syscall.

    ``max_pending`` bounds the bytes waiting here (0 = no limit); a frame
    that would pass it is not added and ``overflow`` is set (the
    connection is then cut as a slow consumer).  ``on_data`` is called
    (no arguments) when the buffer goes from empty to non-empty."""

    __slots__ = ("_buf", "_max_pending", "on_data", "_overflow", "_closed", "_frames", "_msgs",
                 "_bytes_out", "_dropped", "flush_at", "on_flush")

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native OutBuf before __init__
        o = object.__new__(cls)
        o._buf = bytearray()
        o._max_pending = 0
        o.on_data = None
        o.flush_at = 0          # call on_flush once this many bytes wait (0: never)
        o.on_flush = None
        o._overflow = False
        o._closed = False
        o._frames = 0
        o._msgs = 0
        o._bytes_out = 0
        o._dropped = 0
        return o

    def __init__(self, max_pending=64 << 20, on_data=None):
        self._max_pending = _c_ssize(max_pending)
        self.on_data = on_data

    frames = _ro("_frames")
    msgs = _ro("_msgs")
    bytes_out = _ro("_bytes_out")
    dropped = _ro("_dropped")

    @property
    def max_pending(self):
        return self._max_pending

    @max_pending.setter
    def max_pending(self, v):
        self._max_pending = _c_ssize(v)

    @property
    def overflow(self):
        return self._overflow

    @overflow.setter
    def overflow(self, v):
        self._overflow = bool(v)

    @property
    def closed(self):
        return self._closed

    @closed.setter
    def closed(self, v):
        self._closed = bool(v)

    def __len__(self):
        return len(self._buf)

    def _reserve(self, size):
        """Room for ``size`` more bytes, or False (and ``overflow``) past the limit."""
        if self._closed:
            self._dropped += 1
            return False
        if self._max_pending and len(self._buf) + size > self._max_pending:
            self._dropped += 1
            if not self._overflow:
                self._overflow = True
                # nothing may be pending here (the socket holds the rest):
                # make the connection look now, not at its next tick
                if not self._buf and self.on_data is not None:
                    self.on_data()
            return False
        return True

    def _frame(self, op, flags, fid, s, r, b0, b1=b""):
        """Append one frame (body = b0 + b1; all bytes); 0 if it was dropped
        (engine use: the router's MSG frames)."""
        sn = len(s)
        rn = len(r)
        size = FR_HEADER + sn + rn + len(b0) + len(b1)
        buf = self._buf
        was_empty = not buf
        if not self._reserve(size):
            return 0
        buf += _FRAME.pack((size - 4) & 0xFFFFFFFF, FR_VERSION, op & 0xFF, flags & 0xFFFF,
                           fid & 0xFFFFFFFF, sn & 0xFFFF, rn & 0xFFFF)
        buf += s
        buf += r
        buf += b0
        buf += b1
        self._wrote(was_empty, op == OP_MSG)
        return 1

    def _wrote(self, was_empty, msg):
        """Bytes were appended (after ``_reserve``): count the frame, call
        the hooks."""
        self._frames += 1
        if msg:
            self._msgs += 1
        if was_empty and self.on_data is not None:
            self.on_data()
        if self.flush_at and len(self._buf) >= self.flush_at and self.on_flush is not None:
            self.on_flush()

    def write(self, data):
        """Append raw bytes (a text protocol's control lines).  Returns
        False if they were dropped (over ``max_pending`` or closed)."""
        d = _record_bytes(data)
        was_empty = not self._buf
        if not self._reserve(len(d)):
            return False
        self._buf += d
        self._wrote(was_empty, False)
        return True

    def _nats_msg(self, sid, s, r, h, d):
        """Append ``MSG <s> <sid> [<r>] <len(d)>`` + ``d`` (``h`` None) or
        ``HMSG <s> <sid> [<r>] <len(h)> <len(h)+len(d)>`` + ``h`` + ``d``
        (all bytes); 0 if it was dropped (engine use: the router's NATS
        subscriptions)."""
        hn = len(h) if h is not None else 0
        dn = len(d)
        # (the limit is checked against the native core's bound of the size)
        bound = 5 + len(s) + 1 + len(sid) + 1 + len(r) + 1 + 40 + 2 + hn + dn + 2
        was_empty = not self._buf
        if not self._reserve(bound):
            return 0
        parts = [b"HMSG " if h is not None else b"MSG ", s, b" ", sid, b" "]
        if r:
            parts.append(r)
            parts.append(b" ")
        if h is not None:
            parts.append(b"%d %d\r\n" % (hn, hn + dn))
            parts.append(h)
        else:
            parts.append(b"%d\r\n" % dn)
        parts.append(d)
        parts.append(b"\r\n")
        self._buf += b"".join(parts)
        self._wrote(was_empty, True)
        return 1

    def nats_msg(self, subject, sid, reply=None, headers=None, data=b""):
        """Append a NATS ``MSG`` (``headers`` None) or ``HMSG`` line with
        its payload.  Returns False if it was dropped."""
        s = _as_utf8(subject, False)
        i = _as_utf8(sid, False)
        r = _as_utf8(reply, False) if reply is not None else b""
        h = bytes(headers) if headers is not None else None
        d = _record_bytes(data)
        return self._nats_msg(i, s, r, h, d) == 1

    def frame(self, op, flags=0, id=0, subject=b"", reply=b"", body=b""):
        """Append one frame (Python use: control frames).  Returns False if
        it was dropped (over ``max_pending`` or closed)."""
        op = _c_int(op)
        flags = _c_int(flags)
        id = _c_uint32(id)
        s = _as_utf8(subject, True) if subject else b""
        r = _as_utf8(reply, True) if reply else b""
        if len(s) > 65535 or len(r) > 65535:
            raise ValueError("subject and reply are limited to 65535 bytes")
        return self._frame(op, flags, id, s, r, _record_bytes(body)) == 1

    def _pub_default(self, s, r, src, d, fid, flags):
        """A PUB frame of an event with every default: a new generated id,
        ``src`` (the source's UTF-8 bytes), type = the subject; 0 if it was
        dropped."""
        sn = len(s)
        rn = len(r)
        srcn = len(src)
        size = FR_HEADER + sn + rn + EV_HEADER + EV_GENID + srcn + len(d)
        buf = self._buf
        was_empty = not buf
        if not self._reserve(size):
            return 0
        gid = _event._next_gid()
        buf += _FRAME.pack((size - 4) & 0xFFFFFFFF, FR_VERSION, OP_PUB, flags & 0xFFFF,
                           fid & 0xFFFFFFFF, sn & 0xFFFF, rn & 0xFFFF)
        buf += s
        buf += r
        # the record: as Event.encode() of an event with every default
        buf += _HEADER.pack(EV_VERSION, EVF_GENID | EVF_TYPE_SUBJECT, 0, 0, srcn & 0xFFFF,
                            0, 0, 0)
        buf += _GENID.pack(_event._id_prefix, gid & 0xFFFFFFFFFFFFFFFF)
        buf += src
        buf += d
        self._wrote(was_empty, False)
        return 1

    def publish(self, subject, data, source, reply=None, id=0, flags=0):
        """Append a PUB frame of an event with the defaults (a new id,
        ``source`` (str), type = ``subject``) and payload ``data``: the
        client's fast path.  Returns False if it was dropped."""
        id = _c_uint32(id)
        flags = _c_int(flags)
        s = _as_utf8(subject, False)
        r = _as_utf8(reply, False) if reply is not None else b""
        src = _as_utf8(source, False)
        if len(s) > 65535 or len(r) > 65535 or len(src) > EV_MAX_STRING or not src:
            raise ValueError("subject, reply and source are limited to 65535 bytes "
                             "(and source must not be empty)")
        d = data if type(data) is bytes else _record_bytes(data)
        return self._pub_default(s, r, src, d, id, flags) == 1

    def publish_many(self, subject, datas, source):
        """``publish`` of every payload of ``datas`` (a list or tuple of
        bytes) on one subject; returns how many were appended."""
        s = _as_utf8(subject, False)
        src = _as_utf8(source, False)
        if len(s) > 65535 or len(src) > EV_MAX_STRING or not src:
            raise ValueError("subject and source are limited to 65535 bytes "
                             "(and source must not be empty)")
        if type(datas) is not tuple:
            datas = tuple(datas)
        n = len(datas)
        for i in range(n):
            d = datas[i]
            if type(d) is not bytes:
                raise TypeError("datas[{}]: expected bytes, got {}".format(i, type(d).__name__))
            if not self._pub_default(s, b"", src, d, 0, 0):
                return i
        return n

    def take(self):
        """Everything pending, as one bytes object (the buffer empties)."""
        if not self._buf:
            return b""
        out = bytes(self._buf)
        self._bytes_out += len(out)
        self._buf = bytearray()
        return out

    def clear(self):
        self._buf = bytearray()


# -- input ----------------------------------------------------------------------------


@_final
class MsgBatch:
    """The MSG frames of one ``FrameParser.feed`` run (``batch_msgs``):
    columns over one buffer of records, events made only when asked."""

    __slots__ = ("_sids", "_flags", "_offsets", "_subjects", "_replies", "_buffer", "_b")

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native MsgBatch (the parser fills it)
        o = object.__new__(cls)
        o._sids = None
        o._flags = None
        o._offsets = None
        o._subjects = None
        o._replies = None
        o._buffer = None
        o._b = None
        return o

    sids = _ro("_sids")
    flags = _ro("_flags")
    offsets = _ro("_offsets", "record i: buffer[offsets[i]:offsets[i+1]]")
    subjects = _ro("_subjects")
    replies = _ro("_replies", "str, or None")
    buffer = _ro("_buffer")

    def __len__(self):
        return len(self._sids)

    def _add(self, sid, flags, subject, reply, rec):
        b = self._b
        b += rec
        self._sids.append(sid)
        self._flags.append(flags)
        self._offsets.append(len(b))
        self._subjects.append(subject)
        self._replies.append(reply)

    def _seal(self):
        self._buffer = bytes(self._b)
        self._b = None

    def _index(self, i):
        i = _c_ssize(i)
        n = len(self._sids)
        if i < 0 or i >= n:
            raise IndexError("message {} of {}".format(i, n))
        return i

    def record(self, i):
        """The record of message ``i`` (bytes)."""
        i = self._index(i)
        return self._buffer[self._offsets[i]:self._offsets[i + 1]]

    def event(self, i):
        """Message ``i`` as an Event."""
        i = self._index(i)
        return _ev_decode(self._subjects[i], self._buffer, self._offsets[i],
                          self._offsets[i + 1], 0, None, 0, None)

    def events(self):
        """Every message as an Event (a list)."""
        buf = self._buffer
        offs = self._offsets
        subjects = self._subjects
        return [_ev_decode(subjects[i], buf, offs[i], offs[i + 1], 0, None, 0, None)
                for i in range(len(self._sids))]

    def datas(self):
        """The data of every message (a list of bytes), without making events."""
        buf = self._buffer
        offs = self._offsets
        out = []
        for i in range(len(self._sids)):
            a = offs[i]
            b = offs[i + 1]
            out.append(buf[a + _ev_data_offset(buf, a, b):b])
        return out


def _new_msg_batch():
    m = MsgBatch.__new__(MsgBatch)
    m._sids = array("q")
    m._flags = array("q")
    m._offsets = array("q", [0])
    m._subjects = []
    m._replies = []
    m._b = bytearray()
    return m


def _frame_str(b, what):
    """A frame's subject or reply (UTF-8 bytes) as a str."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(400, "malformed frame: its {} is not UTF-8".format(what)) from None


class DoorParser:
    """The input side of a front door's parser (FrameParser: the native
    protocol, NatsParser: NATS), pure-Python reference for the base class
    of src_ext/codec.pyx: the bytes of an incomplete frame / op held
    between feeds, the front door's state (``router``, ``out``, the publish
    permissions, the limits, ``route_pubs``), its counters, the last PUB
    subject decoded and the publish permission check.

    ``feed(data)`` hands what is complete to the subclass's ``_parse(p,
    out)`` (returns the bytes it used) and keeps the rest; when ``_parse``
    set ``_need`` (the bytes the buffered frame / op needs, 0: unknown)
    it is not called again until they are all here.  A protocol error (the
    subclass's ``_error`` type) gets the entries handled before it as
    ``frames`` and stops the parser: more input is refused with the error
    of ``_malformed_before()``.  The other hook: ``_subject_str(s)``, a
    subject's bytes as a str (or the subclass's error).
    """

    __slots__ = ("_buf", "_bytes_in", "_denied", "_failed", "_last_pb", "_last_ps",
                 "_max_connect", "_max_control", "_max_payload", "_need", "_out", "_pub_allow", "_pub_deny",
                 "_pubs_in", "_route_pubs", "_router", "resp_check")

    _error = ()                 # the door's protocol error type (the subclass's)

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native parser before __init__
        o = object.__new__(cls)
        o._buf = bytearray()
        o._need = 0                 # bytes the buffered frame / op needs (0: unknown)
        o._router = None
        o._out = None
        o._pub_allow = None
        o._pub_deny = None
        o.resp_check = None         # (subject) -> bool: a publish the Matchers refuse may
                                    # still go (a response); None: refused
        o._max_payload = 0
        o._max_control = 0
        o._max_connect = 0          # before CONNECT: the largest frame (0: none)
        o._route_pubs = False
        o._last_pb = None           # the last PUB subject (bytes and str):
        o._last_ps = None           # a stream of one subject decodes it once
        o._bytes_in = 0
        o._pubs_in = 0
        o._denied = 0
        o._failed = None            # the protocol error that stopped the parser
        return o

    def __init__(self, router, out, max_payload, max_control):
        # (the subclasses' __init__, with their defaults)
        router = _typed_arg("router", router, _router_cls())
        out = _typed_arg("out", out, OutBuf)
        max_payload = _c_ssize(max_payload)
        max_control = _c_ssize(max_control)
        self._router = router
        self._out = out
        self._max_payload = max_payload
        self._max_control = max_control

    bytes_in = _ro("_bytes_in")
    pubs_in = _ro("_pubs_in")
    denied = _ro("_denied")

    @property
    def router(self):
        """None: return PUBs too."""
        return self._router

    @router.setter
    def router(self, v):
        self._router = _typed(v, _router_cls())

    @property
    def out(self):
        """This connection's output (echo, acks)."""
        return self._out

    @out.setter
    def out(self, v):
        self._out = _typed(v, OutBuf)

    @property
    def pub_allow(self):
        """None: everything allowed."""
        return self._pub_allow

    @pub_allow.setter
    def pub_allow(self, v):
        self._pub_allow = _typed(v, Matcher)

    @property
    def pub_deny(self):
        """None: nothing denied."""
        return self._pub_deny

    @pub_deny.setter
    def pub_deny(self, v):
        self._pub_deny = _typed(v, Matcher)

    @property
    def max_payload(self):
        return self._max_payload

    @max_payload.setter
    def max_payload(self, v):
        self._max_payload = _c_ssize(v)

    @property
    def max_control(self):
        return self._max_control

    @max_control.setter
    def max_control(self, v):
        self._max_control = _c_ssize(v)

    @property
    def max_connect(self):
        return self._max_connect

    @max_connect.setter
    def max_connect(self, v):
        self._max_connect = _c_ssize(v)

    @property
    def route_pubs(self):
        """False until CONNECT (auth) is done (NATS: and in verbose mode)."""
        return self._route_pubs

    @route_pubs.setter
    def route_pubs(self, v):
        self._route_pubs = bool(v)

    @property
    def buffered(self):
        """Bytes of an incomplete frame / op held."""
        return len(self._buf)

    def feed(self, data):
        if self._failed is not None:
            raise self._malformed_before()
        data = _record_bytes(data)
        out = []
        self._bytes_in += len(data)
        try:
            if not self._buf:
                self._need = 0
                used = self._parse(data, out)
                if used < len(data):
                    self._keep(data[used:])
            else:
                # (as the native parser: on an error other than a protocol error the
                # held bytes stay as they were, the new ones appended)
                self._keep(data)
                if self._need and len(self._buf) < self._need:
                    return out          # a payload still arriving: nothing to parse yet
                self._need = 0
                used = self._parse(bytes(self._buf), out)
                if used:
                    del self._buf[:used]
        except self._error as exc:
            # the entries before the bad frame / op were handled: hand them over
            # too; the stream cannot be resynchronised, so the parser stops here
            exc.frames = out
            self._failed = exc
            self._buf = bytearray()
            raise
        return out

    def _keep(self, d):
        """Hold ``d`` (bytes) after the bytes held."""
        self._buf += d

    def _parse(self, p, out):
        """Handle the complete frames / ops of ``p`` (bytes), appending
        entries to ``out``; returns the bytes used (the subclass's)."""
        raise NotImplementedError

    def _malformed_before(self):
        """The error refusing input after ``_failed`` (the subclass's)."""
        raise NotImplementedError

    def _subject_str(self, s):
        """A subject (bytes) as a str (the subclass's)."""
        raise NotImplementedError

    def _pub_subject(self, s):
        """The subject of a PUB (``s``: bytes) as a str: a stream of one
        subject decodes it once."""
        if self._last_pb is not None and s == self._last_pb:
            return self._last_ps
        subject = self._subject_str(s)
        self._last_pb = s
        self._last_ps = subject
        return subject

    def _allowed(self, subject):
        """False if ``pub_allow`` / ``pub_deny`` refuse publishing to
        ``subject`` (a SubjectError if it is not valid)."""
        if (self._pub_allow is None or self._pub_allow.match(subject)) \
                and (self._pub_deny is None or not self._pub_deny.match(subject)):
            return True
        return self.resp_check is not None and bool(self.resp_check(subject))


@_final
class FrameParser(DoorParser):
    """Cuts frames of the native protocol out of a byte stream fed in any
    pieces (a ``DoorParser``).

    ``feed(data)`` returns the frames it completed, except the PUB frames
    without ACK it could route itself (``router`` set, ``route_pubs``):
    those go to ``router`` (a problem with one becomes an ``('error',
    code, message, id)`` entry, a request nobody received a ``('noresp',
    reply)`` entry).  Each returned frame is a tuple ``(op, flags, id,
    subject, reply, body)`` (subject and reply str, body bytes); with
    ``batch_msgs``, runs of MSG frames come as ``('msgs', MsgBatch)``.  A
    malformed frame raises ``ProtocolError`` (with the code) whose
    ``frames`` are the frames before it (handled); the parser then refuses
    more input.
    """

    __slots__ = ("_batch_msgs", "_frames_in", "_last_sb", "_last_ss")

    _error = ProtocolError

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native FrameParser before __init__
        o = DoorParser.__new__(cls)
        o._batch_msgs = False       # MSG frames as ('msgs', MsgBatch) runs
        o._last_sb = None           # the last MSG subject (bytes and str):
        o._last_ss = None           # a stream of one subject decodes it once
        o._frames_in = 0
        return o

    def __init__(self, router=None, out=None, max_payload=1 << 20, max_control=65536):
        DoorParser.__init__(self, router, out, max_payload, max_control)

    frames_in = _ro("_frames_in")

    @property
    def batch_msgs(self):
        """MSG frames as ('msgs', MsgBatch) runs."""
        return self._batch_msgs

    @batch_msgs.setter
    def batch_msgs(self, v):
        self._batch_msgs = bool(v)

    def _malformed_before(self):
        return ProtocolError(self._failed.code, "the stream was malformed before: {}".format(
            self._failed))

    def _subject_str(self, s):
        return _frame_str(s, "subject")

    def _parse(self, p, out):
        """Handle the complete frames of ``p``; returns the bytes used."""
        off = 0
        n = len(p)
        mb = None
        # PUBs are routed here only until a frame goes back to Python: a SUB
        # (or anything) before a PUB must be handled before that PUB
        in_order = True
        while n - off >= 4:
            size = _U32.unpack_from(p, off)[0]
            if size < FR_MIN_SIZE:
                raise ProtocolError(400, "malformed frame: size {} is below {}".format(
                    size, FR_MIN_SIZE))
            if self._max_connect and size > self._max_connect + FR_HEADER:
                # an unauthenticated client may not make the server buffer more
                raise ProtocolError(431, "frame of {} bytes before CONNECT exceeds "
                                    "max_connect={}".format(size, self._max_connect))
            if size > self._max_payload + self._max_control + FR_HEADER and size > 65536:
                raise ProtocolError(413, "frame of {} bytes exceeds max_payload={}".format(
                    size, self._max_payload))
            total = size + 4
            if n - off < total:
                break
            _, version, op, flags, fid, sn, rn = _FRAME.unpack_from(p, off)
            if version != FR_VERSION:
                raise ProtocolError(505, "unsupported protocol version {}".format(version))
            if op < 1 or op > OP_LAST:
                raise ProtocolError(400, "unknown op {}".format(op))
            if FR_HEADER + sn + rn > total:
                raise ProtocolError(400, "malformed frame: subject ({}) and reply ({}) overrun "
                                    "a frame of {} bytes".format(sn, rn, size))
            bn = total - FR_HEADER - sn - rn
            self._frames_in += 1
            if op == OP_PUB or op == OP_PUB_BATCH or op == OP_MSG:
                if bn > self._max_payload and op != OP_PUB_BATCH:
                    raise ProtocolError(413, "payload of {} bytes exceeds max_payload={}".format(
                        bn, self._max_payload))
            elif sn + rn + bn > self._max_control:
                raise ProtocolError(431, "control frame of {} bytes exceeds max_control={}".format(
                    sn + rn + bn, self._max_control))
            s0 = off + FR_HEADER
            r0 = s0 + sn
            b0 = r0 + rn
            if op == OP_MSG and self._batch_msgs:
                if mb is None:
                    mb = _new_msg_batch()
                sb = p[s0:r0]
                if self._last_sb is not None and sb == self._last_sb:
                    subj = self._last_ss
                else:
                    subj = _frame_str(sb, "subject")
                    self._last_sb = sb
                    self._last_ss = subj
                mb._add(fid, flags, subj, _frame_str(p[r0:b0], "reply") if rn else None,
                        p[b0:off + total])
                off += total
                continue
            if mb is not None:          # keep the order: the run of MSGs first
                mb._seal()
                out.append(("msgs", mb))
                mb = None
            if (op == OP_PUB or op == OP_PUB_BATCH) and in_order and self._route_pubs \
                    and self._router is not None and not flags & FL_ACK:
                if op == OP_PUB:
                    self._pubs_in += 1
                    self._route_pub(p[s0:r0], p[r0:b0], p[b0:off + total], fid, out)
                else:
                    self._route_batch(p[b0:off + total], fid, out)
            else:
                in_order = False
                out.append((op, flags, fid, _frame_str(p[s0:r0], "subject"),
                            _frame_str(p[r0:b0], "reply"), p[b0:off + total]))
            off += total
        if mb is not None:
            mb._seal()
            out.append(("msgs", mb))
        return off

    def _route_batch(self, b, fid, out):
        """The items of a PUB_BATCH body, routed one by one."""
        off = 0
        i = 0
        bn = len(b)
        while off < bn:
            if bn - off < 6:
                raise ProtocolError(400, "malformed PUB_BATCH: {} bytes left, an item header "
                                    "is 6".format(bn - off))
            sn, rn = _BATCH_ITEM.unpack_from(b, off)
            if 6 + sn + rn > bn - off:
                raise ProtocolError(400, "malformed PUB_BATCH: an item of {} + {} bytes overruns "
                                    "the frame".format(sn, rn))
            if rn > self._max_payload:
                raise ProtocolError(413, "payload of {} bytes exceeds max_payload={}".format(
                    rn, self._max_payload))
            self._pubs_in += 1
            k = len(out)
            self._route_pub(b[off + 6:off + 6 + sn], b"", b[off + 6 + sn:off + 6 + sn + rn],
                            fid, out)
            if len(out) > k and out[k][0] == "error":
                # a bad item stops the batch: the items before it stay published
                e = out[k]
                out[k] = ("error", e[1], "PUB_BATCH item {}: {} ({} items before it published, "
                          "the rest not)".format(i, e[2], i), fid)
                del out[k + 1:]
                return
            off += 6 + sn + rn
            i += 1

    def _route_pub(self, s, r, b, fid, out):
        """A PUB without ACK: route it here; problems go to ``out`` as
        ('error', code, message, id) and ('noresp', reply) entries."""
        reply = _frame_str(r, "reply") if r else None      # (first, as the native core)
        subject = self._pub_subject(s)
        router = self._router
        before = router.n_delivered
        try:
            if (self._pub_allow is not None or self._pub_deny is not None) \
                    and not self._allowed(subject):
                self._denied += 1
                out.append(("error", 403, "permission denied: publish to '{}'".format(subject),
                            fid))
                return
            router._Router__publish_wire(subject, r, b, self._out)
        except (SubjectError, EventError, FastflowError) as exc:
            out.append(("error", error_code(exc), str(exc), fid))
            return
        if reply is not None and router.n_delivered == before:
            out.append(("noresp", reply))


_BATCH_ITEM = struct.Struct("<HI")


def error_code(exc):
    """The protocol error code of an engine exception."""
    if isinstance(exc, LogFullError):
        return 507
    if isinstance(exc, EventTooLarge):
        return 413
    if isinstance(exc, (SubjectError, EventError)):
        return 422
    return 400


@_final
class Publisher:
    """A client's ``publish(subject, data=b'', /, *, reply=None,
    **attributes)``: bytes on the subject validated last (``vsubj``), no
    attributes, within ``max_data`` -> a PUB frame of a default event
    appended to ``out``.  Everything else goes to ``slow(subject, data,
    reply, attributes)``; a frame that does not fit to
    ``on_overflow(subject, data)``."""

    __slots__ = ("out", "slow", "on_overflow", "source", "vsubj", "max_data")

    def __init__(self, out, slow, on_overflow, source):
        if not isinstance(out, OutBuf):
            raise TypeError("Argument 'out' has incorrect type (expected {}.OutBuf, got {})"
                            .format(OutBuf.__module__, type(out).__name__))
        if type(source) is not str:
            raise TypeError("Argument 'source' has incorrect type (expected str, got {})"
                            .format(type(source).__name__))
        self.out = out
        self.slow = slow
        self.on_overflow = on_overflow
        self.source = source
        self.vsubj = None
        self.max_data = 0

    def __reduce__(self):
        raise TypeError("cannot pickle 'Publisher' object")

    def publish(self, *args, **attributes):
        nargs = len(args)
        if nargs < 1 or nargs > 2:
            raise TypeError("publish() takes a subject and optional data ({} positional "
                            "arguments given)".format(nargs))
        subject = args[0]
        data = args[1] if nargs == 2 else b""
        if not attributes:
            if subject is self.vsubj and type(data) is bytes and len(data) <= self.max_data:
                if not self.out.publish(subject, data, self.source):
                    self.on_overflow(subject, data)
                return None
            self.slow(subject, data, None, {})
            return None
        if "data" in attributes:
            if nargs == 2:
                raise TypeError("publish() got data both as an argument and as a keyword")
            data = attributes.pop("data")
        reply = attributes.pop("reply", None)
        self.slow(subject, data, reply, attributes)
        return None
