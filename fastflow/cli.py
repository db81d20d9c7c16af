"""The ``fastflow`` command.

``fastflow demo`` runs the embedded engine on the synthetic market-data
workload and prints what it did and how fast (``fastflow`` alone prints the
help).  ``fastflow serve`` runs the network broker (``fastflow.server``),
``fastflow passwd`` hashes a password for its config; ``pub``, ``sub``,
``req``, ``reply``, ``streams`` and ``consumers`` talk to a server with
``fastflow.client`` (``fastflow://``), and ``pub``, ``sub``, ``req`` and
``reply`` also to a NATS server or fastflow's NATS door (``nats://``, with
nats-py: ``pip install 'fastflow[nats]'``); ``bench`` measures publishers
and subscribers through a server (an embedded one by default).
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import struct
import sys
import time

import fastflow
from fastflow._ref.matcher import Matcher as RefMatcher
from fastflow._stats import percentile
from fastflow.workload import make_workload


def _median_rate(fn, count, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return count / statistics.median(times)


def _loop(match, subjects):
    def run():
        for s in subjects:
            match(s)
    return run


def demo(args):
    out = {"fastflow": fastflow.__version__, "core": "native" if fastflow.COMPILED else "reference",
           "python": platform.python_version(), "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    w = make_workload(n_subs=args.subs, n_publishes=args.publishes,
                      n_subjects=args.subjects, seed=args.seed)
    out["workload"] = w.describe()
    out["workload_seconds"] = round(time.perf_counter() - t0, 3)
    pubs = w.publishes

    def build(cache_size):
        m = fastflow.Matcher(cache_size=cache_size)
        add = m.add
        for i, p in enumerate(w.patterns):
            add(p, i)
        return m

    t0 = time.perf_counter()
    cold = build(0)
    dt = time.perf_counter() - t0
    st = cold.stats()
    out["subscribe_per_s"] = len(w.patterns) / dt
    out["trie_nodes"] = st["nodes"]
    out["matcher_bytes"] = st["memory_bytes"]

    out["match_cache_off_per_s"] = _median_rate(_loop(cold.match, pubs), len(pubs), args.repeat)
    warm = build(65536)
    warm.match_batch(pubs)  # warm the cache
    out["match_cache_warm_per_s"] = _median_rate(_loop(warm.match, pubs), len(pubs), args.repeat)
    batch = warm.match_batch(pubs)
    out["match_batch_cache_warm_per_s"] = _median_rate(lambda: warm.match_batch(pubs), len(pubs), args.repeat)
    ref = RefMatcher()
    for i, p in enumerate(w.patterns):
        ref.add(p, i)
    sub = pubs[: max(1, min(len(pubs), 200_000))]
    out["reference_match_per_s"] = _median_rate(_loop(ref.match, sub), len(sub), 1)
    out["reference_sample"] = len(sub)
    offs = memoryview(batch.offsets)
    interested = sum(1 for i in range(len(pubs)) if offs[i + 1] > offs[i])
    out["deliveries"] = batch.total
    out["fanout_mean"] = batch.total / len(pubs)
    out["publishes_with_interest"] = interested / len(pubs)
    wst = warm.stats()
    out["cache_hit_rate"] = wst["cache_hits"] / max(1, wst["matches"])

    # the event log: the same stream, 100-byte payloads, a bounded log
    payload = b"x" * 100
    n_log = min(len(pubs), 1_000_000)
    stream = pubs[:n_log]
    log = fastflow.Log(max_events=max(1, n_log // 2))
    chunks = [stream[i:i + 10_000] for i in range(0, n_log, 10_000)]
    payloads = [payload] * 10_000

    def append_batches():
        for c in chunks:
            log.append_batch(c, payloads[: len(c)])

    out["log_append_batch_per_s"] = _median_rate(append_batches, n_log, args.repeat)

    def replay():
        n = 0
        for b in log.replay(batch=10_000):
            n += len(b)
        return n

    out["log_retained"] = len(log)
    out["log_replay_per_s"] = _median_rate(replay, len(log), args.repeat)
    t0 = log.get(log.first_seq).ts
    t1 = log.get(log.last_seq).ts
    out["log_seek_time_us"] = _seek_time(log, t0, t1) * 1e6

    # the engine: every pattern subscribed, one stream capturing everything,
    # the publishes routed through Flow.publish_batch
    out.update(_engine(w.patterns, pubs, payload, args.repeat))

    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    M = 1e6
    print("fastflow {} - embedded matcher demo ({} core, Python {}, {} cpus)".format(
        out["fastflow"], out["core"], out["python"], out["cpus"]))
    print("workload : " + out["workload"])
    print("subscribe: {:,} patterns at {:.2f} M/s -> {:,} trie nodes, {:.2f} MiB in C".format(
        len(w.patterns), out["subscribe_per_s"] / M, out["trie_nodes"], out["matcher_bytes"] / 2**20))
    print("publish -> match, median of {} runs over {:,} publishes:".format(args.repeat, len(pubs)))
    rows = [
        ("match(), one call per publish, cache off", out["match_cache_off_per_s"]),
        ("match(), one call per publish, cache warm", out["match_cache_warm_per_s"]),
        ("match_batch(), whole stream, cache warm", out["match_batch_cache_warm_per_s"]),
        ("pure-Python reference match() ({:,} publishes)".format(len(sub)), out["reference_match_per_s"]),
    ]
    ref_rate = out["reference_match_per_s"]
    for name, rate in rows:
        print("  {:<50} {:>7.2f} M publishes/s  {:>6.1f}x the reference".format(name, rate / M, rate / ref_rate))
    print("delivered: {:,} (mean fanout {:.2f}; {:.0%} of publishes had interest); cache hit rate {:.1%}".format(
        out["deliveries"], out["fanout_mean"], out["publishes_with_interest"], out["cache_hit_rate"]))
    print("event log: the stream appended with 100-byte payloads at {:.2f} M records/s (append_batch), "
          "{:,} retained, replayed at {:.2f} M records/s, a time seek takes {:.2f} us".format(
              out["log_append_batch_per_s"] / M, out["log_retained"], out["log_replay_per_s"] / M,
              out["log_seek_time_us"]))
    print("engine   : Flow.publish_batch of the stream -> {:,} subscriptions + 1 stream: {:.2f} M events/s, "
          "{:.2f} M deliveries/s, {:,} stored".format(
              out["engine_subscriptions"], out["engine_publish_batch_per_s"] / M,
              out["engine_deliveries_per_s"] / M, out["engine_stored"]))
    return 0


def _engine(patterns, pubs, payload, repeat):
    from collections import deque

    n = min(len(pubs), 1_000_000)
    flow = fastflow.Flow()
    sink = deque(maxlen=0).append           # a C callable that drops what it gets
    for p in patterns:
        flow.subscribe(p, sink)
    flow.add_stream("all", [">"], fastflow.Retention(max_events=max(1, n // 2)))
    chunks = [pubs[i:i + 10_000] for i in range(0, n, 10_000)]
    payloads = [payload] * 10_000

    def run():
        for c in chunks:
            flow.publish_batch(c, payloads[: len(c)])

    before = flow.stats()["delivered"]
    rate = _median_rate(run, n, repeat)
    st = flow.stats()
    runs = st["published"] // n
    deliveries = (st["delivered"] - before) / max(1, runs)
    out = {"engine_subscriptions": len(patterns), "engine_publish_batch_per_s": rate,
           "engine_deliveries_per_s": rate * deliveries / n,
           "engine_stored": st["streams"]["all"]["events"]}
    flow.close()
    return out


def _seek_time(log, t0, t1, n=2000):
    import random

    rnd = random.Random(1)
    ts = [rnd.randint(t0, max(t0, t1)) for _ in range(n)]
    seek = log.seek
    t = time.perf_counter()
    for x in ts:
        seek(time=x)
    return (time.perf_counter() - t) / n


# -- talking to a server -------------------------------------------------------------------------

DEFAULT_SERVER = "fastflow://127.0.0.1:4232"


class _CommandError(Exception):
    """A command-line problem reported as ``fastflow <cmd>: error: ...``."""


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_async(coro, loop_kind="auto"):
    loop = asyncio.new_event_loop() if loop_kind == "asyncio" else _new_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _add_connection_args(p):
    g = p.add_argument_group("connection")
    g.add_argument("--server", "-s", metavar="URL", default=os.environ.get("FASTFLOW_URL"),
                   help="fastflow://[user:password@]host[:port] or fastflows:// (TLS); default "
                        "$FASTFLOW_URL or " + DEFAULT_SERVER)
    g.add_argument("--token", help="authentication token")
    g.add_argument("--user", help="user name (with --password)")
    g.add_argument("--password", help="password of --user")
    g.add_argument("--tls", action="store_true", help="use TLS (also implied by fastflows://)")
    g.add_argument("--tls-ca", metavar="FILE", help="CA certificates to verify the server with")
    g.add_argument("--tls-cert", metavar="FILE", help="client certificate (PEM)")
    g.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument("--name", help="client name sent to the server")
    g.add_argument("--inbox-prefix", metavar="PREFIX",
                   help="reply subjects of requests begin with it (default _INBOX): a user "
                        "allowed to subscribe to its own inboxes only, e.g. _INBOX.alice")
    g.add_argument("--timeout", type=float, default=5.0,
                   help="seconds for the connection and each request (default 5)")


def _connect_options(args, **extra):
    tls = None
    if args.tls or args.tls_ca or args.tls_cert:
        import ssl

        tls = ssl.create_default_context(cafile=args.tls_ca)
        if args.tls_cert:
            tls.load_cert_chain(args.tls_cert, args.tls_key)
    opts = {"name": args.name or "fastflow-cli", "token": args.token, "user": args.user,
            "password": args.password, "tls": tls, "timeout": args.timeout}
    if args.inbox_prefix:
        opts["inbox_prefix"] = args.inbox_prefix
    opts.update(extra)
    return opts


def _is_nats_url(url):
    return bool(url) and url.split("://", 1)[0].lower() in ("nats", "tls") and "://" in url


def _say(args, text):
    """A status line on stderr: ``fastflow <command>: text``."""
    print("fastflow {}: {}".format(args.command, text), file=sys.stderr, flush=True)


async def _connect(args, **extra):
    from fastflow.client import connect

    url = args.server or DEFAULT_SERVER
    if _is_nats_url(url):
        raise _CommandError("{} {}needs fastflow's native protocol (fastflow://HOST:PORT, the "
                            "server's native port); {} speaks NATS".format(
                                args.command, args.action + " " if getattr(args, "action", None)
                                else "", url))
    # a visible reconnect: one line when the connection drops, one when it is back
    c = None
    extra.setdefault("disconnected_callback",
                     lambda: _say(args, "disconnected from {}; reconnecting".format(
                         c.server if c is not None else url)))
    extra.setdefault("reconnected_callback",
                     lambda: _say(args, "reconnected to {}".format(c.server)))
    c = await connect(url, **_connect_options(args, **extra))
    return c


# -- the NATS protocol (nats-py) -------------------------------------------------------------------


def _nats_module(args):
    try:
        import nats
    except ImportError:
        raise _CommandError("{} speaks the NATS protocol, which needs nats-py: pip install "
                            "'fastflow[nats]'".format(args.server)) from None
    return nats


async def _nats_connect(args, long_running=False):
    """A nats-py connection for ``-s nats://...``, with a visible reconnect."""
    nats = _nats_module(args)
    last = []
    connected = False

    async def on_error(exc):
        if not connected:
            last[:] = [exc]
        elif not (nc.is_reconnecting or nc.is_closed or isinstance(
                exc, (OSError, asyncio.TimeoutError, nats.errors.UnexpectedEOF,
                      nats.errors.StaleConnectionError))):
            _say(args, "error: {}".format(exc or type(exc).__name__))     # the drop itself

    async def on_disconnected():
        if connected and not nc.is_closed and not getattr(nc, "_fastflow_closing", False):
            _say(args, "disconnected from {}; reconnecting".format(args.server))

    async def on_reconnected():
        _say(args, "reconnected to {}".format(args.server))

    tls = _connect_options(args)["tls"]
    opts = {"servers": [args.server], "name": args.name or "fastflow-cli",
            "connect_timeout": args.timeout, "error_cb": on_error,
            "disconnected_cb": on_disconnected, "reconnected_cb": on_reconnected,
            "reconnect_time_wait": 0.5, "allow_reconnect": True,
            "max_reconnect_attempts": -1 if long_running else 3}
    if tls is not None:
        opts["tls"] = tls
    for k in ("user", "password", "token"):
        if getattr(args, k):
            opts[k] = getattr(args, k)
    if args.inbox_prefix:
        opts["inbox_prefix"] = args.inbox_prefix
    try:
        nc = await asyncio.wait_for(nats.connect(**opts), args.timeout)
    except (asyncio.TimeoutError, OSError, nats.errors.Error) as exc:
        why = last[-1] if last else exc
        raise _CommandError("could not connect to NATS server {}: {}".format(
            args.server, why or type(why).__name__)) from None
    connected = True
    return nc


async def _nats_close(nc):
    nc._fastflow_closing = True         # nats-py reports its own close as a disconnect
    if not nc.is_closed:
        await nc.close()


def _nats_headers(attrs):
    """CloudEvents attributes as NATS headers (the CloudEvents NATS binding:
    ``ce-<name>``; ``datacontenttype`` as ``Content-Type``)."""
    if not attrs:
        return None
    h = {}
    for k, v in attrs.items():
        if k == "datacontenttype":
            h["Content-Type"] = v
        else:
            h["ce-" + k] = str(v)
    return h


def _json_data(data, ctype=None):
    """The JSON members that carry ``data``: the JSON value itself when the
    data is JSON, a string for a text content type, else ``data_base64``."""
    import base64

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and text.strip():
        try:
            return {"data": json.loads(text)}
        except ValueError:
            pass
    if text is not None and ctype and (ctype.startswith("text/") or "json" in ctype
                                       or "xml" in ctype):
        return {"data": text}
    return {"data_base64": base64.b64encode(data).decode("ascii")}


def _nats_msg_json(msg):
    out = {"routing_subject": msg.subject}
    if msg.reply:
        out["reply"] = msg.reply
    ctype = None
    other = {}
    for k, v in (msg.headers or {}).items():
        lk = k.lower()
        if lk.startswith("ce-") and len(k) > 3:
            out[k[3:]] = v
        elif lk == "content-type":
            ctype = out["datacontenttype"] = v
        else:
            other[k] = v
    if other:
        out["headers"] = other
    out.update(_json_data(msg.data, ctype))
    return json.dumps(out, separators=(",", ":"))


def _nats_msg_line(n, msg):
    return "[#{}] {}{}: {}\n".format(n, msg.subject, " reply=" + msg.reply if msg.reply else "",
                                     _fmt_data(msg.data))


async def _until_stopped(stop, closed=None):
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    waits = [stop] + ([closed] if closed is not None else [])
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)


async def _nats_pub(args, data, attrs):
    nats = _nats_module(args)
    nc = await _nats_connect(args)
    headers = _nats_headers(attrs)
    unstored = 0
    try:
        if args.ack and not getattr(nc, "_server_info", {}).get("jetstream"):
            raise _CommandError("pub --ack over NATS waits for a JetStream stream's "
                                "acknowledgement, and {} has no JetStream (fastflow's streams "
                                "acknowledge on its native port: -s fastflow://HOST:PORT)"
                                .format(args.server))
        for _ in range(args.count):
            if args.ack:
                # JetStream's answer: a stream that captures the subject acknowledges
                try:
                    m = await nc.request(args.subject, data, timeout=args.timeout,
                                         headers=headers)
                except nats.errors.NoRespondersError:
                    unstored += 1
                    continue
                except nats.errors.TimeoutError:
                    raise _CommandError("no acknowledgement from {} within {} s".format(
                        args.server, args.timeout)) from None
                try:
                    ack = json.loads(m.data)
                except ValueError:
                    ack = {}
                if isinstance(ack, dict) and ack.get("stream"):
                    print("stored in {} at seq {}".format(ack["stream"], ack.get("seq")))
                else:
                    unstored += 1
            else:
                await nc.publish(args.subject, data, reply=args.reply or "", headers=headers)
        await nc.flush(timeout=args.timeout)
    finally:
        await _nats_close(nc)
    return _published(args, unstored)


async def _nats_sub(args):
    nc = await _nats_connect(args, long_running=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    closed = loop.create_future()
    n = 0
    out = sys.stdout

    async def show(msg):
        nonlocal n
        if stop.done():
            return
        n += 1
        out.write(_nats_msg_json(msg) + "\n" if args.json else _nats_msg_line(n, msg))
        out.flush()
        if args.count and n >= args.count and not stop.done():
            stop.set_result(None)

    async def on_closed():
        closed.done() or closed.set_result(None)

    nc._closed_cb = on_closed
    await nc.subscribe(args.pattern, queue=args.queue or "", cb=show)
    await nc.flush(timeout=args.timeout)
    print("listening on {}{} at {}".format(args.pattern, " (queue {})".format(args.queue)
                                           if args.queue else "", args.server), file=sys.stderr,
          flush=True)
    try:
        await _until_stopped(stop, closed)
    finally:
        await _nats_close(nc)
    return 0 if stop.done() else 1


async def _nats_req(args, data, attrs):
    nats = _nats_module(args)
    nc = await _nats_connect(args)
    try:
        msg = await nc.request(args.subject, data, timeout=args.wait,
                               headers=_nats_headers(attrs))
    except nats.errors.NoRespondersError:
        raise _CommandError("no responders on {}".format(args.subject)) from None
    except nats.errors.TimeoutError:
        raise _CommandError("no reply from {} within {} s".format(args.subject, args.wait)) \
            from None
    finally:
        await _nats_close(nc)
    if args.json:
        print(_nats_msg_json(msg))
    else:
        _write_data(msg.data)
    return 0


async def _nats_reply(args, body_of):
    nc = await _nats_connect(args, long_running=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    closed = loop.create_future()
    n = 0

    async def answer(msg):
        nonlocal n
        if not msg.reply or stop.done():
            return
        await nc.publish(msg.reply, body_of(msg.data))
        n += 1
        sys.stdout.write(_nats_msg_line(n, msg))
        sys.stdout.flush()
        if args.count and n >= args.count:
            await nc.flush(timeout=args.timeout)
            stop.done() or stop.set_result(None)

    async def on_closed():
        closed.done() or closed.set_result(None)

    nc._closed_cb = on_closed
    await nc.subscribe(args.subject, queue=args.queue or "", cb=answer)
    await nc.flush(timeout=args.timeout)
    print("answering requests on {}{} at {}".format(
        args.subject, " (queue {})".format(args.queue) if args.queue else "", args.server),
        file=sys.stderr, flush=True)
    try:
        await _until_stopped(stop, closed)
    finally:
        await _nats_close(nc)
    return 0 if stop.done() else 1


def _data_arg(data):
    """A DATA argument: the text (UTF-8), ``-`` for standard input, ``@FILE`` for a file."""
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@") and len(data) > 1:
        with open(data[1:], "rb") as f:
            return f.read()
    return data.encode("utf-8")


def _attrs_arg(args):
    attrs = {}
    for name in ("type", "source", "id", "datacontenttype", "dataschema"):
        v = getattr(args, "ce_" + name, None)
        if v is not None:
            attrs[name] = v
    for kv in getattr(args, "attr", None) or ():
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise _CommandError("--attr takes NAME=VALUE, got {!r}".format(kv))
        attrs[k] = v
    return attrs


def _add_event_args(p):
    g = p.add_argument_group("event attributes (CloudEvents)")
    g.add_argument("--type", dest="ce_type", help="type (default: the subject)")
    g.add_argument("--source", dest="ce_source", help="source (default /fastflow)")
    g.add_argument("--id", dest="ce_id", help="id (default: generated)")
    g.add_argument("--content-type", dest="ce_datacontenttype", metavar="TYPE",
                   help="datacontenttype, e.g. application/json")
    g.add_argument("--dataschema", dest="ce_dataschema", metavar="URI")
    g.add_argument("--attr", action="append", metavar="NAME=VALUE",
                   help="an extension attribute (repeatable)")


def _fmt_data(data, limit=None):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data)
    if limit and len(text) > limit:
        text = text[:limit] + "..."
    return text


def _event_json(ev, reply=None):
    """One line of JSON: routing_subject, reply, seq and stream, then the
    CloudEvents JSON members; data that is JSON shows as JSON."""
    from fastflow.event import to_json

    head = {"routing_subject": ev.routing_subject}
    if reply:
        head["reply"] = reply
    if ev.seq:
        head["seq"] = ev.seq
        head["stream"] = ev.stream
    body = to_json(ev).decode("utf-8")
    if '"data_base64":' in body:
        members = json.loads(body)
        if "data_base64" in members:
            del members["data_base64"]
            members.update(_json_data(ev.data, members.get("datacontenttype")))
            head.update(members)
            return json.dumps(head, separators=(",", ":"))
    return json.dumps(head, separators=(",", ":"))[:-1] + "," + body[1:]


def _write_data(data):
    """A reply's or an event's data on stdout, ending with a newline."""
    sys.stdout.buffer.write(data)
    if not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def _published(args, unstored):
    print("published {:,} event{} to {}".format(args.count, "" if args.count == 1 else "s",
                                                args.subject), file=sys.stderr)
    if unstored:
        what = ("the event was" if args.count == 1 else
                "{:,} of the {:,} events were".format(unstored, args.count))
        print("fastflow pub: {} stored by no stream: no stream captures {}".format(
            what, args.subject), file=sys.stderr)
        return 1
    return 0


async def _cmd_pub(args):
    data = _data_arg(args.data)
    attrs = _attrs_arg(args)
    if _is_nats_url(args.server):
        return await _nats_pub(args, data, attrs)
    c = await _connect(args)
    unstored = 0
    try:
        if args.ack:
            for _ in range(args.count):
                seq, stream = await c.publish_ack(args.subject, data, **attrs)
                if stream:
                    print("stored in {} at seq {}".format(stream, seq))
                else:
                    unstored += 1
        else:
            for i in range(args.count):
                c.publish(args.subject, data, reply=args.reply, **attrs)
                if i % 1000 == 999:
                    await c.wait_writable()
            await c.flush()
    finally:
        await c.close()
    return _published(args, unstored)


async def _cmd_sub(args):
    if _is_nats_url(args.server):
        return await _nats_sub(args)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    c = await _connect(args)
    n = 0
    out = sys.stdout

    def show(ev, reply):
        nonlocal n
        n += 1
        if args.json:
            out.write(_event_json(ev, reply) + "\n")
        else:
            extra = "" if ev.type == ev.routing_subject else " type={}".format(ev.type)
            out.write("[#{}] {}{}{}: {}\n".format(n, ev.routing_subject, extra,
                                                  " reply=" + reply if reply else "",
                                                  _fmt_data(ev.data)))
        out.flush()
        if args.count and n >= args.count and not stop.done():
            stop.set_result(None)

    return await _serve(c, args.pattern, args.queue, show, stop, "listening on")


async def _serve(c, pattern, queue, callback, stop, doing):
    """Subscribe ``callback(event, reply)`` on ``pattern`` (and ``queue``),
    say so on stderr, run until ``stop`` is done or the connection closes,
    then flush, unsubscribe and close; the exit status (0: stopped)."""
    sub = c.subscribe(pattern, callback, queue=queue, with_reply=True)
    await c.flush()
    print("{} {}{} at {}".format(doing, pattern, " (queue {})".format(queue) if queue else "",
                                 c.server), file=sys.stderr, flush=True)
    closed = asyncio.get_running_loop().create_future()
    c.closed_callback = lambda: closed.done() or closed.set_result(None)
    try:
        await _until_stopped(stop, closed)
    finally:
        if not c.is_closed:
            await c.flush()
            await sub.unsubscribe()
            await c.close()
    return 0 if stop.done() else 1


async def _cmd_req(args):
    data = _data_arg(args.data)
    if _is_nats_url(args.server):
        return await _nats_req(args, data, _attrs_arg(args))
    c = await _connect(args)
    try:
        ev = await c.request(args.subject, data, timeout=args.wait, **_attrs_arg(args))
    except asyncio.TimeoutError:
        raise _CommandError("no reply from {} within {} s".format(args.subject, args.wait)) \
            from None
    finally:
        await c.close()
    if args.json:
        print(_event_json(ev))
    else:
        _write_data(ev.data)
    return 0


def _reply_body(args):
    """The function that makes an answer's data from a request's data."""
    if args.echo:
        return lambda data: data
    body = _data_arg(args.body)
    return lambda data: body


async def _cmd_reply(args):
    body_of = _reply_body(args)
    if _is_nats_url(args.server):
        return await _nats_reply(args, body_of)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    c = await _connect(args)
    n = 0

    def answer(ev, reply):
        nonlocal n
        if not reply or stop.done():
            return
        attrs = {"datacontenttype": ev.datacontenttype} if args.echo and \
            ev.datacontenttype else {}
        c.respond(reply, body_of(ev.data), **attrs)
        n += 1
        sys.stdout.write("[#{}] {}: {}\n".format(n, ev.routing_subject, _fmt_data(ev.data)))
        sys.stdout.flush()
        if args.count and n >= args.count:
            stop.set_result(None)

    return await _serve(c, args.subject, args.queue, answer, stop, "answering requests on")


def _fmt_int(n):
    return "{:,}".format(n) if isinstance(n, int) else str(n)


async def _cmd_streams(args):
    c = await _connect(args)
    try:
        if args.action in (None, "ls"):
            streams = await c.streams()
            if args.json:
                print(json.dumps(streams, indent=2))
            elif not streams:
                print("no streams")
            else:
                rows = [("NAME", "SUBJECTS", "STORAGE", "EVENTS", "BYTES", "SEQS", "CONSUMERS")]
                for st in streams:
                    rows.append((st.get("name", ""), ", ".join(st.get("subjects", ())),
                                 st.get("storage", ""), _fmt_int(st.get("events", "")),
                                 _fmt_int(st.get("bytes", "")),
                                 "{}..{}".format(st.get("first_seq", ""), st.get("last_seq", "")),
                                 _fmt_int(st.get("consumers", ""))))
                widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
                for r in rows:
                    print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        elif args.action == "read":
            return await _read_stream(c, args)
        elif args.action == "add":
            ret = {}
            for k in ("max_events", "max_bytes", "max_age", "max_per_subject", "max_event_size",
                      "discard", "duplicate_window"):
                v = getattr(args, k, None)
                if v is not None:
                    ret[k] = v
            info = await c.add_stream(args.name, args.subjects, ret or None, args.storage)
            _print_info(info, args.json)
        elif args.action == "info":
            _print_info(await c.stream_info(args.name), args.json)
        elif args.action == "rm":
            await c.delete_stream(args.name)
            print("deleted stream {}".format(args.name))
        elif args.action == "purge":
            n = await c.purge_stream(args.name, args.subject, args.up_to)
            print("purged {} event{} from {}".format(_fmt_int(n), "" if n == 1 else "s",
                                                      args.name))
    finally:
        await c.close()
    return 0


def _time_arg(text):
    """A point in time: RFC 3339 (``2026-12-03T10:00:00Z``), a duration
    ago (``5m``, ``1h30m``, ``2d``), or ns since the epoch (an integer)."""
    import datetime as dt

    from fastflow.server.config import parse_duration

    t = text.strip()
    if t.isdigit() and len(t) > 12:
        return int(t)
    try:
        ago = parse_duration(t, "--time")
    except ValueError:
        pass
    else:
        return time.time_ns() - int(ago * 1e9)
    try:
        d = dt.datetime.fromisoformat(t[:-1] + "+00:00" if t[-1:] in "zZ" else t)
    except ValueError:
        raise argparse.ArgumentTypeError("expected RFC 3339 (2026-12-03T10:00:00Z), a duration "
                                         "ago (5m, 1h30m, 2d) or ns since the epoch, got {!r}"
                                         .format(text)) from None
    if d.tzinfo is None:
        d = d.astimezone()
    return (d - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(
        microseconds=1) * 1000


def _size_arg(text):
    from fastflow.server.config import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def _duration_arg(text):
    from fastflow.server.config import parse_duration

    try:
        return parse_duration(text, "duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def _event_line(ev):
    extra = "" if ev.type == ev.routing_subject else " type={}".format(ev.type)
    return "[{}] {}{}: {}".format(ev.seq, ev.routing_subject, extra, _fmt_data(ev.data))


async def _read_stream(c, args):
    """``streams read``: the events of a stream from a seq, a time, or the last N."""
    kw = {"filter": args.filter, "limit": args.count or None}
    if args.last is not None:
        info = await c.stream_info(args.name)
        last = info.get("last_seq", 0)
        if not last or not info.get("events", 1):
            print("stream {} has no events".format(args.name), file=sys.stderr)
            return 0
        kw["seq"] = max(info.get("first_seq", 1), last - args.last + 1)
    elif args.seq is not None:
        kw["seq"] = args.seq
    elif args.time is not None:
        kw["time"] = args.time
    n = 0
    async for ev in c.replay(args.name, **kw):
        n += 1
        print(_event_json(ev) if args.json else _event_line(ev), flush=not n % 1000)
    sys.stdout.flush()
    print("{:,} event{} of {}".format(n, "" if n == 1 else "s", args.name), file=sys.stderr)
    return 0


async def _cmd_consumers(args):
    c = await _connect(args)
    errors = []
    c.error_callback = errors.append
    try:
        if args.action == "ls":
            consumers = await c.consumers(args.stream)
            if args.json:
                print(json.dumps(consumers, indent=2))
            elif not consumers:
                print("no consumers of {}".format(args.stream))
            else:
                rows = [("NAME", "FILTER", "ACK", "DELIVERED", "ACKED", "PENDING", "LAG")]
                for ci in consumers:
                    cfg = ci.get("config", {})
                    rows.append((ci.get("name", ""), cfg.get("filter") or ">",
                                 str(cfg.get("ack", "")), _fmt_int(ci.get("delivered", "")),
                                 _fmt_int(ci.get("acked", "")), _fmt_int(ci.get("pending", "")),
                                 _fmt_int(ci.get("lag", ""))))
                widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
                for r in rows:
                    print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
        elif args.action == "add":
            cfg = {}
            for k in ("filter", "ack", "ack_wait", "max_deliver", "max_in_flight",
                      "dead_letter"):
                v = getattr(args, k)
                if v is not None:
                    cfg[k] = v
            if args.start is not None:
                st = args.start
                cfg["start"] = int(st) if st.isdigit() else st
            _print_info(await c.add_consumer(args.stream, args.name, **cfg), args.json)
        elif args.action == "info":
            _print_info(await c.consumer_info(args.stream, args.name), args.json)
        elif args.action == "rm":
            await c.delete_consumer(args.stream, args.name)
            print("deleted consumer {} of {}".format(args.name, args.stream))
        elif args.action == "fetch":
            got = await c.fetch(args.stream, args.name, args.count, wait=args.wait)
            for d in got:
                print(_event_json(d.event) if args.json else _event_line(d.event))
                if not args.no_ack:
                    await d.ack()
            await c.flush()
            sys.stdout.flush()
            print("{} deliver{}{}".format(len(got), "y" if len(got) == 1 else "ies",
                                          "" if args.no_ack else ", acknowledged"),
                  file=sys.stderr)
        elif args.action == "ack":
            from fastflow.client import _ACK_ACK, _ACK_NAK, _ACK_TERM

            kind = _ACK_TERM if args.term else _ACK_NAK if args.nak is not None else _ACK_ACK
            for seq in args.seqs:
                await c._ack("$ACK.{}.{}.{}".format(args.stream, args.name, seq), kind,
                             args.nak or None)
            await c.flush()             # the server has read them: errors are in
            if errors:
                raise _CommandError(errors[0])
            print("{} {}".format("terminated" if args.term else "nak'd" if args.nak is not None
                                 else "acknowledged", ", ".join(map(str, args.seqs))))
        if errors:
            raise _CommandError(errors[0])
    finally:
        await c.close()
    return 0


def _print_info(info, as_json):
    if as_json:
        print(json.dumps(info, indent=2))
        return
    info = dict(info)
    log = info.pop("log", None)
    consumers = info.pop("consumers", None)
    for k, v in info.items():
        if isinstance(v, dict):
            v = ", ".join("{}={}".format(a, b) for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        print("{:<18} {}".format(k, v))
    if consumers:
        print("consumers          {}".format(", ".join(consumers)))
    if log:
        print("log                {}".format(", ".join("{}={}".format(a, b)
                                                     for a, b in log.items())))


def _network_command(args, coro_fn):
    try:
        return _run_async(coro_fn(args))
    except KeyboardInterrupt:
        return 130
    except (_CommandError, OSError, asyncio.TimeoutError, fastflow.FastflowError,
            ValueError) as exc:
        print("fastflow {}: error: {}".format(args.command, exc), file=sys.stderr)
        return 1


def _lazy_server(what):
    try:
        from fastflow.server import app
    except ImportError as exc:
        print("fastflow {}: the server is not available in this install ({})".format(what, exc),
              file=sys.stderr)
        return None
    return app


def _cmd_serve(rest):
    app = _lazy_server("serve")
    if app is None:
        return 1
    p = argparse.ArgumentParser(prog="fastflow serve", description="Run the fastflow network "
                                "broker: the native protocol (docs/protocol.md), with "
                                "--nats-port the NATS protocol too (docs/nats.md).")
    app.add_serve_arguments(p)
    return app.run_serve(p.parse_args(rest))


def _cmd_passwd(rest):
    try:
        from fastflow.server.auth import hash_password_cli
    except ImportError as exc:
        print("fastflow passwd: the server is not available in this install ({})".format(exc),
              file=sys.stderr)
        return 1
    return hash_password_cli(rest)


# -- bench ---------------------------------------------------------------------------------------

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
        result_q.put(_run_async(run(), o["loop"]))
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
        app = _lazy_server("bench")
        if app is None:
            raise _CommandError("no --server given and the embedded server is not available")
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
        raise _CommandError("; ".join("{} {}: {}".format(r["role"], r["id"], r["error"])
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
            raise _CommandError("the clients did not connect within {} s".format(args.timeout))
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
           "fastflow": fastflow.__version__, "python": platform.python_version(),
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


def _add_bench_parser(sub):
    b = sub.add_parser("bench", help="measure publishers -> subscribers through a server",
                       description="Publishers and subscribers through a fastflow server (an "
                                   "embedded one on a free loopback port unless --server): "
                                   "throughput per worker and in aggregate, and the latency "
                                   "publish -> receive from a timestamp in the payload.")
    b.add_argument("--server", "-s", metavar="URL",
                   help="a running server (default: start one in this process)")
    b.add_argument("--pubs", dest="bench_pubs", type=int, default=1, metavar="N",
                   help="publishers (default 1)")
    b.add_argument("--subs", dest="bench_subs", type=int, default=1, metavar="M",
                   help="subscribers (default 1)")
    b.add_argument("--msgs", type=int, default=1_000_000, metavar="COUNT",
                   help="messages in all, shared by the publishers (default 1,000,000)")
    b.add_argument("--size", type=int, default=16, metavar="BYTES",
                   help="payload bytes (default 16; >= 9 to measure latency)")
    b.add_argument("--subject", default="bench.msgs", help="subject (default bench.msgs)")
    b.add_argument("--queue", dest="queue_group", metavar="Q",
                   help="subscribers join this queue group (each message to one of them)")
    b.add_argument("--procs", action="store_true",
                   help="each publisher and subscriber in its own process (default: tasks of "
                        "one event loop)")
    b.add_argument("--batch", type=int, default=0, metavar="K",
                   help="publish K payloads per call (publish_many) instead of one")
    b.add_argument("--rate", type=int, default=0, metavar="N",
                   help="pace each publisher at N msgs/s (latency at a set load; every "
                        "payload stamped)")
    b.add_argument("--events", action="store_true",
                   help="subscribers take Event objects (default: raw payloads)")
    b.add_argument("--idle", type=float, default=2.0,
                   help="stop this many seconds after the last message once the publishers "
                        "are done (default 2)")
    b.add_argument("--timeout", type=float, default=10.0, help="connection timeout (default 10)")
    b.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto",
                   help="event loop (default auto: uvloop when installed)")
    b.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    return b


def _bench(args, parser):
    for name, low in (("bench_pubs", 1), ("bench_subs", 0), ("msgs", 1), ("size", 0),
                      ("batch", 0), ("rate", 0)):
        if getattr(args, name) < low:
            parser.error("bench: --{} must be at least {}".format(
                name.replace("bench_", ""), low))
    if args.bench_pubs > args.msgs:
        parser.error("bench: more publishers than messages")
    try:
        fastflow.validate_subject(args.subject)
    except ValueError as exc:
        parser.error("bench: {}".format(exc))
    return _network_command(args, lambda a: _bench_main(a))


# -- the command line -----------------------------------------------------------------------------


def _build_parser():
    parser = argparse.ArgumentParser(
        prog="fastflow", description="fastflow: an embeddable event-routing engine and its "
        "broker. Servers: -s fastflow://HOST:PORT (the native protocol, the default "
        + DEFAULT_SERVER + ") or -s nats://HOST:PORT (a NATS server or fastflow serve "
        "--nats-port; pub, sub, req and reply).")
    parser.add_argument("--version", action="version", version="fastflow {} ({} core, Python {})"
                        .format(fastflow.__version__, "native" if fastflow.COMPILED
                                else "pure-Python", platform.python_version()))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("demo", help="run the embedded engine on a synthetic workload")
    for p in (parser, d):
        p.add_argument("--subs", type=int, default=10_000, help="subscriptions (default 10,000)")
        p.add_argument("--publishes", type=int, default=1_000_000, help="publishes (default 1,000,000)")
        p.add_argument("--subjects", type=int, default=50_000, help="distinct subjects (default 50,000)")
        p.add_argument("--seed", type=int, default=2026)
        p.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
        p.add_argument("--json", action="store_true", help="print the figures as JSON")

    sub.add_parser("serve", add_help=False, help="run the network broker (fastflow serve --help)")
    sub.add_parser("passwd", add_help=False,
                   help="print a password hash for the server's config (fastflow passwd --help)")

    p = sub.add_parser("pub", help="publish an event", description="Publish an event.")
    p.add_argument("subject")
    p.add_argument("data", nargs="?", default="",
                   help="the payload: text, '-' for standard input, @FILE for a file")
    p.add_argument("--count", "-n", type=int, default=1, help="publish it N times (default 1)")
    p.add_argument("--reply", metavar="SUBJECT", help="a reply subject")
    p.add_argument("--ack", action="store_true",
                   help="wait for the server's acknowledgement (prints the stream and seq; "
                        "exit status 1 when no stream stored the event)")
    _add_event_args(p)
    _add_connection_args(p)

    p = sub.add_parser("sub", help="print the events of a subject pattern",
                       description="Subscribe and print events until interrupted (or --count).")
    p.add_argument("pattern")
    p.add_argument("--queue", "-q", help="join a queue group")
    p.add_argument("--count", "-n", type=int, default=0, help="exit after N events")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per event: routing_subject, reply, then the "
                        "CloudEvents JSON members (JSON data as JSON)")
    _add_connection_args(p)

    p = sub.add_parser("reply", help="answer the requests of a subject pattern",
                       description="Subscribe and answer every request (a message with a reply "
                                   "subject) until interrupted (or --count).")
    p.add_argument("subject", metavar="PATTERN")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--echo", action="store_true", help="answer with the request's data")
    how.add_argument("--body", metavar="DATA",
                     help="answer with DATA: text, '-' for standard input, @FILE for a file")
    p.add_argument("--queue", "-q", help="join a queue group")
    p.add_argument("--count", "-n", type=int, default=0, help="exit after N answers")
    _add_connection_args(p)

    p = sub.add_parser("req", help="send a request and print the reply",
                       description="Publish a request and print the reply's data.")
    p.add_argument("subject")
    p.add_argument("data", nargs="?", default="",
                   help="the payload: text, '-' for standard input, @FILE for a file")
    p.add_argument("--wait", "-w", type=float, default=1.0, metavar="SECONDS",
                   help="how long to wait for the reply (default 1)")
    p.add_argument("--json", action="store_true", help="print the reply event as JSON")
    _add_event_args(p)
    _add_connection_args(p)

    p = sub.add_parser("streams", help="list, add, inspect, purge and remove streams",
                       description="Manage the streams of a server.")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    a = sa.add_parser("ls", help="list the streams")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("add", help="create a stream")
    a.add_argument("name")
    a.add_argument("subjects", nargs="+", metavar="PATTERN", help="subject patterns it captures")
    a.add_argument("--max-events", type=int)
    a.add_argument("--max-bytes", type=_size_arg, metavar="SIZE",
                   help="bytes, or with a unit: 512MiB, 1GiB, 1GB")
    a.add_argument("--max-age", type=_duration_arg, metavar="DURATION",
                   help="seconds, or with units: 90s, 1h30m, 1d")
    a.add_argument("--max-per-subject", type=int)
    a.add_argument("--max-event-size", type=_size_arg, metavar="SIZE")
    a.add_argument("--discard", choices=("old", "new"))
    a.add_argument("--duplicate-window", type=_duration_arg, metavar="DURATION",
                   help="an event whose (source, id) the stream stored this recently is not "
                        "stored again (default 2m; 0: off)")
    a.add_argument("--storage", choices=("memory", "file"))
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("info", help="show a stream")
    a.add_argument("name")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("read", help="print the events of a stream (replay)",
                      description="Print the events of a stream: from the first, from a seq, "
                                  "from a time, or the last N.")
    a.add_argument("name")
    at = a.add_mutually_exclusive_group()
    at.add_argument("--seq", type=int, metavar="N", help="from seq N")
    at.add_argument("--time", type=_time_arg, metavar="T",
                    help="from time T: RFC 3339, a duration ago (5m, 1h30m, 2d) or ns since "
                         "the epoch")
    at.add_argument("--last", type=int, metavar="N", help="the last N events")
    a.add_argument("--count", "-n", type=int, default=0, help="at most N events")
    a.add_argument("--filter", metavar="PATTERN", help="only events matching it")
    a.add_argument("--json", action="store_true", help="one JSON object per event")
    _add_connection_args(a)
    a = sa.add_parser("rm", help="delete a stream (and its events)")
    a.add_argument("name")
    _add_connection_args(a)
    a = sa.add_parser("purge", help="remove events of a stream")
    a.add_argument("name")
    a.add_argument("--subject", metavar="PATTERN", help="only events matching it")
    a.add_argument("--up-to", type=int, metavar="SEQ", help="only events up to this seq")
    _add_connection_args(a)
    p.set_defaults(_streams_parser=p)

    p = sub.add_parser("consumers", help="durable consumers: add, ls, info, fetch, ack, rm",
                       description="Manage and read the durable consumers of a stream.")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    a = sa.add_parser("ls", help="list the consumers of a stream")
    a.add_argument("stream")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("add", help="create a durable consumer")
    a.add_argument("stream")
    a.add_argument("name")
    a.add_argument("--start", metavar="WHERE", help="first (default), last, new, or a seq")
    a.add_argument("--filter", metavar="PATTERN", help="only events matching it")
    a.add_argument("--ack", choices=("explicit", "all", "none"), help="ack policy (default "
                   "explicit)")
    a.add_argument("--ack-wait", type=_duration_arg, metavar="DURATION",
                   help="redeliver when not acknowledged within it (default 30s)")
    a.add_argument("--max-deliver", type=int, metavar="N")
    a.add_argument("--max-in-flight", type=int, metavar="N")
    a.add_argument("--dead-letter", metavar="SUBJECT")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("info", help="show a consumer")
    a.add_argument("stream")
    a.add_argument("name")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("fetch", help="print (and acknowledge) the next deliveries")
    a.add_argument("stream")
    a.add_argument("name")
    a.add_argument("--count", "-n", type=int, default=1, help="up to N deliveries (default 1)")
    a.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait that long for the first one when none is ready")
    a.add_argument("--no-ack", action="store_true",
                   help="leave them pending (acknowledge later with consumers ack)")
    a.add_argument("--json", action="store_true")
    _add_connection_args(a)
    a = sa.add_parser("ack", help="acknowledge deliveries by seq")
    a.add_argument("stream")
    a.add_argument("name")
    a.add_argument("seqs", nargs="+", type=int, metavar="SEQ")
    kind = a.add_mutually_exclusive_group()
    kind.add_argument("--nak", nargs="?", const=0.0, type=float, metavar="DELAY",
                      help="ask for redelivery (after DELAY seconds)")
    kind.add_argument("--term", action="store_true", help="never deliver them again")
    _add_connection_args(a)
    a = sa.add_parser("rm", help="delete a consumer")
    a.add_argument("stream")
    a.add_argument("name")
    _add_connection_args(a)
    p.set_defaults(_consumers_parser=p)

    _add_bench_parser(sub)
    return parser


def main(argv=None):
    parser = _build_parser()
    if argv is None:
        argv = sys.argv[1:]
    if not argv:
        parser.print_help()
        return 2
    args, rest = parser.parse_known_args(argv)
    cmd = args.command
    if cmd == "serve":
        return _cmd_serve(rest)
    if cmd == "passwd":
        return _cmd_passwd(rest)
    if rest:
        parser.error("unrecognized arguments: {}".format(" ".join(rest)))
    if cmd in (None, "demo"):
        for name in ("subs", "publishes", "subjects", "repeat"):
            if getattr(args, name) < 1:
                parser.error("--{} must be at least 1".format(name))
        return demo(args)
    if cmd == "pub":
        if args.count < 1:
            parser.error("pub: --count must be at least 1")
        return _network_command(args, _cmd_pub)
    if cmd == "sub":
        if args.count < 0:
            parser.error("sub: --count must be at least 0")
        return _network_command(args, _cmd_sub)
    if cmd == "req":
        return _network_command(args, _cmd_req)
    if cmd == "reply":
        if args.count < 0:
            parser.error("reply: --count must be at least 0")
        return _network_command(args, _cmd_reply)
    if cmd == "consumers":
        if args.action is None:
            args._consumers_parser.print_help()
            return 2
        return _network_command(args, _cmd_consumers)
    if cmd == "streams":
        if args.action is None:
            args._streams_parser.print_help()
            return 2
        return _network_command(args, _cmd_streams)
    if cmd == "bench":
        return _bench(args, parser)
    parser.error("unknown command {!r}".format(cmd))
    return 2


if __name__ == "__main__":
    sys.exit(main())
