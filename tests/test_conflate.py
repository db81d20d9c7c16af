"""Conflation (docs/engine.md, "Conflation"): a subscriber that is behind
gets, for each subject, the latest event at the time it reads.

Property tests against a model written here, on both cores: random
interleavings of publishes and reads on a conflating subscription of the
engine (``SubTarget(conflate=True)``, ``Flow.subscribe(conflate=True)``)
and on a conflating wire target whose connection falls behind and catches
up (``WireTarget.conflate``, ``OutBuf.behind``, ``OutBuf.flush_kept``).

The model: pending subjects in the order each became pending, each with
its latest event; a publish on a pending subject replaces its event where
it stands (``conflated`` + 1), on another subject queues it at the back,
under ``max_pending`` distinct subjects with ``on_full`` (drop_oldest: the
subject pending longest goes; drop_new: the new event goes).  A read takes
subjects from the front.  Nothing is lost that was not superseded or
dropped at the limit, and every counter adds up.
"""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastflow import Flow

SUBJECTS = ["px.a", "px.b", "px.c", "px.d", "px.e"]

ops = st.lists(st.one_of(
    st.tuples(st.just("pub"), st.integers(0, len(SUBJECTS) - 1)),
    st.tuples(st.just("read"), st.integers(1, 4))), max_size=60)


class Model:
    """What a conflating queue holds: subject -> latest data, in order."""

    def __init__(self, max_pending, on_full):
        self.max_pending = max_pending
        self.on_full = on_full
        self.pending = {}               # (dict order: first pending first)
        self.conflated = 0
        self.dropped = 0
        self.delivered = 0

    def publish(self, subject, data):
        self.delivered += 1
        if subject in self.pending:
            self.pending[subject] = data
            self.conflated += 1
            return
        if self.max_pending and len(self.pending) >= self.max_pending:
            if self.on_full == "drop_new":
                self.dropped += 1
                self.delivered -= 1
                return
            while len(self.pending) >= self.max_pending:
                del self.pending[next(iter(self.pending))]
                self.dropped += 1
        self.pending[subject] = data

    def read(self, n):
        out = []
        for subject in list(self.pending)[:n]:
            out.append((subject, self.pending.pop(subject)))
        return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(ops=ops, max_pending=st.sampled_from([0, 1, 2, 3]),
       on_full=st.sampled_from(["drop_oldest", "drop_new"]))
def test_engine_against_model(core, ops, max_pending, on_full):
    router = core.Router()
    target = core.SubTarget(None, max_pending, 0, on_full, True)
    router.add("px.>", target)
    model = Model(max_pending, on_full)
    latest = {}                         # subject -> the latest data published on it
    n = 0
    for op, arg in ops:
        if op == "pub":
            n += 1
            subject, data = SUBJECTS[arg], str(n).encode()
            router.publish(subject, data)
            model.publish(subject, data)
            latest[subject] = data
        else:
            got = [(e.routing_subject, e.data) for e in target.pop_many(arg)]
            assert got == model.read(arg)
            for subject, data in got:   # the latest at the time it reads
                assert data == latest[subject]
        assert len(target.pending) == len(model.pending)
        assert target.conflated == model.conflated
        assert target.dropped == model.dropped
        assert target.delivered == model.delivered
    assert router.stats()["conflated"] == model.conflated
    # nothing lost: every event accepted is read, pending, superseded or dropped
    rest = target.pop_many(1000)
    assert [(e.routing_subject, e.data) for e in rest] == model.read(1000)
    assert target.pending_bytes == 0


def test_flow_subscribe_conflate():
    with Flow() as flow:
        sub = flow.subscribe("px.>", conflate=True)
        for i in range(100):
            flow.publish("px.{}".format("ab"[i % 2]), str(i).encode())
        flow.publish("px.c", b"c")
        assert sub.pending == 3
        assert [(e.routing_subject, e.data) for e in sub.poll()] == [
            ("px.a", b"98"), ("px.b", b"99"), ("px.c", b"c")]
        st_ = sub.stats()
        assert st_["conflate"] is True and st_["conflated"] == 98
        assert flow.stats()["conflated"] == 98
        assert flow.stats()["subscriptions"][0]["conflated"] == 98
        # not behind: every event
        flow.publish("px.a", b"1")
        assert [e.data for e in sub.poll()] == [b"1"]
        flow.publish("px.a", b"2")
        assert [e.data for e in sub.poll()] == [b"2"]


def test_flow_conflate_async_iteration(aloop):
    async def main():
        with Flow() as flow:
            sub = flow.subscribe("px.>", conflate=True)
            for i in range(10):
                flow.publish("px.a", str(i).encode())
            ev = await sub.next(1)
            assert ev.data == b"9"
            flow.publish("px.a", b"x")
            assert (await sub.next(1)).data == b"x"

    aloop(main)


def test_conflate_bad_values(core):
    with pytest.raises(ValueError, match="conflate needs a queued subscription"):
        core.SubTarget(print, 10, 0, "drop_oldest", True)
    with Flow() as flow:
        with pytest.raises(ValueError, match="conflate needs a queued subscription"):
            flow.subscribe("a", print, conflate=True)
        with pytest.raises(TypeError, match="conflate must be True or False, got 'yes'"):
            flow.subscribe("a", conflate="yes")


def test_conflate_limits(core):
    """max_pending counts subjects; bytes: a bigger replacement that does
    not fit supersedes the older one and queues again under on_full."""
    router = core.Router()
    t = core.SubTarget(None, 2, 0, "cut", True)
    router.add(">", t)
    router.publish("a", b"1")
    router.publish("a", b"2")
    router.publish("b", b"1")
    assert not t.closed and t.conflated == 1
    router.publish("c", b"1")           # a third subject: cut
    assert t.cut and t.dropped == 3

    router = core.Router()
    t = core.SubTarget(None, 0, 2 * 64 + 30, "drop_oldest", True)
    router.add(">", t)
    router.publish("a", b"x" * 10)
    router.publish("b", b"x" * 10)
    router.publish("b", b"y" * 80)     # does not fit beside a: a goes, b queues again
    assert t.conflated == 1 and t.dropped == 1
    assert [(e.routing_subject, e.data) for e in t.pop_many(5)] == [("b", b"y" * 80)]

    router = core.Router()
    t = core.SubTarget(None, 0, 2 * 64 + 30, "drop_new", True)
    router.add(">", t)
    router.publish("a", b"x" * 10)
    router.publish("b", b"x" * 10)
    router.publish("b", b"y" * 80)     # does not fit: the new one goes, the pending stays
    assert t.conflated == 0 and t.dropped == 1
    assert [e.data for e in t.pop_many(5)] == [b"x" * 10, b"x" * 10]


# -- the wire: a conflating target on a connection that falls behind ------------------

_MSG = re.compile(rb"MSG (\S+) (\S+) (\d+)\r\n")


def _nats_msgs(data):
    out = []
    pos = 0
    while pos < len(data):
        m = _MSG.match(data, pos)
        assert m, data[pos:pos + 80]
        n = int(m.group(3))
        start = m.end()
        out.append((m.group(2).decode(), m.group(1).decode(), data[start:start + n]))
        pos = start + n + 2
    return out


wire_ops = st.lists(st.one_of(
    st.tuples(st.just("pub"), st.integers(0, len(SUBJECTS) - 1)),
    st.tuples(st.just("behind"), st.booleans())), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(ops=wire_ops)
def test_wire_against_model(core, ops):
    """A conflating and a plain target on one OutBuf: while it is behind
    the conflating one keeps the latest per subject (in the order first
    kept) and writes them when it catches up; the plain one writes all."""
    router = core.Router()
    ob = core.OutBuf(0)
    fast = core.NatsTarget(ob, b"1")
    slow = core.NatsTarget(ob, b"2")
    slow.conflate = True
    router.add("px.*", fast)
    router.add("px.*", slow)
    expect = []                         # (sid, subject, data) in the order written
    kept = {}
    conflated = 0
    n = 0
    for op, arg in ops:
        if op == "pub":
            n += 1
            subject, data = SUBJECTS[arg], str(n).encode()
            router.publish(subject, data)
            expect.append(("1", subject, data))
            if ob.behind:
                conflated += subject in kept
                kept[subject] = data
            else:
                expect.append(("2", subject, data))
        elif arg != ob.behind:
            ob.behind = arg
            if not arg:
                assert ob.kept_messages == len(kept)
                assert ob.flush_kept(router.matcher) == len(kept)
                expect.extend(("2", s, d) for s, d in kept.items())
                kept = {}
        assert slow.conflated == ob.conflated == conflated
    ob.behind = False                   # caught up at the end: nothing is lost
    ob.flush_kept(router.matcher)
    expect.extend(("2", s, d) for s, d in kept.items())
    assert _nats_msgs(ob.take()) == expect
    assert ob.kept_bytes == 0 and ob.kept_messages == 0
    assert fast.conflated == 0 and router.stats()["conflated"] == conflated


def test_wire_keep_limit_and_forget(core):
    """Kept messages count against max_pending (past it: overflow, the
    connection's slow-consumer cut); an ended subscription's are forgotten."""
    router = core.Router()
    ob = core.OutBuf(1000)
    t = core.NatsTarget(ob, b"1")
    t.conflate = True
    h = router.add(">", t)
    ob.behind = True
    for i in range(20):
        router.publish("s.{}".format(i), b"x" * 40)
    assert ob.overflow and t.dropped > 0
    assert ob.kept_bytes <= 1000
    ob2 = core.OutBuf(0)
    t2 = core.NatsTarget(ob2, b"1")
    t2.conflate = True
    h = router.add(">", t2)
    ob2.behind = True
    router.publish("a", b"1")
    router.remove(h)
    ob2.behind = False
    assert ob2.flush_kept(router.matcher) == 0 and ob2.take() == b""


# -- durable consumers ---------------------------------------------------------------


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_consumer_against_model(ops):
    """A conflating consumer's fetch delivers, of the backlog it reads, the
    records that are their subject's newest in the stream (in seq order);
    the superseded ones are done (the ack floor passes them)."""
    with Flow() as flow:
        st_ = flow.add_stream("px", ["px.>"])
        c = st_.consumer("c", conflate=True, ack="explicit")
        stored = []                     # (seq, subject, data) of every record
        delivered_to = 0                # the last seq the model has read up to
        conflated = 0
        n = 0
        for op, arg in ops:
            if op == "pub":
                n += 1
                flow.publish(SUBJECTS[arg], str(n).encode())
                stored.append((len(stored) + 1, SUBJECTS[arg], str(n).encode()))
            else:
                got = c.fetch(arg)
                window = [r for r in stored if r[0] > delivered_to][:arg]
                newest = {s: seq for seq, s, _d in stored}
                expect = [r for r in window if newest[r[1]] == r[0]]
                conflated += len(window) - len(expect)
                if window:
                    delivered_to = window[-1][0]
                assert [(e.seq, e.routing_subject, e.data) for e in got] == expect
                for e in got:
                    e.ack()
                assert c.info()["conflated"] == conflated
                assert c.ack_floor == delivered_to
        assert flow.stats()["conflated"] == conflated


def test_consumer_conflate_config():
    with Flow() as flow:
        st_ = flow.add_stream("px", ["px.>"])
        with pytest.raises(ValueError, match="conflate must be true or false, got 'yes'"):
            st_.consumer("c", conflate="yes")
        for i in range(10):
            flow.publish("px.a", str(i).encode())
            flow.publish("px.b", str(i).encode())
        got = []
        c = st_.consumer("push", callback=got.append, conflate=True, ack="none")
        assert [(e.routing_subject, e.data) for e in got] == [("px.a", b"9"), ("px.b", b"9")]
        flow.publish("px.a", b"new")    # caught up: every record
        assert got[-1].data == b"new" and c.info()["conflated"] == 18
        assert c.config.to_dict()["conflate"] is True
