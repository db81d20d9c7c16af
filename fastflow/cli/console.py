"""``fastflow console [URL]``: open the operator console of a server
(docs/console.md) in a browser, or print its URL (``--print``, or when no
browser can be started).  URL is the monitoring port
(``http://HOST:PORT``, port 8232 unless given; default
``http://127.0.0.1:8232``).  ``--token`` goes in the URL's fragment, which
the browser never sends: the page reads it and keeps it for the tab."""

import sys
import urllib.error
import urllib.request
import webbrowser
from urllib.parse import quote, urlsplit

__all__ = ("console", "console_url")

MONITOR_PORT = 8232                     # fastflow serve's default --monitor-port


class ConsoleError(Exception):
    pass


def console_url(url=None):
    """The console's URL on the monitoring port ``url``."""
    url = (url or "http://127.0.0.1:{}".format(MONITOR_PORT)).strip()
    if "://" not in url:
        url = "http://" + url
    try:
        u = urlsplit(url)
        port = u.port
    except ValueError as exc:
        raise ConsoleError("not a URL: {!r} ({})".format(url[:200], exc)) from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConsoleError("the console is on the monitoring port: give http://HOST:PORT, "
                           "got {!r}".format(url[:200]))
    host = u.hostname if ":" not in u.hostname else "[" + u.hostname + "]"
    return "{}://{}:{}/console/".format(u.scheme, host, port or MONITOR_PORT)


def _check(url, timeout):
    """Raise ConsoleError unless ``url`` serves the console."""
    origin = url[:-len("/console/")]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            if b"fastflow console" not in r.read(4096):
                raise ConsoleError("{} answered, but not with the console: is it a fastflow "
                                   "monitoring port?".format(origin))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ConsoleError("{} has no console: it is off there ([monitor] console = "
                               "false), or this is not a fastflow monitoring port"
                               .format(origin)) from None
        raise ConsoleError("{} answered {} {}".format(origin, exc.code, exc.reason)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConsoleError("nothing answers at {} ({}): is fastflow serve running with its "
                           "monitoring port there (--monitor-port)?".format(origin, reason)) \
            from None


def console(args):
    try:
        url = console_url(args.url)
        if not args.no_check:
            _check(url, args.timeout)
    except ConsoleError as exc:
        print("fastflow console: {}".format(exc), file=sys.stderr)
        return 1
    page = url + ("#token=" + quote(args.token, safe="") if args.token else "")
    if args.print_url:
        print(page)
        return 0
    try:
        opened = webbrowser.open(page, new=2)
    except webbrowser.Error:
        opened = False
    if opened:
        print("opened {}{}".format(url, " (with the token)" if args.token else ""))
    else:
        print("no browser could be started here; open this URL in one:\n{}".format(page))
    return 0
