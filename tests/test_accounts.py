"""Accounts, exports and imports (docs/accounts.md): the configuration's
checks, then the same scenarios through nats-py against nats-server (its
account semantics are the reference) and the NATS door, then every other
door of one server."""

import asyncio
import base64
import json
import urllib.request

import pytest

from fastflow.accounts import check_accounts, pattern_within
from fastflow.server.config import ConfigError, ServerConfig
from peers import require_peer

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
            base = "http://127.0.0.1:{}".format(srv.monitor_port)
            doc = await asyncio.to_thread(_get_json, base + "/accountz")
            per = {a: await asyncio.to_thread(_get_json, base + "/subsz?acc=" + a)
                   for a in ("acme", "umbrella")}
            none = await asyncio.to_thread(_get_json, base + "/streamz?acc=nope")
            return doc, per, none

    doc, per, none = aloop(run)
    # the per-engine endpoints take ?acc=: acme's engine matched its publishes
    assert per["acme"]["num_matches"] >= 5 and per["umbrella"]["num_matches"] == 0
    assert none["error"] == "no account 'nope'"
    assert doc["enabled"] is True and doc["system_account"] == "$SYS"
    assert set(doc["accounts"]) == {"$G", "$SYS", "acme", "globex", "initech", "umbrella"}
    g = doc["accounts"]["globex"]
    orders = [i for i in g["imports"] if i.get("stream") == "orders.>"][0]
    assert orders["local"] == "partner.acme.orders.>" and orders["forwarded"] == 5
    assert orders["forwarded_bytes"] == 50             # (payload bytes)
    assert orders["usage"] == {"msgs": 5, "bytes": 50}
    assert g["usage"]["imported_msgs"] == 5 and g["usage"]["in_msgs"] == 0
    assert doc["accounts"]["acme"]["usage"]["exported_msgs"] == 10    # (to globex, initech)
    assert doc["accounts"]["acme"]["users"]["acme"]["in_bytes"] == 50
    i = [i for i in doc["accounts"]["initech"]["imports"]][0]
    assert i["forwarded"] == 5
    assert doc["accounts"]["acme"]["published"] == 5


TOML = """
[auth]
users = [
  {user = "acme", password = "pa", account = "acme"},
  {user = "globex", password = "pg", account = "globex"},
  {user = "initech", password = "pi", account = "initech"},
  {user = "umbrella", password = "pu", account = "umbrella"},
]

[accounts.acme]
exports = [{stream = "orders.>"}, {service = "quotes.*", accounts = ["globex"]}]
streams = [{name = "orders", subjects = ["orders.>"]}]

[accounts.globex]
imports = [
  {stream = "orders.>", account = "acme", prefix = "partner.acme"},
  {service = "quotes.*", account = "acme", prefix = "acme"},
]
streams = [{name = "partner", subjects = ["partner.>"]}]

[accounts.initech]
imports = [{stream = "orders.eu.>", account = "acme"}]

[accounts.umbrella]
"""


class _Paho:
    """A paho-mqtt 5 client logged in as ``user``, recording what it gets."""

    def __init__(self, port, user, password, client_id, ws=False):
        import queue
        import threading

        import paho.mqtt.client as mqtt

        self.msgs = queue.Queue()
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5, transport="websockets" if ws else "tcp")
        if ws:
            self.c.ws_set_options(path="/mqtt")
        self.c.username_pw_set(user, password)
        self.c.on_message = lambda c, u, m: self.msgs.put(m)
        self.c.on_connect = lambda c, u, f, rc, p: self.ready.set()
        self.c.on_subscribe = lambda c, u, mid, codes, p: self.ready.set()
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        assert self.ready.wait(5), "no CONNACK"

    def sub(self, topic, qos=0):
        self.ready.clear()
        self.c.subscribe(topic, qos)
        assert self.ready.wait(5), "no SUBACK"

    def pub(self, topic, payload, qos=0, retain=False):
        self.c.publish(topic, payload, qos, retain).wait_for_publish(5)

    def drain(self, quiet=0.3):
        import queue

        out = []
        while True:
            try:
                m = self.msgs.get(timeout=quiet)
            except queue.Empty:
                return out
            out.append((m.topic, m.payload, m.retain))

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_every_door_keeps_accounts_apart_and_honours_imports(ffproc, tmp_path, free_port):
    """One server, accounts from its TOML file: native, NATS, HTTP (SSE and
    publishes), WebSocket and MQTT clients of four accounts; each sees its
    own account and what it imports, nothing else; streams, retained
    messages and MQTT client ids are per account."""
    require_peer("paho-mqtt")
    import fastflow.client as fc
    from fastflow.client.http import HttpConnection

    conf = tmp_path / "ff.toml"
    conf.write_text(TOML)
    http, mqtt, nport = free_port(), free_port(), free_port()
    sp = ffproc("-c", str(conf), "--http-port", http, "--mqtt-port", mqtt, "--nats-port", nport,
                "--data-dir", str(tmp_path / "data"))
    sp.start()
    base = "http://127.0.0.1:{}".format(http)

    async def main():
        acme = await fc.connect(sp.url, user="acme", password="pa")
        umbrella = await fc.connect(sp.url, user="umbrella", password="pu")
        seen = {"acme": [], "umbrella": []}
        acme.subscribe(">", lambda ev: seen["acme"].append(ev.routing_subject))
        umbrella.subscribe(">", lambda ev: seen["umbrella"].append(ev.routing_subject))
        await acme.flush()
        await umbrella.flush()
        # SSE for globex on its imported subjects, with Basic credentials
        sse_r, sse_w = await asyncio.open_connection("127.0.0.1", http)
        sse_w.write(b"GET /events/partner.acme.%3E HTTP/1.1\r\nHost: x\r\n"
                    b"Accept: text/event-stream\r\nAuthorization: Basic "
                    + base64.b64encode(b"globex:pg") + b"\r\n\r\n")
        head = await asyncio.wait_for(sse_r.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        # MQTT: globex and umbrella, with the same client id (two accounts: two sessions)
        mg = await asyncio.to_thread(_Paho, mqtt, "globex", "pg", "same-id")
        mu = await asyncio.to_thread(_Paho, mqtt, "umbrella", "pu", "same-id")
        mw = await asyncio.to_thread(_Paho, http, "initech", "pi", "same-id", True)  # WebSocket
        await asyncio.to_thread(mg.sub, "#")
        await asyncio.to_thread(mu.sub, "#")
        await asyncio.to_thread(mw.sub, "#")
        # acme publishes from the native door, umbrella over HTTP on the same subjects
        acme.publish("orders.eu.1", b"o1")
        acme.publish("secrets.1", b"s1")
        await acme.flush()
        async with HttpConnection(base, user="umbrella", password="pu") as hc:
            resp = await hc.request("POST", "/events/orders.eu.2", b"u2",
                                    headers=(("ce-id", "u2"), ("ce-source", "/u"),
                                             ("ce-type", "t"), ("ce-specversion", "1.0")))
            assert resp.status in (200, 202, 204), resp.status
            await resp.read()
        # acme retains a message over MQTT: only acme's account keeps it
        ma = await asyncio.to_thread(_Paho, mqtt, "acme", "pa", "acme-1")
        await asyncio.to_thread(ma.pub, "orders/eu/3", b"o3", 1, True)
        got_g = await asyncio.to_thread(mg.drain)
        got_u = await asyncio.to_thread(mu.drain)
        assert sorted(got_g) == [("partner/acme/orders/eu/1", b"o1", False),
                                 ("partner/acme/orders/eu/3", b"o3", False)]
        assert got_u == [("orders/eu/2", b"u2", False)]
        assert sorted(await asyncio.to_thread(mw.drain, 0.05)) == [
            ("orders/eu/1", b"o1", False), ("orders/eu/3", b"o3", False)]
        mu2 = await asyncio.to_thread(_Paho, mqtt, "umbrella", "pu", "other")
        await asyncio.to_thread(mu2.sub, "orders/#")
        assert await asyncio.to_thread(mu2.drain) == []      # acme's retained stays in acme
        ma2 = await asyncio.to_thread(_Paho, mqtt, "acme", "pa", "acme-2")
        await asyncio.to_thread(ma2.sub, "orders/#")
        assert await asyncio.to_thread(ma2.drain) == [("orders/eu/3", b"o3", True)]
        text = b""
        while text.count(b"partner.acme.orders.eu.") < 2:
            text += await asyncio.wait_for(sse_r.read(65536), 5)
        assert b"partner.acme.orders.eu.1" in text and b"secrets" not in text
        sse_w.close()
        await sse_w.wait_closed()
        # streams: acme's holds its orders, globex's the imported ones; neither sees the other's
        async def own_streams(c):      # (the MQTT door keeps its state in mqtt_* streams)
            return [s["name"] for s in await c.streams() if not s["name"].startswith("mqtt_")]

        assert await own_streams(acme) == ["orders"]
        assert await own_streams(umbrella) == []
        globex = await fc.connect(sp.url, user="globex", password="pg")
        assert await own_streams(globex) == ["partner"]
        stored = [(e.routing_subject, e.data) async for e in globex.replay("partner", "first")]
        assert stored == [("partner.acme.orders.eu.1", b"o1"), ("partner.acme.orders.eu.3", b"o3")]
        # the service import, from the native door
        acme.subscribe("quotes.*", lambda ev, reply: acme.publish(reply, b"q:" + ev.data),
                       with_reply=True)
        await acme.flush()
        rep = await globex.request("acme.quotes.eur", b"7", timeout=3)
        assert rep.data == b"q:7"
        # (acme's answer goes out on a reply subject of its own account, as nats-server's)
        assert sorted(s if not s.startswith("_R_.") else "_R_" for s in seen["acme"]) == [
            "_R_", "orders.eu.1", "orders.eu.3", "quotes.eur", "secrets.1"]
        assert sorted(seen["umbrella"]) == ["orders.eu.2"]
        for c in (mg, mu, mw, ma, mu2, ma2):
            await asyncio.to_thread(c.close)
        for c in (acme, umbrella, globex):
            await c.close()

    asyncio.run(main())


def test_a_shared_stream_is_read_only_for_its_importer(aloop, ffserver):
    """acme shares its stream "orders" with globex (as "acme-orders"):
    globex replays it and keeps a durable consumer on it, cannot purge,
    delete or shadow it, and sees none of acme's consumers; umbrella sees
    nothing of it; what globex read is metered under the import."""
    users = USERS
    accounts = {
        "acme": {"exports": [{"share": "orders", "accounts": ["globex"]}],
                 "streams": [{"name": "orders", "subjects": ["orders.>"]}]},
        "globex": {"imports": [{"share": "orders", "account": "acme", "as": "acme-orders"}]},
        "initech": {}, "umbrella": {}}
    import fastflow.client as fc
    from fastflow.errors import ServerError

    async def run():
        async with ffserver(users=users, accounts=accounts) as srv:
            acme = await fc.connect(srv.url, user="acme", password="pa")
            for i in range(5):
                acme.publish("orders.{}".format(i), b"o%d" % i)
            await acme.flush()
            await acme.add_consumer("orders", "acme-own")
            g = await fc.connect(srv.url, user="globex", password="pg")
            listed = {s["name"]: s for s in await g.streams()}
            assert listed["acme-orders"]["shared_by"] == "acme"
            got = [(e.routing_subject, e.data) async for e in g.replay("acme-orders", "first")]
            assert got == [("orders.{}".format(i), b"o%d" % i) for i in range(5)]
            await g.add_consumer("acme-orders", "gx")
            consumers = await g.consumers("acme-orders")
            assert [c["name"] for c in consumers] == ["gx"]
            evs = await g.fetch("acme-orders", "gx", 3)
            assert [e.data for e in evs] == [b"o0", b"o1", b"o2"]
            for e in evs:
                await e.ack()
            for call in (g.purge_stream("acme-orders"), g.delete_stream("acme-orders")):
                with pytest.raises(ServerError) as ei:
                    await call
                assert ei.value.code == 403 and "shared with this account by account acme" in \
                    str(ei.value)
            with pytest.raises(ServerError) as ei:
                await g.add_stream("acme-orders", ["x.>"])
            assert ei.value.code == 409
            with pytest.raises(ServerError) as ei:
                await g.delete_consumer("acme-orders", "acme-own")
            assert ei.value.code in (403, 404)
            u = await fc.connect(srv.url, user="umbrella", password="pu")
            assert [s["name"] for s in await u.streams()] == []
            with pytest.raises(ServerError) as ei:
                await u.stream_info("acme-orders")
            assert ei.value.code == 404
            usage = srv.meter.totals()["imports"]
            for c in (acme, g, u):
                await c.close()
            return usage

    usage = aloop(run)
    assert usage["globex<share:acme:orders"] == {"msgs": 5, "bytes": 10}


def test_consumers_on_a_shared_stream_are_told_apart_by_account(aloop, ffserver):
    """Tokens of the same name in the exporting and the importing account:
    the importer's cannot list, read or delete the exporter's consumer."""
    import fastflow.client as fc
    from fastflow.errors import ServerError

    tokens = [{"token": "ta", "name": "svc", "account": "A"},
              {"token": "tb", "name": "svc", "account": "B"}]
    accounts = {"A": {"exports": [{"share": "orders"}],
                      "streams": [{"name": "orders", "subjects": ["orders.>"]}]},
                "B": {"imports": [{"share": "orders", "account": "A"}]}}

    async def run():
        async with ffserver(tokens=tokens, accounts=accounts) as srv:
            a = await fc.connect(srv.url.replace("://", "://ta@"))
            b = await fc.connect(srv.url.replace("://", "://tb@"))
            a.publish("orders.1", b"private")
            await a.flush()
            await a.add_consumer("orders", "billing")
            assert await b.consumers("orders") == []
            for call in (b.fetch("orders", "billing", 1), b.delete_consumer("orders", "billing")):
                with pytest.raises(ServerError) as ei:
                    await call
                assert ei.value.code == 403
            assert [c["name"] for c in await a.consumers("orders")] == ["billing"]
            await a.close()
            await b.close()

    aloop(run)
