"""Server URLs: ``fastflow://[user:password@]host[:port]`` and ``fastflows://`` (TLS)."""

import urllib.parse

DEFAULT_PORT = 4232
DEFAULT_URL = "fastflow://127.0.0.1:4232"


class _Server:
    """One server of a client's list: its URL, address and credentials."""

    __slots__ = ("url", "host", "port", "tls", "user", "password", "token")

    def __init__(self, url, host, port, tls, user, password, token):
        self.url = url
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password
        self.token = token

    def __repr__(self):
        return "{}://{}:{}".format("fastflows" if self.tls else "fastflow",
                                   "[{}]".format(self.host) if ":" in self.host else self.host,
                                   self.port)


def parse_url(url):
    """``(host, port, tls, user, password, token)`` of a server URL:
    ``fastflow://[user:password@]host[:port]`` (``fastflows://`` for TLS;
    ``fastflow://token@host``: a user without a password is a token; no
    scheme: ``fastflow://``; the port defaults to 4232)."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError("server URL must be a non-empty string, got {!r}".format(url))
    url = url.strip()
    if "://" not in url:
        url = "fastflow://" + url
    u = urllib.parse.urlsplit(url)
    scheme = u.scheme.lower()
    if scheme in ("fastflow", "tcp"):
        tls = False
    elif scheme in ("fastflows", "tls"):
        tls = True
    else:
        raise ValueError("server URL {!r}: unknown scheme {!r} (expected fastflow:// or "
                         "fastflows://)".format(url, u.scheme))
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError("server URL {!r}: expected scheme://[user:password@]host[:port], "
                         "without a path or query".format(url))
    try:
        port = u.port
    except ValueError:
        raise ValueError("server URL {!r}: the port must be a number from 1 to 65535".format(url)) \
            from None
    host = u.hostname or "127.0.0.1"
    user = urllib.parse.unquote(u.username) if u.username else None
    password = urllib.parse.unquote(u.password) if u.password is not None else None
    token = None
    if user is not None and password is None:
        user, token = None, user
    return host, port or DEFAULT_PORT, tls, user, password, token
