"""What every network command of the CLI shares: the connection options,
connecting (``fastflow://``; NATS in ``natspy``, the web doors in
``web``), running a command on an event loop and reporting its errors as
one line."""

import asyncio
import os
import sys

from fastflow._aio import run
from fastflow.errors import FastflowError

DEFAULT_SERVER = "fastflow://127.0.0.1:4232"


class CommandError(Exception):
    """A command-line problem reported as ``fastflow <cmd>: error: ...``."""


def _new_loop():
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_async(coro, loop_kind="auto"):
    """Run ``coro`` to the end on a new loop: uvloop when installed, unless
    ``loop_kind`` is "asyncio"."""
    return run(coro, asyncio.new_event_loop if loop_kind == "asyncio" else _new_loop)


def network_command(args, coro_fn):
    """Run ``coro_fn(args)``; its exit status, or 1 with one line on stderr."""
    try:
        return run_async(coro_fn(args))
    except KeyboardInterrupt:
        return 130
    except (CommandError, OSError, asyncio.TimeoutError, FastflowError, ValueError) as exc:
        print("fastflow {}: error: {}".format(args.command, exc), file=sys.stderr)
        return 1


def lazy_server(what):
    """``fastflow.server.app``, or None (and a line on stderr) in an install without it."""
    try:
        from fastflow.server import app
    except ImportError as exc:
        print("fastflow {}: the server is not available in this install ({})".format(what, exc),
              file=sys.stderr)
        return None
    return app


def add_connection_args(p):
    """The ``connection`` option group, on ``p`` (the parent of every network command)."""
    g = p.add_argument_group("connection")
    g.add_argument("--server", "-s", metavar="URL", default=os.environ.get("FASTFLOW_URL"),
                   help="fastflow://[user:password@]host[:port] or fastflows:// (TLS); "
                        "nats://; for pub and sub also http(s):// and ws(s):// (the web "
                        "doors); default $FASTFLOW_URL or " + DEFAULT_SERVER)
    g.add_argument("--token", help="authentication token (over HTTP: Bearer)")
    g.add_argument("--user", help="user name (with --password; over HTTP: Basic)")
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


def connect_options(args, **extra):
    """The keyword arguments of ``fastflow.client.connect`` from the connection options."""
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


def is_nats_url(url):
    return bool(url) and url.split("://", 1)[0].lower() in ("nats", "tls") and "://" in url


def is_web_url(url):
    """A web door's URL: http://, https://, ws:// or wss:// (``fastflow.cli.web``)."""
    return bool(url) and "://" in url and url.split("://", 1)[0].lower() in (
        "http", "https", "ws", "wss")


def say(args, text):
    """A status line on stderr: ``fastflow <command>: text``."""
    print("fastflow {}: {}".format(args.command, text), file=sys.stderr, flush=True)


async def connect(args, **extra):
    """A ``fastflow.client`` connection to ``--server``, with a visible reconnect."""
    from fastflow.client import connect

    url = args.server or DEFAULT_SERVER
    if is_nats_url(url) or is_web_url(url):
        raise CommandError("{} {}needs fastflow's native protocol (fastflow://HOST:PORT, the "
                           "server's native port); {} {}".format(
                               args.command, args.action + " " if getattr(args, "action", None)
                               else "", url, "speaks NATS" if is_nats_url(url) else
                               "is a web door, where only pub and sub go"))
    # a visible reconnect: one line when the connection drops, one when it is back
    c = None
    extra.setdefault("disconnected_callback",
                     lambda: say(args, "disconnected from {}; reconnecting".format(
                         c.server if c is not None else url)))
    extra.setdefault("reconnected_callback",
                     lambda: say(args, "reconnected to {}".format(c.server)))
    c = await connect(url, **connect_options(args, **extra))
    return c


async def until_stopped(stop, closed=None):
    """Until ``stop`` (or ``closed``) is done, or SIGINT/SIGTERM arrives."""
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    waits = [stop] + ([closed] if closed is not None else [])
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)


def listening(doing, pattern, queue, server):
    """The line on stderr once a subscription is in: ``listening on PATTERN (queue Q) at URL``."""
    print("{} {}{} at {}".format(doing, pattern, " (queue {})".format(queue) if queue else "",
                                 server), file=sys.stderr, flush=True)
