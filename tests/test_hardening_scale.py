"""Cost and memory bounds under abuse: subscription refusals, bulk
unsubscribes and cache invalidation in the matcher, pre-authentication
buffers, the server-wide pending output cap.  No timing assertions: the
work is counted (calls, counters), the bounds are asserted on sizes."""

import asyncio
import struct

import pytest

import fastflow
from fastflow import Flow

from helpers import wait_until
from test_server import OP, Raw, frame, record

# -- the matcher: O(1) invalidation, bulk removal -------------------------------------


def test_remove_many_removes_the_live_handles(core):
    m = core.Matcher()
    hs = [m.add("a.%d.*" % i, i) for i in range(10)] + [m.add("b.>", "b")]
    m.remove(hs[3])
    # unknown, removed and foreign handles are skipped, not errors
    assert m.remove_many(hs[:6] + [hs[3], 1 << 60, -1, "x"]) == 5
    assert len(m) == 5
    assert sorted(m.match("a.7.x")) == [7]
    assert m.match("a.1.x") == []
    assert m.remove_many([]) == 0
    assert m.remove_many(iter(hs[6:])) == 5
    assert len(m) == 0 and m.match("b.c") == []
    m._check()


def test_remove_many_releases_values_once(core):
    import weakref

    class V:
        pass

    m = core.Matcher()
    vals = [V() for _ in range(300)]
    refs = [weakref.ref(v) for v in vals]
    hs = [m.add("q.%d.>" % i, v) for i, v in enumerate(vals)]
    del vals
    assert m.remove_many(hs) == 300
    assert all(r() is None for r in refs)


@pytest.fixture
def native():
    if not fastflow.COMPILED:
        pytest.skip("the compiled core is not loaded (FASTFLOW_NO_EXTENSIONS=1)")
    return fastflow.Matcher


def test_wildcard_changes_with_a_warm_cache_stay_correct(native):
    """60,000 wildcard subscriptions over a warm cache: every change makes
    entries stale by a generation counter (O(1)) instead of scanning the
    cache; stale entries are never served."""
    m = native(cache_size=1 << 12)
    m.add("orders.>", "all")
    subjects = ["orders.%d.c%d" % (i, i % 50) for i in range(2000)] + \
        ["trades.%d" % i for i in range(500)]
    for s in subjects:
        m.match(s)
    before = m.stats()
    hs = [m.add("orders.*.c%d" % i, i) for i in range(60000)]
    st = m.stats()
    # the trades entries were not touched; the orders ones went stale
    assert before["cache_entries"] > 2000
    assert 0 < st["cache_entries"] <= 500 and st["cache_stale"] >= before["cache_entries"] - 500
    for s in subjects[::97]:
        want = ["all"] + ([int(s.split(".")[2][1:])] if s.startswith("orders") else [])
        if s.startswith("trades"):
            want = []
        assert sorted(m.match(s), key=str) == sorted(want, key=str), s
    m._check()
    for s in subjects:
        m.match(s)
    # one bulk removal (a disconnect): one flush, not one scan per pattern
    flushes = m.stats()["cache_flushes"]
    assert m.remove_many(hs) == 60000
    assert m.stats()["cache_flushes"] == flushes + 1
    assert m.match("orders.1.c1") == ["all"]
    m._check()


def test_small_bulk_removal_invalidates_per_pattern(native):
    m = native(cache_size=1024)
    hs = [m.add("x.%d" % i, i) for i in range(10)] + [m.add("y.*", "y")]
    for i in range(10):
        m.match("x.%d" % i)
    m.match("y.1")
    m.match("z")
    assert m.remove_many(hs[:3] + hs[-1:]) == 4
    st = m.stats()
    assert st["cache_flushes"] == 0 and st["cache_entries"] == 8   # x.3..x.9, z
    assert m.match("y.1") == [] and m.match("x.1") == [] and m.match("x.5") == [5]
    m._check()


def test_repeated_wildcard_changes_never_serve_stale_results(native):
    m = native(cache_size=64)
    m.add("a.>", 1)
    for _ in range(5):
        m.match("a.b")
        h = m.add("a.*", 2)
        assert sorted(m.match("a.b")) == [1, 2]
        m.remove(h)
        assert m.match("a.b") == [1]
        h = m.add("*.b", 3)
        assert sorted(m.match("a.b")) == [1, 3]
        m.remove_many([h])
        assert m.match("a.b") == [1]
        m._check()


def test_random_churn_with_bulk_removal_against_reference(native):
    """Random adds, removes, remove_many (small and bulk) and matches on a
    small cache, compared with the reference after every step."""
    import random

    from conftest import REF_CORE

    seed = random.randrange(1 << 30)
    print("seed", seed)
    rnd = random.Random(seed)
    toks = ["a", "b", "c", "$s"]

    def pattern():
        n = rnd.randint(1, 4)
        out = [rnd.choice(toks[:3] + ["*"]) for _ in range(n)]
        if rnd.random() < 0.3:
            out[-1] = ">"
        return ".".join(out)

    def subject():
        return ".".join(rnd.choice(toks) for _ in range(rnd.randint(1, 4)))

    nat, ref = native(cache_size=16), REF_CORE.Matcher()
    live = []               # (native handle, ref handle)
    for step in range(3000):
        r = rnd.random()
        if r < 0.35:
            p, v = pattern(), step
            live.append((nat.add(p, v), ref.add(p, v)))
        elif r < 0.45 and live:
            hn, hr = live.pop(rnd.randrange(len(live)))
            nat.remove(hn)
            ref.remove(hr)
        elif r < 0.48 and live:
            k = rnd.choice([1, 3, 300])
            rnd.shuffle(live)
            batch, live = live[:k], live[k:]
            assert nat.remove_many([h for h, _ in batch] + [-5]) == len(batch)
            assert ref.remove_many([h for _, h in batch] + [-5]) == len(batch)
        else:
            s = subject()
            assert sorted(nat.match(s)) == sorted(ref.match(s)), (seed, step, s)
        if step % 500 == 0:
            nat._check()
    nat._check()


# -- the server: refusing SUBs past the per-connection limit costs O(1) ---------------


class _CountingMatcher:
    """The flow's matcher, counting membership tests (the per-subscription
    work a refusal used to do)."""

    def __init__(self, m):
        self._m = m
        self.contains = 0

    def __contains__(self, h):
        self.contains += 1
        return h in self._m

    def __getattr__(self, name):
        return getattr(self._m, name)


def _counting_flow():
    class CountingFlow(Flow):
        @property
        def matcher(self):
            return counting

    f = CountingFlow()
    counting = _CountingMatcher(Flow.matcher.__get__(f))
    return f, counting


LIMIT = 2000
EXTRA = 1200


def test_refused_subs_cost_o1_native(aloop, ffserver):
    async def main():
        flow, counting = _counting_flow()
        async with ffserver(flow=flow, max_subscriptions=LIMIT) as srv:
            a = await Raw.open(srv.port)
            b = await Raw.open(srv.port)
            try:
                await a.handshake()
                await b.handshake()
                await a.send(b"".join(frame(OP["SUB"], 0, 1 + i, "s.%d" % i)
                                      for i in range(LIMIT)))
                await a.send(frame(OP["PING"], 0, 1))
                await a.expect("PONG", 20)
                counting.contains = 0
                await a.send(b"".join(frame(OP["SUB"], 0, 1 + LIMIT + i, "x.%d" % i)
                                      for i in range(EXTRA)))
                # another client is served meanwhile
                await b.send(frame(OP["PING"], 0, 5))
                assert (await b.expect("PONG", 20)).id == 5
                errs = [await a.expect("ERR", 20) for _ in range(EXTRA)]
                assert {(f.code, f.message) for f in errs} == {
                    (429, "maximum subscriptions per connection ({}) reached".format(LIMIT))}
                assert sorted(f.id for f in errs) == list(range(1 + LIMIT, 1 + LIMIT + EXTRA))
                # no refusal looked at the connection's subscriptions
                assert counting.contains < 10, counting.contains
                # a subscription the engine ends (UNSUB with a max) frees its place
                await a.send(frame(OP["UNSUB"], 0, 1, body=struct.pack("<I", 1)))
                await a.send(frame(OP["PING"], 0, 2))
                await a.expect("PONG")
                await b.send(frame(OP["PUB"], 0, 0, "s.0", "", record("s.0", b"hi")))
                assert (await a.expect("MSG")).id == 1
                await a.send(frame(OP["SUB"], 0, 99999, "s.new") + frame(OP["PING"], 0, 3))
                assert (await a.expect("PONG")).id == 3     # no ERR before it
                await b.send(frame(OP["PUB"], 0, 0, "s.new", "", record("s.new", b"2")))
                assert (await a.expect("MSG")).id == 99999
            finally:
                a.close()
                b.close()

    aloop(main)


def test_refused_subs_cost_o1_nats(aloop, ffnats):
    async def main():
        flow, counting = _counting_flow()
        async with ffnats(flow=flow, max_subscriptions=LIMIT) as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.nats_port)
            r2, w2 = await asyncio.open_connection("127.0.0.1", srv.nats_port)
            try:
                await r.readline()
                await r2.readline()
                # (the second client connects at once: its auth timer does not
                # run while the first one's SUBs are processed)
                w2.write(b'CONNECT {"verbose":false}\r\n')
                w.write(b'CONNECT {"verbose":false}\r\n' + b"".join(
                    b"SUB s.%d %d\r\n" % (i, i) for i in range(LIMIT)) + b"PING\r\n")
                assert await asyncio.wait_for(r.readline(), 20) == b"PONG\r\n"
                counting.contains = 0
                w.write(b"".join(b"SUB x.%d x%d\r\n" % (i, i) for i in range(EXTRA))
                        + b"PING\r\n")
                w2.write(b"PING\r\n")
                assert await asyncio.wait_for(r2.readline(), 20) == b"PONG\r\n"
                lines = [await asyncio.wait_for(r.readline(), 20) for _ in range(EXTRA + 1)]
                assert lines[-1] == b"PONG\r\n"
                assert set(lines[:-1]) == {b"-ERR 'maximum subscriptions exceeded'\r\n"}
                assert counting.contains < 10, counting.contains
                # UNSUB with a max ended by the engine frees the place
                w.write(b"UNSUB 0 1\r\nPING\r\n")
                assert await asyncio.wait_for(r.readline(), 5) == b"PONG\r\n"
                w2.write(b"PUB s.0 2\r\nhi\r\nPING\r\n")
                assert await asyncio.wait_for(r2.readline(), 5) == b"PONG\r\n"
                assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"MSG s.0 0 2")
                await r.readline()
                w.write(b"SUB s.new new\r\nPING\r\n")
                assert await asyncio.wait_for(r.readline(), 5) == b"PONG\r\n"
            finally:
                w.close()
                w2.close()

    aloop(main)


# -- before CONNECT: a bounded frame, a server-wide budget ----------------------------


def test_big_frame_before_connect_is_refused_at_once(aloop, ffserver):
    async def main():
        async with ffserver(max_connect="8KiB") as srv:
            raw = await Raw.open(srv.port)
            try:
                await raw.expect("INFO")
                # a header announcing 1 MiB: refused before any of it is buffered
                await raw.send(struct.pack("<IBBHIHH", 1 << 20, 1, OP["PUB"], 0, 0, 1, 0))
                rest = await raw.until_closed()
                assert [(f.code, f.message) for f in rest] == [
                    (431, "frame of 1048576 bytes before CONNECT exceeds max_connect=8192")]
            finally:
                raw.close()
            # a CONNECT over the bound too
            raw = await Raw.open(srv.port)
            try:
                await raw.expect("INFO")
                await raw.send(frame(OP["CONNECT"], 0, 1, body=b'{"name":"%s"}' % (b"x" * 9000)))
                rest = await raw.until_closed()
                assert [f.code for f in rest] == [431]
                assert "before CONNECT exceeds max_connect=8192" in rest[0].message
            finally:
                raw.close()
            # after CONNECT, max_payload applies again
            raw = await Raw.open(srv.port)
            try:
                await raw.handshake()
                await raw.send(frame(OP["SUB"], 0, 1, "big"))
                await raw.send(frame(OP["PUB"], 0, 0, "big", "", record("big", b"x" * 100000)))
                assert len((await raw.expect("MSG")).body) > 100000
            finally:
                raw.close()

    aloop(main)


def test_big_payload_before_connect_is_refused_nats(aloop, ffnats):
    """With auth on, a PUB before CONNECT gets nats-server's answer at its
    line, before its payload is buffered."""
    async def main():
        async with ffnats(max_connect="8KiB", token="s3cret") as srv:
            r, w = await asyncio.open_connection("127.0.0.1", srv.nats_port)
            try:
                await r.readline()
                w.write(b"PUB a 1000000\r\n")
                assert await asyncio.wait_for(r.readline(), 5) == \
                    b"-ERR 'Authorization Violation'\r\n"
                assert await asyncio.wait_for(r.read(), 5) == b""
            finally:
                w.close()
            # after CONNECT: max_payload (1 MiB)
            r, w = await asyncio.open_connection("127.0.0.1", srv.nats_port)
            try:
                await r.readline()
                w.write(b'CONNECT {"verbose":false,"auth_token":"s3cret"}\r\nPING\r\n')
                assert await asyncio.wait_for(r.readline(), 5) == b"PONG\r\n"
                w.write(b"SUB a 1\r\nPUB a 100000\r\n" + b"x" * 100000 + b"\r\n")
                assert (await asyncio.wait_for(r.readline(), 5)).startswith(b"MSG a 1 100000")
            finally:
                w.close()

    aloop(main)


def test_preauth_answers_like_nats_server(aloop, natsd, ffnats):
    from test_nats import observe

    async def main():
        async with natsd(token="s3cret") as ns, ffnats(token="s3cret") as srv:
            for data in (b"PUB a 1000000\r\n", b"CONNECT {" + b"x" * 5000):
                want = await observe(ns.port, data)
                assert want[-1] == ("EOF",) and want[0][0] == "-ERR", want
                assert await observe(srv.nats_port, data) == want

    aloop(main)


def test_preauth_input_is_bounded_across_connections(aloop, ffserver):
    async def main():
        budget = 64 * 1024
        async with ffserver(max_connect="8KiB", max_preauth_bytes=budget) as srv:
            conns = []
            refused = []
            held = 0
            try:
                for i in range(16):
                    raw = await Raw.open(srv.port)
                    conns.append(raw)
                    await raw.expect("INFO")
                    errs = srv.n_protocol_errors
                    # a partial frame of 7,000 of its 8,000 bytes, never finished
                    await raw.send(frame(OP["PUB"], 0, 0, "a", "", b"x" * 7980)[:7000])
                    await wait_until(lambda: srv.preauth_bytes >= held + 7000
                                     or srv.n_protocol_errors > errs, what="the server read it")
                    if srv.n_protocol_errors > errs:
                        rest = await raw.until_closed()
                        assert [f.code for f in rest] == [503]
                        assert "max_preauth_bytes (65536 bytes)" in rest[0].message
                        refused.append(i)
                    else:
                        held += 7000
                    assert srv.preauth_bytes <= budget
                assert refused and refused[0] == budget // 7000   # the first over the budget
                # the ones within the budget are still open, and closing frees it
                for c in conns[:3]:
                    c.close()
                await wait_until(lambda: srv.preauth_bytes <= budget - 3 * 7000)
            finally:
                for c in conns:
                    c.close()
            await wait_until(lambda: srv.preauth_bytes == 0)

    aloop(main)


# -- the server-wide cap on pending output --------------------------------------------


def test_pending_output_total_is_capped(aloop, ffserver):
    async def main():
        cap = 2 * 1024 * 1024
        async with ffserver(max_payload="256KiB", max_pending="4MiB", max_pending_total=cap,
                            write_high_water="32MiB", write_low_water="1MiB") as srv:
            subs = []
            pub = await Raw.open(srv.port)
            try:
                for _ in range(3):
                    raw = await Raw.open(srv.port, rcvbuf=4096)
                    subs.append(raw)
                    await raw.handshake()
                    await raw.subscribe("big")
                await pub.handshake()
                ev = frame(OP["PUB"], 0, 0, "big", "", record("big", b"x" * 200000))
                for _ in range(40):         # 8 MB for each subscriber that never reads
                    await pub.send(ev)
                    assert srv.pending_total <= cap + 2 * len(ev)
                await pub.send(frame(OP["PING"], 0, 9))
                await pub.expect("PONG", 20)
                await wait_until(lambda: srv.n_slow_consumers > 0)
                srv.enforce_pending_total()
                assert srv.pending_total <= cap
                # whoever was cut was told why
                reasons = []
                for raw in subs:
                    try:
                        frames = await raw.until_closed(2)
                    except asyncio.TimeoutError:
                        continue
                    reasons += [f.message for f in frames if f.name == "ERR"]
                assert reasons and all(
                    "max_pending_total (2097152 bytes)" in m for m in reasons), reasons
            finally:
                pub.close()
                for raw in subs:
                    raw.close()
            await wait_until(lambda: not srv.conns)
            assert srv.pending_total == 0 and srv.preauth_bytes == 0

    aloop(main)


def test_a_full_bucket_drops_a_stale_entry_first(native):
    m = native(cache_size=1)            # one bucket of 4 entries
    m.add("a.*", 1)
    for s in ["b.1", "b.2", "a.1", "a.2"]:
        m.match(s)                      # bucket: a.2 a.1 b.2 b.1
    m.add("b.*", 2)                     # b.1 and b.2 go stale
    st = m.stats()
    assert (st["cache_entries"], st["cache_stale"]) == (2, 2)
    m.match("c.1")                      # takes a stale entry's place
    m.match("c.2")
    st = m.stats()
    assert st["cache_evictions"] == 0 and st["cache_entries"] == 4
    hits = st["cache_hits"]
    assert m.match("a.1") == [1] and m.match("a.2") == [1]
    assert m.stats()["cache_hits"] == hits + 2
    m._check()
