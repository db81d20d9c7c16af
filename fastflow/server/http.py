"""The web doors (docs/http.md): HTTP/1.1 on one listener (``--http-port``)
with the same engine, users, permissions, limits, TLS, drain and
monitoring as the other doors.

- CloudEvents over HTTP (the HTTP protocol binding 1.0): ``POST /events``
  and ``POST /events/<subject>`` in binary, structured and batched content
  modes; ``OPTIONS`` answers the CloudEvents webhook abuse-protection
  handshake and CORS preflights.
- WebSocket (``GET /ws``, ``fastflow.server.ws``) and Server-Sent Events
  (``GET /events/<pattern>`` or ``GET /streams/<name>/events`` with
  ``Accept: text/event-stream``, ``fastflow.server.sse``): once a request
  switches the connection to one of them, its door protocol changes.
- Replay and durable consumers for ``curl`` (``/streams/...``,
  ``fastflow.server.sse``).

Each connection is a ``Connection`` (the lifecycle every door shares);
this module is the HTTP protocol's part: the parser (the core's
``HttpParser``, in C), the handler table (method and first path segment ->
handler) and HTTP's words for errors.  Requests are answered in order
(pipelining); a request that waits (a password check in a thread) holds the
ones behind it, with reading paused.
"""

import asyncio
import base64
import binascii
import email.utils
import logging
import math
import time
from collections import deque
from urllib.parse import unquote

from fastflow._impl import HttpParser, Request, validate_pattern, validate_subject
from fastflow._version import __version__
from fastflow.errors import (
    EventError,
    EventTooLarge,
    HttpError,
    LogFullError,
    SignatureError,
    SubjectError,
)
from fastflow.event import from_http_batch, from_json, from_json_batch
from fastflow.protocol import error_code
from fastflow.server.auth import AuthError
from fastflow.server.quotas import QuotaExceeded
from fastflow.server.connection import CLOSING, READY, DoorProtocol

__all__ = ("HttpError", "HttpParser", "HttpProtocol", "HttpResponder", "Request", "http_date",
           "response_head")

log = logging.getLogger("fastflow.server")

REASONS = {
    101: "Switching Protocols", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
    301: "Moved Permanently", 302: "Found", 304: "Not Modified",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    417: "Expectation Failed",
    411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
    415: "Unsupported Media Type", 426: "Upgrade Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "HTTP Version Not Supported",
    507: "Insufficient Storage",
}
SERVER = "fastflow/" + __version__
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
_JSON = "application/json"
_ACK_VALUES = frozenset(("1", "true", "stored", "yes"))
_BAD_HEADER_CHARS = str.maketrans("", "", "\r\n\0")

_date_cache = [0, b""]
_accepted_cache = [0, b""]


def http_date():
    """The Date header's value (IMF-fixdate), made once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = email.utils.formatdate(now, usegmt=True).encode("ascii")
    return _date_cache[1]


def _hv(v):
    """A header value as bytes, without CR, LF or NUL (they would end the line)."""
    if isinstance(v, bytes):
        v = v.decode("latin-1")
    return str(v).translate(_BAD_HEADER_CHARS).encode("latin-1", "replace")


def response_head(status, length, ctype=None, headers=(), close=False):
    """The status line and headers of a response with a ``length``-byte
    body (None: no Content-Length, the body runs until the connection
    closes or is a stream of its own)."""
    out = [b"HTTP/1.1 %d %s\r\nserver: %s\r\ndate: %s\r\n" % (
        status, REASONS.get(status, "Unknown").encode(), SERVER.encode(), http_date())]
    if ctype is not None:
        out.append(b"content-type: " + _hv(ctype) + b"\r\n")
    if length is not None:
        out.append(b"content-length: %d\r\n" % length)
    for k, v in headers:
        out.append(_hv(k) + b": " + _hv(v) + b"\r\n")
    if close:
        out.append(b"connection: close\r\n")
    out.append(b"\r\n")
    return b"".join(out)


def error_body(status, message, **extra):
    d = {"error": {"code": status, "message": message}}
    d["error"].update(extra)
    return _dumps(d)


try:
    import orjson

    def _dumps(obj):
        return orjson.dumps(obj)
except ImportError:                     # (orjson is a dependency; this keeps imports safe)
    import json

    def _dumps(obj):
        return json.dumps(obj, separators=(",", ":")).encode()


def _basic(value):
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HttpError(401, "authentication failed: Basic credentials are not "
                             "base64 of UTF-8 'user:password'") from None
    user, sep, pw = raw.partition(":")
    if not sep:
        raise HttpError(401, "authentication failed: Basic credentials need 'user:password'")
    return {"user": user, "password": pw}


def credentials(req):
    """The credentials of a request (CONNECT's shape: ``token``, or
    ``user`` and ``password``): ``Authorization: Bearer`` or ``Basic``,
    or the ``access_token`` query parameter (browsers cannot set headers
    on a WebSocket or an EventSource); None when it has none."""
    auth = req.headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return {"token": value.strip()}
        if scheme == "basic":
            return _basic(value)
        raise HttpError(401, "authentication failed: unsupported Authorization scheme {!r} "
                             "(Bearer or Basic)".format(scheme[:32]))
    if "access_token=" in req.query:
        tok = req.params().get("access_token")
        if tok:
            return {"token": tok}
    return None


class HttpResponder:
    """An HTTP/1.1 server connection's answering side, whatever it serves
    (the HTTP door's ``HttpProtocol``, the monitoring port's
    ``MonitorProtocol``): the requests the parser cut are answered one at a
    time, in order (keep-alive and pipelining), by the handler its
    ``routes`` table names (first path segment -> method -> handler
    ``handler(self, req, principal)``); credentials (``Authorization:
    Bearer`` or ``Basic``) are checked against ``auth`` with the server's
    login back-off, scrypt in a thread while reading pauses; a head or body
    arriving too slowly, or a connection idle too long, is closed.

    It works on ``self.conn``: the web doors' ``Connection``, or another
    object with its few members (``state``, ``id``, ``peer``,
    ``peer_host``, ``last_in``, ``tasks``, ``close_reason``, ``pause``,
    ``resume``, ``track``, ``close``).  A subclass sets ``self.conn``,
    ``server``, ``cfg``, ``loop`` and ``auth``, calls ``_start_http``, and
    implements ``write``; the other hooks have defaults."""

    parser_error = HttpError
    who = "client"                      # a connection, in the log
    routes = {}                         # first path segment -> method -> handler
    routes_doc = "docs/http.md"         # where a 404 sends the client
    burst = 256                         # requests answered in one loop iteration at most
    # the 401's challenges
    challenges = (("www-authenticate", 'Bearer realm="fastflow"'),
                  ("www-authenticate", 'Basic realm="fastflow", charset="UTF-8"'))

    def _start_http(self, max_body):
        cfg = self.cfg
        self.parser = HttpParser(cfg.http_max_header, cfg.http_max_headers, max_body)
        self.queue = deque()            # requests waiting for the one being answered
        self.busy = False               # a request is being answered asynchronously
        self.requests = 0               # answered on this connection
        self.principal = None           # the last request's (cached with its credentials)
        self._creds_key = None
        self._burst_scheduled = False
        self.parser.head_check = self._head_check

    def _head_check(self, req):
        """A request's head, before its body is read.  With a body and no
        credentials at all, where they are required: refused (an outsider
        does not make the server hold ``http_max_body`` bytes per
        connection).  ``Expect: 100-continue`` (RFC 9110 10.1.1): a ``100
        Continue`` goes out when no answer is due before this request's
        (pipelined requests ahead of it), so that a client waiting for it
        (curl, for a body over 1 KiB) sends the body at once; any other
        expectation is 417."""
        h = req.headers
        body = h.get("content-length", "0") != "0" or "transfer-encoding" in h
        if (body and self.auth.required and "authorization" not in h
                and "access_token=" not in req.query and req.method != "OPTIONS"
                and not self.public(req)):
            raise HttpError(401, "authentication required: Authorization: Bearer <token> or "
                                 "Basic (the body was not read)", self.challenges)
        expect = h.get("expect")
        if expect is not None:
            if expect.strip().lower() != "100-continue":
                raise HttpError(417, "unsupported expectation {!r} (this server knows "
                                     "100-continue)".format(expect[:64]))
            if (body and req.version == "1.1" and not self.queue and not self.busy
                    and not self.parser.ready):
                self.interim(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- hooks -------------------------------------------------------------------------

    def write(self, data):
        """Send the bytes of one response."""
        raise NotImplementedError

    def interim(self, data):
        """Send an interim (1xx) response: not an answer to count."""
        self.write(data)

    def response_headers(self, req):
        """Headers every response to ``req`` carries (the door: CORS)."""
        return ()

    def admit(self, req):
        """Raise an HttpError to refuse ``req`` before it is routed."""

    def public(self, req):
        """Whether ``req`` is answered without looking at credentials."""
        return False

    def accepted(self, principal):
        """``principal``'s credentials were good."""
        if principal.kind != "none":
            self.server.throttle.succeeded(self.conn.peer_host)

    def login_failed(self):
        """Count credentials that were wrong, or refused unchecked."""

    # -- HTTP's words for the connection's errors ------------------------------------------

    def refusal(self, code, message):
        status = 503 if code == 429 else code
        body = error_body(status, message)
        return response_head(status, len(body), _JSON, (("retry-after", "1"),), close=True) + body

    def close_data(self, code, message, rid):
        if self.busy or self.parser.in_request or code == 408:
            status = 408 if code == 408 else (code if code in REASONS else 500)
            body = error_body(status, message)
            return response_head(status, len(body), _JSON, self._close_headers,
                                 close=True) + body
        return b""

    _close_headers = ()

    def protocol_error(self, exc):
        self._close_headers = exc.headers
        return exc.status, exc.message

    def tick(self, now):
        """Close a keep-alive connection idle past ``http_idle_timeout``, and
        one whose request is arriving too slowly (``http_request_timeout``:
        a slow head or body, slowloris)."""
        conn = self.conn
        started = self.parser.in_request
        if started and time.monotonic() - started > self.cfg.http_request_timeout:
            log.info("%s %d (%s): request not complete after %g s: closed", self.who,
                     conn.id, conn.peer, self.cfg.http_request_timeout)
            conn.close(408, "the request did not arrive within {:g} s".format(
                self.cfg.http_request_timeout))
            return True
        if (not self.busy and not started and not conn.tasks
                and now - conn.last_in > self.cfg.http_idle_timeout):
            conn.close_reason = "idle keep-alive connection"
            conn.close()
            return True
        return False

    # -- requests ----------------------------------------------------------------------

    def handle(self, items):
        self.queue.extend(items)
        self._drain()

    def _drain(self):
        """Answer the waiting requests in order, until one goes asynchronous;
        at most ``burst`` at once: then reading pauses and the rest are
        answered in the next loop iterations (a client pipelining thousands
        of requests does not hold the loop from the others)."""
        q = self.queue
        conn = self.conn
        n = self.burst
        while q and not self.busy and conn.state == READY:
            if not n:
                if not self._burst_scheduled:
                    self._burst_scheduled = True
                    conn.pause("burst")
                    self.loop.call_soon(self._burst_next)
                return
            n -= 1
            self._dispatch(q.popleft())

    def _burst_next(self):
        self._burst_scheduled = False
        self._drain()
        if not self._burst_scheduled:
            self.conn.resume("burst")

    def _next(self):
        """The asynchronous request is answered: go on with the waiting ones."""
        self.busy = False
        self.conn.resume("http")
        self._drain()

    def _dispatch(self, req):
        conn = self.conn
        try:
            self.admit(req)
            handler = self.route(req)
            principal = self._principal(req)
            if principal is None:       # being checked in a thread: answered later
                return
            handler(self, req, principal)
        except HttpError as exc:
            self.refuse(req, exc)
        except Exception as exc:
            log.exception("%s %d: %s %s failed", self.who, conn.id, req.method, req.path)
            self.refuse(req, HttpError(500, "internal error: {}".format(exc)))

    def route(self, req):
        """The handler of ``req`` (raises 404 / 405; HEAD is served by GET's)."""
        seg = req.path.split("/", 2)[1]
        table = self.routes.get(seg)
        if table is None:
            raise HttpError(404, "no such resource: {!r} (see {})".format(
                req.path[:200], self.routes_doc))
        h = table.get(req.method)
        if h is None:
            if req.method == "HEAD" and "GET" in table:
                return table["GET"]
            allow = ", ".join(sorted(set(table) | ({"HEAD"} if "GET" in table else set())))
            raise HttpError(405, "{} is not allowed on {}".format(req.method, "/" + seg),
                            (("allow", allow),))
        return h

    # -- auth --------------------------------------------------------------------------

    def unauthorized(self, message):
        """The 401 of a request without good credentials."""
        return HttpError(401, message, self.challenges)

    def _principal(self, req):
        """The principal of ``req``; None while its password is checked in
        a thread (the request is answered then)."""
        auth = self.auth
        if not auth.required and "authorization" not in req.headers:
            return auth.anonymous
        if self.public(req):
            return auth.anonymous
        try:
            creds = credentials(req)
        except HttpError as exc:        # not credentials at all: nothing to check
            raise self.unauthorized(exc.message) from None
        if creds is None:
            if auth.required and req.method != "OPTIONS":
                raise self.unauthorized("authentication required: Authorization: Bearer "
                                        "<token> or Basic")
            return auth.anonymous
        key = tuple(sorted(creds.items()))
        if key == self._creds_key and self.principal is not None:
            return self.principal
        conn = self.conn
        wait = 0.0
        if auth.required:
            wait = self.server.throttle.reserve(conn.peer_host)
            if wait is None:
                self.login_failed()
                raise HttpError(429, "authentication failed: too many failed logins from this "
                                     "address, try again later", (("retry-after", "2"),))
        if wait or auth.needs_kdf(creds):
            self.busy = True
            conn.pause("http")
            conn.track(self.loop.create_task(self._principal_async(req, creds, key, wait)))
            return None
        return self._checked(req, creds, key)

    def _checked(self, req, creds, key):
        try:
            p = self.auth.check(creds)
        except AuthError as exc:
            self._auth_failed(exc)
        self.accepted(p)
        self.principal, self._creds_key = p, key
        return p

    def _auth_failed(self, exc):
        self.login_failed()
        self.server.throttle.failed(self.conn.peer_host)
        log.info("%s %d (%s): %s", self.who, self.conn.id, self.conn.peer, exc)
        raise self.unauthorized(str(exc))

    async def _principal_async(self, req, creds, key, wait):
        try:
            if wait:
                await asyncio.sleep(wait)
            try:
                p = await self.auth.authenticate(creds, self.loop)
            except AuthError as exc:
                self._auth_failed(exc)
            if self.conn.state != READY:
                return
            self.accepted(p)
            self.principal, self._creds_key = p, key
            self.busy = False
            handler = self.route(req)
            handler(self, req, p)
        except HttpError as exc:
            self.busy = False
            self.refuse(req, exc)
        except Exception as exc:
            self.busy = False
            log.exception("%s %d: %s %s failed", self.who, self.conn.id, req.method, req.path)
            self.refuse(req, HttpError(500, "internal error: {}".format(exc)))
        if not self.busy:
            self._next()

    # -- answers -----------------------------------------------------------------------

    def respond(self, req, status, body=b"", ctype=None, headers=(), close=False):
        """Write the response to ``req`` (None: the request being answered
        is unknown, the connection closes after it)."""
        conn = self.conn
        if conn.state >= CLOSING:
            return
        close = close or req is None or not req.keep_alive
        hs = tuple(headers) + self.response_headers(req)
        head_only = req is not None and req.method == "HEAD"
        self.write(response_head(status, len(body), ctype, hs, close)
                   + (b"" if head_only else body))
        self.requests += 1
        if close:
            conn.close_reason = "HTTP response with Connection: close"
            conn.close()

    def json(self, req, obj, status=200, headers=()):
        self.respond(req, status, _dumps(obj), _JSON, headers)

    def refuse(self, req, exc):
        """Answer ``req`` with the HttpError ``exc``."""
        self.respond(req, exc.status, error_body(exc.status, exc.message), _JSON, exc.headers,
                     close=exc.close)


class HttpProtocol(HttpResponder, DoorProtocol):
    """The HTTP door's part of a connection: the parser, the routes and
    HTTP's words for the lifecycle's errors (``HttpResponder``)."""

    def public(self, req):
        # a webhook sink granting delivery proves itself with the URL's token; an
        # MQTT client over WebSocket with its CONNECT
        from fastflow.server.subscriptions import is_grant
        from fastflow.server.ws import mqtt_upgrade
        return is_grant(req) or mqtt_upgrade(req)

    name = "http"
    ready_note = " (HTTP)"
    answers_only = True

    def __init__(self, conn):
        super().__init__(conn)
        cfg = self.cfg
        self.auth = self.server.auth
        self._start_http(cfg.http_max_body)
        self.lineage = cfg.http_lineage == "keep"

    # -- the lifecycle's hooks ---------------------------------------------------------

    def started(self):
        # HTTP has no CONNECT: the connection is ready at once and every
        # request carries its credentials
        self.conn.connected({}, self.server.auth.anonymous, 0, answer=False)

    def greet(self):
        pass

    def ping(self):
        # an idle keep-alive connection: nothing to ping (tick closes it)
        self.conn.pings_out = 0

    def err(self, code, message, rid=0):
        self.respond(None, code if code in REASONS else 500, error_body(code, message), _JSON)

    def stats(self, d):
        d["requests"] = self.requests

    # -- HttpResponder's hooks ---------------------------------------------------------

    def write(self, data):
        self.outbuf.write(data)
        self.server.n_http_requests += 1

    def interim(self, data):
        self.outbuf.write(data)

    def response_headers(self, req):
        return self.cors(req)

    def admit(self, req):
        if self.server.stopping:
            raise HttpError(503, "the server is shutting down", (("retry-after", "5"),),
                            close=True)

    def accepted(self, principal):
        try:
            self.conn._set_principal(principal)
        except QuotaExceeded as exc:
            raise HttpError(429, str(exc), (("retry-after", str(exc.retry_after)),)) from None

    def login_failed(self):
        self.server.n_auth_failures += 1

    def refuse(self, req, exc):
        if exc.status == 403:
            self.server.n_denied += 1
        super().refuse(req, exc)

    # -- answers -----------------------------------------------------------------------

    def cors(self, req):
        """The CORS headers for ``req`` (its Origin allowed by
        ``http_cors_origins``), or ()."""
        origin = req.headers.get("origin") if req is not None else None
        allowed = self.cfg.http_cors_origins
        if not origin or not allowed:
            return ()
        if "*" in allowed:
            return (("access-control-allow-origin", "*"),
                    ("access-control-expose-headers", "location, retry-after"))
        if origin in allowed:
            return (("access-control-allow-origin", origin), ("vary", "origin"),
                    ("access-control-allow-credentials", "true"),
                    ("access-control-expose-headers", "location, retry-after"))
        return ()

    # -- the handlers ------------------------------------------------------------------

    def _root(self, req, principal):
        self.json(req, {"server": SERVER, "endpoints": {
            "publish": "POST /events[/<subject>]",
            "subscribe": "GET /events/<pattern> (text/event-stream), GET /ws",
            "streams": "GET /streams", "subscriptions": "GET, POST /subscriptions",
            "openapi": "GET /openapi.json", "catalog": "GET /registry (xRegistry)",
            "health": "GET /healthz"}})

    def _health(self, req, principal):
        if self.server.stopping:
            self.json(req, {"status": "stopping"}, 503)
        else:
            self.json(req, {"status": "ok"})

    def _options(self, req, principal):
        """CORS preflight and the CloudEvents webhook validation handshake
        (CloudEvents Web Hooks for Event Delivery, section 4)."""
        h = req.headers
        hs = [("allow", "OPTIONS, GET, HEAD, POST")]
        origin = h.get("webhook-request-origin")
        if origin is not None:
            allowed = self.cfg.http_webhook_origins
            origin = origin.strip()
            if "*" not in allowed and origin not in allowed:
                raise HttpError(403, "WebHook-Request-Origin {!r} may not deliver here".format(
                    origin[:200]))
            hs.append(("webhook-allowed-origin", origin))
            rate = self.cfg.http_webhook_rate
            asked = h.get("webhook-request-rate")
            if rate:
                asked = asked.strip() if asked is not None else ""
                # (ASCII digits only: str.isdigit also takes '\xb2'; a number
                # of thousands of digits is no rate either)
                if asked.isdigit() and asked.isascii() and len(asked) <= 18:
                    rate = min(rate, int(asked))
                hs.append(("webhook-allowed-rate", str(rate)))
            else:
                hs.append(("webhook-allowed-rate", "*"))
        if h.get("access-control-request-method") is not None and self.cors(req):
            hs.append(("access-control-allow-methods", "GET, HEAD, POST, OPTIONS"))
            want = h.get("access-control-request-headers")
            hs.append(("access-control-allow-headers", want if want else
                       "authorization, content-type"))
            hs.append(("access-control-max-age", "600"))
            self.respond(req, 204, b"", None, hs)
            return
        self.respond(req, 200 if origin is not None else 204, b"", None, hs)

    def _events_get(self, req, principal):
        from fastflow.server.sse import subscribe_sse
        subscribe_sse(self, req, principal, _subject_of(req.path, "/events/", pattern=True))

    def _events_post(self, req, principal):
        subject = _subject_of(req.path, "/events/")
        self.publish(req, principal, subject)

    def publish(self, req, principal, subject):
        """Publish the CloudEvents of ``req`` (any content mode) on
        ``subject`` (None: each event's ``type``); 202, or 201 with each
        event's stream and seq when ``?ack=1`` or ``ff-ack: 1`` asks."""
        conn = self.conn
        ct = req.headers.get("content-type")
        mt = ct.partition(";")[0].strip().lower() if ct is not None else ""
        ack = req.params().get("ack", req.headers.get("ff-ack", "")).lower() in _ACK_VALUES \
            if (req.query or "ff-ack" in req.headers) else False
        schemas = self._schemas()
        if not ack and schemas is None and (mt == STRUCTURED or mt == BATCH):
            self._publish_json(req, principal, subject, mt == BATCH)
            return
        try:
            if mt == STRUCTURED:
                events = [from_json(req.body, subject)]
            elif mt == BATCH:
                events = from_json_batch(req.body, subject)
            else:
                if mt.startswith("application/cloudevents"):
                    raise HttpError(415, "unsupported CloudEvents format {!r}: {} or {}".format(
                        mt, STRUCTURED, BATCH), (("accept-post", STRUCTURED + ", " + BATCH),))
                if not any(n.startswith("ce-") for n, _ in req.pairs):
                    raise HttpError(415, "Content-Type {!r} with no ce- headers is not a "
                                         "CloudEvent: send binary mode (ce-specversion, ce-id, "
                                         "ce-source, ce-type headers) or {}".format(
                                             mt, STRUCTURED),
                                    (("accept-post", STRUCTURED + ", " + BATCH),))
                events = from_http_batch(req.pairs, req.body, subject)
        except EventError as exc:
            raise HttpError(400, str(exc)) from None
        if subject is None:
            events = [_routed_by_type(ev, i, len(events)) for i, ev in enumerate(events)]
        perms = principal.permissions
        max_payload = self.cfg.max_payload
        if perms.pub_allow is not None or perms.pub_deny is not None:
            seen = {}
            for i, ev in enumerate(events):
                s = ev.routing_subject
                ok = seen.get(s)
                if ok is None:
                    ok = seen[s] = conn.may_publish(s)
                if not ok:
                    conn.parser.denied += 1
                    raise HttpError(403, "permission denied: publish to {!r}{}".format(
                        s, _at(i, len(events))))
        for i, ev in enumerate(events):
            if len(ev.data) > max_payload:
                raise HttpError(413, "event data of {} bytes exceeds max_payload={}{}".format(
                    len(ev.data), max_payload, _at(i, len(events))))
        self._ingress(len(events), sum(len(ev.data) for ev in events), True)
        if schemas is not None:
            from fastflow.catalog.schemas import SchemaRefusal
            try:
                schemas.check(events)
            except SchemaRefusal as exc:
                self.respond(req, 400, error_body(
                    400, "{}{} (nothing was published)".format(exc, _at(exc.index, len(events))),
                    path=exc.path, schema=exc.schema, index=exc.index), _JSON)
                return
        flow = self.flow
        checked = flow.trust is not None
        if checked:
            # the trust policy: every event passes before any is published
            for i, ev in enumerate(events):
                try:
                    flow.trust.check_event(ev.routing_subject, ev)
                except SignatureError as exc:
                    raise HttpError(403, "{}{} (nothing was published)".format(
                        exc, _at(i, len(events)))) from None
        publish = flow.publish_record
        acks = [] if ack else None
        refused = None
        n = 0
        for i, ev in enumerate(events):
            try:
                seq = publish(ev.routing_subject, ev.encode(), None, None, trust_checked=checked)
            except (LogFullError, EventTooLarge) as exc:    # routed, not stored
                if refused is None:
                    refused = (i, exc)
                seq = 0
            except SubjectError as exc:
                raise HttpError(400, "{}{} ({} published before it)".format(
                    exc, _at(i, len(events)), n)) from None
            n += 1
            conn.outbuf.pub_bytes += len(ev.data)       # (metering: this user's bytes in)
            if acks is not None:
                acks.append({"id": ev.id, "stream": flow.last_stream if seq else None,
                             "seq": seq, "duplicate": bool(seq and flow.last_duplicate)})
        conn.in_msgs_py += n
        if refused is not None:
            i, exc = refused
            code = error_code(exc)
            hs = (("retry-after", "1"),) if isinstance(exc, LogFullError) else ()
            status = 429 if isinstance(exc, LogFullError) else (413 if code == 413 else 507)
            raise HttpError(status, "{}{}: routed but not stored (all {} events were "
                                    "routed)".format(exc, _at(i, len(events)), n), hs)
        if acks is not None:
            self.json(req, {"count": n, "acks": acks}, 201)
        else:
            self._accepted(req, n)

    def _ingress(self, n, nbytes, take=False):
        """The account's ingress quota: 429 with Retry-After (nothing of
        the request published) while it cannot take ``n`` events of
        ``nbytes`` bytes (the HTTP door's publishes count in Python)."""
        ing = self.flow.ingress
        if ing is None:
            return
        wait = ing.wait(n, nbytes)
        if wait > 0:
            acct = self.conn.account.name
            try:
                self.server.quotas.refuse(acct, "ingress", "the ingress rate of account {} is "
                                          "exceeded: retry in {:.3f} s".format(acct, wait),
                                          self.conn.user, max(1, math.ceil(wait)))
            except QuotaExceeded as exc:
                raise HttpError(429, str(exc), (("retry-after", str(exc.retry_after)),)) \
                    from None
        if take:
            ing.take(n, nbytes)

    def _publish_json(self, req, principal, subject, batch):
        """Structured or batched JSON without an ack asked: decoded in C
        into records and published in one call (the data as received)."""
        conn = self.conn
        ing = self.flow.ingress
        if ing is not None:             # (its events are counted as the router takes them)
            self._ingress(1, len(req.body))
        perms = principal.permissions
        check = None
        if perms.pub_allow is not None or perms.pub_deny is not None:
            def check(s):
                if not conn.may_publish(s):
                    conn.parser.denied += 1
                    raise HttpError(403, "permission denied: publish to {!r}".format(s))
        flow = self.flow
        try:
            if batch:
                n = flow.publish_json_batch(req.body, subject, check=check,
                                            origin=conn.outbuf)
            else:
                flow.publish_json(req.body, subject, check=check, origin=conn.outbuf)
                n = 1
        except EventError as exc:
            raise HttpError(400, str(exc)) from None
        except SubjectError as exc:
            if subject is None:
                raise HttpError(400, "the event type cannot route it: {} (POST to "
                                     "/events/<subject> to choose the subject)".format(
                                         exc)) from None
            raise HttpError(400, str(exc)) from None
        except SignatureError as exc:   # the trust policy (a batch: the events before
            raise HttpError(403, str(exc)) from None    # the refused one were published)
        except (LogFullError, EventTooLarge) as exc:    # routed, not stored
            conn.in_msgs_py += 1 if not batch else 0
            full = isinstance(exc, LogFullError)
            raise HttpError(429 if full else 413 if error_code(exc) == 413 else 507,
                            "{}: routed but not stored".format(exc),
                            (("retry-after", "1"),) if full else ()) from None
        conn.in_msgs_py += n
        self._accepted(req, n)

    def _accepted(self, req, n):
        if n == 1 and req.keep_alive and "origin" not in req.headers:
            # the common answer, made once a second
            c = _accepted_cache
            now = int(time.time())
            if c[0] != now:
                c[1] = response_head(202, 0, None, (("ff-count", "1"),))
                c[0] = now
            self.write(c[1])
            self.requests += 1
        else:
            self.respond(req, 202, b"", None, (("ff-count", str(n)),))

    def _ws(self, req, principal):
        from fastflow.server.ws import upgrade
        upgrade(self, req, principal)

    def _streams(self, req, principal):
        from fastflow.server.sse import streams_request
        streams_request(self, req, principal)

    def _subscriptions(self, req, principal):
        from fastflow.server.subscriptions import subscriptions_request
        subscriptions_request(self, req, principal)

    def _openapi(self, req, principal):
        from fastflow.server.subscriptions import openapi_request
        openapi_request(self, req, principal)

    def _catalog(self, req, principal):
        from fastflow.server.catalog import catalog_request
        catalog_request(self, req, principal)

    def _admin(self, req, principal):
        from fastflow.server.admin import admin_request
        admin_request(self, req, principal)

    def _well_known(self, req, principal):
        from fastflow.server.catalog import well_known_request
        well_known_request(self, req, principal)


def _at(i, n):
    return " (batch index {})".format(i) if n > 1 else ""


def _routed_by_type(ev, i, n):
    """``ev`` with its ``type`` as its routing subject (``POST /events``)."""
    t = ev.type
    try:
        validate_subject(t)
    except SubjectError as exc:
        raise HttpError(400, "the event type {!r} cannot route it: {} (POST to "
                             "/events/<subject> to choose the subject){}".format(
                                 t[:200], exc, _at(i, n))) from None
    return type(ev).decode(t, ev.encode())


def _subject_of(path, prefix, pattern=False):
    """The subject (or pattern) of a path ``<prefix><subject>``, percent-
    decoded; None for the bare collection."""
    if len(path) <= len(prefix) - 1 or path == prefix[:-1] or path == prefix:
        return None
    raw = path[len(prefix):]
    try:
        s = unquote(raw, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise HttpError(400, "the subject in the path is not percent-encoded UTF-8") from None
    try:
        if pattern:
            validate_pattern(s)
        else:
            validate_subject(s)
    except SubjectError as exc:
        raise HttpError(400, "invalid {} {!r} in the path: {}".format(
            "subject pattern" if pattern else "subject", s[:200], exc)) from None
    return s


# first path segment -> method -> handler
HttpProtocol.routes = _ROUTES = {
    "": {"GET": HttpProtocol._root},
    "healthz": {"GET": HttpProtocol._health},
    "events": {"POST": HttpProtocol._events_post, "GET": HttpProtocol._events_get,
               "OPTIONS": HttpProtocol._options},
    "ws": {"GET": HttpProtocol._ws, "OPTIONS": HttpProtocol._options},
    "mqtt": {"GET": HttpProtocol._ws},          # (MQTT over WebSocket: docs/mqtt.md)
    "streams": {"GET": HttpProtocol._streams, "POST": HttpProtocol._streams,
                "DELETE": HttpProtocol._streams, "OPTIONS": HttpProtocol._options},
    "subscriptions": {m: HttpProtocol._subscriptions
                      for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS")},
    "openapi.json": {"GET": HttpProtocol._openapi},
    "registry": {m: HttpProtocol._catalog for m in ("GET", "PUT", "POST", "DELETE", "OPTIONS")},
    ".well-known": {"GET": HttpProtocol._well_known},
    "admin": {m: HttpProtocol._admin for m in ("GET", "PUT", "DELETE")},
}
