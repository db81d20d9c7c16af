"""Webhook delivery (``fastflow.subscriptions.webhook``) to a local sink,
against the floor: a bare loop of the same HTTP client fastflow ships
(``fastflow.client.http.HttpConnection``) posting the same events.

Rows:

1. floor: ``HttpConnection`` on one keep-alive connection, one event per
   POST in binary content mode (``to_http``), each answer awaited before
   the next request: events/s.
2. ``WebhookSink`` one event per POST (binary mode, the default settings:
   8 POSTs in flight, no pipelining), after the OPTIONS handshake.
   Target: >= 1.0x the floor.
3. ``WebhookSink`` one event per POST with ``pipeline=16`` (HTTP/1.1
   pipelining: 16 requests written before the first answer is read).
4. ``WebhookSink`` batch mode, 1,000 events per POST
   (``application/cloudevents-batch+json``).  Target: >= 500 k events/s.

The sink is a child process, a raw uvloop HTTP/1.1 server that counts the
events it received (a batch: its ``"specversion"`` members) and answers
``204``; ``OPTIONS`` gets the webhook grant.  With two cores or more the
sink is pinned to CPU 1 and this process (the sender) to CPU 0
(``os.sched_setaffinity``).  Each round delivers every row's events once,
rows interleaved; the figures are medians over ``--rounds`` with the
min-max range, and ratios against the floor of the same run.  The sink's
count is checked against what was sent after every row.

    python benchmarks/bench_webhook.py                # full
    python benchmarks/bench_webhook.py --quick        # a smoke run
    python benchmarks/bench_webhook.py --rows batch   # the floor and row 4
    python benchmarks/bench_webhook.py --json > out.json
"""

import argparse
import asyncio
import gc
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

import _common
from _common import say

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)
_OPTIONS_ANSWER = (b"HTTP/1.1 200 OK\r\nwebhook-allowed-origin: *\r\n"
                   b"webhook-allowed-rate: *\r\ncontent-length: 0\r\n\r\n")
_NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


# -- the sink (a child process) ------------------------------------------------------------


class SinkProtocol(asyncio.Protocol):
    """A raw HTTP/1.1 server connection: requests cut by Content-Length
    (pipelined ones too), one write per read."""

    count = 0                           # events received, in all connections

    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        self.need = 0                   # bytes the request being read needs in all

    def data_received(self, data):
        buf = self.buf
        buf += data
        if len(buf) < self.need:
            return                      # the rest of a long body
        out = []
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                self.need = 0
                break
            head = bytes(buf[pos:end])
            m = _LENGTH.search(head)
            length = int(m.group(1)) if m else 0
            body_at = end + 4
            if len(buf) < body_at + length:
                self.need = body_at + length - pos
                break
            if head.startswith(b"OPTIONS"):
                out.append(_OPTIONS_ANSWER)
            elif head.startswith(b"GET /count"):
                text = str(SinkProtocol.count).encode()
                out.append(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (
                    len(text), text))
            else:
                if b"cloudevents-batch" in head:
                    SinkProtocol.count += buf.count(b'"specversion"', body_at,
                                                    body_at + length)
                else:
                    SinkProtocol.count += 1
                out.append(_NO_CONTENT)
            pos = body_at + length
        if pos:
            del buf[:pos]
        if out:
            self.transport.write(b"".join(out))


def serve(port, cpu):
    import uvloop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(SinkProtocol, "127.0.0.1", port, backlog=256)
        print("ready", flush=True)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        await stop
        server.close()

    uvloop.run(main())


# -- the sender ----------------------------------------------------------------------------


def make_events(n):
    from fastflow.event import Event

    return [Event("orders.eu.created", b'{"order": %d, "sku": "A-%d", "qty": 3, '
                  b'"price": 12.5}' % (i, i % 97), source="/shop/eu-west",
                  datacontenttype="application/json", subject="order-{}".format(i))
            for i in range(n)]


async def sink_count(url):
    from fastflow.client.http import HttpConnection

    async with HttpConnection(url) as c:
        return int((await c.request("GET", "/count")).body)


async def floor_row(url, events):
    from fastflow.client.http import HttpConnection
    from fastflow.event import to_http

    async with HttpConnection(url) as c:
        t0 = time.perf_counter()
        for ev in events:
            headers, body = to_http(ev)
            resp = await c.request("POST", "/hook", body, headers)
            if resp.status != 204:
                raise RuntimeError("the sink answered {}".format(resp.status))
        return time.perf_counter() - t0


def sink_row(sink):
    async def run(url, events):
        t0 = time.perf_counter()
        out = await sink.deliver(events)
        dt = time.perf_counter() - t0
        bad = [o for o in out if o != "delivered"]
        if bad:
            raise RuntimeError("not delivered: {}".format(bad[:3]))
        return dt
    return run


async def bench(args, url):
    from fastflow.subscriptions.webhook import WebhookSettings, WebhookSink

    one = make_events(args.events)
    many = make_events(args.batch_events)
    sinks = {
        "binary": WebhookSink(url + "/hook", WebhookSettings(mode="binary"), origin="bench"),
        "pipelined": WebhookSink(url + "/hook", WebhookSettings(mode="binary", pipeline=16),
                                 origin="bench"),
        "batch": WebhookSink(url + "/hook", WebhookSettings(mode="batch", max_batch=1000),
                             origin="bench"),
    }
    rows = [
        {"num": 1, "key": "floor", "what": "HttpConnection loop, 1 event/POST", "fn": floor_row,
         "events": one},
        {"num": 2, "key": "binary", "what": "WebhookSink binary, 1 event/POST",
         "fn": sink_row(sinks["binary"]), "events": one},
        {"num": 3, "key": "pipelined", "what": "WebhookSink binary, pipeline=16",
         "fn": sink_row(sinks["pipelined"]), "events": one},
        {"num": 4, "key": "batch", "what": "WebhookSink batch, 1,000 events/POST",
         "fn": sink_row(sinks["batch"]), "events": many},
    ]
    if args.rows:
        rows = [r for r in rows if r["key"] == "floor" or r["key"] in args.rows]
    times = {r["key"]: [] for r in rows}
    # warm-up (the handshakes, the connections), then the rounds, rows interleaved
    for r in rows:
        await r["fn"](url, r["events"][:1000])
    expected = await sink_count(url)
    for i in range(args.rounds):
        for r in rows[i % len(rows):] + rows[:i % len(rows)]:
            gc.collect()
            gc.disable()
            try:
                times[r["key"]].append(await r["fn"](url, r["events"]))
            finally:
                gc.enable()
            expected += len(r["events"])
            got = await sink_count(url)
            if got != expected:
                raise RuntimeError("row {}: the sink counted {} events, {} were sent".format(
                    r["key"], got, expected))
    for s in sinks.values():
        await s.close()
    result = []
    floor = None
    for r in rows:
        rates = sorted(len(r["events"]) / t for t in times[r["key"]])
        med = statistics.median(rates)
        if r["key"] == "floor":
            floor = med
        result.append({"row": r["num"], "key": r["key"], "what": r["what"],
                       "events": len(r["events"]), "events_per_s": med,
                       "min": rates[0], "max": rates[-1], "vs_floor": med / floor})
    return result


ROWS = [{"num": 1, "key": "floor"}, {"num": 2, "key": "binary"},
        {"num": 3, "key": "pipelined"}, {"num": 4, "key": "batch"}]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="events per round, rows 1-3")
    ap.add_argument("--batch-events", type=int, default=200000, help="events per round, row 4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=_common.rows_arg(ROWS),
                    help="the rows to run, by number or key (the floor always runs): "
                         + ", ".join("{num} {key}".format(**r) for r in ROWS))
    ap.add_argument("--no-pin", action="store_true",
                    help="leave both processes to the scheduler (no CPU pinning)")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    _common.add_output_args(ap, "2,000 / 20,000 events, 2 rounds")
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.cpu)
        return
    if args.json:
        _common.report_to(sys.stderr)
    if args.quick:
        args.events, args.batch_events, args.rounds = 2000, 20000, 2
    signal.signal(signal.SIGTERM, _common.on_signal)
    pinned = len(os.sched_getaffinity(0)) >= 2 and not args.no_pin
    port = free_port()
    argv = [sys.executable, os.path.abspath(__file__), "--serve", str(port)]
    if pinned:
        argv += ["--cpu", "1"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, env=dict(os.environ))
    try:
        if child.stdout.readline().strip() != b"ready":
            raise RuntimeError("the sink did not start")
        if pinned:
            os.sched_setaffinity(0, {0})
        import uvloop

        result = uvloop.run(bench(args, "http://127.0.0.1:{}".format(port)))
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
    say("Webhook delivery to a local sink ({}; {}; sender {}, sink {})".format(
        _common.python_desc(), _common.cpu_facts()["cpu"], "CPU 0" if pinned else "unpinned",
        "CPU 1" if pinned else "unpinned"))
    say("medians of {} rounds; {:,} events per round (rows 1-3), {:,} (row 4)".format(
        args.rounds, args.events, args.batch_events))
    say("")
    say("{:<3} {:<38} {:>12} {:>22} {:>9}".format("#", "row", "events/s", "min - max",
                                                  "vs floor"))
    for r in result:
        say("{:<3} {:<38} {:>12,.0f} {:>22} {:>8.2f}x".format(
            r["row"], r["what"], r["events_per_s"],
            "{:,.0f} - {:,.0f}".format(r["min"], r["max"]), r["vs_floor"]))
    if args.json:
        doc = {"machine": _common.cpu_facts(), "python": _common.python_desc(),
               "rounds": args.rounds, "rows": result}
        _common.write_json(doc)


if __name__ == "__main__":
    main()
