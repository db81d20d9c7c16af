"""``streams`` and ``consumers``: a server's streams and durable consumers
(list, add, show, read, fetch, acknowledge, remove), on the native protocol."""

import json
import sys

from fastflow.cli.base import CommandError, connect
from fastflow.cli.formats import event_json, event_line, fmt_int, print_info, print_table
from fastflow.protocol import AckKind


async def streams(args):
    c = await connect(args)
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
                                 st.get("storage", ""), fmt_int(st.get("events", "")),
                                 fmt_int(st.get("bytes", "")),
                                 "{}..{}".format(st.get("first_seq", ""), st.get("last_seq", "")),
                                 fmt_int(st.get("consumers", ""))))
                print_table(rows)
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
            print_info(info, args.json)
        elif args.action == "info":
            print_info(await c.stream_info(args.name), args.json)
        elif args.action == "rm":
            await c.delete_stream(args.name)
            print("deleted stream {}".format(args.name))
        elif args.action == "purge":
            n = await c.purge_stream(args.name, args.subject, args.up_to)
            print("purged {} event{} from {}".format(fmt_int(n), "" if n == 1 else "s",
                                                      args.name))
    finally:
        await c.close()
    return 0




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
        print(event_json(ev) if args.json else event_line(ev), flush=not n % 1000)
    sys.stdout.flush()
    print("{:,} event{} of {}".format(n, "" if n == 1 else "s", args.name), file=sys.stderr)
    return 0


async def consumers(args):
    c = await connect(args)
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
                                 str(cfg.get("ack", "")), fmt_int(ci.get("delivered", "")),
                                 fmt_int(ci.get("acked", "")), fmt_int(ci.get("pending", "")),
                                 fmt_int(ci.get("lag", ""))))
                print_table(rows)
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
            print_info(await c.add_consumer(args.stream, args.name, **cfg), args.json)
        elif args.action == "info":
            print_info(await c.consumer_info(args.stream, args.name), args.json)
        elif args.action == "rm":
            await c.delete_consumer(args.stream, args.name)
            print("deleted consumer {} of {}".format(args.name, args.stream))
        elif args.action == "fetch":
            got = await c.fetch(args.stream, args.name, args.count, wait=args.wait)
            for d in got:
                print(event_json(d.event) if args.json else event_line(d.event))
                if not args.no_ack:
                    await d.ack()
            await c.flush()
            sys.stdout.flush()
            print("{} deliver{}{}".format(len(got), "y" if len(got) == 1 else "ies",
                                          "" if args.no_ack else ", acknowledged"),
                  file=sys.stderr)
        elif args.action == "ack":
            kind = (AckKind.TERM if args.term else AckKind.NAK if args.nak is not None
                    else AckKind.ACK)
            for seq in args.seqs:
                await c._ack("$ACK.{}.{}.{}".format(args.stream, args.name, seq), kind,
                             args.nak or None)
            await c.flush()             # the server has read them: errors are in
            if errors:
                raise CommandError(errors[0])
            print("{} {}".format("terminated" if args.term else "nak'd" if args.nak is not None
                                 else "acknowledged", ", ".join(map(str, args.seqs))))
        if errors:
            raise CommandError(errors[0])
    finally:
        await c.close()
    return 0


