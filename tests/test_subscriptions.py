"""The Subscriptions API (docs/subscriptions.md): the filter dialects with
the spec's semantics, the index against a brute-force evaluation, the
resource's validation (every refusal names its field), the API over
HTTP with ownership and permissions, delivery to NATS subjects (this
engine and a real nats-server), and a restart that resumes delivery
where it was.
"""

import asyncio
import json
import random
import shutil

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastflow
from fastflow.server import hash_password
from fastflow.subscriptions import FilterError, FilterIndex, compile_filter, parse

from helpers import wait_until


def _ev(routing="orders.eu.new", **attrs):
    a = {"type": "com.acme.order", "source": "/eu/shop", "id": "e1"}
    a.update(attrs)
    return fastflow.Event(routing, b"{}", **a)


# -- the dialects ------------------------------------------------------------------------------


MATCH = [
    # (filters, attributes, expected)
    ([], {}, True),
    ([{"exact": {"type": "com.acme.order"}}], {}, True),
    ([{"exact": {"type": "com.acme.Order"}}], {}, False),             # case-sensitive
    ([{"exact": {"type": "com.acme.order", "source": "/eu/shop"}}], {}, True),
    ([{"exact": {"type": "com.acme.order", "source": "/us"}}], {}, False),  # all entries
    ([{"exact": {"subject": "x"}}], {}, False),                       # missing attribute
    ([{"exact": {"subject": "x"}}], {"subject": "x"}, True),
    ([{"prefix": {"type": "com.acme."}}], {}, True),
    ([{"prefix": {"type": "com.acme.order"}}], {}, True),             # the whole value
    ([{"prefix": {"type": "com.acme.orders"}}], {}, False),
    ([{"prefix": {"source": "/EU"}}], {}, False),
    ([{"suffix": {"type": ".order"}}], {}, True),
    ([{"suffix": {"type": "order.x"}}], {}, False),
    ([{"suffix": {"region": "eu"}}], {"region": "west-eu"}, True),    # an extension
    ([{"exact": {"amount": "150"}}], {"amount": 150}, True),          # an Integer as text
    ([{"exact": {"flag": "true"}}], {"flag": True}, True),            # a Boolean as text
    ([{"exact": {"specversion": "1.0"}}], {}, True),
    ([{"exact": {"id": "e1"}}], {}, True),
    ([{"all": [{"exact": {"type": "com.acme.order"}}, {"prefix": {"source": "/eu"}}]}], {},
     True),
    ([{"all": [{"exact": {"type": "com.acme.order"}}, {"prefix": {"source": "/us"}}]}], {},
     False),
    ([{"any": [{"exact": {"type": "x"}}, {"prefix": {"source": "/eu"}}]}], {}, True),
    ([{"any": [{"exact": {"type": "x"}}, {"prefix": {"source": "/us"}}]}], {}, False),
    ([{"not": {"exact": {"type": "x"}}}], {}, True),
    ([{"not": {"exact": {"type": "com.acme.order"}}}], {}, False),
    ([{"not": {"not": {"exact": {"type": "com.acme.order"}}}}], {}, True),
    ([{"sql": "type = 'com.acme.order' AND amount > 100"}], {"amount": 150}, True),
    ([{"sql": "type = 'com.acme.order' AND amount > 100"}], {"amount": 50}, False),
    ([{"cesql": "source LIKE '/eu/%'"}], {}, True),                  # Knative's name
    ([{"sql": "amount > 100"}], {}, False),                          # an error is false
    ([{"sql": "1 / 0 = 0"}], {}, False),                             # so is a math error
    ([{"sql": "'abc'"}], {}, False),                                 # not a Boolean true
    ([{"sql": "TRUE"}], {}, True),
    # the list is a conjunction
    ([{"exact": {"type": "com.acme.order"}}, {"sql": "FALSE"}], {}, False),
]


@pytest.mark.parametrize("filters,attrs,expected", MATCH,
                         ids=[json.dumps(f)[:60] + str(a) for f, a, _ in MATCH])
def test_dialects(filters, attrs, expected):
    pred, _ = compile_filter(filters=filters)
    assert pred(_ev(**attrs)) is expected


def test_source_types_and_routing_subject():
    pred, keys = compile_filter(source="/eu/shop", types=["a", "com.acme.order"])
    assert pred(_ev()) and not pred(_ev(source="/eu")) and not pred(_ev(type="b"))
    assert keys == [("exact", "source", "/eu/shop")]      # one key beats two
    pred, keys = compile_filter(routing="orders.*.new")
    assert pred(_ev("orders.eu.new")) and not pred(_ev("orders.eu.old"))
    assert keys == [("routing", "orders.*.new")]
    pred, keys = compile_filter(routing=">")
    assert keys is None and pred(_ev("x"))


BAD_FILTERS = [
    ("x", "filters", "expected a list"),
    ([1], "filters[0]", "expected a filter expression"),
    ([{}], "filters[0]", "exactly one dialect"),
    ([{"exact": {"type": "a"}, "prefix": {"type": "b"}}], "filters[0]", "exactly one"),
    ([{"bogus": {}}], "filters[0]", "unsupported filter dialect 'bogus'"),
    ([{"exact": {}}], "filters[0].exact", "non-empty map"),
    ([{"exact": {"type": ""}}], "filters[0].exact.type", "an empty string"),
    ([{"exact": {"": "x"}}], "filters[0].exact", "invalid attribute name"),
    ([{"exact": {"Type": "x"}}], "filters[0].exact", "invalid attribute name"),
    ([{"prefix": {"type": 5}}], "filters[0].prefix.type", "non-empty string, got a number"),
    ([{"all": []}], "filters[0].all", "non-empty list"),
    ([{"any": {"exact": {"type": "x"}}}], "filters[0].any", "non-empty list"),
    ([{"all": [{"exact": {"type": "x"}}, {"nope": 1}]}], "filters[0].all[1]",
     "unsupported filter dialect"),
    ([{"not": [{"exact": {"type": "x"}}]}], "filters[0].not", "expected a filter expression"),
    ([{"sql": ""}], "filters[0].sql", "non-empty string"),
    ([{"sql": "type = "}], "filters[0].sql", "invalid CESQL expression"),
    ([{"sql": "type = 'x' AND"}], "filters[0].sql", "invalid CESQL expression"),
    ([{"sql": "x" * 5000}], "filters[0].sql", "over 4096 characters"),
]


@pytest.mark.parametrize("filters,field,words", BAD_FILTERS, ids=[b[1] + ":" + b[2]
                                                                for b in BAD_FILTERS])
def test_bad_filters_name_the_field(filters, field, words):
    with pytest.raises(FilterError) as ei:
        compile_filter(filters=filters)
    assert ei.value.field == field and words in ei.value.reason


def test_filter_limits():
    deep = {"exact": {"type": "x"}}
    for _ in range(20):
        deep = {"not": deep}
    with pytest.raises(FilterError, match="nested more than 16"):
        compile_filter(filters=[deep])
    with pytest.raises(FilterError, match="more than 256 filter expressions"):
        compile_filter(filters=[{"exact": {"type": str(i)}} for i in range(300)])


# -- the index never misses ----------------------------------------------------------------------

_TYPES = ["com.a", "com.a.x", "com.b", "org.c"]
_SOURCES = ["/eu", "/eu/1", "/us"]
_attr_filter = st.builds(lambda d, a, v: {d: {a: v}}, st.sampled_from(["exact", "prefix",
                                                                       "suffix"]),
                         st.sampled_from(["type", "source", "subject", "region"]),
                         st.sampled_from(_TYPES + _SOURCES + ["com.", "/e", "x"]))
_vals = st.sampled_from(_TYPES + _SOURCES + ["com.", "/e", "x"])
_sql_filter = st.builds(lambda t, a, b: {"sql": t.format(a=a, b=b)}, st.sampled_from([
    "type = '{a}'", "'{a}' = source", "source LIKE '{a}%'", "type IN ('{a}', '{b}')",
    "type = '{a}' AND subject = '{b}'", "type = '{a}' OR source = '{b}'", "NOT type = '{a}'",
    "type LIKE '{a}_%'", "subject LIKE '{a}%' AND region = 'eu'", "type = '{a}' AND 1 / 0 = 0"]),
    _vals, _vals)
_filter = st.recursive(st.one_of(_attr_filter, _sql_filter), lambda inner: st.one_of(
    st.builds(lambda fs: {"all": fs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda fs: {"any": fs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda f: {"not": f}, inner)), max_leaves=6)
_sub = st.fixed_dictionaries({}, optional={
    "source": st.sampled_from(_SOURCES), "types": st.lists(st.sampled_from(_TYPES),
                                                             min_size=1, max_size=2),
    "filters": st.lists(_filter, max_size=3),
    "routing": st.sampled_from(["orders.>", "orders.*.new", "other.x"])})
_event = st.builds(lambda s, t, so, sub, r: _ev(s, type=t, source=so, **(
    {"subject": sub} if sub else {}), **({"region": r} if r else {})),
    st.sampled_from(["orders.eu.new", "orders.us.old", "other.x"]), st.sampled_from(_TYPES),
    st.sampled_from(_SOURCES), st.sampled_from([None, "com.a", "/eu"]),
    st.sampled_from([None, "eu", "com.b"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_sub, min_size=1, max_size=12), st.lists(_event, min_size=1, max_size=8),
       st.randoms())
def test_index_candidates_hold_every_match(subs, events, rnd):
    idx = FilterIndex()
    preds = {}
    for i, s in enumerate(subs):
        preds[i], keys = compile_filter(**s)
        idx.add(i, keys)
    # removing and adding again leaves the index as it was
    gone = rnd.sample(range(len(subs)), len(subs) // 2)
    for i in gone:
        idx.remove(i)
    for i in gone[::2]:
        idx.add(i, compile_filter(**subs[i])[1])
        gone.remove(i)
    for ev in events:
        cands = set(idx.candidates(ev))
        want = {i for i, p in preds.items() if i not in gone and p(ev)}
        assert want <= cands, (want - cands, ev)
        assert not cands & set(gone)
        # where the lookup is the whole filter, being a candidate is matching
        for i in cands:
            if getattr(preds[i], "index_decides", False):
                assert preds[i](ev), (subs[i], ev)


def test_cesql_filters_are_indexed_by_what_they_require():
    def keys(sql):
        return compile_filter(filters=[{"sql": sql}])[1]
    assert keys("type = 'com.acme.order' AND source LIKE '/eu/%' AND amount > 100") == \
        [("exact", "type", "com.acme.order")]
    assert keys("source LIKE '/eu/%' AND amount > 100") == [("prefix", "source", "/eu/")]
    assert keys("'x' = subject") == [("exact", "subject", "x")]
    assert keys("type IN ('a', 'b', 'a')") == [("exact", "type", "a"), ("exact", "type", "b")]
    # nothing every true event must meet: evaluated for every event
    for sql in ("type = 'a' OR source = 'b'", "NOT type = 'a'", "type LIKE 'a_%'",
                "type NOT IN ('a')", "type <> 'a'", "amount > 100", "region = 'eu'",
                "type = 1", "source LIKE '%x'"):
        assert keys(sql) is None, sql


def test_index_is_selective():
    idx = FilterIndex()
    for i in range(10000):
        idx.add(i, compile_filter(types=["t.{}".format(i)])[1])
    idx.add("p", compile_filter(filters=[{"prefix": {"source": "/eu/"}}])[1])
    assert set(idx.candidates(_ev(type="t.42", source="/us"))) == {42}
    assert set(idx.candidates(_ev(type="t.42", source="/eu/1"))) == {42, "p"}
    assert set(idx.candidates(_ev(type="zzz", source="/us"))) == set()
    for i in range(10000):
        idx.remove(i)
    idx.remove("p")
    assert len(idx) == 0 and len(idx.core) == 0 and idx.core.nkeys == 0


# -- the resource ----------------------------------------------------------------------------------

STREAMS = {"orders": ("orders.>",)}
GOOD = {"protocol": "HTTP", "sink": "http://127.0.0.1:9/hook"}

BAD_BODIES = [
    ([], "(body)", "expected a JSON object"),
    ({"sink": "http://x/"}, "protocol", "required"),
    ({"protocol": "http", "sink": "http://x/"}, "protocol", "case-sensitive"),
    ({"protocol": "KAFKA", "sink": "http://x/"}, "protocol", "does not deliver with"),
    ({"protocol": "HTTP"}, "sink", "required"),
    ({"protocol": "HTTP", "sink": "ftp://x/"}, "sink", "http:// or https://"),
    ({"protocol": "HTTP", "sink": "http://u:p@x/"}, "sink", "sinkcredential"),
    ({"protocol": "HTTP", "sink": "http://x/\r\nX: y"}, "sink", "control characters"),
    ({"protocol": "HTTP", "sink": "http://x:99999/"}, "sink", "not a URL"),
    (dict(GOOD, bogus=1), "bogus", "unknown field"),
    (dict(GOOD, types="a"), "types", "expected a list"),
    (dict(GOOD, types=[""]), "types[0]", "must not be empty"),
    (dict(GOOD, source=""), "source", "must not be empty"),
    (dict(GOOD, config={"stream": "nope"}), "config.stream", "no stream named 'nope'"),
    (dict(GOOD, config={"x": "1"}), "config.x", "unknown key"),
    (dict(GOOD, config={"start": "0"}), "config.start", "a seq"),
    (dict(GOOD, config={"start": "１"}), "config.start", "a seq"),
    (dict(GOOD, config={"subject": "a..b"}), "config.subject", ""),
    (dict(GOOD, config={"deadletter": "a.*"}), "config.deadletter", ""),
    (dict(GOOD, config={"stream": 5}), "config.stream", "expected a string"),
    (dict(GOOD, protocolsettings={"headers": {"X-A": "1\r\nX-B: 2"}}),
     "protocolsettings.headers.X-A", "without CR, LF or NUL"),
    (dict(GOOD, protocolsettings={"headers": {"Bad Name": "1"}}),
     "protocolsettings.headers.Bad Name", "not a header name"),
    (dict(GOOD, protocolsettings={"headers": {"Content-Length": "1"}}),
     "protocolsettings.headers.Content-Length", "sets itself"),
    (dict(GOOD, protocolsettings={"headers": {"ce-id": "1"}}),
     "protocolsettings.headers.ce-id", "sets itself"),
    (dict(GOOD, protocolsettings={"method": "GET"}), "protocolsettings.method", "POST or PUT"),
    (dict(GOOD, protocolsettings={"mode": "xml"}), "protocolsettings.mode", "binary"),
    (dict(GOOD, protocolsettings={"maxbatch": 0}), "protocolsettings.maxbatch", "1..10000"),
    (dict(GOOD, protocolsettings={"timeout": "5"}), "protocolsettings.timeout", "seconds"),
    (dict(GOOD, protocolsettings={"x": 1}), "protocolsettings.x", "unknown HTTP setting"),
    (dict(GOOD, sinkcredential={"credentialtype": "ACCESSTOKEN"}),
     "sinkcredential.accesstoken", "expected a string"),
    (dict(GOOD, sinkcredential={"credentialtype": "ACCESSTOKEN", "accesstoken": "a\nb"}),
     "sinkcredential.accesstoken", "printable ASCII"),
    (dict(GOOD, sinkcredential={"credentialtype": "MAGIC"}), "sinkcredential.credentialtype",
     "ACCESSTOKEN"),
    (dict(GOOD, filters=[{"sql": "a ="}]), "filters[0].sql", "invalid CESQL"),
    ({"protocol": "NATS", "sink": "fastflow:"}, "protocolsettings.subject", "required"),
    ({"protocol": "NATS", "sink": "fastflow:", "protocolsettings": {"subject": "a.*"}},
     "protocolsettings.subject", ""),
    ({"protocol": "NATS", "sink": "http://x/", "protocolsettings": {"subject": "a"}}, "sink",
     "nats://"),
    ({"protocol": "NATS", "sink": "fastflow:", "protocolsettings": {"subject": "a"},
      "sinkcredential": {"credentialtype": "ACCESSTOKEN", "accesstoken": "t"}},
     "sinkcredential", "only HTTP sinks"),
]


@pytest.mark.parametrize("body,field,words", BAD_BODIES, ids=[b[1] + ":" + b[2][:20]
                                                              for b in BAD_BODIES])
def test_bad_resources_name_the_field(body, field, words):
    with pytest.raises(FilterError) as ei:
        parse(body, STREAMS)
    assert ei.value.field == field and words in ei.value.reason


def test_the_stream_is_implied_only_when_there_is_one():
    assert parse(GOOD, STREAMS).stream == "orders"
    with pytest.raises(FilterError, match="config.stream: required.*a, b"):
        parse(GOOD, {"a": (), "b": ()})
    with pytest.raises(FilterError, match="no stream"):
        parse(GOOD, {})


def test_the_credential_is_kept_apart_and_never_public():
    s = parse(dict(GOOD, sinkcredential={"credentialtype": "ACCESSTOKEN",
                                         "accesstoken": "s3cret"}), STREAMS)
    assert s.credential == "s3cret"
    assert "s3cret" not in json.dumps(s.public("sub-1"))
    assert "sinkcredential" not in s.public("sub-1")


# -- the API over HTTP ---------------------------------------------------------------------------


def _serve(ffserver, free_port, **kw):
    kw.setdefault("streams", [{"name": "orders", "subjects": ["orders.>"]}])
    return ffserver(http_port=free_port(), **kw)


def _client(srv, **kw):
    return httpx.AsyncClient(base_url="http://127.0.0.1:{}".format(srv.http_port), **kw)


def _nats_sub(subject="out.orders", **kw):
    d = {"protocol": "NATS", "sink": "fastflow:", "protocolsettings": {"subject": subject}}
    d.update(kw)
    return d


async def _publish(c, n, start=0, **attrs):
    evs = []
    for i in range(start, start + n):
        a = {"specversion": "1.0", "id": "ev-{}".format(i), "source": "/eu/shop",
             "type": "com.acme.order", "amount": i, "data": {"n": i}}
        a.update(attrs)
        evs.append(a)
    r = await c.post("/events/orders.eu", content=json.dumps(evs),
                     headers={"content-type": "application/cloudevents-batch+json"})
    assert r.status_code == 202, r.text


def test_crud(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv, _client(srv) as c:
            r = await c.get("/subscriptions")
            assert r.status_code == 200 and r.json() == []
            r = await c.post("/subscriptions", json=_nats_sub(types=["com.acme.order"],
                                                               id="ignored"))
            assert r.status_code == 201, r.text
            doc = r.json()
            sid = doc["id"]
            assert sid.startswith("sub-") and sid != "ignored"
            assert r.headers["location"] == "/subscriptions/" + sid
            assert doc["types"] == ["com.acme.order"] and doc["protocol"] == "NATS"
            assert (await c.get("/subscriptions/" + sid)).json() == doc
            assert [d["id"] for d in (await c.get("/subscriptions")).json()] == [sid]
            # PUT replaces the definition; the id stays
            r = await c.put("/subscriptions/" + sid, json=_nats_sub(
                "out.other", filters=[{"prefix": {"source": "/eu"}}]))
            assert r.status_code == 200 and r.json()["id"] == sid
            assert r.json()["protocolsettings"] == {"subject": "out.other"}
            assert "types" not in r.json()
            r = await c.put("/subscriptions/" + sid, json=dict(_nats_sub(), id="other"))
            assert r.status_code == 400 and r.json()["error"]["field"] == "id"
            r = await c.put("/subscriptions/" + sid, json=_nats_sub(filters=[{"x": 1}]))
            assert r.status_code == 400 and r.json()["error"]["field"] == "filters[0]"
            # OPTIONS says what is allowed
            r = await c.options("/subscriptions")
            assert r.status_code == 200 and r.headers["allow"] == "GET, HEAD, POST, OPTIONS"
            r = await c.options("/subscriptions/" + sid)
            assert r.headers["allow"] == "GET, HEAD, PUT, DELETE, OPTIONS"
            # status: the counters
            st = (await c.get("/subscriptions/{}/status".format(sid))).json()
            assert st["id"] == sid and st["status"] == "active" and st["stream"] == "orders"
            # DELETE, then 404
            r = await c.delete("/subscriptions/" + sid)
            assert r.status_code == 200 and r.json()["id"] == sid
            for method in ("GET", "PUT", "DELETE"):
                r = await c.request(method, "/subscriptions/" + sid, json=_nats_sub())
                assert r.status_code == 404, method
                assert "no subscription" in r.json()["error"]["message"]
            assert (await c.get("/subscriptions")).json() == []
            # errors
            r = await c.patch("/subscriptions")
            assert r.status_code == 405
            r = await c.post("/subscriptions", content=b"{", headers={
                "content-type": "application/json"})
            assert r.status_code == 400 and r.json()["error"]["field"] == "(body)"
            r = await c.post("/subscriptions", content=b"<x/>", headers={
                "content-type": "application/xml"})
            assert r.status_code == 415
            r = await c.post("/subscriptions", json={"protocol": "HTTP"})
            assert r.status_code == 400 and r.json()["error"]["field"] == "sink"
            r = await c.get("/subscriptions/a/b/c")
            assert r.status_code == 404
            # the OpenAPI document
            r = await c.get("/openapi.json")
            assert r.status_code == 200
            assert set(r.json()["paths"]) == {"/subscriptions", "/subscriptions/{id}",
                                           "/subscriptions/{id}/status"}
    aloop(main)


def test_owners_see_their_own_and_rights_are_checked(aloop, ffserver, free_port):
    users = [{"user": "alice", "password": hash_password("pw-a"),
              "permissions": {"subscribe": ["orders.eu.>"], "publish": ["out.alice.>"]}},
             {"user": "bob", "password": hash_password("pw-b"),
              "permissions": {"subscribe": ["orders.>"], "publish": [">"]}},
             {"user": "admin", "password": hash_password("pw-x")}]

    async def main():
        async with _serve(ffserver, free_port, users=users, max_subscriptions=0) as srv:
            alice = _client(srv, auth=("alice", "pw-a"))
            bob = _client(srv, auth=("bob", "pw-b"))
            admin = _client(srv, auth=("admin", "pw-x"))
            anon = _client(srv)
            try:
                r = await anon.get("/subscriptions")
                assert r.status_code == 401
                # alice may read only orders.eu.>: the whole stream is refused
                r = await alice.post("/subscriptions", json=_nats_sub("out.alice.x"))
                assert r.status_code == 403 and "subscribe to 'orders.>'" in r.text
                r = await alice.post("/subscriptions", json=_nats_sub(
                    "out.alice.x", config={"subject": "orders.eu.>"}))
                assert r.status_code == 201, r.text
                sid = r.json()["id"]
                # ... and may not publish where the subscription would
                r = await alice.post("/subscriptions", json=_nats_sub(
                    "out.bob", config={"subject": "orders.eu.>"}))
                assert r.status_code == 403 and "publish to 'out.bob'" in r.text
                r = await bob.post("/subscriptions", json=_nats_sub("out.bob"))
                assert r.status_code == 201
                bid = r.json()["id"]
                assert [d["id"] for d in (await alice.get("/subscriptions")).json()] == [sid]
                assert [d["id"] for d in (await bob.get("/subscriptions")).json()] == [bid]
                assert {d["id"] for d in (await admin.get("/subscriptions")).json()} == \
                    {sid, bid}
                # another's subscription is not there for bob
                for method in ("GET", "PUT", "DELETE"):
                    r = await bob.request(method, "/subscriptions/" + sid, json=_nats_sub())
                    assert r.status_code == 404
                assert (await alice.get("/subscriptions/" + sid)).status_code == 200
                # a PUT is checked like a POST
                r = await alice.put("/subscriptions/" + sid, json=_nats_sub("out.alice.x"))
                assert r.status_code == 403
                assert (await admin.delete("/subscriptions/" + sid)).status_code == 200
            finally:
                for c in (alice, bob, admin, anon):
                    await c.aclose()
    aloop(main)


def test_limits(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port, subscriptions_max=3,
                          subscriptions_max_per_user=2) as srv, _client(srv) as c:
            for _ in range(2):
                assert (await c.post("/subscriptions", json=_nats_sub())).status_code == 201
            r = await c.post("/subscriptions", json=_nats_sub())
            assert r.status_code == 403 and "limit of 2 subscriptions per user" in r.text
            srv.subscriptions.max_per_owner = 0
            assert (await c.post("/subscriptions", json=_nats_sub())).status_code == 201
            r = await c.post("/subscriptions", json=_nats_sub())
            assert r.status_code == 403 and "limit of 3 subscriptions" in r.text
    aloop(main)


def test_sink_hosts(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port,
                          subscriptions_sink_hosts=["*.example.com"]) as srv, _client(srv) as c:
            r = await c.post("/subscriptions", json={"protocol": "HTTP",
                                                     "sink": "http://127.0.0.1:1/x"})
            assert r.status_code == 400 and r.json()["error"]["field"] == "sink"
            assert "not allowed here" in r.text
    aloop(main)


# -- delivery to NATS subjects ----------------------------------------------------------------


def test_delivery_in_the_engine_filters_and_keeps_order(aloop, ffserver, free_port):
    async def main():
        async with _serve(ffserver, free_port) as srv, _client(srv) as c:
            got = {"a": [], "b": [], "c": []}
            for k in got:
                srv.flow.subscribe("out." + k, got[k].append)
            for k, extra in (("a", {"types": ["com.acme.order"],
                                    "filters": [{"sql": "amount >= 100"}]}),
                             ("b", {"filters": [{"prefix": {"source": "/us"}}]}),
                             ("c", {"config": {"start": "first"}})):
                r = await c.post("/subscriptions", json=_nats_sub("out." + k, **extra))
                assert r.status_code == 201
            await _publish(c, 200)
            await _publish(c, 10, 500, source="/us/1")
            await wait_until(lambda: len(got["c"]) == 210 and len(got["b"]) == 10, 5)
            await wait_until(lambda: len(got["a"]) == 110, 5)
            assert [e.id for e in got["a"]] == ["ev-{}".format(i) for i in
                                                list(range(100, 200)) + list(range(500, 510))]
            assert [e.id for e in got["b"]] == ["ev-{}".format(i) for i in range(500, 510)]
            # the bytes delivered are the bytes stored
            stored = srv.flow.stream("orders").get(1)
            assert got["c"][0].encode() == stored.encode()
            assert got["c"][0].data == stored.data
    aloop(main)


def test_a_restart_resumes_where_it_was(tmp_path, ffproc, free_port):
    """Subscriptions survive a restart of the server; events published
    while one was stopped, and those not saved as delivered, are
    delivered after the restart: none is lost."""
    (tmp_path / "ff.toml").write_text(
        '[[streams]]\nname = "orders"\nsubjects = ["orders.>"]\nstorage = "file"\n'
        '[[streams]]\nname = "out"\nsubjects = ["out.>"]\nstorage = "file"\n')
    http = free_port()
    sp = ffproc("--config", tmp_path / "ff.toml", "--data-dir", tmp_path / "data",
                "--http-port", http)

    async def main():
        await sp.astart()
        base = "http://127.0.0.1:{}".format(http)
        async with httpx.AsyncClient(base_url=base) as c:
            r = await c.post("/subscriptions", json=_nats_sub(
                "out.orders", config={"stream": "orders"}, filters=[{"sql": "amount % 2 = 0"}]))
            assert r.status_code == 201
            sid = r.json()["id"]
            await _publish(c, 100)
            await asyncio.sleep(0.8)
        await sp.astop()
        await sp.astart()
        async with httpx.AsyncClient(base_url=base) as c:
            assert [d["id"] for d in (await c.get("/subscriptions")).json()] == [sid]
            await _publish(c, 100, 100)
        await sp.astop()
        await sp.astart()
        async with httpx.AsyncClient(base_url=base) as c:
            await _publish(c, 100, 200)

            async def out_ids():
                r = await c.get("/streams/out/events", params={"limit": 1000})
                return [e["event"]["id"] for e in r.json()["events"]]
            for _ in range(100):
                ids = await out_ids()
                if len(set(ids)) == 150:
                    break
                await asyncio.sleep(0.05)
            assert set(ids) == {"ev-{}".format(i) for i in range(0, 300, 2)}
            st = (await c.get("/subscriptions/{}/status".format(sid))).json()
            assert st["floor"] == 300 and st["lag"] == 0
    asyncio.run(main())
    sp.stop()


def test_delivery_to_a_real_nats_server(aloop, ffserver, free_port, natsd, natspy):
    async def main():
        async with natsd() as ns, _serve(ffserver, free_port) as srv, _client(srv) as c:
            nc = await natspy.connect(ns.url)
            got = []

            async def take(m):
                got.append(m)
            await nc.subscribe("partner.orders", cb=take)
            await nc.flush()
            r = await c.post("/subscriptions", json={
                "protocol": "NATS", "sink": ns.url, "types": ["com.acme.order"],
                "protocolsettings": {"subject": "partner.orders"}})
            assert r.status_code == 201, r.text
            await _publish(c, 20)
            await _publish(c, 5, 100, type="other")
            await wait_until(lambda: len(got) == 20, 10)
            await nc.close()
            m = got[3]
            assert m.headers["ce-id"] == "ev-3" and m.headers["ce-type"] == "com.acme.order"
            assert m.headers["ce-source"] == "/eu/shop"
            assert json.loads(m.data) == {"n": 3}
    aloop(main)


def test_random_bodies_never_fail_the_server(aloop, ffserver, free_port):
    """Mutated subscription bodies get 201 or a 4xx naming the field."""
    rnd = random.Random(7)
    pieces = [None, "", "x", 0, -1, 1.5, True, [], {}, [{}], {"a": "b"}, "\r\n", "\x00",
              "a" * 5000, [{"sql": "("}], [{"not": {}}], "fastflow:", "http://127.0.0.1:1/"]

    async def main():
        async with _serve(ffserver, free_port) as srv, _client(srv) as c:
            for _ in range(300):
                body = dict(rnd.choice([GOOD, _nats_sub()]))
                for _ in range(rnd.randint(1, 3)):
                    key = rnd.choice(["protocol", "sink", "types", "filters", "config", "source",
                                      "protocolsettings", "sinkcredential", "id", "zz"])
                    body[key] = rnd.choice(pieces)
                r = await c.post("/subscriptions", json=body)
                assert r.status_code in (201, 400, 403), (body, r.text)
                if r.status_code == 400:
                    assert r.json()["error"]["field"]
                    assert "Traceback" not in r.text
            assert (await c.get("/healthz")).status_code == 200
    aloop(main)


def test_the_command_line(aloop, ffserver, free_port):
    import sys

    async def cli(*args):
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fastflow", "subscriptions", *args, "-s", url,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await p.communicate()
        return p.returncode, out.decode(), err.decode()

    async def main():
        nonlocal url
        async with _serve(ffserver, free_port) as srv:
            url = "http://127.0.0.1:{}".format(srv.http_port)
            rc, out, err = await cli("ls")
            assert (rc, out) == (0, "no subscriptions\n"), err
            rc, out, err = await cli("add", "fastflow:", "--subject", "out.x", "--type", "a",
                                     "--type", "b", "--sql", "amount > 1", "--start", "first")
            assert rc == 0 and out.startswith("created sub-"), err
            sid = out.split()[1]
            doc = srv.subscriptions.subs[sid].spec.public(sid)
            assert doc["types"] == ["a", "b"] and doc["filters"] == [{"sql": "amount > 1"}]
            assert doc["config"] == {"start": "first"}
            rc, out, err = await cli("ls", "--json")
            assert rc == 0 and json.loads(out)[0]["id"] == sid
            rc, out, err = await cli("info", sid)
            assert rc == 0 and "status: active" in out
            rc, out, err = await cli("add", "fastflow:", "--subject", "out.x", "--sql", "a =")
            assert rc == 1 and "filters[0].sql: invalid CESQL expression" in err
            rc, out, err = await cli("rm", sid)
            assert (rc, out) == (0, "deleted {}\n".format(sid))
            rc, out, err = await cli("info", sid)
            assert rc == 1 and "no subscription" in err
    url = None
    aloop(main)


def test_subscriptions_that_feed_each_other_are_stopped(aloop):
    """A subscription may not deliver into the stream it reads; two that
    feed each other's streams are processors: each delivery adds a hop,
    and the engine's loop breaker stops the chain at its hop limit."""
    from fastflow.subscriptions import SubscriptionManager

    async def main():
        flow = fastflow.Flow(hop_limit=8)
        flow.add_stream("a", ["a.>"])
        flow.add_stream("b", ["b.>"])
        mgr = SubscriptionManager(flow)
        await mgr.start()
        try:
            with pytest.raises(FilterError) as ei:
                mgr.create(_nats_sub("a.again", config={"stream": "a"}), None)
            assert ei.value.field == "protocolsettings.subject"
            assert "captured by stream 'a'" in ei.value.reason
            mgr.create(_nats_sub("b.x", config={"stream": "a"}), None)
            mgr.create(_nats_sub("a.y", config={"stream": "b"}), None)
            flow.publish(fastflow.Event("a.start", b"x", type="t"))
            await wait_until(lambda: flow.stats()["dropped_loop"] == 1, 5)
            await asyncio.sleep(0.1)
            a, b = flow.stream("a").log.last_seq, flow.stream("b").log.last_seq
            assert a + b == 9           # the original and 8 hops
            hops = [e.hops for e in flow.stream("a").replay()]
            assert hops == [0, 2, 4, 6, 8]
            # the CloudEvents attributes and data are the producer's
            first, last = list(flow.stream("a").replay())[::4]
            assert (first.id, first.source, first.data) == (last.id, last.source, last.data)
        finally:
            await mgr.stop()
    aloop(main)


# -- webhook delivery through the API, with real sinks -------------------------------------------

def _hook(sink, **kw):
    d = {"protocol": "HTTP", "sink": sink.url,
         "protocolsettings": {"maxretries": 3, "timeout": 2}}
    d.update(kw)
    return d


def test_webhook_delivery_through_the_api(aloop, ffserver, free_port):
    from test_webhook import Sink
    from cloudevents.core.bindings import http as sdk_http  # noqa: F401 (the SDK decodes)

    async def main():
        async with Sink() as sink, _serve(ffserver, free_port) as srv, _client(srv) as c:
            r = await c.post("/subscriptions", json=_hook(
                sink, types=["com.acme.order"],
                protocolsettings={"headers": {"X-Tenant": "acme"}, "method": "PUT",
                                  "maxinflight": 1},
                sinkcredential={"credentialtype": "ACCESSTOKEN", "accesstoken": "tok-1",
                                "accesstokenexpiresutc": "2030-01-01T00:00:00Z"}))
            assert r.status_code == 201, r.text
            assert "tok-1" not in r.text and "sinkcredential" not in r.json()
            sid = r.json()["id"]
            await _publish(c, 5)
            await _publish(c, 3, 100, type="other")
            await wait_until(lambda: len(sink.posts) == 5, 10)
            got = sink.events()
            assert [e.get_id() for e in got] == ["ev-{}".format(i) for i in range(5)]
            assert got[2].get_data() == {"n": 2} and str(got[2].get_attributes()["amount"]) == "2"
            method, headers, _, _ = sink.requests[0]
            assert method == "OPTIONS"
            assert headers["WebHook-Request-Origin"]
            for m, h, _, _ in sink.requests[1:]:
                assert m == "PUT" and h["Authorization"] == "Bearer tok-1"
                assert h["X-Tenant"] == "acme" and h["WebHook-Request-Origin"]
            st = (await c.get("/subscriptions/{}/status".format(sid))).json()
            assert st["delivered"] == 5 and st["dead"] == 0 and st["lag"] == 0
            assert "tok-1" not in json.dumps(st)
    aloop(main)


def test_webhook_failures_dead_letters_and_retirement(aloop, ffserver, free_port):
    from aiohttp import web
    from test_webhook import Sink

    async def flaky(sink, request, n):
        body = json.loads(await request.read())
        i = int(body["id"].split("-")[1]) if "id" in body else -1
        if n < 2:
            return web.Response(status=500)
        if i == 3:
            return web.Response(status=400, text="bad order")
        return None

    async def gone(sink, request, n):
        return web.Response(status=410) if n >= 2 else None

    async def main():
        async with Sink(flaky) as s1, Sink(gone) as s2, \
                _serve(ffserver, free_port) as srv, _client(srv) as c:
            dead, advisories = [], []
            srv.flow.subscribe("$DLQ.subscriptions.>", dead.append)
            srv.flow.subscribe("$SYS.advisory.>", advisories.append)
            r1 = await c.post("/subscriptions", json=_hook(s1, protocolsettings={
                "mode": "structured", "maxinflight": 1, "maxretries": 5, "timeout": 2}))
            r2 = await c.post("/subscriptions", json=_hook(s2, protocolsettings={
                "maxinflight": 1, "timeout": 2}))
            id1, id2 = r1.json()["id"], r2.json()["id"]
            await _publish(c, 6)
            await wait_until(lambda: len(dead) == 1, 10)
            assert dead[0].id == "ev-3" and dead[0].routing_subject == \
                "$DLQ.subscriptions." + id1
            assert "400" in dead[0].extensions["ffdeadreason"]
            await wait_until(lambda: srv.subscriptions.subs[id1].delivered == 5, 10)
            st1 = (await c.get("/subscriptions/{}/status".format(id1))).json()
            assert st1["failed"] >= 3 and st1["retried"] >= 2 and st1["dead"] == 1
            # 410: retired after two deliveries, the rest not tried
            await wait_until(lambda: srv.subscriptions.subs[id2].status == "retired", 10)
            st2 = (await c.get("/subscriptions/{}/status".format(id2))).json()
            assert st2["status"] == "retired" and st2["delivered"] == 2
            assert "410" in st2["reason"]
            assert any(a.routing_subject.endswith("subscription_retired") for a in advisories)
            n = len(s2.posts)
            await _publish(c, 3, 50)
            await asyncio.sleep(0.3)
            assert len(s2.posts) == n
    aloop(main)


def test_a_refused_handshake_loses_nothing(aloop, ffserver, free_port):
    from aiohttp import web
    from test_webhook import Sink

    state = {"grant": False}

    async def options(sink, request):
        if not state["grant"]:
            return web.Response(status=403)
        return web.Response(headers={"WebHook-Allowed-Origin": "*"})

    async def main():
        async with Sink(options=options) as sink, _serve(ffserver, free_port) as srv, \
                _client(srv) as c:
            r = await c.post("/subscriptions", json=_hook(sink))
            sid = r.json()["id"]
            await _publish(c, 4)
            sub = srv.subscriptions.subs[sid]
            await wait_until(lambda: sub.status == "refused", 5)
            assert sink.posts == [] and sub.dead == 0
            state["grant"] = True
            await wait_until(lambda: len(sink.posts) == 4, 10)
            await wait_until(lambda: sub.status == "active" and sub.delivered == 4, 5)
            assert sorted(e.get_id() for e in sink.events()) == ["ev-{}".format(i)
                                                                 for i in range(4)]
    aloop(main)


def test_the_callback_variant_grants_by_url(aloop, ffserver, free_port):
    from aiohttp import web
    from test_webhook import Sink
    import httpx as _httpx

    async def options(sink, request):
        cb = request.headers["WebHook-Request-Callback"]
        sink.callback = cb

        async def later():
            await asyncio.sleep(0.2)
            async with _httpx.AsyncClient() as h:
                bad = cb.replace("token=", "token=x")
                assert (await h.get(bad)).status_code == 404
                assert (await h.get(cb)).status_code == 200
        asyncio.get_running_loop().create_task(later())
        return web.Response(status=202)

    async def main():
        http = free_port()
        users = [{"user": "u", "password": "pw"}]
        async with Sink(options=options) as sink, ffserver(
                http_port=http, users=users,
                streams=[{"name": "orders", "subjects": ["orders.>"]}],
                subscriptions_callback_url="http://127.0.0.1:{}/".format(http)) as srv, \
                _client(srv, auth=("u", "pw")) as c:
            r = await c.post("/subscriptions", json=_hook(sink))
            assert r.status_code == 201
            await _publish(c, 2)
            await wait_until(lambda: len(sink.posts) == 2, 10)
            assert sink.callback.startswith("http://127.0.0.1:{}/subscriptions/sub-".format(
                http))
    aloop(main)


def test_a_slow_sink_reads_alone_and_holds_nobody(aloop, ffserver, free_port, monkeypatch):
    from aiohttp import web
    from fastflow.subscriptions import manager
    from test_webhook import Sink

    monkeypatch.setattr(manager, "_MAX_HELD", 16)
    gate = asyncio.Event()

    async def held(sink, request, n):
        await gate.wait()
        return web.Response(status=204)

    async def main():
        async with Sink(held) as slow, _serve(ffserver, free_port) as srv, _client(srv) as c:
            got = []
            srv.flow.subscribe("out.fast", got.append)
            r = await c.post("/subscriptions", json=_hook(slow, protocolsettings={
                "maxinflight": 1, "timeout": 30}))
            sid = r.json()["id"]
            await c.post("/subscriptions", json=_nats_sub("out.fast"))
            await _publish(c, 200)
            await wait_until(lambda: len(got) == 200, 10)     # the fast one is not held
            sub = srv.subscriptions.subs[sid]
            assert sub.reader is not None and not sub.reader.shared
            assert len(sub.outbox) <= 16
            gate.set()
            await wait_until(lambda: sub.delivered == 200, 20)
            await wait_until(lambda: sub.reader.shared, 5)     # caught up: it joined again
            assert sorted(int(e.get_id()[3:]) for e in slow.events()) == list(range(200))
    aloop(main)


def test_a_killed_server_resumes_webhook_delivery(tmp_path, ffproc, free_port):
    """SIGKILL in the middle of a webhook delivery, restart: every event
    reaches the sink (some twice: at least once), decoded by the SDK."""
    import signal

    from test_webhook import Sink

    (tmp_path / "ff.toml").write_text(
        '[[streams]]\nname = "orders"\nsubjects = ["orders.>"]\nstorage = "file"\n')
    http = free_port()
    sp = ffproc("--config", tmp_path / "ff.toml", "--data-dir", tmp_path / "data",
                "--http-port", http)

    async def slow(sink, request, n):
        await asyncio.sleep(0.004)

    async def main():
        async with Sink(slow) as sink:
            await sp.astart()
            base = "http://127.0.0.1:{}".format(http)
            async with httpx.AsyncClient(base_url=base) as c:
                r = await c.post("/subscriptions", json=_hook(sink, config={"start": "first"},
                                                              protocolsettings={
                                                                  "maxinflight": 1}))
                assert r.status_code == 201
                await _publish(c, 300)
            await wait_until(lambda: len(sink.posts) >= 100, 20)
            await sp.astop(signal.SIGKILL)
            assert len(sink.posts) < 300
            await sp.astart()
            await wait_until(lambda: len({e.get_id() for e in sink.events()}) == 300, 30)
            ids = [e.get_id() for e in sink.events()]
            assert set(ids) == {"ev-{}".format(i) for i in range(300)}
            # redelivered: at most what the last saved floor (0.5 s) left behind
            assert len(ids) - 300 < 200
            # each event's first delivery came in order (maxinflight 1)
            firsts = list(dict.fromkeys(ids))
            assert firsts == ["ev-{}".format(i) for i in range(300)]
    asyncio.run(main())
    sp.kill()


def test_the_openapi_document_holds_under_fuzzing(tmp_path, ffserver, free_port):
    """schemathesis generates requests from /openapi.json (valid, invalid,
    stateful chains: create, read, replace, delete) against a running
    server: no 5xx, and every status code, header and body the server
    answers is in the document.  (Not checked: that every request the
    schema allows is accepted: a stream must exist, a CESQL expression
    must parse, which JSON Schema cannot say.)  Webhook sinks are held to
    127.0.0.1, and no event is published: nothing is sent anywhere."""
    st_bin = shutil.which("schemathesis")
    if st_bin is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis)")

    async def main():
        async with _serve(ffserver, free_port, data_dir=str(tmp_path / "data"),
                          subscriptions_sink_hosts=["127.0.0.1"]) as srv:
            url = "http://127.0.0.1:{}/openapi.json".format(srv.http_port)
            p = await asyncio.create_subprocess_exec(
                st_bin, "run", url, "--checks", "all",
                "--exclude-checks", "positive_data_acceptance", "--max-examples", "25",
                "--seed", "7", "--no-color", stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT)
            out, _ = await asyncio.wait_for(p.communicate(), 240)
            text = out.decode(errors="replace")
            assert p.returncode == 0, text[-6000:]
            assert " passed" in text and "FAILURES" not in text, text[-6000:]
            assert srv.subscriptions is not None
    asyncio.run(main())


def test_a_deleted_stream_stops_its_subscriptions(aloop, ffserver, free_port, tmp_path):
    async def main():
        async with _serve(ffserver, free_port, streams=[
                {"name": "orders", "subjects": ["orders.>"]},
                {"name": "other", "subjects": ["other.>"]}]) as srv, _client(srv) as c:
            got = []
            srv.flow.subscribe("out.x", got.append)
            r = await c.post("/subscriptions", json=_nats_sub("out.x", config={
                "stream": "orders"}))
            sid = r.json()["id"]
            r = await c.post("/subscriptions", json=_nats_sub("out.x", config={
                "stream": "other"}))
            await _publish(c, 3)
            await wait_until(lambda: len(got) == 3, 5)
            assert (await c.delete("/streams/orders")).status_code == 200
            sub = srv.subscriptions.subs[sid]
            await wait_until(lambda: sub.status == "error", 5)
            st = (await c.get("/subscriptions/{}/status".format(sid))).json()
            assert st["status"] == "error" and "'orders' was deleted" in st["reason"]
            # the other goes on
            await c.post("/events/other.a", json={"specversion": "1.0", "id": "o1",
                                                   "source": "/s", "type": "t"},
                         headers={"content-type": "application/cloudevents+json"})
            await wait_until(lambda: len(got) == 4, 5)
            # a PUT to another stream revives it
            r = await c.put("/subscriptions/" + sid, json=_nats_sub("out.x", config={
                "stream": "other", "start": "first"}))
            assert r.status_code == 200
            await wait_until(lambda: sub.status == "active" and len(got) == 5, 5)
    aloop(main)


def test_a_damaged_subscription_file_is_named_at_start(tmp_path):
    from fastflow.subscriptions import SubscriptionManager

    d = tmp_path / "data"
    flow = fastflow.Flow(str(d))
    flow.add_stream("orders", ["orders.>"])

    async def main():
        mgr = SubscriptionManager(flow, str(d))
        await mgr.start()
        sub = mgr.create(_nats_sub("out.x"), "alice")
        await mgr.stop()
        path = d / "subscriptions" / (sub.id + ".json")
        assert oct(path.stat().st_mode & 0o777) == "0o600"
        path.write_text("{not json")
        mgr = SubscriptionManager(flow, str(d))
        with pytest.raises(ValueError, match=sub.id + ".json"):
            await mgr.start()
    asyncio.run(main())
    flow.close()


def test_events_retention_removed_are_counted_lost(aloop):
    from fastflow.subscriptions import SubscriptionManager

    async def main():
        flow = fastflow.Flow()
        flow.add_stream("a", ["a.>"], fastflow.Retention(max_events=10))
        mgr = SubscriptionManager(flow)
        await mgr.start()
        try:
            got = []
            flow.subscribe("out.x", got.append)
            sub = mgr.create(_nats_sub("out.x", config={"start": "first"}), None)
            for i in range(25):        # read only when the loop runs: 15 are gone by then
                flow.publish(fastflow.Event("a.b", b"%d" % i, type="t"))
            await wait_until(lambda: sub.current_floor() == 25, 5)
            assert sub.lost == 15 and [e.data for e in got] == [b"%d" % i for i in
                                                                range(15, 25)]
            assert sub.info()["lost"] == 15
        finally:
            await mgr.stop()
    aloop(main)


def test_a_refused_delivery_waits_in_order_and_the_index_takes_over_again(aloop):
    """Deliveries to this engine's subjects are made by the filter index
    itself while nothing waits; a publish the engine refuses (a full
    stream captures the subject) puts that event and the later ones in the
    outbox, retried in order; once it is empty the index delivers again.
    An event whose type is its routing subject keeps that type."""
    from fastflow.subscriptions import SubscriptionManager

    async def main():
        flow = fastflow.Flow()
        flow.add_stream("a", ["a.>"])
        flow.add_stream("full", ["out.x"], fastflow.Retention(max_events=3, discard="new"))
        mgr = SubscriptionManager(flow)
        await mgr.start()
        try:
            got = []
            flow.subscribe("out.x", got.append)
            sub = mgr.create(_nats_sub("out.x", config={"stream": "a", "start": "first"}), None)
            for i in range(10):
                flow.publish(fastflow.Event("a.b", b"%d" % i))
            await wait_until(lambda: sub.failed >= 2, 5)
            assert sub.info()["pending"] == 7 and sub.current_floor() == 3
            flow.delete_stream("full")
            await wait_until(lambda: sub.current_floor() == 10, 5)
            for i in range(10, 15):
                flow.publish(fastflow.Event("a.b", b"%d" % i))
            await wait_until(lambda: sub.current_floor() == 15, 5)
            datas = [e.data for e in got]
            # (a refused publish reached the subscriber before the stream refused it)
            assert list(dict.fromkeys(datas)) == [b"%d" % i for i in range(15)]
            assert datas == sorted(datas, key=int)
            assert {e.type for e in got} == {"a.b"} and {e.routing_subject for e in got} == {
                "out.x"}
            assert sub.delivered == sub.matched == 15
            assert sub.reader.index.sink_delivered(sub) == 3 + 5
        finally:
            await mgr.stop()
    aloop(main)
