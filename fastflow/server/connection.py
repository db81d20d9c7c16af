"""One client connection, whatever its protocol: the lifecycle every front
door shares (docs/server.md).

A ``Connection`` is the ``asyncio.Protocol`` of one socket.  It reads
(``data_received`` -> the door's parser -> the door's handlers), runs the
authentication (CONNECT checked inline, or in a thread while reading
pauses), owns the output buffer (``OutBuf``: written with one
``transport.write`` per loop tick), cuts slow consumers, keeps the
subscriptions, PINGs idle clients, closes and drains, and counts for
monitoring.

What a protocol says on the wire lives in its own module, as a
``DoorProtocol``: its parser, its handler table and the few frames the
lifecycle needs in that protocol's words (greeting, PING, OK/ERR, the
reason a connection closes).  ``native.py`` and ``nats.py`` are the two
doors; a new one (HTTP, MQTT) is one more module with a parser and a
handler table, served by ``Connection(server, ItsProtocol)``.

The hot path stays in C: the parser routes every PUB it may (no ACK, not
verbose) to the engine itself, which appends the deliveries to the
subscribers' OutBufs; Python sees the other frames, in one list per read.
"""

import asyncio
import functools
import json
import logging
import time

from fastflow._impl import OutBuf
from fastflow.protocol import ConnState
from fastflow.server.auth import AuthError
from fastflow.server.quotas import QuotaExceeded

__all__ = ("CLOSED", "CLOSING", "READY", "Connection", "DoorProtocol", "connect_json")

log = logging.getLogger("fastflow.server")

# the states compared on every read and every frame (module globals: an
# enum attribute lookup there costs ~100 ns)
READY = ConnState.READY
CLOSING = ConnState.CLOSING
CLOSED = ConnState.CLOSED

_CLOSE_GRACE = 5.0                      # seconds a closing transport may take to flush
_SLOW_GRACE = 1.0                       # ... when the peer is a slow consumer

FLUSH_AT = 256 << 10                    # bytes of output written before the tick ends

CONNECT_DEPTH = 4                       # nesting a CONNECT object may have (it is flat)


def _depth(v, limit):
    """Whether ``v`` (parsed JSON) nests at most ``limit`` levels."""
    if limit < 0:
        return False
    if isinstance(v, dict):
        return all(_depth(x, limit - 1) for x in v.values())
    if isinstance(v, list):
        return all(_depth(x, limit - 1) for x in v)
    return True


def conflate_option(value, where):
    """A door's conflate option (a query parameter, a user property, a
    JSON field) as a bool: ``1``/``true``/``0``/``false`` (any case) or a
    JSON boolean; ValueError naming ``where`` and the value otherwise."""
    if value is True or value is False:
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "0", "false"):
        return value.lower() in ("1", "true")
    raise ValueError("{} is 1, true, 0 or false, got {!r}".format(
        where, value[:32] if isinstance(value, str) else value))


def connect_json(body):
    """The object of a CONNECT body (every door); ValueError naming what is
    wrong with it: not JSON, not an object, or nested deeper than
    ``CONNECT_DEPTH`` levels (refused before Python's recursion limit)."""
    if not body:
        return {}
    try:
        req = json.loads(body)
    except RecursionError:
        raise ValueError("nested deeper than {} levels".format(CONNECT_DEPTH)) from None
    except ValueError as exc:
        raise ValueError("the body is not valid JSON: {}".format(exc)) from None
    if not isinstance(req, dict):
        raise ValueError("the body must be a JSON object, got {}".format(type(req).__name__))
    if not _depth(req, CONNECT_DEPTH):
        raise ValueError("nested deeper than {} levels".format(CONNECT_DEPTH))
    return req


def _peer_host(transport):
    """The peer's address without its port (the login back-off's key)."""
    p = transport.get_extra_info("peername")
    return p[0] if isinstance(p, tuple) and p else str(p)


def _peer(transport):
    p = transport.get_extra_info("peername")
    if isinstance(p, tuple) and len(p) >= 2:
        host = p[0]
        return "[{}]:{}".format(host, p[1]) if ":" in host else "{}:{}".format(host, p[1])
    return str(p) if p else "?"


def _tls_info(transport):
    """The TLS version, cipher and client certificate subject of
    ``transport`` (None: plain TCP)."""
    sslobj = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    tls = {"version": sslobj.version(), "cipher": (sslobj.cipher() or ("",))[0]}
    cert = transport.get_extra_info("peercert")
    if cert:
        tls["subject"] = dict(x[0] for x in cert.get("subject", ()) if x)
    return tls


class DoorProtocol:
    """What a front door's protocol adds to a ``Connection``: its parser,
    its handler table (``handle``) and the frames the shared lifecycle
    writes in this protocol's words.  One instance per connection
    (``self.conn``); a subclass per door.

    The lifecycle names errors by the native protocol's codes
    (``fastflow.protocol.ErrorCode``: 401, 408, 429, 503, ...); each door
    says them in its own words (``close_data``)."""

    name = ""                           # the door (monitoring: a connection's "door")
    parser_error = Exception            # what the door's parser raises on a bad stream
    ready_note = ""                     # in the log line of a client that is ready
    # request/response (HTTP): a client that does not read its answers has
    # its reading paused; it is not a stalled subscriber slowing publishers
    answers_only = False
    # publishes are checked against the catalog's bound schemas (docs/catalog.md)
    checks_schemas = False

    def __init__(self, conn):
        self.conn = conn
        self.server = conn.server
        self.cfg = conn.cfg
        self.flow = conn.flow
        self.loop = conn.loop
        self.outbuf = conn.outbuf
        self.parser = None              # the door's parser (fed by Connection.data_received)

    def set_flow(self, flow):
        """Serve the connection from ``flow`` (its account's engine) from now on."""
        self.flow = flow
        router = getattr(self.parser, "router", None)
        if router is not None:
            self.parser.router = flow

    def validates(self):
        """Whether this door checks publishes against the catalog's bound
        schemas (its parser then hands every publish to Python): a door
        that does (``checks_schemas``) while a schema is bound."""
        return self.checks_schemas and self._schemas() is not None

    def _schemas(self):
        """The catalog's schema store while a schema is bound (else None)."""
        catalog = self.conn.account.catalog
        store = catalog.schemas if catalog is not None else None
        return store if store is not None and store.active else None

    def handle(self, items):
        """Act on the parser's entries ``items``, in order, until the
        connection closes or an asynchronous CONNECT check holds the rest
        (``Connection.authenticate``)."""
        raise NotImplementedError

    def started(self):
        """The connection was accepted and greeted (a TLS upgrade starts here)."""

    def refused(self, data):
        """The first bytes read: True if they close the connection (a
        client of another protocol) instead of going to the parser."""
        return False

    def greet(self):
        """Write the greeting a client gets on connect (INFO)."""
        raise NotImplementedError

    def refusal(self, code, message):
        """The bytes that tell a client refused at connect why."""
        return self.close_data(code, message, 0)

    def close_data(self, code, message, rid):
        """The bytes that tell the client why it is closed."""
        raise NotImplementedError

    def goodbye(self):
        """The bytes that end a connection closed without an error (drain,
        an exchange the client ended): WebSocket's close frame; none by
        default."""
        return b""

    def ping(self):
        """Write a PING (the connection is idle)."""
        raise NotImplementedError

    def err(self, code, message, rid=0):
        """Write an error answer to request ``rid`` (the connection stays)."""
        raise NotImplementedError

    def revoked(self, sid, pattern, why):
        """Subscription ``sid`` on ``pattern`` was ended: its user's
        permissions no longer allow it (the admin API changed them)."""
        self.err(403, "permission denied: subscription {} to {!r} ended: {}".format(
            sid, pattern, why), sid if isinstance(sid, int) else 0)

    def protocol_error(self, exc):
        """The (code, message) a connection is closed with for a parser error."""
        raise NotImplementedError

    def options(self, req):
        """Take the door's CONNECT options from ``req`` (set ``conn.verbose``)."""

    def welcome(self, rid):
        """Answer an accepted CONNECT."""

    def stats(self, d):
        """Add the door's fields to the connection's monitoring entry ``d``."""

    def conflating_only(self):
        """Whether every subscription conflates, when the door keeps its own
        table of them (MQTT); None: ask ``conn.subs``."""
        return None

    def subscription_names(self):
        """The subscriptions an advisory names for this connection, in the
        door's words (MQTT: its session's filters); None: the connection's
        own (native, NATS: their subjects)."""
        return None

    def tick(self, now):
        """Once a second on a ready connection, before the PING check: True
        if the door closed it (HTTP: idle keep-alive, slow requests)."""
        return False

    def ended(self):
        """The connection is gone (its subscriptions removed): what the door
        does then (MQTT: the will, the session kept for its client)."""


_NOT_PAUSED = frozenset()           # a connection's reasons to pause, while it has none


class Connection(asyncio.Protocol):
    """One client connection, served by the door protocol ``door``
    (a ``DoorProtocol`` subclass).

    Slotted: a device fleet keeps many thousands of idle connections, and
    every byte of one is paid that many times (docs/mqtt.md, "Memory")."""

    __slots__ = ("server", "cfg", "account", "flow", "loop", "id", "state", "transport", "peer",
                 "peer_host", "tls", "name", "lang", "version", "user", "principal",
                 "responses", "echo", "verbose", "subs", "tasks", "outbuf", "framing",
                 "proto", "door", "parser", "parser_error", "handle", "_preauth", "_pend",
                 "_flush_scheduled", "upgrading", "_pause", "_stash", "_timer", "started",
                 "t0", "last_in", "last_ping", "pings_out", "write_paused", "in_msgs_py",
                 "close_reason", "ended_out", "quota_key")

    def __init__(self, server, door):
        self.server = server
        cfg = self.cfg = server.config
        self.account = server.accounts.default  # (its principal's, once authenticated)
        self.flow = server.flow
        self.loop = server.loop
        self.id = server.next_client_id()
        self.state = ConnState.NEW
        self.transport = None
        self.peer = "?"
        self.peer_host = "?"
        self.tls = None
        self.name = ""
        self.lang = ""
        self.version = ""
        self.user = None
        self.principal = None
        self.responses = None           # ResponsePermits (allow_responses) or None
        self.echo = True
        self.verbose = False
        self.subs = {}                  # sid -> (WireTarget, pattern, queue)
        self.tasks = None               # replays, fetches, checks under way (a set)
        self.outbuf = OutBuf(cfg.max_pending, self._on_data)
        # a burst routed within one tick (one big read of a publisher) is
        # written as it grows, not held until the tick ends: only what the
        # kernel does not take counts against max_pending
        self.outbuf.flush_at = min(FLUSH_AT, cfg.max_pending // 4) if cfg.max_pending \
            else FLUSH_AT
        self.outbuf.on_flush = self.flush
        self.framing = None             # output -> the bytes written (WebSocket: one frame)
        self.switch(door(self))
        self._preauth = 0               # partial input held before CONNECT (server budget)
        self._pend = 0                  # pending output last counted in the server's total
        self._flush_scheduled = False
        self.upgrading = False          # a TLS handshake after a plain greeting is under way
        self._pause = _NOT_PAUSED       # why reading is paused: "auth", "stall", "drain", "tls"
        self._stash = None              # frames that came during an asynchronous CONNECT
        self._timer = None              # the auth timeout, then the close grace
        self.started = time.time()
        self.t0 = self.loop.time()
        self.last_in = self.t0
        self.last_ping = self.t0
        self.pings_out = 0
        self.write_paused = False
        self.in_msgs_py = 0             # publishes handled in Python (PUB+ACK, batches, verbose)
        self.close_reason = None
        self.ended_out = [0, 0]         # events, payload bytes of its ended subscriptions
        self.quota_key = None           # (account, user) it counts for (quotas)

    def switch(self, proto):
        """Serve the connection with the door protocol ``proto`` from now on
        (an HTTP connection upgraded to WebSocket, or answering with an
        event stream): its parser, its handlers, its words."""
        self.proto = proto
        self.door = proto.name
        self.parser = proto.parser
        self.parser_error = proto.parser_error
        self.handle = proto.handle

    # -- lifecycle ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peer = _peer(transport)
        self.peer_host = _peer_host(transport)
        srv = self.server
        cfg = self.cfg
        self.tls = _tls_info(transport)
        if srv.stopping:
            self.state = CLOSED
            transport.abort()
            return
        limit = srv.max_connections
        if limit and len(srv.conns) >= limit:
            srv.n_rejected += 1
            self.state = CLOSED
            log.warning("client %s refused: maximum connections (%d) reached", self.peer, limit)
            transport.write(self.proto.refusal(
                429, "maximum connections ({}) reached".format(limit)))
            transport.close()
            return
        srv.add_connection(self)
        try:
            transport.set_write_buffer_limits(high=cfg.write_high_water, low=cfg.write_low_water)
        except (AttributeError, NotImplementedError):
            pass
        self.proto.greet()
        self._timer = self.loop.call_later(cfg.auth_timeout, self._auth_timeout)
        log.debug("client %d connected from %s%s", self.id, self.peer,
                  " (TLS {})".format(self.tls["version"]) if self.tls else "")
        self.proto.started()

    def connection_lost(self, exc):
        was = self.state
        self.state = CLOSED
        self._teardown()
        if was < CLOSING:
            self.close_reason = self.close_reason or ("connection lost: {}".format(exc) if exc
                                                      else "client closed")
        log.debug("client %d (%s) closed: %s", self.id, self.peer, self.close_reason)

    def _teardown(self):
        """Forget everything the connection holds in the engine (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ob = self.outbuf
        ob.closed = True
        ob.on_data = None
        if self.subs:
            # one bulk removal: the matcher's cache is invalidated once
            self.flow.remove_many([t.handle for t, _p, _q in self.subs.values()])
            for t, _p, _q in self.subs.values():
                self._ended(t)
        self.subs.clear()
        self._preauth_held(0)
        self._pending_now(0)
        if self.tasks:
            for task in list(self.tasks):
                task.cancel()
            self.tasks.clear()
        self.server.remove_connection(self)
        try:
            self.proto.ended()
        except Exception:
            log.exception("client %d: the %s door's end failed", self.id, self.door)

    def close(self, code=None, message=None, rid=0, flush=True, grace=_CLOSE_GRACE):
        """Close the connection: the pending output (``flush``), then the
        door's error ``code`` (if given; native: ERR with flag CLOSE), then
        the socket."""
        if self.state >= CLOSING:
            return
        self.state = CLOSING
        self.close_reason = message or "closed by the server"
        data = self.outbuf.take() if flush and not self.outbuf.overflow else b""
        if data and self.framing is not None:
            data = self.framing(data)
        self.outbuf.clear()
        data += self.proto.close_data(code, message, rid) if code is not None \
            else self.proto.goodbye()
        self._teardown()
        tr = self.transport
        try:
            if data:
                tr.write(data)
            tr.close()
        except (OSError, RuntimeError):     # the transport is gone already
            pass
        self._timer = self.loop.call_later(grace, self._abort)

    def _abort(self):
        self._timer = None
        if self.state != CLOSED:
            self.transport.abort()

    def _auth_timeout(self):
        self._timer = None
        if self.state < READY:
            self.server.n_auth_failures += 1
            log.info("client %d (%s): authentication timeout", self.id, self.peer)
            self.close(408, "authentication timeout: no CONNECT within {:g} s".format(
                self.cfg.auth_timeout))

    def expect_connect(self):
        """Wait for a CONNECT again, under the auth timeout (a door switched
        to a protocol that has one: WebSocket carrying the native protocol)."""
        self.state = ConnState.NEW
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(self.cfg.auth_timeout, self._auth_timeout)

    def pause(self, why):
        if not self._pause and self.state < CLOSING:
            try:
                self.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass
        if self._pause is _NOT_PAUSED:
            self._pause = set()
        self._pause.add(why)

    def resume(self, why):
        if why not in self._pause:
            return
        self._pause.discard(why)
        if not self._pause and self.state < CLOSING:
            try:
                self.transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

    # -- TLS after a plain-text greeting (NATS: INFO, then the client's handshake) -------

    def start_tls(self):
        """Write the greeting now, in plain text, and upgrade the connection
        to TLS: nothing more is read until the handshake is done, and the
        output waits for it (a client that writes instead is the door's to
        refuse, in ``refused``)."""
        self.upgrading = True
        self.transport.write(self.outbuf.take())
        self.pause("tls")
        self.track(self.loop.create_task(self._start_tls()))

    async def _start_tls(self):
        cfg = self.cfg
        old = self.transport
        try:
            tr = await self.loop.start_tls(old, self, self.server.ssl_context, server_side=True,
                                           ssl_handshake_timeout=cfg.tls_handshake_timeout)
        except Exception as exc:            # (CancelledError: the connection went first)
            log.info("client %d (%s): TLS handshake failed: %s", self.id, self.peer,
                     exc or type(exc).__name__)
            self.server.n_auth_failures += 1
            self.close_reason = "TLS handshake failed: {}".format(exc or type(exc).__name__)
            self.state = CLOSED
            self._teardown()
            old.abort()
            return
        self.upgrading = False
        self.transport = tr
        self.tls = _tls_info(tr)
        try:
            tr.set_write_buffer_limits(high=cfg.write_high_water, low=cfg.write_low_water)
        except (AttributeError, NotImplementedError):
            pass
        self.resume("tls")
        if len(self.outbuf):
            self.flush()

    # -- output ------------------------------------------------------------------------

    def _on_data(self):
        """OutBuf went from empty to non-empty: flush once, at the end of this tick."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self):
        """Write the pending output with one transport.write; cut the
        connection as a slow consumer if its pending output passed
        ``max_pending``."""
        self._flush_scheduled = False
        if self.state >= CLOSING or self.upgrading:    # (upgrading: written after it)
            return
        ob = self.outbuf
        if ob.overflow:
            self.slow_consumer("pending output over max_pending ({} bytes)".format(
                self.cfg.max_pending))
            return
        if self.responses is not None and self.responses.pending:
            self.responses.take()       # the requests going out: their permits start now
        data = ob.take()
        if not data:
            return
        if self.framing is not None:
            data = self.framing(data)
        tr = self.transport
        tr.write(data)
        mp = self.cfg.max_pending
        wbs = tr.get_write_buffer_size()
        if mp:
            if wbs > mp:
                self.slow_consumer("pending output over max_pending ({} bytes)".format(mp))
                return
            ob.max_pending = max(1, mp - wbs)   # what may still queue up here
        self._pending_now(wbs)

    def pending_bytes(self):
        n = len(self.outbuf) + self.outbuf.kept_bytes
        if self.transport is not None and self.state < CLOSED:
            try:
                n += self.transport.get_write_buffer_size()
            except (OSError, RuntimeError):
                pass
        return n

    def pause_writing(self):
        self.write_paused = True
        # behind: conflating subscriptions keep the latest message per subject
        # (OutBuf.flush_kept writes them when the transport takes more)
        self.outbuf.behind = True
        if self.proto.answers_only:
            self.pause("write")
            return
        if self.conflating_only():
            return                      # its output does not grow: publishers go on
        self.server.stalled(self)

    def resume_writing(self):
        self.write_paused = False
        self.outbuf.behind = False
        self.resume("write")
        self.server.unstalled(self)
        if self.state < CLOSING:
            self._pending_now(self.pending_bytes())     # what the kernel took
        mp = self.cfg.max_pending
        if mp and self.state < CLOSING:
            self.outbuf.max_pending = max(1, mp - self.transport.get_write_buffer_size())
        if self.outbuf.kept_messages and self.state < CLOSING:
            self.outbuf.flush_kept(self.flow.matcher)

    def conflating_only(self):
        """Whether every subscription of the connection conflates (then a
        full socket does not pause publishers: what it keeps is bounded by
        its subjects, and by max_pending)."""
        only = self.proto.conflating_only()
        if only is not None:
            return only
        return bool(self.subs) and all(e[0].conflate for e in self.subs.values())

    def slow_consumer(self, reason):
        """Cut the connection: the door's error 503, close, advisory, counted."""
        if self.state >= CLOSING:
            return
        srv = self.server
        srv.n_slow_consumers += 1
        pending = self.pending_bytes()
        log.warning("client %d (%s%s%s): slow consumer, %s; %d bytes pending: closed", self.id,
                    self.peer, " " + self.name if self.name else "",
                    " user " + self.user if self.user else "", reason, pending)
        subs = self.proto.subscription_names()
        if subs is None:
            subs = [p for _t, p, _q in self.subs.values()]
        info = {"client_id": self.id, "peer": self.peer, "name": self.name, "user": self.user,
                "reason": reason, "pending_bytes": pending, "max_pending": self.cfg.max_pending,
                "subscriptions": subs}
        self.close(503, "slow consumer: " + reason, flush=False, grace=_SLOW_GRACE)
        try:
            self.flow.advise("slow_consumer", info)
        except Exception:
            log.exception("advisory for slow consumer %d failed", self.id)

    # -- input -------------------------------------------------------------------------

    def data_received(self, data):
        if self.state >= CLOSING or self.server.stopping:
            return                      # not accepted: nothing was acknowledged
        self.last_in = self.loop.time()
        self.pings_out = 0
        if self.parser.bytes_in == 0 and self.proto.refused(data):
            return
        try:
            items = self.parser.feed(data)
        except self.parser_error as exc:
            if exc.frames:              # the frames ahead of the bad one count
                self.handle(exc.frames)
            if self.state >= CLOSING:
                return
            self.server.n_protocol_errors += 1
            code, message = self.proto.protocol_error(exc)
            log.info("client %d (%s): protocol error: %s", self.id, self.peer, exc)
            self.close(code, message)
            return
        except Exception as exc:
            log.exception("client %d: error while reading", self.id)
            self.close(500, "internal error: {}".format(exc))
            return
        if items:
            if self._stash is not None:
                self._stash.extend(items)
            else:
                self.handle(items)
        if self.state < READY and self._preauth_held(self.parser.buffered):
            self.server.n_protocol_errors += 1
            log.warning("client %d (%s): unauthenticated input over max_preauth_bytes (%d "
                        "bytes for all clients): closed", self.id, self.peer,
                        self.cfg.max_preauth_bytes)
            self.close(503, "server busy: input of unauthenticated clients over "
                       "max_preauth_bytes ({} bytes)".format(self.cfg.max_preauth_bytes))
            return
        srv = self.server
        if srv.stalled_conns and "stall" not in self._pause and self.is_publisher():
            srv.pause_publisher(self)
        ing = self.flow.ingress
        if ing is not None and "quota" not in self._pause:
            wait = ing.wait()
            if wait > 0:                # the account's ingress quota is in debt: pay it back
                self.pause("quota")
                srv.quotas.throttled_for(self.account.name, wait)
                self.loop.call_later(wait, self.resume, "quota")

    def _preauth_held(self, n):
        """Count ``n`` bytes of partial input held before CONNECT in the
        server's total; True if that total is now over max_preauth_bytes."""
        srv = self.server
        srv.preauth_bytes += n - self._preauth
        self._preauth = n
        cap = self.cfg.max_preauth_bytes
        return bool(n and cap and srv.preauth_bytes > cap)

    def _pending_now(self, n):
        """Count ``n`` bytes of pending output in the server's total and cut
        the largest connections if it passed max_pending_total."""
        srv = self.server
        srv.pending_total += n - self._pend
        self._pend = n
        cap = self.cfg.max_pending_total
        if n and cap and srv.pending_total > cap:
            srv.enforce_pending_total()

    def is_publisher(self):
        return self.parser.pubs_in > 0 or self.in_msgs_py > 0

    # -- CONNECT -----------------------------------------------------------------------

    def authenticate(self, creds, req, rest, rid):
        """Check ``creds`` (``user``/``password`` or ``token``), then
        ``connected(req, ...)``; True when the entries that came after
        the CONNECT (the iterator ``rest``) must wait for the check (scrypt
        runs in a thread) or the connection closed.  Every door's CONNECT
        ends here."""
        auth = self.server.auth
        wait = 0.0
        if auth.required:
            wait = self.server.throttle.reserve(self.peer_host)
            if wait is None:
                self.server.n_auth_failures += 1
                log.info("client %d (%s): refused unchecked: too many failed logins from %s",
                         self.id, self.peer, self.peer_host)
                self.close(401, "authentication failed: too many failed logins from this "
                                "address, try again later", rid)
                return True
        if wait or auth.needs_kdf(creds):
            self.state = ConnState.AUTHING
            self._stash = list(rest)
            self.pause("auth")
            self.track(self.loop.create_task(self._authenticate_async(creds, req, rid, wait)))
            return True
        try:
            principal = auth.check(creds)
        except AuthError as exc:
            self._auth_failed(exc, rid)
            return True
        self.connected(req, principal, rid)
        return False

    async def _authenticate_async(self, creds, req, rid, wait=0.0):
        if wait:                        # the back-off after failed logins from this address
            await asyncio.sleep(wait)
            if self.state >= CLOSING:
                return
        try:
            principal = await self.server.auth.authenticate(creds, self.loop)
        except AuthError as exc:
            self._auth_failed(exc, rid)
            return
        if self.state >= CLOSING:
            return
        self.connected(req, principal, rid)
        stash, self._stash = self._stash, None
        if stash:
            self.handle(stash)
        self.resume("auth")

    def _auth_failed(self, exc, rid):
        self.server.n_auth_failures += 1
        self.server.throttle.failed(self.peer_host)
        log.info("client %d (%s): %s", self.id, self.peer, exc)
        self.close(401, str(exc), rid)

    def connected(self, req, principal, rid, answer=True):
        """CONNECT ``req`` accepted for ``principal``: the connection is
        ready (``answer``: the door answers request ``rid``)."""
        self.principal = principal
        self.user = principal.name if principal.kind == "user" else (
            "token:" + principal.name if principal.kind == "token" else None)
        self.name = str(req.get("name") or "")[:256]
        self.lang = str(req.get("lang") or "")[:64]
        self.version = str(req.get("version") or "")[:64]
        self.echo = bool(req.get("echo", True))
        self.proto.options(req)
        try:
            self._set_principal(principal)
        except QuotaExceeded as exc:
            log.info("client %d (%s): %s", self.id, self.peer, exc)
            self.close(429, str(exc), rid)
            return
        self._preauth_held(0)
        self.state = READY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if answer:
            self.proto.welcome(rid)
        log.debug("client %d (%s) ready%s: name=%r lang=%r version=%r user=%r", self.id,
                  self.peer, self.proto.ready_note, self.name, self.lang, self.version,
                  self.user)

    def _set_principal(self, principal):
        """The publish permissions go to the parser (checked in C), with the
        connection's response permits (``allow_responses``)."""
        self.principal = principal
        if principal.kind != "none":
            self.server.throttle.succeeded(self.peer_host)
        acct = self.server.accounts.get(principal.account)
        if acct is None:                # (the config names only accounts it has)
            raise AuthError("authentication failed: no account {!r}".format(principal.account))
        if acct is not self.account and self.subs:
            raise AuthError("authentication failed: the connection belongs to account "
                            "{!r}".format(self.account.name))
        user = principal.name if principal.kind != "none" else None
        key = (acct.name, user)
        if key != self.quota_key:
            quotas = self.server.quotas
            quotas.join(*key)           # (QuotaExceeded: at the limit)
            if self.quota_key is not None:
                quotas.leave(*self.quota_key)
            self.quota_key = key
        if acct is not self.account:
            self.account = acct
            self.flow = acct.flow
            self.proto.set_flow(acct.flow)
        perms = principal.permissions
        self.responses = perms.response_permits()
        self.parser.pub_allow = perms.pub_allow
        self.parser.pub_deny = perms.pub_deny
        self.parser.resp_check = self.responses
        # verbose: every PUB answered in Python; so is every PUB a bound schema may refuse
        self.parser.route_pubs = not self.verbose and not self.proto.validates()

    def may_publish(self, subject, use=True):
        """Whether this connection may publish on ``subject`` (valid): its
        permissions, or a response permit (``use``: spend it)."""
        perms = self.principal.permissions
        if perms.pub_allow is None and perms.pub_deny is None:
            return True
        if perms.can_publish(subject):
            return True
        return self.responses is not None and self.responses(subject, use)

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, sid, pattern, queue, target, conflate=False):
        """Subscribe ``target`` (a wire target writing into this
        connection's OutBuf) to ``pattern`` as subscription ``sid``;
        ``conflate`` (or the config's ``[conflate] subjects``): it keeps
        only the latest message per subject while the connection is behind."""
        target.conflate = conflate or self.server.conflates(pattern)
        target.owner = self
        if self.responses is not None:
            target.replies = self.responses.pending
        target.on_end = functools.partial(self._sub_ended, sid)
        self.flow.add(pattern, target, queue)
        self.subs[sid] = (target, pattern, queue)
        self.server.quotas.subscribed(self, 1)

    def forget_sub(self, sid):
        t = self.subs.pop(sid)[0]
        self._ended(t)
        if t.handle in self.flow.matcher:
            self.flow.remove(t.handle)

    def _ended(self, t):
        self.ended_out[0] += t.delivered
        self.ended_out[1] += t.delivered_bytes
        self.server.quotas.subscribed(self, -1)

    def may_subscribe(self, n=1):
        """None, or why the quotas of this connection's account or user
        refuse ``n`` more subscriptions (the door says it in its words)."""
        return self.server.quotas.may_subscribe(self, n)

    def usage(self):
        """What this connection published and received (metering)."""
        out_n, out_b = self.ended_out
        for t, _p, _q in self.subs.values():
            out_n += t.delivered
            out_b += t.delivered_bytes
        return {"in_msgs": self.in_msgs, "in_bytes": self.outbuf.pub_bytes,
                "out_msgs": out_n, "out_bytes": out_b}

    def _sub_ended(self, sid, t):
        """The engine ended subscription ``sid`` (UNSUB with a max reached)."""
        e = self.subs.get(sid)
        if e is not None and e[0] is t:
            del self.subs[sid]
            self._ended(t)

    def live_subscriptions(self):
        m = self.flow.matcher
        return [(sid, e) for sid, e in self.subs.items() if e[0].handle in m]

    # -- PING, requests ----------------------------------------------------------------

    def tick(self, now):
        """Once a second (the server's housekeeping): PING idle clients,
        close stale ones, catch an overflow no flush saw."""
        if self.state != READY:
            return
        if self.proto.tick(now):
            return
        if self.responses is not None:
            self.responses.prune()
        if self.outbuf.overflow and not self._flush_scheduled:
            self.slow_consumer("pending output over max_pending ({} bytes)".format(
                self.cfg.max_pending))
            return
        interval = self.cfg.ping_interval
        if interval and now - self.last_in >= interval and now - self.last_ping >= interval:
            if self.pings_out >= self.cfg.max_pings_out:
                log.info("client %d (%s): stale connection, %d PINGs without an answer", self.id,
                         self.peer, self.pings_out)
                self.close(408, "stale connection: {} PINGs without a PONG".format(
                    self.pings_out))
                return
            self.pings_out += 1
            self.last_ping = now
            self.proto.ping()

    def track(self, task, rid=0, stream=None, consumer=None):
        """Keep a request task (replay, fetch, CONNECT) until it is done."""
        task.rid = rid
        task.stream = stream
        task.consumer = consumer
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def end_request(self, task, code, message):
        """Cancel a request task and answer it with error ``code``."""
        if task.cancel() and self.state == READY:
            self.proto.err(code, message, task.rid)

    # -- monitoring --------------------------------------------------------------------

    @property
    def in_msgs(self):
        return self.parser.pubs_in + self.in_msgs_py

    @property
    def out_msgs(self):
        return self.outbuf.msgs

    def stats(self, now, subs=False):
        d = {"cid": self.id, "door": self.door, "peer": self.peer, "name": self.name,
             "lang": self.lang,
             "version": self.version, "user": self.user, "account": self.account.name,
             "state": self.state.label,
             "tls": self.tls, "echo": self.echo,
             "subscriptions": len(self.live_subscriptions()),
             "in_msgs": self.in_msgs, "in_bytes": self.parser.bytes_in,
             "out_msgs": self.out_msgs, "out_bytes": self.outbuf.bytes_out,
             "pending_bytes": self.pending_bytes(), "denied": self.parser.denied,
             "dropped": sum(e[0].dropped for e in self.subs.values()),
             "conflated": self.outbuf.conflated, "kept": self.outbuf.kept_messages,
             "uptime": round(now - self.t0, 3), "idle": round(now - self.last_in, 3),
             "pings_out": self.pings_out, "paused": sorted(self._pause),
             "write_paused": self.write_paused, "tasks": len(self.tasks or ())}
        if subs:
            d["subs"] = [{"sid": sid, "subject": p, "queue": q, "delivered": t.delivered,
                          "dropped": t.dropped, "remaining": t.remaining,
                          "conflate": t.conflate, "conflated": t.conflated}
                         for sid, (t, p, q) in self.live_subscriptions()]
        self.proto.stats(d)
        return d
