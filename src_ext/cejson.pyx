# Decoding CloudEvents JSON in C (included by core.pyx after event.pyx): the
# JSON event format (structured mode, ``application/cloudevents+json``) and
# the batch format (``application/cloudevents-batch+json``), into Events
# (decode_event, decode_batch: what fastflow.event.from_json and
# from_json_batch run) or into event records the router publishes without
# making an Event (_JsonRecords, for Router.publish_json).
#
# The semantics are the reference's, fastflow.event._from_json_py and
# _from_json_batch_py (its module docstring says what they are), exactly.
# An event object is read in two steps, in C, without Python objects:
#   1. _cj_members cuts it into members (key, value text, kind) and checks
#      the JSON strictly (RFC 8259: strings UTF-8 without control
#      characters, escapes and numbers as the grammar has them, a member
#      value nested at most CJ_MAX_DEPTH deep, walked without recursion);
#   2. _cj_attrs reads the members as the reference does: required
#      attributes, null members unset, data / data_base64 by
#      datacontenttype, extension names and values, the time.
# Then _cj_event makes the Event, or _cj_record_write the record.
#
# What the C path does not decide itself goes to the reference, so that the
# result, or the error (its type and its message), is the reference's own:
# step 1 failing (malformed JSON, a value nested too deep) hands the whole
# body over; step 2 meeting what it does not take (an error of any kind, a
# key with escapes, a duplicate key, a number that is no 32-bit integer, a
# charset other than UTF-8, more than CJ_MAX_MEMBERS members, ...) hands
# over that event's object alone, and the whole body if the reference
# refuses the object (for the error, with its batch index, as the reference
# words it).  The reference is imported when first needed: fastflow.event
# imports the core.

from libc.string cimport memchr


cdef enum CjKind:                   # kinds of member values
    CJK_STRING = 1
    CJK_NUMBER = 2
    CJK_TRUE = 3
    CJK_FALSE = 4
    CJK_NULL = 5
    CJK_OBJECT = 6
    CJK_ARRAY = 7

cdef enum CjAttr:                   # what a member is
    CJA_EXT = 0                     # an extension (or a key that is no attribute name)
    CJA_SPECVERSION = 1
    CJA_ID = 2
    CJA_SOURCE = 3
    CJA_TYPE = 4
    CJA_TIME = 5
    CJA_SUBJECT = 6
    CJA_DATACONTENTTYPE = 7
    CJA_DATASCHEMA = 8
    CJA_HOPS = 9
    CJA_TRACE = 10
    CJA_DATA = 11
    CJA_DATA_BASE64 = 12

cdef enum CjStatus:
    CJ_OK = 0                       # decided in C
    CJ_OTHER = 1                    # the reference decides this event (its object is well formed)
    CJ_BAD = 2                      # the reference decides the whole body

cdef enum CjData:                   # where an event's data comes from
    CJD_NONE = 0                    # no data
    CJD_JSON = 1                    # the data member's JSON text, as received
    CJD_STRING = 2                  # a string's characters (UTF-8)
    CJD_BASE64 = 3                  # data_base64, decoded

cdef enum:
    CJ_SPARE_MAX = 1048576          # bytes of scratch kept between calls
    CJ_INT32_MIN = -2147483648
    CJ_INT32_MAX = 2147483647

# byte classes in a JSON string: 0 plain ASCII, 1 '"', 2 '\', 3 a control
# character, 4 the start of a UTF-8 sequence (or a byte that starts none)
cdef uint8_t _CJ_STR[256]
cdef uint8_t _CJ_HEX[256]           # hex digit values (255: no hex digit)
cdef uint8_t _CJ_B64[256]           # Base64 alphabet values (255: not in it)
cdef uint8_t _CJ_WS[256]            # JSON whitespace: space, tab, LF, CR


cdef _cj_init():
    cdef int c
    for c in range(256):
        _CJ_STR[c] = 3 if c < 0x20 else (0 if c < 0x80 else 4)
        _CJ_HEX[c] = 255
        _CJ_B64[c] = 255
        _CJ_WS[c] = 0
    _CJ_STR[0x22] = 1
    _CJ_STR[0x5c] = 2
    for c in range(10):
        _CJ_HEX[0x30 + c] = c
        _CJ_B64[0x30 + c] = 52 + c
    for c in range(6):
        _CJ_HEX[0x61 + c] = 10 + c
        _CJ_HEX[0x41 + c] = 10 + c
    for c in range(26):
        _CJ_B64[0x41 + c] = c
        _CJ_B64[0x61 + c] = 26 + c
    _CJ_B64[0x2b] = 62
    _CJ_B64[0x2f] = 63
    for c in (0x20, 0x09, 0x0a, 0x0d):
        _CJ_WS[c] = 1


_cj_init()


# -- step 1: the JSON grammar -------------------------------------------------------------

cdef inline const uint8_t *_cj_ws(const uint8_t *p, const uint8_t *end) noexcept:
    while p < end and _CJ_WS[p[0]]:
        p += 1
    return p


cdef inline bint _cj_digit(uint8_t c) noexcept:
    return <uint8_t>(c - 0x30) < 10


cdef inline Py_ssize_t _cj_utf8(const uint8_t *p, const uint8_t *end) noexcept:
    """Bytes of the UTF-8 sequence at ``p`` (its first byte >= 0x80), 0 if it
    is not valid by the rules of Python's strict decoder: no overlong form,
    no surrogate, nothing past U+10FFFF, nothing cut short."""
    cdef uint8_t c = p[0]
    cdef Py_ssize_t left = end - p
    if c < 0xc2:
        return 0
    if c < 0xe0:
        if left < 2 or (p[1] & 0xc0) != 0x80:
            return 0
        return 2
    if c < 0xf0:
        if left < 3 or (p[1] & 0xc0) != 0x80 or (p[2] & 0xc0) != 0x80:
            return 0
        if (c == 0xe0 and p[1] < 0xa0) or (c == 0xed and p[1] >= 0xa0):
            return 0
        return 3
    if c < 0xf5:
        if (left < 4 or (p[1] & 0xc0) != 0x80 or (p[2] & 0xc0) != 0x80
                or (p[3] & 0xc0) != 0x80):
            return 0
        if (c == 0xf0 and p[1] < 0x90) or (c == 0xf4 and p[1] >= 0x90):
            return 0
        return 4
    return 0


cdef inline int32_t _cj_hex4(const uint8_t *p) noexcept:
    """The value of 4 hex digits, -1 if one is not."""
    cdef uint8_t a = _CJ_HEX[p[0]], b = _CJ_HEX[p[1]], c = _CJ_HEX[p[2]], d = _CJ_HEX[p[3]]
    if (a | b | c | d) & 0xf0:
        return -1
    return (<int32_t>a << 12) | (<int32_t>b << 8) | (<int32_t>c << 4) | d


cdef inline uint64_t _cj_special8(const uint8_t *p) noexcept:
    """The high bit of each of the 8 bytes at ``p`` that ends a run of
    plain ASCII string characters ('"', backslash, a control character, a
    byte >= 0x80), in one word; the lowest one set is exact (the word is
    read little-endian, as the records are)."""
    cdef uint64_t x, q, b
    memcpy(&x, p, 8)
    q = x ^ 0x2222222222222222ULL
    b = x ^ 0x5c5c5c5c5c5c5c5cULL
    return (((q - 0x0101010101010101ULL) & ~q)
            | ((b - 0x0101010101010101ULL) & ~b)
            | ((x - 0x2020202020202020ULL) & ~x)
            | x) & 0x8080808080808080ULL


cdef inline const uint8_t *_cj_plain(const uint8_t *p, const uint8_t *end) noexcept:
    """The first byte from ``p`` on that is no plain ASCII string character
    (``end`` if there is none)."""
    cdef uint64_t m
    while end - p >= 8:
        m = _cj_special8(p)
        if m:
            return p + (ff_ctz64(m) >> 3)
        p += 8
    while p < end and _CJ_STR[p[0]] == 0:
        p += 1
    return p


cdef inline const uint8_t *_cj_string(const uint8_t *p, const uint8_t *end,
                                      uint8_t *esc) noexcept:
    """The end of the JSON string whose characters start at ``p`` (after its
    opening quote): past its closing quote; NULL if it is no valid string
    (a control character, a bad escape, a lone surrogate escape, bytes that
    are not UTF-8, no closing quote).  ``esc[0]`` is set to 1 if it has
    escapes.  (Inline: the run of plain characters and the quote; the rest
    in _cj_string_rest.)"""
    p = _cj_plain(p, end)
    if p < end and p[0] == b'"':
        return p + 1
    return _cj_string_rest(p, end, esc)


cdef const uint8_t *_cj_string_rest(const uint8_t *p, const uint8_t *end,
                                    uint8_t *esc) noexcept:
    """_cj_string from ``p``, a byte that is no plain ASCII character."""
    cdef uint8_t c
    cdef int32_t cp
    cdef Py_ssize_t k
    while True:
        if p >= end:
            return NULL
        c = _CJ_STR[p[0]]
        if c == 1:
            return p + 1
        if c == 2:
            esc[0] = 1
            if end - p < 2:
                return NULL
            c = p[1]
            if c == b'u':
                if end - p < 6:
                    return NULL
                cp = _cj_hex4(p + 2)
                p += 6
                if cp < 0 or (cp >= 0xdc00 and cp <= 0xdfff):
                    return NULL
                if cp >= 0xd800 and cp <= 0xdbff:
                    # a high surrogate: a low one must follow
                    if end - p < 6 or p[0] != b'\\' or p[1] != b'u':
                        return NULL
                    cp = _cj_hex4(p + 2)
                    if cp < 0xdc00 or cp > 0xdfff:
                        return NULL
                    p += 6
            elif (c == b'"' or c == b'\\' or c == b'/' or c == b'b' or c == b'f' or c == b'n'
                    or c == b'r' or c == b't'):
                p += 2
            else:
                return NULL
        elif c == 3:
            return NULL
        else:
            k = _cj_utf8(p, end)
            if k == 0:
                return NULL
            p += k
        p = _cj_plain(p, end)


cdef const uint8_t *_cj_number(const uint8_t *p, const uint8_t *end) noexcept:
    """The end of the JSON number at ``p``, NULL if there is none."""
    if p < end and p[0] == b'-':
        p += 1
    if p >= end or not _cj_digit(p[0]):
        return NULL
    if p[0] == b'0':
        p += 1
    else:
        while p < end and _cj_digit(p[0]):
            p += 1
    if p < end and p[0] == b'.':
        p += 1
        if p >= end or not _cj_digit(p[0]):
            return NULL
        while p < end and _cj_digit(p[0]):
            p += 1
    if p < end and (p[0] == b'e' or p[0] == b'E'):
        p += 1
        if p < end and (p[0] == b'+' or p[0] == b'-'):
            p += 1
        if p >= end or not _cj_digit(p[0]):
            return NULL
        while p < end and _cj_digit(p[0]):
            p += 1
    return p


cdef inline const uint8_t *_cj_word(const uint8_t *p, const uint8_t *end, const char *word,
                                    Py_ssize_t n) noexcept:
    if end - p < n or memcmp(p, word, n) != 0:
        return NULL
    return p + n


cdef inline const uint8_t *_cj_key(const uint8_t *p, const uint8_t *end) noexcept:
    """A key, the colon and the whitespace around it, from ``p`` (whitespace
    skipped); the value's first byte, NULL if that is not what is there."""
    cdef uint8_t esc = 0
    if p >= end or p[0] != b'"':
        return NULL
    p = _cj_string(p + 1, end, &esc)
    if p == NULL:
        return NULL
    p = _cj_ws(p, end)
    if p >= end or p[0] != b':':
        return NULL
    return _cj_ws(p + 1, end)


cdef const uint8_t *_cj_skip(const uint8_t *p, const uint8_t *end) noexcept:
    """The end of the JSON value at ``p`` (an object or an array, any
    value), checked as strictly as a member value; NULL if it is not
    valid or nests deeper than CJ_MAX_DEPTH.  A loop, not a recursion: a
    bit per open container says which kind it is."""
    cdef uint64_t objs = 0              # bit d: the container at depth d + 1 is an object
    cdef int depth = 0
    cdef uint8_t c, esc = 0
    while True:
        # p: a value's first byte
        if p >= end:
            return NULL
        c = p[0]
        if c == b'{' or c == b'[':
            if depth == CJ_MAX_DEPTH:
                return NULL
            p = _cj_ws(p + 1, end)
            if p >= end:
                return NULL
            if c == b'{':
                objs |= (<uint64_t>1) << depth
                depth += 1
                if p[0] != b'}':
                    p = _cj_key(p, end)
                    if p == NULL:
                        return NULL
                    continue
            else:
                objs &= ~((<uint64_t>1) << depth)
                depth += 1
                if p[0] != b']':
                    continue
            p += 1                      # an empty container
            depth -= 1
        elif c == b'"':
            p = _cj_string(p + 1, end, &esc)
        elif c == b't':
            p = _cj_word(p, end, b'true', 4)
        elif c == b'f':
            p = _cj_word(p, end, b'false', 5)
        elif c == b'n':
            p = _cj_word(p, end, b'null', 4)
        else:
            p = _cj_number(p, end)
        if p == NULL:
            return NULL
        # a value is complete: close containers up to the next value
        while True:
            if depth == 0:
                return p
            p = _cj_ws(p, end)
            if p >= end:
                return NULL
            c = p[0]
            if (objs >> (depth - 1)) & 1:
                if c == b',':
                    p = _cj_key(_cj_ws(p + 1, end), end)
                    if p == NULL:
                        return NULL
                    break
                if c != b'}':
                    return NULL
            else:
                if c == b',':
                    p = _cj_ws(p + 1, end)
                    break
                if c != b']':
                    return NULL
            p += 1
            depth -= 1


cdef int _cj_members(const uint8_t *p, const uint8_t *end, CjEvent *ev,
                     const uint8_t **out) noexcept:
    """Cut the JSON object at ``p`` (its '{') into ``ev.m``; ``out[0]``: past
    its '}'.  CJ_OK, or CJ_BAD: not a well-formed object (or a value nested
    too deep)."""
    cdef const uint8_t *q
    cdef const uint8_t *key
    cdef Py_ssize_t keyn
    cdef uint8_t c, kind, esc, kesc
    cdef CjMember *m
    ev.n = 0
    ev.many = False
    p = _cj_ws(p + 1, end)
    if p >= end:
        return CJ_BAD
    if p[0] == b'}':
        out[0] = p + 1
        return CJ_OK
    while True:
        if p >= end or p[0] != b'"':
            return CJ_BAD
        kesc = 0
        key = p + 1
        q = _cj_string(key, end, &kesc)
        if q == NULL:
            return CJ_BAD
        keyn = q - 1 - key
        p = _cj_ws(q, end)
        if p >= end or p[0] != b':':
            return CJ_BAD
        p = _cj_ws(p + 1, end)
        if p >= end:
            return CJ_BAD
        c = p[0]
        esc = 0
        if c == b'"':
            q = _cj_string(p + 1, end, &esc)
            kind = CJK_STRING
        elif c == b'{' or c == b'[':
            q = _cj_skip(p, end)
            kind = CJK_OBJECT if c == b'{' else CJK_ARRAY
        elif c == b't':
            q = _cj_word(p, end, b'true', 4)
            kind = CJK_TRUE
        elif c == b'f':
            q = _cj_word(p, end, b'false', 5)
            kind = CJK_FALSE
        elif c == b'n':
            q = _cj_word(p, end, b'null', 4)
            kind = CJK_NULL
        else:
            q = _cj_number(p, end)
            kind = CJK_NUMBER
        if q == NULL:
            return CJ_BAD
        if ev.n < CJ_MAX_MEMBERS:
            m = &ev.m[ev.n]
            ev.n += 1
            m.key = key
            m.keyn = keyn
            m.kesc = kesc
            m.v = p
            m.vn = q - p
            m.kind = kind
            m.esc = esc
        else:
            ev.many = True
        p = _cj_ws(q, end)
        if p >= end:
            return CJ_BAD
        if p[0] == b',':
            p = _cj_ws(p + 1, end)
            continue
        if p[0] == b'}':
            out[0] = p + 1
            return CJ_OK
        return CJ_BAD


# -- step 2: the members as the reference reads them ------------------------------------

cdef inline uint8_t *_cj_put_utf8(uint8_t *o, uint32_t cp) noexcept:
    if cp < 0x80:
        o[0] = <uint8_t>cp
        return o + 1
    if cp < 0x800:
        o[0] = <uint8_t>(0xc0 | (cp >> 6))
        o[1] = <uint8_t>(0x80 | (cp & 0x3f))
        return o + 2
    if cp < 0x10000:
        o[0] = <uint8_t>(0xe0 | (cp >> 12))
        o[1] = <uint8_t>(0x80 | ((cp >> 6) & 0x3f))
        o[2] = <uint8_t>(0x80 | (cp & 0x3f))
        return o + 3
    o[0] = <uint8_t>(0xf0 | (cp >> 18))
    o[1] = <uint8_t>(0x80 | ((cp >> 12) & 0x3f))
    o[2] = <uint8_t>(0x80 | ((cp >> 6) & 0x3f))
    o[3] = <uint8_t>(0x80 | (cp & 0x3f))
    return o + 4


cdef void _cj_resolve(CjMember *m, CjScratch *sc) noexcept:
    """Set ``m.s`` and ``m.sn`` to a string value's characters: in the body
    when it has no escapes, else resolved into ``sc`` (room reserved for
    the whole event object: a string never grows when resolved)."""
    cdef const uint8_t *p = m.v + 1
    cdef const uint8_t *end = m.v + m.vn - 1
    cdef const uint8_t *q
    cdef uint8_t *o
    cdef uint8_t c
    cdef uint32_t cp
    if not m.esc:
        m.s = p
        m.sn = end - p
        return
    o = sc.p + sc.n
    m.s = o
    while p < end:
        q = <const uint8_t *>memchr(p, b'\\', end - p)
        if q == NULL:
            q = end
        memcpy(o, p, q - p)
        o += q - p
        p = q
        if p >= end:
            break
        c = p[1]
        if c == b'u':
            cp = <uint32_t>_cj_hex4(p + 2)
            p += 6
            if cp >= 0xd800 and cp <= 0xdbff:
                cp = 0x10000 + ((cp - 0xd800) << 10) + (<uint32_t>_cj_hex4(p + 2) - 0xdc00)
                p += 6
            o = _cj_put_utf8(o, cp)
            continue
        if c == b'b':
            o[0] = 8
        elif c == b'f':
            o[0] = 12
        elif c == b'n':
            o[0] = 10
        elif c == b'r':
            o[0] = 13
        elif c == b't':
            o[0] = 9
        else:
            o[0] = c                    # '"', '\' or '/'
        o += 1
        p += 2
    m.sn = o - m.s
    sc.n += m.sn
    m.esc = 0


cdef inline bint _cj_is(const uint8_t *k, Py_ssize_t n, const char *word, Py_ssize_t wn) noexcept:
    return n == wn and memcmp(k, word, wn) == 0


cdef inline int _cj_attr_of(const uint8_t *k, Py_ssize_t n) noexcept:
    """The attribute a key names (CJA_EXT: none of the spec's or the engine's)."""
    if n == 2:
        if _cj_is(k, n, b'id', 2):
            return CJA_ID
    elif n == 4:
        if _cj_is(k, n, b'type', 4):
            return CJA_TYPE
        if _cj_is(k, n, b'data', 4):
            return CJA_DATA
        if _cj_is(k, n, b'time', 4):
            return CJA_TIME
    elif n == 6:
        if _cj_is(k, n, b'source', 6):
            return CJA_SOURCE
        if _cj_is(k, n, b'ffhops', 6):
            return CJA_HOPS
    elif n == 7:
        if _cj_is(k, n, b'subject', 7):
            return CJA_SUBJECT
        if _cj_is(k, n, b'fftrace', 7):
            return CJA_TRACE
    elif n == 10:
        if _cj_is(k, n, b'dataschema', 10):
            return CJA_DATASCHEMA
    elif n == 11:
        if _cj_is(k, n, b'specversion', 11):
            return CJA_SPECVERSION
        if _cj_is(k, n, b'data_base64', 11):
            return CJA_DATA_BASE64
    elif n == 15:
        if _cj_is(k, n, b'datacontenttype', 15):
            return CJA_DATACONTENTTYPE
    return CJA_EXT


cdef inline bint _cj_ext_name(const uint8_t *k, Py_ssize_t n) noexcept:
    """An extension name: [a-z0-9]+ (fastflow._attrs)."""
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not ((k[i] >= 0x61 and k[i] <= 0x7a) or _cj_digit(k[i])):
            return False
    return True


cdef bint _cj_int(const uint8_t *p, Py_ssize_t n, int64_t *out) noexcept:
    """A JSON number that is an integer of at most 10 digits (and not -0):
    its value.  False for the others (the reference decides them)."""
    cdef bint neg = n > 0 and p[0] == b'-'
    cdef Py_ssize_t i = 1 if neg else 0
    cdef int64_t v = 0
    if n - i < 1 or n - i > 10:
        return False
    if p[i] == b'0' and (n - i > 1 or neg):
        return False
    while i < n:
        if not _cj_digit(p[i]):
            return False
        v = v * 10 + (p[i] - 0x30)
        i += 1
    out[0] = -v if neg else v
    return True


cdef bint _cj_hops(const uint8_t *p, Py_ssize_t n, int64_t *out) noexcept:
    """ffhops as a string: ASCII digits of a value up to 65535."""
    cdef int64_t v = 0
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not _cj_digit(p[i]):
            return False
        v = v * 10 + (p[i] - 0x30)
        if v > 65535:
            return False
    out[0] = v
    return True


cdef inline int _cj_2(const uint8_t *p) noexcept:
    """Two ASCII digits' value, -1 if they are not both digits."""
    if not (_cj_digit(p[0]) and _cj_digit(p[1])):
        return -1
    return (p[0] - 0x30) * 10 + (p[1] - 0x30)


cdef bint _cj_time(const uint8_t *s, Py_ssize_t n) noexcept:
    """An RFC 3339 time the reference takes (fastflow._attrs: the pattern
    ``\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?([Zz]|[+-]\\d{2}:\\d{2})``
    and a valid date and time), with ASCII digits, minutes of the offset
    up to 59.  False for anything else (the reference decides)."""
    cdef int year, month, day, hh, mi, ss, dim
    cdef Py_ssize_t i = 19
    if n < 20:
        return False
    hh = _cj_2(s)
    mi = _cj_2(s + 2)
    if hh < 0 or mi < 0:
        return False
    year = hh * 100 + mi
    month = _cj_2(s + 5)
    day = _cj_2(s + 8)
    hh = _cj_2(s + 11)
    mi = _cj_2(s + 14)
    ss = _cj_2(s + 17)
    if (s[4] != b'-' or s[7] != b'-' or (s[10] != b'T' and s[10] != b't' and s[10] != b' ')
            or s[13] != b':' or s[16] != b':'):
        return False
    if month < 1 or month > 12 or day < 1 or hh < 0 or hh > 23 or mi < 0 or mi > 59 \
            or ss < 0 or ss > 59 or year < 1:
        return False
    if month == 2:
        dim = 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        dim = 30
    else:
        dim = 31
    if day > dim:
        return False
    if s[i] == b'.':
        i += 1
        if i >= n or not _cj_digit(s[i]):
            return False
        while i < n and _cj_digit(s[i]):
            i += 1
    if i >= n:
        return False
    if s[i] == b'Z' or s[i] == b'z':
        return i + 1 == n
    if s[i] != b'+' and s[i] != b'-':
        return False
    if n - i != 6 or s[i + 3] != b':':
        return False
    hh = _cj_2(s + i + 1)
    mi = _cj_2(s + i + 4)
    return hh >= 0 and hh <= 23 and mi >= 0 and mi <= 59


cdef int _cj_media(const uint8_t *s, Py_ssize_t n) noexcept:
    """What a datacontenttype says of the data, as the reference reads it
    (fastflow.event: _media_type, _is_json, _codec): 1 JSON (``*/json``,
    ``*/*+json``), 0 text in UTF-8 (no charset, or utf-8), -1 for the
    reference to decide (a byte outside printable ASCII, another charset)."""
    cdef Py_ssize_t i, a, b, semi = n, slash = -1, eq, ka, kb, va, vb, csa = 0, csb = 0
    cdef const char *c = <const char *>s
    if n == 16 and memcmp(s, b'application/json', 16) == 0:
        return 1                        # (the common case)
    for i in range(n):
        if s[i] < 0x20 or s[i] > 0x7e:
            return -1
        if s[i] == b';' and semi == n:
            semi = i
    # the media type: what is before the first ';', stripped
    a = 0
    b = semi
    while a < b and s[a] == b' ':
        a += 1
    while b > a and s[b - 1] == b' ':
        b -= 1
    for i in range(a, b):
        if s[i] == b'/':
            slash = i
            break
    if slash >= 0 and (_ascii_ieq(c + slash + 1, b - slash - 1, b'json', 4)
                       or (b - slash - 1 >= 5 and _ascii_ieq(c + b - 5, 5, b'+json', 5))):
        return 1
    # the parameters: 'key=value' between ';' (the last charset counts)
    a = semi
    while a < n:
        a += 1
        b = a
        while b < n and s[b] != b';':
            b += 1
        eq = -1
        for i in range(a, b):
            if s[i] == b'=':
                eq = i
                break
        if eq >= 0:
            ka = a
            kb = eq
            while ka < kb and s[ka] == b' ':
                ka += 1
            while kb > ka and s[kb - 1] == b' ':
                kb -= 1
            if _ascii_ieq(c + ka, kb - ka, b'charset', 7):
                va = eq + 1
                vb = b
                while va < vb and s[va] == b' ':
                    va += 1
                while vb > va and s[vb - 1] == b' ':
                    vb -= 1
                if vb - va >= 2 and s[va] == b'"' and s[vb - 1] == b'"':
                    va += 1
                    vb -= 1
                csa = va
                csb = vb
        a = b
    if csb == csa or _ascii_ieq(c + csa, csb - csa, b'utf-8', 5) \
            or _ascii_ieq(c + csa, csb - csa, b'utf8', 4):
        return 0
    return -1


cdef Py_ssize_t _cj_b64_len(const uint8_t *s, Py_ssize_t n) noexcept:
    """Bytes of Base64 text in its canonical form (quads of the alphabet,
    '=' only as the padding of the last), -1 for anything else (the
    reference decides)."""
    cdef Py_ssize_t i, pad = 0
    if n % 4:
        return -1
    if n and s[n - 1] == b'=':
        pad = 2 if s[n - 2] == b'=' else 1
    for i in range(n - pad):
        if _CJ_B64[s[i]] == 255:
            return -1
    return n // 4 * 3 - pad


cdef void _cj_b64_decode(const uint8_t *s, Py_ssize_t n, uint8_t *o) noexcept:
    """Decode canonical Base64 (_cj_b64_len vouched for it); leftover bits
    of the last character are dropped, as binascii does."""
    cdef Py_ssize_t i, full
    cdef uint32_t v
    if n == 0:
        return
    full = n - 4 if s[n - 1] == b'=' else n
    i = 0
    while i < full:
        v = ((<uint32_t>_CJ_B64[s[i]] << 18) | (<uint32_t>_CJ_B64[s[i + 1]] << 12)
             | (<uint32_t>_CJ_B64[s[i + 2]] << 6) | _CJ_B64[s[i + 3]])
        o[0] = <uint8_t>(v >> 16)
        o[1] = <uint8_t>(v >> 8)
        o[2] = <uint8_t>v
        o += 3
        i += 4
    if full < n:
        v = (<uint32_t>_CJ_B64[s[i]] << 18) | (<uint32_t>_CJ_B64[s[i + 1]] << 12)
        o[0] = <uint8_t>(v >> 16)
        if s[i + 2] != b'=':
            v |= <uint32_t>_CJ_B64[s[i + 2]] << 6
            o[1] = <uint8_t>(v >> 8)


cdef int _cj_attrs(CjEvent *ev, CjScratch *sc) noexcept:
    """Read the members of ``ev`` as the reference reads them (with room in
    ``sc`` for the event's strings): CJ_OK, ``ev`` describes the event; or
    CJ_OTHER, the reference decides."""
    cdef int i, j, a, media
    cdef CjMember *m
    cdef uint32_t seen = 0              # a bit per attribute met (CjAttr)
    cdef bint specversion = False
    cdef int64_t v = 0
    cdef Py_ssize_t n
    if ev.many:
        return CJ_OTHER
    ev.id = ev.source = ev.type = ev.trace = ev.data = ev.b64 = ev.ct = -1
    ev.hops = 0
    ev.nrest = 0
    ev.ct_default = False
    ev.dmode = CJD_NONE
    ev.dlen = 0
    for i in range(ev.n):
        m = &ev.m[i]
        m.rest = 0
        if m.kesc:
            return CJ_OTHER
        # a repeated key: the reference keeps the last value in the first
        # one's place (a dict), which it decides
        a = _cj_attr_of(m.key, m.keyn)
        m.attr = a
        if a != CJA_EXT:
            if seen & ((<uint32_t>1) << a):
                return CJ_OTHER
            seen |= (<uint32_t>1) << a
        else:
            for j in range(i):
                if (ev.m[j].attr == CJA_EXT and ev.m[j].keyn == m.keyn
                        and memcmp(ev.m[j].key, m.key, m.keyn) == 0):
                    return CJ_OTHER
        if a == CJA_DATA:
            ev.data = i                 # ("data": null is data, b"null")
            continue
        if m.kind == CJK_NULL:
            continue                    # an unset attribute
        if a == CJA_EXT:
            if not _cj_ext_name(m.key, m.keyn):
                return CJ_OTHER
            if m.kind == CJK_STRING:
                _cj_resolve(m, sc)
            elif m.kind == CJK_NUMBER:
                if not _cj_int(m.v, m.vn, &m.num) or m.num < CJ_INT32_MIN \
                        or m.num > CJ_INT32_MAX:
                    return CJ_OTHER
            elif m.kind != CJK_TRUE and m.kind != CJK_FALSE:
                return CJ_OTHER
            m.rest = 1
            ev.nrest += 1
            continue
        if a == CJA_HOPS:
            if m.kind == CJK_NUMBER:
                if not _cj_int(m.v, m.vn, &v) or v < 0 or v > 65535:
                    return CJ_OTHER
            elif m.kind == CJK_STRING:
                _cj_resolve(m, sc)
                if not _cj_hops(m.s, m.sn, &v):
                    return CJ_OTHER
            else:
                return CJ_OTHER
            ev.hops = <int>v
            continue
        if m.kind != CJK_STRING:
            return CJ_OTHER             # every other attribute is a string
        _cj_resolve(m, sc)
        if a == CJA_DATA_BASE64:
            ev.b64 = i
            continue
        if m.sn > EV_MAX_STRING:
            return CJ_OTHER
        if a == CJA_TRACE:
            ev.trace = i                # (empty: none)
            continue
        if m.sn == 0:
            return CJ_OTHER
        if a == CJA_SPECVERSION:
            if not _cj_is(m.s, m.sn, b'1.0', 3):
                return CJ_OTHER
            specversion = True
        elif a == CJA_ID:
            ev.id = i
        elif a == CJA_SOURCE:
            ev.source = i
        elif a == CJA_TYPE:
            ev.type = i
        else:                           # time, subject, datacontenttype, dataschema
            if a == CJA_TIME and not _cj_time(m.s, m.sn):
                return CJ_OTHER
            if a == CJA_DATACONTENTTYPE:
                ev.ct = i
            m.rest = 1
            ev.nrest += 1
    if not specversion or ev.id < 0 or ev.source < 0 or ev.type < 0:
        return CJ_OTHER
    # the data
    if ev.b64 >= 0:
        if ev.data >= 0 and ev.m[ev.data].kind != CJK_NULL:
            return CJ_OTHER             # both: an error
        m = &ev.m[ev.b64]
        n = _cj_b64_len(m.s, m.sn)
        if n < 0:
            return CJ_OTHER
        ev.dmode = CJD_BASE64
        ev.dp = m.s
        ev.dn = m.sn
        ev.dlen = n
    elif ev.data >= 0:
        m = &ev.m[ev.data]
        if ev.ct < 0:
            media = 1                   # JSON by the spec; the event says so
            ev.ct_default = True
            ev.nrest += 1
        else:
            media = _cj_media(ev.m[ev.ct].s, ev.m[ev.ct].sn)
            if media < 0:
                return CJ_OTHER
        if media == 1:
            ev.dmode = CJD_JSON         # the JSON text as received
            ev.dp = m.v
            ev.dlen = m.vn
        elif m.kind == CJK_STRING:
            _cj_resolve(m, sc)
            ev.dmode = CJD_STRING
            ev.dp = m.s
            ev.dlen = m.sn
        elif m.kind != CJK_NULL:
            return CJ_OTHER             # text data must be a string
    return CJ_OK


# -- the record's rest: the msgpack map of the other attributes -----------------------------
# (byte for byte what fastflow._attrs.encode_rest makes of the same dict;
# the msgpack forms: mpack.pxi)

cdef Py_ssize_t _cj_rest_size(CjEvent *ev) noexcept:
    cdef Py_ssize_t n
    cdef int i
    cdef CjMember *m
    if ev.nrest == 0:
        return 0
    n = 1 if ev.nrest <= 15 else 3
    for i in range(ev.n):
        m = &ev.m[i]
        if not m.rest:
            continue
        n += _mp_str_size(m.keyn)
        if m.kind == CJK_STRING:
            n += _mp_str_size(m.sn)
        elif m.kind == CJK_NUMBER:
            n += _mp_int_size(m.num)
        else:
            n += 1
    if ev.ct_default:
        n += _mp_str_size(15) + _mp_str_size(16)
    return n


cdef uint8_t *_cj_rest_write(CjEvent *ev, uint8_t *o) noexcept:
    """Write the rest map (_cj_rest_size bytes); the members in their order,
    the default datacontenttype last (where the reference's dict has it)."""
    cdef int i
    cdef CjMember *m
    if ev.nrest <= 15:
        o[0] = <uint8_t>(0x80 | ev.nrest)
        o += 1
    else:
        o[0] = 0xde
        o[1] = <uint8_t>(ev.nrest >> 8)
        o[2] = <uint8_t>ev.nrest
        o += 3
    for i in range(ev.n):
        m = &ev.m[i]
        if not m.rest:
            continue
        o = _mp_put_str(o, m.key, m.keyn)
        if m.kind == CJK_STRING:
            o = _mp_put_str(o, m.s, m.sn)
        elif m.kind == CJK_NUMBER:
            o = _mp_put_int(o, m.num)
        else:
            o[0] = 0xc3 if m.kind == CJK_TRUE else 0xc2
            o += 1
    if ev.ct_default:
        o = _mp_put_str(o, <const uint8_t *>b'datacontenttype', 15)
        o = _mp_put_str(o, <const uint8_t *>b'application/json', 16)
    return o


# -- the reference, the input, the scratch ------------------------------------------------

cdef object _cj_reference = None


cdef object _cj_ref():
    """fastflow.event: its _from_json_py and _from_json_batch_py are the
    reference semantics (imported when first needed: it imports the core)."""
    global _cj_reference
    if _cj_reference is None:
        import fastflow.event
        _cj_reference = fastflow.event
    return _cj_reference


cdef enum CjInput:
    CJI_BYTES = 0                   # bytes or str: nothing to release
    CJI_VIEW = 1                    # a buffer: release the view
    CJI_REFER = 2                   # for the reference (another type, a str that is not UTF-8)


cdef int _cj_input(object body, Py_buffer *view, const uint8_t **p,
                   Py_ssize_t *n) except -1:
    """Point ``p[0][:n[0]]`` at the bytes of ``body``; returns a CjInput."""
    cdef type t = type(body)
    if t is bytes:
        p[0] = <const uint8_t *>PyBytes_AS_STRING(body)
        n[0] = PyBytes_GET_SIZE(body)
        return CJI_BYTES
    if t is str:
        try:
            p[0] = <const uint8_t *>PyUnicode_AsUTF8AndSize(body, n)
        except UnicodeError:
            return CJI_REFER
        return CJI_BYTES
    if t is bytearray or t is memoryview:
        try:
            PyObject_GetBuffer(body, view, PyBUF_SIMPLE)
        except (BufferError, TypeError, ValueError):
            return CJI_REFER
        p[0] = <const uint8_t *>view.buf
        n[0] = view.len
        return CJI_VIEW
    return CJI_REFER


# a scratch buffer kept between calls; a call takes it (a nested call, from
# a finaliser the collector runs, makes its own)
cdef uint8_t *_cj_spare = NULL
cdef Py_ssize_t _cj_spare_cap = 0


cdef inline void _cj_take(CjScratch *sc) noexcept:
    global _cj_spare, _cj_spare_cap
    sc.p = _cj_spare
    sc.cap = _cj_spare_cap
    sc.n = 0
    _cj_spare = NULL
    _cj_spare_cap = 0


cdef inline void _cj_give(CjScratch *sc) noexcept:
    global _cj_spare, _cj_spare_cap
    if _cj_spare == NULL and sc.cap <= CJ_SPARE_MAX:
        _cj_spare = sc.p
        _cj_spare_cap = sc.cap
    else:
        free(sc.p)
    sc.p = NULL
    sc.cap = 0


cdef inline int _cj_reserve(CjScratch *sc, Py_ssize_t n) except -1:
    """Room for the strings of an event object of ``n`` bytes."""
    sc.n = 0
    if n > sc.cap:
        _grow(<void **>&sc.p, &sc.cap, n, 1, 1024)
    return 0


cdef object _CJ_REFER = object()     # _cj_routing: the reference decides
cdef str _cj_last_routing = None      # the last routing subject found valid


cdef object _cj_routing(object routing_subject):
    """The routing subject an Event gets (a valid subject as a str, or
    None); _CJ_REFER when the reference should decide (it raises, or takes
    what the C path does not)."""
    global _cj_last_routing
    cdef const char *p
    cdef Py_ssize_t n
    cdef Parsed ps
    if routing_subject is None or routing_subject is _cj_last_routing:
        return routing_subject
    if type(routing_subject) is not str and type(routing_subject) is not bytes:
        return _CJ_REFER
    try:
        as_utf8(routing_subject, &p, &n, False)
        parse_subject(p, n, &ps, False, routing_subject)
        if type(routing_subject) is bytes:
            return (<bytes>routing_subject).decode('utf-8')
    except (SubjectError, UnicodeError):
        return _CJ_REFER
    _cj_last_routing = routing_subject
    return routing_subject


# -- making Events --------------------------------------------------------------------------

# the source and type of the last Event made: a producer's events share them,
# from one call to the next too
cdef str _cj_last_source = None
cdef str _cj_last_type = None

cdef inline str _cj_str(const uint8_t *s, Py_ssize_t n, str last):
    """The str of UTF-8 ``s[:n]``: ``last`` when that is the same ASCII text
    (the events of a batch mostly share their source and type)."""
    if (last is not None and PyUnicode_IS_COMPACT_ASCII(last)
            and PyUnicode_GET_LENGTH(last) == n and memcmp(PyUnicode_DATA(last), s, n) == 0):
        return last
    return PyUnicode_DecodeUTF8(<const char *>s, n, NULL)


cdef bytes _cj_data(CjEvent *ev):
    cdef bytes out
    if ev.dmode == CJD_NONE:
        return b''
    if ev.dmode == CJD_BASE64:
        out = PyBytes_FromStringAndSize(NULL, ev.dlen)
        _cj_b64_decode(ev.dp, ev.dn, <uint8_t *>PyBytes_AS_STRING(out))
        return out
    return PyBytes_FromStringAndSize(<const char *>ev.dp, ev.dlen)


cdef Event _cj_event(CjEvent *ev, object routing_subject, str last_source, str last_type):
    """The Event ``ev`` describes (_cj_attrs said CJ_OK)."""
    cdef Event e = Event.__new__(Event)
    cdef CjMember *m
    cdef bytes rest
    cdef Py_ssize_t n
    cdef uint8_t *o
    e.routing_subject = routing_subject
    m = &ev.m[ev.id]
    e._id = PyUnicode_DecodeUTF8(<const char *>m.s, m.sn, NULL)
    m = &ev.m[ev.source]
    e.source = _cj_str(m.s, m.sn, last_source)
    m = &ev.m[ev.type]
    e._type = _cj_str(m.s, m.sn, last_type)
    e.hops = ev.hops
    if ev.trace >= 0 and ev.m[ev.trace].sn:
        m = &ev.m[ev.trace]
        e._trace = PyUnicode_DecodeUTF8(<const char *>m.s, m.sn, NULL)
    if ev.nrest:
        n = _cj_rest_size(ev)
        rest = PyBytes_FromStringAndSize(NULL, n)
        o = _cj_rest_write(ev, <uint8_t *>PyBytes_AS_STRING(rest))
        if FASTFLOW_DEBUG and o != <uint8_t *>PyBytes_AS_STRING(rest) + n:
            raise FastflowError('_cj_event: wrote a rest map of {} bytes, sized {}'.format(
                o - <uint8_t *>PyBytes_AS_STRING(rest), n))
        e._rest_raw = rest
    e._data = _cj_data(ev)
    return e


def decode_event(body, routing_subject=None):
    """The Event of a CloudEvents JSON event (``application/cloudevents+json``;
    bytes, str or a bytes-like object), with ``routing_subject`` as its
    routing key: ``fastflow.event.from_json``, decoded in C.  The result
    and the errors (``EventError`` naming the attribute) are those of the
    reference, ``fastflow.event._from_json_py``, which decides what the C
    path leaves to it."""
    global _cj_last_source, _cj_last_type
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef const uint8_t *end
    cdef const uint8_t *q
    cdef Py_ssize_t n
    cdef int kind
    cdef CjEvent ev
    cdef CjScratch sc
    cdef object e = None
    kind = _cj_input(body, &view, &p, &n)
    if kind == CJI_REFER:
        return _cj_ref()._from_json_py(body, routing_subject)
    _cj_take(&sc)
    try:
        rs = _cj_routing(routing_subject)
        if rs is not _CJ_REFER:
            end = p + n
            q = _cj_ws(p, end)
            if (q < end and q[0] == b'{' and _cj_members(q, end, &ev, &q) == CJ_OK
                    and _cj_ws(q, end) == end):
                _cj_reserve(&sc, n)
                if _cj_attrs(&ev, &sc) == CJ_OK:
                    e = _cj_event(&ev, rs, _cj_last_source, _cj_last_type)
                    _cj_last_source = (<Event>e).source
                    _cj_last_type = (<Event>e)._type
    finally:
        _cj_give(&sc)
        if kind == CJI_VIEW:
            PyBuffer_Release(&view)
    if e is None:
        return _cj_ref()._from_json_py(body, routing_subject)
    return e


def decode_batch(body, routing_subject=None):
    """The Events of a CloudEvents JSON batch
    (``application/cloudevents-batch+json``), each with ``routing_subject``:
    ``fastflow.event.from_json_batch``, decoded in C.  The result and the
    errors (``EventError`` naming the attribute and the batch index) are
    those of the reference, ``fastflow.event._from_json_batch_py``; an
    event the C path leaves to the reference is decoded by it alone."""
    cdef Py_buffer view
    cdef const uint8_t *p
    cdef const uint8_t *end
    cdef const uint8_t *q
    cdef Py_ssize_t n
    cdef int kind, st
    cdef CjEvent ev
    cdef CjScratch sc
    global _cj_last_source, _cj_last_type
    cdef list out = []
    cdef bint whole = True              # the reference decides the whole body
    cdef Event e
    kind = _cj_input(body, &view, &p, &n)
    if kind == CJI_REFER:
        return _cj_ref()._from_json_batch_py(body, routing_subject)
    _cj_take(&sc)
    try:
        rs = _cj_routing(routing_subject)
        end = p + n
        p = _cj_ws(p, end)
        if rs is not _CJ_REFER and p < end and p[0] == b'[':
            p = _cj_ws(p + 1, end)
            if p < end and p[0] == b']':
                whole = _cj_ws(p + 1, end) != end
            else:
                while True:
                    if p >= end or p[0] != b'{':
                        break
                    if _cj_members(p, end, &ev, &q) != CJ_OK:
                        break
                    _cj_reserve(&sc, q - p)
                    if _cj_attrs(&ev, &sc) == CJ_OK:
                        e = _cj_event(&ev, rs, _cj_last_source, _cj_last_type)
                        _cj_last_source = e.source
                        _cj_last_type = e._type
                    else:
                        try:
                            e = _cj_ref()._from_json_py(
                                PyBytes_FromStringAndSize(<const char *>p, q - p),
                                routing_subject)
                        except Exception:
                            break       # (the reference words the error, with the index)
                    out.append(e)
                    p = _cj_ws(q, end)
                    if p >= end:
                        break
                    if p[0] == b',':
                        p = _cj_ws(p + 1, end)
                        continue
                    if p[0] == b']':
                        whole = _cj_ws(p + 1, end) != end
                    break
    finally:
        _cj_give(&sc)
        if kind == CJI_VIEW:
            PyBuffer_Release(&view)
    if whole:
        return _cj_ref()._from_json_batch_py(body, routing_subject)
    return out


# -- making records ---------------------------------------------------------------------------

cdef Py_ssize_t _cj_record_size(CjEvent *ev, Py_ssize_t restn) noexcept:
    cdef Py_ssize_t n = (EV_HEADER + ev.m[ev.id].sn + ev.m[ev.source].sn + ev.m[ev.type].sn
                         + restn + ev.dlen)
    if ev.trace >= 0:
        n += ev.m[ev.trace].sn
    return n


cdef Py_ssize_t _cj_record_write(CjEvent *ev, char *out, Py_ssize_t restn) noexcept:
    """Write the record of ``ev`` (_cj_record_size bytes; event.pyx has the
    layout): the id and the type as given, no flags.  Returns the bytes
    written."""
    cdef uint8_t *o = <uint8_t *>out + EV_HEADER
    cdef CjMember *m
    cdef Py_ssize_t trn = ev.m[ev.trace].sn if ev.trace >= 0 else 0
    out[0] = <char>EV_VERSION
    out[1] = 0
    _wr16(out + 2, <uint16_t>ev.hops)
    _wr16(out + 4, <uint16_t>ev.m[ev.id].sn)
    _wr16(out + 6, <uint16_t>ev.m[ev.source].sn)
    _wr16(out + 8, <uint16_t>ev.m[ev.type].sn)
    _wr16(out + 10, <uint16_t>trn)
    _wr32(out + 12, <uint32_t>restn)
    m = &ev.m[ev.id]
    memcpy(o, m.s, m.sn)
    o += m.sn
    m = &ev.m[ev.source]
    memcpy(o, m.s, m.sn)
    o += m.sn
    m = &ev.m[ev.type]
    memcpy(o, m.s, m.sn)
    o += m.sn
    if trn:
        memcpy(o, ev.m[ev.trace].s, trn)
        o += trn
    if restn:
        o = _cj_rest_write(ev, o)
    if ev.dmode == CJD_BASE64:
        _cj_b64_decode(ev.dp, ev.dn, o)
    elif ev.dmode != CJD_NONE:
        memcpy(o, ev.dp, ev.dlen)
    return (o + ev.dlen) - <uint8_t *>out


@cython.final
@cython.auto_pickle(False)
cdef class _JsonRecords:
    """The event records of a CloudEvents JSON event or batch, made in C
    from the JSON (the reference's where the C path leaves an event to it),
    each with its routing subject: the one given, or else the event's
    ``type``.  What Router.publish_json publishes without making Events."""

    def __cinit__(self):
        self.subjects = []

    def __dealloc__(self):
        free(self.buf)
        free(self.ends.data)

    def __len__(self):
        return self.ends.n

    def records(self):
        """The records (a list of bytes; for tests)."""
        cdef Py_ssize_t i, start = 0
        out = []
        for i in range(self.ends.n):
            out.append(PyBytes_FromStringAndSize(self.buf + start, self.ends.data[i] - start))
            start = self.ends.data[i]
        return out

    cdef char *_room(self, Py_ssize_t n) except NULL:
        """Room for a record of ``n`` bytes at the end of buf."""
        if self.size + n > self.cap or self.ends.n == self.ends.cap:
            _grow(<void **>&self.buf, &self.cap, self.size + n, 1, 65536)
            _i64_reserve(&self.ends, 1)
        return self.buf + self.size

    cdef int _add_subject(self, str subject) except -1:
        """Route the record just added on ``subject``, the event's type,
        when no routing subject was given (then ``subjects`` has one per
        record): a valid subject, or the batch's SubjectError (naming the
        first such index)."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef Parsed ps
        if self.routing_subject is not None:
            return 0
        if subject is not self.last_type:
            try:
                as_utf8(subject, &p, &n, False)
                parse_subject(p, n, &ps, False, subject)
            except SubjectError as exc:
                if self.subject_error is None:
                    self.subject_error = (len(self.subjects), exc)
                self.subjects.append(None)
                return 0
            self.last_type = subject
        self.subjects.append(subject)
        return 0

    cdef int _add(self, CjEvent *ev) except -1:
        """Add the record of ``ev`` (_cj_attrs said CJ_OK)."""
        cdef Py_ssize_t restn = _cj_rest_size(ev)
        cdef Py_ssize_t n = _cj_record_size(ev, restn)
        cdef CjMember *m
        cdef str subject = None
        cdef Py_ssize_t written = _cj_record_write(ev, self._room(n), restn)
        if FASTFLOW_DEBUG and written != n:
            raise FastflowError('_JsonRecords._add: wrote {} bytes, sized {}'.format(written, n))
        self.size += n
        self.ends.data[self.ends.n] = self.size
        self.ends.n += 1
        if self.routing_subject is None:
            m = &ev.m[ev.type]
            subject = _cj_str(m.s, m.sn, self.last_type)
        return self._add_subject(subject)

    cdef int _add_event(self, Event e) except -1:
        """Add the record of an Event (the reference's)."""
        cdef Py_ssize_t n = _ev_size(e, len(<bytes>e._data))
        _ev_write(e, self._room(n), e._data, n)
        self.size += n
        self.ends.data[self.ends.n] = self.size
        self.ends.n += 1
        return self._add_subject(e._type if e._type is not None else e.routing_subject)

    cdef int _from_reference(self, object body, bint batch) except -1:
        """The records of the reference's Events (it raises for a body that
        is not valid)."""
        ref = _cj_ref()
        if batch:
            events = ref._from_json_batch_py(body, self.routing_subject)
        else:
            events = [ref._from_json_py(body, self.routing_subject)]
        self.size = 0
        self.ends.n = 0
        self.subjects = []
        self.last_type = None
        self.subject_error = None
        for e in events:
            self._add_event(e)
        return 0

    cdef int fill(self, object body, str routing_subject, bint batch) except -1:
        """Decode ``body`` (one JSON event, or a batch) into records, each
        routed on ``routing_subject`` (a valid subject) or, when it is None,
        on the event's type.  A body that is not valid raises the
        reference's EventError (nothing is added)."""
        cdef Py_buffer view
        cdef const uint8_t *p
        cdef const uint8_t *end
        cdef const uint8_t *q
        cdef Py_ssize_t n
        cdef int kind
        cdef CjEvent ev
        cdef CjScratch sc
        cdef bint whole = True
        self.routing_subject = routing_subject
        kind = _cj_input(body, &view, &p, &n)
        if kind == CJI_REFER:
            return self._from_reference(body, batch)
        _cj_take(&sc)
        try:
            end = p + n
            p = _cj_ws(p, end)
            if not batch:
                if (p < end and p[0] == b'{' and _cj_members(p, end, &ev, &q) == CJ_OK
                        and _cj_ws(q, end) == end):
                    _cj_reserve(&sc, n)
                    if _cj_attrs(&ev, &sc) == CJ_OK:
                        self._add(&ev)
                        whole = False
            elif p < end and p[0] == b'[':
                p = _cj_ws(p + 1, end)
                if p < end and p[0] == b']':
                    whole = _cj_ws(p + 1, end) != end
                else:
                    while True:
                        if p >= end or p[0] != b'{':
                            break
                        if _cj_members(p, end, &ev, &q) != CJ_OK:
                            break
                        _cj_reserve(&sc, q - p)
                        if _cj_attrs(&ev, &sc) == CJ_OK:
                            self._add(&ev)
                        else:
                            try:
                                e = _cj_ref()._from_json_py(
                                    PyBytes_FromStringAndSize(<const char *>p, q - p),
                                    routing_subject)
                            except Exception:
                                break
                            self._add_event(e)
                        p = _cj_ws(q, end)
                        if p >= end:
                            break
                        if p[0] == b',':
                            p = _cj_ws(p + 1, end)
                            continue
                        if p[0] == b']':
                            whole = _cj_ws(p + 1, end) != end
                        break
        finally:
            _cj_give(&sc)
            if kind == CJI_VIEW:
                PyBuffer_Release(&view)
        if whole:
            return self._from_reference(body, batch)
        return 0
