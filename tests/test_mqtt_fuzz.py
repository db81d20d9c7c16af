"""Fuzzing the MQTT door over real sockets, on both cores: malformed
remaining lengths, truncated packets, bad UTF-8 and U+0000 in strings,
reserved flag bits, packet ids of 0, QoS 3, MQTT 5 properties repeated or
not allowed in their packet, random bytes after a valid CONNECT, a flood of
PUBLISH from one client.

Each case gets a clear reason code (MQTT 5: a DISCONNECT with a reason of
0x80 or more; a CONNACK refusal before the session) or a close, never a
crash; and the victims, an MQTT client and a NATS client connected to the
same ``fastflow serve`` (a child process: FASTFLOW_NO_EXTENSIONS=1 for the
pure-Python core), keep being served: a message round-trips after every
case (MQTT -> MQTT and NATS subscribers, NATS -> NATS).

The hypothesis tests run a few examples by default; their ``slow``
variants (``pytest -m slow``) run many.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CORES
from peers import REPO, free_port

TIMEOUT = 10.0

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 8, 9
DISCONNECT = 14


# -- packets ----------------------------------------------------------------------------

def vbi(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + vbi(len(body)) + body


def s16(b):
    return len(b).to_bytes(2, "big") + b


def props(block=b""):
    return vbi(len(block)) + block


def connect(cid=b"fuzz", version=4, flags=0x02, block=b""):
    var = s16(b"MQTT") + bytes([version, flags]) + (60).to_bytes(2, "big")
    if version == 5:
        var += props(block)
    return packet(0x10, var + s16(cid))


def publish(topic, payload=b"x", qos=0, pid=1, version=4, flags=None, block=b""):
    var = s16(topic) + (pid.to_bytes(2, "big") if qos else b"")
    if version == 5:
        var += props(block)
    return packet(0x30 | (qos << 1 if flags is None else flags), var + payload)


def subscribe(filt, pid=1, version=4, first=0x82, block=b""):
    var = pid.to_bytes(2, "big") + (props(block) if version == 5 else b"")
    return packet(first, var + s16(filt) + b"\x00")


class Client:
    """A raw socket speaking MQTT packets (or anything else)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return False
        self.buf += chunk
        return True

    def packet(self, deadline):
        """The next packet (first byte, body), or None at the end of the stream."""
        while True:
            b = self.buf
            n, shift, i = 0, 0, 1
            while i < len(b) and i <= 4:
                n |= (b[i] & 0x7F) << shift
                shift += 7
                if not b[i] & 0x80:
                    break
                i += 1
            else:
                i = None
            if i is not None and i < len(b) and len(b) >= i + 1 + n:
                first, body = b[0], b[i + 1:i + 1 + n]
                self.buf = b[i + 1 + n:]
                return first, body
            if not self._fill(deadline):
                return None

    def until_closed(self, timeout=TIMEOUT):
        """Every packet the server sends until it closes; fails if it does not
        close within ``timeout``."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                p = self.packet(deadline)
            except (socket.timeout, TimeoutError):
                pytest.fail("the server kept the connection open; it sent {}".format(got))
            if p is None:
                return got
            got.append(p)

    def handshake(self, version=4, cid=b"fuzz"):
        self.send(connect(cid, version))
        p = self.packet(time.monotonic() + TIMEOUT)
        assert p is not None and p[0] >> 4 == CONNACK, p
        assert p[1][1] == 0, p
        return self

    def close(self):
        self.sock.close()


# -- the server and its victims ------------------------------------------------------------

class Door:
    """``fastflow serve`` with its MQTT and NATS doors (a child process on the
    core under test), an MQTT victim subscribed to victim/t and a NATS victim
    subscribed to victim.t and victim.n."""

    def __init__(self, core, directory):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("FASTFLOW_NO_EXTENSIONS", None)
        if not core.COMPILED:
            env["FASTFLOW_NO_EXTENSIONS"] = "1"
        self.mqtt_port, self.nats_port = free_port(), free_port()
        self.log_path = os.path.join(directory, "ff.log")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--port", "0", "--monitor-port", "0",
             "--mqtt-port", str(self.mqtt_port), "--nats-port", str(self.nats_port),
             "--log-level", "warning"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 30
        for port in (self.mqtt_port, self.nats_port):
            while True:
                assert self.proc.poll() is None, self.log()
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the doors did not open: " + self.log()
                    time.sleep(0.05)
        self.mqtt = Client(self.mqtt_port).handshake(4, b"victim")
        self.mqtt.send(subscribe(b"victim/t"))
        p = self.mqtt.packet(time.monotonic() + TIMEOUT)
        assert p is not None and p[0] >> 4 == SUBACK and p[1][2:] == b"\x00", p
        self.nats = socket.create_connection(("127.0.0.1", self.nats_port), timeout=TIMEOUT)
        self.nats_buf = b""
        self._nats_until(b"\r\n")               # INFO
        self.nats.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n'
                          b"SUB victim.t 1\r\nSUB victim.n 2\r\nPING\r\n")
        self._nats_until(b"PONG\r\n")
        self.rounds = 0

    def log(self):
        with open(self.log_path) as f:
            return f.read()[-3000:]

    def _nats_until(self, marker):
        deadline = time.monotonic() + TIMEOUT
        while marker not in self.nats_buf:
            self.nats.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.nats.recv(65536)
            assert chunk, "the NATS victim was disconnected"
            self.nats_buf += chunk
        head, _, self.nats_buf = self.nats_buf.partition(marker)
        return head

    def round_trip(self):
        """MQTT -> the MQTT and NATS victims, NATS -> the NATS victim."""
        assert self.proc.poll() is None, "fastflow serve exited: " + self.log()
        self.rounds += 1
        tag = b"rt-%d" % self.rounds
        self.mqtt.send(publish(b"victim/t", tag))
        deadline = time.monotonic() + TIMEOUT
        while True:
            p = self.mqtt.packet(deadline)
            assert p is not None, "the MQTT victim was disconnected: " + self.log()
            if p[0] >> 4 == PUBLISH and p[1].endswith(tag):
                break
        self._nats_until(b"\r\n" + tag + b"\r\n")
        self.nats.sendall(b"PUB victim.n %d\r\n%s\r\n" % (len(tag), tag))
        self._nats_until(b"\r\n" + tag + b"\r\n")

    def stop(self):
        self.mqtt.close()
        self.nats.close()
        alive = self.proc.poll() is None
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        return alive


@pytest.fixture(scope="module", params=list(CORES.values()), ids=list(CORES))
def door(request, tmp_path_factory):
    """One server per core for the module: what one case leaves behind is
    there for the next ones (and the victims stay connected throughout)."""
    d = Door(request.param, str(tmp_path_factory.mktemp("mqtt-fuzz")))
    try:
        d.round_trip()
        yield d
    finally:
        assert d.stop(), "fastflow serve died: " + d.log()


def attack(door, data, version=None, half_close=False, timeout=TIMEOUT):
    """A new connection (after a valid CONNECT of ``version`` if given) sends
    ``data``; the packets the server sends until it closes (the CONNACK
    left out).  ``half_close``: end the stream after ``data`` (a truncated
    packet waits for more otherwise)."""
    c = Client(door.mqtt_port)
    try:
        if version:
            c.handshake(version)
        if data:
            c.send(data)
        if half_close:
            c.sock.shutdown(socket.SHUT_WR)
        return c.until_closed(timeout)
    except (BrokenPipeError, ConnectionResetError):
        return []                               # closed while we were sending
    finally:
        c.close()


def assert_refused(got, version):
    """After an MQTT 5 CONNACK: the last packet is a DISCONNECT with a
    failure reason; otherwise (3.1.1, or a bad CONNECT: ``version`` None) a
    close, or a CONNACK refusal first."""
    if version == 5:
        assert got, "MQTT 5: closed without a DISCONNECT"
        first, body = got[-1]
        kind = first >> 4
        assert kind in (DISCONNECT, CONNACK), got
        reason = body[0] if kind == DISCONNECT else body[1]
        assert reason >= 0x80, got
    else:
        for first, body in got:
            assert first >> 4 == CONNACK and body[1] != 0, got


# -- the cases ----------------------------------------------------------------------------

V5_BAD_PROPS = {
    # payload format indicator twice
    "repeated property": b"\x01\x00\x01\x01",
    # session expiry interval: a CONNECT property, not a PUBLISH one
    "property not allowed": b"\x11\x00\x00\x00\x05",
    # an identifier that does not exist
    "unknown property": b"\x7f\x00",
    # a length that runs past the block
    "property longer than its block": b"\x03\x00\x10ab",
}

CASES = {  # name: (version of the CONNECT before, the bytes)
    "5-byte remaining length": (5, b"\x30\xff\xff\xff\xff\x7f"),
    "5-byte remaining length, 3.1.1": (4, b"\x30\x80\x80\x80\x80\x01"),
    "5-byte remaining length before CONNECT": (None, b"\x10\xff\xff\xff\xff\x7f"),
    "remaining length of 256 MiB": (5, b"\x30\xff\xff\xff\x7f" + b"\x00" * 1000),
    "remaining length of 256 MiB, 3.1.1": (4, b"\x32\xff\xff\xff\x7f" + b"\x00" * 1000),
    "CONNECT of 256 MiB": (None, b"\x10\xff\xff\xff\x7f" + connect()[2:]),
    "remaining length shorter than the data": (5, b"\x30\x03" + publish(b"a/b", version=5)[2:]),
    "CONNECT with a remaining length too short": (None, b"\x10\x05" + connect()[2:]),
    "bad UTF-8 topic": (5, publish(b"a/\xff\xfe", version=5)),
    "bad UTF-8 topic, 3.1.1": (4, publish(b"a/\xc3\x28")),
    "surrogate in a topic": (5, publish(b"a/\xed\xa0\x80", version=5)),
    "U+0000 in a topic": (5, publish(b"a/\x00b", version=5)),
    "U+0000 in a topic, 3.1.1": (4, publish(b"a/\x00b")),
    "U+0000 in a filter": (5, subscribe(b"a/\x00/#", version=5)),
    "U+0000 in the client id": (None, connect(b"a\x00b", 5)),
    "bad UTF-8 client id": (None, connect(b"\xff", 5)),
    "SUBSCRIBE with flags 0": (5, subscribe(b"a/b", version=5, first=0x80)),
    "SUBSCRIBE with flags 0, 3.1.1": (4, subscribe(b"a/b", first=0x80)),
    "PUBREL with flags 0": (5, b"\x60\x02\x00\x01"),
    "PINGREQ with a flag": (5, b"\xc1\x00"),
    "PINGREQ with a body": (5, b"\xc0\x01\x00"),
    "DISCONNECT with a flag": (4, b"\xe2\x00"),
    "reserved CONNECT flag": (None, connect(version=5, flags=0x03)),
    "reserved CONNECT flag, 3.1.1": (None, connect(version=4, flags=0x03)),
    "SUBSCRIBE packet id 0": (5, subscribe(b"a/b", pid=0, version=5)),
    "UNSUBSCRIBE packet id 0": (5, packet(0xA2, b"\x00\x00\x00" + s16(b"a/b"))),
    "PUBLISH QoS 1 packet id 0": (5, publish(b"a/b", qos=1, pid=0, version=5)),
    "PUBLISH QoS 2 packet id 0, 3.1.1": (4, publish(b"a/b", qos=2, pid=0)),
    "PUBLISH QoS 3": (5, publish(b"a/b", version=5, flags=0b0110)),
    "PUBLISH QoS 3, 3.1.1": (4, publish(b"a/b", flags=0b0110)),
    "PUBLISH QoS 0 with DUP": (5, publish(b"a/b", version=5, flags=0b1000)),
    "SUBSCRIBE QoS 3": (5, packet(0x82, b"\x00\x01\x00" + s16(b"a/b") + b"\x03")),
    "SUBSCRIBE reserved option bits": (5, packet(0x82, b"\x00\x01\x00" + s16(b"a/b") + b"\xc0")),
    "SUBSCRIBE without a filter": (5, packet(0x82, b"\x00\x01\x00")),
    "wildcard in a PUBLISH topic": (5, publish(b"a/+/b", version=5)),
    "empty topic without an alias": (5, publish(b"", version=5)),
    "second CONNECT": (5, connect(b"again", 5)),
    "PUBLISH before CONNECT": (None, publish(b"a/b")),
    "packet type 0": (5, b"\x00\x00"),
    "packet type 15 (AUTH) in 3.1.1": (4, b"\xf0\x00"),
    "CONNACK from a client": (5, b"\x20\x03\x00\x00\x00"),
    "unknown protocol name": (None, packet(0x10, s16(b"MQTX") + b"\x04\x02\x00\x3c"
                                            + s16(b"x"))),
}
for _name, _block in V5_BAD_PROPS.items():
    CASES["PUBLISH: " + _name] = (5, publish(b"a/b", version=5, block=_block))
CASES["CONNECT: repeated property"] = (None, connect(version=5, block=b"\x21\x00\x0a\x21\x00\x0a"))
CASES["CONNECT: property not allowed"] = (None, connect(version=5, block=b"\x23\x00\x01"))


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_packet(door, name):
    version, data = CASES[name]
    got = attack(door, data, version)
    assert_refused(got, version)
    door.round_trip()


TRUNCATED = {
    "CONNECT cut": connect(b"cut", 5)[:9],
    "CONNECT longer than its data": b"\x10\x7f" + connect()[2:],
    "remaining length cut": b"\x10\xff",
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_connect(door, name):
    """A CONNECT cut short, then the end of the stream: a close."""
    assert attack(door, TRUNCATED[name], half_close=True) == []
    door.round_trip()


@pytest.mark.parametrize("version", [4, 5])
def test_truncated_packets(door, version):
    """Every prefix of a few packets after a CONNECT, then the end of the
    stream: a close (nothing but the packets' own answers on the way)."""
    whole = [publish(b"t/a", b"payload", version=version),
             publish(b"t/a", b"p", qos=1, pid=7, version=version),
             subscribe(b"t/#", pid=3, version=version)]
    for p in whole:
        for cut in range(1, len(p)):
            attack(door, p[:cut], version, half_close=True)
        door.round_trip()


@pytest.mark.parametrize("version", [4, 5])
def test_remaining_length_longer_than_data(door, version):
    """A PUBLISH whose remaining length promises more than comes: the door
    waits for the rest, and closes at the end of the stream."""
    p = publish(b"t/a", b"abc", version=version)
    lie = p[:1] + vbi(len(p) + 100) + p[2:]
    got = attack(door, lie, version, half_close=True)
    assert [k for k, _ in got if k >> 4 == PUBLISH] == []
    door.round_trip()


@pytest.mark.parametrize("version", [4, 5])
def test_flood_of_publish(door, version):
    """One client sends 45,000 PUBLISH (QoS 0, 1 and 2, the acks unread, no
    PUBREL) while the victims keep round-tripping."""
    flooder = Client(door.mqtt_port).handshake(version, b"flooder")
    chunk = b"".join(publish(b"flood/%d" % (i % 50), b"x" * 64, version=version)
                     for i in range(1000))
    chunk += b"".join(publish(b"flood/q1", b"y" * 16, qos=1, pid=i + 1, version=version)
                      for i in range(1000))
    chunk += b"".join(publish(b"flood/q2", b"z" * 16, qos=2, pid=i + 1, version=version)
                      for i in range(1000))
    errors = []

    def flood():
        try:
            for _ in range(15):
                flooder.send(chunk)
        except OSError as exc:                  # cut as a slow consumer: allowed
            errors.append(exc)

    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        while t.is_alive():
            door.round_trip()
        t.join(TIMEOUT)
        door.round_trip()
    finally:
        flooder.close()


@pytest.mark.parametrize("version", [4, 5])
def test_many_bad_connections_in_a_row(door, version):
    """200 connections that each send a malformed PUBLISH after CONNECT: no
    growth of anything that stops the door (the victims round-trip)."""
    bad = publish(b"a/b", flags=0b0110, version=version)
    data = connect(b"", version) + bad
    for _ in range(200):
        c = Client(door.mqtt_port)
        try:
            c.send(data)
            c.until_closed()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            c.close()
    door.round_trip()


# -- random bytes ---------------------------------------------------------------------------

def _junk_after_connect(door, version, junk):
    got = attack(door, junk, version, half_close=True)
    for first, body in got:
        if first >> 4 == DISCONNECT:
            assert version != 4 and body and body[0] >= 0x80, got
    door.round_trip()


_JUNK = st.one_of(
    st.binary(min_size=1, max_size=80),
    # a plausible fixed header (any type and flags, a small length) and random body
    st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
        lambda t: bytes([t[0]]) + vbi(len(t[1])) + t[1]),
    # a valid PUBLISH with random bytes spliced in
    st.tuples(st.integers(0, 20), st.binary(min_size=1, max_size=8)).map(
        lambda t: (lambda p: p[:t[0]] + t[1] + p[t[0]:])(publish(b"t/junk", b"data", qos=1))),
    # an MQTT 5 PUBLISH or SUBSCRIBE with a random property block
    st.binary(max_size=24).map(lambda b: publish(b"t/junk", b"d", qos=1, version=5, block=b)),
    st.binary(max_size=24).map(lambda b: subscribe(b"t/#", version=5, block=b)),
    # a SUBSCRIBE with a random filter and options
    st.tuples(st.binary(max_size=12), st.integers(0, 255)).map(
        lambda t: packet(0x82, b"\x00\x01" + s16(t[0]) + bytes([t[1]]))),
)


def _junk_test(max_examples):
    """Random bytes on a new connection (``version`` None), or after a
    CONNECT of 3.1.1 or 5, then the end of the stream."""
    @settings(max_examples=max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(version=st.sampled_from([None, 4, 5]), junk=_JUNK)
    def run(door, version, junk):
        _junk_after_connect(door, version, junk)
    return run


test_random_bytes_after_connect = _junk_test(25)
test_random_bytes_after_connect_many = pytest.mark.slow(_junk_test(400))
