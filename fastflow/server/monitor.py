"""The monitoring endpoint: HTTP/1.1 on its own port, GET and HEAD, served
by the web doors' HTTP stack (``fastflow.server.http``: llhttp through
``httptools``, keep-alive and pipelining, the ``[http]`` limits, the same
response writing and error bodies).

``/healthz``  200 ``{"status": "ok"}`` (503 while stopping)
``/varz``     the server: id, version, uptime, traffic, limits, memory, the
              matcher's and the engine's counters, streams (the fields
              nats-server has carry its names and types: ``mem`` bytes,
              ``cpu`` percent, ``uptime`` like ``"1h2m3s"``, ...)
``/connz``    the connections (``?limit=&offset=&sort=&subs=1``)
``/subsz``    the subscriptions' matcher, in nats-server's shape
``/streamz``  the streams and their consumers
``/metrics``  Prometheus text format 0.0.4
``/console/`` the operator console (docs/console.md): a page, its feed
              (Server-Sent Events), its tables and stream tails

With ``monitor.token`` or ``monitor.users`` every endpoint but
``/healthz`` and the console page's own files needs ``Authorization: Bearer <token>`` or HTTP Basic
credentials (401 with ``WWW-Authenticate`` otherwise).

A monitoring connection is not a client of the engine: it is a
``MonitorConnection``, not a ``Connection``, so it is not in ``/connz``
or the connection counters it reports, does not count against
``max_connections`` (the monitor answers when clients have used them all)
and keeps answering while the server drains (``/healthz`` says
``stopping``).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import time

from fastflow._impl import COMPILED
from fastflow._version import __version__
from fastflow.accounts import import_key
from fastflow.protocol import ConnState
from fastflow.server.auth import AuthError, Principal, is_password_hash, verify_password
from fastflow.server.connection import CLOSED, CLOSING, READY, _peer, _peer_host
from fastflow.server.console import STATIC_FILES, Console
from fastflow.server.http import HttpError, HttpResponder

__all__ = ("MonitorAuth", "MonitorConnection", "MonitorProtocol", "MonitorServer")

log = logging.getLogger("fastflow.server")

MAX_CONNECTIONS = 64                    # open monitoring connections; more get 503
MAX_BODY = 64 << 10                     # bytes: no endpoint reads a body (read, then dropped)
_CLOSE_GRACE = 5.0                      # seconds a closing connection may take to flush
ENDPOINTS = ("/healthz", "/varz", "/connz", "/subsz", "/streamz", "/subscriptionz",
             "/accountz", "/metrics", "/console/")
_CPU_WINDOW = 0.5                       # seconds: the least time /varz's cpu is measured over
_SORTS = ("cid", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "pending_bytes",
          "subscriptions", "uptime", "idle")
_BEARER = ("WWW-Authenticate", 'Bearer realm="fastflow"')
_BASIC = ("WWW-Authenticate", 'Basic realm="fastflow", charset="UTF-8"')
_NO_STORE = (("Cache-Control", "no-store"),)
_JSON = "application/json"
_METRICS = "text/plain; version=0.0.4; charset=utf-8"


def rss_bytes():
    """The resident set size (VmRSS of /proc/self/status), or None."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def uptime_text(seconds):
    """An uptime as nats-server writes it: ``"45s"``, ``"3m5s"``,
    ``"2h0m5s"``, ``"1d2h0m5s"``, ``"1y3d0h0m0s"``."""
    s = int(seconds)
    years, s = divmod(s, 365 * 86400)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if years:
        return "{}y{}d{}h{}m{}s".format(years, days, hours, minutes, s)
    if days:
        return "{}d{}h{}m{}s".format(days, hours, minutes, s)
    if hours:
        return "{}h{}m{}s".format(hours, minutes, s)
    if minutes:
        return "{}m{}s".format(minutes, s)
    return "{}s".format(s)


class MonitorAuth:
    """The monitoring port's credentials, checked with what
    ``HttpResponder`` calls of the clients' ``Authenticator`` (``required``,
    ``anonymous``, ``needs_kdf``, ``check``, ``authenticate``): ``token``
    (HTTP Bearer) and ``users`` (HTTP Basic, ``{"user", "password"}``: the
    password plain, or a ``fastflow passwd`` hash checked by scrypt once,
    in a worker thread, then remembered)."""

    def __init__(self, token=None, users=()):
        self.token = token.encode("utf-8") if token is not None else None
        self.users = {u["user"]: u["password"] for u in users}
        self.required = self.token is not None or bool(self.users)
        self.anonymous = Principal(None, None, "none")
        self._ok = {}                   # SHA-256 of user:password checked by scrypt

    @staticmethod
    def _key(creds):
        return hashlib.sha256("{}\0{}".format(creds["user"], creds["password"]).encode(
            "utf-8", "surrogatepass")).digest()

    def needs_kdf(self, creds):
        """Whether checking ``creds`` runs scrypt (~50 ms: in a thread)."""
        stored = self.users.get(creds.get("user"))
        return (stored is not None and is_password_hash(stored)
                and self._key(creds) not in self._ok)

    def check(self, creds):
        """The Principal of ``creds`` (``token``, or ``user`` and
        ``password``), or AuthError."""
        if not self.required:
            return self.anonymous
        token = creds.get("token")
        if token is not None:
            if self.token is not None and hmac.compare_digest(
                    token.encode("utf-8", "surrogatepass"), self.token):
                return Principal("token", None, "token")
            raise AuthError("authentication failed")
        user = creds.get("user")
        stored = self.users.get(user)
        if stored is None:
            raise AuthError("authentication failed")
        pw = creds["password"].encode("utf-8", "surrogatepass")
        if not is_password_hash(stored):
            ok = b"\0" not in pw and hmac.compare_digest(pw, stored.encode("utf-8"))
        else:
            key = self._key(creds)
            ok = key in self._ok or verify_password(pw, stored)
            if ok and key not in self._ok:
                if len(self._ok) >= 1024:
                    self._ok.clear()
                self._ok[key] = True
        if not ok:
            raise AuthError("authentication failed")
        return Principal(user, None, "user")

    async def authenticate(self, creds, loop=None):
        """``check``, in a worker thread when it runs scrypt."""
        if not self.needs_kdf(creds):
            return self.check(creds)
        loop = loop or asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.check, creds)


class MonitorConnection(asyncio.Protocol):
    """One connection to the monitoring port: what ``Connection`` is to a
    door's protocol, for a ``MonitorProtocol`` (the members
    ``HttpResponder`` uses), without what makes a client of the engine:
    no subscriptions, output limits or engine counters, not in ``/connz``,
    not counted against ``max_connections``, and it keeps answering while
    the server drains."""

    def __init__(self, monitor):
        self.monitor = monitor
        self.server = monitor.server
        self.cfg = self.server.config
        self.loop = self.server.loop
        self.id = monitor.next_id()
        self.state = ConnState.NEW
        self.transport = None
        self.peer = self.peer_host = "?"
        self.tasks = set()              # password checks under way
        self.close_reason = None
        self.last_in = self.loop.time()
        self._pause = set()
        self._timer = None              # the close grace
        self.stream = None              # the console's event stream it answers with, if any
        self.proto = MonitorProtocol(self)

    def connection_made(self, transport):
        self.transport = transport
        self.peer = _peer(transport)
        self.peer_host = _peer_host(transport)
        mon = self.monitor
        if len(mon.conns) >= MAX_CONNECTIONS:
            self.state = CLOSED
            log.warning("monitoring client %s refused: %d monitoring connections open",
                        self.peer, MAX_CONNECTIONS)
            transport.write(self.proto.refusal(503, "too many monitoring connections ({} "
                                                    "open)".format(MAX_CONNECTIONS)))
            transport.close()
            return
        mon.conns.add(self)
        self.state = READY

    def connection_lost(self, exc):
        self.state = CLOSED
        self.monitor.conns.discard(self)
        if self.stream is not None:
            self.stream.ended()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self.tasks):
            task.cancel()

    def data_received(self, data):
        if self.state >= CLOSING or self.stream is not None:
            return                      # (an event stream's client has nothing more to say)
        self.last_in = self.loop.time()
        proto = self.proto
        try:
            items = proto.parser.feed(data)
        except HttpError as exc:
            if exc.frames:              # the requests ahead of the bad one are answered
                proto.handle(exc.frames)
            if self.state < CLOSING:
                log.info("monitoring client %d (%s): %s", self.id, self.peer, exc)
                self.close(*proto.protocol_error(exc))
            return
        except Exception as exc:
            log.exception("monitoring client %d: error while reading", self.id)
            self.close(500, "internal error: {}".format(exc))
            return
        if items:
            proto.handle(items)

    # a client that sends requests and does not read the answers: no more
    # requests are read until the transport has written what it holds

    def pause_writing(self):
        self.pause("write")

    def resume_writing(self):
        self.resume("write")

    def pause(self, why):
        if not self._pause and self.state < CLOSING:
            self.transport.pause_reading()
        self._pause.add(why)

    def resume(self, why):
        if why not in self._pause:
            return
        self._pause.discard(why)
        if not self._pause and self.state < CLOSING:
            self.transport.resume_reading()

    def track(self, task):
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def close(self, code=None, message=None):
        """Close: the HTTP answer for error ``code`` (if given and a request
        is under way), then the socket."""
        if self.state >= CLOSING:
            return
        self.state = CLOSING
        self.close_reason = message or "closed by the server"
        if self.stream is not None:
            data = self.stream.closing_data(code, message)
        else:
            data = self.proto.close_data(code, message, 0) if code is not None else b""
        for task in list(self.tasks):
            task.cancel()
        try:
            if data:
                self.transport.write(data)
            self.transport.close()
        except (OSError, RuntimeError):     # the transport is gone already
            pass
        self._timer = self.loop.call_later(_CLOSE_GRACE, self._abort)

    def _abort(self):
        self._timer = None
        if self.state != CLOSED:
            self.transport.abort()

    def tick(self, now):
        """Once a second: close it when idle or its request is too slow."""
        if self.state == READY and self.stream is None:
            self.proto.tick(now)


class MonitorProtocol(HttpResponder):
    """The monitoring port's requests on the HTTP stack of the web doors:
    GET (and HEAD) of each endpoint, ``/healthz`` open to anyone."""

    who = "monitoring client"
    routes_doc = "GET / for the list"

    def __init__(self, conn):
        self.conn = conn
        self.monitor = conn.monitor
        self.server = conn.server
        self.cfg = conn.cfg
        self.loop = conn.loop
        self.auth = self.monitor.auth
        self.challenges = self.monitor.challenges
        self._start_http(MAX_BODY)

    # -- HttpResponder's hooks ---------------------------------------------------------

    def write(self, data):
        self.conn.transport.write(data)

    def response_headers(self, req):
        return _NO_STORE

    def public(self, req):
        if not self.auth.required:
            return True
        path = req.path
        if path.rstrip("/") == "/healthz":
            return True
        console = self.monitor.console
        if console is None:
            return False
        # the page's own files hold no data; a browser asking for / is sent to it
        return ((path.startswith("/console/") and path[9:] in _PAGE_NAMES)
                or path == "/console" or (path == "/" and _wants_html(req)))

    def route(self, req):
        if req.path.startswith("/console/") or req.path == "/console":
            return super().route(req)
        if req.path.rstrip("/").count("/") > 1:
            raise HttpError(404, "no such resource: {!r} (see {})".format(
                req.path[:200], self.routes_doc))
        return super().route(req)

    def respond(self, req, status, body=b"", ctype=None, headers=(), close=False):
        # while the server stops, each answer closes its connection
        super().respond(req, status, body, ctype, headers, close or self.server.stopping)

    def refuse(self, req, exc):
        if exc.status in (401, 429):
            self.monitor.auth_failures += 1
            if req is not None and "x-fastflow-console" in req.headers:
                # the console asks for credentials on its own page: no browser dialog
                exc = HttpError(exc.status, exc.message, [
                    h for h in exc.headers if h[0].lower() != "www-authenticate"], exc.close)
        super().refuse(req, exc)

    # -- the endpoints -----------------------------------------------------------------

    def document(self, req, obj, status=200):
        self.respond(req, status, (json.dumps(obj, indent=2, default=str) + "\n").encode(),
                     _JSON)

    def _root(self, req, principal):
        if self.monitor.console is not None and _wants_html(req):
            self.respond(req, 302, b"", None, (("location", "/console/"),))
            return
        self.document(req, {"endpoints": list(ENDPOINTS)})

    def _console(self, req, principal):
        """``/console/``: the page's files, ``feed``, ``api/<view>`` and
        ``tail/<stream>`` (fastflow.server.console)."""
        console = self.monitor.console
        if console is None:
            raise HttpError(404, "the console is off on this server ([monitor] console = "
                                 "false)")
        path = req.path
        if path == "/console":
            self.respond(req, 301, b"", None, (("location", "/console/"),))
            return
        rest = path[9:]
        if rest in _PAGE_NAMES:
            console.serve_file(self, req, rest)
        elif rest == "feed":
            console.open_feed(self, req)
        elif rest.startswith("api/") and "/" not in rest[4:]:
            console.api(self, req, rest[4:])
        elif rest.startswith("tail/") and len(rest) > 5:
            console.open_tail(self, req, rest[5:])
        else:
            raise HttpError(404, "no such console resource: {!r}".format(path[:200]))

    def _healthz(self, req, principal):
        if self.server.stopping:
            self.document(req, {"status": "stopping"}, 503)
        else:
            self.document(req, {"status": "ok"})

    def _varz(self, req, principal):
        self.document(req, self.monitor.varz())

    def _connz(self, req, principal):
        self.document(req, self.monitor.connz(req.params()))

    def _subsz(self, req, principal):
        self.document(req, self.monitor.subsz(req.params()))

    def _streamz(self, req, principal):
        self.document(req, self.monitor.streamz(req.params()))

    def _subscriptionz(self, req, principal):
        self.document(req, self.monitor.subscriptionz(req.params()))

    def _accountz(self, req, principal):
        self.document(req, self.monitor.accountz(req.params()))

    def _metrics(self, req, principal):
        self.respond(req, 200, self.monitor.metrics().encode(), _METRICS)


# first path segment -> method -> handler (HEAD is served by GET's)
MonitorProtocol.routes = {
    "": {"GET": MonitorProtocol._root},
    "healthz": {"GET": MonitorProtocol._healthz},
    "varz": {"GET": MonitorProtocol._varz},
    "connz": {"GET": MonitorProtocol._connz},
    "subsz": {"GET": MonitorProtocol._subsz},
    "streamz": {"GET": MonitorProtocol._streamz},
    "subscriptionz": {"GET": MonitorProtocol._subscriptionz},
    "accountz": {"GET": MonitorProtocol._accountz},
    "metrics": {"GET": MonitorProtocol._metrics},
    "console": {"GET": MonitorProtocol._console},
}

_PAGE_NAMES = ("",) + tuple(STATIC_FILES)


def _wants_html(req):
    """Whether ``req`` is a browser's (its Accept names text/html)."""
    return "text/html" in req.headers.get("accept", "")


class MonitorServer:
    """The HTTP endpoint of a ``Server``.  ``token`` (HTTP Bearer) and
    ``users`` (HTTP Basic, ``{"user", "password"}``: plain or a ``fastflow
    passwd`` hash) protect every endpoint but ``/healthz``."""

    ENDPOINTS = ENDPOINTS

    def __init__(self, server, host, port, token=None, users=(), console=True,
                 console_tail=True):
        self.server = server
        self.host = host
        self.port = port
        self._srv = None
        self.addresses = []
        self.auth = MonitorAuth(token, users)
        self.auth_required = self.auth.required
        self.challenges = ((_BEARER,) if token is not None else ()) + (
            (_BASIC,) if users else ())
        self.auth_failures = 0          # requests answered 401 or 429
        self.conns = set()              # the open MonitorConnections
        self._next_id = 0
        self._tick_timer = None
        self._cpu_at = (time.monotonic(), _cpu_seconds())   # the last cpu sample
        self._cpu_percent = None
        self.console = Console(self, console_tail) if console else None

    def next_id(self):
        self._next_id += 1
        return self._next_id

    async def start(self):
        loop = asyncio.get_running_loop()
        self._srv = await loop.create_server(lambda: MonitorConnection(self), self.host,
                                             self.port, reuse_address=True)
        self.addresses = [s.getsockname() for s in self._srv.sockets]
        self._tick_timer = loop.call_later(1.0, self._tick)
        if self.console is not None:
            self.console.start()

    def _tick(self):
        loop = self.server.loop
        self._tick_timer = loop.call_later(1.0, self._tick)
        now = loop.time()
        for conn in list(self.conns):
            conn.tick(now)

    def close(self):
        """Stop listening and close every monitoring connection."""
        if self._srv is not None:
            self._srv.close()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None
        if self.console is not None:
            self.console.close()
        for conn in list(self.conns):
            conn.close()


    # -- the documents ------------------------------------------------------------------------

    def varz(self):
        srv = self.server
        cfg = srv.config
        flow = srv.flow
        now = srv.loop.time()
        st = srv.stats()
        fs = flow.stats() if not flow.closed else {}
        cpu = _cpu_seconds()
        d = {
            "server_id": srv.id, "server_name": srv.name, "version": __version__,
            "proto": 1, "python": platform.python_version(), "loop": srv.loop_name,
            "core": "native" if COMPILED else "pure-Python", "pid": os.getpid(),
            "host": cfg.host, "port": srv.port, "nats_port": srv.nats_port,
            "mqtt_port": srv.mqtt_port,
            "tls_required": cfg.tls,
            "tls_verify": cfg.tls_verify, "auth": srv.auth.describe(),
            "start": _rfc3339(srv.start_time), "now": _rfc3339(time.time()),
            "uptime": uptime_text(now - srv.t0), "uptime_seconds": round(now - srv.t0, 3),
            "mem": rss_bytes() or 0, "cores": os.cpu_count() or 1, "cpu": self.cpu_percent(),
            "cpu_seconds": round(cpu, 3),
            "max_connections": srv.max_connections, "max_payload": cfg.max_payload,
            "max_pending": cfg.max_pending, "max_control_line": cfg.nats_max_control,
            "http_host": self.host, "http_port": self.addresses[0][1] if self.addresses
            else self.port,
        }
        d.update(st)
        d["conflate_subjects"] = list(cfg.conflate_subjects)
        if srv.cluster is not None:     # the backbone (docs/cluster.md "Monitoring")
            d["cluster"] = srv.cluster.stats()
            if srv.replicated is not None:
                d["cluster"]["jetstream"] = srv.replicated.info()
        d["limits"] = {k: getattr(cfg, k) for k in (
            "max_payload", "max_control", "nats_max_control", "max_subscriptions", "max_pending",
            "max_pending_total", "max_connect", "max_preauth_bytes", "write_high_water",
            "write_low_water", "stall_timeout", "ping_interval", "max_pings_out",
            "auth_timeout", "drain_timeout", "mqtt_max_queued")}
        d["limits"]["max_connections"] = srv.max_connections    # as the fd limit allows
        d["matcher"] = fs.get("matcher", {})
        d["flow"] = {k: fs[k] for k in (
            "published", "delivered", "stored", "dropped_no_interest", "dropped_slow_consumer",
            "dropped_loop", "rejected_by_stream", "conflated", "callback_errors",
            "advisories") if k in fs}
        d["flow"]["data_dir"] = flow.data_dir
        d["flow"]["local_subscriptions"] = len(fs.get("subscriptions", ()))
        d["streams"] = {n: {"events": s.get("events", 0), "bytes": s.get("bytes", 0),
                            "first_seq": s.get("first_seq", 0), "last_seq": s.get("last_seq", 0),
                            "stored": s.get("stored", 0), "rejected": s.get("rejected", 0)}
                        for n, s in fs.get("streams", {}).items()}
        d["consumers"] = len(fs.get("consumers", {}))
        if self.console is not None:    # the operator console (docs/console.md)
            d["console"] = self.console.stats()
        return d

    def cpu_percent(self):
        """The process's CPU use (percent of one core, a float) since the
        previous sample, sampled at most every _CPU_WINDOW seconds."""
        t, c = time.monotonic(), _cpu_seconds()
        t0, c0 = self._cpu_at
        if self._cpu_percent is None or t - t0 >= _CPU_WINDOW:
            if t > t0:
                self._cpu_percent = round(100.0 * max(0.0, c - c0) / (t - t0), 2)
                self._cpu_at = (t, c)
            else:
                self._cpu_percent = 0.0
        return float(self._cpu_percent)

    def _account(self, q):
        """The account a per-engine endpoint describes: ``?acc=<name>``
        ($G by default); a KeyError names an unknown one."""
        name = q.get("acc", "$G") if q else "$G"
        acct = self.server.accounts.get(name)
        if acct is None:
            raise KeyError(name)
        return acct

    def subsz(self, q=None):
        """The subscriptions' matcher as nats-server's /subsz shows its
        sublist (``?acc=``: that account's engine); ``avg_fanout`` is the
        engine's deliveries per publish, ``max_fanout`` the matcher's own
        figure when it keeps one."""
        try:
            flow = self._account(q).flow
        except KeyError as exc:
            return {"server_id": self.server.id, "error": "no account {}".format(exc)}
        fs = flow.stats() if not flow.closed else {}
        m = fs.get("matcher", {})
        matches = m.get("matches", 0)
        published = fs.get("published", 0)
        return {
            "server_id": self.server.id, "now": _rfc3339(time.time()),
            "num_subscriptions": m.get("subscriptions", 0),
            "num_cache": m.get("cache_entries", 0),
            "num_inserts": m.get("inserts", 0),
            "num_removes": m.get("removes", 0),
            "num_matches": matches,
            "cache_hit_rate": round(m.get("cache_hits", 0) / matches, 4) if matches else 0.0,
            "max_fanout": int(m.get("max_fanout", 0)),
            "avg_fanout": round(fs.get("delivered", 0) / published, 4) if published else 0.0,
        }

    def connz(self, q):
        srv = self.server
        now = srv.loop.time()
        try:
            limit = max(0, int(q.get("limit", 1024)))
            offset = max(0, int(q.get("offset", 0)))
        except ValueError:
            limit, offset = 1024, 0
        sort = q.get("sort", "cid")
        if sort not in _SORTS:
            sort = "cid"
        subs = q.get("subs", "") in ("1", "true", "yes", "detail")
        conns = [c.stats(now, subs) for c in list(srv.conns.values())]
        conns.sort(key=lambda c: c[sort], reverse=sort != "cid")
        return {"server_id": srv.id, "now": _rfc3339(time.time()),
                "num_connections": len(conns), "total": srv.n_total, "offset": offset,
                "limit": limit, "sort": sort, "connections": conns[offset:offset + limit]}

    def streamz(self, q=None):
        """The streams of an account's engine (``?acc=``, $G by default)."""
        try:
            flow = self._account(q).flow
        except KeyError as exc:
            return {"server_id": self.server.id, "error": "no account {}".format(exc),
                    "streams": {}}
        if flow.closed:
            return {"streams": {}}
        out = {}
        for name, st in flow.streams().items():
            info = st.info()
            info.pop("log", None)
            info["losses"] = st.log.losses     # records lost to damaged files (at open)
            out[name] = info
        return {"server_id": self.server.id, "streams": out}

    def accountz(self, q):
        """The accounts: exports, imports with their traffic, streams,
        connections (``acc``: one account)."""
        srv = self.server
        accounts = srv.accounts
        conns = {}
        for c in list(srv.conns.values()):
            conns[c.account.name] = conns.get(c.account.name, 0) + 1
        out = {}
        totals = srv.meter.totals()
        for acct in accounts:
            if "acc" in q and q["acc"] != acct.name:
                continue
            info = acct.info() if not acct.flow.closed else {"name": acct.name}
            info["connections"] = conns.get(acct.name, 0)
            m = srv.meter.account(acct.name, totals)
            info["usage"] = m["usage"]
            info["quotas"] = srv.quotas.info(acct.name)
            info["users"] = m["users"]
            if acct.flow.trust is not None:
                info["trust"] = acct.flow.trust.stats()
            for d in info.get("imports", ()):
                d["usage"] = m["imports"].get(d["key"], {})
            if q.get("subs", "") in ("1", "true", "yes"):
                info["subscriptions_detail"] = [
                    {"cid": c.id, "user": c.user, "sid": sid, "subject": p, "queue": qg,
                     "delivered": t.delivered, "delivered_bytes": t.delivered_bytes,
                     "dropped": t.dropped}
                    for c in list(srv.conns.values()) if c.account is acct
                    for sid, (t, p, qg) in list(c.subs.items())]
            out[acct.name] = info
        return {"server_id": srv.id, "now": _rfc3339(time.time()),
                "enabled": accounts.enabled, "system_account": accounts.system.name,
                "since": _rfc3339(srv.meter.since), "accounts": out}

    def subscriptionz(self, q):
        """The Subscriptions API's subscriptions with their delivery
        counters (``offset``, ``limit``: a page; ``id``: one)."""
        try:
            mgr = self._account(q).subscriptions
        except KeyError as exc:
            return {"server_id": self.server.id, "error": "no account {}".format(exc),
                    "enabled": False, "total": 0, "subscriptions": []}
        if mgr is None:
            return {"server_id": self.server.id, "enabled": False, "total": 0,
                    "subscriptions": []}
        try:
            limit = max(0, int(q.get("limit", 1024)))
            offset = max(0, int(q.get("offset", 0)))
        except ValueError:
            limit, offset = 1024, 0
        subs = list(mgr.subs.values())
        if "id" in q:
            subs = [s for s in subs if s.id == q["id"]]
        return {"server_id": self.server.id, "enabled": True, "total": len(subs),
                "offset": offset, "limit": limit,
                "subscriptions": [s.info() for s in subs[offset:offset + limit]]}

    def metrics(self):
        srv = self.server
        flow = srv.flow
        st = srv.stats()
        fs = flow.stats() if not flow.closed else {}
        m = fs.get("matcher", {})
        lines = []

        def metric(name, kind, help_, samples):
            lines.append("# HELP {} {}".format(name, help_))
            lines.append("# TYPE {} {}".format(name, kind))
            for labels, value in samples:
                if value is None:
                    continue
                if labels:
                    lab = ",".join('{}="{}"'.format(k, _esc(v)) for k, v in labels.items())
                    lines.append("{}{{{}}} {}".format(name, lab, _num(value)))
                else:
                    lines.append("{} {}".format(name, _num(value)))

        def one(name, kind, help_, value):
            metric(name, kind, help_, [(None, value)])

        metric("fastflow_info", "gauge", "Server build and identity (always 1).",
               [({"version": __version__, "server_id": srv.id, "server_name": srv.name,
                  "loop": srv.loop_name, "core": "native" if COMPILED else "pure-Python",
                  "python": platform.python_version()}, 1)])
        one("fastflow_uptime_seconds", "gauge", "Seconds since the server started.",
            round(srv.loop.time() - srv.t0, 3))
        one("fastflow_connections", "gauge", "Open client connections.", st["connections"])
        one("fastflow_nats_connections", "gauge", "Open client connections of the NATS door.",
            st["nats_connections"])
        mq = st.get("mqtt")
        if mq is not None:              # the MQTT door (docs/mqtt.md "Monitoring")
            one("fastflow_mqtt_connections", "gauge", "Open client connections of the MQTT "
                "door.", st["mqtt_connections"])
            for key, kind, help_ in (
                    ("sessions_live", "gauge", "MQTT sessions with their client connected."),
                    ("sessions_away", "gauge", "MQTT sessions kept while their client is away."),
                    ("subscriptions", "gauge", "MQTT subscriptions (filters) of all sessions."),
                    ("retained", "gauge", "MQTT retained messages."),
                    ("queued", "gauge", "MQTT QoS 1/2 messages waiting in sessions."),
                    ("inflight", "gauge", "MQTT QoS 1/2 messages sent, not yet acknowledged."),
                    ("dropped", "counter", "MQTT messages dropped at a full session queue."),
                    ("too_large", "counter", "MQTT PUBLISHes over max_payload, dropped.")):
                one("fastflow_mqtt_{}{}".format(key, "_total" if kind == "counter" else ""),
                    kind, help_, mq[key])
        if srv.cluster is not None:     # the backbone (docs/cluster.md "Monitoring")
            cs = srv.cluster.stats()
            one("fastflow_cluster_connected", "gauge", "1 while the link to the NATS backbone "
                "is up.", int(cs["connected"]))
            one("fastflow_cluster_nodes", "gauge", "Other nodes heard from on the backbone.",
                cs["nodes"])
            one("fastflow_cluster_remote_interest", "gauge", "Patterns other nodes want from "
                "this one (forwarders).", cs["remote_interest"])
            one("fastflow_cluster_local_interest", "gauge", "Patterns this node subscribes "
                "to on the backbone.", cs["local_interest"])
            for key, help_ in (("out_msgs", "Events forwarded to the backbone."),
                               ("out_bytes", "Record bytes forwarded to the backbone."),
                               ("in_msgs", "Events received from the backbone."),
                               ("in_bytes", "Bytes read from the backbone."),
                               ("in_refused", "Events from the backbone refused."),
                               ("reconnects", "Reconnections to the backbone."),
                               ("dropped", "Messages dropped at the backbone's full output.")):
                one("fastflow_cluster_{}_total".format(key), "counter", help_, cs[key])
            if srv.replicated is not None:
                ri = srv.replicated.info()
                acks = ri["acks"]
                one("fastflow_cluster_js_acks_pending", "gauge", "Publishes waiting for "
                    "JetStream's acknowledgement.", acks["pending"])
                for key, help_ in (("acked", "Publishes JetStream acknowledged."),
                                   ("errors", "Publishes JetStream refused."),
                                   ("timeouts", "Publishes JetStream did not answer in time.")):
                    one("fastflow_cluster_js_{}_total".format(key), "counter", help_, acks[key])
                ms = ri["streams"].values()
                one("fastflow_cluster_js_mirrors_behind", "gauge", "Replicated streams whose "
                    "mirror is not taking deliveries now.",
                    sum(1 for m in ms if m["state"] != "mirroring"))
                one("fastflow_cluster_js_mirrored_total", "counter", "Events the mirrors "
                    "stored into the local caches.", sum(m["stored"] for m in ms))
                one("fastflow_cluster_js_mirror_resets_total", "counter", "Mirror consumers "
                    "made again (a gap, a stall, a reconnect).", sum(m["resets"] for m in ms))
        one("fastflow_connections_total", "counter", "Client connections accepted.",
            st["total_connections"])
        one("fastflow_connections_rejected_total", "counter",
            "Connections refused at max_connections.", st["rejected_connections"])
        one("fastflow_subscriptions", "gauge", "Network subscriptions.", st["subscriptions"])
        one("fastflow_in_msgs_total", "counter", "Events published by clients.", st["in_msgs"])
        one("fastflow_in_bytes_total", "counter", "Bytes read from clients.", st["in_bytes"])
        one("fastflow_out_msgs_total", "counter", "Messages sent to clients.", st["out_msgs"])
        one("fastflow_out_bytes_total", "counter", "Bytes written to clients.", st["out_bytes"])
        one("fastflow_pending_bytes", "gauge", "Output not yet taken by clients.",
            st["pending_bytes"])
        one("fastflow_slow_consumers_total", "counter",
            "Connections cut as slow consumers.", st["slow_consumers"])
        one("fastflow_conflated_total", "counter",
            "Messages replaced by a newer one of their subject while their connection was "
            "behind (conflating subscriptions).", st["conflated"])
        one("fastflow_stalls_total", "counter",
            "Times a subscriber's socket filled up (publishers paused).", st["stalls"])
        one("fastflow_paused_publishers", "gauge",
            "Publishers paused for stalled subscribers.", st["paused_publishers"])
        one("fastflow_auth_failures_total", "counter", "Failed or timed-out authentications.",
            st["auth_failures"])
        one("fastflow_protocol_errors_total", "counter", "Connections closed for malformed "
            "frames.", st["protocol_errors"])
        one("fastflow_permission_denied_total", "counter", "Requests refused by permissions.",
            st["permission_denied"])
        for key, kind, help_ in (
                ("published", "counter", "Events published to the engine."),
                ("delivered", "counter", "Deliveries to subscriptions."),
                ("stored", "counter", "Events appended to streams."),
                ("dropped_no_interest", "counter", "Events with no subscriber and no stream."),
                ("dropped_slow_consumer", "counter", "Deliveries dropped at a full queue."),
                ("conflated", "counter", "Pending deliveries replaced by a newer one of "
                                         "their subject (conflation)."),
                ("dropped_loop", "counter", "Events stopped by the loop breaker."),
                ("rejected_by_stream", "counter", "Events a full stream refused."),
                ("advisories", "counter", "Advisories published.")):
            one("fastflow_flow_{}_total".format(key), kind, help_, fs.get(key))
        streams = fs.get("streams", {})
        metric("fastflow_stream_events", "gauge", "Events retained per stream.",
               [({"stream": n}, s.get("events", 0)) for n, s in streams.items()])
        metric("fastflow_stream_bytes", "gauge", "Bytes retained per stream.",
               [({"stream": n}, s.get("bytes", 0)) for n, s in streams.items()])
        metric("fastflow_stream_last_seq", "gauge", "Last sequence per stream.",
               [({"stream": n}, s.get("last_seq", 0)) for n, s in streams.items()])
        consumers = fs.get("consumers", {})
        metric("fastflow_consumer_pending", "gauge", "Unacknowledged deliveries per consumer.",
               [({"stream": c["stream"], "consumer": c["name"]}, c["pending"])
                for c in consumers.values()])
        metric("fastflow_consumer_lag", "gauge", "Events stored after the ack floor.",
               [({"stream": c["stream"], "consumer": c["name"]}, c["lag"])
                for c in consumers.values()])
        mgr = srv.subscriptions
        if mgr is not None:
            infos = [s.info() for s in mgr.subs.values() if s.spec is not None]
            one("fastflow_api_subscriptions", "gauge", "Subscriptions-API subscriptions.",
                len(mgr.subs))
            for key, kind, help_ in (
                    ("delivered", "counter", "Events delivered to the sink."),
                    ("failed", "counter", "Deliveries that failed (each attempt)."),
                    ("retried", "counter", "Deliveries tried again."),
                    ("dead", "counter", "Events given up on (dead-lettered)."),
                    ("lost", "counter", "Events retention removed before delivery."),
                    ("lag", "gauge", "Events stored after the subscription's floor."),
                    ("pending", "gauge", "Events matched, not yet delivered.")):
                metric("fastflow_api_subscription_{}{}".format(
                    key, "_total" if kind == "counter" else ""), kind, help_,
                    [({"id": i["id"], "stream": i["stream"]}, i[key]) for i in infos])
        # metering: one label set per account and per import (both bounded by the config)
        totals = srv.meter.totals()
        accts = totals["accounts"]
        for key, help_ in (
                ("in_msgs", "Events an account's clients published."),
                ("in_bytes", "Payload bytes an account's clients published."),
                ("out_msgs", "Events delivered to an account's subscribers."),
                ("out_bytes", "Payload bytes delivered to an account's subscribers."),
                ("imported_msgs", "Events that crossed into an account by its imports."),
                ("imported_bytes", "Payload bytes that crossed into an account."),
                ("exported_msgs", "Events that crossed out of an account."),
                ("exported_bytes", "Payload bytes that crossed out of an account."),
                ("stored_msgs", "Events an account's streams stored."),
                ("stored_bytes", "Payload bytes an account's streams stored."),
                ("replayed_msgs", "Stored events an account's clients read back."),
                ("replayed_bytes", "Stored payload bytes an account's clients read back.")):
            metric("fastflow_account_{}_total".format(key), "counter", help_,
                   [({"account": a}, u.get(key, 0)) for a, u in sorted(accts.items())])
        conns_by = {}
        for c in list(srv.conns.values()):
            conns_by[c.account.name] = conns_by.get(c.account.name, 0) + 1
        metric("fastflow_account_connections", "gauge", "Open connections per account.",
               [({"account": a.name}, conns_by.get(a.name, 0)) for a in srv.accounts])
        # the trust policies (docs/provenance.md): publishes checked, refused by reason
        trusted = [(a.name, a.flow.trust.stats()) for a in srv.accounts
                   if a.flow.trust is not None and not a.flow.closed]
        metric("fastflow_trust_checked_total", "counter", "Publishes a trust policy checked.",
               [({"account": a}, st["checked"]) for a, st in trusted])
        metric("fastflow_trust_refused_total", "counter", "Publishes a trust policy refused, "
               "by reason.", [({"account": a, "reason": r}, n) for a, st in trusted
                              for r, n in sorted(st["refused"].items())])
        imps = []
        for a in srv.accounts:
            for imp, _t, _b, _p in a.wired:
                u = totals["imports"].get(import_key(a.name, imp), {})
                imps.append(({"account": a.name, "from": imp.account, "kind": imp.kind,
                              "subject": imp.subject}, u))
        metric("fastflow_import_msgs_total", "counter", "Events that crossed by an import "
               "(a service's: its requests).", [(lab, u.get("msgs", 0)) for lab, u in imps])
        metric("fastflow_import_bytes_total", "counter", "Payload bytes that crossed by an "
               "import.", [(lab, u.get("bytes", 0)) for lab, u in imps])
        for key, kind, help_ in (
                ("subscriptions", "gauge", "Matcher subscriptions (network, local, streams)."),
                ("matches", "counter", "Matcher lookups."),
                ("cache_hits", "counter", "Matcher result-cache hits."),
                ("cache_misses", "counter", "Matcher result-cache misses."),
                ("cache_entries", "gauge", "Matcher result-cache entries."),
                ("cache_evictions", "counter", "Matcher result-cache evictions."),
                ("memory_bytes", "gauge", "Matcher memory.")):
            if key in m:
                suffix = "_total" if kind == "counter" else ""
                one("fastflow_matcher_{}{}".format(key, suffix), kind, help_, m[key])
        one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
            rss_bytes())
        one("process_cpu_seconds_total", "counter", "User and system CPU time in seconds.",
            _cpu_seconds())
        one("process_start_time_seconds", "gauge", "Start time of the process (Unix seconds).",
            srv.start_time)
        return "\n".join(lines) + "\n"


def _esc(v):
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _cpu_seconds():
    cpu = os.times()
    return cpu.user + cpu.system


def _num(v):
    """A sample value: an integer as one, a float in its shortest form
    without binary noise (0.1 + 0.2 -> ``0.3``, 3.0 -> ``3``)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    v = float(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return "{:.15g}".format(v)
