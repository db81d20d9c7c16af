"""The MQTT protocol's output side (src_ext/wire/mqtt_out.pyx and its twin
fastflow/_ref/wire/mqtt_out.py): ``MqttTarget`` (one QoS 0 PUBLISH packet
per delivery, MQTT 3.1.1 and 5.0, the modes raw / binary / structured) and
``mqtt_subject_topic`` (fastflow.mqtt.subject_to_mqtt_topic in C).

Every test runs once per core.  The packets are read back twice: by a
decoder written here from the MQTT 5 specification (section 2: the fixed
header, Variable Byte Integers, UTF-8 strings and pairs; section 3.3: the
PUBLISH packet) and by paho-mqtt's client, fed through a socket pair.
Hypothesis throws random events at both cores (the events of
tests/test_web_out.py), which must write the same bytes, and random
subjects at ``mqtt_subject_topic``, which must answer what
fastflow.mqtt answers (``MQTT_FUZZ_EXAMPLES=<n>``: how many examples they
try; 200 by default).
"""

import base64
import os
import socket
import struct

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import event as cloudevents
from fastflow.errors import EventError, SubjectError
from fastflow.mqtt import mqtt_topic_to_subject, subject_to_mqtt_topic

from conftest import CORES, both_cores
from test_web_out import random_event, record

SUBJ = "orders.eu"
FUZZ = settings(max_examples=int(os.environ.get("MQTT_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
STRUCTURED_CT = "application/cloudevents+json"


# -- an MQTT decoder, from the specification -------------------------------------------------


def read_vbi(buf, i):
    """A Variable Byte Integer at ``buf[i]``: (value, next index)."""
    value = 0
    for k in range(4):
        b = buf[i + k]
        value |= (b & 127) << (7 * k)
        if not b & 128:
            return value, i + k + 1
    raise AssertionError("a Variable Byte Integer of more than 4 bytes")


def read_str(buf, i):
    n = struct.unpack_from(">H", buf, i)[0]
    raw = bytes(buf[i + 2:i + 2 + n])
    assert len(raw) == n
    text = raw.decode("utf-8")              # (well-formed UTF-8 ...)
    assert "\x00" not in text               # (... without U+0000: MQTT 5 section 1.5.4)
    return text, i + 2 + n


def decode_packets(buf, version):
    """The PUBLISH packets of ``buf`` (which must end on a packet's end):
    dicts of the fixed header's flags, the topic, the properties (a list
    of (identifier, value) in order; None before MQTT 5) and the payload;
    ``size``: the packet's bytes."""
    out = []
    i = 0
    while i < len(buf):
        start = i
        head = buf[i]
        assert head >> 4 == 3, "not a PUBLISH: 0x{:02x}".format(head)
        remaining, i = read_vbi(buf, i + 1)
        end = i + remaining
        assert end <= len(buf), "a packet is cut short"
        topic, i = read_str(buf, i)
        props = None
        if version == 5:
            plen, i = read_vbi(buf, i)
            pend = i + plen
            props = []
            while i < pend:
                ident = buf[i]
                i += 1
                if ident == 0x03:               # Content Type: a string
                    value, i = read_str(buf, i)
                elif ident == 0x0B:             # Subscription Identifier: a VBI
                    value, i = read_vbi(buf, i)
                elif ident == 0x26:             # User Property: a string pair
                    k, i = read_str(buf, i)
                    v, i = read_str(buf, i)
                    value = (k, v)
                else:
                    raise AssertionError("property 0x{:02x} not expected".format(ident))
                props.append((ident, value))
            assert i == pend
        out.append({"flags": head & 15, "topic": topic, "props": props,
                    "payload": bytes(buf[i:end]), "size": end - start})
        i = end
    return out


def paho_messages(buf, version):
    """The messages paho-mqtt's client reads from ``buf``."""
    here, there = socket.socketpair()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                         protocol=paho.MQTTv5 if version == 5 else paho.MQTTv311)
    got = []
    client.on_message = lambda _client, _userdata, message: got.append(message)
    client._sock = here
    here.setblocking(False)

    def pending():
        try:
            return bool(here.recv(1, socket.MSG_PEEK))
        except BlockingIOError:
            return False

    try:
        for at in range(0, len(buf), 32768):
            there.sendall(buf[at:at + 32768])
            while pending():
                assert client.loop_read() == paho.MQTT_ERR_SUCCESS
    finally:
        client._sock = None
        here.close()
        there.close()
    return got


def mqtt_text(s):
    """``s`` as an MQTT string may carry it: U+0000 and surrogates (which
    MQTT strings may not hold) as U+FFFD."""
    return "".join("\ufffd" if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in s)


def expected_props(ev, lineage=False, sid=None):
    """The binary mode's properties of ``ev``, as (identifier, value), by
    the CloudEvents MQTT binding: a User Property per attribute (its
    canonical string), datacontenttype as the Content Type."""
    def canonical(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, bytes):
            return base64.b64encode(v).decode()
        return mqtt_text(str(v))

    props = [] if sid is None else [(0x0B, sid)]
    attrs = ev.attributes()
    ct = attrs.pop("datacontenttype", None)
    for k, v in attrs.items():
        if k in ("ffhops", "fftrace") and not lineage:
            continue
        props.append((0x26, (mqtt_text(k), canonical(v))))
    if ct is not None:
        props.append((0x03, canonical(ct)))
    return props


class Mqtt:
    """A router with one MqttTarget (on its own OutBuf) subscribed to ``pattern``."""

    def __init__(self, core, version=5, mode="raw", pattern=">", router=None, **kw):
        self.core = core
        self.version = version
        self.router = router if router is not None else core.Router(hop_limit=0)
        self.out = core.OutBuf(0)
        self.target = core.MqttTarget(self.out, version, mode, **kw)
        self.router.add(pattern, self.target)

    def packets(self):
        """What was written since the last call: the decoded packets, each
        checked against what paho-mqtt reads of the same bytes."""
        buf = self.out.take()
        mine = decode_packets(buf, self.version)
        theirs = paho_messages(buf, self.version)
        assert len(theirs) == len(mine)
        for p, m in zip(mine, theirs):
            assert p["flags"] == 0                      # QoS 0, DUP 0, RETAIN 0
            assert (m.topic, m.payload, m.qos, m.retain, m.dup) == (
                p["topic"], p["payload"], 0, False, False)
            if self.version == 5:
                props = dict(m.properties.json())
                users = [v for i, v in p["props"] if i == 0x26]
                assert [tuple(u) for u in props.get("UserProperty", [])] == users
                ct = [v for i, v in p["props"] if i == 0x03]
                assert props.get("ContentType") == (ct[0] if ct else None)
                sid = [v for i, v in p["props"] if i == 0x0B]
                assert props.get("SubscriptionIdentifier", []) == sid
        return mine


# -- the packets ---------------------------------------------------------------------------------

ATTRIBUTE_SETS = [
    {},
    {"id": "e-1", "source": "/shop", "type": "order.created"},
    {"time": "2024-05-06T07:08:09.123Z", "subject": "o/1", "dataschema": "https://x/s.json"},
    {"datacontenttype": "application/json"},
    {"datacontenttype": "text/plain; charset=utf-8", "x": "y"},
    {"s": "v", "i": -7, "big": 2147483647, "neg": -2147483648, "t": True, "f": False,
     "b": b"\x00\x01\xff", "e": ""},
    {"ffhops": 3, "fftrace": "abc,def"},
    {"id": 'quote" nl\n nul\x00 ü 😀', "source": "/é"},
]
DATAS = [b"", b"hello", b'{"a": 1}', bytes(range(256)), b"x" * 300]


def events(core):
    return [core.Event(SUBJ, data, **attrs) for attrs in ATTRIBUTE_SETS for data in DATAS]


def test_raw_v311_is_the_bare_payload(core):
    m = Mqtt(core, 4)
    m.router.publish(core.Event("a.b", b"hi"))
    assert m.out.take() == b"\x30\x07\x00\x03a/bhi"
    for ev in events(core):
        m.router.publish(ev)
    got = m.packets()
    assert [(p["topic"], p["payload"]) for p in got] == [("orders/eu", ev.data)
                                                          for ev in events(core)]
    assert m.target.delivered == 1 + len(got)


def test_raw_v5_has_no_properties(core):
    m = Mqtt(core, 5)
    m.router.publish(core.Event("a.b", b"hi", datacontenttype="text/plain"))
    assert m.out.take() == b"\x30\x08\x00\x03a/b\x00hi"
    evs = events(core)
    for ev in evs:
        m.router.publish(ev)
    assert [(p["payload"], p["props"]) for p in m.packets()] == [(ev.data, []) for ev in evs]


@pytest.mark.parametrize("lineage", [False, True])
def test_binary_v5_attributes_as_properties(core, lineage):
    m = Mqtt(core, 5, "binary", lineage=lineage)
    evs = events(core)
    for ev in evs:
        m.router.publish(ev)
    got = m.packets()
    assert len(got) == len(evs)
    for ev, p in zip(evs, got):
        assert p["payload"] == ev.data
        assert p["props"] == expected_props(ev, lineage)
    # the first attributes of an event with the defaults, in order
    assert got[0]["props"][:4] == [(0x26, ("specversion", "1.0")), (0x26, ("id", evs[0].id)),
                                   (0x26, ("source", "/fastflow")), (0x26, ("type", SUBJ))]


def test_binary_of_network_records(core):
    # records from the network (publish_record): the forms C walks and the
    # ones it leaves to Python (a duplicate name, a datacontenttype that is
    # no string, more attributes than it checks) give what the event says
    from test_web_out import HAND_RECORDS

    m = Mqtt(core, 5, "binary", lineage=True)
    for rec in HAND_RECORDS:
        m.router.publish_record(SUBJ, rec)
    got = m.packets()
    assert len(got) == len(HAND_RECORDS)
    for rec, p in zip(HAND_RECORDS, got):
        ev = core.Event.decode(SUBJ, rec)
        assert p["props"] == expected_props(ev, True), rec


def test_lone_surrogates_and_nul_become_replacement_characters(core):
    m = Mqtt(core, 5, "binary")
    rec = record(id=b"a\x00b", source=b"/\xed\xa0\x80s", type=b"t\xed\xa0\x80\xed\xb0\x80",
                 data=b"x")
    m.router.publish_record(SUBJ, rec)
    (p,) = m.packets()
    assert p["props"][1:4] == [(0x26, ("id", "a\ufffdb")), (0x26, ("source", "/\ufffds")),
                               (0x26, ("type", "t\ufffd\ufffd"))]


@pytest.mark.parametrize("version", [4, 5])
def test_structured_is_the_cloudevents_json(core, version):
    m = Mqtt(core, version, "structured")
    evs = events(core)
    for ev in evs:
        m.router.publish(ev)
    got = m.packets()
    assert [p["payload"] for p in got] == [cloudevents.to_json(ev, False) for ev in evs]
    want = None if version == 4 else [(0x03, STRUCTURED_CT)]
    assert all(p["props"] == want for p in got)


def test_structured_with_lineage(core):
    m = Mqtt(core, 5, "structured", lineage=True)
    ev = core.Event(SUBJ, b"{}", ffhops=2, fftrace="t1")
    m.router.publish(ev)
    (p,) = m.packets()
    assert p["payload"] == cloudevents.to_json(ev, True)


EVF_MQTT = 4        # the record flag of a publish through the MQTT door (src_ext/event.pyx)


def mqtt_origin(rec):
    """``rec`` flagged as published through the MQTT door."""
    return rec[:1] + bytes((rec[1] | EVF_MQTT,)) + rec[2:]


def _fwd(*pairs, ct=None):
    """An MQTT 5 property block's content: User Properties, a Content Type."""
    def s(x):
        b = x.encode()
        return struct.pack(">H", len(b)) + b
    out = b"".join(b"\x26" + s(k) + s(v) for k, v in pairs)
    return out + (b"\x03" + s(ct) if ct is not None else b"")


MODES = [(4, "raw"), (4, "structured"), (5, "raw"), (5, "binary"), (5, "structured")]


@pytest.mark.parametrize("version,mode", MODES)
def test_mqtt_door_messages_go_as_sent_in_every_mode(core, version, mode):
    """A record of the MQTT door (flag EVF_MQTT) is no CloudEvent to the
    modes: its payload, and (5.0) the properties its publisher gave
    (extension mqttprops), nothing added; its Event keeps the flag."""
    fwd = _fwd(("a", "1"), ("a", "2"), ct="text/plain")
    recs = [mqtt_origin(core.Event(SUBJ, b"plain").encode()),
            mqtt_origin(core.Event(SUBJ, b"qos1", mqttqos=1).encode()),
            mqtt_origin(core.Event(SUBJ, b"props", mqttqos=2, mqttprops=fwd,
                                   datacontenttype="text/plain").encode())]
    m = Mqtt(core, version, mode)
    for rec in recs:
        ev = core.Event.decode(SUBJ, rec)
        assert ev.from_mqtt and ev.encode() == rec
        m.router.publish_record(SUBJ, rec)
        m.router.publish(ev)            # (an Event of such a record: the same)
    got = m.packets()
    assert [p["payload"] for p in got] == [b"plain"] * 2 + [b"qos1"] * 2 + [b"props"] * 2
    if version == 5:
        assert [p["props"] for p in got] == [[]] * 4 + [
            [(0x26, ("a", "1")), (0x26, ("a", "2")), (0x03, "text/plain")]] * 2
    assert not core.Event(SUBJ, b"").from_mqtt


def test_a_structured_cloudevent_of_the_mqtt_door_goes_as_its_json(core):
    # (the door decoded it: its subscribers get the event's JSON, without
    # the door's own extensions)
    fwd = _fwd(ct=STRUCTURED_CT)
    ev = core.Event(SUBJ, b'{"a":1}', id="x1", source="/dev", type="t.x", subject="s",
                    datacontenttype="application/json", mqttprops=fwd, mqttce="structured",
                    mqttqos=1)
    rec = mqtt_origin(ev.encode())
    plain = core.Event(SUBJ, b'{"a":1}', id="x1", source="/dev", type="t.x", subject="s",
                       datacontenttype="application/json")
    for version in (4, 5):
        m = Mqtt(core, version, "binary" if version == 5 else "raw")
        m.router.publish_record(SUBJ, rec)
        (p,) = m.packets()
        assert p["payload"] == cloudevents.to_json(plain, False)
        assert p["props"] == ([(0x03, STRUCTURED_CT)] if version == 5 else None)


@pytest.mark.parametrize("version,mode", MODES)
def test_mqtt_parts_is_what_the_target_writes(core, version, mode):
    """``mqtt_parts`` (the door's QoS 1/2 deliveries) makes the payload
    and properties MqttTarget writes at QoS 0: one function, not two."""
    evs = events(core) + [core.Event.decode(SUBJ, mqtt_origin(core.Event(
        SUBJ, b"m", mqttprops=_fwd(("k", "v"))).encode()))]
    m = Mqtt(core, version, mode)
    for ev in evs:
        m.router.publish(ev)
        props, payload = core.mqtt_parts(ev, version, mode)
        body = b"\x00\x09orders/eu"
        if version == 5:
            body += bytes([len(props)]) if len(props) < 128 else bytes(
                [len(props) & 127 | 128, len(props) >> 7])
            body += props
        else:
            assert props == b""
        body += payload
        head = bytearray([0x30])
        n = len(body)
        while n >= 128:
            head.append(n & 127 | 128)
            n >>= 7
        head.append(n)
        assert m.out.take() == bytes(head) + body, ev.attributes()


def test_mqtt_parts_arguments(core):
    ev = core.Event(SUBJ, b"x")
    with pytest.raises(ValueError, match="binary mode needs MQTT 5"):
        core.mqtt_parts(ev, 4, "binary")
    with pytest.raises(ValueError, match="'raw', 'binary' or 'structured'"):
        core.mqtt_parts(ev, 5, "json")
    with pytest.raises(ValueError, match="3, 4 .3.1.1. or 5"):
        core.mqtt_parts(ev, 6)
    with pytest.raises(ValueError, match="no routing subject"):
        core.mqtt_parts(core.Event(None, b"", type="t"))
    with pytest.raises(TypeError):
        core.mqtt_parts(b"not an event")


@pytest.mark.parametrize("sid", [1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455])
def test_subscription_identifier(core, sid):
    for mode in ("raw", "binary", "structured"):
        m = Mqtt(core, 5, mode, subscription_identifier=sid)
        m.router.publish(core.Event(SUBJ, b"x"))
        (p,) = m.packets()
        assert p["props"][0] == (0x0B, sid)
        assert m.target.subscription_identifier == sid


@pytest.mark.parametrize("size", [0, 1, 100, 127 - 12, 128, 16383, 16384, 2097152])
def test_remaining_length_at_the_boundaries(core, size):
    m = Mqtt(core, 4)
    m.router.publish(core.Event("a", b"z" * size))
    buf = m.out.take()
    rl = 3 + size
    head = bytearray()
    v = rl
    while True:
        b = v & 127
        v >>= 7
        head.append(b | (128 if v else 0))
        if not v:
            break
    assert buf[:1 + len(head)] == b"\x30" + bytes(head)
    assert len(buf) == 1 + len(head) + rl
    (p,) = decode_packets(buf, 4)
    assert p["payload"] == b"z" * size


def test_arguments(core):
    ob = core.OutBuf(0)
    t = core.MqttTarget(ob)
    assert (t.version, t.mode, t.subscription_identifier, t.max_packet, t.lineage) == (
        4, "raw", None, 0, False)
    assert (t.untranslatable, t.too_large, t.delivered, t.dropped) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="binary mode needs MQTT 5"):
        core.MqttTarget(ob, 4, "binary")
    with pytest.raises(ValueError, match="must be 3, 4 .3.1.1. or 5, got 6"):
        core.MqttTarget(ob, 6)
    with pytest.raises(ValueError, match="mode must be 'raw', 'binary' or 'structured', got 'x'"):
        core.MqttTarget(ob, 5, "x")
    with pytest.raises(ValueError, match="subscription identifier needs MQTT 5"):
        core.MqttTarget(ob, 4, subscription_identifier=1)
    with pytest.raises(ValueError, match="must be 1..268435455, got 0"):
        core.MqttTarget(ob, 5, subscription_identifier=0)
    with pytest.raises(ValueError, match="max_packet must be >= 0"):
        core.MqttTarget(ob, 5, max_packet=-1)
    with pytest.raises(TypeError):
        core.MqttTarget(None)
    t.max_packet = 10
    assert t.max_packet == 10
    with pytest.raises(AttributeError):
        t.too_large = 1


# -- the topic -----------------------------------------------------------------------------------


def test_topics_and_the_cache(core):
    m = Mqtt(core, 4)
    subjects = ["a", "a.b", "/.a./.b./", "v1//2.x", "a.///", "x.$SYS", "a", "a", "a.b", "a.c",
                "a.c", "b.c", "é.ü"]
    for s in subjects:
        m.router.publish(core.Event(s, s.encode()))
    got = m.packets()
    assert [p["topic"] for p in got] == [subject_to_mqtt_topic(s) for s in subjects]
    assert [mqtt_topic_to_subject(p["topic"]) for p in got[:3]] == subjects[:3]
    assert [p["payload"].decode() for p in got] == subjects


def test_untranslatable_subjects_are_counted(core):
    m = Mqtt(core, 5)
    for s in ["a.b+c", "a", "#", "a", "/", "a.#.b", "a", "a.b#c", "a.bcc"]:
        m.router.publish(core.Event(s, b"x"))
    assert [p["topic"] for p in m.packets()] == ["a", "a", "a", "a/bcc"]
    assert (m.target.untranslatable, m.target.delivered, m.target.dropped) == (5, 9, 0)
    assert m.out.dropped == 0


def test_mqtt_subject_topic(core):
    assert core.mqtt_subject_topic("a.b") == "a/b"
    assert core.mqtt_subject_topic(b"/.a./") == "/a/"
    assert core.mqtt_subject_topic("v1//2.x") == "v1.2/x"
    assert core.mqtt_subject_topic("/") == ""
    with pytest.raises(SubjectError, match=r"subject 'a.b\+c' cannot be an MQTT topic: "
                                           r"'\+' in token 2 'b\+c'"):
        core.mqtt_subject_topic("a.b+c")
    with pytest.raises(SubjectError, match="invalid subject 'a..b'"):
        core.mqtt_subject_topic("a..b")
    with pytest.raises(SubjectError, match="wildcard|not allowed|invalid"):
        core.mqtt_subject_topic("a.*")


SUBJECT_TEXT = st.text(st.sampled_from("ab./+#*>$ é\x00\x7f-_"), min_size=0, max_size=14)


def _answer(fn, subject):
    try:
        return ("ok", fn(subject))
    except SubjectError as exc:
        return ("error", str(exc))


@FUZZ
@given(SUBJECT_TEXT, st.booleans())
def test_random_subjects_translate_as_fastflow_mqtt_does(subject, as_bytes):
    s = subject.encode() if as_bytes else subject
    want = _answer(subject_to_mqtt_topic, s)
    for core in CORES.values():
        assert _answer(core.mqtt_subject_topic, s) == want


@FUZZ
@given(st.lists(st.text(st.sampled_from("ab/+#é$"), min_size=1, max_size=5), min_size=1,
                max_size=5))
def test_random_valid_subjects_as_topics(tokens):
    subject = ".".join(tokens)
    want = _answer(subject_to_mqtt_topic, subject)
    for core in CORES.values():
        assert _answer(core.mqtt_subject_topic, subject) == want
        m = Mqtt(core, 4, pattern=subject)
        m.router.publish(core.Event(subject, b"x"))
        got = m.packets()
        if want[0] == "ok" and want[1]:
            assert [p["topic"] for p in got] == [want[1]]
        else:
            assert got == [] and m.target.untranslatable == 1


# -- limits ----------------------------------------------------------------------------------------


def test_max_packet(core):
    m = Mqtt(core, 5, "binary", max_packet=200)
    small = core.Event(SUBJ, b"x" * 10)
    m.router.publish(small)
    (p,) = m.packets()
    size = p["size"]
    m.target.max_packet = size
    m.router.publish(small)                 # exactly the limit: sent
    m.router.publish(core.Event(SUBJ, b"x" * 11, id=small.id))     # one byte over: not
    assert len(m.packets()) == 1
    assert (m.target.too_large, m.target.delivered, m.target.dropped) == (1, 3, 0)
    assert m.out.dropped == 0


def test_outbuf_limit(core):
    m = Mqtt(core, 4)
    m.out.max_pending = 100
    for _ in range(3):
        m.router.publish(core.Event("a", b"x" * 40))
    assert len(m.out) == 2 * 45
    assert m.out.overflow
    assert (m.target.delivered, m.target.dropped, m.out.dropped, m.target.too_large) == (
        2, 1, 1, 0)
    assert len(m.packets()) == 2


def test_closed_outbuf_drops(core):
    m = Mqtt(core, 5, "structured")
    m.out.closed = True
    m.router.publish(core.Event("a", b"x"))
    assert (m.target.dropped, m.out.dropped, len(m.out)) == (1, 1, 0)


# -- stored records, a Flow ---------------------------------------------------------------------


def test_write_record_and_batch(core):
    log = core.Log(max_events=100)
    evs = events(core)[:12]
    for ev in evs:
        log.append(SUBJ, ev.encode())
    for mode in ("raw", "binary", "structured"):
        m = Mqtt(core, 5, mode)
        assert m.target.write_record(SUBJ, evs[0].encode(), "S", 1, 5)
        assert m.target.write_batch(log.read(1, 100), "S") == len(evs)
        got = m.packets()
        assert len(got) == 1 + len(evs)
        for ev, p in zip([evs[0]] + evs, got):
            assert p["payload"] == (cloudevents.to_json(ev, False) if mode == "structured"
                                    else ev.data)
            if mode == "binary":
                assert p["props"] == expected_props(ev)


def test_a_flows_publish_reaches_the_target():
    """The active core's Flow: a target added as fastflow.server attaches a
    NATS subscription's (Flow.add) gets the routed events."""
    from fastflow._impl import MqttTarget, OutBuf

    f = fastflow.Flow()
    try:
        f.add_stream("S", "orders.>")
        out = OutBuf(0)
        t = MqttTarget(out, 5, "binary", subscription_identifier=7)
        f.add("orders.*", t)
        out4 = OutBuf(0)
        q1 = MqttTarget(out4, 4)
        q2 = MqttTarget(out4, 4)
        f.add("orders.>", q1, "workers")
        f.add("orders.>", q2, "workers")
        for i in range(4):
            f.publish("orders.eu", b"%d" % i, datacontenttype="text/plain", n=i)
        buf = out.take()
        assert (t.delivered, q1.delivered, q2.delivered) == (4, 2, 2)
        plain = paho_messages(out4.take(), 4)
        assert [(p.topic, p.payload) for p in plain] == [("orders/eu", b"%d" % i)
                                                         for i in range(4)]
        binary = paho_messages(buf, 5)
        assert [p.properties.json()["SubscriptionIdentifier"] for p in binary] == [[7]] * 4
        assert [p.payload for p in binary] == [b"0", b"1", b"2", b"3"]
        for i, p in enumerate(binary):
            props = p.properties.json()
            assert p.topic == "orders/eu"
            assert props["ContentType"] == "text/plain"
            users = dict(props["UserProperty"])
            assert (users["n"], users["source"], users["type"]) == (str(i), f.source, "orders.eu")
    finally:
        f.close()


# -- both cores, the same bytes ---------------------------------------------------------------


@both_cores
@FUZZ
@given(random_event(), st.sampled_from([(4, "raw"), (4, "structured"), (5, "raw"),
                                        (5, "binary"), (5, "structured")]), st.booleans(),
       st.sampled_from([None, 1, 300]))
def test_random_events_both_cores(event, how, lineage, sid):
    attrs, data = event
    version, mode = how
    if version == 4:
        sid = None
    got = {}
    rec = None
    for name, core in CORES.items():
        try:
            ev = core.Event(SUBJ, data, **attrs)
        except EventError:
            assume(False)
        if rec is None:
            rec = ev.encode()           # (one record for both: the same generated id)
        m = Mqtt(core, version, mode, lineage=lineage, subscription_identifier=sid)
        m.router.publish(core.Event.decode(SUBJ, rec))
        m.router.publish_record(SUBJ, rec)
        buf = m.out.take()
        packets = decode_packets(buf, version)
        assert len(packets) == 2 and packets[0] == packets[1]
        if mode == "binary":
            assert len(paho_messages(buf, version)) == 2
        got[name] = buf
    assert got["native"] == got["ref"]


@both_cores
@FUZZ
@given(random_event(), st.binary(max_size=300), st.sampled_from(MODES))
def test_random_mqtt_door_records_both_cores(event, fwd, how):
    """Records of the MQTT door with random attributes and a random
    mqttprops: C finds the extension in the record (or leaves it to
    Python), and both cores write the same bytes: payload and mqttprops."""
    attrs, data = event
    attrs = {k: v for k, v in attrs.items() if not k.startswith("mqtt")}
    version, mode = how
    got = {}
    rec = None
    for name, core in CORES.items():
        try:
            ev = core.Event(SUBJ, data, mqttprops=fwd, **attrs)
        except EventError:
            assume(False)
        if rec is None:
            rec = mqtt_origin(ev.encode())
        m = Mqtt(core, version, mode)
        m.router.publish_record(SUBJ, rec)
        buf = m.out.take()
        props, payload = core.mqtt_parts(core.Event.decode(SUBJ, rec), version, mode)
        assert payload == data and props == (fwd if version == 5 else b"")
        assert buf.endswith(props + payload)
        got[name] = buf
    assert got["native"] == got["ref"]
