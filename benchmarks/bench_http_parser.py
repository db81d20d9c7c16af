"""Time the HTTP door's request parser: the native core's ``HttpParser``
(src_ext/wire/http_in.pyx, C) against its reference twin
(fastflow/_ref/wire/http_in.py: llhttp through httptools, with Python
callbacks filling a Python ``Request``), on the request ``wrk`` sends in
the ingest benchmark: ``POST /events/orders.new HTTP/1.1`` with Host,
Content-Type: application/cloudevents+json, Content-Length and a
~230-byte structured CloudEvent.

Two cases: one request per ``feed`` (a keep-alive connection, one request
per read) and 64 pipelined requests in one ``feed``.  For scale, the table
also times ``httptools`` alone with callbacks that do nothing (llhttp's
lexing plus the Python calls, the floor of a parser built on it; uvicorn's
protocol does more in them) and, with ``--peers``, uvicorn's own
``HttpToolsProtocol.data_received`` up to the point it hands the request to
the app (skipped when uvicorn is missing).

Each figure is the median of ``--repeat`` runs (gc off while one is timed,
the rows interleaved), in microseconds per request; ``--json`` writes them
as one JSON document to stdout (the table goes to stderr).
"""

import argparse
import gc
import statistics
import sys
import time

from _common import (add_output_args, cpu_facts, fastflow_facts, python_desc, render_table,
                     report_to, say, write_json)

BODY = (b'{"specversion":"1.0","id":"a1b2c3","source":"/bench/http","type":"orders.created",'
        b'"time":"2026-12-03T12:00:00Z","datacontenttype":"application/json","data":'
        b'{"order":12345,"sku":"ABC-123","qty":2,"price":19.99,"customer":"c-789"}}')
REQUEST = (b"POST /events/orders.new HTTP/1.1\r\nHost: 127.0.0.1:28765\r\n"
           b"Content-Type: application/cloudevents+json\r\nContent-Length: %d\r\n\r\n"
           % len(BODY)) + BODY
PIPELINE = 64


class _Nothing:
    """httptools callbacks that do nothing but count the requests (what
    llhttp costs by itself)."""

    n = 0

    def on_message_begin(self):
        pass

    def on_url(self, url):
        pass

    def on_header(self, name, value):
        pass

    def on_headers_complete(self):
        pass

    def on_body(self, body):
        pass

    def on_message_complete(self):
        self.n += 1


def parsers(peers):
    """(name, make) pairs: ``make()`` returns a function feeding one buffer
    and returning how many requests came out."""
    from fastflow import _ref

    out = []
    try:
        from fastflow import _core
    except ImportError:
        _core = None
    if _core is not None:
        def native():
            feed = _core.HttpParser().feed
            return lambda data: len(feed(data))
        out.append(("native HttpParser (C)", native))

    def ref():
        feed = _ref.HttpParser().feed
        return lambda data: len(feed(data))
    out.append(("reference HttpParser (llhttp + Python callbacks)", ref))

    try:
        import httptools
    except ImportError:
        httptools = None
    if httptools is not None:
        def bare():
            nothing = _Nothing()
            feed = httptools.HttpRequestParser(nothing).feed_data

            def one(data):
                before = nothing.n
                feed(data)
                return nothing.n - before
            return one
        out.append(("httptools, callbacks that do nothing", bare))
    if peers:
        make = _uvicorn()
        if make is not None:
            out.append(("uvicorn HttpToolsProtocol (to the app call)", make))
    return out


def _uvicorn():
    """uvicorn's httptools protocol with a transport and an app that do
    nothing: its data_received parses and builds the ASGI scope."""
    try:
        import asyncio

        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState
    except ImportError:
        return None

    async def app(scope, receive, send):
        pass

    class Transport:
        def get_extra_info(self, name, default=None):
            return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

        def write(self, data):
            pass

        def is_closing(self):
            return False

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def close(self):
            pass

        def set_write_buffer_limits(self, *a, **k):
            pass

    def make():
        loop = asyncio.new_event_loop()
        config = Config(app=app, http="httptools", log_level="error", lifespan="off")
        config.load()
        proto = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={},
                                  _loop=loop)
        proto.connection_made(Transport())
        n = [0]

        def start(cycle, app):      # where uvicorn starts the app's task: count, run nothing
            n[0] += 1
            cycle.response_complete = True
        proto._start_asgi_task = start
        feed = proto.data_received

        def one(data):
            before = n[0]
            feed(data)
            return n[0] - before
        return one
    return make


def time_case(make, data, per_feed, n_requests):
    """Seconds per request, one run: ``n_requests`` requests in feeds of
    ``per_feed`` requests."""
    feed = make()
    feeds = max(1, n_requests // per_feed)
    assert feed(data) == per_feed, "the parser did not cut {} requests".format(per_feed)
    gc.disable()
    try:
        t = time.perf_counter()
        for _ in range(feeds):
            feed(data)
        dt = time.perf_counter() - t
    finally:
        gc.enable()
    return dt / (feeds * per_feed)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50000, help="requests per run (50,000)")
    ap.add_argument("--repeat", type=int, default=7, help="runs per row, the median is reported")
    ap.add_argument("--peers", action="store_true", help="also time uvicorn's protocol")
    add_output_args(ap, "a smoke run: 2,000 requests, 3 runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests, args.repeat = 2000, 3
    if args.json:
        report_to(sys.stderr)
    cases = [("one request per feed", REQUEST, 1), ("64 pipelined in one feed",
                                                    REQUEST * PIPELINE, PIPELINE)]
    rows = parsers(args.peers)
    runs = {(c, name): [] for c, _d, _k in cases for name, _m in rows}
    for _ in range(args.repeat):
        for c, data, k in cases:
            for name, make in rows:
                runs[(c, name)].append(time_case(make, data, k, args.requests))
    facts = {**cpu_facts(), "python": python_desc(), **fastflow_facts()}
    say("machine: {cpu}, {cores} cores ({usable_cores} usable); {python}; fastflow {fastflow} "
        "(git {fastflow_git})".format(**facts))
    say("request: {} bytes ({}-byte body); {} requests per run, median of {} runs\n".format(
        len(REQUEST), len(BODY), args.requests, args.repeat))
    table = []
    doc = {"machine": facts, "request_bytes": len(REQUEST), "body_bytes": len(BODY),
           "requests": args.requests, "repeat": args.repeat, "results": []}
    ref_name = rows[1][0] if rows[0][0].startswith("native") else rows[0][0]
    for c, _d, _k in cases:
        base = statistics.median(runs[(c, ref_name)])
        for name, _m in rows:
            ts = runs[(c, name)]
            med = statistics.median(ts)
            table.append([c, name, "{:.3f}".format(med * 1e6),
                          "{:.3f}-{:.3f}".format(min(ts) * 1e6, max(ts) * 1e6),
                          "{:.1f}x".format(base / med)])
            doc["results"].append({"case": c, "parser": name, "us_per_request": med * 1e6,
                                   "runs_us": [t * 1e6 for t in ts], "vs_reference": base / med})
        table.append(None)
    say(render_table(["case", "parser", "us/request", "range", "vs. reference"], table[:-1],
                     ["<", "<", ">", ">", ">"]))
    if args.json:
        write_json(doc)


if __name__ == "__main__":
    main()
