# The interface of nats_out.pyx's class (the bodies and docstrings are there).

cdef class NatsTarget(WireTarget):
    cdef readonly bytes sid
    cdef public object headers

    cdef int _write(self, WireMsg *m) except -1
    cdef int _prepare(self, WireMsg *m) except -1
