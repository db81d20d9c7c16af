"""Pure-Python twin of ``src_ext/subindex.pyx``: subscriptions (int
handles) by their index keys, and the candidates of stored event records.

The reference of the index's semantics (the compiled one is its fast
path): dictionaries of values per attribute, prefix values by length,
the routing patterns in a ``Matcher``, over the events the records
decode to.
"""

from fastflow._ref.event import EV_HEADER, EVF_TYPE_SUBJECT, Event, _ev_header
from fastflow._ref.matcher import Matcher
from fastflow._ref.subjects import validate_pattern, validate_subject
from fastflow.errors import EventError, FastflowError

__all__ = ("SubscriptionIndex", "sink_record")

MAX_HANDLE = 1 << 24            # handles are 0 .. MAX_HANDLE - 1
MAX_VALUE = 65535               # UTF-8 bytes of an exact or prefix value
ATTRS = ("type", "source", "subject")


def _handle(handle):
    if not isinstance(handle, int) or isinstance(handle, bool):
        raise TypeError("handle must be an int, not {}".format(type(handle).__name__))
    if not 0 <= handle < MAX_HANDLE:
        raise ValueError("handle {} out of range: handles are 0 to {}".format(
            handle, MAX_HANDLE - 1))
    return handle


def _key(key):
    """``(kind, attr, value)`` of an exact or prefix key, or ``("routing",
    pattern)``; ValueError naming the key otherwise."""
    if type(key) is not tuple and type(key) is not list:
        raise TypeError("index key must be a tuple, not {}".format(type(key).__name__))
    if len(key) == 2 and key[0] == "routing":
        validate_pattern(key[1])
        return ("routing", key[1])
    if len(key) != 3 or key[0] not in ("exact", "prefix") or key[1] not in ATTRS:
        raise ValueError("invalid index key {}: expected ('exact' or 'prefix', 'type', "
                         "'source' or 'subject', a value) or ('routing', a pattern)".format(
                             repr(key)[:200]))
    value = key[2]
    if type(value) is not str or not value:
        raise ValueError("invalid index key {}: the value must be a non-empty str".format(
            repr(key)[:200]))
    n = len(value.encode("utf-8", "surrogatepass"))
    if n > MAX_VALUE:
        raise ValueError("invalid index key {}: a value of {} bytes, the limit is {}".format(
            repr(key)[:200], n, MAX_VALUE))
    return (key[0], key[1], value)


def _text(ev, attr):
    """The value of ``attr`` (type, source or subject) of ``ev``, or None."""
    v = ev.type if attr == "type" else (ev.source if attr == "source" else ev.subject)
    return v if type(v) is str else None


class SubscriptionIndex:
    """Subscriptions (int handles, 0 to 2**24 - 1) by their index keys:
    ``("exact", attr, value)``, ``("prefix", attr, value)`` (attr: type,
    source or subject) and ``("routing", pattern)``; a subscription added
    with ``keys=None`` is a candidate of every event.  An event's
    candidates are the handles one of whose keys it meets, and the
    unindexed ones, each once.

    ``candidates_batch(batch)`` returns ``(rows, handles)``: one pair
    (index in the batch, handle) per candidate of each event, in event
    order, as two lists.  ``candidates(routing_subject, record)``: one
    record's (a list).
    """

    def __init__(self):
        self._exact = {a: {} for a in ATTRS}            # attr -> value -> {handle: None}
        self._prefix = {a: {} for a in ATTRS}           # attr -> length -> value -> {handle: None}
        self._routing = None                            # Matcher of handles, once needed
        self._unindexed = {}                            # handle -> None
        self._held = {}                                 # handle -> [key or matcher handle]
        self._sinks = {}                                # handle -> (subject, hop)
        self._sink_n = {}                               # handle -> records it delivered

    def __len__(self):
        return len(self._held)

    def __contains__(self, handle):
        return handle in self._held

    @property
    def nkeys(self):
        """Index keys held: distinct exact and prefix keys, and routing
        keys (one per handle and pattern)."""
        n = sum(len(d) for d in self._exact.values())
        n += sum(len(d) for p in self._prefix.values() for d in p.values())
        return n + (len(self._routing) if self._routing is not None else 0)

    # -- keeping the keys ----------------------------------------------------

    def add(self, handle, keys):
        """Index ``handle`` under ``keys`` (an iterable of keys, or None:
        a candidate of every event), in place of its keys if it has some.
        A bad key raises ValueError (or TypeError) and changes nothing."""
        _handle(handle)
        parsed = None if keys is None else [_key(k) for k in keys]
        if handle in self._held:
            self._drop_keys(handle)
        held = self._held[handle] = []
        if parsed is None:
            self._unindexed[handle] = None
            return
        for k in parsed:
            if k[0] == "exact":
                self._exact[k[1]].setdefault(k[2], {})[handle] = None
                held.append(k)
            elif k[0] == "prefix":
                by_len = self._prefix[k[1]].setdefault(len(k[2]), {})
                by_len.setdefault(k[2], {})[handle] = None
                held.append(k)
            else:
                if self._routing is None:
                    self._routing = Matcher()
                held.append(self._routing.add(k[1], handle))

    def remove(self, handle):
        """Forget ``handle``, its keys and its sink (nothing happens if
        it has none)."""
        _handle(handle)
        if handle in self._held:
            self._drop_keys(handle)
            self._sinks.pop(handle, None)
            self._sink_n.pop(handle, None)

    def _drop_keys(self, handle):
        held = self._held.pop(handle, None)
        if held is None:
            return
        self._unindexed.pop(handle, None)
        for k in held:
            if type(k) is int:
                self._routing.remove(k)
                continue
            if k[0] == "exact":
                d = self._exact[k[1]]
            else:
                d = self._prefix[k[1]].get(len(k[2]))
            s = d.get(k[2]) if d is not None else None
            if s is None:
                continue                # (a key the handle held twice)
            s.pop(handle, None)
            if not s:
                del d[k[2]]
                if k[0] == "prefix" and not d:
                    del self._prefix[k[1]][len(k[2])]

    # -- looking up ----------------------------------------------------------

    def _of_event(self, ev):
        out = {}
        for attr in ATTRS:
            exact = self._exact[attr]
            prefix = self._prefix[attr]
            if not exact and not prefix:
                continue
            v = _text(ev, attr)
            if v is None:
                continue
            out.update(exact.get(v, ()))
            for length, d in prefix.items():
                if length <= len(v):
                    out.update(d.get(v[:length], ()))
        if self._routing is not None and len(self._routing) and ev.routing_subject is not None:
            out.update(dict.fromkeys(self._routing.match(ev.routing_subject)))
        out.update(self._unindexed)
        return list(out)

    def candidates(self, routing_subject, record):
        """The candidates' handles of one event record (bytes-like) stored
        under ``routing_subject`` (None: no routing key matches), a list."""
        if not self._held:
            return []
        return self._of_event(Event.decode(routing_subject, bytes(record)))

    def candidates_batch(self, batch):
        """``(rows, handles)`` of a log ``Batch``: two lists of the same
        length, one pair (event index in the batch, handle) per candidate
        of each event, in event order."""
        rows, handles = [], []
        if not self._held:
            return rows, handles
        offs = batch.offsets
        buf = memoryview(batch.buffer)
        subjects = batch.subjects
        for i in range(len(offs) - 1):
            got = self.candidates(subjects[i], buf[offs[i]:offs[i + 1]])
            rows.extend([i] * len(got))
            handles.extend(got)
        return rows, handles

    # -- sinks: candidates the index delivers itself --------------------------

    def set_sink(self, handle, subject, hop=False):
        """Let ``route_batch`` deliver ``handle``'s candidates itself: each
        record is published on ``subject`` (a literal subject) of the
        router, as ``sink_record`` makes it (``hop``: with one hop more).
        ``subject=None``: the handle's candidates are returned again.  The
        handle must be held (``add``); its count of deliveries stays."""
        _handle(handle)
        if handle not in self._held:
            raise KeyError("handle {} is not in the index".format(handle))
        if subject is None:
            self._sinks.pop(handle, None)
            return
        validate_subject(subject)
        if isinstance(subject, bytes):
            subject = subject.decode("utf-8")
        self._sinks[handle] = (subject, bool(hop))

    def sink_delivered(self, handle):
        """Records ``route_batch`` delivered for ``handle`` (0 once it is
        removed)."""
        _handle(handle)
        return self._sink_n.get(handle, 0)

    def route_batch(self, batch, router):
        """``candidates_batch`` that delivers the candidates of the handles
        with a sink (``set_sink``) itself, each with one ``publish`` of the
        record on ``router`` (no Event is made), and returns the others:
        ``(rows, handles, failed)``.  A publish that raises turns that
        handle's sink off, and its pair is returned from there on, the
        failed one included; ``failed`` lists ``(handle, message)`` of
        those, in order."""
        if router is None:
            raise TypeError("route_batch() needs a router")
        rows, handles, failed = [], [], []
        if not self._held:
            return rows, handles, failed
        offs = batch.offsets
        buf = memoryview(batch.buffer)
        subjects = batch.subjects
        for i in range(len(offs) - 1):
            rec = buf[offs[i]:offs[i + 1]]
            for h in self.candidates(subjects[i], rec):
                sink = self._sinks.get(h)
                if sink is not None:
                    try:
                        router.publish_record(sink[0], sink_record(subjects[i], rec, sink[1]))
                        self._sink_n[h] = self._sink_n.get(h, 0) + 1
                        continue
                    except Exception as exc:
                        self._sinks.pop(h, None)
                        failed.append((h, str(exc) or type(exc).__name__))
                rows.append(i)
                handles.append(h)
        return rows, handles, failed


def sink_record(routing_subject, record, hop=False):
    """The record a subscription delivers for event record ``record``
    stored under ``routing_subject``: the same event, its type written
    out when it was the routing subject (the record is published on
    another subject), with one hop more (``ffhops``) if ``hop``."""
    if isinstance(routing_subject, bytes):
        routing_subject = routing_subject.decode("utf-8")
    elif routing_subject is not None and type(routing_subject) is not str:
        raise TypeError("subject must be str or bytes, not {}".format(
            type(routing_subject).__name__))
    p = bytes(record)
    flags, hops, idn, srcn, _, _, _ = _ev_header(routing_subject, p, 0, len(p))
    out = bytearray(p)
    if flags & EVF_TYPE_SUBJECT:
        if routing_subject is None:
            raise FastflowError("event record without a type and without a routing subject")
        t = routing_subject.encode("utf-8", "surrogatepass")
        if len(t) > 0xFFFF:
            raise EventError("invalid event attribute 'type': over 65535 bytes")
        off = EV_HEADER + idn + srcn
        out[off:off] = t
        out[1] = flags & ~EVF_TYPE_SUBJECT
        out[8:10] = len(t).to_bytes(2, "little")
    if hop and hops < 0xFFFF:
        out[2:4] = (hops + 1).to_bytes(2, "little")
    return bytes(out)
