"""Conflation on every door (docs/server.md, "Conflation"), with real
clients on real sockets: the native client, nats-py, paho-mqtt and
websockets.

A slow subscriber is a real client behind a TCP relay that stops reading
from the server (a slow network): the server's socket fills up, the
connection falls behind, and its conflating subscription keeps only the
latest message per subject.  When the relay reads again the subscriber
gets, for each subject, the latest message, after the older ones that
were already on their way, never an older one after a newer one.  A fast
subscriber of the same subjects gets every message.  The server counts
``conflated`` per connection, in /varz and in /metrics.
"""

import asyncio
import base64
import json
import queue
import socket
import threading
import urllib.request

import pytest
import websockets

import fastflow.client as fc
from fastflow.protocol import Op
from fastflow.server.config import ConfigError, ServerConfig
from helpers import wait_until

SUBJECTS = ["px.a", "px.b", "px.c", "px.d"]
PAD = b"." * 8000
ROUNDS = 400                            # x 4 subjects x 8 KB: 12.8 MB past the relay
SERVER = dict(write_high_water="64KiB", write_low_water="16KiB", max_pending="64MiB",
              max_payload="64KiB")


class Relay:
    """A TCP relay to ``port`` that can stop reading from the server
    (``pause()``) while it keeps forwarding what the client sends."""

    def __init__(self, port):
        self.target = port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server = None
        self.port = None
        self.tasks = set()
        self.writers = []

    async def start(self):
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, creader, cwriter):
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (a small window)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", self.target))
        sreader, swriter = await asyncio.open_connection(sock=sock)
        self.writers += [cwriter, swriter]

        async def pipe(reader, writer, gate):
            try:
                while True:
                    if gate is not None:
                        await gate.wait()
                    data = await reader.read(4096)
                    if not data:
                        break
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                writer.close()

        for t in (pipe(creader, swriter, None), pipe(sreader, cwriter, self.flowing)):
            task = asyncio.ensure_future(t)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def pause(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    async def close(self):
        self.server.close()
        for w in self.writers:
            w.close()
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def tick(subject, i):
    return "{}:{}:".format(subject, i).encode() + PAD


def parse(data):
    subject, i, _ = bytes(data).split(b":", 2)
    return subject.decode(), int(i)


async def publish_rounds(pub, start, rounds):
    for i in range(start, start + rounds):
        for s in SUBJECTS:
            pub.publish(s, tick(s, i))
        if i % 20 == 0:
            await pub.flush()
    await pub.flush()


def check_latest(got, last_round, total_published):
    """``got``: (subject, i) in the order received by the slow subscriber."""
    seen = {}
    for subject, i in got:
        assert i > seen.get(subject, -1), "an older message of {} after a newer one".format(
            subject)
        seen[subject] = i
    assert seen == {s: last_round for s in SUBJECTS}
    assert len(got) < total_published, "nothing was conflated"


async def slow_then_fast(srv, pub, got, got_fast, relay):
    """Pause the relay, publish until the server conflates, publish the
    last round, resume; wait for the latest of every subject."""
    relay.pause()
    n = 0
    while srv.stats()["conflated"] == 0 and n < ROUNDS * 4:
        await publish_rounds(pub, n, 50)
        n += 50
        await asyncio.sleep(0.01)
    assert srv.stats()["conflated"] > 0, "the connection never fell behind"
    await publish_rounds(pub, n, 50)    # more while it is behind
    n += 50
    last = n - 1
    relay.resume()
    await wait_until(lambda: all((s, last) in got for s in SUBJECTS), 30,
                     "the latest of every subject")
    await wait_until(lambda: len(got_fast) == n * len(SUBJECTS), 30, "every message")
    # nothing lost that was not superseded
    assert len(got) + srv.stats()["conflated"] == n * len(SUBJECTS)
    check_latest(got, last, n * len(SUBJECTS))
    assert sorted(got_fast) == sorted((s, i) for i in range(n) for s in SUBJECTS)
    return n


def _get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=10) as r:
        return r.read().decode()


# -- native ------------------------------------------------------------------------------


def test_native_conflating_subscriber(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, **SERVER) as srv:
            relay = await Relay(srv.port).start()
            try:
                slow = await fc.connect("fastflow://127.0.0.1:{}".format(relay.port),
                                        name="slow")
                fast = await fc.connect(srv.url, name="fast")
                pub = await fc.connect(srv.url, name="pub")
                got, got_fast = [], []
                slow.subscribe("px.>", lambda s, r, d: got.append(parse(d)), raw=True,
                               conflate=True)
                fast.subscribe("px.>", lambda s, r, d: got_fast.append(parse(d)), raw=True)
                await slow.flush()
                await fast.flush()
                await slow_then_fast(srv, pub, got, got_fast, relay)
                st = srv.stats()
                assert st["conflated"] > 0 and st["slow_consumers"] == 0
                assert st["paused_publishers"] == 0     # a conflating subscriber stalls nobody
                (cs,) = [c.stats(0, subs=True) for c in srv.conns.values() if c.name == "slow"]
                assert cs["conflated"] == st["conflated"]
                assert cs["subs"][0]["conflate"] is True
                assert cs["subs"][0]["conflated"] == st["conflated"]
                (cf,) = [c.stats(0, subs=True) for c in srv.conns.values() if c.name == "fast"]
                assert cf["conflated"] == 0 and cf["subs"][0]["conflate"] is False
                varz = json.loads(await asyncio.to_thread(_get, srv.monitor_port, "/varz"))
                assert varz["conflated"] == st["conflated"]
                assert varz["flow"]["conflated"] == st["conflated"]
                metrics = await asyncio.to_thread(_get, srv.monitor_port, "/metrics")
                assert "# TYPE fastflow_conflated_total counter" in metrics
                assert "\nfastflow_conflated_total {}\n".format(st["conflated"]) in metrics
                for c in (slow, fast, pub):
                    await c.close()
            finally:
                await relay.close()

    aloop(main)


def test_native_client_queue_conflates(aloop, ffserver):
    """The client's own queue (an iterator read late) keeps the latest per subject."""
    async def main():
        async with ffserver() as srv:
            async with await fc.connect(srv.url) as c:
                sub = c.subscribe("px.>", conflate=True)
                await c.flush()
                for i in range(50):
                    for s in SUBJECTS:
                        c.publish(s, tick(s, i))
                await c.flush()
                await wait_until(lambda: sub.stats()["delivered"] == 200, 10, "the messages")
                got = [parse((await sub.next(1)).data) for _ in SUBJECTS]
                assert got == [(s, 49) for s in SUBJECTS]
                assert sub.stats()["conflated"] == 196 and sub.pending == 0

    aloop(main)


def test_native_sub_flags_checked(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await fc.connect(srv.url) as c:
                errors = []
                c._report = errors.append
                c._send(Op.SUB, 4, 99, "px.>", b"", b"")
                await c.flush()
                await wait_until(lambda: errors, 5, "the refusal")
                assert "SUB: unknown flags 0x4 (known: CONFLATE = 0x1)" in str(errors[0])

    aloop(main)


# -- NATS ----------------------------------------------------------------------------------


def test_nats_conflate_subjects(aloop, ffserver, free_port):
    nats = pytest.importorskip("nats")

    async def main():
        async with ffserver(nats_port=free_port(), conflate_subjects=["px.>"],
                            **SERVER) as srv:
            relay = await Relay(srv.nats_port).start()
            try:
                slow = await nats.connect("nats://127.0.0.1:{}".format(relay.port),
                                          name="slow", pending_size=64 << 20)
                fast = await nats.connect("nats://127.0.0.1:{}".format(srv.nats_port),
                                          name="fast", pending_size=64 << 20)
                pub = await fc.connect(srv.url, name="pub")
                got, got_fast = [], []

                async def on_slow(m):
                    got.append(parse(m.data))

                async def on_fast(m):
                    got_fast.append(parse(m.data))

                await slow.subscribe("px.>", cb=on_slow, pending_msgs_limit=1 << 20,
                                     pending_bytes_limit=1 << 30)
                # (also inside [conflate] subjects: never behind, it gets everything)
                await fast.subscribe("px.>", cb=on_fast, pending_msgs_limit=1 << 20,
                                     pending_bytes_limit=1 << 30)
                await slow.flush()
                await fast.flush()
                await slow_then_fast(srv, pub, got, got_fast, relay)
                assert srv.stats()["slow_consumers"] == 0
                await slow.close()
                await fast.close()
                await pub.close()
            finally:
                await relay.close()

    aloop(main)


def test_conflate_config_is_checked():
    with pytest.raises(ConfigError, match=r"conflate.subjects: invalid pattern 'px..a'"):
        ServerConfig(conflate_subjects=["px..a"])
    with pytest.raises(ConfigError, match="conflate.subjects: expected a list of non-empty "
                                          "strings, got 3"):
        ServerConfig(conflate_subjects=3)
    from fastflow.server.config import config_from_dict

    assert config_from_dict({"conflate": {"subjects": ["px.>"]}}) == {
        "conflate_subjects": ["px.>"]}
    with pytest.raises(ConfigError, match="unknown key 'subject'"):
        config_from_dict({"conflate": {"subject": ["px.>"]}})


# -- WebSocket and SSE ---------------------------------------------------------------------


def test_websocket_conflate_query(aloop, ffserver, free_port):
    async def main():
        async with ffserver(http_port=free_port(), **SERVER) as srv:
            relay = await Relay(srv.http_port).start()
            try:
                got, got_fast = [], []

                async def read(ws, into):
                    try:
                        async for text in ws:
                            ev = json.loads(text)
                            if "data_base64" in ev:
                                into.append(parse(base64.b64decode(ev["data_base64"])))
                    except websockets.ConnectionClosed:
                        pass

                slow = await websockets.connect(
                    "ws://127.0.0.1:{}/ws?subject=px.>&conflate=1".format(relay.port),
                    subprotocols=["cloudevents.json"], max_size=None, max_queue=None)
                fast = await websockets.connect(
                    "ws://127.0.0.1:{}/ws?subject=px.>".format(srv.http_port),
                    subprotocols=["cloudevents.json"], max_size=None, max_queue=None)
                readers = [asyncio.ensure_future(read(slow, got)),
                           asyncio.ensure_future(read(fast, got_fast))]
                await wait_until(lambda: len(
                    [c for c in srv.conns.values() if c.door == "ws"]) == 2, 5, "2 sockets")
                pub = await fc.connect(srv.url, name="pub")
                await asyncio.sleep(0.1)
                await slow_then_fast(srv, pub, got, got_fast, relay)
                await slow.close()
                await fast.close()
                await pub.close()
                await asyncio.gather(*readers)
                # a bad value: 400 naming it
                with pytest.raises(websockets.InvalidStatus) as ei:
                    await websockets.connect(
                        "ws://127.0.0.1:{}/ws?subject=px.>&conflate=maybe".format(
                            srv.http_port), subprotocols=["cloudevents.json"])
                assert ei.value.response.status_code == 400
                assert b"?conflate is 1, true, 0 or false, got 'maybe'" in ei.value.response.body
            finally:
                await relay.close()

    aloop(main)


def test_websocket_subscribe_op_conflate(aloop, ffserver, free_port):
    async def main():
        async with ffserver(http_port=free_port()) as srv:
            async with websockets.connect(
                    "ws://127.0.0.1:{}/ws".format(srv.http_port),
                    subprotocols=["cloudevents.json"]) as ws:
                await ws.send(json.dumps({"op": "subscribe", "subject": "px.>",
                                          "conflate": True}))
                assert json.loads(await ws.recv())["op"] == "ok"
                (conn,) = [c for c in srv.conns.values() if c.door == "ws"]
                assert [e[0].conflate for e in conn.subs.values()] == [True]
                await ws.send(json.dumps({"op": "subscribe", "subject": "px.>", "sid": 2,
                                          "conflate": "often"}))
                answer = json.loads(await ws.recv())
                assert answer["op"] == "error" or answer.get("code") == 400, answer
                assert "'conflate' is 1, true, 0 or false, got 'often'" in json.dumps(answer)

    aloop(main)


def test_sse_conflate_query(aloop, ffserver, free_port):
    async def main():
        async with ffserver(http_port=free_port()) as srv:
            async def get(query):
                r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
                w.write("GET /events/px.%3E?{} HTTP/1.1\r\nHost: x\r\nAccept: "
                        "text/event-stream\r\n\r\n".format(query).encode())
                head = await r.readuntil(b"\r\n\r\n")
                return r, w, head

            r, w, head = await get("conflate=true")
            assert head.startswith(b"HTTP/1.1 200")
            await wait_until(lambda: any(c.subs for c in srv.conns.values()), 5, "the SSE sub")
            (conn,) = [c for c in srv.conns.values() if c.subs]
            assert [e[0].conflate for e in conn.subs.values()] == [True]
            w.close()
            r, w, head = await get("conflate=2")
            assert head.startswith(b"HTTP/1.1 400")
            body = await r.read(4096)
            assert b"query parameter 'conflate' is 1, true, 0 or false, got '2'" in body
            w.close()

    aloop(main)


# -- MQTT ----------------------------------------------------------------------------------


class Paho:
    """A paho-mqtt 5 client (its own thread) that subscribes with or
    without the conflate user property."""

    def __init__(self, port, conflate=None):
        import paho.mqtt.client as mqtt

        self.msgs = queue.Queue()
        self.acks = queue.Queue()
        self.connected = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.c.on_message = lambda c, u, m: self.msgs.put(m.payload)
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_subscribe = lambda c, u, mid, codes, props: self.acks.put((codes, props))
        self.conflate = conflate
        self.c.connect("127.0.0.1", port, 60)
        self.c.loop_start()

    def subscribe(self, topic):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = None
        if self.conflate is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.UserProperty = ("conflate", self.conflate)
        self.c.subscribe(topic, 0, properties=props)
        codes, props = self.acks.get(timeout=5)
        return [c.value for c in codes], props

    def drain(self, into):
        while True:
            try:
                into.append(parse(self.msgs.get_nowait()))
            except queue.Empty:
                return

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_mqtt_conflate_user_property(aloop, ffserver, free_port):
    pytest.importorskip("paho.mqtt.client")

    async def main():
        async with ffserver(mqtt_port=free_port(), **SERVER) as srv:
            relay = await Relay(srv.mqtt_port).start()
            slow = fast = None
            try:
                slow = await asyncio.to_thread(Paho, relay.port, "1")
                fast = await asyncio.to_thread(Paho, srv.mqtt_port)
                assert (await asyncio.to_thread(slow.subscribe, "px/#"))[0] == [0]
                assert (await asyncio.to_thread(fast.subscribe, "px/#"))[0] == [0]
                pub = await fc.connect(srv.url, name="pub")
                got, got_fast = [], []
                stop = asyncio.Event()

                async def pump():
                    while not stop.is_set():
                        slow.drain(got)
                        fast.drain(got_fast)
                        await asyncio.sleep(0.005)

                p = asyncio.ensure_future(pump())
                await slow_then_fast(srv, pub, got, got_fast, relay)
                stop.set()
                await p
                await pub.close()
                bad = await asyncio.to_thread(Paho, srv.mqtt_port, "sometimes")
                codes, props = await asyncio.to_thread(bad.subscribe, "px/#")
                assert codes == [0x83]
                assert props.ReasonString == ("user property conflate is 1, true, 0 or false, "
                                              "got 'sometimes'")
                await asyncio.to_thread(bad.close)
            finally:
                for c in (slow, fast):
                    if c is not None:
                        await asyncio.to_thread(c.close)
                await relay.close()

    aloop(main)
