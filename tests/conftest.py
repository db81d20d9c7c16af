"""The fixtures of the test suite: the core under test, seeds, event loops,
in-process and child servers, peers.  The peer processes themselves
(child servers, nats-server, certificates, ports) are in peers.py, the
NATS cluster of the cluster tests in natscluster.py."""

import asyncio
import contextlib
import json
import os
import random
import shutil

import pytest
import uvloop

import fastflow
from fastflow import _ref

from natscluster import NatsCluster
from peers import (
    NatsServerProcess,
    ServerProcess,
    free_port as _free_port,
    make_tls_files,
    nats_door_available,
    nats_server_binary,
    nats_server_config,
    require_peer,
)

# -- the core under test ------------------------------------------------------------------

# The reference core: fastflow._ref exports exactly fastflow._core's names
# (tests/test_contract.py holds both to fastflow/_core.pyi).
REF_CORE = _ref

# Every core this build has, by test id: the compiled one (when it is built) and the
# reference.  A test module that compares them takes CORES from here.
if fastflow.COMPILED:
    from fastflow import _core

    CORES = {"native": _core, "ref": REF_CORE}
else:
    CORES = {"ref": REF_CORE}
ACTIVE_CORE = CORES["native" if fastflow.COMPILED else "ref"]
both_cores = pytest.mark.skipif(len(CORES) < 2, reason="one core only: FASTFLOW_NO_EXTENSIONS=1")


@pytest.fixture(params=list(CORES.values()), ids=list(CORES))
def core(request):
    """Runs a test once per core, the compiled one ("native") and the
    pure-Python reference ("ref"): the core's names (``core.Matcher``,
    ``core.Log``, ``core.Router``, ``core.OutBuf``, ``core.NatsParser``, ...;
    ``core.COMPILED`` tells which)."""
    return request.param


@pytest.fixture
def seed():
    """A seed for random tests, printed so a failure can be replayed
    (FASTFLOW_TEST_SEED=<n> pytest ...)."""
    s = int(os.environ.get("FASTFLOW_TEST_SEED") or random.randrange(1 << 32))
    print("FASTFLOW_TEST_SEED={}".format(s))
    return s


# -- async and network tests: event loops, servers, certificates ----------------------------

NET_LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
NET_TEST_TIMEOUT = 60.0         # seconds an async network test may take in all


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
    """The throwaway CA and certificates of ``peers.make_tls_files``, made
    once per session."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


# -- the NATS door (test_nats.py): fastflow with --nats-port, a real nats-server ------


@pytest.fixture
def ffnats(ffserver):
    """``async with ffnats(flow=None, monitor=False, **settings) as srv``:
    ``ffserver`` with the NATS door on another free port of 127.0.0.1:
    ``srv.nats_url`` is ``nats://127.0.0.1:<port>``, ``srv.url`` the
    native door's URL.  Skips when the build has no NATS door and
    FASTFLOW_NO_EXTENSIONS=1 is set (the pure-Python core)."""
    why = nats_door_available()
    if why is not None:
        if fastflow.COMPILED:
            pytest.fail(why, pytrace=False)
        pytest.skip(why + ": the NATS door needs the compiled core")

    @contextlib.asynccontextmanager
    async def run(flow=None, monitor=False, **settings):
        settings.setdefault("nats_port", _free_port())
        async with ffserver(flow=flow, monitor=monitor, **settings) as srv:
            assert srv.nats_port, "the server did not open its NATS door"
            srv.nats_url = "nats://127.0.0.1:{}".format(srv.nats_port)
            yield srv

    return run


@pytest.fixture
def ffnatsproc(ffproc):
    """``ffnatsproc(*args, nats_port=None, port=None, monitor=False)``: an
    ``ffproc`` ServerProcess with ``--nats-port`` (a free port unless
    given); ``.nats_port`` and ``.nats_url`` say where."""
    why = nats_door_available()
    if why is not None:
        if fastflow.COMPILED:
            pytest.fail(why, pytrace=False)
        pytest.skip(why + ": the NATS door needs the compiled core")

    def make(*args, nats_port=None, port=None, monitor=False):
        nport = nats_port or _free_port()
        sp = ffproc("--nats-port", nport, *args, port=port, monitor=monitor)
        sp.nats_port = nport
        sp.nats_url = "nats://127.0.0.1:{}".format(nport)
        return sp

    return make


@pytest.fixture
def natsd(tmp_path):
    """``natsd(**settings)``: a NatsServerProcess for a real nats-server
    (``async with natsd(**settings) as ns``, or ``.start()``), on a free
    port of 127.0.0.1, configured like ``ffnats(**settings)`` as far as
    nats-server has the same settings (``nats_server_config``; ``conf=``
    adds nats-server's own keys).  For differential tests: run one
    scenario against both and compare.  Skips (fails with
    FASTFLOW_REQUIRE_PEERS=1) without nats-server; every server is killed
    at teardown."""
    require_peer("nats-server")
    binary = nats_server_binary()
    made = []

    def make(**settings):
        port = _free_port()
        config = nats_server_config(port, settings)
        n = len(made)
        conf_path = str(tmp_path / "nats-server-{}.conf".format(n))
        with open(conf_path, "w") as f:
            json.dump(config, f, indent=1)
        ns = NatsServerProcess(binary, port, conf_path,
                               str(tmp_path / "nats-server-{}.log".format(n)), config)
        made.append(ns)
        return ns

    yield make
    for ns in made:
        ns.kill()


@pytest.fixture
def natspy():
    """The ``nats`` module (nats-py 2.x); skips loudly without it (fails
    with FASTFLOW_REQUIRE_PEERS=1)."""
    require_peer("nats-py")
    import nats
    return nats


@pytest.fixture(scope="session")
def peer():
    """``peer(name, ...)``: ``require_peer`` (skip loudly, or fail with
    FASTFLOW_REQUIRE_PEERS=1, when a peer of PEERS is missing)."""
    return require_peer


# -- a NATS cluster (issue 19: fastflow nodes joined through NATS; natscluster.py) ---------


@pytest.fixture(scope="module")
def nats_cluster(tmp_path_factory):
    """A formed NatsCluster of three nats-servers with JetStream, shared by
    the tests of a module: a test must not kill, stop or restart its
    servers (``nats_cluster_factory`` makes a cluster of its own) and names
    its JetStream streams and subjects so that they do not meet another
    test's.  Skips (fails with FASTFLOW_REQUIRE_PEERS=1) without
    nats-server."""
    require_peer("nats-server")
    with NatsCluster(tmp_path_factory.mktemp("natscluster"), n=3, jetstream=True) as cluster:
        cluster.wait_ready()
        yield cluster


@pytest.fixture
def nats_cluster_factory(tmp_path):
    """``nats_cluster_factory(n=3, jetstream=True)``: a new NatsCluster,
    formed (``wait_ready``), for this test alone; every one is killed at
    teardown.  Skips (fails with FASTFLOW_REQUIRE_PEERS=1) without
    nats-server."""
    require_peer("nats-server")
    made = []

    def make(n=3, jetstream=True, ready_timeout=15.0):
        cluster = NatsCluster(tmp_path / "natscluster-{}".format(len(made)), n=n,
                              jetstream=jetstream)
        made.append(cluster)
        return cluster.wait_ready(ready_timeout)

    yield make
    for cluster in made:
        cluster.close()


# -- a real browser (test_browser.py, test_console.py) --------------------------------------


def chromium():
    """``(chromium, chromedriver)`` paths; skips (fails under
    FASTFLOW_REQUIRE_PEERS=1) when they are missing."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if binary and driver:
        return binary, driver
    why = "headless Chromium is not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("FASTFLOW_REQUIRE_PEERS") == "1":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, its console messages kept
    (``browser.get_log("browser")``), 1280x800."""
    binary, driver = chromium()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,800", "--hide-scrollbars"):
        opts.add_argument(a)
    opts.binary_location = binary
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.set_script_timeout(30)
    try:
        yield d
    finally:
        d.quit()
