"""Tail a file-backed log from another process (``Log.open_reader``, a
``TailReader``): one-way latency and throughput, against IPC peers run in
the same script.

Every row runs a writer process and a reader process, pinned to two
different cores (``--cores``, default 0 and 1), forked from this script;
the log lives in ``--dir`` (default: a temporary directory on /dev/shm, a
tmpfs, when it exists, as a trading desk would put it).  Sections:

1. one-way latency: the writer sends one event every 10 us (100 k/s,
   ``--rate``; it busy-waits until each send time) carrying its
   ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, one clock for all
   processes) in the first 8 bytes of a 16- or 100-byte payload; the reader
   takes the clock as soon as it has the event and keeps now - stamp.
   p50 / p90 / p99 / p99.9 / max in us over the samples of all runs of a
   row pooled (each run after a warm-up of ``--warmup`` events).  Rows:

   * fastflow: ``log.append(subject, data)`` in the writer
     (``Log(path=dir, fsync="never", segment_size=64 MiB)``) and
     ``reader.read_into(buf, limit=1, timeout=None)`` in the reader, with
     ``wait="spin"`` (also with the writer's hash chain off,
     ``chain=False``), ``"yield"``, and ``"block"`` with the writer opened
     ``notify=True`` (default ``spin``, and ``spin=0``: asleep on the futex
     at once); goals for ``"spin"``: p50 <= 1 us, p99 <= 5 us;
   * pyzmq ``ipc://`` PUSH/PULL, blocking ``recv()`` (libzmq's I/O threads
     of both sides on the reader's core, ``--zmq-io``); with ``--rows``
     ``zmq-poll`` also a busy loop of ``recv(NOBLOCK)`` (four threads that
     want a core, on two: not run by default);
   * a ``multiprocessing`` Pipe: ``send_bytes`` / blocking ``recv_bytes()``,
     and a busy loop of ``poll()`` before ``recv_bytes()``;
   * ``fastflow serve`` (one server process for the whole script) with
     ``fastflow.client``: ``publish()`` + ``await asyncio.sleep(0)`` (the
     loop tick that writes it) in the publisher, a ``raw=True``
     subscription in the subscriber.

2. throughput: the writer appends 16-byte events with
   ``append_batch(subject, 1,024 payloads)`` as fast as it can (with the
   hash chain, a file-backed log's default, and with ``chain=False``) while the
   reader ``read_into()``s a 4 MiB buffer with ``limit=65536`` (``timeout=0``,
   then ``wait()`` when it found nothing): events/s read (from the writer's
   first append to the reader's last event; goal >= 20 M/s), the writer's
   own rate, and what the reader's calls that returned events took; then a
   reader alone over the finished log (``--cold-events``, default
   10,000,000: a cold read, fresh maps); for scale, pyzmq
   ``send_multipart(1,024 x 16 B)`` -> ``recv_multipart()`` and a Pipe
   carrying the same events as 16 KiB blocks (``send_bytes`` ->
   ``recv_bytes_into``: no framing per event, an upper bound for a pipe).

3. floors: what one call costs in one process (pinned to the reader's
   core): the clock read, the payload's ``pack``, ``append`` (chain on and
   off), ``read_into(limit=1)`` of a record that is there, as a mean and
   one call at a time (p50 ... max); the sum of the parts on the path of an
   event, against the measured p50, leaves the hand-over between the
   cores.  And the machine's jitter: a busy loop reading the clock on both
   cores at once, every pause longer than 5 us counted (the scheduler
   tick, interrupts, other tasks, the hypervisor): the share of events that
   meet a pause bounds what p99 can be here.

Runs of all latency rows are interleaved (run 1 of every row, then run 2,
...), as are the throughput rows; gc is off in the timed processes.  Each
row also reports the late sends (the writer more than one interval behind
its schedule: the timestamp is the actual send time, so the latency of a
late event does not include the lateness), the reader's CPU use and
preemptions, the minor page faults per event on both sides, and the CPU
that other processes took meanwhile.  ``--json`` writes every figure as
one JSON document to stdout (the report goes to stderr); ``--quick`` is a
smoke run (about 15 s); the full run takes about 3 minutes and writes up to
1 GB of log at a time in ``--dir``.
"""

import argparse
import array
import gc
import math
import multiprocessing as mp
import os
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from _common import (Interrupted, add_output_args, choices_arg, cpu_facts, fastflow_facts,
                     fmt_rate, fmt_ratio, machine_format_fields, on_signal, python_desc,
                     read_text, render_table, report_to, say, wrap, write_json)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

SUBJECT = "md.xnas.AAPL"
SERVE_SUBJECT = "bench.tail.lat"
SEGMENT = 64 << 20
STAMP = struct.Struct("<q")

TARGET_P50_NS = 1_000  # wait="spin", one-way p50
TARGET_P99_NS = 5_000  # wait="spin", one-way p99
TARGET_READ = 20e6  # events/s read, tailing and cold

JITTER_NS = 5_000  # a gap in a busy clock-read loop longer than this is a pause

FULL = dict(events=100_000, warmup=20_000, repeat=3, tput_events=10_000_000,
            cold_events=10_000_000, tput_repeat=3, floor_n=200_000, jitter_s=2.0)
QUICK = dict(events=10_000, warmup=2_000, repeat=2, tput_events=1_000_000,
             cold_events=1_000_000, tput_repeat=1, floor_n=50_000, jitter_s=0.5)

# The latency rows: key, label, kind, options; "cls" says which fastflow row
# is its like (a busy reader: "spin"; one that sleeps in the kernel: "block").
LAT_ROWS = [
    dict(key="tail-spin", label='fastflow tail, wait="spin"', kind="tail", wait="spin",
         cls="spin"),
    dict(key="tail-nochain", label='fastflow tail, wait="spin", writer chain=False',
         kind="tail", wait="spin", chain=False, cls="spin"),
    dict(key="tail-yield", label='fastflow tail, wait="yield" (spin=20000 rounds)', kind="tail",
         wait="yield", cls="spin"),
    dict(key="tail-block", label='fastflow tail, wait="block" (spin=2000), notify=True',
         kind="tail", wait="block", notify=True, cls="block"),
    dict(key="tail-block0", label='fastflow tail, wait="block", spin=0, notify=True',
         kind="tail", wait="block", spin=0, notify=True, cls="block"),
    dict(key="zmq", label="pyzmq ipc PUSH/PULL, recv()", kind="zmq", poll=False,
         cls="block"),
    dict(key="zmq-poll", label="pyzmq ipc PUSH/PULL, busy recv(NOBLOCK)", kind="zmq", poll=True,
         cls="spin"),
    dict(key="pipe", label="mp Pipe, send_bytes -> recv_bytes()", kind="pipe", poll=False,
         cls="block"),
    dict(key="pipe-poll", label="mp Pipe, busy poll() + recv_bytes()", kind="pipe", poll=True,
         cls="spin"),
    dict(key="serve", label="fastflow serve + fastflow.client (raw sub)", kind="serve",
         cls="block"),
]
LAT_KEYS = [r["key"] for r in LAT_ROWS]
# zmq-poll: a busy reader plus libzmq's I/O threads is four threads that want
# a core, on two: its figures say more about the scheduler than about zmq
LAT_DEFAULT = [k for k in LAT_KEYS if k != "zmq-poll"]
TPUT_ROWS = ("tail", "tail-nochain", "tail-behind", "zmq", "pipe")

CTX = mp.get_context("fork")


# =============================================================================
# The child processes (forked): a writer and a reader per run.  Each one gets
# a Connection to the script: it sends {"ready": ...} once set up, the writer
# waits for "go", and both send one result dict (or {"error": ...}).
# =============================================================================

def set_pdeathsig():
    """Die with the parent (Linux): a child never outlives the script."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child_main(target, conn, core, args):
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the script stops its children
    set_pdeathsig()
    if core is not None:
        os.sched_setaffinity(0, {core})
    gc.collect()
    gc.disable()
    try:
        target(conn, *args)
    except BaseException as exc:
        try:
            conn.send({"error": "{}: {}".format(type(exc).__name__, exc)})
        except Exception:
            pass
    finally:
        conn.close()


def usage_mark():
    return (time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF))


def usage_since(m):
    wall0, cpu0, u0 = m
    u1 = resource.getrusage(resource.RUSAGE_SELF)
    return dict(wall_s=time.perf_counter() - wall0, cpu_s=time.process_time() - cpu0,
                minflt=u1.ru_minflt - u0.ru_minflt, nivcsw=u1.ru_nivcsw - u0.ru_nivcsw,
                nvcsw=u1.ru_nvcsw - u0.ru_nvcsw)


def send_ready(conn):
    """Set up: tell the script (with this process's CPU time so far)."""
    conn.send({"ready": True, "cpu": time.process_time()})


def send_result(conn, res):
    """The result, with this process's CPU time so far."""
    res["cpu_end"] = time.process_time()
    conn.send(res)


def wait_go(conn, timeout=60):
    if not conn.poll(timeout):
        raise RuntimeError("no go from the script in {} s".format(timeout))
    conn.recv()


def stamp_packer(size):
    """pack(ts) -> ``size`` bytes: the stamp, then zeros."""
    return struct.Struct("<q{}x".format(size - 8)).pack


# -- paced senders: busy-wait until each send time, stamp, send --------------------
# (two of them, so that nothing runs between the clock read and the send call)

def paced2(fn, arg, pack, total, interval):
    """fn(arg, pack(now)) ``total`` times, one every ``interval`` ns; returns
    (late sends, worst lateness in ns)."""
    pc = time.perf_counter_ns
    late = worst = 0
    t = pc() + interval
    for _ in range(total):
        now = pc()
        while now < t:
            now = pc()
        if now - t > interval:
            late += 1
            if now - t > worst:
                worst = now - t
        fn(arg, pack(pc()))
        t += interval
    return late, worst


def paced1(fn, pack, total, interval):
    """fn(pack(now)), as ``paced2``."""
    pc = time.perf_counter_ns
    late = worst = 0
    t = pc() + interval
    for _ in range(total):
        now = pc()
        while now < t:
            now = pc()
        if now - t > interval:
            late += 1
            if now - t > worst:
                worst = now - t
        fn(pack(pc()))
        t += interval
    return late, worst


def writer_result(m, late, worst, total):
    u = usage_since(m)
    return dict(u, late=late, worst_late_ns=worst, sent=total)


# -- latency: fastflow tail ------------------------------------------------------------

def w_tail(conn, spec):
    from fastflow._core import Log

    kw = dict(path=spec["dir"], fsync="never", segment_size=SEGMENT,
              notify=bool(spec.get("notify")))
    if spec.get("chain") is False:
        kw["chain"] = False
    log = Log(**kw)
    send_ready(conn)
    wait_go(conn)
    m = usage_mark()
    late, worst = paced2(log.append, SUBJECT, stamp_packer(spec["size"]), spec["total"],
                         spec["interval"])
    res = writer_result(m, late, worst, spec["total"])
    res["last_seq"] = log.last_seq
    log.close()
    send_result(conn, res)


def r_tail(conn, spec):
    from fastflow._core import Log

    r = Log.open_reader(spec["dir"], start="first", wait=spec["wait"], spin=spec.get("spin"))
    if not r.attached:
        raise RuntimeError("the reader did not attach to {}".format(spec["dir"]))
    buf = bytearray(max(4096, spec["size"]))
    n, warm = spec["total"] - spec["warmup"], spec["warmup"]
    lat = array.array("q", bytes(8 * n))
    ri, pc, unpack = r.read_into, time.perf_counter_ns, STAMP.unpack_from
    send_ready(conn)
    for _ in range(warm):
        ri(buf, 1, None)
    m = usage_mark()
    for i in range(n):
        ri(buf, 1, None)
        now = pc()
        lat[i] = now - unpack(buf)[0]
    res = usage_since(m)
    res.update(lat=lat.tobytes(), stats=r.stats())
    r.close()
    send_result(conn, res)


# -- latency: pyzmq ---------------------------------------------------------------------

def pin_main_thread(core):
    """Pin the calling thread only (Linux: sched_setaffinity(0) is per thread):
    libzmq's threads (I/O, reaper), started with the first socket, keep the
    cores of ``zmq_context``."""
    if core is not None:
        os.sched_setaffinity(0, {core})


def zmq_context(spec):
    """A context whose I/O and reaper threads run on spec["io_core"] (None:
    any core): ZMQ_THREAD_AFFINITY_CPU_ADD, set before its first socket."""
    import zmq

    ctx = zmq.Context()
    if spec.get("io_core") is not None and hasattr(zmq, "THREAD_AFFINITY_CPU_ADD"):
        ctx.set(zmq.THREAD_AFFINITY_CPU_ADD, spec["io_core"])
    return ctx


def w_zmq(conn, spec):
    # The PUSH binds and the PULL connects: the reader starts second, and a
    # PUSH that connected before its PULL was bound would retry only after
    # ZMQ_RECONNECT_IVL (100 ms).  A PUSH without a peer blocks in send.
    import zmq

    ctx = zmq_context(spec)
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, -1)  # close() keeps what the reader has not taken yet
    s.bind(spec["endpoint"])
    pin_main_thread(spec["wcore"])
    send_ready(conn)
    wait_go(conn)
    m = usage_mark()
    late, worst = paced1(s.send, stamp_packer(spec["size"]), spec["total"], spec["interval"])
    send_result(conn, writer_result(m, late, worst, spec["total"]))
    s.close()
    ctx.term()  # until the reader has every message (the script stops this process after)


def r_zmq(conn, spec):
    import zmq

    ctx = zmq_context(spec)
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(spec["endpoint"])
    pin_main_thread(spec["rcore"])
    n, warm = spec["total"] - spec["warmup"], spec["warmup"]
    lat = array.array("q", bytes(8 * n))
    recv, pc, unpack = s.recv, time.perf_counter_ns, STAMP.unpack_from
    send_ready(conn)
    if spec["poll"]:
        NB, Again = zmq.NOBLOCK, zmq.Again
        for _ in range(warm):
            while True:
                try:
                    recv(NB)
                    break
                except Again:
                    pass
        m = usage_mark()
        for i in range(n):
            while True:
                try:
                    msg = recv(NB)
                    break
                except Again:
                    pass
            now = pc()
            lat[i] = now - unpack(msg)[0]
    else:
        for _ in range(warm):
            recv()
        m = usage_mark()
        for i in range(n):
            msg = recv()
            now = pc()
            lat[i] = now - unpack(msg)[0]
    res = usage_since(m)
    res["lat"] = lat.tobytes()
    s.close()
    ctx.term()
    send_result(conn, res)


# -- latency: multiprocessing Pipe --------------------------------------------------------

def w_pipe(conn, spec, wend, rend):
    rend.close()
    send_ready(conn)
    wait_go(conn)
    m = usage_mark()
    late, worst = paced1(wend.send_bytes, stamp_packer(spec["size"]), spec["total"],
                         spec["interval"])
    res = writer_result(m, late, worst, spec["total"])
    wend.close()
    send_result(conn, res)


def r_pipe(conn, spec, wend, rend):
    wend.close()
    n, warm = spec["total"] - spec["warmup"], spec["warmup"]
    lat = array.array("q", bytes(8 * n))
    recv, poll, pc, unpack = rend.recv_bytes, rend.poll, time.perf_counter_ns, STAMP.unpack_from
    send_ready(conn)
    for _ in range(warm):
        recv()
    m = usage_mark()
    if spec["poll"]:
        for i in range(n):
            while not poll():
                pass
            msg = recv()
            now = pc()
            lat[i] = now - unpack(msg)[0]
    else:
        for i in range(n):
            msg = recv()
            now = pc()
            lat[i] = now - unpack(msg)[0]
    res = usage_since(m)
    res["lat"] = lat.tobytes()
    rend.close()
    send_result(conn, res)


# -- latency: fastflow serve + fastflow.client ---------------------------------------------

def run_loop(coro):
    try:
        import uvloop
    except ImportError:
        uvloop = None
    import asyncio

    if uvloop is not None:
        return uvloop.run(coro)
    return asyncio.run(coro)


async def _ff_connect(spec, role):
    from fastflow import client as ffc

    return await ffc.connect(spec["url"], name="bench_tail-" + role, reconnect=False,
                             timeout=10, ping_interval=0)


def w_serve(conn, spec):
    async def main():
        import asyncio

        c = await _ff_connect(spec, "pub")
        await c.flush(10)
        send_ready(conn)
        wait_go(conn)
        publish, sleep0 = c.publish, asyncio.sleep
        pack, subj = stamp_packer(spec["size"]), SERVE_SUBJECT
        pc = time.perf_counter_ns
        interval, total = spec["interval"], spec["total"]
        late = worst = 0
        m = usage_mark()
        t = pc() + interval
        for _ in range(total):
            now = pc()
            while now < t:
                now = pc()
            if now - t > interval:
                late += 1
                if now - t > worst:
                    worst = now - t
            publish(subj, pack(pc()))
            await sleep0(0)  # the loop tick: the client writes the frame now
            t += interval
        res = writer_result(m, late, worst, total)
        await c.flush(10)
        await c.close()
        return res

    send_result(conn, run_loop(main()))


def r_serve(conn, spec):
    async def main():
        import asyncio

        c = await _ff_connect(spec, "sub")
        n, warm, total = spec["total"] - spec["warmup"], spec["warmup"], spec["total"]
        lat = array.array("q", bytes(8 * n))
        pc, unpack = time.perf_counter_ns, STAMP.unpack_from
        done = asyncio.get_running_loop().create_future()
        st = [0, None]

        def on_msg(subject, reply, data):
            now = pc()
            k = st[0]
            st[0] = k + 1
            if k >= warm:
                lat[k - warm] = now - unpack(data)[0]
            elif k == warm - 1:
                st[1] = usage_mark()
            if k + 1 == total and not done.done():
                done.set_result(None)

        c.subscribe(SERVE_SUBJECT, on_msg, raw=True)
        await c.flush(10)
        send_ready(conn)
        await asyncio.wait_for(done, spec["timeout"])
        res = usage_since(st[1]) if st[1] else {}
        res["lat"] = lat.tobytes()
        await c.close()
        return res

    send_result(conn, run_loop(main()))


# -- throughput ---------------------------------------------------------------------------

def tput_payloads(batch, seed=2026):
    rnd = random.Random(seed)
    return [rnd.randbytes(16) for _ in range(batch)]


def w_tput_tail(conn, spec):
    from fastflow._core import Log

    kw = dict(path=spec["dir"], fsync="never", segment_size=SEGMENT)
    if spec.get("chain") is False:
        kw["chain"] = False
    log = Log(**kw)
    payloads = tput_payloads(spec["batch"])
    send_ready(conn)
    wait_go(conn)
    app = log.append_batch
    m = usage_mark()
    t0 = time.perf_counter_ns()
    for _ in range(spec["total"] // spec["batch"]):
        app(SUBJECT, payloads)
    t1 = time.perf_counter_ns()
    res = usage_since(m)
    res.update(start_ns=t0, end_ns=t1, last_seq=log.last_seq)
    log.close()
    send_result(conn, res)


def tail_drain(r, buf, limit, total, timeout):
    """read_into(timeout=0) until ``total`` events, wait() when there was
    nothing; returns (events, calls with events, ns in those calls, first and
    last event's ns)."""
    ri, wait, pc = r.read_into, r.wait, time.perf_counter_ns
    got = calls = busy = 0
    first = last = None
    deadline = time.monotonic() + timeout
    while got < total:
        t0 = pc()
        n, _nxt, _offs = ri(buf, limit, 0.0)
        if n:
            t1 = pc()
            busy += t1 - t0
            got += n
            calls += 1
            last = t1
            if first is None:
                first = t0
        elif not wait(min(1.0, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
    return got, calls, busy, first, last


def r_tput_tail(conn, spec):
    from fastflow._core import Log

    r = Log.open_reader(spec["dir"], start="first", wait="spin")
    buf = bytearray(spec["buf"])
    send_ready(conn)
    if spec.get("delay"):
        # behind: the writer appends meanwhile; the reader catches up while it
        # goes on (its reads then run at the reader's own speed)
        time.sleep(spec["delay"])
    m = usage_mark()
    t_catch = time.perf_counter_ns()
    backlog = r.lag
    got, calls, busy, first, last = tail_drain(r, buf, spec["limit"], backlog,
                                               spec["timeout"]) if spec.get("delay") else \
        (0, 0, 0, None, None)
    catch_ns = time.perf_counter_ns() - t_catch
    g2, c2, b2, f2, l2 = tail_drain(r, buf, spec["limit"], spec["total"] - got, spec["timeout"])
    got, calls, busy = got + g2, calls + c2, busy + b2
    first = first if first is not None else f2
    last = l2 if l2 is not None else last
    res = usage_since(m)
    res.update(got=got, calls=calls, busy_ns=busy, first_ns=first, last_ns=last,
               stats=r.stats(), backlog=backlog if spec.get("delay") else 0,
               catch_ns=catch_ns if spec.get("delay") else 0)
    r.close()
    send_result(conn, res)


def r_cold_tail(conn, spec):
    from fastflow._core import Log

    buf = bytearray(spec["buf"])
    send_ready(conn)
    m = usage_mark()
    t0 = time.perf_counter_ns()
    r = Log.open_reader(spec["dir"], start="first", wait="spin")
    got, calls, busy, first, last = tail_drain(r, buf, spec["limit"], spec["total"],
                                               spec["timeout"])
    t1 = time.perf_counter_ns()
    res = usage_since(m)
    res.update(got=got, calls=calls, busy_ns=busy, start_ns=t0, end_ns=t1, stats=r.stats())
    r.close()
    send_result(conn, res)


def w_tput_zmq(conn, spec):
    import zmq

    ctx = zmq_context(spec)
    s = ctx.socket(zmq.PUSH)
    s.setsockopt(zmq.LINGER, -1)
    s.bind(spec["endpoint"])
    pin_main_thread(spec["wcore"])
    frames = tput_payloads(spec["batch"])
    send_ready(conn)
    wait_go(conn)
    send = s.send_multipart
    m = usage_mark()
    t0 = time.perf_counter_ns()
    for _ in range(spec["total"] // spec["batch"]):
        send(frames)
    t1 = time.perf_counter_ns()
    res = usage_since(m)
    res.update(start_ns=t0, end_ns=t1)
    send_result(conn, res)
    s.close()
    ctx.term()


def r_tput_zmq(conn, spec):
    import zmq

    ctx = zmq_context(spec)
    s = ctx.socket(zmq.PULL)
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.RCVTIMEO, int(spec["timeout"] * 1000))
    s.connect(spec["endpoint"])
    pin_main_thread(spec["rcore"])
    recv = s.recv_multipart
    send_ready(conn)
    m = usage_mark()
    got = calls = 0
    first = None
    pc = time.perf_counter_ns
    while got < spec["total"]:
        try:
            frames = recv()
        except zmq.Again:
            break
        if first is None:
            first = pc()
        got += len(frames)
        calls += 1
    last = pc()
    res = usage_since(m)
    res.update(got=got, calls=calls, first_ns=first, last_ns=last)
    s.close()
    ctx.term()
    send_result(conn, res)


def w_tput_pipe(conn, spec, wend, rend):
    rend.close()
    block = b"".join(tput_payloads(spec["batch"]))
    send_ready(conn)
    wait_go(conn)
    send = wend.send_bytes
    m = usage_mark()
    t0 = time.perf_counter_ns()
    for _ in range(spec["total"] // spec["batch"]):
        send(block)
    t1 = time.perf_counter_ns()
    res = usage_since(m)
    res.update(start_ns=t0, end_ns=t1)
    wend.close()
    send_result(conn, res)


def r_tput_pipe(conn, spec, wend, rend):
    wend.close()
    buf = bytearray(16 * spec["batch"])
    recv, poll, pc = rend.recv_bytes_into, rend.poll, time.perf_counter_ns
    send_ready(conn)
    m = usage_mark()
    got = calls = 0
    first = None
    while got < spec["total"]:
        if not poll(spec["timeout"]):
            break
        nb = recv(buf)
        if first is None:
            first = pc()
        got += nb // 16
        calls += 1
    last = pc()
    res = usage_since(m)
    res.update(got=got, calls=calls, first_ns=first, last_ns=last)
    rend.close()
    send_result(conn, res)


# -- floors: one call's cost, in one process -------------------------------------------------

def floors_child(conn, spec):
    """The cost of one call of each step on an event's path, in one process:
    the best (least) of 3 timed loops of ``n`` calls, less an empty loop."""
    from fastflow._core import Log

    try:
        import numpy as np
    except ImportError:
        np = None
    n = spec["n"]
    pc = time.perf_counter_ns
    rng = range(n)
    minflt = resource.getrusage
    out = {}

    def best_of(loop, rounds=3):
        """(least ns per call, minor faults per 1,000 calls in that round)."""
        best = None
        for _ in range(rounds):
            f0 = minflt(resource.RUSAGE_SELF).ru_minflt
            dt = loop()
            f1 = minflt(resource.RUSAGE_SELF).ru_minflt
            if best is None or dt < best[0]:
                best = (dt, (f1 - f0) * 1000 / n)
        return best

    def empty():
        t0 = pc()
        for _ in rng:
            pass
        return pc() - t0

    def clock():
        t0 = pc()
        for _ in rng:
            pc()
        return pc() - t0

    def net(loop):
        dt, faults = best_of(loop)
        return max(0.0, (dt - base) / n), faults

    base = best_of(empty)[0]
    out["empty_loop_ns"] = base / n
    out["clock_ns"] = net(clock)[0]
    for size in spec["sizes"]:
        pack = stamp_packer(size)
        data = pack(1234)

        def packing(pack=pack):  # (defaults: bound now, and locals)
            t0 = pc()
            for _ in rng:
                pack(1234)
            return pc() - t0

        def unpacking(data=data):
            unpack = STAMP.unpack_from
            t0 = pc()
            for _ in rng:
                unpack(data)[0]
            return pc() - t0

        out["pack_ns_{}".format(size)] = net(packing)[0]
        out["unpack_ns"] = net(unpacking)[0]
        for chain in (None, False):
            tag = "{}_{}".format("nochain" if chain is False else "chain", size)
            d = os.path.join(spec["dir"], "floor-" + tag)
            kw = dict(path=d, fsync="never", segment_size=SEGMENT)
            if chain is False:
                kw["chain"] = False
            log = Log(**kw)
            app = log.append
            for _ in range(2000):
                app(SUBJECT, data)

            def appending(app=app, data=data):
                t0 = pc()
                for _ in rng:
                    app(SUBJECT, data)
                return pc() - t0

            out["append_ns_" + tag], out["append_faults_per_1k_" + tag] = net(appending)

            def append_each(app=app, data=data):
                lat = array.array("q", bytes(8 * n))
                for i in rng:
                    t0 = pc()
                    app(SUBJECT, data)
                    lat[i] = pc() - t0
                return lat

            out["append_dist_" + tag] = percentiles(append_each().tobytes(), np)
            if chain is None:
                # a reader of the 3n + 2,000 records there, one per call
                r = Log.open_reader(d, start="first", wait="spin")
                buf = bytearray(4096)
                ri = r.read_into
                for _ in range(2000):
                    ri(buf, 1, None)

                def reading(ri=ri, buf=buf):
                    t0 = pc()
                    for _ in rng:
                        ri(buf, 1, None)
                    return pc() - t0

                (out["read_into_ns_{}".format(size)],
                 out["read_faults_per_1k_{}".format(size)]) = net(reading)
                lat = array.array("q", bytes(8 * n))
                for i in rng:  # the n records append_each added, one call each timed
                    t0 = pc()
                    ri(buf, 1, None)
                    lat[i] = pc() - t0
                out["read_dist_{}".format(size)] = percentiles(lat.tobytes(), np)
                r.close()
            log.close()
            shutil.rmtree(d, ignore_errors=True)
    conn.send(out)


def jitter_child(conn, spec):
    """A busy loop reading the clock for spec["seconds"]: every gap between
    two reads longer than spec["threshold_ns"] is time this core did not
    give the process (an interrupt, the scheduler tick, another task, the
    hypervisor)."""
    pc = time.perf_counter_ns
    thr = spec["threshold_ns"]
    gaps = array.array("q")
    at = array.array("q")
    send_ready(conn)
    wait_go(conn)
    u = usage_mark()
    start = prev = pc()
    end = start + int(spec["seconds"] * 1e9)
    while prev < end:
        now = pc()
        if now - prev > thr:
            gaps.append(now - prev)
            at.append(now - start)
        prev = now
    res = usage_since(u)
    res.update(gaps=gaps.tobytes(), at=at.tobytes(), seconds=(prev - start) / 1e9)
    send_result(conn, res)


# =============================================================================
# The script
# =============================================================================

class Proc:
    """A forked child with a Connection to it."""

    ALL = []

    def __init__(self, name, target, args, core):
        self.name = name
        self.conn, child = CTX.Pipe()
        self.p = CTX.Process(target=_child_main, args=(target, child, core, args), name=name,
                             daemon=True)
        self.p.start()
        child.close()
        Proc.ALL.append(self)

    def recv(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0 or not self.conn.poll(left):
            raise RuntimeError("{}: no {} in time".format(self.name, what))
        try:
            msg = self.conn.recv()
        except EOFError:
            self.p.join(2)
            raise RuntimeError("{}: exited (code {}) before its {}".format(
                self.name, self.p.exitcode, what)) from None
        if isinstance(msg, dict) and "error" in msg:
            raise RuntimeError("{}: {}".format(self.name, msg["error"]))
        return msg

    def send(self, obj):
        self.conn.send(obj)

    def stop(self, grace=2.0):
        self.p.join(grace)
        if self.p.is_alive():
            self.p.terminate()
            self.p.join(3)
        if self.p.is_alive():
            self.p.kill()
            self.p.join(3)
        self.conn.close()
        if self in Proc.ALL:
            Proc.ALL.remove(self)

    @classmethod
    def stop_all(cls):
        for p in list(cls.ALL):
            p.stop(grace=0.5)


def system_busy_s():
    """CPU seconds (all cores) the machine spent not idle so far, from /proc/stat."""
    line = (read_text("/proc/stat") or "").splitlines()[:1]
    if not line or not line[0].startswith("cpu "):
        return None
    f = [int(x) for x in line[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    stat = read_text("/proc/{}/stat".format(pid))
    if not stat:
        return None
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m fastflow serve`` on a free loopback port, pinned to ``core``."""

    def __init__(self, workdir, core):
        self.port = free_port()
        self.url = "fastflow://127.0.0.1:{}".format(self.port)
        self.errlog = os.path.join(workdir, "serve.log")
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                    else "")
        self.f = open(self.errlog, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve", "--port", str(self.port),
             "--monitor-port", "0", "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=self.f, stderr=subprocess.STDOUT, cwd=workdir,
            env=env)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("fastflow serve exited with {}: {}".format(
                    self.proc.returncode, self.tail()))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("fastflow serve is not listening after 20 s") from None
                time.sleep(0.05)
        if core is not None:
            try:
                os.sched_setaffinity(self.proc.pid, {core})
            except OSError:
                pass

    def tail(self, n=400):
        try:
            with open(self.errlog, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.f.close()


def run_pair(name, wtarget, rtarget, wargs, rargs, wcore, rcore, timeout, server=None):
    """Writer first (set up, ready), then the reader (ready), then go: the
    two results and the machine's CPU meanwhile."""
    deadline = time.monotonic() + timeout
    w = r = None
    try:
        w = Proc(name + " writer", wtarget, wargs, wcore)
        wready = w.recv(time.monotonic() + 30, "ready")
        r = Proc(name + " reader", rtarget, rargs, rcore)
        rready = r.recv(time.monotonic() + 30, "ready")
        busy0, t0 = system_busy_s(), time.monotonic()
        srv0 = server.cpu_s() if server else None
        w.send("go")
        wres = w.recv(deadline, "result")
        rres = r.recv(max(deadline, time.monotonic() + 10), "result")
        busy1, t1 = system_busy_s(), time.monotonic()
        srv1 = server.cpu_s() if server else None
    finally:
        for p in (r, w):
            if p is not None:
                p.stop()
    # the two processes' CPU from their ready to their result (warm-up included)
    ours = (wres["cpu_end"] - wready["cpu"]) + (rres["cpu_end"] - rready["cpu"]) + (
        (srv1 - srv0) if server and srv0 is not None and srv1 is not None else 0)
    other = None
    if busy0 is not None and busy1 is not None and t1 > t0:
        other = max(0.0, (busy1 - busy0) - ours) / (t1 - t0)
    return wres, rres, dict(wall_s=t1 - t0, other_cores=other,
                            server_cpu_s=(srv1 - srv0) if server and srv0 is not None
                            and srv1 is not None else None)


# -- percentiles ---------------------------------------------------------------------------

def percentiles(samples, np):
    """Nearest-rank p50 ... p99.9, max, min and mean of int64 ns ``samples`` (bytes)."""
    if np is not None:
        a = np.frombuffer(samples, dtype=np.int64).copy()
        a.sort()
        n = len(a)
        mean = float(a.mean()) if n else None
    else:
        a = sorted(array.array("q", samples))
        n = len(a)
        mean = sum(a) / n if n else None
    if not n:
        return None

    def at(p):
        return int(a[min(n - 1, max(0, math.ceil(p / 100.0 * n) - 1))])

    return {"n": n, "min": int(a[0]), "p50": at(50), "p90": at(90), "p99": at(99),
            "p99.9": at(99.9), "max": int(a[-1]), "mean": mean}


def fmt_us(ns):
    if ns is None:
        return "-"
    us = ns / 1000.0
    if us < 10:
        return "{:.2f}".format(us)
    if us < 1000:
        return "{:.1f}".format(us)
    return "{:,.0f}".format(us)


# -- the sections --------------------------------------------------------------------------

class Bench:
    def __init__(self, args, cfg, np):
        self.args, self.cfg, self.np = args, cfg, np
        self.wcore, self.rcore = args.cores
        self.server = None
        self.server_dir = None
        self.lat = {}  # (key, size) -> {"runs": [...], "samples": bytearray}
        self.tput = {}  # key -> [run dicts]
        self.cold = []
        self.floors = None
        self.jitter = None
        self.skipped = {}
        self.errors = []
        self.facts = {}

    def zmq_io_core(self):
        return {"reader": self.rcore, "writer": self.wcore, "free": None}[self.args.zmq_io]

    def tmpdir(self, prefix):
        return tempfile.mkdtemp(prefix="fastflow-bench-tail-" + prefix, dir=self.args.dir)

    # latency ----------------------------------------------------------------------------

    def lat_run(self, row, size):
        cfg, args = self.cfg, self.args
        total = cfg["warmup"] + cfg["events"]
        interval = int(round(1e9 / args.rate))
        spec = dict(size=size, total=total, warmup=cfg["warmup"], interval=interval)
        timeout = 30 + 3 * total * interval / 1e9
        spec["timeout"] = timeout
        kind = row["kind"]
        d = self.tmpdir(row["key"] + "-")
        try:
            if kind == "tail":
                spec.update(dir=d, wait=row["wait"], spin=row.get("spin"),
                            notify=row.get("notify", False), chain=row.get("chain"))
                return run_pair(row["key"], w_tail, r_tail, (spec,), (spec,), self.wcore,
                                self.rcore, timeout)
            if kind == "zmq":
                # the processes unpinned, their main threads pinned (see pin_main_thread)
                spec.update(endpoint="ipc://" + os.path.join(d, "zmq.sock"), poll=row["poll"],
                            wcore=self.wcore, rcore=self.rcore, io_core=self.zmq_io_core())
                return run_pair(row["key"], w_zmq, r_zmq, (spec,), (spec,), None, None,
                                timeout)
            if kind == "pipe":
                spec.update(poll=row["poll"])
                rend, wend = CTX.Pipe(duplex=False)
                try:
                    return run_pair(row["key"], w_pipe, r_pipe, (spec, wend, rend),
                                    (spec, wend, rend), self.wcore, self.rcore, timeout)
                finally:
                    rend.close()
                    wend.close()
            if kind == "serve":
                spec.update(url=self.server.url)
                return run_pair(row["key"], w_serve, r_serve, (spec,), (spec,), self.wcore,
                                self.rcore, timeout, server=self.server)
            raise ValueError(kind)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def section_latency(self):
        args, cfg = self.args, self.cfg
        rows = [r for r in LAT_ROWS if r["key"] in args.rows]
        if any(r["kind"] == "zmq" for r in rows):
            try:
                import zmq  # noqa: F401
            except ImportError:
                for r in rows:
                    if r["kind"] == "zmq":
                        self.skipped[r["key"]] = "pyzmq is not installed (pip install pyzmq)"
                rows = [r for r in rows if r["kind"] != "zmq"]
        if any(r["kind"] == "serve" for r in rows):
            try:
                self.server_dir = self.tmpdir("serve-")
                self.server = Server(self.server_dir, self.rcore)
            except Exception as exc:
                self.skipped["serve"] = "fastflow serve did not start: {}".format(exc)
                rows = [r for r in rows if r["kind"] != "serve"]
        total = cfg["warmup"] + cfg["events"]
        say("")
        say(wrap("[latency] {} rows x {} sizes x {} runs, interleaved; each run {:,} events "
                 "({:,} warm-up) at {:,}/s: about {:.0f} s".format(
                     len(rows), len(args.sizes), cfg["repeat"], total, cfg["warmup"], args.rate,
                     len(rows) * len(args.sizes) * cfg["repeat"] * (total / args.rate + 0.4))))
        t_start = time.perf_counter()
        for rep in range(cfg["repeat"]):
            for size in args.sizes:
                for row in rows:
                    slot = self.lat.setdefault((row["key"], size),
                                               {"runs": [], "samples": bytearray()})
                    try:
                        wres, rres, mach = self.lat_run(row, size)
                    except (RuntimeError, OSError) as exc:
                        msg = "{} {} B run {}: {}".format(row["key"], size, rep + 1, exc)
                        self.errors.append(msg)
                        say("  FAILED " + msg)
                        continue
                    lat = rres.pop("lat")
                    p = percentiles(lat, self.np)
                    slot["samples"] += lat
                    slot["runs"].append(dict(writer=wres, reader=rres, machine=mach, pct=p))
                    say("  run {} {:>4} B {:<13} p50 {:>8} us  p99 {:>8} us  max {:>9} us  "
                        "late {:>5}  other CPU {}".format(
                            rep + 1, size, row["key"], fmt_us(p["p50"]) if p else "-",
                            fmt_us(p["p99"]) if p else "-", fmt_us(p["max"]) if p else "-",
                            wres.get("late", "-"),
                            "-" if mach["other_cores"] is None else
                            "{:.2f} cores".format(mach["other_cores"])))
        self.facts["latency_s"] = time.perf_counter() - t_start
        self.stop_server()

    def stop_server(self):
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self.server_dir is not None:
            shutil.rmtree(self.server_dir, ignore_errors=True)
            self.server_dir = None

    # throughput ---------------------------------------------------------------------------

    def tput_run(self, key, keep_dir=False):
        cfg, args = self.cfg, self.args
        total = cfg["tput_events"] // args.batch * args.batch
        timeout = 60 + total / 200_000.0
        spec = dict(total=total, batch=args.batch, buf=args.read_buf, limit=args.read_limit,
                    timeout=timeout)
        d = self.tmpdir("tput-" + key + "-")
        try:
            if key in ("tail", "tail-nochain", "tail-behind"):
                spec.update(dir=d, chain=False if key == "tail-nochain" else None,
                            delay=1.0 if key == "tail-behind" else 0)
                wres, rres, mach = run_pair("tput " + key, w_tput_tail, r_tput_tail, (spec,),
                                            (spec,), self.wcore, self.rcore, timeout)
            elif key == "zmq":
                spec.update(endpoint="ipc://" + os.path.join(d, "zmq.sock"), wcore=self.wcore,
                            rcore=self.rcore, io_core=self.zmq_io_core())
                wres, rres, mach = run_pair("tput zmq", w_tput_zmq, r_tput_zmq, (spec,),
                                            (spec,), None, None, timeout)
            else:
                rend, wend = CTX.Pipe(duplex=False)
                try:
                    wres, rres, mach = run_pair("tput pipe", w_tput_pipe, r_tput_pipe,
                                                (spec, wend, rend), (spec, wend, rend),
                                                self.wcore, self.rcore, timeout)
                finally:
                    rend.close()
                    wend.close()
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        if keep_dir:
            return d, total, wres, rres, mach
        shutil.rmtree(d, ignore_errors=True)
        return None, total, wres, rres, mach

    def cold_run(self, d, total):
        args = self.args
        spec = dict(dir=d, total=total, buf=args.read_buf, limit=args.read_limit,
                    timeout=60 + total / 200_000.0)
        p = Proc("cold reader", r_cold_tail, (spec,), self.rcore)
        try:
            p.recv(time.monotonic() + 30, "ready")
            return p.recv(time.monotonic() + spec["timeout"] + 10, "result")
        finally:
            p.stop()

    def section_tput(self):
        cfg, args = self.cfg, self.args
        keys = [k for k in TPUT_ROWS if k in args.tput_rows]
        if "zmq" in keys:
            try:
                import zmq  # noqa: F401
            except ImportError:
                self.skipped["tput-zmq"] = "pyzmq is not installed"
                keys.remove("zmq")
        say("")
        say(wrap("[throughput] {} rows x {} runs, interleaved; {:,} events of 16 bytes per run; "
                 "then a cold read of {:,} events x {} runs".format(
                     len(keys), cfg["tput_repeat"], cfg["tput_events"], cfg["cold_events"],
                     cfg["tput_repeat"])))
        t_start = time.perf_counter()
        cold_dir = None
        try:
            for rep in range(cfg["tput_repeat"]):
                for key in keys:
                    keep = (key == "tail" and rep == cfg["tput_repeat"] - 1
                            and cfg["cold_events"] == cfg["tput_events"])
                    try:
                        d, total, wres, rres, mach = self.tput_run(key, keep_dir=keep)
                    except (RuntimeError, OSError) as exc:
                        msg = "throughput {} run {}: {}".format(key, rep + 1, exc)
                        self.errors.append(msg)
                        say("  FAILED " + msg)
                        continue
                    if d:
                        cold_dir = d
                    run = self.tput_summary(key, total, wres, rres, mach)
                    self.tput.setdefault(key, []).append(run)
                    say("  run {} {:<5} read {}  writer {}  got {:,}/{:,}{}".format(
                        rep + 1, key, fmt_rate(run["read_rate"]), fmt_rate(run["writer_rate"]),
                        run["got"], total, "" if run["complete"] else "  INCOMPLETE"))
            if args.skip_cold or not cfg["cold_events"]:
                return
            if cold_dir is None:
                # a log of its own for the cold read (not the size of the tailing runs)
                cold_dir = self.tmpdir("cold-")
                self.write_cold_log(cold_dir, cfg["cold_events"])
            total = cfg["cold_events"] // args.batch * args.batch
            for rep in range(cfg["tput_repeat"]):
                try:
                    res = self.cold_run(cold_dir, total)
                except (RuntimeError, OSError) as exc:
                    msg = "cold read run {}: {}".format(rep + 1, exc)
                    self.errors.append(msg)
                    say("  FAILED " + msg)
                    continue
                dt = (res["end_ns"] - res["start_ns"]) / 1e9
                run = dict(got=res["got"], total=total, seconds=dt, rate=res["got"] / dt,
                           busy_rate=res["got"] / (res["busy_ns"] / 1e9) if res["busy_ns"]
                           else None, calls=res["calls"], minflt=res["minflt"],
                           cpu_s=res["cpu_s"], stats=res["stats"], complete=res["got"] == total)
                self.cold.append(run)
                say("  cold read run {}: {:,} events in {:.2f} s = {}{}".format(
                    rep + 1, res["got"], dt, fmt_rate(run["rate"]),
                    "" if run["complete"] else "  INCOMPLETE"))
            self.facts["cold_log_bytes"] = sum(
                os.path.getsize(os.path.join(cold_dir, f)) for f in os.listdir(cold_dir)
                if f.endswith(".seg"))
        finally:
            if cold_dir:
                shutil.rmtree(cold_dir, ignore_errors=True)
            self.facts["tput_s"] = time.perf_counter() - t_start

    def write_cold_log(self, d, total):
        from fastflow._core import Log

        log = Log(path=d, fsync="never", segment_size=SEGMENT)
        payloads = tput_payloads(self.args.batch)
        for _ in range(total // self.args.batch):
            log.append_batch(SUBJECT, payloads)
        log.close()

    @staticmethod
    def tput_summary(key, total, wres, rres, mach):
        wdt = (wres["end_ns"] - wres["start_ns"]) / 1e9
        got = rres["got"]
        last = rres.get("last_ns")
        rdt = (last - wres["start_ns"]) / 1e9 if last else None
        read_rate = got / rdt if rdt else None
        if rres.get("catch_ns"):
            # behind: the backlog over the time to catch up with the live writer
            read_rate = rres["backlog"] / (rres["catch_ns"] / 1e9)
        return dict(key=key, total=total, got=got, complete=got == total,
                    writer_s=wdt, writer_rate=total / wdt if wdt > 0 else None,
                    read_s=rdt, read_rate=read_rate, backlog=rres.get("backlog"),
                    busy_rate=got / (rres["busy_ns"] / 1e9) if rres.get("busy_ns") else None,
                    calls=rres.get("calls"),
                    mean_batch=got / rres["calls"] if rres.get("calls") else None,
                    writer_cpu_s=wres.get("cpu_s"), reader_cpu_s=rres.get("cpu_s"),
                    writer_minflt=wres.get("minflt"), reader_minflt=rres.get("minflt"),
                    reader_nivcsw=rres.get("nivcsw"), writer_nivcsw=wres.get("nivcsw"),
                    other_cores=mach["other_cores"], stats=rres.get("stats"))

    # floors -------------------------------------------------------------------------------

    def section_jitter(self):
        """Both cores at once, as in a latency run: how much of each one's time
        a busy process does not get."""
        spec = dict(seconds=self.cfg["jitter_s"], threshold_ns=JITTER_NS)
        procs = []
        try:
            for name, core in (("writer", self.wcore), ("reader", self.rcore)):
                p = Proc("jitter " + name, jitter_child, (spec,), core)
                procs.append((name, core, p))
                p.recv(time.monotonic() + 30, "ready")
            busy0, t0 = system_busy_s(), time.monotonic()
            for _, _, p in procs:
                p.send("go")
            out = {}
            for name, core, p in procs:
                res = p.recv(time.monotonic() + spec["seconds"] + 30, "result")
                gaps = array.array("q", res.pop("gaps"))
                at = array.array("q", res.pop("at"))
                secs = res["seconds"]
                iv = [b - a for a, b in zip(at, at[1:])]
                out[name] = dict(
                    core=core, seconds=secs, pauses=len(gaps),
                    per_s=len(gaps) / secs if secs else None,
                    lost=sum(gaps) / 1e9 / secs if secs else None,
                    median_ns=statistics.median(gaps) if gaps else None,
                    p99_ns=sorted(gaps)[int(0.99 * (len(gaps) - 1))] if gaps else None,
                    max_ns=max(gaps) if gaps else None,
                    median_interval_ns=statistics.median(iv) if iv else None,
                    nivcsw=res.get("nivcsw"))
            busy1, t1 = system_busy_s(), time.monotonic()
            if busy0 is not None and busy1 is not None and t1 > t0:
                out["other_cores"] = max(0.0, (busy1 - busy0) - sum(
                    out[n]["seconds"] for n in ("writer", "reader"))) / (t1 - t0)
            self.jitter = out
        except (RuntimeError, OSError) as exc:
            self.errors.append("jitter: {}".format(exc))
            say("  FAILED jitter: {}".format(exc))
        finally:
            for _, _, p in procs:
                p.stop()

    def section_floors(self):
        d = self.tmpdir("floors-")
        spec = dict(n=self.cfg["floor_n"], sizes=self.args.sizes, dir=d)
        p = Proc("floors", floors_child, (spec,), self.rcore)
        try:
            self.floors = p.recv(time.monotonic() + 120, "result")
        except (RuntimeError, OSError) as exc:
            self.errors.append("floors: {}".format(exc))
            say("  FAILED floors: {}".format(exc))
        finally:
            p.stop()
            shutil.rmtree(d, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------

def fs_of(path):
    """(mount point, fs type) of the mount holding ``path``."""
    path = os.path.realpath(path)
    best = ("?", "?")
    for line in (read_text("/proc/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt, fstype = parts[1], parts[2]
        if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fstype)
    return best


def kernel_hz():
    """CONFIG_HZ of the running kernel (its scheduler tick), or None."""
    texts = []
    try:
        import gzip

        with gzip.open("/proc/config.gz", "rt") as f:
            texts.append(f.read())
    except (OSError, EOFError):
        pass
    texts.append(read_text("/boot/config-" + platform.release()) or "")
    for text in texts:
        for line in text.splitlines():
            if line.startswith("CONFIG_HZ="):
                try:
                    return int(line.split("=", 1)[1])
                except ValueError:
                    return None
    return None


def machine_facts(args):
    try:
        import zmq

        zv = "pyzmq {} (libzmq {})".format(zmq.__version__, zmq.zmq_version())
    except ImportError:
        zv = None
    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = None
    try:
        import numpy

        npv = numpy.__version__
    except ImportError:
        npv = None
    mnt, fstype = fs_of(args.dir)
    load = read_text("/proc/loadavg")
    clk = time.get_clock_info("perf_counter")
    return {
        **cpu_facts(),
        "python": python_desc(),
        "compiler": platform.python_compiler(),
        "platform": platform.platform(),
        "clocksource": read_text(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "clock": clk.implementation,
        "loadavg": " ".join(load.split()[:3]) if load else None,
        "pyzmq": zv,
        "uvloop": uv,
        "numpy": npv,
        **fastflow_facts(),
        "dir": args.dir,
        "dir_fs": "{} on {}".format(fstype, mnt),
        "tmpfs": fstype == "tmpfs",
        "cores_used": list(args.cores),
        "kernel_hz": kernel_hz(),
    }


def lat_results(bench):
    out = []
    for size in bench.args.sizes:
        for row in LAT_ROWS:
            slot = bench.lat.get((row["key"], size))
            if not slot or not slot["runs"]:
                continue
            runs = slot["runs"]
            p = percentiles(bytes(slot["samples"]), bench.np)
            n_ev = sum(r["writer"]["sent"] for r in runs)
            rd_wall = sum(r["reader"].get("wall_s", 0) for r in runs)
            rd_cpu = sum(r["reader"].get("cpu_s", 0) for r in runs)
            n_meas = sum(r["pct"]["n"] for r in runs if r["pct"])
            others = [r["machine"]["other_cores"] for r in runs
                      if r["machine"]["other_cores"] is not None]
            out.append(dict(
                key=row["key"], label=row["label"], size=size, cls=row["cls"], pooled=p,
                runs=len(runs),
                run_p50=[r["pct"]["p50"] for r in runs if r["pct"]],
                run_p99=[r["pct"]["p99"] for r in runs if r["pct"]],
                late=sum(r["writer"]["late"] for r in runs), sent=n_ev,
                worst_late_ns=max(r["writer"]["worst_late_ns"] for r in runs),
                reader_cpu=rd_cpu / rd_wall if rd_wall else None,
                reader_nivcsw=sum(r["reader"].get("nivcsw", 0) for r in runs),
                writer_nivcsw=sum(r["writer"].get("nivcsw", 0) for r in runs),
                writer_faults_per_1k=sum(r["writer"].get("minflt", 0) for r in runs) * 1000
                / max(1, n_ev),
                reader_faults_per_1k=sum(r["reader"].get("minflt", 0) for r in runs) * 1000
                / max(1, n_meas),
                other_cores=statistics.median(others) if others else None,
                server_cpu=[r["machine"]["server_cpu_s"] for r in runs],
                tail_stats=[r["reader"].get("stats") for r in runs if r["reader"].get("stats")],
            ))
    by = {(x["key"], x["size"]): x for x in out}
    for x in out:
        for ref in ("tail-spin", "tail-block"):
            r = by.get((ref, x["size"]))
            tag = ref.split("-")[1]
            if r and r["pooled"] and x["pooled"]:
                x["vs_" + tag] = {q: x["pooled"][q] / max(1, r["pooled"][q])
                                  for q in ("p50", "p90", "p99", "p99.9")}
            else:
                x["vs_" + tag] = None
    return out, by


def lat_table(results):
    table = []
    last = None
    for x in results:
        if last is not None and x["size"] != last:
            table.append(None)
        last = x["size"]
        p = x["pooled"]
        vs = []
        for tag in ("spin", "block"):
            v = x["vs_" + tag]
            if v is None or x["key"] == "tail-" + tag:
                vs.append("")
            else:
                vs.append("{} / {}".format(fmt_ratio(v["p50"]), fmt_ratio(v["p99"])))
        table.append([
            x["label"], x["size"], fmt_us(p["p50"]), fmt_us(p["p90"]), fmt_us(p["p99"]),
            fmt_us(p["p99.9"]), fmt_us(p["max"]), "{:,}".format(p["n"]),
            "{:.2%}".format(x["late"] / max(1, x["sent"])),
            "-" if x["reader_cpu"] is None else "{:.0%}".format(x["reader_cpu"]),
            "{:.1f}/{:.1f}".format(x["writer_faults_per_1k"], x["reader_faults_per_1k"]),
            "{}/{}".format(x["writer_nivcsw"], x["reader_nivcsw"]),
            "-" if x["other_cores"] is None else "{:.2f}".format(x["other_cores"]),
            vs[0], vs[1],
        ])
    return render_table(
        ["row", "B", "p50", "p90", "p99", "p99.9", "max", "samples", "late", "rdr CPU",
         "faults/1k w/r", "preempt w/r", "other", "x spin p50/p99", "x block p50/p99"],
        table, "<>>>>>>>>>>>>>>")


def tput_results(bench):
    out = {}
    for key, runs in bench.tput.items():
        done = [r for r in runs if r["read_rate"]]
        out[key] = dict(
            runs=runs,
            read_rate=statistics.median(r["read_rate"] for r in done) if done else None,
            read_range=(min(r["read_rate"] for r in done), max(r["read_rate"] for r in done))
            if done else None,
            writer_rate=statistics.median(r["writer_rate"] for r in runs if r["writer_rate"])
            if runs else None,
            busy_rate=statistics.median(r["busy_rate"] for r in runs if r["busy_rate"])
            if any(r["busy_rate"] for r in runs) else None,
            mean_batch=statistics.median(r["mean_batch"] for r in runs if r["mean_batch"])
            if any(r["mean_batch"] for r in runs) else None,
            complete=all(r["complete"] for r in runs),
        )
    if bench.cold:
        out["cold"] = dict(
            runs=bench.cold, read_rate=statistics.median(r["rate"] for r in bench.cold),
            read_range=(min(r["rate"] for r in bench.cold), max(r["rate"] for r in bench.cold)),
            busy_rate=statistics.median(r["busy_rate"] for r in bench.cold if r["busy_rate"])
            if any(r["busy_rate"] for r in bench.cold) else None,
            mean_batch=statistics.median(r["total"] / max(1, r["calls"]) for r in bench.cold),
            complete=all(r["complete"] for r in bench.cold), writer_rate=None)
    return out


TPUT_LABELS = {
    "tail": "fastflow tail, live: append_batch(1,024) -> read_into(4 MiB, limit=65,536)",
    "tail-nochain": "fastflow tail, live, writer chain=False",
    "tail-behind": "fastflow tail, a reader 1 s behind a live writer, catching up",
    "cold": "fastflow tail, cold: a fresh reader over the written log",
    "zmq": "pyzmq ipc, send_multipart(1,024 x 16 B) -> recv_multipart()",
    "pipe": "mp Pipe, send_bytes(16 KiB = 1,024 events) -> recv_bytes_into()",
}


def tput_table(tp, args):
    ff = tp.get("tail")
    table = []
    for key in ("tail", "tail-nochain", "tail-behind", "cold", "zmq", "pipe"):
        x = tp.get(key)
        if not x:
            continue
        rr = x["read_range"]
        vs = ""
        if key in ("zmq", "pipe") and ff and ff["read_rate"] and x["read_rate"]:
            vs = fmt_ratio(ff["read_rate"] / x["read_rate"])
        cold_vs = ""
        if key in ("zmq", "pipe") and tp.get("cold") and x["read_rate"]:
            cold_vs = fmt_ratio(tp["cold"]["read_rate"] / x["read_rate"])
        target = ""
        if key in ("tail", "tail-nochain", "tail-behind", "cold") and x["read_rate"]:
            target = ">= {} {}".format(fmt_rate(TARGET_READ),
                                       "PASS" if x["read_rate"] >= TARGET_READ else "FAIL")
            if x["read_rate"] < TARGET_READ and (x["writer_rate"] or TARGET_READ) < TARGET_READ:
                target += " (writer-bound)"
        table.append([
            TPUT_LABELS[key], fmt_rate(x["read_rate"]),
            "{}-{}".format(fmt_rate(rr[0]), fmt_rate(rr[1])) if rr else "-",
            fmt_rate(x["writer_rate"]), fmt_rate(x["busy_rate"]),
            "-" if x["mean_batch"] is None else "{:,.0f}".format(x["mean_batch"]),
            vs, cold_vs, target + ("" if x["complete"] else " INCOMPLETE"),
        ])
    return render_table(["row", "read", "range", "writer", "in reads", "per read",
                         "tail live vs.", "tail cold vs.", "target"], table, "<>>>>>>><")


def report(bench, machine):
    args, cfg = bench.args, bench.cfg
    lat, by = lat_results(bench)
    tp = tput_results(bench)
    targets = []
    say("")
    if lat:
        say("one-way latency in us, {} runs per row pooled ({:,} events each after {:,} "
            "warm-up), paced at {:,}/s; writer on core {}, reader on core {}{}".format(
                cfg["repeat"], cfg["events"], cfg["warmup"], args.rate, bench.wcore,
                bench.rcore, " [QUICK RUN: indicative only]" if args.quick else ""))
        say(lat_table(lat))
        say(wrap(
            "late: sends more than one interval ({:.0f} us) behind the writer's schedule (the "
            "stamp is the actual send time: their own latency does not include the lateness, "
            "the events behind them queue).  rdr CPU: the reader's CPU time / wall time while "
            "timed.  faults/1k w/r: minor page faults per 1,000 events in the writer and the "
            "reader.  preempt w/r: involuntary context switches while timed.  other: cores "
            "busy outside this benchmark's processes during the runs (median; the machine is "
            "shared).  x spin / x block: this row's p50 and p99 divided by the fastflow "
            "wait=\"spin\" (resp. wait=\"block\") row of the same size: > 1 means fastflow "
            "is that many times lower.  The serve row runs the server pinned to the reader's "
            "core (three processes on two cores), its publisher pays a loop tick per event "
            "(asyncio.sleep(0)) after the stamp.".format(1e6 / args.rate)))
        for size in args.sizes:
            x = by.get(("tail-spin", size))
            if x and x["pooled"]:
                p = x["pooled"]
                targets.append(dict(what='wait="spin" p50, {} B'.format(size), target_ns=
                                    TARGET_P50_NS, value_ns=p["p50"],
                                    pass_=p["p50"] <= TARGET_P50_NS))
                targets.append(dict(what='wait="spin" p99, {} B'.format(size), target_ns=
                                    TARGET_P99_NS, value_ns=p["p99"],
                                    pass_=p["p99"] <= TARGET_P99_NS))
        for x in lat:
            if x["run_p50"] and len(x["run_p50"]) > 1:
                x["run_p50_range"] = (min(x["run_p50"]), max(x["run_p50"]))
        say(wrap("per-run p50 / p99 (us), fastflow rows: " + "; ".join(
            "{} {} B: {} / {}".format(x["key"], x["size"],
                                      ", ".join(fmt_us(v) for v in x["run_p50"]),
                                      ", ".join(fmt_us(v) for v in x["run_p99"]))
            for x in lat if x["key"].startswith("tail"))))
        blocked = [x for x in lat if x["key"].startswith("tail-block") and x["tail_stats"]]
        if blocked:
            say(wrap("wait=\"block\" readers: " + "; ".join(
                "{} {} B slept {:,} times in {:,} waits".format(
                    x["key"], x["size"], sum(s["sleeps"] for s in x["tail_stats"]),
                    sum(s["waits"] for s in x["tail_stats"])) for x in blocked)))
    if tp:
        say("")
        say("throughput, 16-byte events, median of {} runs{}".format(
            cfg["tput_repeat"], " [QUICK RUN: indicative only]" if args.quick else ""))
        say(tput_table(tp, args))
        say(wrap(
            "read: events / (the reader's last event - the writer's first send), one clock "
            "across processes (cold: events / the reader's time from opening it).  writer: the "
            "writer's own rate.  in reads: events / the time inside the reader's calls that "
            "returned events (what the reader could take if the writer were faster).  per "
            "read: mean events per call that returned some (a small figure: the reader keeps "
            "up, it waits for the writer).  vs.: the fastflow rate over the peer's.  The live "
            "row cannot read faster than its writer appends: with the writer below 20 M/s the "
            "goal is judged on the cold read and the 'in reads' figure.  The live rows' "
            "writers: chain on (the default of a file-backed log) and chain=False; the cold "
            "read is over the chained log of the last live run."))
        for key in ("tail", "tail-nochain", "tail-behind", "cold"):
            x = tp.get(key)
            if x and x["read_rate"]:
                targets.append(dict(what="{} read rate".format(key), target_rate=TARGET_READ,
                                    value_rate=x["read_rate"],
                                    pass_=x["read_rate"] >= TARGET_READ))
        if "cold" in tp:
            r = tp["cold"]["runs"][-1]
            say(wrap("cold read: {:,} events ({:.0f} MiB of segments), {:,} minor page faults in "
                     "the reader ({:.2f} per 4 KiB of log), {} read calls.".format(
                         r["got"], bench.facts.get("cold_log_bytes", 0) / 2**20, r["minflt"],
                         r["minflt"] / max(1, bench.facts.get("cold_log_bytes", 0) / 4096),
                         r["calls"])))
    fl = bench.floors
    if fl:
        say("")
        parts = ["clock read (perf_counter_ns) {:.0f} ns".format(fl["clock_ns"]),
                 "unpack_from {:.0f} ns".format(fl["unpack_ns"]),
                 "empty loop {:.0f} ns (subtracted)".format(fl["empty_loop_ns"])]
        for size in args.sizes:
            parts.append("{} B: pack {:.0f} ns, append {:.0f} ns (chain) / {:.0f} ns (no "
                         "chain), read_into(limit=1) {:.0f} ns; page faults per 1k appends "
                         "{:.1f}, per 1k reads {:.1f}".format(
                             size, fl["pack_ns_{}".format(size)],
                             fl["append_ns_chain_{}".format(size)],
                             fl["append_ns_nochain_{}".format(size)],
                             fl["read_into_ns_{}".format(size)],
                             fl["append_faults_per_1k_chain_{}".format(size)],
                             fl["read_faults_per_1k_{}".format(size)]))
        say(wrap("floors (one process, core {}, {:,} calls each): ".format(
            bench.rcore, cfg["floor_n"]) + "; ".join(parts) + "."))
        dists = []
        for size in args.sizes:
            for what, k in (("append (chain)", "append_dist_chain_{}"),
                            ("append (no chain)", "append_dist_nochain_{}"),
                            ("read_into(limit=1)", "read_dist_{}")):
                dd = fl.get(k.format(size))
                if dd:
                    dists.append("{} B {}: {} / {} / {} / {}".format(
                        size, what, fmt_us(dd["p50"]), fmt_us(dd["p99"]), fmt_us(dd["p99.9"]),
                        fmt_us(dd["max"])))
        if dists:
            say(wrap("one call at a time (a clock read on each side of it, {:,} calls), p50 / "
                     "p99 / p99.9 / max in us: ".format(cfg["floor_n"]) + "; ".join(dists)
                     + ".  The writer's tail is its page faults: a fresh 4 KiB page of the "
                     "segment every few dozen records (the faults per 1k appends above) and a "
                     "1 MiB step of the segment reserved on disk (posix_fallocate) every ~10,000 "
                     "records of 16 bytes; the reader's, a fault per page of the segment it "
                     "maps; on a busy machine, preemption."))
        for size in args.sizes:
            for key, chain in (("tail-spin", "chain"), ("tail-nochain", "nochain")):
                x = by.get((key, size))
                if not x or not x["pooled"]:
                    continue
                path = (fl["pack_ns_{}".format(size)] + fl["append_ns_{}_{}".format(chain, size)]
                        + fl["read_into_ns_{}".format(size)] + fl["clock_ns"])
                x["path_ns"] = path
                x["handover_ns"] = x["pooled"]["p50"] - path
                say(wrap("where the time goes, {} {} B (p50 {:,.0f} ns): the writer, after its "
                         "clock read, packs and appends ({:,.0f} ns); the reader, once the frame "
                         "is there, copies it out of read_into and returns ({:,.0f} ns, measured "
                         "on a record already there: an upper bound, a spinning reader is "
                         "already inside the call) and reads the clock ({:,.0f} ns): {:,.0f} ns "
                         "of calls.  The rest, {:,.0f} ns, is the hand-over between the cores: "
                         "the frame's cache lines (its length word first, which the reader "
                         "spins on) moving from the writer's core to the reader's{}.".format(
                             key, size, x["pooled"]["p50"],
                             fl["pack_ns_{}".format(size)]
                             + fl["append_ns_{}_{}".format(chain, size)],
                             fl["read_into_ns_{}".format(size)], fl["clock_ns"], path,
                             x["pooled"]["p50"] - path,
                             "" if (x["other_cores"] or 0) < 0.3 else
                             ", and here the time the processes waited for a core ({:.2f} "
                             "cores were taken by other processes)".format(x["other_cores"]))))
    jt = bench.jitter
    if jt:
        say("")
        parts = []
        for name in ("writer", "reader"):
            j = jt.get(name)
            if not j:
                continue
            parts.append("core {} ({}'s): {:,} pauses in {:.1f} s ({:,.0f}/s), median {} us, "
                         "p99 {} us, longest {} us, {:.2%} of the time, about every {} ms".format(
                             j["core"], name, j["pauses"], j["seconds"], j["per_s"] or 0,
                             fmt_us(j["median_ns"]), fmt_us(j["p99_ns"]), fmt_us(j["max_ns"]),
                             j["lost"] or 0, "-" if j["median_interval_ns"] is None else
                             "{:.1f}".format(j["median_interval_ns"] / 1e6)))
        lost = sum((jt[n]["lost"] or 0) for n in ("writer", "reader") if n in jt)
        hz = machine.get("kernel_hz")
        say(wrap("jitter (a busy loop reading the clock on each core at once, pauses > {} us: "
                 "time the process did not run): ".format(JITTER_NS // 1000) + "; ".join(parts)
                 + ".  Other processes took {} cores meanwhile; the kernel's tick is {} Hz "
                 "({}).  An event sent or read during a pause waits for its end: about {:.2%} of "
                 "the events meet one, so a p99 below the pauses' length needs that under 1%."
                 .format("-" if jt.get("other_cores") is None else
                         "{:.2f}".format(jt["other_cores"]),
                         hz or "?", "every {:.0f} ms".format(1000 / hz) if hz else "unknown",
                         lost)))
    if targets:
        say("")
        say("targets: " + "; ".join(
            "{} {} {}: {} {}".format(
                t["what"], "<=" if "target_ns" in t else ">=",
                "{} us".format(fmt_us(t["target_ns"])) if "target_ns" in t
                else fmt_rate(t["target_rate"]),
                "{} us".format(fmt_us(t["value_ns"])) if "target_ns" in t
                else fmt_rate(t["value_rate"]),
                "PASS" if t["pass_"] else "FAIL") for t in targets)
            + (" [quick run: indicative only]" if args.quick else ""))
    for k, why in bench.skipped.items():
        say("skipped {}: {}".format(k, why))
    if bench.errors:
        say("errors: " + "; ".join(bench.errors))
    say("")
    say("caveats:")
    for c in (
        "The machine is shared: the 'other' column and the preemptions say how much; a busy "
        "reader that shares its core with another process loses its time slice for "
        "milliseconds, which shows in p99 and max.  Read the medians of several runs.",
        "Latency is one-way from just before the send call to just after the receive call, "
        "both stamps from CLOCK_MONOTONIC ({}; clocksource {}): the same clock in both "
        "processes, no offset to correct.  A clock read costs about {} ns and is paid once on "
        "each side (the writer's before the send counts, the reader's is where it stops).".format(
            machine["clock"], machine["clocksource"] or "?",
            "{:.0f}".format(fl["clock_ns"]) if fl else "100"),
        "The peers' readers take a new bytes object per message (recv, recv_bytes); the "
        "fastflow reader copies into its reused buffer.  The busy-poll peer rows pay a "
        "system call (Pipe poll) or an exception (zmq.Again) per empty look.  pyzmq: libzmq "
        "moves every message through an I/O thread on each side; both processes' I/O threads "
        "run on the {} (--zmq-io; the writer's core is taken by its busy-wait, the blocking "
        "reader sleeps); the busy recv(NOBLOCK) row (only with --rows zmq-poll) has no good "
        "place for them on two cores.".format(
            {"reader": "reader's core", "writer": "writer's core",
             "free": "any core"}[args.zmq_io]),
        "The log is on {} ({}); on a disk file system the writer's page-cache writes would be "
        "the same (fsync=\"never\") but new segment pages cost more to fault in.".format(
            args.dir, machine["dir_fs"]),
        "fastflow's figures are for the compiled core built when the script ran (git and build "
        "time above).",
    ):
        say(wrap(c, "  ").replace("  ", "- ", 1))
    return lat, tp, targets


# -- main ------------------------------------------------------------------------------------

def default_dir():
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
        else tempfile.gettempdir()


def cores_arg(text):
    try:
        w, r = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--cores takes two core numbers: WRITER,READER") from None
    return w, r


def sizes_arg(text):
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "--sizes takes payload sizes in bytes: 16,100") from None
    if not sizes or any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError("payloads must have at least 8 bytes (the stamp)")
    return sizes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=None,
                    help="where the logs (and the zmq sockets) are made (default /dev/shm "
                         "when it exists, a tmpfs; else the temp dir)")
    ap.add_argument("--cores", type=cores_arg, default=(0, 1),
                    help="the writer's and the reader's core (default 0,1)")
    ap.add_argument("--sizes", type=sizes_arg, default=[16, 100],
                    help="payload sizes of the latency rows (default 16,100)")
    ap.add_argument("--rate", type=int, default=100_000,
                    help="events/s of the latency rows (default %(default)s)")
    ap.add_argument("--events", type=int, help="timed events per latency run (default "
                    "100,000; quick 10,000)")
    ap.add_argument("--warmup", type=int, help="untimed events before them (default 20,000; "
                    "quick 2,000)")
    ap.add_argument("--repeat", type=int, help="runs per latency row, samples pooled (default "
                    "3; quick 2)")
    ap.add_argument("--rows", type=choices_arg(LAT_KEYS, "latency row"),
                    default=list(LAT_DEFAULT),
                    help="latency rows, comma-separated, of {} (default all but "
                         "zmq-poll)".format(",".join(LAT_KEYS)))
    ap.add_argument("--tput-rows", type=choices_arg(TPUT_ROWS, "throughput row"),
                    default=list(TPUT_ROWS),
                    help="throughput rows (default {})".format(",".join(TPUT_ROWS)))
    ap.add_argument("--tput-events", type=int, help="events per throughput run (default "
                    "10,000,000; quick 1,000,000)")
    ap.add_argument("--cold-events", type=int, help="events of the cold read (default "
                    "10,000,000; quick 1,000,000; the last tailing run's log when equal)")
    ap.add_argument("--tput-repeat", type=int, help="runs per throughput row (default 3; "
                    "quick 1)")
    ap.add_argument("--batch", type=int, default=1024, help="append_batch size (default 1024)")
    ap.add_argument("--read-buf", type=int, default=4 << 20,
                    help="the tailing reader's buffer in bytes (default 4 MiB)")
    ap.add_argument("--read-limit", type=int, default=65536,
                    help="read_into's limit in the throughput rows (default 65536)")
    ap.add_argument("--zmq-io", choices=("reader", "writer", "free"), default="reader",
                    help="where libzmq's I/O threads (both processes') run: the reader's core "
                         "(default: the writer's busy-waits), the writer's, or any core")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-tput", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--skip-floors", action="store_true")
    add_output_args(ap, quick_help="smoke run (about 15 s): 10,000 events per latency run, "
                                   "2 runs; 1,000,000 events per throughput run, 1 run")
    args = ap.parse_args(argv)

    cfg = dict(QUICK if args.quick else FULL)
    for k in ("events", "warmup", "repeat", "tput_events", "cold_events", "tput_repeat"):
        v = getattr(args, k)
        if v is not None:
            cfg[k] = v
    if cfg["events"] < 1 or cfg["repeat"] < 1 or cfg["warmup"] < 0 or args.rate < 1:
        ap.error("--events, --repeat and --rate must be >= 1, --warmup >= 0")
    if args.dir is None:
        args.dir = default_dir()
    if not os.path.isdir(args.dir):
        ap.error("--dir {} is not a directory".format(args.dir))
    usable = os.sched_getaffinity(0)
    for c in args.cores:
        if c not in usable:
            ap.error("core {} is not usable here (usable: {})".format(
                c, ",".join(map(str, sorted(usable)))))
    if args.json:
        report_to(sys.stderr)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    import fastflow

    try:
        import numpy as np
    except ImportError:
        np = None

    t0 = time.perf_counter()
    machine = machine_facts(args)
    mf = machine_format_fields(machine)
    say("machine: {cpu}{mhz}, {cores} cores ({usable_cores} usable); {python} ({compiler}); "
        "{platform}; clock {clock}, clocksource {cs}; load average {load}".format(
            cs=machine["clocksource"] or "?", load=machine["loadavg"] or "?",
            **{k: v for k, v in machine.items() if k not in ("cpu_mhz",)}, mhz=mf["mhz"]))
    say("fastflow {} ({}; git {}; _core built {}); {}; uvloop {}".format(
        machine["fastflow"], mf["kind"], mf["git"], mf["built"],
        machine["pyzmq"] or "pyzmq not installed", machine["uvloop"] or "not installed"))
    say("logs in {} ({}{}); writer on core {}, reader on core {}".format(
        args.dir, machine["dir_fs"], ": tmpfs, in memory" if machine["tmpfs"] else
        ": NOT a tmpfs", args.cores[0], args.cores[1]))
    if not fastflow.COMPILED:
        say("WARNING: fastflow runs its pure-Python core: there is no TailReader to measure")
        return 1

    bench = Bench(args, cfg, np)
    try:
        if not args.skip_floors:
            bench.section_jitter()
            bench.section_floors()
        if not args.skip_latency:
            bench.section_latency()
        if not args.skip_tput:
            bench.section_tput()
    except (KeyboardInterrupt, Interrupted):
        say("interrupted: the children stopped, the temporary directories removed")
        return 130
    finally:
        Proc.stop_all()
        bench.stop_server()

    lat, tp, targets = report(bench, machine)
    total_s = time.perf_counter() - t0
    say("total {:.0f} s".format(total_s))
    if args.json:
        for x in lat:
            x.pop("tail_stats", None)
        write_json({
            "machine": machine,
            "config": dict(cfg, rate=args.rate, sizes=args.sizes, rows=args.rows,
                           tput_rows=args.tput_rows, batch=args.batch, read_buf=args.read_buf,
                           read_limit=args.read_limit, quick=args.quick,
                           subject=SUBJECT, segment_size=SEGMENT, cores=list(args.cores)),
            "latency": lat,
            "throughput": tp,
            "floors": bench.floors,
            "jitter": bench.jitter,
            "targets": targets,
            "skipped": bench.skipped,
            "errors": bench.errors,
            "facts": bench.facts,
            "total_s": total_s,
        })
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
