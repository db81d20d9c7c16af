"""Issue 19, the fault proofs for core (non-replicated) subjects: three
nats-servers (a cluster of this test's own, ``nats_cluster_factory``, no
JetStream) and three ``fastflow serve --cluster`` nodes, with native
clients publishing steadily while servers and nodes are SIGKILLed and
restarted.

What docs/cluster.md promises and what is checked here:

- a node whose NATS server dies reconnects to another one of its list
  (/varz ``cluster``: ``reconnects`` >= 1, ``connected``, another
  ``server``), the others stay where they are, interest converges again;
- a killed node's clients fail over to the other node of their list (or,
  given that node alone, come back to it once it is restarted) and
  resubscribe; the other nodes forget the dead node;
- core subjects are **at most once**: an event may be lost while something
  is failing over, never duplicated (no duplicate is ever tolerated, in any
  window), and per publisher and subscriber the order is kept;
- once everything has converged, every event published arrives, exactly
  once (plain subscriptions on every node, and a queue group with members
  on two nodes: once across the group).

"Converged" is read, polling (bounded), from the monitoring endpoints only:
every NATS server that runs has its routes to the others; every fastflow
node that runs is connected, knows the others (``nodes``), and has the
local and remote interest that the clients' placement gives; every client
is connected; and the NATS server each node is on knows, locally or
through its route, every backbone subscription of every other node.  The
publishers' sequence numbers at that moment are the *mark*: what is
published from there on must all arrive.  Losses are tolerated only in the
failover window, from SLACK seconds before the first kill to the mark;
they are counted and printed (``traffic ...: {...}``, with ``-s``).

A killed node is restarted once the others have forgotten it: /varz
``nodes`` is a count, so while the dead node is still remembered "knows
two others" could mean the dead one and not its successor (same
patterns, so the same interest counts), and convergence could not be
told from the endpoints.

The nodes run under both event loops (node 0 and 2 uvloop, node 1
asyncio), the clients under uvloop.  ``seed`` (FASTFLOW_TEST_SEED=<n>)
replays the random kill points of the last test."""

import asyncio
import collections
import importlib.util
import json
import os
import random
import time

import pytest

import fastflow.client as fc
from fastflow.cluster.link import _group_token
from fastflow.errors import FastflowError

from test_cluster import INTERVAL, NODE_LOOPS, cluster_of, count, peers

one_loop = pytest.mark.parametrize("aloop", ["uvloop"], indirect=True)
pytestmark = one_loop

TICK = 0.01                     # seconds between two rounds of publishes (every stream)
CONVERGE_TIMEOUT = 15.0         # seconds a convergence may take at most
POLL = 0.05                     # seconds between two looks at the monitoring endpoints
QUIET = 3 * INTERVAL            # seconds without a new event: nothing more is coming
AFTER_MARK = 40                 # events of every stream published after the mark, at least
SLACK = 0.5                     # seconds before the first kill: what was published earlier
                                # than that was delivered before anything failed, never lost
TEST_TIMEOUT = 60.0


# -- the backbone's names for a node's interest (docs/cluster.md) ------------------------------


def backbone_subs(node, keys, account="$G"):
    """The backbone subscriptions (subject, queue group) of node ``node``
    (its /varz ``node``) for its interest ``keys`` ((pattern, queue))."""
    prefix = "_FFA.{}.".format(account)
    out = set()
    for pattern, queue in keys:
        if queue is None:
            out.add((prefix + pattern, "_ffn_" + node))
        else:
            group = _group_token(queue)
            out.add(("_FFQ.{}.{}{}".format(group, prefix, pattern), group))
    return out


def backbone_missing(ns, placement):
    """Why some node's NATS server does not know another node's backbone
    subscriptions yet, or None.  ``placement``: [(node name, index of its
    NATS server, its interest keys)].  Blocking (urllib): run it in a
    thread."""
    connz = {}
    routes = {}
    for name_k, s_k, _ in placement:
        for name_j, s_j, keys_j in placement:
            if name_j == name_k:
                continue
            need = backbone_subs(name_j, keys_j)
            if s_j == s_k:
                if s_k not in connz:
                    cz = ns.servers[s_k].monitor("/connz", subs="detail") or {}
                    connz[s_k] = {c.get("name"): {(d["subject"], d.get("qgroup") or None)
                                                  for d in c.get("subscriptions_list_detail")
                                                  or ()}
                                  for c in cz.get("connections") or ()}
                have = connz[s_k].get("fastflow " + name_j, set())
            else:
                if (s_k, s_j) not in routes:
                    routes[s_k, s_j] = ns.route_interest(s_k, s_j) or set()
                have = routes[s_k, s_j]
            missing = need - have
            if missing:
                return "n{} (node {}) does not know {} of node {} (on n{}) yet".format(
                    s_k, name_k, sorted(missing), name_j, s_j)
    return None


# -- the world: 3 nats-servers, 3 nodes, clients --------------------------------------------------


class Client:
    """A native client of the test: a publisher, a plain subscriber or a
    queue group member, at home on node ``home``; ``roam``: its server list
    is [home, home + 1] (it fails over), else [home] alone (it waits for
    its node to come back)."""

    def __init__(self, world, kind, home, roam, pattern=None, queue=None):
        self.world = world
        self.kind = kind
        self.home = home
        self.roam = roam
        self.pattern = pattern
        self.queue = queue
        self.name = "{}{}{}".format(kind, home, "r" if roam else "")
        self.conn = None
        self.tag = None             # a subscriber's part of the subjects sent to it

    @property
    def keys(self):
        return set() if self.pattern is None else {(self.pattern, self.queue)}

    @property
    def node(self):
        """The index of the node the client is on now, or None."""
        if self.conn is None or self.conn.state != "connected":
            return None
        return self.world.node_of_url.get(self.conn.server)

    async def connect(self):
        n = len(self.world.nodes)
        homes = [self.home, (self.home + 1) % n] if self.roam else [self.home]
        self.conn = await fc.connect([self.world.nodes[i].url for i in homes], name=self.name,
                                     timeout=5, reconnect_wait=0.05, reconnect_wait_max=0.2,
                                     error_callback=self.world.client_errors.append)
        if self.pattern is not None:
            self.conn.subscribe(self.pattern, self._on_event, queue=self.queue, raw=True)
            await self.conn.flush()

    def _on_event(self, subject, reply, data):
        self.world.on_event(self, subject, data)


class World:
    """The nats-servers (``ns``), the fastflow nodes (``nodes``: their
    ServerProcess), the clients, and the traffic rounds."""

    def __init__(self, ns, nodes):
        self.ns = ns
        self.nodes = nodes
        self.node_of_url = {nd.url: i for i, nd in enumerate(nodes)}
        self.clients = []
        self.client_errors = []
        self.rounds = {}            # tag -> Traffic
        self.stray = []             # events of no round, or of a subject no round sent

    # -- clients --------------------------------------------------------------------------

    def add(self, kind, home, roam=False, pattern=None, queue=None):
        c = Client(self, kind, home, roam, pattern, queue)
        self.clients.append(c)
        return c

    def publisher(self, home, roam=False):
        return self.add("pub", home, roam)

    def subscriber(self, home, roam=False):
        c = self.add("sub", home, roam)
        c.tag = c.name
        c.pattern = "f.*.{}".format(c.tag)          # every publisher's events for it
        return c

    def member(self, home, roam=False):
        return self.add("member", home, roam, "q.>", "w")

    async def connect_clients(self):
        for c in self.clients:
            await c.connect()

    async def close_clients(self):
        for c in self.clients:
            if c.conn is not None:
                try:
                    await asyncio.wait_for(c.conn.close(), 5)
                except (asyncio.TimeoutError, FastflowError, ConnectionError):
                    pass

    def on_event(self, client, subject, data):
        tag, _, seq = data.partition(b":")
        tr = self.rounds.get(int(tag))
        st = tr.streams.get(subject) if tr is not None else None
        if st is None:
            self.stray.append((client.name, subject, data))
            return
        st.got.append((client.name, int(seq)))

    # -- processes ------------------------------------------------------------------------

    def running_nodes(self):
        return [i for i, nd in enumerate(self.nodes)
                if nd.proc is not None and nd.proc.poll() is None]

    def server_index(self, addr):
        """The index of the nats-server at ``addr`` ("host:port"), or None."""
        for i, s in enumerate(self.ns.servers):
            if addr == "127.0.0.1:{}".format(s.port):
                return i
        return None

    async def varz(self):
        """{node index: its /varz cluster section} of every running node."""
        return {i: await cluster_of(self.nodes[i]) for i in self.running_nodes()}

    async def kill_node(self, k):
        self.nodes[k].kill()

    async def restart_node(self, k):
        await self.nodes[k].astart()

    async def await_forgotten(self, k, timeout=5.0):
        """Every other running node has forgotten node ``k`` (killed): it
        knows exactly the other running nodes."""
        running = self.running_nodes()
        assert k not in running
        await self.await_state(lambda v: all(peers(v[i]) == len(running) - 1 for i in running),
                               "every node forgetting node{}".format(k), timeout)

    async def await_state(self, pred, what, timeout):
        deadline = time.monotonic() + timeout
        while True:
            v = await self.varz()
            if pred(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError("not {} within {} s: {}\n{}".format(
                    what, timeout, json.dumps(v), self.log_tails()))
            await asyncio.sleep(POLL)

    # -- convergence ----------------------------------------------------------------------

    def expected_interest(self):
        """{node index: its local interest keys} from where the clients are."""
        local = {i: set() for i in self.running_nodes()}
        for c in self.clients:
            if c.node in local:
                local[c.node] |= c.keys
        return local

    async def not_converged(self):
        """Why the world has not converged (the module's doc), or None."""
        loop = asyncio.get_running_loop()
        running = self.ns.running
        why = await loop.run_in_executor(None, self.ns.not_ready, running)
        if why is not None:
            return "NATS: " + why
        for c in self.clients:
            if c.node is None:
                return "client {} is {} ({})".format(c.name, c.conn.state, c.conn.server)
        local = self.expected_interest()
        nodes = self.running_nodes()
        placement = []
        for i in nodes:
            v = await cluster_of(self.nodes[i])
            s = self.server_index(v["server"]) if v["connected"] else None
            if s is None or s not in running:
                return "node{} is not connected to a running NATS server: {}".format(
                    i, json.dumps(v))
            if peers(v) != len(nodes) - 1:
                return "node{} knows {} other nodes, not {}".format(i, peers(v), len(nodes) - 1)
            remote = set().union(*(local[j] for j in nodes if j != i))
            if count(v["local_interest"]) != len(local[i]) \
                    or count(v["remote_interest"]) != len(remote):
                return "node{}'s interest is {} local, {} remote, not {} and {}".format(
                    i, v["local_interest"], v["remote_interest"], sorted(local[i]),
                    sorted(remote))
            placement.append((v["node"], s, local[i]))
        why = await loop.run_in_executor(None, backbone_missing, self.ns, placement)
        return None if why is None else "backbone: " + why

    async def await_converged(self, timeout=CONVERGE_TIMEOUT):
        """Returns once the world has converged (polled, at most
        ``timeout`` seconds): how long it took."""
        t = time.monotonic()
        deadline = t + timeout
        while True:
            why = await self.not_converged()
            if why is None:
                return time.monotonic() - t
            if time.monotonic() > deadline:
                raise AssertionError("not converged within {} s: {}\n{}".format(
                    timeout, why, self.log_tails()))
            await asyncio.sleep(POLL)

    def recheck(self):
        """Every round checked again: nothing arrived late (a duplicate, an
        event to the wrong subscriber)."""
        for tr in self.rounds.values():
            if getattr(tr, "checked", None):
                tr.check(tr.checked[0], tr.checked[1] + " (again)", tr.checked[2])

    def log_tails(self, chars=2000):
        out = []
        for i, nd in enumerate(self.nodes):
            out.append("--- node{} ({}):\n{}".format(
                i, "running" if i in self.running_nodes() else "down", nd.log[-chars:]))
        out.append(self.ns.log_tails(800))
        return "\n".join(out)


@pytest.fixture
def world(ffnatsproc, nats_cluster_factory, tmp_path):
    """``w = await world()``: a World of a fresh cluster of three
    nats-servers (no JetStream) and three nodes joined through it (every
    node's link connected, every node knowing the two others); add its
    clients, then ``await w.connect_clients()``; a test closes them
    (``close_clients``), the fixtures that made the processes kill them."""
    if importlib.util.find_spec("fastflow.cluster") is None:
        pytest.skip("the cluster link (issue 19: fastflow/cluster) is not in this tree yet")
    ns = nats_cluster_factory(3, jetstream=False)
    conf = tmp_path / "cluster.toml"
    conf.write_text("[cluster]\ninterest_interval = {}\n".format(INTERVAL))

    async def make(n=3):
        nodes = [ffnatsproc("--name", "node{}".format(i), "--cluster", ",".join(ns.urls),
                            "--config", str(conf), "--loop", NODE_LOOPS[i % 2], monitor=True)
                 for i in range(n)]
        await asyncio.gather(*(nd.astart() for nd in nodes))
        w = World(ns, nodes)
        await w.await_state(lambda v: all(c["connected"] and peers(c) == n - 1
                                          for c in v.values()),
                            "joined", 10.0)
        return w

    return make


# -- traffic ---------------------------------------------------------------------------------------


class Stream:
    """The events of one publisher to one subscriber (``kind`` "plain"), or
    to the queue group ("queue"): sequence numbers sent and received."""

    def __init__(self, subject, pub, kind, to=None):
        self.subject = subject
        self.pub = pub
        self.kind = kind
        self.to = to                # the subscriber (plain)
        self.next = 0
        self.sent = []              # seqs publish() took
        self.refused = 0            # publishes that raised (buffer full, closed)
        self.got = []               # (client name, seq) as delivered


class Traffic:
    """Every publisher sends, every TICK, one event to every subscriber
    (subject ``f.<publisher>.<subscriber>``) and one to the queue group
    (``q.<publisher>``) when there are members; data ``<tag>:<seq>``."""

    def __init__(self, world, tag):
        self.world = world
        self.tag = tag
        self.streams = {}
        subs = [c for c in world.clients if c.kind == "sub"]
        members = [c for c in world.clients if c.kind == "member"]
        for p in (c for c in world.clients if c.kind == "pub"):
            for s in subs:
                subject = "f.{}.{}".format(p.name, s.tag)
                self.streams[subject] = Stream(subject, p, "plain", s)
            if members:
                subject = "q.{}".format(p.name)
                self.streams[subject] = Stream(subject, p, "queue")
        world.rounds[tag] = self
        self._stop = False
        self._task = None

    def start(self):
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self):
        tag = str(self.tag).encode() + b":"
        while not self._stop:
            for st in self.streams.values():
                seq = st.next
                st.next += 1
                try:
                    st.pub.conn.publish(st.subject, tag + str(seq).encode())
                except (FastflowError, ConnectionError):
                    st.refused += 1
                else:
                    st.sent.append(seq)
            await asyncio.sleep(TICK)

    def mark(self):
        """{subject: the first seq from now on}."""
        return {s: st.next for s, st in self.streams.items()}

    async def stop(self):
        self._stop = True
        await asyncio.wait_for(self._task, 5)
        for p in {st.pub for st in self.streams.values()}:
            await p.conn.flush(timeout=5)

    async def await_after(self, mark, n=AFTER_MARK, timeout=10.0):
        """Returns once every stream has published ``n`` events from
        ``mark`` on (and received them: at most ``timeout`` seconds; what
        did not arrive is for ``check`` to tell)."""
        deadline = time.monotonic() + timeout
        while True:
            ok = True
            for s, st in self.streams.items():
                after = [q for q in st.sent if q >= mark[s]]
                got = {q for _, q in st.got}
                if len(after) < n or after[n - 1] not in got:
                    ok = False
                    break
            if ok or time.monotonic() > deadline:
                return
            await asyncio.sleep(POLL)

    async def drain(self, mark, timeout=5.0):
        """After ``stop``: wait until what was sent from ``mark`` on has
        arrived (at most ``timeout`` seconds), then until nothing more
        arrives for QUIET seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all({q for q in st.sent if q >= mark[s]} <= {q for _, q in st.got}
                   for s, st in self.streams.items()):
                break
            await asyncio.sleep(POLL)
        n = -1
        while n != self.received():
            n = self.received()
            await asyncio.sleep(QUIET)

    def received(self):
        return sum(len(st.got) for st in self.streams.values())

    def check(self, mark, label="", fault=None):
        """The guarantees for this round (the module's doc), with ``mark``
        (converged from there on) and ``fault`` (``mark()`` when the first
        kill came): nothing lost but in the failover window, from SLACK
        seconds before the fault to the mark; returns a report and prints
        it."""
        slack = int(SLACK / TICK)
        problems = []
        lost = {}
        sent = received = after = 0
        for s, st in self.streams.items():
            seqs = [q for _, q in st.got]
            dups = sorted(q for q, k in collections.Counter(seqs).items() if k > 1)
            if dups:
                problems.append("{}: {} duplicate(s): {}{}".format(
                    s, len(dups), dups[:10], " (to {})".format(
                        sorted({n for n, q in st.got if q in set(dups[:3])}))
                    if st.kind == "queue" else ""))
            if st.kind == "plain":
                wrong = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a]
                if wrong:
                    problems.append("{}: out of order: {}".format(s, wrong[:5]))
                strangers = {n for n, _ in st.got} - {st.to.name}
                if strangers:
                    problems.append("{}: delivered to {} too".format(s, strangers))
            have = set(seqs)
            missing = [q for q in st.sent if q >= mark[s] and q not in have]
            if missing:
                problems.append("{}: {} event(s) published after the mark (seq {}) lost: {}"
                                .format(s, len(missing), mark[s], missing[:10]))
            n_after = sum(1 for q in st.sent if q >= mark[s])
            if n_after < AFTER_MARK // 2:
                problems.append("{}: only {} events published after the mark".format(
                    s, n_after))
            gone = [q for q in st.sent if q < mark[s] and q not in have]
            if gone:
                lost[s] = (len(gone), gone[0], gone[-1])
                early = [q for q in gone if fault is not None and q < fault[s] - slack]
                if early:
                    problems.append("{}: {} event(s) lost that were published more than {} s "
                                    "before the fault (seq {}): {}".format(
                                        s, len(early), SLACK, fault[s], early[:10]))
            sent += len(st.sent)
            received += len(seqs)
            after += n_after
        report = {"label": label, "streams": len(self.streams), "sent": sent,
                  "window": None if fault is None else {s: [fault[s], mark[s]] for s in lost},
                  "received": received, "after_mark": after,
                  "lost_before_mark": sum(n for n, _, _ in lost.values()),
                  "refused": sum(st.refused for st in self.streams.values()),
                  "lost_by_stream": lost}
        print("traffic {}: {}".format(label, json.dumps(report)))
        self.checked = (mark, label, fault)
        assert not problems, "\n".join(problems)
        return report


async def await_received(traffic, n, timeout=5.0):
    """Every stream has received ``n`` events (the flow is established)."""
    deadline = time.monotonic() + timeout
    while True:
        short = {s: len(st.got) for s, st in traffic.streams.items() if len(st.got) < n}
        if not short:
            return
        if time.monotonic() > deadline:
            raise AssertionError("streams short of {} events after {} s: {}\n{}".format(
                n, timeout, short, traffic.world.log_tails()))
        await asyncio.sleep(POLL)


def no_strays(w):
    assert w.stray == [], w.stray[:10]
    assert w.client_errors == [], w.client_errors[:10]


# -- 1. a NATS server dies -------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["publisher", "subscriber"])
def test_a_nats_server_killed_while_publishing(aloop, world, victim):
    """Node0 publishes steadily to subscribers on node1 and node2; the NATS
    server of the publisher's node (or of the subscriber's, node1) is
    killed: the nodes on it reconnect elsewhere, interest converges, and
    from then on everything arrives; nothing is ever duplicated."""
    async def main():
        w = await world()
        w.publisher(0)
        w.subscriber(1)
        w.subscriber(2)
        await w.connect_clients()
        await w.await_converged()
        before = await w.varz()
        v = w.server_index(before[0 if victim == "publisher" else 1]["server"])
        affected = [i for i, c in before.items() if w.server_index(c["server"]) == v]
        print("nodes on {}: {}; killing n{}".format(
            {i: c["server_name"] for i, c in before.items()}, affected, v))

        tr = Traffic(w, 1).start()
        await await_received(tr, 20)
        t = time.monotonic()
        fault = tr.mark()
        w.ns.kill(v)
        took = await w.await_converged()
        mark = tr.mark()
        print("converged {:.2f} s after the kill".format(took))

        after = await w.varz()
        for i, c in after.items():
            assert c["connected"] is True
            assert peers(c) == 2
            assert (count(c["local_interest"]), count(c["remote_interest"])) == \
                (count(before[i]["local_interest"]), count(before[i]["remote_interest"])), \
                (i, c, before[i])
            if i in affected:
                assert c["reconnects"] >= 1, c
                assert c["server"] != before[i]["server"] and c["server_name"] != "n{}".format(v)
                assert w.server_index(c["server"]) in w.ns.running
            else:
                assert c["reconnects"] == 0, c
                assert c["server"] == before[i]["server"]

        await tr.await_after(mark)
        await tr.stop()
        await tr.drain(mark)
        tr.check(mark, "kill n{} ({}'s server), {:.2f} s in all".format(
            v, victim, time.monotonic() - t), fault)
        print("dropped (/varz): {}".format({i: c["dropped"] for i, c in (await w.varz()).items()}))
        no_strays(w)
        await w.close_clients()

    aloop(main, timeout=TEST_TIMEOUT)


# -- 2. everything killed comes back ---------------------------------------------------------------


def full_house(w):
    """On every node: a publisher and a subscriber given that node alone,
    and a subscriber that fails over to the next node; queue group "w":
    a member on node1 that fails over (to node2) and one given node2 alone."""
    for i in range(len(w.nodes)):
        w.publisher(i)
        w.subscriber(i)
        w.subscriber(i, roam=True)
    w.member(1, roam=True)
    w.member(2)


def busiest_server(w, varz):
    """The index of the nats-server the most nodes are on."""
    on = collections.Counter(w.server_index(c["server"]) for c in varz.values())
    return min(on, key=lambda s: (-on[s], s))


@pytest.mark.slow
def test_a_restarted_nats_server_and_a_restarted_node_converge(aloop, world):
    """A NATS server killed and restarted, then a node killed and restarted,
    all while every node publishes to subscribers on every node and to a
    queue group: after each step everything converges (every node on the
    backbone, knowing the two others, the interest the clients' placement
    gives) and then every event arrives, exactly once."""
    async def main():
        w = await world()
        full_house(w)
        await w.connect_clients()
        await w.await_converged()
        before = await w.varz()
        v = busiest_server(w, before)

        # a NATS server dies, under traffic
        tr = Traffic(w, 1).start()
        await await_received(tr, 10)
        t = time.monotonic()
        fault = tr.mark()
        w.ns.kill(v)
        await w.await_converged()
        mark = tr.mark()
        moved = {i for i, c in before.items() if w.server_index(c["server"]) == v}
        for i, c in (await w.varz()).items():
            assert c["reconnects"] == (1 if i in moved else 0), (i, c)
        await tr.await_after(mark)
        await tr.stop()
        await tr.drain(mark)
        tr.check(mark, "n{} killed, {:.2f} s".format(v, time.monotonic() - t), fault)

        # it comes back: the cluster is whole again, nobody moves
        tr = Traffic(w, 2).start()
        await await_received(tr, 10)
        t = time.monotonic()
        fault = tr.mark()
        await w.ns.astart(v)
        await w.await_converged()
        assert w.ns.running == [0, 1, 2]
        mark = tr.mark()
        for i, c in (await w.varz()).items():
            assert c["reconnects"] == (1 if i in moved else 0), (i, c)
            assert (count(c["local_interest"]), count(c["remote_interest"])) == \
                (count(before[i]["local_interest"]), count(before[i]["remote_interest"])), \
                (i, c, before[i])
        await tr.await_after(mark)
        await tr.stop()
        await tr.drain(mark)
        tr.check(mark, "n{} restarted, {:.2f} s".format(v, time.monotonic() - t), fault)

        # node1 dies: its clients fail over to node2 or wait for it; it comes back
        k = 1
        mine = [c for c in w.clients if c.home == k]
        tr = Traffic(w, 3).start()
        await await_received(tr, 10)
        t = time.monotonic()
        fault = tr.mark()
        await w.kill_node(k)
        await w.await_forgotten(k)
        await w.restart_node(k)
        await w.await_converged()
        mark = tr.mark()
        for c in mine:
            assert c.conn.stats["reconnects"] == 1, (c.name, c.conn.stats)
            assert c.node == (k + 1 if c.roam else k), (c.name, c.conn.server)
        after = await w.varz()
        local = w.expected_interest()
        for i, c in after.items():
            assert c["connected"] is True and peers(c) == 2, (i, c)
            remote = set().union(*(local[j] for j in after if j != i))
            assert (count(c["local_interest"]), count(c["remote_interest"])) == \
                (len(local[i]), len(remote)), (i, c, local)
        assert after[k]["reconnects"] == 0 and after[k]["node"] != before[k]["node"]
        # node0's clients did not move, and the others' interest is what it was
        assert (count(after[0]["local_interest"]), count(after[0]["remote_interest"])) == \
            (count(before[0]["local_interest"]), count(before[0]["remote_interest"]))
        await tr.await_after(mark)
        await tr.stop()
        await tr.drain(mark)
        report = tr.check(mark, "node{} killed and restarted, {:.2f} s".format(
            k, time.monotonic() - t), fault)
        assert report["after_mark"] >= AFTER_MARK * len(tr.streams)
        w.recheck()             # (nothing came late to an earlier round)
        no_strays(w)
        await w.close_clients()

    aloop(main, timeout=TEST_TIMEOUT)


# -- 3. random kill points -------------------------------------------------------------------------

ROUNDS = int(os.environ.get("FASTFLOW_FAULT_ROUNDS") or 3)     # (more: a soak)


@pytest.mark.slow
def test_random_kill_points(aloop, world, seed):
    """ROUNDS times, while every node publishes: a random NATS server, a
    random node, or both are killed at a random moment (in a random order),
    held down a random while (a killed node until the others forgot it),
    and restarted (in a random order); then everything converges and every
    event arrives exactly once.  The seed replays it."""
    rng = random.Random(seed)

    async def main():
        w = await world()
        full_house(w)
        await w.connect_clients()
        await w.await_converged()
        t0 = time.monotonic()
        for r in range(1, ROUNDS + 1):
            what = rng.choice(["nats", "node", "both"])
            server = rng.randrange(3) if what != "node" else None
            node = rng.randrange(3) if what != "nats" else None
            kills = [k for k in (("nats", server), ("node", node)) if k[1] is not None]
            rng.shuffle(kills)
            starts = list(kills)
            rng.shuffle(starts)
            delays = [rng.uniform(0.05, 0.5), rng.uniform(0.0, 0.3)]
            hold = rng.uniform(0.0, 0.5)
            plan = "round {}: kill {} after {:.2f} s{}, hold {:.2f} s, restart {}".format(
                r, kills, delays[0], "" if len(kills) == 1
                else " and {:.2f} s".format(delays[1]), hold, starts)
            print(plan)

            tr = Traffic(w, r).start()
            await await_received(tr, 5)
            t = time.monotonic()
            fault = None
            for (kind, i), delay in zip(kills, delays):
                await asyncio.sleep(delay)      # the kill point: a random moment
                fault = fault or tr.mark()
                if kind == "nats":
                    w.ns.kill(i)
                else:
                    await w.kill_node(i)
            if node is not None:
                await w.await_forgotten(node)
            await asyncio.sleep(hold)
            for kind, i in starts:
                if kind == "nats":
                    await w.ns.astart(i)
                else:
                    await w.restart_node(i)
            took = await w.await_converged()
            mark = tr.mark()
            for i, c in (await w.varz()).items():
                assert c["connected"] is True and peers(c) == 2, (i, c)
            await tr.await_after(mark)
            await tr.stop()
            await tr.drain(mark)
            tr.check(mark, "{} (converged {:.2f} s after the restarts, {:.2f} s in all)".format(
                plan, took, time.monotonic() - t), fault)
        w.recheck()
        no_strays(w)
        await w.close_clients()
        print("{} rounds in {:.1f} s".format(ROUNDS, time.monotonic() - t0))

    aloop(main, timeout=TEST_TIMEOUT + 5 * ROUNDS)
