"""Replicated streams end to end (issue 19, docs/cluster.md): ``fastflow
serve`` nodes with ``[cluster]`` and a ``[[streams]]`` entry with
``replicas = 3``, over a real cluster of three nats-servers with JetStream
(natscluster.py).  A stream with replicas lives in JetStream
(``FF_<account>_<name>``); each node's log of it is a read cache whose seqs
are JetStream's, fed by the node's mirror; a native PUB with ACK is
acknowledged with JetStream's PubAck.

What is checked: acknowledged events are in every node's cache at their
acknowledged seq; they survive the kill of one nats-server of three (the
stream's leader), and publishing goes on after it; a fastflow node
stopped while others publish catches its cache up when it starts again;
replay and durable consumers read the cache through the usual API; the
JetStream stream has the config of the fastflow stream; a foreign
message in the JetStream stream (not an event record) is skipped.

Every wait is bounded and polled; the nodes run under uvloop (the
mirror and acks are plain asyncio).  Missing peers skip loudly, or fail
with FASTFLOW_REQUIRE_PEERS=1."""

import asyncio
import json
import time

import pytest

import fastflow.client as fc
from fastflow import Event
from fastflow.errors import ServerError

from test_cluster import cluster_of, metrics

INTERVAL = 0.2                  # [cluster] interest_interval
HEARTBEAT = 0.3                 # [cluster] heartbeat: a silent mirror is remade after 3
TEST_TIMEOUT = 120.0
JS_NAME = "FF__G_orders"

one_loop = pytest.mark.parametrize("aloop", ["uvloop"], indirect=True)
pytestmark = one_loop


def node_config(path, urls, data_dir, replicas=3, extra=""):
    path.write_text("""data_dir = {data_dir!r}
{extra}
[cluster]
urls = {urls}
interest_interval = {interval}
heartbeat = {heartbeat}
ack_timeout = 2.0
api_timeout = 1.0

[[streams]]
name = "orders"
subjects = ["orders.>"]
replicas = {replicas}
storage = "file"
max_events = 100000
""".format(data_dir=str(data_dir), urls=json.dumps(urls), interval=INTERVAL,
           heartbeat=HEARTBEAT, replicas=replicas, extra=extra))
    return path


@pytest.fixture
def ffjsnodes(ffproc, tmp_path):
    """``nodes = ffjsnodes(cluster, n)``: n ``fastflow serve`` processes
    (not started) with the replicated stream ``orders`` (replicas 3) on
    ``cluster``, each with its data_dir."""

    def make(cluster, n=2, *args):
        nodes = []
        for i in range(n):
            conf = node_config(tmp_path / "node{}.toml".format(i), cluster.urls,
                               tmp_path / "data{}".format(i))
            nodes.append(ffproc("--name", "node{}".format(i), "--config", str(conf), *args,
                                monitor=True))
        return nodes

    return make


async def until(what, fn, timeout=20.0, nodes=()):
    """``await fn()`` until it is truthy (polled, bounded); its value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = await fn()
        except (OSError, ServerError, asyncio.TimeoutError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            logs = "".join("\n--- node log:\n" + nd.log[-3000:] for nd in nodes)
            raise AssertionError("not {} within {} s (last: {!r}){}".format(
                what, timeout, last, logs))
        await asyncio.sleep(0.05)


async def mirror_of(node):
    c = await cluster_of(node)
    return ((c.get("jetstream") or {}).get("streams") or {}).get("$G/orders")


async def mirroring(node):
    m = await mirror_of(node)
    return m is not None and m["state"] == "mirroring"


async def last_seq(client):
    return (await client.stream_info("orders"))["last_seq"]


async def publish_acked(client, i, deadline):
    """Publish event ``i`` with ACK until JetStream acknowledges it (a
    failover answers 503 for a while): its PubAck."""
    while True:
        try:
            return await client.publish_ack("orders.eu", b"%d" % i, id="e%d" % i, timeout=5)
        except (ServerError, asyncio.TimeoutError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError("event {} not acknowledged: {}".format(i, exc)) from None
            await asyncio.sleep(0.1)


async def cache(client):
    """Every event of the node's cache of ``orders``: {seq: (id, data)}."""
    return {ev.seq: (ev.id, ev.data) async for ev in client.replay("orders")}


def stream_leader(cluster):
    for i in cluster.running:
        st = cluster.stream_state(i, JS_NAME)
        leader = ((st or {}).get("cluster") or {}).get("leader")
        if leader:
            return cluster.index(leader)
    return None


def test_acked_events_survive_a_server_kill_and_a_node_restart(aloop, nats_cluster_factory,
                                                                 ffjsnodes):
    cluster = nats_cluster_factory(3)
    nodes = ffjsnodes(cluster, 2)

    async def main():
        await asyncio.gather(*(nd.astart() for nd in nodes))
        for nd in nodes:
            await until("mirroring", lambda nd=nd: mirroring(nd), nodes=nodes)
        c0 = await fc.connect(nodes[0].url, timeout=5)
        c1 = await fc.connect(nodes[1].url, timeout=5)
        acked = {}                      # seq -> (id, data)
        deadline = time.monotonic() + 30
        for i in range(50):
            a = await publish_acked(c0, i, deadline)
            assert (a.stream, a.duplicate) == ("orders", False)
            acked[a.seq] = ("e%d" % i, b"%d" % i)
        assert sorted(acked) == list(range(1, 51))      # JetStream's seqs, in order
        # the other node's cache has them at the same seqs (its mirror)
        await until("node1 caught up", lambda: _at_least(c1, 50), nodes=nodes)
        assert await cache(c1) == acked
        # no publish stored them in node0's log: its mirror did, the same
        assert await cache(c0) == acked
        # the stream's leader goes; acknowledged events stay, publishing goes on
        leader = stream_leader(cluster)
        assert leader is not None
        cluster.kill(leader)
        deadline = time.monotonic() + 40
        for i in range(50, 80):
            a = await publish_acked(c0, i, deadline)
            acked[a.seq] = ("e%d" % i, b"%d" % i)
        top = max(acked)
        for c in (c0, c1):
            await until("the caches past seq {}".format(top), lambda c=c: _at_least(c, top),
                        timeout=30, nodes=nodes)
            got = await cache(c)
            for seq, want in acked.items():
                assert got.get(seq) == want, (seq, got.get(seq), want)
        # a node stopped while the other publishes catches up when it starts
        await c1.close()
        await nodes[1].astop()
        for i in range(80, 100):
            a = await publish_acked(c0, i, deadline + 20)
            acked[a.seq] = ("e%d" % i, b"%d" % i)
        top = max(acked)
        cluster.start(leader)
        await nodes[1].astart()
        c1 = await fc.connect(nodes[1].url, timeout=5)
        await until("node1 caught up after its restart", lambda: _at_least(c1, top),
                    timeout=30, nodes=nodes)
        got = await cache(c1)
        for seq, want in acked.items():
            assert got.get(seq) == want, (seq, got.get(seq), want)
        # a durable consumer reads the cache as any stream's
        await c1.add_consumer("orders", "k", start="first")
        seen = []
        while len(seen) < len(got):
            ds = await c1.fetch("orders", "k", 64, wait=1.0)
            assert ds, "the consumer stopped at {} of {}".format(len(seen), len(got))
            for d in ds:
                seen.append(d.seq)
                await d.ack()
        assert seen == sorted(got)
        info = await c1.stream_info("orders")
        assert info["replicas"] == 3 and info["mirror"]["jetstream_stream"] == JS_NAME
        assert info["mirror"]["state"] == "mirroring"
        mt = await metrics(nodes[0])
        assert mt["fastflow_cluster_js_acked_total"] >= 100
        assert mt["fastflow_cluster_js_mirrored_total"] >= 100
        await c0.close()
        await c1.close()

    aloop(main, timeout=TEST_TIMEOUT)


async def _at_least(client, seq):
    return await last_seq(client) >= seq


def test_jetstream_holds_the_stream_as_configured(aloop, nats_cluster, ffjsnodes, natspy):
    nodes = ffjsnodes(nats_cluster, 1)

    async def main():
        nd = nodes[0]
        await nd.astart()
        await until("mirroring", lambda: mirroring(nd), nodes=nodes)
        nc = await natspy.connect(nats_cluster.urls[0])
        try:
            info = json.loads((await nc.request("$JS.API.STREAM.INFO." + JS_NAME, b"",
                                                timeout=2)).data)
            cfg = info["config"]
            assert (cfg["subjects"], cfg["num_replicas"], cfg["storage"], cfg["max_msgs"],
                    cfg["discard"]) == (["_FFA.$G.orders.>"], 3, "file", 100000, "old")
            c = await fc.connect(nd.url, timeout=5)
            a = await c.publish_ack("orders.x", b"one", id="one")
            # what JetStream holds is the event record, byte for byte
            got = json.loads((await nc.request("$JS.API.STREAM.MSG.GET." + JS_NAME,
                                               json.dumps({"seq": a.seq}).encode(),
                                               timeout=2)).data)
            import base64
            ev = Event.decode("orders.x", base64.b64decode(got["message"]["data"]))
            assert (ev.id, ev.data) == ("one", b"one")
            assert got["message"]["subject"] == "_FFA.$G.orders.x"
            # a foreign message (not an event record) in the JetStream stream
            # is skipped by the mirror; the next event comes after it
            ack = json.loads((await nc.request("_FFA.$G.orders.raw", b"plain bytes",
                                               timeout=2)).data)
            b = await c.publish_ack("orders.x", b"two", id="two")
            assert b.seq == ack["seq"] + 1 == a.seq + 2
            await until("the cache at seq {}".format(b.seq), lambda: _at_least(c, b.seq))
            got = await cache(c)
            assert got[a.seq] == ("one", b"one") and got[b.seq] == ("two", b"two")
            assert ack["seq"] not in got
            m = await mirror_of(nd)
            assert m["invalid"] >= 1
            # a PUB_BATCH with ACK waits for JetStream's answers: the last seq is
            # JetStream's, and the events are in the cache at the seqs before it
            last, n = await c.publish_batch_ack("orders.batch", [b"b%d" % i for i in range(20)])
            assert (last, n) == (b.seq + 20, 20)
            await until("the cache at {}".format(last), lambda: _at_least(c, last))
            got = [(e.seq, e.data) async for e in c.replay("orders", seq=b.seq + 1)]
            assert got == [(b.seq + 1 + i, b"b%d" % i) for i in range(20)]
            # a reply subject of its own and ACK on a replicated subject: refused
            with pytest.raises(ServerError, match="takes no reply subject"):
                await _pub_ack_with_reply(c)
            await c.close()
        finally:
            await nc.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_embedded_accounts_and_a_stream_full_under_discard_new(aloop, nats_cluster):
    # in one process: a Link with two accounts' flows, the service over it;
    # an account's subjects and ack replies carry its prefix on the backbone
    from fastflow import Flow, Retention
    from fastflow.cluster import Link
    from fastflow.cluster.jetstream import ReplicatedStreams, door_code
    from fastflow.errors import JetStreamError

    async def main():
        link = Link(nats_cluster.urls, node="emb", interest_interval=INTERVAL)
        g, acme = Flow(), Flow()
        link.attach("$G", g)
        link.attach("acme", acme)
        svc = ReplicatedStreams(link, link.node, heartbeat=HEARTBEAT, ack_timeout=2.0)
        sg = g.add_stream("tick", "tick.>", replicas=3)
        sa = acme.add_stream("tick", "tick.>", Retention(max_events=3, discard="new"),
                             replicas=3)
        svc.attach("$G", g)
        svc.attach("acme", acme)
        svc.start()
        await link.start(wait=5)
        try:
            for st in (sg, sa):
                await until("mirroring", lambda st=st: _true(st.mirror.state == "mirroring"))

            async def publish(flow, st, data):
                reply, fut = svc.acks.expect(st.mirror.js_name)
                flow.publish_record("tick.a", Event("tick.a", data).encode(), reply)
                return await fut
            a1 = await publish(acme, sa, b"a1")
            g1 = await publish(g, sg, b"g1")
            assert (a1.stream, a1.seq, g1.stream, g1.seq) == ("FF_acme_tick", 1, "FF__G_tick", 1)
            for _ in range(2):
                await publish(acme, sa, b"more")
            with pytest.raises(JetStreamError, match="maximum messages exceeded") as ei:
                await publish(acme, sa, b"full")
            assert door_code(ei.value) == 507
            await until("caches", lambda: _true(sa.log.last_seq == 3 and sg.log.last_seq == 1))
            assert [e.data for e in sa.replay()] == [b"a1", b"more", b"more"]
            assert [(e.seq, e.data) for e in sg.replay()] == [(1, b"g1")]
            assert sa.get(1).routing_subject == "tick.a"
            assert svc.acks.info()["errors"] == 1
        finally:
            await svc.close()
            await link.close()

    aloop(main, timeout=TEST_TIMEOUT)


async def _true(v):
    return v



async def _pub_ack_with_reply(c):
    """A PUB with ACK and a reply subject (the client's frame, by hand)."""
    from fastflow.protocol import Flag

    rid = c._new_id()
    fut = c._pending[rid] = c._loop.create_future()
    try:
        c._publish_record("orders.x", Event("orders.x", b"").encode(), "my.reply",
                          int(Flag.ACK), rid)
        return await asyncio.wait_for(fut, 5)
    finally:
        c._pending.pop(rid, None)
