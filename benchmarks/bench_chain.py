"""What the hash chain of file-backed logs costs, and how fast the audit reads it.

1. File-backed appends (``fsync="never"``: what the chain costs the
   processor; ``fsync="interval"``: as deployed, with the msyncs of the
   flusher thread, noisier; 100-byte payloads, one subject) with the chain
   (``Log(chain=True)``, the default) and without (``chain=False``,
   format-1 frames), per call and with ``append_batch`` of 10,000, into a
   log of 4 MiB segments keeping 20,000 records.  Each log is warmed first
   (twice ``--records`` appends: retention cycles and the deleted segments
   come back as spares with resident pages), then ``--records`` appends
   are timed (after an ``os.sync()``, so that the write-back of earlier
   runs does not land in this one).  The runs of both variants are
   interleaved; medians of ``--repeat`` runs and the ratio chain / no
   chain (goal: <= 1.10).
2. ``fastflow audit`` (``fastflow.audit.audit_stream``) over a stream of
   ``--audit-records`` records (default 10,000,000; ~180 bytes a frame),
   in records/s and MB/s, against ``sha256sum`` of the same segment files
   run from this script (both from the page cache: each is run once
   before it is timed); medians of ``--repeat`` runs.

``python benchmarks/bench_chain.py [--records N] [--audit-records N]
[--repeat R] [--json]``; ``--quick`` is a smoke run of a few seconds.
"""

import argparse
import gc
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SUBJECT = "md.xnas.AAPL"
PAYLOAD = bytes(range(100))


def _log_cls():
    from fastflow._impl import COMPILED, Log

    return Log, COMPILED


def time_appends(tmp, chain, n, batched, fsync):
    Log, _ = _log_cls()
    d = tempfile.mkdtemp(dir=tmp)
    try:
        # steady state: 4 MiB segments, ~3.6 MB retained, so that deleted
        # segments come back as spares whose pages are resident (first
        # touches of fresh pages would swamp what is measured)
        log = Log(path=d, fsync=fsync, chain=chain, max_events=20_000,
                  segment_size=4 << 20)
        try:
            append, batch = log.append, log.append_batch
            datas = [PAYLOAD] * 10_000
            # warm: the pages of the live segment exist, retention cycles
            for _ in range(max(2 * n, 200_000) // 10_000):
                batch(SUBJECT, datas)
            log.flush()
            os.sync()       # the disk's write-back of earlier runs settles first
            gc.disable()
            t0 = time.perf_counter()
            if batched:
                for _ in range(n // 10_000):
                    batch(SUBJECT, datas)
            else:
                for _ in range(n):
                    append(SUBJECT, PAYLOAD)
            dt = time.perf_counter() - t0
            gc.enable()
        finally:
            log.close()
        return (n // 10_000 * 10_000 if batched else n) / dt
    finally:
        shutil.rmtree(d, ignore_errors=True)


def bench_appends(tmp, n, repeat):
    rows = {}
    for fsync, batched in (("never", False), ("never", True), ("interval", False),
                           ("interval", True)):
        runs = {True: [], False: []}
        for _ in range(repeat):
            for chain in (False, True):  # interleaved
                runs[chain].append(time_appends(tmp, chain, n, batched, fsync))
        on, off = statistics.median(runs[True]), statistics.median(runs[False])
        rows["{}, fsync={}".format("batch" if batched else "per call", fsync)] = {
            "chain_per_s": on, "no_chain_per_s": off, "slowdown": off / on,
            "runs_chain": runs[True], "runs_no_chain": runs[False]}
    return rows


def make_stream(tmp, n):
    Log, _ = _log_cls()
    d = os.path.join(tmp, "audit", "streams", "bench")
    log = Log(path=d, fsync="never")
    try:
        datas = [PAYLOAD] * 10_000
        left = n
        while left > 0:
            k = min(left, 10_000)
            log.append_batch(SUBJECT, datas[:k])
            left -= k
    finally:
        log.close()
    return d


def bench_audit(tmp, n, repeat):
    from fastflow.audit import audit_stream

    d = make_stream(tmp, n)
    files = sorted(glob.glob(os.path.join(d, "*.seg")))
    nbytes = sum(os.path.getsize(f) for f in files)
    r = audit_stream(d)                 # once: the files in the page cache
    assert r.ok and r.records == n, (r.failure, r.records)
    subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
    audit_s, sha_s = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = audit_stream(d)
        audit_s.append(time.perf_counter() - t0)
        assert r.ok and r.records == n
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", *files], check=True, stdout=subprocess.DEVNULL)
        sha_s.append(time.perf_counter() - t0)
    a, s = statistics.median(audit_s), statistics.median(sha_s)
    return {"records": n, "bytes": nbytes, "segments": len(files),
            "audit_s": a, "audit_records_per_s": n / a, "audit_mb_per_s": nbytes / a / 1e6,
            "sha256sum_s": s, "sha256sum_mb_per_s": nbytes / s / 1e6,
            "audit_vs_sha256sum": s / a, "runs_audit_s": audit_s, "runs_sha256sum_s": sha_s}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=500_000,
                    help="appends timed per run (default 500,000)")
    ap.add_argument("--audit-records", type=int, default=10_000_000,
                    help="records of the audited stream (default 10,000,000)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per figure (median)")
    ap.add_argument("--tmp", default=None, help="directory for the logs (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = ap.parse_args(argv)
    if args.quick:
        args.records, args.audit_records, args.repeat = 50_000, 100_000, 3
    from fastflow._impl import CHAIN_IMPL

    _, compiled = _log_cls()
    tmp = tempfile.mkdtemp(prefix="bench-chain-", dir=args.tmp)
    try:
        appends = bench_appends(tmp, args.records, args.repeat)
        audit = bench_audit(tmp, args.audit_records, args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    facts = {"python": platform.python_version(), "machine": platform.machine(),
             "cpus": os.cpu_count(), "core": "native" if compiled else "pure-Python",
             "sha256": CHAIN_IMPL, "repeat": args.repeat, "records": args.records}
    if args.json:
        print(json.dumps({"facts": facts, "appends": appends, "audit": audit}, indent=2))
        return 0
    out = sys.stdout
    print("fastflow hash chain: {core} core, SHA-256 from {sha256}, Python {python}, "
          "{cpus} CPUs; medians of {repeat} runs".format(**facts), file=out)
    print("\nfile-backed appends, 100-byte payloads, {:,} per run:".format(
        args.records), file=out)
    print("  {:<26} {:>14} {:>14} {:>10}".format("", "chain", "no chain", "vs."), file=out)
    for name, row in appends.items():
        print("  {:<26} {:>12,.0f}/s {:>12,.0f}/s {:>9.3f}x".format(
            name, row["chain_per_s"], row["no_chain_per_s"], row["slowdown"]), file=out)
    a = audit
    print("\naudit of {:,} records ({:.1f} MB in {} segments):".format(
        a["records"], a["bytes"] / 1e6, a["segments"]), file=out)
    print("  fastflow audit  {:>8.2f} s  {:>12,.0f} records/s  {:>8.0f} MB/s".format(
        a["audit_s"], a["audit_records_per_s"], a["audit_mb_per_s"]), file=out)
    print("  sha256sum       {:>8.2f} s  {:>12}            {:>8.0f} MB/s".format(
        a["sha256sum_s"], "", a["sha256sum_mb_per_s"]), file=out)
    print("  audit / sha256sum throughput: {:.2f}x".format(a["audit_vs_sha256sum"]), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
