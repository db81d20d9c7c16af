# Types of buffers.pyx.

from libc.stdint cimport int32_t, int64_t

ctypedef struct I64Vec:
    int64_t *data
    Py_ssize_t n
    Py_ssize_t cap
