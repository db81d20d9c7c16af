"""Columnar export of a log (``Log.columns``, docs/log.md) against the other
ways out of it, in one process.

A log of 10,000,000 records (16-byte payloads, 8 subjects, producer times)
is exported whole, each way timed ``--repeat`` times (runs interleaved, gc
off while timed; the median is reported):

* ``log.columns()``: seq, ts, time, subject ids, offsets and payload as numpy
  arrays; and the same plus ``view(dtype)`` (the 16 bytes as two fields);
* ``log.read_into(buffer, 1, limit=N)``: the payloads and their offsets into
  one preallocated ``bytearray`` (no seq, ts, time or subject);
* ``log.read(seq, limit=10,000)`` following ``next_seq``: ``Batch``es
  (int64 columns, a list of subjects);

and the reverse: ``log.append_columns`` of the exported arrays into a fresh
log, against ``append_buffer`` of the same buffer and offsets.

Then a Flow stream of ``--stream-events`` events (default 1,000,000; the
same 16-byte data) published with ``publish_batch``: ``stream.columns()``
(each event's data read from its stored record) against
``list(stream.replay())``, the list of ``Event`` objects.

``--json`` writes every figure to stdout (the report goes to stderr);
``--quick`` is a smoke run.
"""

import argparse
import statistics
import sys
import time

from _common import (add_output_args, cpu_facts, fastflow_facts, fmt_range, fmt_rate,
                     fmt_ratio, machine_format_fields, peak_rss, python_desc, render_table,
                     report_to, say, time_rows, write_json)

SUBJECTS = ["md.xnas.{}".format(s) for s in
            ("AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "AVGO")]
PAYLOAD = 16  # bytes
FULL = dict(records=10_000_000, stream=1_000_000, repeat=5)
QUICK = dict(records=200_000, stream=50_000, repeat=3)


def build_log(fastflow, np, n):
    """A log of n records: 8 subjects round robin, 16-byte payloads (an
    int64 and a float64), producer times; returns (log, the dtype)."""
    dt = np.dtype([("qty", "<i8"), ("px", "<f8")])
    arr = np.zeros(n, dt)
    arr["qty"] = np.arange(n)
    arr["px"] = np.arange(n) * 0.25
    log = fastflow.Log()
    log.append_columns(arr, subject_id=(np.arange(n) % len(SUBJECTS)).astype(np.int32),
                       subjects=SUBJECTS, time=np.arange(n, dtype=np.int64) * 1000)
    return log, dt


def timed(fn):
    def run():
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, help="records in the log (default 10,000,000)")
    ap.add_argument("--stream-events", type=int,
                    help="events in the Flow stream (default 1,000,000)")
    ap.add_argument("--repeat", type=int, help="runs per row (default 5)")
    add_output_args(ap, "a smoke run of a few seconds")
    args = ap.parse_args()
    report_to(sys.stderr if args.json else sys.stdout)
    cfg = dict(QUICK if args.quick else FULL)
    cfg["records"] = args.records or cfg["records"]
    cfg["stream"] = args.stream_events or cfg["stream"]
    cfg["repeat"] = args.repeat or cfg["repeat"]

    import numpy as np

    import fastflow

    n, ns = cfg["records"], cfg["stream"]
    ff = fastflow_facts()
    cpu = cpu_facts()
    say("machine: {cpu}{mhz}, {cores} cores; {py}; fastflow {version} ({kind}; git {git}); "
        "numpy {np}".format(cpu=cpu["cpu"], cores=cpu["cores"], py=python_desc(),
                            version=ff["fastflow"], np=np.__version__,
                            **machine_format_fields({**cpu, **ff})))
    t0 = time.perf_counter()
    log, dt = build_log(fastflow, np, n)
    say("built a log of {:,} records ({} B payloads, {} subjects) in {:.1f} s".format(
        n, PAYLOAD, len(SUBJECTS), time.perf_counter() - t0))

    # the exports' checks, before any timing
    cols = log.columns()
    v = cols.view(dt)
    assert len(cols) == n and (v["qty"] == np.arange(n)).all()
    assert cols.subjects == tuple(SUBJECTS) and (cols.time == np.arange(n) * 1000).all()
    buf = bytearray(n * PAYLOAD)
    count, nxt, offs = log.read_into(buf, 1, limit=n)
    assert count == n and bytes(buf) == bytes(cols.payload)
    del cols, v

    def read_batches():
        seq, got = 1, 0
        while True:
            b = log.read(seq, limit=10_000)
            if not len(b):
                break
            got += len(b)
            seq = b.next_seq
        assert got == n

    src = log.columns()
    sink = {}

    def append_columns():
        lg = fastflow.Log()
        lg.append_columns(src)
        sink["log"] = lg            # freed at the next run, outside the timing

    def append_buffer():
        lg = fastflow.Log()
        lg.append_buffer(SUBJECTS[0], src.payload, src.offsets)
        sink["log"] = lg

    rows = [
        dict(key="columns", impl="Log.columns()", what="seq, ts, time, subject ids, offsets, "
             "payload as numpy", n=n, fn=timed(log.columns)),
        dict(key="columns_view", impl="Log.columns().view(dtype)", what="+ the payloads as "
             "(qty i8, px f8)", n=n, fn=timed(lambda: log.columns().view(dt))),
        dict(key="read_into", impl="Log.read_into(buffer, 1, limit=N)", what="payloads + "
             "offsets only, one call", n=n, fn=timed(lambda: log.read_into(buf, 1, limit=n)),
             vs="columns"),
        dict(key="read", impl="Log.read(seq, limit=10,000) loop", what="Batches (int64 "
             "columns, a list of subjects)", n=n, fn=timed(read_batches), vs="columns"),
        None,
        dict(key="append_columns", impl="Log.append_columns(columns)", what="into a fresh "
             "log: 8 subjects, producer times", n=n, fn=timed(append_columns)),
        dict(key="append_buffer", impl="Log.append_buffer(s, payload, offsets)", what="into a "
             "fresh log: one subject", n=n, fn=timed(append_buffer), vs="append_columns"),
        None,
    ]

    # the Flow stream
    flow = fastflow.Flow()
    st = flow.add_stream("md", ["md.>"])
    data = [np.array([(i, i * 0.25)], dt).tobytes() for i in range(1000)]
    for k in range(ns // 1000):
        flow.publish_batch(SUBJECTS[k % len(SUBJECTS)], data)
    sc = st.columns()
    assert len(sc) == ns - ns % 1000 and (sc.view(dt)["qty"] == np.tile(np.arange(1000),
                                                                         ns // 1000)).all()
    events = list(st.replay())
    assert [ev.data for ev in events[:1000]] == data
    del sc, events
    nse = ns - ns % 1000
    rows += [
        dict(key="stream_columns", impl="Stream.columns()", what="events' data from the "
             "records, as numpy", n=nse, fn=timed(st.columns)),
        dict(key="stream_events", impl="list(Stream.replay())", what="a list of Event "
             "objects", n=nse, fn=timed(lambda: list(st.replay())), vs="stream_columns"),
    ]

    timing = [r for r in rows if r is not None]
    times, counts = time_rows(timing, cfg["repeat"])
    sink.clear()
    rate = {k: n_ / statistics.median(t) for k, t, n_ in
            ((r["key"], times[r["key"]], r["n"]) for r in timing)}
    table = []
    for r in rows:
        if r is None:
            table.append(None)
            continue
        k = r["key"]
        rates = [r["n"] / t for t in times[k]]
        vs = rate[k] / rate[r["vs"]] if r.get("vs") else None
        faults = statistics.median(c[0] for c in counts[k])
        table.append([r["impl"], r["what"], "{:,}".format(r["n"]), fmt_rate(rate[k]),
                      fmt_range(rates), "{:.1f} ns".format(1e9 / rate[k]),
                      "{:,.0f}".format(faults), fmt_ratio(vs) if vs else ""])
    say("")
    say("records/s, median of {} runs (runs interleaved, gc off while timed); {}-byte "
        "payloads".format(cfg["repeat"], PAYLOAD))
    say(render_table(["export / import", "what", "records", "median", "range (min-max)",
                      "per record", "faults", "vs."],
                     table, ["<", "<", ">", ">", ">", ">", ">", ">"]))
    say("faults: minor page faults per run (median): first touches of fresh memory (the "
        "new arrays), which the kernel zeroes.")
    say("vs.: against Log.columns() (the export rows), Log.append_columns() (the import "
        "rows), Stream.columns() (the stream rows).  Peak RSS {:.0f} MiB.".format(
            (peak_rss() or 0) / 2**20))
    if args.json:
        write_json(dict(config=cfg, machine={**cpu, **ff, "python": python_desc()},
                        rates=rate, runs={k: v for k, v in times.items()},
                        counts={k: v for k, v in counts.items()}))
    flow.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
