"""The operator console (docs/console.md): a single page on the monitoring
port that shows the flow live, with no build step and nothing fetched from
elsewhere (its files are in ``static/``, shipped in the wheel).

The server side is this module:

- ``Console`` samples the server once a second: the overview's history
  (events in, out and stored per second from the engines' counters, a few
  reads per account: ``HISTORY`` seconds of it), and while a
  console is open the rates of each connection and stream and the hottest
  subjects (the router's subject sampler, in C: the engine records every
  n-th publish's subject, n chosen so that about ``SAMPLE_TARGET`` are
  recorded a second, and the console counts them in batches).
- Advisories come as they are made (``Flow.advisory_listeners`` of the
  system account's flow, where every account's are published): the
  console is no subscriber, so watching adds no interest to the router,
  nothing to forward from other nodes, nothing to ``/subsz``.
- ``GET /console/feed``: one event stream (Server-Sent Events) per open
  page: ``event: hello`` (the server, the history so far, the recent
  advisories), then ``event: tick`` every second (the overview and the
  advisories since the last one).  A page that does not read its feed is
  skipped (ticks are snapshots: the next one replaces what was skipped),
  and cut after ``FEED_STALL`` seconds of it.
- ``GET /console/api/<view>``: the tables, one page at a time (``offset``,
  ``limit`` at most ``PAGE_MAX``, ``sort``, ``q`` a substring filter), so
  that 10,000 subjects and 1,000 connections stay a page of rows.
- ``GET /console/tail/<stream>``: a stream's events as an event stream,
  live (at most ``TAIL_LIVE_WINDOW`` behind the head: a person reads it) or
  replayed from a seq or a time (paced by how fast the page reads).

Access is the monitoring port's (``[monitor] token`` / ``users``): the
page's files are public (they hold no data), everything else needs the
credentials.  The console only reads; it shows no credentials (a sink URL's
user information and query are cut).  ``[monitor] console_tail = false``
keeps events' data off the monitoring port.
"""

import asyncio
import datetime
import hashlib
import heapq
import logging
import math
import os
import time
from collections import Counter, deque
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from fastflow._impl import events_from_batch
from fastflow._version import __version__
from fastflow.server.connection import CLOSING, READY
from fastflow.server.http import HttpError, _dumps, response_head
from fastflow.server.streams import wait_append

__all__ = ("Console", "STATIC_FILES")

log = logging.getLogger("fastflow.server")

HISTORY = 600                           # seconds of the overview's history kept
HISTORY_COLUMNS = ("published", "delivered", "published_bytes", "delivered_bytes", "stored")
SPARK = 60                              # points of a stream's rate sparkline
ADVISORIES = 500                        # recent advisories kept (a new page gets them)
ADVISORIES_PER_TICK = 200               # advisories one tick carries; more are counted
PAGE_MAX = 200                          # rows one table request may ask for
TOP_MAX = 100                           # hottest subjects one request may ask for
SUBSCRIBERS_SHOWN = 8                   # subscribers listed per hot subject
SAMPLE_TARGET = 2000                    # subject samples a second the sampler aims at
SUBJECT_WINDOW = 5                      # seconds of samples behind a subject's rate
SUBJECTS_KEPT = 20000                   # distinct subjects one second's samples keep
STREAMS_TRACKED = 10000                 # streams with a rate history (more: no sparkline)
STREAMS_MAX = 48                        # feeds and tails open at once: of the monitoring port's
                                        # 64 connections, 16 stay for /healthz, /metrics, tables
FEED_MAX_PENDING = 1 << 20              # bytes: a feed with more unsent skips its ticks
FEED_STALL = 30.0                       # seconds a feed may skip ticks before it is cut
TAIL_MAX_PENDING = 256 << 10            # bytes: a tail waits while more are unsent
TAIL_BATCH = 100                        # events a tail reads and sends at once
TAIL_BATCH_BYTES = 1 << 20              # (about) the bytes of one batch
TAIL_LIVE_WINDOW = 500                  # a live tail skips what is further behind the head
TAIL_PACE = 0.05                        # seconds between batches (2,000 events/s at most)
TAIL_PREVIEW = 1024                     # characters of an event's data shown
TAIL_KEEPALIVE = 15.0                   # seconds of silence before a comment goes out
STATIC = os.path.join(os.path.dirname(__file__), "static")
EVENT_STREAM = "text/event-stream"
_JSON = "application/json"
_STREAM_HEADERS = (("cache-control", "no-store"), ("x-accel-buffering", "no"))

# the page's files (nothing else under /console/ is a file): name -> content type
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}

# the page runs only its own files and talks only to this port
_PAGE_HEADERS = (
    ("content-security-policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


def _iso(t):
    """An RFC 3339 time (UTC, milliseconds) of ``t`` seconds, or None."""
    if not t:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def _iso_ns(ns):
    return _iso(ns / 1e9) if ns else None


def redact_url(url):
    """``url`` without what may be a credential: user information, the
    query and the fragment, and the path past its first segment (webhook
    services put their secret there: ``/services/T0/B0/<secret>``)."""
    if not isinstance(url, str):
        return url
    try:
        u = urlsplit(url)
    except ValueError:
        return "(not shown)"
    host = u.hostname or ""
    if ":" in host:
        host = "[" + host + "]"
    try:
        port = u.port
    except ValueError:
        port = None
    if port is not None:
        host = "{}:{}".format(host, port)
    path = u.path
    first, sep, rest = path.lstrip("/").partition("/")
    if rest:
        path = "/" + first + "/…"
    return urlunsplit((u.scheme, host, path, "", ""))


def page_args(params, sorts, default_sort, default_limit=50):
    """``(offset, limit, sort, descending, q)`` of a table request; an
    HttpError 400 names a bad one."""
    try:
        offset = int(params.get("offset", 0))
        limit = int(params.get("limit", default_limit))
    except ValueError:
        raise HttpError(400, "offset and limit must be integers") from None
    if offset < 0 or not 0 < limit <= PAGE_MAX:
        raise HttpError(400, "offset must be >= 0 and limit 1..{}, got offset {} limit {}"
                        .format(PAGE_MAX, offset, limit))
    sort = params.get("sort", default_sort)
    desc = sort.startswith("-")
    key = sort.lstrip("-")
    if key not in sorts:
        raise HttpError(400, "sort must be one of {} (- before it: descending), got {!r}"
                        .format(", ".join(sorts), sort[:40]))
    q = params.get("q", "")[:200].lower()
    return offset, limit, key, desc, q


def _page(rows, offset, limit, key, desc):
    """One page of ``rows`` sorted by ``key`` (None sorts first)."""
    rows.sort(key=lambda r: (r.get(key) is not None, r.get(key) if r.get(key) is not None
                             else 0), reverse=desc)
    return {"total": len(rows), "offset": offset, "limit": limit, "rows": rows[offset:offset
                                                                              + limit]}


def to_json(obj):
    """``obj`` as JSON bytes (one line: no CR or LF, whatever the strings
    hold).  What orjson refuses is written as text: a string with lone
    surrogates (an event's attributes and a CONNECT's name may hold them)
    with them escaped, an integer past 64 bits as its digits."""
    try:
        return _dumps(obj)
    except TypeError:
        return _dumps(_printable(obj))


def _printable(o):
    if isinstance(o, str):
        return o.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(o, dict):
        return {_printable(k): _printable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_printable(v) for v in o]
    if type(o) is int and not -(1 << 63) <= o < 1 << 64:
        return str(o)
    return o


def sse(name, obj, eid=None):
    """One SSE message ``event: <name>`` of JSON ``obj``."""
    return b"".join((b"event: ", name, b"\n", b"id: %d\n" % eid if eid is not None else b"",
                     b"data: ", to_json(obj), b"\n\n"))


class _Rates:
    """Per-second rates of counters sampled once a tick: ``key -> (value,
    time)`` of the last sample and ``key -> rate``."""

    __slots__ = ("last", "rate")

    def __init__(self):
        self.last = {}
        self.rate = {}

    def update(self, values, now):
        """``values``: key -> tuple of counters.  Keys not in ``values``
        are forgotten."""
        last, rate = self.last, {}
        for k, v in values.items():
            prev = last.get(k)
            if prev is not None and now > prev[1]:
                dt = now - prev[1]
                rate[k] = tuple(max(0.0, (a - b) / dt) for a, b in zip(v, prev[0]))
            last[k] = (v, now)
        for k in [k for k in last if k not in values]:
            del last[k]
        self.rate = rate


class _Stream:
    """An event stream a MonitorConnection answers with after its head:
    the connection reads no more requests; ``write`` skips while the
    socket has ``max_pending`` bytes unsent."""

    kind = "stream"

    def __init__(self, console, conn, max_pending):
        self.console = console
        self.conn = conn
        self.max_pending = max_pending
        self.bytes_out = 0
        self.skipped = 0
        self.behind_since = None
        self.last_write = conn.loop.time()

    def pending(self):
        tr = self.conn.transport
        return tr.get_write_buffer_size() if tr is not None else 0

    def write(self, data):
        """Send ``data``; False (skipped) while the page does not read."""
        conn = self.conn
        if conn.state >= CLOSING:
            return False
        if self.pending() > self.max_pending:
            self.skipped += 1
            return False
        conn.transport.write(data)
        self.bytes_out += len(data)
        self.last_write = conn.loop.time()
        return True

    def closing_data(self, code, message):
        """What goes out when the connection closes (``event: close``)."""
        if code is None:
            return b""
        return sse(b"close", {"code": code, "message": message})

    def ended(self):
        """The connection is gone."""


class _Feed(_Stream):
    kind = "feed"

    def __init__(self, console, conn):
        super().__init__(console, conn, FEED_MAX_PENDING)

    def send_tick(self, data, now):
        if self.write(data):
            self.behind_since = None
        elif self.conn.state < CLOSING:
            if self.behind_since is None:
                self.behind_since = now
            elif now - self.behind_since > FEED_STALL:
                log.info("console feed %d (%s): not read for %g s: closed", self.conn.id,
                         self.conn.peer, FEED_STALL)
                self.conn.close(408, "the console feed was not read for {:g} s".format(
                    FEED_STALL))

    def ended(self):
        self.console.feeds.discard(self)
        self.console.feed_closed()


class _Tail(_Stream):
    kind = "tail"

    def __init__(self, console, conn, acct, st, seq, live):
        super().__init__(console, conn, TAIL_MAX_PENDING)
        self.acct = acct
        self.st = st
        self.seq = seq
        self.live = live
        self.sent = 0

    def ended(self):
        self.console.tails.discard(self)

    async def run(self):
        conn = self.conn
        loop = conn.loop
        st = self.st
        lg = st.log
        name = st.name
        try:
            while conn.state == READY and not lg.closed:
                first, last = lg.first_seq, lg.last_seq
                if self.seq > last:
                    if loop.time() - self.last_write > TAIL_KEEPALIVE:
                        self.write(b": keep-alive\n\n")
                    await wait_append(st, loop.time() + TAIL_KEEPALIVE / 3)
                    continue
                if self.live and last - self.seq >= TAIL_LIVE_WINDOW:
                    to = last - TAIL_LIVE_WINDOW + 1
                    self.write(sse(b"skipped", {"first": self.seq, "last": to - 1,
                                                "count": to - self.seq}))
                    self.seq = to
                if self.seq < first:
                    self.write(sse(b"lost", {"first": self.seq, "last": first - 1,
                                             "count": first - self.seq}))
                    self.seq = first
                b = lg.read(self.seq, TAIL_BATCH, TAIL_BATCH_BYTES)
                if b.lost:
                    self.write(sse(b"lost", {"first": self.seq, "last": self.seq + b.lost - 1,
                                             "count": b.lost}))
                rows = tail_rows(b)
                self.seq = max(self.seq + 1, b.next_seq)
                if rows:
                    self.sent += len(rows)
                    while not self.write(sse(b"events", rows, rows[-1]["seq"])):
                        if conn.state != READY:
                            return
                        await asyncio.sleep(TAIL_PACE)
                await asyncio.sleep(TAIL_PACE)
            if lg.closed and conn.state == READY:
                conn.close(404, "stream {!r} was deleted".format(name))
        except Exception as exc:        # (not CancelledError: the connection went)
            log.exception("console tail of stream %s failed", name)
            conn.close(500, "internal error: {}".format(exc))


def tail_rows(batch):
    """The rows a tail shows of the events of ``batch``."""
    rows = []
    seqs = batch.seqs
    for i, ev in enumerate(events_from_batch(batch)):
        data = ev.data
        n = len(data)
        preview = data[:TAIL_PREVIEW * 4]
        try:
            text = preview.decode("utf-8")
            binary = False
        except UnicodeDecodeError:
            try:
                text = preview[:-3].decode("utf-8") if n > len(preview) else None
            except UnicodeDecodeError:
                text = None
            binary = text is None
            if binary:
                text = preview[:TAIL_PREVIEW // 2].hex(" ")
        truncated = n > len(preview) or len(text) > TAIL_PREVIEW
        rows.append({"seq": seqs[i], "subject": ev.routing_subject, "id": ev.id,
                     "source": ev.source, "type": ev.type, "time": _iso_ns(ev.ts),
                     "datacontenttype": ev.datacontenttype, "size": n,
                     "data": text[:TAIL_PREVIEW], "binary": binary, "truncated": truncated})
    return rows


class Console:
    """The console of a ``MonitorServer``: the samples behind the page, its
    feeds, its tables and its tails."""

    def __init__(self, monitor, tail=True):
        self.monitor = monitor
        self.server = monitor.server
        self.tail_enabled = tail
        self.history = deque(maxlen=HISTORY)    # [t] + per second: HISTORY_COLUMNS
        self.advisories = deque(maxlen=ADVISORIES)
        self.n_advisories = 0
        self._new = []                  # advisories since the last tick
        self._missed = 0                # ... over ADVISORIES_PER_TICK
        self.feeds = set()
        self.tails = set()
        self.ticks = 0
        self.tick_seconds = 0.0         # CPU time its ticks took (the console's own cost)
        self._prev = None               # (time, totals) of the last tick
        self.conn_rates = _Rates()      # cid -> (in msgs, out msgs, in bytes, out bytes) / s
        self.stream_rates = _Rates()    # (account, stream) -> (events stored,) / s
        self.sparks = {}                # (account, stream) -> deque of its rates
        self.subjects = deque(maxlen=SUBJECT_WINDOW)   # [(seconds, {(acct, subject): n})]
        self.sample_dropped = 0
        self._sampling = {}             # flow -> the sampler's every (while feeds are open)
        self._published = {}            # flow -> its n_published at the last tick
        self._advisory_flow = None
        self._timer = None
        self._files = {}

    # -- lifecycle ----------------------------------------------------------------------

    def start(self):
        # every account's advisories are published in the system account's flow
        # ($G's own when there are no accounts): the console listens there, as
        # an observer, not a subscriber (no interest: nothing to forward from
        # other nodes; what /subsz and /connz report does not change)
        self._advisory_flow = self.server.accounts.system.flow
        self._advisory_flow.advisory_listeners.append(self._advisory)
        self._schedule()

    def close(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._advisory_flow is not None:
            try:
                self._advisory_flow.advisory_listeners.remove(self._advisory)
            except ValueError:
                pass
            self._advisory_flow = None
        self._sample_off()

    def _schedule(self):
        loop = self.server.loop
        # on the whole second of the loop's clock: ticks 1 s apart, whatever a tick took
        self._timer = loop.call_at(math.floor(loop.time()) + 1.0, self._tick)

    def _advisory(self, subject, body):
        """An advisory, as it is published (``Flow.advisory_listeners``)."""
        self.n_advisories += 1
        if len(self._new) >= ADVISORIES_PER_TICK:
            self._missed += 1
            return
        try:                            # (a copy: JSON values only, as subscribers get it)
            body = orjson.loads(orjson.dumps(body, default=str))
        except (TypeError, ValueError):
            body = {"advisory": str(body)[:1024]}
        kind = subject.rpartition(".")[2]
        a = {"n": self.n_advisories, "time": _iso(time.time()), "subject": subject,
             "kind": kind, "body": body}
        self._new.append(a)
        self.advisories.append(a)

    def feed_closed(self):
        if not self.feeds:
            self._sample_off()

    # -- sampling -----------------------------------------------------------------------

    def _flows(self):
        srv = self.server
        return [(a.name, a.flow) for a in srv.accounts if not a.flow.closed]

    def totals(self):
        """The engines' counters, summed over the accounts (a few reads per
        account, whatever the number of connections): published, delivered,
        their payload bytes, stored."""
        pub = dlv = bpub = bdlv = stored = 0
        for _, flow in self._flows():
            pub += flow.n_published
            dlv += flow.n_delivered
            bpub += flow.bytes_published
            bdlv += flow.bytes_delivered
            stored += flow.n_appended
        return (pub, dlv, bpub, bdlv, stored)

    def _tick(self):
        self._schedule()
        t0 = time.thread_time()         # (CPU time: the console's cost, not the machine's load)
        try:
            self.sample()
            if self.feeds:
                self._send_ticks()
        except Exception:
            log.exception("console: tick failed")
        self._new = []                  # (sent, or no page to send them to)
        self._missed = 0
        self.ticks += 1
        self.tick_seconds += time.thread_time() - t0

    def sample(self):
        srv = self.server
        now = srv.loop.time()
        tot = self.totals()
        if self._prev is not None and now > self._prev[0]:
            dt = now - self._prev[0]
            self.history.append([round(time.time(), 3)] + [
                round(max(0.0, (a - b) / dt), 1) for a, b in zip(tot, self._prev[1])])
        self._prev = (now, tot)
        if not self.feeds:
            return
        self.conn_rates.update({c.id: (c.in_msgs, c.out_msgs, c.parser.bytes_in,
                                       c.outbuf.bytes_out)
                                for c in list(srv.conns.values())}, now)
        stored = {}
        for acct, flow in self._flows():
            for name, s in flow.streams().items():
                if len(stored) >= STREAMS_TRACKED:
                    break
                stored[(acct, name)] = (s._target.appended,)
        self.stream_rates.update(stored, now)
        sparks = self.sparks
        for k in [k for k in sparks if k not in stored]:
            del sparks[k]
        for k, r in self.stream_rates.rate.items():
            d = sparks.get(k)
            if d is None:
                d = sparks[k] = deque(maxlen=SPARK)
            d.append(round(r[0], 1))
        self._sample_subjects(now)

    def _sample_subjects(self, now):
        """Take each engine's subject samples (events = samples x the
        stride they were taken at) and set the stride for about
        SAMPLE_TARGET samples a second at the rate the engine publishes."""
        counts = Counter()
        for acct, flow in self._flows():
            every = self._sampling.get(flow)
            if every is not None:
                samples, dropped = flow.take_samples()
                self.sample_dropped += dropped * every
                for subject, n in samples.items():
                    counts[(acct, subject)] += n * every
            published = flow.n_published
            before = self._published.get(flow)
            self._published[flow] = published
            # its events in the last second (ticks are 1 s apart; at first, the
            # servers' rate from the history)
            rate = published - before if before is not None else (
                self.history[-1][1] if self.history else 0)
            want = max(1, int(rate) // SAMPLE_TARGET)
            if every != want:
                flow.sample_subjects(want)
                self._sampling[flow] = want
        if len(counts) > SUBJECTS_KEPT:
            counts = Counter(dict(counts.most_common(SUBJECTS_KEPT)))
        self.subjects.append((now, counts))

    def _sample_off(self):
        for flow, _ in list(self._sampling.items()):
            try:
                flow.sample_subjects(0)
            except Exception:           # (closed)
                pass
        self._sampling = {}
        self._published = {}
        self.subjects.clear()

    # -- the feed -----------------------------------------------------------------------

    def overview(self):
        srv = self.server
        mon = self.monitor
        conns = list(srv.conns.values())
        doors = Counter()
        subscriptions = pending = 0
        for c in conns:                 # (one pass: a server may hold many thousands)
            doors[c.door] += 1
            subscriptions += len(c.subs)
            pending += c.pending_bytes()
        ports = {"native": srv.port, "nats": srv.nats_port, "mqtt": srv.mqtt_port,
                 "http": srv.http_addresses[0][1] if getattr(srv, "http_addresses", None)
                 else None}
        streams = consumers = 0
        for _, flow in self._flows():
            ss = flow.streams()
            streams += len(ss)
            consumers += sum(len(s.consumers()) for s in ss.values())
        from fastflow.server.monitor import rss_bytes, uptime_text
        up = srv.loop.time() - srv.t0
        pub, dlv, _, _, stored = self._prev[1] if self._prev is not None else self.totals()
        d = {"time": _iso(time.time()), "server": {
                "name": srv.name, "id": srv.id, "version": __version__,
                "uptime": uptime_text(up), "uptime_seconds": round(up, 1),
                "start": _iso(srv.start_time), "mem": rss_bytes() or 0,
                "cpu": mon.cpu_percent(), "loop": srv.loop_name,
                "accounts": srv.accounts.enabled},
             "rates": self.history[-1] if self.history else None,
             "doors": {k: {"connections": doors.get(k, 0), "port": v}
                       for k, v in ports.items() if v},
             "totals": {"connections": len(conns), "total_connections": srv.n_total,
                        "subscriptions": subscriptions, "pending_bytes": pending,
                        "slow_consumers": srv.n_slow_consumers, "published": pub,
                        "delivered": dlv, "stored": stored},
             "advisories": self._new, "advisories_total": self.n_advisories,
             "advisories_missed": self._missed}
        for k, n in doors.items():
            if k not in d["doors"]:
                d["doors"][k] = {"connections": n, "port": None}
        d["totals"]["streams"] = streams
        d["totals"]["consumers"] = consumers
        subs = 0
        for acct in srv.accounts:
            if acct.subscriptions is not None:
                subs += len(acct.subscriptions.subs)
        d["totals"]["api_subscriptions"] = subs
        if srv.cluster is not None:
            cs = srv.cluster.stats()
            d["cluster"] = {"connected": cs["connected"], "nodes": cs["nodes"]}
        return d

    def _send_ticks(self):
        data = sse(b"tick", self.overview())
        now = self.server.loop.time()
        for f in list(self.feeds):
            f.send_tick(data, now)

    def _room(self):
        """503 when ``STREAMS_MAX`` feeds and tails are open."""
        if len(self.feeds) + len(self.tails) >= STREAMS_MAX:
            raise HttpError(503, "too many console feeds and tails open ({}): close a page or "
                                 "a tail".format(STREAMS_MAX), (("retry-after", "5"),))

    def open_feed(self, proto, req):
        self._room()
        feed = _Feed(self, proto.conn)
        hello = {"server": self.overview()["server"], "history": list(self.history),
                 "history_columns": ["time"] + list(HISTORY_COLUMNS),
                 "advisories": list(self.advisories), "tail": self.tail_enabled,
                 "catalog": self._catalog_of(self.server.accounts.default) is not None}
        if not open_stream(proto, req, feed):
            return
        self.feeds.add(feed)
        feed.write(sse(b"hello", hello))

    # -- the tables ---------------------------------------------------------------------

    def api(self, proto, req, view):
        params = req.params()
        fn = _VIEWS.get(view)
        if fn is None:
            raise HttpError(404, "no console view {!r} (views: {})".format(
                view[:60], ", ".join(sorted(_VIEWS))))
        proto.respond(req, 200, to_json(fn(self, params)) + b"\n", _JSON)

    def _accounts(self, params):
        """The accounts a table shows: all of them, or ``acc`` (404: no such one)."""
        want = params.get("acc")
        if want is None:
            return [a for a in self.server.accounts if not a.flow.closed]
        return [_account(self.server, want)]

    def view_overview(self, params):
        d = self.overview()
        points = params.get("points", "")
        if points and not (points.isascii() and points.isdigit() and len(points) < 19
                           and int(points) > 0):
            raise HttpError(400, "points must be a positive integer, got {!r}".format(
                points[:40]))
        d["history"] = list(self.history)[-int(points):] if points else list(self.history)
        d.pop("advisories")
        return d

    def view_streams(self, params):
        offset, limit, key, desc, q = page_args(
            params, ("name", "events", "bytes", "rate", "last_seq", "fill"), "name")
        rows = []
        multi = self.server.accounts.enabled
        for acct in self._accounts(params):
            for name, s in acct.flow.streams().items():
                if q and q not in name.lower() and not any(q in p.lower() for p in s.subjects):
                    continue
                lg = s.log
                r = s.retention
                events, nbytes = len(lg), lg.bytes
                fills = []
                if r.max_events:
                    fills.append(events / r.max_events)
                if r.max_bytes:
                    fills.append(nbytes / r.max_bytes)
                rate = self.stream_rates.rate.get((acct.name, name))
                rows.append({"name": name, "account": acct.name if multi else None,
                             "subjects": list(s.subjects)[:20], "storage": s.storage,
                             "events": events, "bytes": nbytes, "first_seq": lg.first_seq,
                             "last_seq": lg.last_seq, "rate": round(rate[0], 1) if rate else 0.0,
                             "fill": round(max(fills), 4) if fills else None,
                             "retention": r.to_dict(), "consumers": len(s.consumers()),
                             "replicas": s.replicas})
        page = _page(rows, offset, limit, key, desc)
        for row in page["rows"]:
            acct = self.server.accounts.get(row["account"] or "$G") \
                if self.server.accounts.enabled else self.server.accounts.default
            s = acct.flow.streams().get(row["name"]) if acct is not None else None
            row["spark"] = list(self.sparks.get((acct.name if acct else "$G", row["name"]), ()))
            if s is not None and not s.log.closed and len(s.log):
                row["first_time"] = _record_time(s.log, s.log.first_seq)
                row["last_time"] = _record_time(s.log, s.log.last_seq)
                ma = s.retention.max_age
                if ma and row["first_time"]:
                    age = time.time() - _record_ts(s.log, s.log.first_seq) / 1e9
                    row["fill"] = round(max(row["fill"] or 0.0, min(1.0, age / ma)), 4)
        return page

    def view_subjects(self, params):
        try:
            limit = int(params.get("limit", 20))
        except ValueError:
            raise HttpError(400, "limit must be an integer") from None
        if not 0 < limit <= TOP_MAX:
            raise HttpError(400, "limit must be 1..{}, got {}".format(TOP_MAX, limit))
        q = params.get("q", "")[:200].lower()
        total = Counter()
        for _, counts in self.subjects:
            total.update(counts)
        span = len(self.subjects)
        if q:
            total = Counter({k: v for k, v in total.items() if q in k[1].lower()})
        top = heapq.nlargest(limit, total.items(), key=lambda kv: kv[1])
        all_n = sum(total.values()) or 1
        rows = []
        multi = self.server.accounts.enabled
        for (acct_name, subject), n in top:
            acct = self.server.accounts.get(acct_name) if multi else \
                self.server.accounts.default
            subs = self._subscribers(acct.flow, subject) if acct is not None else []
            rows.append({"subject": subject, "account": acct_name if multi else None,
                         "rate": round(n / span, 1) if span else 0.0,
                         "share": round(n / all_n, 4), "subscribers": len(subs),
                         "shown": subs[:SUBSCRIBERS_SHOWN]})
        return {"window_seconds": span, "distinct": len(total), "sampling":
                max(self._sampling.values()) if self._sampling else 0,
                "sample_dropped": self.sample_dropped, "rows": rows,
                "sampling_on": bool(self._sampling)}

    def _subscribers(self, flow, subject):
        from fastflow._impl import StreamTarget, SubTarget, WireTarget
        out = []
        try:
            targets = flow.matcher.match(subject)
        except Exception:               # (an odd subject, a closed flow)
            return out
        for t in targets:
            if isinstance(t, WireTarget):
                c = t.owner
                if c is None or getattr(c, "id", None) is None:
                    out.append({"kind": "wire"})
                    continue
                pat = None
                for _sid, (tt, p, _q) in list(getattr(c, "subs", {}).items()):
                    if tt is t:
                        pat = p
                        break
                out.append({"kind": "connection", "cid": c.id, "door": c.door,
                            "user": c.user, "pattern": pat, "remote": t.remote})
            elif isinstance(t, StreamTarget):
                out.append({"kind": "stream", "stream": t.name})
            elif isinstance(t, SubTarget):
                sub = t.owner
                out.append({"kind": "local", "pattern": getattr(sub, "pattern", None)})
            else:
                out.append({"kind": type(t).__name__})
        return out

    def view_consumers(self, params):
        offset, limit, key, desc, q = page_args(
            params, ("name", "stream", "lag", "pending", "redelivered", "dead_lettered"), "-lag")
        rows = []
        multi = self.server.accounts.enabled
        for acct in self._accounts(params):
            for sname, s in acct.flow.streams().items():
                for cname, c in s.consumers().items():
                    if q and q not in cname.lower() and q not in sname.lower():
                        continue
                    i = c.info()
                    rows.append({"name": cname, "stream": sname,
                                 "account": acct.name if multi else None,
                                 "lag": i["lag"], "pending": i["pending"],
                                 "delivered": i["delivered"], "redelivered": i["redelivered"],
                                 "acked": i["acked"], "dead_lettered": i["dead_lettered"],
                                 "errors": i["errors"], "lost": i["lost"],
                                 "ack_floor": i["ack_floor"], "push": i["push"],
                                 "filter": i["config"].get("filter")})
        return _page(rows, offset, limit, key, desc)

    def view_subscriptions(self, params):
        offset, limit, key, desc, q = page_args(
            params, ("id", "stream", "lag", "pending", "failed", "dead", "status"), "-lag")
        rows = []
        multi = self.server.accounts.enabled
        for acct in self._accounts(params):
            mgr = acct.subscriptions
            if mgr is None:
                continue
            for s in list(mgr.subs.values()):
                i = s.info()
                if q and q not in str(i.get("id", "")).lower() and \
                        q not in str(i.get("stream", "")).lower():
                    continue
                sink = i.get("sink_state") or {}
                rows.append({"id": i["id"], "account": acct.name if multi else None,
                             "stream": i.get("stream"), "protocol": i.get("protocol"),
                             "sink": redact_url(i.get("sink")), "status": i.get("status"),
                             "reason": i.get("reason"), "lag": i.get("lag"),
                             "pending": i.get("pending"), "delivered": i.get("delivered"),
                             "failed": i.get("failed"), "retried": i.get("retried"),
                             "dead": i.get("dead"), "last_error": i.get("last_error"),
                             "last_delivery": i.get("last_delivery"),
                             "sink_state": {k: sink.get(k) for k in (
                                 "mode", "in_flight", "pending", "connections", "retired",
                                 "retired_reason", "last_status", "handshake")
                                 if k in sink} or None})
        return _page(rows, offset, limit, key, desc)

    def view_connections(self, params):
        offset, limit, key, desc, q = page_args(
            params, ("cid", "in_rate", "out_rate", "pending_bytes", "subscriptions", "dropped",
                     "uptime", "in_msgs", "out_msgs"), "-out_rate")
        srv = self.server
        now = srv.loop.time()
        rows = []
        rates = self.conn_rates.rate
        for c in list(srv.conns.values()):
            if q and not any(q in str(v).lower() for v in (c.id, c.door, c.peer, c.user,
                                                            c.account.name, c.name)):
                continue
            r = rates.get(c.id, (0.0, 0.0, 0.0, 0.0))
            rows.append({"cid": c.id, "door": c.door, "peer": c.peer, "name": c.name,
                         "user": c.user, "account": c.account.name, "state": c.state.label,
                         "subscriptions": len(c.subs), "in_msgs": c.in_msgs,
                         "out_msgs": c.out_msgs, "in_rate": round(r[0], 1),
                         "out_rate": round(r[1], 1), "in_bytes_rate": round(r[2], 1),
                         "out_bytes_rate": round(r[3], 1), "pending_bytes": c.pending_bytes(),
                         "dropped": sum(e[0].dropped for e in list(c.subs.values())),
                         "uptime": round(now - c.t0, 1)})
        page = _page(rows, offset, limit, key, desc)
        page["slow_consumers"] = srv.n_slow_consumers
        page["max_pending"] = srv.config.max_pending
        return page

    def view_advisories(self, params):
        kind = params.get("kind")
        rows = [a for a in self.advisories if kind is None or a["kind"] == kind]
        return {"total": self.n_advisories, "rows": rows[::-1]}

    def view_catalog(self, params):
        offset, limit, _key, _desc, q = page_args(params, ("name",), "name", 20)
        out = []
        for acct in self._accounts(params):
            cat = self._catalog_of(acct)
            if cat is None:
                continue
            streams = acct.flow.streams()
            trackers = cat.trackers.trackers     # (brought up to date by the catalog's timer)
            for name in sorted(streams):
                if q and q not in name.lower():
                    continue
                tr = trackers.get(name)
                types = []
                if tr is not None:
                    now = time.monotonic()
                    for s in sorted(tr.types.values(), key=lambda s: -s.count)[:50]:
                        t = {"type": s.type, "count": s.count, "rate": round(s.rate(now), 2),
                             "first_seen": _iso_ns(s.first_ts), "last_seen": _iso_ns(s.last_ts),
                             "source": s.source, "sources": "many" if s.sources > 1 else "one",
                             "datacontenttype": s.datacontenttype,
                             "dataschema": s.dataschema}
                        t["schema"] = self._schema(cat, s.type)
                        types.append(t)
                out.append({"stream": name, "account": acct.name
                            if self.server.accounts.enabled else None,
                            "subjects": list(streams[name].subjects), "types": types})
        return {"enabled": any(self._catalog_of(a) is not None for a in self._accounts(params)),
                "total": len(out), "offset": offset, "limit": limit,
                "rows": out[offset:offset + limit]}

    @staticmethod
    def _catalog_of(acct):
        return getattr(acct, "catalog", None) if acct is not None else None

    @staticmethod
    def _schema(cat, type_):
        """The schema bound to events of ``type_`` in ``cat``: its xid and
        document (None: none)."""
        schemas = getattr(cat, "schemas", None)
        if schemas is None:
            return None
        xid = schemas.bound_xid(type_)
        if xid is None:
            return None
        gid, sid = schemas._types[type_]
        s = schemas.groups[gid].schemas[sid]
        v = s.versions.get(s.default)
        return {"xid": xid, "format": getattr(v, "format", None),
                "document": getattr(v, "schema", None)}

    # -- tails --------------------------------------------------------------------------

    def open_tail(self, proto, req, path_rest):
        if not self.tail_enabled:
            raise HttpError(403, "stream tails are off on this server ([monitor] "
                                 "console_tail = false)")
        name = unquote(path_rest)
        params = req.params()
        srv = self.server
        acct = _account(srv, params["acc"]) if "acc" in params else srv.accounts.default
        st = acct.flow.streams().get(name)
        if st is None:
            raise HttpError(404, "no stream {!r}{}".format(name[:200], " in account {!r}".format(
                acct.name) if srv.accounts.enabled else ""))
        lg = st.log
        frm = params.get("from", "new")
        live = frm == "new"
        if frm == "new":
            seq = lg.last_seq + 1
        elif frm == "first":
            seq = lg.first_seq
        elif frm == "last":
            seq = max(lg.first_seq, lg.last_seq)
            live = True
        elif frm.isdigit() and frm.isascii() and len(frm) < 19:
            seq = max(1, int(frm))
        else:
            t = _parse_time(frm)
            if t is None:
                raise HttpError(400, "query parameter 'from' must be new, first, last, a seq "
                                     "or an RFC 3339 time, got {!r}".format(frm[:60]))
            seq = lg.seek(time=t).seq
        self._room()
        tail = _Tail(self, proto.conn, acct, st, seq, live)
        if not open_stream(proto, req, tail):
            return
        self.tails.add(tail)
        start = {"stream": name, "seq": seq, "first_seq": lg.first_seq,
                 "last_seq": lg.last_seq, "live": live}
        if srv.accounts.enabled:
            start["account"] = acct.name
        tail.write(sse(b"start", start))
        proto.conn.track(proto.loop.create_task(tail.run()))

    # -- the page's files ---------------------------------------------------------------

    def file(self, name):
        """``(body, content type, etag)`` of one of the page's files, or None."""
        got = self._files.get(name)
        if got is None:
            ctype = STATIC_FILES.get(name)
            if ctype is None:
                return None
            with open(os.path.join(STATIC, name), "rb") as f:
                body = f.read()
            etag = '"{}"'.format(hashlib.sha256(body).hexdigest()[:24])
            got = self._files[name] = (body, ctype, etag)
        return got

    def serve_file(self, proto, req, name):
        got = self.file(name or "index.html")
        if got is None:
            raise HttpError(404, "no console file {!r}".format(name[:100]))
        body, ctype, etag = got
        hs = _PAGE_HEADERS + (("etag", etag),)
        if req.headers.get("if-none-match") == etag:
            proto.respond(req, 304, b"", None, hs)
            return
        proto.respond(req, 200, body, ctype, hs)

    def stats(self):
        return {"feeds": len(self.feeds), "tails": len(self.tails), "ticks": self.ticks,
                "tick_seconds": round(self.tick_seconds, 6),
                "advisories": self.n_advisories}


def _account(srv, name):
    """The account ``name`` (a table's or a tail's ``acc``); 404 without one."""
    acct = srv.accounts.get(name)
    if acct is None or acct.flow.closed:
        raise HttpError(404, "no account {!r}{}".format(name[:60], "" if srv.accounts.enabled
                                                          else " (accounts are off)"))
    return acct


def _parse_time(s):
    """Nanoseconds of an RFC 3339 time (one before 1970 or past 2262 is
    taken as the first or the last nanosecond the log's times hold), or None."""
    try:
        t = datetime.datetime.fromisoformat(s.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    try:
        ns = int(t.timestamp() * 1e9)
    except OverflowError:
        return None
    return max(0, min(ns, (1 << 63) - 1))


def _record_ts(lg, seq):
    try:
        return lg.get(seq).ts
    except Exception:                   # (evicted meanwhile)
        return 0


def _record_time(lg, seq):
    return _iso_ns(_record_ts(lg, seq))


def open_stream(proto, req, stream):
    """Answer ``req`` with the head of an event stream served by
    ``stream`` from now on; False for HEAD (the head alone)."""
    conn = proto.conn
    hs = _STREAM_HEADERS + proto.response_headers(req)
    proto.requests += 1
    if req.method == "HEAD":
        proto.write(response_head(200, None, EVENT_STREAM, hs, not req.keep_alive))
        if not req.keep_alive:
            conn.close()
        return False
    proto.write(response_head(200, None, EVENT_STREAM, hs, close=True) + b": ok\n\n")
    proto.busy = True                   # (the requests behind it are never answered)
    proto.queue.clear()
    conn.stream = stream
    return True


_VIEWS = {
    "overview": Console.view_overview,
    "streams": Console.view_streams,
    "subjects": Console.view_subjects,
    "consumers": Console.view_consumers,
    "subscriptions": Console.view_subscriptions,
    "connections": Console.view_connections,
    "advisories": Console.view_advisories,
    "catalog": Console.view_catalog,
}
