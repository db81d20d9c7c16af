"""MQTT scenarios with paho-mqtt, run against a real mosquitto (the
reference server) and against fastflow's MQTT door (``fastflow serve
--mqtt-port``, a child process): what the door must answer so that MQTT
clients behave unchanged.  Each scenario runs once per broker of
``BROKERS`` and per transport of ``TRANSPORTS`` (MQTT over TCP, and over
WebSocket: mosquitto's ``protocol websockets`` listener, fastflow's HTTP
listener at ``/mqtt``); a few also over TLS (``TLS_TRANSPORTS``: with a CA
made by the test).  Every deliberate difference from mosquitto is written
next to the scenario it changes."""

import base64
import queue
import socket
import struct
import threading
import time
from types import SimpleNamespace

import pytest

from peers import MosquittoProcess, free_port, make_tls_files, require_peer

BROKERS = ["mosquitto", "fastflow"]
TRANSPORTS = ["tcp", "ws"]              # every scenario
TLS_TRANSPORTS = ["tls", "wss"]         # the scenarios marked with them (tls_brokers)
V311, V5 = 4, 5


def _pairs(transports):
    return [pytest.param((b, t), id="{}-{}".format(b, t)) for t in transports for b in BROKERS]


def tls_brokers(transports=TRANSPORTS + TLS_TRANSPORTS):
    """The mark that runs a scenario over ``transports`` (TLS ones too)."""
    return pytest.mark.parametrize("broker", _pairs(transports), indirect=True)


@pytest.fixture(params=_pairs(TRANSPORTS))
def broker(request, tmp_path):
    """The broker of a scenario and how its clients reach it: ``.port``
    (of its ``.transport``: ``tcp``, ``ws``, ``tls``, ``wss``), ``.path``
    (WebSocket), ``.ca`` (TLS: the CA file), ``.tcp_port`` (plain MQTT
    over TCP; None with TLS: fastflow has one TLS configuration for all
    its listeners), ``.restart()`` (stop and start again with its state:
    persistent sessions and retained messages)."""
    require_peer("paho-mqtt")
    name, transport = request.param
    tls = make_tls_files(tmp_path) if transport in ("tls", "wss") else None
    port = tcp_port = free_port()
    if transport != "tcp" and not (name == "fastflow" and transport == "tls"):
        port = free_port()
    if name == "mosquitto":
        require_peer("mosquitto")
        proc = MosquittoProcess(tcp_port, str(tmp_path), mosquitto_listener(port, transport, tls),
                                also=[port] if port != tcp_port else [])
    else:
        proc = FastflowMqtt(tcp_port, str(tmp_path), fastflow_args(port, transport, tls))
    proc.start()

    def restart():
        proc.stop()
        proc.start()

    try:
        yield SimpleNamespace(name=name, transport=transport, port=port,
                              tcp_port=None if tls else tcp_port,
                              path="/mqtt", ca=tls.ca if tls else None, restart=restart,
                              proc=proc)
    finally:
        proc.stop()


def mosquitto_listener(port, transport, tls):
    """The mosquitto.conf lines of the listener for ``transport`` (besides
    its plain MQTT one; mosquitto 2.0.11 does not start with a websockets
    listener alone, and listens on every address with one)."""
    if transport == "tcp":
        return ""
    conf = "listener {} 127.0.0.1\n".format(port)
    if transport in ("ws", "wss"):
        conf += "protocol websockets\n"
    if tls is not None:
        conf += "cafile {}\ncertfile {}\nkeyfile {}\n".format(tls.ca, tls.cert, tls.key)
    return conf


def fastflow_args(port, transport, tls):
    """``fastflow serve``'s flags for ``transport``: WebSocket on the HTTP
    listener, TLS on every listener (one server TLS configuration)."""
    args = []
    if transport in ("ws", "wss"):
        args += ["--http-port", str(port)]
    if tls is not None:
        args += ["--tls-cert", tls.cert, "--tls-key", tls.key]
    return args


class FastflowMqtt:
    """``fastflow serve`` with its MQTT door on ``port`` (a child process);
    started when it listens on ``port`` and the ports of ``--http-port``."""

    def __init__(self, port, directory, args=()):
        self.port = port
        self.directory = directory
        self.args = list(args)
        self.proc = None
        self.ports = [port] + [int(self.args[i + 1]) for i, a in enumerate(self.args)
                               if a == "--http-port"]

    def start(self, timeout=20.0):
        import os
        import subprocess
        import sys

        with open(os.path.join(self.directory, "ff.log"), "a") as errlog:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastflow", "serve", "--port", "0", "--monitor-port",
                 "0", "--mqtt-port", str(self.port), "--data-dir",
                 os.path.join(self.directory, "data")] + self.args,
                stdout=subprocess.DEVNULL, stderr=errlog)
        deadline = time.monotonic() + timeout
        waiting = list(self.ports)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("fastflow serve exited with {}".format(self.proc.returncode))
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                    waiting.pop(0)
                    if not waiting:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fastflow did not listen on {}".format(self.port))

    def stop(self):
        import signal

        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Mqtt:
    """A paho-mqtt client of ``broker`` that records what it receives:
    ``get()`` the next message, ``none()`` asserts nothing comes."""

    def __init__(self, broker, version=V5, client_id="", clean=True, keepalive=60, will=None,
                 session_expiry=None, connect=True):
        import paho.mqtt.client as mqtt
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        self.mqtt = mqtt
        self.version = version
        self.port = broker.port
        kw = {}
        if version == V311:
            kw["clean_session"] = clean
        transport = getattr(broker, "transport", "tcp")
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5 if version == V5 else mqtt.MQTTv311,
                             transport="websockets" if transport in ("ws", "wss") else "tcp",
                             **kw)
        if transport in ("ws", "wss"):
            self.c.ws_set_options(path=broker.path)
        if transport in ("tls", "wss"):
            self.c.tls_set(ca_certs=broker.ca, certfile=getattr(broker, "client_cert", None),
                           keyfile=getattr(broker, "client_key", None))
        self.clean = clean
        self.keepalive = keepalive
        self.msgs = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.acks = queue.Queue()
        self.connack = None
        self.disconnect_reason = None
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_subscribe = lambda c, u, mid, codes, props: self.acks.put(("sub", mid, codes))
        self.c.on_unsubscribe = lambda c, u, mid, codes, props: self.acks.put(("unsub", mid,
                                                                               codes))
        if will is not None:
            topic, payload, qos, retain = will[:4]
            wprops = None
            if len(will) > 4 and version == V5:
                wprops = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will[4].items():
                    setattr(wprops, k, v)
            self.c.will_set(topic, payload, qos, retain, properties=wprops)
        self.props = None
        if version == V5 and session_expiry is not None:
            self.props = Properties(PacketTypes.CONNECT)
            self.props.SessionExpiryInterval = session_expiry
        if connect:
            self.connect()

    def _on_connect(self, c, u, flags, reason, props):
        self.connack = SimpleNamespace(session_present=flags.session_present,
                                       reason=reason.value, props=props)
        self.connected.set()

    def _on_disconnect(self, c, u, flags, reason, props):
        self.disconnect_reason = reason.value if hasattr(reason, "value") else reason
        self.disconnected.set()

    def connect(self, timeout=5):
        kw = {}
        if self.version == V5:
            kw["clean_start"] = self.clean
            kw["properties"] = self.props
        self.connected.clear()
        self.c.connect("127.0.0.1", self.port, self.keepalive, **kw)
        self.c.loop_start()
        assert self.connected.wait(timeout), "no CONNACK within {} s".format(timeout)
        return self.connack

    def sub(self, topic, qos=0, timeout=5, **opts):
        """Subscribe; the SUBACK's reason codes (ints)."""
        props = None
        if self.version == V5:
            from paho.mqtt.subscribeoptions import SubscribeOptions

            sid = opts.pop("sid", None)
            opts = SubscribeOptions(qos=qos, **opts)
            qos = 0
            if sid is not None:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sid
        _, mid = self.c.subscribe(topic, qos, options=opts or None, properties=props)
        kind, got, codes = self.acks.get(timeout=timeout)
        assert (kind, got) == ("sub", mid)
        return [c.value for c in codes]

    def unsub(self, topic, timeout=5):
        _, mid = self.c.unsubscribe(topic)
        kind, got, codes = self.acks.get(timeout=timeout)
        assert (kind, got) == ("unsub", mid)
        return [c.value for c in codes] if isinstance(codes, list) else codes

    def pub(self, topic, payload, qos=0, retain=False, props=None, wait=True):
        p = None
        if props and self.version == V5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            p = Properties(PacketTypes.PUBLISH)
            for k, v in props.items():
                setattr(p, k, v)
        info = self.c.publish(topic, payload, qos, retain, properties=p)
        if wait:
            info.wait_for_publish(5)
            assert info.is_published()
        return info

    def get(self, timeout=5):
        try:
            return self.msgs.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message within {} s".format(timeout)) from None

    def none(self, wait=0.3):
        time.sleep(wait)
        assert self.msgs.empty(), "unexpected message on {!r}".format(self.msgs.queue[0].topic)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def kill(self):
        """Drop the TCP connection without DISCONNECT (a device losing power)."""
        sock = self.c.socket()
        self.c.loop_stop()
        sock = getattr(sock, "_socket", sock)   # (WebSocket: paho's wrapper of the socket)
        if sock is not None:
            # (linger 0: a reset, as a device that loses power leaves no FIN)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()


@pytest.fixture
def clients():
    made = []

    def make(*args, **kw):
        c = Mqtt(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        try:
            c.c.disconnect()            # (first: loop_stop wakes at once then)
            c.c.loop_stop()
        except Exception:
            pass


# -- publish and subscribe ------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("sub_qos,pub_qos", [(0, 0), (1, 1), (2, 2), (0, 2), (2, 1), (1, 0)])
def test_delivery_at_the_lower_qos_in_order(broker, clients, version, sub_qos, pub_qos):
    s = clients(broker, version)
    assert s.sub("plant/1/temp", sub_qos) == [sub_qos]
    p = clients(broker, version)
    for i in range(50):
        p.pub("plant/1/temp", b"%d" % i, pub_qos)
    got = [s.get() for _ in range(50)]
    assert [m.payload for m in got] == [b"%d" % i for i in range(50)]
    assert {m.qos for m in got} == {min(sub_qos, pub_qos)}
    assert {m.retain for m in got} == {False} and {m.topic for m in got} == {"plant/1/temp"}


@pytest.mark.parametrize("version", [V311, V5])
def test_wildcards_and_the_dollar_rule(broker, clients, version):
    s = clients(broker, version)
    s.sub("a/#", 0)
    s.sub("+/x", 0)
    h = clients(broker, version)
    h.sub("#", 0)
    p = clients(broker, version)
    for t in ("a", "a/b/c", "b/x", "$SYS/x", "$own/x"):
        p.pub(t, t.encode())
    assert sorted(s.get().topic for _ in range(3)) == ["a", "a/b/c", "b/x"]
    s.none()
    assert sorted(h.get().topic for _ in range(3)) == ["a", "a/b/c", "b/x"]
    h.none()         # '#' and '+' do not reach topics starting with '$'


@pytest.mark.parametrize("version", [V311, V5])
def test_unsubscribe(broker, clients, version):
    s = clients(broker, version)
    s.sub("u/1", 1)
    p = clients(broker, version)
    p.pub("u/1", b"a", 1)
    assert s.get().payload == b"a"
    codes = s.unsub("u/1")
    if version == V5:
        assert codes == [0]
        assert s.unsub("u/never") == [17]       # no subscription existed
    p.pub("u/1", b"b", 1)
    s.none()


def test_shared_subscriptions_share(broker, clients):
    a, b = clients(broker), clients(broker)
    a.sub("$share/g/jobs/+", 1)
    b.sub("$share/g/jobs/+", 1)
    p = clients(broker)
    for i in range(40):
        p.pub("jobs/x", b"%d" % i, 1)
    time.sleep(0.5)
    got_a = [a.msgs.get_nowait().payload for _ in range(a.msgs.qsize())]
    got_b = [b.msgs.get_nowait().payload for _ in range(b.msgs.qsize())]
    assert sorted(got_a + got_b, key=int) == [b"%d" % i for i in range(40)]
    assert got_a and got_b


def test_no_local_and_subscription_identifiers(broker, clients):
    c = clients(broker)
    c.sub("n/1", 0, noLocal=True)
    c.sub("n/+", 0, sid=7)
    c.pub("n/1", b"own")
    m = c.get()                 # the no-local subscription drops it; n/+ has it
    assert m.payload == b"own" and m.properties.SubscriptionIdentifier == [7]
    c.none()


@pytest.mark.parametrize("pub_qos", [0, 1])
def test_no_local_at_qos_1(broker, clients, pub_qos):
    c = clients(broker)
    c.sub("nq/1", 1, noLocal=True)
    other = clients(broker)
    c.pub("nq/1", b"own", pub_qos)
    other.pub("nq/1", b"theirs", pub_qos)
    assert c.get().payload == b"theirs"
    c.none()


def test_v5_properties_reach_the_subscriber(broker, clients):
    s = clients(broker)
    s.sub("rr/#", 1)
    p = clients(broker)
    p.pub("rr/q", b"{}", 1, props={"ContentType": "application/json",
                                   "ResponseTopic": "rr/answer", "CorrelationData": b"c1",
                                   "UserProperty": [("a", "1"), ("a", "2"), ("b", "x")],
                                   "PayloadFormatIndicator": 1, "MessageExpiryInterval": 60})
    m = s.get()
    pr = m.properties
    assert (pr.ContentType, pr.ResponseTopic, pr.CorrelationData) == (
        "application/json", "rr/answer", b"c1")
    assert pr.UserProperty == [("a", "1"), ("a", "2"), ("b", "x")]   # order and repeats kept
    assert pr.PayloadFormatIndicator == 1 and 0 < pr.MessageExpiryInterval <= 60


def test_assigned_client_identifier(broker, clients):
    c = clients(broker, V5, client_id="")
    assigned = c.connack.props.AssignedClientIdentifier
    assert isinstance(assigned, str) and assigned


# -- retained messages ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_retained_messages(broker, clients, version):
    p = clients(broker, version)
    p.pub("r/1", b"one", 1, retain=True)
    p.pub("r/2", b"two", 0, retain=True)
    s = clients(broker, version)
    s.sub("r/+", 1)
    got = sorted((m.topic, m.payload, m.retain) for m in (s.get(), s.get()))
    assert got == [("r/1", b"one", True), ("r/2", b"two", True)]
    p.pub("r/1", b"live", 0)              # not retained: the retained one stays
    m = s.get()
    assert (m.payload, m.retain) == (b"live", False)
    p.pub("r/1", b"", 1, retain=True)      # an empty retained publish clears the topic
    m = s.get()
    assert m.payload == b""
    s2 = clients(broker, version)
    s2.sub("r/+", 1)
    m = s2.get()
    assert (m.topic, m.payload) == ("r/2", b"two")
    s2.none()


def test_retain_handling_and_retain_as_published(broker, clients):
    p = clients(broker)
    p.pub("rh/1", b"kept", 1, retain=True)
    never = clients(broker)
    never.sub("rh/#", 1, retainHandling=2)
    never.none()
    rap = clients(broker)
    rap.sub("rh/#", 1, retainAsPublished=True, retainHandling=1)
    assert rap.get().retain is True
    rap.sub("rh/#", 1, retainAsPublished=True, retainHandling=1)   # exists: none again
    rap.none()
    p.pub("rh/1", b"new", 1, retain=True)
    assert rap.get().retain is True        # kept as published
    plain = clients(broker)
    plain.sub("rh/#", 1, retainHandling=2)
    p.pub("rh/1", b"newer", 1, retain=True)
    assert plain.get().retain is False     # live delivery: the flag cleared


def test_retained_messages_survive_a_restart(broker, clients):
    p = clients(broker)
    p.pub("keep/1", b"durable", 1, retain=True)
    p.close()
    time.sleep(0.2)
    broker.restart()
    s = clients(broker)
    s.sub("keep/#", 1)
    m = s.get()
    assert (m.topic, m.payload, m.retain) == ("keep/1", b"durable", True)


# -- wills ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_a_will_on_a_dropped_connection_and_none_on_disconnect(broker, clients, version):
    w = clients(broker, version)
    w.sub("wills/#", 1)
    dev = clients(broker, version, client_id="dev-1", will=("wills/dev-1", b"gone", 1, False))
    dev.kill()
    m = w.get()
    assert (m.topic, m.payload) == ("wills/dev-1", b"gone")
    ok = clients(broker, version, client_id="dev-2", will=("wills/dev-2", b"gone", 1, False))
    ok.close()
    w.none(0.5)


def test_a_will_delay(broker, clients):
    w = clients(broker)
    w.sub("wills/#", 1)
    dev = clients(broker, client_id="dev-3", session_expiry=60,
                  will=("wills/dev-3", b"late", 1, False, {"WillDelayInterval": 1}))
    t0 = time.monotonic()
    dev.kill()
    m = w.get(5)
    assert m.payload == b"late" and time.monotonic() - t0 >= 0.9


# -- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
def test_a_persistent_session_keeps_messages_while_away(broker, clients, version):
    kw = {"clean": False} if version == V311 else {"clean": False, "session_expiry": 300}
    s = clients(broker, version, client_id="sess-1", **kw)
    assert s.connack.session_present is False
    s.sub("orders/#", 1)
    s.close()
    p = clients(broker, version)
    for i in range(20):
        p.pub("orders/new", b"%d" % i, 1)
    p.pub("orders/new", b"q0", 0)
    back = clients(broker, version, client_id="sess-1", **kw)
    assert back.connack.session_present is True
    got = [back.get().payload for _ in range(20)]
    assert got == [b"%d" % i for i in range(20)]
    # mosquitto queues QoS 0 messages for an offline client too (queue_qos0_messages
    # false: it does not): none here
    back.none()


def test_a_persistent_session_survives_a_restart(broker, clients):
    s = clients(broker, V5, client_id="sess-2", clean=False, session_expiry=300)
    s.sub("dur/#", 1)
    s.close()
    p = clients(broker)
    for i in range(5):
        p.pub("dur/x", b"%d" % i, 1)
    p.close()
    time.sleep(0.2)
    broker.restart()
    back = clients(broker, V5, client_id="sess-2", clean=False, session_expiry=300)
    assert back.connack.session_present is True
    assert [back.get().payload for _ in range(5)] == [b"%d" % i for i in range(5)]


def test_a_clean_start_drops_the_session(broker, clients):
    s = clients(broker, V5, client_id="sess-3", clean=False, session_expiry=300)
    s.sub("gone/#", 1)
    s.close()
    again = clients(broker, V5, client_id="sess-3", clean=True)
    assert again.connack.session_present is False
    clients(broker).pub("gone/x", b"x", 1)
    again.none()


def test_a_second_connection_takes_the_session_over(broker, clients):
    first = clients(broker, V5, client_id="same")
    second = clients(broker, V5, client_id="same")
    assert first.disconnected.wait(5)
    # (mosquitto 2.0.11 closes the first connection without a DISCONNECT
    # 0x8E; paho reports an unspecified error then)
    assert first.disconnect_reason == (142 if broker.name == "fastflow" else 128)
    second.sub("t/o", 0)
    clients(broker).pub("t/o", b"x")
    assert second.get().payload == b"x"


def test_retained_messages_survive_a_crash(tmp_path, clients):
    """fastflow keeps retained messages in a stream, written as each one
    arrives: a SIGKILL loses none.  (mosquitto writes its store at
    shutdown and every autosave_interval: a crash loses what came since.)"""
    require_peer("paho-mqtt")
    import signal

    proc = FastflowMqtt(free_port(), str(tmp_path)).start()
    try:
        broker = SimpleNamespace(port=proc.port)
        p = clients(broker)
        for i in range(5):
            p.pub("crash/{}".format(i), b"v%d" % i, 1, retain=True)
        p.pub("crash/0", b"", 1, retain=True)          # cleared
        p.close()
        proc.proc.send_signal(signal.SIGKILL)
        proc.proc.wait(5)
        proc.start()
        s = clients(broker)
        s.sub("crash/#", 1)
        got = sorted((m.topic, m.payload, m.retain) for m in (s.get() for _ in range(4)))
        assert got == [("crash/{}".format(i), b"v%d" % i, True) for i in range(1, 5)]
        s.none()
    finally:
        proc.stop()


def test_wrong_credentials_get_connack_not_authorized(tmp_path, clients):
    """A refused login is told so before the close: CONNACK 0x87 (5.0) or
    return code 5 (3.1.1), as mosquitto answers."""
    require_peer("paho-mqtt")
    proc = FastflowMqtt(free_port(), str(tmp_path), ["--auth-token", "s3cret"]).start()
    try:
        broker = SimpleNamespace(port=proc.port)
        # (paho reports 3.1.1's return code 5 as 0x87 too; 4 would be 0x86)
        for version, code in ((V5, 0x87), (V311, 0x87)):
            c = Mqtt(broker, version, connect=False)
            c.c.username_pw_set("nobody", "wrong")
            c.connected.clear()
            c.c.connect("127.0.0.1", broker.port, 60)
            c.c.loop_start()
            try:
                assert c.connected.wait(5)
                assert c.connack.reason == code
            finally:
                c.c.loop_stop()
    finally:
        proc.stop()


@pytest.mark.parametrize("broker", _pairs(["tcp"]), indirect=True)
@pytest.mark.parametrize("level", [2, 6])
def test_an_unknown_protocol_level_is_answered_with_connack_1(broker, level):
    """A CONNECT of a level the server does not speak: CONNACK return code
    1 (unacceptable protocol version), in 3.1.1's words, then the close."""
    body = b"\x00\x04MQTT" + bytes([level, 0x02, 0x00, 0x3C]) + b"\x00\x01c"
    with socket.create_connection(("127.0.0.1", broker.port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        got = b""
        while len(got) < 4:
            chunk = sock.recv(16)
            if not chunk:
                break
            got += chunk
        assert got[:4] == b"\x20\x02\x00\x01"
        assert sock.recv(16) == b""


# -- WebSocket and TLS (docs/mqtt.md "WebSocket and TLS") -----------------------------------


def _mqtt_str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _mqtt_packet(first, body):
    n, vbi = len(body), bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        vbi.append(b | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(vbi) + body


def _connect_311(client_id, proto=b"\x00\x04MQTT\x04"):
    return _mqtt_packet(0x10, proto + b"\x02\x00\x3c" + _mqtt_str(client_id))


def _ws_read(ws, n, timeout=5):
    """``n`` bytes of the MQTT stream the broker sent in binary messages."""
    got = b""
    while len(got) < n:
        msg = ws.recv(timeout)
        assert isinstance(msg, bytes), "a text message: {!r}".format(msg[:80])
        got += msg
    return got


@pytest.mark.parametrize("broker", _pairs(["ws"]), indirect=True)
def test_mqtt_packets_span_websocket_frames(broker):
    """MQTT 5.0 section 6: the binary messages carry the byte stream;
    several packets in one message and one packet over several messages
    (and over the fragments of one message) are read alike."""
    from websockets.sync.client import connect

    url = "ws://127.0.0.1:{}{}".format(broker.port, broker.path)
    with connect(url, subprotocols=["mqtt"], max_size=None) as ws:
        assert ws.subprotocol == "mqtt"
        subscribe = _mqtt_packet(0x82, b"\x00\x07" + _mqtt_str("span/#") + b"\x00")
        ws.send(_connect_311("span-1") + subscribe)                 # two packets, one message
        assert _ws_read(ws, 9) == b"\x20\x02\x00\x00" + b"\x90\x03\x00\x07\x00"
        payload = bytes(range(256)) * 300                             # 76,800 bytes
        publish = _mqtt_packet(0x30, _mqtt_str("span/x") + payload)
        ws.send(publish[:1])                                          # the first byte alone
        ws.send(publish[1:40000])
        ws.send([publish[40000:40001], publish[40001:60000], publish[60000:]])  # fragments
        ws.send(_mqtt_packet(0x30, _mqtt_str("span/y") + b"a") + _mqtt_packet(
            0x30, _mqtt_str("span/y") + b"b") + b"\xc0\x00")             # 2 PUBLISH + PINGREQ
        expected = publish + _mqtt_packet(0x30, _mqtt_str("span/y") + b"a") + _mqtt_packet(
            0x30, _mqtt_str("span/y") + b"b") + b"\xd0\x00"
        assert _ws_read(ws, len(expected), 20) == expected


@pytest.mark.parametrize("broker", _pairs(["ws"]), indirect=True)
def test_subprotocol_mqttv31_for_old_clients(broker):
    """``mqttv3.1`` is what MQTT 3.1 clients (``MQIsdp``) offer; the
    server answers with it."""
    from websockets.sync.client import connect

    url = "ws://127.0.0.1:{}{}".format(broker.port, broker.path)
    with connect(url, subprotocols=["mqttv3.1"]) as ws:
        assert ws.subprotocol == "mqttv3.1"
        ws.send(_connect_311("old-1", b"\x00\x06MQIsdp\x03"))
        assert _ws_read(ws, 4) == b"\x20\x02\x00\x00"


@tls_brokers(["tls", "wss"])
@pytest.mark.parametrize("version", [V311, V5])
def test_publish_and_subscribe_over_tls(broker, clients, version):
    s = clients(broker, version)
    assert s.sub("secure/#", 2) == [2]
    p = clients(broker, version)
    p.pub("secure/r", b"kept", 1, retain=True)
    m = s.get()
    assert (m.payload, m.retain) == (b"kept", False)   # (live: the flag cleared)
    big = bytes(range(256)) * 200
    for qos in (0, 1, 2):
        p.pub("secure/big", big + bytes([qos]), qos)
    got = [s.get(10) for _ in range(3)]
    assert [(m.payload[-1], len(m.payload), m.qos) for m in got] == [
        (0, 51201, 0), (1, 51201, 1), (2, 51201, 2)]
    late = clients(broker, version)
    late.sub("secure/r", 0)
    m = late.get()
    assert (m.payload, m.retain) == (b"kept", True)


@tls_brokers(["tls"])
def test_a_plaintext_client_on_the_tls_port_gets_no_connack(broker):
    """A client that does not speak TLS to a TLS listener fails the
    handshake: no CONNACK, the connection closes."""
    with socket.create_connection(("127.0.0.1", broker.port), timeout=10) as sock:
        sock.sendall(_connect_311("plain-1"))
        got = b""
        while True:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        assert not got.startswith(b"\x20")          # (a TLS alert, or nothing)


@tls_brokers(["tls"])
def test_mosquitto_clients_with_cafile(broker):
    """mosquitto_pub / mosquitto_sub ``--cafile`` (verifying the server's
    certificate and name) against the TLS listener."""
    import subprocess

    require_peer("mosquitto")
    common = ["-h", "localhost", "-p", str(broker.port), "--cafile", broker.ca, "-V", "mqttv5"]
    subprocess.run(["mosquitto_pub"] + common + ["-t", "smoke/tls", "-m", "hello", "-r",
                                                 "-q", "1"], check=True, timeout=20)
    r = subprocess.run(["mosquitto_sub"] + common + ["-t", "smoke/#", "-C", "1", "-W", "10",
                                                     "-v"],
                       capture_output=True, text=True, timeout=20)
    assert (r.returncode, r.stdout) == (0, "smoke/tls hello\n"), r.stderr


def _fastflow_ws(tmp_path, args):
    http = free_port()
    return FastflowMqtt(free_port(), str(tmp_path), ["--http-port", str(http)] + args), http


def test_mqtt_over_websocket_logs_in_with_connect_or_the_upgrade(tmp_path):
    """With users, an MQTT client over WebSocket logs in with CONNECT's
    user name and password (its upgrade request needs no credentials), or
    with the upgrade request's (HTTP Basic) when CONNECT has none."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    proc, http = _fastflow_ws(tmp_path, ["--user", "alice", "--password", "pw"])
    proc.start()
    url = "ws://127.0.0.1:{}/mqtt".format(http)
    anonymous = _connect_311("a-1")
    login = _mqtt_packet(0x10, b"\x00\x04MQTT\x04\xc2\x00\x3c" + _mqtt_str("a-2") +
                         _mqtt_str("alice") + _mqtt_str("pw"))
    basic = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
    try:
        with connect(url, subprotocols=["mqtt"]) as ws:
            ws.send(anonymous)
            assert _ws_read(ws, 4) == b"\x20\x02\x00\x05"   # not authorized
        with connect(url, subprotocols=["mqtt"]) as ws:
            ws.send(login)
            assert _ws_read(ws, 4) == b"\x20\x02\x00\x00"
        with connect(url, subprotocols=["mqtt"], additional_headers=basic) as ws:
            ws.send(anonymous)
            assert _ws_read(ws, 4) == b"\x20\x02\x00\x00"
        bad = {"Authorization": "Basic " + base64.b64encode(b"alice:no").decode()}
        with pytest.raises(InvalidStatus, match="401"):
            connect(url, subprotocols=["mqtt"], additional_headers=bad)
        # offering mqtt lets an upgrade through unchecked only if mqtt is what it gets
        for first in ("fastflow", "cloudevents.json"):
            with pytest.raises(InvalidStatus, match="401"):
                connect("ws://127.0.0.1:{}/ws".format(http), subprotocols=[first, "mqtt"])
    finally:
        proc.stop()


def test_mqtt_over_websocket_refusals(tmp_path):
    """What fastflow's WebSocket layer refuses on an MQTT connection: a
    text message (1003), a malformed packet (the MQTT 5 DISCONNECT 0x81
    in a binary message, then close 1002), a subprotocol not spoken at
    /mqtt; and with ``[mqtt] ws = false``, /mqtt (404) and the subprotocol
    at /ws (400)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    proc, http = _fastflow_ws(tmp_path, [])
    proc.start()
    url = "ws://127.0.0.1:{}/mqtt".format(http)
    try:
        with connect(url, subprotocols=["mqtt"]) as ws:
            ws.send(_connect_311("r-1"))
            assert _ws_read(ws, 4) == b"\x20\x02\x00\x00"
            ws.send("a text message")
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(5)
            assert info.value.rcvd.code == 1003
        with connect(url, subprotocols=["mqtt"]) as ws:
            ws.send(_mqtt_packet(0x10, b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + _mqtt_str("r-2")))
            d = _ws_read(ws, 4)
            assert (d[0], d[3]) == (0x20, 0)                    # CONNACK, success
            ws.send(b"\x30\xff\xff\xff\xff\x01")                 # a length over 4 bytes
            d = _ws_read(ws, 3)
            assert (d[0], d[2]) == (0xE0, 0x81)                 # DISCONNECT, malformed packet
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(5)
            assert info.value.rcvd.code == 1002
        with pytest.raises(InvalidStatus, match="400"):
            connect(url, subprotocols=["fastflow"])
        with connect("ws://127.0.0.1:{}/ws".format(http), subprotocols=["mqtt"]) as ws:
            assert ws.subprotocol == "mqtt"     # /ws speaks it too, when asked
    finally:
        proc.stop()
    conf = tmp_path / "ff.toml"
    conf.write_text("[mqtt]\nws = false\n")
    off = FastflowMqtt(free_port(), str(tmp_path), ["--http-port", str(http), "-c", str(conf)])
    off.start()
    try:
        with pytest.raises(InvalidStatus, match="404"):
            connect(url, subprotocols=["mqtt"])
        with pytest.raises(InvalidStatus, match="400"):
            connect("ws://127.0.0.1:{}/ws".format(http), subprotocols=["mqtt"])
    finally:
        off.stop()


def test_mqtt_keep_alive_over_websocket_is_mqtts(tmp_path, clients):
    """The server sends no WebSocket pings on an MQTT connection: a client
    whose WebSocket answers pings but whose MQTT side is silent past 1.5 x
    its keep-alive is closed and its will published (with pings every
    second, its pongs would keep it alive)."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    conf = tmp_path / "ff.toml"
    conf.write_text("[limits]\nping_interval = 1.0\n")
    proc, http = _fastflow_ws(tmp_path, ["-c", str(conf)])
    proc.start()
    try:
        # (keep-alive 1: its PINGREQs keep it fresh for the server's stale check)
        w = clients(SimpleNamespace(port=proc.port), V311, keepalive=1)
        w.sub("gone/#", 1)
        will = _mqtt_str("gone/ws") + _mqtt_str("bye")
        with connect("ws://127.0.0.1:{}/mqtt".format(http), subprotocols=["mqtt"]) as ws:
            ws.send(_mqtt_packet(0x10, b"\x00\x04MQTT\x04\x0e\x00\x02" + _mqtt_str("ka-1") +
                                 will))             # will QoS 1, keep-alive 2 s
            assert _ws_read(ws, 4) == b"\x20\x02\x00\x00"
            m = w.get(10)
            assert (m.topic, m.payload) == ("gone/ws", b"bye")
            with pytest.raises(ConnectionClosed):
                ws.recv(5)
    finally:
        proc.stop()


@pytest.mark.parametrize("name", BROKERS)
def test_client_certificates_on_the_tls_port(name, tmp_path, clients):
    """A TLS listener that requires client certificates (fastflow:
    ``tls.verify`` with ``tls.ca``; mosquitto: ``require_certificate``):
    a client with a certificate the CA signed is served, one without gets
    no CONNACK."""
    import ssl

    require_peer("paho-mqtt")
    tls = make_tls_files(tmp_path)
    port = free_port()
    if name == "mosquitto":
        require_peer("mosquitto")
        proc = MosquittoProcess(free_port(), str(tmp_path), mosquitto_listener(port, "tls", tls) +
                                "require_certificate true\n", also=[port])
    else:
        proc = FastflowMqtt(port, str(tmp_path), fastflow_args(port, "tls", tls) + [
            "--tls-ca", tls.ca, "--tls-verify"])
    proc.start()
    try:
        broker = SimpleNamespace(name=name, transport="tls", port=port, ca=tls.ca,
                                 client_cert=tls.client_cert, client_key=tls.client_key)
        s = clients(broker)
        s.sub("cert/#", 1)
        clients(broker).pub("cert/x", b"signed", 1)
        assert s.get().payload == b"signed"
        ctx = ssl.create_default_context(cafile=tls.ca)
        got = b""
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            try:
                with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
                    sock.sendall(_connect_311("no-cert"))
                    while True:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        got += chunk
            except (ssl.SSLError, OSError):
                pass
        assert not got.startswith(b"\x20")          # no CONNACK
    finally:
        proc.stop()
