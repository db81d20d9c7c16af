"""The engine's API: Flow, Stream, Retention, Subscription.

``Flow`` *is* the core's ``Router`` (the publish path in C) plus the slow
paths: configuration, lifecycle, persistence, advisories and statistics.
Durable consumers live in ``fastflow.consumer``.  Semantics and the
threading model: docs/engine.md.
"""

import asyncio
import errno
import inspect
import json
import logging
import math
import os
import re
import shutil
import threading

from fastflow import _attrs
from fastflow._impl import (
    Event,
    Log,
    Matcher,
    Router,
    StreamTarget,
    SubTarget,
    events_from_batch,
)
from fastflow._settings import Settings
from fastflow.errors import FastflowError, SlowConsumerError, StorageFullError

__all__ = ("Flow", "Retention", "Stream", "Subscription")

log = logging.getLogger("fastflow")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_STATE = "flow.json"
ADVISORY_PREFIX = "$SYS.advisory."


def _check_name(what, name):
    if type(name) is not str or not _NAME.match(name):
        raise ValueError("{} name must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-', got {!r}"
                         .format(what, name))


class Retention(Settings):
    """How much a stream keeps (0 = no limit) and what happens when full.

    ``max_events``, ``max_bytes`` (subject + stored event bytes),
    ``max_age`` (seconds), ``max_per_subject``, ``max_event_size`` (bytes of
    an encoded event: data plus its attributes, ~50 bytes for the
    defaults), ``discard``: ``"old"`` evicts the oldest events, ``"new"``
    refuses to store the event (the publish raises ``LogFullError`` after
    delivering it to the subscribers).  ``duplicate_window`` (seconds, 0 =
    none): an event whose ``(source, id)`` the stream stored within that
    long is not stored again (a producer's retry; generated ids never
    repeat), and the publish answers the original's seq.
    """

    __slots__ = ("max_events", "max_bytes", "max_age", "max_per_subject", "max_event_size",
                 "discard", "duplicate_window")

    def __init__(self, max_events=0, max_bytes=0, max_age=0.0, max_per_subject=0,
                 max_event_size=1 << 20, discard="old", duplicate_window=120.0):
        for name, v in (("max_events", max_events), ("max_bytes", max_bytes),
                        ("max_per_subject", max_per_subject), ("max_event_size", max_event_size)):
            if type(v) is not int or v < 0:
                raise ValueError("Retention.{} must be an int >= 0 (0 = no limit), got {!r}"
                                 .format(name, v))
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) \
                or not math.isfinite(max_age) or max_age < 0:
            raise ValueError("Retention.max_age must be a finite number of seconds >= 0, got {!r}"
                             .format(max_age))
        if discard not in ("old", "new"):
            raise ValueError("Retention.discard must be 'old' or 'new', got {!r}".format(discard))
        if isinstance(duplicate_window, bool) or not isinstance(duplicate_window, (int, float)) \
                or not math.isfinite(duplicate_window) or duplicate_window < 0:
            raise ValueError("Retention.duplicate_window must be a finite number of seconds >= 0 "
                             "(0 = none), got {!r}".format(duplicate_window))
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age = float(max_age)
        self.max_per_subject = max_per_subject
        self.max_event_size = max_event_size
        self.discard = discard
        self.duplicate_window = float(duplicate_window)



class Subscription:
    """Interest in a subject pattern: events go to ``callback`` inline (on
    the publisher's thread), or queue up for ``async for event in sub`` /
    ``sub.poll()`` within the pending limits."""

    def __init__(self, flow, pattern, target, queue):
        self.flow = flow
        self.pattern = pattern
        self.queue = queue
        self._t = target
        self._waiter = None
        self._waiter_thread = None
        self._task = None
        self.async_errors = 0
        target.owner = self
        target.wake = self._wake

    # -- state --------------------------------------------------------------

    @property
    def callback(self):
        return self._t.callback

    @property
    def closed(self):
        return self._t.closed

    @property
    def pending(self):
        """Events queued, not yet taken."""
        return len(self._t.pending)

    @property
    def pending_bytes(self):
        return self._t.pending_bytes

    def stats(self):
        t = self._t
        return {"pattern": self.pattern, "queue": self.queue, "delivered": t.delivered,
                "dropped": t.dropped, "pending": len(t.pending),
                "pending_bytes": t.pending_bytes, "errors": t.errors + self.async_errors,
                "max_pending": t.max_pending, "max_pending_bytes": t.max_pending_bytes,
                "on_full": t.on_full, "conflate": t.conflate, "conflated": t.conflated,
                "closed": t.closed, "slow_consumer": t.cut}

    # -- taking events --------------------------------------------------------

    def poll(self, max_events=1024):
        """Up to ``max_events`` queued events, oldest first, without waiting."""
        if self._t.cut and not self._t.pending:
            raise SlowConsumerError(self._cut_message())
        return self._t.pop_many(max_events)

    def _cut_message(self):
        return ("subscription to {!r} was cut off as a slow consumer: {} pending events or {} "
                "bytes reached".format(self.pattern, self._t.max_pending,
                                       self._t.max_pending_bytes))

    def __aiter__(self):
        if self._t.callback is not None:
            raise TypeError("a subscription with a callback is not iterable")
        return self

    async def __anext__(self):
        t = self._t
        while True:
            if t.pending:
                return t.pop()
            if t.closed:
                if t.cut:
                    raise SlowConsumerError(self._cut_message())
                raise StopAsyncIteration
            loop = asyncio.get_running_loop()
            fut = self._waiter = loop.create_future()
            self._waiter_thread = threading.get_ident()
            t.waiting = True
            if t.pending or t.closed:   # queued while we armed the waiter
                t.waiting = False
                self._waiter = None
                continue
            try:
                await fut
            finally:
                t.waiting = False
                self._waiter = None

    async def next(self, timeout=None):
        """The next event, waiting up to ``timeout`` seconds
        (``asyncio.TimeoutError`` after that)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def _wake(self):
        fut = self._waiter
        if fut is None or fut.done():
            return
        if threading.get_ident() == self._waiter_thread:
            fut.set_result(None)
        else:
            fut.get_loop().call_soon_threadsafe(_resolve, fut)

    # -- lifecycle ----------------------------------------------------------------

    def unsubscribe(self):
        """Stop the subscription; queued events stay readable, then the
        iterator ends.  Idempotent."""
        if self._t.handle in self.flow.matcher:
            self.flow.remove(self._t.handle)
        self.flow._subs.pop(id(self), None)
        self._t.close()
        self._wake()
        if self._task is not None:
            if self._task is not _current_task():
                self._task.cancel()     # (from its own callback: it ends by itself)
            self._task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unsubscribe()

    def __repr__(self):
        return "<Subscription {!r}{} delivered={} pending={}{}>".format(
            self.pattern, " queue={!r}".format(self.queue) if self.queue else "",
            self._t.delivered, len(self._t.pending), " closed" if self._t.closed else "")


def _current_task():
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _resolve(fut):
    if not fut.done():
        fut.set_result(None)


class EventReplay:
    """An iterator of the events of a stream from a position (see
    ``Stream.replay``); ``lost`` counts events that were gone."""

    def __init__(self, stream, replay):
        self._stream = stream
        self._replay = replay
        self._buf = []
        self._i = 0

    @property
    def lost(self):
        return self._replay.lost

    @property
    def next_seq(self):
        return self._replay.next_seq

    def __iter__(self):
        return self

    def __next__(self):
        if self._i < len(self._buf):
            ev = self._buf[self._i]
            self._i += 1
            return ev
        item = next(self._replay)
        return self._decode(item)

    def _decode(self, item):
        s = self._stream
        if hasattr(item, "offsets"):            # a Batch
            self._buf = events_from_batch(item, s.name, s.flow.name)
            self._i = 1
            if not self._buf:
                return self.__next__()
            return self._buf[0]
        return s._event_of(item)               # a Record (paced replay)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._i < len(self._buf):
            ev = self._buf[self._i]
            self._i += 1
            return ev
        anext_ = getattr(self._replay, "__anext__", None)
        if anext_ is not None:
            item = await anext_()
        else:                               # a replay() iterated with async for
            try:
                item = next(self._replay)
            except StopIteration:
                raise StopAsyncIteration from None
        return self._decode(item)


class Stream:
    """A named, retained sequence of the events whose subjects match its
    patterns (one log)."""

    def __init__(self, flow, name, subjects, retention, storage, log_, replicas=1):
        self.flow = flow
        self.name = name
        self.subjects = tuple(subjects)
        self.retention = retention
        self.storage = storage
        self.log = log_
        # replicas > 1: the stream lives in JetStream; its log is a read
        # cache that the cluster's mirror feeds (append_at), never the router
        self.replicas = replicas
        self.mirror = None              # the service feeding it (info(): its state)
        self._target = StreamTarget(name, log_)
        self._handles = []
        self._consumers = {}

    @property
    def replicated(self):
        return self.replicas > 1

    def append_at(self, seq, subject, record):
        """A replicated stream's mirror stores the event ``record`` (bytes of
        ``Event.encode()``) at ``seq`` of its log, JetStream's seq (the seqs
        between are skipped), and the durable consumers hear of it; returns
        ``seq``.  EventError for bytes that are not an event record."""
        return self._target.append_at(seq, subject, record)

    # -- reading ------------------------------------------------------------------

    def _event_of(self, rec):
        return Event.decode(rec.subject, rec.data, rec.seq, self.name, rec.ts)

    def get(self, seq):
        """The event stored at ``seq`` (KeyError if it is not retained)."""
        return self._event_of(self.log.get(seq))

    def replay(self, start="first", *, seq=None, time=None, filter=None, limit=None,
               strict=False, batch=1024, speed=None):
        """Events from a position: ``start`` is ``"first"``, ``"last"`` or
        ``"new"``; or ``seq=N``, or ``time=`` (ns or a datetime); ``filter``
        a subject pattern; ``speed`` paces them by their original gaps.
        Iterate it (``for``) or ``async for`` it; it stops at the last event
        stored when it was made."""
        r = self.log.replay(start, seq=seq, time=time, filter=filter, limit=limit,
                            strict=strict, batch=batch, speed=speed)
        return EventReplay(self, r)

    def areplay(self, start="first", *, seq=None, time=None, filter=None, limit=None,
                strict=False, batch=1024, speed=None):
        """``replay`` for ``async for`` (paced replays sleep with asyncio)."""
        r = self.log.areplay(start, seq=seq, time=time, filter=filter, limit=limit,
                             strict=strict, batch=batch, speed=speed)
        return EventReplay(self, r)

    def last(self, filter=None):
        """The newest event of every subject (matching ``filter``), by subject."""
        b = self.log.last_per_subject(filter)
        return {ev.routing_subject: ev for ev in events_from_batch(b, self.name, self.flow.name)}

    def columns(self, start="first", *, seq=None, time=None, stop=None, limit=None,
                filter=None, data=True):
        """Events from a position as numpy arrays (``Log.columns``, docs/log.md):
        ``seq``, ``ts`` (engine time), ``subject_id`` + ``subjects`` (routing
        subjects), ``offsets`` into ``payload``: each event's data (``data=True``,
        read from the stored record in C, no Event made), or the stored
        CloudEvents records (``data=False``, ``Event.decode`` reads one).
        ``time`` is 0 (the CloudEvents ``time`` attribute is in the record).
        Needs numpy."""
        return self.log.columns(start, seq=seq, time=time, stop=stop, limit=limit,
                                filter=filter, events=data)

    def purge(self, subject=None, up_to=None):
        """Remove events (all; those matching the pattern ``subject``; those
        with ``seq <= up_to``); returns how many."""
        return self.log.purge(subject, up_to)

    # -- provenance (docs/provenance.md) ----------------------------------------------

    def chain_head(self):
        """``(seq, link)``: the last seq and the hash chain's link after the
        last frame (32 bytes; ``None`` for a memory stream: no chain)."""
        return self.log.chain_head()

    def checkpoint(self, key=None, *, time=None):
        """The checkpoint of the chain now: ``{"stream", "seq", "head" (hex),
        "time" (ns)}``.  With ``key`` (an Ed25519 private key) it is signed
        (``key_id``, ``sig``: fastflow.audit.sign_checkpoint) and appended as
        one JSON line to ``checkpoints.jsonl`` in the stream's directory.
        Raises FastflowError for a stream without a chain."""
        import time as _time

        seq, link = self.log.chain_head()
        if link is None:
            raise FastflowError("stream {!r} has no hash chain (storage={!r})".format(
                self.name, self.storage))
        cp = {"stream": self.log.chain_name, "seq": seq, "head": link.hex(),
              "time": _time.time_ns() if time is None else int(time)}
        if key is None:
            return cp
        from fastflow.audit import CHECKPOINTS, sign_checkpoint

        cp = sign_checkpoint(cp, key)
        line = (json.dumps(cp, sort_keys=True, separators=(",", ":")) + "\n").encode()
        fd = os.open(os.path.join(self.log.path, CHECKPOINTS),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            os.write(fd, line)          # one write: a line is whole or absent
            if self.flow.fsync == "always":
                os.fsync(fd)
        finally:
            os.close(fd)
        return cp

    # -- consumers --------------------------------------------------------------

    def consumer(self, name, **config):
        """The durable consumer ``name``: created with ``config`` (see
        ``fastflow.Consumer``), or the existing one (its config must match)."""
        from fastflow.consumer import Consumer, ConsumerConfig

        _check_name("consumer", name)
        callback = config.pop("callback", None)
        cfg = ConsumerConfig(**config)
        c = self._consumers.get(name)
        if c is not None:
            if config and cfg != c.config:
                raise ValueError("consumer {!r} of stream {!r} exists with another config: "
                                 "{} (asked: {})".format(name, self.name, c.config, cfg))
            if callback is not None:
                c.set_callback(callback)
            return c
        c = self._consumers[name] = Consumer(self, name, cfg)
        self.flow._save_state()
        if callback is not None:
            c.set_callback(callback)
        return c

    def consumers(self):
        return dict(self._consumers)

    def set_consumer_owner(self, name, owner):
        """Record who created the consumer ``name`` (the server's
        ``"user:alice"``): only they, or a manager of the stream, operate it."""
        self._consumers[name].owner = owner
        self.flow._save_state()

    def delete_consumer(self, name):
        c = self._consumers.pop(name, None)
        if c is None:
            raise KeyError("stream {!r} has no consumer {!r}".format(self.name, name))
        c._close()
        if name in self.log.cursors():
            self.log.delete_cursor(name)
        self.flow._save_state()

    # -- info ------------------------------------------------------------------------

    def info(self):
        lg = self.log
        out = {
            "name": self.name,
            "subjects": list(self.subjects),
            "storage": self.storage,
            "retention": self.retention.to_dict(),
            "events": len(lg),
            "bytes": lg.bytes,
            "first_seq": lg.first_seq,
            "last_seq": lg.last_seq,
            "distinct_subjects": lg.subjects,
            "stored": self._target.appended,
            "rejected": self._target.rejected,
            "duplicates": self._target.duplicates,
            "consumers": {n: c.info() for n, c in self._consumers.items()},
            "log": lg.stats(),
        }
        if self.replicas > 1:
            out["replicas"] = self.replicas
            if self.mirror is not None:
                out["mirror"] = self.mirror.info()
        return out

    def __len__(self):
        return len(self.log)

    def __repr__(self):
        return "<Stream {!r} subjects={} events={} storage={}>".format(
            self.name, list(self.subjects), len(self.log), self.storage)


class Flow(Router):
    """The engine: ``publish`` events, ``subscribe`` to patterns, keep
    streams, replay them and consume them durably.

    ``Flow()`` keeps everything in memory; ``Flow(data_dir)`` makes streams
    file-backed by default and brings streams and durable consumers back
    after a restart.  ``name`` identifies this flow in event lineage;
    ``source`` is the CloudEvents ``source`` of events published without
    one; ``hop_limit`` stops events republished more than that many times
    (0 = no limit); ``cache_size`` is the matcher's result cache.
    """

    def __init__(self, data_dir=None, *, name="fastflow", source=_attrs.DEFAULT_SOURCE,
                 hop_limit=32, cache_size=65536, fsync="interval", error_handler=None,
                 wake_readers=False):
        super().__init__(name, source, hop_limit, cache_size)
        self.data_dir = None if data_dir is None else os.fspath(data_dir)
        self.fsync = fsync
        if wake_readers not in (True, False):
            raise ValueError("wake_readers must be True or False, got {!r}".format(wake_readers))
        # file-backed streams wake readers of other processes blocked on them
        # (docs/latency.md: a fence and a load per append call when on)
        self.wake_readers = wake_readers
        self._streams = {}
        self._replicas = None           # Matcher: pattern -> replicated Stream (None: none)
        # told ("add" | "delete", Stream) when a replicated stream comes or
        # goes (the cluster service: JetStream stream and mirror)
        self.replica_handler = None
        self._subs = {}
        self._advising = False
        self.n_advisories = 0
        self.n_async_errors = 0
        self.n_consumer_conflated = 0   # records durable consumers skipped as superseded
        # where advisories go (None: this flow, on $SYS.advisory.<kind>); a
        # server's accounts send theirs to the system account's flow
        self.advisory_flow = None
        self.advisory_prefix = ADVISORY_PREFIX
        # told (subject, body) of every advisory published in this flow, as it
        # is made: observers that are not subscribers (the operator console:
        # no interest, no count, nothing forwarded to other nodes)
        self.advisory_listeners = []
        self.user_error_handler = error_handler
        self.error_handler = self._callback_error
        self.advisory_handler = self._advisory
        self._trust = None
        if self.data_dir is not None:
            os.makedirs(os.path.join(self.data_dir, "streams"), exist_ok=True)
            self._load_state()

    # -- provenance ----------------------------------------------------------------

    @property
    def trust(self):
        """The trust policy its publishes must pass (a
        ``fastflow.trust.TrustPolicy``; None: none): per subject pattern, the
        keys that may sign and whether a signature is required.  A refused
        publish raises SignatureError (docs/provenance.md)."""
        return self._trust

    @trust.setter
    def trust(self, policy):
        from fastflow.trust.policy import TrustPolicy

        if policy is None:
            TrustPolicy.uninstall(self)
        elif not isinstance(policy, TrustPolicy):
            raise TypeError("trust must be a TrustPolicy or None, not {}".format(
                type(policy).__name__))
        else:
            policy.install(self)
        self._trust = policy

    # -- subscriptions -------------------------------------------------------------

    def subscribe(self, pattern, callback=None, *, queue=None, max_pending=65536,
                  max_pending_bytes=64 << 20, on_full="drop_oldest", conflate=False):
        """Subscribe to ``pattern``.  With a ``callback`` (a function: run
        inline on the publisher's thread; a coroutine function: run by a
        task of the running loop, in order); without one, iterate the
        subscription (``async for``) or ``poll()`` it.  ``queue`` joins a
        queue group (each event goes to one member).  Queued events are
        bounded by ``max_pending`` events and ``max_pending_bytes``;
        ``on_full`` is ``"drop_oldest"``, ``"drop_new"`` or ``"cut"`` (the
        subscription is closed as a slow consumer and an advisory sent).
        ``conflate``: while events are pending, a new event on a subject
        that has one pending replaces it in its place (counted in
        ``conflated``): the subscriber reads the latest event of each
        subject; ``max_pending`` then counts subjects (docs/engine.md,
        "Conflation").  Not with a plain function callback (nothing is
        ever pending for it)."""
        self._check_open()
        is_async = callback is not None and inspect.iscoroutinefunction(callback)
        if is_async:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise FastflowError("a coroutine callback needs a running event loop: "
                                    "subscribe from inside it") from None
        if not isinstance(conflate, bool):
            raise TypeError("conflate must be True or False, got {!r}".format(conflate))
        if conflate and callback is not None and not is_async:
            raise ValueError("conflate needs a queued subscription (no callback, or a coroutine "
                             "callback): a function callback takes every event as it is "
                             "published, nothing is ever pending")
        target = SubTarget(None if is_async else callback, max_pending, max_pending_bytes,
                           on_full, conflate)
        sub = Subscription(self, pattern, target, queue)
        self.add(pattern, target, queue)
        self._subs[id(sub)] = sub
        if is_async:
            sub._task = loop.create_task(self._pump(sub, callback))
        return sub

    async def _pump(self, sub, callback):
        try:
            async for ev in sub:
                try:
                    await callback(ev)
                except Exception as exc:
                    sub.async_errors += 1
                    self.n_async_errors += 1
                    self._callback_error(exc, sub)
        except SlowConsumerError:
            pass

    def _callback_error(self, exc, sub):
        if self.user_error_handler is not None:
            self.user_error_handler(exc, sub)
        else:
            log.error("fastflow: callback of subscription %r raised", getattr(sub, "pattern", sub),
                      exc_info=exc)

    # -- streams ---------------------------------------------------------------------

    def add_stream(self, name, subjects, retention=None, storage=None, replicas=1):
        """Create the stream ``name`` capturing the subject patterns
        ``subjects``, or return the existing one (same config).
        ``storage`` is ``"memory"`` or ``"file"`` (the default with a
        ``data_dir``).  ``replicas`` > 1: a stream replicated in JetStream
        (docs/cluster.md); this flow's publishes do not store into its
        log, the cluster's mirror does, with JetStream's seqs."""
        self._check_open()
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError("replicas must be an int >= 1 (1: a local stream), got {!r}".format(
                replicas))
        _check_name("stream", name)
        if isinstance(subjects, (str, bytes)):
            subjects = [subjects]
        subjects = [s.decode() if isinstance(s, bytes) else s for s in subjects]
        if not subjects:
            raise ValueError("stream {!r} needs at least one subject pattern".format(name))
        retention = Retention() if retention is None else retention
        if not isinstance(retention, Retention):
            raise TypeError("retention must be a Retention, got {}".format(
                type(retention).__name__))
        if storage is None:
            storage = "memory" if self.data_dir is None else "file"
        if storage not in ("memory", "file"):
            raise ValueError("storage must be 'memory' or 'file', got {!r}".format(storage))
        if storage == "file" and self.data_dir is None:
            raise ValueError("stream {!r}: storage='file' needs Flow(data_dir=...)".format(name))
        st = self._streams.get(name)
        if st is not None:
            if (list(st.subjects), st.retention, st.storage, st.replicas) != \
                    (subjects, retention, storage, replicas):
                raise ValueError("stream {!r} exists with another config (subjects={}, {}, "
                                 "storage={!r}{})".format(
                                     name, list(st.subjects), st.retention, st.storage,
                                     ", replicas={}".format(st.replicas)
                                     if st.replicas != replicas else ""))
            return st
        st = self._open_stream(name, subjects, retention, storage, replicas)
        self._save_state()
        return st

    @staticmethod
    def open_reader(data_dir, stream, start="first", **kw):
        """A ``StreamReader``: the events of the file-backed stream
        ``stream`` of the flow at ``data_dir`` as that flow (in this process
        or another) stores them (fastflow.tail.open_stream_reader)."""
        from fastflow.tail import open_stream_reader

        return open_stream_reader(data_dir, stream, start, **kw)

    def _open_stream(self, name, subjects, retention, storage, replicas=1):
        kw = dict(retention.to_dict())
        kw["dedup_window"] = kw.pop("duplicate_window")
        if replicas > 1:
            # a read cache of JetStream's stream: it never refuses what
            # JetStream stored (discard='new' and duplicates are JetStream's)
            kw["discard"] = "old"
            kw["dedup_window"] = 0
        if storage == "file":
            kw["path"] = os.path.join(self.data_dir, "streams", name)
            kw["fsync"] = self.fsync
            kw["notify"] = self.wake_readers
        lg = Log(**kw)
        st = Stream(self, name, subjects, retention, storage, lg, replicas)
        st._target.dedup = retention.duplicate_window > 0 and replicas == 1
        added = []
        try:
            if replicas == 1:
                for pattern in subjects:
                    st._handles.append(self.add(pattern, st._target))
            else:
                # not the router's: a publish goes to JetStream (the cluster
                # link forwards it), the mirror brings it back into the log
                if self._replicas is None:
                    self._replicas = Matcher(1024)
                for pattern in subjects:
                    added.append(self._replicas.add(pattern, st))
                st._handles = added
        except Exception:
            if replicas == 1:
                for h in st._handles:
                    self.remove(h)
            else:
                for h in added:
                    self._replicas.remove(h)
            lg.close()
            raise
        self._streams[name] = st
        if replicas > 1 and self.replica_handler is not None:
            self.replica_handler("add", st)
        return st

    def replicated_stream(self, subject):
        """The replicated stream whose patterns capture ``subject`` (the
        first added), or None: where a publish-with-ack on ``subject`` waits
        for JetStream's answer."""
        if self._replicas is None:
            return None
        found = self._replicas.match(subject)
        return found[0] if found else None

    def stream(self, name):
        try:
            return self._streams[name]
        except KeyError:
            raise KeyError("no stream named {!r} (streams: {})".format(
                name, sorted(self._streams))) from None

    def streams(self):
        return dict(self._streams)

    def delete_stream(self, name):
        """Remove the stream, its consumers and (file storage) its files."""
        st = self.stream(name)
        for c in list(st._consumers.values()):
            c._close()
        if st.replicas > 1:
            for h in st._handles:
                self._replicas.remove(h)
            if self.replica_handler is not None:
                self.replica_handler("delete", st)
        else:
            for h in st._handles:
                self.remove(h)
        st.log.close()
        del self._streams[name]
        if st.storage == "file":
            shutil.rmtree(st.log.path, ignore_errors=True)
        self._save_state()

    # -- advisories ------------------------------------------------------------------

    def _advisory(self, kind, info):
        if kind == "slow_consumer":
            sub = info
            self._subs.pop(id(sub), None)   # the router unregistered it
            body = {"subscription": sub.pattern, "queue": sub.queue,
                    "max_pending": sub._t.max_pending,
                    "max_pending_bytes": sub._t.max_pending_bytes, "dropped": sub._t.dropped}
            if sub.pattern.startswith("$SYS"):
                return                  # never advise about advisory listeners
        elif kind == "loop":
            subject, ev, reason = info
            body = {"subject": subject, "id": ev.id, "source": ev.source, "hops": ev.hops,
                    "reason": reason}
        else:
            body = info
        self.advise(kind, body)

    def advise(self, kind, body):
        """Publish an advisory on ``$SYS.advisory.<kind>`` (JSON data), in
        this flow or in ``advisory_flow`` (on ``advisory_prefix + kind``)."""
        if self._advising:
            return
        self._advising = True
        try:
            self.n_advisories += 1
            to = self.advisory_flow if self.advisory_flow is not None else self
            subject = self.advisory_prefix + kind
            for listener in list(to.advisory_listeners):
                try:
                    listener(subject, body)
                except Exception:
                    log.exception("advisory listener %r failed", listener)
            to.publish(subject, json.dumps(body, default=str).encode(),
                       type="io.fastflow.advisory." + kind, datacontenttype="application/json")
        finally:
            self._advising = False

    # -- state -----------------------------------------------------------------------------

    def stats(self):
        """One snapshot of every counter: the flow's, per stream, per
        subscription, per consumer, and the matcher's."""
        out = dict(super().stats())
        out["callback_errors"] += self.n_async_errors
        out["conflated"] += self.n_consumer_conflated
        out["advisories"] = self.n_advisories
        out["streams"] = {n: {**(s.log.stats() if not s.log.closed else {}),
                              "stored": s._target.appended, "rejected": s._target.rejected,
                              "events": len(s.log) if not s.log.closed else 0,
                              "bytes": s.log.bytes if not s.log.closed else 0,
                              "last_seq": s.log.last_seq if not s.log.closed else 0}
                          for n, s in self._streams.items()}
        out["subscriptions"] = [s.stats() for s in self._subs.values()]
        out["consumers"] = {"{}/{}".format(n, cn): c.info()
                            for n, s in self._streams.items()
                            for cn, c in s._consumers.items()}
        out["matcher"] = self.matcher.stats()
        return out

    def _state_path(self):
        return os.path.join(self.data_dir, _STATE)

    def _save_state(self):
        if self.data_dir is None:
            return
        state = {"version": 1, "streams": {}}
        for n, s in self._streams.items():
            if s.storage != "file":
                continue
            state["streams"][n] = {
                "subjects": list(s.subjects), "retention": s.retention.to_dict(),
                "consumers": {cn: c.config.to_dict() for cn, c in s._consumers.items()}}
            if s.replicas > 1:
                state["streams"][n]["replicas"] = s.replicas
            owners = {cn: c.owner for cn, c in s._consumers.items() if c.owner is not None}
            if owners:
                state["streams"][n]["owners"] = owners
        path = self._state_path()
        tmp = path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:          # a full disk: the old state stays, the caller hears
            if os.path.exists(tmp):
                os.unlink(tmp)
            if exc.errno != errno.ENOSPC:
                raise
            raise StorageFullError("storage full: cannot write {}: {}".format(
                path, exc.strerror), path, 0) from exc
        os.replace(tmp, path)

    def _load_state(self):
        from fastflow.consumer import Consumer, ConsumerConfig

        path = self._state_path()
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                state = json.load(f)
            streams = state["streams"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FastflowError("cannot read {}: {}".format(path, exc)) from None
        for n, cfg in streams.items():
            st = self._open_stream(n, cfg["subjects"], Retention.from_dict(cfg["retention"]),
                                   "file", cfg.get("replicas", 1))
            owners = cfg.get("owners", {})
            for cn, ccfg in cfg.get("consumers", {}).items():
                c = st._consumers[cn] = Consumer(st, cn, ConsumerConfig.from_dict(ccfg))
                c.owner = owners.get(cn)

    # -- lifecycle --------------------------------------------------------------------------

    def _check_open(self):
        if self.closed:
            raise FastflowError("flow {!r} is closed".format(self.name))

    def flush(self):
        """Make every file-backed stream durable now (fsync)."""
        for s in self._streams.values():
            for c in s._consumers.values():
                c._move_floor(force=True)
            s.log.flush()

    def close(self):
        """Flush and close every stream; subscriptions end.  Idempotent."""
        if self.closed:
            return
        self.closed = True
        for sub in list(self._subs.values()):
            sub.unsubscribe()
        for s in self._streams.values():
            for c in s._consumers.values():
                c._close()
            s.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<Flow {!r} streams={} subscriptions={}{}>".format(
            self.name, len(self._streams), len(self._subs),
            " data_dir={!r}".format(self.data_dir) if self.data_dir else "")
