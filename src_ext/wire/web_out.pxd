# The interface of web_out.pyx's classes (the bodies and docstrings are there).

ctypedef struct WebJson:
    # The CloudEvents JSON of one message, made once for every web target
    # (one per lineage flag): the bytes, and whether spliced data put raw
    # line breaks (JSON whitespace) in it.
    uint64_t gen                    # the WireMsg.gen it is of (0: none)
    char *buf
    Py_ssize_t n
    Py_ssize_t cap
    bint breaks


cdef class WsJsonTarget(WireTarget):
    cdef readonly bint lineage

    cdef int _write(self, WireMsg *m) except -1


cdef class SseTarget(WireTarget):
    cdef readonly bint lineage
    cdef public str stream          # the stream whose seq is each message's `id:` (None: no ids)

    cdef int _write(self, WireMsg *m) except -1
