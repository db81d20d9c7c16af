"""The client's connection: ``Client`` (connecting, the handshake,
reconnecting, writing, publishing, request/reply, closing) over one
``asyncio.Protocol``; subscriptions and streams are mixed in from
``subscription.py`` and ``streams.py``.

The connection is an ``asyncio.Protocol`` over ``loop.create_connection``;
the core's codec does the framing.  Receiving: a ``FrameParser`` with
``batch_msgs`` cuts the frames of each received chunk in C and hands every
run of MSG frames over as one ``MsgBatch`` (columns over one buffer); a run
for one subscription goes to it whole, and its callback is called from C
(``map`` over the batch's columns): payloads (``raw=True``) or events
decoded in C, made only for subscriptions that take events.  Sending:
publishes append their frames to an ``OutBuf`` (``OutBuf.publish`` writes
the PUB frame of a default event in C), and one flush per loop tick writes
everything with one ``transport.write``.
"""

import asyncio
import inspect
import logging
import os
import random
import ssl as _ssl
import struct
from collections import deque

from fastflow._attrs import DEFAULT_SOURCE as _DEFAULT_SOURCE
from fastflow._impl import (
    Event,
    FrameParser,
    OutBuf,
    ProtocolError,
    Publisher,
    validate_subject,
)
from fastflow._version import __version__
from fastflow.client._common import (
    _CLOSED,
    _CONNECTED,
    _CONNECTING,
    _FL_ACK,
    _FL_CLOSE,
    _FL_DUPLICATE,
    _PUB,
    _PUB_BATCH,
    _RECONNECTING,
    _await_with_timeout,
    _json,
    _loads,
    _u32,
)
from fastflow.client.streams import PubAck, StreamsMixin, _DuplicateAck
from fastflow.client.subscription import SubscriberMixin
from fastflow.client.url import DEFAULT_URL, _Server, parse_url
from fastflow.errors import (
    AuthenticationError,
    ClientBufferFull,
    ConnectError,
    ConnectionClosedError,
    FastflowError,
    NoRespondersError,
    PayloadTooLarge,
    ServerError,
    SubjectError,
)
from fastflow.protocol import FRAME_VERSION, ErrorCode, Op, server_error

log = logging.getLogger("fastflow.client")

_WRITE_CHUNK = 1 << 20          # bytes: while writable, output past this is written at once
_MAX_CONTROL_IN = 64 << 20      # the parser's limits: the client trusts its server's frames
_MAX_PAYLOAD_IN = 1 << 30

_u16 = struct.Struct("<H")
_u64 = struct.Struct("<Q")
_item_head = struct.Struct("<HI")       # PUB_BATCH item: subject_len, record_len
_batch_ack = struct.Struct("<QI")       # PUB_BATCH's PUBACK: last seq, count


def _is_auth_error(exc):
    return isinstance(exc, AuthenticationError)


# -- the connection --------------------------------------------------------------------------


class _Protocol(asyncio.Protocol):
    """One TCP (or TLS) connection; its frames go to the client."""

    def __init__(self, client):
        self.client = client
        self.parser = FrameParser(None, None, _MAX_PAYLOAD_IN, _MAX_CONTROL_IN)
        self.parser.batch_msgs = True
        self.feed = self.parser.feed
        self.transport = None
        self.paused = False
        self.info = None                 # a future: the server's INFO
        self.lost = None                 # a future: set by connection_lost

    def connection_made(self, transport):
        self.transport = transport
        loop = self.client._loop
        self.info = loop.create_future()
        self.lost = loop.create_future()
        try:
            transport.set_write_buffer_limits(high=1 << 20)
        except (AttributeError, NotImplementedError):  # pragma: no cover - exotic transports
            pass
        self.client._on_made(self)       # before any data_received

    def data_received(self, data):
        self.client._on_data(self, data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)
        if self.info is not None and not self.info.done():
            # refused before INFO (max connections, a TLS client certificate):
            # fail the handshake now, with the server's reason when it gave one
            err = self.client._close_err
            self.info.set_exception(err if err is not None else ConnectError(
                "connection closed by the server before INFO{}".format(
                    ": {}".format(exc) if exc is not None else "")))
        self.client._on_lost(self, exc)

    def pause_writing(self):
        self.paused = True
        self.client._on_pause(self)

    def resume_writing(self):
        self.paused = False
        self.client._on_resume(self)


# -- the client ----------------------------------------------------------------------------------


class Client(SubscriberMixin, StreamsMixin):
    """A connection to a fastflow server (make it with ``await connect(...)``).

    ``url``: ``fastflow://[user:password@]host[:port]`` or ``fastflows://``
    (TLS), or a list of URLs tried in turn.  ``name`` is sent in CONNECT;
    ``token`` or ``user`` + ``password`` authenticate (they override the
    URL's); ``tls``: an ``ssl.SSLContext``, or True for the default
    verification; ``source`` is the CloudEvents ``source`` of the events
    published without one (default ``"/fastflow"``).

    ``reconnect`` retries a lost connection ``max_reconnect_attempts``
    times (-1: forever) with exponential backoff from ``reconnect_wait`` to
    ``reconnect_wait_max`` seconds (with jitter), and resubscribes every
    live subscription (same sids); ``pending_limit`` bounds the bytes
    buffered while disconnected or backed up (0: no limit); ``echo=False`` asks the
    server not to send this connection's own publishes back to it;
    ``timeout`` bounds the connection and its handshake and is the default
    of the requests that take one; ``ping_interval`` (seconds, 0: never)
    pings the server and drops a connection that leaves
    ``max_outstanding_pings`` unanswered.  ``inbox_prefix`` (default
    ``"_INBOX"``) begins the reply subjects of ``request`` and
    ``new_inbox``: with ``"_INBOX.alice"`` a user needs subscribe
    permission only for ``_INBOX.alice.>``, not for everyone's replies.

    Callbacks (functions or coroutine functions): ``error_callback(exc)``
    for errors no call is waiting for (an ERR answering a plain publish, a
    refused subscription, a subscription callback that raised, the reason
    the client closed), ``disconnected_callback()``,
    ``reconnected_callback()``, ``closed_callback()``.  Without
    ``error_callback`` errors are logged on the ``fastflow.client`` logger.
    """

    def __init__(self, url=DEFAULT_URL, *, name=None, token=None, user=None, password=None,
                 tls=None, source=None, reconnect=True, max_reconnect_attempts=-1,
                 reconnect_wait=0.25, reconnect_wait_max=4.0, pending_limit=8 << 20, echo=True,
                 timeout=5.0, ping_interval=30.0, max_outstanding_pings=2, error_callback=None,
                 disconnected_callback=None, reconnected_callback=None, closed_callback=None,
                 inbox_prefix="_INBOX"):
        urls = [url] if isinstance(url, str) else list(url)
        if not urls:
            raise ValueError("at least one server URL is needed")
        if tls is not None and not isinstance(tls, (bool, _ssl.SSLContext)):
            raise TypeError("tls must be an ssl.SSLContext, True or None, got {!r}".format(tls))
        if type(pending_limit) is not int or pending_limit < 0:
            raise ValueError("pending_limit must be an int >= 0 (bytes), got {!r}".format(
                pending_limit))
        if type(max_reconnect_attempts) is not int or max_reconnect_attempts < -1:
            raise ValueError("max_reconnect_attempts must be an int >= -1 (-1: forever), got {!r}"
                             .format(max_reconnect_attempts))
        if source is not None and (not isinstance(source, str) or not source):
            raise ValueError("source must be a non-empty str, got {!r}".format(source))
        try:
            validate_subject(inbox_prefix)
        except (SubjectError, TypeError) as exc:
            raise ValueError("inbox_prefix must be a subject without wildcards, such as "
                             "'_INBOX.alice': {}".format(exc)) from None
        self._servers = []
        for u in urls:
            host, port, url_tls, u_user, u_password, u_token = parse_url(u)
            self._servers.append(_Server(u, host, port, bool(tls) or url_tls, user or u_user,
                                         password if password is not None else u_password,
                                         token or u_token))
        self._server_i = 0
        self._tls = tls
        self.name = name
        self.reconnect = reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_wait = reconnect_wait
        self.reconnect_wait_max = reconnect_wait_max
        self.pending_limit = pending_limit
        self.echo = echo
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.max_outstanding_pings = max_outstanding_pings
        self.error_callback = error_callback
        self.disconnected_callback = disconnected_callback
        self.reconnected_callback = reconnected_callback
        self.closed_callback = closed_callback

        self._loop = None
        self._state = _CONNECTING
        self._proto = None
        self._transport = None
        self._writable = False          # connected, handshake done, socket not backed up
        self._flush_scheduled = False
        self._out = OutBuf(pending_limit, self._schedule_flush)
        self._frame = self._out.frame
        self._pub = self._out.publish   # a default event's PUB frame, in C
        self._chunk = _WRITE_CHUNK
        self._ctl_in_buf = False        # control frames sit in _out (dropped on a disconnect)
        self._close_err = None          # the ERR with CLOSE that ends this connection
        self.info = {}                  # the server's INFO
        self.server_info = {}           # the OK of our CONNECT (client_id, user)
        self._source = source or _DEFAULT_SOURCE
        # publish(): the common case (a default event on the subject validated
        # last) in C, without a Python frame; the rest in _publish_slow
        self._publisher = Publisher(self._out, self._publish_slow, self._publish_overflow,
                                    self._source)
        self.publish = self._publisher.publish
        self._max_payload = 1 << 20
        self._max_data = 0
        self._set_max_payload(1 << 20)
        self._vsubj = None              # the last subject validated (str)
        self._next_id = 0               # sids and request ids (a REPLAY's id is its sid)
        self._handlers = {}             # sid -> callable(MsgBatch, indices or None)
        self._subs = {}                 # sid -> Subscription (live, resubscribed on reconnect)
        self._pending = {}              # request id -> future (OK / ERR / PUBACK)
        self._pongs = deque()           # futures of our PINGs, oldest first
        self.inbox_prefix = inbox_prefix
        self._inbox = None              # "<inbox_prefix>.<random>."
        self._inbox_sid = 0
        self._requests = {}             # reply subject -> future
        self._req_n = 0
        self._tasks = set()             # reconnect, pinger, subscription pumps
        self._waiters = []              # futures waiting for "connected and writable"
        self._closed_fut = None
        self._ever_connected = False
        self._in_msgs = 0
        self._in_bytes = 0
        self._msgs_adjust = 0           # out_msgs = the OutBuf's frames + this
        self._out_bytes = 0
        self._reconnects = 0
        self._lost_on_disconnect = 0
        self._errors = 0

    # -- state ---------------------------------------------------------------------------

    @property
    def is_connected(self):
        return self._state == _CONNECTED

    @property
    def is_closed(self):
        return self._state == _CLOSED

    @property
    def state(self):
        """``"connecting"``, ``"connected"``, ``"reconnecting"`` or ``"closed"``."""
        return self._state.label

    @property
    def server(self):
        """The URL of the server in use (or last tried)."""
        return repr(self._servers[self._server_i])

    @property
    def stats(self):
        """A snapshot: ``in_msgs``, ``in_bytes`` (messages and bytes
        received), ``out_msgs``, ``out_bytes`` (events published and bytes
        written), ``reconnects``, ``pending_bytes`` (buffered, not yet
        written), ``subscriptions``, ``errors`` (reported asynchronously),
        ``dropped_on_disconnect`` (buffered bytes lost with a connection),
        ``state``."""
        return {"in_msgs": self._in_msgs, "in_bytes": self._in_bytes,
                "out_msgs": self._out.frames + self._msgs_adjust, "out_bytes": self._out_bytes,
                "reconnects": self._reconnects, "pending_bytes": len(self._out),
                "subscriptions": len(self._subs), "errors": self._errors,
                "dropped_on_disconnect": self._lost_on_disconnect, "state": self.state}

    @property
    def max_payload(self):
        """The server's ``max_payload`` (bytes of an event record)."""
        return self._max_payload

    def _set_max_payload(self, n):
        self._max_payload = n
        # a default event's record: header, generated id, source, data
        self._max_data = n - 32 - len(self._source.encode("utf-8", "surrogatepass"))
        self._publisher.max_data = self._max_data
        self._chunk = max(_WRITE_CHUNK, 2 * n + 65536)

    def __repr__(self):
        return "<fastflow.client.Client {} {}>".format(self.server, self.state)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    # -- connecting ----------------------------------------------------------------------

    def _ssl_context(self, server):
        if not server.tls:
            return None
        if isinstance(self._tls, _ssl.SSLContext):
            return self._tls
        return _ssl.create_default_context()

    async def _connect_first(self):
        self._loop = asyncio.get_running_loop()
        errors = []
        for i in range(len(self._servers)):
            self._server_i = i
            try:
                await self._connect_once(self._servers[i])
            except AuthenticationError:
                self._state = _CLOSED
                self._out.closed = True
                raise
            except (OSError, asyncio.TimeoutError, FastflowError) as exc:
                errors.append("{}: {}".format(self._servers[i], _describe(exc)))
                continue
            self._start_pinger()
            return
        self._state = _CLOSED
        self._out.closed = True
        raise ConnectError("could not connect to fastflow server {}".format("; ".join(errors)))

    async def _connect_once(self, server):
        """One connection and its handshake: INFO; CONNECT, the live
        subscriptions and PING; PONG.  Raises on failure (the connection
        is dropped)."""
        loop = self._loop
        ctx = self._ssl_context(server)
        kw = {"ssl": ctx, "server_hostname": server.host} if ctx is not None else {}
        try:
            transport, proto = await asyncio.wait_for(loop.create_connection(
                lambda: _Protocol(self), server.host, server.port, **kw), self.timeout)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError("timed out connecting to {} after {} s".format(
                server, self.timeout)) from None
        ok = False
        try:
            info = await _await_with_timeout(loop, proto.info, self.timeout,
                                             "no INFO from {} within {} s".format(
                                                 server, self.timeout))
            if info.get("tls_required") and ctx is None:
                raise ConnectError("server {} requires TLS: use fastflows:// or tls=".format(
                    server))
            connect = {"name": self.name, "version": __version__, "lang": "python",
                       "echo": self.echo, "verbose": False}
            if server.token is not None:
                connect["token"] = server.token
            elif server.user is not None:
                connect["user"] = server.user
                connect["password"] = server.password or ""
            ctl = OutBuf(0)
            cid = self._new_id()
            cfut = loop.create_future()
            cfut.add_done_callback(_consume)
            self._pending[cid] = cfut
            ctl.frame(Op.CONNECT, 0, cid, b"", b"", _json(connect))
            for sid, sub in self._subs.items():
                ctl.frame(Op.SUB, sub.sub_flags, sid, sub.pattern, sub.queue, b"")
                if sub._remaining:
                    ctl.frame(Op.UNSUB, 0, sid, b"", b"", _u32.pack(sub._remaining))
            if self._inbox is not None:
                ctl.frame(Op.SUB, 0, self._inbox_sid, self._inbox + "*", b"", b"")
            ctl.frame(Op.PING, 0, 0, b"", b"", b"")
            pong = loop.create_future()
            self._pongs.append(pong)
            self._write(ctl.take())
            try:
                await _await_with_timeout(loop, pong, self.timeout,
                                          "no answer to CONNECT from {} within {} s".format(
                                              server, self.timeout))
            except (ConnectionError, asyncio.TimeoutError) as exc:
                # the server's ERR (an auth failure) says more than the close
                if cfut.done() and not cfut.cancelled() and cfut.exception() is not None:
                    raise cfut.exception() from None
                se = getattr(exc, "server_error", None)
                if se is not None:
                    raise se from None
                raise
            finally:
                self._pending.pop(cid, None)
            if cfut.done() and not cfut.cancelled():
                if cfut.exception() is not None:
                    raise cfut.exception()
                self.server_info = _loads(cfut.result()) or {}
            cfut.cancel()
            ok = True
        finally:
            if not ok:
                if self._proto is proto:
                    self._proto = None
                    self._transport = None
                transport.abort()
        if self._state == _CLOSED:                     # closed during the handshake
            transport.abort()
            raise ConnectionClosedError("client is closed")
        self._state = _CONNECTED
        self._ever_connected = True
        self._set_writable(not proto.paused)

    def _on_made(self, proto):
        self._proto = proto
        self._transport = proto.transport
        self._close_err = None

    def _new_id(self):
        self._next_id = (self._next_id % 0xFFFFFFFF) + 1
        return self._next_id

    def _start_pinger(self):
        if self.ping_interval and self.ping_interval > 0:
            self._spawn(self._pinger())

    def _spawn(self, coro):
        t = self._loop.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _pinger(self):
        while self._state != _CLOSED:
            await asyncio.sleep(self.ping_interval)
            if self._state != _CONNECTED:
                continue
            if len(self._pongs) >= self.max_outstanding_pings:
                self._close_err = ConnectionClosedError(
                    "{} left {} pings unanswered (ping_interval={} s): stale connection".format(
                        self.server, len(self._pongs), self.ping_interval))
                self._transport.abort()
                continue
            fut = self._loop.create_future()
            fut.add_done_callback(_consume)
            self._pongs.append(fut)
            self._send(Op.PING, 0, 0, b"", b"", b"")

    # -- writing -------------------------------------------------------------------------

    def _write(self, data):
        self._out_bytes += len(data)
        self._transport.write(data)

    def _set_writable(self, on):
        self._writable = on
        self._out.max_pending = self._chunk if on else self.pending_limit
        if on:
            if len(self._out):
                self._flush_out()
            if self._writable:
                waiters, self._waiters = self._waiters, []
                for w in waiters:
                    if not w.done():
                        w.set_result(None)

    def _schedule_flush(self):
        # OutBuf.on_data: the buffer went from empty to not empty
        if self._writable and not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_out)

    def _flush_out(self):
        self._flush_scheduled = False
        if not self._writable:
            return
        data = self._out.take()
        self._ctl_in_buf = False
        if data:
            self._out_bytes += len(data)
            self._transport.write(data)

    def _overflow(self, retry, size):
        """A frame did not fit in the OutBuf: write the buffer out (when
        writable) and ``retry()`` the append; raise when closed or at
        ``pending_limit``."""
        out = self._out
        out.overflow = False
        if self._state == _CLOSED:
            raise ConnectionClosedError("client is closed")
        if self._writable:
            self._flush_out()
            if retry():
                return
            if self._writable:                          # one frame over the chunk size
                out.max_pending = 0
                try:
                    retry()
                finally:
                    out.max_pending = self._chunk
                return
            out.overflow = False
        if len(out) == 0 or size > self.pending_limit:
            raise ClientBufferFull(
                "a frame of {} bytes exceeds the client's pending_limit={} bytes".format(
                    size, self.pending_limit))
        raise ClientBufferFull(
            "client buffer full: {} bytes are waiting ({}), pending_limit={} bytes; "
            "await client.wait_writable() or flush() to follow the connection's pace".format(
                len(out),
                "socket backed up" if self._state == _CONNECTED else self.state,
                self.pending_limit))

    def _send(self, op, flags, fid, subject, reply, body):
        """A control frame, in order with the publishes (connected only)."""
        if not self._frame(op, flags, fid, subject, reply, body):
            self._overflow(lambda: self._frame(op, flags, fid, subject, reply, body),
                           16 + len(body))
        self._ctl_in_buf = True
        self._msgs_adjust -= 1                  # not an event (stats: OutBuf counts frames)

    def _on_pause(self, proto):
        if proto is self._proto and self._state == _CONNECTED:
            self._set_writable(False)

    def _on_resume(self, proto):
        if proto is self._proto and self._state == _CONNECTED:
            self._set_writable(True)

    async def wait_writable(self, timeout=None):
        """Return once the client is connected and its socket not backed up
        (at once if so).  A producer publishing in a tight loop awaits this
        now and then (and ``flush()`` at the end) to follow the connection's
        pace instead of filling ``pending_limit``."""
        if self._writable:
            if len(self._out) >= self._chunk // 2:
                self._flush_out()               # a big tick: write it now
            if self._writable:
                return
        await self._wait_writable(timeout, "writable")

    async def _wait_connected(self, timeout):
        if self._state == _CONNECTED:
            return
        await self._wait_writable(timeout, "connected")

    async def _wait_writable(self, timeout, what):
        """Wait until the client is connected and writable (``_set_writable``);
        ``what`` names the wait in the timeout's message."""
        if self._state == _CLOSED:
            raise ConnectionClosedError("client is closed")
        fut = self._loop.create_future()
        self._waiters.append(fut)
        await _await_with_timeout(self._loop, fut, timeout,
                                  "not {} within {} s ({})".format(what, timeout, self.state))

    # -- publishing ----------------------------------------------------------------------

    def publish(self, subject, /, data=b"", *, reply=None, **attributes):
        """Publish an event; not awaited: the frame is buffered and written
        with this loop tick's other output.  ``attributes`` are CloudEvents
        attributes and extensions (``type=``, ``source=``, ``id=``, ...);
        ``reply`` a reply subject for responders.  Raises ``SubjectError`` /
        ``EventError`` for an invalid event, ``PayloadTooLarge`` past the
        server's ``max_payload``, ``ClientBufferFull`` at ``pending_limit``
        and ``ConnectionClosedError`` once closed."""
        # the fast path: bytes on the subject validated last, no attributes:
        # the PUB frame of a default event is written in C
        # (no closure here: its cells would cost every call)
        if (attributes or reply is not None or subject is not self._vsubj
                or type(data) is not bytes or len(data) > self._max_data):
            self._publish_slow(subject, data, reply, attributes)
        elif not self._pub(subject, data, self._source):
            self._publish_overflow(subject, data)

    def _publish_overflow(self, subject, data):
        self._overflow(lambda: self._pub(subject, data, self._source), len(data) + 64)

    def _publish_slow(self, subject, data, reply, attributes):
        if attributes or type(data) is not bytes:
            self._publish_record(subject, self._event(subject, data, attributes).encode(), reply)
            return
        validate_subject(subject)
        if type(subject) is str:
            self._vsubj = self._publisher.vsubj = subject
        if len(data) > self._max_data:
            raise PayloadTooLarge("event of {} bytes (record) exceeds the server's max_payload={}"
                                  .format(len(data) + self._max_payload - self._max_data,
                                          self._max_payload))
        if reply is not None:
            validate_subject(reply)
        if not self._pub(subject, data, self._source, reply):
            self._overflow(lambda: self._pub(subject, data, self._source, reply), len(data) + 64)

    def publish_event(self, event, *, reply=None):
        """Publish an ``Event`` as it is (its routing subject, attributes and data)."""
        if event.routing_subject is None:
            raise FastflowError("cannot publish an event without a routing subject")
        self._publish_record(event.routing_subject, event.encode(), reply)

    def _event(self, subject, data, attributes):
        if self._source is not _DEFAULT_SOURCE and "source" not in attributes:
            attributes["source"] = self._source
        return Event(subject, data, **attributes)

    def _publish_record(self, subject, rec, reply, flags=0, rid=0):
        if len(rec) > self._max_payload:
            raise PayloadTooLarge("event of {} bytes (record) exceeds the server's max_payload={}"
                                  .format(len(rec), self._max_payload))
        if reply is not None:
            validate_subject(reply)
        if not self._frame(_PUB, flags, rid, subject, reply, rec):
            self._overflow(lambda: self._frame(_PUB, flags, rid, subject, reply, rec),
                           len(rec) + 16)

    async def publish_ack(self, subject, /, data=b"", *, timeout=None, **attributes):
        """Publish and wait until the server has handled it: returns a
        ``PubAck`` ``(seq, stream)``, the event's seq in the first stream
        that stored it (``(0, None)`` when none did), with ``duplicate``
        (that stream had this ``(source, id)`` already)."""
        rec = self._event(subject, data, attributes).encode()
        timeout = self.timeout if timeout is None else timeout
        await self._wait_connected(timeout)
        rid = self._new_id()
        fut = self._loop.create_future()
        self._pending[rid] = fut
        try:
            self._publish_record(subject, rec, None, _FL_ACK, rid)
            body = await _await_with_timeout(self._loop, fut, timeout,
                                             "no PUBACK for {!r} within {} s".format(subject,
                                                                                    timeout))
        finally:
            self._pending.pop(rid, None)
        seq = _u64.unpack_from(body)[0] if len(body) >= 8 else 0
        return PubAck(seq, body[8:].decode() or None, type(body) is _DuplicateAck)

    def publish_batch(self, subjects, datas, /, **attributes):
        """Publish many events with PUB_BATCH frames (one per
        ``max_payload`` bytes); not awaited.  ``subjects``: one subject for
        all (a str) or one per event (a list); each event gets its own id.
        An invalid subject or event raises before anything is sent."""
        if not attributes and type(subjects) is str:
            # default events on one subject: PUB frames written in C
            if type(datas) is not list and type(datas) is not tuple:
                datas = list(datas)
            if all(type(d) is bytes for d in datas):
                self.publish_many(subjects, datas)
                return
        for body, n in self._batch_bodies(subjects, datas, attributes):
            if not self._frame(_PUB_BATCH, 0, 0, b"", b"", body):
                self._overflow(lambda body=body: self._frame(_PUB_BATCH, 0, 0, b"", b"", body),
                               len(body) + 16)
            self._msgs_adjust += n - 1          # one frame, n events

    async def publish_batch_ack(self, subjects, datas, /, *, timeout=None, **attributes):
        """``publish_batch`` that waits until the server has handled every
        frame: returns ``(last_seq, count)`` (the seq of the last event a
        stream stored, 0 if none; how many were published)."""
        timeout = self.timeout if timeout is None else timeout
        bodies = self._batch_bodies(subjects, datas, attributes)
        await self._wait_connected(timeout)
        futs = []
        try:
            for body, n in bodies:
                rid = self._new_id()
                fut = self._pending[rid] = self._loop.create_future()
                futs.append((rid, fut))
                self._send(_PUB_BATCH, _FL_ACK, rid, b"", b"", body)
                self._msgs_adjust += n
            last = count = 0
            for _rid, fut in futs:
                body = await _await_with_timeout(self._loop, fut, timeout,
                                                 "no PUBACK for a PUB_BATCH within {} s".format(
                                                     timeout))
                seq, k = _batch_ack.unpack_from(body) if len(body) >= 12 else (0, 0)
                last = seq or last
                count += k
            return last, count
        finally:
            for rid, _f in futs:
                self._pending.pop(rid, None)

    def _batch_bodies(self, subjects, datas, attributes):
        """[(PUB_BATCH body, item count)], each body at most max_payload bytes."""
        datas = datas if isinstance(datas, (list, tuple)) else list(datas)
        if isinstance(subjects, (str, bytes)):
            one = subjects.decode() if isinstance(subjects, bytes) else subjects
            validate_subject(one)
            sb = one.encode()
            subs = None
        else:
            subs = subjects if isinstance(subjects, (list, tuple)) else list(subjects)
            if len(subs) != len(datas):
                raise ValueError("publish_batch: {} subjects for {} events".format(
                    len(subs), len(datas)))
        limit = self._max_payload
        plain = not attributes and self._source is _DEFAULT_SOURCE
        head = _item_head.pack
        out = []
        parts = []
        ap = parts.append
        size = count = 0
        subject = one if subs is None else None
        for i, d in enumerate(datas):
            if subs is not None:
                subject = subs[i]
                if isinstance(subject, bytes):
                    subject = subject.decode()
                sb = subject.encode()
            try:
                rec = (Event(subject, d) if plain else self._event(subject, d, dict(attributes))
                       ).encode()
            except (ValueError, TypeError) as exc:
                raise type(exc)("publish_batch item {}: {}".format(i, exc)) from None
            if len(rec) > limit:
                raise PayloadTooLarge("publish_batch item {}: {} bytes (record) exceed the "
                                      "server's max_payload={}".format(i, len(rec), limit))
            n = 6 + len(sb) + len(rec)
            if size + n > limit and parts:
                out.append((b"".join(parts), count))
                parts = []
                ap = parts.append
                size = count = 0
            ap(head(len(sb), len(rec)))
            ap(sb)
            ap(rec)
            size += n
            count += 1
        if parts:
            out.append((b"".join(parts), count))
        return out

    def publish_many(self, subject, datas):
        """Publish one default event per payload of ``datas`` (bytes) on
        one subject, each as its own PUB frame written in C (the fastest
        way to publish many; the server routes each frame in C)."""
        if type(subject) is not str or subject is not self._vsubj:
            validate_subject(subject)
        if type(datas) is not tuple:
            datas = tuple(datas)
        md = self._max_data
        for i, d in enumerate(datas):
            if type(d) is not bytes:
                raise TypeError("publish_many: datas[{}] must be bytes, got {}".format(
                    i, type(d).__name__))
            if len(d) > md:
                raise PayloadTooLarge("publish_many: datas[{}]: {} bytes exceed the server's "
                                      "max_payload={}".format(i, len(d), self._max_payload))
        pm = self._out.publish_many
        src = self._source
        done = pm(subject, datas, src)
        while done < len(datas):
            rest = datas[done:]
            got = [0]

            def retry(rest=rest, got=got):
                got[0] = pm(subject, rest, src)
                return got[0] > 0
            self._overflow(retry, len(rest[0]) + 64)
            done += got[0]

    async def flush(self, timeout=None):
        """Wait until the server has handled everything sent so far (a
        PING/PONG round trip)."""
        timeout = self.timeout if timeout is None else timeout
        loop = self._loop
        t0 = loop.time()
        await self._wait_connected(timeout)
        fut = loop.create_future()
        self._pongs.append(fut)
        self._send(Op.PING, 0, 0, b"", b"", b"")
        left = None if timeout is None else max(0.0, timeout - (loop.time() - t0))
        await _await_with_timeout(loop, fut, left, "flush: no PONG within {} s".format(timeout))


    # -- request / reply -------------------------------------------------------------------

    def _ensure_inbox(self):
        if self._inbox is not None:
            return
        self._inbox = "{}.{}.".format(self.inbox_prefix, _random_token())
        self._inbox_sid = self._new_id()
        self._handlers[self._inbox_sid] = self._on_inbox
        if self._state == _CONNECTED:
            self._send(Op.SUB, 0, self._inbox_sid, self._inbox + "*", b"", b"")

    def _on_inbox(self, mb, idx):
        subjects = mb.subjects
        for i in range(len(mb)) if idx is None else idx:
            fut = self._requests.pop(subjects[i], None)
            if fut is not None and not fut.done():
                fut.set_result(mb.event(i))

    def new_inbox(self):
        """A fresh unique subject (``<inbox_prefix>.<random>``) for custom
        reply flows."""
        return "{}.{}".format(self.inbox_prefix, _random_token())

    async def request(self, subject, /, data=b"", timeout=1.0, **attributes):
        """Publish a request and return the first answer (an ``Event``).
        ``NoRespondersError`` at once when no subscriber got it;
        ``asyncio.TimeoutError`` after ``timeout`` seconds;
        ``ConnectionClosedError`` if the connection is lost meanwhile.
        One inbox subscription (``<inbox_prefix>.<random>.*``) serves every
        request of the client."""
        if self._state == _CLOSED:
            raise ConnectionClosedError("client is closed")
        self._ensure_inbox()
        self._req_n += 1
        reply = self._inbox + str(self._req_n)
        fut = self._loop.create_future()
        self._requests[reply] = fut
        try:
            self.publish(subject, data, reply=reply, **attributes)
            return await _await_with_timeout(self._loop, fut, timeout,
                                             "request to {!r}: no answer within {} s".format(
                                                 subject, timeout))
        except NoRespondersError:
            raise NoRespondersError(subject) from None
        finally:
            self._requests.pop(reply, None)

    def respond(self, reply, /, data=b"", **attributes):
        """Answer a request: ``publish(reply, data, **attributes)``."""
        if not reply:
            raise ValueError("respond: the message has no reply subject")
        self.publish(reply, data, **attributes)


    # -- the receive path ----------------------------------------------------------------

    def _on_data(self, proto, data):
        if proto is not self._proto:
            return
        self._in_bytes += len(data)
        if proto.parser.bytes_in == 0 and data[:6] == b"INFO {":
            # a NATS server (or fastflow's NATS door) greets with a text line
            self._close_err = ConnectError(
                "{} speaks the NATS protocol, not fastflow's native protocol: connect "
                "fastflow.client to the native port (fastflow serve --port), or use a NATS "
                "client".format(self.server))
            proto.transport.abort()
            return
        try:
            items = proto.feed(data)
        except ProtocolError as exc:
            self._dispatch(proto, getattr(exc, "frames", ()))
            self._report(exc)
            self._close_err = ConnectionClosedError("malformed frame from {}: {}".format(
                self.server, exc))
            proto.transport.abort()
            return
        self._dispatch(proto, items)

    def _dispatch(self, proto, items):
        for item in items:
            try:
                if len(item) == 2:          # ("msgs", MsgBatch): a run of MSG frames
                    _kind, batch = item
                    self._on_msgs(batch)
                    continue
                op, flags, fid, _subject, _reply, body = item
                handler = _ON_FRAME.get(op)
                if handler is None:
                    self._report(ProtocolError(400, "unexpected {} frame from the server".format(
                        _OP_NAMES.get(op, op))))
                else:
                    handler(self, proto, flags, fid, body)
            except Exception as exc:        # a bug (callbacks' errors are caught nearer)
                self._report(exc)

    def _no_responders(self, subject):
        self._in_msgs -= 1
        fut = self._requests.pop(subject, None)
        if fut is not None and not fut.done():
            fut.set_exception(NoRespondersError(subject))

    # the handlers of the frames a server sends (but MSG: _on_msgs), by op in _ON_FRAME

    def _on_pong(self, proto, flags, fid, body):
        while self._pongs:
            fut = self._pongs.popleft()
            if not fut.done():
                fut.set_result(None)
                break

    def _on_ping(self, proto, flags, fid, body):
        if self._writable:
            self._send(Op.PONG, 0, fid, b"", b"", b"")
        else:
            self._out_bytes += 16
            proto.transport.write(_PONG_FRAME)

    def _on_ok(self, proto, flags, fid, body):
        fut = self._pending.get(fid)
        if fut is not None and not fut.done():
            fut.set_result(body)

    def _on_puback(self, proto, flags, fid, body):
        fut = self._pending.get(fid)
        if fut is not None and not fut.done():
            fut.set_result(_DuplicateAck(body) if flags & _FL_DUPLICATE else body)

    def _on_msg(self, proto, flags, fid, body):
        # MSG frames come in batches (FrameParser.batch_msgs); kept for safety
        self._report(ProtocolError(400, "unbatched MSG frame"))

    def _on_info(self, proto, flags, fid, body):
        info = _loads(body)
        if not isinstance(info, dict):
            self._report(ProtocolError(400, "bad INFO from the server: {!r}".format(body)))
            info = {}
        self.info = info
        mp = info.get("max_payload")
        if type(mp) is int and mp > 0:
            self._set_max_payload(mp)
        if proto.info is not None and not proto.info.done():
            proto.info.set_result(info)

    def _on_err(self, proto, flags, fid, body):
        code = _u16.unpack_from(body)[0] if len(body) >= 2 else 0
        message = body[2:].decode("utf-8", "replace")
        if code == ErrorCode.TIMEOUT and self._state == _CONNECTED:
            # after the handshake a 408 is a stale connection (PINGs missed),
            # not an authentication timeout: reconnecting is right
            exc = ServerError(code, message)
        else:
            exc = server_error(code, message)
        if flags & _FL_CLOSE:
            self._close_err = exc
        fut = self._pending.get(fid) if fid else None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
        elif fid and fid == self._inbox_sid and self._inbox is not None:
            # the inbox subscription was refused: no request can get an answer
            self._handlers.pop(fid, None)
            self._inbox = None
            for fut in list(self._requests.values()):
                if not fut.done():
                    fut.set_exception(exc)
            self._requests.clear()
            self._report(exc)
        elif fid and fid in self._subs:     # a refused SUB (the id is its sid)
            sub = self._subs.pop(fid)
            self._handlers.pop(fid, None)
            sub._close(exc)
            self._report(exc)
        else:
            self._report(exc)
        if flags & _FL_CLOSE:
            proto.transport.close()

    def _report(self, exc):
        self._errors += 1
        cb = self.error_callback
        if cb is None:
            if isinstance(exc, (ServerError, ConnectionError)):
                log.warning("fastflow client %s: %s", self.server, exc)
            else:
                log.error("fastflow client %s: %s", self.server, _describe(exc), exc_info=exc)
            return
        try:
            r = cb(exc)
            if inspect.isawaitable(r):
                self._spawn(_swallow(r))
        except Exception:
            log.exception("fastflow client: error_callback raised")

    def _call_back(self, cb, *args):
        if cb is None:
            return
        try:
            r = cb(*args)
            if inspect.isawaitable(r):
                self._spawn(_swallow(r))
        except Exception as exc:
            self._report(exc)

    # -- losing the connection -------------------------------------------------------------

    def _on_lost(self, proto, exc):
        if proto is not self._proto:
            return
        self._proto = None
        self._transport = None
        self._writable = False
        self._flush_scheduled = False
        server = self.server
        err = self._close_err
        self._close_err = None
        if err is None:
            err = ConnectionClosedError("connection to {} lost{}".format(
                server, ": {}".format(exc) if exc else ""))
        elif not isinstance(err, ConnectionError):
            cause = err
            err = ConnectionClosedError("connection to {} closed by the server: {}".format(
                server, cause))
            err.__cause__ = cause
            err.server_error = cause
        out = self._out
        if self._ctl_in_buf:            # SUBs are resent, requests fail: drop them all
            self._lost_on_disconnect += len(out)
            out.clear()
            self._ctl_in_buf = False
        out.max_pending = self.pending_limit
        self._fail_pending(err)
        if self._state != _CONNECTED:
            return                      # a handshake fails by itself (first or reconnect)
        cause = getattr(err, "server_error", None)
        self._call_back(self.disconnected_callback)
        if self.reconnect and self.max_reconnect_attempts != 0 and not _is_auth_error(cause):
            self._state = _RECONNECTING
            self._spawn(self._reconnect_loop(cause or err))
        else:
            self._finish_close(cause or err)

    def _fail_pending(self, err):
        pend = list(self._pending.values()) + list(self._pongs) + list(self._requests.values())
        self._pending.clear()
        self._pongs.clear()
        self._requests.clear()
        for fut in pend:
            if not fut.done():
                fut.set_exception(err)
                fut.add_done_callback(_consume)

    async def _reconnect_loop(self, reason):
        attempt = 0
        last = reason
        while self._state == _RECONNECTING:
            if 0 <= self.max_reconnect_attempts <= attempt:
                self._finish_close(ConnectionClosedError(
                    "gave up reconnecting to {} after {} attempt{}: {}".format(
                        self.server, attempt, "" if attempt == 1 else "s", _describe(last))))
                return
            wait = min(self.reconnect_wait_max, self.reconnect_wait * (2 ** min(attempt, 16)))
            if attempt:
                wait *= 0.5 + random.random() / 2              # jitter
            await asyncio.sleep(wait)
            if attempt and len(self._servers) > 1:
                self._server_i = (self._server_i + 1) % len(self._servers)
            attempt += 1
            try:
                await self._connect_once(self._servers[self._server_i])
            except AuthenticationError as exc:
                self._finish_close(exc)
                return
            except (OSError, asyncio.TimeoutError, FastflowError) as exc:
                last = exc
                log.debug("fastflow client: reconnect attempt %d to %s failed: %s", attempt,
                          self.server, _describe(exc))
                continue
            self._reconnects += 1
            self._call_back(self.reconnected_callback)
            return

    def _finish_close(self, err=None):
        if self._closed_fut is not None:
            return
        self._state = _CLOSED
        self._writable = False
        self._out.closed = True
        exc = err if isinstance(err, ConnectionError) else ConnectionClosedError(
            "client closed{}".format(": {}".format(_describe(err)) if err is not None else ""))
        if err is not None and exc is not err:
            exc.__cause__ = err
        self._fail_pending(exc)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(exc)
                w.add_done_callback(_consume)
        for sub in list(self._subs.values()):
            sub._close()
        self._subs.clear()
        self._handlers.clear()
        current = asyncio.current_task() if self._loop.is_running() else None
        for t in list(self._tasks):
            if t is not current:
                t.cancel()
        self._closed_fut = self._loop.create_future()
        self._closed_fut.set_result(None)
        if err is not None:
            self._report(exc)
        self._call_back(self.closed_callback)

    # -- closing ---------------------------------------------------------------------------

    async def close(self):
        """Close now: what is buffered is written first (best effort);
        waiting requests fail with ``ConnectionClosedError``; subscription
        iterators end.  Idempotent."""
        if self._state == _CLOSED:
            return
        proto, transport = self._proto, self._transport
        if self._writable:
            self._flush_out()
        self._finish_close()
        if transport is not None:
            transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(proto.lost), 2.0)
            except asyncio.TimeoutError:
                transport.abort()

    async def drain(self, timeout=None):
        """Unsubscribe everything, wait until the server has sent what it
        had in flight to us and coroutine callbacks have handled their
        queues, then close."""
        if self._state == _CLOSED:
            return
        timeout = self.timeout if timeout is None else timeout
        subs = list(self._subs.values())
        if self._state == _CONNECTED:
            for sub in subs:
                self._send(Op.UNSUB, 0, sub.sid, b"", b"", b"")
            try:
                await self.flush(timeout)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        for sub in subs:
            self._subs.pop(sub.sid, None)
            self._handlers.pop(sub.sid, None)
            sub._close()
        pumps = [s._task for s in subs if s._task is not None and not s._task.done()]
        if pumps:
            await asyncio.wait(pumps, timeout=timeout)
        await self.close()


_PONG_FRAME = struct.pack("<IBBHIHH", 12, FRAME_VERSION, Op.PONG, 0, 0, 0, 0)
_OP_NAMES = {int(op): op.name for op in Op}

# op -> the Client method that handles a frame of it
_ON_FRAME = {Op.PONG: Client._on_pong, Op.PING: Client._on_ping, Op.OK: Client._on_ok,
             Op.PUBACK: Client._on_puback, Op.ERR: Client._on_err, Op.MSG: Client._on_msg,
             Op.INFO: Client._on_info}


def _consume(fut):
    # mark a future's exception as retrieved (nobody may be waiting for it)
    if not fut.cancelled():
        fut.exception()


async def _swallow(aw):
    try:
        await aw
    except Exception:
        log.exception("fastflow client: a callback coroutine raised")


def _random_token():
    return os.urandom(12).hex()


def _describe(exc):
    s = str(exc)
    return "{}: {}".format(type(exc).__name__, s) if s else type(exc).__name__
