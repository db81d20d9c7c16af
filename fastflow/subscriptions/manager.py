"""The subscription manager: Subscriptions-API subscriptions over the
engine's streams, delivered to webhooks (HTTP), NATS subjects or MQTT topics.

How events reach a subscription
-------------------------------
Every subscription reads one stream, from its own durable position (its
*floor*: every event of the stream at or below it is done, delivered or
filtered out).  Reading is shared: the subscriptions of a stream that
are at the same position form one *reader*, which reads each batch of
the stream once and asks its ``FilterIndex`` which subscriptions may take
each event; only those evaluate their filter.  The index delivers to
this engine's subjects itself (``SubscriptionIndex.route_batch``), with
no Event made, while a subscription's outbox is empty.  A subscription whose
outbox is full (its sink is slower than the stream) leaves the shared
reader and reads on its own from where it stopped; when it catches up it
joins the shared reader again.  So 10,000 subscriptions that keep up
cost one read and one index lookup per event, and a slow sink costs only
itself.

Durability: each subscription is saved in
``<data_dir>/subscriptions/sub-<id>.json`` and the floors in
``floors.json`` beside them (written atomically, the floors at most every
``save_interval`` seconds while delivery moves and at stop).  After a restart each
subscription resumes after its floor: events delivered after the last
save are delivered again (at least once; the receiver deduplicates on
the CloudEvents ``source`` + ``id``).  An event the stream's retention
removed before a subscription took it is counted in ``lost``.
"""

import asyncio
import importlib.util
import json
import logging
import os
import secrets
import threading
import time
from collections import deque

from fastflow._files import atomic_write as _atomic_write
from fastflow._files import fsync_dir as _fsync_dir
from fastflow._impl import Matcher, events_from_batch, sink_record
from fastflow.subscriptions.filters import FilterError, FilterIndex
from fastflow.subscriptions.model import parse

__all__ = ("SubscriptionLimit", "SubscriptionManager", "SubscriptionStoreError")

log = logging.getLogger("fastflow.subscriptions")

STATE_DIR = "subscriptions"     # <data_dir>/subscriptions/: sub-<id>.json each, floors.json
FLOORS_FILE = "floors.json"
_READ = 1024                    # events per read of a stream
_PUMP_BATCHES = 16              # reads per loop iteration, at most (then yield)
_MAX_HELD = 4096                # an outbox's limit: past it, the subscription reads alone
_RETRY_MIN = 0.05               # seconds before an engine-side delivery is tried again
_RETRY_MAX = 5.0
_REFUSED_MIN = 1.0              # seconds before a refused webhook handshake is asked again
_REFUSED_MAX = 300.0


def outgoing(sub, ev):
    """The record ``sub`` publishes for ``ev`` on this engine: the event as
    it was stored (its type written out when it was the routing subject),
    with one hop more (``ffhops``) when a stream captures the target
    subject: a subscription that republishes on this engine is a
    processor, and the engine's loop breaker stops a chain of them that
    feeds itself (``Flow(hop_limit=...)``).  The same record the index
    makes when it delivers itself (``SubscriptionIndex.set_sink``)."""
    return sink_record(ev.routing_subject, ev.encode(), sub.loops)


class SubscriptionLimit(Exception):
    """A limit refused a new subscription (the API answers 403)."""


class SubscriptionStoreError(Exception):
    """A subscription could not be saved in the data directory (503)."""


class _Reader:
    """Subscriptions of one stream at one position, read together."""

    __slots__ = ("stream", "pos", "index", "subs", "shared")

    def __init__(self, stream, pos, shared):
        self.stream = stream
        self.pos = pos                  # the next seq to read
        self.index = FilterIndex()
        self.subs = {}                  # id -> _Sub
        self.shared = shared            # the stream's shared reader (else a lone one)

    def add(self, sub):
        self.subs[sub.id] = sub
        self.index.add(sub, sub.spec.keys)
        sub.reader = self
        self.sync_sink(sub)

    def remove(self, sub):
        if self.subs.pop(sub.id, None) is not None:
            n = self.index.sink_delivered(sub)
            sub._matched += n
            sub._delivered += n
        self.index.remove(sub)
        sub.reader = None

    def sync_sink(self, sub):
        """The index delivers ``sub``'s events itself (no Event is made)
        when its filter is the index's lookup, its target this engine's
        subject and nothing waits in its outbox (order is kept)."""
        if sub.inline is not None and sub.decided and not sub.outbox:
            self.index.set_sink(sub, sub.inline, sub.loops)
        else:
            self.index.set_sink(sub, None)


class _Sub:
    """One subscription's definition and delivery state."""

    def __init__(self, sid, owner, spec, body, created):
        self.id = sid
        self.owner = owner
        self.spec = spec
        self.body = body                # what was accepted (sinkcredential included)
        self.grant_token = secrets.token_urlsafe(24)    # the handshake callback's secret
        self.created = created
        self.status = "active"          # "active", "retired", "error"
        self.reason = None
        self.reader = None
        self.outbox = deque()           # matched events, not yet done (oldest first)
        self.floor = 0
        self.wake = asyncio.Event()
        self.task = None
        self.sink = None
        self.inline = None              # this engine's subject: delivered as it is read
        self.decided = False            # the index's lookup is the whole filter
        self.loops = False              # a stream captures its target subject: add a hop
        self._matched = self._delivered = self.failed = self.dead = self.lost = 0
        self.retried = 0
        self.last_error = None
        self.last_delivery = None

    def info(self):
        if self.spec is None:
            return {"id": self.id, "owner": self.owner, "status": self.status,
                    "reason": self.reason, "created": self.created, "floor": self.floor}
        sink = self.sink.info() if self.sink is not None and hasattr(self.sink, "info") else {}
        rd = self.reader
        last = rd.stream.log.last_seq if rd is not None else None
        return {"id": self.id, "owner": self.owner, "stream": self.spec.stream,
                "protocol": self.spec.resource["protocol"], "sink": self.spec.resource["sink"],
                "status": self.status, "reason": self.reason, "created": self.created,
                "floor": self.current_floor(), "lag": None if last is None else
                max(0, last - self.current_floor()), "pending": len(self.outbox),
                "shared_reader": bool(rd is not None and rd.shared),
                "matched": self.matched, "delivered": self.delivered,
                "failed": self.failed + sink.get("failed", 0),
                "retried": self.retried + sink.get("retried", 0), "dead": self.dead,
                "lost": self.lost, "last_error": self.last_error or sink.get("last_error"),
                "last_delivery": self.last_delivery, "sink_state": sink or None}

    @property
    def matched(self):
        rd = self.reader
        return self._matched + (rd.index.sink_delivered(self) if rd is not None else 0)

    @property
    def delivered(self):
        rd = self.reader
        return self._delivered + (rd.index.sink_delivered(self) if rd is not None else 0)

    def current_floor(self):
        if self.outbox:
            return self.outbox[0].seq - 1
        if self.reader is not None:
            return self.reader.pos - 1
        return self.floor


class SubscriptionManager:
    """The subscriptions of one ``Flow``.  ``data_dir``: where they are
    kept (None: in memory only).  ``max_subscriptions`` /
    ``max_per_owner``: limits (0: none).  ``sink_allowed(urlsplit) ->
    None or why not`` vets webhook sinks.  ``origin``: this server's host
    name in the webhook handshake (None: the machine's)."""

    def __init__(self, flow, data_dir=None, *, max_subscriptions=100000, max_per_owner=10000,
                 sink_allowed=None, origin=None, save_interval=0.5, webhook_defaults=None,
                 callback_base=None, mqtt=None):
        self.flow = flow
        self.mqtt = mqtt                # the MQTT door's MqttSessions (retained messages), or None
        self.data_dir = data_dir
        self.max_subscriptions = max_subscriptions
        self.max_per_owner = max_per_owner
        self.sink_allowed = sink_allowed
        self.origin = origin
        self.save_interval = save_interval
        self.webhook_defaults = webhook_defaults or {}
        # the public URL of the HTTP door, for the handshake's callback variant (None: not offered)
        self.callback_base = callback_base.rstrip("/") if callback_base else None
        self.subs = {}                  # id -> _Sub
        self.readers = {}               # stream name -> the shared _Reader
        self.lone = []                  # _Readers of one subscription each
        self._per_owner = {}
        self._listening = set()         # streams whose appends we hear
        self._pump_scheduled = False
        self._save_timer = None
        self._tick_timer = None
        self._dirty = False
        self._started = False
        self._closed = False
        self._nats = {}                 # nats URL -> [client, users]
        self._stream_names = None       # the streams _mark_loops saw
        self.loop = None
        self._thread = None

    # -- life ------------------------------------------------------------------------------

    async def start(self):
        """Load the saved subscriptions and start delivering."""
        self.loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._started = True
        for rec in self._load():
            try:
                self._restore(rec)
            except Exception as exc:    # a stream deleted meanwhile, a setting now refused
                log.error("subscription %s could not be restored: %s", rec.get("id"), exc)
                sub = _Sub(rec["id"], rec.get("owner"), None, rec.get("body"),
                           rec.get("created"))
                sub.status, sub.reason = "error", str(exc)
                sub.floor = rec.get("floor", 0)
                self.subs[sub.id] = sub
        self._schedule_pump()
        self._tick_timer = self.loop.call_later(1.0, self._tick)

    def _tick(self):
        """Once a second: a stream deleted meanwhile stops its subscriptions."""
        self._tick_timer = None
        if self._closed:
            return
        if tuple(self.flow.streams()) != self._stream_names:
            self._schedule_pump()
        self._tick_timer = self.loop.call_later(1.0, self._tick)

    async def stop(self):
        """Stop delivering and save the floors."""
        if self._closed:
            return
        self._closed = True
        tasks = [s.task for s in self.subs.values() if s.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for s in self.subs.values():
            if s.sink is not None and hasattr(s.sink, "close"):
                try:
                    await s.sink.close()
                except Exception:
                    pass
        for nc, _ in self._nats.values():
            try:
                await nc.close()
            except Exception:
                pass
        for timer in (self._save_timer, self._tick_timer):
            if timer is not None:
                timer.cancel()
        for name in list(self._listening):
            st = self.flow.streams().get(name)
            if st is not None and self._on_append in st._target.listeners:
                st._target.listeners.remove(self._on_append)
        self._dirty = True
        try:
            self._save()
        except OSError as exc:
            log.error("the subscriptions' floors could not be saved at stop: %s (delivery "
                      "resumes at the floors saved before)", exc)

    # -- the API's operations ---------------------------------------------------------------

    def visible(self, principal_name, admin):
        """The subscriptions ``principal_name`` may see (``admin``: all)."""
        return [s for s in self.subs.values() if admin or s.owner == principal_name]

    def get(self, sid, principal_name, admin):
        s = self.subs.get(sid)
        if s is None or not (admin or s.owner == principal_name):
            return None
        return s

    def validate(self, body):
        streams = {n: st.subjects for n, st in self.flow.streams().items()}
        spec = parse(body, streams, self.sink_allowed)
        if spec.resource["protocol"] == "NATS" and spec.resource["sink"] != "fastflow:" \
                and importlib.util.find_spec("nats") is None:
            raise FilterError("sink", "delivery to a NATS server needs nats-py on this server "
                              "(pip install 'fastflow[nats]')")
        if spec.resource["protocol"] in ("NATS", "MQTT3", "MQTT5") \
                and spec.resource["sink"] == "fastflow:":
            subject = spec.settings["subject"]
            m = Matcher(cache_size=0)
            for p in streams[spec.stream]:
                m.add(p, p)
            if m.match(subject):
                field = "protocolsettings.subject"
                if spec.resource["protocol"] != "NATS":
                    field = "protocolsettings.topicname"
                    subject = spec.settings["topic"]
                raise FilterError(field, "{!r} is captured by stream {!r}, "
                                  "which this subscription reads: every delivery would come "
                                  "back to it".format(subject, spec.stream))
        return spec

    def create(self, body, owner, spec=None):
        """A new subscription from ``body`` (validated: ``spec``) for
        ``owner``; returns it."""
        if spec is None:
            spec = self.validate(body)
        if self.max_subscriptions and len(self.subs) >= self.max_subscriptions:
            raise SubscriptionLimit("this server holds its limit of {} subscriptions".format(
                self.max_subscriptions))
        n = self._per_owner.get(owner, 0)
        if self.max_per_owner and n >= self.max_per_owner:
            raise SubscriptionLimit("{} holds the limit of {} subscriptions per user".format(
                owner or "this user", self.max_per_owner))
        sid = "sub-" + secrets.token_hex(8)
        while sid in self.subs:
            sid = "sub-" + secrets.token_hex(8)
        sub = _Sub(sid, owner, spec, body, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        st = self.flow.stream(spec.stream)
        lg = st.log
        start = spec.start
        if start == "new":
            pos = lg.last_seq + 1
        elif start == "first":
            pos = lg.first_seq
        else:
            pos = max(start, lg.first_seq)
        self._attach(sub, pos)
        try:
            self._write(sub)
        except OSError as exc:          # (a full disk): the subscription is not made
            self._detach(sub)
            del self.subs[sub.id]
            self._per_owner[owner] -= 1
            raise SubscriptionStoreError("the subscription could not be saved: {}".format(
                exc.strerror or exc)) from None
        return sub

    def update(self, sub, body, spec=None):
        """Replace ``sub``'s definition (its id, owner and position stay)."""
        if spec is None:
            spec = self.validate(body)
        pos = sub.current_floor() + 1
        if spec.stream != (sub.spec.stream if sub.spec is not None else None):
            lg = self.flow.stream(spec.stream).log
            pos = {"new": lg.last_seq + 1, "first": lg.first_seq}.get(spec.start, spec.start) \
                if not isinstance(spec.start, int) else max(spec.start, lg.first_seq)
        self._detach(sub)
        sub.outbox.clear()
        sub.spec, sub.body = spec, body
        sub.status, sub.reason = "active", None
        self._per_owner[sub.owner] = self._per_owner.get(sub.owner, 0) - 1
        del self.subs[sub.id]
        self._attach(sub, pos)
        try:
            self._write(sub)
        except OSError as exc:
            # (running with the new definition; saved again at the next change or stop)
            raise SubscriptionStoreError("the new definition could not be saved: {}".format(
                exc.strerror or exc)) from None
        return sub

    def delete(self, sub):
        self._detach(sub)
        if sub.id in self.subs:
            del self.subs[sub.id]
            if sub.spec is not None or sub.owner in self._per_owner:
                self._per_owner[sub.owner] = max(0, self._per_owner.get(sub.owner, 0) - 1)
        self._unlink(sub)

    def reading(self):
        """True while a reader has events of its stream left to read."""
        return any(rd.subs and rd.pos <= rd.stream.log.last_seq
                   for rd in list(self.readers.values()) + self.lone)

    def stats(self):
        return [s.info() for s in self.subs.values()]

    # -- attaching to readers ---------------------------------------------------------------

    def _attach(self, sub, pos):
        self.subs[sub.id] = sub
        self._per_owner[sub.owner] = self._per_owner.get(sub.owner, 0) + 1
        st = self.flow.stream(sub.spec.stream)
        self._listen(st)
        shared = self.readers.get(st.name)
        if shared is None:
            shared = self.readers[st.name] = _Reader(st, max(pos, st.log.first_seq), True)
        sub.floor = pos - 1
        sub.sink = self._make_sink(sub)
        res = sub.spec.resource
        sub.decided = getattr(sub.spec.predicate, "index_decides", False)
        sub.inline = sub.spec.settings["subject"] if res["protocol"] == "NATS" and \
            res["sink"] == "fastflow:" else None
        if pos == shared.pos:
            shared.add(sub)
        else:
            rd = _Reader(st, pos, False)
            rd.add(sub)
            self.lone.append(rd)
        self._stream_names = None       # (marked again before the next read)
        if sub.inline is None:
            self._start_task(sub)
        # (a subscription to this engine's subject gets its task when
        # something waits in its outbox: 10,000 of them are 10,000 idle tasks)
        self._schedule_pump()

    def _start_task(self, sub):
        if sub.task is None and self.loop is not None and not self._closed:
            sub.task = self.loop.create_task(self._deliver_loop(sub))

    def _wake(self, sub):
        self._start_task(sub)
        sub.wake.set()

    def _detach(self, sub):
        rd = sub.reader
        if rd is not None:
            sub.floor = sub.current_floor()
            rd.remove(sub)
            if not rd.shared and not rd.subs and rd in self.lone:
                self.lone.remove(rd)
        if sub.task is not None:
            sub.task.cancel()
            sub.task = None
        if sub.sink is not None and hasattr(sub.sink, "close"):
            self.loop.create_task(sub.sink.close())
        sub.sink = None

    def _listen(self, st):
        if st.name not in self._listening:
            st._target.listeners.append(self._on_append)
            self._listening.add(st.name)

    def _orphans(self, streams):
        """Subscriptions whose stream was deleted stop, status "error"."""
        for rd in list(self.readers.values()) + list(self.lone):
            if streams.get(rd.stream.name) is not rd.stream:
                for sub in list(rd.subs.values()):
                    self._broken(sub, "stream {!r} was deleted".format(rd.stream.name))
                if rd.shared:
                    self.readers.pop(rd.stream.name, None)
                self._listening.discard(rd.stream.name)

    def _broken(self, sub, reason):
        self._detach(sub)
        sub.outbox.clear()
        sub.status, sub.reason = "error", reason
        self.flow.advise("subscription_error", {"subscription": sub.id, "reason": reason})

    def _mark_loops(self):
        """Which inline subscriptions deliver into a stream (and so may feed
        a chain that comes back): their records get one hop more."""
        m = Matcher(cache_size=0)
        for st in self.flow.streams().values():
            for p in st.subjects:
                m.add(p, st.name)
        for s in self.subs.values():
            target = s.inline
            if target is None and s.spec.resource["protocol"] in ("MQTT3", "MQTT5"):
                target = s.spec.settings["subject"]     # (through the MQTT door)
            loops = target is not None and bool(m.match(target))
            if loops != s.loops:
                s.loops = loops
                if s.reader is not None:
                    s.reader.sync_sink(s)

    def _on_append(self, seq):
        if self._pump_scheduled or self._closed or self.loop is None:
            return
        if threading.get_ident() == self._thread:
            self._schedule_pump()
        else:                           # a publish from another thread
            self.loop.call_soon_threadsafe(self._schedule_pump)

    # -- reading the streams -----------------------------------------------------------------

    def _schedule_pump(self):
        if not self._pump_scheduled and self.loop is not None and not self._closed:
            self._pump_scheduled = True
            self.loop.call_soon(self._pump)

    def _pump(self):
        self._pump_scheduled = False
        if self._closed:
            return
        streams = self.flow.streams()
        names = tuple(streams)
        if names != self._stream_names:
            self._stream_names = names
            self._mark_loops()
            self._orphans(streams)
        more = False
        for rd in list(self.readers.values()) + list(self.lone):
            if rd.subs:
                try:
                    more |= self._read(rd, _PUMP_BATCHES)
                except Exception as exc:    # (a bug or a closed log): these stop, others go on
                    log.exception("subscriptions of stream %s: reading failed", rd.stream.name)
                    for sub in list(rd.subs.values()):
                        self._broken(sub, "reading stream {!r} failed: {}".format(
                            rd.stream.name, exc))
            elif rd.shared:             # nobody reads with it: it waits at the end
                rd.pos = rd.stream.log.last_seq + 1
        self._merge()
        if more:
            self._schedule_pump()

    def _read(self, rd, rounds):
        """Up to ``rounds`` reads of ``rd``'s stream; True if there is more."""
        lg = rd.stream.log
        flow = self.flow
        publish = flow.publish_record
        flow_name = flow.name
        sname = rd.stream.name
        subs = rd.subs
        for _ in range(rounds):
            if rd.pos > lg.last_seq or not subs:
                return False
            if not rd.shared:
                (sub,) = subs.values()
                room = _MAX_HELD - len(sub.outbox)
                if room <= 0:
                    return False        # its delivery task pumps again when there is room
            lo = lg.first_seq
            if rd.pos < lo:             # retention removed what these had not read
                for s in subs.values():
                    s.lost += lo - rd.pos
                rd.pos = lo
            b = lg.read(rd.pos, limit=_READ)
            index = rd.index
            # the index delivers to its sinks itself; the rest come back
            rows, cands, failed = index.route_batch(b, flow)
            woken = set()
            stop_at = None
            values = index.values
            c_failed = ()
            if failed:                  # (a full stream): these wait in their outboxes
                c_failed = set()
                for h, msg in failed:
                    s = values[h]
                    if s is not None:
                        s.failed += 1
                        s.last_error = msg
                        c_failed.add(s)
            if rows:
                # Events only for the events of the batch that have candidates
                evs = events_from_batch(b, sname, flow_name, rows)
            for i, h in zip(rows, cands):
                s = values[h]           # (None: it left this reader in this batch)
                if s is None:
                    continue
                ev = evs[i]
                if not (s.decided or s.spec.predicate(ev)):
                    continue
                if s.inline is not None and not s.outbox and s not in c_failed:
                    # this engine's subject: delivered here, no task wakes up
                    s._matched += 1
                    try:
                        publish(s.inline, outgoing(s, ev))
                        s._delivered += 1
                        continue
                    except Exception as exc:    # a full stream: the task tries again
                        s.failed += 1
                        s.last_error = str(exc)
                        s.outbox.append(ev)
                        woken.add(s)
                        continue
                if len(s.outbox) >= _MAX_HELD:
                    if rd.shared:
                        self._split(rd, s, ev.seq)
                        continue
                    stop_at = ev.seq
                    break
                s.outbox.append(ev)
                s._matched += 1
                woken.add(s)
            rd.pos = stop_at if stop_at is not None else b.next_seq
            for s in woken:
                self._wake(s)
            if stop_at is not None:
                return False
        return rd.pos <= lg.last_seq

    def _split(self, shared, sub, seq):
        """``sub`` cannot take event ``seq`` now: it reads alone from there."""
        shared.remove(sub)
        rd = _Reader(shared.stream, seq, False)
        rd.add(sub)
        self.lone.append(rd)

    def _merge(self):
        """Lone readers that caught up with their stream's shared one join it."""
        if not self.lone:
            return
        keep = []
        for rd in self.lone:
            shared = self.readers.get(rd.stream.name)
            if shared is not None and not shared.subs and rd.subs:
                shared.pos = rd.pos     # the shared reader is idle: it takes this one's place
            if shared is not None and rd.pos == shared.pos and rd.subs:
                for s in list(rd.subs.values()):
                    if len(s.outbox) < _MAX_HELD // 2:
                        rd.remove(s)
                        shared.add(s)
                if rd.subs:
                    keep.append(rd)
            elif rd.subs:
                keep.append(rd)
        self.lone = keep

    # -- delivering ---------------------------------------------------------------------------

    def _make_sink(self, sub):
        spec = sub.spec
        if spec.resource["protocol"] == "HTTP":
            from fastflow.subscriptions.webhook import WebhookSettings, WebhookSink

            ps = spec.settings
            settings = dict(self.webhook_defaults)
            settings.update(mode=ps["mode"], max_batch=ps["maxbatch"], timeout=ps["timeout"],
                            max_in_flight=ps["maxinflight"], max_retries=ps["maxretries"],
                            handshake=ps["handshake"])
            callback = None
            if self.callback_base and ps["handshake"]:
                callback = "{}/subscriptions/{}/grant?token={}".format(
                    self.callback_base, sub.id, sub.grant_token)
            return WebhookSink(spec.resource["sink"], WebhookSettings(**settings),
                               credential=spec.credential, origin=self.origin,
                               headers=ps["headers"], method=ps["method"],
                               callback_url=callback, advise=self._sink_advice(sub))
        return None

    def _sink_advice(self, sub):
        def advise(kind, info):
            self.flow.advise("subscription_sink_" + kind, {
                "subscription": sub.id, "sink": sub.spec.resource["sink"],
                "reason": info.get("last_error") if isinstance(info, dict) else None})
        return advise

    def grant(self, sid, token, rate=None):
        """The callback variant of the webhook handshake: the sink of
        subscription ``sid`` calls its callback URL.  True if ``token`` is
        that subscription's."""
        import hmac

        sub = self.subs.get(sid)
        if sub is None or not isinstance(token, str) or not hmac.compare_digest(
                token.encode(), sub.grant_token.encode()):
            return False
        if sub.sink is not None:
            sub.sink.granted(rate)
        return True

    async def _deliver_loop(self, sub):
        delay = _RETRY_MIN
        refused_delay = _REFUSED_MIN
        while True:
            if not sub.outbox:
                sub.wake.clear()
                self._schedule_pump()
                await sub.wake.wait()
                continue
            n = sub.spec.settings.get("maxbatch", 256) * sub.spec.settings.get(
                "maxinflight", 1) if sub.sink is not None else 1024
            batch = [sub.outbox[i] for i in range(min(n, len(sub.outbox)))]
            try:
                outcomes = await self._send(sub, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:    # the engine refused (a full stream): try again later
                sub.failed += 1
                sub.retried += 1
                sub.last_error = str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            if sub.sink is not None and getattr(sub.sink, "handshake", None) == "refused":
                # the sink did not grant delivery: nothing is given up, the
                # handshake is asked again later (status "refused" meanwhile)
                sub.status = "refused"
                sub.reason = sub.sink.last_error
                self.flow.advise("subscription_refused", {"subscription": sub.id,
                                                          "reason": sub.reason})
                await asyncio.sleep(refused_delay)
                refused_delay = min(refused_delay * 2, _REFUSED_MAX)
                continue
            if sub.status == "refused":
                sub.status, sub.reason = "active", None
            refused_delay = _REFUSED_MIN
            delay = _RETRY_MIN
            retired = None
            for ev, out in zip(batch, outcomes):
                if out == "delivered":
                    sub._delivered += 1
                    if retired is None:
                        sub.outbox.popleft()
                    continue
                if out[0] == "retired":
                    # the sink is gone (410): the subscription stops at this event, which
                    # stays undelivered (a PUT that revives it starts here)
                    retired = retired or out[1]
                    continue
                if retired is None:
                    sub.outbox.popleft()
                    sub.dead += 1
                    sub.last_error = out[1]
                    self._dead_letter(sub, ev, out[1])
            sub.last_delivery = time.time()
            if retired is not None:
                self._retire(sub, retired)
                return
            if not sub.outbox and sub.reader is not None and sub.inline is not None:
                sub.reader.sync_sink(sub)   # the index delivers again
            self._dirty_soon()

    async def _send(self, sub, batch):
        spec = sub.spec
        if sub.sink is not None:
            return await sub.sink.deliver(batch)
        subject = spec.settings["subject"]
        sink = spec.resource["sink"]
        protocol = spec.resource["protocol"]
        if protocol in ("MQTT3", "MQTT5"):
            # a message on the topic, through this server's MQTT door
            from fastflow.server.mqtt import subscription_message

            settings = spec.settings
            publish = self.flow.publish_record
            for ev in batch:
                rec, payload, props = subscription_message(ev, protocol, settings, sub.loops)
                if settings["retain"] and self.mqtt is not None:
                    self.mqtt.retain(subject, settings["topic"], payload, settings["qos"], props)
                publish(subject, rec)
            return ["delivered"] * len(batch)
        if sink == "fastflow:":
            publish = self.flow.publish_record
            for ev in batch:
                publish(subject, outgoing(sub, ev))
            return ["delivered"] * len(batch)
        nc = await self._nats_client(sink)
        from fastflow.event import to_http

        for ev in batch:
            headers, body = to_http(ev)
            await nc.publish(subject, body, headers=dict(headers))
        await nc.flush()
        return ["delivered"] * len(batch)

    async def _nats_client(self, url):
        got = self._nats.get(url)
        if got is not None and got[0].is_connected:
            return got[0]
        import nats

        nc = await nats.connect(url, name="fastflow-subscriptions", allow_reconnect=True,
                                max_reconnect_attempts=-1, connect_timeout=5)
        self._nats[url] = [nc, 1]
        return nc

    def _dead_letter(self, sub, ev, reason):
        subject = sub.spec.deadletter or "$DLQ.subscriptions.{}".format(sub.id)
        try:
            attrs = ev.attributes()
            attrs["ffdeadreason"] = reason[:1000]
            self.flow.publish(type(ev)(subject, ev.data, **attrs))
        except Exception as exc:
            log.warning("subscription %s: dead letter of %s not published: %s", sub.id, ev.id,
                        exc)
        self.flow.advise("subscription_dead_letter", {
            "subscription": sub.id, "stream": sub.spec.stream, "seq": ev.seq, "id": ev.id,
            "reason": reason[:1000], "dead_letter_subject": subject})

    def _retire(self, sub, reason):
        sub.status, sub.reason = "retired", reason
        rd = sub.reader
        if rd is not None:
            sub.floor = sub.current_floor()
            rd.remove(sub)
            if not rd.shared and rd in self.lone:
                self.lone.remove(rd)
        sub.outbox.clear()
        sub.task = None
        self.flow.advise("subscription_retired", {"subscription": sub.id, "reason": reason})
        try:
            self._write(sub)
        except OSError as exc:
            log.error("subscription %s: its retirement could not be saved: %s", sub.id, exc)

    # -- persistence ---------------------------------------------------------------------------

    def _dir(self):
        return os.path.join(self.data_dir, STATE_DIR) if self.data_dir else None

    def _load(self):
        """The saved subscriptions (dicts), each with its last saved floor."""
        d = self._dir()
        if d is None or not os.path.isdir(d):
            return []
        floors = {}
        fp = os.path.join(d, FLOORS_FILE)
        if os.path.exists(fp):
            try:
                with open(fp, "rb") as f:
                    floors = json.loads(f.read())["floors"]
            except (ValueError, KeyError, TypeError) as exc:
                # (the definitions are intact; delivery restarts at each one's saved floor)
                log.error("%s is damaged (%s): using the floors saved with each subscription",
                          fp, exc)
        out = []
        for name in sorted(os.listdir(d)):
            if not (name.startswith("sub-") and name.endswith(".json")):
                continue
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    rec = json.loads(f.read())
                if rec.get("version") != 1 or rec.get("id") != name[:-5]:
                    raise ValueError("not a subscription of this version")
            except ValueError as exc:
                raise ValueError("{}: {}".format(path, exc)) from None
            f = floors.get(rec["id"])
            if type(f) is int and f >= rec.get("floor", 0):
                rec["floor"] = f
            out.append(rec)
        return out

    def _restore(self, rec):
        body = rec["body"]
        spec = self.validate(body)
        sub = _Sub(rec["id"], rec.get("owner"), spec, body, rec.get("created"))
        sub.grant_token = rec.get("grant_token") or sub.grant_token
        lg = self.flow.stream(spec.stream).log
        floor = int(rec.get("floor", 0))
        pos = max(floor + 1, lg.first_seq)
        if pos > floor + 1:
            sub.lost += pos - floor - 1
        if rec.get("status") == "retired":
            sub.status, sub.reason, sub.floor = "retired", rec.get("reason"), floor
            self.subs[sub.id] = sub
            self._per_owner[sub.owner] = self._per_owner.get(sub.owner, 0) + 1
            return
        self._attach(sub, min(pos, lg.last_seq + 1))

    def _write(self, sub):
        """Save ``sub``'s definition (its own file: a create costs one
        small write, whatever the number of subscriptions)."""
        d = self._dir()
        if d is None:
            return
        os.makedirs(d, mode=0o700, exist_ok=True)
        _atomic_write(os.path.join(d, sub.id + ".json"), json.dumps({
            "version": 1, "id": sub.id, "owner": sub.owner, "created": sub.created,
            "body": sub.body, "grant_token": sub.grant_token, "status": sub.status,
            "reason": sub.reason, "floor": sub.current_floor()}, separators=(",", ":")), d)
        self._dirty_soon()

    def _unlink(self, sub):
        d = self._dir()
        if d is None:
            return
        try:
            os.unlink(os.path.join(d, sub.id + ".json"))
        except FileNotFoundError:
            pass
        _fsync_dir(d)
        self._dirty_soon()

    def _dirty_soon(self):
        self._dirty = True
        if self._save_timer is None and self.loop is not None and not self._closed:
            self._save_timer = self.loop.call_later(self.save_interval, self._save_due)

    def _save_due(self):
        self._save_timer = None
        try:
            self._save()
        except OSError as exc:
            log.error("the subscriptions' floors could not be saved: %s (tried again at the "
                      "next change)", exc)

    def _save(self):
        """Save every subscription's floor (one small file)."""
        d = self._dir()
        if d is None or not self._dirty:
            return
        os.makedirs(d, mode=0o700, exist_ok=True)
        _atomic_write(os.path.join(d, FLOORS_FILE), json.dumps({
            "version": 1, "floors": {s.id: s.current_floor() for s in self.subs.values()}},
            separators=(",", ":")), d)
        self._dirty = False
