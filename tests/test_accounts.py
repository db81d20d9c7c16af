"""Accounts, exports and imports (docs/accounts.md): the configuration's
checks, then the same scenarios through nats-py against nats-server (its
account semantics are the reference) and the NATS door, then every other
door of one server."""

import asyncio
import json
import urllib.request

import pytest

from fastflow.accounts import check_accounts, pattern_within
from fastflow.server.config import ConfigError, ServerConfig

from test_nats import Clients, flush, take

nats = pytest.importorskip("nats")
NATS_ERRORS = pytest.importorskip("nats.errors")

# two companies: acme exports its orders (to everyone) and a quote service
# (to globex only); globex imports both under prefixes; initech imports the
# orders without a prefix; umbrella imports nothing
USERS = [{"user": "acme", "password": "pa", "account": "acme"},
         {"user": "globex", "password": "pg", "account": "globex"},
         {"user": "initech", "password": "pi", "account": "initech"},
         {"user": "umbrella", "password": "pu", "account": "umbrella"}]
ACCOUNTS = {
    "acme": {"exports": [{"stream": "orders.>"},
                         {"service": "quotes.*", "accounts": ["globex"]}]},
    "globex": {"imports": [{"stream": "orders.>", "account": "acme", "prefix": "partner.acme"},
                           {"service": "quotes.*", "account": "acme", "prefix": "acme"}]},
    "initech": {"imports": [{"stream": "orders.eu.>", "account": "acme"}]},
    "umbrella": {},
}
SETTINGS = {"users": USERS, "accounts": ACCOUNTS}


# -- the configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("inner, outer, want", [
    ("a.b", "a.b", True), ("a.b", "a.*", True), ("a.*", "a.b", False), ("a.b.c", "a.>", True),
    ("a.>", "a.>", True), ("a.>", "a.*", False), ("a.*", "a.>", True), ("a", "a.>", False),
    ("a.b", ">", True), ("$SYS.x", ">", False), ("$SYS.x", "*.x", False), ("*.x", "*.x", True),
    ("a.*.c", "a.>", True), ("a.*.c", "*.*.c", True), ("a.*.c", "*.b.c", False),
    (">", ">", True), ("a.b", "a.b.c", False), ("a.b.c", "a.b", False),
])
def test_pattern_within(inner, outer, want):
    assert pattern_within(inner, outer) is want


@pytest.mark.parametrize("accounts, message", [
    ({"a": {"imports": [{"stream": "x", "account": "nope"}]}}, "no account 'nope'"),
    ({"a": {"imports": [{"stream": "x", "account": "a"}]}}, "cannot import from itself"),
    ({"a": {}, "b": {"imports": [{"stream": "x", "account": "a"}]}},
     "exports no stream covering 'x'"),
    ({"a": {"exports": [{"stream": "x.*"}]}, "b": {"imports": [{"stream": "x.>",
                                                                "account": "a"}]}},
     "exports no stream covering 'x.>'"),
    ({"a": {"exports": [{"service": "x"}]}, "b": {"imports": [{"stream": "x", "account": "a"}]}},
     "exports no stream covering"),
    ({"a": {"exports": [{"stream": "x", "accounts": ["c"]}]}, "c": {},
      "b": {"imports": [{"stream": "x", "account": "a"}]}}, "only to c"),
    ({"a": {"imports": [{"stream": "x", "account": "b", "prefix": "p.*"}]}, "b": {}},
     "no wildcards in a prefix"),
    ({"a b": {}}, "account name"),
    ({"a": {"exports": [{"stream": "x", "service": "y"}]}}, "one 'stream' or one 'service'"),
    ({"a": {"exports": [{"stream": "x..y"}]}}, "x..y"),
    ({"a": {"exports": [{"stream": "x", "response": "single"}]}}, "for service exports"),
    ({"a": {"exports": [{"service": "x", "response": "many"}]}}, "'single' or 'stream'"),
    ({"a": {"bogus": 1}}, "unknown key 'bogus'"),
])
def test_a_bad_accounts_config_is_refused_with_its_reason(accounts, message):
    with pytest.raises(ConfigError, match=None) as ei:
        ServerConfig(accounts=accounts)
    assert message in str(ei.value)


def test_users_name_accounts_that_exist():
    with pytest.raises(ConfigError, match="no account 'nope'"):
        ServerConfig(users=[{"user": "u", "password": "p", "account": "nope"}],
                     accounts={"a": {}})
    specs = check_accounts(ACCOUNTS, "$SYS")
    assert sorted(specs) == ["$G", "$SYS", "acme", "globex", "initech", "umbrella"]
    imp = specs["globex"].imports[0]
    assert imp.local == "partner.acme.orders.>" and imp.export.subject == "orders.>"


# -- NATS: the reference's semantics ----------------------------------------------------------


async def _scenario(url, server):
    """Who receives what: each account subscribes to everything it might
    see, acme publishes orders (exported) and secrets (not), globex
    requests a quote twice (the service answers twice per request: only
    the first answer crosses), umbrella publishes on acme's subject
    names."""
    out = {}
    async with Clients(nats) as cl:
        conns = {}
        subs = {}
        for u in USERS:
            nc = conns[u["user"]] = await cl.connect(url, user=u["user"], password=u["password"])
            subs[u["user"]] = await nc.subscribe(">")
        acme = conns["acme"]

        async def answer(msg):
            await acme.publish(msg.reply, b"quote:" + msg.data)
            await acme.publish(msg.reply, b"again:" + msg.data)

        await acme.subscribe("quotes.*", cb=answer)
        for nc in conns.values():
            await flush(nc)
        await acme.publish("orders.eu.1", b"o1")
        await acme.publish("orders.us.2", b"o2")
        await acme.publish("secrets.1", b"s1")
        await conns["umbrella"].publish("orders.eu.9", b"u9")
        await conns["globex"].publish("partner.acme.orders.eu.7", b"g7")    # local only
        for nc in conns.values():
            await flush(nc)
        rep = await conns["globex"].request("acme.quotes.eur", b"10", timeout=2)
        out["reply"] = rep.data.decode()
        with pytest.raises((NATS_ERRORS.NoRespondersError, NATS_ERRORS.TimeoutError)):
            # (no quote service in umbrella's account)
            await conns["umbrella"].request("acme.quotes.eur", b"1", timeout=0.3)
        await asyncio.sleep(0.1)
        for name, sub in subs.items():
            got = await take(conns[name], sub, quiet=0.05)
            # (inboxes and reply subjects are random: their shape is compared)
            out[name] = sorted(
                ("_INBOX" if m.subject.startswith("_INBOX.") else
                 "_R_" if m.subject.startswith("_R_.") else m.subject, m.data.decode(),
                 bool(m.reply)) for m in got)
    return out


def test_exports_and_imports_like_nats_server(aloop, natsd, ffnats):
    async def run():
        async with natsd(**SETTINGS) as ns:
            want = await _scenario(ns.url, ns)
        async with ffnats(**SETTINGS) as srv:
            got = await _scenario(srv.nats_url, srv)
        return want, got

    want, got = aloop(run)
    assert got == want
    # what that is, spelled out
    assert got["reply"] == "quote:10"
    assert ("partner.acme.orders.eu.1", "o1", False) in got["globex"]
    assert ("orders.eu.1", "o1", False) in got["initech"]
    assert ("orders.us.2", "o2", False) not in got["initech"]
    assert not any(s.startswith("secrets") for s, _, _ in got["globex"] + got["initech"])
    # (umbrella sees its own request: nobody in its account answers it)
    assert got["umbrella"] == [("acme.quotes.eur", "1", True), ("orders.eu.9", "u9", False)]
    # the request crossed with a reply subject of acme's account, once
    assert [m for m in got["acme"] if m[0] == "quotes.eur"] == [("quotes.eur", "10", True)]


# -- every door of one server -----------------------------------------------------------------


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_accountz_shows_the_imports_and_their_traffic(aloop, ffnats):
    async def run():
        async with ffnats(monitor=True, **SETTINGS) as srv:
            async with Clients(nats) as cl:
                acme = await cl.connect(srv.nats_url, user="acme", password="pa")
                for i in range(5):
                    await acme.publish("orders.eu.{}".format(i), b"x" * 10)
                await flush(acme)
            doc = await asyncio.get_running_loop().run_in_executor(
                None, _get_json, "http://127.0.0.1:{}/accountz".format(srv.monitor_port))
            return doc

    doc = aloop(run)
    assert doc["enabled"] is True and doc["system_account"] == "$SYS"
    assert set(doc["accounts"]) == {"$G", "$SYS", "acme", "globex", "initech", "umbrella"}
    g = doc["accounts"]["globex"]
    orders = [i for i in g["imports"] if i.get("stream") == "orders.>"][0]
    assert orders["local"] == "partner.acme.orders.>" and orders["forwarded"] == 5
    assert orders["forwarded_bytes"] > 50
    i = [i for i in doc["accounts"]["initech"]["imports"]][0]
    assert i["forwarded"] == 5
    assert doc["accounts"]["acme"]["published"] == 5
