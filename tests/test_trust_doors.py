"""Signed events (docs/provenance.md) through every door of one real server
(``fastflow serve`` with a ``[trust]`` policy, every door on):

- a signed event published through each inbound door (native, NATS HPUB in
  the binary binding, HTTP binary and structured POST, the WebSocket door,
  MQTT 5 binary and structured, MQTT 3.1.1 structured on a topic of
  ``[mqtt] structured``) reaches each outbound door (native, NATS HMSG,
  SSE, WebSocket, MQTT 5 binary and structured, webhooks of the
  Subscriptions API in binary and structured mode) as an event that still
  verifies at the receiver, with the data as signed.  MQTT 3.1.1
  subscribers get the data only (the binding: no properties), so they
  cannot verify; that is asserted as such;
- the policy at every inbound door: unsigned, signed by a key the rule does
  not accept, and tampered events are refused in the door's own words with
  the reason named, nobody receives them, and the connection keeps
  working; a ``require = false`` subject lets unsigned events through but
  not bad signatures; /varz, /metrics and the ``$SYS.advisory.trust_refused``
  advisory count and tell them;
- the doors' fast paths (a NATS PUB, an MQTT publish without properties, a
  native publish of bare data) are unsigned and refused.

One server process for the whole module: the ``ffproc`` fixture is per
test, so the fixture here makes the same ``ServerProcess`` once per module;
each test runs under both event loops (``aloop``) and compares counters
before and after itself.
"""

import asyncio
import base64
import json
import queue
import re
import urllib.request
from types import SimpleNamespace

import httpx
import pytest

from fastflow.errors import PermissionDeniedError
from fastflow.event import Event, from_http, from_json, to_http, to_json
from fastflow.trust import KeySet, SigningKey, sign, verify
from peers import ServerProcess, free_port, require_peer
from test_nats import flush as nats_flush

nats = pytest.importorskip("nats")
websockets = pytest.importorskip("websockets")

DATA = b'{"n": 1, "s": "x"}'                # (spacing kept: the signature covers these bytes)
DATA_LINES = b'{\n  "n": 1,\n  "s": "x"\n}'          # (line breaks: SSE splits them)
DATA_AROUND = b' {"n": 1, "s": "x"}\n'    # (whitespace around: the JSON writers send a signed
                                          # event's such data as data_base64, bytes kept)
TAMPERED = b'{"n": 2, "s": "x"}'
STRUCTURED = "application/cloudevents+json"
SIGNED = ["region", "seq", "urgent", "blob"]      # the signed extensions
REASON = {"unsigned": "unsigned", "bob": "unknown key", "tampered": "digest mismatch"}

CONFIG = """
[trust]
keys = {{ alice = "{alice}", bob = "{bob}" }}

[[trust.rules]]
subjects = ["signed.>"]
keys = ["alice"]
require = true

[[trust.rules]]
subjects = ["opt.>"]
require = false

[[streams]]                 # (read by the Subscriptions API's webhooks)
name = "signed"
subjects = ["signed.m.>", "signed.ml.>", "signed.mw.>"]
duplicate_window = 0        # (each loop's run publishes the same ids again)

[mqtt]
# (3.1.1 has no properties: its CloudEvents are structured, on topics marked so)
structured = ["signed/+/mqttstructured3q1", "opt/mqttstructured3q1"]
"""


# -- the server and the keys --------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = SimpleNamespace(alice=SigningKey.generate("ed25519", keyid="alice"),
                          bob=SigningKey.generate("ed25519", keyid="bob"), dir=d)
    out.alice.save(str(d / "alice.key"))
    out.bob.save(str(d / "bob.key"))
    out.trusted = KeySet([out.alice.public])
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory, keys):
    """``fastflow serve`` with the policy above and the native, NATS, HTTP
    (SSE, WebSocket) and MQTT doors and monitoring on."""
    require_peer("paho-mqtt")
    tmp = tmp_path_factory.mktemp("server")
    conf = tmp / "ff.toml"
    conf.write_text(CONFIG.format(alice=keys.dir / "alice.key.pub",
                                  bob=keys.dir / "bob.key.pub"))
    port, mport, http, mqtt, nport = (free_port() for _ in range(5))
    args = ["--host", "127.0.0.1", "--port", port, "--monitor-port", mport, "-c", conf,
            "--http-port", http, "--mqtt-port", mqtt, "--nats-port", nport]
    sp = ServerProcess([str(a) for a in args], str(tmp / "server.log"), port, mport)
    sp.http_port, sp.mqtt_port, sp.nats_port = http, mqtt, nport
    sp.base = "http://127.0.0.1:{}".format(http)
    sp.start()
    yield sp
    sp.kill()


def make_event(keys, kind, subject, ident, data=DATA, type_="com.example.signed"):
    """An event as a producer makes it: JSON data, a time with an offset and
    a fraction, a subject, signed extensions of each type (a string, an
    integer, a boolean, binary: the binary modes carry them as strings) and
    an unsigned one; by ``kind``: ``good`` (signed by alice), ``unsigned``,
    ``bob`` (signed by a key the rule does not accept), ``tampered``
    (alice's signature, other data)."""
    ev = Event(subject, data, id=ident, source="/trust/test", type=type_,
               datacontenttype="application/json", time="2026-12-04T21:00:00.25+02:00",
               subject="order-7", region="eu", seq=7, urgent=True, blob=b"\x00\xff",
               note="not signed")
    if kind == "unsigned":
        return ev
    signed = sign(ev, keys.bob if kind == "bob" else keys.alice, SIGNED)
    if kind == "tampered":
        attrs = signed.attributes()
        attrs.pop("specversion")
        return Event(subject, TAMPERED, **attrs)
    assert kind in ("good", "bob"), kind
    return signed


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def get_text(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def refused_metrics(text):
    """``{reason: n}`` of fastflow_trust_refused_total for account $G."""
    out = {}
    for m in re.finditer(r'^fastflow_trust_refused_total\{([^}]*)\} (\d+)', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("account") == "$G":
            out[labels["reason"]] = int(m.group(2))
    return out


# -- MQTT: paho-mqtt in its own thread ------------------------------------------------------


class Paho:
    """A paho-mqtt client (5.0 or 3.1.1) recording its messages and the
    reason codes (and properties) of its PUBACKs."""

    def __init__(self, port, version=5):
        import threading

        import paho.mqtt.client as mqtt

        self.version = version
        self.msgs = queue.Queue()
        self.acks = {}
        self.acked = threading.Condition()
        self.subacks = queue.Queue()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             protocol=mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311)
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_connect = lambda c, u, f, rc, p: self.ready.set()
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.subacks.put(codes)
        self.c.on_publish = self._on_publish
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5), "no CONNACK"

    def _on_publish(self, c, u, mid, reason, props):
        with self.acked:
            self.acks[mid] = (reason.value, props)
            self.acked.notify_all()

    def sub(self, topic, cloudevents=None):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        from paho.mqtt.subscribeoptions import SubscribeOptions

        if self.version == 5:
            props = None
            if cloudevents:
                props = Properties(PacketTypes.SUBSCRIBE)
                props.UserProperty = [("cloudevents", cloudevents)]
            self.c.subscribe(topic, options=SubscribeOptions(qos=0), properties=props)
        else:
            self.c.subscribe(topic, 0)
        codes = self.subacks.get(timeout=5)
        assert [c.value for c in codes] == [0], codes

    def pub(self, topic, payload, qos=1, props=None):
        """Publish; the PUBACK's ``(reason code, reason string)`` (QoS 0: None)."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        p = None
        if props:
            p = Properties(PacketTypes.PUBLISH)
            for k, v in props.items():
                setattr(p, k, v)
        info = self.c.publish(topic, payload, qos, properties=p)
        info.wait_for_publish(5)
        if not qos:
            return None
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.acks, 5), "no PUBACK"
            reason, props = self.acks.pop(info.mid)
        text = getattr(props, "ReasonString", None) if props is not None else None
        return reason, text

    def drain(self, quiet=0.3):
        out = []
        while True:
            try:
                out.append(self.msgs.get(timeout=quiet))
            except queue.Empty:
                return out

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def canonical(v):
    """An attribute value as its CloudEvents canonical string."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    return str(v)


def mqtt_binary(ev):
    """``(payload, properties)`` of ``ev`` in the MQTT binding's binary
    mode: each attribute a User Property by its name (values as canonical
    strings), datacontenttype the Content Type."""
    attrs = ev.attributes()
    props = {"UserProperty": [(k, canonical(v)) for k, v in attrs.items()
                              if k != "datacontenttype"]}
    if "datacontenttype" in attrs:
        props["ContentType"] = attrs["datacontenttype"]
    return ev.data, props


def from_mqtt(msg, subject):
    """The Event of a received MQTT 5 message: structured when its Content
    Type says so, else binary (User Properties -> attributes, Content
    Type -> datacontenttype)."""
    props = msg.properties.json() if msg.properties is not None else {}
    ct = props.get("ContentType")
    if ct and ct.split(";")[0].strip() == STRUCTURED:
        return from_json(msg.payload, subject)
    attrs = {k: v for k, v in props.get("UserProperty", []) if k != "specversion"}
    if not attrs:                   # (a 3.1.1 publisher's structured event, as it was sent)
        return from_json(msg.payload, subject)
    if ct:
        attrs["datacontenttype"] = ct
    return Event(subject, msg.payload, **attrs)


# -- the inbound doors: publish one event, return the door's refusal (or None) -------------


class NativeIn:
    name = "native"
    quiet = False

    async def open(self, srv):
        import fastflow.client as fc

        self.errors = []
        self.c = await fc.connect(srv.url, error_callback=self.errors.append)

    async def pub(self, ev):
        self.c.publish_event(ev)
        await self.c.flush()
        for _ in range(20):             # (the ERR comes before the flush's PONG; to be sure)
            if self.errors:
                break
            await asyncio.sleep(0.01)
        if not self.errors:
            return None
        exc = self.errors.pop()
        assert isinstance(exc, PermissionDeniedError) and exc.code == 403, exc
        return str(exc)

    async def close(self):
        await self.c.close()


class NatsIn:
    name = "nats"
    quiet = False

    async def open(self, srv):
        self.errors = []

        async def on_error(e):
            self.errors.append(e)

        self.nc = await nats.connect("nats://127.0.0.1:{}".format(srv.nats_port),
                                     error_cb=on_error, allow_reconnect=False,
                                     connect_timeout=3)

    async def pub(self, ev):
        headers, body = to_http(ev)     # (the NATS binding's binary mode: ce- headers)
        await self.nc.publish(ev.routing_subject, body, headers=dict(headers))
        await nats_flush(self.nc)
        if not self.errors:
            return None
        assert self.nc.is_connected     # (the connection stays)
        return str(self.errors.pop())

    async def close(self):
        await self.nc.close()


class HttpIn:
    quiet = False

    def __init__(self, mode):
        self.mode = mode
        self.name = "http" + mode

    async def open(self, srv):
        self.hc = httpx.AsyncClient(base_url=srv.base, timeout=5)

    async def pub(self, ev):
        if self.mode == "binary":
            headers, body = to_http(ev)
        else:
            headers, body = {"content-type": STRUCTURED}, to_json(ev)
        r = await self.hc.post("/events/" + ev.routing_subject, content=body,
                               headers=list(dict(headers).items()))
        if r.status_code == 202:
            return None
        assert r.status_code == 403, (r.status_code, r.text)
        return r.json()["error"]["message"]

    async def close(self):
        await self.hc.aclose()


class WsIn:
    name = "ws"
    quiet = False

    async def open(self, srv):
        self.ws = await websockets.connect("ws://127.0.0.1:{}/ws".format(srv.http_port),
                                           max_queue=None, close_timeout=2)

    async def pub(self, ev):
        # (without ``publish=`` on the socket a JSON event is routed on its
        # type: door_event makes the type the subject for this door)
        await self.ws.send(to_json(ev).decode())
        await self.ws.send(json.dumps({"op": "ping"}))
        answers = []
        while True:
            m = json.loads(await asyncio.wait_for(self.ws.recv(), 5))
            if m.get("op") == "pong":
                break
            answers.append(m)
        if not answers:
            return None
        (m,) = answers
        assert (m["op"], m["re"], m["code"], m["id"]) == ("error", "publish", 403, ev.id), m
        return m["message"]

    async def close(self):
        await self.ws.close()


class MqttIn:
    quiet = False

    def __init__(self, mode, version=5, qos=1):
        self.mode, self.version, self.qos = mode, version, qos
        self.name = "mqtt{}{}q{}".format(mode, version, qos)
        # 3.1.1 has no refusal and QoS 0 no answer: nothing to read
        self.quiet = version != 5 or qos == 0

    async def open(self, srv):
        self.c = await asyncio.to_thread(Paho, srv.mqtt_port, self.version)

    async def pub(self, ev):
        topic = ev.routing_subject.replace(".", "/")
        if self.mode == "binary":
            payload, props = mqtt_binary(ev)
        else:
            payload, props = to_json(ev), {"ContentType": STRUCTURED}
        if self.version != 5:
            props = None
        ack = await asyncio.to_thread(self.c.pub, topic, payload, self.qos, props)
        if self.quiet:
            assert ack is None or ack[0] == 0, ack      # (acknowledged, maybe dropped)
            return None
        reason, text = ack
        if reason == 0:
            return None
        assert reason == 0x87, ack
        return text

    async def close(self):
        await asyncio.to_thread(self.c.close)


def inbound_doors():
    return [NativeIn(), NatsIn(), HttpIn("binary"), HttpIn("structured"), WsIn(),
            MqttIn("binary"), MqttIn("structured"), MqttIn("structured", 3)]


def door_event(keys, door, kind, subject, ident, data=DATA):
    """``make_event`` for ``door``: the WebSocket door routes a JSON event on
    its type, so there the type is the subject (and signed as such)."""
    return make_event(keys, kind, subject, ident, data,
                      subject if door.name == "ws" else "com.example.signed")


# -- the outbound doors: subscribe to a pattern, collect what comes as Events ----------------


class Receivers:
    """A subscriber on ``pattern`` at every outbound door; ``collect()``
    returns ``{door: [Event, ...]}`` once nothing more comes."""

    def __init__(self, srv, pattern):
        self.srv, self.pattern = srv, pattern
        self.got = {d: [] for d in ("native", "nats", "sse", "ws", "mqtt5", "mqtt5json")}
        self.mqtt311 = []

    async def __aenter__(self):
        import fastflow.client as fc

        srv, pattern = self.srv, self.pattern
        self.native = await fc.connect(srv.url)
        self.native.subscribe(pattern, self.got["native"].append)
        await self.native.flush()
        self.nc = await nats.connect("nats://127.0.0.1:{}".format(srv.nats_port),
                                     allow_reconnect=False)

        async def on_nats(msg):
            self.got["nats"].append(from_http(list((msg.headers or {}).items()), msg.data,
                                              routing_subject=msg.subject))

        await self.nc.subscribe(pattern, cb=on_nats)
        await nats_flush(self.nc)
        quoted = pattern.replace(">", "%3E").replace("*", "%2A")
        self.sse_r, self.sse_w = await asyncio.open_connection("127.0.0.1", srv.http_port)
        self.sse_w.write("GET /events/{} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream"
                         "\r\n\r\n".format(quoted).encode())
        head = await asyncio.wait_for(self.sse_r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        self.sse_task = asyncio.ensure_future(self._read_sse())
        self.ws = await websockets.connect(
            "ws://127.0.0.1:{}/ws?subject={}".format(srv.http_port, quoted),
            max_queue=None, close_timeout=2)
        self.ws_task = asyncio.ensure_future(self._read_ws())
        topic = pattern.replace(".", "/").replace(">", "#").replace("*", "+")
        self.m5 = await asyncio.to_thread(Paho, srv.mqtt_port, 5)
        await asyncio.to_thread(self.m5.sub, topic)
        self.m5j = await asyncio.to_thread(Paho, srv.mqtt_port, 5)
        await asyncio.to_thread(self.m5j.sub, topic, "structured")
        self.m3 = await asyncio.to_thread(Paho, srv.mqtt_port, 3)
        await asyncio.to_thread(self.m3.sub, topic)
        return self

    async def _read_sse(self):
        buf = b""
        while True:
            chunk = await self.sse_r.read(65536)
            if not chunk:
                return
            buf += chunk
            while b"\n\n" in buf:
                msg, buf = buf.split(b"\n\n", 1)
                # (the WHATWG rules: "data:" and at most one space, lines joined by LF)
                lines = [ln[6:] if ln.startswith(b"data: ") else ln[5:]
                         for ln in msg.split(b"\n") if ln.startswith(b"data:")]
                if lines:
                    self.got["sse"].append(from_json(b"\n".join(lines), None))

    async def _read_ws(self):
        async for m in self.ws:
            self.got["ws"].append(from_json(m, None))

    async def collect(self, quiet=0.3):
        await self.native.flush()
        n = -1
        while True:
            total = sum(map(len, self.got.values()))
            if total == n:
                break
            n = total
            await asyncio.sleep(quiet)
        for m in await asyncio.to_thread(self.m5.drain, 0.05):
            self.got["mqtt5"].append(from_mqtt(m, m.topic.replace("/", ".")))
        for m in await asyncio.to_thread(self.m5j.drain, 0.05):
            self.got["mqtt5json"].append(from_mqtt(m, m.topic.replace("/", ".")))
        self.mqtt311 += await asyncio.to_thread(self.m3.drain, 0.05)
        return self.got

    async def __aexit__(self, *exc):
        await self.native.close()
        await self.nc.close()
        self.sse_task.cancel()
        self.sse_w.close()
        self.ws_task.cancel()
        await self.ws.close()
        for c in (self.m5, self.m5j, self.m3):
            await asyncio.to_thread(c.close)


class WebhookSink:
    """A tiny HTTP server on 127.0.0.1 for the Subscriptions API's HTTP
    deliveries: every POST's event (binary or structured) is kept."""

    def __init__(self):
        self.events = []
        self.arrived = asyncio.Event()
        self.handlers = {}              # (task: writer, for close())

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = "http://127.0.0.1:{}/hook".format(self.server.sockets[0].getsockname()[1])

    async def _serve(self, r, w):
        self.handlers[asyncio.current_task()] = w
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method = lines[0].split(" ")[0]
                headers = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:] if ln]
                n = int(dict((k.lower(), v) for k, v in headers).get("content-length", 0))
                body = await r.readexactly(n)
                if method == "POST":
                    self.events.append(from_http(headers, body))
                    self.arrived.set()
                w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    async def wait_for(self, n, timeout=10):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.events) < n and loop.time() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
        return self.events

    async def close(self):
        """Stop listening, close the server's connections and wait for their
        handlers (a handler left running would be cancelled by the loop)."""
        self.server.close()
        for w in self.handlers.values():
            w.close()
        await asyncio.gather(*self.handlers)
        await self.server.wait_closed()


# -- 1. a signed event survives every door in and every door out ---------------------------


def test_a_signed_event_verifies_after_every_door_in_and_out(aloop, server, keys):
    """Each inbound door x each outbound door (and two webhooks of the
    Subscriptions API, binary and structured): the receiver verifies the
    event with alice's public key and gets the data as signed, for JSON
    data on one line, JSON data with line breaks (SSE splits it into
    data: lines; the structured modes splice it as it came) and JSON data
    with whitespace around it (the JSON writers keep it as data_base64)."""
    doors = inbound_doors()
    datas = {"m": DATA, "ml": DATA_LINES, "mw": DATA_AROUND}

    async def main():
        sink = WebhookSink()
        await sink.start()
        hc = httpx.AsyncClient(base_url=server.base, timeout=5)
        hooks = []
        for mode in ("binary", "structured"):
            r = await hc.post("/subscriptions", json={
                "protocol": "HTTP", "sink": sink.url, "config": {"stream": "signed"},
                "protocolsettings": {"mode": mode, "handshake": False}})
            assert r.status_code == 201, r.text
            hooks.append(r.json()["id"])
        async with Receivers(server, "signed.>") as rx:
            for door in doors:
                await door.open(server)
                for tag, data in datas.items():
                    ev = door_event(keys, door, "good", "signed.{}.{}".format(tag, door.name),
                                    "{}-{}".format(tag, door.name), data)
                    assert await door.pub(ev) is None, door.name
                await door.close()
            got = await rx.collect()
        got["webhook"] = await sink.wait_for(2 * len(datas) * len(doors))
        for h in hooks:
            assert (await hc.delete("/subscriptions/" + h)).status_code == 200
        await hc.aclose()
        await sink.close()
        return got, rx.mqtt311

    got, mqtt311 = aloop(main)
    want = sorted("{}-{}".format(tag, d.name) for d in doors for tag in datas)
    failures = []
    for out, events in got.items():
        ids = sorted(e.id for e in events)
        # (two webhook subscriptions: binary and structured)
        assert ids == (sorted(want * 2) if out == "webhook" else want), (out, ids)
        for e in events:
            try:
                v = verify(e, keys.trusted)
            except Exception as exc:
                failures.append("{} -> {}: {}".format(e.id, out, exc))
                continue
            assert v.data == datas[e.id.split("-")[0]] and v.id == e.id, (out, e.id, v)
            assert [canonical(v.get(n)) for n in SIGNED] == ["eu", "7", "true", "AP8="], (
                out, e.id, v)
            assert v.get("note") is None            # (not signed: strict mode leaves it out)
    assert failures == []
    # MQTT 3.1.1 carries the data only (no properties: the binding has no
    # binary mode there), so its subscriber cannot verify: by design it
    # gets the data of the other doors' events, and an MQTT publisher's
    # payload as it was sent (a broker: the structured ones verify)
    by_topic = {m.topic: m.payload for m in mqtt311}
    assert sorted(by_topic) == sorted("signed/{}/{}".format(t, d.name) for t in datas
                                      for d in doors)
    for d in doors:
        for tag, data in datas.items():
            payload = by_topic["signed/{}/{}".format(tag, d.name)]
            if d.name.startswith("mqttstructured"):
                assert verify(from_json(payload, None), keys.trusted).data == data
            else:
                assert payload == data, d.name


# -- 2. the policy at every door ------------------------------------------------------------


def test_the_policy_at_every_door(aloop, server, keys):
    # (and MQTT 5 QoS 0: dropped; QoS 2's PUBREC: in the test below)
    doors = inbound_doors() + [MqttIn("binary", 5, 0)]
    mon = "http://127.0.0.1:{}".format(server.monitor_port)

    async def main():
        import fastflow.client as fc

        varz0 = (await asyncio.to_thread(get_json, mon + "/varz"))["trust_refused"]
        metrics0 = refused_metrics(await asyncio.to_thread(get_text, mon + "/metrics"))
        adv_client = await fc.connect(server.url)
        advisories = []
        adv_client.subscribe("$SYS.advisory.trust_refused", advisories.append)
        await adv_client.flush()
        refusals = []
        refused = 0
        async with Receivers(server, "signed.p.>") as rx, Receivers(server, "opt.>") as opt:
            for door in doors:
                await door.open(server)
                subject = "signed.p." + door.name
                for kind in ("unsigned", "bob", "tampered"):
                    ev = door_event(keys, door, kind, subject, "{}-{}".format(kind, door.name))
                    said = await door.pub(ev)
                    refused += 1
                    refusals.append((door.name, kind, said))
                    # the connection keeps working: a good one right after
                    good = door_event(keys, door, "good", subject, "good-{}-{}".format(kind,
                                                                                 door.name))
                    assert await door.pub(good) is None, (door.name, kind)
                # require = false: unsigned passes, a bad signature does not
                osubject = "opt." + door.name
                ev = door_event(keys, door, "unsigned", osubject, "opt-unsigned-" + door.name)
                assert await door.pub(ev) is None, door.name
                ev = door_event(keys, door, "tampered", osubject, "opt-tampered-" + door.name)
                refusals.append((door.name + " opt", "tampered", await door.pub(ev)))
                refused += 1
                await door.close()
            got = await rx.collect()
            got_opt = await opt.collect()
            m311 = rx.mqtt311
        await adv_client.flush()
        for _ in range(50):
            if len(advisories) >= refused:
                break
            await asyncio.sleep(0.05)
        await adv_client.close()
        varz = (await asyncio.to_thread(get_json, mon + "/varz"))["trust_refused"]
        metrics = refused_metrics(await asyncio.to_thread(get_text, mon + "/metrics"))
        return (refusals, refused, got, got_opt, m311, advisories, varz - varz0,
                {r: metrics[r] - metrics0.get(r, 0) for r in metrics
                 if metrics[r] != metrics0.get(r, 0)})

    refusals, refused, got, got_opt, m311, advisories, varz, metrics = aloop(main)
    quiet = {d.name for d in doors if d.quiet}
    for door, kind, said in refusals:
        name = door.split()[0]
        if name in quiet:
            assert said is None          # (3.1.1: acknowledged and dropped; QoS 0: dropped)
            continue
        reason = REASON[kind]
        assert said is not None, (door, kind)
        assert "signature check failed: " + reason in said, (door, kind, said)
        if name == "nats":
            subj = ("opt." if door.endswith("opt") else "signed.p.") + name
            # (nats-py lowercases the -ERR text: the wire's is in the test below)
            assert said.startswith('nats: permissions violation for publish to "{}": signature '
                                   'check failed: {}'.format(subj, reason)), said
    # nobody got a refused event; every good one came through every door
    want = sorted("good-{}-{}".format(k, d.name) for d in doors
                  for k in ("unsigned", "bob", "tampered"))
    for out, events in got.items():
        assert sorted(e.id for e in events) == want, out
        for e in events:
            verify(e, keys.trusted)
    want_opt = sorted("opt-unsigned-" + d.name for d in doors)
    for out, events in got_opt.items():
        assert sorted(e.id for e in events) == want_opt, out
    assert len(m311) == len(want)
    # counted and advised
    assert varz == refused
    assert metrics == {"unsigned": len(doors), "unknown key": len(doors),
                       "digest mismatch": 2 * len(doors)}, metrics
    bodies = [json.loads(a.data) for a in advisories]
    assert len(bodies) == refused, bodies
    assert sorted((b["reason"], b["subject"]) for b in bodies) == sorted(
        [(REASON[k], "signed.p." + d.name) for d in doors for k in ("unsigned", "bob",
                                                                      "tampered")]
        + [("digest mismatch", "opt." + d.name) for d in doors])
    for b in bodies:
        if b["reason"] == "unknown key":
            assert b["id"].startswith("bob-") and b["source"] == "/trust/test"


async def _varint(r):
    n = shift = 0
    while True:
        b = (await r.readexactly(1))[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n


async def mqtt5_qos2_pubrec(port, topic, payload):
    """An MQTT 5 QoS 2 PUBLISH on a raw socket (paho-mqtt 2.2 ignores a
    PUBREC's reason code): the PUBREC's ``(reason code, Reason String)``."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        # CONNECT: "MQTT" 5, clean start, keep-alive 60, no properties, an empty client id
        body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x00"
        w.write(bytes([0x10, len(body)]) + body)
        assert (await r.readexactly(1))[0] == 0x20
        connack = await r.readexactly(await _varint(r))
        assert connack[1] == 0, connack
        t = topic.encode()
        body = len(t).to_bytes(2, "big") + t + b"\x00\x07" + b"\x00" + payload
        w.write(bytes([0x34, len(body)]) + body)        # (QoS 2, packet id 7)
        assert (await asyncio.wait_for(r.readexactly(1), 5))[0] == 0x50     # PUBREC
        pubrec = await r.readexactly(await _varint(r))
        assert pubrec[:2] == b"\x00\x07", pubrec
        text = None
        if len(pubrec) > 4 and pubrec[4] == 0x1F:       # (the properties: a Reason String)
            n = int.from_bytes(pubrec[5:7], "big")
            text = pubrec[7:7 + n].decode()
        elif len(pubrec) > 5 and pubrec[5] == 0x1F:     # (a two-byte properties length)
            n = int.from_bytes(pubrec[6:8], "big")
            text = pubrec[8:8 + n].decode()
        return pubrec[2], text
    finally:
        w.close()


def test_plain_publishes_without_attributes_are_unsigned(aloop, server, keys):
    """The doors' fast paths: a NATS PUB without headers, an MQTT publish
    without properties (QoS 0 and 1 routed in C by the parser; QoS 2: the
    PUBREC) and a native publish of bare data are events with the
    defaults, unsigned: refused on a ``require = true`` subject."""
    import fastflow.client as fc

    async def main():
        async with Receivers(server, "signed.plain.>") as rx:
            errors = []
            c = await fc.connect(server.url, error_callback=errors.append)
            c.publish("signed.plain.native", b"x")
            await c.flush()
            for _ in range(20):
                if errors:
                    break
                await asyncio.sleep(0.01)
            await c.close()
            # NATS on a raw socket: the -ERR's exact words (nats-py lowercases
            # them), then a signed HPUB on the same connection goes through
            r, w = await asyncio.open_connection("127.0.0.1", server.nats_port)
            await r.readline()                      # (INFO)
            w.write(b'CONNECT {"verbose":false,"headers":true}\r\nPUB signed.plain.nats 1\r\n'
                    b'x\r\nPING\r\n')
            nerr = await asyncio.wait_for(r.readuntil(b"PONG\r\n"), 5)
            headers, body = to_http(make_event(keys, "good", "signed.plain.nats", "plain-good"))
            head = "NATS/1.0\r\n{}\r\n".format("".join(
                "{}: {}\r\n".format(k, v) for k, v in headers.items())).encode()
            w.write(b"HPUB signed.plain.nats %d %d\r\n%s%s\r\nPING\r\n" % (
                len(head), len(head) + len(body), head, body))
            nerr += await asyncio.wait_for(r.readuntil(b"PONG\r\n"), 5)
            w.close()
            m = await asyncio.to_thread(Paho, server.mqtt_port, 5)
            ack = await asyncio.to_thread(m.pub, "signed/plain/mqtt", b"x", 1)
            ack0 = await asyncio.to_thread(m.pub, "signed/plain/mqtt0", b"x", 0)
            await asyncio.to_thread(m.close)
            ack2 = await mqtt5_qos2_pubrec(server.mqtt_port, "signed/plain/mqtt2", b"x")
            got = await rx.collect()
            return errors, nerr, ack, ack0, ack2, got, rx.mqtt311

    errors, nerr, ack, ack0, ack2, got, m311 = aloop(main)
    assert [(type(e), e.code) for e in errors] == [(PermissionDeniedError, 403)]
    assert "signature check failed: unsigned" in str(errors[0])
    assert nerr == (b"-ERR 'Permissions Violation for Publish to \"signed.plain.nats\": signature "
                    b"check failed: unsigned: publishes to \"signed.plain.nats\" must be signed'"
                    b"\r\nPONG\r\nPONG\r\n")
    assert ack[0] == 0x87 and "signature check failed: unsigned" in ack[1], ack
    assert ack0 is None
    assert ack2[0] == 0x87 and "signature check failed: unsigned" in ack2[1], ack2
    for out, events in got.items():
        assert [verify(e, keys.trusted).id for e in events] == ["plain-good"], out
    assert [m.payload for m in m311] == [DATA]

