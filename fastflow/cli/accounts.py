"""``fastflow accounts ls|info NAME|usage [NAME]``: the accounts of a
server (docs/accounts.md), read from ``/accountz`` on its monitoring port
(``-s http://HOST:PORT``, the port 8232 unless given; ``fastflow serve
--monitor-port``), with ``--token`` or ``--user``/``--password`` when the
monitor asks for them.  ``--json`` prints the document read."""

import json
from urllib.parse import quote, urlsplit

from fastflow.cli.base import CommandError, say
from fastflow.cli.web import _options
from fastflow.client.http import HttpConnection, is_web_url, parse_web_url

__all__ = ("accounts",)

MONITOR_PORT = 8232                     # fastflow serve's default --monitor-port
_NO_MONITOR = ("accounts are read from the monitoring port: -s http://HOST:{} (fastflow serve "
               "--monitor-port)".format(MONITOR_PORT))
# the fields of an account or an import that are not usage figures
_NOT_USAGE = {"name", "system", "exports", "imports", "streams", "subscriptions", "connections",
              "stream", "service", "account", "prefix", "local"}


def _monitor_url(server):
    """The WebUrl of ``-s``: http:// or https://, port 8232 unless given."""
    if not server or not is_web_url(server) or server.split("://", 1)[0].lower() not in (
            "http", "https"):
        raise CommandError(_NO_MONITOR)
    url = parse_web_url(server)
    try:
        port = urlsplit(server.strip()).port
    except ValueError:
        port = url.port
    return url if port is not None else url._replace(port=MONITOR_PORT)


async def _accountz(c, name=None):
    path = "/accountz" if name is None else "/accountz?acc=" + quote(name, "")
    r = await c.request("GET", path)
    if r.status == 401:
        raise CommandError("the monitoring port needs credentials: --token or --user/--password"
                           if c.authorization is None else
                           "the monitoring port refused these credentials (401)")
    if r.status == 404:
        raise CommandError("{} has no /accountz: is it the monitoring port (fastflow serve "
                           "--monitor-port) of a server with accounts?".format(c.url.origin))
    if r.status >= 400:
        raise r.error()
    try:
        doc = r.json()
    except ValueError:
        raise CommandError("{} did not answer /accountz with JSON: is it the monitoring "
                           "port?".format(c.url.origin)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("accounts"), dict):
        raise CommandError("{} answered /accountz without accounts".format(c.url.origin))
    return doc


async def accounts(args):
    url = _monitor_url(args.server)
    name = getattr(args, "name", None)
    async with HttpConnection(url, **_options(args)) as c:
        doc = await _accountz(c, name)
        if name is not None and name not in doc["accounts"]:
            known = sorted((await _accountz(c))["accounts"])
            raise CommandError("no account {!r} (accounts: {})".format(
                name, ", ".join(known) or "none"))
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    accts = [doc["accounts"][k] for k in sorted(doc["accounts"])]
    if args.action == "ls":
        if not doc.get("enabled", True):
            say(args, "no accounts configured: every client is in {}".format(
                ", ".join(a.get("name", "?") for a in accts)))
        _ls(accts)
    elif args.action == "info":
        _info(accts[0])
    else:
        _usage(accts)
    return 0


def _n(v):
    return len(v) if isinstance(v, list) else 0


def _ls(accts):
    print("{:<20} {:<8} {:>6} {:>6} {:>7} {:>7} {:>7}".format(
        "ACCOUNT", "", "CONNS", "SUBS", "STREAMS", "EXPORTS", "IMPORTS"))
    for a in accts:
        print("{:<20} {:<8} {:>6} {:>6} {:>7} {:>7} {:>7}".format(
            a.get("name", "?"), "(system)" if a.get("system") else "",
            a.get("connections", 0), a.get("subscriptions", 0), _n(a.get("streams")),
            _n(a.get("exports")), _n(a.get("imports"))))


def _kind(d):
    return "stream" if "stream" in d else "service"


def _figures(d, first=()):
    """``name value`` of the numbers in ``d`` that are usage figures: ``first`` in order,
    then any others (metering fields the CLI does not know yet)."""
    keys = [k for k in first if k in d]
    keys += sorted(k for k, v in d.items() if k not in _NOT_USAGE and k not in keys
                   and isinstance(v, (int, float)) and not isinstance(v, bool))
    return ", ".join("{} {}".format(k.replace("_", " "), d[k]) for k in keys)


def _import_line(i):
    kind = _kind(i)
    return "{:<7} {} from {} as {}".format(kind, i.get(kind), i.get("account"),
                                           i.get("local", i.get(kind)))


_IMPORT_FIGURES = ("forwarded", "forwarded_bytes", "refused", "looped", "requests", "responses",
                   "pending", "expired", "responses_refused")


def _info(a):
    print("account {}{}".format(a.get("name"), " (system)" if a.get("system") else ""))
    print("  connections {}, subscriptions {}, published {}, delivered {}".format(
        a.get("connections", 0), a.get("subscriptions", 0), a.get("published", 0),
        a.get("delivered", 0)))
    print("exports:")
    for e in a.get("exports", []):
        kind = _kind(e)
        to = ", ".join(e["accounts"]) if e.get("accounts") else "every account"
        more = ""
        if kind == "service":
            more = "; response {}, threshold {:g} s".format(e.get("response", "single"),
                                                          e.get("response_threshold", 0))
        print("  {:<7} {:<24} to {}{}".format(kind, e.get(kind), to, more))
    if not a.get("exports"):
        print("  none")
    print("imports:")
    for i in a.get("imports", []):
        print("  " + _import_line(i))
        print("          " + _figures(i, _IMPORT_FIGURES))
    if not a.get("imports"):
        print("  none")
    print("streams: {}".format(", ".join(a.get("streams", [])) or "none"))


def _usage(accts):
    for a in accts:
        print("{:<20} {}".format(a.get("name", "?"), _figures(a, ("published", "delivered"))
                                 or "no figures"))
        for i in a.get("imports", []):
            print("  import " + _import_line(i) + ": " + _figures(i, _IMPORT_FIGURES))
