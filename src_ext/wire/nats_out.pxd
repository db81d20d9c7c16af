# The interface of nats_out.pyx's class (the bodies and docstrings are there).

cdef class NatsTarget(WireTarget):
    cdef readonly bytes sid
    cdef public object headers

    cdef int _write(self, WireMsg *m) except -1
    cdef int _prepare(self, WireMsg *m) except -1

cdef class ClusterTarget(WireTarget):
    cdef readonly bytes prefix              # before the subject on the backbone
    cdef readonly bytes reply_prefix        # before a reply subject
    cdef uint64_t last_gen                  # the last message written (one per event)
    cdef readonly int64_t fwd_msgs          # PUBs written
    cdef readonly int64_t fwd_bytes         # their record bytes

    cdef int _write(self, WireMsg *m) except -1
