"""The web doors under attack (docs/http.md): what an outsider or a user
without rights throws at the HTTP listener, on a live in-process server
that must keep serving the others.
"""

import asyncio
import time

REQ = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"


async def _get(port, path=b"/healthz", timeout=2.0):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET " + path + b" HTTP/1.1\r\nconnection: close\r\n\r\n")
    try:
        return await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()


def test_pipelining_without_reading_neither_starves_others_nor_pauses_publishers(
        aloop, ffserver, free_port):
    """A client pipelining tens of thousands of requests and never reading
    the answers: its reading pauses (no unbounded output, no stalled
    subscriber that would pause every publisher), the loop answers the
    others at once, and every answer arrives in order once it reads."""
    n = 30000

    async def main():
        async with ffserver(http_port=free_port(), write_high_water="256KiB",
                            write_low_water="64KiB") as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            w.transport.set_write_buffer_limits(high=64 << 20)
            w.write(REQ * n)
            worst = 0.0
            for _ in range(20):
                t = time.monotonic()
                out = await _get(srv.http_port)
                worst = max(worst, time.monotonic() - t)
                assert out.startswith(b"HTTP/1.1 200 "), out[:100]
                await asyncio.sleep(0.02)
            assert worst < 0.5, worst
            assert srv.n_stalls == 0        # no publisher was ever paused for it
            got = 0
            buf = b""
            while got < n:
                chunk = await asyncio.wait_for(r.read(1 << 20), 10)
                assert chunk
                buf += chunk
                got += buf.count(b"HTTP/1.1 200 OK")
                buf = buf[buf.rfind(b"HTTP/1.1 200 OK") + 15:] if b"HTTP/1.1 200 OK" in buf \
                    else buf
            assert got == n
            w.close()

    aloop(main, timeout=25)


async def _raw(port, data, timeout=2.0):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(data)
    try:
        return await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()


def test_webhook_request_rate_that_is_no_number_gets_the_configured_rate(
        aloop, ffserver, free_port, caplog):
    """``WebHook-Request-Rate: \\xb2`` (a digit to str.isdigit, not to
    int) or one of 5000 digits was an unauthenticated 500 with a traceback
    in the log per request; it is ignored like any rate that is no number."""

    async def main():
        async with ffserver(http_port=free_port(), http_webhook_rate=5,
                            token="s3cret") as srv:
            for asked, rate in ((b"\xb2", b"5"), (b"9" * 5000, b"5"), (b"3", b"3"),
                                (b"\xd9\xa3", b"5")):
                out = await _raw(srv.http_port, b"OPTIONS /events HTTP/1.1\r\n"
                                 b"WebHook-Request-Origin: a.example\r\n"
                                 b"WebHook-Request-Rate: " + asked + b"\r\n"
                                 b"connection: close\r\n\r\n")
                assert out.startswith(b"HTTP/1.1 200 "), out
                assert b"\r\nwebhook-allowed-rate: " + rate + b"\r\n" in out, out

    with caplog.at_level("ERROR", "fastflow.server"):
        aloop(main, timeout=20)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_body_without_credentials_is_refused_before_it_is_read(aloop, ffserver, free_port):
    """With authentication on, ``POST`` with ``Content-Length: 16000000``
    and no credentials at all: 401 (with its challenges) at once and the
    connection closes; the body is not buffered (twenty such clients held
    300 MB).  A user with credentials still publishes."""

    async def main():
        async with ffserver(http_port=free_port(), token="s3cret") as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.http_port)
            w.write(b"POST /events/x.y HTTP/1.1\r\ncontent-type: application/cloudevents+json"
                    b"\r\ncontent-length: 16000000\r\n\r\n" + b"x" * 65536)
            out = await asyncio.wait_for(r.read(), 5)
            w.close()
            assert out.startswith(b"HTTP/1.1 401 "), out
            assert b"\r\nwww-authenticate: bearer" in out.lower(), out
            assert b"connection: close" in out
            ev = (b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1}')
            for auth in (b"authorization: Bearer s3cret\r\n", b""):
                out = await _raw(srv.http_port, b"POST /events/x.y" + (
                    b"" if auth else b"?access_token=s3cret") + b" HTTP/1.1\r\n" + auth
                    + b"content-type: application/cloudevents+json\r\n"
                    b"connection: close\r\ncontent-length: %d\r\n\r\n" % len(ev) + ev)
                assert out.startswith(b"HTTP/1.1 202 "), out
            # no body, no credentials: the usual 401 on a connection that stays
            out = await _raw(srv.http_port, b"GET /streams HTTP/1.1\r\nconnection: close\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 401 "), out

    aloop(main, timeout=20)
