"""``fastflow catalog [STREAM]``: the discovery catalog of a server's HTTP
door (``-s http://HOST:PORT``; docs/catalog.md): its doors and streams, or
the CloudEvents types seen in one stream with their live figures."""

import json
from urllib.parse import quote

from fastflow.cli.base import CommandError
from fastflow.cli.web import _options
from fastflow.client.http import HttpConnection, is_web_url

__all__ = ("catalog",)


async def _get(c, path):
    r = await c.request("GET", path)
    if r.status >= 400:
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if isinstance(doc, dict) and "title" in doc:
            raise CommandError("{} ({})".format(doc["title"], r.status))
        raise r.error()
    return r.json()


async def catalog(args):
    if not args.server or not is_web_url(args.server) or args.server.startswith("ws"):
        raise CommandError("the catalog is on the HTTP door: -s http://HOST:PORT "
                           "(fastflow serve --http-port)")
    async with HttpConnection(args.server, **_options(args)) as c:
        if args.stream:
            doc = await _get(c, "/registry/messagegroups/{}?inline=messages".format(
                quote(args.stream, "")))
        else:
            doc = await _get(c, "/registry?inline=endpoints,messagegroups,schemagroups")
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
        return 0
    if args.stream:
        _print_group(doc)
        return 0
    print("registry {} (xRegistry {})".format(doc.get("registryid"), doc.get("specversion")))
    print("endpoints:")
    for e in doc.get("endpoints", {}).values():
        uris = [x.get("uri") for x in e.get("protocoloptions", {}).get("endpoints", [])]
        print("  {:<10} {:<11} {}".format(e["endpointid"], e.get("protocol", ""),
                                         ", ".join(uris)))
    print("messagegroups (streams):")
    groups = doc.get("messagegroups", {})
    if not groups:
        print("  none you may read")
    for g in groups.values():
        print("  {:<20} {:>8} events  {:>4} types  {:>9.1f}/s  {}".format(
            g["messagegroupid"], g.get("ffevents", 0), g.get("messagescount", 0),
            g.get("ffrate", 0.0), ", ".join(g.get("ffsubjects", []))))
    sg = doc.get("schemagroups", {})
    print("schemagroups: {}".format(", ".join(
        "{} ({} schemas)".format(k, v.get("schemascount", 0)) for k, v in sg.items()) or "none"))
    return 0


def _print_group(g):
    print("stream {}: {} events, last seq {}, {:.1f} events/s{}".format(
        g["messagegroupid"], g.get("ffevents", 0), g.get("fflastseq", 0), g.get("ffrate", 0.0),
        "; {} more of types past the limit".format(g["ffother"]) if g.get("ffother") else ""))
    msgs = g.get("messages", {})
    if not msgs:
        print("  no events seen")
        return
    print("  {:<40} {:>9} {:>9}  {:<27} {}".format("type", "count", "events/s", "last seen",
                                                    "source"))
    for m in sorted(msgs.values(), key=lambda m: -m.get("ffcount", 0)):
        print("  {:<40} {:>9} {:>9.1f}  {:<27} {}".format(
            m.get("name", m["messageid"]), m.get("ffcount", 0), m.get("ffrate", 0.0),
            m.get("fflastseen", ""), m.get("ffsource", "") if m.get("ffsources") == "one"
            else "(many)"))
