# The interface of mqtt_in.pyx's class (the bodies and docstrings are there).

ctypedef struct MqReader:                   # the body of one packet, read from the front
    const char *p
    Py_ssize_t i                            # the next byte
    Py_ssize_t end                          # every read stops here

cdef class MqttParser(DoorParser):
    cdef public Py_ssize_t max_packet       # the largest packet after CONNECT (bytes)
    cdef readonly int version               # 0 before CONNECT; 3, 4 or 5 from it
    cdef readonly int64_t packets_in
    cdef public MqttFlight flight           # its connection's QoS 1 deliveries (None: none):
                                            # their PUBACKs are taken in C
    cdef readonly int64_t acks_in           # PUBACKs taken in C

    cdef object _malformed_before(self)
    cdef object _subject_str(self, const char *s, Py_ssize_t sn)
    cdef int _first_byte(self, uint8_t b0) except -1
    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef int _publish_c(self, uint8_t b0, const char *p, Py_ssize_t body,
                        Py_ssize_t end) except -1
    cdef int _puback_c(self, const char *p, Py_ssize_t body, Py_ssize_t end) except -1
    cdef int _route(self, object subject, const char *d, Py_ssize_t dn, int pid) except -1
    cdef object _packet(self, int kind, int flags, MqReader *r)
    cdef object _connect(self, MqReader *r)
