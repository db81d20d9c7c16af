"""The NATS front door (docs/nats.md): the NATS client protocol on its own
port, with the same engine, users, permissions, limits, slow-consumer
policy and monitoring as the native door.

Each connection's lifecycle is the shared one (``Connection``); this module
is the NATS protocol's part (``NatsProtocol``): its parser, one handler per
op, and the NATS words for INFO, PING, +OK/-ERR and the reasons a
connection closes.

The hot path runs in C: ``NatsParser.feed`` cuts the protocol and routes
every PUB to the engine as an event with the defaults; the router writes
MSG lines for NATS subscriptions (``NatsTarget``) straight
into the connection's ``OutBuf``.  Python handles CONNECT, SUB, UNSUB,
PING/PONG and HPUB (headers become CloudEvents attributes, per the
CloudEvents NATS binding: ``ce-*`` headers and Content-Type; other headers
are kept as they came, in the ``natsheaders`` extension).
"""

import json
import logging
import re

from fastflow._attrs import HOPS, TRACE
from fastflow._impl import (
    Event,
    NatsError,
    NatsParser,
    NatsTarget,
    validate_pattern,
    validate_subject,
)
from fastflow._version import __version__
from fastflow.errors import (EventError, EventTooLarge, FastflowError, LogFullError,
                             SignatureError, SubjectError)
from fastflow.event import BAD_CONTENT_TYPE, header_value, unheader
from fastflow.server.connection import CLOSING, READY, DoorProtocol, connect_json

__all__ = ("NatsProtocol", "event_from_nats", "header_block")

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


class NatsProtocol(DoorProtocol):
    """The NATS protocol's handlers for one connection (``conn``)."""

    name = "nats"
    parser_error = NatsError
    ready_note = " (NATS)"
    checks_schemas = True

    def __init__(self, conn):
        DoorProtocol.__init__(self, conn)
        cfg = self.cfg
        self.parser = NatsParser(self.flow, self.outbuf, cfg.max_payload, cfg.nats_max_control)
        if self.server.auth.required:
            # before CONNECT a payload may be no larger than max_connect (the
            # line is bounded by nats_max_control): nothing bigger is buffered
            self.parser.max_payload = min(cfg.max_payload, cfg.max_connect)
        self.headers = False
        self.no_resp = False
        self.pedantic = False

    # -- TLS: INFO in plain text, then the client starts the handshake -----------------

    def started(self):
        if self.server.ssl_context is not None:
            self.conn.start_tls()

    def refused(self, data):
        conn = self.conn
        if conn.upgrading and conn.state < CLOSING:    # plain text where TLS was required
            conn.close(400, "Secure Connection - TLS Required")
            return True
        return False

    # -- what the lifecycle writes -----------------------------------------------------

    def greet(self):
        self.outbuf.write(self._info_line())

    def refusal(self, code, message):
        return self._info_line() + self.close_data(code, message, 0)   # (INFO first)

    def _info_line(self):
        srv = self.server
        cfg = self.cfg
        conn = self.conn
        info = {
            "server_id": srv.id, "server_name": srv.name, "version": __version__,
            "proto": PROTO, "go": "fastflow", "host": cfg.nats_host or cfg.host,
            "port": srv.nats_port, "headers": True, "max_payload": cfg.max_payload,
            "client_id": conn.id, "client_ip": conn.peer.rpartition(":")[0].strip("[]"),
        }
        if srv.auth.required:
            info["auth_required"] = True
        if srv.ssl_context is not None:
            info["tls_required"] = True
            if cfg.tls_verify:
                info["tls_verify"] = True
        return b"INFO " + json.dumps(info, separators=(",", ":")).encode() + b"\r\n"

    def close_data(self, code, message, rid):
        text = _CLOSE_TEXTS.get(code)         # (400: the message is the text)
        if code == 408:
            text = "Stale Connection" if "stale" in message else "Authentication Timeout"
        elif code == 429 and "active connections" in message:     # an account's quota
            text = "maximum account active connections exceeded"
        return _err_line(text or message)

    def ping(self):
        self.outbuf.write(_PING)

    def ok(self):
        if self.conn.verbose:
            self.outbuf.write(_OK)

    def err(self, code, message, rid=0):
        log.debug("client %d: -ERR %s", self.conn.id, message)
        self.outbuf.write(_err_line(message))

    def revoked(self, sid, pattern, why):
        self.err(0, 'Permissions Violation for Subscription to "{}"'.format(pattern))

    def protocol_error(self, exc):
        if exc.text == "Maximum Payload Violation" and self.conn.state < READY \
                and self.server.auth.required:
            return 401, "Authorization Violation"   # nats-server: CONNECT first
        return 400, exc.text                # (-ERR with nats-server's text)

    # -- the ops -----------------------------------------------------------------------

    def handle(self, items):
        """Act on the parser's entries: each goes to its op's handler, with
        the entry's fields as arguments (``("pub", subject, reply,
        payload)`` -> ``_pub(op, subject, reply, payload)``)."""
        conn = self.conn
        rest = iter(items)              # (what follows a CONNECT may wait for its check)
        for item in rest:
            if conn.state >= CLOSING:
                return
            op = item[0]                # the op, or what the parser has to say
            if op == "error":
                _op, text = item
                self._error(text)
                continue
            if op == "noresp":
                _op, reply = item
                self.no_responders(reply)
                continue
            if conn.state != READY:
                if op == "connect":
                    _op, body = item
                    if self._connect(body, rest):
                        return          # the rest waits for the (asynchronous) check
                    continue
                if self.server.auth.required:     # (nats-server: CONNECT first)
                    self.server.n_auth_failures += 1
                    log.info("client %d (%s): %s before CONNECT", conn.id, conn.peer,
                             op.upper())
                    conn.close(401, "Authorization Violation")
                    return
                if op == "ping":
                    self.outbuf.write(_PONG)
                    continue
                if op in ("pong", "+ok", "-err", "info"):
                    continue
                # no auth: nats-server takes the defaults of a CONNECT never sent
                conn.connected({}, self.server.auth.anonymous, 0, answer=False)
            try:
                handler = _HANDLERS[op]
            except KeyError:
                continue                # +OK, INFO from a client: nothing to do
            try:
                handler(self, *item)
            except Exception as exc:
                log.exception("client %d: %s failed", conn.id, op.upper())
                self.err(500, "Internal Error: {}".format(exc))

    def _error(self, text):
        """A refusal the parser made (an invalid or denied publish)."""
        if text == _INVALID_PUB:
            self._invalid_pub()
        else:
            self.err(0, text)

    # -- CONNECT -----------------------------------------------------------------------

    def _connect(self, body, rest):
        """True when the entries ``rest`` must wait or the connection closed."""
        conn = self.conn
        try:
            req = connect_json(body)
        except ValueError as exc:
            self.server.n_protocol_errors += 1
            log.info("client %d (%s): invalid CONNECT: %s", conn.id, conn.peer, exc)
            conn.close(400, "Invalid Connect Protocol")       # (nats-server: closes)
            return True
        if req.get("no_responders") and not req.get("headers"):
            conn.close(400, "no responders requires headers support")
            return True
        creds = {}
        for ours, theirs in (("user", "user"), ("password", "pass"), ("token", "auth_token")):
            if req.get(theirs) is not None:
                creds[ours] = req[theirs]
        return conn.authenticate(creds, req, rest, 0)

    def options(self, req):
        # nats-server's defaults for what CONNECT leaves out
        self.conn.verbose = bool(req.get("verbose", True))
        self.pedantic = bool(req.get("pedantic", True))
        self.headers = bool(req.get("headers", False))
        self.no_resp = bool(req.get("no_responders", False)) and self.headers
        self.parser.max_payload = self.cfg.max_payload

    def welcome(self, rid):
        self.ok()

    def _connect_again(self, _op, _body):
        self.ok()                       # nats-server takes a second CONNECT too

    # -- publishing --------------------------------------------------------------------

    def _schema_refused(self, store, event):
        """-ERR and True when ``event``'s data does not validate against a
        schema bound to its subject or type (docs/catalog.md).  The words
        are a publish permission's, the refusal NATS clients report
        without taking the connection down (nats.go)."""
        from fastflow.catalog.schemas import SchemaRefusal

        try:
            store.check((event,))
        except SchemaRefusal as exc:
            self.server.n_denied += 1
            self.err(0, 'Permissions Violation for Publish to "{}": {}'.format(
                event.routing_subject, exc))
            return True
        return False

    def _pub(self, _op, subject, reply, payload):
        store = self._schemas()
        if self.conn.verbose or store is not None:
            # +OK before the message is routed (and echoed), as nats-server
            # does; the refusals come instead of it
            if not self._may_publish(subject, reply, use=False):     # (route spends a permit)
                return
            if store is not None and self._schema_refused(
                    store, Event(subject, payload, source=self.flow.source)):
                return
            self.ok()
        for kind, arg in self.parser.route(subject, reply, payload):
            if kind == "error":
                self._error(arg)
            else:
                self.no_responders(arg)

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
        if not self.conn.may_publish(subject, use):
            self.server.n_denied += 1
            self.err(0, 'Permissions Violation for Publish to "{}"'.format(subject))
            return False
        return True

    def _hpub(self, _op, subject, reply, headers, payload):
        if not self.headers:
            # nats-server: a protocol violation, the connection closes
            self.server.n_protocol_errors += 1
            self.conn.close(400, "Parser Error")
            return
        self.conn.in_msgs_py += 1
        if not self._may_publish(subject, reply):
            return
        flow = self.flow
        try:
            event = event_from_nats(subject, headers, payload, flow.source,
                                    self.cfg.nats_lineage == "keep")
            record = event.encode()
        except EventError as exc:
            self.err(0, "Invalid CloudEvents Headers: {}".format(exc))
            return
        store = self._schemas()
        if store is not None and self._schema_refused(store, event):
            return
        self.ok()
        try:
            before = flow.n_delivered
            flow.publish_record(subject, record, reply, self.outbuf)
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it: as nats-server, no -ERR
        except SignatureError as exc:   # the trust policy (as a publish permission)
            self.err(0, 'Permissions Violation for Publish to "{}": {}'.format(subject, exc))
            return
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
            if type(t) is NatsTarget and t.outbuf is self.outbuf:
                self.outbuf.nats_msg(reply, t.sid, None, _STATUS_503, b"")
                return

    # -- subscriptions -----------------------------------------------------------------

    def _sub(self, _op, pattern, queue, sid):
        conn = self.conn
        try:
            validate_pattern(pattern)
            if queue is not None:
                validate_pattern(queue)
                if "*" in queue.split(".") or ">" in queue.split("."):
                    raise SubjectError("a queue group is a name, not a pattern")
        except SubjectError:
            self.err(0, "Invalid Subject")
            return
        perms = conn.principal.permissions
        if not perms.unrestricted and perms.subscribe_denied(pattern, queue) is not None:
            self.server.n_denied += 1
            self.err(0, 'Permissions Violation for Subscription to "{}"{}'.format(
                pattern, ' using queue "{}"'.format(queue) if queue else ""))
            return
        old = conn.subs.get(sid)
        if old is not None and old[0].handle in self.flow.matcher:
            self.ok()                   # a sid in use: nats-server ignores the SUB
            return
        if old is not None:
            conn.forget_sub(sid)
        limit = self.cfg.max_subscriptions
        if limit and len(conn.subs) >= limit:    # live ones only: O(1)
            self.err(0, "maximum subscriptions exceeded")
            return
        if conn.may_subscribe() is not None:     # the account's or the user's quota
            self.err(0, "maximum subscriptions exceeded")
            return
        # (a client that did not say "headers": true in CONNECT gets plain
        # MSGs, the headers left out, as nats-server does)
        conn.subscribe(sid, pattern, queue,
                       NatsTarget(self.outbuf, sid, conn.echo,
                                  self.server.nats_headers if self.headers else None))
        self.ok()

    def _unsub(self, _op, sid, mx):
        conn = self.conn
        entry = conn.subs.get(sid)
        if entry is not None:
            t = entry[0]
            if mx and mx > t.delivered:
                t.remaining = mx - t.delivered  # max counts what was delivered already
            else:
                conn.forget_sub(sid)
        self.ok()

    # -- PING / PONG, a client's -ERR ----------------------------------------------------

    def _ping(self, _op):
        self.outbuf.write(_PONG)

    def _pong(self, _op):
        self.conn.pings_out = 0

    def _client_err(self, _op, text):
        conn = self.conn
        log.info("client %d (%s) sent -ERR %s", conn.id, conn.peer, text)

    # -- monitoring --------------------------------------------------------------------

    def stats(self, d):
        d["headers"] = self.headers
        d["verbose"] = self.conn.verbose


# op -> handler(self, op, *the entry's fields), once the client is ready
_HANDLERS = {
    "connect": NatsProtocol._connect_again,
    "pub": NatsProtocol._pub,
    "hpub": NatsProtocol._hpub,
    "sub": NatsProtocol._sub,
    "unsub": NatsProtocol._unsub,
    "ping": NatsProtocol._ping,
    "pong": NatsProtocol._pong,
    "-err": NatsProtocol._client_err,
}
