"""pytest-benchmark micro benchmarks for the engine's publish path (``fastflow.Flow``).

Not part of the test suite (``testpaths = ["tests"]``); run them explicitly::

    python -m pytest benchmarks/test_bench_engine.py -q                      # time them
    python -m pytest benchmarks/test_bench_engine.py -q --benchmark-disable  # only check they run

The workload of ``compare_engine.py``: 100-byte payloads on
``orders.eu.created``; one subscription to ``orders.*.created`` (or, for
fan-out, ten subscriptions whose patterns all match), each with the Python
callback ``def on_event(ev): pass``; a stream capturing ``orders.>`` with
``Retention(max_events=100,000)``, pre-filled with 400,000 events (steady
state: no growth, no first touch of fresh pages while timed).  The
baseline is a plain dict-of-lists bus (exact subjects, no matching, no log,
the same callback).  One round is a whole loop or a run of batches
(``benchmark.pedantic(..., iterations=1)``); the figures are seconds per
round, and ``extra_info`` says how many events and deliveries a round
makes.  There are no timing assertions here; see ``compare_engine.py`` for
the comparison table, the latency percentiles and the targets.
"""

import pytest

import fastflow
# compare_engine.py's workload and its baseline; conftest.py's payload fixtures read PAYLOAD
from compare_engine import (BATCH, FANOUT_PATTERNS, PATTERN, PAYLOAD, RING,  # noqa: F401
                            STREAM_PATTERN, SUBJECT, DictBus)

PREFILL = 400_000
CALLS = 10_000  # publish() per round
BATCHES = 10  # publish_batch() per round
ROUNDS = 20
SEED = 2026


def on_event(ev):
    """The callback: a Python function doing nothing."""


def _flow(patterns, payloads):
    flow = fastflow.Flow()
    flow.add_stream("orders", [STREAM_PATTERN], fastflow.Retention(max_events=RING))
    for _ in range(PREFILL // BATCH):
        flow.publish_batch(SUBJECT, payloads)
    for p in patterns:
        flow.subscribe(p, on_event)
    return flow


@pytest.fixture(scope="module")
def flows(payloads):
    """fan-out -> a steady-state Flow."""
    made = {1: _flow([PATTERN], payloads), 10: _flow(FANOUT_PATTERNS, payloads)}
    yield made
    for f in made.values():
        f.close()


def _bus(name, fanout, flows):
    return flows[fanout] if name == "fastflow" else DictBus([(SUBJECT, on_event)] * fanout)


def _call_loop(publish, n, payload):
    for _ in range(n):
        publish(SUBJECT, payload)


def _batch_loop(publish_batch, n, payloads):
    for _ in range(n):
        publish_batch(SUBJECT, payloads)


def _check(bus, flow_stats_before, events, fanout):
    """For the Flow: every event published, delivered to every subscription
    and stored once; the stream still at its bound."""
    if not isinstance(bus, fastflow.Flow):
        return
    st = bus.stats()
    published = st["published"] - flow_stats_before["published"]
    assert published >= events and published % events == 0
    assert st["delivered"] - flow_stats_before["delivered"] == published * fanout
    assert st["stored"] - flow_stats_before["stored"] == published
    assert st["dropped_no_interest"] == flow_stats_before["dropped_no_interest"]
    assert st["callback_errors"] == 0
    assert len(bus.stream("orders")) == RING


@pytest.mark.parametrize("fanout", [1, 10])
@pytest.mark.parametrize("bus_name", ["fastflow", "dict_bus"])
def test_publish(benchmark, flows, payload, bus_name, fanout):
    bus = _bus(bus_name, fanout, flows)
    benchmark.group = "publish() per call, fan-out {}".format(fanout)
    benchmark.extra_info.update(events=CALLS, deliveries=CALLS * fanout)
    before = bus.stats() if bus_name == "fastflow" else None
    benchmark.pedantic(_call_loop, args=(bus.publish, CALLS, payload), rounds=ROUNDS,
                       iterations=1, warmup_rounds=1)
    _check(bus, before, CALLS, fanout)


@pytest.mark.parametrize("fanout", [1, 10])
@pytest.mark.parametrize("bus_name", ["fastflow", "dict_bus"])
def test_publish_batch(benchmark, flows, payloads, bus_name, fanout):
    bus = _bus(bus_name, fanout, flows)
    benchmark.group = "publish_batch(1,000) x {}, fan-out {}".format(BATCHES, fanout)
    benchmark.extra_info.update(events=BATCHES * BATCH, deliveries=BATCHES * BATCH * fanout)
    before = bus.stats() if bus_name == "fastflow" else None
    benchmark.pedantic(_batch_loop, args=(bus.publish_batch, BATCHES, payloads), rounds=ROUNDS,
                       iterations=1, warmup_rounds=1)
    _check(bus, before, BATCHES * BATCH, fanout)


def test_sanity(payloads):
    """Not a benchmark: the workload routes as described (one match per
    pattern, the event stored first, the bus calls every callback)."""
    got = []
    with fastflow.Flow() as flow:
        stream = flow.add_stream("orders", [STREAM_PATTERN], fastflow.Retention(max_events=RING))
        for p in FANOUT_PATTERNS:
            flow.subscribe(p, lambda ev: got.append((ev.seq, ev.data)))
        assert flow.publish(SUBJECT, payloads[0]) == 1
        assert got == [(1, payloads[0])] * len(FANOUT_PATTERNS)
        assert [e.data for e in stream.replay()] == [payloads[0]]
    calls = []
    bus = DictBus([(SUBJECT, calls.append)] * 10)
    bus.publish(SUBJECT, payloads[0])
    bus.publish_batch(SUBJECT, payloads[:3])
    bus.publish("orders.us.created", payloads[0])  # exact subjects only
    assert calls == [payloads[0]] * 10 + [p for p in payloads[:3] for _ in range(10)]
