"""The NATS cluster of the cluster tests (tests/natscluster.py, the
``nats_cluster`` and ``nats_cluster_factory`` fixtures), proved with
nats-py: core messages cross servers, a JetStream stream with three
replicas acknowledges publishes, keeps acknowledging with one server
killed, and the restarted server catches up from its own store.

These test the harness, not fastflow: they run under one event loop.
Missing peers (nats-server, nats-py) skip loudly, or fail with
FASTFLOW_REQUIRE_PEERS=1."""

import asyncio
import time

import pytest

from test_nats import Clients, flush, take

# the harness, not fastflow: one event loop is enough
one_loop = pytest.mark.parametrize("aloop", ["uvloop"], indirect=True)
TEST_TIMEOUT = 30.0


def stream_config(name, subjects, replicas=3):
    from nats.js.api import StorageType, StreamConfig

    return StreamConfig(name=name, subjects=subjects, num_replicas=replicas,
                        storage=StorageType.FILE)


async def await_stream_messages(cluster, i, stream, count, timeout=10.0):
    """Returns server ``i``'s replica of ``stream`` once it holds ``count``
    messages (its own store, read from its /jsz)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        st = await loop.run_in_executor(None, cluster.stream_state, i, stream)
        if st is not None and st["state"]["messages"] == count:
            return st
        if time.monotonic() > deadline:
            raise AssertionError("{}'s replica of {} is {!r} after {} s, not {} messages".format(
                cluster.servers[i].name, stream, st and st["state"], timeout, count))
        await asyncio.sleep(0.02)


def test_the_cluster_is_formed(nats_cluster):
    c = nats_cluster
    assert c.n == 3 and len(c.urls) == 3 and c.urls[1] == c.url(1)
    assert all(u.startswith("nats://127.0.0.1:") for u in c.urls)
    assert len({s.port for s in c.servers} | {s.cluster_port for s in c.servers}
               | {s.monitor_port for s in c.servers}) == 9
    assert c.not_ready() is None and c.running == [0, 1, 2]
    for s in c.servers:
        assert s.monitor("/varz")["cluster"]["name"] == "ffc"
        assert s.monitor("/routez")["num_routes"] == 2
        meta = s.monitor("/jsz")["meta_cluster"]
        assert meta["cluster_size"] == 3 and meta["leader"] in ("n0", "n1", "n2")
    assert c.meta_leader() in (0, 1, 2)


@one_loop
def test_core_messages_cross_servers(aloop, nats_cluster, natspy):
    c = nats_cluster

    async def main():
        async with Clients(natspy) as cl:
            nc = [await cl.connect(c.url(i), name="h{}".format(i)) for i in range(3)]
            wide = await nc[1].subscribe("hx.>")
            narrow = await nc[2].subscribe("hx.a.*")
            workers = [await nc[i].subscribe("hx.q", queue="w") for i in (1, 2)]

            async def answer(msg):
                await nc[2].publish(msg.reply, b"from n2: " + msg.data)

            await nc[2].subscribe("hs.svc", cb=answer)
            for i in (1, 2):
                await flush(nc[i])
            for subject, queue, j in (("hx.>", None, 1), ("hx.a.*", None, 2), ("hx.q", "w", 1),
                                      ("hx.q", "w", 2), ("hs.svc", None, 2)):
                await c.await_interest(0, j, subject, queue)
            await nc[0].publish("hx.a.1", b"a")
            for k in range(20):
                await nc[0].publish("hx.q", str(k).encode())
            answer_msg = await nc[0].request("hs.svc", b"ping", timeout=2)
            assert answer_msg.data == b"from n2: ping"
            t = time.monotonic()
            with pytest.raises(natspy.errors.NoRespondersError):
                await nc[0].request("hs.nobody", b"?", timeout=2)
            assert time.monotonic() - t < 1.0
            await flush(nc[0])
            got_wide = [(m.subject, m.data) for m in await take(nc[1], wide, quiet=0.1)]
            assert got_wide == [("hx.a.1", b"a")] + [("hx.q", str(k).encode())
                                                     for k in range(20)]
            assert [(m.subject, m.data) for m in await take(nc[2], narrow)] == [
                ("hx.a.1", b"a")]
            shares = [[m.data for m in await take(nc[i], w)] for i, w in zip((1, 2), workers)]
            assert sorted(shares[0] + shares[1], key=int) == [str(k).encode()
                                                              for k in range(20)]

    aloop(main, timeout=TEST_TIMEOUT)


@one_loop
def test_a_three_replica_stream_acks_and_every_server_stores_it(aloop, nats_cluster, natspy):
    c = nats_cluster

    async def main():
        async with Clients(natspy) as cl:
            nc = [await cl.connect(c.url(i)) for i in range(3)]
            js = [n.jetstream(timeout=5) for n in nc]
            await js[0].add_stream(stream_config("HARN_R3", ["hr3.>"]))
            acks = [await js[k % 3].publish("hr3.{}".format(k), str(k).encode())
                    for k in range(9)]
            assert [(a.stream, a.seq) for a in acks] == [("HARN_R3", k + 1) for k in range(9)]
            si = await js[1].stream_info("HARN_R3")
            assert si.config.num_replicas == 3 and si.state.messages == 9
            assert sorted([si.cluster.leader] + [r.name for r in si.cluster.replicas]) == [
                "n0", "n1", "n2"]
            for i in range(3):
                st = await await_stream_messages(c, i, "HARN_R3", 9)
                assert st["state"]["last_seq"] == 9
            await js[0].delete_stream("HARN_R3")

    aloop(main, timeout=TEST_TIMEOUT)


@one_loop
def test_one_server_killed_jetstream_acks_and_it_catches_up(aloop, nats_cluster_factory,
                                                            natspy):
    c = nats_cluster_factory()

    async def main():
        async with Clients(natspy) as cl:
            first = await cl.connect(c.url(0))
            js = first.jetstream(timeout=5)
            await js.add_stream(stream_config("HARN_KILL", ["hk.>"]))
            for k in range(5):
                assert (await js.publish("hk.x", str(k).encode())).seq == k + 1
            si = await js.stream_info("HARN_KILL")
            # a server that leads neither JetStream nor the stream: acks go on at once
            # (killing a leader costs an election, seconds: the slow test below)
            leaders = {c.meta_leader(), c.index(si.cluster.leader)}
            victim = [i for i in range(3) if i not in leaders][0]
            survivor = [i for i in range(3) if i != victim][0]
            nc = await cl.connect(c.url(survivor))
            js = nc.jetstream(timeout=5)
            c.kill(victim)
            assert c.running == [i for i in range(3) if i != victim]
            await c.await_ready(servers=c.running)
            for k in range(5, 10):
                assert (await js.publish("hk.x", str(k).encode())).seq == k + 1
            si = await js.stream_info("HARN_KILL")
            down = [r for r in si.cluster.replicas if r.name == "n{}".format(victim)]
            assert si.state.messages == 10 and len(down) == 1
            await c.astart(victim)
            await c.await_ready()
            st = await await_stream_messages(c, victim, "HARN_KILL", 10)
            assert st["state"]["first_seq"] == 1 and st["state"]["last_seq"] == 10
            # and it takes new messages with the others
            assert (await js.publish("hk.x", b"10")).seq == 11
            await await_stream_messages(c, victim, "HARN_KILL", 11)

    aloop(main, timeout=TEST_TIMEOUT)


@one_loop
@pytest.mark.slow
def test_jetstream_acks_again_once_the_stream_leader_is_killed(aloop, nats_cluster_factory,
                                                               natspy):
    c = nats_cluster_factory()

    async def main():
        async with Clients(natspy) as cl:
            first = await cl.connect(c.url(0))
            js = first.jetstream(timeout=5)
            await js.add_stream(stream_config("HARN_LEAD", ["hl.>"]))
            assert (await js.publish("hl.x", b"0")).seq == 1
            leader = c.index((await js.stream_info("HARN_LEAD")).cluster.leader)
            survivor = [i for i in range(3) if i != leader][0]
            nc = await cl.connect(c.url(survivor))
            js = nc.jetstream(timeout=1)
            c.kill(leader)
            t = time.monotonic()
            while True:         # the survivors elect a new stream leader (raft: seconds)
                try:
                    ack = await js.publish("hl.x", b"1")
                    break
                except natspy.errors.Error:     # (timeouts, no responders, API errors)
                    assert time.monotonic() - t < 20, "no ack 20 s after the leader died"
                    await asyncio.sleep(0.1)
            assert ack.seq == 2
            si = await js.stream_info("HARN_LEAD")
            assert si.cluster.leader != "n{}".format(leader)
            await c.astart(leader)
            await c.await_ready()
            await await_stream_messages(c, leader, "HARN_LEAD", 2)

    aloop(main, timeout=TEST_TIMEOUT + 20)


def test_wait_ready_says_which_server_is_missing(nats_cluster_factory):
    c = nats_cluster_factory(n=2, jetstream=False)
    c.stop(1)
    with pytest.raises(TimeoutError, match="n1 is not running"):
        c.wait_ready(0.1)
    c.wait_ready(servers=[0])
    c.start(1)
    c.wait_ready(5)
    with pytest.raises(RuntimeError, match="n1 is running"):
        c.start(1)
