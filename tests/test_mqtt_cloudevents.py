"""The MQTT door and CloudEvents (docs/mqtt.md "CloudEvents"), with
paho-mqtt clients and the official CloudEvents SDK (``cloudevents``) as the
reference for the JSON format:

- MQTT to MQTT stays what a broker delivers: the same scenarios against a
  real mosquitto (the control) and against the door, nothing added;
- the other doors' events reach MQTT 5 subscribers in the binding's
  binary mode (attributes as User Properties), 3.1.1 subscribers as the
  data, and a 5.0 subscription may ask for the structured mode;
- an MQTT 5 PUBLISH in binary or structured mode (and a publish on a
  topic the operator marks structured) becomes the event it describes; a
  bad one is refused (0x99) or dropped and counted;
- Subscriptions-API subscriptions with protocol MQTT3 / MQTT5 deliver to
  MQTT topics of this server with the specification's protocolsettings
  (no mosquitto control there: mosquitto has no Subscriptions API).
"""

import asyncio
import json
import queue
import socket
import struct
from types import SimpleNamespace

import httpx
import pytest

from peers import require_peer
from test_mqtt_door import V5, V311, Mqtt, broker, clients  # noqa: F401 (fixtures)

STRUCTURED_CT = "application/cloudevents+json"


def _sdk():
    return pytest.importorskip("cloudevents", reason="the CloudEvents SDK (pip cloudevents)")


def sdk_structured(attributes, data):
    """A structured CloudEvent (JSON bytes) made by the CloudEvents SDK."""
    _sdk()
    from cloudevents.v1.conversion import to_structured
    from cloudevents.v1.http import CloudEvent

    _headers, body = to_structured(CloudEvent(attributes, data))
    return body


def sdk_event(body):
    """The CloudEvents SDK's reading of structured JSON ``body``."""
    _sdk()
    from cloudevents.v1.http import from_json

    return from_json(body)


def sdk_binary(msg):
    """The CloudEvents SDK's event of an MQTT 5 message in binary mode
    (the binding: each User Property an attribute, Content Type the
    datacontenttype): it checks the attributes as the SDK does."""
    _sdk()
    from cloudevents.v1.http import CloudEvent

    props = msg.properties.json()
    attrs = dict(props.get("UserProperty", []))
    if "ContentType" in props:
        attrs["datacontenttype"] = props["ContentType"]
    return CloudEvent(attrs, msg.payload)


def user_props(msg):
    return [tuple(p) for p in msg.properties.json().get("UserProperty", [])]


# -- MQTT to MQTT: what a broker delivers (mosquitto the control) -----------------------------


@pytest.mark.parametrize("sub_qos,pub_qos", [(0, 0), (1, 1), (1, 0), (0, 1)])
def test_mqtt_messages_get_no_added_properties(broker, clients, sub_qos, pub_qos):  # noqa: F811 (the fixtures)
    s = clients(broker, V5)
    s.sub("plain/#", sub_qos)
    p = clients(broker, V5)
    p.pub("plain/a", b"x", pub_qos)
    p.pub("plain/b", b"y", pub_qos, props={"UserProperty": [("k", "v")]})
    m1, m2 = s.get(), s.get()
    assert (m1.payload, m2.payload) == (b"x", b"y")
    assert m1.properties.json() == {}                   # no CloudEvents attribute added
    assert user_props(m2) == [("k", "v")] and list(m2.properties.json()) == ["UserProperty"]


def test_a_binary_cloudevent_goes_through_as_sent(broker, clients):  # noqa: F811 (the fixtures)
    s5 = clients(broker, V5)
    s5.sub("ce/#", 1)
    s3 = clients(broker, V311)
    s3.sub("ce/#", 1)
    p = clients(broker, V5)
    ce = [("specversion", "1.0"), ("id", "e-1"), ("source", "/dev/7"), ("type", "t.read"),
          ("time", "2026-12-04T08:00:00Z"), ("region", "eu"), ("Not-An-Attribute", "kept")]
    p.pub("ce/t", b'{"v":1}', 1, props={"UserProperty": ce, "ContentType": "application/json"})
    m = s5.get()
    assert m.payload == b'{"v":1}' and user_props(m) == ce
    assert m.properties.json()["ContentType"] == "application/json"
    ev = sdk_binary(m)
    assert (ev["id"], ev["source"], ev["type"], ev["region"]) == ("e-1", "/dev/7", "t.read", "eu")
    assert s3.get().payload == b'{"v":1}'


def test_a_structured_cloudevent(broker, clients):  # noqa: F811 (the fixtures)
    """mosquitto passes the payload on as it is; fastflow decodes it (the
    other doors see the event) and its MQTT subscribers get the event's
    JSON again: the same CloudEvent by the SDK, not the same bytes (a
    deliberate difference, docs/mqtt.md)."""
    s = clients(broker, V5)
    s.sub("se/#", 1)
    body = sdk_structured({"type": "t.s", "source": "/dev/9", "id": "s-1", "subject": "x",
                           "datacontenttype": "application/json", "tenant": "a"}, {"n": 1})
    p = clients(broker, V5)
    p.pub("se/1", body, 1, props={"ContentType": STRUCTURED_CT})
    m = s.get()
    assert m.properties.json()["ContentType"] == STRUCTURED_CT
    if broker.name == "mosquitto":
        assert m.payload == body
    got, sent = sdk_event(m.payload), sdk_event(body)
    assert got.get_attributes() == sent.get_attributes() and got.data == sent.data


# -- the door: a server in this process --------------------------------------------------------


def _serve(ffserver, free_port, **kw):
    kw.setdefault("streams", [{"name": "ce", "subjects": ["ce.>", "dev.>"]},
                              {"name": "orders", "subjects": ["orders.>"]}])
    return ffserver(http_port=free_port(), mqtt_port=free_port(), nats_port=free_port(), **kw)


def _mqtt(srv, version=V5, **kw):
    """A paho client of ``srv``'s MQTT door (blocking: call it in a thread)."""
    return Mqtt(SimpleNamespace(port=srv.config.mqtt_port), version, **kw)


async def _in_thread(fn, *args, **kw):
    return await asyncio.to_thread(fn, *args, **kw)


async def _nats_pub(srv, subject, payload):
    r, w = await asyncio.open_connection("127.0.0.1", srv.config.nats_port)
    await r.readline()                  # INFO
    w.write(b'CONNECT {"verbose":false}\r\nPUB %s %d\r\n%s\r\nPING\r\n' % (
        subject.encode(), len(payload), payload))
    assert await r.readline() == b"PONG\r\n"
    w.close()


def _stream_events(srv, name, subject_filter):
    return srv.flow.stream(name).last(subject_filter)


def _subscribe_with_mode(client, topic, qos, mode):
    """A 5.0 SUBSCRIBE asking for a CloudEvents mode (User Property cloudevents)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = ("cloudevents", mode)
    _, mid = client.c.subscribe(topic, options=SubscribeOptions(qos=qos), properties=props)
    kind, got, codes = client.acks.get(timeout=5)
    assert (kind, got) == ("sub", mid)
    return [c.value for c in codes]


def test_other_doors_reach_mqtt_subscribers_as_cloudevents(aloop, ffserver, free_port):
    require_peer("paho-mqtt")

    async def main():
        async with _serve(ffserver, free_port) as srv:
            b0 = await _in_thread(_mqtt, srv)
            assert await _in_thread(b0.sub, "orders/#", 0) == [0]
            b1 = await _in_thread(_mqtt, srv)
            assert await _in_thread(b1.sub, "orders/#", 1) == [1]
            v3 = await _in_thread(_mqtt, srv, V311)
            await _in_thread(v3.sub, "orders/#", 1)
            st = await _in_thread(_mqtt, srv)
            assert await _in_thread(_subscribe_with_mode, st, "orders/#", 1, "structured") == [1]
            bad = await _in_thread(_mqtt, srv)
            assert await _in_thread(_subscribe_with_mode, bad, "orders/#", 1, "xml") == [0x83]
            # a NATS PUB (an event with the defaults) and an HTTP binary-mode POST
            await _nats_pub(srv, "orders.eu", b"n1")
            async with httpx.AsyncClient(base_url="http://127.0.0.1:{}".format(
                    srv.http_port)) as c:
                r = await c.post("/events/orders.us", content=b"h1", headers={
                    "ce-specversion": "1.0", "ce-id": "h-1", "ce-source": "/shop",
                    "ce-type": "com.acme.order", "ce-region": "us",
                    "content-type": "text/plain"})
                assert r.status_code == 202, r.text
            for sub in (b0, b1):
                n, h = await _in_thread(sub.get), await _in_thread(sub.get)
                assert (n.topic, n.payload, n.qos, h.topic, h.payload, h.qos) == (
                    "orders/eu", b"n1", 0, "orders/us", b"h1", 0)   # other doors: QoS 0
                assert [k for k, _ in user_props(n)] == ["specversion", "id", "source", "type"]
                ev = sdk_binary(n)
                assert (ev["type"], ev["source"]) == ("orders.eu", srv.flow.source)
                assert user_props(h) == [("specversion", "1.0"), ("id", "h-1"),
                                         ("source", "/shop"), ("type", "com.acme.order"),
                                         ("region", "us")]
                assert h.properties.json()["ContentType"] == "text/plain"
                assert sdk_binary(h)["region"] == "us"
            assert [(await _in_thread(v3.get)).payload for _ in range(2)] == [b"n1", b"h1"]
            s1, s2 = await _in_thread(st.get), await _in_thread(st.get)
            assert s2.properties.json()["ContentType"] == STRUCTURED_CT
            ev = sdk_event(s2.payload)
            assert (ev["id"], ev["region"], ev.data) == ("h-1", "us", "h1")
            assert sdk_event(s1.payload).data == b"n1"      # (no datacontenttype: data_base64)
            await _in_thread(bad.none)
            for c in (b0, b1, v3, st, bad):
                await _in_thread(c.close)
    aloop(main)


def _publish_acks(client):
    """The reason codes of the client's QoS 1/2 publishes, by packet id."""
    acks = queue.Queue()
    client.c.on_publish = lambda c, u, mid, reason, props: acks.put((mid, reason.value))
    return acks


def _raw_qos2_publish(srv, topic, user_props):
    """An MQTT 5 QoS 2 PUBLISH with ``user_props`` on a socket: the
    PUBREC's reason code."""
    def s(x):
        b = x.encode()
        return struct.pack(">H", len(b)) + b

    def packet(head, body):
        assert len(body) < 128
        return bytes([head, len(body)]) + body

    def read(sock):
        head = sock.recv(2)
        body = b""
        while len(body) < head[1]:
            body += sock.recv(head[1] - len(body))
        return head[0], body

    with socket.create_connection(("127.0.0.1", srv.config.mqtt_port), timeout=5) as sock:
        sock.sendall(packet(0x10, s("MQTT") + b"\x05\x02\x00\x3c\x00" + s("raw-q2")))
        assert read(sock)[0] == 0x20
        props = b"".join(b"\x26" + s(k) + s(v) for k, v in user_props)
        sock.sendall(packet(0x34, s(topic) + b"\x00\x07" + bytes([len(props)]) + props + b"x"))
        kind, body = read(sock)
        assert kind == 0x50 and body[:2] == b"\x00\x07"
        return body[2]


def test_mqtt5_cloudevents_become_events_bad_ones_are_refused(aloop, ffserver, free_port):
    require_peer("paho-mqtt")

    async def main():
        async with _serve(ffserver, free_port) as srv:
            watcher = await _in_thread(_mqtt, srv)
            await _in_thread(watcher.sub, "ce/#", 1)
            p = await _in_thread(_mqtt, srv)
            acks = _publish_acks(p)
            ce = [("specversion", "1.0"), ("id", "b-1"), ("source", "/dev/1"),
                  ("type", "t.bin"), ("subject", "s1"), ("time", "2026-12-04T08:00:00Z"),
                  ("region", "eu"), ("X-Not-Attr", "stays MQTT")]
            await _in_thread(p.pub, "ce/bin", b"21.5", 1, props={
                "UserProperty": ce, "ContentType": "text/plain"})
            body = sdk_structured({"type": "t.st", "source": "/dev/2", "id": "s-1",
                                   "datacontenttype": "application/json", "tenant": "t9"},
                                  {"n": 2})
            await _in_thread(p.pub, "ce/st", body, 2, props={
                "ContentType": STRUCTURED_CT + "; charset=utf-8"})
            # bad ones: no id (QoS 1 and 2: 0x99), specversion 0.3, broken JSON (QoS 0)
            info = await _in_thread(p.pub, "ce/bad", b"x", 1, wait=False, props={
                "UserProperty": [("specversion", "1.0"), ("source", "/d"), ("type", "t")]})
            # (paho ignores a PUBREC's reason code: QoS 2 is read on a socket)
            assert await _in_thread(_raw_qos2_publish, srv, "ce/bad", [
                ("specversion", "0.3"), ("id", "i"), ("source", "/d"), ("type", "t")]) == 0x99
            await _in_thread(p.pub, "ce/bad", b"{not json", 0, props={
                "ContentType": STRUCTURED_CT})
            await _in_thread(p.pub, "ce/after", b"ok", 0)
            got = {}
            for _ in range(5):          # (paho reports its QoS 0 publishes too)
                mid, reason = await _in_thread(acks.get, True, 5)
                got[mid] = reason
            assert got.pop(info.mid) == 0x99
            assert list(got.values()) == [0, 0, 0, 0]
            topics = [(await _in_thread(watcher.get)).topic for _ in range(3)]
            assert topics == ["ce/bin", "ce/st", "ce/after"]        # the bad ones: nowhere
            await _in_thread(watcher.none)
            assert srv.mqtt_sessions.ce_refused == 3
            evs = _stream_events(srv, "ce", "ce.>")
            b = evs["ce.bin"]
            assert (b.id, b.source, b.type, b.subject, b.time, b.datacontenttype, b.data) == (
                "b-1", "/dev/1", "t.bin", "s1", "2026-12-04T08:00:00Z", "text/plain", b"21.5")
            assert b.extensions["region"] == "eu" and "X-Not-Attr" not in b.extensions
            s = evs["ce.st"]
            assert (s.id, s.source, s.type, s.extensions["tenant"]) == ("s-1", "/dev/2", "t.st",
                                                                         "t9")
            assert json.loads(s.data) == {"n": 2} and s.datacontenttype == "application/json"
            assert "ce.bad" not in evs and evs["ce.after"].data == b"ok"
            for c in (watcher, p):
                await _in_thread(c.close)
    aloop(main)


def test_topics_marked_structured(aloop, ffserver, free_port):
    """``[mqtt] structured``: publishes on these topics are structured
    CloudEvents, 3.1.1 ones too (which have no Content Type)."""
    require_peer("paho-mqtt")

    async def main():
        async with _serve(ffserver, free_port, mqtt_structured=["dev/+/ce"]) as srv:
            p = await _in_thread(_mqtt, srv, V311)
            body = sdk_structured({"type": "t.v3", "source": "/dev/3", "id": "v3-1"}, {"k": 3})
            await _in_thread(p.pub, "dev/3/ce", body, 1)
            await _in_thread(p.pub, "dev/4/ce", b"not a cloudevent", 1)   # acked, dropped
            await _in_thread(p.pub, "dev/3/raw", b"plain", 1)
            await _in_thread(p.close)
            evs = _stream_events(srv, "ce", "dev.>")
            e = evs["dev.3.ce"]
            assert (e.id, e.type, json.loads(e.data)) == ("v3-1", "t.v3", {"k": 3})
            assert "dev.4.ce" not in evs and evs["dev.3.raw"].data == b"plain"
            assert srv.mqtt_sessions.ce_refused == 1
    aloop(main)


# -- Subscriptions-API subscriptions to MQTT topics ----------------------------------------------


async def _post_events(c, n, subject="orders.eu", **attrs):
    evs = []
    for i in range(n):
        a = {"specversion": "1.0", "id": "o-{}".format(i), "source": "/eu/shop",
             "type": "com.acme.order", "amount": i, "data": {"n": i}}
        a.update(attrs)
        evs.append(a)
    r = await c.post("/events/" + subject, content=json.dumps(evs),
                     headers={"content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 202, r.text


def test_mqtt5_subscription_delivers_to_a_topic(aloop, ffserver, free_port):
    require_peer("paho-mqtt")

    async def main():
        async with _serve(ffserver, free_port) as srv, httpx.AsyncClient(
                base_url="http://127.0.0.1:{}".format(srv.http_port)) as c:
            s = await _in_thread(_mqtt, srv)
            await _in_thread(s.sub, "out/orders", 2)
            r = await c.post("/subscriptions", json={
                "protocol": "MQTT5", "sink": "fastflow:",
                "config": {"stream": "orders"},
                "filters": [{"sql": "amount >= 1"}],
                "protocolsettings": {"topicname": "out/orders", "qos": 1, "expiry": 60,
                                     "userproperties": {"tenant": "eu", "z": "1"}}})
            assert r.status_code == 201, r.text
            assert r.json()["protocolsettings"]["topicname"] == "out/orders"
            await _post_events(c, 3)
            got = [await _in_thread(s.get) for _ in range(2)]
            await _in_thread(s.none)
            for i, m in enumerate(got, 1):
                assert (m.topic, m.qos, m.retain) == ("out/orders", 1, False)
                assert json.loads(m.payload) == {"n": i}
                pr = m.properties.json()
                assert pr["ContentType"] == "application/json"
                assert 0 < pr["MessageExpiryInterval"] <= 60
                assert user_props(m)[-2:] == [("tenant", "eu"), ("z", "1")]
                ev = sdk_binary(m)
                assert (ev["id"], ev["type"], ev["amount"]) == ("o-{}".format(i),
                                                                 "com.acme.order", str(i))
            # the other doors see the event itself on the topic's subject
            st = (await c.get("/subscriptions/{}/status".format(r.json()["id"]))).json()
            assert st["delivered"] == 2
            await _in_thread(s.close)
    aloop(main)


def test_mqtt3_subscription_structured_and_retained(aloop, ffserver, free_port):
    require_peer("paho-mqtt")

    async def main():
        async with _serve(ffserver, free_port) as srv, httpx.AsyncClient(
                base_url="http://127.0.0.1:{}".format(srv.http_port)) as c:
            live = await _in_thread(_mqtt, srv, V311)
            await _in_thread(live.sub, "out/last", 0)
            r = await c.post("/subscriptions", json={
                "protocol": "MQTT3", "sink": "fastflow:", "config": {"stream": "orders"},
                "protocolsettings": {"topicname": "out/last", "qos": 0, "retain": True}})
            assert r.status_code == 201, r.text
            await _post_events(c, 2)
            got = [await _in_thread(live.get) for _ in range(2)]
            assert [sdk_event(m.payload)["id"] for m in got] == ["o-0", "o-1"]
            assert [sdk_event(m.payload).data for m in got] == [{"n": 0}, {"n": 1}]
            assert {m.retain for m in got} == {False}           # (a live delivery)
            late = await _in_thread(_mqtt, srv, V5)
            await _in_thread(late.sub, "out/last", 1)
            m = await _in_thread(late.get)
            assert m.retain and sdk_event(m.payload)["id"] == "o-1"
            assert m.properties.json()["ContentType"] == STRUCTURED_CT
            for cl in (live, late):
                await _in_thread(cl.close)
    aloop(main)


BAD = [
    ({}, "protocolsettings.topicname", "required"),
    ({"topicname": "a/+"}, "protocolsettings.topicname", ""),
    ({"topicname": "a", "qos": 3}, "protocolsettings.qos", "0, 1 or 2"),
    ({"topicname": "a", "qos": True}, "protocolsettings.qos", "0, 1 or 2"),
    ({"topicname": "a", "retain": "yes"}, "protocolsettings.retain", "true or false"),
    ({"topicname": "a", "expiry": -1}, "protocolsettings.expiry", "0..4294967295"),
    ({"topicname": "a", "userproperties": ["a"]}, "protocolsettings.userproperties",
     "an object"),
    ({"topicname": "a", "userproperties": {"k": 1}}, "protocolsettings.userproperties.k",
     "a string"),
    ({"topicname": "a", "method": "POST"}, "protocolsettings.method", "unknown MQTT setting"),
]


@pytest.mark.parametrize("settings,field,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_mqtt_subscription_settings_are_checked(settings, field, words):
    from fastflow.subscriptions import FilterError, parse

    body = {"protocol": "MQTT5", "sink": "fastflow:", "protocolsettings": settings}
    with pytest.raises(FilterError) as ei:
        parse(body, {"s": ("a.>",)})
    assert ei.value.field == field and words in ei.value.reason


def test_mqtt_subscription_refusals_over_http(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv, httpx.AsyncClient(
                base_url="http://127.0.0.1:{}".format(srv.http_port)) as c:
            for body, field, words in [
                ({"protocol": "MQTT3", "sink": "fastflow:", "config": {"stream": "orders"},
                  "protocolsettings": {"topicname": "a", "expiry": 5}},
                 "protocolsettings.expiry", "MQTT 5.0 only"),
                ({"protocol": "MQTT3", "sink": "fastflow:", "config": {"stream": "orders"},
                  "protocolsettings": {"topicname": "a", "userproperties": {"a": "b"}}},
                 "protocolsettings.userproperties", "MQTT 5.0 only"),
                ({"protocol": "MQTT5", "sink": "mqtt://broker:1883",
                  "config": {"stream": "orders"}, "protocolsettings": {"topicname": "a"}},
                 "sink", "'fastflow:'"),
                ({"protocol": "MQTT5", "sink": "fastflow:", "config": {"stream": "orders"},
                  "protocolsettings": {"topicname": "orders/eu"}},
                 "protocolsettings.topicname", "captured by stream"),
            ]:
                r = await c.post("/subscriptions", json=body)
                assert r.status_code == 400, body
                err = r.json()["error"]
                assert err["field"] == field and words in err["message"], err
    aloop(main)



def test_mqtt_subscription_needs_the_right_to_publish_there(aloop, ffserver, free_port):
    from fastflow.server import hash_password

    users = [{"user": "alice", "password": hash_password("pw-a"),
              "permissions": {"subscribe": ["orders.>"], "publish": ["out.alice.>"]}}]

    async def main():
        async with _serve(ffserver, free_port, users=users) as srv, httpx.AsyncClient(
                base_url="http://127.0.0.1:{}".format(srv.http_port),
                auth=("alice", "pw-a")) as c:
            body = {"protocol": "MQTT5", "sink": "fastflow:", "config": {"stream": "orders"},
                    "protocolsettings": {"topicname": "out/bob"}}
            r = await c.post("/subscriptions", json=body)
            assert r.status_code == 403 and "publish to MQTT topic 'out/bob'" in r.text
            body["protocolsettings"]["topicname"] = "out/alice/x"
            r = await c.post("/subscriptions", json=body)
            assert r.status_code == 201, r.text
    aloop(main)
