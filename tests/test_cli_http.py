"""``fastflow pub`` and ``fastflow sub`` at the web doors (``-s http://``,
``ws://``; docs/http.md) against a real ``fastflow serve --http-port``
child, and the client underneath them (``fastflow.client.http``,
``fastflow.client.websub``): its HTTP/1.1 bodies, keep-alive, the SSE
format and the reconnect with ``Last-Event-ID`` against small servers
written here by hand."""

import asyncio
import base64
import json
import subprocess
import sys
import time

import pytest

import fastflow.client.http as web
import fastflow.errors as fastflow_errors
from fastflow.client.websub import SseParser
from fastflow.errors import AuthenticationError, ServerError
from fastflow.event import Event

from helpers import cli
from peers import REPO

STREAMS = """
[[streams]]
name = "orders"
subjects = ["orders.>"]
"""


@pytest.fixture
def webproc(ffproc, free_port, tmp_path):
    """``webproc(*args)``: a started ``fastflow serve --http-port`` child
    with a stream ``orders`` (orders.>): ``.http`` and ``.ws`` are its
    web URLs, ``.url`` its native one."""

    def make(*args):
        cfg = tmp_path / "server.toml"
        cfg.write_text(STREAMS)
        hport = free_port()
        sp = ffproc("--http-port", hport, "-c", cfg, *args)
        sp.http = "http://127.0.0.1:{}".format(hport)
        sp.ws = "ws://127.0.0.1:{}".format(hport)
        sp.start()
        return sp

    return make


def _stored(sp):
    """The events of stream ``orders`` (``streams read --json`` over the native door)."""
    r = cli("streams", "read", "orders", "--json", "-s", sp.url)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


# -- pub ------------------------------------------------------------------------------------


MODES = [(), ("--binary",), ("--structured",), ("--batch", "2")]


def test_pub_over_http_in_each_mode_with_ack(webproc):
    """Three events in each content mode (the default: batched for
    several), each acknowledged with its stream and seq, stored with
    every attribute given."""
    sp = webproc()
    for i, flags in enumerate(MODES):
        r = cli("pub", "orders.m{}".format(i), '{"id": 42}', "-n", "3", "--ack", *flags,
                "--type", "com.acme.order", "--content-type", "application/json",
                "--attr", "tenant=acme", "-s", sp.http)
        assert r.returncode == 0, (flags, r.stderr)
        assert r.stdout.splitlines() == ["stored in orders at seq {}".format(3 * i + k)
                                         for k in (1, 2, 3)], flags
        assert "published 3 events to orders.m{}".format(i) in r.stderr
    got = _stored(sp)
    assert [e["seq"] for e in got] == list(range(1, 13))
    assert [e["routing_subject"] for e in got] == ["orders.m{}".format(i // 3)
                                                   for i in range(12)]
    for e in got:
        assert (e["type"], e["source"], e["tenant"]) == ("com.acme.order", "/fastflow", "acme")
        assert e["datacontenttype"] == "application/json" and e["data"] == {"id": 42}
    assert len({e["id"] for e in got}) == 12


def test_pub_over_http_one_event_is_binary_many_are_batched(webproc):
    """The default mode: one event in binary mode (its data as the body,
    kept byte for byte), several in batched mode (and a ws:// URL
    publishes over HTTP on the same listener)."""
    sp = webproc()
    raw = "caf\u00e9 \x01 bytes"
    r = cli("pub", "orders.one", raw, "--ack", "-s", sp.http)
    assert r.returncode == 0 and r.stdout == "stored in orders at seq 1\n", r.stderr
    r = cli("pub", "orders.many", "x", "-n", "2500", "-s", sp.ws)
    assert r.returncode == 0, r.stderr
    assert "published 2,500 events to orders.many" in r.stderr
    got = _stored(sp)
    assert len(got) == 2501
    assert base64.b64decode(got[0]["data_base64"]) == raw.encode()
    assert "datacontenttype" not in got[0]
    assert {e["routing_subject"] for e in got[1:]} == {"orders.many"}


def test_pub_over_http_says_what_was_not_stored_and_what_was_refused(webproc):
    sp = webproc()
    r = cli("pub", "other.x", "hi", "-n", "2", "--ack", "-s", sp.http)
    assert r.returncode == 1
    assert "2 of the 2 events were stored by no stream: no stream captures other.x" in r.stderr
    r = cli("pub", "a..b", "hi", "-s", sp.http)
    assert r.returncode == 1 and "invalid subject 'a..b'" in r.stderr
    r = cli("pub", "orders.x", "hi", "--reply", "r.1", "-s", sp.http)
    assert r.returncode == 1 and "--reply: a CloudEvent over HTTP has no reply subject" \
        in r.stderr
    r = cli("pub", "orders.x", "hi", "--structured", "-s", sp.url)
    assert r.returncode == 1 and "--structured chooses how events go over HTTP" in r.stderr
    r = cli("pub", "orders.x", "hi", "--batch", "0", "-s", sp.http)
    assert r.returncode == 2 and "--batch must be at least 1" in r.stderr
    r = cli("pub", "orders.x", "hi", "--attr", "Bad-Name=1", "-s", sp.http)
    assert r.returncode == 1 and "error:" in r.stderr
    r = cli("streams", "ls", "-s", sp.http)
    assert r.returncode == 1 and "is a web door, where only pub and sub go" in r.stderr
    r = cli("pub", "orders.x", "hi", "-s", "http://127.0.0.1:1", "--timeout", "2")
    assert r.returncode == 1 and "could not connect to http://127.0.0.1:1" in r.stderr


def test_pub_over_http_credentials(webproc):
    """--token goes as Bearer, --user/--password as Basic, and the URL's
    own credentials count too; none or wrong ones get the 401's message."""
    sp = webproc("--auth-token", "t0ken", "--user", "ana", "--password", "s3cret")
    for creds in (("--token", "t0ken"), ("--user", "ana", "--password", "s3cret")):
        r = cli("pub", "orders.a", "x", "--ack", *creds, "-s", sp.http)
        assert r.returncode == 0 and r.stdout.startswith("stored in orders"), r.stderr
    r = cli("pub", "orders.a", "x", "--ack", "-s", sp.http.replace("//", "//t0ken@"))
    assert r.returncode == 0, r.stderr
    r = cli("pub", "orders.a", "x", "--ack", "-s", sp.http.replace("//", "//ana:s3cret@"))
    assert r.returncode == 0, r.stderr
    r = cli("pub", "orders.a", "x", "-s", sp.http)
    assert r.returncode == 1 and "server error 401: authentication required" in r.stderr
    r = cli("pub", "orders.a", "x", "--token", "wrong", "-s", sp.http)
    assert r.returncode == 1 and "server error 401" in r.stderr
    assert len(_stored_with(sp, "--token", "t0ken")) == 4


def test_pub_over_https(webproc, tls_files):
    """With [tls] the web door speaks HTTPS: pub verifies the server with
    --tls-ca (and fails to, without it, saying so)."""
    sp = webproc("--tls-cert", tls_files.cert, "--tls-key", tls_files.key)
    url = sp.http.replace("http://", "https://")
    r = cli("pub", "orders.tls", "x", "--ack", "--tls-ca", tls_files.ca, "-s", url)
    assert r.returncode == 0 and r.stdout == "stored in orders at seq 1\n", r.stderr
    r = cli("pub", "orders.tls", "x", "-s", url)
    assert r.returncode == 1 and "certificate verify failed" in r.stderr, r.stderr
    r = cli("pub", "orders.tls", "x", "-s", sp.http, "--timeout", "3")
    assert r.returncode == 1 and "error:" in r.stderr, r.stderr


def _stored_with(sp, *creds):
    r = cli("streams", "read", "orders", "--json", "-s", sp.url, *creds)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


# -- sub ------------------------------------------------------------------------------------


def _spawn(*args):
    return subprocess.Popen([sys.executable, "-m", "fastflow"] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _listening(proc, timeout=20):
    """Waits for sub's "listening on" line on stderr (fails with what it said instead)."""
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("listening on"):
            return line
    proc.kill()
    out, err = proc.communicate(timeout=10)
    raise AssertionError("sub did not start listening:\n" + "".join(lines) + err)


def _finish(proc, timeout=20):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return out, err


def _sub_receives_what_pub_sent(sp, url, protocol):
    human = _spawn("sub", "orders.>", "-n", "3", "-s", url)
    js = _spawn("sub", "orders.>", "-n", "3", "--json", "-s", url)
    try:
        for p in (human, js):
            line = _listening(p)
            assert "orders.>" in line and protocol in line, line
        r = cli("pub", "orders.eu.created", '{"id": 42}', "--content-type", "application/json",
                "--type", "com.acme.order", "-s", sp.http)
        assert r.returncode == 0, r.stderr
        r = cli("pub", "orders.us", "plain text", "-n", "2", "--structured", "--content-type",
                "text/plain", "-s", sp.http)
        assert r.returncode == 0, r.stderr
        out, err = _finish(human)
        assert human.returncode == 0, err
        assert out.splitlines() == ['[#1] com.acme.order: {"id": 42}', "[#2] orders.us: plain text",
                                    "[#3] orders.us: plain text"]
        out, err = _finish(js)
        assert js.returncode == 0, err
        got = [json.loads(line) for line in out.splitlines()]
        assert [(e["type"], e["data"]) for e in got] == [
            ("com.acme.order", {"id": 42}), ("orders.us", "plain text"),
            ("orders.us", "plain text")]
        assert got[0]["datacontenttype"] == "application/json"
        assert got[1]["datacontenttype"] == "text/plain"
    finally:
        for p in (human, js):
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)


def test_sub_over_sse_receives_what_pub_sent(webproc):
    sp = webproc()
    _sub_receives_what_pub_sent(sp, sp.http, "Server-Sent Events")


def test_sub_over_websocket_receives_what_pub_sent(webproc):
    sp = webproc()
    _sub_receives_what_pub_sent(sp, sp.ws, "WebSocket")


@pytest.mark.parametrize("door", ["sse", "ws"])
def test_sub_over_the_web_says_why_it_is_refused(webproc, door):
    sp = webproc("--auth-token", "t0ken")
    url = sp.http if door == "sse" else sp.ws
    r = cli("sub", "orders.>", "-s", url, timeout=30)
    assert r.returncode == 1 and "server error 401" in r.stderr, r.stderr
    r = cli("sub", "orders..x", "--token", "t0ken", "-s", url, timeout=30)
    assert r.returncode == 1 and "server error 400" in r.stderr, r.stderr


# -- the client library: HTTP/1.1 and SSE against hand-written servers -------------------------


class FakeServer:
    """A TCP server on 127.0.0.1 whose ``handler(reader, writer, n)`` (n:
    the connection's number, from 0) answers each connection."""

    def __init__(self, handler):
        self.handler = handler
        self.connections = 0
        self.heads = []                 # every request head received, as text

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = "http://127.0.0.1:{}".format(self.port)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _conn(self, reader, writer):
        n = self.connections
        self.connections += 1
        try:
            await self.handler(self, reader, writer, n)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def head(self, reader):
        """One request head (and its Content-Length body); None at EOF."""
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        text = raw.decode("latin-1")
        self.heads.append(text)
        for line in text.split("\r\n"):
            if line.lower().startswith("content-length:"):
                await reader.readexactly(int(line.split(":", 1)[1]))
        return text


def test_http_connection_reads_every_kind_of_body(aloop):
    """Content-Length, chunked (with extensions and trailers, cut in odd
    places) and close-delimited bodies, in that order on one connection,
    and a 100 Continue before an answer."""

    async def handler(srv, reader, writer, n):
        await srv.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await srv.head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"A\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n")
        await srv.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        writer.close()

    async def main():
        async with FakeServer(handler) as srv:
            async with web.HttpConnection(srv.url, token="tk") as c:
                r1 = await c.request("GET", "/a")
                r2 = await c.request("GET", "/b")
                r3 = await c.request("GET", "/c")
                assert (r1.status, r1.body) == (200, b"hello")
                assert (r2.status, r2.body) == (200, b"abc0123456789")
                assert (r3.status, r3.body) == (200, b"until the end")
                assert c.connections == 1 and c.requests == 3
            assert "authorization: Bearer tk" in srv.heads[0]
            assert srv.heads[0].startswith("GET /a HTTP/1.1\r\nhost: 127.0.0.1:{}".format(
                srv.port))

    aloop(main)


def test_http_connection_opens_again_when_a_kept_alive_one_was_closed(aloop):
    async def handler(srv, reader, writer, n):
        await srv.head(reader)
        writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nff-count: 1\r\n\r\n")
        await writer.drain()
        # closes without saying so, as an idle keep-alive connection is closed

    async def main():
        async with FakeServer(handler) as srv:
            async with web.HttpPublisher(srv.url, user="ana", password="pw") as p:
                for _ in range(3):
                    res = await p.publish(Event("orders.a", b"x"))
                    assert res == web.Published(1, None)
                    await asyncio.sleep(0.05)
                assert p.http.connections == 3
            assert "authorization: Basic YW5hOnB3" in srv.heads[0]
            assert srv.heads[0].startswith("POST /events/orders.a HTTP/1.1")

    aloop(main)


def test_publish_error_answers_raise_the_status_kind(aloop):
    async def handler(srv, reader, writer, n):
        answers = [(401, b'{"error":{"code":401,"message":"authentication failed"}}', ""),
                   (429, b'{"error":{"code":429,"message":"slow down"}}', "retry-after: 2\r\n"),
                   (415, b"not json", "")]
        for status, body, extra in answers:
            await srv.head(reader)
            writer.write("HTTP/1.1 {} X\r\n{}content-length: {}\r\n\r\n".format(
                status, extra, len(body)).encode() + body)

    async def main():
        async with FakeServer(handler) as srv:
            async with web.HttpPublisher(srv.url) as p:
                with pytest.raises(AuthenticationError, match="401: authentication failed"):
                    await p.publish(Event("a.b", b"x"))
                with pytest.raises(ServerError, match="429: slow down") as e:
                    await p.publish([Event("a.b", b"x")], ack=True)
                assert e.value.retry_after == 2.0 and e.value.status == 429
                with pytest.raises(ServerError, match="415: not json"):
                    await p.publish(Event("a.b", b"x"), mode="structured")
            assert "?ack=1" in srv.heads[1] and "cloudevents-batch+json" in srv.heads[1]
            assert "application/cloudevents+json" in srv.heads[2]

    aloop(main)


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 1000])
def test_sse_parser(cut):
    stream = ("\ufeff: a comment\r\nretry: 1500\r\ndata: one\r\n\r\n"
              "id: 7\ndata: two\ndata:  lines\n\n"
              "event: other\rdata: x\r\r"
              "data\n\n"
              "id: 8\n: nothing to send\n\n"
              "data: after\n\ndata: unfinished").encode()
    p = SseParser()
    got = []
    for i in range(0, len(stream), cut):
        got.extend(p.feed(stream[i:i + cut]))
    assert got == [("message", "one", None), ("message", "two\n lines", "7"),
                   ("other", "x", "7"), ("message", "", "7"), ("message", "after", "8")]
    assert p.retry == 1500 and p.last_id == "8"


def test_sse_subscription_resumes_with_last_event_id(aloop):
    """A lost SSE response is reconnected with Last-Event-ID (the events
    come chunked, the second time without a Content-Type charset)."""
    e = [json.dumps({"specversion": "1.0", "id": str(i), "source": "/s", "type": "t.{}".format(i),
                     "data": {"n": i}}, separators=(",", ":")) for i in range(4)]

    def chunk(text):
        b = text.encode()
        return b"%x\r\n%s\r\n" % (len(b), b)

    async def handler(srv, reader, writer, n):
        await srv.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                     b"transfer-encoding: chunked\r\n\r\n")
        if n == 0:
            writer.write(chunk("retry: 10\n\nid: 1\ndata: {}\n\n".format(e[1])))
            writer.write(chunk("id: 2\ndata: {}\n".format(e[2])) + chunk("\n"))
        else:
            writer.write(chunk("id: 3\ndata: {}\n\n".format(e[3])))
            await reader.read()         # until the client closes

    async def main():
        seen = []
        async with FakeServer(handler) as srv:
            sub = web.subscribe(srv.url, "orders.>", queue="q1", token="tk",
                                disconnected_callback=lambda: seen.append("lost"),
                                reconnected_callback=lambda: seen.append("back"))
            async with sub:
                got = []
                async for ev in sub:
                    got.append((ev.type, ev.data, sub.last_event_id))
                    if len(got) == 3:
                        break
            assert got == [("t.1", b'{"n":1}', "1"), ("t.2", b'{"n":2}', "2"),
                           ("t.3", b'{"n":3}', "3")]
            assert seen == ["lost", "back"] and sub.reconnects == 1
            first, second = srv.heads
            assert first.startswith("GET /events/orders.%3E?queue=q1 HTTP/1.1\r\n")
            assert "accept: text/event-stream" in first and "last-event-id" not in first
            assert "last-event-id: 2" in second and "authorization: Bearer tk" in second

    aloop(main)


def test_http_publisher_keeps_one_connection_through_the_idle_timeout(aloop, ffserver,
                                                                      free_port):
    """Against the real door: many publishes on one connection, and one
    more after the server closed it as idle (sent again on a new one)."""

    async def main():
        async with ffserver(http_port=free_port(), http_idle_timeout=0.3,
                            streams=[{"name": "orders", "subjects": ["orders.>"]}]) as srv:
            url = "http://127.0.0.1:{}".format(srv.http_port)
            async with web.HttpPublisher(url) as p:
                for i in range(50):
                    await p.publish(Event("orders.a", b"%d" % i))
                assert p.http.connections == 1
                await asyncio.sleep(2.0)
                res = await p.publish([Event("orders.b", b"late")], ack=True)
                assert res.acks[0].seq == 51 and res.acks[0].stream == "orders"
                assert p.http.connections == 2

    aloop(main)


def test_http_timeouts_in_the_config_are_durations():
    """``[http] idle_timeout`` and ``request_timeout`` take the config's
    durations ("60s", "500ms") like every other timeout (docs/http.md)."""
    from fastflow.server.config import ConfigError, ServerConfig, config_from_dict

    cfg = ServerConfig(**config_from_dict({"http": {"idle_timeout": "2m",
                                                    "request_timeout": "500ms"}}))
    assert (cfg.http_idle_timeout, cfg.http_request_timeout) == (120.0, 0.5)
    assert ServerConfig(http_idle_timeout=5).http_idle_timeout == 5.0
    with pytest.raises(ConfigError, match=r"^http_idle_timeout: expected a duration > 0"):
        ServerConfig(http_idle_timeout=0)
    with pytest.raises(ConfigError, match=r"^http_request_timeout: expected a duration"):
        ServerConfig(http_request_timeout="soon")


def test_websocket_subscription_against_a_websockets_server(aloop):
    """The WebSocket side of ``subscribe`` against the ``websockets``
    library's server: the handshake (path, subprotocol, credentials), text
    messages whole and fragmented, a close with 4000 + status raised after
    the events before it, and a refused handshake raised with its JSON
    error."""
    from websockets.asyncio.server import serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    ev = [json.dumps({"specversion": "1.0", "id": str(i), "source": "/s", "type": "t",
                      "data": "e{}".format(i)}) for i in range(3)]
    seen = []

    def check(conn, request):
        seen.append((request.path, request.headers.get("authorization"),
                     request.headers.get("sec-websocket-protocol")))
        if request.headers.get("authorization") != "Bearer tk":
            body = b'{"error":{"code":401,"message":"authentication failed"}}'
            return Response(401, "Unauthorized", Headers([("content-type", "application/json"),
                                                          ("content-length", str(len(body)))]),
                            body)
        return None

    async def handler(ws):
        assert ws.subprotocol == "cloudevents.json"
        await ws.send(ev[0])
        await ws.send([ev[1][:10], ev[1][10:]])         # one message in two frames
        await ws.send('{"op": "ok", "re": "subscribe", "sid": "url-1"}')     # ignored
        await ws.send(ev[2])
        await ws.close(4403, "permission denied: subscribe to 'orders.>'")

    async def main():
        async with serve(handler, "127.0.0.1", 0, subprotocols=["cloudevents.json"],
                         process_request=check, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            url = "ws://127.0.0.1:{}".format(port)
            got = []
            with pytest.raises(fastflow_errors.PermissionDeniedError,
                               match="403: permission denied: subscribe"):
                async with web.subscribe(url, "orders.>", queue="q", token="tk") as sub:
                    assert sub.protocol == "websocket"
                    async for e in sub:
                        got.append(e.data)
            assert got == [b"\"e0\"", b"\"e1\"", b"\"e2\""]
            assert seen[0] == ("/ws?subject=orders.%3E&queue=q", "Bearer tk",
                               "cloudevents.json")
            with pytest.raises(AuthenticationError, match="401: authentication failed"):
                await web.subscribe(url + "/ws", "orders.>", token="bad").start()
            assert seen[1][0].startswith("/ws?subject=")

    aloop(main)


def test_sse_stream_reader_resumes_across_a_server_restart(aloop, webproc, tmp_path):
    """A subscription that reads a stream over SSE (``stream=``) gets each
    event's seq as its SSE id, and after a restart of the server goes on
    with ``Last-Event-ID``: nothing lost, nothing twice."""

    async def main():
        sp = webproc("--data-dir", tmp_path / aloop.name)
        seen = []
        sub = web.subscribe(sp.http, "orders.>", stream="orders", start="first",
                            reconnect_wait=0.05, reconnect_wait_max=0.2,
                            disconnected_callback=lambda: seen.append("lost"),
                            reconnected_callback=lambda: seen.append("back"))
        async with web.HttpPublisher(sp.http) as p:
            await p.publish([Event("orders.a", b"%d" % i) for i in range(3)], ack=True)
        got = []
        async with sub:
            for _ in range(3):
                ev = await sub.next(10)
                got.append((ev.data, sub.last_event_id))
            await sp.astop()
            await sp.astart()
            async with web.HttpPublisher(sp.http) as p:
                res = await p.publish([Event("orders.b", b"%d" % i) for i in (3, 4)], ack=True)
                assert [a.seq for a in res.acks] == [4, 5]
            for _ in range(2):
                ev = await sub.next(20)
                got.append((ev.data, sub.last_event_id))
        assert got == [(b"%d" % i, str(i + 1)) for i in range(5)]
        assert seen == ["lost", "back"]

    aloop(main)


def test_sse_lost_and_close_messages(aloop):
    """``event: lost`` counts into ``sub.lost``, ``event: close`` is the
    ``close_reason`` of the end that follows (neither is an event)."""
    e = json.dumps({"specversion": "1.0", "id": "9", "source": "/s", "type": "t"})

    async def handler(srv, reader, writer, n):
        await srv.head(reader)
        if n:
            writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 51\r\n\r\n"
                         b'{"error":{"code":404,"message":"no stream named x"}}')
            return
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n: ok\n\n"
                     b'event: lost\nid: 8\ndata: {"stream":"x","first":5,"last":8,"count":4}\n\n'
                     b"id: 9\ndata: " + e.encode() + b"\n\n"
                     b'event: close\ndata: {"code":404,"message":"stream \'x\' was deleted"}\n\n')
        writer.close()

    async def main():
        async with FakeServer(handler) as srv:
            sub = web.subscribe(srv.url, stream="x", seq=5, reconnect_wait=0.01)
            with pytest.raises(fastflow_errors.NotFoundError, match="no stream named x"):
                async with sub:
                    async for ev in sub:
                        assert (ev.id, sub.last_event_id, sub.lost) == ("9", "9", 4)
            assert sub.close_reason == (404, "stream 'x' was deleted")
            assert srv.heads[0].startswith("GET /streams/x/events?seq=5 HTTP/1.1")
            assert "last-event-id: 9" in srv.heads[1]

    aloop(main)


def test_queue_group_across_sse_and_websocket(aloop, ffserver, free_port):
    """One SSE and one WebSocket subscriber in queue group ``q`` share the
    events: each goes to exactly one of them; a plain one gets all."""

    async def main():
        async with ffserver(http_port=free_port()) as srv:
            http = "http://127.0.0.1:{}".format(srv.http_port)
            ws = "ws://127.0.0.1:{}".format(srv.http_port)
            subs = [web.subscribe(http, "q.>", queue="q"), web.subscribe(ws, "q.>", queue="q"),
                    web.subscribe(ws, "q.>")]
            for s in subs:
                await s.start()
            got = [[], [], []]

            async def read(i):
                async for ev in subs[i]:
                    got[i].append(int(ev.data))

            tasks = [asyncio.ensure_future(read(i)) for i in range(3)]
            res = await web.publish(http, [Event("q.a", b"%d" % i) for i in range(40)],
                                    batch_size=7)
            assert res.count == 40
            deadline = time.monotonic() + 10
            while len(got[2]) < 40 or len(got[0]) + len(got[1]) < 40:
                assert time.monotonic() < deadline, got
                await asyncio.sleep(0.02)
            for s in subs:
                await s.close()
            await asyncio.gather(*tasks)
            assert sorted(got[0] + got[1]) == list(range(40)) and got[0] and got[1]
            assert got[2] == list(range(40))

    aloop(main)
