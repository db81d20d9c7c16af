"""Quotas (docs/accounts.md "Quotas"): at each limit every door answers in
its own words, counts and advises the refusal, and loses nothing it had
accepted before it."""

import asyncio
import base64
import json
import socket
import time
import urllib.request

import pytest

import fastflow.client as fc
from fastflow.errors import ConnectError, ServerError
from fastflow.server.config import ConfigError, ServerConfig
from peers import require_peer

USERS = [{"user": "a", "password": "pa", "account": "A"},
         {"user": "a2", "password": "pa", "account": "A", "limits": {"connections": 1}},
         {"user": "b", "password": "pb", "account": "B"},
         {"user": "ops", "password": "po", "account": "$SYS"}]


def _accountz(port, acc):
    url = "http://127.0.0.1:{}/accountz?acc={}".format(port, acc)
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())["accounts"][acc]


def _nats_line(port, user, password, then=b"", until=b"PONG"):
    """A raw NATS client: CONNECT, ``then``, PING; every line the server
    sent until ``until`` or the connection closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.recv(4096)                                            # INFO
    s.sendall(b'CONNECT {"verbose":false,"user":"%s","pass":"%s"}\r\n' % (
        user.encode(), password.encode()) + then + b"PING\r\n")
    got = b""
    deadline = time.monotonic() + 5
    while until not in got and time.monotonic() < deadline:
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            break
        if not chunk:
            break
        got += chunk
    return s, got


def test_limits_are_checked_in_the_config():
    for limits, message in (({"connections": -1}, "integer >= 0"),
                            ({"bogus": 1}, "unknown limit 'bogus'"),
                            ({"storage": "lots"}, "storage"),
                            ({"burst": 0}, "must be > 0")):
        with pytest.raises(ConfigError) as ei:
            ServerConfig(accounts={"A": {"limits": limits}})
        assert message in str(ei.value)
    with pytest.raises(ConfigError, match="unknown limit 'storage'"):
        ServerConfig(users=[{"user": "u", "password": "p", "limits": {"storage": 1}}])


def test_connection_quota_in_every_doors_words(aloop, ffserver, free_port):
    require_peer("paho-mqtt")
    import paho.mqtt.client as mqtt

    nport, mport, hport = free_port(), free_port(), free_port()
    settings = dict(users=USERS, nats_port=nport, mqtt_port=mport, http_port=hport,
                    accounts={"A": {"limits": {"connections": 2}}, "B": {}})

    def mqtt_connack(version, user="a"):
        rc = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="q-{}".format(version),
                        protocol=version)
        c.username_pw_set(user, "pa")
        c.on_connect = lambda c, u, f, reason, p: rc.append(reason)
        c.connect("127.0.0.1", mport)
        c.loop_start()
        deadline = time.monotonic() + 5
        while not rc and time.monotonic() < deadline:
            time.sleep(0.01)
        c.loop_stop()
        c.disconnect()
        return rc[0]

    def http_status():
        req = urllib.request.Request("http://127.0.0.1:{}/events/x".format(hport), b"1",
                                     headers={"Authorization": "Basic " + base64.b64encode(
                                         b"a:pa").decode(), "ce-id": "1", "ce-source": "/s",
                                         "ce-type": "t", "ce-specversion": "1.0"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("retry-after")

    async def run():
        async with ffserver(monitor=True, **settings) as srv:
            c1 = await fc.connect(srv.url, user="a", password="pa")
            got = []
            c1.subscribe("x", lambda ev: got.append(ev.data))
            await c1.flush()
            c2 = await fc.connect(srv.url, user="a", password="pa")
            # the third: native ERR 429
            with pytest.raises(ConnectError) as ei:
                await fc.connect(srv.url, user="a", password="pa")
            assert "server error 429: maximum account active connections exceeded" in str(
                ei.value)
            # NATS: nats-server's words, then closed
            s, lines = await asyncio.to_thread(_nats_line, nport, "a", "pa")
            s.close()
            assert lines == b"-ERR 'maximum account active connections exceeded'\r\n"
            # MQTT 5: CONNACK 0x97; 3.1.1: 3 (server unavailable)
            rc5 = await asyncio.to_thread(mqtt_connack, mqtt.MQTTv5)
            assert rc5.value == 0x97
            rc3 = await asyncio.to_thread(mqtt_connack, mqtt.MQTTv311)
            assert str(rc3) == "Server unavailable"     # (3.1.1 return code 3, as paho names it)
            status, retry = await asyncio.to_thread(http_status)
            assert (status, retry) == (429, "1")
            # account B is not A: it connects; what A had accepted still flows
            cb = await fc.connect(srv.url, user="b", password="pb")
            c2.publish("x", b"still")
            await c2.flush()
            await asyncio.sleep(0.05)
            assert got == [b"still"]
            # one goes, another comes
            await c2.close()
            await asyncio.sleep(0.05)
            c3 = await fc.connect(srv.url, user="a", password="pa")
            # a user limit (a2: 1 connection) within the account's
            await c1.close()
            c4 = await fc.connect(srv.url, user="a2", password="pa")
            await c3.close()
            with pytest.raises(ConnectError, match="user active connections"):
                await fc.connect(srv.url, user="a2", password="pa")
            info = await asyncio.to_thread(_accountz, srv.monitor_port, "A")
            await c4.close()
            await cb.close()
            return info

    info = aloop(run)
    q = info["quotas"]
    assert q["limits"] == {"connections": 2}
    assert q["refused"]["connections"] == 6     # native, NATS, MQTT x2, HTTP, a2


def test_subscription_quota_in_every_doors_words(aloop, ffserver, free_port):
    require_peer("paho-mqtt")
    import paho.mqtt.client as mqtt

    nport, mport, hport = free_port(), free_port(), free_port()
    settings = dict(users=USERS, nats_port=nport, mqtt_port=mport, http_port=hport,
                    accounts={"A": {"limits": {"subscriptions": 3}}, "B": {}})

    def mqtt_suback():
        codes = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="q", protocol=mqtt.MQTTv5)
        c.username_pw_set("a", "pa")
        c.on_subscribe = lambda c, u, mid, rcs, p: codes.extend(rcs)
        c.connect("127.0.0.1", mport)
        c.loop_start()
        c.subscribe("t/1", 0)
        deadline = time.monotonic() + 5
        while not codes and time.monotonic() < deadline:
            time.sleep(0.01)
        c.loop_stop()
        c.disconnect()
        return codes

    def sse_status():
        req = urllib.request.Request("http://127.0.0.1:{}/events/y".format(hport), headers={
            "Authorization": "Basic " + base64.b64encode(b"a:pa").decode(),
            "Accept": "text/event-stream"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("retry-after")

    async def run():
        async with ffserver(monitor=True, **settings) as srv:
            errors = []
            c1 = await fc.connect(srv.url, user="a", password="pa", error_callback=errors.append)
            got = []
            for i in range(3):
                c1.subscribe("s.{}".format(i), lambda ev: got.append(ev.routing_subject))
            await c1.flush()
            fourth = c1.subscribe("s.3", lambda ev: got.append(ev.routing_subject))
            await c1.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.01)
            (err,) = errors
            assert err.code == 429 and "maximum subscriptions exceeded" in str(err)
            assert fourth.closed and c1.is_connected
            s, lines = await asyncio.to_thread(_nats_line, nport, "a", "pa", b"SUB z 1\r\n")
            s.close()
            assert lines == b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n"
            codes = await asyncio.to_thread(mqtt_suback)
            assert [c.value for c in codes] == [0x97]
            assert await asyncio.to_thread(sse_status) == (429, "1")
            # what was accepted before still delivers
            pub = await fc.connect(srv.url, user="a", password="pa")
            for i in range(4):
                pub.publish("s.{}".format(i), b"x")
            await pub.flush()
            await asyncio.sleep(0.05)
            info = await asyncio.to_thread(_accountz, srv.monitor_port, "A")
            await pub.close()
            await c1.close()
            return got, info

    got, info = aloop(run)
    assert sorted(got) == ["s.0", "s.1", "s.2"]
    assert info["quotas"]["subscriptions"] == 3
    assert info["quotas"]["refused"]["subscriptions"] == 4


def test_ingress_quota_paces_publishers_and_loses_nothing(aloop, ffserver, free_port):
    nport, hport = free_port(), free_port()
    settings = dict(users=USERS, nats_port=nport, http_port=hport,
                    accounts={"A": {"limits": {"msgs_per_second": 2000, "burst": 0.05}},
                              "B": {}})

    def http_post():
        req = urllib.request.Request("http://127.0.0.1:{}/events/in.http".format(hport), b"1",
                                     headers={"Authorization": "Basic " + base64.b64encode(
                                         b"a:pa").decode(), "ce-id": "1", "ce-source": "/s",
                                         "ce-type": "t", "ce-specversion": "1.0"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, None
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("retry-after")

    async def run():
        async with ffserver(monitor=True, **settings) as srv:
            sub = await fc.connect(srv.url, user="a", password="pa")
            got = []
            sub.subscribe("in.>", lambda ev: got.append(ev.data))
            await sub.flush()
            pub = await fc.connect(srv.url, user="a", password="pa")
            t0 = time.monotonic()
            for i in range(1000):
                pub.publish("in.native", b"%d" % i)
            await pub.flush(timeout=10)
            took = time.monotonic() - t0
            # the HTTP door answers while the bucket is in debt
            for _ in range(1000):
                pub.publish("in.native", b"x")
            status = await asyncio.to_thread(http_post)
            await pub.flush(timeout=10)
            for _ in range(300):
                if len(got) >= 2000:
                    break
                await asyncio.sleep(0.01)
            # account B has no quota
            b = await fc.connect(srv.url, user="b", password="pb")
            t1 = time.monotonic()
            for _ in range(1000):
                b.publish("in.b", b"x")
            await b.flush()
            took_b = time.monotonic() - t1
            info = await asyncio.to_thread(_accountz, srv.monitor_port, "A")
            for c in (sub, pub, b):
                await c.close()
            return got, took, status, info, took_b

    got, took, status, info, took_b = aloop(run)
    assert len(got) == 2000 and got[:1000] == [b"%d" % i for i in range(1000)]
    assert took >= 0.3                          # 1000 at 2000/s with a burst of 100
    assert status[0] == 429 and int(status[1]) >= 1
    q = info["quotas"]
    assert q["paused"] >= 1 and q["refused"]["ingress"] == 1
    assert took_b < took


def test_stream_storage_and_consumer_quotas(aloop, ffserver, free_port):
    hport = free_port()
    settings = dict(users=USERS, http_port=hport, accounts={
        "A": {"limits": {"storage": "1KiB", "streams": 2, "consumers": 1}}, "B": {}})

    async def run():
        async with ffserver(monitor=True, **settings) as srv:
            c = await fc.connect(srv.url, user="a", password="pa")
            with pytest.raises(ServerError) as ei:
                await c.add_stream("s0", ["s0.>"])
            assert ei.value.code == 429 and "needs max_bytes" in str(ei.value)
            await c.add_stream("s1", ["s1.>"], {"max_bytes": 600})
            with pytest.raises(ServerError) as ei:
                await c.add_stream("s2", ["s2.>"], {"max_bytes": 600})
            assert "maximum storage exceeded" in str(ei.value)
            await c.add_stream("s2", ["s2.>"], {"max_bytes": 400})
            with pytest.raises(ServerError) as ei:
                await c.add_stream("s3", ["s3.>"], {"max_bytes": 1})
            assert "maximum streams exceeded" in str(ei.value)
            await c.add_consumer("s1", "c1")
            with pytest.raises(ServerError) as ei:
                await c.add_consumer("s1", "c2")
            assert ei.value.code == 429 and "maximum consumers exceeded" in str(ei.value)
            await c.add_consumer("s1", "c1")            # (the same again: an update)
            # over HTTP: 429 with Retry-After
            req = urllib.request.Request(
                "http://127.0.0.1:{}/streams/s9".format(hport), json.dumps(
                    {"subjects": ["s9.>"], "max_bytes": 10}).encode(), method="POST",
                headers={"Authorization": "Basic " + base64.b64encode(b"a:pa").decode(),
                         "Content-Type": "application/json"})
            try:
                await asyncio.to_thread(urllib.request.urlopen, req, timeout=5)
                status = None
            except urllib.error.HTTPError as e:
                status = (e.code, e.headers.get("retry-after"))
            # B has no limits
            cb = await fc.connect(srv.url, user="b", password="pb")
            await cb.add_stream("big", ["big.>"])
            info = await asyncio.to_thread(_accountz, srv.monitor_port, "A")
            await c.close()
            await cb.close()
            return status, info

    status, info = aloop(run)
    assert status == (429, "1")
    assert info["quotas"]["refused"] == {"storage": 2, "streams": 2, "consumers": 1}


def test_quota_advisories_reach_the_system_account(aloop, ffserver):
    async def run():
        async with ffserver(users=USERS, accounts={"A": {"limits": {"connections": 1}},
                                                   "B": {}}) as srv:
            ops = await fc.connect(srv.url, user="ops", password="po")
            adv = asyncio.Queue()
            ops.subscribe("$SYS.account.*.advisory.quota", lambda ev: adv.put_nowait(ev))
            await ops.flush()
            c1 = await fc.connect(srv.url, user="a", password="pa")
            with pytest.raises(ConnectError):
                await fc.connect(srv.url, user="a", password="pa")
            ev = await asyncio.wait_for(adv.get(), 5)
            await c1.close()
            await ops.close()
            return ev

    ev = aloop(run)
    assert ev.routing_subject == "$SYS.account.A.advisory.quota"
    body = json.loads(ev.data)
    assert body["account"] == "A" and body["kind"] == "connections" and body["user"] == "a"


def test_the_doors_own_stream_names_do_not_escape_the_quota(aloop, ffserver):
    settings = dict(users=USERS, accounts={"A": {"limits": {"streams": 1}}, "B": {}})

    async def run():
        async with ffserver(**settings) as srv:
            c = await fc.connect(srv.url, user="a", password="pa")
            await c.add_stream("mqtt_s0", ["s0.>"])
            with pytest.raises(ServerError) as ei:
                await c.add_stream("mqtt_s1", ["s1.>"])
            assert "maximum streams exceeded" in str(ei.value)
            await c.close()

    aloop(run)


def test_a_tokens_subscription_limit_holds(aloop, ffserver):
    tokens = [{"token": "t", "name": "svc", "account": "A", "limits": {"subscriptions": 1}}]

    async def run():
        async with ffserver(users=USERS, tokens=tokens, accounts={"A": {}, "B": {}}) as srv:
            errors = []
            c = await fc.connect(srv.url.replace("://", "://t@"), error_callback=errors.append)
            c.subscribe("x.1")
            c.subscribe("x.2")
            await c.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.01)
            await c.close()
            return errors

    errors = aloop(run)
    assert len(errors) == 1 and errors[0].code == 429 and "user svc" in str(errors[0])
