# The interface of outbuf.pyx: a connection's output and the WireTarget base
# (the bodies and docstrings are there).

ctypedef struct WireMsg:
    # One delivery as every wire target sees it (filled by the router).
    const char *subject             # UTF-8
    Py_ssize_t subject_n
    const char *reply               # NULL: none
    Py_ssize_t reply_n
    const char *rec                 # the event's record ...
    Py_ssize_t rec_n
    const char *data                # ... and its data when it follows apart (NULL: in rec)
    Py_ssize_t data_n
    uint64_t gen                    # new for every record made: the key of what a
                                    # protocol computes once per message
    PyObject *subject_obj           # the subject (str)
    PyObject *event                 # the Event published; NULL: a record from the network
    PyObject *stream                # the stream that stored it (str), or None
    int64_t seq
    int64_t ts
    PyObject *origin                # the OutBuf of the connection that published it (NULL:
                                    # none): a cluster link's, for the import targets


cdef class WireTarget


cdef class OutBuf:
    cdef char *buf
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef public Py_ssize_t max_pending
    cdef public object on_data
    cdef public Py_ssize_t flush_at         # call on_flush once this many bytes wait (0: never)
    cdef public object on_flush             # (a burst is written before the tick ends)
    cdef public bint overflow
    cdef public bint closed
    cdef readonly int64_t frames
    cdef readonly int64_t msgs
    cdef readonly int64_t bytes_out
    cdef public bint backbone               # a cluster link's output: what it publishes came
                                            # from another node (not charged to ingress again)
    cdef public int64_t pub_bytes           # payload bytes the router took from this
                                            # connection's publishes (metering)
    cdef readonly int64_t dropped
    cdef public bint behind                 # the connection cannot write (its transport is
                                            # paused): conflating targets keep, not write
    cdef dict kept                          # (target, subject) -> _Kept: the latest message of
                                            # each, in the order they were first kept
    cdef readonly Py_ssize_t kept_bytes     # what they hold (counted against max_pending)
    cdef readonly int64_t conflated         # kept messages replaced by a newer one

    cdef char *_reserve(self, Py_ssize_t size) except? NULL
    cdef inline int _wrote(self, Py_ssize_t size, bint was_empty, bint msg) except -1
    cdef int _keep(self, WireTarget t, WireMsg *m) except -1


cdef class WireTarget:
    cdef readonly OutBuf outbuf
    cdef public bint echo                   # False: not the connection's own publishes
    cdef public int64_t remaining           # messages left before an automatic UNSUB (0: none)
    cdef public object owner
    cdef public object on_end               # (target) when an UNSUB max ended it
    cdef readonly int64_t delivered
    cdef readonly int64_t delivered_bytes   # payload bytes of what it delivered
    cdef readonly int64_t dropped
    cdef public int64_t handle
    cdef public list replies                # the reply subjects (bytes) of the requests it
                                            # delivered, for response permissions (None: not
                                            # kept; at REPLIES_MAX entries no more are added)
    cdef public bint conflate               # while its connection is behind, keep only the
                                            # latest message per subject (OutBuf.flush_kept)
    cdef readonly int64_t conflated         # its messages replaced by a newer one so
    cdef public bint remote                 # it forwards to another node (a cluster link's):
                                            # a queue group prefers its local members

    cdef int _write(self, WireMsg *m) except -1


cdef class _Kept:
    # One message a conflating target keeps while its connection is behind.
    cdef WireTarget target
    cdef object subject                     # str
    cdef bytes record                       # the whole event record
    cdef bytes reply                        # None: none
    cdef object stream
    cdef int64_t seq
    cdef int64_t ts
    cdef Py_ssize_t size                    # what it counts in kept_bytes

