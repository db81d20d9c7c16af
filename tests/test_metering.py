"""The core's metering counters (docs/accounts.md "Metering"): a router
counts the events and payload bytes published into it, delivered and
stored; each subscription and stream its own; an OutBuf the payload bytes
of its connection's publishes; an ImportTarget what crossed.  Bytes are the
events' data, as nats-server counts an account's bytes.  Both cores."""

from test_import_target import accounts, pub_frame, rec, sub, wire


def test_a_router_counts_events_and_payload_bytes(core):
    r = core.Router("acct")
    w1 = wire(core, r, "a.>", 1)
    w2 = wire(core, r, "a.b", 2)
    got = sub(core, r, "a.*")
    log = core.Log()
    st = core.StreamTarget("S", log)
    r.add("a.>", st)
    r.publish("a.b", b"12345")                        # data alone (the defaults)
    r.publish("a.b", b"1234567", type="t", id="x")    # an event with attributes
    r.publish_record("a.c", rec(core, "a.c", b"123"))  # a record from the network
    r.publish("z.z", b"1234567890")                   # no interest: counted in, not out
    assert (r.n_published, r.bytes_published) == (4, 5 + 7 + 3 + 10)
    assert (w1.delivered, w1.delivered_bytes) == (3, 15)
    assert (w2.delivered, w2.delivered_bytes) == (2, 12)
    assert len(got) == 3
    assert (r.n_delivered, r.bytes_delivered) == (3 + 2 + 3, 15 + 12 + 15)
    assert (st.appended, st.appended_bytes) == (3, 15)
    assert (r.n_appended, r.bytes_appended) == (3, 15)


def test_a_queued_subscription_counts_what_it_queued(core):
    r = core.Router("acct")
    t = core.SubTarget(None, max_pending=2)
    r.add(">", t)
    for i in range(3):
        r.publish("a", b"x" * (i + 1))
    assert t.delivered == 3 and t.delivered_bytes == 6      # (the oldest dropped at 2)


def test_the_publishing_connection_counts_its_payload_bytes(core):
    r = core.Router("acct")
    origin = core.OutBuf(0)
    wire(core, r, ">")
    r.publish_record("a", rec(core, "a", b"abcd"), origin=origin)
    r.publish_record("nobody.listens", rec(core, "x", b"ab"), origin=origin)
    p = core.FrameParser(r, origin, 1 << 20, 1 << 20)
    p.route_pubs = True
    p.feed(pub_frame("b", rec(core, "b", b"abcdef")))
    assert origin.pub_bytes == 4 + 2 + 6
    assert r.bytes_published == 12
    origin.pub_bytes = 0
    assert origin.pub_bytes == 0


def test_an_import_counts_the_payload_bytes_that_crossed(core):
    src, dst, t = accounts(core, prefix=b"p.")
    w = wire(core, dst, "p.>")
    src.publish("orders.1", b"12345")
    src.publish("orders.2", b"123", type="t")
    src.publish_record("orders.3", rec(core, "orders.3", b"1"))
    src.publish("other", b"xxxxxxxx")
    assert (t.forwarded, t.forwarded_bytes) == (3, 9)
    assert (dst.n_published, dst.bytes_published) == (3, 9)
    assert (w.delivered, w.delivered_bytes) == (3, 9)
    assert src.bytes_published == 17


# -- the server: per account, per user, per import; kept across a restart ------------------

import asyncio  # noqa: E402
import json  # noqa: E402

import fastflow.client as fc  # noqa: E402

USERS = [{"user": "acme", "password": "pa", "account": "acme"},
         {"user": "globex", "password": "pg", "account": "globex"},
         {"user": "ops", "password": "po", "account": "$SYS"}]
ACCOUNTS = {
    "acme": {"exports": [{"stream": "orders.>"}, {"service": "quotes.*"}]},
    "globex": {"imports": [{"stream": "orders.>", "account": "acme", "prefix": "partner.acme"},
                           {"service": "quotes.*", "account": "acme", "prefix": "acme"}]},
}


async def _workload(url):
    """acme: 10 orders of 100 bytes, a stream of them read back once, a
    quote service; globex: a subscriber of the imported orders, 2 requests
    of 5 bytes (answers of 8 bytes), 3 events of 7 bytes of its own."""
    acme = await fc.connect(url, user="acme", password="pa")
    globex = await fc.connect(url, user="globex", password="pg")
    got = []
    globex.subscribe("partner.acme.>", lambda ev: got.append(ev))
    mine = []
    acme.subscribe("orders.>", lambda ev: mine.append(ev))
    acme.subscribe("quotes.*", lambda ev, reply: acme.publish(reply, b"q:" + ev.data[:6]),
                   with_reply=True)
    await acme.add_stream("orders", ["orders.>"])
    await acme.purge_stream("orders")           # (the second run: only its own)
    await acme.flush()
    await globex.flush()
    for i in range(10):
        acme.publish("orders.{}".format(i), bytes(100))
    for i in range(3):
        globex.publish("own.{}".format(i), bytes(7))
    await acme.flush()
    for _ in range(2):
        r = await globex.request("acme.quotes.x", b"12345", timeout=3)
        assert r.data == b"q:12345"
    replayed = [e async for e in acme.replay("orders", "first")]
    assert len(replayed) == 10
    await globex.flush()
    for _ in range(100):
        if len(got) == 10 and len(mine) == 10:
            break
        await asyncio.sleep(0.01)
    await acme.close()
    await globex.close()


def _accountz(port):
    import urllib.request

    with urllib.request.urlopen("http://127.0.0.1:{}/accountz".format(port), timeout=5) as r:
        return json.loads(r.read())


EXPECT_ACME = {"in_msgs": 12, "in_bytes": 1000 + 2 * 7, "out_msgs": 12, "out_bytes": 1000 + 10,
               "imported_msgs": 2, "imported_bytes": 10, "exported_msgs": 12,
               "exported_bytes": 1000 + 2 * 7, "stored_msgs": 10, "stored_bytes": 1000,
               "replayed_msgs": 10, "replayed_bytes": 1000}
EXPECT_GLOBEX = {"in_msgs": 5, "in_bytes": 21 + 10, "out_msgs": 12, "out_bytes": 1000 + 14,
                 "imported_msgs": 12, "imported_bytes": 1014, "exported_msgs": 2,
                 "exported_bytes": 10, "stored_msgs": 0, "stored_bytes": 0,
                 "replayed_msgs": 0, "replayed_bytes": 0}


def test_metering_is_exact_and_survives_a_restart(aloop, ffserver, tmp_path):
    settings = dict(users=USERS, accounts=ACCOUNTS, data_dir=str(tmp_path / "data"),
                    metering_interval=0)

    async def run():
        async with ffserver(monitor=True, **settings) as srv:
            await _workload(srv.url)
            await asyncio.sleep(0.05)
            first = await asyncio.to_thread(_accountz, srv.monitor_port)
        async with ffserver(monitor=True, **settings) as srv:
            after = await asyncio.to_thread(_accountz, srv.monitor_port)
            await _workload(srv.url)
            await asyncio.sleep(0.05)
            twice = await asyncio.to_thread(_accountz, srv.monitor_port)
        return first, after, twice

    first, after, twice = aloop(run)
    for doc in (first, after):
        acme, globex = doc["accounts"]["acme"], doc["accounts"]["globex"]
        assert acme["usage"] == EXPECT_ACME
        assert globex["usage"] == EXPECT_GLOBEX
        imps = {i["local"]: i["usage"] for i in globex["imports"]}
        assert imps["partner.acme.orders.>"] == {"msgs": 10, "bytes": 1000}
        assert imps["acme.quotes.*"] == {"msgs": 2, "bytes": 10, "responses": 2,
                                         "response_bytes": 14}
        u = globex["users"]["globex"]
        assert (u["in_msgs"], u["in_bytes"], u["out_msgs"], u["out_bytes"]) == (
            5, 31, 12, 1014)
        assert u["connections"] == 1
    acme = twice["accounts"]["acme"]["usage"]
    assert acme == {k: 2 * v for k, v in EXPECT_ACME.items()}
    assert twice["accounts"]["globex"]["users"]["globex"]["connections"] == 2


def test_usage_events_reach_the_system_account(aloop, ffserver):
    async def run():
        async with ffserver(users=USERS, accounts=ACCOUNTS, metering_interval=0.2) as srv:
            ops = await fc.connect(srv.url, user="ops", password="po")
            got = asyncio.Queue()
            ops.subscribe("$SYS.account.*.usage", lambda ev: got.put_nowait(ev))
            await ops.flush()
            await _workload(srv.url)
            seen = {}
            while "acme" not in seen or seen["acme"]["usage"].get("in_msgs", 0) < 12:
                ev = await asyncio.wait_for(got.get(), 5)
                doc = json.loads(ev.data)
                seen[doc["account"]] = doc
                assert ev.type == "io.fastflow.account.usage"
            # globex's own clients cannot see the system account's subjects
            globex = await fc.connect(srv.url, user="globex", password="pg")
            theirs = []
            globex.subscribe("$SYS.>", lambda ev: theirs.append(ev))
            await globex.flush()
            await asyncio.sleep(0.5)
            await globex.close()
            await ops.close()
            return seen, theirs

    seen, theirs = aloop(run)
    assert seen["acme"]["usage"] == EXPECT_ACME
    assert theirs == []


def test_a_damaged_metering_file_is_kept_aside(aloop, ffserver, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "metering.json").write_text("{not json")

    async def run():
        async with ffserver(users=USERS, accounts=ACCOUNTS, data_dir=str(d)) as srv:
            return srv.meter.totals()["accounts"]["acme"]["in_msgs"]

    assert aloop(run) == 0
    assert [p.name.startswith("metering.json.bad-") for p in d.iterdir()].count(True) == 1
    assert json.loads((d / "metering.json").read_text())["version"] == 1


# -- the ingress quota's bucket (both cores) --------------------------------------------------


def test_a_rate_limit_goes_into_debt_and_says_how_long_to_wait(core):
    import time

    r = core.Router("acct")
    origin = core.OutBuf(0)
    wire(core, r, ">")
    b = r.ingress = core.RateLimit(msgs_per_second=100, bytes_per_second=0, burst=0.1)
    assert b.wait() == 0.0                      # 10 events in the bucket
    for _ in range(30):
        r.publish_record("a", rec(core, "a", b"xy"), origin=origin)
    r.publish_record("a", rec(core, "a", b"xy"))        # (no origin: not a client's: free)
    assert (b.taken, b.taken_bytes) == (30, 60)
    w = b.wait()
    assert 0.15 < w <= 0.2                      # 20 in debt at 100/s
    time.sleep(0.05)
    assert b.wait() < w
    assert 0.2 < b.wait(10) <= 0.25             # and 10 more
    bb = core.RateLimit(bytes_per_second=1000, burst=1.0)
    bb.take(1, 1500)
    assert 0.45 < bb.wait() <= 0.5
    r.ingress = None
    try:
        r.ingress = "no"
    except TypeError:
        pass
    else:
        raise AssertionError("a str taken as a RateLimit")
