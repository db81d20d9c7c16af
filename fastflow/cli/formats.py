"""What the CLI's commands read from their arguments (a payload, CloudEvents
attributes, a time, a size, a duration) and how they print events, replies and
the server's answers."""

import argparse
import json
import sys
import time

from fastflow.cli.base import CommandError


def data_arg(data):
    """A DATA argument: the text (UTF-8), ``-`` for standard input, ``@FILE`` for a file."""
    if data == "-":
        return sys.stdin.buffer.read()
    if data.startswith("@") and len(data) > 1:
        with open(data[1:], "rb") as f:
            return f.read()
    return data.encode("utf-8")


def attrs_arg(args):
    attrs = {}
    for name in ("type", "source", "id", "datacontenttype", "dataschema"):
        v = getattr(args, "ce_" + name, None)
        if v is not None:
            attrs[name] = v
    for kv in getattr(args, "attr", None) or ():
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise CommandError("--attr takes NAME=VALUE, got {!r}".format(kv))
        attrs[k] = v
    return attrs




def time_arg(text):
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


def size_arg(text):
    from fastflow.server.config import parse_size

    try:
        return parse_size(text, "size")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None


def duration_arg(text):
    from fastflow.server.config import parse_duration

    try:
        return parse_duration(text, "duration")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).partition(": ")[2]) from None



def json_data(data, ctype=None):
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




def fmt_data(data, limit=None):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = repr(data)
    if limit and len(text) > limit:
        text = text[:limit] + "..."
    return text


def event_json(ev, reply=None, head=None):
    """One line of JSON: ``head`` (default: routing_subject, reply, seq and
    stream), then the CloudEvents JSON members; data that is JSON shows as
    JSON."""
    from fastflow.event import to_json

    if head is None:
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
            members.update(json_data(ev.data, members.get("datacontenttype")))
            head.update(members)
            return json.dumps(head, separators=(",", ":"))
    if not head:
        return body
    return json.dumps(head, separators=(",", ":"))[:-1] + "," + body[1:]


def write_data(data):
    """A reply's or an event's data on stdout, ending with a newline."""
    sys.stdout.buffer.write(data)
    if not data.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


def published(args, unstored):
    print("published {:,} event{} to {}".format(args.count, "" if args.count == 1 else "s",
                                                args.subject), file=sys.stderr)
    if unstored:
        what = ("the event was" if args.count == 1 else
                "{:,} of the {:,} events were".format(unstored, args.count))
        print("fastflow pub: {} stored by no stream: no stream captures {}".format(
            what, args.subject), file=sys.stderr)
        return 1
    return 0



def event_line(ev):
    extra = "" if ev.type == ev.routing_subject else " type={}".format(ev.type)
    return "[{}] {}{}: {}".format(ev.seq, ev.routing_subject, extra, fmt_data(ev.data))


def fmt_int(n):
    return "{:,}".format(n) if isinstance(n, int) else str(n)


def print_info(info, as_json):
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




def print_table(rows):
    """Rows of strings (the first one the header) in left-aligned columns."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
