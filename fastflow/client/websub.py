"""Subscribing at the web doors (docs/http.md): Server-Sent Events
(``http://``, ``https://``: ``GET /events/<pattern>``) and WebSocket
(``ws://``, ``wss://``: ``GET /ws?subject=<pattern>``, subprotocol
``cloudevents.json``), as one async iterator of Events,
``WebSubscription``; ``fastflow.client.http.subscribe`` makes one.

The WebSocket framing is websockets' sans-I/O protocol (the server's too); the
HTTP/1.1 requests are
``fastflow.client.http``'s.
"""

import asyncio
import ssl as _ssl
from collections import deque
from urllib.parse import quote, urlencode

import orjson

from fastflow.client.http import (
    USER_AGENT,
    HttpConnection,
    Response,
    WebUrl,
    parse_web_url,
    status_error,
    subject_path,
)
from fastflow.errors import ConnectionClosedError, EventError, ServerError
from fastflow.event import from_json

__all__ = ("SUBPROTOCOL", "SseParser", "WebSubscription")

SUBPROTOCOL = "cloudevents.json"
_READ = 64 * 1024
# reconnect on these answers too (the server is busy or going away)
_TRANSIENT = frozenset((429, 502, 503, 504))


# -- Server-Sent Events --------------------------------------------------------------------


class SseParser:
    """The event stream format (the HTML standard's "Server-sent events",
    9.2.6): ``feed(bytes)`` returns the messages completed, each ``(type,
    data, id)`` (``type`` "message" unless an ``event:`` field says
    otherwise; ``id`` the last event ID seen, or None).  ``retry`` holds
    the last ``retry:`` in milliseconds (None: none came)."""

    def __init__(self):
        self.last_id = None
        self.retry = None
        self._buf = b""
        self._data = []
        self._type = ""
        self._started = False

    def feed(self, data):
        buf = self._buf + data
        if not self._started:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._buf = buf
                return []
            self._started = True
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        out = []
        # lines end with CRLF, LF or CR; a CR at the end may be the first half of a CRLF
        cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        lines = buf[:cut].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buf = lines.pop() + buf[cut:]
        for raw in lines:
            self._line(raw.decode("utf-8", "replace"), out)
        return out

    def _line(self, line, out):
        if not line:
            if self._data:
                out.append((self._type or "message", "\n".join(self._data), self.last_id))
            self._data = []
            self._type = ""
            return
        if line[0] == ":":
            return                      # a comment (a keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry":
            if value.isdigit():
                self.retry = int(value)


class _SseSource:
    """One SSE response of a subscription."""

    protocol = "sse"

    def __init__(self, sub):
        self.sub = sub
        self.resp = None
        self.parser = SseParser()
        self.ready = deque()

    async def open(self):
        sub = self.sub
        http = HttpConnection(sub.url, tls=sub.tls, timeout=sub.timeout, **sub.credentials)
        path = sub.path + ("?" + urlencode(sub.query) if sub.query else "")
        headers = {"accept": "text/event-stream", "cache-control": "no-cache"}
        if sub.last_event_id is not None:
            headers["last-event-id"] = sub.last_event_id
        self.parser.last_id = sub.last_event_id
        resp = await http.request("GET", path, headers=headers, stream=True)
        if resp.status != 200:
            try:
                await asyncio.wait_for(resp.read(), sub.timeout)
            finally:
                resp.close()
            raise resp.error()
        ctype = resp.header("content-type", "")
        if not ctype.lower().startswith("text/event-stream"):
            resp.close()
            raise status_error(resp.status, "expected text/event-stream, got Content-Type "
                               "{!r}".format(ctype), resp.headers)
        self.resp = resp

    async def next(self):
        """The next ``(Event, id)``; None at the end of the response."""
        while not self.ready:
            data = await self.resp.read_some()
            if not data:
                return None
            for kind, text, eid in self.parser.feed(data):
                if kind == "message":
                    self.ready.append((text, eid))
                elif kind == "close":       # why the server is about to end the stream
                    info = _json_object(text)
                    self.sub.close_reason = (info.get("code"), info.get("message"))
                elif kind == "lost":        # a stream's events evicted before they were read
                    count = _json_object(text).get("count")
                    if isinstance(count, int):
                        self.sub.lost += count
            if self.parser.retry is not None:
                self.sub.retry = self.parser.retry / 1000.0
        text, eid = self.ready.popleft()
        return _event(text), eid

    def close(self):
        if self.resp is not None:
            self.resp.close()


def _json_object(text):
    try:
        obj = orjson.loads(text)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _event(text):
    try:
        return from_json(text)
    except EventError as exc:
        raise EventError("the server sent something else than a CloudEvent: {}".format(
            exc)) from None


# -- WebSocket -----------------------------------------------------------------------------


def _close_status(code):
    """The status of the error a WebSocket close code raises: 4000 +
    status (4401, 4403, ...) is that status, 1012 and 1013 (restarting,
    try again later) are 503 (reconnected), any other is itself (1008:
    policy violation, 1009: too big, ...; the reason says why)."""
    if 4000 <= code < 5000:
        return code - 4000
    if code in (1012, 1013):
        return 503
    return code


_MAX_MESSAGE = 64 << 20                # the largest message a subscription takes


class _WsSource:
    """One WebSocket connection of a subscription (subprotocol
    ``cloudevents.json``: every text message is one JSON event)."""

    protocol = "websocket"

    def __init__(self, sub):
        self.sub = sub
        self.ws = None
        self.reader = self.writer = None
        self.events = deque()
        self.text = []
        self.closed = False

    async def open(self):
        from websockets.client import ClientProtocol
        from websockets.http11 import Response as WsResponse
        from websockets.typing import Subprotocol
        from websockets.uri import parse_uri

        sub = self.sub
        http = HttpConnection(sub.url, tls=sub.tls, timeout=sub.timeout, **sub.credentials)
        await http.open()
        self.reader, self.writer = http._reader, http._writer
        query = {"subject": sub.pattern}
        if sub.queue:
            query["queue"] = sub.queue
        uri = parse_uri("{}://{}{}/ws?{}".format("wss" if sub.tls else "ws",
                                                 sub.url.host_header, sub.url.base,
                                                 urlencode(query)))
        ws = self.ws = ClientProtocol(uri, subprotocols=[Subprotocol(SUBPROTOCOL)],
                                      max_size=_MAX_MESSAGE)
        req = ws.connect()
        req.headers["User-Agent"] = USER_AGENT
        if http.authorization:
            req.headers["Authorization"] = http.authorization
        ws.send_request(req)
        self._flush()
        deadline = asyncio.get_running_loop().time() + sub.timeout
        while True:
            got = ws.events_received()
            for i, ev in enumerate(got):
                if isinstance(ev, WsResponse):
                    if ev.status_code != 101:
                        self.close()
                        raise self._rejected(ev)
                    if ws.handshake_exc is not None:
                        self.close()
                        raise ServerError(400, "the WebSocket handshake failed: {}".format(
                            ws.handshake_exc))
                    if ws.subprotocol != SUBPROTOCOL:
                        self.close()
                        raise ServerError(400, "the server did not accept the WebSocket "
                                               "subprotocol {} (it answered {!r})".format(
                                                   SUBPROTOCOL, ws.subprotocol))
                    self._take(got[i + 1:])     # frames that came with the answer
                    return
            left = deadline - asyncio.get_running_loop().time()
            try:
                data = await asyncio.wait_for(self.reader.read(_READ), max(left, 0.001))
            except asyncio.TimeoutError:
                self.close()
                raise asyncio.TimeoutError("no WebSocket handshake answer from {} within {:g} "
                                           "s".format(sub.url.origin, sub.timeout)) from None
            if not data:
                self.close()
                raise ConnectionClosedError("{} closed the connection during the WebSocket "
                                            "handshake".format(sub.url.origin))
            ws.receive_data(data)

    @staticmethod
    def _rejected(reject):
        headers = {k.lower(): v for k, v in reject.headers.raw_items()}
        resp = Response(reject.status_code, reject.reason_phrase, "1.1", headers)
        resp.body = reject.body or b""
        return resp.error()

    def _flush(self):
        """Write what the WebSocket protocol has to send (pongs, the close)."""
        out = self.ws.data_to_send()
        if self.writer is not None and out:
            try:
                self.writer.write(b"".join(out))
            except Exception:           # the connection is going anyway
                pass

    async def next(self):
        while True:
            if self.events:
                item = self.events.popleft()
                if isinstance(item, Exception):
                    raise item
                return item
            if self.closed:
                return None
            data = await self.reader.read(_READ)
            if data:
                self.ws.receive_data(data)
            else:
                self.ws.receive_eof()
                self.closed = True
            self._take(self.ws.events_received())
            self._flush()

    def _take(self, frames):
        """Act on the frames websockets' protocol has cut: text messages
        become events (or errors) in ``self.events``; a close ends the
        connection (pings are answered by the protocol itself)."""
        from websockets.frames import Opcode

        for fr in frames:
            op = fr.opcode
            if op is Opcode.TEXT or (op is Opcode.CONT and self.text):
                self.text.append(fr.data)
                if fr.fin:
                    text, self.text = b"".join(self.text), []
                    self._message(text)
            elif op is Opcode.CLOSE:
                self.closed = True
                rcvd = self.ws.close_rcvd
                code, reason = (rcvd.code, rcvd.reason) if rcvd is not None else (1005, "")
                if code != 1000:
                    self.sub.close_reason = (code, reason)
                if code not in (1000, 1001, 1005, 1006):
                    self.events.append(status_error(
                        _close_status(code),
                        reason or "WebSocket closed with code {}".format(code)))

    def _message(self, text):
        """A text message: an event, or one of the door's answers (an
        object with ``op``): ``{"op": "error", "code", "message"}`` is
        queued as the exception it raises in turn, the others are
        ignored."""
        try:
            obj = orjson.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and "specversion" not in obj:
            if obj.get("op") == "error":
                code = obj.get("code")
                self.events.append(status_error(code if isinstance(code, int) else 400,
                                                str(obj.get("message"))))
            return
        try:
            self.events.append((from_json(text), None))
        except EventError as exc:
            self.events.append(EventError("the server sent something else than a CloudEvent: "
                                          "{}".format(exc)))

    def close(self):
        if self.writer is not None:
            if self.ws is not None and not self.closed:
                from websockets.protocol import State

                if self.ws.state is State.OPEN:
                    try:
                        self.ws.send_close(1000)
                        self._flush()
                    except Exception:
                        pass
            w, self.writer = self.writer, None
            w.close()


# -- subscriptions -------------------------------------------------------------------------


class WebSubscription:
    """A subscription over SSE or WebSocket: ``async for ev in sub``
    (``Event`` objects), ``await sub.next(timeout)``.

    ``pattern`` (and ``queue``, a queue group) subscribes to what is
    published from now on: ``GET /events/<pattern>`` (SSE) or ``GET
    /ws?subject=<pattern>`` (WebSocket).  ``stream`` reads a stream
    instead, over SSE: ``GET /streams/<stream>/events`` from ``start``
    (``"first"``, ``"last"``, ``"new"``), ``seq`` or ``time`` (ns since the
    epoch, or RFC 3339), the stored events and then the new ones, only
    those matching ``pattern`` when it is given; each event's SSE id is
    its seq in the stream, ``last_event_id`` the id of the last event
    returned.

    When the connection is lost and ``reconnect`` is true, it calls
    ``disconnected_callback()``, connects again (waiting ``reconnect_wait``
    doubling up to ``reconnect_wait_max``, or the server's SSE ``retry:``),
    over SSE with ``Last-Event-ID`` (a stream's reader goes on after the
    last event it returned: nothing lost, nothing twice), and calls
    ``reconnected_callback()``; a live subscription misses what was
    published meanwhile.  A refusal (401, 403, 404, 400) ends it with the
    ``ServerError``; without ``reconnect`` a lost connection ends the
    iteration.  ``close_reason`` is the ``(code, message)`` the server
    gave when it last ended the connection (SSE ``event: close``, a
    WebSocket close frame), None if it gave none; ``lost`` counts a
    stream's events evicted before the reader got to them (SSE ``event:
    lost``)."""

    def __init__(self, url, pattern=None, *, stream=None, start=None, seq=None, time=None,
                 queue=None, token=None, user=None, password=None, tls=None, timeout=10.0,
                 last_event_id=None, reconnect=True, reconnect_wait=0.25,
                 reconnect_wait_max=4.0, disconnected_callback=None,
                 reconnected_callback=None):
        self.url = url if isinstance(url, WebUrl) else parse_web_url(url)
        self.pattern = pattern
        self.stream = stream
        self.queue = queue
        self.credentials = {"token": token, "user": user, "password": password}
        self.tls = tls
        self.timeout = timeout
        self.last_event_id = last_event_id
        self.reconnect = reconnect
        self.reconnect_wait = reconnect_wait
        self.reconnect_wait_max = reconnect_wait_max
        self.retry = None               # the server's SSE retry, in seconds
        self.close_reason = None        # (code, message) of the server's last goodbye
        self.lost = 0                   # a stream's events evicted before they were read
        self.disconnected_callback = disconnected_callback
        self.reconnected_callback = reconnected_callback
        self.protocol = "websocket" if self.url.websocket else "sse"
        self.query = {}
        if stream is not None:
            if self.url.websocket:
                raise ValueError("a stream's events come over Server-Sent Events: subscribe "
                                 "with an http:// or https:// URL")
            if queue is not None:
                raise ValueError("queue: a stream's reader is not in a queue group (use a "
                                 "durable consumer)")
            self.path = "/streams/{}/events".format(quote(stream, safe=""))
            for k, v in (("filter", pattern), ("start", start), ("seq", seq), ("time", time)):
                if v is not None:
                    self.query[k] = v
        else:
            if pattern is None:
                raise ValueError("subscribe needs a subject pattern (or a stream)")
            if start is not None or seq is not None or time is not None:
                raise ValueError("start, seq and time choose where a stream is read from: "
                                 "give the stream too")
            self.path = "/events/" + subject_path(pattern)
            if queue:
                self.query["queue"] = queue
        self.received = 0
        self.reconnects = 0
        self._source = None
        self._closed = False

    def __repr__(self):
        return "<WebSubscription {} {!r}{} at {}>".format(
            self.protocol, self.pattern, " of stream {!r}".format(self.stream)
            if self.stream is not None else "", self.url.origin)

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    def __aiter__(self):
        return self

    async def start(self):
        """Connect (once); raises ``ConnectError``, or the ``ServerError``
        of a refusal."""
        if self._source is None and not self._closed:
            self._source = await self._open()

    async def _open(self):
        src = (_WsSource if self.url.websocket else _SseSource)(self)
        try:
            await src.open()
        except BaseException:
            src.close()
            raise
        return src

    async def __anext__(self):
        ev = await self.next()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def next(self, timeout=None):
        """The next Event (None once the subscription ended); raises
        ``asyncio.TimeoutError`` after ``timeout`` seconds."""
        if timeout is not None:
            return await asyncio.wait_for(self.next(), timeout)
        while not self._closed:
            if self._source is None:
                if self.received or self.reconnects:
                    if not await self._reconnect():
                        return None
                else:
                    await self.start()
                    continue
            try:
                item = await self._source.next()
            except (OSError, ConnectionClosedError, asyncio.IncompleteReadError,
                    _ssl.SSLError):
                item = None
            except ServerError as exc:
                self._drop()
                if self.reconnect and getattr(exc, "status", exc.code) in _TRANSIENT:
                    self.reconnects += 1
                    self._disconnected()
                    continue
                raise
            if item is not None:
                ev, eid = item
                if eid is not None:
                    self.last_event_id = eid
                self.received += 1
                return ev
            self._drop()
            if not self.reconnect or self._closed:
                return None
            self.reconnects += 1
            self._disconnected()
        return None

    def _drop(self):
        src, self._source = self._source, None
        if src is not None:
            src.close()

    def _disconnected(self):
        if self.disconnected_callback is not None:
            self.disconnected_callback()

    async def _reconnect(self):
        """Connect again, with backoff; False once the subscription closed."""
        wait = self.reconnect_wait
        while not self._closed:
            await asyncio.sleep(self.retry if self.retry is not None else wait)
            wait = min(wait * 2, self.reconnect_wait_max)
            try:
                src = await self._open()
            except (OSError, ConnectionClosedError, asyncio.TimeoutError, _ssl.SSLError):
                continue
            except ServerError as exc:
                if getattr(exc, "status", exc.code) in _TRANSIENT:
                    continue
                raise
            if self._closed:
                src.close()
                return False
            self._source = src
            if self.reconnected_callback is not None:
                self.reconnected_callback()
            return True
        return False

    async def close(self):
        """End the subscription (an iteration in progress ends too)."""
        self._closed = True
        self._drop()
