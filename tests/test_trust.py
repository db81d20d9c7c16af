"""Signed events: the CloudEvents verifiability extension's test vectors,
both ways, and tampering with every part of a signed event."""

import base64
import json
import pathlib

import orjson
import pytest

from fastflow import Event
from fastflow.event import from_http, from_json, to_http, to_json
from fastflow.trust import KeySet, PublicKey, SignatureError, SigningKey, check, sign, verify
from fastflow.trust.events import PAYLOAD_TYPE, digest, normalize_time, pae

VECTORS = json.loads((pathlib.Path(__file__).parent / "data" /
                      "verifiability_vectors.json").read_text())
KEY = VECTORS["key"]


@pytest.fixture(scope="module")
def vkey():
    return SigningKey.from_p256_secret(KEY["d"], keyid=KEY["keyid"])


def _attrs_of(case):
    # an empty optional attribute (cases 2-4's "subject": "") is not a valid
    # CloudEvent and fastflow refuses one; unset hashes as the empty string,
    # so the event without it has the same material
    return {k: v for k, v in case["event"].items() if v != ""}


def _vector_event(case):
    if "data_base64" in case:
        data = base64.b64decode(case["data_base64"])
    else:
        data = VECTORS["json_data_ext" if case["data"] == "json_ext" else "json_data"].encode()
    return Event(None, data, **_attrs_of(case))


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vector_sign(case, vkey):
    """Signing the vector's event gives the published material, byte for byte."""
    signed = sign(_vector_event(case), vkey, case.get("signedextattrs", ()))
    assert signed["dssematerial"] == case["material"]


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_vector_verify(case):
    """The published material verifies against the published public key."""
    pub = PublicKey.from_p256_point(KEY["x"], KEY["y"], keyid=KEY["keyid"])
    attrs = dict(_attrs_of(case), dssematerial=case["material"])
    if case.get("signedextattrs"):
        attrs["signedextattrs"] = ",".join(case["signedextattrs"])
    ev = Event(None, _vector_event(case).data, **attrs)
    out = verify(ev, [pub])
    signed = set(case.get("signedextattrs", ()))
    assert {k for k in out.extensions} == signed
    assert out.data == ev.data and out.id == "1"
    if "data_base64" in case:
        # through the JSON format and back (data_base64: every byte kept)
        again = from_json(to_json(ev))
        assert verify(again, [pub]).attributes() == out.attributes()


@pytest.mark.parametrize("data", [b'{"z": 1, "a": [1.50, "\\u00e9"]}',
                                  b' {"z": 1}\n', b'\t[1,\n2]  '])
@pytest.mark.parametrize("mode", ["json", "binary", "structured"])
def test_signed_json_event_survives_the_encodings(mode, data):
    """An event signed here keeps verifying through the JSON format and both
    HTTP modes: the data's JSON text is spliced in and read back as written;
    with whitespace around it, it goes as data_base64 (the member would lose
    the whitespace, and the signature covers it)."""
    k = SigningKey.generate()
    ev = sign(Event("a.b", data, source="urn:s", type="t",
                    datacontenttype="application/json", time="2026-01-01T00:00:00.25Z",
                    flag=True, n=7), k, ["flag", "n"])
    if mode == "json":
        back = from_json(to_json(ev))
    else:
        headers, body = to_http(ev, mode)
        back = from_http(headers, body)
    assert back.data == ev.data
    got = {k: str(v).lower() for k, v in verify(back, [k]).extensions.items()}
    assert got == {"flag": "true", "n": "7"}     # (binary mode: as strings)


def test_vector_case2_previous_draft_is_refused():
    c2 = VECTORS["case2_previous_draft"]
    pub = PublicKey.from_p256_point(KEY["x"], KEY["y"], keyid=c2["keyid"])
    ev = Event(None, VECTORS["json_data"].encode(), dssematerial=c2["material"],
               **_attrs_of(c2))
    with pytest.raises(SignatureError) as e:
        verify(ev, [pub])
    assert e.value.reason == "unknown payload type"


def test_vector_case8_spaces_in_signedextattrs(vkey):
    """``exta, extb``: a format error on both sides."""
    case = VECTORS["cases"][-1]
    with pytest.raises(SignatureError) as e:
        sign(_vector_event(case), vkey, "exta, extb")
    assert e.value.reason == "bad signedextattrs"
    ev = Event(None, b"{}", signedextattrs="exta, extb", dssematerial=case["material"],
               **_attrs_of(case))
    with pytest.raises(SignatureError) as e:
        verify(ev, [PublicKey.from_p256_point(KEY["x"], KEY["y"], keyid="testkey")])
    assert e.value.reason == "bad signedextattrs"


def test_time_normalisation():
    assert normalize_time("2020-06-18T19:24:53+02:00") == "2020-06-18T17:24:53Z"
    assert normalize_time("2020-06-18t17:24:53.123456789z") == "2020-06-18T17:24:53Z"
    assert normalize_time("2020-01-01T00:30:00-01:00") == "2020-01-01T01:30:00Z"
    with pytest.raises(SignatureError, match="not RFC 3339"):
        normalize_time("18 June 2020")


@pytest.mark.parametrize("alg", ["ed25519", "p256"])
def test_sign_verify_both_algorithms(alg):
    k = SigningKey.generate(alg)
    ev = Event("orders.eu", b'{"n":1}', source="urn:partner:a", type="order.created",
               datacontenttype="application/json", region="eu", note="x",
               time="2026-01-02T03:04:05.5+01:00")
    s = sign(ev, k, ["region"])
    out = verify(s, KeySet([k.public]))
    assert out.extensions == {"region": "eu"}        # strict: signed extensions only
    assert out.time == ev.time and out.data == ev.data
    assert verify(s, [k], "core-only").extensions == {}
    assert verify(s, [k], "passthrough") is s
    assert check(s, [k]) == (k.keyid, ["region"])
    # an unsigned extension may change; it is not in the verified event
    t = Event("orders.eu", s.data, **dict(s.attributes(), note="changed"))
    assert "note" not in verify(t, [k]).extensions


def _tampered(ev, **changes):
    attrs = ev.attributes()
    data = changes.pop("data", ev.data)
    for k, v in changes.items():
        if v is None:
            attrs.pop(k, None)
        else:
            attrs[k] = v
    attrs.pop("specversion")
    return Event(ev.routing_subject, data, **attrs)


@pytest.fixture(scope="module")
def signed():
    k = SigningKey.generate()
    ev = Event("a.b", b'{"amount": 10, "to": "x"}', source="urn:a", type="pay",
               datacontenttype="application/json", subject="acct-1", prio=3, tag="t")
    return k, sign(ev, k, ["prio"])


@pytest.mark.parametrize("change,reason", [
    ({"data": b'{"amount": 11, "to": "x"}'}, "digest mismatch"),           # one byte of data
    ({"data": b'{"amount":10,"to":"x"}'}, "digest mismatch"),              # JSON re-serialised
    ({"source": "urn:b"}, "digest mismatch"),
    ({"type": "refund"}, "digest mismatch"),
    ({"subject": None}, "digest mismatch"),
    ({"time": "2026-01-01T00:00:00Z"}, "digest mismatch"),                 # added
    ({"datacontenttype": "text/plain"}, "digest mismatch"),
    ({"prio": 4}, "digest mismatch"),                                      # a signed extension
    ({"prio": None}, "digest mismatch"),                                   # ... removed
    ({"signedextattrs": None}, "digest mismatch"),                         # the list stripped
    ({"signedextattrs": "prio,tag"}, "digest mismatch"),                   # ... extended
    ({"dssematerial": None}, "unsigned"),                                   # stripped
    ({"dssematerial": "not base64!"}, "malformed"),
    ({"dssematerial": base64.b64encode(b"[1,2]").decode()}, "malformed"),
])
def test_tampering_is_detected(signed, change, reason):
    k, s = signed
    verify(s, [k])
    with pytest.raises(SignatureError) as e:
        verify(_tampered(s, **change), [k])
    assert e.value.reason == reason
    assert reason in str(e.value)


def _env(s):
    return orjson.loads(base64.b64decode(s["dssematerial"]))


def _with_env(s, env):
    return _tampered(s, dssematerial=base64.b64encode(orjson.dumps(env)).decode())


def test_envelope_tampering(signed):
    k, s = signed
    env = _env(s)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[5] ^= 1
    bad = dict(env, signatures=[{"keyid": k.keyid, "sig": base64.b64encode(sig).decode()}])
    with pytest.raises(SignatureError, match="bad signature"):
        verify(_with_env(s, bad), [k])
    # a new payload (the digest of a forged event) under the old signature
    forged = dict(env, payload=base64.b64encode(b"\1" * 32).decode())
    with pytest.raises(SignatureError, match="bad signature"):
        verify(_with_env(s, forged), [k])
    # signed by another key: unknown to the verifier
    other = SigningKey.generate()
    with pytest.raises(SignatureError, match="unknown key"):
        verify(sign(_tampered(s, dssematerial=None), other), [k])
    # the other key claiming our key id: its signature does not verify
    liar = SigningKey(other._key, keyid=k.keyid)
    with pytest.raises(SignatureError, match="bad signature"):
        verify(sign(_tampered(s, dssematerial=None), liar), [k])


def test_envelope_limits(signed):
    k, s = signed
    env = _env(s)
    many = dict(env, signatures=[{"sig": env["signatures"][0]["sig"]}] * 100)
    ks = KeySet([SigningKey.generate() for _ in range(20)])
    with pytest.raises(SignatureError, match="bad signature"):
        verify(_with_env(s, many), ks)       # bounded: at most MAX_SIGNATURES tries
    with pytest.raises(SignatureError, match="longer than"):
        verify(_tampered(s, dssematerial="A" * 20000), [k])


def test_unsigned_event_modes():
    ev = Event("a", b"x")
    with pytest.raises(SignatureError, match="unsigned"):
        verify(ev, [])
    assert verify(ev, [], "passthrough") is ev
    with pytest.raises(ValueError, match="mode"):
        verify(ev, [], "lenient")


def test_sign_refuses_bad_extension_lists():
    k = SigningKey.generate()
    ev = Event("a", b"x", exta="1")
    with pytest.raises(ValueError, match="no such extension"):
        sign(ev, k, ["missing"])
    with pytest.raises(ValueError, match="lineage|may not"):
        sign(ev, k, ["ffhops"])
    with pytest.raises(SignatureError, match="listed twice"):
        sign(ev, k, ["exta", "exta"])


def test_dsse_pae_and_keys(tmp_path):
    assert pae(b"t", b"ab") == b"DSSEv1 1 t 2 ab"
    k = SigningKey.generate("p256", keyid="k1")
    k.save(tmp_path / "k1.key")
    assert (tmp_path / "k1.key").stat().st_mode & 0o777 == 0o600
    ks = KeySet({"k1": str(tmp_path / "k1.key.pub")})
    s = sign(Event("a", b"x"), k)
    assert check(s, ks)[0] == "k1"
    assert digest(s) == base64.b64decode(_env(s)["payload"])
    assert _env(s)["payloadType"] == PAYLOAD_TYPE


# -- the trust policy of a flow ---------------------------------------------------------------

def _flow_with_policy(rules, keys):
    from fastflow import Flow
    from fastflow.trust import TrustPolicy

    f = Flow()
    got = []
    f.subscribe(">", got.append)
    f.trust = TrustPolicy(rules, keys)
    return f, got


def test_policy_rules_first_match_and_require():
    from fastflow.trust import TrustRule

    a, b = SigningKey.generate(keyid="a"), SigningKey.generate(keyid="b")
    f, got = _flow_with_policy([TrustRule(["orders.vip.>"], ["b"]),
                                TrustRule("orders.>", ["a"]),
                                TrustRule("metrics.>", require=False)], [a, b])
    f.publish(sign(Event("orders.eu", b"1", type="t"), a))
    f.publish(sign(Event("orders.vip.x", b"2", type="t"), b))      # the first rule: b only
    with pytest.raises(SignatureError, match="unknown key"):
        f.publish(sign(Event("orders.vip.x", b"3", type="t"), a))
    f.publish("metrics.cpu", b"4")                                  # require = false
    with pytest.raises(SignatureError, match="digest mismatch"):
        s = sign(Event("metrics.cpu", b"5", type="t"), a)
        f.publish(_tampered(s, data=b"6"))
    f.publish("other", b"7")                                        # no rule
    with pytest.raises(SignatureError, match="unsigned"):
        f.publish_batch(["orders.a", "orders.b"], [b"8", b"9"])
    assert [e.data for e in got] == [b"1", b"2", b"4", b"7"]
    st = f.trust.stats()
    assert st["passed"] == 2 and st["unsigned_passed"] == 1
    assert st["refused"]["unknown key"] == 1 and st["refused"]["digest mismatch"] == 1
    assert st["refused"]["unsigned"] == 1
    f.trust = None
    f.publish("orders.eu", b"10")
    assert got[-1].data == b"10"


def test_policy_json_batch_is_checked_whole():
    from fastflow.event import to_json_batch
    from fastflow.trust import TrustRule

    a = SigningKey.generate(keyid="a")
    f, got = _flow_with_policy([TrustRule("o.>")], [a])
    good = sign(Event("o.1", b'{"x": 1}', type="o.1", datacontenttype="application/json"), a)
    body = to_json_batch([good, Event("o.2", b"{}", type="o.2")])
    with pytest.raises(SignatureError, match=r"unsigned.*batch index 1; nothing was published"):
        f.publish_json_batch(body)
    assert got == []
    assert f.publish_json_batch(to_json_batch([good, good])) == 2
    assert [verify(e, [a]).data for e in got] == [b'{"x": 1}'] * 2


def test_policy_of_an_importing_flow_refuses_without_telling_the_exporter():
    from fastflow import Flow
    from fastflow._impl import ImportTarget
    from fastflow.trust import TrustPolicy, TrustRule

    a = SigningKey.generate(keyid="a")
    exporter, importer = Flow(name="fastflow/x"), Flow(name="fastflow/y")
    got = []
    importer.subscribe(">", got.append)
    importer.trust = TrustPolicy([TrustRule("in.>", ["a"])], [a])
    t = ImportTarget(importer, 0, b"in.")
    exporter.add("orders.>", t)
    exporter.publish("orders.1", b"unsigned")          # the exporter's publisher: no error
    exporter.publish(sign(Event("orders.2", b"signed", type="t"), a))
    assert [e.data for e in got] == [b"signed"] and t.refused == 1
    assert verify(got[0], [a]).data == b"signed"


@pytest.mark.parametrize("table, message", [
    ({"rules": [{"subjects": "a.>", "keys": ["nobody"]}]}, "names key 'nobody'"),
    ({"keys": {"k": "/nonexistent.pub"}}, "trust.keys.k"),
    ({"keys": {"k": "-----BEGIN PUBLIC KEY-----\nxx\n-----END PUBLIC KEY-----\n"}},
     "not a PEM public key"),
    ({"rules": [{"subjects": []}]}, "subjects"),
    ({"rules": [{"subjects": "a..b"}]}, "a..b"),
    ({"rules": [{"subjects": "a", "require": "yes"}]}, "require"),
    ({"rules": [{"subject": "a"}]}, "unknown key 'subject'"),
    ({"rule": []}, "unknown key 'rule'"),
])
def test_policy_config_errors(table, message):
    from fastflow.trust import TrustPolicy

    with pytest.raises(ValueError, match=message):
        TrustPolicy.from_config(table)


def test_server_config_trust_tables(tmp_path):
    from fastflow.server.config import ConfigError, ServerConfig

    k = SigningKey.generate()
    k.save(tmp_path / "k.key")
    cfg = ServerConfig(trust={"keys": {"k": str(tmp_path / "k.key.pub")},
                              "rules": [{"subjects": ["a.>"]}]},
                       accounts={"acme": {"trust": {"keys": {"k": str(tmp_path / "k.key")},
                                                    "rules": [{"subjects": "b"}]}}},
                       users=[{"user": "u", "password": "p", "account": "acme"}])
    pols = cfg.trust_policies()
    assert sorted(pols) == ["$G", "acme"] and pols["acme"].keys.ids() == ["k"]
    with pytest.raises(ConfigError, match=r"accounts.acme.trust.rules\[0\]"):
        ServerConfig(accounts={"acme": {"trust": {"rules": [{"subjects": 5}]}}})


def test_a_signed_empty_extension_cannot_be_dropped():
    """An absent extension and an empty one would hash alike: a signed one that
    is missing is a mismatch of its own."""
    k = SigningKey.generate()
    s = sign(Event("a", b"x", type="t", note=""), k, ["note"])
    verify(s, [k])
    with pytest.raises(SignatureError, match="signed extension 'note' is missing"):
        verify(_tampered(s, note=None), [k])
