"""MQTT 3.1, 3.1.1 and 5.0 as a front door, the input side (docs/mqtt.md),
pure-Python twin of src_ext/wire/mqtt_in.pyx: ``MqttParser`` cuts the
packets a client sends (CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH) out of a byte stream fed
in any pieces, checks them as the specifications say, and routes a plain
QoS 0 PUBLISH to the router as an event with the defaults (a new id, the
flow's source, type = the subject its topic translates to).
"""

from fastflow._ref import event as _event
from fastflow._ref.event import (
    _GENID,
    _HEADER,
    EV_VERSION,
    EVF_GENID,
    EVF_MQTT,
    EVF_TYPE_SUBJECT,
    _c_ssize,
    _final,
    _ro,
    _ssize,
)
from fastflow._ref.wire.door import DoorParser
from fastflow._ref.wire.mqtt_out import MqttFlight
from fastflow._ref.wire.outbuf import _typed
from fastflow.errors import EventTooLarge, FastflowError, LogFullError, MqttError, SubjectError

__all__ = ("MqttParser", "mqtt_topic_subject")

# packet types (the fixed header's high nibble)
MQ_CONNECT = 1
MQ_CONNACK = 2
MQ_PUBLISH = 3
MQ_PUBACK = 4
MQ_PUBREC = 5
MQ_PUBREL = 6
MQ_PUBCOMP = 7
MQ_SUBSCRIBE = 8
MQ_SUBACK = 9
MQ_UNSUBSCRIBE = 10
MQ_UNSUBACK = 11
MQ_PINGREQ = 12
MQ_PINGRESP = 13
MQ_DISCONNECT = 14
MQ_AUTH = 15

PACKET_NAMES = ("reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
                "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
                "PINGRESP", "DISCONNECT", "AUTH")

# reason codes of the errors (MQTT 5.0 section 2.4)
MQR_MALFORMED = 0x81
MQR_PROTOCOL = 0x82
MQR_UNSUPPORTED_VERSION = 0x84
MQR_TOPIC_NAME_INVALID = 0x90
MQR_TOPIC_ALIAS_INVALID = 0x94
MQR_PACKET_TOO_LARGE = 0x95

# where a property may be (bits)
PK_CONNECT = 1
PK_WILL = 2
PK_PUBLISH = 4
PK_PUBACK = 8               # PUBACK, PUBREC, PUBREL, PUBCOMP
PK_SUBSCRIBE = 16
PK_UNSUBSCRIBE = 32
PK_DISCONNECT = 64
PK_AUTH = 128
PK_ALL = 255

# property value types
PT_BYTE = 1
PT_INT2 = 2
PT_INT4 = 3
PT_VBI = 4
PT_STR = 5
PT_BIN = 6
PT_PAIR = 7

# MQTT 5.0 section 2.2.2.2: identifier -> (name, type, where a client may send it);
# the ones only servers send (CONNACK's) are known but allowed nowhere
PROPERTIES = {
    0x01: ("payload_format_indicator", PT_BYTE, PK_PUBLISH | PK_WILL),
    0x02: ("message_expiry_interval", PT_INT4, PK_PUBLISH | PK_WILL),
    0x03: ("content_type", PT_STR, PK_PUBLISH | PK_WILL),
    0x08: ("response_topic", PT_STR, PK_PUBLISH | PK_WILL),
    0x09: ("correlation_data", PT_BIN, PK_PUBLISH | PK_WILL),
    0x0B: ("subscription_identifier", PT_VBI, PK_PUBLISH | PK_SUBSCRIBE),
    0x11: ("session_expiry_interval", PT_INT4, PK_CONNECT | PK_DISCONNECT),
    0x12: ("assigned_client_identifier", PT_STR, 0),
    0x13: ("server_keep_alive", PT_INT2, 0),
    0x15: ("authentication_method", PT_STR, PK_CONNECT | PK_AUTH),
    0x16: ("authentication_data", PT_BIN, PK_CONNECT | PK_AUTH),
    0x17: ("request_problem_information", PT_BYTE, PK_CONNECT),
    0x18: ("will_delay_interval", PT_INT4, PK_WILL),
    0x19: ("request_response_information", PT_BYTE, PK_CONNECT),
    0x1A: ("response_information", PT_STR, 0),
    0x1C: ("server_reference", PT_STR, PK_DISCONNECT),
    0x1F: ("reason_string", PT_STR, PK_PUBACK | PK_DISCONNECT | PK_AUTH),
    0x21: ("receive_maximum", PT_INT2, PK_CONNECT),
    0x22: ("topic_alias_maximum", PT_INT2, PK_CONNECT),
    0x23: ("topic_alias", PT_INT2, PK_PUBLISH),
    0x24: ("maximum_qos", PT_BYTE, 0),
    0x25: ("retain_available", PT_BYTE, 0),
    0x26: ("user_property", PT_PAIR, PK_ALL),
    0x27: ("maximum_packet_size", PT_INT4, PK_CONNECT),
    0x28: ("wildcard_subscription_available", PT_BYTE, 0),
    0x29: ("subscription_identifier_available", PT_BYTE, 0),
    0x2A: ("shared_subscription_available", PT_BYTE, 0),
}

# the reason codes a client may put in each packet (MQTT 5.0 sections 3.4-3.7, 3.14, 3.15)
PUBACK_REASONS = frozenset((0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99))
PUBREL_REASONS = frozenset((0x00, 0x92))
DISCONNECT_REASONS = frozenset((0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C,
                                0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98,
                                0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2))
AUTH_REASONS = frozenset((0x00, 0x18, 0x19))

_SHARE = "$share/"


# the extension block of a QoS 1 PUBLISH routed in C: {"mqttqos": 1}
_QOS1_EXT = b"\x81\xa7mqttqos\x01"


def _malformed(text):
    return MqttError(MQR_MALFORMED, "malformed packet: " + text)


def _protocol(text):
    return MqttError(MQR_PROTOCOL, "protocol error: " + text)


class _Reader:
    """The body of one packet (``p``: bytes) read from the front, every
    read bounded by ``end``."""

    __slots__ = ("end", "i", "p")

    def __init__(self, p, i, end):
        self.p = p
        self.i = i
        self.end = end

    def left(self):
        return self.end - self.i

    def take(self, k, what):
        if self.end - self.i < k:
            raise _malformed("{} needs {} bytes, {} left".format(what, k, self.end - self.i))
        i = self.i
        self.i = i + k
        return self.p[i:i + k]

    def byte(self, what):
        return self.take(1, what)[0]

    def int2(self, what):
        return int.from_bytes(self.take(2, what), "big")

    def int4(self, what):
        return int.from_bytes(self.take(4, what), "big")

    def vbi(self, what):
        v = 0
        for k in range(4):
            b = self.byte(what)
            v |= (b & 0x7F) << (7 * k)
            if not b & 0x80:
                return v
        raise _malformed("{} is a variable byte integer of more than 4 bytes".format(what))

    def bin(self, what):
        return self.take(self.int2("the length of " + what), what)

    def str(self, what):
        return _mqtt_str(self.bin(what), what)

    def props(self, where, bit):
        """The property block of ``where`` (a packet, or the will): a dict."""
        n = self.vbi("the property length of " + where)
        if n > self.end - self.i:
            raise _malformed("the properties of {} need {} bytes, {} left".format(
                where, n, self.end - self.i))
        outer = self.end
        self.end = self.i + n
        props = {}
        while self.i < self.end:
            pid = self.vbi("a property identifier of " + where)
            spec = PROPERTIES.get(pid)
            if spec is None:
                raise _malformed("unknown property identifier 0x{:02X} in {}".format(pid, where))
            name, kind, allowed = spec
            if not allowed & bit:
                raise _protocol("the property {} is not allowed in {}".format(name, where))
            if kind == PT_BYTE:
                v = self.byte(name)
            elif kind == PT_INT2:
                v = self.int2(name)
            elif kind == PT_INT4:
                v = self.int4(name)
            elif kind == PT_VBI:
                v = self.vbi(name)
            elif kind == PT_STR:
                v = self.str(name)
            elif kind == PT_BIN:
                v = self.bin(name)
            else:
                v = (self.str("the name of a user property"),
                     self.str("the value of a user property"))
            if kind == PT_PAIR:
                props.setdefault(name, []).append(v)
                continue
            if pid == 0x0B:
                if v == 0:
                    raise _protocol("subscription_identifier 0 in {}".format(where))
                if bit == PK_PUBLISH:
                    props.setdefault(name, []).append(v)     # (as many as there are)
                    continue
            if name in props:
                raise _protocol("{} carries the property {} more than once".format(where, name))
            if pid in (0x21, 0x27) and v == 0:
                raise _protocol("{} 0 in {}".format(name, where))
            if pid in (0x01, 0x17, 0x19) and v > 1:
                raise _protocol("{} {} in {}: 0 or 1 expected".format(name, v, where))
            if pid == 0x23 and v == 0:
                raise MqttError(MQR_TOPIC_ALIAS_INVALID, "topic alias 0 in " + where)
            if pid == 0x08 and ("+" in v or "#" in v):
                raise _protocol("response_topic {!r} in {} has wildcards ('+', '#')".format(
                    v, where))
            props[name] = v
        self.end = outer
        return props

    def done(self, where):
        if self.i != self.end:
            raise _malformed("{} bytes after the end of {}".format(self.end - self.i, where))


def _mqtt_str(b, what):
    """An MQTT UTF-8 string (``b``: its bytes): valid UTF-8 (no surrogates),
    no U+0000 (MQTT 5.0 section 1.5.4)."""
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("{} is not valid UTF-8".format(what)) from None
    if "\x00" in s:
        raise _malformed("{} contains U+0000".format(what))
    return s


def _check_topic_name(topic, what):
    if "+" in topic or "#" in topic:
        raise MqttError(MQR_TOPIC_NAME_INVALID, "invalid {} {!r}: a topic name has no "
                        "wildcards ('+', '#')".format(what, topic))


def mqtt_topic_subject(topic):
    """The fastflow subject of an MQTT topic name (str or bytes): the rules,
    results and errors of ``fastflow.mqtt.mqtt_topic_to_subject``."""
    from fastflow.mqtt import mqtt_topic_to_subject
    return mqtt_topic_to_subject(topic)


def _topic_subject_or_none(topic):
    """The subject of ``topic`` (a str), None if it has none."""
    try:
        return mqtt_topic_subject(topic)
    except SubjectError:
        return None


@_final
class MqttParser(DoorParser):
    """Cuts the MQTT packets a client sends (3.1: ``MQIsdp`` level 3,
    3.1.1: level 4, 5.0: level 5) out of a byte stream fed in any pieces
    (a ``DoorParser``).

    ``feed(data)`` returns an entry per packet (a tuple; the first item is
    the packet type as the spec numbers it), except the PUBLISHes it routes
    itself: ``router`` set, ``route_pubs``, no entry before them in this
    feed, QoS 0 without retain, no properties, a topic that translates to a
    subject (``mqtt_topic_subject``) the publish permissions allow; those
    go to ``router`` as events with the defaults, the payload as data.
    Entries::

        (1, {proto_name, version, clean, keepalive, client_id, will, username,
             password, props})              CONNECT; will: None or
                                            (topic, payload, qos, retain, props)
        (3, flags, topic, packet_id, props, payload)        PUBLISH
        (4 | 5 | 6 | 7, packet_id, reason, props)           PUBACK .. PUBCOMP
        (8, packet_id, [(filter, options), ...], props)     SUBSCRIBE
        (10, packet_id, [filter, ...], props)               UNSUBSCRIBE
        (12,)                                               PINGREQ
        (14, reason, props)                                 DISCONNECT
        (15, reason, props)                                 AUTH (MQTT 5)

    ``flags``: the fixed header's (dup << 3 | qos << 1 | retain);
    ``packet_id``: None for QoS 0; ``props``: the MQTT 5 properties by
    their names in snake case ({} before MQTT 5), ``user_property`` a list
    of (name, value), ``subscription_identifier`` a list in PUBLISH.
    The first packet must be CONNECT (bounded by ``max_connect`` when it is
    not 0), which sets ``version``; every later one is bounded by
    ``max_packet`` (bytes, the fixed header included: refused from the
    fixed header, before the body is kept) and read by that version's
    rules.  A packet that breaks them raises ``MqttError`` (``reason``: the
    MQTT 5 reason code) whose ``frames`` are the entries before it; the
    parser then refuses more input.
    """

    __slots__ = ("_max_packet", "_packets_in", "_version", "_flight", "_acks_in")

    _error = MqttError

    def __new__(cls, /, *args, **kwargs):
        # the blank state of a native MqttParser before __init__
        o = DoorParser.__new__(cls)
        o._max_packet = 0
        o._packets_in = 0
        o._version = 0
        o._flight = None
        o._acks_in = 0
        return o

    def __init__(self, router=None, out=None, max_packet=1 << 20, max_connect=0):
        DoorParser.__init__(self, router, out, 0, 0)
        self._max_packet = _c_ssize(max_packet)
        self._max_connect = _c_ssize(max_connect)

    packets_in = _ro("_packets_in")
    version = _ro("_version")
    acks_in = _ro("_acks_in")

    @property
    def flight(self):
        """Its connection's QoS 1 deliveries (an MqttFlight; None: none):
        their PUBACKs are taken in C."""
        return self._flight

    @flight.setter
    def flight(self, v):
        self._flight = _typed(v, MqttFlight)

    max_packet = _ssize("_max_packet",
                        "The largest packet (bytes, the fixed header included) after CONNECT.")

    def _malformed_before(self):
        return MqttError(self._failed.reason,
                         "the stream was malformed before: {}".format(self._failed))

    def _subject_str(self, s):
        # (a PUBLISH's topic on the C path: checked as the entry's would be;
        # None: it has no subject, the PUBLISH goes to Python)
        topic = _mqtt_str(s, "the topic name")
        _check_topic_name(topic, "topic name")
        return _topic_subject_or_none(topic)

    def _first_byte(self, b0):
        """Refuse a packet by its type and flags, before its length."""
        kind = b0 >> 4
        flags = b0 & 15
        name = PACKET_NAMES[kind]
        if kind == 0:
            raise _malformed("packet type 0 is reserved")
        if kind in (MQ_CONNACK, MQ_SUBACK, MQ_UNSUBACK, MQ_PINGRESP):
            raise _protocol("{} is sent by servers, not clients".format(name))
        if self._version == 0:
            if kind != MQ_CONNECT:
                raise _protocol("the first packet must be CONNECT, not {}".format(name))
        elif kind == MQ_CONNECT:
            raise _protocol("a second CONNECT")
        elif kind == MQ_AUTH and self._version < 5:
            raise _malformed("AUTH is a packet of MQTT 5, the client speaks MQTT 3")
        if kind == MQ_PUBLISH:
            if flags & 6 == 6:
                raise _malformed("PUBLISH with QoS 3")
            if flags & 8 and not flags & 6:
                text = "PUBLISH with QoS 0 and the DUP flag set"
                raise _protocol(text) if self._version == 5 else _malformed(text)
            return
        want = 2 if kind in (MQ_PUBREL, MQ_SUBSCRIBE, MQ_UNSUBSCRIBE) else 0
        if flags != want:
            raise _malformed("the flags of {} are 0x{:X}, 0x{:X} expected".format(
                name, flags, want))

    def _parse(self, p, out):
        """Handle the complete packets of ``p``; returns the bytes used."""
        off = 0
        n = len(p)
        # PUBLISHes are routed here only until an entry goes back to Python:
        # a SUBSCRIBE before a PUBLISH must be handled before that PUBLISH
        in_order = True
        while off < n:
            b0 = p[off]
            self._first_byte(b0)
            # the remaining length: a variable byte integer of 1 to 4 bytes
            rl = 0
            k = 1
            while True:
                if off + k >= n:
                    return off              # the fixed header is not all here yet
                b = p[off + k]
                rl |= (b & 0x7F) << (7 * (k - 1))
                k += 1
                if not b & 0x80:
                    break
                if k == 5:
                    raise _malformed("the remaining length is a variable byte integer of "
                                     "more than 4 bytes")
            total = k + rl
            if self._version == 0 and self._max_connect:
                limit, what = self._max_connect, "max_connect"
            else:
                limit, what = self._max_packet, "max_packet"
            if total > limit:
                raise MqttError(MQR_PACKET_TOO_LARGE, "a packet of {} bytes, {} is {}".format(
                    total, what, limit))
            if n - off < total:
                self._need = total
                break                       # the body is not all here yet
            self._packets_in += 1
            kind = b0 >> 4
            body = off + k
            end = off + total
            off = end
            if (b0 in (0x30, 0x32, 0x3A) and in_order and self._route_pubs
                    and self._router is not None and self._publish_c(b0, p, body, end, out)):
                continue
            if b0 == 0x40 and self._flight is not None and self._puback_c(p, body, end):
                continue
            in_order = False
            out.append(self._packet(kind, b0 & 15, _Reader(p, body, end)))
        return off

    def _publish_c(self, b0, p, body, end, out):
        """A QoS 0 or 1 PUBLISH without retain: routed here if it has no
        properties, a subject and the permissions (QoS 1: its PUBACK
        written here too); False: it goes to Python."""
        if end - body < 2:
            return False
        tn = int.from_bytes(p[body:body + 2], "big")
        data = body + 2 + tn
        if tn == 0 or data > end:
            return False
        pid = 0
        if b0 & 2:                          # QoS 1: the packet identifier
            if data + 2 > end or self._out is None:
                return False
            pid = int.from_bytes(p[data:data + 2], "big")
            if pid == 0:
                return False                # (Python refuses it)
            data += 2
        if self._version == 5:
            if data == end or p[data] != 0:
                return False                # properties (or none at all: malformed)
            data += 1
        if self._max_payload and end - data > self._max_payload:
            return False                    # over max_payload: Python answers it (0x95)
        subject = self._pub_subject(p[body + 2:body + 2 + tn])
        if subject is None:
            return False
        if (self._pub_allow is not None or self._pub_deny is not None) \
                and not self._allowed(subject):
            return False
        return self._route(subject, p[data:end], pid)

    def _puback_c(self, p, body, end):
        """A PUBACK of a packet id of ``flight``, with no reason code or
        with 0x00 and no properties: taken here; False: it goes to Python."""
        if end - body != 2 and not (end - body == 3 and self._version == 5 and p[body + 2] == 0):
            return False
        if not self._flight._ack(int.from_bytes(p[body:body + 2], "big")):
            return False
        self._acks_in += 1
        return True

    def _route(self, subject, d, pid=0):
        """A PUBLISH: an event with the defaults (QoS 1, ``pid`` not 0: the
        extension ``mqttqos`` 1, and its PUBACK), routed; False if the flow
        refuses it (closed: the PUBLISH goes to Python)."""
        rt = self._router
        srcb = rt.source.encode("utf-8", "surrogatepass")    # (as the Router keeps it)
        ext = _QOS1_EXT if pid else b""
        rec = b"".join((
            _HEADER.pack(EV_VERSION, EVF_GENID | EVF_TYPE_SUBJECT | EVF_MQTT, 0, 0,
                         len(srcb) & 0xFFFF,
                         0, 0, len(ext)),
            _GENID.pack(_event._id_prefix, _event._next_gid() & 0xFFFFFFFFFFFFFFFF),
            srcb, ext, d))
        try:
            rt.publish_wire(subject, None, rec, self._out, True)
        except (LogFullError, EventTooLarge):
            pass    # a stream refused it, the subscribers got it (QoS 1: acknowledged)
        except (FastflowError, UnicodeDecodeError):
            return False
        self._pubs_in += 1
        if pid:
            ob = self._out
            was_empty = not ob._buf
            if ob._reserve(4):
                ob._buf += bytes((MQ_PUBACK << 4, 2, pid >> 8, pid & 0xFF))
                ob._wrote(was_empty, False)
        return True

    def _packet(self, kind, flags, r):
        """The entry of one complete packet (``r``: its body)."""
        v5 = self._version == 5
        name = PACKET_NAMES[kind]
        if kind == MQ_CONNECT:
            return self._connect(r)
        if kind == MQ_PUBLISH:
            qos = (flags >> 1) & 3
            topic = r.str("the topic name")
            _check_topic_name(topic, "topic name")
            packet_id = None
            if qos:
                packet_id = r.int2("the packet identifier of PUBLISH")
                if packet_id == 0:
                    raise _protocol("PUBLISH with QoS {} and packet identifier 0".format(qos))
            props = r.props("PUBLISH", PK_PUBLISH) if v5 else {}
            if not topic:
                if not v5:
                    raise MqttError(MQR_TOPIC_NAME_INVALID, "PUBLISH with an empty topic name")
                if "topic_alias" not in props:
                    raise _protocol("PUBLISH with an empty topic name and no topic alias")
            return (MQ_PUBLISH, flags, topic, packet_id, props, r.take(r.left(), "the payload"))
        if MQ_PUBACK <= kind <= MQ_PUBCOMP:
            packet_id = r.int2("the packet identifier of " + name)
            if packet_id == 0:
                raise _protocol("{} with packet identifier 0".format(name))
            reason = 0
            props = {}
            if v5 and r.left():
                reason = r.byte("the reason code of " + name)
                ok = PUBREL_REASONS if kind in (MQ_PUBREL, MQ_PUBCOMP) else PUBACK_REASONS
                if reason not in ok:
                    raise _protocol("reason code 0x{:02X} is not one of {}'s".format(reason, name))
                if r.left():
                    props = r.props(name, PK_PUBACK)
            r.done(name)
            return (kind, packet_id, reason, props)
        if kind == MQ_SUBSCRIBE or kind == MQ_UNSUBSCRIBE:
            packet_id = r.int2("the packet identifier of " + name)
            if packet_id == 0:
                raise _protocol("{} with packet identifier 0".format(name))
            props = {}
            if v5:
                props = r.props(name, PK_SUBSCRIBE if kind == MQ_SUBSCRIBE else PK_UNSUBSCRIBE)
            filters = []
            while r.left():
                f = r.str("a topic filter")
                if kind == MQ_UNSUBSCRIBE:
                    filters.append(f)
                    continue
                o = r.byte("the subscription options")
                if o & (0xC0 if v5 else 0xFC):
                    raise _malformed("reserved bits set in the subscription options 0x{:02X} "
                                     "of {!r}".format(o, f))
                if o & 3 == 3:
                    raise _malformed("QoS 3 in the subscription options of {!r}".format(f))
                if v5 and (o >> 4) & 3 == 3:
                    raise _protocol("retain handling 3 in the subscription options of "
                                    "{!r}".format(f))
                if v5 and o & 4 and f.startswith(_SHARE):
                    raise _protocol("no local on the shared subscription {!r}".format(f))
                filters.append((f, o))
            if not filters:
                raise _protocol("{} with no topic filters".format(name))
            return (kind, packet_id, filters, props)
        if kind == MQ_PINGREQ:
            r.done(name)
            return (MQ_PINGREQ,)
        # DISCONNECT, AUTH (MQTT 5 only: _first_byte saw to it)
        reason = 0
        props = {}
        if v5 and r.left():
            reason = r.byte("the reason code of " + name)
            if reason not in (DISCONNECT_REASONS if kind == MQ_DISCONNECT else AUTH_REASONS):
                raise _protocol("reason code 0x{:02X} is not one of {}'s".format(reason, name))
            if r.left():
                props = r.props(name, PK_DISCONNECT if kind == MQ_DISCONNECT else PK_AUTH)
        r.done(name)
        return (kind, reason, props)

    def _connect(self, r):
        proto_name = r.str("the protocol name")
        level = r.byte("the protocol level")
        if not ((proto_name == "MQTT" and level in (4, 5))
                or (proto_name == "MQIsdp" and level == 3)):
            raise MqttError(MQR_UNSUPPORTED_VERSION, "unsupported protocol {!r} level {} (MQTT 4 "
                            "or 5, MQIsdp 3 expected)".format(proto_name, level))
        self._version = level
        v5 = level == 5
        flags = r.byte("the connect flags")
        will_qos = (flags >> 3) & 3
        if flags & 1:
            raise _malformed("the reserved connect flag is set")
        if will_qos == 3:
            raise _malformed("will QoS 3")
        if not flags & 4 and flags & 0x38:
            raise _protocol("will QoS or will retain set without a will")
        if not v5 and flags & 0x40 and not flags & 0x80:
            raise _protocol("a password without a user name")
        keepalive = r.int2("the keep alive")
        props = r.props("CONNECT", PK_CONNECT) if v5 else {}
        if "authentication_data" in props and "authentication_method" not in props:
            raise _protocol("authentication_data without authentication_method in CONNECT")
        client_id = r.str("the client identifier")
        will = None
        if flags & 4:
            will_props = r.props("the will properties", PK_WILL) if v5 else {}
            will_topic = r.str("the will topic")
            _check_topic_name(will_topic, "will topic")
            if not will_topic:
                raise MqttError(MQR_TOPIC_NAME_INVALID, "an empty will topic")
            will = (will_topic, r.bin("the will payload"), will_qos, bool(flags & 0x20),
                    will_props)
        # (MQTT 3.1 clients may set the flags without the fields: as mosquitto, they are
        # ignored then)
        username = password = None
        if flags & 0x80 and (level != 3 or r.left()):
            username = r.str("the user name")
        if flags & 0x40 and (level != 3 or r.left()):
            password = r.bin("the password")
        r.done("CONNECT")
        return (MQ_CONNECT, {
            "proto_name": proto_name, "version": level, "clean": bool(flags & 2),
            "keepalive": keepalive, "client_id": client_id, "will": will,
            "username": username, "password": password, "props": props})
