# The publish path: match once, append once to every capturing stream,
# deliver to every interested subscription (the engine's hot loop, in C).
#
# One Matcher holds both kinds of targets: a SubTarget per subscription and
# a StreamTarget per (stream, subject pattern).  A publish copies the
# matched handles out of the matcher before it runs any Python code
# (callbacks may publish, subscribe or unsubscribe), and resolves each
# handle again when it gets to it, so a target removed meanwhile is skipped.

from cpython.dict cimport PyDict_GetItem
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport UINT32_MAX
from collections import deque as _deque

cdef enum:
    LOCAL_HANDLES = 32              # matched handles kept on the stack
    LOCAL_WORDS = 64                # words of a copied match result on the stack
    SCRATCH_MIN = 4096              # bytes of the record scratch buffer
    EVENT_OVERHEAD = 64             # bytes a queued event counts beyond its data
    REPLIES_MAX = 65536             # reply subjects a WireTarget's ``replies`` list takes
    _DEDUP_AHEAD = 4                # publish_json_batch: events between a prefetch and its use

cdef enum OnFull:
    FULL_DROP_OLDEST = 0
    FULL_DROP_NEW = 1
    FULL_CUT = 2

_ON_FULL = {'drop_oldest': FULL_DROP_OLDEST, 'drop_new': FULL_DROP_NEW, 'cut': FULL_CUT}
_ON_FULL_NAMES = {v: k for k, v in _ON_FULL.items()}


cdef inline str _subject_str(object subject):
    if type(subject) is str:
        return <str>subject
    if isinstance(subject, bytes):
        try:
            return (<bytes>subject).decode('utf-8')
        except UnicodeDecodeError:
            raise SubjectError('invalid subject {!r}: not UTF-8'.format(subject)) from None
    return str(subject)


cdef inline int64_t _rec_payload(const char *p, Py_ssize_t n) noexcept:
    """The data bytes of event record ``p[:n]`` (0 for one that is not)."""
    cdef Py_ssize_t off
    if n < EV_HEADER:
        return 0
    off = (EV_HEADER + (EV_GENID if <uint8_t>p[1] & EVF_GENID else _rd16(p + 4)) + _rd16(p + 6)
           + _rd16(p + 8) + _rd16(p + 10) + _rd32(p + 12))
    return n - off if off <= n else 0


cdef inline int64_t _payload_len(object data) except -1:
    if type(data) is bytes:
        return PyBytes_GET_SIZE(data)
    return len(data) if data is not None else 0


cdef inline Py_ssize_t _res_words(const int64_t *res) noexcept:
    """int64 words of a matcher result (nplain, ngroups, plain..., groups...)."""
    cdef Py_ssize_t j = 2 + res[0], i
    for i in range(res[1]):
        j += 2 + res[j + 1]
    return j


cdef inline uint64_t _dedup_key(const char *rec, uint32_t *tag, const char **key,
                                uint32_t *n) noexcept:
    """The duplicate window's key of a record: its id and source, told apart
    by the id's length (the tag); returns the key's hash."""
    tag[0] = _rd16(rec + 4)
    key[0] = rec + EV_HEADER
    n[0] = tag[0] + _rd16(rec + 6)
    return ff_hash(key[0], n[0], _SEED ^ tag[0])


cdef object _refusal(str stream, exc):
    """The error a publisher gets when ``stream`` refused its event."""
    try:
        e = type(exc)('stream {!r} did not store the event: {}'.format(stream, exc))
    except TypeError:               # a subclass that takes other arguments
        e = exc
    e.stream = stream
    return e


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class RateLimit:
    """A token bucket for an account's ingress: ``msgs_per_second`` events
    and ``bytes_per_second`` payload bytes (0: no limit on that), ``burst``
    seconds of each deep.  The router takes from it for every publish of a
    connection (``Router.ingress``) and never refuses: the bucket may go
    into debt, and ``wait()`` tells how long the account's publishers must
    pause (their doors stop reading them) for it to be paid back.  Engine
    use."""

    def __init__(self, double msgs_per_second=0, double bytes_per_second=0, double burst=1.0):
        if not (msgs_per_second >= 0 and bytes_per_second >= 0 and burst > 0):
            raise ValueError('rates must be >= 0 and burst > 0')
        self.msgs_rate = msgs_per_second
        self.bytes_rate = bytes_per_second
        self.burst = burst
        self.tm = msgs_per_second * burst
        self.tb = bytes_per_second * burst
        self.last = _mono_ns()

    cdef inline void _refill(self) noexcept:
        cdef int64_t now = _mono_ns()
        cdef double dt = (now - self.last) * 1e-9
        self.last = now
        if self.msgs_rate:
            self.tm = min(self.tm + dt * self.msgs_rate, self.msgs_rate * self.burst)
        if self.bytes_rate:
            self.tb = min(self.tb + dt * self.bytes_rate, self.bytes_rate * self.burst)

    cdef inline void _take(self, int64_t nbytes) noexcept:
        self._refill()
        self.taken += 1
        self.taken_bytes += nbytes
        if self.msgs_rate:
            self.tm -= 1
        if self.bytes_rate:
            self.tb -= nbytes

    def take(self, int64_t n=1, int64_t nbytes=0):
        """Take ``n`` events of ``nbytes`` payload bytes (a publish made in
        Python: the HTTP door's)."""
        self._refill()
        self.taken += n
        self.taken_bytes += nbytes
        if self.msgs_rate:
            self.tm -= n
        if self.bytes_rate:
            self.tb -= nbytes

    def wait(self, int64_t n=0, int64_t nbytes=0):
        """Seconds until the bucket holds ``n`` events and ``nbytes``
        bytes again (0.0: now; with the defaults, until it is out of debt)."""
        cdef double w = 0.0
        self._refill()
        if self.msgs_rate and self.tm < n:
            w = (n - self.tm) / self.msgs_rate
        if self.bytes_rate and self.tb < nbytes:
            w = max(w, (nbytes - self.tb) / self.bytes_rate)
        return w


cdef class SubTarget:
    """The engine side of a subscription: a callback run inline, or a
    bounded queue of pending events (engine use; see fastflow.Subscription).

    ``conflate`` (a queue only): while events are pending, a new event on
    a subject that already has one pending replaces it where it stands
    (counted in ``conflated``); ``pending`` then holds the subjects in the
    order they became pending and ``pop`` returns each one's latest
    event.  ``max_pending`` then counts distinct subjects; at a limit
    ``on_full`` decides for a new subject as for any queue."""

    def __init__(self, callback=None, int64_t max_pending=65536,
                 int64_t max_pending_bytes=64 << 20, on_full='drop_oldest', bint conflate=False):
        if callback is not None and not callable(callback):
            raise TypeError('callback must be callable, got {}'.format(type(callback).__name__))
        if max_pending < 0 or max_pending_bytes < 0:
            raise ValueError('max_pending and max_pending_bytes must be >= 0 (0 = no limit), '
                             'got {} and {}'.format(max_pending, max_pending_bytes))
        if on_full not in _ON_FULL:
            raise ValueError("on_full must be 'drop_oldest', 'drop_new' or 'cut', got {!r}"
                             .format(on_full))
        if conflate and callback is not None:
            raise ValueError('conflate needs a queued subscription: a callback takes every '
                             'event as it is published, nothing is ever pending')
        self.callback = callback
        self.pending = _deque()
        self._push = self.pending.append
        self._pop = self.pending.pop
        self._popleft = self.pending.popleft
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.on_full_ = _ON_FULL[on_full]
        self.conflate = conflate
        if conflate:
            self.latest = {}

    @property
    def on_full(self):
        return _ON_FULL_NAMES[self.on_full_]

    def pop(self):
        """The oldest pending event (IndexError when none); conflating:
        the latest event of the subject pending longest."""
        cdef Event e
        if self.conflate:
            e = self.latest.pop(self._popleft())
        else:
            e = self._popleft()
        self.pending_bytes -= len(<bytes>e._data) + EVENT_OVERHEAD
        return e

    def pop_many(self, Py_ssize_t n):
        """Up to ``n`` pending events, oldest first (a list)."""
        cdef list out = []
        cdef Event e
        while n > 0 and self.pending:
            if self.conflate:
                e = self.latest.pop(self._popleft())
            else:
                e = self._popleft()
            self.pending_bytes -= len(<bytes>e._data) + EVENT_OVERHEAD
            out.append(e)
            n -= 1
        return out

    def close(self):
        self.closed = True

    cdef int _cut_off(self, Router r) except -1:
        """on_full 'cut': drop everything pending, close, tell."""
        self.dropped += 1 + len(self.pending)
        r.n_dropped_slow += 1 + len(self.pending)
        self.pending.clear()
        if self.conflate:
            self.latest.clear()
        self.pending_bytes = 0
        self.closed = True
        self.cut = True
        if self.handle in r.matcher:
            r.matcher.remove(self.handle)   # no more events for it
            r._drop_interest(self.handle)
        r._slow_consumer(self)
        if self.wake is not None:
            self.waiting = False
            self.wake()
        return 0

    cdef int _queue(self, Event e, Router r) except -1:
        cdef Py_ssize_t size
        cdef Event old
        if self.conflate:
            return self._queue_latest(e, r)
        size = len(<bytes>e._data) + EVENT_OVERHEAD
        if self.max_pending_bytes and size > self.max_pending_bytes and self.on_full_ != FULL_CUT:
            self.dropped += 1           # can never fit: drop it, keep the queue
            r.n_dropped_slow += 1
            return 0
        if ((self.max_pending and len(self.pending) >= self.max_pending)
                or (self.max_pending_bytes and self.pending_bytes + size > self.max_pending_bytes)):
            if self.on_full_ == FULL_DROP_NEW or (
                    self.on_full_ == FULL_DROP_OLDEST and not self.pending):
                self.dropped += 1
                r.n_dropped_slow += 1
                return 0
            if self.on_full_ == FULL_CUT:
                return self._cut_off(r)
            while self.pending and (
                    (self.max_pending and len(self.pending) >= self.max_pending)
                    or (self.max_pending_bytes
                        and self.pending_bytes + size > self.max_pending_bytes)):
                old = self._popleft()
                self.pending_bytes -= len(<bytes>old._data) + EVENT_OVERHEAD
                self.dropped += 1
                r.n_dropped_slow += 1
        self._push(e)
        self.pending_bytes += size
        self.delivered += 1
        if self.waiting:
            self.waiting = False
            self.wake()
        return 1

    cdef int _queue_latest(self, Event e, Router r) except -1:
        """``_queue`` of a conflating subscription: ``e`` replaces the
        pending event of its subject in place, or queues its subject at
        the back under the limits (``max_pending`` distinct subjects)."""
        cdef Py_ssize_t size = len(<bytes>e._data) + EVENT_OVERHEAD, osize
        cdef object subject = e.routing_subject
        cdef PyObject *op
        cdef Event old
        if self.max_pending_bytes and size > self.max_pending_bytes and self.on_full_ != FULL_CUT:
            self.dropped += 1           # can never fit: drop it, keep the queue
            r.n_dropped_slow += 1
            return 0
        op = PyDict_GetItem(self.latest, subject)
        if op != NULL:
            old = <Event>op
            osize = len(<bytes>old._data) + EVENT_OVERHEAD
            if not (self.max_pending_bytes
                    and self.pending_bytes - osize + size > self.max_pending_bytes):
                self.latest[subject] = e            # (a dict keeps the key's place)
                self.pending_bytes += size - osize
                self.conflated += 1
                r.n_conflated += 1
                self.delivered += 1
                return 1
            if self.on_full_ == FULL_DROP_NEW:
                self.dropped += 1       # (the pending one stays)
                r.n_dropped_slow += 1
                return 0
            # the bigger one does not fit even in the older one's room: the
            # older one is superseded and the subject queues again as a new
            # one, under on_full (rare: a linear search of the queue)
            self.pending.remove(subject)
            del self.latest[subject]
            self.pending_bytes -= osize
            self.conflated += 1
            r.n_conflated += 1
        if ((self.max_pending and len(self.pending) >= self.max_pending)
                or (self.max_pending_bytes and self.pending_bytes + size > self.max_pending_bytes)):
            if self.on_full_ == FULL_DROP_NEW or (
                    self.on_full_ == FULL_DROP_OLDEST and not self.pending):
                self.dropped += 1
                r.n_dropped_slow += 1
                return 0
            if self.on_full_ == FULL_CUT:
                return self._cut_off(r)
            while self.pending and (
                    (self.max_pending and len(self.pending) >= self.max_pending)
                    or (self.max_pending_bytes
                        and self.pending_bytes + size > self.max_pending_bytes)):
                old = self.latest.pop(self._popleft())
                self.pending_bytes -= len(<bytes>old._data) + EVENT_OVERHEAD
                self.dropped += 1
                r.n_dropped_slow += 1
        self._push(subject)
        self.latest[subject] = e
        self.pending_bytes += size
        self.delivered += 1
        if self.waiting:
            self.waiting = False
            self.wake()
        return 1


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class StreamTarget:
    """The engine side of a stream: its log, and listeners called with the
    seq of every event appended (durable push consumers)."""

    def __init__(self, str name, Log log not None):
        self.name = name
        self.log = log
        self.listeners = []

    def append_at(self, seq, subject, record):
        """Store the event ``record`` (checked as a PUB frame's body is) at
        ``seq`` of the log, a mirror's append (the seq of the stream it
        mirrors; the seqs between are skipped), count it and tell the
        listeners; returns ``seq``.  EventError for bytes that are not an
        event record, ValueError for a seq not after the log's last."""
        cdef Py_buffer view
        cdef int64_t s, plen
        cdef Log lg = self.log
        subject = _subject_str(subject)
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            _ev_check(subject, <const char *>view.buf, view.len)
            plen = _rec_payload(<const char *>view.buf, view.len)
            lg._enter()
            try:
                s = lg._append_at(seq, subject, record, 0)
            finally:
                lg.busy -= 1
        finally:
            PyBuffer_Release(&view)
        self.appended += 1
        self.appended_bytes += plen
        if self.listeners:
            for listener in list(self.listeners):
                listener(s)
        return s


cdef class Router:
    """The publish path of a Flow (engine use; see fastflow.Flow)."""

    def __init__(self, str name='fastflow', str source=_attrs.DEFAULT_SOURCE, int hop_limit=32,
                 Py_ssize_t cache_size=DEFAULT_CACHE_SIZE):
        if not source:
            raise ValueError('source must be a non-empty str (a URI-reference)')
        if hop_limit < 0:
            raise ValueError('hop_limit must be >= 0 (0 = no limit), got {}'.format(hop_limit))
        self.matcher = Matcher(cache_size)
        self.name = name
        self.source = source
        self.source_b = source.encode('utf-8', 'surrogatepass')
        if len(self.source_b) > EV_MAX_STRING:
            raise ValueError('source is limited to {} bytes'.format(EV_MAX_STRING))
        self.hop_limit = hop_limit
        self.only_q = -1
        self.interest_of = {}
        self.sample_last = -1

    def __dealloc__(self):
        free(self.scratch)
        free(self.last_res.data)
        PyMem_Free(self.sample_buf)

    # -- targets ---------------------------------------------------------------

    def add(self, pattern, target, queue=None):
        """Register a SubTarget or a StreamTarget on ``pattern``; returns its handle."""
        if type(target) is not SubTarget and type(target) is not StreamTarget \
                and not isinstance(target, WireTarget):
            raise TypeError('target must be a SubTarget, a StreamTarget or a WireTarget '
                            '(NativeTarget, NatsTarget)')
        if queue is not None and type(target) is StreamTarget:
            raise ValueError('streams do not take a queue group')
        h = self.matcher.add(pattern, target, queue)
        if type(target) is SubTarget:
            (<SubTarget>target).handle = h
        elif isinstance(target, WireTarget):
            (<WireTarget>target).handle = h
            if (<WireTarget>target).remote or type(target) is ImportTarget:
                # a cluster link's own, or an import (each node imports what
                # is published on it): not interest to ask other nodes for
                return h
        if isinstance(pattern, bytes):
            pattern = (<bytes>pattern).decode('utf-8')
        self.interest_of[h] = (pattern, queue)
        if self.on_interest is not None:
            self.on_interest(pattern, queue, 1)
        return h

    def remove(self, handle):
        self.dedup_hint = None          # (it may be the log of a stream going away)
        self.matcher.remove(handle)
        self._drop_interest(handle)

    def remove_many(self, handles):
        """Remove the live targets of ``handles`` at once (a closing
        connection's); returns how many were removed."""
        self.dedup_hint = None
        handles = list(handles)
        n = self.matcher.remove_many(handles)
        if self.interest_of:
            for h in handles:
                self._drop_interest(h)
        return n

    cdef int _drop_interest(self, int64_t h) except -1:
        cdef object pq = self.interest_of.pop(h, None)
        if pq is not None and self.on_interest is not None:
            self.on_interest(pq[0], pq[1], -1)
        return 0

    def interest(self):
        """The (pattern, queue) of every target but a cluster link's, one
        per target (a pattern twice when two targets want it)."""
        return list(self.interest_of.values())

    # -- the subject sampler ---------------------------------------------------

    def sample_subjects(self, int64_t every):
        """Sample the routing subjects of published events: every
        ``every``-th event counted in ``n_published`` (those dropped for no
        interest or as loops too) records its subject, for ``take_samples``.
        0 turns sampling off and forgets what was sampled; another value
        keeps the samples and starts counting again.  A run of one subject
        in ``publish_batch`` is recorded as one entry of its weight."""
        if every < 0:
            raise ValueError('every must be >= 0 (0 = off), got {}'.format(every))
        if every == 0:
            PyMem_Free(self.sample_buf)
            self.sample_buf = NULL
            self.sample_used = 0
            self.sample_last = -1
            self.sample_dropped = 0
        elif self.sample_buf == NULL:
            self.sample_buf = <char *>PyMem_Malloc(SAMPLE_BYTES)
            if self.sample_buf == NULL:
                raise MemoryError()
        self.sample_every = every
        self.sample_left = every

    def take_samples(self):
        """``(samples, dropped)``: ``samples`` the subjects recorded since
        the last call, {subject: weight} (the number of sampled events),
        ``dropped`` the weight that did not fit in the buffer (SAMPLE_BYTES);
        both start again from empty."""
        cdef dict out = {}
        cdef Py_ssize_t off = 0
        cdef const char *e
        cdef uint16_t sn
        cdef int64_t dropped = self.sample_dropped
        while off < self.sample_used:
            e = self.sample_buf + off
            sn = _rd16(e + 4)
            subject = PyUnicode_DecodeUTF8(e + SAMPLE_HEAD, sn, 'surrogatepass')
            out[subject] = out.get(subject, 0) + _rd32(e)
            off += SAMPLE_HEAD + sn
        self.sample_used = 0
        self.sample_last = -1
        self.sample_dropped = 0
        return out, dropped

    cdef inline void _sample(self, const char *p, Py_ssize_t n, int64_t count) noexcept:
        """Count ``count`` published events of subject ``p[:n]`` down to the
        sampler's next hits; record the hits as one entry (off: one compare)."""
        if self.sample_every == 0:
            return
        if count < self.sample_left:
            self.sample_left -= count
            return
        count -= self.sample_left       # (the events after the first hit)
        self.sample_left = self.sample_every - count % self.sample_every
        self._sample_put(p, n, 1 + count // self.sample_every)

    cdef void _sample_put(self, const char *p, Py_ssize_t n, int64_t weight) noexcept:
        """Record subject ``p[:n]`` with ``weight``: added to the last
        entry when that is of the same subject, else a new entry; one that
        does not fit is counted in ``sample_dropped``."""
        cdef char *e
        cdef uint32_t w
        cdef int64_t room
        if self.sample_last >= 0:
            e = self.sample_buf + self.sample_last
            if _rd16(e + 4) == n and memcmp(e + SAMPLE_HEAD, p, n) == 0:
                w = _rd32(e)
                room = UINT32_MAX - w
                if weight <= room:
                    _wr32(e, <uint32_t>(w + weight))
                    return
                _wr32(e, UINT32_MAX)
                weight -= room
        while weight > 0:
            # (a subject is at most MAX_SUBJECT_LEN bytes, so its length a uint16)
            if n > MAX_SUBJECT_LEN or self.sample_used + SAMPLE_HEAD + n > SAMPLE_BYTES:
                self.sample_dropped += weight
                return
            w = <uint32_t>(weight if weight < UINT32_MAX else UINT32_MAX)
            e = self.sample_buf + self.sample_used
            _wr32(e, w)
            _wr16(e + 4, <uint16_t>n)
            memcpy(e + SAMPLE_HEAD, p, n)
            self.sample_last = self.sample_used
            self.sample_used += SAMPLE_HEAD + n
            weight -= w

    # -- publishing ------------------------------------------------------------

    cdef char *_room(self, Py_ssize_t n) except NULL:
        _grow(<void **>&self.scratch, &self.scap, n, 1, SCRATCH_MIN)
        return self.scratch

    cdef char *_record(self, Event ev, Py_ssize_t *rlen, const char **dp,
                       Py_ssize_t *dn) except NULL:
        """The record of ``ev``, in the scratch buffer: all of it, or (the
        common case, every attribute a default) its header, with the data
        to follow from ``dp[:dn]``."""
        cdef char *rec
        if (ev._gpre == _id_prefix and ev._gid and ev._type is None and ev._trace is None
                and ev._rest is None and ev._rest_raw is None and ev._rflags == 0
                and ev.source is self.source):
            rec = self._default_header(ev, rlen)
            dp[0] = PyBytes_AS_STRING(ev._data)
            dn[0] = len(<bytes>ev._data)
        else:
            rlen[0] = _ev_size(ev, len(<bytes>ev._data))
            rec = self._room(rlen[0])
            _ev_write(ev, rec, ev._data, rlen[0])
            dp[0] = NULL
            dn[0] = 0
        return rec

    cdef int _trust(self, object subject, const char *rec, Py_ssize_t rn, Event ev) except -1:
        """The trust policy's check of a publish on ``subject`` (one of its
        subjects): of record ``rec[:rn]``, or ``ev``, or (both unset) an
        event with the defaults.  Raises (SignatureError) to refuse it;
        nothing is matched or counted before, so a refusal leaves no trace
        but the policy's counters."""
        if self.trust_check is None:
            return 0
        hits = self.trust_on.match(subject)
        if not hits:
            return 0
        # (the match result goes along: the policy picks its rule from it)
        if rec != NULL:
            self.trust_check(subject, PyBytes_FromStringAndSize(rec, rn), hits)
        else:
            self.trust_check(subject, ev, hits)
        return 0

    cdef int64_t _publish_wire(self, object subject, const char *reply, Py_ssize_t replyn,
                               const char *rec, Py_ssize_t rn, OutBuf origin,
                               bint built=False, bint trust_checked=False) except -1:
        """Publish an event record received from the network (a PUB frame);
        ``built``: a record the door made itself (no need to check it);
        ``trust_checked``: one the caller had the trust policy check."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef const int64_t *res
        cdef uint64_t h
        cdef Matcher m = self.matcher
        cdef Event ev = None
        if self.closed:
            raise FastflowError('flow {!r} is closed'.format(self.name))
        if replyn:
            # (written into subscribers' MSG lines and frames: a literal subject)
            check_reply(reply, replyn)
        as_utf8(subject, &p, &n, False)
        h = ff_hash(p, n, _SEED)
        if not built:
            _ev_check(subject, rec, rn)
        if self.trust_on is not None and not trust_checked:
            self._trust(subject, rec, rn, None)
        if _rd16(rec + 2) or _rd16(rec + 10):
            # lineage: the loop breaker needs the event (rare; made before
            # the match: the result is the matcher's until _deliver copies it)
            ev = _ev_decode(subject, rec, rn, 0, None, 0, None)
        m._match_res(subject, p, n, h, &res)
        return self._publish_matched(subject, p, n, h, res, rec, rn, reply, replyn, origin, ev)

    cdef int64_t _publish_matched(self, object subject, const char *p, Py_ssize_t n,
                                  uint64_t h, const int64_t *res, const char *rec,
                                  Py_ssize_t rn, const char *reply, Py_ssize_t replyn,
                                  OutBuf origin, Event ev) except -1:
        """The rest of ``_publish_wire`` (also the subscription index's
        sinks'): checked record ``rec[:rn]`` on subject ``p[:n]`` (``h``
        its hash), ``res`` its matcher result; ``ev``: the record's event
        when it carries lineage (hops or a trace), else None."""
        if self.closed:
            raise FastflowError('flow {!r} is closed'.format(self.name))
        if ev is not None:
            return self._deliver(subject, p, n, h, res, None, ev, _now_ns(), NULL, 0, reply,
                                 replyn, origin)
        # (now = 0: the time is read when something needs it, a stream or an
        # in-process subscriber; wire-to-wire deliveries do without)
        return self._deliver(subject, p, n, h, res, None, None, 0, rec, rn, reply,
                             replyn, origin)

    def publish_record(self, subject, record, reply=None, OutBuf origin=None, *,
                       bint trust_checked=False, bint groups=True, group=None):
        """Publish an event given as its record (``Event.encode()``, a PUB
        frame's body) without decoding it; ``reply`` goes to network
        subscribers; ``origin`` is the publishing connection (for its
        ``echo``); ``trust_checked``: the caller had the trust policy check
        it (``flow.trust.check_event``: a door that checks a request's
        events before it publishes any).  Returns the seq in the first
        stream that stored it (its name: ``last_stream``), 0 if none did.

        A cluster link's delivery of an event from another node:
        ``groups=False`` delivers to the targets outside queue groups only;
        ``group`` (a queue group's name) to one local member of that group
        only (none if it has no local member)."""
        cdef Py_buffer view
        cdef const char *rp = NULL
        cdef Py_ssize_t rn = 0
        cdef int32_t only = -1
        cdef object q
        if group is not None:
            q = self.matcher.qids.get(group)
            if q is None:
                return 0                # no member here (any more)
            only = <int32_t>q
        elif not groups:
            only = -2
        if reply is not None:
            as_utf8(reply, &rp, &rn, False)
        PyObject_GetBuffer(record, &view, PyBUF_SIMPLE)
        try:
            self.only_q = only
            return self._publish_wire(_subject_str(subject), rp, rn, <const char *>view.buf,
                                      view.len, origin, False, trust_checked)
        finally:
            self.only_q = -1
            PyBuffer_Release(&view)

    cdef char *_default_header(self, Event ev, Py_ssize_t *rlen) except NULL:
        """The record of an event with every default (the common case), but
        its data: the header, the id and the source."""
        cdef Py_ssize_t srcn = len(self.source_b)
        cdef char *rec = self._room(EV_HEADER + EV_GENID + srcn)
        rlen[0] = _ev_default_head(rec, ev._gid, PyBytes_AS_STRING(self.source_b), srcn,
                                   <uint16_t>ev.hops)
        return rec

    cdef inline bint _is_remote(self, int64_t h):
        """Whether handle ``h`` is a cluster link's forwarder."""
        cdef object v = self._value(h)
        return v is not None and ff_is_kind(v, WireTarget) and (<WireTarget>v).remote

    cdef inline object _value(self, int64_t h):
        """The target of handle ``h``, or None if it was removed."""
        cdef Sub *s = &self.matcher.subs[<uint32_t>h]
        if s.value == NULL or s.gen != <uint32_t>(h >> 32):
            return None
        return <object>s.value

    cdef int64_t _route(self, object subject, object data, Event ev, int64_t now) except -1:
        """Publish one event: ``ev`` when the publisher gave attributes or an
        Event (its data is set), else ``data`` (bytes) with the defaults."""
        cdef const char *p
        cdef Py_ssize_t n
        cdef const int64_t *res
        cdef uint64_t h
        cdef Matcher m = self.matcher
        if self.closed:
            raise FastflowError('flow {!r} is closed'.format(self.name))
        as_utf8(subject, &p, &n, False)
        if self.trust_on is not None:
            self._trust(subject, NULL, 0, ev)
        h = ff_hash(p, n, _SEED)
        m._match_res(subject, p, n, h, &res)
        return self._deliver(subject, p, n, h, res, data, ev, now)

    cdef int64_t _route_cached(self, object subject, object data, Event ev,
                               int64_t now) except -1:
        """``_route`` for batches: a run of one subject object is matched once
        (while no subscription changes)."""
        cdef Matcher m = self.matcher
        cdef const char *p
        cdef Py_ssize_t n
        cdef const int64_t *res
        cdef uint64_t h
        cdef uint64_t version = m.n_inserts + m.n_removes
        cdef Py_ssize_t n_words
        if self.closed:
            raise FastflowError('flow {!r} is closed'.format(self.name))
        if self.trust_on is not None:
            self._trust(subject, NULL, 0, ev)
        if subject is not self.last_subject or version != self.last_version:
            as_utf8(subject, &p, &n, False)
            h = ff_hash(p, n, _SEED)
            m._match_res(subject, p, n, h, &res)
            self.last_res.n = 0
            n_words = _res_words(res)
            _i64_reserve(&self.last_res, n_words)
            memcpy(self.last_res.data, res, n_words * sizeof(int64_t))
            self.last_res.n = n_words
            self.last_subject = subject
            self.last_version = version
            self.last_h = h
        as_utf8(subject, &p, &n, False)
        return self._deliver(subject, p, n, self.last_h, self.last_res.data, data, ev, now)

    cdef int64_t _deliver(self, object subject, const char *p, Py_ssize_t n, uint64_t h,
                          const int64_t *res, object data, Event ev, int64_t now,
                          const char *wrec=NULL, Py_ssize_t wrn=0, const char *reply=NULL,
                          Py_ssize_t replyn=0, OutBuf origin=None) except -1:
        """The rest of a publish, from the match result ``res``: of ``ev``,
        or of ``data`` with the defaults, or (from the network) of the
        record ``wrec[:wrn]`` with its ``reply`` subject."""
        cdef Py_ssize_t nh = 0, i, cnt, j, rlen = 0
        cdef int64_t local[LOCAL_HANDLES]
        cdef int64_t *hs = local
        cdef int64_t localw[LOCAL_WORDS]
        cdef int64_t *rw = localw
        cdef Py_ssize_t nplain, ngroups, nw
        cdef int32_t qid
        cdef Matcher m = self.matcher
        cdef object v
        cdef StreamTarget st
        cdef SubTarget su
        cdef int64_t seq = 0, s
        cdef uint64_t stamp
        cdef char *rec = NULL
        cdef list notify = None
        cdef PyObject *r
        cdef int ok
        cdef const char *dp = NULL
        cdef Py_ssize_t dn = 0
        cdef WireTarget wt
        cdef WireMsg msg                    # what the wire targets get
        cdef object mstream = None          # (msg.stream, held)
        cdef bint rec_scratch = False       # rec is in self.scratch (a callback's
                                            # publish may overwrite it: made again)
        # the duplicate window's key of a record: its id and source, told
        # apart by the id's length (the tag), and the key's hash
        cdef const char *dkey = NULL
        cdef uint32_t dtag = 0, dlen = 0
        cdef uint64_t dhash = 0
        cdef int64_t mono = 0, hit
        cdef bint dd
        cdef object refused = None          # the first stream's refusal (raised after
                                            # the delivery: subscribers get the event)
        cdef int64_t plen                   # the payload's bytes (metering)
        global _id_counter
        cdef int32_t only = self.only_q     # (this delivery's only: a callback's
        self.only_q = -1                    # publish is not restricted)
        cdef int64_t hq
        cdef Py_ssize_t k, c
        msg.rec = NULL                      # (NULL: not made yet)
        msg.event_gen = 0
        nplain = res[0]
        ngroups = res[1]
        self.last_stream = None
        self.last_duplicate = False
        if wrec != NULL:
            plen = _rec_payload(wrec, wrn)
        elif ev is not None:
            plen = _payload_len(ev._data)
        else:
            plen = _payload_len(data)
        if origin is not None and not origin.backbone:
            origin.pub_bytes += plen
            if self.ingress is not None:
                self.ingress._take(plen)
        if nplain + ngroups == 0:
            self.n_published += 1
            self._sample(p, n, 1)
            self.bytes_published += plen
            self.n_dropped_no_interest += 1
            return 0
        # copy the match result before any Python code runs (another thread
        # may match, and so overwrite or free ``res``, as soon as one does)
        nw = _res_words(res)
        if nw > LOCAL_WORDS:
            rw = <int64_t *>malloc(nw * sizeof(int64_t))
            if rw == NULL:
                raise MemoryError()
        memcpy(rw, res, nw * sizeof(int64_t))
        try:
            if ev is not None and (ev.hops or ev._trace is not None):
                reason = _attrs.check_lineage(self.name, subject, ev.hops, ev._trace,
                                              self.hop_limit)
                if reason is not None:
                    self.n_published += 1
                    self._sample(p, n, 1)
                    self.n_dropped_loop += 1
                    self._loop_break(subject, ev, reason)
                    return 0
            # the plain handles, then one member per queue group (round robin;
            # a local member before a cluster link's forwarder); a delivery
            # from a cluster link: the plain handles only, or one local
            # member of one group only
            if ngroups == 0 or only == -2:
                hs = rw + 2
                nh = nplain if only < 0 else 0
            else:
                if nplain + ngroups > LOCAL_HANDLES:
                    hs = <int64_t *>malloc((nplain + ngroups) * sizeof(int64_t))
                    if hs == NULL:
                        raise MemoryError()
                nh = 0
                if only == -1:
                    memcpy(hs, rw + 2, nplain * sizeof(int64_t))
                    nh = nplain
                j = 2 + nplain
                for i in range(ngroups):
                    qid = <int32_t>rw[j]
                    cnt = rw[j + 1]
                    if only >= 0 and qid != only:
                        j += 2 + cnt
                        continue
                    k = m.qrr[qid] % <uint32_t>cnt
                    m.qrr[qid] += 1
                    hq = rw[j + 2 + k]
                    if self.prefer_local and self._is_remote(hq):
                        for c in range(1, cnt):
                            if not self._is_remote(rw[j + 2 + (k + c) % cnt]):
                                hq = rw[j + 2 + (k + c) % cnt]
                                break
                        else:
                            if only >= 0:
                                hq = -1         # (no local member: none gets it)
                    if hq >= 0:
                        hs[nh] = hq
                        nh += 1
                    j += 2 + cnt
            if wrec != NULL:
                rec = <char *>wrec      # a record from the network: stored and sent as is
                rlen = wrn
            elif ev is None:
                ev = Event.__new__(Event)
                ev.routing_subject = _subject_str(subject)
                ev._data = data
                _id_counter += 1
                ev._gpre = _id_prefix
                ev._gid = _id_counter
                ev.source = self.source
            if ev is not None:
                ev._origin = self.name
                ev.ts = now
            self.n_published += 1
            self._sample(p, n, 1)
            self.bytes_published += plen
            # streams first: the event is stored before anyone sees it
            self.stamp += 1
            stamp = self.stamp
            for i in range(nh):
                v = self._value(hs[i])
                if type(v) is not StreamTarget:
                    continue
                st = <StreamTarget>v
                if st.stamp == stamp:
                    continue            # two patterns of one stream matched
                st.stamp = stamp
                if rec == NULL:
                    rec = self._record(ev, &rlen, &dp, &dn)
                    rec_scratch = True
                if now == 0:
                    now = self.now_batch if self.now_batch else _now_ns()
                dd = st.dedup and not (<uint8_t>rec[1] & EVF_GENID)
                if dd:
                    # an id the producer chose: a retry within the window
                    # is not stored again (generated ids never repeat)
                    dhash = _dedup_key(rec, &dtag, &dkey, &dlen)
                    if mono == 0:
                        mono = self.mono_batch if self.mono_batch else _mono_ns()
                    self.dedup_hint = st.log
                    hit = st.log._dedup_seen(dtag, dkey, dlen, dhash, mono)
                    if hit >= 0:
                        st.duplicates += 1
                        if seq == 0:
                            seq = hit
                            self.last_stream = st.name
                            self.last_duplicate = True
                        continue
                try:
                    s = st.log._append_routed(subject, p, n, <uint32_t>h, rec, rlen,
                                              dp, dn, now)
                except (LogFullError, EventTooLarge) as exc:
                    # this stream refuses the event (discard='new', too
                    # large): counted, told to the publisher after the
                    # delivery, which goes on (as JetStream's)
                    st.rejected += 1
                    self.n_rejected += 1
                    if refused is None:
                        refused = _refusal(st.name, exc)
                    continue
                st.appended += 1
                st.appended_bytes += plen
                self.n_appended += 1
                self.bytes_appended += plen
                if dd:
                    st.log._dedup_remember(dtag, dkey, dlen, dhash, s, mono)
                if seq == 0:
                    seq = s
                    self.last_stream = st.name
                    now = st.log.last_ts
                    if ev is not None:
                        ev.seq = s
                        ev.stream = st.name
                        ev.ts = now
                if st.listeners:
                    if notify is None:
                        notify = []
                    notify.append(st)
                    notify.append(s)
            for i in range(nh):
                v = self._value(hs[i])
                if type(v) is not SubTarget:
                    if v is None or not ff_is_kind(v, WireTarget):
                        continue        # a stream, or a target removed meanwhile
                    wt = <WireTarget>v
                    if not wt.echo and wt.outbuf is origin:
                        continue
                    if msg.rec == NULL:
                        if rec == NULL:
                            rec = self._record(ev, &rlen, &dp, &dn)
                            rec_scratch = True
                        msg.subject = p
                        msg.subject_n = n
                        msg.reply = reply
                        msg.reply_n = replyn
                        msg.rec = rec
                        msg.rec_n = rlen
                        msg.data = dp
                        msg.data_n = dn
                        msg.gen = _next_wire_gen()
                        if msg.event_gen == 0:
                            msg.event_gen = msg.gen     # (kept when the record is remade)
                        msg.subject_obj = <PyObject *>subject
                        msg.seq = seq
                        msg.ts = now
                        mstream = self.last_stream      # (held: a callback may publish)
                        msg.stream = <PyObject *>mstream
                    msg.event = <PyObject *>ev if ev is not None else NULL
                    msg.origin = <PyObject *>origin if origin is not None else NULL
                    if wt.conflate and wt.outbuf.behind:
                        # (the connection cannot write: keep the latest per subject)
                        ok = wt.outbuf._keep(wt, &msg)
                        if ok == 2:
                            wt.conflated += 1
                            self.n_conflated += 1
                    else:
                        ok = wt._write(&msg)
                    if rec_scratch and type(wt) is ImportTarget:
                        # the dest's delivery ran Python (callbacks): as
                        # after a SubTarget, the record is made again
                        rec = NULL
                        rec_scratch = False
                        msg.rec = NULL
                    if ok:
                        wt.delivered += 1
                        wt.delivered_bytes += plen
                        self.n_delivered += 1
                        self.bytes_delivered += plen
                        if replyn and wt.replies is not None \
                                and len(wt.replies) < REPLIES_MAX:
                            wt.replies.append(reply[:replyn])
                    else:
                        wt.dropped += 1
                        self.n_dropped_slow += 1
                    if wt.remaining:
                        wt.remaining -= 1
                        if wt.remaining == 0 and wt.handle in m:
                            m.remove(wt.handle)     # UNSUB with a max: done
                            self._drop_interest(wt.handle)
                            if wt.on_end is not None:
                                wt.on_end(wt)
                    continue
                su = <SubTarget>v
                if su.closed:
                    continue
                if ev is None:          # a network record, for in-process subscribers
                    if now == 0:
                        now = self.now_batch if self.now_batch else _now_ns()
                    ev = _ev_decode(subject, wrec, wrn, seq, self.last_stream, now, self.name)
                if rec_scratch:
                    # Python runs next (a callback, a queue's advisory): if
                    # it publishes, the router's scratch buffer holds its
                    # record after; the wire subscribers still to come get
                    # this event's record made again
                    rec = NULL
                    rec_scratch = False
                    msg.rec = NULL
                if su.callback is not None:
                    su.delivered += 1
                    su.delivered_bytes += plen
                    self.n_delivered += 1
                    self.bytes_delivered += plen
                    r = ff_call1(su.callback, ev)
                    if r == NULL:
                        self._callback_failed(su)
                    else:
                        Py_DECREF(<object>r)
                elif su._queue(ev, self):
                    su.delivered_bytes += plen
                    self.n_delivered += 1
                    self.bytes_delivered += plen
            if notify is not None:
                for i in range(0, len(notify), 2):
                    st = <StreamTarget>notify[i]
                    for listener in list(st.listeners):
                        listener(notify[i + 1])
            if refused is not None:
                raise refused
        finally:
            if hs != local and hs != rw + 2:
                free(hs)
            if rw != localw:
                free(rw)
        return seq

    cdef int _callback_failed(self, SubTarget su) except -1:
        """A callback returned NULL: count and report an Exception; let
        anything else (KeyboardInterrupt, SystemExit) propagate."""
        cdef PyObject *p = ff_fetch_exception()
        if p == NULL:
            raise SystemError('a callback failed without setting an exception')
        exc = <object>p
        Py_DECREF(exc)                  # <object> took a reference of its own
        if not isinstance(exc, Exception):
            raise exc
        su.errors += 1
        self.n_callback_errors += 1
        self._callback_error(exc, su)
        return 0

    cdef int _callback_error(self, exc, SubTarget su) except -1:
        if self.error_handler is not None:
            self.error_handler(exc, su.owner)
        return 0

    cdef int _slow_consumer(self, SubTarget su) except -1:
        if self.advisory_handler is not None:
            self.advisory_handler('slow_consumer', su.owner)
        return 0

    cdef int _loop_break(self, subject, Event ev, str reason) except -1:
        if self.advisory_handler is not None:
            self.advisory_handler('loop', (subject, ev, reason))
        return 0

    cdef object _publish(self, object subject, object data, dict attributes):
        cdef Event ev
        if type(subject) is Event:
            if data is not None or attributes:
                raise TypeError('publish(event) takes no data or attributes: use event.derive()')
            src = <Event>subject
            if src.routing_subject is None:
                raise EventError('cannot publish an event without a routing subject')
            # a copy: the caller's event is not changed; an event this engine
            # routed before carries its whole lineage (so republishing it
            # as is counts as returning to where it was)
            ev = Event.__new__(Event)
            _ev_copy(ev, src)
            if src._origin is not None:
                ev._trace = src.trace
                ev._origin = None
            return self._route(ev.routing_subject, None, ev, _now_ns())
        if type(data) is not bytes:
            data = _as_data(data)
        if not attributes:
            return self._route(subject, data, None, _now_ns())
        ev = Event.__new__(Event)
        _ev_init_attrs(ev, attributes, self.source)
        ev._data = data
        subject = _subject_str(subject)
        ev.routing_subject = subject
        return self._route(subject, data, ev, _now_ns())

    cdef Py_ssize_t _publish_run(self, object subject, tuple datas, Py_ssize_t n,
                                 int64_t now) except -1:
        """publish_batch of events with every attribute a default on one
        subject whose targets are streams in memory (retention by count and
        age) and in-process subscriptions: the match once, then per event
        its record straight into each stream's arena (Log._append_event), one
        Event, the callbacks, in the order of _deliver.  Returns how many it
        published: 0 when the match has other targets, fewer than ``n`` when
        an event needs the general path (a subscription changed, a record
        is exported, the event is too large, the flow closed); the caller
        publishes the rest.  The subject sampler counts the run's events at
        once (one entry), and before any Python code runs (which may publish;
        a stream's append that fails, out of memory, leaves the run's events
        since uncounted by it)."""
        cdef Matcher m = self.matcher
        cdef const char *p
        cdef Py_ssize_t sn, nplain, i, j, nst = 0, nsu = 0, plen
        cdef const int64_t *res
        cdef uint64_t h
        cdef uint64_t version
        cdef object v
        cdef list streams = [], subs = []
        cdef StreamTarget st
        cdef SubTarget su
        cdef Log lg
        cdef Event ev
        cdef object data
        cdef str rsubject
        cdef int64_t seq, ts, s
        cdef int64_t seqs[8]
        cdef PyObject *r
        cdef Py_ssize_t srcn = len(self.source_b)
        cdef Py_ssize_t counted = 0     # the run's events the sampler has counted (it
                                        # counts them at once, when it must: no cost per event)
        global _id_counter
        if self.closed:
            return 0
        as_utf8(subject, &p, &sn, False)
        h = ff_hash(p, sn, _SEED)
        version = m.n_inserts + m.n_removes
        m._match_res(subject, p, sn, h, &res)
        nplain = res[0]
        if res[1] or nplain == 0:
            return 0                    # queue groups; no interest (the general path counts)
        for i in range(nplain):
            v = self._value(res[2 + i])
            if type(v) is StreamTarget:
                if v not in streams:
                    streams.append(v)
            elif type(v) is SubTarget:
                subs.append(v)
            else:
                return 0                # a wire target, or one removed meanwhile
        nst = len(streams)
        nsu = len(subs)
        if nst > 8:
            return 0
        rsubject = _subject_str(subject)
        for i in range(n):
            if self.closed or m.n_inserts + m.n_removes != version:
                self._sample(p, sn, i - counted)
                return i
            data = <object>PyTuple_GET_ITEM(datas, i)
            if type(data) is not bytes:
                # (it may run Python, or raise: the events before are counted first)
                self._sample(p, sn, i - counted)
                counted = i
                data = _as_data(data)
            plen = PyBytes_GET_SIZE(data)
            for j in range(nst):
                if not (<StreamTarget>streams[j]).log._pre_ok(EV_HEADER + EV_GENID + srcn + plen):
                    self._sample(p, sn, i - counted)
                    return i
            _id_counter += 1
            self.n_published += 1
            self.bytes_published += plen
            seq = 0
            ts = now
            if nst:
                # the record (header, this event's id, the source, its data)
                # written straight into each stream's arena
                for j in range(nst):
                    st = <StreamTarget>streams[j]
                    lg = st.log
                    s = lg._append_event(subject, p, sn, <uint32_t>h, _id_counter,
                                         PyBytes_AS_STRING(self.source_b), srcn, 0,
                                         PyBytes_AS_STRING(data), plen, ts)
                    seqs[j] = s
                    st.appended += 1
                    st.appended_bytes += plen
                    self.n_appended += 1
                    self.bytes_appended += plen
                    if seq == 0:
                        seq = s
                        ts = lg.last_ts
            if nsu:
                # (Python runs next, and may publish: the sampler counts
                # this event first, as _deliver does)
                self._sample(p, sn, i + 1 - counted)
                counted = i + 1
                ev = Event.__new__(Event)
                ev.routing_subject = rsubject
                ev._data = data
                ev._gpre = _id_prefix
                ev._gid = _id_counter
                ev.source = self.source
                ev._origin = self.name
                ev.ts = ts
                if seq:
                    ev.seq = seq
                    ev.stream = (<StreamTarget>streams[0]).name
                for j in range(nsu):
                    su = <SubTarget>subs[j]
                    if su.closed:
                        continue
                    if su.callback is not None:
                        su.delivered += 1
                        su.delivered_bytes += plen
                        self.n_delivered += 1
                        self.bytes_delivered += plen
                        r = ff_call1(su.callback, ev)
                        if r == NULL:
                            self._callback_failed(su)
                        else:
                            Py_DECREF(<object>r)
                    elif su._queue(ev, self):
                        su.delivered_bytes += plen
                        self.n_delivered += 1
                        self.bytes_delivered += plen
            for j in range(nst):
                st = <StreamTarget>streams[j]
                if st.listeners:
                    self._sample(p, sn, i + 1 - counted)
                    counted = i + 1
                    for listener in list(st.listeners):
                        listener(seqs[j])
            # (publish's: the stream that stored the last event, no duplicate)
            self.last_stream = (<StreamTarget>streams[0]).name if nst else None
            self.last_duplicate = False
        self._sample(p, sn, n - counted)
        return n

    def publish_batch(self, subjects, datas, /, **attributes):
        """Publish ``datas`` (a sequence of bytes) on one subject or on a
        sequence of subjects as long; returns the number published.  The
        attributes apply to every event (each gets its own id).  An invalid
        subject raises naming its index; the events before it are published.
        A stream's refusal (``LogFullError``, ``EventTooLarge``) is raised
        after the whole batch was published, naming the first index."""
        cdef Py_ssize_t n, i, refused_at = 0
        cdef object refused = None      # a stream's first refusal
        cdef bint one = isinstance(subjects, (str, bytes))
        cdef object subject = subjects, data
        cdef Event proto = None, ev
        cdef int64_t now = _now_ns()
        global _id_counter
        # tuples: a callback cannot change them under the loop
        if type(datas) is not tuple:
            datas = tuple(datas)
        n = len(datas)
        if not one:
            if type(subjects) is not tuple:
                subjects = tuple(subjects)
            if len(subjects) != n:
                raise ValueError('subjects and datas differ in length: {} and {}'.format(
                    len(subjects), n))
        if attributes:
            proto = Event.__new__(Event)
            _ev_init_attrs(proto, attributes, self.source)
            if not proto._gid and n > 1:
                raise EventError("invalid event attribute 'id': one id for {} events of a "
                                 "batch".format(n))
        i = 0
        if one and proto is None and n > 1 and self.trust_on is None:
            # the feed handler's batch: one subject, every attribute a default
            try:
                i = self._publish_run(subject, <tuple>datas, n, now)
            except SubjectError as exc:
                raise SubjectError('{} (batch index 0)'.format(exc)) from None
            if i == n:
                return n
        for i in range(i, n):
            if not one:
                subject = <object>PyTuple_GET_ITEM(subjects, i)
            data = <object>PyTuple_GET_ITEM(datas, i)
            if type(data) is not bytes:
                data = _as_data(data)
            try:
                if proto is None:
                    self._route_cached(subject, data, None, now)
                else:
                    ev = Event.__new__(Event)
                    _ev_copy(ev, proto)
                    if proto._gid:
                        _id_counter += 1
                        ev._gid = _id_counter
                    ev._data = data
                    subject = _subject_str(subject)
                    ev.routing_subject = subject
                    self._route_cached(subject, data, ev, now)
            except SubjectError as exc:
                raise SubjectError('{} (batch index {})'.format(exc, i)) from None
            except (LogFullError, EventTooLarge) as exc:
                if refused is None:     # delivered, not stored: the batch goes on
                    refused = exc
                    refused_at = i
        if refused is not None:
            refused.args = ('{} (batch index {}; the whole batch was published)'.format(
                refused, refused_at),)
            raise refused
        return n

    def publish_json(self, body, routing_subject=None, *, OutBuf origin=None, check=None):
        """Publish one event in the CloudEvents JSON format (structured mode,
        ``application/cloudevents+json``) as ``fastflow.event.from_json``
        reads it, decoded in C into its record (no Event is made unless an
        in-process subscriber takes one): the data is stored as received.
        It is routed on ``routing_subject``, or, when that is None, on the
        event's ``type``.  ``check(subject)`` (optional) is called with the
        routing subject before the event is published, and refuses it by
        raising; ``origin`` is the publishing connection (for ``echo``).
        Returns the seq in the first stream that stored it (its name:
        ``last_stream``), 0 if none did.  Raises ``EventError`` as
        ``from_json`` does, ``SubjectError`` for a routing subject (or a
        type) that is no valid subject."""
        return self._publish_json(body, routing_subject, False, origin, check, False)

    def publish_json_batch(self, body, routing_subject=None, *, OutBuf origin=None,
                           check=None, bint acks=False):
        """Publish the events of a CloudEvents JSON batch
        (``application/cloudevents-batch+json``) as ``from_json_batch``
        reads it, decoded in C into records: Python pays once per batch.
        Each is routed on ``routing_subject``, or on its ``type``.  Nothing
        is published unless the whole batch is valid (``EventError`` naming
        the batch index; ``SubjectError`` naming the index of a type that
        is no subject) and ``check(subject)`` (called once per distinct
        routing subject, in order) raised for none.  Returns the number
        published, or with ``acks`` a list of ``(stream, seq)`` per event
        (``(None, 0)``: stored nowhere).  A stream's refusal
        (``LogFullError``, ``EventTooLarge``) is raised after the whole
        batch was published, naming the first index."""
        return self._publish_json(body, routing_subject, True, origin, check, acks)

    cdef object _publish_json(self, object body, object routing_subject, bint batch,
                              OutBuf origin, object check, bint acks):
        cdef _JsonRecords recs = _JsonRecords.__new__(_JsonRecords)
        cdef const char *p
        cdef Py_ssize_t n, i, start = 0, refused_at = 0
        cdef Parsed ps
        cdef str rs = None
        cdef object subject, last = None, refused = None
        cdef int64_t seq = 0
        cdef list out = [] if acks else None
        cdef set checked
        cdef const char *ahead
        cdef const char *dkey
        cdef uint32_t dtag, dlen
        cdef bint trusted
        if routing_subject is not None:
            rs = _subject_str(routing_subject)
            as_utf8(rs, &p, &n, False)
            parse_subject(p, n, &ps, False, rs)
        recs.fill(body, rs, batch)
        if recs.subject_error is not None:
            i, exc = recs.subject_error
            if batch:
                raise SubjectError('{} (batch index {})'.format(exc, i)) from None
            raise exc
        if check is not None and recs.ends.n:
            if rs is not None:
                check(rs)
            else:
                checked = set()
                for subject in recs.subjects:
                    if subject is not last and subject not in checked:
                        check(subject)
                        checked.add(subject)
                    last = subject
        trusted = self.trust_on is not None
        if trusted:
            # the trust policy: every event passes before any is published
            start = 0
            for i in range(recs.ends.n):
                subject = rs if rs is not None else <object>PyList_GET_ITEM(recs.subjects, i)
                try:
                    self._trust(subject, recs.buf + start, recs.ends.data[i] - start, None)
                except SignatureError as exc:
                    if batch:
                        exc.args = ('{} (batch index {}; nothing was published)'.format(
                            exc, i),)
                    raise
                start = recs.ends.data[i]
            start = 0
        # one time for the batch: its events' ts (a log clamps it to its
        # last) and its duplicate-window lookups (the monotonic clock)
        self.mono_batch = _mono_ns()
        self.now_batch = _now_ns()
        try:
            for i in range(recs.ends.n):
                subject = rs if rs is not None else <object>PyList_GET_ITEM(recs.subjects, i)
                if self.dedup_hint is not None and i + _DEDUP_AHEAD < recs.ends.n:
                    # the window's slot of a later event, fetched while this one goes
                    ahead = recs.buf + recs.ends.data[i + _DEDUP_AHEAD - 1]
                    if not (<uint8_t>ahead[1] & EVF_GENID):
                        ff_dedup_prefetch(&self.dedup_hint.dedup,
                                          _dedup_key(ahead, &dtag, &dkey, &dlen))
                # (FASTFLOW_DEBUG: each record is checked as a network one is)
                try:
                    seq = self._publish_wire(subject, NULL, 0, recs.buf + start,
                                             recs.ends.data[i] - start, origin,
                                             not FASTFLOW_DEBUG, trusted)
                except (LogFullError, EventTooLarge) as exc:
                    if not batch:
                        raise
                    if refused is None:     # delivered, not stored: the batch goes on
                        refused = exc
                        refused_at = i
                    seq = 0
                start = recs.ends.data[i]
                if acks:
                    out.append((self.last_stream if seq else None, seq))
        finally:
            self.mono_batch = 0
            self.now_batch = 0
        if refused is not None:
            refused.args = ('{} (batch index {}; the whole batch was published)'.format(
                refused, refused_at),)
            raise refused
        if not batch:
            return seq
        return out if acks else recs.ends.n

    def stats(self):
        return {
            'published': self.n_published,
            'delivered': self.n_delivered,
            'stored': self.n_appended,
            'dropped_no_interest': self.n_dropped_no_interest,
            'dropped_slow_consumer': self.n_dropped_slow,
            'conflated': self.n_conflated,
            'dropped_loop': self.n_dropped_loop,
            'rejected_by_stream': self.n_rejected,
            'callback_errors': self.n_callback_errors,
        }


_PUBLISH_DOC = b"""publish(subject, data=b'', /, **attributes)
--

Publish one event: ``subject`` (the routing subject) and ``data`` (bytes),
with CloudEvents attributes as keywords; or an ``Event`` alone.  Returns
its seq in the first stream that stored it (0 if none did)."""


cdef object _publish_fc(object self, PyObject **args, Py_ssize_t nargs, PyObject *kwnames):
    """Router.publish, called through an ff_core.h fastcall trampoline."""
    cdef Py_ssize_t i, nk
    cdef dict attributes = None
    cdef object data
    if nargs < 1 or nargs > 2:
        raise TypeError('publish() takes a subject and optional data ({} positional '
                        'arguments given)'.format(nargs))
    data = <object>args[1] if nargs == 2 else None
    if kwnames != NULL:
        nk = PyTuple_GET_SIZE(<object>kwnames)
        if nk:
            attributes = {}
            for i in range(nk):
                attributes[<object>PyTuple_GET_ITEM(<object>kwnames, i)] = <object>args[nargs + i]
            if 'data' in attributes:
                if nargs == 2:
                    raise TypeError("publish() got data both as an argument and as a keyword")
                data = attributes.pop('data')
    if data is None and type(<object>args[0]) is not Event:
        data = b''
    return (<Router>self)._publish(<object>args[0], data, attributes)


ff_install_fastcall(Router, 0, b'publish', <ff_fastcall_t>_publish_fc, _PUBLISH_DOC)


# -- imports: one account's router republishing a match into another's ------------------

cdef enum:
    IMPORT_DEPTH_MAX = 64           # the highest max_depth an ImportTarget takes
    IMPORT_BUF_MIN = 512            # bytes of a depth's record buffer at first

# Imports in progress (nested: an import's delivery in its dest ran an import
# of its own), and per depth a buffer holding the record forwarded at that
# depth: a copy, so that a publish made by the dest's callbacks (into any
# router, the source's scratch buffer included) cannot change the record
# under the dest's delivery.  One import runs at each depth at a time.
cdef int _import_depth = 0
cdef char *_import_buf[IMPORT_DEPTH_MAX]
cdef Py_ssize_t _import_cap[IMPORT_DEPTH_MAX]


cdef inline bytes _map_bytes(object v, str what):
    """What a map returned, as UTF-8 bytes (bytes, or a str encoded)."""
    if type(v) is bytes:
        return <bytes>v
    if isinstance(v, str):
        return (<str>v).encode('utf-8', 'surrogatepass')
    if isinstance(v, bytes):
        return bytes(v)
    raise TypeError('{} must return bytes, str or None, not {}'.format(what, type(v).__name__))


@cython.final
@cython.auto_pickle(False)     # engine state: not picklable
cdef class ImportTarget(WireTarget):
    """One account's import of another's export: registered in the
    exporting account's router on the exported pattern, it republishes each
    message matched into ``dest`` (the importing account's router) as its
    record was received, on the subject ``prefix + subject[strip:]`` (bytes;
    or what ``subject_map(subject)`` returns, None: not forwarded).  The
    reply crosses only through ``reply_map(reply)`` (None: no reply).  At
    ``max_depth`` imports in progress (accounts importing from each other in
    a cycle) a message is not forwarded (``looped``); a stream of ``dest``
    refusing it (``LogFullError``, ``EventTooLarge``), its trust policy
    refusing it (``SignatureError``) or a rewritten
    subject that is no valid subject there counts as ``refused`` and does
    not reach the publisher.  Engine use."""

    def __init__(self, Router dest not None, int strip=0, prefix=b'', reply_map=None,
                 subject_map=None, int max_depth=8):
        if strip < 0:
            raise ValueError('strip must be >= 0, got {}'.format(strip))
        if not 1 <= max_depth <= IMPORT_DEPTH_MAX:
            raise ValueError('max_depth must be 1 to {}, got {}'.format(IMPORT_DEPTH_MAX,
                                                                       max_depth))
        if isinstance(prefix, str):
            prefix = (<str>prefix).encode('utf-8')
        elif type(prefix) is not bytes:
            raise TypeError('prefix must be bytes, not {}'.format(type(prefix).__name__))
        for name, f in (('reply_map', reply_map), ('subject_map', subject_map)):
            if f is not None and not callable(f):
                raise TypeError('{} must be callable or None, got {}'.format(
                    name, type(f).__name__))
        self.outbuf = None              # no connection: never "the publisher's own"
        self.echo = True
        self.dest = dest
        self.strip = strip
        self.prefix = prefix
        self.reply_map = reply_map
        self.subject_map = subject_map
        self.max_depth = max_depth

    cdef object _rewrite(self, WireMsg *m):
        """``prefix + subject[strip:]`` as a str (the last one is kept)."""
        cdef Py_ssize_t k, pn, n
        cdef bytes b
        cdef char *o
        if (self.last_in is not None and PyBytes_GET_SIZE(self.last_in) == m.subject_n
                and memcmp(PyBytes_AS_STRING(self.last_in), m.subject, m.subject_n) == 0):
            return self.last_out
        k = self.strip if self.strip < m.subject_n else m.subject_n
        pn = PyBytes_GET_SIZE(self.prefix)
        n = pn + m.subject_n - k
        b = PyBytes_FromStringAndSize(NULL, n)
        o = PyBytes_AS_STRING(b)
        memcpy(o, PyBytes_AS_STRING(self.prefix), pn)
        memcpy(o + pn, m.subject + k, m.subject_n - k)
        out = _subject_str(b)           # (SubjectError: a cut through a character)
        self.last_in = PyBytes_FromStringAndSize(m.subject, m.subject_n)
        self.last_out = out
        return out

    cdef int _write(self, WireMsg *m) except -1:
        global _import_depth
        cdef int d = _import_depth
        cdef object subject, r
        cdef bytes reply = None
        cdef const char *rp = NULL
        cdef Py_ssize_t rpn = 0, rn
        cdef char *buf
        if m.origin != NULL and (<OutBuf>m.origin).backbone:
            return 1            # imported on the node it was published on, and forwarded
        if d >= self.max_depth:
            self.looped += 1
            return 1
        try:
            if self.subject_map is None:
                subject = self._rewrite(m)
            else:
                r = self.subject_map(PyBytes_FromStringAndSize(m.subject, m.subject_n))
                if r is None:
                    self.refused += 1
                    return 1
                subject = _subject_str(_map_bytes(r, 'subject_map'))
        except SubjectError:
            self.refused += 1
            return 1
        if m.reply != NULL and m.reply_n and self.reply_map is not None:
            r = self.reply_map(PyBytes_FromStringAndSize(m.reply, m.reply_n))
            if r is not None:
                reply = _map_bytes(r, 'reply_map')
                rp = PyBytes_AS_STRING(reply)
                rpn = PyBytes_GET_SIZE(reply)
        # the record as received, in this depth's buffer (its data appended
        # when the router made the record of a default event without it)
        rn = m.rec_n + (m.data_n if m.data != NULL else 0)
        _grow(<void **>&_import_buf[d], &_import_cap[d], rn, 1, IMPORT_BUF_MIN)
        buf = _import_buf[d]
        memcpy(buf, m.rec, m.rec_n)
        if m.data != NULL:
            memcpy(buf + m.rec_n, m.data, m.data_n)
        _import_depth = d + 1
        try:
            # (a record the source checked or made: checked again in debug builds)
            self.dest._publish_wire(subject, rp, rpn, buf, rn, None, not FASTFLOW_DEBUG)
        except (LogFullError, EventTooLarge, SubjectError, SignatureError):
            # delivered in dest but not stored, or no valid subject or reply
            # there: the dest's business, not the source publisher's
            self.refused += 1
            return 1
        finally:
            _import_depth = d
        self.forwarded += 1
        self.forwarded_bytes += _rec_payload(buf, rn)
        return 1
