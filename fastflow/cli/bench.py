"""``fastflow bench``: a load generator. Publishers and subscribers (tasks
of one event loop, or ``--procs`` processes) through a fastflow server (an
embedded one on a free loopback port unless ``--server``): throughput per
worker and in aggregate, and the latency publish -> receive from a timestamp
in the payload."""

import asyncio
import json
import os
import platform
import struct
import sys
import time

from fastflow._impl import validate_subject
from fastflow._stats import percentile
from fastflow._version import __version__
from fastflow.cli.base import CommandError, lazy_server, network_command, run_async


_STAMP_EVERY = 61           # one payload in 61 carries a timestamp (all of them with --rate);
                            # a prime, so that the members of a queue group all get some
_CHUNK = 1000               # publishes between two looks at the connection (backpressure)


def _stamped(size):
    """A payload factory: byte 0 = 1, then ``time.time_ns()`` (u64 LE), zeros."""
    pack = struct.Struct("<BQ").pack
    pad = bytes(size - 9)
    now = time.time_ns

    def make():
        return pack(1, now()) + pad
    return make


class _Counter:
    """A progress counter: an int in tasks mode, a shared value across processes."""

    def __init__(self, shared=None):
        self.shared = shared
        self.value = 0

    def set(self, v):
        self.value = v
        if self.shared is not None:
            self.shared.value = v

    def get(self):
        return self.shared.value if self.shared is not None else self.value


async def _bench_subscriber(url, o, idx, counter, ready, stop_when):
    """One subscriber: counts what it receives (raw callback by default),
    samples the latency of stamped payloads; returns its figures."""
    from fastflow.client import connect

    c = await connect(url, name="bench-sub-{}".format(idx), pending_limit=64 << 20,
                      timeout=o["timeout"])
    n = 0
    nbytes = 0
    first = last = 0
    lat = []
    lat_add = lat.append
    unpack = struct.Struct("<Q").unpack_from
    now = time.time_ns
    size = o["size"]
    stamps = size >= 9

    # a stamped payload (one in 61) gives a latency sample and the time of
    # the last arrival; without stamps (--size < 9) the polling below does
    if o["events"]:
        def on_msg(ev):
            nonlocal n, last
            n += 1
            d = ev.data
            if stamps and d[0]:
                last = now()
                lat_add(last - unpack(d, 1)[0])
        sub = c.subscribe(o["subject"], on_msg, queue=o["queue"])
    else:
        def on_msg(subject, reply, d):
            nonlocal n, last
            n += 1
            if stamps and d[0]:
                last = now()
                lat_add(last - unpack(d, 1)[0])
        sub = c.subscribe(o["subject"], on_msg, queue=o["queue"], raw=True)
    await c.flush()
    ready()
    seen = 0
    try:
        while not await stop_when():
            await asyncio.sleep(0.02)
            if n != seen:
                if not stamps or not lat:
                    last = now()
                if seen == 0:
                    first = now()
                seen = n
                counter.set(n)
    finally:
        counter.set(n)
        await sub.unsubscribe()
        await c.close()
    nbytes = n * size
    return {"role": "sub", "id": idx, "msgs": n, "bytes": nbytes, "first_ns": first,
            "last_ns": last, "latency_ns": lat, "dropped": sub.dropped,
            "client": c.stats}


async def _bench_publisher(url, o, idx, n, counter, ready, go):
    from fastflow.client import connect

    c = await connect(url, name="bench-pub-{}".format(idx), timeout=o["timeout"])
    size = o["size"]
    subject = o["subject"]
    plain = bytes(size)
    stamp = _stamped(size) if size >= 9 else (lambda: plain)
    rate = o["rate"]
    batch = o["batch"]
    every = 1 if rate else _STAMP_EVERY
    ready()
    await go()
    t0 = time.time_ns()
    tick = time.perf_counter()
    pub = c.publish
    writable = c.wait_writable
    sent = 0
    try:
        # with --rate: bursts of about a millisecond's worth (event loop timers
        # have a millisecond's resolution)
        step = batch or (max(1, min(_CHUNK, rate // 1000)) if rate else _CHUNK)
        while sent < n:
            k = min(step, n - sent)
            if batch:
                datas = [plain] * k
                for j in range(0, k, every):
                    datas[j] = stamp()
                c.publish_many(subject, datas)
            elif every == 1:
                for _ in range(k):
                    pub(subject, stamp())
            else:
                j = 0
                while j < k:
                    pub(subject, stamp())
                    for _ in range(min(every, k - j) - 1):
                        pub(subject, plain)
                    j += every
            sent += k
            counter.set(sent)
            if rate:
                delay = tick + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await writable()
            await asyncio.sleep(0)
        await c.flush(max(30.0, o["timeout"]))
    finally:
        t1 = time.time_ns()
        counter.set(sent)
        await c.close()
    return {"role": "pub", "id": idx, "msgs": sent, "bytes": sent * size, "start_ns": t0,
            "end_ns": t1}


def _bench_worker(role, url, o, idx, n, shared, ready_q, go_evt, done_evt, result_q):
    """A publisher or subscriber process (``--procs``)."""
    counter = _Counter(shared)

    async def go():
        while not go_evt.is_set():
            await asyncio.sleep(0.001)

    async def stop_when():
        return done_evt.is_set()

    async def run():
        if role == "sub":
            return await _bench_subscriber(url, o, idx, counter, lambda: ready_q.put(idx),
                                           stop_when)
        return await _bench_publisher(url, o, idx, n, counter, lambda: ready_q.put(idx), go)

    try:
        result_q.put(run_async(run(), o["loop"]))
    except BaseException as exc:                        # tell the parent, do not hang it
        result_q.put({"role": role, "id": idx, "error": "{}: {}".format(type(exc).__name__,
                                                                          exc)})


class _Progress:
    def __init__(self, enabled, total_pub, total_sub):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.total_pub = total_pub
        self.total_sub = total_sub
        self.last = (time.perf_counter(), 0)
        self.last_line = 0.0
        self.width = 0

    def update(self, pubs, subs, final=False):
        if not self.enabled:
            return
        t = time.perf_counter()
        dt = t - self.last[0]
        rate = (subs - self.last[1]) / dt if dt > 0 else 0.0
        self.last = (t, subs)
        line = "published {:>6.2f}M/{:.2f}M  received {:>6.2f}M/{:.2f}M  {:>6.2f} M msgs/s".format(
            pubs / 1e6, self.total_pub / 1e6, subs / 1e6, self.total_sub / 1e6, rate / 1e6)
        if self.tty:
            sys.stderr.write("\r" + line.ljust(self.width))
            self.width = len(line)
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif final or t - self.last_line >= 2.0:
            self.last_line = t
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


async def _bench_main(args):
    o = {"subject": args.subject, "size": args.size, "queue": args.queue_group,
         "events": args.events, "rate": args.rate, "batch": args.batch, "timeout": args.timeout,
         "loop": args.loop}
    npubs, nsubs, nmsgs = args.bench_pubs, args.bench_subs, args.msgs
    per_pub = [nmsgs // npubs + (1 if i < nmsgs % npubs else 0) for i in range(npubs)]
    expected = nmsgs * (1 if args.queue_group else nsubs) if nsubs else 0
    server = None
    where = args.server
    if where is None:
        app = lazy_server("bench")
        if app is None:
            raise CommandError("no --server given and the embedded server is not available")
        from fastflow.server.config import ServerConfig

        server = app.Server(ServerConfig(host="127.0.0.1", port=0, monitor_port=0,
                                         log_level="warning"))
        await server.start()
        where = "fastflow://127.0.0.1:{}".format(server.port)
    url = where
    progress = _Progress(not args.quiet, nmsgs, expected)
    results = []
    try:
        if args.procs:
            results = await _bench_procs(url, o, per_pub, nsubs, expected, progress, args)
        else:
            results = await _bench_tasks(url, o, per_pub, nsubs, expected, progress, args)
    finally:
        if server is not None:
            await server.stop(drain=False)
    errors = [r for r in results if "error" in r]
    if errors:
        raise CommandError("; ".join("{} {}: {}".format(r["role"], r["id"], r["error"])
                                      for r in errors))
    return _bench_report(args, o, url if server is None else "embedded ({})".format(url),
                         results, expected)


async def _bench_tasks(url, o, per_pub, nsubs, expected, progress, args):
    loop = asyncio.get_running_loop()
    sub_counters = [_Counter() for _ in range(nsubs)]
    pub_counters = [_Counter() for _ in per_pub]
    done = asyncio.Event()
    go = asyncio.Event()

    async def stop_when():
        return done.is_set()

    async def wait_go():
        await go.wait()

    ready_n = 0

    def ready():                        # a subscriber's SUB went through; a publisher connected
        nonlocal ready_n
        ready_n += 1
    subs = [loop.create_task(_bench_subscriber(url, o, i, sub_counters[i], ready, stop_when))
            for i in range(nsubs)]
    pubs = [loop.create_task(_bench_publisher(url, o, i, n, pub_counters[i], ready, wait_go))
            for i, n in enumerate(per_pub)]
    t_ready = time.perf_counter()
    while ready_n < len(subs) + len(pubs):
        if any(t.done() for t in subs + pubs):
            break
        if time.perf_counter() - t_ready > args.timeout + 5:
            done.set()
            raise CommandError("the clients did not connect within {} s".format(args.timeout))
        await asyncio.sleep(0.01)
    go.set()
    await _bench_wait(pub_counters, sub_counters, expected, progress, args,
                      lambda: all(t.done() for t in pubs), lambda: any(
                          t.done() and t.exception() for t in subs + pubs))
    done.set()
    out = []
    for t in pubs + subs:
        try:
            out.append(await t)
        except Exception as exc:
            out.append({"role": "?", "id": -1, "error": "{}: {}".format(type(exc).__name__, exc)})
    return out


async def _bench_wait(pub_counters, sub_counters, expected, progress, args, pubs_done, failed):
    """Until every subscriber has everything, or the publishers are done and
    nothing arrived for ``--idle`` seconds."""
    last_total = -1
    last_change = time.perf_counter()
    while True:
        await asyncio.sleep(0.1)
        pubs = sum(c.get() for c in pub_counters)
        total = sum(c.get() for c in sub_counters)
        progress.update(pubs, total)
        if failed():
            break
        if total >= expected and pubs_done():
            break
        now = time.perf_counter()
        if total != last_total:
            last_total = total
            last_change = now
        elif pubs_done() and now - last_change > args.idle:
            break
    progress.update(sum(c.get() for c in pub_counters), sum(c.get() for c in sub_counters),
                    final=True)


async def _bench_procs(url, o, per_pub, nsubs, expected, progress, args):
    import multiprocessing as mp
    import queue as _queue

    ctx = mp.get_context("spawn")
    ready_q = ctx.Queue()
    result_q = ctx.Queue()
    go_evt = ctx.Event()
    done_evt = ctx.Event()
    sub_vals = [ctx.Value("q", 0, lock=False) for _ in range(nsubs)]
    pub_vals = [ctx.Value("q", 0, lock=False) for _ in per_pub]
    procs = []
    for i in range(nsubs):
        procs.append(ctx.Process(target=_bench_worker, args=(
            "sub", url, o, i, 0, sub_vals[i], ready_q, go_evt, done_evt, result_q), daemon=True))
    for i, n in enumerate(per_pub):
        procs.append(ctx.Process(target=_bench_worker, args=(
            "pub", url, o, i, n, pub_vals[i], ready_q, go_evt, done_evt, result_q), daemon=True))
    for p in procs:
        p.start()
    results = []
    try:
        ready = 0
        deadline = time.perf_counter() + args.timeout + 30
        while ready < len(procs):
            try:
                ready_q.get_nowait()
                ready += 1
                continue
            except _queue.Empty:
                pass
            try:
                results.append(result_q.get_nowait())    # a worker that failed early
            except _queue.Empty:
                pass
            if results or time.perf_counter() > deadline:
                done_evt.set()
                break
            await asyncio.sleep(0.01)
        if not results:
            go_evt.set()
            pub_counters = [_Counter(v) for v in pub_vals]
            sub_counters = [_Counter(v) for v in sub_vals]
            npubs = len(per_pub)

            def pubs_done():
                while True:
                    try:
                        results.append(result_q.get_nowait())
                    except _queue.Empty:
                        break
                return sum(1 for r in results if r.get("role") == "pub") >= npubs

            await _bench_wait(pub_counters, sub_counters, expected, progress, args, pubs_done,
                              lambda: any("error" in r for r in results))
        done_evt.set()
        deadline = time.perf_counter() + 30
        while len(results) < len(procs) and time.perf_counter() < deadline:
            try:
                results.append(result_q.get_nowait())
            except _queue.Empty:
                await asyncio.sleep(0.02)
    finally:
        done_evt.set()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
    if len(results) < len(procs):
        results.append({"role": "?", "id": -1, "error": "{} worker(s) sent no result".format(
            len(procs) - len(results))})
    return results


def _bench_report(args, o, where, results, expected):
    pubs = sorted((r for r in results if r["role"] == "pub"), key=lambda r: r["id"])
    subs = sorted((r for r in results if r["role"] == "sub"), key=lambda r: r["id"])
    out = {"server": where, "mode": "procs" if args.procs else "tasks",
           "publishers": len(pubs), "subscribers": len(subs), "msgs": args.msgs,
           "size": args.size, "subject": args.subject, "queue": args.queue_group,
           "events": args.events, "batch": args.batch, "rate": args.rate,
           "fastflow": __version__, "python": platform.python_version(),
           "cpus": os.cpu_count()}
    start = min((p["start_ns"] for p in pubs), default=0)
    end_pub = max((p["end_ns"] for p in pubs), default=0)
    rows = []
    for p in pubs:
        dt = max(1, p["end_ns"] - p["start_ns"]) / 1e9
        rows.append({"role": "publisher", "id": p["id"], "msgs": p["msgs"], "seconds": dt,
                     "msgs_per_s": p["msgs"] / dt, "mb_per_s": p["bytes"] / dt / 1e6})
    lat = []
    received = 0
    last = 0
    for s in subs:
        # from the first publish: the subscriber's own first arrival is only known to 20 ms
        dt = max(1, s["last_ns"] - start) / 1e9 if s["msgs"] else 0.0
        rows.append({"role": "subscriber", "id": s["id"], "msgs": s["msgs"], "seconds": dt,
                     "msgs_per_s": s["msgs"] / dt if dt else 0.0,
                     "mb_per_s": s["bytes"] / dt / 1e6 if dt else 0.0,
                     "dropped": s.get("dropped", 0)})
        lat.extend(s["latency_ns"])
        received += s["msgs"]
        last = max(last, s["last_ns"])
    out["workers"] = rows
    pub_dt = max(1, end_pub - start) / 1e9
    out["published_per_s"] = sum(p["msgs"] for p in pubs) / pub_dt
    out["published_mb_per_s"] = sum(p["bytes"] for p in pubs) / pub_dt / 1e6
    sub_dt = max(1, last - start) / 1e9
    out["delivered"] = received
    out["expected"] = expected
    out["lost"] = max(0, expected - received)
    out["delivered_per_s"] = received / sub_dt if received else 0.0
    out["delivered_mb_per_s"] = received * args.size / sub_dt / 1e6 if received else 0.0
    lat.sort()
    out["latency_samples"] = len(lat)
    out["latency_us"] = {k: (percentile(lat, q) / 1e3 if lat else None)
                         for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9))}
    out["latency_us"]["max"] = lat[-1] / 1e3 if lat else None
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    M = 1e6
    print("fastflow bench: {} publisher{} -> {} subscriber{}{}, {:,} msgs x {} B on {!r}, "
          "server {}, {}{}{}".format(
              len(pubs), "" if len(pubs) == 1 else "s", len(subs), "" if len(subs) == 1 else "s",
              " (queue group)" if args.queue_group else "", args.msgs, args.size, args.subject,
              where, out["mode"], ", batches of {}".format(args.batch) if args.batch else "",
              ", {:,} msgs/s per publisher".format(args.rate) if args.rate else ""))
    for r in rows:
        print("  {:<10} {:>2}: {:>12,} msgs in {:7.3f} s  {:7.3f} M msgs/s  {:8.1f} MB/s{}".format(
            r["role"], r["id"], r["msgs"], r["seconds"], r["msgs_per_s"] / M, r["mb_per_s"],
            "  dropped {:,}".format(r["dropped"]) if r.get("dropped") else ""))
    print("  aggregate : published {:.3f} M msgs/s ({:.1f} MB/s), delivered {:.3f} M msgs/s "
          "({:.1f} MB/s){}".format(out["published_per_s"] / M, out["published_mb_per_s"],
                                   out["delivered_per_s"] / M, out["delivered_mb_per_s"],
                                   ", {:,} of {:,} not received".format(out["lost"], expected)
                                   if out["lost"] else ""))
    lu = out["latency_us"]
    if lat:
        print("  latency (publish -> receive, {:,} samples): p50 {}  p90 {}  p99 {}  p99.9 {}  "
              "max {}".format(len(lat), *(_fmt_us(lu[k]) for k in ("p50", "p90", "p99", "p99.9",
                                                                    "max"))))
        if not args.rate:
            print("  (at full throughput the latency includes queueing; --rate N measures it "
                  "at a set pace)")
    elif args.size < 9:
        print("  latency: not measured (--size below 9 bytes leaves no room for the timestamp)")
    return 0


def _fmt_us(us):
    if us is None:
        return "-"
    if us >= 1000:
        return "{:.2f} ms".format(us / 1000)
    return "{:.0f} us".format(us)


def run(args, parser):
    for name, low in (("bench_pubs", 1), ("bench_subs", 0), ("msgs", 1), ("size", 0),
                      ("batch", 0), ("rate", 0)):
        if getattr(args, name) < low:
            parser.error("bench: --{} must be at least {}".format(
                name.replace("bench_", ""), low))
    if args.bench_pubs > args.msgs:
        parser.error("bench: more publishers than messages")
    try:
        validate_subject(args.subject)
    except ValueError as exc:
        parser.error("bench: {}".format(exc))
    return network_command(args, _bench_main)


