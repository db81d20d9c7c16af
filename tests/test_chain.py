"""The hash chain of file-backed logs (docs/log.md, format 2; docs/provenance.md),
against both cores (``core`` fixture), checked with an independent parser
(tests/chain_frames.py)."""

import hashlib
import os

import pytest

from chain_frames import frames, genesis
from conftest import CORES, both_cores
from fastflow.audit import audit_stream


def seg_files(path):
    return sorted(p for p in path.iterdir() if p.suffix == ".seg")


def all_frames(path):
    out = []
    for f in seg_files(path):
        for fr in frames(f.read_bytes()):
            fr["file"] = f.name
            out.append(fr)
    return out


def check_chain(path, name=None, start=None):
    """Every link of the directory's frames, recomputed: the last link."""
    link = genesis(name or path.name) if start is None else start
    for fr in all_frames(path):
        if fr["version"] == 0:
            link = genesis(name or path.name)
            continue
        assert fr["link"] == hashlib.sha256(link + fr["body"]).digest(), (fr["file"], fr["offset"])
        link = fr["link"]
    return link


def test_links_follow_the_frames(core, tmp_path):
    d = tmp_path / "orders"
    with core.Log(path=d) as log:
        log.append("a.b", b"one")
        log.append_batch("a.c", [b"two", b"three"])
        seq, head = log.chain_head()
        assert seq == 3 and len(head) == 32
        assert log.chain_name == "orders"
    fr = all_frames(d)
    assert [f["seq"] for f in fr] == [1, 2, 3] and all(f["version"] == 2 for f in fr)
    assert check_chain(d) == head
    assert fr[0]["link"] == core.chain_link(core.chain_genesis("orders"), fr[0]["body"])
    # a memory log has no chain
    assert core.Log().chain_head() == (0, None)


def test_chain_name_sets_the_genesis(core, tmp_path):
    d = tmp_path / "dir"
    with core.Log(path=d, chain_name="payments") as log:
        log.append("a", b"x")
        head = log.chain_head()[1]
    assert check_chain(d, "payments") == head
    with pytest.raises(ValueError, match="chain_name"):
        core.Log(path=tmp_path / "x", chain_name="")
    with pytest.raises(ValueError, match="chain must be"):
        core.Log(path=tmp_path / "x", chain="yes")


def test_chain_survives_reopen_and_rollover(core, tmp_path):
    d = tmp_path / "s"
    with core.Log(path=d, segment_size=4096) as log:
        for i in range(150):
            log.append("s.%d" % (i % 3), b"%04d" % i + bytes(40))
        head = log.chain_head()
    assert len(seg_files(d)) > 2
    assert check_chain(d) == head[1]
    with core.Log(path=d, segment_size=4096) as log:
        assert log.chain_head() == head     # recovered from the last frame
        for i in range(150):
            log.append("s.x", b"more %d" % i)
        head = log.chain_head()
    files = seg_files(d)
    # a segment's first frame chains from the previous segment's last link
    first = frames(files[1].read_bytes())[0]
    last = frames(files[0].read_bytes())[-1]
    assert first["link"] == hashlib.sha256(last["link"] + first["body"]).digest()
    assert check_chain(d) == head[1]
    assert audit_stream(d).ok


def test_purge_and_eviction_markers_are_chained(core, tmp_path):
    d = tmp_path / "s"
    with core.Log(path=d, segment_size=4096, max_events=40) as log:
        for i in range(300):
            log.append("s.%d" % (i % 5), b"%04d" % i + bytes(30))
        log.purge("s.1")
        log.purge(up_to=280)
        head = log.chain_head()[1]
    assert int(seg_files(d)[0].stem) > 200      # the old segments are gone
    kinds = [f["kind"] for f in all_frames(d)]
    assert 2 in kinds and 3 in kinds and 4 in kinds   # delete, purge, eviction markers
    ev = [f for f in all_frames(d) if f["kind"] == 4][-1]
    assert len(ev["data"]) >= 40 and b"segments deleted" in ev["data"]
    # the oldest kept frame chains from the link the newest eviction marker names
    first = all_frames(d)[0]
    assert first["link"] == hashlib.sha256(ev["data"][:32] + first["body"]).digest()
    assert check_chain(d, start=ev["data"][:32]) == head
    r = audit_stream(d)
    assert r.ok, r.failure
    assert r.evictions and r.markers >= 3


def test_torn_tail_cut_on_reopen_keeps_the_chain(core, tmp_path):
    d = tmp_path / "s"
    with core.Log(path=d) as log:
        for i in range(20):
            log.append("a", b"r%d" % i)
        head = log.chain_head()
    seg = seg_files(d)[-1]
    buf = bytearray(seg.read_bytes())
    end = all_frames(d)[-1]
    end = end["offset"] + end["length"]
    # a crash while writing the next frame into the preallocated (zero)
    # space of the live segment: its bytes, but no length yet
    buf[end:] = bytes(4096)
    buf[end + 4 : end + 60] = os.urandom(56)
    seg.write_bytes(bytes(buf))
    r = audit_stream(d)
    assert r.ok and any("torn tail" in w for w in r.warnings)
    with core.Log(path=d) as log:
        assert log.stats()["truncated_bytes"] > 0
        assert log.chain_head() == head
        log.append("a", b"after the crash")
    assert check_chain(d) is not None
    r = audit_stream(d)
    assert r.ok and not r.warnings and r.records == 21


def test_format1_frames_then_chain(core, tmp_path):
    d = tmp_path / "s"
    with core.Log(path=d, chain=False) as log:
        log.append("a", b"old")
        assert log.chain_head() == (1, None) and log.chain_name is None
    with core.Log(path=d) as log:
        log.append("a", b"new")
        head = log.chain_head()[1]
    fr = all_frames(d)
    assert [f["version"] for f in fr] == [0, 2]
    assert fr[1]["link"] == hashlib.sha256(genesis("s") + fr[1]["body"]).digest() == head
    r = audit_stream(d)
    assert r.ok and r.unchained == 1 and r.records == 2


@both_cores
def test_cores_continue_each_others_chain(tmp_path):
    d = tmp_path / "s"
    native, ref = CORES["native"], CORES["ref"]
    for i, core in enumerate([native, ref, native]):
        with core.Log(path=d, segment_size=4096) as log:
            for j in range(60):
                log.append("x.%d" % i, b"%d-%d" % (i, j) + bytes(20))
            head = log.chain_head()[1]
    assert check_chain(d) == head
    assert audit_stream(d).ok


def test_stream_checkpoint(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    import fastflow
    from fastflow.audit import verify_checkpoint

    key = Ed25519PrivateKey.generate()
    with fastflow.Flow(tmp_path) as flow:
        st = flow.add_stream("orders", "orders.>")
        for i in range(5):
            flow.publish("orders.eu", b"%d" % i)
        seq, link = st.chain_head()
        cp = st.checkpoint()
        assert cp["stream"] == "orders" and cp["seq"] == seq == 5 and cp["head"] == link.hex()
        signed = st.checkpoint(key)
        verify_checkpoint(signed, key.public_key())
        mem = flow.add_stream("mem", "mem.>", storage="memory")
        with pytest.raises(fastflow.FastflowError, match="no hash chain"):
            mem.checkpoint()
    lines = (tmp_path / "streams" / "orders" / "checkpoints.jsonl").read_text().splitlines()
    assert len(lines) == 1
