"""Durable consumers (fastflow.Consumer): pull and push, acknowledgements,
redelivery, dead letters, start positions, validation, durability."""

import asyncio
import datetime as dt
import json
import sys
import threading
import time
import types

import pytest

import fastflow.consumer as consumer_module
from fastflow import (
    Consumer,
    ConsumerConfig,
    FastflowError,
    Flow,
    Retention,
    SubjectError,
)

UTC = dt.timezone.utc
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def seqs(evs):
    return [e.seq for e in evs]


def sleep_until(t):
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)


def make(n=6, subject="c.{i}", retention=None, **attrs):
    f = Flow()
    s = f.add_stream("S", "c.>", retention)
    for i in range(1, n + 1):
        f.publish(subject.format(i=i), bytes([i]), **attrs)
    return f, s


def collect(flow, pattern):
    got = []
    flow.subscribe(pattern, got.append)
    return got


# -- pull -------------------------------------------------------------------------------


def test_fetch_order_seqs_and_deliveries():
    f, s = make(6, subject="c.{i}", type="t", region="eu")
    c = s.consumer("k")
    assert isinstance(c, Consumer) and c.name == "k" and c.stream is s
    evs = c.fetch(4)
    assert [(e.seq, e.routing_subject, e.data, e.deliveries, e.stream) for e in evs] == [
        (i, "c.%d" % i, bytes([i]), 1, "S") for i in range(1, 5)]
    stored = list(s.replay())
    assert [e.id for e in evs] == [e.id for e in stored[:4]]
    assert all(e.type == "t" and e.extensions["region"] == "eu" for e in evs)
    assert [e.ts for e in evs] == [e.ts for e in stored[:4]]
    assert seqs(c.fetch(10)) == [5, 6]
    assert c.fetch(10) == []
    assert c.fetch(0) == [] and c.fetch(-1) == []
    assert (c.pending, c.ack_floor, c.lag) == (6, 0, 6)
    info = c.info()
    assert (info["delivered"], info["redelivered"], info["next_seq"]) == (6, 0, 7)
    # new events come after
    f.publish("c.7", b"7")
    assert seqs(c.fetch()) == [7]


def test_explicit_ack_moves_the_floor_to_the_lowest_unacked():
    f, s = make(6)
    c = s.consumer("k")
    e = c.fetch(5)
    e[1].ack()
    assert (c.ack_floor, c.pending) == (0, 4)
    e[0].ack()
    assert (c.ack_floor, c.pending) == (2, 3)
    e[3].ack()
    assert c.ack_floor == 2
    e[2].ack()
    assert (c.ack_floor, c.pending, c.lag) == (4, 1, 2)
    e[2].ack()                                   # twice: counted once
    e[4].ack()
    assert (c.ack_floor, c.pending, c.lag) == (5, 0, 1)
    assert c.info()["acked"] == 5
    # nothing pending: the floor follows what was read
    assert seqs(c.fetch(5)) == [6]
    assert c.ack_floor == 5


def test_ack_all():
    f, s = make(6)
    c = s.consumer("all", ack="all")
    e = c.fetch(5)
    e[2].ack()                                   # covers 1, 2, 3
    assert (c.ack_floor, c.pending, c.info()["acked"]) == (3, 2, 3)
    e[0].ack()                                   # already covered
    assert (c.ack_floor, c.pending, c.info()["acked"]) == (3, 2, 3)
    e[4].ack()
    assert (c.ack_floor, c.pending, c.info()["acked"]) == (5, 0, 5)


def test_ack_none():
    f, s = make(6)
    c = s.consumer("none", ack="none", max_in_flight=2)
    assert seqs(c.fetch(4)) == [1, 2, 3, 4]
    assert (c.pending, c.ack_floor, c.lag) == (0, 4, 2)
    assert seqs(c.fetch(10)) == [5, 6]
    assert (c.pending, c.ack_floor, c.lag) == (0, 6, 0)
    assert c.info()["acked"] == 0 and c.info()["delivered"] == 6


def test_max_in_flight_caps_fetch():
    f, s = make(6)
    c = s.consumer("mi", max_in_flight=2)
    e = c.fetch(10)
    assert seqs(e) == [1, 2]
    assert c.fetch(10) == []
    e[1].ack()
    assert seqs(c.fetch(10)) == [3]
    assert c.fetch(10) == []
    assert c.pending == 2


def test_ack_wait_redelivery():
    f, s = make(3)
    c = s.consumer("k", ack_wait=0.05)
    t0 = time.monotonic()
    e = c.fetch(3)
    e[0].ack()
    e[2].ack()
    if time.monotonic() - t0 < 0.04:
        assert c.fetch(5) == []                 # not due yet
    sleep_until(t0 + 0.07)
    t1 = time.monotonic()
    r = c.fetch(5)
    assert [(x.seq, x.deliveries, x.data) for x in r] == [(2, 2, b"\x02")]
    info = c.info()
    assert (info["delivered"], info["redelivered"], info["pending"], info["ack_floor"]) == (
        4, 1, 1, 1)
    sleep_until(t1 + 0.07)
    r = c.fetch(5)
    assert [(x.seq, x.deliveries) for x in r] == [(2, 3)]
    r[0].ack()
    assert (c.pending, c.ack_floor) == (0, 3)
    time.sleep(0.07)
    assert c.fetch(5) == []


def test_redeliveries_come_first():
    f, s = make(2)
    c = s.consumer("k", ack_wait=0.03)
    assert seqs(c.fetch(1)) == [1]
    time.sleep(0.05)
    r = c.fetch(5)
    assert [(e.seq, e.deliveries) for e in r] == [(1, 2), (2, 1)]


def test_nak_redelivers_after_the_delay():
    f, s = make(3)
    c = s.consumer("k", ack_wait=10)
    t0 = time.monotonic()
    e = c.fetch(3)
    e[0].nak(0.2)
    e[1].nak()                                   # now
    r = c.fetch(5)
    assert [(x.seq, x.deliveries) for x in r] == [(2, 2)]
    sleep_until(t0 + 0.1)
    if time.monotonic() - t0 < 0.19:
        assert c.fetch(5) == []                 # not before the delay
    sleep_until(t0 + 0.25)
    r = c.fetch(5)
    assert [(x.seq, x.deliveries) for x in r] == [(1, 2)]
    assert c.info()["naked"] == 2
    with pytest.raises(ValueError, match="nak delay"):
        r[0].nak(-1)
    with pytest.raises(ValueError, match="nak delay"):
        r[0].nak(float("inf"))
    r[0].ack()
    e[0].nak(0)                                  # acked: nothing to do
    assert c.info()["naked"] == 2
    assert seqs(c.fetch(5)) == []


def test_term_never_redelivers():
    f, s = make(3)
    c = s.consumer("k", ack_wait=0.03)
    e = c.fetch(3)
    e[0].term()
    e[1].ack()
    assert (c.ack_floor, c.pending) == (2, 1)
    time.sleep(0.05)
    assert [(x.seq, x.deliveries) for x in c.fetch(5)] == [(3, 2)]
    time.sleep(0.05)
    r = c.fetch(5)
    assert seqs(r) == [3]
    r[0].term()
    assert (c.ack_floor, c.pending) == (3, 0)
    time.sleep(0.05)
    assert c.fetch(5) == []
    info = c.info()
    assert (info["terminated"], info["acked"], info["redelivered"]) == (2, 1, 2)


def test_in_progress_postpones_redelivery():
    f, s = make(1)
    c = s.consumer("k", ack_wait=0.3)
    t0 = time.monotonic()
    (e,) = c.fetch()
    sleep_until(t0 + 0.2)
    e.in_progress()                              # due again at ~0.5
    sleep_until(t0 + 0.4)
    if time.monotonic() - t0 < 0.48:
        assert c.fetch() == []
    sleep_until(t0 + 0.6)
    assert [(x.seq, x.deliveries) for x in c.fetch()] == [(1, 2)]


def test_max_deliver_dead_letters():
    f = Flow()
    dlq = collect(f, "$DLQ.>")
    adv = collect(f, "$SYS.advisory.dead_letter")
    s = f.add_stream("S", "c.>")
    f.publish("c.1", b"one", type="t1", region="eu", subject="s1")
    f.publish("c.2", b"two")
    original = s.get(1)
    c = s.consumer("k", ack_wait=0.03, max_deliver=2)
    e = c.fetch(2)
    e[1].ack()
    time.sleep(0.04)
    assert [(x.seq, x.deliveries) for x in c.fetch(5)] == [(1, 2)]
    assert dlq == []
    time.sleep(0.04)
    assert c.fetch(5) == []
    (d,) = dlq
    assert d.routing_subject == "$DLQ.S.k"
    assert (d.id, d.data, d.type, d.source, d.subject) == (original.id, b"one", "t1",
                                                           "/fastflow", "s1")
    attrs = d.attributes()
    attrs.pop("ffhops"), attrs.pop("fftrace")
    assert attrs == dict(original.attributes(), ffdeliveries=2)
    (a,) = adv
    assert a.type == "io.fastflow.advisory.dead_letter"
    assert json.loads(a.data) == {"stream": "S", "consumer": "k", "seq": 1, "subject": "c.1",
                                  "id": original.id, "deliveries": 2,
                                  "dead_letter_subject": "$DLQ.S.k"}
    info = c.info()
    assert (info["dead_lettered"], info["pending"], info["ack_floor"]) == (1, 0, 2)
    assert f.stats()["advisories"] == 1
    time.sleep(0.04)
    assert c.fetch(5) == [] and len(dlq) == 1


def test_max_deliver_one_and_custom_dead_letter_subject():
    f = Flow()
    dead = collect(f, "dead.letters")
    adv = collect(f, "$SYS.advisory.>")
    s = f.add_stream("S", "c.>")
    dls = f.add_stream("DL", "dead.>")
    f.publish("c.1", b"x")
    c = s.consumer("k", ack_wait=0.02, max_deliver=1, dead_letter="dead.letters")
    assert seqs(c.fetch()) == [1]
    time.sleep(0.04)
    assert c.fetch() == []
    assert [(d.routing_subject, d.data, d["ffdeliveries"]) for d in dead] == [
        ("dead.letters", b"x", 1)]
    assert json.loads(adv[0].data)["dead_letter_subject"] == "dead.letters"
    assert [e.data for e in dls.replay()] == [b"x"]


def test_filter():
    f = Flow()
    s = f.add_stream("S", "c.>")
    for subj in ["c.a", "c.b", "c.a", "c.b.x", "c.b"]:
        f.publish(subj, subj.encode())
    c = s.consumer("f", filter="c.b")
    e = c.fetch(10)
    assert [(x.seq, x.routing_subject) for x in e] == [(2, "c.b"), (5, "c.b")]
    assert c.info()["next_seq"] == 6
    e[0].ack()
    assert c.ack_floor == 4                      # 3 and 4 are not for this consumer
    e[1].ack()
    assert (c.ack_floor, c.lag) == (5, 0)
    g = s.consumer("g", filter="c.b.>", ack="none")
    assert seqs(g.fetch(10)) == [4]
    assert (g.ack_floor, g.lag) == (5, 0)
    h = s.consumer("h", filter="c.a")
    assert seqs(h.fetch(1)) == [1]
    assert h.lag == 5                            # the filter is not applied to lag


def test_start_positions():
    f = Flow()
    s = f.add_stream("S", "c.>")
    stamps = []
    for i in range(1, 6):
        f.publish("c.x", bytes([i]))
        stamps.append(s.get(i).ts)
        time.sleep(0.002)
    assert seqs(s.consumer("first").fetch(10)) == [1, 2, 3, 4, 5]
    assert seqs(s.consumer("new", start="new").fetch(10)) == []
    assert seqs(s.consumer("last", start="last").fetch(10)) == [5]
    assert seqs(s.consumer("seq", start=3).fetch(10)) == [3, 4, 5]
    assert seqs(s.consumer("seq1", start=1).fetch(10)) == [1, 2, 3, 4, 5]
    beyond = s.consumer("beyond", start=99)
    assert beyond.fetch(10) == [] and beyond.ack_floor == 5
    # a datetime halfway between the 2nd and the 3rd event
    mid_us = (stamps[1] + stamps[2]) // 2 // 1000
    when = EPOCH + dt.timedelta(microseconds=mid_us)
    assert seqs(s.consumer("time", start=when).fetch(10)) == [3, 4, 5]
    assert s.consumer("future", start=when + dt.timedelta(days=1)).fetch(10) == []
    f.publish("c.x", b"6")
    assert seqs(s.consumer("new").fetch(10)) == [6]
    assert seqs(s.consumer("future").fetch(10)) == [6]
    assert seqs(s.consumer("last").fetch(10)) == [6]


def test_start_on_an_evicted_position():
    f, s = make(5, retention=Retention(max_events=2))
    assert seqs(s.consumer("first").fetch(10)) == [4, 5]
    assert seqs(s.consumer("old", start=2).fetch(10)) == [4, 5]


def test_datetime_start_is_converted_exactly():
    when = dt.datetime(2026, 11, 27, 10, 20, 19, 70202, tzinfo=UTC)
    exact = (when - EPOCH) // dt.timedelta(microseconds=1) * 1000
    assert ConsumerConfig(start=when).start == {"time": exact}


def test_ack_on_a_non_delivery_raises():
    f, s = make(1)
    got = collect(f, "c.>")
    f.publish("c.2", b"")
    for ev in (got[0], s.get(1), next(iter(s.replay()))):
        for op in (ev.ack, ev.nak, ev.term, ev.in_progress):
            with pytest.raises(FastflowError, match="is not a consumer delivery"):
                op()


@pytest.mark.parametrize("kw, field", [
    ({"start": "middle"}, "start"),
    ({"start": 0}, "start seq"),
    ({"start": True}, "start"),
    ({"start": 1.5}, "start"),
    ({"start": {"time": 1.5}}, "start"),
    ({"filter": "a..b"}, "a..b"),
    ({"ack": "some"}, "ack must be"),
    ({"ack_wait": 0}, "ack_wait"),
    ({"ack_wait": -1}, "ack_wait"),
    ({"ack_wait": float("nan")}, "ack_wait"),
    ({"ack_wait": True}, "ack_wait"),
    ({"max_deliver": -1}, "max_deliver"),
    ({"max_deliver": 1.0}, "max_deliver"),
    ({"max_in_flight": 0}, "max_in_flight"),
    ({"max_in_flight": None}, "max_in_flight"),
    ({"dead_letter": "a.*"}, "a.*"),
    ({"dead_letter": ""}, "empty subject"),
])
def test_config_validation(kw, field):
    f, s = make(1)
    with pytest.raises(ValueError, match=field.replace(".", r"\.").replace("*", r"\*")):
        s.consumer("v", **kw)
    assert s.consumers() == {}
    with pytest.raises(ValueError):
        ConsumerConfig(**kw)


def test_invalid_filter_and_dead_letter_are_subject_errors():
    f, s = make(1)
    with pytest.raises(SubjectError):
        s.consumer("v", filter="a..b")
    with pytest.raises(SubjectError):
        s.consumer("v", dead_letter="a.>")
    with pytest.raises(TypeError):
        s.consumer("v", bogus=1)


@pytest.mark.parametrize("name", ["", "bad name", "x" * 65, "a.b", None])
def test_consumer_name_validation(name):
    f, s = make(1)
    with pytest.raises(ValueError, match="consumer name must be"):
        s.consumer(name)


def test_same_name():
    f, s = make(3)
    c = s.consumer("k", filter="c.>", ack_wait=5)
    assert s.consumer("k") is c
    assert s.consumer("k", filter="c.>", ack_wait=5.0) is c
    with pytest.raises(ValueError, match="consumer 'k' of stream 'S' exists with another config"):
        s.consumer("k", filter="c.1", ack_wait=5)
    with pytest.raises(ValueError, match="exists with another config"):
        s.consumer("k", ack_wait=5)               # filter None != 'c.>'
    assert s.consumers() == {"k": c}


def test_config_value():
    when = EPOCH + dt.timedelta(seconds=1000)
    cfg = ConsumerConfig(start=when, filter="a.>", ack="all", ack_wait=2, max_deliver=3,
                         max_in_flight=4, dead_letter="d")
    d = cfg.to_dict()
    assert d == {"start": {"time": 1000 * 10 ** 9}, "filter": "a.>", "ack": "all",
                 "ack_wait": 2.0, "max_deliver": 3, "max_in_flight": 4, "dead_letter": "d",
                 "conflate": False}
    assert ConsumerConfig.from_dict(d) == cfg
    assert ConsumerConfig() == ConsumerConfig(start="first", ack_wait=30)
    assert ConsumerConfig().to_dict() == {"start": "first", "filter": None, "ack": "explicit",
                                          "ack_wait": 30.0, "max_deliver": 0,
                                          "max_in_flight": 1024, "dead_letter": None,
                                          "conflate": False}


def test_info_lag_pending_and_stats():
    f, s = make(4)
    c = s.consumer("k", ack_wait=7)
    e = c.fetch(3)
    e[0].ack()
    assert c.info() == {
        "name": "k", "stream": "S",
        "config": {"start": "first", "filter": None, "ack": "explicit", "ack_wait": 7.0,
                   "max_deliver": 0, "max_in_flight": 1024, "dead_letter": None,
                   "conflate": False},
        "delivered": 3, "redelivered": 0, "acked": 1, "naked": 0, "terminated": 0,
        "dead_lettered": 0, "lost": 0, "errors": 0, "conflated": 0, "pending": 2,
        "ack_floor": 1,
        "next_seq": 4, "lag": 3, "push": False}
    assert (c.pending, c.lag) == (2, 3)
    assert f.stats()["consumers"] == {"S/k": c.info()}
    assert s.info()["consumers"] == {"k": c.info()}
    assert repr(c) == "<Consumer 'k' of 'S' pending=2 ack_floor=1>"


def test_evicted_pending_deliveries_are_lost():
    f, s = make(2, retention=Retention(max_events=2))
    c = s.consumer("k", ack_wait=0.03)
    assert seqs(c.fetch(2)) == [1, 2]
    f.publish("c.3", b"")
    f.publish("c.4", b"")                        # evicts 1 and 2
    time.sleep(0.05)
    assert [(e.seq, e.deliveries) for e in c.fetch(10)] == [(3, 1), (4, 1)]
    assert c.info()["lost"] == 2 and c.ack_floor == 2


def test_delete_consumer():
    f, s = make(2)
    c = s.consumer("k")
    c.fetch(1)[0].ack()
    s.delete_consumer("k")
    assert s.consumers() == {}
    with pytest.raises(KeyError, match="has no consumer 'k'"):
        s.delete_consumer("k")
    with pytest.raises(ValueError, match="closed"):
        c.fetch()
    assert seqs(s.consumer("k").fetch(5)) == [1, 2]   # a new one starts over


# -- push ----------------------------------------------------------------------------------


def test_push_delivers_the_backlog_then_inline():
    f, s = make(3)
    got = []

    def cb(ev):
        got.append((ev.seq, ev.deliveries, ev.data))
        ev.ack()

    c = s.consumer("p", callback=cb)
    assert got == [(1, 1, b"\x01"), (2, 1, b"\x02"), (3, 1, b"\x03")]
    assert c.info()["push"] is True
    f.publish("c.4", b"\x04")
    assert got[-1] == (4, 1, b"\x04")            # inline, during publish
    f.publish_batch("c.5", [b"\x05", b"\x06"])
    assert seqs_of(got) == [1, 2, 3, 4, 5, 6]
    assert (c.ack_floor, c.pending) == (6, 0)
    f.publish("other", b"")
    assert len(got) == 6
    with pytest.raises(TypeError, match="push consumer"):
        c.__aiter__()
    # the same consumer, looked up again, keeps its callback
    assert s.consumer("p") is c
    with pytest.raises(TypeError, match="callback must be callable"):
        s.consumer("q", callback=5)


def seqs_of(got):
    return [g[0] for g in got]


def test_push_callback_errors_are_counted_and_redelivered_on_append():
    errors = []
    f = Flow(error_handler=lambda exc, who: errors.append((exc, who)))
    s = f.add_stream("S", "c.>")
    f.publish("c.1", b"")
    f.publish("c.2", b"")
    got = []

    def cb(ev):
        got.append((ev.seq, ev.deliveries))
        if ev.seq == 2 and ev.deliveries == 1:
            raise RuntimeError("fail once")
        ev.ack()

    c = s.consumer("p", callback=cb, ack_wait=0.03)
    assert got == [(1, 1), (2, 1)]
    assert c.info()["errors"] == 1 and c.pending == 1
    assert [(str(e), who) for e, who in errors] == [("fail once", c)]
    time.sleep(0.05)
    assert got == [(1, 1), (2, 1)]               # no loop: nothing until an append
    f.publish("c.3", b"")
    assert got == [(1, 1), (2, 1), (2, 2), (3, 1)]
    assert (c.pending, c.ack_floor) == (0, 3)
    assert f.stats()["callback_errors"] == 0      # consumer errors are the consumer's


def test_push_callback_errors_are_logged_by_default(caplog):
    f, s = make(1)

    def cb(ev):
        raise ValueError("bad")

    with caplog.at_level("ERROR", logger="fastflow"):
        c = s.consumer("p", callback=cb)
    assert c.info()["errors"] == 1
    assert [r.exc_info[0] for r in caplog.records if r.name == "fastflow"] == [ValueError]


def test_push_redelivery_on_a_timer_under_a_running_loop(aloop):
    async def main():
        f = Flow()
        s = f.add_stream("S", "c.>")
        got = []

        def cb(ev):
            got.append((ev.seq, ev.deliveries, time.monotonic()))
            if ev.deliveries == 2:
                ev.ack()

        c = s.consumer("p", callback=cb, ack_wait=0.05)
        t0 = time.monotonic()
        f.publish("c.1", b"")
        assert [(g[0], g[1]) for g in got] == [(1, 1)]
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.01)
        assert [(g[0], g[1]) for g in got] == [(1, 1), (1, 2)]
        assert got[1][2] - t0 >= 0.045
        assert (c.pending, c.ack_floor, c.info()["redelivered"]) == (0, 1, 1)
        await asyncio.sleep(0.1)
        assert len(got) == 2
        f.close()
    aloop(main)


# -- async pull ----------------------------------------------------------------------------


def test_async_pull_waits_for_new_events(aloop):
    async def main():
        f = Flow()
        s = f.add_stream("S", "c.>")
        f.publish("c.0", b"old")
        c = s.consumer("q", start="new")

        async def producer():
            for i in range(3):
                await asyncio.sleep(0.01)
                f.publish("c.%d" % i, bytes([i]))

        task = asyncio.create_task(producer())
        got = []
        async for ev in c:
            got.append((ev.seq, ev.data, ev.deliveries))
            ev.ack()
            if len(got) == 3:
                break
        await task
        assert got == [(2, b"\x00", 1), (3, b"\x01", 1), (4, b"\x02", 1)]
        assert (c.ack_floor, c.pending) == (4, 0)
    aloop(main)


def test_async_pull_redelivers_when_due(aloop):
    async def main():
        f, s = make(1)
        c = s.consumer("q", ack_wait=0.03)
        got = []
        async for ev in c:
            got.append((ev.seq, ev.deliveries))
            if ev.deliveries == 2:
                ev.ack()
                break
        assert got == [(1, 1), (1, 2)]
        assert c.pending == 0
    aloop(main)


def test_async_pull_wakes_on_publish_from_another_thread(aloop):
    async def main():
        f = Flow()
        s = f.add_stream("S", "c.>")
        c = s.consumer("q")
        th = threading.Thread(target=lambda: (time.sleep(0.03), f.publish("c.x", b"t")))
        th.start()
        try:
            ev = await asyncio.wait_for(c.__anext__(), 2)
        finally:
            th.join()
        assert (ev.seq, ev.data) == (1, b"t")
    aloop(main)


def test_async_pull_publish_between_fetch_and_listen_is_not_lost(aloop, monkeypatch):
    async def main():
        f = Flow()
        s = f.add_stream("S", "c.>")
        c = s.consumer("q")
        real = threading.get_ident
        fired = []

        def get_ident():
            if not fired and sys._getframe(1).f_code.co_name == "__anext__":
                fired.append(True)
                th = threading.Thread(target=f.publish, args=("c.x", b"raced"))
                th.start()
                th.join()
            return real()

        monkeypatch.setattr(consumer_module, "threading",
                            types.SimpleNamespace(get_ident=get_ident))
        try:
            ev = await asyncio.wait_for(c.__anext__(), 0.3)
        finally:
            assert fired == [True]
        assert ev.data == b"raced"
    aloop(main)


@pytest.mark.parametrize("how", ["delete_consumer", "flow_close"])
def test_async_pull_ends_when_the_consumer_is_closed(aloop, how):
    async def main():
        f, s = make(0)
        c = s.consumer("q")
        close = (lambda: s.delete_consumer("q")) if how == "delete_consumer" else f.close
        asyncio.get_running_loop().call_later(0.02, close)
        got = [ev async for ev in c]
        assert got == []
    aloop(main)


# -- durability ------------------------------------------------------------------------------


def test_consumer_resumes_after_the_ack_floor(tmp_path):
    with Flow(tmp_path) as f:
        s = f.add_stream("S", "c.>")
        for i in range(1, 6):
            f.publish("c.%d" % i, bytes([i]), type="t")
        c = s.consumer("k", ack_wait=30, filter="c.>", max_deliver=5)
        e = c.fetch(5)
        for i in (0, 1, 3):
            e[i].ack()                            # floor 2; 3 and 5 unacked
        assert c.ack_floor == 2
        ids = {x.seq: x.id for x in e}
    with Flow(tmp_path) as g:
        s2 = g.stream("S")
        c2 = s2.consumers()["k"]
        assert c2.config == ConsumerConfig(ack_wait=30, filter="c.>", max_deliver=5)
        assert (c2.ack_floor, c2.pending, c2.lag) == (2, 0, 3)
        assert s2.consumer("k", ack_wait=30, filter="c.>", max_deliver=5) is c2
        r = c2.fetch(10)
        # at least once: 3 and 5 again, and 4 (acked above the floor) too
        assert [(x.seq, x.deliveries, x.data, x.type) for x in r] == [
            (3, 1, b"\x03", "t"), (4, 1, b"\x04", "t"), (5, 1, b"\x05", "t")]
        assert [x.id for x in r] == [ids[3], ids[4], ids[5]]
        r[0].ack()
        r[1].ack()
        assert g.publish("c.6", b"\x06") == 6
    with Flow(tmp_path) as h:
        c3 = h.stream("S").consumer("k")
        assert c3.ack_floor == 4
        assert seqs(c3.fetch(10)) == [5, 6]
        fresh = h.stream("S").consumer("fresh", start=dt.datetime(2000, 1, 1, tzinfo=UTC))
        assert seqs(fresh.fetch(10)) == [1, 2, 3, 4, 5, 6]
    with Flow(tmp_path) as k:
        cs = k.stream("S").consumers()
        assert sorted(cs) == ["fresh", "k"]
        assert cs["fresh"].config.start == {"time": 946684800 * 10 ** 9}
        assert cs["fresh"].ack_floor == 0              # nothing acked
        k.stream("S").delete_consumer("fresh")
    with Flow(tmp_path) as m:
        assert sorted(m.stream("S").consumers()) == ["k"]


def test_flush_persists_the_floor(tmp_path):
    f = Flow(tmp_path)
    s = f.add_stream("S", "c.>")
    for _ in range(3):
        f.publish("c.x", b"")
    c = s.consumer("k")
    for e in c.fetch(2):
        e.ack()
    f.flush()
    assert s.log.cursor("k") == 2
    f.close()
