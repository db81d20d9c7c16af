"""Server-Sent Events and the streams API of the HTTP door (docs/http.md),
with real clients: ``curl`` (``-N`` for event streams) as a subprocess and
``httpx``; publishes over HTTP and with the native client.

The SSE messages are cut by this module's own parser (``SseParser``), not
by the server's code.  Servers run in-process (``ffserver``) or as a child
process when a test restarts one (``ffproc``)."""

import asyncio
import json
import socket

import httpx
import pytest

import fastflow.client as fc
from fastflow.event import Event, to_json

from helpers import wait_until


@pytest.fixture(autouse=True)
def _curl(peer):
    peer("curl")            # (fails, not skips, with FASTFLOW_REQUIRE_PEERS=1)


SSE = {"accept": "text/event-stream"}


# -- SSE, cut by hand -----------------------------------------------------------------------


class SseParser:
    """The messages of an event stream (the WHATWG rules: lines end in
    CRLF, LF or CR; a blank line ends a message; ``data`` lines joined
    with LF; a line starting with ':' is a comment)."""

    def __init__(self):
        self.buf = b""
        self.comments = []

    def feed(self, data):
        self.buf += data
        out = []
        text = self.buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self.buf = text.split(b"\n\n")
        for block in blocks:
            msg = {}
            data_lines = []
            for line in block.split(b"\n"):
                if line.startswith(b":"):
                    self.comments.append(line[1:].strip().decode())
                    continue
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"data":
                    data_lines.append(value)
                else:
                    msg[name.decode()] = value.decode()
            if data_lines:
                msg["data"] = b"\n".join(data_lines)
            if msg:
                out.append(msg)
        return out


class _Stream:
    """A client reading an event stream in the background: ``head`` (the
    status line and headers), ``next()`` the next message (None at the
    end), ``comments``."""

    def __init__(self):
        self.parser = SseParser()
        self.queue = asyncio.Queue()
        self.status = None
        self.headers = {}
        self.task = None

    @property
    def comments(self):
        return self.parser.comments

    def _got(self, data):
        for m in self.parser.feed(data):
            self.queue.put_nowait(m)

    async def next(self, timeout=5.0):
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, n, timeout=10.0):
        out = []
        for _ in range(n):
            m = await self.next(timeout)
            assert m is not None, "the stream ended after {} of {} messages, the last: "\
                "{}".format(len(out), n, [(x.get("id"), x.get("event"), x["data"][:100])
                                         for x in out[-2:]])
            out.append(m)
        return out


class CurlStream(_Stream):
    """``curl -sN -i <url>``: the head, then the body as it comes."""

    @classmethod
    async def open(cls, url, headers=SSE, *args):
        self = cls()
        cmd = ["curl", "-sN", "-i", "--max-time", "60"]
        for k, v in headers.items():
            cmd += ["-H", "{}: {}".format(k, v)]
        self.proc = await asyncio.create_subprocess_exec(*cmd, *args, url,
                                                         stdout=asyncio.subprocess.PIPE)
        head = await asyncio.wait_for(self.proc.stdout.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                self.headers[k.strip().lower()] = v.strip()
        self.task = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        while True:
            data = await self.proc.stdout.read(1 << 16)
            if not data:
                self.queue.put_nowait(None)
                return
            self._got(data)

    async def close(self):
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        self.task.cancel()


class HttpxStream(_Stream):
    """An httpx streaming GET."""

    @classmethod
    async def open(cls, client, url, headers=SSE):
        self = cls()
        ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.ensure_future(self._read(client, url, headers, ready))
        await asyncio.wait_for(ready, 10)
        return self

    async def _read(self, client, url, headers, ready):
        try:
            async with client.stream("GET", url, headers=headers) as r:
                self.status = r.status_code
                self.headers = dict(r.headers)
                ready.set_result(None)
                async for chunk in r.aiter_raw():
                    self._got(chunk)
        except (httpx.HTTPError, asyncio.CancelledError) as exc:
            if not ready.done():
                ready.set_exception(exc)
        self.queue.put_nowait(None)

    async def close(self):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


def ce(msg):
    """The CloudEvent (a dict) of an SSE message."""
    return json.loads(msg["data"])


def structured(i, subject_type="t", data=None):
    body = {"specversion": "1.0", "id": "e{}".format(i), "source": "/test", "type": subject_type,
            "datacontenttype": "application/json", "data": data if data is not None else {"n": i}}
    return json.dumps(body)


async def post_events(hc, base, subject, ids, ack=False):
    """Publish one structured event per id over HTTP; the acks with ``ack``."""
    out = []
    for i in ids:
        r = await hc.post("{}/events/{}{}".format(base, subject, "?ack=1" if ack else ""),
                          content=structured(i),
                          headers={"content-type": "application/cloudevents+json"})
        assert r.status_code == (201 if ack else 202), r.text
        if ack:
            out.extend(r.json()["acks"])
    return out


def web_server(ffserver, free_port, **settings):
    settings.setdefault("http_port", free_port())
    return ffserver(**settings)


def base_of(srv):
    return "http://127.0.0.1:{}".format(srv.http_port)


def n_subs(srv):
    return sum(len(c.subs) for c in srv.conns.values())


def sse_conns(srv):
    return [c for c in srv.conns.values() if c.door == "sse"]


# -- live subscriptions -----------------------------------------------------------------------


def test_live_sse_gets_http_and_native_publishes_in_order(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            curl = await CurlStream.open(base + "/events/orders.*")
            hx = await HttpxStream.open(hc, base + "/events?subject=orders.eu&subject=audit.>")
            try:
                for s in (curl, hx):
                    assert s.status == 200
                    assert s.headers["content-type"] == "text/event-stream"
                    assert s.headers["cache-control"] == "no-store"
                    assert "content-length" not in s.headers
                await wait_until(lambda: n_subs(srv) == 3, what="3 subscriptions")
                assert sorted(c.door for c in srv.conns.values()) == ["sse", "sse"]

                await post_events(hc, base, "orders.eu", range(5))
                async with await fc.connect(srv.url) as nc:
                    for i in range(5, 10):
                        nc.publish("orders.eu", json.dumps({"n": i}).encode(),
                                   id="e{}".format(i), source="/test", type="t",
                                   datacontenttype="application/json")
                    nc.publish("audit.x", b"plain text", id="a1", source="/test", type="t",
                               datacontenttype="text/plain")
                    nc.publish("orders.us", b"\x00\x01", id="u1", source="/test", type="t")
                    await nc.flush()
                # batch mode, routed on each event's type
                batch = "[" + ",".join(structured(i, "orders.eu") for i in range(10, 13)) + "]"
                r = await hc.post(base + "/events", content=batch,
                                  headers={"content-type": "application/cloudevents-batch+json"})
                assert r.status_code == 202, r.text

                got = await curl.take(12)       # orders.*: orders.eu and orders.us
                ids = [ce(m)["id"] for m in got]
                assert ids == ["e{}".format(i) for i in range(10)] + ["u1", "e10"]
                assert all("id" not in m and "event" not in m for m in got)
                assert ce(got[0])["data"] == {"n": 0}
                assert ce(got[10])["data_base64"] == "AAE="
                got = await hx.take(14)         # orders.eu and audit.>
                ids = [ce(m)["id"] for m in got]
                assert ids == ["e{}".format(i) for i in range(10)] + ["a1"] + [
                    "e{}".format(i) for i in range(10, 13)]
                assert ce(got[10])["data"] == "plain text"
                # the bytes are the CloudEvents JSON of fastflow.event.to_json
                ev = Event("audit.x", b"plain text", id="a1", source="/test", type="t",
                           datacontenttype="text/plain")
                assert got[10]["data"] == to_json(ev)
            finally:
                await curl.close()
                await hx.close()
            await wait_until(lambda: n_subs(srv) == 0, what="the subscriptions to go")

    aloop(main)


def test_live_sse_queue_group_and_keepalive(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port, ping_interval=0.3) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            a = await CurlStream.open(base + "/events/jobs.>?queue=workers")
            b = await HttpxStream.open(hc, base + "/events/jobs.>?queue=workers")
            try:
                await wait_until(lambda: n_subs(srv) == 2, what="2 subscriptions")
                await post_events(hc, base, "jobs.x", range(40))
                got = []
                while len(got) < 40:
                    for s in (a, b):
                        while not s.queue.empty():
                            got.append(ce(s.queue.get_nowait())["id"])
                    await asyncio.sleep(0.01)
                assert sorted(got) == sorted("e{}".format(i) for i in range(40))
                # idle: a comment keeps the stream open through proxies
                await wait_until(lambda: "keep-alive" in a.comments, 5, "a keep-alive")
            finally:
                await a.close()
                await b.close()

    aloop(main)


def test_live_sse_refusals(ffserver, free_port):
    async def main():
        tokens = [{"token": "bob-t", "name": "bob",
                   "permissions": {"subscribe": {"allow": ["public.>"], "queue_deny": ["x"]}}}]
        async with web_server(ffserver, free_port, tokens=tokens) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            bob = {"authorization": "Bearer bob-t"}
            r = await hc.get(base + "/events/public.a", headers=bob)
            assert r.status_code == 406
            assert "Accept: text/event-stream" in r.json()["error"]["message"]
            r = await hc.get(base + "/events/public.a", headers=SSE)
            assert r.status_code == 401
            r = await hc.get(base + "/events/orders.a", headers={**SSE, **bob})
            assert r.status_code == 403
            assert r.json()["error"]["message"] == "permission denied: subscribe to 'orders.a'"
            r = await hc.get(base + "/events/public.a?subject=orders.>", headers={**SSE, **bob})
            assert r.status_code == 403
            r = await hc.get(base + "/events/public.a?queue=x", headers={**SSE, **bob})
            assert r.status_code == 403
            assert "queue group 'x'" in r.json()["error"]["message"]
            r = await hc.get(base + "/events/public..a", headers={**SSE, **bob})
            assert r.status_code == 400 and "invalid subject pattern" in r.text
            r = await hc.get(base + "/events?subject=a.>.b", headers={**SSE, **bob})
            assert r.status_code == 400 and "query parameter 'subject'" in r.text
            r = await hc.get(base + "/events", headers={**SSE, **bob})
            assert r.status_code == 400 and "no subject pattern" in r.text
            # HEAD: the head alone, nothing subscribed, the connection kept
            r = await hc.head(base + "/events/public.a", headers={**SSE, **bob})
            assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
            r = await hc.get(base + "/events/public.a", headers=bob)
            assert r.status_code == 406 and n_subs(srv) == 0
            # the token in the query (EventSource cannot set headers)
            s = await CurlStream.open(base + "/events/public.a?access_token=bob-t")
            assert s.status == 200
            await s.close()
            assert n_subs(srv) <= 1

    asyncio.run(main())


def test_slow_sse_consumer_is_cut_while_others_are_served(aloop, ffserver, free_port):
    async def main():
        mib = 1 << 20
        # (a socket fuller than max_pending is cut before publishers pause at the
        # high-water mark, 4 MiB)
        async with web_server(ffserver, free_port, max_pending=2 * mib,
                              max_payload=256 << 10) as srv, \
                httpx.AsyncClient(timeout=20) as hc:
            base = base_of(srv)
            good = await HttpxStream.open(hc, base + "/events/load.>")
            advisories = await CurlStream.open(base + "/events/$SYS.advisory.slow_consumer")
            # a client that never reads, with a small receive buffer
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(("127.0.0.1", srv.http_port))
            slow.sendall(b"GET /events/load.> HTTP/1.1\r\nhost: x\r\n"
                         b"accept: text/event-stream\r\n\r\n")
            try:
                await wait_until(lambda: n_subs(srv) == 3, what="3 subscriptions")
                # rounds the good reader keeps up with; the slow one falls behind
                got = []
                async with await fc.connect(srv.url) as nc:
                    payload = b"x" * (8 << 10)
                    for i in range(1200):
                        nc.publish("load.x", payload, id="p{}".format(i), type="t")
                        if i % 50 == 49:
                            await nc.flush()
                            got += await good.take(50)
                            if srv.n_slow_consumers:
                                break
                n = len(got)
                assert [ce(m)["id"] for m in got] == ["p{}".format(i) for i in range(n)]
                await wait_until(lambda: srv.n_slow_consumers == 1, what="the cut")
                adv = ce(await advisories.next())
                assert adv["type"] == "io.fastflow.advisory.slow_consumer"
                assert adv["data"]["subscriptions"] == ["load.>"]
                assert "max_pending" in adv["data"]["reason"]
                # the cut client finds the reason at the end of what it gets
                slow.setblocking(False)
                data = b""
                loop = asyncio.get_running_loop()
                while True:
                    try:
                        chunk = await asyncio.wait_for(loop.sock_recv(slow, 1 << 16), 5)
                    except ConnectionResetError:
                        break
                    if not chunk:
                        break
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"event: close\ndata: {\"code\":503,\"message\":\"slow consumer" in data
                assert len(sse_conns(srv)) == 2
            finally:
                slow.close()
                await good.close()
                await advisories.close()

    aloop(main)


# -- a stream's events: SSE tail --------------------------------------------------------------


STREAM = [{"name": "orders", "subjects": ["orders.>"]}]


def test_stream_tail_replays_then_follows_without_gap_or_duplicate(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port, streams=STREAM) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            async with await fc.connect(srv.url) as nc:
                for i in range(3000):
                    nc.publish("orders.eu", b'{"n":%d}' % i, id="s{}".format(i), type="t",
                               datacontenttype="application/json")
                await nc.flush()
                tail = await CurlStream.open(base + "/streams/orders/events")
                assert tail.status == 200
                # publishing goes on while the tail replays what is stored
                for i in range(3000, 4000):
                    nc.publish("orders.eu", b'{"n":%d}' % i, id="s{}".format(i), type="t",
                               datacontenttype="application/json")
                    if i % 100 == 0:
                        await nc.flush()
                        await asyncio.sleep(0)
                await nc.flush()
                got = await tail.take(4000)
                assert [int(m["id"]) for m in got] == list(range(1, 4001))
                assert [ce(m)["id"] for m in got] == ["s{}".format(i) for i in range(4000)]
                assert ce(got[5])["data"] == {"n": 5}
                # live now: one more arrives at once
                nc.publish("orders.us", b"x", id="last", type="t")
                m = await tail.next()
                assert (m["id"], ce(m)["id"]) == ("4001", "last")
                await tail.close()

                # EventSource's reconnect: Last-Event-ID wins over the query
                hx = await HttpxStream.open(hc, base + "/streams/orders/events?start=first",
                                            {**SSE, "last-event-id": "3990"})
                got = await hx.take(11)
                assert [int(m["id"]) for m in got] == list(range(3991, 4002))
                await hx.close()
                # start=last, start=new, seq=, filter=
                s = await CurlStream.open(base + "/streams/orders/events?start=last")
                assert (await s.next())["id"] == "4001"
                await s.close()
                s = await CurlStream.open(base + "/streams/orders/events?filter=orders.us&seq=2")
                m = await s.next()
                assert (m["id"], ce(m)["id"]) == ("4001", "last")
                await s.close()
                s = await CurlStream.open(base + "/streams/orders/events?start=new")
                await wait_until(lambda: any(t.stream for c in sse_conns(srv)
                                             for t in c.tasks or ()), what="the tail")
                await asyncio.sleep(0.05)
                nc.publish("orders.eu", b"y", id="new", type="t")
                m = await s.next()
                assert (m["id"], ce(m)["id"]) == ("4002", "new")
                await s.close()

    aloop(main)


def test_stream_tail_reports_lost_events_and_ends_with_its_stream(aloop, ffserver, free_port):
    async def main():
        streams = [{"name": "small", "subjects": ["s.>"], "max_events": 10}]
        async with web_server(ffserver, free_port, streams=streams) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            await post_events(hc, base, "s.a", range(30))
            tail = await CurlStream.open(base + "/streams/small/events?seq=5")
            lost = await tail.next()
            assert lost["event"] == "lost" and lost["id"] == "20"
            assert json.loads(lost["data"]) == {"stream": "small", "first": 5, "last": 20,
                                                "count": 16}
            got = await tail.take(10)
            assert [m["id"] for m in got] == [str(i) for i in range(21, 31)]
            # the same from a JSON page
            r = await hc.get(base + "/streams/small/events?seq=5")
            page = r.json()
            assert (page["lost"], page["count"], page["next_seq"]) == (16, 10, 31)
            # deleting the stream ends its tails with the reason
            r = await hc.delete(base + "/streams/small")
            assert r.status_code == 200 and r.json() == {"deleted": "small"}
            m = await tail.next()
            assert m["event"] == "close"
            assert json.loads(m["data"]) == {"code": 404, "message":
                                             "stream 'small' was deleted"}
            assert await tail.next() is None
            await tail.close()
            r = await hc.get(base + "/streams/small/events", headers=SSE)
            assert r.status_code == 404 and "no stream named 'small'" in r.text

    aloop(main)


def test_stream_tail_resumes_across_a_server_restart(ffproc, free_port, tmp_path):
    """A file-backed stream; the tail's client goes away, the server
    restarts, the client comes back with Last-Event-ID: nothing lost, no
    duplicate."""
    http_port = free_port()
    cfg = tmp_path / "server.toml"
    cfg.write_text('[[streams]]\nname = "orders"\nsubjects = ["orders.>"]\n')
    server = ffproc("--http-port", http_port, "--data-dir", tmp_path / "data", "-c", cfg)
    base = "http://127.0.0.1:{}".format(http_port)

    async def main():
        await server.astart()
        async with httpx.AsyncClient(timeout=10) as hc:
            acks = await post_events(hc, base, "orders.eu", range(40), ack=True)
            assert [a["seq"] for a in acks] == list(range(1, 41))
            tail = await CurlStream.open(base + "/streams/orders/events")
            got = await tail.take(25)
            await tail.close()              # the client goes away mid-stream
            last_id = got[-1]["id"]
            assert last_id == "25"

            await server.astop()
            await server.astart()
            await post_events(hc, base, "orders.eu", range(40, 60), ack=True)
            tail = await CurlStream.open(base + "/streams/orders/events?start=first",
                                         {**SSE, "Last-Event-ID": last_id})
            got += await tail.take(35)
            # a restart while the tail follows: its stream ends, it comes back
            await server.astop()
            assert await tail.next() is None
            await tail.close()
            last_id = got[-1]["id"]
            await server.astart()
            async with await fc.connect(server.url) as nc:
                for i in range(60, 70):
                    await nc.publish_ack("orders.us", b"", id="e{}".format(i), type="t",
                                         source="/test")
            tail = await CurlStream.open(base + "/streams/orders/events",
                                         {**SSE, "Last-Event-ID": last_id})
            got += await tail.take(10)
            await tail.close()
            assert [int(m["id"]) for m in got] == list(range(1, 71))
            assert [ce(m)["id"] for m in got] == ["e{}".format(i) for i in range(70)]
        await server.astop()

    asyncio.run(main())


# -- a stream's events: JSON pages ----------------------------------------------------------


def test_json_pages_of_a_stream(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port, streams=STREAM) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            url = base + "/streams/orders/events"
            await post_events(hc, base, "orders.eu", range(245))
            # the data as received: spacing and key order inside it are kept
            raw = '{"b": 2,  "a":[1, 2]}'
            body = ('{"specversion":"1.0","id":"raw","source":"/test","type":"t",'
                    '"datacontenttype":"application/json","data":' + raw + '}')
            r = await hc.post(base + "/events/orders.raw", content=body,
                              headers={"content-type": "application/cloudevents+json"})
            assert r.status_code == 202
            seen = []
            seq = 1
            pages = 0
            while True:
                r = await hc.get(url, params={"seq": seq, "limit": 100})
                assert r.status_code == 200
                assert r.headers["content-type"] == "application/json"
                page = r.json()
                pages += 1
                assert page["stream"] == "orders" and page["lost"] == 0
                assert page["last_seq"] == 246
                assert int(r.headers["ff-next-seq"]) == page["next_seq"]
                seen += page["events"]
                if not page["events"]:
                    break
                assert page["count"] == len(page["events"]) <= 100
                seq = page["next_seq"]
            assert pages == 4 and seq == 247
            assert [e["seq"] for e in seen] == list(range(1, 247))
            assert [e["event"]["id"] for e in seen[:245]] == ["e{}".format(i)
                                                              for i in range(245)]
            assert seen[0]["subject"] == "orders.eu" and seen[0]["event"]["data"] == {"n": 0}
            assert isinstance(seen[0]["ts"], int)
            r = await hc.get(url, params={"start": "last"})
            assert r.json()["events"][0]["seq"] == 246
            assert ('"data":' + raw + "}}]") in r.text
            # a time: from the first event stored at or after it
            t = seen[100]["ts"]
            r = await hc.get(url, params={"time": t, "limit": 1})
            assert [e["seq"] for e in r.json()["events"]] == [101]
            r = await hc.get(url, params={"filter": "orders.raw"})
            assert [e["seq"] for e in r.json()["events"]] == [246]
            # the CloudEvents batch format, paging in the headers
            r = await hc.get(url, params={"seq": 240},
                             headers={"accept": "application/cloudevents-batch+json"})
            assert r.headers["content-type"] == "application/cloudevents-batch+json"
            assert [e["id"] for e in r.json()] == ["e{}".format(i) for i in range(239, 245)] + [
                "raw"]
            assert (r.headers["ff-next-seq"], r.headers["ff-lost"]) == ("247", "0")
            # a long poll: the page comes when the stream gets an event
            poll = asyncio.ensure_future(hc.get(url, params={"seq": 247, "wait": 5}))
            await asyncio.sleep(0.2)
            assert not poll.done()
            await post_events(hc, base, "orders.eu", [999])
            r = await poll
            assert [e["event"]["id"] for e in r.json()["events"]] == ["e999"]
            r = await hc.get(url, params={"seq": 248, "wait": 0.2})
            assert r.json()["events"] == [] and r.json()["next_seq"] == 248
            # bad parameters are named
            for q, word in (("seq=x", "'seq'"), ("limit=0", "'limit'"), ("limit=10001", "'limit'"),
                            ("start=middle", "'start'"), ("time=yesterday", "'time'"),
                            ("filter=a..b", "'filter'"), ("wait=-1", "'wait'"),
                            ("seq=1&time=5", "'seq' or 'time'"),
                            ("seq=99999999999999999999", "'seq'"), ("seq=" + "9" * 5000, "'seq'"),
                            ("seq=%C2%B2", "'seq'"), ("limit=" + "1" * 4500, "'limit'")):
                r = await hc.get(url + "?" + q)
                assert r.status_code == 400, q
                assert word in r.json()["error"]["message"], (q, r.text)
            for bad in ("abc", "-1", "9" * 20, "9" * 5000):
                r = await hc.get(url, headers={**SSE, "last-event-id": bad})
                assert r.status_code == 400 and "Last-Event-ID" in r.text
            r = await hc.get(base + "/streams/nope/events")
            assert r.status_code == 404 and r.json()["error"]["message"] == \
                "no stream named 'nope'"

    aloop(main)


def test_streams_list_info_add_delete(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port, streams=STREAM) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            r = await hc.get(base + "/streams")
            assert [s["name"] for s in r.json()["streams"]] == ["orders"]
            r = await hc.post(base + "/streams/logs", json={"subjects": ["logs.>"],
                                                            "max_events": 100})
            assert r.status_code == 201, r.text
            assert r.json()["retention"]["max_events"] == 100
            r = await hc.post(base + "/streams/logs", json={"subjects": ["other.>"]})
            assert r.status_code == 409
            await post_events(hc, base, "logs.a", range(3))
            r = await hc.get(base + "/streams/logs")
            info = r.json()
            assert (info["name"], info["last_seq"], info["events"]) == ("logs", 3, 3)
            r = await hc.post(base + "/streams/logs/purge", json={"up_to": 2})
            assert r.json() == {"purged": 2}
            r = await hc.delete(base + "/streams/logs")
            assert r.json() == {"deleted": "logs"}
            r = await hc.get(base + "/streams/logs")
            assert r.status_code == 404
            r = await hc.put(base + "/streams/orders")
            assert r.status_code == 405
            r = await hc.patch(base + "/streams/orders/events")
            assert r.status_code == 405
            r = await hc.post(base + "/streams/orders/events")
            assert r.status_code == 405 and r.headers["allow"] == "GET"
            r = await hc.get(base + "/streams/orders/other")
            assert r.status_code == 404
            r = await hc.post(base + "/streams/x", content=b"[1]")
            assert r.status_code == 400 and "must be a JSON object" in r.text

    aloop(main)


# -- durable consumers over HTTP ------------------------------------------------------------


def test_consumer_fetch_ack_and_redelivery(aloop, ffserver, free_port):
    async def main():
        async with web_server(ffserver, free_port, streams=STREAM) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)
            c = base + "/streams/orders/consumers/work"
            await post_events(hc, base, "orders.eu", range(5))
            r = await hc.post(c, json={"ack_wait": 0.5})
            assert r.status_code == 201, r.text
            assert r.json()["config"]["ack_wait"] == 0.5
            r = await hc.post(c, json={"ack_wait": 0.5})
            assert r.status_code == 200
            r = await hc.post(c + "/fetch", params={"n": 3})
            assert r.status_code == 200
            msgs = r.json()["messages"]
            assert [(m["seq"], m["deliveries"], m["event"]["id"]) for m in msgs] == [
                (1, 1, "e0"), (2, 1, "e1"), (3, 1, "e2")]
            assert msgs[0]["ack"] == "$ACK.orders.work.1"
            assert msgs[0]["subject"] == "orders.eu" and msgs[0]["event"]["data"] == {"n": 0}
            # ack one by seq, nak one (due at once) by its token, leave the third
            r = await hc.post(c + "/ack", json={"seqs": [1]})
            assert r.json() == {"kind": "ack", "count": 1}
            r = await hc.post(c + "/ack", json={"kind": "nak", "tokens": [msgs[1]["ack"]]})
            assert r.status_code == 200
            r = await hc.post(c + "/fetch", params={"n": 10})
            assert [(m["seq"], m["deliveries"]) for m in r.json()["messages"]] == [
                (2, 2), (4, 1), (5, 1)]
            r = await hc.post(c + "/ack?seq=2&seq=4&seq=5")
            assert r.json()["count"] == 3
            # seq 3 was never acknowledged: redelivered after ack_wait
            r = await hc.post(c + "/fetch", params={"n": 10, "wait": 3})
            assert [(m["seq"], m["deliveries"]) for m in r.json()["messages"]] == [(3, 2)]
            r = await hc.post(c + "/ack", json={"kind": "term", "seqs": [3]})
            assert r.status_code == 200
            r = await hc.get(c)
            info = r.json()
            assert (info["acked"], info["terminated"], info["pending"], info["ack_floor"]) == (
                4, 1, 0, 5)
            # a fetch that waits gets the next event as it is stored
            fetch = asyncio.ensure_future(hc.post(c + "/fetch", params={"n": 5, "wait": 5}))
            await asyncio.sleep(0.2)
            assert not fetch.done()
            await post_events(hc, base, "orders.eu", [77])
            r = await fetch
            assert [m["event"]["id"] for m in r.json()["messages"]] == ["e77"]
            r = await hc.post(c + "/fetch", params={"wait": 0.1})
            assert r.json()["messages"] == []
            # list, errors, delete
            r = await hc.get(base + "/streams/orders/consumers")
            assert [x["name"] for x in r.json()["consumers"]] == ["work"]
            for body, word in (({"kind": "maybe", "seqs": [1]}, "'kind'"),
                               ({"seqs": ["1"]}, "'seqs'"),
                               ({"tokens": ["$ACK.orders.other.1"]}, "no such stream or"),
                               ({"tokens": ["$ACK.orders.work." + "9" * 5000]},
                                "not an ack subject"),
                               ({"tokens": ["$ACK.orders.work.\u00b2"]}, "not an ack subject"),
                               ({}, "nothing to acknowledge"),
                               ({"seqs": [1000]}, "beyond the last seq")):
                r = await hc.post(c + "/ack", json=body)
                assert r.status_code in (400, 404) and word in r.text, (body, r.text)
            r = await hc.post(c + "/fetch", params={"n": 0})
            assert r.status_code == 400 and "'n'" in r.text
            r = await hc.post(base + "/streams/orders/consumers/nope/fetch")
            assert r.status_code == 404
            assert r.json()["error"]["message"] == "stream 'orders' has no consumer 'nope'"
            r = await hc.delete(c)
            assert r.json() == {"deleted": "work"}
            r = await hc.post(c + "/fetch")
            assert r.status_code == 404

    aloop(main)


# -- permissions ------------------------------------------------------------------------------


def test_streams_api_checks_permissions(aloop, ffserver, free_port):
    async def main():
        tokens = [
            {"token": "alice-t", "name": "alice",
             "permissions": {"subscribe": ["orders.>"], "streams": "read"}},
            {"token": "bob-t", "name": "bob",
             "permissions": {"subscribe": ["other.>"], "streams": "read"}},
            {"token": "carol-t", "name": "carol",
             "permissions": {"subscribe": ["orders.>"], "streams": "none"}},
            {"token": "admin", "name": "admin"},
        ]
        async with web_server(ffserver, free_port, streams=STREAM, tokens=tokens) as srv, \
                httpx.AsyncClient(timeout=10) as hc:
            base = base_of(srv)

            def who(name):
                return {"authorization": "Bearer {}-t".format(name) if name != "admin"
                        else "Bearer admin"}

            r = await hc.get(base + "/streams")
            assert r.status_code == 401
            r = await hc.get(base + "/streams", headers=who("bob"))
            assert r.json() == {"streams": []}
            r = await hc.get(base + "/streams", headers=who("alice"))
            assert [s["name"] for s in r.json()["streams"]] == ["orders"]
            for path in ("/streams/orders", "/streams/orders/events"):
                r = await hc.get(base + path, headers=who("bob"))
                assert r.status_code == 403, path
                assert "permission denied" in r.json()["error"]["message"]
                r = await hc.get(base + path, headers=who("alice"))
                assert r.status_code == 200, path
            r = await hc.get(base + "/streams/orders/events", headers={**SSE, **who("bob")})
            assert r.status_code == 403
            r = await hc.get(base + "/streams/orders", headers=who("carol"))
            assert r.status_code == 403
            assert "stream requests need 'read'" in r.json()["error"]["message"]
            # with a filter bob may read, he reads only those events (none here)
            r = await hc.get(base + "/streams/orders/events?filter=other.x", headers=who("bob"))
            assert r.status_code == 200 and r.json()["events"] == []
            # managing needs 'manage'
            r = await hc.post(base + "/streams/mine", json={"subjects": ["orders.mine"]},
                              headers=who("alice"))
            assert r.status_code == 403 and "managing streams needs 'manage'" in r.text
            r = await hc.delete(base + "/streams/orders", headers=who("alice"))
            assert r.status_code == 403
            # a consumer belongs to whoever made it
            r = await hc.post(base + "/streams/orders/consumers/a", json={},
                              headers=who("alice"))
            assert r.status_code == 201
            r = await hc.post(base + "/streams/orders/consumers/a/fetch", headers=who("bob"))
            assert r.status_code == 403
            r = await hc.get(base + "/streams/orders/consumers", headers=who("bob"))
            assert r.json() == {"consumers": []}       # (the list shows what one may read)
            r = await hc.get(base + "/streams/orders/consumers", headers=who("alice"))
            assert [c["name"] for c in r.json()["consumers"]] == ["a"]
            r = await hc.post(base + "/streams/orders/consumers/a/fetch",
                              headers=who("admin"))
            assert r.status_code == 200
            r = await hc.delete(base + "/streams/orders/consumers/a", headers=who("alice"))
            assert r.status_code == 200

    aloop(main)
