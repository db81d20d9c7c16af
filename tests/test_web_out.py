"""The web doors' output side (src_ext/wire/web_out.pyx and its twin
fastflow/_ref/wire/web_out.py): the CloudEvents JSON of a delivery,
WebSocket text frames (``WsJsonTarget``), Server-Sent Events
(``SseTarget``), ``ws_frame_head`` and ``WireTarget.write_record`` /
``write_batch``.

Every test runs once per core.  The JSON is checked byte for byte against
``fastflow.event.to_json`` of the event as published (``Router.publish``)
and of records from the network (``Router.publish_record``, records made
by hand for the forms the engine does not write itself); the frames are
read back with the ``websockets`` library's sans-I/O parser and the SSE
stream with a parser that follows the HTML standard's steps.  Hypothesis
throws random attributes, extensions, content types and data (JSON, text,
bytes, empty, control characters, lone surrogates, broken JSON and UTF-8)
at both cores, which must agree with to_json and with each other
(``WEB_FUZZ_EXAMPLES=<n>`` sets how many examples they try; 200 by
default).
"""

import base64
import json
import os
import re
import struct

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from fastflow import event as cloudevents
from fastflow.errors import EventError, SubjectError

from conftest import CORES, both_cores

SUBJ = "orders.eu"
RECORD_HEADER = struct.Struct("<BBHHHHHI")


# -- helpers --------------------------------------------------------------------------------


def ws_frames(buf):
    """The frames of a server -> client byte stream (unmasked), read by the
    websockets library; the stream must end on a frame's end."""
    reader = StreamReader()
    reader.feed_data(buf)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parse = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parse)
        except StopIteration as done:
            frames.append(done.value)
            continue
        raise AssertionError("a frame is cut short")
    return frames


def ws_payloads(buf):
    frames = ws_frames(buf)
    for f in frames:
        assert f.opcode is Opcode.TEXT and f.fin
        assert not (f.rsv1 or f.rsv2 or f.rsv3)
    return [bytes(f.data) for f in frames]


_LINE = re.compile(r"\r\n|\r|\n")


def sse_events(buf):
    """The events of an SSE stream as an EventSource dispatches them (the
    HTML standard, "interpreting an event stream"): ``(id field of that
    event or None, last event id, event type, data)``."""
    text = buf.decode("utf-8")          # (the stream is UTF-8: strict here)
    lines = _LINE.split(text)
    assert lines[-1] == "", "the stream ends inside a line"
    events = []
    data, etype, this_id, last_id = "", "", None, ""
    for line in lines[:-1]:
        if line == "":
            if data:
                events.append((this_id, last_id, etype or "message", data[:-1]))
            data, etype, this_id = "", "", None
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_id = this_id = value
        elif field == "event":
            etype = value
    return events


def record(id=b"i1", source=b"/s", type=b"t", trace=b"", rest=b"", data=b"", hops=0,
           genid=None):
    """An event record made by hand (``type`` None: the routing subject;
    ``genid``: a generated id, 16 bytes)."""
    flags = 0
    if genid is not None:
        flags |= 1
        id = genid
    if type is None:
        flags |= 2
        type = b""
    return RECORD_HEADER.pack(1, flags, hops, 0 if genid is not None else len(id), len(source),
                              len(type), len(trace), len(rest)) + id + source + type + trace \
        + rest + data


def expected(ev, lineage=True):
    """What a web subscriber gets of ``ev``: to_json's bytes, or (None)
    the tolerant form of an event to_json refuses."""
    try:
        return cloudevents.to_json(ev, lineage)
    except (EventError, AttributeError):
        return None


def _paired(v):
    """A str as a JSON parser reads back its ``\\uXXXX`` escapes: a high and
    a low surrogate in a row make one character."""
    if type(v) is not str:
        return v
    return v.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")


def tolerant_doc(ev, lineage):
    """The JSON document (parsed) of an event to_json refuses: its members
    (lone surrogates escaped), the data as to_json would put it, or as
    data_base64 when the content type is no string."""
    ct = ev.datacontenttype
    if ct is None or type(ct) in (str, bytes):
        members, raw = cloudevents._members(ev, lineage)
        if raw is not None:
            members["data"] = json.loads(raw)
    else:
        members = cloudevents._attributes(ev, lineage)
        for k, v in members.items():
            if type(v) is bytes:
                members[k] = base64.b64encode(v).decode()
        if ev.data:
            members["data_base64"] = base64.b64encode(ev.data).decode()
    return {k: _paired(v) for k, v in members.items()}


def check_json(got, ev, lineage=True):
    want = expected(ev, lineage)
    if want is not None:
        assert got == want
    else:
        assert json.loads(got) == tolerant_doc(ev, lineage)
    got.decode("utf-8")                 # (always UTF-8)


class Web:
    """A router with a WebSocket target (lineage kept), one without lineage
    and an SSE target, each on its own OutBuf, subscribed to ``pattern``."""

    def __init__(self, core, pattern=">", stream=None, **router_kw):
        self.core = core
        self.router = core.Router(**router_kw)
        self.ws_out, self.ws_bare_out, self.sse_out = (core.OutBuf(0) for _ in range(3))
        self.ws = core.WsJsonTarget(self.ws_out)
        self.ws_bare = core.WsJsonTarget(self.ws_bare_out, lineage=False)
        self.sse = core.SseTarget(self.sse_out, stream)
        for t in (self.ws, self.ws_bare, self.sse):
            self.router.add(pattern, t)

    def take(self):
        """The JSON each target wrote since the last take: (ws, ws without
        lineage, sse data) lists."""
        ws = ws_payloads(self.ws_out.take())
        bare = ws_payloads(self.ws_bare_out.take())
        sse = [e[3].encode() for e in sse_events(self.sse_out.take())]
        return ws, bare, sse

    def check(self, events):
        """Each target got exactly ``events``' JSON, in order."""
        ws, bare, sse = self.take()
        assert len(ws) == len(bare) == len(sse) == len(events)
        for ev, w, b, s in zip(events, ws, bare, sse):
            check_json(w, ev, True)
            check_json(b, ev, False)
            assert s == w.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return ws


# -- the JSON, events published from Python ----------------------------------------------------

ATTRIBUTE_SETS = [
    {},
    {"id": "e-1", "source": "/shop", "type": "order.created"},
    {"time": "2024-05-06T07:08:09.123Z", "subject": "o/1", "dataschema": "https://x/s.json"},
    {"datacontenttype": "application/json"},
    {"datacontenttype": "text/plain"},
    {"datacontenttype": "application/octet-stream"},
    {"s": "v", "i": -7, "big": 2147483647, "neg": -2147483648, "t": True, "f": False,
     "b": b"\x00\x01\xff", "e": ""},
    {"ffhops": 3, "fftrace": "abc,def"},
    {"id": 'quote" back\\ nl\n tab\t nul\x00 del\x7f ü 😀 \u2028', "source": "/é"},
    {"type": "t\x1f\x01", "subject": "\x08\x0c\r"},
]

DATAS = [b"", b"x" * 16, b'{"a": [1, 2.5e3, null, true], "b": {"c": "\\u00e9"}}', b"  [] \n",
         "héllo\n\x01".encode(), b"\xff\xfe\x00", b"\xe2\x82", b"not json", b"123", b'"s"']


def test_json_of_published_events(core):
    w = Web(core, hop_limit=0)
    events = []
    for attrs in ATTRIBUTE_SETS:
        for data in DATAS:
            ev = core.Event(SUBJ, data, **attrs)
            w.router.publish(ev)
            events.append(ev)
    w.check(events)


def test_json_of_plain_publishes(core):
    # the router's own record (every default, the data apart): the common case
    w = Web(core)
    got = []
    w.router.add(">", core.SubTarget(got.append))
    for data in DATAS:
        w.router.publish(SUBJ, data)
    w.router.publish_batch(SUBJ, [b"a", b"bb"])
    w.router.publish(SUBJ, b"{}", datacontenttype="application/json", x="1")
    events = [core.Event.decode(e.routing_subject, e.encode()) for e in got]
    ws = w.check(events)
    doc = json.loads(ws[1])
    assert doc == {"specversion": "1.0", "id": got[1].id, "source": "/fastflow", "type": SUBJ,
                   "data_base64": base64.b64encode(b"x" * 16).decode()}


def test_json_of_a_flows_publish(core):
    # an in-process subscriber sees this flow's lineage entry; the web door
    # sends the event as published (as the native and NATS doors do)
    w = Web(core)
    got = []
    w.router.add(">", core.SubTarget(got.append))
    w.router.publish(SUBJ, b"1", source="/app", ffhops=1)
    assert got[0].trace
    ws, bare, _ = w.take()
    doc = json.loads(ws[0])
    assert doc["ffhops"] == 1 and "fftrace" not in doc and doc["source"] == "/app"
    assert "ffhops" not in json.loads(bare[0])


def test_json_of_network_records(core):
    w = Web(core, hop_limit=0)
    events = []
    for attrs in ATTRIBUTE_SETS:
        for data in DATAS:
            ev = core.Event(SUBJ, data, **attrs)
            w.router.publish_record(SUBJ, ev.encode())
            events.append(ev)
    w.check(events)


def _rest(*pairs):
    """A msgpack map written item by item (``pairs`` of encoded bytes)."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    return head + b"".join(k + v for k, v in pairs)


def _mp(v):
    return msgspec.msgpack.encode(v)


HAND_RECORDS = [
    # forms of the attribute block other encoders write
    record(rest=b"\xde\x00\x01" + _mp("x") + _mp("y"), data=b"d"),
    record(rest=_rest((b"\xd9\x01x", b"\xd9\x03abc")), data=b"d"),
    record(rest=_rest((_mp("a"), b"\xda\x00\x02hi"), (_mp("b"), b"\xdb\x00\x00\x00\x01z"))),
    record(rest=_rest((_mp("u8"), b"\xcc\xff"), (_mp("u16"), b"\xcd\xff\xff"),
                      (_mp("u32"), b"\xce\x7f\xff\xff\xff"),
                      (_mp("u64"), b"\xcf" + bytes(7) + b"\x05"),
                      (_mp("i8"), b"\xd0\x80"), (_mp("i16"), b"\xd1\x80\x00"),
                      (_mp("i32"), b"\xd2\x80\x00\x00\x00"), (_mp("i64"), b"\xd3" + b"\xff" * 8),
                      (_mp("nf"), b"\xe0"), (_mp("pf"), b"\x7f"))),
    record(rest=_rest((_mp("b8"), b"\xc4\x02\x00\x01"), (_mp("b16"), b"\xc5\x00\x01\xff"),
                      (_mp("b32"), b"\xc6\x00\x00\x00\x00"))),
    record(rest=_rest((_mp("s"), _mp("ü\n\"😀")))),
    # a duplicate name: the last value, at the first one's place (as a dict)
    record(rest=_rest((_mp("a"), _mp(1)), (_mp("b"), _mp(2)), (_mp("a"), _mp(3))), data=b"x"),
    # a datacontenttype that is no string
    record(rest=_rest((_mp("datacontenttype"), _mp(5))), data=b"{}"),
    record(rest=_rest((_mp("datacontenttype"), _mp(True))), data=b"{}"),
    record(rest=_rest((_mp("datacontenttype"), _mp(b"application/json"))), data=b"{}"),
    record(rest=_rest((_mp("datacontenttype"), _mp("application/json"))), data=b" {\r\n} "),
    # lone surrogates (the record's strings are UTF-8 with surrogates passed)
    record(id=b"\xed\xa0\x80", source=b"/\xed\xbf\xbfs", type=b"t\xed\xa0\x80\xed\xb0\x80",
           trace=b"\xed\xb2\x80", hops=2, data=b"x"),
    record(id=b"\xed\xa0\x80",
           rest=_rest((_mp("datacontenttype"), _mp("text/plain; charset=latin-1"))), data=b"\xe9"),
    record(type=b"t\xed\xa0\x80", rest=_rest((_mp("datacontenttype"), _mp(7))), data=b"x"),
    # generated ids, type = the subject
    record(genid=bytes(range(16)), type=None, data=b"x"),
    record(genid=bytes(16), type=None),
    # many attributes (past what C checks for duplicates itself)
    record(rest=_rest(*[(_mp("k{}".format(i)), _mp(i)) for i in range(40)])),
]


def test_json_of_hand_made_records(core):
    w = Web(core, hop_limit=0)
    events = []
    for rec in HAND_RECORDS:
        w.router.publish_record(SUBJ, rec)
        events.append(core.Event.decode(SUBJ, rec))
    w.check(events)


def test_lone_surrogates_are_escaped(core):
    # to_json refuses them; the door writes them as JSON escapes and goes on
    ev = core.Event(SUBJ, b"{}", id="\ud800", source="/s\udfff", datacontenttype="application/json")
    with pytest.raises(EventError, match="lone surrogate"):
        cloudevents.to_json(ev)
    w = Web(core)
    w.router.publish(ev)
    ws, _, _ = w.take()
    assert ws[0].startswith(b'{"specversion":"1.0","id":"\\ud800","source":"/s\\udfff",')
    assert ws[0].endswith(b',"data":{}}')
    assert json.loads(ws[0])["id"] == "\ud800"


@pytest.mark.parametrize("lineage", [True, False])
def test_lineage(core, lineage):
    r = core.Router(hop_limit=0)
    out = core.OutBuf(0)
    t = core.WsJsonTarget(out, lineage=lineage)
    assert t.lineage is lineage
    r.add(">", t)
    ev = core.Event(SUBJ, b"", ffhops=4, fftrace="aaaa")
    r.publish(ev)
    r.publish_record(SUBJ, ev.encode())
    r.publish(SUBJ, b"", ffhops=0)
    docs = [json.loads(p) for p in ws_payloads(out.take())]
    for doc in docs[:2]:
        assert ("ffhops" in doc, "fftrace" in doc) == (lineage, lineage)
        if lineage:
            assert doc["ffhops"] == 4 and doc["fftrace"] == "aaaa"
    assert "ffhops" not in docs[2]
    with pytest.raises(AttributeError):
        t.lineage = not lineage


# -- the JSON, random events -------------------------------------------------------------------

FUZZ = settings(max_examples=int(os.environ.get("WEB_FUZZ_EXAMPLES", "200")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ANY_TEXT = st.text(st.characters(exclude_categories=()), min_size=1, max_size=12)
NO_SURROGATES = st.text(min_size=1, max_size=12)
EXT_NAMES = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6).filter(
    lambda s: s not in ("id", "source", "type", "specversion", "data", "ffhops", "fftrace",
                        "time", "subject", "datacontenttype", "dataschema"))
EXT_VALUES = st.one_of(NO_SURROGATES, st.just(""), st.integers(-(1 << 31), (1 << 31) - 1),
                       st.booleans(), st.binary(max_size=8))
CONTENT_TYPES = st.one_of(
    st.sampled_from([
        "application/json", "Application/JSON", "text/json", "application/cloudevents+json",
        "application/vnd.x+JSON; charset=utf-8", " application/json ; x=y", "/json", "json",
        "application/jsonx", "text/plain", "TEXT/html; charset=UTF-8", "text/plain; charset=utf8",
        'text/plain; charset="utf-8"', "text/plain; charset=latin-1", "text/plain;charset=ascii",
        "text/plain; charset=", 'text/plain; charset="', "text/plain; charset=nope",
        "application/xml", "image/svg+xml", "application/octet-stream", "x; charset=utf-8",
        "x;charset", "x; CharSet = utf-16", "text",
        "text/plain; a=1; charset=utf-8; charset=latin1",
        "application/json; charset=latin-1", "text/plain\t", "text/pläin", "a/b/json",
    ]),
    st.text(st.sampled_from("abjsonxmltext/+;= \"-8utf"), min_size=1, max_size=30),
)


def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False,
                        allow_infinity=False), st.text(st.characters(exclude_categories=("Cs",)),
                                                       max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)),
        max_leaves=12)


@st.composite
def json_bytes(draw):
    """JSON documents as people write them (spacing, escapes, unicode), and
    broken ones: cut, mutated, deep, with lone surrogate escapes."""
    doc = draw(_json_values())
    indent = draw(st.sampled_from([None, 0, 2, "\t"]))
    seps = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    text = json.dumps(doc, indent=indent, separators=seps if indent is None else None,
                      ensure_ascii=draw(st.booleans()))
    pad = draw(st.sampled_from(["", " ", "\r\n", "\t \n"]))
    b = (pad + text + pad).encode("utf-8")
    how = draw(st.integers(0, 9))
    if how == 0 and b:
        i = draw(st.integers(0, len(b) - 1))
        b = b[:i] + draw(st.binary(max_size=2)) + b[i + 1:]
    elif how == 1:
        b = b[:draw(st.integers(0, len(b)))]
    elif how == 2:
        depth = draw(st.sampled_from([63, 64, 65, 100, 3000]))
        b = b"[" * depth + b + b"]" * depth
    elif how == 3:
        b = draw(st.sampled_from([b'"\\ud800"', b'"\\udc00"', b'"\\ud800\\u0041"',
                                  b'"\\uD83D\\uDE00"',
                                  b'"\xed\xa0\x80"', b'["\xff"]', b"01", b"-0", b"1e999", b"1.",
                                  b"[1,]", b"nul", b"\xef\xbb\xbf{}", b'"\x7f"', b'"a\x01"',
                                  b'{"a":1 "b":2}', b"[1 2]", b'{"a"}', b"\x0b1", b"-", b"0x1",
                                  b'"\\/"', b'"\\x"', b"1 ", b"[[[]]]", b"{}", b"tru",
                                  b"123" * 50]))
    return b


DATA = st.one_of(st.just(b""), st.binary(max_size=40), json_bytes(),
                 st.text(st.characters(exclude_categories=()), max_size=12).map(
                     lambda s: s.encode("utf-8", "surrogatepass")))


@st.composite
def random_event(draw):
    """The attributes and data of an event (as many kinds as the engine
    takes: the Event constructor may still refuse them)."""
    attrs = {}
    for name in ("id", "source", "type"):
        if draw(st.booleans()):
            attrs[name] = draw(st.one_of(ANY_TEXT, NO_SURROGATES))
    for name in ("subject", "dataschema"):
        if draw(st.integers(0, 3)) == 0:
            attrs[name] = draw(NO_SURROGATES)
    if draw(st.booleans()):
        attrs["datacontenttype"] = draw(CONTENT_TYPES)
    if draw(st.integers(0, 3)) == 0:
        attrs["time"] = "2024-01-02T03:04:05Z"
    for name in draw(st.lists(EXT_NAMES, max_size=4, unique=True)):
        attrs[name] = draw(EXT_VALUES)
    if draw(st.integers(0, 3)) == 0:
        attrs["ffhops"] = draw(st.integers(0, 65535))
    if draw(st.integers(0, 3)) == 0:
        attrs["fftrace"] = draw(ANY_TEXT)
    return attrs, draw(DATA)


@both_cores
@FUZZ
@given(random_event())
def test_random_events_both_cores(event):
    attrs, data = event
    got = {}
    rec = None
    for name, core in CORES.items():
        try:
            ev = core.Event(SUBJ, data, **attrs)
        except EventError:
            assume(False)
        if rec is None:
            rec = ev.encode()           # (one record for both: the same generated id)
        w = Web(core, hop_limit=0)
        w.router.publish(ev)
        w.router.publish_record(SUBJ, rec)
        got[name] = w.check([ev, core.Event.decode(SUBJ, rec)])[1]
    assert got["native"] == got["ref"]


@both_cores
@FUZZ
@given(json_bytes(), CONTENT_TYPES)
def test_random_json_data_both_cores(data, ct):
    got = {}
    for name, core in CORES.items():
        ev = core.Event(SUBJ, data, id="1", datacontenttype=ct)
        w = Web(core)
        w.router.publish(ev)
        got[name] = w.check([ev])
    assert got["native"] == got["ref"]


@both_cores
@FUZZ
@given(st.binary(max_size=64))
def test_random_text_data_both_cores(data):
    # text: UTF-8 that decodes (escaped as orjson escapes), else data_base64
    got = {}
    for name, core in CORES.items():
        ev = core.Event(SUBJ, data, id="1", datacontenttype="text/plain")
        w = Web(core)
        w.router.publish(ev)
        got[name] = w.check([ev])
    assert got["native"] == got["ref"]


def test_every_character_as_orjson_escapes_it(core):
    chars = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF) + "😀\U0010ffff"
    w = Web(core)
    ev = core.Event(SUBJ, chars.encode(), id=chars[1:4000], datacontenttype="text/plain")
    w.router.publish(ev)
    w.check([ev])


# -- WebSocket frames --------------------------------------------------------------------------

def _ws_event(core, size):
    """An event whose JSON is ``size`` bytes."""
    base = len(cloudevents.to_json(core.Event(SUBJ, b"", id="1", datacontenttype="text/plain")))
    pad = len(b',"data":""')
    ev = core.Event(SUBJ, b"a" * (size - base - pad), id="1", datacontenttype="text/plain")
    assert len(cloudevents.to_json(ev)) == size
    return ev


@pytest.mark.parametrize("size", [125, 126, 127, 65535, 65536, 70000])
def test_frame_lengths(core, size):
    r = core.Router()
    out = core.OutBuf(0)
    r.add(">", core.WsJsonTarget(out))
    ev = _ws_event(core, size)
    r.publish(ev)
    r.publish(ev)
    buf = out.take()
    head = 2 if size <= 125 else 4 if size <= 65535 else 10
    assert len(buf) == 2 * (head + size)
    assert buf[0] == 0x81
    assert ws_payloads(buf) == [cloudevents.to_json(ev)] * 2


@pytest.mark.parametrize("opcode", [0, 1, 2, 8, 9, 10])
@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 1 << 32])
def test_ws_frame_head(core, opcode, length):
    if opcode >= 8 and length > 125:
        with pytest.raises(ValueError, match="control frame .* at most 125 bytes"):
            core.ws_frame_head(opcode, length)
        return
    for fin in (True, False):
        if opcode >= 8 and not fin:
            with pytest.raises(ValueError, match="never fragmented"):
                core.ws_frame_head(opcode, length, fin)
            continue
        head = core.ws_frame_head(opcode, length, fin)
        if length <= 65536:
            frame, = ws_frames(head + b"\x00" * length)
            assert (frame.opcode, frame.fin, len(frame.data)) == (Opcode(opcode), fin, length)
        assert head[0] == (0x80 if fin else 0) | opcode
        assert len(head) == (2 if length <= 125 else 4 if length <= 65535 else 10)
        assert head[1] & 0x80 == 0                  # unmasked
        n = head[1] if length <= 125 else int.from_bytes(head[2:], "big")
        assert n == length


def test_ws_frame_head_errors(core):
    for op in (3, 7, 11, 15, 16, -1):
        with pytest.raises(ValueError, match="opcode {} is not".format(op)):
            core.ws_frame_head(op, 0)
    with pytest.raises(ValueError, match="length must be >= 0, got -1"):
        core.ws_frame_head(2, -1)
    with pytest.raises(TypeError):
        core.ws_frame_head("1", 0)


def test_frames_read_by_wsproto(core):
    wsproto = pytest.importorskip("wsproto")
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    r = core.Router()
    out = core.OutBuf(0)
    r.add(">", core.WsJsonTarget(out))
    evs = [_ws_event(core, n) for n in (120, 200, 70000)]
    for ev in evs:
        r.publish(ev)
    client = Connection(ConnectionType.CLIENT)
    client.receive_data(out.take())
    got = [e for e in client.events()]
    assert all(type(e) is TextMessage and e.message_finished for e in got)
    assert [e.data.encode() for e in got] == [cloudevents.to_json(ev) for ev in evs]
    assert wsproto.__version__


# -- Server-Sent Events -------------------------------------------------------------------------


def test_sse_ids_from_the_target_stream(core):
    r = core.Router()
    r.add("s.>", core.StreamTarget("S", core.Log()))
    r.add("t.>", core.StreamTarget("T", core.Log()))
    out = core.OutBuf(0)
    sse = core.SseTarget(out, "S")
    other = core.OutBuf(0)
    r.add(">", sse)
    r.add(">", core.SseTarget(other))
    assert sse.stream == "S"
    for i in range(3):
        r.publish("s.a", b"%d" % i)
    r.publish("t.a", b"t")          # another stream: no id
    r.publish("u.a", b"u")          # no stream
    raw = out.take()
    assert raw.startswith(b"id: 1\ndata: {")
    assert b"event:" not in raw
    events = sse_events(raw)
    assert [(e[0], e[1], e[2]) for e in events] == [
        ("1", "1", "message"), ("2", "2", "message"), ("3", "3", "message"),
        (None, "3", "message"), (None, "3", "message")]
    datas = [base64.b64decode(json.loads(e[3])["data_base64"]) for e in events]
    assert datas == [b"0", b"1", b"2", b"t", b"u"]
    assert all(e[0] is None for e in sse_events(other.take()))
    sse.stream = "T"
    r.publish("t.b", b"")
    assert sse_events(out.take())[0][0] == "2"
    sse.stream = None
    r.publish("s.b", b"")
    assert out.take().startswith(b"data: ")
    with pytest.raises(TypeError):
        sse.stream = 5


def test_sse_json_with_line_breaks(core):
    # JSON data keeps its whitespace; each line break goes as a new data: line
    r = core.Router()
    out = core.OutBuf(0)
    r.add(">", core.SseTarget(out))
    docs = [b'{\n  "a": 1,\n  "b": [\n    2\n  ]\n}', b'[1,\r\n2]', b'[1,\r2]', b'[\n\n1]',
            b"\n\n[1]\n\n"]
    for d in docs:
        r.publish(SUBJ, d, id="1", datacontenttype="application/json")
    raw = out.take()
    assert raw.count(b"\n\n") == len(docs)      # (no blank line inside a message)
    events = sse_events(raw)
    assert len(events) == len(docs)
    for d, e in zip(docs, events):
        want = cloudevents.to_json(core.Event(SUBJ, d, id="1", datacontenttype="application/json"))
        assert e[3].encode() == want.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        assert json.loads(e[3]) == json.loads(want)
    assert events[0][3].encode() == cloudevents.to_json(
        core.Event(SUBJ, docs[0], id="1", datacontenttype="application/json"))


# -- the per-message cache ----------------------------------------------------------------------


def test_one_encoding_per_message(core, monkeypatch):
    # the JSON is made once per message and lineage flag, whatever the number
    # of web subscribers (counted where C leaves it to Python: another charset)
    calls = []
    to_json = cloudevents.to_json

    def counting(ev, lineage=True):
        calls.append(lineage)
        return to_json(ev, lineage)

    monkeypatch.setattr(cloudevents, "to_json", counting)
    r = core.Router()
    outs = [core.OutBuf(0) for _ in range(5)]
    r.add(">", core.WsJsonTarget(outs[0]))
    r.add(">", core.SseTarget(outs[1]))
    r.add(">", core.WsJsonTarget(outs[2]))
    r.add(">", core.WsJsonTarget(outs[3], lineage=False))
    r.add(">", core.SseTarget(outs[4], lineage=False))
    for i in range(3):
        r.publish(SUBJ, "é{}".format(i).encode("latin-1"),
                  datacontenttype="text/x; charset=latin-1")
    assert calls == [True, False] * 3
    texts = [json.loads(p)["data"] for p in ws_payloads(outs[2].take())]
    assert texts == ["é0", "é1", "é2"]


def test_one_encoding_per_stored_record(core, monkeypatch):
    calls = []
    to_json = cloudevents.to_json
    monkeypatch.setattr(cloudevents, "to_json", lambda ev, lineage=True: calls.append(1) or
                        to_json(ev, lineage))
    out = core.OutBuf(0)
    t = core.WsJsonTarget(out)
    rec = core.Event(SUBJ, b"\xe9", datacontenttype="text/plain; charset=latin-1").encode()
    assert t.write_record(SUBJ, rec) and t.write_record(SUBJ, rec)
    assert len(calls) == 2              # (each a message of its own)
    a, b = ws_payloads(out.take())
    assert a == b


# -- backpressure --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ws", "sse"])
def test_drop_at_max_pending(core, kind):
    r = core.Router()
    out = core.OutBuf(max_pending=1000)
    t = core.WsJsonTarget(out) if kind == "ws" else core.SseTarget(out)
    r.add(">", t)
    for _ in range(20):
        r.publish(SUBJ, b"x" * 16)
    assert out.overflow
    assert 0 < t.delivered < 20
    assert t.dropped == 20 - t.delivered == out.dropped == r.n_dropped_slow
    assert out.msgs == t.delivered and len(out) <= 1000
    parse = ws_payloads if kind == "ws" else sse_events
    assert len(parse(out.take())) == t.delivered
    out.closed = True
    r.publish(SUBJ, b"x")
    assert t.dropped == 21 - t.delivered


@both_cores
def test_drop_points_agree():
    # the native bound of a message's size decides a drop; the twin checks
    # the same bound
    got = {}
    for name, core in CORES.items():
        res = []
        for limit in range(100, 700, 7):
            r = core.Router()
            outs = [core.OutBuf(max_pending=limit) for _ in range(3)]
            r.add(">", core.WsJsonTarget(outs[0]))
            r.add(">", core.SseTarget(outs[1]))
            r.add(">", core.SseTarget(outs[2]))
            for i in range(6):
                r.publish(SUBJ, b"{\n}" * i, id="i", datacontenttype="application/json")
            res.append([o.take() for o in outs])
        got[name] = res
    assert got["native"] == got["ref"]


# -- stored records: write_record and write_batch ----------------------------------------------


def _stored(core, n=5):
    log = core.Log()
    r = core.Router()
    r.add(">", core.StreamTarget("S", log))
    live = core.OutBuf(0)
    r.add(">", core.SseTarget(live, "S"))
    for i in range(n):
        r.publish("s.{}".format(i), b"%d" % i, **({"e": i} if i % 2 else {}))
    return log, live.take()


def test_write_record_is_a_delivery(core):
    log, live = _stored(core)
    out = core.OutBuf(0)
    t = core.SseTarget(out, "S")
    for seq, ts, subject, rec in log.read(1):
        assert t.write_record(subject, rec, "S", seq, ts) is True
    assert out.take() == live
    # another stream's record: no id; bytes for the subject
    seq, ts, subject, rec = next(iter(log.read(2)))
    assert t.write_record(subject.encode(), bytes(rec), "X", seq) is True
    assert out.take().startswith(b"data: {")
    assert t.delivered == t.dropped == 0       # (the caller's bookkeeping)
    ws = core.OutBuf(0)
    assert core.WsJsonTarget(ws).write_record(subject, rec) is True
    assert ws_payloads(ws.take()) == [cloudevents.to_json(core.Event.decode(subject, rec))]


def test_write_record_through_other_targets(core):
    out = core.OutBuf(0)
    rec = core.Event(SUBJ, b"hi", id="x").encode()
    assert core.NativeTarget(out, 7).write_record(SUBJ, rec)
    assert core.NatsTarget(out, "9").write_record(SUBJ, rec)
    ref = core.OutBuf(0)
    r = core.Router()
    r.add(">", core.NativeTarget(ref, 7))
    r.add(">", core.NatsTarget(ref, "9"))
    r.publish_record(SUBJ, rec)
    assert out.take() == ref.take()


def test_write_record_errors(core):
    t = core.WsJsonTarget(core.OutBuf(0))
    rec = core.Event(SUBJ, b"").encode()
    with pytest.raises(SubjectError):
        t.write_record("a..b", rec)
    with pytest.raises(SubjectError):
        t.write_record("a b", rec)
    with pytest.raises(TypeError):
        t.write_record(5, rec)
    with pytest.raises(EventError, match="the header alone is 16"):
        t.write_record(SUBJ, b"\x01\x00")
    with pytest.raises(EventError, match="version 9"):
        t.write_record(SUBJ, b"\x09" + rec[1:])
    with pytest.raises(TypeError):
        t.write_record(SUBJ, "text")
    with pytest.raises(TypeError):
        t.write_record(SUBJ, rec, stream=b"S")
    assert len(t.outbuf) == 0


def test_write_batch(core):
    log, live = _stored(core, 7)
    out = core.OutBuf(0)
    t = core.SseTarget(out, "S")
    b = log.read(1)
    assert t.write_batch(b, "S") == 7
    assert out.take() == live
    assert t.write_batch(b, "S", last_seq=4) == 4
    assert [e[0] for e in sse_events(out.take())] == ["1", "2", "3", "4"]
    assert t.write_batch(log.read(3, limit=2), "S", 100) == 2
    assert [e[0] for e in sse_events(out.take())] == ["3", "4"]
    assert t.write_batch(log.read(100), "S") == 0
    assert t.write_batch(b, None) == 7
    assert all(e[0] is None for e in sse_events(out.take()))
    small = core.OutBuf(max_pending=500)
    ws = core.WsJsonTarget(small)
    k = ws.write_batch(b)
    assert 0 < k < 7 and small.overflow
    assert ws_payloads(small.take()) == [
        cloudevents.to_json(core.Event.decode(b.subjects[i], b.data(i))) for i in range(k)]
    with pytest.raises(TypeError):
        t.write_batch(None)
    with pytest.raises(TypeError):
        t.write_batch([])


@both_cores
def test_stored_records_agree():
    got = {}
    for name, core in CORES.items():
        log, live = _stored(core, 6)
        outs = [core.OutBuf(0), core.OutBuf(0)]
        core.SseTarget(outs[0], "S").write_batch(log.read(1), "S")
        core.WsJsonTarget(outs[1], lineage=False).write_batch(log.read(1), "S")
        got[name] = [re.sub(rb'"id":"[0-9a-f]{32}"', b"ID", o.take()) for o in outs]
    assert got["native"] == got["ref"]


# -- construction ---------------------------------------------------------------------------------


def test_targets_construction(core):
    out = core.OutBuf(0)
    t = core.WsJsonTarget(out)
    assert (t.outbuf, t.echo, t.lineage) == (out, True, True)
    s = core.SseTarget(out, "S", False, False)
    assert (s.stream, s.echo, s.lineage) == ("S", False, False)
    assert core.SseTarget(out).stream is None
    for cls in (core.WsJsonTarget, core.SseTarget):
        with pytest.raises(TypeError):
            cls(None)
        assert isinstance(cls(out), core.WireTarget)
    with pytest.raises(TypeError):
        core.SseTarget(out, b"S")


def test_echo(core):
    r = core.Router()
    mine = core.OutBuf(0)
    r.add(">", core.WsJsonTarget(mine, echo=False))
    r.add(">", core.SseTarget(mine, echo=False))
    r.publish_record(SUBJ, core.Event(SUBJ, b"").encode(), origin=mine)
    assert len(mine) == 0
    r.publish_record(SUBJ, core.Event(SUBJ, b"").encode())
    assert mine.msgs == 2


# -- what stays in C -------------------------------------------------------------------------------

C_CASES = [
    ({}, b"x" * 16),
    ({"id": "1", "source": "/é", "type": "t\n", "subject": "s", "time": "2024-01-02T03:04:05Z",
      "dataschema": "d", "e": 1, "f": False, "g": b"\x00", "ffhops": 2, "fftrace": "ab"}, b""),
    ({"datacontenttype": "application/json"}, b' {"a": [1, -2.5E+3, "\\u00e9\\ud83d\\ude00", '
                                              b'null, true, false, {}, []]}\n'),
    ({"datacontenttype": "application/cloudevents+json; charset=utf-8"}, b'"\\"\\\\/\\b"'),
    ({"datacontenttype": "text/plain"}, "é\x00\n😀".encode()),
    ({"datacontenttype": "text/csv; charset=UTF-8"}, b"a,b"),
    ({"datacontenttype": "text/plain"}, b"\xff"),
    ({"datacontenttype": "application/json"}, b"[" * 64 + b"]" * 64),
    ({"datacontenttype": "image/png"}, bytes(range(256))),
    ({"id": "\ud800"}, b""),
]


@pytest.mark.skipif("native" not in CORES, reason="the compiled core is not built")
def test_common_events_need_no_python(monkeypatch):
    # the JSON of what the engine's events carry is written in C: the Python
    # encoder is never called for them
    core = CORES["native"]

    def refuse(*args):
        raise AssertionError("the Python encoder was called")

    w = Web(core)
    events = []
    for attrs, data in C_CASES:
        ev = core.Event(SUBJ, data, **attrs)
        events.append(ev)
    monkeypatch.setattr(cloudevents, "to_json", refuse)
    for ev in events:
        w.router.publish(ev)
    monkeypatch.undo()
    w.check(events)


# -- json_batch: a list of Events as one JSON batch ------------------------------------------


def _batch_events(core):
    """Events of every kind the writer meets: the attribute sets and data
    above, the type as the routing subject (non-ASCII too), generated ids,
    records decoded again, events read back from a stream and in-process
    deliveries (this flow's lineage entry, ffhops 0 and not)."""
    events = [core.Event(SUBJ, data, **attrs) for attrs in ATTRIBUTE_SETS for data in DATAS]
    events += [core.Event("ordérs.ü\"\\.x", b"1", datacontenttype="application/json"),
               core.Event("a.b", "é".encode(), datacontenttype="text/plain; charset=utf-8",
                          x="ü", n=-1)]
    events += [core.Event.decode(e.routing_subject, e.encode()) for e in events[::7]]
    router = core.Router()
    got = []
    router.add(">", core.SubTarget(got.append))
    log = core.Log()
    router.add(">", core.StreamTarget("S", log))
    for i, data in enumerate(DATAS):
        attrs = {"ffhops": i % 3}
        if i % 2:
            attrs["fftrace"] = "t{}".format(i)
        router.publish(SUBJ, data, **attrs)
    router.publish(SUBJ, b"{}", datacontenttype="application/json", type="t.x", k=True)
    assert all(e.trace for e in got)    # (this flow's entry)
    events += got
    events += [core.Event.decode(subject, rec, seq, "S", ts)
               for seq, ts, subject, rec in log.read(1)]
    return events


def test_json_batch_is_to_json_batch(core):
    events = _batch_events(core)
    for lineage in (True, False):
        assert core.json_batch(events, lineage) == cloudevents.to_json_batch(events, lineage)
        for i in range(0, len(events), 13):
            part = events[i:i + 5]
            assert core.json_batch(part, lineage) == cloudevents.to_json_batch(part, lineage)
    assert core.json_batch(events) == core.json_batch(iter(events), True)
    assert core.json_batch([]) == b"[]"


def test_json_batch_refuses_what_to_json_refuses(core):
    good = core.Event(SUBJ, b"1")
    for attrs in ({"source": "x\udcff"}, {"id": "\ud800"}, {"type": "t\udfff"},
                  {"fftrace": "a\ud800"}, {"x": "\udc00"}):
        bad = core.Event(SUBJ, b"", **attrs)
        with pytest.raises(EventError):
            cloudevents.to_json(bad, True)
        with pytest.raises(EventError):
            core.json_batch([good, bad, good])
    # without lineage the trace is not written: nothing to refuse
    bad = core.Event(SUBJ, b"", fftrace="a\ud800")
    assert core.json_batch([bad], False) == cloudevents.to_json_batch([bad], False)
    with pytest.raises(TypeError):
        core.json_batch([good, b"not an event"])


@FUZZ
@given(st.lists(random_event(), max_size=6), st.booleans())
def test_random_json_batches(events, lineage):
    for core in CORES.values():
        evs = []
        for attrs, data in events:
            try:
                evs.append(core.Event(SUBJ, data, **attrs))
            except EventError:
                pass
        try:
            want = cloudevents.to_json_batch(evs, lineage)
        except EventError:
            with pytest.raises(EventError):
                core.json_batch(evs, lineage)
            continue
        assert core.json_batch(evs, lineage) == want
