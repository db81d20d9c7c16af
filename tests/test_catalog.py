"""The discovery catalog (docs/catalog.md): the type tracker, the
xRegistry documents served on the HTTP door (root, capabilities, model,
export, endpoints, messagegroups with live figures), the export checked
against the model it advertises and against the xRegistry CloudEvents
document schema (tests/data/xregistry), permissions, errors, and
``fastflow catalog``.
"""

import asyncio
import json
import os
import random
import string

import httpx
import jsonschema
import pytest

import fastflow
from fastflow.catalog import Catalog, Trackers, check_document, message_id, model
from fastflow.cli import main as cli_main
from fastflow.server import hash_password

_DATA = os.path.join(os.path.dirname(__file__), "data", "xregistry")
_NOT_FOUND = "https://github.com/xregistry/spec/blob/main/core/http.md#api_not_found"
STREAMS = [{"name": "orders", "subjects": ["orders.>"]},
           {"name": "eu", "subjects": ["orders.eu.>"]}]


def _ev(type_, routing="orders.eu.new", source="/shop", **kw):
    return fastflow.Event(routing, b"{}", type=type_, source=source, **kw)


# -- the tracker ---------------------------------------------------------------------------------


def test_tracker_counts_types_in_batches():
    f = fastflow.Flow()
    f.add_stream("s", ["a.>"])
    for i in range(2500):
        f.publish(_ev("com.a" if i % 5 else "com.b", "a.x", source="/s{}".format(i % 2)))
    tr = Trackers(f, budget=1000)
    tr.update()
    t = tr.trackers["s"]
    assert t.count == 1000                  # the budget of one pass
    tr.update()
    tr.update()
    assert t.count == 2500 and t.next_seq == 2501
    assert t.types["com.a"].count == 2000 and t.types["com.b"].count == 500
    assert t.types["com.b"].first_seq == 1 and t.types["com.b"].last_seq == 2496
    assert t.types["com.a"].sources == 2
    tr.update()                             # nothing new: nothing read
    assert t.count == 2500
    f.close()


def test_tracker_bounds_types_and_counts_evictions():
    f = fastflow.Flow()
    f.add_stream("s", ["a.>"], fastflow.Retention(max_events=10))
    tr = Trackers(f, max_types=3)
    for i in range(5):
        f.publish(_ev("t{}".format(i), "a.x"))
    tr.update()
    t = tr.trackers["s"]
    assert sorted(t.types) == ["t0", "t1", "t2"] and t.other == 2
    for _ in range(30):                     # 20 are evicted before the tracker reads them
        f.publish(_ev("t0", "a.x"))
    tr.update()
    assert t.unread == 20 and t.types["t0"].count == 11
    f.delete_stream("s")
    f.add_stream("s", ["b.>"])
    tr.update()
    assert tr.trackers["s"].count == 0      # a new stream of the same name starts over
    f.close()


def test_message_ids():
    assert message_id("com.acme.order") == "com.acme.order"
    odd = message_id("a type/with spaces")
    assert odd.startswith("t-") and len(odd) == 26
    assert message_id("a type/with spaces") == odd


def test_check_document_finds_problems():
    m = model()
    f = fastflow.Flow()
    f.add_stream("s", ["a.>"])
    f.publish(_ev("com.a", "a.x"))
    cat = Catalog(f, registry_id="r1")
    from fastflow.catalog import Access
    _, doc, _, _ = cat.request("GET", "", {"inline": "*"}, "http://h/registry", Access())
    assert check_document(doc, m) == []
    bad = json.loads(json.dumps(doc))
    del bad["epoch"]
    bad["messagegroups"]["s"]["bogus"] = 1
    bad["messagegroups"]["s"]["messages"]["com.a"]["ffcount"] = "many"
    problems = check_document(bad, m)
    assert "/: required attribute 'epoch' is missing" in problems
    assert "/messagegroups/s: attribute 'bogus' is not in the model" in problems
    assert any("'ffcount' is not of type uinteger" in p for p in problems)
    f.close()


# -- over HTTP ---------------------------------------------------------------------------------


def _serve(ffserver, free_port, **kw):
    kw.setdefault("streams", STREAMS)
    return ffserver(http_port=free_port(), **kw)


def _client(srv, **kw):
    return httpx.AsyncClient(base_url="http://127.0.0.1:{}".format(srv.http_port), **kw)


_ids = iter(range(1 << 62))


async def _publish(c, type_, n, subject="orders.eu.new", source="/eu/shop"):
    evs = [{"specversion": "1.0", "id": "ev-{}".format(next(_ids)), "source": source,
            "type": type_, "data": {"n": i}} for i in range(n)]
    r = await c.post("/events/" + subject, content=json.dumps(evs),
                     headers={"content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 202, r.text


_ROOT_REQUIRED = ("specversion", "registryid", "self", "xid", "epoch", "createdat",
                  "modifiedat")


def test_root_discovery_capabilities_model(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, nats_port=free_port()) as srv:
            async with _client(srv) as c:
                base = "http://127.0.0.1:{}/registry".format(srv.http_port)
                r = await c.get("/.well-known/xregistry")
                assert r.status_code == 200 and r.json() == {"registries": [base]}
                r = await c.get("/registry")
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("application/json")
                root = r.json()
                for k in _ROOT_REQUIRED:
                    assert k in root, k
                assert root["specversion"] == fastflow.catalog.SPECVERSION
                assert root["self"] == base and root["xid"] == "/"
                assert root["endpointsurl"] == base + "/endpoints"
                assert root["endpointscount"] == 4      # native, nats, http, websocket
                assert root["messagegroupscount"] == 2
                assert root["schemagroupscount"] == 0
                assert "endpoints" not in root          # not inlined unless asked
                caps = (await c.get("/registry/capabilities")).json()
                assert set(caps["available"]) >= {"capabilities", "export", "model"}
                assert "inline" in caps["flags"]
                assert caps["specversions"] == [fastflow.catalog.SPECVERSION]
                m = (await c.get("/registry/model")).json()
                assert set(m["groups"]) == {"endpoints", "messagegroups", "schemagroups"}
                assert m == model()
                eps = (await c.get("/registry/endpoints")).json()
                assert set(eps) == {"native", "nats", "http", "websocket"}
                assert eps["nats"]["protocol"] == "NATS"
                assert eps["nats"]["protocoloptions"]["endpoints"] == [
                    {"uri": "nats://127.0.0.1:{}".format(srv.nats_port)}]
                assert eps["http"]["protocoloptions"]["endpoints"] == [
                    {"uri": "http://127.0.0.1:{}/events".format(srv.http_port)}]
                assert eps["native"]["protocoloptions"]["endpoints"] == [
                    {"uri": "fastflow://127.0.0.1:{}".format(srv.port)}]
                assert eps["websocket"]["envelope"] == "CloudEvents/1.0"
                assert sorted(eps["http"]["messagegroups"]) == [
                    "/messagegroups/eu", "/messagegroups/orders"]
                one = (await c.get("/registry/endpoints/http")).json()
                assert one == eps["http"]
                # a forged Host header does not reach the URLs
                r = await c.get("/registry", headers={"host": 'evil.example/"<x>'})
                assert r.status_code == 200 and "evil" not in r.text
                r = await c.get("/registry", headers={"host": "other.example:8080"})
                assert r.json()["self"] == "http://other.example:8080/registry"
    aloop(main)


def test_messagegroups_count_types_live(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with _client(srv) as c:
                await _publish(c, "com.acme.order.created", 7)
                await _publish(c, "com.acme.order.paid", 3, "orders.us.paid", "/us/shop")
                await _publish(c, "com.acme.order.paid", 2, "orders.us.paid", "/us/other")
                g = (await c.get("/registry/messagegroups/orders?inline=messages")).json()
                assert g["messagegroupid"] == "orders" and g["ffevents"] == 12
                assert g["messagescount"] == 2 and g["ffcount"] == 12
                assert g["ffsubjects"] == ["orders.>"]
                msgs = g["messages"]
                created = msgs["com.acme.order.created"]
                assert created["ffcount"] == 7 and created["ffsources"] == "one"
                assert created["ffsource"] == "/eu/shop"
                assert created["envelopemetadata"]["type"]["value"] == "com.acme.order.created"
                assert created["envelopemetadata"]["source"]["value"] == "/eu/shop"
                assert created["fffirstseen"] <= created["fflastseen"]
                assert created["versionid"] == "1" and created["isdefault"] is True
                assert isinstance(created["ffrate"], float)
                paid = msgs["com.acme.order.paid"]
                assert paid["ffcount"] == 5 and paid["ffsources"] == "many"
                assert "value" not in paid["envelopemetadata"]["source"]
                eu = (await c.get("/registry/messagegroups/eu?inline=messages")).json()
                assert set(eu["messages"]) == {"com.acme.order.created"}
                # the resource, its meta, its versions
                base = "/registry/messagegroups/orders/messages/com.acme.order.created"
                r = (await c.get(base)).json()
                assert r["ffcount"] == 7 and r["metaurl"].endswith(base + "/meta")
                meta = (await c.get(base + "/meta")).json()
                assert meta["defaultversionid"] == "1" and meta["readonly"] is True
                vs = (await c.get(base + "/versions")).json()
                assert list(vs) == ["1"] and vs["1"]["ffcount"] == 7
                assert (await c.get(base + "/versions/1")).json()["messageid"] == \
                    "com.acme.order.created"
                # more events: the figures follow
                await _publish(c, "com.acme.order.created", 5)
                r = (await c.get(base)).json()
                assert r["ffcount"] == 12
                # the timer reads without a request, too
                await _publish(c, "com.acme.order.created", 1)
                tr = srv.catalog.trackers.trackers["orders"]
                for _ in range(300):
                    if tr.types["com.acme.order.created"].count == 13:
                        break
                    await asyncio.sleep(0.01)
                assert tr.types["com.acme.order.created"].count == 13
    aloop(main)


def _schema():
    with open(os.path.join(_DATA, "cloudevents-document-schema.json")) as f:
        return json.load(f)


def test_export_conforms_to_the_model_and_the_spec_schema(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, nats_port=free_port()) as srv:
            async with _client(srv) as c:
                await _publish(c, "com.acme.order.created", 3)
                await _publish(c, "odd type/with spaces", 1, "orders.x")
                m = (await c.get("/registry/model")).json()
                exp = (await c.get("/registry/export")).json()
                assert check_document(exp, m) == []
                assert exp["self"] == "#/"
                assert exp["messagegroups"]["orders"]["self"] == "#/messagegroups/orders"
                assert "capabilities" in exp and "modelsource" in exp
                msgs = exp["messagegroups"]["orders"]["messages"]
                assert len(msgs) == 2
                full = (await c.get("/registry?inline=*,capabilities,model")).json()
                assert check_document(full, m) == []
                assert full["model"] == m
                # the xRegistry CloudEvents document schema (xregistry/spec)
                jsonschema.Draft7Validator(_schema()).validate(exp)
                jsonschema.Draft7Validator(_schema()).validate(full)
    aloop(main)


def test_permissions_hide_streams(aloop, ffserver, free_port):
    users = [{"user": "alice", "password": hash_password("pw-a"),
              "permissions": {"subscribe": ["orders.eu.>"], "publish": ["orders.>"]}},
             {"user": "admin", "password": hash_password("pw-x")}]

    async def main():
        async with _serve(ffserver, free_port, users=users) as srv:
            alice = _client(srv, auth=("alice", "pw-a"))
            admin = _client(srv, auth=("admin", "pw-x"))
            anon = _client(srv)
            try:
                await _publish(admin, "com.acme.order.created", 2)
                r = await anon.get("/registry")
                assert r.status_code == 401
                root = (await alice.get("/registry?inline=messagegroups")).json()
                assert list(root["messagegroups"]) == ["eu"]
                assert root["messagegroupscount"] == 1
                r = await alice.get("/registry/messagegroups/orders")
                assert r.status_code == 404
                assert r.json()["type"].endswith("#not_found")
                eps = (await alice.get("/registry/endpoints/http")).json()
                assert eps["messagegroups"] == ["/messagegroups/eu"]
                exp = (await alice.get("/registry/export")).json()
                assert list(exp["messagegroups"]) == ["eu"]
                root = (await admin.get("/registry")).json()
                assert root["messagegroupscount"] == 2
            finally:
                for c in (alice, admin, anon):
                    await c.aclose()
    aloop(main)


def test_errors_are_problem_details(aloop, ffserver, free_port, seed):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with _client(srv) as c:
                for path in ("/registry/nope", "/registry/endpoints/http/messages",
                             "/registry/export/x", "/registry/capabilities/x",
                             "/registry//endpoints", "/.well-known/other"):
                    r = await c.get(path)
                    assert r.status_code == 404, path
                    assert r.headers["content-type"] == "application/problem+json"
                    p = r.json()
                    assert p["type"] == _NOT_FOUND and p["status"] == 404
                    assert p["title"].startswith("The specified API is not supported")
                r = await c.get("/registry/messagegroups/nope")
                assert r.status_code == 404 and r.json()["subject"] == "/messagegroups/nope"
                r = await c.get("/registry?inline=bogus")
                assert r.status_code == 400 and r.json()["type"].endswith(
                    "#inline_noninlineable")
                r = await c.put("/registry/messagegroups/orders", json={})
                assert r.status_code == 400 and r.json()["type"].endswith("#readonly")
                r = await c.delete("/registry/endpoints/http")
                assert r.status_code == 400 and r.json()["type"].endswith("#readonly")
                r = await c.post("/registry/model", json={})
                assert r.status_code == 405
                # escaped, never echoed raw
                r = await c.get('/registry/messagegroups/"><script>')
                assert r.status_code == 404 and "<script>" in r.json()["subject"]
                assert r.headers["content-type"] == "application/problem+json"
                # random paths below the base: never a 500
                rnd = random.Random(seed)
                alphabet = string.ascii_letters + string.digits + "/$%._-~:@!*'()"
                names = ["messagegroups", "endpoints", "schemagroups", "orders", "messages",
                         "versions", "meta", "http", "1", "$details", "export", "model"]
                for _ in range(300):
                    parts = [rnd.choice(names) if rnd.random() < 0.6 else "".join(
                        rnd.choice(alphabet) for _ in range(rnd.randrange(0, 8)))
                        for _ in range(rnd.randrange(0, 7))]
                    path = "/registry/" + "/".join(parts)
                    q = rnd.choice(["", "?inline=*", "?doc", "?inline=messages,meta",
                                    "?inline=%ff"])
                    method = rnd.choice(["GET", "GET", "HEAD", "PUT", "POST", "DELETE"])
                    r = await c.request(method, path + q, content=b"{}")
                    assert r.status_code < 500, (method, path + q, r.text)
    aloop(main)


def test_cli_catalog(aloop, ffserver, free_port, capsys):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with _client(srv) as c:
                await _publish(c, "com.acme.order.created", 4)
            url = "http://127.0.0.1:{}".format(srv.http_port)
            rc = await asyncio.to_thread(cli_main, ["catalog", "-s", url])
            assert rc == 0
            out = capsys.readouterr().out
            assert "endpoints:" in out and "orders" in out and "websocket" in out
            rc = await asyncio.to_thread(cli_main, ["catalog", "orders", "-s", url])
            assert rc == 0
            out = capsys.readouterr().out
            assert "com.acme.order.created" in out and " 4 " in out
            rc = await asyncio.to_thread(cli_main, ["catalog", "orders", "--json", "-s", url])
            assert rc == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["messages"]["com.acme.order.created"]["ffcount"] == 4
            rc = await asyncio.to_thread(cli_main, ["catalog", "nope", "-s", url])
            assert rc == 1
            assert "cannot be found" in capsys.readouterr().err
    aloop(main)


def test_pytest_knows_the_data():
    assert os.path.exists(os.path.join(_DATA, "cloudevents-document-schema.json"))


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:jsonschema")


# -- schemas -------------------------------------------------------------------------------------

ORDER = {"type": "object", "required": ["amount"],
         "properties": {"amount": {"type": "integer", "minimum": 0},
                        "items": {"type": "array", "items": {
                            "type": "object", "required": ["sku"],
                            "properties": {"sku": {"type": "string"}}}}}}


def _ce(data, id_, type_="com.acme.order", **kw):
    d = {"specversion": "1.0", "id": id_, "source": "/shop", "type": type_, "data": data}
    d.update(kw)
    return d


async def _post_ce(c, subject, *events, path="/events/"):
    if len(events) == 1:
        return await c.post(path + subject, content=json.dumps(events[0]),
                            headers={"content-type": "application/cloudevents+json"})
    return await c.post(path + subject, content=json.dumps(list(events)),
                        headers={"content-type": "application/cloudevents-batch+json"})


def test_schema_versions_are_created_and_read_back(aloop, ffserver, free_port, tmp_path):
    sg = "/registry/schemagroups/acme"

    async def main():
        async with _serve(ffserver, free_port, data_dir=str(tmp_path)) as srv:
            async with _client(srv) as c:
                r = await c.put(sg, json={"description": "Acme's schemas"})
                assert r.status_code == 201 and r.json()["schemagroupid"] == "acme"
                r = await c.post(sg + "/schemas/order", json=ORDER)
                assert r.status_code == 201, r.text
                v = r.json()
                assert v["versionid"] == "1" and v["isdefault"] is True
                assert v["format"] == "JsonSchema/draft-07"
                assert r.headers["location"].endswith(sg + "/schemas/order/versions/1")
                r = await c.get(sg + "/schemas/order")          # the document itself
                assert r.json() == ORDER and r.headers["xregistry-versionid"] == "1"
                r = await c.get(sg + "/schemas/order$details")
                assert r.json()["versionscount"] == 1 and "metaurl" in r.json()
                v2 = dict(ORDER, description="v2")
                r = await c.post(sg + "/schemas/order", json=v2)
                assert r.json()["versionid"] == "2" and r.json()["ancestorid"] == "1"
                r = await c.put(sg + "/schemas/order/versions/beta", json=ORDER)
                assert r.status_code == 201 and r.json()["versionid"] == "beta"
                vs = (await c.get(sg + "/schemas/order/versions")).json()
                assert sorted(vs) == ["1", "2", "beta"]
                assert [k for k, d in vs.items() if d["isdefault"]] == ["beta"]
                assert (await c.get(sg + "/schemas/order/versions/2")).json() == v2
                meta = (await c.get(sg + "/schemas/order/meta")).json()
                assert meta["defaultversionid"] == "beta" and meta["readonly"] is False
                # the root counts them; the export holds them, and still conforms
                root = (await c.get("/registry")).json()
                assert root["schemagroupscount"] == 1
                m = (await c.get("/registry/model")).json()
                exp = (await c.get("/registry/export")).json()
                assert check_document(exp, m) == []
                s = exp["schemagroups"]["acme"]["schemas"]["order"]
                assert s["versions"]["2"]["schema"] == v2
                full = (await c.get("/registry?inline=*")).json()
                assert check_document(full, m) == []
                # The spec repository's document schema takes a schema resource with
                # either versionsurl or versions (oneOf), where the core spec serializes
                # versionsurl always: that one attribute aside, the document conforms.
                with pytest.raises(jsonschema.ValidationError, match="is valid under each"):
                    jsonschema.Draft7Validator(_schema()).validate(full)
                for d in (full, exp):
                    for g in d["schemagroups"].values():
                        for r in g["schemas"].values():
                            del r["versionsurl"], r["versionscount"]
                    jsonschema.Draft7Validator(_schema()).validate(d)
                # delete a version, then the schema
                assert (await c.delete(sg + "/schemas/order/versions/beta")).status_code == 204
                meta = (await c.get(sg + "/schemas/order/meta")).json()
                assert meta["defaultversionid"] == "2"
        # persisted in the data directory; read back by the next server
        assert (tmp_path / "catalog.json").exists()
        async with _serve(ffserver, free_port, data_dir=str(tmp_path)) as srv:
            async with _client(srv) as c:
                vs = (await c.get(sg + "/schemas/order/versions")).json()
                assert sorted(vs) == ["1", "2"]
                assert (await c.get(sg + "/schemas/order")).json() == v2
                assert (await c.delete(sg + "/schemas/order")).status_code == 204
                assert (await c.get(sg + "/schemas/order")).status_code == 404
                assert (await c.delete(sg)).status_code == 204
                assert (await c.get("/registry")).json()["schemagroupscount"] == 0
    aloop(main)


def test_bound_schema_refuses_publishes_naming_the_path(aloop, ffserver, free_port):
    sg = "/registry/schemagroups/acme"

    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with _client(srv) as c:
                r = await c.post(sg + "/schemas/order", json=ORDER)
                assert r.status_code == 201
                # not bound yet: anything goes
                r = await _post_ce(c, "orders.eu.new", _ce({"amount": "x"}, "a0"))
                assert r.status_code == 202
                r = await c.put(sg + "/schemas/order$details",
                                json={"ffsubjects": ["orders.eu.>"],
                                      "fftypes": ["com.acme.paid"]})
                assert r.status_code == 200, r.text
                assert r.json()["ffsubjects"] == ["orders.eu.>"]
                # structured, binary and batched: refused with the path
                r = await _post_ce(c, "orders.eu.new", _ce({"amount": "x"}, "a1"))
                assert r.status_code == 400
                err = r.json()["error"]
                assert err["path"] == "$.amount"
                assert err["schema"] == "/schemagroups/acme/schemas/order/versions/1"
                assert "must be integer" in err["message"]
                r = await _post_ce(c, "orders.eu.new", _ce({"amount": 1}, "a2"),
                                   _ce({"amount": 2, "items": [{"sku": "k"}, {}]}, "a3"))
                assert r.status_code == 400
                err = r.json()["error"]
                assert err["path"] == "$.items[1]" and err["index"] == 1
                assert "batch index 1" in err["message"]
                r = await c.post("/events/orders.eu.new", json={"amount": -1}, headers={
                    "ce-specversion": "1.0", "ce-id": "a4", "ce-source": "/s",
                    "ce-type": "com.acme.order"})
                assert r.status_code == 400 and r.json()["error"]["path"] == "$.amount"
                r = await c.post("/events/orders.eu.new", content=b"plain", headers={
                    "ce-specversion": "1.0", "ce-id": "a5", "ce-source": "/s",
                    "ce-type": "com.acme.order", "content-type": "text/plain"})
                assert r.status_code == 400 and "not JSON" in r.text
                # nothing of a refused batch was stored
                st = srv.flow.stream("orders")
                assert len(st.log) == 1
                # valid events pass, other subjects are not checked
                r = await _post_ce(c, "orders.eu.new", _ce({"amount": 1}, "a6"),
                                   _ce({"amount": 2, "items": [{"sku": "k"}]}, "a7"))
                assert r.status_code == 202
                r = await _post_ce(c, "orders.us.new", _ce({"amount": "x"}, "a8"))
                assert r.status_code == 202
                # a binding by type (routed on the type with POST /events)
                r = await _post_ce(c, "orders.us.paid", _ce({"amount": "x"}, "a9",
                                                            "com.acme.paid"))
                assert r.status_code == 400
                r = await c.post("/events?ack=1", content=json.dumps(
                    _ce({"amount": 5}, "a10", "com.acme.paid")),
                    headers={"content-type": "application/cloudevents+json"})
                assert r.status_code == 201
                # the message definition of the bound type points at the schema
                await _post_ce(c, "orders.us.paid", _ce({"amount": 1}, "a11",
                                                        "com.acme.paid"))
                m = (await c.get("/registry/messagegroups/orders/messages/com.acme.paid")).json()
                assert m["dataschemaxid"] == "/schemagroups/acme/schemas/order/versions/1"
                # a new version becomes the default and validates from now on
                r = await c.post(sg + "/schemas/order", json={"type": "object"})
                assert r.status_code == 201
                r = await _post_ce(c, "orders.eu.new", _ce({"amount": "x"}, "a12"))
                assert r.status_code == 202
    aloop(main)


def test_schema_writes_are_checked(aloop, ffserver, free_port):
    users = [{"user": "alice", "password": hash_password("pw-a"),
              "permissions": {"subscribe": [">"], "publish": ["orders.eu.>"],
                              "streams": "manage"}},
             {"user": "reader", "password": hash_password("pw-r"),
              "permissions": {"subscribe": [">"], "publish": [">"], "streams": "read"}},
             {"user": "admin", "password": hash_password("pw-x")}]
    sg = "/registry/schemagroups/acme"

    async def main():
        async with _serve(ffserver, free_port, users=users) as srv:
            alice = _client(srv, auth=("alice", "pw-a"))
            reader = _client(srv, auth=("reader", "pw-r"))
            admin = _client(srv, auth=("admin", "pw-x"))
            try:
                r = await reader.post(sg + "/schemas/order", json=ORDER)
                assert r.status_code == 403 and r.json()["type"].endswith(":forbidden")
                r = await alice.post(sg + "/schemas/order", json=ORDER)
                assert r.status_code == 201
                assert (await reader.get(sg + "/schemas/order")).json() == ORDER
                # binding where she may not publish: refused
                r = await alice.put(sg + "/schemas/order$details",
                                    json={"ffsubjects": ["orders.>"]})
                assert r.status_code == 403
                r = await alice.put(sg + "/schemas/order$details",
                                    json={"ffsubjects": ["orders.eu.>"]})
                assert r.status_code == 200
                r = await admin.put(sg + "/schemas/order$details",
                                    json={"ffsubjects": ["bad..subject"]})
                assert r.status_code == 400 and r.json()["args"]["name"] == "ffsubjects"
                # bad schemas, bad ids, bad formats, too large
                r = await admin.post(sg + "/schemas/bad", json={"type": "bogus"})
                assert r.status_code == 400
                assert r.json()["type"].endswith("#format_violation")
                r = await admin.post(sg + "/schemas/bad", json=[1])
                assert r.status_code == 400
                r = await admin.post(sg + "/schemas/bad", content=b"{not json")
                assert r.status_code == 400 and r.json()["type"].endswith("#parsing_data")
                r = await admin.post(sg + "/schemas/bad", content=b"")
                assert r.status_code == 400 and r.json()["type"].endswith("#missing_body")
                r = await admin.post(sg + "/schemas/-x", json=ORDER)
                assert r.status_code == 400 and r.json()["type"].endswith("#malformed_id")
                r = await admin.put(sg + "/schemas/f$details",
                                    json={"schema": ORDER, "format": "Avro/1.9"})
                assert r.status_code == 400 and r.json()["args"]["name"] == "format"
                big = {"type": "object", "description": "x" * (300 << 10)}
                r = await admin.post(sg + "/schemas/big", json=big)
                assert r.status_code in (400, 413)
                # a remote $ref is never fetched
                r = await admin.post(sg + "/schemas/remote", json={
                    "$ref": "file:///etc/passwd"})
                assert r.status_code == 400 and "not fetched" in r.text
                # limits
                srv.catalog.schemas.max_versions = 2
                await admin.post(sg + "/schemas/order", json=ORDER)
                r = await admin.post(sg + "/schemas/order", json=ORDER)
                assert r.status_code == 400 and r.json()["type"].endswith(":limit")
                # writes where the model has none
                r = await admin.put(sg + "/schemas", json={})
                assert r.status_code == 405 and "allow" in r.headers
                r = await admin.post("/registry/schemagroups", json={})
                assert r.status_code == 405
                r = await admin.put(sg + "/schemas/order/meta", json={})
                assert r.status_code == 404
            finally:
                for c in (alice, reader, admin):
                    await c.aclose()
    aloop(main)


def test_a_damaged_schema_file_is_named(tmp_path):
    from fastflow.catalog.schemas import SchemaStore

    (tmp_path / "catalog.json").write_text("{not json")
    with pytest.raises(fastflow.FastflowError, match="catalog.json is damaged"):
        SchemaStore(str(tmp_path))
    (tmp_path / "catalog.json").write_text('{"version": 1, "groups": {}}')
    assert SchemaStore(str(tmp_path)).group_ids() == []


def test_doc_view_inline_head_and_options(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv:
            async with _client(srv) as c:
                await _publish(c, "com.acme.order.created", 2)
                r = await c.post("/registry/schemagroups/g/schemas/s", json={"type": "object"})
                assert r.status_code == 201
                # document view: URLs of what the response holds are JSON pointers into it
                d = (await c.get("/registry/messagegroups?doc&inline=messages")).json()
                assert d["orders"]["self"] == "#/orders"
                assert d["orders"]["messagesurl"] == "#/orders/messages"
                m = d["orders"]["messages"]["com.acme.order.created"]
                assert m["self"] == "#/orders/messages/com.acme.order.created"
                assert "versionid" not in m and "ffcount" not in m   # no default version
                d = (await c.get("/registry/schemagroups/g?doc&inline=schemas.versions")).json()
                s = d["schemas"]["s"]
                assert s["versions"]["1"]["schema"] == {"type": "object"}
                assert s["versionsurl"] == "#/schemas/s/versions"
                assert s["metaurl"].startswith("http://")            # not inlined
                # nested inline without doc; the document only when asked for
                d = (await c.get("/registry/schemagroups?inline=schemas.versions")).json()
                v = d["g"]["schemas"]["s"]["versions"]["1"]
                assert "schema" not in v and v["self"].startswith("http://")
                d = (await c.get("/registry/schemagroups?inline=schemas.versions.schema")).json()
                assert d["g"]["schemas"]["s"]["versions"]["1"]["schema"] == {"type": "object"}
                r = await c.get("/registry/schemagroups/g?inline=nope")
                assert r.status_code == 400
                # HEAD: GET's status and headers, no body; OPTIONS: the methods
                r = await c.head("/registry/schemagroups/g/schemas/s")
                assert r.status_code == 200 and r.content == b""
                assert r.headers["xregistry-versionid"] == "1"
                r = await c.head("/registry/nope")
                assert r.status_code == 404 and r.content == b""
                r = await c.options("/registry")
                assert r.status_code == 204 and "PUT" in r.headers["allow"]
    aloop(main)


async def _nats_exchange(port, lines, want=b"PONG\r\n", connect=b'{"verbose":false,'
                         b'"pedantic":false,"headers":true}'):
    """Send CONNECT, ``lines`` and PING on the NATS door; what came back
    up to the PONG."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reader.readline()                                 # INFO
        writer.write(b"CONNECT " + connect + b"\r\n" + b"".join(lines) + b"PING\r\n")
        await writer.drain()
        out = b""
        while not out.endswith(want):
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            assert chunk, out
            out += chunk
        return out
    finally:
        writer.close()


def _pub(subject, payload):
    return b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(payload), payload)


def _hpub(subject, headers, payload):
    h = b"NATS/1.0\r\n" + b"".join(b"%s: %s\r\n" % (k.encode(), v.encode())
                                   for k, v in headers.items()) + b"\r\n"
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (subject.encode(), len(h), len(h) + len(payload),
                                          h, payload)


def test_bound_schema_refuses_nats_publishes(aloop, ffserver, free_port):
    sg = "/registry/schemagroups/acme"

    async def main():
        async with _serve(ffserver, free_port, nats_port=free_port()) as srv:
            port = srv.nats_port
            st = srv.flow.stream("orders")
            async with _client(srv) as c:
                # a connection made before the binding is checked too
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                await reader.readline()
                writer.write(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
                await writer.drain()
                assert await reader.readline() == b"PONG\r\n"
                out = await _nats_exchange(port, [_pub("orders.eu.new", b'{"amount":"x"}')])
                assert b"-ERR" not in out                       # not bound yet
                r = await c.put(sg + "/schemas/order$details", json={
                    "schema": ORDER, "ffsubjects": ["orders.eu.>"],
                    "fftypes": ["com.acme.paid"]})
                assert r.status_code == 201, r.text
                n = len(st.log)
                out = await _nats_exchange(port, [_pub("orders.eu.new", b'{"amount":"x"}'),
                                                  _pub("orders.eu.new", b'{"amount":3}'),
                                                  _pub("orders.us.new", b'{"amount":"x"}')])
                assert out.count(b"-ERR") == 1, out
                assert b"-ERR 'Permissions Violation for Publish to \"orders.eu.new\"" in out
                assert b"$.amount" in out and b"must be integer" in out
                assert len(st.log) == n + 2                     # the valid one, the unbound one
                # HPUB: the type's binding applies; the connection stays usable
                out = await _nats_exchange(port, [
                    _hpub("orders.x", {"ce-type": "com.acme.paid", "ce-id": "p1",
                                       "ce-source": "/s"}, b'{"amount":-1}'),
                    _hpub("orders.x", {"ce-type": "com.acme.paid", "ce-id": "p2",
                                       "ce-source": "/s"}, b'{"amount":1}')])
                assert out.count(b"-ERR") == 1 and b"$.amount" in out, out
                assert len(st.log) == n + 3
                # verbose clients get -ERR instead of +OK
                out = await _nats_exchange(port, [_pub("orders.eu.new", b"not json")],
                                           connect=b'{"verbose":true,"pedantic":false}')
                assert b"not JSON" in out and out.count(b"+OK") == 1    # (the CONNECT's)
                writer.write(_pub("orders.eu.new", b'{"amount":"y"}') + b"PING\r\n")
                await writer.drain()
                line = await reader.readline()
                assert line.startswith(b"-ERR 'Permissions Violation"), line
                assert await reader.readline() == b"PONG\r\n"
                # unbound again: the parser routes by itself
                assert (await c.delete(sg + "/schemas/order")).status_code == 204
                writer.write(_pub("orders.eu.new", b'{"amount":"y"}') + b"PING\r\n")
                await writer.drain()
                assert await reader.readline() == b"PONG\r\n"
                writer.close()
    aloop(main)


def test_bound_schema_refuses_native_and_websocket_publishes(aloop, ffserver, free_port):
    import websockets

    from fastflow.client import connect

    sg = "/registry/schemagroups/acme"

    async def main():
        async with _serve(ffserver, free_port) as srv:
            st = srv.flow.stream("orders")
            async with _client(srv) as c:
                nc = await connect(srv.url)             # before the binding
                try:
                    r = await c.put(sg + "/schemas/order$details", json={
                        "schema": ORDER, "ffsubjects": ["orders.eu.>"]})
                    assert r.status_code == 201
                    n = len(st.log)
                    with pytest.raises(fastflow.FastflowError, match=r"\$\.amount"):
                        await nc.publish_ack("orders.eu.new", b'{"amount":"x"}',
                                             type="com.acme.order")
                    await nc.publish_ack("orders.eu.new", b'{"amount":2}', type="com.acme.order")
                    await nc.publish_ack("orders.us.new", b'{"amount":"x"}',
                                         type="com.acme.order")
                    assert len(st.log) == n + 2
                    # a batch stops at the refused item (those before it are published)
                    with pytest.raises(fastflow.FastflowError, match=r"item 1: .*\$\.amount"):
                        await nc.publish_batch_ack(
                            ["orders.eu.a", "orders.eu.b"], [b'{"amount":1}', b'{"amount":-5}'],
                            type="com.acme.order")
                    assert len(st.log) == n + 3
                    # fire-and-forget publishes are refused too (an error frame comes back)
                    nc.publish("orders.eu.new", b'{"amount":"z"}', type="com.acme.order")
                    await nc.flush()
                    assert len(st.log) == n + 3
                finally:
                    await nc.close()
                url = "ws://127.0.0.1:{}/ws?publish=orders.eu.new".format(srv.http_port)
                async with websockets.connect(url, close_timeout=2) as ws:
                    await ws.send(json.dumps(_ce({"amount": "x"}, "w1")))
                    ans = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert ans["op"] == "error" and ans["code"] == 400
                    assert ans["path"] == "$.amount" and ans["id"] == "w1"
                    await ws.send(json.dumps([_ce({"amount": 1}, "w2"),
                                              _ce({"items": []}, "w3")]))
                    ans = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert ans["index"] == 1 and ans["path"] == "$"
                    assert "amount" in ans["message"]
                assert len(st.log) == n + 3
    aloop(main)


def test_a_change_that_cannot_be_saved_is_not_kept(tmp_path, monkeypatch):
    """The disk refuses the write (ENOSPC): the change is undone, the
    error says so (503), and what was saved before is intact."""
    import errno
    import os as _os

    from fastflow.catalog import schemas as sm
    from fastflow.catalog.model import XRegistryError

    store = sm.SchemaStore(str(tmp_path))
    store.put_group("g", {})
    store.put_version("g", "s", None, {"type": "object"}, "JsonSchema/draft-07")
    real = _os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(sm.os, "replace", full)
    with pytest.raises(XRegistryError) as ei:
        store.put_version("g", "s2", None, {"type": "string"}, "JsonSchema/draft-07")
    assert ei.value.status == 503 and "No space left" in str(ei.value)
    assert set(store.groups["g"].schemas) == {"s"}
    monkeypatch.setattr(sm.os, "replace", real)
    again = sm.SchemaStore(str(tmp_path))
    assert set(again.groups["g"].schemas) == {"s"}
