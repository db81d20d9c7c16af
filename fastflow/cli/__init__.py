"""The ``fastflow`` command.

``fastflow demo`` runs the embedded engine on the synthetic market-data
workload and prints what it did and how fast (``fastflow`` alone prints the
help).  ``fastflow serve`` runs the network broker (``fastflow.server``),
``fastflow passwd`` hashes a password for its config; ``pub``, ``sub``,
``req``, ``reply``, ``streams`` and ``consumers`` talk to a server with
``fastflow.client`` (``fastflow://``), and ``pub``, ``sub``, ``req`` and
``reply`` also to a NATS server or fastflow's NATS door (``nats://``, with
nats-py: ``pip install 'fastflow[nats]'``), ``pub`` and ``sub`` to the web
doors (``http://``, ``https://``, ``ws://``, ``wss://``); ``bench``
measures publishers and subscribers through a server (an embedded one by
default).

This module parses the command line and hands each command to its module:
``demo``, ``messages`` (pub, sub, req, reply; ``natspy`` over NATS,
``web`` at the web doors),
``streams`` (streams, consumers) and ``bench`` (the load generator), each
imported when its command runs; ``base`` holds what the network commands
share, ``formats`` what they read and print.
"""

import argparse
import platform
import sys

from fastflow._impl import COMPILED
from fastflow._version import __version__
from fastflow.cli.base import DEFAULT_SERVER, add_connection_args, lazy_server, network_command
from fastflow.cli.formats import duration_arg, size_arg, time_arg

__all__ = ("main",)


def _cmd_serve(rest):
    app = lazy_server("serve")
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


# -- the command line -----------------------------------------------------------------------------

# The arguments that several commands share, each defined once.


def _add_message_args(p):
    """The subject and the payload of pub and req."""
    p.add_argument("subject")
    p.add_argument("data", nargs="?", default="",
                   help="the payload: text, '-' for standard input, @FILE for a file")


def _add_event_args(p):
    """The CloudEvents attributes of pub and req."""
    g = p.add_argument_group("event attributes (CloudEvents)")
    g.add_argument("--type", dest="ce_type", help="type (default: the subject)")
    g.add_argument("--source", dest="ce_source", help="source (default /fastflow)")
    g.add_argument("--id", dest="ce_id", help="id (default: generated)")
    g.add_argument("--content-type", dest="ce_datacontenttype", metavar="TYPE",
                   help="datacontenttype, e.g. application/json")
    g.add_argument("--dataschema", dest="ce_dataschema", metavar="URI")
    g.add_argument("--attr", action="append", metavar="NAME=VALUE",
                   help="an extension attribute (repeatable)")


def _add_listen_args(p, what):
    """The queue group of sub and reply, and how many ``what`` they handle before exiting."""
    p.add_argument("--queue", "-q", help="join a queue group")
    p.add_argument("--count", "-n", type=int, default=0, help="exit after N {}".format(what))


def _add_json_flag(p):
    p.add_argument("--json", action="store_true")


def _add_bench_args(b):
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


def _build_parser():
    late = []       # (parser, adders): the shared options, shown after a command's own

    def network(p, *adders):
        """``p`` talks to a server: ``adders``, then the connection options, after its own."""
        late.append((p, adders + (add_connection_args,)))
        return p

    def action(actions, name, *positionals, json=False, **kw):
        """A sub-command of streams or consumers: its positionals, [--json], the connection."""
        a = network(actions.add_parser(name, **kw), *([_add_json_flag] if json else []))
        for arg in positionals:
            a.add_argument(arg)
        return a

    parser = argparse.ArgumentParser(
        prog="fastflow", description="fastflow: an embeddable event-routing engine and its "
        "broker. Servers: -s fastflow://HOST:PORT (the native protocol, the default "
        + DEFAULT_SERVER + "), -s nats://HOST:PORT (a NATS server or fastflow serve "
        "--nats-port; pub, sub, req and reply) or -s http://HOST:PORT, ws://HOST:PORT "
        "(fastflow serve --http-port; pub and sub).")
    parser.add_argument("--version", action="version", version="fastflow {} ({} core, Python {})"
                        .format(__version__, "native" if COMPILED else "pure-Python",
                                platform.python_version()))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name, help, description, *adders):
        """A command that sends to or receives from a server (see ``network``)."""
        return network(sub.add_parser(name, help=help, description=description), *adders)
    d = sub.add_parser("demo", help="run the embedded engine on a synthetic workload")
    for p in (parser, d):
        p.add_argument("--subs", type=int, default=10_000, help="subscriptions (default 10,000)")
        p.add_argument("--publishes", type=int, default=1_000_000,
                       help="publishes (default 1,000,000)")
        p.add_argument("--subjects", type=int, default=50_000,
                       help="distinct subjects (default 50,000)")
        p.add_argument("--seed", type=int, default=2026)
        p.add_argument("--repeat", type=int, default=3, help="timed runs; the median is reported")
        p.add_argument("--json", action="store_true", help="print the figures as JSON")

    sub.add_parser("serve", add_help=False, help="run the network broker (fastflow serve --help)")
    sub.add_parser("passwd", add_help=False,
                   help="print a password hash for the server's config (fastflow passwd --help)")

    p = command("pub", "publish an event", "Publish an event.", _add_event_args)
    _add_message_args(p)
    g = p.add_argument_group("signing (docs/provenance.md)")
    g.add_argument("--sign", metavar="KEYFILE",
                   help="sign the event (the CloudEvents verifiability extension) with this "
                        "private key (PEM: fastflow keys new)")
    g.add_argument("--key-id", metavar="ID",
                   help="the key id in the signature (default: SHA-256 of the public key)")
    g.add_argument("--sign-ext", metavar="NAMES",
                   help="extension attributes the signature covers, comma-separated")
    p.add_argument("--count", "-n", type=int, default=1, help="publish it N times (default 1)")
    p.add_argument("--reply", metavar="SUBJECT", help="a reply subject")
    p.add_argument("--ack", action="store_true",
                   help="wait for the server's acknowledgement (prints the stream and seq; "
                        "exit status 1 when no stream stored the event)")
    g = p.add_argument_group("over HTTP (-s http://HOST:PORT; default: binary mode for one "
                             "event, batched mode for more)")
    how = g.add_mutually_exclusive_group()
    how.add_argument("--binary", dest="http_mode", action="store_const", const="binary",
                     help="a request per event, attributes as ce- headers, data as the body")
    how.add_argument("--structured", dest="http_mode", action="store_const",
                     const="structured", help="a request per event, the JSON event as the body")
    how.add_argument("--batch", type=int, metavar="K",
                     help="batched mode: K events per request (default 1000)")

    p = command("sub", "print the events of a subject pattern",
                "Subscribe and print events until interrupted (or --count).")
    p.add_argument("pattern")
    g = p.add_argument_group("verifying (docs/provenance.md)")
    g.add_argument("--verify", action="append", metavar="[ID=]PUBFILE",
                   help="verify each event's signature against these public keys "
                        "(repeatable); events that fail go to stderr with the reason")
    g.add_argument("--verify-mode", choices=("strict", "core-only", "passthrough"),
                   default="strict",
                   help="strict (default): signed events only, shown with the core and "
                        "signed attributes; core-only: without extensions; passthrough: "
                        "unsigned events too, signed ones must verify")
    _add_listen_args(p, "events")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per event: routing_subject, reply, then the "
                        "CloudEvents JSON members (JSON data as JSON)")

    p = command("reply", "answer the requests of a subject pattern",
                "Subscribe and answer every request (a message with a reply subject) until "
                "interrupted (or --count).")
    p.add_argument("subject", metavar="PATTERN")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--echo", action="store_true", help="answer with the request's data")
    how.add_argument("--body", metavar="DATA",
                     help="answer with DATA: text, '-' for standard input, @FILE for a file")
    _add_listen_args(p, "answers")

    p = command("req", "send a request and print the reply",
                "Publish a request and print the reply's data.", _add_event_args)
    _add_message_args(p)
    p.add_argument("--wait", "-w", type=float, default=1.0, metavar="SECONDS",
                   help="how long to wait for the reply (default 1)")
    p.add_argument("--json", action="store_true", help="print the reply event as JSON")

    p = sub.add_parser("streams", help="list, add, inspect, purge and remove streams",
                       description="Manage the streams of a server.")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    action(sa, "ls", json=True, help="list the streams")
    a = action(sa, "add", "name", json=True, help="create a stream")
    a.add_argument("subjects", nargs="+", metavar="PATTERN", help="subject patterns it captures")
    a.add_argument("--max-events", type=int)
    a.add_argument("--max-bytes", type=size_arg, metavar="SIZE",
                   help="bytes, or with a unit: 512MiB, 1GiB, 1GB")
    a.add_argument("--max-age", type=duration_arg, metavar="DURATION",
                   help="seconds, or with units: 90s, 1h30m, 1d")
    a.add_argument("--max-per-subject", type=int)
    a.add_argument("--max-event-size", type=size_arg, metavar="SIZE")
    a.add_argument("--discard", choices=("old", "new"))
    a.add_argument("--duplicate-window", type=duration_arg, metavar="DURATION",
                   help="an event whose (source, id) the stream stored this recently is not "
                        "stored again (default 2m; 0: off)")
    a.add_argument("--storage", choices=("memory", "file"))
    action(sa, "info", "name", json=True, help="show a stream")
    a = action(sa, "read", "name", help="print the events of a stream (replay)",
               description="Print the events of a stream: from the first, from a seq, from a "
                           "time, or the last N.")
    at = a.add_mutually_exclusive_group()
    at.add_argument("--seq", type=int, metavar="N", help="from seq N")
    at.add_argument("--time", type=time_arg, metavar="T",
                    help="from time T: RFC 3339, a duration ago (5m, 1h30m, 2d) or ns since "
                         "the epoch")
    at.add_argument("--last", type=int, metavar="N", help="the last N events")
    a.add_argument("--count", "-n", type=int, default=0, help="at most N events")
    a.add_argument("--filter", metavar="PATTERN", help="only events matching it")
    a.add_argument("--json", action="store_true", help="one JSON object per event")
    action(sa, "rm", "name", help="delete a stream (and its events)")
    a = action(sa, "purge", "name", help="remove events of a stream")
    a.add_argument("--subject", metavar="PATTERN", help="only events matching it")
    a.add_argument("--up-to", type=int, metavar="SEQ", help="only events up to this seq")
    p.set_defaults(_command_parser=p)

    p = sub.add_parser("consumers", help="durable consumers: add, ls, info, fetch, ack, rm",
                       description="Manage and read the durable consumers of a stream.")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    action(sa, "ls", "stream", json=True, help="list the consumers of a stream")
    a = action(sa, "add", "stream", "name", json=True, help="create a durable consumer")
    a.add_argument("--start", metavar="WHERE", help="first (default), last, new, or a seq")
    a.add_argument("--filter", metavar="PATTERN", help="only events matching it")
    a.add_argument("--ack", choices=("explicit", "all", "none"), help="ack policy (default "
                   "explicit)")
    a.add_argument("--ack-wait", type=duration_arg, metavar="DURATION",
                   help="redeliver when not acknowledged within it (default 30s)")
    a.add_argument("--max-deliver", type=int, metavar="N")
    a.add_argument("--max-in-flight", type=int, metavar="N")
    a.add_argument("--dead-letter", metavar="SUBJECT")
    action(sa, "info", "stream", "name", json=True, help="show a consumer")
    a = action(sa, "fetch", "stream", "name", json=True,
               help="print (and acknowledge) the next deliveries")
    a.add_argument("--count", "-n", type=int, default=1, help="up to N deliveries (default 1)")
    a.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait that long for the first one when none is ready")
    a.add_argument("--no-ack", action="store_true",
                   help="leave them pending (acknowledge later with consumers ack)")
    a = action(sa, "ack", "stream", "name", help="acknowledge deliveries by seq")
    a.add_argument("seqs", nargs="+", type=int, metavar="SEQ")
    kind = a.add_mutually_exclusive_group()
    kind.add_argument("--nak", nargs="?", const=0.0, type=float, metavar="DELAY",
                      help="ask for redelivery (after DELAY seconds)")
    kind.add_argument("--term", action="store_true", help="never deliver them again")
    action(sa, "rm", "stream", "name", help="delete a consumer")
    p.set_defaults(_command_parser=p)

    p = sub.add_parser("subscriptions", help="Subscriptions API: ls, add, info, rm (-s http://)",
                       description="Manage the Subscriptions-API subscriptions of a server's "
                                   "HTTP door (-s http://HOST:PORT; docs/subscriptions.md).")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    action(sa, "ls", json=True, help="list the subscriptions you may see")
    a = action(sa, "add", "sink", json=True, help="create a subscription",
               description="Create a subscription: events of a stream that pass its filters "
                           "are delivered to SINK: a webhook (http:// or https://), a NATS "
                           "server (nats://HOST:PORT) or this server's subjects (fastflow:).")
    a.add_argument("--protocol", choices=("HTTP", "NATS"), help="default: from the sink")
    a.add_argument("--subject", help="NATS: the subject to publish on")
    a.add_argument("--mode", choices=("binary", "structured", "batch"),
                   help="HTTP: the CloudEvents content mode (default binary)")
    a.add_argument("--sink-token", metavar="TOKEN", help="HTTP: sent as Authorization: Bearer")
    a.add_argument("--stream", help="the stream to deliver from (default: the only one)")
    a.add_argument("--start", help="new (default), first, or a seq")
    a.add_argument("--pattern", metavar="PATTERN", help="only events routed on these subjects")
    a.add_argument("--source", help="only events of this source")
    a.add_argument("--type", action="append", metavar="TYPE",
                   help="only events of this type (repeatable: any of them)")
    a.add_argument("--exact", action="append", metavar="ATTR=VALUE", help="an exact filter")
    a.add_argument("--prefix", action="append", metavar="ATTR=VALUE", help="a prefix filter")
    a.add_argument("--sql", metavar="EXPR", help="a CESQL filter")
    a.add_argument("--dead-letter", metavar="SUBJECT",
                   help="where failed events go (default $DLQ.subscriptions.<id>)")
    a.add_argument("--body", metavar="JSON",
                   help="the whole Subscription resource as JSON (or @FILE) instead")
    action(sa, "info", "id", json=True, help="a subscription's delivery state and counters")
    action(sa, "rm", "id", json=True, help="delete a subscription")
    p.set_defaults(_command_parser=p)

    p = action(sub, "catalog", json=True, help="the discovery catalog (-s http://): doors, "
               "streams, event types", description="Show the discovery catalog (xRegistry) of a "
               "server's HTTP door (-s http://HOST:PORT; docs/catalog.md): its doors and "
               "streams, or with STREAM the CloudEvents types seen in it with counts, rates and "
               "first and last seen.")
    p.add_argument("stream", nargs="?", help="a stream: its event types")

    p = sub.add_parser("accounts", help="accounts: ls, info, usage (-s http://MONITOR)",
                       description="Show the accounts of a server, read from /accountz on its "
                                   "monitoring port (-s http://HOST:PORT, port 8232 unless "
                                   "given; fastflow serve --monitor-port; docs/accounts.md).")
    sa = p.add_subparsers(dest="action", metavar="ACTION")
    action(sa, "ls", json=True, help="one line per account: connections, subscriptions, "
           "streams, exports, imports")
    action(sa, "info", "name", json=True, help="an account's exports, imports and streams")
    a = action(sa, "usage", json=True, help="published and delivered per account, forwarded "
               "per import")
    a.add_argument("name", nargs="?", help="one account (default: every one)")
    p.set_defaults(_command_parser=p)

    p = sub.add_parser("console", help="open a server's operator console in a browser",
                       description="Open the operator console (docs/console.md) of the server "
                                   "whose monitoring port is URL (http://HOST:PORT, port 8232 "
                                   "unless given; default http://127.0.0.1:8232) in a browser, "
                                   "or print its URL.")
    p.add_argument("url", nargs="?", help="the monitoring port (default http://127.0.0.1:8232)")
    p.add_argument("--token", help="the monitoring token: put in the URL's fragment, which the "
                                   "browser does not send; the page keeps it for the tab")
    p.add_argument("--print", dest="print_url", action="store_true",
                   help="print the URL instead of opening a browser")
    p.add_argument("--no-check", action="store_true",
                   help="do not check first that the server answers")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds the check may take")

    k = sub.add_parser("keys", help="make signing keys, show key ids",
                       description="Signing keys of signed events (docs/provenance.md).")
    ka = k.add_subparsers(dest="action", metavar="ACTION")
    a = ka.add_parser("new", help="write a new private key PATH (mode 0600) and PATH.pub")
    a.add_argument("path", metavar="PATH")
    a.add_argument("--alg", choices=("ed25519", "p256"), default="ed25519",
                   help="Ed25519 (default) or ECDSA P-256")
    a.add_argument("--key-id", metavar="ID", help="print this id (the id is the verifier's "
                   "name for the key; default: SHA-256 of the public key)")
    a = ka.add_parser("id", help="print the default key id of a key file")
    a.add_argument("path", metavar="PATH")
    k.set_defaults(_command_parser=k)
    p = sub.add_parser("audit", help="verify the hash chains and signed checkpoints of streams",
                       description="Read the segment files of a data directory's streams "
                                   "(DATA_DIR/streams/NAME, or one stream's directory) and "
                                   "verify every frame's CRC, every chain link and marker, and "
                                   "every signed checkpoint; report the first broken link with "
                                   "its file and offset. Exit status 1 on any failure.")
    p.add_argument("data_dir", metavar="DATA_DIR")
    p.add_argument("--stream", metavar="NAME", help="audit this stream only")
    p.add_argument("--key", metavar="PUB", help="the Ed25519 public key (PEM) that signed the "
                   "checkpoints (default: DATA_DIR/server.pub)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")

    b = sub.add_parser("bench", help="measure publishers -> subscribers through a server",
                       description="Publishers and subscribers through a fastflow server (an "
                                   "embedded one on a free loopback port unless --server): "
                                   "throughput per worker and in aggregate, and the latency "
                                   "publish -> receive from a timestamp in the payload.")
    _add_bench_args(b)
    for p, adders in late:
        for add in adders:
            add(p)
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
        from fastflow.cli.demo import demo

        return demo(args)
    if cmd in ("pub", "sub", "req", "reply"):
        low = {"pub": 1, "sub": 0, "reply": 0}.get(cmd)
        if low is not None and args.count < low:
            parser.error("{}: --count must be at least {}".format(cmd, low))
        if cmd == "pub" and args.batch is not None:
            if args.batch < 1:
                parser.error("pub: --batch must be at least 1")
            args.http_mode = "batch"
        from fastflow.cli import messages

        return network_command(args, getattr(messages, cmd))
    if cmd in ("streams", "consumers"):
        if args.action is None:
            args._command_parser.print_help()
            return 2
        from fastflow.cli import streams

        return network_command(args, getattr(streams, cmd))
    if cmd == "subscriptions":
        if args.action is None:
            args._command_parser.print_help()
            return 2
        from fastflow.cli.subscriptions import subscriptions

        return network_command(args, subscriptions)
    if cmd == "accounts":
        if args.action is None:
            args._command_parser.print_help()
            return 2
        from fastflow.cli.accounts import accounts

        return network_command(args, accounts)
    if cmd == "catalog":
        from fastflow.cli.catalog import catalog

        return network_command(args, catalog)
    if cmd == "keys":
        if args.action is None:
            args._command_parser.print_help()
            return 2
        from fastflow.cli.base import CommandError
        from fastflow.cli.keys import keys

        try:
            return keys(args)
        except CommandError as exc:
            print("fastflow keys: {}".format(exc), file=sys.stderr)
            return 2
    if cmd == "console":
        from fastflow.cli.console import console

        return console(args)
    if cmd == "audit":
        from fastflow.cli.audit import audit

        return audit(args)
    if cmd == "bench":
        from fastflow.cli import bench

        return bench.run(args, parser)
    parser.error("unknown command {!r}".format(cmd))
    return 2
