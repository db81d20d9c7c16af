"""Compare fastflow's broker (``fastflow serve`` and ``fastflow.client``) with
nats-server (nats-py and the Go client) over loopback.

One run starts nats-server and ``python -m fastflow serve``, each on a free
loopback port in its own process (both stopped at the end), and times
publishers and subscribers that run in processes of their own (this script
again, as a worker, for the Python clients; ``benchmarks/go/natsbench.go``,
compiled into a temporary directory at start when ``go`` and the Debian
source of nats.go are there, for the Go client; a row says why when not).
Rows:

a. 1 publisher -> 1 subscriber, 16- and 128-byte payloads: messages
   delivered/s for fastflow.client -> fastflow serve (target >= 3 M/s),
   nats-py -> nats-server and Go nats.go -> nats-server; also "fastflow
   codec (raw)": the same server driven by a minimal client written here
   over the core's codec (``OutBuf.publish_many``, ``FrameParser`` with
   ``batch_msgs``), which shows what the server delivers when the client
   side costs almost nothing;
b. 1 -> 5 fan-out: 5 subscriber processes, deliveries/s (target >= 5 M/s
   for fastflow);
c. latency: one-way publish -> subscriber at a paced rate (a CLOCK_REALTIME
   ``time.time_ns()`` stamp in the payload: perf_counter_ns is not
   comparable across processes) and back-to-back request/reply round
   trips, p50 / p99, against the floor of this machine: two raw uvloop
   processes echoing 16 bytes over loopback, paced like the one-way rows
   and back to back like the request/reply rows.  Targets: one-way p50 <=
   1.2x the (paced) echo round trip; request/reply p50 and p99 <=
   nats-server with the Go client.

A throughput run: the subscribers connect and subscribe and say so, then
the publisher publishes N messages as fast as it can, staying at most
``--window`` messages ahead of the slowest subscriber (each reports its
count on ``bench.ack.<i>`` every window/8 messages), so that no broker drops
a slow consumer and the rate is what the whole path delivers.  delivered/s
= deliveries / (last delivery at any subscriber - first publish), both
``time.time_ns()``.  N is sized per row from a warm-up run to last about
``--run-seconds``.  The runs of all rows are interleaved; each figure is the
median of ``--repeat`` runs (latency: samples pooled over interleaved runs).
``--json`` writes every figure as JSON to stdout (the report goes to
stderr); ``--quick`` is a smoke run (about a minute).
"""

import argparse
import asyncio
import atexit
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

from _common import (add_output_args, cpu_facts, fastflow_facts, fmt_rate, fmt_ratio,
                     machine_format_fields, python_desc, read_text, render_table, report_to, say,
                     wrap, write_json)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GO_SRC = os.path.join(HERE, "go", "natsbench.go")
DEBIAN_GOPATH = "/usr/share/gocode"
NATS_GO_SRC = os.path.join(DEBIAN_GOPATH, "src", "github.com", "nats-io", "nats.go")

SUBJECT = "bench.data"
ACK = "bench.ack"
LAT_SUBJECT = "bench.lat"
RR_SUBJECT = "bench.rr"
SOURCE = "/bench"  # the fastflow events' source attribute

TARGET_FF_1TO1 = 3e6  # messages delivered/s, fastflow 1 -> 1
TARGET_FF_FANOUT = 5e6  # deliveries/s, fastflow 1 -> 5
TARGET_ONEWAY_VS_ECHO = 1.2  # one-way p50 <= 1.2 x the echo round trip p50

CLIENTS = {  # key: (label, server kind)
    "ff": ("fastflow.client", "fastflow"),
    "ffbatch": ("fastflow.client batch", "fastflow"),
    "ffraw": ("fastflow codec (raw)", "fastflow"),
    "nats": ("nats-py", "nats"),
    "go": ("Go nats.go", "nats"),
}
SERVERS = {"fastflow": "fastflow serve", "nats": "nats-server"}
ONEWAY_CLIENTS = ("ff", "ffraw", "nats", "go")  # clients with a one-way latency row
RR_CLIENTS = ("ff", "nats", "go")  # clients with a request/reply row

FULL = dict(run_s=1.5, calib_n=200_000, repeat=5, lat_n=10_000, rr_n=10_000, lat_warm=500,
            lat_repeat=3, min_n=100_000, max_n=8_000_000)
QUICK = dict(run_s=0.4, calib_n=50_000, repeat=2, lat_n=1_500, rr_n=2_000, lat_warm=200,
             lat_repeat=2, min_n=20_000, max_n=2_000_000)


# =============================================================================
# Workers: the publisher / subscriber / requester / replier / echo processes
# (``compare_broker.py --worker SPEC``).  Each prints JSON lines on stdout:
# {"ready": true} when it is ready for the other side (sub, reply, echo
# server), then one result object.  Every wait is bounded by spec["timeout"].
# =============================================================================

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def set_pdeathsig():
    """Die with the parent (Linux): a worker never outlives the script."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_MARK = {}


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def mark():
    """The start of a worker's measured part: its CPU time now (returned) and
    its minor page faults (reported as ``minflt``, counted from here)."""
    _MARK["minflt"] = minor_faults()
    return time.process_time()


STAMP = struct.Struct("<qq")  # clock ns (see CLOCKS), sequence number

# The clocks a one-way latency stamp may be read from (spec["clock"]): both
# are system-wide on Linux, so two processes of one machine can compare them.
# CLOCK_MONOTONIC (what perf_counter_ns reads on Linux) never steps; NTP may
# slew CLOCK_REALTIME.  The Go client takes the same names (-clock).
CLOCKS = {"realtime": time.time_ns, "monotonic": time.monotonic_ns}


def stamp_clock(spec):
    """The clock of ``spec``'s latency stamps (default CLOCK_REALTIME)."""
    return CLOCKS[spec.get("clock", "realtime")]


class Window:
    """The publisher's side of the flow control: the counts the subscribers
    report on ACK.<i>; ``wait(k)`` until message k may be sent."""

    def __init__(self, subs, window):
        self.acked = [0] * subs
        self.window = window
        self.waits = 0
        self.event = asyncio.Event()

    @classmethod
    def of(cls, spec):
        """The window of a publisher's spec (None without spec["window"])."""
        return cls(spec.get("subs", 1), spec["window"]) if spec.get("window") else None

    def on_ack(self, i, count):
        if 0 <= i < len(self.acked) and count > self.acked[i]:
            self.acked[i] = count
            self.event.set()

    def on_report(self, subject, data):
        """A report on ACK.<i>: subscriber i's count."""
        self.on_ack(int(subject[len(ACK) + 1:]), int(data))

    async def wait(self, k, deadline):
        if k - min(self.acked) <= self.window:
            return True
        self.waits += 1
        while k - min(self.acked) > self.window:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.event.clear()
            try:
                await asyncio.wait_for(self.event.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True


def pace_interval(spec):
    return 1.0 / spec["rate"] if spec.get("rate") else 0.0


async def paced(n, interval):
    """0 .. n-1, one every ``interval`` seconds (at once with 0): the loop of
    the paced publishers and of the echo client."""
    mono, sleep = time.monotonic, asyncio.sleep
    prev = mono()
    for i in range(n):
        if i:
            d = prev + interval - mono()
            if d > 0:
                await sleep(d)
        prev = mono()
        yield i


class Stamps:
    """A latency subscriber's samples: now - the stamp of each message from
    seq ``warm`` on, and how many messages came out of order."""

    def __init__(self, warm):
        self.warm = warm
        self.samples = []
        self.max_seq = -1
        self.out_of_order = 0

    def add(self, now, data, offset=0):
        ts, seq = STAMP.unpack_from(data, offset)
        if seq <= self.max_seq:
            self.out_of_order += 1
        self.max_seq = seq
        if seq >= self.warm:
            self.samples.append(now - ts)


async def ready_until(done, spec, **ready):
    """Tell the script this worker is ready (with ``ready``), then wait for
    ``done`` up to spec["timeout"]: (timed out, the CPU mark of the start)."""
    cpu0 = mark()
    emit(dict(ready=True, **ready))
    try:
        await asyncio.wait_for(asyncio.shield(done), spec["timeout"])
    except asyncio.TimeoutError:
        return True, cpu0
    return False, cpu0


def sub_state(spec):
    """What a subscriber keeps: n (the messages it waits for), its counts
    (count, first and last arrival in ns), its latency ``Stamps`` (None unless
    spec["lat"]), the future done at the n-th message, and where and how often
    it reports its count to the publisher's window."""
    stamps = Stamps(spec.get("warmup", 0)) if spec.get("lat") else None
    return (spec["n"], dict(count=0, first=0, last=0), stamps,
            asyncio.get_running_loop().create_future(), "{}.{}".format(ACK, spec.get("id", 0)),
            spec.get("ack_every") or 0)


class Countdown:
    """Counts what a replier answered; ``done`` is set at the n-th."""

    def __init__(self, n):
        self.n = n
        self.count = 0
        self.done = asyncio.get_running_loop().create_future()

    def tick(self):
        self.count += 1
        if self.count == self.n and not self.done.done():
            self.done.set_result(None)

    async def result(self, spec, errors):
        """Ready, then until the n-th answer: the replier's result."""
        timed_out, cpu0 = await ready_until(self.done, spec)
        return dict(answered=self.count, timed_out=timed_out,
                    cpu_s=time.process_time() - cpu0, errors=errors)


def pub_result(sent, start, cpu0, errors, win=None, timed_out=False):
    """A publisher's result; ``start`` is its first publish, now its end."""
    end = time.time_ns()
    return dict(sent=sent, start_ns=start, end_ns=end, seconds=(end - start) / 1e9,
                window_waits=win.waits if win else 0, timed_out=timed_out,
                cpu_s=time.process_time() - cpu0, errors=errors)


def sub_result(st, stamps, timed_out, cpu, errors):
    """A subscriber's result (with its latency samples when it took ``stamps``)."""
    out = dict(received=st["count"], first_ns=st["first"], last_ns=st["last"],
               timed_out=timed_out, cpu_s=cpu, errors=errors)
    if stamps is not None:
        out.update(latencies_ns=stamps.samples, out_of_order=stamps.out_of_order)
    return out


async def round_trips(request, spec, errors):
    """The requester: warm-up + n requests back to back; its result, with the
    round trips in ns (after the warm-up)."""
    data = bytes(spec["size"])
    warm, n = spec.get("warmup", 0), spec["n"]
    rtts = []
    pc = time.perf_counter_ns
    cpu0 = mark()
    for i in range(warm + n):
        t = pc()
        msg = await request(RR_SUBJECT, data, timeout=10)
        d = pc() - t
        if len(msg.data) != len(data):
            raise SystemExit("reply {}: {} bytes for {}".format(i, len(msg.data), len(data)))
        if i >= warm:
            rtts.append(d)
    return dict(rtts_ns=rtts, cpu_s=time.process_time() - cpu0, errors=first_errors(errors))


def first_errors(errors):
    """The first five errors a client reported, as reprs (for the result)."""
    return [repr(e) for e in errors[:5]]


async def close_within(closing, seconds=5):
    """Await a client's close, for ``seconds`` at most."""
    try:
        await asyncio.wait_for(closing, seconds)
    except asyncio.TimeoutError:
        pass


# -- nats-py -------------------------------------------------------------------

async def nats_connect(spec, errors):
    import nats

    async def on_error(e):
        errors.append(e)

    return await nats.connect(spec["url"], allow_reconnect=False, connect_timeout=10,
                              error_cb=on_error, name="compare_broker-" + spec["role"])


async def nats_pub(spec):
    errors = []
    nc = await nats_connect(spec, errors)
    n, size = spec["n"], spec["size"]
    deadline = time.monotonic() + spec["timeout"]
    win = Window.of(spec)
    if win is not None:
        async def on_ack(msg):
            win.on_report(msg.subject, msg.data)

        await nc.subscribe(ACK + ".*", cb=on_ack)
        await nc.flush(timeout=10)
    publish = nc.publish
    data = bytes(size)
    interval = pace_interval(spec)
    check = max(1, spec.get("window", 8) // 8)
    timed_out = False
    sent = 0
    cpu0 = mark()
    start = time.time_ns()
    subject = SUBJECT_OF[spec["kind"]]
    if interval:
        pad = bytes(size - STAMP.size)
        pack, tns = STAMP.pack, stamp_clock(spec)
        async for i in paced(n, interval):
            await publish(subject, pack(tns(), i) + pad)
            sent += 1
    else:
        for i in range(0, n, check):
            if win is not None and not await win.wait(i + check, deadline):
                timed_out = True
                break
            for _ in range(min(check, n - i)):
                await publish(subject, data)
            sent = min(n, i + check)
    # Twice: nats-py 2.16's flush() writes its PING straight to the transport,
    # ahead of publishes still queued for its flusher task, so one PONG does not
    # prove that they were sent (closing then lost the tail of a run, seen here).
    # The second PING goes out after the flusher has written the queue.
    await nc.flush(timeout=max(1, deadline - time.monotonic()))
    await nc.flush(timeout=max(1, deadline - time.monotonic()))
    out = pub_result(sent, start, cpu0, first_errors(errors), win, timed_out)
    await nc.close()
    return out


async def nats_sub(spec):
    errors = []
    nc = await nats_connect(spec, errors)
    n, st, stamps, done, ack_subj, every = sub_state(spec)
    publish = nc.publish
    tns = stamp_clock(spec)  # time.time_ns unless a latency run asks for another clock

    async def on_msg(msg):
        now = tns()
        c = st["count"] = st["count"] + 1
        if c == 1:
            st["first"] = now
        st["last"] = now
        if stamps is not None:
            stamps.add(now, msg.data)
        if every and (c % every == 0 or c == n):
            await publish(ack_subj, b"%d" % c)
        if c == n and not done.done():
            done.set_result(None)

    await nc.subscribe(SUBJECT_OF[spec["kind"]], cb=on_msg, pending_msgs_limit=4_000_000,
                       pending_bytes_limit=1 << 30)
    await nc.flush(timeout=10)
    timed_out, cpu0 = await ready_until(done, spec)
    out = sub_result(st, stamps, timed_out, time.process_time() - cpu0, first_errors(errors))
    await close_within(nc.close())
    return out


async def nats_req(spec):
    errors = []
    nc = await nats_connect(spec, errors)
    out = await round_trips(nc.request, spec, errors)
    await nc.close()
    return out


async def nats_reply(spec):
    errors = []
    nc = await nats_connect(spec, errors)
    answered = Countdown(spec["n"])
    publish = nc.publish

    async def on_req(msg):
        await publish(msg.reply, msg.data)
        answered.tick()

    await nc.subscribe(RR_SUBJECT, cb=on_req)
    await nc.flush(timeout=10)
    out = await answered.result(spec, first_errors(errors))
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)  # see nats_pub
    await nc.close()
    return out


SUBJECT_OF = {"tput": SUBJECT, "lat": LAT_SUBJECT}


# -- fastflow.client ------------------------------------------------------------
# The public API: publish() per message (buffered; await wait_writable() now
# and then to follow the connection's pace, as its docs say), subscribe(...,
# raw=True) for the throughput subscribers (the fastest callback: no Event
# made), an Event callback where the payload is read (latency), request(),
# and a with_reply callback answering with publish(reply, data).

async def ff_connect(spec, errors):
    from fastflow import client as ffc

    return await ffc.connect(spec["url"], name="compare_broker-" + spec["role"], reconnect=False,
                             timeout=10, ping_interval=0, error_callback=errors.append)


async def ff_pub(spec):
    errors = []
    c = await ff_connect(spec, errors)
    n, size = spec["n"], spec["size"]
    deadline = time.monotonic() + spec["timeout"]
    win = Window.of(spec)
    if win is not None:
        c.subscribe(ACK + ".*", lambda ev: win.on_report(ev.routing_subject, ev.data))
        await c.flush(10)
    publish, writable = c.publish, c.wait_writable
    subject = SUBJECT_OF[spec["kind"]]
    data = bytes(size)
    interval = pace_interval(spec)
    check = max(1, spec.get("window", 8) // 8)
    step = 1000  # messages between wait_writable() calls (publish_batch: per call)
    batch = spec.get("batch")
    datas = [data] * step
    timed_out = False
    sent = 0
    cpu0 = mark()
    start = time.time_ns()
    if interval:
        pad = bytes(size - STAMP.size)
        pack, tns = STAMP.pack, stamp_clock(spec)
        async for i in paced(n, interval):
            publish(subject, pack(tns(), i) + pad)
            sent += 1
    else:
        for i in range(0, n, check):
            if win is not None and not await win.wait(i + check, deadline):
                timed_out = True
                break
            left = min(check, n - i)
            while left > 0:
                k = min(step, left)
                if batch:
                    c.publish_batch(subject, datas if k == step else datas[:k])
                else:
                    for _ in range(k):
                        publish(subject, data)
                left -= k
                await writable(max(1, deadline - time.monotonic()))
            sent = min(n, i + check)
            await asyncio.sleep(0)  # let the acks in
    await c.flush(max(1, deadline - time.monotonic()))
    out = pub_result(sent, start, cpu0, first_errors(errors), win, timed_out)
    await c.close()
    return out


async def ff_sub(spec):
    errors = []
    c = await ff_connect(spec, errors)
    n, st, stamps, done, ack_subj, every = sub_state(spec)
    publish = c.publish
    tns = stamp_clock(spec)  # time.time_ns unless a latency run asks for another clock

    if stamps is not None:
        def on_msg(ev):  # an Event: the payload is read
            now = tns()
            cnt = st["count"] = st["count"] + 1
            if cnt == 1:
                st["first"] = now
            st["last"] = now
            stamps.add(now, ev.data)
            if cnt == n and not done.done():
                done.set_result(None)

        c.subscribe(SUBJECT_OF[spec["kind"]], on_msg)
    elif spec.get("batch"):
        def on_batch(subjects, replies, bodies):  # raw=True, batch=True: one call per read
            cnt0 = st["count"]
            cnt = st["count"] = cnt0 + len(bodies)
            if cnt0 == 0:
                st["first"] = tns()
            if every and (cnt // every != cnt0 // every or cnt >= n):
                publish(ack_subj, b"%d" % cnt)
            if cnt >= n:
                st["last"] = tns()
                if not done.done():
                    done.set_result(None)

        c.subscribe(SUBJECT_OF[spec["kind"]], on_batch, raw=True, batch=True)
    else:
        def on_msg(subject, reply, body):  # raw=True: the MSG frame's parts
            cnt = st["count"] = st["count"] + 1
            if cnt == 1:
                st["first"] = tns()
            if every and (cnt % every == 0 or cnt == n):
                publish(ack_subj, b"%d" % cnt)
            if cnt == n:
                st["last"] = tns()
                if not done.done():
                    done.set_result(None)

        c.subscribe(SUBJECT_OF[spec["kind"]], on_msg, raw=True)
    await c.flush(10)
    timed_out, cpu0 = await ready_until(done, spec)
    if timed_out:
        st["last"] = tns()
    out = sub_result(st, stamps, timed_out, time.process_time() - cpu0, first_errors(errors))
    await close_within(c.close())
    return out


async def ff_req(spec):
    errors = []
    c = await ff_connect(spec, errors)
    out = await round_trips(c.request, spec, errors)
    await c.close()
    return out


async def ff_reply(spec):
    errors = []
    c = await ff_connect(spec, errors)
    answered = Countdown(spec["n"])
    publish = c.publish

    def on_req(ev, reply):
        publish(reply, ev.data)
        answered.tick()

    c.subscribe(RR_SUBJECT, on_req, with_reply=True)
    await c.flush(10)
    out = await answered.result(spec, first_errors(errors))
    await c.flush(5)
    await c.close()
    return out


# -- the fastflow codec, without the client -----------------------------------------
# A minimal connection of the native protocol written here from docs/protocol.md
# over the core's codec: PUB frames written in C by OutBuf.publish_many (1,000
# per call), MSG frames received as FrameParser(batch_msgs=True) runs.  It
# shows what the server delivers when the client side costs almost nothing.

class RawFF(asyncio.Protocol):
    def __init__(self, loop):
        from fastflow._impl import OPS, FrameParser, OutBuf

        self.ops = OPS
        self.loop = loop
        self.parser = FrameParser(None, None, 1 << 30, 64 << 20)
        self.parser.batch_msgs = True
        self.out = OutBuf(0)
        self.info = loop.create_future()
        self.pongs = []
        self.on_msgs = None
        self.errors = []
        self.resumed = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        ops = self.ops
        for item in self.parser.feed(data):
            op = item[0]
            if op == "msgs":
                if self.on_msgs is not None:
                    self.on_msgs(item[1])
            elif op == ops["PONG"]:
                if self.pongs:
                    f = self.pongs.pop(0)
                    if not f.done():
                        f.set_result(None)
            elif op == ops["PING"]:
                self.out.frame(ops["PONG"])
                self.send()
            elif op == ops["INFO"]:
                if not self.info.done():
                    self.info.set_result(json.loads(item[5] or b"{}"))
            elif op == ops["ERR"]:
                self.errors.append("ERR {}: {}".format(
                    struct.unpack_from("<H", item[5])[0] if len(item[5]) >= 2 else "?",
                    item[5][2:].decode("utf-8", "replace")))

    def connection_lost(self, exc):
        for f in self.pongs:
            if not f.done():
                f.set_exception(ConnectionError("connection lost: {}".format(exc)))
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_exception(ConnectionError("connection lost"))

    def pause_writing(self):
        self.resumed = self.loop.create_future()

    def resume_writing(self):
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        self.resumed = None

    def send(self):
        if len(self.out):
            self.transport.write(self.out.take())

    async def writable(self, timeout):
        self.send()
        if self.resumed is not None:
            await asyncio.wait_for(asyncio.shield(self.resumed), timeout)

    async def flush(self, timeout=10):
        f = self.loop.create_future()
        self.pongs.append(f)
        self.out.frame(self.ops["PING"])
        self.send()
        await asyncio.wait_for(f, timeout)

    def subscribe(self, sid, subject):
        self.out.frame(self.ops["SUB"], 0, sid, subject.encode(), b"", b"")


async def raw_connect(spec):
    loop = asyncio.get_running_loop()
    host, port = spec["url"].split("://", 1)[1].rsplit(":", 1)
    _, conn = await loop.create_connection(lambda: RawFF(loop), host, int(port))
    await asyncio.wait_for(conn.info, 10)
    conn.out.frame(conn.ops["CONNECT"], 0, 1, b"", b"", json.dumps(
        {"name": "compare_broker-raw-" + spec["role"], "lang": "python", "verbose": False,
         "echo": True}).encode())
    await conn.flush()
    return conn


async def ffraw_paced(conn, spec):
    """The one-way latency publisher: one stamped message per interval, written at once."""
    n, size, interval = spec["n"], spec["size"], pace_interval(spec)
    publish, send, subject = conn.out.publish, conn.send, SUBJECT_OF[spec["kind"]]
    pad = bytes(size - STAMP.size)
    pack, tns = STAMP.pack, stamp_clock(spec)
    cpu0 = mark()
    start = time.time_ns()
    async for i in paced(n, interval):
        publish(subject, pack(tns(), i) + pad, SOURCE)
        send()
    await conn.flush()
    out = pub_result(n, start, cpu0, conn.errors[:5])
    conn.transport.close()
    return out


async def ffraw_pub(spec):
    conn = await raw_connect(spec)
    if spec.get("rate"):
        return await ffraw_paced(conn, spec)
    n, size = spec["n"], spec["size"]
    deadline = time.monotonic() + spec["timeout"]
    win = Window.of(spec)

    def on_msgs(batch):
        for subject, d in zip(batch.subjects, batch.datas()):
            win.on_report(subject, d)

    conn.on_msgs = on_msgs
    conn.subscribe(1, ACK + ".*")
    await conn.flush()
    check = max(1, spec["window"] // 8)
    step = 1000
    datas = (bytes(size),) * step
    publish_many = conn.out.publish_many
    timed_out = False
    sent = 0
    cpu0 = mark()
    start = time.time_ns()
    for i in range(0, n, check):
        if not await win.wait(i + check, deadline):
            timed_out = True
            break
        left = min(check, n - i)
        while left > 0:
            k = min(step, left)
            publish_many(SUBJECT, datas if k == step else datas[:k], SOURCE)
            left -= k
            await conn.writable(max(1, deadline - time.monotonic()))
        sent = min(n, i + check)
        await asyncio.sleep(0)
    await conn.flush(max(1, deadline - time.monotonic()))
    out = pub_result(sent, start, cpu0, conn.errors[:5], win, timed_out)
    conn.transport.close()
    return out


async def ffraw_sub(spec):
    conn = await raw_connect(spec)
    n, st, stamps, done, ack_subj, every = sub_state(spec)
    publish = conn.out.publish
    tns = stamp_clock(spec)  # time.time_ns unless a latency run asks for another clock

    def on_msgs(batch):
        now = tns()
        if stamps is not None:
            for d in batch.datas():
                stamps.add(now, d)
        before = st["count"]
        cnt = st["count"] = before + len(batch)
        if before == 0:
            st["first"] = now
        st["last"] = now
        if every and (cnt // every != before // every or cnt >= n):
            publish(ack_subj, b"%d" % cnt, SOURCE)
            conn.send()
        if cnt >= n and not done.done():
            done.set_result(None)

    conn.on_msgs = on_msgs
    conn.subscribe(1, SUBJECT_OF[spec["kind"]])
    await conn.flush()
    timed_out, cpu0 = await ready_until(done, spec)
    out = sub_result(st, stamps, timed_out, time.process_time() - cpu0, conn.errors[:5])
    conn.transport.close()
    return out


# -- the echo floor: raw uvloop protocols --------------------------------------

async def echo_server(spec):
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.write = transport.write

        def data_received(self, data):
            self.write(data)

        def connection_lost(self, exc):
            if not done.done():
                done.set_result(None)

    server = await loop.create_server(Echo, "127.0.0.1", 0)
    timed_out, cpu0 = await ready_until(done, spec, port=server.sockets[0].getsockname()[1])
    server.close()
    return dict(timed_out=timed_out, cpu_s=time.process_time() - cpu0)


async def echo_client(spec):
    loop = asyncio.get_running_loop()
    size, warm, n = spec["size"], spec.get("warmup", 0), spec["n"]

    class Client(asyncio.Protocol):
        got = 0
        waiter = None

        def data_received(self, data):
            self.got += len(data)
            if self.got >= size and self.waiter is not None:
                self.waiter.set_result(None)
                self.waiter = None

    transport, proto = await loop.create_connection(Client, "127.0.0.1", spec["port"])
    sock = transport.get_extra_info("socket")
    nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) if sock else None
    data = bytes(size)
    rtts = []
    pc = time.perf_counter_ns
    cpu0 = mark()
    async for i in paced(warm + n, pace_interval(spec)):
        proto.got = 0
        fut = proto.waiter = loop.create_future()
        t = pc()
        transport.write(data)
        await asyncio.wait_for(fut, 10)
        d = pc() - t
        if i >= warm:
            rtts.append(d)
    transport.close()
    return dict(rtts_ns=rtts, cpu_s=time.process_time() - cpu0, nodelay=bool(nodelay))


# -- the relay floor: a uvloop process forwarding bytes, no protocol -------------

async def relay_server(spec):
    """Forwards what any connection sends to every other connection."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    conns = []

    class Relay(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            conns.append(self)

        def data_received(self, data):
            for c in conns:
                if c is not self:
                    c.transport.write(data)

        def connection_lost(self, exc):
            conns.remove(self)
            if not done.done():
                done.set_result(None)

    server = await loop.create_server(Relay, "127.0.0.1", 0)
    timed_out, cpu0 = await ready_until(done, spec, port=server.sockets[0].getsockname()[1])
    server.close()
    return dict(timed_out=timed_out, cpu_s=time.process_time() - cpu0)


async def relay_pub(spec):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", spec["port"])
    n, interval = spec["n"], pace_interval(spec)
    pack, tns = STAMP.pack, time.time_ns
    cpu0 = mark()
    start = tns()
    async for i in paced(n, interval):
        transport.write(pack(tns(), i))
    await asyncio.sleep(0.05)
    transport.close()
    return dict(sent=n, start_ns=start, seconds=(tns() - start) / 1e9,
                cpu_s=time.process_time() - cpu0)


async def relay_sub(spec):
    loop = asyncio.get_running_loop()
    n = spec["n"]
    done = loop.create_future()
    st = dict(count=0, buf=b"")
    stamps = Stamps(spec.get("warmup", 0))
    tns, size = time.time_ns, STAMP.size

    class Sub(asyncio.Protocol):
        def data_received(self, data):
            now = tns()
            buf = st["buf"] + data
            k = len(buf) - len(buf) % size
            for off in range(0, k, size):
                stamps.add(now, buf, off)
                st["count"] += 1
            st["buf"] = buf[k:]
            if st["count"] >= n and not done.done():
                done.set_result(None)

    transport, _ = await loop.create_connection(Sub, "127.0.0.1", spec["port"])
    await asyncio.sleep(0.05)  # the relay has seen the connection
    timed_out, cpu0 = await ready_until(done, spec)
    transport.close()
    return dict(received=st["count"], latencies_ns=stamps.samples,
                out_of_order=stamps.out_of_order, timed_out=timed_out,
                cpu_s=time.process_time() - cpu0)


WORKERS = {
    ("nats", "pub"): nats_pub, ("nats", "sub"): nats_sub, ("nats", "req"): nats_req,
    ("nats", "reply"): nats_reply,
    ("ff", "pub"): ff_pub, ("ff", "sub"): ff_sub, ("ff", "req"): ff_req,
    ("ff", "reply"): ff_reply,
    ("ffraw", "pub"): ffraw_pub, ("ffraw", "sub"): ffraw_sub,
    ("echo", "server"): echo_server, ("echo", "client"): echo_client,
    ("relay", "server"): relay_server, ("relay", "pub"): relay_pub, ("relay", "sub"): relay_sub,
}


def worker_main(spec_json):
    set_pdeathsig()
    spec = json.loads(spec_json)
    if spec["client"] == "ffbatch":  # fastflow.client publishing with publish_batch
        spec.update(client="ff", batch=True)
    fn = WORKERS[(spec["client"], spec["role"])]
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            res = uvloop.run(asyncio.wait_for(fn(spec), spec["timeout"] + 15))
        else:
            res = asyncio.run(asyncio.wait_for(fn(spec), spec["timeout"] + 15))
    except BaseException as exc:  # reported to the script, which says what failed
        if isinstance(exc, KeyboardInterrupt):
            raise
        emit({"error": "{}: {}".format(type(exc).__name__, exc)})
        return 1
    res["loop"] = "uvloop" if uvloop is not None else "asyncio"
    res["cpu_total_s"] = time.process_time()
    if "minflt" in _MARK:
        res["minflt"] = minor_faults() - _MARK["minflt"]
    emit(res)
    return 0


# =============================================================================
# The script: servers, child processes, runs, report.
# =============================================================================

class Child:
    """A child process whose stdout lines (JSON) are read by a thread."""

    ALL = []

    def __init__(self, name, argv, **kw):
        self.name = name
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=REPO, **kw)
        Child.ALL.append(self)
        self.lines = queue.Queue()
        self.err = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put, True),
                         daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append, False),
                         daemon=True).start()

    @staticmethod
    def _read(stream, put, eof_marker):
        for line in iter(stream.readline, b""):
            put(line.decode("utf-8", "replace"))
        if eof_marker:
            put(None)

    def stderr_tail(self, n=400):
        return "".join(self.err)[-n:].strip()

    def next_json(self, deadline):
        """The next JSON line, or raise RuntimeError (timeout, exit, garbage)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("{}: no answer in time".format(self.name))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                raise RuntimeError("{}: no answer in time".format(self.name)) from None
            if line is None:
                self.proc.wait(5)
                raise RuntimeError("{}: exited with {} ({})".format(
                    self.name, self.proc.returncode, self.stderr_tail() or "no stderr"))
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing to stdout)
            if "error" in obj:
                raise RuntimeError("{}: {} ({})".format(self.name, obj["error"],
                                                        self.stderr_tail(200)))
            return obj

    def stop(self, grace=3.0):
        p = self.proc
        if p.poll() is None:
            try:
                p.terminate()
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            except OSError:
                pass
        if self in Child.ALL:
            Child.ALL.remove(self)

    def finish(self, deadline):
        """Wait for the exit (bounded), then forget the child."""
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self.stop()

    @classmethod
    def stop_all(cls):
        for c in list(cls.ALL):
            c.stop(grace=2.0)


def on_signal(signum, frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(child, port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise RuntimeError("{} exited with {} at start: {}".format(
                child.name, child.proc.returncode, child.stderr_tail(600)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("{} is not listening on port {} after {:.0f} s".format(child.name, port,
                                                                             timeout))


def system_busy_s():
    """CPU seconds (all cores) the machine spent not idle so far, from /proc/stat."""
    line = (read_text("/proc/stat") or "").splitlines()[:1]
    if not line or not line[0].startswith("cpu "):
        return None
    f = [int(x) for x in line[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def other_cpu(busy0, busy1, interval, server_cpu, results):
    """CPU (in cores) the machine spent during ``interval`` s outside the
    broker and the workers (their CPU from ``results``: cpu_total_s of the
    publisher, cpu_s of the others): other processes, this script."""
    if busy0 is None or busy1 is None or server_cpu is None or interval <= 0:
        return None
    ours = server_cpu + results[0].get("cpu_total_s", results[0].get("cpu_s", 0)) + sum(
        r.get("cpu_s", 0) for r in results[1:])
    return max(0.0, (busy1 - busy0) - ours) / interval


def proc_stat(pid):
    """(user + system CPU seconds, minor page faults) of ``pid`` so far, or
    (None, None)."""
    stat = read_text("/proc/{}/stat".format(pid))
    if not stat:
        return None, None
    f = stat.rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"), int(f[7])


class Server:
    def __init__(self, kind, child, port, url, version):
        self.kind, self.child, self.port, self.url, self.version = kind, child, port, url, version

    def stat(self):
        return proc_stat(self.child.proc.pid)

    def alive(self):
        return self.child.proc.poll() is None


def nats_server_exe():
    """(the nats-server on PATH, its version "vX.Y.Z"); RuntimeError if none."""
    exe = shutil.which("nats-server")
    if not exe:
        raise RuntimeError("nats-server is not on PATH")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    return exe, version.split(": ", 1)[-1] if version.startswith("nats-server") else version


def start_nats_server():
    exe, version = nats_server_exe()
    port = free_port()
    child = Child("nats-server", [exe, "-a", "127.0.0.1", "-p", str(port)])
    wait_listening(child, port, 15)
    return Server("nats", child, port, "nats://127.0.0.1:{}".format(port),
                  "nats-server " + version)


def start_fastflow_server(extra_args=(), log_level="warning", monitor_port=0, name=None):
    """``python -m fastflow serve`` on a free port (``extra_args``: more
    options, e.g. compare_nats.py's ``--nats-port``; ``monitor_port``: 0 =
    no monitoring; ``name``: the Child's, for messages)."""
    port = free_port()
    child = Child(name or "fastflow serve", [sys.executable, "-m", "fastflow", "serve", "--port",
                                             str(port), "--monitor-port", str(monitor_port),
                                             "--log-level", log_level, *extra_args])
    wait_listening(child, port, 20)
    import fastflow

    return Server("fastflow", child, port, "fastflow://127.0.0.1:{}".format(port),
                  "fastflow {}".format(fastflow.__version__))


def serve_accepts(option):
    """None when ``fastflow serve --help`` lists ``option``, else why not
    (the scripts' test for a door or a feature that may not have landed)."""
    try:
        r = subprocess.run([sys.executable, "-m", "fastflow", "serve", "--help"],
                           capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return "`fastflow serve --help` failed: {}".format(exc)
    if r.returncode:
        return "`fastflow serve --help` failed: {}".format(r.stderr.strip()[-200:])
    if option not in r.stdout:
        return "`fastflow serve --help` lists no {}".format(option)
    return None


def build_go(tmpdir):
    """Compile natsbench.go; returns (path, None) or (None, why not)."""
    go = shutil.which("go")
    if not go:
        return None, "`go` is not on PATH"
    if not os.path.isdir(NATS_GO_SRC):
        return None, "no nats.go source under {} (Debian golang-github-nats-io-go-nats-dev)".format(
            NATS_GO_SRC)
    out = os.path.join(tmpdir, "natsbench")
    env = dict(os.environ, GO111MODULE="off", GOPATH=DEBIAN_GOPATH, GOFLAGS="",
               GOCACHE=os.path.join(tmpdir, "gocache"), CGO_ENABLED="0")
    try:
        r = subprocess.run([go, "build", "-o", out, GO_SRC], capture_output=True, text=True,
                           env=env, timeout=300, cwd=tmpdir)
    except subprocess.TimeoutExpired:
        return None, "go build did not finish in 300 s"
    if r.returncode != 0:
        return None, "go build failed: " + (r.stderr.strip()[-300:] or "exit {}".format(
            r.returncode))
    v = subprocess.run([go, "version"], capture_output=True, text=True, timeout=10).stdout.strip()
    return out, v


# -- launching the roles ----------------------------------------------------------

class Bench:
    def __init__(self, args, cfg):
        self.args, self.cfg = args, cfg
        self.servers = {}
        self.go = None
        self.go_why = None
        self.skipped = {}  # client -> why
        self.sanity = []
        self.facts = {}
        self.worker_script = os.path.abspath(__file__)  # runs the Python workers (--worker)

    def spawn(self, client, role, spec, name):
        """A worker process for ``client`` in ``role`` with ``spec``."""
        if client == "go":
            s = spec
            argv = [self.go, "-mode", role, "-url", s["url"], "-n", str(s["n"]), "-size",
                    str(s["size"]), "-timeout", "{}s".format(int(s["timeout"]))]
            subject = LAT_SUBJECT if s.get("kind") == "lat" else (
                RR_SUBJECT if role in ("req", "reply") else SUBJECT)
            argv += ["-subject", subject]
            if s.get("rate"):
                argv += ["-rate", str(s["rate"])]
            if s.get("lat"):
                argv += ["-lat"]
            if s.get("clock"):
                argv += ["-clock", s["clock"]]
            if s.get("warmup"):
                argv += ["-warmup", str(s["warmup"])]
            if s.get("window"):
                argv += ["-ack", ACK, "-window", str(s["window"]), "-subs", str(s.get("subs", 1))]
            if s.get("ack_every"):
                argv += ["-ack", ACK, "-ack-every", str(s["ack_every"]), "-id", str(s.get("id", 0))]
            return Child(name, argv)
        full = dict(spec, client=client, role=role)
        return Child(name, [sys.executable, self.worker_script, "--worker", json.dumps(full)])

    def timeout_for(self, deliveries):
        """A bound for a run of ``deliveries``: at a pessimistic 20k/s, 20-600 s."""
        return min(600.0, 20.0 + deliveries / 20_000.0)

    # -- throughput ---------------------------------------------------------------

    def window(self, size):
        if self.args.window:
            return self.args.window
        # <= 32 MiB of queued MSG frames (nats-server's default max_pending is 64 MiB)
        return max(1000, min(500_000, (32 << 20) // (size + 48)))

    def run_tput(self, row, n, server=None, pub_server=None, watch=None, before_pub=None):
        """One throughput run of ``row`` with ``n`` published messages.  The
        subscribers connect to ``server`` (default the client's own), the
        publisher to ``pub_server`` (default the same); ``watch``: the
        servers whose CPU and faults are counted (default those two), summed
        in server_cpu and one by one in server_cpus; ``before_pub(deadline)``:
        called once the subscribers are ready, before the publisher starts
        (compare_cluster.py waits there until the subscription is known
        where the publisher is)."""
        client, size, subs = row["client"], row["size"], row["subs"]
        server = server or self.servers[CLIENTS[client][1]]
        pub_server = pub_server or server
        if watch is None:
            watch = [server] if pub_server is server else [pub_server, server]
        win = self.window(size)
        timeout = self.timeout_for(n * subs)
        deadline = time.monotonic() + timeout + 10
        base = dict(url=server.url, n=n, size=size, timeout=timeout, kind="tput")
        children = []
        try:
            for i in range(subs):
                children.append(self.spawn(client, "sub", dict(base, id=i,
                                                               ack_every=max(1, win // 8)),
                                           "{} sub {}".format(CLIENTS[client][0], i)))
            for c in children:
                c.next_json(time.monotonic() + 30)
            if before_pub is not None:
                before_pub(time.monotonic() + 30)
            stats0 = [s.stat() for s in watch]
            busy0, m0 = system_busy_s(), time.monotonic()
            pub = self.spawn(client, "pub", dict(base, url=pub_server.url, window=win, subs=subs),
                             "{} pub".format(CLIENTS[client][0]))
            children.append(pub)
            p = pub.next_json(deadline)
            rs = [c.next_json(deadline) for c in children[:subs]]
            stats1 = [s.stat() for s in watch]
            busy1, m1 = system_busy_s(), time.monotonic()
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        cpus = [b[0] - a[0] if a[0] is not None and b[0] is not None else None
                for a, b in zip(stats0, stats1)]
        faults = [b[1] - a[1] if a[1] is not None and b[1] is not None else None
                  for a, b in zip(stats0, stats1)]
        cpu0, cpu1 = (0.0, sum(cpus)) if None not in cpus else (None, None)
        flt0, flt1 = (0, sum(faults)) if None not in faults else (None, None)
        deliveries = sum(r["received"] for r in rs)
        t_end = max(r["last_ns"] for r in rs)
        wall = max(1e-9, (t_end - p["start_ns"]) / 1e9)
        sub_wall = max(1e-9, (t_end - min(r["first_ns"] for r in rs if r["first_ns"])) / 1e9) \
            if any(r["first_ns"] for r in rs) else None
        res = dict(n=n, deliveries=deliveries, expected=n * subs, seconds=wall,
                   rate=deliveries / wall, pub_rate=p["sent"] / max(1e-9, p["seconds"]),
                   sub_side_rate=deliveries / sub_wall if sub_wall else None,
                   server_cpu=((cpu1 - cpu0) / wall) if cpu0 is not None and cpu1 is not None
                   else None,
                   server_cpus=[None if c is None else c / wall for c in cpus],
                   server_faults_per_1k=(1000.0 * (flt1 - flt0) / max(1, deliveries)
                                         if flt0 is not None and flt1 is not None else None),
                   pub_faults_per_1k=1000.0 * p.get("minflt", 0) / max(1, p["sent"]),
                   sub_faults_per_1k=1000.0 * statistics.mean(r.get("minflt", 0) for r in rs)
                   / max(1, n),
                   pub_cpu=p.get("cpu_s", 0) / wall,
                   sub_cpu=statistics.mean(r.get("cpu_s", 0) for r in rs) / wall,
                   window=win, window_waits=p.get("window_waits"),
                   other_cpu=other_cpu(busy0, busy1, m1 - m0, cpu1 - cpu0 if cpu0 is not None
                                       else None, [p] + rs),
                   timed_out=bool(p.get("timed_out")) or any(r.get("timed_out") for r in rs),
                   errors=(p.get("errors") or []) + [e for r in rs for e in r.get("errors") or []])
        if deliveries != n * subs or res["timed_out"]:
            self.sanity.append("{}: {:,} deliveries of {:,}{}{}".format(
                row["label"], deliveries, n * subs, " (timed out)" if res["timed_out"] else "",
                "; errors: " + "; ".join(res["errors"][:3]) if res["errors"] else ""))
        return res

    # -- latency ------------------------------------------------------------------

    def run_oneway(self, client, n, warm, server=None, pub_server=None, before_pub=None,
                   clock=None):
        """One paced one-way run: the subscriber on ``server`` (default the
        client's own), the publisher on ``pub_server`` (default the same);
        ``before_pub`` as in run_tput; ``clock``: a CLOCKS name for the
        stamps (default CLOCK_REALTIME)."""
        server = server or self.servers[CLIENTS[client][1]]
        pub_server = pub_server or server
        rate = self.args.lat_rate
        timeout = 30 + (n + warm) / rate * 3
        base = dict(url=server.url, n=n + warm, size=16, timeout=timeout, kind="lat")
        if clock:
            base["clock"] = clock
        children = []
        try:
            sub = self.spawn(client, "sub", dict(base, lat=True, warmup=warm),
                             "{} lat sub".format(CLIENTS[client][0]))
            children.append(sub)
            sub.next_json(time.monotonic() + 30)
            if before_pub is not None:
                before_pub(time.monotonic() + 30)
            pub = self.spawn(client, "pub", dict(base, url=pub_server.url, rate=rate),
                             "{} lat pub".format(CLIENTS[client][0]))
            children.append(pub)
            deadline = time.monotonic() + timeout + 10
            p = pub.next_json(deadline)
            r = sub.next_json(deadline)
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        if r["received"] != n + warm or r.get("out_of_order"):
            self.sanity.append("one-way {}: {} of {} received, {} out of order".format(
                client, r["received"], n + warm, r.get("out_of_order")))
        return dict(samples=r["latencies_ns"], pub_seconds=p["seconds"], sent=p["sent"],
                    pub_start_ns=p.get("start_ns"), pub_end_ns=p.get("end_ns"),
                    cpu=dict(pub=p.get("cpu_s"), sub=r.get("cpu_s")))

    def run_rr(self, client, n, warm, server=None):
        server = server or self.servers[CLIENTS[client][1]]
        timeout = 30 + (n + warm) / 2000
        base = dict(url=server.url, size=16, timeout=timeout, kind="rr")
        children = []
        try:
            rep = self.spawn(client, "reply", dict(base, n=n + warm),
                             "{} replier".format(CLIENTS[client][0]))
            children.append(rep)
            rep.next_json(time.monotonic() + 30)
            req = self.spawn(client, "req", dict(base, n=n, warmup=warm),
                             "{} requester".format(CLIENTS[client][0]))
            children.append(req)
            deadline = time.monotonic() + timeout + 10
            q = req.next_json(deadline)
            a = rep.next_json(deadline)
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        if len(q["rtts_ns"]) != n or a.get("answered") != n + warm:
            self.sanity.append("request/reply {}: {} round trips, {} answered (expected {}, {})"
                               .format(client, len(q["rtts_ns"]), a.get("answered"), n, n + warm))
        return dict(samples=q["rtts_ns"], cpu=dict(req=q.get("cpu_s"), reply=a.get("cpu_s")))

    def run_relay(self, n, warm):
        """One-way through a uvloop process that only forwards bytes."""
        rate = self.args.lat_rate
        timeout = 30 + (n + warm) / rate * 3
        children = []
        try:
            srv = self.spawn("relay", "server", dict(timeout=timeout + 30), "relay")
            children.append(srv)
            port = srv.next_json(time.monotonic() + 30)["port"]
            sub = self.spawn("relay", "sub", dict(port=port, n=n + warm, warmup=warm,
                                                  timeout=timeout), "relay sub")
            children.append(sub)
            sub.next_json(time.monotonic() + 30)
            pub = self.spawn("relay", "pub", dict(port=port, n=n + warm, rate=rate,
                                                  timeout=timeout), "relay pub")
            children.append(pub)
            deadline = time.monotonic() + timeout + 10
            p = pub.next_json(deadline)
            r = sub.next_json(deadline)
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        if r["received"] != n + warm or r.get("out_of_order"):
            self.sanity.append("relay: {} of {} received, {} out of order".format(
                r["received"], n + warm, r.get("out_of_order")))
        return dict(samples=r["latencies_ns"], cpu=dict(pub=p.get("cpu_s"), sub=r.get("cpu_s")))

    def run_echo(self, n, warm, rate=0):
        timeout = 30 + (n + warm) / 2000 + (n + warm) / max(1, rate or 1e9) * 3
        children = []
        try:
            srv = self.spawn("echo", "server", dict(timeout=timeout), "echo server")
            children.append(srv)
            port = srv.next_json(time.monotonic() + 30)["port"]
            cli = self.spawn("echo", "client", dict(port=port, n=n, warmup=warm, size=16,
                                                    timeout=timeout + n / max(1, rate or 1e9),
                                                    rate=rate), "echo client")
            children.append(cli)
            deadline = time.monotonic() + timeout + 10
            q = cli.next_json(deadline)
            srv.next_json(deadline)
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        self.facts["echo_nodelay"] = q.get("nodelay")
        return dict(samples=q["rtts_ns"], cpu=dict(client=q.get("cpu_s")))


# -- sections -----------------------------------------------------------------------

def tput_rows(bench):
    rows = []
    for subs in (1, bench.args.fanout):
        for size in bench.args.sizes:
            if subs != 1 and size not in bench.args.fanout_sizes:
                continue
            for client in bench.clients:
                label, server = CLIENTS[client]
                key = "{}_{}to{}_{}".format(client, 1, subs, size)
                target = None
                if client in ("ff", "ffbatch", "ffraw"):
                    target = TARGET_FF_1TO1 if subs == 1 else TARGET_FF_FANOUT
                rows.append(dict(key=key, client=client, server=server, subs=subs, size=size,
                                 target=target, vs="go_1to{}_{}".format(subs, size),
                                 label="{} -> {}, 1 -> {}, {} B".format(
                                     label, SERVERS[server], subs, size)))
    return rows


def section_tput(bench):
    cfg = bench.cfg
    rows = tput_rows(bench)
    if not rows:
        return rows
    say("")
    say("[throughput] {} rows: a warm-up run each sizes N for ~{} s runs, then {} interleaved "
        "runs ...".format(len(rows), cfg["run_s"], cfg["repeat"]))
    t0 = time.perf_counter()
    live = []
    for row in rows:
        row["runs"] = []
        if row["client"] in bench.skipped:
            continue
        try:
            w = bench.run_tput(row, cfg["calib_n"])
        except RuntimeError as exc:
            row["error"] = str(exc)
            say("  {}: FAILED in the warm-up run: {}".format(row["label"], exc))
            continue
        per_pub = w["rate"] / row["subs"]
        n = int(min(cfg["max_n"], max(cfg["min_n"], per_pub * cfg["run_s"])))
        row["n"] = -(-n // 1000) * 1000
        row["warmup"] = w
        say("  {}: warm-up {} ({:,} msgs); N = {:,}".format(row["label"], fmt_rate(w["rate"]),
                                                             cfg["calib_n"], row["n"]))
        live.append(row)
    for rep in range(cfg["repeat"]):
        for row in live:
            if row.get("error"):
                continue
            try:
                row["runs"].append(bench.run_tput(row, row["n"]))
            except RuntimeError as exc:
                row["error"] = str(exc)
                say("  {}: FAILED in run {}: {}".format(row["label"], rep + 1, exc))
        say("  run {}/{} done ({:.0f} s)".format(rep + 1, cfg["repeat"],
                                                 time.perf_counter() - t0))
    bench.facts.setdefault("section_s", {})["throughput"] = time.perf_counter() - t0
    for row in rows:
        runs = row["runs"]
        if runs:
            row["median_rate"] = statistics.median(r["rate"] for r in runs)
            for k in ("server_cpu", "pub_cpu", "sub_cpu", "pub_rate", "sub_side_rate",
                      "other_cpu", "server_faults_per_1k", "pub_faults_per_1k",
                      "sub_faults_per_1k"):
                vals = [r[k] for r in runs if r.get(k) is not None]
                row["median_" + k] = statistics.median(vals) if vals else None
    by_key = {r["key"]: r for r in rows}
    for row in rows:
        ref = by_key.get(row["vs"])
        row["vs_ratio"] = (row["median_rate"] / ref["median_rate"]
                           if ref and ref.get("median_rate") and row.get("median_rate") else None)
        row["pass"] = (None if row["target"] is None or row.get("median_rate") is None
                       else row["median_rate"] >= row["target"])
    return rows


def summarize_lat(per_run):
    from fastflow._stats import percentile as pct

    pooled = sorted(v for run in per_run for v in run)
    out = {"samples": len(pooled)}
    for q, k in ((50, "p50_ns"), (90, "p90_ns"), (99, "p99_ns"), (99.9, "p99_9_ns")):
        out[k] = pct(pooled, q)
    out["max_ns"] = pooled[-1] if pooled else None
    out["min_ns"] = pooled[0] if pooled else None
    out["run_p50_ns"] = [pct(sorted(r), 50) for r in per_run]
    out["run_p99_ns"] = [pct(sorted(r), 99) for r in per_run]
    return out


def section_latency(bench):
    cfg = bench.cfg
    rate = bench.args.lat_rate
    oneway_clients = [c for c in bench.clients if c in ONEWAY_CLIENTS]
    rr_clients = [c for c in bench.clients if c in RR_CLIENTS]
    lat_rows = [dict(key="echo_paced", kind="echo", client=None, rate=rate,
                     label="(floor) uvloop <-> uvloop echo, 16 B",
                     what="round trip, {:,}/s".format(rate)),
                dict(key="relay", kind="relay", client=None,
                     label="(floor) uvloop -> uvloop relay -> uvloop, 16 B",
                     what="one-way, {:,}/s".format(rate))]
    for client in oneway_clients:
        label, server = CLIENTS[client]
        lat_rows.append(dict(key="oneway_" + client, kind="oneway", client=client,
                             label="{} -> {} -> {}".format(label, SERVERS[server], label),
                             what="one-way, {:,}/s".format(rate)))
    lat_rows.append(dict(key="echo", kind="echo", client=None, rate=0,
                         label="(floor) uvloop <-> uvloop echo, 16 B",
                         what="round trip, back to back"))
    for client in rr_clients:
        label, server = CLIENTS[client]
        lat_rows.append(dict(key="rr_" + client, kind="rr", client=client,
                             label="{} <-> {} <-> {}".format(label, SERVERS[server], label),
                             what="request/reply, back to back"))
    reps = cfg["lat_repeat"]
    lat_chunk = -(-cfg["lat_n"] // reps)
    rr_chunk = -(-cfg["rr_n"] // reps)
    warm = cfg["lat_warm"]
    say("")
    say("[latency] one-way: {:,} samples per row at ~{:,} msgs/s; request/reply and echo: {:,} "
        "round trips per row; {} interleaved runs each (+{} warm-up per run) ...".format(
            lat_chunk * reps, bench.args.lat_rate, rr_chunk * reps, reps, warm))
    t0 = time.perf_counter()
    for r in lat_rows:
        r["runs"] = []
        r["cpu"] = []
    for rep in range(reps):
        for r in lat_rows:
            if r.get("error") or r["client"] in bench.skipped:
                continue
            try:
                if r["kind"] == "echo":
                    res = bench.run_echo(lat_chunk if r["rate"] else rr_chunk, warm, r["rate"])
                elif r["kind"] == "relay":
                    res = bench.run_relay(lat_chunk, warm)
                elif r["kind"] == "oneway":
                    res = bench.run_oneway(r["client"], lat_chunk, warm)
                else:
                    res = bench.run_rr(r["client"], rr_chunk, warm)
            except RuntimeError as exc:
                r["error"] = str(exc)
                say("  {} {}: FAILED: {}".format(r["label"], r["what"], exc))
                continue
            r["runs"].append(res["samples"])
            r["cpu"].append(res["cpu"])
        say("  run {}/{} done ({:.0f} s)".format(rep + 1, reps, time.perf_counter() - t0))
    bench.facts.setdefault("section_s", {})["latency"] = time.perf_counter() - t0
    for r in lat_rows:
        if r["runs"]:
            r["summary"] = summarize_lat(r["runs"])
            neg = r["summary"]["min_ns"]
            if neg is not None and neg < 0:
                bench.sanity.append("{}: negative latency {} ns (clocks?)".format(r["label"], neg))
    return lat_rows


# -- report -------------------------------------------------------------------------------

def fmt_us(ns):
    if ns is None:
        return "-"
    return "{:,.0f} us".format(ns / 1000) if ns >= 100_000 else "{:,.1f} us".format(ns / 1000)


def fmt_pct(x):
    return "-" if x is None else "{:.0f}%".format(100 * x)


def verdict(ok):
    return "PASS" if ok else "MISS"


def cpu_ns(r):
    """CPU ns per message: the broker's per delivery, the publisher's per
    published message, a subscriber's per message received."""
    rate = r["median_rate"]
    per_pub = rate / r["subs"]
    if r.get("median_server_cpu") is None:
        return "-"
    return "{:.0f} / {:.0f} / {:.0f}".format(r["median_server_cpu"] / rate * 1e9,
                                             r["median_pub_cpu"] / per_pub * 1e9,
                                             r["median_sub_cpu"] / per_pub * 1e9)


def tput_table(bench, rows):
    table = []
    last = None
    for r in rows:
        group = r["subs"]
        if last is not None and group != last:
            table.append(None)
        last = group
        label, server = CLIENTS[r["client"]]
        if r["client"] in bench.skipped:
            table.append([label, SERVERS[server], "1 -> {}".format(r["subs"]),
                          "{} B".format(r["size"]), "-", "skipped: " + bench.skipped[r["client"]],
                          "", "", "", "", "", "", ""])
            continue
        if not r.get("runs"):
            table.append([label, SERVERS[server], "1 -> {}".format(r["subs"]),
                          "{} B".format(r["size"]), "-", "FAILED (below)",
                          "", "", "", "", "", "", ""])
            continue
        rates = [x["rate"] for x in r["runs"]]
        table.append([
            label, SERVERS[server], "1 -> {}".format(r["subs"]), "{} B".format(r["size"]),
            "{:,}".format(r["n"] * r["subs"]), fmt_rate(r["median_rate"]),
            "{:.2f}-{:.2f}".format(min(rates) / 1e6, max(rates) / 1e6),
            fmt_rate(r["median_pub_rate"]),
            "{} / {} / {}".format(fmt_pct(r["median_server_cpu"]), fmt_pct(r["median_pub_cpu"]),
                                  fmt_pct(r["median_sub_cpu"])),
            cpu_ns(r),
            "-" if r.get("median_server_faults_per_1k") is None else "{:.1f}".format(
                r["median_server_faults_per_1k"]),
            "" if r["key"] == r["vs"] else fmt_ratio(r["vs_ratio"]),
            "" if r["target"] is None else ">= {} {}".format(fmt_rate(r["target"]),
                                                             verdict(r["pass"])),
        ])
    return render_table(["client", "server", "pub -> subs", "payload", "deliveries/run",
                         "delivered/s", "range M/s", "publish/s", "CPU srv/pub/sub",
                         "ns/msg srv/pub/sub", "srv faults/1k", "vs. Go/nats", "target"], table,
                        "<<<>>>>>>>><<")


def lat_table(bench, lat_rows):
    by = {r["key"]: r for r in lat_rows}
    echo = by["echo"].get("summary")  # back to back: the request/reply rows' floor
    paced = by["echo_paced"].get("summary")  # paced like the one-way rows: their floor
    relay = by["relay"].get("summary")  # a do-nothing uvloop broker, paced
    table = []
    last = None
    for r in lat_rows:
        if last is not None and r["kind"] != last:
            table.append(None)
        last = r["kind"]
        if r["client"] in bench.skipped:
            table.append([r["label"], r["what"], "-", "skipped: " + bench.skipped[r["client"]],
                          "", "", "", "", "", "", ""])
            continue
        s = r.get("summary")
        if not s:
            table.append([r["label"], r["what"], "-", "FAILED (below)",
                          "", "", "", "", "", "", ""])
            continue
        floor = paced if r["kind"] in ("oneway", "relay") else echo if r["kind"] == "rr" else None
        ratio = fmt_ratio(s["p50_ns"] / floor["p50_ns"]) if floor else ""
        vs_relay = (fmt_ratio(s["p50_ns"] / relay["p50_ns"])
                    if relay and r["kind"] == "oneway" else "")
        target = ""
        if r["key"] == "oneway_ff" and paced:
            lim = TARGET_ONEWAY_VS_ECHO * paced["p50_ns"]
            r["target_ns"] = lim
            r["pass"] = s["p50_ns"] <= lim
            target = "p50 <= {} {}".format(fmt_us(lim), verdict(r["pass"]))
        elif r["key"] == "rr_ff" and by.get("rr_go", {}).get("summary"):
            g = by["rr_go"]["summary"]
            r["pass"] = s["p50_ns"] <= g["p50_ns"] and s["p99_ns"] <= g["p99_ns"]
            target = "p50, p99 <= Go/nats {}".format(verdict(r["pass"]))
        table.append([r["label"], r["what"], "{:,}".format(s["samples"]), fmt_us(s["p50_ns"]),
                      fmt_us(s["p90_ns"]), fmt_us(s["p99_ns"]), fmt_us(s["p99_9_ns"]),
                      fmt_us(s["max_ns"]), ratio, vs_relay, target])
    return render_table(["path", "measure", "samples", "p50", "p90", "p99", "p99.9", "max",
                         "p50 vs. echo", "vs. relay", "target"], table, "<<>>>>>>>><")


def machine_facts(bench):
    load = read_text("/proc/loadavg")
    m = {**cpu_facts(), "python": python_desc(), "platform": platform.platform(),
         "loadavg": " ".join(load.split()[:3]) if load else None, **fastflow_facts()}
    try:
        import nats

        m["nats_py"] = getattr(nats, "__version__", None) or _dist_version("nats-py")
    except ImportError:
        m["nats_py"] = None
    try:
        import uvloop

        m["uvloop"] = uvloop.__version__
    except ImportError:
        m["uvloop"] = None
    return m


def _dist_version(name):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001 - a missing distribution is just unknown
        return None


def format_machine(m):
    return (
        "machine: {cpu}{mhz}, {cores} cores ({usable_cores} usable); {python}; {platform}\n"
        "fastflow {fastflow} ({kind}; git {git}; _core built {built}); nats-py {nats_py}; "
        "uvloop {uvloop}; load average {load}".format(
            load=m["loadavg"] or "?", **machine_format_fields(m),
            **{k: v for k, v in m.items() if k != "cpu_mhz"}))


# -- main ------------------------------------------------------------------------------------

def parse_sizes(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--repeat", type=int, help="throughput runs per row (default 5; --quick 2)")
    ap.add_argument("--run-seconds", type=float,
                    help="about how long a throughput run lasts (default 1.5; --quick 0.4)")
    ap.add_argument("--sizes", type=parse_sizes, default=[16, 128],
                    help="payload bytes of the throughput rows (default 16,128)")
    ap.add_argument("--fanout", type=int, default=5,
                    help="subscribers of the fan-out rows (default %(default)s)")
    ap.add_argument("--fanout-sizes", type=parse_sizes, default=[16, 128],
                    help="payload sizes with a fan-out row (default 16,128)")
    ap.add_argument("--clients", default="ff,ffbatch,ffraw,nats,go",
                    help="which clients to run: ff (fastflow.client, publish() per message), "
                         "ffbatch (fastflow.client, publish_batch() of 1,000 and batch=True "
                         "subscribers; throughput only), ffraw (the fastflow codec without the "
                         "client; throughput only), nats (nats-py), go (default %(default)s)")
    ap.add_argument("--window", type=int, default=0,
                    help="most messages a publisher runs ahead of its slowest subscriber "
                         "(default: 32 MiB of frames, at most 500,000)")
    ap.add_argument("--lat-rate", type=int, default=1000,
                    help="messages/s of the one-way latency runs (default %(default)s)")
    ap.add_argument("--lat-samples", type=int, help="one-way samples per row (default 10,000)")
    ap.add_argument("--rr-samples", type=int,
                    help="request/reply and echo round trips per row (default 10,000)")
    ap.add_argument("--skip-throughput", action="store_true",
                    help="leave out the throughput rows (a, b)")
    ap.add_argument("--skip-latency", action="store_true", help="leave out the latency rows (c)")
    add_output_args(ap, quick_help="smoke run (about a minute): runs of ~0.4 s, 2 repeats, "
                                    "1,500 one-way and 2,000 round-trip samples")
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    cfg = dict(QUICK if args.quick else FULL)
    if args.repeat:
        cfg["repeat"] = args.repeat
    if args.run_seconds:
        cfg["run_s"] = args.run_seconds
    if args.lat_samples:
        cfg["lat_n"] = args.lat_samples
    if args.rr_samples:
        cfg["rr_n"] = args.rr_samples
    if cfg["repeat"] < 1:
        ap.error("--repeat must be >= 1")
    if args.json:
        report_to(sys.stderr)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    for c in clients:
        if c not in CLIENTS:
            ap.error("unknown client {!r} (ff, ffbatch, ffraw, nats, go)".format(c))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(Child.stop_all)

    t_start = time.perf_counter()
    bench = Bench(args, cfg)
    bench.clients = clients
    machine = machine_facts(bench)
    say(format_machine(machine))
    tmpdir = tempfile.mkdtemp(prefix="compare_broker.")
    try:
        if "go" in clients:
            bench.go, why = build_go(tmpdir)
            if bench.go is None:
                bench.skipped["go"] = why
                say("Go client: skipped ({})".format(why))
            else:
                machine["go"] = why
                say("Go client: natsbench.go built with {} against nats.go from {}".format(
                    why, NATS_GO_SRC))
        for kind, start in (("nats", start_nats_server), ("fastflow", start_fastflow_server)):
            needed = [c for c in clients if CLIENTS[c][1] == kind and c not in bench.skipped]
            if not needed:
                continue
            try:
                bench.servers[kind] = start()
                s = bench.servers[kind]
                say("{}: {} on port {} (pid {})".format(SERVERS[kind], s.version, s.port,
                                                        s.child.proc.pid))
            except (RuntimeError, OSError) as exc:
                for c in needed:
                    bench.skipped[c] = "{} did not start: {}".format(SERVERS[kind], exc)
                say("{}: did not start: {}".format(SERVERS[kind], exc))
        machine["nats_server"] = bench.servers["nats"].version if "nats" in bench.servers else None

        rows = [] if args.skip_throughput else section_tput(bench)
        lat_rows = None if args.skip_latency else section_latency(bench)
        for kind, s in bench.servers.items():
            if not s.alive():
                bench.sanity.append("{} exited during the run ({}): {}".format(
                    SERVERS[kind], s.child.proc.returncode, s.child.stderr_tail(300)))
    finally:
        for kind, s in bench.servers.items():
            s.child.stop()
            bench.facts.setdefault("server_stderr_tail", {})[kind] = s.child.stderr_tail(2000)
        Child.stop_all()
        shutil.rmtree(tmpdir, ignore_errors=True)

    targets = report(bench, rows, lat_rows)
    total_s = time.perf_counter() - t_start
    say("total {:.0f} s".format(total_s))
    if args.json:
        write_json({
            "machine": machine,
            "config": dict(cfg, sizes=args.sizes, fanout=args.fanout,
                           fanout_sizes=args.fanout_sizes, clients=clients,
                           lat_rate=args.lat_rate, quick=args.quick),
            "throughput": [{k: v for k, v in r.items()} for r in rows],
            "latency": [{k: v for k, v in r.items() if k != "runs"} for r in lat_rows or []],
            "targets": targets,
            "skipped": bench.skipped,
            "facts": bench.facts,
            "sanity": bench.sanity,
            "total_s": total_s,
        })
    return 0 if not bench.sanity else 1


def report(bench, rows, lat_rows):
    quick = " [QUICK RUN: indicative only]" if bench.args.quick else ""
    targets = []
    if rows:
        say("")
        say(wrap("messages delivered/s (fan-out: deliveries/s summed over the subscribers), "
                 "median of {} runs, each with the publisher and every subscriber in its own "
                 "process (+ the broker: 3 processes, or {} for fan-out, share {} cores){}".format(
                     bench.cfg["repeat"], bench.args.fanout + 2, os.cpu_count(), quick)))
        say(tput_table(bench, rows))
        say(wrap("delivered/s: deliveries / (last delivery at any subscriber - first publish), "
                 "time.time_ns() in both processes.  publish/s: the publisher's own rate (to its "
                 "final flush).  CPU srv/pub/sub: CPU time of the broker, the publisher and a "
                 "subscriber (mean) over the run's wall time (100% = one core); ns/msg: the same "
                 "as CPU time per message (the broker's per delivery, the publisher's per "
                 "message published, a subscriber's per message received).  srv faults/1k: "
                 "the broker's minor page faults per 1,000 deliveries (first touches of fresh "
                 "memory: each costs the kernel a page zeroing).  The publisher "
                 "stays at most a window of messages ahead of the slowest subscriber ({}); a "
                 "publisher that waited on it was faster than the path.  vs. Go/nats: against "
                 "the Go client -> nats-server row of the same shape.".format(
                     ", ".join("{} B: {:,}".format(s, bench.window(s)) for s in bench.args.sizes))))
        others = [x["other_cpu"] for r in rows for x in r.get("runs", ())
                  if x.get("other_cpu") is not None]
        if others:
            say(wrap("CPU spent outside the broker and the workers during the runs (other "
                     "processes, this script; /proc/stat busy time minus theirs): median {} of "
                     "a core, max {}.".format(fmt_pct(statistics.median(others)),
                                              fmt_pct(max(others)))))
            if statistics.median(others) > 0.2:
                say(wrap("WARNING: something else used {} of a core during the median run: "
                         "the throughput figures are low by about that share of the machine; "
                         "rerun on a quiet machine.".format(fmt_pct(statistics.median(others)))))
        for r in rows:
            if r["client"] == "ff" and r.get("median_rate") is not None:
                targets.append({"what": r["label"], "key": r["key"], "kind": "rate",
                                "target": r["target"], "value": r["median_rate"],
                                "pass": r["pass"]})
    if lat_rows:
        say("")
        say("latency (pooled over the runs; one-way: publish -> subscriber callback; round "
            "trips: measured in the requesting process){}".format(quick))
        say(lat_table(bench, lat_rows))
        per_run = []
        for r in lat_rows:
            s = r.get("summary")
            if s:
                per_run.append("{}: {}".format(r["key"], ", ".join(fmt_us(v) for v in
                                                                   s["run_p99_ns"])))
        say(wrap("p99 per run: " + "; ".join(per_run) + ".  One-way stamps are time.time_ns() "
                 "(Go: time.Now().UnixNano(), also CLOCK_REALTIME) taken by the publisher just "
                 "before publish and by the subscriber on delivery; round trips are perf_counter "
                 "(Go: the monotonic clock) in the requester."))
        for r in lat_rows:
            if "pass" in r:
                s = r["summary"]
                targets.append({"what": r["label"] + " " + r["what"], "key": r["key"],
                                "kind": "latency", "p50_ns": s["p50_ns"], "p99_ns": s["p99_ns"],
                                "target_ns": r.get("target_ns"), "pass": r["pass"]})
    if targets:
        say("targets: " + "; ".join(
            "{}: {} {}".format(t["what"], fmt_rate(t["value"]) if t["kind"] == "rate" else
                               "p50 {} p99 {}".format(fmt_us(t["p50_ns"]), fmt_us(t["p99_ns"])),
                               verdict(t["pass"])) for t in targets) + quick)
    for r in (rows or []) + (lat_rows or []):
        if r.get("error"):
            say(wrap("FAILED {}{}: {}".format(r["label"], " " + r["what"] if "what" in r else "",
                                              r["error"])))
    for c, why in bench.skipped.items():
        say("skipped {}: {}".format(CLIENTS[c][0], why))
    say("sanity: " + ("OK (every subscriber got every message, every request its reply; no "
                      "timeouts; one-way sequences in order)" if not bench.sanity
                      else "; ".join(bench.sanity)))
    say("")
    say("caveats:")
    for c in (
        "{} cores: the broker, the publisher and the subscriber(s) are separate processes "
        "sharing them, so a row measures the path as a whole, CPU scheduling included; the "
        "CPU column says who was busy.".format(os.cpu_count()),
        "nats-server is written in Go and uses every core it is given; fastflow serve is one "
        "uvloop process (one core).  The Python workers (fastflow.client, nats-py) run on "
        "uvloop.",
        "The flow-control window (acks on {}.<i>) costs each subscriber one small publish per "
        "window/8 messages; it exists so that no broker drops a slow consumer.".format(ACK),
        "One-way latency compares clocks of two processes on one machine (CLOCK_REALTIME, the "
        "same system-wide clock); it is paced (one message per 1/rate s, no catch-up bursts), "
        "so it is latency at a light load, not under saturation.",
        "The echo floor is two processes and one hop each way; a broker path is two hops each "
        "way (publisher -> broker -> subscriber), so one-way through a broker is comparable "
        "to the echo's round trip.",
    ):
        say(wrap(c, "  ").replace("  ", "- ", 1))
    return targets


if __name__ == "__main__":
    sys.exit(main())
