"""Hypothesis: the engine's routing (``fastflow.Flow``) against a small
pure-Python model written here (it does not use fastflow's matcher).

Random sequences of subscribe (plain or in a queue group), unsubscribe,
add_stream, delete_stream, publish and publish_batch run on a ``Flow`` and
on the model; after every step the two must agree on what every
subscription received (subject, data, seq, stream, in order), what every
stream holds (``stream.replay()``), the flow's counters and the events'
ids.  Some plain subscriptions react once from inside their callback
(publish, subscribe, unsubscribe), which the engine allows.

The model's semantics (docs/engine.md, src_ext/router.pyx, the matchers):

* ``*`` matches one token, ``>`` (last) one or more; a subject starting
  with ``$`` is not matched by a pattern whose first token is a wildcard.
* A publish matches once.  No match: counted as published and
  ``dropped_no_interest``, returns 0.  Otherwise the event is appended once
  to every capturing stream (however many of its patterns match) before any
  subscriber sees it, then delivered to every plain subscription and to one
  member of each queue group.  A queue group is the set of subscriptions
  with one queue name, whatever their patterns.
* Match order, which picks the queue member and the "first" stream: the
  trie walk (as nats-server's sublist): at each token, the subscriptions of
  a ``>`` there first, then everything under a ``*`` there, then the
  literal; subscriptions of one pattern in the order they were added.
* Round robin: a group's counter advances once per event it gets; the
  member is ``members_matching_in_match_order[counter % count]``; the
  counter goes with the group's last member (a new group starts at 0).
* The return value (and ``event.seq`` / ``event.stream``) is the seq in
  the first capturing stream in match order, 0 / None if no stream stored it.
* The handles are taken before any callback runs: a subscription made by a
  callback does not get the event being delivered, one removed by a
  callback before its turn does not get it (nor does another member of its
  queue group).  Plain subscriptions are served before queue groups.
"""

import itertools

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import fastflow
from fastflow import Flow, Retention, SubjectError

WORDS = ("a", "b", "c")
SUBJECTS = (
    [".".join(t) for n in (2, 3) for t in itertools.product(WORDS, repeat=n)]
    + ["$s." + ".".join(t) for n in (1, 2) for t in itertools.product(WORDS, repeat=n)]
)
SUBJECT_BYTES = {s: s.encode() for s in SUBJECTS}
INVALID = ["a..b", "a.*", "a.>", ".a", "a b", ""]
QUEUES = [None, None, None, "q1", "q2"]
STREAMS = ["S1", "S2", "S3"]

subjects = st.sampled_from(SUBJECTS)


@st.composite
def patterns(draw):
    toks = draw(st.lists(st.sampled_from(WORDS + ("*",)), min_size=1, max_size=3))
    if draw(st.integers(0, 3)) == 0:
        toks[0] = "$s"
    if draw(st.booleans()):
        toks[-1] = ">"
    return ".".join(toks)


# -- the model ------------------------------------------------------------------

def matches(pattern, subject):
    p, s = pattern.split("."), subject.split(".")
    if subject.startswith("$") and p[0] in ("*", ">"):
        return False
    for i, t in enumerate(p):
        if t == ">":
            return len(s) > i
        if i >= len(s) or (t != "*" and t != s[i]):
            return False
    return len(s) == len(p)


def walk_key(pattern):
    """Sort key of a pattern in match order ('>' before '*' before the
    literal at each token; two patterns that match one subject have equal
    literals wherever both have one)."""
    return tuple(0 if t == ">" else 1 if t == "*" else 2 for t in pattern.split("."))


def pick(subs, k):
    """The subscription a reaction ("unsubscribe", k) removes: chosen when it
    fires, among every subscription made so far (live or not)."""
    sids = sorted(subs)
    return sids[k % len(sids)]


class MSub:
    def __init__(self, sid, pattern, queue, order, reaction):
        self.sid, self.pattern, self.queue, self.order = sid, pattern, queue, order
        self.reaction = reaction
        self.fired = False
        self.live = True


class MStream:
    def __init__(self, name, patterns, max_events, orders):
        self.name, self.patterns, self.max_events, self.orders = name, patterns, max_events, orders
        self.events = []  # (seq, subject, data), the retained ones
        self.next_seq = 1
        self.stored = 0

    def append(self, subject, data):
        seq = self.next_seq
        self.next_seq += 1
        self.stored += 1
        self.events.append((seq, subject, data))
        if self.max_events and len(self.events) > self.max_events:
            del self.events[0]
        return seq


class Model:
    def __init__(self):
        self.clock = 0  # order of additions to the matcher (subscriptions and stream patterns)
        self.subs = {}
        self.streams = {}
        self.rr = {}  # queue -> counter, while the group has members
        self.members = {}  # queue -> live members
        self.received = {}
        self.nested = []  # return values of publishes made by callbacks
        self.depth = 0
        self.counters = dict(published=0, delivered=0, stored=0, dropped_no_interest=0)

    def _tick(self):
        self.clock += 1
        return self.clock

    def subscribe(self, sid, pattern, queue, reaction=None):
        self.subs[sid] = MSub(sid, pattern, queue, self._tick(), reaction)
        self.received[sid] = []
        if queue is not None:
            if queue not in self.members:
                self.members[queue] = 0
                self.rr[queue] = 0
            self.members[queue] += 1

    def unsubscribe(self, sid):
        s = self.subs[sid]
        if not s.live:
            return
        s.live = False
        if s.queue is not None:
            self.members[s.queue] -= 1
            if not self.members[s.queue]:
                del self.members[s.queue]
                del self.rr[s.queue]

    def add_stream(self, name, pats, max_events):
        """None if created or the same config exists, else 'conflict'."""
        old = self.streams.get(name)
        if old is not None:
            return None if (old.patterns, old.max_events) == (pats, max_events) else "conflict"
        self.streams[name] = MStream(name, list(pats), max_events, [self._tick() for _ in pats])
        return None

    def delete_stream(self, name):
        del self.streams[name]

    def publish(self, subject, data):
        if isinstance(subject, bytes):
            subject = subject.decode()
        hits = [(walk_key(s.pattern), s.order, s) for s in self.subs.values()
                if s.live and matches(s.pattern, subject)]
        hits += [(walk_key(p), o, m) for m in self.streams.values()
                 for p, o in zip(m.patterns, m.orders) if matches(p, subject)]
        self.counters["published"] += 1
        if not hits:
            self.counters["dropped_no_interest"] += 1
            return 0
        hits.sort(key=lambda h: (h[0], h[1]))
        plain, groups = [], {}
        for _, _, t in hits:
            if isinstance(t, MSub) and t.queue is not None:
                groups.setdefault(t.queue, []).append(t)
            else:
                plain.append(t)
        chosen = []
        for q, members in groups.items():
            chosen.append(members[self.rr[q] % len(members)])
            self.rr[q] += 1
        seq, first = 0, None
        stored = set()
        for t in plain:
            if isinstance(t, MStream) and t.name not in stored:
                stored.add(t.name)
                s = t.append(subject, data)
                self.counters["stored"] += 1
                if seq == 0:
                    seq, first = s, t.name
        for t in [t for t in plain if isinstance(t, MSub)] + chosen:
            if not t.live:
                continue
            self.counters["delivered"] += 1
            self.received[t.sid].append((subject, data, seq, first, True))
            if t.reaction is not None and not t.fired and self.depth == 0:
                t.fired = True
                self.depth += 1
                try:
                    self.react(t.reaction)
                finally:
                    self.depth -= 1
        return seq

    def react(self, r):
        if r[0] == "publish":
            self.nested.append(self.publish(r[1], r[2]))
        elif r[0] == "unsubscribe":
            self.unsubscribe(pick(self.subs, r[1]))
        else:
            self.subscribe(r[1], r[2], r[3])


# -- the machine ----------------------------------------------------------------

class RoutingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.flow = None
        self.model = Model()
        self.subs = {}  # sid -> Subscription
        self.received = {}
        self.reactions = {}
        self.fired = set()
        self.depth = 0
        self.nested = []
        self.ids = {}  # data -> set of event ids seen for it
        self.errors = []
        self.next_sid = 0
        self.next_data = 0

    def teardown(self):
        if self.flow is not None:
            self.flow.close()

    def _sid(self):
        self.next_sid += 1
        return self.next_sid

    def _data(self, tag=b"d"):
        self.next_data += 1
        return b"%s%d" % (tag, self.next_data)

    def _on_error(self, exc, sub):
        self.errors.append((repr(exc), getattr(sub, "pattern", sub)))

    # -- the engine side ----------------------------------------------------------

    def _callback(self, sid):
        got = self.received[sid]

        def cb(ev):
            stored_first = ev.stream is None or self.flow.stream(ev.stream).log.last_seq >= ev.seq
            got.append((ev.routing_subject, ev.data, ev.seq, ev.stream, stored_first))
            self.ids.setdefault(ev.data, set()).add(ev.id)
            r = self.reactions.get(sid)
            if r is not None and sid not in self.fired and self.depth == 0:
                self.fired.add(sid)
                self.depth += 1
                try:
                    self._react(r)
                finally:
                    self.depth -= 1

        return cb

    def _subscribe(self, sid, pattern, queue):
        self.received[sid] = []
        self.subs[sid] = self.flow.subscribe(pattern, self._callback(sid), queue=queue)

    def _react(self, r):
        if r[0] == "publish":
            self.nested.append(self.flow.publish(r[1], r[2]))
        elif r[0] == "unsubscribe":
            self.subs[pick(self.subs, r[1])].unsubscribe()
        else:
            self._subscribe(r[1], r[2], r[3])

    # -- rules ------------------------------------------------------------------------

    @initialize(cache_size=st.sampled_from([0, 4, 65536]))
    def open(self, cache_size):
        # a tiny result cache exercises eviction and invalidation
        self.flow = Flow(cache_size=cache_size, error_handler=self._on_error)

    @rule(pattern=patterns(), queue=st.sampled_from(QUEUES), data=st.data())
    def subscribe(self, pattern, queue, data):
        sid = self._sid()
        reaction = None
        if queue is None:  # only plain subscriptions react (see the module docstring)
            kind = data.draw(st.sampled_from([None, None, "publish", "unsubscribe", "subscribe"]))
            if kind == "publish":
                reaction = ("publish", data.draw(subjects), self._data(b"r"))
            elif kind == "unsubscribe":
                reaction = ("unsubscribe", data.draw(st.integers(0, 1 << 16)))
            elif kind == "subscribe":
                reaction = ("subscribe", self._sid(), data.draw(patterns()),
                            data.draw(st.sampled_from(QUEUES)))
        if reaction is not None:
            self.reactions[sid] = reaction
        self.model.subscribe(sid, pattern, queue, reaction)
        self._subscribe(sid, pattern, queue)

    @precondition(lambda self: self.subs)
    @rule(data=st.data())
    def unsubscribe(self, data):
        sid = data.draw(st.sampled_from(sorted(self.subs)))  # live or not: idempotent
        self.model.unsubscribe(sid)
        self.subs[sid].unsubscribe()

    @rule(name=st.sampled_from(STREAMS), pats=st.lists(patterns(), min_size=1, max_size=3),
          max_events=st.sampled_from([0, 0, 3]))
    def add_stream(self, name, pats, max_events):
        outcome = self.model.add_stream(name, pats, max_events)
        if outcome == "conflict":
            with pytest.raises(ValueError, match="exists with another config"):
                self.flow.add_stream(name, pats, Retention(max_events=max_events))
        else:
            s = self.flow.add_stream(name, pats, Retention(max_events=max_events))
            assert s is self.flow.stream(name)

    @rule(name=st.sampled_from(STREAMS))
    def delete_stream(self, name):
        if name in self.model.streams:
            self.model.delete_stream(name)
            self.flow.delete_stream(name)
        else:
            with pytest.raises(KeyError):
                self.flow.delete_stream(name)

    @rule(subject=subjects, how=st.sampled_from(["str", "bytes", "event", "attributes"]))
    def publish(self, subject, how):
        data = self._data()
        want = self.model.publish(subject, data)
        if how == "str":
            got = self.flow.publish(subject, data)
        elif how == "bytes":
            got = self.flow.publish(SUBJECT_BYTES[subject], data)
        elif how == "event":
            got = self.flow.publish(fastflow.Event(subject, data))
        else:
            got = self.flow.publish(subject, data, type="t.x", datacontenttype="text/plain")
        assert got == want

    @rule(subject=st.sampled_from(INVALID))
    def publish_invalid(self, subject):
        with pytest.raises(SubjectError):
            self.flow.publish(subject, self._data())

    @rule(subs=st.lists(subjects, max_size=8), one=st.booleans(),
          how=st.sampled_from(["list", "tuple", "bytes", "attributes"]),
          bad=st.one_of(st.none(), st.tuples(st.integers(0, 8), st.sampled_from(INVALID))))
    def publish_batch(self, subs, one, how, bad):
        if one and subs:
            subs = [subs[0]] * len(subs)
        if bad is not None:
            i = min(bad[0], len(subs))
            subs = subs[:i] + [bad[1]] + subs[i:]
            if one:
                subs = [bad[1]] * len(subs)
                i = 0
        datas = [self._data() for _ in subs]
        n_ok = len(subs) if bad is None else i
        for s, d in zip(subs[:n_ok], datas):
            self.model.publish(s, d)
        arg = subs
        kw = {}
        if how == "tuple":
            arg = tuple(subs)
        elif how == "bytes":
            arg = [s.encode() for s in subs]
        elif how == "attributes":
            kw = dict(type="t.batch")
        if one and subs:
            arg = arg[0]
        if bad is None:
            assert self.flow.publish_batch(arg, datas, **kw) == len(subs)
        else:
            with pytest.raises(SubjectError, match=r"\(batch index {}\)".format(i)):
                self.flow.publish_batch(arg, datas, **kw)

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def agree(self):
        if self.flow is None:
            return
        m = self.model
        assert self.errors == []
        assert self.nested == m.nested
        for sid, got in self.received.items():
            assert got == m.received[sid], (sid, m.subs[sid].pattern, m.subs[sid].queue)
            assert self.subs[sid].stats()["delivered"] == len(got)
        st_ = self.flow.stats()
        assert {k: st_[k] for k in m.counters} == m.counters
        for k in ("dropped_slow_consumer", "dropped_loop", "rejected_by_stream",
                  "callback_errors"):
            assert st_[k] == 0, k
        assert set(self.flow.streams()) == set(m.streams)
        stored = {}
        for name, ms in m.streams.items():
            s = self.flow.stream(name)
            evs = list(s.replay())
            assert [(e.seq, e.routing_subject, e.data) for e in evs] == ms.events, name
            assert all(e.stream == name for e in evs)
            info = s.info()
            assert info["stored"] == ms.stored
            assert info["last_seq"] == ms.next_seq - 1
            for e in evs:
                stored.setdefault(e.data, set()).add(e.id)
        # one id per event, the same in every delivery and stream; distinct events, distinct ids
        ids = {}
        for d in set(self.ids) | set(stored):
            seen = self.ids.get(d, set()) | stored.get(d, set())
            assert len(seen) == 1, (d, seen)
            ids[d] = seen.pop()
        assert len(set(ids.values())) == len(ids)
        live = sum(s.live for s in m.subs.values()) + sum(len(s.patterns)
                                                           for s in m.streams.values())
        assert len(self.flow.matcher) == live


TestRoutingMachine = RoutingMachine.TestCase
TestRoutingMachine.settings = settings(
    max_examples=200, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# -- the pinned semantics, one example each -------------------------------------------

def test_model_matches():
    assert matches("a.*", "a.b") and not matches("a.*", "a.b.c")
    assert matches("a.>", "a.b.c") and not matches("a.>", "a")
    assert matches(">", "a.b") and not matches(">", "$s.a") and not matches("*.a", "$s.a")
    assert matches("$s.>", "$s.a") and matches("$s.*", "$s.a") and matches("a.*", "a.$s")


def test_queue_group_spans_patterns_round_robin_in_match_order():
    with Flow() as flow:
        got = []
        flow.subscribe("a.b", lambda ev: got.append("literal"), queue="q")
        flow.subscribe("a.>", lambda ev: got.append(">"), queue="q")
        flow.subscribe("*.b", lambda ev: got.append("*"), queue="q")
        flow.publish_batch("a.b", [b""] * 6)
        # members in match order: '*.b', 'a.>', 'a.b'
        assert got == ["*", ">", "literal"] * 2
        got.clear()
        flow.publish("a.c")  # one member matches; the counter still advances
        flow.publish("a.b")
        assert got == [">", ">"]  # counter 7 % 3 = 1


def test_publish_returns_the_seq_of_the_first_stream_in_match_order():
    with Flow() as flow:
        s1 = flow.add_stream("S1", ["a.b"])
        s2 = flow.add_stream("S2", ["a.*"])
        flow.publish("a.c")  # S2 only: seq 1 there
        assert flow.publish("a.b") == 2  # 'a.*' comes before 'a.b': S2's seq
        assert len(s1) == 1 and len(s2) == 2
        assert flow.publish("x.y") == 0
        assert flow.stats()["dropped_no_interest"] == 1


def test_callback_changes_apply_from_the_next_event():
    with Flow() as flow:
        got = []
        later = {}

        def first(ev):
            got.append(("first", ev.data))
            later["sub"].unsubscribe()
            flow.subscribe("a.b", lambda ev: got.append(("new", ev.data)))

        flow.subscribe("a.b", first)
        later["sub"] = flow.subscribe("a.b", lambda ev: got.append(("later", ev.data)))
        flow.publish("a.b", b"1")
        assert got == [("first", b"1")]


def test_queue_group_counter_restarts_with_the_group():
    with Flow() as flow:
        got = []
        a = flow.subscribe("a.b", lambda ev: got.append("a"), queue="q")
        b = flow.subscribe("a.b", lambda ev: got.append("b"), queue="q")
        flow.publish("a.b")
        a.unsubscribe()
        b.unsubscribe()  # the group is gone, its counter with it
        flow.subscribe("a.b", lambda ev: got.append("c"), queue="q")
        flow.subscribe("a.b", lambda ev: got.append("d"), queue="q")
        flow.publish("a.b")
        assert got == ["a", "c"]


def test_queue_member_removed_before_its_turn_gets_nothing():
    with Flow() as flow:
        got = []
        subs = {}

        def plain(ev):
            got.append("plain")
            subs["m1"].unsubscribe()

        subs["m1"] = flow.subscribe("a.b", lambda ev: got.append("m1"), queue="q")
        flow.subscribe("a.b", lambda ev: got.append("m2"), queue="q")
        flow.subscribe("a.b", plain)
        flow.publish("a.b", b"1")  # m1 was picked, then removed: no member gets it
        flow.publish("a.b", b"2")
        assert got == ["plain", "plain", "m2"]
        assert flow.stats()["delivered"] == 3
