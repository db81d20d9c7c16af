# The interface of nats_in.pyx's class (the bodies and docstrings are there).

cdef class NatsParser(DoorParser):
    cdef readonly int64_t ops_in

    cdef object _malformed_before(self)
    cdef object _subject_str(self, const char *s, Py_ssize_t sn)
    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef int _route(self, const char *s, Py_ssize_t sn, const char *r, Py_ssize_t rn,
                    const char *d, Py_ssize_t dn, list out) except -1
