"""The MQTT door (docs/mqtt.md): MQTT 3.1, 3.1.1 and 5.0 clients on the
engine, their topics mapped to subjects (``fastflow.mqtt``).

The parser (``MqttParser``) cuts packets and routes plain QoS 0 publishes
in C; this module is the door's handler table: CONNECT and sessions,
SUBSCRIBE (deliveries, retained messages), PUBLISH at QoS 1 and 2 both
ways, wills, keep-alive.

Sessions live in the server (``MqttSessions``) while their client is
away: its subscriptions stay in the engine and what they match waits in
the session, up to ``max_queued`` messages (QoS 1 and 2).
"""

import base64
import json
import logging
import os
import struct
import time
from collections import OrderedDict, deque

from fastflow._files import atomic_write
from fastflow._impl import MqttParser, MqttTarget, SubTarget
from fastflow.errors import MqttError, SubjectError
from fastflow.event import Event
from fastflow.mqtt import mqtt_filter_to_patterns, mqtt_topic_to_subject, subject_to_mqtt_topic
from fastflow.server.connection import CLOSING, READY, DoorProtocol

__all__ = ("MqttProtocol", "MqttSessions")

log = logging.getLogger("fastflow.server")

CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 2, 3, 4, 5, 6, 7
SUBACK, UNSUBACK, PINGRESP, DISCONNECT = 9, 11, 13, 14

# MQTT 5 reason codes the door sends (section 2.4)
RC_SUCCESS = 0x00
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL = 0x82
RC_UNSUPPORTED_VERSION = 0x84
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_BUSY = 0x89
RC_BAD_CREDENTIALS = 0x86
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_ID_NOT_FOUND = 0x92
RC_QUOTA_EXCEEDED = 0x97
RC_SHARED_NOT_SUPPORTED = 0x9E

# MQTT 3.1.1 CONNACK return codes for the same refusals
_V3_CONNACK = {RC_NOT_AUTHORIZED: 5, RC_BAD_CREDENTIALS: 4, RC_SERVER_BUSY: 3,
               0x84: 1, 0x85: 2}

_PINGRESP = b"\xd0\x00"


# -- writing packets ---------------------------------------------------------------------------


def _vbi(n):
    """A variable byte integer."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def _packet(kind, flags, body):
    return bytes([kind << 4 | flags]) + _vbi(len(body)) + body


def _props(pairs):
    """An MQTT 5 property block from (identifier, encoded value) pairs."""
    body = b"".join(bytes([i]) + v for i, v in pairs)
    return _vbi(len(body)) + body


def publish_packet(version, topic, payload, qos=0, packet_id=None, retain=False, dup=False,
                   props=b""):
    """A PUBLISH; ``props``: the MQTT 5 property block's content (bytes)."""
    body = _str(topic)
    if qos:
        body += struct.pack(">H", packet_id)
    if version == 5:
        body += _vbi(len(props)) + props
    return _packet(PUBLISH, (dup << 3) | (qos << 1) | int(retain), body + payload)


# the PUBLISH properties a subscriber gets as the publisher sent them (MQTT 5
# section 3.3.2.3: topic alias and subscription identifiers are per connection)
def _forwarded_props(props):
    """The property block content (bytes) of ``props`` (the parser's dict)
    that travels with the message to its subscribers."""
    out = bytearray()
    v = props.get("payload_format_indicator")
    if v is not None:
        out += bytes([0x01, v])
    v = props.get("message_expiry_interval")
    if v is not None:
        out += b"\x02" + struct.pack(">I", v)
    v = props.get("content_type")
    if v is not None:
        out += b"\x03" + _str(v)
    v = props.get("response_topic")
    if v is not None:
        out += b"\x08" + _str(v)
    v = props.get("correlation_data")
    if v is not None:
        out += b"\x09" + struct.pack(">H", len(v)) + v
    for k, val in props.get("user_property", ()):
        out += b"\x26" + _str(k) + _str(val)
    return bytes(out)


# -- sessions ----------------------------------------------------------------------------------


class Session:
    """One client id's state: its subscriptions (filter -> [options,
    patterns, queue group, engine handles]), the QoS 1/2 messages that
    wait for it or for its acknowledgement, and the inbound QoS 2 packet
    ids awaiting PUBREL."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.subs = OrderedDict()
        self.conn = None                # the MqttProtocol serving it, None while away
        self.queue = deque()            # (topic, payload, qos, retain) not yet sent
        self.inflight = OrderedDict()   # packet id -> [topic, payload, qos, retain, state]
        self.inbound_qos2 = set()       # packet ids received at QoS 2, PUBREL not yet
        self.next_id = 1
        self.expiry = 0                 # seconds the session outlives its connection
        self.gone_at = None             # when its connection ended
        self.dropped = 0

    def packet_id(self):
        for _ in range(65535):
            pid = self.next_id
            self.next_id = pid % 65535 + 1
            if pid not in self.inflight:
                return pid
        raise MqttError(RC_QUOTA_EXCEEDED, "no free packet identifier")


RETAINED_STREAM = "mqtt_retained"
RETAINED_PREFIX = "$MQTT.rt."


class MqttSessions:
    """The server's MQTT sessions and retained messages.  With a data
    directory, retained messages are kept in the stream ``mqtt_retained``
    (one event per topic, written as each arrives: crash-safe as every
    file-backed stream), and the sessions in ``<data_dir>/mqtt/sessions.json``,
    written when the server stops and read when it starts: a session that
    outlives its connection survives a restart with its subscriptions and
    the QoS 1/2 messages that wait for it."""

    def __init__(self, flow, max_queued=10000, data_dir=None):
        self.flow = flow
        self.sessions = {}              # client id -> Session
        self.retained = {}              # subject -> (topic, payload, qos, property bytes)
        self.max_queued = max_queued
        self.next_assigned = 1
        self.dir = os.path.join(data_dir, "mqtt") if data_dir else None
        self.stream = None
        if data_dir:
            from fastflow import Retention

            self.stream = flow.add_stream(RETAINED_STREAM, [RETAINED_PREFIX + ">"],
                                          Retention(max_per_subject=1))

    def retain(self, subject, topic, payload, qos, fwd):
        """Keep (or, with an empty payload, forget) the retained message of
        ``subject``."""
        if payload:
            self.retained[subject] = (topic, payload, qos, fwd)
        else:
            self.retained.pop(subject, None)
        if self.stream is None:
            return
        if payload:
            attrs = {"mqttqos": qos} if qos else {}
            if fwd:
                attrs["mqttprops"] = fwd
            self.flow.publish(Event(RETAINED_PREFIX + subject, payload,
                                    source=self.flow.source, **attrs))
        else:
            self.stream.purge(RETAINED_PREFIX + subject)

    def assign_id(self, server_id):
        cid = "ff-{}-{}".format(server_id[-8:], self.next_assigned)
        self.next_assigned += 1
        return cid

    def end(self, session):
        """Forget ``session`` and its subscriptions in the engine."""
        handles = [h for sub in session.subs.values() for h in sub[3]]
        if handles:
            self.flow.remove_many(handles)
        session.subs.clear()
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def expire(self, now):
        for s in list(self.sessions.values()):
            if s.conn is None and s.gone_at is not None and now - s.gone_at >= s.expiry:
                self.end(s)

    # -- deliveries to a session ---------------------------------------------------------

    def deliverer(self, session, opts):
        """The callback of a QoS 1/2 subscription of ``session``: to its
        connection, or into its queue while the client is away."""
        qos, no_local, rap, sid = opts
        sessions = self

        def deliver(ev):
            proto = session.conn
            if no_local and proto is not None and proto._publishing:
                return
            try:
                topic = subject_to_mqtt_topic(ev.routing_subject)
            except SubjectError:
                return
            ext = ev.extensions
            q = min(qos, ext.get("mqttqos", 0)) if ext else 0
            keep = bool(rap and ext and ext.get("mqttretain") is True)
            fwd = ext.get("mqttprops", b"") if ext else b""
            if type(fwd) is not bytes:
                fwd = b""
            if proto is None:
                if q and len(session.queue) < sessions.max_queued:
                    session.queue.append((topic, ev.data, q, keep, sid, fwd))
                else:
                    session.dropped += 1
                return
            proto._queue(topic, ev.data, q, keep, sid, fwd)
        return deliver

    def attach_away(self, session, sub):
        """Subscription ``sub`` of a session whose client is away: its QoS
        1/2 deliveries wait in the session (QoS 0 ones are not kept)."""
        opts, patterns, group, handles = sub
        if opts[0] == 0 or handles:
            return
        for p in patterns:
            handles.append(self.flow.add(p, SubTarget(self.deliverer(session, opts),
                                                      max_pending=0), group))

    # -- kept in the data directory ------------------------------------------------------

    def save(self):
        if self.dir is None:
            return
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        b64 = _b64
        sessions = []
        for s in self.sessions.values():
            if s.expiry == 0:
                continue
            # (what was sent and not acknowledged goes first, sent again after the restart)
            waiting = [(m[0], m[1], m[2], m[3], m[5], m[6]) for m in s.inflight.values()]
            waiting += s.queue
            sessions.append({
                "client_id": s.client_id, "expiry": s.expiry,
                "subs": [[flt, list(sub[0])] for flt, sub in s.subs.items()],
                "queue": [[t, b64(p), q, r, sid, b64(f)] for t, p, q, r, sid, f in waiting]})
        atomic_write(os.path.join(self.dir, "sessions.json"), json.dumps(sessions))

    def load(self):
        if self.dir is None:
            return
        from fastflow.mqtt import mqtt_filter_to_patterns

        unb64 = base64.b64decode
        n = len(RETAINED_PREFIX)
        for key, ev in self.stream.last(RETAINED_PREFIX + ">").items():
            subject = key[n:]
            try:
                topic = subject_to_mqtt_topic(subject)
            except SubjectError:
                continue
            ext = ev.extensions
            fwd = ext.get("mqttprops", b"")
            self.retained[subject] = (topic, ev.data, ext.get("mqttqos", 0),
                                      fwd if type(fwd) is bytes else b"")
        try:
            with open(os.path.join(self.dir, "sessions.json")) as f:
                saved = json.load(f)
        except FileNotFoundError:
            saved = []
        now = time.monotonic()
        for rec in saved:
            s = Session(rec["client_id"])
            s.expiry = rec["expiry"]
            s.gone_at = now
            for flt, opts in rec["subs"]:
                patterns, group = mqtt_filter_to_patterns(flt)
                sub = [tuple(opts), patterns, group, []]
                s.subs[flt] = sub
                self.attach_away(s, sub)
            for t, p, q, r, sid, fwd in rec["queue"]:
                s.queue.append((t, unb64(p), q, r, sid, unb64(fwd)))
            self.sessions[s.client_id] = s


def _b64(b):
    return base64.b64encode(b).decode("ascii")


# -- the door ----------------------------------------------------------------------------------


class MqttProtocol(DoorProtocol):
    """The MQTT handlers for one connection (``conn``)."""

    name = "mqtt"
    parser_error = MqttError
    ready_note = " (MQTT)"

    def __init__(self, conn):
        DoorProtocol.__init__(self, conn)
        cfg = self.cfg
        self.parser = MqttParser(self.flow, self.outbuf, cfg.max_payload + 65536 + 16,
                                 cfg.max_connect)
        self.version = 4
        self.session = None
        self.upgrade_principal = None   # WebSocket: who the upgrade request's credentials named
        self.keepalive = 0
        self.will = None
        self.clean_exit = False
        self.receive_max = 65535
        self.max_packet = 0
        self._connect_req = None
        self._acked = False             # the CONNACK was sent
        self._publishing = False        # a publish of this connection is being routed
        self._taken = False             # another connection took the session over

    # -- what the lifecycle writes -----------------------------------------------------

    def greet(self):
        pass                            # MQTT: the client speaks first

    def refusal(self, code, message):
        return self._connack_refusal(RC_SERVER_BUSY if code in (429, 503) else RC_UNSPECIFIED)

    def close_data(self, code, message, rid):
        if not self._acked:             # before the CONNACK (state is CLOSING already)
            if code == 401:
                return self._connack_refusal(RC_NOT_AUTHORIZED)
            if code == RC_UNSUPPORTED_VERSION:
                # (as mosquitto: a CONNACK in the words of 3.1.1 when the
                # level is unknown, return code 1)
                return self._connack_refusal(RC_UNSUPPORTED_VERSION)
            return b""
        if self.version == 5:
            reason = {408: RC_KEEP_ALIVE_TIMEOUT, 401: RC_NOT_AUTHORIZED,
                      400: RC_PROTOCOL}.get(code, RC_UNSPECIFIED)
            if isinstance(code, int) and 0x80 <= code <= 0xA2:
                reason = code
            return _packet(DISCONNECT, 0, bytes([reason]) + _props(
                [(0x1F, _str(str(message)[:200]))] if message else []))
        return b""

    def ping(self):
        pass                            # MQTT: the client pings; keep-alive in tick()

    def err(self, code, message, rid=0):
        log.debug("client %d: MQTT error %s: %s", self.conn.id, code, message)

    def protocol_error(self, exc):
        return exc.reason, str(exc)

    def tick(self, now):
        conn = self.conn
        if self.keepalive and now - conn.last_in > 1.5 * self.keepalive:
            self._lost_will()
            conn.close(RC_KEEP_ALIVE_TIMEOUT, "keep alive timeout")
            return True
        return False

    def _connack_refusal(self, reason):
        if self.version == 5:
            return _packet(CONNACK, 0, b"\x00" + bytes([reason]) + _props([]))
        return _packet(CONNACK, 0, b"\x00" + bytes([_V3_CONNACK.get(reason, 3)]))

    # -- the packets -------------------------------------------------------------------

    def handle(self, items):
        conn = self.conn
        rest = iter(items)
        for item in rest:
            if conn.state >= CLOSING:
                return
            kind = item[0]
            if conn.state != READY:
                if kind == 1:
                    if self._connect(item[1], rest):
                        return
                    continue
                conn.close(RC_PROTOCOL, "CONNECT first")
                return
            try:
                handler = _HANDLERS[kind]
            except KeyError:
                conn.close(RC_PROTOCOL, "unexpected packet {}".format(kind))
                return
            try:
                handler(self, *item[1:])
            except MqttError as exc:
                conn.close(exc.reason, str(exc))
                return
            except Exception as exc:
                log.exception("client %d: MQTT packet %d failed", conn.id, kind)
                conn.close(RC_UNSPECIFIED, "internal error: {}".format(exc))
                return

    # -- CONNECT -----------------------------------------------------------------------

    def _connect(self, c, rest):
        conn = self.conn
        self.version = c["version"]
        props = c["props"]
        self.keepalive = c["keepalive"]
        self.will = c["will"]
        self.receive_max = props.get("receive_maximum", 65535)
        self.max_packet = props.get("maximum_packet_size", 0)
        creds = {}
        if c["username"] is not None:
            creds["user"] = c["username"]
        if c["password"] is not None:
            try:
                creds["password"] = c["password"].decode("utf-8")
            except UnicodeDecodeError:
                creds["password"] = c["password"].decode("latin-1")
        req = {"name": c["client_id"], "mqtt": c}
        if self.upgrade_principal is not None and not creds:
            conn.connected(req, self.upgrade_principal, 0)  # (MQTT over WebSocket)
            return False
        return conn.authenticate(creds, req, rest, 0)

    def options(self, req):
        self._connect_req = req["mqtt"]

    def welcome(self, rid):
        self._accepted(self._connect_req)

    def _accepted(self, c):
        """The CONNACK of an accepted CONNECT, the session taken or made."""
        srv = self.server
        sessions = srv.mqtt_sessions
        cid = c["client_id"]
        assigned = None
        if not cid:
            if self.version != 5 and not c["clean"]:
                self.outbuf.write(_packet(CONNACK, 0, b"\x00\x02"))   # identifier rejected
                self.conn.close(flush=True)
                return
            cid = assigned = sessions.assign_id(srv.id)
        old = sessions.sessions.get(cid)
        if old is not None and old.conn is not None and old.conn is not self:
            old.conn._taken_over()
        present = False
        if old is not None and not c["clean"]:
            session = old
            present = True
        else:
            if old is not None:
                sessions.end(old)
            session = Session(cid)
            sessions.sessions[cid] = session
        session.conn = self
        session.gone_at = None
        if self.version == 5:
            session.expiry = c["props"].get("session_expiry_interval", 0)
        else:
            session.expiry = 0 if c["clean"] else 0xFFFFFFFF
        self.session = session
        if self.version == 5:
            pairs = [(0x21, struct.pack(">H", 65535)), (0x22, struct.pack(">H", 0)),
                     (0x2A, b"\x01")]
            if assigned is not None:
                pairs.append((0x12, _str(assigned)))
            if self.keepalive == 0:
                pass
            body = bytes([int(present), 0]) + _props(pairs)
        else:
            body = bytes([int(present), 0])
        self.outbuf.write(_packet(CONNACK, 0, body))
        self._acked = True
        if present:                     # its subscriptions write to this connection now
            for sub in session.subs.values():
                if sub[0][0] == 0 or not sub[3]:
                    self._attach(session, sub)
                if sub[0][0] and sub[0][1]:
                    self.parser.route_pubs = False  # (no-local at QoS 1/2: see _subscribe)
        # what waited while the client was away
        for pid, m in list(session.inflight.items()):
            self._send(m[0], m[1], m[2], m[3], pid, dup=True, sid=m[5], fwd=m[6])
        self._drain_queue()

    def _taken_over(self):
        conn = self.conn
        if conn.state >= CLOSING:
            return
        self._taken = True              # (the new connection has the session now)
        conn.close(RC_SESSION_TAKEN_OVER, "session taken over")

    # -- PUBLISH in --------------------------------------------------------------------

    def _publish(self, flags, topic, packet_id, props, payload):
        qos = (flags >> 1) & 3
        retain = bool(flags & 1)
        conn = self.conn
        if "topic_alias" in props:
            # (CONNACK's Topic Alias Maximum is 0: no alias is valid)
            raise MqttError(RC_TOPIC_ALIAS_INVALID, "topic alias {} over the maximum 0".format(
                props["topic_alias"]))
        if qos == 2 and packet_id in self.session.inbound_qos2:
            self.outbuf.write(_packet(PUBREC, 0, struct.pack(">H", packet_id)))
            return                      # a resend: delivered once already
        try:
            subject = mqtt_topic_to_subject(topic)
        except SubjectError as exc:
            raise MqttError(RC_TOPIC_NAME_INVALID, str(exc)) from None
        if not conn.may_publish(subject):
            self.server.n_denied += 1
            if self.version == 5:
                self._ack(qos, packet_id, RC_NOT_AUTHORIZED)
                return
            if qos:
                self._ack(qos, packet_id, 0)     # 3.1.1 has no refusal: acknowledged, dropped
            return
        # the MQTT side of the message travels as extensions: its QoS (a
        # subscriber gets the lower of it and its own; the other doors'
        # messages are QoS 0, as nats-server has it) and the MQTT 5
        # properties its subscribers get (the block as bytes)
        attrs = {}
        if qos:
            attrs["mqttqos"] = qos
        if retain:
            attrs["mqttretain"] = True  # (for subscriptions with retain-as-published)
        fwd = _forwarded_props(props) if props else b""
        if fwd:
            attrs["mqttprops"] = fwd
            if "content_type" in props:
                attrs["datacontenttype"] = props["content_type"]
        record = Event(subject, payload, source=self.flow.source, **attrs).encode()
        if retain:
            self.server.mqtt_sessions.retain(subject, topic, payload, qos, fwd)
        conn.in_msgs_py += 1
        # (the origin: this connection's no-local subscriptions skip it, the
        # QoS 0 ones in C by the origin, the others by _publishing: their
        # deliveries run inline, within this call)
        self._publishing = True
        try:
            self.flow.publish_record(subject, record, None, self.outbuf)
        except Exception as exc:        # a full stream: the subscribers had it
            log.debug("client %d: publish on %s: %s", conn.id, subject, exc)
        finally:
            self._publishing = False
        if qos == 2:
            self.session.inbound_qos2.add(packet_id)
        self._ack(qos, packet_id, 0)

    def _ack(self, qos, packet_id, reason):
        if not qos:
            return
        body = struct.pack(">H", packet_id)
        if self.version == 5 and reason:
            body += bytes([reason])
        self.outbuf.write(_packet(PUBACK if qos == 1 else PUBREC, 0, body))

    def _pubrel(self, packet_id, reason, props):
        self.session.inbound_qos2.discard(packet_id)
        self.outbuf.write(_packet(PUBCOMP, 0, struct.pack(">H", packet_id)))

    # -- acknowledgements of what the door sent ----------------------------------------

    def _puback(self, packet_id, reason, props):
        self.session.inflight.pop(packet_id, None)
        self._drain_queue()

    def _pubrec(self, packet_id, reason, props):
        m = self.session.inflight.get(packet_id)
        if m is None:
            body = struct.pack(">H", packet_id) + (
                bytes([RC_PACKET_ID_NOT_FOUND]) if self.version == 5 else b"")
            self.outbuf.write(_packet(PUBREL, 2, body))
            return
        if reason >= 0x80:
            self.session.inflight.pop(packet_id, None)
            self._drain_queue()
            return
        m[4] = "rel"
        self.outbuf.write(_packet(PUBREL, 2, struct.pack(">H", packet_id)))

    def _pubcomp(self, packet_id, reason, props):
        self.session.inflight.pop(packet_id, None)
        self._drain_queue()

    # -- SUBSCRIBE ---------------------------------------------------------------------

    def _subscribe(self, packet_id, filters, props):
        conn = self.conn
        session = self.session
        codes = bytearray()
        retained_out = []
        perms = conn.principal.permissions
        for flt, options in filters:
            qos = options & 3
            no_local = bool(options & 4)
            rap = bool(options & 8)
            handling = (options >> 4) & 3
            try:
                patterns, group = mqtt_filter_to_patterns(flt)
            except SubjectError:
                codes.append(RC_TOPIC_FILTER_INVALID if self.version == 5 else 0x80)
                continue
            if not perms.unrestricted and any(
                    perms.subscribe_denied(p, group) is not None for p in patterns):
                self.server.n_denied += 1
                codes.append(RC_NOT_AUTHORIZED if self.version == 5 else 0x80)
                continue
            existed = flt in session.subs
            if existed:
                old = session.subs.pop(flt)
                self.flow.remove_many(old[3])
            sid = props.get("subscription_identifier")
            sub = [(qos, no_local, rap, sid), patterns, group, []]
            self._attach(session, sub)
            if no_local and qos:
                # (the parser's C path routes without telling Python whose
                # publish it is: this connection's publishes go through Python)
                self.parser.route_pubs = False
            session.subs[flt] = sub
            codes.append(qos)
            if group is None and (handling == 0 or (handling == 1 and not existed)):
                retained_out.append((patterns, qos, rap, sid))
        self.outbuf.write(_packet(SUBACK, 0, struct.pack(">H", packet_id) + (
            _props([]) if self.version == 5 else b"") + bytes(codes)))
        if retained_out:
            self._send_retained(retained_out)

    def _attach(self, session, sub):
        """Put subscription ``sub`` of ``session`` in the engine for this
        connection: QoS 0 through the C wire target (PUBLISH packets
        written as the router delivers), QoS 1 and 2 through the session."""
        opts, patterns, group, handles = sub
        qos, no_local, _rap, sid = opts
        if handles:
            self.flow.remove_many(handles)
            del handles[:]
        for p in patterns:
            if qos == 0:
                t = MqttTarget(self.outbuf, self.version, "raw",
                               sid if self.version == 5 else None, self.max_packet,
                               not no_local)
            else:
                t = SubTarget(self.server.mqtt_sessions.deliverer(session, opts),
                              max_pending=0)
            handles.append(self.flow.add(p, t, group))

    def _send_retained(self, wanted):
        from fastflow._impl import Matcher

        retained = self.server.mqtt_sessions.retained
        for patterns, qos, _rap, sid in wanted:
            m = Matcher(cache_size=0)
            for p in patterns:
                m.add(p, True)
            for subject, (topic, payload, rqos, fwd) in list(retained.items()):
                if m.match(subject):
                    self._queue(topic, payload, min(qos, rqos), True, sid, fwd)

    def _unsubscribe(self, packet_id, filters, props):
        session = self.session
        codes = bytearray()
        for flt in filters:
            old = session.subs.pop(flt, None)
            if old is None:
                codes.append(RC_NO_SUBSCRIPTION_EXISTED)
                continue
            self.flow.remove_many(old[3])
            codes.append(RC_SUCCESS)
        body = struct.pack(">H", packet_id)
        if self.version == 5:
            body += _props([]) + bytes(codes)
        self.outbuf.write(_packet(UNSUBACK, 0, body))

    # -- delivering --------------------------------------------------------------------

    def _queue(self, topic, payload, qos, retain, sid=None, fwd=b""):
        session = self.session
        if qos == 0:
            self._send(topic, payload, 0, retain, None, sid=sid, fwd=fwd)
            return
        session.queue.append((topic, payload, qos, retain, sid, fwd))
        self._drain_queue()

    def _drain_queue(self):
        session = self.session
        if session is None:
            return
        while session.queue and len(session.inflight) < self.receive_max:
            topic, payload, qos, retain, sid, fwd = session.queue.popleft()
            if qos == 0:
                self._send(topic, payload, 0, retain, None, sid=sid, fwd=fwd)
                continue
            pid = session.packet_id()
            session.inflight[pid] = [topic, payload, qos, retain, "pub", sid, fwd]
            self._send(topic, payload, qos, retain, pid, sid=sid, fwd=fwd)

    def _send(self, topic, payload, qos, retain, pid, dup=False, sid=None, fwd=b""):
        props = b""
        if self.version == 5:
            props = fwd
            if sid:
                props += b"\x0b" + _vbi(sid)
        pkt = publish_packet(self.version, topic, payload, qos, pid, retain, dup, props)
        if self.max_packet and len(pkt) > self.max_packet:
            return
        self.outbuf.write(pkt)

    # -- PING, DISCONNECT, the end -----------------------------------------------------

    def _pingreq(self):
        self.outbuf.write(_PINGRESP)

    def _disconnect(self, reason, props):
        if reason != 0x04:
            self.will = None
        if self.version == 5 and "session_expiry_interval" in props and self.session:
            self.session.expiry = props["session_expiry_interval"]
        self.clean_exit = True
        self.conn.close(flush=True)

    def _auth(self, reason, props):
        raise MqttError(RC_PROTOCOL, "AUTH without an authentication method")

    def _lost_will(self):
        will, self.will = self.will, None
        if will is None:
            return
        topic, payload, qos, retain, props = will
        delay = props.get("will_delay_interval", 0) if self.version == 5 else 0
        try:
            subject = mqtt_topic_to_subject(topic)
        except SubjectError:
            return

        def send():
            if retain:
                self.server.mqtt_sessions.retain(subject, topic, payload, qos,
                                                 _forwarded_props(props) if props else b"")
            attrs = {"mqttqos": qos} if qos else {}
            fwd = _forwarded_props(props) if props else b""
            if fwd:
                attrs["mqttprops"] = fwd
            try:
                self.flow.publish(Event(subject, payload, source=self.flow.source, **attrs))
            except Exception:
                pass
        if delay:
            self.loop.call_later(delay, send)
        else:
            send()

    def ended(self):
        """The connection is gone: the will, and the session kept or ended."""
        if not self.clean_exit:
            self._lost_will()
        session = self.session
        if self._taken or session is None or session.conn is not self:
            return
        session.conn = None
        session.gone_at = time.monotonic()
        if session.expiry == 0:
            self.server.mqtt_sessions.end(session)


_HANDLERS = {
    3: MqttProtocol._publish,
    4: MqttProtocol._puback,
    5: MqttProtocol._pubrec,
    6: MqttProtocol._pubrel,
    7: MqttProtocol._pubcomp,
    8: MqttProtocol._subscribe,
    10: MqttProtocol._unsubscribe,
    12: MqttProtocol._pingreq,
    14: MqttProtocol._disconnect,
    15: MqttProtocol._auth,
}
