# The interface of http_in.pyx's classes (the bodies and docstrings are there).

cdef class Request:
    cdef public str method
    cdef public bytes target                # as received (origin or absolute form)
    cdef public str path
    cdef public str query
    cdef public dict headers                # lower-cased name -> value (repeats joined by ", ")
    cdef public list pairs                  # (lower-cased name, value) as they came
    cdef public bytes body
    cdef public bint keep_alive
    cdef public str version                 # "1.1" or "1.0"
    cdef public bint upgrade
    cdef public bytes rest                  # bytes after an upgrade request
    cdef public double t0                   # time.monotonic() when its first byte came


cdef class HttpParser(DoorParser):
    cdef public Py_ssize_t max_header      # bytes of a head (request line and fields)
    cdef public Py_ssize_t max_headers     # header fields (and trailer fields) of a request
    cdef public Py_ssize_t max_body        # bytes of a body (decoded, when chunked)
    cdef public object head_check          # called with each request after its head (or None)
    cdef int state                          # HttpState: where the request in progress is
    cdef Request req                        # the request whose head is parsed, or None
    cdef double t0                          # when the request in progress began (0.0: none)
    cdef Py_ssize_t head                    # bytes of its head (or trailer section) so far
    cdef Py_ssize_t fields                  # its header (or trailer) fields so far
    cdef int flags                          # HttpFlag bits: what its fields said
    cdef uint64_t length                    # its Content-Length / the chunk's bytes left
    cdef char *body                         # a chunked body decoded so far
    cdef Py_ssize_t body_len
    cdef Py_ssize_t body_cap
    cdef list feeding                       # the requests the feed under way completed
    cdef Py_ssize_t ahead                   # and those it completed before feeding's
    cdef bytes pend                         # a large body being read (HTTP_BODY_DIRECT)
    cdef Py_ssize_t pend_got                # its bytes so far
    cdef bint upgraded                      # an upgrade request ended the HTTP stream
    cdef bint closed                        # the last request did not keep the connection

    cdef Py_ssize_t _parse(self, const char *p, Py_ssize_t n, list out) except -1
    cdef object _malformed_before(self)
    cdef Py_ssize_t _request_line(self, const char *p, Py_ssize_t n) except -1
    cdef Py_ssize_t _field_line(self, const char *p, Py_ssize_t n, bint trailer) except -1
    cdef int _check_size(self, bint trailer) except -1
    cdef int _field(self, const char *name, Py_ssize_t nn, const char *value,
                    Py_ssize_t vn) except -1
    cdef int _head_done(self) except -1
    cdef Py_ssize_t _chunk_line(self, const char *p, Py_ssize_t n) except -1
    cdef int _keep_body(self, const char *p, Py_ssize_t n) except -1
    cdef bint _complete(self, list out) except -1
    cdef int _reset(self) noexcept
