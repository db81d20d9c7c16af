# The web doors' output side: a delivery as a CloudEvents JSON event
# (structured mode), byte for byte what fastflow.event.to_json writes, made
# once per message for every web subscriber of it; the WebSocket target (one
# text frame per event, RFC 6455, subprotocol cloudevents.json) and the
# Server-Sent Events target (one SSE message per event).
#
# The JSON is written in C for what the engine's events carry: string
# attributes, the extensions' str / int / bool / bytes values, data that is
# absent, JSON, UTF-8 text or anything else (data_base64).  What C does not
# decide with certainty (another charset, JSON data that is not plain
# RFC 8259 or nested over WEB_JSON_DEPTH, an attribute block the engine does
# not write, ...) goes to ``_event_json`` below, in Python, once per message.

from libc.stdint cimport int8_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcmp, memset

cdef enum:
    WS_FIN = 0x80
    WS_OP_TEXT = 1
    WS_MAX_CONTROL = 125            # bytes of a control frame's payload
    WEB_JSON_DEPTH = 64             # JSON data nested deeper: the Python encoder decides
    WEB_REST_KEYS = 32              # attributes checked for duplicates in C (more: Python)
    WEB_JSON_KEEP = 1048576         # 1 MiB: a larger scratch buffer is not kept

# What a datacontenttype says about the data (fastflow.event._members).
cdef enum DataKind:
    DK_BINARY = 0                   # data_base64
    DK_JSON = 1                     # spliced in as "data" when it is one JSON document
    DK_TEXT = 2                     # UTF-8 text: a "data" string when it decodes
    DK_SLOW = 3                     # the Python encoder decides (another charset, ...)

cdef const char *_HEXL = b'0123456789abcdef'
cdef const char *_B64 = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

# The JSON escape of each ASCII byte, as orjson writes it: 0 as is, 'u' for
# \u00XX (lower-case hex), else the letter after the backslash.
cdef char _JESC[128]
cdef char _HEX2[512]                    # byte -> its two hex digits
cdef char _B64_2[8192]                  # 12 bits -> their two Base64 characters


cdef int _init_web_tables() except -1:
    cdef int i
    for i in range(256):
        _HEX2[2 * i] = _HEXL[i >> 4]
        _HEX2[2 * i + 1] = _HEXL[i & 15]
    for i in range(4096):
        _B64_2[2 * i] = _B64[i >> 6]
        _B64_2[2 * i + 1] = _B64[i & 63]
    for i in range(128):
        _JESC[i] = 117 if i < 32 else 0
    _JESC[8] = 98           # \b
    _JESC[9] = 116          # \t
    _JESC[10] = 110         # \n
    _JESC[12] = 102         # \f
    _JESC[13] = 114         # \r
    _JESC[34] = 34          # \"
    _JESC[92] = 92          # \\
    return 0


_init_web_tables()


# -- JSON pieces ----------------------------------------------------------------------


cdef inline int _utf8_seq(const uint8_t *b, Py_ssize_t avail) noexcept:
    """The length of the UTF-8 sequence at ``b`` (a byte >= 0x80; ``avail``
    bytes readable): 2, 3 or 4; -3 for an encoded surrogate (ED A0..BF xx,
    what surrogatepass writes); 0 if it is not UTF-8."""
    cdef uint8_t c = b[0]
    if c < 0xC2:
        return 0
    if c < 0xE0:
        return 2 if avail >= 2 and (b[1] & 0xC0) == 0x80 else 0
    if c < 0xF0:
        if avail < 3 or (b[1] & 0xC0) != 0x80 or (b[2] & 0xC0) != 0x80:
            return 0
        if c == 0xE0 and b[1] < 0xA0:
            return 0                    # overlong
        if c == 0xED and b[1] >= 0xA0:
            return -3
        return 3
    if c < 0xF5:
        if avail < 4 or (b[1] & 0xC0) != 0x80 or (b[2] & 0xC0) != 0x80 \
                or (b[3] & 0xC0) != 0x80:
            return 0
        if (c == 0xF0 and b[1] < 0x90) or (c == 0xF4 and b[1] >= 0x90):
            return 0                    # overlong, or past U+10FFFF
        return 4
    return 0


cdef inline char *_put_u4(char *o, uint32_t v) noexcept:
    """``\\uXXXX`` (lower-case hex)."""
    o[0] = 92
    o[1] = 117
    o[2] = _HEXL[(v >> 12) & 15]
    o[3] = _HEXL[(v >> 8) & 15]
    o[4] = _HEXL[(v >> 4) & 15]
    o[5] = _HEXL[v & 15]
    return o + 6


cdef inline bint _plain8(uint64_t w) noexcept:
    """Whether none of the 8 bytes of ``w`` needs escaping in a JSON string
    or is past ASCII (no byte below 0x20, '"', '\\' or 0x80 and up)."""
    cdef uint64_t ones = 0x0101010101010101ULL
    cdef uint64_t highs = 0x8080808080808080ULL
    cdef uint64_t q = w ^ 0x2222222222222222ULL
    cdef uint64_t bs = w ^ 0x5c5c5c5c5c5c5c5cULL
    return ((w & highs) | ((w - 0x2020202020202020ULL) & ~w & highs)
            | ((q - ones) & ~q & highs) | ((bs - ones) & ~bs & highs)) == 0


cdef char *_json_str(char *o, const char *s, Py_ssize_t n, bint surrogates) noexcept:
    """Write the JSON string of UTF-8 ``s[:n]`` at ``o`` (quoted; ``"``,
    ``\\`` and the control characters escaped as orjson does, the rest as
    it is): at most 2 + 6n bytes; returns the end, or NULL if ``s`` is not
    UTF-8.  ``surrogates``: an encoded surrogate (the record's strings are
    decoded with surrogatepass) is written as a ``\\udXXX`` escape; else
    it makes it NULL too (strict UTF-8)."""
    cdef const uint8_t *b = <const uint8_t *>s
    cdef Py_ssize_t i = 0
    cdef uint8_t c
    cdef char e
    cdef int k
    cdef uint64_t w
    o[0] = 34
    o += 1
    while i < n:
        while i + 8 <= n:               # eight bytes at a time while they pass as they are
            memcpy(&w, b + i, 8)
            if not _plain8(w):
                break
            memcpy(o, &w, 8)
            o += 8
            i += 8
        if i >= n:
            break
        c = b[i]
        if c < 0x80:
            e = _JESC[c]
            if e == 0:
                o[0] = <char>c
                o += 1
            elif e == 117:
                o = _put_u4(o, c)
            else:
                o[0] = 92
                o[1] = e
                o += 2
            i += 1
            continue
        k = _utf8_seq(b + i, n - i)
        if k > 0:
            memcpy(o, b + i, k)
            o += k
            i += k
        elif k == -3 and surrogates:
            o = _put_u4(o, (<uint32_t>(c & 0x0F) << 12) | (<uint32_t>(b[i + 1] & 0x3F) << 6)
                        | (b[i + 2] & 0x3F))
            i += 3
        else:
            return NULL
    o[0] = 34
    return o + 1


cdef char *_put_b64(char *o, const char *s, Py_ssize_t n) noexcept:
    """Base64 (standard alphabet, padded) of ``s[:n]``: 4 * ceil(n / 3) bytes."""
    cdef const uint8_t *b = <const uint8_t *>s
    cdef Py_ssize_t i = 0
    cdef uint32_t v
    while i + 3 <= n:
        v = (<uint32_t>b[i] << 16) | (<uint32_t>b[i + 1] << 8) | b[i + 2]
        memcpy(o, &_B64_2[2 * (v >> 12)], 2)
        memcpy(o + 2, &_B64_2[2 * (v & 4095)], 2)
        o += 4
        i += 3
    if n - i == 1:
        v = <uint32_t>b[i] << 16
        o[0] = _B64[v >> 18]
        o[1] = _B64[(v >> 12) & 63]
        o[2] = 61
        o[3] = 61
        o += 4
    elif n - i == 2:
        v = (<uint32_t>b[i] << 16) | (<uint32_t>b[i + 1] << 8)
        o[0] = _B64[v >> 18]
        o[1] = _B64[(v >> 12) & 63]
        o[2] = _B64[(v >> 6) & 63]
        o[3] = 61
        o += 4
    return o


cdef inline char *_put_lit(char *o, const char *s, Py_ssize_t n) noexcept:
    memcpy(o, s, n)
    return o + n


# -- the attribute block (a msgpack map; its readers: mpack.pxi) --------------------


cdef char *_json_rest(char *o, const char *p, Py_ssize_t n, const char **ct,
                      Py_ssize_t *ctn) noexcept:
    """Write ``,"name":value`` for each attribute of the msgpack map
    ``p[:n]`` (the record's optional attributes and extensions, in their
    order), at most 6n bytes; ``ct[0]``: the datacontenttype's UTF-8 (NULL:
    none).  Returns the end, or NULL where the Python encoder decides: a
    form the engine does not write, a duplicate name, a string that is not
    UTF-8, a datacontenttype that is not a string, more than WEB_REST_KEYS
    attributes."""
    cdef const uint8_t *b = <const uint8_t *>p
    cdef Py_ssize_t i = 0, ln, kn, count, j, q
    cdef const char *names[WEB_REST_KEYS]
    cdef Py_ssize_t name_n[WEB_REST_KEYS]
    cdef const char *kp
    cdef uint8_t c
    cdef int64_t v
    cdef uint64_t u
    ct[0] = NULL
    ctn[0] = 0
    if n < 1:
        return NULL
    c = b[0]
    i = 1
    if 0x80 <= c <= 0x8f:
        count = c & 0x0f
    elif c == 0xde:
        count = _mp_size(b, &i, n, 2)
    elif c == 0xdf:
        count = _mp_size(b, &i, n, 4)
    else:
        return NULL
    if count < 0 or count > WEB_REST_KEYS:
        return NULL
    for j in range(count):
        kn = _mp_str(b, &i, n)
        if kn <= 0:
            return NULL
        kp = p + i
        i += kn
        for q in range(j):
            if name_n[q] == kn and memcmp(names[q], kp, kn) == 0:
                return NULL             # a duplicate: the last value wins in Python
        names[j] = kp
        name_n[j] = kn
        o[0] = 44
        o = _json_str(o + 1, kp, kn, False)
        if o == NULL:
            return NULL
        o[0] = 58
        o += 1
        if i >= n:
            return NULL
        c = b[i]
        if kn == 15 and memcmp(kp, b'datacontenttype', 15) == 0:
            ln = _mp_str(b, &i, n)
            if ln < 0:
                return NULL             # not a string: what to_json makes of it
            ct[0] = p + i
            ctn[0] = ln
            o = _json_str(o, p + i, ln, False)
            if o == NULL:
                return NULL
            i += ln
            continue
        if 0xa0 <= c <= 0xbf or 0xd9 <= c <= 0xdb:
            ln = _mp_str(b, &i, n)
            if ln < 0:
                return NULL
            o = _json_str(o, p + i, ln, False)
            if o == NULL:
                return NULL
            i += ln
            continue
        i += 1
        if c <= 0x7f:
            o = _put_int(o, c)
        elif c >= 0xe0:
            o = _put_int(o, <int8_t>c)
        elif c == 0xc2:
            o = _put_lit(o, b'false', 5)
        elif c == 0xc3:
            o = _put_lit(o, b'true', 4)
        elif 0xcc <= c <= 0xcf:          # uint 8, 16, 32, 64
            ln = 1 << (c - 0xcc)
            if i + ln > n:
                return NULL
            u = 0
            for q in range(ln):
                u = (u << 8) | b[i + q]
            if u > <uint64_t>0x7fffffffffffffff:
                return NULL
            o = _put_int(o, <int64_t>u)
            i += ln
        elif 0xd0 <= c <= 0xd3:          # int 8, 16, 32, 64
            ln = 1 << (c - 0xd0)
            if i + ln > n:
                return NULL
            u = 0
            for q in range(ln):
                u = (u << 8) | b[i + q]
            if ln < 8 and u >> (8 * ln - 1):
                u |= ~((<uint64_t>1 << (8 * ln)) - 1)     # sign-extend
            o = _put_int(o, <int64_t>u)
            i += ln
        elif 0xc4 <= c <= 0xc6:          # bin 8, 16, 32: Base64
            ln = _mp_size(b, &i, n, 1 << (c - 0xc4))
            if ln < 0 or ln > n - i:
                return NULL
            o[0] = 34
            o = _put_b64(o + 1, p + i, ln)
            o[0] = 34
            o += 1
            i += ln
        else:
            return NULL
    if i != n:
        return NULL
    return o


# -- the content type and the data -------------------------------------------------


cdef inline bint _ieq(const char *p, Py_ssize_t n, const char *lower, Py_ssize_t ln) noexcept:
    """Whether ASCII ``p[:n]`` equals ``lower`` (lower case) ignoring case."""
    cdef Py_ssize_t i
    cdef char c
    if n != ln:
        return False
    for i in range(n):
        c = p[i]
        if 65 <= c <= 90:
            c += 32
        if c != lower[i]:
            return False
    return True


cdef inline bint _iends(const char *p, Py_ssize_t n, const char *lower, Py_ssize_t ln) noexcept:
    return n >= ln and _ieq(p + n - ln, ln, lower, ln)


cdef inline void _strip(const char *p, Py_ssize_t *a, Py_ssize_t *b) noexcept:
    while a[0] < b[0] and p[a[0]] == 32:
        a[0] += 1
    while b[0] > a[0] and p[b[0] - 1] == 32:
        b[0] -= 1


cdef int _data_kind(const char *p, Py_ssize_t n) noexcept:
    """What the content type ``p[:n]`` makes of the data, as
    fastflow.event._members reads it (``_media_type``, ``_is_json``,
    ``_is_text``, ``_codec``); DK_SLOW for what C leaves to it: a byte
    outside printable ASCII, a charset other than UTF-8."""
    cdef Py_ssize_t i, a, b, e, slash, semi
    cdef Py_ssize_t csa = 0, csb = 0
    cdef bint charset = False, text
    for i in range(n):
        if <uint8_t>p[i] < 0x20 or <uint8_t>p[i] >= 0x7f:
            return DK_SLOW
    semi = n
    for i in range(n):
        if p[i] == 59:
            semi = i
            break
    a = 0
    b = semi
    _strip(p, &a, &b)
    slash = -1
    for i in range(a, b):
        if p[i] == 47:
            slash = i
            break
    if slash >= 0 and (_ieq(p + slash + 1, b - slash - 1, b'json', 4)
                       or _iends(p + slash + 1, b - slash - 1, b'+json', 5)):
        return DK_JSON
    if slash >= 0:
        text = (_ieq(p + a, slash - a, b'text', 4) or _ieq(p + slash + 1, b - slash - 1, b'xml', 3)
                or _iends(p + slash + 1, b - slash - 1, b'+xml', 4))
    else:
        text = _ieq(p + a, b - a, b'text', 4)
    # the parameters: name=value, separated by ';' (the last one of a name wins)
    i = semi
    while i < n:
        a = i + 1
        e = a
        while e < n and p[e] != 59:
            e += 1
        i = e
        b = a
        while b < e and p[b] != 61:
            b += 1
        if b == e:
            continue                    # no '=': not a parameter
        slash = b + 1                   # (the value's start)
        _strip(p, &a, &b)
        if not _ieq(p + a, b - a, b'charset', 7):
            continue
        charset = True
        csa = slash
        csb = e
        _strip(p, &csa, &csb)
        if csb - csa >= 2 and p[csa] == 34 and p[csb - 1] == 34:
            csa += 1
            csb -= 1
    if not (text or charset):
        return DK_BINARY
    if not charset or csb == csa or _ieq(p + csa, csb - csa, b'utf-8', 5) \
            or _ieq(p + csa, csb - csa, b'utf8', 4):
        return DK_TEXT
    return DK_SLOW


cdef inline bint _json_ws(uint8_t c) noexcept:
    return c == 32 or c == 10 or c == 13 or c == 9


cdef Py_ssize_t _json_string(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The end of the JSON string that opens at ``s[i]`` ('"'), or -1 if it
    is not one this side of doubt (bad escapes, control characters, lone
    surrogate escapes, bytes that are not UTF-8)."""
    cdef uint8_t c
    cdef uint32_t v, w
    cdef int k
    i += 1
    while i < n:
        c = s[i]
        if c == 34:
            return i + 1
        if c == 92:
            if i + 1 >= n:
                return -1
            c = s[i + 1]
            if c == 117:
                if not _hex4(s, i + 2, n, &v):
                    return -1
                if 0xD800 <= v <= 0xDBFF:
                    if i + 7 >= n or s[i + 6] != 92 or s[i + 7] != 117 \
                            or not _hex4(s, i + 8, n, &w) or not 0xDC00 <= w <= 0xDFFF:
                        return -1
                    i += 12
                elif 0xDC00 <= v <= 0xDFFF:
                    return -1
                else:
                    i += 6
            elif c == 34 or c == 92 or c == 47 or c == 98 or c == 102 or c == 110 \
                    or c == 114 or c == 116:
                i += 2
            else:
                return -1
        elif c < 0x20:
            return -1
        elif c < 0x80:
            i += 1
        else:
            k = _utf8_seq(s + i, n - i)
            if k <= 0:
                return -1
            i += k
    return -1


cdef inline bint _hex4(const uint8_t *s, Py_ssize_t i, Py_ssize_t n, uint32_t *v) noexcept:
    cdef uint32_t r = 0
    cdef uint8_t c
    cdef Py_ssize_t k
    if i + 4 > n:
        return False
    for k in range(i, i + 4):
        c = s[k]
        if 48 <= c <= 57:
            r = (r << 4) | (c - 48)
        elif 97 <= c <= 102:
            r = (r << 4) | (c - 87)
        elif 65 <= c <= 70:
            r = (r << 4) | (c - 55)
        else:
            return False
    v[0] = r
    return True


cdef Py_ssize_t _json_number(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """The end of the JSON number at ``s[i]``, or -1."""
    cdef Py_ssize_t k
    if s[i] == 45:
        i += 1
    if i >= n:
        return -1
    if s[i] == 48:
        i += 1
    elif 49 <= s[i] <= 57:
        while i < n and 48 <= s[i] <= 57:
            i += 1
    else:
        return -1
    if i < n and s[i] == 46:
        i += 1
        k = i
        while i < n and 48 <= s[i] <= 57:
            i += 1
        if i == k:
            return -1
    if i < n and (s[i] == 101 or s[i] == 69):
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            i += 1
        k = i
        while i < n and 48 <= s[i] <= 57:
            i += 1
        if i == k:
            return -1
    return i


cdef Py_ssize_t _json_key(const uint8_t *s, Py_ssize_t i, Py_ssize_t n) noexcept:
    """A member name and its ':' at ``s[i]``: where its value starts, or -1."""
    if i >= n or s[i] != 34:
        return -1
    i = _json_string(s, i, n)
    if i < 0:
        return -1
    while i < n and _json_ws(s[i]):
        i += 1
    if i >= n or s[i] != 58:
        return -1
    i += 1
    while i < n and _json_ws(s[i]):
        i += 1
    return i


cdef bint _json_doc(const char *data, Py_ssize_t n, Py_ssize_t *start,
                    Py_ssize_t *end) noexcept:
    """Whether ``data[:n]`` is one JSON document (RFC 8259, UTF-8, nested
    at most WEB_JSON_DEPTH deep) that fastflow.event._json_text takes as it
    is; then ``data[start:end]`` is it without the whitespace around.
    False also where C is not sure (the Python encoder decides)."""
    cdef const uint8_t *s = <const uint8_t *>data
    cdef uint8_t stack[WEB_JSON_DEPTH]  # 123: in an object, 91: in an array
    cdef int depth = 0
    cdef Py_ssize_t i = 0, k
    cdef uint8_t c
    cdef bint closed
    while i < n and _json_ws(s[i]):
        i += 1
    start[0] = i
    while True:
        # a value at s[i]
        if i >= n:
            return False
        c = s[i]
        closed = True
        if c == 123 or c == 91:
            if depth == WEB_JSON_DEPTH:
                return False
            stack[depth] = c
            depth += 1
            i += 1
            while i < n and _json_ws(s[i]):
                i += 1
            if i < n and s[i] == c + 2:     # '}' or ']': empty
                depth -= 1
                i += 1
            else:
                closed = False
                if c == 123:
                    i = _json_key(s, i, n)
                    if i < 0:
                        return False
        elif c == 34:
            i = _json_string(s, i, n)
        elif c == 45 or 48 <= c <= 57:
            i = _json_number(s, i, n)
        elif c == 116 and n - i >= 4 and memcmp(s + i, b'true', 4) == 0:
            i += 4
        elif c == 102 and n - i >= 5 and memcmp(s + i, b'false', 5) == 0:
            i += 5
        elif c == 110 and n - i >= 4 and memcmp(s + i, b'null', 4) == 0:
            i += 4
        else:
            return False
        if i < 0:
            return False
        if not closed:
            continue                    # the first value of a container
        # after a value: close containers, or a ',' and the next value
        while True:
            k = i
            while i < n and _json_ws(s[i]):
                i += 1
            if depth == 0:
                if i != n:
                    return False
                end[0] = k
                return True
            if i >= n:
                return False
            c = s[i]
            if c == stack[depth - 1] + 2:
                depth -= 1
                i += 1
                continue
            if c != 44:
                return False
            i += 1
            while i < n and _json_ws(s[i]):
                i += 1
            if stack[depth - 1] == 123:
                i = _json_key(s, i, n)
                if i < 0:
                    return False
            break


# -- the JSON of a message, once per message ---------------------------------------


# [lineage]: what every web target with that flag writes for the last message
cdef WebJson _web_json[2]


cdef int _wj_room(WebJson *w, Py_ssize_t size) except -1:
    """``w.buf`` holds at least ``size`` bytes."""
    cdef char *nb
    cdef Py_ssize_t cap
    if size <= w.cap:
        return 0
    cap = w.cap * 2 if w.cap else 512
    while cap < size:
        cap *= 2
    nb = <char *>realloc(w.buf, cap)
    if nb == NULL:
        raise MemoryError()
    w.buf = nb
    w.cap = cap
    return 0


cdef int _wj_fill(WebJson *w, WireMsg *m, bint lineage, bint strict=False) except -1:
    """Make ``w`` the CloudEvents JSON of ``m``: in C, or by ``_event_json``.
    ``strict``: refuse what ``to_json`` refuses (EventError) rather than
    write it as a web subscriber gets it (lone surrogates escaped)."""
    w.gen = 0                           # (until it is complete)
    if w.cap > WEB_JSON_KEEP and m.rec_n + m.data_n < WEB_JSON_KEEP // 8:
        free(w.buf)                     # do not keep a large event's memory
        w.buf = NULL
        w.cap = 0
    w.breaks = False
    if not _wj_make(w, m, lineage, strict):
        _wj_slow(w, m, lineage, strict)
        w.breaks = memchr(w.buf, 10, w.n) != NULL or memchr(w.buf, 13, w.n) != NULL
    w.gen = m.gen
    return 0


cdef bint _signed(const char *rest, Py_ssize_t n) noexcept:
    """Whether attribute block ``rest[:n]`` (msgpack) may hold ``dssematerial``
    (a value holding those bytes too: the caller lets Python decide)."""
    cdef const char *q = rest
    cdef const char *end = rest + n
    while end - q >= 13:
        q = <const char *>memchr(q, 0xac, end - q - 12)
        if q == NULL:
            return False
        if memcmp(q + 1, b'dssematerial', 12) == 0:
            return True
        q += 1
    return False


cdef int _wj_make(WebJson *w, WireMsg *m, bint lineage, bint strict) except -1:
    """The JSON of ``m`` written in C into ``w``; 0 where the Python encoder
    decides (``strict``: a lone surrogate too)."""
    cdef bint sur = not strict
    cdef const char *rec = m.rec
    cdef Py_ssize_t off = _ev_data_offset(m.rec, m.rec_n)
    cdef uint8_t flags = <uint8_t>rec[1]
    cdef Py_ssize_t idn = EV_GENID if flags & EVF_GENID else _rd16(rec + 4)
    cdef Py_ssize_t srcn = _rd16(rec + 6), typn = _rd16(rec + 8), trn = _rd16(rec + 10)
    cdef Py_ssize_t restn = _rd32(rec + 12), dn, a, b, at
    cdef const char *p = rec + EV_HEADER
    cdef const char *d
    cdef const char *ct = NULL
    cdef Py_ssize_t ctn = 0
    cdef char *o
    cdef char *o2
    cdef int kind
    if m.data != NULL:
        d = m.data
        dn = m.data_n
    else:
        d = rec + off
        dn = m.rec_n - off
    _wj_room(w, 160 + 6 * (off + m.subject_n))
    o = _put_lit(w.buf, b'{"specversion":"1.0","id":', 26)
    if flags & EVF_GENID:
        o[0] = 34
        o = _put_hex64(o + 1, _rd64(p))
        o = _put_hex64(o, _rd64(p + 8))
        o[0] = 34
        o += 1
    else:
        o = _json_str(o, p, idn, sur)
        if o == NULL:
            return 0
    p += idn
    o = _json_str(_put_lit(o, b',"source":', 10), p, srcn, sur)
    if o == NULL:
        return 0
    p += srcn
    o = _put_lit(o, b',"type":', 8)
    if flags & EVF_TYPE_SUBJECT:
        o = _json_str(o, m.subject, m.subject_n, sur)
    else:
        o = _json_str(o, p, typn, sur)
    if o == NULL:
        return 0
    p += typn
    if restn:
        o = _json_rest(o, p + trn, restn, &ct, &ctn)
        if o == NULL:
            return 0
    if lineage:
        if _rd16(rec + 2):
            o = _put_int(_put_lit(o, b',"ffhops":', 10), _rd16(rec + 2))
        if trn:
            o = _json_str(_put_lit(o, b',"fftrace":', 11), p, trn, sur)
            if o == NULL:
                return 0
    if dn:
        kind = DK_BINARY if ct == NULL else _data_kind(ct, ctn)
        if kind == DK_SLOW:
            return 0
        if kind == DK_JSON:
            if not _json_doc(d, dn, &a, &b):
                return 0
            if (a != 0 or b != dn) and restn and _signed(p + trn, restn):
                return 0        # a signed event's data with whitespace around it: as
                                # data_base64 (its signature covers those bytes), by Python
            at = o - w.buf
            _wj_room(w, at + 16 + (b - a))
            o = _put_lit(_put_lit(w.buf + at, b',"data":', 8), d + a, b - a)
            # (raw line breaks in a JSON text are whitespace between its tokens)
            w.breaks = memchr(d + a, 10, b - a) != NULL or memchr(d + a, 13, b - a) != NULL
        else:
            o2 = NULL
            if kind == DK_TEXT:
                at = o - w.buf
                _wj_room(w, at + 16 + 6 * dn)
                o = w.buf + at
                o2 = _json_str(_put_lit(o, b',"data":', 8), d, dn, False)
            if o2 != NULL:
                o = o2
            else:                       # binary, or text that is not UTF-8
                at = o - w.buf
                _wj_room(w, at + 24 + 4 * ((dn + 2) // 3))
                o = _put_lit(w.buf + at, b',"data_base64":"', 16)
                o = _put_b64(o, d, dn)
                o[0] = 34
                o += 1
    o[0] = 125
    w.n = o + 1 - w.buf
    return 1


cdef inline char *_put_hex64(char *o, uint64_t v) noexcept:
    """``v`` as 16 lower-case hex digits (the halves of a generated id)."""
    cdef int i
    for i in range(8):
        memcpy(o + 2 * i, &_HEX2[2 * ((v >> (56 - 8 * i)) & 0xff)], 2)
    return o + 16


cdef int _wj_slow(WebJson *w, WireMsg *m, bint lineage, bint strict) except -1:
    """The JSON of ``m`` by the Python encoder, copied into ``w``
    (``strict``: ``to_json`` of ``m.event`` as it is, which may refuse it)."""
    cdef Event ev
    cdef bytes out
    global _cloudevents
    if strict:
        if _cloudevents is None:
            from fastflow import event as ce
            _cloudevents = ce
        out = _cloudevents.to_json(<object>m.event, lineage)
    elif m.event != NULL:
        # the event as published: without this flow's lineage entry (which
        # only the in-process deliveries carry)
        ev = Event.__new__(Event)
        _ev_copy(ev, <Event>m.event)
        ev._origin = None
    else:
        ev = _ev_decode(<object>m.subject_obj, m.rec, m.rec_n, m.seq, <object>m.stream, m.ts,
                        None)
    if not strict:
        out = _event_json(ev, lineage)
    _wj_room(w, len(out))
    memcpy(w.buf, PyBytes_AS_STRING(out), len(out))
    w.n = len(out)
    return 0


cdef inline int _wj_get(WireMsg *m, bint lineage, WebJson **out) except -1:
    cdef WebJson *w = &_web_json[1 if lineage else 0]
    if w.gen != m.gen or m.gen == 0:
        _wj_fill(w, m, lineage)
    out[0] = w
    return 0


# -- the Python encoder: what C leaves to fastflow.event ----------------------------

cdef object _cloudevents = None         # fastflow.event, imported on first use (it
                                        # imports the engine, which imports this core)


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


# -- a batch of events -------------------------------------------------------------


def json_batch(events, bint lineage=True):
    """``events`` (a sequence of Events) in the JSON batch format
    (``application/cloudevents-batch+json``): the bytes of
    ``fastflow.event.to_json_batch(events, lineage)``, each event written
    by the web targets' JSON writer.  Raises ``EventError`` where
    ``to_json`` does (no lone surrogate is escaped here), ``TypeError``
    for an item that is not an Event."""
    cdef list evs = events if type(events) is list else list(events)
    cdef WebJson w
    cdef WireMsg m
    cdef Event ev, rev
    cdef object subj = None
    cdef char *out = NULL
    cdef char *rec = NULL
    cdef char *nb
    cdef Py_ssize_t on = 1, ocap = 0, rcap = 0, rn, need
    memset(&w, 0, sizeof(w))
    memset(&m, 0, sizeof(m))
    try:
        ocap = 64 + 512 * len(evs)
        out = <char *>malloc(ocap)
        if out == NULL:
            raise MemoryError()
        out[0] = 91                     # [
        for ob in evs:
            if not isinstance(ob, Event):
                raise TypeError('json_batch: an Event expected, got {}'.format(
                    type(ob).__name__))
            ev = <Event>ob
            rev = ev
            if lineage and ev._origin is not None:
                # an in-process delivery: its lineage entry joins fftrace;
                # ffhops 0 is written only by to_json (the record leaves it out)
                rev = None
                if ev.hops:
                    rev = Event.__new__(Event)
                    _ev_copy(rev, ev)
                    rev._trace = ev.trace
                    rev._origin = None
            m.rec = NULL
            if rev is not None:
                try:
                    rn = _ev_size(rev, len(<bytes>rev._data))
                    if rn > rcap:
                        nb = <char *>realloc(rec, rn)
                        if nb == NULL:
                            raise MemoryError()
                        rec = nb
                        rcap = rn
                    _ev_write(rev, rec, rev._data, rn)
                    m.rec = rec
                    m.rec_n = rn
                except (EventError, ValueError):
                    m.rec = NULL        # no record (an extension with a lone
                                        # surrogate, an id past the record's
                                        # limit, ...): to_json decides
            m.subject = NULL
            m.subject_n = 0
            if ev._type is None and ev.routing_subject is not None:
                subj = ev.routing_subject.encode('utf-8', 'surrogatepass')
                m.subject = PyBytes_AS_STRING(subj)
                m.subject_n = len(<bytes>subj)
            m.gen = _next_wire_gen()
            m.subject_obj = <PyObject *>ev.routing_subject
            m.event = <PyObject *>ev
            m.origin = NULL
            m.stream = <PyObject *>ev.stream
            m.seq = ev.seq
            m.ts = ev.ts
            if m.rec == NULL:
                _wj_slow(&w, &m, lineage, True)
            else:
                _wj_fill(&w, &m, lineage, True)
            need = on + w.n + 2
            if need > ocap:
                while ocap < need:
                    ocap *= 2
                nb = <char *>realloc(out, ocap)
                if nb == NULL:
                    raise MemoryError()
                out = nb
            if on > 1:
                out[on] = 44            # ,
                on += 1
            memcpy(out + on, w.buf, w.n)
            on += w.n
        out[on] = 93                    # ]
        return PyBytes_FromStringAndSize(out, on + 1)
    finally:
        free(w.buf)
        free(rec)
        free(out)


# -- the targets -------------------------------------------------------------------


cdef inline Py_ssize_t _ws_head_size(Py_ssize_t n) noexcept:
    return 2 if n <= 125 else (4 if n <= 65535 else 10)


cdef inline char *_ws_head(char *o, uint8_t b0, Py_ssize_t n) noexcept:
    """A server -> client frame head (unmasked): ``b0`` (FIN | opcode) and
    the payload length in 7, 7+16 or 7+64 bits."""
    cdef int i
    o[0] = <char>b0
    if n <= 125:
        o[1] = <char>n
        return o + 2
    if n <= 65535:
        o[1] = <char>126
        o[2] = <char>(n >> 8)
        o[3] = <char>(n & 0xff)
        return o + 4
    o[1] = <char>127
    for i in range(8):
        o[2 + i] = <char>((<uint64_t>n >> (56 - 8 * i)) & 0xff)
    return o + 10


def ws_frame_head(int opcode, Py_ssize_t length, bint fin=True):
    """The head of a server -> client WebSocket frame (RFC 6455: unmasked)
    of ``opcode`` with a payload of ``length`` bytes: the bytes that go
    before the payload.  Control frames (close 8, ping 9, pong 10) carry at
    most 125 bytes and are never fragmented."""
    cdef char head[10]
    cdef char *e
    if opcode not in (0, 1, 2, 8, 9, 10):
        raise ValueError('WebSocket opcode {} is not a defined one (0, 1, 2, 8, 9, 10)'.format(
            opcode))
    if length < 0:
        raise ValueError('WebSocket payload length must be >= 0, got {}'.format(length))
    if opcode >= 8 and (length > WS_MAX_CONTROL or not fin):
        raise ValueError('a WebSocket control frame (opcode {}) carries at most {} bytes and '
                         'is never fragmented, got {} bytes, fin={}'.format(
                             opcode, WS_MAX_CONTROL, length, bool(fin)))
    e = _ws_head(head, (WS_FIN if fin else 0) | opcode, length)
    return PyBytes_FromStringAndSize(head, e - head)


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class WsJsonTarget(WireTarget):
    """A WebSocket subscription of the CloudEvents WebSocket binding
    (subprotocol ``cloudevents.json``): each event one text frame (FIN,
    unmasked) carrying its JSON (fastflow.event.to_json; ``lineage`` False
    leaves out ffhops and fftrace)."""

    def __init__(self, OutBuf outbuf not None, bint echo=True, bint lineage=True):
        WireTarget.__init__(self, outbuf, echo)
        self.lineage = lineage

    cdef int _write(self, WireMsg *m) except -1:
        cdef WebJson *w
        cdef OutBuf ob = self.outbuf
        cdef bint was_empty = ob.n == 0
        cdef Py_ssize_t size
        cdef char *o
        _wj_get(m, self.lineage, &w)
        size = _ws_head_size(w.n) + w.n
        o = ob._reserve(size)
        if o == NULL:
            return 0
        o = _ws_head(o, WS_FIN | WS_OP_TEXT, w.n)
        memcpy(o, w.buf, w.n)
        ob._wrote(size, was_empty, True)
        return 1


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class SseTarget(WireTarget):
    """A Server-Sent Events subscription: each event one message, ``id:
    <seq>`` when it was stored in ``stream`` (None: no ids), then ``data:
    <JSON>`` (fastflow.event.to_json; no ``event:`` field, so that
    EventSource.onmessage fires).  JSON data spliced in with line breaks in
    its whitespace goes as one ``data:`` line per line (a client joins them
    with LF)."""

    def __init__(self, OutBuf outbuf not None, str stream=None, bint echo=True,
                 bint lineage=True):
        WireTarget.__init__(self, outbuf, echo)
        self.stream = stream
        self.lineage = lineage

    cdef int _write(self, WireMsg *m) except -1:
        cdef WebJson *w
        cdef OutBuf ob = self.outbuf
        cdef bint was_empty = ob.n == 0
        cdef bint sid = False
        cdef Py_ssize_t size, i, k
        cdef char *o0
        cdef char *o
        cdef const char *j
        _wj_get(m, self.lineage, &w)
        if self.stream is not None and m.stream != NULL and <object>m.stream is not None:
            sid = <object>m.stream is self.stream or <object>m.stream == self.stream
        size = (25 if sid else 0) + 6 + w.n + 2
        if w.breaks:
            size += 6 * w.n             # (a bound: at most one "\ndata: " per byte)
        o0 = ob._reserve(size)
        if o0 == NULL:
            return 0
        o = o0
        if sid:
            o = _put_int(_put_lit(o, b'id: ', 4), m.seq)
            o[0] = 10
            o += 1
        o = _put_lit(o, b'data: ', 6)
        if not w.breaks:
            o = _put_lit(o, w.buf, w.n)
        else:
            j = w.buf
            i = 0
            while i < w.n:
                k = i
                while k < w.n and j[k] != 10 and j[k] != 13:
                    k += 1
                o = _put_lit(o, j + i, k - i)
                if k == w.n:
                    break
                i = k + (2 if j[k] == 13 and k + 1 < w.n and j[k + 1] == 10 else 1)
                o = _put_lit(o, b'\ndata: ', 7)
        o[0] = 10
        o[1] = 10
        o += 2
        ob._wrote(o - o0, was_empty, True)
        return 1
