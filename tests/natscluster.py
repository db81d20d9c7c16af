"""A real NATS cluster for the tests of fastflow's cluster link (issue 19):
``NatsCluster`` runs n nats-server processes on 127.0.0.1, joined by routes
(each server lists every other one), with clustered JetStream unless told
otherwise.  Each server has its own client, cluster and monitoring ports
and its own JetStream store directory, kept across a restart.

conftest.py turns it into fixtures: ``nats_cluster`` (one cluster of three
per test module: do not kill its servers) and ``nats_cluster_factory``
(fresh clusters, for a test that kills, stops or restarts servers).

Readiness is read from each server's monitoring endpoint (``/varz``,
``/routez``, ``/jsz``) with urllib, every wait bounded."""

import asyncio
import http.client
import json
import os
import time
import urllib.parse
import urllib.request

from peers import ChildServer, free_port, nats_server_binary

CLUSTER_NAME = "ffc"
MAX_MEMORY_STORE = 64 << 20             # bytes of JetStream memory storage per server
MAX_FILE_STORE = 256 << 20              # bytes of JetStream file storage per server
POLL = 0.05                             # seconds between two looks at the servers


def http_json(port, path, timeout=1.0):
    """The JSON document of ``http://127.0.0.1:<port><path>``, or None when
    the server does not answer (not up yet, or killed)."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path),
                                    timeout=timeout) as r:
            return json.loads(r.read())
    except (OSError, ValueError, http.client.HTTPException):    # (URLError: an OSError)
        return None


class ClusterServer(ChildServer):
    """One nats-server of a NatsCluster: ``.name`` (its server_name),
    ``.port`` / ``.url`` (clients), ``.cluster_port`` (routes),
    ``.monitor_port`` (HTTP), ``.store_dir`` (JetStream), ``.conf_path``,
    ``.config`` (the dict written there), ``.log``."""

    READY = "Server is ready"

    def __init__(self, binary, name, conf_path, log_path, port, cluster_port, monitor_port,
                 store_dir, config):
        ChildServer.__init__(self, log_path)
        self.WHAT = "nats-server {}".format(name)
        self.binary = binary
        self.name = name
        self.conf_path = conf_path
        self.port = port
        self.url = "nats://127.0.0.1:{}".format(port)
        self.cluster_port = cluster_port
        self.monitor_port = monitor_port
        self.store_dir = store_dir
        self.config = config

    def _command(self):
        return [self.binary, "-c", self.conf_path]

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def monitor(self, path, **query):
        """``GET <path>?<query>`` on the monitoring port: a dict, or None."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return http_json(self.monitor_port, path)


class NatsCluster:
    """``n`` nats-server processes on 127.0.0.1 joined into cluster ``name``
    (configs, logs and JetStream stores under ``directory``), started at
    once: ``urls``, ``url(i)``, ``servers[i]`` (ClusterServer),
    ``kill(i)`` (SIGKILL), ``stop(i)`` (SIGTERM), ``start(i)`` (again, on
    the same ports and store), ``wait_ready()``, ``close()``; the async
    ``astart(i)``, ``astop(i)`` and ``await_ready()`` do the same without
    blocking the event loop.  A context manager (closes at exit)."""

    def __init__(self, directory, n=3, jetstream=True, name=CLUSTER_NAME, start_timeout=20.0):
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("no nats-server on PATH or in /usr/sbin")
        if n < 1:
            raise ValueError("a cluster of {} servers".format(n))
        self.n = n
        self.jetstream = jetstream
        self.name = name
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        ports = [(free_port(), free_port(), free_port()) for _ in range(n)]
        self.servers = []
        for i, (port, cluster_port, monitor_port) in enumerate(ports):
            sname = "n{}".format(i)
            store_dir = os.path.join(self.directory, "js-" + sname)
            config = {
                "server_name": sname,
                "listen": "127.0.0.1:{}".format(port),
                "http": "127.0.0.1:{}".format(monitor_port),
                "cluster": {
                    "name": name,
                    "listen": "127.0.0.1:{}".format(cluster_port),
                    "routes": ["nats-route://127.0.0.1:{}".format(p[1])
                               for j, p in enumerate(ports) if j != i],
                },
            }
            if jetstream:
                config["jetstream"] = {"store_dir": store_dir,
                                       "max_memory_store": MAX_MEMORY_STORE,
                                       "max_file_store": MAX_FILE_STORE}
            conf_path = os.path.join(self.directory, sname + ".conf")
            with open(conf_path, "w") as f:
                json.dump(config, f, indent=1)      # (nats-server's parser reads JSON)
            self.servers.append(ClusterServer(
                binary, sname, conf_path, os.path.join(self.directory, sname + ".log"),
                port, cluster_port, monitor_port, store_dir, config))
        try:
            for s in self.servers:
                s.start(start_timeout)
        except BaseException:
            self.close()
            raise

    # -- addresses ------------------------------------------------------------------------

    @property
    def urls(self):
        """Every server's client URL (nats://127.0.0.1:<port>), running or not."""
        return [s.url for s in self.servers]

    def url(self, i):
        return self.servers[i].url

    def index(self, server_name):
        """The index of the server named ``server_name`` (n0, n1, ...)."""
        for i, s in enumerate(self.servers):
            if s.name == server_name:
                return i
        raise KeyError("no server named {!r} in {}".format(
            server_name, [s.name for s in self.servers]))

    @property
    def running(self):
        """The indexes of the servers whose process runs."""
        return [i for i, s in enumerate(self.servers) if s.running]

    # -- processes ------------------------------------------------------------------------

    def kill(self, i):
        """SIGKILL server ``i`` and reap it."""
        self.servers[i].kill()

    def stop(self, i, timeout=10.0):
        """SIGTERM server ``i`` and wait for it to exit; its exit status."""
        return self.servers[i].stop(timeout=timeout)

    def start(self, i, timeout=20.0):
        """Start server ``i`` again (same ports, config and store) and wait
        until it listens (not until it rejoined: ``wait_ready``)."""
        if self.servers[i].running:
            raise RuntimeError("{} is running".format(self.servers[i].WHAT))
        self.servers[i].start(timeout)

    async def astop(self, i, timeout=10.0):
        return await self.servers[i].astop(timeout=timeout)

    async def astart(self, i, timeout=20.0):
        if self.servers[i].running:
            raise RuntimeError("{} is running".format(self.servers[i].WHAT))
        await self.servers[i].astart(timeout)

    def close(self):
        """Kill every server and reap it (the directory stays, for the logs)."""
        for s in self.servers:
            s.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- state ----------------------------------------------------------------------------

    def meta_leader(self, among=None):
        """The index of the JetStream meta leader as every running server of
        ``among`` (default: every running one) reports it, or None when
        they do not agree or know none."""
        among = self.running if among is None else among
        leaders = set()
        for i in among:
            jsz = self.servers[i].monitor("/jsz")
            leaders.add(((jsz or {}).get("meta_cluster") or {}).get("leader"))
        if len(leaders) != 1 or None in leaders or "" in leaders:
            return None
        try:
            return self.index(leaders.pop())
        except KeyError:
            return None

    def stream_state(self, i, stream, account="$G"):
        """Server ``i``'s own replica of JetStream stream ``stream``: the
        ``stream_detail`` entry of its /jsz (``state``, ``cluster``: its
        leader and replicas), or None when the server has no such stream."""
        jsz = self.servers[i].monitor("/jsz", accounts="true", streams="true")
        for acct in (jsz or {}).get("account_details") or ():
            if acct.get("name") != account:
                continue
            for st in acct.get("stream_detail") or ():
                if st.get("name") == stream:
                    return st
        return None

    def route_interest(self, i, j):
        """What server ``i`` knows of server ``j``'s subscriptions, through
        their route: a set of (subject, queue group or None), or None when
        ``i`` has no route to ``j`` (or does not answer)."""
        varz = self.servers[j].monitor("/varz")
        routez = self.servers[i].monitor("/routez", subs="detail")
        if varz is None or routez is None:
            return None
        for r in routez.get("routes") or ():
            if r.get("remote_id") == varz["server_id"]:
                return {(d["subject"], d.get("qgroup") or None)
                        for d in r.get("subscriptions_list_detail") or ()}
        return None

    async def await_interest(self, i, j, subject, queue=None, timeout=5.0):
        """Returns once server ``i`` knows, through its route, that server
        ``j`` has a subscription on ``subject`` (in ``queue``)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while (subject, queue) not in (await loop.run_in_executor(
                None, self.route_interest, i, j) or ()):
            if time.monotonic() > deadline:
                raise TimeoutError("{} did not learn {}'s interest in {!r} (queue {!r}) "
                                   "within {} s".format(self.servers[i].name,
                                                         self.servers[j].name, subject, queue,
                                                         timeout))
            await asyncio.sleep(0.01)

    def not_ready(self, servers=None):
        """Why the cluster of ``servers`` (indexes; default all) is not
        formed, or None when it is: each of them runs and has a route to
        every other one and (with JetStream) they report the same meta
        leader, one of them, in a meta group of ``n``, and that leader
        sees the others as current."""
        servers = list(range(self.n)) if servers is None else list(servers)
        ids = {}
        for i in servers:
            s = self.servers[i]
            if not s.running:
                return "{} is not running".format(s.name)
            varz = s.monitor("/varz")
            if varz is None:
                return "{} does not answer /varz".format(s.name)
            ids[i] = varz["server_id"]
        for i in servers:
            routez = self.servers[i].monitor("/routez")
            if routez is None:
                return "{} does not answer /routez".format(self.servers[i].name)
            have = {r.get("remote_id") for r in routez.get("routes") or ()}
            want = {ids[j] for j in servers if j != i}
            if not want <= have:
                return "{} has no route yet to {}".format(
                    self.servers[i].name, sorted(self.servers[j].name for j in servers
                                                 if ids[j] in want - have))
        if not self.jetstream:
            return None
        names = {self.servers[i].name for i in servers}
        leader = None
        for i in servers:
            meta = ((self.servers[i].monitor("/jsz") or {}).get("meta_cluster") or {})
            if meta.get("cluster_size") != self.n:
                return "{} reports a JetStream meta group of {!r} servers, not {}".format(
                    self.servers[i].name, meta.get("cluster_size"), self.n)
            if meta.get("leader") not in names:
                return "{} knows no JetStream meta leader among {} (it says {!r})".format(
                    self.servers[i].name, sorted(names), meta.get("leader"))
            if leader is not None and meta["leader"] != leader:
                return "{} says the meta leader is {}, another says {}".format(
                    self.servers[i].name, meta["leader"], leader)
            leader = meta["leader"]
        meta = ((self.servers[self.index(leader)].monitor("/jsz") or {}).get("meta_cluster")
                or {})
        current = {r.get("name") for r in meta.get("replicas") or () if r.get("current")}
        behind = sorted(names - {leader} - current)
        if behind:
            return "the meta leader {} does not see {} as current".format(leader, behind)
        return None

    def wait_ready(self, timeout=15.0, servers=None):
        """Returns once the cluster of ``servers`` (default all) is formed
        (``not_ready``); TimeoutError with the reason and the servers' log
        tails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            why = self.not_ready(servers)
            if why is None:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError("NATS cluster not ready within {} s: {}\n{}".format(
                    timeout, why, self.log_tails()))
            time.sleep(POLL)

    async def await_ready(self, timeout=15.0, servers=None):
        """``wait_ready`` for async tests: the look at each server runs in
        a thread, so the event loop (and its clients) keeps running."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            why = await loop.run_in_executor(None, self.not_ready, servers)
            if why is None:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError("NATS cluster not ready within {} s: {}\n{}".format(
                    timeout, why, self.log_tails()))
            await asyncio.sleep(POLL)

    def log_tails(self, chars=1500):
        return "\n".join("--- {} ({}):\n{}".format(
            s.name, "running" if s.running else "down", s.log[-chars:]) for s in self.servers)
