"""What an open operator console costs the server: the native 1 -> 1 row
with one console open against none, in one run, on one server.

``python benchmarks/compare_console.py [--repeat 7] [--msgs N] [--browser] [--json]``

One ``fastflow serve`` (monitoring port on, the console with it).  Each
repeat runs ``fastflow bench --procs`` (a publisher and a subscriber in
processes of their own, 16-byte payloads) twice: with no console open,
and with one open, in alternating order.  "One console open" is what a
page does: the feed (``/console/feed``, an event stream: a tick a second,
and the subject sampler on in the engine while it is open) and, once a
tick, the table of the view on show (the hottest subjects, as the
Subjects view asks).  ``--browser``: a real page in headless Chromium
instead (its rendering then competes for the machine's cores too).

Figures: the median deliveries/s of each side, the ratio open/none (goal:
>= 0.97, at most 3% slower) and the median of the pairs' ratios (each
pair ran back to back); the server's CPU time per delivered event on
each side (from /proc: what the server spent, whatever else the machine
was doing); and the console's own CPU time per tick as the server
measures it (``/varz`` ``console.tick_seconds`` / ``ticks``).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import say  # noqa: E402


def start(d):
    port, mport = _common.free_port(), _common.free_port()
    path = os.path.join(d, "server.toml")
    with open(path, "w") as f:
        f.write("port = {}\n[monitor]\nport = {}\n".format(port, mport))
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "serve", "-c", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen("http://127.0.0.1:{}/healthz".format(mport), timeout=1)
            return p, port, mport
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("fastflow serve did not start")


def cpu_seconds(pid):
    """The CPU time (user + system) process ``pid`` has used."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench(port, msgs):
    return _common.fastflow_bench("fastflow://127.0.0.1:{}".format(port), 1, msgs)


class PageLike:
    """What an open console page asks of the server: its feed, read as it
    comes, and once a tick the view's table (the hottest subjects)."""

    def __init__(self, mport):
        self.base = "http://127.0.0.1:{}".format(mport)
        self.ticks = 0
        self.tables = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.ticks < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        with urllib.request.urlopen(self.base + "/console/feed", timeout=30) as feed:
            for line in feed:
                if self._stop.is_set():
                    return
                if line.startswith(b"event: tick"):
                    self.ticks += 1
                    with urllib.request.urlopen(self.base + "/console/api/subjects?limit=20",
                                                timeout=10) as r:
                        r.read()
                    self.tables += 1


class BrowserPage:
    """The console in headless Chromium, on its Subjects view."""

    def __init__(self, mport):
        self.url = "http://127.0.0.1:{}/console/#subjects".format(mport)

    def __enter__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        opts = Options()
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
            opts.add_argument(a)
        opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
        self.d = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
        self.d.get(self.url)
        deadline = time.monotonic() + 20
        while not self.d.execute_script("return window.ffConsole && window.ffConsole.ticks") \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        return self

    def __exit__(self, *exc):
        self.d.quit()


def varz(mport):
    with urllib.request.urlopen("http://127.0.0.1:{}/varz".format(mport), timeout=5) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--msgs", type=int, default=2_000_000)
    ap.add_argument("--browser", action="store_true", help="a real page in headless Chromium")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.json:
        _common.report_to(sys.stderr)
    page = BrowserPage if args.browser else PageLike
    runs = {"none": [], "open": []}
    cpu = {"none": [], "open": []}         # the server's CPU ns per delivered event
    with tempfile.TemporaryDirectory() as d:
        p, port, mport = start(d)
        try:
            bench(port, args.msgs // 4)             # warm-up
            for i in range(args.repeat):
                for side in (("none", "open") if i % 2 == 0 else ("open", "none")):
                    if side == "none":
                        c0 = cpu_seconds(p.pid)
                        runs[side].append(bench(port, args.msgs))
                        cpu[side].append((cpu_seconds(p.pid) - c0) / args.msgs * 1e9)
                    else:
                        with page(mport):
                            c0 = cpu_seconds(p.pid)
                            runs[side].append(bench(port, args.msgs))
                            cpu[side].append((cpu_seconds(p.pid) - c0) / args.msgs * 1e9)
                say("run {}/{}: none {:,.0f}/s ({:.0f} ns CPU/event), open {:,.0f}/s ({:.0f} ns)"
                    .format(i + 1, args.repeat, runs["none"][-1], cpu["none"][-1],
                            runs["open"][-1], cpu["open"][-1]))
            c = varz(mport).get("console", {})
        finally:
            p.terminate()
            p.wait(10)
    none, opened = statistics.median(runs["none"]), statistics.median(runs["open"])
    pairs = statistics.median(o / n for o, n in zip(runs["open"], runs["none"]))
    cpu_none, cpu_open = statistics.median(cpu["none"]), statistics.median(cpu["open"])
    per_tick = c["tick_seconds"] / c["ticks"] if c.get("ticks") else None
    results = {"row": "native 1 -> 1, 16 B", "page": "chromium" if args.browser else "feed + table",
               "none": none, "open": opened, "ratio": opened / none, "pair_ratio": pairs,
               "runs_none": runs["none"], "runs_open": runs["open"],
               "cpu_ns_none": cpu_none, "cpu_ns_open": cpu_open,
               "tick_seconds_mean": per_tick, "ticks": c.get("ticks")}
    say("")
    say("{:<22} {:>16} {:>16} {:>10} {:>12}".format("row (deliveries/s)", "no console",
                                                    "console open", "open/none", "pairs"))
    say("{:<22} {:>16,.0f} {:>16,.0f} {:>10.3f} {:>12.3f}".format(
        results["row"], none, opened, opened / none, pairs))
    say("{:<22} {:>16.1f} {:>16.1f} {:>10.3f}".format("server CPU ns/event", cpu_none, cpu_open,
                                                      cpu_open / cpu_none))
    if per_tick is not None:
        say("the console's tick: {:.0f} µs on average over {} ticks".format(per_tick * 1e6,
                                                                          c["ticks"]))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
