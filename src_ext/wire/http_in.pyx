# The HTTP door's input side (docs/http.md): HttpParser cuts HTTP/1.1
# requests (RFC 9112) out of a byte stream fed in any pieces and builds each
# Request in C, one object with its fields set directly.  Strict: the
# request-smuggling defences (one framing per request, no obs-fold, no bare
# CR or LF) are refusals here, before any handler runs.  The twin,
# fastflow/_ref/wire/http_in.py, drives llhttp (httptools) with Python
# callbacks; tests/test_http_parser.py holds the two together and lists
# where llhttp and this parser differ, with RFC 9112's word on each.

from libc.string cimport memchr
from cpython.dict cimport PyDict_SetDefault
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.object cimport PyObject
from cpython.list cimport PyList_Append
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython.unicode cimport PyUnicode_DecodeLatin1, PyUnicode_DecodeASCII
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from urllib.parse import parse_qsl as _parse_qsl


cdef enum:
    HTTP_METHOD_MAX = 24            # bytes of a method token ("not HTTP" past it)
    HTTP_CHUNK_LINE_MAX = 4096      # bytes of a chunk-size line with its extensions
    HTTP_NAME_CACHE_MAX = 32        # names up to this long may be one of _HTTP_NAMES
    HTTP_BODY_KEEP = 65536          # a chunked-body buffer larger than this is freed
    HTTP_BODY_DIRECT = 16384        # a Content-Length body of this many bytes or more,
                                    # not complete in one read, is read into its bytes
                                    # object (no copy through the parser's buffer)

# Where the request in progress is (HttpParser.state).
cdef enum HttpState:
    HS_IDLE = 0                     # at (or in) a request line
    HS_FIELDS = 1                   # header field lines
    HS_LENGTH = 2                   # a Content-Length body (its bytes: .length)
    HS_CHUNK_SIZE = 3               # a chunk-size line
    HS_CHUNK_DATA = 4               # chunk data (.length bytes left)
    HS_CHUNK_END = 5                # the CRLF after chunk data
    HS_TRAILERS = 6                 # the trailer section after the last chunk

# What the fields of the request in progress said (HttpParser.flags).
cdef enum HttpFlag:
    HF_LENGTH = 1                   # a Content-Length field (its value: .length)
    HF_TE = 2                       # a Transfer-Encoding field
    HF_CHUNKED = 4                  # ... naming chunked (it must be the last coding)
    HF_TE_OTHER = 8                 # ... naming another coding
    HF_CLOSE = 16                   # Connection: close
    HF_KEEP_ALIVE = 32              # Connection: keep-alive
    HF_CONN_UPGRADE = 64            # Connection: upgrade
    HF_UPGRADE = 128                # an Upgrade field with a value
    HF_HTTP10 = 256                 # an HTTP/1.0 request
    HF_CONNECT = 512                # the CONNECT method

# Byte classes (_HC).
cdef enum HttpClass:
    HC_TCHAR = 1                    # token characters (RFC 9110 5.6.2)
    HC_TARGET = 2                   # a request target's: visible ASCII
    HC_VALUE = 4                    # a field value's: VCHAR, obs-text, SP, HTAB
    HC_QDTEXT = 8                   # a quoted-string's (RFC 9110 5.6.4)
    HC_HEX = 16                     # HEXDIG
    HC_HOST = 32                    # an authority's, without userinfo (RFC 3986 3.2)

cdef uint8_t _HC[256]


cdef void _http_classes() noexcept:
    cdef int c
    cdef const char *extra = b"!#$%&'*+-.^_`|~"
    cdef const char *host = b"-._~!$&'()*+,;=%:[]"
    for c in range(256):
        _HC[c] = 0
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or (
                c != 0 and memchr(extra, c, 15) != NULL):
            _HC[c] |= HC_TCHAR
        if 0x21 <= c <= 0x7e:
            _HC[c] |= HC_TARGET
        if c == 9 or (0x20 <= c <= 0x7e) or c >= 0x80:
            _HC[c] |= HC_VALUE
            if c != 0x22 and c != 0x5c:
                _HC[c] |= HC_QDTEXT
        if (48 <= c <= 57) or (65 <= c <= 70) or (97 <= c <= 102):
            _HC[c] |= HC_HEX
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122) or (
                c != 0 and memchr(host, c, 20) != NULL):
            _HC[c] |= HC_HOST


_http_classes()

# The methods this door recognises (llhttp's HTTP methods; a token not here
# is 501, RFC 9110 9.1).  PRI (the HTTP/2 preface) is refused as not HTTP/1.1.
_HTTP_METHODS = (
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE", "QUERY",
    "ACL", "BIND", "CHECKOUT", "COPY", "LINK", "LOCK", "M-SEARCH", "MERGE", "MKACTIVITY",
    "MKCALENDAR", "MKCOL", "MOVE", "NOTIFY", "PROPFIND", "PROPPATCH", "PURGE", "REBIND",
    "REPORT", "SEARCH", "SOURCE", "SUBSCRIBE", "UNBIND", "UNLINK", "UNLOCK", "UNSUBSCRIBE",
    "PRI",
)
cdef enum:
    HM_CONNECT = 7
    HM_PRI = 35

# Header names made once (a lower-cased name that is one of these is this
# very str: no new object, its hash cached); the first four are the ones the
# parser acts on.
_HTTP_NAMES = (
    "content-length", "transfer-encoding", "connection", "upgrade",
    "host", "content-type", "user-agent", "accept", "accept-encoding", "accept-language",
    "authorization", "origin", "cookie", "referer", "cache-control", "pragma", "expect",
    "te", "trailer", "keep-alive", "x-forwarded-for", "x-request-id", "traceparent",
    "last-event-id", "ff-ack", "ce-specversion", "ce-id", "ce-source", "ce-type",
    "ce-time", "ce-subject", "ce-dataschema", "sec-websocket-key", "sec-websocket-version",
    "sec-websocket-protocol", "sec-websocket-extensions", "webhook-request-origin",
    "webhook-request-rate", "webhook-request-callback", "access-control-request-method",
    "access-control-request-headers",
)
cdef enum:
    HN_CONTENT_LENGTH = 0
    HN_TRANSFER_ENCODING = 1
    HN_CONNECTION = 2
    HN_UPGRADE = 3

# The same as C arrays (pointers into the bytes of _HTTP_TABLE_BYTES); the
# names also indexed by length: those of length n are
# _name_order[_name_by_len[n]:_name_by_len[n + 1]].
cdef enum:
    HTTP_TABLE_MAX = 64
cdef tuple _HTTP_TABLE_BYTES = tuple(s.encode("ascii") for s in _HTTP_METHODS + _HTTP_NAMES)
cdef const char *_method_ptr[HTTP_TABLE_MAX]
cdef Py_ssize_t _method_len[HTTP_TABLE_MAX]
cdef int _n_methods = len(_HTTP_METHODS)
cdef const char *_name_ptr[HTTP_TABLE_MAX]
cdef int _name_order[HTTP_TABLE_MAX]
cdef int _name_by_len[HTTP_NAME_CACHE_MAX + 2]


cdef int _http_tables() except -1:
    cdef int i, k = 0, n
    cdef bytes b
    assert len(_HTTP_METHODS) <= HTTP_TABLE_MAX and len(_HTTP_NAMES) <= HTTP_TABLE_MAX
    for i in range(_n_methods):
        b = <bytes>_HTTP_TABLE_BYTES[i]
        _method_ptr[i] = PyBytes_AS_STRING(b)
        _method_len[i] = PyBytes_GET_SIZE(b)
    for i in range(len(_HTTP_NAMES)):
        b = <bytes>_HTTP_TABLE_BYTES[_n_methods + i]
        assert 0 < len(b) <= HTTP_NAME_CACHE_MAX
        _name_ptr[i] = PyBytes_AS_STRING(b)
    for n in range(HTTP_NAME_CACHE_MAX + 1):
        _name_by_len[n] = k
        for i in range(len(_HTTP_NAMES)):
            if len(_HTTP_NAMES[i]) == n:
                _name_order[k] = i
                k += 1
    _name_by_len[HTTP_NAME_CACHE_MAX + 1] = k
    return 0


_http_tables()

cdef const char *_HTTP_NAME = b"HTTP/"
cdef str _HTTP_11 = "1.1"
cdef str _HTTP_10 = "1.0"
cdef str _COMMA = ", "


cdef inline double _monotonic() noexcept:
    # time.monotonic()'s clock, without a Python call
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline bint _ows(char c) noexcept:
    return c == 32 or c == 9


cdef int _http_method(const char *p, Py_ssize_t n) noexcept:
    """The index of the method p[:n] in _HTTP_METHODS (case-sensitive), -1."""
    cdef int i
    for i in range(_n_methods):
        if _method_len[i] == n and memcmp(_method_ptr[i], p, n) == 0:
            return i
    return -1


cdef object _http_name(const char *p, Py_ssize_t n, int *index):
    """The lower-cased str of the field name p[:n] (a token: ASCII), the
    one of _HTTP_NAMES when it is one (``index``: its index, else -1)."""
    cdef char low[HTTP_NAME_CACHE_MAX]
    cdef Py_ssize_t i
    cdef int k, j
    index[0] = -1
    if n <= HTTP_NAME_CACHE_MAX:
        for i in range(n):
            low[i] = <char>_ascii_lower(p[i])
        for k in range(_name_by_len[n], _name_by_len[n + 1]):
            j = _name_order[k]
            if memcmp(_name_ptr[j], low, n) == 0:
                index[0] = j
                return <object>PyTuple_GET_ITEM(_HTTP_NAMES, j)
        return PyUnicode_DecodeASCII(low, n, NULL)
    return PyUnicode_DecodeASCII(p, n, NULL).lower()


cdef inline object _http_error(int status, str message):
    # every error of the parser closes the connection: the stream cannot be
    # resynchronised after a request it refused
    return HttpError(status, message, (), True)


cdef object _malformed(str what):
    return _http_error(400, "malformed request: " + what)


cdef Py_ssize_t _skip_ows(const char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _ows(p[i]):
        i += 1
    return i


cdef Py_ssize_t _token_end(const char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _HC[<uint8_t>p[i]] & HC_TCHAR:
        i += 1
    return i


cdef Py_ssize_t _quoted_end(const char *p, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The end of the quoted-string at p[i] (a DQUOTE); -2: it does not end
    within p[:n]; -1: it is malformed."""
    i += 1
    while i < n:
        if p[i] == 34:
            return i + 1
        if p[i] == 92:                  # a quoted-pair
            if i + 1 == n:
                return -2
            if not _HC[<uint8_t>p[i + 1]] & HC_VALUE:
                return -1
            i += 2
        elif _HC[<uint8_t>p[i]] & HC_QDTEXT:
            i += 1
        else:
            return -1
    return -2


cdef int _codings(const char *p, Py_ssize_t n, int *flags) except -1:
    """Fold a Transfer-Encoding value (RFC 9112 6.1, a list of codings with
    parameters) into ``flags``: chunked must come last and once."""
    cdef Py_ssize_t i = 0, s, e
    cdef bint chunked, params, any_coding = False
    while True:
        i = _skip_ows(p, i, n)
        if i == n:
            break
        if p[i] == 44:                  # an empty list element (RFC 9110 5.6.1.2)
            i += 1
            continue
        s = i
        i = _token_end(p, i, n)
        if i == s:
            raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
        chunked = _ascii_ieq(p + s, i - s, b"chunked", 7)
        params = False
        i = _skip_ows(p, i, n)
        while i < n and p[i] == 59:     # ;name=value (RFC 9112 4)
            params = True
            i = _skip_ows(p, i + 1, n)
            e = _token_end(p, i, n)
            if e == i:
                raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
            i = _skip_ows(p, e, n)
            if i == n or p[i] != 61:
                raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
            i = _skip_ows(p, i + 1, n)
            if i < n and p[i] == 34:
                e = _quoted_end(p, i, n)
                if e < 0:
                    raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
            else:
                e = _token_end(p, i, n)
                if e == i:
                    raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
            i = _skip_ows(p, e, n)
        if i < n and p[i] != 44:
            raise _malformed("invalid Transfer-Encoding {!r}".format(p[:min(n, 64)]))
        any_coding = True
        if flags[0] & HF_CHUNKED:
            raise _malformed("chunked must be the last transfer coding, applied once "
                             "(RFC 9112 6.1)")
        if chunked:
            if params:
                raise _malformed("the chunked transfer coding takes no parameters")
            flags[0] |= HF_CHUNKED
        else:
            flags[0] |= HF_TE_OTHER
    if not any_coding:
        raise _malformed("empty Transfer-Encoding")
    flags[0] |= HF_TE
    return 0


cdef int _connection(const char *p, Py_ssize_t n, int *flags) noexcept:
    """Fold the options of a Connection value into ``flags``."""
    cdef Py_ssize_t i = 0, s, e
    while i < n:
        while i < n and (_ows(p[i]) or p[i] == 44):
            i += 1
        s = i
        while i < n and p[i] != 44:
            i += 1
        e = i
        while e > s and _ows(p[e - 1]):
            e -= 1
        if _ascii_ieq(p + s, e - s, b"close", 5):
            flags[0] |= HF_CLOSE
        elif _ascii_ieq(p + s, e - s, b"keep-alive", 10):
            flags[0] |= HF_KEEP_ALIVE
        elif _ascii_ieq(p + s, e - s, b"upgrade", 7):
            flags[0] |= HF_CONN_UPGRADE
    return 0


@cython.final
@cython.freelist(64)
@cython.auto_pickle(False)
cdef class Request:
    """One HTTP request as the parser cut it: ``method``, ``target`` (bytes
    as received), ``path`` and ``query`` (str; from an absolute-form target
    its path and query), ``version`` ("1.1" or "1.0"), ``headers``
    (lower-cased name -> value, repeats joined with ", "), ``pairs`` (the
    (lower-cased name, value) fields as they came), ``body`` (bytes,
    de-chunked), ``keep_alive``, ``upgrade`` (with ``rest``, the bytes that
    followed it) and ``t0`` (``time.monotonic()`` when its first byte came).
    Field values are str of their bytes (Latin-1), without the whitespace
    around them; trailer fields are not kept (RFC 9110 6.5.2)."""

    def __init__(self):
        self.method = ""
        self.target = b""
        self.path = ""
        self.query = ""
        self.headers = {}
        self.pairs = []
        self.body = b""
        self.keep_alive = True
        self.version = _HTTP_11
        self.upgrade = False
        self.rest = b""
        self.t0 = 0.0

    def __repr__(self):
        return "<Request {} {!r} HTTP/{}>".format(self.method, self.target, self.version)

    def header(self, name, default=None):
        """The value of the (lower-case) field ``name``, ``default`` without one."""
        return self.headers.get(name, default)

    def params(self):
        """The query parameters (a dict; a repeated one keeps the last)."""
        return dict(_parse_qsl(self.query, keep_blank_values=True))

    def param_list(self, name):
        """Every value of the query parameter ``name``, in order."""
        return [v for k, v in _parse_qsl(self.query, keep_blank_values=True) if k == name]


@cython.final
@cython.auto_pickle(False)     # connection state: not picklable
cdef class HttpParser(DoorParser):
    """The HTTP door's parser (a ``DoorParser``): cuts HTTP/1.1 requests
    (RFC 9112) out of a byte stream fed in any pieces, pipelined or split at
    any byte, and builds each ``Request`` in C.

    ``feed(data)`` returns the requests ``data`` completed.  A request that
    breaks HTTP or a limit raises ``HttpError`` (``status``: 400 malformed,
    501 an unknown method or transfer coding, 505 a version other than
    HTTP/1.0 and 1.1, 414 a target over ``max_header`` bytes, 431 a head
    over ``max_header`` bytes or over ``max_headers`` fields, 413 a body
    over ``max_body`` bytes, told by Content-Length or a chunk size before
    the body is read); its ``frames`` are the requests complete before it
    and the parser then takes no more input (``dead``; ``feed`` returns
    []).  So does an upgrade request (``Upgrade`` with ``Connection:
    upgrade``, HTTP/1.1): the bytes after it are its ``rest``.

    Framing (the request-smuggling defences): Content-Length is digits,
    repeated only with the same value; Transfer-Encoding must end with
    chunked (400), other codings before it are 501, and with Content-Length
    it is 400; chunk sizes are hex within 64 bits, chunk extensions are
    checked and skipped, trailer fields are checked, bounded like the head
    and not kept.  Lines end with CRLF: a bare CR or LF, obs-fold, NUL or
    another control character in a field is 400.  HTTP/1.1 keeps the
    connection unless ``Connection: close``; HTTP/1.0 only with
    ``Connection: keep-alive`` and no Transfer-Encoding.  After a request
    that does not keep it, more than empty lines is 400 (RFC 9112 9.6: no
    request after it is processed).

    ``head_check`` (None, or a callable) is called with each request once
    its head is parsed, before its body is read; an ``HttpError`` it raises
    refuses the request as the parser's own errors do.
    """

    def __init__(self, Py_ssize_t max_header=16384, Py_ssize_t max_headers=100,
                 Py_ssize_t max_body=16 << 20):
        self.max_header = max_header
        self.max_headers = max_headers
        self.max_body = max_body

    def __dealloc__(self):
        free(self.body)

    @property
    def in_request(self):
        """A request has begun and is not complete: when its first byte
        came (``time.monotonic()``), else 0.0."""
        return self.t0

    @property
    def dead(self):
        """The parser takes no more input: it refused a request, or an
        upgrade request ended HTTP on the connection."""
        return self.upgraded or self.failed is not None

    @property
    def ready(self):
        """Requests the feed under way has completed and not returned yet
        (a ``head_check`` can tell whether answers are due before its
        request's)."""
        return self.ahead + (len(self.feeding) if self.feeding is not None else 0)

    @property
    def buffered(self):
        """Bytes of the request in progress held (its body so far, or the
        line being read)."""
        return self.n + self.body_len + self.pend_got

    def feed(self, data):
        cdef Py_buffer view
        cdef Py_ssize_t take
        cdef list out
        cdef Request req
        if self.upgraded or self.failed is not None:
            return []
        self.ahead = 0
        if self.pend is None:
            return self._feed(data)
        # the rest of a large body, straight into its bytes object
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            take = min(view.len, PyBytes_GET_SIZE(self.pend) - self.pend_got)
            memcpy(PyBytes_AS_STRING(self.pend) + self.pend_got, view.buf, take)
            self.pend_got += take
            self.bytes_in += take
            if self.pend_got < PyBytes_GET_SIZE(self.pend):
                return []
            req = self.req
            req.body = self.pend
            self.pend = None
            self.pend_got = 0
            out = []
            if self._complete(out):
                req.rest = PyBytes_FromStringAndSize(<const char *>view.buf + take,
                                                     view.len - take)
                return out
            if take < view.len:
                self.ahead = len(out)
                try:
                    out += self._feed(PyMemoryView_FromMemory(<char *>view.buf + take,
                                                              view.len - take, PyBUF_READ))
                except HttpError as exc:
                    exc.frames = out + (exc.frames or [])
                    raise
            return out
        finally:
            PyBuffer_Release(&view)

    cdef bint _complete(self, list out) except -1:
        """The request whose head and body are read is complete: handed over
        and the parser made ready for the next; True: it was an upgrade (the
        caller sets its ``rest``, and the parser takes no more)."""
        cdef Request req = self.req
        PyList_Append(out, req)
        self._reset()
        self.closed = not req.keep_alive
        if req.upgrade:
            self.upgraded = True
            return True
        return False

    cdef object _malformed_before(self):
        return _http_error(400, "the stream was malformed before: {}".format(self.failed))

    cdef int _reset(self) noexcept:
        self.state = HS_IDLE
        self.req = None
        self.t0 = 0.0
        self.head = 0
        self.fields = 0
        self.flags = 0
        self.length = 0
        self.body_len = 0
        if self.body_cap > HTTP_BODY_KEEP:
            free(self.body)
            self.body = NULL
            self.body_cap = 0
        return 0

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1:
        """Cut the requests of p[:n]; returns the bytes used (the rest is
        a line, or a Content-Length body, not complete yet)."""
        cdef Py_ssize_t pos = 0, r
        cdef uint64_t take
        cdef Request req
        cdef double now = 0.0
        self.feeding = out
        while True:
            if self.state == HS_IDLE:
                if self.t0 == 0.0:
                    # between requests: empty lines are skipped (RFC 9112 2.2)
                    while pos < n and (p[pos] == 13 or p[pos] == 10):
                        pos += 1
                    if pos == n:
                        return n
                    if self.closed:
                        # RFC 9112 9.6: no request is processed after one with "close"
                        raise _malformed("data after the last request (Connection: close)")
                    if now == 0.0:
                        now = _monotonic()
                    self.t0 = now
                r = self._request_line(p + pos, n - pos)
                if r == 0:
                    return pos
                pos += r
                self.state = HS_FIELDS
            elif self.state == HS_FIELDS or self.state == HS_TRAILERS:
                if pos == n:
                    return pos
                if p[pos] == 13:        # the empty line: the end of the section
                    if pos + 1 == n:
                        return pos
                    if p[pos + 1] != 10:
                        raise _malformed("a CR not followed by LF")
                    pos += 2
                    self.head += 2
                    if self.head > self.max_header:
                        raise _http_error(431, "{} over {} bytes".format(
                            "request head" if self.state == HS_FIELDS else "trailer section",
                            self.max_header))
                    if self.state == HS_FIELDS:
                        self._head_done()
                    else:
                        self.req.body = PyBytes_FromStringAndSize(self.body, self.body_len)
                        self.state = HS_LENGTH      # (a Content-Length of 0: complete)
                    continue
                r = self._field_line(p + pos, n - pos, self.state == HS_TRAILERS)
                if r == 0:
                    return pos
                pos += r
            elif self.state == HS_LENGTH:
                req = self.req
                if self.length:
                    if <uint64_t>(n - pos) < self.length:
                        if self.length < HTTP_BODY_DIRECT:
                            self.need = <Py_ssize_t>self.length     # from the buffer's start
                            return pos
                        # a large body: read into its bytes object as it comes (feed)
                        self.pend = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>self.length)
                        memcpy(PyBytes_AS_STRING(self.pend), p + pos, n - pos)
                        self.pend_got = n - pos
                        return n
                    req.body = PyBytes_FromStringAndSize(p + pos, <Py_ssize_t>self.length)
                    pos += <Py_ssize_t>self.length
                if self._complete(out):
                    # the connection speaks another protocol from here
                    req.rest = PyBytes_FromStringAndSize(p + pos, n - pos)
                    return n
            elif self.state == HS_CHUNK_SIZE:
                r = self._chunk_line(p + pos, n - pos)
                if r == 0:
                    return pos
                pos += r
                if self.length == 0:
                    self.state = HS_TRAILERS
                    self.head = 0
                    self.fields = 0
                else:
                    self.state = HS_CHUNK_DATA
            elif self.state == HS_CHUNK_DATA:
                take = <uint64_t>(n - pos)
                if take > self.length:
                    take = self.length
                self._keep_body(p + pos, <Py_ssize_t>take)
                pos += <Py_ssize_t>take
                self.length -= take
                if self.length:
                    return pos
                self.state = HS_CHUNK_END
            else:                               # HS_CHUNK_END
                if pos == n:
                    return pos
                if p[pos] != 13 or (pos + 1 < n and p[pos + 1] != 10):
                    raise _malformed("chunk data not followed by CRLF")
                if pos + 1 == n:
                    return pos
                pos += 2
                self.state = HS_CHUNK_SIZE

    cdef Py_ssize_t _request_line(self, const char *p, Py_ssize_t n) except -1:
        """The request line at p (RFC 9112 3): its bytes with the CRLF when
        complete (the Request is made), 0 while it is incomplete and valid
        so far."""
        cdef Py_ssize_t i = 0, t, tn, v, k
        cdef int m
        cdef char c
        cdef bint ok
        cdef Request req
        while i < n and i <= HTTP_METHOD_MAX and _HC[<uint8_t>p[i]] & HC_TCHAR:
            i += 1
        if i > HTTP_METHOD_MAX:
            raise _malformed("not HTTP/1.1")
        if i == n:
            return 0
        if i == 0 or p[i] != 32:
            raise _malformed("not HTTP/1.1")
        m = _http_method(p, i)
        if m < 0:
            raise _http_error(501, "unknown request method")
        if m == HM_PRI:
            raise _malformed("the HTTP/2 connection preface: this door speaks HTTP/1.1")
        t = i + 1
        i = t
        while i < n and _HC[<uint8_t>p[i]] & HC_TARGET:
            i += 1
        tn = i - t
        if tn > self.max_header:
            raise _http_error(414, "request target longer than {} bytes".format(self.max_header))
        if i == n:
            return 0
        c = p[i]
        if c != 32:
            if c == 13 or c == 10:      # the line ends after the target: HTTP/0.9's form
                if c == 13:
                    if i + 1 == n:
                        return 0
                    if p[i + 1] != 10:
                        raise _malformed("a CR not followed by LF")
                if tn and (p[t] == 47 or (tn == 1 and p[t] == 42) or (
                        tn >= 7 and _ascii_ieq(p + t, 7, b"http://", 7)) or (
                        tn >= 8 and _ascii_ieq(p + t, 8, b"https://", 8))):
                    raise _http_error(505, "HTTP/0.9 is not supported (HTTP/1.1 is)")
            raise _malformed("invalid character {!r} in the request target".format(
                PyBytes_FromStringAndSize(&c, 1)))
        if tn == 0:
            raise _malformed("no request target")
        v = i + 1
        k = 0
        while k < 8 and v + k < n:          # HTTP/<digit>.<digit>
            c = p[v + k]
            if k < 5:
                ok = c == _HTTP_NAME[k]
            elif k == 6:
                ok = c == 46
            else:
                ok = 48 <= c <= 57
            if not ok:
                raise _malformed("invalid HTTP version")
            k += 1
        if k < 8:
            return 0
        if p[v + 5] != 49 or (p[v + 7] != 49 and p[v + 7] != 48):
            raise _http_error(505, "HTTP/{}.{} is not supported (HTTP/1.1 is)".format(
                p[v + 5] - 48, p[v + 7] - 48))
        i = v + 8
        if i == n:
            return 0
        if p[i] != 13 or (i + 1 < n and p[i + 1] != 10):
            raise _malformed("expected CRLF after the HTTP version")
        if i + 1 == n:
            return 0
        i += 2
        self.head = i
        if i > self.max_header:
            raise _http_error(431, "request head over {} bytes".format(self.max_header))
        req = Request.__new__(Request)
        req.method = _HTTP_METHODS[m]
        req.target = PyBytes_FromStringAndSize(p + t, tn)
        req.headers = {}
        req.pairs = []
        req.body = b""
        req.rest = b""
        req.t0 = self.t0
        if p[v + 7] == 48:
            req.version = _HTTP_10
            self.flags = HF_HTTP10
        else:
            req.version = _HTTP_11
            self.flags = 0
        if m == HM_CONNECT:
            self.flags |= HF_CONNECT
        self.req = req
        return i

    cdef Py_ssize_t _field_line(self, const char *p, Py_ssize_t n, bint trailer) except -1:
        """The field line at p (not the empty line; RFC 9112 5): its bytes
        when complete (a header field is added to the request, a trailer
        field is checked and dropped), 0 while it is incomplete and valid so
        far."""
        cdef Py_ssize_t i, nn, vs, ve
        if _ows(p[0]):
            raise _malformed("whitespace at the start of a field line (obs-fold is "
                             "not accepted)")
        i = _token_end(p, 0, n)
        if i < n:
            if i == 0 or p[i] != 58:
                raise _malformed("invalid field name {!r}".format(
                    PyBytes_FromStringAndSize(p, min(i + 1, 64))))
            nn = i
            i = _skip_ows(p, i + 1, n)
            vs = i
            while i < n and _HC[<uint8_t>p[i]] & HC_VALUE:
                i += 1
            if i < n:
                if p[i] != 13 or (i + 1 < n and p[i + 1] != 10):
                    raise _malformed("invalid character {!r} in the value of {!r}".format(
                        PyBytes_FromStringAndSize(p + i, 1), PyBytes_FromStringAndSize(p, nn)))
                if i + 1 < n:
                    ve = i
                    while ve > vs and _ows(p[ve - 1]):
                        ve -= 1
                    i += 2
                    self.head += i
                    if trailer:
                        self._check_size(True)
                    else:
                        self._field(p, nn, p + vs, ve - vs)
                    return i
        # incomplete: valid so far
        if self.head + n > self.max_header:
            raise _http_error(431, "{} over {} bytes".format(
                "trailer section" if trailer else "request head", self.max_header))
        return 0

    cdef int _check_size(self, bint trailer) except -1:
        if self.head > self.max_header:
            raise _http_error(431, "{} over {} bytes".format(
                "trailer section" if trailer else "request head", self.max_header))
        self.fields += 1
        if self.fields > self.max_headers:
            raise _http_error(431, "more than {} {} fields".format(
                self.max_headers, "trailer" if trailer else "header"))
        return 0

    cdef int _field(self, const char *name, Py_ssize_t nn, const char *value,
                    Py_ssize_t vn) except -1:
        """A header field: the framing ones are checked, then it is added."""
        cdef int index
        cdef uint64_t v, d
        cdef Py_ssize_t i
        cdef Request req = self.req
        cdef object key = _http_name(name, nn, &index)
        cdef object val
        cdef PyObject *old
        if index == HN_CONTENT_LENGTH:
            if vn == 0:
                raise _malformed("empty Content-Length")
            v = 0
            for i in range(vn):
                if value[i] < 48 or value[i] > 57:
                    raise _malformed("invalid Content-Length {!r}".format(
                        PyBytes_FromStringAndSize(value, min(vn, 32))))
                d = <uint64_t>(value[i] - 48)
                if v > (~(<uint64_t>0) - d) // 10:
                    raise _malformed("Content-Length over 2**64")
                v = v * 10 + d
            if self.flags & HF_TE:
                raise _malformed("both Transfer-Encoding and Content-Length (RFC 9112 6.3)")
            if self.flags & HF_LENGTH and v != self.length:
                raise _malformed("Content-Length values differ")
            self.flags |= HF_LENGTH
            self.length = v
        elif index == HN_TRANSFER_ENCODING:
            if self.flags & HF_LENGTH:
                raise _malformed("both Transfer-Encoding and Content-Length (RFC 9112 6.3)")
            _codings(value, vn, &self.flags)
        elif index == HN_CONNECTION:
            _connection(value, vn, &self.flags)
        elif index == HN_UPGRADE:
            if vn:
                self.flags |= HF_UPGRADE
        if self.head > self.max_header:
            raise _http_error(431, "request head over {} bytes".format(self.max_header))
        self.fields += 1
        if self.fields > self.max_headers:
            raise _http_error(431, "more than {} header fields".format(self.max_headers))
        val = PyUnicode_DecodeLatin1(value, vn, NULL)
        PyList_Append(req.pairs, (key, val))
        i = len(req.headers)
        old = PyDict_SetDefault(req.headers, key, val)
        if len(req.headers) == i:               # a repeated field: the values joined
            req.headers[key] = <object>old + _COMMA + val
        return 0

    cdef int _head_done(self) except -1:
        """The head is complete: the target's form, the framing, keep-alive
        and upgrade; the state moves to the body."""
        cdef Request req = self.req
        cdef int f = self.flags
        cdef const char *t = PyBytes_AS_STRING(req.target)
        cdef Py_ssize_t tn = PyBytes_GET_SIZE(req.target), a, i
        cdef const char *q
        if f & HF_CONNECT:
            raise _malformed("CONNECT is not served (no tunnels here)")
        if t[0] == 47:                                  # origin-form
            a = 0
        else:                                           # absolute-form http(s)://authority
            if tn > 7 and _ascii_ieq(t, 7, b"http://", 7):
                a = 7
            elif tn > 8 and _ascii_ieq(t, 8, b"https://", 8):
                a = 8
            else:
                raise _malformed("the request target must be a path or an absolute http URI")
            i = a
            while i < tn and t[i] != 47 and t[i] != 63:
                if t[i] == 64:
                    raise _malformed("user information in the request target")
                if not _HC[<uint8_t>t[i]] & HC_HOST:
                    raise _malformed("invalid host in the request target")
                i += 1
            if i == a:
                raise _malformed("no host in the absolute request target")
            a = i
        q = <const char *>memchr(t + a, 63, tn - a)
        if q == NULL:
            req.path = PyUnicode_DecodeASCII(t + a, tn - a, NULL) if tn > a else "/"
            req.query = ""
        else:
            req.path = PyUnicode_DecodeASCII(t + a, q - t - a, NULL) if q > t + a else "/"
            req.query = PyUnicode_DecodeASCII(q + 1, tn - (q - t) - 1, NULL)
        if f & HF_TE:
            if not f & HF_CHUNKED:
                raise _malformed("Transfer-Encoding without chunked last (RFC 9112 6.3)")
            if f & HF_TE_OTHER:
                raise _http_error(501, "transfer codings other than chunked are not supported")
        elif f & HF_LENGTH and self.length > <uint64_t>self.max_body:
            raise _http_error(413, "request body of {} bytes is over the limit of {} "
                                   "bytes".format(self.length, self.max_body))
        if f & HF_CLOSE:
            req.keep_alive = False
        elif f & HF_HTTP10:
            req.keep_alive = (f & HF_KEEP_ALIVE) and not (f & HF_TE)
        else:
            req.keep_alive = True
        req.upgrade = (f & (HF_UPGRADE | HF_CONN_UPGRADE)) == (HF_UPGRADE | HF_CONN_UPGRADE) \
            and not (f & HF_HTTP10)
        if f & HF_TE:
            self.state = HS_CHUNK_SIZE
            self.length = 0
        else:
            self.state = HS_LENGTH
        if self.head_check is not None:
            # the door's look at the head before the body is read (it may
            # refuse the request: its HttpError ends the stream like a parser's)
            try:
                self.head_check(req)
            except HttpError as exc:
                exc.close = True
                raise
        return 0

    cdef Py_ssize_t _chunk_line(self, const char *p, Py_ssize_t n) except -1:
        """The chunk-size line at p (RFC 9112 7.1): its bytes when complete
        (the size in .length), 0 while it is incomplete and valid so far."""
        cdef Py_ssize_t i = 0, e
        cdef uint64_t size = 0
        cdef uint8_t c
        while i < n and _HC[<uint8_t>p[i]] & HC_HEX:
            if size >> 60:
                raise _malformed("chunk size over 2**64")
            c = <uint8_t>p[i]
            size = size * 16 + (c - 48 if c <= 57 else (c | 32) - 87)
            i += 1
        if i == 0 and n:
            raise _malformed("invalid chunk size")
        while i < n:                    # chunk extensions: *( BWS ";" BWS name [ BWS "=" BWS value ] )
            if p[i] == 13:
                if i + 1 == n:
                    break
                if p[i + 1] != 10:
                    raise _malformed("a CR not followed by LF")
                i += 2
                if i > HTTP_CHUNK_LINE_MAX:
                    raise _malformed("chunk-size line over {} bytes".format(HTTP_CHUNK_LINE_MAX))
                if size > <uint64_t>(self.max_body - self.body_len):
                    raise _http_error(413, "request body over the limit of {} bytes".format(
                        self.max_body))
                self.length = size
                return i
            i = _skip_ows(p, i, n)
            if i == n:
                break
            if p[i] != 59:
                raise _malformed("invalid chunk-size line")
            i = _skip_ows(p, i + 1, n)
            e = _token_end(p, i, n)
            if e == n:
                break
            if e == i:
                raise _malformed("invalid chunk extension")
            i = e
            e = _skip_ows(p, e, n)
            if e == n:
                break
            if p[e] == 61:
                i = _skip_ows(p, e + 1, n)
                if i == n:
                    break
                if p[i] == 34:
                    e = _quoted_end(p, i, n)
                    if e == -2:
                        break
                    if e < 0:
                        raise _malformed("invalid chunk extension")
                else:
                    e = _token_end(p, i, n)
                    if e == i:
                        raise _malformed("invalid chunk extension")
                i = e
        if n > HTTP_CHUNK_LINE_MAX:
            raise _malformed("chunk-size line over {} bytes".format(HTTP_CHUNK_LINE_MAX))
        return 0

    cdef int _keep_body(self, const char *p, Py_ssize_t n) except -1:
        if n:
            _grow(<void **>&self.body, &self.body_cap, self.body_len + n, 1, 4096)
            memcpy(self.body + self.body_len, p, n)
            self.body_len += n
        return 0
