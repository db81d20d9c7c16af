"""Webhook delivery: CloudEvents to an HTTP sink, by the CloudEvents "HTTP
1.1 Web Hooks for Event Delivery" spec (docs/webhooks.md).

```python
from fastflow.subscriptions.webhook import WebhookSettings, WebhookSink

sink = WebhookSink("https://hooks.example.com/in", WebhookSettings(mode="binary"),
                   credential="s3cret", origin="events.example.org")
outcomes = await sink.deliver(events)   # "delivered", ("dead", why) or ("retired", why) each
sink.info()                             # counters, JSON-ready
await sink.close()
```

A ``WebhookSink`` is one sink URL: it validates the sink with the
``OPTIONS`` handshake (abuse protection, spec section 4) before its first
delivery, then POSTs the events, one per request (binary or structured
content mode) or as JSON batches, over at most ``max_in_flight``
keep-alive connections at once.  2xx is success; 429 and 503 wait for
``Retry-After`` and retry; 5xx, timeouts and lost connections retry with
exponential backoff and full jitter up to ``max_retries``; 410 retires
the sink; redirects are not followed; any other answer dead-letters.
``deliver`` never raises for what the sink does: every event gets an
outcome.

The HTTP client is this module's own: an ``asyncio.Protocol`` per
connection with llhttp (``httptools``) parsing the answers, requests
written as prepared bytes, no task per request.
"""

import asyncio
import collections
import math
import random
import re
import socket
import ssl as _ssl
import time
from urllib.parse import urlsplit

import httptools

from fastflow._impl import json_batch
from fastflow._settings import Settings
from fastflow._version import __version__
from fastflow.errors import ConnectionClosedError, EventError
from fastflow.event import BATCH_CONTENT_TYPE, to_http

__all__ = ("DELIVERED", "MODES", "WebhookSettings", "WebhookSink")

DELIVERED = "delivered"
MODES = ("binary", "structured", "batch")
USER_AGENT = "fastflow-webhook/" + __version__

_HEAD_LIMIT = 64 * 1024             # bytes: the longest answer head read
_BODY_KEEP = 4 * 1024               # bytes of an answer's body kept (for error messages)
_BODY_LIMIT = 1024 * 1024           # bytes: an answer body longer than this drops the connection
_REASON_BODY = 200                  # characters of an error answer's body in a reason
_RETRY_AFTER_MAX = 3600.0           # seconds: the default longest Retry-After honoured

# what a header line may not hold: CR, LF, NUL and the other controls but tab
_BAD_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# what a request target may not hold: controls, space, non-ASCII
_BAD_TARGET = re.compile(r"[^\x21-\x7e]")
_ANSWER_HEADERS = frozenset((b"retry-after", b"location", b"webhook-allowed-origin",
                             b"webhook-allowed-rate", b"content-type"))


def _number(name, v, low, *, none=False, integer=False, above=False):
    if v is None and none:
        return None
    if isinstance(v, bool) or not isinstance(v, int if integer else (int, float)) \
            or (not integer and not math.isfinite(v)) or v < low or (above and v == low):
        raise ValueError("{} must be {} {} {}{}, got {!r}".format(
            name, "an int" if integer else "a number", ">" if above else ">=", low,
            " or None" if none else "", v))
    return v if integer else float(v)


class WebhookSettings(Settings):
    """How a sink is delivered to.

    ``mode``: ``"binary"`` (an event per POST, attributes as ``ce-``
    headers), ``"structured"`` (an event per POST, the JSON event as the
    body) or ``"batch"`` (up to ``max_batch`` events per POST, a JSON
    array: ``application/cloudevents-batch+json``).  ``timeout``: seconds
    for connecting and for each answer.  ``max_in_flight``: POSTs (and
    connections) at once.  ``max_retries``: retries of a request after
    the first attempt; the wait before retry n is uniform in ``[0,
    min(backoff_max, backoff_initial * 2**(n-1))]`` (full jitter), or the
    ``Retry-After`` of a 429/503 (at most ``retry_after_max``).
    ``lineage``: send the engine's ``ffhops``/``fftrace``.  ``rate``:
    requests a minute asked for (``WebHook-Request-Rate``) and never
    exceeded, None: no limit of ours.  ``handshake``: validate the sink
    with ``OPTIONS`` first (spec section 4); ``callback_timeout``: seconds
    the callback variant waits for the sink's grant.  ``pipeline``:
    requests written ahead on a connection before the first answer
    (HTTP/1.1 pipelining; 1, the default, waits for each answer)."""

    __slots__ = ("mode", "max_batch", "timeout", "max_in_flight", "max_retries",
                 "backoff_initial", "backoff_max", "retry_after_max", "lineage", "rate",
                 "handshake", "callback_timeout", "pipeline")

    def __init__(self, mode="binary", max_batch=100, timeout=10.0, max_in_flight=8,
                 max_retries=5, backoff_initial=0.5, backoff_max=60.0,
                 retry_after_max=_RETRY_AFTER_MAX, lineage=True, rate=None, handshake=True,
                 callback_timeout=60.0, pipeline=1):
        if mode not in MODES:
            raise ValueError("mode must be one of {}, got {!r}".format(", ".join(MODES), mode))
        self.mode = mode
        self.max_batch = _number("max_batch", max_batch, 1, integer=True)
        self.timeout = _number("timeout", timeout, 0, above=True)
        self.max_in_flight = _number("max_in_flight", max_in_flight, 1, integer=True)
        self.max_retries = _number("max_retries", max_retries, 0, integer=True)
        self.backoff_initial = _number("backoff_initial", backoff_initial, 0)
        self.backoff_max = _number("backoff_max", backoff_max, 0)
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be >= backoff_initial ({:g}), got {!r}".format(
                self.backoff_initial, backoff_max))
        self.retry_after_max = _number("retry_after_max", retry_after_max, 0)
        if type(lineage) is not bool:
            raise ValueError("lineage must be True or False, got {!r}".format(lineage))
        self.lineage = lineage
        self.rate = _number("rate", rate, 1, none=True, integer=True)
        if type(handshake) is not bool:
            raise ValueError("handshake must be True or False, got {!r}".format(handshake))
        self.handshake = handshake
        self.callback_timeout = _number("callback_timeout", callback_timeout, 0, above=True)
        self.pipeline = _number("pipeline", pipeline, 1, integer=True)


# -- one connection ------------------------------------------------------------------------


class _Answer:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # the few headers delivery reads, lower-case str names
        self.body = body                # the first _BODY_KEEP bytes


class _Link(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the sink: ``send(data)``
    writes a request (prepared bytes) and returns the future of its
    ``_Answer``; answers resolve the futures in order (so requests may
    be pipelined).  Any failure closes the connection and fails every
    request on it."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.waiters = collections.deque()
        self.closed = False
        self.error = None               # why it was closed on our side
        self.answered = 0               # answers read on this connection
        self.received = 0               # bytes read on this connection
        self.parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self):
        self._status = 0
        self._headers = {}
        self._body = []
        self._kept = 0
        self._body_bytes = 0
        self._head_bytes = 0

    # asyncio
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self.fail(ConnectionClosedError(str(exc.__context__ or exc)))
        except httptools.HttpParserUpgrade:
            self.fail(ConnectionClosedError("the sink switched protocols"))
        except httptools.HttpParserError as exc:
            self.fail(ConnectionClosedError("malformed HTTP answer: {}".format(exc)))

    def connection_lost(self, exc):
        self.closed = True
        err = ConnectionClosedError("the sink closed the connection{}".format(
            ": {}".format(exc) if exc else " before answering"))
        self._fail_waiters(err)

    # llhttp
    def on_message_begin(self):
        self._reset()

    def on_header(self, name, value):
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > _HEAD_LIMIT:
            raise ConnectionClosedError("answer head over {} bytes".format(_HEAD_LIMIT))
        name = name.lower()
        if name in _ANSWER_HEADERS:
            self._headers[name.decode("latin-1")] = value.decode("latin-1").strip()

    def on_headers_complete(self):
        self._status = self.parser.get_status_code()

    def on_body(self, body):
        self._body_bytes += len(body)
        if self._body_bytes > _BODY_LIMIT:
            raise ConnectionClosedError("answer body over {} bytes".format(_BODY_LIMIT))
        if self._kept < _BODY_KEEP:
            body = body[:_BODY_KEEP - self._kept]
            self._body.append(body)
            self._kept += len(body)

    def on_message_complete(self):
        status = self._status
        if 100 <= status < 200:
            return                      # an interim answer (103 Early Hints, ...)
        answer = _Answer(status, self._headers, b"".join(self._body))
        self.answered += 1
        if self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(answer)
        else:
            raise ConnectionClosedError("an answer ({}) to no request".format(status))
        if not self.parser.should_keep_alive():
            self.closed = True
            self.transport.close()
            self._fail_waiters(ConnectionClosedError("the sink closed the connection after "
                                                     "an answer (no keep-alive)"))

    # ours
    def send(self, data):
        fut = self.loop.create_future()
        self.waiters.append(fut)
        self.transport.write(data)
        return fut

    def fail(self, exc):
        """Close the connection and fail the requests waiting on it."""
        self.closed = True
        if self.error is None:
            self.error = exc
        if self.transport is not None:
            self.transport.abort()
        self._fail_waiters(exc)

    def _fail_waiters(self, exc):
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)


# -- the sink ------------------------------------------------------------------------------


class _Retry(Exception):
    """A failed attempt that may be retried: ``reason``, ``wait`` (the
    sink's Retry-After, or None for the backoff)."""

    def __init__(self, reason, wait=None):
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


class _Final(Exception):
    """A failed attempt that ends the request: ``outcome``."""

    def __init__(self, outcome):
        super().__init__(outcome[1])
        self.outcome = outcome


def _retry_after(value, now=None):
    """Seconds of a Retry-After value (delay-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _header_safe(name, value):
    if not isinstance(value, str):
        raise ValueError("{} must be a str, got {}".format(name, type(value).__name__))
    if _BAD_HEADER.search(value) or not value.isascii():
        raise ValueError("{} {!r} cannot go in an HTTP header: control characters (CR, LF, "
                         "NUL, ...) or non-ASCII".format(name, value))
    return value


def _excerpt(body):
    text = body[:_REASON_BODY].decode("utf-8", "replace").strip()
    return ": " + " ".join(text.split()) if text else ""


class WebhookSink:
    """Delivers events to the webhook at ``url`` (``http://`` or
    ``https://``, any path and query; no user info: the credential is
    ``credential``, sent as ``Authorization: Bearer``).  ``origin``: this
    sender's ``WebHook-Request-Origin``, a host name (default: this
    machine's, ``socket.gethostname()``).  ``callback_url``:
    sent as ``WebHook-Request-Callback`` in the handshake; the sink may
    then grant later, by calling it (the server's route calls
    ``granted``).  ``advise(kind, info)``: called when the sink is
    retired (``"retired"``) and when the handshake is refused
    (``"refused"``), with ``info()``.  ``tls``: an ``ssl.SSLContext``
    for https (default: the system's).  Values that would put CR, LF or
    another control character on a header line raise ``ValueError``
    here."""

    def __init__(self, url, settings=None, *, credential=None, origin=None,
                 callback_url=None, advise=None, tls=None, headers=(), method="POST"):
        self.settings = settings = settings if settings is not None else WebhookSettings()
        if not isinstance(settings, WebhookSettings):
            raise ValueError("settings must be a WebhookSettings, got {!r}".format(settings))
        if not isinstance(url, str) or _BAD_TARGET.search(url):
            raise ValueError("webhook URL must be a str of printable ASCII without spaces "
                             "(percent-encode the rest), got {!r}".format(url))
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError("webhook URL {!r}: expected http:// or https://".format(url))
        if u.username is not None or u.password is not None:
            raise ValueError("webhook URL {!r}: no user info in the URL, give the "
                             "credential instead".format(url))
        try:
            port = u.port
        except ValueError:
            raise ValueError("webhook URL {!r}: the port must be a number from 1 to "
                             "65535".format(url)) from None
        if not u.hostname:
            raise ValueError("webhook URL {!r}: no host".format(url))
        self.url = url
        self.host = u.hostname
        self.port = port or (443 if scheme == "https" else 80)
        self.tls = (tls if isinstance(tls, _ssl.SSLContext)
                    else _ssl.create_default_context()) if scheme == "https" else None
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        host_header = host if port is None else "{}:{}".format(host, port)
        self.target = (u.path or "/") + ("?" + u.query if u.query else "")
        if credential is not None:
            _header_safe("credential", credential)
            if not credential or credential != credential.strip():
                raise ValueError("credential must be a non-empty token without surrounding "
                                 "spaces, got {!r}".format(credential))
        if origin is None:
            origin = socket.gethostname() or "localhost"
        self.origin = _header_safe("origin", origin)
        if not origin or " " in origin or "\t" in origin:
            raise ValueError("origin must be a host name (no spaces), got {!r}".format(origin))
        if callback_url is not None:
            if not isinstance(callback_url, str) or _BAD_TARGET.search(callback_url) \
                    or urlsplit(callback_url).scheme.lower() not in ("http", "https"):
                raise ValueError("callback_url must be an http(s) URL of printable ASCII "
                                 "without spaces, got {!r}".format(callback_url))
        self.callback_url = callback_url
        self.advise = advise
        # the lines every request carries
        common = "host: {}\r\nuser-agent: {}\r\n".format(host_header, USER_AGENT)
        if credential is not None:
            common += "authorization: Bearer {}\r\n".format(credential)
        self._common = common
        if method not in ("POST", "PUT"):
            raise ValueError("method must be POST or PUT, got {!r}".format(method))
        self.method = method
        extra = []
        for name, value in headers:
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ValueError("header name {!r} is not an HTTP token".format(name))
            extra.append("{}: {}\r\n".format(name, _header_safe("header " + name, value)))
        self._extra = "".join(extra)    # the subscription's own headers, on deliveries
        self._post_head = "{} {} HTTP/1.1\r\n{}{}".format(method, self.target, common,
                                                        self._extra)
        if settings.mode == "batch":
            self._post_head += "content-type: {}\r\n".format(BATCH_CONTENT_TYPE)
        # counters
        self.delivered = 0              # events the sink took (2xx)
        self.failed = 0                 # requests that failed (any answer but 2xx, no answer)
        self.retried = 0                # requests sent again
        self.dead = 0                   # events dead-lettered
        self.requests = 0               # requests answered (any status)
        self.in_flight = 0              # requests on the wire now
        self.pending = 0                # events given to deliver() and not done yet
        self.connections = 0            # connections opened
        self.last_error = None
        self.last_status = None
        self.retired = False
        self.retired_reason = None
        self.handshake = "none" if not settings.handshake else "pending"
        self.allowed_rate = None        # WebHook-Allowed-Rate: requests a minute, None: any
        self._rate_interval = 60.0 / settings.rate if settings.rate else 0.0
        self._next_slot = 0.0           # when the next request may go (the rate)
        self._pause_until = 0.0         # a Retry-After holds every request until then
        self._idle = []                 # open connections not in use
        self._links = set()             # every open connection
        self._slots = None              # asyncio.Semaphore(max_in_flight), made in the loop
        self._handshake_lock = None
        self._grant = None              # the callback variant's event
        self._handshakes = 0            # handshakes finished
        self._refusal = None            # the outcome of the last refusal
        if not settings.handshake:
            self._grant_deliveries()

    # -- introspection ----------------------------------------------------------------------

    def info(self):
        """The counters and state, JSON-ready."""
        return {"url": self.url, "mode": self.settings.mode, "delivered": self.delivered,
                "failed": self.failed, "retried": self.retried, "dead": self.dead,
                "requests": self.requests, "in_flight": self.in_flight,
                "pending": self.pending, "connections": self.connections,
                "retired": self.retired, "retired_reason": self.retired_reason,
                "last_error": self.last_error, "last_status": self.last_status,
                "handshake": self.handshake,
                "allowed_rate": "*" if self.allowed_rate is None else self.allowed_rate}

    def __repr__(self):
        return "WebhookSink({!r}, mode={!r}, handshake={!r})".format(
            self.url, self.settings.mode, self.handshake)

    # -- the handshake ----------------------------------------------------------------------

    def granted(self, rate=None):
        """The sink granted delivery (the callback variant: its request to
        ``callback_url`` arrived); ``rate``: its ``WebHook-Allowed-Rate``
        (``"*"``, requests a minute, or None for no limit)."""
        self._set_rate(rate)
        self.handshake = "granted"
        self._grant_deliveries()
        if self._grant is not None:
            self._grant.set()

    def _grant_deliveries(self):
        head = "{} {} HTTP/1.1\r\n{}{}".format(self.method, self.target, self._common,
                                               self._extra)
        if self.handshake == "granted":
            head += "webhook-request-origin: {}\r\n".format(self.origin)
        if self.settings.mode == "batch":
            head += "content-type: {}\r\n".format(BATCH_CONTENT_TYPE)
        self._post_head = head

    def _set_rate(self, rate):
        if isinstance(rate, str):
            rate = rate.strip()
            rate = None if rate == "*" else int(rate) if rate.isdigit() else -1
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)
                                 or rate < 1):
            # an allowed rate we cannot read: keep to the one asked for, if any
            rate = self.settings.rate
        self.allowed_rate = rate
        mine = self.settings.rate
        limit = rate if mine is None else mine if rate is None else min(rate, mine)
        self._rate_interval = 60.0 / limit if limit else 0.0

    async def _ensure_handshake(self):
        """None once the sink granted delivery, else the outcome of every event."""
        if self.handshake in ("granted", "none"):
            return None
        if self._handshake_lock is None:
            self._handshake_lock = asyncio.Lock()
        seen = self._handshakes
        async with self._handshake_lock:
            if self.handshake == "granted":
                return None
            if self.retired:
                return ("retired", self.retired_reason)
            if self._handshakes != seen and self._refusal is not None:
                return self._refusal    # refused while this call waited: the same answer
            outcome = await self._handshake()
            self._handshakes += 1
            if outcome is None:
                return None
            if outcome[0] == "dead":
                self.handshake = "refused"
                self.last_error = outcome[1]
                self._refusal = outcome
                self._advise("refused")
            return outcome

    async def _handshake(self):
        s = self.settings
        lines = ["OPTIONS {} HTTP/1.1\r\n".format(self.target), self._common,
                 "webhook-request-origin: {}\r\n".format(self.origin)]
        if s.rate:
            lines.append("webhook-request-rate: {}\r\n".format(s.rate))
        if self.callback_url:
            lines.append("webhook-request-callback: {}\r\n".format(self.callback_url))
        lines.append("\r\n")
        data = "".join(lines).encode("ascii")
        self.handshake = "validating"
        if self.callback_url:
            self._grant = asyncio.Event()
        try:
            answer = await self._attempts(data, 0, self._check_grant)
        except _Final as exc:
            kind, reason = exc.outcome
            if kind == "dead" and not reason.startswith("webhook handshake"):
                reason = "webhook handshake refused: " + reason
            return (kind, reason)
        if answer == "callback":
            self.handshake = "awaiting callback"
            try:
                await asyncio.wait_for(self._grant.wait(), s.callback_timeout)
            except asyncio.TimeoutError:
                return ("dead", "webhook handshake refused: no grant on the callback "
                        "within {:g} s".format(s.callback_timeout))
        return None

    def _check_grant(self, answer):
        """A 2xx answer to the validation request: grant, wait for the
        callback, or refuse."""
        allowed = answer.headers.get("webhook-allowed-origin")
        if allowed is None:
            if self.callback_url:
                return "callback"
            raise _Final(("dead", "webhook handshake refused: the sink answered {} without "
                          "WebHook-Allowed-Origin".format(answer.status)))
        if allowed != "*" and allowed.lower() != self.origin.lower():   # host names
            raise _Final(("dead", "webhook handshake refused: WebHook-Allowed-Origin {!r} is "
                          "not this sender's origin {!r}".format(allowed[:200], self.origin)))
        self.granted(answer.headers.get("webhook-allowed-rate"))
        return "granted"

    # -- delivering -------------------------------------------------------------------------

    async def deliver(self, events):
        """Deliver ``events`` (a list of Events, in order) and return their
        outcomes in the same order: ``"delivered"``, ``("dead",
        reason)`` or ``("retired", reason)``."""
        events = list(events)
        n = len(events)
        if not n:
            return []
        if self.retired:
            return [("retired", self.retired_reason)] * n
        self.pending += n
        outcomes = [None] * n
        try:
            refused = await self._ensure_handshake()
            if refused is not None:
                outcomes = [refused] * n
            else:
                await self._run(events, outcomes)
        finally:
            self.pending -= n
        # counted once the outcomes are handed back: a cancelled call counts no dead
        self.dead += sum(1 for o in outcomes if o is not DELIVERED and o[0] == "dead")
        return outcomes

    def _units(self, events, outcomes):
        """The requests of ``events``, written as the workers ask for them
        (so at most ``max_in_flight`` requests' bytes exist at once):
        ``(first, count, bytes)``; events that cannot be written get their
        dead outcome here."""
        s = self.settings
        head = self._post_head
        if s.mode == "batch":
            step = s.max_batch
            for i in range(0, len(events), step):
                chunk = events[i:i + step]
                try:
                    body = json_batch(chunk, s.lineage)
                except (EventError, ValueError, TypeError):
                    yield from self._units_one_by_one(chunk, i, outcomes)
                    continue
                yield (i, len(chunk), b"".join((
                    "{}content-length: {}\r\n\r\n".format(head, len(body)).encode("ascii"),
                    body)))
            return
        mode = s.mode
        lineage = s.lineage
        for i, ev in enumerate(events):
            try:
                headers, body = to_http(ev, mode, lineage)
                extra = "".join(["{}: {}\r\n".format(k, v) for k, v in headers.items()])
                if extra.count("\n") != len(headers) or extra.count("\r") != len(headers) \
                        or "\0" in extra:
                    raise EventError("an attribute would put a control character in a "
                                     "header line")
                data = "{}content-length: {}\r\n{}\r\n".format(
                    head, len(body), extra).encode("latin-1") + body
            except (EventError, ValueError, TypeError, UnicodeEncodeError) as exc:
                outcomes[i] = ("dead", "event cannot be sent: {}".format(exc))
                continue
            yield (i, 1, data)

    def _units_one_by_one(self, chunk, first, outcomes):
        """A batch with an event that cannot be written: that event dead,
        the others in batches of the rest."""
        good = []
        for j, ev in enumerate(chunk):
            try:
                json_batch([ev], self.settings.lineage)
            except (EventError, ValueError, TypeError) as exc:
                outcomes[first + j] = ("dead", "event cannot be sent: {}".format(exc))
                continue
            good.append(first + j)
        units = []
        # runs of consecutive good events, each a batch
        run = []
        for idx in good:
            if run and idx != run[-1] + 1:
                units.append(run)
                run = []
            run.append(idx)
        if run:
            units.append(run)
        out = []
        for run in units:
            body = json_batch([chunk[i - first] for i in run], self.settings.lineage)
            out.append((run[0], len(run), b"".join((
                "{}content-length: {}\r\n\r\n".format(self._post_head, len(body)).encode(
                    "ascii"), body))))
        return out

    async def _run(self, events, outcomes):
        s = self.settings
        if self._slots is None:
            self._slots = asyncio.Semaphore(s.max_in_flight)
        units = self._units(events, outcomes)
        requests = len(events) if s.mode != "batch" else -(-len(events) // s.max_batch)
        workers = min(s.max_in_flight, -(-requests // s.pipeline))
        if workers == 1:
            await self._worker(units, outcomes)
        else:
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(self._worker(units, outcomes)) for _ in range(workers)]
            try:
                await asyncio.gather(*tasks)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.wait(tasks)
        if self.retired:                # the events not sent when a 410 came
            gone = ("retired", self.retired_reason)
            for i, o in enumerate(outcomes):
                if o is None:
                    outcomes[i] = gone

    async def _worker(self, units, outcomes):
        """Sends the next requests of ``units`` (an iterator shared by the
        workers) one after the other (``pipeline`` > 1: that many written
        at once) while holding one in-flight slot."""
        async with self._slots:
            depth = self.settings.pipeline
            while True:
                if self.retired:
                    return              # _run marks what is left
                if depth > 1:
                    group = [u for _, u in zip(range(depth), units)]
                    if len(group) > 1:
                        await self._pipelined(group, outcomes)
                        continue
                    unit = group[0] if group else None
                else:
                    unit = next(units, None)
                if unit is None:
                    return
                first, count, data = unit
                outcome = await self._request(data, count)
                outcomes[first:first + count] = [outcome] * count

    async def _pipelined(self, group, outcomes):
        """Writes the requests of ``group`` on one connection before
        reading the answers; those that fail go through ``_attempts``
        (retries, one at a time)."""
        await self._pace(len(group))
        link = await self._link()
        futs = [link.send(data) for _, _, data in group]
        self.in_flight += len(group)
        redo = []
        handle = self.loop.call_later(self.settings.timeout, self._expire, link)
        try:
            for (first, count, data), fut in zip(group, futs):
                try:
                    answer = await fut
                except (ConnectionClosedError, OSError, asyncio.TimeoutError) as exc:
                    self._failed(str(exc))
                    redo.append((first, count, data, None))
                    continue
                self.requests += 1
                try:
                    self._judge(answer, count)
                    outcomes[first:first + count] = [DELIVERED] * count
                except _Retry as exc:
                    redo.append((first, count, data, exc.wait))
                except _Final as exc:
                    outcomes[first:first + count] = [exc.outcome] * count
        except BaseException:
            link.fail(ConnectionClosedError("delivery cancelled"))
            raise
        finally:
            handle.cancel()
            self.in_flight -= len(group)
        self._release(link)
        for first, count, data, wait in redo:
            if self.retired:
                outcomes[first:first + count] = [("retired", self.retired_reason)] * count
                continue
            if self.settings.max_retries < 1:
                outcomes[first:first + count] = [("dead", "gave up after 1 attempt: {}".format(
                    self.last_error))] * count
                continue
            self.retried += 1
            if wait is None:
                await asyncio.sleep(random.uniform(0, self.settings.backoff_initial))
            outcomes[first:first + count] = [await self._request(data, count, attempt=1)] \
                * count

    async def _request(self, data, count, attempt=0):
        """Send one request until it is answered for good: its outcome."""
        try:
            await self._attempts(data, attempt, None, count)
        except _Final as exc:
            return exc.outcome
        return DELIVERED

    async def _attempts(self, data, attempt, on_success, count=0):
        """Send ``data`` until a 2xx (returns ``on_success(answer)`` or
        None), retrying as the spec says; raises ``_Final`` with the
        outcome otherwise."""
        s = self.settings
        while True:
            if self.retired:
                raise _Final(("retired", self.retired_reason))
            await self._pace(1)
            try:
                answer = await self._exchange(data)
                if on_success is not None:
                    if not 200 <= answer.status < 300:
                        self._judge(answer, 0)
                    return on_success(answer)
                self._judge(answer, count)
                return None
            except _Retry as exc:
                reason, wait = exc.reason, exc.wait
            except asyncio.TimeoutError as exc:
                reason, wait = str(exc), None
                self._failed(reason)
            except (ConnectionClosedError, OSError) as exc:
                reason, wait = "no answer: {}".format(exc), None
                self._failed(reason)
            if attempt >= s.max_retries:
                what = "webhook handshake failed" if on_success is not None else "gave up"
                raise _Final(("dead", "{} after {} attempt{}: {}".format(
                    what, attempt + 1, "s" if attempt else "", reason)))
            attempt += 1
            self.retried += 1
            if wait is None:
                wait = random.uniform(0, min(s.backoff_max,
                                             s.backoff_initial * 2 ** (attempt - 1)))
            await asyncio.sleep(wait)

    def _failed(self, reason):
        self.failed += 1
        self.last_error = reason

    def _judge(self, answer, count):
        """Count an answer; raise ``_Retry`` or ``_Final`` unless it is 2xx."""
        st = answer.status
        self.last_status = st
        if 200 <= st < 300:
            self.delivered += count
            return
        self.failed += 1
        reason = "the sink answered {}{}".format(st, _excerpt(answer.body))
        if 300 <= st < 400:
            reason = "the sink answered {} (redirect to {!r}, not followed)".format(
                st, answer.headers.get("location", "")[:300])
        self.last_error = reason
        if st == 410:
            self._retire(reason)
            raise _Final(("retired", self.retired_reason))
        if st in (429, 503):
            wait = _retry_after(answer.headers.get("retry-after"))
            if wait is not None:
                wait = min(wait, self.settings.retry_after_max)
                self._pause_until = max(self._pause_until, self.loop.time() + wait)
            raise _Retry(reason, wait)
        if st >= 500 or st == 408:
            raise _Retry(reason)
        raise _Final(("dead", reason))

    def _retire(self, reason):
        if self.retired:
            return
        self.retired = True
        self.retired_reason = "the sink is gone (410): {}".format(reason)
        self._advise("retired")

    def _advise(self, kind):
        if self.advise is not None:
            try:
                self.advise(kind, self.info())
            except Exception as exc:            # an advisory must not stop delivery
                self.last_error = "advise({!r}) raised {!r}".format(kind, exc)

    # -- pacing and connections ----------------------------------------------------------------

    @property
    def loop(self):
        return asyncio.get_running_loop()

    async def _pace(self, n):
        """Wait for a Retry-After pause to end and for ``n`` requests' room
        in the allowed rate (requests spaced 60/rate s apart)."""
        loop = self.loop
        now = loop.time()
        if self._pause_until > now:
            await asyncio.sleep(self._pause_until - now)
            now = loop.time()
        step = self._rate_interval
        if step:
            at = max(now, self._next_slot)
            self._next_slot = at + step * n
            if at > now:
                await asyncio.sleep(at - now)

    async def _link(self):
        while self._idle:
            link = self._idle.pop()
            if not link.closed:
                return link
            self._links.discard(link)
        loop = self.loop
        try:
            _, link = await asyncio.wait_for(loop.create_connection(
                lambda: _Link(loop), self.host, self.port, ssl=self.tls,
                server_hostname=self.host if self.tls else None), self.settings.timeout)
        except asyncio.TimeoutError:
            raise ConnectionClosedError("could not connect within {:g} s".format(
                self.settings.timeout)) from None
        except (OSError, _ssl.SSLError) as exc:
            raise ConnectionClosedError("could not connect: {}".format(
                exc.strerror or exc if isinstance(exc, OSError) else exc)) from None
        self.connections += 1
        self._links.add(link)
        return link

    def _release(self, link):
        if link.closed or link not in self._links:
            self._links.discard(link)
            if not link.closed:
                link.fail(ConnectionClosedError("the sink is closed"))
        else:
            self._idle.append(link)

    def _expire(self, link):
        link.fail(asyncio.TimeoutError("no answer within {:g} s".format(
            self.settings.timeout)))

    async def _exchange(self, data):
        """One request on a kept-alive connection: its ``_Answer``.  A
        connection kept alive that the sink had closed meanwhile (closed
        before any byte of the answer) is replaced and the request sent
        once more."""
        while True:
            link = await self._link()
            reused = link.answered > 0
            received = link.received
            fut = link.send(data)
            self.in_flight += 1
            handle = self.loop.call_later(self.settings.timeout, self._expire, link)
            try:
                answer = await fut
            except ConnectionClosedError:
                self._links.discard(link)
                if reused and link.received == received and not isinstance(
                        link.error, asyncio.TimeoutError):
                    continue
                raise
            except BaseException:
                link.fail(ConnectionClosedError("request abandoned"))
                self._links.discard(link)
                raise
            finally:
                handle.cancel()
                self.in_flight -= 1
            self.requests += 1
            self._release(link)
            return answer

    async def close(self):
        """Close every connection (requests on them fail: cancel the
        ``deliver`` calls first).  A later ``deliver`` opens new ones."""
        links = list(self._links)
        self._links.clear()
        self._idle.clear()
        for link in links:
            link.fail(ConnectionClosedError("the sink is closed"))
        await asyncio.sleep(0)
