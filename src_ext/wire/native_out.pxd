# The interface of native_out.pyx's classes (the bodies and docstrings are there).

cdef class Publisher:
    cdef readonly OutBuf out
    cdef public object slow
    cdef public object on_overflow
    cdef public str source
    cdef public object vsubj
    cdef public Py_ssize_t max_data


cdef class NativeTarget(WireTarget):
    cdef readonly uint32_t sid

    cdef int _write(self, WireMsg *m) except -1
