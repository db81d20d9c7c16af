"""Compare fastflow's web doors (``fastflow serve --http-port``) with the
Python HTTP stack and with nats-server's WebSocket listener, all in one run.

Rows:

1. Ingest: one structured CloudEvent per request (``POST
   /events/ingest.orders``, ``Content-Type: application/cloudevents+json``,
   a 212-byte event), HTTP/1.1 keep-alive, 64 connections, driven by ``wrk``
   with ``benchmarks/wrk/cloudevents.lua``: requests/s, p50 and p99.  Peers:
   the floor of a Python HTTP service (``benchmarks/peers/http_floor.py``: a
   bare ASGI app on uvicorn + httptools + uvloop that reads the body and
   answers 202), FastAPI on uvicorn (``benchmarks/peers/http_fastapi.py``: a
   pydantic CloudEvent model, 202), and fastflow serve, whose memory stream
   ``ingest`` stores every event (``benchmarks/peers/fastflow_http.toml``).
   Target: fastflow >= 1.5x the floor.
2. Batch ingest: ``application/cloudevents-batch+json``, 1,000 of those
   events per POST, 8 connections: events/s.  Target: fastflow >= 1 M/s.
   The floor reads the same body; FastAPI parses it as a list of the model.
3. WebSocket delivery of 16-byte events to one subscriber written with the
   Python ``websockets`` library: nats-server's own WebSocket listener
   (``benchmarks/peers/nats_ws.conf``; the client speaks the NATS protocol:
   INFO, CONNECT, SUB, counts MSG lines) against fastflow's WebSocket door
   with the subprotocol ``fastflow`` (native frames in binary messages,
   read with the core's FrameParser) and with ``cloudevents.json`` (one
   JSON event per text message).  The publisher is a raw bulk publisher on
   each server's own TCP protocol (PUB lines; the core's
   ``OutBuf.publish_many``).  Messages/s at the subscriber; target:
   fastflow >= 1.0x nats-server for each subprotocol.
4. Latency at 1,000 events/s: an HTTP POST (binary content mode, a 16-byte
   stamp as the data) to a WebSocket subscriber (``cloudevents.json`` and
   ``fastflow``), and to a native subscriber; against the native door's
   figure in the same run (``fastflow.client`` publish -> ``fastflow.client``
   subscriber, compare_broker.py's workers).  p50 / p99 of now - stamp
   (``time.time_ns()``, both processes on this machine).

Processes: every server is a child process pinned to one core (``taskset``);
wrk and the WebSocket subscriber of row 3 are pinned to another; publishers
and the latency clients are not pinned.  Every child dies with this script
(``setpriv --pdeathsig``, and a stop at exit); every wait is bounded.
Each row: a warm-up, then ``--rounds`` rounds with the servers interleaved
(the order rotating); the figures are medians, with the min-max range.
``--json`` writes every figure as JSON to stdout (the report goes to stderr).
"""

import argparse
import asyncio
import atexit
import base64
import json
import mmap
import os
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import compare_broker as cb
from _common import (
    Interrupted,
    add_output_args,
    choices_arg,
    on_signal,
    render_table,
    report_to,
    rows_arg,
    say,
    wrap,
    write_json,
)

HERE = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.path.join(HERE, "peers")
LUA = os.path.join(HERE, "wrk", "cloudevents.lua")
FLOOR_APP = os.path.join(PEERS_DIR, "http_floor.py")
FASTAPI_APP = os.path.join(PEERS_DIR, "http_fastapi.py")
NATS_CONF = os.path.join(PEERS_DIR, "nats_ws.conf")
FASTFLOW_CONF = os.path.join(PEERS_DIR, "fastflow_http.toml")

INGEST_SUBJECT = "ingest.orders"  # captured by the stream "ingest" of FASTFLOW_CONF
INGEST_STREAM = "ingest"
WS_SUBJECT = "bench.ws"  # rows 3: no stream captures it
LAT_SUBJECT = cb.LAT_SUBJECT  # row 4: "bench.lat", compare_broker's latency subject
SIZE = 16
NATS_PAYLOAD = b"x" * SIZE  # no "MSG " or "PING" inside: the subscriber counts lines
WS_JSON = "cloudevents.json"
WS_BINARY = "fastflow"
WS_PATH = "/ws"

ROWS = (
    {"num": 1, "key": "ingest", "label": "ingest, 1 event/request"},
    {"num": 2, "key": "batch", "label": "batch ingest, 1,000 events/request"},
    {"num": 3, "key": "ws", "label": f"WebSocket delivery, {SIZE} B, 1 -> 1"},
    {"num": 4, "key": "latency", "label": "latency HTTP POST -> subscriber"},
)

HTTP_SERVERS = {  # key: (label, what it does)
    "floor": ("uvicorn floor", "bare ASGI app: reads the body, 202"),
    "fastapi": ("FastAPI", "pydantic CloudEvent model, 202"),
    "fastflow": ("fastflow", "validates, routes, stores in a memory stream, 202"),
}
WS_VARIANTS = {  # key: (server, label)
    "floor": (None, f"floor: pre-framed {WS_JSON} messages, no broker"),
    "nats": ("nats", "nats-server WebSocket (NATS protocol)"),
    "ff_binary": ("fastflow", f"fastflow WebSocket, subprotocol {WS_BINARY}"),
    "ff_json": ("fastflow", f"fastflow WebSocket, subprotocol {WS_JSON}"),
}
LAT_VARIANTS = {  # key: label
    "native": "native: fastflow.client -> fastflow.client",
    "http_json": f"HTTP POST -> WebSocket {WS_JSON}",
    "http_binary": f"HTTP POST -> WebSocket {WS_BINARY}",
    "http_native": "HTTP POST -> fastflow.client",
}

TARGET_INGEST = 1.5  # fastflow / floor, requests/s
TARGET_BATCH = 1e6  # fastflow events/s
TARGET_WS = 1.0  # fastflow / nats-server, messages/s

FULL = dict(rounds=5, seconds=5, warmup=2, connections=64, batch_connections=8, batch=1000,
            ws_seconds=2.0, ws_calib=200_000, ws_min=100_000, ws_max=20_000_000,
            lat_rate=1000, lat_n=5000, lat_warm=500, lat_rounds=3)
QUICK = dict(rounds=2, seconds=1, warmup=1, connections=64, batch_connections=8, batch=1000,
             ws_seconds=0.5, ws_calib=30_000, ws_min=20_000, ws_max=2_000_000,
             lat_rate=1000, lat_n=1000, lat_warm=100, lat_rounds=1)


# =============================================================================
# Workers (``compare_http.py --worker SPEC``): the WebSocket subscribers, the
# raw publishers of row 3 and the HTTP publisher of row 4.  Each prints JSON
# lines (compare_broker's convention): {"ready": true} once subscribed, then
# its result.  Every wait is bounded by spec["timeout"].
# =============================================================================

class Counter:
    """A subscriber's count shared with its publisher through a file mapped
    by both (8 bytes), so that the publisher stays at most a window ahead
    without the servers carrying acks (the same flow control for all)."""

    def __init__(self, path):
        self._f = open(path, "r+b")
        self._m = mmap.mmap(self._f.fileno(), 8)

    def set(self, n):
        struct.pack_into("<q", self._m, 0, n)

    def get(self):
        return struct.unpack_from("<q", self._m, 0)[0]


def ws_connect(url, subprotocol):
    """The same client settings for every server: no compression, no size
    limit, no keepalive pings, no proxy."""
    from websockets.asyncio.client import connect

    return connect(url, subprotocols=[subprotocol] if subprotocol else None, compression=None,
                   max_size=None, ping_interval=None, proxy=None, open_timeout=10,
                   close_timeout=2)


class SubState:
    """A subscriber's counts: every received message moves ``count``; the
    shared counter is written when it crosses a multiple of ``every``."""

    def __init__(self, spec, loop):
        self.n = spec["n"]
        self.count = 0
        self.first = self.last = 0
        self.done = loop.create_future()
        self.counter = Counter(spec["counter"]) if spec.get("counter") else None
        self.every = max(1, spec.get("report_every", 1000))
        self.stamps = cb.Stamps(spec.get("warmup", 0)) if spec.get("lat") else None
        self.errors = []

    def add(self, k, now):
        before = self.count
        self.count = c = before + k
        if before == 0:
            self.first = now
        self.last = now
        if self.counter is not None and (c // self.every != before // self.every or c >= self.n):
            self.counter.set(c)
        if c >= self.n and not self.done.done():
            self.done.set_result(None)


async def ws_handshake_nats(ws, subject):
    """INFO in, CONNECT + SUB + PING out, until the PONG."""
    first = await asyncio.wait_for(ws.recv(), 10)
    if not bytes(first).startswith(b"INFO "):
        raise RuntimeError(f"nats-server's first WebSocket message is not INFO: {first[:80]!r}")
    await ws.send(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1,"name":"compare_http"}'
                  b"\r\nSUB " + subject.encode() + b" 1\r\nPING\r\n")
    seen = b""
    while b"PONG\r\n" not in seen:
        seen = seen[-8:] + bytes(await asyncio.wait_for(ws.recv(), 10))
        if b"-ERR" in seen:
            raise RuntimeError(f"nats-server: {seen!r}")


def native_parser():
    from fastflow._impl import FrameParser

    parser = FrameParser(None, None, 1 << 30, 64 << 20)
    parser.batch_msgs = True
    return parser


async def ws_handshake_binary(ws, subject, parser):
    """The native protocol inside binary messages: INFO in, CONNECT + SUB +
    PING out, until the PONG (docs/protocol.md)."""
    from fastflow._impl import OPS, OutBuf

    deadline = time.monotonic() + 10

    async def until(op):
        while True:
            msg = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            for item in parser.feed(msg):
                if item[0] == op:
                    return item
                if item[0] == OPS["ERR"]:
                    raise RuntimeError(f"fastflow ERR: {bytes(item[5])[2:]!r}")

    await until(OPS["INFO"])
    out = OutBuf(0)
    out.frame(OPS["CONNECT"], 0, 1, b"", b"", json.dumps(
        {"name": "compare_http", "lang": "python", "verbose": False}).encode())
    out.frame(OPS["SUB"], 0, 1, subject.encode(), b"", b"")
    out.frame(OPS["PING"])
    await ws.send(out.take())
    await until(OPS["PONG"])


async def ws_handshake_json(ws, subject):
    """The cloudevents.json subprotocol (docs/http.md): the control message
    ``{"op": "subscribe"}``, until its ``{"op": "ok"}``."""
    await ws.send(json.dumps({"op": "subscribe", "subject": subject, "sid": "s1", "ref": 1}))
    answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if answer.get("op") != "ok" or answer.get("ref") != 1:
        raise RuntimeError(f"fastflow answered the subscribe with {answer!r}")


def ws_url(spec):
    return spec["url"]


async def ws_sub(spec):
    """A WebSocket subscriber: spec["kind"] is "nats", "fastflow" or
    "cloudevents.json"; counts messages (and with spec["lat"] reads each
    one's stamp)."""
    loop = asyncio.get_running_loop()
    st = SubState(spec, loop)
    kind, subject = spec["kind"], spec["subject"]
    tns = time.time_ns
    async with ws_connect(ws_url(spec), None if kind == "nats" else kind) as ws:
        if kind == "nats":
            await ws_handshake_nats(ws, subject)
        elif kind == WS_BINARY:
            parser = native_parser()
            await ws_handshake_binary(ws, subject, parser)
        else:
            await ws_handshake_json(ws, subject)

        async def read_all():
            add, stamps = st.add, st.stamps
            if kind == "nats":
                tail = b""
                for_pong = b"PING\r\n"
                async for msg in ws:
                    now = tns()
                    k = msg.count(b"MSG ") + (tail + msg[:3]).count(b"MSG ")
                    tail = msg[-3:]
                    if for_pong in msg:
                        await ws.send(b"PONG\r\n")
                    if k:
                        add(k, now)
            elif kind == WS_BINARY:
                feed = parser.feed
                async for msg in ws:
                    now = tns()
                    for item in feed(msg):
                        if item[0] == "msgs":
                            batch = item[1]
                            if stamps is not None:
                                for d in batch.datas():
                                    stamps.add(now, d)
                            add(len(batch), now)
            else:
                loads, b64 = json.loads, base64.b64decode
                async for msg in ws:
                    now = tns()
                    if stamps is not None:
                        stamps.add(now, b64(loads(msg)["data_base64"]))
                    add(1, now)

        reader = asyncio.ensure_future(read_all())
        try:
            timed_out, cpu0 = await cb.ready_until(st.done, spec)
        finally:
            reader.cancel()
        out = dict(received=st.count, first_ns=st.first, last_ns=st.last, timed_out=timed_out,
                   cpu_s=time.process_time() - cpu0, errors=st.errors)
        if st.stamps is not None:
            out.update(latencies_ns=st.stamps.samples, out_of_order=st.stamps.out_of_order)
    return out


class LineConn(asyncio.Protocol):
    """A raw NATS client connection: INFO, PONG and -ERR lines are noticed;
    pause_writing/resume_writing follow the socket."""

    def __init__(self, loop):
        self.loop = loop
        self.info = loop.create_future()
        self.pongs = []
        self.errors = []
        self.resumed = None
        self.transport = None
        self.tail = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        text = self.tail + data
        self.tail = text[-8:]
        if not self.info.done() and b"\r\n" in text:
            self.info.set_result(text.split(b"\r\n", 1)[0])
        for _ in range(text.count(b"PONG\r\n")):
            if self.pongs:
                f = self.pongs.pop(0)
                if not f.done():
                    f.set_result(None)
        if b"PING\r\n" in data:
            self.transport.write(b"PONG\r\n")
        if b"-ERR" in data:
            self.errors.append(data[data.index(b"-ERR"):][:200].decode("latin-1"))

    def connection_lost(self, exc):
        for f in self.pongs:
            if not f.done():
                f.set_exception(ConnectionError(f"connection lost: {exc}"))
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_exception(ConnectionError("connection lost"))

    def pause_writing(self):
        self.resumed = self.loop.create_future()

    def resume_writing(self):
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(None)
        self.resumed = None

    async def writable(self, timeout):
        if self.resumed is not None:
            await asyncio.wait_for(asyncio.shield(self.resumed), timeout)

    async def flush(self, timeout=10):
        f = self.loop.create_future()
        self.pongs.append(f)
        self.transport.write(b"PING\r\n")
        await asyncio.wait_for(f, timeout)


async def bulk_publish(spec, send_block, writable, step):
    """Publish spec["n"] messages, ``step`` per ``send_block(k)``, at most
    spec["window"] ahead of the subscriber's shared count; returns
    (sent, start_ns, timed_out)."""
    n, window = spec["n"], spec["window"]
    counter = Counter(spec["counter"])
    deadline = time.monotonic() + spec["timeout"]
    sleep, mono = asyncio.sleep, time.monotonic
    sent = 0
    start = time.time_ns()
    while sent < n:
        while sent - counter.get() > window:
            if mono() > deadline:
                return sent, start, True
            await sleep(0.0002)
        k = min(step, n - sent)
        send_block(k)
        sent += k
        await writable(max(1.0, deadline - mono()))
    return sent, start, False


async def nats_raw_pub(spec):
    """PUB lines in blocks of 1,000 on nats-server's client port."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: LineConn(loop), "127.0.0.1", spec["port"])
    await asyncio.wait_for(conn.info, 10)
    conn.transport.write(b'CONNECT {"verbose":false,"pedantic":false,"name":"compare_http"}\r\n')
    await conn.flush()
    step = 1000
    one = b"PUB " + spec["subject"].encode() + b" %d\r\n" % SIZE + NATS_PAYLOAD + b"\r\n"
    block = one * step
    write = conn.transport.write

    def send_block(k):
        write(block if k == step else one * k)

    cpu0 = cb.mark()
    sent, start, timed_out = await bulk_publish(spec, send_block, conn.writable, step)
    await conn.flush(30)
    out = cb.pub_result(sent, start, cpu0, conn.errors[:5], timed_out=timed_out)
    conn.transport.close()
    return out


async def ff_raw_pub(spec):
    """Native PUB frames written by the core's OutBuf.publish_many, 1,000 a call."""
    conn = await cb.raw_connect(dict(spec, url=spec["native_url"], role="pub"))
    step = 1000
    datas = (bytes(SIZE),) * step
    subject = spec["subject"]
    publish_many, send = conn.out.publish_many, conn.send

    def send_block(k):
        publish_many(subject, datas if k == step else datas[:k], cb.SOURCE)
        send()

    cpu0 = cb.mark()
    sent, start, timed_out = await bulk_publish(spec, send_block, conn.writable, step)
    await conn.flush(30)
    out = cb.pub_result(sent, start, cpu0, conn.errors[:5], timed_out=timed_out)
    conn.transport.close()
    return out


def ws_text_frame(payload):
    """An unmasked FIN text frame (server -> client, RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 127, n)
    return head + payload


async def ws_floor(spec):
    """The client library's floor for one event per message: a server that
    answers the WebSocket handshake and the cloudevents.json subscribe, then
    writes spec["n"] pre-built text frames, each the JSON of a 16-byte event
    as fastflow.event.to_json gives it, 1,000 per write (no broker, no
    routing), at most a window ahead of the subscriber's count."""
    import hashlib

    from fastflow._impl import Event
    from fastflow.event import to_json

    loop = asyncio.get_running_loop()
    frame = ws_text_frame(to_json(Event(spec["subject"], bytes(SIZE), source=cb.SOURCE)))
    done = loop.create_future()

    class Floor(asyncio.Protocol):
        def __init__(self):
            self.buf = b""
            self.upgraded = False
            self.resumed = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            if self.upgraded:
                if not self.started:  # the subscribe message: answer it, then publish
                    self.started = True
                    self.transport.write(ws_text_frame(
                        b'{"op":"ok","re":"subscribe","sid":"s1","ref":1}'))
                    asyncio.ensure_future(self.publish())
                return
            self.buf += data
            if b"\r\n\r\n" not in self.buf:
                return
            head = self.buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            h = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in head[1:])}
            accept = base64.b64encode(hashlib.sha1(
                (h["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()
            ).digest()).decode()
            proto = ("Sec-WebSocket-Protocol: " + WS_JSON + "\r\n"
                     if WS_JSON in h.get("sec-websocket-protocol", "") else "")
            self.transport.write((
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{}\r\n").format(
                    accept, proto).encode())
            self.upgraded, self.started = True, False

        def pause_writing(self):
            self.resumed = loop.create_future()

        def resume_writing(self):
            if self.resumed is not None and not self.resumed.done():
                self.resumed.set_result(None)
            self.resumed = None

        async def writable(self, timeout):
            if self.resumed is not None:
                await asyncio.wait_for(asyncio.shield(self.resumed), timeout)

        async def publish(self):
            step = 1000
            block = frame * step
            write = self.transport.write

            def send_block(k):
                write(block if k == step else frame * k)

            try:
                cpu0 = cb.mark()
                sent, start, timed_out = await bulk_publish(spec, send_block, self.writable,
                                                            step)
                out = cb.pub_result(sent, start, cpu0, [], timed_out=timed_out)
                # the last frames may still be in the transport's buffer: stay until the
                # subscriber has them all (an exit now would drop them)
                counter, deadline = Counter(spec["counter"]), time.monotonic() + 30
                while counter.get() < sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                done.set_result(out)
            except Exception as exc:  # noqa: BLE001 - reported as the worker's error
                done.set_exception(exc)

    server = await loop.create_server(Floor, "127.0.0.1", 0)
    cb.emit({"ready": True, "port": server.sockets[0].getsockname()[1]})
    out = await asyncio.wait_for(done, spec["timeout"])
    server.close()
    return out


class HttpConn(asyncio.Protocol):
    """A keep-alive HTTP/1.1 client connection that counts the status lines
    of the answers (each answer is one small head, no body)."""

    STATUS = re.compile(rb"HTTP/1\.[01] (\d{3})")

    def __init__(self, loop):
        self.loop = loop
        self.statuses = {}
        self.answered = 0
        self.buf = b""
        self.closed = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        for m in self.STATUS.finditer(self.buf):
            code = int(m.group(1))
            self.statuses[code] = self.statuses.get(code, 0) + 1
            self.answered += 1
        self.buf = self.buf[-16:] if not self.buf.endswith(b"\r\n\r\n") else b""

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(exc)


async def on_schedule(n, rate):
    """0 .. n-1, the i-th at start + i / rate (at once when late): the
    latency publishers' pace.  A sleep lasts at least the loop's timer
    tick (uvloop: 1 ms), so a pace that waits ``1 / rate`` after each send
    falls short of ``rate``; this one keeps it."""
    mono, sleep = time.monotonic, asyncio.sleep
    start = mono()
    for i in range(n):
        d = start + i / rate - mono()
        if d > 0:
            await sleep(d)
        yield i


async def ff_lat_pub(spec):
    """Row 4's native publisher: fastflow.client publish() of a 16-byte stamp."""
    errors = []
    c = await cb.ff_connect(dict(spec, role="pub"), errors)
    publish, subject = c.publish, spec["subject"]
    pack, tns = cb.STAMP.pack, time.time_ns
    cpu0 = cb.mark()
    start = tns()
    async for i in on_schedule(spec["n"], spec["rate"]):
        publish(subject, pack(tns(), i))
    await c.flush(10)
    out = cb.pub_result(spec["n"], start, cpu0, cb.first_errors(errors))
    await c.close()
    return out


async def http_pub(spec):
    """Row 4's publisher: one POST per interval on one keep-alive connection,
    binary content mode (ce-* headers), the data a 16-byte stamp
    (compare_broker's STAMP: time.time_ns(), sequence number)."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: HttpConn(loop), "127.0.0.1", spec["port"])
    n = spec["n"]
    head = ("POST /events/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n"
            "Content-Type: application/octet-stream\r\nce-specversion: 1.0\r\n"
            "ce-source: /bench/http\r\nce-type: bench.latency\r\nContent-Length: {}\r\n"
            "ce-id: ").format(spec["subject"], spec["port"], cb.STAMP.size).encode()
    pack, tns, write = cb.STAMP.pack, time.time_ns, conn.transport.write
    cpu0 = cb.mark()
    start = tns()
    async for i in on_schedule(n, spec["rate"]):
        write(head + b"%d\r\n\r\n" % i + pack(tns(), i))
    deadline = time.monotonic() + 10
    while conn.answered < n and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    out = cb.pub_result(n, start, cpu0, [])
    out.update(answered=conn.answered, statuses={str(k): v for k, v in conn.statuses.items()})
    conn.transport.close()
    return out


WORKERS = {"ws_sub": ws_sub, "nats_pub": nats_raw_pub, "ff_pub": ff_raw_pub,
           "http_pub": http_pub, "ff_lat_pub": ff_lat_pub, "ws_floor": ws_floor}


def worker_main(spec_json):
    cb.set_pdeathsig()
    spec = json.loads(spec_json)
    fn = WORKERS[spec["role"]]
    try:
        import uvloop
    except ImportError:
        uvloop = None
    run = uvloop.run if uvloop is not None else asyncio.run
    try:
        res = run(asyncio.wait_for(fn(spec), spec["timeout"] + 15))
    except BaseException as exc:  # reported to the script, which says what failed
        if isinstance(exc, KeyboardInterrupt):
            raise
        cb.emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    res["loop"] = "uvloop" if uvloop is not None else "asyncio"
    cb.emit(res)
    return 0


# =============================================================================
# The script: cores, servers, runs, tables.
# =============================================================================

class Cores:
    """Where the processes run: ``server`` (one core for every server),
    ``driver`` (wrk, row 3's subscriber); None when not pinned."""

    def __init__(self, pin):
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        self.pinned = bool(pin and len(cpus) >= 2 and shutil.which("taskset"))
        self.server = cpus[0] if self.pinned else None
        self.driver = cpus[1] if self.pinned else None
        self.why = None if self.pinned else (
            "--no-pin" if not pin else "fewer than 2 usable cores" if len(cpus) < 2
            else "no taskset")

    def argv(self, core, argv):
        """``argv`` run with the parent-death signal, on ``core`` (None: anywhere)."""
        pre = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
        if core is not None:
            pre += ["taskset", "-c", str(core)]
        return pre + list(argv)

    def describe(self):
        if not self.pinned:
            return f"not pinned ({self.why})"
        return (f"servers on core {self.server}; wrk and row 3's subscriber on core "
                f"{self.driver}; publishers and latency clients anywhere")


def door_available():
    """None when ``fastflow serve`` has ``--http-port``, else why not."""
    return cb.serve_accepts("--http-port")


class Servers:
    """The servers of a run, started on first use, stopped at the end."""

    def __init__(self, cores, log_level):
        self.cores = cores
        self.log_level = log_level
        self.started = {}  # key -> cb.Server
        self.failed = {}  # key -> why
        self.door_why = door_available()

    def get(self, key):
        if key in self.failed:
            return None
        if key not in self.started:
            try:
                s = getattr(self, "_start_" + key)()
                if s not in self.started.values():
                    say("  started {}: {} (pid {})".format(key, s.version, s.child.proc.pid))
                self.started[key] = s
            except (RuntimeError, OSError) as exc:
                self.failed[key] = str(exc)
                say(f"  {key}: did not start: {exc}")
                return None
        return self.started[key]

    def _child(self, name, argv, ports, **kw):
        child = cb.Child(name, self.cores.argv(self.cores.server, argv), **kw)
        for p in ports:
            cb.wait_listening(child, p, 30)
        return child

    def _start_floor(self):
        port = cb.free_port()
        child = self._child("uvicorn floor", [sys.executable, FLOOR_APP, str(port)], [port])
        return cb.Server("floor", child, port, f"http://127.0.0.1:{port}",
                         "uvicorn {} + httptools {} + uvloop {}".format(
                             _version("uvicorn"), _version("httptools"), _version("uvloop")))

    def _start_fastapi(self):
        port = cb.free_port()
        child = self._child("FastAPI", [sys.executable, FASTAPI_APP, str(port)], [port])
        return cb.Server("fastapi", child, port, f"http://127.0.0.1:{port}",
                         "FastAPI {} (pydantic {}) on uvicorn {}".format(
                             _version("fastapi"), _version("pydantic"), _version("uvicorn")))

    def _start_fastflow(self, door=True):
        if door and self.door_why:
            raise RuntimeError(self.door_why)
        port, http_port, mon = cb.free_port(), cb.free_port(), cb.free_port()
        http = ["--http-port", str(http_port)] if door else []
        child = self._child("fastflow serve", [
            sys.executable, "-m", "fastflow", "serve", "--host", "127.0.0.1", "--port", str(port),
            *http, "--monitor-port", str(mon), "--config", FASTFLOW_CONF,
            "--log-level", self.log_level], [port, mon] + ([http_port] if door else []))
        import fastflow

        s = cb.Server("fastflow", child, http_port, f"http://127.0.0.1:{http_port}",
                      f"fastflow {fastflow.__version__}")
        s.native_url = f"fastflow://127.0.0.1:{port}"
        s.monitor_port = mon
        s.ws_url = f"ws://127.0.0.1:{http_port}{WS_PATH}"
        return s

    def _start_fastflow_native(self):
        """The native door alone (row 4's native figure): the server of the
        other rows when it runs, else one without --http-port."""
        s = None if self.door_why else self.get("fastflow")
        return s or self._start_fastflow(door=False)

    def _start_nats(self):
        exe = shutil.which("nats-server") or shutil.which(
            "nats-server", path="/usr/sbin:/usr/local/sbin:/usr/local/bin")
        if not exe:
            raise RuntimeError("no nats-server on PATH or in /usr/sbin")
        version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout.strip().split(": ", 1)[-1]
        port, ws_port = cb.free_port(), cb.free_port()
        child = self._child("nats-server", [exe, "-a", "127.0.0.1", "-p", str(port), "-c",
                                            NATS_CONF], [port, ws_port],
                            env=dict(os.environ, NATS_WS_PORT=str(ws_port)))
        s = cb.Server("nats", child, port, f"nats://127.0.0.1:{port}", f"nats-server {version}")
        s.ws_url = f"ws://127.0.0.1:{ws_port}"
        return s

    def stop_all(self, sanity):
        for key, s in self.started.items():
            if key == "fastflow_native" and s is self.started.get("fastflow"):
                continue
            if not s.alive():
                sanity.append(f"{key} exited during the run ({s.child.proc.returncode}): "
                              f"{s.child.stderr_tail(600)}")
            s.child.stop()


def _version(dist):
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - a missing distribution is just unknown
        return "?"


def varz(server):
    """fastflow's /varz (the monitor port), or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/varz",
                                    timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def stored(server):
    """Events stored by the stream ``ingest`` so far (its last seq), or None."""
    v = varz(server)
    try:
        return v["streams"][INGEST_STREAM]["last_seq"]
    except (TypeError, KeyError):
        return None


def children_cpu():
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


# -- rows 1 and 2: wrk ----------------------------------------------------------------

WRK_RESULT = re.compile(r"^WRK-RESULT (\{.*\})\s*$", re.M)


def run_wrk(cores, url, seconds, connections, mode_args):
    """One wrk run; its WRK-RESULT figures plus wrk's CPU (raises RuntimeError)."""
    argv = cores.argv(cores.driver, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                                     "--timeout", "10s", "-s", LUA, url, "--", *mode_args])
    cpu0 = children_cpu()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish within {seconds + 60} s") from None
    cpu = children_cpu() - cpu0
    m = WRK_RESULT.search(r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError("wrk failed ({}): {}".format(
            r.returncode, (r.stderr.strip() or r.stdout.strip())[-400:]))
    res = json.loads(m.group(1))
    res["seconds"] = res["duration_us"] / 1e6
    res["rate"] = res["requests"] / res["seconds"]
    res["wrk_cpu"] = cpu / res["seconds"]
    res["socket_errors"] = sum(v for k, v in res["errors"].items() if k != "status")
    res["status_errors"] = res["errors"]["status"]
    return res


def ingest_rows(bench, key):
    """Rows 1 (key "ingest") and 2 ("batch"): every HTTP server, a warm-up
    run each, then the rounds interleaved."""
    cfg, cores = bench.cfg, bench.cores
    if key == "ingest":
        conns, mode = cfg["connections"], ["one"]
        events = 1
    else:
        conns, mode = cfg["batch_connections"], ["batch", str(cfg["batch"])]
        events = cfg["batch"]
    row = {"key": key, "connections": conns, "events_per_request": events, "servers": {}}
    order = []
    for k in bench.http_servers:
        s = bench.servers.get(k)
        st = row["servers"][k] = {"runs": [], "error": None}
        if s is None:
            st["error"] = "did not start: " + bench.servers.failed.get(k, "?")
            continue
        st["version"] = s.version
        order.append(k)
    for k in list(order):
        try:
            run_wrk(cores, url_for(bench, k, key), cfg["warmup"], conns, mode)
        except RuntimeError as exc:
            row["servers"][k]["error"] = f"warm-up: {exc}"
            order.remove(k)
    for rnd in range(cfg["rounds"]):
        turn = order[rnd % len(order):] + order[:rnd % len(order)] if order else []
        for k in turn:
            s, st = bench.servers.started[k], row["servers"][k]
            if st["error"]:
                continue
            if not s.alive():
                st["error"] = f"exited ({s.child.proc.returncode}): {s.child.stderr_tail(400)}"
                continue
            before = stored(s) if k == "fastflow" else None
            cpu0, _ = s.stat()
            busy0, t0 = cb.system_busy_s(), time.monotonic()
            try:
                res = run_wrk(cores, url_for(bench, k, key), cfg["seconds"], conns, mode)
            except RuntimeError as exc:
                st["error"] = f"round {rnd + 1}: {exc}"
                continue
            cpu1, _ = s.stat()
            busy1, t1 = cb.system_busy_s(), time.monotonic()
            res["server_cpu"] = (cpu1 - cpu0) / res["seconds"] if cpu0 is not None else None
            res["server_us_per_event"] = (1e6 * (cpu1 - cpu0) / max(1, res["requests"] * events)
                                          if cpu0 is not None else None)
            if None not in (busy0, busy1, cpu0, cpu1):
                res["other_cpu"] = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)
                                       - res["wrk_cpu"] * res["seconds"]) / (t1 - t0)
            res["events_per_s"] = res["rate"] * events
            if k == "fastflow":
                after = stored(s)
                if before is not None and after is not None:
                    res["stored"] = after - before
                    want = res["requests"] * events
                    # in flight when wrk stops: up to one request per connection more
                    if not want <= res["stored"] <= want + conns * events:
                        bench.sanity.append(
                            f"row {key}, fastflow round {rnd + 1}: {res['stored']:,} events "
                            f"stored for {want:,} answered")
            if res["socket_errors"] or res["status_errors"]:
                bench.sanity.append(f"row {key}, {k} round {rnd + 1}: wrk errors {res['errors']}")
            st["runs"].append(res)
        say("  row {} round {}/{} done".format(key, rnd + 1, cfg["rounds"]))
    for st in row["servers"].values():
        runs = st["runs"]
        if runs:
            rates = [r["rate"] for r in runs]
            st.update(median=statistics.median(rates), min=min(rates), max=max(rates),
                      events_median=statistics.median(r["events_per_s"] for r in runs),
                      p50_us=statistics.median(r["p50_us"] for r in runs),
                      p99_us=statistics.median(r["p99_us"] for r in runs),
                      server_cpu=_median(r.get("server_cpu") for r in runs),
                      server_us_per_event=_median(r.get("server_us_per_event") for r in runs),
                      wrk_cpu=_median(r.get("wrk_cpu") for r in runs))
    floor, ff = row["servers"].get("floor", {}), row["servers"].get("fastflow", {})
    others = [r["other_cpu"] for st in row["servers"].values() for r in st["runs"]
              if r.get("other_cpu") is not None]
    row["other_cpu"] = statistics.median(others) if others else None
    for st in row["servers"].values():
        if st.get("server_us_per_event") and floor.get("server_us_per_event"):
            st["cpu_ratio"] = floor["server_us_per_event"] / st["server_us_per_event"]
    if key == "ingest":
        if floor.get("median") and ff.get("median"):
            row["ratio"] = ff["median"] / floor["median"]
            row["pass"] = row["ratio"] >= TARGET_INGEST
    elif ff.get("events_median"):
        row["pass"] = ff["events_median"] >= TARGET_BATCH
    return row


def url_for(bench, server, key):
    s = bench.servers.started[server]
    if server == "fastapi" and key == "batch":
        return f"{s.url}/batch/{INGEST_SUBJECT}"
    return f"{s.url}/events/{INGEST_SUBJECT}"


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


# -- rows 3 and 4: workers ------------------------------------------------------------------

class Bench:
    def __init__(self, args, cfg, cores, servers):
        self.args, self.cfg, self.cores, self.servers = args, cfg, cores, servers
        self.sanity = []
        self.tmpdir = tempfile.mkdtemp(prefix="compare_http.")
        self.http_servers = [k for k in HTTP_SERVERS if k in args.servers]
        self._counters = 0

    def counter_file(self):
        self._counters += 1
        path = os.path.join(self.tmpdir, f"counter-{self._counters}")
        with open(path, "wb") as f:
            f.write(bytes(8))
        return path

    def spawn(self, role, spec, name, core=None):
        full = dict(spec, role=role)
        return cb.Child(name, self.cores.argv(core, [
            sys.executable, os.path.abspath(__file__), "--worker", json.dumps(full)]))

    def ws_run(self, variant, n):
        """One row-3 run: the subscriber, then the publisher; the subscriber's rate."""
        server_key, _ = WS_VARIANTS[variant]
        s = self.servers.started[server_key] if server_key else None
        if s is not None and not s.alive():
            raise RuntimeError(f"{server_key} is not running ({s.child.proc.returncode}): "
                               f"{s.child.stderr_tail(400)}")
        window = self.args.window
        timeout = min(600.0, 20.0 + n / 20_000.0)
        counter = self.counter_file()
        kind = {"floor": WS_JSON, "nats": "nats", "ff_binary": WS_BINARY,
                "ff_json": WS_JSON}[variant]
        base = dict(n=n, subject=WS_SUBJECT, timeout=timeout, counter=counter)
        children = []
        deadline = time.monotonic() + timeout + 20
        try:
            if s is None:  # the floor: its server is the publisher
                pub = self.spawn("ws_floor", dict(base, window=window), "WebSocket floor",
                                 self.cores.server)
                children.append(pub)
                url = "ws://127.0.0.1:{}{}".format(pub.next_json(time.monotonic() + 30)["port"],
                                                    WS_PATH)
            else:
                url = s.ws_url
            sub = self.spawn("ws_sub", dict(base, url=url, kind=kind,
                                            report_every=max(1, window // 8)),
                             f"{variant} subscriber", self.cores.driver)
            children.append(sub)
            sub.next_json(time.monotonic() + 30)
            cpu0 = s.stat()[0] if s is not None else None
            busy0, t0 = cb.system_busy_s(), time.monotonic()
            if s is None:
                pass
            elif server_key == "nats":
                pub = self.spawn("nats_pub", dict(base, port=s.port, window=window),
                                 "nats raw publisher")
            else:
                pub = self.spawn("ff_pub", dict(base, native_url=s.native_url, window=window),
                                 "fastflow raw publisher")
            if s is not None:
                children.append(pub)
            p = pub.next_json(deadline)
            r = sub.next_json(deadline)
            cpu1 = s.stat()[0] if s is not None else None
            busy1, t1 = cb.system_busy_s(), time.monotonic()
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        if r["received"] != n or r["timed_out"] or p.get("timed_out"):
            raise RuntimeError("{:,} messages received of {:,}{}{}".format(
                r["received"], n, " (timed out)" if r["timed_out"] or p.get("timed_out") else "",
                "; errors: " + "; ".join((p.get("errors") or []) + (r.get("errors") or []))
                if p.get("errors") or r.get("errors") else ""))
        wall = max(1e-9, (r["last_ns"] - r["first_ns"]) / 1e9)
        span = max(1e-9, (r["last_ns"] - p["start_ns"]) / 1e9)
        server_cpu = (cpu1 - cpu0) if cpu0 is not None else p["cpu_s"]
        other = None
        if None not in (busy0, busy1):
            other = max(0.0, (busy1 - busy0) - server_cpu - r["cpu_s"]
                        - (p["cpu_s"] if s is not None else 0)) / (t1 - t0)
        return dict(n=n, rate=r["received"] / wall, seconds=wall,
                    pub_rate=p["sent"] / max(1e-9, p["seconds"]),
                    sub_cpu=r["cpu_s"] / span, pub_cpu=p["cpu_s"] / span,
                    server_cpu=server_cpu / span, other_cpu=other,
                    sub_us_per_msg=1e6 * r["cpu_s"] / max(1, r["received"]),
                    server_us_per_msg=1e6 * server_cpu / max(1, r["received"]))

    def lat_run(self, variant):
        """One row-4 run: the latency samples (ns) after the warm-up."""
        cfg = self.cfg
        n, warm, rate = cfg["lat_n"], cfg["lat_warm"], cfg["lat_rate"]
        s = self.servers.started["fastflow_native" if variant == "native" else "fastflow"]
        timeout = 30 + (n + warm) / rate * 3
        base = dict(n=n + warm, subject=LAT_SUBJECT, timeout=timeout)
        children = []
        deadline = time.monotonic() + timeout + 20
        try:
            if variant in ("native", "http_native"):
                sub = cb.Child("fastflow.client latency subscriber", self.cores.argv(None, [
                    sys.executable, cb.__file__, "--worker", json.dumps(dict(
                        client="ff", role="sub", url=s.native_url, n=n + warm, size=SIZE,
                        timeout=timeout, kind="lat", lat=True, warmup=warm))]))
            else:
                kind = WS_JSON if variant == "http_json" else WS_BINARY
                sub = self.spawn("ws_sub", dict(base, url=s.ws_url, kind=kind, lat=True,
                                                warmup=warm), f"{kind} latency subscriber")
            children.append(sub)
            sub.next_json(time.monotonic() + 30)
            if variant == "native":
                pub = self.spawn("ff_lat_pub", dict(base, url=s.native_url, rate=rate),
                                 "fastflow.client publisher")
            else:
                pub = self.spawn("http_pub", dict(base, port=s.port, rate=rate),
                                 "HTTP publisher")
            children.append(pub)
            p = pub.next_json(deadline)
            r = sub.next_json(deadline)
        finally:
            for c in children:
                c.finish(time.monotonic() + 5)
        if variant != "native" and p.get("statuses") != {"202": n + warm}:
            self.sanity.append(f"row latency, {variant}: HTTP answers {p.get('statuses')} "
                               f"for {n + warm:,} POSTs")
        if r["received"] != n + warm or r.get("out_of_order"):
            self.sanity.append(f"row latency, {variant}: {r['received']:,} of {n + warm:,} "
                               f"received, {r.get('out_of_order')} out of order")
        return r["latencies_ns"], (n + warm - 1) / max(1e-9, p["seconds"])


def ws_row(bench):
    cfg = bench.cfg
    row = {"key": "ws", "window": bench.args.window, "variants": {}}
    order = []
    for v, (server_key, _) in WS_VARIANTS.items():
        if v not in bench.args.ws:
            continue
        st = row["variants"][v] = {"runs": [], "error": None}
        s = bench.servers.get(server_key) if server_key else True
        if s is None:
            st["error"] = "did not start: " + bench.servers.failed.get(server_key, "?")
            continue
        try:
            warm = bench.ws_run(v, cfg["ws_calib"])
        except RuntimeError as exc:
            st["error"] = f"warm-up: {exc}"
            continue
        n = int(min(cfg["ws_max"], max(cfg["ws_min"], warm["rate"] * cfg["ws_seconds"])))
        st["n"] = -(-n // 1000) * 1000
        say("  {}: warm-up {}, N = {:,}".format(WS_VARIANTS[v][1], fmt_rate3(warm["rate"]),
                                               st["n"]))
        order.append(v)
    for rnd in range(cfg["rounds"]):
        turn = order[rnd % len(order):] + order[:rnd % len(order)] if order else []
        for v in turn:
            st = row["variants"][v]
            if st["error"]:
                continue
            try:
                st["runs"].append(bench.ws_run(v, st["n"]))
            except RuntimeError as exc:
                st["error"] = f"round {rnd + 1}: {exc}"
        say("  row ws round {}/{} done".format(rnd + 1, cfg["rounds"]))
    for st in row["variants"].values():
        if st["runs"]:
            rates = [r["rate"] for r in st["runs"]]
            st.update(median=statistics.median(rates), min=min(rates), max=max(rates),
                      sub_cpu=_median(r["sub_cpu"] for r in st["runs"]),
                      server_cpu=_median(r["server_cpu"] for r in st["runs"]),
                      sub_us_per_msg=_median(r["sub_us_per_msg"] for r in st["runs"]),
                      server_us_per_msg=_median(r["server_us_per_msg"] for r in st["runs"]))
    others = [r["other_cpu"] for st in row["variants"].values() for r in st["runs"]
              if r.get("other_cpu") is not None]
    row["other_cpu"] = statistics.median(others) if others else None
    nats = row["variants"].get("nats", {}).get("median")
    for v, st in row["variants"].items():
        if nats and st.get("median"):
            st["ratio"] = st["median"] / nats
            if v.startswith("ff_"):
                st["pass"] = st["ratio"] >= TARGET_WS
    return row


def latency_row(bench):
    from fastflow._stats import percentile

    cfg = bench.cfg
    row = {"key": "latency", "rate": cfg["lat_rate"], "n": cfg["lat_n"],
           "warmup": cfg["lat_warm"], "variants": {}}
    for v in LAT_VARIANTS:
        key = "fastflow_native" if v == "native" else "fastflow"
        row["variants"][v] = {"samples": [], "error": None if bench.servers.get(key) else
                              "did not start: " + bench.servers.failed.get(key, "?")}
    for rnd in range(cfg["lat_rounds"]):
        for v in (list(LAT_VARIANTS)[rnd % 4:] + list(LAT_VARIANTS)[:rnd % 4]):
            st = row["variants"][v]
            if st["error"]:
                continue
            try:
                samples, achieved = bench.lat_run(v)
                st["samples"].extend(samples)
                st.setdefault("rates", []).append(achieved)
            except (RuntimeError, KeyError) as exc:
                st["error"] = f"round {rnd + 1}: {exc}"
        say("  row latency round {}/{} done".format(rnd + 1, cfg["lat_rounds"]))
    for st in row["variants"].values():
        xs = sorted(st.pop("samples"))
        st["count"] = len(xs)
        if xs:
            for q in (50, 90, 99):
                st[f"p{q}_ns"] = percentile(xs, q)
            st["max_ns"] = xs[-1]
    native = row["variants"]["native"]
    for v, st in row["variants"].items():
        if v != "native" and st.get("p50_ns") and native.get("p50_ns"):
            st["ratio_p50"] = st["p50_ns"] / native["p50_ns"]
            st["ratio_p99"] = st["p99_ns"] / native["p99_ns"]
    return row


# -- report ---------------------------------------------------------------------------------

def fmt_rate3(r):
    """A rate with 3 significant digits (fmt_rate gives 2 k/s for 2,490/s)."""
    if r is None:
        return "-"
    for scale, unit in ((1e6, "M/s"), (1e3, "k/s")):
        if r >= scale:
            v = r / scale
            return "{:.{d}f} {}".format(v, unit, d=2 if v < 10 else 1 if v < 100 else 0)
    return "{:.0f} /s".format(r)


def fmt_us(us):
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"


def fmt_cpu_us(us):
    return "-" if us is None else f"{us:.1f} us" if us < 100 else f"{us:.0f} us"


def fmt_x(x):
    return "-" if x is None else f"{x:.2f}x"


def fmt_pct(x):
    return "-" if x is None else f"{100 * x:.0f}%"


def verdict(ok, other_cpu=None):
    """PASS or MISS; "(noisy)" after it when other work took over 20% of a
    core during the row."""
    if ok is None:
        return ""
    noisy = " (noisy)" if other_cpu is not None and other_cpu > 0.2 else ""
    return ("PASS" if ok else "MISS") + noisy


def http_table(row):
    key = row["key"]
    floor = row["servers"].get("floor", {}).get("median")
    out = []
    for k, st in row["servers"].items():
        label, what = HTTP_SERVERS[k]
        if not st.get("runs"):
            out.append([label, what, "not run", "", "", "", "", "", "", "", "", "", ""])
            continue
        ratio = st["median"] / floor if floor else None
        target = ""
        if k == "fastflow":
            v = verdict(row.get("pass"), row.get("other_cpu"))
            target = (f">= {TARGET_INGEST:.1f}x {v}" if key == "ingest"
                      else f">= {fmt_rate3(TARGET_BATCH)} {v}")
        rng = "{}-{}".format(fmt_rate3(st["min"]), fmt_rate3(st["max"]))
        out.append([label, what, fmt_rate3(st["median"]), rng,
                    fmt_rate3(st["events_median"]) if key == "batch" else "",
                    fmt_us(st["p50_us"]), fmt_us(st["p99_us"]), fmt_x(ratio),
                    fmt_x(st.get("cpu_ratio")), target,
                    fmt_pct(st["server_cpu"]), fmt_cpu_us(st["server_us_per_event"]),
                    fmt_pct(st["wrk_cpu"])])
    head = ["server", "what it does", "requests/s", "range", "events/s" if key == "batch" else "",
            "p50", "p99", "vs. floor", "by CPU", "target", "CPU srv",
            "srv CPU/event" if key == "batch" else "srv CPU/req", "CPU wrk"]
    return render_table(head, out, "<<>>>>>>><>>>>")


def ws_table(row):
    out = []
    for v, st in row["variants"].items():
        label = WS_VARIANTS[v][1]
        if not st.get("runs"):
            out.append([label, "not run", "", "", "", "", "", "", ""])
            continue
        target = (f">= {TARGET_WS:.1f}x {verdict(st.get('pass'), row.get('other_cpu'))}"
                  if v.startswith("ff_") else "")
        out.append([label, fmt_rate3(st["median"]),
                    "{}-{}".format(fmt_rate3(st["min"]), fmt_rate3(st["max"])),
                    fmt_x(st.get("ratio")), target,
                    fmt_pct(st["sub_cpu"]), fmt_cpu_us(st["sub_us_per_msg"]),
                    fmt_pct(st["server_cpu"]), fmt_cpu_us(st["server_us_per_msg"])])
    return render_table(["server and subprotocol", "msgs/s", "range", "vs. nats-server",
                         "target", "CPU sub", "sub CPU/msg", "CPU srv", "srv CPU/msg"], out,
                        "<>>><>>>>")


def lat_table(row):
    out = []
    for v, st in row["variants"].items():
        if not st.get("count"):
            out.append([LAT_VARIANTS[v], "not run", "", "", "", "", "", ""])
            continue
        out.append([LAT_VARIANTS[v], fmt_rate3(statistics.median(st["rates"])),
                    cb.fmt_us(st["p50_ns"]), cb.fmt_us(st["p90_ns"]),
                    cb.fmt_us(st["p99_ns"]), cb.fmt_us(st["max_ns"]), f"{st['count']:,}",
                    "" if v == "native" else "{} / {}".format(fmt_x(st.get("ratio_p50")),
                                                              fmt_x(st.get("ratio_p99")))])
    return render_table(["path", "sent at", "p50", "p90", "p99", "max", "samples",
                         "vs. native p50 / p99"], out, "<>>>>>>>")


def report(args, cfg, bench, results, machine):
    quick = " [QUICK RUN: indicative only]" if args.quick else ""
    say("")
    for row in results:
        if row["key"] in ("ingest", "batch"):
            n = 1 if row["key"] == "ingest" else cfg["batch"]
            say(wrap("{} ({}): wrk -t1 -c{} -d{}s, POST /events/{} ({}), {}; median of {} "
                     "rounds of {} s after a {} s warm-up{}".format(
                         ROWS[0 if n == 1 else 1]["label"], "row 1" if n == 1 else "row 2",
                         row["connections"], cfg["seconds"], INGEST_SUBJECT,
                         "application/cloudevents+json" if n == 1 else
                         "application/cloudevents-batch+json, FastAPI: POST /batch/...",
                         "one 212-byte event" if n == 1 else f"{n:,} 212-byte events",
                         cfg["rounds"], cfg["seconds"], cfg["warmup"], quick)))
            say(http_table(row))
        elif row["key"] == "ws":
            say(wrap("{} (row 3): messages/s at the subscriber (count / (last - first "
                     "arrival)), median of {} rounds; N per run from a warm-up run to last "
                     "about {} s; the publisher stays at most {:,} messages ahead{}".format(
                         ROWS[2]["label"], cfg["rounds"], cfg["ws_seconds"], row["window"],
                         quick)))
            say(ws_table(row))
        else:
            say(wrap("latency (row 4): {:,} events/s, {:,} samples per path and round after "
                     "{:,} warm-up events, {} round(s) pooled; HTTP POSTs in binary content "
                     "mode, one keep-alive connection{}".format(
                         row["rate"], row["n"], row["warmup"], cfg["lat_rounds"], quick)))
            say(lat_table(row))
        for k, st in (row.get("servers") or row.get("variants")).items():
            if st.get("error"):
                say(f"  {k}: {st['error']}")
        others = [r["other_cpu"] for st in (row.get("servers") or row.get("variants")).values()
                  for r in st.get("runs", ()) if r.get("other_cpu") is not None]
        if others and statistics.median(others) > 0.2:
            say(wrap("  WARNING: other processes used {} of a core (median; max {}) during "
                     "these runs: the figures are low by about that share of the machine; "
                     "rerun on a quiet machine.".format(fmt_pct(statistics.median(others)),
                                                        fmt_pct(max(others)))))
        say("")
    say(wrap("CPU srv: the server process's CPU over the run (100% = one core); CPU wrk: "
             "wrk's; CPU sub: row 3's subscriber's.  srv CPU/req (/event, /msg) and sub "
             "CPU/msg: the process's CPU time per unit of work, which other work on the "
             "machine moves less than the rates; by CPU: the floor's CPU per request / the "
             "server's, the ratio of rates each would reach on a core of its own.  Row 3's "
             "floor has no server: its CPU srv is its writer's.  (noisy): other processes "
             "took over 20% of a core during the row.  Processes: " + bench.cores.describe() + "."))
    failed = [f"{row['key']}/{k}" for row in results
              for k, st in (row.get("servers") or row.get("variants")).items() if st.get("error")]
    say("sanity: " + ("; ".join(bench.sanity) if bench.sanity else "OK")
        + ("; FAILED (above): " + ", ".join(failed) if failed else ""))
    if bench.servers.failed:
        for k, why in bench.servers.failed.items():
            say(f"not started: {k}: {why}")


def machine_facts():
    m = cb.machine_facts(cb.Bench(argparse.Namespace(), {}))
    m["wrk"] = subprocess.run(["wrk", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.split("\n")[0].strip() if shutil.which("wrk") \
        else None
    for dist in ("uvicorn", "httptools", "fastapi", "pydantic", "websockets"):
        m[dist] = _version(dist)
    return m


# -- main -----------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=rows_arg(ROWS), default=[r["key"] for r in ROWS],
                    help="rows to run, by number or name: 1 ingest, 2 batch, 3 ws, 4 latency "
                         "(default all)")
    ap.add_argument("--servers", type=choices_arg(HTTP_SERVERS, "server"),
                    default=list(HTTP_SERVERS),
                    help="the HTTP servers of rows 1 and 2 (default floor,fastapi,fastflow)")
    ap.add_argument("--rounds", type=int, help="rounds per row (default 5; --quick 2)")
    ap.add_argument("--seconds", type=int,
                    help="seconds of a wrk round (whole seconds; default 5; --quick 1)")
    ap.add_argument("--connections", type=int, help="wrk connections of row 1 (default 64)")
    ap.add_argument("--batch-connections", type=int,
                    help="wrk connections of row 2 (default 8)")
    ap.add_argument("--batch", type=int, help="events per request of row 2 (default 1000)")
    ap.add_argument("--ws-seconds", type=float,
                    help="about how long a row-3 run lasts (default 2; --quick 0.5)")
    ap.add_argument("--ws", type=choices_arg(WS_VARIANTS, "variant"),
                    default=list(WS_VARIANTS),
                    help="row 3's variants: floor, nats, ff_binary, ff_json (default all)")
    ap.add_argument("--window", type=int, default=100_000,
                    help="row 3: most messages the publisher runs ahead of the subscriber "
                         "(default %(default)s)")
    ap.add_argument("--lat-rate", type=int, help="row 4: events/s (default 1000)")
    ap.add_argument("--lat-samples", type=int,
                    help="row 4: samples per path and round (default 5,000; --quick 1,000)")
    ap.add_argument("--no-pin", action="store_true",
                    help="do not pin servers and drivers to cores")
    ap.add_argument("--ff-log-level", default="warning",
                    choices=("debug", "info", "warning", "error", "critical"),
                    help="fastflow serve's --log-level (default %(default)s)")
    add_output_args(ap, quick_help="smoke run (about 2 minutes): 2 rounds of 1 s")
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    cfg = dict(QUICK if args.quick else FULL)
    for opt, key in ((args.rounds, "rounds"), (args.seconds, "seconds"),
                     (args.connections, "connections"),
                     (args.batch_connections, "batch_connections"), (args.batch, "batch"),
                     (args.ws_seconds, "ws_seconds"), (args.lat_rate, "lat_rate"),
                     (args.lat_samples, "lat_n")):
        if opt:
            cfg[key] = opt
    if min(cfg["rounds"], cfg["seconds"], cfg["connections"], cfg["batch"],
           cfg["lat_rate"], cfg["lat_n"]) < 1:
        ap.error("--rounds, --seconds, --connections, --batch, --lat-* must be >= 1")
    if args.json:
        report_to(sys.stderr)
    if "ingest" in args.rows or "batch" in args.rows:
        if not shutil.which("wrk"):
            ap.error("rows 1 and 2 need wrk (Debian/Ubuntu: apt-get install wrk)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cb.Child.stop_all)
    # the checkout's fastflow, here and in every child (python -m fastflow serve runs
    # from the checkout too)
    if cb.REPO not in sys.path:
        sys.path.insert(1, cb.REPO)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [cb.REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

    t_start = time.perf_counter()
    cores = Cores(not args.no_pin)
    machine = machine_facts()
    say(cb.format_machine(machine))
    say("wrk: {}; uvicorn {}, httptools {}, FastAPI {}, pydantic {}, websockets {}".format(
        machine["wrk"], machine["uvicorn"], machine["httptools"], machine["fastapi"],
        machine["pydantic"], machine["websockets"]))
    say("processes: " + cores.describe())
    servers = Servers(cores, args.ff_log_level)
    if servers.door_why:
        say("fastflow: " + servers.door_why + "; its rows show the peers only")
    bench = Bench(args, cfg, cores, servers)
    results = []
    interrupted = False
    try:
        for key in (r["key"] for r in ROWS if r["key"] in args.rows):
            say(f"[{key}]")
            if key in ("ingest", "batch"):
                for k in bench.http_servers:
                    servers.get(k)
                results.append(ingest_rows(bench, key))
            elif key == "ws":
                results.append(ws_row(bench))
            else:
                results.append(latency_row(bench))
    except KeyboardInterrupt:
        interrupted = 128 + signal.SIGINT
    except Interrupted as exc:
        interrupted = 128 + exc.args[0]
    finally:
        servers.stop_all(bench.sanity)
        cb.Child.stop_all()
        shutil.rmtree(bench.tmpdir, ignore_errors=True)
    if interrupted:
        say("interrupted; every child process stopped")
        return interrupted
    report(args, cfg, bench, results, machine)
    total_s = time.perf_counter() - t_start
    say(f"total {total_s:.0f} s")
    if args.json:
        write_json({"machine": machine, "config": dict(cfg, quick=args.quick, rows=args.rows,
                                                       window=args.window),
                    "processes": cores.describe(),
                    "servers": {k: {"version": s.version, "argv": s.child.argv}
                                for k, s in servers.started.items()},
                    "not_started": servers.failed, "results": results,
                    "sanity": bench.sanity, "total_s": total_s})
    failed = any(st.get("error") for row in results
                 for st in (row.get("servers") or row.get("variants")).values())
    return 1 if bench.sanity or failed else 0


if __name__ == "__main__":
    sys.exit(main())
