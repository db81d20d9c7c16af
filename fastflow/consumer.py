"""Durable consumers of a stream: pull (``fetch``, ``async for``) or push
(a callback), with acknowledgements, redelivery and dead letters.

A consumer reads its stream's log; it keeps, in memory, the deliveries not
yet acknowledged (at most ``max_in_flight``), and in the log a durable
cursor, the *ack floor*: every event at or below it is done.  After a
restart, delivery resumes after the floor, so an event delivered but not
acknowledged before a crash is delivered again (at least once).
"""

import asyncio
import datetime as _dt
import math
import threading
import time as _time
from collections import deque

from fastflow._impl import Event, events_from_batch, validate_pattern
from fastflow._settings import Settings

__all__ = ("Consumer", "ConsumerConfig")

_ACKS = ("explicit", "all", "none")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_PERSIST_EVERY = 0.2            # seconds between saves of a moving ack floor
_PUMP_ROUNDS = 64               # fetch rounds per push, so a nak(0) loop ends


class ConsumerConfig(Settings):
    """A consumer's settings (see ``Stream.consumer``)."""

    __slots__ = ("start", "filter", "ack", "ack_wait", "max_deliver", "max_in_flight",
                 "dead_letter", "conflate")

    def __init__(self, start="first", filter=None, ack="explicit", ack_wait=30.0,
                 max_deliver=0, max_in_flight=1024, dead_letter=None, conflate=False):
        if isinstance(start, _dt.datetime):
            if start.tzinfo is None:
                start = start.astimezone()          # naive: local time, as the log
            start = {"time": (start - _EPOCH) // _dt.timedelta(microseconds=1) * 1000}
        elif isinstance(start, dict):
            if set(start) != {"time"} or type(start["time"]) is not int:
                raise ValueError("start must be 'first', 'last', 'new', a seq (int >= 1) or a "
                                 "datetime, got {!r}".format(start))
        elif type(start) is int:
            if start < 1:
                raise ValueError("start seq must be >= 1, got {}".format(start))
        elif start not in ("first", "last", "new"):
            raise ValueError("start must be 'first', 'last', 'new', a seq (int >= 1) or a "
                             "datetime, got {!r}".format(start))
        if filter is not None:
            validate_pattern(filter)
        if ack not in _ACKS:
            raise ValueError("ack must be 'explicit', 'all' or 'none', got {!r}".format(ack))
        if isinstance(ack_wait, bool) or not isinstance(ack_wait, (int, float)) \
                or not math.isfinite(ack_wait) or ack_wait <= 0:
            raise ValueError("ack_wait must be a number of seconds > 0, got {!r}".format(ack_wait))
        if type(max_deliver) is not int or max_deliver < 0:
            raise ValueError("max_deliver must be an int >= 0 (0 = no limit), got {!r}"
                             .format(max_deliver))
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError("max_in_flight must be an int >= 1, got {!r}".format(max_in_flight))
        if dead_letter is not None:
            from fastflow._impl import validate_subject

            validate_subject(dead_letter)
        if not isinstance(conflate, bool):
            raise ValueError("conflate must be true or false, got {!r}".format(conflate))
        self.start = start
        self.filter = filter
        self.ack = ack
        self.ack_wait = float(ack_wait)
        self.max_deliver = max_deliver
        self.max_in_flight = max_in_flight
        self.dead_letter = dead_letter
        self.conflate = conflate



class Consumer:
    """A durable consumer (made by ``stream.consumer(name, ...)``).

    Pull: ``fetch(n)`` returns up to ``n`` deliveries now; ``async for ev
    in consumer`` waits for more.  Push: ``stream.consumer(name,
    callback=f)`` calls ``f(event)`` for each delivery, inline when events
    are published.  Each delivery is an ``Event`` with ``seq``,
    ``deliveries`` and ``ack()``, ``nak(delay)``, ``term()``,
    ``in_progress()``.  With ``ack="explicit"`` each delivery must be
    acknowledged, with ``"all"`` an ack covers every earlier delivery, with
    ``"none"`` a delivery is done when made.  A delivery not acknowledged
    within ``ack_wait`` seconds is delivered again; after ``max_deliver``
    deliveries (0 = no limit) it is published on the dead-letter subject
    (``$DLQ.<stream>.<consumer>`` unless ``dead_letter`` is given) and an
    advisory goes to ``$SYS.advisory.dead_letter``.

    ``conflate``: when the consumer is behind, each read of its backlog
    delivers only the records that are their subject's newest in the
    stream; the superseded ones are skipped as done (``conflated`` counts
    them).  A consumer that keeps up gets every record.
    """

    def __init__(self, stream, name, config):
        self.stream = stream
        self.name = name
        self.config = config
        self.owner = None               # who created it over the wire ("user:alice")
        self._flow = stream.flow
        lg = self._log = stream.log
        if name in lg.cursors():
            self._floor = lg.cursor(name)
        else:
            start = config.start
            if type(start) is int:
                pos = lg.seek(seq=start)
            elif isinstance(start, dict):
                pos = lg.seek(time=start["time"])
            else:
                pos = lg.seek(start)
            self._floor = max(0, min(pos.seq - 1, lg.last_seq))
            lg.set_cursor(name, self._floor)
        self._saved = self._floor
        self._saved_at = _time.monotonic()
        self._next = self._floor + 1
        self._pending = {}              # seq -> [deliveries, deadline], oldest seq first
        self._due = math.inf            # earliest deadline in _pending
        self._callback = None
        self._pumping = False
        self._again = False
        self._timer = None
        self._waiter = None
        self._waiter_thread = None
        self._buf = deque()
        self._listening = False
        self._closed = False
        self.delivered = 0
        self.redelivered = 0
        self.acked = 0
        self.naked = 0
        self.terminated = 0
        self.dead_lettered = 0
        self.lost = 0
        self.errors = 0
        self.conflated = 0              # records skipped: a newer one of their subject followed

    # -- pull ---------------------------------------------------------------------

    def fetch(self, n=1):
        """Up to ``n`` deliveries available now: redeliveries due first,
        then new events (never more than ``max_in_flight`` unacknowledged)."""
        if self._closed:
            raise ValueError("consumer {!r} of stream {!r} is closed".format(
                self.name, self.stream.name))
        if n < 1:
            return []
        cfg = self.config
        now = _time.monotonic()
        out = []
        if self._pending and self._due <= now:
            self._redeliver(now, n, out)
        room = n - len(out)
        if cfg.ack != "none":
            room = min(room, cfg.max_in_flight - len(self._pending))
        lg = self._log
        if room > 0 and self._next <= lg.last_seq:
            b = lg.read(self._next, limit=room, filter=cfg.filter)
            skipped = 0
            if cfg.conflate and len(b):
                # (the per-record check in the core: its subject's newest seq)
                kept = lg.latest_only(b)
                skipped = len(b) - len(kept)
                if skipped:
                    self.conflated += skipped
                    self._flow.n_consumer_conflated += skipped
                    b = kept
            acker = self
            deadline = now + cfg.ack_wait
            sname = self.stream.name
            for ev in events_from_batch(b, sname, self._flow.name):
                out.append(ev._delivery(ev.seq, sname, ev.ts, 1, acker))
                if cfg.ack != "none":
                    self._pending[ev.seq] = [1, deadline]
            if cfg.ack != "none" and out and deadline < self._due:
                self._due = deadline
            self.delivered += len(b)
            if b.next_seq > self._next:
                self._next = b.next_seq
            if cfg.ack == "none" or skipped:
                self._move_floor()      # (superseded records are done)
        return out

    def _redeliver(self, now, n, out):
        cfg = self.config
        due = math.inf
        lg = self._log
        for seq, st in list(self._pending.items()):
            if st[1] > now:
                due = min(due, st[1])
                continue
            if len(out) >= n:
                due = min(due, st[1])
                continue
            try:
                rec = lg.get(seq)
                ev = Event.decode(rec.subject, rec.data, seq, self.stream.name, rec.ts)
            except KeyError:
                del self._pending[seq]          # evicted meanwhile
                self.lost += 1
                continue
            if cfg.max_deliver and st[0] >= cfg.max_deliver:
                del self._pending[seq]
                self._dead_letter(ev, st[0])
                continue
            st[0] += 1
            st[1] = now + cfg.ack_wait
            due = min(due, st[1])
            self.redelivered += 1
            self.delivered += 1
            out.append(ev._delivery(seq, self.stream.name, rec.ts, st[0], self))
        self._due = due
        self._move_floor()

    def _dead_letter(self, ev, deliveries):
        self.dead_lettered += 1
        subject = self.config.dead_letter or "$DLQ.{}.{}".format(self.stream.name, self.name)
        attrs = ev.attributes()
        attrs["ffdeliveries"] = deliveries
        self._flow.publish(Event(subject, ev.data, **attrs))
        self._flow.advise("dead_letter", {
            "stream": self.stream.name, "consumer": self.name, "seq": ev.seq,
            "subject": ev.routing_subject, "id": ev.id, "deliveries": deliveries,
            "dead_letter_subject": subject})

    def __aiter__(self):
        if self._callback is not None:
            raise TypeError("a push consumer (with a callback) is not iterable")
        return self

    async def __anext__(self):
        while True:
            if self._buf:
                return self._buf.popleft()
            if self._closed:
                raise StopAsyncIteration
            evs = self.fetch(min(64, self.config.max_in_flight))
            if evs:
                self._buf.extend(evs)
                continue
            loop = asyncio.get_running_loop()
            fut = self._waiter = loop.create_future()
            self._waiter_thread = threading.get_ident()
            self._listen(True)
            evs = self.fetch(min(64, self.config.max_in_flight))  # appended while arming
            if evs:
                self._buf.extend(evs)
                self._waiter = None
                self._listen(False)
                continue
            timeout = None
            if self._pending:
                timeout = max(0.0, self._due - _time.monotonic()) + 0.001
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                self._waiter = None
                self._listen(False)

    # -- push ---------------------------------------------------------------------

    def set_callback(self, callback):
        if not callable(callback):
            raise TypeError("callback must be callable, got {}".format(type(callback).__name__))
        self._callback = callback
        self._listen(True)
        self.pump()

    def pump(self):
        """Push mode: deliver what is available now (new events and due
        redeliveries).  The engine calls it on every append to the stream
        and, under a running event loop, when a redelivery falls due."""
        if self._callback is None or self._closed:
            return
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            for _ in range(_PUMP_ROUNDS):
                self._again = False
                evs = self.fetch(256)
                for ev in evs:
                    try:
                        self._callback(ev)
                    except Exception as exc:
                        self.errors += 1
                        self._flow._callback_error(exc, self)
                if not evs and not self._again:
                    break
        finally:
            self._pumping = False
        self._schedule()

    def _schedule(self):
        if not self._pending or self._callback is None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return                      # no loop: redeliveries wait for the next append/pump
        delay = max(0.0, self._due - _time.monotonic())
        if self._timer is not None:
            if self._timer.when() <= loop.time() + delay:
                return
            self._timer.cancel()
        self._timer = loop.call_later(delay + 0.001, self._on_timer)

    def _on_timer(self):
        self._timer = None
        self.pump()

    def _listen(self, on):
        listeners = self.stream._target.listeners
        want = on or self._callback is not None
        if want and not self._listening:
            listeners.append(self._on_append)
            self._listening = True
        elif not want and self._listening:
            listeners.remove(self._on_append)
            self._listening = False

    def _on_append(self, seq):
        if self._callback is not None:
            self.pump()
            return
        fut = self._waiter
        if fut is not None and not fut.done():
            if threading.get_ident() == self._waiter_thread:
                fut.set_result(None)
            else:
                fut.get_loop().call_soon_threadsafe(_resolve, fut)

    # -- acknowledgements ----------------------------------------------------------

    def _ack(self, ev):
        # (ack="none": every delivery is done already, acks change nothing)
        seq = ev.seq
        if self.config.ack == "all":
            for s in list(self._pending):
                if s > seq:
                    break
                del self._pending[s]
                self.acked += 1
        elif self._pending.pop(seq, None) is not None:
            self.acked += 1
        self._move_floor()

    def _nak(self, ev, delay):
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0 \
                or not math.isfinite(delay):
            raise ValueError("nak delay must be a number of seconds >= 0, got {!r}".format(delay))
        st = self._pending.get(ev.seq)
        if st is None:
            return
        self.naked += 1
        st[1] = _time.monotonic() + delay
        self._due = min(self._due, st[1])
        self._schedule()

    def _term(self, ev):
        if self._pending.pop(ev.seq, None) is not None:
            self.terminated += 1
            self._move_floor()

    def _in_progress(self, ev):
        st = self._pending.get(ev.seq)
        if st is not None:
            st[1] = _time.monotonic() + self.config.ack_wait

    def _move_floor(self, force=False):
        floor = next(iter(self._pending)) - 1 if self._pending else self._next - 1
        floor = min(floor, self._log.last_seq)
        if floor > self._floor:
            self._floor = floor
        if self._floor != self._saved and (
                force or _time.monotonic() - self._saved_at >= _PERSIST_EVERY):
            self._persist()

    def _persist(self):
        if not self._log.closed:
            self._log.set_cursor(self.name, self._floor)
        self._saved = self._floor
        self._saved_at = _time.monotonic()

    # -- info / lifecycle ------------------------------------------------------------

    @property
    def ack_floor(self):
        return self._floor

    @property
    def pending(self):
        """Deliveries not yet acknowledged."""
        return len(self._pending)

    @property
    def lag(self):
        """Events stored after the ack floor (filter not applied)."""
        return max(0, self._log.last_seq - self._floor)

    def info(self):
        return {"name": self.name, "stream": self.stream.name, "config": self.config.to_dict(),
                "delivered": self.delivered, "redelivered": self.redelivered,
                "acked": self.acked, "naked": self.naked, "terminated": self.terminated,
                "dead_lettered": self.dead_lettered, "lost": self.lost, "errors": self.errors,
                "conflated": self.conflated,
                "pending": len(self._pending), "ack_floor": self._floor,
                "next_seq": self._next, "lag": self.lag, "push": self._callback is not None}

    def _close(self):
        if self._closed:
            return
        if self._floor != self._saved:
            self._persist()
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._listening:
            self.stream._target.listeners.remove(self._on_append)
            self._listening = False
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.get_loop().call_soon_threadsafe(_resolve, fut)

    def __repr__(self):
        return "<Consumer {!r} of {!r} pending={} ack_floor={}>".format(
            self.name, self.stream.name, len(self._pending), self._floor)


def _resolve(fut):
    if not fut.done():
        fut.set_result(None)
