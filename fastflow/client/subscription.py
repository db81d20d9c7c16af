"""Subscriptions: ``Client.subscribe``, the delivery of each run of MSG frames
(a ``MsgBatch``) to its subscriptions, and ``Subscription``."""

import asyncio
import inspect
from collections import deque

from fastflow._impl import validate_pattern
from fastflow.client._common import _CLOSED, _CONNECTED, _FL_NO_RESPONDERS, _u32
from fastflow.errors import ConnectionClosedError, SlowConsumerError
from fastflow.protocol import Flag, Op

_EVENT_OVERHEAD = 64            # bytes counted per queued event on top of its body
_ON_FULL = ("drop_oldest", "drop_new", "cut")

_sink = deque(maxlen=0).extend          # runs an iterator of callback calls in C


class SubscriberMixin:
    """The subscribing side of ``Client`` (mixed into it; uses its state,
    ``_send`` and ``_handlers``): ``subscribe`` and the delivery of each run
    of MSG frames to the subscriptions it is for."""

    def subscribe(self, pattern, callback=None, *, queue=None, raw=False, with_reply=False,
                  batch=False, max_pending=65536, max_pending_bytes=64 << 20,
                  on_full="drop_oldest", verify=None, verify_mode="strict", conflate=False):
        """Subscribe to ``pattern`` (not awaited).

        With a ``callback``: a function is called inline, from C, for each
        message: with the ``Event`` (decoded in C); with ``raw=True``, with
        ``(subject, reply, data)``: the routing subject, the reply subject
        (None when there is none) and the event's payload, no event made
        (the fastest); with ``with_reply=True``, with ``(event, reply)``.
        A coroutine function runs in a task, one message at a time, in
        order.  Without a callback, iterate: ``async for ev in sub``,
        ``await sub.next(timeout)``.  ``queue`` joins a queue group.

        ``batch=True`` (a plain function callback): one call per run of
        messages the client read at once, in order, with lists instead of
        single messages: ``callback(events)``; ``raw=True``:
        ``callback(subjects, replies, datas)`` (parallel lists);
        ``with_reply=True``: ``callback(events, replies)``.  The Python
        cost per message is then the loop the callback runs itself.

        Queued messages (iterators, coroutine callbacks) are bounded by
        ``max_pending`` messages and ``max_pending_bytes`` (record + 64
        each); at the limit ``on_full`` drops the oldest, drops the new one
        (``"drop_new"``) or cuts the subscription (``"cut"``: unsubscribed,
        the iterator raises ``SlowConsumerError``).

        ``conflate=True`` (market data: the newest price, not every tick):
        while the connection is behind, the server keeps only the latest
        message of each subject for this subscription and sends those
        when it catches up (SUB flag ``CONFLATE``); the client's own
        queue (iterators, coroutine callbacks) does the same while
        messages wait in it: a newer message of a subject replaces the
        queued one where it stands (``conflated`` counts them;
        ``max_pending`` then counts subjects).  docs/engine.md, "Conflation".

        ``verify`` (a ``fastflow.trust.KeySet`` or keys): each event's
        signature is checked (docs/provenance.md) before the callback sees
        it, which gets the event ``fastflow.trust.verify`` returns in
        ``verify_mode``; an event that fails is not delivered and goes to
        the client's ``error_callback`` as a ``SignatureError`` naming the
        reason.  It needs an event callback (not ``raw`` or ``batch``)."""
        if self._state == _CLOSED:
            raise ConnectionClosedError("client is closed")
        validate_pattern(pattern)
        if isinstance(pattern, bytes):
            pattern = pattern.decode()
        if queue is not None:
            if isinstance(queue, bytes):
                queue = queue.decode()
            if not queue or any(c in queue for c in " \t\r\n.*>"):
                raise ValueError("queue group name must be a non-empty token without spaces, "
                                 "'.', '*' or '>', got {!r}".format(queue))
        if on_full not in _ON_FULL:
            raise ValueError("on_full must be 'drop_oldest', 'drop_new' or 'cut', got {!r}"
                             .format(on_full))
        if raw and with_reply:
            raise ValueError("raw=True passes the reply already: with_reply is for events")
        if not isinstance(conflate, bool):
            raise TypeError("conflate must be True or False, got {!r}".format(conflate))
        is_async = callback is not None and inspect.iscoroutinefunction(callback)
        if callback is not None and not callable(callback):
            raise TypeError("callback must be callable, got {!r}".format(callback))
        if batch and (callback is None or is_async):
            raise ValueError("batch=True needs a plain function callback (iterators and "
                             "coroutine callbacks take messages one by one)")
        if verify is not None:
            if callback is None or raw or batch:
                raise ValueError("verify= checks events before an event callback: it needs a "
                                 "callback, without raw or batch")
            callback = self._verifying(callback, verify, verify_mode, with_reply, is_async)
        sid = self._new_id()
        sub = Subscription(self, sid, pattern, queue, callback, raw, with_reply, max_pending,
                           max_pending_bytes, on_full, is_async, batch, conflate)
        self._subs[sid] = sub
        self._handlers[sid] = sub._deliver
        if is_async:
            sub._task = self._spawn(sub._pump())
        if self._state == _CONNECTED:
            self._send(Op.SUB, sub.sub_flags, sid, pattern, queue, b"")
        return sub

    def _verifying(self, callback, keys, mode, with_reply, is_async):
        """``callback`` behind the signature check of ``subscribe(verify=)``."""
        from fastflow.errors import SignatureError
        from fastflow.trust import KeySet, MODES, verify

        if mode not in MODES:
            raise ValueError("verify_mode must be one of {}, got {!r}".format(
                ", ".join(MODES), mode))
        keys = keys if isinstance(keys, KeySet) else KeySet(keys)
        report = self._report

        def checked(ev):
            try:
                return verify(ev, keys, mode)
            except SignatureError as exc:
                exc.event = ev
                report(exc)
                return None

        if is_async:
            if with_reply:
                async def acall(ev, reply):
                    ev = checked(ev)
                    if ev is not None:
                        await callback(ev, reply)
            else:
                async def acall(ev):
                    ev = checked(ev)
                    if ev is not None:
                        await callback(ev)
            return acall
        if with_reply:
            def call(ev, reply):
                ev = checked(ev)
                if ev is not None:
                    callback(ev, reply)
        else:
            def call(ev):
                ev = checked(ev)
                if ev is not None:
                    callback(ev)
        return call

    def _unsubscribe(self, sub, max_msgs=None):
        if max_msgs is not None and max_msgs > 0:
            sub._remaining = max_msgs
            if self._state == _CONNECTED:
                self._send(Op.UNSUB, 0, sub.sid, b"", b"", _u32.pack(max_msgs))
            return
        self._subs.pop(sub.sid, None)
        self._handlers.pop(sub.sid, None)
        if self._state == _CONNECTED:
            self._send(Op.UNSUB, 0, sub.sid, b"", b"", b"")
        sub._close()

    def _sub_done(self, sub):
        """An UNSUB max was reached (the server forgets it by itself)."""
        self._subs.pop(sub.sid, None)
        self._handlers.pop(sub.sid, None)
        sub._close()

    @property
    def subscriptions(self):
        """The live subscriptions (a list)."""
        return list(self._subs.values())

    def _on_msgs(self, mb):
        """A run of MSG frames: one subscription's (the common case) goes to
        it whole; a mixed run is split by sid."""
        n = len(mb)
        self._in_msgs += n
        sids = bytes(mb.sids)
        fl = bytes(mb.flags)
        if (n == 1 or sids == sids[:8] * n) and fl.count(0) == len(fl):
            h = self._handlers.get(mb.sids[0])
            if h is not None:
                h(mb, None)
            return
        groups = {}
        flags = mb.flags
        for i, sid in enumerate(mb.sids.tolist()):
            if flags[i]:
                if flags[i] & _FL_NO_RESPONDERS:
                    self._no_responders(mb.subjects[i])
                    continue
            g = groups.get(sid)
            if g is None:
                groups[sid] = [i]
            else:
                g.append(i)
        get = self._handlers.get
        for sid, idx in groups.items():
            h = get(sid)
            if h is not None:
                h(mb, idx)


class Subscription:
    """Interest in a subject pattern on a client (``client.subscribe``).

    ``delivered`` counts the messages handed to its callback or queue,
    ``dropped`` those its queue limits dropped.  Iterate it (``async for``,
    ``await sub.next(timeout)``) when it has no callback."""

    def __init__(self, client, sid, pattern, queue, callback, raw, with_reply, max_pending,
                 max_pending_bytes, on_full, is_async, batch=False, conflate=False):
        self._client = client
        self.batch = batch
        self.sid = sid
        self.pattern = pattern
        self.queue = queue
        self.callback = callback
        self.raw = raw
        self.with_reply = with_reply
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.on_full = on_full
        self._queued = callback is None or is_async
        self._q = deque()                # (item, size); conflating: subjects
        self._qbytes = 0
        self.conflate = conflate
        self._latest = {} if conflate else None     # subject -> (item, size)
        self.conflated = 0              # queued messages replaced by a newer one
        self._waiter = None
        self._task = None
        self._remaining = 0             # UNSUB max: messages left
        self.delivered = 0
        self.dropped = 0
        self.closed = False
        self._error = None              # why it closed (slow consumer, refused)

    @property
    def pending(self):
        """Messages queued, not yet taken."""
        return len(self._q)

    @property
    def pending_bytes(self):
        return self._qbytes

    def stats(self):
        return {"sid": self.sid, "pattern": self.pattern, "queue": self.queue,
                "delivered": self.delivered, "dropped": self.dropped,
                "conflate": self.conflate, "conflated": self.conflated, "pending": len(self._q),
                "pending_bytes": self._qbytes, "closed": self.closed,
                "slow_consumer": isinstance(self._error, SlowConsumerError)}

    # -- delivery (the client's receive loop) ---------------------------------------------

    def _deliver(self, mb, idx):
        """Messages of a MsgBatch: all of them (``idx`` None) or those at ``idx``."""
        if self.closed:
            return
        k = len(mb) if idx is None else len(idx)
        done = False
        if self._remaining:
            if k >= self._remaining:
                idx = list(range(self._remaining)) if idx is None else idx[:self._remaining]
                k = len(idx)
                done = True
            self._remaining -= k
        if not self._queued:
            self.delivered += k
        if self.raw:
            if idx is None:
                cols = mb.subjects, mb.replies, mb.datas()
            else:
                s, r, d = mb.subjects, mb.replies, mb.datas()
                cols = [s[i] for i in idx], [r[i] for i in idx], [d[i] for i in idx]
            if self._queued:
                self._enqueue(mb, idx, zip(*cols))
            elif self.batch:
                self._run_batch(cols)
            else:                                   # the hot path: a call per message, from C
                self._run(map(self.callback, *cols))
        else:
            evs = mb.events() if idx is None else [mb.event(i) for i in idx]
            if self.with_reply:
                replies = mb.replies if idx is None else [mb.replies[i] for i in idx]
                if self._queued:
                    self._enqueue(mb, idx, zip(evs, replies))
                elif self.batch:
                    self._run_batch((evs, replies))
                else:
                    self._run(map(self.callback, evs, replies))
            elif self._queued:
                self._enqueue(mb, idx, evs)
            elif self.batch:
                self._run_batch((evs,))
            else:
                self._run(map(self.callback, evs))
        if done:
            self._client._sub_done(self)

    def _run(self, calls):
        """Run an iterator of callback calls in C; a callback's exception is
        reported and the rest of the batch still delivered."""
        while True:
            try:
                _sink(calls)
                return
            except Exception as exc:
                self._client._report(exc)

    def _run_batch(self, args):
        try:
            self.callback(*args)
        except Exception as exc:
            self._client._report(exc)

    @property
    def sub_flags(self):
        """The flags of its SUB frame."""
        return Flag.CONFLATE if self.conflate else 0

    def _enqueue(self, mb, idx, items):
        if self.conflate:
            return self._enqueue_latest(mb, idx, items)
        offs = mb.offsets
        q = self._q
        mp, mpb = self.max_pending, self.max_pending_bytes
        i = -1
        for j, item in enumerate(items):
            i = j if idx is None else idx[j]
            size = offs[i + 1] - offs[i] + _EVENT_OVERHEAD
            if (mp and len(q) >= mp) or (mpb and self._qbytes + size > mpb):
                if self.on_full == "drop_new":
                    self.dropped += 1
                    continue
                if self.on_full == "cut":
                    self._cut()
                    return
                while q and ((mp and len(q) >= mp) or (mpb and self._qbytes + size > mpb)):
                    self._qbytes -= q.popleft()[1]
                    self.dropped += 1
            q.append((item, size))
            self._qbytes += size
            self.delivered += 1
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _enqueue_latest(self, mb, idx, items):
        """``_enqueue`` of a conflating subscription: a message replaces the
        queued one of its subject in place, or queues its subject."""
        offs = mb.offsets
        subjects = mb.subjects
        q = self._q
        latest = self._latest
        mp, mpb = self.max_pending, self.max_pending_bytes
        for j, item in enumerate(items):
            i = j if idx is None else idx[j]
            size = offs[i + 1] - offs[i] + _EVENT_OVERHEAD
            subject = subjects[i]
            old = latest.get(subject)
            self.delivered += 1
            if old is not None:
                latest[subject] = (item, size)
                self._qbytes += size - old[1]
                self.conflated += 1
                continue
            if (mp and len(q) >= mp) or (mpb and self._qbytes + size > mpb):
                if self.on_full == "drop_new":
                    self.dropped += 1
                    self.delivered -= 1
                    continue
                if self.on_full == "cut":
                    self._cut()
                    return
                while q and ((mp and len(q) >= mp) or (mpb and self._qbytes + size > mpb)):
                    self._qbytes -= latest.pop(q.popleft())[1]
                    self.dropped += 1
            q.append(subject)
            latest[subject] = (item, size)
            self._qbytes += size
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _cut(self):
        self.dropped += len(self._q) + 1
        if self._latest:
            self._latest.clear()
        self._q.clear()
        self._qbytes = 0
        self._error = SlowConsumerError(
            "subscription to {!r} was cut off as a slow consumer: {} pending messages or {} "
            "bytes reached".format(self.pattern, self.max_pending, self.max_pending_bytes))
        self._client._unsubscribe(self)

    def _close(self, error=None):
        if self.closed:
            return
        self.closed = True
        if error is not None and self._error is None:
            self._error = error
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- taking messages ---------------------------------------------------------------------

    def __aiter__(self):
        if not self._queued:
            raise TypeError("a subscription with a callback is not iterable")
        return self

    async def __anext__(self):
        while True:
            if self._q:
                item = self._q.popleft()
                item, size = self._latest.pop(item) if self.conflate else item
                self._qbytes -= size
                return item
            if self.closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = self._client._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def next(self, timeout=None):
        """The next message, waiting up to ``timeout`` seconds
        (``asyncio.TimeoutError`` then; ``StopAsyncIteration`` once the
        subscription ended)."""
        if timeout is None:
            return await self.__anext__()
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def _pump(self):
        cb = self.callback
        star = self.raw or self.with_reply
        try:
            async for item in self:
                try:
                    await (cb(*item) if star else cb(item))
                except Exception as exc:
                    self._client._report(exc)
        except SlowConsumerError as exc:
            self._client._report(exc)

    # -- ending --------------------------------------------------------------------------------

    async def unsubscribe(self, max=None):
        """Stop the subscription (queued messages can still be read, then
        the iterator ends); with ``max``: after that many more messages."""
        if self.closed:
            return
        if max is not None and (type(max) is not int or max < 0):
            raise ValueError("max must be an int >= 0, got {!r}".format(max))
        self._client._unsubscribe(self, max)

    async def drain(self, timeout=None):
        """Unsubscribe, wait until the server has sent what it had in
        flight, and until a coroutine callback has handled its queue."""
        if self.closed:
            return
        c = self._client
        if c._state == _CONNECTED:
            c._send(Op.UNSUB, 0, self.sid, b"", b"", b"")
            try:
                await c.flush(timeout)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        c._subs.pop(self.sid, None)
        c._handlers.pop(self.sid, None)
        self._close()
        if self._task is not None and not self._task.done():
            await asyncio.wait([self._task], timeout=timeout or c.timeout)

    def __repr__(self):
        return "<fastflow.client.Subscription sid={} {!r}{} delivered={} pending={}{}>".format(
            self.sid, self.pattern, " queue={!r}".format(self.queue) if self.queue else "",
            self.delivered, len(self._q), " closed" if self.closed else "")
