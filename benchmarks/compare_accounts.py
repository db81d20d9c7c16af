"""What accounts cost: the same workloads with accounts on and off, in one run.

``python benchmarks/compare_accounts.py [--repeat 5] [--msgs N] [--json]``

Two ``fastflow serve`` processes on free loopback ports, each from a
config file written here:

- **off**: no accounts (the one account ``$G``), one user;
- **on**: accounts ``acme`` and ``globex`` and the system account; the
  bench user in ``acme``, which exports ``orders.>`` to ``globex`` (an
  import the benched subject does not cross); limits on acme that never
  bind (connections, subscriptions, and an ingress rate of 10^9 events/s,
  so the router takes from its RateLimit on every publish); metering
  every second.

Metering's counters are in the core on both sides (they have no off
switch): their own cost is the difference between builds, which
the engine rows show for the in-process path, publish -> callback: a Flow
alone ("off"), an account's Flow with its ingress quota and an import of
other subjects ("on"), and the same with the benched subject imported by
another account under a prefix (every publish crosses once: a subject
rewrite and a publish into the importer's engine, where nobody listens;
benchmarks/bench_import.py has its ns per event).

Rows (``fastflow bench --procs``, a publisher and subscribers in processes
of their own, 16-byte payloads): native 1 -> 1 and 1 -> 5.  The runs of
off and on are interleaved; each figure is the median of ``--repeat``
runs; the ratio on/off is the cost (goal: >= 0.95).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
from _common import say  # noqa: E402

OFF = """
port = {port}
[monitor]
port = 0
[auth]
users = [{{user = "u", password = "p"}}]
"""

ON = """
port = {port}
[monitor]
port = 0
[metering]
interval = 1
[auth]
users = [{{user = "u", password = "p", account = "acme"}},
         {{user = "g", password = "p", account = "globex"}}]
[accounts.acme]
exports = [{{stream = "orders.>"}}]
limits = {{connections = 1000, subscriptions = 100000, msgs_per_second = 1000000000}}
[accounts.globex]
imports = [{{stream = "orders.>", account = "acme", prefix = "partner.acme"}}]
"""


def start(conf, d, name):
    port = _common.free_port()
    path = os.path.join(d, name + ".toml")
    with open(path, "w") as f:
        f.write(conf.format(port=port))
    p = subprocess.Popen([sys.executable, "-m", "fastflow", "serve", "-c", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("fastflow serve ({}) did not start".format(name))


def bench(port, subs, msgs):
    return _common.fastflow_bench("fastflow://u:p@127.0.0.1:{}".format(port), subs, msgs)


def engine(repeat, n=1_000_000):
    """publish -> callback in process: a Flow alone, and an account's Flow
    (ingress quota, an import of everything into another account)."""
    from fastflow._impl import ImportTarget, RateLimit
    from fastflow.flow import Flow

    def run(flow):
        got = [0]

        def cb(ev):
            got[0] += 1

        flow.subscribe("bench.>", cb)
        pub = flow.publish
        t0 = time.perf_counter()
        for _ in range(n):
            pub("bench.x", b"0123456789abcdef")
        dt = time.perf_counter() - t0
        assert got[0] == n
        return n / dt

    rates = {"off": [], "on": [], "imported": []}
    for _ in range(repeat):
        rates["off"].append(run(Flow()))
        acme, globex = Flow(name="fastflow/acme"), Flow(name="fastflow/globex")
        acme.ingress = RateLimit(1e9)
        acme.add("orders.>", ImportTarget(globex, 0, b"partner.acme."))
        rates["on"].append(run(acme))
        acme, globex = Flow(name="fastflow/acme"), Flow(name="fastflow/globex")
        acme.add("bench.>", ImportTarget(globex, 0, b"partner.acme."))
        rates["imported"].append(run(acme))
    return {k: statistics.median(v) for k, v in rates.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--msgs", type=int, default=2_000_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.json:
        _common.report_to(sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory() as d:
        off, off_port = start(OFF, d, "off")
        on, on_port = start(ON, d, "on")
        try:
            rows = (("native 1 -> 1", 1), ("native 1 -> 5", 5))
            runs = {(r, side): [] for r, _ in rows for side in ("off", "on")}
            for i in range(args.repeat):
                for row, subs in rows:
                    for side, port in (("off", off_port), ("on", on_port)) if i % 2 == 0 \
                            else (("on", on_port), ("off", off_port)):
                        runs[(row, side)].append(bench(port, subs, args.msgs))
                say("run {}/{} done".format(i + 1, args.repeat))
            for row, _ in rows:
                a = statistics.median(runs[(row, "off")])
                b = statistics.median(runs[(row, "on")])
                results[row] = {"off": a, "on": b, "ratio": b / a,
                                "runs_off": runs[(row, "off")], "runs_on": runs[(row, "on")]}
        finally:
            for p in (off, on):
                p.terminate()
                p.wait(10)
    e = engine(args.repeat)
    results["engine publish -> callback"] = {"off": e["off"], "on": e["on"],
                                             "ratio": e["on"] / e["off"]}
    results["engine, subject imported"] = {"off": e["off"], "on": e["imported"],
                                           "ratio": e["imported"] / e["off"]}
    say("")
    say("{:<28} {:>14} {:>14} {:>8}".format("row (deliveries/s)", "accounts off",
                                            "accounts on", "on/off"))
    for row, r in results.items():
        say("{:<28} {:>14,.0f} {:>14,.0f} {:>8.3f}".format(row, r["off"], r["on"], r["ratio"]))
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
