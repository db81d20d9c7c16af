"""The WebSocket door (docs/http.md, "WebSocket") end to end with the real
``websockets`` client library, and with a raw socket where a test must
break RFC 6455 on purpose: the handshake and its refusals, both
subprotocols (``cloudevents.json`` and ``fastflow``), subscriptions from
the URL and from control messages with queue groups, publishing over the
socket, events from the other doors (HTTP POST, the native client, NATS)
arriving in order, slow consumers, every close code, auth and
permissions, and the drain at stop.

Async tests run under the standard loop and uvloop (``aloop``) against an
in-process server (``ffserver``) with its HTTP door on a free port.
"""

import asyncio
import base64
import json
import os
import random
import struct
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

import fastflow.client as fc
from fastflow import Event, Flow
from fastflow.event import to_json

from helpers import RawConnection, wait_until
from peers import free_port

HEAD = struct.Struct("<IBBHIHH")        # the native frame head (docs/protocol.md)
OP = {"INFO": 1, "CONNECT": 2, "PUB": 3, "SUB": 6, "UNSUB": 7, "MSG": 8, "PING": 9,
      "PONG": 10, "OK": 11, "ERR": 12}
CE = {"specversion": "1.0", "source": "/tests", "datacontenttype": "application/json"}


def native_frame(op, flags=0, fid=0, subject=b"", body=b""):
    s = subject.encode() if isinstance(subject, str) else subject
    return HEAD.pack(12 + len(s) + len(body), 1, op, flags, fid, len(s), 0) + s + body


def native_frames(buf):
    """The complete native frames at the start of ``buf`` (op, id, subject,
    body) and what is left."""
    out = []
    while len(buf) >= 16:
        size = struct.unpack_from("<I", buf)[0]
        if len(buf) < size + 4:
            break
        _, _v, op, _flags, fid, sn, rn = HEAD.unpack_from(buf)
        out.append((op, fid, bytes(buf[16:16 + sn]), bytes(buf[16 + sn + rn:size + 4])))
        buf = buf[size + 4:]
    return out, buf


def event(i, type_="t.a", **more):
    return json.dumps(dict(CE, id=str(i), type=type_, data={"n": i}, **more))


def ws_url(srv, query=""):
    return "ws://127.0.0.1:{}/ws{}".format(srv.http_port, query)


def ws_connect(srv, query="", **kw):
    """A ``websockets`` client of ``srv``'s /ws.  It queues what it
    receives without a bound (``max_queue``): with its default bound it
    stops reading when a test leaves messages unread, and then its close
    handshake waits for ``close_timeout`` (websockets issue #1555)."""
    kw.setdefault("max_queue", None)
    kw.setdefault("close_timeout", 2)
    return websockets.connect(ws_url(srv, query), **kw)


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def closed_with(ws, timeout=5.0):
    """The close frame the server sent (code, reason), reading what came before it."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        assert exc.rcvd is not None, "closed without a close frame: {!r}".format(exc)
        return exc.rcvd.code, exc.rcvd.reason


class RawWs(RawConnection):
    """A WebSocket client by hand: the handshake, then frames cut here
    (server -> client: unmasked), so that a test can send what no client
    library would (unmasked frames, bad UTF-8, random bytes)."""

    what = "WebSocket frame"

    @classmethod
    async def connect(cls, port, path="/ws", headers=(), expect=101, **kw):
        c = await cls.open(port, **kw)
        status, hs, body = await c.request(path, headers)
        assert status == expect, (status, hs, body)
        return c

    async def request(self, path="/ws", headers=(), handshake=True):
        """Send a handshake (``headers`` added; a None value leaves the
        default out) and read the answer: (status, headers, body)."""
        base = {"host": "127.0.0.1", "upgrade": "websocket", "connection": "Upgrade",
                "sec-websocket-key": base64.b64encode(os.urandom(16)).decode(),
                "sec-websocket-version": "13"} if handshake else {"host": "127.0.0.1"}
        for k, v in headers:
            base[k.lower()] = v
        lines = ["GET {} HTTP/1.1".format(path)] + ["{}: {}".format(k, v)
                                                    for k, v in base.items() if v is not None]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in self.buf:
            assert not self.eof, "closed before the answer: {!r}".format(self.buf)
            await self._fill(max(0.01, deadline - time.monotonic()))
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            hs.setdefault(k.strip().lower(), v.strip())
        n = int(hs.get("content-length", 0))
        while len(self.buf) < n and not self.eof:
            await self._fill(max(0.01, deadline - time.monotonic()))
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hs, body

    @staticmethod
    def frame(opcode, payload=b"", fin=True, mask=True):
        n = len(payload)
        head = bytes(((0x80 if fin else 0) | opcode,))
        m = 0x80 if mask else 0
        if n < 126:
            head += bytes((m | n,))
        elif n < 65536:
            head += bytes((m | 126,)) + struct.pack("!H", n)
        else:
            head += bytes((m | 127,)) + struct.pack("!Q", n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

    def _cut(self):
        b = self.buf
        if len(b) < 2:
            return None
        n = b[1] & 0x7F
        off = 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = struct.unpack_from("!H", b, 2)[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = struct.unpack_from("!Q", b, 2)[0], 10
        assert not b[1] & 0x80, "a server frame must not be masked"
        if len(b) < off + n:
            return None
        self.buf = b[off + n:]
        return b[0] & 0x0F, bool(b[0] & 0x80), bytes(b[off:off + n])

    async def close_code(self, timeout=5.0):
        """Frames until the close frame: (code, reason, frames before it)."""
        before = []
        while True:
            f = await self.next(timeout)
            assert f is not None, "the connection ended without a close frame"
            if f[0] == 8:
                code = struct.unpack_from("!H", f[2])[0] if len(f[2]) >= 2 else None
                return code, f[2][2:].decode(), before
            before.append(f)


# -- the handshake -------------------------------------------------------------------------


def test_bad_handshakes_are_refused_with_the_reason(aloop, ffserver):
    async def main():
        async with ffserver(http_port=free_port(), http_cors_origins=["https://app.example"]) \
                as srv:
            port = srv.http_port

            async def ask(headers=(), path="/ws", handshake=True):
                c = await RawWs.open(port)
                try:
                    return await c.request(path, headers, handshake)
                finally:
                    c.close()

            status, hs, body = await ask(handshake=False)        # a plain GET /ws
            assert status == 426 and hs["upgrade"] == "websocket"
            assert hs["sec-websocket-version"] == "13"
            status, hs, body = await ask([("sec-websocket-key", None)])
            assert status == 400 and b"Sec-WebSocket-Key is missing" in body
            status, hs, body = await ask([("sec-websocket-key", "c2hvcnQ=")])
            assert status == 400 and b"Base64 of 16 bytes" in body
            for version in ("8", None):
                status, hs, body = await ask([("sec-websocket-version", version)])
                assert status == 426 and hs["sec-websocket-version"] == "13", (version, body)
            status, hs, body = await ask([("connection", "keep-alive")])
            assert status == 400 and b"Connection: Upgrade" in body
            status, hs, body = await ask([("origin", "https://evil.example")])
            assert status == 403 and b"http_cors_origins" in body
            status, hs, body = await ask([("sec-websocket-protocol", "mqtt, wamp")])
            assert status == 400 and b"cloudevents.json, fastflow" in body
            status, hs, body = await ask(path="/ws?subjects=a.b")
            assert status == 400 and b"unknown query parameter 'subjects'" in body
            status, hs, body = await ask(path="/ws?subject=a..b")
            assert status == 400 and b"a..b" in body
            status, hs, body = await ask([("sec-websocket-protocol", "fastflow")],
                                         "/ws?subject=a.b")
            assert status == 400 and b"subprotocol fastflow" in body

            # the allowed origin, the subprotocols and the accept key (RFC 6455 4.2.2)
            key = "dGhlIHNhbXBsZSBub25jZQ=="             # (the RFC's example)
            status, hs, body = await ask([("origin", "https://app.example"),
                                          ("sec-websocket-key", key),
                                          ("sec-websocket-protocol", "wamp, fastflow")])
            assert status == 101 and hs["sec-websocket-protocol"] == "fastflow"
            assert hs["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            async with ws_connect(srv) as ws:
                assert ws.subprotocol is None       # none asked: cloudevents.json, no header
            async with ws_connect(srv, subprotocols=["cloudevents.json"]) as ws:
                assert ws.subprotocol == "cloudevents.json"

    aloop(main)


def test_auth_and_permissions(aloop, ffserver):
    async def main():
        settings = dict(
            http_port=free_port(), token="admin-token",
            tokens=[{"name": "ci", "token": "ci-token",
                     "permissions": {"publish": ["ci.>"], "subscribe": ["ci.>"]}}],
            users=[{"user": "u", "password": "pw", "permissions": {
                "subscribe": {"allow": ["q.>"], "queue_allow": ["shared"]}}}])
        async with ffserver(**settings) as srv:
            for kw in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
                with pytest.raises(InvalidStatus) as ei:
                    async with ws_connect(srv, **kw):
                        pass
                assert ei.value.response.status_code == 401
            # a subscription the token may not make: 403 before the upgrade
            with pytest.raises(InvalidStatus) as ei:
                async with ws_connect(srv, "?access_token=ci-token&subject=x.>"):
                    pass
            assert ei.value.response.status_code == 403
            assert b"x.>" in ei.value.response.body
            async with ws_connect(srv, "?access_token=ci-token&subject=ci.>",
                                          open_timeout=5) as ci, \
                    ws_connect(srv, additional_headers={
                        "Authorization": "Bearer admin-token"}) as admin:
                await ci.send(json.dumps({"op": "subscribe", "sid": 7, "subject": "x.>"}))
                ans = await recv_json(ci)
                assert ans["op"] == "error" and ans["code"] == 403 and ans["sid"] == 7
                await ci.send(event(1, "x.y"))
                ans = await recv_json(ci)
                assert ans == {"op": "error", "re": "publish", "id": "1", "code": 403,
                               "message": "permission denied: publish to 'x.y'"}
                # what it may do, it does; the socket stayed
                await ci.send(event(2, "ci.y"))
                assert (await recv_json(ci))["id"] == "2"
                await admin.send(json.dumps({"op": "subscribe", "subject": ">"}))
                assert (await recv_json(admin)) == {"op": "ok", "re": "subscribe",
                                                    "sid": "sub-1"}
                await admin.send(event(3, "x.y"))
                assert (await recv_json(admin))["id"] == "3"
            # Basic credentials; a queue group the user may not join
            basic = {"Authorization": "Basic " + base64.b64encode(b"u:pw").decode()}
            with pytest.raises(InvalidStatus) as ei:
                async with ws_connect(srv, "?subject=q.a&queue=other",
                                      additional_headers=basic):
                    pass
            assert ei.value.response.status_code == 403
            async with ws_connect(srv, "?subject=q.a&queue=shared",
                                  additional_headers=basic) as u:
                await u.send(event(4, "q.a"))
                assert (await recv_json(u))["id"] == "4"
            assert srv.stats()["auth_failures"] >= 1     # (the wrong token)

    aloop(main)


# -- cloudevents.json ----------------------------------------------------------------------


def test_events_from_every_door_arrive_in_order(aloop, ffnats, natspy):
    async def main():
        async with ffnats(http_port=free_port()) as srv:
            http = httpx.AsyncClient(base_url="http://127.0.0.1:{}".format(srv.http_port))
            nc = await natspy.connect(srv.nats_url)
            try:
                async with ws_connect(srv, "?subject=a.>&subject=b.*",
                                      subprotocols=["cloudevents.json"]) as ws, \
                        await fc.connect(srv.url) as native:
                    await ws.send(json.dumps({"op": "subscribe", "sid": "c", "subject": "c.x",
                                              "ref": 1}))
                    assert await recv_json(ws) == {"op": "ok", "re": "subscribe", "sid": "c",
                                                   "ref": 1}
                    sent = []
                    for i in range(5):
                        r = await http.post("/events/a.http", content=event(i),
                                            headers={"content-type":
                                                     "application/cloudevents+json"})
                        assert r.status_code == 202, r.text
                        sent.append(("a.http", str(i)))
                        native.publish("b.native", b"n%d" % i, id="n%d" % i)
                        await native.flush()
                        sent.append(("b.native", "n%d" % i))
                        await nc.publish("c.x", b"x%d" % i, headers={"Nats-Msg-Id": "x%d" % i})
                        await nc.flush()
                        sent.append(("c.x", "x%d" % i))
                        native.publish("d.none", b"nobody")     # no subscription: not seen
                    got = [await recv_json(ws) for _ in sent]
                    assert [g["id"] for g in got] == [i for _s, i in sent]
                    assert got[0]["data"] == {"n": 0} and got[0]["type"] == "t.a"
                    assert base64.b64decode(got[1]["data_base64"]) == b"n0"
                    assert base64.b64decode(got[2]["data_base64"]) == b"x0"
                    # unsubscribe by sid and by subject: nothing more arrives from those
                    await ws.send(json.dumps({"op": "unsubscribe", "sid": "c"}))
                    assert (await recv_json(ws))["count"] == 1
                    await ws.send(json.dumps({"op": "unsubscribe", "subject": "a.>"}))
                    assert (await recv_json(ws)) == {"op": "ok", "re": "unsubscribe",
                                                     "subject": "a.>", "count": 1}
                    await ws.send(json.dumps({"op": "unsubscribe", "sid": "c"}))
                    assert (await recv_json(ws))["code"] == 404
                    native.publish("a.x", b"gone")
                    native.publish("c.x", b"gone")
                    native.publish("b.y", b"kept", id="last")
                    await native.flush()
                    assert (await recv_json(ws))["id"] == "last"
                    await ws.send(json.dumps({"op": "ping", "ref": "p"}))
                    assert await recv_json(ws) == {"op": "pong", "ref": "p"}
                    # monitoring: door ws, its subprotocol and subscriptions
                    (st,) = [c.stats(0, subs=True) for c in srv.conns.values()
                             if c.door == "ws"]
                    assert st["subprotocol"] == "cloudevents.json"
                    assert [s["subject"] for s in st["subs"]] == ["b.*"]
                    assert st["in_msgs"] == 0 and st["out_msgs"] >= 16
            finally:
                await nc.close()
                await http.aclose()

    aloop(main)


def test_the_json_is_the_event_formats_and_queue_groups_share(aloop, ffserver):
    async def main():
        f = Flow()
        try:
            async with ffserver(flow=f, http_port=free_port()) as srv:
                q = "?subject=jobs.>&queue=workers"
                async with ws_connect(srv, q) as w1, ws_connect(srv, q) as w2, \
                        ws_connect(srv, "?subject=jobs.*") as watcher:
                    await wait_until(lambda: len(f.matcher) >= 3, 5, "the subscriptions")
                    sent = []
                    for i in range(200):
                        ev = Event("jobs.run", b'{"k": %d}' % i, id=str(i), ext1="v",
                                   datacontenttype="application/json")
                        sent.append(to_json(ev).decode())
                        f.publish(ev)
                    # byte for byte what fastflow.event.to_json writes, in order
                    for i in range(200):
                        assert await asyncio.wait_for(watcher.recv(), 5) == sent[i]
                    got = []

                    async def drain(ws):
                        try:
                            while True:
                                got.append(json.loads(await asyncio.wait_for(ws.recv(), 0.3)))
                        except asyncio.TimeoutError:
                            pass
                    await asyncio.gather(drain(w1), drain(w2))
                    assert sorted(int(g["id"]) for g in got) == list(range(200))   # each once
                    assert got[0]["data"]["k"] == int(got[0]["id"])
        finally:
            f.close()

    aloop(main)


def test_publish_over_the_socket(aloop, ffserver):
    async def main():
        f = Flow()
        seen = []
        f.subscribe("orders.>", seen.append)
        try:
            async with ffserver(flow=f, http_port=free_port(), max_payload="64KiB") as srv:
                async with ws_connect(srv, "?subject=t.>") as ws, \
                        ws_connect(srv, "?publish=orders.new&subject=orders.>&echo=false") \
                        as pub:
                    # one event: routed on its type, echoed to its own subscription
                    await ws.send(event(1, "t.one"))
                    got = await recv_json(ws)
                    assert got["id"] == "1" and got["data"] == {"n": 1}
                    # a batch, and a message in fragments
                    await ws.send("[{}, {}]".format(event(2, "t.b"), event(3, "t.b")))
                    await ws.send("[]")
                    text = event(4, "t.frag")
                    await ws.send([text[:10], text[10:30], text[30:]])
                    assert [(await recv_json(ws))["id"] for _ in range(3)] == ["2", "3", "4"]
                    # ?publish= routes every event on that subject; echo=false: not back
                    await pub.send(event(5, "com.example.made"))
                    await wait_until(lambda: seen, 5, "the published event")
                    assert seen[0].routing_subject == "orders.new" and seen[0].id == "5"
                    assert seen[0].type == "com.example.made"

                    # refusals answer an error frame and keep the socket
                    async def refused(text):
                        await ws.send(text)
                        ans = await recv_json(ws)
                        assert ans["op"] == "error", ans
                        return ans["code"], ans["message"]

                    code, msg = await refused("hello")
                    assert code == 400 and "a control message" in msg
                    code, msg = await refused('{"foo": 1}')
                    assert code == 400 and "needs an 'op'" in msg
                    code, msg = await refused('{"op": "dance"}')
                    assert code == 400 and "unknown op 'dance'" in msg
                    code, msg = await refused(json.dumps(dict(CE, type="t.x")))
                    assert code == 400 and "'id'" in msg
                    code, msg = await refused(event(6, "t..x"))
                    assert code == 400 and "cannot route it" in msg
                    code, msg = await refused(json.dumps(dict(CE, id="7", type="t.x",
                                                              data="x" * 70000)))
                    assert code == 413 and "max_payload" in msg
                    await ws.send('{"op": "subscribe", "subject": "specversion", "sid": "s"}')
                    assert (await recv_json(ws))["op"] == "ok"     # (a control message)
                    await ws.send(event(8, "t.ok"))
                    assert (await recv_json(ws))["id"] == "8"
                    # refusals without end: the socket is closed (1008)
                    for _ in range(80):
                        try:
                            await ws.send("nonsense")
                        except ConnectionClosed:
                            break
                    code, reason = await closed_with(ws)
                    assert code == 1008 and "too many refused messages" in reason
                    assert pub.state is websockets.protocol.State.OPEN
        finally:
            f.close()

    aloop(main)


def test_subscription_limits_and_a_frame_that_never_ends(aloop, ffserver):
    async def main():
        async with ffserver(http_port=free_port(), max_subscriptions=3,
                            http_request_timeout=1) as srv:
            with pytest.raises(InvalidStatus) as ei:
                async with ws_connect(srv, "?subject=a&subject=b&subject=c&subject=d"):
                    pass
            assert ei.value.response.status_code == 429
            async with ws_connect(srv, "?subject=a&subject=b") as ws:
                async def ask(**ctl):
                    await ws.send(json.dumps(dict(op="subscribe", **ctl)))
                    return await recv_json(ws)

                assert (await ask(sid="url-1", subject="z"))["code"] == 409
                assert (await ask(subject="a..b"))["code"] == 400
                assert (await ask(subject="a", queue="q.*"))["code"] == 400
                assert (await ask(subject=["a"]))["code"] == 400
                assert (await ask(sid=True, subject="a"))["code"] == 400
                assert (await ask(sid=3, subject="c"))["op"] == "ok"
                ans = await ask(subject="d")
                assert ans["code"] == 429 and "maximum subscriptions" in ans["message"]
                await ws.send(json.dumps({"op": "unsubscribe", "sid": 3}))
                assert (await recv_json(ws))["count"] == 1
                assert (await ask(sid="3", subject="d"))["op"] == "ok"
            # half a frame, and then nothing: closed after http_request_timeout
            raw = await RawWs.connect(srv.http_port)
            try:
                await raw.send(RawWs.frame(1, b"x" * 100)[:50])
                t0 = time.monotonic()
                code, reason, _ = await raw.close_code(8)
                assert code == 1008 and "did not arrive" in reason
                assert 0.5 < time.monotonic() - t0 < 6      # (checked once a second)
            finally:
                raw.close()

    aloop(main)


# -- the fastflow subprotocol --------------------------------------------------------------


class NativeWs:
    """The native protocol over a ``websockets`` connection (subprotocol fastflow)."""

    def __init__(self, ws):
        self.ws = ws
        self.buf = b""
        self.frames = []

    async def next(self, timeout=5.0):
        while not self.frames:
            self.buf += await asyncio.wait_for(self.ws.recv(), timeout)
            got, self.buf = native_frames(self.buf)
            self.frames.extend(got)
        return self.frames.pop(0)

    async def expect(self, op, timeout=5.0):
        f = await self.next(timeout)
        assert f[0] == OP[op], "expected {}, got {!r}".format(op, f)
        return f


def test_fastflow_subprotocol_carries_the_native_protocol(aloop, ffserver):
    async def main():
        async with ffserver(http_port=free_port(), token="tok", max_payload="64KiB") as srv:
            auth = {"Authorization": "Bearer tok"}
            async with ws_connect(srv, subprotocols=["fastflow"],
                                          additional_headers=auth) as ws, \
                    ws_connect(srv, "?access_token=tok&subject=from.>") as js:
                assert ws.subprotocol == "fastflow"
                n = NativeWs(ws)
                info = json.loads((await n.expect("INFO"))[3])
                assert info["proto"] == 1
                # CONNECT without credentials: the upgrade request's
                await ws.send(native_frame(OP["CONNECT"], 0, 1, body=b'{"name":"w"}'))
                ok = await n.expect("OK")
                assert ok[1] == 1 and json.loads(ok[3])["user"] == "token:token"
                # a frame cut across two messages is one frame (a byte stream)
                sub = native_frame(OP["SUB"], 0, 5, "to.>") + native_frame(OP["PING"])
                await ws.send(sub[:7])
                await ws.send(sub[7:])
                await n.expect("PONG")
                await wait_until(lambda: len(srv.flow.matcher) >= 2, 5, "the subscriptions")
                # the JSON socket's publish reaches the native subscriber ...
                await js.send(event(1, "to.native"))
                op, sid, subject, body = await n.expect("MSG")
                assert sid == 5 and subject == b"to.native"
                assert Event.decode("to.native", body).data == b'{"n": 1}'   # (as sent)
                # ... and the native publish the JSON subscriber
                rec = Event("from.native", b'{"k":2}', id="k2",
                            datacontenttype="application/json").encode()
                await ws.send(native_frame(OP["PUB"], 0, 0, "from.native", rec))
                got = await recv_json(js)
                assert got["id"] == "k2" and got["data"] == {"k": 2}
                # a text message here is not the protocol: 1003
                await ws.send("hello")
                code, reason = await closed_with(ws)
                assert code == 1003 and "binary messages only" in reason
            # credentials in CONNECT are checked: wrong ones close (ERR 401, then 1008)
            async with ws_connect(srv, subprotocols=["fastflow"],
                                          additional_headers=auth) as ws:
                n = NativeWs(ws)
                await n.expect("INFO")
                await ws.send(native_frame(OP["CONNECT"], 0, 1, body=b'{"token":"bad"}'))
                err = await n.expect("ERR")
                assert struct.unpack_from("<H", err[3])[0] == 401
                code, reason = await closed_with(ws)
                assert code == 1008 and "authentication failed" in reason
            # a frame over max_payload: the native ERR 413, then 1009
            async with ws_connect(srv, subprotocols=["fastflow"], additional_headers=auth) as ws:
                n = NativeWs(ws)
                await n.expect("INFO")
                await ws.send(native_frame(OP["CONNECT"], 0, 1))
                await n.expect("OK")
                await ws.send(native_frame(OP["PUB"], 0, 0, "big",
                                           Event("big", b"x" * 70000).encode()))
                err = await n.expect("ERR")
                assert struct.unpack_from("<H", err[3])[0] == 413
                code, reason = await closed_with(ws)
                assert code == 1009 and "max_payload" in reason

    aloop(main)


# -- limits, errors, close codes -----------------------------------------------------------


def test_a_subscriber_that_does_not_read_is_cut_and_others_go_on(aloop, ffserver):
    async def main():
        f = Flow()
        advisories = []
        f.subscribe("$SYS.advisory.slow_consumer", advisories.append)
        try:
            async with ffserver(flow=f, http_port=free_port(), max_payload="64KiB",
                                max_pending="1MiB") as srv:
                slow = await RawWs.connect(srv.http_port, "/ws?subject=flood.>", rcvbuf=4096)
                try:
                    async with ws_connect(srv, "?subject=flood.>",
                                                  max_size=None) as reader:
                        await wait_until(lambda: len(f.matcher) >= 3, 5, "the subscriptions")
                        got = []

                        async def read():
                            while True:
                                got.append(len(await reader.recv()))

                        task = asyncio.ensure_future(read())
                        chunk = b"x" * 60000
                        n = 0
                        while not advisories and n < 2000:
                            for _ in range(4):
                                f.publish("flood.data", chunk)
                            n += 4
                            await wait_until(lambda: len(got) == n or advisories, 10,
                                             "the reader")
                        await wait_until(lambda: advisories, 10, "the advisory")
                        body = json.loads(advisories[0].data)
                        assert body["subscriptions"] == ["flood.>"]
                        assert "max_pending" in body["reason"]
                        code, reason, before = await slow.close_code(10)
                        assert code == 1013 and reason.startswith("slow consumer: ")
                        assert before and all(fr[0] == 1 for fr in before)
                        # the others carry on
                        f.publish("flood.data", b"after")
                        await wait_until(lambda: len(got) == n + 1, 10, "the reader")
                        task.cancel()
                        assert srv.stats()["slow_consumers"] == 1
                finally:
                    slow.close()
        finally:
            f.close()

    aloop(main)


def test_broken_frames_close_with_their_code(aloop, ffserver, seed):
    async def main():
        async with ffserver(http_port=free_port(), http_max_body="256KiB",
                            max_payload="64KiB") as srv:
            port = srv.http_port
            cases = [
                (RawWs.frame(1, b'{"op":"ping"}', mask=False), 1002, "mask"),
                (RawWs.frame(1, b"\xff\xfe{}"), 1007, "UTF-8"),
                (RawWs.frame(1, json.dumps(dict(CE, id="1", type="t")).encode()[:-1]
                             + b',"x":"\xc3\x28"}'), 1007, "UTF-8"),
                (RawWs.frame(2, b"\x00\x01"), 1003, "text messages only"),
                (bytes((0x81, 0xFF)) + struct.pack("!Q", 257 << 10) + os.urandom(4), 1009,
                 "too big"),                 # (refused at its head: over http_max_body)
                (RawWs.frame(0, b"x"), 1002, "continuation"),
                (RawWs.frame(9, b"p", fin=False), 1002, "fragmented"),
                (RawWs.frame(8, b"\x03\xed"), 1002, "status code"),    # 1005 may not be sent
                (bytes((0x81 | 0x40, 0x80)) + os.urandom(4), 1002, "reserved bits"),
            ]
            for data, want, words in cases:
                c = await RawWs.connect(port)
                try:
                    await c.send(data)
                    code, reason, _ = await c.close_code()
                    assert code == want and words in reason, (data[:16], code, reason)
                finally:
                    c.close()
            # random bytes after the handshake, then zeros: every one is closed with a
            # protocol code, and the server serves the next client
            rnd = random.Random(seed)
            codes = []

            async def garbage():
                c = await RawWs.connect(port)
                try:
                    await c.send(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 300))))
                    try:
                        await c.send(bytes(300 << 10))
                    except (ConnectionError, OSError):
                        pass
                    codes.append((await c.close_code(10))[0])
                finally:
                    c.close()
            await asyncio.gather(*(garbage() for _ in range(10)))
            assert set(codes) <= {1002, 1003, 1007, 1009}, codes
            async with ws_connect(srv) as ws:
                await ws.send('{"op":"ping"}')
                assert await recv_json(ws) == {"op": "pong"}
                await wait_until(lambda: srv.stats()["connections"] == 1, 5, "the others' end")
            assert srv.stats()["protocol_errors"] >= len(cases) + 10

    aloop(main)


def test_ping_close_handshake_and_drain(aloop, ffserver):
    async def main():
        f = Flow()
        try:
            async with ffserver(flow=f, http_port=free_port(), ping_interval=0.5) as srv:
                # the server pings an idle socket; the client's close is answered in kind
                raw = await RawWs.connect(srv.http_port)
                try:
                    op, fin, payload = await raw.next(5)
                    assert op == 9 and fin
                    await raw.send(RawWs.frame(10, payload) + RawWs.frame(8, b"\x03\xe8bye"))
                    code, reason, _ = await raw.close_code()
                    assert code == 1000
                finally:
                    raw.close()
                async with ws_connect(srv, "?subject=d.>") as js, \
                        ws_connect(srv, subprotocols=["fastflow"]) as bs:
                    n = NativeWs(bs)
                    await n.expect("INFO")
                    await bs.send(native_frame(OP["CONNECT"], 0, 1) +
                                  native_frame(OP["SUB"], 0, 3, "d.>") + native_frame(OP["PING"]))
                    await n.expect("OK")
                    await n.expect("PONG")
                    for i in range(100):
                        f.publish("d.x", b"%d" % i, id=str(i))
                    await srv.stop()
                    # what was published before the stop arrives, then 1001
                    assert [(await recv_json(js))["id"] for _ in range(100)] == \
                        [str(i) for i in range(100)]
                    for _ in range(100):
                        assert (await n.expect("MSG"))[1] == 3
                    for ws in (js, bs):
                        code, reason = await closed_with(ws)
                        assert code == 1001 and "shutting down" in reason
        finally:
            f.close()

    aloop(main)
