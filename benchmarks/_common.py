"""What the compare_*.py scripts share: the report stream, timing rows,
machine facts, memory probes, rate formatting, the table and the JSON output,
the option parsers of rows and of named choices, and the signal that unwinds
a run.

The scripts run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path`` and they import this module as ``_common``.
"""

import argparse
import functools
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import textwrap
import time

OUT = sys.stdout  # the human-readable report (stderr under --json)


def report_to(stream):
    """Send what ``say`` prints to ``stream`` (the scripts: stderr under --json)."""
    global OUT
    OUT = stream


def say(*args):
    print(*args, file=OUT)
    OUT.flush()


def wrap(text, indent=""):
    return textwrap.fill(text, 100, initial_indent=indent, subsequent_indent=indent)


def add_output_args(ap, quick_help):
    """The options both scripts take last: --quick (a smoke run, as
    ``quick_help`` says) and --json (see ``report_to`` and ``write_json``)."""
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--json", action="store_true", help="write all figures as JSON to stdout")


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C (every child stopped on the way out)."""


def on_signal(signum, frame):
    raise Interrupted(signum)


def rows_arg(rows):
    """The --rows option's type: a comma-separated list of rows, each by
    number or key, into their keys (``rows``: dicts with "num" and "key")."""
    def parse(text):
        want = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            match = [r for r in rows if part in (str(r["num"]), r["key"])]
            if not match:
                raise argparse.ArgumentTypeError("unknown row {!r} (1-{} or {})".format(
                    part, len(rows), ", ".join(r["key"] for r in rows)))
            want.append(match[0]["key"])
        return want
    return parse


def choices_arg(known, what):
    """An option's type: a comma-separated list of names from ``known``."""
    def parse(text):
        want = [s.strip() for s in text.split(",") if s.strip()]
        for s in want:
            if s not in known:
                raise argparse.ArgumentTypeError(f"unknown {what} {s!r} ({', '.join(known)})")
        return want
    return parse


def write_json(doc):
    """``doc`` as one indented JSON document on stdout."""
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


def paho_add(mm, topic, value):
    """Subscribe ``value`` to ``topic`` in paho's ``MQTTMatcher`` (a list of
    values per topic filter, the way paho's client keeps its callbacks)."""
    try:
        mm[topic].append(value)
    except KeyError:
        mm[topic] = [value]


# -- timing -------------------------------------------------------------------

def time_rows(rows, repeat, warmup=True):
    """Run every row ``repeat`` times, interleaved; returns {key: [seconds]}
    and {key: [(minor page faults, involuntary context switches)]} per run."""
    times = {r["key"]: [] for r in rows}
    counts = {r["key"]: [] for r in rows}
    if warmup:
        for r in rows:
            r["fn"]()
    usage = resource.getrusage
    for _ in range(repeat):
        for r in rows:
            gc.collect()
            gc.disable()
            try:
                u0 = usage(resource.RUSAGE_SELF)
                times[r["key"]].append(r["fn"]())
                u1 = usage(resource.RUSAGE_SELF)
            finally:
                gc.enable()
            counts[r["key"]].append((u1.ru_minflt - u0.ru_minflt, u1.ru_nivcsw - u0.ru_nivcsw))
    return times, counts


# -- machine facts ------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def core_built():
    """Modification time of the compiled core (``fastflow._core``) when first
    asked, i.e. of the one this process loaded (None when no compiled core is
    loaded, e.g. the pure-Python core)."""
    import fastflow

    f = getattr(getattr(fastflow, "_core", None), "__file__", None)
    if not f or not f.endswith((".so", ".pyd")):
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.path.getmtime(f)))


def read_text(path):
    """The stripped contents of ``path``, or None if it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def proc_kib(path, field):
    """Bytes of the first ``field`` line (``"VmHWM:"`` ...) of a /proc file
    that counts in kB, or None."""
    for line in (read_text(path) or "").splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    return None


def cpu_facts():
    """cpu (model name), cpu_mhz, cores and usable_cores (affinity)."""
    cpu = "unknown"
    mhz = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and cpu == "unknown":
                    cpu = val.strip()
                elif key == "cpu MHz" and mhz is None:
                    mhz = float(val)
    except OSError:
        cpu = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "cpu_mhz": mhz, "cores": os.cpu_count(), "usable_cores": usable}


def python_desc():
    return "{} {}".format(platform.python_implementation(), platform.python_version())


def fastflow_facts():
    """fastflow's version, which core it runs, when that core was built and the
    git state of the checkout it was imported from."""
    import fastflow

    build = core_built()
    try:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(fastflow.__file__)))
        head = subprocess.run(["git", "-C", repo, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        git = (head + (" + uncommitted changes" if dirty else "")) if head else None
    except (OSError, subprocess.SubprocessError):
        git = None
    return {
        "fastflow": fastflow.__version__,
        "fastflow_compiled": bool(fastflow.COMPILED),
        "fastflow_core_built": build,
        "fastflow_git": git,
    }


def machine_format_fields(m):
    """Format fields that both scripts' machine lines print from ``m``."""
    return dict(
        mhz=" @ {:.0f} MHz".format(m["cpu_mhz"]) if m["cpu_mhz"] else "",
        kind="compiled core" if m["fastflow_compiled"] else "PURE-PYTHON core",
        git=m["fastflow_git"] or "?", built=m["fastflow_core_built"] or "?",
    )


# -- memory ---------------------------------------------------------------------

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss():
    """VmHWM: the peak resident set size of this process (None if unknown)."""
    return proc_kib("/proc/self/status", "VmHWM:")


def malloc_trim():
    """Give free heap memory back to the OS (glibc), so that RSS counts
    memory in use, not memory freed earlier and kept by malloc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


# -- report -----------------------------------------------------------------------

def median_of(runs, key):
    """The median of ``key`` over the runs (dicts) that have it, or None."""
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt_rate(r, kilo_floor=False):
    """``r`` per second in M/s, k/s or /s; with ``kilo_floor`` a rate under
    1,000/s is still given in k/s."""
    if r is None:
        return "-"
    if r >= 1e6:
        return "{:.2f} M/s".format(r / 1e6)
    if r >= 1e3 or kilo_floor:
        return "{:.0f} k/s".format(r / 1e3)
    return "{:.0f} /s".format(r)


def fmt_range(rates):
    lo, hi = min(rates), max(rates)
    scale, unit = (1e6, "M/s") if hi >= 1e6 else (1e3, "k/s") if hi >= 1e3 else (1, "/s")
    digits = 2 if scale == 1e6 else 0
    return "{:.{d}f}-{:.{d}f} {}".format(lo / scale, hi / scale, unit, d=digits)


def fmt_time(s):
    if s < 1e-6:
        return "{:.0f} ns".format(s * 1e9)
    if s < 1e-3:
        return "{:.2f} us".format(s * 1e6)
    return "{:.2f} ms".format(s * 1e3)


def fmt_ratio(x):
    if x is None:
        return "-"
    if x >= 100:
        return "{:.0f}x".format(x)
    if x >= 0.1:
        return "{:.2f}x".format(x)
    return "{:.2g}x".format(x)


def render_table(headers, rows, aligns):
    """``None`` in ``rows`` draws a rule between groups."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows if r is not None))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if a == "<" else str(c).rjust(w)
            for c, w, a in zip(cells, widths, aligns)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    for r in rows:
        out.append(line(["-" * w for w in widths]) if r is None else line(r))
    return "\n".join(out)


def fastflow_bench(url, subs, msgs):
    """Delivered events/s of ``fastflow bench --procs`` against the server
    at ``url`` (a publisher and ``subs`` subscribers in processes of their
    own, 16-byte payloads); raises if it fails or loses events."""
    out = subprocess.run(
        [sys.executable, "-m", "fastflow", "bench", "-s", url, "--procs", "--subs", str(subs),
         "--msgs", str(msgs), "--json", "-q", "--idle", "1"],
        capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("fastflow bench failed: " + out.stderr[-500:])
    d = json.loads(out.stdout)
    if d["lost"]:
        raise RuntimeError("fastflow bench lost {} messages".format(d["lost"]))
    return d["delivered_per_s"]


def free_port():
    """A free TCP port of 127.0.0.1 (bound and released)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

