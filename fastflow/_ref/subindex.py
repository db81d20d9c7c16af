"""Pure-Python twin of ``src_ext/subindex.pyx``: subscriptions (int
handles) by their index keys, and the candidates of stored event records.

The reference of the index's semantics (the compiled one is its fast
path): dictionaries of values per attribute, prefix values by length,
the routing patterns in a ``Matcher``, over the events the records
decode to.
"""

from fastflow._ref.event import Event
from fastflow._ref.matcher import Matcher
from fastflow._ref.subjects import validate_pattern

__all__ = ("SubscriptionIndex",)

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
            self.remove(handle)
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
        """Forget ``handle`` and its keys (nothing happens if it has none)."""
        _handle(handle)
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
