"""The MQTT door (docs/mqtt.md): MQTT 3.1, 3.1.1 and 5.0 clients on the
engine, their topics mapped to subjects (``fastflow.mqtt``).

The parser (``MqttParser``) cuts packets and routes plain QoS 0 publishes
in C; this module is the door's handler table: CONNECT and sessions,
SUBSCRIBE (deliveries, retained messages), PUBLISH at QoS 1 and 2 both
ways, wills, keep-alive.

Sessions live in the server (``MqttSessions``) while their client is
away: its subscriptions stay in the engine and what they match waits in
the session, up to ``max_queued`` messages (QoS 1 and 2).  With a data
directory a persistent session is written as it changes (two streams:
``mqtt_sessions``, ``mqtt_queued``): a crash loses none of it.
"""

import datetime
import hashlib
import heapq
import json
import logging
import math
import re
import struct
import time
from collections import OrderedDict, deque

from fastflow._impl import (
    Matcher,
    MqttFlight,
    MqttParser,
    MqttTarget,
    SubTarget,
    mqtt_parts,
    mqtt_subject_topic,
    mqtt_topic_subject,
    sink_record,
)
from fastflow.errors import MqttError, SignatureError, SubjectError
from fastflow.event import Event, from_json
from fastflow.mqtt import mqtt_filter_to_patterns
from fastflow.server.connection import CLOSING, READY, DoorProtocol, conflate_option

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
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_BAD_AUTH_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_QUOTA_EXCEEDED = 0x97
RC_IMPLEMENTATION_SPECIFIC = 0x83
RC_PAYLOAD_FORMAT_INVALID = 0x99
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


def _expiry_deadline(props):
    """The ``mqttexpiry`` extension of a publish with a Message Expiry
    Interval: the moment it expires (a timestamp), or None."""
    v = props.get("message_expiry_interval")
    if v is None:
        return None
    return datetime.datetime.fromtimestamp(time.time() + v, datetime.timezone.utc)


def _deadline_of(ext):
    """The expiry moment (epoch seconds) of an event's ``mqttexpiry``, or None."""
    v = ext.get("mqttexpiry") if ext else None
    if type(v) is not str:
        return None
    try:
        return datetime.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# the sizes of the PUBLISH properties a forwarded block holds: 0 a string
# or binary data (2-byte length), -1 a string pair, -2 a variable byte integer
_PROP_SIZE = {0x01: 1, 0x02: 4, 0x03: 0, 0x08: 0, 0x09: 0, 0x0B: -2, 0x26: -1}


def _expiry_at(fwd):
    """Where the 4 bytes of the Message Expiry Interval are in ``fwd`` (a
    PUBLISH property block's content: _forwarded_props', a Subscriptions-API
    subscription's), or -1."""
    i, n = 0, len(fwd)
    while i < n:
        size = _PROP_SIZE.get(fwd[i])
        if size is None:
            return -1                   # (not a block of PUBLISH properties)
        if fwd[i] == 0x02:
            return i + 1 if i + 5 <= n else -1
        i += 1
        if size > 0:
            i += size
        elif size == -2:
            while i < n and fwd[i] & 0x80:
                i += 1
            i += 1
        else:
            for _ in range(2 if size == -1 else 1):
                if i + 2 > n:
                    return -1
                i += 2 + int.from_bytes(fwd[i:i + 2], "big")
    return -1


def _fwd_expiry(fwd):
    """The Message Expiry Interval in ``fwd``, or None."""
    i = _expiry_at(fwd)
    return None if i < 0 else struct.unpack(">I", fwd[i:i + 4])[0]


def _with_expiry(fwd, remaining):
    """``fwd`` (a forwarded property block) with the Message Expiry
    Interval ``remaining`` seconds (MQTT 5 section 3.3.2.3.3: the time the
    message waited in the server taken off)."""
    i = _expiry_at(fwd)
    if i < 0:
        return fwd
    return fwd[:i] + struct.pack(">I", remaining) + fwd[i + 4:]


# -- CloudEvents (the MQTT binding) ------------------------------------------------------------

EVF_MQTT = 4                # the record flag of a publish through this door (src_ext/event.pyx)
CE_STRUCTURED = "application/cloudevents+json"
# attribute names as CloudEvents 1.0 has them (section "Attribute Naming Convention")
_CE_NAME = re.compile(r"[a-z0-9]{1,20}\Z")


# a 5.0 SUBSCRIBE's User Property choosing how the other doors' events come
# (the binding's modes; MQTT's own messages always come as they were sent)
CE_MODE_PROPERTY = "cloudevents"
CONFLATE_PROPERTY = "conflate"          # SUBSCRIBE user property: 1/true, 0/false
CE_MODES = ("binary", "structured", "raw")


def delivery_mode(version, mode):
    """The MqttTarget mode of a subscription asking for ``mode`` (None: the
    default) on a connection of ``version``: 5.0 binary, 3.1.1 raw (the
    binary mode needs properties)."""
    if mode is None or (mode == "binary" and version != 5):
        return "binary" if version == 5 else "raw"
    return mode


def mqtt_record(event):
    """The record of ``event`` marked as published through this door (its
    MQTT subscribers get it as MQTT sent it: ``Event.from_mqtt``)."""
    rec = event.encode()
    return rec[:1] + bytes((rec[1] | EVF_MQTT,)) + rec[2:]


def ce_mode(version, props):
    """The CloudEvents mode of an MQTT 5 PUBLISH by its properties:
    "structured" (Content Type application/cloudevents+json), "binary"
    (a User Property specversion), or None (a plain message)."""
    if version != 5 or not props:
        return None
    ct = props.get("content_type")
    if ct is not None and ct.split(";", 1)[0].strip().lower() == CE_STRUCTURED:
        return "structured"
    for k, _v in props.get("user_property", ()):
        if k == "specversion":
            return "binary"
    return None


def ce_event(subject, payload, props, mode, attrs):
    """The event of a CloudEvents PUBLISH on ``subject``: ``mode``
    "structured" (the payload a CloudEvent in the JSON format) or "binary"
    (the attributes in User Properties by their names, datacontenttype the
    Content Type); ``attrs``: the door's own (``mqtt*``) extensions.
    Raises ValueError naming what is wrong."""
    if mode == "structured":
        ev = from_json(payload, subject)
        a = {k: v for k, v in ev.attributes().items()
             if k != "specversion" and not k.startswith("mqtt")}
        a.update(attrs)
        a["mqttce"] = "structured"
        return Event(subject, ev.data, **a)
    a = {}
    for k, v in props.get("user_property", ()):
        # (a User Property whose name is not an attribute name stays an
        # MQTT property only; the lineage and mqtt* are the engine's)
        if not _CE_NAME.match(k) or k in ("ffhops", "fftrace") or k.startswith("mqtt"):
            continue
        if k in a:
            raise ValueError("CloudEvents attribute {!r}: given twice in the user "
                             "properties".format(k))
        a[k] = v
    sv = a.pop("specversion", None)
    if sv != "1.0":
        raise ValueError("CloudEvents attribute 'specversion': only '1.0' is supported, "
                         "got {!r}".format(sv))
    for name in ("id", "source", "type"):
        if not a.get(name):
            raise ValueError("CloudEvents attribute {!r}: required, missing (a user property "
                             "{!r})".format(name, name))
    if "data" in a:
        raise ValueError("CloudEvents attribute 'data': reserved for the event data")
    if props.get("content_type") is not None:
        a["datacontenttype"] = props["content_type"]
    a.update(attrs)
    return Event(subject, payload, **a)


def subscription_message(ev, protocol, settings, hop=False):
    """What a Subscriptions-API subscription of ``protocol`` (MQTT3 or
    MQTT5; ``settings`` from fastflow.subscriptions.model) publishes for
    ``ev``: ``(record, payload, properties)``, the record (for the topic's
    subject, marked as this door's, one hop more with ``hop``) and the
    MQTT message its subscribers get.  MQTT5: the binding's binary mode
    (the attributes as User Properties, datacontenttype the Content Type),
    the Message Expiry Interval and the subscription's user properties;
    MQTT3: the structured mode (the event's JSON; Content Type
    application/cloudevents+json for 5.0 subscribers of the topic)."""
    attrs = {k: v for k, v in ev.attributes().items()
             if k != "specversion" and not k.startswith("mqtt")}
    plain = Event(ev.routing_subject, ev.data, **attrs)     # (as the other doors see it)
    if protocol == "MQTT5":
        props, payload = mqtt_parts(plain, 5, "binary")
        if settings["expiry"] is not None:
            props += b"\x02" + struct.pack(">I", settings["expiry"])
        for k, v in settings["userproperties"]:
            props += b"\x26" + _str(k) + _str(v)
    else:
        _none, payload = mqtt_parts(plain, 4, "structured")
        props = b"\x03" + _str(CE_STRUCTURED)
        attrs["mqttce"] = "structured"
    if settings["qos"]:
        attrs["mqttqos"] = settings["qos"]
    if settings["retain"]:
        attrs["mqttretain"] = True
    attrs["mqttprops"] = props
    rec = mqtt_record(Event(settings["subject"], ev.data, **attrs))
    if hop:
        rec = sink_record(settings["subject"], rec, True)
    return rec, payload, props


# -- sessions ----------------------------------------------------------------------------------


NEVER = 0xFFFFFFFF                      # a session expiry interval that never ends
FLIGHT_IDS = 32767                      # an MqttFlight's packet ids: 1 .. this


class Session:
    """One client id's state: its subscriptions (filter -> [options,
    patterns, queue group, engine handles]), the QoS 1/2 messages that
    wait for it or for its acknowledgement, and the inbound QoS 2 packet
    ids awaiting PUBREL."""

    def __init__(self, client_id):
        self.client_id = client_id
        self.key = hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:32]
        self.subs = OrderedDict()
        self.conn = None                # the MqttProtocol serving it, None while away
        # not yet sent: (topic, payload, qos, retain, sid, fwd, mid, deadline);
        # mid: its number in the stream mqtt_queued (None: not written),
        # deadline: when it expires (epoch seconds; None: never)
        self.queue = deque()
        # packet id -> [topic, payload, qos, retain, state, sid, fwd, mid, deadline]
        self.inflight = OrderedDict()
        self.inbound_qos2 = set()       # packet ids received at QoS 2, PUBREL not yet
        self.next_id = 1
        self.next_mid = 1
        self.staged = set()             # mids with a delivery state record ($MQTT.p)
        self.expiry = 0                 # seconds the session outlives its connection
        self.gone_at = None             # when its connection ended (time.time())
        self.stored = False             # written in the stream mqtt_sessions
        self.dropped = 0                # messages not queued: max_queued reached
        self.expired = 0                # messages dropped: their expiry interval passed
        self.user = None                # the user (or token:<name>) it belongs to
        self.version = 5                # its client's protocol level (how what waits is written)
        # a session that ends with its connection (expiry 0, new): its QoS 1
        # deliveries go through an MqttFlight (C), made at its first QoS 1/2
        # SUBSCRIBE; the packet ids of this side are then the ones above its
        self.flight_ok = False
        self.flight = None

    def packet_id(self):
        lo = FLIGHT_IDS + 1 if self.flight is not None else 1
        for _ in range(65536 - lo):
            pid = self.next_id
            if pid < lo:
                pid = lo
            self.next_id = pid + 1 if pid < 65535 else lo
            if pid not in self.inflight:
                return pid
        raise MqttError(RC_QUOTA_EXCEEDED, "no free packet identifier")

    def flight_stats(self):
        """(in flight, queued) of its MqttFlight."""
        f = self.flight
        return (f.inflight, f.queued) if f is not None else (0, 0)


RETAINED_STREAM = "mqtt_retained"
RETAINED_PREFIX = "$MQTT.rt."
# persistent sessions (docs/mqtt.md "Sessions, retained messages, wills"):
# $MQTT.sess.<key>            the session: client id, expiry, subscriptions (JSON)
# $MQTT.q.<key>.m<n>          a QoS 1/2 message for it (n: its number in the session)
# $MQTT.p.<key>.m<n>          that message sent: its packet id, PUBREL sent or not
# $MQTT.in.<key>.p<id>        an inbound QoS 2 packet id awaiting PUBREL
# (key: the client id's SHA-256, 32 hex digits: any client id makes one token)
SESSIONS_STREAM = "mqtt_sessions"
SESSION_PREFIX = "$MQTT.sess."
QUEUED_STREAM = "mqtt_queued"


class MqttSessions:
    """The server's MQTT sessions and retained messages.  With a data
    directory, retained messages are kept in the stream ``mqtt_retained``
    (one event per topic), persistent sessions (expiry > 0) in the stream
    ``mqtt_sessions`` (one event per session, written when the session
    changes) and what waits for them in ``mqtt_queued`` (an event per
    message written when it is queued, one per delivery state change,
    removed when acknowledged): all written as they happen, crash-safe as
    every file-backed stream; read back when the server starts."""

    def __init__(self, flow, max_queued=10000, data_dir=None, structured=(),
                 expiry_max=NEVER):
        self.flow = flow
        # the topics whose publishes are structured CloudEvents (a Matcher; None: none)
        self.structured = None
        if structured:
            self.structured = Matcher(cache_size=0)
            for flt in structured:
                patterns, _group = mqtt_filter_to_patterns(flt)
                for p in patterns:
                    self.structured.add(p, True)
        self.ce_refused = 0             # CloudEvents publishes refused (not valid)
        self.sessions = {}              # client id -> Session
        # subject -> (topic, payload, qos, property bytes, deadline: epoch seconds or None)
        self.retained = {}
        self.retained_expiry = []       # a heap of (deadline, subject): see expire()
        self.max_queued = max_queued
        self.expiry_max = expiry_max
        self.next_assigned = 1
        self.dropped = 0                # QoS 1/2 messages dropped at a full session queue
        self.too_large = 0              # PUBLISHes over max_payload, dropped
        self.expired = 0                # messages dropped at their expiry, all sessions
        self.sessions_expired = 0
        self.stream = self.sess_stream = self.queued = None
        if data_dir:
            from fastflow import Retention

            self.stream = flow.add_stream(RETAINED_STREAM, [RETAINED_PREFIX + ">"],
                                          Retention(max_per_subject=1))
            self.sess_stream = flow.add_stream(SESSIONS_STREAM, [SESSION_PREFIX + ">"],
                                               Retention(max_per_subject=1))
            self.queued = flow.add_stream(QUEUED_STREAM, ["$MQTT.q.>", "$MQTT.p.>",
                                                          "$MQTT.in.>"],
                                          Retention(max_per_subject=1))

    def retain(self, subject, topic, payload, qos, fwd):
        """Keep (or, with an empty payload, forget) the retained message of
        ``subject``; one with a Message Expiry Interval (in ``fwd``) is
        forgotten when it passes (MQTT 5 section 3.3.2.3.3)."""
        deadline = None
        if payload:
            interval = _fwd_expiry(fwd) if fwd else None
            if interval is not None:
                deadline = time.time() + interval
                self._expires(deadline, subject)
            self.retained[subject] = (topic, payload, qos, fwd, deadline)
        else:
            self.retained.pop(subject, None)
        if self.stream is None:
            return
        if payload:
            attrs = {"mqttqos": qos} if qos else {}
            if fwd:
                attrs["mqttprops"] = fwd
            if deadline is not None:
                attrs["mqttexpiry"] = datetime.datetime.fromtimestamp(deadline,
                                                                      datetime.timezone.utc)
            self.flow.publish(Event(RETAINED_PREFIX + subject, payload,
                                    source=self.flow.source, **attrs))
        else:
            self.stream.purge(RETAINED_PREFIX + subject)

    def _expires(self, deadline, subject):
        """Note when the retained message of ``subject`` expires (a
        republished topic leaves its old entry behind, skipped when it
        comes up: rebuilt once they outnumber the retained messages)."""
        heap = self.retained_expiry
        heapq.heappush(heap, (deadline, subject))
        if len(heap) > 2 * len(self.retained) + 1024:
            heap[:] = [(r[4], subj) for subj, r in self.retained.items() if r[4] is not None]
            heapq.heapify(heap)

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
        self.drop_flight(session)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
        if session.stored:
            self._forget(session.key)
            session.stored = False

    def drop_flight(self, session):
        """Forget the MqttFlight of ``session`` (what it held in flight and
        queued goes with it: the session ends, or another connection took
        it over), its counts kept."""
        f = session.flight
        if f is not None:
            session.flight = None
            self.dropped += f.dropped
            self.expired += f.expired

    def expire(self, now):
        """End the sessions whose client has been away longer than their
        expiry interval (``now``: time.time(), wall-clock: the time the
        server was down counts)."""
        for s in list(self.sessions.values()):
            if s.conn is None and s.gone_at is not None and s.expiry != NEVER \
                    and now - s.gone_at >= s.expiry:
                self.sessions_expired += 1
                self.end(s)
        heap = self.retained_expiry
        while heap and heap[0][0] <= now:
            deadline, subject = heapq.heappop(heap)
            r = self.retained.get(subject)
            if r is not None and r[4] == deadline:
                self.retain(subject, r[0], b"", 0, b"")     # (forgotten, and purged)

    def stats(self):
        """The door's figures for monitoring (``/varz`` "mqtt")."""
        live = away = queued = inflight = subs = 0
        dropped, expired = self.dropped, self.expired
        for s in self.sessions.values():
            if s.flight is not None:
                dropped += s.flight.dropped
                expired += s.flight.expired
            if s.conn is None:
                away += 1
            else:
                live += 1
            fi, fq = s.flight_stats()
            queued += len(s.queue) + fq
            inflight += len(s.inflight) + fi
            subs += len(s.subs)
        return {"sessions": live + away, "sessions_live": live, "sessions_away": away,
                "subscriptions": subs, "retained": len(self.retained), "queued": queued,
                "inflight": inflight, "dropped": dropped, "too_large": self.too_large,
                "max_queued": self.max_queued, "expired": expired,
                "sessions_expired": self.sessions_expired}

    # -- written as it changes -----------------------------------------------------------

    def durable(self, session):
        return self.sess_stream is not None and session.expiry > 0

    def write(self, session):
        """Write ``session`` (client id, expiry, subscriptions, when its
        client went away) if it is persistent; forget it if it no longer
        is (its client came back with expiry 0)."""
        if not self.durable(session):
            if session.stored:
                self._forget(session.key)
                session.stored = False
            return
        rec = {"client_id": session.client_id, "expiry": session.expiry,
               "gone_at": session.gone_at, "user": session.user, "version": session.version,
               "subs": [[flt, list(sub[0])] for flt, sub in session.subs.items()]}
        self._append(SESSION_PREFIX + session.key, json.dumps(rec).encode(), {},
                     self.sess_stream)
        session.stored = True

    def _append(self, subject, data, attrs, stream=None):
        ev = Event(subject, data, source=self.flow.source, **attrs)
        (self.queued if stream is None else stream).log.append(subject, ev.encode())

    def _forget(self, key):
        self.sess_stream.purge(SESSION_PREFIX + key)
        self.queued.purge("$MQTT.*.{}.>".format(key))

    def store(self, session, m, pid=None):
        """Write the message ``m`` (a queue entry) of ``session`` (its
        packet id ``pid`` when it is sent at once); returns ``m`` with its
        number, or ``m`` unchanged when the session is not persistent."""
        if not self.durable(session):
            return m
        mid = session.next_mid
        session.next_mid = mid + 1
        topic, payload, qos, retain, sid, fwd, _, deadline = m
        attrs = {"mqtttopic": topic, "mqttqos": qos}
        if retain:
            attrs["mqttretain"] = True
        if sid:
            attrs["mqttsid"] = sid
        if fwd:
            attrs["mqttprops"] = fwd
        if deadline is not None:
            attrs["mqttexpiry"] = datetime.datetime.fromtimestamp(deadline,
                                                                  datetime.timezone.utc)
        if pid is not None:
            attrs["mqttpid"] = pid
        self._append("$MQTT.q.{}.m{}".format(session.key, mid), payload, attrs)
        return (topic, payload, qos, retain, sid, fwd, mid, deadline)

    def sent(self, session, mid, pid, state="pub"):
        """Message ``mid`` was sent with packet id ``pid`` (state "pub"),
        or its PUBREC came and PUBREL went (state "rel")."""
        if mid is None or not session.stored:
            return
        session.staged.add(mid)
        self._append("$MQTT.p.{}.m{}".format(session.key, mid), b"",
                     {"mqttpid": pid, "mqttstate": state})

    def done(self, session, mid):
        """Message ``mid`` was acknowledged (or dropped): forget it."""
        if mid is not None and session.stored:
            # (two exact subjects: each found by its hash, not by a walk)
            self.queued.purge("$MQTT.q.{}.m{}".format(session.key, mid))
            if mid in session.staged:
                session.staged.discard(mid)
                self.queued.purge("$MQTT.p.{}.m{}".format(session.key, mid))

    def inbound(self, session, pid, awaiting):
        """Inbound QoS 2 packet id ``pid`` awaits PUBREL (or no longer)."""
        if not session.stored:
            return
        subject = "$MQTT.in.{}.p{}".format(session.key, pid)
        if awaiting:
            self._append(subject, b"", {})
        else:
            self.queued.purge(subject)

    # -- deliveries to a session ---------------------------------------------------------

    def deliverer(self, session, opts):
        """The callback of a QoS 1/2 subscription of ``session``: to its
        connection, or into its queue while the client is away."""
        qos, no_local, rap, sid = opts[:4]
        mode = opts[4] if len(opts) > 4 else None
        sessions = self

        def deliver(ev):
            proto = session.conn
            if no_local and proto is not None and proto._publishing:
                return
            try:
                topic = mqtt_subject_topic(ev.routing_subject)
            except SubjectError:
                return
            ext = ev.extensions
            q = min(qos, ext.get("mqttqos", 0)) if ext else 0
            keep = bool(rap and ext and ext.get("mqttretain") is True)
            # (the bytes MqttTarget writes at QoS 0: MQTT's own messages as
            # sent, the other doors' in the subscription's CloudEvents mode)
            version = session.version
            fwd, payload = mqtt_parts(ev, version, delivery_mode(version, mode))
            deadline = _deadline_of(ext) if fwd else None
            if deadline is not None and deadline <= time.time():
                session.expired += 1
                sessions.expired += 1
                return
            if proto is None:
                if not q:
                    return              # (QoS 0 is not kept for a client away, as mosquitto)
                if len(session.queue) < sessions.max_queued:
                    session.queue.append(sessions.store(
                        session, (topic, payload, q, keep, sid, fwd, None, deadline)))
                else:
                    session.dropped += 1
                    sessions.dropped += 1
                return
            proto._queue(topic, payload, q, keep, sid, fwd, deadline)
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

    # -- read back at start --------------------------------------------------------------

    def save(self):
        """At stop: the persistent sessions written once more (each was
        written as it changed)."""
        for s in list(self.sessions.values()):
            if s.stored:
                self.write(s)

    def load(self):
        if self.stream is None:
            return
        n = len(RETAINED_PREFIX)
        for key, ev in self.stream.last(RETAINED_PREFIX + ">").items():
            subject = key[n:]
            try:
                topic = mqtt_subject_topic(subject)
            except SubjectError:
                continue
            ext = ev.extensions
            fwd = ext.get("mqttprops", b"")
            deadline = _deadline_of(ext)
            if deadline is not None and deadline <= time.time():
                self.stream.purge(key)          # (it expired while the server was down)
                continue
            if deadline is not None:
                self._expires(deadline, subject)
            self.retained[subject] = (topic, ev.data, ext.get("mqttqos", 0),
                                      fwd if type(fwd) is bytes else b"", deadline)
        # what waits, by session key: messages, their delivery states, inbound ids
        msgs, states, inbound = {}, {}, {}
        for subject, ev in self.queued.last("$MQTT.>").items():
            try:
                _, kind, key, num = subject.split(".", 3)
                num = int(num[1:])
            except ValueError:
                log.warning("MQTT: %s in %s is not the door's: left out", subject, QUEUED_STREAM)
                continue
            if kind == "q":
                msgs.setdefault(key, {})[num] = ev
            elif kind == "p":
                states.setdefault(key, {})[num] = ev.extensions
            elif kind == "in":
                inbound.setdefault(key, set()).add(num)
        now = time.time()
        keys = set()
        for subject, ev in self.sess_stream.last(SESSION_PREFIX + ">").items():
            s = None
            try:
                rec = json.loads(ev.data)
                s = Session(rec["client_id"])
                keys.add(s.key)
                if self._load_session(s, rec, msgs, states, inbound, now):
                    self.sessions[s.client_id] = s
            except Exception as exc:
                # (a record the door did not write: the subjects $MQTT.> are
                # the door's, but a client with the right to publish there
                # could put one in; the server starts without it)
                log.warning("MQTT: the session record %s is not the door's (%s): left out",
                            subject, exc)
                if s is not None:
                    self.end(s)
        for key in (set(msgs) | set(states) | set(inbound)) - keys:
            self.queued.purge("$MQTT.*.{}.>".format(key))     # a session gone in a crash

    def _load_session(self, s, rec, msgs, states, inbound, now):
        """Session ``s`` from its stored record ``rec`` and what waits for
        it; False if it expired while the server was down."""
        s.expiry = min(int(rec["expiry"]), self.expiry_max)
        s.user = rec.get("user")
        s.version = rec.get("version", 5)
        # (a session whose client was connected at a crash: away since the start)
        s.gone_at = rec["gone_at"] if rec["gone_at"] is not None else now
        s.stored = True
        if s.expiry != NEVER and now - s.gone_at >= s.expiry:
            self.sessions_expired += 1
            self._forget(s.key)
            return False
        for flt, opts in rec["subs"]:
            patterns, group = mqtt_filter_to_patterns(flt)
            sub = [tuple(opts), patterns, _engine_group(flt, group), []]
            s.subs[flt] = sub
            self.attach_away(s, sub)
        self._load_messages(s, msgs.get(s.key, {}), states.get(s.key, {}), now)
        s.inbound_qos2 = inbound.get(s.key, set())
        return True

    def _load_messages(self, s, msgs, states, now):
        for mid in sorted(msgs):
            ev = msgs[mid]
            ext = ev.extensions
            fwd = ext.get("mqttprops", b"")
            fwd = fwd if type(fwd) is bytes else b""
            deadline = _deadline_of(ext)
            st = states.get(mid) or {}
            if mid in states:
                s.staged.add(mid)
            pid = st.get("mqttpid", ext.get("mqttpid"))
            m = [ext["mqtttopic"], ev.data, ext["mqttqos"], ext.get("mqttretain") is True,
                 st.get("mqttstate", "pub"), ext.get("mqttsid"), fwd, mid, deadline]
            if pid is not None and pid not in s.inflight:
                s.inflight[pid] = m                 # sent, not acknowledged: sent again
            elif deadline is not None and deadline <= now:
                s.expired += 1
                self.expired += 1
                self.done(s, mid)
            else:
                s.queue.append((m[0], m[1], m[2], m[3], m[5], m[6], mid, deadline))
        if msgs:
            s.next_mid = max(msgs) + 1


def _engine_group(flt, share):
    """The engine's queue group of the subscription to filter ``flt``
    whose share name is ``share`` (None: not shared).  A shared
    subscription is its share name and its filter (MQTT 5 section 4.8.2):
    ``$share/g/#`` and ``$share/g/+/x`` are two, and a message matching
    both goes to one member of each, while the engine's groups, as
    NATS's, span patterns: the whole filter names the group."""
    return None if share is None else flt



# -- the door ----------------------------------------------------------------------------------


def server_max_packet(cfg):
    """The largest packet the door takes (CONNACK's Maximum Packet Size):
    ``[mqtt] max_packet``, else a payload of ``max_payload`` with 64 KiB of
    topic and properties."""
    return cfg.mqtt_max_packet or cfg.max_payload + 65536 + 16


class MqttProtocol(DoorProtocol):
    """The MQTT handlers for one connection (``conn``)."""

    name = "mqtt"
    parser_error = MqttError
    ready_note = " (MQTT)"

    def __init__(self, conn):
        DoorProtocol.__init__(self, conn)
        cfg = self.cfg
        self.parser = MqttParser(self.flow, self.outbuf, server_max_packet(cfg),
                                 cfg.max_connect)
        # (a QoS 0 publish over it goes to Python, which drops it: _publish)
        self.parser.max_payload = cfg.max_payload
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
        self.aliases = None             # MQTT 5 inbound topic aliases: alias -> topic
        self.problem_info = True        # MQTT 5 Request Problem Information (reason strings)
        self.server_keepalive = None    # MQTT 5 Server Keep Alive, if it lowered the client's
        self._creds = False             # the CONNECT carried a user name or a password

    # -- what the lifecycle writes -----------------------------------------------------

    def greet(self):
        pass                            # MQTT: the client speaks first

    def refusal(self, code, message):
        # (over max_connections, before any CONNECT: the client's protocol
        # version is not known yet, so no CONNACK can be right; closed at
        # once, as mosquitto does)
        return b""

    def close_data(self, code, message, rid):
        if not self._acked:             # before the CONNACK (state is CLOSING already)
            if code == 401:
                # a user name or password that did not pass: 0x86 (3.1.1:
                # 4); no credentials where the server wants them: 0x87 (5)
                return self._connack_refusal(RC_BAD_CREDENTIALS if self._creds
                                             else RC_NOT_AUTHORIZED, message)
            if code == RC_UNSUPPORTED_VERSION:
                # (as mosquitto: a CONNACK in the words of 3.1.1 when the
                # level is unknown, return code 1)
                return self._connack_refusal(RC_UNSUPPORTED_VERSION)
            if code == 429:             # a quota (3.1.1: 3, server unavailable)
                return self._connack_refusal(RC_QUOTA_EXCEEDED, message)
            return b""
        if self.version == 5:
            # (503: a slow consumer, its output over max_pending: a limit
            # the administrator set, 0x97 quota exceeded)
            reason = {408: RC_KEEP_ALIVE_TIMEOUT, 401: RC_NOT_AUTHORIZED,
                      400: RC_PROTOCOL, 503: RC_QUOTA_EXCEEDED}.get(code, RC_UNSPECIFIED)
            if isinstance(code, int) and 0x80 <= code <= 0xA2:
                reason = code
            return self._disconnect_packet(reason, message)
        return b""

    def _disconnect_packet(self, reason, message=None):
        """A DISCONNECT with ``reason``; the reason string unless the client
        asked for none (Request Problem Information 0) or its Maximum Packet
        Size leaves no room for it."""
        pkt = _packet(DISCONNECT, 0, bytes([reason]) + _props([]))
        if message and self.problem_info:
            full = _packet(DISCONNECT, 0, bytes([reason]) + _props(
                [(0x1F, _str(str(message)[:200]))]))
            if not self.max_packet or len(full) <= self.max_packet:
                pkt = full
        return pkt

    def goodbye(self):
        # (the server stops: a 5.0 client is told why, DISCONNECT 0x8B; a
        # DISCONNECT of the client's own ends with nothing more)
        if self.version == 5 and self._acked and not self.clean_exit and self.server.stopping:
            return self._disconnect_packet(RC_SERVER_SHUTTING_DOWN, "server shutting down")
        return b""

    def ping(self):
        # MQTT: the client pings, on its keep-alive (held by tick()); the
        # server has no PING to send, so the lifecycle's count of PINGs
        # without an answer (ping_interval, max_pings_out) does not apply
        self.conn.pings_out = 0

    def err(self, code, message, rid=0):
        log.debug("client %d: MQTT error %s: %s", self.conn.id, code, message)

    def protocol_error(self, exc):
        return exc.reason, str(exc)

    def validates(self):
        # (with topics marked structured, each publish is looked at in
        # Python: the parser's C path would route their payloads as data)
        return DoorProtocol.validates(self) or \
            self.conn.account.mqtt_sessions.structured is not None

    def tick(self, now):
        conn = self.conn
        if self.keepalive and now - conn.last_in > 1.5 * self.keepalive:
            self._lost_will()
            conn.close(RC_KEEP_ALIVE_TIMEOUT, "keep alive timeout")
            return True
        return False

    def _connack_refusal(self, reason, message=None):
        if self.version == 5:
            pairs = [(0x1F, _str(str(message)[:200]))] if message and self.problem_info else []
            return _packet(CONNACK, 0, b"\x00" + bytes([reason]) + _props(pairs))
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
        if self.version == 5:
            self.problem_info = props.get("request_problem_information", 1) != 0
            if "authentication_method" in props:
                # (no enhanced authentication here: as mosquitto without an
                # auth plugin, CONNACK 0x8C bad authentication method)
                self.outbuf.write(self._connack_refusal(
                    RC_BAD_AUTH_METHOD, "authentication method {!r} not supported".format(
                        props["authentication_method"])))
                conn.close(flush=True)
                return True
            cap = self.cfg.mqtt_max_keepalive
            if cap and (self.keepalive == 0 or self.keepalive > cap):
                self.keepalive = self.server_keepalive = cap
        creds = {}
        if c["username"] is not None:
            creds["user"] = c["username"]
        if c["password"] is not None:
            try:
                creds["password"] = c["password"].decode("utf-8")
            except UnicodeDecodeError:
                creds["password"] = c["password"].decode("latin-1")
        auth = self.server.auth
        if "password" in creds and creds.get("user") not in auth.users and auth.tokens:
            # a token goes in the password field (the user name, if any, is not a user)
            creds = {"token": creds["password"]}
        self._creds = bool(creds)
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
        sessions = self.conn.account.mqtt_sessions
        cid = c["client_id"]
        assigned = None
        if not cid:
            if self.version != 5 and not c["clean"]:
                self.outbuf.write(_packet(CONNACK, 0, b"\x00\x02"))   # identifier rejected
                self.conn.close(flush=True)
                return
            cid = assigned = sessions.assign_id(srv.id)
        old = sessions.sessions.get(cid)
        if old is not None and old.user != self.conn.user:
            # another user's session: its subscriptions were checked against
            # that user's permissions, so neither taken over nor ended
            self.server.n_denied += 1
            log.info("client %d (%s): client id %r is a session of another user: refused",
                     self.conn.id, self.conn.peer, cid)
            self.will = None
            self.outbuf.write(self._connack_refusal(RC_NOT_AUTHORIZED))
            self.conn.close(flush=True)
            return
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
            session.user = self.conn.user
            sessions.sessions[cid] = session
        if session.flight is not None:
            # (a session of expiry 0 taken over before its connection ended:
            # its QoS 1 subscriptions are attached anew below, on this side)
            sessions.drop_flight(session)
            for sub in session.subs.values():
                if sub[0][0] == 1 and sub[3]:
                    self.flow.remove_many(sub[3])
                    del sub[3][:]
        session.conn = self
        session.version = self.version
        session.gone_at = None
        if self.version == 5:
            asked = c["props"].get("session_expiry_interval", 0)
        else:
            asked = 0 if c["clean"] else NEVER
        session.expiry = min(asked, sessions.expiry_max)
        session.flight_ok = not present and session.expiry == 0
        self.session = session
        sessions.write(session)
        if self.version == 5:
            cfg = self.cfg
            # (what the door offers; Maximum QoS is absent: 2 is supported)
            pairs = [(0x21, struct.pack(">H", cfg.mqtt_max_inflight)),
                     (0x25, b"\x01"),                  # Retain Available
                     (0x27, struct.pack(">I", server_max_packet(cfg))),
                     (0x28, b"\x01"),                  # Wildcard Subscription Available
                     (0x29, b"\x01"),                  # Subscription Identifier Available
                     (0x2A, b"\x01")]                  # Shared Subscription Available
            if cfg.mqtt_max_topic_alias:
                pairs.append((0x22, struct.pack(">H", cfg.mqtt_max_topic_alias)))
            if assigned is not None:
                pairs.append((0x12, _str(assigned)))
            if session.expiry < asked:  # (lowered to [mqtt] session_expiry_max)
                pairs.append((0x11, struct.pack(">I", session.expiry)))
            if self.server_keepalive is not None:
                pairs.append((0x13, struct.pack(">H", self.server_keepalive)))
            body = bytes([int(present), 0]) + _props(pairs)
        else:
            body = bytes([int(present), 0])
        self.outbuf.write(_packet(CONNACK, 0, body))
        self._acked = True
        if present:                     # its subscriptions write to this connection now
            # (a filter its user may no longer read, the permissions changed
            # in the config since: gone, as a SUBSCRIBE now would be refused)
            self.revoke_filters()
            for sub in session.subs.values():
                if sub[0][0] == 0 or not sub[3]:
                    self._attach(session, sub)
                if sub[0][0] and sub[0][1]:
                    self.parser.route_pubs = False  # (no-local at QoS 1/2: see _subscribe)
        # what waited while the client was away
        for pid, m in list(session.inflight.items()):
            if m[4] == "rel":           # PUBREC came: the PUBREL again
                self.outbuf.write(_packet(PUBREL, 2, struct.pack(">H", pid)))
                continue
            self._send(m[0], m[1], m[2], m[3], pid, dup=True, sid=m[5], fwd=m[6],
                       deadline=m[8], floor=1)
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
        alias = props.get("topic_alias")
        subject = None
        if alias is not None:
            topic, subject = self._alias(alias, topic)
        inbound = self.session.inbound_qos2
        if qos == 2:
            if packet_id in inbound:
                self.outbuf.write(_packet(PUBREC, 0, struct.pack(">H", packet_id)))
                return                  # a resend: delivered once already
            if self.version == 5 and len(inbound) >= self.cfg.mqtt_max_inflight:
                # (QoS 1 publishes are acknowledged as they come: only QoS 2
                # ones awaiting PUBREL count against the Receive Maximum)
                raise MqttError(RC_RECEIVE_MAXIMUM_EXCEEDED, "more than the Receive Maximum "
                                "{} QoS 2 publishes awaiting PUBREL".format(
                                    self.cfg.mqtt_max_inflight))
        if subject is None:
            try:
                subject = mqtt_topic_subject(topic)
            except SubjectError as exc:
                raise MqttError(RC_TOPIC_NAME_INVALID, str(exc)) from None
        if len(payload) > self.cfg.max_payload:
            # (as mosquitto's message_size_limit: dropped, the connection
            # stays; a packet over max_packet closes it.  5.0 is told 0x97
            # quota exceeded: 0x95 is no PUBACK/PUBREC reason code, and
            # paho takes mosquitto's 0x95 there for a malformed packet)
            self.conn.account.mqtt_sessions.too_large += 1
            self._ack(qos, packet_id, RC_QUOTA_EXCEEDED if self.version == 5 else 0)
            return
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
            if "message_expiry_interval" in props:
                attrs["mqttexpiry"] = _expiry_deadline(props)
        sessions = self.conn.account.mqtt_sessions
        mode = ce_mode(self.version, props)
        if mode is None and sessions.structured is not None and sessions.structured.match(
                subject):
            mode = "structured"         # (a topic the operator marks)
        if mode is None:
            if fwd and "content_type" in props:
                attrs["datacontenttype"] = props["content_type"]
            event = Event(subject, payload, source=self.flow.source, **attrs)
        else:
            try:
                event = ce_event(subject, payload, props, mode, attrs)
            except ValueError as exc:
                # a bad CloudEvent: refused (5.0 QoS 1/2: 0x99), nothing routed
                sessions.ce_refused += 1
                log.debug("client %d: CloudEvent refused on %s: %s", conn.id, topic, exc)
                if qos and self.version == 5:
                    self._ack(qos, packet_id, RC_PAYLOAD_FORMAT_INVALID)
                elif qos:
                    self._ack(qos, packet_id, 0)     # 3.1.1 has no refusal: dropped
                    if qos == 2:
                        self.session.inbound_qos2.add(packet_id)
                return
        record = mqtt_record(event)
        trust = self.flow.trust
        if trust is not None:
            # the trust policy, before anything is kept (a retained message too):
            # refused as a publish permission is (5.0: 0x87 with the reason;
            # 3.1.1 has no refusal: acknowledged and dropped, as mosquitto)
            try:
                trust.check_event(subject, record)
            except SignatureError as exc:
                log.debug("client %d: publish on %s refused: %s", conn.id, topic, exc)
                if self.version == 5 and qos:
                    self._ack_reason(qos, packet_id, RC_NOT_AUTHORIZED, str(exc))
                elif qos:
                    self._ack(qos, packet_id, 0)
                    if qos == 2:
                        self.session.inbound_qos2.add(packet_id)
                return
        if retain:
            self.conn.account.mqtt_sessions.retain(subject, topic, payload, qos, fwd)
        conn.in_msgs_py += 1
        # (the origin: this connection's no-local subscriptions skip it, the
        # QoS 0 ones in C by the origin, the others by _publishing: their
        # deliveries run inline, within this call)
        self._publishing = True
        try:
            self.flow.publish_record(subject, record, None, self.outbuf,
                                     trust_checked=trust is not None)   # (checked above)
        except Exception as exc:        # a full stream: the subscribers had it
            log.debug("client %d: publish on %s: %s", conn.id, subject, exc)
        finally:
            self._publishing = False
        if qos == 2:
            self.session.inbound_qos2.add(packet_id)
            self.conn.account.mqtt_sessions.inbound(self.session, packet_id, True)
        self._ack(qos, packet_id, 0)

    def _alias(self, alias, topic):
        """``(topic, subject)`` of a PUBLISH with Topic Alias ``alias`` (MQTT
        5 section 3.3.2.3.4): a topic name sets the alias, an empty one uses
        it; the subject is translated once per alias set (None: not yet)."""
        top = self.cfg.mqtt_max_topic_alias
        if alias > top:                 # (0: the parser refuses it with 0x94)
            raise MqttError(RC_TOPIC_ALIAS_INVALID, "topic alias {} over the maximum {}".format(
                alias, top))
        aliases = self.aliases
        if aliases is None:
            aliases = self.aliases = {}     # (at most max_topic_alias entries)
        if topic:
            try:
                subject = mqtt_topic_subject(topic)
            except SubjectError as exc:
                raise MqttError(RC_TOPIC_NAME_INVALID, str(exc)) from None
            aliases[alias] = topic, subject
            return topic, subject
        try:
            return aliases[alias]
        except KeyError:
            raise MqttError(RC_PROTOCOL, "topic alias {} was never set".format(alias)) from None

    def _ack(self, qos, packet_id, reason):
        if not qos:
            return
        body = struct.pack(">H", packet_id)
        if self.version == 5 and reason:
            body += bytes([reason])
        self.outbuf.write(_packet(PUBACK if qos == 1 else PUBREC, 0, body))

    def _ack_reason(self, qos, packet_id, reason, message):
        """A 5.0 PUBACK / PUBREC with ``reason`` and (when the client takes
        problem information) a Reason String."""
        pairs = [(0x1F, _str(message[:200]))] if self.problem_info else []
        self.outbuf.write(_packet(PUBACK if qos == 1 else PUBREC, 0,
                                  struct.pack(">H", packet_id) + bytes([reason]) + _props(pairs)))

    def _pubrel(self, packet_id, reason, props):
        if packet_id in self.session.inbound_qos2:
            self.session.inbound_qos2.discard(packet_id)
            self.conn.account.mqtt_sessions.inbound(self.session, packet_id, False)
        self.outbuf.write(_packet(PUBCOMP, 0, struct.pack(">H", packet_id)))

    # -- acknowledgements of what the door sent ----------------------------------------

    def _puback(self, packet_id, reason, props):
        self._acked_out(packet_id)

    def _acked_out(self, packet_id):
        """Packet id ``packet_id`` delivered (or refused): forget it, send more."""
        session = self.session
        flight = session.flight
        if flight is not None and flight.ack(packet_id):
            return                      # (a PUBACK with a reason: the parser left it)
        m = session.inflight.pop(packet_id, None)
        if m is not None:
            self.conn.account.mqtt_sessions.done(session, m[7])
        self._drain_queue()
        if flight is not None:
            flight.others = len(session.inflight)
            flight.drain()

    def _pubrec(self, packet_id, reason, props):
        m = self.session.inflight.get(packet_id)
        if m is None:
            body = struct.pack(">H", packet_id) + (
                bytes([RC_PACKET_ID_NOT_FOUND]) if self.version == 5 else b"")
            self.outbuf.write(_packet(PUBREL, 2, body))
            return
        if reason >= 0x80:
            self._acked_out(packet_id)
            return
        if m[4] != "rel":
            m[4] = "rel"
            self.conn.account.mqtt_sessions.sent(self.session, m[7], packet_id, "rel")
        self.outbuf.write(_packet(PUBREL, 2, struct.pack(">H", packet_id)))

    def _pubcomp(self, packet_id, reason, props):
        self._acked_out(packet_id)

    # -- SUBSCRIBE ---------------------------------------------------------------------

    def _subscribe(self, packet_id, filters, props):
        conn = self.conn
        session = self.session
        codes = bytearray()
        retained_out = []
        perms = conn.principal.permissions
        mode = None                     # the CloudEvents mode: the version's default
        conflate = False                # the latest message per subject while behind
        why = None
        for k, v in props.get("user_property", ()):
            if k == CE_MODE_PROPERTY:
                mode = v
            elif k == CONFLATE_PROPERTY:
                try:
                    conflate = conflate_option(v, "user property " + CONFLATE_PROPERTY)
                except ValueError as exc:
                    why = str(exc)
        if mode is not None and mode not in CE_MODES:
            why = "{} must be one of {}, got {!r}".format(CE_MODE_PROPERTY, ", ".join(CE_MODES),
                                                         mode)
        if why is not None:
            # (5.0 only: 3.1.1 has no properties) every filter refused
            log.debug("client %d: SUBSCRIBE refused: %s", conn.id, why)
            self.outbuf.write(_packet(SUBACK, 0, struct.pack(">H", packet_id) + _props(
                [(0x1F, _str(why[:200]))])
                + bytes([RC_IMPLEMENTATION_SPECIFIC] * len(filters))))
            return
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
            if not self._may_read(perms, patterns, group):
                self.server.n_denied += 1
                codes.append(RC_NOT_AUTHORIZED if self.version == 5 else 0x80)
                continue
            existed = flt in session.subs
            limit = self.cfg.max_subscriptions
            if limit and not existed and len(session.subs) >= limit:
                codes.append(RC_QUOTA_EXCEEDED if self.version == 5 else 0x80)
                continue
            if not existed and self.conn.may_subscribe(1) is not None:
                codes.append(RC_QUOTA_EXCEEDED if self.version == 5 else 0x80)
                continue
            if existed:
                old = session.subs.pop(flt)
                self.flow.remove_many(old[3])
            sid = props.get("subscription_identifier")
            sub = [(qos, no_local, rap, sid, mode, conflate), patterns,
                   _engine_group(flt, group), []]
            if qos and session.flight_ok and session.flight is None:
                session.flight = MqttFlight(self.outbuf, min(self.receive_max, 65535),
                                            self.conn.account.mqtt_sessions.max_queued)
                self.parser.flight = session.flight
            self._attach(session, sub)
            if no_local and qos:
                # (the parser's C path routes without telling Python whose
                # publish it is: this connection's publishes go through Python)
                self.parser.route_pubs = False
            session.subs[flt] = sub
            codes.append(qos)
            if group is None and (handling == 0 or (handling == 1 and not existed)):
                retained_out.append((patterns, qos, rap, sid))
        self.conn.account.mqtt_sessions.write(session)
        self.outbuf.write(_packet(SUBACK, 0, struct.pack(">H", packet_id) + (
            _props([]) if self.version == 5 else b"") + bytes(codes)))
        if retained_out:
            self._send_retained(retained_out)

    def revoke_filters(self):
        """End the session's filters its user's permissions no longer allow
        (MQTT has no word for it: they stop, as a SUBSCRIBE now would be
        refused)."""
        session = self.session
        perms = self.conn.principal.permissions
        n = len(session.subs)
        for flt, sub in list(session.subs.items()):
            if not self._may_read(perms, sub[1], sub[2]):
                self.flow.remove_many(sub[3])
                del session.subs[flt]
        if len(session.subs) != n:
            self.conn.account.mqtt_sessions.write(session)

    @staticmethod
    def _may_read(perms, patterns, group):
        """Whether ``perms`` allow subscribing to every one of ``patterns``
        (one filter's) in queue group ``group``."""
        return perms.unrestricted or not any(
            perms.subscribe_denied(p, group) is not None for p in patterns)

    def _attach(self, session, sub):
        """Put subscription ``sub`` of ``session`` in the engine for this
        connection: QoS 0 through the C wire target (PUBLISH packets
        written as the router delivers), QoS 1 and 2 through the session."""
        opts, patterns, group, handles = sub
        qos, no_local, rap, sid = opts[:4]
        mode = delivery_mode(self.version, opts[4] if len(opts) > 4 else None)
        conflate = len(opts) > 5 and bool(opts[5])
        if handles:
            self.flow.remove_many(handles)
            del handles[:]
        for p in patterns:
            if qos == 0:
                t = MqttTarget(self.outbuf, self.version, mode,
                               sid if self.version == 5 else None, self.max_packet,
                               not no_local)
            elif qos == 1 and session.flight is not None:
                # (QoS 1 in C: MqttTarget writes through the flight)
                t = MqttTarget(self.outbuf, self.version, mode,
                               sid if self.version == 5 else None, self.max_packet,
                               not no_local, False, 1, session.flight, rap,
                               self.conn.account.mqtt_sessions.deliverer(session, opts))
            else:
                t = SubTarget(self.conn.account.mqtt_sessions.deliverer(session, opts),
                              max_pending=0)
            if type(t) is MqttTarget:   # (QoS 0 and 1: conflated while the connection is behind)
                t.conflate = conflate or self.server.conflates(p)
            handles.append(self.flow.add(p, t, group))

    def _send_retained(self, wanted):
        from fastflow._impl import Matcher

        sessions = self.conn.account.mqtt_sessions
        retained = sessions.retained
        now = time.time()
        for patterns, qos, _rap, sid in wanted:
            m = Matcher(cache_size=0)
            for p in patterns:
                m.add(p, True)
            for subject, (topic, payload, rqos, fwd, deadline) in list(retained.items()):
                if deadline is not None and deadline <= now:
                    continue            # (expired: expire() forgets it)
                if m.match(subject):
                    # (with the interval left, as a message that waited)
                    self._queue(topic, payload, min(qos, rqos), True, sid, fwd, deadline)

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
        self.conn.account.mqtt_sessions.write(session)
        body = struct.pack(">H", packet_id)
        if self.version == 5:
            body += _props([]) + bytes(codes)
        self.outbuf.write(_packet(UNSUBACK, 0, body))

    # -- delivering --------------------------------------------------------------------

    def _queue(self, topic, payload, qos, retain, sid=None, fwd=b"", deadline=None):
        session = self.session
        if qos == 0:
            self._send(topic, payload, 0, retain, None, sid=sid, fwd=fwd, deadline=deadline)
            return
        flight = session.flight
        if qos == 1 and flight is not None:
            self._push(topic, payload, retain, sid, fwd, deadline)
            return
        sessions = self.conn.account.mqtt_sessions
        m = (topic, payload, qos, retain, sid, fwd, None, deadline)
        if not session.queue and self._inflight() < self.receive_max:
            # sent at once: written once, with its packet id
            pid = session.packet_id()
            m = sessions.store(session, m, pid)
            session.inflight[pid] = [topic, payload, qos, retain, "pub", sid, fwd, m[6],
                                     deadline]
            if not self._send(topic, payload, qos, retain, pid, sid=sid, fwd=fwd,
                              deadline=deadline):
                del session.inflight[pid]   # (over the client's maximum: as if delivered)
                sessions.done(session, m[6])
            return
        if len(session.queue) >= sessions.max_queued:
            session.dropped += 1        # (as mosquitto's max_queued_messages: the newest go)
            sessions.dropped += 1
            return
        session.queue.append(sessions.store(session, m))
        self._drain_queue()

    def _inflight(self):
        """This connection's QoS 1/2 messages awaiting acknowledgement."""
        session = self.session
        flight = session.flight
        if flight is None:
            return len(session.inflight)
        flight.others = len(session.inflight)
        return len(session.inflight) + flight.inflight

    def _push(self, topic, payload, retain, sid, fwd, deadline):
        """A QoS 1 message sent (or queued) through the session's flight:
        the packet made here, its packet id and window the flight's."""
        made = self._publish_out(topic, payload, 1, 0, retain, False, sid, fwd, deadline)
        if made is None:
            return                      # (MQTT 5 section 3.1.2.11.4: as if it had been sent)
        pkt, props = made
        # (the fixed header, the topic, then the packet id: where it goes)
        pid_off = len(pkt) - len(payload) - len(props) - 2
        exp_off = -1
        if self.version == 5:
            pid_off -= len(_vbi(len(props)))
            if deadline is not None:
                i = _expiry_at(fwd)
                if i >= 0:
                    exp_off = len(pkt) - len(payload) - len(props) + i
        session = self.session
        session.flight.others = len(session.inflight)
        session.flight.push(pkt, pid_off, deadline, exp_off)

    def _drain_queue(self):
        session = self.session
        if session is None:
            return
        sessions = self.conn.account.mqtt_sessions
        now = None
        flight = session.flight
        if flight is not None:
            flight.wake = None
        while session.queue and self._inflight() < self.receive_max:
            topic, payload, qos, retain, sid, fwd, mid, deadline = session.queue.popleft()
            if deadline is not None:
                now = now or time.time()
                if deadline <= now:     # expired while it waited: not sent
                    session.expired += 1
                    sessions.expired += 1
                    sessions.done(session, mid)
                    continue
            if qos == 0:
                self._send(topic, payload, 0, retain, None, sid=sid, fwd=fwd)
                continue
            pid = session.packet_id()
            session.inflight[pid] = [topic, payload, qos, retain, "pub", sid, fwd, mid,
                                     deadline]
            if not self._send(topic, payload, qos, retain, pid, sid=sid, fwd=fwd,
                              deadline=deadline):
                del session.inflight[pid]   # (over the client's maximum: as if delivered)
                sessions.done(session, mid)
                continue
            sessions.sent(session, mid, pid)
        if flight is not None:
            flight.others = len(session.inflight)
            if session.queue:           # (its acknowledgements make room for these too)
                flight.wake = self._drain_queue

    def _publish_out(self, topic, payload, qos, pid, retain, dup, sid, fwd, deadline, floor=0):
        """``(packet, properties)`` of a PUBLISH to this client (MQTT 5: the
        forwarded properties, the expiry interval left, at least ``floor``,
        and the subscription identifier), or None over its Maximum Packet
        Size."""
        props = b""
        if self.version == 5:
            props = fwd
            if deadline is not None:
                props = _with_expiry(fwd, max(floor, math.ceil(deadline - time.time())))
            if sid:
                props += b"\x0b" + _vbi(sid)
        pkt = publish_packet(self.version, topic, payload, qos, pid, retain, dup, props)
        if self.max_packet and len(pkt) > self.max_packet:
            return None
        return pkt, props

    def _send(self, topic, payload, qos, retain, pid, dup=False, sid=None, fwd=b"",
              deadline=None, floor=0):
        made = self._publish_out(topic, payload, qos, pid, retain, dup, sid, fwd, deadline,
                                 floor)
        if made is None:
            return False                # (MQTT 5 section 3.1.2.11.4: discarded, as if sent)
        self.outbuf.write(made[0])
        return True

    # -- PING, DISCONNECT, the end -----------------------------------------------------

    def _pingreq(self):
        self.outbuf.write(_PINGRESP)

    def _disconnect(self, reason, props):
        if reason != 0x04:
            self.will = None
        if self.version == 5 and "session_expiry_interval" in props and self.session \
                and self.session.expiry:
            # (from 0 it may not change: MQTT 5 section 3.14.2.2.2; ended() writes it)
            self.session.expiry = min(props["session_expiry_interval"],
                                      self.conn.account.mqtt_sessions.expiry_max)
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
            subject = mqtt_topic_subject(topic)
        except SubjectError:
            return
        if self.conn.principal is None or not self.conn.may_publish(subject, False):
            self.server.n_denied += 1   # (a will on a topic its user may not publish on)
            return

        def send():
            attrs = {"mqttqos": qos} if qos else {}
            fwd = _forwarded_props(props) if props else b""
            if fwd:
                attrs["mqttprops"] = fwd
                if "message_expiry_interval" in props:
                    attrs["mqttexpiry"] = _expiry_deadline(props)
            record = mqtt_record(Event(subject, payload, source=self.flow.source, **attrs))
            if self.flow.trust is not None:
                try:                    # (the trust policy: a refused will is not retained)
                    self.flow.trust.check_event(subject, record)
                except SignatureError:
                    return
            if retain:
                self.conn.account.mqtt_sessions.retain(subject, topic, payload, qos, fwd)
            try:
                self.flow.publish_record(subject, record, None, None)
            except Exception:
                pass
        if delay:
            self.loop.call_later(delay, send)
        else:
            send()

    def stats(self, d):
        """The MQTT fields of this connection's monitoring entry: its
        client id, protocol level, keep-alive, its session's subscriptions
        (MQTT filters), messages in flight and queued."""
        session = self.session
        d["client_id"] = session.client_id if session is not None else None
        d["mqtt_version"] = self.version
        d["keepalive"] = self.keepalive
        if session is None:
            d["inflight"] = d["queued"] = 0
            return
        d["subscriptions"] = len(session.subs)
        fi, fq = session.flight_stats()
        d["inflight"] = len(session.inflight) + fi
        d["queued"] = len(session.queue) + fq
        d["dropped"] += session.dropped + (session.flight.dropped if session.flight else 0)
        d["session_expiry"] = session.expiry
        if "subs" in d:
            d["subs"] = [{"filter": flt, "qos": sub[0][0], "subjects": list(sub[1]),
                          "queue": sub[2]} for flt, sub in session.subs.items()]

    def conflating_only(self):
        """Whether every filter of its session conflates (QoS 0 and 1, with
        the user property or inside ``[conflate] subjects``)."""
        session = self.session
        if session is None or not session.subs:
            return False
        for sub in session.subs.values():
            opts = sub[0]
            if opts[0] > 1 or (opts[0] == 1 and session.flight is None):
                return False            # (QoS 2: the session's queue, not conflated)
            if not (len(opts) > 5 and opts[5]) and not all(
                    self.server.conflates(p) for p in sub[1]):
                return False
        return True

    def subscription_names(self):
        """Its session's MQTT filters (the advisories name them)."""
        return list(self.session.subs) if self.session is not None else []

    def ended(self):
        """The connection is gone: the will, and the session kept or ended."""
        if not self.clean_exit:
            self._lost_will()
        session = self.session
        if self._taken or session is None or session.conn is not self:
            return
        session.conn = None
        session.gone_at = time.time()
        if session.expiry == 0:
            self.conn.account.mqtt_sessions.end(session)
        else:
            self.conn.account.mqtt_sessions.write(session)


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
