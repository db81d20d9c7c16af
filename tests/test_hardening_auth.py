"""Hardening of authentication, responses and the monitoring port (issue 11):
response permissions as nats-server's ``allow_responses`` (a user answers
only requests it received, a limited number of times, for a limited
time) and the client's inbox prefix; CONNECT bodies that nest too deeply
or carry passwords no key can be derived from; NUL in passwords; a
back-off for failed logins; max_connections within the file-descriptor
limit; credentials for the monitoring endpoints."""

import asyncio
import base64
import json
import sys
import time

import pytest

import fastflow.client as fc
from fastflow.protocol import Op
from fastflow.server.auth import (
    LoginThrottle,
    ResponsePermits,
    hash_password,
    verify_password,
)
from fastflow.server.config import ConfigError, ServerConfig
from fastflow.server.native import frame_bytes

from helpers import wait_until
from peers import nats_door_available


# -- response permissions -------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_response_permits_are_spent_expire_and_stay_bounded():
    clock = FakeClock()
    rp = ResponsePermits(2, 10.0, limit=3, clock=clock)
    assert not rp("_INBOX.a.1")                     # nothing received
    rp.pending.extend([b"_INBOX.a.1", b"_INBOX.a.2"])
    assert rp("_INBOX.a.1") and rp("_INBOX.a.1")    # max = 2
    assert not rp("_INBOX.a.1")                     # spent: gone
    assert rp("_INBOX.a.2", use=False) and len(rp) == 1
    clock.t += 10.0
    assert not rp("_INBOX.a.2")                     # expired
    assert len(rp) == 0
    # at the limit: the oldest permit goes
    rp.pending.extend([b"r.1", b"r.2", b"r.3", b"r.4"])
    rp.take()
    assert list(rp.permits) == ["r.2", "r.3", "r.4"] and rp.evicted == 1
    clock.t += 11.0
    rp.prune()
    assert len(rp) == 0


def test_allow_responses_config():
    from fastflow.server.auth import Permissions

    p = Permissions.from_dict({"publish": ["a.>"], "allow_responses": True})
    assert (p.resp_max, p.resp_expires) == (1, 120.0)
    assert "_INBOX.x" not in [s for s in ("_INBOX.x",) if p.can_publish(s)]
    p = Permissions.from_dict({"publish": ["a.>"],
                               "allow_responses": {"max": 3, "expires": "5s"}})
    assert (p.resp_max, p.resp_expires) == (3, 5.0)
    assert p.response_permits().max == 3
    assert Permissions.from_dict({"allow_responses": True}).response_permits() is None
    with pytest.raises(ConfigError, match=r"allow_responses.max: expected an integer >= 1"):
        Permissions.from_dict({"allow_responses": {"max": 0}})
    with pytest.raises(ConfigError, match=r"unknown keys \['ttl'\]"):
        Permissions.from_dict({"allow_responses": {"ttl": "1s"}})


def _response_users(expires="300ms"):
    return dict(
        token="admin",
        users=[
            # the requester: publishes requests, reads only its own inboxes
            {"user": "req", "password": "req-pw", "permissions": {
                "publish": ["svc.>"], "subscribe": ["_INBOX.req.>"]}},
            # the service: receives requests, may publish nothing but answers
            {"user": "svc", "password": "svc-pw", "permissions": {
                "publish": {"deny": [">"]}, "subscribe": ["svc.>"],
                "allow_responses": {"max": 1, "expires": expires}}},
            # another user with allow_responses who did not get the request
            {"user": "mal", "password": "mal-pw", "permissions": {
                "publish": ["mal.>"], "subscribe": ["mal.>"], "allow_responses": True}},
        ])


def test_client_inbox_prefix():
    c = fc.Client("fastflow://127.0.0.1:1", inbox_prefix="_INBOX.alice")
    assert c.new_inbox().startswith("_INBOX.alice.")
    with pytest.raises(ValueError, match="inbox_prefix must be a subject without wildcards"):
        fc.Client("fastflow://127.0.0.1:1", inbox_prefix="_INBOX.*")


def test_native_responses_only_to_requests_received_once_and_in_time(aloop, ffserver):
    async def main():
        async with ffserver(**_response_users()) as srv:
            url = srv.url
            mal_errors, svc_errors = [], []
            async with await fc.connect(url, user="req", password="req-pw",
                                        inbox_prefix="_INBOX.req") as req, \
                    await fc.connect(url, user="svc", password="svc-pw",
                                     error_callback=svc_errors.append) as svc, \
                    await fc.connect(url, user="mal", password="mal-pw",
                                     error_callback=mal_errors.append) as mal:
                # a user may no longer read everyone's replies
                spy = mal.subscribe("_INBOX.>")
                with pytest.raises(fc.PermissionDeniedError):
                    await spy.next(2)
                mal_errors.clear()
                sub = svc.subscribe("svc.q", with_reply=True)
                await svc.flush()

                task = asyncio.ensure_future(req.request("svc.q", b"?", timeout=3))
                ev, reply = await sub.next(2)
                assert reply.startswith("_INBOX.req.")
                # the forger answers first: refused, the requester never sees it
                mal.publish(reply, b"forged")
                await mal.flush()
                await wait_until(lambda: mal_errors)
                assert mal_errors[0].code == 403 and reply in mal_errors[0].message
                svc.respond(reply, b"answer")
                assert (await task).data == b"answer"
                # once: a second answer on the same reply subject is refused
                svc.respond(reply, b"again")
                await svc.flush()
                await wait_until(lambda: svc_errors)
                assert svc_errors[0].code == 403
                # too late: the permit expired
                task = asyncio.ensure_future(req.request("svc.q", b"?", timeout=1))
                ev, reply2 = await sub.next(2)
                await asyncio.sleep(0.4)
                svc.respond(reply2, b"late")
                await svc.flush()
                await wait_until(lambda: len(svc_errors) == 2)
                assert reply2 in svc_errors[1].message
                with pytest.raises(asyncio.TimeoutError):
                    await task
                # an answer through PUB with ACK is checked the same way
                task = asyncio.ensure_future(req.request("svc.q", b"?", timeout=3))
                ev, reply3 = await sub.next(2)
                with pytest.raises(fc.PermissionDeniedError):
                    await mal.publish_ack(reply3, b"forged")
                await svc.publish_ack(reply3, b"acked answer")
                assert (await task).data == b"acked answer"
                assert srv.stats()["permission_denied"] >= 4

    aloop(main)


def test_nats_responses_only_to_requests_received(aloop, ffnats, natspy):
    async def main():
        async with ffnats(**_response_users("1s")) as srv:
            u = srv.nats_url
            errors = []

            async def err_cb(exc):
                errors.append(exc)

            req = await natspy.connect(u, user="req", password="req-pw",
                                       inbox_prefix="_INBOX.req")
            svc = await natspy.connect(u, user="svc", password="svc-pw")
            mal = await natspy.connect(u, user="mal", password="mal-pw", error_cb=err_cb)
            try:
                msgs = asyncio.Queue()
                await svc.subscribe("svc.q", cb=msgs.put)
                await svc.flush()
                task = asyncio.ensure_future(req.request("svc.q", b"?", timeout=3))
                m = await asyncio.wait_for(msgs.get(), 2)
                assert m.reply.startswith("_INBOX.req.")
                await mal.publish(m.reply, b"forged")
                await mal.flush()
                await wait_until(lambda: errors)
                assert "permissions violation for publish" in str(errors[0]).lower()
                await m.respond(b"answer")
                assert (await task).data == b"answer"
                assert mal.is_connected and svc.is_connected
            finally:
                for c in (req, svc, mal):
                    await c.close()

    aloop(main)


# -- CONNECT bodies -------------------------------------------------------------------------

async def _read_all(reader, timeout=2.0):
    """What the server sends until it closes (a timeout fails the test)."""
    data = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return data
        data += chunk


async def _native_connect(port, body, timeout=2.0):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(frame_bytes(Op.CONNECT, body=body))
        return await _read_all(r, timeout)
    finally:
        w.close()


async def _nats_exchange(port, data, timeout=2.0, local="127.0.0.1"):
    r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    try:
        w.write(data)
        return await _read_all(r, timeout)
    finally:
        w.close()


def test_connect_nested_too_deeply_or_undecodable_password(aloop, ffserver, free_port):
    deep = b'{"name": ' + b"[" * 3000 + b"]" * 3000 + b"}"
    five = b'{"name": [[[[[1]]]]]}'
    surrogate = b'{"user": "u", "password": "\\ud800"}'
    nul = json.dumps({"user": "u", "password": "pw\0"}).encode()
    nats = nats_door_available() is None

    async def main():
        kw = {"nats_port": free_port()} if nats else {}
        async with ffserver(users=[{"user": "u", "password": hash_password("pw")}],
                            auth_timeout=10.0, **kw) as srv:
            for body, text in ((deep, b"CONNECT: nested deeper than 4 levels"),
                               (five, b"CONNECT: nested deeper than 4 levels"),
                               (surrogate, b"not valid UTF-8 (a lone surrogate)"),
                               (nul, b"a password cannot contain a NUL character")):
                got = await _native_connect(srv.port, body)
                assert text in got, got
            if nats:
                for body, text in (
                        (b'CONNECT {"name":' + b"[" * 2000 + b"]" * 2000 + b"}\r\n",
                         b"-ERR 'Invalid Connect Protocol'"),
                        (b'CONNECT {"name": [[[[[1]]]]]}\r\n', b"-ERR 'Invalid Connect Protocol'"),
                        (b'CONNECT {"user": "u", "pass": "\\ud800"}\r\n',
                         b"-ERR 'Authorization Violation'")):
                    got = await _nats_exchange(srv.nats_port, body)
                    assert got.startswith(b"INFO ") and text in got, got
            assert srv.stats()["connections"] == 0

    aloop(main)


# -- NUL in passwords -------------------------------------------------------------------------

def test_password_with_nul_is_not_the_password_without_it(aloop, ffserver):
    stored = hash_password("password")
    assert verify_password("password", stored)
    assert not verify_password("password\0", stored)
    assert not verify_password(b"password\0\0", stored)
    with pytest.raises(ValueError, match="cannot contain a NUL"):
        hash_password("pw\0")
    with pytest.raises(ConfigError, match=r"auth.users\[0\].password: a password cannot contain"):
        from fastflow.server.auth import Authenticator
        Authenticator(ServerConfig(users=[{"user": "u", "password": "pw\0"}]))

    async def main():
        async with ffserver(users=[{"user": "u", "password": stored}]) as srv:
            with pytest.raises(fc.AuthenticationError, match="NUL"):
                await fc.connect(srv.url, user="u", password="password\0", reconnect=False)
            async with await fc.connect(srv.url, user="u", password="password"):
                pass

    aloop(main)


# -- failed logins ------------------------------------------------------------------------------

def test_login_throttle_unit():
    clock = FakeClock()
    t = LoginThrottle(free=2, base=0.5, cap=2.0, max_sources=2, clock=clock)
    assert t.reserve("a") == 0.0
    t.failed("a")
    assert t.reserve("a") == 0.0
    t.failed("a")                                   # the second: back-off from now on
    assert t.reserve("a") == 0.5
    assert t.reserve("a") == 1.0                    # queued behind the first
    assert t.reserve("a") == 1.5
    assert t.reserve("a") == 2.0
    assert t.reserve("a") is None                   # past the cap: refused unchecked
    assert t.reserve("b") == 0.0                    # another address is not slowed
    t.failed("b")
    t.failed("c")                                   # table full: "a" (failed least recently) goes
    assert "a" not in t.sources and t.reserve("a") == 0.0
    t.failed("c")
    t.succeeded("c")
    assert t.reserve("c") == 0.0


def test_failed_logins_back_off_per_address(aloop, ffnats):
    # (the NATS door: its CONNECT is one text line)
    async def main():
        async with ffnats(users=[{"user": "u", "password": "pw"}], login_free_failures=2,
                          login_backoff=0.3, login_backoff_max=0.6, auth_timeout=5.0) as srv:
            bad = b'CONNECT {"user":"u","pass":"guess","verbose":false}\r\nPING\r\n'
            good = b'CONNECT {"user":"u","pass":"pw","verbose":false}\r\nPING\r\n'
            for _ in range(2):
                got = await _nats_exchange(srv.nats_port, bad)
                assert b"-ERR 'Authorization Violation'" in got
            assert srv.throttle.delayed == 0
            t0 = time.monotonic()
            got = await _nats_exchange(srv.nats_port, bad)
            assert b"-ERR 'Authorization Violation'" in got
            assert time.monotonic() - t0 >= 0.3         # the back-off is the behaviour
            assert srv.throttle.delayed == 1
            # another address logs in at once, unaffected
            r, w = await asyncio.open_connection("127.0.0.1", srv.nats_port,
                                                 local_addr=("127.0.0.2", 0))
            w.write(good)
            line = await asyncio.wait_for(r.readline(), 2)
            assert line.startswith(b"INFO ")
            assert await asyncio.wait_for(r.readline(), 2) == b"PONG\r\n"
            w.close()
            assert srv.throttle.delayed == 1
            # a burst from the throttled address: one check per back-off, the rest
            # (beyond login_backoff_max) refused unchecked
            got = await asyncio.gather(*[_nats_exchange(srv.nats_port, bad, 5.0)
                                         for _ in range(6)])
            assert all(b"-ERR 'Authorization Violation'" in g for g in got)
            assert srv.throttle.refused >= 3
            assert srv.stats()["auth_refused_unchecked"] == srv.throttle.refused
            assert srv.stats()["auth_failures"] >= 9

    aloop(main)


# -- the file-descriptor limit -----------------------------------------------------------------

_LIMITED = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'fastflow', 'serve'] + sys.argv[1:])")


def test_max_connections_fits_the_fd_limit(aloop, ffproc, free_port):
    nats_port = free_port()
    sp = ffproc("--nats-port", nats_port, monitor=True)
    args = sp._command()[4:]
    sp._command = lambda: [sys.executable, "-c", _LIMITED] + args

    async def main():
        await sp.astart()
        held = []
        try:
            assert "max_connections 65536 lowered to 55" in sp.log
            refused = 0
            for _ in range(120):                    # more than the 96 descriptors
                r, w = await asyncio.open_connection("127.0.0.1", nats_port)
                held.append(w)
                # (a refusal is INFO and -ERR in one write: one read gets both)
                first = await asyncio.wait_for(r.read(65536), 5)
                assert first.startswith(b"INFO ")
                if first.endswith(b"\r\n-ERR 'maximum connections exceeded'\r\n"):
                    refused += 1
                    continue
                w.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
                assert await asyncio.wait_for(r.readline(), 5) == b"PONG\r\n"
            assert refused == 120 - 55
            # native clients get the documented ERR 429
            with pytest.raises(fc.ConnectError, match=r"429: maximum connections \(55\) reached"):
                await fc.connect(sp.url, reconnect=False)
            # and the monitoring port still answers
            status, _, body = await _http_get(sp.monitor_port, "/healthz")
            assert status == 200 and json.loads(body) == {"status": "ok"}
        finally:
            for w in held:
                w.close()
            await sp.astop()

    aloop(main)


# -- monitoring credentials --------------------------------------------------------------------

async def _http_get(port, path, headers=()):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        # (Connection: close: read until the monitor closes; it keeps connections open)
        w.write("GET {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n".format(
            path, "".join("{}: {}\r\n".format(k, v) for k, v in headers)).encode())
        data = await _read_all(r, 5)
    finally:
        w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split()[1]), lines[1:], body


def test_monitoring_credentials(aloop, ffserver):
    def basic(user, pw):
        return ("Authorization", "Basic " + base64.b64encode(
            "{}:{}".format(user, pw).encode()).decode())

    async def main():
        async with ffserver(monitor=True, monitor_token="mon-token", login_free_failures=2,
                            login_backoff=0.05,
                            monitor_users=[{"user": "ops", "password": hash_password("ops-pw")},
                                           {"user": "dev", "password": "dev-pw"}]) as srv:
            port = srv.monitor_port
            for path in ("/varz", "/connz?subs=1", "/streamz", "/metrics", "/"):
                status, headers, _ = await _http_get(port, path)
                assert status == 401, path
                assert 'WWW-Authenticate: Bearer realm="fastflow"' in headers
                assert 'WWW-Authenticate: Basic realm="fastflow", charset="UTF-8"' in headers
                status, _, _ = await _http_get(port, path, [("Authorization",
                                                             "Bearer mon-token")])
                assert status == 200, path
            for creds in (("Authorization", "Bearer wrong"), basic("ops", "nope"),
                          basic("dev", "dev-pw\0"), ("Authorization", "Basic !!!")):
                assert (await _http_get(port, "/varz", [creds]))[0] == 401
            assert srv.throttle.delayed >= 1            # guesses back off as logins do
            assert (await _http_get(port, "/varz", [basic("ops", "ops-pw")]))[0] == 200
            assert (await _http_get(port, "/varz", [basic("dev", "dev-pw")]))[0] == 200
            status, _, body = await _http_get(port, "/healthz")      # open, for probes
            assert status == 200 and json.loads(body) == {"status": "ok"}
            assert srv.monitor.auth_failures >= 9

    aloop(main)


def test_auth_and_monitor_settings_are_checked():
    assert ServerConfig(login_backoff="50ms", login_backoff_max="3s").login_backoff == 0.05
    with pytest.raises(ConfigError, match=r"login_free_failures: expected an int >= 0"):
        ServerConfig(login_free_failures=-1)
    with pytest.raises(ConfigError, match=r"monitor.users\[0\]: unknown key 'pass'"):
        ServerConfig(monitor_users=[{"user": "u", "pass": "p"}])
    with pytest.raises(ConfigError, match=r"monitor.token: expected a non-empty string"):
        ServerConfig(monitor_token="")
