# The interface of nats_in.pyx's class (the bodies and docstrings are there).

cdef class NatsRoute:
    cdef readonly Router router
    cdef readonly Py_ssize_t strip
    cdef readonly object group
    cdef readonly bytes reply_prefix
    cdef public int64_t msgs
    cdef public int64_t bad


cdef class NatsParser(DoorParser):
    cdef readonly int64_t ops_in
    cdef public bint client                 # a cluster link's: a server's ops (MSG, HMSG)
    cdef public dict routes                 # (client) sid bytes -> NatsRoute: MSGs routed in C

    cdef object _malformed_before(self)
    cdef object _subject_str(self, const char *s, Py_ssize_t sn)
    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef int _route_msg(self, NatsRoute rt_, const char *s, Py_ssize_t sn, const char *r,
                        Py_ssize_t rn, const char *d, Py_ssize_t dn, list out) except -1
    cdef int _route(self, const char *s, Py_ssize_t sn, const char *r, Py_ssize_t rn,
                    const char *d, Py_ssize_t dn, list out) except -1
