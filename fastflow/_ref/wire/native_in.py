"""The native protocol's input side, pure-Python twin of
src_ext/wire/native_in.pyx: ``FrameParser`` cuts frames (docs/protocol.md)
out of a byte stream (any split) and routes PUB frames to the router,
handing every other frame to Python (runs of MSG frames, on the client
side, as ``MsgBatch`` columns).
"""

from array import array

from fastflow._ref.event import _c_ssize, _ev_data_offset, _ev_decode, _final, _ro
from fastflow._ref.wire.door import DoorParser
from fastflow._ref.wire.proto import (
    BATCH_ITEM,
    FL_ACK,
    FR_HEADER,
    FR_MIN_SIZE,
    FR_VERSION,
    FRAME,
    OP_LAST,
    OP_MSG,
    OP_PUB,
    OP_PUB_BATCH,
    U32,
)
from fastflow.errors import EventError, FastflowError, ProtocolError, SubjectError
from fastflow.protocol import error_code

__all__ = ("FrameParser", "MsgBatch")


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
            size = U32.unpack_from(p, off)[0]
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
            _, version, op, flags, fid, sn, rn = FRAME.unpack_from(p, off)
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
            sn, rn = BATCH_ITEM.unpack_from(b, off)
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
            router.publish_wire(subject, r, b, self._out)
        except (SubjectError, EventError, FastflowError) as exc:
            out.append(("error", error_code(exc), str(exc), fid))
            return
        if reply is not None and router.n_delivered == before:
            out.append(("noresp", reply))
