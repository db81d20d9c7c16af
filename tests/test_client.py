"""fastflow.client against real servers over 127.0.0.1 (docs/protocol.md,
docs/server.md): publish/subscribe with every attribute, wildcards, queue
groups, request/reply, unsubscribe with a max, publish_ack, batches,
streams, replay and durable consumers over the wire, a network client and
an in-process Flow subscriber seeing each other's events, reconnecting
across a server restart (a ``python -m fastflow serve`` subprocess with a
data directory) and the CLI (``fastflow pub/sub/req/streams``).

Async tests run under the standard loop and uvloop (the ``aloop``
fixture); servers are started by the tests (in-process: ``ffserver``;
subprocesses: ``ffproc``) and always stopped; every wait is bounded.
"""

import asyncio
import base64
import datetime as dt
import json
import os
import re
import struct
import subprocess
import sys
import time

import pytest

import fastflow
import fastflow.client as fc
from fastflow import Event, Flow, SubjectError

from helpers import cli, wait_until

HEX32 = re.compile(r"[0-9a-f]{32}\Z")
HEAD = struct.Struct("<IBBHIHH")        # a frame's header (docs/protocol.md)
UTC = dt.timezone.utc
# the reference core routes in Python: smaller volumes keep the tests quick
SCALE = 1 if fastflow.COMPILED else 4


async def take(sub, n, timeout=5.0):
    """The next ``n`` messages of an iterated subscription."""
    return [await sub.next(timeout) for _ in range(n)]


async def nothing_more(sub, wait=0.1):
    await asyncio.sleep(wait)
    assert sub.pending == 0


def connect(srv, **kw):
    kw.setdefault("timeout", 5.0)
    return fc.connect(srv.url if not isinstance(srv, str) else srv, **kw)


# -- publish / subscribe ---------------------------------------------------------------


def test_batch_callbacks_get_runs_of_messages_in_order(aloop, ffserver):
    """``batch=True``: one call per run of messages read at once, lists in
    order, every message once; with two subscriptions interleaved each gets
    its own; ``raw``, ``with_reply``, an unsubscribe max and a failing call
    (reported; later batches still come)."""
    n = 20_000 // SCALE

    async def main():
        async with ffserver() as srv:
            errors = []
            async with await connect(srv, name="pub") as pub, \
                    await connect(srv, name="sub", error_callback=errors.append) as sub:
                evs, raws, pairs, capped = [], [], [], []
                calls = {"evs": 0, "raws": 0}

                def on_events(batch):
                    calls["evs"] += 1
                    assert type(batch) is list
                    evs.extend(batch)
                    if calls["evs"] == 1:
                        raise RuntimeError("a failing batch callback")

                def on_raw(subjects, replies, datas):
                    calls["raws"] += 1
                    assert len(subjects) == len(replies) == len(datas)
                    raws.extend(zip(subjects, replies, datas))

                sub.subscribe("b.a", on_events, batch=True)
                sub.subscribe("b.*", on_raw, raw=True, batch=True)
                sub.subscribe("b.a", lambda es, rs: pairs.extend(zip(es, rs)),
                              with_reply=True, batch=True)
                capped_sub = sub.subscribe("b.c", lambda es: capped.extend(es), batch=True)
                await capped_sub.unsubscribe(max=7)
                with pytest.raises(ValueError, match="batch=True needs a plain function"):
                    sub.subscribe("b.x", batch=True)

                async def coro(_evs):
                    pass

                with pytest.raises(ValueError, match="batch=True needs a plain function"):
                    sub.subscribe("b.x", coro, batch=True)
                await sub.flush()
                for i in range(n):
                    pub.publish("b.a", b"a%d" % i)
                    if i % 3 == 0:
                        pub.publish("b.c", b"c%d" % i, reply="r.%d" % i)
                await pub.flush()
                n_c = len(range(0, n, 3))
                await wait_until(lambda: len(evs) == n and len(raws) == n + n_c
                                 and len(pairs) == n, 10, "every message")
                assert [e.data for e in evs] == [b"a%d" % i for i in range(n)]
                assert [e.data for e, _r in pairs] == [b"a%d" % i for i in range(n)]
                assert all(r is None for _e, r in pairs)
                want = []
                for i in range(n):
                    want.append(("b.a", None, b"a%d" % i))
                    if i % 3 == 0:
                        want.append(("b.c", "r.%d" % i, b"c%d" % i))
                assert raws == want
                assert [e.data for e in capped] == [b"c%d" % i for i in range(0, 21, 3)]
                assert capped_sub.closed and capped_sub.delivered == 7
                # far fewer calls than messages: the point of batches
                assert calls["raws"] < (n + n_c) // 10, calls
                await wait_until(lambda: errors, 5, "the callback's error")
                assert isinstance(errors[0], RuntimeError)

    aloop(main)


def test_event_attributes_and_data_cross_the_wire_exactly(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv, name="pub") as pub, \
                    await connect(srv, name="sub") as sub:
                it = sub.subscribe("orders.>")
                raw = []
                sub.subscribe("orders.>", lambda s, r, d: raw.append((s, r, d)), raw=True)
                replies = []
                sub.subscribe("orders.>", lambda ev, r: replies.append((ev.id, r)),
                              with_reply=True)
                await sub.flush()
                when = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
                everything = bytes(range(256)) * 3
                big = os.urandom(200_000)
                pub.publish("orders.eu.created", everything, type="com.acme.order",
                            source="/shop/eu", subject="order-7", id="my-id-1",
                            time="2024-01-01T00:00:00.5Z", datacontenttype="application/x",
                            dataschema="https://acme.example/s", region="eu", count=-7,
                            urgent=True, blob=b"\x00\x01", when=when)
                pub.publish("orders.us", b"")
                pub.publish("orders.big", big, reply="reply.here")
                ev = Event("orders.ev", b"as is", type="t.e", source="/e", id="ev-id", k="v")
                pub.publish_event(ev)
                a, b, c, d = await take(it, 4)
                assert a.routing_subject == "orders.eu.created" and a.data == everything
                assert a.attributes() == {
                    "specversion": "1.0", "id": "my-id-1", "source": "/shop/eu",
                    "type": "com.acme.order", "subject": "order-7",
                    "time": "2024-01-01T00:00:00.5Z", "datacontenttype": "application/x",
                    "dataschema": "https://acme.example/s", "region": "eu", "count": -7,
                    "urgent": True, "blob": b"\x00\x01", "when": "2024-01-02T03:04:05.123456Z"}
                assert b.data == b"" and HEX32.match(b.id) and b.type == "orders.us"
                assert b.source == "/fastflow" and b.time is None
                assert c.data == big and c.routing_subject == "orders.big"
                assert (d.id, d.type, d.source, d["k"], d.data) == ("ev-id", "t.e", "/e", "v",
                                                                   b"as is")
                await wait_until(lambda: len(raw) == 4 and len(replies) == 4)
                assert raw[0] == ("orders.eu.created", None, everything)
                assert raw[2] == ("orders.big", "reply.here", big)
                assert [r for _i, r in replies] == [None, None, "reply.here", None]
                assert [i for i, _r in replies] == [a.id, b.id, c.id, d.id]
                st = sub.stats
                assert st["in_msgs"] == 12 and pub.stats["out_msgs"] == 4
                assert sub.subscriptions[0].delivered == 4

    aloop(main)


def test_wildcards_over_the_wire(aloop, ffserver):
    pats = ["orders.eu.created", "orders.*.created", "orders.>", "*.eu.*", ">", "*", "$SYS.>"]
    pubs = ["orders.eu.created", "orders.us.created", "orders.eu.paid", "orders",
            "orders.eu.created.late", "users.eu.x", "ping", "$SYS.x.y"]

    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as c:
                subs = {p: c.subscribe(p) for p in pats}
                await c.flush()
                for s in pubs:
                    c.publish(s, s.encode())
                await c.flush()
                want = {
                    "orders.eu.created": ["orders.eu.created"],
                    "orders.*.created": ["orders.eu.created", "orders.us.created"],
                    "orders.>": ["orders.eu.created", "orders.us.created", "orders.eu.paid",
                                 "orders.eu.created.late"],
                    "*.eu.*": ["orders.eu.created", "orders.eu.paid", "users.eu.x"],
                    ">": [s for s in pubs if not s.startswith("$")],
                    "*": ["orders", "ping"],
                    "$SYS.>": ["$SYS.x.y"],
                }
                for p, sub in subs.items():
                    got = await take(sub, len(want[p]))
                    assert [e.routing_subject for e in got] == want[p], p
                    assert [e.data for e in got] == [s.encode() for s in want[p]]
                    await nothing_more(sub, 0)
                with pytest.raises(SubjectError):
                    c.subscribe("orders..x")
                with pytest.raises(SubjectError):
                    c.publish("orders.*", b"")

    aloop(main)


def test_queue_groups_deliver_each_message_to_one_member(aloop, ffserver):
    n = 300 // SCALE

    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as a, await connect(srv) as b, \
                    await connect(srv) as p:
                got = {k: [] for k in ("a1", "a2", "b1", "plain", "other")}
                a.subscribe("work.*", lambda ev: got["a1"].append(ev.data), queue="workers")
                a.subscribe("work.*", lambda ev: got["a2"].append(ev.data), queue="workers")
                b.subscribe("work.>", lambda ev: got["b1"].append(ev.data), queue="workers")
                b.subscribe("work.*", lambda ev: got["plain"].append(ev.data))
                b.subscribe("work.*", lambda ev: got["other"].append(ev.data), queue="audit")
                await a.flush()
                await b.flush()
                for i in range(n):
                    p.publish("work.%d" % (i % 7), b"%d" % i)
                await p.flush()
                await wait_until(lambda: len(got["plain"]) == n and len(got["other"]) == n)
                await b.flush()
                await a.flush()
                members = got["a1"] + got["a2"] + got["b1"]
                assert sorted(members) == sorted(b"%d" % i for i in range(n))   # once each
                assert all(len(got[k]) > 0 for k in ("a1", "a2", "b1"))
                assert got["plain"] == [b"%d" % i for i in range(n)]
                assert sorted(got["other"]) == sorted(got["plain"])

    aloop(main)


def test_request_reply_and_no_responders(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as svc, await connect(srv) as c:
                def answer(ev, reply):
                    svc.respond(reply, ev.data.upper(), type="svc.answer", n=ev["n"])

                svc.subscribe("svc.upper", answer, with_reply=True)
                slow = svc.subscribe("svc.silent")          # never answers
                await svc.flush()
                for i in range(5):
                    ans = await c.request("svc.upper", b"abc%d" % i, timeout=2.0, n=i)
                    assert (ans.data, ans.type, ans["n"]) == (b"ABC%d" % i, "svc.answer", i)
                many = await asyncio.gather(*[c.request("svc.upper", b"x%d" % i, n=i)
                                              for i in range(20)])
                assert [m.data for m in many] == [b"X%d" % i for i in range(20)]
                t0 = time.monotonic()
                with pytest.raises(fc.NoRespondersError) as ei:
                    await c.request("svc.nobody", b"?", timeout=5.0)
                assert time.monotonic() - t0 < 2.0          # at once, not the timeout
                assert ei.value.subject == "svc.nobody" and ei.value.code == 503
                with pytest.raises(asyncio.TimeoutError):
                    await c.request("svc.silent", b"?", timeout=0.2)
                assert (await slow.next(2)).data == b"?"
                # the client is still fine
                assert (await c.request("svc.upper", b"ok", n=0)).data == b"OK"

    aloop(main)


def test_unsubscribe_and_unsubscribe_with_max(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv, name="unsub") as c, await connect(srv) as p:
                three = c.subscribe("u.>")
                gone = c.subscribe("u.>")
                await c.flush()
                await three.unsubscribe(max=3)
                await gone.unsubscribe()
                await c.flush()
                for i in range(10):
                    p.publish("u.x", b"%d" % i)
                await p.flush()
                got = [e.data async for e in three]             # ends after three
                assert got == [b"0", b"1", b"2"]
                assert three.closed and gone.closed
                assert c.subscriptions == []
                await c.flush()
                (conn,) = [x for x in srv.conns.values() if x.name == "unsub"]
                assert conn.live_subscriptions() == []      # the server ended it by itself
                assert [e async for e in gone] == []

    aloop(main)


def test_echo_off(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv, echo=False) as quiet, await connect(srv) as other:
                mine = quiet.subscribe("e.>")
                theirs = other.subscribe("e.>")
                await quiet.flush()
                await other.flush()
                quiet.publish("e.1", b"from quiet")
                other.publish("e.2", b"from other")
                await quiet.flush()
                await other.flush()
                assert [e.data for e in await take(mine, 1)] == [b"from other"]
                got = await take(theirs, 2)
                assert sorted(e.data for e in got) == [b"from other", b"from quiet"]
                await nothing_more(mine)

    aloop(main)


def test_subscription_queue_limits_and_cut(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            errors = []
            async with await connect(srv, error_callback=errors.append) as c:
                old = c.subscribe("q.>", max_pending=3)
                new = c.subscribe("q.>", max_pending=3, on_full="drop_new")
                cut = c.subscribe("q.>", max_pending=3, on_full="cut")
                by_bytes = c.subscribe("q.>", max_pending_bytes=3 * (64 + 200))
                await c.flush()
                for i in range(10):
                    c.publish("q.x", b"%d" % i)
                await c.flush()
                assert [e.data for e in await take(old, 3)] == [b"7", b"8", b"9"]
                assert old.dropped == 7 and old.delivered == 10
                assert [e.data for e in await take(new, 3)] == [b"0", b"1", b"2"]
                assert new.dropped == 7 and new.pending == 0
                assert cut.closed and cut.pending == 0
                with pytest.raises(fastflow.SlowConsumerError):
                    await cut.next(1)
                assert cut.stats()["slow_consumer"] is True
                assert 1 <= by_bytes.pending < 10 and by_bytes.dropped == 10 - by_bytes.pending
                assert [s.sid for s in c.subscriptions] == [old.sid, new.sid, by_bytes.sid]
                # the others go on
                c.publish("q.y", b"more")
                assert (await old.next(2)).data == b"more"
                assert errors == []

    aloop(main)


def test_callbacks_coroutines_errors_and_drain(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            errors = []
            c = await connect(srv, error_callback=errors.append)
            try:
                inline = []

                def flaky(ev):
                    if ev.data == b"3":
                        raise RuntimeError("callback failed on 3")
                    inline.append(ev.data)

                active = [0, 0]             # running now, most at once
                done = []

                async def slow(ev):
                    active[0] += 1
                    active[1] = max(active)
                    await asyncio.sleep(0.002)
                    done.append(ev.data)
                    active[0] -= 1

                c.subscribe("cb.>", flaky)
                c.subscribe("cb.>", slow)
                await c.flush()
                for i in range(30):
                    c.publish("cb.x", b"%d" % i)
                await c.flush()
                await wait_until(lambda: len(inline) == 29)
                assert inline == [b"%d" % i for i in range(30) if i != 3]
                assert len(errors) == 1 and str(errors[0]) == "callback failed on 3"
                # drain: unsubscribe, let the coroutine callback finish its queue, close
                await c.drain(timeout=5)
                assert done == [b"%d" % i for i in range(30)] and active[1] == 1
                assert c.is_closed
            finally:
                await c.close()

    aloop(main)


async def fake_server(on_frame):
    """A TCP server that sends INFO and hands every frame it reads to
    ``on_frame(writer, op, fid)``; returns the asyncio server."""
    info = json.dumps({"server_id": "FAKE", "proto": 1, "max_payload": 1 << 20}).encode()

    async def handle(reader, writer):
        try:
            writer.write(HEAD.pack(12 + len(info), 1, 1, 0, 0, 0, 0) + info)
            while True:
                head = await reader.readexactly(16)
                size, _v, op, _f, fid, _sn, _rn = HEAD.unpack(head)
                await reader.readexactly(size - 12)
                on_frame(writer, op, fid)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_client_drops_a_stale_connection(aloop):
    async def main():
        pings = []

        def on_frame(writer, op, fid):
            if op == 2:                                 # CONNECT: OK
                writer.write(HEAD.pack(14, 1, 11, 0, fid, 0, 0) + b"{}")
            elif op == 9:                               # PING: only the handshake's answered
                pings.append(fid)
                if len(pings) == 1:
                    writer.write(HEAD.pack(12, 1, 10, 0, 0, 0, 0))

        srv = await fake_server(on_frame)
        port = srv.sockets[0].getsockname()[1]
        errors = []
        closed = asyncio.get_running_loop().create_future()
        try:
            c = await fc.connect("fastflow://127.0.0.1:%d" % port, ping_interval=0.1,
                                 max_outstanding_pings=2, reconnect=False,
                                 error_callback=errors.append,
                                 closed_callback=lambda: closed.set_result(None))
            t0 = time.monotonic()
            await asyncio.wait_for(closed, 5)
            assert 0.2 < time.monotonic() - t0 < 2
            assert c.is_closed and len(pings) == 3
            assert any("stale connection" in str(e) for e in errors)
            await c.close()
        finally:
            srv.close()
            await srv.wait_closed()

    aloop(main)


# -- publish_ack, batches ----------------------------------------------------------------------


def test_publish_ack_seq_and_stream(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as c:
                assert await c.publish_ack("acks.x", b"nobody") == (0, None)
                await c.add_stream("A", ["acks.>"])
                assert await c.publish_ack("acks.x", b"1") == (1, "A")
                assert await c.publish_ack("acks.y", b"2", type="t") == (2, "A")
                acks = await asyncio.gather(*[c.publish_ack("acks.z", b"%d" % i)
                                              for i in range(10)])
                assert sorted(acks) == [(i, "A") for i in range(3, 13)]
                await c.add_stream("FULL", ["full.>"], {"max_events": 1, "discard": "new"})
                assert await c.publish_ack("full.1", b"") == (1, "FULL")
                with pytest.raises(fc.ServerError) as ei:
                    await c.publish_ack("full.2", b"")
                assert ei.value.code == 507
                info = await c.stream_info("A")
                assert (info["events"], info["last_seq"]) == (12, 12)

    aloop(main)


def test_publish_batch_and_publish_batch_ack(aloop, ffserver):
    n = 600 // SCALE

    async def main():
        # max_payload small: a batch is cut into many PUB_BATCH frames
        async with ffserver(max_payload=2048) as srv:
            async with await connect(srv) as c, await connect(srv) as s:
                sub = s.subscribe("b.>")
                await s.flush()
                await c.add_stream("B", ["b.>"])
                subjects = ["b.%d" % (i % 5) for i in range(n)]
                datas = [b"%05d" % i + b"." * (i % 300) for i in range(n)]
                c.publish_batch(subjects, datas, type="batch.t", k=1)
                c.publish_batch("b.same", [b"one", b"two"])
                last, count = await c.publish_batch_ack("b.acked", [b"x"] * 50)
                assert (last, count) == (n + 2 + 50, 50)
                got = await take(sub, n + 52)
                assert [e.routing_subject for e in got[:n]] == subjects
                assert [e.data for e in got[:n]] == datas
                assert all(e.type == "batch.t" and e["k"] == 1 for e in got[:n])
                assert len({e.id for e in got}) == n + 52
                assert [e.data for e in got[n:n + 2]] == [b"one", b"two"]
                assert (await c.stream_info("B"))["events"] == n + 52
                assert srv.flow.stats()["published"] == n + 52
                with pytest.raises(ValueError):
                    c.publish_batch(["b.1"], [b"1", b"2"])
                with pytest.raises(SubjectError):
                    c.publish_batch(["b.1", "b..2"], [b"1", b"2"])
                with pytest.raises(fc.PayloadTooLarge):
                    c.publish_batch("b.1", [b"x" * 3000])

    aloop(main)


def test_client_side_errors(aloop, ffserver, free_port):
    async def main():
        async with ffserver(max_payload=1000) as srv:
            async with await connect(srv) as c:
                assert c.max_payload == 1000 and c.info["max_payload"] == 1000
                with pytest.raises(fc.PayloadTooLarge):
                    c.publish("x", b"x" * 1000)
                with pytest.raises(fc.PayloadTooLarge):
                    await c.publish_ack("x", b"x" * 1000)
                c.publish("x", b"x" * 900)              # fits
                with pytest.raises(SubjectError):
                    c.publish("x..y", b"")
                with pytest.raises(ValueError):
                    c.subscribe("q", queue="bad group")
                await c.flush()
            assert c.is_closed and c.state == "closed"
            with pytest.raises(fc.ConnectionClosedError):
                c.publish("x", b"")
            with pytest.raises(fc.ConnectionClosedError):
                await c.flush()
        with pytest.raises(fc.ConnectError) as ei:
            await fc.connect("fastflow://127.0.0.1:%d" % free_port(), timeout=2.0)
        assert "could not connect" in str(ei.value)
        with pytest.raises(ValueError):
            fc.parse_url("http://x")
        assert fc.parse_url("fastflows://u:p@h:1") == ("h", 1, True, "u", "p", None)
        assert fc.parse_url("tok@h") == ("h", 4232, False, None, None, "tok")

    aloop(main)


def test_server_list_and_the_pending_limit(aloop, ffserver, free_port):
    async def main():
        dead = "fastflow://127.0.0.1:%d" % free_port()
        async with ffserver() as srv:
            async with await fc.connect([dead, srv.url], timeout=2) as c:
                assert c.server == srv.url and c.is_connected
            c = await fc.connect(srv.url, pending_limit=5000, reconnect_wait=0.05,
                                 reconnect_wait_max=0.1, error_callback=lambda e: None)
        try:
            # the server is gone: publishes are buffered up to pending_limit
            await wait_until(lambda: c.state == "reconnecting")
            c.publish("buf.x", b"x" * 2000)
            c.publish("buf.x", b"x" * 2000)
            with pytest.raises(fc.ClientBufferFull):
                c.publish("buf.x", b"x" * 2000)
            assert c.stats["pending_bytes"] > 4000
            with pytest.raises(asyncio.TimeoutError):
                await c.publish_ack("buf.x", b"", timeout=0.1)
        finally:
            await c.close()
        assert c.is_closed

    aloop(main)


# -- streams, replay and durable consumers over the wire -----------------------------------------


def test_streams_over_the_wire(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as c:
                info = await c.add_stream("S", ["s.>", "t.*"], {"max_events": 1000})
                assert info["name"] == "S" and info["subjects"] == ["s.>", "t.*"]
                assert info["retention"]["max_events"] == 1000 and info["storage"] == "memory"
                assert (await c.add_stream("S", ["s.>", "t.*"], {"max_events": 1000}))["name"] \
                    == "S"                              # the same config: fine
                with pytest.raises(fc.ConflictError) as ei:
                    await c.add_stream("S", ["s.>"])
                assert ei.value.code == 409
                with pytest.raises(fc.ServerError) as ei:
                    await c.add_stream("BAD", ["a..b"])
                assert ei.value.code == 422
                with pytest.raises(fc.ServerError) as ei:
                    await c.add_stream("F", ["f.>"], storage="file")    # no data dir
                assert ei.value.code == 400
                for i in range(10):
                    c.publish("s.%d" % (i % 2), b"%d" % i)
                c.publish("t.x", b"t")
                await c.flush()
                info = await c.stream_info("S")
                assert (info["events"], info["first_seq"], info["last_seq"]) == (11, 1, 11)
                assert "S" in srv.flow.streams()
                (summary,) = await c.streams()
                assert summary == {"name": "S", "subjects": ["s.>", "t.*"], "storage": "memory",
                                   "events": 11, "bytes": summary["bytes"], "first_seq": 1,
                                   "last_seq": 11, "consumers": 0}
                assert summary["bytes"] > 0
                assert await c.purge_stream("S", subject="s.1") == 5
                assert await c.purge_stream("S", up_to=4) == 2          # seqs 1 and 3
                assert (await c.stream_info("S"))["events"] == 4
                assert await c.purge_stream("S") == 4
                assert (await c.stream_info("S"))["events"] == 0
                assert await c.delete_stream("S") == {"deleted": "S"}
                assert await c.streams() == []
                with pytest.raises(fc.NotFoundError) as ei:
                    await c.stream_info("S")
                assert ei.value.code == 404
                with pytest.raises(fc.NotFoundError):
                    await c.delete_stream("S")
                # the connection is still fine after refused requests
                assert await c.publish_ack("s.1", b"") == (0, None)

    aloop(main)


def test_replay_every_start_position_and_filter(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as c:
                await c.add_stream("R", ["r.>"])
                for i in range(1, 21):
                    if i == 10:
                        await asyncio.sleep(0.01)
                        stamp = time.time_ns()
                        await asyncio.sleep(0.01)
                    seq, _ = await c.publish_ack("r.%s" % ("odd" if i % 2 else "even"),
                                                 b"%d" % i, type="r.t", i=i)
                    assert seq == i

                async def seqs(**kw):
                    evs = await c.replay("R", **kw).list()
                    for e in evs:
                        assert e.stream == "R" and e.ts > 0 and e.data == b"%d" % e.seq
                        assert e.type == "r.t" and e["i"] == e.seq
                    return [e.seq for e in evs]

                assert await seqs() == list(range(1, 21))
                assert await seqs(start="last") == [20]
                assert await seqs(start="new") == []
                assert await seqs(seq=15) == [15, 16, 17, 18, 19, 20]
                assert await seqs(seq=15, limit=2) == [15, 16]
                assert await seqs(filter="r.even") == list(range(2, 21, 2))
                assert await seqs(filter="r.odd", seq=10, limit=3) == [11, 13, 15]
                assert await seqs(page=3) == list(range(1, 21))             # 7 requests
                assert await seqs(page=3, filter="r.odd") == list(range(1, 21, 2))
                assert await seqs(time=stamp) == list(range(10, 21))
                when = dt.datetime.fromtimestamp(stamp / 1e9, tz=UTC)
                assert await seqs(time=when) == list(range(10, 21))
                assert await seqs(time=stamp, filter="r.even", limit=2) == [10, 12]
                r = c.replay("R", seq=19)
                assert [e.seq async for e in r] == [19, 20]
                assert r.count == 2 and r.lost == 0 and r.next_seq == 21
                # purged events are counted as lost
                await c.purge_stream("R", up_to=5)
                r = c.replay("R", seq=1)
                assert [e.seq for e in await r.list()] == list(range(6, 21))
                assert r.lost == 5
                with pytest.raises(fc.NotFoundError):
                    await c.replay("nope").list()
                with pytest.raises(SubjectError):
                    c.replay("R", filter="a..b")
                with pytest.raises(ValueError):
                    c.replay("R", start="middle")

    aloop(main)


def test_durable_consumer_over_the_wire(aloop, ffserver):
    async def main():
        async with ffserver() as srv:
            async with await connect(srv) as c, await connect(srv) as other:
                await c.add_stream("D", ["d.>"])
                for i in range(1, 9):
                    c.publish("d.%d" % i, b"%d" % i, type="d.t")
                info = await c.add_consumer("D", "work", ack_wait=30.0, max_in_flight=100)
                assert info["name"] == "work"
                assert (await c.add_consumer("D", "work", ack_wait=30.0,
                                             max_in_flight=100))["name"] == "work"
                with pytest.raises(fc.ConflictError):
                    await c.add_consumer("D", "work", ack_wait=5.0)
                ds = await c.fetch("D", "work", 5)
                assert [d.seq for d in ds] == [1, 2, 3, 4, 5]
                assert [d.data for d in ds] == [b"1", b"2", b"3", b"4", b"5"]
                assert all(d.type == "d.t" and d.stream == "D" for d in ds)
                assert ds[0].ack_subject == "$ACK.D.work.1"
                for d in ds[:3]:
                    await d.ack()
                await ds[3].nak()               # redelivered
                await ds[4].term()              # never again
                await c.flush()
                ds2 = await c.fetch("D", "work", 10)
                assert [d.seq for d in ds2] == [4, 6, 7, 8]
                # another connection may settle a delivery
                d4 = ds2[0]
                theirs = fc.Delivery(other, "D", d4.routing_subject, d4.ack_subject,
                                     d4.event.encode())
                assert theirs.seq == 4
                await theirs.ack()
                await other.flush()
                for d in ds2[1:]:
                    await d.ack()
                await c.flush()
                assert await c.fetch("D", "work", 10) == []
                ci = await c.consumer_info("D", "work")
                assert ci["pending"] == 0
                # fetch with wait: the next event comes while it waits
                later = asyncio.get_running_loop().call_later(0.2, c.publish, "d.9", b"9")
                t0 = time.monotonic()
                ds3 = await c.fetch("D", "work", 5, wait=3.0)
                later.cancel()
                assert [d.seq for d in ds3] == [9] and time.monotonic() - t0 < 2.5
                await ds3[0].ack()
                t0 = time.monotonic()
                assert await c.fetch("D", "work", 1, wait=0.2) == []
                assert time.monotonic() - t0 >= 0.15
                # nak with a delay: not before it
                c.publish("d.10", b"10")
                (d10,) = await c.fetch("D", "work", 1, wait=2.0)
                await d10.nak(0.3)
                await c.flush()
                assert await c.fetch("D", "work", 1) == []
                (again,) = await c.fetch("D", "work", 1, wait=3.0)
                assert again.seq == 10
                await again.ack()
                assert [x["name"] for x in await c.consumers("D")] == ["work"]
                assert await c.delete_consumer("D", "work") == {"deleted": "work"}
                with pytest.raises(fc.NotFoundError):
                    await c.fetch("D", "work", 1)
                with pytest.raises(fc.NotFoundError):
                    await c.consumer_info("D", "work")
                # a filtered consumer from the start
                await c.add_consumer("D", "odd", filter="d.1", start="first")
                assert [d.seq for d in await c.fetch("D", "odd", 10)] == [1]
                # dead letters: published on $DLQ.<stream>.<consumer>, advised
                dlq = c.subscribe("$DLQ.>")
                adv = c.subscribe("$SYS.advisory.dead_letter")
                await c.flush()
                await c.add_consumer("D", "once", start="last", max_deliver=1)
                (last,) = await c.fetch("D", "once", 5)
                assert last.seq == 10
                await last.nak()
                await c.flush()
                assert await c.fetch("D", "once", 5) == []
                dead = await dlq.next(5)
                assert (dead.routing_subject, dead.data, dead.id) == ("$DLQ.D.once", b"10",
                                                                      last.id)
                assert dead["ffdeliveries"] == 1
                advice = json.loads((await adv.next(5)).data)
                assert (advice["stream"], advice["consumer"], advice["seq"]) == ("D", "once", 10)
                assert (await c.consumer_info("D", "once"))["dead_lettered"] == 1

    aloop(main)


# -- a network client and an in-process subscriber ---------------------------------------------


def test_wire_clients_and_in_process_subscribers_see_each_other(aloop, ffserver):
    async def main():
        f = Flow()
        try:
            local = []
            f.subscribe("mix.>", local.append)
            st = f.add_stream("MIX", "mix.>")
            async with ffserver(flow=f) as srv:
                assert srv.flow is f
                async with await connect(srv) as c:
                    sub = c.subscribe("mix.>")
                    await c.flush()
                    c.publish("mix.from.wire", b"\x00w", type="w.t", region="eu")
                    await c.flush()
                    await wait_until(lambda: len(local) == 1)
                    ev = local[0]
                    assert (ev.routing_subject, ev.data, ev.type, ev["region"]) == (
                        "mix.from.wire", b"\x00w", "w.t", "eu")
                    assert (ev.seq, ev.stream) == (1, "MIX")
                    seq = f.publish("mix.from.flow", b"\x01f", type="f.t", n=3)
                    assert seq == 2
                    a, b = await take(sub, 2)
                    assert (a.routing_subject, a.data, a.id) == ("mix.from.wire", b"\x00w", ev.id)
                    assert (b.routing_subject, b.data, b.type, b["n"]) == (
                        "mix.from.flow", b"\x01f", "f.t", 3)
                    assert len(st) == 2
                    assert [e.seq for e in await c.replay("MIX").list()] == [1, 2]
            # a flow the application made is not closed by the server
            assert not f.closed
            f.publish("mix.after", b"")
            assert len(st) == 3
        finally:
            f.close()

    aloop(main)


# -- reconnecting across a restart (a subprocess server) --------------------------------------


def test_reconnect_after_a_server_restart(aloop, ffproc, tmp_path):
    data_dir = tmp_path / "data"

    async def main():
        server = ffproc("--data-dir", data_dir, "--loop", aloop.name)
        await server.astart()
        events = {"disconnected": 0, "reconnected": 0}
        reconnected = asyncio.get_running_loop().create_future()

        def on_reconnect(kind):
            def cb():
                events[kind] += 1
                if kind == "reconnected" and events[kind] == 1 and not reconnected.done():
                    reconnected.set_result(None)
            return cb

        opts = dict(reconnect_wait=0.05, reconnect_wait_max=0.2, timeout=3.0)
        c = await fc.connect(server.url, name="both", **opts,
                             disconnected_callback=on_reconnect("disconnected"),
                             reconnected_callback=on_reconnect("reconnected"))
        watcher = await fc.connect(server.url, name="watcher", **opts)
        try:
            info = await c.add_stream("KEEP", ["keep.>"], storage="file")
            assert info["storage"] == "file"
            mine = c.subscribe("keep.>")
            theirs = watcher.subscribe("keep.>")
            await c.flush()
            await watcher.flush()
            for i in range(5):
                assert await c.publish_ack("keep.before", b"%d" % i) == (i + 1, "KEEP")
            assert [e.data for e in await take(mine, 5)] == [b"%d" % i for i in range(5)]
            assert len(await take(theirs, 5)) == 5

            assert await server.astop() == 0
            await wait_until(lambda: c.state == "reconnecting", what="the client to notice")
            assert events["disconnected"] == 1
            # publishes while disconnected are buffered
            for i in range(3):
                c.publish("keep.offline", b"off%d" % i)
            assert c.stats["pending_bytes"] > 0

            await server.astart()
            await asyncio.wait_for(reconnected, 10)
            await wait_until(lambda: watcher.is_connected, 10, "the watcher to reconnect")
            await c.flush()
            # the buffered publishes went out after the resubscription
            assert [e.data for e in await take(mine, 3)] == [b"off0", b"off1", b"off2"]
            # the file-backed stream kept its events (and got the new ones)
            evs = await c.replay("KEEP").list()
            assert [e.data for e in evs] == [b"%d" % i for i in range(5)] + [
                b"off0", b"off1", b"off2"]
            assert [e.seq for e in evs] == list(range(1, 9))
            # both clients receive new messages on their restored subscriptions
            await watcher.flush()
            c.publish("keep.after", b"new")
            await c.flush()
            assert (await mine.next(5)).data == b"new"
            got = []
            while True:
                ev = await theirs.next(5)
                got.append(ev.data)
                if ev.data == b"new":
                    break
            assert set(got) <= {b"off0", b"off1", b"off2", b"new"}
            assert c.stats["reconnects"] == 1 and events["reconnected"] == 1
        finally:
            await c.close()
            await watcher.close()
            server.kill()

    aloop(main)


# -- the command line ---------------------------------------------------------------------------


RESPONDER = """
import asyncio, sys
import fastflow.client as fc

async def main():
    c = await fc.connect(sys.argv[1])
    done = asyncio.get_running_loop().create_future()

    def on(ev, reply):
        c.respond(reply, b"pong:" + ev.data, type="pong")
        done.set_result(None)

    c.subscribe("svc.echo", on, with_reply=True)
    await c.flush()
    print("ready", flush=True)
    await asyncio.wait_for(done, 30)
    await c.flush()
    await c.close()

asyncio.run(main())
"""


def test_cli_pub_sub_req_streams(ffproc):
    server = ffproc("--name", "cli-test").start()
    url = server.url
    sub = subprocess.Popen([sys.executable, "-m", "fastflow", "sub", "cli.>", "--count", "3",
                            "--json", "--server", url], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    responder = subprocess.Popen([sys.executable, "-c", RESPONDER, url], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        line = sub.stderr.readline()            # "listening on ..." once subscribed
        assert line.startswith("listening on cli.> at fastflow://127.0.0.1:"), line
        assert responder.stdout.readline().strip() == "ready"
        r = cli("streams", "add", "CLI", "cli.>", "--server", url)
        assert r.returncode == 0, r.stderr
        r = cli("pub", "cli.a", "hello", "--type", "cli.t", "--attr", "k=v", "--server", url)
        assert r.returncode == 0, r.stderr
        assert "published 1 event to cli.a" in r.stderr
        r = cli("pub", "cli.b", "-", "--ack", "--server", url, input="from stdin")
        assert r.returncode == 0, r.stderr
        assert "stored in CLI at seq 2" in r.stdout
        r = cli("streams", "ls", "--server", url)
        assert r.returncode == 0, r.stderr
        head, row = r.stdout.splitlines()
        assert head.split() == ["NAME", "SUBJECTS", "STORAGE", "EVENTS", "BYTES", "SEQS",
                                "CONSUMERS"]
        assert row.split()[:4] == ["CLI", "cli.>", "memory", "2"] and "1..2" in row
        r = cli("streams", "ls", "--json", "--server", url)
        assert [s["name"] for s in json.loads(r.stdout)] == ["CLI"]
        # req: answered by the responder; the reply's data on stdout
        r = cli("req", "svc.echo", "ping", "--server", url)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "pong:ping\n"
        assert responder.wait(20) == 0
        # a subscriber that does not answer: the request times out
        r = cli("req", "cli.req", "ping", "--wait", "0.5", "--server", url)
        assert r.returncode == 1 and "no reply from cli.req within 0.5 s" in r.stderr
        out, err = sub.communicate(timeout=20)
        assert sub.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert [x["routing_subject"] for x in lines] == ["cli.a", "cli.b", "cli.req"]
        assert lines[0]["type"] == "cli.t" and lines[0]["k"] == "v"
        # no datacontenttype: the CloudEvents JSON format carries the data in base64
        assert base64.b64decode(lines[0]["data_base64"]) == b"hello"
        assert base64.b64decode(lines[1]["data_base64"]) == b"from stdin"
        assert lines[2]["reply"].startswith("_INBOX.")
        r = cli("req", "svc.nobody", "x", "--server", url)
        assert r.returncode == 1 and "no responders" in r.stderr
        r = cli("pub", "cli.x", "y", "--server", "fastflow://127.0.0.1:1", "--timeout", "2")
        assert r.returncode == 1 and "could not connect" in r.stderr
        assert server.stop() == 0
    finally:
        for p in (sub, responder):
            if p.poll() is None:
                p.kill()
            p.communicate(timeout=10)
