"""Webhook delivery (fastflow/subscriptions/webhook.py, docs/webhooks.md)
against real HTTP sinks (aiohttp's server on 127.0.0.1) that fail on
purpose; what the sinks receive is decoded with the official CloudEvents
SDK."""

import asyncio
import base64
import time

import orjson
import pytest
from dateutil.parser import isoparse

from fastflow._impl import json_batch
from fastflow.errors import EventError
from fastflow.event import Event, to_json_batch
from fastflow.subscriptions.webhook import (
    DELIVERED,
    WebhookSettings,
    WebhookSink,
)

web = pytest.importorskip("aiohttp.web")
sdk_http = pytest.importorskip("cloudevents.core.bindings.http")
from cloudevents.core.formats.json import JSONFormat  # noqa: E402

ORIGIN = "events.example.org"
TOKEN = "s3cret-token"
FAST = dict(backoff_initial=0.01, backoff_max=0.05, timeout=2.0)


class Sink:
    """A webhook target on 127.0.0.1: ``script(sink, request, n)`` (n: the
    POST's number from 0) answers each POST (None: 200); ``options``
    answers the OPTIONS (None: a grant for any origin).  Records every
    request as ``(method, headers, body, time)`` and the most POSTs at
    once."""

    def __init__(self, script=None, options=None, ssl=None):
        self.ssl = ssl
        self.script = script
        self.options = options
        self.requests = []
        self.posts = []
        self.now = 0
        self.most = 0

    async def handle(self, request):
        body = await request.read()
        self.requests.append((request.method, request.headers, body, time.monotonic()))
        if request.method == "OPTIONS":
            if self.options is not None:
                return await self.options(self, request)
            return web.Response(headers={"WebHook-Allowed-Origin": "*",
                                         "WebHook-Allowed-Rate": "*"})
        n = len(self.posts)
        self.posts.append((request.headers, body, time.monotonic()))
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            if self.script is not None:
                answer = await self.script(self, request, n)
                if answer is not None:
                    return answer
            return web.Response(status=200)
        finally:
            self.now -= 1

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ssl)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.url = "{}://127.0.0.1:{}/hook?k=1".format("https" if self.ssl else "http",
                                                      self.port)
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()

    def events(self):
        """Every event POSTed, decoded with the CloudEvents SDK."""
        out = []
        fmt = JSONFormat()
        for headers, body, _ in self.posts:
            ct = headers.get("content-type", "")
            if ct.startswith("application/cloudevents-batch+json"):
                out.extend(fmt.read(None, orjson.dumps(d)) for d in orjson.loads(body))
            else:
                h = {k.lower(): v for k, v in headers.items()}
                out.append(sdk_http.from_http(sdk_http.HTTPMessage(h, body), fmt))
        return out


def sample_events(n=3):
    evs = []
    for i in range(n):
        k = i % 3
        if k == 0:
            evs.append(Event("orders.eu.created", b'{"id": %d, "name": "caf\xc3\xa9"}' % i,
                             datacontenttype="application/json", source="/shop/eu",
                             subject="order-{}".format(i), time="2026-12-03T10:00:00Z",
                             region="eu west \"1\"", tries=3))
        elif k == 1:
            evs.append(Event("orders.raw", bytes(range(256)) + bytes([i % 256]),
                             source="urn:fastflow:test", id="raw-{}".format(i),
                             datacontenttype="application/octet-stream"))
        else:
            evs.append(Event("notes.text", "héllo {}".format(i).encode(),
                             datacontenttype="text/plain; charset=utf-8", source="/notes",
                             dataschema="https://example.com/schema"))
    return evs


def check_same(sent, got, binary_data=True):
    """Attribute by attribute, data byte by byte (in any order: POSTs run
    concurrently)."""
    assert len(sent) == len(got)
    by_id = {g.get_id(): g for g in got}
    for ev in sent:
        g = by_id[ev.id]
        attrs = ev.attributes()
        theirs = g.get_attributes()
        for k in ("specversion", "id", "source", "type", "subject", "dataschema",
                  "datacontenttype"):
            assert theirs.get(k) == attrs.get(k), k
        if "time" in attrs:
            assert theirs["time"] == isoparse(attrs["time"])
        for k, v in ev.extensions.items():
            assert str(theirs[k]) == str(v), k
        data = g.get_data()
        if isinstance(data, (dict, list)):
            assert data == orjson.loads(ev.data)
        elif isinstance(data, str):
            assert data.encode() == ev.data
        else:
            assert data == ev.data


def sink_for(sink, **settings):
    options = dict(FAST)
    options.update(settings)
    return WebhookSink(sink.url, WebhookSettings(**options), credential=TOKEN, origin=ORIGIN)


# -- what is sent ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured", "batch"])
def test_modes_decode_with_the_sdk(aloop, mode):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, mode=mode, max_batch=4)
            evs = sample_events(9)
            out = await wh.deliver(evs)
            await wh.close()
            assert out == [DELIVERED] * 9
            methods = [r[0] for r in sink.requests]
            assert methods[0] == "OPTIONS" and set(methods[1:]) == {"POST"}
            assert len(sink.posts) == (3 if mode == "batch" else 9)
            opt = sink.requests[0][1]
            assert opt["WebHook-Request-Origin"] == ORIGIN
            assert "WebHook-Request-Rate" not in opt
            for headers, _, _ in sink.posts:
                assert headers["Authorization"] == "Bearer " + TOKEN
                assert headers["WebHook-Request-Origin"] == ORIGIN
            check_same(evs, sink.events())
            info = wh.info()
            assert info["delivered"] == 9 and info["failed"] == 0 and info["dead"] == 0
            assert info["handshake"] == "granted" and info["allowed_rate"] == "*"
            assert info["in_flight"] == 0 and info["pending"] == 0
            assert orjson.loads(orjson.dumps(info)) == info

    aloop(main)


def test_batch_writer_matches_to_json_batch():
    evs = sample_events(12) + [
        Event("a.b", b"not json", datacontenttype="application/json"),
        Event("a.c", b"", source="/x", flag=True, blob=b"\x00\x01"),
        Event("a.d", b"<x/>", datacontenttype="application/xml"),
        Event("a.e", b"\xff\xfe", datacontenttype="text/plain"),
        Event("a.f", b'{"x": 1}', datacontenttype="application/json", ffhops=0, fftrace="t1"),
        Event("a.g", b'{"x": "\xc3\xa9"}', datacontenttype="application/cloudevents+json",
              ffhops=3, time="2026-12-03T10:00:00.123Z", subject="s", dataschema="urn:x"),
        Event("a.h", b'{"x": "\xc3"}', datacontenttype="application/json", fftrace="t2"),
        Event("a.i", b"\x00\x01", datacontenttype="application/octet-stream", ffhops=1),
        Event("a.j", b"", ffhops=0),
        Event("a.k", b"[1]", datacontenttype="application/json", n=5, fftrace="t3"),
    ]
    for lineage in (True, False):
        assert json_batch(evs, lineage) == to_json_batch(evs, lineage)
        for ev in evs:
            assert json_batch([ev], lineage) == to_json_batch([ev], lineage)
    with pytest.raises(EventError, match="lone surrogate"):
        json_batch([Event("a.b", b"", source="x\udcff")])


def test_lineage_left_out(aloop):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, mode="binary", lineage=False)
            ev = Event("a.b", b"x", ffhops=2, fftrace="t1")
            assert await wh.deliver([ev]) == [DELIVERED]
            headers = sink.posts[0][0]
            assert "ce-ffhops" not in headers and "ce-fftrace" not in headers

    aloop(main)


# -- failures -------------------------------------------------------------------------------


def test_500s_are_retried(aloop):
    async def script(sink, request, n):
        if n < 2:
            return web.Response(status=500, text="database down")

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink)
            evs = sample_events(1)
            out = await wh.deliver(evs)
            assert out == [DELIVERED]
            assert len(sink.posts) == 3
            assert (wh.delivered, wh.failed, wh.retried, wh.dead) == (1, 2, 2, 0)
            assert wh.last_status == 200 and "500: database down" in wh.last_error
            check_same(evs, sink.events()[2:])
            await wh.close()

    aloop(main)


def test_retries_run_out(aloop):
    async def script(sink, request, n):
        return web.Response(status=502, text="bad gateway")

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, max_retries=2)
            out = await wh.deliver(sample_events(2))
            assert [o[0] for o in out] == ["dead", "dead"]
            assert "gave up after 3 attempts: the sink answered 502: bad gateway" in out[0][1]
            assert len(sink.posts) == 6
            assert (wh.delivered, wh.failed, wh.retried, wh.dead) == (0, 6, 4, 2)
            await wh.close()

    aloop(main)


def test_429_and_503_retry_after_honoured(aloop):
    async def script(sink, request, n):
        if n == 0:
            return web.Response(status=429, headers={"Retry-After": "1"})
        if n == 1:
            return web.Response(status=503, headers={"Retry-After": "1"})

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink)
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            times = [p[2] for p in sink.posts]
            assert len(times) == 3
            assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95
            assert times[2] - times[0] < 4.0
            assert wh.retried == 2 and wh.failed == 2
            await wh.close()

    aloop(main)


def test_retry_after_is_capped(aloop):
    async def script(sink, request, n):
        if n == 0:
            return web.Response(status=503, headers={"Retry-After": "86400"})

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, retry_after_max=0.2)
            t0 = time.monotonic()
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            assert 0.15 <= time.monotonic() - t0 < 3

    aloop(main)


def test_410_retires_the_sink(aloop):
    async def script(sink, request, n):
        if n == 1:
            return web.Response(status=410, text="unsubscribed")

    async def main():
        advised = []
        async with Sink(script) as sink:
            wh = WebhookSink(sink.url, WebhookSettings(max_in_flight=1, **FAST),
                             origin=ORIGIN, advise=lambda kind, info: advised.append(
                                 (kind, info["retired"])))
            out = await wh.deliver(sample_events(4))
            assert out[0] == DELIVERED
            assert [o[0] for o in out[1:]] == ["retired"] * 3
            assert "410" in out[1][1] and "unsubscribed" in out[1][1]
            assert len(sink.posts) == 2
            assert wh.retired and advised == [("retired", True)]
            again = await wh.deliver(sample_events(2))
            assert [o[0] for o in again] == ["retired"] * 2
            assert len(sink.posts) == 2 and wh.dead == 0
            assert wh.info()["retired"] is True

    aloop(main)


def test_400_dead_letters_that_event_only(aloop):
    async def script(sink, request, n):
        if request.headers.get("ce-id") == "raw-1":
            return web.Response(status=400, text='{"error": "schema mismatch"}')

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink)
            out = await wh.deliver(sample_events(3))
            assert out[0] == DELIVERED and out[2] == DELIVERED
            assert out[1][0] == "dead" and "400" in out[1][1] and "schema mismatch" in out[1][1]
            assert len(sink.posts) == 3 and wh.dead == 1 and wh.retried == 0

    aloop(main)


def test_slow_answer_times_out_and_is_retried(aloop):
    async def script(sink, request, n):
        if n == 0:
            await asyncio.sleep(0.6)

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, timeout=0.2)
            t0 = time.monotonic()
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            assert time.monotonic() - t0 < 0.55
            assert wh.failed == 1 and wh.retried == 1 and "0.2 s" in wh.last_error
            assert len(sink.posts) == 2

    aloop(main)


def test_dropped_connection_is_retried(aloop):
    async def script(sink, request, n):
        if n < 2:
            request.transport.abort()
            await asyncio.sleep(0.05)
            return web.Response()

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink)
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            # the first drop, on the connection the handshake kept alive, looks like a
            # keep-alive the sink had closed: sent again at once on a new connection
            assert len(sink.posts) == 3 and wh.connections == 3
            assert wh.failed == 1 and wh.retried == 1
            assert "closed" in wh.last_error

    aloop(main)


def test_no_server_dead_after_retries(aloop, free_port):
    async def main():
        wh = WebhookSink("http://127.0.0.1:{}/".format(free_port()),
                         WebhookSettings(max_retries=1, handshake=False, **FAST))
        out = await wh.deliver(sample_events(1))
        assert out[0][0] == "dead" and "could not connect" in out[0][1]
        assert wh.failed == 2 and wh.dead == 1

    aloop(main)


def test_redirects_are_not_followed(aloop):
    async def script(sink, request, n):
        if request.path == "/hook":
            return web.Response(status=307, headers={"Location": "/elsewhere"})

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink)
            out = await wh.deliver(sample_events(1))
            assert out[0][0] == "dead"
            assert "307" in out[0][1] and "'/elsewhere'" in out[0][1]
            assert "not followed" in out[0][1]
            assert len(sink.posts) == 1 and wh.retried == 0

    aloop(main)


# -- the handshake --------------------------------------------------------------------------


async def _refuse_403(sink, request):
    return web.Response(status=403, text="origin not welcome")


async def _no_origin(sink, request):
    return web.Response(status=200)


async def _other_origin(sink, request):
    return web.Response(headers={"WebHook-Allowed-Origin": "someone.else"})


@pytest.mark.parametrize("options,why", [
    (_refuse_403, "the sink answered 403: origin not welcome"),
    (_no_origin, "without WebHook-Allowed-Origin"),
    (_other_origin, "'someone.else' is not this sender's origin"),
])
def test_handshake_refused(aloop, options, why):
    async def main():
        advised = []
        async with Sink(options=options) as sink:
            wh = WebhookSink(sink.url, WebhookSettings(**FAST), origin=ORIGIN,
                             advise=lambda kind, info: advised.append(kind))
            out = await wh.deliver(sample_events(2))
            assert [o[0] for o in out] == ["dead", "dead"]
            assert out[0][1].startswith("webhook handshake refused: ") and why in out[0][1]
            assert sink.posts == [] and wh.dead == 2 and wh.handshake == "refused"
            assert advised == ["refused"]
            # tried again on the next call (the sink may have been set up since)
            sink.options = None
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            assert wh.handshake == "granted"

    aloop(main)


def test_handshake_rate(aloop):
    async def options(sink, request):
        assert request.headers["WebHook-Request-Rate"] == "600"
        return web.Response(headers={"WebHook-Allowed-Origin": ORIGIN,
                                     "WebHook-Allowed-Rate": "240"})

    async def main():
        async with Sink(options=options) as sink:
            wh = sink_for(sink, rate=600, max_in_flight=4)
            out = await wh.deliver(sample_events(4))
            assert out == [DELIVERED] * 4
            assert wh.allowed_rate == 240
            times = sorted(p[2] for p in sink.posts)
            assert times[-1] - times[0] >= 0.7              # 4 requests 0.25 s apart

    aloop(main)


def test_handshake_retried_after_503(aloop):
    calls = []

    async def options(sink, request):
        calls.append(1)
        if len(calls) == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(headers={"WebHook-Allowed-Origin": ORIGIN})

    async def main():
        async with Sink(options=options) as sink:
            wh = sink_for(sink)
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            assert len(calls) == 2 and wh.handshake == "granted"

    aloop(main)


def test_handshake_callback_variant(aloop):
    async def options(sink, request):
        sink.callback = request.headers.get("WebHook-Request-Callback")
        return web.Response(status=200)

    async def main():
        async with Sink(options=options) as sink:
            wh = WebhookSink(sink.url, WebhookSettings(**FAST), origin=ORIGIN,
                             callback_url="https://fastflow.example/webhooks/cb/1")

            async def grant_later():
                await asyncio.sleep(0.1)
                assert wh.handshake == "awaiting callback"
                wh.granted("120")

            task = asyncio.ensure_future(grant_later())
            assert await wh.deliver(sample_events(1)) == [DELIVERED]
            await task
            assert sink.callback == "https://fastflow.example/webhooks/cb/1"
            assert wh.allowed_rate == 120 and wh.handshake == "granted"
            assert sink.posts[0][0]["WebHook-Request-Origin"] == ORIGIN

            late = WebhookSink(sink.url, WebhookSettings(callback_timeout=0.1, **FAST),
                               origin=ORIGIN, callback_url="http://x.example/cb")
            out = await late.deliver(sample_events(1))
            assert out[0][0] == "dead" and "no grant on the callback within 0.1 s" in out[0][1]

    aloop(main)


def test_no_handshake(aloop):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, handshake=False)
            assert await wh.deliver(sample_events(2)) == [DELIVERED] * 2
            assert [r[0] for r in sink.requests] == ["POST", "POST"]
            assert wh.info()["handshake"] == "none"

    aloop(main)


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline", [1, 4])
def test_in_flight_bound_and_order(aloop, pipeline):
    async def script(sink, request, n):
        await asyncio.sleep(0.01)
        if request.headers.get("ce-id") == "raw-7":
            return web.Response(status=422)

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, max_in_flight=3, pipeline=pipeline)
            evs = sample_events(30)
            out = await wh.deliver(evs)
            for ev, o in zip(evs, out):
                assert o == (DELIVERED if ev.id != "raw-7" else ("dead", "the sink answered 422"))
            assert sink.most <= 3 and wh.connections <= 3
            assert len(sink.posts) == 30 and wh.info()["in_flight"] == 0
            got = sorted(e.get_id() for e in sink.events())
            assert got == sorted(e.id for e in evs)

    aloop(main)


def test_cancel_leaves_nothing_half_counted(aloop):
    async def script(sink, request, n):
        await asyncio.sleep(0.3)

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, max_in_flight=2)
            task = asyncio.ensure_future(wh.deliver(sample_events(5)))
            while len(sink.posts) < 2:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            info = wh.info()
            assert (info["in_flight"], info["pending"], info["delivered"], info["dead"]) == \
                (0, 0, 0, 0)
            await wh.close()

    aloop(main)


def test_header_injection_refused(aloop):
    for bad in ("a\r\nx-evil: 1", "a\nb", "a\x00b"):
        with pytest.raises(ValueError, match="credential .* cannot go in an HTTP header"):
            WebhookSink("http://127.0.0.1:9/", credential=bad)
        with pytest.raises(ValueError, match="origin .* cannot go in an HTTP header"):
            WebhookSink("http://127.0.0.1:9/", origin=bad)
    with pytest.raises(ValueError, match="printable ASCII without spaces"):
        WebhookSink("http://127.0.0.1:9/a\r\nb")
    with pytest.raises(ValueError, match="callback_url"):
        WebhookSink("http://127.0.0.1:9/", callback_url="http://x/\r\n")
    with pytest.raises(ValueError, match="no user info"):
        WebhookSink("http://u:p@127.0.0.1:9/")
    with pytest.raises(ValueError, match="expected http:// or https://"):
        WebhookSink("ftp://127.0.0.1:9/")

    async def main():
        async with Sink() as sink:
            wh = sink_for(sink)
            evs = [Event("a.b", b"1", datacontenttype="text/plain\r\nx-evil: 1"),
                   Event("a.b", b"2", note="line\r\nx-evil: 1", id="ok")]
            out = await wh.deliver(evs)
            assert out[0][0] == "dead" and "Content-Type" in out[0][1]
            assert out[1] == DELIVERED
            assert len(sink.posts) == 1
            headers = sink.posts[0][0]
            assert "x-evil" not in headers
            assert sink.events()[0].get_attributes()["note"] == "line\r\nx-evil: 1"

    aloop(main)


def test_settings_validated():
    with pytest.raises(ValueError, match="mode must be one of binary, structured, batch"):
        WebhookSettings(mode="json")
    with pytest.raises(ValueError, match="max_in_flight must be an int >= 1, got 0"):
        WebhookSettings(max_in_flight=0)
    with pytest.raises(ValueError, match="timeout must be a number > 0"):
        WebhookSettings(timeout=0)
    with pytest.raises(ValueError, match="rate must be an int >= 1 or None"):
        WebhookSettings(rate=0)
    with pytest.raises(ValueError, match="backoff_max must be >= backoff_initial"):
        WebhookSettings(backoff_initial=2, backoff_max=1)
    with pytest.raises(ValueError, match="max_retries must be an int >= 0"):
        WebhookSettings(max_retries=-1)
    s = WebhookSettings(mode="batch", rate=60)
    assert WebhookSettings.from_dict(s.to_dict()) == s
    import socket

    assert WebhookSink("http://127.0.0.1:9/").origin == socket.gethostname()


def test_retry_after_date():
    from email.utils import formatdate

    from fastflow.subscriptions.webhook import _retry_after

    assert _retry_after("7") == 7.0
    assert 1.0 < _retry_after(formatdate(time.time() + 3, usegmt=True)) <= 3.0
    assert _retry_after("soon") is None and _retry_after(None) is None


def test_data_bytes_base64_in_batch(aloop):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, mode="batch")
            ev = Event("a.b", bytes(range(256)))
            assert await wh.deliver([ev]) == [DELIVERED]
            body = orjson.loads(sink.posts[0][1])
            assert base64.b64decode(body[0]["data_base64"]) == bytes(range(256))

    aloop(main)


def test_pipelined_failures_are_retried(aloop):
    async def script(sink, request, n):
        if n in (1, 5):
            return web.Response(status=500)
        if n == 3:
            return web.Response(status=429, headers={"Retry-After": "0"})

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, max_in_flight=1, pipeline=8)
            evs = sample_events(12)
            assert await wh.deliver(evs) == [DELIVERED] * 12
            assert len(sink.posts) == 15 and wh.failed == 3 and wh.retried == 3
            check_same(evs, _last_per_id(sink.events()))

    aloop(main)


def _last_per_id(got):
    out = {}
    for g in got:
        out[g.get_id()] = g
    return list(out.values())


def test_batch_with_a_bad_event(aloop):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, mode="batch", max_batch=10)
            evs = sample_events(6)
            evs.insert(3, Event("a.b", b"x", source="bad\udcff"))
            out = await wh.deliver(evs)
            assert out[3][0] == "dead" and "lone surrogate" in out[3][1]
            assert out[:3] + out[4:] == [DELIVERED] * 6
            assert len(sink.posts) == 2 and wh.dead == 1
            check_same(evs[:3] + evs[4:], sink.events())

    aloop(main)


def test_handshake_410_and_redirect(aloop):
    async def gone(sink, request):
        return web.Response(status=410)

    async def moved(sink, request):
        return web.Response(status=301, headers={"Location": "http://evil.example/"})

    async def main():
        async with Sink(options=gone) as sink:
            wh = sink_for(sink)
            out = await wh.deliver(sample_events(2))
            assert [o[0] for o in out] == ["retired"] * 2 and wh.retired and wh.dead == 0
        async with Sink(options=moved) as sink:
            wh = sink_for(sink)
            out = await wh.deliver(sample_events(1))
            assert out[0][0] == "dead" and "'http://evil.example/'" in out[0][1]
            assert out[0][1].startswith("webhook handshake refused: ")
            assert len(sink.requests) == 1

    aloop(main)


def test_advise_raising_is_kept_not_raised(aloop):
    async def script(sink, request, n):
        return web.Response(status=410)

    def advise(kind, info):
        raise RuntimeError("advisory bus down")

    async def main():
        async with Sink(script) as sink:
            wh = WebhookSink(sink.url, WebhookSettings(**FAST), origin=ORIGIN, advise=advise)
            out = await wh.deliver(sample_events(1))
            assert out[0][0] == "retired"
            assert "advisory bus down" in wh.last_error

    aloop(main)


def test_concurrent_calls_share_one_refusal(aloop):
    async def slow_refusal(sink, request):
        await asyncio.sleep(0.05)
        return web.Response(status=403)

    async def main():
        async with Sink(options=slow_refusal) as sink:
            wh = sink_for(sink)
            outs = await asyncio.gather(*[wh.deliver(sample_events(2)) for _ in range(3)])
            assert all(o[0] == "dead" and "refused" in o[1] for out in outs for o in out)
            assert len(sink.requests) == 1 and wh.dead == 6

    aloop(main)


def test_close_then_deliver_again(aloop):
    async def main():
        async with Sink() as sink:
            wh = sink_for(sink, max_in_flight=2)
            assert await wh.deliver(sample_events(4)) == [DELIVERED] * 4
            await wh.close()
            assert await wh.deliver(sample_events(4)) == [DELIVERED] * 4
            assert wh.delivered == 8 and wh.connections > 2
            await wh.close()

    aloop(main)


def test_https_sink(aloop, tls_files):
    import ssl

    async def main():
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(tls_files.cert, tls_files.key)
        async with Sink(ssl=server) as sink:
            trust = ssl.create_default_context(cafile=tls_files.ca)
            wh = WebhookSink(sink.url, WebhookSettings(**FAST), origin=ORIGIN, tls=trust)
            evs = sample_events(3)
            assert await wh.deliver(evs) == [DELIVERED] * 3
            check_same(evs, sink.events())
            await wh.close()
            # the system's trust store does not know the test CA: no delivery
            wh = WebhookSink(sink.url, WebhookSettings(max_retries=0, **FAST), origin=ORIGIN)
            out = await wh.deliver(evs[:1])
            assert out[0][0] == "dead" and "CERTIFICATE_VERIFY_FAILED" in out[0][1]

    aloop(main)


def test_answers_chunked_and_connection_close(aloop):
    async def script(sink, request, n):
        if n % 2:
            resp = web.StreamResponse(status=202)
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b"accepted " * 1000)
            await resp.write_eof()
            return resp
        resp = web.Response(status=200, text="ok")
        resp.force_close()
        return resp

    async def main():
        async with Sink(script) as sink:
            wh = sink_for(sink, max_in_flight=1)
            evs = sample_events(6)
            assert await wh.deliver(evs) == [DELIVERED] * 6
            assert wh.failed == 0 and wh.retried == 0
            assert wh.connections == 4          # the handshake's, then one per closing answer
            check_same(evs, sink.events())

    aloop(main)

