"""The admin API (docs/accounts.md "The admin API"): accounts and users
changed at run time, by admin users only, checked whole, applied without
a restart or a cut of the connections nobody touched; kept across a
restart in the data directory."""

import asyncio
import base64
import json
import urllib.error
import urllib.request

import pytest

import fastflow.client as fc
from fastflow.errors import AuthenticationError, ConnectError

USERS = [{"user": "root", "password": "pr", "admin": True},
         {"user": "acme", "password": "pa", "account": "acme"},
         {"user": "globex", "password": "pg", "account": "globex"}]
ACCOUNTS = {"acme": {"exports": [{"stream": "orders.>"}]}, "globex": {}}


def call(port, method, path, body=None, user="root", password="pr"):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:{}{}".format(port, path), data,
                                 method=method, headers={
                                     "Authorization": "Basic " + base64.b64encode(
                                         "{}:{}".format(user, password).encode()).decode(),
                                     "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def test_admin_api_changes_accounts_live(aloop, ffserver, free_port, tmp_path):
    hport = free_port()
    settings = dict(users=USERS, accounts=ACCOUNTS, http_port=hport,
                    data_dir=str(tmp_path / "data"))

    async def api(*a, **kw):
        return await asyncio.to_thread(call, hport, *a, **kw)

    async def run():
        async with ffserver(**settings) as srv:
            # not an admin: 403
            st, doc = await api("GET", "/admin/accounts", user="acme", password="pa")
            assert st == 403
            st, doc = await api("GET", "/admin/accounts")
            assert st == 200 and set(doc["accounts"]) == {"acme", "globex"}
            acme = await fc.connect(srv.url, user="acme", password="pa")
            globex = await fc.connect(srv.url, user="globex", password="pg")
            got = []
            globex.subscribe("p.>", lambda ev: got.append(ev.routing_subject))
            await globex.flush()
            acme.publish("orders.1", b"1")
            await acme.flush()
            # an import added at run time: globex gets acme's orders from now on
            st, doc = await api("PUT", "/admin/accounts/globex", {"imports": [
                {"stream": "orders.>", "account": "acme", "prefix": "p"}]})
            assert st == 200, doc
            acme.publish("orders.2", b"2")
            await acme.flush()
            await asyncio.sleep(0.05)
            assert got == ["p.orders.2"]
            # a bad change is refused whole: nothing changes
            st, doc = await api("PUT", "/admin/accounts/globex", {"imports": [
                {"stream": "secrets.>", "account": "acme"}]})
            assert st == 400 and "exports no stream covering 'secrets.>'" in json.dumps(doc)
            acme.publish("orders.3", b"3")
            await acme.flush()
            await asyncio.sleep(0.05)
            assert got == ["p.orders.2", "p.orders.3"]
            # a stream the account cannot have: refused whole, no account made
            st, doc = await api("PUT", "/admin/accounts/bad", {"streams": [
                {"name": "bad name", "subjects": ["x"]}]})
            assert st == 400 and "stream name" in json.dumps(doc)
            st, doc = await api("GET", "/admin/accounts")
            assert "bad" not in doc["accounts"]
            # a new account and a user of it, live
            st, doc = await api("PUT", "/admin/accounts/initech", {})
            assert st == 201
            st, doc = await api("PUT", "/admin/users/ini", {"password": "pi",
                                                             "account": "initech"})
            assert st == 201 and "password" not in doc
            ini = await fc.connect(srv.url, user="ini", password="pi")
            seen = []
            ini.subscribe(">", lambda ev: seen.append(ev.routing_subject))
            await ini.flush()
            acme.publish("orders.4", b"4")
            await acme.flush()
            # the export goes: the import with it, at once (409 while an import names it)
            st, doc = await api("PUT", "/admin/accounts/acme", {})
            assert st == 400 and "exports no stream" in json.dumps(doc)
            st, doc = await api("PUT", "/admin/accounts/globex", {})
            assert st == 200
            acme.publish("orders.5", b"5")
            await acme.flush()
            await asyncio.sleep(0.05)
            assert got == ["p.orders.2", "p.orders.3", "p.orders.4"] and seen == []
            # narrowing a user's permissions ends its live subscriptions at once
            errors = []
            g2 = await fc.connect(srv.url, user="globex", password="pg",
                                  error_callback=errors.append)
            keep = g2.subscribe("ok.>")
            lose = g2.subscribe("secret.>")
            await g2.flush()
            st, doc = await api("PUT", "/admin/users/globex", {
                "account": "globex", "permissions": {"subscribe": {"allow": ["ok.>"]}}})
            assert st == 200
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.01)
            assert errors and errors[0].code == 403 and lose.closed and not keep.closed
            pub = await fc.connect(srv.url, user="globex", password="pg")
            pub.publish("ok.1", b"k")
            await pub.flush()
            assert (await keep.next(2)).data == b"k"
            # a user removed: its connections close; the others go on
            st, _ = await api("DELETE", "/admin/users/ini")
            assert st == 204
            await asyncio.sleep(0.1)
            assert not ini.is_connected and acme.is_connected
            with pytest.raises((ConnectError, AuthenticationError)):
                await fc.connect(srv.url, user="ini", password="pi", timeout=1)
            st, doc = await api("DELETE", "/admin/accounts/globex")
            assert st == 409 and "has users" in json.dumps(doc)
            st, _ = await api("DELETE", "/admin/accounts/initech")
            assert st == 204
            # the last user cannot go: the server would ask for no credentials
            for u in ("acme", "globex"):
                st, _ = await api("DELETE", "/admin/users/" + u)
                assert st == 204
            st, doc = await api("DELETE", "/admin/users/root")
            assert st == 409 and "the last" in json.dumps(doc)
            for u, a in (("acme", "acme"), ("globex", "globex")):
                st, _ = await api("PUT", "/admin/users/" + u, {
                    "password": "p" + u[0], "account": a,
                    "permissions": {"subscribe": {"allow": ["ok.>"]}} if u == "globex"
                    else None})
                assert st == 201
            for c in (acme, globex, g2, pub):
                await c.close()
        # kept across a restart: initech gone, globex's user has its new permissions
        async with ffserver(**settings) as srv:
            st, doc = await api("GET", "/admin/accounts")
            assert set(doc["accounts"]) == {"acme", "globex"}
            g = await fc.connect(srv.url, user="globex", password="pg")
            errors = []
            g2 = await fc.connect(srv.url, user="globex", password="pg",
                                  error_callback=errors.append)
            g2.subscribe("secret.>")
            await g2.flush()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.01)
            assert errors and errors[0].code == 403
            await g.close()
            await g2.close()

    aloop(run)
