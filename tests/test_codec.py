"""The native protocol's codec: OutBuf, FrameParser and MsgBatch
(src_ext/wire/ and its pure-Python twin fastflow/_ref/wire/).

Every test runs once per core (the compiled one, when it is built, and the
reference).  Frames are built here with ``struct`` from docs/protocol.md,
independently of the codec, so the codec is checked against the document:
round trips of every op, incremental parsing at every split point and byte
by byte, malformed frames (codes, messages, the frames handled before, the
parser refusing more input), the limits, PUB and PUB_BATCH routing to a
router with NativeTargets (and to a Flow), the order of a SUB and a PUB in one
read, echo, UNSUB max, no-responders and error entries, and the records of
OutBuf.publish / publish_many.  Hypothesis throws random bytes and mutated
or truncated frame streams at the parser: it only returns frames or raises
ProtocolError, and both cores agree.
"""

import json
import pickle
import random
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastflow
from fastflow import FastflowError
from fastflow.protocol import error_code

from conftest import ACTIVE_CORE, CORES, both_cores
from helpers import chunked


# -- frames built from docs/protocol.md ---------------------------------------------------

HEAD = struct.Struct("<IBBHIHH")
OP = {"INFO": 1, "CONNECT": 2, "PUB": 3, "PUBACK": 4, "PUB_BATCH": 5, "SUB": 6, "UNSUB": 7,
      "MSG": 8, "PING": 9, "PONG": 10, "OK": 11, "ERR": 12, "STREAM": 13, "REPLAY": 14,
      "CONSUMER": 15, "ACK": 16}
FL_ACK = 1
FL_NO_RESPONDERS = 2
HEX32 = re.compile(r"[0-9a-f]{32}\Z")
PROTOCOL_CODES = {400, 413, 431, 505}


def _b(s):
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)


def frame(op, flags=0, fid=0, subject=b"", reply=b"", body=b"", version=1, size=None):
    """One frame's bytes (``size`` overrides the size field)."""
    s, r, b = _b(subject), _b(reply), bytes(body)
    if size is None:
        size = 12 + len(s) + len(r) + len(b)
    return HEAD.pack(size, version, op, flags, fid, len(s), len(r)) + s + r + b


def batch_body(items):
    """A PUB_BATCH body: ``[(subject, record)]``."""
    return b"".join(struct.pack("<HI", len(_b(s)), len(r)) + _b(s) + r for s, r in items)


def rec(core, subject="a.b", data=b"data", **attrs):
    """An event record made by ``core``'s Event."""
    return core.Event(subject, data, **attrs).encode()


def parser(core, router=None, out=None, route=True, batch=False, **kw):
    p = core.FrameParser(router, out, **kw)
    p.route_pubs = route
    p.batch_msgs = batch
    return p


def msgs_of(core, outbuf):
    """The MSG frames an OutBuf holds: [(sid, flags, subject, reply, record)]."""
    p = core.FrameParser(max_payload=1 << 30, max_control=1 << 30)
    p.batch_msgs = True
    got = []
    for it in p.feed(outbuf.take()):
        assert it[0] == "msgs", it
        mb = it[1]
        for i in range(len(mb)):
            got.append((mb.sids[i], mb.flags[i], mb.subjects[i], mb.replies[i], mb.record(i)))
    return got


def wire(core, router, pattern, sid, queue=None, echo=True, outbuf=None):
    ob = outbuf if outbuf is not None else core.OutBuf(0)
    t = core.NativeTarget(ob, sid, echo)
    router.add(pattern, t, queue)
    return t


def normalize(items):
    """Parser output as plain data (MsgBatch columns spelled out)."""
    out = []
    for it in items:
        if it[0] == "msgs":
            mb = it[1]
            out.append(("msgs", list(mb.sids), list(mb.flags), list(mb.subjects),
                        list(mb.replies), list(mb.offsets), mb.buffer))
        else:
            out.append(tuple(it))
    return out


# -- OutBuf ---------------------------------------------------------------------------------


def test_outbuf_frame_is_the_documented_layout(core):
    ob = core.OutBuf(0)
    assert len(ob) == 0 and ob.take() == b""
    assert ob.frame(OP["SUB"], 0, 77, "orders.é.>", "billing") is True
    assert ob.frame(OP["ERR"], 1, 0xFFFFFFFF, body=struct.pack("<H", 503) + b"slow") is True
    assert ob.frame(OP["MSG"], FL_NO_RESPONDERS, 3, b"_INBOX.x.1") is True
    assert ob.frame(OP["PING"]) is True
    want = (frame(OP["SUB"], 0, 77, "orders.é.>", "billing")
            + frame(OP["ERR"], 1, 0xFFFFFFFF, body=struct.pack("<H", 503) + b"slow")
            + frame(OP["MSG"], FL_NO_RESPONDERS, 3, "_INBOX.x.1") + frame(OP["PING"]))
    assert len(ob) == len(want)
    assert (ob.frames, ob.msgs, ob.bytes_out) == (4, 1, 0)
    assert ob.take() == want
    assert (len(ob), ob.bytes_out) == (0, len(want))
    ob.frame(OP["PONG"])
    ob.clear()
    assert len(ob) == 0 and ob.take() == b"" and ob.bytes_out == len(want)


def test_outbuf_max_pending_closed_and_on_data(core):
    calls = []
    ob = core.OutBuf(40, lambda: calls.append(len(ob)))
    assert ob.max_pending == 40
    assert ob.frame(OP["PING"]) and ob.frame(OP["PONG"])        # 32 bytes
    assert calls == [16]                    # once: when it went from empty to not empty
    assert ob.frame(OP["PING"]) is False    # 48 > 40: dropped, overflow set
    assert ob.overflow and ob.dropped == 1 and len(ob) == 32 and ob.frames == 2
    assert ob.take() == frame(OP["PING"]) + frame(OP["PONG"])
    assert ob.overflow                      # sticky until the connection clears it
    ob.overflow = False
    assert ob.frame(OP["PING"]) and calls == [16, 16]
    ob.max_pending = 0                      # no limit
    assert ob.frame(OP["OK"], body=b"x" * 1000)
    ob.closed = True
    assert ob.frame(OP["PING"]) is False and not ob.overflow and ob.dropped == 2
    assert ob.publish("a", b"x", "/s") is False and ob.dropped == 3
    ob.on_data = None


def test_outbuf_argument_checks(core):
    ob = core.OutBuf(0)
    with pytest.raises(ValueError):
        ob.frame(OP["SUB"], 0, 1, "a" * 65536)
    with pytest.raises(ValueError):
        ob.publish("a", b"x", "")                       # empty source
    with pytest.raises(ValueError):
        ob.publish("a" * 65536, b"x", "/s")
    with pytest.raises(TypeError):
        ob.publish_many("a", [b"x", "not bytes"], "/s")
    with pytest.raises(OverflowError):
        ob.frame(OP["PING"], 0, 1 << 32)


def test_engine_objects_refuse_pickling(core):
    p = parser(core, batch=True)
    (mb,) = p.feed(frame(OP["MSG"], 0, 1, "a", b"", rec(core, "a")))
    for obj in (core.OutBuf(0), p, mb[1]):
        with pytest.raises(TypeError):
            pickle.dumps(obj)


def test_outbuf_publish_records_decode_to_default_events(core):
    ob = core.OutBuf(0)
    assert ob.publish("orders.eu", b"\x00payload\xff", "/shop") is True
    assert ob.publish("orders.eu", bytearray(b"ba"), "/shop", reply="_INBOX.r.1", id=9,
                      flags=FL_ACK) is True
    assert ob.publish("orders.eu", memoryview(b"mv"), "/shop") is True
    assert ob.publish_many("orders.us", [b"1", b"", b"333"], "/many") == 3
    assert ob.publish_many("orders.us", (), "/many") == 0
    assert ob.frames == 6 and ob.msgs == 0
    frames = parser(core, route=False).feed(ob.take())
    assert [(f[0], f[1], f[2], f[3], f[4]) for f in frames] == [
        (OP["PUB"], 0, 0, "orders.eu", ""), (OP["PUB"], FL_ACK, 9, "orders.eu", "_INBOX.r.1"),
        (OP["PUB"], 0, 0, "orders.eu", ""), (OP["PUB"], 0, 0, "orders.us", ""),
        (OP["PUB"], 0, 0, "orders.us", ""), (OP["PUB"], 0, 0, "orders.us", "")]
    evs = [core.Event.decode(f[3], f[5]) for f in frames]
    assert [e.data for e in evs] == [b"\x00payload\xff", b"ba", b"mv", b"1", b"", b"333"]
    ids = [e.id for e in evs]
    assert all(HEX32.match(i) for i in ids) and len(set(ids)) == 6
    for e, src in zip(evs, ["/shop"] * 3 + ["/many"] * 3):
        attrs = e.attributes()
        assert attrs == {"specversion": "1.0", "id": e.id, "source": src,
                         "type": e.routing_subject}
        assert e.type == e.routing_subject and e.source == src
        assert e.time is None and e.subject is None and e.datacontenttype is None
        assert e.dataschema is None and e.extensions == {}
    # the record is the one Event.encode() makes of the same event
    assert frames[0][5] == evs[0].encode()


def test_outbuf_publish_many_stops_at_max_pending(core):
    # a default PUB frame: 16 header + subject + 16 record header + 16 id + source + data
    one = 16 + 1 + 16 + 16 + 2 + 10
    probe = core.OutBuf(0)
    probe.publish("s", b"x" * 10, "/s")
    assert len(probe) == one
    ob = core.OutBuf(one * 3 + 5)
    assert ob.publish_many("s", [b"x" * 10] * 5, "/s") == 3
    assert ob.overflow and ob.dropped == 1 and ob.frames == 3


# -- parsing: round trips -------------------------------------------------------------------


def every_op_frames(core):
    """One frame of each op (C→S and S→C), as (bytes, expected tuple)."""
    json_body = json.dumps({"name": "t", "verbose": False}).encode()
    record = rec(core, "orders.eu", b"\x00\x01", type="t", region="eu", n=-1)
    cases = [
        (OP["INFO"], 0, 0, "", "", b'{"server_id":"X","proto":1}'),
        (OP["CONNECT"], 0, 1, "", "", json_body),
        (OP["PUB"], 0, 2, "orders.eu", "", record),
        (OP["PUB"], FL_ACK, 3, "orders.eu", "_INBOX.abc.1", record),
        (OP["PUBACK"], 0, 3, "", "", struct.pack("<Q", 42) + b"orders"),
        (OP["PUB_BATCH"], FL_ACK, 4, "", "", batch_body([("a.b", record), ("c", record)])),
        (OP["SUB"], 0, 5, "orders.*.>", "billing", b""),
        (OP["UNSUB"], 0, 5, "", "", struct.pack("<I", 10)),
        (OP["MSG"], 0, 5, "orders.eu", "reply.to", record),
        (OP["PING"], 0, 0, "", "", b""),
        (OP["PONG"], 0, 0, "", "", b""),
        (OP["OK"], 0, 6, "", "", b'{"count":3}'),
        (OP["ERR"], 1, 7, "", "", struct.pack("<H", 401) + "non-ASCII: é".encode()),
        (OP["STREAM"], 0, 8, "add", "", b'{"name":"S","subjects":["a.>"]}'),
        (OP["REPLAY"], 0, 9, "S", "", b'{"start":"first","limit":5}'),
        (OP["CONSUMER"], 0, 10, "fetch", "", b'{"stream":"S","name":"c","n":2}'),
        (OP["ACK"], 0, 11, "$ACK.S.c.12", "", struct.pack("<Bd", 2, 0.5)),
        (OP["SUB"], 0, 0xFFFFFFFF, "ü.日本.*", "", b""),
    ]
    return [(frame(*c), c) for c in cases]


def test_round_trip_of_every_op(core):
    frames = every_op_frames(core)
    assert sorted({c[0] for _b_, c in frames}) == sorted(OP.values())
    # built by OutBuf.frame: the same bytes
    ob = core.OutBuf(0)
    for data, (op, flags, fid, s, r, body) in frames:
        ob.frame(op, flags, fid, s, r, body)
        assert ob.take() == data
    p = parser(core, route=False)
    got = p.feed(b"".join(d for d, _c in frames))
    assert got == [c for _d, c in frames]
    assert p.frames_in == len(frames) and p.buffered == 0
    assert p.bytes_in == sum(len(d) for d, _c in frames)
    assert all(type(g[5]) is bytes for g in got)


def test_msg_runs_come_as_msg_batches(core):
    r1 = rec(core, "a.b", b"one", type="t1", region="eu")
    r2 = rec(core, "a.c", b"")
    r3 = rec(core, "x", b"three")
    data = (frame(OP["MSG"], 0, 1, "a.b", "", r1) + frame(OP["MSG"], 0, 2, "a.c", "rep.1", r2)
            + frame(OP["PING"]) + frame(OP["MSG"], FL_NO_RESPONDERS, 9, "_INBOX.q.3")
            + frame(OP["MSG"], 0, 1, "x", "", r3) + frame(OP["MSG"], 0, 1, "x", "", r3))
    p = parser(core, batch=True)
    got = p.feed(data)
    assert [g[0] for g in got] == ["msgs", OP["PING"], "msgs"]
    a, b = got[0][1], got[2][1]
    assert isinstance(a, core.MsgBatch) and len(a) == 2 and len(b) == 3
    assert list(a.sids) == [1, 2] and list(a.flags) == [0, 0]
    assert a.subjects == ["a.b", "a.c"] and a.replies == [None, "rep.1"]
    assert list(a.offsets) == [0, len(r1), len(r1) + len(r2)]
    assert a.buffer == r1 + r2 and a.record(0) == r1 and a.record(1) == r2
    assert a.datas() == [b"one", b""]
    e0, e1 = a.events()
    assert (e0.routing_subject, e0.type, e0.data, e0["region"]) == ("a.b", "t1", b"one", "eu")
    assert e0.attributes() == core.Event.decode("a.b", r1).attributes()
    assert a.event(1).routing_subject == "a.c" and a.event(1).data == b""
    with pytest.raises(IndexError):
        a.event(2)
    with pytest.raises(IndexError):
        a.record(-1)
    assert list(b.sids) == [9, 1, 1] and list(b.flags) == [FL_NO_RESPONDERS, 0, 0]
    assert b.subjects == ["_INBOX.q.3", "x", "x"] and b.record(0) == b""
    assert [b.event(i).data for i in (1, 2)] == [b"three", b"three"]
    # without batch_msgs MSG frames are plain tuples
    assert parser(core).feed(frame(OP["MSG"], 0, 1, "a.b", "", r1)) == [
        (OP["MSG"], 0, 1, "a.b", "", r1)]


def stream_of_frames(core):
    data = b"".join(d for d, _c in every_op_frames(core))
    big = rec(core, "big", bytes(range(256)) * 4)
    data += frame(OP["MSG"], 0, 3, "big", "", big) + frame(OP["PING"])
    return data


def test_incremental_parsing_at_every_split_point(core):
    data = stream_of_frames(core)
    whole = normalize(parser(core, route=False, batch=True).feed(data))
    for i in range(len(data) + 1):
        p = parser(core, route=False, batch=True)
        first = p.feed(data[:i])
        # what is held is exactly the incomplete tail
        done = sum(len(d) for d in _split_complete(data[:i]))
        assert p.buffered == i - done
        assert normalize(first + p.feed(data[i:])) == whole, i
        assert p.buffered == 0


def _split_complete(data):
    """The complete frames at the start of ``data`` (bytes each)."""
    out = []
    off = 0
    while len(data) - off >= 4:
        size = struct.unpack_from("<I", data, off)[0]
        if len(data) - off < size + 4:
            break
        out.append(data[off:off + size + 4])
        off += size + 4
    return out


def test_incremental_parsing_byte_by_byte_and_random_chunks(core, seed):
    data = stream_of_frames(core)
    whole = normalize(parser(core, route=False).feed(data))
    p = parser(core, route=False)
    got = []
    for i in range(len(data)):
        got.extend(p.feed(data[i:i + 1]))
    assert normalize(got) == whole
    rnd = random.Random(seed)
    for _ in range(20):
        p = parser(core, route=False)
        got = []
        i = 0
        while i < len(data):
            n = rnd.choice([0, 1, 2, 3, 7, 15, 16, 17, 100, 1000, 5000])
            got.extend(p.feed(memoryview(data)[i:i + n]))
            i += n
        assert normalize(got) == whole


# -- malformed frames -------------------------------------------------------------------------

MALFORMED = [
    ("size 0", struct.pack("<I", 0), 400, "malformed frame: size 0 is below 12"),
    ("size 11", struct.pack("<I", 11) + b"\x01" * 11, 400, "malformed frame: size 11 is below 12"),
    ("size over every limit", struct.pack("<I", 0xFFFFFFFF), 413,
     "frame of 4294967295 bytes exceeds max_payload=1000"),
    ("version 0", frame(OP["PING"], version=0), 505, "unsupported protocol version 0"),
    ("version 2", frame(OP["PING"], version=2), 505, "unsupported protocol version 2"),
    ("op 0", frame(0), 400, "unknown op 0"),
    ("op 17", frame(17), 400, "unknown op 17"),
    ("op 255", frame(255), 400, "unknown op 255"),
    ("subject overruns", HEAD.pack(15, 1, OP["SUB"], 0, 1, 5, 0) + b"abc", 400,
     "malformed frame: subject (5) and reply (0) overrun a frame of 15 bytes"),
    ("reply overruns", HEAD.pack(14, 1, OP["SUB"], 0, 1, 1, 2) + b"ab", 400,
     "malformed frame: subject (1) and reply (2) overrun a frame of 14 bytes"),
    ("subject not UTF-8", frame(OP["SUB"], 0, 1, b"a\xff"), 400,
     "malformed frame: its subject is not UTF-8"),
    ("reply not UTF-8", frame(OP["SUB"], 0, 1, b"a", b"\xc3"), 400,
     "malformed frame: its reply is not UTF-8"),
    ("PUB payload", frame(OP["PUB"], FL_ACK, 1, "a", b"", b"x" * 1001), 413,
     "payload of 1001 bytes exceeds max_payload=1000"),
    ("MSG payload", frame(OP["MSG"], 0, 1, "a", b"", b"x" * 1001), 413,
     "payload of 1001 bytes exceeds max_payload=1000"),
    ("control", frame(OP["STREAM"], 0, 1, "add", b"", b"x" * 298), 431,
     "control frame of 301 bytes exceeds max_control=300"),
    ("control subject", frame(OP["SUB"], 0, 1, "a" * 301), 431,
     "control frame of 301 bytes exceeds max_control=300"),
]


@pytest.mark.parametrize("name,bad,code,message", MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("split", ["one feed", "bad frame later"])
def test_malformed_frame_raises_protocol_error(core, name, bad, code, message, split):
    good = frame(OP["PING"]) + frame(OP["SUB"], 0, 4, "a.>")
    p = parser(core, max_payload=1000, max_control=300)
    before = []
    if split == "one feed":
        data = good + bad + frame(OP["PONG"])
    else:
        before = p.feed(good + bad[:2])       # an incomplete header is held
        assert before == [(OP["PING"], 0, 0, "", "", b""), (OP["SUB"], 0, 4, "a.>", "", b"")]
        data = bad[2:] + frame(OP["PONG"])
    with pytest.raises(core.ProtocolError) as ei:
        p.feed(data)
    exc = ei.value
    assert exc.code == code and str(exc) == message
    assert isinstance(exc, FastflowError)
    # the frames of this feed before the bad one were handled: handed over too
    if split == "one feed":
        assert exc.frames == [(OP["PING"], 0, 0, "", "", b""), (OP["SUB"], 0, 4, "a.>", "", b"")]
    else:
        assert exc.frames == []
    # the stream cannot be resynchronised: the parser refuses more input
    for more in (frame(OP["PING"]), b""):
        with pytest.raises(core.ProtocolError) as ei2:
            p.feed(more)
        assert ei2.value.code == code
        assert str(ei2.value) == "the stream was malformed before: " + message
    assert p.buffered == 0
    # ProtocolError pickles with its code
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is core.ProtocolError and again.code == code and str(again) == message


def test_limits_are_inclusive(core):
    p = parser(core, route=False, max_payload=1000, max_control=300)
    ok = [frame(OP["PUB"], 0, 1, "a", b"r", b"x" * 1000),
          frame(OP["MSG"], 0, 1, "a", b"", b"y" * 1000),
          frame(OP["STREAM"], 0, 1, "add", b"", b"z" * 297),
          frame(OP["SUB"], 0, 1, "s" * 150, "q" * 150)]
    assert len(p.feed(b"".join(ok))) == 4
    # a PUB_BATCH body may pass max_payload (each item may not)
    items = [("a", b"r" * 600), ("b", b"r" * 600)]
    assert len(p.feed(frame(OP["PUB_BATCH"], FL_ACK, 1, body=batch_body(items)))) == 1
    # the limits may change between feeds (the server sets them per connection)
    p.max_payload = 10
    assert p.max_payload == 10
    with pytest.raises(core.ProtocolError) as ei:
        p.feed(frame(OP["PUB"], 0, 1, "a", b"", b"x" * 11))
    assert ei.value.code == 413


def test_oversized_frame_is_refused_from_its_header(core):
    # 413 as soon as the size field says so: the parser does not wait for
    # (or buffer) megabytes it will refuse anyway
    p = parser(core, max_payload=1024, max_control=1024)
    head = HEAD.pack(1 << 24, 1, OP["PUB"], 0, 1, 1, 0)
    with pytest.raises(core.ProtocolError) as ei:
        p.feed(head[:4])
    assert ei.value.code == 413
    assert str(ei.value) == "frame of 16777216 bytes exceeds max_payload=1024"
    # a frame under the bound is held until complete
    p = parser(core, max_payload=70000, max_control=1024)
    f = frame(OP["PUB"], FL_ACK, 1, "a", b"", b"x" * 70000)
    assert p.feed(f[:100]) == [] and p.buffered == 100
    assert len(p.feed(f[100:])) == 1 and p.buffered == 0


def test_malformed_pub_batch_items(core):
    r = rec(core, "a.b", b"1")
    body = batch_body([("a.b", r), ("a.c", r)])
    cases = [
        (body + b"\x01\x00\x05", 400, "malformed PUB_BATCH: 3 bytes left, an item header is 6"),
        (body + struct.pack("<HI", 1, 50) + b"a", 400,
         "malformed PUB_BATCH: an item of 1 + 50 bytes overruns the frame"),
        (body + batch_body([("a.d", b"x" * 101)]), 413,
         "payload of 101 bytes exceeds max_payload=100"),
        (body + batch_body([(b"a.\xff", r)]), 400, "malformed frame: its subject is not UTF-8"),
    ]
    for bad, code, message in cases:
        router = core.Router()
        t = wire(core, router, "a.>", 1)
        p = parser(core, router, max_payload=100)
        with pytest.raises(core.ProtocolError) as ei:
            p.feed(frame(OP["PUB"], 0, 0, "a.z", "", r) + frame(OP["PUB_BATCH"], 0, 7, body=bad))
        assert (ei.value.code, str(ei.value)) == (code, message)
        assert ei.value.frames == []
        # the PUB and the items before the bad one were routed
        assert [m[2] for m in msgs_of(core, t.outbuf)] == ["a.z", "a.b", "a.c"]
        with pytest.raises(core.ProtocolError):
            p.feed(b"")


# -- PUB routing --------------------------------------------------------------------------------


def test_pubs_are_routed_to_wire_targets(core):
    router = core.Router()
    a = wire(core, router, "orders.>", 11)
    b = wire(core, router, "orders.eu", 12)
    pub_out = core.OutBuf(0)
    p = parser(core, router, pub_out)
    r1 = rec(core, "orders.eu", b"\x00eu", type="t", region="eu")
    r2 = rec(core, "orders.us", b"us")
    data = (frame(OP["PUB"], 0, 1, "orders.eu", "", r1)
            + frame(OP["PUB"], 0, 2, "orders.us", "reply.me", r2))
    assert p.feed(data) == []                       # routed, nothing for Python
    assert p.pubs_in == 2 and p.frames_in == 2
    assert msgs_of(core, a.outbuf) == [(11, 0, "orders.eu", None, r1),
                                       (11, 0, "orders.us", "reply.me", r2)]
    assert msgs_of(core, b.outbuf) == [(12, 0, "orders.eu", None, r1)]
    assert (a.delivered, b.delivered, router.n_delivered) == (2, 1, 3)
    assert a.outbuf.msgs == 2 and len(pub_out) == 0
    # the record crosses byte for byte, and decodes to the published event
    ev = core.Event.decode("orders.eu", r1)
    assert ev.attributes()["region"] == "eu" and ev.data == b"\x00eu"
    # route_pubs off (before CONNECT), no router, or ACK: handed to Python
    for q in (parser(core, router, pub_out, route=False), parser(core, None, pub_out)):
        assert q.feed(frame(OP["PUB"], 0, 3, "orders.eu", "", r1)) == [
            (OP["PUB"], 0, 3, "orders.eu", "", r1)]
    assert p.feed(frame(OP["PUB"], FL_ACK, 4, "orders.eu", "", r1)) == [
        (OP["PUB"], FL_ACK, 4, "orders.eu", "", r1)]
    assert a.delivered == 2


def test_pub_routing_to_a_flow(seed):
    """The active core's Flow: streams store the record, in-process
    subscribers and network subscriptions get the event."""
    from fastflow._impl import FrameParser, NativeTarget, OutBuf

    f = fastflow.Flow()
    try:
        st = f.add_stream("S", "orders.>")
        local = []
        f.subscribe("orders.*", local.append)
        net = OutBuf(0)
        t = NativeTarget(net, 5)
        f.add("orders.>", t)
        p = FrameParser(f, OutBuf(0))
        p.route_pubs = True
        records = [fastflow.Event("orders.eu", b"%d" % i, type="t", n=i).encode()
                   for i in range(5)]
        data = b"".join(frame(OP["PUB"], 0, i, "orders.eu", "", r) for i, r in enumerate(records))
        rnd = random.Random(seed)
        cut = rnd.randrange(len(data))
        assert p.feed(data[:cut]) + p.feed(data[cut:]) == []
        assert [bytes(st.log.get(i + 1)) for i in range(5)] == records
        assert [e.data for e in local] == [b"0", b"1", b"2", b"3", b"4"]
        assert [e["n"] for e in local] == [0, 1, 2, 3, 4]
        assert [(e.seq, e.stream) for e in local] == [(i + 1, "S") for i in range(5)]
        got = msgs_of(ACTIVE_CORE, net)
        assert [m[4] for m in got] == records
        s = f.stats()
        assert (s["published"], s["stored"]) == (5, 5)
    finally:
        f.close()


def test_a_sub_then_a_pub_in_one_feed_keep_their_order(core):
    router = core.Router()
    t = wire(core, router, "a.>", 1)
    p = parser(core, router)
    r = rec(core, "a.b", b"x")
    pub = frame(OP["PUB"], 0, 0, "a.b", "", r)
    sub = frame(OP["SUB"], 0, 7, "a.b")
    # SUB first: the PUB after it must not be routed before the SUB is handled
    got = p.feed(sub + pub + pub)
    assert got == [(OP["SUB"], 0, 7, "a.b", "", b""), (OP["PUB"], 0, 0, "a.b", "", r),
                   (OP["PUB"], 0, 0, "a.b", "", r)]
    assert t.delivered == 0 and p.pubs_in == 0
    # PUB first: routed; the SUB and what follows it go back in order
    got = p.feed(pub + sub + pub)
    assert got == [(OP["SUB"], 0, 7, "a.b", "", b""), (OP["PUB"], 0, 0, "a.b", "", r)]
    assert t.delivered == 1
    # the next feed routes again
    assert p.feed(pub) == [] and t.delivered == 2
    # a PING in front also keeps the order (anything handed to Python does)
    assert [g[0] for g in p.feed(frame(OP["PING"]) + pub)] == [OP["PING"], OP["PUB"]]


def test_pub_batch_items_are_routed_in_order(core):
    router = core.Router()
    t = wire(core, router, ">", 3)
    p = parser(core, router)
    items = [("a.%d" % i, rec(core, "a.%d" % i, b"%d" % i)) for i in range(6)]
    assert p.feed(frame(OP["PUB_BATCH"], 0, 1, body=batch_body(items))) == []
    assert p.pubs_in == 6 and p.frames_in == 1
    assert [(m[2], m[4]) for m in msgs_of(core, t.outbuf)] == items
    # an empty batch routes nothing; with ACK it goes to Python
    assert p.feed(frame(OP["PUB_BATCH"], 0, 2)) == []
    b = batch_body(items[:2])
    assert p.feed(frame(OP["PUB_BATCH"], FL_ACK, 3, body=b)) == [
        (OP["PUB_BATCH"], FL_ACK, 3, "", "", b)]
    # a bad item becomes an error entry (with the request's id); the items
    # before it stay published (what happens to the items after it: see
    # test_server.py, test_pub_batch_bad_item_stops_the_batch)
    bad = batch_body(items[:2] + [("x..y", items[0][1])])
    got = p.feed(frame(OP["PUB_BATCH"], 0, 4, body=bad))
    assert [m[2] for m in msgs_of(core, t.outbuf)] == ["a.0", "a.1"]
    assert [g[:2] for g in got] == [("error", 422)] and got[0][3] == 4
    assert "x..y" in got[0][2]


def test_echo_off_skips_the_publishers_own_subscriptions(core):
    router = core.Router()
    conn_a = core.OutBuf(0)
    conn_b = core.OutBuf(0)
    own = wire(core, router, "e.>", 1, echo=False, outbuf=conn_a)
    other = wire(core, router, "e.>", 2, outbuf=conn_b)
    pa = parser(core, router, conn_a)
    pb = parser(core, router, conn_b)
    r = rec(core, "e.x", b"x")
    assert pa.feed(frame(OP["PUB"], 0, 0, "e.x", "", r)) == []
    assert (own.delivered, other.delivered) == (0, 1)
    assert pb.feed(frame(OP["PUB"], 0, 0, "e.x", "", r)) == []
    assert (own.delivered, other.delivered) == (1, 2)
    assert own.echo is False
    own.echo = True
    assert pa.feed(frame(OP["PUB"], 0, 0, "e.x", "", r)) == []
    assert (own.delivered, other.delivered) == (2, 3)
    # echo off and the only subscriber is itself: a request has no responders
    own.echo = False
    solo = core.Router()
    wire(core, solo, "e.>", 1, echo=False, outbuf=conn_a)
    ps = parser(core, solo, conn_a)
    assert ps.feed(frame(OP["PUB"], 0, 0, "e.x", "_INBOX.z.1", r)) == [("noresp", "_INBOX.z.1")]


def test_unsub_max_through_remaining(core):
    router = core.Router()
    t = wire(core, router, "m.>", 8)
    t.remaining = 2
    p = parser(core, router)
    r = rec(core, "m.x", b"x")
    assert p.feed(frame(OP["PUB"], 0, 0, "m.x", "", r) * 4) == []
    assert t.delivered == 2 and t.remaining == 0
    assert t.handle not in router.matcher               # the engine removed it
    assert len(msgs_of(core, t.outbuf)) == 2
    assert router.n_dropped_no_interest == 2


def test_no_responders_and_error_entries(core):
    router = core.Router()
    t = wire(core, router, "svc.>", 1)
    log = core.Log(max_events=1, discard="new")
    router.add("stored.>", core.StreamTarget("ST", log))
    p = parser(core, router)
    r = rec(core, "svc.x", b"q")
    rs = rec(core, "stored.x", b"s")
    got = p.feed(frame(OP["PUB"], 0, 1, "svc.x", "_INBOX.a.1", r)       # a responder
                 + frame(OP["PUB"], 0, 2, "nobody.x", "_INBOX.a.2", r)   # nobody
                 + frame(OP["PUB"], 0, 3, "nobody.x", "", r)             # no reply: nothing
                 + frame(OP["PUB"], 0, 4, "stored.x", "_INBOX.a.4", rs)  # a stream is no responder
                 + frame(OP["PUB"], 0, 5, "a..b", "", r)                 # invalid subject
                 + frame(OP["PUB"], 0, 6, "svc.y", "", b"not a record")  # invalid record
                 + frame(OP["PUB"], 0, 7, "stored.y", "", rs)            # the stream is full
                 + frame(OP["PUB"], 0, 8, "svc.z", "", r))               # still parsing
    assert got[0] == ("noresp", "_INBOX.a.2")
    assert got[1] == ("noresp", "_INBOX.a.4")
    kinds = [(g[0], g[1], g[3]) for g in got[2:]]
    assert kinds == [("error", 422, 5), ("error", 422, 6), ("error", 507, 7)]
    assert "a..b" in got[2][2]
    assert len(log) == 1
    assert [m[2] for m in msgs_of(core, t.outbuf)] == ["svc.x", "svc.z"]
    assert error_code(fastflow.SubjectError("x")) == 422
    assert error_code(fastflow.EventTooLarge("x")) == 413
    assert error_code(fastflow.LogFullError("x")) == 507
    assert error_code(FastflowError("x")) == 400


def test_publish_permissions_in_the_parser(core):
    router = core.Router()
    t = wire(core, router, ">", 1)
    allow = core.Matcher()
    allow.add("ok.>", 1)
    deny = core.Matcher()
    deny.add("ok.secret.>", 1)
    p = parser(core, router)
    p.pub_allow = allow
    p.pub_deny = deny
    r = rec(core, "x", b"x")
    got = p.feed(frame(OP["PUB"], 0, 1, "ok.a", "", r) + frame(OP["PUB"], 0, 2, "no.a", "", r)
                 + frame(OP["PUB"], 0, 3, "ok.secret.a", "", r)
                 + frame(OP["PUB_BATCH"], 0, 4, body=batch_body([("ok.b", r), ("nope", r)])))
    assert got == [("error", 403, "permission denied: publish to 'no.a'", 2),
                   ("error", 403, "permission denied: publish to 'ok.secret.a'", 3),
                   ("error", 403, "PUB_BATCH item 1: permission denied: publish to 'nope' "
                    "(1 items before it published, the rest not)", 4)]
    assert p.denied == 3
    assert [m[2] for m in msgs_of(core, t.outbuf)] == ["ok.a", "ok.b"]
    p.pub_allow = None
    p.pub_deny = None
    assert p.feed(frame(OP["PUB"], 0, 1, "no.a", "", r)) == [] and t.delivered == 3


def test_parser_argument_types(core):
    with pytest.raises(TypeError):
        core.FrameParser(object())
    with pytest.raises(TypeError):
        core.FrameParser(None, object())
    p = core.FrameParser()
    with pytest.raises(TypeError):
        p.pub_allow = object()
    with pytest.raises(TypeError):
        p.feed("a str")


@both_cores
def test_the_cores_write_and_read_the_same_bytes():
    nat, ref = CORES["native"], CORES["ref"]
    for mk, rd in ((nat, ref), (ref, nat)):
        ob = mk.OutBuf(0)
        for _data, c in every_op_frames(mk):
            ob.frame(*c)
        ob.publish("p.q", b"payload", "/src", reply="r")
        out = ob.take()
        got = parser(rd, route=False).feed(out)
        assert got == parser(mk, route=False).feed(out)
        ev = rd.Event.decode(got[-1][3], got[-1][5])
        assert (ev.source, ev.type, ev.data) == ("/src", "p.q", b"payload")


# -- fuzz ------------------------------------------------------------------------------------------

FUZZ_SUBJECTS = (["a.b", "a.c", "orders.eu.x", "svc.q", "_INBOX.r.1"] * 4
                 + ["a", "é.ü", "a..b", "", "*", "a.>", "$SYS.x", "x" * 70])


@st.composite
def subjects_st(draw):
    if draw(st.integers(0, 40)) == 0:
        return draw(st.binary(max_size=6))         # (rarely: most are not UTF-8)
    return _b(draw(st.sampled_from(FUZZ_SUBJECTS)))


@st.composite
def records_st(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40))
    s = draw(st.sampled_from(["a.b", "a.c", "orders.eu", "svc.q"]))
    kw = draw(st.sampled_from([{}, {"type": "t"}, {"region": "eu", "n": 3},
                               {"subject": "s", "time": "2024-01-01T00:00:00Z"}]))
    return fastflow.Event(s, draw(st.binary(max_size=30)), **kw).encode()


@st.composite
def frames_st(draw):
    # mostly PUBs (routed), MSGs (batched) and PUB_BATCHes, now and then an
    # op that is not one
    op = draw(st.sampled_from([3] * 20 + [5] * 6 + [8] * 6 + list(range(1, 17))
                              + [0, 17, 255]))
    flags = draw(st.sampled_from([0] * 8 + [1, 2, 3]))
    fid = draw(st.sampled_from([0, 1, 7, 0xFFFFFFFF]))
    s = draw(subjects_st())
    r = draw(st.one_of(st.just(b""), st.just(b""), subjects_st()))
    if op in (3, 8):
        body = draw(records_st())
    elif op == 5:
        body = batch_body(draw(st.lists(st.tuples(subjects_st(), records_st()), max_size=4)))
        if draw(st.booleans()):
            body = body[:draw(st.integers(0, len(body)))]
    else:
        body = draw(st.one_of(st.binary(max_size=24), st.just(b'{"name":"x"}')))
    version = 1 if draw(st.integers(0, 49)) else draw(st.integers(0, 255))
    return frame(op, flags, fid, s, r, body, version=version)


@st.composite
def mutated_stream_st(draw):
    data = bytearray(b"".join(draw(st.lists(frames_st(), min_size=1, max_size=8))))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "size"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[i:]
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[i:i + draw(st.integers(1, 8))]
        else:
            data[i:i + 4] = struct.pack("<I", draw(st.sampled_from(
                [0, 11, 12, 13, 100, 65536, 70000, 0xFFFFFFFF])))
    return bytes(data)


def fuzz_run(core, chunks, route, batch, perms, flow=None):
    """Feed ``chunks`` to a parser routing into a router (or ``flow``, a
    Flow of the active core) with network, queue, stream and local
    targets; returns what happened (plain data)."""
    router = core.Router() if flow is None else flow
    own = core.OutBuf(1 << 16)
    subs = [wire(core, router, "orders.>", 1), wire(core, router, "a.*", 2, queue="q"),
            wire(core, router, "a.*", 3, queue="q"), wire(core, router, "svc.>", 4, echo=False,
                                                            outbuf=own)]
    subs[0].remaining = 5
    local = []
    if flow is None:
        log = core.Log(max_events=3, discard="new")
        router.add("orders.>", core.StreamTarget("S", log))
        router.add("a.>", core.SubTarget(lambda ev: local.append((ev.id, ev.data))))
    else:
        log = flow.add_stream("S", "orders.>", fastflow.Retention(max_events=3,
                                                                   discard="new")).log
        flow.subscribe("a.>", lambda ev: local.append((ev.id, ev.data)))
    p = core.FrameParser(router, own, max_payload=200, max_control=300)
    p.route_pubs = route
    p.batch_msgs = batch
    if perms:
        p.pub_allow = core.Matcher()
        p.pub_allow.add("a.>", 1)
        p.pub_allow.add("orders.>", 1)
        p.pub_deny = core.Matcher()
        p.pub_deny.add("a.b", 1)
    result = []
    failed = None
    for c in chunks:
        try:
            items = p.feed(c)
        except core.ProtocolError as exc:
            assert exc.code in PROTOCOL_CODES, exc
            assert isinstance(exc.frames, list)
            result.append(("frames", normalize(exc.frames)))
            failed = (exc.code, str(exc))
            result.append(("failed",) + failed)
            with pytest.raises(core.ProtocolError) as ei:
                p.feed(b"\x0c\x00\x00\x00\x01\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
            assert ei.value.code == exc.code
            break
        assert isinstance(items, list)
        for it in items:
            if it[0] == "msgs":
                mb = it[1]
                assert len(mb) == len(mb.subjects) == len(mb.replies) == len(mb.offsets) - 1
                for i in range(len(mb)):
                    # a record from the network is not checked by the client's
                    # parser: decoding a bad one raises, never crashes
                    try:
                        ev = mb.event(i)
                        result.append(("event", ev.routing_subject, ev.attributes(), ev.data))
                    except (FastflowError, ValueError) as exc:
                        result.append(("undecodable", type(exc).__name__))
            elif it[0] == "error":
                assert it[1] in (403, 413, 422, 507, 400) and type(it[2]) is str
            elif it[0] == "noresp":
                assert type(it[1]) is str
            else:
                op, flags, fid, s, r, b = it
                assert 1 <= op <= 16 and type(s) is str and type(r) is str and type(b) is bytes
        result.append(("items", normalize(items)))
    for t in subs:
        result.append(("wire", t.sid, t.delivered, t.dropped, msgs_of(core, t.outbuf)))
    result.append(("own", len(own)))
    result.append(("stream", [(r.seq, r.subject, bytes(r)) for r in
                              (log.get(s) for s in range(log.first_seq, log.last_seq + 1))]))
    result.append(("local", local))
    # a Flow publishes its advisories too ($SYS.advisory.loop when the loop
    # breaker drops a publish): not the parser's publishes
    advisories = flow.stats()["advisories"] if flow is not None else 0
    result.append(("counters", p.frames_in, p.bytes_in, p.pubs_in, p.denied,
                   router.n_published - advisories, router.n_delivered))
    return result


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("core_name", list(CORES))
@FUZZ
@given(data=st.binary(max_size=300), route=st.booleans(), batch=st.booleans(),
       split=st.data())
def test_fuzz_random_bytes(core_name, data, route, batch, split):
    fuzz_run(CORES[core_name], chunked(split.draw, data, most_cuts=5), route, batch, False)


@pytest.mark.parametrize("core_name", list(CORES))
@FUZZ
@given(stream=mutated_stream_st(), route=st.booleans(), batch=st.booleans(),
       perms=st.booleans(), split=st.data())
def test_fuzz_mutated_frame_streams(core_name, stream, route, batch, perms, split):
    fuzz_run(CORES[core_name], chunked(split.draw, stream, most_cuts=5), route, batch, perms)


@FUZZ
@given(stream=mutated_stream_st(), route=st.booleans(), perms=st.booleans(), split=st.data())
def test_fuzz_with_a_flow_router(stream, route, perms, split):
    """The active core's parser routing into a Flow (streams, in-process
    subscribers, network subscriptions): the same outcome as a bare router."""
    core = ACTIVE_CORE
    chunks = chunked(split.draw, stream, most_cuts=5)
    f = fastflow.Flow()
    try:
        with_flow = fuzz_run(core, chunks, route, False, perms, flow=f)
        stats = f.stats()
        assert stats["published"] - stats["advisories"] == with_flow[-1][5]
    finally:
        f.close()
    assert with_flow == fuzz_run(core, chunks, route, False, perms)


@both_cores
@FUZZ
@given(stream=mutated_stream_st(), route=st.booleans(), batch=st.booleans(),
       perms=st.booleans(), split=st.data())
def test_fuzz_both_cores_agree(stream, route, batch, perms, split):
    chunks = chunked(split.draw, stream, most_cuts=5)
    assert fuzz_run(CORES["native"], chunks, route, batch, perms) == \
        fuzz_run(CORES["ref"], chunks, route, batch, perms)
