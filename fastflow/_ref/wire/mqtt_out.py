"""The MQTT protocol's output side (3.1.1 and 5.0), pure-Python twin of
src_ext/wire/mqtt_out.pyx: a routed record written as one QoS 0 PUBLISH
packet into a connection's OutBuf (``MqttTarget``), its topic the routing
subject translated back to MQTT (``mqtt_subject_topic``: the rules of
``fastflow.mqtt.subject_to_mqtt_topic``).

The modes: "raw" (the event's data only), "binary" (MQTT 5, the CloudEvents
MQTT binding's binary mode: datacontenttype as the Content Type property,
every other attribute a User Property by its own name) and "structured"
(the CloudEvents JSON of the event, Content Type
application/cloudevents+json on MQTT 5).  MQTT strings may not hold U+0000
nor surrogates: such characters are written as U+FFFD; a property whose
name or value would pass 65535 bytes is left out.  The native core writes
the binary mode's properties in C and leaves what it does not vouch for to
``_binary_props``; this twin uses ``_binary_props`` for every message.
The modes are for the events of the other doors: a message published
through the MQTT door (``Event.from_mqtt``, record flag EVF_MQTT) goes in
every mode as MQTT sent it (its payload and, MQTT 5, its extension
``mqttprops``).  ``_parts`` decides both, for MqttTarget and ``mqtt_parts``.
"""

import base64
import math
import time
from collections import deque

from fastflow._ref.event import (
    EVF_MQTT,
    Event,
    _c_int,
    _c_ssize,
    _ev_copy,
    _ev_data_offset,
    _ev_decode,
    _final,
    _ro,
    _ssize,
)
from fastflow._ref.subjects import validate_subject
from fastflow._ref.wire.outbuf import OutBuf, WireTarget, _stored_msg
from fastflow._ref.wire.web_out import _web_json
from fastflow.errors import SubjectError

__all__ = ("MqttTarget", "mqtt_parts", "mqtt_subject_topic")

MQTT_PUBLISH = 0x30             # type 3, QoS 0, DUP 0, RETAIN 0
MQTT_PUBLISH_QOS1 = 0x32        # type 3, QoS 1
MQTT_FLIGHT_IDS = 32767         # an MqttFlight's packet ids: 1 .. this
MQTT_FLIGHT_RING = 1024         # at most this many in flight (a power of 2)
MQTT_PROP_CONTENT_TYPE = 0x03
MQTT_PROP_SUBSCRIPTION_ID = 0x0B
MQTT_PROP_USER = 0x26
MQTT_VBI_MAX = 268435455        # the largest Variable Byte Integer (4 bytes)
MQTT_STR_MAX = 65535            # bytes of a UTF-8 string or a topic

_MODES = ("raw", "binary", "structured")
_CT_STRUCTURED = b"\x03\x00\x1capplication/cloudevents+json"


# -- pieces of a packet ---------------------------------------------------------------


def _vbi(v):
    """``v`` (<= MQTT_VBI_MAX) as a Variable Byte Integer: 7 bits a byte,
    least significant first, the top bit set on all but the last."""
    out = bytearray()
    while v >= 128:
        out.append((v & 127) | 128)
        v >>= 7
    out.append(v)
    return bytes(out)


def _mqtt_str(s):
    """``s`` as the bytes of an MQTT string with its length (NUL and
    surrogates as U+FFFD), or None past MQTT_STR_MAX bytes."""
    b = "".join(["\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c
                 for c in s]).encode("utf-8")
    if len(b) > MQTT_STR_MAX:
        return None
    return len(b).to_bytes(2, "big") + b


def _canonical(v):
    """An attribute's value as its CloudEvents canonical string (None: a
    type CloudEvents has no string for)."""
    if type(v) is str:
        return v
    if v is True:
        return "true"
    if v is False:
        return "false"
    if type(v) is int:
        return str(v)
    if type(v) is bytes:
        return base64.b64encode(v).decode("ascii")
    return None


def _binary_props(event, lineage):
    """The binary mode's MQTT 5 properties of ``event`` (without a
    subscription identifier): a User Property per attribute but
    datacontenttype (ffhops and fftrace only with ``lineage``), then
    datacontenttype as the Content Type property."""
    out = []
    ct = None
    for name, value in event.attributes().items():
        if name == "datacontenttype":
            ct = value
            continue
        if not lineage and name in ("ffhops", "fftrace"):
            continue
        v = _canonical(value)
        if v is None:
            continue
        k = _mqtt_str(name)
        v = _mqtt_str(v)
        if k is not None and v is not None:
            out.append(bytes((MQTT_PROP_USER,)) + k + v)
    if ct is not None:
        v = _canonical(ct)
        v = _mqtt_str(v) if v is not None else None
        if v is not None:
            out.append(bytes((MQTT_PROP_CONTENT_TYPE,)) + v)
    return b"".join(out)


# -- the topic of a subject -----------------------------------------------------------


def _topic_levels(subject):
    """The levels of the topic of ``subject`` (str), or the SubjectError of
    a token with '+' or '#'."""
    levels = []
    for i, tok in enumerate(subject.split("."), 1):
        if "+" in tok or "#" in tok:
            return SubjectError(
                "subject {!r} cannot be an MQTT topic: {!r} in token {} {!r}".format(
                    subject, "+" if "+" in tok else "#", i, tok))
        levels.append("" if tok == "/" else tok.replace("//", "."))
    return levels


def mqtt_subject_topic(subject):
    """The MQTT topic name of a fastflow subject (str or bytes): the results
    and errors of ``fastflow.mqtt.subject_to_mqtt_topic``."""
    validate_subject(subject)
    if isinstance(subject, (bytes, bytearray)):
        subject = bytes(subject).decode("utf-8")
    levels = _topic_levels(subject)
    if isinstance(levels, SubjectError):
        raise levels
    return "/".join(levels)


# -- the target ---------------------------------------------------------------------


def _event_of(msg):
    """The event of a WireMsg, as published (without this flow's lineage
    entry, which only the in-process deliveries carry)."""
    ev = msg.event
    if ev is not None:
        hev = Event.__new__(Event)
        _ev_copy(hev, ev)
        hev._origin = None
        return hev
    rec = msg.rec
    return _ev_decode(msg.subject, rec, 0, len(rec), msg.seq, msg.stream, msg.ts, None)


def _data_of(msg):
    if msg.data is not None:
        return msg.data
    rec = msg.rec
    return rec[_ev_data_offset(rec, 0, len(rec)):]


def _forwarded(msg):
    """``(properties, payload)`` a message of the MQTT door carries to its
    subscribers: its extension ``mqttprops`` (bytes), and its payload when
    that is not its data (a structured CloudEvent; None: the data)."""
    key = ("mqttfwd",)
    got = msg.cache.get(key)
    if got is None:
        fwd = b""
        payload = None
        rec = msg.rec
        if int.from_bytes(rec[12:16], "little"):
            ev = msg.event if msg.event is not None else _event_of(msg)
            ext = ev.extensions
            v = ext.get("mqttprops")
            if type(v) is bytes and len(v) <= MQTT_VBI_MAX:
                fwd = v
            if ext.get("mqttce") == "structured":
                payload = _structured_payload(ev)
        got = msg.cache[key] = (fwd, payload)
    return got


def _fwd_qos(msg):
    """``(qos, retain, expiry)`` of a message of the MQTT door: its
    extensions ``mqttqos`` (0..2; 0 otherwise), ``mqttretain`` (True) and
    whether it has ``mqttexpiry``."""
    key = ("mqttqos",)
    got = msg.cache.get(key)
    if got is None:
        q, retain, expiry = 0, False, False
        rec = msg.rec
        if int.from_bytes(rec[12:16], "little"):
            ev = msg.event if msg.event is not None else _event_of(msg)
            ext = ev.extensions
            v = ext.get("mqttqos")
            if type(v) is int and 0 <= v <= 2:
                q = v
            retain = ext.get("mqttretain") is True
            expiry = "mqttexpiry" in ext
        got = msg.cache[key] = (q, retain, expiry)
    return got


def _structured_payload(event):
    """The payload a structured CloudEvent published through the MQTT door
    goes on with to MQTT subscribers: its JSON (without the door's own
    ``mqtt*`` extensions and the lineage)."""
    from fastflow.event import to_json
    attrs = {k: v for k, v in event.attributes().items()
             if not k.startswith("mqtt") and k not in ("specversion", "ffhops", "fftrace")}
    return to_json(Event(event.routing_subject, event.data, **attrs), False)


def _parts(msg, version, mode, lineage):
    """``(payload, properties)`` of ``msg`` for a subscriber of ``version``
    in ``mode`` (properties without a subscription identifier; None: none):
    what MQTT sent for a message of the MQTT door, the mode's otherwise."""
    mqtt = msg.rec[1] & EVF_MQTT
    if mode == "structured" and not mqtt:
        return _web_json(msg, lineage), (_CT_STRUCTURED if version == 5 else None)
    payload = _data_of(msg)
    if mqtt:
        fwd, own = _forwarded(msg)
        return (payload if own is None else own), (fwd if version == 5 else None)
    if version != 5:
        return payload, None
    if mode == "binary":
        key = ("mqtt", lineage)
        props = msg.cache.get(key)
        if props is None:
            props = msg.cache[key] = _binary_props(_event_of(msg), lineage)
        return payload, props
    return payload, None


def _arg_types(version, mode):
    """The native core's argument conversions of ``version`` and ``mode``."""
    if type(version) is not int:
        raise TypeError("an integer is required")
    if mode is not None and type(mode) is not str:
        raise TypeError("Argument 'mode' has incorrect type (expected str, got {})".format(
            type(mode).__name__))


def _check_mode(version, mode):
    """ValueError naming what does not go in ``mode`` for a subscriber of
    MQTT ``version`` (MqttTarget and mqtt_parts)."""
    if version not in (3, 4, 5):
        raise ValueError("MQTT protocol version must be 3, 4 (3.1.1) or 5, got {}".format(
            version))
    if mode not in _MODES:
        raise ValueError("MQTT delivery mode must be 'raw', 'binary' or 'structured', "
                         "got {!r}".format(mode))
    if mode == "binary" and version != 5:
        raise ValueError("the binary mode needs MQTT 5 (properties); version {} has "
                         "'raw' and 'structured'".format(version))


def mqtt_parts(event, version=5, mode="binary", lineage=False):
    """``(properties, payload)`` (bytes) of a PUBLISH carrying ``event`` to
    a subscriber of MQTT ``version`` (3, 4 or 5) in ``mode`` ("raw",
    "binary" (5 only) or "structured"), as MqttTarget writes it:
    ``properties`` the MQTT 5 property block's content without its length
    and without a subscription identifier (b'' for 3.1.1).  An event
    published through the MQTT door (``from_mqtt``) comes out as MQTT
    sent it, whatever the mode."""
    if not isinstance(event, Event):
        raise TypeError("Argument 'event' has incorrect type (expected "
                        "fastflow._core.Event, got {})".format(type(event).__name__))
    _arg_types(version, mode)
    _check_mode(version, mode)
    subject = event.routing_subject
    if subject is None:
        raise ValueError("mqtt_parts: the event has no routing subject")
    rec = event.encode()
    msg = _stored_msg(subject, subject.encode("utf-8", "surrogatepass"), rec, event.stream,
                      event.seq, event.ts)
    msg.event = event
    payload, props = _parts(msg, version, mode, bool(lineage))
    return bytes(props or b""), bytes(payload)


@_final
class MqttFlight:
    """The QoS 1 deliveries of one MQTT connection whose session ends with
    it (clean session, session expiry 0), kept in C: its MqttTargets of
    QoS 1 subscriptions write each PUBLISH here, which gives it a packet
    identifier (1 .. 32767; the door's Python side takes the ones above
    for QoS 2 and what it sends itself) and writes it into ``outbuf`` while
    fewer than ``receive_max`` messages (its own plus ``others``, the ones
    Python has in flight) await their PUBACK, and at most 1,024 of its
    own; the rest waits in its queue, in order, and goes out as PUBACKs
    come (``ack``, which the parser calls in C).

    Limits: at most ``max_queued`` messages and the OutBuf's
    ``max_pending`` bytes wait; a message past either is dropped (counted
    in ``dropped``: the newest go, as mosquitto's max_queued_messages).  A
    message with a Message Expiry Interval (``push``'s ``deadline``) that
    passes while it waits is dropped (``expired``); one sent goes with the
    interval left.  ``wake`` (no arguments) is called when an
    acknowledgement frees room and nothing of its own waits: the door's
    Python side sends what it keeps."""

    __slots__ = ("_outbuf", "_receive_max", "_others", "_inflight", "_queue", "_max_queued",
                 "_queued_bytes", "_sent", "_acked", "_dropped", "_expired", "wake", "_slots",
                 "_mask", "_next_id")

    def __reduce__(self):
        raise TypeError("cannot pickle '{}' object".format(type(self).__qualname__))

    def __init__(self, outbuf, receive_max=65535, max_queued=10000):
        if not isinstance(outbuf, OutBuf):
            raise TypeError("Argument 'outbuf' has incorrect type (expected {}.{}, got {})"
                            .format(OutBuf.__module__, OutBuf.__qualname__,
                                    type(outbuf).__name__))
        receive_max = _c_int(receive_max)
        max_queued = _c_ssize(max_queued)
        if not 1 <= receive_max <= 65535:
            raise ValueError("receive_max must be 1..65535, got {}".format(receive_max))
        if max_queued < 0:
            raise ValueError("max_queued must be >= 0, got {}".format(max_queued))
        ring = 16
        while ring < receive_max and ring < MQTT_FLIGHT_RING:
            ring <<= 1
        if not hasattr(self, "_slots"):
            self._slots = [0] * ring
            self._mask = ring - 1
            self._next_id = 1
            self._inflight = 0
            self._queue = deque()   # [packet (bytearray), pid_off, exp_off, deadline]
            self._queued_bytes = 0
            self._sent = self._acked = self._dropped = self._expired = 0
            self._others = 0
            self.wake = None
        self._outbuf = outbuf
        self._receive_max = receive_max
        self._max_queued = max_queued

    outbuf = _ro("_outbuf")
    inflight = _ro("_inflight")
    queued_bytes = _ro("_queued_bytes")
    sent = _ro("_sent")
    acked = _ro("_acked")
    dropped = _ro("_dropped")
    expired = _ro("_expired")
    max_queued = _ssize("_max_queued")

    @property
    def queued(self):
        return len(self._queue)

    @property
    def receive_max(self):
        return self._receive_max

    @receive_max.setter
    def receive_max(self, v):
        self._receive_max = _c_int(v)

    @property
    def others(self):
        return self._others

    @others.setter
    def others(self, v):
        self._others = _c_int(v)

    @property
    def window(self):
        """Messages it may have in flight at most (its ring)."""
        return self._mask + 1

    def _room(self):
        return (self._inflight + self._others < self._receive_max
                and self._slots[self._next_id & self._mask] == 0)

    def _send(self, packet, pid_off):
        """``packet`` (a bytearray) out now with the next packet id; False:
        the OutBuf dropped it."""
        ob = self._outbuf
        was_empty = not ob._buf
        if not ob._reserve(len(packet)):
            return False
        pid = self._next_id
        self._next_id = pid % MQTT_FLIGHT_IDS + 1
        self._slots[pid & self._mask] = pid
        self._inflight += 1
        self._sent += 1
        packet[pid_off:pid_off + 2] = pid.to_bytes(2, "big")
        ob._buf += packet
        ob._wrote(was_empty, True)
        return True

    def _put(self, packet, pid_off, exp_off=-1, deadline=0.0):
        """Send or queue ``packet``: False if dropped."""
        if not self._queue and self._room():
            return self._send(packet, pid_off)
        bound = self._outbuf._max_pending
        if len(self._queue) >= self._max_queued or (
                bound and self._queued_bytes + len(packet) > bound):
            self._dropped += 1
            return False
        self._queue.append((packet, pid_off, exp_off, deadline))
        self._queued_bytes += len(packet)
        return True

    def _ack(self, pid):
        if not 1 <= pid <= MQTT_FLIGHT_IDS or self._slots[pid & self._mask] != pid:
            return False
        self._slots[pid & self._mask] = 0
        self._inflight -= 1
        self._acked += 1
        if self._queue:
            self.drain()
        if not self._queue and self.wake is not None \
                and self._inflight + self._others < self._receive_max:
            self.wake()
        return True

    def drain(self):
        """Send what waits while there is room (after ``others`` fell)."""
        now = 0.0
        q = self._queue
        while q and self._room():
            packet, pid_off, exp_off, deadline = q.popleft()
            self._queued_bytes -= len(packet)
            if deadline > 0:
                if now == 0.0:
                    now = time.time()
                if deadline <= now:
                    self._expired += 1
                    continue
                if exp_off >= 0:        # the interval left (MQTT 5 section 3.3.2.3.3)
                    packet[exp_off:exp_off + 4] = (
                        int(math.ceil(deadline - now)) & 0xFFFFFFFF).to_bytes(4, "big")
            self._send(packet, pid_off)

    def push(self, packet, pid_offset, deadline=None, expiry_offset=-1):
        """Send (or queue) ``packet``, a complete QoS 1 PUBLISH whose packet
        identifier (2 bytes at ``pid_offset``) it fills in; ``deadline``:
        when it expires (epoch seconds), then ``expiry_offset``: where the
        4 bytes of its Message Expiry Interval are (-1: none), rewritten
        with the time left when it goes out of the queue.  Returns False
        if it was dropped (the queue's limits or the OutBuf's)."""
        packet = bytearray(memoryview(packet).cast("B"))
        pid_offset = _c_ssize(pid_offset)
        dl = 0.0 if deadline is None else float(deadline)
        expiry_offset = _c_ssize(expiry_offset)
        if not 0 <= pid_offset <= len(packet) - 2 or expiry_offset > len(packet) - 4:
            raise ValueError("pid_offset {} or expiry_offset {} outside a packet of {} "
                             "bytes".format(pid_offset, expiry_offset, len(packet)))
        if deadline is not None and dl <= time.time():
            self._expired += 1
            return False
        return self._put(packet, pid_offset, expiry_offset, dl)

    def ack(self, pid):
        """A PUBACK of ``pid`` (one that did not come through the parser's
        C path): True if it was one of its packet ids."""
        return self._ack(_c_int(pid))

    def owns(self, pid):
        """Whether ``pid`` is one of its packet identifiers in flight."""
        pid = _c_int(pid)
        return 1 <= pid <= MQTT_FLIGHT_IDS and self._slots[pid & self._mask] == pid


@_final
class MqttTarget(WireTarget):
    """An MQTT subscription delivered at QoS 0: each message one PUBLISH
    packet (RETAIN 0), its topic the routing subject translated back
    (``mqtt_subject_topic``).  ``version``: 3 (3.1), 4 (3.1.1) or 5;
    ``mode``: "raw" (the data only), "binary" (MQTT 5: CloudEvents
    attributes as properties) or "structured" (the event's CloudEvents
    JSON); ``subscription_identifier`` (MQTT 5, 1..268435455; None: none);
    ``max_packet``: the client's Maximum Packet Size (0: no limit);
    ``lineage``: ffhops and fftrace go too.

    A message whose subject has no topic (a token with '+' or '#', or the
    subject '/', whose topic would be empty) is counted in
    ``untranslatable``, a packet over ``max_packet`` (or the protocol's
    limit) in ``too_large``; neither is written, and the router counts
    both as delivered (MQTT 5 section 3.1.2.25: the server behaves as if
    it had sent them).  A packet the OutBuf drops (its limit) is counted
    there, as for every target.

    ``qos`` 1 (with ``flight``, an MqttFlight on the same OutBuf, and
    ``fallback``): a QoS 1 subscription.  A message published through
    the MQTT door at QoS 1 or 2 goes at QoS 1 through ``flight`` (its
    packet id, window and queue; one the queue's limits drop counts as
    dropped here too); the others at QoS 0, as MQTT has it (the lower of
    the two).  One with a Message Expiry Interval, or published retained
    to a subscription with ``retain_as_published``, goes to
    ``fallback(event)`` (the door's Python side, which sends it through
    ``flight.push``)."""

    __slots__ = ("_version", "_mode", "_subscription_identifier", "_max_packet", "_lineage",
                 "_untranslatable", "_too_large", "_sid_prop", "_subject", "_topic", "_qos",
                 "_flight", "_retain_as_published", "fallback")

    def __init__(self, outbuf, version=4, mode="raw", subscription_identifier=None,
                 max_packet=0, echo=True, lineage=False, qos=0, flight=None,
                 retain_as_published=False, fallback=None):
        _arg_types(version, mode)
        max_packet = _c_ssize(max_packet)     # (the native core converts in argument order)
        qos = _c_int(qos)
        if flight is not None and not isinstance(flight, MqttFlight):
            raise TypeError("Argument 'flight' has incorrect type (expected {}.{}, got {})"
                            .format(MqttFlight.__module__, MqttFlight.__qualname__,
                                    type(flight).__name__))
        if qos != 0 and qos != 1:
            raise ValueError("qos must be 0 or 1 (QoS 2 is the door's), got {}".format(qos))
        if qos and (flight is None or fallback is None):
            raise ValueError("qos 1 needs a flight and a fallback")
        if flight is not None and flight.outbuf is not outbuf:
            raise ValueError("the flight writes to another OutBuf")
        WireTarget.__init__(self, outbuf, echo)
        _check_mode(version, mode)
        sid_prop = b""
        if subscription_identifier is not None:
            if version != 5:
                raise ValueError("a subscription identifier needs MQTT 5, version is {}".format(
                    version))
            if not 1 <= subscription_identifier <= MQTT_VBI_MAX:
                raise ValueError("subscription identifier must be 1..{}, got {}".format(
                    MQTT_VBI_MAX, subscription_identifier))
            sid_prop = bytes((MQTT_PROP_SUBSCRIPTION_ID,)) + _vbi(subscription_identifier)
        if max_packet < 0:
            raise ValueError("max_packet must be >= 0 (0: no limit), got {}".format(max_packet))
        self._version = version
        self._mode = mode
        self._subscription_identifier = subscription_identifier
        self._max_packet = max_packet
        self._lineage = bool(lineage)
        self._untranslatable = 0        # messages whose subject has no MQTT topic
        self._too_large = 0             # packets over max_packet: not sent
        self._sid_prop = sid_prop       # the Subscription Identifier property (b"": none)
        self._subject = None            # the last message's subject ...
        self._topic = None              # ... and its topic (bytes; None: it has none)
        self._qos = qos                 # the subscription's QoS (1: through flight)
        self._flight = flight
        self._retain_as_published = bool(retain_as_published)
        self.fallback = fallback        # (event) the messages C leaves to Python

    version = _ro("_version")
    mode = _ro("_mode")
    subscription_identifier = _ro("_subscription_identifier")
    lineage = _ro("_lineage")
    qos = _ro("_qos")
    flight = _ro("_flight")
    retain_as_published = _ro("_retain_as_published")
    untranslatable = _ro("_untranslatable")
    too_large = _ro("_too_large")

    max_packet = _ssize("_max_packet", "The client's Maximum Packet Size (0: no limit).")

    def _translate(self, subject_b):
        """The topic of a subject (UTF-8), kept for the messages of that
        subject that follow."""
        self._subject = subject_b
        levels = _topic_levels(subject_b.decode("utf-8", "surrogatepass"))
        topic = None
        if not isinstance(levels, SubjectError):
            topic = "/".join(levels).encode("utf-8", "surrogatepass")
            if not 0 < len(topic) <= MQTT_STR_MAX:
                topic = None
        self._topic = topic

    def write(self, msg):
        if msg.subject_b != self._subject:
            self._translate(msg.subject_b)
        topic = self._topic
        if topic is None:
            self._untranslatable += 1
            return True
        payload, props = _parts(msg, self._version, self._mode, self._lineage)
        q = 0
        if self._qos and msg.rec[1] & EVF_MQTT:
            mq, retain, expiry = _fwd_qos(msg)
            if mq:
                if expiry or (self._retain_as_published and retain):
                    self.fallback(msg.event if msg.event is not None else _event_of(msg))
                    return True
                q = 1
        parts = [len(topic).to_bytes(2, "big"), topic]
        if q:
            parts.append(b"\0\0")       # (the packet id: the flight's)
        if self._version == 5:
            block = self._sid_prop + (props or b"")
            if len(block) > MQTT_VBI_MAX:
                self._too_large += 1
                return True
            parts.append(_vbi(len(block)))
            parts.append(block)
        parts.append(payload)
        body = b"".join(parts)
        if len(body) > MQTT_VBI_MAX:
            self._too_large += 1
            return True
        head = bytes((MQTT_PUBLISH_QOS1 if q else MQTT_PUBLISH,)) + _vbi(len(body))
        packet = head + body
        if self._max_packet and len(packet) > self._max_packet:
            self._too_large += 1
            return True
        if q:
            return self._flight._put(bytearray(packet), len(head) + 2 + len(topic))
        ob = self._outbuf
        was_empty = not ob._buf
        if not ob._reserve(len(packet)):
            return False
        ob._buf += packet
        ob._wrote(was_empty, True)
        return True

