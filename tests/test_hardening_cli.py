"""What a first-time user meets (issue 11, "first contact"): the command
line against ``fastflow serve`` (native port and NATS door) and against a
real nats-server, the units of sizes and durations, config errors that
name their file, the monitoring endpoints next to nats-server's, and the
packaging metadata.  The CLI runs as a subprocess (``python -m fastflow``)."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

import fastflow
from fastflow.server.config import ConfigError, parse_duration, parse_size

from helpers import cli
from peers import REPO, free_port


def spawn(*args):
    """A long-running CLI command (sub, reply): its stderr line by line."""
    return subprocess.Popen([sys.executable, "-m", "fastflow"] + [str(a) for a in args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def finish(proc, timeout=20):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    return out, err


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode("utf-8")


# -- the command line itself -------------------------------------------------------------------


def test_bare_command_prints_help_and_version():
    r = cli()
    assert r.returncode == 2
    assert r.stdout.startswith("usage: fastflow") and "nats://" in r.stdout
    for command in ("pub", "sub", "req", "reply", "streams", "consumers", "serve", "demo"):
        assert re.search(r"^\s+{}\s".format(command), r.stdout, re.M), command
    r = cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("fastflow {} (".format(fastflow.__version__))


# -- sizes and durations: one syntax for the config and the CLI ----------------------------------


@pytest.mark.parametrize("text, expected", [
    ("1d", 86400.0), ("1h30m", 5400.0), ("1h", 3600.0), ("90", 90.0), ("2.5", 2.5),
    ("500ms", 0.5), ("1d 12h", 129600.0), ("1.5h", 5400.0), ("1w", 604800.0), (" 5m ", 300.0),
    (7, 7.0), (0.25, 0.25)])
def test_parse_duration_forms(text, expected):
    assert parse_duration(text, "max_age") == expected


@pytest.mark.parametrize("text", ["1h30", "30m1", "1y", "x", "", "1 2", "-1s", "h", True, -1])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError, match=r"^max_age: .*duration.*got "):
        parse_duration(text, "max_age")


@pytest.mark.parametrize("text, expected", [
    ("1GiB", 1 << 30), ("1GB", 10 ** 9), ("512MiB", 512 << 20), ("512", 512), (512, 512),
    ("4 KiB", 4096), ("64mib", 64 << 20), ("1TiB", 1 << 40), ("1.5KiB", 1536)])
def test_parse_size_forms(text, expected):
    assert parse_size(text, "max_bytes") == expected


@pytest.mark.parametrize("text", ["1 GiBs", "lots", "-1", "1.2.3MiB", True, -5])
def test_parse_size_rejects(text):
    with pytest.raises(ConfigError, match=r"^max_bytes: .*size.*got "):
        parse_size(text, "max_bytes")


def test_config_file_takes_the_units(tmp_path):
    from fastflow.server.config import ServerConfig, load_config

    path = tmp_path / "units.toml"
    path.write_text('[limits]\nmax_payload = "512KiB"\nstall_timeout = "1m30s"\n'
                    '[[streams]]\nname = "S"\nsubjects = ["s.>"]\nmax_age = "1d"\n'
                    'max_bytes = "1GiB"\n')
    cfg = ServerConfig(**load_config(str(path)))
    assert cfg.max_payload == 512 << 10 and cfg.stall_timeout == 90.0
    assert cfg.streams[0]["max_age"] == "1d"


@pytest.mark.parametrize("text, what", [
    ("port = 4232\nbogus = 1\n", r"unknown key 'bogus'"),
    ('[limits]\nmax_payload = "lots"\n', r"max_payload: expected a size"),
    ("port = 70000\n", r"port: expected 0\.\.65535"),
    ('[[streams]]\nname = "S"\nsubjects = ["s.>"]\nmax_age = "1q"\n',
     r"streams\[0\]\.max_age: expected a duration"),
    ("port = \n", r"not valid TOML"),
])
def test_config_errors_name_the_file(tmp_path, text, what):
    path = tmp_path / "server.toml"
    path.write_text(text)
    r = cli("serve", "-c", path, "--monitor-port", "0", timeout=20)
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert re.match(r"fastflow serve: error: {}: .*{}".format(re.escape(str(path)), what), line), \
        line


def test_a_bad_flag_is_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text("port = 4232\n")
    r = cli("serve", "-c", path, "--port", "70000", timeout=20)
    assert r.returncode == 2
    assert r.stderr.strip().endswith("fastflow serve: error: port: expected 0..65535, got 70000")


# -- the packaging metadata ---------------------------------------------------------------------


def test_pyproject_declares_what_a_plain_install_needs():
    try:
        import tomllib
    except ImportError:
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    deps = project["dependencies"]
    uv = [d for d in deps if d.startswith("uvloop")]
    assert uv and "sys_platform != 'win32'" in uv[0] and "CPython" in uv[0]
    assert any(d.startswith("tomli") and "python_version < '3.11'" in d for d in deps)
    extras = project["optional-dependencies"]
    assert any(d.startswith("numpy") for d in extras["test"])
    assert any(d.startswith("nats-py") for d in extras["nats"])
    assert not any(d.startswith("nats-py") for d in deps)      # the CLI imports it lazily


# -- the CLI over NATS: fastflow's NATS door and a real nats-server ------------------------------


@pytest.fixture(params=["fastflow", "nats-server"])
def nats_target(request, ffnatsproc, natsd, natspy):
    """A NATS URL: ``fastflow serve --nats-port`` or a real nats-server."""
    if request.param == "fastflow":
        return ffnatsproc().start().nats_url
    return natsd().start().url


def test_cli_pub_sub_over_nats(nats_target):
    url = nats_target
    sub = spawn("sub", "cli.>", "--count", "3", "--json", "-s", url)
    try:
        assert sub.stderr.readline().startswith("listening on cli.> at " + url)
        r = cli("pub", "cli.json", '{"a": [1, 2]}', "-s", url)
        assert r.returncode == 0, r.stderr
        assert "published 1 event to cli.json" in r.stderr
        r = cli("pub", "cli.text", "hello", "--type", "com.acme.t", "-s", url)
        assert r.returncode == 0, r.stderr
        r = cli("pub", "cli.typed", "[1]", "--content-type", "application/json", "-s", url)
        assert r.returncode == 0, r.stderr
        out, err = finish(sub)
        assert sub.returncode == 0, err
        lines = [json.loads(x) for x in out.splitlines()]
        assert [x["routing_subject"] for x in lines] == ["cli.json", "cli.text", "cli.typed"]
        assert lines[0]["data"] == {"a": [1, 2]}                # JSON data shows as JSON
        assert lines[1]["type"] == "com.acme.t" and lines[1]["data_base64"] == "aGVsbG8="
        assert lines[2]["datacontenttype"] == "application/json" and lines[2]["data"] == [1]
        # streams and consumers need the native port: said in one sentence
        r = cli("streams", "ls", "-s", url)
        assert r.returncode == 1
        assert "needs fastflow's native protocol" in r.stderr and "Traceback" not in r.stderr
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.communicate(timeout=10)


def test_cli_req_reply_over_nats(nats_target):
    url = nats_target
    replier = spawn("reply", "svc.echo", "--echo", "--count", "1", "-s", url)
    fixed = spawn("reply", "svc.fixed", "--body", "fixed answer", "--count", "1", "-s", url)
    try:
        assert replier.stderr.readline().startswith("answering requests on svc.echo at " + url)
        assert fixed.stderr.readline().startswith("answering requests on svc.fixed")
        r = cli("req", "svc.echo", "ping", "-s", url)
        assert (r.returncode, r.stdout) == (0, "ping\n"), r.stderr
        r = cli("req", "svc.fixed", "x", "--json", "-s", url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["data_base64"] == "Zml4ZWQgYW5zd2Vy"     # "fixed answer"
        r = cli("req", "svc.nobody", "x", "-s", url)
        assert r.returncode == 1 and "no responders on svc.nobody" in r.stderr
        out, err = finish(replier)
        assert replier.returncode == 0 and out.startswith("[#1] svc.echo"), err
        assert "disconnected" not in err                        # a clean close is no drop
        finish(fixed)
        assert fixed.returncode == 0
    finally:
        for p in (replier, fixed):
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)


def test_cli_pub_ack_over_nats_without_jetstream(ffnatsproc, natspy):
    server = ffnatsproc().start()
    r = cli("pub", "x.y", "data", "--ack", "-s", server.nats_url)
    assert r.returncode == 1
    assert "has no JetStream" in r.stderr and "fastflow://" in r.stderr


def test_cli_nats_connection_refused_is_one_sentence(natspy):
    r = cli("pub", "x.y", "data", "-s", "nats://127.0.0.1:{}".format(free_port()),
            "--timeout", "2")
    assert r.returncode == 1
    assert "could not connect to NATS server" in r.stderr and "Traceback" not in r.stderr


def test_cli_without_nats_py_says_how_to_install_it(tmp_path):
    # a 'nats' package that cannot be imported stands for an install without nats-py
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / "__init__.py").write_text(
        "raise ImportError(\"No module named 'nats'\")\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    r = subprocess.run([sys.executable, "-m", "fastflow", "pub", "x.y", "data", "-s",
                        "nats://127.0.0.1:4222"], capture_output=True, text=True, timeout=30,
                       cwd=REPO, env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "fastflow pub: error: nats://127.0.0.1:4222 speaks the NATS protocol, which needs "
        "nats-py: pip install 'fastflow[nats]'"]
    r = subprocess.run([sys.executable, "-m", "fastflow", "--version"], capture_output=True,
                       text=True, timeout=30, cwd=REPO, env=env)
    assert r.returncode == 0                    # nothing else imports it


# -- the CLI on the native port: streams, consumers, acks ----------------------------------------


def test_cli_streams_add_and_read(ffproc):
    url = ffproc().start().url
    r = cli("streams", "add", "ORD", "ord.>", "--max-age", "1d", "--max-bytes", "1GiB",
            "--max-event-size", "64KiB", "--json", "-s", url)
    assert r.returncode == 0, r.stderr
    ret = json.loads(r.stdout)["retention"]
    assert (ret["max_age"], ret["max_bytes"], ret["max_event_size"]) == (86400.0, 1 << 30,
                                                                         64 << 10)
    r = cli("streams", "add", "BAD", "bad.>", "--max-age", "1q", "-s", url)
    assert r.returncode == 2 and "--max-age: expected a duration" in r.stderr
    # pub --ack: stored, or said that no stream stored it
    r = cli("pub", "nostream.x", "data", "--ack", "-s", url)
    assert r.returncode == 1
    assert "the event was stored by no stream: no stream captures nostream.x" in r.stderr
    t_before = time.time_ns()
    r = cli("pub", "ord.1", '{"n": 1}', "--ack", "--count", "5", "-s", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["stored in ORD at seq {}".format(i) for i in range(1, 6)]
    # streams read: everything, from a seq, the last N, from a time
    r = cli("streams", "read", "ORD", "-s", url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ['[{}] ord.1: {{"n": 1}}'.format(i) for i in range(1, 6)]
    assert "5 events of ORD" in r.stderr
    r = cli("streams", "read", "ORD", "--seq", "4", "--json", "-s", url)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["seq"], x["stream"], x["data"]) for x in got] == [(4, "ORD", {"n": 1}),
                                                                 (5, "ORD", {"n": 1})]
    r = cli("streams", "read", "ORD", "--last", "2", "-s", url)
    assert [x.split()[0] for x in r.stdout.splitlines()] == ["[4]", "[5]"]
    r = cli("streams", "read", "ORD", "--time", str(t_before - 10 ** 9), "-n", "1", "-s", url)
    assert [x.split()[0] for x in r.stdout.splitlines()] == ["[1]"]
    r = cli("streams", "read", "ORD", "--time", "1h", "--count", "2", "-s", url)
    assert [x.split()[0] for x in r.stdout.splitlines()] == ["[1]", "[2]"]
    r = cli("streams", "read", "ORD", "--time", "yesterday-ish", "-s", url)
    assert r.returncode == 2 and "RFC 3339" in r.stderr


def test_cli_consumers(ffproc):
    url = ffproc().start().url
    r = cli("streams", "add", "ORD", "ord.>", "-s", url)
    assert r.returncode == 0, r.stderr
    r = cli("pub", "ord.1", '{"n": 1}', "--count", "5", "-s", url)
    assert r.returncode == 0, r.stderr
    # durable consumers: add, ls, fetch without acking, ack by seq, fetch with ack
    r = cli("consumers", "add", "ORD", "C1", "--ack", "explicit", "--ack-wait", "1m", "-s", url)
    assert r.returncode == 0, r.stderr
    r = cli("consumers", "fetch", "ORD", "C1", "-n", "2", "--no-ack", "-s", url)
    assert r.returncode == 0, r.stderr
    assert [x.split()[0] for x in r.stdout.splitlines()] == ["[1]", "[2]"]
    r = cli("consumers", "ls", "ORD", "-s", url)
    head, row = r.stdout.splitlines()
    assert head.split() == ["NAME", "FILTER", "ACK", "DELIVERED", "ACKED", "PENDING", "LAG"]
    assert row.split()[:6] == ["C1", ">", "explicit", "2", "0", "2"]
    r = cli("consumers", "ack", "ORD", "C1", "1", "2", "-s", url)
    assert (r.returncode, r.stdout.strip()) == (0, "acknowledged 1, 2"), r.stderr
    r = cli("consumers", "fetch", "ORD", "C1", "-n", "10", "--json", "-s", url)
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [3, 4, 5]
    r = cli("consumers", "ls", "ORD", "--json", "-s", url)
    (c1,) = json.loads(r.stdout)
    assert (c1["name"], c1["acked"], c1["pending"]) == ("C1", 5, 0)
    r = cli("consumers", "fetch", "ORD", "NOPE", "-s", url)
    assert r.returncode == 1 and "NOPE" in r.stderr and "Traceback" not in r.stderr
    r = cli("consumers", "rm", "ORD", "C1", "-s", url)
    assert (r.returncode, r.stdout) == (0, "deleted consumer C1 of ORD\n"), r.stderr


def test_cli_reply_on_the_native_port(ffproc, tmp_path):
    url = ffproc().start().url
    answer = tmp_path / "answer.json"
    answer.write_text('{"ok": true}')
    replier = spawn("reply", "svc.>", "--body", "@{}".format(answer), "--count", "2", "-s", url)
    echo = spawn("reply", "echo.x", "--echo", "--count", "1", "-s", url)
    try:
        assert replier.stderr.readline().startswith("answering requests on svc.> at ")
        assert echo.stderr.readline().startswith("answering requests on echo.x at ")
        r = cli("req", "svc.a", "one", "-s", url)
        assert (r.returncode, r.stdout) == (0, '{"ok": true}\n'), r.stderr
        r = cli("req", "svc.b", "two", "--json", "-s", url)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["data"] == {"ok": True}
        r = cli("req", "echo.x", "ping", "-s", url)
        assert (r.returncode, r.stdout) == (0, "ping\n"), r.stderr
        out, err = finish(replier)
        assert replier.returncode == 0, err
        assert out.splitlines() == ["[#1] svc.a: one", "[#2] svc.b: two"]
        out, err = finish(echo)
        assert echo.returncode == 0 and out == "[#1] echo.x: ping\n", err
    finally:
        for p in (replier, echo):
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=10)


def test_cli_inbox_prefix_and_duplicate_window(ffproc, tmp_path):
    """--inbox-prefix: a user who may subscribe to its own inboxes only can
    make requests; streams add --duplicate-window takes the config's units."""
    conf = tmp_path / "server.toml"
    conf.write_text(
        '[[auth.users]]\nuser = "alice"\npassword = "alice-pw"\n'
        'permissions = { publish = ["svc.>"], subscribe = ["_INBOX.alice.>"] }\n'
        '[[auth.users]]\nuser = "bob"\npassword = "bob-pw"\n'
        'permissions = { publish = ["none.>"], subscribe = ["svc.>"], allow_responses = true }\n'
        '[[auth.users]]\nuser = "admin"\npassword = "admin-pw"\n')
    url = ffproc("--config", conf).start().url
    alice = ("--user", "alice", "--password", "alice-pw", "-s", url)
    replier = spawn("reply", "svc.>", "--echo", "--count", "2", "--user", "bob", "--password",
                    "bob-pw", "-s", url)
    try:
        assert replier.stderr.readline().startswith("answering requests on svc.> at ")
        r = cli("req", "svc.a", "hi", *alice)
        assert r.returncode != 0 and "_INBOX" in r.stderr, (r.stdout, r.stderr)
        r = cli("req", "svc.a", "hi", "--inbox-prefix", "_INBOX.alice", *alice)
        assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
        out, err = finish(replier)
        # (the refused request went out too: the client learns of the refused
        # inbox subscription after it sent the request, as nats-py does)
        assert replier.returncode == 0 and out == "[#1] svc.a: hi\n[#2] svc.a: hi\n", err
    finally:
        if replier.poll() is None:
            replier.kill()
            replier.communicate(timeout=10)
    r = cli("streams", "add", "ORD", "ord.>", "--duplicate-window", "5m", "--json", "--user",
            "admin", "--password", "admin-pw", "-s", url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["retention"]["duplicate_window"] == 300.0


def test_cli_reconnects_visibly(ffnatsproc, natspy):
    server = ffnatsproc().start()
    subs = [spawn("sub", "rc.>", "--count", "1", "-s", server.url),
            spawn("sub", "rc.>", "--count", "1", "-s", server.nats_url)]
    try:
        for s in subs:
            assert s.stderr.readline().startswith("listening on rc.>")
        assert server.stop() == 0
        for s in subs:
            line = s.stderr.readline()
            assert line.startswith("fastflow sub: disconnected from ") and "reconnecting" in line
        server.start()
        for s in subs:
            while True:
                line = s.stderr.readline()
                assert line, "the subscriber ended without reconnecting"
                if "reconnected" in line:
                    break
            assert line.startswith("fastflow sub: reconnected to ")
        r = cli("pub", "rc.x", "back", "-s", server.url)
        assert r.returncode == 0, r.stderr
        for s in subs:
            out, err = finish(s)
            assert s.returncode == 0 and out == "[#1] rc.x: back\n", err
    finally:
        for s in subs:
            if s.poll() is None:
                s.kill()
                s.communicate(timeout=10)


# -- monitoring: nats-server's field names and types ----------------------------------------------


_VARZ_LIKE_NATS = ("server_id", "server_name", "version", "proto", "host", "port", "now", "start",
                   "uptime", "mem", "cores", "connections", "total_connections", "in_msgs",
                   "out_msgs", "in_bytes", "out_bytes", "slow_consumers", "subscriptions",
                   "max_connections", "max_payload", "max_pending", "max_control_line",
                   "http_host", "http_port")


def test_varz_subsz_like_nats_server(ffnatsproc, natsd):
    ff = ffnatsproc(monitor=True).start()
    mport = free_port()
    natsd(conf={"http": "127.0.0.1:{}".format(mport)}).start()
    r = cli("pub", "m.x", "data", "-s", ff.url)
    assert r.returncode == 0, r.stderr
    # the start-up line names every endpoint
    from fastflow.server.monitor import ENDPOINTS

    line = next(x for x in ff.log.splitlines() if "monitoring on http://" in x)
    for e in ENDPOINTS:
        assert e.lstrip("/") in line, (e, line)
    status, _ct, root = http_get(ff.monitor_port, "/")
    assert json.loads(root)["endpoints"] == list(ENDPOINTS)

    ours = json.loads(http_get(ff.monitor_port, "/varz")[2])
    theirs = json.loads(http_get(mport, "/varz")[2])
    for k in _VARZ_LIKE_NATS:
        assert k in theirs, k
        assert type(ours[k]) is type(theirs[k]), (k, ours[k], theirs[k])
    # nats-server's cpu is a float64 percentage (JSON 0 when idle)
    assert isinstance(theirs["cpu"], (int, float)) and type(ours["cpu"]) is float
    assert 0.0 <= ours["cpu"] <= 100.0 * (os.cpu_count() or 1)
    assert ours["mem"] > 1 << 20 and ours["in_msgs"] >= 1
    assert re.fullmatch(r"(\d+y)?(\d+d)?(\d+h)?(\d+m)?\d+s", ours["uptime"]), ours["uptime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", ours["now"])
    assert ours["http_port"] == ff.monitor_port

    status, ctype, body = http_get(ff.monitor_port, "/subsz")
    assert (status, ctype) == (200, "application/json")
    ours = json.loads(body)
    theirs = json.loads(http_get(mport, "/subsz")[2])
    for k in ("num_subscriptions", "num_cache", "num_inserts", "num_removes", "num_matches",
              "max_fanout"):
        assert k in theirs and type(ours[k]) is int, k
    for k in ("cache_hit_rate", "avg_fanout"):
        assert k in theirs and isinstance(ours[k], float), k
    assert ours["num_matches"] >= 1 and 0.0 <= ours["cache_hit_rate"] <= 1.0


def test_uptime_text_like_nats_server():
    from fastflow.server.monitor import uptime_text

    assert [uptime_text(s) for s in (0, 59.9, 60, 3605, 90061, 366 * 86400)] == [
        "0s", "59s", "1m0s", "1h0m5s", "1d1h1m1s", "1y1d0h0m0s"]


def test_metrics_without_float_noise(ffserver, aloop):
    from fastflow.server.monitor import _num

    assert _num(0.1 + 0.2) == "0.3" and _num(3.0) == "3" and _num(7) == "7"
    assert _num(1 / 3) == "0.333333333333333" and _num(True) == "1"
    assert (_num(float("nan")), _num(float("inf")), _num(-float("inf"))) == (
        "NaN", "+Inf", "-Inf")

    async def main():
        async with ffserver(monitor=True) as srv:
            import asyncio

            loop = asyncio.get_running_loop()
            _s, ctype, text = await loop.run_in_executor(None, http_get, srv.monitor_port,
                                                         "/metrics")
            assert ctype.startswith("text/plain; version=0.0.4")
            for line in text.splitlines():
                if line.startswith("#"):
                    continue
                value = line.rsplit(" ", 1)[1]
                assert re.fullmatch(r"-?\d+(\.\d+)?(e[-+]\d+)?|NaN|[-+]Inf", value), line
                # at most 15 significant digits: no 0.30000000000000004
                digits = value.lstrip("-").split("e")[0].replace(".", "").lstrip("0")
                assert len(digits) <= 15, line

    aloop(main)
