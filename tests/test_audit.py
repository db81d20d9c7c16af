"""``fastflow audit`` and fastflow.audit (docs/provenance.md): a clean stream
verifies; each kind of tampering is found with its reason and location; bad
input is reported, never a traceback.  The streams are written by both cores
(``core`` fixture); the attacker edits the files with tests/chain_frames.py."""

import json
import os
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from chain_frames import fix_crc, frames, genesis, rebuild
from fastflow.audit import (
    AuditError,
    audit_stream,
    record_body,
    sign_checkpoint,
    verify_checkpoint,
    verify_range,
)
from fastflow.cli import main

SEG = 4096


def seg_files(path):
    return sorted(p for p in path.iterdir() if p.suffix == ".seg")


def write_pub(key, path):
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def checkpoint(log, name, key):
    seq, link = log.chain_head()
    cp = sign_checkpoint({"stream": name, "seq": seq, "head": link.hex(), "time": 1}, key)
    with open(os.path.join(log.path, "checkpoints.jsonl"), "a") as f:
        f.write(json.dumps(cp) + "\n")
    return cp


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def stream(core, tmp_path, key):
    """A data dir with stream ``orders``: several sealed segments, two
    signed checkpoints, server.pub beside the streams."""
    d = tmp_path / "data" / "streams" / "orders"
    with core.Log(path=d, segment_size=SEG) as log:
        for i in range(120):
            log.append("orders.%d" % (i % 3), b"%05d" % i + b"." * (20 + i % 40))
            if i == 59:
                checkpoint(log, "orders", key)
        checkpoint(log, "orders", key)
    write_pub(key, tmp_path / "data" / "server.pub")
    assert len(seg_files(d)) >= 4
    return d


def audit(capsys, *args):
    rc = main(["audit", *map(str, args)])
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    return rc, out.out + out.err


def test_clean_stream_audits_ok(stream, capsys):
    rc, out = audit(capsys, stream.parent.parent)
    assert rc == 0, out
    assert "stream orders" in out and "120 records in the files" in out and "2 verified" in out
    assert "server.pub" in out and "MB/s" in out and "audit OK" in out
    rc, out = audit(capsys, stream.parent.parent, "--stream", "orders", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["ok"] and doc["streams"][0]["checkpoints_verified"] == 2
    rc, out = audit(capsys, stream.parent.parent, "--stream", "nope")
    assert rc == 2 and "no stream 'nope'" in out


def expect_failure(path, reason, file=None, offset=None, **kw):
    pub = path.parent.parent / "server.pub"
    if "public_key" not in kw and pub.exists():
        kw.update(public_key=_pub(path), key_source=str(pub))
    r = audit_stream(path, **kw)
    assert not r.ok
    f = r.failure
    assert reason in f["reason"], f
    if file is not None:
        assert os.path.basename(f["file"]) == file, f
    if offset is not None:
        assert f["offset"] == offset, f
    return f


def test_flipped_byte_in_sealed_segment(stream):
    seg = seg_files(stream)[1]
    buf = bytearray(seg.read_bytes())
    fr = frames(bytes(buf))[3]
    buf[fr["offset"] + 40] ^= 0x01
    seg.write_bytes(bytes(buf))
    expect_failure(stream, "checksum mismatch", seg.name, fr["offset"])


def test_removed_record(stream):
    seg = seg_files(stream)[1]
    buf = seg.read_bytes()
    fr = frames(buf)[2]
    seg.write_bytes(buf[: fr["offset"]] + buf[fr["offset"] + fr["length"] :])
    f = expect_failure(stream, "chain link mismatch", seg.name, fr["offset"])
    assert "removed" in f["reason"]


def test_reordered_records(stream):
    seg = seg_files(stream)[1]
    buf = seg.read_bytes()
    a, b = frames(buf)[2:4]
    fa = buf[a["offset"] : a["offset"] + a["length"]]
    fb = buf[b["offset"] : b["offset"] + b["length"]]
    seg.write_bytes(buf[: a["offset"]] + fb + fa + buf[b["offset"] + b["length"] :])
    expect_failure(stream, "chain link mismatch", seg.name, a["offset"])


def test_truncated_frame_with_recomputed_crc(stream):
    # the attacker cuts a record's payload and fixes length and CRC: only
    # the chain can tell
    seg = seg_files(stream)[2]
    buf = bytearray(seg.read_bytes())
    fr = frames(bytes(buf))[4]
    cut = 5
    off, n = fr["offset"], fr["length"]
    del buf[off + n - 32 - cut : off + n - 32]
    struct.pack_into("<I", buf, off, n - cut)
    fix_crc(buf, off)
    seg.write_bytes(bytes(buf))
    expect_failure(stream, "chain link mismatch", seg.name, off)


def test_truncated_segment_tail(stream):
    # whole frames cut from the end of a sealed segment: the next segment
    # no longer follows
    segs = seg_files(stream)
    buf = segs[1].read_bytes()
    fr = frames(buf)[-2]
    segs[1].write_bytes(buf[: fr["offset"]])
    f = expect_failure(stream, "chain link mismatch", segs[2].name, 0)
    assert "removed" in f["reason"]


def test_edited_record_with_recomputed_crc(stream):
    seg = seg_files(stream)[1]
    buf = bytearray(seg.read_bytes())
    fr = frames(bytes(buf))[1]
    pos = fr["offset"] + 36 + len(fr["subject"])
    buf[pos : pos + 5] = b"99999"
    fix_crc(buf, fr["offset"])
    seg.write_bytes(bytes(buf))
    expect_failure(stream, "chain link mismatch", seg.name, fr["offset"])


def test_rewritten_history_fails_the_checkpoint(stream):
    # the attacker rebuilds the whole chain from genesis with an edited
    # record: every link verifies, the signed checkpoint does not
    prev = genesis("orders")
    for i, seg in enumerate(seg_files(stream)):
        parts = frames(seg.read_bytes())
        if i == 1:
            parts[0]["data"] = b"X" + parts[0]["data"][1:]
        body, prev = rebuild(parts, prev)
        seg.write_bytes(body)
    f = expect_failure(stream.parent.parent / "streams" / "orders", "does not reach the "
                       "checkpoint's head", "checkpoints.jsonl",
                       public_key=_pub(stream), key_source="server.pub")
    assert f["seq"] == 60


def _pub(stream):
    from fastflow.audit import load_public_key

    return load_public_key(stream.parent.parent / "server.pub")


def test_checkpoint_with_altered_signature(stream, capsys):
    p = stream / "checkpoints.jsonl"
    lines = p.read_text().splitlines()
    cp = json.loads(lines[0])
    sig = bytearray(__import__("base64").b64decode(cp["sig"]))
    sig[0] ^= 1
    cp["sig"] = __import__("base64").b64encode(bytes(sig)).decode()
    p.write_text(json.dumps(cp) + "\n" + lines[1] + "\n")
    rc, out = audit(capsys, stream.parent.parent)
    assert rc == 1 and "signature does not verify" in out and "checkpoints.jsonl at offset 0" in out


def test_checkpoint_signed_by_another_key(stream, capsys, tmp_path):
    other = Ed25519PrivateKey.generate()
    with open(stream / "checkpoints.jsonl", "a") as f:
        cp = json.loads((stream / "checkpoints.jsonl").read_text().splitlines()[-1])
        f.write(json.dumps(sign_checkpoint(cp, other)) + "\n")
    rc, out = audit(capsys, stream.parent.parent)
    assert rc == 1 and "signed by another key" in out
    # with --key naming the other key, the server's own checkpoints fail instead
    pub = write_pub(other, tmp_path / "other.pub")
    rc, out = audit(capsys, stream.parent.parent, "--key", pub)
    assert rc == 1 and "other.pub" in out and "signed by another key" in out


def test_purge_passes_deleted_segment_fails(core, tmp_path, capsys):
    d = tmp_path / "s"
    with core.Log(path=d, segment_size=SEG) as log:
        for i in range(200):
            log.append("a.%d" % (i % 2), b"%05d" % i + bytes(30))
        log.purge("a.1")
        log.purge(up_to=100)        # segments go, with an eviction marker
        log.append("a.0", b"after")
    rc, out = audit(capsys, d)
    assert rc == 0 and "eviction: seqs 1.." in out, out
    segs = seg_files(d)
    assert len(segs) >= 3
    segs[0].unlink()                # by hand: no marker
    f = expect_failure(d, "does not follow the link of the newest eviction marker", segs[1].name,
                       0)
    assert "deleted by hand" in f["reason"]


def test_deleted_middle_segment_fails(stream):
    segs = seg_files(stream)
    segs[2].unlink()
    expect_failure(stream, "chain link mismatch", segs[3].name, 0)


def test_deleted_first_segment_without_eviction(stream):
    segs = seg_files(stream)
    segs[0].unlink()
    expect_failure(stream, "does not follow the genesis link", segs[1].name, 0)


def test_garbage_and_hostile_input(stream, capsys):
    data = stream.parent.parent
    with open(stream / "checkpoints.jsonl", "ab") as f:
        f.write(b"not json\n{\"stream\": 1}\n\xff\xfe\n" + b"x" * 70000 + b"\n[]\n")
    rc, out = audit(capsys, data)
    assert rc == 1 and "line 3: not a checkpoint" in out
    (stream / "checkpoints.jsonl").unlink()
    # a length field that lies (past the end of the file), in a sealed segment
    seg = seg_files(stream)[1]
    buf = bytearray(seg.read_bytes())
    struct.pack_into("<I", buf, 0, 0x7FFFFFFF)
    seg.write_bytes(bytes(buf))
    f = expect_failure(stream, "out of range", seg.name, 0)
    # a symlink in place of a segment
    os.unlink(seg)
    os.symlink(seg_files(stream)[0], seg)
    f = expect_failure(stream, "symlink", seg.name, 0)
    # not a directory, a missing one
    rc, out = audit(capsys, seg_files(stream)[0])
    assert rc == 2 and "not a directory" in out
    rc, out = audit(capsys, data / "nothing")
    assert rc == 2
    # a key file that is no key
    (data / "bad.pub").write_bytes(b"\0" * 100)
    rc, out = audit(capsys, data, "--key", data / "bad.pub")
    assert rc == 2 and "not a PEM public key" in out


def test_lying_length_in_newest_segment(stream):
    # no crash leaves a length past the end of the preallocated live
    # segment: not a torn tail
    seg = seg_files(stream)[-1]
    buf = bytearray(seg.read_bytes())
    fr = frames(bytes(buf))[-2]
    struct.pack_into("<I", buf, fr["offset"], len(buf))
    seg.write_bytes(bytes(buf))
    expect_failure(stream, "out of range", seg.name, fr["offset"])


def test_checkpoint_past_the_end(stream, key):
    # the newest segment's tail cut off with its records: the checkpoint at
    # seq 120 is past the chain's end
    seg = seg_files(stream)[-1]
    buf = seg.read_bytes()
    fr = frames(buf)
    seg.write_bytes(buf[: fr[-3]["offset"]])
    expect_failure(stream, "past the end of the chain", "checkpoints.jsonl",
                   public_key=key.public_key(), key_source="test")


def test_verify_range(core, tmp_path, key):
    d = tmp_path / "orders"
    with core.Log(path=d) as log:
        for i in range(10):
            log.append("orders.eu", b"event %d" % i, time=i)
        before = log.chain_head()[1]
        for i in range(10, 25):
            log.append("orders.us", b"event %d" % i)
        cp = checkpoint(log, "orders", key)
        b = log.read(11, limit=100)
        bodies = [record_body(b.seqs[i], b.ts[i], b.times[i], b.subject(i), b.data(i))
                  for i in range(len(b))]
    assert verify_range(before, bodies, cp, key.public_key()).hex() == cp["head"]
    assert verify_range(before.hex(), bodies, cp).hex() == cp["head"]
    with pytest.raises(AuditError, match="checkpoint's head"):
        verify_range(before, bodies[:-1] + [bodies[-1][:-1] + b"!"], cp)
    with pytest.raises(AuditError, match="ends at seq 24"):
        verify_range(before, bodies[:-1], cp)
    with pytest.raises(AuditError, match="another key"):
        verify_range(before, bodies, cp, Ed25519PrivateKey.generate().public_key())
    bad = dict(cp, seq=cp["seq"] + 1)
    with pytest.raises(AuditError, match="does not verify"):
        verify_checkpoint(bad, key.public_key())


# -- the server's signed checkpoints (fastflow/server/checkpoints.py) ---------------------------

def test_server_signs_checkpoints(aloop, ffserver, tmp_path, capsys):
    import asyncio

    from fastflow.server import ServerConfig
    from fastflow.server.config import config_from_dict

    data = tmp_path / "data"
    cfg = ServerConfig(**config_from_dict({"provenance": {"checkpoint_events": 5,
                                                          "checkpoint_interval": "100ms"}}))
    cfg.validate()
    assert (cfg.checkpoint_events, cfg.checkpoint_interval) == (5, 0.1)

    async def main():
        async with ffserver(data_dir=str(data), checkpoint_events=5, checkpoint_interval=0.1,
                            streams=[{"name": "orders", "subjects": ["orders.>"]}]) as srv:
            seen = []
            srv.flow.subscribe("$SYS.stream.orders.checkpoint", seen.append)
            for i in range(12):
                srv.flow.publish("orders.eu", b"%d" % i)
            for _ in range(100):
                if seen and json.loads(bytes(seen[-1].data))["seq"] == 12:
                    break
                await asyncio.sleep(0.02)
            cp = json.loads(bytes(seen[-1].data))
            assert cp["stream"] == "orders" and cp["seq"] == 12 and len(cp["head"]) == 64
            assert seen[-1].type == "io.fastflow.checkpoint"
            n = srv.checkpoints.signed
            await asyncio.sleep(0.3)        # unchanged: no new checkpoint
            assert srv.checkpoints.signed == n
            srv.flow.publish("orders.eu", b"last")
        # stop signs the last change

    aloop(main)
    assert os.stat(data / "server.key").st_mode & 0o777 == 0o600
    assert (data / "server.pub").exists()
    lines = (data / "streams" / "orders" / "checkpoints.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["seq"] == 13
    rc, out = audit(capsys, data)
    assert rc == 0, out
    assert "{} in file, {} verified".format(len(lines), len(lines)) in out


def test_account_streams_are_audited(core, tmp_path, capsys):
    data = tmp_path / "data"
    for d in (data / "streams" / "orders", data / "accounts" / "acme" / "streams" / "orders"):
        with core.Log(path=d) as log:
            log.append("orders.x", b"1")
    rc, out = audit(capsys, data)
    assert rc == 0 and "stream orders" in out and "stream acme/orders" in out, out
    rc, out = audit(capsys, data, "--stream", "acme/orders")
    assert rc == 0 and "stream orders " not in out and "chain 'orders'" in out


def test_server_key_file(tmp_path):
    from fastflow.errors import FastflowError
    from fastflow.server.checkpoints import load_or_create_key

    d = tmp_path / "new" / "data"
    key = load_or_create_key(str(d))            # made, with its directory
    assert os.stat(d / "server.key").st_mode & 0o777 == 0o600
    again = load_or_create_key(str(d))          # loaded: the same key
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert again.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    (d / "server.pub").unlink()
    load_or_create_key(str(d))                  # server.pub written again
    assert (d / "server.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    (d / "server.key").write_bytes(b"garbage")
    with pytest.raises(FastflowError, match="not a PEM private key"):
        load_or_create_key(str(d))
