"""The NATS front door (docs/nats.md): the NATS client protocol on its own
port, one ``asyncio.Protocol`` per connection, the same engine, users,
permissions, limits, slow-consumer policy and monitoring as the native door.

The hot path runs in C: ``NatsParser.feed`` cuts the protocol and routes
every PUB to the engine as an event with the defaults; the router writes
MSG lines for NATS subscriptions (``WireTarget`` with a NATS sid) straight
into the connection's ``OutBuf``.  Python handles CONNECT, SUB, UNSUB,
PING/PONG and HPUB (headers become CloudEvents attributes, per the
CloudEvents NATS binding: ``ce-*`` headers and Content-Type; other headers
are kept as they came, in the ``natsheaders`` extension).
"""

import functools
import json
import logging
import re

import fastflow
from fastflow._attrs import HOPS, TRACE
from fastflow._impl import (
    Event,
    NatsError,
    NatsParser,
    WireTarget,
    validate_pattern,
    validate_subject,
)
from fastflow.errors import EventError, EventTooLarge, FastflowError, LogFullError, SubjectError
from fastflow.event import BAD_CONTENT_TYPE, header_value, unheader
from fastflow.server.native import (
    ST_CLOSED,
    ST_CLOSING,
    ST_READY,
    NativeConnection,
    connect_json,
)

__all__ = ("NatsConnection", "event_from_nats", "header_block")

log = logging.getLogger("fastflow.server")

PROTO = 1                               # NATS protocol version: headers, no_responders
NATS_HEADERS = "natsheaders"            # the extension that keeps non-CloudEvents headers
_STATUS_503 = b"NATS/1.0 503\r\n\r\n"
_PONG = b"PONG\r\n"
_PING = b"PING\r\n"
_OK = b"+OK\r\n"
_MINIMAL = frozenset(("specversion", "id", "source", "type"))
_HEADER_LINE = re.compile(r"[!-9;-~]+:[^\r\n\0]*\Z")   # a header name, ':', a value
_ATTR_NAME = re.compile(r"[a-z0-9]+\Z")                 # what may follow "ce-"
_LINEAGE = (HOPS, TRACE)
_INVALID_PUB = "Invalid Publish Subject"

# -ERR texts of nats-server for what the shared connection code closes with
_CLOSE_TEXTS = {
    401: "Authorization Violation",
    413: "Maximum Payload Violation",
    429: "maximum connections exceeded",
    431: "maximum control line exceeded",
    503: "Slow Consumer",
}


def _err_line(text):
    # (a quote inside the text would end it early for some clients)
    return "-ERR '{}'\r\n".format(text.replace("'", '"').replace("\r", " ")
                                  .replace("\n", " ")).encode("utf-8", "replace")


def _msg_id(kept):
    """The Nats-Msg-Id of the ``natsheaders`` lines ``kept`` (or None)."""
    for line in kept.split("\r\n"):
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "nats-msg-id":
            return value.strip(" \t")
    return None


def header_block(event, generated_id=True, lineage=True):
    """The NATS header block of ``event`` (CloudEvents NATS binding, binary
    mode): ``ce-<attribute>`` headers, ``Content-Type`` for
    ``datacontenttype``, then the ``natsheaders`` lines as they came.  An
    event with nothing but a generated id, its source and type = its
    subject gets only those lines (what its NATS publisher sent).

    The router calls it while it delivers, so it does not raise: a value no
    header can carry (a lone surrogate) is left out, and so is a
    ``natsheaders`` line that is not ``Name: value`` (an event from
    another door may carry anything there), and so is an attribute whose
    name is not lowercase a-z and 0-9 (the doors refuse such names; a
    header line is never written from one).  ``lineage`` False leaves out
    the engine's ``ffhops`` and ``fftrace`` (``[nats] lineage = "strip"``)."""
    attrs = event.attributes()
    kept = attrs.pop(NATS_HEADERS, None)
    if not lineage:
        for k in _LINEAGE:
            attrs.pop(k, None)
    lines = ["NATS/1.0"]
    if kept and not generated_id:
        # an id taken from Nats-Msg-Id goes back as that header alone
        generated_id = _msg_id(str(kept)) == attrs.get("id")
    if not (generated_id and attrs.keys() <= _MINIMAL
            and attrs["type"] == event.routing_subject):
        for k, v in attrs.items():
            if k == "datacontenttype" and type(v) is str and not BAD_CONTENT_TYPE.search(v):
                lines.append("Content-Type: " + v)
                continue
            if type(k) is not str or not _ATTR_NAME.match(k):
                continue
            try:
                lines.append("ce-" + k + ": " + header_value(k, v))
            except EventError:
                continue
    if kept:
        lines.extend(ln for ln in str(kept).split("\r\n") if _HEADER_LINE.match(ln))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace")


def event_from_nats(subject, headers, payload, source, lineage=True):
    """The Event of an HPUB: ``headers`` (the raw block, ``NATS/1.0`` and
    its lines), ``payload`` bytes; ``source`` is the default source.
    ``lineage`` False ignores ``ce-ffhops`` and ``ce-fftrace`` headers (a
    door facing another organisation: its publishers do not steer the
    loop breaker)."""
    try:
        text = headers.decode("utf-8")
    except UnicodeDecodeError:
        raise EventError("the NATS headers are not UTF-8") from None
    lines = text.split("\r\n")
    if not lines[0].startswith("NATS/1.0"):
        raise EventError("the NATS header block must begin with NATS/1.0, got {!r}".format(
            lines[0][:32]))
    attrs = {}
    kept = []
    ct = None
    msg_id = None
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise EventError("malformed NATS header line {!r}".format(line[:64]))
        lname = name.strip().lower()
        if lname.startswith("ce-") and len(lname) > 3:
            attr = lname[3:]
            if attr in attrs:
                raise EventError("header {!r} appears more than once".format(name.strip()))
            attrs[attr] = unheader(attr, value)
        elif lname == "content-type" and ct is None:
            ct = value.strip(" \t")
        else:
            if lname == "nats-msg-id" and msg_id is None:
                msg_id = value.strip(" \t")
            kept.append(line)
    if msg_id and "id" not in attrs:
        attrs["id"] = msg_id            # JetStream's dedup id: the event's (ce-id wins)
    sv = attrs.pop("specversion", None)
    if sv is not None and sv != "1.0":
        raise EventError("ce-specversion {!r} is not supported (only 1.0)".format(sv))
    if ct:
        if attrs.get("datacontenttype", ct) != ct:
            raise EventError("ce-datacontenttype {!r} contradicts Content-Type {!r}".format(
                attrs["datacontenttype"], ct))
        attrs["datacontenttype"] = ct
    if not lineage:
        for k in _LINEAGE:
            attrs.pop(k, None)
    hops = attrs.get("ffhops")
    if hops is not None:
        try:
            attrs["ffhops"] = int(hops)
        except ValueError:
            raise EventError("ce-ffhops {!r} is not a number".format(hops)) from None
    if kept:
        attrs[NATS_HEADERS] = "\r\n".join(kept)
    attrs.setdefault("source", source)
    return Event(subject, payload, **attrs)


class NatsConnection(NativeConnection):
    """One client connection of the NATS protocol."""

    door = "nats"
    parser_error = NatsError

    def __init__(self, server):
        NativeConnection.__init__(self, server)
        cfg = self.cfg
        self.parser = NatsParser(self.flow, self.outbuf, cfg.max_payload, cfg.nats_max_control)
        if server.auth.required:
            # before CONNECT a payload may be no larger than max_connect (the
            # line is bounded by nats_max_control): nothing bigger is buffered
            self.parser.max_payload = min(cfg.max_payload, cfg.max_connect)
        self.headers = False
        self.no_resp = False
        self._upgrading = False
        self.pedantic = False

    # -- TLS: INFO in plain text, then the client starts the handshake -----------------

    def connection_made(self, transport):
        NativeConnection.connection_made(self, transport)
        if self.server.ssl_context is None or self.state >= ST_CLOSING:
            return
        # INFO goes out now, in plain text; nothing more is read until the
        # handshake is done (a client that writes instead is refused)
        self._upgrading = True
        transport.write(self.outbuf.take())
        self.pause("tls")
        self._track(self.loop.create_task(self._start_tls()))

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
            self.state = ST_CLOSED
            self._teardown()
            old.abort()
            return
        self._upgrading = False
        self.transport = tr
        sslobj = tr.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = {"version": sslobj.version(), "cipher": (sslobj.cipher() or ("",))[0]}
            cert = tr.get_extra_info("peercert")
            if cert:
                self.tls["subject"] = dict(x[0] for x in cert.get("subject", ()) if x)
        try:
            tr.set_write_buffer_limits(high=cfg.write_high_water, low=cfg.write_low_water)
        except (AttributeError, NotImplementedError):
            pass
        self._pause.discard("tls")
        if not self._pause and self.state < ST_CLOSING:
            tr.resume_reading()
        if len(self.outbuf):
            self.flush()

    # -- what differs from the native door's output ----------------------------------

    def _send_info(self):
        self.outbuf.write(self._info_line())

    def _refusal(self, code, message):
        return self._info_line() + self._close_data(code, message, 0)   # (INFO first)

    def _info_line(self):
        srv = self.server
        cfg = self.cfg
        info = {
            "server_id": srv.id, "server_name": srv.name, "version": fastflow.__version__,
            "proto": PROTO, "go": "fastflow", "host": cfg.nats_host or cfg.host,
            "port": srv.nats_port, "headers": True, "max_payload": cfg.max_payload,
            "client_id": self.id, "client_ip": self.peer.rpartition(":")[0].strip("[]"),
        }
        if srv.auth.required:
            info["auth_required"] = True
        if srv.ssl_context is not None:
            info["tls_required"] = True
            if cfg.tls_verify:
                info["tls_verify"] = True
        return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b"\r\n"

    def _close_data(self, code, message, rid):
        text = _CLOSE_TEXTS.get(code)         # (400: the message is the text)
        if code == 408:
            text = "Stale Connection" if "stale" in message else "Authentication Timeout"
        return _err_line(text or message)

    def flush(self):
        if self._upgrading:                 # written once the handshake is done
            self._flush_scheduled = False
            return
        NativeConnection.flush(self)

    def _send_ping(self):
        self.outbuf.write(_PING)

    def ok(self, rid=0, result=None):
        if self.verbose:
            self.outbuf.write(_OK)

    def err(self, code, message, rid=0):
        log.debug("client %d: -ERR %s", self.id, message)
        self.outbuf.write(_err_line(message))

    # -- input -------------------------------------------------------------------------

    def data_received(self, data):
        if self._upgrading and self.state < ST_CLOSING:     # plain text where TLS was required
            self.close(400, "Secure Connection - TLS Required")
            return
        NativeConnection.data_received(self, data)

    def _protocol_error(self, exc):
        if exc.text == "Maximum Payload Violation" and self.state < ST_READY \
                and self.server.auth.required:
            return 401, "Authorization Violation"   # nats-server: CONNECT first
        return 400, exc.text                # (-ERR with nats-server's text)

    def handle(self, items, start=0):
        n = len(items)
        i = start
        while i < n:
            if self.state >= ST_CLOSING:
                return
            it = items[i]
            i += 1
            op = it[0]
            if op == "error":
                if it[1] == _INVALID_PUB:
                    self._invalid_pub()
                else:
                    self.err(0, it[1])
                continue
            if op == "noresp":
                self.no_responders(it[1])
                continue
            if self.state != ST_READY:
                if op == "connect":
                    if self._connect_nats(it[1], items, i):
                        return          # the rest waits for the (asynchronous) check
                    continue
                if self.server.auth.required:     # (nats-server: CONNECT first)
                    self.server.n_auth_failures += 1
                    log.info("client %d (%s): %s before CONNECT", self.id, self.peer,
                             op.upper())
                    self.close(401, "Authorization Violation")
                    return
                if op == "ping":
                    self.outbuf.write(_PONG)
                    continue
                if op in ("pong", "+ok", "-err", "info"):
                    continue
                # no auth: nats-server takes the defaults of a CONNECT never sent
                self._connected({}, self.server.auth.anonymous, 0, implicit=True)
            try:
                handler = _HANDLERS[op]
            except KeyError:
                continue                # +OK, INFO from a client: nothing to do
            try:
                handler(self, it)
            except Exception as exc:
                log.exception("client %d: %s failed", self.id, op.upper())
                self.err(500, "Internal Error: {}".format(exc))

    # -- CONNECT -----------------------------------------------------------------------

    def _connect_nats(self, body, items, i):
        """True when the rest of ``items`` must wait or the connection closed."""
        try:
            req = connect_json(body)
        except ValueError as exc:
            self.server.n_protocol_errors += 1
            log.info("client %d (%s): invalid CONNECT: %s", self.id, self.peer, exc)
            self.close(400, "Invalid Connect Protocol")       # (nats-server: closes)
            return True
        if req.get("no_responders") and not req.get("headers"):
            self.close(400, "no responders requires headers support")
            return True
        creds = {}
        for ours, theirs in (("user", "user"), ("password", "pass"), ("token", "auth_token")):
            if req.get(theirs) is not None:
                creds[ours] = req[theirs]
        return self._authenticate(creds, req, items, i, 0)

    def _connected(self, req, principal, rid, implicit=False):
        self.principal = principal
        self.user = principal.name if principal.kind == "user" else (
            "token:" + principal.name if principal.kind == "token" else None)
        self.name = str(req.get("name") or "")[:256]
        self.lang = str(req.get("lang") or "")[:64]
        self.version = str(req.get("version") or "")[:64]
        # nats-server's defaults for what CONNECT leaves out
        self.echo = bool(req.get("echo", True))
        self.verbose = bool(req.get("verbose", True))
        self.pedantic = bool(req.get("pedantic", True))
        self.headers = bool(req.get("headers", False))
        self.no_resp = bool(req.get("no_responders", False)) and self.headers
        self._set_principal(principal)
        self.parser.max_payload = self.cfg.max_payload
        self._preauth_held(0)
        self.state = ST_READY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not implicit:
            self.ok()
        log.debug("client %d (%s) ready (NATS): name=%r lang=%r version=%r user=%r", self.id,
                  self.peer, self.name, self.lang, self.version, self.user)

    # -- the ops -----------------------------------------------------------------------

    def _connect_again(self, it):
        self.ok()                       # nats-server takes a second CONNECT too

    def _pub(self, it):
        _op, subject, reply, payload = it
        if self.verbose:
            # +OK before the message is routed (and echoed), as nats-server
            # does; the refusals come instead of it
            if not self._may_publish(subject, reply, use=False):     # (route spends a permit)
                return
            self.ok()
        for e in self.parser.route(subject, reply, payload):
            if e[0] == "error":
                if e[1] == _INVALID_PUB:
                    self._invalid_pub()
                else:
                    self.err(0, e[1])
            else:
                self.no_responders(e[1])

    def _invalid_pub(self):
        """A PUB/HPUB on an invalid subject or with an invalid reply subject:
        as nats-server, -ERR in pedantic mode, else dropped silently (nats-py
        and nats.go close the connection on an -ERR they do not know);
        counted either way."""
        self.server.n_invalid_pubs += 1
        if self.pedantic:
            self.err(0, _INVALID_PUB)

    def _may_publish(self, subject, reply=None, use=True):
        """-ERR (or a silent drop) and False if ``subject`` may not be
        published (or ``reply`` is not a literal subject; ``use``: spend a
        response permit it needs)."""
        try:
            validate_subject(subject)
            if reply is not None:
                validate_subject(reply)
        except SubjectError:
            self._invalid_pub()
            return False
        if not self.may_publish(subject, use):
            self.server.n_denied += 1
            self.err(0, 'Permissions Violation for Publish to "{}"'.format(subject))
            return False
        return True

    def _hpub(self, it):
        _op, subject, reply, headers, payload = it
        if not self.headers:
            # nats-server: a protocol violation, the connection closes
            self.server.n_protocol_errors += 1
            self.close(400, "Parser Error")
            return
        self.in_msgs_py += 1
        if not self._may_publish(subject, reply):
            return
        flow = self.flow
        try:
            record = event_from_nats(subject, headers, payload, flow.source,
                                     self.cfg.nats_lineage == "keep").encode()
        except EventError as exc:
            self.err(0, "Invalid CloudEvents Headers: {}".format(exc))
            return
        self.ok()
        try:
            before = flow.n_delivered
            flow.publish_record(subject, record, reply, self.outbuf)
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it: as nats-server, no -ERR
        except FastflowError as exc:    # the flow is closed
            self.err(0, str(exc))
            return
        if reply and flow.n_delivered == before:
            self.no_responders(reply)

    def no_responders(self, reply):
        """A request nobody received: a 503 status message to the
        requester's subscription of its reply subject (if it asked)."""
        if not self.no_resp:
            return
        try:
            targets = self.flow.matcher.match(reply)
        except (SubjectError, ValueError):
            return
        for t in targets:
            if type(t) is WireTarget and t.outbuf is self.outbuf and t.nsid is not None:
                self.outbuf.nats_msg(reply, t.nsid, None, _STATUS_503, b"")
                return

    def _sub(self, it):
        _op, pattern, queue, sid = it
        try:
            validate_pattern(pattern)
            if queue is not None:
                validate_pattern(queue)
                if "*" in queue.split(".") or ">" in queue.split("."):
                    raise SubjectError("a queue group is a name, not a pattern")
        except SubjectError:
            self.err(0, "Invalid Subject")
            return
        perms = self.principal.permissions
        if not perms.unrestricted and perms.subscribe_denied(pattern, queue) is not None:
            self.server.n_denied += 1
            self.err(0, 'Permissions Violation for Subscription to "{}"{}'.format(
                pattern, ' using queue "{}"'.format(queue) if queue else ""))
            return
        old = self.subs.get(sid)
        if old is not None and old[0].handle in self.flow.matcher:
            self.ok()                   # a sid in use: nats-server ignores the SUB
            return
        if old is not None:
            self._forget_sub(sid)
        limit = self.cfg.max_subscriptions
        if limit and len(self.subs) >= limit:    # live ones only: O(1)
            self.err(0, "maximum subscriptions exceeded")
            return
        t = WireTarget(self.outbuf, 0, self.echo, sid)
        t.owner = self
        if self.responses is not None:
            t.replies = self.responses.pending
        t.on_end = functools.partial(self._sub_ended, sid)
        self.flow.add(pattern, t, queue)
        self.subs[sid] = (t, pattern, queue)
        self.ok()

    def _unsub(self, it):
        _op, sid, mx = it
        entry = self.subs.get(sid)
        if entry is not None:
            t = entry[0]
            if mx and mx > t.delivered:
                t.remaining = mx - t.delivered  # max counts what was delivered already
            else:
                self._forget_sub(sid)
        self.ok()

    def _ping(self, it):
        self.outbuf.write(_PONG)

    def _client_err(self, it):
        log.info("client %d (%s) sent -ERR %s", self.id, self.peer, it[1])

    # -- monitoring --------------------------------------------------------------------

    def stats(self, now, subs=False):
        d = NativeConnection.stats(self, now, subs)
        d["headers"] = self.headers
        d["verbose"] = self.verbose
        return d


_HANDLERS = {
    "connect": NatsConnection._connect_again,
    "pub": NatsConnection._pub,
    "hpub": NatsConnection._hpub,
    "sub": NatsConnection._sub,
    "unsub": NatsConnection._unsub,
    "ping": NatsConnection._ping,
    "pong": NativeConnection._pong,
    "-err": NatsConnection._client_err,
}
