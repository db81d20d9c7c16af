"""Compare fastflow's NATS front door (``fastflow serve --nats-port``) with
nats-server: the same NATS clients, the same workloads, both servers in one run.

One run starts nats-server (``-a 127.0.0.1 -p <free>``) and ``python -m
fastflow serve --host 127.0.0.1 --port <free> --nats-port <free>
--monitor-port 0``, each in its own process (both stopped at the end, also on
failure or Ctrl-C), and drives both with the workers of compare_broker.py
(imported, not copied: ``compare_broker.py --worker`` for nats-py,
``benchmarks/go/natsbench.go``, compiled at start, for the Go client).  Rows:

1. nats-py, 1 publisher -> 1 subscriber, 16 B: messages delivered/s
   (target: fastflow >= 1.0x nats-server);
2. nats-py, 1 -> 5 subscriber processes, 16 B: deliveries/s summed over the
   subscribers (target >= 1.0x);
3. nats-py request/reply, 16 B, one requester and one responder, back to
   back: p50 and p99 round trip (target: fastflow's p50 and p99 <= nats-server's);
4. Go nats.go 1 -> 1, 16 B: messages delivered/s (target >= 0.8x).

A throughput run is compare_broker's: the subscribers subscribe and say so,
then the publisher publishes N messages in a loop (nats-py: ``publish()``
per message, flush at the end), at most a window ahead of the slowest
subscriber (acks on ``bench.ack.<i>``) so that no server cuts a slow
consumer.  delivered/s is measured at the subscribers: deliveries / (last
message received at any subscriber - first received at any).  N is the same
for both servers, sized from one warm-up run on each (the faster one) to
last about ``--run-seconds``.  Every repeat runs each row on both servers
back to back, alternating which goes first; figures are medians of
``--repeat`` runs (request/reply: the median of the runs' p50 and p99).
``--json`` writes the figures as JSON to stdout (the report goes to stderr).
"""

import argparse
import atexit
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time

import compare_broker as cb
from _common import (
    Interrupted,
    add_output_args,
    choices_arg,
    fmt_rate,
    median_of,
    on_signal,
    render_table,
    report_to,
    rows_arg,
    say,
    wrap,
    write_json,
)

FANOUT = 5
SIZE = 16

ROWS = (  # num, key, client, kind, subscribers, target ratio fastflow / nats-server
    {"num": 1, "key": "py_1to1", "client": "nats", "kind": "tput", "subs": 1, "target": 1.0,
     "label": f"nats-py 1 -> 1, {SIZE} B", "measure": "delivered/s"},
    {"num": 2, "key": "py_1to5", "client": "nats", "kind": "tput", "subs": FANOUT, "target": 1.0,
     "label": f"nats-py 1 -> {FANOUT}, {SIZE} B",
     "measure": f"deliveries/s ({FANOUT} subs)"},
    {"num": 3, "key": "py_rr", "client": "nats", "kind": "rr", "subs": 1, "target": 1.0,
     "label": f"nats-py request/reply, {SIZE} B", "measure": "round trip"},
    {"num": 4, "key": "go_1to1", "client": "go", "kind": "tput", "subs": 1, "target": 0.8,
     "label": f"Go nats.go 1 -> 1, {SIZE} B", "measure": "delivered/s"},
)
SERVERS = ("nats", "fastflow")
SERVER_LABEL = {"nats": "nats-server", "fastflow": "fastflow NATS door"}

FULL = {"run_s": 2.0, "calib_n": 200_000, "repeat": 5, "rr_n": 5_000, "rr_warm": 500,
        "min_n": 100_000, "max_n": 8_000_000}
QUICK = {"run_s": 1.0, "calib_n": 50_000, "repeat": 3, "rr_n": 2_000, "rr_warm": 200,
         "min_n": 20_000, "max_n": 2_000_000}


# -- servers ------------------------------------------------------------------------

def door_available():
    """(True, None) when ``fastflow serve`` has ``--nats-port``, else (False, why)."""
    why = cb.serve_accepts("--nats-port")
    return why is None, why


def start_door(log_level):
    """fastflow serve with its NATS listener; a Server whose url is the door's."""
    ok, why = door_available()
    if not ok:
        raise RuntimeError(why)
    nats_port = cb.free_port()
    native = cb.start_fastflow_server(["--host", "127.0.0.1", "--nats-port", str(nats_port)],
                                      log_level=log_level)
    try:
        cb.wait_listening(native.child, nats_port, 20)
    except RuntimeError:
        native.child.stop()
        raise
    door = cb.Server("fastflow", native.child, nats_port,
                     f"nats://127.0.0.1:{nats_port}", native.version)
    door.native_port = native.port
    return door


def nats_go_version():
    try:
        with open(os.path.join(cb.NATS_GO_SRC, "nats.go")) as f:
            m = re.search(r'\bVersion\s*=\s*"([^"]+)"', f.read())
        return m.group(1) if m else None
    except OSError:
        return None


# -- runs -----------------------------------------------------------------------------

class State:
    """Per (row, server): the runs, the first error."""

    def __init__(self, row, server):
        self.row, self.server = row, server
        self.runs = []
        self.warmup = None
        self.error = None
        self.server_log = []


def run_one(bench, st, server, n, cfg):
    """One run of ``st``'s row on ``server``; the run's figures (raises RuntimeError)."""
    from fastflow._stats import percentile

    if not server.alive():
        raise RuntimeError("{} is not running (exit {}): {}".format(
            SERVER_LABEL[st.server], server.child.proc.returncode,
            server.child.stderr_tail(600) or "no stderr"))
    row = st.row
    before = len(bench.sanity)
    label = "{} on {}".format(row["label"], SERVER_LABEL[st.server])
    try:
        if row["kind"] == "tput":
            res = bench.run_tput(dict(row, size=SIZE, label=label), n, server=server)
            if res["deliveries"] != res["expected"] or res["timed_out"]:
                # not a figure: what the server lost (the sanity list says it too)
                raise RuntimeError("{:,} deliveries of {:,}{}{}".format(
                    res["deliveries"], res["expected"], " (timed out)" if res["timed_out"] else "",
                    "; client errors: " + "; ".join(res["errors"][:3]) if res["errors"] else ""))
            res["sub_rate"] = res["sub_side_rate"] if res.get("sub_side_rate") else res["rate"]
        else:
            cpu0, _ = server.stat()
            t0 = time.monotonic()
            r = bench.run_rr(row["client"], n, cfg["rr_warm"], server=server)
            wall = time.monotonic() - t0
            cpu1, _ = server.stat()
            s = sorted(r["samples"])
            if not s:
                raise RuntimeError("no round trips measured")
            server_cpu = (cpu1 - cpu0) / wall if cpu0 is not None and cpu1 is not None else None
            res = {"samples": len(s), "p50_ns": percentile(s, 50), "p90_ns": percentile(s, 90),
                   "p99_ns": percentile(s, 99), "max_ns": s[-1],
                   "server_cpu": server_cpu, "cpu": r["cpu"]}
    except (KeyError, TypeError, ValueError) as exc:  # a worker's answer without its figures
        raise RuntimeError(f"bad worker result: {type(exc).__name__}: {exc}") from exc
    finally:
        for i in range(before, len(bench.sanity)):
            if SERVER_LABEL[st.server] not in bench.sanity[i]:
                bench.sanity[i] = f"[{SERVER_LABEL[st.server]}] {bench.sanity[i]}"
    return res


def fail(st, server, exc, when):
    """Record why ``st``'s row failed on ``server``, with the server's last log lines."""
    st.error = f"{when}: {exc}"
    st.server_log = server.child.stderr_tail(6000).splitlines()[-20:] if server else []
    say("  {} on {}: FAILED {}".format(st.row["label"], SERVER_LABEL[st.server], st.error))


def run_all(bench, rows, servers, cfg):
    states = {(r["key"], k): State(r, k) for r in rows for k in servers}
    t0 = time.perf_counter()
    # warm-up runs: the throughput rows' N, the same on both servers
    for row in rows:
        if row["kind"] != "tput" or (row["client"] == "go" and bench.go is None):
            continue
        per_pub = []
        for k in servers:
            st = states[(row["key"], k)]
            try:
                st.warmup = run_one(bench, st, servers[k], cfg["calib_n"], cfg)
            except RuntimeError as exc:
                fail(st, servers[k], exc, "warm-up run")
                continue
            per_pub.append(st.warmup["sub_rate"] / row["subs"])
            say("  {} on {}: warm-up {} ({:,} msgs)".format(
                row["label"], SERVER_LABEL[k], fmt_rate(st.warmup["sub_rate"]), cfg["calib_n"]))
        if per_pub:
            n = int(min(cfg["max_n"], max(cfg["min_n"], max(per_pub) * cfg["run_s"])))
            row["n"] = -(-n // 1000) * 1000
            say("  {}: N = {:,} messages per run".format(row["label"], row["n"]))
    for rep in range(cfg["repeat"]):
        order = list(servers) if rep % 2 == 0 else list(servers)[::-1]
        for row in rows:
            if row["client"] == "go" and bench.go is None:
                continue
            n = row.get("n") if row["kind"] == "tput" else cfg["rr_n"]
            if n is None:
                continue
            for k in order:
                st = states[(row["key"], k)]
                if st.error:
                    continue
                try:
                    st.runs.append(run_one(bench, st, servers[k], n, cfg))
                except RuntimeError as exc:
                    fail(st, servers[k], exc, f"run {rep + 1}")
        say("  repeat {}/{} done ({:.0f} s)".format(rep + 1, cfg["repeat"],
                                                    time.perf_counter() - t0))
    return states


# -- summary and report -----------------------------------------------------------------

def summarize(states, rows, servers):
    out = []
    for row in rows:
        res = {"num": row["num"], "key": row["key"], "label": row["label"],
               "measure": row["measure"], "client": row["client"], "kind": row["kind"],
               "subs": row["subs"], "size": SIZE, "target_ratio": row["target"],
               "n": row.get("n"), "servers": {}}
        for k in servers:
            st = states[(row["key"], k)]
            s = {"runs": st.runs, "error": st.error, "server_log": st.server_log,
                 "warmup": st.warmup}
            if st.runs:
                s["median_server_cpu"] = median_of(st.runs, "server_cpu")
                if row["kind"] == "tput":
                    rates = [r["sub_rate"] for r in st.runs]
                    s.update(median=statistics.median(rates), min=min(rates), max=max(rates),
                             median_pub_rate=median_of(st.runs, "pub_rate"),
                             median_rate_from_first_publish=median_of(st.runs, "rate"))
                else:
                    for q in ("p50_ns", "p99_ns"):
                        vals = [r[q] for r in st.runs]
                        s[q] = statistics.median(vals)
                        s[q + "_runs"] = vals
            res["servers"][k] = s
        a, b = res["servers"].get("fastflow", {}), res["servers"].get("nats", {})
        if row["kind"] == "tput":
            if a.get("median") and b.get("median"):
                res["ratio"] = a["median"] / b["median"]
                res["pass"] = res["ratio"] >= row["target"]
        else:
            if a.get("p50_ns") and b.get("p50_ns"):
                res["ratio_p50"] = a["p50_ns"] / b["p50_ns"]
                res["ratio_p99"] = a["p99_ns"] / b["p99_ns"]
                res["pass_p50"] = res["ratio_p50"] <= 1.0 / row["target"]
                res["pass_p99"] = res["ratio_p99"] <= 1.0 / row["target"]
                res["pass"] = res["pass_p50"] and res["pass_p99"]
        out.append(res)
    return out


def verdict(ok):
    return "-" if ok is None else "PASS" if ok else "MISS"


def fmt_x(x):
    """A ratio with 3 decimals: 0.995x is not rounded up to a pass."""
    return "-" if x is None else f"{x:.3f}x"


def fmt_pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def cell(s, kind, q=None):
    if s is None:
        return "not run", ""
    if s.get("not_started"):
        return "did not start", ""
    if s.get("error") and not s.get("runs"):
        return "FAILED", ""
    if not s.get("runs"):
        return "-", ""
    if kind == "tput":
        return fmt_rate(s["median"]), "{}-{}".format(fmt_rate(s["min"]), fmt_rate(s["max"]))
    vals = s[q + "_runs"]
    return cb.fmt_us(s[q]), f"{cb.fmt_us(min(vals))}-{cb.fmt_us(max(vals))}"


def table(results, skipped):
    out = []
    for res in results:
        servers = res["servers"]
        cpu = " / ".join(fmt_pct(servers[k].get("median_server_cpu")) if k in servers else "-"
                         for k in SERVERS)
        if res["client"] in skipped:
            out.append([res["num"], res["label"], res["measure"], "skipped: " +
                        skipped[res["client"]], "", "", "", "", "", ""])
            continue
        if res["kind"] == "tput":
            nv, nr = cell(servers.get("nats"), "tput")
            fv, fr = cell(servers.get("fastflow"), "tput")
            out.append([res["num"], res["label"], res["measure"], nv, nr, fv, fr,
                        fmt_x(res.get("ratio")),
                        ">= {:.2f}x {}".format(res["target_ratio"], verdict(res.get("pass"))),
                        cpu])
        else:
            for i, q in enumerate(("p50_ns", "p99_ns")):
                nv, nr = cell(servers.get("nats"), "rr", q)
                fv, fr = cell(servers.get("fastflow"), "rr", q)
                rk = "ratio_" + q[:3]
                out.append(["" if i else res["num"], "" if i else res["label"],
                            "{} {}".format(q[:3], res["measure"]), nv, nr, fv, fr,
                            fmt_x(res.get(rk)),
                            "<= {:.2f}x {}".format(1.0 / res["target_ratio"],
                                                   verdict(res.get("pass_" + q[:3]))),
                            "" if i else cpu])
    return render_table(["#", "workload", "measure", "nats-server", "range", "fastflow",
                         "range", "fastflow/nats-server", "target", "CPU srv nats/ff"],
                        out, "><<>>>>><>")


def report(args, cfg, results, skipped, sanity):
    quick = " [QUICK RUN: indicative only]" if args.quick else ""
    say("")
    say(wrap("median of {} runs per row and server (the servers interleaved, alternating "
             "which goes first); fastflow = fastflow serve's NATS door{}".format(
                 cfg["repeat"], quick)))
    say(table(results, skipped))
    say(wrap("delivered/s: deliveries / (last message received at any subscriber - first "
             "received at any), time.time_ns() in the subscribers; the publisher stays at most "
             "a window ({:,} messages of {} B) ahead of the slowest subscriber.  Round trips: "
             "perf_counter in the requester, {:,} per run after {:,} warm-up requests.  CPU "
             "srv: the server process's CPU over the run's wall time (100% = one core), "
             "median.".format(cb.Bench(args, cfg).window(SIZE), SIZE, cfg["rr_n"],
                              cfg["rr_warm"])))
    others = [r["other_cpu"] for res in results for s in res["servers"].values()
              for r in s.get("runs", ()) if r.get("other_cpu") is not None]
    if others:
        med, top = fmt_pct(statistics.median(others)), fmt_pct(max(others))
        say(wrap("CPU used outside the servers and the workers during the throughput runs "
                 f"(other processes, this script; /proc/stat): median {med} of a core, "
                 f"max {top}."))
        if statistics.median(others) > 0.2:
            say(wrap("WARNING: other work used over 20% of a core during the median run: the "
                     "rates are low by about that share of the machine; rerun on a quiet machine."))
    for res in results:
        for k in SERVERS:
            s = res["servers"].get(k)
            if not s or not s.get("runs"):
                continue
            if res["kind"] == "tput":
                per = ", ".join(fmt_rate(r["sub_rate"]) for r in s["runs"])
            else:
                per = ", ".join(f"{cb.fmt_us(r['p50_ns'])} / {cb.fmt_us(r['p99_ns'])}"
                                for r in s["runs"])
            say(f"  row {res['num']} per run, {SERVER_LABEL[k]}: {per}")
    for res in results:
        for k, s in res["servers"].items():
            if s.get("error") and not s.get("not_started"):
                say("FAILED row {} ({}) on {}: {}".format(res["num"], res["label"],
                                                          SERVER_LABEL[k], s["error"]))
                if s.get("server_log"):
                    say("  {}'s stderr, last {} lines:".format(SERVER_LABEL[k],
                                                               len(s["server_log"])))
                    for line in s["server_log"]:
                        say("    | " + line)
    for c, why in skipped.items():
        say(f"skipped {cb.CLIENTS[c][0] if c in cb.CLIENTS else c}: {why}")
    ran = any(s.get("runs") for r in results for s in r["servers"].values())
    failed = sum(1 for r in results for s in r["servers"].values() if s.get("error"))
    say("sanity: " + ("; ".join(sanity) if sanity else "nothing ran" if not ran else
                      f"{failed} row(s) FAILED on a server (above)" if failed else
                      "OK (every subscriber got every message, every request its reply, no "
                      "timeouts, the servers alive)"))
    say(wrap(f"caveats: {os.cpu_count()} cores shared by the server, the publisher and the "
             "subscriber(s); nats-server is multi-threaded Go, fastflow serve one uvloop "
             "process.  Quick runs and noisy machines move these figures by tens of percent; "
             "compare the two servers within one run."))


# -- main ------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=rows_arg(ROWS), default=[r["key"] for r in ROWS],
                    help="rows to run, by number or name: 1 py_1to1, 2 py_1to5, 3 py_rr, "
                         "4 go_1to1 (default all)")
    ap.add_argument("--servers", type=choices_arg(SERVERS, "server"), default=list(SERVERS),
                    help="nats, fastflow or both (default nats,fastflow)")
    ap.add_argument("--repeat", type=int, help="runs per row and server (default 5; --quick 3)")
    ap.add_argument("--run-seconds", type=float,
                    help="about how long a throughput run lasts (default 2; --quick 1)")
    ap.add_argument("--rr-samples", type=int,
                    help="request/reply round trips per run (default 5,000; --quick 2,000)")
    ap.add_argument("--window", type=int, default=0,
                    help="most messages a publisher runs ahead of its slowest subscriber "
                         "(default: compare_broker's, 32 MiB of frames)")
    ap.add_argument("--ff-log-level", default="warning",
                    choices=("debug", "info", "warning", "error", "critical"),
                    help="fastflow serve's --log-level (its stderr tail is shown on failure; "
                         "default %(default)s)")
    add_output_args(ap, quick_help="smoke run (under 3 minutes): runs of ~1 s, 3 repeats, "
                                    "2,000 round trips per run")
    args = ap.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    for opt, key in ((args.repeat, "repeat"), (args.run_seconds, "run_s"),
                     (args.rr_samples, "rr_n")):
        if opt:
            cfg[key] = opt
    if cfg["repeat"] < 1 or cfg["rr_n"] < 1:
        ap.error("--repeat and --rr-samples must be >= 1")
    if not args.servers or not args.rows:
        ap.error("--servers and --rows: none given")
    args.servers = list(dict.fromkeys(args.servers))
    if args.json:
        report_to(sys.stderr)
    rows = [dict(r) for r in ROWS if r["key"] in args.rows]

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cb.Child.stop_all)

    if cb.REPO not in sys.path:
        # the checkout's fastflow, the one `python -m fastflow serve` (cwd: the checkout)
        # runs, for the versions printed below
        sys.path.insert(1, cb.REPO)
    t_start = time.perf_counter()
    bench = cb.Bench(args, cfg)
    machine = cb.machine_facts(bench)
    say(cb.format_machine(machine))
    skipped = {}
    servers = {}
    facts = {}
    tmpdir = tempfile.mkdtemp(prefix="compare_nats.")
    interrupted = False
    try:
        if any(r["client"] == "go" for r in rows):
            bench.go, why = cb.build_go(tmpdir)
            if bench.go is None:
                skipped["go"] = why
                say(f"Go client: skipped ({why})")
            else:
                machine["go"] = why
                machine["nats_go"] = nats_go_version()
                say("Go client: natsbench.go built with {} against nats.go {} from {}".format(
                    why, machine["nats_go"] or "?", cb.NATS_GO_SRC))
        for kind in args.servers:
            try:
                if kind == "nats":
                    s = cb.start_nats_server()
                    say(f"nats-server: {s.version} on 127.0.0.1:{s.port} (pid {s.child.proc.pid})")
                else:
                    s = start_door(args.ff_log_level)
                    say("fastflow NATS door: {} on 127.0.0.1:{} (native port {}; pid {}; {})"
                        .format(s.version, s.port, s.native_port, s.child.proc.pid,
                                " ".join(s.child.argv[1:])))
                servers[kind] = s
            except (RuntimeError, OSError) as exc:
                say(f"{SERVER_LABEL[kind]}: did not start: {exc}")
                facts.setdefault("not_started", {})[kind] = str(exc)
        machine["nats_server"] = servers["nats"].version if "nats" in servers else None
        if servers:
            say("")
            say("[runs] rows {}; {} repeats on {} ...".format(
                ", ".join(str(r["num"]) for r in rows), cfg["repeat"],
                " and ".join(SERVER_LABEL[k] for k in servers)))
            states = run_all(bench, rows, servers, cfg)
        else:
            states = {(r["key"], k): State(r, k) for r in rows for k in servers}
    except KeyboardInterrupt:
        interrupted = 128 + signal.SIGINT
    except Interrupted as exc:
        interrupted = 128 + exc.args[0]
    finally:
        for kind, s in servers.items():
            alive = s.alive()
            if not alive:
                bench.sanity.append(f"{SERVER_LABEL[kind]} exited during the run "
                                    f"({s.child.proc.returncode}): {s.child.stderr_tail(600)}")
            s.child.stop()
            facts.setdefault("server_stderr_tail", {})[kind] = s.child.stderr_tail(2000)
        cb.Child.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if interrupted:
        say("interrupted; every child process stopped")
        return interrupted

    results = summarize(states, rows, servers)
    for res in results:
        for kind in args.servers:
            if kind not in servers:
                why = facts.get("not_started", {}).get(kind)
                res["servers"][kind] = {"runs": [], "not_started": True,
                                        "error": f"did not start: {why}"}
    report(args, cfg, results, skipped, bench.sanity)
    for kind in args.servers:
        if kind not in servers:
            say("{} did not start: {}".format(SERVER_LABEL[kind],
                                               facts.get("not_started", {}).get(kind)))
    total_s = time.perf_counter() - t_start
    say(f"total {total_s:.0f} s")
    failed = (bool(bench.sanity) or len(servers) < len(args.servers)
              or any(s.get("error") for r in results for s in r["servers"].values()))
    if args.json:
        write_json({
            "machine": machine,
            "config": dict(cfg, size=SIZE, fanout=FANOUT, rows=[r["key"] for r in rows],
                           servers=args.servers, quick=args.quick,
                           window=bench.window(SIZE)),
            "servers": {k: {"url": s.url, "version": s.version, "argv": s.child.argv}
                        for k, s in servers.items()},
            "results": results,
            "skipped": skipped,
            "sanity": bench.sanity,
            "facts": facts,
            "total_s": total_s,
        })
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
