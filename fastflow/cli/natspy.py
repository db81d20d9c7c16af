"""``pub``, ``sub``, ``req`` and ``reply`` over the NATS protocol (``-s
nats://...``: a NATS server or fastflow's NATS door), with nats-py, imported
only here and only when a command needs it (``pip install 'fastflow[nats]'``)."""

import asyncio
import json
import sys

from fastflow.cli.base import CommandError, connect_options, listening, say, until_stopped
from fastflow.cli.formats import fmt_data, json_data, published, write_data


def _nats_module(args):
    try:
        import nats
    except ImportError:
        raise CommandError("{} speaks the NATS protocol, which needs nats-py: pip install "
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
            say(args, "error: {}".format(exc or type(exc).__name__))     # the drop itself

    async def on_disconnected():
        if connected and not nc.is_closed and not getattr(nc, "_fastflow_closing", False):
            say(args, "disconnected from {}; reconnecting".format(args.server))

    async def on_reconnected():
        say(args, "reconnected to {}".format(args.server))

    tls = connect_options(args)["tls"]
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
        raise CommandError("could not connect to NATS server {}: {}".format(
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
    out.update(json_data(msg.data, ctype))
    return json.dumps(out, separators=(",", ":"))


def _nats_msg_line(n, msg):
    return "[#{}] {}{}: {}\n".format(n, msg.subject, " reply=" + msg.reply if msg.reply else "",
                                     fmt_data(msg.data))



async def pub(args, data, attrs):
    nats = _nats_module(args)
    nc = await _nats_connect(args)
    headers = _nats_headers(attrs)
    unstored = 0
    try:
        if args.ack and not getattr(nc, "_server_info", {}).get("jetstream"):
            raise CommandError("pub --ack over NATS waits for a JetStream stream's "
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
                    raise CommandError("no acknowledgement from {} within {} s".format(
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
    return published(args, unstored)


async def sub(args):
    nc = await _nats_connect(args, long_running=True)
    stop = asyncio.get_running_loop().create_future()
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

    return await _serve(nc, args, args.pattern, show, stop, "listening on")


async def _serve(nc, args, pattern, callback, stop, doing):
    """Subscribe ``callback(msg)`` on ``pattern`` (and ``--queue``), say so on
    stderr, run until ``stop`` is done or the connection closes, then close;
    the exit status (0: stopped)."""
    closed = asyncio.get_running_loop().create_future()

    async def on_closed():
        closed.done() or closed.set_result(None)

    nc._closed_cb = on_closed
    await nc.subscribe(pattern, queue=args.queue or "", cb=callback)
    await nc.flush(timeout=args.timeout)
    listening(doing, pattern, args.queue, args.server)
    try:
        await until_stopped(stop, closed)
    finally:
        await _nats_close(nc)
    return 0 if stop.done() else 1


async def req(args, data, attrs):
    nats = _nats_module(args)
    nc = await _nats_connect(args)
    try:
        msg = await nc.request(args.subject, data, timeout=args.wait,
                               headers=_nats_headers(attrs))
    except nats.errors.NoRespondersError:
        raise CommandError("no responders on {}".format(args.subject)) from None
    except nats.errors.TimeoutError:
        raise CommandError("no reply from {} within {} s".format(args.subject, args.wait)) \
            from None
    finally:
        await _nats_close(nc)
    if args.json:
        print(_nats_msg_json(msg))
    else:
        write_data(msg.data)
    return 0


async def reply(args, body_of):
    nc = await _nats_connect(args, long_running=True)
    stop = asyncio.get_running_loop().create_future()
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

    return await _serve(nc, args, args.subject, answer, stop, "answering requests on")


