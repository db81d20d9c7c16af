"""Hardening of the wire lines (issue 11): what one client sends must never
become a line another client's protocol reads as its own.

- reply subjects and attribute names are validated at the door that gets
  them (native and NATS), and the NATS header block is written only from
  names that cannot break a line;
- a no-responders notice goes to the requester alone, in its protocol;
- a record with a bad attribute block is refused before it is stored;
- an invalid publish on the NATS door is dropped silently without
  ``pedantic`` and answered with ``-ERR`` with it (as nats-server 2.9);
- each door says in one sentence which protocol it speaks when a client
  of the other one knocks;
- ``[nats] lineage = "strip"`` keeps ``ffhops``/``fftrace`` inside.

The victims are real nats-py clients.  Run on both cores (the in-process
servers use the core of the test process: FASTFLOW_NO_EXTENSIONS=1 for the
pure-Python one).
"""

import asyncio
import contextlib
import json
import struct
import time

import msgspec
import pytest

import fastflow
import fastflow.client as fc
from fastflow import Event, Flow
from fastflow.errors import EventError
from fastflow.protocol import Op

from helpers import wait_until

TIMEOUT = 30.0
FORGED = b"forged"
_HEAD = struct.Struct("<BBHHHHHI")      # the event record's header (docs/engine.md)


def run(aloop, coro_fn):
    return aloop(coro_fn, timeout=TIMEOUT)


def raw_pub(client, subject, record, reply=None):
    """A PUB frame as any program could write it (no client-side checks)."""
    assert client._frame(Op.PUB, 0, 0, subject, reply, record)


def hpub_line(subject, headers, payload=b"hi", reply=None):
    block = b"NATS/1.0\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return b"HPUB %s %s%d %d\r\n%s%s\r\n" % (
        subject, reply + b" " if reply else b"", len(block), len(block) + len(payload),
        block, payload)


def with_rest(event, rest_bytes):
    """``event``'s record with its msgpack attribute block replaced."""
    rec = event.encode()
    v, flags, hops, idn, srcn, typn, trn, restn = _HEAD.unpack_from(rec)
    off = _HEAD.size + (16 if flags & 1 else idn) + srcn + typn + trn
    assert restn, "the event needs an attribute block to replace"
    return (_HEAD.pack(v, flags, hops, idn, srcn, typn, trn, len(rest_bytes)) + rec[_HEAD.size:off]
            + rest_bytes + rec[off + restn:])


USERS = [
    # may publish only m.> (and read its own inbox)
    {"user": "mallory", "password": "pw-mallory",
     "permissions": {"publish": ["m.>"], "subscribe": ["m.>", "_INBOX.>"]}},
    {"user": "victim", "password": "pw-victim"},
]


class Victim:
    """A nats-py subscriber on ``m.>`` and ``orders.>``: what it got."""

    def __init__(self, nats):
        self.nats = nats
        self.got = []
        self.errors = []
        self.nc = None

    async def start(self, url, **kw):
        async def on_error(e):
            self.errors.append(e)

        async def on_msg(msg):
            self.got.append((msg.subject, msg.reply, msg.data, dict(msg.headers or {})))

        self.nc = await self.nats.connect(url, user="victim", password="pw-victim",
                                          connect_timeout=3, allow_reconnect=False,
                                          error_cb=on_error, **kw)
        await self.nc.subscribe("m.>", cb=on_msg)
        await self.nc.subscribe("orders.>", cb=on_msg)
        await self.nc.flush(3)
        return self

    async def close(self):
        if self.nc is not None and not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.nc.close(), 5)

    def subjects(self):
        return [g[0] for g in self.got]


@contextlib.asynccontextmanager
async def mallory_and_victim(srv, natspy):
    """``(c, victim, errors)``: mallory's native client ``c`` of ``srv``, whose
    server errors go to ``errors``, and a Victim on its NATS door; both are
    closed at exit."""
    victim = await Victim(natspy).start(srv.nats_url)
    try:
        errors = []
        c = await fc.connect(srv.url, user="mallory", password="pw-mallory",
                             error_callback=errors.append)
        try:
            yield c, victim, errors
        finally:
            await c.close()
    finally:
        await victim.close()


async def raw_nats(port, connect=None):
    """A NATS connection by hand: (reader, writer) after INFO and CONNECT."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    line = await asyncio.wait_for(reader.readline(), 5)
    assert line.startswith(b"INFO "), line
    writer.write(b"CONNECT " + json.dumps(connect or {}).encode() + b"\r\n")
    return reader, writer


async def until_pong(reader, timeout=5.0):
    """Every line the server wrote up to its PONG (PINGs left out)."""
    lines = []
    deadline = time.monotonic() + timeout
    while True:
        line = await asyncio.wait_for(reader.readline(), max(0.01, deadline - time.monotonic()))
        if not line:
            lines.append(b"<EOF>")
            return lines
        if line == b"PONG\r\n":
            return lines
        lines.append(line)


# -- 1. reply subjects and attribute names ----------------------------------------------------


def test_reply_with_crlf_from_the_native_door_injects_nothing(aloop, ffnats, natspy):
    """The attack of the issue: a user allowed to publish only m.> sends a
    reply with CRLF and a forged ``MSG orders.secret.x`` line; the nats-py
    subscriber must not get a message on orders.secret.x."""
    async def main():
        async with ffnats(users=USERS) as srv, \
                mallory_and_victim(srv, natspy) as (c, victim, errors):
            # (the victim's subscription of m.> is its sid 1)
            reply = "r 0\r\n\r\nMSG orders.secret.x 1 6\r\nforged\r\nMSG m.x 1 r"
            # raw PUB frames: the client's own check of the reply left out
            raw_pub(c, "m.x", Event("m.x", b"hello").encode(), reply)
            raw_pub(c, "m.y", Event("m.y", b"hello").encode(), "a b")
            c.publish("m.ok", b"after")
            await c.flush()
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: "m.ok" in victim.subjects(), what="m.ok")
            assert victim.subjects() == ["m.ok"], victim.got
            assert not victim.errors
            await wait_until(lambda: len(errors) >= 2, what="the refusals")
            assert all(isinstance(e, fc.ServerError) and e.code == 422
                       and "invalid reply subject" in str(e) for e in errors), errors
            assert "not allowed" in str(errors[0])
    run(aloop, main)


def test_attribute_name_with_crlf_becomes_no_nats_header_line(aloop, ffnats, natspy):
    """An attribute name ``ce-Bad Name\\r\\nX-Injected: v`` in a native event
    record is refused at the door (422) and never reaches a NATS header."""
    async def main():
        async with ffnats(users=USERS) as srv, \
                mallory_and_victim(srv, natspy) as (c, victim, errors):
            ev = Event("m.h", b"data", id="1", source="/s", type="t", ext="x")
            for name in ("ce-Bad Name\r\nX-Injected: v", "Bad Name\r\nX-Injected: v",
                         "a:b", "nul\0"):
                rest = msgspec.msgpack.encode({name: "v"})
                raw_pub(c, "m.h", with_rest(ev, rest))
            await c.flush()
            await wait_until(lambda: len(errors) >= 4, what="the refusals")
            assert all(isinstance(e, fc.ServerError) and e.code == 422 for e in errors)
            assert "attribute name" in str(errors[0]), errors[0]
            c._publish_record("m.h", ev.encode(), None)
            await c.flush()
            await wait_until(lambda: victim.got, what="the good event")
            assert len(victim.got) == 1, victim.got
            subject, _reply, data, headers = victim.got[0]
            assert (subject, data) == ("m.h", b"data")
            assert headers.get("ce-ext") == "x", headers
            assert not any("injected" in k.lower() or " " in k for k in headers), headers
    run(aloop, main)


def test_nats_door_refuses_replies_and_header_names_that_break_lines(aloop, ffnats, natspy):
    """On the NATS door a reply that is not a literal subject (a CR, a NUL,
    a wildcard) is an invalid publish: -ERR in pedantic mode, dropped
    without it; an HPUB header ``ce-Bad Name`` is refused with a clear
    -ERR; the victim gets none of them."""
    async def main():
        async with ffnats() as srv:
            victim = await Victim(natspy).start(srv.nats_url)
            try:
                bad = [b"PUB m.x r\rMSG 5\r\nhello\r\n", b"PUB m.x a\x00b 5\r\nhello\r\n",
                       b"PUB m.x a.* 5\r\nhello\r\n", b"PUB m.x a..b 5\r\nhello\r\n",
                       hpub_line(b"m.x", [b"ce-ext: e"], reply=b"r\rx")]
                for pedantic in (True, False):
                    reader, writer = await raw_nats(
                        srv.nats_port, {"verbose": False, "pedantic": pedantic,
                                        "headers": True})
                    for line in bad:
                        writer.write(line)
                    writer.write(b"PING\r\n")
                    lines = await until_pong(reader)
                    want = [b"-ERR 'Invalid Publish Subject'\r\n"] * len(bad) if pedantic else []
                    assert lines == want, (pedantic, lines)
                    writer.write(hpub_line(b"m.x", [b"ce-Bad Name: v", b"X-A: b"])
                                 + b"PING\r\n")
                    lines = await until_pong(reader)
                    assert len(lines) == 1 and lines[0].startswith(
                        b"-ERR 'Invalid CloudEvents Headers: ") and b"bad name" in lines[0], lines
                    writer.write(b"PUB m.ok 2\r\nok\r\nPING\r\n")
                    assert await until_pong(reader) == []
                    writer.close()
                await wait_until(lambda: victim.subjects().count("m.ok") == 2,
                                 what="both m.ok")
                assert victim.subjects() == ["m.ok", "m.ok"], victim.got
                assert srv.n_invalid_pubs == 2 * len(bad)
            finally:
                await victim.close()
    run(aloop, main)


def test_reply_subject_rule_on_the_engine(impl_flow):
    flow, sub = impl_flow
    for reply in ("a\r\nb", "a b", "a..b", "a.*", ">", "a\0"):
        with pytest.raises(fastflow.SubjectError, match="invalid reply subject"):
            flow.publish_record("x.y", Event("x.y", b"").encode(), reply)
    assert flow.n_delivered == 0
    flow.publish_record("x.y", Event("x.y", b"").encode(), "_INBOX.abc.1")
    assert flow.n_delivered == 1


@pytest.fixture
def impl_flow():
    flow = Flow()
    got = []
    sub = flow.subscribe("x.>", got.append)
    yield flow, sub
    flow.close()


# -- 3. an invalid attribute block is refused before it is stored ---------------------------


def test_invalid_attribute_block_is_not_stored_and_does_not_cut_delivery(aloop, ffnats, natspy):
    async def main():
        flow = Flow()
        flow.add_stream("S", "s.>")
        async with ffnats(flow=flow) as srv:
            got = []
            nc = await natspy.connect(srv.nats_url, connect_timeout=3, allow_reconnect=False)

            async def on_msg(msg):
                got.append((msg.subject, msg.data))
            await nc.subscribe("s.>", cb=on_msg)
            await nc.flush(3)
            errors = []
            c = await fc.connect(srv.url, error_callback=errors.append)
            try:
                ev = Event("s.a", b"x", id="1", source="/s", type="t", ext="x")
                for rest in (b"\xc1\xc1\xc1", b"\x93\x01\x02\x03", b"\x81\xa1a\x81\xa1b\x01",
                             msgspec.msgpack.encode({"id": "2"})):
                    raw_pub(c, "s.a", with_rest(ev, rest))
                await c.flush()
                await wait_until(lambda: len(errors) >= 4, what="the refusals")
                assert all(e.code == 422 for e in errors), errors
                assert flow.stream("S").info()["events"] == 0
                c._publish_record("s.a", ev.encode(), None)
                c.publish("s.b", b"plain")
                await c.flush()
                await wait_until(lambda: len(got) >= 2, what="the good events")
                assert got == [("s.a", b"x"), ("s.b", b"plain")]
                assert flow.stream("S").info()["events"] == 2
            finally:
                await c.close()
                await nc.close()
        flow.close()
    run(aloop, main)


def test_invalid_attribute_block_is_refused_by_the_engine():
    flow = Flow()
    flow.add_stream("S", "s.>")
    try:
        ev = Event("s.a", b"x", ext="x")
        with pytest.raises(EventError, match="not a msgpack map"):
            flow.publish_record("s.a", with_rest(ev, b"\xc1"))
        with pytest.raises(EventError, match="attribute name 'Bad"):
            flow.publish_record("s.a", with_rest(ev, msgspec.msgpack.encode({"Bad\r\n": 1})))
        with pytest.raises(EventError, match="expected str, bool, int or bytes"):
            flow.publish_record("s.a", with_rest(ev, msgspec.msgpack.encode({"a": [1]})))
        assert flow.stream("S").info()["events"] == 0
        flow.publish_record("s.a", ev.encode())
        assert flow.stream("S").info()["events"] == 1
    finally:
        flow.close()


# -- 2. no-responders notices go to the requester alone ---------------------------------------


def test_no_responders_goes_only_to_the_requester(aloop, ffnats, natspy):
    async def main():
        async with ffnats() as srv:
            others = []
            nc = await natspy.connect(srv.nats_url, connect_timeout=3, allow_reconnect=False)

            async def on_msg(msg):
                others.append((msg.subject, msg.headers, msg.data))
            await nc.subscribe("orders.>", cb=on_msg)
            await nc.subscribe("_INBOX.>", cb=on_msg)
            await nc.flush(3)
            native_seen = []
            watcher = await fc.connect(srv.url)
            watcher.subscribe("orders.>", lambda e: native_seen.append(e))
            await watcher.flush()
            c = await fc.connect(srv.url)
            requester = await natspy.connect(srv.nats_url, connect_timeout=3,
                                             allow_reconnect=False)
            try:
                # a native request with no responders
                with pytest.raises(fc.NoRespondersError):
                    await c.request("svc.nobody", b"?", timeout=5)
                # a native publish with a reply its own connection subscribes
                own = []
                c.subscribe("orders.eu.x", lambda e: own.append(e))
                await c.flush()
                c.publish("svc.nobody", b"?", reply="orders.eu.x")
                await c.flush()
                # a NATS request with no responders
                with pytest.raises(natspy.errors.NoRespondersError):
                    await requester.request("svc.nobody", b"?", timeout=5)
                # what everybody else sees afterwards: only real messages
                c.publish("orders.eu.y", b"real")
                await c.flush()
                await wait_until(lambda: others and native_seen, what="the real message")
                await asyncio.sleep(0.05)
                assert others == [("orders.eu.y", None, b"real")], others
                assert [(e.routing_subject, e.data) for e in native_seen] == [
                    ("orders.eu.y", b"real")]
                assert not nc.is_closed and nc.is_connected
            finally:
                await c.close()
                await watcher.close()
                await requester.close()
                await nc.close()
    run(aloop, main)


# -- 4. an invalid publish subject on the NATS door -------------------------------------------


def test_natspy_survives_an_invalid_publish_subject(aloop, ffnats, natspy):
    async def main():
        async with ffnats() as srv:
            errors = []

            async def on_error(e):
                errors.append(e)
            got = []
            nc = await natspy.connect(srv.nats_url, connect_timeout=3, allow_reconnect=False,
                                      error_cb=on_error)
            try:
                async def on_msg(msg):
                    got.append(msg.data)
                await nc.subscribe("ok.>", cb=on_msg)
                await nc.publish("bad..subject", b"x")
                await nc.publish("bad.*", b"x")
                await nc.publish("ok.1", b"after")
                await nc.flush(3)
                await wait_until(lambda: got, what="the message after the invalid publish")
                assert got == [b"after"]
                assert nc.is_connected and not errors, errors
                assert srv.n_invalid_pubs == 2
            finally:
                await nc.close()
    run(aloop, main)


def test_pedantic_invalid_publish_subject_is_an_err_like_nats_server(aloop, ffnats, natsd):
    async def scenario(port):
        reader, writer = await raw_nats(port, {"verbose": False, "pedantic": True})
        writer.write(b"SUB ok.> 1\r\nPUB bad..x 1\r\nx\r\nPUB ok.x 2\r\nhi\r\nPING\r\n")
        lines = await until_pong(reader)
        writer.close()
        return lines

    async def main():
        async with natsd() as ns:
            want = await scenario(ns.port)
        async with ffnats() as srv:
            got = await scenario(srv.nats_port)
        assert want == [b"-ERR 'Invalid Publish Subject'\r\n", b"MSG ok.x 1 2\r\n", b"hi\r\n"]
        assert got == want
    run(aloop, main)


# -- 5. the doors tell each other apart -------------------------------------------------------


def test_nats_client_at_the_native_port_gets_one_sentence(aloop, ffnats):
    async def main():
        async with ffnats() as srv:
            for first in (b"CONNECT {}\r\nPING\r\n", b"PING\r\n", b"SUB > 1\r\n",
                          b"connect {\"verbose\":false}\r\n"):
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", srv.port), 5)
                writer.write(first)
                data = await asyncio.wait_for(reader.read(), 5)     # until the server closes
                writer.close()
                line = data[data.index(b"-ERR"):]
                assert line == ("-ERR 'this port speaks the fastflow native protocol, not NATS; "
                                "NATS clients use port {}'\r\n".format(srv.nats_port)).encode()
    run(aloop, main)


def test_native_client_at_a_nats_port_gets_one_sentence(aloop, ffnats, natsd):
    async def main():
        async with natsd() as ns, ffnats() as srv:
            for port in (srv.nats_port, ns.port):
                url = "fastflow://127.0.0.1:{}".format(port)
                with pytest.raises(ConnectionError, match="speaks the NATS protocol, not "
                                                          "fastflow's native protocol"):
                    await fc.connect(url, timeout=5)
    run(aloop, main)


# -- 6. lineage at the NATS door ---------------------------------------------------------------


@pytest.mark.parametrize("lineage", ["keep", "strip"])
def test_nats_lineage_switch(aloop, ffnats, natspy, lineage):
    async def main():
        async with ffnats(nats_lineage=lineage) as srv:
            got = []
            nc = await natspy.connect(srv.nats_url, connect_timeout=3, allow_reconnect=False)

            async def on_msg(msg):
                got.append(dict(msg.headers or {}))
            await nc.subscribe("l.>", cb=on_msg)
            await nc.flush(3)
            c = await fc.connect(srv.url)
            try:
                c.publish("l.a", b"x", ffhops=3, fftrace="0badc0de", ext="e")
                await c.flush()
                await wait_until(lambda: got, what="the event")
                h = got[0]
                assert h.get("ce-ext") == "e", h
                if lineage == "keep":
                    assert h.get("ce-ffhops") == "3" and "0badc0de" in h.get("ce-fftrace", "")
                else:
                    assert "ce-ffhops" not in h and "ce-fftrace" not in h, h
                # a NATS publisher's lineage headers: kept, or ignored at a stripping door
                seen = []
                c.subscribe("in.>", lambda e: seen.append(e))
                await c.flush()
                await nc.publish("in.a", b"y", headers={"ce-ffhops": "1000", "ce-ext": "e"})
                await nc.flush(3)
                if lineage == "strip":
                    await wait_until(lambda: seen, what="the NATS event")
                    assert seen[0].get("ffhops", 0) in (0, 1), seen[0].attributes()
                else:
                    await asyncio.sleep(0.2)
                    assert not seen     # 1000 hops: the loop breaker stops it
            finally:
                await c.close()
                await nc.close()
    run(aloop, main)


def test_nats_lineage_config_is_checked():
    from fastflow.server import ServerConfig
    from fastflow.server.config import ConfigError
    assert ServerConfig().nats_lineage == "keep"
    with pytest.raises(ConfigError, match="nats_lineage"):
        ServerConfig(nats_lineage="drop")


def test_header_block_never_writes_a_bad_name():
    from fastflow.server.nats import header_block

    class Stored:
        """An event as a store might hold one from before names were checked."""
        routing_subject = "x.y"

        def attributes(self):
            return {"id": "1", "source": "/s", "type": "t", "ext": "v",
                    "Bad Name\r\nX-Injected": "v", "a:b": "v", "nul\0": "v"}

    block = header_block(Stored())
    assert block == b"NATS/1.0\r\nce-id: 1\r\nce-source: /s\r\nce-type: t\r\nce-ext: v\r\n\r\n"


def _rest_cases():
    enc = msgspec.msgpack.encode
    cases = [enc({"a": 2**31 - 1}), enc({"a": 2**31}), enc({"a": -2**31}), enc({"a": -2**31 - 1}),
             enc({"a": 2**40}), enc({"a": "é"}), enc({"a": "x" * 40}), enc({"a": "x" * 300}),
             enc({"a": "x" * 70000}), enc({"a": b"\x00" * 300}), enc({"a": None}),
             enc({"a": 1.5}), enc({"a": {"b": 1}}), enc({"a": [1]}), enc({"a": True}),
             enc({"type": "t"}), enc({"ffhops": 1}), enc({"data": "d"}), enc({"A": 1}),
             enc({"a-b": 1}), enc({"": 1}), enc({1: 1}), enc({"n%d" % i: i for i in range(20)}),
             enc({}), b"\x81\xa1a\xa2\xff\xfe", b"\x81\xa1a", b"\x81\xa1a\xcd\x01",
             b"\x82\xa1a\x01", b"\x81\xa1a\x01\x00", b"\x91\x01", b"\xc0", b"\xde\x00\x01\xa1a\x01",
             b"\x81\xd9\x01a\x01", b"\x81\xa1a\xc4\x05abc"]
    return cases


@pytest.mark.parametrize("block", _rest_cases())
def test_attribute_block_rule_is_one_rule(block):
    """The engine takes an attribute block exactly when the attribute
    rules do (the compiled core walks the common ones in C)."""
    from fastflow import _attrs
    try:
        _attrs.check_rest("s.a", block)
        want = None
    except EventError as exc:
        want = str(exc)
    flow = Flow()
    try:
        rec = with_rest(Event("s.a", b"x", ext="x"), block)
        if want is None:
            flow.publish_record("s.a", rec)
        else:
            with pytest.raises(EventError) as info:
                flow.publish_record("s.a", rec)
            assert str(info.value) == want
    finally:
        flow.close()


def test_cloudevents_encoders_can_strip_lineage():
    """to_json / to_json_batch / to_http keep ffhops and fftrace by default
    (between engines) and leave them out with lineage=False."""
    import orjson

    from fastflow import Event
    from fastflow.event import to_http, to_http_batch, to_json, to_json_batch

    e = Event("a.b", b"{}", type="t", source="s", ffhops=2, fftrace="0011aabb",
              datacontenttype="application/json", region="eu")
    assert {"ffhops", "fftrace", "region"} <= set(orjson.loads(to_json(e)))
    kept = orjson.loads(to_json(e, lineage=False))
    assert "ffhops" not in kept and "fftrace" not in kept and kept["region"] == "eu"
    for doc in orjson.loads(to_json_batch([e, e], lineage=False)):
        assert "ffhops" not in doc and "fftrace" not in doc
    headers, _ = to_http(e)
    assert headers["ce-ffhops"] == "2" and headers["ce-fftrace"] == "0011aabb"
    headers, _ = to_http(e, lineage=False)
    assert "ce-ffhops" not in headers and "ce-fftrace" not in headers
    assert headers["ce-region"] == "eu"
    _, body = to_http(e, "structured", lineage=False)
    assert "ffhops" not in orjson.loads(body)
    _, body = to_http_batch([e], lineage=False)
    assert "fftrace" not in orjson.loads(body)[0]
