"""WebSocket delivery rate of ``fastflow serve``: events of ``--size`` bytes
published by one native client, delivered to one ``websockets`` client,
for each subprotocol of ``GET /ws`` (docs/http.md): ``cloudevents.json``
(one text frame per event, CloudEvents JSON) and ``fastflow`` (the native
protocol in binary frames, one per flush).

One run starts ``python -m fastflow serve`` and a publisher process
(``--worker``), and reads in this process with ``websockets`` (uvloop).
The subscriber acknowledges every ``ACK_EVERY`` events over its own
socket (a CloudEvent on ``bench.ack``, or a native PUB), and the publisher
stays at most ``--window`` events ahead of it, so no slow consumer is cut.
delivered/s = events / (last received - first received); the figure is
the median of ``--repeat`` runs, with the server's CPU time per event (from
/proc: it does not depend on what else the machine runs, which the rate
does; the client, a Python loop, is the bottleneck of the rate).  The peer comparison (nats-server's
WebSocket listener) is benchmarks/compare_http.py's.

    python benchmarks/ws_delivery.py [--events 1000000] [--repeat 3]
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time

ACK_EVERY = 5_000
HEAD = struct.Struct("<IBBHIHH")
MSG, CONNECT, SUB, PUB = 8, 2, 6, 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def native_frame(op, fid=0, subject=b"", body=b""):
    return HEAD.pack(12 + len(subject) + len(body), 1, op, 0, fid, len(subject), 0) + subject \
        + body


# -- the publisher (its own process) ----------------------------------------------------------


async def publisher(url, n, size, window):
    import fastflow.client as fc
    acked = [0]
    got_go = asyncio.Event()
    progress = asyncio.Event()

    def on_ack(_subject, _reply, data):
        v = int(data)
        if v < 0:
            got_go.set()
        else:
            acked[0] = max(acked[0], v)
            progress.set()

    async with await fc.connect(url) as c:
        c.subscribe("bench.ack", on_ack, raw=True)
        await c.flush()
        print("ready", flush=True)
        await got_go.wait()
        payload = b"x" * size
        chunk = [payload] * 1000
        sent = 0
        while sent < n:
            while sent - acked[0] > window:
                progress.clear()
                await progress.wait()
            k = min(1000, n - sent)
            c.publish_batch("bench.data", chunk[:k])
            sent += k
            if sent % 20_000 == 0:
                await c.flush()
        await c.flush()
        while acked[0] < n:
            progress.clear()
            await progress.wait()


# -- the subscriber ---------------------------------------------------------------------------


async def subscribe_json(port, n):
    import websockets
    url = "ws://127.0.0.1:{}/ws?subject=bench.data".format(port)
    async with websockets.connect(url, subprotocols=["cloudevents.json"], max_queue=4096,
                                  max_size=None) as ws:
        def ack(v):
            return json.dumps({"specversion": "1.0", "id": str(v), "source": "bench",
                               "type": "bench.ack", "data": v})
        await ws.send(ack(-1))          # (subscribed: go)
        count = 0
        t0 = None
        recv = ws.recv
        while count < n:
            await recv(decode=False)    # (the JSON is parsed by whoever uses it)
            count += 1
            if t0 is None:
                t0 = time.perf_counter()
            if count % ACK_EVERY == 0:
                await ws.send(ack(count))
        return n / (time.perf_counter() - t0)


async def subscribe_native(port, n):
    import websockets

    from fastflow import Event
    url = "ws://127.0.0.1:{}/ws".format(port)
    async with websockets.connect(url, subprotocols=["fastflow"], max_queue=4096,
                                  max_size=None) as ws:
        await ws.recv()                 # INFO
        await ws.send(native_frame(CONNECT, 1, body=b"{}") + native_frame(SUB, 1, b"bench.data"))

        def ack(v):
            return native_frame(PUB, 0, b"bench.ack", Event("bench.ack", b"%d" % v).encode())
        await ws.recv()                 # OK
        await ws.send(ack(-1))
        count = 0
        t0 = None
        buf = b""
        next_ack = ACK_EVERY
        unpack = HEAD.unpack_from
        while count < n:
            data = await ws.recv()
            if t0 is None:
                t0 = time.perf_counter()
            buf = buf + data if buf else data
            off = 0
            end = len(buf)
            while end - off >= 16:
                size, _v, op, _f, _i, _s, _r = unpack(buf, off)
                if end - off < size + 4:
                    break
                off += size + 4
                if op == MSG:
                    count += 1
            buf = buf[off:]
            if count >= next_ack:
                next_ack = count - count % ACK_EVERY + ACK_EVERY
                await ws.send(ack(count))
        return n / (time.perf_counter() - t0)


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(kind, n, size, window):
    """(delivered/s, server CPU seconds) of one run."""
    port, http_port = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    srv = subprocess.Popen([sys.executable, "-m", "fastflow", "serve", "--host", "127.0.0.1",
                            "--port", str(port), "--http-port", str(http_port),
                            "--monitor-port", "0"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    pub = None
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        pub = subprocess.Popen([sys.executable, __file__, "--worker",
                                "fastflow://127.0.0.1:{}".format(port), str(n), str(size),
                                str(window)], env=env, stdout=subprocess.PIPE, text=True)
        assert pub.stdout.readline().strip() == "ready"
        import uvloop
        sub = subscribe_json if kind == "cloudevents.json" else subscribe_native
        c0 = cpu_seconds(srv.pid)
        rate = uvloop.run(sub(http_port, n))
        cpu = cpu_seconds(srv.pid) - c0
        pub.wait(30)
        return rate, cpu
    finally:
        for p in (pub, srv):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, n, size, window = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
            int(sys.argv[5])
        import uvloop
        uvloop.run(publisher(url, n, size, window))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=16, help="payload bytes (default 16)")
    ap.add_argument("--window", type=int, default=20_000,
                    help="events the publisher may be ahead of the subscriber (default 20,000: "
                         "below the server's write_high_water in both subprotocols)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--subprotocol", choices=("cloudevents.json", "fastflow", "both"),
                    default="both")
    args = ap.parse_args()
    kinds = ("cloudevents.json", "fastflow") if args.subprotocol == "both" \
        else (args.subprotocol,)
    print("{} events of {} B, one websockets {} client; median of {}; {} CPUs, load {}".format(
        args.events, args.size, __import__("websockets").__version__, args.repeat,
        os.cpu_count(), " ".join(open("/proc/loadavg").read().split()[:3])))
    for kind in kinds:
        runs = [run_once(kind, args.events, args.size, args.window)
                for _ in range(args.repeat)]
        rates = [r for r, _c in runs]
        cost = statistics.median(c for _r, c in runs) / args.events * 1e6
        print("  {:<17} {:>10,.0f} delivered/s   server CPU {:.2f} us/event   (runs: {})".format(
            kind, statistics.median(rates), cost, ", ".join("{:,.0f}".format(r) for r in rates)))


if __name__ == "__main__":
    main()
