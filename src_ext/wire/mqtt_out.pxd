# The interface of mqtt_out.pyx's class (the bodies and docstrings are there).

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

    cdef int _write(self, WireMsg *m) except -1
    cdef int _translate(self, WireMsg *m) except -1
