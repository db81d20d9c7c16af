"""``fastflow accounts ls|info|usage`` against an in-process server with
two accounts and a monitoring port (``/accountz``), its errors (no http://
server, an unknown account, a monitor that wants credentials) and how it
prints imports (from a document written here: the accounts below export
but import nothing, so the test holds with or without the import core)."""

import asyncio
import json
import os

from fastflow.cli import accounts as cli_accounts
from fastflow.cli import main as cli_main
from fastflow.client import connect

from helpers import cli

USERS = [{"user": "a", "password": "pa", "account": "A"},
         {"user": "b", "password": "pb", "account": "B"}]
ACCOUNTS = {"A": {"exports": [{"stream": "orders.>", "accounts": ["B"]}],
                  "streams": [{"name": "ORDERS", "subjects": ["orders.>"]}]},
            "B": {"exports": [{"service": "svc.>"}, {"stream": "prices.>"}]}}


async def _run(capsys, *argv):
    """``fastflow accounts *argv`` in this process (a thread: the server runs on this
    loop): (exit status, stdout, stderr)."""
    capsys.readouterr()
    rc = await asyncio.to_thread(cli_main, ["accounts"] + [str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


async def _traffic(srv):
    """3 events published in A (stored by ORDERS), 2 in B with one subscriber there;
    the connections, left open, are returned."""
    a = await connect(srv.url, user="a", password="pa")
    b = await connect(srv.url, user="b", password="pb")
    got = []
    b.subscribe("prices.>", got.append)
    await b.flush()
    for i in range(3):
        a.publish("orders.new", b'{"n": %d}' % i)
    for i in range(2):
        b.publish("prices.eur", b"1.%d" % i)
    await a.flush()
    await b.flush()
    for _ in range(200):
        if len(got) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(got) == 2
    return a, b


def _rows(out):
    """The lines of ``ls`` below its header, by account name."""
    lines = out.splitlines()
    assert lines[0].split() == ["ACCOUNT", "CONNS", "SUBS", "STREAMS", "EXPORTS", "IMPORTS"]
    return {ln.split()[0]: ln.split()[1:] for ln in lines[1:]}


def test_ls_info_usage(aloop, ffserver, capsys):
    async def main():
        async with ffserver(monitor=True, users=USERS, accounts=ACCOUNTS) as srv:
            a, b = await _traffic(srv)
            mon = "http://127.0.0.1:{}".format(srv.monitor_port)
            try:
                rc, out, err = await _run(capsys, "ls", "-s", mon)
                assert rc == 0, err
                rows = _rows(out)
                # conns, subs, streams, exports, imports; the system account marked
                assert rows["A"] == ["1", "1", "1", "1", "0"]
                assert rows["B"] == ["1", "1", "0", "2", "0"]
                assert rows["$SYS"][0] == "(system)" and "(system)" not in rows["A"]
                assert set(rows) == {"A", "B", "$G", "$SYS"}

                rc, out, err = await _run(capsys, "ls", "--json", "-s", mon)
                assert rc == 0, err
                doc = json.loads(out)
                assert doc["enabled"] is True and doc["system_account"] == "$SYS"
                assert doc["accounts"]["A"]["published"] == 3
                assert doc["accounts"]["B"]["exports"] == [
                    {"service": "svc.>", "response": "single", "response_threshold": 120.0},
                    {"stream": "prices.>"}]

                rc, out, err = await _run(capsys, "info", "A", "-s", mon)
                assert rc == 0, err
                lines = out.splitlines()
                assert lines[0] == "account A"
                assert "connections 1, subscriptions 1, published 3" in lines[1]
                assert lines[lines.index("exports:") + 1].split() == [
                    "stream", "orders.>", "to", "B"]
                assert lines[lines.index("imports:") + 1].strip() == "none"
                assert lines[-1] == "streams: ORDERS"
                rc, out, err = await _run(capsys, "info", "B", "-s", mon)
                assert rc == 0, err
                assert "service svc.>" in " ".join(out.split())
                assert "to every account; response single" in out
                assert out.splitlines()[-1] == "streams: none"
                rc, out, err = await _run(capsys, "info", "$SYS", "-s", mon)
                assert rc == 0 and out.splitlines()[0] == "account $SYS (system)"

                rc, out, err = await _run(capsys, "info", "B", "--json", "-s", mon)
                assert rc == 0, err
                assert list(json.loads(out)["accounts"]) == ["B"]

                rc, out, err = await _run(capsys, "usage", "-s", mon)
                assert rc == 0, err
                usage = {ln.split()[0]: " ".join(ln.split()[1:]) for ln in out.splitlines()}
                assert usage["A"].startswith("published 3, delivered 0")
                assert usage["B"].startswith("published 2, delivered 2")
                assert set(usage) == {"A", "B", "$G", "$SYS"}
                rc, out, err = await _run(capsys, "usage", "B", "--json", "-s", mon)
                assert rc == 0, err
                doc = json.loads(out)["accounts"]
                assert list(doc) == ["B"] and doc["B"]["published"] == 2
                assert doc["B"]["delivered"] == 2
            finally:
                await a.close()
                await b.close()
    aloop(main)


def test_unknown_account_and_port_errors(aloop, ffserver, capsys):
    async def main():
        async with ffserver(monitor=True, users=USERS, accounts=ACCOUNTS) as srv:
            mon = "http://127.0.0.1:{}".format(srv.monitor_port)
            for action in ("info", "usage"):
                rc, out, err = await _run(capsys, action, "nope", "-s", mon)
                assert rc == 1 and out == ""
                assert err.strip() == ("fastflow accounts: error: no account 'nope' "
                                       "(accounts: $G, $SYS, A, B)")
            # the native port is not the monitor
            rc, out, err = await _run(capsys, "ls", "-s", srv.url)
            assert rc == 1 and "accounts are read from the monitoring port" in err
    aloop(main)


def test_without_an_http_server():
    servers = [["-s", "fastflow://127.0.0.1:4232"], ["-s", "ws://127.0.0.1:8232"],
               ["-s", "nats://127.0.0.1:4222"]]
    if not os.environ.get("FASTFLOW_URL"):
        servers.append([])              # no -s at all
    for server in servers:
        r = cli("accounts", "ls", *server)
        assert r.returncode == 1, server
        assert r.stderr.strip() == (
            "fastflow accounts: error: accounts are read from the monitoring port: "
            "-s http://HOST:8232 (fastflow serve --monitor-port)"), server
        assert r.stdout == ""
    r = cli("accounts")
    assert r.returncode == 2 and "ls" in r.stdout and "usage" in r.stdout


def test_monitor_port_defaults_to_8232():
    assert cli_accounts._monitor_url("http://10.0.0.1").port == 8232
    assert cli_accounts._monitor_url("http://10.0.0.1/").port == 8232
    assert cli_accounts._monitor_url("http://10.0.0.1:9000").port == 9000
    assert cli_accounts._monitor_url("https://mon.example").port == 8232


def test_monitor_credentials(aloop, ffserver, capsys):
    async def main():
        async with ffserver(monitor=True, users=USERS, accounts=ACCOUNTS,
                            monitor_token="s3cret",
                            monitor_users=[{"user": "ops", "password": "opw"}]) as srv:
            mon = "http://127.0.0.1:{}".format(srv.monitor_port)
            rc, out, err = await _run(capsys, "ls", "-s", mon)
            assert rc == 1 and out == ""
            assert err.strip() == ("fastflow accounts: error: the monitoring port needs "
                                   "credentials: --token or --user/--password")
            rc, out, err = await _run(capsys, "ls", "--token", "wrong", "-s", mon)
            assert rc == 1 and "refused these credentials" in err
            rc, out, err = await _run(capsys, "ls", "--token", "s3cret", "-s", mon)
            assert rc == 0, err
            assert set(_rows(out)) == {"A", "B", "$G", "$SYS"}
            rc, out, err = await _run(capsys, "info", "A", "--user", "ops", "--password", "opw",
                                      "-s", mon)
            assert rc == 0, err
            assert out.splitlines()[-1] == "streams: ORDERS"
    aloop(main)


# -- imports, as a server with the import core reports them ---------------------------------

DOC = {"server_id": "X", "now": "2026-01-01T00:00:00Z", "enabled": True,
       "system_account": "$SYS", "accounts": {"B": {
           "name": "B", "system": False, "exports": [], "streams": [], "subscriptions": 2,
           "published": 7, "delivered": 9, "connections": 1, "metered_bytes": 640,
           "imports": [
               {"stream": "orders.>", "account": "A", "prefix": "partner.acme",
                "local": "partner.acme.orders.>", "forwarded": 5, "forwarded_bytes": 320,
                "refused": 1, "looped": 0},
               {"service": "svc.>", "account": "C", "local": "svc.>", "forwarded": 4,
                "forwarded_bytes": 80, "refused": 0, "looped": 0, "requests": 4,
                "responses": 3, "pending": 1, "expired": 0, "responses_refused": 0}]}}}


def test_imports_are_printed(capsys):
    acct = DOC["accounts"]["B"]
    cli_accounts._info(acct)
    lines = capsys.readouterr().out.splitlines()
    i = lines.index("imports:")
    assert lines[i + 1].split() == ["stream", "orders.>", "from", "A", "as",
                                    "partner.acme.orders.>"]
    assert lines[i + 2].strip() == "forwarded 5, forwarded bytes 320, refused 1, looped 0"
    assert lines[i + 3].split() == ["service", "svc.>", "from", "C", "as", "svc.>"]
    assert lines[i + 4].strip() == ("forwarded 4, forwarded bytes 80, refused 0, looped 0, "
                                    "requests 4, responses 3, pending 1, expired 0, "
                                    "responses refused 0")
    cli_accounts._ls([acct])
    assert capsys.readouterr().out.splitlines()[1].split() == ["B", "1", "2", "0", "0", "2"]
    # usage: what metering adds (metered_bytes here) is printed too
    cli_accounts._usage([acct])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(None, 1) == ["B", "published 7, delivered 9, metered bytes 640"]
    assert lines[1] == ("  import stream  orders.> from A as partner.acme.orders.>: "
                        "forwarded 5, forwarded bytes 320, refused 1, looped 0")
    assert lines[2].startswith("  import service svc.> from C as svc.>: forwarded 4,")
    assert lines[2].endswith("requests 4, responses 3, pending 1, expired 0, "
                             "responses refused 0")
