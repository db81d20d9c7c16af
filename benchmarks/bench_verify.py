"""What checking signatures at the door costs: the trust policy's
verification against a bare loop of ``cryptography`` verifying the same
events, in one run (docs/provenance.md).

``python benchmarks/bench_verify.py [--events N] [--repeat 5] [--json]``

For each algorithm (Ed25519, ECDSA P-256), N events signed here
(``fastflow.trust.sign``: 64-byte JSON data, a signed extension), then:

- **bare**: ``PublicKey.verify(sig, PAE(payload))`` of each event's
  envelope, the signature and message decoded beforehand: OpenSSL alone,
  the ceiling;
- **engine**: ``flow.publish_record(subject, record)`` of each event's
  record into a Flow with a trust policy on the subject and a subscriber
  (the router calls the policy, which decodes the record, reads the
  envelope, verifies the signature and recomputes the digest);
- **door**: a ``fastflow serve`` process with that policy; a native client
  publishes the N records (``publish_event``) and a subscriber on another
  connection takes them; events/s from the first publish to the last
  delivery (the server's core does the verifying: the client's cost is in
  another process);
- **door, no policy**: the same server without a policy (what the door
  costs without verification).

Each figure is the median of ``--repeat`` runs, interleaved; the ratios
engine/bare and door/bare are the overhead (goal: >= 0.9).
"""

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import compare_accounts  # noqa: E402
from _common import say  # noqa: E402

CONF = """
port = {port}
{trust}
"""

TRUST = """
[trust]
keys = {{ k = "{pub}" }}
[[trust.rules]]
subjects = ["signed.>"]
"""


def _events(alg, n):
    from fastflow import Event
    from fastflow.trust import SigningKey, sign

    k = SigningKey.generate(alg, keyid="k")
    data = b'{"order": 123456, "amount": "99.95", "currency": "EUR", "pad": "xxxxx"}'[:64]
    evs = [sign(Event("signed.orders", data, source="urn:bench", type="order.created",
                      datacontenttype="application/json", region="eu"), k, ["region"])
           for _ in range(n)]
    return k, evs


def bare(k, evs):
    from fastflow.trust.events import pae

    pub = k.public
    items = []
    for ev in evs:
        env = json.loads(base64.b64decode(ev["dssematerial"]))
        items.append((base64.b64decode(env["signatures"][0]["sig"]),
                      pae(env["payloadType"].encode(), base64.b64decode(env["payload"]))))
    verify = pub.verify
    t0 = time.perf_counter()
    for sig, msg in items:
        if not verify(sig, msg):
            raise RuntimeError("a signature did not verify")
    return len(items) / (time.perf_counter() - t0)


def engine(k, evs):
    from fastflow import Flow
    from fastflow.trust import TrustPolicy, TrustRule

    f = Flow()
    f.trust = TrustPolicy([TrustRule("signed.>")], [k.public])
    got = [0]

    def cb(ev):
        got[0] += 1

    f.subscribe("signed.>", cb)
    recs = [ev.encode() for ev in evs]
    pub = f.publish_record
    t0 = time.perf_counter()
    for r in recs:
        pub("signed.orders", r)
    dt = time.perf_counter() - t0
    assert got[0] == len(recs) and f.trust.passed == len(recs)
    f.close()
    return len(recs) / dt


def start(d, k, policy):
    """A ``fastflow serve`` with (or without) the policy; (process, port)."""
    pub = os.path.join(d, "k.pub")
    with open(pub, "wb") as f:
        f.write(k.public.pem())
    # (compare_accounts.start formats the file with the port: braces doubled)
    trust = TRUST.format(pub=pub).replace("{", "{{").replace("}", "}}") if policy else ""
    return compare_accounts.start(CONF.replace("{trust}", trust), d, "verify")


async def _door(port, evs):
    from fastflow.client import connect

    url = "fastflow://127.0.0.1:{}".format(port)
    sub = await connect(url)
    pub = await connect(url)
    done = asyncio.get_running_loop().create_future()
    got = [0]
    n = len(evs)

    def cb(data):
        got[0] += len(data)
        if got[0] >= n and not done.done():
            done.set_result(time.perf_counter())

    sub.subscribe("signed.>", lambda s, r, d: cb([d]), raw=True)
    await sub.flush()
    t0 = time.perf_counter()
    for i, ev in enumerate(evs):
        pub.publish_event(ev)
        if i % 1000 == 999:
            await pub.wait_writable()
    await pub.flush()
    t1 = await asyncio.wait_for(done, 120)
    await pub.close()
    await sub.close()
    return n / (t1 - t0)


def door(k, evs, policy):
    with tempfile.TemporaryDirectory() as d:
        p, port = start(d, k, policy)
        try:
            return asyncio.run(_door(port, evs))
        finally:
            p.terminate()
            p.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--algs", default="ed25519,p256")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {"machine": _common.cpu_facts(), "events": args.events, "rows": {}}
    for alg in args.algs.split(","):
        k, evs = _events(alg, args.events)
        runs = {"bare": [], "engine": [], "door": [], "door_no_policy": []}
        for i in range(args.repeat):
            runs["bare"].append(bare(k, evs))
            runs["engine"].append(engine(k, evs))
            runs["door"].append(door(k, evs, True))
            runs["door_no_policy"].append(door(k, evs, False))
            say("{} run {}: {}".format(alg, i + 1, ", ".join(
                "{} {:,.0f}/s".format(name, r[-1]) for name, r in runs.items())))
        med = {name: statistics.median(r) for name, r in runs.items()}
        row = {name + "_per_s": round(v) for name, v in med.items()}
        row["engine_vs_bare"] = round(med["engine"] / med["bare"], 3)
        row["door_vs_bare"] = round(med["door"] / med["bare"], 3)
        out["rows"][alg] = row
        say("{}: bare {:,.0f}/s, engine {:,.0f}/s ({:.3f}x), door {:,.0f}/s ({:.3f}x), door "
            "without a policy {:,.0f}/s".format(alg, med["bare"], med["engine"],
                                                row["engine_vs_bare"], med["door"],
                                                row["door_vs_bare"], med["door_no_policy"]))
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
