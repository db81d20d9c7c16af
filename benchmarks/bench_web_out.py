"""Micro benchmark of the web doors' wire targets: the cost of one delivery
of a 16-byte event to WsJsonTarget (CloudEvents JSON in a WebSocket text
frame) and SseTarget (an SSE message) next to NatsTarget and NativeTarget,
with 1 and 10 subscribers of the same kind on the subject.

Two measures, each the median of interleaved runs:

* ``publish``: ``Router.publish(subject, 16 bytes)`` into the targets (the
  router's whole path: match, record, one WireMsg, each target's _write);
  ``per delivery`` is what the subscribers add over the same publish with
  no subscriber, divided by their number.  With 10 web subscribers the JSON
  is made once and copied ten times.
* ``stored``: ``WireTarget.write_batch`` of 1,000 stored 16-byte events
  (Python pays once per batch): C time per record, the JSON made anew for
  each record (no subscriber shares it).

Run: ``python benchmarks/bench_web_out.py [--quick] [--json]``.  The outputs
are emptied between runs, outside the timed part.
"""

import argparse
import statistics
import sys
import time

import _common
from _common import add_output_args, cpu_facts, fastflow_facts, python_desc, say

from fastflow import _impl as core

SUBJECT = "orders.eu.created"
PAYLOAD = b"x" * 16
BATCH = 1000

KINDS = {
    "NativeTarget": lambda out, i: core.NativeTarget(out, i + 1),
    "NatsTarget": lambda out, i: core.NatsTarget(out, str(i + 1)),
    "WsJsonTarget": lambda out, i: core.WsJsonTarget(out),
    "SseTarget": lambda out, i: core.SseTarget(out),
}


def publish_row(kind, nsubs, calls):
    """A function timing ``calls`` publishes into ``nsubs`` targets of
    ``kind`` (None: no subscriber); returns ns per publish."""
    router = core.Router()
    out = core.OutBuf(0)
    for i in range(nsubs):
        router.add(SUBJECT, KINDS[kind](out, i))
    pub = router.publish
    rng = range(calls)

    def run():
        out.clear()
        t0 = time.perf_counter_ns()
        for _ in rng:
            pub(SUBJECT, PAYLOAD)
        t = time.perf_counter_ns() - t0
        out.clear()
        return t / calls
    return run


def stored_row(kind, rounds):
    """A function timing ``write_batch`` of BATCH stored events ``rounds``
    times; returns ns per record."""
    log = core.Log()
    for _ in range(BATCH):
        log.append(SUBJECT, core.Event(SUBJECT, PAYLOAD).encode())
    batch = log.read(1, limit=BATCH)
    assert len(batch) == BATCH
    out = core.OutBuf(0)
    target = KINDS[kind](out, 0)
    write = target.write_batch

    def run():
        out.clear()
        t0 = time.perf_counter_ns()
        for _ in range(rounds):
            write(batch, "S")
            out.clear()
        return (time.perf_counter_ns() - t0) / (rounds * BATCH)
    return run


def median_of(fns, repeat):
    """Run every function ``repeat`` times, interleaved (after one warm-up
    run each); the median of each."""
    for fn in fns.values():
        fn()
    got = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            got[k].append(fn())
    return {k: statistics.median(v) for k, v in got.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15, help="runs of each row (median)")
    ap.add_argument("--calls", type=int, default=100_000, help="publishes per run")
    add_output_args(ap, "a smoke run: few runs of few publishes")
    args = ap.parse_args(argv)
    if args.json:
        _common.report_to(sys.stderr)
    repeat, calls = (3, 5_000) if args.quick else (args.repeat, args.calls)
    rounds = max(1, calls // BATCH)

    m = {**cpu_facts(), **fastflow_facts(), "python": python_desc()}
    say("{} ({} usable cores), {}, fastflow {} ({} core, git {})".format(
        m["cpu"], m["usable_cores"], m["python"], m["fastflow"],
        "compiled" if m["fastflow_compiled"] else "PURE-PYTHON", m["fastflow_git"] or "?"))
    say("16-byte events on {!r}; median of {} interleaved runs".format(SUBJECT, repeat))

    rows = {("none", 0): publish_row(None, 0, calls)}
    for kind in KINDS:
        for n in (1, 10):
            rows[(kind, n)] = publish_row(kind, n, calls)
    pub = median_of(rows, repeat)
    base = pub[("none", 0)]
    stored = median_of({k: stored_row(k, rounds) for k in KINDS}, repeat)

    say("")
    say("{:<14} {:>5} {:>14} {:>14} {:>14}".format(
        "target", "subs", "ns/publish", "ns/delivery", "stored ns/rec"))
    say("{:<14} {:>5} {:>14.0f} {:>14} {:>14}".format("(none)", 0, base, "-", "-"))
    results = []
    for kind in KINDS:
        for n in (1, 10):
            per = (pub[(kind, n)] - base) / n
            say("{:<14} {:>5} {:>14.0f} {:>14.0f} {:>14}".format(
                kind, n, pub[(kind, n)], per, "{:.0f}".format(stored[kind]) if n == 1 else ""))
            results.append({"target": kind, "subscribers": n, "ns_per_publish": pub[(kind, n)],
                            "ns_per_delivery": per, "stored_ns_per_record": stored[kind]})
    if args.json:
        _common.write_json({"machine": m, "no_subscriber_ns_per_publish": base,
                            "results": results})


if __name__ == "__main__":
    main()
