"""Server-Sent Events and the streams API of the HTTP door (docs/http.md).

- ``GET /events/<pattern>`` (or ``GET /events?subject=...``, repeated) with
  ``Accept: text/event-stream``: a live subscription (``?queue=`` joins a
  queue group).  The response is ``200``, ``content-type:
  text/event-stream``, no length; from then on the connection is served by
  ``SseProtocol`` and each event is one SSE message (``data:`` its
  CloudEvents JSON), written in C by the core's ``SseTarget`` straight from
  the router.
- ``/streams``: list, info, add, delete and purge of streams; a stream's
  events from a seq, a time, the first, the last or new ones, as an SSE tail
  (``id:`` is the stream seq, ``Last-Event-ID`` resumes) or as JSON pages
  for ``curl``; durable consumers (add, info, list, delete, fetch, ack).
  The requests and their rules are the native door's
  (``fastflow.server.streams``).

A stream tail reads the log by seq, in bounded batches that wait for the
socket to drain, and sleeps on the stream's append listeners once it has
read everything: an event appended at any moment is read from the log like
the others, so the switch from the stored events to the live ones has no
gap and no duplicate.  Events evicted before the tail read them are
reported with an ``event: lost`` message.
"""

import logging
from urllib.parse import unquote

from fastflow._impl import Event, SseTarget, events_from_batch, validate_pattern
from fastflow.errors import EventError, FastflowError
from fastflow.event import to_json
from fastflow.protocol import error_code
from fastflow.server.connection import READY, DoorProtocol, conflate_option
from fastflow.server.http import BATCH, HttpError, _dumps, response_head
from fastflow.server.streams import (
    ACK_KINDS,
    LogReader,
    RequestError,
    StreamRequests,
    ack_subject,
    decimal,
    json_args,
    room,
    wait_append,
)

__all__ = ("EVENT_STREAM", "SseProtocol", "streams_request", "subscribe_sse")

log = logging.getLogger("fastflow.server")

EVENT_STREAM = "text/event-stream"
_JSON = "application/json"

PAGE_LIMIT = 100                        # events of a JSON page unless ?limit= says
PAGE_LIMIT_MAX = 10000                  # the most ?limit= may ask
PAGE_BYTES = 4 << 20                    # records read for one JSON page (about)
FETCH_MAX = 10000                       # deliveries one HTTP fetch may ask for
_INT_MAX = (1 << 63) - 2                # the most a seq or a time (ns) may be
_RECHECK = 5.0                          # seconds an idle tail sleeps before it looks again

_KEEPALIVE = b": keep-alive\n\n"
_OPENED = b": ok\n\n"                   # right after the head: clients (curl) and proxies
                                        # pass the head on when some body follows


# -- what a request asks ------------------------------------------------------------------


def accepts_event_stream(req):
    """Whether ``req``'s Accept header names ``text/event-stream`` (with a
    q-value above 0)."""
    accept = req.headers.get("accept")
    if not accept:
        return False
    for part in accept.split(","):
        mt, _, params = part.partition(";")
        if mt.strip().lower() != EVENT_STREAM:
            continue
        for p in params.split(";"):
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    return float(v) > 0
                except ValueError:
                    return False
        return True
    return False


def _accepts_batch(req):
    accept = req.headers.get("accept") or ""
    return any(part.partition(";")[0].strip().lower() == BATCH for part in accept.split(","))


def _int_param(params, key, least=0, most=None):
    v = params.get(key)
    if v is None:
        return None
    v = v.strip()
    n = decimal(v)
    if n is None or n < least or n >= _INT_MAX or (most is not None and n > most):
        raise HttpError(400, "query parameter '{}' must be an integer {}, got {!r}".format(
            key, ">= {}".format(least) if most is None else "from {} to {}".format(least, most),
            v[:40]))
    return n


def _seconds_param(params, key, most):
    v = params.get(key)
    if v is None:
        return 0.0
    try:
        s = float(v)
    except ValueError:
        s = -1.0
    if not 0 <= s <= most:
        raise HttpError(400, "query parameter '{}' must be seconds from 0 to {:g}, got "
                             "{!r}".format(key, most, v[:40]))
    return s


def _replay_args(req, params, sse):
    """The REPLAY arguments of ``?seq=&time=&start=&limit=&filter=`` (and
    of ``Last-Event-ID`` for an event stream: it wins over the query, as
    EventSource reconnects to the same URL)."""
    args = {}
    for key in ("start", "filter", "time"):
        v = params.get(key)
        if v is not None:
            args[key] = v
    t = args.get("time")
    if t is not None and t.strip().isdigit() and t.isascii():
        args["time"] = _int_param(params, "time", 0, _INT_MAX)
    seq = _int_param(params, "seq", 0, _INT_MAX)
    if seq is not None:
        args["seq"] = seq
    if "start" in args and args["start"] not in ("first", "last", "new"):
        raise HttpError(400, "query parameter 'start' must be first, last or new, got "
                             "{!r}".format(args["start"][:40]))
    if "filter" in args:
        try:
            validate_pattern(args["filter"])
        except FastflowError as exc:
            raise HttpError(400, "query parameter 'filter': {}".format(exc)) from None
    if sse:
        last = req.headers.get("last-event-id")
        if last is not None and last.strip():
            last = last.strip()
            n = decimal(last)
            if n is None or n >= _INT_MAX:
                raise HttpError(400, "Last-Event-ID must be a stream seq (an integer), got "
                                     "{!r}".format(last[:40]))
            for key in ("start", "time"):
                args.pop(key, None)
            args["seq"] = n + 1
    if "seq" in args and "time" in args:
        raise HttpError(400, "give query parameter 'seq' or 'time', not both")
    return args


def _refusal(exc):
    """The HttpError of a refused stream request."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, RequestError):
        return HttpError(exc.code, str(exc),
                         (("retry-after", "1"),) if exc.code == 429 else ())
    if isinstance(exc, KeyError):
        return HttpError(404, str(exc.args[0]) if exc.args else "not found")
    if isinstance(exc, FastflowError):
        code = error_code(exc)
        return HttpError(code if 400 <= code < 600 else 400, str(exc))
    return HttpError(400, str(exc))


# -- the event stream: the door protocol after the head --------------------------------------


class _NoInput:
    """The parser of an event stream: a client sends nothing more; what
    comes is counted and dropped."""

    def __init__(self, before):
        self.bytes_in = before.bytes_in
        self.pubs_in = 0
        self.buffered = 0
        self.denied = before.denied
        self.pub_allow = None
        self.pub_deny = None
        self.resp_check = None
        self.route_pubs = False

    def feed(self, data):
        self.bytes_in += len(data)
        return []


def _sse_event(name, obj, eid=None):
    """An SSE message of our own (``event: <name>``, so that
    EventSource.onmessage does not see it)."""
    return b"".join((b"event: ", name, b"\n", b"id: %d\n" % eid if eid is not None else b"",
                     b"data: ", _dumps(obj), b"\n\n"))


class SseProtocol(DoorProtocol):
    """An HTTP connection answering with an event stream (``text/event-
    stream``): it reads nothing more; its PING is a ``: keep-alive``
    comment; a slow consumer (output over ``max_pending``) is cut as on
    every door, with the reason in an ``event: close`` message."""

    name = "sse"
    parser_error = HttpError

    def __init__(self, conn, http, what):
        DoorProtocol.__init__(self, conn)
        self.parser = _NoInput(http.parser)
        self.requests = http.requests
        self.what = what                # the request that opened it (monitoring)

    def handle(self, items):
        pass

    def greet(self):
        pass

    def close_data(self, code, message, rid):
        return _sse_event(b"close", {"code": code, "message": message})

    def ping(self):
        # EventSource never answers: a comment keeps proxies from timing
        # the stream out, and a dead peer shows up as a failed write
        self.conn.pings_out = 0
        self.outbuf.write(_KEEPALIVE)

    def err(self, code, message, rid=0):
        """The stream ends (its stream was deleted, it failed): the reason
        as an ``event: close`` message, then the connection closes."""
        self.conn.close(code, message)

    def protocol_error(self, exc):
        return exc.status, exc.message

    def stats(self, d):
        d["requests"] = self.requests
        d["sse"] = self.what


def _open_stream(proto, req, what, headers=()):
    """Answer ``req`` with the head of an event stream and serve the
    connection with ``SseProtocol`` from now on; the SseProtocol, or None
    for a HEAD request (answered with the head alone)."""
    conn = proto.conn
    hs = (("cache-control", "no-store"), ("x-accel-buffering", "no")) + tuple(headers) \
        + proto.cors(req)
    proto.requests += 1
    proto.server.n_http_requests += 1
    if req.method == "HEAD":
        proto.outbuf.write(response_head(200, None, EVENT_STREAM, hs, not req.keep_alive))
        if not req.keep_alive:
            conn.close()
        return None
    proto.outbuf.write(response_head(200, None, EVENT_STREAM, hs, close=True) + _OPENED)
    # the HTTP requests behind this one are never answered: the response
    # runs until the connection closes
    proto.busy = True
    proto.queue.clear()
    sse = SseProtocol(conn, proto, what)
    conn.switch(sse)
    conn.resume("http")                 # (paused while a password was checked in a thread)
    return sse


# -- GET /events/<pattern>: live subscriptions --------------------------------------------


def subscribe_sse(proto, req, principal, pattern):
    """``GET /events/<pattern>`` with ``Accept: text/event-stream``: a live
    subscription to ``pattern`` and the ``?subject=`` patterns (``?queue=``:
    in that queue group), each event one SSE message without ``id:``."""
    if not accepts_event_stream(req):
        raise HttpError(406, "GET /events/<pattern> answers with Server-Sent Events: send "
                             "'Accept: text/event-stream' (a stream's stored events as JSON: "
                             "GET /streams/<name>/events)", (("vary", "accept"),))
    patterns = [pattern] if pattern is not None else []
    for p in req.param_list("subject"):
        try:
            validate_pattern(p)
        except FastflowError as exc:
            raise HttpError(400, "query parameter 'subject': {}".format(exc)) from None
        patterns.append(p)
    if not patterns:
        raise HttpError(400, "no subject pattern: GET /events/<pattern> or "
                             "/events?subject=<pattern> (repeat it for more)")
    limit = proto.cfg.max_subscriptions
    if limit and len(patterns) > limit:
        raise HttpError(400, "{} subject patterns: at most max_subscriptions ({}) on one "
                             "connection".format(len(patterns), limit))
    why = proto.conn.may_subscribe(len(patterns))
    if why is not None:
        raise HttpError(429, why, (("retry-after", "1"),))
    queue = req.params().get("queue") or None
    try:
        conflate = conflate_option(req.params().get("conflate", "0"), "query parameter "
                                                                      "'conflate'")
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None
    if queue is not None and (len(queue) > 256 or any(c.isspace() for c in queue)):
        raise HttpError(400, "query parameter 'queue': a queue group name has no white space "
                             "and at most 256 characters")
    perms = principal.permissions
    if not perms.unrestricted:
        for p in patterns:
            why = perms.subscribe_denied(p, queue)
            if why is not None:
                raise HttpError(403, why)
    sse = _open_stream(proto, req, {"subjects": patterns, "queue": queue})
    if sse is None:
        return
    conn = proto.conn
    lineage = proto.lineage
    for sid, p in enumerate(dict.fromkeys(patterns), 1):
        conn.subscribe(sid, p, queue, SseTarget(conn.outbuf, None, conn.echo, lineage),
                       conflate)


# -- /streams ------------------------------------------------------------------------------


def _path_names(path):
    """The percent-decoded segments of ``/streams/...`` after ``streams``."""
    parts = path.split("/")[2:]
    if parts and parts[-1] == "":
        parts.pop()                     # a trailing slash
    try:
        return [unquote(p, encoding="utf-8", errors="strict") for p in parts]
    except UnicodeDecodeError:
        raise HttpError(400, "the path is not percent-encoded UTF-8") from None


def streams_request(proto, req, principal):
    """Every ``/streams...`` request (the table is ``_STREAM_ROUTES``)."""
    names = _path_names(req.path)
    shape = tuple(names[i] if i in (1, 3) and i < len(names) else "*"
                  for i in range(len(names)))
    methods = _STREAM_ROUTES.get(shape)
    if methods is None:
        raise HttpError(404, "no such resource: {!r} (see docs/http.md)".format(req.path[:200]))
    method = "GET" if req.method == "HEAD" else req.method
    handler = methods.get(method)
    if handler is None:
        raise HttpError(405, "{} is not allowed on {}".format(req.method, req.path[:200]),
                        (("allow", ", ".join(sorted(methods))),))
    try:
        handler(proto, req, StreamRequests(proto.server, principal), *[
            n for i, n in enumerate(names) if shape[i] == "*"])
    except (HttpError, RequestError, FastflowError, ValueError, KeyError) as exc:
        raise _refusal(exc) from None


def _list(proto, req, sr):
    proto.json(req, sr.stream("list", {}))


def _info(proto, req, sr, name):
    proto.json(req, sr.stream("info", {"name": name}))


def _add(proto, req, sr, name):
    args = json_args(req.body, "POST /streams/" + name)
    if "name" in args and args["name"] != name:
        raise HttpError(400, "the body names stream {!r}, the path {!r}".format(
            args["name"], name))
    args["name"] = name
    existed = name in proto.flow.streams()
    proto.json(req, sr.stream("add", args), 200 if existed else 201)


def _delete(proto, req, sr, name):
    proto.json(req, sr.stream("delete", {"name": name}))


def _purge(proto, req, sr, name):
    args = json_args(req.body, "POST /streams/{}/purge".format(name))
    args["name"] = name
    proto.json(req, sr.stream("purge", args))


def _consumers(proto, req, sr, name):
    proto.json(req, sr.consumer("list", {"stream": name}))


def _consumer_info(proto, req, sr, name, cname):
    proto.json(req, sr.consumer("info", {"stream": name, "name": cname}))


def _consumer_add(proto, req, sr, name, cname):
    args = json_args(req.body, "POST /streams/{}/consumers/{}".format(name, cname))
    for key in ("stream", "name"):
        args.pop(key, None)
    st = sr.stream_of(name)
    existed = cname in st.consumers()
    args.update(stream=name, name=cname)
    proto.json(req, sr.consumer("add", args), 200 if existed else 201)


def _consumer_delete(proto, req, sr, name, cname):
    proto.json(req, sr.consumer("delete", {"stream": name, "name": cname}))


# -- a stream's events: an SSE tail or JSON pages ------------------------------------------


def _events(proto, req, sr, name):
    """``GET /streams/<name>/events``: with ``Accept: text/event-stream`` a
    tail of the stream; otherwise one JSON page."""
    sse = accepts_event_stream(req)
    params = req.params()
    what = "GET /streams/{}/events".format(name)
    args = _replay_args(req, params, sse)
    if not sse:
        args["limit"] = _int_param(params, "limit", 1, PAGE_LIMIT_MAX) or PAGE_LIMIT
    wait = _seconds_param(params, "wait", 3600.0)
    st, pos, filt, limit = sr.replay(name, args, what)
    reader = LogReader(st.log, pos, filt, proto.conn.account, sr.share_key(st))
    conn = proto.conn
    if not sse:
        if wait and reader.seq > st.log.last_seq and pos.lost == 0:
            # nothing yet: a long poll
            proto.busy = True
            conn.pause("http")
            conn.track(proto.loop.create_task(_page_later(proto, req, st, reader, limit,
                                                          wait)), 0, st)
            return
        _page(proto, req, st, reader, limit)
        return
    opened = _open_stream(proto, req, {"stream": st.name, "filter": filt, "seq": reader.seq})
    if opened is None:
        return
    target = SseTarget(conn.outbuf, st.name, True, proto.lineage)
    conn.track(proto.loop.create_task(_tail(conn, st, reader, target)), 0, st)


async def _tail(conn, st, reader, target):
    """The stored events of ``st`` from the reader's seq, then every one
    appended, as SSE messages with their seq as ``id:``."""
    lg = st.log
    name = st.name
    outbuf = conn.outbuf
    low = conn.cfg.write_low_water
    try:
        while conn.state == READY and not lg.closed:
            stop = lg.last_seq
            b, k = reader.read(stop)
            if reader.gap is not None:
                first, last = reader.gap
                reader.gap = None
                outbuf.write(_sse_event(b"lost", {"stream": name, "first": first, "last": last,
                                                  "count": last - first + 1}, last))
            if b is None:
                # (registered before anything else runs: no append is missed;
                # woken now and then to see whether the stream is gone)
                await wait_append(st, conn.loop.time() + _RECHECK)
                continue
            if target.write_batch(b, name, stop) < k:
                return                  # over max_pending: the flush cuts the connection
            await room(conn, low)
        if lg.closed and conn.state == READY:   # (deleted in-process, not by a request)
            conn.close(404, "stream {!r} was deleted".format(name))
    except Exception as exc:            # (not CancelledError: the connection or stream went)
        log.exception("client %d: SSE tail of stream %s failed", conn.id, name)
        conn.close(500, "internal error: {}".format(exc))


def _event_json(ev, lineage):
    try:
        return to_json(ev, lineage)
    except EventError as exc:           # a record from the network that JSON cannot carry
        return _dumps({"error": str(exc)})


def _stored_json(delivery, lineage):
    """The JSON of a consumer delivery as a web subscriber gets it: the
    record as stored, without the lineage entry of this engine's in-process
    delivery."""
    return _event_json(Event.decode(delivery.routing_subject, delivery.encode()), lineage)


def _page_body(st, reader, limit, lineage, batch_format):
    """One page of stored events from the reader's seq: the body, how many
    events and the last seq when it was read."""
    lg = st.log
    stop = lg.last_seq
    items = []
    budget = PAGE_BYTES
    while len(items) < limit and budget > 0:
        b, k = reader.read(stop, min(limit - len(items), 1024), budget)
        if b is None:
            break
        budget -= b.offsets[k] if k else 0
        evs = events_from_batch(b, st.name)
        for i in range(k):
            ev = evs[i]
            js = _event_json(ev, lineage)
            if batch_format:
                items.append(js)
            else:
                items.append(b'{"seq":%d,"subject":%s,"ts":%d,"event":%s}' % (
                    ev.seq, _dumps(ev.routing_subject), ev.ts, js))
    next_seq = min(reader.seq, stop + 1)
    if batch_format:
        return b"[" + b",".join(items) + b"]", len(items), stop, next_seq
    body = b'{"stream":%s,"events":[%s],"count":%d,"next_seq":%d,"last_seq":%d,"lost":%d}' % (
        _dumps(st.name), b",".join(items), len(items), next_seq, stop, reader.lost)
    return body, len(items), stop, next_seq


def _page(proto, req, st, reader, limit):
    batch = _accepts_batch(req)
    body, _n, stop, next_seq = _page_body(st, reader, limit, proto.lineage, batch)
    hs = (("ff-next-seq", str(next_seq)), ("ff-last-seq", str(stop)),
          ("ff-lost", str(reader.lost)), ("cache-control", "no-store"))
    proto.respond(req, 200, body, BATCH if batch else _JSON, hs)


async def _page_later(proto, req, st, reader, limit, wait):
    """A long poll: the page once the stream has an event after the
    reader's seq, or an empty one after ``wait`` seconds."""
    loop = proto.loop
    deadline = loop.time() + wait
    try:
        while reader.seq > st.log.last_seq and loop.time() < deadline and not st.log.closed:
            await wait_append(st, deadline)
        if proto.conn.state == READY:
            _page(proto, req, st, reader, limit)
    except Exception as exc:
        log.exception("client %d: GET /streams/%s/events failed", proto.conn.id, st.name)
        proto.refuse(req, HttpError(500, "internal error: {}".format(exc)))
    proto._next()


# -- durable consumers: fetch and ack ------------------------------------------------------


def _fetch(proto, req, sr, name, cname):
    """``POST /streams/<name>/consumers/<c>/fetch?n=&wait=``: up to ``n``
    deliveries as JSON, each with its ack token; waits up to ``wait``
    seconds for the first."""
    params = req.params()
    args = json_args(req.body, "POST /streams/{}/consumers/{}/fetch".format(name, cname))
    if "n" in params:
        args["n"] = _int_param(params, "n", 1, FETCH_MAX)
    if "wait" in params:
        args["wait"] = _seconds_param(params, "wait", 3600.0)
    n = args.get("n", 1)
    if type(n) is int and n > FETCH_MAX:
        raise HttpError(400, "'n' must be from 1 to {}, got {}".format(FETCH_MAX, n))
    wait = args.get("wait", 0)
    if isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 3600:
        raise HttpError(400, "'wait' must be seconds from 0 to 3600, got {}".format(wait))
    args.update(stream=name, name=cname)
    st, c, n, wait = sr.fetch(args, "fetch")
    proto.busy = True
    proto.conn.pause("http")
    proto.conn.track(proto.loop.create_task(_fetch_task(proto, req, st, c, n, wait)), 0, st, c)


async def _fetch_task(proto, req, st, c, n, wait):
    loop = proto.loop
    conn = proto.conn
    deadline = loop.time() + wait
    out = []
    try:
        while conn.state == READY:
            got = c.fetch(n - len(out))
            conn.account.replayed_events(got)
            out.extend(got)
            if out or loop.time() >= deadline:
                break
            await wait_append(st, deadline, c)
        if conn.state == READY:
            lineage = proto.lineage
            items = [b'{"seq":%d,"subject":%s,"deliveries":%d,"ack":%s,"event":%s}' % (
                ev.seq, _dumps(ev.routing_subject), ev.deliveries,
                _dumps(ack_subject(st.name, c.name, ev.seq)), _stored_json(ev, lineage))
                for ev in out]
            body = b'{"stream":%s,"consumer":%s,"count":%d,"messages":[%s]}' % (
                _dumps(st.name), _dumps(c.name), len(items), b",".join(items))
            proto.respond(req, 200, body, _JSON, (("cache-control", "no-store"),))
    except (FastflowError, ValueError) as exc:     # the consumer was deleted meanwhile
        proto.refuse(req, HttpError(404 if c._closed else 400, "fetch {}/{}: {}".format(
            st.name, c.name, exc)))
    except Exception as exc:
        log.exception("client %d: fetch %s/%s failed", conn.id, st.name, c.name)
        proto.refuse(req, HttpError(500, "internal error: {}".format(exc)))
    proto._next()


def _ack(proto, req, sr, name, cname):
    """``POST /streams/<name>/consumers/<c>/ack``: a JSON body ``{"kind":
    "ack"|"nak"|"term"|"progress", "seqs": [...], "tokens": [...],
    "delay": seconds}`` (or ``?seq=`` and ``?kind=``)."""
    what = "POST /streams/{}/consumers/{}/ack".format(name, cname)
    args = json_args(req.body, what)
    params = req.params()
    kind = args.get("kind", params.get("kind", "ack"))
    if kind not in ACK_KINDS:
        raise HttpError(400, "'kind' must be ack, nak, term or progress, got {!r}".format(kind))
    delay = args.get("delay", 0.0)
    if "delay" in params:
        delay = _seconds_param(params, "delay", 86400.0 * 365)
    seqs = args.get("seqs", [])
    if "seq" in args:
        seqs = [args["seq"]] + list(seqs) if isinstance(seqs, list) else seqs
    if not isinstance(seqs, list) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                                         for s in seqs):
        raise HttpError(400, "'seqs' must be a list of stream seqs (integers >= 1)")
    seqs = list(seqs)
    for v in req.param_list("seq"):
        n = decimal(v)
        if n is None or n < 1:
            raise HttpError(400, "query parameter 'seq' must be an integer >= 1, got "
                                 "{!r}".format(v[:40]))
        seqs.append(n)
    tokens = args.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise HttpError(400, "'tokens' must be a list of ack tokens (strings)")
    unknown = set(args) - {"kind", "seqs", "seq", "tokens", "delay"}
    if unknown:
        raise HttpError(400, "unknown members {} in the body (kind, seqs, tokens, "
                             "delay)".format(sorted(unknown)))
    sr.need("read", what)
    st = sr.stream_of(name)
    c = sr.consumer_of(st, cname)
    sr.may_operate(st, c, what)
    for t in tokens:
        tc, seq = sr.parse_ack(t, what)
        if tc is not c:
            raise HttpError(400, "ack token {!r} is of consumer {!r} of stream {!r}, not of "
                                 "this one".format(t, tc.name, tc.stream.name))
        seqs.append(seq)
    if not seqs:
        raise HttpError(400, "nothing to acknowledge: give 'seqs' or 'tokens' in the body, "
                             "or ?seq=")
    code = ACK_KINDS[kind]
    for seq in seqs:
        sr.ack(c, seq, code, delay, what)
    proto.json(req, {"kind": kind, "count": len(seqs)})


# path shape (segments; "*" a name) -> method -> handler(proto, req, requests, *names)
_STREAM_ROUTES = {
    (): {"GET": _list},
    ("*",): {"GET": _info, "POST": _add, "DELETE": _delete},
    ("*", "events"): {"GET": _events},
    ("*", "purge"): {"POST": _purge},
    ("*", "consumers"): {"GET": _consumers},
    ("*", "consumers", "*"): {"GET": _consumer_info, "POST": _consumer_add,
                              "DELETE": _consumer_delete},
    ("*", "consumers", "*", "fetch"): {"POST": _fetch},
    ("*", "consumers", "*", "ack"): {"POST": _ack},
}
