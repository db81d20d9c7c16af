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
    cdef public Py_ssize_t max_payload      # the backbone's (its INFO): larger records are
                                            # not forwarded (0: no limit)
    cdef public Py_ssize_t max_line         # nor a PUB line past this (its max_control_line)
    cdef readonly int64_t too_large         # events not forwarded for those limits

    cdef int _write(self, WireMsg *m) except -1
