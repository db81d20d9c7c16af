"""The MQTT door's users and permissions, limits, slow consumers and
monitoring (docs/mqtt.md "Users and permissions", "Limits", "Monitoring").

Each scenario runs against a real mosquitto (the control: a password file
from ``mosquitto_passwd``, an ACL file, its limits) and against ``fastflow
serve`` with the same users, rights and limits in its config, with
paho-mqtt 3.1.1 and 5; a deliberate difference is asserted per broker and
written in docs/mqtt.md "Differences from mosquitto".  What mosquitto has
no counterpart for (per-connection subscription limits, slow consumers,
the CONNECT timeout, the monitoring endpoints) runs against fastflow
alone, over real sockets and HTTP."""

import json
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

from peers import MosquittoProcess, free_port, require_peer
from test_mqtt_door import V5, V311, FastflowMqtt, Mqtt, _pkt, _s, _vbi

BROKERS = ["mosquitto", "fastflow"]

# the same two users with the same rights on both brokers; a filter `a/#`
# is the subjects `a` and `a.>` (docs/mqtt.md), so both are allowed
ACL = """user alice
topic readwrite a/#
topic read r/#
topic write w/#

user bob
topic readwrite b/#
"""
USERS = """
[[auth.users]]
user = "alice"
password = "apw"
[auth.users.permissions]
publish = ["a", "a.>", "w", "w.>"]
subscribe = ["a", "a.>", "r", "r.>"]

[[auth.users]]
user = "bob"
password = "bpw"
[auth.users.permissions]
publish = ["b", "b.>"]
subscribe = ["b", "b.>"]
"""


@pytest.fixture
def start(tmp_path):
    """``start(name, mosquitto=..., fastflow=..., users=False, monitor=False)``:
    a broker with the listener lines ``mosquitto`` (mosquitto) or the TOML
    ``fastflow`` (fastflow); ``users``: alice and bob as above."""
    procs = []

    def start(name, mosquitto="", fastflow="", users=False, monitor=False):
        require_peer("paho-mqtt")
        d = tmp_path / "{}{}".format(name, len(procs))
        d.mkdir()
        port = free_port()
        mport = None
        if name == "mosquitto":
            require_peer("mosquitto")
            conf = mosquitto
            if users:
                pw = str(d / "passwd")
                tool = shutil.which("mosquitto_passwd")
                assert tool, "mosquitto_passwd is part of the mosquitto package"
                subprocess.run([tool, "-b", "-c", pw, "alice", "apw"], check=True)
                subprocess.run([tool, "-b", pw, "bob", "bpw"], check=True)
                (d / "acl").write_text(ACL)
                conf += "allow_anonymous false\npassword_file {}\nacl_file {}\n".format(
                    pw, d / "acl")
            proc = MosquittoProcess(port, str(d), conf)
        else:
            cfg = d / "fastflow.toml"
            cfg.write_text(fastflow + (USERS if users else ""))
            args = ["--config", str(cfg)]
            if monitor:
                mport = free_port()
                args += ["--monitor-port", str(mport)]
            proc = FastflowMqtt(port, str(d), args)
        proc.start()
        procs.append(proc)
        return SimpleNamespace(name=name, port=port, proc=proc, monitor=mport)

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def clients():
    made = []

    def make(broker, version=V5, user=None, password=None, connect=True, **kw):
        c = Mqtt(broker, version, connect=False, **kw)
        made.append(c)
        if user is not None:
            c.c.username_pw_set(user, password)
        c.published = []                # (mid, reason code) of acknowledged publishes
        c.c.on_publish = lambda cl, u, mid, reason, props: c.published.append(
            (mid, reason.value if hasattr(reason, "value") else reason))
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.release()


def connack(client, timeout=5):
    """Connect ``client`` (not connected yet): the CONNACK's reason code
    (paho reports 3.1.1's return codes 4 and 5 as 0x86 and 0x87)."""
    client.connected.clear()
    client.c.connect("127.0.0.1", client.port, 60)
    client.c._reset_sockets(sockpair_only=True)     # (loop_start makes a new pair)
    client.c.loop_start()
    try:
        assert client.connected.wait(timeout), "no CONNACK"
        return client.connack.reason
    finally:
        client.c.loop_stop()


def pub_reason(client, topic, payload, qos):
    """Publish and wait for the acknowledgement: its reason code (5.0)."""
    info = client.pub(topic, payload, qos)
    return dict(client.published)[info.mid]


# -- raw packets (what paho does not show: PUBREC's reason, the bytes of a close) -------------


def _packet(kind, flags, body):
    return _pkt(kind << 4 | flags, body)


def raw_connect(port, version, client_id, user=None, password=None, props=b"", rcvbuf=None):
    """A socket that sent CONNECT and read a successful CONNACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        flags = 0x02
        tail = _s(client_id)
        if user is not None:
            flags |= 0xC0
            tail += _s(user) + _s(password)
        head = _s("MQTT") + bytes([version, flags]) + struct.pack(">H", 60)
        if version == V5:
            head += _vbi(len(props)) + props
        sock.sendall(_packet(1, 0, head + tail))
        ack = read_packet(sock)
        assert ack is not None and ack[0] == 0x20 and ack[2][1] == 0, ack
    except BaseException:
        sock.close()
        raise
    return sock


def read_packet(sock):
    """(first byte, remaining length, body) of the next packet; None at EOF."""
    def exact(n):
        got = b""
        while len(got) < n:
            chunk = sock.recv(n - len(got))
            if not chunk:
                return None
            got += chunk
        return got

    b0 = exact(1)
    if b0 is None:
        return None
    n = shift = 0
    while True:
        b = exact(1)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    body = exact(n) if n else b""
    return b0[0], n, body


def raw_publish(topic, payload, qos, version, packet_id=7):
    body = _s(topic) + (struct.pack(">H", packet_id) if qos else b"")
    if version == V5:
        body += b"\x00"
    return _packet(3, qos << 1, body + payload)


def closed(sock, timeout=10):
    """Whether the peer closes ``sock`` (reading and dropping what comes)
    within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        return False
    return True


def http_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=5) as r:
        return json.loads(r.read())


def wait_for(what, timeout=10):
    """Poll ``what()`` until it is true (the server acts asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        v = what()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(0.05)


# -- users and permissions --------------------------------------------------------------------


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_logins(start, clients, name, version):
    """A user's password is checked; no credentials where the server has
    users is refused (mosquitto: allow_anonymous false).  A wrong password
    or an unknown user: fastflow answers the spec's specific code, 0x86 bad
    user name or password (3.1.1: 4); mosquitto 2.0.11 answers 0x87 not
    authorized (3.1.1: 5) for every refusal."""
    b = start(name, users=True)
    assert connack(clients(b, version, "alice", "apw", connect=False)) == 0
    bad = 0x86 if name == "fastflow" else 0x87
    assert connack(clients(b, version, "alice", "nope", connect=False)) == bad
    assert connack(clients(b, version, "zed", "apw", connect=False)) == bad
    assert connack(clients(b, version, connect=False)) == 0x87


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_denied_publish_is_acknowledged_and_dropped(start, clients, name, version):
    """A publish the user may not make reaches nobody; 5.0 is told 0x87 in
    PUBACK / PUBREC, 3.1.1 (which has no refusal) gets the usual
    acknowledgement; the connection stays."""
    b = start(name, users=True)
    bob = clients(b, version, "bob", "bpw")
    assert bob.sub("b/#", 1) == [1]
    alice = clients(b, version, "alice", "apw")
    assert alice.sub("a/#", 1) == [1]
    alice.pub("b/x", b"q0", 0)
    assert pub_reason(alice, "b/x", b"q1", 1) == (0x87 if version == V5 else 0)
    alice.pub("b/x", b"q2", 2)
    # the reason in PUBREC (paho does not report it)
    sock = raw_connect(b.port, version, "alice-raw", "alice", "apw")
    with sock:
        sock.sendall(raw_publish("b/x", b"raw", 2, version, 9))
        kind, _n, body = read_packet(sock)
        assert kind == 0x50 and body[:2] == b"\x00\x09"
        assert body[2:] == (b"\x87" if version == V5 else b"")
    alice.pub("a/x", b"mine", 1)
    assert alice.get().payload == b"mine"
    bob.none()


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_denied_subscriber_never_receives(start, clients, name, version):
    """fastflow refuses a filter the user may not read at SUBSCRIBE: 0x87
    (3.1.1: 0x80).  mosquitto 2.0.11 grants every filter and filters each
    delivery against the ACL.  Either way the user never gets what it may
    not read."""
    b = start(name, users=True)
    alice = clients(b, version, "alice", "apw")
    refused = (0x87 if version == V5 else 0x80) if name == "fastflow" else None
    assert alice.sub("b/#", 1) == [refused if refused else 1]
    assert alice.sub("#", 0) == [refused if refused else 0]
    assert alice.sub("r/#", 0) == [0]
    bob = clients(b, version, "bob", "bpw")
    bob.pub("b/secret", b"not for alice", 1)
    bob.pub("b/secret", b"not for alice", 0)
    alice.pub("a/x", b"hers", 1)        # (alice may read a/#: through "#" on mosquitto)
    if name == "mosquitto":
        assert alice.get().payload == b"hers"
    alice.none()


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_will_its_user_may_not_publish_is_dropped(start, clients, name, version):
    """A will on a topic its user may not publish on: the CONNECT is
    accepted, the will is not published when the connection drops."""
    b = start(name, users=True)
    bob = clients(b, version, "bob", "bpw")
    assert bob.sub("b/#", 0) == [0]
    watcher = clients(b, version, "alice", "apw")
    assert watcher.sub("a/#", 0) == [0]
    denied = clients(b, version, "alice", "apw", connect=False,
                     will=("b/will", b"denied", 0, False))
    allowed = clients(b, version, "alice", "apw", connect=False,
                      will=("a/will", b"allowed", 0, False))
    assert denied.connect().reason == 0 and allowed.connect().reason == 0
    denied.kill()
    allowed.kill()
    assert watcher.get().payload == b"allowed"
    bob.none()


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_session_of_another_user(start, clients, name, version):
    """A client id whose session belongs to another user: fastflow refuses
    the CONNECT (0x87, 3.1.1: 5), so the session is neither taken over nor
    ended, and its messages wait for their user.  mosquitto 2.0.11 lets
    the other user take the session over and filters the deliveries
    against its ACL.  Either way bob never gets alice's messages."""
    b = start(name, users=True)
    kw = {"client_id": "dev-1", "clean": False, "session_expiry": 300}
    alice = clients(b, version, "alice", "apw", **kw)
    assert alice.sub("a/#", 1) == [1]
    alice.close()
    clients(b, version, "alice", "apw").pub("a/x", b"for alice", 1)
    if name == "fastflow":
        assert connack(clients(b, version, "bob", "bpw", connect=False, **kw)) == 0x87
        back = clients(b, version, "alice", "apw", **kw)
        assert back.connack.session_present is True
        assert back.get().payload == b"for alice"
    else:
        bob = clients(b, version, "bob", "bpw", **kw)
        assert bob.connack.reason == 0
        bob.none()


def test_a_resumed_session_loses_the_filters_its_user_may_no_longer_read(start, clients):
    """The permissions changed in the config across a restart: a session's
    filter its user may no longer read is gone when the session resumes
    (a SUBSCRIBE would be refused now); the others stay."""
    user = '[[auth.users]]\nuser = "alice"\npassword = "apw"\n' \
        '[auth.users.permissions]\npublish = [">"]\nsubscribe = {}\n'
    b = start("fastflow", fastflow=user.format('["a", "a.>"]'))
    kw = {"client_id": "dev-2", "clean": False, "session_expiry": 300}
    alice = clients(b, V5, "alice", "apw", **kw)
    assert alice.sub("a/#", 1) == [1] and alice.sub("a/y", 1) == [1]
    alice.close()
    b.proc.stop()
    with open(b.proc.args[1], "w") as f:
        f.write(user.format('["a.y"]'))
    b.proc.start()
    back = clients(b, V5, "alice", "apw", **kw)
    assert back.connack.session_present is True
    p = clients(b, V5, "alice", "apw")
    p.pub("a/x", b"no longer", 1)
    p.pub("a/y", b"still", 1)
    assert back.get().payload == b"still"
    back.none()


@pytest.mark.parametrize("version", [V311, V5])
def test_shared_subscriptions_check_the_queue_group(start, clients, version):
    """``$share/<group>/<filter>`` joins queue group ``<group>``: the
    user's queue_allow / queue_deny decide, with the filter's own check.
    (mosquitto's ACL has no rule for groups.)"""
    b = start("fastflow", fastflow='[[auth.users]]\nuser = "w"\npassword = "wpw"\n'
              '[auth.users.permissions]\npublish = [">"]\n'
              'subscribe = { allow = ["s", "s.>"], queue_allow = ["g1"] }\n')
    c = clients(b, version, "w", "wpw")
    no = 0x87 if version == V5 else 0x80
    assert c.sub("$share/g1/s/#", 1) == [1]
    assert c.sub("$share/g2/s/#", 1) == [no]
    assert c.sub("$share/g1/t/#", 1) == [no]
    clients(b, version, "w", "wpw").pub("s/x", b"once", 1)
    assert c.get().payload == b"once"
    c.none()


def test_a_token_goes_in_the_password(start, clients):
    """With tokens, an MQTT client gives the token as its password (the
    user name, when it is not a user, is not looked at)."""
    b = start("fastflow", fastflow='[auth]\ntoken = "s3cret"\n')
    assert connack(clients(b, V5, "device-7", "s3cret", connect=False)) == 0
    assert connack(clients(b, V311, "", "s3cret", connect=False)) == 0
    assert connack(clients(b, V5, "device-7", "wrong", connect=False)) == 0x86
    assert connack(clients(b, V311, connect=False)) == 0x87


# -- limits -----------------------------------------------------------------------------------


def test_max_connections(start, clients):
    """A connection over max_connections is closed at once, before any
    CONNECT (its protocol version is not known, so no CONNACK could be
    right), as mosquitto 2.0.11 does; a place frees when a client leaves.
    (fastflow only: mosquitto 2.0.11 applies max_connections with
    per_listener_settings alone, and its count drifts down by one with each
    connection refused or closed before CONNECT, so it is no control here.)"""
    b = start("fastflow", fastflow="[limits]\nmax_connections = 2\n", monitor=True)
    first = clients(b, V5, client_id="one")
    clients(b, V311, client_id="two")
    for version in (V5, V311):
        with socket.create_connection(("127.0.0.1", b.port), timeout=5) as sock:
            try:
                sock.sendall(_packet(1, 0, _s("MQTT") + bytes([version, 2, 0, 60]) + (
                    b"\x00" if version == V5 else b"") + _s("three")))
            except OSError:
                pass                    # (closed before the CONNECT went)
            assert closed(sock)
    first.close()

    def admitted():
        try:
            raw_connect(b.port, V5, "four").close()
            return True
        except (AssertionError, OSError):
            return False
    assert wait_for(admitted)
    assert http_json(b.monitor, "/varz")["rejected_connections"] == 2


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_max_subscriptions(start, clients, name, version):
    """fastflow's max_subscriptions (per connection; an MQTT filter counts
    one): the filters over it get 0x97 quota exceeded (3.1.1: 0x80), the
    others are granted, a filter subscribed again is not a new one.
    mosquitto has no such limit: it grants them all."""
    b = start(name, fastflow="[limits]\nmax_subscriptions = 2\n")
    c = clients(b, version)
    _, mid = c.c.subscribe([("s/1", 0), ("s/2", 1), ("s/3", 0)])
    kind, got, codes = c.acks.get(timeout=5)
    over = (0x97 if version == V5 else 0x80) if name == "fastflow" else 0
    assert (kind, got, [x.value for x in codes]) == ("sub", mid, [0, 1, over])
    assert c.sub("s/1", 1) == [1]
    p = clients(b, version)
    p.pub("s/3", b"x", 0)
    p.pub("s/1", b"y", 0)
    if name == "fastflow":
        assert c.get().payload == b"y"
        c.none()


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_publish_over_max_payload_is_dropped(start, clients, name, version):
    """fastflow's max_payload is mosquitto's message_size_limit: a bigger
    publish is dropped, its PUBACK / PUBREC says so in 5.0 (3.1.1: the
    usual acknowledgement), QoS 0 is dropped silently; the connection
    stays.  The 5.0 reason: fastflow 0x97 quota exceeded; mosquitto 2.0.11
    sends 0x95, which is no PUBACK reason code (MQTT 5.0 3.4.2.1): paho
    takes that PUBACK for a malformed packet and reconnects."""
    b = start(name, mosquitto="message_size_limit 1000\n",
              fastflow="[limits]\nmax_payload = 1000\n")
    s = clients(b, version)
    assert s.sub("big/#", 1) == [1]
    p = clients(b, version)
    p.pub("big/0", b"z" * 1001, 0)
    reason = (b"\x97" if name == "fastflow" else b"\x95") if version == V5 else b""
    sock = raw_connect(b.port, version, "raw")
    with sock:
        for qos, kind in ((1, 0x40), (2, 0x50)):
            sock.sendall(raw_publish("big/{}".format(qos), b"z" * 1001, qos, version, 5))
            assert read_packet(sock) == (kind, 2 + len(reason), b"\x00\x05" + reason)
        sock.sendall(b"\xc0\x00")     # PINGREQ: the connection stays
        assert read_packet(sock) == (0xD0, 0, b"")
    if version == V311 or name == "fastflow":
        assert pub_reason(p, "big/1", b"z" * 1001, 1) == (0x97 if version == V5 else 0)
    p.pub("big/ok", b"z" * 1000, 1)
    m = s.get()
    assert (m.topic, len(m.payload)) == ("big/ok", 1000)
    s.none()


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_a_packet_over_the_maximum_packet_size_closes(start, clients, name, version):
    """5.0's CONNACK says the server's Maximum Packet Size (fastflow:
    max_payload + 64 KiB + 16 for the topic and properties; mosquitto:
    max_packet_size); a bigger packet gets DISCONNECT 0x95 (3.1.1: the
    close)."""
    b = start(name, mosquitto="max_packet_size 70000\n",
              fastflow="[limits]\nmax_payload = 1000\n")
    c = clients(b, V5)
    limit = c.connack.props.MaximumPacketSize
    assert limit == (70000 if name == "mosquitto" else 1000 + 65536 + 16)
    sock = raw_connect(b.port, version, "big")
    with sock:
        # a PUBLISH of the maximum, its fixed header included: taken (a
        # payload over max_payload is dropped: fastflow), the connection stays
        size = limit - 20
        size += limit - len(raw_publish("t", b"z" * size, 0, version))
        pkt = raw_publish("t", b"z" * size, 0, version)
        assert len(pkt) == limit
        sock.sendall(pkt + b"\xc0\x00")
        assert read_packet(sock) == (0xD0, 0, b"")
        # (mosquitto 2.0.11 compares the remaining length alone with its
        # maximum, fastflow the whole packet as the spec says: 16 bytes over)
        try:
            sock.sendall(raw_publish("t", b"z" * (size + 16), 0, version))
        except OSError:
            pass
        try:
            got = read_packet(sock)
        except ConnectionResetError:
            got = None
        if version == V5:
            assert got is not None and got[0] == 0xE0 and got[2][0] == 0x95
        else:
            assert got is None
        assert closed(sock)


@pytest.mark.parametrize("version", [V311, V5])
@pytest.mark.parametrize("name", BROKERS)
def test_the_session_queue_limit(start, clients, name, version):
    """[mqtt] max_queued is mosquitto's max_queued_messages: a session keeps
    that many QoS 1/2 messages for its client while it is away; the newer
    ones are dropped (and counted: /varz mqtt.dropped)."""
    b = start(name, mosquitto="max_queued_messages 3\n", fastflow="[mqtt]\nmax_queued = 3\n",
              monitor=True)
    s = clients(b, version, client_id="q1", clean=False, session_expiry=300)
    assert s.sub("q/#", 1) == [1]
    s.close()
    p = clients(b, version)
    for i in range(6):
        p.pub("q/x", b"m%d" % i, 1)
    back = clients(b, version, client_id="q1", clean=False, session_expiry=300)
    assert back.connack.session_present is True
    assert [back.get().payload for _ in range(3)] == [b"m0", b"m1", b"m2"]
    back.none()
    if name == "fastflow":
        mq = http_json(b.monitor, "/varz")["mqtt"]
        assert (mq["dropped"], mq["max_queued"]) == (3, 3)


def test_a_slow_consumer_gets_disconnect_quota_exceeded(start, clients):
    """A 5.0 subscriber that does not read: its pending output passes
    max_pending, it is cut as the other doors' slow consumers (counted in
    /varz slow_consumers) with DISCONNECT 0x97 quota exceeded after what
    was written before.  (mosquitto cuts no slow consumer: it queues up to
    max_queued_messages and drops.)"""
    b = start("fastflow", fastflow='[limits]\nmax_payload = 4096\nmax_pending = "256KiB"\n'
              'stall_timeout = "1s"\n', monitor=True)
    adv = clients(b, V5)
    assert adv.sub("$SYS/advisory/slow_consumer", 0) == [0]
    sub = raw_connect(b.port, V5, "slow", rcvbuf=4096)
    sub.sendall(_packet(8, 2, b"\x00\x01\x00" + _s("s/#") + b"\x00" + _s("t/+") + b"\x00"))
    assert read_packet(sub)[0] == 0x90
    pub = raw_connect(b.port, V5, "fast")
    chunk = raw_publish("s/x", b"p" * 4000, 0, V5) * 64
    stop = threading.Event()

    def publish():
        pub.settimeout(1)
        while not stop.is_set():
            try:
                pub.sendall(chunk)
            except socket.timeout:
                continue
            except OSError:
                return
    t = threading.Thread(target=publish, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: http_json(b.monitor, "/varz")["slow_consumers"] >= 1, 30)
    finally:
        stop.set()
        t.join(10)
        pub.close()
    last = None
    sub.settimeout(5)
    with sub:
        while True:
            got = read_packet(sub)
            if got is None:
                break
            last = got
    assert last is not None and last[0] == 0xE0 and last[2][0] == 0x97
    assert http_json(b.monitor, "/varz")["slow_consumers"] == 1
    # the advisory names its MQTT filters
    body = json.loads(adv.get().payload)
    assert body["subscriptions"] == ["s/#", "t/+"] and body["name"] == "slow"


def test_a_client_that_sends_no_connect_is_closed(start):
    """No CONNECT within auth_timeout (none at all, or one that never
    completes): closed, counted in /varz auth_failures, as on the other
    doors.  (mosquitto 2.0.11 keeps such a connection open.)"""
    b = start("fastflow", fastflow='[limits]\nauth_timeout = "0.5s"\n', monitor=True)
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as silent, \
            socket.create_connection(("127.0.0.1", b.port), timeout=5) as partial:
        partial.sendall(b"\x10\x20\x00\x04MQ")
        assert closed(silent) and closed(partial)
    assert http_json(b.monitor, "/varz")["auth_failures"] == 2


@pytest.mark.parametrize("name", BROKERS)
def test_keep_alive_zero_is_not_closed_by_the_server_ping(start, name):
    """A client with keep-alive 0 (no keep-alive, MQTT 3.1.2.10) stays
    connected while idle: the server's ping_interval / max_pings_out check
    (other doors: PING, then stale) has no PING to send an MQTT client."""
    b = start(name, fastflow='[limits]\nping_interval = "0.2s"\nmax_pings_out = 1\n')
    head = _s("MQTT") + bytes([V5, 2, 0, 0]) + b"\x00"
    with socket.create_connection(("127.0.0.1", b.port), timeout=5) as sock:
        sock.sendall(_packet(1, 0, head + _s("idle")))
        assert read_packet(sock)[0] == 0x20
        assert not closed(sock, 2)      # (the check would close it after 0.4 s)
        sock.sendall(b"\xc0\x00")
        assert read_packet(sock) == (0xD0, 0, b"")


# -- monitoring -------------------------------------------------------------------------------


def test_mqtt_connections_and_sessions_in_the_monitor(start, clients):
    """/connz lists MQTT connections (door "mqtt", client id, protocol
    level, keep-alive, subscriptions, in-flight and queued QoS 1/2
    messages); /varz and /metrics count sessions live and away, retained
    messages, queued and dropped messages."""
    b = start("fastflow", fastflow="[mqtt]\nmax_queued = 3\n", monitor=True)
    five = clients(b, V5, client_id="mon-5", keepalive=30)
    assert five.sub("m/#", 1) == [1]
    assert five.sub("n/+", 0) == [0]
    clients(b, V311, client_id="mon-3", keepalive=45)
    away = clients(b, V311, client_id="away", clean=False)
    assert away.sub("q/#", 1) == [1]
    away.close()
    # a client that takes one message at a time and acknowledges none
    slow = raw_connect(b.port, V5, "slow", props=b"\x21\x00\x01")
    slow.sendall(_packet(8, 2, b"\x00\x01\x00" + _s("m/#") + b"\x01"))
    assert read_packet(slow)[0] == 0x90
    p = clients(b, V5)
    for i in range(6):
        p.pub("m/x", b"%d" % i, 1)
    p.pub("q/x", b"kept", 1)
    p.pub("r/x", b"retained", 1, retain=True)
    assert [five.get().payload for _ in range(6)] == [b"%d" % i for i in range(6)]

    def entries():
        conns = http_json(b.monitor, "/connz?subs=1")["connections"]
        return {c.get("client_id"): c for c in conns if c["door"] == "mqtt"}
    # (and mon-5's PUBACKs, which paho sends after handing each message over)
    assert wait_for(lambda: entries()["slow"]["queued"] == 3
                    and entries()["mon-5"]["inflight"] == 0)
    got = entries()
    assert {k: got["mon-5"][k] for k in ("mqtt_version", "keepalive", "subscriptions",
                                         "inflight", "queued")} == {
        "mqtt_version": 5, "keepalive": 30, "subscriptions": 2, "inflight": 0, "queued": 0}
    assert [(s["filter"], s["qos"]) for s in got["mon-5"]["subs"]] == [("m/#", 1), ("n/+", 0)]
    assert (got["mon-3"]["mqtt_version"], got["mon-3"]["keepalive"]) == (4, 45)
    # one in flight (its Receive Maximum), three queued (max_queued), two dropped
    assert {k: got["slow"][k] for k in ("inflight", "queued", "dropped")} == {
        "inflight": 1, "queued": 3, "dropped": 2}
    assert "away" not in got
    v = http_json(b.monitor, "/varz")
    assert v["mqtt_port"] == b.port
    assert v["mqtt_connections"] == 4
    mq = v["mqtt"]
    assert {k: mq[k] for k in ("sessions", "sessions_live", "sessions_away", "retained",
                               "queued", "inflight", "dropped")} == {
        "sessions": 5, "sessions_live": 4, "sessions_away": 1, "retained": 1,
        "queued": 3 + 1, "inflight": 1, "dropped": 2}
    with urllib.request.urlopen("http://127.0.0.1:{}/metrics".format(b.monitor),
                                timeout=5) as r:
        metrics = dict(line.rsplit(" ", 1) for line in r.read().decode().splitlines()
                       if line.startswith("fastflow_mqtt_"))
    assert (metrics["fastflow_mqtt_connections"], metrics["fastflow_mqtt_sessions_away"],
            metrics["fastflow_mqtt_dropped_total"]) == ("4", "1", "2")
    slow.close()


def test_mqtt_over_websocket_counts_as_an_mqtt_connection(tmp_path):
    """/varz ``mqtt_connections`` counts the MQTT clients over WebSocket
    too (their /connz door is "ws", subprotocol "mqtt")."""
    from websockets.sync.client import connect

    http, mport = free_port(), free_port()
    proc = FastflowMqtt(free_port(), str(tmp_path), ["--http-port", str(http),
                                                     "--monitor-port", str(mport)])
    proc.start()
    try:
        with connect("ws://127.0.0.1:{}/mqtt".format(http), subprotocols=["mqtt"],
                     open_timeout=5) as ws:
            ws.send(_pkt(0x10, _s("MQTT") + b"\x04\x02\x00\x3c" + _s("over-ws")))
            assert ws.recv(timeout=5)[:1] == b"\x20"
            tcp = raw_connect(proc.port, V311, "over-tcp")
            v = http_json(mport, "/varz")
            assert v["mqtt_connections"] == 2
            doors = sorted((c["door"], c.get("subprotocol")) for c in
                           http_json(mport, "/connz")["connections"])
            assert doors == [("mqtt", None), ("ws", "mqtt")]
            tcp.close()
    finally:
        proc.stop()
