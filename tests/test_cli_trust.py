"""The command line's provenance: ``fastflow keys new|id``, ``pub --sign``,
``sub --verify``, against an in-process server whose trust policy wants
``signed.>`` signed by the key made here."""

import asyncio
import sys

from fastflow import Event
from fastflow.cli import main as cli_main
from fastflow.client import connect
from fastflow.trust import SigningKey, sign


async def _run(capsys, *argv):
    capsys.readouterr()
    rc = await asyncio.to_thread(cli_main, [str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_keys_pub_sign_sub_verify(aloop, ffserver, tmp_path, capsys):
    async def main():
        rc, out, _ = await _run(capsys, "keys", "new", tmp_path / "alice.key")
        assert rc == 0 and "key id" in out
        assert (tmp_path / "alice.key").stat().st_mode & 0o777 == 0o600
        rc, out, _ = await _run(capsys, "keys", "id", tmp_path / "alice.key.pub")
        kid = out.split()[0]
        assert rc == 0 and out.split()[1] == "ed25519" and len(kid) == 64
        rc, _, err = await _run(capsys, "keys", "new", tmp_path / "alice.key")
        assert rc == 2 and "exists" in err
        trust = {"keys": {"alice": str(tmp_path / "alice.key.pub")},
                 "rules": [{"subjects": ["signed.a"], "keys": ["alice"]}]}
        async with ffserver(trust=trust) as srv:
            # a subscriber through the CLI (a process of its own), verifying, until it
            # has taken 4 events
            sub = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fastflow", "sub", "-s", srv.url, "signed.>",
                "--count", "4", "--verify", "alice=" + str(tmp_path / "alice.key.pub"),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                await _publish_and_check(capsys, srv, sub, tmp_path)
            finally:
                if sub.returncode is None:
                    sub.kill()
                    await sub.wait()

    aloop(main)


async def _publish_and_check(capsys, srv, sub, tmp_path):
    line = await asyncio.wait_for(sub.stderr.readline(), 10)
    assert b"listening" in line, line
    rc, _, err = await _run(capsys, "pub", "-s", srv.url, "signed.a", "hello",
                            "--sign", tmp_path / "alice.key", "--key-id", "alice",
                            "--attr", "region=eu", "--sign-ext", "region", "--ack")
    assert rc in (0, 1), err          # (1: no stream stored it)
    rc, _, err = await _run(capsys, "pub", "-s", srv.url, "signed.a", "plain")
    assert rc != 0 and "unsigned" in err
    # signed by a key the policy does not know: refused by the server
    SigningKey.generate().save(tmp_path / "mallory.key")
    rc, _, err = await _run(capsys, "pub", "-s", srv.url, "signed.a", "x",
                            "--sign", tmp_path / "mallory.key")
    assert rc != 0 and "unknown key" in err
    # one on a subject no rule covers reaches the subscriber, which refuses it (on
    # stderr), then takes two good ones
    c = await connect(srv.url)
    c.publish_event(sign(Event("signed.b", b"m", type="t"),
                   SigningKey.from_pem((tmp_path / "mallory.key").read_bytes())))
    await c.flush()
    rc, _, err = await _run(capsys, "pub", "-s", srv.url, "signed.a", "again",
                            "--sign", tmp_path / "alice.key", "--key-id", "alice",
                            "-n", "2")
    assert rc == 0, err
    out, err = await asyncio.wait_for(sub.communicate(), 10)
    assert sub.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 3 and all("(verified: alice)" in ln for ln in lines), lines
    assert "hello" in lines[0] and "again" in lines[2]
    assert b"signed.b" in err and b"refused: signature check failed: unknown key" in err
    await c.close()
    st = srv.accounts.default.flow.trust.stats()
    assert st["refused"]["unsigned"] == 1 and st["refused"]["unknown key"] == 1
    assert st["passed"] == 3


def test_client_subscribe_verify(aloop, ffserver):
    """``subscribe(verify=keys)``: the callback gets verified events only (strict: the
    signed extensions, not the others); a forged one goes to error_callback."""
    from fastflow.errors import SignatureError
    from fastflow.trust import KeySet

    alice, mallory = SigningKey.generate(keyid="alice"), SigningKey.generate()

    async def main():
        async with ffserver() as srv:
            errors = []
            c = await connect(srv.url, error_callback=errors.append)
            got, agot = [], []

            async def acb(ev):
                agot.append(ev)
            c.subscribe("x.>", got.append, verify=KeySet([alice.public]))
            c.subscribe("x.>", acb, verify=[alice], verify_mode="passthrough")
            await c.flush()
            c.publish_event(sign(Event("x.1", b"ok", type="t", a="1", b="2"), alice, ["a"]))
            c.publish_event(sign(Event("x.2", b"forged", type="t"), mallory))
            c.publish("x.3", b"plain")
            await c.flush()
            for _ in range(100):
                if len(got) + len(errors) >= 4 and len(agot) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert [(e.routing_subject, e.data, e.extensions) for e in got] == [
                ("x.1", b"ok", {"a": "1"})]
            assert [e.data for e in agot] == [b"ok", b"plain"]      # (passthrough: unsigned)
            assert sorted(e.reason for e in errors) == ["unknown key", "unknown key",
                                                        "unsigned"]
            assert all(isinstance(e, SignatureError) for e in errors)
            await c.close()

    aloop(main)
