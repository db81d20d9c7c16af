"""The HTTP door's publish path end to end (docs/http.md): CloudEvents
over HTTP from the official ``cloudevents`` SDK through ``httpx`` in the
three content modes, what the engine stored (the bytes received), the
error answers, auth, CORS, the webhook handshake, keep-alive and
pipelining on raw sockets, the limits, and bad input thrown at a live
server that keeps serving others.
"""

import asyncio
import base64
import json
import random

import httpx
import pytest
from cloudevents.core.bindings import http as sdk_http
from cloudevents.core.v1.event import CloudEvent

import fastflow
from fastflow import Flow, Retention
from fastflow.server import hash_password

from helpers import wait_until


def _ce(i, data=None, **attrs):
    a = {"type": "orders.created", "source": "/shop/{}".format(i % 3), "id": "ev-{}".format(i),
         "datacontenttype": "application/json"}
    a.update(attrs)
    return CloudEvent(a, {"n": i, "sku": "A-{}".format(i)} if data is None else data)


def to_binary(ev):
    m = sdk_http.to_binary_event(ev)
    return m.headers, m.body


def to_structured(ev):
    m = sdk_http.to_structured_event(ev)
    return m.headers, m.body


def _batch(events):
    return json.dumps([json.loads(to_structured(e)[1]) for e in events]).encode()


def _serve(ffserver, free_port, **kw):
    kw.setdefault("streams", [{"name": "orders", "subjects": ["orders.>", "o.>"]}])
    return ffserver(http_port=free_port(), **kw)


def _stored(srv, stream="orders"):
    """The events stream ``stream`` holds, decoded from their records."""
    return [fastflow.Event.decode(s, bytes(rec))
            for _seq, _ts, s, rec in srv.flow.streams()[stream].log.read(1, 1000)]


def _url(srv, path):
    return "http://127.0.0.1:{}{}".format(srv.http_port, path)


async def _raw(srv, data, read_until=None, timeout=5.0):
    """Send ``data`` on a new socket; the bytes answered until the server
    closes (or ``read_until`` was seen)."""
    r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
    w.write(data)
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(r.read(65536), timeout)
            if not chunk:
                break
            out += chunk
            if read_until is not None and out.count(b"HTTP/1.1 ") >= read_until \
                    and out.endswith((b"}", b"\r\n\r\n")):
                break
    finally:
        w.close()
    return out


def test_sdk_publishes_in_all_three_modes_and_the_record_keeps_the_bytes(aloop, ffserver,
                                                                           free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with httpx.AsyncClient() as c:
                h, body = to_binary(_ce(0))
                r = await c.post(_url(srv, "/events/orders.new"), headers=h, content=body)
                assert r.status_code == 202, r.text
                assert r.headers["ff-count"] == "1"
                h, body = to_structured(_ce(1))
                r = await c.post(_url(srv, "/events/orders.new?ack=1"), headers=h, content=body)
                assert r.status_code == 201, r.text
                assert r.json() == {"count": 1, "acks": [
                    {"id": "ev-1", "stream": "orders", "seq": 2, "duplicate": False}]}
                evs = [_ce(i) for i in range(2, 7)]
                r = await c.post(_url(srv, "/events/orders.new"), headers={
                    "content-type": "application/cloudevents-batch+json",
                    "ff-ack": "1"}, content=_batch(evs))
                assert r.status_code == 201, r.text
                assert [a["seq"] for a in r.json()["acks"]] == [3, 4, 5, 6, 7]
                r = await c.post(_url(srv, "/events/orders.new"), headers={
                    "content-type": "application/cloudevents-batch+json"}, content=b"[]")
                assert r.status_code == 202 and r.headers["ff-count"] == "0"
            got = _stored(srv)
            assert [e.id for e in got] == ["ev-{}".format(i) for i in range(7)]
            assert all(e.routing_subject == "orders.new" for e in got)
            assert got[0].source == "/shop/0" and got[0].type == "orders.created"
            # binary mode: the body as received; structured: the data member's JSON text
            assert json.loads(got[0].data) == {"n": 0, "sku": "A-0"}
            assert json.loads(got[1].data) == {"n": 1, "sku": "A-1"}
            assert got[1].datacontenttype == "application/json"

    aloop(main)


def test_json_data_is_stored_as_sent_not_re_serialised(aloop, ffserver, free_port):
    data = b'{"b": 1.50, "a":[1, 2 ,3], "u": "\\u00e9"}'
    body = b'{"specversion":"1.0","id":"x","source":"/s","type":"t",' \
           b'"datacontenttype":"application/json","data": ' + data + b'  }'

    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with httpx.AsyncClient() as c:
                r = await c.post(_url(srv, "/events/o.raw"), content=body,
                                 headers={"content-type": "application/cloudevents+json"})
                assert r.status_code == 202
                r = await c.post(_url(srv, "/events/o.bin"), content=b"\x00\xff raw",
                                 headers={"ce-specversion": "1.0", "ce-id": "b", "ce-source": "/s",
                                          "ce-type": "t", "content-type":
                                          "application/octet-stream"})
                assert r.status_code == 202
            got = _stored(srv)
            assert got[0].data == data
            assert got[1].data == b"\x00\xff raw"

    aloop(main)


def test_post_events_routes_on_the_type(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            got = []
            srv.flow.subscribe("orders.>", lambda ev: got.append(ev))
            async with httpx.AsyncClient() as c:
                h, body = to_structured(_ce(1, type="orders.paid"))
                r = await c.post(_url(srv, "/events"), headers=h, content=body)
                assert r.status_code == 202, r.text
                h, body = to_structured(_ce(2, type="com.example/bad type"))
                r = await c.post(_url(srv, "/events"), headers=h, content=body)
                assert r.status_code == 400
                assert "cannot route it" in \
                    r.json()["error"]["message"]
            await wait_until(lambda: got, what="the routed event")
            assert got[0].routing_subject == "orders.paid" and got[0].id == "ev-1"

    aloop(main)


@pytest.mark.parametrize("case", [
    ("structured, not JSON", {"content-type": "application/cloudevents+json"}, b"{nope", 400,
     "not valid JSON"),
    ("structured, no id", {"content-type": "application/cloudevents+json"},
     b'{"specversion":"1.0","source":"/s","type":"t"}', 400, "'id'"),
    ("batch index", {"content-type": "application/cloudevents-batch+json"},
     b'[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0"}]', 400,
     "batch index 1"),
    ("batch not array", {"content-type": "application/cloudevents-batch+json"}, b'{}', 400,
     "expected a JSON array"),
    ("unknown format", {"content-type": "application/cloudevents+avro"}, b"x", 415,
     "unsupported CloudEvents format"),
    ("plain body", {"content-type": "text/plain"}, b"hello", 415, "no ce- headers"),
    ("binary, no source", {"ce-specversion": "1.0", "ce-id": "1", "ce-type": "t"}, b"", 400,
     "ce-source"),
    ("bad specversion", {"ce-specversion": "0.3", "ce-id": "1", "ce-type": "t",
                         "ce-source": "/s"}, b"", 400, "specversion"),
    ("bad percent", {"ce-specversion": "1.0", "ce-id": "%ff", "ce-type": "t", "ce-source": "/s"},
     b"", 400, "percent"),
], ids=lambda c: c[0])
def test_bad_events_get_400_or_415_naming_what_is_wrong(aloop, ffserver, free_port, case):
    _name, headers, body, status, text = case

    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with httpx.AsyncClient() as c:
                r = await c.post(_url(srv, "/events/o.x"), headers=headers, content=body)
                assert r.status_code == status, r.text
                assert text in r.json()["error"]["message"], r.text
                # the connection still serves: a good event after the bad one
                h, b = to_structured(_ce(9))
                r = await c.post(_url(srv, "/events/o.x"), headers=h, content=b)
                assert r.status_code == 202
            assert len(srv.flow.streams()["orders"].log) == 1

    aloop(main)


def test_a_bad_event_in_a_batch_publishes_none_of_it(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            evs = [json.loads(to_structured(_ce(i))[1]) for i in range(5)]
            evs[3]["time"] = "yesterday"
            async with httpx.AsyncClient() as c:
                r = await c.post(_url(srv, "/events/o.x"), content=json.dumps(evs),
                                 headers={"content-type": "application/cloudevents-batch+json"})
            assert r.status_code == 400 and "batch index 3" in r.text
            assert len(srv.flow.streams()["orders"].log) == 0

    aloop(main)


def test_paths_methods_and_subjects(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with httpx.AsyncClient() as c:
                r = await c.get(_url(srv, "/nope"))
                assert r.status_code == 404 and "/nope" in r.json()["error"]["message"]
                r = await c.put(_url(srv, "/events/o.x"), content=b"")
                assert r.status_code == 405 and "POST" in r.headers["allow"]
                h, b = to_structured(_ce(1))
                r = await c.post(_url(srv, "/events/o..x"), headers=h, content=b)
                assert r.status_code == 400 and "invalid subject 'o..x'" in r.text
                r = await c.post(_url(srv, "/events/o.*"), headers=h, content=b)
                assert r.status_code == 400
                r = await c.post(_url(srv, "/events/o.%C3%A9t%C3%A9"), headers=h, content=b)
                assert r.status_code == 202
                r = await c.get(_url(srv, "/healthz"))
                assert r.status_code == 200 and r.json() == {"status": "ok"}
            assert [e.routing_subject for e in _stored(srv)] == ["o.été"]

    aloop(main)


def test_auth_bearer_basic_and_permissions(aloop, ffserver, free_port):
    users = [{"user": "alice", "password": hash_password("s3cret"),
              "permissions": {"publish": {"allow": ["o.alice.>"]}}}]
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    bad = "Basic " + base64.b64encode(b"alice:wrong").decode()

    async def main():
        async with _serve(ffserver, free_port, token="tok", users=users) as srv:
            n = iter(range(100))

            async def post(c, path, auth=None):
                h, b = to_structured(_ce(next(n)))     # (a new id each: no duplicates)
                if auth is not None:
                    h = dict(h, authorization=auth)
                return await c.post(_url(srv, path), headers=h, content=b)

            async with httpx.AsyncClient() as c:
                r = await post(c, "/events/o.alice.x")
                assert r.status_code == 401
                assert "Bearer" in ",".join(r.headers.get_list("www-authenticate"))
                assert (await post(c, "/events/o.alice.x", "Bearer nope")).status_code == 401
                assert (await post(c, "/events/o.x", "Bearer tok")).status_code == 202
                assert (await post(c, "/events/o.x?access_token=tok")).status_code == 202
                r = await post(c, "/events/o.alice.x", basic)
                assert r.status_code == 202, r.text
                r = await post(c, "/events/o.bob.x", basic)
                assert r.status_code == 403
                assert "permission denied: publish to 'o.bob.x'" in r.text
                assert (await post(c, "/events/o.alice.x", bad)).status_code == 401
                r = await post(c, "/events/o.alice.x", "Digest x")
                assert r.status_code == 401 and "digest" in r.text.lower()
            assert len(srv.flow.streams()["orders"].log) == 3

    aloop(main)


def test_webhook_handshake_and_cors(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, http_cors_origins=["https://app.example"],
                          http_webhook_origins=["emitter.example"],
                          http_webhook_rate=100) as srv:
            async with httpx.AsyncClient() as c:
                r = await c.options(_url(srv, "/events"), headers={
                    "WebHook-Request-Origin": "emitter.example", "WebHook-Request-Rate": "30"})
                assert r.status_code == 200
                assert r.headers["webhook-allowed-origin"] == "emitter.example"
                assert r.headers["webhook-allowed-rate"] == "30"
                assert "POST" in r.headers["allow"]
                r = await c.options(_url(srv, "/events"), headers={
                    "WebHook-Request-Origin": "evil.example"})
                assert r.status_code == 403
                r = await c.options(_url(srv, "/events/o.x"), headers={
                    "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "content-type, ce-id"})
                assert r.status_code == 204
                assert r.headers["access-control-allow-origin"] == "https://app.example"
                assert "POST" in r.headers["access-control-allow-methods"]
                assert r.headers["access-control-allow-headers"] == "content-type, ce-id"
                h, b = to_structured(_ce(1))
                r = await c.post(_url(srv, "/events/o.x"), content=b,
                                 headers=dict(h, origin="https://app.example"))
                assert r.headers["access-control-allow-origin"] == "https://app.example"
                r = await c.post(_url(srv, "/events/o.x"), content=b,
                                 headers=dict(h, origin="https://other.example"))
                assert "access-control-allow-origin" not in r.headers

    aloop(main)


def test_keep_alive_and_pipelining_answer_in_order(aloop, ffserver, free_port):
    def post(i, close=False):
        body = json.dumps({"specversion": "1.0", "id": str(i), "source": "/p",
                           "type": "t"}).encode()
        return (b"POST /events/o.p?ack=1 HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/cloudevents+json\r\nContent-Length: %d\r\n%s\r\n" % (
                    len(body), b"Connection: close\r\n" if close else b"")) + body

    async def main():
        async with _serve(ffserver, free_port) as srv:
            data = b"".join(post(i) for i in range(50)) + post(50, close=True)
            out = await _raw(srv, data)
            answers = out.split(b"HTTP/1.1 ")[1:]
            assert len(answers) == 51
            seqs = [json.loads(a[a.index(b"\r\n\r\n") + 4:])["acks"][0]["seq"] for a in answers]
            assert seqs == list(range(1, 52))
            assert b"connection: close" in answers[-1]
            # byte by byte still works
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            for b in post(99, close=True):
                w.write(bytes([b]))
            await w.drain()
            out = await asyncio.wait_for(r.read(), 5)
            w.close()
            assert out.startswith(b"HTTP/1.1 201 ")

    aloop(main)


@pytest.mark.parametrize("case", [
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(40)), b"400"),
    ("bad method", b"BREW /events HTTP/1.1\r\n\r\n", b"501"),
    ("bad version", b"GET / HTTP/2.0\r\n\r\n", b"505"),
    ("huge head", b"GET / HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n", b"431"),
    ("many headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"431"),
    ("body over limit", b"POST /events/o.x HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n",
     b"413"),
    ("bad length", b"POST /events/o.x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
    ("two lengths", b"POST /events/o.x HTTP/1.1\r\nContent-Length: 1\r\n"
                    b"Content-Length: 2\r\n\r\nab", b"400"),
    ("cr in header", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", b"400"),
    ("nul in target", b"GET /\x00 HTTP/1.1\r\n\r\n", b"400"),
    ("non-ascii target", b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", b"400"),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_malformed_requests_are_answered_and_closed(aloop, ffserver, free_port, case):
    _name, data, status = case

    async def main():
        async with _serve(ffserver, free_port) as srv:
            out = await _raw(srv, data)
            assert out.startswith(b"HTTP/1.1 " + status), out[:200]
            assert b"connection: close" in out
            async with httpx.AsyncClient() as c:         # others are still served
                r = await c.get(_url(srv, "/healthz"))
                assert r.status_code == 200

    aloop(main)


def test_chunked_bodies_and_body_limit(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, http_max_body=4096) as srv:
            body = json.dumps({"specversion": "1.0", "id": "c", "source": "/c",
                               "type": "t"}).encode()
            chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                               for i in range(0, len(body), 7)) + b"0\r\n\r\n"
            out = await _raw(srv, b"POST /events/o.c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                  b"Content-Type: application/cloudevents+json\r\n"
                                  b"Connection: close\r\n\r\n" + chunked)
            assert out.startswith(b"HTTP/1.1 202"), out
            big = b"a" * 5000
            out = await _raw(srv, b"POST /events/o.c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                  b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
            assert out.startswith(b"HTTP/1.1 413"), out[:100]
            assert len(srv.flow.streams()["orders"].log) == 1

    aloop(main)


def test_slow_requests_and_idle_connections_are_closed(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, http_request_timeout=1.0,
                          http_idle_timeout=1.0) as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            w.write(b"POST /events/o.x HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc")
            out = await asyncio.wait_for(r.read(), 5)
            assert out.startswith(b"HTTP/1.1 408"), out
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            w.write(b"GET /healthz HTTP/1.1\r\n\r\n")
            out = await asyncio.wait_for(r.read(), 5)    # answered, then closed when idle
            assert out.startswith(b"HTTP/1.1 200") and out.count(b"HTTP/1.1") == 1
            w.close()

    aloop(main)


def test_full_stream_answers_429_with_retry_after(aloop, ffserver, free_port):
    async def main():
        flow = Flow()
        flow.add_stream("tiny", ["o.>"], Retention(max_events=2, discard="new"))
        async with ffserver(flow=flow, http_port=free_port()) as srv:
            async with httpx.AsyncClient() as c:
                for i in range(2):
                    h, b = to_structured(_ce(i))
                    r = await c.post(_url(srv, "/events/o.x"), headers=h, content=b)
                    assert r.status_code == 202
                h, b = to_structured(_ce(2))
                r = await c.post(_url(srv, "/events/o.x"), headers=h, content=b)
                assert r.status_code == 429, r.text
                assert r.headers["retry-after"] == "1"
        flow.close()

    aloop(main)


def test_random_bytes_never_stop_the_server(aloop, ffserver, free_port, seed):
    rng = random.Random(seed)
    pieces = [b"GET ", b"POST ", b"/events/o.x", b" HTTP/1.1\r\n", b"Content-Length: 5\r\n",
              b"Transfer-Encoding: chunked\r\n", b"\r\n", b"\r\n\r\n", b"ce-id: 1\r\n", b"\x00",
              b"\xff\xfe", b"{}", b"0\r\n\r\n", b"Upgrade: websocket\r\n", b":", b" "]

    async def main():
        async with _serve(ffserver, free_port) as srv:
            for _ in range(40):
                data = b"".join(rng.choice(pieces) if rng.random() < 0.7 else
                                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
                                for _ in range(rng.randrange(1, 30)))
                r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
                w.write(data)
                await w.drain()
                w.write_eof()
                try:
                    await asyncio.wait_for(r.read(), 5)
                except (ConnectionError, asyncio.TimeoutError):
                    pass
                w.close()
            async with httpx.AsyncClient() as c:
                h, b = to_structured(_ce(1))
                r = await c.post(_url(srv, "/events/o.x"), headers=h, content=b)
                assert r.status_code == 202

    aloop(main)


def test_expect_100_continue(aloop, ffserver, free_port, peer):
    """RFC 9110 10.1.1: ``100 Continue`` before the body is sent; not for
    HTTP/1.0, not before the answers of requests ahead of it, not when the
    head is refused (401, body unread); another expectation is 417; curl
    (which waits for the 100, up to 15 s here) gets it."""
    peer("curl")
    body = to_structured(_ce(1))[1]
    head = (b"POST /events/o.x HTTP/1.1\r\nhost: h\r\ncontent-type: "
            b"application/cloudevents+json\r\nexpect: 100-continue\r\ncontent-length: %d\r\n\r\n"
            % len(body))

    async def main():
        async with _serve(ffserver, free_port) as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            w.write(head)
            got = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert got == b"HTTP/1.1 100 Continue\r\n\r\n"
            w.write(body)
            got = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert got.startswith(b"HTTP/1.1 202 ")
            w.close()
            # pipelined behind a request: no interim answer ahead of its answer
            out = await _raw(srv, b"GET /nowhere HTTP/1.1\r\nhost: h\r\n\r\n" + head + body,
                             read_until=2)
            assert b"100 Continue" not in out and out.startswith(b"HTTP/1.1 404 ")
            assert out.count(b"HTTP/1.1 202 ") == 1
            # HTTP/1.0 ignores the expectation
            out = await _raw(srv, head.replace(b"HTTP/1.1", b"HTTP/1.0") + body)
            assert b"100 Continue" not in out and out.startswith(b"HTTP/1.1 202 ")
            # any other expectation
            out = await _raw(srv, head.replace(b"100-continue", b"200-ok"))
            assert out.startswith(b"HTTP/1.1 417 Expectation Failed") and b"200-ok" in out
            # (the same event three times: stored once, the duplicate window)
            assert len(srv.flow.streams()["orders"].log) == 1
            # curl sends the body after the 100 (asked for here: whether curl asks by
            # itself depends on its version and the body's size)
            big = to_structured(_ce(2, data={"pad": "x" * 4000}))[1]
            proc = await asyncio.create_subprocess_exec(
                "curl", "-sv", "--max-time", "20", "-H",
                "content-type: application/cloudevents+json", "-H", "expect: 100-continue",
                "--expect100-timeout", "15", "--data-binary", "@-",
                _url(srv, "/events/o.curl"), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            _out, err = await asyncio.wait_for(proc.communicate(big), 30)
            assert b"< HTTP/1.1 100 Continue" in err, err
            assert b"< HTTP/1.1 202" in err
            assert len(srv.flow.streams()["orders"].log) == 2

        async with _serve(ffserver, free_port, token="tok") as srv:
            # refused at the head: the final answer, no 100, the body never read
            out = await _raw(srv, head)
            assert out.startswith(b"HTTP/1.1 401 ") and b"100 Continue" not in out

    aloop(main)
