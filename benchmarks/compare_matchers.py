"""Compare fastflow's Matcher with the pure-Python reference and paho-mqtt.

One process builds the same subscription set (``fastflow.workload``, the
generator ``fastflow demo`` uses too; see README.md) in

* fastflow ``Matcher(cache_size=0)``  (result cache off),
* fastflow ``Matcher()``              (cache on, warmed with one pass first),
* fastflow's pure-Python reference    (``fastflow._ref.Matcher``),
* paho-mqtt's ``MQTTMatcher``         (MQTT syntax: '/', '+', '#'; one value
  per filter, so each filter holds the list of its subscribers' values),

and times (a) one ``match(subject)`` call per publish in a plain Python loop
and (b) one ``match_batch(stream)`` call.  Each figure is the median of
``--repeat`` runs (the runs of all rows are interleaved, gc is off while a
run is timed, as in ``timeit``).  The slow peers are timed on the first
``--slow-publishes`` publishes of the stream; rates are per second, so the
rows stay comparable.

Unless ``--skip-memory``, each matcher then loads the big subscription set
(1,000,000 mostly distinct patterns) in a fresh interpreter of its own, and
the growth of its resident set size is reported with the add and remove-all
times.

``--json`` writes every figure as one JSON document to stdout (the table goes
to stderr).
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from array import array
from collections import Counter

from _common import (add_output_args, core_built, cpu_facts, fastflow_facts,
                     fmt_rate as _fmt_rate, machine_format_fields, malloc_trim, paho_add,
                     peak_rss, python_desc, render_table, report_to, rss, say, wrap, write_json)
from fastflow.workload import (
    DEFAULT_SEED,
    format_stats,
    make_subscriptions,
    make_workload,
    to_mqtt,
)

TARGET_MATCH_OFF = 5e6  # publishes/s, single match(), cache off
TARGET_BATCH_WARM = 30e6  # publishes/s, match_batch(), cache warm
TARGET_MEMORY_MIB = 150  # RSS growth for 1M subscriptions
SANITY_N = 2000

# -- machine facts ------------------------------------------------------------

def machine_facts():
    try:
        from importlib.metadata import version

        paho_version = version("paho-mqtt")
    except Exception:
        paho_version = None
    return {
        **cpu_facts(),
        "python": python_desc(),
        "python_build": " ".join(platform.python_build()),
        "compiler": platform.python_compiler(),
        "platform": platform.platform(),
        **fastflow_facts(),
        "paho_mqtt": paho_version,
    }


def format_machine(m):
    return (
        "machine: {cpu}{mhz}, {cores} cores ({usable_cores} usable); {python} "
        "({compiler}); {platform}\nfastflow {fastflow} ({kind}; git {git}; _core built {built}), "
        "paho-mqtt {paho}".format(
            paho=m["paho_mqtt"] or "not installed",
            **machine_format_fields(m),
            **m,
        )
    )


# -- building -----------------------------------------------------------------

def build_matchers(w, with_paho):
    import fastflow
    from fastflow._ref import Matcher as RefMatcher

    built = {}
    for key, factory in (
        ("ff_off", lambda: fastflow.Matcher(cache_size=0)),
        ("ff_warm", lambda: fastflow.Matcher()),
        ("ref", lambda: RefMatcher(cache_size=0)),
    ):
        m = factory()
        t0 = time.perf_counter()
        for i, p in enumerate(w.patterns):
            m.add(p, i)
        built[key] = (m, time.perf_counter() - t0)
    if with_paho:
        from paho.mqtt.matcher import MQTTMatcher

        mm = MQTTMatcher()
        t0 = time.perf_counter()
        for i, p in enumerate(w.patterns):
            paho_add(mm, to_mqtt(p), i)
        built["paho"] = (mm, time.perf_counter() - t0)
    return built


def sanity_check(built, w, topics):
    """The first SANITY_N publishes give the same multiset of values
    everywhere (this workload has no queue groups; no subject is the parent
    of a '>' pattern, where paho's '#' also matches the parent, and none
    starts with '$')."""
    ff_off = built["ff_off"][0]
    ff_warm = built["ff_warm"][0]
    ref = built["ref"][0]
    paho = built.get("paho", (None,))[0]
    n = min(SANITY_N, len(w.publishes))
    subjects = w.publishes[:n]
    bad = []
    b_off = ff_off.match_batch(subjects)
    b_ref = ref.match_batch(subjects)
    total = 0
    for i, s in enumerate(subjects):
        want = Counter(ref.match(s))
        total += sum(want.values())
        got = {
            "fastflow cache off": Counter(ff_off.match(s)),
            "fastflow cache on": Counter(ff_warm.match(s)),
            "fastflow match_batch": Counter(b_off[i]),
            "ref match_batch": Counter(b_ref[i]),
        }
        if paho is not None:
            got["paho"] = Counter(v for lst in paho.iter_match(topics[i]) for v in lst)
        for name, c in got.items():
            if c != want:
                bad.append((name, s, sorted(c.elements()), sorted(want.elements())))
    if b_off.total != total or b_ref.total != total:
        bad.append(("match_batch total", None, b_off.total, total))
    return {"publishes_checked": n, "values_checked": total, "mismatches": len(bad),
            "first_mismatches": [repr(b) for b in bad[:5]]}


# -- timing -------------------------------------------------------------------

def _loop_len(stream):
    t0 = time.perf_counter()
    for s in stream:
        len(s)
    return time.perf_counter() - t0


def _loop_match(match, stream):
    t0 = time.perf_counter()
    for s in stream:
        match(s)
    return time.perf_counter() - t0


def _loop_paho(iter_match, topics):
    t0 = time.perf_counter()
    for t in topics:
        list(iter_match(t))
    return time.perf_counter() - t0


def _batch(match_batch, stream):
    t0 = time.perf_counter()
    match_batch(stream)
    return time.perf_counter() - t0


def plan_rows(built, w, topics, n_slow):
    """(key, implementation, mode, timed callable, number of publishes)."""
    full = w.publishes
    slow = w.publishes[:n_slow]
    slow_topics = topics[:n_slow] if topics is not None else None
    ff_off = built["ff_off"][0]
    ff_warm = built["ff_warm"][0]
    ref = built["ref"][0]
    ff = "fastflow"
    pure = "reference (pure Python)"
    rows = [
        ("floor", "(floor)", "Python loop calling len(s)",
         lambda: _loop_len(full), len(full)),
        ("ff_match_off", ff, "match(), cache off",
         lambda: _loop_match(ff_off.match, full), len(full)),
        ("ff_match_warm", ff, "match(), cache warm",
         lambda: _loop_match(ff_warm.match, full), len(full)),
        ("ff_batch_off", ff, "match_batch(), cache off",
         lambda: _batch(ff_off.match_batch, full), len(full)),
        ("ff_batch_warm", ff, "match_batch(), cache warm",
         lambda: _batch(ff_warm.match_batch, full), len(full)),
        ("ref_match", pure, "match()", lambda: _loop_match(ref.match, slow), len(slow)),
        ("ref_batch", pure, "match_batch()", lambda: _batch(ref.match_batch, slow), len(slow)),
    ]
    if "paho" in built:
        it = built["paho"][0].iter_match
        rows.append(("paho_match", "paho-mqtt MQTTMatcher", "list(iter_match())",
                     lambda: _loop_paho(it, slow_topics), len(slow_topics)))
    return rows


PEERS = {  # --isolate: which rows each fresh interpreter times
    "fastflow": ("floor", "ff_match_off", "ff_match_warm", "ff_batch_off", "ff_batch_warm"),
    "ref": ("ref_match", "ref_batch"),
    "paho": ("paho_match",),
}


def _cache_counts(built):
    st = built["ff_warm"][0].stats()
    return st["cache_hits"], st["cache_misses"]


def timing_child(peer, args):
    """Runs in a fresh interpreter (``--isolate``): rebuild the workload and
    this peer's matchers, time its rows, print the seconds as JSON."""
    w = make_workload(n_subs=args.subs, n_publishes=args.publishes, n_subjects=args.subjects,
                      seed=args.seed)
    built = build_matchers(w, peer == "paho")
    topics = w.mqtt_publishes() if peer == "paho" else None
    keep = PEERS[peer]
    rows = [r for r in plan_rows(built, w, topics, min(args.slow_publishes, len(w.publishes)))
            if r[0] in keep]
    c0 = _cache_counts(built)
    times = time_rows(rows, args.repeat)
    c1 = _cache_counts(built)
    json.dump({"times": times, "cache": [c1[0] - c0[0], c1[1] - c0[1]],
               "core_built": core_built()}, sys.stdout)
    return 0


def time_isolated(args, peers):
    """Each peer's rows in its own interpreter, one after the other."""
    times = {}
    cache = [0, 0]
    for peer in peers:
        cmd = [sys.executable, os.path.abspath(__file__), "--timing-child", peer,
               "--subs", str(args.subs), "--publishes", str(args.publishes),
               "--subjects", str(args.subjects), "--slow-publishes", str(args.slow_publishes),
               "--repeat", str(args.repeat), "--seed", str(args.seed)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit("timing run of {} failed (exit {}):\n{}".format(
                peer, p.returncode, p.stderr[-2000:]))
        out = json.loads(p.stdout)
        if out["core_built"] != core_built():
            say("WARNING: the {} run loaded a different fastflow build ({}) than this process "
                "({}): fastflow was rebuilt meanwhile".format(
                    peer, out["core_built"], core_built()))
        times.update(out["times"])
        if peer == "fastflow":
            cache = out["cache"]
    return times, cache


def time_rows(rows, repeat):
    """Run every row ``repeat`` times, interleaved; returns {key: [seconds]}."""
    times = {key: [] for key, *_ in rows}
    for _, _, _, fn, _ in rows:  # warm-up pass (also warms the result cache)
        fn()
    for _ in range(repeat):
        for key, _, _, fn, _ in rows:
            gc.collect()
            gc.disable()
            try:
                times[key].append(fn())
            finally:
                gc.enable()
    return times


def fmt_rate(r):
    """In M/s or k/s (a rate under 1,000/s too)."""
    return _fmt_rate(r, kilo_floor=True)


def fmt_ratio(x):
    return "-" if x is None else "{:.1f}x".format(x) if x < 100 else "{:.0f}x".format(x)


# -- memory (each peer in a fresh interpreter) -----------------------------------

def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


MEMORY_KINDS = {
    "ff_none": ("fastflow", "value None"),
    "ff_int": ("fastflow", "shared int value"),
    "ref_none": ("reference (pure Python)", "value None"),
    "paho_list": ("paho-mqtt MQTTMatcher", "list of values per filter"),
}


def memory_child(kind, n, seed):
    """Runs in a fresh interpreter: load ``n`` patterns into one matcher and
    print the figures as JSON."""
    t0 = time.perf_counter()
    pats = make_subscriptions(n, seed)
    gen_s = time.perf_counter() - t0
    distinct = list(dict.fromkeys(pats))
    handles = array("q", bytes(8 * n))  # allocated (and resident) before the baseline
    gc.collect()
    trim_ok = malloc_trim()
    peak_ok = _reset_peak()
    rss0 = rss()
    out = {"kind": kind, "subscriptions": n, "distinct_patterns": len(distinct),
           "generate_s": gen_s, "core_built": core_built()}
    mb = None
    if kind.startswith("ff_") or kind.startswith("ref_"):
        if kind.startswith("ff_"):
            import fastflow

            m = fastflow.Matcher(cache_size=0)
            mb = m.memory_bytes
        else:
            from fastflow._ref import Matcher as RefMatcher

            m = RefMatcher(cache_size=0)
        value = 7 if kind == "ff_int" else None
        add = m.add
        t0 = time.perf_counter()
        for i, p in enumerate(pats):
            handles[i] = add(p, value)
        add_s = time.perf_counter() - t0
        rss1, peak, rss1_trimmed = _after_add(peak_ok)
        out["memory_bytes"] = mb() if mb else None
        out["stats"] = {k: v for k, v in m.stats().items() if k in ("nodes", "tokens", "edges")}
        remove = m.remove
        t0 = time.perf_counter()
        for h in handles:
            remove(h)
        remove_s = time.perf_counter() - t0
        out["memory_bytes_after_remove"] = mb() if mb else None
        left = len(m) if hasattr(m, "__len__") else m.stats()["subscriptions"]
    else:
        from paho.mqtt.matcher import MQTTMatcher

        mm = MQTTMatcher()
        value = 7
        topics = [to_mqtt(p) for p in pats]
        gc.collect()
        malloc_trim()
        rss0 = rss()  # (the translated topics are not the matcher's)
        peak_ok = _reset_peak()
        t0 = time.perf_counter()
        for t in topics:
            paho_add(mm, t, value)
        add_s = time.perf_counter() - t0
        rss1, peak, rss1_trimmed = _after_add(peak_ok)
        t0 = time.perf_counter()
        for t in topics:
            lst = mm[t]
            lst.pop()
            if not lst:
                del mm[t]
        remove_s = time.perf_counter() - t0
        left = len(mm._root._children)
    gc.collect()
    out.update(
        rss_before=rss0,
        rss_after_add=rss1,
        rss_growth=rss1 - rss0,
        rss_growth_trimmed=(rss1_trimmed - rss0) if trim_ok else None,
        peak_growth=(peak - rss0) if peak else None,
        rss_after_remove=rss(),
        add_s=add_s,
        remove_s=remove_s,
        left_after_remove=left,
    )
    json.dump(out, sys.stdout)
    return 0


def _after_add(peak_ok):
    """The RSS once the subscriptions are in, the peak (None unless it could be
    reset before), and the RSS once malloc has given back what it can."""
    gc.collect()
    rss1 = rss()
    peak = peak_rss() if peak_ok else None
    malloc_trim()
    return rss1, peak, rss()


def run_memory(n, seed, kinds):
    results = {}
    for kind in kinds:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", kind,
               "--memory-subs", str(n), "--seed", str(seed)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            say("memory run {} failed (exit {}):\n{}".format(kind, p.returncode, p.stderr[-2000:]))
            results[kind] = {"kind": kind, "error": p.stderr[-2000:]}
            continue
        results[kind] = json.loads(p.stdout)
        results[kind]["wall_s"] = time.perf_counter() - t0
        if results[kind]["core_built"] != core_built():
            say("WARNING: the {} memory run loaded a different fastflow build ({}) than this "
                "process ({}): fastflow was rebuilt meanwhile".format(
                    kind, results[kind]["core_built"], core_built()))
    return results


def memory_table(mem):
    mib = 1024 * 1024
    paho = mem.get("paho_list", {}).get("rss_growth")
    rows = []
    for kind, (impl, mode) in MEMORY_KINDS.items():
        r = mem.get(kind)
        if r is None:
            continue
        if "error" in r:
            rows.append([impl, mode, "failed", "", "", "", "", "", "", ""])
            continue
        n = r["subscriptions"]
        g = r["rss_growth"]
        rows.append([
            impl, mode,
            "{:.1f}".format(g / mib),
            "-" if r.get("rss_growth_trimmed") is None
            else "{:.1f}".format(r["rss_growth_trimmed"] / mib),
            "{:.0f}".format(g / n),
            "-" if r.get("peak_growth") is None else "{:.1f}".format(r["peak_growth"] / mib),
            "-" if r.get("memory_bytes") is None else "{:.1f}".format(r["memory_bytes"] / mib),
            fmt_ratio(paho / g) if paho and g > 0 else "-",
            fmt_rate(n / r["add_s"]),
            "{:.2f} s".format(r["remove_s"]),
        ])
    return render_table(
        ["implementation", "values", "RSS growth MiB", "trimmed MiB", "B/sub", "peak MiB",
         "memory_bytes() MiB", "vs. paho (x less)", "add", "remove all"],
        rows, "<<>>>>>>>>",
    )


# -- main -----------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subs", type=int, default=10_000, help="subscriptions (default 10,000)")
    ap.add_argument("--publishes", type=int, default=1_000_000,
                    help="length of the publish stream (default 1,000,000)")
    ap.add_argument("--subjects", type=int, default=50_000,
                    help="distinct subjects the stream draws from (default 50,000)")
    ap.add_argument("--slow-publishes", type=int, default=200_000,
                    help="publishes timed for the reference and paho (default 200,000)")
    ap.add_argument("--repeat", type=int, default=5,
                    help="timed runs per row; the median is reported")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--memory-subs", type=int, default=1_000_000,
                    help="subscriptions for the memory part (default 1,000,000)")
    ap.add_argument("--memory-peers", default="ff_none,ff_int,ref_none,paho_list",
                    help="comma-separated memory runs (default: %(default)s)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the memory part")
    ap.add_argument("--no-paho", action="store_true", help="leave paho-mqtt out")
    add_output_args(ap, quick_help="small smoke run: 2,000 subs, 50,000 publishes, 5,000 "
                                    "subjects, repeat 3, 50,000 subscriptions for memory")
    ap.add_argument("--isolate", action="store_true",
                    help="time each peer (fastflow, reference, paho) in a fresh interpreter of "
                         "its own instead of interleaving all rows in this one")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--timing-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_child:
        return memory_child(args.memory_child, args.memory_subs, args.seed)
    if args.timing_child:
        return timing_child(args.timing_child, args)

    if args.quick:
        args.subs, args.publishes, args.subjects = 2_000, 50_000, 5_000
        args.repeat = min(args.repeat, 3)
        args.slow_publishes = min(args.slow_publishes, 20_000)
        args.memory_subs = min(args.memory_subs, 50_000)
    if args.json:
        report_to(sys.stderr)

    import fastflow

    with_paho = not args.no_paho
    if with_paho:
        try:
            import paho.mqtt.matcher  # noqa: F401
        except ImportError:
            say("paho-mqtt is not installed (pip install paho-mqtt): leaving it out")
            with_paho = False

    machine = machine_facts()
    say(format_machine(machine))
    if not fastflow.COMPILED:
        say("WARNING: fastflow runs its pure-Python core (FASTFLOW_NO_EXTENSIONS?): "
            "the fastflow rows are not the compiled matcher")

    t0 = time.perf_counter()
    w = make_workload(n_subs=args.subs, n_publishes=args.publishes, n_subjects=args.subjects,
                      seed=args.seed)
    gen_s = time.perf_counter() - t0
    wstats = w.stats()
    wstats.update(w.params)
    say("workload ({:.1f} s to generate): {}".format(gen_s, format_stats(wstats)))

    built = build_matchers(w, with_paho)
    topics = w.mqtt_publishes() if with_paho else None
    say("built: " + ", ".join("{} {:.3f} s".format(k, v[1]) for k, v in built.items()))

    sanity = sanity_check(built, w, topics)
    say("sanity: first {publishes_checked:,} publishes, {values_checked:,} matched values: "
        "fastflow (cache off, on, match_batch) == reference{paho} as multisets -> {verdict}".format(
            paho=" == paho" if with_paho else "",
            verdict="OK" if not sanity["mismatches"]
            else "{} MISMATCHES".format(sanity["mismatches"]),
            **sanity))
    if sanity["mismatches"]:
        for b in sanity["first_mismatches"]:
            say("  " + b)

    n_slow = min(args.slow_publishes, len(w.publishes))
    rows = plan_rows(built, w, topics, n_slow)
    ff_warm = built["ff_warm"][0]
    if args.isolate:
        peers = [p for p in PEERS if p != "paho" or with_paho]
        say("timing {} rows x {} runs (+1 warm-up), each peer in a fresh interpreter: {} "
            "...".format(len(rows), args.repeat, ", ".join(peers)))
        times, (hits, misses) = time_isolated(args, peers)
    else:
        say("timing {} rows x {} runs (+1 warm-up), interleaved in this process ...".format(
            len(rows), args.repeat))
        c0 = _cache_counts(built)
        times = time_rows(rows, args.repeat)
        c1 = _cache_counts(built)
        hits, misses = c1[0] - c0[0], c1[1] - c0[1]

    results = []
    for key, impl, mode, _, n in rows:
        ts = times[key]
        rates = [n / t for t in ts]
        results.append({"key": key, "implementation": impl, "mode": mode, "publishes": n,
                        "times_s": ts, "rates": rates, "median_rate": statistics.median(rates)})
    by_key = {r["key"]: r for r in results}
    paho_rate = by_key["paho_match"]["median_rate"] if "paho_match" in by_key else None
    for r in results:
        ref_key = "ref_batch" if "batch" in r["key"] else "ref_match"
        ref_rate = by_key[ref_key]["median_rate"]
        r["vs_paho"] = r["median_rate"] / paho_rate if paho_rate else None
        r["vs_ref"] = r["median_rate"] / ref_rate

    targets = [
        {"what": "match(), cache off", "key": "ff_match_off", "target": TARGET_MATCH_OFF},
        {"what": "match_batch(), cache warm", "key": "ff_batch_warm", "target": TARGET_BATCH_WARM},
    ]
    for t in targets:
        t["value"] = by_key[t["key"]]["median_rate"]
        t["pass"] = t["value"] >= t["target"]
    tmark = {t["key"]: t for t in targets}

    table_rows = []
    for r in results:
        t = tmark.get(r["key"])
        table_rows.append([
            r["implementation"], r["mode"],
            "{:,}".format(r["publishes"]) + ("*" if r["publishes"] < len(w.publishes) else ""),
            fmt_rate(r["median_rate"]),
            "{}-{}".format(fmt_rate(min(r["rates"])).split()[0], fmt_rate(max(r["rates"]))),
            fmt_ratio(r["vs_paho"]) if r["key"] != "floor" else "",
            fmt_ratio(r["vs_ref"]) if r["key"] != "floor" else "",
            "" if t is None
            else ">= {} {}".format(fmt_rate(t["target"]), "PASS" if t["pass"] else "FAIL"),
        ])
    say("")
    say("publishes/s, median of {} runs (gc off while timed; {}); {:,} subscriptions, stream "
        "of {:,} publishes".format(
            args.repeat, "each peer in its own process" if args.isolate else "one process, "
            "runs interleaved", len(w.patterns), len(w.publishes)))
    say(render_table(["implementation", "mode", "publishes", "median", "range (min-max)",
                      "vs. paho", "vs. ref", "target"], table_rows, "<<>>>>><"))
    say("* timed on the first {:,} publishes of the stream (same distribution); rates are "
        "per second, so rows compare directly.".format(n_slow))
    say("vs. paho: against paho's list(iter_match()); vs. ref: against the reference's "
        "match() for match() rows and its match_batch() for match_batch() rows.")
    say("(floor): the same Python loop calling len(s) instead of match(s); no match() loop "
        "can beat it.")
    say("cache warm rows: {:.2%} result-cache hit rate while timed ({:,} hits, {:,} misses; "
        "{:,} slots).".format(hits / max(1, hits + misses), hits, misses, ff_warm.cache_size))
    say("targets: " + "; ".join("{} >= {}: {} ({})".format(
        t["what"], fmt_rate(t["target"]), fmt_rate(t["value"]), "PASS" if t["pass"] else "FAIL")
        for t in targets) + (" [quick run: indicative only]" if args.quick else ""))

    memory = None
    if not args.skip_memory:
        kinds = [k.strip() for k in args.memory_peers.split(",") if k.strip()]
        if not with_paho:
            kinds = [k for k in kinds if not k.startswith("paho")]
        unknown = [k for k in kinds if k not in MEMORY_KINDS]
        if unknown:
            ap.error("unknown --memory-peers {}".format(unknown))
        say("")
        say("memory: {:,} subscriptions (fastflow.workload.make_subscriptions), each peer in a "
            "fresh interpreter ...".format(args.memory_subs))
        memory = run_memory(args.memory_subs, args.seed, kinds)
        say(memory_table(memory))
        any_r = next((r for r in memory.values() if "error" not in r), None)
        if any_r:
            say(wrap("{:,} patterns, {:,} distinct.  RSS growth = resident set after adding all "
                "(and gc.collect()) minus before; the patterns and a handle array exist before, "
                "and malloc_trim(0) runs before the baseline so that memory freed while generating "
                "them is not reused unseen.  trimmed = the same after another malloc_trim(0): "
                "memory in use, without free heap chunks glibc keeps resident.  peak = VmHWM "
                "growth while adding.  add = subs/s of a Python loop of add(); remove all = a "
                "Python loop of remove() over every handle (paho: del of each filter).".format(
                    any_r["subscriptions"], any_r["distinct_patterns"])))
        ff = memory.get("ff_none")
        if ff and "error" not in ff:
            growth = ff["rss_growth"] / (1024 * 1024)
            judged = ff["subscriptions"] == 1_000_000
            ok = growth < TARGET_MEMORY_MIB
            memory["target"] = {"what": "RSS growth, 1M subscriptions, value None",
                                "target_mib": TARGET_MEMORY_MIB, "value_mib": growth,
                                "subscriptions": ff["subscriptions"],
                                "pass": ok if judged else None}
            trimmed = ff.get("rss_growth_trimmed")
            memory["target"]["trimmed_mib"] = None if trimmed is None else trimmed / (1024 * 1024)
            say("target: fastflow RSS growth for 1,000,000 subscriptions < {} MiB: {}{}".format(
                TARGET_MEMORY_MIB,
                "{:.1f} MiB -> {}".format(growth, "PASS" if ok else "FAIL") if judged else
                "not judged ({:,} subscriptions in this run)".format(ff["subscriptions"]),
                "" if trimmed is None else " (in use after malloc_trim: {:.1f} MiB)".format(
                    trimmed / (1024 * 1024))))

    if args.json:
        doc = {
            "machine": machine,
            "config": {k: getattr(args, k) for k in ("subs", "publishes", "subjects",
                                                     "slow_publishes", "repeat", "seed",
                                                     "memory_subs", "quick", "isolate")},
            "workload": wstats,
            "sanity": sanity,
            "cache": {"hits": hits, "misses": misses, "slots": ff_warm.cache_size},
            "results": results,
            "targets": targets,
            "memory": memory,
        }
        write_json(doc)
    return 0 if not sanity["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
