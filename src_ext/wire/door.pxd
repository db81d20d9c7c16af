# The interface of door.pyx's parser base (the bodies and docstrings are there).

cdef class DoorParser:
    cdef char *buf
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t need                    # bytes the buffered op needs (0: unknown)
    cdef public Router router              # None: return PUBs too
    cdef public OutBuf out                 # this connection's output (echo, acks)
    cdef public Matcher pub_allow          # None: everything allowed
    cdef public Matcher pub_deny           # None: nothing denied
    cdef public object resp_check          # (subject) -> bool: a publish the Matchers refuse
                                           # may still go (a response); None: refused
    cdef public Py_ssize_t max_payload
    cdef public Py_ssize_t max_control
    cdef public Py_ssize_t max_connect     # before CONNECT: the largest frame (0: none)
    cdef public bint route_pubs            # False until CONNECT (auth) is done
    cdef bytes last_pb                     # the last PUB subject (bytes and str):
    cdef str last_ps                       # a stream of one subject decodes it once
    cdef readonly int64_t bytes_in
    cdef readonly int64_t pubs_in
    cdef public int64_t denied             # (the HTTP door counts its refusals in Python)
    cdef object failed                     # the error that stopped the parser
    cdef char *rec                         # the record of a publish being routed
    cdef Py_ssize_t rcap
    cdef uint8_t rec_flags                 # record flags of its publishes (MQTT: EVF_MQTT)

    cdef list _feed(self, object data)
    cdef int _keep(self, const char *p, Py_ssize_t n) except -1
    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef object _malformed_before(self)
    cdef object _pub_subject(self, const char *s, Py_ssize_t sn)
    cdef object _subject_str(self, const char *s, Py_ssize_t sn)
    cdef int _allowed(self, object subject) except -1
    cdef int _publish_default(self, object subject, const char *r, Py_ssize_t rn,
                              const char *d, Py_ssize_t dn, const char *x=*,
                              Py_ssize_t xn=*) except -1
