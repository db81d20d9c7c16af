"""Compare fastflow's MQTT door (``fastflow serve --mqtt-port``) with
mosquitto 2.0 (Debian) and amqtt (PyPI, the Python peer): the same MQTT
clients, the same workloads, the brokers in one run.

One run starts mosquitto (a generated config on a free loopback port:
``max_queued_messages 0`` so that no QoS 1 message is dropped from a
subscriber's queue; the rest mosquitto's defaults), ``python -m fastflow
serve --mqtt-port <free>`` (a generated config: ``[mqtt] max_queued`` set
as high, 100,000,000, for the same reason) and, for the paho rows, amqtt's broker (``python
-m amqtt.scripts.broker_script``, anonymous, one TCP listener), each in its
own process, all stopped at the end (also on failure or Ctrl-C).  Rows:

1-4. mosquitto's C clients, 16-byte payloads, QoS 0 and 1, 1 -> 1 and
   1 -> 5: ``mosquitto_pub -l`` fed N lines through a pipe, ``mosquitto_sub
   -C N+1`` per subscriber (the +1: a retained message on a second topic,
   whose arrival says the subscription is active).  Delivered messages/s
   per subscriber = N / (last subscriber done - publisher started).  Target
   fastflow >= 1.5x mosquitto.
5-8. the same with paho-mqtt clients (this script as a worker process per
   client), against mosquitto, fastflow and amqtt.  Targets: none against
   mosquitto (the Python client is the bottleneck: the ratio is reported),
   fastflow >= 10x amqtt.
9. 10,000 idle connections (raw sockets, CONNECT 3.1.1, keep-alive 60 s):
   the broker's VmRSS (/proc/<pid>/status) after minus before, per
   connection, on a broker process started for the row (fresh, so that no
   memory freed by earlier rows is reused).  Target fastflow <= 8 KiB.
10-11. publish -> subscriber latency at 1,000 messages/s, QoS 0 and 1
   (paho-mqtt publisher and subscriber processes; a CLOCK_REALTIME stamp in
   the 16-byte payload): p50 and p99, fastflow against mosquitto.

The publisher's stdin stays open until every subscriber is done:
``mosquitto_pub -l`` sends DISCONNECT at the end of its input once the
PUBACK of the last packet id arrives, and with more than 65,535 messages
queued (libmosquitto queues every line it reads, ``-M`` only bounds what is
in flight) an earlier message with that id, 16-bit ids wrapping, ends the
connection with most messages still queued: a file on stdin made QoS 1 runs
of 200,000 never finish.  ``--max-inflight`` (``mosquitto_pub -M``, paho's
``max_inflight_messages_set``; default 100) bounds the QoS 1 window.

N is sized per row and broker from a warm-up run to last about
``--run-seconds``; the brokers run each row back to back, alternating
which goes first; figures are medians of ``--repeat`` runs.  A row is
marked with what bound it on each broker: "broker" when the broker used
>= 85% of a core over the run, "client" when the publisher or a subscriber
did, "-" when none did (they waited for each other or for the CPU: the
machine's other work).  ``--json`` writes the figures as JSON to stdout (report on stderr).
"""

import argparse
import atexit
import getpass
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import compare_broker as cb
from _common import (
    Interrupted,
    add_output_args,
    choices_arg,
    cpu_facts,
    fastflow_facts,
    fmt_rate,
    machine_format_fields,
    median_of,
    on_signal,
    proc_kib,
    python_desc,
    read_text,
    render_table,
    report_to,
    rows_arg,
    say,
    wrap,
    write_json,
)

SIZE = 16
FANOUT = 5
TOPIC = "bench/data"
READY = "bench/ready"
LAT_TOPIC = "bench/lat"
STAMP = struct.Struct("<qq")  # CLOCK_REALTIME ns, sequence: 16 bytes
BUSY = 0.85  # a process at this share of a core or more bounds the run
FF_MAX_QUEUED = 100_000_000  # fastflow's [mqtt] max_queued: mosquitto's 0 (no limit)

ROWS = []
for _c, _cl in (("c", "mosquitto_pub/sub"), ("paho", "paho-mqtt")):
    for _q in (0, 1):
        for _s in (1, FANOUT):
            ROWS.append({"key": f"{_c}_q{_q}_1to{_s}", "client": _c, "kind": "tput",
                         "qos": _q, "subs": _s,
                         "label": f"{_cl} QoS {_q} 1 -> {_s}, {SIZE} B",
                         "servers": ("mosquitto", "fastflow", "amqtt")})
ROWS.append({"key": "idle", "kind": "idle", "client": "raw", "subs": 0, "qos": 0,
             "label": "10,000 idle connections (3.1.1, keep-alive 60)",
             "servers": ("mosquitto", "fastflow")})
for _q in (0, 1):
    ROWS.append({"key": f"lat_q{_q}", "kind": "lat", "client": "paho", "qos": _q, "subs": 1,
                 "label": f"paho-mqtt latency QoS {_q}, 1,000 msgs/s",
                 "servers": ("mosquitto", "fastflow")})
for _i, _r in enumerate(ROWS, 1):
    _r["num"] = _i

SERVERS = ("mosquitto", "fastflow", "amqtt")
LABEL = {"mosquitto": "mosquitto", "fastflow": "fastflow", "amqtt": "amqtt"}

FULL = {"run_s": 1.5, "repeat": 3, "calib": {"c": 30_000, "paho": 4_000}, "calib_amqtt": 1_000,
        "min_n": 2_000, "max_n": 2_000_000, "idle_n": 10_000, "lat_n": 2_000, "lat_warm": 200}
QUICK = {"run_s": 0.7, "repeat": 1, "calib": {"c": 20_000, "paho": 3_000}, "calib_amqtt": 800,
         "min_n": 1_000, "max_n": 1_000_000, "idle_n": 2_000, "lat_n": 1_000, "lat_warm": 100}


# -- workers (this script, --worker JSON): paho-mqtt clients ------------------------

def paho_client(spec, name):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                    protocol=mqtt.MQTTv311)
    c.max_inflight_messages_set(spec["inflight"])
    c.max_queued_messages_set(0)
    return c


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cpu_s():
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def worker_sub(spec):
    """Subscribe, say "ready", count ``n`` messages; report the last arrival
    (and the latency samples for a latency run)."""
    done = threading.Event()
    st = {"count": 0, "first": None, "last": None, "lat": []}
    n, lat, warm = spec["n"], spec["kind"] == "lat", spec.get("warm", 0)
    c = paho_client(spec, f"bench-sub-{spec['id']}-{os.getpid()}")

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe(spec["topic"], qos=spec["qos"])

    def on_subscribe(client, userdata, mid, rcs, props):
        emit({"ready": True})

    def on_message(client, userdata, msg):
        now = time.time_ns()
        st["count"] += 1
        if lat:
            ts, seq = STAMP.unpack_from(msg.payload)
            if seq >= warm:
                st["lat"].append(now - ts)
        if st["first"] is None:
            st["first"] = now
        st["last"] = now
        if st["count"] >= n:
            done.set()

    c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
    c.connect("127.0.0.1", spec["port"], keepalive=60)
    c.loop_start()
    ok = done.wait(spec["timeout"])
    c.loop_stop()
    emit({"count": st["count"], "first_ns": st["first"], "last_ns": st["last"],
          "timed_out": not ok, "cpu_s": cpu_s(), "lat_ns": st["lat"]})


def worker_pub(spec):
    """Publish ``n`` messages of 16 bytes (paced at ``rate``/s if given), wait
    until the last is written (QoS 0) or acknowledged (QoS 1)."""
    c = paho_client(spec, f"bench-pub-{os.getpid()}")
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect("127.0.0.1", spec["port"], keepalive=60)
    c.loop_start()
    if not connected.wait(20):
        emit({"error": "no CONNACK"})
        return
    n, qos, rate, topic = spec["n"], spec["qos"], spec.get("rate"), spec["topic"]
    payload = b"0123456789abcdef"
    t0 = time.time_ns()
    info = None
    publish = c.publish
    if rate:
        step = 1e9 / rate
        start = time.monotonic_ns()
        for i in range(n):
            wake = start + int(i * step)
            while True:
                left = wake - time.monotonic_ns()
                if left <= 0:
                    break
                time.sleep(left / 1e9 if left > 200_000 else 0)
            info = publish(topic, STAMP.pack(time.time_ns(), i), qos)
    else:
        for _ in range(n):
            info = publish(topic, payload, qos)
    if info is not None:
        info.wait_for_publish(spec["timeout"])
    emit({"start_ns": t0, "end_ns": time.time_ns(), "cpu_s": cpu_s()})
    c.loop_stop()
    c.disconnect()


def worker_main(spec_json):
    spec = json.loads(spec_json)
    try:
        {"sub": worker_sub, "pub": worker_pub}[spec["role"]](spec)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a line
        emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


# -- brokers ---------------------------------------------------------------------------

class Broker:
    def __init__(self, kind, child, port, version):
        self.kind, self.child, self.port, self.version = kind, child, port, version

    @property
    def pid(self):
        return self.child.proc.pid

    def alive(self):
        return self.child.proc.poll() is None

    def cpu(self):
        return cb.proc_stat(self.pid)[0]

    def rss(self):
        return proc_kib(f"/proc/{self.pid}/status", "VmRSS:")

    def stop(self):
        self.child.stop()


def mosquitto_version(exe):
    r = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=10, check=False)
    first = (r.stdout or r.stderr).splitlines()[:1]
    return first[0].strip() if first else "mosquitto"


def start_mosquitto(tmpdir):
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        raise RuntimeError("mosquitto is not installed (Debian: apt install mosquitto)")
    port = cb.free_port()
    conf = os.path.join(tmpdir, f"mosquitto-{port}.conf")
    with open(conf, "w") as f:
        # user: started as root, mosquitto would switch to a user of its own
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                f"log_dest stderr\nlog_type error\nlog_type warning\n"
                f"connection_messages false\nuser {getpass.getuser()}\n")
    child = cb.Child("mosquitto", [exe, "-c", conf])
    cb.wait_listening(child, port, 15)
    return Broker("mosquitto", child, port, mosquitto_version(exe))


def start_fastflow(tmpdir, log_level):
    port = cb.free_port()
    conf = os.path.join(tmpdir, f"fastflow-{port}.toml")
    with open(conf, "w") as f:
        # (as mosquitto's max_queued_messages 0: no QoS 1 message dropped from
        # a subscriber's queue; the queue's byte bound, 64 MiB, stays)
        f.write(f"[mqtt]\nmax_queued = {FF_MAX_QUEUED}\n")
    srv = cb.start_fastflow_server(["--host", "127.0.0.1", "--mqtt-port", str(port),
                                    "--config", conf], log_level=log_level)
    try:
        cb.wait_listening(srv.child, port, 20)
    except RuntimeError:
        srv.child.stop()
        raise
    return Broker("fastflow", srv.child, port, srv.version)


def start_amqtt(tmpdir):
    try:
        from importlib.metadata import version

        ver = "amqtt " + version("amqtt")
    except Exception as exc:  # noqa: BLE001 - not installed
        raise RuntimeError(f"amqtt is not installed (pip install amqtt): {exc}") from None
    port = cb.free_port()
    conf = os.path.join(tmpdir, f"amqtt-{port}.yaml")
    with open(conf, "w") as f:
        f.write(f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{port}\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
                "    allow_anonymous: true\n")
    child = cb.Child("amqtt", [sys.executable, "-c",
                               "import sys; from amqtt.scripts.broker_script import main; "
                               "sys.argv = ['amqtt', '-c', sys.argv[1]]; main()", conf])
    cb.wait_listening(child, port, 30)
    return Broker("amqtt", child, port, ver)


def start_broker(kind, tmpdir, args):
    if kind == "mosquitto":
        return start_mosquitto(tmpdir)
    if kind == "fastflow":
        return start_fastflow(tmpdir, args.ff_log_level)
    return start_amqtt(tmpdir)


# -- client processes --------------------------------------------------------------------

def reap(proc, timeout):
    """Wait for ``proc`` (bounded): (exit code or None, CPU seconds of it or None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, ru.ru_utime + ru.ru_stime
        time.sleep(0.002)
    return None, None


def kill(proc):
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


def drain(stream, first_line, times):
    """Read ``stream`` to its end; ``first_line`` is set once a line has come
    (the retained ready message); ``times`` gets the monotonic times of the
    first and of the last chunk read after it."""
    buf = b""
    while True:
        chunk = stream.read1(1 << 20)
        if not chunk:
            break
        if first_line.is_set():
            now = time.monotonic()
            if not times:
                times.append(now)
                times.append(now)
            times[1] = now
            continue
        buf += chunk
        if b"\n" in buf:
            rest = buf[buf.index(b"\n") + 1:]
            first_line.set()
            if rest:
                times.extend((time.monotonic(), time.monotonic()))


def mosq_ready(port):
    """A retained message on READY: its arrival tells a subscriber that its
    subscription is active."""
    subprocess.run(["mosquitto_pub", "-p", str(port), "-t", READY, "-r", "-q", "1", "-m",
                    "ready"], check=True, timeout=20, stdout=subprocess.DEVNULL)


def run_c(broker, row, n, cfg, args):
    """mosquitto_pub -l -> mosquitto_sub -C n+1 x subs; the run's figures."""
    port, qos = str(broker.port), str(row["qos"])
    timeout = cfg["timeout"]
    subs, ready, times = [], [], []
    pub = None
    try:
        mosq_ready(broker.port)
        for _ in range(row["subs"]):
            p = subprocess.Popen(["mosquitto_sub", "-p", port, "-q", qos, "-t", TOPIC, "-t", READY,
                                  "-C", str(n + 1), "-W", str(int(timeout))],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL)
            ev, tt = threading.Event(), []
            t = threading.Thread(target=drain, args=(p.stdout, ev, tt), daemon=True)
            t.start()
            subs.append((p, t))
            ready.append(ev)
            times.append(tt)
        for ev in ready:
            if not ev.wait(20):
                raise RuntimeError("a mosquitto_sub did not get the retained ready message")
        argv = ["mosquitto_pub", "-p", port, "-q", qos, "-t", TOPIC, "-l"]
        if row["qos"]:
            argv += ["-M", str(args.max_inflight)]
        data = b"0123456789abcdef\n" * n
        cpu0, busy0 = broker.cpu(), cb.system_busy_s()
        t0 = time.monotonic()
        pub = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)

        def feed():
            try:
                pub.stdin.write(data)
                pub.stdin.flush()
            except (BrokenPipeError, OSError):
                pass

        threading.Thread(target=feed, daemon=True).start()
        sub_cpu, codes = [], []
        for p, t in subs:
            rc, c = reap(p, max(0.1, t0 + timeout + 5 - time.monotonic()))
            codes.append(rc)
            sub_cpu.append(c)
            t.join(5)
        t1 = time.monotonic()
        cpu1, busy1 = broker.cpu(), cb.system_busy_s()
        try:
            pub.stdin.close()
        except OSError:
            pass
        prc, pcpu = reap(pub, 10)
        if any(rc != 0 for rc in codes):
            raise RuntimeError("mosquitto_sub exit codes {} (27: timed out, -C not reached)"
                               .format(codes))
    finally:
        for p in [p for p, _ in subs] + ([pub] if pub else []):
            kill(p)
    wall = t1 - t0
    if not all(times):
        raise RuntimeError("a subscriber read no messages")
    span = max(tt[1] for tt in times) - min(tt[0] for tt in times)
    clients = [c for c in sub_cpu + [pcpu] if c is not None]
    return {"rate": n / span, "wall_s": wall, "span_s": span, "n": n,
            "server_cpu": (cpu1 - cpu0) / wall,
            "pub_cpu": pcpu / wall if pcpu is not None else None,
            "sub_cpu": max(sub_cpu) / wall if all(c is not None for c in sub_cpu) else None,
            "other_cpu": max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - sum(clients)) / wall
            if busy0 is not None and busy1 is not None else None}


def spawn_worker(spec):
    return cb.Child("paho " + spec["role"], [sys.executable, os.path.abspath(__file__),
                                             "--worker", json.dumps(spec)])


def run_paho(broker, row, n, cfg, args, rate=None, warm=0):
    """paho publisher -> paho subscriber(s); the run's figures."""
    timeout = cfg["timeout"]
    topic = LAT_TOPIC if rate else TOPIC
    base = {"port": broker.port, "qos": row["qos"], "n": n, "timeout": timeout, "topic": topic,
            "inflight": args.max_inflight, "kind": "lat" if rate else "tput", "warm": warm}
    children = []
    pub = None
    try:
        for i in range(row["subs"]):
            children.append(spawn_worker(dict(base, role="sub", id=i)))
        deadline = time.monotonic() + 30
        for c in children:
            c.next_json(deadline)
        cpu0 = broker.cpu()
        pub = spawn_worker(dict(base, role="pub", rate=rate))
        deadline = time.monotonic() + timeout + 30
        p = pub.next_json(deadline)
        rs = [c.next_json(deadline) for c in children]
        cpu1 = broker.cpu()
    finally:
        for c in children:
            c.stop()
        if pub is not None:
            pub.stop()
    bad = [r for r in rs if r["count"] != n or r["timed_out"]]
    if bad:
        raise RuntimeError("a subscriber got {:,} of {:,} messages{}".format(
            bad[0]["count"], n, " (timed out)" if bad[0]["timed_out"] else ""))
    wall = (max(r["last_ns"] for r in rs) - p["start_ns"]) / 1e9
    span = (max(r["last_ns"] for r in rs) - min(r["first_ns"] for r in rs)) / 1e9
    res = {"rate": n / span, "wall_s": wall, "span_s": span, "n": n,
           "server_cpu": (cpu1 - cpu0) / wall,
           "pub_cpu": p["cpu_s"] / wall, "sub_cpu": max(r["cpu_s"] for r in rs) / wall,
           "other_cpu": None}
    if rate:
        from fastflow._stats import percentile

        s = sorted(x for r in rs for x in r["lat_ns"])
        if not s:
            raise RuntimeError("no latency samples")
        res.update(samples=len(s), p50_ns=percentile(s, 50), p99_ns=percentile(s, 99),
                   max_ns=s[-1])
    return res


def connect_packet(client_id):
    cid = client_id.encode()
    var = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(var)]) + var


def run_idle(kind, cfg, args, tmpdir):
    """A fresh broker; its VmRSS before and after ``idle_n`` idle connections."""
    broker = start_broker(kind, tmpdir, args)
    socks = []
    try:
        time.sleep(0.5)
        before = broker.rss()
        n = cfg["idle_n"]
        deadline = time.monotonic() + 90
        batch = 500
        for start in range(0, n, batch):
            part = []
            for i in range(start, min(n, start + batch)):
                s = socket.create_connection(("127.0.0.1", broker.port), timeout=20)
                s.sendall(connect_packet(f"idle-{i:05d}"))
                part.append(s)
            for s in part:
                got = b""
                while len(got) < 4:
                    chunk = s.recv(4 - len(got))
                    if not chunk:
                        raise RuntimeError(f"{kind} closed connection {len(socks)} of {n}")
                    got += chunk
                if got[0] != 0x20 or got[3] != 0:
                    raise RuntimeError(f"{kind}: CONNACK {got.hex()} for connection {len(socks)}")
                socks.append(s)
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(socks):,} of {n:,} connections in 90 s")
        time.sleep(1.0)
        after = broker.rss()
        if not broker.alive():
            raise RuntimeError(f"{kind} exited")
        return {"n": n, "rss_before": before, "rss_after": after,
                "per_conn": (after - before) / n}
    finally:
        for s in socks:
            s.close()
        broker.stop()


# -- runs ---------------------------------------------------------------------------------

def run_one(row, kind, brokers, n, cfg, args, tmpdir):
    if row["kind"] == "idle":
        return run_idle(kind, cfg, args, tmpdir)
    b = brokers[kind]
    if not b.alive():
        raise RuntimeError(f"{kind} is not running: {b.child.stderr_tail(400)}")
    if row["kind"] == "lat":
        return run_paho(b, row, n, cfg, args, rate=1000, warm=cfg["lat_warm"])
    if row["client"] == "c":
        return run_c(b, row, n, cfg, args)
    return run_paho(b, row, n, cfg, args)


def size_n(row, kind, rate, cfg):
    n = int(min(cfg["max_n"], max(cfg["min_n"], rate * cfg["run_s"])))
    return -(-n // 1000) * 1000


def run_all(rows, brokers, cfg, args, tmpdir):
    res = {(r["key"], k): {"runs": [], "error": None, "n": None} for r in rows
           for k in r["servers"]}
    t0 = time.perf_counter()
    for row in rows:  # warm-up: each broker's N for the row
        for k in row["servers"]:
            st = res[(row["key"], k)]
            if k not in brokers and row["kind"] != "idle":
                st["error"] = "not started"
                continue
            if row["kind"] == "idle":
                st["n"] = cfg["idle_n"]
                continue
            if row["kind"] == "lat":
                st["n"] = cfg["lat_n"] + cfg["lat_warm"]
                continue
            calib = cfg["calib_amqtt"] if k == "amqtt" else cfg["calib"][row["client"]]
            # (fan-out and QoS 1 rows deliver fewer messages/s per subscriber)
            calib = max(cfg["min_n"], calib // row["subs"] // (1 + row["qos"]))
            try:
                w = run_one(row, k, brokers, calib, cfg, args, tmpdir)
            except (RuntimeError, OSError, KeyError) as exc:
                st["error"] = f"warm-up: {exc}"
                say(f"  {row['label']} on {k}: FAILED {st['error']}")
                continue
            st["n"] = size_n(row, k, w["rate"], cfg)
            say("  {} on {}: warm-up {} per subscriber ({:,} msgs) -> N = {:,}".format(
                row["label"], k, fmt_rate(w["rate"]), calib, st["n"]))
    for rep in range(cfg["repeat"]):
        for row in rows:
            order = list(row["servers"])
            if rep % 2:
                order.reverse()
            for k in order:
                st = res[(row["key"], k)]
                if st["error"] or not st["n"]:
                    continue
                try:
                    st["runs"].append(run_one(row, k, brokers, st["n"], cfg, args, tmpdir))
                except (RuntimeError, OSError, KeyError) as exc:
                    st["error"] = f"run {rep + 1}: {exc}"
                    say(f"  {row['label']} on {k}: FAILED {st['error']}")
        say("  repeat {}/{} done ({:.0f} s)".format(rep + 1, cfg["repeat"],
                                                    time.perf_counter() - t0))
    return res


# -- report ---------------------------------------------------------------------------------

def summarize(rows, res):
    out = []
    for row in rows:
        r = {"num": row["num"], "key": row["key"], "label": row["label"], "kind": row["kind"],
             "qos": row["qos"], "subs": row["subs"], "client": row["client"], "servers": {}}
        for k in row["servers"]:
            st = res[(row["key"], k)]
            s = {"runs": st["runs"], "error": st["error"], "n": st["n"]}
            if st["runs"]:
                if row["kind"] == "tput":
                    rates = [x["rate"] for x in st["runs"]]
                    s.update(median=median_of(st["runs"], "rate"), min=min(rates), max=max(rates))
                elif row["kind"] == "idle":
                    s.update(median=median_of(st["runs"], "per_conn"))
                else:
                    s.update(p50_ns=median_of(st["runs"], "p50_ns"),
                             p99_ns=median_of(st["runs"], "p99_ns"))
                for key in ("server_cpu", "pub_cpu", "sub_cpu", "other_cpu"):
                    s[key] = median_of(st["runs"], key)
                if row["kind"] == "tput":
                    s["bound"] = ("broker" if (s.get("server_cpu") or 0) >= BUSY else "client"
                                  if max(s.get("pub_cpu") or 0, s.get("sub_cpu") or 0) >= BUSY
                                  else "-")
            r["servers"][k] = s
        f, m, a = (r["servers"].get(k, {}) for k in ("fastflow", "mosquitto", "amqtt"))
        if row["kind"] == "tput":
            if f.get("median") and m.get("median"):
                r["ratio"] = f["median"] / m["median"]
            if f.get("median") and a.get("median"):
                r["ratio_amqtt"] = f["median"] / a["median"]
            if row["client"] == "c":
                r["target"] = ">= 1.5x mosq, >= 10x amqtt"
                r["pass"] = (r.get("ratio") is not None and r["ratio"] >= 1.5
                             and (r.get("ratio_amqtt") is None or r["ratio_amqtt"] >= 10))
            else:
                r["target"] = "- (the client is the limit)"
        elif row["kind"] == "idle":
            if f.get("median") and m.get("median"):
                r["ratio"] = f["median"] / m["median"]
            r["target"] = "<= 8 KiB/conn"
            r["pass"] = f.get("median") is not None and f["median"] <= 8192
        else:
            if f.get("p50_ns") and m.get("p50_ns"):
                r["ratio_p50"] = f["p50_ns"] / m["p50_ns"]
                r["ratio_p99"] = f["p99_ns"] / m["p99_ns"]
            r["target"] = "-"
        out.append(r)
    return out


def fmt_x(x):
    return "-" if x is None else f"{x:.2f}x"


def fmt_pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def fmt_us(ns):
    return "-" if ns is None else f"{ns / 1000:.0f} us"


def fmt_kib(b):
    return "-" if b is None else f"{b / 1024:.2f} KiB"


def cell(s, kind, q=None):
    if not s:
        return "-"
    if s.get("error") and not s.get("runs"):
        return "FAILED"
    if not s.get("runs"):
        return "-"
    if kind == "tput":
        return fmt_rate(s["median"])
    if kind == "idle":
        return fmt_kib(s["median"])
    return fmt_us(s[q])


def table(results):
    lines = []
    for r in results:
        sv = r["servers"]
        verdict = "" if r.get("pass") is None else (" PASS" if r["pass"] else " MISS")
        if r["kind"] == "lat":
            for q in ("p50_ns", "p99_ns"):
                lines.append([r["num"], r["label"] + " " + q[:3],
                              cell(sv.get("mosquitto"), "lat", q),
                              cell(sv.get("fastflow"), "lat", q), "-",
                              fmt_x(r.get("ratio_" + q[:3])), "-", "-", ""])
            continue
        cpu = " / ".join(fmt_pct(sv[k].get("server_cpu")) if k in sv else "-"
                         for k in ("mosquitto", "fastflow"))
        bound = " / ".join(sv[k].get("bound") or "-" for k in ("mosquitto", "fastflow", "amqtt")
                           if k in sv) if r["kind"] == "tput" else ""
        lines.append([r["num"], r["label"], cell(sv.get("mosquitto"), r["kind"]),
                      cell(sv.get("fastflow"), r["kind"]),
                      cell(sv.get("amqtt"), r["kind"]) if "amqtt" in sv else "-",
                      fmt_x(r.get("ratio")), fmt_x(r.get("ratio_amqtt")),
                      r["target"] + verdict, cpu if r["kind"] == "tput" else "",
                      bound])
    for ln in lines:
        while len(ln) < 10:
            ln.append("")
    return render_table(["#", "workload", "mosquitto", "fastflow", "amqtt", "ff/mosq",
                         "ff/amqtt", "target", "CPU srv mosq/ff", "bound by m/f/a"],
                        lines, "><>>>>><<<")


def markdown(results):
    out = ["| # | workload | mosquitto | fastflow | amqtt | fastflow/mosquitto | fastflow/amqtt "
           "| target | bound by (mosquitto / fastflow / amqtt) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        sv = r["servers"]
        verdict = "" if r.get("pass") is None else (" pass" if r["pass"] else " **miss**")
        if r["kind"] == "lat":
            for q in ("p50_ns", "p99_ns"):
                out.append("| {} | {} {} | {} | {} | - | {} | - | - | |".format(
                    r["num"], r["label"], q[:3], cell(sv.get("mosquitto"), "lat", q),
                    cell(sv.get("fastflow"), "lat", q), fmt_x(r.get("ratio_" + q[:3]))))
            continue
        bound = " / ".join(sv[k].get("bound") or "-" for k in ("mosquitto", "fastflow", "amqtt")
                           if k in sv) if r["kind"] == "tput" else ""
        out.append("| {} | {} | {} | {} | {} | {} | {} | {}{} | {} |".format(
            r["num"], r["label"], cell(sv.get("mosquitto"), r["kind"]),
            cell(sv.get("fastflow"), r["kind"]),
            cell(sv.get("amqtt"), r["kind"]) if "amqtt" in sv else "-",
            fmt_x(r.get("ratio")), fmt_x(r.get("ratio_amqtt")), r["target"], verdict, bound))
    return "\n".join(out)


def report(args, cfg, results):
    say("")
    say(wrap("median of {} runs per row and broker (brokers back to back, alternating which "
             "goes first); delivered messages/s per subscriber; {} B payloads".format(
                 cfg["repeat"], SIZE)))
    say(table(results))
    say("")
    for r in results:
        for k, s in r["servers"].items():
            if not s.get("runs"):
                continue
            if r["kind"] == "tput":
                per = ", ".join(fmt_rate(x["rate"]) for x in s["runs"])
                say("  row {} {} (N {:,}): {}; CPU srv {} pub {} sub(max) {} other {}".format(
                    r["num"], k, s["n"], per, fmt_pct(s.get("server_cpu")),
                    fmt_pct(s.get("pub_cpu")), fmt_pct(s.get("sub_cpu")),
                    fmt_pct(s.get("other_cpu"))))
            elif r["kind"] == "idle":
                say("  row {} {}: {} per connection ({})".format(
                    r["num"], k, fmt_kib(s["median"]), ", ".join(
                        "RSS {:.1f} -> {:.1f} MiB".format(x["rss_before"] / 2**20,
                                                          x["rss_after"] / 2**20)
                        for x in s["runs"])))
            else:
                say("  row {} {}: {}".format(r["num"], k, ", ".join(
                    f"p50 {fmt_us(x['p50_ns'])} p99 {fmt_us(x['p99_ns'])} "
                    f"({x['samples']:,} samples)" for x in s["runs"])))
    for r in results:
        for k, s in r["servers"].items():
            if s.get("error"):
                say(f"FAILED row {r['num']} ({r['label']}) on {k}: {s['error']}")
    say(wrap("bound by: \"broker\" when the broker used >= {0:.0f}% of a core over the run, "
             "\"client\" when the publisher or a subscriber did, \"-\" when none did (they "
             "waited for each other or for the CPU: other work on the machine, see \"other\"). "
             " CPU srv: the broker's CPU over the run's wall time (100% = one core); other: "
             "the CPU of every other process meanwhile (rows 1-4).".format(100 * BUSY)))
    say(wrap(f"caveats: {os.cpu_count()} cores shared by the broker and the clients (and by "
             "whatever else runs on the machine); mosquitto is one C thread, fastflow serve one "
             "uvloop process, amqtt one asyncio process."))
    say("")
    say(markdown(results))


def machine_facts():
    load = read_text("/proc/loadavg")
    m = {**cpu_facts(), "python": python_desc(), "loadavg": " ".join(load.split()[:3])
         if load else None, **fastflow_facts()}
    try:
        from importlib.metadata import version

        m["paho_mqtt"] = version("paho-mqtt")
    except Exception:  # noqa: BLE001 - unknown
        m["paho_mqtt"] = None
    return m


def format_machine(m):
    return ("machine: {cpu}{mhz}, {cores} cores ({usable_cores} usable); {python}; "
            "fastflow {fastflow} ({kind}; git {git}; _core built {built}); paho-mqtt {paho}; "
            "load average {load}".format(load=m["loadavg"] or "?", paho=m["paho_mqtt"],
                                         **machine_format_fields(m),
                                         **{k: v for k, v in m.items() if k != "cpu_mhz"}))


# -- main ------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=rows_arg(ROWS), default=[r["key"] for r in ROWS],
                    help="rows by number or name (default all): " + ", ".join(
                        f"{r['num']} {r['key']}" for r in ROWS))
    ap.add_argument("--servers", type=choices_arg(SERVERS, "broker"), default=list(SERVERS),
                    help="mosquitto, fastflow, amqtt (default all; amqtt runs the paho rows)")
    ap.add_argument("--repeat", type=int, help="runs per row and broker (default 3; --quick 1)")
    ap.add_argument("--run-seconds", type=float,
                    help="about how long a throughput run lasts (default 1.5; --quick 0.7)")
    ap.add_argument("--idle", type=int, help="idle connections of row 9 (default 10,000)")
    ap.add_argument("--max-inflight", type=int, default=100,
                    help="QoS 1 messages a publisher keeps in flight (mosquitto_pub -M, paho's "
                         "max_inflight_messages_set; default %(default)s)")
    ap.add_argument("--ff-log-level", default="warning",
                    choices=("debug", "info", "warning", "error", "critical"))
    add_output_args(ap, quick_help="smoke run: short runs, 1 repeat, 2,000 idle connections")
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    cfg = dict(QUICK if args.quick else FULL)
    if args.repeat:
        cfg["repeat"] = args.repeat
    if args.run_seconds:
        cfg["run_s"] = args.run_seconds
    if args.idle:
        cfg["idle_n"] = args.idle
    cfg["timeout"] = 60.0
    if args.json:
        report_to(sys.stderr)
    rows = [dict(r, servers=tuple(k for k in r["servers"] if k in args.servers))
            for r in ROWS if r["key"] in args.rows]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cb.Child.stop_all)
    if cb.REPO not in sys.path:
        sys.path.insert(1, cb.REPO)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, cfg["idle_n"] + 1024) if hard != resource.RLIM_INFINITY else \
        cfg["idle_n"] + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # the brokers inherit it
    if want < cfg["idle_n"] + 64:
        cfg["idle_n"] = max(100, want - 1024)
        say(f"fd limit {want}: row 9 opens {cfg['idle_n']:,} connections")
    t_start = time.perf_counter()
    machine = machine_facts()
    say(format_machine(machine))
    tmpdir = tempfile.mkdtemp(prefix="compare_mqtt.")
    brokers = {}
    interrupted = False
    try:
        need = {k for r in rows if r["kind"] != "idle" for k in r["servers"]}
        for k in SERVERS:
            if k not in need:
                continue
            try:
                brokers[k] = start_broker(k, tmpdir, args)
                say(f"{k}: {brokers[k].version} on 127.0.0.1:{brokers[k].port} "
                    f"(pid {brokers[k].pid})")
            except (RuntimeError, OSError) as exc:
                say(f"{k}: did not start: {exc}")
        machine["brokers"] = {k: b.version for k, b in brokers.items()}
        res = run_all(rows, brokers, cfg, args, tmpdir)
    except KeyboardInterrupt:
        interrupted = 128 + signal.SIGINT
    except Interrupted as exc:
        interrupted = 128 + exc.args[0]
    finally:
        for b in brokers.values():
            b.stop()
        cb.Child.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)
    if interrupted:
        say("interrupted; every child process stopped")
        return interrupted
    results = summarize(rows, res)
    report(args, cfg, results)
    total = time.perf_counter() - t_start
    say(f"total {total:.0f} s")
    if args.json:
        write_json({"machine": machine, "config": dict(cfg, size=SIZE, fanout=FANOUT,
                                                       max_inflight=args.max_inflight),
                    "results": results, "total_s": total})
    return 1 if any(s.get("error") for r in results for s in r["servers"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
