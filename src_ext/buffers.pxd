# The interface of buffers.pyx's class (the bodies and docstrings are there).

cdef class Int64Array:
    cdef int64_t *data
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t exports
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    @staticmethod
    cdef Int64Array new(Py_ssize_t cap)
    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int push(self, int64_t v) except -1
