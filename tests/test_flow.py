"""The engine API: fastflow.Flow, Stream, Retention, Subscription.

Publish/subscribe (wildcards, $-subjects, attributes, batches), queue
groups, unsubscribe during delivery, callback errors, bounded queues
(drop_oldest / drop_new / cut), asyncio (standard loop and uvloop),
streams (capture, replay, retention, purge, delete), the loop breaker,
restart from a data_dir and the stats() snapshot.  See docs/engine.md.
"""

import asyncio
import datetime as dt
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import types

import pytest

import fastflow
import fastflow.flow as flow_module
from fastflow import (
    Event,
    EventError,
    EventTooLarge,
    FastflowError,
    Flow,
    LogFullError,
    Retention,
    SlowConsumerError,
    Stream,
    SubjectError,
    Subscription,
)

UTC = dt.timezone.utc
HEX32 = re.compile(r"[0-9a-f]{32}\Z")
OVERHEAD = 64  # bytes a queued event counts beyond its data (docs/engine.md)
# record bytes before the data of a publish with the defaults: 16 header +
# 16 generated id + len("/fastflow")
RECORD_OVERHEAD = 16 + 16 + len("/fastflow")


def datas(evs):
    return [e.data for e in evs]


def subjects(evs):
    return [e.routing_subject for e in evs]


def collect(flow, pattern, **kw):
    got = []
    sub = flow.subscribe(pattern, got.append, **kw)
    return got, sub


# -- publish / subscribe -------------------------------------------------------------------


def test_exact_and_wildcard_patterns():
    f = Flow()
    exact, _ = collect(f, "orders.eu.created")
    star, _ = collect(f, "orders.*.created")
    gt, _ = collect(f, "orders.>")
    lead, _ = collect(f, "*.eu.*")
    everything, _ = collect(f, ">")
    single, _ = collect(f, "*")
    pubs = ["orders.eu.created", "orders.us.created", "orders.eu.paid", "orders",
            "orders.eu.created.late", "users.eu.x", "ping"]
    for s in pubs:
        f.publish(s, s.encode())
    assert subjects(exact) == ["orders.eu.created"]
    assert subjects(star) == ["orders.eu.created", "orders.us.created"]
    assert subjects(gt) == ["orders.eu.created", "orders.us.created", "orders.eu.paid",
                            "orders.eu.created.late"]
    assert subjects(lead) == ["orders.eu.created", "orders.eu.paid", "users.eu.x"]
    assert subjects(everything) == pubs
    assert subjects(single) == ["orders", "ping"]
    assert [e.data for e in everything] == [s.encode() for s in pubs]
    assert f.stats()["dropped_no_interest"] == 0
    assert f.stats()["published"] == len(pubs)
    assert f.stats()["delivered"] == 1 + 2 + 4 + 3 + 7 + 2


def test_dollar_subjects_need_explicit_patterns():
    f = Flow()
    gt, _ = collect(f, ">")
    star, _ = collect(f, "*.advisory.x")
    star1, _ = collect(f, "*")
    sys_gt, _ = collect(f, "$SYS.>")
    sys_star, _ = collect(f, "$SYS.*.x")
    st = f.add_stream("all", ">")
    assert f.publish("$SYS.advisory.x", b"1") == 0
    assert f.publish("$X", b"2") == 0
    assert gt == [] and star == [] and star1 == []
    assert subjects(sys_gt) == ["$SYS.advisory.x"]
    assert subjects(sys_star) == ["$SYS.advisory.x"]
    assert len(st) == 0
    s = f.stats()
    assert s["dropped_no_interest"] == 1       # "$X": nobody
    assert s["stored"] == 0
    # a '$' in a later token is an ordinary character
    later, _ = collect(f, "a.*")
    f.publish("a.$b", b"")
    assert subjects(later) == ["a.$b"]


def test_publish_returns_seq_of_capturing_stream_or_zero():
    f = Flow()
    got, _ = collect(f, ">")
    assert f.publish("x.1", b"") == 0
    assert got[-1].seq == 0 and got[-1].stream is None
    a = f.add_stream("A", "x.>")
    assert [f.publish("x.1", b"") for _ in range(3)] == [1, 2, 3]
    assert (got[-1].seq, got[-1].stream) == (3, "A")
    b = f.add_stream("B", "x.2")
    # x.2 goes to A (seq 4) and to B (seq 1): the return is the seq in the
    # first stream that stored it, and the delivered event says which
    seq = f.publish("x.2", b"two")
    ev = got[-1]
    assert (ev.stream, seq) in (("A", 4), ("B", 1))
    assert ev.seq == seq
    assert f.stream(ev.stream).get(seq).data == b"two"
    assert a.info()["last_seq"] == 4 and b.info()["last_seq"] == 1
    assert f.publish("y", b"") == 0            # no stream, no subscriber


def test_no_interest_is_counted():
    f = Flow()
    assert f.publish("nobody.home", b"x") == 0
    assert f.publish("nobody.home", b"x", type="t") == 0
    s = f.stats()
    assert (s["published"], s["dropped_no_interest"], s["delivered"], s["stored"]) == (2, 2, 0, 0)
    got, sub = collect(f, "nobody.*")
    f.publish("nobody.home", b"x")
    sub.unsubscribe()
    f.publish("nobody.home", b"x")
    s = f.stats()
    assert (s["published"], s["dropped_no_interest"], s["delivered"]) == (4, 3, 1)
    assert len(got) == 1


def test_publish_attributes_are_on_the_delivered_and_stored_event():
    f = Flow()
    got, _ = collect(f, "orders.>")
    st = f.add_stream("S", "orders.>")
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    seq = f.publish("orders.eu", b"payload", type="com.example.order", subject="order-7",
                    time="2024-01-01T00:00:00.5Z", source="/shop", datacontenttype="text/plain",
                    dataschema="https://example.com/s", region="eu", count=-7, urgent=True,
                    blob=bytearray(b"\x00\x01"), when=when, gone=None)
    assert seq == 1
    (ev,) = got
    assert HEX32.match(ev.id)
    expected = {"specversion": "1.0", "id": ev.id, "source": "/shop",
                "type": "com.example.order", "subject": "order-7",
                "time": "2024-01-01T00:00:00.5Z", "datacontenttype": "text/plain",
                "dataschema": "https://example.com/s", "region": "eu", "count": -7,
                "urgent": True, "blob": b"\x00\x01", "when": "2024-01-02T03:04:05.123456Z"}
    attrs = ev.attributes()
    trace = attrs.pop("fftrace")
    assert re.fullmatch(r"[0-9a-f]{8}", trace)
    assert attrs.pop("ffhops") == 0
    assert attrs == expected
    assert (ev.type, ev.subject, ev.time, ev.source) == ("com.example.order", "order-7",
                                                         "2024-01-01T00:00:00.5Z", "/shop")
    assert (ev.datacontenttype, ev.dataschema, ev.specversion) == (
        "text/plain", "https://example.com/s", "1.0")
    assert ev.extensions == {"region": "eu", "count": -7, "urgent": True, "blob": b"\x00\x01",
                             "when": "2024-01-02T03:04:05.123456Z", "ffhops": 0,
                             "fftrace": trace}
    assert ev["region"] == "eu" and ev.get("missing", 42) == 42
    with pytest.raises(KeyError, match="missing"):
        ev["missing"]
    assert (ev.routing_subject, ev.data, ev.seq, ev.stream, ev.hops) == (
        "orders.eu", b"payload", 1, "S", 0)
    # the stored copy has the same attributes (the lineage is added on delivery)
    stored = st.get(1)
    assert stored.attributes() == expected
    assert stored.data == b"payload" and stored.ts == ev.ts
    # a tz-aware datetime with an offset, and the defaults
    f.publish("orders.us", b"", time=dt.datetime(2024, 1, 1, tzinfo=dt.timezone(
        dt.timedelta(hours=2))))
    assert got[-1].time == "2024-01-01T00:00:00+02:00"
    f.publish("orders.x", b"")
    d = got[-1]
    assert (d.type, d.source, d.time, d.subject, d.datacontenttype) == (
        "orders.x", "/fastflow", None, None, None)
    assert d.id != ev.id and HEX32.match(d.id)
    assert Flow(source="/custom").source == "/custom"


def test_flow_source_is_the_default_source():
    f = Flow(source="/mine")
    got, _ = collect(f, "a")
    f.publish("a", b"")
    f.publish("a", b"", type="t")
    f.publish("a", b"", source="/theirs")
    assert [e.source for e in got] == ["/mine", "/mine", "/theirs"]


@pytest.mark.parametrize("attrs, name", [
    ({"Foo": 1}, "Foo"),
    ({"foo_bar": 1}, "foo_bar"),
    ({"time": "yesterday"}, "time"),
    ({"time": dt.datetime(2024, 1, 1)}, "time"),
    ({"time": 5}, "time"),
    ({"specversion": "0.3"}, "specversion"),
    ({"ext": 2 ** 31}, "ext"),
    ({"ext": -(2 ** 31) - 1}, "ext"),
    ({"ext": 1.5}, "ext"),
    ({"ext": [1]}, "ext"),
    ({"type": ""}, "type"),
    ({"type": 5}, "type"),
    ({"id": ""}, "id"),
    ({"source": 3}, "source"),
    ({"subject": 1}, "subject"),
    ({"datacontenttype": b"x"}, "datacontenttype"),
    ({"ffhops": -1}, "ffhops"),
    ({"ffhops": 65536}, "ffhops"),
    ({"data_base64": "eA=="}, "data_base64"),
])
def test_invalid_attributes_raise_naming_it_and_nothing_happens(attrs, name):
    f = Flow()
    got, _ = collect(f, ">")
    st = f.add_stream("S", ">")
    with pytest.raises(EventError, match=r"^invalid event attribute {!r}".format(name)) as ei:
        f.publish("a.b", b"x", **attrs)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FastflowError)
    with pytest.raises(EventError, match=r"^invalid event attribute {!r}".format(name)):
        f.publish_batch("a.b", [b"1", b"2"], **attrs)
    assert got == [] and len(st) == 0
    s = f.stats()
    assert (s["published"], s["delivered"], s["stored"]) == (0, 0, 0)


@pytest.mark.parametrize("subject, message", [
    ("", "empty subject"),
    ("a..b", "empty token at position 2"),
    (".a", "empty token at position 1"),
    ("a.", "empty token at position 2"),
    ("a.*", "wildcard '*' at position 2"),
    ("a.>", "wildcard '>' at position 2"),
    ("*", "wildcard '*' at position 1"),
    ("a b", "character ' ' not allowed"),
    ("a\tb", "not allowed"),
    ("a." + "x" * 1024, "limit"),
])
def test_invalid_subjects_raise_subject_error(subject, message):
    f = Flow()
    got, _ = collect(f, ">")
    st = f.add_stream("S", ">")
    for pub in (lambda: f.publish(subject, b""), lambda: f.publish(subject, b"", type="t"),
                lambda: f.publish(subject.encode(), b"")):
        with pytest.raises(SubjectError, match=re.escape(message)) as ei:
            pub()
        assert isinstance(ei.value, ValueError)
    assert got == [] and len(st) == 0


def test_subject_must_be_str_or_bytes():
    f = Flow()
    for bad in (5, None, ["a"]):
        with pytest.raises(TypeError, match="subject must be str or bytes"):
            f.publish(bad, b"")


def test_non_utf8_bytes_subject_raises_subject_error():
    f = Flow()
    got, _ = collect(f, ">")
    with pytest.raises(SubjectError):
        f.publish(b"a.\xff", b"")
    assert got == []


def test_data_forms():
    f = Flow()
    got, _ = collect(f, "d")
    f.publish("d")
    f.publish("d", data=b"kw")
    f.publish("d", bytearray(b"ba"))
    f.publish("d", memoryview(b"xmvx")[1:3])
    f.publish("d", data=bytearray(b"kwba"), type="t")
    f.publish("d", None)
    assert datas(got) == [b"", b"kw", b"ba", b"mv", b"kwba", b""]
    assert all(type(e.data) is bytes for e in got)
    with pytest.raises(EventError, match="expected bytes, got str"):
        f.publish("d", "text")
    with pytest.raises(EventError, match="expected bytes, got str"):
        f.publish("d", data="text", type="t")
    with pytest.raises(EventError, match="bytes-like"):
        f.publish("d", 12)
    with pytest.raises(TypeError, match="data both"):
        f.publish("d", b"x", data=b"y")
    with pytest.raises(TypeError):
        f.publish()
    assert len(got) == 6


def test_publish_an_event():
    f = Flow()
    got, _ = collect(f, "ev.>")
    st = f.add_stream("S", "ev.>")
    e = Event("ev.one", b"d", type="T", id="my-id", source="/src", region="eu")
    assert f.publish(e) == 1
    (d,) = got
    assert (d.id, d.source, d.type, d.data, d.seq, d.stream) == ("my-id", "/src", "T", b"d", 1, "S")
    assert d.routing_subject == "ev.one" and d.hops == 0
    assert d.extensions["region"] == "eu"
    s = st.get(1)
    assert (s.id, s.source, s.type, s.data, s.routing_subject) == ("my-id", "/src", "T", b"d",
                                                                   "ev.one")
    with pytest.raises(TypeError, match="derive"):
        f.publish(Event("ev.two", b""), b"x")
    with pytest.raises(TypeError, match="derive"):
        f.publish(Event("ev.two", b""), type="x")
    with pytest.raises(EventError, match="routing subject"):
        f.publish(Event(data=b"x", type="t"))
    assert len(got) == 1 and len(st) == 1


def test_publish_batch_one_subject():
    f = Flow()
    got, _ = collect(f, "b.>")
    st = f.add_stream("S", "b.>")
    assert f.publish_batch("b.1", [b"1", bytearray(b"2"), memoryview(b"3")]) == 3
    assert [(e.routing_subject, e.data, e.seq) for e in got] == [
        ("b.1", b"1", 1), ("b.1", b"2", 2), ("b.1", b"3", 3)]
    assert len({e.id for e in got}) == 3
    assert f.publish_batch("b.1", []) == 0
    assert f.publish_batch(b"b.2", (b"x" for _ in range(2))) == 2
    assert subjects(got[3:]) == ["b.2", "b.2"]
    assert len(st) == 5
    s = f.stats()
    assert (s["published"], s["delivered"], s["stored"]) == (5, 5, 5)


def test_publish_batch_subjects_and_attributes():
    f = Flow()
    got, _ = collect(f, "b.>")
    n = f.publish_batch(["b.1", b"b.2", "b.1"], [b"1", b"2", b"3"], type="tt", region="eu",
                        source="/batch")
    assert n == 3
    assert [(e.routing_subject, e.data, e.type, e.source, e.extensions["region"])
            for e in got] == [("b.1", b"1", "tt", "/batch", "eu"),
                              ("b.2", b"2", "tt", "/batch", "eu"),
                              ("b.1", b"3", "tt", "/batch", "eu")]
    ids = [e.id for e in got]
    assert len(set(ids)) == 3 and all(HEX32.match(i) for i in ids)
    assert f.publish_batch("b.1", [b"x"], id="only-one") == 1
    assert got[-1].id == "only-one"
    with pytest.raises(EventError, match="'id': one id for 2 events"):
        f.publish_batch("b.1", [b"x", b"y"], id="same")
    with pytest.raises(ValueError, match="differ in length: 1 and 2"):
        f.publish_batch(["b.1"], [b"1", b"2"])
    with pytest.raises(ValueError, match="differ in length: 3 and 2"):
        f.publish_batch(("b.1", "b.2", "b.3"), [b"1", b"2"], type="t")
    with pytest.raises(EventError, match="expected bytes, got str"):
        f.publish_batch("b.1", ["s"])
    assert len(got) == 4


@pytest.mark.parametrize("attrs", [{}, {"type": "t"}], ids=["plain", "attributes"])
def test_publish_batch_invalid_subject_names_index_and_keeps_the_earlier(attrs):
    f = Flow()
    got, _ = collect(f, "b.>")
    st = f.add_stream("S", "b.>")
    with pytest.raises(SubjectError, match=r"invalid subject 'b\.\*'.*\(batch index 2\)$"):
        f.publish_batch(["b.1", "b.2", "b.*", "b.4"], [b"1", b"2", b"3", b"4"], **attrs)
    assert [(e.routing_subject, e.data, e.seq) for e in got] == [("b.1", b"1", 1),
                                                                 ("b.2", b"2", 2)]
    assert [e.seq for e in st.replay()] == [1, 2]
    with pytest.raises(SubjectError, match=r"empty subject \(batch index 0\)$"):
        f.publish_batch(["", "b.9"], [b"1", b"2"], **attrs)
    assert len(got) == 2


def test_publish_batch_matches_again_after_a_subscription_change():
    # a run of one subject is matched once, while no subscription changes
    f = Flow()
    late = []

    def first(ev):
        if ev.data == b"2":
            f.subscribe("r", late.append)

    f.subscribe("r", first)
    f.publish_batch("r", [b"1", b"2", b"3", b"4"])
    assert datas(late) == [b"3", b"4"]


def _run_vs_calls(setup, payloads):
    """The same flow fed by one publish_batch and by publish() calls: the
    events the callbacks saw, the streams' records and the counters."""
    out = []
    for batched in (True, False):
        f = Flow()
        seen = setup(f)
        if batched:
            assert f.publish_batch("run.a", payloads) == len(payloads)
        else:
            for p in payloads:
                f.publish("run.a", p)
        st = f.stream("S")
        recs = [(r.seq, r.subject, bytes(r.data)[32:]) for b in st.log.replay() for r in
                [st.log.get(q) for q in b.seqs]]
        events = [(e.routing_subject, e.data, e.seq, e.stream, e.source, e.type) for e in seen]
        stats = {k: v for k, v in f.stats().items() if isinstance(v, int)}
        out.append((events, recs, stats, [e.id for e in seen]))
        f.close()
    (e1, r1, s1, ids1), (e2, r2, s2, ids2) = out
    assert e1 == e2 and r1 == r2 and s1 == s2
    assert len(set(ids1)) == len(ids1)
    return out[0]


def test_publish_batch_run_equals_publish_calls():
    # the run path (one subject, default attributes, streams in memory and
    # callbacks) stores and delivers exactly what one publish() per event does
    def setup(f):
        seen = []
        f.add_stream("S", "run.>", retention=fastflow.Retention(max_events=7, max_age=3600))
        f.add_stream("T", ["run.a", "run.*"])
        f.subscribe("run.*", seen.append)
        f.subscribe("run.>", lambda ev: None)
        return seen

    events, recs, stats, _ = _run_vs_calls(setup, [bytes([i]) * i for i in range(20)])
    assert [r[0] for r in recs] == list(range(14, 21))
    assert [e[2] for e in events] == list(range(1, 21)) and events[0][3] == "S"
    assert stats["stored"] == 40 and stats["delivered"] == 40


def test_publish_batch_run_with_nested_publishes_and_changes():
    # a callback that publishes into the same stream, subscribes and
    # unsubscribes mid-batch: the order of a loop of publish() calls
    def setup(f):
        seen = []
        f.add_stream("S", ">")
        subs = []

        def cb(ev):
            seen.append(ev)
            if ev.data == b"\x03":
                f.publish("nested.x", b"n")
            if ev.data == b"\x05":
                subs.append(f.subscribe("run.a", lambda ev: None))
            if ev.data == b"\x08":
                subs[0].unsubscribe()

        f.subscribe("run.a", cb)
        return seen

    events, recs, _, _ = _run_vs_calls(setup, [bytes([i]) for i in range(10)])
    assert [r[1] for r in recs].index("nested.x") == 4


def test_publish_batch_run_leaves_exported_records_alone():
    if not fastflow.COMPILED and sys.version_info < (3, 12):
        pytest.skip("the reference cannot export a buffer on Python < 3.12")
    f = Flow()
    st = f.add_stream("S", "run.>", retention=fastflow.Retention(max_events=3))
    f.subscribe("run.>", lambda ev: None)
    f.publish_batch("run.a", [b"1", b"2", b"3"])
    view = memoryview(st.log.get(1))
    with pytest.raises(BufferError):
        f.publish_batch("run.a", [b"4", b"5"])
    view.release()
    f.publish_batch("run.a", [b"4", b"5"])
    assert [e.data for e in st.replay()] == [b"3", b"4", b"5"]


def test_publish_batch_run_notifies_push_consumers():
    f = Flow()
    st = f.add_stream("S", "run.>")
    got = []
    st.consumer("c", callback=lambda ev: (got.append(ev.seq), ev.ack()))
    f.subscribe("run.>", lambda ev: None)
    f.publish_batch("run.a", [b"1", b"2", b"3"])
    assert got == [1, 2, 3]


# -- queue groups ---------------------------------------------------------------------------


def test_queue_group_round_robin_and_plain_subscribers_get_all():
    f = Flow()
    members = [[] for _ in range(3)]
    for m in members:
        f.subscribe("jobs.*", m.append, queue="workers")
    plain, _ = collect(f, "jobs.*")
    for i in range(30):
        f.publish("jobs.x", bytes([i]))
    assert [len(m) for m in members] == [10, 10, 10]
    owner = {}
    for k, m in enumerate(members):
        for e in m:
            assert e.data[0] not in owner
            owner[e.data[0]] = k
    assert sorted(owner) == list(range(30))
    # round robin: the member of event i is the member of event i % 3
    assert [owner[i] for i in range(30)] == [owner[i % 3] for i in range(30)]
    assert sorted(owner[i] for i in range(3)) == [0, 1, 2]
    assert datas(plain) == [bytes([i]) for i in range(30)]
    assert f.stats()["delivered"] == 60


def test_queue_groups_are_independent_and_members_can_leave():
    f = Flow()
    g1 = [[], []]
    subs1 = [f.subscribe("t", g1[i].append, queue="g1") for i in range(2)]
    g2, _ = collect(f, "t", queue="g2")
    for i in range(4):
        f.publish("t", bytes([i]))
    assert sorted(datas(g1[0] + g1[1])) == [bytes([i]) for i in range(4)]
    assert len(g1[0]) == len(g1[1]) == 2
    assert datas(g2) == [bytes([i]) for i in range(4)]
    subs1[0].unsubscribe()
    for i in range(4, 8):
        f.publish("t", bytes([i]))
    assert datas(g1[1])[-4:] == [bytes([i]) for i in range(4, 8)]
    assert len(g1[0]) == 2


def test_queue_group_of_queued_subscriptions():
    f = Flow()
    a = f.subscribe("q", queue="g")
    b = f.subscribe("q", queue="g")
    for i in range(6):
        f.publish("q", bytes([i]))
    pa, pb = a.poll(), b.poll()
    assert len(pa) == len(pb) == 3
    assert sorted(datas(pa + pb)) == [bytes([i]) for i in range(6)]
    assert a.stats()["queue"] == "g"


# -- unsubscribe ------------------------------------------------------------------------------


def test_unsubscribe_and_context_manager():
    f = Flow()
    got, sub = collect(f, "u")
    f.publish("u", b"1")
    sub.unsubscribe()
    sub.unsubscribe()                          # idempotent
    assert sub.closed
    assert f.publish("u", b"2") == 0
    assert datas(got) == [b"1"]
    assert f.stats()["dropped_no_interest"] == 1
    assert f.stats()["subscriptions"] == []
    with f.subscribe("w") as q:
        f.publish("w", b"a")
        assert not q.closed
    assert q.closed
    f.publish("w", b"b")
    # queued events stay readable after unsubscribe
    assert datas(q.poll()) == [b"a"]
    assert q.poll() == []
    assert isinstance(q, Subscription) and q.pattern == "w"


def test_callbacks_unsubscribing_during_delivery():
    f = Flow()
    got = []
    subs = {}

    def make(name, other):
        def cb(ev):
            got.append((name, ev.data))
            subs[other].unsubscribe()
        return cb

    subs["a"] = f.subscribe("u", make("a", "b"))
    subs["b"] = f.subscribe("u", make("b", "a"))
    f.publish("u", b"1")
    # whichever ran first removed the other before it got the event
    assert len(got) == 1
    survivor = got[0][0]
    f.publish("u", b"2")
    assert got == [(survivor, b"1"), (survivor, b"2")]
    assert subs["b" if survivor == "a" else "a"].closed


def test_callback_unsubscribing_itself():
    f = Flow()
    got = []

    def once(ev):
        got.append(ev.data)
        sub.unsubscribe()

    sub = f.subscribe("once", once)
    f.publish("once", b"1")
    assert f.publish("once", b"2") == 0
    assert got == [b"1"]
    assert sub.stats()["delivered"] == 1 and sub.closed


def test_callback_subscribing_during_delivery():
    f = Flow()
    got = []
    added = []

    def cb(ev):
        got.append(("old", ev.data))
        if not added:
            added.append(f.subscribe("v", lambda e: got.append(("new", e.data))))

    f.subscribe("v", cb)
    f.publish("v", b"1")
    assert got == [("old", b"1")]                # not to the one added during delivery
    f.publish("v", b"2")
    assert sorted(got[1:]) == [("new", b"2"), ("old", b"2")]


def test_callback_publishing_nested():
    f = Flow()
    got, _ = collect(f, "out")
    f.subscribe("in", lambda e: f.publish("out", e.data + b"!"))
    f.publish("in", b"x")
    assert datas(got) == [b"x!"]
    assert f.stats()["published"] == 2


# -- callback errors ----------------------------------------------------------------------------


def test_callback_errors_go_to_the_error_handler():
    errors = []
    f = Flow(error_handler=lambda exc, sub: errors.append((exc, sub)))
    before, _ = collect(f, "e")

    def bad(ev):
        raise RuntimeError("boom " + ev.data.decode())

    bad_sub = f.subscribe("e", bad)
    after, _ = collect(f, "e")
    f.publish("e", b"1")
    f.publish("e", b"2")
    assert [(str(e), s) for e, s in errors] == [("boom 1", bad_sub), ("boom 2", bad_sub)]
    assert all(type(e) is RuntimeError for e, _ in errors)
    assert datas(before) == datas(after) == [b"1", b"2"]
    s = f.stats()
    assert s["callback_errors"] == 2 and s["delivered"] == 6
    assert bad_sub.stats()["errors"] == 2 and bad_sub.stats()["delivered"] == 2


def test_callback_errors_are_logged_by_default(caplog):
    f = Flow()
    other, _ = collect(f, "e.*")

    def bad(ev):
        raise ValueError("nope")

    f.subscribe("e.*", bad)
    with caplog.at_level(logging.ERROR, logger="fastflow"):
        f.publish("e.x", b"")
    recs = [r for r in caplog.records if r.name == "fastflow"]
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    assert recs[0].getMessage() == "fastflow: callback of subscription 'e.*' raised"
    assert recs[0].exc_info[0] is ValueError and str(recs[0].exc_info[1]) == "nope"
    assert len(other) == 1
    assert f.stats()["callback_errors"] == 1


# -- queued subscriptions ------------------------------------------------------------------


def test_poll_order_and_pending():
    f = Flow()
    sub = f.subscribe("p")
    for i in range(5):
        f.publish("p", bytes([i]) * 10)
    assert sub.pending == 5 and sub.pending_bytes == 5 * (10 + OVERHEAD)
    assert datas(sub.poll(2)) == [bytes([0]) * 10, bytes([1]) * 10]
    assert sub.pending == 3 and sub.pending_bytes == 3 * (10 + OVERHEAD)
    assert datas(sub.poll()) == [bytes([i]) * 10 for i in range(2, 5)]
    assert sub.poll() == [] and sub.pending == 0 and sub.pending_bytes == 0
    st = sub.stats()
    assert (st["delivered"], st["dropped"], st["pending"], st["closed"]) == (5, 0, 0, False)


def test_drop_oldest_keeps_the_newest():
    f = Flow()
    sub = f.subscribe("p", max_pending=3, on_full="drop_oldest")
    for i in range(5):
        f.publish("p", bytes([i]))
    assert datas(sub.poll()) == [b"\x02", b"\x03", b"\x04"]
    st = sub.stats()
    assert (st["delivered"], st["dropped"], st["on_full"], st["max_pending"]) == (
        5, 2, "drop_oldest", 3)
    assert f.stats()["dropped_slow_consumer"] == 2


def test_drop_new_keeps_the_oldest():
    f = Flow()
    sub = f.subscribe("p", max_pending=3, on_full="drop_new")
    for i in range(5):
        f.publish("p", bytes([i]))
    assert datas(sub.poll()) == [b"\x00", b"\x01", b"\x02"]
    st = sub.stats()
    assert (st["delivered"], st["dropped"], st["on_full"]) == (3, 2, "drop_new")
    assert f.stats()["dropped_slow_consumer"] == 2
    # room again
    f.publish("p", b"\x05")
    assert datas(sub.poll()) == [b"\x05"]


def test_flow_delivered_does_not_count_dropped_events():
    f = Flow()
    new = f.subscribe("p", max_pending=3, on_full="drop_new")
    for i in range(5):
        f.publish("p", bytes([i]))
    s = f.stats()
    assert s["dropped_slow_consumer"] == 2
    assert s["delivered"] == new.stats()["delivered"] == 3
    cut = f.subscribe("c", max_pending=1, on_full="cut")
    f.publish("c", b"1")
    f.publish("c", b"2")                         # cuts: not delivered
    assert cut.closed
    assert f.stats()["delivered"] == 3 + cut.stats()["delivered"] == 4


def test_max_pending_bytes():
    f = Flow()
    limit = 3 * (10 + OVERHEAD)
    old = f.subscribe("p", max_pending=0, max_pending_bytes=limit, on_full="drop_oldest")
    new = f.subscribe("p", max_pending=0, max_pending_bytes=limit, on_full="drop_new")
    for i in range(5):
        f.publish("p", bytes([i]) * 10)
    assert old.pending_bytes == new.pending_bytes == limit
    assert [e.data[0] for e in old.poll()] == [2, 3, 4]
    assert [e.data[0] for e in new.poll()] == [0, 1, 2]
    assert old.stats()["dropped"] == new.stats()["dropped"] == 2
    # one large event makes room for itself under drop_oldest
    f.publish("p", b"\x09" * 10)
    f.publish("p", b"\x08" * 10)
    f.publish("p", b"L" * (limit - OVERHEAD - 5))
    assert datas(old.poll()) == [b"L" * (limit - OVERHEAD - 5)]
    # an event larger than the limit is dropped even on an empty queue
    f.publish("p", b"H" * limit)
    assert old.poll() == [] and old.stats()["dropped"] == 2 + 2 + 1
    # and on a non-empty one, which it leaves alone (it could never fit)
    f.publish("p", b"\x07" * 10)
    f.publish("p", b"H" * limit)
    assert datas(old.poll()) == [b"\x07" * 10]
    assert old.stats()["dropped"] == 2 + 2 + 1 + 1
    new.poll()
    assert f.stats()["dropped_slow_consumer"] == old.stats()["dropped"] + new.stats()["dropped"]


def test_cut_closes_the_slow_consumer_and_advises():
    f = Flow()
    advisories, _ = collect(f, "$SYS.>")
    sub = f.subscribe("slow.*", max_pending=2, on_full="cut", queue="grp")
    f.publish("slow.a", b"1")
    f.publish("slow.a", b"2")
    assert sub.stats()["closed"] is False
    f.publish("slow.a", b"3")                    # over the limit: cut
    f.publish("slow.a", b"4")                    # no longer delivered
    st = sub.stats()
    assert st["closed"] is True and st["slow_consumer"] is True and sub.closed
    assert (st["delivered"], st["dropped"], st["pending"], st["pending_bytes"]) == (2, 3, 0, 0)
    with pytest.raises(SlowConsumerError, match=r"subscription to 'slow\.\*' was cut off as "
                       r"a slow consumer: 2 pending events"):
        sub.poll()
    with pytest.raises(SlowConsumerError):
        sub.poll()
    (adv,) = advisories
    assert adv.routing_subject == "$SYS.advisory.slow_consumer"
    assert adv.type == "io.fastflow.advisory.slow_consumer"
    assert adv.datacontenttype == "application/json"
    assert json.loads(adv.data) == {"subscription": "slow.*", "queue": "grp", "max_pending": 2,
                                    "max_pending_bytes": 64 << 20, "dropped": 3}
    s = f.stats()
    assert s["advisories"] == 1
    assert s["dropped_slow_consumer"] == 3
    sub.unsubscribe()                            # still fine after a cut
    assert sub.closed and f.stats()["subscriptions"] == [f.stats()["subscriptions"][0]]
    assert f.publish("slow.a", b"5") == 0
    assert f.stats()["dropped_no_interest"] == 2  # "4" and "5": the cut unregistered it


def test_cut_subscription_no_longer_registers_interest():
    f = Flow()
    sub = f.subscribe("slow", max_pending=1, on_full="cut")
    f.publish("slow", b"1")
    f.publish("slow", b"2")                      # cut
    assert sub.closed
    f.publish("slow", b"3")
    s = f.stats()
    assert s["matcher"]["subscriptions"] == 0
    assert s["dropped_no_interest"] == 2          # "3", and the advisory nobody listens to


def test_cut_of_an_advisory_listener_is_not_advised():
    f = Flow()
    listener = f.subscribe("$SYS.>", max_pending=1, on_full="cut")
    other = f.subscribe("x", max_pending=1, on_full="cut")
    f.publish("x", b"1")
    f.publish("x", b"2")                         # cut x: an advisory, queued by the listener
    assert other.closed and not listener.closed
    f.publish("y", b"")
    y = f.subscribe("y", max_pending=1, on_full="cut")
    f.publish("y", b"1")
    f.publish("y", b"2")                         # cut y: the advisory cuts the listener
    assert y.closed and listener.closed and listener.stats()["slow_consumer"]
    assert f.stats()["advisories"] == 2


def test_advisory_listeners_observe_without_subscribing():
    """``advisory_listeners`` of the flow an advisory is published in are
    told (subject, body) as it is made, without a subscription (no interest,
    nothing in the stats); one that raises is logged, the others still told."""
    system, acct = Flow(), Flow()
    acct.advisory_flow, acct.advisory_prefix = system, "$SYS.account.acme.advisory."
    got = []

    def broken(subject, body):
        raise RuntimeError("listener failed")

    system.advisory_listeners.extend([broken, lambda s, b: got.append((s, b))])
    acct.advise("quota", {"kind": "ingress"})
    system.advise("storage_full", {"stream": "s"})
    assert got == [("$SYS.account.acme.advisory.quota", {"kind": "ingress"}),
                   ("$SYS.advisory.storage_full", {"stream": "s"})]
    assert system.stats()["matcher"]["subscriptions"] == 0
    assert system.interest() == []
    assert acct.advisory_listeners == []


@pytest.mark.parametrize("kw, exc, msg", [
    ({"on_full": "block"}, ValueError, "on_full must be"),
    ({"max_pending": -1}, ValueError, "max_pending"),
    ({"max_pending_bytes": -1}, ValueError, "max_pending"),
    ({"callback": 5}, TypeError, "callback must be callable"),
])
def test_subscribe_validation(kw, exc, msg):
    f = Flow()
    with pytest.raises(exc, match=msg):
        f.subscribe("x", **kw)
    with pytest.raises(SubjectError):
        f.subscribe("a..b")
    assert f.stats()["subscriptions"] == []


def test_a_callback_subscription_is_not_iterable():
    f = Flow()
    sub = f.subscribe("x", lambda e: None)
    with pytest.raises(TypeError, match="not iterable"):
        sub.__aiter__()


# -- asyncio ----------------------------------------------------------------------------------


def test_async_for_over_a_subscription(aloop):
    async def main():
        f = Flow()
        sub = f.subscribe("a.>")
        f.publish("a.1", b"1")
        f.publish("a.2", b"2")

        async def later():
            await asyncio.sleep(0.01)
            f.publish("a.3", b"3")
            await asyncio.sleep(0.01)
            f.publish("a.4", b"4")

        task = asyncio.create_task(later())
        got = []
        async for ev in sub:
            got.append(ev)
            if len(got) == 4:
                break
        await task
        assert [(e.routing_subject, e.data) for e in got] == [
            ("a.1", b"1"), ("a.2", b"2"), ("a.3", b"3"), ("a.4", b"4")]
        assert sub.pending == 0
    aloop(main)


def test_next_with_timeout(aloop):
    async def main():
        f = Flow()
        sub = f.subscribe("n")
        f.publish("n", b"1")
        assert (await sub.next(1)).data == b"1"
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(0.05)
        assert time.monotonic() - t0 >= 0.04
        asyncio.get_running_loop().call_later(0.01, f.publish, "n", b"2")
        assert (await sub.next(1)).data == b"2"
        # a timed-out next() leaves no waiter behind: the next event is not lost
        with pytest.raises(asyncio.TimeoutError):
            await sub.next(0.01)
        f.publish("n", b"3")
        assert sub.pending == 1
        assert (await sub.next(1)).data == b"3"
    aloop(main)


def test_publish_from_another_thread_wakes_the_iterator(aloop):
    async def main():
        f = Flow()
        sub = f.subscribe("th")
        started = threading.Event()

        def publisher():
            started.wait(5)
            time.sleep(0.02)
            for i in range(3):
                f.publish("th", bytes([i]))
                time.sleep(0.005)

        th = threading.Thread(target=publisher)
        th.start()
        try:
            started.set()
            got = []
            async for ev in sub:
                got.append(ev.data)
                if len(got) == 3:
                    break
        finally:
            th.join()
        assert got == [b"\x00", b"\x01", b"\x02"]
        # and next() too
        th = threading.Thread(target=lambda: (time.sleep(0.02), f.publish("th", b"late")))
        th.start()
        try:
            assert (await sub.next(2)).data == b"late"
        finally:
            th.join()
    aloop(main)


def _publish_between_check_and_wait(monkeypatch, flow, subject):
    """Simulate the publisher's thread running right after the iterator found
    its queue empty and before it waits: the GIL may switch threads between
    any two bytecodes."""
    real = threading.get_ident
    fired = []

    def get_ident():
        if not fired and sys._getframe(1).f_code.co_name == "__anext__":
            fired.append(True)
            th = threading.Thread(target=flow.publish, args=(subject, b"raced"))
            th.start()
            th.join()
        return real()

    monkeypatch.setattr(flow_module, "threading", types.SimpleNamespace(get_ident=get_ident))
    return fired


def test_publish_from_another_thread_between_check_and_wait_is_not_lost(aloop, monkeypatch):
    async def main():
        f = Flow()
        sub = f.subscribe("race")
        fired = _publish_between_check_and_wait(monkeypatch, f, "race")
        try:
            ev = await sub.next(0.3)
        finally:
            assert fired == [True]
            assert sub.pending in (0, 1)
        assert ev.data == b"raced"
    aloop(main)


def test_coroutine_callbacks_run_in_order(aloop):
    async def main():
        f = Flow()
        got = []

        async def handler(ev):
            got.append(("start", ev.data))
            await asyncio.sleep(0.001)
            got.append(("end", ev.data))

        sub = f.subscribe("co", handler)
        assert sub.callback is None            # run by a task, not inline
        for i in range(4):
            f.publish("co", bytes([i]))
        assert got == []                        # nothing runs inline
        for _ in range(200):
            if len(got) == 8:
                break
            await asyncio.sleep(0.005)
        expected = []
        for i in range(4):
            expected += [("start", bytes([i])), ("end", bytes([i]))]
        assert got == expected
        sub.unsubscribe()
        f.publish("co", b"late")
        await asyncio.sleep(0.01)
        assert len(got) == 8
    aloop(main)


def test_coroutine_callback_errors_go_to_the_error_handler(aloop):
    async def main():
        errors = []
        f = Flow(error_handler=lambda exc, sub: errors.append((exc, sub)))
        ok = []

        async def handler(ev):
            if ev.data == b"bad":
                raise KeyError("bad event")
            ok.append(ev.data)

        sub = f.subscribe("co", handler)
        for d in (b"1", b"bad", b"2"):
            f.publish("co", d)
        for _ in range(200):
            if len(ok) == 2:
                break
            await asyncio.sleep(0.005)
        assert ok == [b"1", b"2"]
        assert len(errors) == 1
        assert type(errors[0][0]) is KeyError and errors[0][1] is sub
        assert sub.async_errors == 1
        sub.unsubscribe()
    aloop(main)


def test_coroutine_callback_errors_are_in_the_stats(aloop):
    async def main():
        f = Flow(error_handler=lambda exc, sub: None)

        async def handler(ev):
            raise KeyError("bad event")

        sub = f.subscribe("co", handler)
        f.publish("co", b"")
        for _ in range(100):
            if sub.async_errors:
                break
            await asyncio.sleep(0.005)
        assert sub.async_errors == 1
        entry = f.stats()["subscriptions"][0]
        sub.unsubscribe()
        assert entry["errors"] == 1 or entry.get("async_errors") == 1
    aloop(main)


def test_coroutine_callback_needs_a_running_loop():
    f = Flow()

    async def handler(ev):
        pass

    with pytest.raises(FastflowError, match="running event loop"):
        f.subscribe("x", handler)
    assert f.stats()["subscriptions"] == []


def test_unsubscribe_ends_the_iterator(aloop):
    async def main():
        f = Flow()
        sub = f.subscribe("u")
        f.publish("u", b"1")
        f.publish("u", b"2")
        sub.unsubscribe()
        got = [ev.data async for ev in sub]   # queued events first, then the end
        assert got == [b"1", b"2"]
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        # while waiting
        sub2 = f.subscribe("u2")
        asyncio.get_running_loop().call_later(0.01, sub2.unsubscribe)
        got = [ev async for ev in sub2]
        assert got == []
        # from another thread while waiting
        sub3 = f.subscribe("u3")
        th = threading.Thread(target=lambda: (time.sleep(0.02), sub3.unsubscribe()))
        th.start()
        try:
            got = [ev async for ev in sub3]
        finally:
            th.join()
        assert got == []
    aloop(main)


def test_cut_raises_slow_consumer_error_from_the_iterator(aloop):
    async def main():
        f = Flow()
        sub = f.subscribe("s", max_pending=2, on_full="cut")
        got = []

        async def reader():
            async for ev in sub:
                got.append(ev.data)
                await asyncio.sleep(0.05)     # slow

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        f.publish("s", b"\x00")
        await asyncio.sleep(0.01)                # taken; the reader is busy
        for i in range(1, 4):
            f.publish("s", bytes([i]))          # 1, 2 queued; 3 cuts (the queue is dropped)
        assert sub.pending == 0 and sub.closed
        with pytest.raises(SlowConsumerError, match="slow consumer"):
            await task
        assert got == [b"\x00"]
        assert sub.stats()["slow_consumer"] is True
    aloop(main)


# -- streams ------------------------------------------------------------------------------------


def test_streams_capture_once_per_stream():
    f = Flow()
    s = f.add_stream("S", ["o.*", "o.>", "p.x"])
    t = f.add_stream("T", "o.eu")
    assert isinstance(s, Stream) and s.subjects == ("o.*", "o.>", "p.x")
    f.publish("o.eu", b"1")                     # S twice (one store), T once
    f.publish("o.us", b"2")
    f.publish("o.eu.x", b"3")
    f.publish("p.x", b"4")
    f.publish("q", b"5")
    assert [(e.seq, e.routing_subject, e.data, e.stream) for e in s.replay()] == [
        (1, "o.eu", b"1", "S"), (2, "o.us", b"2", "S"), (3, "o.eu.x", b"3", "S"),
        (4, "p.x", b"4", "S")]
    assert [(e.seq, e.data) for e in t.replay()] == [(1, b"1")]
    st = f.stats()
    assert st["stored"] == 5 and st["published"] == 5 and st["dropped_no_interest"] == 1
    assert st["streams"]["S"]["stored"] == 4 and st["streams"]["T"]["stored"] == 1
    assert len(s) == 4 and len(t) == 1


def test_stream_info():
    f = Flow()
    ret = Retention(max_events=10, max_age=60)
    s = f.add_stream("S", ["o.>"], ret)
    f.publish("o.eu", b"1")
    f.publish("o.us", b"22")
    f.publish("o.eu", b"333")
    info = s.info()
    log_stats = info.pop("log")
    assert info == {
        "name": "S", "subjects": ["o.>"], "storage": "memory",
        "retention": {"max_events": 10, "max_bytes": 0, "max_age": 60.0, "max_per_subject": 0,
                      "max_event_size": 1 << 20, "discard": "old", "duplicate_window": 120.0},
        "events": 3,
        # bytes: routing subject + record (RECORD_OVERHEAD + data) per event
        "bytes": 3 * (4 + RECORD_OVERHEAD) + 6,
        "first_seq": 1, "last_seq": 3, "distinct_subjects": 2,
        "stored": 3, "rejected": 0, "duplicates": 0, "consumers": {},
    }
    assert log_stats["appended"] == 3 and log_stats["evicted"] == 0
    c = s.consumer("c")
    assert s.info()["consumers"] == {"c": c.info()}
    assert repr(s) == "<Stream 'S' subjects=['o.>'] events=3 storage=memory>"


def test_add_stream_again():
    f = Flow()
    ret = Retention(max_events=5)
    s = f.add_stream("S", ["a.>", "b"], ret)
    assert f.add_stream("S", ["a.>", "b"], Retention(max_events=5)) is s
    assert f.add_stream("S", ("a.>", b"b"), ret, storage="memory") is s
    single = f.add_stream("One", "x")
    assert f.add_stream("One", ["x"]) is single
    for args in ((["a.>"], ret), (["b", "a.>"], ret), (["a.>", "b"], Retention(max_events=6)),
                 (["a.>", "b"], None)):
        with pytest.raises(ValueError, match="stream 'S' exists with another config"):
            f.add_stream("S", *args)
    assert f.streams() == {"S": s, "One": single}


@pytest.mark.parametrize("args, kw, exc, msg", [
    (("bad name", "x"), {}, ValueError, "stream name must be"),
    (("", "x"), {}, ValueError, "stream name must be"),
    (("n" * 65, "x"), {}, ValueError, "stream name must be"),
    (("S", []), {}, ValueError, "needs at least one subject pattern"),
    (("S", "x"), {"retention": {"max_events": 1}}, TypeError, "retention must be a Retention"),
    (("S", "x"), {"storage": "disk"}, ValueError, "storage must be 'memory' or 'file'"),
    (("S", "x"), {"storage": "file"}, ValueError, r"storage='file' needs Flow\(data_dir"),
    (("S", ["ok.>", "a..b"]), {}, SubjectError, "a..b"),
])
def test_add_stream_validation(args, kw, exc, msg):
    f = Flow()
    got, _ = collect(f, "ok.x")
    with pytest.raises(exc, match=msg):
        f.add_stream(*args, **kw)
    assert f.streams() == {}
    f.publish("ok.x", b"")
    assert f.stats()["stored"] == 0 and len(got) == 1


def test_stream_lookup():
    f = Flow()
    f.add_stream("b", "x")
    f.add_stream("a", "y")
    with pytest.raises(KeyError) as ei:
        f.stream("nope")
    assert ei.value.args[0] == "no stream named 'nope' (streams: ['a', 'b'])"
    assert f.stream("a").name == "a"
    assert sorted(f.streams()) == ["a", "b"]


def test_get():
    f = Flow()
    s = f.add_stream("S", "g.>", Retention(max_events=2))
    for i in range(3):
        f.publish("g.%d" % i, bytes([i]), type="t%d" % i)
    e = s.get(3)
    assert (e.seq, e.routing_subject, e.data, e.type, e.stream) == (3, "g.2", b"\x02", "t2", "S")
    assert e.ts > 0
    with pytest.raises(KeyError, match=r"\b1 is not retained.*2\.\.3"):
        s.get(1)
    with pytest.raises(KeyError):
        s.get(4)


def _filled_stream():
    f = Flow()
    s = f.add_stream("S", "r.>")
    for i, subj in enumerate(["r.a", "r.b", "r.a", "r.c.x", "r.b"], 1):
        f.publish(subj, bytes([i]))
        time.sleep(0.001)           # distinct timestamps
    return f, s


def test_replay_positions():
    f, s = _filled_stream()
    seqs = lambda r: [e.seq for e in r]  # noqa: E731
    assert [(e.seq, e.routing_subject, e.data) for e in s.replay()] == [
        (1, "r.a", b"\x01"), (2, "r.b", b"\x02"), (3, "r.a", b"\x03"), (4, "r.c.x", b"\x04"),
        (5, "r.b", b"\x05")]
    assert seqs(s.replay("first")) == [1, 2, 3, 4, 5]
    assert seqs(s.replay("last")) == [5]
    assert seqs(s.replay("new")) == []
    assert seqs(s.replay(seq=3)) == [3, 4, 5]
    assert seqs(s.replay(seq=99)) == []
    assert seqs(s.replay(filter="r.a")) == [1, 3]
    assert seqs(s.replay(filter="r.*")) == [1, 2, 3, 5]
    assert seqs(s.replay(filter="r.c.>", seq=2)) == [4]
    assert seqs(s.replay(limit=2)) == [1, 2]
    assert seqs(s.replay(batch=1)) == [1, 2, 3, 4, 5]
    ts3 = s.get(3).ts
    assert seqs(s.replay(time=ts3)) == [3, 4, 5]
    assert seqs(s.replay(time=ts3 + 1)) == [4, 5]
    when = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=ts3 // 1000)
    assert seqs(s.replay(time=when)) == [3, 4, 5]
    assert seqs(s.replay(time=when + dt.timedelta(days=1))) == []
    # a replay stops at the last event stored when it was made
    r = s.replay()
    f.publish("r.z", b"6")
    assert seqs(r) == [1, 2, 3, 4, 5]
    assert r.lost == 0 and r.next_seq == 6


def test_replay_after_eviction_counts_lost():
    f = Flow()
    s = f.add_stream("S", "x", Retention(max_events=2))
    for i in range(5):
        f.publish("x", bytes([i]))
    r = s.replay(seq=1)
    assert [e.seq for e in r] == [4, 5]
    assert r.lost == 3
    with pytest.raises(fastflow.GapError):
        s.replay(seq=1, strict=True)


def test_replay_async_and_areplay(aloop):
    f, s = _filled_stream()

    async def main():
        got = [(e.seq, e.data) async for e in s.areplay(seq=4)]
        assert got == [(4, b"\x04"), (5, b"\x05")]
        t0 = time.monotonic()
        paced = [e async for e in s.areplay(speed=1000.0)]
        assert time.monotonic() - t0 < 1.0
        assert [(e.seq, e.routing_subject, e.data, e.stream) for e in paced] == [
            (e.seq, e.routing_subject, e.data, e.stream) for e in s.replay()]
        assert [e.id for e in paced] == [e.id for e in s.replay()]
    aloop(main)


def test_async_for_over_replay(aloop):
    f, s = _filled_stream()

    async def main():
        return [e.seq async for e in s.replay(filter="r.b")]

    assert aloop(main) == [2, 5]


def test_last_per_subject():
    f, s = _filled_stream()
    last = s.last()
    assert {k: (v.seq, v.data) for k, v in last.items()} == {
        "r.a": (3, b"\x03"), "r.c.x": (4, b"\x04"), "r.b": (5, b"\x05")}
    assert list(last) == ["r.a", "r.c.x", "r.b"]           # seq order
    assert {k: v.seq for k, v in s.last("r.a").items()} == {"r.a": 3}
    assert s.last("nothing") == {}


def test_purge():
    f, s = _filled_stream()
    assert s.purge("r.a") == 2
    assert [e.seq for e in s.replay()] == [2, 4, 5]
    assert s.purge(up_to=4) == 2
    assert [e.seq for e in s.replay()] == [5]
    assert s.purge(up_to=0) == 0
    assert f.publish("r.a", b"") == 6               # the seq counter is kept
    assert s.purge() == 2
    assert len(s) == 0 and s.info()["log"]["purged"] == 6
    f2, s2 = _filled_stream()
    assert s2.purge("r.b", up_to=2) == 1
    assert [e.seq for e in s2.replay()] == [1, 3, 4, 5]


def test_delete_stream():
    f = Flow()
    got, _ = collect(f, "d.>")
    a = f.add_stream("A", "d.>")
    b = f.add_stream("B", "d.x")
    f.publish("d.x", b"1")
    f.delete_stream("A")
    with pytest.raises(KeyError, match="no stream named 'A'"):
        f.stream("A")
    with pytest.raises(KeyError, match="no stream named 'A'"):
        f.delete_stream("A")
    assert f.publish("d.y", b"2") == 0            # captured by nobody now
    assert f.publish("d.x", b"3") == 2            # B only
    assert [e.data for e in b.replay()] == [b"1", b"3"]
    assert list(f.stats()["streams"]) == ["B"]
    assert datas(got) == [b"1", b"2", b"3"]
    assert a.log.closed
    f.delete_stream("B")
    assert f.publish("z", b"") == 0
    assert f.stats()["stored"] == 3


# -- retention ----------------------------------------------------------------------------------


def test_max_events_evicts_the_oldest():
    f = Flow()
    s = f.add_stream("S", "r", Retention(max_events=3))
    for i in range(5):
        assert f.publish("r", bytes([i])) == i + 1
    assert [(e.seq, e.data) for e in s.replay()] == [(3, b"\x02"), (4, b"\x03"), (5, b"\x04")]
    info = s.info()
    assert (info["first_seq"], info["last_seq"], info["events"]) == (3, 5, 3)
    assert info["log"]["evicted_max_events"] == 2


def test_max_per_subject():
    f = Flow()
    s = f.add_stream("S", "r.*", Retention(max_per_subject=1))
    for subj in ["r.a", "r.b", "r.a", "r.a", "r.b"]:
        f.publish(subj, b"")
    assert [(e.seq, e.routing_subject) for e in s.replay()] == [(4, "r.a"), (5, "r.b")]


def test_discard_new_refuses_and_still_delivers():
    f = Flow()
    got, sub = collect(f, "n")
    queued = f.subscribe("n")
    s = f.add_stream("S", "n", Retention(max_events=2, discard="new"))
    assert f.publish("n", b"1") == 1
    assert f.publish("n", b"2") == 2
    with pytest.raises(LogFullError, match=r"log full: max_events=2 reached \(discard='new'\)"):
        f.publish("n", b"3")
    with pytest.raises(LogFullError):
        f.publish("n", b"4", type="t")
    with pytest.raises(LogFullError):
        f.publish_batch("n", [b"5"])
    # the publisher is told, the subscribers get the event all the same (JetStream)
    assert datas(got) == [b"1", b"2", b"3", b"4", b"5"]
    assert datas(queued.poll()) == [b"1", b"2", b"3", b"4", b"5"]
    assert [e.data for e in s.replay()] == [b"1", b"2"]
    assert s.info()["rejected"] == 3 and s.info()["log"]["rejected"] == 3
    st = f.stats()
    assert st["rejected_by_stream"] == 3 and st["stored"] == 2 and st["delivered"] == 10
    assert sub.stats()["delivered"] == 5


def test_max_event_size_is_the_encoded_record():
    f = Flow()
    got, _ = collect(f, "big")
    s = f.add_stream("S", "big", Retention(max_event_size=100))
    assert f.publish("big", b"x" * (100 - RECORD_OVERHEAD)) == 1
    with pytest.raises(EventTooLarge, match="event of 101 bytes exceeds max_event_size=100") as ei:
        f.publish("big", b"x" * (101 - RECORD_OVERHEAD))
    assert isinstance(ei.value, ValueError)
    assert len(got) == 2 and len(s) == 1          # refused by the stream, still delivered
    assert s.info()["rejected"] == 1
    assert f.stats()["rejected_by_stream"] == 1


def test_stats_stream_rejected_matches_info():
    f = Flow()
    s = f.add_stream("S", "big", Retention(max_event_size=100))
    with pytest.raises(EventTooLarge):
        f.publish("big", b"x" * 100)
    assert s.info()["rejected"] == 1
    assert f.stats()["streams"]["S"]["rejected"] == s.info()["rejected"]


@pytest.mark.parametrize("kw, msg", [
    ({"max_events": -1}, "Retention.max_events must be an int >= 0"),
    ({"max_events": 1.0}, "Retention.max_events must be an int >= 0"),
    ({"max_events": True}, "Retention.max_events must be an int >= 0"),
    ({"max_bytes": -5}, "Retention.max_bytes must be an int >= 0"),
    ({"max_per_subject": None}, "Retention.max_per_subject must be an int >= 0"),
    ({"max_event_size": -1}, "Retention.max_event_size must be an int >= 0"),
    ({"max_age": -1}, "Retention.max_age must be a finite number of seconds >= 0"),
    ({"max_age": float("inf")}, "Retention.max_age must be a finite"),
    ({"max_age": float("nan")}, "Retention.max_age must be a finite"),
    ({"max_age": True}, "Retention.max_age must be a finite"),
    ({"max_age": "1"}, "Retention.max_age must be a finite"),
    ({"discard": "oldest"}, "Retention.discard must be 'old' or 'new', got 'oldest'"),
])
def test_retention_validation(kw, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        Retention(**kw)


def test_retention_value():
    r = Retention(max_events=1, max_bytes=2, max_age=3, max_per_subject=4, max_event_size=5,
                  discard="new")
    d = r.to_dict()
    assert d == {"max_events": 1, "max_bytes": 2, "max_age": 3.0, "max_per_subject": 4,
                 "max_event_size": 5, "discard": "new", "duplicate_window": 120.0}
    assert type(d["max_age"]) is float
    assert Retention.from_dict(d) == r and Retention() != r and r != d
    assert Retention().to_dict() == {"max_events": 0, "max_bytes": 0, "max_age": 0.0,
                                     "max_per_subject": 0, "max_event_size": 1 << 20,
                                     "discard": "old", "duplicate_window": 120.0}


# -- the loop breaker ---------------------------------------------------------------------------


def test_hop_limit_stops_a_republishing_processor():
    f = Flow(hop_limit=5)
    advisories, _ = collect(f, "$SYS.>")
    seen = []

    def processor(ev):
        seen.append((ev.routing_subject, ev.hops))
        n = int(ev.routing_subject.split(".")[1])
        f.publish(ev.derive("loop.%d" % (n + 1), data=ev.data + b"+"))

    f.subscribe("loop.*", processor)
    f.publish("loop.0", b"x")
    assert seen == [("loop.%d" % i, i) for i in range(6)]
    s = f.stats()
    assert s["dropped_loop"] == 1 and s["advisories"] == 1
    (adv,) = advisories
    assert adv.routing_subject == "$SYS.advisory.loop"
    assert adv.type == "io.fastflow.advisory.loop"
    body = json.loads(adv.data)
    assert body["subject"] == "loop.6" and body["hops"] == 6 and body["source"] == "/fastflow"
    assert body["reason"] == "hop limit 5 exceeded (6 hops)"
    assert HEX32.match(body["id"])


def test_trace_stops_an_event_returning_to_a_subject():
    f = Flow(hop_limit=1000)
    advisories, _ = collect(f, "$SYS.advisory.loop")
    stream = f.add_stream("S", ["A", "B"])
    seen = []
    f.subscribe("A", lambda e: (seen.append(("A", e.hops, e.data)),
                                f.publish(e.derive("B", data=e.data + b">B"))))
    f.subscribe("B", lambda e: (seen.append(("B", e.hops, e.data)),
                                f.publish(e.derive("A", data=e.data + b">A"))))
    f.publish("A", b"a")
    assert seen == [("A", 0, b"a"), ("B", 1, b"a>B")]
    assert f.stats()["dropped_loop"] == 1
    (adv,) = advisories
    body = json.loads(adv.data)
    assert body["subject"] == "A" and body["hops"] == 2
    assert body["reason"] == "event returned to 'A' in flow 'fastflow' that it already passed"
    assert [e.data for e in stream.replay()] == [b"a", b"a>B"]   # the stopped one not stored


def test_trace_stops_a_loop_between_two_bridged_flows():
    one, two = Flow(name="one"), Flow(name="two")
    advisories, _ = collect(one, "$SYS.advisory.loop")
    seen = []
    one.subscribe("A", lambda e: (seen.append(("one", e.hops)), two.publish(e.derive())))
    two.subscribe("A", lambda e: (seen.append(("two", e.hops)), one.publish(e.derive())))
    one.publish("A", b"")
    assert seen == [("one", 0), ("two", 1)]
    assert (one.stats()["dropped_loop"], two.stats()["dropped_loop"]) == (1, 0)
    assert json.loads(advisories[0].data)["reason"] == (
        "event returned to 'A' in flow 'one' that it already passed")


def test_derive_into_the_same_subject_is_stopped_at_once():
    f = Flow()
    seen = []
    f.subscribe("same", lambda e: (seen.append(e.hops), f.publish(e.derive())))
    f.publish("same", b"")
    assert seen == [0]
    assert f.stats()["dropped_loop"] == 1


def test_hops_and_trace_on_delivered_events():
    f = Flow(name="f1")
    got, _ = collect(f, "h.>")
    f.subscribe("h.0", lambda e: f.publish(e.derive("h.1", data=b"d1")))
    f.subscribe("h.1", lambda e: f.publish(e.derive("h.2", type="custom")))
    f.publish("h.0", b"d0", region="eu", source="/src")
    by = {e.routing_subject: e for e in got}
    assert [(e.routing_subject, e.hops) for e in got] == [("h.0", 0), ("h.1", 1), ("h.2", 2)]
    t0, t1, t2 = (by["h.%d" % i].trace for i in range(3))
    assert t1.startswith(t0 + ",") and t2.startswith(t1 + ",")
    assert len(t2.split(",")) == 3 and len(set(t2.split(","))) == 3
    assert [by[s].type for s in ("h.0", "h.1", "h.2")] == ["h.0", "h.1", "custom"]
    assert all(e.source == "/src" and e.extensions["region"] == "eu" for e in got)
    assert len({e.id for e in got}) == 3
    assert datas(got) == [b"d0", b"d1", b"d1"]
    assert by["h.2"]["ffhops"] == 2 and by["h.2"]["fftrace"] == t2
    # another flow name gives another trace
    g = Flow(name="f2")
    got2, _ = collect(g, "h.0")
    g.publish("h.0", b"")
    assert got2[0].trace != t0


def test_hop_limit_zero_disables_and_default_is_32():
    def chain(flow, n):
        seen = []

        def processor(ev):
            seen.append(ev.hops)
            k = int(ev.routing_subject.split(".")[1])
            if k < n:
                flow.publish(ev.derive("c.%d" % (k + 1)))

        flow.subscribe("c.*", processor)
        flow.publish("c.0", b"")
        return seen

    unlimited = Flow(hop_limit=0)
    assert chain(unlimited, 50) == list(range(51))
    assert unlimited.stats()["dropped_loop"] == 0
    default = Flow()
    assert default.hop_limit == 32
    assert chain(default, 50) == list(range(33))
    assert default.stats()["dropped_loop"] == 1
    # an event arriving with a high ffhops
    g = Flow(hop_limit=0)
    got, _ = collect(g, "x")
    g.publish("x", b"", ffhops=60000)
    assert [e.hops for e in got] == [60000]
    h = Flow(hop_limit=3)
    got, _ = collect(h, "x")
    assert h.publish("x", b"", ffhops=4) == 0
    assert got == [] and h.stats()["dropped_loop"] == 1
    with pytest.raises(ValueError, match="hop_limit"):
        Flow(hop_limit=-1)


# -- data_dir -----------------------------------------------------------------------------------


def test_data_dir_restart(tmp_path):
    ret = Retention(max_events=100, max_age=3600)
    with Flow(tmp_path) as f:
        s = f.add_stream("S", ["d.>", "e"], ret)
        m = f.add_stream("M", "m.>")
        mem = f.add_stream("Mem", "d.x", storage="memory")
        assert (s.storage, m.storage, mem.storage) == ("file", "file", "memory")
        assert os.path.isdir(tmp_path / "streams" / "S")
        for i in range(3):
            f.publish("d.x", bytes([i]), type="t", region="eu%d" % i,
                      time="2024-01-01T00:00:0%dZ" % i)
        f.publish("e", b"plain")
        f.publish("m.1", b"m")
        before = [(e.seq, e.id, e.routing_subject, e.data, e.attributes(), e.ts)
                  for e in s.replay()]
        assert [b[0] for b in before] == [1, 2, 3, 4]
    with Flow(tmp_path) as g:
        assert sorted(g.streams()) == ["M", "S"]          # the memory stream is gone
        s2 = g.stream("S")
        assert (s2.subjects, s2.retention, s2.storage) == (("d.>", "e"), ret, "file")
        after = [(e.seq, e.id, e.routing_subject, e.data, e.attributes(), e.ts)
                 for e in s2.replay()]
        assert after == before
        assert [e.data for e in g.stream("M").replay()] == [b"m"]
        assert g.add_stream("S", ["d.>", "e"], ret) is s2
        assert g.publish("d.y", b"new") == 5
        assert s2.info()["log"]["loaded"] == 4
    with Flow(tmp_path) as h:
        assert [e.seq for e in h.stream("S").replay()] == [1, 2, 3, 4, 5]
        h.delete_stream("M")
        assert not os.path.exists(tmp_path / "streams" / "M")
    with Flow(tmp_path) as k:
        assert sorted(k.streams()) == ["S"]
        state = json.loads((tmp_path / "flow.json").read_text())
        assert list(state["streams"]) == ["S"]


def test_data_dir_ids_survive_another_process(tmp_path):
    script = (
        "import sys, json\n"
        "from fastflow import Flow\n"
        "f = Flow(sys.argv[1])\n"
        "f.add_stream('S', 'p.>')\n"
        "got = []\n"
        "f.subscribe('p.>', got.append)\n"
        "f.publish('p.a', b'1')\n"
        "f.publish('p.b', b'2', type='t', id='custom')\n"
        "print(json.dumps([e.id for e in got]))\n"
        "f.close()\n")
    env = dict(os.environ)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=60, check=True).stdout
    ids = json.loads(out)
    with Flow(tmp_path) as f:
        evs = list(f.stream("S").replay())
        assert [e.id for e in evs] == ids
        assert ids[1] == "custom" and HEX32.match(ids[0])
        assert [(e.seq, e.data, e.type) for e in evs] == [(1, b"1", "p.a"), (2, b"2", "t")]


def test_file_storage_needs_a_data_dir():
    f = Flow()
    with pytest.raises(ValueError,
                       match=r"stream 'S': storage='file' needs Flow\(data_dir=\.\.\.\)"):
        f.add_stream("S", "x", storage="file")
    assert f.add_stream("S", "x").storage == "memory"


def test_closed_flow():
    f = Flow()
    sub = f.subscribe("x")
    f.close()
    f.close()                                   # idempotent
    assert sub.closed
    with pytest.raises(FastflowError, match="flow 'fastflow' is closed"):
        f.subscribe("x")
    with pytest.raises(FastflowError, match="is closed"):
        f.add_stream("S", "x")


# -- stats ----------------------------------------------------------------------------------------


def test_stats_snapshot():
    f = Flow()
    s = f.add_stream("S", "st.>")
    sub = f.subscribe("st.*", max_pending=5)
    c = s.consumer("c")
    f.publish("st.a", b"12345")
    f.publish("none", b"")
    snap = f.stats()
    assert set(snap) == {"published", "delivered", "stored", "dropped_no_interest",
                         "dropped_slow_consumer", "conflated", "dropped_loop",
                         "rejected_by_stream", "callback_errors", "advisories", "streams",
                         "subscriptions", "consumers", "matcher"}
    assert {k: snap[k] for k in ("published", "delivered", "stored", "dropped_no_interest",
                                 "dropped_slow_consumer", "dropped_loop", "rejected_by_stream",
                                 "callback_errors", "advisories")} == {
        "published": 2, "delivered": 1, "stored": 1, "dropped_no_interest": 1,
        "dropped_slow_consumer": 0, "dropped_loop": 0, "rejected_by_stream": 0,
        "callback_errors": 0, "advisories": 0}
    entry = snap["streams"]["S"]
    for k in ("stored", "rejected", "events", "bytes", "last_seq", "appended", "evicted",
              "purged"):
        assert k in entry
    assert (entry["stored"], entry["events"], entry["last_seq"], entry["bytes"]) == (
        1, 1, 1, len("st.a") + RECORD_OVERHEAD + 5)
    assert snap["subscriptions"] == [{
        "pattern": "st.*", "queue": None, "delivered": 1, "dropped": 0, "pending": 1,
        "pending_bytes": 5 + OVERHEAD, "errors": 0, "max_pending": 5,
        "max_pending_bytes": 64 << 20, "on_full": "drop_oldest", "conflate": False,
        "conflated": 0, "closed": False, "slow_consumer": False}]
    assert snap["consumers"] == {"S/c": c.info()}
    assert snap["matcher"]["subscriptions"] == 2
    # a snapshot: later changes do not alter it
    f.publish("st.a", b"")
    assert snap["published"] == 2 and f.stats()["published"] == 3
    assert sub.stats() == f.stats()["subscriptions"][0]
