"""``pub``, ``sub``, ``req`` and ``reply``: on fastflow's native protocol
with ``fastflow.client``, over NATS (``-s nats://...``) with ``natspy``;
``pub`` and ``sub`` also at the web doors (``-s http://...``, ``ws://...``)
with ``web``."""

import asyncio
import sys

from fastflow.cli import natspy
from fastflow.cli.base import (
    CommandError,
    connect,
    is_nats_url,
    is_web_url,
    listening,
    until_stopped,
)
from fastflow.cli.keys import note_refused, signed_attrs, signer, verifier
from fastflow.cli.formats import (
    attrs_arg,
    data_arg,
    event_json,
    fmt_data,
    published,
    write_data,
)


async def pub(args):
    data = data_arg(args.data)
    attrs = attrs_arg(args)
    sign = signer(args)
    if sign is not None and not is_web_url(args.server) and not is_nats_url(args.server):
        return await _pub_native(args, data, attrs, sign)
    if sign is not None:
        if args.count > 1:
            raise CommandError("pub --sign --count N signs each event (its own id) on the "
                               "native protocol (-s fastflow://HOST:PORT); over {} sign one "
                               "event per pub".format(args.server))
        attrs = signed_attrs(sign, args.subject, data, attrs)
    if is_web_url(args.server):
        from fastflow.cli import web

        return await web.pub(args, data, attrs)
    if args.http_mode or args.batch:
        raise CommandError("--{} chooses how events go over HTTP: it needs -s http://HOST:PORT "
                           "(the server's --http-port)".format(
                               "batch" if args.batch else args.http_mode))
    if is_nats_url(args.server):
        return await natspy.pub(args, data, attrs)
    return await _pub_native(args, data, attrs, None)


async def _pub_native(args, data, attrs, sign):
    def attrs_of():
        return signed_attrs(sign, args.subject, data, attrs) if sign is not None else attrs
    c = await connect(args)
    refused = []
    c.error_callback = refused.append        # (the server's refusals, after flush)
    unstored = 0
    try:
        if args.ack:
            for _ in range(args.count):
                seq, stream = await c.publish_ack(args.subject, data, **attrs_of())
                if stream:
                    print("stored in {} at seq {}".format(stream, seq))
                else:
                    unstored += 1
        else:
            for i in range(args.count):
                c.publish(args.subject, data, reply=args.reply, **attrs_of())
                if i % 1000 == 999:
                    await c.wait_writable()
            await c.flush()
    finally:
        await c.close()
    if refused:
        for exc in refused[:10]:
            print("fastflow pub: refused by the server: {}".format(exc), file=sys.stderr)
        print("fastflow pub: {:,} of the {:,} events were refused".format(
            len(refused), args.count), file=sys.stderr)
        return 1
    return published(args, unstored)


async def sub(args):
    check = verifier(args)
    if check is not None and (is_web_url(args.server) or is_nats_url(args.server)):
        raise CommandError("sub --verify reads events on the native protocol (-s "
                           "fastflow://HOST:PORT)")
    if is_web_url(args.server):
        from fastflow.cli import web

        return await web.sub(args)
    if is_nats_url(args.server):
        return await natspy.sub(args)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    c = await connect(args)
    n = 0
    out = sys.stdout

    def show(ev, reply):
        nonlocal n
        n += 1
        note = ""
        if check is not None:
            shown, note = check(ev)
            if shown is None:
                note_refused(n, ev, note)
                return
            ev, note = shown, " (" + note + ")"
        if args.json:
            out.write(event_json(ev, reply) + "\n")
        else:
            extra = "" if ev.type == ev.routing_subject else " type={}".format(ev.type)
            out.write("[#{}] {}{}{}{}: {}\n".format(n, ev.routing_subject, extra,
                                                    " reply=" + reply if reply else "", note,
                                                    fmt_data(ev.data)))
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
    listening(doing, pattern, queue, c.server)
    closed = asyncio.get_running_loop().create_future()
    c.closed_callback = lambda: closed.done() or closed.set_result(None)
    try:
        await until_stopped(stop, closed)
    finally:
        if not c.is_closed:
            await c.flush()
            await sub.unsubscribe()
            await c.close()
    return 0 if stop.done() else 1


async def req(args):
    data = data_arg(args.data)
    if is_nats_url(args.server):
        return await natspy.req(args, data, attrs_arg(args))
    c = await connect(args)
    try:
        ev = await c.request(args.subject, data, timeout=args.wait, **attrs_arg(args))
    except asyncio.TimeoutError:
        raise CommandError("no reply from {} within {} s".format(args.subject, args.wait)) \
            from None
    finally:
        await c.close()
    if args.json:
        print(event_json(ev))
    else:
        write_data(ev.data)
    return 0


def _reply_body(args):
    """The function that makes an answer's data from a request's data."""
    if args.echo:
        return lambda data: data
    body = data_arg(args.body)
    return lambda data: body


async def reply(args):
    body_of = _reply_body(args)
    if is_nats_url(args.server):
        return await natspy.reply(args, body_of)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    c = await connect(args)
    n = 0

    def answer(ev, reply):
        nonlocal n
        if not reply or stop.done():
            return
        attrs = {"datacontenttype": ev.datacontenttype} if args.echo and \
            ev.datacontenttype else {}
        c.respond(reply, body_of(ev.data), **attrs)
        n += 1
        sys.stdout.write("[#{}] {}: {}\n".format(n, ev.routing_subject, fmt_data(ev.data)))
        sys.stdout.flush()
        if args.count and n >= args.count:
            stop.set_result(None)

    return await _serve(c, args.subject, args.queue, answer, stop, "answering requests on")


