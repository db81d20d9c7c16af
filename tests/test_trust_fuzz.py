"""Adversarial tests of the provenance code (docs/provenance.md): what a
publisher with no rights but publishing can send to ``verify``/``check``, to
a TrustPolicy and through the doors.

Every refusal must be a SignatureError with one of its reasons: no other
exception type may escape verify/check/the policy, and nothing a refused
batch carried may be published.

Several tests here stand for defects found by a review, fixed since: a
key id or a dssematerial of another type, times RFC 3339 does not allow, a
rule shared by two policies, a policy set in code that a server dropped, and
an in-process republish during a batch the router had checked whole.
"""

import base64
import re

import orjson
import pytest

from fastflow import Event, Flow
from fastflow.errors import SignatureError
from fastflow.event import to_json
from fastflow.trust import KeySet, SigningKey, TrustPolicy, TrustRule, check, sign, verify
from fastflow.trust.events import PAYLOAD_TYPE, normalize_time

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ED = SigningKey.generate("ed25519", keyid="ed")
P2 = SigningKey.generate("p256", keyid="p2")
KEYS = KeySet([ED, P2])


def b64(b):
    return base64.b64encode(b).decode()


def material(env):
    return b64(orjson.dumps(env))


def signed(**attrs):
    attrs.setdefault("source", "urn:acme")
    attrs.setdefault("type", "order.created")
    ext = attrs.pop("_ext", ())
    return sign(Event("orders.eu", attrs.pop("_data", b'{"n":1}'), **attrs), ED, ext)


def envelope_of(ev):
    return orjson.loads(base64.b64decode(ev.get("dssematerial")))


def with_attrs(ev, **kw):
    a = ev.attributes()
    a.pop("specversion", None)
    a.update(kw)
    return Event(ev.routing_subject, kw.pop("_data", ev.data), **a)


def refused(ev, keys=KEYS, mode="strict"):
    """The reason verify gives (it must raise SignatureError, nothing else)."""
    with pytest.raises(SignatureError) as ei:
        verify(ev, keys, mode)
    assert ei.value.reason in SignatureError.REASONS
    assert "\r" not in str(ei.value) and "\n" not in str(ei.value)
    return ei.value.reason


GOOD = signed(region="eu", _ext=["region"])
GOOD_ENV = envelope_of(GOOD)
SIG = GOOD_ENV["signatures"][0]["sig"]


# -- envelopes of the wrong shape ------------------------------------------------------

WRONG_ENVELOPES = {
    "not json": b64(b"\xff\xfe{"),
    "json list": material([1, 2]),
    "json number": material(5),
    "deep nesting": b64(b"[" * 3000 + b"]" * 3000),
    "signatures a dict": material({**GOOD_ENV, "signatures": {"keyid": "ed", "sig": SIG}}),
    "signatures null": material({**GOOD_ENV, "signatures": None}),
    "signature a string": material({**GOOD_ENV, "signatures": ["ed"]}),
    "sig a number": material({**GOOD_ENV, "signatures": [{"keyid": "ed", "sig": 5}]}),
    "sig a list": material({**GOOD_ENV, "signatures": [{"keyid": "ed", "sig": [SIG]}]}),
    "sig missing": material({**GOOD_ENV, "signatures": [{"keyid": "ed"}]}),
    "sig with whitespace": material({**GOOD_ENV, "signatures": [
        {"keyid": "ed", "sig": SIG[:10] + " \n" + SIG[10:]}]}),
    "sig without padding": material({**GOOD_ENV, "signatures": [
        {"keyid": "ed", "sig": SIG.rstrip("=")}]}),
    "sig with extra padding": material({**GOOD_ENV, "signatures": [
        {"keyid": "ed", "sig": SIG + "=="}]}),
    "payload a number": material({**GOOD_ENV, "payload": 5}),
    "payload missing": material({k: v for k, v in GOOD_ENV.items() if k != "payload"}),
    "payload 31 bytes": material({**GOOD_ENV, "payload": b64(b"x" * 31)}),
    "payloadType a number": material({**GOOD_ENV, "payloadType": 7}),
    "payloadType other": material({**GOOD_ENV, "payloadType": "application/json"}),
    "payloadType CRLF": material({**GOOD_ENV, "payloadType": "a\r\nINFO {}\r\n"}),
    "payloadType non-ascii": material({**GOOD_ENV, "payloadType": PAYLOAD_TYPE + "\u00e9"}),
    "keyid CRLF": material({**GOOD_ENV, "signatures": [
        {"keyid": "x\r\n-ERR 'pwned'\r\n\0", "sig": SIG}]}),
    "keyid a number": material({**GOOD_ENV, "signatures": [{"keyid": 5, "sig": SIG}]}),
    "keyid null": material({**GOOD_ENV, "signatures": [{"keyid": None, "sig": b64(b"\0" * 64)}]}),
    "no signatures": material({**GOOD_ENV, "signatures": []}),
    "too long": "A" * 20000,
    "base64 whitespace": GOOD.get("dssematerial")[:8] + "\n" + GOOD.get("dssematerial")[8:],
    "base64 unpadded": GOOD.get("dssematerial").rstrip("="),
    "non-ascii material": "\u00e9" + GOOD.get("dssematerial"),
    "fullwidth letter": GOOD.get("dssematerial")[:4] + "\uff41" + GOOD.get("dssematerial")[5:],
    "1e5 signatures": material({**GOOD_ENV, "signatures": [{"keyid": "x"}] * 100000}),
    "duplicate keys, last wins": b64(orjson.dumps(GOOD_ENV)[:-1] + b',"signatures":[]}'),
}


@pytest.mark.parametrize("name", sorted(WRONG_ENVELOPES))
def test_a_wrong_envelope_is_a_signature_error(name):
    refused(with_attrs(GOOD, dssematerial=WRONG_ENVELOPES[name]))


@pytest.mark.parametrize("keyid", [["ed"], {"ed": 1}, [], {}, [1, 2]])
def test_a_keyid_of_the_wrong_type_is_a_signature_error(keyid):
    ev = with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
        {"keyid": keyid, "sig": SIG}]}))
    refused(ev)
    ev2 = with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
        {"keyid": keyid, "sig": SIG}, {"keyid": "zz", "sig": SIG}]}))
    refused(ev2)


@pytest.mark.parametrize("value", [5, True, b"\x00\x01"])
def test_a_dssematerial_of_another_type_is_a_signature_error(value):
    refused(with_attrs(GOOD, dssematerial=value))


@pytest.mark.parametrize("value", [5, True, b"region", "", ",", "region,", ",region",
                                   "region,region", "id", "time", "dssematerial",
                                   "signedextattrs", "Region", "r\u0435gion", "r\u0131",
                                   "a b", "a-b", "a\r\nb", "a\0b",
                                   ",".join("e%d" % i for i in range(65))])
def test_signedextattrs_edge_cases(value):
    ev = with_attrs(GOOD, signedextattrs=value)
    reason = refused(ev)
    assert reason in ("bad signedextattrs", "digest mismatch")


def test_signedextattrs_64_names_verify():
    names = ["e%d" % i for i in range(64)]
    ev = signed(_ext=names, **{n: "v" for n in names})
    verify(ev, KEYS)
    with pytest.raises(ValueError):
        signed(_ext=names + ["e64"], **{n: "v" for n in names + ["e64"]})


def test_sign_refuses_lineage_and_core_names():
    for bad in (["ffhops"], ["id"], ["region", "region"], ["missing"]):
        with pytest.raises(ValueError):
            signed(region="eu", _ext=bad)


# -- algorithm confusion -----------------------------------------------------------------

def _resigned(key, body, keyid, sig=None):
    from fastflow.trust.events import _PT, pae
    if sig is None:
        sig = key.sign(pae(_PT, body))
    return material({"payloadType": PAYLOAD_TYPE, "payload": b64(body),
                     "signatures": [{"keyid": keyid, "sig": b64(sig)}]})


def test_algorithm_confusion_and_signature_lengths():
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from fastflow.trust.events import _PT, pae
    body = base64.b64decode(GOOD_ENV["payload"])
    p_sig = P2.sign(pae(_PT, body))
    e_sig = ED.sign(pae(_PT, body))
    # the right signatures verify, raw and DER for P-256
    verify(with_attrs(GOOD, dssematerial=_resigned(P2, body, "p2")), KEYS)
    der = encode_dss_signature(int.from_bytes(p_sig[:32], "big"),
                               int.from_bytes(p_sig[32:], "big"))
    verify(with_attrs(GOOD, dssematerial=_resigned(P2, body, "p2", der)), KEYS)
    # each presented under the other's key id
    assert refused(with_attrs(GOOD, dssematerial=_resigned(P2, body, "ed", p_sig))) \
        == "bad signature"
    assert refused(with_attrs(GOOD, dssematerial=_resigned(ED, body, "p2", e_sig))) \
        == "bad signature"
    for sig in (p_sig[:63], p_sig + b"\0", e_sig[:63], e_sig + b"\0", b"", b"\0" * 64,
                der[:-1], der + b"\0", b"\x30" + b"\xff" * 70):
        for kid in ("ed", "p2", None):
            assert refused(with_attrs(GOOD, dssematerial=_resigned(
                ED, body, kid, sig))) in ("bad signature", "malformed")


# -- time --------------------------------------------------------------------------------

@pytest.mark.parametrize("t", ["2024-12-31T23:59:59Z", "2024-01-01t00:00:00z",
                               "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59",
                               "0001-01-01T00:00:00+23:59",
                               "2024-01-01T00:00:00." + "9" * 5000 + "Z"])
def test_odd_but_valid_times_sign_and_verify(t):
    ev = signed(time=t)
    assert verify(ev, KEYS).get("time") == t


@pytest.mark.parametrize("bad", ["2024-01-01T00:00:99Z", "2024-01-01T00:00:61Z",
                                 "2024-01-32T00:00:00Z", "2024-02-30T00:00:00Z",
                                 "2024-01-01T24:00:00Z", "2024-01-01T00:60:00Z",
                                 "2024-01-01T00:00:00+99:99", "2024-13-01T00:00:00Z",
                                 "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",
                                 "2024-01-01T00:00:00", "2023-02-29T00:00:00Z",
                                 "1900-02-29T00:00:00Z"])
def test_normalize_time_refuses_what_is_not_rfc_3339(bad):
    with pytest.raises(SignatureError) as ei:
        normalize_time(bad)
    assert ei.value.reason == "malformed"


def test_normalize_time_takes_the_edges_rfc_3339_allows():
    # (date-fullyear is 4DIGIT: 0000 is a year; 2000 and 2024 are leap years)
    assert normalize_time("0000-01-01T00:00:00Z") == "0000-01-01T00:00:00Z"
    assert normalize_time("2000-02-29T12:00:00+12:00") == "2000-02-29T00:00:00Z"
    assert normalize_time("2016-12-31T23:59:60Z") == "2016-12-31T23:59:60Z"


def test_a_record_with_a_tampered_time_is_refused_at_the_door():
    ev = signed(time="2024-01-01T00:00:59Z")
    rec = ev.encode().replace(b"00:00:59Z", b"00:00:99Z")
    f = Flow()
    f.trust = TrustPolicy([TrustRule(["orders.>"])], KEYS)
    got = []
    f.subscribe("orders.>", got.append)
    with pytest.raises(SignatureError):
        f.publish_record("orders.eu", rec)
    assert got == []
    with pytest.raises(SignatureError):
        verify(Event.decode("orders.eu", rec), KEYS)


# -- cost --------------------------------------------------------------------------------

def test_the_worst_envelope_costs_at_most_eight_tries():
    many = KeySet([SigningKey.generate("p256") for _ in range(12)])
    tries = []

    class Counting:
        def __init__(self, k):
            self.k = k
            self.keyid = k.keyid

        def verify(self, sig, msg):
            tries.append(1)
            return self.k.verify(sig, msg)

    ks = KeySet()
    ks._by_id = {k.keyid: Counting(k) for k in many}
    sigs = [{"sig": b64(b"\1" * 64)}] * 30 + [{"keyid": kid, "sig": b64(b"\1" * 64)}
                                              for kid in many.ids()]
    env = material({**GOOD_ENV, "signatures": sigs})
    ev = with_attrs(GOOD, dssematerial=env)
    with pytest.raises(SignatureError):
        check(ev, ks)
    assert len(tries) <= 8
    # 16 KiB of keyless signatures without a sig against a policy of 12 P-256
    # keys, and the largest envelope of unknown key ids: refused before any key
    # is tried (what a check costs is counted here, not timed: that is
    # benchmarks/bench_verify.py's job)
    f = Flow()
    f.trust = TrustPolicy([TrustRule(["orders.>"])], ks)
    worst = [with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [{}] * 3000})),
             with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
                 {"keyid": "k%d" % i, "sig": ""} for i in range(450)]}))]
    for w in worst:
        assert len(w.get("dssematerial")) <= 16384
        del tries[:]
        with pytest.raises(SignatureError):
            f.publish(w)
        assert tries == []              # refused before any key is tried


# -- the policy --------------------------------------------------------------------------

def policy_flow(rules, keys=KEYS):
    f = Flow()
    pol = TrustPolicy(rules, keys)
    f.trust = pol
    return f, pol


def test_a_malformed_envelope_through_the_policy_is_a_counted_signature_error():
    f, pol = policy_flow([TrustRule(["orders.>"])])
    bad = with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
        {"keyid": ["ed"], "sig": SIG}]}))
    for publish in (lambda: f.publish(bad), lambda: f.publish_record("orders.eu", bad.encode())):
        with pytest.raises(SignatureError):
            publish()
    assert pol.stats()["refused"]["malformed"] == 2


def test_first_matching_rule_decides_and_dollar_subjects():
    f, pol = policy_flow([TrustRule(["orders.open.*"], require=False),
                          TrustRule(["orders.>"], keys=["p2"]),
                          TrustRule([">"], keys=["ed"])])
    f.publish("orders.open.x", b"1")                    # rule 0: unsigned passes
    with pytest.raises(SignatureError):
        f.publish("orders.eu", b"1")                    # rule 1: required
    with pytest.raises(SignatureError) as ei:
        f.publish(GOOD)                                 # rule 1: signed by ed, not p2
    assert ei.value.reason == "unknown key"
    ev = sign(Event("other.x", b"1", source="s", type="t"), ED)
    f.publish(ev)                                       # rule 2: ed is fine
    with pytest.raises(SignatureError):
        f.publish("other.x", b"1")
    # '>' does not match $-subjects (NATS semantics), so ">" alone does not cover them;
    # a rule naming the $ prefix does.
    f.publish("$app.x", b"1")
    f2, _ = policy_flow([TrustRule(["$app.>"])])
    with pytest.raises(SignatureError):
        f2.publish("$app.x", b"1")


def test_the_same_pattern_in_two_rules_first_wins():
    f, _ = policy_flow([TrustRule(["orders.>"], require=False), TrustRule(["orders.>"])])
    f.publish("orders.x", b"1")
    f2, _ = policy_flow([TrustRule(["orders.>"]), TrustRule(["orders.>"], require=False)])
    with pytest.raises(SignatureError):
        f2.publish("orders.x", b"1")


def test_a_rule_shared_by_two_policies_keeps_each_policys_keys():
    acme, globex = SigningKey.generate(keyid="acme"), SigningKey.generate(keyid="globex")
    rule = TrustRule(["orders.>"])
    p_acme = TrustPolicy([rule], KeySet([acme]))
    TrustPolicy([rule], KeySet([globex]))
    f = Flow()
    f.trust = p_acme
    with pytest.raises(SignatureError) as ei:
        f.publish(sign(Event("orders.x", b"1", source="s", type="t"), globex))
    assert ei.value.reason == "unknown key"
    f.publish(sign(Event("orders.x", b"1", source="s", type="t"), acme))


def test_a_refused_json_batch_publishes_nothing():
    f, pol = policy_flow([TrustRule(["orders.>"])])
    got = []
    f.subscribe(">", got.append)
    ok = sign(Event("orders.a", b'{"n":1}', source="s", type="orders.a",
                    datacontenttype="application/json"), ED)
    unsigned = Event("orders.b", b'2', source="s", type="orders.b")
    body = b"[" + to_json(ok) + b"," + to_json(unsigned) + b"," + to_json(ok) + b"]"
    with pytest.raises(SignatureError) as ei:
        f.publish_json_batch(body)
    assert "batch index 1" in str(ei.value) and "nothing was published" in str(ei.value)
    assert got == []
    with pytest.raises(SignatureError):
        f.publish("orders.x", b"unsigned")
    with pytest.raises(SignatureError):
        f.publish_batch(["orders.x", "orders.y"], [b"1", b"2"])
    assert got == []
    f.publish_json_batch(b"[" + to_json(ok) + b"]")
    assert len(got) == 1


@pytest.mark.parametrize("how", ["publish", "publish_json", "publish_json_batch",
                                 "publish_record"])
def test_a_subscriber_republishing_during_a_checked_publish_is_checked(how):
    f, pol = policy_flow([TrustRule(["orders.>", "pay.>"])])
    forged, refusals = [], []
    f.subscribe("pay.>", forged.append)

    def relay(ev):
        try:
            f.publish("pay.forged", b"unsigned")
        except SignatureError as exc:
            refusals.append(exc)

    f.subscribe("orders.>", relay)
    ok = sign(Event("orders.a", b'{"n":1}', source="s", type="orders.a",
                    datacontenttype="application/json"), ED)
    if how == "publish":
        f.publish(ok)
    elif how == "publish_json":
        f.publish_json(to_json(ok))
    elif how == "publish_json_batch":
        f.publish_json_batch(b"[" + to_json(ok) + b"]")
    else:
        f.publish_record("orders.a", ok.encode())
    assert forged == []
    assert len(refusals) == 1


def test_an_advisory_subscriber_that_publishes_is_checked_and_does_not_loop():
    f, pol = policy_flow([TrustRule(["orders.>"])])
    seen, forged, errors = [], [], []
    f.subscribe("orders.>", forged.append)

    def on_advisory(ev):
        seen.append(orjson.loads(ev.data))
        try:
            f.publish("orders.from-advisory", b"unsigned")
        except SignatureError as exc:
            errors.append(exc)

    f.subscribe("$SYS.advisory.trust_refused", on_advisory)
    with pytest.raises(SignatureError):
        f.publish("orders.x", b"1")
    assert forged == []
    assert len(errors) == 1
    assert [a["subject"] for a in seen] == ["orders.x"]
    assert pol.stats()["refused"]["unsigned"] == 2


def test_the_advisory_and_counters_are_bounded():
    f, pol = policy_flow([TrustRule(["orders.>"])])
    n = []
    f.subscribe("$SYS.advisory.trust_refused", n.append)
    for _ in range(150):
        with pytest.raises(SignatureError):
            f.publish("orders.x", b"1")
    assert len(n) <= 100 + 100     # (a second boundary may fall in the loop)
    assert pol.stats()["refused_total"] == 150


# -- the wire: no CR/LF, a sensible answer --------------------------------------------------

def test_refusal_messages_are_one_line_and_bounded():
    crlf = "x\r\n-ERR 'injected'\r\n\0"
    evs = [with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "payloadType": crlf})),
           with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
               {"keyid": crlf * 50, "sig": SIG}] * 20})),
           with_attrs(GOOD, signedextattrs=crlf),
           with_attrs(GOOD, dssematerial=material({**GOOD_ENV, "signatures": [
               {"keyid": "ed", "sig": SIG}], "payloadType": crlf}))]
    f, _ = policy_flow([TrustRule(["orders.>"])])
    for ev in evs:
        with pytest.raises(SignatureError) as ei:
            f.publish(ev)
        msg = str(ei.value)
        assert not re.search(r"[\r\n\0]", msg), msg
        assert len(msg) < 1024, len(msg)


# -- the property: any change to signed content is caught --------------------------------

SIGNED_NAMES = ("id", "source", "type", "datacontenttype", "dataschema", "subject", "time",
                "region", "tier", "signedextattrs", "dssematerial")

attr_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF),
                    min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=40), source=attr_text, region=attr_text, tier=attr_text,
       subject=attr_text, which=st.sampled_from(SIGNED_NAMES + ("data", "record")),
       pos=st.integers(min_value=0, max_value=10 ** 6),
       delta=st.integers(min_value=1, max_value=255))
def test_any_single_byte_change_is_caught_or_touches_nothing_signed(
        data, source, region, tier, subject, which, pos, delta):
    ev = sign(Event("orders.eu", data, source=source, type="t", subject=subject,
                    datacontenttype="text/plain", dataschema="urn:schema", region=region,
                    tier=tier, time="2024-05-06T07:08:09.5+02:00"),
              ED, ["region", "tier"])
    d0 = verify(ev, KEYS, "passthrough")
    assert d0 is ev
    if which == "record":
        rec = bytearray(ev.encode())
        rec[pos % len(rec)] = (rec[pos % len(rec)] + delta) % 256
        try:
            mutated = Event.decode("orders.eu", bytes(rec))
            mutated.attributes()
        except Exception:
            return                      # the record no longer decodes: nothing to verify
    else:
        if which == "data":
            raw = bytearray(ev.data)
            if not raw:
                return
            raw[pos % len(raw)] = (raw[pos % len(raw)] + delta) % 256
            mutated = Event("orders.eu", bytes(raw), **{
                k: v for k, v in ev.attributes().items() if k != "specversion"})
        else:
            raw = bytearray(ev.get(which).encode())
            raw[pos % len(raw)] = (raw[pos % len(raw)] + delta) % 256
            try:
                value = raw.decode()
                mutated = with_attrs(ev, **{which: value})
            except Exception:
                return                  # not text, or not a valid attribute any more
    try:
        out = verify(mutated, KEYS, "core-only")
    except SignatureError:
        return
    # it verified: the signed content must be what was signed
    mine = verify(ev, KEYS, "core-only")
    assert out.data == mine.data
    for k in ("id", "source", "type", "datacontenttype", "dataschema", "subject"):
        assert out.get(k) == mine.get(k), k
    assert normalize_time(out.get("time")) == normalize_time(mine.get("time"))
    s_out = verify(mutated, KEYS, "strict")
    assert s_out.get("region") == region and s_out.get("tier") == tier


# -- a door ----------------------------------------------------------------------------

def _trust_config(require=True):
    return {"keys": {"ed": ED.public.pem().decode(), "p2": P2.public.pem().decode()},
            "rules": [{"subjects": ["orders.>"], "require": require}]}


def _nats_publish(aloop, ffnats, headers, flow=None, **settings):
    """The items a NATS publisher subscribed to orders.> gets for an HPUB of
    ``headers`` on orders.x, then a plain PUB on orders.y, then PING."""
    from test_nats import NRaw, hpub
    out = []

    async def main():
        async with ffnats(flow=flow, **settings) as srv:
            r = await NRaw.open(srv.nats_port)
            try:
                await r.handshake(headers=True)
                await r.send(b"SUB orders.> 1\r\n" + hpub(b"orders.x", headers, b"y")
                             + b"PUB orders.y 1\r\nz\r\nPING\r\n")
                out.extend(await r.pongs(timeout=3))
            finally:
                r.close()

    aloop(main, timeout=10)
    return out


CE = [b"ce-specversion: 1.0", b"ce-id: i", b"ce-source: /s", b"ce-type: t"]


def test_the_nats_door_answers_a_malformed_envelope_with_a_permissions_error(aloop, ffnats):
    bad = material({**GOOD_ENV, "signatures": [{"keyid": ["ed"], "sig": SIG}]}).encode()
    got = _nats_publish(aloop, ffnats, CE + [b"ce-dssematerial: " + bad],
                        trust=_trust_config(require=False))
    assert [i[0] for i in got] == ["-ERR", "MSG", "PONG"], got
    assert "Permissions Violation" in got[0][1] and "malformed" in got[0][1]


def test_the_nats_door_refuses_an_unsigned_publish_with_one_line(aloop, ffnats):
    crlf = material({**GOOD_ENV, "payloadType": "x\r\n-ERR 'no'", "signatures": [
        {"keyid": "ed", "sig": SIG}]}).encode()
    for headers in (CE, CE + [b"ce-dssematerial: " + crlf]):
        got = _nats_publish(aloop, ffnats, headers, trust=_trust_config())
        assert [i[0] for i in got] == ["-ERR", "-ERR", "PONG"], got     # (orders.y too)
        for item in got[:2]:
            assert "signature check failed" in item[1]
            assert not re.search(r"[\r\n\0]", item[1])


def test_a_policy_set_in_code_survives_the_server(aloop, ffnats):
    flow = Flow()
    flow.trust = TrustPolicy([TrustRule(["orders.>"])], KEYS)
    got = _nats_publish(aloop, ffnats, CE, flow=flow)
    assert [i[0] for i in got] == ["-ERR", "-ERR", "PONG"], got


def test_the_http_door_batch_and_structured_refusals(aloop, ffserver):
    import httpx
    from peers import free_port

    flow = Flow()
    forged, refusals, seen = [], [], []
    flow.subscribe("pay.>", forged.append)
    flow.subscribe("orders.>", seen.append)

    def relay(ev):
        try:
            flow.publish("pay.forged", b"unsigned")
        except SignatureError as exc:
            refusals.append(exc)

    flow.subscribe("orders.ok", relay)
    cfg = _trust_config()
    cfg["rules"][0]["subjects"] = ["orders.>", "pay.>"]
    ok = sign(Event("orders.ok", b'{"n":1}', source="s", type="orders.ok",
                    datacontenttype="application/json"), ED)
    unsigned = Event("orders.no", b'2', source="s", type="orders.no")
    ce = "application/cloudevents+json"
    batch = "application/cloudevents-batch+json"
    port = free_port()
    out = {}

    async def main():
        async with ffserver(flow=flow, http_port=port, trust=cfg):
            async with httpx.AsyncClient(base_url="http://127.0.0.1:%d" % port,
                                         timeout=5) as hc:
                r = await hc.post("/events", content=b"[" + to_json(ok) + b","
                                  + to_json(unsigned) + b"]", headers={"content-type": batch})
                out["mixed"] = (r.status_code, r.text, len(seen))
                for name, value in (("number", 5), ("listkid", material({
                        **GOOD_ENV, "signatures": [{"keyid": ["ed"], "sig": SIG}]}))):
                    doc = orjson.loads(to_json(ok))
                    doc["dssematerial"] = value
                    r = await hc.post("/events", content=orjson.dumps(doc),
                                      headers={"content-type": ce})
                    out[name] = (r.status_code, r.text)
                r = await hc.post("/events", content=b"[" + to_json(ok) + b"]",
                                  headers={"content-type": batch})
                out["good"] = r.status_code

    aloop(main, timeout=10)
    status, text, n_seen = out["mixed"]
    assert status == 403 and "nothing was published" in text and n_seen == 0, out
    assert out["good"] in (200, 202, 204), out
    problems = []
    if out["number"][0] != 403:
        problems.append("dssematerial 5: %r" % (out["number"],))
    if out["listkid"][0] != 403:
        problems.append("keyid list: %r" % (out["listkid"],))
    if forged or len(refusals) != 1:
        problems.append("relay during a checked batch: %d forged delivered, %d refused"
                        % (len(forged), len(refusals)))
    assert not problems, problems
