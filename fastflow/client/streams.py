"""Streams and durable consumers over the connection: the STREAM, CONSUMER
and REPLAY requests of ``Client``, ``Replay``, ``Delivery`` (with its
acknowledgements) and ``PubAck``."""

import datetime as _dt
import struct
from collections import deque

from fastflow._impl import Event, validate_pattern
from fastflow.client._common import _ACK, _CONNECTED, _await_with_timeout, _json, _loads
from fastflow.consumer import ConsumerConfig
from fastflow.errors import FastflowError
from fastflow.protocol import AckKind, Op

_REPLAY_PAGE = 8192             # events per REPLAY request of an unbounded replay

_nak = struct.Struct("<Bd")


class PubAck(tuple):
    """What ``publish_ack`` returns: ``(seq, stream)`` (``(0, None)`` when no
    stream stored the event), and ``duplicate``: the stream had stored this
    ``(source, id)`` already, within its duplicate window (``seq`` is the
    original's; nothing was stored again)."""

    def __new__(cls, seq, stream, duplicate=False):
        self = tuple.__new__(cls, (seq, stream))
        self.duplicate = duplicate
        return self

    def __repr__(self):
        return "PubAck(seq={}, stream={!r}{})".format(self[0], self[1], ", duplicate=True"
                                                      if self.duplicate else "")

    seq = property(lambda self: self[0])
    stream = property(lambda self: self[1])


class _DuplicateAck(bytes):
    """The body of a PUBACK with the DUPLICATE flag."""

    __slots__ = ()


def _retention_dict(retention):
    if retention is None:
        return None
    if isinstance(retention, dict):
        return dict(retention)
    to_dict = getattr(retention, "to_dict", None)
    if to_dict is None:
        raise TypeError("retention must be a dict or a fastflow.Retention, got {}".format(
            type(retention).__name__))
    return to_dict()


def _time_ns(t):
    """A replay/consumer start time as ns since the epoch (``datetime``:
    naive means local time, as the log)."""
    if t is None:
        return None
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            t = t.astimezone()
        return (t - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(
            microseconds=1) * 1000
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError("time must be ns since the epoch (int) or a datetime, got {!r}".format(t))
    return int(t)


class StreamsMixin:
    """The stream and durable-consumer requests of ``Client`` (mixed into
    it; uses its ``_send``, ``_pending`` and ``_handlers``)."""

    async def _call(self, op, subject, args, timeout=None, collect=False):
        """A control request (STREAM, CONSUMER, REPLAY): the OK's JSON result
        (with ``collect``: ``(result, msgs)``, the MSGs sent for it as
        ``(subject, reply, record)``)."""
        timeout = self.timeout if timeout is None else timeout
        await self._wait_connected(timeout)
        rid = self._new_id()
        fut = self._loop.create_future()
        self._pending[rid] = fut
        msgs = None
        if collect:
            msgs = []
            self._handlers[rid] = _collector(msgs)
        try:
            self._send(op, 0, rid, subject, b"", _json(args) if args is not None else b"")
            body = await _await_with_timeout(
                self._loop, fut, timeout, "no answer to {} {!r} within {} s".format(
                    Op(op).name, subject, timeout))
        finally:
            self._pending.pop(rid, None)
            if collect:
                self._handlers.pop(rid, None)
        result = _loads(body)
        return (result, msgs) if collect else result

    # -- streams -------------------------------------------------------------------------

    async def add_stream(self, name, subjects, retention=None, storage=None, *, replicas=None,
                         timeout=None):
        """Create the stream ``name`` capturing ``subjects`` (patterns), or
        confirm the existing one (``ConflictError`` if its config differs);
        ``retention``: a dict or a ``fastflow.Retention``; ``storage``:
        ``"memory"`` or ``"file"``; ``replicas`` > 1: replicated in the
        cluster's JetStream (a server with a cluster link).  Returns the
        stream's info (a dict)."""
        if isinstance(subjects, str):
            subjects = [subjects]
        args = {"name": name, "subjects": list(subjects)}
        r = _retention_dict(retention)
        if r is not None:
            args["retention"] = r
        if storage is not None:
            args["storage"] = storage
        if replicas is not None:
            args["replicas"] = replicas
        return await self._call(Op.STREAM, "add", args, timeout)

    async def stream_info(self, name, *, timeout=None):
        """The stream's info (a dict: subjects, retention, events, first/last seq...)."""
        return await self._call(Op.STREAM, "info", {"name": name}, timeout)

    async def delete_stream(self, name, *, timeout=None):
        return await self._call(Op.STREAM, "delete", {"name": name}, timeout)

    async def streams(self, *, timeout=None):
        """The server's streams (a list of summaries)."""
        r = await self._call(Op.STREAM, "list", {}, timeout)
        return r.get("streams", []) if isinstance(r, dict) else (r or [])

    async def purge_stream(self, name, subject=None, up_to=None, *, timeout=None):
        """Remove events of a stream (all; those matching the pattern
        ``subject``; those with ``seq <= up_to``); returns how many."""
        args = {"name": name}
        if subject is not None:
            args["subject"] = subject
        if up_to is not None:
            args["up_to"] = up_to
        r = await self._call(Op.STREAM, "purge", args, timeout)
        return r.get("purged", r) if isinstance(r, dict) else r

    def replay(self, stream, start="first", *, seq=None, time=None, filter=None, limit=None,
               page=_REPLAY_PAGE, timeout=None):
        """An async iterator of the events of ``stream`` from a position
        (``start`` ``"first"``/``"last"``/``"new"``, or ``seq=``, or ``time=``
        ns since the epoch or a datetime), ``filter`` a subject pattern, at
        most ``limit`` events; it ends at the last event stored when each
        page was asked for.  Events carry ``seq``, ``stream`` and ``ts``.
        They come in pages of ``page`` events (one REPLAY request each), so
        a long replay holds one page in memory."""
        return Replay(self, stream, start, seq, time, filter, limit, page, timeout)

    # -- durable consumers ---------------------------------------------------------------

    async def add_consumer(self, stream, name, *, timeout=None, **config):
        """Create the durable consumer ``name`` of ``stream`` (``config`` as
        ``Stream.consumer``: start, filter, ack, ack_wait, max_deliver,
        max_in_flight, dead_letter), or confirm the existing one.  Returns
        its info."""
        cfg = ConsumerConfig(**config).to_dict()        # checked here, sent as given
        args = {"stream": stream, "name": name}
        args.update({k: v for k, v in cfg.items() if k in config})
        return await self._call(Op.CONSUMER, "add", args, timeout)

    async def consumer_info(self, stream, name, *, timeout=None):
        return await self._call(Op.CONSUMER, "info", {"stream": stream, "name": name}, timeout)

    async def delete_consumer(self, stream, name, *, timeout=None):
        return await self._call(Op.CONSUMER, "delete", {"stream": stream, "name": name}, timeout)

    async def consumers(self, stream, *, timeout=None):
        """The consumers of ``stream`` (a list of infos)."""
        r = await self._call(Op.CONSUMER, "list", {"stream": stream}, timeout)
        return r.get("consumers", []) if isinstance(r, dict) else (r or [])

    async def fetch(self, stream, consumer, n=1, *, wait=0.0, timeout=None):
        """Up to ``n`` deliveries of a durable consumer (a list of
        ``Delivery``: event-like, with ``seq``, and ``await d.ack()``,
        ``nak(delay)``, ``term()``, ``in_progress()``); with ``wait``
        seconds, waits that long for the first one when none is ready."""
        if timeout is None:
            timeout = self.timeout + (wait or 0)
        args = {"stream": stream, "name": consumer, "n": n}
        if wait:
            args["wait"] = wait
        _result, msgs = await self._call(Op.CONSUMER, "fetch", args, timeout, collect=True)
        return [Delivery(self, stream, subject, reply, rec) for subject, reply, rec in msgs]

    async def _ack(self, ack_subject, kind, delay=None):
        if self._state != _CONNECTED:
            await self._wait_connected(self.timeout)
        body = _nak.pack(kind, delay) if delay else bytes((kind,))
        self._send(_ACK, 0, 0, ack_subject, b"", body)


def _collector(msgs):
    """The MSG handler of a control request that collects its messages
    into ``msgs`` as ``(subject, reply, record)``."""

    def collect(mb, idx):
        subjects, replies = mb.subjects, mb.replies
        record = mb.record
        for i in range(len(mb)) if idx is None else idx:
            msgs.append((subjects[i], replies[i], record(i)))
    return collect


# -- replay --------------------------------------------------------------------------------


class Replay:
    """An async iterator of the events of a stream (``client.replay(...)``);
    ``count`` is the events received so far, ``lost`` the events that were
    gone (evicted) when asked for, ``next_seq`` where to continue."""

    def __init__(self, client, stream, start, seq, time, filter, limit, page, timeout):
        if start not in ("first", "last", "new"):
            raise ValueError("start must be 'first', 'last' or 'new', got {!r}".format(start))
        if seq is not None and (type(seq) is not int or seq < 0):
            raise ValueError("seq must be an int >= 0, got {!r}".format(seq))
        if limit is not None and (type(limit) is not int or limit < 0):
            raise ValueError("limit must be an int >= 0, got {!r}".format(limit))
        if type(page) is not int or page < 1:
            raise ValueError("page must be an int >= 1, got {!r}".format(page))
        if filter is not None:
            validate_pattern(filter)
        self._client = client
        self.stream = stream
        self._args = {"start": start}
        if seq is not None:
            self._args["seq"] = seq
        if time is not None:
            self._args["time"] = _time_ns(time)
        if filter is not None:
            self._args["filter"] = filter
        self._limit = limit
        self._page = page
        self._timeout = timeout
        self._buf = deque()
        self._done = False
        self.count = 0
        self.lost = 0
        self.next_seq = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        while not self._buf:
            if self._done:
                raise StopAsyncIteration
            await self._next_page()
        subject, reply, rec = self._buf.popleft()
        self.count += 1
        seq, ts = _replay_position(reply)
        return Event.decode(subject, rec, seq, self.stream, ts)

    async def _next_page(self):
        want = self._page if self._limit is None else min(self._page, self._limit - self.count)
        if want <= 0:
            self._done = True
            return
        args = dict(self._args)
        args["limit"] = want
        if self.next_seq is not None:               # the next pages: from where it stopped
            args.pop("time", None)
            args["start"] = "first"
            args["seq"] = self.next_seq
        result, msgs = await self._client._call(Op.REPLAY, self.stream, args, self._timeout,
                                                collect=True)
        result = result if isinstance(result, dict) else {}
        self.lost += result.get("lost", 0) or 0
        nxt = result.get("next_seq")
        self._buf.extend(msgs)
        if len(msgs) < want or nxt is None or (self.next_seq is not None and nxt <= self.next_seq):
            self._done = True
        self.next_seq = nxt

    async def list(self):
        """Every event of the replay (a list)."""
        return [ev async for ev in self]


def _replay_position(reply):
    """(seq, ts) of a replayed MSG's reply ``$REPLAY.<stream>.<seq>.<ts>``."""
    if reply:
        parts = reply.rsplit(".", 2)
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            return int(parts[1]), int(parts[2])
    return 0, 0


# -- durable consumers' deliveries -----------------------------------------------------------


class Delivery:
    """A delivery of a durable consumer: the ``event`` (its attributes read
    through: ``d.data``, ``d.id``, ``d.routing_subject``...), ``seq``, the
    ``ack_subject``, and ``await d.ack()``, ``nak(delay)``, ``term()``,
    ``in_progress()``."""

    __slots__ = ("_client", "event", "ack_subject", "stream", "seq", "acked")

    def __init__(self, client, stream, subject, reply, rec):
        self._client = client
        self.stream = stream
        self.ack_subject = reply
        self.seq = _ack_seq(reply)
        self.event = Event.decode(subject, rec, self.seq, stream)
        self.acked = False

    def __getattr__(self, name):
        if name.startswith("_") or name in Delivery.__slots__:
            raise AttributeError(name)
        return getattr(self.event, name)

    def __getitem__(self, name):
        return self.event[name]

    async def ack(self):
        """Acknowledge: done with this event."""
        await self._settle(AckKind.ACK)

    async def nak(self, delay=0.0):
        """Ask for redelivery after ``delay`` seconds."""
        await self._settle(AckKind.NAK, float(delay) if delay else None)

    async def term(self):
        """Never deliver this event to the consumer again."""
        await self._settle(AckKind.TERM)

    async def in_progress(self):
        """Reset the ack timer: still working on it."""
        self._check()
        await self._client._ack(self.ack_subject, AckKind.PROGRESS)

    def _check(self):
        if not self.ack_subject:
            raise FastflowError("the delivery of {!r} has no ack subject".format(
                self.event.routing_subject))

    async def _settle(self, kind, delay=None):
        if self.acked:
            return
        self._check()
        await self._client._ack(self.ack_subject, kind, delay)
        self.acked = True

    def __repr__(self):
        return "<Delivery seq={} {!r}>".format(self.seq, self.event)


def _ack_seq(s):
    """The seq in an ack subject ``$ACK.<stream>.<consumer>.<seq>`` (0 if none)."""
    if s:
        tail = s.rsplit(".", 1)[-1]
        if tail.isdigit():
            return int(tail)
    return 0
