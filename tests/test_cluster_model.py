"""The routing model against a cluster: three engines joined through a
real nats-server by their cluster links (fastflow.cluster.Link, in this
process), random subscriptions (plain and in queue groups, wildcards,
overlapping patterns) on random nodes, random publishes from random nodes.
What every subscription receives must be what it would on one node
(docs/cluster.md): each plain subscription every matching event exactly
once, each queue group every matching event exactly once in all (a local
member when the publishing node has one), in each publisher's order."""

import asyncio
import itertools
import random
import time

from fastflow import Flow
from fastflow.cluster import Link

WORDS = ("a", "b")
SUBJECTS = [".".join(t) for n in (2, 3) for t in itertools.product(WORDS, repeat=n)]
PATTERNS = SUBJECTS + ["a.*", "*.b", "a.>", ">", "*.*", "b.*.a", "*.a.>"]
QUEUES = [None, None, None, "q1", "q2"]
INTERVAL = 0.2


def _matches(pattern, subject):
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


async def _converged(links, timeout=10.0):
    """Every node forwards exactly what the others want."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok = True
        for i, ln in enumerate(links):
            want = set()
            for j, other in enumerate(links):
                if j != i:
                    want |= set(other.accounts["$G"].local)
            if set(ln.accounts["$G"].fwd) != want:
                ok = False
                break
        if ok:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("interest did not converge within {} s".format(timeout))


def test_random_routing_across_three_nodes_matches_one_node(natsd, seed):
    rnd = random.Random(seed)
    ns = natsd()
    ns.start()
    url = ns.url
    if True:

        async def main():
            flows = [Flow() for _ in range(3)]
            links = [Link(url, node="m%d" % i, interest_interval=INTERVAL) for i in range(3)]
            for f, ln in zip(flows, links):
                ln.attach("$G", f)
                await ln.start(wait=5)
            try:
                for rnd_round in range(4):
                    got = {}                # sub id -> [(publisher, n)]
                    subs = []               # (id, node, pattern, queue, Subscription)
                    for k in range(rnd.randint(4, 12)):
                        node = rnd.randrange(3)
                        pattern = rnd.choice(PATTERNS)
                        queue = rnd.choice(QUEUES)
                        sid = (rnd_round, k)
                        got[sid] = []
                        sub = flows[node].subscribe(
                            pattern, (lambda sid: lambda ev: got[sid].append(
                                (ev.routing_subject, bytes(ev.data))))(sid), queue=queue)
                        subs.append((sid, node, pattern, queue, sub))
                    await _converged(links)
                    sent = []               # (node, subject, data)
                    for n in range(rnd.randint(20, 60)):
                        node = rnd.randrange(3)
                        subject = rnd.choice(SUBJECTS)
                        data = b"%d/%d/%d" % (rnd_round, node, n)
                        flows[node].publish(subject, data)
                        sent.append((node, subject, data))
                        if n % 16 == 0:
                            await asyncio.sleep(0)
                    # what one node would deliver
                    want_plain = {}
                    want_groups = {}        # queue -> [events]
                    for _node, subject, data in sent:
                        groups_hit = set()
                        for sid, _snode, pattern, queue, _ in subs:
                            if not _matches(pattern, subject):
                                continue
                            if queue is None:
                                want_plain.setdefault(sid, []).append((subject, data))
                            elif queue not in groups_hit:
                                groups_hit.add(queue)
                                want_groups.setdefault(queue, []).append((subject, data))
                    total = sum(len(v) for v in want_plain.values()) + \
                        sum(len(v) for v in want_groups.values())
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and \
                            sum(len(v) for v in got.values()) < total:
                        await asyncio.sleep(0.02)
                    await asyncio.sleep(0.1)    # (anything extra would be here now)
                    for sid, snode, pattern, queue, _ in subs:
                        if queue is None:
                            # exactly the matching events, each publisher's in order
                            assert sorted(got[sid]) == sorted(want_plain.get(sid, [])), \
                                (sid, snode, pattern, [(x[1], x[2], x[3]) for x in subs])
                            for pub in range(3):
                                mine = [d for _, d in got[sid]
                                        if d.split(b"/")[1] == b"%d" % pub]
                                assert mine == sorted(mine, key=lambda d: int(
                                    d.split(b"/")[2])), (sid, pattern)
                    for queue, events in want_groups.items():
                        members = [(sid, snode) for sid, snode, _, q, _ in subs if q == queue]
                        delivered = [e for sid, _ in members for e in got[sid]]
                        assert sorted(delivered) == sorted(events), queue
                        # a publishing node with a member of the group keeps
                        # the events for its own members
                        for node, subject, data in sent:
                            local = [sid for sid, snode, pattern, q, _ in subs
                                     if q == queue and snode == node
                                     and _matches(pattern, subject)]
                            if local:
                                assert any((subject, data) in got[sid] for sid in local), \
                                    (queue, node, subject)
                    for *_, sub in subs:
                        sub.unsubscribe()
                    await _converged(links)
                for ln in links:
                    st = ln.stats()
                    assert st["local_interest"] == 0 and st["remote_interest"] == 0
                    assert st["in_refused"] == 0 and st["dropped"] == 0
            finally:
                for ln in links:
                    await ln.close()
                for f in flows:
                    f.close()

        asyncio.run(main())
