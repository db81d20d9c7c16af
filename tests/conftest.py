import os
import random
from types import SimpleNamespace

import pytest

import fastflow
from fastflow._ref import matcher as _ref_matcher
from fastflow._ref import subjects as _ref_subjects

IMPLS = {
    "ref": SimpleNamespace(
        name="ref",
        Matcher=_ref_matcher.Matcher,
        validate_subject=_ref_subjects.validate_subject,
        validate_pattern=_ref_subjects.validate_pattern,
    )
}
if fastflow.COMPILED:
    from fastflow import _core

    IMPLS["native"] = SimpleNamespace(
        name="native",
        Matcher=_core.Matcher,
        validate_subject=_core.validate_subject,
        validate_pattern=_core.validate_pattern,
    )


@pytest.fixture(params=sorted(IMPLS))
def impl(request):
    """Runs a test once per core: the compiled one and the pure-Python reference."""
    return IMPLS[request.param]


@pytest.fixture
def seed():
    """A seed for random tests, printed so a failure can be replayed
    (FASTFLOW_TEST_SEED=<n> pytest ...)."""
    s = int(os.environ.get("FASTFLOW_TEST_SEED") or random.randrange(1 << 32))
    print("FASTFLOW_TEST_SEED={}".format(s))
    return s


# -- network tests (test_client.py, test_server.py): event loops, servers, certificates ------

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import uvloop  # noqa: E402

NET_LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
NET_TEST_TIMEOUT = 60.0         # seconds an async network test may take in all
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=sorted(NET_LOOPS))
def aloop(request):
    """``aloop(coro_fn, *args)`` runs ``coro_fn(*args)`` in a new event loop
    (the standard one, then uvloop), at most NET_TEST_TIMEOUT seconds, and
    fails if anything reached the loop's exception handler.  ``aloop.name``
    is the loop ("asyncio" or "uvloop")."""
    name = request.param

    def run(coro_fn, *args, timeout=NET_TEST_TIMEOUT):
        handled = []

        async def main():
            loop = asyncio.get_running_loop()
            assert type(loop).__module__.startswith("uvloop") == (name == "uvloop")
            loop.set_exception_handler(lambda lp, ctx: handled.append(ctx))
            return await asyncio.wait_for(coro_fn(*args), timeout)

        result = NET_LOOPS[name](main())
        assert handled == []
        return result

    run.name = name
    return run


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """``free_port()``: a TCP port of 127.0.0.1 that nobody listens on (now)."""
    return _free_port


@pytest.fixture
def ffserver():
    """``async with ffserver(flow=None, monitor=False, **settings) as srv``:
    an in-process ``fastflow.server.Server`` on 127.0.0.1 (any free port;
    with ``monitor``, the HTTP endpoint on another), stopped at exit.
    ``srv.url`` is its fastflow:// URL, ``srv.monitor_port`` the HTTP port."""

    @contextlib.asynccontextmanager
    async def run(flow=None, monitor=False, **settings):
        from fastflow.server import Server, ServerConfig

        settings.setdefault("port", 0)
        settings.setdefault("drain_timeout", 2.0)
        settings["monitor_port"] = _free_port() if monitor else 0
        srv = Server(ServerConfig(**settings), flow=flow)
        await srv.start()
        srv.url = "fastflow://127.0.0.1:{}".format(srv.port)
        srv.monitor_port = settings["monitor_port"]
        try:
            yield srv
        finally:
            await asyncio.wait_for(srv.stop(), 20)

    return run


class ServerProcess:
    """A ``python -m fastflow serve`` subprocess on 127.0.0.1 (see the
    ``ffproc`` fixture); its log (stderr and stdout) goes to ``log_path``."""

    READY = "server ready"

    def __init__(self, args, log_path, port, monitor_port):
        self.args = args
        self.log_path = log_path
        self.port = port
        self.monitor_port = monitor_port
        self.url = "fastflow://127.0.0.1:{}".format(port)
        self.proc = None
        self._log = None
        self._mark = 0

    @property
    def log(self):
        with open(self.log_path, "r", errors="replace") as f:
            return f.read()

    def _spawn(self):
        self._log = open(self.log_path, "a")
        self._mark = self._log.tell()
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastflow", "serve"] + self.args, cwd=REPO, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    def _check_start(self):
        """True when ready; raises if the process died."""
        with open(self.log_path, "r", errors="replace") as f:
            f.seek(self._mark)
            text = f.read()
        if self.READY in text:
            return True
        if self.proc.poll() is not None:
            raise RuntimeError("fastflow serve exited with {} before it was ready:\n{}".format(
                self.proc.returncode, text))
        return False

    def start(self, timeout=20.0):
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._check_start():
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("fastflow serve not ready within {} s:\n{}".format(
                    timeout, self.log))
            time.sleep(0.02)
        return self

    async def astart(self, timeout=20.0):
        self._spawn()
        deadline = time.monotonic() + timeout
        while not self._check_start():
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("fastflow serve not ready within {} s:\n{}".format(
                    timeout, self.log))
            await asyncio.sleep(0.02)
        return self

    def send_signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Signal and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    async def astop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return await self.await_exit(timeout)

    async def await_exit(self, timeout=20.0):
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError("fastflow serve did not exit within {} s:\n{}".format(
                    timeout, self.log))
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


@pytest.fixture
def ffproc(tmp_path):
    """``ffproc(*args, port=None, monitor=False)``: a ServerProcess (not
    started: ``.start()`` / ``await .astart()``; restart it with the same
    arguments by starting it again) for ``fastflow serve --port P
    --monitor-port M *args`` on a free port; every process is killed at
    teardown if a test left it running."""
    made = []

    def make(*args, port=None, monitor=False):
        port = port or _free_port()
        mport = _free_port() if monitor else 0
        full = ["--host", "127.0.0.1", "--port", str(port), "--monitor-port", str(mport)]
        full += [str(a) for a in args]
        sp = ServerProcess(full, str(tmp_path / "server-{}.log".format(len(made))), port, mport)
        made.append(sp)
        return sp

    yield make
    for sp in made:
        sp.kill()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A throwaway CA, a server certificate it signed (localhost,
    127.0.0.1) and a client certificate it signed, made with the openssl
    command: paths ``ca``, ``cert``, ``key``, ``client_cert``, ``client_key``."""
    d = tmp_path_factory.mktemp("tls")
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
