"""Decoding CloudEvents JSON: the reference (``fastflow.event._from_json_py``
and ``_from_json_batch_py``: msgspec and Python) against the core's C
decoder (``decode_event`` / ``decode_batch``, what ``fastflow.event.from_json``
and ``from_json_batch`` run), and decode + publish into a Flow.

Workloads (each a batch of 1,000 events as ``fastflow.event.to_json_batch``
writes them; the single-event rows decode its first event 10,000 times):

* ``small``: id, source, type, ``datacontenttype: application/json`` and a
  small JSON object as data (~140 bytes an event);
* ``rich``: the same plus ``time``, ``subject``, a string, an integer and a
  boolean extension, and a text payload with an escape (~300 bytes).

Sections:

1. decode, in us an event: single events (``from_json``), a batch of 1,000
   (``from_json_batch``);
2. decode + publish of batches of 1,000 ``small`` events into a ``Flow``
   with one stream capturing ``orders.>`` (``Retention(max_events=100,000)``,
   filled to its steady state first), in events/s:
   ``for e in from_json_batch(body, subject): flow.publish(e)`` with the
   reference decoder and with the C one, and ``flow.publish_json_batch(body,
   subject)`` (records made in C from the JSON, no Event), for a memory
   stream (with the default 120 s duplicate window, which keeps every
   producer id, and with none) and a file-backed one.  Every event
   published has an id of its own (none is a duplicate).

Each figure is the median of ``--repeat`` runs; the rows of a section are
interleaved and gc is off while a run is timed.  ``--json`` writes the
figures as one JSON document to stdout (the report goes to stderr);
``--quick`` is a smoke run.
"""

import argparse
import statistics
import sys
import tempfile

from _common import (add_output_args, cpu_facts, fastflow_facts, fmt_rate, fmt_ratio,
                     machine_format_fields, python_desc, render_table, report_to, say,
                     time_rows, write_json)

import fastflow
from fastflow import Event, Flow, Retention
from fastflow import event as fevent

SUBJECT = "orders.eu.created"
BATCH = 1000
SINGLES = 10000


PREFIX = b"@@@@@@@@"       # (publish_rows: each batch's ids begin with a number there)


def workload(kind, n=BATCH, start=0, prefix=""):
    events = []
    for i in range(start, start + n):
        if kind == "small":
            events.append(Event(SUBJECT, b'{"n": %d, "item": "book"}' % i, id=prefix + str(i),
                                source="/shop", type="order.created",
                                datacontenttype="application/json"))
        else:
            events.append(Event(SUBJECT, "line one\nline {} \u00e9".format(i).encode(),
                                id="{:08x}-4c1e-4d2a".format(i), source="https://shop.example/eu",
                                type="com.example.order.created",
                                time="2024-05-06T07:08:09.123456Z", subject="order-{}".format(i),
                                datacontenttype="text/plain; charset=utf-8",
                                region="eu-west", attempt=i % 5, priority=bool(i % 2)))
    return fevent.to_json_batch(events)


def one_event(body):
    """The first event of a batch body (its JSON object)."""
    depth = 0
    for j, c in enumerate(body):
        if c == ord("{"):
            depth += 1
        elif c == ord("}"):
            depth -= 1
            if depth == 0:
                return body[1:j + 1]
    raise ValueError("no event")


def decode_rows(kind):
    body = workload(kind)
    one = one_event(body)
    ref_one, ref_batch = fevent._from_json_py, fevent._from_json_batch_py
    c_one, c_batch = fastflow._impl.decode_event, fastflow._impl.decode_batch
    assert c_batch(body, SUBJECT) == ref_batch(body, SUBJECT)

    def singles(fn):
        def run():
            t0 = perf()
            for _ in range(SINGLES):
                fn(one, SUBJECT)
            return (perf() - t0) / SINGLES
        return run

    def batch(fn):
        def run():
            t0 = perf()
            fn(body, SUBJECT)
            return (perf() - t0) / BATCH
        return run

    return len(body) / BATCH, [
        {"key": (kind, "single", "reference"), "fn": singles(ref_one)},
        {"key": (kind, "single", "C"), "fn": singles(c_one)},
        {"key": (kind, "batch", "reference"), "fn": batch(ref_batch)},
        {"key": (kind, "batch", "C"), "fn": batch(c_batch)},
    ]


def publish_rows(storage, window, tmp, batches):
    """Rows publishing ``batches`` batches of 1,000 small events a run."""
    flow = Flow(tmp if storage == "file" else None)
    flow.add_stream("orders-{}-{}".format(storage, int(window)), "orders.>",
                    Retention(max_events=100_000, duplicate_window=window), storage)
    # every event of every run has an id of its own (a repeated id would be a
    # duplicate, looked up and not stored): the batches differ in their ids'
    # prefix, put in before a run is timed
    template = workload("small", BATCH, 0, PREFIX.decode() + "-")
    made = iter(range(1 << 62))

    def fresh(n):
        return [template.replace(PREFIX, b"%08d" % next(made)) for _ in range(n)]

    for body in fresh(110):                 # the stream's steady state
        flow.publish_json_batch(body, SUBJECT)
    ref_batch, c_batch = fevent._from_json_batch_py, fastflow._impl.decode_batch
    publish, publish_json_batch = flow.publish, flow.publish_json_batch

    def decoded(decode):
        def run():
            bodies = fresh(batches)
            t0 = perf()
            for body in bodies:
                for e in decode(body, SUBJECT):
                    publish(e)
            return batches * BATCH / (perf() - t0)
        return run

    def in_c():
        bodies = fresh(batches)
        t0 = perf()
        for body in bodies:
            publish_json_batch(body, SUBJECT)
        return batches * BATCH / (perf() - t0)

    key = (storage, window)
    return flow, [
        {"key": key + ("reference decode + publish",), "fn": decoded(ref_batch)},
        {"key": key + ("C decode + publish",), "fn": decoded(c_batch)},
        {"key": key + ("publish_json_batch",), "fn": in_c},
    ]


def perf():
    from time import perf_counter
    return perf_counter()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=7, help="runs a figure is the median of")
    add_output_args(ap, "a few seconds")
    args = ap.parse_args()
    if args.json:
        report_to(sys.stderr)
    repeat = 3 if args.quick else args.repeat
    m = {**cpu_facts(), **fastflow_facts(), "python": python_desc()}
    f = machine_format_fields(m)
    say("{cpu}{mhz}, {cores} cores ({usable} usable), {py}, fastflow {ver} ({kind}, git {git}, "
        "built {built})".format(cpu=m["cpu"], usable=m["usable_cores"], cores=m["cores"],
                                py=m["python"], ver=m["fastflow"], **f))
    if not fastflow.COMPILED:
        say("the compiled core is not loaded: the C rows run the reference")
    out = {"machine": m, "decode": {}, "publish": {}}

    # 1. decode
    rows, sizes = [], {}
    for kind in ("small", "rich"):
        sizes[kind], r = decode_rows(kind)
        rows += r
    times, _ = time_rows(rows, repeat)
    table = []
    for kind in ("small", "rich"):
        for mode in ("single", "batch"):
            ref = statistics.median(times[(kind, mode, "reference")])
            c = statistics.median(times[(kind, mode, "C")])
            out["decode"]["{}/{}".format(kind, mode)] = {
                "bytes_per_event": sizes[kind], "reference_us": ref * 1e6, "c_us": c * 1e6}
            table.append(["{} ({:.0f} B)".format(kind, sizes[kind]),
                          "from_json" if mode == "single" else "from_json_batch (1,000)",
                          "{:.2f} us".format(ref * 1e6), "{:.3f} us".format(c * 1e6),
                          fmt_ratio(ref / c), fmt_rate(1 / c)])
    say("\n1. decode, per event (median of {})".format(repeat))
    say(render_table(["events", "call", "reference", "C", "vs.", "C rate"], table,
                     "<<>>>>"))

    # 2. decode + publish
    batches = 5 if args.quick else 50
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for storage, window in (("memory", 120.0), ("memory", 0.0), ("file", 0.0)):
            flow, rows = publish_rows(storage, window, tmp, batches)
            try:
                rates, _ = time_rows(rows, repeat)
            finally:
                flow.close()
            name = "{} stream, duplicate window {:.0f} s".format(storage, window)
            ref = statistics.median(rates[(storage, window, "reference decode + publish")])
            for how in ("reference decode + publish", "C decode + publish",
                        "publish_json_batch"):
                rate = statistics.median(rates[(storage, window, how)])
                out["publish"]["{}/{}".format(name, how)] = rate
                table.append([name, how, fmt_rate(rate), fmt_ratio(rate / ref)])
            table.append(None)
    say("\n2. decode + publish, batches of 1,000 small events into a Flow with one stream "
        "(median of {}, {} batches a run)".format(repeat, batches))
    say(render_table(["stream", "how", "events/s", "vs. reference"], table[:-1], "<<>>"))
    if args.json:
        write_json(out)


if __name__ == "__main__":
    main()
