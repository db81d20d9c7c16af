# The msgpack forms of a record's attribute block (the map of its optional
# attributes and extensions, docs/protocol.md): the writers the JSON decoder
# uses to make it (cejson.pyx, byte for byte what fastflow._attrs.encode_rest
# and msgspec write) and the readers the JSON writers use to walk it
# (wire/web_out.pyx).  Included by core.pyx before both.

from libc.stdint cimport int64_t, uint8_t, uint32_t
from libc.string cimport memcpy


# -- writing -------------------------------------------------------------------------------

cdef inline Py_ssize_t _mp_str_size(Py_ssize_t n) noexcept:
    return n + (1 if n <= 31 else (2 if n <= 255 else (3 if n <= 65535 else 5)))


cdef inline uint8_t *_mp_put_str(uint8_t *o, const uint8_t *s, Py_ssize_t n) noexcept:
    if n <= 31:
        o[0] = <uint8_t>(0xa0 | n)
        o += 1
    elif n <= 255:
        o[0] = 0xd9
        o[1] = <uint8_t>n
        o += 2
    elif n <= 65535:
        o[0] = 0xda
        o[1] = <uint8_t>(n >> 8)
        o[2] = <uint8_t>n
        o += 3
    else:
        o[0] = 0xdb
        o[1] = <uint8_t>(n >> 24)
        o[2] = <uint8_t>(n >> 16)
        o[3] = <uint8_t>(n >> 8)
        o[4] = <uint8_t>n
        o += 5
    memcpy(o, s, n)
    return o + n


cdef inline Py_ssize_t _mp_int_size(int64_t v) noexcept:
    if v >= 0:
        return 1 if v <= 127 else (2 if v <= 255 else (3 if v <= 65535 else 5))
    return 1 if v >= -32 else (2 if v >= -128 else (3 if v >= -32768 else 5))


cdef uint8_t *_mp_put_int(uint8_t *o, int64_t v) noexcept:
    """A 32-bit integer in its shortest msgpack form (as msgspec writes it)."""
    cdef uint32_t u = <uint32_t>v
    if v >= 0:
        if v <= 127:
            o[0] = <uint8_t>v
            return o + 1
        if v <= 255:
            o[0] = 0xcc
            o[1] = <uint8_t>v
            return o + 2
        if v <= 65535:
            o[0] = 0xcd
            o[1] = <uint8_t>(u >> 8)
            o[2] = <uint8_t>u
            return o + 3
        o[0] = 0xce
    else:
        if v >= -32:
            o[0] = <uint8_t>v
            return o + 1
        if v >= -128:
            o[0] = 0xd0
            o[1] = <uint8_t>v
            return o + 2
        if v >= -32768:
            o[0] = 0xd1
            o[1] = <uint8_t>(u >> 8)
            o[2] = <uint8_t>u
            return o + 3
        o[0] = 0xd2
    o[1] = <uint8_t>(u >> 24)
    o[2] = <uint8_t>(u >> 16)
    o[3] = <uint8_t>(u >> 8)
    o[4] = <uint8_t>u
    return o + 5


# -- reading -------------------------------------------------------------------------------

cdef inline Py_ssize_t _mp_size(const uint8_t *b, Py_ssize_t *i, Py_ssize_t n,
                                int width) noexcept:
    """A big-endian size of ``width`` bytes at ``b[i[0]]``, ``i[0]`` moved
    past it; -1 if the block ends first."""
    cdef Py_ssize_t v = 0
    cdef int k
    if i[0] + width > n:
        return -1
    for k in range(width):
        v = (v << 8) | b[i[0] + k]
    i[0] += width
    return v


cdef inline Py_ssize_t _mp_str(const uint8_t *b, Py_ssize_t *i, Py_ssize_t n) noexcept:
    """The length of the msgpack str at ``b[i[0]]`` (``i[0]`` moved to its
    bytes); -1 if it is no str or overruns the block."""
    cdef uint8_t c
    cdef Py_ssize_t ln
    if i[0] >= n:
        return -1
    c = b[i[0]]
    i[0] += 1
    if 0xa0 <= c <= 0xbf:
        ln = c & 0x1f
    elif c == 0xd9:
        ln = _mp_size(b, i, n, 1)
    elif c == 0xda:
        ln = _mp_size(b, i, n, 2)
    elif c == 0xdb:
        ln = _mp_size(b, i, n, 4)
    else:
        return -1
    if ln < 0 or ln > n - i[0]:
        return -1
    return ln
