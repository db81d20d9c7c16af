"""Adversarial tests of the cluster link (docs/cluster.md, issue 19): real
nats-server, in-process fastflow nodes on 127.0.0.1, nats-py clients and a
raw nats-py connection playing a buggy or hostile node on the backbone.

Each test is one finding; each is bounded (a few seconds)."""

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import time

import pytest

from tests.peers import nats_server_binary

nats = pytest.importorskip("nats")

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server")

INTERVAL = 0.2                  # the nodes' interest_interval


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class _Natsd:
    """One nats-server on 127.0.0.1 (killed at exit)."""

    def __init__(self, tmp_path, extra=""):
        self.port = _free_port()
        self.conf = str(tmp_path / "ns-{}.conf".format(self.port))
        with open(self.conf, "w") as f:
            f.write("listen: 127.0.0.1:{}\n{}\n".format(self.port, extra))
        self.log = open(str(tmp_path / "ns-{}.log".format(self.port)), "a")
        self.proc = None
        self.url = "nats://127.0.0.1:{}".format(self.port)

    def start(self):
        self.proc = subprocess.Popen([nats_server_binary(), "-c", self.conf], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    raise RuntimeError("nats-server did not start") from None
                time.sleep(0.02)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGCONT)
            except OSError:
                pass
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def natsd(tmp_path):
    made = []

    def make(extra=""):
        ns = _Natsd(tmp_path, extra).start()
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.kill()
    for ns in made:
        ns.log.close()


@contextlib.asynccontextmanager
async def _node(url, **settings):
    """An in-process fastflow node with the NATS door, on the backbone ``url``."""
    from fastflow.server import Server, ServerConfig

    settings.setdefault("port", 0)
    settings.setdefault("nats_port", _free_port())
    settings.setdefault("monitor_port", 0)
    settings.setdefault("drain_timeout", 1.0)
    settings.setdefault("cluster_interest_interval", INTERVAL)
    srv = Server(ServerConfig(cluster_urls=url, **settings))
    await srv.start()
    srv.nats_url = "nats://127.0.0.1:{}".format(srv.nats_port)
    try:
        yield srv
    finally:
        await asyncio.wait_for(srv.stop(), 10)


async def _until(pred, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.01)
    return pred()


def _run(coro, timeout=20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _gossip(raw, node, body):
    body = dict(body, node=node)
    return raw.publish("_FFI." + node, json.dumps(body).encode())


# -- 1. the link asks for no_echo in a field nats-server does not know ----------------------


def test_a_local_publish_reaches_a_local_subscriber_once(natsd):
    """A subscriber on node A and one on node B; a publish on A.  The
    subscriber on A must get it once, but the link's CONNECT says
    ``"no_echo": true`` (the protocol's field is ``"echo": false``), so
    nats-server sends A's own forwarded PUB back to A, which delivers it
    to its local subscriber a second time."""
    ns = natsd()

    async def main():
        async with _node(ns.url) as a, _node(ns.url) as b:
            ca = await nats.connect(a.nats_url)
            cb = await nats.connect(b.nats_url)
            got_a, got_b = [], []

            async def on_a(m):
                got_a.append(m.data)

            async def on_b(m):
                got_b.append(m.data)

            await ca.subscribe("x", cb=on_a)
            await cb.subscribe("x", cb=on_b)
            await ca.flush()
            await cb.flush()
            assert await _until(lambda: a.cluster.stats()["remote_interest"] == 1)
            await ca.publish("x", b"1")
            await ca.flush()
            await _until(lambda: len(got_a) >= 2, 0.7)
            await ca.close()
            await cb.close()
            assert got_b == [b"1"]
            assert got_a == [b"1"], "the publisher's node delivered its own event twice"

    _run(main())


# -- 2. an import republishes an event from the backbone, which crosses again ---------------

USERS = [{"user": "acme", "password": "pa", "account": "acme"},
         {"user": "globex", "password": "pg", "account": "globex"}]
ACCOUNTS = {"acme": {"exports": [{"stream": "orders.>"}]},
            "globex": {"imports": [{"stream": "orders.>", "account": "acme",
                                    "prefix": "partner.acme"}]}}


def test_a_stream_import_does_not_cross_the_backbone_twice(natsd):
    """The same accounts on two nodes (acme exports orders.>, globex
    imports it).  A publish on A in acme reaches globex on A (the import)
    and is forwarded as globex to B, once; it must not also cross as acme
    and be imported again on B."""
    ns = natsd()

    async def main():
        async with _node(ns.url, users=USERS, accounts=ACCOUNTS) as a, \
                _node(ns.url, users=USERS, accounts=ACCOUNTS) as b:
            pa = await nats.connect(a.nats_url, user="acme", password="pa")
            ga = await nats.connect(a.nats_url, user="globex", password="pg")
            gb = await nats.connect(b.nats_url, user="globex", password="pg")
            spy = await nats.connect(ns.url)
            got_a, got_b, backbone = [], [], []

            async def on_a(m):
                got_a.append(m.data)

            async def on_b(m):
                got_b.append(m.data)

            async def on_spy(m):
                backbone.append(m.subject)

            await ga.subscribe("partner.acme.orders.>", cb=on_a)
            await gb.subscribe("partner.acme.orders.>", cb=on_b)
            await spy.subscribe("_FFA.globex.>", cb=on_spy)
            for c in (ga, gb, spy):
                await c.flush()
            # (globex's subscription on the other node; an import is no
            # interest: each node imports what is published on it)
            assert await _until(lambda: a.cluster.stats()["remote_interest"] == 1
                                and b.cluster.stats()["remote_interest"] == 1)
            await pa.publish("orders.1", b"o1")
            await pa.flush()
            await asyncio.sleep(0.6)
            for c in (pa, ga, gb, spy):
                await c.close()
            assert backbone == ["_FFA.globex.partner.acme.orders.1"], \
                "the imported event crossed the backbone {} times".format(len(backbone))
            assert (got_a, got_b) == ([b"o1"], [b"o1"])

    _run(main())


# -- 3. a record over the backbone's max_payload kills the link -----------------------------


def test_an_event_at_max_payload_does_not_kill_the_link(natsd):
    """fastflow and nats-server both default to max_payload = 1 MiB, but
    the link forwards the event's *record* (data + header + id + source):
    a client's 1 MiB publish becomes a PUB over nats-server's limit, which
    answers -ERR 'Maximum Payload Violation' and closes the connection.
    Everything else in flight is lost and the node is off the backbone
    until it reconnects; any client can do it at will."""
    ns = natsd()

    async def main():
        async with _node(ns.url) as a, _node(ns.url) as b:
            ca = await nats.connect(a.nats_url, max_reconnect_attempts=0)
            cb = await nats.connect(b.nats_url)
            got = []

            async def on_b(m):
                got.append(len(m.data))

            await cb.subscribe("x.>", cb=on_b)
            await cb.flush()
            assert await _until(lambda: a.cluster.stats()["remote_interest"] == 1)
            await ca.publish("x.big", b"z" * ca.max_payload)    # a legal publish
            await ca.publish("x.small", b"s")
            await ca.flush()
            await _until(lambda: 1 in got, 1.0)
            st = a.cluster.stats()
            await ca.close()
            await cb.close()
            assert st["reconnects"] == 0 and st["last_error"] is None, st
            assert 1 in got, "the small event after the big one was lost"

    _run(main())


# -- 4. a SUB line over nats-server's max_control_line: the link flaps forever --------------


def test_a_long_queue_group_name_does_not_make_the_link_flap(natsd):
    """A client subscribes with a valid 1024-byte queue group.  The link's
    backbone SUB is ``_FFQ.<hex(queue)>._FFA.$G.<pattern> <hex(queue)> sid``,
    over 4096 bytes (nats-server's max_control_line): the server closes the
    connection, the link reconnects, subscribes again, is closed again -
    the node is off the backbone for as long as that client stays."""
    ns = natsd()

    async def main():
        async with _node(ns.url) as a, _node(ns.url) as b:
            ca = await nats.connect(a.nats_url)
            cb = await nats.connect(b.nats_url)
            got = []

            async def on_b(m):
                got.append(m.data)

            await cb.subscribe("y", cb=on_b)
            await cb.flush()
            assert await _until(lambda: a.cluster.stats()["remote_interest"] == 1)
            await ca.subscribe("x", queue="q" * 1024)
            await ca.flush()
            await asyncio.sleep(0.8)
            await ca.publish("y", b"after")
            await ca.flush()
            await _until(lambda: got, 1.0)
            st = a.cluster.stats()
            await ca.close()
            await cb.close()
            assert st["reconnects"] == 0, "the link reconnected {} times: {}".format(
                st["reconnects"], st["last_error"])
            assert got == [b"after"]

    _run(main())


# -- 5. gossip: a heartbeat one version ahead is taken as no gap ----------------------------


def test_a_heartbeat_past_the_known_version_asks_for_the_whole_set(natsd):
    """A heartbeat carries the node's current version.  A node known at v=1
    whose heartbeat says v=2 changed its interest and the change (v=2) was
    lost (e.g. dropped from a full output buffer): the receiver must ask
    for the whole set.  ``_on_gossip`` takes ``v == st["v"] + 1`` as the
    next version even for a heartbeat, so the change is never learnt."""
    from fastflow.cluster.link import Link
    from fastflow._impl import Router

    ns = natsd()

    async def main():
        link = Link(ns.url, node="a", interest_interval=INTERVAL)
        link.attach("$G", Router())
        await link.start(wait=2)
        raw = await nats.connect(ns.url)
        try:
            syncs = []

            async def on_sync(m):
                syncs.append(json.loads(m.data))

            await raw.subscribe("_FFI.sync", cb=on_sync)
            await raw.flush()
            await _gossip(raw, "ghost", {"v": 1, "full": True, "add": [["$G", "g.a", None]]})
            await raw.flush()
            assert await _until(lambda: link.stats()["remote_interest"] == 1)
            # the change v=2 (add g.b) was lost; then the heartbeat
            await _gossip(raw, "ghost", {"v": 2, "hb": True})
            await raw.flush()
            await _until(lambda: {"node": "ghost"} in syncs, 0.5)
            assert {"node": "ghost"} in syncs, "a missed change went unnoticed"
        finally:
            await raw.close()
            await link.close()

    _run(main())


# -- 6. the 64 MiB bound of the link's output is not a bound --------------------------------


def test_a_stalled_backbone_does_not_buffer_past_max_pending(natsd):
    """docs/cluster.md: the link's output holds 64 MiB, past it forwarded
    events are dropped and counted.  But the link hands its OutBuf to the
    transport every 256 KiB (``flush_at``) whatever ``pause_writing``
    said: with the NATS server stalled (SIGSTOP), the transport's buffer
    grows without bound and nothing is ever counted as dropped."""
    from fastflow.cluster.link import Link
    from fastflow._impl import Router

    ns = natsd()

    async def main():
        link = Link(ns.url, node="a", interest_interval=INTERVAL, max_pending=8 << 20)
        router = Router()
        link.attach("$G", router)
        await link.start(wait=2)
        raw = await nats.connect(ns.url)
        try:
            await _gossip(raw, "ghost", {"v": 1, "full": True, "add": [["$G", "big.>", None]]})
            await raw.flush()
            assert await _until(lambda: link.stats()["remote_interest"] == 1)
            ns.proc.send_signal(signal.SIGSTOP)
            data = b"x" * 65536
            for i in range(512):        # 32 MiB, four times max_pending
                router.publish("big.x", data)
                if i % 16 == 0:
                    await asyncio.sleep(0)
            await asyncio.sleep(0.1)
            buffered = len(link.out) + link.proto.transport.get_write_buffer_size()
            dropped = link.out.dropped
        finally:
            ns.proc.send_signal(signal.SIGCONT)
            await raw.close()
            await link.close()
        assert buffered <= (8 << 20) + (1 << 20) and dropped > 0, \
            "{} MiB held for a stalled backbone, {} dropped".format(buffered >> 20, dropped)

    _run(main())


# -- 7. a refused record is counted twice --------------------------------------------------


def test_in_refused_counts_a_refused_record_once(natsd):
    """A malformed record on _FFA.$G.<subject>: the parser's C path counts
    it in its NatsRoute (``bad``) and returns a ('bad', ...) entry, which
    ``Link._data`` counts again in ``bad_in``; ``stats()`` adds both."""
    ns = natsd()

    async def main():
        async with _node(ns.url) as a:
            ca = await nats.connect(a.nats_url)
            await ca.subscribe("x")
            await ca.flush()
            raw = await nats.connect(ns.url)
            assert await _until(lambda: a.cluster.stats()["local_interest"] == 1)
            await asyncio.sleep(0.1)
            await raw.publish("_FFA.$G.x", b"\x01\x02garbage")
            await raw.flush()
            await _until(lambda: a.cluster.stats()["in_refused"] >= 1, 1.0)
            await asyncio.sleep(0.1)
            st = a.cluster.stats()
            await ca.close()
            await raw.close()
            assert (st["in_msgs"], st["in_refused"]) == (1, 1), st

    _run(main())


# -- 8-10. gossip bookkeeping ---------------------------------------------------------------


def test_remote_queue_groups_are_forgotten_with_their_interest(natsd):
    """Another node's queue groups come and go (MQTT shared subscriptions,
    per-worker groups, or a hostile node): ``_Account.groups`` keeps a
    ClusterTarget for every queue name ever heard of, forever."""
    from fastflow.cluster.link import Link
    from fastflow._impl import Router

    ns = natsd()

    async def main():
        link = Link(ns.url, node="a", interest_interval=INTERVAL)
        link.attach("$G", Router())
        await link.start(wait=2)
        raw = await nats.connect(ns.url)
        try:
            await _gossip(raw, "ghost", {"v": 1, "full": True, "add": []})
            for i in range(200):
                await _gossip(raw, "ghost", {"v": 2 + 2 * i, "add": [["$G", "y", "q%d" % i]]})
                await _gossip(raw, "ghost", {"v": 3 + 2 * i, "del": [["$G", "y", "q%d" % i]]})
            await raw.flush()
            assert await _until(lambda: link.gossip_in >= 401)
            acc = link.accounts["$G"]
            assert acc.fwd == {} and acc.remote == {}
            assert len(acc.groups) == 0, "{} queue groups kept".format(len(acc.groups))
        finally:
            await raw.close()
            await link.close()

    _run(main())


def test_an_account_attached_later_learns_the_known_remote_interest(natsd):
    """Interest of another node in an account this node does not have yet
    is kept in ``nodes[n]["keys"]`` but not registered; when the account
    is attached (the admin API creates it at run time) nothing registers
    it, and later full snapshots change nothing (the keys are known): the
    new account never forwards to that node."""
    from fastflow.cluster.link import Link
    from fastflow._impl import Router

    ns = natsd()

    async def main():
        link = Link(ns.url, node="a", interest_interval=INTERVAL)
        link.attach("$G", Router())
        await link.start(wait=2)
        raw = await nats.connect(ns.url)
        try:
            await _gossip(raw, "ghost", {"v": 1, "full": True, "add": [["late", "z", None]]})
            await raw.flush()
            assert await _until(lambda: "ghost" in link.nodes)
            acc = link.attach("late", Router())
            await _gossip(raw, "ghost", {"v": 2, "full": True, "add": [["late", "z", None]]})
            await raw.flush()
            await _until(lambda: ("z", None) in acc.fwd, 1.0)
            assert ("z", None) in acc.fwd, "account 'late' does not forward what ghost wants"
        finally:
            await raw.close()
            await link.close()

    _run(main())


def test_a_sync_flood_is_not_answered_with_a_snapshot_each(natsd):
    """Every ``_FFI.sync`` (from any client of the backbone, or N nodes
    reconnecting at once after a NATS restart) makes every node publish its
    whole interest to every node, at once: N syncs, N x nodes snapshots
    (MiBs each with many subscriptions).  Requests within one interval
    should share one snapshot."""
    from fastflow.cluster.link import Link
    from fastflow._impl import Router

    ns = natsd()

    async def main():
        link = Link(ns.url, node="a", interest_interval=INTERVAL)
        r = Router()
        for i in range(200):
            r.add("s.%d" % i, _sub_target())
        link.attach("$G", r)
        await link.start(wait=2)
        raw = await nats.connect(ns.url)
        try:
            seen = []

            async def on_gossip(m):
                if b'"full":true' in m.data:
                    seen.append(len(m.data))

            await raw.subscribe("_FFI." + link.node, cb=on_gossip)
            await raw.flush()
            for _ in range(50):
                await raw.publish("_FFI.sync", b'{"node":"*"}')
            await raw.flush()
            await asyncio.sleep(INTERVAL / 2)
            assert len(seen) <= 3, "{} full snapshots ({} bytes) for 50 syncs".format(
                len(seen), sum(seen))
        finally:
            await raw.close()
            await link.close()

    _run(main())


def _sub_target():
    from fastflow._impl import SubTarget
    return SubTarget(lambda e: None)
