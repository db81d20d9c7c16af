"""The CloudEvents types observed in each stream, with live figures
(docs/catalog.md): a ``TypeTracker`` per stream reads the records appended
since its last position, in batches, and counts them by ``type``.

Nothing is added to the publish path: the tracker runs on a timer (every
second while the HTTP door is on) and before a catalog request, reading the
log as any replay does.  It is bounded: at most ``max_types`` types per
stream (beyond them, events are counted under ``other``), at most
``budget`` records read per stream and pass (50,000 before a request,
10,000 on the timer; the rest next pass); records
evicted by retention before it read them are counted as ``unread``.
"""

import time
from collections import deque

from fastflow._impl import events_from_batch

__all__ = ("BUDGET", "TICK_BUDGET", "TypeStats", "TypeTracker", "Trackers")

MAX_TYPES = 1000                # types kept per stream; others are counted as "other"
BUDGET = 50000                  # records read per stream and pass at most (a request)
TICK_BUDGET = 10000             # ... on the timer (about 1.8 us each: ~2% of a core a stream)
BATCH = 1024                    # records per log.read
RATE_WINDOW = 10.0              # seconds the rate is measured over (at most)
_SAMPLES = 12                   # (time, count) samples kept per type for the rate


class TypeStats:
    """One CloudEvents ``type`` seen in a stream."""

    __slots__ = ("type", "count", "first_ts", "last_ts", "first_seq", "last_seq", "source",
                 "sources", "datacontenttype", "dataschema", "samples")

    def __init__(self, type_):
        self.type = type_
        self.count = 0
        self.first_ts = 0               # event time (ns since the epoch, as stored)
        self.last_ts = 0
        self.first_seq = 0
        self.last_seq = 0
        self.source = None              # the last source seen
        self.sources = 0                # distinct sources seen (up to 2: "one" or "many")
        self.datacontenttype = None
        self.dataschema = None
        self.samples = deque(maxlen=_SAMPLES)

    def rate(self, now):
        """Events per second over the last RATE_WINDOW seconds (as read)."""
        return _rate(self.samples, self.count, now)


def _rate(samples, count, now):
    for t, c in samples:
        if now - t <= RATE_WINDOW:
            dt = now - t
            return (count - c) / dt if dt > 0 else 0.0
    return 0.0


class TypeTracker:
    """The types of one stream's log."""

    def __init__(self, name, log, max_types=MAX_TYPES):
        self.name = name
        self.log = log
        self.max_types = max_types
        self.types = {}                 # type -> TypeStats
        self.next_seq = log.first_seq   # (what retention dropped before it began is not counted)
        self.count = 0                  # events read
        self.other = 0                  # events of types past max_types
        self.other_types = 0            # (lower bound: types seen once the table was full)
        self.unread = 0                 # events evicted before the tracker read them
        self.samples = deque(maxlen=_SAMPLES)
        self.created = time.time()

    def update(self, budget=BUDGET, now=None):
        """Read what was appended since the last pass (``budget`` records at
        most); returns how many were read."""
        log = self.log
        if log.closed:
            return 0
        if now is None:
            now = time.monotonic()
        first = log.first_seq
        if first > self.next_seq:       # (an empty log's first_seq is last_seq + 1)
            self.unread += first - self.next_seq
            self.next_seq = first
        last = log.last_seq
        n = 0
        types = self.types
        name = self.name
        while self.next_seq <= last and n < budget:
            batch = log.read(self.next_seq, min(BATCH, budget - n))
            if not len(batch):
                self.next_seq = max(self.next_seq, batch.next_seq)
                break
            if batch.seqs[0] > self.next_seq:   # evicted between first_seq and the read
                self.unread += batch.seqs[0] - self.next_seq
            for ev in events_from_batch(batch, name):
                t = ev.type
                st = types.get(t)
                if st is None:
                    if len(types) >= self.max_types:
                        self.other += 1
                        continue
                    st = types[t] = TypeStats(t)
                    st.first_ts = ev.ts
                    st.first_seq = ev.seq
                st.count += 1
                st.last_ts = ev.ts
                st.last_seq = ev.seq
                src = ev.source
                if src != st.source:
                    st.sources = min(2, st.sources + 1)
                    st.source = src
                ct = ev.datacontenttype
                if ct is not None:
                    st.datacontenttype = ct
                ds = ev.dataschema
                if ds is not None:
                    st.dataschema = ds
            n += len(batch)
            self.next_seq = batch.next_seq
        self.count += n
        self._sample(now)
        return n

    def _sample(self, now):
        s = self.samples
        if not s or now - s[-1][0] >= 0.5:
            s.append((now, self.count))
            for st in self.types.values():
                st.samples.append((now, st.count))

    def rate(self, now=None):
        return _rate(self.samples, self.count, time.monotonic() if now is None else now)


class Trackers:
    """A ``TypeTracker`` per stream of ``flow``, kept in step with the
    streams (a stream deleted, or deleted and made again, starts over)."""

    def __init__(self, flow, max_types=MAX_TYPES, budget=BUDGET):
        self.flow = flow
        self.max_types = max_types
        self.budget = budget
        self.trackers = {}              # stream name -> TypeTracker

    def update(self, names=None, budget=None):
        """Bring the trackers of ``names`` (None: every stream) up to date,
        reading at most ``budget`` records a stream (None: ``self.budget``)."""
        streams = self.flow.streams()
        for name in list(self.trackers):
            if name not in streams or streams[name].log is not self.trackers[name].log:
                del self.trackers[name]
        now = time.monotonic()
        for name, st in streams.items():
            if names is not None and name not in names:
                continue
            tr = self.trackers.get(name)
            if tr is None:
                tr = self.trackers[name] = TypeTracker(name, st.log, self.max_types)
            tr.update(self.budget if budget is None else budget, now)
        return self.trackers
