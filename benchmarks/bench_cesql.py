"""CESQL filters over stored events: the core's compiled program
(``fastflow.cesql.compile(expr).program``) against the pure-Python
evaluator (``fastflow._ref.CesqlProgram``) and a Python lambda doing the
same test on a dict (the baseline).

The filter: ``type = 'com.acme.order' AND source LIKE '/eu/%' AND amount >
100`` (``amount`` an Integer extension).  ``--events`` events (100,000) are
published into a memory stream, with a mix of two types, three regions of
sources and amounts 0..200 (about a twelfth pass).  Rows, each in
evaluations a second:

* ``lambda on dict``: ``[f(d) for d in dicts]`` over the events' attribute
  dicts, made beforehand;
* ``match_batch(batch)``: the compiled program over ``Batch``es of 1,000
  stored records (read beforehand; one C call a batch);
* ``read + match_batch``: the same, the reads from the stream timed too;
* ``matches(record)``: one call a stored ``Record``;
* ``matches(event)``: one call a decoded ``fastflow.Event`` (its C fields);
* ``matches(dict)``: one call a mapping (the slow path);
* ``reference matches(record)`` and ``reference matches(dict)``: the Python
  evaluator (on a tenth of the events).

Each figure is the median of ``--repeat`` runs, the rows interleaved, gc
off while a run is timed.  ``--json`` writes the figures to stdout (the
report goes to stderr); ``--quick`` is a smoke run.
"""

import argparse
import random
import statistics
import sys
import time

from _common import (add_output_args, cpu_facts, fastflow_facts, fmt_rate, fmt_ratio,
                     machine_format_fields, python_desc, render_table, report_to, say,
                     time_rows, write_json)

import fastflow
from fastflow import Flow, _ref, cesql

FILTER = "type = 'com.acme.order' AND source LIKE '/eu/%' AND amount > 100"
BATCH = 1000


def baseline(d):
    return d["type"] == "com.acme.order" and d["source"].startswith("/eu/") and d["amount"] > 100


def publish(flow, n, seed):
    rnd = random.Random(seed)
    types = ("com.acme.order", "com.acme.refund")
    regions = ("/eu/", "/us/", "/ap/")
    dicts = []
    for i in range(n):
        attributes = {"type": rnd.choice(types),
                      "source": rnd.choice(regions) + "shop-{}".format(rnd.randrange(20)),
                      "amount": rnd.randrange(201)}
        flow.publish("orders.{}".format(i % 16), b'{"n": %d}' % i, **attributes)
        dicts.append(attributes)
    return dicts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events in the stream")
    ap.add_argument("--repeat", type=int, default=7, help="runs a figure is the median of")
    ap.add_argument("--seed", type=int, default=1)
    add_output_args(ap, "10,000 events, 3 runs")
    args = ap.parse_args()
    if args.json:
        report_to(sys.stderr)
    n = 10_000 if args.quick else args.events
    repeat = 3 if args.quick else args.repeat
    m = {**cpu_facts(), **fastflow_facts(), "python": python_desc()}
    f = machine_format_fields(m)
    say("{cpu}{mhz}, {cores} cores ({usable} usable), {py}, fastflow {ver} ({kind}, git {git}, "
        "built {built})".format(cpu=m["cpu"], usable=m["usable_cores"], cores=m["cores"],
                                py=m["python"], ver=m["fastflow"], **f))
    if not fastflow.COMPILED:
        say("the compiled core is not loaded: the compiled rows run the reference")

    flow = Flow()
    stream = flow.add_stream("orders", ["orders.>"])
    dicts = publish(flow, n, args.seed)
    log = stream.log
    program = cesql.compile(FILTER).program
    reference = _ref.CesqlProgram(program.code, program.consts, program.type)

    def read_all():
        batches, seq = [], 1
        while True:
            b = log.read(seq, BATCH)
            if not len(b):
                return batches
            batches.append(b)
            seq = b.next_seq

    batches = read_all()
    records = [log.get(seq) for seq in range(1, n + 1)]
    events = [stream.get(seq) for seq in range(1, n + 1)]
    few = max(1, n // 10)

    # every form gives the same answer
    expected = [i for i, d in enumerate(dicts) if baseline(d)]
    got = [i + k * BATCH for k, b in enumerate(batches) for i in program.match_batch(b)]
    assert got == expected, "match_batch disagrees with the baseline"
    assert [i for i, r in enumerate(records) if program.matches(r)] == expected
    assert [i for i, e in enumerate(events) if program.matches(e)] == expected
    assert [i for i, r in enumerate(records[:few]) if reference.matches(r)] == [
        i for i in expected if i < few]

    def timed(fn, items, count):
        def run():
            t0 = time.perf_counter()
            fn(items)
            return count / (time.perf_counter() - t0)
        return run

    matches, match_batch, ref_matches = program.matches, program.match_batch, reference.matches
    rows = [
        ("lambda on dict", timed(lambda xs: [baseline(d) for d in xs], dicts, n)),
        ("match_batch(batch)", timed(lambda bs: [match_batch(b) for b in bs], batches, n)),
        ("read + match_batch", timed(lambda _: [match_batch(b) for b in read_all()], None, n)),
        ("matches(record)", timed(lambda xs: [matches(r) for r in xs], records, n)),
        ("matches(event)", timed(lambda xs: [matches(e) for e in xs], events, n)),
        ("matches(dict)", timed(lambda xs: [matches(d) for d in xs], dicts, n)),
        ("reference matches(record)",
         timed(lambda xs: [ref_matches(r) for r in xs], records[:few], few)),
        ("reference matches(dict)",
         timed(lambda xs: [ref_matches(d) for d in xs], dicts[:few], few)),
    ]
    rates, _ = time_rows([{"key": k, "fn": fn} for k, fn in rows], repeat)
    flow.close()
    base = statistics.median(rates["lambda on dict"])
    table, out = [], {"machine": m, "events": n, "passing": len(expected), "rates": {}}
    for key, _fn in rows:
        rate = statistics.median(rates[key])
        out["rates"][key] = rate
        table.append([key, fmt_rate(rate), fmt_ratio(rate / base)])
    say("\n{}\n{:,} stored events ({:,} pass), evaluations a second (median of {})".format(
        FILTER, n, len(expected), repeat))
    say(render_table(["evaluator", "evals/s", "vs. lambda"], table, "<>>"))
    if args.json:
        write_json(out)


if __name__ == "__main__":
    main()
