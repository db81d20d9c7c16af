"""Routing a stream to Subscriptions-API subscriptions: does the cost per
event stay flat as subscriptions grow?

A memory stream is filled with ``--events`` events (1,000,000 by default)
whose ``type`` is one of 10,000 (``com.acme.t<k>``), with a ``source``
under ``/eu/`` or ``/us/`` and an Integer extension ``amount``.  Then a
``SubscriptionManager`` routes the whole stream, from the first event, to
the subscriptions of one of these configurations:

* ``10``: 10 subscriptions with ``types`` of 1,000 types each (together
  the 10,000: each event goes to one subscription, as below);
* ``10k+100sql``: 10,000 subscriptions with an exact ``type`` filter
  each and 100 with a CESQL filter, ``type = 'com.acme.t<k>' AND source
  LIKE '/eu/%' AND amount > 100``.

Every matched event is delivered to this engine's NATS subject
``sink.<n>`` (no subscriber: the delivery is one ``publish_record``), so
the figure is the manager's: read the stream, find the candidates, run
the filters, queue and hand over.  The figure is events/s from the
manager's start until every subscription's floor reaches the end of the
stream; the median of ``--repeat`` runs, the configurations interleaved.
The goal: ``10k+100sql`` at >= 0.5x ``10``.

``--candidates`` times the index alone instead: the stream read batch by
batch (1,024 events) and each batch's candidates found, as the manager
asks for them, in ns per event (the read included, no Event made).
"""

import argparse
import asyncio
import gc
import random
import statistics
import sys
import time

from _common import fmt_rate, say

from fastflow import Event, Flow, Retention
from fastflow._impl import events_from_batch
from fastflow.subscriptions import FilterIndex, SubscriptionManager, compile_filter

TYPES = 10000


def fill(flow, n, seed=1):
    rnd = random.Random(seed)
    datas = [b'{"n": %d}' % i for i in range(64)]
    publish = flow.publish
    for i in range(n):
        k = rnd.randrange(TYPES)
        publish(Event("bench.orders", datas[i & 63], type="com.acme.t{}".format(k),
                      source="/{}/shop{}".format("eu" if i & 1 else "us", i % 7),
                      amount=rnd.randrange(200)))


def bodies(config):
    def nats(n, **kw):
        d = {"protocol": "NATS", "sink": "fastflow:", "config": {"start": "first"},
             "protocolsettings": {"subject": "sink.{}".format(n)}}
        d.update(kw)
        return d
    if config == "10":
        return [nats(i, types=["com.acme.t{}".format(k) for k in range(i, TYPES, 10)])
                for i in range(10)]
    out = [nats(i, types=["com.acme.t{}".format(i)]) for i in range(TYPES)]
    out += [nats(TYPES + j, filters=[{"sql": "type = 'com.acme.t{}' AND source LIKE '/eu/%' "
                                             "AND amount > 100".format(j * 97)}])
            for j in range(100)]
    return out


async def run(flow, config):
    mgr = SubscriptionManager(flow, max_per_owner=0)
    await mgr.start()
    subs = [mgr.create(b, None) for b in bodies(config)]
    last = flow.stream("bench").log.last_seq
    first = flow.stream("bench").log.first_seq
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    try:
        while True:
            await asyncio.sleep(0.001)
            # (the floors are asked once the readers are at the end: asking
            # 10,000 subscriptions every millisecond would be the figure)
            if mgr.reading() or not all(s.current_floor() >= last for s in subs):
                continue
            break
    finally:
        t = time.perf_counter() - t0
        gc.enable()
    delivered = sum(s.delivered for s in subs)
    await mgr.stop()
    return (last - first + 1) / t, delivered


def candidates_cost(flow, config):
    """ns per event of finding the candidates of the whole stream."""
    index = FilterIndex()
    for i, body in enumerate(bodies(config)):
        index.add(i, compile_filter(types=body.get("types"), filters=body.get("filters"))[1])
    lg = flow.stream("bench").log
    batched = hasattr(index, "candidates_batch")
    gc.collect()
    t0 = time.perf_counter()
    pos, n = lg.first_seq, 0
    while pos <= lg.last_seq:
        b = lg.read(pos, limit=1024)
        if batched:
            rows, handles = index.candidates_batch(b)
        else:                           # (an index of one event at a time: Events first)
            for ev in events_from_batch(b, "bench"):
                index.candidates(ev)
        n += len(b)
        pos = b.next_seq
    return (time.perf_counter() - t0) / n * 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="100,000 events, 1 run")
    ap.add_argument("--candidates", action="store_true",
                    help="time the index alone (ns per event)")
    a = ap.parse_args()
    if a.quick:
        a.events, a.repeat = 100000, 1
    flow = Flow()
    flow.add_stream("bench", ["bench.>"], Retention(max_events=a.events))
    t = time.perf_counter()
    fill(flow, a.events)
    say("filled the stream with {:,} events in {:.1f} s".format(a.events,
                                                                 time.perf_counter() - t))
    configs = ("10", "10k+100sql")
    if a.candidates:
        for c in configs:
            cost = statistics.median(candidates_cost(flow, c) for _ in range(a.repeat))
            say("{:>11}: candidates in {:.0f} ns an event ({})".format(c, cost,
                                                                   fmt_rate(1e9 / cost)))
        return 0
    rates = {c: [] for c in configs}
    for r in range(a.repeat):
        for c in configs:
            rate, delivered = asyncio.run(run(flow, c))
            rates[c].append(rate)
            say("  run {} {:>11}: {} ({:,} deliveries)".format(r + 1, c, fmt_rate(rate),
                                                               delivered))
    med = {c: statistics.median(v) for c, v in rates.items()}
    say("")
    say("{:>11}  {:>14}  {}".format("subs", "events/s", "ratio"))
    for c in configs:
        say("{:>11}  {:>14}  {:.2f}x".format(c, fmt_rate(med[c]), med[c] / med["10"]))
    ok = med["10k+100sql"] >= 0.5 * med["10"]
    say("goal (10k+100sql >= 0.5x 10): {}".format("met" if ok else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
