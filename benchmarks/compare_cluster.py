"""Compare fastflow nodes joined through a NATS cluster (issue 19) with a
nats-server cluster: cross-node throughput, one-way latency and publishes
acknowledged by a replicated stream, each against a peer run in the same script.

One run starts, each in its own process on free loopback ports (all stopped
at the end, also on failure or Ctrl-C):

- a cluster of 3 nats-servers, A, B and C (routes on 127.0.0.1, JetStream on,
  its files in a temporary directory), from config files written here;
- 3 fastflow nodes, ``fastflow serve --cluster <URL of server A> --port P
  --nats-port Q --monitor-port M --config FILE --data-dir DIR`` for node A
  (B's for node B, C's for node C: a node A -> node B message crosses the
  route A -> B as the Go client's does; ``--link all`` gives each node the 3
  URLs, and the link picks one at random), each joined to that cluster,
  when ``fastflow serve`` accepts --cluster; otherwise their rows say
  "skipped: <why>".  FILE declares row 3's stream with ``replicas = 3`` when
  the config accepts the key;
- one standalone fastflow node (no --cluster, a ``replicas = 1`` file stream):
  the single-node figures.

Rows:

1. cross-node 1 -> 1 throughput, 16 and 256 B (``--sizes``), messages
   delivered/s: the Go nats.go publisher on nats-server A and subscriber on
   B (the peer); fastflow.client (``ff``: publish() per message; ``ffbatch``:
   publish_batch() of 1,000 and a batch subscriber) publisher on fastflow
   node A and subscriber on node B; the same client with both on the
   standalone node; Go nats.go on the fastflow nodes' NATS doors, A -> B.
2. one-way latency at ``--lat-rate`` messages/s (1,000), 16 B: p50 / p99 of
   the Go client through nats-server A -> B (and A -> A), fastflow.client
   through node A -> node B and through the standalone node.  The stamps are
   CLOCK_MONOTONIC (``time.monotonic_ns``, the clock perf_counter_ns reads on
   Linux; the Go client: ``-clock monotonic``), system-wide on Linux, so the
   publisher's and the subscriber's processes compare them.
3. publish-with-ack into a replicated stream, 256 B (``--js-size``),
   acknowledged publishes/s: the Go client's js.Publish (one at a time) and
   js.PublishAsync (at most ``--js-window`` unacknowledged) into a JetStream
   stream of 3 replicas (file storage) through nats-server A, against
   fastflow.client's ``publish_ack`` (awaited one at a time, and
   ``--js-window`` in flight) through fastflow node A into a stream declared
   ``replicas = 3`` (JetStream underneath, in the same nats-server cluster),
   and into the standalone node's ``replicas = 1`` file stream.

The throughput and latency runs are compare_broker.py's (imported, not copied:
its workers, run as ``compare_cluster.py --worker``, and natsbench.go,
compiled at start): the subscriber subscribes and says so; for the cross-node
rows a probe (a message published where the publisher will publish, until
one reaches a subscriber where the subscriber is) shows that the cluster
knows the new interest (interest travels in order, so the subscriber's,
made before the probe's, is known too); then the publisher publishes, at
most a window of messages ahead of the subscriber (``--window``; acks on
``bench.ack.<i>``).  delivered/s = deliveries / (last delivery - first
publish).  N is sized per row from a warm-up run to last about
``--run-seconds``; the rows run interleaved; every figure is the median of
``--repeat`` runs (latency: the median of the runs' p50 and p99).  A
breakdown line per row gives the CPU each process used (/proc/<pid>/stat
before and after, or the worker's own count) and, for the fastflow nodes,
what crossed their cluster link (their /varz).  ``--json`` writes every
figure as JSON to stdout (the report goes to stderr).
"""

import argparse
import asyncio
import atexit
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import compare_broker as cb
from _common import (
    Interrupted,
    add_output_args,
    choices_arg,
    fmt_rate,
    fmt_ratio,
    on_signal,
    render_table,
    report_to,
    say,
    wrap,
    write_json,
)

NODES = "ABC"
CLUSTER_NAME = "cbench"
PROBE_SUBJECT = "bench.probe"
JS_GO_STREAM, JS_GO_SUBJECT = "BENCH", "bench.js.go"  # JetStream's own (the Go rows)
JS_FF_STREAM, JS_FF_SUBJECT = "bench", "bench.js.ff"  # fastflow's (replicas = 3, or 1)
CLOCK = "monotonic"  # the one-way stamps' (compare_broker.CLOCKS)

FULL = dict(run_s=2.0, calib_n=100_000, repeat=3, lat_n=2_000, lat_warm=200,
            min_n=50_000, max_n=10_000_000, js_run_s=2.0, js_calib=(2_000, 20_000),
            js_min_n=(1_000, 5_000), js_warm=200)
QUICK = dict(run_s=0.7, calib_n=30_000, repeat=2, lat_n=600, lat_warm=100,
             min_n=20_000, max_n=1_000_000, js_run_s=0.7, js_calib=(500, 5_000),
             js_min_n=(300, 2_000), js_warm=50)
SECTIONS = ("tput", "lat", "js")
CLIENTS = ("ff", "ffbatch")


# =============================================================================
# Workers (``compare_cluster.py --worker SPEC``): compare_broker's, plus the
# probe and fastflow's publish-with-ack publisher.
# =============================================================================

async def _probe(spec, connect_sub, connect_pub):
    """Publish on spec["subject"] at spec["pub_url"] every 10 ms until one
    message reaches a subscriber at spec["url"]; the result says how long."""
    loop = asyncio.get_running_loop()
    got = loop.create_future()
    deadline = time.monotonic() + spec["timeout"]
    close_sub = await connect_sub(spec["url"], got)
    publish, close_pub = await connect_pub(spec["pub_url"])
    t0 = time.monotonic()
    sent = 0
    try:
        while not got.done():
            if time.monotonic() > deadline:
                raise SystemExit("no probe message came through in {} s ({} sent)".format(
                    spec["timeout"], sent))
            await publish(spec["subject"], b"probe")
            sent += 1
            await asyncio.wait([got], timeout=0.01)
    finally:
        await cb.close_within(close_pub())
        await cb.close_within(close_sub())
    return dict(seconds=time.monotonic() - t0, sent=sent)


async def probe_ff(spec):
    from fastflow import client as ffc

    async def conn(url):
        return await ffc.connect(url, name="compare_cluster-probe", reconnect=False, timeout=10,
                                 ping_interval=0)

    async def connect_sub(url, got):
        c = await conn(url)
        c.subscribe(spec["subject"], lambda *_: got.done() or got.set_result(None), raw=True)
        await c.flush(10)
        return c.close

    async def connect_pub(url):
        c = await conn(url)

        async def publish(subject, data):
            c.publish(subject, data)
            await c.flush(10)

        return publish, c.close

    return await _probe(spec, connect_sub, connect_pub)


async def probe_nats(spec):
    import nats

    async def connect_sub(url, got):
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=10,
                                name="compare_cluster-probe")

        async def on_msg(msg):
            if not got.done():
                got.set_result(None)

        await nc.subscribe(spec["subject"], cb=on_msg)
        await nc.flush(timeout=10)
        return nc.close

    async def connect_pub(url):
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=10,
                                name="compare_cluster-probe")

        async def publish(subject, data):
            await nc.publish(subject, data)
            await nc.flush(timeout=10)

        return publish, nc.close

    return await _probe(spec, connect_sub, connect_pub)


async def ffack_pub(spec):
    """fastflow.client's publish_ack: spec["n"] events of spec["size"] bytes
    on spec["subject"] (after a warm-up: until a stream stores one, then
    spec["warmup"] more), awaited one at a time (each round trip recorded)
    or, with spec["window"], that many in flight (tasks)."""
    errors = []
    c = await cb.ff_connect(spec, errors)
    subject, n, window = spec["subject"], spec["n"], spec.get("window") or 0
    data = bytes(spec["size"])
    deadline = time.monotonic() + spec["timeout"]
    publish_ack = c.publish_ack
    ack = await publish_ack(subject, data)
    while not ack[0]:  # the stream is not there yet (a replicated one: its JetStream stream)
        if time.monotonic() > deadline:
            raise SystemExit("no stream stored an event on {!r}: {!r}".format(subject, ack))
        await asyncio.sleep(0.05)
        ack = await publish_ack(subject, data)
    for _ in range(spec.get("warmup", 0)):
        await publish_ack(subject, data)
    seqs = []
    rtts = []
    pc = time.perf_counter_ns
    cpu0 = cb.mark()
    start = time.time_ns()
    if not window:
        for _ in range(n):
            t = pc()
            ack = await publish_ack(subject, data)
            rtts.append(pc() - t)
            seqs.append(ack[0])
    else:
        create_task = asyncio.get_running_loop().create_task
        pending = collections.deque()
        for _ in range(n):
            if len(pending) >= window:
                seqs.append((await pending.popleft())[0])
            pending.append(create_task(publish_ack(subject, data)))
        while pending:
            seqs.append((await pending.popleft())[0])
    end = time.time_ns()
    cpu = time.process_time() - cpu0
    await c.close()
    stored = [s for s in seqs if s]
    return dict(sent=n, acked=len(seqs), not_stored=len(seqs) - len(stored),
                seq_first=stored[0] if stored else None, seq_last=stored[-1] if stored else None,
                in_order=all(a < b for a, b in zip(stored, stored[1:])),
                start_ns=start, end_ns=end, seconds=(end - start) / 1e9, cpu_s=cpu,
                rtts_ns=rtts or None, errors=cb.first_errors(errors))


def worker_main(spec_json):
    cb.WORKERS.update({("probe", "ff"): probe_ff, ("probe", "nats"): probe_nats,
                       ("ffack", "pub"): ffack_pub})
    return cb.worker_main(spec_json)


# =============================================================================
# The clusters
# =============================================================================

def http_json(port, path, timeout=2.0):
    """GET http://127.0.0.1:<port><path> as JSON (None on any failure)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path),
                                    timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:  # nats-server's /healthz answers 503 with a body
        try:
            return json.loads(exc.read())
        except ValueError:
            return None
    except (OSError, ValueError):
        return None


class CpuSampler:
    """The CPU time of some servers' processes, read from /proc/<pid>/stat
    every ``interval`` s by a thread while in a ``with`` block, so that a
    run's share can be cut out afterwards (``between``) by the times its
    worker reports (time.time_ns), without its start, warm-up and exit."""

    def __init__(self, servers, interval=0.02):
        self.servers = servers
        self.interval = interval
        self.samples = []  # (time.time_ns(), [CPU s or None per server])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        self.samples.append((time.time_ns(), [s.stat()[0] for s in self.servers]))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self._sample()

    def at(self, t_ns):
        """Each server's CPU seconds at ``t_ns``, interpolated between samples."""
        out = []
        for i in range(len(self.servers)):
            pts = [(t, v[i]) for t, v in self.samples if v[i] is not None]
            if not pts or not pts[0][0] <= t_ns <= pts[-1][0]:
                out.append(None)
                continue
            k = next(j for j, (t, _) in enumerate(pts) if t >= t_ns)
            if k == 0:
                out.append(pts[0][1])
                continue
            (ta, va), (tb, vb) = pts[k - 1], pts[k]
            out.append(va + (vb - va) * (t_ns - ta) / max(1, tb - ta))
        return out

    def between(self, t0_ns, t1_ns):
        """Each server's CPU seconds from ``t0_ns`` to ``t1_ns`` (None: unknown).
        /proc counts in clock ticks (10 ms): the error is a tick or two per server."""
        return [None if a is None or b is None else b - a
                for a, b in zip(self.at(t0_ns), self.at(t1_ns))]


class MachineBusy:
    """A stand-in server for CpuSampler: the machine's busy CPU seconds so far
    (all cores, /proc/stat)."""

    @staticmethod
    def stat():
        return cb.system_busy_s(), None


def other_cpu(used, clients_s, t0_ns, t1_ns):
    """The CPU (in cores) the machine spent from ``t0_ns`` to ``t1_ns`` outside
    the sampled servers and the clients: ``used`` is CpuSampler.between of the
    servers + MachineBusy (last), ``clients_s`` the clients' CPU seconds."""
    *servers, machine = used
    if machine is None or None in servers or t1_ns <= t0_ns:
        return None
    return max(0.0, machine - sum(servers) - clients_s) / ((t1_ns - t0_ns) / 1e9)


def wait_until(what, check, timeout):
    """Poll ``check()`` every 0.1 s until it is true; RuntimeError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError("{}: not after {:.0f} s".format(what, timeout))


NATS_CONF = """\
server_name: "{name}"
listen: "127.0.0.1:{port}"
http: "127.0.0.1:{mport}"
jetstream {{
  store_dir: "{store}"
  max_memory_store: 268435456
  max_file_store: 4294967296
}}
cluster {{
  name: "{cluster}"
  listen: "127.0.0.1:{cport}"
  routes: [{routes}]
}}
"""


def start_nats_cluster(tmpdir):
    """3 nats-servers routed to each other, JetStream on; a cb.Server each
    (with .name and .mport), once every one says it is healthy (JetStream
    current with its meta leader)."""
    exe, version = cb.nats_server_exe()
    ports = {k: (cb.free_port(), cb.free_port(), cb.free_port()) for k in NODES}
    servers = []
    for k in NODES:
        port, cport, mport = ports[k]
        conf = os.path.join(tmpdir, "nats-{}.conf".format(k))
        with open(conf, "w") as f:
            f.write(NATS_CONF.format(
                name=k, port=port, mport=mport, store=os.path.join(tmpdir, "js-" + k),
                cluster=CLUSTER_NAME, cport=cport,
                routes=", ".join('"nats://127.0.0.1:{}"'.format(ports[o][1])
                                 for o in NODES if o != k)))
        child = cb.Child("nats-server " + k, [exe, "-c", conf])
        s = cb.Server("nats", child, port, "nats://127.0.0.1:{}".format(port),
                      "nats-server " + version)
        s.name, s.mport = k, mport
        servers.append(s)
    for s in servers:
        cb.wait_listening(s.child, s.port, 15)
    for s in servers:
        wait_until("nats-server {} healthy (/healthz)".format(s.name),
                   lambda s=s: (http_json(s.mport, "/healthz") or {}).get("status") == "ok", 30)
    for s in servers:
        wait_until("nats-server {} routed to the 2 others (/routez)".format(s.name),
                   lambda s=s: (http_json(s.mport, "/routez") or {}).get("num_routes", 0) >= 2,
                   15)
    return servers


def replicas_accepted():
    """None when the fastflow config accepts ``replicas`` on a stream, else why not."""
    from fastflow.server.config import ConfigError, stream_spec

    try:
        stream_spec({"name": JS_FF_STREAM, "subjects": [JS_FF_SUBJECT], "storage": "file",
                     "replicas": 3}, "streams[0]")
    except ConfigError as exc:
        if "replicas" in str(exc):
            return "fastflow's stream config has no `replicas` key"
        return "fastflow's stream config refused replicas = 3: {}".format(exc)
    return None


def ff_config(path, replicas):
    """A fastflow config file declaring the stream of row 3 (``replicas``: None
    leaves the key out; 0: no stream at all)."""
    with open(path, "w") as f:
        if replicas == 0:
            return path
        f.write("[[streams]]\nname = \"{}\"\nsubjects = [\"{}\"]\nstorage = \"file\"\n".format(
            JS_FF_STREAM, JS_FF_SUBJECT))
        if replicas is not None:
            f.write("replicas = {}\n".format(replicas))
    return path


def start_ff_node(tmpdir, name, log_level, cluster_urls=None, replicas=None):
    """A fastflow node (its NATS door and monitoring on too); a cb.Server with
    .name, .mport and .door (a cb.Server for its NATS door)."""
    nats_port, mport = cb.free_port(), cb.free_port()
    data = os.path.join(tmpdir, "ff-" + name)
    os.makedirs(data, exist_ok=True)
    extra = ["--host", "127.0.0.1", "--name", "ff" + name, "--nats-port", str(nats_port),
             "--data-dir", data, "--config",
             ff_config(os.path.join(tmpdir, "ff-{}.toml".format(name)), replicas)]
    if cluster_urls:
        extra += ["--cluster", ",".join(cluster_urls)]
    s = cb.start_fastflow_server(extra, log_level=log_level, monitor_port=mport,
                                 name="fastflow node " + name)
    try:
        cb.wait_listening(s.child, nats_port, 20)
        cb.wait_listening(s.child, mport, 20)
    except RuntimeError:
        s.child.stop()
        raise
    s.name, s.mport = name, mport
    s.door = cb.Server("fastflow", s.child, nats_port, "nats://127.0.0.1:{}".format(nats_port),
                       s.version)
    s.door.name, s.door.mport = name, mport
    return s


def cluster_varz(node):
    """The "cluster" part of a fastflow node's /varz ({} when it has none)."""
    v = http_json(node.mport, "/varz") or {}
    c = v.get("cluster")
    return c if isinstance(c, dict) else {}


def start_ff_cluster(tmpdir, nats, args):
    """3 fastflow nodes joined to the nats-server cluster ``nats``, once each
    says it is connected and has heard from the 2 others (its /varz)."""
    urls = [s.url for s in nats]
    nodes = []
    for i, k in enumerate(NODES):
        # the replicated stream on the first --mirrors nodes (each keeps a cache of it)
        replicas = 0 if i >= args.mirrors else None if args.no_replicas_why else 3
        nodes.append(start_ff_node(tmpdir, k, args.ff_log_level,
                                   cluster_urls=[urls[i]] if args.link == "own" else urls,
                                   replicas=replicas))
    for n in nodes:
        wait_until("fastflow node {} connected to the cluster (/varz cluster.connected)"
                   .format(n.name), lambda n=n: cluster_varz(n).get("connected"), 20)
    for n in nodes:
        wait_until("fastflow node {} heard from the {} others (/varz cluster.nodes)".format(
            n.name, len(NODES) - 1),
            lambda n=n: cluster_varz(n).get("nodes", 0) >= len(NODES) - 1, 20)
    return nodes


# =============================================================================
# The runs
# =============================================================================

class Bench(cb.Bench):
    """compare_broker's Bench, with the two clusters, the standalone node and
    the runs of this script's rows."""

    def __init__(self, args, cfg):
        super().__init__(args, cfg)
        self.worker_script = os.path.abspath(__file__)
        self.nats = []  # nats-servers A, B, C
        self.ff = []  # fastflow nodes A, B, C
        self.single = None  # the standalone fastflow node

    def window(self, size):
        if self.args.window:
            return self.args.window
        # at most ~8 MiB of frames in flight: below nats-server's max_pending (64 MiB)
        # for the fastflow nodes' link connections too, whose frames carry whole records
        return max(1000, min(100_000, (8 << 20) // (size + 128)))

    def everyone(self):
        """Every server process of the run, with the label of the breakdown lines."""
        out = [("nats " + s.name, s) for s in self.nats] + [("ff " + s.name, s) for s in self.ff]
        if self.single is not None:
            out.append(("ff single", self.single))
        return out

    def probe(self, kind, sub_server, pub_server, path):
        """A before_pub hook: a probe from pub_server to sub_server (its time
        kept in facts["probe_s"][path])."""
        def run(deadline):
            spec = dict(url=sub_server.url, pub_url=pub_server.url, timeout=20,
                        subject="{}.{}".format(PROBE_SUBJECT, os.urandom(4).hex()))
            child = self.spawn("probe", kind, spec, "probe " + kind)
            try:
                r = child.next_json(min(deadline, time.monotonic() + 40))
            finally:
                child.finish(time.monotonic() + 5)
            self.facts.setdefault("probe_s", {}).setdefault(path, []).append(
                round(r["seconds"], 4))
        return run

    def path(self, path):
        """(subscriber's server, publisher's server, probe hook or None, the
        servers whose CPU is counted) of a path name."""
        if path == "nats":
            a, b = self.nats[0], self.nats[1]
            return b, a, self.probe("nats", b, a, path), self.nats
        if path == "nats_local":
            return self.nats[0], self.nats[0], None, self.nats
        if path == "ff":
            a, b = self.ff[0], self.ff[1]
            return b, a, self.probe("ff", b, a, path), self.ff + self.nats
        if path == "door":
            a, b = self.ff[0].door, self.ff[1].door
            return b, a, self.probe("nats", b, a, path), self.ff + self.nats
        if path == "ff_single":
            return self.single, self.single, None, [self.single]
        raise ValueError(path)

    def watched(self, servers):
        return [(label, s) for label, s in self.everyone() if s in servers]

    # -- link counters ---------------------------------------------------------------------

    def link_counters(self):
        """{node: (out_msgs, in_msgs, dropped, in_refused)} of the fastflow
        nodes' links (their /varz "cluster")."""
        out = {}
        for n in self.ff:
            c = cluster_varz(n)
            if c:
                out[n.name] = tuple(c.get(k, 0) for k in ("out_msgs", "in_msgs", "dropped",
                                                          "in_refused"))
        return out

    def link_delta(self, before, msgs, what):
        """What crossed each fastflow node's link since ``before`` (link_counters),
        per message published; a drop or a refusal goes on the sanity list."""
        out = {}
        for k, now in self.link_counters().items():
            o0, i0, d0, r0 = before.get(k, (0, 0, 0, 0))
            o1, i1, d1, r1 = now
            out[k] = dict(out_per_msg=(o1 - o0) / max(1, msgs),
                          in_per_msg=(i1 - i0) / max(1, msgs))
            if d1 > d0 or r1 > r0:
                self.sanity.append("{}: node {}'s link dropped {} and refused {} events".format(
                    what, k, d1 - d0, r1 - r0))
        return out

    # -- the replicated stream's mirrors --------------------------------------------------

    def js_state(self):
        """{node: (node's acks info, its mirror of the replicated stream)} from
        each fastflow node's /varz cluster.jetstream ({} parts when it has none)."""
        out = {}
        for n in self.ff:
            js = cluster_varz(n).get("jetstream") or {}
            out[n.name] = (js.get("acks") or {},
                           (js.get("streams") or {}).get("$G/" + JS_FF_STREAM) or {})
        return out

    def mirrors_caught_up(self, seq, since_ns, before, what):
        """Wait (at most 30 s) until every node's cache of the replicated stream
        has ``seq``; the time from ``since_ns`` (time.time_ns) until then, in
        s, or None.  Acknowledgement errors and timeouts, and mirror resets
        and errors since ``before`` (js_state) go on the sanity list."""
        deadline = time.monotonic() + 30
        state = self.js_state()
        state = {k: v for k, v in state.items() if v[1]}  # the nodes with a cache
        while any(m.get("last_seq", 0) < seq for _, m in state.values()):
            if time.monotonic() > deadline:
                self.sanity.append("{}: the nodes' caches did not reach seq {} in 30 s: {}".format(
                    what, seq, {k: m.get("last_seq") for k, (_, m) in state.items()}))
                return None
            time.sleep(0.01)
            state = {k: v for k, v in self.js_state().items() if k in state}
        caught_up = (time.time_ns() - since_ns) / 1e9
        for k, (acks, mirror) in state.items():
            acks0, mirror0 = before.get(k, ({}, {}))
            bad = {q: acks.get(q, 0) - acks0.get(q, 0) for q in ("errors", "timeouts")}
            bad.update({"mirror " + q: mirror.get(q, 0) - mirror0.get(q, 0)
                        for q in ("resets", "errors", "skipped", "invalid")})
            bad = {q: v for q, v in bad.items() if v}
            if bad:
                self.sanity.append("{}: node {}: {}".format(what, k, ", ".join(
                    "{} {}".format(q, v) for q, v in bad.items())))
        return caught_up

    # -- one run of each kind --------------------------------------------------------------

    def tput(self, row, n):
        sub, pub, probe, watch = self.path(row["path"])
        links0 = self.link_counters() if row["path"] in ("ff", "door") else {}
        res = self.run_tput(dict(row, subs=1), n, server=sub, pub_server=pub,
                            watch=[s for _, s in self.watched(watch)], before_pub=probe)
        if res["deliveries"] != res["expected"] or res["timed_out"]:
            raise RuntimeError("{:,} deliveries of {:,}{}{}".format(
                res["deliveries"], res["expected"], " (timed out)" if res["timed_out"] else "",
                "; client errors: " + "; ".join(res["errors"][:3]) if res["errors"] else ""))
        res["cpu_by"] = dict(zip([label for label, _ in self.watched(watch)], res["server_cpus"]))
        res["links"] = self.link_delta(links0, n, row["label"]) if links0 else {}
        return res

    def oneway(self, row, n):
        sub, pub, probe, watch = self.path(row["path"])
        watch = self.watched(watch)
        links0 = self.link_counters() if row["path"] in ("ff", "door") else {}
        with CpuSampler([s for _, s in watch] + [MachineBusy]) as cpu:
            r = self.run_oneway(row["client"], n, self.cfg["lat_warm"], server=sub,
                                pub_server=pub, before_pub=probe, clock=CLOCK)
        if not r["samples"]:
            raise RuntimeError("no latency measured")
        msgs = n + self.cfg["lat_warm"]
        summary = cb.summarize_lat([r["samples"]])
        used = cpu.between(r["pub_start_ns"], r["pub_end_ns"])
        other = other_cpu(used, sum(v for v in r["cpu"].values() if v), r["pub_start_ns"],
                          r["pub_end_ns"])
        return dict(samples=r["samples"], p50_ns=summary["p50_ns"], p99_ns=summary["p99_ns"],
                    sent=r["sent"], other_cpu=other,
                    cpu_us_per_msg={label: None if c is None else c / msgs * 1e6
                                    for (label, _), c in zip(watch, used)},
                    client_cpu_us_per_msg={k: v / msgs * 1e6 for k, v in r["cpu"].items()
                                           if v is not None},
                    links=self.link_delta(links0, msgs, row["label"]) if links0 else {})

    def js(self, row, n):
        if row["system"] == "go":
            server, watch = self.nats[0], self.nats + self.ff
            spec = dict(url=server.url, n=n, size=self.args.js_size, timeout=30 + n / 200)
            argv = [self.go, "-mode", "jspub", "-url", server.url, "-subject", JS_GO_SUBJECT,
                    "-stream", JS_GO_STREAM, "-replicas", "3", "-n", str(n),
                    "-size", str(self.args.js_size), "-warmup", str(self.cfg["js_warm"]),
                    "-async", str(row["window"]), "-timeout",
                    "{}s".format(int(spec["timeout"]))]
            make = lambda: cb.Child("Go jspub", argv)  # noqa: E731
        else:
            server = self.ff[0] if row["system"] == "ff" else self.single
            watch = self.nats + self.ff if row["system"] == "ff" else [self.single]
            spec = dict(url=server.url, n=n, size=self.args.js_size, subject=JS_FF_SUBJECT,
                        window=row["window"], warmup=self.cfg["js_warm"], timeout=30 + n / 200,
                        role="ffack")
            make = lambda: self.spawn("ffack", "pub", spec, "fastflow publish_ack")  # noqa: E731
        watch = self.watched(watch)
        links0 = self.link_counters() if row["system"] == "ff" else {}
        js0 = self.js_state() if row["system"] == "ff" else {}
        with CpuSampler([s for _, s in watch] + [MachineBusy]) as cpu:
            child = make()
            try:
                r = child.next_json(time.monotonic() + spec["timeout"] + 30)
            finally:
                child.finish(time.monotonic() + 5)
        used = cpu.between(r["start_ns"], r["end_ns"])
        if r.get("failed") or r.get("not_stored") or r.get("in_order") is False:
            raise RuntimeError("{} publishes failed, {} not stored, in order: {}".format(
                r.get("failed", 0), r.get("not_stored", 0), r.get("in_order")))
        caught_up = (self.mirrors_caught_up(r["seq_last"], r["end_ns"], js0, row["label"])
                     if row["system"] == "ff" else None)
        out = dict(n=n, rate=n / max(1e-9, r["seconds"]), seconds=r["seconds"],
                   client_cpu=r["cpu_s"] / max(1e-9, r["seconds"]),
                   other_cpu=other_cpu(used, r["cpu_s"], r["start_ns"], r["end_ns"]),
                   cpu_us_per_msg={label: None if c is None else c / n * 1e6
                                   for (label, _), c in zip(watch, used)},
                   stalls=r.get("stalls"),
                   # the warm-up's publishes are counted too (the counters are read
                   # before and after the publisher's whole life)
                   links=self.link_delta(links0, n + self.cfg["js_warm"], row["label"])
                   if links0 else {},
                   stream_leader=r.get("stream_leader"), stream_msgs=r.get("stream_msgs"),
                   caches_caught_up_s=caught_up)
        rtts = r.get("rtts_ns")
        if rtts:
            s = sorted(rtts)
            out.update(ack_p50_ns=s[len(s) // 2], ack_p99_ns=s[min(len(s) - 1,
                                                                    int(len(s) * 0.99))])
        return out


# -- the rows ---------------------------------------------------------------------------------

def tput_rows(args):
    rows = []
    for size in args.sizes:
        rows.append(dict(key="nats_{}".format(size), path="nats", client="go", size=size,
                         system="nats", label="Go nats.go, nats-server A -> B ({} B)".format(size)))
        for c in args.clients:
            name = cb.CLIENTS[c][0]
            rows.append(dict(key="{}_{}".format(c, size), path="ff", client=c, size=size,
                             system="ff", single="{}_single_{}".format(c, size),
                             label="{}, fastflow node A -> B ({} B)".format(name, size)))
            rows.append(dict(key="{}_single_{}".format(c, size), path="ff_single", client=c,
                             size=size, system="single",
                             label="{}, one fastflow node ({} B)".format(name, size)))
        rows.append(dict(key="door_{}".format(size), path="door", client="go", size=size,
                         system="ff", label="Go nats.go, fastflow NATS doors A -> B ({} B)".format(
                             size)))
    for r in rows:
        r["vs"] = "nats_{}".format(r["size"])
        r["needs"] = r["path"]
    return rows


def lat_rows():
    rows = [
        dict(key="nats", path="nats", client="go", system="nats",
             label="Go nats.go, nats-server A -> B"),
        dict(key="nats_local", path="nats_local", client="go", system="nats",
             label="Go nats.go, nats-server A -> A"),
        dict(key="ff", path="ff", client="ff", system="ff", single="ff_single",
             label="fastflow.client, fastflow node A -> B"),
        dict(key="ff_single", path="ff_single", client="ff", system="single",
             label="fastflow.client, one fastflow node"),
    ]
    for r in rows:
        r["needs"] = r["path"]
    return rows


def js_rows(args):
    w = args.js_window
    rows = [
        dict(key="go_sync", system="go", window=0, vs="go_sync",
             label="Go js.Publish, JetStream R3"),
        dict(key="go_async", system="go", window=w, vs="go_async",
             label="Go js.PublishAsync ({:,} pending), JetStream R3".format(w)),
        dict(key="ff_sync", system="ff", window=0, vs="go_sync", single="single_sync",
             label="fastflow publish_ack, replicas = 3 via node A"),
        dict(key="ff_async", system="ff", window=w, vs="go_async", single="single_async",
             label="fastflow publish_ack ({:,} in flight), replicas = 3 via node A".format(w)),
        dict(key="single_sync", system="single", window=0, vs="go_sync",
             label="fastflow publish_ack, one node, replicas = 1 (file)"),
        dict(key="single_async", system="single", window=w, vs="go_async",
             label="fastflow publish_ack ({:,} in flight), one node, replicas = 1".format(w)),
    ]
    for r in rows:
        r["needs"] = "js_" + r["system"]
    return rows


NEEDS = {  # what a row needs, by path (throughput, latency) or system (streams)
    "nats": ("go", "nats"), "nats_local": ("go", "nats"), "ff": ("ff_cluster",),
    "door": ("go", "ff_cluster"), "ff_single": ("single",),
    "js_go": ("go", "nats"), "js_ff": ("ff_cluster", "ff_replicas"), "js_single": ("single",),
}


def skip_reason(bench, row):
    """None when ``row`` can run, else why not (the first thing it needs that
    is missing: bench.skipped's reason)."""
    for need in NEEDS[row["needs"]]:
        if need in bench.skipped:
            return bench.skipped[need]
    return None


def run_section(bench, name, rows, run, size_n):
    """Warm-up runs sizing N (``size_n(row, warm-up result)``; None: no
    warm-up), then ``repeat`` interleaved runs of every row; each row gets
    "runs", and "error" when one failed."""
    t0 = time.perf_counter()
    live = []
    for row in rows:
        row["runs"] = []
        if row.get("skipped"):
            continue
        try:
            if size_n is not None:
                w = run(row, row["calib_n"])
                row["n"] = size_n(row, w)
                say("  {}: warm-up {}/s ({:,}); N = {:,}".format(
                    row["label"], "{:,.0f}".format(w["rate"]), row["calib_n"], row["n"]))
        except RuntimeError as exc:
            row["error"] = "warm-up: {}".format(exc)
            say("  {}: FAILED in the warm-up run: {}".format(row["label"], exc))
            continue
        live.append(row)
    for rep in range(bench.cfg["repeat"]):
        for row in live:
            if row.get("error"):
                continue
            try:
                row["runs"].append(run(row, row["n"]))
            except RuntimeError as exc:
                row["error"] = "run {}: {}".format(rep + 1, exc)
                say("  {}: FAILED in run {}: {}".format(row["label"], rep + 1, exc))
        say("  [{}] run {}/{} done ({:.0f} s)".format(name, rep + 1, bench.cfg["repeat"],
                                                     time.perf_counter() - t0))
    bench.facts.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)


def median_key(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def median_dict(runs, key):
    """{name: median} of the dicts ``run[key]`` of the runs."""
    names = []
    for r in runs:
        for k in r.get(key) or {}:
            if k not in names:
                names.append(k)
    out = {}
    for k in names:
        vals = [r[key][k] for r in runs if (r.get(key) or {}).get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def median_links(runs):
    """{node: {out_per_msg, in_per_msg}}: the runs' medians of the link counters."""
    return {k: {q: statistics.median(r["links"][k][q] for r in runs if k in r.get("links", {}))
                for q in ("out_per_msg", "in_per_msg")}
            for k in (runs[0].get("links") or {})}


def add_ratios(rows):
    """Each row's median rate over its peer's ("vs": vs_ratio) and over the
    one-node row of the same client ("single": single_ratio)."""
    by = {r["key"]: r for r in rows}
    for row in rows:
        for k, ref in (("vs_ratio", by.get(row["vs"])),
                       ("single_ratio", by.get(row.get("single")))):
            ok = row.get("median_rate") and ref and ref.get("median_rate") and ref is not row
            row[k] = row["median_rate"] / ref["median_rate"] if ok else None


def section_tput(bench, rows):
    cfg = bench.cfg
    for row in rows:
        row["calib_n"] = cfg["calib_n"]

    def size_n(row, w):
        n = int(min(cfg["max_n"], max(cfg["min_n"], w["rate"] * cfg["run_s"])))
        return -(-n // 1000) * 1000

    run_section(bench, "throughput", rows, bench.tput, size_n)
    for row in rows:
        runs = row["runs"]
        if not runs:
            continue
        row["median_rate"] = median_key(runs, "rate")
        row["median_cpu_by"] = median_dict(runs, "cpu_by")
        row["median_pub_cpu"] = median_key(runs, "pub_cpu")
        row["median_sub_cpu"] = median_key(runs, "sub_cpu")
        row["median_other_cpu"] = median_key(runs, "other_cpu")
        row["links"] = median_links(runs)
    add_ratios(rows)


def section_lat(bench, rows):
    for row in rows:
        row["n"] = bench.cfg["lat_n"]
    run_section(bench, "latency", rows, bench.oneway, None)
    by = {r["key"]: r for r in rows}
    for row in rows:
        runs = row["runs"]
        if not runs:
            continue
        row["p50_ns"] = median_key(runs, "p50_ns")
        row["p99_ns"] = median_key(runs, "p99_ns")
        row["pooled"] = cb.summarize_lat([r["samples"] for r in runs])
        if row["pooled"]["min_ns"] is not None and row["pooled"]["min_ns"] < 0:
            bench.sanity.append("{}: negative latency {} ns (clocks?)".format(
                row["label"], row["pooled"]["min_ns"]))
        row["cpu_us_per_msg"] = median_dict(runs, "cpu_us_per_msg")
        row["client_cpu_us_per_msg"] = median_dict(runs, "client_cpu_us_per_msg")
        row["median_other_cpu"] = median_key(runs, "other_cpu")
        row["links"] = median_links(runs)
        for r in runs:
            r.pop("samples", None)  # kept pooled; the JSON stays small
    for row in rows:
        ref = by["nats"] if row["key"] != "nats" else None
        for q in ("p50_ns", "p99_ns"):
            row["vs_" + q] = (row[q] / ref[q] if ref and ref.get(q) and row.get(q) else None)


def section_js(bench, rows):
    cfg = bench.cfg
    for row in rows:
        row["calib_n"] = cfg["js_calib"][1 if row["window"] else 0]

    def size_n(row, w):
        lo = cfg["js_min_n"][1 if row["window"] else 0]
        n = int(min(500_000, max(lo, w["rate"] * cfg["js_run_s"])))
        return -(-n // 100) * 100

    run_section(bench, "js", rows, bench.js, size_n)
    for row in rows:
        runs = row["runs"]
        if not runs:
            continue
        row["median_rate"] = median_key(runs, "rate")
        row["median_client_cpu"] = median_key(runs, "client_cpu")
        row["median_other_cpu"] = median_key(runs, "other_cpu")
        row["cpu_us_per_msg"] = median_dict(runs, "cpu_us_per_msg")
        row["ack_p50_ns"] = median_key(runs, "ack_p50_ns")
        row["ack_p99_ns"] = median_key(runs, "ack_p99_ns")
        row["stream_leader"] = runs[-1].get("stream_leader")
        row["caches_caught_up_s"] = median_key(runs, "caches_caught_up_s")
        row["links"] = median_links(runs)
    add_ratios(rows)


# =============================================================================
# The report
# =============================================================================

def quick_note(bench):
    return " [QUICK RUN: indicative only]" if bench.args.quick else ""


def fmt_acks(rate):
    return "-" if rate is None else "{:,.0f}/s".format(rate)


def fmt_pct(x):
    return "-" if x is None else "{:.0f}%".format(100 * x)


def status(row, why_not):
    if row["key"] in why_not:
        return "skipped: " + why_not[row["key"]]
    if row.get("error") and not row.get("runs"):
        return "FAILED (below)"
    return None


def fmt_links(links):
    return ", ".join("link {} out {:.2f} in {:.2f}".format(k, v["out_per_msg"], v["in_per_msg"])
                     for k, v in links.items())


def report_tput(bench, rows, why_not):
    table, lines = [], []
    last = None
    for r in rows:
        if last is not None and r["size"] != last:
            table.append(None)
        last = r["size"]
        st = status(r, why_not)
        if st:
            table.append([r["label"], "-", "", "", "", "", st])
            continue
        rates = [x["rate"] for x in r["runs"]]
        table.append([r["label"], fmt_rate(r["median_rate"]),
                      "{}-{}".format(fmt_rate(min(rates)), fmt_rate(max(rates))),
                      "" if r["key"] == r["vs"] else fmt_ratio(r["vs_ratio"]),
                      fmt_ratio(r.get("single_ratio")) if r.get("single") else "",
                      "{:,}".format(r["n"]), "FAILED in a later run (below)" if r.get("error")
                      else ""])
        parts = ["{} {}".format(k, fmt_pct(v)) for k, v in r["median_cpu_by"].items()]
        parts += ["pub {}".format(fmt_pct(r["median_pub_cpu"])),
                  "sub {}".format(fmt_pct(r["median_sub_cpu"])),
                  "other {}".format(fmt_pct(r["median_other_cpu"]))]
        if r.get("links"):
            parts.append(fmt_links(r["links"]) + " (msgs per message published)")
        lines.append("  {}: CPU {}".format(r["key"], ", ".join(parts)))
    say("")
    say(wrap("[1] cross-node 1 -> 1 throughput: messages delivered/s, median of {} runs{}".format(
        bench.cfg["repeat"], quick_note(bench))))
    say(render_table(["path", "delivered/s", "range", "vs. nats cluster", "vs. one node",
                      "msgs/run", ""], table, "<>>>>><"))
    say(wrap("breakdown (CPU over the run's wall time, 100% = one core, median; other: the "
             "machine's busy time outside these processes, from /proc/stat; link X out/in: "
             "messages node X's cluster link sent/received per message published, from its "
             "/varz):"))
    for line in lines:
        say(wrap(line, "    ").replace("    ", "  ", 1))


def report_lat(bench, rows, why_not):
    table, lines = [], []
    for r in rows:
        st = status(r, why_not)
        if st:
            table.append([r["label"], "-", "", "", "", "", "", st])
            continue
        p = r["pooled"]
        table.append([r["label"], "{:,}".format(p["samples"]), cb.fmt_us(r["p50_ns"]),
                      cb.fmt_us(r["p99_ns"]), cb.fmt_us(p["max_ns"]),
                      "" if r["key"] == "nats" else fmt_ratio(r["vs_p50_ns"]),
                      "" if r["key"] == "nats" else fmt_ratio(r["vs_p99_ns"]),
                      "FAILED in a later run (below)" if r.get("error") else ""])
        parts = ["{} {:.1f}".format(k, v) for k, v in r["cpu_us_per_msg"].items()
                 if v is not None]
        parts += ["{} {:.1f}".format(k, v) for k, v in r["client_cpu_us_per_msg"].items()]
        parts.append("other {} of a core".format(fmt_pct(r["median_other_cpu"])))
        if r.get("links"):
            parts.append(fmt_links(r["links"]) + " per message")
        lines.append("  {}: CPU us per message: {}".format(r["key"], ", ".join(parts)))
    say("")
    say(wrap("[2] one-way latency, 16 B at {:,} msgs/s: median of {} runs' p50 and p99 "
             "(max: of all runs){}".format(bench.args.lat_rate, bench.cfg["repeat"],
                                           quick_note(bench))))
    say(render_table(["path", "samples", "p50", "p99", "max", "p50 vs. nats A -> B",
                      "p99 vs. nats A -> B", ""], table, "<>>>>>><"))
    say("breakdown (CPU us per message from the first publish to the last, from /proc samples "
        "every 20 ms; the clients' from their own count):")
    for line in lines:
        say(wrap(line, "    ").replace("    ", "  ", 1))


def report_js(bench, rows, why_not):
    table, lines = [], []
    for r in rows:
        st = status(r, why_not)
        if st:
            table.append([r["label"], "-", "", "", "", "", "", st])
            continue
        rates = [x["rate"] for x in r["runs"]]
        table.append([r["label"], fmt_acks(r["median_rate"]),
                      "{}-{}".format(fmt_acks(min(rates)), fmt_acks(max(rates))),
                      "" if r["key"] == r["vs"] else fmt_ratio(r["vs_ratio"]),
                      fmt_ratio(r.get("single_ratio")) if r.get("single") else "",
                      "{} / {}".format(cb.fmt_us(r["ack_p50_ns"]), cb.fmt_us(r["ack_p99_ns"]))
                      if r.get("ack_p50_ns") else "", "{:,}".format(r["n"]),
                      "FAILED in a later run (below)" if r.get("error") else ""])
        parts = ["{} {:.0f}".format(k, v) for k, v in r["cpu_us_per_msg"].items()
                 if v is not None]
        lines.append("  {}: CPU us per message: {}; client {}, other {} of a core{}{}{}".format(
            r["key"], ", ".join(parts), fmt_pct(r["median_client_cpu"]),
            fmt_pct(r["median_other_cpu"]),
            "; the caches had the last event {:.0f} ms after its ack".format(
                1000 * r["caches_caught_up_s"]) if r.get("caches_caught_up_s") is not None
            else "",
            "; stream leader {}".format(r["stream_leader"]) if r.get("stream_leader") else "",
            "; " + fmt_links(r["links"]) + " per message" if r.get("links") else ""))
    say("")
    say(wrap("[3] publish-with-ack into a replicated stream, {} B: acknowledged publishes/s, "
             "median of {} runs{}".format(bench.args.js_size, bench.cfg["repeat"],
                                          quick_note(bench))))
    say(render_table(["path", "acked/s", "range", "vs. Go (same mode)", "vs. one node",
                      "ack p50 / p99", "msgs/run", ""], table, "<>>>>>><"))
    say("breakdown (CPU us per acknowledged message over the timed part: the servers' from "
        "/proc samples every 20 ms; client: CPU over its wall time, 100% = one core):")
    for line in lines:
        say(wrap(line, "    ").replace("    ", "  ", 1))


def report_facts(bench, machine):
    probes = bench.facts.get("probe_s")
    if probes:
        say(wrap("probes (until a message published on one node reaches a new subscriber on the "
                 "other, before each cross-node run; median, max): " + "; ".join(
                     "{} {:.1f} ms, {:.1f} ms".format(path, 1000 * statistics.median(t),
                                                      1000 * max(t))
                     for path, t in probes.items())))
    say(wrap("topology: nats-servers {} (JetStream, routes on loopback); fastflow nodes {}"
             .format(", ".join("{} :{}".format(s.name, s.port) for s in bench.nats) or "-",
                     "; ".join("{} :{} (link: {})".format(
                         n.name, n.port, machine.get("links", {}).get(n.name, "?"))
                         for n in bench.ff) or "-")))


# =============================================================================
# main
# =============================================================================

def parse_sizes(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--sections", type=choices_arg(SECTIONS, "section"), default=list(SECTIONS),
                    help="tput (row 1), lat (row 2), js (row 3) (default all)")
    ap.add_argument("--clients", type=choices_arg(CLIENTS, "client"), default=list(CLIENTS),
                    help="fastflow clients of the throughput rows: ff (publish() per message), "
                         "ffbatch (publish_batch() of 1,000) (default both)")
    ap.add_argument("--sizes", type=parse_sizes, default=[16, 256],
                    help="payload bytes of the throughput rows (default 16,256)")
    ap.add_argument("--repeat", type=int, help="runs per row (default 3; --quick 2)")
    ap.add_argument("--run-seconds", type=float,
                    help="about how long a throughput or stream run lasts (default 2; --quick 0.7)")
    ap.add_argument("--window", type=int, default=0,
                    help="most messages a publisher runs ahead of its subscriber (default: "
                         "~8 MiB of frames, at most 100,000)")
    ap.add_argument("--lat-rate", type=int, default=1000,
                    help="messages/s of the latency runs (default %(default)s)")
    ap.add_argument("--lat-samples", type=int, help="samples per latency run (default 2,000)")
    ap.add_argument("--js-size", type=int, default=256,
                    help="payload bytes of the stream rows (default %(default)s)")
    ap.add_argument("--js-window", type=int, default=256,
                    help="unacknowledged publishes of the async stream rows (default %(default)s)")
    ap.add_argument("--mirrors", type=int, choices=(1, 2, 3), default=3,
                    help="how many fastflow nodes declare row 3's replicas = 3 stream, and so "
                         "keep a cache of it fed by a JetStream consumer: A; A and B; all "
                         "(default %(default)s)")
    ap.add_argument("--link", choices=("all", "own"), default="own",
                    help="the --cluster URLs of a fastflow node: its own server's alone, A's for "
                         "node A... (the default: node A -> node B crosses the route A -> B, as "
                         "the Go row does) or all 3 servers' (the link picks one at random, so "
                         "the hops change from run to run)")
    ap.add_argument("--ff-log-level", default="warning",
                    choices=("debug", "info", "warning", "error", "critical"),
                    help="the fastflow nodes' --log-level (default %(default)s)")
    add_output_args(ap, quick_help="smoke run: runs of ~0.7 s, 2 repeats, 600 latency samples")
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    cfg = dict(QUICK if args.quick else FULL)
    for opt, key in ((args.repeat, "repeat"), (args.run_seconds, "run_s"),
                     (args.run_seconds, "js_run_s"), (args.lat_samples, "lat_n")):
        if opt:
            cfg[key] = opt
    if cfg["repeat"] < 1 or cfg["lat_n"] < 1 or args.lat_rate < 1:
        ap.error("--repeat, --lat-samples and --lat-rate must be >= 1")
    if args.json:
        report_to(sys.stderr)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cb.Child.stop_all)
    if cb.REPO not in sys.path:
        sys.path.insert(1, cb.REPO)  # the checkout's fastflow, the one the nodes run
    # ... and the workers' (children inherit the environment)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [cb.REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

    t_start = time.perf_counter()
    bench = Bench(args, cfg)
    machine = cb.machine_facts(bench)
    say(cb.format_machine(machine))
    rows = {"tput": tput_rows(args) if "tput" in args.sections else [],
            "lat": lat_rows() if "lat" in args.sections else [],
            "js": js_rows(args) if "js" in args.sections else []}
    why_not = {}
    tmpdir = tempfile.mkdtemp(prefix="compare_cluster.")
    interrupted = 0
    try:
        start_all(bench, args, machine, tmpdir)
        for name, section in (("tput", section_tput), ("lat", section_lat), ("js", section_js)):
            if not rows[name]:
                continue
            for r in rows[name]:
                why = skip_reason(bench, r)
                if why is not None:
                    why_not[r["key"]] = why
                r["skipped"] = why is not None
            say("")
            say("[{}] {} rows, {} interleaved runs ...".format(
                name, sum(not r["skipped"] for r in rows[name]), cfg["repeat"]))
            section(bench, rows[name])
        for label, s in bench.everyone():
            if not s.alive():
                bench.sanity.append("{} exited during the run ({}): {}".format(
                    label, s.child.proc.returncode, s.child.stderr_tail(600)))
    except KeyboardInterrupt:
        interrupted = 128 + signal.SIGINT
    except Interrupted as exc:
        interrupted = 128 + exc.args[0]
    finally:
        for label, s in bench.everyone():
            s.child.stop()
            bench.facts.setdefault("stderr_tail", {})[label] = s.child.stderr_tail(2000)
        cb.Child.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if interrupted:
        say("interrupted; every child process stopped")
        return interrupted

    say("")
    report_facts(bench, machine)
    if rows["tput"]:
        report_tput(bench, rows["tput"], why_not)
    if rows["lat"]:
        report_lat(bench, rows["lat"], why_not)
    if rows["js"]:
        report_js(bench, rows["js"], why_not)
    all_rows = rows["tput"] + rows["lat"] + rows["js"]
    others = [r["median_other_cpu"] for r in all_rows if r.get("median_other_cpu") is not None]
    if others and max(others) > 0.2:
        say("")
        say(wrap("WARNING: other processes used up to {} of a core during a row's median run "
                 "(the breakdowns' \"other\"): rates are low and latencies high by about that "
                 "share of the machine; rerun on a quiet machine.".format(fmt_pct(max(others)))))
    for r in all_rows:
        if r.get("error"):
            say(wrap("FAILED {}: {}".format(r["label"], r["error"])))
    for what, why in bench.skipped.items():
        say("skipped {}: {}".format(what, why))
    say("sanity: " + ("; ".join(bench.sanity) if bench.sanity else
                      "OK (every subscriber got every message, every publish its ack, in "
                      "order; no timeouts; every server alive)"))
    say("")
    say("caveats:")
    for c in (
        "{} cores for everything: 3 nats-servers, 3 fastflow nodes (+ the standalone one), the "
        "publisher and the subscriber; a row measures the whole path, CPU scheduling "
        "included, and the breakdown says who was busy.".format(os.cpu_count()),
        "nats-server is multi-threaded Go; a fastflow node is one uvloop process, and a "
        "cross-node fastflow message also crosses the nats-server cluster (client -> node "
        "A -> server A -> route -> server B -> node B -> client): 5 hops to the Go row's 3 "
        "(4 with --link all when both links land on one server).",
        "One-way latency: CLOCK_MONOTONIC stamps compared across two processes of this "
        "machine, paced (no catch-up bursts): latency at a light load.",
        "Stream rows: JetStream syncs its files every 2 minutes by default and fastflow's "
        "file streams with fsync = interval; neither fsyncs per message.  The fastflow "
        "replicas = 3 stream is a JetStream stream in the same nats-server cluster, reached "
        "through node A's link.",
    ):
        say(wrap(c, "  ").replace("  ", "- ", 1))
    total_s = time.perf_counter() - t_start
    say("total {:.0f} s".format(total_s))
    if args.json:
        write_json({"machine": machine, "config": dict(cfg, sizes=args.sizes,
                                                        clients=args.clients,
                                                        lat_rate=args.lat_rate,
                                                        js_size=args.js_size,
                                                        js_window=args.js_window,
                                                        link=args.link, quick=args.quick),
                    "throughput": rows["tput"], "latency": rows["lat"], "streams": rows["js"],
                    "skipped": dict(bench.skipped, **{"row " + k: v for k, v in why_not.items()}),
                    "facts": bench.facts, "sanity": bench.sanity, "total_s": total_s})
    return 1 if bench.sanity or any(r.get("error") for r in all_rows) else 0


def start_all(bench, args, machine, tmpdir):
    """The Go client, the nats-server cluster, the fastflow nodes; what did not
    start is in bench.skipped ("go", "nats", "ff_cluster", "ff_replicas", "single")."""
    bench.go, why = cb.build_go(tmpdir)
    if bench.go is None:
        bench.skipped["go"] = why
        say("Go client: skipped ({})".format(why))
    else:
        machine["go"] = why
        say("Go client: natsbench.go built with {}".format(why))
    try:
        bench.nats = start_nats_cluster(tmpdir)
        machine["nats_server"] = bench.nats[0].version
        say("nats-server cluster: {}; {}".format(bench.nats[0].version, ", ".join(
            "{} 127.0.0.1:{} (pid {})".format(s.name, s.port, s.child.proc.pid)
            for s in bench.nats)))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        bench.skipped["nats"] = "the nats-server cluster did not start: {}".format(exc)
        say(bench.skipped["nats"])
    args.no_replicas_why = replicas_accepted()
    why = cb.serve_accepts("--cluster")
    if why is None and not bench.nats:
        why = bench.skipped["nats"]
    if why is None:
        try:
            bench.ff = start_ff_cluster(tmpdir, bench.nats, args)
            machine["links"] = {n.name: "nats-server {} ({})".format(
                cluster_varz(n).get("server_name"), cluster_varz(n).get("server"))
                for n in bench.ff}
            say("fastflow nodes: {}".format(", ".join(
                "{} :{} (door :{}, monitor :{}, link to {}; pid {})".format(
                    n.name, n.port, n.door.port, n.mport, machine["links"][n.name],
                    n.child.proc.pid) for n in bench.ff)))
        except (RuntimeError, OSError) as exc:
            why = "the fastflow nodes did not start: {}".format(exc)
            for n in bench.ff:
                n.child.stop()
            bench.ff = []
    if why is not None:
        bench.skipped["ff_cluster"] = why
        say("fastflow cluster: skipped ({})".format(why))
    if args.no_replicas_why:
        bench.skipped["ff_replicas"] = args.no_replicas_why
    try:
        bench.single = start_ff_node(tmpdir, "single", args.ff_log_level)
        say("fastflow standalone node: :{} (pid {})".format(bench.single.port,
                                                            bench.single.child.proc.pid))
    except (RuntimeError, OSError) as exc:
        bench.skipped["single"] = "the standalone fastflow node did not start: {}".format(exc)
        say(bench.skipped["single"])


if __name__ == "__main__":
    sys.exit(main())
