"""Issue 19, end to end: ``fastflow serve --cluster <urls>`` nodes joined
through a real NATS cluster (notes: CLUSTER_PLAN.md).  Three node
processes, each with its native port, its NATS door and its monitoring
port, all linked to the module's cluster of three nats-servers
(``nats_cluster``); clients are fastflow's native client and nats-py on
the NATS door.

What is checked: events cross nodes for plain subscriptions (wildcards,
overlapping patterns: one copy each), queue groups deliver each event once
cluster-wide and prefer local members, request/reply crosses nodes and a
request nobody anywhere listens to gets "no responders" at once, a node
never forwards back what came from the backbone, one PUB per event
whatever the number of interested nodes (and none without remote
interest), a native client given two nodes fails over and resubscribes,
a killed node's interest is forgotten after ~3 interest intervals, and
/varz and /metrics show the cluster.

Convergence is waited for by polling the nodes' /varz (bounded), never by
fixed sleeps; the interest interval is INTERVAL (0.2 s) so that it is
fast.  The nodes run under both event loops at once (NODE_LOOPS: node 0
and 2 uvloop, node 1 asyncio); the test's clients run under uvloop.
Missing peers (nats-server, nats-py) skip loudly, or fail with
FASTFLOW_REQUIRE_PEERS=1."""

import asyncio
import importlib.util
import json
import re
import signal
import time

import pytest

import fastflow.client as fc

from test_nats import Clients, flush

INTERVAL = 0.2                  # seconds: [cluster] interest_interval of the nodes
NODE_LOOPS = ("uvloop", "asyncio")
TEST_TIMEOUT = 40.0
NODE_ID = re.compile(r"node(\d)-[0-9a-f]{8}\Z")

# the nodes are the server under test and run under both loops themselves (NODE_LOOPS)
one_loop = pytest.mark.parametrize("aloop", ["uvloop"], indirect=True)
pytestmark = one_loop


# -- the nodes --------------------------------------------------------------------------------


@pytest.fixture
def ffnodes(ffnatsproc, nats_cluster, natspy, tmp_path):
    """``nodes = await ffnodes(n=3)``: n ``fastflow serve --cluster <the
    cluster's urls>`` processes (``--name node<i>``, NATS door, monitor
    port, ``[cluster] interest_interval = INTERVAL``), started together;
    returns once every node's link is connected and every node knows the
    others (``await_joined``).  Skips while this tree has no cluster link."""
    if importlib.util.find_spec("fastflow.cluster") is None:
        pytest.skip("the cluster link (issue 19: fastflow/cluster) is not in this tree yet")
    conf = tmp_path / "cluster.toml"
    conf.write_text("[cluster]\ninterest_interval = {}\n".format(INTERVAL))

    async def make(n=3):
        nodes = [ffnatsproc("--name", "node{}".format(i), "--cluster", ",".join(nats_cluster.urls),
                            "--config", str(conf), "--loop", NODE_LOOPS[i % 2], monitor=True)
                 for i in range(n)]
        await asyncio.gather(*(nd.astart() for nd in nodes))
        await await_joined(nodes)
        return nodes

    return make


async def http_get(port, path, timeout=5.0):
    """``GET path`` on 127.0.0.1:port: (status, body)."""
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
    try:
        w.write("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".format(path).encode())
        data = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def varz(node):
    status, body = await http_get(node.monitor_port, "/varz")
    assert status == 200, body
    return json.loads(body)


async def cluster_of(node):
    """The ``cluster`` section of the node's /varz."""
    return (await varz(node))["cluster"]


async def metrics(node):
    """The node's /metrics: {name: value} (samples of one name summed)."""
    status, body = await http_get(node.monitor_port, "/metrics")
    assert status == 200, body
    out = {}
    for line in body.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        out[name] = out.get(name, 0) + float(value)
    return out


def count(v):
    """A /varz figure that may be a number or the list (or map) it counts."""
    return v if isinstance(v, (int, float)) else len(v)


def peers(c):
    """How many other nodes a node knows (its cluster section ``c``)."""
    return count(c["nodes"])


async def await_cluster(node, pred, what, timeout=5.0):
    """The node's cluster section once ``pred(section)`` holds (polled)."""
    deadline = time.monotonic() + timeout
    while True:
        c = await cluster_of(node)
        if pred(c):
            return c
        if time.monotonic() > deadline:
            raise AssertionError("node {} (:{}) after {} s, still not {}: {}\n--- its log:\n{}"
                                 .format(node.args[node.args.index("--name") + 1], node.port,
                                         timeout, what, json.dumps(c), node.log[-3000:]))
        await asyncio.sleep(0.02)


async def await_joined(nodes, timeout=10.0):
    """Every node's link is connected and every node knows the others."""
    for nd in nodes:
        await await_cluster(nd, lambda c: c["connected"] and peers(c) == len(nodes) - 1,
                            "connected and knowing the {} other nodes".format(len(nodes) - 1),
                            timeout)


async def await_remote_interest(node, n, timeout=5.0):
    """The node knows ``n`` remote interests (give the nodes distinct
    patterns: then a count per node and a union count agree)."""
    return await await_cluster(node, lambda c: count(c["remote_interest"]) == n,
                               "knowing {} remote interest(s)".format(n), timeout)


async def exactly(sub, n, quiet=0.2, timeout=5.0):
    """``n`` events of a native subscription, and then none for ``quiet``
    seconds: [(routing subject, data)]."""
    got = []
    for _ in range(n):
        try:
            ev = await sub.next(timeout)
        except asyncio.TimeoutError:
            raise AssertionError("{} of {} events within {} s: {}".format(
                len(got), n, timeout, got)) from None
        got.append((ev.routing_subject, ev.data))
    with pytest.raises(asyncio.TimeoutError):
        ev = await sub.next(quiet)
        got.append((ev.routing_subject, ev.data))
        raise AssertionError("more than {} events: {}".format(n, got))
    return got


async def exactly_nats(natspy, nsub, n, quiet=0.2, timeout=5.0):
    """``exactly`` for a nats-py subscription: [(subject, data)]."""
    got = []
    for _ in range(n):
        try:
            m = await nsub.next_msg(timeout)
        except natspy.errors.TimeoutError:
            raise AssertionError("{} of {} messages within {} s: {}".format(
                len(got), n, timeout, got)) from None
        got.append((m.subject, m.data))
    with pytest.raises(natspy.errors.TimeoutError):
        m = await nsub.next_msg(quiet)
        got.append((m.subject, m.data))
        raise AssertionError("more than {} messages: {}".format(n, got))
    return got


async def split(natspy, sub, nsub, total, timeout=5.0, quiet=0.2):
    """Everything a native subscription and a nats-py one received, until
    ``total`` in all, then none more for ``quiet`` seconds: two lists of
    (subject, data)."""
    got, ngot = [], []
    deadline = time.monotonic() + timeout
    while len(got) + len(ngot) < total:
        if time.monotonic() > deadline:
            raise AssertionError("{} of {} messages within {} s: {} and {}".format(
                len(got) + len(ngot), total, timeout, got, ngot))
        try:
            ev = await sub.next(0.02)
            got.append((ev.routing_subject, ev.data))
        except asyncio.TimeoutError:
            pass
        try:
            m = await nsub.next_msg(0.02)
            ngot.append((m.subject, m.data))
        except natspy.errors.TimeoutError:
            pass
    assert await exactly(sub, 0, quiet) == []
    assert await exactly_nats(natspy, nsub, 0, 0.01) == []
    return got, ngot


async def native(node, **kw):
    kw.setdefault("timeout", 5)
    return await fc.connect(node.url, **kw)


# -- joining and monitoring ------------------------------------------------------------------


def test_nodes_join_and_show_the_cluster_in_varz_and_metrics(aloop, ffnodes, nats_cluster):
    async def main():
        nodes = await ffnodes(3)
        ids = set()
        for i, nd in enumerate(nodes):
            c = await cluster_of(nd)
            assert c["connected"] is True
            assert c["urls"] == nats_cluster.urls       # (as --cluster gives them)
            assert "nats://" + c["server"] in nats_cluster.urls     # (host:port)
            m = NODE_ID.match(c["node"])
            assert m and int(m.group(1)) == i, c["node"]
            ids.add(c["node"])
            assert peers(c) == 2
            assert (c["out_msgs"], c["out_bytes"], c["in_msgs"]) == (0, 0, 0)
            assert c["in_bytes"] > 0        # (every byte read: the others' gossip so far)
            assert count(c["remote_interest"]) == 0 and count(c["local_interest"]) == 0
            assert c["reconnects"] == 0
            mt = await metrics(nd)
            assert mt["fastflow_cluster_connected"] == 1
            assert mt["fastflow_cluster_nodes"] == 2
            for k in ("in_msgs", "out_msgs", "out_bytes"):
                assert mt["fastflow_cluster_{}_total".format(k)] == 0
            assert mt["fastflow_cluster_in_bytes_total"] >= c["in_bytes"]
            assert mt["fastflow_cluster_remote_interest"] == 0
        assert len(ids) == 3
        # heartbeats keep the nodes known: 6 intervals on, none is forgotten
        deadline = time.monotonic() + 6 * INTERVAL
        while time.monotonic() < deadline:
            for nd in nodes:
                assert peers(await cluster_of(nd)) == 2
            await asyncio.sleep(INTERVAL / 4)

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_node_started_without_a_cluster_has_no_cluster_section_or_says_so(aloop, ffnatsproc):
    async def main():
        nd = ffnatsproc(monitor=True)
        await nd.astart()
        c = (await varz(nd)).get("cluster")
        assert c is None or c.get("connected") is False, c
        mt = await metrics(nd)
        assert mt.get("fastflow_cluster_connected", 0) == 0

    aloop(main, timeout=TEST_TIMEOUT)


# -- plain subscriptions -------------------------------------------------------------------------


def test_plain_subscriptions_cross_nodes_once_each(aloop, ffnodes, natspy):
    async def main():
        nodes = await ffnodes(3)
        async with Clients(natspy) as cl, await native(nodes[0], name="pub") as pub, \
                await native(nodes[1], name="sub1") as sub1:
            wide = sub1.subscribe("ev.>")
            star = sub1.subscribe("ev.*.x")            # overlaps "ev.>" on the same node
            await sub1.flush()
            nc2 = await cl.connect(nodes[2].nats_url, name="sub2")
            narrow = await nc2.subscribe("ev.a.*")
            await flush(nc2)
            # node0 knows node1's two patterns and node2's one
            await await_remote_interest(nodes[0], 3)
            sent = [("ev.a.x", b"1"), ("ev.b.x", b"2"), ("ev.a.y", b"3"), ("ev.c", b"4"),
                    ("other.a.x", b"5")]
            for subject, data in sent:
                pub.publish(subject, data)
            await pub.flush()
            assert await exactly(wide, 4) == sent[:4]
            assert await exactly(star, 2) == [("ev.a.x", b"1"), ("ev.b.x", b"2")]
            assert await exactly_nats(natspy, narrow, 2) == [("ev.a.x", b"1"), ("ev.a.y", b"3")]
            # the other way: nats-py on node2 publishes, the native client of node1 gets it
            await await_remote_interest(nodes[2], 2)
            await nc2.publish("ev.z.x", b"6")
            await flush(nc2)
            assert await exactly(wide, 1) == [("ev.z.x", b"6")]
            assert await exactly(star, 1) == [("ev.z.x", b"6")]
            # one copy per event on the backbone: node1 got 5 events though two of its
            # patterns matched 3 of them; node2 got the 2 of "ev.a.*"
            c0, c1, c2 = [await cluster_of(nd) for nd in nodes]
            assert c1["in_msgs"] == 5 and c2["in_msgs"] == 2
            assert c0["out_msgs"] == 4 and c2["out_msgs"] == 1 and c1["out_msgs"] == 0
            assert count(c1["local_interest"]) == 2 and count(c2["local_interest"]) == 1

    aloop(main, timeout=TEST_TIMEOUT)


def test_events_from_the_backbone_are_not_forwarded_back(aloop, ffnodes):
    async def main():
        nodes = await ffnodes(3)
        async with await native(nodes[0], name="c0") as c0, \
                await native(nodes[1], name="c1") as c1, await native(nodes[2], name="c2") as c2:
            subs = [c.subscribe(p) for c, p in ((c0, "echo.>"), (c1, "echo.*"), (c2, "*.*"))]
            for c in (c0, c1, c2):
                await c.flush()
            for nd in nodes:        # every node: the others' two patterns
                await await_remote_interest(nd, 2)
            for k in range(5):
                c0.publish("echo.{}".format(k), str(k).encode())
            await c0.flush()
            want = [("echo.{}".format(k), str(k).encode()) for k in range(5)]
            for sub, quiet in zip(subs, (0.2, 0.01, 0.01)):
                assert await exactly(sub, 5, quiet) == want    # once, on every node
            v0, v1, v2 = [await cluster_of(nd) for nd in nodes]
            assert (v0["out_msgs"], v0["in_msgs"]) == (5, 0)       # no echo from NATS
            assert (v1["in_msgs"], v1["out_msgs"]) == (5, 0)       # not forwarded again
            assert (v2["in_msgs"], v2["out_msgs"]) == (5, 0)

    aloop(main, timeout=TEST_TIMEOUT)


# -- the backbone's traffic ------------------------------------------------------------------------


def test_one_pub_per_event_whatever_the_number_of_interested_nodes(aloop, ffnodes, natspy):
    async def main():
        nodes = await ffnodes(3)
        async with Clients(natspy) as cl, await native(nodes[0], name="pub") as pub, \
                await native(nodes[1], name="n1") as n1:
            a = n1.subscribe("st.>")
            b = n1.subscribe("st.*")
            nc2 = await cl.connect(nodes[2].nats_url)
            c = await nc2.subscribe("st.a")
            d = await nc2.subscribe("st.*.b")
            await n1.flush()
            await flush(nc2)
            await await_remote_interest(nodes[0], 4)
            before = await cluster_of(nodes[0])
            events = 50
            for k in range(events):
                pub.publish("st.a" if k % 2 else "st.x.b", b"x" * 10)
            await pub.flush()
            assert len(await exactly(a, events)) == events
            assert len(await exactly(b, events // 2, 0.01)) == events // 2
            assert len(await exactly_nats(natspy, c, events // 2, 0.01)) == events // 2
            assert len(await exactly_nats(natspy, d, events // 2, 0.01)) == events // 2
            v0, v1, v2 = [await cluster_of(nd) for nd in nodes]
            assert v0["out_msgs"] - before["out_msgs"] == events
            assert v0["out_bytes"] - before["out_bytes"] >= events * 10
            assert v1["in_msgs"] == events and v2["in_msgs"] == events
            assert v1["out_msgs"] == 0 and v2["out_msgs"] == 0
            # events nobody remote wants are not forwarded: 20 of them, then one that
            # node1 wants; once it is there node0 has routed (and counted) the 20
            for _ in range(20):
                pub.publish("nobody.x", b"y")
            pub.publish("st.end", b"end")
            await pub.flush()
            assert await exactly(a, 1) == [("st.end", b"end")]
            assert (await cluster_of(nodes[0]))["out_msgs"] == v0["out_msgs"] + 1
            mt = await metrics(nodes[0])
            assert mt["fastflow_cluster_out_msgs_total"] == v0["out_msgs"] + 1
            assert mt["fastflow_cluster_remote_interest"] == 4
            assert (await metrics(nodes[1]))["fastflow_cluster_in_msgs_total"] == events + 1

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_node_without_remote_interest_forwards_nothing(aloop, ffnodes):
    async def main():
        nodes = await ffnodes(3)
        async with await native(nodes[0], name="local") as c0, \
                await native(nodes[1], name="elsewhere") as c1:
            mine = c0.subscribe("here.>")
            theirs = c1.subscribe("there.>")
            await c0.flush()
            await c1.flush()
            await await_remote_interest(nodes[0], 1)        # there.> on node1
            for k in range(20):
                c0.publish("here.{}".format(k), b"z")
            await c0.flush()
            # delivered here, so routed: node0 would have counted what it forwarded
            assert len(await exactly(mine, 20)) == 20
            for nd in nodes:
                v = await cluster_of(nd)
                assert (v["out_msgs"], v["out_bytes"], v["in_msgs"]) == (0, 0, 0), v
            # and an event node1 wants does go out, alone
            c0.publish("there.end", b"end")
            assert await exactly(theirs, 1) == [("there.end", b"end")]
            v0, v1, v2 = [await cluster_of(nd) for nd in nodes]
            assert (v0["out_msgs"], v1["in_msgs"], v2["in_msgs"]) == (1, 1, 0)

    aloop(main, timeout=TEST_TIMEOUT)


# -- queue groups ----------------------------------------------------------------------------------


def test_queue_groups_deliver_once_cluster_wide_local_members_first(aloop, ffnodes, natspy):
    async def main():
        nodes = await ffnodes(3)
        async with Clients(natspy) as cl, await native(nodes[0], name="pub") as pub, \
                await native(nodes[1], name="w1") as w1:
            m1 = w1.subscribe("jobs.>", queue="w")
            await w1.flush()
            nc2 = await cl.connect(nodes[2].nats_url, name="w2")
            m2 = await nc2.subscribe("jobs.*", queue="w")
            watch = await nc2.subscribe("jobs.>")           # plain: sees every job
            await flush(nc2)
            await await_remote_interest(nodes[0], 3)
            # no member on node0: each job goes to exactly one remote member
            jobs = [str(k).encode() for k in range(40)]
            for j in jobs:
                pub.publish("jobs.run", j)
            await pub.flush()
            got1, got2 = await split(natspy, m1, m2, len(jobs))
            assert sorted([d for _, d in got1 + got2], key=int) == jobs, (got1, got2)
            assert len(await exactly_nats(natspy, watch, len(jobs))) == len(jobs)
            # one plain PUB and one queue PUB per job (two target kinds)
            v0 = await cluster_of(nodes[0])
            assert v0["out_msgs"] == 2 * len(jobs)
            # a member on node0 itself: local members are preferred, nothing goes out
            # to the group (the plain watcher on node2 still gets its copy)
            local = pub.subscribe("jobs.>", queue="w")
            await pub.flush()
            for j in jobs[:10]:
                pub.publish("jobs.again", j)
            await pub.flush()
            assert [d for _, d in await exactly(local, 10)] == jobs[:10]
            assert await exactly(m1, 0, 0.01) == []
            assert await exactly_nats(natspy, m2, 0, 0.01) == []
            assert len(await exactly_nats(natspy, watch, 10, 0.01)) == 10
            assert (await cluster_of(nodes[0]))["out_msgs"] == v0["out_msgs"] + 10

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_queue_group_with_members_on_two_remote_nodes_and_one_publisher_each(
        aloop, ffnodes, natspy):
    """Publishers on every node, members on nodes 1 and 2: each event is
    delivered once; a node with a member takes its own node's events."""
    async def main():
        nodes = await ffnodes(3)
        async with Clients(natspy) as cl, await native(nodes[1], name="m1") as c1:
            ncs = [await cl.connect(nd.nats_url, name="p{}".format(i))
                   for i, nd in enumerate(nodes)]
            m1 = c1.subscribe("tasks.>", queue="q")
            await c1.flush()
            m2 = await ncs[2].subscribe("tasks.*", queue="q")  # (a pattern of its own:
            await flush(ncs[2])                                 # two interests for node0)
            await await_remote_interest(nodes[0], 2)
            for i, nc in enumerate(ncs):
                for k in range(10):
                    await nc.publish("tasks.{}".format(i), str(10 * i + k).encode())
                await flush(nc)
            got1, got2 = await split(natspy, m1, m2, 30)
            assert sorted(int(d) for _, d in got1 + got2) == list(range(30)), (got1, got2)
            # node1's events went to node1's member, node2's to node2's
            assert [d for s, d in got1 if s == "tasks.1"] == [str(k).encode()
                                                              for k in range(10, 20)]
            assert [d for s, d in got2 if s == "tasks.2"] == [str(k).encode()
                                                              for k in range(20, 30)]
            assert all(s != "tasks.2" for s, _ in got1) and all(s != "tasks.1" for s, _ in got2)

    aloop(main, timeout=TEST_TIMEOUT)


# -- request / reply -------------------------------------------------------------------------------


def test_request_reply_across_nodes_and_no_responders(aloop, ffnodes, natspy):
    async def main():
        nodes = await ffnodes(3)
        async with Clients(natspy) as cl, await native(nodes[2], name="svc") as svc, \
                await native(nodes[1], name="asker") as asker:

            def price(ev, reply):
                svc.respond(reply, b"price of " + ev.data)

            service = svc.subscribe("svc.price", price, with_reply=True)
            await svc.flush()
            nc0 = await cl.connect(nodes[0].nats_url, name="nats-asker")

            async def echo(msg):
                await nc0.publish(msg.reply, b"echo " + msg.data)

            await nc0.subscribe("svc.echo", cb=echo)
            await flush(nc0)
            await await_remote_interest(nodes[0], 1)        # svc.price on node2
            await await_remote_interest(nodes[1], 2)        # and svc.echo on node0
            # nats-py on node0 asks the native service on node2
            answer = await nc0.request("svc.price", b"AAPL", timeout=2)
            assert answer.data == b"price of AAPL"
            # the native client on node1 asks both
            assert (await asker.request("svc.price", b"MSFT", timeout=2)).data == \
                b"price of MSFT"
            assert (await asker.request("svc.echo", b"hi", timeout=2)).data == b"echo hi"
            # many in a row, from a fresh inbox each time on the native side
            for k in range(10):
                q = str(k).encode()
                assert (await asker.request("svc.price", q, timeout=2)).data == b"price of " + q
            # nobody anywhere: "no responders" at once, not a timeout
            t = time.monotonic()
            with pytest.raises(natspy.errors.NoRespondersError):
                await nc0.request("svc.nobody", b"?", timeout=3)
            with pytest.raises(fc.NoRespondersError):
                await asker.request("svc.nobody", b"?", timeout=3)
            assert time.monotonic() - t < 1.0
            # the service gone: its interest leaves the cluster, no responders again
            had = count((await cluster_of(nodes[0]))["remote_interest"])
            await service.unsubscribe()
            await svc.flush()
            await await_remote_interest(nodes[0], had - 1)
            with pytest.raises(natspy.errors.NoRespondersError):
                await nc0.request("svc.price", b"AAPL", timeout=3)

    aloop(main, timeout=TEST_TIMEOUT)


# -- failures ---------------------------------------------------------------------------------


def test_a_native_client_fails_over_to_another_node_and_resubscribes(aloop, ffnodes):
    async def main():
        nodes = await ffnodes(3)
        reconnected = asyncio.Event()
        async with await fc.connect([nodes[0].url, nodes[1].url], name="roamer", timeout=5,
                                    reconnect_wait=0.05, reconnect_wait_max=0.2,
                                    reconnected_callback=reconnected.set) as roamer, \
                await native(nodes[2], name="pub") as pub:
            sub = roamer.subscribe("fo.>")
            await roamer.flush()
            assert str(nodes[0].port) in roamer.server
            await await_remote_interest(nodes[2], 1)
            pub.publish("fo.before", b"1")
            await pub.flush()
            assert await exactly(sub, 1) == [("fo.before", b"1")]
            nodes[0].kill()
            await asyncio.wait_for(reconnected.wait(), 10)
            assert str(nodes[1].port) in roamer.server
            assert roamer.stats["reconnects"] == 1
            # node1 now has the interest: probes until the first one arrives (node2
            # may still list node0's old interest, so a count cannot tell)
            deadline = time.monotonic() + 5
            probes = 0
            while True:
                pub.publish("fo.probe", str(probes).encode())
                probes += 1
                await pub.flush()
                try:
                    ev = await sub.next(INTERVAL / 2)
                    break
                except asyncio.TimeoutError:
                    assert time.monotonic() < deadline, "no event on node1 within 5 s"
            assert ev.routing_subject == "fo.probe"
            while True:         # the probes still in flight
                try:
                    await sub.next(0.2)
                except asyncio.TimeoutError:
                    break
            pub.publish("fo.after", b"2")
            await pub.flush()
            assert await exactly(sub, 1) == [("fo.after", b"2")]
            v1 = await cluster_of(nodes[1])
            assert count(v1["local_interest"]) == 1

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_killed_nodes_interest_is_forgotten_after_about_three_intervals(aloop, ffnodes):
    async def main():
        nodes = await ffnodes(3)
        async with await native(nodes[1], name="doomed") as doomed, \
                await native(nodes[0], name="pub") as pub:
            doomed.subscribe("gone.>")
            await doomed.flush()
            await await_remote_interest(nodes[0], 1)
            await await_remote_interest(nodes[2], 1)
            pub.publish("gone.before", b"1")
            await pub.flush()
            await await_cluster(nodes[0], lambda c: c["out_msgs"] == 1, "forwarding one event")
            nodes[1].kill()             # SIGKILL: no goodbye
            t = time.monotonic()
            for nd in (nodes[0], nodes[2]):
                await await_cluster(nd, lambda c: peers(c) == 1
                                    and count(c["remote_interest"]) == 0,
                                    "forgetting node1 and its interest", timeout=3)
            took = time.monotonic() - t
            assert took <= 3 * INTERVAL + 1.0, took
            # and nothing is forwarded for it any more (a local subscriber tells when
            # node0 has routed the event)
            here = pub.subscribe("gone.>")
            await pub.flush()
            pub.publish("gone.after", b"2")
            assert await exactly(here, 1, 0.01) == [("gone.after", b"2")]
            v0 = await cluster_of(nodes[0])
            assert v0["out_msgs"] == 1 and v0["connected"]
            assert (await metrics(nodes[0]))["fastflow_cluster_nodes"] == 1

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_node_stopped_cleanly_takes_its_interest_away_at_once(aloop, ffnodes):
    async def main():
        nodes = await ffnodes(3)
        async with await native(nodes[1], name="leaving") as leaving:
            leaving.subscribe("bye.>")
            await leaving.flush()
            await await_remote_interest(nodes[0], 1)
            nodes[1].send_signal(signal.SIGTERM)        # it says goodbye as it stops
            t = time.monotonic()
            for nd in (nodes[0], nodes[2]):
                await await_remote_interest(nd, 0, timeout=3)
            took = time.monotonic() - t
            # sooner than the three silent intervals of a node that died
            assert took < 2 * INTERVAL, took
            assert await nodes[1].await_exit() == 0
            for nd in (nodes[0], nodes[2]):     # (the node itself: once silent)
                await await_cluster(nd, lambda c: peers(c) == 1, "forgetting node1")

    aloop(main, timeout=TEST_TIMEOUT)
