"""``fastflow serve``: the network broker.

One process, one event loop (uvloop when installed), one engine
(``fastflow.Flow``, in memory or file-backed) behind the native protocol's
front door (``fastflow.server.native``), the NATS door
(``fastflow.server.nats``, with ``--nats-port``) and an HTTP monitoring
endpoint (``fastflow.server.monitor``); every door's connections share one
lifecycle (``fastflow.server.connection``).  SIGINT/SIGTERM drain: stop
accepting, stop reading, flush the pending output, ``flow.flush()`` and
close; a second signal stops at once.  docs/server.md is the manual.
"""

import asyncio
import base64
import functools
import logging
import os
import platform
import signal
import ssl
import sys
import threading
import time

from fastflow._aio import run as run_loop
from fastflow._impl import COMPILED
from fastflow._version import __version__
from fastflow.errors import FastflowError
from fastflow.accounts import Accounts, account_data_dir
from fastflow.server.checkpoints import Checkpointer
from fastflow.flow import Flow
from fastflow.server.auth import Authenticator, LoginThrottle, _pattern_inside
from fastflow.server.config import (
    LOG_LEVELS,
    LOOPS,
    ConfigError,
    ServerConfig,
    apply_args,
    load_config,
    stream_spec,
)
from fastflow.server.connection import CLOSED, CLOSING, READY, Connection
from fastflow.server.metering import Meter
from fastflow.server.native import NativeProtocol
from fastflow.server.quotas import QuotaExceeded, Quotas

__all__ = ("Server", "add_serve_arguments", "run_serve")

log = logging.getLogger("fastflow.server")


def raise_fd_limit():
    """Raise the soft RLIMIT_NOFILE to the hard limit (as the Go runtime
    does for nats-server); returns the soft limit then (None: unknown or
    unlimited)."""
    try:
        import resource
    except ImportError:                 # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return None if soft == resource.RLIM_INFINITY else soft


def fd_connection_limit(configured, nofile):
    """``max_connections`` that the file-descriptor limit ``nofile`` allows:
    it keeps a reserve for the listeners, stream segments, monitoring
    requests and the loop (32 + a tenth, up to 4096), so that clients past
    the limit are refused with the documented error instead of finding
    accept() failing and /healthz hanging."""
    if not nofile:
        return configured
    fit = max(1, nofile - min(4096, 32 + nofile // 10))
    return min(configured, fit) if configured else fit


def _fmt_size(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return "{} {}".format(n // size, unit)
    return "{} B".format(n)


def _addr(sockname):
    if isinstance(sockname, tuple):
        host, port = sockname[0], sockname[1]
        return "[{}]:{}".format(host, port) if ":" in host else "{}:{}".format(host, port)
    return str(sockname)


def loop_factory(kind):
    """(name, factory) of the event loop for ``--loop`` (``auto``: uvloop
    when installed)."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed "
                                  "(pip install uvloop, or use --loop asyncio)") from None
        else:
            return "uvloop " + uvloop.__version__, uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


class Server:
    """The broker: ``await start()``, ``await serve_forever()`` (until
    stopped or signalled), ``await stop(drain=True)``.

    ``flow``: an engine to serve (the server then flushes it at stop but
    does not close it); by default the server makes one from the config
    (``data_dir``) and closes it at stop.
    """

    def __init__(self, config=None, flow=None):
        self.config = config if config is not None else ServerConfig()
        self.flow = flow
        self._own_flow = flow is None
        self.id = base64.b32encode(os.urandom(10)).decode("ascii")
        self.name = self.config.name or self.id
        self.loop = None
        self.loop_name = None
        self.auth = None
        self.throttle = None            # LoginThrottle
        self.max_connections = self.config.max_connections    # as the fd limit allows
        self.ssl_context = None
        self.conns = {}                 # client id -> Connection
        self.stalled_conns = {}         # Connection -> loop time its writing paused
        self._stall_paused = set()      # publishers paused for stalled subscribers
        self._paused_since = 0.0        # loop time the first of them was paused
        self._stall_timer = None
        self._tick_timer = None
        self.checkpoints = None         # server/checkpoints.py, from start()
        self._listener = None
        self._nats_listener = None
        self._mqtt_listener = None
        self.mqtt_port = None           # the MQTT door's port (None: off)
        self.mqtt_sessions = None       # its sessions and retained messages
        self._http_listener = None
        self.monitor = None
        self.subscriptions = None       # the Subscriptions API's manager (with the HTTP door)
        self.catalog = None             # the discovery catalog (with the HTTP door)
        self.accounts = None            # fastflow.accounts.Accounts ($G's services are the
                                        # attributes above)
        self.cluster = None             # fastflow.cluster.Link (the backbone), with [cluster]
        self.meter = None               # fastflow.server.metering.Meter
        self.quotas = None              # fastflow.server.quotas.Quotas
        # replicated streams: fastflow.cluster.jetstream.ReplicatedStreams (None: no cluster)
        self.replicated = None
        self.admin_lock = None          # one admin API change at a time
        self.addresses = []
        self.port = None
        self.nats_addresses = []
        self.nats_port = None           # the NATS door's port (None: off)
        self.nats_headers = None        # (Event, generated_id) -> a NATS header block
        self.http_addresses = []
        self.http_port = None           # the web doors' port (None: off)
        self.n_http_requests = 0        # HTTP requests answered (closed connections included)
        self.started = False
        self.stopping = False
        self._stop_task = None
        self._stopped = None            # a future, set when stop() is done
        self._hurry = False             # a second signal: do not wait for the drain
        self._signalled = None          # a signal that came while starting
        self._next_cid = 0
        self.start_time = None
        self.t0 = None
        # counters (closed connections' traffic is added when they go)
        self.n_total = 0
        self.n_rejected = 0
        self.preauth_bytes = 0          # partial input held for unauthenticated clients
        self.pending_total = 0          # pending output of all connections (as last counted)
        self.n_slow_consumers = 0
        self.closed_conflated = 0           # messages conflated on connections now closed
        self._conflate_on = None            # a Matcher of conflate.subjects (None: none)
        self._storage_full_seen = {}        # stream -> refusals for space seen by _tick
        self.n_auth_failures = 0
        self.n_protocol_errors = 0
        self.n_denied = 0
        self.n_invalid_pubs = 0             # NATS publishes dropped: invalid (reply) subject
        self.n_stalls = 0
        self.closed_in_msgs = 0
        self.closed_in_bytes = 0
        self.closed_out_msgs = 0
        self.closed_out_bytes = 0
        self.closed_denied = 0

    # -- connections (called by Connection) -------------------------------------------

    def conflates(self, pattern):
        """Whether a subscription to ``pattern`` conflates by the config
        (``[conflate] subjects``: it lies inside one of those patterns)."""
        if not self.config.conflate_subjects:
            return False
        if self._conflate_on is None:
            from fastflow._impl import Matcher

            self._conflate_on = Matcher(cache_size=0)
            for p in self.config.conflate_subjects:
                self._conflate_on.add(p, True)
        return _pattern_inside(self._conflate_on, pattern)

    def next_client_id(self):
        self._next_cid += 1
        return self._next_cid

    def add_connection(self, conn):
        self.conns[conn.id] = conn
        self.n_total += 1

    def remove_connection(self, conn):
        if self.conns.pop(conn.id, None) is None:
            return
        self.closed_in_msgs += conn.in_msgs
        self.closed_in_bytes += conn.parser.bytes_in
        self.closed_out_msgs += conn.outbuf.msgs
        self.closed_conflated += conn.outbuf.conflated
        self.closed_out_bytes += conn.outbuf.bytes_out
        self.closed_denied += conn.parser.denied
        if conn.principal is not None and self.meter is not None:
            self.meter.closed(conn)
        if conn.quota_key is not None:
            self.quotas.leave(*conn.quota_key)
            conn.quota_key = None
        self._stall_paused.discard(conn)
        self.unstalled(conn)

    def end_requests(self, kind, obj, message):
        """Answer ERR 404 to the replays and fetches reading a stream or a
        consumer that is being deleted."""
        for conn in list(self.conns.values()):
            for task in list(conn.tasks or ()):
                if getattr(task, kind, None) is obj:
                    conn.end_request(task, 404, message)

    # -- backpressure: subscribers whose socket is full slow the publishers --------------

    def stalled(self, conn):
        if self.stopping or conn.state >= CLOSING or conn in self.stalled_conns:
            return
        self.stalled_conns[conn] = self.loop.time()
        self.n_stalls += 1
        if len(self.stalled_conns) == 1:
            for c in list(self.conns.values()):
                if c.state < CLOSING and c.is_publisher():
                    self.pause_publisher(c)
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self._stall_check_every(),
                                                     self._check_stalls)

    def unstalled(self, conn):
        if self.stalled_conns.pop(conn, None) is None:
            return
        if not self.stalled_conns:
            if self._stall_timer is not None:
                self._stall_timer.cancel()
                self._stall_timer = None
            paused, self._stall_paused = self._stall_paused, set()
            for c in paused:
                c.resume("stall")

    def pause_publisher(self, conn):
        if not self._stall_paused:
            self._paused_since = self.loop.time()
        self._stall_paused.add(conn)
        conn.pause("stall")

    def _stall_check_every(self):
        return min(0.1, max(0.01, self.config.stall_timeout / 10))

    def _check_stalls(self):
        """Publishers stay paused at most ``stall_timeout``: then the
        subscribers still stalled are cut as slow consumers (and they resume)."""
        self._stall_timer = None
        limit = self.config.stall_timeout
        if self._stall_paused and self.loop.time() - self._paused_since >= limit:
            for conn in list(self.stalled_conns):
                conn.slow_consumer("its output stayed above the high-water mark while "
                                   "publishers waited {:g} s".format(limit))
        if self.stalled_conns and self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self._stall_check_every(),
                                                     self._check_stalls)

    def _tick(self):
        self._tick_timer = self.loop.call_later(1.0, self._tick)
        now = self.loop.time()
        for conn in list(self.conns.values()):
            conn.tick(now)
        wall = time.time()
        for acct in self.accounts:
            if acct.mqtt_sessions is not None:
                acct.mqtt_sessions.expire(wall)
        self.accounts.prune()
        self.meter.tick(now)
        self._check_storage()
        if self.config.max_pending_total:
            self.enforce_pending_total()    # (also recounts what the kernel took)

    def _check_storage(self):
        """Appends a full disk refused since the last tick (each publisher
        got its 507 / -ERR): one warning and one ``storage_full`` advisory
        per stream and second at most."""
        seen = self._storage_full_seen
        for acct in self.accounts:
            for name, st in list(acct.flow.streams().items()):
                if st.log.path is None or st.log.closed:
                    continue
                key = (acct.name, name)
                n = st.log.stats().get("storage_full", 0)
                if n > seen.get(key, 0):
                    log.warning("stream %s: the disk under %s is full: %d append%s refused",
                                name, st.log.path, n - seen.get(key, 0),
                                "" if n - seen.get(key, 0) == 1 else "s")
                    body = {"stream": name, "path": st.log.path,
                            "refused": n - seen.get(key, 0), "refused_total": n}
                    if self.accounts.enabled:
                        body["account"] = acct.name
                    self._advise("storage_full", body, acct.flow)
                seen[key] = n

    def _advise(self, kind, body, flow=None):
        try:
            (flow or self.flow).advise(kind, body)
        except Exception as exc:    # e.g. a stream on $SYS.advisory.> on the full disk
            log.warning("advisory %s not published: %s", kind, exc)

    def enforce_pending_total(self):
        """Recount the pending output of every connection; while the total is
        over max_pending_total, cut the connection with the most as a slow
        consumer (ERR 503 / -ERR 'Slow Consumer', advisory)."""
        cap = self.config.max_pending_total
        conns = [c for c in self.conns.values() if c.state < CLOSING]
        total = 0
        for c in conns:
            c._pend = c.pending_bytes()
            total += c._pend
        self.pending_total = total
        if not cap or total <= cap:
            return
        conns.sort(key=lambda c: c._pend, reverse=True)
        for c in conns:
            if self.pending_total <= cap or not c._pend:
                break
            c.slow_consumer("server-wide pending output over max_pending_total ({} bytes), "
                            "{} bytes pending here".format(cap, c._pend))

    # -- lifecycle -----------------------------------------------------------------------

    def _make_ssl_context(self):
        cfg = self.config
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
            if cfg.tls_ca:
                ctx.load_verify_locations(cfg.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("TLS: cannot load {} / {}{}: {}".format(
                cfg.tls_cert, cfg.tls_key, " / " + cfg.tls_ca if cfg.tls_ca else "",
                getattr(exc, "strerror", None) or exc)) from None
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.tls_verify else ssl.CERT_NONE
        return ctx

    def _make_flow(self):
        """The engine of every account ($G's is ``self.flow``), their
        streams from the config, their imports."""
        cfg = self.config
        if self.flow is None:
            self.flow = Flow(cfg.data_dir, fsync=cfg.fsync, wake_readers=cfg.wake_readers) \
                if cfg.data_dir else Flow()
        specs = cfg.account_specs()
        system = cfg.system_account or ("$SYS" if cfg.accounts else None)

        self.accounts = Accounts(specs, self.flow, self.make_account_flow, system)
        self.quotas = Quotas(self, cfg)
        self.quotas.install(self.accounts)
        self.install_trust()
        restored = sorted(self.flow.streams())
        for acct in self.accounts:
            if acct is self.accounts.default:
                self.add_account_streams(acct, cfg.streams, "streams")
            else:
                self.add_account_streams(acct, acct.streams,
                                         "accounts.{}.streams".format(acct.name))
        self.accounts.wire()
        self.meter = Meter(self, cfg.data_dir, cfg.metering_interval)
        self.meter.load()
        return restored

    # -- the services of an account (at start, and as the admin API adds one) --------------

    def install_trust(self):
        """The trust policy of each account (docs/provenance.md): made from
        the config, kept (with its counters) where the config did not
        change; a policy the embedding code set on a flow it gave the
        server (its ``source`` None) stays unless the config has one."""
        policies = self.config.trust_policies()
        for acct in self.accounts:
            new = policies.get(acct.name)
            old = acct.flow.trust
            if new is None:
                if old is not None and old.source is not None:
                    acct.flow.trust = None
            elif old is None or old.source != new.source:
                acct.flow.trust = new

    def make_account_flow(self, name):
        cfg = self.config
        return Flow(account_data_dir(cfg.data_dir, name), fsync=cfg.fsync,
                    wake_readers=cfg.wake_readers and cfg.data_dir is not None,
                    name="fastflow/" + name)

    def has_cluster(self):
        """Whether this server joins a NATS cluster (replicated streams may live there)."""
        return bool(self.config.cluster_urls)

    def add_account_streams(self, acct, items, where):
        """The streams of the config of ``acct`` (ConfigError)."""
        flow = acct.flow
        have = sorted(flow.streams())
        for i, spec in enumerate(items):
            name, subjects, retention, storage, replicas = stream_spec(
                spec, "{}[{}]".format(where, i))
            if replicas > 1 and not self.has_cluster():
                raise ConfigError("{}[{}] ({!r}): replicas = {} needs a cluster ([cluster] "
                                  "urls, or --cluster)".format(where, i, name, replicas))
            try:
                self.quotas.may_add_stream(acct, name, retention)
                flow.add_stream(name, subjects, retention, storage, replicas)
            except QuotaExceeded as exc:
                raise ConfigError("{}[{}] ({!r}): {}".format(where, i, name, exc)) from None
            except ValueError as exc:
                hint = (" (it was restored from {}; delete it there or change the config)"
                        .format(flow.data_dir) if name in have else "")
                raise ConfigError("{}[{}] ({!r}): {}{}".format(where, i, name, exc,
                                                              hint)) from None
        if not self.has_cluster():
            for st in flow.streams().values():
                if st.replicated:
                    log.warning("stream %r of account %s has replicas = %d (restored from %s) "
                                "but this server has no cluster: its cache stays as it is and "
                                "nothing is stored into it", st.name, acct.name, st.replicas,
                                flow.data_dir)

    def _start_mqtt(self, acct):
        from fastflow.server.mqtt import MqttSessions

        cfg = self.config
        acct.mqtt_sessions = MqttSessions(acct.flow, cfg.mqtt_max_queued, acct.data_dir,
                                          cfg.mqtt_structured, cfg.mqtt_session_expiry_max)
        acct.mqtt_sessions.load()

    async def _start_web(self, acct):
        from fastflow.subscriptions import SubscriptionManager, sink_host_check

        cfg = self.config
        acct.subscriptions = SubscriptionManager(
            acct.flow, acct.data_dir, max_subscriptions=cfg.subscriptions_max,
            max_per_owner=cfg.subscriptions_max_per_user,
            sink_allowed=sink_host_check(cfg.subscriptions_sink_hosts),
            origin=None, callback_base=cfg.subscriptions_callback_url,
            webhook_defaults={"lineage": cfg.http_lineage == "keep"},
            mqtt=acct.mqtt_sessions)
        await acct.subscriptions.start()
        acct.catalog = self._make_catalog(acct)
        acct.catalog.start(self.loop)

    async def _start_cluster(self):
        """This node on the backbone (docs/cluster.md): every account's router."""
        from fastflow.cluster import Link

        cfg = self.config
        self.cluster = Link(cfg.cluster_urls, node=self.name,
                            interest_interval=cfg.cluster_interest_interval,
                            token=cfg.cluster_token, user=cfg.cluster_user,
                            password=cfg.cluster_password)
        for acct in self.accounts:
            self.cluster.attach(acct.name, acct.flow)
        self._start_replicated()
        await self.cluster.start(wait=cfg.cluster_connect_wait)

    def _start_replicated(self):
        """The replicated streams' service (JetStream stream, forwarder and
        mirror per stream; JetStream's acks of publishes): every account's."""
        from fastflow.cluster.jetstream import ReplicatedStreams

        cfg = self.config
        self.replicated = ReplicatedStreams(self.cluster, self.cluster.node,
                                            api_timeout=cfg.cluster_api_timeout,
                                            ack_timeout=cfg.cluster_ack_timeout,
                                            heartbeat=cfg.cluster_heartbeat)
        for acct in self.accounts:
            self.replicated.attach(acct.name, acct.flow)
        self.replicated.start()

    async def start_account(self, acct):
        """The services of an account added at run time (as at start)."""
        if self.cluster is not None:
            self.cluster.attach(acct.name, acct.flow)
            self.replicated.attach(acct.name, acct.flow)
        if self.mqtt_port:
            self._start_mqtt(acct)
        if self.http_port:
            await self._start_web(acct)

    async def stop_account(self, acct):
        """An account goes: its services stopped, its engine flushed and closed."""
        if self.cluster is not None:
            self.replicated.detach(acct.name)
            self.cluster.detach(acct.name)
        if acct.catalog is not None:
            acct.catalog.stop()
        if acct.subscriptions is not None:
            await acct.subscriptions.stop()
        if acct.mqtt_sessions is not None:
            try:
                acct.mqtt_sessions.save()
            except OSError as exc:
                log.error("the MQTT sessions of %s could not be saved: %s", acct.name, exc)
        if acct.own_flow and not acct.flow.closed:
            acct.flow.flush()
            acct.flow.close()

    def _close_flows(self):
        if self.accounts is not None:
            self.accounts.close()
        if self._own_flow and self.flow is not None:
            self.flow.close()

    async def start(self):
        """Create the engine and the streams of the config, listen, log
        where.  Raises ConfigError / OSError when it cannot."""
        if self.started:
            return
        cfg = self.config
        loop = self.loop = asyncio.get_running_loop()
        self.loop_name = _loop_name(loop)
        self._stopped = loop.create_future()
        self.auth = Authenticator(cfg, log)
        # (a CONNECT waiting its turn must not meet the auth timeout)
        self.throttle = LoginThrottle(cfg.login_free_failures, cfg.login_backoff,
                                      min(cfg.login_backoff_max, cfg.auth_timeout / 2))
        try:
            import resource

            nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            if nofile == resource.RLIM_INFINITY:
                nofile = None
        except ImportError:
            nofile = None
        self.max_connections = fd_connection_limit(cfg.max_connections, nofile)
        if self.max_connections != cfg.max_connections:
            log.info("max_connections %s lowered to %d: the file descriptor limit "
                        "(RLIMIT_NOFILE) is %d", cfg.max_connections or "unlimited",
                        self.max_connections, nofile)
        if cfg.tls:
            self.ssl_context = self._make_ssl_context()
        from fastflow.server.admin import load_state

        state = load_state(cfg.data_dir)
        if state is not None:           # what the admin API made supersedes the file's
            log.info("accounts and users from %s/accounts.json (the admin API's)",
                     cfg.data_dir)
            cfg = self.config = cfg.copy(accounts=state[0], users=tuple(state[1]))
            self.auth = Authenticator(cfg, log)
        self.admin_lock = asyncio.Lock()
        try:
            restored = self._make_flow()
        except BaseException:
            self._close_flows()
            if self._own_flow:
                self.flow = None
            raise
        kw = {}
        if self.ssl_context is not None:
            kw["ssl"] = self.ssl_context
            kw["ssl_handshake_timeout"] = cfg.tls_handshake_timeout
        try:
            self._listener = await loop.create_server(
                lambda: Connection(self, NativeProtocol), cfg.host, cfg.port, backlog=1024,
                reuse_address=True, **kw)
        except BaseException:
            self._close_flows()
            raise
        self.addresses = [s.getsockname() for s in self._listener.sockets]
        self.port = self.addresses[0][1] if self.addresses else cfg.port
        try:
            if cfg.nats_port:
                from fastflow.server.nats import NatsProtocol, header_block

                self.nats_headers = header_block if cfg.nats_lineage == "keep" else \
                    functools.partial(header_block, lineage=False)
                self._nats_listener = await loop.create_server(
                    lambda: Connection(self, NatsProtocol), cfg.nats_host or cfg.host,
                    cfg.nats_port, backlog=1024, reuse_address=True)
                self.nats_addresses = [s.getsockname() for s in self._nats_listener.sockets]
                self.nats_port = self.nats_addresses[0][1] if self.nats_addresses \
                    else cfg.nats_port
            if cfg.mqtt_port:
                from fastflow.server.mqtt import MqttProtocol

                for acct in self.accounts:
                    self._start_mqtt(acct)
                self.mqtt_sessions = self.accounts.default.mqtt_sessions
                # (TLS as the native port: from the first byte, MQTT has no STARTTLS)
                self._mqtt_listener = await loop.create_server(
                    lambda: Connection(self, MqttProtocol), cfg.mqtt_host or cfg.host,
                    cfg.mqtt_port, backlog=1024, reuse_address=True, **kw)
                self.mqtt_port = self._mqtt_listener.sockets[0].getsockname()[1]
            if cfg.http_port:
                from fastflow.server.http import HttpProtocol

                self._http_listener = await loop.create_server(
                    lambda: Connection(self, HttpProtocol), cfg.http_host or cfg.host,
                    cfg.http_port, backlog=1024, reuse_address=True, **kw)
                self.http_addresses = [s.getsockname() for s in self._http_listener.sockets]
                self.http_port = self.http_addresses[0][1] if self.http_addresses \
                    else cfg.http_port
                for acct in self.accounts:
                    await self._start_web(acct)
                self.subscriptions = self.accounts.default.subscriptions
                self.catalog = self.accounts.default.catalog
            if cfg.monitor_port:
                from fastflow.server.monitor import MonitorServer

                self.monitor = MonitorServer(self, cfg.monitor_host or cfg.host,
                                             cfg.monitor_port, cfg.monitor_token,
                                             cfg.monitor_users, console=cfg.monitor_console,
                                             console_tail=cfg.monitor_console_tail)
                await self.monitor.start()
        except BaseException:
            self._listener.close()
            for lst in (self._nats_listener, self._mqtt_listener, self._http_listener):
                if lst is not None:
                    lst.close()
            for acct in self.accounts:
                if acct.subscriptions is not None:
                    await acct.subscriptions.stop()
                    acct.subscriptions = None
                if acct.catalog is not None:
                    acct.catalog.stop()
                    acct.catalog = None
            self.subscriptions = self.catalog = None
            self._close_flows()
            raise
        if cfg.cluster_urls:
            await self._start_cluster()
        self.started = True
        self.start_time = time.time()
        self.t0 = loop.time()
        self._tick_timer = loop.call_later(1.0, self._tick)
        self.checkpoints = Checkpointer.start(self)     # signed chain heads (provenance)
        self._log_start(restored)

    def _make_catalog(self, acct):
        from urllib.parse import urlsplit

        from fastflow.catalog import Catalog
        from fastflow.catalog.schemas import SchemaStore
        from fastflow.server.catalog import doors

        store = SchemaStore(acct.data_dir)
        store.on_change = self.schemas_changed
        name = self.name if acct is self.accounts.default else \
            "{}/{}".format(self.name, acct.name)
        return Catalog(acct.flow, registry_id=name, name=name,
                       doors=lambda base: doors(self, urlsplit(base).netloc), schemas=store)

    def schemas_changed(self):
        """The catalog's schema bindings changed: the doors that validate
        hand every publish to Python while one is bound (their parsers
        route the others themselves)."""
        for conn in list(self.conns.values()):
            if conn.door in ("nats", "native") and conn.state == READY and \
                    conn.principal is not None:
                conn.parser.route_pubs = not conn.verbose and not conn.proto.validates()

    def _log_start(self, restored):
        cfg = self.config
        flow = self.flow
        log.info("fastflow %s server %s starting (Python %s, %s loop, %s core, pid %d)",
                 __version__, self.name if self.name == self.id else
                 "{} ({})".format(self.name, self.id), platform.python_version(),
                 self.loop_name, "native" if COMPILED else "pure-Python", os.getpid())
        streams = flow.streams()
        if flow.data_dir:
            log.info("engine: data dir %s (%d stream%s restored), fsync=%s", flow.data_dir,
                     len(restored), "" if len(restored) == 1 else "s", cfg.fsync)
        else:
            log.info("engine: in memory (streams are lost at exit)")
        for name, st in streams.items():
            log.info("stream %s: %s, %s, %d events (last seq %d)", name,
                     ", ".join(st.subjects), st.storage, len(st.log), st.log.last_seq)
            for loss in st.log.losses:      # damaged files found at open (logged there)
                log.error("stream %s: events %d..%d lost: %s", name, loss["first_seq"],
                          loss["last_seq"], loss["reason"])
                self._advise("stream_loss", dict(loss, stream=name))
        tls = ""
        if cfg.tls:
            tls = ", TLS required" + (" with client certificates" if cfg.tls_verify else "")
        for a in self.addresses:
            log.info("listening for native clients on %s%s", _addr(a), tls)
        for a in self.nats_addresses:
            log.info("listening for NATS clients on %s%s", _addr(a), tls)
        if self._mqtt_listener is not None:
            for s in self._mqtt_listener.sockets:
                log.info("listening for MQTT clients on %s%s", _addr(s.getsockname()), tls)
        for a in self.http_addresses:
            log.info("listening for HTTP clients (CloudEvents, WebSocket, SSE%s) on %s://%s/",
                     ", MQTT at /mqtt" if self.mqtt_sessions is not None and cfg.mqtt_ws
                     else "", "https" if cfg.tls else "http", _addr(a))
        if self.monitor is not None:
            for a in self.monitor.addresses:
                log.info("monitoring on http://%s/ (%s)%s", _addr(a),
                         ", ".join(e.lstrip("/") for e in self.monitor.ENDPOINTS),
                         "; all but /healthz need credentials" if self.monitor.auth_required
                         else "")
                if self.monitor.console is not None:
                    log.info("operator console on http://%s/console/", _addr(a))
        log.info("auth: %s; limits: max_payload %s, max_pending %s, max_connections %s, "
                 "max_subscriptions %s per connection, ping every %gs", self.auth.describe(),
                 _fmt_size(cfg.max_payload), _fmt_size(cfg.max_pending),
                 self.max_connections or "unlimited", cfg.max_subscriptions or "unlimited",
                 cfg.ping_interval)
        log.info("server ready")

    async def serve_forever(self):
        """Start if needed and serve until ``stop()`` completes; SIGINT and
        SIGTERM (on the main thread) drain and stop, a second one stops at
        once."""
        loop = self.loop = asyncio.get_running_loop()
        installed = []
        # (before start, which logs "server ready": a signal sent as soon as
        # that is read is handled; one during start is acted on after it)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            await self.start()
            if self._signalled is not None:
                self._on_signal(self._signalled)
            await asyncio.shield(self._stopped)
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig):
        if not self.started:
            self._signalled = sig       # (starting: stopped once started)
            return
        name = signal.Signals(sig).name
        if not self.stopping:
            log.info("%s received: draining (again to stop at once)", name)
            self._stop_task = self.loop.create_task(self.stop(drain=True))
        else:
            log.info("%s received again: stopping now", name)
            self._hurry = True

    async def stop(self, drain=True):
        """Stop: accept no more connections, read no more, write what is
        pending (``drain``: wait up to ``drain_timeout`` for clients to
        take it), ``flow.flush()``, close every connection and the engine
        (if the server made it).  Idempotent."""
        if self.stopping:
            if self._stopped is not None:
                await asyncio.shield(self._stopped)
            return
        self.stopping = True
        if not self.started:
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
            return
        loop = self.loop
        t0 = loop.time()
        cfg = self.config
        try:
            self._listener.close()
            for lst in (self._nats_listener, self._mqtt_listener, self._http_listener):
                if lst is not None:
                    lst.close()
            for timer in (self._tick_timer, self._stall_timer):
                if timer is not None:
                    timer.cancel()
            if self.replicated is not None:
                await self.replicated.close()
            if self.cluster is not None:
                await self.cluster.close()  # (the other nodes forget this one at once)
            if self.checkpoints is not None:
                self.checkpoints.stop()     # a last checkpoint of what changed
            self._tick_timer = self._stall_timer = None
            conns = list(self.conns.values())
            log.info("stopping: %d connection%s%s", len(conns), "" if len(conns) == 1 else "s",
                     ", draining" if drain else "")
            for c in conns:             # nothing more is read: what was read is handled
                c.pause("drain")
                for task in list(c.tasks or ()):
                    task.cancel()
            for c in conns:
                c.flush()
            if drain:
                deadline = t0 + cfg.drain_timeout
                while not self._hurry and loop.time() < deadline and any(
                        c.state < CLOSED and c.pending_bytes() for c in conns):
                    await asyncio.sleep(0.01)
                left = sum(c.pending_bytes() for c in conns if c.state < CLOSED)
                if left:
                    log.warning("drain: %d bytes not taken by clients after %.1f s", left,
                                loop.time() - t0)
            for acct in self.accounts:
                if acct.catalog is not None:
                    acct.catalog.stop()
                if acct.subscriptions is not None:
                    try:
                        await acct.subscriptions.stop()
                    except Exception:
                        log.exception("stopping the subscriptions of %s failed", acct.name)
                try:
                    if not acct.flow.closed:
                        acct.flow.flush()
                except Exception:
                    log.exception("flow.flush() of account %s failed", acct.name)
            for c in conns:
                if drain and not self._hurry:
                    c.close(flush=True)
                else:
                    c.state = CLOSING
                    c._teardown()
                    c.transport.abort()
            # give the transports a moment to report connection_lost
            deadline = loop.time() + (1.0 if drain and not self._hurry else 0.1)
            while self.conns and loop.time() < deadline:
                await asyncio.sleep(0.01)
            for c in list(self.conns.values()):
                c.transport.abort()
            self.meter.save()
            for acct in self.accounts:
                if acct.mqtt_sessions is not None:
                    try:
                        acct.mqtt_sessions.save()
                    except OSError as exc:
                        log.error("the MQTT sessions of %s could not be saved at stop: %s",
                                  acct.name, exc)
            if self.monitor is not None:
                self.monitor.close()
            self._close_flows()
            st = self.stats()
            log.info("stopped after %.2f s: %d connection%s served, %d msgs in, %d msgs out, "
                     "%d slow consumer%s; uptime %.0f s", loop.time() - t0, self.n_total,
                     "" if self.n_total == 1 else "s", st["in_msgs"], st["out_msgs"],
                     self.n_slow_consumers, "" if self.n_slow_consumers == 1 else "s",
                     loop.time() - self.t0)
        finally:
            if not self._stopped.done():
                self._stopped.set_result(None)

    # -- statistics ------------------------------------------------------------------------

    def stats(self):
        """The server's counters (live connections plus closed ones)."""
        conns = list(self.conns.values())
        d = {
            "connections": len(conns),
            "nats_connections": sum(1 for c in conns if c.door == "nats"),
            "total_connections": self.n_total,
            "rejected_connections": self.n_rejected,
            "in_msgs": self.closed_in_msgs + sum(c.in_msgs for c in conns),
            "in_bytes": self.closed_in_bytes + sum(c.parser.bytes_in for c in conns),
            "out_msgs": self.closed_out_msgs + sum(c.out_msgs for c in conns),
            "out_bytes": self.closed_out_bytes + sum(c.outbuf.bytes_out for c in conns),
            "subscriptions": sum(len(c.live_subscriptions()) for c in conns),
            "pending_bytes": sum(c.pending_bytes() for c in conns),
            "slow_consumers": self.n_slow_consumers,
            # messages replaced by a newer one of their subject while their connection
            # was behind (conflating subscriptions, every door)
            "conflated": self.closed_conflated + sum(c.outbuf.conflated for c in conns),
            "stalls": self.n_stalls,
            "stalled_connections": len(self.stalled_conns),
            "paused_publishers": len(self._stall_paused),
            "auth_failures": self.n_auth_failures,
            "auth_delayed": self.throttle.delayed if self.throttle is not None else 0,
            "auth_refused_unchecked": self.throttle.refused if self.throttle is not None else 0,
            "protocol_errors": self.n_protocol_errors,
            "invalid_publishes": self.n_invalid_pubs,
            "permission_denied": self.n_denied + self.closed_denied
            + sum(c.parser.denied for c in conns),
            # publishes the accounts' trust policies refused (docs/provenance.md)
            "trust_refused": sum(sum(a.flow.trust.refused.values()) for a in self.accounts
                                 if a.flow.trust is not None) if self.accounts else 0,
        }
        if self.mqtt_sessions is not None:     # the MQTT door (docs/mqtt.md "Monitoring")
            # (MQTT over WebSocket too: a "ws" connection whose inner door is MQTT)
            d["mqtt_connections"] = sum(
                1 for c in conns if c.door == "mqtt" or (
                    c.door == "ws" and getattr(getattr(c.proto, "inner", None), "name",
                                               None) == "mqtt"))
            d["mqtt"] = mq = self.mqtt_sessions.stats()
            for acct in self.accounts:          # (every account's sessions)
                if acct is not self.accounts.default and acct.mqtt_sessions is not None:
                    for k, v in acct.mqtt_sessions.stats().items():
                        if isinstance(v, int) and isinstance(mq.get(k), int):
                            mq[k] += v
        return d


def _loop_name(loop):
    mod = type(loop).__module__
    if mod.startswith("uvloop"):
        import uvloop

        return "uvloop " + uvloop.__version__
    return "asyncio"


# -- the command line --------------------------------------------------------------------

def add_serve_arguments(parser):
    """Add the flags of ``fastflow serve`` to an argparse parser.  Flags not
    given stay None, so the config file's values stand."""
    g = parser.add_argument_group("network")
    g.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    g.add_argument("--port", type=int, help="native protocol port (default 4232; 0 = any)")
    g.add_argument("--name", help="the server's name in INFO and logs (default: its id)")
    g.add_argument("--config", "-c", metavar="FILE", help="TOML config file (docs/server.md)")
    g.add_argument("--data-dir", metavar="DIR",
                   help="keep streams on disk in DIR (default: in memory)")
    g.add_argument("--monitor-port", type=int, metavar="PORT",
                   help="HTTP monitoring port (default 8232; 0 = off)")
    g.add_argument("--monitor-host", metavar="HOST",
                   help="HTTP monitoring address (default: --host)")
    g.add_argument("--nats-port", type=int, metavar="PORT",
                   help="also speak the NATS client protocol on PORT (default 0 = off; "
                        "NATS's usual port is 4222)")
    g.add_argument("--nats-host", metavar="HOST", help="NATS door address (default: --host)")
    g.add_argument("--mqtt-port", type=int, metavar="PORT",
                   help="also speak MQTT 3.1.1 and 5.0 on PORT (default 0 = off; MQTT's "
                        "usual port is 1883; docs/mqtt.md)")
    g.add_argument("--mqtt-host", metavar="HOST", help="MQTT door address (default: --host)")
    g.add_argument("--http-port", type=int, metavar="PORT",
                   help="also serve CloudEvents over HTTP, WebSocket and SSE on PORT "
                        "(default 0 = off; docs/http.md)")
    g.add_argument("--http-host", metavar="HOST", help="HTTP door address (default: --host)")
    g.add_argument("--cluster", metavar="URLS",
                   help="join the other nodes through the NATS cluster at URLS "
                        "(nats://host:port[,nats://...]; docs/cluster.md)")
    g = parser.add_argument_group("limits (sizes take units: 64MiB, 512KiB)")
    g.add_argument("--max-payload", metavar="SIZE", help="largest event record (default 1MiB)")
    g.add_argument("--max-connections", type=int, metavar="N", help="default 65536 (0 = no limit)")
    g.add_argument("--max-subscriptions", type=int, metavar="N",
                   help="per connection (default 65536; 0 = no limit)")
    g.add_argument("--max-pending", metavar="SIZE",
                   help="output a connection may leave unread before it is cut as a slow "
                        "consumer (default 64MiB)")
    g = parser.add_argument_group("security")
    g.add_argument("--auth-token", metavar="TOKEN", help="require this token in CONNECT")
    g.add_argument("--user", help="require this user (with --password) in CONNECT")
    g.add_argument("--password", help="the password of --user (plain, or a `fastflow passwd` "
                                      "hash)")
    g.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM): TLS required")
    g.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    g.add_argument("--tls-ca", metavar="FILE", help="CA certificates for client certificates")
    g.add_argument("--tls-verify", action="store_true",
                   help="require client certificates signed by --tls-ca")
    g = parser.add_argument_group("process")
    g.add_argument("--loop", choices=LOOPS, help="event loop (default auto: uvloop if installed)")
    g.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    return parser


def setup_logging(level):
    root = logging.getLogger()
    if not root.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)-7s %(message)s",
                                         "%Y-%m-%d %H:%M:%S"))
        root.addHandler(h)
    logging.getLogger("fastflow").setLevel(level.upper())


def build_config(args):
    """The ServerConfig of parsed ``fastflow serve`` arguments (ConfigError)."""
    path = getattr(args, "config", None)
    settings = load_config(path) if path else {}
    try:
        return ServerConfig(**apply_args(settings, args))
    except ConfigError as exc:
        if not path or str(exc).startswith(str(path)):
            raise
        try:                            # the file alone: is the bad value in it?
            ServerConfig(**settings)
        except ConfigError:
            raise ConfigError("{}: {}".format(path, exc)) from None
        raise


def _tune_malloc():
    """Keep freed memory in the process (glibc): the server frees a large
    buffer every loop tick (each connection's output, each read), and by
    default glibc gives such memory back to the kernel, so that the next
    tick faults fresh zeroed pages in (measured: ~17% of the server's time
    at a few M msgs/s).  Only the ``fastflow serve`` process does this."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:                     # not glibc: nothing to tune
        return
    libc.mallopt(-1, 256 << 20)         # M_TRIM_THRESHOLD
    libc.mallopt(-2, 64 << 20)          # M_TOP_PAD
    libc.mallopt(-3, 32 << 20)          # M_MMAP_THRESHOLD (glibc's maximum)


def run_serve(args):
    """``fastflow serve``: run the server until SIGINT/SIGTERM; returns the
    exit status (0 stopped cleanly, 1 could not start, 2 bad settings)."""
    _tune_malloc()
    raise_fd_limit()
    try:
        config = build_config(args)
        _name, factory = loop_factory(config.loop)
    except ConfigError as exc:
        print("fastflow serve: error: {}".format(exc), file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    server = Server(config)
    try:
        run_loop(server.serve_forever(), factory)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except (OSError, FastflowError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except KeyboardInterrupt:           # a signal before the handlers were installed
        return 130
    return 0


def main(argv=None):
    """``python -m fastflow.server.app``: the serve command alone."""
    import argparse

    parser = argparse.ArgumentParser(prog="fastflow serve",
                                     description="Run the fastflow network broker.")
    add_serve_arguments(parser)
    return run_serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
