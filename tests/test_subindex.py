"""The subscription index (src_ext/subindex.pyx, fastflow/_ref/subindex.py):
the core in use against the pure-Python twin and against a brute-force
evaluation of every key, on random keys and random records stored in a
real stream, through add/remove churn; and its refusals."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import _impl
from fastflow._ref.subindex import SubscriptionIndex as TwinIndex

from conftest import CORES
from test_routing_model import matches

INDEXES = [c.SubscriptionIndex for c in CORES.values()]
IDS = list(CORES)

# values that share prefixes, non-ASCII ones (a prefix in characters is one
# in UTF-8 bytes), and long ones
_VALUES = ["a", "a.b", "a.b.c", "ab", "/eu", "/eu/1", "/e", "é", "éx", "日本", "日本.x",
           "x" * 300, "x" * 301, "orders.eu.new", "orders"]
_ROUTING = ["orders.eu.new", "orders.us.old", "other.x", "$sys.a", "日本.x"]
_PATTERNS = ["orders.>", "orders.*.new", "other.x", "*.x", ">", "$sys.>", "日本.*"]

_key = st.one_of(
    st.tuples(st.sampled_from(["exact", "prefix"]), st.sampled_from(["type", "source", "subject"]),
              st.sampled_from(_VALUES)),
    st.tuples(st.just("routing"), st.sampled_from(_PATTERNS)))
_keys = st.one_of(st.none(), st.lists(_key, min_size=0, max_size=4))
# (handle, keys) to add, or (handle, "remove")
_op = st.tuples(st.integers(0, 40), st.one_of(_keys, st.just("remove")))


def _event(routing, type_, source, subject, id_):
    attrs = {"source": source}
    if type_ is not None:           # else the type is the routing subject (not stored)
        attrs["type"] = type_
    if subject is not None:
        attrs["subject"] = subject
    if id_ is not None:             # else a generated id
        attrs["id"] = id_
    return fastflow.Event(routing, b"{}", **attrs)


_events = st.lists(st.builds(
    _event, st.sampled_from(_ROUTING), st.one_of(st.none(), st.sampled_from(_VALUES)),
    st.sampled_from([v for v in _VALUES if v]), st.one_of(st.none(), st.sampled_from(_VALUES)),
    st.one_of(st.none(), st.sampled_from(["e1", "ü"]))), min_size=1, max_size=12)




def _meets(key, ev):
    if key[0] == "routing":
        return matches(key[1], ev.routing_subject)
    v = getattr(ev, key[1])
    if v is None:
        return False
    return v == key[2] if key[0] == "exact" else v.startswith(key[2])


def _stored(events):
    flow = fastflow.Flow()
    flow.add_stream("s", [">"], fastflow.Retention(max_events=1000))
    for ev in events:
        flow.publish(ev)
    lg = flow.stream("s").log
    return lg.read(lg.first_seq, limit=1000)


@settings(max_examples=300, deadline=None)
@given(st.lists(_op, min_size=1, max_size=40), _events)
def test_index_against_twin_and_brute_force(ops, events):
    fast, twin = _impl.SubscriptionIndex(), TwinIndex()
    keys = {}
    for handle, what in ops:
        if what == "remove":
            fast.remove(handle)
            twin.remove(handle)
            keys.pop(handle, None)
        else:
            fast.add(handle, what)
            twin.add(handle, what)
            keys[handle] = what
    assert len(fast) == len(twin) == len(keys)
    assert fast.nkeys == twin.nkeys
    batch = _stored(events)
    evs = _impl.events_from_batch(batch)
    got, twin_got = {}, {}
    for index, out in ((fast, got), (twin, twin_got)):
        rows, handles = index.candidates_batch(batch)
        assert len(rows) == len(handles) and rows == sorted(rows)
        pairs = list(zip(rows, handles))
        assert len(pairs) == len(set(pairs))    # each candidate once
        for i, h in pairs:
            out.setdefault(i, set()).add(h)
    assert got == twin_got
    for i, ev in enumerate(evs):
        want = {h for h, ks in keys.items() if ks is None or any(_meets(k, ev) for k in ks)}
        assert got.get(i, set()) == want, (i, ev, keys)
        rec = ev.encode()
        assert set(fast.candidates(ev.routing_subject, rec)) == want
        assert set(twin.candidates(ev.routing_subject, rec)) == want


def test_the_type_can_be_the_routing_subject():
    batch = _stored([_event("orders.eu.new", None, "/s", None, None),
                     _event("orders.eu.new", "t", "/s", "orders.eu.new", None)])
    for index in (_impl.SubscriptionIndex(), TwinIndex()):
        index.add(1, [("exact", "type", "orders.eu.new")])
        index.add(2, [("prefix", "type", "orders.")])
        index.add(3, [("exact", "subject", "orders.eu.new")])
        assert sorted(zip(*index.candidates_batch(batch))) == [(0, 1), (0, 2), (1, 3)]


def test_a_subject_in_a_rest_block_of_every_shape():
    """The subject in an attribute block the fast reader does not vouch for
    (other msgpack forms before it, several extensions) is still found."""
    events = [_event("a.b", "t", "/s", "日本", None)]
    events.append(fastflow.Event("a.b", b"", type="t", source="/s", subject="s1",
                                 time="2020-01-01T00:00:00Z", big=2 ** 31 - 1, neg=-5,
                                 flag=True, raw=b"\x00\x01", text="ü" * 40))
    events.append(fastflow.Event("a.b", b"", type="t", source="/s", dataschema="x" * 300,
                                 subject="s2"))
    batch = _stored(events)
    for index in (_impl.SubscriptionIndex(), TwinIndex()):
        index.add(1, [("exact", "subject", "日本")])
        index.add(2, [("exact", "subject", "s1")])
        index.add(3, [("prefix", "subject", "s")])
        assert sorted(zip(*index.candidates_batch(batch))) == [(0, 1), (1, 2), (1, 3), (2, 3)]


@pytest.mark.parametrize("cls", INDEXES + [TwinIndex], ids=IDS + ["twin"])
def test_removing_every_handle_leaves_nothing(cls):
    index = cls()
    for i in range(5000):
        index.add(i, [("exact", "type", "t.{}".format(i)), ("prefix", "source", "/s/{}".format(
            i % 50)), ("routing", "a.{}.>".format(i % 7))])
    index.add(5000, None)
    assert len(index) == 5001 and index.nkeys == 5000 + 50 + 5000
    for i in range(5001):
        index.remove(i)
    assert len(index) == 0 and index.nkeys == 0
    index.remove(3)                             # not held: nothing happens


@pytest.mark.parametrize("cls", INDEXES + [TwinIndex], ids=IDS + ["twin"])
def test_bad_keys_and_handles_are_refused_and_change_nothing(cls):
    index = cls()
    index.add(1, [("exact", "type", "a")])
    for keys, err, match in [
            ([("exact", "kind", "x")], ValueError, r"invalid index key \('exact', 'kind', 'x'\)"),
            ([("suffix", "type", "x")], ValueError, "expected \\('exact' or 'prefix'"),
            ([("exact", "type", "")], ValueError, "the value must be a non-empty str"),
            ([("exact", "type", 5)], ValueError, "the value must be a non-empty str"),
            ([("exact", "type", "x" * 70000)], ValueError,
             "a value of 70000 bytes, the limit is 65535"),
            ([("routing", "a..b")], fastflow.SubjectError, "empty token"),
            (["type"], TypeError, "index key must be a tuple, not str")]:
        with pytest.raises(err, match=match):
            index.add(1, [("exact", "source", "/s")] + keys)
        assert len(index) == 1 and index.nkeys == 1
    for handle, err, match in [(-1, ValueError, "handle -1 out of range: handles are 0 to "
                                               "16777215"),
                               (1 << 24, ValueError, "out of range"),
                               ("1", TypeError, "handle must be an int, not str"),
                               (True, TypeError, "handle must be an int, not bool")]:
        with pytest.raises(err, match=match):
            index.add(handle, None)
    assert len(index) == 1


def test_events_only_for_the_rows():
    batch = _stored([_event("a.{}".format(i), None, "/s", None, None) for i in range(6)])
    every = _impl.events_from_batch(batch, "s")
    some = _impl.events_from_batch(batch, "s", None, [4, 1, 4])
    assert [e is not None for e in some] == [False, True, False, False, True, False]
    assert some[1] == every[1] and some[4].routing_subject == "a.4" and some[4].stream == "s"
    assert _impl.events_from_batch(batch, "s", None, []) == [None] * 6
    with pytest.raises(IndexError, match="batch index 6 out of range for length 6"):
        _impl.events_from_batch(batch, "s", None, [6])


# -- sinks: candidates the index publishes itself -------------------------------------------


def _sink_events():
    evs = [_event("orders.eu.new", None, "/s", None, None),        # type = the routing subject
           _event("orders.us.old", "t", "/s", "x", "e1"),
           fastflow.Event("other.x", b"data", type="t", source="/s", amount=5)]
    return evs


@pytest.mark.parametrize("cls", INDEXES + [TwinIndex], ids=IDS + ["twin"])
def test_sinks_are_published_by_the_index(cls):
    """``route_batch`` publishes the candidates of handles with a sink on
    their subject (the type written out when it was the routing subject,
    one hop more with ``hop``) and returns the others; counts per sink."""
    batch = _stored(_sink_events())
    flow = fastflow.Flow()
    got = []
    flow.subscribe("out.>", lambda ev: got.append(ev))
    index = cls()
    index.add(1, [("exact", "type", "t")])
    index.add(2, [("routing", "orders.>")])
    index.add(3, None)
    index.set_sink(1, "out.one")
    index.set_sink(2, b"out.two", hop=True)
    rows, handles, failed = index.route_batch(batch, flow)
    assert list(zip(rows, handles)) == [(0, 3), (1, 3), (2, 3)] and failed == []
    assert [(e.routing_subject, e.type, e.id if e.id == "e1" else "*", e.hops, e.data)
            for e in got] == [
        ("out.two", "orders.eu.new", "*", 1, b"{}"),
        ("out.one", "t", "e1", 0, b"{}"), ("out.two", "t", "e1", 1, b"{}"),
        ("out.one", "t", "*", 0, b"data")]
    assert got[3].extensions["amount"] == 5 and got[1].subject == "x"
    assert [index.sink_delivered(h) for h in (1, 2, 3, 4)] == [2, 2, 0, 0]
    # a sink taken away: its candidates come back; the count stays until removal
    index.set_sink(2, None)
    rows, handles, _ = index.route_batch(batch, flow)
    assert sorted(zip(rows, handles)) == [(0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert index.sink_delivered(2) == 2 and len(got) == 6
    index.remove(1)
    assert index.sink_delivered(1) == 0
    index.add(1, [("exact", "type", "t")])          # back without its sink
    assert (1, 1) in set(zip(*index.route_batch(batch, flow)[:2]))


@pytest.mark.parametrize("cls", INDEXES + [TwinIndex], ids=IDS + ["twin"])
def test_a_sink_that_fails_is_turned_off_and_its_events_come_back(cls):
    """A publish that raises (a full stream that refuses) turns the sink
    off: that event and the later ones of its handle are returned, in
    order, with the reason once; other sinks go on."""
    batch = _stored([_event("a.{}".format(i), "t", "/s", None, None) for i in range(5)])
    flow = fastflow.Flow()
    flow.add_stream("full", ["out.one"], fastflow.Retention(max_events=2, discard="new"))
    got = []
    flow.subscribe("out.two", lambda ev: got.append(ev))
    index = cls()
    index.add(1, [("exact", "type", "t")])
    index.add(2, [("exact", "type", "t")])
    index.set_sink(1, "out.one")
    index.set_sink(2, "out.two")
    rows, handles, failed = index.route_batch(batch, flow)
    assert list(zip(rows, handles)) == [(2, 1), (3, 1), (4, 1)]
    assert [h for h, _ in failed] == [1] and "full" in failed[0][1].lower()
    assert index.sink_delivered(1) == 2 and index.sink_delivered(2) == 5 and len(got) == 5


@pytest.mark.parametrize("cls", INDEXES + [TwinIndex], ids=IDS + ["twin"])
def test_sink_refusals(cls):
    index = cls()
    with pytest.raises(KeyError, match="handle 7 is not in the index"):
        index.set_sink(7, "a")
    index.add(7, None)
    for subject, err in (("a.*", fastflow.SubjectError), ("a..b", fastflow.SubjectError),
                         ("a b", fastflow.SubjectError), (5, TypeError)):
        with pytest.raises(err):
            index.set_sink(7, subject)
    with pytest.raises(TypeError):
        index.route_batch(_stored([_event("a", "t", "/s", None, None)]), None)


@pytest.mark.parametrize("name", IDS)
def test_sink_record_against_the_twin(name):
    sink_record = CORES[name].sink_record
    from fastflow._ref.subindex import sink_record as twin
    for ev in _sink_events() + [fastflow.Event("a", b"", source="/s", ffhops=0xFFFF)]:
        rec = ev.encode()
        for hop in (False, True):
            out = sink_record(ev.routing_subject, rec, hop)
            assert out == twin(ev.routing_subject, rec, hop)
            back = fastflow.Event.decode("elsewhere", out)
            assert back.type == ev.type and back.id == ev.id and back.data == ev.data
            assert back.hops == min(ev.hops + hop, 0xFFFF)
    for bad, match in ((b"", "not an event record"),
                       (b"\x01\x00\x00\x00\x05" + bytes(11), "truncated"),
                       (rec[:-1] if len(rec) > 17 else b"\x02" * 20, None)):
        with pytest.raises(fastflow.FastflowError, match=match):
            sink_record("a", bad)
        with pytest.raises(fastflow.FastflowError, match=match):
            twin("a", bad)
    with pytest.raises(fastflow.FastflowError, match="without a routing subject"):
        sink_record(None, fastflow.Event("a", b"", source="/s").encode())


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80), st.sampled_from(["a.b", "x", None]), st.booleans(), st.data())
def test_sink_record_on_hostile_bytes(raw, subject, hop, data):
    """Random and damaged records (a valid one cut or with bytes flipped):
    every core gives the twin's bytes or the twin's error, never a crash
    or a read past the end."""
    from fastflow._ref.subindex import sink_record as twin

    if data.draw(st.booleans()):
        typ = data.draw(st.sampled_from([None, "t", "é"]))      # None: the routing subject
        attrs = {"type": typ} if typ is not None else {}
        rec = bytearray(fastflow.Event("a.b", raw, source="/s", **attrs).encode())
        for _ in range(data.draw(st.integers(0, 3))):
            rec[data.draw(st.integers(0, len(rec) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(rec[:data.draw(st.integers(0, len(rec)))])
    try:
        want = twin(subject, raw, hop)
    except (fastflow.FastflowError, ValueError) as exc:
        want = type(exc)
    for core in CORES.values():
        try:
            got = core.sink_record(subject, raw, hop)
        except (fastflow.FastflowError, ValueError) as exc:
            got = type(exc)
        assert got == want
