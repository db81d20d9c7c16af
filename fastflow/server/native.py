"""The native protocol's front door (docs/protocol.md): one
``asyncio.Protocol`` per connection.

The hot path runs in C: ``FrameParser.feed`` cuts the frames and routes
every PUB without ACK to the engine (``Router._publish_wire``), which
stores the record and appends MSG frames straight into each subscriber's
``OutBuf``.  Python sees only the other frames, and each connection writes
its ``OutBuf`` once per loop tick (``on_data`` schedules the flush).
"""

import asyncio
import datetime as _dt
import functools
import json
import logging
import struct
import time

from fastflow._impl import (
    FLAGS,
    OPS,
    FrameParser,
    OutBuf,
    ProtocolError,
    NativeTarget,
    validate_pattern,
)
from fastflow.protocol import error_code
from fastflow.errors import EventTooLarge, FastflowError, LogFullError, SubjectError
from fastflow.flow import Retention
from fastflow.server.auth import AuthError
from fastflow.server.config import parse_duration, parse_size

__all__ = ("NativeConnection",)

log = logging.getLogger("fastflow.server")

OP_INFO = OPS["INFO"]
OP_CONNECT = OPS["CONNECT"]
OP_PUB = OPS["PUB"]
OP_PUBACK = OPS["PUBACK"]
OP_PUB_BATCH = OPS["PUB_BATCH"]
OP_SUB = OPS["SUB"]
OP_UNSUB = OPS["UNSUB"]
OP_MSG = OPS["MSG"]
OP_PING = OPS["PING"]
OP_PONG = OPS["PONG"]
OP_OK = OPS["OK"]
OP_ERR = OPS["ERR"]
OP_STREAM = OPS["STREAM"]
OP_REPLAY = OPS["REPLAY"]
OP_CONSUMER = OPS["CONSUMER"]
OP_ACK = OPS["ACK"]
OP_NAMES = {v: k for k, v in OPS.items()}
FL_ACK = FLAGS["ACK"]
FL_NO_RESPONDERS = FLAGS["NO_RESPONDERS"]
FL_CLOSE = FLAGS["CLOSE"]
FL_DUPLICATE = 2                        # PUBACK: the stream had the event already

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")
_ITEM = struct.Struct("<HI")            # PUB_BATCH item: subject length, record length
_BATCH_ACK = struct.Struct("<QI")       # PUB_BATCH's PUBACK: last seq, count

# connection states
ST_NEW = 0                              # INFO sent, waiting for CONNECT
ST_AUTHING = 1                          # CONNECT being checked (scrypt in a thread)
ST_READY = 2
ST_CLOSING = 3
ST_CLOSED = 4
_STATE_NAMES = ("new", "authenticating", "ready", "closing", "closed")

ACK_KIND_ACK = 1
ACK_KIND_NAK = 2
ACK_KIND_TERM = 3
ACK_KIND_PROGRESS = 4

_REPLAY_BATCH = 1024                    # records per log read
_REPLAY_BYTES = 1 << 20                 # bytes per log read
_FETCH_CHUNK = 256                      # deliveries per Consumer.fetch call
_ACK_MAP_MAX = 65536                    # ack subjects remembered per connection
_CLOSE_GRACE = 5.0                      # seconds a closing transport may take to flush
_SLOW_GRACE = 1.0                       # ... when the peer is a slow consumer

FLUSH_AT = 256 << 10                    # bytes of output written before the tick ends
_scratch = OutBuf(0)                    # builds frames written outside a connection's OutBuf


# the first bytes of a NATS client's ops (a NATS client at the native port)
_NATS_WORDS = frozenset((b"CONN", b"INFO", b"PING", b"PONG", b"SUB ", b"PUB ", b"HPUB",
                         b"UNSU"))


def frame_bytes(op, flags=0, fid=0, subject="", reply="", body=b""):
    """One frame as bytes (for writes that bypass an OutBuf)."""
    _scratch.frame(op, flags, fid, subject, reply, body)
    return _scratch.take()


def err_body(code, message):
    return _U16.pack(code) + message.encode("utf-8", "replace")


class RequestError(FastflowError):
    """A request refused with a protocol error code (the connection stays)."""

    def __init__(self, code, message):
        FastflowError.__init__(self, message)
        self.code = code


class _Seq:
    """What Consumer._ack/_nak/_term/_in_progress need of a delivery."""

    __slots__ = ("seq",)

    def __init__(self, seq):
        self.seq = seq


def _json_args(body, what):
    if not body:
        return {}
    try:
        args = json.loads(body)
    except RecursionError:
        raise RequestError(400, "{}: the body nests too deeply".format(what)) from None
    except ValueError as exc:
        raise RequestError(400, "{}: the body is not valid JSON: {}".format(what, exc)) from None
    if not isinstance(args, dict):
        raise RequestError(400, "{}: the body must be a JSON object, got {}".format(
            what, type(args).__name__))
    return args


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


def connect_json(body):
    """The object of a CONNECT body (both doors); ValueError naming what is
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


def _json(obj):
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


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


def _time_arg(v):
    """A REPLAY ``time``: ns since the epoch (int) or an RFC 3339 string."""
    if isinstance(v, bool):
        raise RequestError(400, "REPLAY: 'time' must be ns since the epoch or an RFC 3339 string")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        s = v.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise RequestError(400, "REPLAY: 'time' {!r} is not an RFC 3339 time".format(v)) \
                from None
        if t.tzinfo is None:
            t = t.replace(tzinfo=_dt.timezone.utc)
        return t
    raise RequestError(400, "REPLAY: 'time' must be ns since the epoch or an RFC 3339 string, "
                            "got {!r}".format(v))


class NativeConnection(asyncio.Protocol):
    """One client connection of the native protocol."""

    door = "native"                     # which front door (monitoring)
    parser_error = ProtocolError        # what the door's parser raises on a bad stream

    def __init__(self, server):
        self.server = server
        cfg = self.cfg = server.config
        self.flow = server.flow
        self.loop = server.loop
        self.id = server.next_client_id()
        self.state = ST_NEW
        self.transport = None
        self.peer = "?"
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
        self.acks = {}                  # ack subject -> (Consumer, seq)
        self.tasks = set()              # replays and fetches under way
        self.outbuf = OutBuf(cfg.max_pending, self._on_data)
        # a burst routed within one tick (one big read of a publisher) is
        # written as it grows, not held until the tick ends: only what the
        # kernel does not take counts against max_pending
        self.outbuf.flush_at = min(FLUSH_AT, cfg.max_pending // 4) if cfg.max_pending \
            else FLUSH_AT
        self.outbuf.on_flush = self.flush
        self.parser = FrameParser(self.flow, self.outbuf, cfg.max_payload, cfg.max_control)
        self.parser.max_connect = cfg.max_connect   # until CONNECT is accepted
        self._preauth = 0               # partial input held before CONNECT (server budget)
        self._pend = 0                  # pending output last counted in the server's total
        self._flush_scheduled = False
        self._pause = set()             # why reading is paused: "auth", "stall", "drain"
        self._stash = None              # frames that came during an asynchronous CONNECT
        self._timer = None              # the auth timeout, then the close grace
        self.started = time.time()
        self.t0 = self.loop.time()
        self.last_in = self.t0
        self.last_ping = self.t0
        self.pings_out = 0
        self.write_paused = False
        self.in_msgs_py = 0             # publishes handled here (PUB+ACK, PUB_BATCH, verbose)
        self.close_reason = None

    # -- lifecycle ---------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport
        self.peer = _peer(transport)
        self.peer_host = _peer_host(transport)
        srv = self.server
        cfg = self.cfg
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = {"version": sslobj.version(), "cipher": (sslobj.cipher() or ("",))[0]}
            cert = transport.get_extra_info("peercert")
            if cert:
                self.tls["subject"] = dict(x[0] for x in cert.get("subject", ()) if x)
        if srv.stopping:
            self.state = ST_CLOSED
            transport.abort()
            return
        limit = srv.max_connections
        if limit and len(srv.conns) >= limit:
            srv.n_rejected += 1
            self.state = ST_CLOSED
            log.warning("client %s refused: maximum connections (%d) reached", self.peer, limit)
            transport.write(self._refusal(
                429, "maximum connections ({}) reached".format(limit)))
            transport.close()
            return
        srv.add_connection(self)
        try:
            transport.set_write_buffer_limits(high=cfg.write_high_water, low=cfg.write_low_water)
        except (AttributeError, NotImplementedError):
            pass
        self._send_info()
        self._timer = self.loop.call_later(cfg.auth_timeout, self._auth_timeout)
        log.debug("client %d connected from %s%s", self.id, self.peer,
                  " (TLS {})".format(self.tls["version"]) if self.tls else "")

    def connection_lost(self, exc):
        was = self.state
        self.state = ST_CLOSED
        self._teardown()
        if was < ST_CLOSING:
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
        self.subs.clear()
        self._preauth_held(0)
        self._pending_now(0)
        self.acks.clear()
        for task in list(self.tasks):
            task.cancel()
        self.tasks.clear()
        self.server.remove_connection(self)

    def close(self, code=None, message=None, rid=0, flush=True, grace=_CLOSE_GRACE):
        """Close the connection: the pending output (``flush``), then ERR
        ``code`` with flag CLOSE (if given), then the socket."""
        if self.state >= ST_CLOSING:
            return
        self.state = ST_CLOSING
        self.close_reason = message or "closed by the server"
        data = self.outbuf.take() if flush and not self.outbuf.overflow else b""
        self.outbuf.clear()
        if code is not None:
            data += self._close_data(code, message, rid)
        self._teardown()
        tr = self.transport
        try:
            if data:
                tr.write(data)
            tr.close()
        except (OSError, RuntimeError):     # the transport is gone already
            pass
        self._timer = self.loop.call_later(grace, self._abort)

    def _send_info(self):
        self.outbuf.frame(OP_INFO, 0, 0, body=self.server.info_body(self))

    def _close_data(self, code, message, rid):
        """The bytes that tell the client why it is closed."""
        return frame_bytes(OP_ERR, FL_CLOSE, rid, body=err_body(code, message))

    def _refusal(self, code, message):
        """The bytes that tell a client refused at connect why."""
        return self._close_data(code, message, 0)

    def _send_ping(self):
        self.outbuf.frame(OP_PING)

    def _abort(self):
        self._timer = None
        if self.state != ST_CLOSED:
            self.transport.abort()

    def _auth_timeout(self):
        self._timer = None
        if self.state < ST_READY:
            self.server.n_auth_failures += 1
            log.info("client %d (%s): authentication timeout", self.id, self.peer)
            self.close(408, "authentication timeout: no CONNECT within {:g} s".format(
                self.cfg.auth_timeout))

    def pause(self, why):
        if not self._pause and self.state < ST_CLOSING:
            try:
                self.transport.pause_reading()
            except (RuntimeError, AttributeError):
                pass
        self._pause.add(why)

    def resume(self, why):
        if why not in self._pause:
            return
        self._pause.discard(why)
        if not self._pause and self.state < ST_CLOSING:
            try:
                self.transport.resume_reading()
            except (RuntimeError, AttributeError):
                pass

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
        if self.state >= ST_CLOSING:
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
        n = len(self.outbuf)
        if self.transport is not None and self.state < ST_CLOSED:
            try:
                n += self.transport.get_write_buffer_size()
            except (OSError, RuntimeError):
                pass
        return n

    def pause_writing(self):
        self.write_paused = True
        self.server.stalled(self)

    def resume_writing(self):
        self.write_paused = False
        self.server.unstalled(self)
        if self.state < ST_CLOSING:
            self._pending_now(self.pending_bytes())     # what the kernel took
        mp = self.cfg.max_pending
        if mp and self.state < ST_CLOSING:
            self.outbuf.max_pending = max(1, mp - self.transport.get_write_buffer_size())

    def slow_consumer(self, reason):
        """Cut the connection: ERR 503, close, advisory, counted."""
        if self.state >= ST_CLOSING:
            return
        srv = self.server
        srv.n_slow_consumers += 1
        pending = self.pending_bytes()
        log.warning("client %d (%s%s%s): slow consumer, %s; %d bytes pending: closed", self.id,
                    self.peer, " " + self.name if self.name else "",
                    " user " + self.user if self.user else "", reason, pending)
        info = {"client_id": self.id, "peer": self.peer, "name": self.name, "user": self.user,
                "reason": reason, "pending_bytes": pending, "max_pending": self.cfg.max_pending,
                "subscriptions": [p for _t, p, _q in self.subs.values()]}
        self.close(503, "slow consumer: " + reason, flush=False, grace=_SLOW_GRACE)
        try:
            self.flow.advise("slow_consumer", info)
        except Exception:
            log.exception("advisory for slow consumer %d failed", self.id)

    def ok(self, rid, result=None):
        self.outbuf.frame(OP_OK, 0, rid, body=b"" if result is None else _json(result))

    def err(self, code, message, rid=0):
        log.debug("client %d: ERR %d %s", self.id, code, message)
        self.outbuf.frame(OP_ERR, 0, rid, body=err_body(code, message))

    # -- input -------------------------------------------------------------------------

    def data_received(self, data):
        if self.state >= ST_CLOSING or self.server.stopping:
            return                      # not accepted: nothing was acknowledged
        self.last_in = self.loop.time()
        self.pings_out = 0
        if self.parser.bytes_in == 0 and self.door == "native" and self._nats_text(data):
            return
        try:
            items = self.parser.feed(data)
        except self.parser_error as exc:
            if exc.frames:              # the frames ahead of the bad one count
                self.handle(exc.frames)
            if self.state >= ST_CLOSING:
                return
            self.server.n_protocol_errors += 1
            code, message = self._protocol_error(exc)
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
        if self.state < ST_READY and self._preauth_held(self.parser.buffered):
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

    def _nats_text(self, data):
        """True (and the connection closes with one NATS -ERR line) if the
        first bytes are a NATS client's (CONNECT, PING, SUB, ...): as a
        frame size they would be hundreds of MB, so no native frame begins
        so."""
        if data[:4].upper() not in _NATS_WORDS:
            return False
        cfg = self.cfg
        if int.from_bytes(data[:4], "little") <= cfg.max_payload + cfg.max_control + 16:
            return False
        self.server.n_protocol_errors += 1
        port = self.server.nats_port
        text = "this port speaks the fastflow native protocol, not NATS; {}".format(
            "NATS clients use port {}".format(port) if port
            else "this server has no NATS door (nats_port)")
        log.info("client %d (%s): a NATS client at the native port", self.id, self.peer)
        try:
            self.transport.write("-ERR '{}'\r\n".format(text).encode())
        except (OSError, RuntimeError):
            pass
        self.close(flush=False)
        self.close_reason = text
        return True

    @staticmethod
    def _protocol_error(exc):
        """The (code, message) a connection is closed with for ``exc``."""
        return exc.code, str(exc)

    def is_publisher(self):
        return self.parser.pubs_in > 0 or self.in_msgs_py > 0

    def handle(self, items, start=0):
        """Act on the frames (and the parser's 'error'/'noresp' entries)."""
        n = len(items)
        i = start
        while i < n:
            if self.state >= ST_CLOSING:
                return
            it = items[i]
            i += 1
            op = it[0]
            if type(op) is str:
                if op == "error":     # (denied publishes: counted by the parser)
                    self.err(it[1], it[2], it[3])
                elif op == "noresp":
                    self.no_responders(it[1])
                continue
            if self.state != ST_READY:
                if op == OP_CONNECT:
                    if self._connect(it, items, i):
                        return          # the rest waits for the (asynchronous) check
                elif op == OP_PING:
                    self.outbuf.frame(OP_PONG, 0, it[2])
                elif op != OP_PONG:
                    self.server.n_auth_failures += 1
                    self.close(401, "authentication required: the first frame must be CONNECT, "
                                    "got {}".format(OP_NAMES.get(op, op)), it[2])
                    return
                continue
            handler = _HANDLERS.get(op)
            if handler is None:
                self.server.n_protocol_errors += 1
                self.close(400, "unexpected {} frame from a client".format(OP_NAMES.get(op, op)),
                           it[2])
                return
            try:
                handler(self, it)
            except RequestError as exc:
                if exc.code == 403:
                    self.server.n_denied += 1
                self.err(exc.code, str(exc), it[2])
            except (FastflowError, ValueError, TypeError, KeyError) as exc:
                code = error_code(exc) if isinstance(exc, FastflowError) else 400
                if isinstance(exc, KeyError):
                    code, exc = 404, exc.args[0] if exc.args else exc
                self.err(code, str(exc), it[2])
            except Exception as exc:
                log.exception("client %d: %s request failed", self.id, OP_NAMES.get(op, op))
                self.err(500, "internal error: {}".format(exc), it[2])

    # -- CONNECT -----------------------------------------------------------------------

    def _connect(self, it, items, i):
        """Returns True when the rest of ``items`` must wait (asynchronous
        check) or the connection closed."""
        try:
            req = connect_json(it[5])
        except ValueError as exc:
            self.server.n_protocol_errors += 1
            self.close(400, "CONNECT: {}".format(exc), it[2])
            return True
        return self._authenticate(req, req, items, i, it[2])

    def _authenticate(self, creds, req, items, i, rid):
        """Check ``creds`` (``user``/``password`` or ``token``), then
        ``_connected(req, ...)``; True when the rest of ``items`` (from
        ``i``) must wait for the check (scrypt runs in a thread) or the
        connection closed.  Both doors' CONNECT ends here."""
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
            self.state = ST_AUTHING
            self._stash = list(items[i:])
            self.pause("auth")
            self._track(self.loop.create_task(self._authenticate_async(creds, req, rid, wait)))
            return True
        try:
            principal = auth.check(creds)
        except AuthError as exc:
            self._auth_failed(exc, rid)
            return True
        self._connected(req, principal, rid)
        return False

    async def _authenticate_async(self, creds, req, rid, wait=0.0):
        if wait:                        # the back-off after failed logins from this address
            await asyncio.sleep(wait)
            if self.state >= ST_CLOSING:
                return
        try:
            principal = await self.server.auth.authenticate(creds, self.loop)
        except AuthError as exc:
            self._auth_failed(exc, rid)
            return
        if self.state >= ST_CLOSING:
            return
        self._connected(req, principal, rid)
        stash, self._stash = self._stash, None
        if stash:
            self.handle(stash)
        self.resume("auth")

    def _auth_failed(self, exc, rid):
        self.server.n_auth_failures += 1
        self.server.throttle.failed(self.peer_host)
        log.info("client %d (%s): %s", self.id, self.peer, exc)
        self.close(401, str(exc), rid)

    def _connected(self, req, principal, rid):
        self.principal = principal
        self.user = principal.name if principal.kind == "user" else (
            "token:" + principal.name if principal.kind == "token" else None)
        self.name = str(req.get("name") or "")[:256]
        self.lang = str(req.get("lang") or "")[:64]
        self.version = str(req.get("version") or "")[:64]
        self.echo = bool(req.get("echo", True))
        self.verbose = bool(req.get("verbose", False))
        self._set_principal(principal)
        self.parser.max_connect = 0
        self._preauth_held(0)
        self.state = ST_READY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.ok(rid, {"client_id": self.id, "server_id": self.server.id,
                      "user": self.user})
        log.debug("client %d (%s) ready: name=%r lang=%r version=%r user=%r", self.id,
                  self.peer, self.name, self.lang, self.version, self.user)

    def _set_principal(self, principal):
        """Both doors: the publish permissions go to the parser (checked in
        C), with the connection's response permits (``allow_responses``)."""
        self.principal = principal
        if principal.kind != "none":
            self.server.throttle.succeeded(self.peer_host)
        perms = principal.permissions
        self.responses = perms.response_permits()
        self.parser.pub_allow = perms.pub_allow
        self.parser.pub_deny = perms.pub_deny
        self.parser.resp_check = self.responses
        self.parser.route_pubs = not self.verbose    # verbose: every PUB answered from here

    def may_publish(self, subject, use=True):
        """Whether this connection may publish on ``subject`` (valid): its
        permissions, or a response permit (``use``: spend it)."""
        perms = self.principal.permissions
        if perms.pub_allow is None and perms.pub_deny is None:
            return True
        if perms.can_publish(subject):
            return True
        return self.responses is not None and self.responses(subject, use)

    def _connect_again(self, it):
        raise RequestError(400, "already connected: CONNECT comes once, first")

    # -- publishing (the frames the parser did not route) ------------------------------

    def _pub(self, it):
        _op, flags, rid, subject, reply, body = it
        if not self.may_publish(subject):
            raise RequestError(403, "permission denied: publish to '{}'".format(subject))
        flow = self.flow
        before = flow.n_delivered
        seq = flow.publish_record(subject, body, reply or None, self.outbuf)
        self.in_msgs_py += 1
        if flags & FL_ACK:
            stream = flow.last_stream if seq else None
            self.outbuf.frame(OP_PUBACK, FL_DUPLICATE if seq and flow.last_duplicate else 0, rid,
                              body=_U64.pack(seq) + (stream.encode() if stream else b""))
        elif self.verbose:
            self.ok(rid)
        if reply and flow.n_delivered == before:
            self.no_responders(reply)

    def _pub_batch(self, it):
        _op, flags, rid, _s, _r, body = it
        perms = self.principal.permissions
        check = None
        if perms.pub_allow is not None or perms.pub_deny is not None:
            check = perms.can_publish
        allowed = {}
        responses = self.responses
        publish = self.flow.publish_record
        origin = self.outbuf
        max_payload = self.cfg.max_payload
        mv = memoryview(body)
        n = len(body)
        off = count = last = 0
        refused = None                  # a stream's first refusal: the batch goes on
        try:
            while off < n:
                if n - off < 6:
                    raise RequestError(400, "truncated item header")
                sn, rn = _ITEM.unpack_from(body, off)
                off += 6
                if off + sn + rn > n:
                    raise RequestError(400, "subject ({}) and record ({}) overrun the body".format(
                        sn, rn))
                try:
                    subject = str(body[off:off + sn], "utf-8")
                except UnicodeDecodeError:
                    raise RequestError(400, "the subject is not valid UTF-8") from None
                off += sn
                if rn > max_payload:
                    raise RequestError(413, "record of {} bytes exceeds max_payload={}".format(
                        rn, max_payload))
                if check is not None:
                    ok = allowed.get(subject)
                    if ok is None:
                        ok = allowed[subject] = check(subject)
                    if not ok and responses is not None:
                        ok = responses(subject)
                    if not ok:
                        raise RequestError(403, "permission denied: publish to '{}'".format(
                            subject))
                try:
                    seq = publish(subject, mv[off:off + rn], None, origin)
                except (LogFullError, EventTooLarge) as exc:   # delivered, not stored
                    if refused is None:
                        refused = (count, exc)
                    seq = 0
                off += rn
                count += 1
                if seq:
                    last = seq
        except (FastflowError, ValueError, TypeError) as exc:   # (RequestError included)
            code = exc.code if isinstance(exc, RequestError) else (
                error_code(exc) if isinstance(exc, FastflowError) else 400)
            raise RequestError(code, "PUB_BATCH item {}: {} ({} item{} before it published)"
                               .format(count, exc, count, "" if count == 1 else "s")) from None
        finally:
            self.in_msgs_py += count
            mv.release()
        if refused is not None:
            raise RequestError(error_code(refused[1]), "PUB_BATCH item {}: {} (all {} items were "
                               "published)".format(refused[0], refused[1], count))
        if flags & FL_ACK:
            self.outbuf.frame(OP_PUBACK, 0, rid, body=_BATCH_ACK.pack(last, count))
        elif self.verbose:
            self.ok(rid)

    def no_responders(self, reply):
        """A request (PUB with ``reply``) reached no subscriber: tell the
        requester at once, through its own subscriptions of the reply
        subject (a notice for nobody else, in this door's frames)."""
        try:
            targets = self.flow.matcher.match(reply)
        except (SubjectError, ValueError):
            return
        outbuf = self.outbuf
        for t in targets:
            if type(t) is NativeTarget and t.outbuf is outbuf:
                outbuf.frame(OP_MSG, FL_NO_RESPONDERS, t.sid, reply)

    # -- subscriptions -----------------------------------------------------------------

    def _sub(self, it):
        sid, pattern, queue = it[2], it[3], it[4] or None
        if not pattern:
            raise RequestError(400, "SUB needs a subject pattern")
        validate_pattern(pattern)
        perms = self.principal.permissions
        if not perms.unrestricted:
            why = perms.subscribe_denied(pattern, queue)
            if why is not None:
                raise RequestError(403, why)
        old = self.subs.get(sid)
        if old is not None:
            if old[0].handle in self.flow.matcher:
                raise RequestError(409, "subscription id {} is in use (on '{}')".format(
                    sid, old[1]))
            self._forget_sub(sid)
        limit = self.cfg.max_subscriptions
        # self.subs holds only live subscriptions (the engine's automatic
        # UNSUBs are forgotten by _sub_ended): a refusal costs O(1)
        if limit and len(self.subs) >= limit:
            raise RequestError(429, "maximum subscriptions per connection ({}) reached"
                               .format(limit))
        t = NativeTarget(self.outbuf, sid, self.echo)
        t.owner = self
        if self.responses is not None:
            t.replies = self.responses.pending
        t.on_end = functools.partial(self._sub_ended, sid)
        self.flow.add(pattern, t, queue)
        self.subs[sid] = (t, pattern, queue)
        if self.verbose:
            self.ok(sid)

    def _unsub(self, it):
        sid, body = it[2], it[5]
        entry = self.subs.get(sid)
        if entry is not None:
            mx = _U32.unpack_from(body)[0] if len(body) >= 4 else 0
            if mx:
                entry[0].remaining = mx
            else:
                self._forget_sub(sid)
        if self.verbose:
            self.ok(sid)

    def _forget_sub(self, sid):
        t = self.subs.pop(sid)[0]
        if t.handle in self.flow.matcher:
            self.flow.remove(t.handle)

    def _sub_ended(self, sid, t):
        """The engine ended subscription ``sid`` (UNSUB with a max reached)."""
        e = self.subs.get(sid)
        if e is not None and e[0] is t:
            del self.subs[sid]

    def live_subscriptions(self):
        m = self.flow.matcher
        return [(sid, e) for sid, e in self.subs.items() if e[0].handle in m]

    # -- PING / PONG -------------------------------------------------------------------

    def _ping(self, it):
        self.outbuf.frame(OP_PONG, 0, it[2])

    def _pong(self, it):
        self.pings_out = 0

    def tick(self, now):
        """Once a second (the server's housekeeping): PING idle clients,
        close stale ones, catch an overflow no flush saw."""
        if self.state != ST_READY:
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
            self._send_ping()

    # -- streams -----------------------------------------------------------------------

    def _stream_of(self, name):
        if not isinstance(name, str) or not name:
            raise RequestError(400, "a stream name is required")
        st = self.flow.streams().get(name)
        if st is None:
            raise RequestError(404, "no stream named {!r}".format(name))
        return st

    def _need(self, level, what):
        have = self.principal.permissions.streams
        if have == "none" or (level == "manage" and have != "manage"):
            raise RequestError(403, "permission denied: {} ({}; this user has streams = "
                                    "'{}')".format(what, "managing streams needs 'manage'"
                                                   if level == "manage" else
                                                   "stream requests need 'read'", have))

    def _may_manage(self, subjects, what):
        """403 unless this user may manage a stream on ``subjects``."""
        perms = self.principal.permissions
        if not perms.unrestricted:
            why = perms.stream_manage_denied(subjects)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    def _may_read(self, patterns, what):
        """403 unless this user may read ``patterns`` (a stream's subjects,
        or a consumer's or a replay's filter)."""
        perms = self.principal.permissions
        if not perms.unrestricted:
            why = perms.can_read_stream(patterns)
            if why is not None:
                raise RequestError(403, "{}: {}".format(what, why))

    @property
    def owner_id(self):
        """Who owns the durable consumers this connection creates."""
        p = self.principal
        return "{}:{}".format(p.kind, p.name)

    def _may_operate(self, st, c, what):
        """403 unless this user created the consumer ``c`` or may manage
        its stream."""
        perms = self.principal.permissions
        if perms.unrestricted or c.owner == self.owner_id:
            return
        if perms.streams == "manage" and perms.stream_manage_denied(st.subjects) is None:
            return
        raise RequestError(403, "permission denied: {} on consumer {!r} of stream {!r}: it "
                                "belongs to another user".format(what, c.name, st.name))

    def _stream(self, it):
        rid, action = it[2], it[3]
        args = _json_args(it[5], "STREAM " + action)
        flow = self.flow
        if action == "add":
            self._need("manage", "STREAM add")
            name = args.get("name")
            subjects = args.get("subjects")
            if isinstance(subjects, str):
                subjects = [subjects]
            if not isinstance(subjects, list) or not subjects:
                raise RequestError(400, "STREAM add: 'subjects' must be a list of subject "
                                        "patterns")
            for p in subjects:
                if not isinstance(p, str):
                    raise RequestError(400, "STREAM add: 'subjects' must be a list of subject "
                                            "patterns, got {!r}".format(p))
                validate_pattern(p)
            self._may_manage(subjects, "STREAM add")
            if isinstance(name, str) and name in flow.streams():
                self._may_manage(flow.streams()[name].subjects, "STREAM add")
            ret = dict(args.get("retention") or {})
            for k in Retention.__slots__:
                if k in args:
                    ret[k] = args[k]
            unknown = set(args) - {"name", "subjects", "storage", "retention"} - set(
                Retention.__slots__)
            if unknown:
                raise RequestError(400, "STREAM add: unknown arguments {}".format(sorted(unknown)))
            try:
                for k, v in ret.items():        # units as in the config: "2m", "1GiB"
                    if isinstance(v, str) and k in ("max_age", "duplicate_window"):
                        ret[k] = parse_duration(v, k)
                    elif isinstance(v, str) and k in ("max_bytes", "max_event_size"):
                        ret[k] = parse_size(v, k)
                retention = Retention(**ret)
            except (TypeError, ValueError) as exc:      # (ConfigError included)
                raise RequestError(400, "STREAM add: retention: {}".format(exc)) from None
            exists = isinstance(name, str) and name in flow.streams()
            try:
                st = flow.add_stream(name, subjects, retention, args.get("storage"))
            except SubjectError:
                raise
            except ValueError as exc:
                raise RequestError(409 if exists else 400, str(exc)) from None
            self.ok(rid, st.info())
        elif action == "info":
            self._need("read", "STREAM info")
            st = self._stream_of(args.get("name"))
            self._may_read(st.subjects, "STREAM info")
            self.ok(rid, st.info())
        elif action == "list":
            self._need("read", "STREAM list")
            may = self.principal.permissions.may_read_stream
            self.ok(rid, {"streams": [_stream_summary(s) for s in flow.streams().values()
                                      if may(s.subjects)]})
        elif action == "delete":
            self._need("manage", "STREAM delete")
            st = self._stream_of(args.get("name"))
            self._may_manage(st.subjects, "STREAM delete")
            self.server.end_requests("stream", st, "stream {!r} was deleted".format(st.name))
            flow.delete_stream(st.name)
            self.ok(rid, {"deleted": st.name})
        elif action == "purge":
            self._need("manage", "STREAM purge")
            st = self._stream_of(args.get("name"))
            self._may_manage(st.subjects, "STREAM purge")
            up_to = args.get("up_to")
            if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
                raise RequestError(400, "STREAM purge: 'up_to' must be a seq (int)")
            self.ok(rid, {"purged": st.purge(args.get("subject"), up_to)})
        else:
            raise RequestError(400, "unknown STREAM action {!r} (add, info, list, delete, purge)"
                               .format(action))

    def _replay(self, it):
        rid, name = it[2], it[3]
        args = _json_args(it[5], "REPLAY")
        self._need("read", "REPLAY")
        st = self._stream_of(name)
        filt = args.get("filter")
        if filt is not None:
            validate_pattern(filt)
        why = self.principal.permissions.can_read_stream([filt] if filt else st.subjects)
        if why is not None:
            raise RequestError(403, why)
        limit = args.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                  or limit < 0):
            raise RequestError(400, "REPLAY: 'limit' must be an int >= 0")
        seq = args.get("seq")
        if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
            raise RequestError(400, "REPLAY: 'seq' must be an int >= 0")
        t = args.get("time")
        pos = st.log.seek(args.get("start", "first"), seq=seq,
                          time=None if t is None else _time_arg(t))
        self._track(self.loop.create_task(self._replay_task(rid, st, pos, filt, limit,
                                                            st.log.last_seq)), rid, st)

    async def _replay_task(self, rid, st, pos, filt, limit, stop):
        """MSG frames of the stored records (their bytes as stored: no
        re-encoding), in bounded batches that wait for the socket to drain."""
        lg = st.log
        seq = pos.seq
        lost = pos.lost
        count = 0
        frame = self.outbuf.frame
        prefix = "$REPLAY.{}.".format(st.name)
        try:
            while seq <= stop and (limit is None or count < limit):
                if lg.closed or self.state != ST_READY:
                    return
                first = lg.first_seq
                if seq < first:         # evicted while we waited
                    lost += min(first, stop + 1) - seq
                    seq = first
                    if seq > stop:
                        break
                n = _REPLAY_BATCH if limit is None else min(_REPLAY_BATCH, limit - count)
                b = lg.read(seq, limit=n, max_bytes=_REPLAY_BYTES, filter=filt)
                k = len(b)
                seqs, ts, offs, subjects = b.seqs, b.ts, b.offsets, b.subjects
                buf = memoryview(b.buffer)
                for i in range(k):
                    s = seqs[i]
                    if s > stop:
                        k = i
                        break
                    frame(OP_MSG, 0, rid, subjects[i], "{}{}.{}".format(prefix, s, ts[i]),
                          buf[offs[i]:offs[i + 1]])
                buf.release()
                count += k
                if b.next_seq <= seq:
                    break
                seq = b.next_seq
                if k == 0 and seq > stop:
                    break
                await self._room()
            self.ok(rid, {"count": count, "lost": lost, "next_seq": min(seq, stop + 1)})
        except (FastflowError, ValueError) as exc:
            if self.state == ST_READY:
                self.err(error_code(exc) if isinstance(exc, FastflowError) else 400,
                         "REPLAY {}: {}".format(st.name, exc), rid)
        except Exception as exc:
            log.exception("client %d: REPLAY %s failed", self.id, st.name)
            if self.state == ST_READY:
                self.err(500, "REPLAY {}: internal error: {}".format(st.name, exc), rid)

    async def _room(self):
        """Let this tick's output go out; wait while the connection's pending
        output is above the low-water mark (replays and fetches never queue
        more than that, so they do not stall publishers)."""
        await asyncio.sleep(0)
        low = self.cfg.write_low_water
        while self.state == ST_READY and self.pending_bytes() > low:
            await asyncio.sleep(0.005)

    def _track(self, task, rid=0, stream=None, consumer=None):
        """Keep a request task (replay, fetch, CONNECT) until it is done."""
        task.rid = rid
        task.stream = stream
        task.consumer = consumer
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def end_request(self, task, code, message):
        """Cancel a request task and answer it with ERR ``code``."""
        if task.cancel() and self.state == ST_READY:
            self.err(code, message, task.rid)

    # -- durable consumers -------------------------------------------------------------

    def _consumer_of(self, st, name):
        c = st.consumers().get(name) if isinstance(name, str) else None
        if c is None:
            raise RequestError(404, "stream {!r} has no consumer {!r}".format(st.name, name))
        return c

    def _consumer(self, it):
        rid, action = it[2], it[3]
        args = _json_args(it[5], "CONSUMER " + action)
        self._need("read", "CONSUMER " + action)
        if action == "list":
            st = self._stream_of(args.get("stream"))
            may = self.principal.permissions.may_read_stream
            self.ok(rid, {"consumers": [
                c.info() for c in st.consumers().values()
                if may([c.config.filter] if c.config.filter else st.subjects)]})
            return
        st = self._stream_of(args.get("stream"))
        name = args.get("name")
        perms = self.principal.permissions
        if action == "add":
            config = dict(args.get("config") or {})
            for k, v in args.items():
                if k not in ("stream", "name", "config"):
                    config[k] = v
            filt = config.get("filter")
            if filt is not None:
                validate_pattern(filt)
            why = perms.can_read_stream([filt] if filt else st.subjects)
            if why is not None:
                raise RequestError(403, why)
            exists = isinstance(name, str) and name in st.consumers()
            if exists:
                self._may_operate(st, st.consumers()[name], "CONSUMER add")
            try:
                c = st.consumer(name, **config)
            except TypeError as exc:
                raise RequestError(400, "CONSUMER add: {}".format(exc)) from None
            except SubjectError:
                raise
            except ValueError as exc:
                raise RequestError(409 if exists else 400, str(exc)) from None
            if not exists:
                st.set_consumer_owner(name, self.owner_id)
            self.ok(rid, c.info())
        elif action == "info":
            c = self._consumer_of(st, name)
            self._may_read([c.config.filter] if c.config.filter else st.subjects,
                           "CONSUMER info")
            self.ok(rid, c.info())
        elif action == "delete":
            c = self._consumer_of(st, name)
            self._may_operate(st, c, "CONSUMER delete")
            self.server.end_requests("consumer", c, "consumer {!r} of stream {!r} was deleted"
                                     .format(name, st.name))
            st.delete_consumer(name)
            self.ok(rid, {"deleted": name})
        elif action == "fetch":
            c = self._consumer_of(st, name)
            self._may_operate(st, c, "CONSUMER fetch")
            why = perms.can_read_stream([c.config.filter] if c.config.filter else st.subjects)
            if why is not None:
                raise RequestError(403, why)
            n = args.get("n", 1)
            wait = args.get("wait", 0)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise RequestError(400, "CONSUMER fetch: 'n' must be an int >= 1")
            if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait:
                raise RequestError(400, "CONSUMER fetch: 'wait' must be seconds >= 0")
            self._track(self.loop.create_task(self._fetch_task(rid, st, c, n, float(wait))),
                        rid, st, c)
        else:
            raise RequestError(400, "unknown CONSUMER action {!r} (add, info, list, delete, "
                                    "fetch)".format(action))

    async def _fetch_task(self, rid, st, c, n, wait):
        """Deliveries of ``c`` as MSG frames (reply = the ack subject), up
        to ``n``; with ``wait``, waits that long for the first one."""
        loop = self.loop
        deadline = loop.time() + wait
        count = 0
        frame = self.outbuf.frame
        acks = self.acks
        track = c.config.ack != "none"
        prefix = "$ACK.{}.{}.".format(st.name, c.name)
        try:
            while self.state == ST_READY:
                evs = c.fetch(min(_FETCH_CHUNK, n - count))
                for ev in evs:
                    ack = prefix + str(ev.seq)
                    frame(OP_MSG, 0, rid, ev.routing_subject, ack, ev.encode())
                    if track:
                        acks[ack] = (c, ev.seq)
                count += len(evs)
                if len(acks) > _ACK_MAP_MAX:   # a cache: ACK falls back to parsing
                    for k in list(acks)[:len(acks) // 2]:
                        del acks[k]
                if count >= n:
                    break
                if evs:
                    await self._room()
                    continue
                if count or loop.time() >= deadline:
                    break
                await self._wait_append(st, c, deadline)
            if self.state == ST_READY:
                self.ok(rid, {"count": count})
        except (FastflowError, ValueError) as exc:     # a consumer closed meanwhile
            if self.state == ST_READY:
                self.err(404 if c._closed else 400,
                         "CONSUMER fetch {}/{}: {}".format(st.name, c.name, exc), rid)
        except Exception as exc:
            log.exception("client %d: CONSUMER fetch %s/%s failed", self.id, st.name, c.name)
            if self.state == ST_READY:
                self.err(500, "CONSUMER fetch {}/{}: internal error: {}".format(
                    st.name, c.name, exc), rid)

    async def _wait_append(self, st, c, deadline):
        loop = self.loop
        fut = loop.create_future()

        def on_append(_seq):
            if not fut.done():
                fut.set_result(None)

        listeners = st._target.listeners
        listeners.append(on_append)
        timeout = deadline - loop.time()
        if c.pending:                   # a redelivery may fall due first
            timeout = min(timeout, max(0.0, c._due - time.monotonic()) + 0.001)
        try:
            await asyncio.wait_for(fut, max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            if on_append in listeners:
                listeners.remove(on_append)

    def _ack(self, it):
        rid, subject, body = it[2], it[3], it[5]
        self._need("read", "ACK")
        if not body:
            raise RequestError(400, "ACK: the body must start with the kind (1-4)")
        kind = body[0]
        entry = self.acks.get(subject)
        if entry is None:
            entry = self._parse_ack(subject)
        c, seq = entry
        if c._closed:
            self.acks.pop(subject, None)
            raise RequestError(404, "ACK {}: the consumer was deleted".format(subject))
        last = c.stream.log.last_seq
        if seq > last:
            self.acks.pop(subject, None)
            raise RequestError(400, "ACK {}: seq {} is beyond the last seq {} of stream {!r}"
                                    .format(subject, seq, last, c.stream.name))
        d = _Seq(seq)
        if kind == ACK_KIND_ACK:
            c._ack(d)
            self.acks.pop(subject, None)
        elif kind == ACK_KIND_NAK:
            delay = _F64.unpack_from(body, 1)[0] if len(body) >= 9 else 0.0
            c._nak(d, delay)
        elif kind == ACK_KIND_TERM:
            c._term(d)
            self.acks.pop(subject, None)
        elif kind == ACK_KIND_PROGRESS:
            c._in_progress(d)
        else:
            raise RequestError(400, "ACK: unknown kind {} (1 ack, 2 nak, 3 term, 4 in "
                                    "progress)".format(kind))
        if self.verbose:
            self.ok(rid)

    def _parse_ack(self, subject):
        """(consumer, seq) of ``$ACK.<stream>.<consumer>.<seq>`` (a delivery
        made to another connection, or forgotten)."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != "$ACK" or not parts[3].isdigit():
            raise RequestError(400, "ACK: {!r} is not an ack subject "
                                    "($ACK.<stream>.<consumer>.<seq>)".format(subject))
        st = self.flow.streams().get(parts[1])
        c = st.consumers().get(parts[2]) if st is not None else None
        if c is None:
            raise RequestError(404, "ACK {}: no such stream or consumer".format(subject))
        self._may_operate(st, c, "ACK")
        return c, int(parts[3])

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
             "version": self.version, "user": self.user, "state": _STATE_NAMES[self.state],
             "tls": self.tls, "echo": self.echo,
             "subscriptions": len(self.live_subscriptions()),
             "in_msgs": self.in_msgs, "in_bytes": self.parser.bytes_in,
             "out_msgs": self.out_msgs, "out_bytes": self.outbuf.bytes_out,
             "pending_bytes": self.pending_bytes(), "denied": self.parser.denied,
             "dropped": sum(e[0].dropped for e in self.subs.values()),
             "uptime": round(now - self.t0, 3), "idle": round(now - self.last_in, 3),
             "pings_out": self.pings_out, "paused": sorted(self._pause),
             "write_paused": self.write_paused, "tasks": len(self.tasks)}
        if subs:
            d["subs"] = [{"sid": sid, "subject": p, "queue": q, "delivered": t.delivered,
                          "dropped": t.dropped, "remaining": t.remaining}
                         for sid, (t, p, q) in self.live_subscriptions()]
        return d


def _stream_summary(st):
    lg = st.log
    return {"name": st.name, "subjects": list(st.subjects), "storage": st.storage,
            "events": len(lg), "bytes": lg.bytes, "first_seq": lg.first_seq,
            "last_seq": lg.last_seq, "consumers": len(st.consumers())}


_HANDLERS = {
    OP_CONNECT: NativeConnection._connect_again,
    OP_PUB: NativeConnection._pub,
    OP_PUB_BATCH: NativeConnection._pub_batch,
    OP_SUB: NativeConnection._sub,
    OP_UNSUB: NativeConnection._unsub,
    OP_PING: NativeConnection._ping,
    OP_PONG: NativeConnection._pong,
    OP_STREAM: NativeConnection._stream,
    OP_REPLAY: NativeConnection._replay,
    OP_CONSUMER: NativeConnection._consumer,
    OP_ACK: NativeConnection._ack,
}
