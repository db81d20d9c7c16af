"""Micro benchmark of ImportTarget, the cross-account bridge of the router:
what an account's import adds to an event that another account publishes.

Every row publishes a 100-byte event record with ``Router.publish_record``
(the path a network PUB takes) and times it in ns per event:

* ``direct``: into a router with one subscriber, a NativeTarget on an
  OutBuf (cleared every ``--clear-every`` events, in the timed loop);
* ``import prefix``: into a source router whose ImportTarget (prefix
  ``partner.acme.``) forwards it into such a router;
* ``import plain``: the same with no prefix (the subject as is).

``import cost`` is the row's time less ``direct``'s: the source router's
match and delivery plus the forward (the rewrite, the record copy, the
depth counter, the nested ``_publish_wire``).  Each figure is the median
of ``--repeat`` interleaved runs (after one warm-up run each).

Run: ``python benchmarks/bench_import.py [--quick] [--json]``.
"""

import argparse
import statistics
import sys
import time

import _common
from _common import add_output_args, cpu_facts, fastflow_facts, python_desc, say

from fastflow import _impl as core

SUBJECT = "orders.eu.created"
RECORD_BYTES = 100


def record():
    """An event record of exactly RECORD_BYTES bytes on SUBJECT."""
    base = len(core.Event(SUBJECT, b"").encode())
    rec = core.Event(SUBJECT, b"x" * (RECORD_BYTES - base)).encode()
    assert len(rec) == RECORD_BYTES, len(rec)
    return rec


def subscribed():
    """A router with one NativeTarget on ``>``, and its OutBuf."""
    router = core.Router("partner")
    out = core.OutBuf(0)
    router.add(">", core.NativeTarget(out, 1))
    return router, out


def row(kind, calls, every):
    """A function timing ``calls`` publishes of the record for row ``kind``
    ("direct", "prefix", "plain"); returns ns per event."""
    dest, out = subscribed()
    if kind == "direct":
        entry = dest
        target = None
    else:
        entry = core.Router("acme")
        target = core.ImportTarget(dest, prefix=b"partner.acme." if kind == "prefix" else b"")
        entry.add("orders.>", target)
    pub = entry.publish_record
    rec = record()
    clear = out.clear
    chunks = range(max(1, calls // every))
    inner = range(every)

    def run():
        clear()
        t0 = time.perf_counter_ns()
        for _ in chunks:
            for _ in inner:
                pub(SUBJECT, rec)
            clear()
        t = time.perf_counter_ns() - t0
        return t / (len(chunks) * every)

    # a check, outside the timed runs: the event arrives where it should
    pub(SUBJECT, rec)
    assert out.msgs == 1, out.msgs
    if target is not None:
        assert target.forwarded == 1 and 0 < target.forwarded_bytes < RECORD_BYTES  # (payload)
    clear()
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="runs of each row (median)")
    ap.add_argument("--calls", type=int, default=500_000, help="publishes per run")
    ap.add_argument("--clear-every", type=int, default=1000,
                    help="events between two clears of the subscriber's OutBuf")
    add_output_args(ap, "a smoke run: few runs of few publishes")
    args = ap.parse_args(argv)
    if args.json:
        _common.report_to(sys.stderr)
    repeat, calls = (3, 20_000) if args.quick else (args.repeat, args.calls)

    m = {**cpu_facts(), **fastflow_facts(), "python": python_desc()}
    say("{} ({} usable cores), {}, fastflow {} ({} core, git {})".format(
        m["cpu"], m["usable_cores"], m["python"], m["fastflow"],
        "compiled" if m["fastflow_compiled"] else "PURE-PYTHON", m["fastflow_git"] or "?"))
    say("{}-byte records on {!r} by publish_record; {} events per run, OutBuf cleared every "
        "{}; median of {} interleaved runs".format(RECORD_BYTES, SUBJECT, calls,
                                                   args.clear_every, repeat))

    rows = {"direct": "direct (1 NativeTarget)", "prefix": "import, prefix partner.acme.",
            "plain": "import, no prefix"}
    fns = {k: row(k, calls, args.clear_every) for k in rows}
    for fn in fns.values():             # warm-up
        fn()
    runs = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            runs[k].append(fn())
    med = {k: statistics.median(v) for k, v in runs.items()}
    base = med["direct"]

    say("")
    say("{:<30} {:>10} {:>12}".format("path", "ns/event", "import cost"))
    results = []
    for k, label in rows.items():
        cost = med[k] - base
        say("{:<30} {:>10.0f} {:>12}".format(label, med[k],
                                              "-" if k == "direct" else "{:+.0f}".format(cost)))
        results.append({"path": k, "ns_per_event": med[k], "runs": runs[k],
                        "import_cost_ns": None if k == "direct" else cost})
    if args.json:
        _common.write_json({"machine": m, "record_bytes": RECORD_BYTES, "calls": calls,
                            "clear_every": args.clear_every, "repeat": repeat,
                            "results": results})


if __name__ == "__main__":
    main()
