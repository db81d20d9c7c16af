"""Compare fastflow's event log (``fastflow._core.Log``) with plain-Python rings.

One process, 100-byte payloads and one subject (``md.xnas.AAPL``) unless
noted.  Each operation is timed on

* fastflow ``Log``                                     (docs/log.md),
* ``collections.deque(maxlen=N)`` of ``(seq, ts, subject, payload)`` tuples,
* a ``bytearray`` ring: N * 100 preallocated bytes and a list of offsets,
* a numpy record ring: ``np.zeros(N, dtype=[seq i8, ts i8, len u4, data S100])``
  (left out when numpy is not installed),

in five sections:

1. append per call (a Python loop) into a log of ``max_events=100,000``
   that has already cycled (200,000 appends before timing: steady state, no
   growth); target >= 10 M/s;
2. ``append_batch`` of 10,000 payloads into the same kind of log;
   target >= 40 M/s;
3. replay of 1,000,000 retained records in batches of 10,000 (``read`` and
   ``read_into``); target >= 20 M/s;
4. file-backed append (``fsync="interval"``, pre-cycled likewise), per call
   and batched; target >= 5 M/s; for reference the same with
   ``fsync="never"`` (what the msyncs cost) and ``fsync="always"`` per call
   (20,000 records, 3 runs, in a section of its own);
5. ``seek(time=t)`` on 10,000,000 records of 16 bytes, 10,000 random t;
   target < 5 us per call;

and one "cold" pair: appends into a fresh, unbounded log (and deque) of
1,000,000 records, growth included.

Each figure is the median of ``--repeat`` runs; the runs of all rows of a
section are interleaved and gc is off while a run is timed (as in
``timeit``).  The minor page faults of each run are counted (getrusage):
first touches of fresh pages are expensive on the VM this was written on, so
the script measures their cost first and prints it with the machine facts.
``--json`` writes every figure as one JSON document to stdout (the report
goes to stderr); ``--quick`` is a smoke run of a few seconds.
"""

import argparse
import bisect
import collections
import gc
import itertools
import mmap
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time

from _common import (add_output_args, core_built, cpu_facts, fastflow_facts, fmt_range, fmt_rate,
                     fmt_ratio, fmt_time,
                     machine_format_fields, malloc_trim, peak_rss, proc_kib, python_desc,
                     read_text, render_table, report_to, rss, say, time_rows, wrap, write_json)

SUBJECT = "md.xnas.AAPL"
PAYLOAD = 100  # bytes
BATCH = 10_000  # records per append_batch / read
FILE_RECORD = 36 + len(SUBJECT) + PAYLOAD  # bytes of one record in a segment file
DEFAULT_SEED = 2026

TARGET_APPEND = 10e6  # records/s, append() per call, steady state
TARGET_BATCH = 40e6  # records/s, append_batch(), steady state
TARGET_REPLAY = 20e6  # records/s, read() / read_into() in batches of 10,000
TARGET_FILE = 5e6  # records/s, file-backed append, fsync="interval"
TARGET_SEEK = 5e-6  # s per seek(time=t) on 10M records

FULL = dict(ring=100_000, prefill=200_000, call_n=1_000_000, batch_n=4_000_000,
            file_call_n=1_000_000, file_batch_n=2_000_000, always_n=20_000,
            replay_n=1_000_000, seek_n=10_000_000, seek_payload=16, seeks=10_000,
            cold_n=1_000_000)
QUICK = dict(ring=20_000, prefill=40_000, call_n=100_000, batch_n=200_000,
             file_call_n=100_000, file_batch_n=200_000, always_n=300,
             replay_n=100_000, seek_n=200_000, seek_payload=16, seeks=2_000,
             cold_n=100_000)


# -- machine facts ------------------------------------------------------------

def _fs_of(path):
    """(mount point, fs type, device) of the mount holding ``path``."""
    path = os.path.realpath(path)
    best = ("?", "?", "?")
    try:
        with open("/proc/mounts") as f:
            for line in f:
                dev, mnt, fstype = line.split()[:3]
                if ((path == mnt or path.startswith(mnt.rstrip("/") + "/"))
                        and len(mnt) >= len(best[0])):
                    best = (mnt, fstype, dev)
    except OSError:
        pass
    return best


def _touch_fresh(size, huge):
    """Seconds to write one byte per 4 KiB page of a fresh anonymous mapping
    (page fault + the kernel zeroing the page), and then to write all of it
    again (memory already mapped)."""
    page = mmap.PAGESIZE
    mm = mmap.mmap(-1, size)
    try:
        if huge and hasattr(mm, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
            mm.madvise(mmap.MADV_HUGEPAGE)
        try:
            import numpy as np

            a = np.frombuffer(mm, dtype=np.uint8)

            def touch(v):
                a[::page] = v

            def fill(v):
                a[:] = v
        except ImportError:

            def touch(v):
                for i in range(0, size, page):
                    mm[i] = v

            def fill(v):
                mm[:] = bytes([v]) * size
        t0 = time.perf_counter()
        touch(1)
        t1 = time.perf_counter()
        fill(2)
        t2 = time.perf_counter()
        # Drop the numpy view (the closures see it through their cell), or mm.close() raises
        # BufferError: a mapping with exported buffers cannot be closed.
        a = None
    finally:
        mm.close()
    return t1 - t0, t2 - t1


def _touch_sparse_file(tmpdir, size):
    """Seconds to write one byte per page of a fresh sparse file through a
    shared mapping, as a file-backed log writes a new segment (ftruncate +
    mmap)."""
    page = mmap.PAGESIZE
    d = tempfile.mkdtemp(prefix="fastflow-bench-touch-", dir=tmpdir)
    try:
        with open(os.path.join(d, "seg"), "w+b") as f:
            os.ftruncate(f.fileno(), size)
            mm = mmap.mmap(f.fileno(), size)
            try:
                t0 = time.perf_counter()
                for i in range(0, size, page):
                    mm[i] = 1
                return time.perf_counter() - t0
            finally:
                mm.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def first_touch(tmpdir, size=256 << 20, file_size=64 << 20):
    """What a first touch of fresh memory costs on this machine: 4 KiB pages,
    transparent huge pages (MADV_HUGEPAGE, if THP allows it), pages of a new
    sparse file in ``tmpdir`` (mmap'd), and a write to memory already mapped
    for comparison."""
    first, mapped = _touch_fresh(size, False)
    huge, _ = _touch_fresh(size, True)
    sparse = _touch_sparse_file(tmpdir, file_size)
    return {"bytes": size, "first_gb_s": size / first / 1e9,
            "first_us_per_page": first / (size // mmap.PAGESIZE) * 1e6,
            "thp_first_gb_s": size / huge / 1e9,
            "file_bytes": file_size, "file_first_gb_s": file_size / sparse / 1e9,
            "file_first_us_per_page": sparse / (file_size // mmap.PAGESIZE) * 1e6,
            "mapped_write_gb_s": size / mapped / 1e9}


def machine_facts(tmpdir):
    mem = proc_kib("/proc/meminfo", "MemTotal:")
    try:
        import numpy

        np_version = numpy.__version__
    except ImportError:
        np_version = None
    mnt, fstype, dev = _fs_of(tmpdir)
    thp = read_text("/sys/kernel/mm/transparent_hugepage/enabled")
    load = read_text("/proc/loadavg")
    return {
        **cpu_facts(),
        "memory_bytes": mem,
        "python": python_desc(),
        "compiler": platform.python_compiler(),
        "platform": platform.platform(),
        "thp": thp,
        "loadavg": " ".join(load.split()[:3]) if load else None,
        "numpy": np_version,
        **fastflow_facts(),
        "tmpdir": tmpdir,
        "tmpdir_fs": "{} on {} ({})".format(fstype, mnt, dev),
    }


def format_machine(m, touch):
    return (
        "machine: {cpu}{mhz}, {cores} cores ({usable_cores} usable), {gib:.1f} GiB RAM; {python} "
        "({compiler}); {platform}; THP {thp}\n"
        "fastflow {fastflow} ({kind}; git {git}; _core built {built}); numpy {np}; "
        "file-backed logs in {tmpdir} ({tmpdir_fs})\n"
        "first touch (one write per 4 KiB page: fault + zeroing): anonymous memory {ft:.2f} GB/s "
        "({us:.1f} us per page), with MADV_HUGEPAGE {hp:.2f} GB/s, a new sparse file mmap'd in "
        "{tmpdir} {ff:.2f} GB/s ({fus:.1f} us per page); writing memory already mapped "
        "{st:.1f} GB/s\nload average {load} (other processes share the {cores} cores)".format(
            gib=(m["memory_bytes"] or 0) / 2**30,
            thp=(m["thp"] or "?").replace(" ", "/"),
            np=m["numpy"] or "not installed",
            ft=touch["first_gb_s"], us=touch["first_us_per_page"], st=touch["mapped_write_gb_s"],
            hp=touch["thp_first_gb_s"], load=m["loadavg"] or "?",
            ff=touch["file_first_gb_s"], fus=touch["file_first_us_per_page"],
            **machine_format_fields(m),
            **{k: v for k, v in m.items() if k not in ("cpu_mhz", "thp", "numpy")}))


# -- memory ---------------------------------------------------------------------

def anon_huge():
    """Bytes of this process's memory in transparent huge pages."""
    return proc_kib("/proc/self/smaps_rollup", "AnonHugePages:")


def mib(n):
    return n / 2**20


# -- the data -------------------------------------------------------------------

def make_payloads(n, size, seed):
    """``n`` distinct payloads of ``size`` bytes (the batch of append_batch)."""
    rnd = random.Random(seed)
    return [rnd.randbytes(size) for _ in range(n)]


def np_dtype(size):
    return [("seq", "i8"), ("ts", "i8"), ("len", "u4"), ("data", "S{}".format(size))]


# -- rows -------------------------------------------------------------------------
#
# A row is a dict: key, impl, op, n (records, or seeks), fn (a callable that
# runs once and returns the seconds it timed), and optionally vs (the key of
# the row its ratio is against), vs_mark (a footnote marker) and target.

def row(key, impl, op, n, fn, vs=None, vs_mark="", target=None, per="record"):
    return dict(key=key, impl=impl, op=op, n=n, fn=fn, vs=vs, vs_mark=vs_mark,
                target=target, per=per)


# -- 1 + 2: in-memory append, steady state -----------------------------------------

class Rings:
    """The three baselines as bounded rings of ``n`` records; ``seq`` carries on
    across runs like a log's."""

    def __init__(self, n, size, np):
        self.n, self.size, self.np = n, size, np
        self.seq = 0
        self.dq = collections.deque(maxlen=n)
        self.ring = bytearray(n * size)
        self.offs = [0] * n
        self.rec = np.zeros(n, dtype=np_dtype(size)) if np is not None else None

    def deque_call(self, count, subj, payload):
        app = self.dq.append
        tn = time.time_ns
        seq = self.seq
        t0 = time.perf_counter()
        for _ in range(count):
            seq += 1
            app((seq, tn(), subj, payload))
        dt = time.perf_counter() - t0
        self.seq = seq
        return dt

    def ring_call(self, count, payload):
        ring, offs, n, size = self.ring, self.offs, self.n, self.size
        seq = self.seq
        t0 = time.perf_counter()
        for _ in range(count):
            seq += 1
            s = seq % n
            o = s * size
            ring[o:o + size] = payload
            offs[s] = o
        dt = time.perf_counter() - t0
        self.seq = seq
        return dt

    def numpy_call(self, count, payload):
        rec, n = self.rec, self.n
        tn = time.time_ns
        size = len(payload)
        seq = self.seq
        t0 = time.perf_counter()
        for _ in range(count):
            seq += 1
            rec[seq % n] = (seq, tn(), size, payload)
        dt = time.perf_counter() - t0
        self.seq = seq
        return dt

    # batched: copy prebuilt blocks of ``len(block)`` records
    def deque_batch(self, count, tuples):
        ext = self.dq.extend
        t0 = time.perf_counter()
        for _ in range(count // len(tuples)):
            ext(tuples)
        return time.perf_counter() - t0

    def ring_batch(self, count, block, b):
        ring, offs, n, size = self.ring, self.offs, self.n, self.size
        nb = len(block)
        t0 = time.perf_counter()
        s = 0
        for _ in range(count // b):
            o = s * size
            ring[o:o + nb] = block
            offs[s:s + b] = range(o, o + nb, size)
            s += b
            if s + b > n:
                s = 0
        return time.perf_counter() - t0

    def numpy_batch(self, count, block):
        rec, n = self.rec, self.n
        b = len(block)
        t0 = time.perf_counter()
        s = 0
        for _ in range(count // b):
            rec[s:s + b] = block
            s += b
            if s + b > n:
                s = 0
        return time.perf_counter() - t0


def ff_call(log, count, subj, payload):
    append = log.append
    t0 = time.perf_counter()
    for _ in range(count):
        append(subj, payload)
    return time.perf_counter() - t0


def ff_batch(log, count, subj, payloads):
    append_batch = log.append_batch
    t0 = time.perf_counter()
    for _ in range(count // len(payloads)):
        append_batch(subj, payloads)
    return time.perf_counter() - t0


def floor_call(count, subj, payload):
    get = {}.get
    t0 = time.perf_counter()
    for _ in range(count):
        get(subj, payload)
    return time.perf_counter() - t0


def precycle_log(log, prefill, subj, payload):
    append = log.append
    for _ in range(prefill):
        append(subj, payload)


def growth_facts(log):
    st = log.stats()
    return {k: st.get(k) for k in ("arena_bytes", "index_entries", "records", "first_seq",
                                   "last_seq", "segments", "deleted_segments", "fsyncs")}


# -- 3: replay ------------------------------------------------------------------------

def replay_ff_read(log, n, limit):
    read = log.read
    seq, end = log.first_seq, log.last_seq
    count = 0
    t0 = time.perf_counter()
    while seq <= end:
        b = read(seq, limit=limit)
        count += len(b)
        seq = b.next_seq
    dt = time.perf_counter() - t0
    if count != n:
        raise AssertionError("read() replayed {} records, expected {}".format(count, n))
    return dt


def replay_ff_read_into(log, n, limit, buf):
    read_into = log.read_into
    seq, end = log.first_seq, log.last_seq
    count = 0
    t0 = time.perf_counter()
    while seq <= end:
        c, seq, _offs = read_into(buf, seq, limit=limit)
        count += c
    dt = time.perf_counter() - t0
    if count != n:
        raise AssertionError("read_into() replayed {} records, expected {}".format(count, n))
    return dt


def replay_deque(dq, n, limit):
    islice = itertools.islice
    count = 0
    t0 = time.perf_counter()
    it = iter(dq)
    while True:
        chunk = list(islice(it, limit))
        if not chunk:
            break
        count += len(chunk)
    dt = time.perf_counter() - t0
    if count != n:
        raise AssertionError("deque replayed {} records, expected {}".format(count, n))
    return dt


def replay_ring(ring, offs, n, limit, size, out):
    mv = memoryview(ring)
    nb = limit * size
    count = 0
    t0 = time.perf_counter()
    for s in range(0, n, limit):
        o = offs[s]
        out[:] = mv[o:o + nb]
        _o = offs[s:s + limit]
        count += len(_o)
    dt = time.perf_counter() - t0
    mv.release()
    if count != n:
        raise AssertionError("bytearray ring replayed {} records, expected {}".format(count, n))
    return dt


def replay_numpy(rec, n, limit):
    count = 0
    t0 = time.perf_counter()
    for s in range(0, n, limit):
        count += len(rec[s:s + limit].copy())
    dt = time.perf_counter() - t0
    if count != n:
        raise AssertionError("numpy ring replayed {} records, expected {}".format(count, n))
    return dt


def check_replay(log, n, limit, payloads, size):
    """Untimed: read() and read_into() return every record, in order, with the
    payload it was appended with (record seq s has payloads[(s - 1) % B])."""
    block = b"".join(payloads)
    b_len = len(payloads)
    bad = []
    seq, end = log.first_seq, log.last_seq
    count = 0
    while seq <= end:
        b = log.read(seq, limit=limit)
        k = (seq - 1) % b_len
        want = (block[k * size:] + block * (len(b) // b_len + 2))[:len(b) * size]
        if bytes(b.buffer) != want or list(b.seqs) != list(range(seq, seq + len(b))):
            bad.append("read({}) content".format(seq))
            break
        count += len(b)
        seq = b.next_seq
    if count != n:
        bad.append("read(): {} records, expected {}".format(count, n))
    buf = bytearray(limit * size)
    seq = log.first_seq
    count = 0
    while seq <= end:
        c, nxt, offs = log.read_into(buf, seq, limit=limit)
        k = (seq - 1) % b_len
        want = (block[k * size:] + block * (c // b_len + 2))[:c * size]
        if bytes(buf[:c * size]) != want or list(offs) != list(range(0, (c + 1) * size, size)):
            bad.append("read_into({}) content".format(seq))
            break
        count += c
        seq = nxt
    if count != n:
        bad.append("read_into(): {} records, expected {}".format(count, n))
    return bad


# -- 5: seek ---------------------------------------------------------------------------

def seek_ff_time(log, ts):
    seek = log.seek
    t0 = time.perf_counter()
    for t in ts:
        seek(time=t)
    return time.perf_counter() - t0


def seek_ff_first(log, ts):
    seek = log.seek
    t0 = time.perf_counter()
    for _ in ts:
        seek("first")
    return time.perf_counter() - t0


def seek_bisect(arr, ts):
    bl = bisect.bisect_left
    t0 = time.perf_counter()
    for t in ts:
        bl(arr, t)
    return time.perf_counter() - t0


def seek_numpy(nts, ts):
    ss = nts.searchsorted
    t0 = time.perf_counter()
    for t in ts:
        ss(t)
    return time.perf_counter() - t0


# -- cold --------------------------------------------------------------------------------

def cold_ff(Log, count, subj, payload):
    log = Log()
    append = log.append
    t0 = time.perf_counter()
    for _ in range(count):
        append(subj, payload)
    dt = time.perf_counter() - t0
    if len(log) != count:
        raise AssertionError("cold log holds {} records, expected {}".format(len(log), count))
    del append, log
    return dt


def cold_deque(count, subj, payload):
    dq = collections.deque()
    app = dq.append
    tn = time.time_ns
    seq = 0
    t0 = time.perf_counter()
    for _ in range(count):
        seq += 1
        app((seq, tn(), subj, payload))
    dt = time.perf_counter() - t0
    del app, dq
    return dt


# -- report ------------------------------------------------------------------------------

def summarize(rows, times, counts):
    results = []
    for r in rows:
        ts = times[r["key"]]
        cs = counts[r["key"]]
        rates = [r["n"] / t for t in ts]
        med = statistics.median(rates)
        results.append({
            "key": r["key"], "section": r.get("section"), "implementation": r["impl"],
            "operation": r["op"], "records": r["n"], "per": r["per"], "times_s": ts,
            "rates": rates, "median_rate": med, "median_s_per_op": 1.0 / med,
            "vs": r["vs"], "vs_mark": r["vs_mark"], "target": r["target"],
            "minor_faults": [c[0] for c in cs], "involuntary_switches": [c[1] for c in cs],
            "median_minor_faults": statistics.median(c[0] for c in cs), "runs": len(ts),
        })
    by_key = {x["key"]: x for x in results}
    for x in results:
        ref = by_key.get(x["vs"]) if x["vs"] else None
        x["vs_ratio"] = x["median_rate"] / ref["median_rate"] if ref else None
    return results, by_key


def judge(x):
    t = x["target"]
    if t is None:
        return None
    kind, value = t
    if kind == "rate":
        return x["median_rate"] >= value
    return x["median_s_per_op"] < value


def fmt_target(x):
    t = x["target"]
    if t is None:
        return ""
    kind, value = t
    ok = judge(x)
    if kind == "rate":
        return ">= {} {}".format(fmt_rate(value), "PASS" if ok else "FAIL")
    return "< {} {}".format(fmt_time(value), "PASS" if ok else "FAIL")


# -- the sections ------------------------------------------------------------------------

class Bench:
    """What the sections share: the settings, the data and what they found."""

    def __init__(self, args, cfg, Log, np):
        self.args, self.cfg, self.Log, self.np = args, cfg, Log, np
        self.payload = random.Random(args.seed).randbytes(PAYLOAD)
        self.payloads = make_payloads(BATCH, PAYLOAD, args.seed)
        self.block = b"".join(self.payloads)
        self.ts0 = time.time_ns()  # the ts of the baselines' prebuilt records
        self.rows = []
        self.times = {}
        self.counts = {}
        self.facts = {}
        self.sanity = []

    def run(self, name, rows, repeat=None, warmup=True):
        repeat = repeat or self.args.repeat
        for r in rows:
            r["section"] = name
            r["runs"] = repeat
        say("")
        say("[{}] timing {} row{} x {} runs{}{} ...".format(
            name, len(rows), "s" if len(rows) > 1 else "", repeat,
            " (+1 warm-up)" if warmup else "", ", interleaved" if len(rows) > 1 else ""))
        t0 = time.perf_counter()
        times, counts = time_rows(rows, repeat, warmup)
        self.times.update(times)
        self.counts.update(counts)
        took = time.perf_counter() - t0
        say("[{}] {:.1f} s; preempted {:,} times while timed (involuntary context switches)".format(
            name, took, sum(c[1] for r in rows for c in counts[r["key"]])))
        self.rows.extend(rows)
        self.facts.setdefault("section_s", {})[name] = took


def section_append(bench):
    """1 + 2: in-memory append per call and batched, steady state."""
    cfg, np, payload, payloads = bench.cfg, bench.np, bench.payload, bench.payloads
    N, L, B = cfg["ring"], PAYLOAD, BATCH
    log = bench.Log(max_events=N)
    precycle_log(log, cfg["prefill"], SUBJECT, payload)
    rings = Rings(N, L, np)
    for _ in range(cfg["prefill"] // N + 1):  # cycle (and touch) the baselines too
        rings.deque_call(N, SUBJECT, payload)
        rings.ring_call(N, payload)
        if np is not None:
            rings.numpy_call(N, payload)
    g0 = growth_facts(log)
    tuples = [(i + 1, bench.ts0, SUBJECT, p) for i, p in enumerate(payloads)]
    np_block = None
    if np is not None:
        np_block = np.zeros(B, dtype=np_dtype(L))
        np_block["seq"] = np.arange(1, B + 1)
        np_block["ts"] = bench.ts0
        np_block["len"] = L
        np_block["data"] = payloads
    cn, bn = cfg["call_n"], cfg["batch_n"]
    rows = [
        row("floor", "(floor)", "Python loop calling {}.get(s, p)", cn,
            lambda: floor_call(cn, SUBJECT, payload)),
        row("ff_call", "fastflow Log", "append() per call", cn,
            lambda: ff_call(log, cn, SUBJECT, payload), vs="dq_call",
            target=("rate", TARGET_APPEND)),
        row("dq_call", "deque(maxlen=N)", "append((seq, time_ns(), s, p))", cn,
            lambda: rings.deque_call(cn, SUBJECT, payload), vs="dq_call"),
        row("ring_call", "bytearray ring", "ring[o:o+100] = p; offs[i] = o", cn,
            lambda: rings.ring_call(cn, payload), vs="dq_call"),
    ]
    if np is not None:
        rows.append(row("np_call", "numpy record ring", "rec[i] = (seq, time_ns(), 100, p)", cn,
                        lambda: rings.numpy_call(cn, payload), vs="dq_call"))
    rows += [
        row("ff_batch", "fastflow Log", "append_batch(s, 10,000 payloads)", bn,
            lambda: ff_batch(log, bn, SUBJECT, payloads), vs="dq_batch",
            target=("rate", TARGET_BATCH)),
        row("dq_batch", "deque(maxlen=N)", "extend(10,000 prebuilt tuples)", bn,
            lambda: rings.deque_batch(bn, tuples), vs="dq_batch"),
        row("ring_batch", "bytearray ring", "1 MB slice copy + offsets slice", bn,
            lambda: rings.ring_batch(bn, bench.block, B), vs="dq_batch"),
    ]
    if np is not None:
        rows.append(row("np_batch", "numpy record ring", "rec[s:s+10,000] = prebuilt", bn,
                        lambda: rings.numpy_batch(bn, np_block), vs="dq_batch"))
    bench.run("append, in memory, steady", rows)
    g1 = growth_facts(log)
    ok = (g0["arena_bytes"], g0["index_entries"]) == (g1["arena_bytes"], g1["index_entries"])
    bench.facts["steady_memory"] = {"before": g0, "after": g1, "no_growth": ok}
    if not ok or len(log) != N:
        bench.sanity.append("in-memory log grew while timed or lost its bound: {} -> {}".format(
            g0, g1))


def section_file(bench):
    """4: file-backed append per call and batched, fsync="interval" (judged) and
    "never" (the same without msync, to show what the msyncs cost); then
    fsync="always" per call in a section of its own, so that its msyncs do not
    queue behind the writeback of the others."""
    cfg, payload, payloads = bench.cfg, bench.payload, bench.payloads
    N = cfg["ring"]
    fcn, fbn, an = cfg["file_call_n"], cfg["file_batch_n"], cfg["always_n"]
    tmp = tempfile.mkdtemp(prefix="fastflow-bench-log-", dir=bench.args.tmpdir)
    logs = {}
    try:
        for mode in ("interval", "never", "always"):
            lg = logs[mode] = bench.Log(max_events=N, path=os.path.join(tmp, mode), fsync=mode)
            if mode == "always":
                for _ in range(cfg["prefill"] // BATCH):  # one msync per call
                    lg.append_batch(SUBJECT, payloads)
            else:
                precycle_log(lg, cfg["prefill"], SUBJECT, payload)
        before = {mode: growth_facts(lg) for mode, lg in logs.items()}
        flog, nlog, alog = logs["interval"], logs["never"], logs["always"]
        impl = "fastflow Log (file)"
        rows = [
            row("file_call", impl, 'append() per call, fsync="interval"', fcn,
                lambda: ff_call(flog, fcn, SUBJECT, payload), vs="dq_call", vs_mark="+",
                target=("rate", TARGET_FILE)),
            row("file_batch", impl, 'append_batch(10,000), fsync="interval"', fbn,
                lambda: ff_batch(flog, fbn, SUBJECT, payloads), vs="dq_batch", vs_mark="+",
                target=("rate", TARGET_FILE)),
            row("file_never_call", impl, 'append() per call, fsync="never"', fcn,
                lambda: ff_call(nlog, fcn, SUBJECT, payload), vs="dq_call", vs_mark="+"),
            row("file_never_batch", impl, 'append_batch(10,000), fsync="never"', fbn,
                lambda: ff_batch(nlog, fbn, SUBJECT, payloads), vs="dq_batch", vs_mark="+"),
        ]
        bench.run("append, file-backed, steady", rows)
        after = {mode: growth_facts(logs[mode]) for mode in ("interval", "never")}
        for mode in ("interval", "never"):
            if len(logs[mode]) != N:
                bench.sanity.append("file-backed ({}) log holds {} records, expected {}".format(
                    mode, len(logs[mode]), N))
            logs[mode].close()
        # drop their segments (and dirty pages) before the msync-bound row
        shutil.rmtree(os.path.join(tmp, "interval"), ignore_errors=True)
        shutil.rmtree(os.path.join(tmp, "never"), ignore_errors=True)
        # bound by the disk's flush latency: 3 runs, no warm-up (the log is pre-filled)
        bench.run("append, file-backed, fsync=always", [
            row("file_always", impl, 'append() per call, fsync="always" (3 runs)', an,
                lambda: ff_call(alog, an, SUBJECT, payload), vs="dq_call", vs_mark="+")],
            repeat=min(3, bench.args.repeat), warmup=False)
        after["always"] = growth_facts(alog)
        bench.facts["file"] = {"before": before, "after": after,
                               "bytes_per_record": FILE_RECORD}
        if len(alog) != N:
            bench.sanity.append("file-backed (always) log holds {} records, expected {}".format(
                len(alog), N))
    finally:
        for lg in logs.values():
            try:
                lg.close()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def section_replay(bench):
    """3: replay the retained records in batches of 10,000."""
    cfg, np, payloads = bench.cfg, bench.np, bench.payloads
    rn, L, B = cfg["replay_n"], PAYLOAD, BATCH
    malloc_trim()
    r0 = rss()
    log = bench.Log(max_events=rn)
    for _ in range(rn // B):
        log.append_batch(SUBJECT, payloads)
    bench.facts["replay_log"] = dict(growth_facts(log), rss_growth=rss() - r0)
    bench.sanity.extend(check_replay(log, rn, B, payloads, L))
    dq = collections.deque(
        ((i + 1, bench.ts0, SUBJECT, payloads[i % B]) for i in range(rn)), maxlen=rn)
    ring = bytearray(bench.block * (rn // B))
    offs = list(range(0, rn * L, L))
    rec = None
    if np is not None:
        rec = np.zeros(rn, dtype=np_dtype(L))
        rec["seq"] = np.arange(1, rn + 1)
        rec["ts"] = bench.ts0
        rec["len"] = L
        rec["data"] = np.tile(np.array(payloads, dtype="S{}".format(L)), rn // B)
    buf = bytearray(B * L)
    out = bytearray(B * L)
    rows = [
        row("ff_read", "fastflow Log", "read(seq, limit=10,000) -> Batch", rn,
            lambda: replay_ff_read(log, rn, B), vs="dq_replay", target=("rate", TARGET_REPLAY)),
        row("ff_read_into", "fastflow Log", "read_into(bytearray, seq, limit=10,000)", rn,
            lambda: replay_ff_read_into(log, rn, B, buf), vs="dq_replay",
            target=("rate", TARGET_REPLAY)),
        row("dq_replay", "deque(maxlen=N)", "list(islice(it, 10,000))", rn,
            lambda: replay_deque(dq, rn, B), vs="dq_replay"),
        row("ring_replay", "bytearray ring", "1 MB copy into bytearray + offsets slice", rn,
            lambda: replay_ring(ring, offs, rn, B, L, out), vs="dq_replay"),
    ]
    if np is not None:
        rows.append(row("np_replay", "numpy record ring", "rec[s:s+10,000].copy()", rn,
                        lambda: replay_numpy(rec, rn, B), vs="dq_replay"))
    gc.freeze()  # the deque's million tuples: keep gc.collect() between runs short
    try:
        bench.run("replay {:,} records".format(rn), rows)
    finally:
        gc.unfreeze()


def section_seek(bench):
    """5: seek(time=t) on 10M small records, against bisect and numpy."""
    from array import array

    cfg, np = bench.cfg, bench.np
    sn, sp, B = cfg["seek_n"], cfg["seek_payload"], BATCH
    small = make_payloads(B, sp, bench.args.seed + 1)
    malloc_trim()
    m0 = rss()
    log = bench.Log(max_events=sn)
    t0 = time.perf_counter()
    for _ in range(sn // B):
        log.append_batch(SUBJECT, small)
    build_s = time.perf_counter() - t0
    m1 = rss()
    h1 = anon_huge()
    tsa = array("q")  # the records' ts, read back (the baselines search the same values)
    seq, end = log.first_seq, log.last_seq
    t0 = time.perf_counter()
    while seq <= end:
        b = log.read(seq, limit=B)
        tsa.frombytes(memoryview(b.ts).cast("B"))
        seq = b.next_seq
    read_s = time.perf_counter() - t0
    nts = np.frombuffer(tsa, dtype=np.int64) if np is not None else None
    st = log.stats()
    bench.facts["seek_log"] = {
        "records": sn, "payload": sp, "build_s": build_s, "build_rate": sn / build_s,
        "rss_growth": m1 - m0, "arena_bytes": st["arena_bytes"], "anon_huge": h1,
        "index_entries": st["index_entries"], "bytes": log.bytes,
        "distinct_ts": int(np.count_nonzero(np.diff(nts))) + 1 if np is not None else None,
        "read_ts_s": read_s, "read_ts_rate": sn / read_s,
    }
    rnd = random.Random(bench.args.seed)
    seeks = [rnd.randint(tsa[0], tsa[-1]) for _ in range(cfg["seeks"])]
    fs = log.first_seq
    bad = sum(log.seek(time=t).seq != fs + bisect.bisect_left(tsa, t) for t in seeks)
    if bad:
        bench.sanity.append("seek(time=t) disagrees with bisect on {} of {} times".format(
            bad, len(seeks)))
    k = len(seeks)
    rows = [
        row("ff_seek", "fastflow Log", "seek(time=t)", k,
            lambda: seek_ff_time(log, seeks), vs="bisect_seek", vs_mark="*",
            target=("time", TARGET_SEEK), per="seek"),
        row("ff_seek_first", "fastflow Log", "seek('first') (call overhead)", k,
            lambda: seek_ff_first(log, seeks), per="seek"),
        row("bisect_seek", "bisect on array('q') ts", "bisect_left(ts, t)", k,
            lambda: seek_bisect(tsa, seeks), vs="bisect_seek", vs_mark="*", per="seek"),
    ]
    if np is not None:
        rows.append(row("np_seek", "numpy int64 ts column", "ts.searchsorted(t)", k,
                        lambda: seek_numpy(nts, seeks), vs="bisect_seek", vs_mark="*",
                        per="seek"))
    bench.run("seek on {:,} records".format(sn), rows)


def section_cold(bench):
    """Appends into a fresh unbounded log (and deque), growth included."""
    con, payload = bench.cfg["cold_n"], bench.payload
    rows = [
        row("ff_cold", "fastflow Log", "append() per call, fresh unbounded Log()", con,
            lambda: cold_ff(bench.Log, con, SUBJECT, payload), vs="dq_cold", vs_mark="c"),
        row("dq_cold", "deque()", "append((seq, time_ns(), s, p)), fresh deque()", con,
            lambda: cold_deque(con, SUBJECT, payload), vs="dq_cold", vs_mark="c"),
    ]
    bench.run("cold: fresh unbounded, {:,} records".format(con), rows)


def between_sections():
    """Free what the last section built before the next one measures memory."""
    gc.collect()
    malloc_trim()


# -- report ------------------------------------------------------------------------------

TARGET_ROWS = (("ff_call", "append() per call, steady"),
               ("ff_batch", "append_batch(10,000), steady"),
               ("ff_read", "replay read()"), ("ff_read_into", "replay read_into()"),
               ("file_call", "file append() per call"),
               ("file_batch", "file append_batch()"), ("ff_seek", "seek(time=t)"))


def results_table(bench, results, by_key):
    table = []
    last_section = None
    for x in results:
        if last_section is not None and x["section"] != last_section:
            table.append(None)
        last_section = x["section"]
        key = x["key"]
        table.append([
            x["implementation"], x["operation"], "{:,}".format(x["records"]),
            fmt_rate(x["median_rate"]), fmt_range(x["rates"]), fmt_time(x["median_s_per_op"]),
            "{:,.0f}".format(x["median_minor_faults"]),
            "" if x["vs"] is None or key == x["vs"] else fmt_ratio(x["vs_ratio"]) + x["vs_mark"],
            fmt_target(x),
        ])
    return render_table(["implementation", "operation", "records", "median", "range (min-max)",
                         "per op", "faults", "vs. deque", "target"], table, "<<>>>>>><")


def report(bench, machine):
    args, cfg, facts = bench.args, bench.cfg, bench.facts
    results, by_key = summarize(bench.rows, bench.times, bench.counts)
    say("")
    say("records/s (seek rows: seeks/s), median of {} runs (gc off while timed; one process, the "
        "runs of a section interleaved); {}-byte payloads, subject {!r}; steady-state logs and "
        "rings hold N = {:,} records{}".format(
            args.repeat, PAYLOAD, SUBJECT, cfg["ring"],
            " [QUICK RUN: indicative only]" if args.quick else ""))
    say(results_table(bench, results, by_key))
    say(wrap("per op: median time per record (seek rows: per seek).  faults: minor page faults per "
             "run (median; a 4 KiB first touch each, or one per huge page).  vs. deque: median "
             "rate against the deque row of the same operation (append per call, batched, replay, "
             "cold); + = file-backed fastflow against the in-memory deque; * = seek rows against "
             "bisect over the same timestamps (no deque row: bisect on a deque indexes in O(n), "
             "and 10M tuples would take ~1.5 GiB); c = fresh unbounded structures, growth "
             "included.  (floor): the same Python loop calling a two-argument C method ({}.get) "
             "instead of append(); no per-call loop can beat it."))

    seek_net = None
    if "ff_seek" in by_key:
        g = by_key["ff_seek"]["median_s_per_op"]
        f = by_key["ff_seek_first"]["median_s_per_op"]
        seek_net = g - f
        sl = facts["seek_log"]
        say("")
        say(wrap("seek: {:,} records of {} bytes built with append_batch in {:.2f} s ({}); "
                 "resident memory +{:.0f} MiB (arena {:.0f} MiB, {:,} index entries of 48 bytes "
                 "= {:.0f} MiB; {:.1f} bytes per record; {} MiB of the process in transparent huge "
                 "pages); timestamps read back with read() at {}."
                 .format(sl["records"], sl["payload"], sl["build_s"], fmt_rate(sl["build_rate"]),
                         mib(sl["rss_growth"]), mib(sl["arena_bytes"]), sl["index_entries"],
                         mib(sl["index_entries"] * 48), sl["rss_growth"] / max(1, sl["records"]),
                         "?" if sl["anon_huge"] is None else "{:.0f}".format(mib(sl["anon_huge"])),
                         fmt_rate(sl["read_ts_rate"]))))
        say(wrap("seek(time=t): {} per call; minus a trivial call measured the same way "
                 "(seek('first'), {}): {} for the search itself.  {:,} random t between the "
                 "first and last ts; {} distinct ts values among the records (append_batch "
                 "stamps a batch with one ts).".format(
                     fmt_time(g), fmt_time(f), fmt_time(seek_net), by_key["ff_seek"]["records"],
                     "?" if sl["distinct_ts"] is None else "{:,}".format(sl["distinct_ts"]))))
    if "file" in facts:
        fi = facts["file"]

        def delta(mode, k):
            return (fi["after"][mode][k] or 0) - (fi["before"][mode][k] or 0)

        say("")
        say(wrap("file-backed: {} bytes per record on disk (36-byte header + subject + payload); "
                 "while timed (warm-up included) the fsync=\"interval\" log wrote {:,} records "
                 "({:.0f} MiB), started {} new 64 MiB segments (up to two of them reused "
                 "from deleted segments, the others new sparse files whose pages are "
                 "first-touched by the writes) and ran {} msyncs; the fsync=\"never\" log wrote "
                 "{:,} and started {}; the fsync=\"always\" log ran {:,} msyncs.".format(
                     fi["bytes_per_record"], delta("interval", "last_seq"),
                     mib(delta("interval", "last_seq") * fi["bytes_per_record"]),
                     delta("interval", "deleted_segments"), delta("interval", "fsyncs"),
                     delta("never", "last_seq"), delta("never", "deleted_segments"),
                     delta("always", "fsyncs"))))
    sm = facts["steady_memory"]
    say(wrap("steady state: the in-memory log's arena ({:.0f} MiB) and index ({:,} entries) did "
             "not grow while timed: {}.".format(mib(sm["after"]["arena_bytes"]),
                                                sm["after"]["index_entries"],
                                                "yes" if sm["no_growth"] else "NO")))
    say("peak resident memory of this process: {:.0f} MiB".format(mib(peak_rss() or 0)))

    targets = []
    for key, what in TARGET_ROWS:
        x = by_key.get(key)
        if x is None:
            continue
        kind, value = x["target"]
        t = {"what": what, "key": key, "kind": kind, "target": value,
             "value": x["median_rate"] if kind == "rate" else x["median_s_per_op"],
             "pass": judge(x)}
        if key == "ff_seek":
            t["value_net"] = seek_net
        targets.append(t)
    say("targets: " + "; ".join("{} {} {}: {} {}".format(
        t["what"], ">=" if t["kind"] == "rate" else "<",
        fmt_rate(t["target"]) if t["kind"] == "rate" else fmt_time(t["target"]),
        fmt_rate(t["value"]) if t["kind"] == "rate" else fmt_time(t["value"]),
        "PASS" if t["pass"] else "FAIL") for t in targets)
        + (" [quick run: indicative only]" if args.quick else ""))
    say("sanity: " + ("OK (replay content and counts, seek == bisect, bounds held)"
                      if not bench.sanity else "; ".join(bench.sanity)))
    say("")
    say("caveats:")
    for c in (
        "The VM is small and noisy (see the range column); read the medians and the ratios.",
        "The baselines do less than the log: the deque keeps references to the caller's objects "
        "(no copy) and has no index; the bytearray ring copies only the payload (no seq, ts or "
        "subject); the numpy ring has no subject.  None of them validates the subject, keeps "
        "per-subject state, or can seek by time.  The batched baselines copy prebuilt records "
        "(the seq and ts in them are not assigned per batch), so they are an upper bound.",
        "Steady-state rows reuse memory that is already mapped.  A log that grows, or a "
        "file-backed log writing new segment pages, pays the first-touch cost above (the cold "
        "row; the file rows).",
        "File-backed rows write to the page cache of {} ({}); fsync=\"interval\" msyncs once per "
        "second on a background thread (the second core), so a run includes the writeback that "
        "falls in it.  Disk speed "
        "shows mostly in the fsync=\"always\" row.".format(args.tmpdir, machine["tmpdir_fs"]),
        "Seek rows are bound by cache and TLB misses (~{} probes into an index of {:,} entries); "
        "the interleaved baseline runs evict it, so each run starts cold, and a run of {:,} seeks "
        "lasts only milliseconds: expect run-to-run spread.".format(
            max(1, bench.cfg["seek_n"]).bit_length(), bench.cfg["seek_n"], bench.cfg["seeks"]),
        "Replay rows: read() copies the payloads into one bytes per batch plus seq/ts/offset "
        "arrays; the deque row only collects references to existing tuples.",
        "fastflow's figures are for the compiled core built when the script ran (git and build "
        "time above); another build may differ.",
    ):
        say(wrap(c, "  ").replace("  ", "- ", 1))
    return results, targets


# -- main --------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs per row; the median is reported")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED,
                    help="payload bytes and seek times (default %(default)s)")
    ap.add_argument("--tmpdir", default="/tmp",
                    help="where the file-backed logs are created (default %(default)s)")
    ap.add_argument("--skip-file", action="store_true", help="leave out the file-backed rows")
    ap.add_argument("--skip-seek", action="store_true",
                    help="leave out the 10M-record seek section")
    ap.add_argument("--no-numpy", action="store_true", help="leave out the numpy record ring")
    add_output_args(ap, quick_help="small smoke run (seconds): 20,000-record rings, 100,000 "
                                    "appends per run, 200,000 records for seek, repeat 3")
    args = ap.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    if args.quick:
        args.repeat = min(args.repeat, 3)
    if args.json:
        report_to(sys.stderr)

    import fastflow
    from fastflow._core import Log

    np = None
    if not args.no_numpy:
        try:
            import numpy as np
        except ImportError:
            say("numpy is not installed: leaving the numpy record ring out")

    t_start = time.perf_counter()
    touch = first_touch(args.tmpdir)
    machine = machine_facts(args.tmpdir)
    say(format_machine(machine, touch))
    if not fastflow.COMPILED or core_built() is None:
        say("WARNING: fastflow runs its pure-Python core (FASTFLOW_NO_EXTENSIONS?): "
            "the fastflow rows are not the compiled log")
    say(wrap(
        "NOTE: on this VM first-touch page faults are expensive: the kernel zeroes each fresh page "
        "in the fault, at ~0.5 GB/s (it varies from run to run; just now: {:.2f} GB/s for "
        "anonymous memory, {:.2f} GB/s for a new sparse file, against {:.0f} GB/s for writing "
        "memory already mapped).  So the append rows are measured on steady-state logs and rings "
        "(pre-cycled: {:,} appends into max_events={:,} before timing, no growth while timed), and "
        "a \"cold\" row shows appends into a fresh unbounded log, growth and page faults included, "
        "so both are visible.  A file-backed log cannot avoid them: every record lands on a page "
        "of a new segment (at {} bytes per record, {:.2f} GB/s is {} records/s before any other "
        "work).".format(
            touch["first_gb_s"], touch["file_first_gb_s"], touch["mapped_write_gb_s"],
            cfg["prefill"], cfg["ring"], FILE_RECORD, touch["file_first_gb_s"],
            fmt_rate(touch["file_first_gb_s"] * 1e9 / FILE_RECORD).replace("/s", ""))))

    bench = Bench(args, cfg, Log, np)
    section_append(bench)
    between_sections()
    if not args.skip_file:
        section_file(bench)
        between_sections()
    section_replay(bench)
    between_sections()
    if not args.skip_seek:
        section_seek(bench)
        bench.facts["peak_rss_after_seek"] = peak_rss()
        between_sections()
    section_cold(bench)

    results, targets = report(bench, machine)
    total_s = time.perf_counter() - t_start
    say("total {:.0f} s".format(total_s))

    if args.json:
        doc = {
            "machine": machine,
            "first_touch": touch,
            "config": dict(cfg, repeat=args.repeat, seed=args.seed, quick=args.quick,
                           payload=PAYLOAD, batch=BATCH, subject=SUBJECT),
            "results": results,
            "targets": targets,
            "facts": bench.facts,
            "sanity": bench.sanity,
            "peak_rss": peak_rss(),
            "total_s": total_s,
        }
        write_json(doc)
    return 0 if not bench.sanity else 1


if __name__ == "__main__":
    sys.exit(main())
