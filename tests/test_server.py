"""``fastflow serve`` end to end over 127.0.0.1 (docs/server.md,
docs/protocol.md): the handshake and the protocol on raw sockets, slow
consumers, permissions and authentication, TLS, limits, the monitoring
endpoints, the SIGTERM drain of a ``python -m fastflow serve`` subprocess
(no acknowledged event lost across the restart) and random bytes and
garbled frames thrown at a live server.

Async tests run under the standard loop and uvloop (``aloop``); in-process
servers (``ffserver``) run in the test's loop, so anything that reaches
its exception handler fails the test; every wait is bounded.
"""

import asyncio
import json
import random
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest

import fastflow
import fastflow.client as fc
from fastflow import Flow
from fastflow.server import hash_password

from helpers import RawConnection, wait_until

SCALE = 1 if fastflow.COMPILED else 4
HEAD = struct.Struct("<IBBHIHH")
OP = {"INFO": 1, "CONNECT": 2, "PUB": 3, "PUBACK": 4, "PUB_BATCH": 5, "SUB": 6, "UNSUB": 7,
      "MSG": 8, "PING": 9, "PONG": 10, "OK": 11, "ERR": 12, "STREAM": 13, "REPLAY": 14,
      "CONSUMER": 15, "ACK": 16}
OP_NAME = {v: k for k, v in OP.items()}
FL_ACK = 1
FL_CLOSE = 1
FL_NO_RESPONDERS = 2
DOC_CODES = {400, 401, 403, 404, 408, 409, 413, 422, 429, 431, 503, 505, 507}


def frame(op, flags=0, fid=0, subject=b"", reply=b"", body=b""):
    s = subject.encode() if isinstance(subject, str) else subject
    r = reply.encode() if isinstance(reply, str) else reply
    return HEAD.pack(12 + len(s) + len(r) + len(body), 1, op, flags, fid, len(s), len(r)) + s + r \
        + body


def record(subject="x", data=b"", **attrs):
    return fastflow.Event(subject, data, **attrs).encode()


class Frame:
    __slots__ = ("op", "flags", "id", "subject", "reply", "body")

    def __init__(self, op, flags, fid, subject, reply, body):
        self.op, self.flags, self.id = op, flags, fid
        self.subject, self.reply, self.body = subject, reply, body

    @property
    def name(self):
        return OP_NAME.get(self.op, self.op)

    @property
    def code(self):
        return struct.unpack_from("<H", self.body)[0] if self.op == OP["ERR"] else None

    @property
    def message(self):
        return self.body[2:].decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        if self.op == OP["ERR"]:
            return "<ERR {} {!r} id={} flags={}>".format(self.code, self.message, self.id,
                                                         self.flags)
        return "<{} id={} {!r} {!r} {} bytes>".format(self.name, self.id, self.subject,
                                                      self.reply, len(self.body))


class Raw(RawConnection):
    """A raw TCP connection speaking the protocol by hand (frames parsed
    here with struct, independently of the codec)."""

    what = "frame"

    def _cut(self):
        if len(self.buf) < 16:
            return None
        size = struct.unpack_from("<I", self.buf)[0]
        if len(self.buf) < size + 4:
            return None
        _, _v, op, flags, fid, sn, rn = HEAD.unpack_from(self.buf)
        f = self.buf[:size + 4]
        self.buf = self.buf[size + 4:]
        return Frame(op, flags, fid, f[16:16 + sn].decode(), f[16 + sn:16 + sn + rn].decode(),
                     f[16 + sn + rn:])

    async def expect(self, op, timeout=5.0):
        f = await self.next(timeout)
        assert f is not None and f.op == OP[op], "expected {}, got {!r}".format(op, f)
        return f

    async def until_closed(self, timeout=5.0):
        """Every frame until the server closes the connection."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            f = await self.next(max(0.001, deadline - time.monotonic()))
            if f is None:
                return out
            out.append(f)

    async def handshake(self, **connect):
        self.info = (await self.expect("INFO")).json()
        await self.send(frame(OP["CONNECT"], 0, 1, body=json.dumps(connect).encode()))
        ok = await self.expect("OK")
        assert ok.id == 1
        return ok.json()

    async def subscribe(self, subject, sid=1):
        """SUB ``subject`` as ``sid``; returns once the server's PONG says it has it."""
        await self.send(frame(OP["SUB"], 0, sid, subject) + frame(OP["PING"]))
        await self.expect("PONG")


async def http(port, path, method="GET"):
    """(status, headers, body) of one HTTP/1.1 request to the monitor, on a
    connection of its own (``Connection: close``: the monitor keeps
    connections open otherwise)."""
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        w.write("{} {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".format(
            method, path).encode())
        data = await asyncio.wait_for(r.read(), 5)
    finally:
        w.close()
        await w.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


async def http_json(port, path):
    status, headers, body = await http(port, path)
    assert headers["content-type"] == "application/json", headers
    return status, json.loads(body)


# -- the protocol on a raw socket ----------------------------------------------------------


def test_handshake_and_frames_on_a_raw_socket(aloop, ffserver):
    async def main():
        async with ffserver(name="raw-test") as srv:
            raw = await Raw.open(srv.port)
            try:
                # PING before CONNECT is fine
                info = (await raw.expect("INFO")).json()
                assert info["proto"] == 1 and info["server_name"] == "raw-test"
                assert info["server_id"] == srv.id and info["version"] == fastflow.__version__
                assert info["max_payload"] == 1 << 20 and info["max_control"] == 65536
                assert info["auth_required"] is False and info["tls_required"] is False
                assert info["max_subscriptions"] == 65536 and info["ping_interval"] == 30.0
                await raw.send(frame(OP["PING"], 0, 5))
                assert (await raw.expect("PONG")).id == 5
                # CONNECT, then frames right after it in the same write
                await raw.send(frame(OP["CONNECT"], 0, 1, body=json.dumps(
                    {"name": "raw", "lang": "test", "verbose": True}).encode())
                    + frame(OP["SUB"], 0, 7, "raw.>") + frame(OP["SUB"], 0, 8, "raw.x", "q1")
                    + frame(OP["PUB"], 0, 9, "raw.x", "", record("raw.x", b"hi")))
                ok = await raw.expect("OK")
                assert ok.json()["client_id"] == info["client_id"]
                assert [(await raw.expect("OK")).id for _ in range(2)] == [7, 8]
                got = [await raw.next() for _ in range(3)]      # OK for the PUB, two MSGs
                assert sorted((f.name, f.id) for f in got) == [("MSG", 7), ("MSG", 8), ("OK", 9)]
                msg = [f for f in got if f.op == OP["MSG"]][0]
                assert msg.subject == "raw.x"
                assert fastflow.Event.decode(msg.subject, msg.body).data == b"hi"
                # a SUB id in use: 409, kept
                await raw.send(frame(OP["SUB"], 0, 7, "other"))
                err = await raw.expect("ERR")
                assert (err.code, err.id, err.flags) == (409, 7, 0)
                # UNSUB, then publishing reaches only sid 8
                await raw.send(frame(OP["UNSUB"], 0, 7) + frame(OP["PUB"], 0, 10, "raw.x", "",
                                                                record("raw.x", b"2")))
                got = [await raw.next() for _ in range(3)]
                assert [(f.name, f.id) for f in got] == [("OK", 7), ("MSG", 8), ("OK", 10)]
                # a request nobody answers: MSG with NO_RESPONDERS to the reply subject
                await raw.send(frame(OP["SUB"], 0, 20, "_INBOX.raw.*")
                               + frame(OP["PUB"], 0, 21, "nobody", "_INBOX.raw.1",
                                       record("nobody")))
                got = [await raw.next() for _ in range(3)]
                nr = [f for f in got if f.op == OP["MSG"]][0]
                assert (nr.id, nr.flags, nr.subject, nr.body) == (20, FL_NO_RESPONDERS,
                                                                  "_INBOX.raw.1", b"")
                # PUB with ACK: PUBACK (seq 0, no stream)
                await raw.send(frame(OP["PUB"], FL_ACK, 30, "raw.none", "", record()))
                pa = await raw.expect("PUBACK")
                assert pa.id == 30 and pa.body == struct.pack("<Q", 0)
                # bad request arguments: ERR, the connection stays
                await raw.send(frame(OP["STREAM"], 0, 31, "add", "", b"{not json")
                               + frame(OP["STREAM"], 0, 32, "explode", "", b"{}")
                               + frame(OP["ACK"], 0, 33, "$ACK.x.y.1", "", b"\x01")
                               + frame(OP["ACK"], 0, 34, "not.an.ack", "", b"\x01")
                               + frame(OP["CONNECT"], 0, 35, body=b"{}")
                               + frame(OP["PING"], 0, 36))
                errs = [await raw.next() for _ in range(5)]
                assert [(e.code, e.id) for e in errs] == [(400, 31), (400, 32), (404, 33),
                                                          (400, 34), (400, 35)]
                assert all(e.flags == 0 for e in errs)
                assert (await raw.expect("PONG")).id == 36
                # an op only the server sends: ERR 400 with CLOSE, then closed
                await raw.send(frame(OP["MSG"], 0, 40, "x", "", record()))
                rest = await raw.until_closed()
                assert [(f.code, f.flags) for f in rest] == [(400, FL_CLOSE)]
                assert "unexpected MSG frame from a client" in rest[0].message
            finally:
                raw.close()
            # a frame other than CONNECT first: 401 and closed
            raw = await Raw.open(srv.port)
            try:
                await raw.expect("INFO")
                await raw.send(frame(OP["SUB"], 0, 3, "x"))
                rest = await raw.until_closed()
                assert [(f.code, f.flags, f.id) for f in rest] == [(401, FL_CLOSE, 3)]
            finally:
                raw.close()
            await wait_until(lambda: not srv.conns)
            st = srv.stats()
            assert st["auth_failures"] == 1 and st["protocol_errors"] == 1

    aloop(main)


# -- slow consumers ------------------------------------------------------------------------------


def test_slow_consumer_is_cut_advised_and_counted(aloop, ffserver):
    async def main():
        f = Flow()
        advisories = []
        f.subscribe("$SYS.advisory.slow_consumer", advisories.append)
        try:
            # (max_pending well above one socket read (256 KiB) of a publisher's
            # frames: see test_a_fast_subscriber_is_not_cut_by_one_big_read)
            async with ffserver(flow=f, monitor=True, max_payload="64KiB",
                                max_pending="1MiB") as srv:
                slow = await Raw.open(srv.port, rcvbuf=4096)
                try:
                    await slow.handshake(name="never-reads")
                    cid = slow.info["client_id"]
                    await slow.subscribe("flood.>")
                    async with await fc.connect(srv.url, name="publisher") as pub, \
                            await fc.connect(srv.url, name="reader") as reader:
                        got = []
                        reader.subscribe("flood.>", lambda s, r, d: got.append(len(d)), raw=True)
                        await reader.flush()
                        chunk = b"x" * 60000
                        n = 0
                        # 240 KB at a time, each taken by the reader before the next (so
                        # that only the subscriber that never reads falls behind)
                        while not advisories and n < 2000:      # at most 120 MB
                            for _ in range(4):
                                pub.publish("flood.data", chunk)
                            n += 4
                            await wait_until(lambda: len(got) == n or advisories, 10,
                                             "the reader")
                        await wait_until(lambda: advisories, 10, "the advisory")
                        (adv,) = advisories
                        body = json.loads(adv.data)
                        assert adv.type == "io.fastflow.advisory.slow_consumer"
                        assert body["client_id"] == cid and body["name"] == "never-reads"
                        assert body["subscriptions"] == ["flood.>"]
                        assert body["max_pending"] == 1 << 20
                        assert body["pending_bytes"] > 0 and "max_pending" in body["reason"]
                        # the cut connection ends with ERR 503 (CLOSE)
                        frames = await slow.until_closed(10)
                        assert frames and frames[-1].code == 503, frames[-3:]
                        assert frames[-1].flags == FL_CLOSE
                        assert frames[-1].message.startswith("slow consumer: ")
                        assert all(fr.op == OP["MSG"] for fr in frames[:-1])
                        # the publisher and the other subscriber carry on
                        await pub.flush()
                        await wait_until(lambda: len(got) == n, 10, "the reader")
                        assert pub.is_connected and reader.is_connected
                        status, varz = await http_json(srv.monitor_port, "/varz")
                        assert varz["slow_consumers"] == 1 and varz["connections"] == 2
                        assert srv.stats()["slow_consumers"] == 1
                finally:
                    slow.close()
        finally:
            f.close()

    aloop(main)


def test_a_fast_subscriber_is_not_cut_by_one_big_read(aloop, ffserver):
    async def main():
        async with ffserver(max_payload="64KiB", max_pending=200_000) as srv:
            async with await fc.connect(srv.url) as pub, \
                    await fc.connect(srv.url, error_callback=lambda e: None) as reader:
                got = []
                reader.subscribe("f.>", lambda s, r, d: got.append(len(d)), raw=True)
                await reader.flush()
                for _ in range(20):
                    pub.publish("f.x", b"x" * 60000)     # 1.2 MB in one write
                await pub.flush()
                await wait_until(lambda: len(got) == 20 or srv.stats()["slow_consumers"], 5)
                await asyncio.sleep(0.1)
                assert srv.stats()["slow_consumers"] == 0
                assert len(got) == 20 and reader.stats["reconnects"] == 0

    aloop(main)


def test_stalled_subscriber_pauses_publishers_then_is_cut(aloop, ffserver):
    """A subscriber's socket above write_high_water pauses the publishers;
    after stall_timeout the subscriber still above it is cut and they resume."""
    async def main():
        f = Flow()
        advisories = []
        f.subscribe("$SYS.advisory.slow_consumer", advisories.append)
        try:
            async with ffserver(flow=f, max_payload="64KiB", max_pending="64MiB",
                                write_high_water="256KiB", write_low_water="64KiB",
                                stall_timeout=0.3) as srv:
                stuck = await Raw.open(srv.port, rcvbuf=4096)
                try:
                    await stuck.handshake(name="stuck")
                    await stuck.subscribe("st.>")
                    async with await fc.connect(srv.url, name="pub") as pub, \
                            await fc.connect(srv.url, name="reader") as reader:
                        got = []
                        reader.subscribe("st.>", lambda s, r, d: got.append(len(d)), raw=True)
                        await reader.flush()
                        n = 0
                        paused_seen = False
                        t_stall = None
                        while not advisories and n < 2000:
                            for _ in range(4):
                                pub.publish("st.data", b"s" * 60000)
                            n += 4
                            while len(got) < n and not advisories:
                                if srv.stats()["paused_publishers"]:
                                    paused_seen = True
                                    t_stall = t_stall or time.monotonic()
                                await asyncio.sleep(0.002)
                        await wait_until(lambda: advisories, 10, "the advisory")
                        t_cut = time.monotonic()
                        body = json.loads(advisories[0].data)
                        assert body["name"] == "stuck"
                        assert body["reason"] == ("its output stayed above the high-water mark "
                                                  "while publishers waited 0.3 s")
                        assert paused_seen and t_cut - t_stall >= 0.2
                        st = srv.stats()
                        assert st["stalls"] >= 1 and st["slow_consumers"] == 1
                        # the publishers resumed: everything reaches the reader
                        await pub.flush()
                        await wait_until(lambda: len(got) == n, 10, "the reader")
                        assert srv.stats()["paused_publishers"] == 0
                        assert pub.is_connected and reader.is_connected
                        frames = await stuck.until_closed(10)
                        assert frames[-1].code == 503 and frames[-1].flags == FL_CLOSE
                finally:
                    stuck.close()
        finally:
            f.close()

    aloop(main)


def test_idle_connections_are_pinged_and_stale_ones_closed(aloop, ffserver):
    async def main():
        async with ffserver(ping_interval=0.5, max_pings_out=1) as srv:
            async with await fc.connect(srv.url, ping_interval=0, name="answers") as c:
                mute = await Raw.open(srv.port)
                polite = await Raw.open(srv.port)
                try:
                    await mute.handshake(name="mute")
                    await polite.handshake(name="polite")
                    t0 = time.monotonic()
                    ping = await polite.expect("PING", 3)
                    await polite.send(frame(OP["PONG"], 0, ping.id))
                    frames = await mute.until_closed(5)
                    assert [f.name for f in frames] == ["PING", "ERR"]
                    assert (frames[1].code, frames[1].flags) == (408, FL_CLOSE)
                    assert frames[1].message == "stale connection: 1 PINGs without a PONG"
                    assert time.monotonic() - t0 < 4
                    # the client answers the server's PINGs by itself
                    assert c.is_connected and await c.publish_ack("p", b"") == (0, None)
                    names = sorted(x.name for x in srv.conns.values())
                    assert names == ["answers", "polite"]
                finally:
                    mute.close()
                    polite.close()

    aloop(main)


def test_frames_sent_with_a_slow_connect_wait_for_it(aloop, ffserver):
    """CONNECT with a password runs scrypt in a thread: the frames sent right
    after it are handled once it succeeded, in order."""
    async def main():
        async with ffserver(users=[{"user": "u", "password": hash_password("pw")}]) as srv:
            raw = await Raw.open(srv.port)
            try:
                await raw.expect("INFO")
                await raw.send(
                    frame(OP["CONNECT"], 0, 1, body=b'{"user": "u", "password": "pw"}')
                    + frame(OP["SUB"], 0, 5, "early.>")
                    + frame(OP["PUB"], 0, 6, "early.x", "", record("early.x", b"e"))
                    + frame(OP["PUB"], FL_ACK, 7, "early.y", "", record("early.y", b"f"))
                    + frame(OP["PING"], 0, 8))
                got = [await raw.next(5) for _ in range(5)]
                assert [(f.name, f.id) for f in got] == [
                    ("OK", 1), ("MSG", 5), ("MSG", 5), ("PUBACK", 7), ("PONG", 8)]
                assert got[0].json()["user"] == "u"
                assert [fastflow.Event.decode(f.subject, f.body).data for f in got[1:3]] == [
                    b"e", b"f"]
            finally:
                raw.close()

    aloop(main)


# -- authentication and permissions ------------------------------------------------------------

ALICE = {
    "publish": {"allow": ["orders.>"], "deny": ["orders.internal.>"]},
    "subscribe": {"allow": ["orders.>", "_INBOX.>"], "deny": ["orders.secret.>"],
                  "queue_allow": ["billing", "audit"]},
    "allow_responses": True,
    "streams": "read",
}


def auth_settings():
    return dict(
        token="admin-token",
        tokens=[{"name": "ci", "token": "ci-token",
                 "permissions": {"publish": ["ci.>"], "subscribe": ["ci.>"], "streams": "none"}}],
        users=[{"user": "alice", "password": hash_password("alice-pw"), "permissions": ALICE},
               {"user": "ops", "password": "ops-pw"}])


def test_permissions_allow_deny_queue_and_streams(aloop, ffserver):
    async def main():
        async with ffserver(**auth_settings()) as srv:
            url = srv.url
            errors = []
            async with await fc.connect(url, token="admin-token") as admin, \
                    await fc.connect(url, user="alice", password="alice-pw",
                                     error_callback=errors.append) as alice, \
                    await fc.connect(url.replace("://", "://ci-token@")) as ci:
                assert alice.server_info["user"] == "alice"
                assert admin.server_info["user"] == "token:token"
                assert ci.server_info["user"] == "token:ci"
                spy = admin.subscribe("orders.>")
                inbox_spy = admin.subscribe("_INBOX.>")
                await admin.add_stream("ORD", ["orders.>"])
                await admin.flush()

                # publish: allow list, deny wins, allow_responses only answers
                # requests alice received (tests/test_hardening_auth.py)
                alice.publish("orders.eu", b"ok")
                alice.publish("other.x", b"no")
                alice.publish("orders.internal.x", b"no")
                alice.publish("_INBOX.someone.1", b"not a response")
                await alice.flush()
                assert [e.routing_subject for e in [await spy.next(2)]] == ["orders.eu"]
                await wait_until(lambda: len(errors) == 3)
                assert inbox_spy.pending == 0
                assert all(isinstance(e, fc.PermissionDeniedError) and e.code == 403
                           for e in errors)
                assert [e.message for e in errors] == [
                    "permission denied: publish to 'other.x'",
                    "permission denied: publish to 'orders.internal.x'",
                    "permission denied: publish to '_INBOX.someone.1'"]
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.publish_ack("other.y", b"")
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.publish_ack("orders.internal.y", b"")
                assert await alice.publish_ack("orders.acked", b"") == (2, "ORD")
                assert alice.is_connected          # refusals keep the connection

                # subscribe: inside an allow pattern, overlapping no deny pattern
                errors.clear()
                refused = [alice.subscribe(p) for p in ("orders.>", "other.>", ">",
                                                        "orders.secret.x", "$SYS.>")]
                allowed = alice.subscribe("orders.eu.>")
                q_ok = alice.subscribe("orders.eu.q", queue="billing")
                q_no = alice.subscribe("orders.eu.q", queue="ops")
                await alice.flush()
                await wait_until(lambda: len(errors) == 6)
                assert all(s.closed for s in refused + [q_no])
                assert not allowed.closed and not q_ok.closed
                assert sorted(e.code for e in errors) == [403] * 6
                with pytest.raises(fc.PermissionDeniedError) as ei:
                    await refused[0].next(1)
                assert "overlaps the denied 'orders.secret.>'" in str(ei.value)
                admin.publish("orders.eu.q", b"q")
                admin.publish("orders.secret.x", b"s")
                await admin.flush()
                assert (await allowed.next(2)).data == b"q"
                assert (await q_ok.next(2)).data == b"q"

                # requests: alice may request and be answered on her inbox
                admin.subscribe("orders.svc", lambda ev, r: admin.respond(r, b"answer"),
                                with_reply=True)
                await admin.flush()
                assert (await alice.request("orders.svc", b"?", timeout=2)).data == b"answer"

                # streams: "read" may look and replay what it may subscribe to
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.add_stream("MINE", ["orders.mine.>"])
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.purge_stream("ORD")
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.stream_info("ORD")                  # orders.secret.> inside
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.replay("ORD").list()                # orders.secret.> inside
                evs = await alice.replay("ORD", filter="orders.eu").list()
                assert [e.data for e in evs] == [b"ok"]
                with pytest.raises(fc.PermissionDeniedError):
                    await alice.add_consumer("ORD", "c1")
                await alice.add_consumer("ORD", "c2", filter="orders.eu.>")

                # a token with permissions of its own
                ci.publish("ci.build", b"1")
                with pytest.raises(fc.PermissionDeniedError):
                    await ci.publish_ack("orders.eu", b"")
                with pytest.raises(fc.PermissionDeniedError):
                    await ci.streams()
                # ops: a user without permissions of its own gets the defaults (all)
                async with await fc.connect(url, user="ops", password="ops-pw") as ops:
                    assert await ops.publish_ack("anything.at.all", b"") == (0, None)
                    await ops.add_stream("OPS", ["ops.>"])
                assert srv.stats()["permission_denied"] >= 10

    aloop(main)


def test_request_without_inbox_permission_fails_at_once(aloop, ffserver):
    async def main():
        async with ffserver(token="adm", users=[{"user": "u", "password": "pw", "permissions": {
                "publish": ["svc.>"], "subscribe": ["svc.>"]}}]) as srv:
            async with await fc.connect(srv.url, token="adm") as adm, \
                    await fc.connect(srv.url, user="u", password="pw",
                                     error_callback=lambda e: None) as u:
                adm.subscribe("svc.x", lambda ev, r: adm.respond(r, b"answer"), with_reply=True)
                await adm.flush()
                t0 = time.monotonic()
                with pytest.raises(fc.PermissionDeniedError):
                    await u.request("svc.x", b"?", timeout=1.0)
                assert time.monotonic() - t0 < 0.5

    aloop(main)


def test_wrong_credentials_are_refused_without_a_reconnect_loop(aloop, ffserver):
    async def main():
        async with ffserver(**auth_settings()) as srv:
            for kw, what in (({"user": "alice", "password": "wrong"}, "authentication failed"),
                             ({"user": "nobody", "password": "x"}, "authentication failed"),
                             ({"token": "wrong-token"}, "authentication failed"),
                             ({}, "authentication required")):
                t0 = time.monotonic()
                with pytest.raises(fc.AuthenticationError) as ei:
                    await fc.connect(srv.url, timeout=5, **kw)
                assert ei.value.code == 401 and what in ei.value.message
                assert time.monotonic() - t0 < 3
            await asyncio.sleep(0.3)
            assert srv.stats()["auth_failures"] == 4
            assert not srv.conns

        # a client whose password stops working at a restart closes instead of retrying
        closed = []
        async with ffserver(users=[{"user": "u", "password": "old"}]) as srv:
            port = srv.port
            c = await fc.connect(srv.url, user="u", password="old", reconnect_wait=0.02,
                                 reconnect_wait_max=0.05,
                                 closed_callback=lambda: closed.append(True),
                                 error_callback=lambda e: None)
        try:
            await wait_until(lambda: c.state == "reconnecting")
            async with ffserver(port=port, users=[{"user": "u", "password": "new"}]) as srv2:
                await wait_until(lambda: c.is_closed, 5, "the client to give up")
                await asyncio.sleep(0.3)
                assert srv2.stats()["auth_failures"] == 1      # one try, no loop
                assert closed == [True]
                assert srv2.stats()["total_connections"] == 1
        finally:
            await c.close()

    aloop(main)


def test_auth_timeout_and_frames_before_connect(aloop, ffserver):
    async def main():
        async with ffserver(auth_timeout=0.3, token="t") as srv:
            raw = await Raw.open(srv.port)
            try:
                info = (await raw.expect("INFO")).json()
                assert info["auth_required"] is True
                t0 = time.monotonic()
                rest = await raw.until_closed(5)
                assert 0.2 < time.monotonic() - t0 < 3
                assert [(f.code, f.flags) for f in rest] == [(408, FL_CLOSE)]
                assert rest[0].message == "authentication timeout: no CONNECT within 0.3 s"
            finally:
                raw.close()
            raw = await Raw.open(srv.port)
            try:
                await raw.expect("INFO")
                await raw.send(frame(OP["CONNECT"], 0, 4, body=b'{"token": "nope"}'))
                rest = await raw.until_closed(5)
                assert [(f.code, f.flags, f.id) for f in rest] == [(401, FL_CLOSE, 4)]
            finally:
                raw.close()
            assert srv.stats()["auth_failures"] == 2

    aloop(main)


# -- TLS --------------------------------------------------------------------------------------


def client_tls(tls_files, cert=False):
    ctx = ssl.create_default_context(cafile=tls_files.ca)
    if cert:
        ctx.load_cert_chain(tls_files.client_cert, tls_files.client_key)
    return ctx


def test_tls_clients_work_and_plaintext_is_refused(aloop, ffserver, tls_files):
    async def main():
        async with ffserver(monitor=True, tls_cert=tls_files.cert, tls_key=tls_files.key) as srv:
            url = "fastflows://127.0.0.1:{}".format(srv.port)
            async with await fc.connect(url, tls=client_tls(tls_files), name="tls-a") as a, \
                    await fc.connect(srv.url, tls=client_tls(tls_files)) as b:
                assert a.info["tls_required"] is True
                sub = b.subscribe("secure.>")
                await b.flush()
                a.publish("secure.x", b"\x00secret", type="t")
                ev = await sub.next(5)
                assert (ev.data, ev.type) == (b"\x00secret", "t")
                _status, connz = await http_json(srv.monitor_port, "/connz")
                tls = {c["name"]: c["tls"] for c in connz["connections"]}
                assert tls["tls-a"]["version"] in ("TLSv1.2", "TLSv1.3")
            # the default context does not trust the test CA
            with pytest.raises(fc.ConnectError):
                await fc.connect(url, timeout=2)
            # a plaintext client never sees INFO
            with pytest.raises(fc.ConnectError):
                await fc.connect(srv.url, timeout=0.5)
            raw = await Raw.open(srv.port)
            try:
                await raw.send(frame(OP["CONNECT"], 0, 1, body=b"{}") + frame(OP["PING"]))
                try:
                    await raw.until_closed(5)
                except (UnicodeDecodeError, struct.error, AssertionError):
                    pass                                    # a TLS alert is not a frame
                assert b'"server_id"' not in raw.buf
                assert raw.eof
            finally:
                raw.close()
            await wait_until(lambda: not srv.conns)

    aloop(main)


def test_tls_client_certificates(aloop, ffserver, tls_files):
    async def main():
        async with ffserver(monitor=True, tls_cert=tls_files.cert, tls_key=tls_files.key,
                            tls_ca=tls_files.ca, tls_verify=True) as srv:
            url = "fastflows://127.0.0.1:{}".format(srv.port)
            async with await fc.connect(url, tls=client_tls(tls_files, cert=True),
                                        name="with-cert") as c:
                assert c.info["tls_verify"] is True
                assert await c.publish_ack("x", b"") == (0, None)
                _status, connz = await http_json(srv.monitor_port, "/connz")
                (conn,) = connz["connections"]
                assert conn["tls"]["subject"] == {"commonName": "test-client"}
            with pytest.raises(fc.ConnectError):
                await fc.connect(url, tls=client_tls(tls_files), timeout=1)
            await wait_until(lambda: not srv.conns)

    aloop(main)


# -- limits ----------------------------------------------------------------------------------------


def test_max_payload_and_max_control_close_the_connection(aloop, ffserver):
    async def main():
        async with ffserver(max_payload=1024) as srv:
            for data, code, message in (
                    (frame(OP["PUB"], 0, 5, "x", "", b"r" * 2000), 413,
                     "payload of 2000 bytes exceeds max_payload=1024"),
                    (frame(OP["STREAM"], 0, 5, "add", "", b" " * 66000), 431,
                     "control frame of 66003 bytes exceeds max_control=65536"),
                    (struct.pack("<I", 1 << 30), 413,
                     "frame of 1073741824 bytes exceeds max_payload=1024"),
                    (HEAD.pack(12, 7, OP["PING"], 0, 0, 0, 0), 505,
                     "unsupported protocol version 7"),
                    (HEAD.pack(12, 1, 99, 0, 0, 0, 0), 400, "unknown op 99")):
                raw = await Raw.open(srv.port)
                try:
                    await raw.handshake()
                    await raw.send(frame(OP["PING"], 0, 1) + data)
                    rest = await raw.until_closed()
                    assert [(f.name, f.code, f.flags) for f in rest] == [
                        ("PONG", None, 0), ("ERR", code, FL_CLOSE)]
                    assert rest[1].message == message
                finally:
                    raw.close()
            # the client refuses to send what the server would refuse
            async with await fc.connect(srv.url) as c:
                with pytest.raises(fc.PayloadTooLarge):
                    c.publish("x", b"x" * 1024)
            await wait_until(lambda: not srv.conns)
            assert srv.stats()["protocol_errors"] == 5

    aloop(main)


def test_max_subscriptions_and_max_connections(aloop, ffserver):
    async def main():
        async with ffserver(max_subscriptions=3, max_connections=2, monitor=True) as srv:
            errors = []
            async with await fc.connect(srv.url, error_callback=errors.append) as a, \
                    await fc.connect(srv.url) as b:
                subs = [a.subscribe("s.%d" % i) for i in range(4)]
                await a.flush()
                await wait_until(lambda: errors)
                (err,) = errors
                assert err.code == 429 and "maximum subscriptions per connection (3)" in str(err)
                assert [s.closed for s in subs] == [False, False, False, True]
                assert a.is_connected                   # kept
                await subs[0].unsubscribe()
                again = a.subscribe("s.again")          # room again
                await a.flush()
                b.publish("s.again", b"1")
                assert (await again.next(2)).data == b"1"
                # a third connection is refused before INFO
                with pytest.raises(fc.ConnectError):
                    await fc.connect(srv.url, timeout=0.5)
                raw = await Raw.open(srv.port)
                try:
                    rest = await raw.until_closed()
                    assert [(f.code, f.flags) for f in rest] == [(429, FL_CLOSE)]
                    assert rest[0].message == "maximum connections (2) reached"
                finally:
                    raw.close()
                _s, varz = await http_json(srv.monitor_port, "/varz")
                assert varz["rejected_connections"] == 2 and varz["connections"] == 2
                assert varz["limits"]["max_connections"] == 2
            # room again once they left
            await wait_until(lambda: not srv.conns)
            async with await fc.connect(srv.url) as c:
                assert c.is_connected

    aloop(main)


def test_connect_fails_at_once_with_the_servers_reason(aloop, ffserver):
    async def main():
        async with ffserver(max_connections=1) as srv:
            async with await fc.connect(srv.url):
                t0 = time.monotonic()
                with pytest.raises(fc.ConnectError) as ei:
                    await fc.connect(srv.url, timeout=1.5, error_callback=lambda e: None)
                assert "maximum connections (1) reached" in str(ei.value)
                assert time.monotonic() - t0 < 1.0

    aloop(main)


def test_pub_batch_bad_item_stops_the_batch(aloop, ffserver):
    async def main():
        async with ffserver(users=[{"user": "u", "password": "pw",
                                    "permissions": {"publish": ["ok.>"]}}]) as srv:
            errors = []
            async with await fc.connect(srv.url, user="u", password="pw",
                                        error_callback=errors.append) as c:
                sub = c.subscribe(">")
                await c.flush()
                # with ACK: stops at the bad item (ok.6 is not published)
                with pytest.raises(fc.PermissionDeniedError) as ei:
                    await c.publish_batch_ack(["ok.4", "no.5", "ok.6"], [b"4", b"5", b"6"])
                assert "PUB_BATCH item 1" in str(ei.value)
                assert (await sub.next(2)).routing_subject == "ok.4"
                # without ACK: the same
                c.publish_batch(["ok.1", "no.2", "ok.3"], [b"1", b"2", b"3"])
                await c.flush()
                await wait_until(lambda: errors)
                await asyncio.sleep(0.05)
                got = []
                while sub.pending:
                    got.append((await sub.next(1)).routing_subject)
                assert got == ["ok.1"]
                assert "PUB_BATCH item 1" in str(errors[0])

    aloop(main)


# -- monitoring -------------------------------------------------------------------------------

METRICS = [
    "fastflow_info", "fastflow_uptime_seconds", "fastflow_connections",
    "fastflow_connections_total", "fastflow_connections_rejected_total",
    "fastflow_subscriptions", "fastflow_in_msgs_total", "fastflow_in_bytes_total",
    "fastflow_out_msgs_total", "fastflow_out_bytes_total", "fastflow_pending_bytes",
    "fastflow_slow_consumers_total", "fastflow_stalls_total", "fastflow_paused_publishers",
    "fastflow_auth_failures_total", "fastflow_protocol_errors_total",
    "fastflow_permission_denied_total"] + [
    "fastflow_flow_{}_total".format(k) for k in (
        "published", "delivered", "stored", "dropped_no_interest", "dropped_slow_consumer",
        "dropped_loop", "rejected_by_stream", "advisories")] + [
    "fastflow_stream_events", "fastflow_stream_bytes", "fastflow_stream_last_seq",
    "fastflow_consumer_pending", "fastflow_consumer_lag"] + [
    "fastflow_matcher_{}".format(k) for k in (
        "subscriptions", "matches_total", "cache_hits_total", "cache_misses_total",
        "cache_entries", "cache_evictions_total", "memory_bytes")] + [
    "process_resident_memory_bytes", "process_cpu_seconds_total", "process_start_time_seconds"]

SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
                    r" (\S+)\Z")


def parse_metrics(text):
    """{family: {"help", "type", "samples": {labels tuple: value}}}; checks the
    Prometheus text format 0.0.4 line by line."""
    fams = {}
    current = None
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert name not in fams, "HELP twice for " + name
            assert help_
            fams[name] = {"help": help_, "type": None, "samples": {}}
            current = name
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name == current and fams[name]["type"] is None, line
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            fams[name]["type"] = kind
        else:
            m = SAMPLE.match(line)
            assert m, "not a sample line: {!r}".format(line)
            name = m.group(1)
            assert name == current and fams[name]["type"], "sample without HELP/TYPE: " + line
            labels = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                      m.group(3) or ""))
            fams[name]["samples"][labels] = float(m.group(4))
    for name, f in fams.items():
        if f["type"] == "counter":
            assert name.endswith("_total"), name
    return fams


def test_monitoring_endpoints(aloop, ffserver):
    async def main():
        async with ffserver(monitor=True, name="mon") as srv:
            port = srv.monitor_port
            async with await fc.connect(srv.url, name="mon-pub") as p, \
                    await fc.connect(srv.url, name="mon-sub") as s:
                sub = s.subscribe("m.>")
                s.subscribe("m.q", queue="g")
                await s.flush()
                await p.add_stream("MS", ["m.>"])
                await p.add_consumer("MS", "c")
                for i in range(7):
                    p.publish("m.%d" % i, b"x" * 10)
                await p.flush()
                for _ in range(7):
                    await sub.next(2)
                await s.flush()

                status, health = await http_json(port, "/healthz")
                assert (status, health) == (200, {"status": "ok"})
                status, varz = await http_json(port, "/varz")
                assert status == 200
                for k in ("server_id", "server_name", "version", "loop", "core", "uptime_seconds",
                          "connections", "total_connections", "rejected_connections", "in_msgs",
                          "in_bytes", "out_msgs", "out_bytes", "pending_bytes", "subscriptions",
                          "slow_consumers", "stalls", "paused_publishers", "auth_failures",
                          "protocol_errors", "permission_denied", "limits", "mem", "cpu_seconds",
                          "matcher", "flow", "streams"):
                    assert k in varz, k
                assert varz["server_name"] == "mon" and varz["server_id"] == srv.id
                assert varz["core"] == ("native" if fastflow.COMPILED else "pure-Python")
                assert varz["loop"].split()[0] == aloop.name
                assert (varz["connections"], varz["in_msgs"], varz["subscriptions"]) == (2, 7, 2)
                assert varz["out_msgs"] == 7 and varz["flow"]["published"] == 7
                assert varz["streams"]["MS"]["events"] == 7 and varz["mem"] > 0
                status, connz = await http_json(port, "/connz?subs=1&sort=in_msgs")
                assert connz["num_connections"] == 2
                assert [c["name"] for c in connz["connections"]] == ["mon-pub", "mon-sub"]
                cs = connz["connections"][1]
                assert sorted((x["subject"], x["queue"]) for x in cs["subs"]) == [
                    ("m.>", None), ("m.q", "g")]
                assert cs["out_msgs"] == 7 and cs["lang"] == "python"
                _s, one = await http_json(port, "/connz?limit=1&offset=1")
                assert [c["cid"] for c in one["connections"]] == [cs["cid"]]
                _s, streamz = await http_json(port, "/streamz")
                assert streamz["streams"]["MS"]["events"] == 7
                assert "c" in streamz["streams"]["MS"]["consumers"]

                status, headers, body = await http(port, "/metrics")
                assert status == 200 and headers["content-type"].startswith(
                    "text/plain; version=0.0.4")
                fams = parse_metrics(body.decode())
                missing = [m for m in METRICS if m not in fams]
                assert missing == []
                val = {n: f["samples"] for n, f in fams.items()}
                assert val["fastflow_connections"][()] == 2
                assert val["fastflow_in_msgs_total"][()] == 7
                assert val["fastflow_flow_published_total"][()] == 7
                assert val["fastflow_stream_events"][(("stream", "MS"),)] == 7
                assert val["fastflow_stream_last_seq"][(("stream", "MS"),)] == 7
                assert val["fastflow_consumer_lag"][(("stream", "MS"), ("consumer", "c"))] == 7
                (info_labels,) = val["fastflow_info"]
                assert dict(info_labels)["server_name"] == "mon"
                assert fams["fastflow_in_msgs_total"]["type"] == "counter"
                assert fams["fastflow_connections"]["type"] == "gauge"

                status, headers, body = await http(port, "/healthz", "HEAD")
                assert status == 200 and body == b"" and int(headers["content-length"]) > 0
                status, headers, _b = await http(port, "/healthz", "POST")
                assert status == 405 and headers["allow"] == "GET, HEAD"
                status, _h, _b = await http(port, "/nope")
                assert status == 404
                status, root = await http_json(port, "/")
                assert "/metrics" in root["endpoints"]

    aloop(main)


# -- the drain: SIGTERM mid-stream, restart, nothing acknowledged lost ---------------------------


def test_sigterm_drain_loses_no_acknowledged_event(aloop, ffproc, tmp_path):
    data_dir = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text(
        'data_dir = "{}"\nfsync = "interval"\n\n[limits]\ndrain_timeout = "5s"\n\n'
        '[[streams]]\nname = "DRAIN"\nsubjects = ["drain.>"]\nstorage = "file"\n'.format(
            data_dir))

    async def main():
        server = ffproc("-c", config, "--loop", aloop.name, monitor=True)
        await server.astart()
        acked = {}              # seq -> data
        failures = []
        c = await fc.connect(server.url, reconnect=False, timeout=5, name="drain-pub",
                             error_callback=lambda e: None)
        try:
            assert (await c.stream_info("DRAIN"))["storage"] == "file"
            await c.add_consumer("DRAIN", "durable")
            _s, health = await http_json(server.monitor_port, "/healthz")
            assert health == {"status": "ok"}

            async def worker(w):
                i = 0
                while True:
                    data = b"w%d-%d" % (w, i)
                    try:
                        seq, stream = await c.publish_ack("drain.%d" % w, data, timeout=10)
                    except (fc.ConnectionClosedError, asyncio.TimeoutError) as exc:
                        failures.append(exc)
                        return
                    assert stream == "DRAIN" and seq not in acked
                    acked[seq] = data
                    i += 1

            workers = [asyncio.ensure_future(worker(w)) for w in range(8)]
            await wait_until(lambda: len(acked) >= 300 // SCALE, 20, "acknowledgements")
            ds = await c.fetch("DRAIN", "durable", 10)
            for d in ds[:5]:
                await d.ack()
            await c.flush()
            server.send_signal(signal.SIGTERM)
            # the publishers keep going until the server closes their connection
            assert await server.await_exit(20) == 0
            await asyncio.wait_for(asyncio.gather(*workers), 10)
            assert len(failures) == 8
            log = server.log
            assert "SIGTERM received: draining" in log and "stopped after" in log
            n = len(acked)
        finally:
            await c.close()
            server.kill()

        await server.astart()
        try:
            assert "1 stream restored" in server.log
            async with await fc.connect(server.url, timeout=5) as c2:
                evs = await c2.replay("DRAIN").list()
                stored = {e.seq: e.data for e in evs}
                lost = {s: d for s, d in acked.items() if stored.get(s) != d}
                assert lost == {}, "acknowledged events lost: {}".format(sorted(lost)[:20])
                assert sorted(stored) == list(range(1, len(stored) + 1))
                assert len(stored) >= n
                # the durable consumer resumes after its ack floor
                ds = await c2.fetch("DRAIN", "durable", 3)
                assert [d.seq for d in ds] == [6, 7, 8]
                # the restarted server carries on from there
                assert await c2.publish_ack("drain.after", b"") == (len(stored) + 1, "DRAIN")
            assert await server.astop() == 0
        finally:
            server.kill()

    aloop(main)


def test_drain_waits_for_readers_and_a_second_signal_stops_at_once(aloop, ffproc, tmp_path):
    config = tmp_path / "server.toml"
    config.write_text('[limits]\ndrain_timeout = "60s"\nwrite_high_water = "64MiB"\n'
                      'write_low_water = "1MiB"\n')

    async def main():
        server = ffproc("-c", config, "--loop", aloop.name, monitor=True)
        await server.astart()
        stuck = await Raw.open(server.port, rcvbuf=4096)
        try:
            await stuck.handshake(name="stuck")
            await stuck.subscribe("big.>")
            async with await fc.connect(server.url, reconnect=False,
                                        error_callback=lambda e: None) as pub:
                for _ in range(16):                  # 16 MB the subscriber does not read
                    pub.publish("big.x", b"b" * 1_000_000)
                    await pub.wait_writable(5)
                await pub.flush()
                _s, connz = await http_json(server.monitor_port, "/connz?sort=pending_bytes")
                assert connz["connections"][0]["name"] == "stuck"
                assert connz["connections"][0]["pending_bytes"] > 0
                server.send_signal(signal.SIGTERM)
                # draining: no new connections, /healthz says so, the server waits
                await wait_until(lambda: "draining" in server.log, 10, "the drain")
                status, health = await http_json(server.monitor_port, "/healthz")
                assert (status, health) == (503, {"status": "stopping"})
                with pytest.raises(fc.ConnectError):
                    await fc.connect(server.url, timeout=1)
                await asyncio.sleep(0.3)
                assert server.proc.poll() is None           # still waiting for "stuck"
                t0 = time.monotonic()
                server.send_signal(signal.SIGTERM)          # again: stop now
                assert await server.await_exit(10) == 0
                assert time.monotonic() - t0 < 5
                log = server.log
                assert "SIGTERM received again: stopping now" in log
                assert "bytes not taken by clients" in log
        finally:
            stuck.close()
            server.kill()

    aloop(main)


def test_passwd_hashes_work_for_serve(ffproc):
    r = subprocess.run([sys.executable, "-m", "fastflow", "passwd", "--stdin"], input="s3cret\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    stored = r.stdout.strip()
    assert re.fullmatch(r"\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+", stored)
    from fastflow.server import verify_password
    assert verify_password("s3cret", stored) and not verify_password("s3cre", stored)
    server = ffproc("--user", "u", "--password", stored).start()
    try:
        async def main():
            async with await fc.connect(server.url, user="u", password="s3cret") as c:
                assert c.server_info["user"] == "u"
            with pytest.raises(fc.AuthenticationError):
                await fc.connect(server.url, user="u", password=stored)
        asyncio.run(main())
        assert server.stop() == 0
        assert "is not hashed" not in server.log
    finally:
        server.kill()


def test_serve_exit_statuses(ffproc, tmp_path, free_port):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "fastflow", "serve", "--monitor-port", "0"]
                              + [str(a) for a in args], capture_output=True, text=True,
                              timeout=30)

    # 2: bad settings, naming the setting
    r = serve("--port", free_port(), "--max-payload", "12XB")
    assert r.returncode == 2 and "max_payload" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmax_paylod = "1MiB"\n')
    r = serve("-c", bad)
    assert r.returncode == 2 and "max_paylod" in r.stderr
    # 1: cannot start (the port is taken)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = serve("--port", taken.getsockname()[1])
    assert r.returncode == 1 and "cannot start" in r.stderr
    # 2: a config stream that differs from the one restored from the data dir
    data = tmp_path / "d"
    first = ffproc("--data-dir", data).start()
    cfg = tmp_path / "s.toml"
    cfg.write_text('[[streams]]\nname = "S"\nsubjects = ["s.>"]\nstorage = "file"\n')
    assert first.stop() == 0
    first = ffproc("--data-dir", data, "-c", cfg).start()
    assert first.stop() == 0
    cfg.write_text('[[streams]]\nname = "S"\nsubjects = ["other.>"]\nstorage = "file"\n')
    r = serve("--port", free_port(), "--data-dir", data, "-c", cfg)
    assert r.returncode == 2 and "'S'" in r.stderr and "restored" in r.stderr


# -- a live server under random bytes and garbled frames ----------------------------------------


def fuzz_inputs(rnd, n):
    """``n`` (handshake?, bytes) cases: random bytes, frames with random
    bodies and arguments, truncated and garbled frame streams."""
    subjects = ["a", "a.b", "fz.>", "fz.*", "", "a..b", "$SYS.x", "_INBOX.x.1", "é", "*"]
    jsons = [b"", b"{}", b"[]", b"null", b"{bad", b'"s"', b"1e400"]
    keys = ["name", "subjects", "stream", "retention", "storage", "start", "seq", "time",
            "filter", "limit", "n", "wait", "config", "ack", "ack_wait", "max_deliver",
            "max_in_flight", "subject", "up_to", "max_events", "discard", "dead_letter"]
    values = [None, True, 0, -1, 1, 2 ** 70, 1.5, float("nan"), "", "x", "fz.>", "a..b",
              "first", "last", "new", "file", "memory", [], ["fz.>"], [1], {}, {"time": 1},
              "2024-01-01T00:00:00Z", "FZ"]

    def rand_json():
        if rnd.random() < 0.2:
            return rnd.choice(jsons)
        d = {rnd.choice(keys): rnd.choice(values) for _ in range(rnd.randrange(5))}
        if rnd.random() < 0.5:
            d["name"] = rnd.choice(["FZ", "c", 1, None])
            d["stream"] = rnd.choice(["FZ", "nope", None])
        return json.dumps(d).encode()

    def rand_frame():
        op = rnd.choice([3, 3, 5, 6, 7, 9, 10, 13, 13, 14, 14, 15, 15, 16, 2, 1, 4, 8, 11, 12])
        s = rnd.choice(subjects)
        if op == 13:
            s = rnd.choice(["add", "info", "list", "delete", "purge", "x"])
        elif op == 15:
            s = rnd.choice(["add", "info", "list", "delete", "fetch", "x"])
        elif op == 14:
            s = rnd.choice(["FZ", "nope", ""])
        elif op == 16:
            s = rnd.choice(["$ACK.FZ.c.1", "$ACK.FZ.c.x", "$ACK.a", "x"])
        body = b""
        if op == 3:
            body = record(rnd.choice(["a", "fz.x"]), bytes(rnd.randrange(40))) \
                if rnd.random() < 0.8 else bytes(rnd.getrandbits(8) for _ in range(20))
        elif op == 5:
            body = b"".join(struct.pack("<HI", 3, len(r)) + b"fz.".ljust(3) + r
                            for r in [record("fz.b")] * rnd.randrange(3))
        elif op in (13, 14, 15, 2):
            body = rand_json()
        elif op == 16:
            body = bytes([rnd.randrange(6)]) + (struct.pack("<d", rnd.random())
                                                if rnd.random() < 0.5 else b"")
        elif op == 7:
            body = struct.pack("<I", rnd.randrange(3)) if rnd.random() < 0.5 else b""
        reply = rnd.choice(["", "", "_INBOX.fz.1", "q"])
        return frame(op, rnd.choice([0, 0, 1, 2]), rnd.randrange(1, 50), s, reply, body)

    cases = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 200)))
            cases.append((rnd.random() < 0.5, data))
            continue
        data = bytearray(b"".join(rand_frame() for _ in range(rnd.randrange(1, 12))))
        if kind == 2 and data:                       # truncated
            del data[rnd.randrange(len(data)):]
        elif kind == 3 and data:                     # garbled
            for _ in range(rnd.randrange(1, 4)):
                data[rnd.randrange(len(data))] = rnd.getrandbits(8)
        cases.append((True, bytes(data)))
    return cases


def test_live_server_survives_random_bytes_and_garbled_frames(aloop, ffserver, seed):
    n = 80 if fastflow.COMPILED else 40

    async def main():
        rnd = random.Random(seed)
        async with ffserver(max_payload=4096, auth_timeout=1.0) as srv:
            async with await fc.connect(srv.url) as admin:
                await admin.add_stream("FZ", ["fz.>"])
                await admin.add_consumer("FZ", "c")
            codes = []

            async def one(handshake, data):
                raw = await Raw.open(srv.port)
                try:
                    if handshake:
                        await raw.handshake(name="fuzz")
                    else:
                        await raw.expect("INFO")
                    try:
                        for k in range(0, len(data), 97):    # in pieces
                            await raw.send(data[k:k + 97])
                    except (BrokenPipeError, ConnectionResetError):
                        pass                                # closed it already: fine
                    try:
                        frames = await raw.until_closed(0.3)
                    except asyncio.TimeoutError:
                        frames = []                         # still open: fine
                    for f in frames:
                        assert 1 <= f.op <= 16 and f.op not in (OP["CONNECT"], OP["PUB"])
                        if f.op == OP["ERR"]:
                            codes.append(f.code)
                            assert f.code in DOC_CODES, f
                finally:
                    raw.close()

            cases = fuzz_inputs(rnd, n)
            for k in range(0, len(cases), 10):
                await asyncio.gather(*[one(h, d) for h, d in cases[k:k + 10]])
            assert 500 not in codes
            assert srv.stats()["protocol_errors"] > 0
            # the server still serves: a normal client works
            async with await fc.connect(srv.url, timeout=5) as c:
                sub = c.subscribe("after.>")
                await c.flush()
                c.publish("after.fuzz", b"still here")
                assert (await sub.next(5)).data == b"still here"
                await c.add_stream("AFTER", ["after.acked"])      # (the fuzz may delete FZ)
                assert await c.publish_ack("after.acked", b"") == (1, "AFTER")
            await wait_until(lambda: not srv.conns, 5, "the fuzz connections to go")

    aloop(main)
