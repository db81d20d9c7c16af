# Unaligned little-endian loads and stores: the one set of byte helpers of
# the core (records, frames, segment files).  memcpy compiles to one move.

from libc.stdint cimport int64_t, uint16_t, uint32_t, uint64_t
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
