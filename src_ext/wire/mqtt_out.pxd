# The interface of mqtt_out.pyx's class (the bodies and docstrings are there).

ctypedef struct FlightEntry:               # a QoS 1 PUBLISH waiting in an MqttFlight's queue
    int32_t size                            # the packet's bytes (they follow the entry)
    int32_t pid_off                         # where its packet identifier goes
    int32_t exp_off                         # where its Message Expiry Interval is (-1: none)
    int32_t pad
    double deadline                         # when it expires (epoch seconds; 0: never)


cdef class MqttFlight:
    cdef readonly OutBuf outbuf
    cdef public int receive_max             # the client's Receive Maximum
    cdef public int others                  # QoS 1/2 messages in flight outside it (Python)
    cdef readonly int inflight              # its own in flight (PUBACK not yet)
    cdef readonly Py_ssize_t queued         # waiting for room in the window
    cdef public Py_ssize_t max_queued
    cdef readonly Py_ssize_t queued_bytes
    cdef readonly int64_t sent
    cdef readonly int64_t acked
    cdef readonly int64_t dropped           # not queued: max_queued or the byte bound reached
    cdef readonly int64_t expired           # their expiry interval passed while they waited
    cdef public object wake                 # () when room frees and it has nothing to send
    cdef uint16_t *slots                    # the ring of packet ids in flight (0: free)
    cdef int mask                           # its size - 1
    cdef int next_id                        # 1 .. MQTT_FLIGHT_IDS
    cdef char *q                            # the queue: FlightEntry + packet, 8-byte aligned
    cdef Py_ssize_t qhead
    cdef Py_ssize_t qtail
    cdef Py_ssize_t qcap
    cdef bint now                           # the packet being built goes out at once

    cdef inline bint _room(self) noexcept
    cdef char *_begin(self, Py_ssize_t size) except? NULL
    cdef int _commit(self, char *p, Py_ssize_t size, Py_ssize_t pid_off, Py_ssize_t exp_off,
                     double deadline, bint was_empty) except -1
    cdef int _ack(self, int pid) except -1
    cdef int _drain(self) except -1
    cdef inline void _pop(self, Py_ssize_t size) noexcept


cdef class MqttTarget(WireTarget):
    cdef readonly int version               # 3 (3.1), 4 (3.1.1) or 5
    cdef readonly str mode                  # "raw", "binary" or "structured"
    cdef int _mode                          # (its MqttMode)
    cdef readonly object subscription_identifier    # MQTT 5: int, or None
    cdef public Py_ssize_t max_packet       # the client's Maximum Packet Size (0: no limit)
    cdef readonly bint lineage              # ffhops and fftrace go too
    cdef readonly int64_t untranslatable    # messages whose subject has no MQTT topic
    cdef readonly int64_t too_large         # packets over max_packet: not sent
    cdef bytes _sid_prop                    # the Subscription Identifier property (b'': none)
    cdef bytes _subject                     # the last message's subject (UTF-8) ...
    cdef bytes _topic                       # ... and its topic (None: it has none)
    cdef readonly int qos                   # the subscription's QoS (1: through flight)
    cdef readonly MqttFlight flight         # QoS 1: the connection's packet ids and window
    cdef readonly bint retain_as_published
    cdef public object fallback             # (event) the messages C leaves to Python

    cdef int _write(self, WireMsg *m) except -1
    cdef int _translate(self, WireMsg *m) except -1
