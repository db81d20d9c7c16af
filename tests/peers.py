"""The peer processes of the network tests: child fastflow servers, a real
nats-server and its configuration, the other peers a test may need (nats-py,
the Go toolchain with nats.go), throwaway certificates and free ports.

conftest.py turns these into fixtures; a test module imports what it uses
directly (``from peers import free_port``)."""

import asyncio
import getpass
import importlib.util
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

import fastflow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Ports are handed out below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default): a port the
# kernel chose with bind(0) can be given again as the source port of any
# outgoing connection before the server that was to listen on it binds it.
# Each process walks the range from its own random start and never hands the
# same port out twice, so two servers of one run cannot be given one port.
_PORT_LOW, _PORT_HIGH = 20000, 32768
_port_next = [random.Random(os.getpid() ^ time.time_ns()).randrange(_PORT_LOW, _PORT_HIGH)]
_ports_given = set()


def free_port():
    """A TCP port of 127.0.0.1 that nobody listens on (now), outside the
    kernel's ephemeral range and not handed out before in this process."""
    for _ in range(_PORT_HIGH - _PORT_LOW):
        port = _port_next[0]
        _port_next[0] = port + 1 if port + 1 < _PORT_HIGH else _PORT_LOW
        if port in _ports_given:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free port of 127.0.0.1 between {} and {}".format(_PORT_LOW, _PORT_HIGH))


def make_tls_files(d):
    """A throwaway CA, a server certificate it signed (localhost,
    127.0.0.1) and a client certificate it signed, made in directory ``d``
    (a pathlib.Path) with the openssl command: paths ``ca``, ``cert``,
    ``key``, ``client_cert``, ``client_key``."""
    ext = d / "ext.cnf"
    ext.write_text("[srv]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\n[cli]\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=clientAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        r = subprocess.run(["openssl"] + list(args), cwd=str(d), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, "openssl {} failed:\n{}{}".format(" ".join(args), r.stdout,
                                                                     r.stderr)

    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=fastflow test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, cn, section in (("server", "localhost", "srv"), ("client", "test-client", "cli")):
        openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", "ext.cnf",
                "-extensions", section)
    return SimpleNamespace(ca=str(d / "ca.pem"), cert=str(d / "server.pem"),
                           key=str(d / "server.key"), client_cert=str(d / "client.pem"),
                           client_key=str(d / "client.key"))


# -- child servers --------------------------------------------------------------------------


class ChildServer:
    """A server in a subprocess on 127.0.0.1, its output (stderr and stdout)
    in ``log_path``: ``.start()`` / ``await .astart()`` (again after a stop
    to restart it with the same arguments), ``.stop()`` / ``await
    .astop()``, ``.kill()``; ``async with`` starts and kills it.  A
    subclass gives ``WHAT`` (its name in errors), ``READY`` (the log line
    that says it listens) and ``_command()``."""

    WHAT = READY = None

    def __init__(self, log_path):
        self.log_path = log_path
        self.proc = None
        self._log = None
        self._mark = 0

    def _command(self):
        raise NotImplementedError

    @property
    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _spawn(self):
        self._close_log()
        self._log = open(self.log_path, "a")
        self._mark = self._log.tell()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self._command(), cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def _check_start(self):
        """True when ready; raises if the process died."""
        with open(self.log_path, "r", errors="replace") as f:
            f.seek(self._mark)
            text = f.read()
        if self.READY in text:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError("{} exited with {} before it was ready:\n{}".format(
                self.WHAT, self.proc.returncode, text))
        return False

    def _not_ready(self, timeout):
        self.kill()
        return TimeoutError("{} not ready within {} s:\n{}".format(self.WHAT, timeout, self.log))

    def start(self, timeout=20.0):
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._check_start():
            if time.monotonic() > deadline:
                raise self._not_ready(timeout)
            time.sleep(0.02)
        return self

    async def astart(self, timeout=20.0):
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._check_start():
            if time.monotonic() > deadline:
                raise self._not_ready(timeout)
            await asyncio.sleep(0.02)
        return self

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    async def astop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return await self.await_exit(timeout)

    async def await_exit(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("{} did not exit within {} s:\n{}".format(
                    self.WHAT, timeout, self.log))
            await asyncio.sleep(0.01)
        self._close_log()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    async def __aenter__(self):
        return await self.astart()

    async def __aexit__(self, *exc):
        self.kill()


class ServerProcess(ChildServer):
    """A ``python -m fastflow serve`` subprocess (see the ``ffproc`` fixture)."""

    WHAT = "fastflow serve"
    READY = "server ready"

    def __init__(self, args, log_path, port, monitor_port):
        ChildServer.__init__(self, log_path)
        self.args = args
        self.port = port
        self.monitor_port = monitor_port
        self.url = "fastflow://127.0.0.1:{}".format(port)

    def _command(self):
        return [sys.executable, "-m", "fastflow", "serve"] + self.args


# -- NATS peers -----------------------------------------------------------------------------

NATS_GO_SRC = "/usr/share/gocode/src/github.com/nats-io/nats.go"
PEERS = {
    "nats-server": "the nats-server binary (Debian/Ubuntu: apt-get install nats-server)",
    "nats-py": "the NATS Python client 2.x (pip install 'nats-py>=2.2')",
    "go": "the Go toolchain and the nats.go sources (Debian/Ubuntu: apt-get install golang-go "
          "golang-github-nats-io-go-nats-dev, which puts them under /usr/share/gocode)",
    "curl": "curl, as the HTTP door's command-line client (Debian/Ubuntu: apt-get install curl)",
    "mosquitto": "the mosquitto broker and its clients, the MQTT door's reference server "
                 "(Debian/Ubuntu: apt-get install mosquitto mosquitto-clients)",
    "paho-mqtt": "the Eclipse Paho MQTT Python client 2.x (pip install 'paho-mqtt>=2')",
}


def mosquitto_binary():
    """The path of the mosquitto broker (Debian puts it in /usr/sbin), or None."""
    return (shutil.which("mosquitto")
            or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"))


def nats_server_binary():
    """The path of nats-server (also looked for in /usr/sbin, where Debian
    puts it and which a non-root PATH often lacks), or None."""
    return (shutil.which("nats-server")
            or shutil.which("nats-server", path="/usr/sbin:/usr/local/sbin:/usr/local/bin"))


def _peer_missing(name):
    """Why peer ``name`` (a key of PEERS) cannot be used, or None."""
    if name == "nats-server":
        return None if nats_server_binary() else "no nats-server on PATH or in /usr/sbin"
    if name == "nats-py":
        if importlib.util.find_spec("nats") is None:
            return "the Python module 'nats' is not installed"
        try:
            from nats.aio.client import Client
        except ImportError as exc:
            return "the 'nats' module is not nats-py ({})".format(exc)
        import inspect
        if "no_echo" not in inspect.signature(Client.connect).parameters:
            return "nats-py is too old (no no_echo option: 2.x needed)"
        return None
    if name == "go":
        if not shutil.which("go"):
            return "no `go` on PATH"
        if not os.path.isfile(os.path.join(NATS_GO_SRC, "nats.go")):
            return "no nats.go sources under {}".format(NATS_GO_SRC)
        return None
    if name == "curl":
        return None if shutil.which("curl") else "no curl on PATH"
    if name == "mosquitto":
        if not mosquitto_binary():
            return "no mosquitto on PATH or in /usr/sbin"
        return None if shutil.which("mosquitto_pub") else "no mosquitto_pub on PATH"
    if name == "paho-mqtt":
        if importlib.util.find_spec("paho") is None:
            return "the Python module 'paho.mqtt' is not installed"
        import paho.mqtt.client as mqtt
        if not hasattr(mqtt, "CallbackAPIVersion"):
            return "paho-mqtt is too old (2.x needed)"
        return None
    raise ValueError("unknown peer {!r}".format(name))


def require_peer(*names):
    """Skip the test, loudly, when a peer it needs (PEERS) is missing; with
    FASTFLOW_REQUIRE_PEERS=1 in the environment (CI), fail it instead."""
    for name in names:
        why = _peer_missing(name)
        if why is None:
            continue
        msg = ("MISSING TEST PEER {!r}: {}. This test needs {}. (With FASTFLOW_REQUIRE_PEERS=1 "
               "a missing peer is a failure.)".format(name, why, PEERS[name]))
        if os.environ.get("FASTFLOW_REQUIRE_PEERS", "").strip() == "1":
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)


def nats_door_available():
    """None, or why this build has no NATS door (the pure-Python core of
    FASTFLOW_NO_EXTENSIONS=1 may lack its parser)."""
    try:
        importlib.import_module("fastflow.server.nats")     # binds no local name `fastflow`
    except ImportError as exc:
        return "the NATS door cannot be imported in this build ({}core: {})".format(
            "native " if fastflow.COMPILED else "pure-Python ", exc)
    return None


def _nats_size(v, key):
    from fastflow.server.config import parse_size
    return parse_size(v, key)


def _nats_ms(v, key):
    from fastflow.server.config import parse_duration
    return "{}ms".format(int(round(parse_duration(v, key) * 1000)))


def _nats_patterns(v, where):
    if isinstance(v, (str, list, tuple)):
        v = {"allow": v}
    out = {}
    for k, pats in v.items():
        if k not in ("allow", "deny"):
            raise ValueError("natsd: {}.{} has no nats-server equivalent".format(where, k))
        out[k] = [pats] if isinstance(pats, str) else list(pats)
    return out


def _nats_permissions(p, where):
    out = {}
    for k, v in p.items():
        if k in ("publish", "subscribe"):
            out[k] = _nats_patterns(v, where + "." + k)
        elif k == "allow_responses":
            out[k] = v
        elif k == "streams":
            continue                    # fastflow only: nats-server has no streams here
        else:
            raise ValueError("natsd: {}.{} has no nats-server equivalent".format(where, k))
    return out


def nats_server_config(port, settings):
    """A nats-server config (a dict, written as JSON, which its parser
    reads) for ``settings``, the ServerConfig keywords of ``ffnats`` that
    have a nats-server equivalent; ``conf`` (a dict) adds nats-server's own
    keys.  Raises ValueError for a setting it cannot translate, so that a
    differential test never compares different configurations unknowingly."""
    conf = {"listen": "127.0.0.1:{}".format(port)}
    auth = {}
    simple = {"max_payload": ("max_payload", _nats_size),
              "max_pending": ("max_pending", _nats_size),
              "nats_max_control": ("max_control_line", _nats_size),
              "max_connections": ("max_connections", None),
              "max_subscriptions": ("max_subscriptions", None),
              "max_pings_out": ("ping_max", None), "ping_interval": ("ping_interval", _nats_ms),
              "name": ("server_name", None)}
    for k, v in settings.items():
        if k in simple:
            key, conv = simple[k]
            conf[key] = conv(v, k) if conv else v
        elif k == "token":
            auth["token"] = v
        elif k == "auth_timeout":
            from fastflow.server.config import parse_duration
            auth["timeout"] = parse_duration(v, k)
        elif k in ("accounts", "system_account"):
            continue                    # below, with the users
        elif k == "users":
            users = []
            for i, u in enumerate(v):
                if str(u["password"]).startswith("$scrypt$"):
                    raise ValueError("natsd: users[{}] has a scrypt hash; nats-server needs the "
                                     "plain password".format(i))
                nu = {"user": u["user"], "password": u["password"]}
                if u.get("permissions") is not None:
                    nu["permissions"] = _nats_permissions(u["permissions"],
                                                          "users[{}].permissions".format(i))
                if u.get("account") is not None:
                    nu["account"] = u["account"]
                users.append(nu)
            auth["users"] = users
        elif k == "default_permissions":
            auth["default_permissions"] = _nats_permissions(v, "default_permissions")
        elif k == "conf":
            conf.update(v)
        else:
            raise ValueError("natsd: the setting {!r} has no nats-server equivalent".format(k))
    if settings.get("accounts"):
        conf["accounts"] = _nats_accounts(settings["accounts"], auth.pop("users", []))
        if settings.get("system_account"):
            conf["system_account"] = settings["system_account"]
    if auth:
        conf["authorization"] = auth
    return conf


def _nats_accounts(accounts, users):
    """nats-server's ``accounts`` block for fastflow's ``accounts`` and the
    users that name theirs (users without one stay in $G)."""
    out = {}
    for name, spec in accounts.items():
        spec = spec or {}
        a = {"users": [{k: v for k, v in u.items() if k != "account"} for u in users
                       if u.get("account") == name]}
        exports = []
        for e in spec.get("exports", ()):
            kind = "stream" if "stream" in e else "service"
            ne = {kind: e[kind]}
            if e.get("accounts"):
                ne["accounts"] = list(e["accounts"])
            if kind == "service":
                ne["response_type"] = {"single": "singleton", "stream": "stream"}[
                    e.get("response", "single")]
                if "response_threshold" in e:
                    ne["response_threshold"] = _nats_ms(e["response_threshold"],
                                                        "response_threshold")
            exports.append(ne)
        imports = []
        for i in spec.get("imports", ()):
            kind = "stream" if "stream" in i else "service"
            ni = {kind: {"account": i["account"], "subject": i[kind]}}
            if i.get("prefix"):
                if kind == "stream":
                    ni["prefix"] = i["prefix"]
                else:
                    ni["to"] = i["prefix"] + "." + i[kind]
            imports.append(ni)
        if exports:
            a["exports"] = exports
        if imports:
            a["imports"] = imports
        if spec.get("streams"):
            raise ValueError("natsd: accounts.{}.streams has no nats-server equivalent".format(
                name))
        out[name] = a
    rest = [u for u in users if u.get("account") is None]
    if rest:
        raise ValueError("natsd: users without an account next to accounts")
    return out


class NatsServerProcess(ChildServer):
    """A real nats-server on 127.0.0.1 (the ``natsd`` fixture): ``.url``
    (nats://), ``.port``, ``.log`` (its output), ``.config``."""

    WHAT = "nats-server"
    READY = "Server is ready"

    def __init__(self, binary, port, conf_path, log_path, config):
        ChildServer.__init__(self, log_path)
        self.binary = binary
        self.port = port
        self.url = "nats://127.0.0.1:{}".format(port)
        self.conf_path = conf_path
        self.config = config

    def _command(self):
        return [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-c", self.conf_path]


# -- MQTT peers -----------------------------------------------------------------------------


class MosquittoProcess:
    """A real mosquitto broker on 127.0.0.1:``port`` (persistence in
    ``directory``; more listeners in ``conf``, their ports in ``also``),
    started by ``start()`` (when every port listens) and killed by
    ``stop()``."""

    def __init__(self, port, directory, conf="", also=()):
        self.port = port
        self.also = list(also)
        self.directory = directory
        self.conf_path = os.path.join(directory, "mosquitto.conf")
        self.log_path = os.path.join(directory, "mosquitto.log")
        self.proc = None
        with open(self.conf_path, "w") as f:
            # (user: started as root, mosquitto would drop to a user that
            # cannot write the test's directory)
            f.write("listener {} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                    "persistence_location {}/\nlog_dest file {}\nuser {}\n{}".format(
                        port, directory, self.log_path, getpass.getuser(), conf))

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen([mosquitto_binary(), "-c", self.conf_path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        waiting = [self.port] + self.also
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mosquitto exited with {}: {}".format(
                    self.proc.returncode, self.log()))
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                    waiting.pop(0)
                    if not waiting:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on {} within {} s".format(self.port, timeout))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""
