# The interface of event.pyx's class (the bodies and docstrings are there).

ctypedef struct EvHead:         # a record's checked header (_ev_head)
    uint8_t flags
    uint16_t hops
    Py_ssize_t idn              # the id's bytes (a generated id's 16 included)
    Py_ssize_t srcn
    Py_ssize_t typn
    Py_ssize_t trn
    Py_ssize_t restn

cdef class Event:
    cdef readonly str routing_subject
    cdef object _data
    cdef str _id                        # the id as text (cached for generated ids)
    cdef uint64_t _gpre                 # a generated id: prefix and counter
    cdef uint64_t _gid                  # (0: the id is _id, given by a producer)
    cdef readonly str source
    cdef str _type                      # None: the routing subject
    cdef readonly int hops
    cdef str _trace                     # lineage before this flow, or None
    cdef str _origin                    # the flow that delivered it, or None
    cdef object _rest                   # dict, or None
    cdef object _rest_raw               # msgpack bytes decoded on first use
    cdef uint8_t _rflags                # the record flags it keeps (EVF_MQTT)
    cdef readonly int64_t seq
    cdef readonly str stream
    cdef readonly int64_t ts
    cdef readonly int deliveries
    cdef object _acker                  # the consumer of a consumer delivery

    cdef dict _restd(self)
    cdef object _acker_or_raise(self)
