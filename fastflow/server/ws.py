"""The WebSocket door (docs/http.md, "WebSocket"): ``GET /ws`` on the HTTP
listener upgrades the connection (RFC 6455), which is then served by
``WsProtocol``, a ``DoorProtocol`` on the same shared ``Connection``.

Two subprotocols:

- ``cloudevents.json`` (the CloudEvents WebSocket binding; also what a
  client that asks for no subprotocol gets): every event a subscription
  receives is one text frame holding its CloudEvents JSON, written in C by
  the core's ``WsJsonTarget``.  A text frame from the client is a
  CloudEvent to publish (an object with ``specversion``), a JSON array of
  them (a batch), or a control message (an object with an ``op`` member:
  ``subscribe``, ``unsubscribe``, ``ping``), answered by a small JSON text
  frame.  Subscriptions also come from the URL (``?subject=a.>&queue=g``).
- ``fastflow``: the native protocol (docs/protocol.md) unchanged, as a byte
  stream carried by binary messages in both directions: the core's
  ``FrameParser`` reads it and ``NativeProtocol``'s handler table answers
  it (INFO, CONNECT, SUB, PUB, REPLAY, ...); each flush of the
  connection's output is one binary frame (``Connection.framing``).
- ``mqtt`` (and ``mqttv3.1``, what older clients ask for): MQTT (docs/mqtt.md,
  MQTT 5.0 section 6) the same way, served by ``MqttProtocol``; also at
  ``GET /mqtt``, where it is the default.

The last two are one mechanism: a *byte-stream door* (``STREAM_DOORS``:
subprotocol -> its ``DoorProtocol``) runs inside the WebSocket connection
as it would on its own port.  The payload of the client's binary messages
goes to the door's parser (a packet may span messages, a message may hold
several), its handler table answers, and what it and its wire targets
write is framed per flush.

The client's frames are cut by websockets' sans-I/O ``Protocol`` (masking,
fragmentation, control frames, UTF-8 of close reasons, the size limit);
this module answers pings, runs the close handshake and maps every refusal
to a close code.  Server -> client frames are written here only for
control frames and JSON answers; deliveries are written by the wire
targets.
"""

import base64
import binascii
import hashlib
import logging
import struct
from urllib.parse import parse_qsl

import orjson
from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as _FramingError
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State

from fastflow._impl import (
    ProtocolError,
    WsJsonTarget,
    validate_pattern,
    validate_subject,
    ws_frame_head,
)
from fastflow.errors import (EventError, EventTooLarge, FastflowError, LogFullError,
                             SignatureError, SubjectError)
from fastflow.event import from_json, from_json_batch
from fastflow.protocol import error_code
from fastflow.server.connection import CLOSING, READY, DoorProtocol, conflate_option
from fastflow.server.http import HttpError, credentials, response_head
from fastflow.server.native import NativeProtocol

__all__ = ("CLOUDEVENTS_JSON", "FASTFLOW", "MQTT", "MQTT_PATH", "WsError", "WsParser",
           "WsProtocol", "close_frame", "mqtt_upgrade", "upgrade")

log = logging.getLogger("fastflow.server")

CLOUDEVENTS_JSON = "cloudevents.json"
FASTFLOW = "fastflow"
MQTT = "mqtt"
MQTT_31 = "mqttv3.1"                    # (the name clients of MQTT 3.1 offer)
SUBPROTOCOLS = (CLOUDEVENTS_JSON, FASTFLOW, MQTT, MQTT_31)  # (the client's order decides)
MQTT_PATH = "mqtt"                      # GET /mqtt: where MQTT clients look by default


def _native_door():
    return NativeProtocol


def _mqtt_door():
    from fastflow.server.mqtt import MqttProtocol
    return MqttProtocol


# the byte-stream doors a WebSocket can carry: subprotocol -> its DoorProtocol class
STREAM_DOORS = {FASTFLOW: _native_door, MQTT: _mqtt_door, MQTT_31: _mqtt_door}
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

# close codes (RFC 6455 section 7.4.1; 1013: the IANA registry)
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED_DATA = 1003
NO_STATUS = 1005
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

# the lifecycle's error codes (fastflow.protocol.ErrorCode) as close codes; and MQTT 5
# reason codes (0x80-0xA2: the MQTT door's DISCONNECT, in the last message, says which)
_CLOSE_CODES = {400: PROTOCOL_ERROR, 401: POLICY, 403: POLICY, 408: POLICY, 413: TOO_BIG,
                429: TRY_AGAIN_LATER, 431: TOO_BIG, 500: INTERNAL_ERROR, 503: TRY_AGAIN_LATER,
                0x81: PROTOCOL_ERROR, 0x82: PROTOCOL_ERROR, 0x8F: PROTOCOL_ERROR,
                0x90: PROTOCOL_ERROR, 0x93: PROTOCOL_ERROR, 0x94: PROTOCOL_ERROR,
                0x86: POLICY, 0x87: POLICY, 0x8D: POLICY, 0x8E: NORMAL, 0x95: TOO_BIG,
                0x97: TRY_AGAIN_LATER}
_MQTT_REASONS = range(0x80, 0xA3)       # (the others: 1008)

_OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 1, 2, 8, 9, 10
_U16 = struct.Struct("!H")
_MAX_REASON = 123                       # a close frame's payload is at most 125 bytes

# what the parser hands over besides text messages and native entries
_PING = "ws.ping"
_PONG = "ws.pong"
_CLOSE = "ws.close"
_TEXT = "ws.text"

_MAX_SID = 256                          # characters of a subscription id
_REFUSAL_BURST = 64                     # refused messages a socket may send at once ...
_REFUSAL_RATE = 8.0                     # ... and per second after that; then 1008
_QUERY_JSON = frozenset(("subject", "queue", "publish", "echo", "access_token", "conflate"))
_QUERY_STREAM = frozenset(("access_token",))       # (a byte-stream door's URL)
_JSON_SPACE = b" \t\r\n"            # what may come before a JSON text's first character


def close_frame(code, reason=""):
    """A close frame (``code`` None: no status); the reason is cut to what
    fits, at a character boundary."""
    if code is None:
        return ws_frame_head(_OP_CLOSE, 0)
    r = (reason or "").encode("utf-8", "replace")
    if len(r) > _MAX_REASON:
        r = r[:_MAX_REASON].decode("utf-8", "ignore").encode("utf-8")
    return ws_frame_head(_OP_CLOSE, 2 + len(r)) + _U16.pack(code) + r


def _binary_frame(data):
    """One flush of a byte-stream door's output as one binary frame."""
    return ws_frame_head(_OP_BINARY, len(data)) + data


def _text_frame(obj):
    body = orjson.dumps(obj)
    return ws_frame_head(_OP_TEXT, len(body)) + body


def _tokens(value):
    return {t.strip().lower() for t in value.split(",")} if value else set()


def _is_utf8(data):
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class WsError(FastflowError):
    """A WebSocket stream the door cannot go on reading: the close ``code``
    (RFC 6455) and the reason; ``frames``: the entries complete before it."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code
        self.message = message
        self.frames = None


def _framing_error(exc):
    """The WsError of what websockets' parser failed on."""
    if isinstance(exc, PayloadTooBig):
        return WsError(TOO_BIG, "message too big: {}".format(exc))
    if isinstance(exc, UnicodeDecodeError):
        return WsError(INVALID_DATA, "the close reason is not valid UTF-8")
    if isinstance(exc, _FramingError):
        return WsError(PROTOCOL_ERROR, str(exc))
    return WsError(INTERNAL_ERROR, "internal error while reading frames")


def _inner_attr(name):
    """A parser attribute the shared Connection sets (the publish
    permissions): the inner door's parser's when there is one."""
    own = "_" + name

    def get(self):
        if self.inner is not None:
            return getattr(self.inner, name)
        return getattr(self, own)

    def put(self, v):
        if self.inner is not None:
            setattr(self.inner, name, v)
        else:
            setattr(self, own, v)
    return property(get, put)


class WsParser:
    """The client's frames -> entries: ``(_TEXT, bytes)`` per complete text
    message, ``(_PING, payload)``, ``(_PONG, payload)``, ``(_CLOSE, code,
    reason)``; with the parser ``inner`` of a byte-stream door (subprotocol
    ``fastflow``, ``mqtt``: ``subprotocol``), the payload of every binary
    frame goes to it and its entries come out in order.  A stream that
    breaks RFC 6455 raises ``WsError`` (a binary message without ``inner``,
    or a text one with it: 1003), the inner parser's errors (``inner_error``)
    pass through; either way ``frames`` holds the entries before it and the
    parser takes no more input.

    It stands where the shared Connection expects a door's parser: the
    counters and the publish permissions are the inner parser's when
    there is one."""

    def __init__(self, max_message, inner=None, inner_error=ProtocolError,
                 subprotocol=FASTFLOW):
        self._ws = Protocol(Side.SERVER, state=State.OPEN, max_size=max_message)
        self.inner = inner
        self.subprotocol = subprotocol
        self._errors = (WsError, inner_error)
        self._parts = None              # the text message being assembled (fragments)
        self._kind = None               # the opcode of the message being received
        self.dead = False
        self.bytes_in = 0
        self.frames_in = 0              # frames read (a tick's progress check)
        self.messages = 0               # text messages handed over
        self._denied = 0
        self._pub_allow = self._pub_deny = self._resp_check = None  # (without inner: unused)
        self._route_pubs = False

    # -- what the shared Connection reads and sets ----------------------------------------

    @property
    def buffered(self):
        """Bytes held of an incomplete frame or message."""
        n = len(getattr(self._ws.reader, "buffer", b""))
        if self._parts:
            n += sum(len(p) for p in self._parts)
        return n + (self.inner.buffered if self.inner is not None else 0)

    @property
    def pubs_in(self):
        return self.inner.pubs_in if self.inner is not None else 0

    @property
    def denied(self):
        return self._denied + (self.inner.denied if self.inner is not None else 0)

    @denied.setter
    def denied(self, v):
        self._denied = v - (self.inner.denied if self.inner is not None else 0)

    pub_allow = _inner_attr("pub_allow")
    pub_deny = _inner_attr("pub_deny")
    resp_check = _inner_attr("resp_check")
    route_pubs = _inner_attr("route_pubs")

    # -- reading --------------------------------------------------------------------------

    def feed(self, data):
        if self.dead:
            return []
        self.bytes_in += len(data)
        ws = self._ws
        ws.receive_data(data)
        frames = ws.events_received()
        ws.data_to_send()               # (its automatic answers: this door writes its own)
        out = []
        inner = self.inner
        try:
            for f in frames:
                op = f.opcode
                if op is Opcode.CONT:
                    op = self._kind
                    if op is Opcode.TEXT:
                        self._parts.append(f.data)
                        if f.fin:
                            out.append((_TEXT, b"".join(self._parts)))
                            self._parts = None
                            self.messages += 1
                    else:
                        out.extend(inner.feed(f.data))
                    if f.fin:
                        self._kind = None
                elif op is Opcode.TEXT:
                    if inner is not None:
                        raise WsError(UNSUPPORTED_DATA, "a text message on subprotocol {!r} "
                                                        "(binary messages only)".format(
                                                            self.subprotocol))
                    if f.fin:
                        out.append((_TEXT, f.data))
                        self.messages += 1
                    else:
                        self._kind = op
                        self._parts = [f.data]
                elif op is Opcode.BINARY:
                    if inner is None:
                        raise WsError(UNSUPPORTED_DATA, "a binary message on subprotocol "
                                                        "'cloudevents.json' (text messages only)")
                    if not f.fin:
                        self._kind = op
                    out.extend(inner.feed(f.data))
                elif op is Opcode.PING:
                    out.append((_PING, f.data))
                elif op is Opcode.PONG:
                    out.append((_PONG, f.data))
                else:                   # CLOSE (websockets checked its code and reason)
                    close = ws.close_rcvd
                    out.append((_CLOSE, close.code, close.reason))
                    self.dead = True
                    break
        except self._errors as exc:
            self.frames_in += len(frames)
            self.dead = True
            exc.frames = out if isinstance(exc, WsError) else out + (exc.frames or [])
            raise
        self.frames_in += len(frames)
        if ws.parser_exc is not None and not self.dead:
            self.dead = True
            err = _framing_error(ws.parser_exc)
            err.frames = out
            raise err
        return out


class _Refusal(Exception):
    """A control message or a publish refused: the error frame's code and
    message (``re``: what the message was, when that is known)."""

    def __init__(self, code, message, re=None):
        Exception.__init__(self, message)
        self.code = code
        self.message = message
        self.re = re


class WsProtocol(DoorProtocol):
    """A WebSocket connection (after the upgrade): its parser (``WsParser``)
    and, by subprotocol, the JSON messages' handlers or those of a
    byte-stream door (``self.inner``: the ``NativeProtocol`` or
    ``MqttProtocol`` of this connection, ``STREAM_DOORS``)."""

    name = "ws"
    ready_note = " (WebSocket)"

    def __init__(self, conn, subprotocol, principal, publish_to=None, lineage=True,
                 max_message=16 << 20):
        DoorProtocol.__init__(self, conn)
        self.subprotocol = subprotocol
        self.publish_to = publish_to    # the subject of published events (None: their type)
        self.lineage = lineage
        self.close_sent = False
        self._goodbye = None            # the close frame that answers the client's
        self._auto_sid = 0
        self._budget = float(_REFUSAL_BURST)
        self._budget_t = self.loop.time()
        self._progress = (0, 0.0)       # (frames_in, when) at the last tick with partial input
        door = STREAM_DOORS.get(subprotocol)
        if door is not None:
            inner = self.inner = door()(conn)
            # (a CONNECT without credentials takes those of the upgrade request)
            inner.upgrade_principal = principal
            self.parser = WsParser(max_message, inner.parser, inner.parser_error, subprotocol)
            self.parser_error = (WsError, inner.parser_error)
            self.handle = self._handle_inner
        else:
            self.inner = None
            self.parser = WsParser(max_message)
            self.parser_error = WsError
            self.handle = self._handle_json

    def set_flow(self, flow):
        DoorProtocol.set_flow(self, flow)
        if self.inner is not None:
            self.inner.set_flow(flow)

    # -- what the lifecycle writes ----------------------------------------------------------

    def _control(self, frame):
        """Write a control frame now, after the output pending before it
        (the ``fastflow`` subprotocol frames each flush: a control frame
        must not go inside one)."""
        conn = self.conn
        if conn.framing is None:
            self.outbuf.write(frame)
            return
        conn.flush()
        if conn.state < CLOSING:
            try:
                conn.transport.write(frame)
            except (OSError, RuntimeError):
                pass

    def greet(self):
        if self.inner is not None:
            self.inner.greet()

    def ping(self):
        if self.subprotocol in (MQTT, MQTT_31):
            # (MQTT's keep-alive is the client's PINGREQ, on every transport:
            # a pong would keep a client alive whose MQTT side is silent)
            self.inner.ping()
            return
        self._control(ws_frame_head(_OP_PING, 0))

    def close_data(self, code, message, rid):
        self.close_sent = True
        out = b""
        if code < 1000:                 # the lifecycle's code (fastflow.protocol.ErrorCode)
            if self.inner is not None:
                out = self.inner.close_data(code, message, rid)
                out = _binary_frame(out) if out else b""
            if code == 408 and "stale" in message:
                code = GOING_AWAY       # (nats-server: a stale connection "goes away")
            else:
                code = _CLOSE_CODES.get(code, POLICY if code in _MQTT_REASONS
                                        else INTERNAL_ERROR)
        return out + close_frame(code, message)

    def goodbye(self):
        if self.close_sent:
            return b""
        self.close_sent = True
        if self._goodbye is not None:
            return self._goodbye
        # (the inner door's last words first: an MQTT 5 DISCONNECT when the server stops)
        last = self.inner.goodbye() if self.inner is not None else b""
        last = _binary_frame(last) if last else b""
        if self.server.stopping:
            return last + close_frame(GOING_AWAY, "the server is shutting down")
        return last + close_frame(NORMAL)

    def err(self, code, message, rid=0):
        if self.inner is not None:
            self.inner.err(code, message, rid)
        else:
            self.outbuf.write(_text_frame({"op": "error", "code": code, "message": message}))

    def protocol_error(self, exc):
        if isinstance(exc, WsError):
            return exc.code, exc.message
        return self.inner.protocol_error(exc)   # (its message in the close frame's reason too)

    def options(self, req):
        if self.inner is not None:
            self.inner.options(req)

    def welcome(self, rid):
        if self.inner is not None:
            self.inner.welcome(rid)

    def stats(self, d):
        d["subprotocol"] = self.subprotocol
        if self.publish_to is not None:
            d["publish"] = self.publish_to
        if self.inner is not None:
            self.inner.stats(d)

    def ended(self):
        if self.inner is not None:
            self.inner.ended()

    def subscription_names(self):
        return self.inner.subscription_names() if self.inner is not None else None

    def tick(self, now):
        """Close a connection whose frame or message has not completed
        within ``http_request_timeout`` while nothing else arrived (a
        slow-drip sender holding buffered input); then the inner door's
        own (MQTT: keep-alive)."""
        if self._stalled_frame(now):
            return True
        return self.inner is not None and self.inner.tick(now)

    def _stalled_frame(self, now):
        p = self.parser
        if not p.buffered:
            self._progress = (p.frames_in, 0.0)
            return False
        frames, since = self._progress
        if frames != p.frames_in or not since:
            self._progress = (p.frames_in, now)
            return False
        if now - since > self.cfg.http_request_timeout:
            conn = self.conn
            log.info("client %d (%s): a WebSocket frame incomplete for %g s: closed", conn.id,
                     conn.peer, self.cfg.http_request_timeout)
            conn.close(POLICY, "a frame did not arrive within {:g} s".format(
                self.cfg.http_request_timeout))
            return True
        return False

    # -- what both subprotocols read ----------------------------------------------------------

    def _ws_entry(self, item):
        kind = item[0]
        if kind is _PING:
            self._control(ws_frame_head(_OP_PONG, len(item[1])) + item[1])
        elif kind is _CLOSE:
            _kind, code, reason = item
            conn = self.conn
            # echo the client's code (RFC 6455 section 5.5.1); none when it gave none
            self._goodbye = close_frame(None if code == NO_STATUS else code)
            conn.close_reason = "client closed the WebSocket ({}{})".format(
                code, ": " + reason if reason else "")
            conn.close()
        # (_PONG: any input already counts as liveness)

    # -- a byte-stream door's handlers (subprotocols fastflow, mqtt) -----------------------------

    def _handle_inner(self, items):
        run = []
        conn = self.conn
        inner = self.inner
        for item in items:
            if type(item[0]) is str and item[0].startswith("ws."):
                if run:
                    inner.handle(run)
                    run = []
                if conn.state >= CLOSING:
                    return
                self._ws_entry(item)
            else:
                run.append(item)
        if run and conn.state < CLOSING:
            inner.handle(run)

    # -- subprotocol cloudevents.json ---------------------------------------------------------

    def _handle_json(self, items):
        conn = self.conn
        for item in items:
            if conn.state != READY:
                return
            if item[0] is _TEXT:
                try:
                    self._text(item[1])
                except _Refusal as exc:
                    self._refused({"re": exc.re} if exc.re else None, exc)
                except WsError as exc:      # (bad UTF-8: the stream cannot go on)
                    self.server.n_protocol_errors += 1
                    log.info("client %d (%s): %s", conn.id, conn.peer, exc)
                    conn.close(exc.code, exc.message)
                    return
                except Exception as exc:
                    log.exception("client %d: a WebSocket message failed", conn.id)
                    conn.close(INTERNAL_ERROR, "internal error: {}".format(exc))
                    return
            else:
                self._ws_entry(item)

    def _text(self, data):
        """One text message: a CloudEvent, a batch of them, or a control message."""
        i = 0
        n = len(data)
        while i < n and data[i] in _JSON_SPACE:
            i += 1
        first = data[i] if i < n else 0
        if first == 0x5B:                               # '[': a batch
            try:
                events = from_json_batch(data)
            except EventError as exc:
                self._check_utf8(data)
                raise _Refusal(400, str(exc), "publish") from None
            self._publish(events, True)
            return
        if first != 0x7B:                               # not '{'
            self._check_utf8(data)
            raise _Refusal(400, "a text message is a CloudEvent (a JSON object with "
                                "'specversion'), a JSON array of them, or a control message "
                                "(a JSON object with 'op')")
        if b'"specversion"' in data:
            try:
                ev = from_json(data)
            except EventError as exc:
                ctl = self._object(data, None)
                if ctl is None or "specversion" in ctl or "op" not in ctl:
                    raise _Refusal(400, str(exc), "publish") from None
                self._op(ctl)
                return
            self._publish((ev,), False)
            return
        ctl = self._object(data, "a JSON object")
        if "op" not in ctl:
            raise _Refusal(400, "a JSON object without 'specversion' is a control message and "
                                "needs an 'op' (subscribe, unsubscribe, ping)")
        self._op(ctl)

    def _check_utf8(self, data):
        """Close with 1007 if ``data`` (a text message) is not UTF-8."""
        if not _is_utf8(data):
            raise WsError(INVALID_DATA, "a text message that is not valid UTF-8")

    def _object(self, data, what):
        """``data`` parsed as a JSON object; None (``what`` None) or a
        refusal naming ``what`` if it is not one."""
        try:
            v = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            self._check_utf8(data)
            if what is None:
                return None
            raise _Refusal(400, "not valid JSON: {}".format(exc)) from None
        if not isinstance(v, dict):
            if what is None:
                return None
            raise _Refusal(400, "expected {}, got {}".format(what, type(v).__name__))
        return v

    def _answer(self, obj):
        self.outbuf.write(_text_frame(obj))

    def _refused(self, answer, exc):
        """Answer a refusal (an error frame: ``answer`` + code and message);
        a socket whose refusals outrun the budget is closed with 1008."""
        conn = self.conn
        if exc.code == 403:
            self.server.n_denied += 1
        d = {"op": "error"}
        if answer:
            d.update(answer)
        d["code"] = exc.code
        d["message"] = exc.message
        self._answer(d)
        now = self.loop.time()
        self._budget = min(float(_REFUSAL_BURST),
                           self._budget + (now - self._budget_t) * _REFUSAL_RATE) - 1.0
        self._budget_t = now
        if self._budget < 0:
            log.info("client %d (%s): too many refused WebSocket messages: closed", conn.id,
                     conn.peer)
            conn.close(POLICY, "too many refused messages (more than {} at once or {:g} a "
                               "second)".format(_REFUSAL_BURST, _REFUSAL_RATE))

    # -- publishing ---------------------------------------------------------------------------

    def _publish(self, events, batch):
        """Publish ``events`` (decoded from one message): each on
        ``publish_to`` or its ``type``; the permissions and limits are
        checked for every event before any is published."""
        conn = self.conn
        default = self.publish_to
        max_payload = self.cfg.max_payload
        perms = conn.principal.permissions
        check = perms.pub_allow is not None or perms.pub_deny is not None or \
            conn.responses is not None
        seen = {}
        subjects = []
        for i, ev in enumerate(events):
            where = {"re": "publish", "id": ev.id}
            if batch:
                where["index"] = i
            s = default
            if s is None:
                s = ev.type
                try:
                    validate_subject(s)
                except SubjectError as exc:
                    self._refused(where, _Refusal(400, "the event type {!r} cannot route it: {} "
                                                       "(?publish=<subject> on the URL chooses "
                                                       "one)".format(s[:200], exc)))
                    return
            if check:
                ok = seen.get(s)
                if ok is None:
                    ok = seen[s] = conn.may_publish(s)
                if not ok:
                    self.parser.denied += 1
                    self._refused(where, _Refusal(403, "permission denied: publish to "
                                                       "{!r}".format(s)))
                    return
            if len(ev.data) > max_payload:
                self._refused(where, _Refusal(413, "event data of {} bytes exceeds "
                                                   "max_payload={}".format(len(ev.data),
                                                                           max_payload)))
                return
            subjects.append(s)
        catalog = self.conn.account.catalog
        store = catalog.schemas if catalog is not None else None
        if store is not None and store.active:
            from fastflow.catalog.schemas import SchemaRefusal
            try:
                store.check(events, subjects)
            except SchemaRefusal as exc:
                where = {"re": "publish", "id": events[exc.index].id, "path": exc.path,
                         "schema": exc.schema}
                if batch:
                    where["index"] = exc.index
                self._refused(where, _Refusal(400, "{} (nothing was published)".format(exc)))
                return
        trust = self.flow.trust
        if trust is not None:
            # the trust policy: every event passes before any is published
            for i, (ev, s) in enumerate(zip(events, subjects)):
                try:
                    trust.check_event(s, ev)
                except SignatureError as exc:
                    where = {"re": "publish", "id": ev.id}
                    if batch:
                        where["index"] = i
                    self._refused(where, _Refusal(403, "{} (nothing was published)".format(
                        exc)))
                    return
        publish = self.flow.publish_record
        origin = self.outbuf
        refused = None
        n = 0
        checked = trust is not None
        try:
            for ev, s in zip(events, subjects):
                try:
                    publish(s, ev.encode(), None, origin, trust_checked=checked)
                except (LogFullError, EventTooLarge) as exc:    # routed, not stored
                    if refused is None:
                        refused = (n, ev, exc)
                n += 1
        finally:
            conn.in_msgs_py += n
        if refused is not None:
            i, ev, exc = refused
            where = {"re": "publish", "id": ev.id}
            if batch:
                where["index"] = i
            code = 429 if isinstance(exc, LogFullError) else error_code(exc)
            self._refused(where, _Refusal(code, "{}: routed but not stored".format(exc)))

    # -- control messages ---------------------------------------------------------------------

    def _op(self, ctl):
        op = ctl.get("op")
        answer = {"re": op} if isinstance(op, str) and len(op) <= 64 else {}
        ref = ctl.get("ref")
        if ref is not None:
            answer["ref"] = ref
        try:
            if op == "subscribe":
                sid = ctl.get("sid")
                if sid is None:
                    self._auto_sid += 1
                    sid = "sub-{}".format(self._auto_sid)
                answer["sid"] = sid
                subject, queue = ctl.get("subject"), ctl.get("queue")
                if not isinstance(subject, str):
                    raise _Refusal(400, "subscribe needs 'subject', a subject pattern (string)")
                if queue is not None and not isinstance(queue, str):
                    raise _Refusal(400, "'queue' must be a string (a queue group's name)")
                try:
                    conflate = conflate_option(ctl.get("conflate", False), "'conflate'")
                except ValueError as exc:
                    raise _Refusal(400, str(exc)) from None
                key = self._sid_key(sid)
                self.check_subscription(key, subject, queue or None)
                self.subscribe(key, subject, queue or None, conflate)
            elif op == "unsubscribe":
                sid, subject = ctl.get("sid"), ctl.get("subject")
                conn = self.conn
                if sid is not None:
                    answer["sid"] = sid
                    key = self._sid_key(sid)
                    if key not in conn.subs:
                        raise _Refusal(404, "no subscription {!r}".format(sid))
                    keys = [key]
                elif isinstance(subject, str):
                    answer["subject"] = subject
                    keys = [k for k, e in conn.subs.items() if e[1] == subject]
                else:
                    raise _Refusal(400, "unsubscribe needs 'sid' or 'subject'")
                for k in keys:
                    conn.forget_sub(k)
                answer["count"] = len(keys)
            elif op == "ping":
                self._answer({"op": "pong", **({"ref": ref} if ref is not None else {})})
                return
            else:
                raise _Refusal(400, "unknown op {!r} (subscribe, unsubscribe, ping)".format(
                    op if isinstance(op, (str, int)) else type(op).__name__))
        except _Refusal as exc:
            self._refused(answer, exc)
            return
        self._answer({"op": "ok", **answer})

    def _sid_key(self, sid):
        if isinstance(sid, bool) or not isinstance(sid, (str, int)):
            raise _Refusal(400, "'sid' must be a string or an integer")
        key = str(sid)
        if not key or len(key) > _MAX_SID:
            raise _Refusal(400, "'sid' must have 1 to {} characters".format(_MAX_SID))
        return key

    def check_subscription(self, sid, pattern, queue, more=0):
        """Refuse (``_Refusal``) a subscription ``sid`` to ``pattern`` that
        is invalid, not permitted, in use or over ``max_subscriptions``
        (``more``: others about to be made with it)."""
        conn = self.conn
        try:
            validate_pattern(pattern)
            if queue is not None:
                validate_pattern(queue)
                if "*" in queue.split(".") or ">" in queue.split("."):
                    raise SubjectError("a queue group is a name, not a pattern")
        except SubjectError as exc:
            raise _Refusal(400, "invalid {} {!r}: {}".format(
                "queue group" if queue is not None and "queue" in str(exc) else "subscription",
                (pattern if queue is None else "{} (queue {})".format(pattern, queue))[:200],
                exc)) from None
        perms = conn.principal.permissions
        if not perms.unrestricted:
            why = perms.subscribe_denied(pattern, queue)
            if why is not None:
                raise _Refusal(403, why)
        old = conn.subs.get(sid)
        if old is not None and old[0].handle in self.flow.matcher:
            raise _Refusal(409, "subscription id {!r} is in use (on {!r})".format(sid, old[1]))
        limit = self.cfg.max_subscriptions
        if limit and len(conn.subs) + more >= limit:
            raise _Refusal(429, "maximum subscriptions per connection ({}) reached".format(
                limit))
        why = conn.may_subscribe(1 + more)
        if why is not None:
            raise _Refusal(429, why)

    def subscribe(self, sid, pattern, queue, conflate=False):
        conn = self.conn
        if sid in conn.subs:
            conn.forget_sub(sid)
        conn.subscribe(sid, pattern, queue, WsJsonTarget(self.outbuf, conn.echo, self.lineage),
                       conflate)


# -- the upgrade (an HTTP request handler) ----------------------------------------------------


def _accept(key):
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode()


def _spoken(server, path):
    """The subprotocols spoken on ``path`` (``/ws``, ``/mqtt``): MQTT's
    only while the MQTT door is on and ``mqtt.ws`` is true."""
    mqtt = server.mqtt_sessions is not None and server.config.mqtt_ws
    if path.split("/", 2)[1] == MQTT_PATH:
        return (MQTT, MQTT_31) if mqtt else ()
    return SUBPROTOCOLS if mqtt else (CLOUDEVENTS_JSON, FASTFLOW)


def _choose(offered, spoken):
    """The subprotocol for a ``Sec-WebSocket-Protocol`` offer: the client's
    first that is ``spoken``."""
    for p in offered:
        if p in spoken:
            return p
    return None


def mqtt_upgrade(req):
    """Whether ``req`` asks for MQTT over WebSocket without credentials of
    its own: the MQTT CONNECT has them (the HTTP door lets it through
    unchecked)."""
    if req.path.split("/", 2)[1] != MQTT_PATH:
        offered = req.headers.get("sec-websocket-protocol")
        if not offered or not {MQTT, MQTT_31} & {p.strip() for p in offered.split(",")}:
            return False
    try:
        return credentials(req) is None
    except HttpError:
        return False


def upgrade(http, req, principal):
    """``GET /ws``: check the handshake (RFC 6455 section 4.2.1) and the
    URL's subscriptions, answer 101 and serve the connection as WebSocket;
    an ``HttpError`` otherwise (the connection closes after it when the
    request asked for an upgrade: its parser has stopped)."""
    conn = http.conn
    cfg = http.cfg
    h = req.headers
    close = req.upgrade
    if "websocket" not in _tokens(h.get("upgrade")):
        raise HttpError(426, "GET /ws is the WebSocket endpoint: the request needs "
                             "'Upgrade: websocket' and 'Connection: Upgrade' (RFC 6455)",
                        (("upgrade", "websocket"), ("connection", "Upgrade"),
                         ("sec-websocket-version", "13")), close=close)
    if req.version != "1.1":
        raise HttpError(400, "a WebSocket handshake is an HTTP/1.1 request", close=True)
    if "upgrade" not in _tokens(h.get("connection")):
        raise HttpError(400, "a WebSocket handshake needs 'Connection: Upgrade'", close=close)
    if "host" not in h:
        raise HttpError(400, "a WebSocket handshake needs a Host header", close=close)
    version = h.get("sec-websocket-version")
    if version is None or version.strip() != "13":
        raise HttpError(426, "Sec-WebSocket-Version {} is not supported: 13 is".format(
            "(missing)" if version is None else repr(version[:32])),
            (("sec-websocket-version", "13"), ("upgrade", "websocket"),
             ("connection", "Upgrade")), close=close)
    key = (h.get("sec-websocket-key") or "").strip()
    try:
        ok = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        ok = False
    if not ok:
        raise HttpError(400, "Sec-WebSocket-Key {}: it must be the Base64 of 16 bytes".format(
            "is missing" if not key else "{!r} is invalid".format(key[:64])), close=close)
    origin = h.get("origin")
    allowed = cfg.http_cors_origins
    if origin is not None and allowed and "*" not in allowed and origin not in allowed:
        raise HttpError(403, "Origin {!r} may not open a WebSocket here (http_cors_origins)"
                             .format(origin[:200]), close=close)
    offered = [p.strip() for p in (h.get("sec-websocket-protocol") or "").split(",")
               if p.strip()]
    spoken = _spoken(http.server, req.path)
    if not spoken:
        raise HttpError(404, "no MQTT over WebSocket here: the MQTT door is off (mqtt.port) "
                             "or mqtt.ws is false", close=close)
    chosen = _choose(offered, spoken)
    if offered and chosen is None:
        raise HttpError(400, "none of the subprotocols offered ({}) is spoken here: {}".format(
            ", ".join(offered)[:200], ", ".join(spoken)), close=close)
    subprotocol = chosen or spoken[0]
    stream = subprotocol in STREAM_DOORS
    principal_in = principal
    if credentials(req) is None:
        if subprotocol in (MQTT, MQTT_31):
            principal_in = None         # (the CONNECT logs in: mqtt_upgrade let it through)
        elif http.auth.required:
            # (let through unchecked for the mqtt it offered, but another was chosen)
            raise HttpError(401, "authentication required: Authorization: Bearer <token> or "
                                 "Basic, or ?access_token=", http.challenges, close=close)

    # the URL: cloudevents.json subscriptions and options
    pairs = parse_qsl(req.query, keep_blank_values=True)
    known = _QUERY_STREAM if stream else _QUERY_JSON
    for k, _v in pairs:
        if k not in known:
            raise HttpError(400, "unknown query parameter {!r} for subprotocol {} ({})".format(
                k[:64], subprotocol, ", ".join(sorted(known))), close=close)
    params = dict(pairs)
    subjects = [v for k, v in pairs if k == "subject"]
    queue = params.get("queue") or None
    publish_to = params.get("publish") or None
    if publish_to is not None:
        try:
            validate_subject(publish_to)
        except SubjectError as exc:
            raise HttpError(400, "invalid ?publish subject {!r}: {}".format(
                publish_to[:200], exc), close=close) from None
    echo = params.get("echo", "true").lower()
    if echo not in ("true", "false", "1", "0"):
        raise HttpError(400, "?echo is true or false, got {!r}".format(echo[:32]), close=close)
    try:
        conflate = conflate_option(params.get("conflate", "0"), "?conflate")
    except ValueError as exc:
        raise HttpError(400, str(exc), close=close) from None

    ws = WsProtocol(conn, subprotocol, principal_in, publish_to, http.lineage,
                    max(cfg.http_max_body, cfg.max_payload + cfg.max_control + 64))
    if conn.principal is not principal:     # (this request's credentials, not an earlier one's)
        conn._set_principal(principal)
    sids = ["url-{}".format(i + 1) for i in range(len(subjects))]
    for i, (sid, pattern) in enumerate(zip(sids, subjects)):
        try:
            ws.check_subscription(sid, pattern, queue, i)
        except _Refusal as exc:
            raise HttpError(exc.code, "?subject={}: {}".format(pattern[:200], exc.message),
                            close=close) from None

    # 101, then the connection speaks WebSocket
    hs = [("upgrade", "websocket"), ("connection", "Upgrade"),
          ("sec-websocket-accept", _accept(key))]
    if chosen is not None:
        hs.append(("sec-websocket-protocol", chosen))
    rest = req.rest
    http.requests += 1
    http.server.n_http_requests += 1
    try:
        conn.transport.write(conn.outbuf.take() + response_head(101, None, None, hs))
    except (OSError, RuntimeError):
        return
    conn.switch(ws)
    ws.parser.bytes_in = http.parser.bytes_in - len(rest)
    conn.close_reason = None
    if stream:
        conn.framing = _binary_frame
        conn.expect_connect()           # (native: INFO, then the client's CONNECT; MQTT: CONNECT)
        ws.greet()
    else:
        conn.echo = echo in ("true", "1")
        for sid, pattern in zip(sids, subjects):
            ws.subscribe(sid, pattern, queue, conflate)
    log.debug("client %d (%s): WebSocket, subprotocol %s%s", conn.id, conn.peer, subprotocol,
              "" if chosen else " (none asked)")
    if rest:
        conn.data_received(rest)
