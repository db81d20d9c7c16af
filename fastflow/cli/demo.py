"""``fastflow demo``: the embedded engine (matcher, log, Flow) on the
synthetic market-data workload (``fastflow.workload``), with what it did
and how fast, beside the pure-Python reference matcher."""

import json
import os
import platform
import statistics
import sys
import time

from fastflow._impl import COMPILED, Log, Matcher
from fastflow._ref import Matcher as RefMatcher
from fastflow._version import __version__
from fastflow.flow import Flow, Retention
from fastflow.workload import make_workload


def _median_rate(fn, count, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count / statistics.median(times)


def _loop(match, subjects):
    def run():
        for s in subjects:
            match(s)
    return run


def demo(args):
    out = {"fastflow": __version__, "core": "native" if COMPILED else "reference",
           "python": platform.python_version(), "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    w = make_workload(n_subs=args.subs, n_publishes=args.publishes,
                      n_subjects=args.subjects, seed=args.seed)
    out["workload"] = w.describe()
    out["workload_seconds"] = round(time.perf_counter() - t0, 3)
    pubs = w.publishes

    def build(cache_size):
        m = Matcher(cache_size=cache_size)
        add = m.add
        for i, p in enumerate(w.patterns):
            add(p, i)
        return m

    t0 = time.perf_counter()
    cold = build(0)
    dt = time.perf_counter() - t0
    st = cold.stats()
    out["subscribe_per_s"] = len(w.patterns) / dt
    out["trie_nodes"] = st["nodes"]
    out["matcher_bytes"] = st["memory_bytes"]

    out["match_cache_off_per_s"] = _median_rate(_loop(cold.match, pubs), len(pubs), args.repeat)
    warm = build(65536)
    warm.match_batch(pubs)  # warm the cache
    out["match_cache_warm_per_s"] = _median_rate(_loop(warm.match, pubs), len(pubs), args.repeat)
    batch = warm.match_batch(pubs)
    out["match_batch_cache_warm_per_s"] = _median_rate(lambda: warm.match_batch(pubs), len(pubs),
                                                       args.repeat)
    ref = RefMatcher()
    for i, p in enumerate(w.patterns):
        ref.add(p, i)
    sub = pubs[: max(1, min(len(pubs), 200_000))]
    out["reference_match_per_s"] = _median_rate(_loop(ref.match, sub), len(sub), 1)
    out["reference_sample"] = len(sub)
    offs = memoryview(batch.offsets)
    interested = sum(1 for i in range(len(pubs)) if offs[i + 1] > offs[i])
    out["deliveries"] = batch.total
    out["fanout_mean"] = batch.total / len(pubs)
    out["publishes_with_interest"] = interested / len(pubs)
    wst = warm.stats()
    out["cache_hit_rate"] = wst["cache_hits"] / max(1, wst["matches"])

    # the event log: the same stream, 100-byte payloads, a bounded log
    payload = b"x" * 100
    n_log = min(len(pubs), 1_000_000)
    stream = pubs[:n_log]
    log = Log(max_events=max(1, n_log // 2))
    chunks = [stream[i:i + 10_000] for i in range(0, n_log, 10_000)]
    payloads = [payload] * 10_000

    def append_batches():
        for c in chunks:
            log.append_batch(c, payloads[: len(c)])

    out["log_append_batch_per_s"] = _median_rate(append_batches, n_log, args.repeat)

    def replay():
        n = 0
        for b in log.replay(batch=10_000):
            n += len(b)
        return n

    out["log_retained"] = len(log)
    out["log_replay_per_s"] = _median_rate(replay, len(log), args.repeat)
    t0 = log.get(log.first_seq).ts
    t1 = log.get(log.last_seq).ts
    out["log_seek_time_us"] = _seek_time(log, t0, t1) * 1e6

    # the engine: every pattern subscribed, one stream capturing everything,
    # the publishes routed through Flow.publish_batch
    out.update(_engine(w.patterns, pubs, payload, args.repeat))

    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    M = 1e6
    print("fastflow {} - embedded matcher demo ({} core, Python {}, {} cpus)".format(
        out["fastflow"], out["core"], out["python"], out["cpus"]))
    print("workload : " + out["workload"])
    print("subscribe: {:,} patterns at {:.2f} M/s -> {:,} trie nodes, {:.2f} MiB in C".format(
        len(w.patterns), out["subscribe_per_s"] / M, out["trie_nodes"],
        out["matcher_bytes"] / 2**20))
    print("publish -> match, median of {} runs over {:,} publishes:".format(args.repeat, len(pubs)))
    rows = [
        ("match(), one call per publish, cache off", out["match_cache_off_per_s"]),
        ("match(), one call per publish, cache warm", out["match_cache_warm_per_s"]),
        ("match_batch(), whole stream, cache warm", out["match_batch_cache_warm_per_s"]),
        ("pure-Python reference match() ({:,} publishes)".format(len(sub)),
         out["reference_match_per_s"]),
    ]
    ref_rate = out["reference_match_per_s"]
    for name, rate in rows:
        print("  {:<50} {:>7.2f} M publishes/s  {:>6.1f}x the reference".format(
            name, rate / M, rate / ref_rate))
    print("delivered: {:,} (mean fanout {:.2f}; {:.0%} of publishes had interest); cache hit rate "
          "{:.1%}".format(out["deliveries"], out["fanout_mean"], out["publishes_with_interest"],
                          out["cache_hit_rate"]))
    print("event log: the stream appended with 100-byte payloads at {:.2f} M records/s "
          "(append_batch), {:,} retained, replayed at {:.2f} M records/s, a time seek takes "
          "{:.2f} us".format(
              out["log_append_batch_per_s"] / M, out["log_retained"], out["log_replay_per_s"] / M,
              out["log_seek_time_us"]))
    print("engine   : Flow.publish_batch of the stream -> {:,} subscriptions + 1 stream: "
          "{:.2f} M events/s, {:.2f} M deliveries/s, {:,} stored".format(
              out["engine_subscriptions"], out["engine_publish_batch_per_s"] / M,
              out["engine_deliveries_per_s"] / M, out["engine_stored"]))
    return 0


def _engine(patterns, pubs, payload, repeat):
    from collections import deque

    n = min(len(pubs), 1_000_000)
    flow = Flow()
    sink = deque(maxlen=0).append           # a C callable that drops what it gets
    for p in patterns:
        flow.subscribe(p, sink)
    flow.add_stream("all", [">"], Retention(max_events=max(1, n // 2)))
    chunks = [pubs[i:i + 10_000] for i in range(0, n, 10_000)]
    payloads = [payload] * 10_000

    def run():
        for c in chunks:
            flow.publish_batch(c, payloads[: len(c)])

    before = flow.stats()["delivered"]
    rate = _median_rate(run, n, repeat)
    st = flow.stats()
    runs = st["published"] // n
    deliveries = (st["delivered"] - before) / max(1, runs)
    out = {"engine_subscriptions": len(patterns), "engine_publish_batch_per_s": rate,
           "engine_deliveries_per_s": rate * deliveries / n,
           "engine_stored": st["streams"]["all"]["events"]}
    flow.close()
    return out


def _seek_time(log, t0, t1, n=2000):
    import random

    rnd = random.Random(1)
    ts = [rnd.randint(t0, max(t0, t1)) for _ in range(n)]
    seek = log.seek
    t = time.perf_counter()
    for x in ts:
        seek(time=x)
    return (time.perf_counter() - t) / n

