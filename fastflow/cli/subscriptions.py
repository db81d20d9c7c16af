"""``fastflow subscriptions ls|add|info|rm``: the Subscriptions API of a
server's HTTP door (``-s http://HOST:PORT``; docs/subscriptions.md),
with ``fastflow.client.http.HttpConnection``."""

import json
from urllib.parse import quote

from fastflow.cli.base import CommandError
from fastflow.client.http import HttpConnection, is_web_url
from fastflow.cli.web import _options

__all__ = ("subscriptions",)


def _kv(items, what):
    out = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise CommandError("{}: expected NAME=VALUE, got {!r}".format(what, item))
        out[k] = v
    return out


def body_of(args):
    """The Subscription resource ``add`` sends, from its options."""
    if args.body:
        text = args.body
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as f:
                text = f.read()
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CommandError("--body: not valid JSON: {}".format(exc)) from None
    if not args.sink:
        raise CommandError("add: give the sink (an http(s):// URL, nats://HOST:PORT or "
                           "fastflow:) or --body")
    sink = args.sink
    protocol = args.protocol or ("HTTP" if sink.startswith(("http://", "https://")) else "NATS")
    body = {"protocol": protocol, "sink": sink}
    if args.source:
        body["source"] = args.source
    if args.type:
        body["types"] = args.type
    filters = [{"exact": _kv(args.exact, "--exact")}] if args.exact else []
    if args.prefix:
        filters.append({"prefix": _kv(args.prefix, "--prefix")})
    if args.sql:
        filters.append({"sql": args.sql})
    if filters:
        body["filters"] = filters
    config = {k: v for k, v in (("stream", args.stream), ("start", args.start),
                                ("subject", args.pattern), ("deadletter", args.dead_letter))
              if v is not None}
    if config:
        body["config"] = config
    ps = {}
    if protocol == "NATS":
        if not args.subject:
            raise CommandError("add: a NATS sink needs --subject (where to publish)")
        ps["subject"] = args.subject
    elif args.mode:
        ps["mode"] = args.mode
    if ps:
        body["protocolsettings"] = ps
    if args.sink_token:
        body["sinkcredential"] = {"credentialtype": "ACCESSTOKEN",
                                  "accesstoken": args.sink_token}
    return body


async def subscriptions(args):
    if not args.server or not is_web_url(args.server) or args.server.startswith("ws"):
        raise CommandError("the Subscriptions API is on the HTTP door: -s http://HOST:PORT "
                           "(fastflow serve --http-port)")
    async with HttpConnection(args.server, **_options(args)) as c:
        act = args.action
        if act == "ls":
            r = await c.request("GET", "/subscriptions")
        elif act == "add":
            r = await c.request("POST", "/subscriptions", json.dumps(body_of(args)).encode(),
                                {"content-type": "application/json"})
        elif act == "info":
            r = await c.request("GET", "/subscriptions/{}/status".format(quote(args.id, "")))
        else:
            r = await c.request("DELETE", "/subscriptions/" + quote(args.id, ""))
        if r.status >= 400:
            raise r.error()
        doc = r.json()
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
    elif act == "ls":
        if not doc:
            print("no subscriptions")
        for d in doc:
            what = ", ".join(d.get("types", ())) or json.dumps(d.get("filters", []))[:60]
            print("{}  {} {}  {}".format(d["id"], d.get("protocol"), d.get("sink"), what))
    elif act == "add":
        print("created {}".format(doc["id"]))
    elif act == "info":
        for k, v in doc.items():
            if k != "sink_state":
                print("{:>14}: {}".format(k, v))
    else:
        print("deleted {}".format(doc["id"]))
    return 0
