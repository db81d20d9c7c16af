"""The web doors' output side, pure-Python twin of src_ext/wire/web_out.pyx:
a delivery as a CloudEvents JSON event (structured mode), byte for byte
what ``fastflow.event.to_json`` writes, made once per message for every web
subscriber of it (kept in ``WireMsg.cache``); the WebSocket target
(``WsJsonTarget``: one text frame per event, RFC 6455, subprotocol
``cloudevents.json``) and the Server-Sent Events target (``SseTarget``: one
SSE message per event).  The native core writes the JSON in C and leaves
what it is not sure of to ``_event_json``; this twin uses ``_event_json``
for every message.
"""

from fastflow._ref.event import (
    Event,
    _arg_str,
    _c_int,
    _c_ssize,
    _ev_copy,
    _ev_decode,
    _final,
    _ro,
)
from fastflow._ref.wire.outbuf import WireTarget
from fastflow.errors import EventError

__all__ = ("SseTarget", "WsJsonTarget", "json_batch", "ws_frame_head")

WS_FIN = 0x80
WS_OP_TEXT = 1
WS_MAX_CONTROL = 125            # bytes of a control frame's payload


# -- the Python encoder (the native core's, for what C leaves to it) -----------------

_cloudevents = None             # fastflow.event, imported on first use (it imports the
                                # engine, which imports this core)


def _event_json(event, lineage):
    """The CloudEvents JSON a web subscriber gets of ``event``:
    ``fastflow.event.to_json(event, lineage)``.  For an event that to_json
    refuses (a record from the network may carry a lone surrogate in its
    id, source, type or fftrace, or a datacontenttype that is neither a
    string nor bytes), the same members with each lone surrogate written
    as a ``\\udXXX`` escape, and the data as ``data_base64`` when the
    content type is not a string: the delivery goes on."""
    global _cloudevents
    if _cloudevents is None:
        from fastflow import event as ce
        _cloudevents = ce
    ce = _cloudevents
    ct = event.datacontenttype
    if ct is None or type(ct) is str or type(ct) is bytes:
        try:
            return ce.to_json(event, lineage)
        except EventError:
            members, raw = ce._members(event, lineage)
    else:
        members = ce._attributes(event, lineage)
        for k, v in members.items():
            if type(v) is bytes:
                members[k] = ce._b64(v)
        raw = None
        if event.data:
            members["data_base64"] = ce._b64(event.data)
    out = b"{" + b",".join([_json_text(k) + b":" + _json_value(v)
                            for k, v in members.items()]) + b"}"
    if raw is not None:
        out = out[:len(out) - 1] + b',"data":' + raw + b"}"
    return out


def json_batch(events, lineage=True):
    """``events`` (a sequence of Events) in the JSON batch format
    (``application/cloudevents-batch+json``): the bytes of
    ``fastflow.event.to_json_batch(events, lineage)``.  Raises
    ``EventError`` where ``to_json`` does (no lone surrogate is escaped
    here), ``TypeError`` for an item that is not an Event."""
    global _cloudevents
    if _cloudevents is None:
        from fastflow import event as ce
        _cloudevents = ce
    to_json = _cloudevents.to_json
    out = []
    for ev in events:
        if not isinstance(ev, Event):
            raise TypeError("json_batch: an Event expected, got {}".format(type(ev).__name__))
        out.append(to_json(ev, lineage))
    return b"[" + b",".join(out) + b"]"


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def _json_text(s):
    """A JSON string as orjson writes it, lone surrogates as ``\\udXXX``."""
    out = []
    for c in s:
        o = ord(c)
        if c in _JSON_ESCAPES:
            out.append(_JSON_ESCAPES[c])
        elif o < 0x20 or 0xD800 <= o <= 0xDFFF:
            out.append("\\u{:04x}".format(o))
        else:
            out.append(c)
    return ('"' + "".join(out) + '"').encode("utf-8")


def _json_value(v):
    if type(v) is str:
        return _json_text(v)
    if v is True:
        return b"true"
    if v is False:
        return b"false"
    return str(v).encode("ascii")


def _web_json(msg, lineage):
    """The JSON of the WireMsg ``msg`` (once per message and flag)."""
    key = ("web", lineage)
    out = msg.cache.get(key)
    if out is None:
        ev = msg.event
        if ev is not None:
            # the event as published: without this flow's lineage entry
            # (which only the in-process deliveries carry)
            hev = Event.__new__(Event)
            _ev_copy(hev, ev)
            hev._origin = None
        else:
            rec = msg.rec
            hev = _ev_decode(msg.subject, rec, 0, len(rec), msg.seq, msg.stream, msg.ts, None)
        out = msg.cache[key] = _event_json(hev, lineage)
    return out


# -- WebSocket frames ------------------------------------------------------------------


def _ws_head(b0, n):
    """A server -> client frame head (unmasked): ``b0`` (FIN | opcode) and
    the payload length in 7, 7+16 or 7+64 bits."""
    if n <= 125:
        return bytes((b0, n))
    if n <= 65535:
        return bytes((b0, 126)) + n.to_bytes(2, "big")
    return bytes((b0, 127)) + n.to_bytes(8, "big")


def ws_frame_head(opcode, length, fin=True):
    """The head of a server -> client WebSocket frame (RFC 6455: unmasked)
    of ``opcode`` with a payload of ``length`` bytes: the bytes that go
    before the payload.  Control frames (close 8, ping 9, pong 10) carry at
    most 125 bytes and are never fragmented."""
    opcode = _c_int(opcode)
    length = _c_ssize(length)
    fin = bool(fin)
    if opcode not in (0, 1, 2, 8, 9, 10):
        raise ValueError("WebSocket opcode {} is not a defined one (0, 1, 2, 8, 9, 10)".format(
            opcode))
    if length < 0:
        raise ValueError("WebSocket payload length must be >= 0, got {}".format(length))
    if opcode >= 8 and (length > WS_MAX_CONTROL or not fin):
        raise ValueError("a WebSocket control frame (opcode {}) carries at most {} bytes and "
                         "is never fragmented, got {} bytes, fin={}".format(
                             opcode, WS_MAX_CONTROL, length, fin))
    return _ws_head((WS_FIN if fin else 0) | opcode, length)


# -- the targets -------------------------------------------------------------------------


@_final
class WsJsonTarget(WireTarget):
    """A WebSocket subscription of the CloudEvents WebSocket binding
    (subprotocol ``cloudevents.json``): each event one text frame (FIN,
    unmasked) carrying its JSON (fastflow.event.to_json; ``lineage`` False
    leaves out ffhops and fftrace)."""

    __slots__ = ("_lineage",)

    def __init__(self, outbuf, echo=True, lineage=True):
        WireTarget.__init__(self, outbuf, echo)
        self._lineage = bool(lineage)

    lineage = _ro("_lineage")

    def write(self, msg):
        js = _web_json(msg, self._lineage)
        ob = self._outbuf
        head = _ws_head(WS_FIN | WS_OP_TEXT, len(js))
        was_empty = not ob._buf
        if not ob._reserve(len(head) + len(js)):
            return False
        ob._buf += head
        ob._buf += js
        ob._wrote(was_empty, True)
        return True


@_final
class SseTarget(WireTarget):
    """A Server-Sent Events subscription: each event one message, ``id:
    <seq>`` when it was stored in ``stream`` (None: no ids), then ``data:
    <JSON>`` (fastflow.event.to_json; no ``event:`` field, so that
    EventSource.onmessage fires).  JSON data spliced in with line breaks in
    its whitespace goes as one ``data:`` line per line (a client joins them
    with LF)."""

    __slots__ = ("_lineage", "_stream")

    def __init__(self, outbuf, stream=None, echo=True, lineage=True):
        WireTarget.__init__(self, outbuf, echo)
        self._stream = _arg_str("stream", stream)
        self._lineage = bool(lineage)

    lineage = _ro("_lineage")

    @property
    def stream(self):
        """The stream whose seq is each message's ``id:`` (None: no ids)."""
        return self._stream

    @stream.setter
    def stream(self, v):
        if v is not None and type(v) is not str:
            raise TypeError("Expected str, got {}".format(type(v).__name__))
        self._stream = v

    def write(self, msg):
        js = _web_json(msg, self._lineage)
        ob = self._outbuf
        sid = self._stream is not None and msg.stream is not None and msg.stream == self._stream
        breaks = b"\n" in js or b"\r" in js
        # (the limit is checked against the native core's bound of the size)
        bound = (25 if sid else 0) + 6 + len(js) + 2 + (6 * len(js) if breaks else 0)
        was_empty = not ob._buf
        if not ob._reserve(bound):
            return False
        parts = []
        if sid:
            parts.append(b"id: %d\n" % msg.seq)
        if breaks:
            js = js.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\ndata: ")
        parts.append(b"data: ")
        parts.append(js)
        parts.append(b"\n\n")
        ob._buf += b"".join(parts)
        ob._wrote(was_empty, True)
        return True
