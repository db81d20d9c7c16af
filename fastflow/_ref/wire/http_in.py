"""The HTTP door's input side (docs/http.md), pure-Python twin of
src_ext/wire/http_in.pyx: ``HttpParser`` drives llhttp (Node.js's HTTP/1.1
parser, in C, through ``httptools``) with Python callbacks and holds the
door's limits and rules on top of it; ``Request`` is one request as it cut
it.

llhttp does the lexing and most of the framing checks; the callbacks add
what the door decides: the limits, the request target's forms, the version
(505), transfer codings other than chunked (501), keep-alive from the
Connection options, trailer fields checked and dropped.  Where llhttp and
the native parser still differ (a run of spaces in the request line, a
repeated equal Content-Length, an upgrade request with a body, ...),
tests/test_http_parser.py lists the cases and RFC 9112's word on each.  The
head limit counts differently here: the target and each field's name and
value plus 4 bytes (llhttp hands over no raw head), where the native parser
counts the head's bytes as received.
"""

import re
import time
from urllib.parse import parse_qsl

import httptools

from fastflow._ref.event import _record_bytes
from fastflow._ref.wire.door import DoorParser
from fastflow.errors import HttpError

__all__ = ("HttpParser", "Request")

_METHOD_MAX = 24                # bytes of a method token ("not HTTP" past it)
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]*")
_ABSOLUTE = re.compile(r"(?i:https?)://([^/?]*)(.*)\Z", re.S)
_HOST = re.compile(r"[-A-Za-z0-9._~!$&'()*+,;=%:\[\]]*\Z")     # RFC 3986 3.2, no userinfo
_RAW_MAX = 65536                # bytes kept to find where a request with a bad method began


class Request:
    """One HTTP request as the parser cut it: ``method``, ``target`` (bytes
    as received), ``path`` and ``query`` (str; from an absolute-form target
    its path and query), ``version`` ("1.1" or "1.0"), ``headers``
    (lower-cased name -> value, repeats joined with ", "), ``pairs`` (the
    (lower-cased name, value) fields as they came), ``body`` (bytes,
    de-chunked), ``keep_alive``, ``upgrade`` (with ``rest``, the bytes that
    followed it) and ``t0`` (``time.monotonic()`` when its first byte came).
    Field values are str of their bytes (Latin-1), without the whitespace
    around them; trailer fields are not kept (RFC 9110 6.5.2)."""

    __slots__ = ("method", "target", "path", "query", "headers", "pairs", "body", "keep_alive",
                 "version", "upgrade", "rest", "_chunks", "_size", "t0")

    def __init__(self):
        self.method = ""
        self.target = b""
        self.path = ""
        self.query = ""
        self.headers = {}
        self.pairs = []
        self.body = b""
        self.keep_alive = True
        self.version = "1.1"
        self.upgrade = False
        self.rest = b""
        self._chunks = []
        self._size = 0
        self.t0 = 0.0

    def __repr__(self):
        return "<Request {} {!r} HTTP/{}>".format(self.method, self.target, self.version)

    def header(self, name, default=None):
        """The value of the (lower-case) field ``name``, ``default`` without one."""
        return self.headers.get(name, default)

    def params(self):
        """The query parameters (a dict; a repeated one keeps the last)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def param_list(self, name):
        """Every value of the query parameter ``name``, in order."""
        return [v for k, v in parse_qsl(self.query, keep_blank_values=True) if k == name]


class _Count:
    """httptools callbacks that only count complete requests."""

    def __init__(self):
        self.n = 0

    def on_message_complete(self):
        self.n += 1


class HttpParser(DoorParser):
    """The HTTP door's parser, pure-Python twin of src_ext/wire/http_in.pyx:
    llhttp cuts the requests; this holds the door's limits (head size,
    header count, body size, checked before a body is read), its rules
    and counts like ``DoorParser``.  ``feed`` returns the requests completed
    by ``data``; a request that breaks HTTP or a limit raises ``HttpError``
    (its ``frames``: the requests complete before it) and the parser takes
    no more input (``dead``); so does an upgrade request (its ``rest``: the
    bytes after it)."""

    __slots__ = ("max_header", "max_headers", "max_body", "_p", "_done", "_req", "_head",
                 "_head_fed", "_trailer", "_upgraded", "_closed", "_raw", "_raw_done", "_bad",
                 "_bad_t0", "head_check")

    def __init__(self, max_header=16384, max_headers=100, max_body=16 << 20):
        self.max_header = max_header
        self.max_headers = max_headers
        self.max_body = max_body
        self._p = httptools.HttpRequestParser(self)
        # (data after a request that closes the connection: refused here, by the
        # door's keep-alive rule, not by llhttp's)
        self._p.set_dangerous_leniencies(lenient_keep_alive=True)
        self._done = []
        self._req = None
        self._head = 0
        self._head_fed = 0              # bytes of an incomplete head fed after the feed it began in
        self._trailer = None            # after the head: [fields, bytes] of the trailer section
        self._upgraded = False
        self._closed = False            # the last request did not keep the connection
        # where a request llhttp refused for its method began: the stream since
        # the last point between requests (None: over _RAW_MAX bytes) and the
        # requests completed since
        self._raw = b""
        self._raw_done = 0
        self._bad = None                # a refused method token not ended yet (bytes)
        self._bad_t0 = 0.0
        # called with each request once its head is read (before its body)
        self.head_check = None

    @property
    def in_request(self):
        """A request has begun and is not complete: when its first byte
        came (``time.monotonic()``), else 0.0."""
        if self._bad is not None:
            return self._bad_t0
        return self._req.t0 if self._req is not None else 0.0

    @property
    def dead(self):
        """The parser takes no more input: it refused a request, or an
        upgrade request ended HTTP on the connection."""
        return self._upgraded or self._failed is not None

    @property
    def ready(self):
        """Requests the feed under way has completed and not returned yet."""
        return len(self._done)

    @property
    def buffered(self):
        """Bytes of the request in progress held (its body so far)."""
        return self._req._size if self._req is not None else 0

    def feed(self, data):
        if self.dead:
            return []
        data = _record_bytes(data)
        self._bytes_in += len(data)
        if self._bad is not None:
            return self._bad_method(self._bad + data)
        if self._req is None:           # between requests: a new start
            self._raw = data if len(data) <= _RAW_MAX else None
            self._raw_done = 0
        elif self._raw is not None:
            self._raw = self._raw + data if len(self._raw) + len(data) <= _RAW_MAX else None
        in_head = self._req if self._trailer is None else None
        try:
            self._p.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            req = self._done[-1] if self._done else None
            if req is None or not req.upgrade:
                raise self._fail(HttpError(400, "malformed upgrade request")) from None
            req.rest = data[exc.args[0]:]
            self._upgraded = True       # the connection speaks something else from here
        except httptools.HttpParserCallbackError as exc:
            err = exc.__context__ if isinstance(exc.__context__, HttpError) else HttpError(
                400, "malformed request: {}".format(exc.__context__ or exc))
            raise self._fail(err) from None
        except httptools.HttpParserInvalidMethodError:
            # a token is a method this door does not know (501); anything else is
            # not HTTP: llhttp does not say where the request began, so find it
            if self._raw is None:
                tail = data
            else:
                tail = self._raw[self._request_start(self._raw, self._raw_done):]
            return self._bad_method(tail.lstrip(b"\r\n"))
        except httptools.HttpParserError as exc:
            msg = str(exc) or type(exc).__name__
            if msg == "Invalid HTTP version":
                raise self._fail(HttpError(505, "the HTTP version is not supported (HTTP/1.1 "
                                                "is)")) from None
            if msg.startswith("Invalid method for"):
                raise self._fail(HttpError(501, "unknown request method")) from None
            raise self._fail(HttpError(400, "malformed request: {}".format(msg))) from None
        if in_head is not None and self._req is in_head and self._trailer is None:
            # all of data went to a head begun before: llhttp hands over no part of a
            # field, so bound a head arriving slowly here
            self._head_fed += len(data)
            if self._head_fed > self.max_header:
                raise self._fail(HttpError(431, "request head over {} bytes".format(
                    self.max_header)))
        out, self._done = self._done, []
        return out

    @staticmethod
    def _request_start(raw, done):
        """Where in ``raw`` (bytes from a point between requests) the
        request after the first ``done`` complete ones begins."""
        if done == 0:
            return 0
        count = _Count()
        p = httptools.HttpRequestParser(count)
        for i in range(len(raw)):
            p.feed_data(raw[i:i + 1])
            if count.n == done:
                return i + 1
        return 0                        # (not reached: they were complete)

    def _bad_method(self, start):
        """A request llhttp refused at its method, from its first byte
        (``start``): 501 for a token followed by a space, 400 for what is
        not; a token that has not ended waits for more input."""
        if self._closed:
            raise self._fail(HttpError(400, "malformed request: data after the last request "
                                            "(Connection: close)"))
        n = _TOKEN.match(start).end()
        if n > _METHOD_MAX:
            raise self._fail(HttpError(400, "malformed request: not HTTP/1.1"))
        if n == len(start):
            if self._bad is None:
                self._bad_t0 = self._req.t0 if self._req is not None else time.monotonic()
            self._bad = start
            out, self._done = self._done, []
            return out
        if n and start[n] == 0x20:
            raise self._fail(HttpError(501, "unknown request method"))
        raise self._fail(HttpError(400, "malformed request: not HTTP/1.1"))

    def _fail(self, err):
        self._failed = err
        self._bad = None
        err.frames, self._done = self._done, []
        err.close = True
        return err

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self):
        if self._closed:
            # RFC 9112 9.6: no request is processed after one with "close"
            raise HttpError(400, "malformed request: data after the last request "
                                 "(Connection: close)")
        r = self._req = Request()
        r.t0 = time.monotonic()
        self._head = 0
        self._head_fed = 0
        self._trailer = None

    def on_url(self, url):
        self._head += len(url)
        if self._head > self.max_header:
            raise HttpError(414, "request target longer than {} bytes".format(self.max_header))
        self._req.target += url

    def on_header(self, name, value):
        self._head += len(name) + len(value) + 4
        t = self._trailer
        if t is not None:               # a trailer field: checked (by llhttp), counted, dropped
            t[0] += 1
            t[1] += len(name) + len(value) + 4
            if t[1] > self.max_header:
                raise HttpError(431, "trailer section over {} bytes".format(self.max_header))
            if t[0] > self.max_headers:
                raise HttpError(431, "more than {} trailer fields".format(self.max_headers))
            return
        r = self._req
        if self._head > self.max_header:
            raise HttpError(431, "request head over {} bytes".format(self.max_header))
        if len(r.pairs) >= self.max_headers:
            raise HttpError(431, "more than {} header fields".format(self.max_headers))
        n = name.decode("latin-1").lower()
        v = value.decode("latin-1").rstrip(" \t")     # (llhttp keeps the trailing whitespace)
        r.pairs.append((n, v))
        h = r.headers
        if n in h:
            h[n] = h[n] + ", " + v
        else:
            h[n] = v

    def on_headers_complete(self):
        r = self._req
        p = self._p
        r.method = p.get_method().decode("ascii", "replace")
        r.version = p.get_http_version()
        if r.version not in ("1.1", "1.0"):
            raise HttpError(505, "HTTP/{} is not supported (HTTP/1.1 is)".format(r.version))
        try:
            target = r.target.decode("ascii")
        except UnicodeDecodeError:
            raise HttpError(400, "the request target is not ASCII (percent-encode it)") from None
        if r.method == "CONNECT":
            raise HttpError(400, "malformed request: CONNECT is not served (no tunnels here)")
        path, _, query = target.partition("?")
        if not path.startswith("/"):
            m = _ABSOLUTE.match(target)
            if m is None:
                raise HttpError(400, "malformed request: the request target must be a path or "
                                     "an absolute http URI")
            authority, rest = m.groups()
            if not authority:
                raise HttpError(400, "malformed request: no host in the absolute request "
                                     "target")
            if "@" in authority:
                raise HttpError(400, "malformed request: user information in the request "
                                     "target")
            if not _HOST.match(authority):
                raise HttpError(400, "malformed request: invalid host in the request target")
            path, _, query = rest.partition("?")
            path = path or "/"
        r.path = path
        r.query = query
        h = r.headers
        te = h.get("transfer-encoding")
        if te is not None:
            # (llhttp refused chunked before another coding, and with Content-Length)
            codings = [c.partition(";")[0].strip().lower() for c in te.split(",") if c.strip()]
            if not codings or codings[-1] != "chunked":
                raise HttpError(400, "malformed request: Transfer-Encoding without chunked last "
                                     "(RFC 9112 6.3)")
            if len(codings) > 1:
                raise HttpError(501, "transfer codings other than chunked are not supported")
        cl = h.get("content-length")
        if cl is not None:
            if not (cl.isdigit() and cl.isascii()):
                raise HttpError(400, "invalid Content-Length {!r}".format(cl[:32]))
            if int(cl) > self.max_body:
                raise HttpError(413, "request body of {} bytes is over the limit of {} "
                                     "bytes".format(cl, self.max_body))
        options = {o.strip().lower() for o in h.get("connection", "").split(",")}
        if "close" in options:
            r.keep_alive = False
        elif r.version == "1.0":
            r.keep_alive = "keep-alive" in options and te is None
        else:
            r.keep_alive = True
        r.upgrade = p.should_upgrade()
        self._trailer = [0, 0]
        if self.head_check is not None:
            self.head_check(r)

    def on_body(self, body):
        r = self._req
        r._size += len(body)
        if r._size > self.max_body:
            raise HttpError(413, "request body over the limit of {} bytes".format(self.max_body))
        r._chunks.append(body)

    def on_message_complete(self):
        r = self._req
        self._req = None
        self._raw_done += 1
        if r._chunks:
            r.body = r._chunks[0] if len(r._chunks) == 1 else b"".join(r._chunks)
        r._chunks = None
        self._closed = not r.keep_alive
        self._done.append(r)
