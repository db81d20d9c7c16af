"""The native protocol's output side, pure-Python twin of
src_ext/wire/native_out.pyx: frames written into an OutBuf (the byte
layout of docs/protocol.md, here only), the wire target of a native
subscription (``NativeTarget``: MSG frames) and the client's
``Publisher`` (PUB frames).
"""

from fastflow._ref import event as _event
from fastflow._ref.event import (
    _GENID,
    _HEADER,
    EV_GENID,
    EV_HEADER,
    EV_VERSION,
    EVF_GENID,
    EVF_TYPE_SUBJECT,
    _final,
    _ro,
)
from fastflow._ref.wire.outbuf import OutBuf, WireTarget, _c_uint32
from fastflow._ref.wire.proto import FR_HEADER, FR_VERSION, FRAME, OP_MSG, OP_PUB

__all__ = ("NativeTarget", "Publisher")


def _native_frame(ob, op, flags, fid, s, r, b0, b1=b""):
    """Append one frame (body = b0 + b1; all bytes) to the OutBuf ``ob``;
    0 if it was dropped."""
    sn = len(s)
    rn = len(r)
    size = FR_HEADER + sn + rn + len(b0) + len(b1)
    buf = ob._buf
    was_empty = not buf
    if not ob._reserve(size):
        return 0
    buf += FRAME.pack((size - 4) & 0xFFFFFFFF, FR_VERSION, op & 0xFF, flags & 0xFFFF,
                      fid & 0xFFFFFFFF, sn & 0xFFFF, rn & 0xFFFF)
    buf += s
    buf += r
    buf += b0
    buf += b1
    ob._wrote(was_empty, op == OP_MSG)
    return 1


def _native_pub(ob, s, r, src, d, fid, flags):
    """A PUB frame of an event with every default: a new generated id,
    ``src`` (the source's UTF-8 bytes), type = the subject; 0 if it was
    dropped."""
    sn = len(s)
    rn = len(r)
    srcn = len(src)
    size = FR_HEADER + sn + rn + EV_HEADER + EV_GENID + srcn + len(d)
    buf = ob._buf
    was_empty = not buf
    if not ob._reserve(size):
        return 0
    gid = _event._next_gid()
    buf += FRAME.pack((size - 4) & 0xFFFFFFFF, FR_VERSION, OP_PUB, flags & 0xFFFF,
                      fid & 0xFFFFFFFF, sn & 0xFFFF, rn & 0xFFFF)
    buf += s
    buf += r
    # the record: as Event.encode() of an event with every default
    buf += _HEADER.pack(EV_VERSION, EVF_GENID | EVF_TYPE_SUBJECT, 0, 0, srcn & 0xFFFF,
                        0, 0, 0)
    buf += _GENID.pack(_event._id_prefix, gid & 0xFFFFFFFFFFFFFFFF)
    buf += src
    buf += d
    ob._wrote(was_empty, False)
    return 1


@_final
class NativeTarget(WireTarget):
    """A native-protocol subscription: each message goes to its
    connection's output as a MSG frame with its ``sid`` (engine use; see
    fastflow.server)."""

    __slots__ = ("_sid",)

    def __init__(self, outbuf, sid, echo=True):
        WireTarget.__init__(self, outbuf, echo)
        self._sid = _c_uint32(sid)

    sid = _ro("_sid")

    def write(self, msg):
        d = msg.data
        return _native_frame(self._outbuf, OP_MSG, 0, self._sid, msg.subject_b, msg.reply or b"",
                             msg.rec, d if d is not None else b"") == 1


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
