# The interface of router.pyx's classes (the bodies and docstrings are there).

cdef class RateLimit:
    cdef readonly double msgs_rate
    cdef readonly double bytes_rate
    cdef readonly double burst
    cdef double tm                          # tokens (events, bytes); below 0: in debt
    cdef double tb
    cdef int64_t last                       # the monotonic time of the last refill
    cdef readonly int64_t taken             # events and payload bytes taken
    cdef readonly int64_t taken_bytes

    cdef inline void _refill(self) noexcept
    cdef inline void _take(self, int64_t nbytes) noexcept


cdef class SubTarget:
    cdef readonly object callback
    cdef readonly object pending            # deque of events (queued mode)
    cdef object _push
    cdef object _pop
    cdef object _popleft
    cdef readonly int64_t max_pending       # events, 0 = no limit
    cdef readonly int64_t max_pending_bytes # bytes, 0 = no limit
    cdef readonly int64_t pending_bytes
    cdef int on_full_
    cdef public object wake                 # called when an event is queued while waiting
    cdef public bint waiting
    cdef readonly bint closed
    cdef readonly bint cut                  # closed as a slow consumer
    cdef public object owner                # the Subscription (for handlers)
    cdef readonly int64_t delivered
    cdef readonly int64_t delivered_bytes   # payload bytes of what it delivered
    cdef readonly int64_t dropped
    cdef readonly int64_t errors
    cdef readonly int64_t handle
    cdef readonly bint conflate             # keep only the latest pending event per subject
    cdef dict latest                        # conflate: subject -> its latest pending event
                                            # (``pending`` then holds the subjects, in order)
    cdef readonly int64_t conflated         # pending events replaced by a newer one

    cdef int _queue(self, Event e, Router r) except -1
    cdef int _queue_latest(self, Event e, Router r) except -1
    cdef int _cut_off(self, Router r) except -1


cdef class StreamTarget:
    cdef readonly str name
    cdef readonly Log log
    cdef public list listeners
    cdef readonly int64_t appended
    cdef readonly int64_t appended_bytes    # payload bytes of what it stored
    cdef readonly int64_t rejected
    cdef readonly int64_t duplicates        # events not stored again (duplicate window)
    cdef public bint dedup                  # keep (source, id) in the log's dedup window
    cdef uint64_t stamp


cdef class Router:
    cdef readonly Matcher matcher
    cdef readonly str name
    cdef readonly str source
    cdef bytes source_b                     # its UTF-8 bytes
    cdef public int hop_limit
    cdef public object error_handler        # (exc, subscription) for callback errors
    cdef public RateLimit ingress           # the account's ingress quota (None: none)
    cdef public Matcher trust_on            # subjects under a trust policy (None: none)
    cdef public object trust_check          # (subject, record | Event | None, the trust_on
                                            # match of subject): raises
                                            # SignatureError to refuse (fastflow.trust)
    cdef public object advisory_handler     # (kind, info) for slow consumers, loops
                                            # with attributes (None: sent without them)
    cdef public bint closed                 # publish raises once set
    cdef readonly str last_stream           # the stream that stored the last publish
    cdef readonly bint last_duplicate       # ... had it already (its seq is the original's)
    cdef char *scratch
    cdef Py_ssize_t scap
    cdef uint64_t stamp
    cdef object last_subject                # publish_batch: the last subject matched,
    cdef uint64_t last_version              # the matcher's version then,
    cdef uint64_t last_h                    # its hash
    cdef I64Vec last_res                    # and its match result
    cdef Log dedup_hint                     # the log whose duplicate window was looked
                                            # up last (a batch prefetches there)
    cdef int64_t mono_batch                 # a batch's monotonic time (0: read per event)
    cdef int64_t now_batch                  # a batch's time, its events' ts (0: per event)
    cdef readonly int64_t n_published
    cdef readonly int64_t n_delivered
    cdef readonly int64_t n_appended
    cdef readonly int64_t bytes_published   # payload bytes (metering: the data, as
    cdef readonly int64_t bytes_delivered   # nats-server counts an account's bytes)
    cdef readonly int64_t bytes_appended
    cdef readonly int64_t n_dropped_no_interest
    cdef readonly int64_t n_dropped_slow
    cdef readonly int64_t n_conflated       # pending events and messages replaced by a newer
                                            # one (conflating subscriptions, wire targets)
    cdef readonly int64_t n_dropped_loop
    cdef readonly int64_t n_rejected
    cdef readonly int64_t n_callback_errors
    cdef public bint prefer_local           # queue groups with remote members (a cluster
                                            # link's forwarders): a local member first
    cdef dict interest_of                   # handle -> (pattern, queue) of every target but
                                            # a cluster link's (its interest, for the link)
    cdef public object on_interest          # (pattern, queue, +1 | -1) as that changes
    cdef public int32_t only_q              # the next delivery only: -1 every target, -2 the
                                            # plain ones, >= 0 one local member of that group
    cdef readonly int64_t sample_every      # the subject sampler: every this many published
                                            # events, one counts (0: off)
    cdef int64_t sample_left                # published events until the next one counted
    cdef char *sample_buf                   # SAMPLE_BYTES of entries (NULL while off)
    cdef Py_ssize_t sample_used             # bytes of the entries written
    cdef Py_ssize_t sample_last             # the offset of the last one (-1: none)
    cdef int64_t sample_dropped             # the weight of the entries that did not fit

    cdef inline void _sample(self, const char *p, Py_ssize_t n, int64_t count) noexcept
    cdef void _sample_put(self, const char *p, Py_ssize_t n, int64_t weight) noexcept
    cdef char *_room(self, Py_ssize_t n) except NULL
    cdef char *_record(self, Event ev, Py_ssize_t *rlen, const char **dp,
                       Py_ssize_t *dn) except NULL
    cdef int _trust(self, object subject, const char *rec, Py_ssize_t rn, Event ev) except -1
    cdef int64_t _publish_wire(self, object subject, const char *reply, Py_ssize_t replyn,
                               const char *rec, Py_ssize_t rn, OutBuf origin,
                               bint built=*, bint trust_checked=*) except -1
    cdef int64_t _publish_matched(self, object subject, const char *p, Py_ssize_t n,
                                  uint64_t h, const int64_t *res, const char *rec,
                                  Py_ssize_t rn, const char *reply, Py_ssize_t replyn,
                                  OutBuf origin, Event ev) except -1
    cdef char *_default_header(self, Event ev, Py_ssize_t *rlen) except NULL
    cdef inline bint _is_remote(self, int64_t h)
    cdef int _drop_interest(self, int64_t h) except -1
    cdef inline object _value(self, int64_t h)
    cdef int64_t _route(self, object subject, object data, Event ev, int64_t now) except -1
    cdef Py_ssize_t _publish_run(self, object subject, tuple datas, Py_ssize_t n,
                                 int64_t now) except -1
    cdef int64_t _route_cached(self, object subject, object data, Event ev,
                               int64_t now) except -1
    cdef int64_t _deliver(self, object subject, const char *p, Py_ssize_t n, uint64_t h,
                          const int64_t *res, object data, Event ev, int64_t now,
                          const char *wrec=*, Py_ssize_t wrn=*, const char *reply=*,
                          Py_ssize_t replyn=*, OutBuf origin=*) except -1
    cdef int _callback_failed(self, SubTarget su) except -1
    cdef int _callback_error(self, exc, SubTarget su) except -1
    cdef int _slow_consumer(self, SubTarget su) except -1
    cdef int _loop_break(self, subject, Event ev, str reason) except -1
    cdef object _publish(self, object subject, object data, dict attributes)
    cdef object _publish_json(self, object body, object routing_subject, bint batch,
                              OutBuf origin, object check, bint acks)


cdef class ImportTarget(WireTarget):
    cdef readonly Router dest               # the importing account's router
    cdef readonly int strip                 # bytes cut from the front of the subject
    cdef readonly bytes prefix              # put before what is left
    cdef readonly object reply_map          # (bytes reply) -> bytes or None; None: no reply
    cdef readonly object subject_map        # (bytes subject) -> bytes or None (refused)
    cdef readonly int max_depth             # nested imports at which a message stops
    cdef readonly int64_t forwarded
    cdef readonly int64_t forwarded_bytes
    cdef readonly int64_t refused
    cdef readonly int64_t looped
    cdef bytes last_in                      # the last source subject rewritten
    cdef str last_out                       # ... and what it became

    cdef int _write(self, WireMsg *m) except -1
    cdef object _rewrite(self, WireMsg *m)
