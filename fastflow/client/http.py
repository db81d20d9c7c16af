"""The client side of the web doors (docs/http.md): publish CloudEvents
over HTTP, subscribe with Server-Sent Events (``http://``, ``https://``)
or WebSocket (``ws://``, ``wss://``, subprotocol ``cloudevents.json``).

```python
import fastflow.client.http as web
from fastflow.event import Event

ev = Event("orders.eu.created", b'{"id": 42}', datacontenttype="application/json")
res = await web.publish("http://127.0.0.1:8080", ev, ack=True)
res.count, res.acks         # 1, [PubAck(seq=7, stream='orders')]

async with web.subscribe("http://127.0.0.1:8080", "orders.>") as sub:
    async for ev in sub:    # Event objects; sub.last_event_id: the SSE id (a stream's seq)
        ...
```

Standard library asyncio plus ``orjson`` (and ``websockets``' sans-I/O protocol for the
WebSocket framing): no HTTP client library.  This module holds the URLs
and credentials, ``HttpConnection`` (a small HTTP/1.1 client:
keep-alive, ``Content-Length``, chunked and close-delimited bodies, one
retry when a kept-alive connection turns out closed) and publishing
(``HttpPublisher``, ``publish``); ``subscribe`` returns a
``fastflow.client.websub.WebSubscription``, an async iterator that
reconnects by itself (SSE: with ``Last-Event-ID``, so a subscription
that reads a stream resumes where it was).

The web doors carry CloudEvents, not the engine's routing subject: a
received Event has ``routing_subject`` None; its ``type`` is the subject
it was published on unless the publisher set one.
"""

import asyncio
import base64
import ssl as _ssl
from typing import NamedTuple, Optional
from urllib.parse import quote, unquote, urlsplit

import orjson

from fastflow._impl import Event
from fastflow._version import __version__
from fastflow.client.streams import PubAck
from fastflow.errors import ConnectError, ConnectionClosedError, ServerError
from fastflow.event import to_http, to_http_batch
from fastflow.protocol import server_error

__all__ = ("HttpConnection", "HttpPublisher", "Published", "Response", "WebUrl",
           "authorization", "is_web_url", "parse_web_url", "publish", "status_error",
           "subject_path", "subscribe")

USER_AGENT = "fastflow-client/" + __version__
MODES = ("binary", "structured", "batch")
_HEAD_LIMIT = 64 * 1024                 # the longest response head (status line and headers)
_READ = 64 * 1024
# scheme -> (TLS, WebSocket, default port)
_SCHEMES = {"http": (False, False, 80), "https": (True, False, 443),
            "ws": (False, True, 80), "wss": (True, True, 443)}


# -- URLs and credentials ------------------------------------------------------------------


class WebUrl(NamedTuple):
    """A web door's URL: ``scheme://[user:password@|token@]host[:port][/base]``."""
    scheme: str
    host: str
    port: int
    tls: bool
    websocket: bool
    base: str                           # a path prefix (a reverse proxy's), "" for none
    user: Optional[str]
    password: Optional[str]
    token: Optional[str]

    @property
    def origin(self):
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "{}://{}:{}".format(self.scheme, host, self.port)

    @property
    def host_header(self):
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return host if self.port == _SCHEMES[self.scheme][2] else "{}:{}".format(host, self.port)


def is_web_url(url):
    """Whether ``url`` names a web door (http, https, ws, wss)."""
    return isinstance(url, str) and "://" in url and \
        url.split("://", 1)[0].strip().lower() in _SCHEMES


def parse_web_url(url):
    """The ``WebUrl`` of ``http://``, ``https://``, ``ws://`` or ``wss://``
    ``[user:password@]host[:port][/base]`` (``token@host``: a user name
    without a password is a token; the ports default to 80 and 443)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("server URL must be a non-empty string, got {!r}".format(url))
    u = urlsplit(url.strip())
    scheme = u.scheme.lower()
    if scheme not in _SCHEMES:
        raise ValueError("server URL {!r}: expected http://, https://, ws:// or wss://".format(
            url))
    if u.query or u.fragment:
        raise ValueError("server URL {!r}: expected scheme://host[:port][/base], without a "
                         "query or fragment".format(url))
    try:
        port = u.port
    except ValueError:
        raise ValueError("server URL {!r}: the port must be a number from 1 to 65535".format(
            url)) from None
    tls, websocket, default = _SCHEMES[scheme]
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password is not None else None
    token = None
    if user is not None and password is None:
        user, token = None, user
    base = u.path.rstrip("/")
    if base.endswith("/ws") and websocket:
        base = base[:-3]                # ws://host/ws names the endpoint itself
    return WebUrl(scheme, u.hostname or "127.0.0.1", port or default, tls, websocket, base,
                  user, password, token)


def authorization(token=None, user=None, password=None):
    """The ``Authorization`` header value: Bearer for a token, Basic for a user."""
    if token:
        return "Bearer " + token
    if user is not None:
        raw = "{}:{}".format(user, password or "").encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")
    return None


def _ssl_context(tls):
    if isinstance(tls, _ssl.SSLContext):
        return tls
    return _ssl.create_default_context()


def subject_path(s):
    """A subject or pattern as one path segment (percent-encoded UTF-8)."""
    return quote(s, safe="$*")


def status_error(status, message, headers=None):
    """The exception of an error answer: a ``ServerError`` of the status's
    kind (``AuthenticationError`` for 401, ``PermissionDeniedError`` for
    403, ``NotFoundError`` for 404...), with ``status``, ``retry_after``
    (seconds, or None) and ``headers``."""
    exc = ServerError(status, message) if status == 408 else server_error(status, message)
    exc.status = status
    exc.headers = headers or {}
    ra = exc.headers.get("retry-after")
    exc.retry_after = float(ra) if ra and ra.strip().isdigit() else None
    return exc


# -- HTTP/1.1 ------------------------------------------------------------------------------


class Response:
    """An HTTP response: ``status``, ``reason``, ``headers`` (lower-cased
    name -> value, repeated fields joined with ", "), ``body`` (bytes; not
    read for a streamed response: ``chunks()``)."""

    __slots__ = ("status", "reason", "version", "headers", "body", "keep_alive", "_reader",
                 "_writer", "_mode", "_left", "_chunk_end", "_done")

    def __init__(self, status, reason, version, headers):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = b""
        conn = headers.get("connection", "").lower()
        self.keep_alive = "close" not in conn if version == "1.1" else "keep-alive" in conn
        self._reader = None
        self._writer = None             # a streamed response's own connection
        self._mode = None
        self._left = 0                  # bytes left: of the body (length) or of the chunk
        self._chunk_end = False         # a chunk's data is read, its CRLF not yet
        self._done = False

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return orjson.loads(self.body)

    def error(self):
        """The ``ServerError`` of an error answer (its ``{"error": {"code",
        "message"}}`` body, or the body's text)."""
        message = None
        try:
            message = orjson.loads(self.body)["error"]["message"]
        except (ValueError, TypeError, KeyError):
            pass
        if not isinstance(message, str):
            message = self.body[:300].decode("utf-8", "replace").strip() or self.reason
        return status_error(self.status, message, self.headers)

    async def read(self):
        """The rest of a streamed response's body (bytes)."""
        self.body += b"".join([c async for c in self.chunks()])
        return self.body

    def close(self):
        """Close a streamed response's connection."""
        w = self._writer
        self._writer = None
        if w is not None:
            w.close()

    async def read_some(self):
        """The next piece of the body as it arrives (chunked encoding
        decoded), b"" at its end.  A cancelled call loses nothing: the next
        one goes on where it was (``WebSubscription.next(timeout)``)."""
        if self._done:
            return b""
        r = self._reader
        mode = self._mode
        if mode == "length":
            if not self._left:
                self._done = True
                return b""
            data = await r.read(min(self._left, _READ))
            if not data:
                raise ConnectionClosedError("the connection closed {} bytes before the end of "
                                            "the response".format(self._left))
            self._left -= len(data)
            return data
        if mode == "chunked":
            while True:
                if self._left:
                    data = await r.read(min(self._left, _READ))
                    if not data:
                        raise ConnectionClosedError("the connection closed in the middle of a "
                                                    "chunk")
                    self._left -= len(data)
                    self._chunk_end = not self._left
                    return data
                if self._chunk_end:
                    if (await r.readline()).strip():
                        raise ConnectionClosedError("malformed chunked response: no CRLF "
                                                    "after a chunk")
                    self._chunk_end = False
                size = await _chunk_size(r)
                if size == 0:
                    while (await r.readline()) not in (b"\r\n", b"\n", b""):
                        pass            # trailer fields
                    self._done = True
                    return b""
                self._left = size
        if mode == "close":
            data = await r.read(_READ)
            if not data:
                self._done = True
            return data
        self._done = True
        return b""

    async def chunks(self):
        """The body piece by piece, as it arrives (``read_some``)."""
        while True:
            data = await self.read_some()
            if not data:
                return
            yield data


async def _chunk_size(r):
    line = await r.readline()
    if not line:
        raise ConnectionClosedError("the connection closed in the middle of a chunked response")
    text = line.split(b";", 1)[0].strip()
    try:
        return int(text, 16)
    except ValueError:
        raise ConnectionClosedError("malformed chunked response: chunk size {!r}".format(
            text[:20])) from None


class _NoResponse(Exception):
    """A kept-alive connection closed before any byte of the answer."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection to the server of ``url``, opened
    when a request needs it and again after the server closes it.
    ``timeout``: seconds for connecting and for each request.  Credentials
    (``token``: Bearer, ``user`` and ``password``: Basic) go with every
    request; those in the URL count when these are not given."""

    def __init__(self, url, *, token=None, user=None, password=None, tls=None, timeout=10.0):
        self.url = url if isinstance(url, WebUrl) else parse_web_url(url)
        u = self.url
        if token is None and user is None:
            token, user, password = u.token, u.user, u.password
        self.authorization = authorization(token, user, password)
        self.tls = _ssl_context(tls) if (u.tls or tls) else None
        self.timeout = timeout
        self.requests = 0               # answered on this client
        self.connections = 0            # connections opened
        self._reader = self._writer = None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def open(self):
        """A new connection (the old one, if any, is closed)."""
        self._drop()
        u = self.url
        try:
            self._reader, self._writer = await asyncio.wait_for(asyncio.open_connection(
                u.host, u.port, ssl=self.tls, limit=_HEAD_LIMIT,
                server_hostname=u.host if self.tls else None), self.timeout)
        except asyncio.TimeoutError:
            raise ConnectError("could not connect to {} within {:g} s".format(
                u.origin, self.timeout)) from None
        except (OSError, _ssl.SSLError) as exc:
            raise ConnectError("could not connect to {}: {}".format(
                u.origin, exc.strerror or exc if isinstance(exc, OSError) else exc)) from None
        self.connections += 1

    def _drop(self):
        w = self._writer
        self._reader = self._writer = None
        if w is not None:
            w.close()

    async def close(self):
        w = self._writer
        self._drop()
        if w is not None:
            try:
                await asyncio.wait_for(w.wait_closed(), 1.0)
            except (OSError, asyncio.TimeoutError, _ssl.SSLError):
                pass

    def head(self, method, path, headers=(), length=None):
        """The request line and headers of a request (bytes)."""
        lines = ["{} {} HTTP/1.1".format(method, self.url.base + path),
                 "host: " + self.url.host_header, "user-agent: " + USER_AGENT]
        if self.authorization:
            lines.append("authorization: " + self.authorization)
        if length is not None:
            lines.append("content-length: {}".format(length))
        for k, v in (headers.items() if hasattr(headers, "items") else headers):
            lines.append("{}: {}".format(k, v))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def request(self, method, path, body=b"", headers=(), stream=False):
        """Send a request (``path`` below the URL's base) and return the
        ``Response`` with its body read (``stream``: unread, for
        ``chunks()``; the connection then serves nothing else).  A
        connection kept alive that the server had closed meanwhile is
        opened again and the request sent once more."""
        has_body = body or method in ("POST", "PUT", "PATCH")
        data = self.head(method, path, headers, len(body) if has_body else None) + body
        for attempt in (0, 1):
            reused = self._writer is not None
            if not reused:
                await self.open()
            try:
                return await asyncio.wait_for(self._exchange(method, data, stream),
                                              self.timeout)
            except _NoResponse:
                self._drop()
                if attempt:
                    raise ConnectionClosedError("{} closed the connection without an "
                                                "answer".format(self.url.origin)) from None
            except asyncio.TimeoutError:
                self._drop()
                raise asyncio.TimeoutError("no answer from {} within {:g} s".format(
                    self.url.origin, self.timeout)) from None
            except (OSError, asyncio.IncompleteReadError, _ssl.SSLError) as exc:
                self._drop()
                if reused and not attempt and isinstance(exc, ConnectionError):
                    continue
                raise ConnectionClosedError("connection to {} lost: {}".format(
                    self.url.origin, exc or type(exc).__name__)) from None
            except ConnectionClosedError:
                self._drop()
                raise

    async def _exchange(self, method, data, stream):
        self._writer.write(data)
        while True:
            resp = await self._read_head()
            if not 100 <= resp.status < 200 or resp.status == 101:
                break
        self.requests += 1
        resp._reader = self._reader
        h = resp.headers
        if method == "HEAD" or 100 <= resp.status < 200 or resp.status in (204, 304):
            resp._mode = None
        elif "chunked" in h.get("transfer-encoding", "").lower():
            resp._mode = "chunked"
        elif "content-length" in h:
            try:
                resp._left = int(h["content-length"])
            except ValueError:
                raise ConnectionClosedError("malformed Content-Length {!r}".format(
                    h["content-length"][:20])) from None
            resp._mode = "length"
        else:
            resp._mode = "close"
            resp.keep_alive = False
        if stream:
            resp.keep_alive = False
            resp._writer = self._writer             # the response owns the connection now
            self._reader = self._writer = None
            return resp
        if resp._mode == "length":
            resp.body = await self._reader.readexactly(resp._left)
            resp._left = 0
            resp._done = True
        elif resp._mode is not None:
            await resp.read()
        if not resp.keep_alive:
            self._drop()
        return resp

    async def _read_head(self):
        try:
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _NoResponse() from None
            raise ConnectionClosedError("the connection closed in the middle of the response "
                                        "head") from None
        except asyncio.LimitOverrunError:
            raise ConnectionClosedError("response head over {} bytes".format(
                _HEAD_LIMIT)) from None
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ConnectionClosedError("not an HTTP/1.1 response: {!r}".format(lines[0][:80]))
        headers = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ConnectionClosedError("malformed response header {!r}".format(line[:80]))
            name = name.strip().lower()
            value = value.strip()
            headers[name] = headers[name] + ", " + value if name in headers else value
        return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", parts[0][5:],
                        headers)


# -- publishing ----------------------------------------------------------------------------


class Published(NamedTuple):
    """What ``publish`` returns: ``count``, the events the server routed;
    ``acks`` (with ``ack=True``, else None): a ``PubAck`` per event, in
    order: ``(seq, stream)`` of the first stream that stored it, ``(0,
    None)`` when none did, ``duplicate`` when a stream had it already."""
    count: int
    acks: Optional[list]


def _runs(events, subject):
    """``(subject, events)`` runs of consecutive events with one routing subject."""
    if subject is not None:
        return [(subject, events)]
    out = []
    for ev in events:
        s = ev.routing_subject
        if out and out[-1][0] == s:
            out[-1][1].append(ev)
        else:
            out.append((s, [ev]))
    return out


class HttpPublisher:
    """Publishes CloudEvents to a web door over one keep-alive connection
    (``HttpConnection``'s options); ``lineage=False`` leaves the engine's
    ``ffhops``/``fftrace`` out of what it sends."""

    def __init__(self, url, *, lineage=True, **options):
        self.http = HttpConnection(url, **options)
        self.lineage = lineage

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def close(self):
        await self.http.close()

    async def publish(self, events, subject=None, *, mode=None, ack=False, batch_size=1000):
        """POST ``events`` (an ``Event``, or an iterable of them) and return
        ``Published``.  ``subject``: the routing subject of them all
        (``/events/<subject>``); None: each event's ``routing_subject``,
        and ``POST /events`` (routed by ``type``) for an event without
        one.  ``mode``: ``"binary"`` (a request per event, attributes as
        ``ce-`` headers; the default for one Event), ``"structured"`` (a
        request per event, the JSON event as the body) or ``"batch"`` (a
        JSON array per request, up to ``batch_size`` events; the default
        for an iterable).  ``ack``: wait until the events are stored and
        return their streams and seqs (``201``; else ``202`` once
        routed).  An answer other than 201/202 raises a ``ServerError``
        (``status_error``); the events before it in the call were
        published."""
        if isinstance(events, Event):
            events = [events]
            mode = mode or "binary"
        else:
            events = list(events)
            mode = mode or "batch"
        if mode not in MODES:
            raise ValueError("mode must be one of {}, got {!r}".format(", ".join(MODES), mode))
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1, got {}".format(batch_size))
        count = 0
        acks = [] if ack else None
        for subj, group in _runs(events, subject):
            if mode == "batch":
                for i in range(0, len(group), batch_size):
                    chunk = group[i:i + batch_size]
                    headers, body = to_http_batch(chunk, self.lineage)
                    count += await self._post(subj, headers, body, acks, len(chunk))
            else:
                for ev in group:
                    headers, body = to_http(ev, mode, self.lineage)
                    count += await self._post(subj, headers, body, acks, 1)
        return Published(count, acks)

    async def _post(self, subject, headers, body, acks, sent):
        path = "/events" if subject is None else "/events/" + subject_path(subject)
        if acks is not None:
            path += "?ack=1"
        resp = await self.http.request("POST", path, body, headers)
        if resp.status == 202:
            n = resp.header("ff-count")
            return int(n) if n and n.isdigit() else sent
        if resp.status == 201 and acks is not None:
            try:
                answer = resp.json()
                got = [PubAck(a.get("seq") or 0, a.get("stream"), bool(a.get("duplicate")))
                       for a in answer["acks"]]
            except (ValueError, TypeError, KeyError, AttributeError):
                raise status_error(resp.status, "a 201 answer without the acks of the events: "
                                   "{!r}".format(resp.body[:200]), resp.headers) from None
            acks.extend(got)
            return answer.get("count", len(got))
        if resp.status < 300:
            raise status_error(resp.status, "unexpected answer {} {} to a publish".format(
                resp.status, resp.reason), resp.headers)
        raise resp.error()


async def publish(url, events, subject=None, *, mode=None, ack=False, batch_size=1000,
                  lineage=True, **options):
    """Publish ``events`` to the web door at ``url`` on a connection of
    its own: ``HttpPublisher(url, lineage=..., **options).publish(events,
    subject, mode=..., ack=..., batch_size=...)``."""
    async with HttpPublisher(url, lineage=lineage, **options) as p:
        return await p.publish(events, subject, mode=mode, ack=ack, batch_size=batch_size)


def subscribe(url, pattern=None, **options):
    """A ``WebSubscription`` (``fastflow.client.websub``) at ``url``:
    Server-Sent Events for http(s)://, the WebSocket door (subprotocol
    ``cloudevents.json``) for ws(s)://.  ``pattern``: the subject pattern
    (``GET /events/<pattern>``, ``GET /ws?subject=<pattern>``); options:
    ``queue``; ``stream`` with ``start``, ``seq`` or ``time`` to read a
    stream (SSE, ``GET /streams/<stream>/events``, resumed with
    ``Last-Event-ID``); ``last_event_id``; ``reconnect``,
    ``reconnect_wait``, ``reconnect_wait_max``, ``disconnected_callback``,
    ``reconnected_callback``; and ``HttpConnection``'s (``token``,
    ``user``, ``password``, ``tls``, ``timeout``).  Not connected yet:
    ``await sub.start()`` (or ``async with``, or the first ``async for``)
    connects."""
    from fastflow.client.websub import WebSubscription

    return WebSubscription(url, pattern, **options)
