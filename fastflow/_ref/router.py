"""The publish path, pure-Python reference for src_ext/router.pyx: match
once, append once to every capturing stream, deliver to every interested
subscription.

One Matcher holds every kind of target: a SubTarget per subscription, a
WireTarget per network subscription (it writes each message it gets into
its connection's OutBuf in its own protocol: fastflow/_ref/wire/) and a
StreamTarget per (stream, subject pattern).  A publish copies the matched
handles (one member per queue group) before it runs any Python code
(callbacks may publish, subscribe or unsubscribe), and resolves each handle
again when it gets to it, so a target removed meanwhile is skipped.

The native Router's private state and helpers are C-level (a subclass such
as ``fastflow.Flow`` cannot see or override them); here they are
name-mangled attributes and module functions, for the same reason.
"""

import inspect
import time as _time
from collections import deque as _deque

from fastflow import _attrs
from fastflow._ref.event import (
    _GENID,
    _HEADER,
    EV_MAX_STRING,
    EV_VERSION,
    EVF_GENID,
    EVF_TYPE_SUBJECT,
    Event,
    _arg_str,
    _arg_type,
    _as_data,
    _as_str_field,
    _c_int,
    _ev_data_offset,
    _c_int64,
    _c_ssize,
    _ev_check,
    _ev_copy,
    _ev_decode,
    _ev_encode,
    _ev_init_attrs,
    _final,
    _next_gid,
    _record_bytes,
    _ro,
)
from fastflow._ref import event as _event
from fastflow._ref.log import RECORD_HEADER, Log
from fastflow._ref.matcher import Matcher
from fastflow._ref.subjects import MAX_SUBJECT_LEN, check_reply, tokenize
from fastflow._ref.wire.outbuf import OutBuf, WireMsg, WireTarget, _as_utf8
from fastflow.errors import (EventError, FastflowError, EventTooLarge, LogFullError,
                             SignatureError, SubjectError)

__all__ = ("ImportTarget", "RateLimit", "Router", "StreamTarget", "SubTarget")

_REPLIES_MAX = 65536                    # reply subjects a WireTarget's ``replies`` list takes

# The subject sampler's buffer (src_ext/consts.pxi): entries of a uint32
# weight, a uint16 subject length and the subject's UTF-8 bytes.  Here a
# list of [subject, weight] with the bytes the native buffer would use.
SAMPLE_BYTES = 65536                    # 64 KiB of entries between two take_samples
SAMPLE_HEAD = 6                         # bytes of an entry before its subject
_SAMPLE_WEIGHT_MAX = 0xFFFFFFFF         # an entry's weight, at most (a uint32)


def _rec_payload(rec):
    """The data bytes of event record ``rec`` (0 for one that is not)."""
    try:
        return len(rec) - _ev_data_offset(rec, 0, len(rec))
    except FastflowError:
        return 0

DEFAULT_CACHE_SIZE = 65536
EVENT_OVERHEAD = 64             # bytes a queued event counts beyond its data

FULL_DROP_OLDEST = 0
FULL_DROP_NEW = 1
FULL_CUT = 2

_ON_FULL = {"drop_oldest": FULL_DROP_OLDEST, "drop_new": FULL_DROP_NEW, "cut": FULL_CUT}
_ON_FULL_NAMES = {v: k for k, v in _ON_FULL.items()}

_now_ns = _time.time_ns


@_final
class RateLimit:
    """A token bucket for an account's ingress: ``msgs_per_second`` events
    and ``bytes_per_second`` payload bytes (0: no limit on that), ``burst``
    seconds of each deep.  The router takes from it for every publish of a
    connection (``Router.ingress``) and never refuses: the bucket may go
    into debt, and ``wait()`` tells how long the account's publishers must
    pause (their doors stop reading them) for it to be paid back.  Engine
    use."""

    __slots__ = ("_msgs_rate", "_bytes_rate", "_burst", "_tm", "_tb", "_last", "_taken",
                 "_taken_bytes")

    def __init__(self, msgs_per_second=0, bytes_per_second=0, burst=1.0):
        msgs_per_second, bytes_per_second, burst = (float(msgs_per_second),
                                                    float(bytes_per_second), float(burst))
        if not (msgs_per_second >= 0 and bytes_per_second >= 0 and burst > 0):
            raise ValueError("rates must be >= 0 and burst > 0")
        self._msgs_rate = msgs_per_second
        self._bytes_rate = bytes_per_second
        self._burst = burst
        self._tm = msgs_per_second * burst
        self._tb = bytes_per_second * burst
        self._last = _time.monotonic_ns()
        self._taken = 0
        self._taken_bytes = 0

    msgs_rate = _ro("_msgs_rate")
    bytes_rate = _ro("_bytes_rate")
    burst = _ro("_burst")
    taken = _ro("_taken")
    taken_bytes = _ro("_taken_bytes")

    def _refill(self):
        now = _time.monotonic_ns()
        dt = (now - self._last) * 1e-9
        self._last = now
        if self._msgs_rate:
            self._tm = min(self._tm + dt * self._msgs_rate, self._msgs_rate * self._burst)
        if self._bytes_rate:
            self._tb = min(self._tb + dt * self._bytes_rate, self._bytes_rate * self._burst)

    def take(self, n=1, nbytes=0):
        """Take ``n`` events of ``nbytes`` payload bytes (a publish made in
        Python: the HTTP door's)."""
        n, nbytes = _c_int64(n), _c_int64(nbytes)
        self._refill()
        self._taken += n
        self._taken_bytes += nbytes
        if self._msgs_rate:
            self._tm -= n
        if self._bytes_rate:
            self._tb -= nbytes

    def wait(self, n=0, nbytes=0):
        """Seconds until the bucket holds ``n`` events and ``nbytes``
        bytes again (0.0: now; with the defaults, until it is out of debt)."""
        n, nbytes = _c_int64(n), _c_int64(nbytes)
        w = 0.0
        self._refill()
        if self._msgs_rate and self._tm < n:
            w = (n - self._tm) / self._msgs_rate
        if self._bytes_rate and self._tb < nbytes:
            w = max(w, (nbytes - self._tb) / self._bytes_rate)
        return w


@_final
class SubTarget:
    """The engine side of a subscription: a callback run inline, or a
    bounded queue of pending events (engine use; see fastflow.Subscription).

    ``conflate`` (a queue only): while events are pending, a new event on
    a subject that already has one pending replaces it where it stands
    (counted in ``conflated``); ``pending`` then holds the subjects in the
    order they became pending and ``pop`` returns each one's latest
    event.  ``max_pending`` then counts distinct subjects; at a limit
    ``on_full`` decides for a new subject as for any queue."""

    __slots__ = ("_callback", "_pending", "_push", "_pop", "_popleft", "_max_pending",
                 "_max_pending_bytes", "_pending_bytes", "_on_full", "wake", "_waiting",
                 "_closed", "_cut", "owner", "_delivered", "_dropped", "_errors", "_handle",
                 "_delivered_bytes", "_conflate", "_latest", "_conflated")

    def __init__(self, callback=None, max_pending=65536, max_pending_bytes=64 << 20,
                 on_full="drop_oldest", conflate=False):
        max_pending = _c_int64(max_pending)
        max_pending_bytes = _c_int64(max_pending_bytes)
        conflate = bool(conflate)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable, got {}".format(type(callback).__name__))
        if max_pending < 0 or max_pending_bytes < 0:
            raise ValueError("max_pending and max_pending_bytes must be >= 0 (0 = no limit), "
                             "got {} and {}".format(max_pending, max_pending_bytes))
        if on_full not in _ON_FULL:
            raise ValueError("on_full must be 'drop_oldest', 'drop_new' or 'cut', got {!r}"
                             .format(on_full))
        if conflate and callback is not None:
            raise ValueError("conflate needs a queued subscription: a callback takes every "
                             "event as it is published, nothing is ever pending")
        self._callback = callback
        self._pending = _deque()
        self._push = self._pending.append
        self._pop = self._pending.pop
        self._popleft = self._pending.popleft
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0
        self._on_full = _ON_FULL[on_full]
        self.wake = None                # called when an event is queued while waiting
        self._waiting = False
        self._closed = False
        self._cut = False               # closed as a slow consumer
        self.owner = None               # the Subscription (for handlers)
        self._delivered = 0
        self._delivered_bytes = 0
        self._dropped = 0
        self._errors = 0
        self._handle = 0
        self._conflate = conflate       # keep only the latest pending event per subject
        self._latest = {} if conflate else None     # subject -> its latest pending event
        self._conflated = 0             # pending events replaced by a newer one

    callback = _ro("_callback")
    pending = _ro("_pending", "deque of events (queued mode; conflating: of subjects)")
    max_pending = _ro("_max_pending", "events, 0 = no limit")
    max_pending_bytes = _ro("_max_pending_bytes", "bytes, 0 = no limit")
    pending_bytes = _ro("_pending_bytes")
    closed = _ro("_closed")
    cut = _ro("_cut", "closed as a slow consumer")
    delivered = _ro("_delivered")
    delivered_bytes = _ro("_delivered_bytes")
    dropped = _ro("_dropped")
    errors = _ro("_errors")
    handle = _ro("_handle")
    conflate = _ro("_conflate", "keep only the latest pending event per subject")
    conflated = _ro("_conflated", "pending events replaced by a newer one")

    @property
    def waiting(self):
        return self._waiting

    @waiting.setter
    def waiting(self, v):
        self._waiting = bool(v)

    @property
    def on_full(self):
        return _ON_FULL_NAMES[self._on_full]

    def pop(self):
        """The oldest pending event (IndexError when none); conflating:
        the latest event of the subject pending longest."""
        e = self._popleft()
        if self._conflate:
            e = self._latest.pop(e)
        self._pending_bytes -= len(e._data) + EVENT_OVERHEAD
        return e

    def pop_many(self, n):
        """Up to ``n`` pending events, oldest first (a list)."""
        n = _c_ssize(n)
        out = []
        while n > 0 and self._pending:
            e = self._popleft()
            if self._conflate:
                e = self._latest.pop(e)
            self._pending_bytes -= len(e._data) + EVENT_OVERHEAD
            out.append(e)
            n -= 1
        return out

    def close(self):
        self._closed = True

    def _cut_off(self, r):
        """on_full 'cut': drop everything pending, close, tell."""
        pending = self._pending
        self._dropped += 1 + len(pending)
        r._Router__n_dropped_slow += 1 + len(pending)
        pending.clear()
        if self._conflate:
            self._latest.clear()
        self._pending_bytes = 0
        self._closed = True
        self._cut = True
        if self._handle in r.matcher:
            r.matcher.remove(self._handle)  # no more events for it
            r._drop_interest(self._handle)
        _slow_consumer(r, self)
        if self.wake is not None:
            self._waiting = False
            self.wake()
        return 0

    def _queue(self, e, r):
        """Queue ``e`` under the pending limits (engine use: ``r`` is the
        publishing Router)."""
        if self._conflate:
            return self._queue_latest(e, r)
        size = len(e._data) + EVENT_OVERHEAD
        pending = self._pending
        if self._max_pending_bytes and size > self._max_pending_bytes \
                and self._on_full != FULL_CUT:
            self._dropped += 1          # can never fit: drop it, keep the queue
            r._Router__n_dropped_slow += 1
            return 0
        if ((self._max_pending and len(pending) >= self._max_pending)
                or (self._max_pending_bytes
                    and self._pending_bytes + size > self._max_pending_bytes)):
            if self._on_full == FULL_DROP_NEW or (
                    self._on_full == FULL_DROP_OLDEST and not pending):
                self._dropped += 1
                r._Router__n_dropped_slow += 1
                return 0
            if self._on_full == FULL_CUT:
                return self._cut_off(r)
            while pending and (
                    (self._max_pending and len(pending) >= self._max_pending)
                    or (self._max_pending_bytes
                        and self._pending_bytes + size > self._max_pending_bytes)):
                old = self._popleft()
                self._pending_bytes -= len(old._data) + EVENT_OVERHEAD
                self._dropped += 1
                r._Router__n_dropped_slow += 1
        self._push(e)
        self._pending_bytes += size
        self._delivered += 1
        if self._waiting:
            self._waiting = False
            self.wake()
        return 1

    def _queue_latest(self, e, r):
        """``_queue`` of a conflating subscription: ``e`` replaces the
        pending event of its subject in place, or queues its subject at
        the back under the limits (``max_pending`` distinct subjects)."""
        size = len(e._data) + EVENT_OVERHEAD
        subject = e.routing_subject
        pending = self._pending
        latest = self._latest
        if self._max_pending_bytes and size > self._max_pending_bytes \
                and self._on_full != FULL_CUT:
            self._dropped += 1          # can never fit: drop it, keep the queue
            r._Router__n_dropped_slow += 1
            return 0
        old = latest.get(subject)
        if old is not None:
            osize = len(old._data) + EVENT_OVERHEAD
            if not (self._max_pending_bytes
                    and self._pending_bytes - osize + size > self._max_pending_bytes):
                latest[subject] = e             # (a dict keeps the key's place)
                self._pending_bytes += size - osize
                self._conflated += 1
                r._Router__n_conflated += 1
                self._delivered += 1
                return 1
            if self._on_full == FULL_DROP_NEW:
                self._dropped += 1      # (the pending one stays)
                r._Router__n_dropped_slow += 1
                return 0
            # the bigger one does not fit even in the older one's room: the
            # older one is superseded and the subject queues again as a new one
            pending.remove(subject)
            del latest[subject]
            self._pending_bytes -= osize
            self._conflated += 1
            r._Router__n_conflated += 1
        if ((self._max_pending and len(pending) >= self._max_pending)
                or (self._max_pending_bytes
                    and self._pending_bytes + size > self._max_pending_bytes)):
            if self._on_full == FULL_DROP_NEW or (
                    self._on_full == FULL_DROP_OLDEST and not pending):
                self._dropped += 1
                r._Router__n_dropped_slow += 1
                return 0
            if self._on_full == FULL_CUT:
                return self._cut_off(r)
            while pending and (
                    (self._max_pending and len(pending) >= self._max_pending)
                    or (self._max_pending_bytes
                        and self._pending_bytes + size > self._max_pending_bytes)):
                old = latest.pop(self._popleft())
                self._pending_bytes -= len(old._data) + EVENT_OVERHEAD
                self._dropped += 1
                r._Router__n_dropped_slow += 1
        self._push(subject)
        latest[subject] = e
        self._pending_bytes += size
        self._delivered += 1
        if self._waiting:
            self._waiting = False
            self.wake()
        return 1


@_final
class StreamTarget:
    """The engine side of a stream: its log, and listeners called with the
    seq of every event appended (durable push consumers)."""

    __slots__ = ("_name", "_log", "_listeners", "_appended", "_appended_bytes", "_rejected",
                 "_stamp",
                 "_duplicates", "_dedup")

    def __init__(self, name, log):
        self._name = _arg_str("name", name)
        self._log = _arg_type("log", log, Log, "{}.{}".format(Log.__module__, Log.__qualname__))
        self._listeners = []
        self._appended = 0
        self._appended_bytes = 0
        self._rejected = 0
        self._stamp = 0
        self._duplicates = 0            # events not stored again (duplicate window)
        self._dedup = False             # keep (source, id) in the log's dedup window

    name = _ro("_name")
    log = _ro("_log")
    appended = _ro("_appended")
    appended_bytes = _ro("_appended_bytes")
    rejected = _ro("_rejected")
    duplicates = _ro("_duplicates")

    @property
    def dedup(self):
        return self._dedup

    @dedup.setter
    def dedup(self, v):
        self._dedup = bool(v)

    def append_at(self, seq, subject, record):
        """Store the event ``record`` (checked as a PUB frame's body is) at
        ``seq`` of the log, a mirror's append (the seq of the stream it
        mirrors; the seqs between are skipped), count it and tell the
        listeners; returns ``seq``.  EventError for bytes that are not an
        event record, ValueError for a seq not after the log's last."""
        subject = _subject_str(subject)
        rec = _record_bytes(record)
        _ev_check(subject, rec, 0, len(rec))
        s = self._log.append_at(seq, subject, rec)
        self._appended += 1
        self._appended_bytes += _rec_payload(rec)
        if self._listeners:
            for listener in list(self._listeners):
                listener(s)
        return s

    @property
    def listeners(self):
        return self._listeners

    @listeners.setter
    def listeners(self, v):
        if v is not None and type(v) is not list:
            raise TypeError("Expected list, got {}".format(type(v).__name__))
        self._listeners = v


def _callback_error(r, exc, su):
    if r.error_handler is not None:
        r.error_handler(exc, su.owner)


def _slow_consumer(r, su):
    if r.advisory_handler is not None:
        r.advisory_handler("slow_consumer", su.owner)


def _loop_break(r, subject, ev, reason):
    if r.advisory_handler is not None:
        r.advisory_handler("loop", (subject, ev, reason))


def _tokens(m, subject):
    """The tokens of a publish subject.  Like the native core: a subject
    that is not str or bytes raises TypeError, and the matcher counts a
    subject it rejects as invalid (once it is UTF-8) as a match."""
    if not isinstance(subject, (str, bytes)):
        raise TypeError("subject must be str or bytes, not {}".format(type(subject).__name__))
    try:
        return tokenize(subject, False)
    except SubjectError:
        if isinstance(subject, bytes) or _is_utf8(subject):
            m._matches += 1
        raise


def _decode_subject(subject):
    try:
        return subject.decode("utf-8")
    except UnicodeDecodeError:
        raise SubjectError("invalid subject {!r}: not UTF-8".format(subject)) from None


def _is_utf8(s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _dedup_key(rec):
    """The duplicate window's key of a record: its id and source (with the
    id's length, so that no two pairs make one key)."""
    idn = int.from_bytes(rec[4:6], "little")
    srcn = int.from_bytes(rec[6:8], "little")
    return bytes(rec[4:6]) + bytes(rec[16:16 + idn + srcn])


def _dedup_seen(lg, key, mono):
    """The seq of the event stored with ``key`` within the log's dedup
    window, or None (``Log.append_unique``'s window)."""
    dedup = lg._dedup
    if lg._dedup_window_ns:
        while dedup:
            k, (_, at) = next(iter(dedup.items()))
            if mono - at < lg._dedup_window_ns:
                break
            del dedup[k]
    hit = dedup.get(key)
    if hit is None:
        return None
    lg._stats["duplicates"] += 1
    return hit[0]


def _dedup_remember(lg, key, seq, mono):
    dedup = lg._dedup
    dedup[key] = (seq, mono)
    if lg._dedup_max:
        while len(dedup) > lg._dedup_max:
            dedup.popitem(last=False)


def _refusal(stream, exc):
    """The error a publisher gets when ``stream`` refused its event."""
    try:
        e = type(exc)("stream {!r} did not store the event: {}".format(stream, exc))
    except TypeError:               # a subclass that takes other arguments
        e = exc
    e.stream = stream
    return e


def _append_routed(lg, subject, rec):
    """Append record ``rec`` under ``subject`` (a str) to the log ``lg``:
    ``Log.append`` with the size checks (and messages) of the native
    Log._append_routed."""
    if not lg._closed:
        if lg._max_event_size and len(rec) > lg._max_event_size:
            raise EventTooLarge("event of {} bytes exceeds max_event_size={}".format(
                len(rec), lg._max_event_size))
        if lg._path is not None:
            size = RECORD_HEADER + lg._frame_extra + len(subject.encode("utf-8")) + len(rec)
            if size > lg._segment_size:
                raise EventTooLarge("record of {} bytes exceeds segment_size={}".format(
                    size, lg._segment_size))
    return lg.append(subject, rec)


def _subject_str(subject):
    """The native ``_subject_str``: str as is, bytes decoded, anything else
    through ``str()``."""
    if type(subject) is str:
        return subject
    if isinstance(subject, bytes):
        return _decode_subject(subject)
    return str(subject)


def _unpick(m, hs):
    """Undo the queue-group round robin of a match (the native router picks
    the members only once the event passed the loop check)."""
    subs = m._subs
    for h in hs:
        q = subs[h][2]
        if q is not None:
            m._rr[q] -= 1


class Router:
    """The publish path of a Flow (engine use; see fastflow.Flow)."""

    __slots__ = ("__matcher", "__name", "__source", "__source_b", "__hop_limit", "error_handler",
                 "advisory_handler", "__stamp", "__last_subject", "__last_version",
                 "__last_toks", "__n_published", "__n_delivered", "__n_appended",
                 "__bytes_published", "__bytes_delivered", "__bytes_appended",
                 "__n_dropped_no_interest", "__n_dropped_slow", "__n_dropped_loop", "__n_conflated",
                 "__n_rejected", "__n_callback_errors", "closed", "__last_stream",
                 "__last_duplicate", "__ingress", "__trust_on", "trust_check", "prefer_local",
                 "_only", "_interest_of", "on_interest", "__sample_every", "__sample_left",
                 "__samples", "__sample_used", "__sample_dropped")

    def __init__(self, name="fastflow", source=_attrs.DEFAULT_SOURCE, hop_limit=32,
                 cache_size=DEFAULT_CACHE_SIZE):
        name = _arg_str("name", name)
        source = _arg_str("source", source)
        hop_limit = _c_int(hop_limit)
        cache_size = _c_ssize(cache_size)
        if not source:
            raise ValueError("source must be a non-empty str (a URI-reference)")
        if hop_limit < 0:
            raise ValueError("hop_limit must be >= 0 (0 = no limit), got {}".format(hop_limit))
        self.__matcher = Matcher(cache_size)
        self.__name = name
        self.__source = source
        self.__source_b = source.encode("utf-8", "surrogatepass")     # its UTF-8 bytes
        if len(self.__source_b) > EV_MAX_STRING:
            raise ValueError("source is limited to {} bytes".format(EV_MAX_STRING))
        self.__hop_limit = hop_limit
        self.error_handler = None       # (exc, subscription) for callback errors
        self.advisory_handler = None    # (kind, info) for slow consumers, loops
        self.__ingress = None           # the account's ingress quota (a RateLimit)
        self.__trust_on = None          # subjects under a trust policy (a Matcher)
        self.trust_check = None         # (subject, record | Event | None, the trust_on match):
                                        # raises to refuse
        self.closed = False             # publish raises once set
        self.__last_stream = None       # the stream that stored the last publish
        self.__last_duplicate = False   # ... had it already (its seq is the original's)
        self.__stamp = 0
        self.__last_subject = None      # publish_batch: the last subject matched,
        self.__last_version = 0         # the matcher's version then,
        self.__last_toks = None         # and its tokens
        self.__n_published = 0
        self.__n_delivered = 0
        self.__n_appended = 0
        self.__bytes_published = 0
        self.__bytes_delivered = 0
        self.__bytes_appended = 0
        self.__n_dropped_no_interest = 0
        self.__n_dropped_slow = 0
        self.__n_conflated = 0
        self.__n_dropped_loop = 0
        self.__n_rejected = 0
        self.__n_callback_errors = 0
        self.prefer_local = False       # queue groups with remote members (a cluster link's
                                        # forwarders): a local member first
        self._interest_of = {}          # handle -> (pattern, queue) of every target but a
                                        # cluster link's (its interest, for the link)
        self.on_interest = None         # (pattern, queue, +1 | -1) as that changes
        self._only = -1                 # the next delivery only: -1 every target, -2 the
                                        # plain ones, a group's name one local member of it
        self.__sample_every = 0         # the subject sampler: every this many published
                                        # events, one counts (0: off)
        self.__sample_left = 0          # published events until the next one counted
        self.__samples = []             # its entries, [subject, weight]
        self.__sample_used = 0          # the bytes they take in the native buffer
        self.__sample_dropped = 0       # the weight of the entries that did not fit

    matcher = _ro("_Router__matcher")
    name = _ro("_Router__name")
    source = _ro("_Router__source")
    n_published = _ro("_Router__n_published")
    n_delivered = _ro("_Router__n_delivered")
    n_appended = _ro("_Router__n_appended")
    sample_every = _ro("_Router__sample_every",
                       "the subject sampler: every this many published events, one counts "
                       "(0: off)")

    @property
    def ingress(self):
        return self.__ingress

    @ingress.setter
    def ingress(self, v):
        if v is not None and not isinstance(v, RateLimit):
            raise TypeError("Cannot convert {} to fastflow._core.RateLimit".format(
                type(v).__name__))
        self.__ingress = v
    @property
    def trust_on(self):
        return self.__trust_on

    @trust_on.setter
    def trust_on(self, v):
        if v is not None and not isinstance(v, Matcher):
            raise TypeError("Cannot convert {} to fastflow._core.Matcher".format(
                type(v).__name__))
        self.__trust_on = v

    def __trust(self, subject, rec, ev):
        """The trust policy's check of a publish on ``subject``: of record
        ``rec``, or ``ev``, or (both None) an event with the defaults;
        raises (SignatureError) to refuse it, before anything is matched."""
        if self.trust_check is None:
            return
        hits = self.__trust_on.match(subject)
        if not hits:
            return
        # (the match result goes along: the policy picks its rule from it)
        self.trust_check(subject, rec if rec is not None else ev, hits)

    bytes_published = _ro("_Router__bytes_published")
    bytes_delivered = _ro("_Router__bytes_delivered")
    bytes_appended = _ro("_Router__bytes_appended")
    n_dropped_no_interest = _ro("_Router__n_dropped_no_interest")
    n_dropped_slow = _ro("_Router__n_dropped_slow")
    n_conflated = _ro("_Router__n_conflated")
    n_dropped_loop = _ro("_Router__n_dropped_loop")
    n_rejected = _ro("_Router__n_rejected")
    n_callback_errors = _ro("_Router__n_callback_errors")
    last_stream = _ro("_Router__last_stream", "the stream that stored the last publish")
    last_duplicate = _ro("_Router__last_duplicate",
                         "whether that stream had it already (its seq is the original's)")

    @property
    def hop_limit(self):
        return self.__hop_limit

    @hop_limit.setter
    def hop_limit(self, v):
        self.__hop_limit = _c_int(v)

    # -- targets ---------------------------------------------------------------

    def add(self, pattern, target, queue=None):
        """Register a SubTarget, a StreamTarget or a WireTarget on ``pattern``;
        returns its handle."""
        if type(target) is not SubTarget and type(target) is not StreamTarget \
                and not isinstance(target, WireTarget):
            raise TypeError("target must be a SubTarget, a WireTarget or a StreamTarget")
        if queue is not None and type(target) is StreamTarget:
            raise ValueError("streams do not take a queue group")
        h = self.__matcher.add(pattern, target, queue)
        if type(target) is not StreamTarget:
            target._handle = h
            if isinstance(target, WireTarget) and (target.remote
                                                   or type(target) is ImportTarget):
                # a cluster link's own, or an import (each node imports what
                # is published on it): not interest to ask other nodes for
                return h
        if isinstance(pattern, bytes):
            pattern = pattern.decode("utf-8")
        self._interest_of[h] = (pattern, queue)
        if self.on_interest is not None:
            self.on_interest(pattern, queue, 1)
        return h

    def remove(self, handle):
        self.__matcher.remove(handle)
        self._drop_interest(handle)

    def remove_many(self, handles):
        """Remove the live targets of ``handles`` at once (a closing
        connection's); returns how many were removed."""
        handles = list(handles)
        n = self.__matcher.remove_many(handles)
        if self._interest_of:
            for h in handles:
                self._drop_interest(h)
        return n

    def _drop_interest(self, h):
        pq = self._interest_of.pop(h, None)
        if pq is not None and self.on_interest is not None:
            self.on_interest(pq[0], pq[1], -1)

    def interest(self):
        """The (pattern, queue) of every target but a cluster link's, one
        per target (a pattern twice when two targets want it)."""
        return list(self._interest_of.values())

    # -- the subject sampler ---------------------------------------------------

    def sample_subjects(self, every):
        """Sample the routing subjects of published events: every
        ``every``-th event counted in ``n_published`` (those dropped for no
        interest or as loops too) records its subject, for ``take_samples``.
        0 turns sampling off and forgets what was sampled; another value
        keeps the samples and starts counting again.  A run of one subject
        in ``publish_batch`` is recorded as one entry of its weight."""
        every = _c_int64(every)
        if every < 0:
            raise ValueError("every must be >= 0 (0 = off), got {}".format(every))
        if every == 0:
            self.__samples = []
            self.__sample_used = 0
            self.__sample_dropped = 0
        self.__sample_every = every
        self.__sample_left = every

    def take_samples(self):
        """``(samples, dropped)``: ``samples`` the subjects recorded since
        the last call, {subject: weight} (the number of sampled events),
        ``dropped`` the weight that did not fit in the buffer (SAMPLE_BYTES);
        both start again from empty."""
        out = {}
        for subject, weight in self.__samples:
            out[subject] = out.get(subject, 0) + weight
        dropped = self.__sample_dropped
        self.__samples = []
        self.__sample_used = 0
        self.__sample_dropped = 0
        return out, dropped

    def __sample(self, subject):
        """Count one published event of ``subject`` down to the sampler's
        next hit, and record the hit (the native core's ``_sample`` takes a
        run of events at once: the same hits)."""
        if not self.__sample_every:
            return
        self.__sample_left -= 1
        if self.__sample_left:
            return
        self.__sample_left = self.__sample_every
        if type(subject) is not str:
            subject = subject.decode("utf-8", "surrogatepass") if isinstance(subject, bytes) \
                else str(subject)
        samples = self.__samples
        if samples and samples[-1][0] == subject \
                and samples[-1][1] < _SAMPLE_WEIGHT_MAX:
            samples[-1][1] += 1         # the last entry's subject: added to it
            return
        n = len(subject.encode("utf-8", "surrogatepass"))
        if n > MAX_SUBJECT_LEN or self.__sample_used + SAMPLE_HEAD + n > SAMPLE_BYTES:
            self.__sample_dropped += 1
            return
        samples.append([subject, 1])
        self.__sample_used += SAMPLE_HEAD + n

    # -- publishing ------------------------------------------------------------

    def __default_record(self, ev):
        """The record of an event with every default (the common case)."""
        return b"".join((
            _HEADER.pack(EV_VERSION, EVF_GENID | EVF_TYPE_SUBJECT, ev._hops, 0,
                         len(self.__source_b), 0, 0, 0),
            _GENID.pack(ev._gpre, ev._gid), self.__source_b, ev._data))

    def __is_default(self, ev):
        """Whether ``ev`` has every default (its record: ``__default_record``)."""
        return (ev._gpre == _event._id_prefix and ev._gid and ev._type is None
                and ev._trace is None
                and ev._rest is None and ev._rest_raw is None and ev._rflags == 0
                and ev._source is self.__source)

    def __wire_msg(self, subject, reply, rec, rdef, ev, seq, now, origin=None):
        """The WireMsg of a delivery: of ``ev``, or (``ev`` None) of the
        record ``rec`` from the network; ``rdef``: ``rec`` is the record of
        ``ev`` with every default (its data goes apart)."""
        if rdef:
            data = ev._data
            rec = rec[:len(rec) - len(data)]
        else:
            data = None
        sb = subject.encode("utf-8") if isinstance(subject, str) else bytes(subject)
        gen = ev._gid != 0 if ev is not None else (rec[1] & EVF_GENID) != 0
        return WireMsg(subject, sb, reply or None, rec, data, gen, ev, seq, now,
                       self.__last_stream, origin)

    def __record(self, ev):
        """The record of ``ev`` (bytes)."""
        if self.__is_default(ev):
            return self.__default_record(ev)
        return _ev_encode(ev)

    def __collect(self, m, toks):
        """The handles a publish goes to (see Matcher._collect); this
        delivery's ``_only`` is used up."""
        only = self._only
        self._only = -1
        return m._collect(toks, only, self.__is_remote if self.prefer_local else None)

    def __is_remote(self, h):
        v = self.__matcher._value_or_missing(h)
        return isinstance(v, WireTarget) and v.remote

    def publish_wire(self, subject, reply, rec, origin, built=False, trust_checked=False):
        """Publish an event record received from the network (a PUB frame):
        ``subject`` a str, ``reply`` its UTF-8 bytes (or None / empty),
        ``rec`` the record (bytes), ``origin`` the publishing connection's
        OutBuf (or None); ``built``: a record the door made itself (no need
        to check it).  Engine use: the parsers and publish_record."""
        if self.closed:
            raise FastflowError("flow {!r} is closed".format(self.__name))
        if reply:
            # (written into subscribers' MSG lines and frames: a literal subject)
            check_reply(reply)
        _as_utf8(subject, False)        # (not encodable: raises before the record check)
        if not built:
            _ev_check(subject, rec, 0, len(rec))
        if self.__trust_on is not None and not trust_checked:
            self.__trust(subject, bytes(rec), None)
        m = self.__matcher
        _, _, hops, _, _, _, trn, _ = _HEADER.unpack_from(rec, 0)
        if hops or trn:
            # lineage: the loop breaker needs the event (rare)
            ev = _ev_decode(subject, rec, 0, len(rec), 0, None, 0, None)
            hs = self.__collect(m, _tokens(m, subject))
            return self.__deliver(subject, hs, None, ev, _now_ns(), None, reply, origin)
        hs = self.__collect(m, _tokens(m, subject))
        return self.__deliver(subject, hs, None, None, _now_ns(), rec, reply, origin)

    def publish_record(self, subject, record, reply=None, origin=None, *, trust_checked=False,
                       groups=True, group=None):
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
        if group is not None:
            if group not in self.__matcher._qrefs:
                return 0                # no member here (any more)
            only = group
        elif not groups:
            only = -2
        else:
            only = -1
        if origin is not None and not isinstance(origin, OutBuf):
            raise TypeError("Argument 'origin' has incorrect type (expected {}.{}, got {})"
                            .format(OutBuf.__module__, OutBuf.__qualname__,
                                    type(origin).__name__))
        rb = None
        if reply is not None:
            rb = _as_utf8(reply, False)
        rec = _record_bytes(record)
        self._only = only
        try:
            return self.publish_wire(_subject_str(subject), rb, rec, origin,
                                     trust_checked=bool(trust_checked))
        finally:
            self._only = -1

    def __route(self, subject, data, ev, now):
        """Publish one event: ``ev`` when the publisher gave attributes or an
        Event (its data is set), else ``data`` (bytes) with the defaults."""
        if self.closed:
            raise FastflowError("flow {!r} is closed".format(self.__name))
        if self.__trust_on is not None:
            _as_utf8(subject, False)
            self.__trust(subject, None, ev)
        m = self.__matcher
        hs = self.__collect(m, _tokens(m, subject))
        return self.__deliver(subject, hs, data, ev, now)

    def __route_cached(self, subject, data, ev, now):
        """``__route`` for batches: a run of one subject object is matched once
        (while no subscription changes); the queue groups still take turns."""
        if self.closed:
            raise FastflowError("flow {!r} is closed".format(self.__name))
        if self.__trust_on is not None:
            _as_utf8(subject, False)
            self.__trust(subject, None, ev)
        m = self.__matcher
        version = m._inserts + m._removes
        if subject is not self.__last_subject or version != self.__last_version:
            toks = _tokens(m, subject)
            hs = self.__collect(m, toks)
            self.__last_subject = subject
            self.__last_version = version
            self.__last_toks = toks
        else:
            hs = self.__collect(m, self.__last_toks)
            m._matches -= 1             # a cached result: not a match
        return self.__deliver(subject, hs, data, ev, now)

    def __deliver(self, subject, hs, data, ev, now, wrec=None, reply=None, origin=None):
        """The rest of a publish, from the matched handles ``hs`` (a new
        list: one member per queue group): of ``ev``, or of ``data`` with
        the defaults, or (from the network) of the record ``wrec`` with its
        ``reply`` subject (UTF-8 bytes) published by ``origin``."""
        m = self.__matcher
        self.__last_stream = None
        self.__last_duplicate = False
        if wrec is not None:
            dlen = _rec_payload(wrec)
        elif ev is not None:
            dlen = len(ev._data) if ev._data is not None else 0
        else:
            dlen = len(data) if data is not None else 0
        if origin is not None and not origin.backbone:
            origin.pub_bytes += dlen
            if self.ingress is not None:
                self.ingress.take(1, dlen)
        if not hs:
            self.__n_published += 1
            self.__sample(subject)
            self.__bytes_published += dlen
            self.__n_dropped_no_interest += 1
            return 0
        if ev is not None and (ev._hops or ev._trace is not None):
            reason = _attrs.check_lineage(self.__name, subject, ev._hops, ev._trace,
                                          self.__hop_limit)
            if reason is not None:
                _unpick(m, hs)
                self.__n_published += 1
                self.__sample(subject)
                self.__n_dropped_loop += 1
                _loop_break(self, subject, ev, reason)
                return 0
        value = m._value_or_missing
        rec = None
        rdef = False                    # rec is the record of an event with every default
        if wrec is not None:
            rec = wrec                  # a record from the network: stored and sent as is
        elif ev is None:
            ev = Event.__new__(Event)
            if type(subject) is not str:
                subject = _decode_subject(subject) if isinstance(subject, bytes) \
                    else _as_str_field(subject)
            ev._rs = subject
            ev._data = data
            ev._gpre = _event._id_prefix
            ev._gid = _next_gid()
            ev._source = self.__source
        if ev is not None:
            ev._origin = self.__name
            ev._ts = now
            rs = ev._rs
        else:
            rs = subject
        self.__n_published += 1
        self.__sample(subject)
        self.__bytes_published += dlen
        # streams first: the event is stored before anyone sees it
        self.__stamp += 1
        stamp = self.__stamp
        seq = 0
        notify = None
        refused = None                  # the first stream's refusal (raised after the
        for h in hs:                    # delivery: subscribers get the event)
            st = value(h)
            if type(st) is not StreamTarget:
                continue
            if st._stamp == stamp:
                continue                # two patterns of one stream matched
            st._stamp = stamp
            if rec is None:
                rdef = self.__is_default(ev)
                rec = self.__default_record(ev) if rdef else _ev_encode(ev)
            dkey = None
            if st._dedup and not rec[1] & EVF_GENID:
                # an id the producer chose: a retry within the window is not
                # stored again (generated ids never repeat)
                dkey = _dedup_key(rec)
                mono = _time.monotonic_ns()
                hit = _dedup_seen(st._log, dkey, mono)
                if hit is not None:
                    st._duplicates += 1
                    if seq == 0:
                        seq = hit
                        self.__last_stream = st._name
                        self.__last_duplicate = True
                    continue
            try:
                s = _append_routed(st._log, rs, rec)
            except (LogFullError, EventTooLarge) as exc:
                # this stream refuses the event (discard='new', too large):
                # counted, told to the publisher after the delivery, which
                # goes on (as JetStream's)
                st._rejected += 1
                self.__n_rejected += 1
                if refused is None:
                    refused = _refusal(st._name, exc)
                continue
            st._appended += 1
            st._appended_bytes += dlen
            self.__n_appended += 1
            self.__bytes_appended += dlen
            if dkey is not None:
                _dedup_remember(st._log, dkey, s, mono)
            if seq == 0:
                seq = s
                self.__last_stream = st._name
                now = st._log._last_ts  # the ts the log stored
                if ev is not None:
                    ev._seq = s
                    ev._stream = st._name
                    ev._ts = now
            if st._listeners:
                if notify is None:
                    notify = []
                notify.append(st)
                notify.append(s)
        msg = None                      # what the wire targets get (made once)
        for h in hs:
            v = value(h)
            if isinstance(v, WireTarget):
                if not v._echo and v._outbuf is origin:
                    continue
                if msg is None:
                    if rec is None:
                        rdef = self.__is_default(ev)
                        rec = self.__default_record(ev) if rdef else _ev_encode(ev)
                    msg = self.__wire_msg(subject, reply, rec, rdef, ev if wrec is None else None,
                                          seq, now, origin)
                if v._conflate and v._outbuf._behind:
                    # (the connection cannot write: keep the latest per subject)
                    ok = v._outbuf._keep(v, msg)
                    if ok == 2:
                        v._conflated += 1
                        self.__n_conflated += 1
                else:
                    ok = v.write(msg)
                if ok:
                    v._delivered += 1
                    v._delivered_bytes += dlen
                    self.__n_delivered += 1
                    self.__bytes_delivered += dlen
                    if reply and v._replies is not None and len(v._replies) < _REPLIES_MAX:
                        v._replies.append(bytes(reply))
                else:
                    v._dropped += 1
                    self.__n_dropped_slow += 1
                if v._remaining:
                    v._remaining -= 1
                    if v._remaining == 0 and v._handle in m:
                        m.remove(v._handle)     # UNSUB with a max: done
                        self._drop_interest(v._handle)
                        if v.on_end is not None:
                            v.on_end(v)
                continue
            if type(v) is not SubTarget:
                continue
            su = v
            if su._closed:
                continue
            if ev is None:              # a network record, for in-process subscribers
                ev = _ev_decode(subject, wrec, 0, len(wrec), seq, self.__last_stream, now,
                                self.__name)
            if su._callback is not None:
                su._delivered += 1
                su._delivered_bytes += dlen
                self.__n_delivered += 1
                self.__bytes_delivered += dlen
                try:
                    su._callback(ev)
                except Exception as exc:
                    su._errors += 1
                    self.__n_callback_errors += 1
                    _callback_error(self, exc, su)
            elif su._queue(ev, self):
                su._delivered_bytes += dlen
                self.__n_delivered += 1
                self.__bytes_delivered += dlen
        if notify is not None:
            for i in range(0, len(notify), 2):
                st = notify[i]
                for listener in list(st._listeners):
                    listener(notify[i + 1])
        if refused is not None:
            raise refused
        return seq

    def __publish(self, subject, data, attributes):
        if type(subject) is Event:
            if data is not None or attributes:
                raise TypeError("publish(event) takes no data or attributes: use event.derive()")
            src = subject
            if src._rs is None:
                raise EventError("cannot publish an event without a routing subject")
            # a copy: the caller's event is not changed; an event this engine
            # routed before carries its whole lineage (so republishing it
            # as is counts as returning to where it was)
            ev = Event.__new__(Event)
            _ev_copy(ev, src)
            if src._origin is not None:
                ev._trace = src.trace
                ev._origin = None
            return self.__route(ev._rs, None, ev, _now_ns())
        if type(data) is not bytes:
            data = _as_data(data)
        if not attributes:
            return self.__route(subject, data, None, _now_ns())
        ev = Event.__new__(Event)
        _ev_init_attrs(ev, attributes, self.__source)
        ev._data = data
        if type(subject) is bytes:
            subject = _decode_subject(subject)
        ev._rs = _as_str_field(subject)
        return self.__route(subject, data, ev, _now_ns())

    def publish(self, /, *args, **attributes):
        # publish(subject, data=b'', /, **attributes): see __doc__ below
        nargs = len(args)
        if nargs < 1 or nargs > 2:
            raise TypeError("publish() takes a subject and optional data ({} positional "
                            "arguments given)".format(nargs))
        subject = args[0]
        data = args[1] if nargs == 2 else None
        if attributes and "data" in attributes:
            if nargs == 2:
                raise TypeError("publish() got data both as an argument and as a keyword")
            data = attributes.pop("data")
        if data is None and type(subject) is not Event:
            data = b""
        return self.__publish(subject, data, attributes)

    publish.__doc__ = """Publish one event: ``subject`` (the routing subject) and ``data`` (bytes),
with CloudEvents attributes as keywords; or an ``Event`` alone.  Returns
its seq in the first stream that stored it (0 if none did)."""
    publish.__signature__ = inspect.Signature([
        inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY),
        inspect.Parameter("subject", inspect.Parameter.POSITIONAL_ONLY),
        inspect.Parameter("data", inspect.Parameter.POSITIONAL_ONLY, default=b""),
        inspect.Parameter("attributes", inspect.Parameter.VAR_KEYWORD),
    ])

    def publish_batch(self, subjects, datas, /, **attributes):
        """Publish ``datas`` (a sequence of bytes) on one subject or on a
        sequence of subjects as long; returns the number published.  The
        attributes apply to every event (each gets its own id).  An invalid
        subject raises naming its index; the events before it are published.
        A stream's refusal (``LogFullError``, ``EventTooLarge``) is raised
        after the whole batch was published, naming the first index."""
        one = isinstance(subjects, (str, bytes))
        subject = subjects
        proto = None
        now = _now_ns()
        refused = None                  # a stream's first refusal, and its index
        refused_at = 0
        # tuples: a callback cannot change them under the loop
        if type(datas) is not tuple:
            datas = tuple(datas)
        n = len(datas)
        if not one:
            if type(subjects) is not tuple:
                subjects = tuple(subjects)
            if len(subjects) != n:
                raise ValueError("subjects and datas differ in length: {} and {}".format(
                    len(subjects), n))
        if attributes:
            proto = Event.__new__(Event)
            _ev_init_attrs(proto, attributes, self.__source)
            if not proto._gid and n > 1:
                raise EventError("invalid event attribute 'id': one id for {} events of a "
                                 "batch".format(n))
        for i in range(n):
            if not one:
                subject = subjects[i]
            data = datas[i]
            if type(data) is not bytes:
                data = _as_data(data)
            try:
                if proto is None:
                    self.__route_cached(subject, data, None, now)
                else:
                    ev = Event.__new__(Event)
                    _ev_copy(ev, proto)
                    if proto._gid:
                        ev._gid = _next_gid()
                    ev._data = data
                    if type(subject) is bytes:
                        subject = _decode_subject(subject)
                    ev._rs = _as_str_field(subject)
                    self.__route_cached(subject, data, ev, now)
            except SubjectError as exc:
                raise SubjectError("{} (batch index {})".format(exc, i)) from None
            except (LogFullError, EventTooLarge) as exc:
                if refused is None:     # delivered, not stored: the batch goes on
                    refused = exc
                    refused_at = i
        if refused is not None:
            refused.args = ("{} (batch index {}; the whole batch was published)".format(
                refused, refused_at),)
            raise refused
        return n

    def publish_json(self, body, routing_subject=None, *, origin=None, check=None):
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
        return self.__publish_json(body, routing_subject, False, origin, check, False)

    def publish_json_batch(self, body, routing_subject=None, *, origin=None, check=None,
                           acks=False):
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
        return self.__publish_json(body, routing_subject, True, origin, check, bool(acks))

    def __publish_json(self, body, routing_subject, batch, origin, check, acks):
        from fastflow._ref.cejson import decode_batch, decode_event

        if origin is not None and not isinstance(origin, OutBuf):
            raise TypeError("Argument 'origin' has incorrect type (expected {}.{}, got {})"
                            .format(OutBuf.__module__, OutBuf.__qualname__,
                                    type(origin).__name__))
        rs = None
        if routing_subject is not None:
            rs = _subject_str(routing_subject)
            tokenize(rs, False)
        events = decode_batch(body, rs) if batch else [decode_event(body, rs)]
        subjects = []
        for i, e in enumerate(events):
            if rs is not None:
                subjects.append(rs)
                continue
            try:
                tokenize(e.type, False)
            except SubjectError as exc:
                if batch:
                    raise SubjectError("{} (batch index {})".format(exc, i)) from None
                raise
            subjects.append(e.type)
        if check is not None:
            for subject in dict.fromkeys(subjects):
                check(subject)
        records = [_ev_encode(e) for e in events]
        checked = self.__trust_on is not None
        if checked:
            # the trust policy: every event passes before any is published
            for i, subject in enumerate(subjects):
                try:
                    self.__trust(subject, records[i], None)
                except SignatureError as exc:
                    if batch:
                        exc.args = ("{} (batch index {}; nothing was published)".format(
                            exc, i),)
                    raise
        out = [] if acks else None
        return self.__publish_records(subjects, records, batch, origin, acks, out, checked)

    def __publish_records(self, subjects, records, batch, origin, acks, out, checked):
        seq = 0
        refused = None
        refused_at = 0
        for i, (subject, rec) in enumerate(zip(subjects, records)):
            try:
                seq = self.publish_wire(subject, None, rec, origin, built=True,
                                        trust_checked=checked)
            except (LogFullError, EventTooLarge) as exc:
                if not batch:
                    raise
                if refused is None:     # delivered, not stored: the batch goes on
                    refused = exc
                    refused_at = i
                seq = 0
            if acks:
                out.append((self.last_stream if seq else None, seq))
        if refused is not None:
            refused.args = ("{} (batch index {}; the whole batch was published)".format(
                refused, refused_at),)
            raise refused
        if not batch:
            return seq
        return out if acks else len(records)

    def stats(self):
        return {
            "published": self.__n_published,
            "delivered": self.__n_delivered,
            "stored": self.__n_appended,
            "dropped_no_interest": self.__n_dropped_no_interest,
            "dropped_slow_consumer": self.__n_dropped_slow,
            "conflated": self.__n_conflated,
            "dropped_loop": self.__n_dropped_loop,
            "rejected_by_stream": self.__n_rejected,
            "callback_errors": self.__n_callback_errors,
        }


# -- imports: one account's router republishing a match into another's ------------------

IMPORT_DEPTH_MAX = 64           # the highest max_depth an ImportTarget takes

# Imports in progress (nested: an import's delivery in its dest ran an import
# of its own).  (The native core copies each forwarded record into a buffer
# per depth; here records are immutable bytes.)
_import_depth = 0


def _map_bytes(v, what):
    """What a map returned, as UTF-8 bytes (bytes, or a str encoded)."""
    if type(v) is bytes:
        return v
    if isinstance(v, str):
        return v.encode("utf-8", "surrogatepass")
    if isinstance(v, bytes):
        return bytes(v)
    raise TypeError("{} must return bytes, str or None, not {}".format(what, type(v).__name__))


@_final
class ImportTarget(WireTarget):
    """One account's import of another's export: registered in the
    exporting account's router on the exported pattern, it republishes each
    message matched into ``dest`` (the importing account's router) as its
    record was received, on the subject ``prefix + subject[strip:]`` (bytes;
    or what ``subject_map(subject)`` returns, None: not forwarded).  The
    reply crosses only through ``reply_map(reply)`` (None: no reply).  At
    ``max_depth`` imports in progress (accounts importing from each other in
    a cycle) a message is not forwarded (``looped``); a stream of ``dest``
    refusing it (``LogFullError``, ``EventTooLarge``) or a rewritten
    subject that is no valid subject there counts as ``refused`` and does
    not reach the publisher.  Engine use."""

    __slots__ = ("_dest", "_strip", "_prefix", "_reply_map", "_subject_map", "_max_depth",
                 "_forwarded", "_forwarded_bytes", "_refused", "_looped", "_last_in",
                 "_last_out")

    def __init__(self, dest, strip=0, prefix=b"", reply_map=None, subject_map=None,
                 max_depth=8):
        if not isinstance(dest, Router):
            if dest is None:
                raise TypeError("Argument 'dest' must not be None")
            raise TypeError("Argument 'dest' has incorrect type (expected {}.{}, got {})".format(
                Router.__module__, Router.__qualname__, type(dest).__name__))
        strip = _c_int(strip)
        max_depth = _c_int(max_depth)
        if strip < 0:
            raise ValueError("strip must be >= 0, got {}".format(strip))
        if not 1 <= max_depth <= IMPORT_DEPTH_MAX:
            raise ValueError("max_depth must be 1 to {}, got {}".format(IMPORT_DEPTH_MAX,
                                                                       max_depth))
        if isinstance(prefix, str):
            prefix = prefix.encode("utf-8")
        elif type(prefix) is not bytes:
            raise TypeError("prefix must be bytes, not {}".format(type(prefix).__name__))
        for name, f in (("reply_map", reply_map), ("subject_map", subject_map)):
            if f is not None and not callable(f):
                raise TypeError("{} must be callable or None, got {}".format(
                    name, type(f).__name__))
        # the WireTarget's state, without its OutBuf: no connection, never
        # "the publisher's own"
        self._outbuf = None
        self._echo = True
        self._remaining = 0
        self.owner = None
        self.on_end = None
        self._delivered = 0
        self._delivered_bytes = 0
        self._dropped = 0
        self._handle = 0
        self._replies = None
        self._dest = dest               # the importing account's router
        self._strip = strip             # bytes cut from the front of the subject
        self._prefix = prefix           # put before what is left
        self._reply_map = reply_map     # (bytes reply) -> bytes or None; None: no reply
        self._subject_map = subject_map     # (bytes subject) -> bytes or None (refused)
        self._max_depth = max_depth     # nested imports at which a message stops
        self._conflate = False          # (a WireTarget's: an import never conflates)
        self._conflated = 0
        self._remote = False
        self._forwarded = 0
        self._forwarded_bytes = 0
        self._refused = 0
        self._looped = 0
        self._last_in = None            # the last source subject rewritten
        self._last_out = None           # ... and what it became

    dest = _ro("_dest")
    strip = _ro("_strip")
    prefix = _ro("_prefix")
    reply_map = _ro("_reply_map")
    subject_map = _ro("_subject_map")
    max_depth = _ro("_max_depth")
    forwarded = _ro("_forwarded")
    forwarded_bytes = _ro("_forwarded_bytes")
    refused = _ro("_refused")
    looped = _ro("_looped")

    def __rewrite(self, sb):
        """``prefix + subject[strip:]`` as a str (the last one is kept)."""
        if sb == self._last_in:
            return self._last_out
        out = _subject_str(self._prefix + sb[self._strip:])   # (SubjectError: a cut
        self._last_in = sb                                      # through a character)
        self._last_out = out
        return out

    def write(self, msg):
        global _import_depth
        if msg.origin is not None and msg.origin.backbone:
            return 1            # imported on the node it was published on, and forwarded
        d = _import_depth
        if d >= self._max_depth:
            self._looped += 1
            return 1
        try:
            if self._subject_map is None:
                subject = self.__rewrite(msg.subject_b)
            else:
                r = self._subject_map(bytes(msg.subject_b))
                if r is None:
                    self._refused += 1
                    return 1
                subject = _subject_str(_map_bytes(r, "subject_map"))
        except SubjectError:
            self._refused += 1
            return 1
        reply = None
        if msg.reply and self._reply_map is not None:
            r = self._reply_map(bytes(msg.reply))
            if r is not None:
                reply = _map_bytes(r, "reply_map")
        # the record as received (its data appended when the router made the
        # record of a default event without it)
        rec = bytes(msg.rec) if msg.data is None else bytes(msg.rec) + bytes(msg.data)
        _import_depth = d + 1
        try:
            self._dest.publish_wire(subject, reply, rec, None, built=True)
        except (LogFullError, EventTooLarge, SubjectError, SignatureError):
            # delivered in dest but not stored, or no valid subject or reply
            # there: the dest's business, not the source publisher's
            self._refused += 1
            return 1
        finally:
            _import_depth = d
        self._forwarded += 1
        self._forwarded_bytes += _rec_payload(rec)
        return 1
