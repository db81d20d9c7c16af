"""The monitoring endpoint: a tiny HTTP/1.1 server (GET and HEAD only, one
request per connection, ``Connection: close``) on its own port.

``/healthz``  200 ``{"status": "ok"}`` (503 while stopping)
``/varz``     the server: id, version, uptime, traffic, limits, memory, the
              matcher's and the engine's counters, streams (the fields
              nats-server has carry its names and types: ``mem`` bytes,
              ``cpu`` percent, ``uptime`` like ``"1h2m3s"``, ...)
``/connz``    the connections (``?limit=&offset=&sort=&subs=1``)
``/subsz``    the subscriptions' matcher, in nats-server's shape
``/streamz``  the streams and their consumers
``/metrics``  Prometheus text format 0.0.4

With ``monitor.token`` or ``monitor.users`` every endpoint but
``/healthz`` needs ``Authorization: Bearer <token>`` or HTTP Basic
credentials (401 with ``WWW-Authenticate`` otherwise).
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import os
import platform
import time
from urllib.parse import parse_qs, urlsplit

from fastflow._impl import COMPILED
from fastflow._version import __version__

__all__ = ("MonitorServer",)

log = logging.getLogger("fastflow.server")

_MAX_REQUEST = 16384
_TIMEOUT = 10.0
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
ENDPOINTS = ("/healthz", "/varz", "/connz", "/subsz", "/streamz", "/metrics")
_CPU_WINDOW = 0.5                       # seconds: the least time /varz's cpu is measured over
_SORTS = ("cid", "in_msgs", "out_msgs", "in_bytes", "out_bytes", "pending_bytes",
          "subscriptions", "uptime", "idle")


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


class _HTTP(asyncio.Protocol):
    def __init__(self, monitor):
        self.monitor = monitor
        self.buf = bytearray()
        self.transport = None
        self.peer = "?"
        self.timer = None
        self.done = False

    def connection_made(self, transport):
        self.transport = transport
        p = transport.get_extra_info("peername")
        self.peer = p[0] if isinstance(p, tuple) and p else str(p)
        self.timer = asyncio.get_running_loop().call_later(_TIMEOUT, transport.abort)

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data):
        if self.done:
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            end = self.buf.find(b"\n\n")
        if end < 0:
            if len(self.buf) > _MAX_REQUEST:
                self.respond(431, "text/plain", b"request too large\n")
            return
        line = bytes(self.buf[:self.buf.find(b"\n")]).decode("latin-1").strip()
        parts = line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.respond(400, "text/plain", b"bad request\n")
            return
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            self.respond(405, "text/plain", b"only GET and HEAD\n", {"Allow": "GET, HEAD"})
            return
        mon = self.monitor
        if mon.auth_required and urlsplit(target).path.rstrip("/") != "/healthz":
            creds = _authorization(bytes(self.buf[:end]))
            if creds is None:
                self.unauthorized()
                return
            # credentials are a guess like a CONNECT's: the server's login
            # back-off for the address applies
            throttle = mon.server.throttle
            wait = throttle.reserve(self.peer) if throttle is not None else 0.0
            if wait is None:
                self.unauthorized()
                return
            ok = mon.check_credentials(creds) if not wait else None
            if ok is None:              # wait, or a hashed password: scrypt in a thread
                self.done = True
                task = asyncio.get_running_loop().create_task(
                    self._answer_later(creds, method, target, wait))
                mon.tasks.add(task)
                task.add_done_callback(mon.tasks.discard)
                return
            if not self._checked(ok):
                return
        self.answer(method, target)

    def _checked(self, ok):
        """Count a credentials check for the address; 401 when it failed."""
        throttle = self.monitor.server.throttle
        if throttle is not None:
            (throttle.succeeded if ok else throttle.failed)(self.peer)
        if not ok:
            self.unauthorized()
        return ok

    async def _answer_later(self, creds, method, target, wait):
        if wait:
            await asyncio.sleep(wait)
        ok = self.monitor.check_credentials(creds)
        if ok is None:
            ok = await asyncio.get_running_loop().run_in_executor(
                None, self.monitor.check_credentials, creds, True)
        if self.transport.is_closing():
            return
        if self._checked(ok):
            self.answer(method, target)

    def unauthorized(self):
        mon = self.monitor
        mon.auth_failures += 1
        challenges = []
        if mon.token is not None:
            challenges.append(("WWW-Authenticate", 'Bearer realm="fastflow"'))
        if mon.users:
            challenges.append(("WWW-Authenticate", 'Basic realm="fastflow", charset="UTF-8"'))
        self.respond(401, "text/plain", b"authentication required\n", challenges)

    def answer(self, method, target):
        try:
            status, ctype, body = self.monitor.route(target)
        except Exception as exc:       # never take the server down
            log.exception("monitor: %s failed", target)
            status, ctype, body = 503, "text/plain", "error: {}\n".format(exc).encode()
        self.respond(status, ctype, body, head=method == "HEAD")

    def respond(self, status, ctype, body, headers=None, head=False):
        self.done = True
        lines = ["HTTP/1.1 {} {}".format(status, _REASONS.get(status, "")),
                 "Content-Type: " + ctype, "Content-Length: {}".format(len(body)),
                 "Connection: close", "Cache-Control: no-store",
                 "Server: fastflow/" + __version__]
        for k, v in (headers.items() if isinstance(headers, dict) else headers or ()):
            lines.append("{}: {}".format(k, v))
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.transport.write(out if head else out + body)
        self.transport.close()


def _authorization(head):
    """(scheme, credentials) of a request's Authorization header, or None."""
    for line in head.split(b"\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"authorization":
            scheme, _, cred = value.strip().partition(b" ")
            return scheme.lower().decode("latin-1"), cred.strip()
    return None


class MonitorServer:
    """The HTTP endpoint of a ``Server``.  ``token`` (HTTP Bearer) and
    ``users`` (HTTP Basic, ``{"user", "password"}``: plain or a ``fastflow
    passwd`` hash) protect every endpoint but ``/healthz``."""

    ENDPOINTS = ENDPOINTS

    def __init__(self, server, host, port, token=None, users=()):
        self.server = server
        self.host = host
        self.port = port
        self._srv = None
        self.addresses = []
        self.token = token.encode("utf-8") if token is not None else None
        self.users = {u["user"].encode("utf-8"): u["password"] for u in users}
        self.auth_required = self.token is not None or bool(self.users)
        self.auth_failures = 0
        self.tasks = set()
        self._ok = {}                   # SHA-256 of Basic credentials checked by scrypt
        self._cpu_at = (time.monotonic(), _cpu_seconds())   # the last cpu sample
        self._cpu_percent = None

    def check_credentials(self, creds, kdf=False):
        """Whether ``creds`` ((scheme, bytes) or None) are good; None when
        that needs a scrypt run and ``kdf`` is false."""
        from fastflow.server.auth import is_password_hash, verify_password

        if creds is None:
            return False
        scheme, cred = creds
        if scheme == "bearer" and self.token is not None:
            return hmac.compare_digest(cred, self.token)
        if scheme != "basic" or not self.users:
            return False
        try:
            user, sep, pw = base64.b64decode(cred, validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        stored = self.users.get(user)
        if not sep or stored is None:
            return False
        if not is_password_hash(stored):
            return b"\0" not in pw and hmac.compare_digest(pw, stored.encode("utf-8"))
        key = hashlib.sha256(cred).digest()
        if key in self._ok:
            return True
        if not kdf:
            return None
        if verify_password(pw, stored):
            if len(self._ok) >= 1024:
                self._ok.clear()
            self._ok[key] = True
            return True
        return False

    async def start(self):
        loop = asyncio.get_running_loop()
        self._srv = await loop.create_server(lambda: _HTTP(self), self.host, self.port,
                                             reuse_address=True)
        self.addresses = [s.getsockname() for s in self._srv.sockets]

    def close(self):
        if self._srv is not None:
            self._srv.close()
        for task in list(self.tasks):
            task.cancel()

    # -- routing ---------------------------------------------------------------------------

    def route(self, target):
        url = urlsplit(target)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        if path == "/":
            return self._json({"endpoints": list(ENDPOINTS)})
        if path == "/healthz":
            if self.server.stopping:
                return self._json({"status": "stopping"}, 503)
            return self._json({"status": "ok"})
        if path == "/varz":
            return self._json(self.varz())
        if path == "/connz":
            return self._json(self.connz(q))
        if path == "/subsz":
            return self._json(self.subsz())
        if path == "/streamz":
            return self._json(self.streamz())
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics().encode()
        return self._json({"error": "not found: {}".format(url.path)}, 404)

    @staticmethod
    def _json(obj, status=200):
        return status, "application/json", (json.dumps(obj, indent=2, default=str) + "\n").encode()

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
        d["limits"] = {k: getattr(cfg, k) for k in (
            "max_payload", "max_control", "nats_max_control", "max_subscriptions", "max_pending",
            "max_pending_total", "max_connect", "max_preauth_bytes", "write_high_water",
            "write_low_water", "stall_timeout", "ping_interval", "max_pings_out",
            "auth_timeout", "drain_timeout")}
        d["limits"]["max_connections"] = srv.max_connections    # as the fd limit allows
        d["matcher"] = fs.get("matcher", {})
        d["flow"] = {k: fs[k] for k in (
            "published", "delivered", "stored", "dropped_no_interest", "dropped_slow_consumer",
            "dropped_loop", "rejected_by_stream", "callback_errors", "advisories") if k in fs}
        d["flow"]["data_dir"] = flow.data_dir
        d["flow"]["local_subscriptions"] = len(fs.get("subscriptions", ()))
        d["streams"] = {n: {"events": s.get("events", 0), "bytes": s.get("bytes", 0),
                            "first_seq": s.get("first_seq", 0), "last_seq": s.get("last_seq", 0),
                            "stored": s.get("stored", 0), "rejected": s.get("rejected", 0)}
                        for n, s in fs.get("streams", {}).items()}
        d["consumers"] = len(fs.get("consumers", {}))
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

    def subsz(self):
        """The subscriptions' matcher as nats-server's /subsz shows its
        sublist; ``avg_fanout`` is the engine's deliveries per publish,
        ``max_fanout`` the matcher's own figure when it keeps one."""
        flow = self.server.flow
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

    def streamz(self):
        flow = self.server.flow
        if flow.closed:
            return {"streams": {}}
        out = {}
        for name, st in flow.streams().items():
            info = st.info()
            info.pop("log", None)
            info["losses"] = st.log.losses     # records lost to damaged files (at open)
            out[name] = info
        return {"server_id": self.server.id, "streams": out}

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
