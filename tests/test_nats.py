"""The NATS door of ``fastflow serve`` (``--nats-port``): the NATS core
client protocol, checked with real NATS clients (nats-py; the Go client in
tests/go/natssmoke.go) and on raw sockets, and, wherever fastflow should
behave like nats-server, differentially: the same scenario runs against a
real ``nats-server`` (the ``natsd`` fixture) and the door (``ffnats``) in
the same test, and what the clients observed is compared.

Deliberate differences from nats-server (tested on the door alone):
publish subjects are always validated (an invalid one is dropped and
counted; pedantic mode adds nats-server's non-closing ``-ERR 'Invalid
Publish Subject'``), and ``$``-subjects are not matched by patterns whose
first token is a wildcard.

Async tests run under the standard loop and uvloop (``aloop``); in-process
servers run in the test's loop; every wait is bounded.  Missing peers
(nats-server, nats-py, go) skip loudly, or fail with FASTFLOW_REQUIRE_PEERS=1.
"""

import asyncio
import contextlib
import json
import os
import random
import re
import subprocess
import time

import pytest

import fastflow
import fastflow.client as fc
from fastflow import Flow
from fastflow.server import hash_password

from helpers import RawConnection, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GO_SRC = os.path.join(REPO, "tests", "go", "natssmoke.go")
HEX32 = re.compile(r"[0-9a-f]{32}\Z")
TEST_TIMEOUT = 30.0
# the -ERR texts before a close: nats-server's (as nats-server 2.9 writes them: some in lower
# case), and the door's for what nats-server closes without a text ('Parser Error', ...)
CLOSING_ERRS = {"'Unknown Protocol Operation'", "'Maximum Payload Violation'",
                "'Authorization Violation'", "'Authentication Timeout'", "'Parser Error'",
                "'maximum control line exceeded'", "'Slow Consumer'", "'Stale Connection'",
                "'maximum connections exceeded'", "'Invalid Connect Protocol'"}


# -- a raw NATS connection -------------------------------------------------------------------


class NRaw(RawConnection):
    """A TCP connection speaking NATS by hand.  The server's output is cut
    into items here, independently of the door's code:
    ``("INFO", dict)``, ``("+OK",)``, ``("-ERR", "'text'")``, ``("PING",)``,
    ``("PONG",)``, ``("MSG", subject, sid, reply, payload)``,
    ``("HMSG", subject, sid, reply, headers, payload)``.  With ``auto_pong``
    the server's PINGs are answered and left out of the items (nats-server
    pings a new connection after a second or so)."""

    def __init__(self, sock, auto_pong=True):
        super().__init__(sock)
        self.auto_pong = auto_pong
        self.raw = b""                  # every byte received

    @classmethod
    async def open(cls, port, rcvbuf=None, auto_pong=True):
        return await super().open(port, rcvbuf, nodelay=True, auto_pong=auto_pong)

    async def send_pieces(self, pieces, pause=0.001):
        """Each piece in its own write, with a pause for the server to read it."""
        for p in pieces:
            await self.send(p)
            await asyncio.sleep(pause)

    async def _fill(self, timeout):
        self.raw += await super()._fill(timeout)

    def _cut(self):
        i = self.buf.find(b"\r\n")
        if i < 0:
            return None
        line = self.buf[:i]
        op = line.split(b" ", 1)[0].upper()
        end = i + 2
        if op == b"MSG":
            parts = line.decode().split(" ")
            n = int(parts[-1])
            if len(self.buf) < end + n + 2:
                return None
            payload = self.buf[end:end + n]
            assert self.buf[end + n:end + n + 2] == b"\r\n", self.buf[:end + n + 2]
            reply = parts[3] if len(parts) == 5 else None
            item = ("MSG", parts[1], parts[2], reply, payload)
            end += n + 2
        elif op == b"HMSG":
            parts = line.decode().split(" ")
            hn, tn = int(parts[-2]), int(parts[-1])
            if len(self.buf) < end + tn + 2:
                return None
            block = self.buf[end:end + tn]
            assert self.buf[end + tn:end + tn + 2] == b"\r\n", self.buf[:end + tn + 2]
            reply = parts[3] if len(parts) == 6 else None
            item = ("HMSG", parts[1], parts[2], reply, block[:hn], block[hn:])
            end += tn + 2
        elif op == b"INFO":
            item = ("INFO", json.loads(line[5:]))
        elif op == b"-ERR":
            item = ("-ERR", line[5:].decode("utf-8", "replace"))
        elif op in (b"+OK", b"PING", b"PONG") and line.upper() == op:
            item = (op.decode(),)
        else:
            item = ("?", line)
        self.buf = self.buf[end:]
        return item

    async def _keep(self, item):
        if item[0] == "INFO" and self.info is None:
            self.info = item[1]
        if item == ("PING",) and self.auto_pong:
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await self.send(b"PONG\r\n")
            return False
        return True

    def _timeout_message(self, timeout):
        return "nothing more within {} s; got so far {!r}".format(timeout, self.raw[-300:])

    async def until(self, pred, timeout=5.0):
        """Items up to and including the first one for which ``pred`` is
        true (all of them if the server closes first)."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            item = await self.next(max(0.001, deadline - time.monotonic()))
            if item is None:
                out.append(("EOF",))
                return out
            out.append(item)
            if pred(item):
                return out

    async def pongs(self, n=1, timeout=5.0):
        """Items up to and including the ``n``-th PONG (or EOF)."""
        seen = [0]

        def pred(item):
            if item == ("PONG",):
                seen[0] += 1
            return seen[0] == n
        return await self.until(pred, timeout)

    async def until_closed(self, timeout=5.0):
        """Every item until the server closes the connection (ending with ("EOF",))."""
        return await self.until(lambda item: False, timeout)

    async def handshake(self, pongs=True, **connect):
        """INFO, then CONNECT (``verbose`` false unless given) and PING/PONG."""
        item = await self.next()
        assert item is not None and item[0] == "INFO", item
        connect.setdefault("verbose", False)
        await self.send(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        got = await self.pongs()
        assert got[-1] == ("PONG",), got
        return got[:-1]


async def observe(port, data, *, pongs=1, pieces=None, timeout=5.0, **open_kw):
    """Send ``data`` (whole, or as ``pieces``) on a new connection and return
    the items the server wrote (INFO left out) up to the ``pongs``-th PONG,
    or EOF."""
    r = await NRaw.open(port, **open_kw)
    try:
        first = await r.next()
        assert first is not None and first[0] == "INFO", first
        if pieces is None:
            await r.send(data)
        else:
            await r.send_pieces(pieces)
        return await r.pongs(pongs, timeout)
    finally:
        r.close()


async def closing(port, data, timeout=5.0, connect=b'CONNECT {"verbose":false}\r\n'):
    """Items (INFO left out) after ``connect`` + ``data`` until the server closes."""
    r = await NRaw.open(port)
    try:
        first = await r.next()
        assert first is not None and first[0] == "INFO", first
        await r.send(connect + data)
        return await r.until_closed(timeout)
    finally:
        r.close()


def hpub(subject, headers, payload, reply=None):
    """An HPUB frame; ``headers``: the block's lines after NATS/1.0."""
    block = b"NATS/1.0\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    return b"HPUB %s %s%d %d\r\n%s%s\r\n" % (
        subject, (reply + b" ") if reply else b"", len(block), len(block) + len(payload), block,
        payload)


# -- nats-py connections -----------------------------------------------------------------------


class Clients:
    """nats-py connections closed at exit: ``nc = await cl.connect(url,
    **options)``; ``cl.errors[nc]`` lists what its error callback got."""

    def __init__(self, nats):
        self.nats = nats
        self.made = []
        self.errors = {}

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        for nc in self.made:
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 5)

    async def connect(self, url, **kw):
        errors = []

        async def on_error(e):
            errors.append(e)

        kw.setdefault("connect_timeout", 3)
        kw.setdefault("allow_reconnect", False)
        kw.setdefault("error_cb", on_error)
        nc = self.nats.aio.client.Client()
        self.made.append(nc)
        self.errors[nc] = errors
        try:
            await asyncio.wait_for(nc.connect(url, **kw), 10)
        except BaseException:
            # (nats-py leaves the socket of a refused connection open)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 5)
            raise
        return nc


async def flush(nc, timeout=3):
    """``nc.flush()`` once nats-py's flusher task has written the commands
    it holds: nats-py 2.16 writes the PING of ``flush()`` at once, ahead of
    the SUBs and PUBs still in its pending buffer, so that its PONG would
    not prove that the server has seen them (seen against nats-server: a
    SUB registered after the PUBs that followed its flush)."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0)
    while getattr(nc, "_pending", None) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    await nc.flush(timeout)


async def take(nc, sub, quiet=0.02):
    """Every message the server sent ``sub`` so far: a flush, then its queue
    once it stayed the same for ``quiet`` seconds."""
    await flush(nc)
    deadline = time.monotonic() + 3
    n, since = sub.pending_msgs, time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        if sub.pending_msgs != n:
            n, since = sub.pending_msgs, time.monotonic()
    return [await sub.next_msg(1) for _ in range(sub.pending_msgs)]


def nats_match(pattern, subject):
    p, s = pattern.split("."), subject.split(".")
    for i, t in enumerate(p):
        if t == ">":
            return len(s) > i
        if i >= len(s) or (t != "*" and t != s[i]):
            return False
    return len(p) == len(s)


async def both(natsd, ffnats, scenario, settings=None, nats_settings=None, ff_settings=None,
               **kw):
    """Run ``scenario(url, server)`` against nats-server, then against the
    door (each with ``settings``, and its own extras); returns (nats-server's
    observations, fastflow's)."""
    settings = settings or {}
    async with natsd(**dict(settings, **(nats_settings or {}))) as ns:
        want = await scenario(ns.url, ns, **kw)
    async with ffnats(**dict(settings, **(ff_settings or {}))) as srv:
        got = await scenario(srv.nats_url, srv, **kw)
    return want, got


# -- the protocol on raw sockets ----------------------------------------------------------------


def test_info_and_ping_pong(aloop, natsd, ffnats):
    async def main():
        for auth in (False, True):
            settings = {"max_payload": 4096}
            if auth:
                settings["token"] = "s3cret"
            async with natsd(**settings) as ns, ffnats(**settings) as srv:
                for name, port in (("nats-server", ns.port), ("fastflow", srv.nats_port)):
                    r = await NRaw.open(port)
                    try:
                        item = await r.next()
                        assert item[0] == "INFO", (name, item)
                        assert r.raw.startswith(b"INFO {") and r.raw.endswith(b"\r\n")
                        info = item[1]
                        assert info["headers"] is True and info["proto"] == 1, (name, info)
                        assert info["max_payload"] == 4096, (name, info)
                        assert bool(info.get("auth_required")) is auth, (name, info)
                        assert isinstance(info["server_id"], str) and info["server_id"]
                        assert isinstance(info["client_id"], int), (name, info)
                        if name == "fastflow":
                            assert info["version"] == fastflow.__version__
                        connect = {"verbose": False, "pedantic": False}
                        if auth:
                            connect["auth_token"] = "s3cret"
                        else:       # PING before CONNECT is answered without auth
                            await r.send(b"PING\r\n")
                            assert await r.next() == ("PONG",), name
                        await r.send(b"CONNECT " + json.dumps(connect).encode()
                                     + b"\r\nPING\r\nPING\r\n")
                        assert await r.pongs(2) == [("PONG",), ("PONG",)], name
                    finally:
                        r.close()

    aloop(main, timeout=TEST_TIMEOUT)


CASE_SCRIPT = [
    b'connect {"verbose":false,"pedantic":false,"headers":true,"name":"case"}\r\n',
    b"ping\r\n",
    b"Sub case.> 1\r\n",
    b"sUB other.x q1 2\r\n",
    b"pub case.a 2\r\nhi\r\n",
    b"Pub case.b reply.to 3\r\nabc\r\n",
    b"pUb other.x 0\r\n\r\n",
    b"PUB\tcase.tab  \t2\r\ntt\r\n",             # tabs and runs of blanks separate too
    hpub(b"case.h", [b"X-Case: 1"], b"hh").replace(b"HPUB", b"hpub"),
    hpub(b"case.hr", [b"X-Case: 2", b"x-lower: v"], b"", reply=b"rr").replace(b"HPUB", b"HPub"),
    b"unsub 1\r\n",
    b"PUB case.c 1\r\nz\r\n",
    b"PiNg\r\n",
]
CASE_EXPECTED = [
    ("PONG",),
    ("MSG", "case.a", "1", None, b"hi"),
    ("MSG", "case.b", "1", "reply.to", b"abc"),
    ("MSG", "other.x", "2", None, b""),
    ("MSG", "case.tab", "1", None, b"tt"),
    ("HMSG", "case.h", "1", None, b"NATS/1.0\r\nX-Case: 1\r\n\r\n", b"hh"),
    ("HMSG", "case.hr", "1", "rr", b"NATS/1.0\r\nX-Case: 2\r\nx-lower: v\r\n\r\n", b""),
    ("PONG",),
]


def test_ops_are_case_insensitive_like_nats_server(aloop, natsd, ffnats):
    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, b"".join(CASE_SCRIPT), pongs=2)
            assert want == CASE_EXPECTED
            got = await observe(srv.nats_port, b"".join(CASE_SCRIPT), pongs=2)
            assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


SPLIT_SCRIPT = [
    b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"name":"splits"}\r\n',
    b"SUB s.> 1\r\n",
    b"SUB q.x workers 2\r\n",
    b"PUB s.a 5\r\nhello\r\n",
    b"PUB s.crlf 6\r\na\r\nb\r\n\r\n",           # a payload holding CRLFs
    b"PUB s.bin 32\r\n" + bytes(range(0, 256, 8)) + b"\r\n",
    b"PUB s.r _INBOX.reply.1 0\r\n\r\n",
    b"PUB q.x 3\r\nqqq\r\n",
    hpub(b"s.h", [b"X-A: 1", b"X-B: two words"], b"payload"),
    hpub(b"s.hr", [b"X-R: r"], b"\r\n", reply=b"_INBOX.reply.2"),
    b"PUB s." + b"long" * 15 + b" 1\r\nL\r\n",
    b"UNSUB 2\r\n",
    b"PUB q.x 1\r\nn\r\n",
    b"PING\r\n",
]


def test_every_split_point_of_a_byte_stream(aloop, natsd, ffnats, seed):
    """The same items, however the stream is cut: whole, one byte per write,
    in two writes at every split point, and in random pieces; as nats-server."""
    data = b"".join(SPLIT_SCRIPT)

    async def main():
        async with natsd() as ns:
            want = await observe(ns.port, data)
            assert await observe(ns.port, data, pieces=[data[i:i + 1] for i in range(len(data))]) \
                == want
        assert [i[0] for i in want] == ["MSG"] * 5 + ["HMSG"] * 2 + ["MSG", "PONG"]
        assert want[1] == ("MSG", "s.crlf", "1", None, b"a\r\nb\r\n")
        async with ffnats() as srv:
            port = srv.nats_port
            assert await observe(port, data) == want
            assert await observe(port, data, pieces=[data[i:i + 1] for i in range(len(data))],
                                 timeout=10) == want
            for cut in range(1, len(data)):
                got = await observe(port, data, pieces=[data[:cut], data[cut:]])
                assert got == want, "split at byte {} ({!r} | {!r})".format(
                    cut, data[max(0, cut - 20):cut], data[cut:cut + 20])
            rnd = random.Random(seed)
            for _ in range(40):
                cuts = sorted(rnd.sample(range(1, len(data)), rnd.randrange(1, 30)))
                pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
                assert await observe(port, data, pieces=pieces) == want, cuts
            await wait_until(lambda: srv.stats()["connections"] == 0)
            assert srv.stats()["protocol_errors"] == 0

    aloop(main, timeout=TEST_TIMEOUT)


def test_verbose_ok_and_pedantic_like_nats_server(aloop, natsd, ffnats):
    # (no wildcard PUB here: pedantic nats-server answers -ERR and +OK, then delivers it;
    # the door refuses it, a deliberate difference: test_publish_subjects_are_always_validated)
    script = (b'CONNECT {"verbose":true,"pedantic":true,"headers":true}\r\n'
              b"SUB v.> 1\r\n"
              b"PUB v.a 1\r\na\r\n"
              b"SUB v..x 2\r\n"
              + hpub(b"v.h", [b"K: v"], b"c")
              + b"PUB other 1\r\nz\r\n"
              b"UNSUB 1\r\n"
              b"UNSUB 99\r\n"                      # an unknown sid: +OK too
              b"PUB v.a 1\r\nd\r\n"
              b"PING\r\n")

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, script)
            assert want == [("+OK",)] * 3 + [("MSG", "v.a", "1", None, b"a"),
                                             ("-ERR", "'Invalid Subject'"), ("+OK",),
                                             ("HMSG", "v.h", "1", None, b"NATS/1.0\r\nK: v\r\n\r\n",
                                              b"c")] + [("+OK",)] * 4 + [("PONG",)]
            got = await observe(srv.nats_port, script)
            # first the acknowledgements and the messages, each in order, then how they
            # interleave: nats-server acknowledges a PUB before it delivers it
            assert [i for i in got if i[0] not in ("MSG", "HMSG")] == \
                [i for i in want if i[0] not in ("MSG", "HMSG")]
            assert [i for i in got if i[0] in ("MSG", "HMSG")] == \
                [i for i in want if i[0] in ("MSG", "HMSG")]
            assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_connect_defaults_are_nats_servers(aloop, natsd, ffnats):
    """A CONNECT without verbose gets nats-server's default: verbose on."""
    script = b"CONNECT {}\r\nSUB d.> 1\r\nPUB e.x 1\r\nx\r\nPING\r\n"

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, script)
            assert want == [("+OK",)] * 3 + [("PONG",)]
            got = await observe(srv.nats_port, script)
            assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


# (name, bytes after CONNECT, exact): exact = the same items as nats-server; otherwise both
# close, and the door's -ERR (if any) is one of nats-server's closing texts
CLOSING_CASES = [
    ("unknown op", b"FOO bar\r\n", True),
    ("unknown short op", b"PIN\r\n", True),
    ("a NUL byte", b"\x00\r\n", True),
    ("MSG from a client", b"MSG a 1 2\r\nhi\r\n", True),
    # (nats-server: 'Unknown Protocol Operation' for an op without its space and arguments)
    ("PUB without arguments", b"PUB\r\n", False),
    ("SUB without arguments", b"SUB\r\n", False),
    ("UNSUB without arguments", b"UNSUB\r\n", False),
    ("payload over max_payload", b"PUB big 2000\r\n", True),
    ("headers+payload over max_payload", b"HPUB big 12 2000\r\n", True),
    ("control line over the limit", b"PUB " + b"a" * 300 + b" 1\r\nx\r\n", True),
    ("unterminated control line over the limit", b"SUB " + b"b" * 600, True),
    ("payload longer than its size", b"PUB a.b 2\r\nhiXX\r\n", False),
    ("a size that is not a number", b"PUB a.b x\r\n", False),
    ("a negative size", b"PUB a.b -1\r\n", False),
    ("SUB without a sid", b"SUB a\r\n", False),
    ("SUB with too many arguments", b"SUB a 1 2 3 4\r\n", False),
    ("HPUB headers larger than the total", b"HPUB a.b 20 10\r\n", False),
]


def test_closing_errors_like_nats_server(aloop, natsd, ffnats):
    settings = {"max_payload": 1024, "nats_max_control": 256}
    connect = b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
    cases = [(name, connect, data, exact) for name, data, exact in CLOSING_CASES] + [
        ("CONNECT: no_responders without headers", b"",
         b'CONNECT {"verbose":false,"no_responders":true}\r\nPING\r\n', True),
        ("CONNECT with bad JSON", b"", b"CONNECT {bad\r\nPING\r\n", False)]

    async def main():
        wrong = []          # every case, then one assertion naming all that differ
        async with natsd(**settings) as ns, ffnats(**settings) as srv:
            for name, conn, data, exact in cases:
                want = await closing(ns.port, data, connect=conn)
                got = await closing(srv.nats_port, data, connect=conn)
                assert want[-1] == ("EOF",), (name, want)
                if exact:
                    if got != want:
                        wrong.append("{}: fastflow {} nats-server {}".format(name, got, want))
                elif not (got[-1] == ("EOF",) and len(got) <= 2
                          and all(i[0] == "-ERR" and i[1] in CLOSING_ERRS for i in got[:-1])):
                    wrong.append("{}: fastflow {} (nats-server {})".format(name, got, want))
            await wait_until(lambda: srv.stats()["connections"] == 0)
            assert srv.stats()["protocol_errors"] >= len(CLOSING_CASES)
        assert not wrong, "\n".join(wrong)

    aloop(main, timeout=TEST_TIMEOUT)


def test_hpub_without_headers_in_connect_closes_like_nats_server(aloop, natsd, ffnats):
    """A client that did not announce headers in CONNECT may not send HPUB:
    nats-server closes the connection (a protocol violation)."""
    data = hpub(b"a", [b"K: v"], b"x") + b"PING\r\n"
    connect = b'CONNECT {"verbose":false,"headers":false}\r\n'

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await closing(ns.port, data, connect=connect)
            assert want == [("EOF",)]
            got = await observe(srv.nats_port, connect + data)       # to the PONG or the end
            assert got[-1] == ("EOF",), got
            assert all(i[0] == "-ERR" and i[1] in CLOSING_ERRS for i in got[:-1]), got

    aloop(main, timeout=TEST_TIMEOUT)


def test_a_client_without_headers_gets_plain_msgs_like_nats_server(aloop, natsd, ffnats):
    """A subscriber that did not announce headers in CONNECT gets MSG, the
    header block left out, for a message published with headers (and, on
    fastflow, for an event with attributes past the defaults)."""
    sub = b'CONNECT {"verbose":false,"headers":false}\r\nSUB h.> 1\r\nPING\r\n'
    pub = (b'CONNECT {"verbose":false,"headers":true}\r\n'
           + hpub(b"h.a", [b"K: v", b"ce-region: eu"], b"x") + b"PING\r\n")

    async def one(port):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        await r.readline()                                  # INFO
        w.write(sub)
        assert (await r.readline()) == b"PONG\r\n"
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        await r2.readline()
        w2.write(pub)
        await r2.readline()
        got = await asyncio.wait_for(r.readline(), 5), await asyncio.wait_for(r.readline(), 5)
        w.close()
        w2.close()
        return got

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await one(ns.port)
            assert want == (b"MSG h.a 1 1\r\n", b"x\r\n")
            assert await one(srv.nats_port) == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_non_closing_errors_like_nats_server(aloop, natsd, ffnats):
    script = (b'CONNECT {"verbose":false,"pedantic":false}\r\n'
              b"SUB a..b 1\r\nSUB .x 2\r\nSUB x. 3\r\nSUB a.>.b 4\r\nPING\r\n"
              b"SUB ok.1 5\r\nSUB ok.2 6\r\nSUB ok.3 7\r\nPING\r\n"
              b"SUB ok.4 8\r\nPING\r\n"            # the 4th: over max_subscriptions
              b"PUB ok.1 2\r\nok\r\nPUB ok.4 2\r\nno\r\nPING\r\n")

    async def main():
        async with natsd(max_subscriptions=3) as ns, ffnats(max_subscriptions=3) as srv:
            want = await observe(ns.port, script, pongs=4)
            assert want == [("-ERR", "'Invalid Subject'")] * 4 + [("PONG",), ("PONG",)] + [
                ("-ERR", "'maximum subscriptions exceeded'"), ("PONG",),
                ("MSG", "ok.1", "5", None, b"ok"), ("PONG",)]
            got = await observe(srv.nats_port, script, pongs=4)
            assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_publish_subjects_are_always_validated(aloop, ffnats):
    """A deliberate difference: nats-server checks publish subjects only in
    pedantic mode (without it, it delivers a wildcard subject); the door
    always does: without pedantic an invalid one is dropped silently (nats
    clients close on an -ERR they do not know), with it -ERR, as
    nats-server; the connection stays either way."""
    async def main():
        async with ffnats() as srv:
            bad = [b"a.*", b"a.>", b"a..b", b".a", b"a.", b"*", b">"]
            for pedantic in (False, True):
                r = await NRaw.open(srv.nats_port)
                try:
                    await r.handshake(pedantic=pedantic, headers=True)
                    await r.send(b"SUB > 1\r\nPING\r\n")
                    assert await r.pongs() == [("PONG",)]
                    await r.send(b"".join(b"PUB %s 1\r\nx\r\n" % s for s in bad)
                                 + hpub(b"h.*", [b"K: v"], b"x") + b"PING\r\n")
                    errs = [("-ERR", "'Invalid Publish Subject'")] * (len(bad) + 1)
                    assert await r.pongs() == (errs if pedantic else []) + [("PONG",)]
                    await r.send(b"PUB fine 1\r\nx\r\nPING\r\n")
                    assert await r.pongs() == [("MSG", "fine", "1", None, b"x"), ("PONG",)]
                finally:
                    r.close()
            assert srv.n_invalid_pubs == 2 * (len(bad) + 1)

    aloop(main, timeout=TEST_TIMEOUT)


def test_invalid_cloudevents_headers_are_refused_without_closing(aloop, ffnats):
    """The door maps ce-* headers to attributes (docs/nats.md): headers it
    cannot map are refused (nats-server passes any header through)."""
    async def main():
        async with ffnats() as srv:
            r = await NRaw.open(srv.nats_port)
            try:
                await r.handshake(headers=True)
                await r.send(b"SUB ce.> 1\r\n"
                             + hpub(b"ce.bad", [b"ce-specversion: 2.0"], b"x")
                             + hpub(b"ce.ok", [b"ce-specversion: 1.0", b"ce-id: i-1",
                                               b"ce-source: /s", b"ce-type: t"], b"y")
                             + b"PING\r\n")
                got = await r.pongs()
                assert [i[0] for i in got] == ["-ERR", "HMSG", "PONG"], got
                assert got[0][1].startswith("'Invalid CloudEvents Headers: ")
                assert "specversion" in got[0][1]
                assert (got[1][1], got[1][5]) == ("ce.ok", b"y")
            finally:
                r.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_dollar_subjects_are_not_matched_by_leading_wildcards(aloop, ffnats, natspy):
    """A deliberate difference: '>' and '*.x' do not see '$SYS.x'."""
    async def main():
        async with ffnats() as srv, Clients(natspy) as cl:
            nc = await cl.connect(srv.nats_url)
            everything = await nc.subscribe(">")
            star = await nc.subscribe("*.x")
            sys_ = await nc.subscribe("$SYS.>")
            await flush(nc)
            for s in ("$SYS.x", "$SYS.a.b", "plain.x"):
                await nc.publish(s, s.encode())
            assert [m.subject for m in await take(nc, everything)] == ["plain.x"]
            assert [m.subject for m in await take(nc, star)] == ["plain.x"]
            assert [m.subject for m in await take(nc, sys_)] == ["$SYS.x", "$SYS.a.b"]

    aloop(main, timeout=TEST_TIMEOUT)


def test_no_responders_status_like_nats_server(aloop, natsd, ffnats):
    script = (b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
              b"SUB _INBOX.r.* 1\r\n"
              b"PUB nobody _INBOX.r.1 2\r\nhi\r\n"
              + hpub(b"nobody", [b"X: y"], b"hi", reply=b"_INBOX.r.2")
              + b"PUB nobody 2\r\nhi\r\n"          # no reply subject: nothing
              b"PING\r\n")
    quiet = (b'CONNECT {"verbose":false,"headers":true,"no_responders":false}\r\n'
             b"SUB _INBOX.r.* 1\r\nPUB nobody _INBOX.r.1 2\r\nhi\r\nPING\r\n")
    served = (b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n'
              b"SUB svc 1\r\nPUB svc _INBOX.r.1 2\r\nhi\r\nPING\r\n")

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, script)
            assert want == [("HMSG", "_INBOX.r.1", "1", None, b"NATS/1.0 503\r\n\r\n", b""),
                            ("HMSG", "_INBOX.r.2", "1", None, b"NATS/1.0 503\r\n\r\n", b""),
                            ("PONG",)]
            assert b"HMSG _INBOX.r.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" in (
                await _raw_of(ns.port, script))
            assert await observe(srv.nats_port, script) == want
            assert b"HMSG _INBOX.r.1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n" in (
                await _raw_of(srv.nats_port, script))
            for s in (quiet, served):
                want = await observe(ns.port, s)
                assert await observe(srv.nats_port, s) == want

    aloop(main, timeout=TEST_TIMEOUT)


async def answer_pings(r, seconds):
    """Read (answering the server's PINGs) for ``seconds``; returns the other items."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            item = await r.next(max(0.001, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        out.append(item)
        if item is None:
            break
    return out


async def _raw_of(port, data):
    r = await NRaw.open(port)
    try:
        await r.next()
        await r.send(data)
        await r.pongs()
        return r.raw
    finally:
        r.close()


def test_unsub_max_is_enforced_by_the_server_like_nats_server(aloop, natsd, ffnats):
    script = (b'CONNECT {"verbose":false}\r\n'
              b"SUB u.> 1\r\nUNSUB 1 3\r\n"
              + b"".join(b"PUB u.x 1\r\n%d\r\n" % i for i in range(10))
              + b"SUB v 2\r\nPUB v 1\r\na\r\nPUB v 1\r\nb\r\n"
              b"UNSUB 2 1\r\n"                     # already delivered 2 >= 1: gone now
              b"PUB v 1\r\nc\r\n"
              b"UNSUB 77\r\n"                      # unknown: ignored
              b"PING\r\n")

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, script)
            assert [i[4] for i in want if i[0] == "MSG"] == [b"0", b"1", b"2", b"a", b"b"]
            got = await observe(srv.nats_port, script)
            assert got == want
            assert srv.stats()["subscriptions"] == 0

    aloop(main, timeout=TEST_TIMEOUT)


def test_stale_connections_are_closed_like_nats_server(aloop, natsd, ffnats):
    settings = {"ping_interval": 0.3, "max_pings_out": 1}

    async def main():
        async with natsd(**settings) as ns, ffnats(**settings) as srv:
            for name, port in (("nats-server", ns.port), ("fastflow", srv.nats_port)):
                mute = await NRaw.open(port, auto_pong=False)
                polite = await NRaw.open(port)
                try:
                    await mute.handshake()
                    await polite.handshake()
                    t0 = time.monotonic()
                    items, polite_items = await asyncio.gather(
                        mute.until_closed(5), answer_pings(polite, 1.2))
                    assert items == [("PING",), ("-ERR", "'Stale Connection'"), ("EOF",)], (
                        name, items)
                    assert time.monotonic() - t0 < 3, name
                    # the connection answering the PINGs lives on
                    assert polite_items == [], (name, polite_items)
                    await polite.send(b"PING\r\n")
                    assert await polite.pongs() == [("PONG",)], name
                finally:
                    mute.close()
                    polite.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_auth_timeout_and_violations_like_nats_server(aloop, natsd, ffnats):
    settings = {"token": "s3cret", "auth_timeout": 0.3}

    async def main():
        async with natsd(**settings) as ns, ffnats(**settings) as srv:
            for name, port in (("nats-server", ns.port), ("fastflow", srv.nats_port)):
                r = await NRaw.open(port)
                try:
                    assert (await r.next())[1]["auth_required"] is True
                    t0 = time.monotonic()
                    items = await r.until_closed(5)
                    assert items == [("-ERR", "'Authentication Timeout'"), ("EOF",)], (
                        name, items)
                    assert 0.2 < time.monotonic() - t0 < 3, name
                finally:
                    r.close()
                for data in (b'CONNECT {"auth_token":"wrong"}\r\nPING\r\n',
                             b'CONNECT {"verbose":true}\r\nPING\r\n',
                             b'CONNECT {"user":"x","pass":"y"}\r\nPING\r\n',
                             b"PING\r\n", b"SUB a 1\r\n", b"PUB a 1\r\nx\r\n"):
                    items = await closing(port, b"", connect=data)
                    assert items == [("-ERR", "'Authorization Violation'"), ("EOF",)], (
                        name, data, items)
                ok = await observe(port, b'CONNECT {"auth_token":"s3cret","verbose":true}\r\n'
                                         b"PING\r\n")
                assert ok == [("+OK",), ("PONG",)], name
            await wait_until(lambda: srv.stats()["connections"] == 0)
            assert srv.stats()["auth_failures"] >= 4

    aloop(main, timeout=TEST_TIMEOUT)


def test_max_connections_like_nats_server(aloop, natsd, ffnats):
    async def main():
        async with natsd(max_connections=2) as ns, ffnats(max_connections=2) as srv:
            for name, port in (("nats-server", ns.port), ("fastflow", srv.nats_port)):
                a = await NRaw.open(port)
                b = await NRaw.open(port)
                try:
                    await a.handshake()
                    await b.handshake()
                    c = await NRaw.open(port)
                    try:
                        items = await c.until_closed(5)
                    finally:
                        c.close()
                    assert [i[0] for i in items] == ["INFO", "-ERR", "EOF"], (name, items)
                    assert items[1] == ("-ERR", "'maximum connections exceeded'"), (name, items)
                    await a.send(b"PING\r\n")
                    assert await a.pongs() == [("PONG",)]
                finally:
                    a.close()
                    b.close()
            assert srv.stats()["rejected_connections"] == 1

    aloop(main, timeout=TEST_TIMEOUT)


ALICE_NATS = {"publish": {"allow": ["orders.>"], "deny": ["orders.internal.>"]},
              "subscribe": {"allow": ["orders.>", "_INBOX.>"], "deny": ["orders.secret.>"]}}


def test_permission_violations_like_nats_server(aloop, natsd, ffnats):
    # only cases where nats-server's and fastflow's rules agree (nats-server
    # allows a subscription overlapping a denied pattern and filters the
    # messages; fastflow refuses it)
    subs = ["other.>", ">", "orders.secret.x", "orders.eu.>", "$SYS.>", "orders.secret.*",
            "*.eu", "_INBOX.>", "orders.internal.x"]
    pubs = ["other.x", "orders.internal.x", "orders.eu", "orders.internal", "orders.eu.q"]
    script = (b'CONNECT {"verbose":false,"user":"alice","pass":"pw"}\r\n'
              + b"".join(b"SUB %s %d\r\nPING\r\n" % (s.encode(), i + 1) for i, s in enumerate(subs))
              + b"".join(b"PUB %s 1\r\nx\r\nPING\r\n" % s.encode() for s in pubs))
    n_pongs = len(subs) + len(pubs)

    async def main():
        async with natsd(users=[{"user": "alice", "password": "pw",
                                 "permissions": ALICE_NATS}]) as ns:
            want = await observe(ns.port, script, pongs=n_pongs)
        errs = [i[1] for i in want if i[0] == "-ERR"]
        assert errs == ["'Permissions Violation for Subscription to \"{}\"'".format(s)
                        for s in ("other.>", ">", "orders.secret.x", "$SYS.>",
                                  "orders.secret.*", "*.eu")] + [
            "'Permissions Violation for Publish to \"{}\"'".format(s)
            for s in ("other.x", "orders.internal.x")]
        async with ffnats(users=[{"user": "alice", "password": hash_password("pw"),
                                  "permissions": ALICE_NATS}]) as srv:
            got = await observe(srv.nats_port, script, pongs=n_pongs)
            assert got == want
            await wait_until(lambda: srv.stats()["connections"] == 0)
            assert srv.stats()["permission_denied"] >= 8

    aloop(main, timeout=TEST_TIMEOUT)


def test_slow_consumer_is_cut(aloop, ffnats, natspy):
    async def main():
        async with ffnats(max_payload="64KiB", max_pending="1MiB") as srv, \
                Clients(natspy) as cl:
            slow = await NRaw.open(srv.nats_port, rcvbuf=4096)
            try:
                await slow.handshake(name="never-reads")
                await slow.send(b"SUB flood.> 1\r\nPING\r\n")
                assert await slow.pongs() == [("PONG",)]
                pub = await cl.connect(srv.nats_url, name="publisher")
                reader = await cl.connect(srv.nats_url, name="reader")
                got = []

                async def count(msg):
                    got.append(len(msg.data))

                await reader.subscribe("flood.>", cb=count)
                await flush(reader)
                chunk = b"x" * 60000
                n = 0
                # 24 MB: far more than max_pending and the sockets' buffers
                while not srv.stats()["slow_consumers"] and n < 400:
                    for _ in range(4):
                        await pub.publish("flood.data", chunk)
                    n += 4
                    await flush(pub)
                    await wait_until(lambda: len(got) == n or srv.stats()["slow_consumers"], 10,
                                     "the reader")
                await wait_until(lambda: srv.stats()["slow_consumers"] == 1, 3, "the cut")
                items = await slow.until_closed(10)
                assert items[-2:] == [("-ERR", "'Slow Consumer'"), ("EOF",)], items[-3:]
                assert len(items) > 2 and all(i[0] == "MSG" for i in items[:-2])
                assert all(i[4] == chunk for i in items[:-2])
                # the publisher and the reader carry on
                await pub.publish("flood.data", b"after")
                await flush(pub)
                await wait_until(lambda: len(got) == n + 1, 10, "the reader")
                assert pub.is_connected and reader.is_connected
                assert sorted(c.name for c in srv.conns.values()) == ["publisher", "reader"]
            finally:
                slow.close()

    aloop(main, timeout=TEST_TIMEOUT)


# -- nats-py -----------------------------------------------------------------------------------

PATTERNS = ["orders.eu.created", "orders.*.created", "orders.>", "*.eu.*", ">", "*", "orders.*"]
SUBJECTS = ["orders.eu.created", "orders.us.created", "orders.eu.paid", "orders",
            "orders.eu.created.late", "users.eu.x", "ping", "orders.x"]


def test_natspy_pub_sub_wildcards_and_flush(aloop, natsd, ffnats, natspy):
    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            sub_c = await cl.connect(url, name="sub")
            pub_c = await cl.connect(url, name="pub")
            subs = [await sub_c.subscribe(p) for p in PATTERNS]
            got_cb = []

            async def on_msg(msg):
                got_cb.append((msg.subject, msg.reply, msg.data, msg.headers))

            await sub_c.subscribe("orders.>", cb=on_msg)
            await flush(sub_c)
            for i, s in enumerate(SUBJECTS):
                await pub_c.publish(s, b"%d" % i)
            await pub_c.publish("orders.big", bytes(range(256)) * 1200)
            await pub_c.publish("orders.reply", b"r", reply="where.to")
            await flush(pub_c)
            out = {p: [(m.subject, m.data) for m in await take(sub_c, s)]
                   for p, s in zip(PATTERNS, subs)}
            await wait_until(lambda: len(got_cb) == len(out["orders.>"]), 5, "the callback")
            out["cb"] = [(s, r, len(d), h) for s, r, d, h in got_cb]
            return out

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        for p in PATTERNS:
            expected = [(s, b"%d" % i) for i, s in enumerate(SUBJECTS) if nats_match(p, s)]
            assert [x for x in want[p] if x[0] not in ("orders.big", "orders.reply")] == \
                expected, p
        assert want["cb"][-1] == ("orders.reply", "where.to", 1, None)
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_queue_groups(aloop, natsd, ffnats, natspy):
    n = 200

    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            a = await cl.connect(url)
            b = await cl.connect(url)
            p = await cl.connect(url)
            got = {k: [] for k in ("a1", "a2", "b1", "plain", "audit")}

            def collect(key):
                async def cb(msg):
                    got[key].append(msg.data)
                return cb

            await a.subscribe("work.*", queue="workers", cb=collect("a1"))
            await a.subscribe("work.*", queue="workers", cb=collect("a2"))
            await b.subscribe("work.>", queue="workers", cb=collect("b1"))
            await b.subscribe("work.*", cb=collect("plain"))
            await b.subscribe("work.*", queue="audit", cb=collect("audit"))
            await flush(a)
            await flush(b)
            for i in range(n):
                await p.publish("work.%d" % (i % 7), b"%d" % i)
            await flush(p)
            await wait_until(lambda: len(got["plain"]) == n and len(got["audit"]) == n
                             and len(got["a1"]) + len(got["a2"]) + len(got["b1"]) >= n, 5)
            await flush(a)
            await flush(b)
            await asyncio.sleep(0.05)
            members = got["a1"] + got["a2"] + got["b1"]
            every = [b"%d" % i for i in range(n)]
            return {"once each": sorted(members) == sorted(every),
                    "spread": all(got[k] for k in ("a1", "a2", "b1")),
                    "plain in order": got["plain"] == every,
                    "audit once each": sorted(got["audit"]) == sorted(every)}

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        assert all(want.values()), want
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_queue_group_spans_both_doors(aloop, ffnats, natspy):
    n = 100

    async def main():
        async with ffnats() as srv, Clients(natspy) as cl, \
                await fc.connect(srv.url, timeout=5) as native:
            local = []
            srv.flow.subscribe("mixed.*", local.append, queue="q")
            got_native = []
            native.subscribe("mixed.*", lambda ev: got_native.append(ev.data), queue="q")
            await native.flush()
            nc = await cl.connect(srv.nats_url)
            got_nats = []

            async def cb(msg):
                got_nats.append(msg.data)

            await nc.subscribe("mixed.*", queue="q", cb=cb)
            await flush(nc)
            for i in range(n):
                if i % 2:
                    await nc.publish("mixed.x", b"%d" % i)
                else:
                    native.publish("mixed.x", b"%d" % i)
            await flush(nc)
            await native.flush()
            await wait_until(lambda: len(got_native) + len(got_nats) + len(local) >= n, 5)
            await asyncio.sleep(0.05)
            every = sorted(b"%d" % i for i in range(n))
            assert sorted(got_native + got_nats + [e.data for e in local]) == every
            assert got_native and got_nats and local

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_headers_round_trip(aloop, natsd, ffnats, natspy):
    headers = {"X-Trace": "t-1", "x-lower-case": "v", "Nats-Msg-Id": "abc-1",
               "Multi-Word": "a b  c", "X-Quote": "it's \"q\""}

    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            s = await cl.connect(url)
            p = await cl.connect(url)
            sub = await s.subscribe("hdr.>")
            await flush(s)
            await p.publish("hdr.one", b"\x00\xffdata", headers=headers)
            await p.publish("hdr.empty", b"", headers={"X-Only": "1"})
            await p.publish("hdr.plain", b"no headers")
            await p.publish("hdr.reply", b"r", reply="back.here", headers={"X-R": "r"})
            await flush(p)
            return [(m.subject, m.reply, m.data, m.headers) for m in await take(s, sub)]

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        # the same with an in-process subscriber to the subjects as well
        f = Flow()
        f.subscribe("hdr.>", lambda ev: None)
        try:
            async with ffnats(flow=f) as srv:
                got_local = await scenario(srv.nats_url, srv)
        finally:
            f.close()
        assert want == [("hdr.one", "", b"\x00\xffdata", headers),
                        ("hdr.empty", "", b"", {"X-Only": "1"}),
                        ("hdr.plain", "", b"no headers", None),
                        ("hdr.reply", "back.here", b"r", {"X-R": "r"})]
        assert got == want
        assert got_local == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_raw_header_blocks_are_given_back_verbatim(aloop, natsd, ffnats):
    """Header lines other than ce-* and Content-Type come back byte for byte
    (order, case, repeated keys, odd spacing), as nats-server does."""
    script = (b'CONNECT {"verbose":false,"headers":true}\r\nSUB raw.> 1\r\n'
              + hpub(b"raw.a", [b"X-Multi: a", b"x-multi: b", b"X-Multi: c", b"Zed:  spaced  ",
                                b"Empty:"], b"payload")
              + hpub(b"raw.b", [b"A: 1"], b"\r\n\r\n")
              + b"PING\r\n")

    async def main():
        async with natsd() as ns, ffnats() as srv:
            want = await observe(ns.port, script)
            assert want[0][4] == (b"NATS/1.0\r\nX-Multi: a\r\nx-multi: b\r\nX-Multi: c\r\n"
                                  b"Zed:  spaced  \r\nEmpty:\r\n\r\n")
            assert await observe(srv.nats_port, script) == want

    aloop(main, timeout=TEST_TIMEOUT)


# The engine's lineage (docs/engine.md, "Feedback loops"): every routed event carries the
# extensions ffhops and fftrace, so they may come with the ce-* headers of an event
LINEAGE = {"ffhops": re.compile(r"\d+\Z"), "fftrace": re.compile(r"[0-9a-f]{8}(,[0-9a-f]{8})*\Z")}


def without_lineage(d, prefix=""):
    """``d`` (an event's attributes, or NATS headers with ``prefix="ce-"``)
    without the lineage extensions, whose form is checked."""
    if d is None:
        return None
    out = dict(d)
    for name, form in LINEAGE.items():
        v = out.pop(prefix + name, None)
        assert v is None or form.match(str(v)), (name, v)
    return out


CE_HEADERS = {"ce-specversion": "1.0", "ce-id": "evt-1", "ce-source": "/nats/test",
              "ce-type": "com.example.ce", "ce-subject": "thing-7",
              "ce-time": "2024-01-02T03:04:05Z", "ce-region": "eu",
              "Content-Type": "application/json", "X-Trace": "trace-1", "Nats-Msg-Id": "m-1"}


def test_cloudevents_headers_become_attributes_and_back(aloop, ffnats, natspy):
    async def main():
        f = Flow()
        local = []
        f.subscribe("ce.>", local.append)
        try:
            async with ffnats(flow=f) as srv, Clients(natspy) as cl, \
                    await fc.connect(srv.url, timeout=5) as native:
                nsub = native.subscribe("ce.>")
                await native.flush()
                pub = await cl.connect(srv.nats_url)
                listener = await cl.connect(srv.nats_url)
                psub = await listener.subscribe("ce.>")
                await flush(listener)
                await pub.publish("ce.one", b'{"a":1}', headers=CE_HEADERS)
                await pub.publish("ce.two", b"only other headers", headers={"X-Only": "1"})
                await pub.publish("ce.three", b"plain")
                pct = {"ce-specversion": "1.0", "ce-id": "p-1", "ce-source": "/p",
                       "ce-type": "t", "ce-subject": "a%20b%25%22%C3%A9"}    # the HTTP binding's
                await pub.publish("ce.four", b"", headers=pct)             # percent-encoding
                await flush(pub)
                await wait_until(lambda: len(local) == 4)
                nevs = [await nsub.next(5) for _ in range(4)]
                for ev in (local[0], nevs[0]):
                    attrs = without_lineage(ev.attributes())
                    kept = attrs.pop("natsheaders")
                    assert attrs == {"specversion": "1.0", "id": "evt-1", "source": "/nats/test",
                                     "type": "com.example.ce", "subject": "thing-7",
                                     "time": "2024-01-02T03:04:05Z",
                                     "datacontenttype": "application/json", "region": "eu"}
                    assert sorted(kept.split("\r\n")) == ["Nats-Msg-Id: m-1", "X-Trace: trace-1"]
                    assert (ev.routing_subject, ev.data) == ("ce.one", b'{"a":1}')
                for ev in (local[1], nevs[1]):
                    assert HEX32.match(ev.id) and ev.source == "/fastflow"
                    assert ev.type == "ce.two" and "X-Only: 1" in ev["natsheaders"]
                for ev in (local[2], nevs[2]):
                    assert HEX32.match(ev.id) and (ev.source, ev.type) == ("/fastflow", "ce.three")
                    assert without_lineage(ev.attributes()).keys() == {
                        "specversion", "id", "source", "type"}
                for ev in (local[3], nevs[3]):
                    assert (ev.id, ev.subject) == ("p-1", 'a b%"\u00e9')
                assert len({e.id for e in local}) == 4
                assert [e.id for e in nevs] == [e.id for e in local]
                ms = [await psub.next_msg(5) for _ in range(4)]
                assert [(m.subject, m.data) for m in ms] == [
                    ("ce.one", b'{"a":1}'), ("ce.two", b"only other headers"),
                    ("ce.three", b"plain"), ("ce.four", b"")]
                assert without_lineage(ms[0].headers, "ce-") == CE_HEADERS
                assert ms[2].headers is None
                assert without_lineage(ms[3].headers, "ce-") == pct
                # "An HPUB with only non-CloudEvents headers comes back with exactly those
                # headers" (docs/nats.md), an in-process subscriber or not
                assert ms[1].headers == {"X-Only": "1"}
        finally:
            f.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_event_attributes_become_ce_headers(aloop, ffnats, natspy):
    async def main():
        f = Flow()
        local = []
        f.subscribe("attr.>", local.append)
        try:
            async with ffnats(flow=f) as srv, Clients(natspy) as cl, \
                    await fc.connect(srv.url, timeout=5) as native:
                nc = await cl.connect(srv.nats_url)
                sub = await nc.subscribe("attr.>")
                await flush(nc)
                f.publish("attr.flow", b"x", type="x.t", source="/y")
                f.publish("attr.plain", b"p")
                native.publish("attr.native", b"n", type="n.t", subject='s 1%"\u00e9', region="eu",
                               count=-7, urgent=True, datacontenttype="text/plain")
                native.publish("attr.plain2", b"q")
                await native.flush()
                await wait_until(lambda: len(local) == 4)
                ids = {e.routing_subject: e.id for e in local}
                ms = [await sub.next_msg(5) for _ in range(4)]
                assert [(m.subject, m.data) for m in ms] == [
                    ("attr.flow", b"x"), ("attr.plain", b"p"), ("attr.native", b"n"),
                    ("attr.plain2", b"q")]
                assert without_lineage(ms[0].headers, "ce-") == {
                    "ce-specversion": "1.0", "ce-id": ids["attr.flow"], "ce-source": "/y",
                    "ce-type": "x.t"}
                assert without_lineage(ms[2].headers, "ce-") == {
                    "ce-specversion": "1.0", "ce-id": ids["attr.native"],
                    "ce-source": "/fastflow", "ce-type": "n.t", "ce-subject": "s%201%25%22%C3%A9",
                    "ce-region": "eu", "ce-count": "-7", "ce-urgent": "true",
                    "Content-Type": "text/plain"}
                assert ms[1].headers is None and ms[3].headers is None
        finally:
            f.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_request_reply_and_no_responders(aloop, natsd, ffnats, natspy):
    async def scenario(url, _server):
        out = {}
        async with Clients(natspy) as cl:
            svc = await cl.connect(url, name="svc")
            c = await cl.connect(url, name="requester")

            async def upper(msg):
                if msg.headers:
                    await svc.publish(msg.reply, msg.data.upper(), headers=msg.headers)
                else:
                    await msg.respond(msg.data.upper())

            await svc.subscribe("svc.upper", cb=upper)
            silent = await svc.subscribe("svc.silent")
            await flush(svc)
            out["seq"] = [(await c.request("svc.upper", b"abc%d" % i, timeout=2)).data
                          for i in range(5)]
            many = await asyncio.gather(*[c.request("svc.upper", b"x%d" % i, timeout=5)
                                          for i in range(20)])
            out["many"] = [m.data for m in many]
            m = await c.request("svc.upper", b"h", timeout=2, headers={"X-Req": "r-1"})
            out["headers"] = (m.data, m.headers)
            t0 = time.monotonic()
            with pytest.raises(natspy.errors.NoRespondersError):
                await c.request("svc.nobody", b"?", timeout=5)
            out["no responders at once"] = time.monotonic() - t0 < 1.0
            with pytest.raises(natspy.errors.TimeoutError):
                await c.request("svc.silent", b"?", timeout=0.2)
            out["silent got it"] = (await silent.next_msg(2)).data
            out["still fine"] = (await c.request("svc.upper", b"ok", timeout=2)).data
        return out

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        assert want == {"seq": [b"ABC%d" % i for i in range(5)],
                        "many": [b"X%d" % i for i in range(20)],
                        "headers": (b"H", {"X-Req": "r-1"}), "no responders at once": True,
                        "silent got it": b"?", "still fine": b"OK"}
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_request_reply_across_doors(aloop, ffnats, natspy):
    async def main():
        async with ffnats() as srv, Clients(natspy) as cl, \
                await fc.connect(srv.url, timeout=5) as native:
            # a native responder, a nats-py requester
            native.subscribe("native.upper",
                             lambda ev, reply: native.respond(reply, ev.data.upper(),
                                                              type="svc.answer"),
                             with_reply=True)
            await native.flush()
            nc = await cl.connect(srv.nats_url)
            for i in range(3):
                m = await nc.request("native.upper", b"abc%d" % i, timeout=2)
                assert m.data == b"ABC%d" % i
                assert m.headers["ce-type"] == "svc.answer"
            # a nats-py responder, a native requester
            async def upper(msg):
                await msg.respond(msg.data.upper())

            await nc.subscribe("py.upper", cb=upper)
            await flush(nc)
            for i in range(3):
                ev = await native.request("py.upper", b"xyz%d" % i, timeout=2)
                assert ev.data == b"XYZ%d" % i
            # no responders either way
            with pytest.raises(natspy.errors.NoRespondersError):
                await nc.request("nobody.home", b"?", timeout=5)
            with pytest.raises(fc.NoRespondersError):
                await native.request("nobody.home", b"?", timeout=5)

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_unsubscribe_with_max_flush_and_drain(aloop, natsd, ffnats, natspy):
    async def scenario(url, server):
        out = {}
        async with Clients(natspy) as cl:
            c = await cl.connect(url)
            p = await cl.connect(url)
            three = await c.subscribe("u.>")
            await three.unsubscribe(limit=3)
            got = []

            async def slow(msg):
                await asyncio.sleep(0.001)
                got.append(msg.data)

            await c.subscribe("d.>", cb=slow)
            await flush(c)
            for i in range(10):
                await p.publish("u.x", b"%d" % i)
            for i in range(50):
                await p.publish("d.x", b"%d" % i)
            await flush(p)
            await flush(c)
            out["max"] = [(await three.next_msg(1)).data for _ in range(3)]
            out["delivered"] = three.delivered
            # the server ended the subscription by itself: only d.> is left
            out["server subs"] = server.stats()["subscriptions"] if hasattr(server, "stats") \
                else 1      # (nats-server: not looked at)
            await asyncio.wait_for(c.drain(), 10)
            out["drained"] = (got == [b"%d" % i for i in range(50)], c.is_closed)
            await asyncio.wait_for(p.drain(), 10)
            out["closed"] = p.is_closed
        return out

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        assert want == {"max": [b"0", b"1", b"2"], "delivered": 3, "server subs": 1,
                        "drained": (True, True), "closed": True}
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_no_echo(aloop, natsd, ffnats, natspy):
    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            quiet = await cl.connect(url, no_echo=True)
            other = await cl.connect(url)
            mine = await quiet.subscribe("e.>")
            theirs = await other.subscribe("e.>")
            await flush(quiet)
            await flush(other)
            await quiet.publish("e.1", b"from quiet")
            await other.publish("e.2", b"from other")
            await flush(quiet)
            await flush(other)
            return ([m.data for m in await take(quiet, mine)],
                    sorted(m.data for m in await take(other, theirs)))

    async def main():
        want, got = await both(natsd, ffnats, scenario)
        assert want == ([b"from other"], [b"from other", b"from quiet"])
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_verbose_pedantic_and_max_payload(aloop, natsd, ffnats, natspy):
    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            nc = await cl.connect(url, verbose=True, pedantic=True)
            sub = await nc.subscribe("vp.>")

            async def answer(msg):
                await msg.respond(b"yes")

            await nc.subscribe("vp.svc", cb=answer)
            await flush(nc)
            await nc.publish("vp.a", b"a", headers={"K": "v"})
            got = [(m.subject, m.data, m.headers) for m in await take(nc, sub)]
            rep = (await nc.request("vp.svc", b"?", timeout=2)).data
            with pytest.raises(natspy.errors.MaxPayloadError):
                await nc.publish("vp.big", b"x" * 5000)
            return (got, rep, nc.max_payload, nc.is_connected, cl.errors[nc])

    async def main():
        want, got = await both(natsd, ffnats, scenario, settings={"max_payload": 4096})
        assert want == ([("vp.a", b"a", {"K": "v"})], b"yes", 4096, True, [])
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_auth_failures(aloop, natsd, ffnats, natspy):
    async def scenario(url, server, good, bad):
        out = []
        async with Clients(natspy) as cl:
            for kw in bad:
                t0 = time.monotonic()
                with pytest.raises(natspy.errors.Error) as ei:
                    await cl.connect(url, **kw)
                out.append(("refused", "Authorization Violation" in str(ei.value),
                            time.monotonic() - t0 < 3))
            nc = await cl.connect(url, **good)
            await nc.publish("a", b"")
            await flush(nc)
            out.append(("accepted", nc.is_connected))
        return out

    async def main():
        bad_token = [{"token": "wrong"}, {}, {"user": "alice", "password": "x"}]
        bad_users = [{"user": "alice", "password": "wrong"}, {"user": "nobody", "password": "x"},
                     {}, {"token": "alice-pw"}]
        want, got = await both(natsd, ffnats, scenario, {"token": "s3cret"},
                               good={"token": "s3cret"}, bad=bad_token)
        assert want == got == [("refused", True, True)] * 3 + [("accepted", True)]
        want, got = await both(
            natsd, ffnats, scenario,
            nats_settings={"users": [{"user": "alice", "password": "alice-pw"},
                                     {"user": "bob", "password": "bob-pw"}]},
            ff_settings={"users": [{"user": "alice", "password": hash_password("alice-pw")},
                                   {"user": "bob", "password": "bob-pw"}]},
            good={"user": "alice", "password": "alice-pw"}, bad=bad_users)
        assert want == got == [("refused", True, True)] * 4 + [("accepted", True)]
        # the door counts them
        for settings, bad in (({"token": "s3cret"}, bad_token),
                              ({"users": [{"user": "alice",
                                           "password": hash_password("alice-pw")}]}, bad_users)):
            async with ffnats(**settings) as srv, Clients(natspy) as cl:
                for kw in bad:
                    with pytest.raises(natspy.errors.Error):
                        await cl.connect(srv.nats_url, **kw)
                await wait_until(lambda: srv.stats()["auth_failures"] == len(bad), 3,
                                 "{} auth failures".format(len(bad)))
                await wait_until(lambda: srv.stats()["connections"] == 0, 3)

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_permission_violations(aloop, natsd, ffnats, natspy):
    async def scenario(url, _server):
        async with Clients(natspy) as cl:
            admin = await cl.connect(url, user="admin", password="admin-pw")
            alice = await cl.connect(url, user="alice", password="alice-pw")
            spy = await admin.subscribe("orders.>")
            await flush(admin)
            await alice.publish("other.x", b"no")
            await alice.publish("orders.internal.x", b"no")
            await alice.publish("orders.eu", b"ok")
            await flush(alice)
            refused = await alice.subscribe("other.>")
            allowed = await alice.subscribe("orders.eu.>")
            await flush(alice)
            await admin.publish("orders.eu.1", b"for alice")
            await admin.publish("other.y", b"not for alice")
            await flush(admin)
            await flush(alice)
            await wait_until(lambda: len(cl.errors[alice]) >= 3, 3, "the errors")
            return {"spy": [m.data for m in await take(admin, spy)],
                    "allowed": [m.data for m in await take(alice, allowed)],
                    "refused": [m.data for m in await take(alice, refused)],
                    "errors": [str(e) for e in cl.errors[alice]],
                    "connected": alice.is_connected}

    async def main():
        alice = {"user": "alice", "permissions": ALICE_NATS}
        want, got = await both(
            natsd, ffnats, scenario,
            nats_settings={"users": [dict(alice, password="alice-pw"),
                                     {"user": "admin", "password": "admin-pw"}]},
            ff_settings={"users": [dict(alice, password=hash_password("alice-pw")),
                                   {"user": "admin", "password": "admin-pw"}]})
        assert want == {
            "spy": [b"ok", b"for alice"], "allowed": [b"for alice"], "refused": [],
            # (nats-py lowercases the -ERR texts)
            "errors": ['nats: permissions violation for publish to "other.x"',
                       'nats: permissions violation for publish to "orders.internal.x"',
                       'nats: permissions violation for subscription to "other.>"'],
            "connected": True}
        assert got == want

    aloop(main, timeout=TEST_TIMEOUT)


def test_natspy_reconnects_after_a_server_restart(aloop, natsd, ffnatsproc, natspy):
    async def scenario(url, start, stop):
        loop = asyncio.get_running_loop()
        events = {"disconnected": 0, "reconnected": 0}
        reconnected = loop.create_future()

        async def on_disconnect():
            events["disconnected"] += 1

        async def on_reconnect():
            events["reconnected"] += 1
            if not reconnected.done():
                reconnected.set_result(None)

        opts = dict(allow_reconnect=True, reconnect_time_wait=0.05, max_reconnect_attempts=200)
        async with Clients(natspy) as cl:
            nc = await cl.connect(url, name="survivor", disconnected_cb=on_disconnect,
                                  reconnected_cb=on_reconnect, **opts)
            watcher = await cl.connect(url, name="watcher", **opts)
            mine = await nc.subscribe("keep.>")
            theirs = await watcher.subscribe("keep.>")
            await flush(nc)
            await flush(watcher)
            await nc.publish("keep.before", b"1")
            await flush(nc)
            before = ((await mine.next_msg(2)).data, (await theirs.next_msg(2)).data)
            await stop()
            await wait_until(lambda: events["disconnected"] == 1, 5, "the client to notice")
            await nc.publish("keep.offline", b"off")        # buffered until reconnected
            await start()
            await asyncio.wait_for(reconnected, 10)
            await wait_until(lambda: watcher.is_connected, 10, "the watcher to reconnect")
            await flush(watcher)
            await flush(nc)
            await nc.publish("keep.after", b"new")
            await flush(nc)
            got = [(await mine.next_msg(5)).data for _ in range(2)]
            seen = []
            while not seen or seen[-1] != b"new":
                seen.append((await theirs.next_msg(5)).data)
            return {"before": before, "mine": got, "watcher ends with new": seen[-1],
                    "disconnected": events["disconnected"],
                    "reconnected": events["reconnected"]}

    async def main():
        ns = natsd()
        await ns.astart()
        try:
            want = await scenario(ns.url, ns.astart, ns.astop)
        finally:
            ns.kill()
        assert want == {"before": (b"1", b"1"), "mine": [b"off", b"new"],
                        "watcher ends with new": b"new", "disconnected": 1, "reconnected": 1}
        server = ffnatsproc("--loop", aloop.name)
        await server.astart()

        async def stop():
            assert await server.astop() == 0

        try:
            got = await scenario(server.nats_url, server.astart, stop)
        finally:
            server.kill()
        assert got == want, server.log

    aloop(main, timeout=TEST_TIMEOUT)


# -- one server, two doors ---------------------------------------------------------------------


def test_both_doors_share_the_engine_streams_and_replay(aloop, ffnats, natspy):
    async def main():
        f = Flow()
        st = f.add_stream("ORD", ["orders.>"])
        try:
            async with ffnats(flow=f) as srv, Clients(natspy) as cl, \
                    await fc.connect(srv.url, timeout=5) as native:
                nsub = native.subscribe("orders.>")
                await native.flush()
                nc = await cl.connect(srv.nats_url)
                psub = await nc.subscribe("orders.>")
                await flush(nc)
                await nc.publish("orders.1", b"one")
                await nc.publish("orders.2", b"two", headers={
                    "ce-specversion": "1.0", "ce-id": "o-2", "ce-source": "/shop",
                    "ce-type": "order.created", "X-Shop": "eu"})
                await nc.publish("other.x", b"not stored")
                await flush(nc)
                await wait_until(lambda: len(st) == 2)
                assert (await native.publish_ack("orders.3", b"three", type="t3")) == (3, "ORD")
                # live: each door sees the other's events
                assert [(e.routing_subject, e.data) for e in
                        [await nsub.next(5) for _ in range(3)]] == [
                    ("orders.1", b"one"), ("orders.2", b"two"), ("orders.3", b"three")]
                assert [(m.subject, m.data) for m in await take(nc, psub)] == [
                    ("orders.1", b"one"), ("orders.2", b"two"), ("orders.3", b"three")]
                # replay over the native door, and in the engine
                for evs in (await native.replay("ORD").list(), list(st.replay())):
                    assert [(e.seq, e.routing_subject, e.data) for e in evs] == [
                        (1, "orders.1", b"one"), (2, "orders.2", b"two"),
                        (3, "orders.3", b"three")]
                    assert (evs[0].type, evs[0].source) == ("orders.1", "/fastflow")
                    assert (evs[1].id, evs[1].source, evs[1].type) == (
                        "o-2", "/shop", "order.created")
                    assert "X-Shop: eu" in evs[1]["natsheaders"]
                    assert evs[2].type == "t3"
                # a durable consumer over the native door reads what NATS published
                await native.add_consumer("ORD", "c1")
                ds = await native.fetch("ORD", "c1", 2)
                assert [d.data for d in ds] == [b"one", b"two"]
        finally:
            f.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_monitoring_counts_nats_connections(aloop, ffnats, natspy):
    async def main():
        async with ffnats(monitor=True) as srv, Clients(natspy) as cl, \
                await fc.connect(srv.url, timeout=5, name="native-one"):
            n1 = await cl.connect(srv.nats_url, name="nats-one")
            n2 = await cl.connect(srv.nats_url, name="nats-two")
            await n1.subscribe("mon.>")
            await n1.subscribe("mon.x", queue="q")
            await n2.subscribe("mon.y")
            await flush(n1)
            await flush(n2)
            for _ in range(5):
                await n2.publish("mon.x", b"12345")
            await flush(n2)
            await flush(n1)
            st = srv.stats()
            assert st["connections"] == 3 and st["total_connections"] == 3
            assert st["subscriptions"] == 3
            assert st["in_msgs"] >= 5 and st["out_msgs"] >= 10
            assert sorted(c.name for c in srv.conns.values()) == [
                "native-one", "nats-one", "nats-two"]
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", srv.monitor_port), 5)
            try:
                w.write(b"GET /connz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = await asyncio.wait_for(r.read(), 5)
            finally:
                w.close()
            connz = json.loads(data.partition(b"\r\n\r\n")[2])
            assert connz["num_connections"] == 3
            by_name = {c["name"]: c for c in connz["connections"]}
            assert by_name["nats-one"]["subscriptions"] == 2
            assert by_name["nats-two"]["subscriptions"] == 1
            assert by_name["nats-two"]["in_msgs"] == 5
            assert by_name["nats-one"]["out_msgs"] == 10
            assert by_name["nats-one"]["lang"] == "python3"
            await n2.close()
            await wait_until(lambda: srv.stats()["connections"] == 2, 5)
            assert srv.stats()["in_msgs"] >= 5

    aloop(main, timeout=TEST_TIMEOUT)


# -- the Go client (tests/go/natssmoke.go) -----------------------------------------------------


@pytest.fixture(scope="session")
def natssmoke(tmp_path_factory, peer):
    """The natssmoke binary, built once a session from Debian's nats.go sources."""
    peer("go")
    out = str(tmp_path_factory.mktemp("go") / "natssmoke")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               CGO_ENABLED="0")
    if not os.environ.get("HOME") and not os.environ.get("GOCACHE"):
        env["GOCACHE"] = str(tmp_path_factory.mktemp("gocache"))
    r = subprocess.run(["go", "build", "-o", out, GO_SRC], capture_output=True, text=True,
                       env=env, timeout=300, cwd=REPO)
    assert r.returncode == 0, "go build of {} failed:\n{}{}".format(GO_SRC, r.stdout, r.stderr)
    return out


async def run_smoke(binary, url):
    proc = await asyncio.create_subprocess_exec(
        binary, "-url", url, "-timeout", "5s", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 25)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("natssmoke against {} did not finish in 25 s".format(url)) from None
    return proc.returncode, out.decode("utf-8", "replace")


SMOKE_STEPS = ["connect", "pubsub", "wildcard", "headers", "cloudevents", "queue", "request",
               "noresponders", "automax", "drain"]


def test_go_client_smoke(aloop, natsd, ffnats, natssmoke):
    async def main():
        async with natsd() as ns:
            rc, out = await run_smoke(natssmoke, ns.url)
        assert rc == 0 and out.endswith("PASS\n"), "against nats-server (the control):\n" + out
        assert [ln.split()[1] for ln in out.splitlines() if ln.startswith("ok ")] == SMOKE_STEPS
        f = Flow()
        local = []
        f.subscribe("smoke.ce", local.append)       # an in-process subscriber as well
        try:
            async with ffnats(flow=f) as srv:
                rc, out = await run_smoke(natssmoke, srv.nats_url)
                assert rc == 0 and out.endswith("PASS\n"), "against fastflow:\n" + out
                assert [ln.split()[1] for ln in out.splitlines()
                        if ln.startswith("ok ")] == SMOKE_STEPS
                (ev,) = [e for e in local if e.routing_subject == "smoke.ce"]
                assert (ev.id, ev.source, ev.type, ev.datacontenttype, ev.data) == (
                    "go-1", "/go/smoke", "go.smoke", "text/plain", b"a cloudevent")
                await wait_until(lambda: srv.stats()["connections"] == 0, 5)
        finally:
            f.close()

    aloop(main, timeout=TEST_TIMEOUT)


def test_tls_like_nats_server(aloop, ffnats, natspy, tls_files):
    """With a certificate configured, INFO says tls_required and the client
    upgrades after it (nats-server 2.9's way); client certificates with
    tls_verify; plain text after INFO is refused."""
    import ssl

    def ctx(cert=False):
        c = ssl.create_default_context(cafile=tls_files.ca)
        if cert:
            c.load_cert_chain(tls_files.client_cert, tls_files.client_key)
        return c

    async def main():
        async with ffnats(tls_cert=tls_files.cert, tls_key=tls_files.key,
                          tls_ca=tls_files.ca, tls_verify=True) as srv:
            url = "tls://localhost:{}".format(srv.nats_port)
            async with Clients(natspy) as cl:
                nc = await cl.connect(url, tls=ctx(cert=True), name="secure")
                sub = await nc.subscribe("s.>")
                await flush(nc)
                await nc.publish("s.1", b"over tls")
                msg = await sub.next_msg(timeout=5)
                assert msg.data == b"over tls"
                (conn,) = [c for c in srv.conns.values() if c.name == "secure"]
                assert conn.tls["version"].startswith("TLS")
                assert conn.tls["subject"]["commonName"] == "test-client"
                # no client certificate: the server ends the handshake (nats-py
                # on uvloop may notice only at its next read)
                failures = srv.stats()["auth_failures"]
                with contextlib.suppress(Exception):
                    await cl.connect(url, tls=ctx(cert=False), name="no-cert")
                await wait_until(lambda: srv.stats()["auth_failures"] == failures + 1, 5,
                                 "the handshake to fail")
                assert [c.name for c in srv.conns.values()] == ["secure"]
            # a client that ignores tls_required and writes plain text
            r = await NRaw.open(srv.nats_port)
            try:
                info = await r.next()
                assert info[0] == "INFO" and info[1]["tls_required"] is True, info
                await r.send(b'CONNECT {"verbose":false}\r\nPING\r\n')
                got = []
                for _ in range(3):
                    item = await r.next()
                    got.append(item)
                    if item is None or item == ("EOF",):
                        break
                assert ("PONG",) not in got, got
            finally:
                r.close()
            await wait_until(lambda: not [c for c in srv.conns.values()
                                          if c.name != "secure" and c.door == "nats"], 10,
                             "the plain-text client to be closed")

    aloop(main, timeout=TEST_TIMEOUT)


def test_header_block_never_raises_and_keeps_only_header_lines():
    """The router calls header_block while it delivers: values no header can
    carry are left out, ``natsheaders`` lines that are not ``Name: value``
    (an event from another door may carry anything) are dropped, a
    Content-Type that is not printable ASCII goes as ce-datacontenttype."""
    from fastflow.server.nats import event_from_nats, header_block

    ev = fastflow.Event("a.b", b"x", type="t", datacontenttype="text/plain; charset=utf-8",
                        natsheaders="X-A: 1\r\n\r\nnot a header\r\nY: 2\r\n")
    block = header_block(ev, True).decode()
    assert block.startswith("NATS/1.0\r\n") and block.endswith("\r\n\r\n")
    lines = block[:-4].split("\r\n")[1:]
    assert lines[-2:] == ["X-A: 1", "Y: 2"]
    assert "Content-Type: text/plain; charset=utf-8" in lines and "ce-type: t" in lines
    odd = fastflow.Event("a.b", b"x", datacontenttype="t\u00ebxt/plain", k="\udc80")
    lines = header_block(odd, True).decode().split("\r\n")
    assert "ce-datacontenttype: t%C3%ABxt/plain" in lines
    assert not [ln for ln in lines if ln.startswith("ce-k:")]
    # what an HPUB keeps comes back as it was
    back = event_from_nats("a.b", b"NATS/1.0\r\nX-A: 1\r\nX-A: 2\r\nce-k: v%20w\r\n\r\n", b"p",
                           "/src")
    assert back["k"] == "v w" and back["natsheaders"] == "X-A: 1\r\nX-A: 2"
    assert header_block(back, True).decode().split("\r\n")[-4:-2] == ["X-A: 1", "X-A: 2"]
