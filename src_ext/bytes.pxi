# The core's one set of byte helpers: unaligned little-endian loads and
# stores (records, frames, segment files; memcpy compiles to one move), and
# ASCII case folding (HTTP tokens, media types).

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline uint16_t _rd16(const char *p) noexcept:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint32_t _rd32(const char *p) noexcept:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _rd64(const char *p) noexcept:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline int64_t _rdi64(const char *p) noexcept:
    cdef int64_t v
    memcpy(&v, p, 8)
    return v


cdef inline void _wr16(char *p, uint16_t v) noexcept:
    memcpy(p, &v, 2)


cdef inline void _wr32(char *p, uint32_t v) noexcept:
    memcpy(p, &v, 4)


cdef inline void _wri64(char *p, int64_t v) noexcept:
    memcpy(p, &v, 8)


cdef inline uint8_t _ascii_lower(char c) noexcept:
    """``c`` with an ASCII capital made small (other bytes as they are)."""
    if 65 <= c <= 90:
        return <uint8_t>(c + 32)
    return <uint8_t>c


cdef inline bint _ascii_ieq(const char *p, Py_ssize_t n, const char *lower,
                            Py_ssize_t ln) noexcept:
    """Whether p[:n] is ``lower`` (given in small letters), ASCII letters
    compared in any case."""
    cdef Py_ssize_t i
    if n != ln:
        return False
    for i in range(n):
        if _ascii_lower(p[i]) != <uint8_t>lower[i]:
            return False
    return True


cdef inline char *_put_int(char *o, int64_t v) noexcept:
    """Write ``v`` in decimal at ``o`` (20 bytes at most); returns past it."""
    cdef char tmp[24]
    cdef int i = 0
    cdef uint64_t u
    if v < 0:
        o[0] = 45
        o += 1
        u = <uint64_t>(-(v + 1)) + 1
    else:
        u = <uint64_t>v
    if u == 0:
        o[0] = 48
        return o + 1
    while u:
        tmp[i] = <char>(48 + u % 10)
        u //= 10
        i += 1
    while i:
        i -= 1
        o[0] = tmp[i]
        o += 1
    return o
