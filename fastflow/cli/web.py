"""``pub`` and ``sub`` at the web doors (``-s http://...``, ``https://``,
``ws://``, ``wss://``; docs/http.md), with ``fastflow.client.http``: pub
POSTs CloudEvents (binary mode for one event, batched mode for many,
``--structured`` / ``--binary`` / ``--batch K`` to choose), sub reads
Server-Sent Events (http, https) or the WebSocket door's
``cloudevents.json`` subprotocol (ws, wss)."""

import asyncio
import sys

from fastflow._impl import Event
from fastflow.cli.base import CommandError, connect_options, listening, say, until_stopped
from fastflow.cli.formats import event_json, fmt_data, published

BATCH = 1000                            # events per POST in batched mode, unless --batch says


def web_mode(args):
    """The content mode of ``pub`` (``--binary``, ``--structured``,
    ``--batch``; default: binary for one event, batched for more)."""
    if args.http_mode:
        return args.http_mode
    return "binary" if args.count == 1 else "batch"


def _options(args):
    """``fastflow.client.http``'s connection options from the CLI's."""
    if args.inbox_prefix:
        raise CommandError("--inbox-prefix: the web doors have no request/reply")
    opts = connect_options(args)
    return {"token": opts["token"], "user": opts["user"], "password": opts["password"],
            "tls": opts["tls"], "timeout": opts["timeout"]}


async def pub(args, data, attrs):
    from fastflow.client.http import HttpPublisher

    if args.reply:
        raise CommandError("--reply: a CloudEvent over HTTP has no reply subject (publish a "
                           "request with -s fastflow:// or nats://)")
    mode = web_mode(args)
    size = args.batch or BATCH
    per_call = size if mode == "batch" else 1
    unstored = 0
    async with HttpPublisher(args.server, **_options(args)) as p:
        left = args.count
        while left:
            n = min(left, per_call)
            events = [Event(args.subject, data, **attrs) for _ in range(n)]
            res = await p.publish(events, args.subject, mode=mode, ack=args.ack,
                                  batch_size=size)
            left -= n
            for ack in res.acks or ():
                if ack.stream:
                    print("stored in {} at seq {}".format(ack.stream, ack.seq))
                else:
                    unstored += 1
    return published(args, unstored)


def event_line(n, ev, eid):
    """``[#n] type[ id=ID]: data`` (the web doors carry no routing subject:
    the event's type, which is the subject it was published on unless the
    publisher set one)."""
    return "[#{}] {}{}{}: {}\n".format(n, ev.type,
                                       " subject={}".format(ev.subject) if ev.subject else "",
                                       " id={}".format(eid) if eid is not None else "",
                                       fmt_data(ev.data))


def event_head(eid):
    """The first members of a ``--json`` line: the SSE id as ``seq`` (the
    stream's seq when the subscription reads a stream)."""
    if eid is None:
        return {}
    return {"seq": int(eid) if eid.isdigit() else eid}


async def sub(args):
    from fastflow.client.http import subscribe

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    def disconnected():
        why = s.close_reason
        say(args, "disconnected from {}{}; reconnecting".format(
            args.server, " ({}: {})".format(*why) if why else ""))
        s.close_reason = None

    s = subscribe(args.server, args.pattern, queue=args.queue, **_options(args),
                  disconnected_callback=disconnected,
                  reconnected_callback=lambda: say(args, "reconnected to {}".format(
                      args.server)))
    await s.start()
    listening("listening on", args.pattern, args.queue, "{} ({})".format(
        args.server, "Server-Sent Events" if s.protocol == "sse" else "WebSocket"))
    out = sys.stdout

    async def read():
        n = 0
        async for ev in s:
            n += 1
            eid = s.last_event_id if s.protocol == "sse" else None
            if args.json:
                out.write(event_json(ev, head=event_head(eid)) + "\n")
            else:
                out.write(event_line(n, ev, eid))
            out.flush()
            if args.count and n >= args.count:
                if not stop.done():
                    stop.set_result(None)
                return

    task = loop.create_task(read())
    try:
        await until_stopped(stop, task)
    finally:
        await s.close()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()
    return 0 if stop.done() else 1
