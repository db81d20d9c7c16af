"""The monitoring port on the web doors' HTTP stack (docs/server.md,
Monitoring): keep-alive with httpx and on a raw socket, pipelining, HEAD,
404 and 405, the [http] limits (head size, header count, body, a slow
request, an idle connection), credentials (Bearer, Basic plain and
hashed, the 401's challenges) and what a monitoring connection is not:
a client of the engine (not in /connz, not under max_connections)."""

import asyncio
import base64
import json

import httpx
import pytest

from fastflow.server import hash_password

from helpers import wait_until


class Raw:
    """A raw connection to the monitor, read one response at a time."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer

    @classmethod
    async def open(cls, port):
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(r, w)

    def send(self, data):
        self.w.write(data)

    async def response(self, head_only=False, timeout=5):
        """(status, headers, body) of the next response; ``head_only``: a
        HEAD's (its Content-Length has no body)."""
        head = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")[:-2]
        status = int(lines[0].split()[1])
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers.setdefault(k.strip().lower(), []).append(v.strip())
        headers = {k: v[0] if len(v) == 1 else v for k, v in headers.items()}
        n = 0 if head_only else int(headers.get("content-length", 0))
        body = await asyncio.wait_for(self.r.readexactly(n), timeout) if n else b""
        return status, headers, body

    async def closed(self, timeout=5):
        """Whether the server closed the connection (EOF, nothing more sent)."""
        return await asyncio.wait_for(self.r.read(), timeout) == b""

    def close(self):
        self.w.close()


def get(path, method="GET", headers=()):
    return "{} {} HTTP/1.1\r\nHost: x\r\n{}\r\n".format(
        method, path, "".join("{}: {}\r\n".format(k, v) for k, v in headers)).encode()


def basic(user, pw):
    return "Basic " + base64.b64encode("{}:{}".format(user, pw).encode()).decode()


def test_keep_alive_with_httpx(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True) as srv:
            base = "http://127.0.0.1:{}".format(srv.monitor_port)
            async with httpx.AsyncClient(base_url=base) as c:
                for path in ("/healthz", "/varz", "/connz", "/subsz", "/streamz", "/metrics",
                             "/", "/varz/"):
                    r = await c.get(path)
                    assert r.status_code == 200, (path, r.text)
                    assert r.headers.get("connection") != "close"
                    assert r.headers["cache-control"] == "no-store"
                # one connection served them all, and it is not a client of the engine
                assert len(srv.monitor.conns) == 1
                r = await c.get("/varz")
                assert r.json()["connections"] == 0 and r.json()["total_connections"] == 0
                assert (await c.get("/connz")).json()["connections"] == []
                r = await c.get("/metrics")
                assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
                assert "\nfastflow_connections 0\n" in r.text
                assert len(srv.monitor.conns) == 1

    aloop(main)


def test_keep_alive_on_a_raw_socket_with_head_404_and_405(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True) as srv:
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(get("/healthz"))
                status, h, body = await c.response()
                assert (status, json.loads(body)) == (200, {"status": "ok"})
                assert h["content-type"] == "application/json" and "connection" not in h
                assert h["server"].startswith("fastflow/") and "date" in h
                # HEAD: the GET's head, Content-Length included, and no body
                c.send(get("/varz", "HEAD"))
                status, h, body = await c.response(head_only=True)
                assert status == 200 and int(h["content-length"]) > 100
                c.send(get("/varz"))
                status, h2, body = await c.response()
                assert status == 200 and json.loads(body)["server_id"] == srv.id
                c.send(get("/nope"))
                status, h, body = await c.response()
                assert status == 404 and h["content-type"] == "application/json"
                assert json.loads(body)["error"]["code"] == 404
                c.send(get("/varz/more"))
                assert (await c.response())[0] == 404
                c.send(get("/varz", "POST", [("Content-Length", "5")]) + b"hello")
                status, h, body = await c.response()
                assert status == 405 and h["allow"] == "GET, HEAD"
                assert "POST is not allowed on /varz" in json.loads(body)["error"]["message"]
                # the connection is still there after every one of them
                c.send(get("/", headers=[("Connection", "close")]))
                status, h, body = await c.response()
                assert status == 200 and "/metrics" in json.loads(body)["endpoints"]
                assert h["connection"] == "close"
                assert await c.closed()
            finally:
                c.close()
            # HTTP/1.0 without keep-alive: one answer, then closed
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(b"GET /healthz HTTP/1.0\r\n\r\n")
                status, h, _ = await c.response()
                assert status == 200 and h["connection"] == "close"
                assert await c.closed()
            finally:
                c.close()

    aloop(main)


def test_pipelined_requests_are_answered_in_order(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True) as srv:
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(get("/varz") + get("/healthz") + get("/nope") + get("/healthz", "HEAD")
                       + get("/subsz"))
                status, _, body = await c.response()
                assert status == 200 and "server_id" in json.loads(body)
                status, _, body = await c.response()
                assert (status, json.loads(body)) == (200, {"status": "ok"})
                assert (await c.response())[0] == 404
                status, _, body = await c.response(head_only=True)
                assert status == 200 and body == b""
                status, _, body = await c.response()
                assert status == 200 and "num_subscriptions" in json.loads(body)
                # split anywhere, two more in one write
                data = get("/streamz") + get("/healthz")
                for i in range(len(data)):
                    c.send(data[i:i + 1])
                assert "streams" in json.loads((await c.response())[2])
                assert json.loads((await c.response())[2]) == {"status": "ok"}
            finally:
                c.close()

    aloop(main)


def test_a_client_that_does_not_read_is_not_read(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True) as srv:
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(get("/healthz"))
                assert (await c.response())[0] == 200
                (mc,) = srv.monitor.conns
                # the transport's buffer passed its high-water mark (the
                # client does not read): no more requests are read ...
                mc.pause_writing()
                c.send(get("/healthz"))
                with pytest.raises(asyncio.TimeoutError):
                    await c.response(timeout=0.3)
                # ... until it is written
                mc.resume_writing()
                assert (await c.response())[0] == 200
            finally:
                c.close()

    aloop(main)


def test_the_http_limits_apply(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, http_max_header="1KiB", http_max_headers=8) as srv:
            port = srv.monitor_port
            # a head over http_max_header: 431, closed
            c = await Raw.open(port)
            try:
                c.send(get("/varz", headers=[("X-Big", "y" * 2000)]))
                status, h, body = await c.response()
                assert status == 431 and h["connection"] == "close"
                assert "request head over 1024 bytes" in json.loads(body)["error"]["message"]
                assert await c.closed()
            finally:
                c.close()
            # more header fields than http_max_headers: 431
            c = await Raw.open(port)
            try:
                c.send(get("/varz", headers=[("X-H%d" % i, "v") for i in range(9)]))
                status, _, body = await c.response()
                assert status == 431 and "more than 8 header fields" in body.decode()
                assert await c.closed()
            finally:
                c.close()
            # a body (no endpoint reads one) over 64 KiB: 413 before it is read
            c = await Raw.open(port)
            try:
                c.send(get("/varz", headers=[("Content-Length", str(65537))]))
                status, _, body = await c.response()
                assert status == 413 and await c.closed()
            finally:
                c.close()
            # requests complete before a bad one are answered first
            c = await Raw.open(port)
            try:
                c.send(get("/healthz") + b"GET /varz HTTP/1.1\r\nBad Header\r\n\r\n")
                assert (await c.response())[0] == 200
                assert (await c.response())[0] == 400
                assert await c.closed()
            finally:
                c.close()
            # and the port still answers
            async with httpx.AsyncClient() as hc:
                r = await hc.get("http://127.0.0.1:{}/healthz".format(port))
                assert r.status_code == 200

    aloop(main)


def test_slow_requests_get_408_and_idle_connections_close(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, http_request_timeout=0.5,
                            http_idle_timeout=0.5) as srv:
            loop = asyncio.get_running_loop()
            # a head that never ends (slowloris): 408 within a tick of the timeout
            c = await Raw.open(srv.monitor_port)
            try:
                t0 = loop.time()
                c.send(b"GET /varz HTTP/1.1\r\nHost: x\r\n")
                status, h, body = await c.response(timeout=5)
                assert status == 408 and h["connection"] == "close"
                assert "within 0.5 s" in json.loads(body)["error"]["message"]
                assert 0.4 < loop.time() - t0 < 3
                assert await c.closed()
            finally:
                c.close()
            # answered, then closed quietly once idle
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(get("/healthz"))
                assert (await c.response())[0] == 200
                t0 = loop.time()
                assert await c.closed()
                assert 0.4 < loop.time() - t0 < 3
            finally:
                c.close()
            await wait_until(lambda: not srv.monitor.conns, 2, "the monitor's connections gone")

    aloop(main)


def test_credentials_on_a_kept_connection(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, monitor_token="mon-token",
                            monitor_users=[{"user": "ops", "password": hash_password("ops-pw")},
                                           {"user": "dev", "password": "dev-pw"}]) as srv:
            base = "http://127.0.0.1:{}".format(srv.monitor_port)
            async with httpx.AsyncClient(base_url=base) as c:
                r = await c.get("/varz")
                assert r.status_code == 401
                assert r.headers.get_list("www-authenticate") == [
                    'Bearer realm="fastflow"', 'Basic realm="fastflow", charset="UTF-8"']
                assert r.json()["error"]["code"] == 401
                r = await c.head("/metrics")
                assert r.status_code == 401 and r.content == b""
                assert (await c.get("/healthz")).status_code == 200     # open for probes
                for auth in ("Bearer mon-token", basic("ops", "ops-pw"), basic("dev", "dev-pw")):
                    r = await c.get("/varz", headers={"Authorization": auth})
                    assert r.status_code == 200, auth
                    assert r.json()["server_id"] == srv.id
                for auth in ("Bearer nope", basic("ops", "nope"), basic("who", "x"),
                             "Basic !!!", "Digest abc"):
                    r = await c.get("/varz", headers={"Authorization": auth})
                    assert r.status_code == 401, auth
                    assert len(r.headers.get_list("www-authenticate")) == 2
                r = await c.get("/connz?access_token=mon-token&limit=1")
                assert r.status_code == 200 and r.json()["limit"] == 1
                # httpx's own Basic auth
                r = await c.get("/connz", auth=("ops", "ops-pw"))
                assert r.status_code == 200 and r.json()["connections"] == []
                # all of it on one connection: a 401 does not close it
                assert len(srv.monitor.conns) == 1
            assert srv.monitor.auth_failures == 7

    aloop(main)


def test_a_password_checked_in_a_thread_holds_the_requests_behind_it(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, monitor_users=[
                {"user": "ops", "password": hash_password("ops-pw")}]) as srv:
            c = await Raw.open(srv.monitor_port)
            try:
                ok = [("Authorization", basic("ops", "ops-pw"))]
                bad = [("Authorization", basic("ops", "wrong"))]
                # scrypt runs in a thread for the first and the third: the
                # answers still come in order, and the connection stays
                c.send(get("/varz", headers=ok) + get("/healthz") + get("/subsz", headers=bad)
                       + get("/streamz", headers=ok) + get("/varz"))
                status, _, body = await c.response()
                assert status == 200 and "server_id" in json.loads(body)
                assert (await c.response())[0] == 200
                status, h, _ = await c.response()
                assert status == 401
                assert h["www-authenticate"] == 'Basic realm="fastflow", charset="UTF-8"'
                status, _, body = await c.response()
                assert status == 200 and "streams" in json.loads(body)
                assert (await c.response())[0] == 401
            finally:
                c.close()

    aloop(main)


def test_monitoring_connections_are_not_clients(aloop, ffserver, monkeypatch):
    import fastflow.server.monitor as monitor

    monkeypatch.setattr(monitor, "MAX_CONNECTIONS", 3)

    async def main():
        async with ffserver(monitor=True, max_connections=1) as srv:
            held = [await Raw.open(srv.monitor_port) for _ in range(3)]
            try:
                for c in held:
                    c.send(get("/healthz"))
                    assert (await c.response())[0] == 200
                # past the monitor's own limit: 503, closed
                extra = await Raw.open(srv.monitor_port)
                try:
                    status, h, body = await extra.response()
                    assert status == 503 and h["connection"] == "close"
                    assert "too many monitoring connections" in body.decode()
                    assert await extra.closed()
                finally:
                    extra.close()
                # the engine's max_connections is the clients' alone
                held[0].send(get("/varz"))
                varz = json.loads((await held[0].response())[2])
                assert varz["connections"] == 0 and varz["rejected_connections"] == 0
            finally:
                for c in held:
                    c.close()
            await wait_until(lambda: not srv.monitor.conns, 5, "the monitor's connections gone")
            # a kept connection is closed when the server stops
            c = await Raw.open(srv.monitor_port)
            c.send(get("/healthz"))
            assert (await c.response())[0] == 200
        try:
            assert await c.closed()
        finally:
            c.close()

    aloop(main)


@pytest.mark.parametrize("path", ["/varz", "/healthz"])
def test_answers_while_stopping_close_their_connection(aloop, ffserver, path):
    async def main():
        async with ffserver(monitor=True) as srv:
            c = await Raw.open(srv.monitor_port)
            try:
                c.send(get(path))
                assert (await c.response())[0] == 200
                srv.stopping = True         # (what stop() sets first)
                try:
                    c.send(get(path))
                    status, h, body = await c.response()
                finally:
                    srv.stopping = False
                assert status == (503 if path == "/healthz" else 200)
                assert h["connection"] == "close"
                if path == "/healthz":
                    assert json.loads(body) == {"status": "stopping"}
                assert await c.closed()
            finally:
                c.close()

    aloop(main)
