"""CloudEvents JSON decoded in C (src_ext/cejson.pyx: the core's
``decode_event`` / ``decode_batch``, which ``fastflow.event.from_json`` and
``from_json_batch`` run, and ``Router.publish_json`` / ``publish_json_batch``).

The C decoder must give what the reference gives, ``fastflow.event``'s
``_from_json_py`` and ``_from_json_batch_py``: the same Event (``==``, the
same attribute types, the same record bytes from ``encode()``) or the same
error (type and message).  The differential tests drive both with random
events and batches (every attribute, extensions of every type, data of
every content type, escapes, unicode, duplicates, malformed bytes,
truncations, deep nesting); the vectors come from the CloudEvents spec's
JSON format and from the official ``cloudevents`` SDK.  The publish tests
run on both cores."""

import base64
import datetime as dt
import json
import random

import pytest
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent
from cloudevents.v1 import conversion as legacy_conversion
from cloudevents.v1 import http as legacy_http
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow.event as fevent
from fastflow.errors import EventError, EventTooLarge, FastflowError, LogFullError, SubjectError

from conftest import CORES, both_cores

NATIVE = CORES.get("native")
REF_ONE = fevent._from_json_py
REF_BATCH = fevent._from_json_batch_py
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


# -- the comparison ----------------------------------------------------------------------------

def typed(v):
    """A value with its type, so that True and 1 differ (recursively)."""
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    return (type(v).__name__, v)


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:                # noqa: B902 (any error: compared)
        return ("error", type(exc), str(exc))


def same_event(a, b):
    assert a.routing_subject == b.routing_subject
    assert a.data == b.data
    assert typed(a.attributes()) == typed(b.attributes())
    assert list(a.attributes()) == list(b.attributes())     # the same order
    assert a == b
    assert a.encode() == b.encode()


def native():
    """The native core (the test is skipped without one)."""
    if NATIVE is None:
        pytest.skip("one core only: FASTFLOW_NO_EXTENSIONS=1")
    return NATIVE


def check(body, routing_subject=None, batch=False):
    """The native core's decoder against the reference on ``body``; returns
    the reference's outcome."""
    native()
    if batch:
        c = outcome(NATIVE.decode_batch, body, routing_subject)
        r = outcome(REF_BATCH, body, routing_subject)
    else:
        c = outcome(NATIVE.decode_event, body, routing_subject)
        r = outcome(REF_ONE, body, routing_subject)
    if r[0] == "error":
        assert c == r, "C {!r}\nreference {!r}\nbody {!r}".format(c, r, body)
        return r
    assert c[0] == "ok", "C {!r}\nreference {!r}\nbody {!r}".format(c, r, body)
    if batch:
        assert len(c[1]) == len(r[1])
        for a, b in zip(c[1], r[1]):
            same_event(a, b)
    else:
        same_event(c[1], r[1])
    return r


def check_both(body, routing_subject=None):
    """``body`` as one event, and as a batch of it (alone, and twice)."""
    check(body, routing_subject)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    check(b"[" + body + b"]", routing_subject, batch=True)
    check(b" [ " + body + b" ,\n" + body + b" ] ", routing_subject, batch=True)


def members_json(pairs, ensure_ascii=True, space=""):
    """A JSON object from (key, value) pairs (repeats kept); a value of
    ``Raw`` is spliced as it is."""
    parts = []
    for k, v in pairs:
        text = v.text if isinstance(v, Raw) else json.dumps(v, ensure_ascii=ensure_ascii)
        parts.append(json.dumps(k, ensure_ascii=ensure_ascii) + space + ":" + space + text)
    return "{" + space + ("," + space).join(parts) + space + "}"


class Raw:
    def __init__(self, text):
        self.text = text


def doc(**members):
    """A JSON event: BASE with ``members`` (a None value: dropped)."""
    d = dict(BASE)
    for k, v in members.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


# -- the C path is taken -------------------------------------------------------------------------

def test_the_c_path_decides_common_events(monkeypatch):
    calls = []
    monkeypatch.setattr(fevent, "_from_json_py", lambda *a: calls.append(a))
    monkeypatch.setattr(fevent, "_from_json_batch_py", lambda *a: calls.append(a))
    events = [doc(id=str(i), time="2024-02-29T12:00:00.5+01:00", subject="s", ext="v",
                  num=-5, flag=True, datacontenttype="application/json",
                  data={"n": i, "s": "caf\u00e9 \u20ac \U0001f600", "l": [1, 2.5, None]})
              for i in range(50)]
    events.append(doc(data_base64=base64.b64encode(b"\x00\xff").decode()))
    events.append(doc(datacontenttype="text/plain; charset=utf-8", data="h\u00e9\n"))
    events.append(doc(data="no content type", fftrace="ab12cd34", ffhops="3"))
    events.append(doc(source="https://example.com/a", type="com.example.t"))
    body = json.dumps(events).replace("/", "\\/")            # escapes everywhere
    out = native().decode_batch(body, "a.b")
    assert len(out) == len(events) and not calls
    for text in (json.dumps(e) for e in events):
        native().decode_event(text)
    assert not calls
    monkeypatch.undo()
    check(body, "a.b", batch=True)


def test_fastflow_event_uses_the_core():
    assert fevent.from_json is fevent._impl.decode_event
    assert fevent.from_json_batch is fevent._impl.decode_batch


# -- vectors ------------------------------------------------------------------------------------

SPEC_EVENT = """{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "subject": null,
    "id" : "C234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
}"""

SPEC_BINARY = """{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/vnd.apache.thrift.binary",
    "data_base64" : "WzEsMiwzXQ=="
}"""

SPEC_XML = """{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "B234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "unsetextension": null,
    "datacontenttype" : "application/xml",
    "data" : "<much wow=\\"xml\\"/>"
}"""

SPEC_SDK = """{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "D234-1234-1234",
    "data" : {"message": "Hello"}
}"""


@pytest.mark.parametrize("body", [SPEC_EVENT, SPEC_BINARY, SPEC_XML, SPEC_SDK])
def test_spec_json_format_examples(body):
    check_both(body, "some.subject")
    check_both(body.encode())


def test_spec_examples_decode_to_their_attributes():
    e = native().decode_event(SPEC_EVENT, "some.subject")
    assert typed(e.attributes()) == typed({
        "specversion": "1.0", "id": "C234-1234-1234", "source": "/mycontext",
        "type": "com.example.someevent", "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value", "comexampleothervalue": 5,
        "datacontenttype": "application/json"})
    assert e.data == SPEC_EVENT[SPEC_EVENT.index('{\n        "appinfoA"'):-2].encode()
    e = native().decode_event(SPEC_BINARY)
    assert e.data == b"[1,2,3]" and e.datacontenttype == "application/vnd.apache.thrift.binary"
    e = native().decode_event(SPEC_XML)
    assert e.data == b'<much wow="xml"/>' and "unsetextension" not in e.attributes()
    e = native().decode_event(SPEC_SDK)
    assert e.datacontenttype == "application/json" and e.data == b'{"message": "Hello"}'
    batch = native().decode_batch("[" + ",".join([SPEC_EVENT, SPEC_BINARY, SPEC_XML]) + "]")
    assert [x.id for x in batch] == ["C234-1234-1234", "A234-1234-1234", "B234-1234-1234"]


@pytest.mark.parametrize("t", [
    "2018-04-05T17:31:00Z", "2018-04-05t17:31:00z", "2018-04-05 17:31:00Z",
    "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
    "2000-02-29T23:59:59.999999999+00:00", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59-23:59", "2024-01-01T24:00:00Z", "2024-01-01T23:60:00Z",
    "2024-01-01T23:59:60Z", "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z",
    "2024-04-31T00:00:00Z", "2024-01-01T00:00:00+24:00", "2024-01-01T00:00:00+05:60",
    "2024-01-01T00:00:00-00:00", "2024-01-01T00:00:00.Z", "2024-01-01T00:00:00",
    "2024-01-01T00:00Z", "2024-1-01T00:00:00Z", "2024-01-01T00:00:00+0100",
    "2024-01-01T00:00:00Z ", " 2024-01-01T00:00:00Z", "\uff12024-01-01T00:00:00Z",
    "\u0662\u0660\u0662\u0664-01-01T00:00:00Z", "2024-01-01T00:00:00ZZ", "",
    "2024-01-01T00:00:00.1234567890123456789012345Z", "2024-01-01X00:00:00Z",
])
def test_time_vectors(t):
    check_both(json.dumps(doc(time=t)))
    check_both(json.dumps(doc(time=t), ensure_ascii=False))


@pytest.mark.parametrize("b64", [
    "", "QQ==", "QUI=", "QUJD", "QR==", "QUJ=", "QQ=", "QQ", "Q", "QUJD=", "QUJD==", "Q===",
    "=", "==", "====", "QU=D", "QQ==QQ==", "QUJD\n", " QUJD", "QU JD", "QUJ\u00e9", "QUJ-",
    "QUJ_", "+/+/", "////", "AAAA" * 1000,
], ids=lambda b: ascii(b[:10]) + str(len(b)))
def test_base64_vectors(b64):
    check_both(json.dumps(doc(data_base64=b64)))
    check_both(json.dumps(doc(data_base64=b64)).replace("/", "\\/"))
    check_both(json.dumps(doc(data_base64=b64, data=None)))
    check_both(members_json(list(BASE.items()) + [("data_base64", b64), ("data", Raw("null"))]))
    check_both(members_json(list(BASE.items()) + [("data", Raw(" 1")), ("data_base64", b64)]))


CONTENT_TYPES = [
    "application/json", "APPLICATION/JSON", " application/json ; charset=utf-8",
    "application/cloudevents+json", "application/vnd.x+json; v=1", "text/json", "/json",
    "json", "a/b/json", "a/+json", "a/xjson", "a/json+", "text/plain",
    "text/plain; charset=utf-8", "text/plain;charset=UTF-8", 'text/plain; charset="utf-8"',
    "text/plain; charset=utf8", "text/plain; charset=latin-1", "text/plain; charset=",
    "text/plain; charset", 'text/plain; charset=""', "text/plain; charset=nope",
    "text/plain; charset=utf-16", "text/plain; CHARSET = utf-8 ; x=y",
    "text/plain; charset=latin-1; charset=utf-8", "text/plain; charset=utf-8; charset=ascii",
    "application/xml", "application/octet-stream", "text/plain\t", "application/json\u00a0",
    "t\u00e9xt/plain", "application/json\x7f", "",
]


@pytest.mark.parametrize("ct", CONTENT_TYPES)
@pytest.mark.parametrize("data", ["h\u00e9llo \u20ac", "", "x\u0000y", {"a": [1, "\u00e9"]}, 5,
                                  None, True, [1, 2], "\ud83d\ude00"])
def test_content_type_vectors(ct, data):
    check_both(json.dumps(doc(datacontenttype=ct, data=data)))
    check_both(json.dumps(doc(datacontenttype=ct, data=data), ensure_ascii=False))


@pytest.mark.parametrize("value", [
    Raw("0"), Raw("-0"), Raw("1"), Raw("-1"), Raw("127"), Raw("128"), Raw("255"), Raw("256"),
    Raw("65535"), Raw("65536"), Raw("-32"), Raw("-33"), Raw("-128"), Raw("-129"),
    Raw("-32768"), Raw("-32769"), Raw("2147483647"), Raw("2147483648"), Raw("-2147483648"),
    Raw("-2147483649"), Raw("12345678901"), Raw("1.0"), Raw("1e2"), Raw("1E400"), Raw("-1.5e-3"),
    Raw("99999999999999999999999"), Raw("true"), Raw("false"), Raw("null"), Raw('""'),
    Raw('"x"'), Raw('"\\u00e9\\/"'), Raw("[]"), Raw("{}"), Raw('{"a": 1}'), Raw("[1, [2]]"),
    Raw("01"), Raw("-"), Raw("1."), Raw(".5"), Raw("+1"), Raw("NaN"), Raw("Infinity"),
    Raw("tru"), Raw("nul"), Raw('"a'), Raw("0x10"),
])
@pytest.mark.parametrize("name", ["ext", "ffhops", "fftrace", "id", "source", "type",
                                  "subject", "dataschema", "specversion", "time", "data",
                                  "data_base64", "datacontenttype", "Ext", "ex-t", "", "\u00e9"])
def test_member_value_vectors(name, value):
    pairs = [(k, v) for k, v in BASE.items() if k != name] + [(name, value)]
    check_both(members_json(pairs))
    check_both(members_json(list(reversed(pairs)), space=" \n\t"))


@pytest.mark.parametrize("hops", [Raw("0"), Raw("65535"), Raw("65536"), Raw("-1"),
                                  '12', '007', '0', '', '1a', ' 1', '65535', '65536',
                                  '000000000000065535', '99999999999999999999', '\u0663',
                                  Raw("true"), Raw("null"), Raw("1.0")])
def test_ffhops_vectors(hops):
    check_both(members_json(list(BASE.items()) + [("ffhops", hops)]))


def test_repeated_keys():
    for key in ["id", "data", "data_base64", "ext", "specversion", "datacontenttype", "time"]:
        for first, second in [(Raw('"a"'), Raw('"b"')), (Raw("null"), Raw('"b"')),
                              (Raw('"\xff"'), Raw('"b"')), (Raw('{"a":1}'), Raw("2"))]:
            pairs = list(BASE.items()) + [(key, first), ("x", "y"), (key, second)]
            body = members_json(pairs).encode("latin-1", "surrogatepass") \
                if "\xff" in first.text else members_json(pairs)
            check_both(body)


def test_keys_with_escapes():
    check_both('{"specversion":"1.0","\\u0069d":"1","source":"/s","type":"t"}')
    check_both('{"specversion":"1.0","id":"1","source":"/s","type":"t","e\\u0078t":"v"}')
    check_both('{"specversion":"1.0","id":"1","source":"/s","type":"t","\\u00e9":null}')
    check_both('{"specversion":"1.0","id":"1","source":"/s","type":"t","\\ud800":null}')
    check_both('{"specversion":"1.0","id":"1","source":"/s","type":"t","\\"":1}')


@pytest.mark.parametrize("text", [
    "plain", "caf\u00e9", "\u20ac\U0001f600", "a\\b", 'q"uote', "tab\there", "nl\n",
    "\u0000", "\u001f", "\u007f", "\u2028", "/slash/", "\ufffd", "\ud800", "\udc00",
    "\ud83d\ude00", "\ud83d", "x" * 70000, "\u00e9" * 40000, "\u20ac" * 21845,
    "\u20ac" * 21846,
], ids=lambda t: ascii(t[:8]) + str(len(t)))
@pytest.mark.parametrize("name", ["id", "source", "type", "subject", "ext", "fftrace",
                                  "dataschema", "data"])
def test_string_vectors(name, text):
    d = doc(**{name: text})
    check_both(json.dumps(d))
    check_both(json.dumps(d, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    check_both(json.dumps(d).replace("/", "\\/"))


@pytest.mark.parametrize("raw", [
    b'"\xff"', b'"\xc0\x80"', b'"\xc2"', b'"\xe0\x80\x80"', b'"\xed\xa0\x80"',
    b'"\xed\x9f\xbf"', b'"\xf0\x8f\xbf\xbf"', b'"\xf4\x90\x80\x80"', b'"\xf4\x8f\xbf\xbf"',
    b'"\xf5\x80\x80\x80"', b'"\x80"', b'"\xe2\x82"', b'"a\x00"', b'"a\x1f"', b'"\x7f"',
    b'"\\x"', b'"\\u12"', b'"\\u12g4"', b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"',
    b'"\\ud800\\udc00"', b'"\\uDBFF\\uDFFF"', b'"\\ud800\\n"', b'"\\', b'"abc',
])
@pytest.mark.parametrize("name", ["id", "ext", "data", "unset", "data_base64"])
def test_malformed_string_vectors(name, raw):
    body = members_json([(k, v) for k, v in BASE.items()] + [(name, Raw("{}"))]).encode()
    body = body.replace(b"{}", raw, 1) if name == "data" else body.replace(b"{}", raw)
    check_both(body)
    check_both(body.replace(b"{}", b'{"a": ' + raw + b"}"))
    check_both(body.replace(b"{}", b"[" + raw + b"]"))
    check_both(members_json(list(BASE.items()) + [("data", Raw("[]"))]).encode().replace(
        b"[]", b'{"k": [' + raw + b"]}"))


@pytest.mark.parametrize("depth", [1, 2, 62, 63, 64, 65, 66, 200, 5000, 200000])
def test_nesting_depth(depth):
    for inner in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth,
                  "[" * depth, "[{" * (depth // 2) + "}]" * (depth // 2)):
        body = members_json(list(BASE.items()) + [("data", Raw(inner))])
        check_both(body)
        check(body.replace('"data"', '"ext"'))


@pytest.mark.parametrize("body", [
    b"", b" ", b"{", b"}", b"{}", b"[]", b"null", b"1", b'"x"', b"[1]", b"\xef\xbb\xbf{}",
    json.dumps(BASE).encode() + b" x", json.dumps(BASE).encode() + b"\x00",
    json.dumps(BASE).encode() + b"\n\r\t ", b"\n\r\t " + json.dumps(BASE).encode(),
    json.dumps(BASE).encode() + b"{}", json.dumps(BASE).encode()[:-1] + b",}",
    json.dumps(BASE).encode()[:-1] + b',"x"}', json.dumps(BASE).encode()[:-1] + b',"x":}',
    json.dumps(BASE).encode().replace(b":", b" : \x0c"),
    json.dumps(BASE).encode().replace(b",", b",,"),
    json.dumps(dict(BASE, **{"x{}".format(i): i for i in range(70)})).encode(),
    json.dumps(dict(BASE, **{"x{}".format(i): i for i in range(59)})).encode(),
    json.dumps(dict(BASE, **{"x{}".format(i): i for i in range(60)})).encode(),
    json.dumps(dict(BASE, **{"x{}".format(i): i for i in range(61)})).encode(),
], ids=lambda b: ascii(b[:12]) + str(len(b)))
def test_document_vectors(body):
    check(body)
    check(body, "a.b", batch=True)
    check(b"[" + body + b"]", batch=True)
    check(b"[" + body + b"," + json.dumps(BASE).encode() + b"]", batch=True)


@pytest.mark.parametrize("body", [
    b"[]", b" [ ] ", b"[]x", b"[] []", b"[", b"]", b"[,]", b"[{},]", b"[1]", b"[[]]",
    b"[null]", b"{}", b'[{"a":1} {"b":2}]',
])
def test_batch_vectors(body):
    check(body, batch=True)
    one = json.dumps(BASE).encode()
    check(body.replace(b"{}", one), batch=True)
    check(b"[" + one + b"," + body[1:] if body.startswith(b"[") else body, batch=True)


@pytest.mark.parametrize("routing_subject", [None, "a.b", b"a.b", "a..b", b"a\xffb", "a.*",
                                             "", 5, "x" * 2000, "caf\u00e9.b", b"caf\xc3\xa9.b"])
def test_routing_subjects(routing_subject):
    body = json.dumps(BASE)
    check(body, routing_subject)
    check("[" + body + "]", routing_subject, batch=True)
    check("[]", routing_subject, batch=True)
    check("[" + body + ",{}]", routing_subject, batch=True)


@pytest.mark.parametrize("kind", ["bytes", "str", "bytearray", "memoryview", "strided",
                                  "int", "none", "surrogate", "array"])
def test_body_types(kind):
    import array

    text = json.dumps(doc(data={"a": "\u00e9"}))
    body = {"bytes": text.encode(), "str": text, "bytearray": bytearray(text.encode()),
            "memoryview": memoryview(text.encode()),
            "strided": memoryview(text.encode() * 2)[::2], "int": 5, "none": None,
            "surrogate": text[:-1] + ', "x": "\ud800"}',
            "array": array.array("b", text.encode())}[kind]
    check(body)
    if kind in ("bytes", "bytearray", "memoryview"):
        check(type(body)(b"[" + bytes(body) + b"]"), batch=True)
    elif kind == "str":
        check("[" + body + "]", batch=True)
    else:
        check(body, batch=True)


# -- random events ---------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
ANY_TEXT = st.text(st.characters(), max_size=12)          # lone surrogates too
NAME = st.one_of(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
                 st.sampled_from(["Ext", "ex-t", "e_x", "", "\u00e9t\u00e9", "data",
                                  "data_base64", "specversion", "ffhops", "fftrace"]))
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
EXT_VALUE = st.one_of(TEXT, INT32, st.booleans(), st.none(),
                      st.integers(-(1 << 70), 1 << 70), st.floats(allow_nan=False),
                      st.lists(st.integers(), max_size=2),
                      st.dictionaries(TEXT, st.integers(), max_size=2), ANY_TEXT)
JSON_DATA = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
              st.floats(allow_nan=False, allow_infinity=False), ANY_TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12)
TIMES = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda t: t.isoformat()),
    st.datetimes(timezones=st.just(dt.timezone.utc)).map(
        lambda t: t.isoformat().replace("+00:00", "Z")),
    st.from_regex(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,12})?([Zz]|[+-]\d\d:\d\d)",
                  fullmatch=True),
    TEXT)
CT = st.one_of(st.sampled_from(CONTENT_TYPES), TEXT)


RARELY = st.sampled_from([False] * 19 + [True])
GOOD_EXT_VALUE = st.one_of(TEXT, INT32, st.booleans(), st.none())
GOOD_TIMES = st.one_of(
    st.datetimes(timezones=st.just(dt.timezone.utc)).map(
        lambda t: t.isoformat().replace("+00:00", "Z")),
    st.datetimes(timezones=st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
        lambda m: dt.timezone(dt.timedelta(minutes=m)))).map(lambda t: t.isoformat()))
GOOD_CT = st.sampled_from(["application/json", "application/cloudevents+json", "text/plain",
                           "text/plain; charset=utf-8", "application/xml", "text/csv"])


@st.composite
def events(draw):
    """A list of (key, value) members: valid events half of the time, else
    with every kind of mistake now and then."""
    good = draw(st.booleans())
    ext_value = GOOD_EXT_VALUE if good else EXT_VALUE
    d = {}
    for k in ("specversion", "id", "source", "type"):
        if good or draw(st.integers(0, 30)):
            d[k] = draw(st.sampled_from(["1.0"]) if k == "specversion"
                        else st.one_of(TEXT.filter(bool), st.just("/a/b"), st.just("t.u.v")))
        elif draw(st.booleans()):
            d[k] = draw(EXT_VALUE)
    if good:
        optional = (("time", GOOD_TIMES), ("subject", TEXT.filter(bool)),
                    ("dataschema", TEXT.filter(bool)), ("datacontenttype", GOOD_CT),
                    ("fftrace", TEXT),
                    ("ffhops", st.one_of(st.integers(0, 65535), st.integers(0, 999).map(str))))
    else:
        optional = (("time", TIMES), ("subject", TEXT), ("dataschema", TEXT),
                    ("datacontenttype", CT), ("fftrace", TEXT),
                    ("ffhops", st.one_of(st.integers(-2, 70000), st.integers(0, 999).map(str),
                                         TEXT)))
    for k, strategy in optional:
        if draw(st.integers(0, 3)) == 0:
            d[k] = draw(st.one_of(strategy, st.none()) if good or draw(st.integers(0, 9))
                        else EXT_VALUE)
    for _ in range(draw(st.integers(0, 4))):
        d[draw(st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True) if good else NAME)] = \
            draw(ext_value)
    kind = draw(st.integers(0, 5))
    if kind == 1:
        d["data"] = draw(JSON_DATA)
        if good and "datacontenttype" in d and draw(st.booleans()):
            d["datacontenttype"] = "application/json"
    elif kind == 2:
        d["data"] = draw(TEXT if good else ANY_TEXT)
        if draw(st.booleans()):
            d["datacontenttype"] = draw(st.sampled_from(["text/plain", "application/xml",
                                                         "text/x; charset=utf-8"]))
    elif kind == 3:
        d["data_base64"] = draw(st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode())
                                if good else st.one_of(st.binary(max_size=20).map(
                                    lambda b: base64.b64encode(b).decode()), TEXT))
        if not good and draw(st.integers(0, 5)) == 0:
            d["data"] = draw(st.sampled_from([None, 1, "x"]))
    elif kind == 4:
        d["data"] = None
    pairs = list(d.items())
    draw(st.randoms()).shuffle(pairs)
    if pairs and not good and draw(st.integers(0, 15)) == 0:
        k, _ = draw(st.sampled_from(pairs))
        pairs.append((k, draw(EXT_VALUE)))          # a repeated key
    return pairs


@st.composite
def event_texts(draw):
    pairs = draw(events())
    ea = draw(st.booleans())
    space = draw(st.sampled_from(["", " ", "\n  ", "\t"]))
    parts = []
    for k, v in pairs:
        indent = draw(st.sampled_from([None, None, 2]))
        try:
            value = json.dumps(v, ensure_ascii=ea, indent=indent)
        except ValueError:
            value = "1"
        key = json.dumps(k, ensure_ascii=ea)
        if len(k) > 0 and draw(RARELY):
            key = '"\\u{:04x}'.format(ord(k[0])) + key[2:]        # an escaped key
        parts.append(key + space + ":" + space + value)
    text = "{" + space + ("," + space).join(parts) + space + "}"
    if draw(st.integers(0, 4)) == 0:
        text = text.replace("/", "\\/")
    return text.encode("utf-8", "surrogatepass")


def mutate(draw, body):
    """``body`` broken (or not) in one of the ways a wire breaks it."""
    how = draw(st.integers(0, 9))
    if how == 0 and body:
        return body[:draw(st.integers(0, len(body) - 1))]                 # truncated
    if how == 1:
        i = draw(st.integers(0, len(body)))
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i:]   # a byte more
    if how == 2 and body:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]
    if how == 3:
        return body + draw(st.sampled_from([b" x", b"}", b",", b"\x00", b" \n"]))
    return body


@FUZZ
@given(st.data())
def test_random_events(data):
    body = data.draw(event_texts())
    if data.draw(st.integers(0, 3)) == 0:
        body = mutate(data.draw, body)
    rs = data.draw(st.sampled_from([None, "a.b", "a..b"]))
    check(body, rs)
    try:
        text = body.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return
    check(text, rs)


@FUZZ
@given(st.data())
def test_random_batches(data):
    items = data.draw(st.lists(event_texts(), max_size=6))
    sep = data.draw(st.sampled_from([b",", b" , ", b",\n"]))
    body = b"[" + sep.join(items) + b"]"
    if data.draw(st.integers(0, 3)) == 0:
        body = mutate(data.draw, body)
    check(body, data.draw(st.sampled_from([None, "a.b"])), batch=True)


@FUZZ
@given(st.lists(st.sampled_from(["{", "}", "[", "]", ",", ":", '"a"', "1", "null", " ",
                                 '"data"', '"id"']), max_size=30))
def test_random_token_soup(tokens):
    soup = "".join(tokens)
    check(soup)
    check(soup, batch=True)
    body = json.dumps(BASE)[:-1] + ', "data": ' + soup + "}"
    check(body)
    check("[" + body + "]", batch=True)


# -- the cloudevents SDK --------------------------------------------------------------------

SDK_VALUE = st.one_of(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                              max_size=8),
                      st.integers(-(1 << 31), (1 << 31) - 1), st.booleans())


@FUZZ
@given(attrs=st.fixed_dictionaries(
    {"type": st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
     "source": st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)},
    optional={"subject": st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
              "id": st.text(st.characters(codec="utf-8"), min_size=1, max_size=10),
              "time": st.datetimes(timezones=st.integers(-23 * 60 - 59, 23 * 60 + 59).map(
                  lambda m: dt.timezone(dt.timedelta(minutes=m)))),
              "dataschema": st.just("https://example.com/s"),
              "datacontenttype": st.sampled_from(["application/json", "text/plain",
                                                  "application/cloudevents+json"])}),
    ext=st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True).filter(
        lambda n: n not in ("id", "source", "type", "specversion", "time", "subject",
                            "datacontenttype", "dataschema", "data", "ffhops", "fftrace")),
        SDK_VALUE, max_size=3),
    data=st.one_of(st.none(), st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
                   st.binary(min_size=1, max_size=8)))
def test_sdk_events_decode_to_their_attributes(attrs, ext, data):
    if isinstance(data, dict) and attrs.get("datacontenttype") == "text/plain":
        data = json.dumps(data)
    ce = SdkEvent({**attrs, **ext}, data)
    body = JSONFormat().write(ce)
    check(body, "a.b")
    e = native().decode_event(body, "a.b")
    assert e.type == ce.get_type() and e.source == ce.get_source() and e.id == ce.get_id()
    assert e.subject == ce.get_subject() and e.dataschema == ce.get_dataschema()
    if ce.get_time() is not None:
        assert dt.datetime.fromisoformat(e.time.replace("Z", "+00:00")) == ce.get_time()
    assert typed(e.extensions) == typed(ext)
    if isinstance(data, bytes):
        assert e.data == data
    elif isinstance(data, dict):
        assert json.loads(e.data) == (data if attrs.get("datacontenttype") != "text/plain"
                                      else json.dumps(data))
    batch = b"[" + b",".join([body, JSONFormat().write(SdkEvent({**attrs, **ext}, data))]) + b"]"
    check(batch, "a.b", batch=True)
    check(batch, batch=True)


def test_legacy_sdk_structured():
    ce = legacy_http.CloudEvent({"type": "com.example.t", "source": "/s", "ext": "v",
                                 "num": 3, "flag": True}, {"message": "Hello"})
    headers, body = legacy_conversion.to_structured(ce)
    check(body, "a.b")
    e = native().decode_event(body, "a.b")
    assert e.id == ce["id"] and e.type == "com.example.t"
    assert typed(e.extensions) == typed({"ext": "v", "num": 3, "flag": True})
    assert json.loads(e.data) == {"message": "Hello"}
    body = legacy_conversion.to_json(legacy_http.CloudEvent({"type": "t", "source": "/s"},
                                                            b"\x00\x01"))
    check(body)
    assert native().decode_event(body).data == b"\x00\x01"
    rng = random.Random(5)
    batch = b"[" + b",".join(legacy_conversion.to_json(legacy_http.CloudEvent(
        {"type": "t", "source": "/s", "n": rng.randrange(100)}, {"i": i}))
        for i in range(20)) + b"]"
    check(batch, batch=True)


# -- publishing ------------------------------------------------------------------------------

def _router(core, pattern=">", **log_kw):
    r = core.Router()
    log = core.Log(**log_kw)
    r.add(pattern, core.StreamTarget("S", log))
    return r, log


def _stored(log):
    return [bytes(log.get(s)) for s in range(log.first_seq, log.last_seq + 1)] if len(log) \
        else []


def _body(n, **kw):
    return json.dumps([doc(id=str(i), type="orders.t{}".format(i % 3),
                           data={"n": i}, **kw) for i in range(n)]).encode()


def test_publish_json_batch_stores_the_records(core):
    r, log = _router(core)
    body = _body(10, ext="v", flag=False)
    assert r.publish_json_batch(body, "orders.eu") == 10
    events = REF_BATCH(body, "orders.eu")
    assert _stored(log) == [e.encode() for e in events]
    assert [log.get(s).subject for s in range(1, 11)] == ["orders.eu"] * 10
    assert r.publish_json(json.dumps(doc(id="x")), "one.two") == 11
    assert _stored(log)[-1] == REF_ONE(json.dumps(doc(id="x"))).encode()
    assert r.last_stream == "S"


def test_publish_json_routes_on_the_type(core):
    r, log = _router(core)
    body = _body(6)
    assert r.publish_json_batch(body) == 6
    assert [log.get(s).subject for s in range(1, 7)] == ["orders.t0", "orders.t1",
                                                         "orders.t2"] * 2
    assert r.publish_json(json.dumps(doc(type="a.b"))) == 7
    assert log.get(7).subject == "a.b"


def test_publish_json_subscribers_get_the_events(core):
    r = core.Router()
    got = []
    r.add("orders.>", core.SubTarget(got.append))
    body = _body(4, subject="s")
    r.publish_json_batch(body)
    want = REF_BATCH(body)
    assert [e.routing_subject for e in got] == [e.type for e in want]
    for a, b in zip(got, want):
        delivered = a.attributes()
        assert delivered.pop("fftrace") and delivered.pop("ffhops") == 0    # routed here
        assert delivered == b.attributes() and a.data == b.data


def test_publish_json_errors_publish_nothing(core):
    r, log = _router(core)
    good = json.loads(_body(3))
    bad = good + [doc(id=None)] + good
    with pytest.raises(EventError) as exc:
        r.publish_json_batch(json.dumps(bad))
    assert str(exc.value) == outcome(REF_BATCH, json.dumps(bad))[2]
    assert "batch index 3" in str(exc.value)
    with pytest.raises(EventError, match="not valid JSON"):
        r.publish_json_batch(_body(3)[:-1])
    with pytest.raises(EventError, match="'id': required"):
        r.publish_json(json.dumps(doc(id=None)))
    bad = good[:2] + [doc(type="no subject")] + good
    with pytest.raises(SubjectError, match=r"invalid subject 'no subject'.*\(batch index 2\)"):
        r.publish_json_batch(json.dumps(bad))
    with pytest.raises(SubjectError, match="invalid subject 'a..b'"):
        r.publish_json_batch(_body(2), "a..b")
    with pytest.raises(SubjectError, match="invalid subject 'no subject'"):
        r.publish_json(json.dumps(doc(type="no subject")))
    assert len(log) == 0
    assert r.publish_json_batch("[]") == 0 and r.publish_json_batch("[]", acks=True) == []
    with pytest.raises(TypeError):
        r.publish_json_batch(_body(1), origin=5)


def test_publish_json_check(core):
    r, log = _router(core)
    seen = []
    r.publish_json_batch(_body(7), check=seen.append)
    assert seen == ["orders.t0", "orders.t1", "orders.t2"]
    seen.clear()
    r.publish_json_batch(_body(7), "fixed.one", check=seen.append)
    assert seen == ["fixed.one"]

    def deny(subject):
        if subject == "orders.t2":
            raise PermissionError(subject)

    with pytest.raises(PermissionError):
        r.publish_json_batch(_body(7), check=deny)
    with pytest.raises(PermissionError):
        r.publish_json(json.dumps(doc(type="orders.t2")), check=deny)
    assert len(log) == 14


def test_publish_json_acks_and_refusals(core):
    r = core.Router()
    full = core.Log(max_events=2, discard="new")
    r.add("orders.t0", core.StreamTarget("A", full))
    assert r.publish_json_batch(_body(4), acks=True) == [("A", 1), (None, 0), (None, 0),
                                                          ("A", 2)]
    with pytest.raises(LogFullError, match=r"batch index 0; the whole batch was published"):
        r.publish_json_batch(_body(4))
    with pytest.raises(LogFullError):
        r.publish_json(json.dumps(doc(type="orders.t0")))
    r, log = _router(core, max_event_size=200)
    with pytest.raises(EventTooLarge, match="batch index 1"):
        r.publish_json_batch(json.dumps([doc(), doc(data="x" * 300), doc()]))
    assert len(log) == 2


@both_cores
@FUZZ
@given(st.lists(event_texts(), max_size=5), st.sampled_from([None, "a.b"]))
def test_publish_json_cores_agree(items, rs):
    body = b"[" + b",".join(items) + b"]"
    results = []
    for core in CORES.values():
        r, log = _router(core)
        res = outcome(r.publish_json_batch, body, rs)
        if res[0] == "ok":
            res = ("ok", _stored(log), [log.get(s).subject for s in
                                         range(log.first_seq, log.last_seq + 1)] if len(log)
                   else [])
        results.append(res)
    assert results[0] == results[1]


def test_publish_json_subject_forms_and_a_closed_flow(core):
    r, log = _router(core)
    assert r.publish_json_batch(_body(2), b"orders.b") == 2
    assert r.publish_json(json.dumps(doc()), b"orders.b") == 3
    assert [log.get(s).subject for s in range(1, 4)] == ["orders.b"] * 3
    with pytest.raises(SubjectError, match="not UTF-8"):
        r.publish_json(json.dumps(doc()), b"\xff")
    r.closed = True
    with pytest.raises(FastflowError, match="closed"):
        r.publish_json_batch(_body(2), "orders.b")
    assert len(log) == 3
