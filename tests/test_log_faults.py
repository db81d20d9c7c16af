"""Fault tests for the file-backed event log (docs/log.md, "On disk").

Real processes and real files, no mocks:

- a child process appends to ``Log(path=...)`` and acknowledges every seq it
  got back in a separate fsync'ed file; the parent SIGKILLs it at a random
  (seeded) moment, reopens the directory and checks that every acknowledged
  record is there byte for byte, with contiguous, never reused sequences;
- segment files are damaged by hand (torn tail, garbage, zeroed bytes, a
  flipped byte in an older segment, a corrupt ``cursors.json``) and the
  recovery rules of docs/log.md are checked;
- the CRC32C and the record layout are checked with a parser written here.

Every reopen of a damaged directory is first tried in a child process on a
copy of the directory (``open_guarded``), so that a crash of the native core
(a segfault) fails one test with the inputs instead of killing the run.

``FASTFLOW_TEST_SEED=<n>`` (printed by the ``seed`` fixture) replays the kill
delays of a run; where exactly a kill lands in the writer still depends on
timing, so the failure messages carry what was found on disk.
"""

import gc
import hashlib
import itertools
import json
import logging
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import fastflow
from fastflow.errors import CorruptLogError

try:
    from fastflow._core import Log
except ImportError:  # no compiled core, or a core that does not export Log yet
    pytest.skip(
        "fastflow._core has no Log (the native core is not built or does not export it yet)",
        allow_module_level=True,
    )

from fastflow import _core

REPO = Path(fastflow.__file__).resolve().parent.parent
LOGGER = "fastflow.log"

# -- the on-disk format (docs/log.md), parsed independently of the implementation ------

# [u32 length][u32 CRC32C of the rest][u64 seq][i64 ts][i64 time]
# [u16 subject length][u8 kind][u8 format][subject][data][link, format 2], little-endian
HEADER = struct.Struct("<IIQqqHBB")
assert HEADER.size == 36
KIND_RECORD = 1


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def py_crc32c(data, crc=0):
    """CRC32C (Castagnoli, reflected, init/xorout 0xFFFFFFFF): the oracle."""
    crc ^= 0xFFFFFFFF
    for b in bytes(data):
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def scan_segment(buf, crc=None):
    """Parse a segment image: (records, end, problem).

    ``records`` are the valid records from the start (dicts), ``end`` the
    offset after the last of them and ``problem`` None when everything after
    ``end`` is zero fill (or nothing), else a description of the damaged tail.
    """
    crc = crc or _core.crc32c
    out = []
    off = 0
    n = len(buf)
    problem = None
    while off < n:
        if off + 4 > n:
            problem = "truncated length field"
            break
        (length,) = struct.unpack_from("<I", buf, off)
        if length == 0:
            break
        if length < HEADER.size or off + length > n:
            problem = "length {} out of bounds ({} bytes left)".format(length, n - off)
            break
        _, stored, seq, ts, t, slen, kind, reserved = HEADER.unpack_from(buf, off)
        if crc(bytes(buf[off + 8 : off + length])) != stored:
            problem = "checksum mismatch"
            break
        if HEADER.size + slen > length:
            problem = "subject length out of bounds"
            break
        out.append(
            dict(
                offset=off,
                length=length,
                crc=stored,
                seq=seq,
                ts=ts,
                time=t,
                kind=kind,
                reserved=reserved,
                subject=bytes(buf[off + 36 : off + 36 + slen]).decode(),
                # format 2 (reserved == 2): a 32-byte chain link ends the frame
                data=bytes(buf[off + 36 + slen : off + length - (32 if reserved == 2 else 0)]),
            )
        )
        off += length
    if problem is None and any(buf[off:]):
        tail = bytes(buf[off:])
        seq_field = struct.unpack_from("<Q", tail, 8)[0] if len(tail) >= 16 else None
        problem = (
            "zero length field at offset {} followed by {} non-zero bytes in the next {} "
            "(seq field {}: a record written up to its length field)".format(
                off, sum(1 for b in tail if b), len(tail.rstrip(b"\0")), seq_field
            )
        )
    return out, off, problem


def seg_files(d):
    return sorted(p for p in Path(d).iterdir() if p.suffix == ".seg")


def records_of(d):
    """(file, record) for every valid record of every segment, oldest first."""
    out = []
    for f in seg_files(d):
        recs, _, _ = scan_segment(f.read_bytes())
        out.extend((f, r) for r in recs if r["kind"] == KIND_RECORD)
    return out


# -- deterministic content: the child and the parent share this source ------------------

SHARED_SRC = r'''
import hashlib

def payload(seq):
    """The payload of record seq: 32..1952 bytes, derived from seq only."""
    k = 1 + (seq * 7919) % 61
    return hashlib.sha256(str(seq).encode()).digest() * k

def small_payload(seq):
    k = 1 + seq % 3
    return hashlib.sha256(str(seq).encode()).digest() * k

def subject(seq):
    return "s.%d" % (seq % 5)
'''
_shared = {}
exec(SHARED_SRC, _shared)  # the same functions the child processes run
payload = _shared["payload"]
small_payload = _shared["small_payload"]
subject = _shared["subject"]


def served(log):
    """Every retained record as (seq, subject, data)."""
    b = log.read(0, limit=1 << 30)
    return [(seq, subj, bytes(mv)) for seq, ts, subj, mv in b]


def check_content(rows, make=None):
    """No record is served with content other than what was appended."""
    make = make or payload
    bad = [
        (seq, subj, len(data))
        for seq, subj, data in rows
        if subj != subject(seq) or data != make(seq)
    ]
    assert not bad, "records served with wrong subject/payload (seq, subject, len): %r" % bad[:10]


def log_messages(caplog, levelno=logging.WARNING):
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= levelno]


# -- child processes --------------------------------------------------------------------


def child_env():
    env = dict(os.environ)
    env.pop("FASTFLOW_NO_EXTENSIONS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONFAULTHANDLER"] = "1"
    return env


PROBE_SRC = r'''
import json, sys
from fastflow._core import Log
kw = json.loads(sys.argv[2])
try:
    log = Log(path=sys.argv[1], **kw)
except Exception as exc:
    print("raised %s: %s" % (type(exc).__name__, exc))
    sys.exit(0)
b = log.read(0, limit=1 << 30)
for seq, ts, subj, mv in b:
    bytes(mv)
print("opened: %d records, last_seq %d, %r" % (len(b), log.last_seq, log.stats()))
log.close()
'''

_probe_ids = itertools.count()


def open_guarded(tmp_path, d, **kw):
    """Log(path=d, **kw), after checking in a child process, on a copy of d,
    that opening it does not crash the interpreter."""
    n = next(_probe_ids)
    script = tmp_path / "probe_open.py"
    if not script.exists():
        script.write_text(PROBE_SRC)
    scratch = tmp_path / ("probe-copy-%d" % n)
    shutil.copytree(d, scratch)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), str(scratch), json.dumps(kw)],
            capture_output=True,
            timeout=30,
            env=child_env(),
            cwd=str(REPO),
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode < 0:
        listing = {f.name: f.stat().st_size for f in sorted(Path(d).iterdir())}
        pytest.fail(
            "opening Log(path=<copy of %s>, **%r) killed the process with signal %s\n"
            "directory: %r\nstdout: %s\nstderr (tail): %s"
            % (
                d,
                kw,
                signal.Signals(-proc.returncode).name,
                listing,
                proc.stdout.decode(errors="replace"),
                proc.stderr.decode(errors="replace")[-3000:],
            )
        )
    return Log(path=d, **kw)


WRITER_SRC = r'''
import os, sys, time
from fastflow._core import Log
SHARED
path, mode, ack_path = sys.argv[1], sys.argv[2], sys.argv[3]
log = Log(path=path, fsync=mode, fsync_interval=0.02, segment_size=64 * 1024)
ack = os.open(ack_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
sys.stdout.write("ready %d\n" % log.last_seq)
sys.stdout.flush()
deadline = time.monotonic() + 5.0     # bounded: the parent kills long before
while time.monotonic() < deadline:
    seq = log.last_seq + 1
    got = log.append(subject(seq), payload(seq))
    if got != seq:
        sys.stderr.write("append returned seq %d, expected %d\n" % (got, seq))
        os._exit(3)
    # acknowledged: the append returned; durable before the next append
    os.write(ack, b"%d\n" % got)
    os.fsync(ack)
sys.stderr.write("not killed within 5 s\n")
os._exit(4)
'''.replace("SHARED", SHARED_SRC)


def wait_line(proc, timeout):
    """The first line the child writes on stdout (bounded wait)."""
    fd = proc.stdout.fileno()
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf:
        left = end - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")


def kill_child(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=10)


def read_acks(path):
    """Acknowledged seqs (complete lines only: a partial line was not acknowledged)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    lines = raw.split(b"\n")[:-1]
    return [int(x) for x in lines]


# -- 1, 2: SIGKILL at random points ------------------------------------------------------

ROUNDS = 5


@pytest.mark.parametrize("mode", ["always", "interval", "never"])
def test_sigkill_loses_no_acknowledged_record(mode, seed, tmp_path, caplog):
    """A writer killed with SIGKILL at a random moment, 5 times over the same
    directory: every acknowledged record survives (for every fsync mode: process
    death, not power loss, so the mmap'd bytes are in the page cache)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    rng = random.Random("{}-{}".format(seed, mode))
    d = tmp_path / "log"
    ack_file = tmp_path / "acks"
    err_file = tmp_path / "child.stderr"
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SRC)
    known = 0  # the last seq verified present (every seq up to it must stay)
    n_acks = 0
    torn_rounds = []
    for rnd in range(ROUNDS):
        # mostly mid-stream, sometimes right after the open
        delay = rng.uniform(0.0, 0.02) if rng.random() < 0.25 else rng.uniform(0.02, 0.35)
        with open(err_file, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(d), mode, str(ack_file)],
                stdout=subprocess.PIPE,
                stderr=err,
                env=child_env(),
                cwd=str(REPO),
            )
        try:
            line = wait_line(proc, timeout=15)
            assert line.startswith("ready "), (
                "round %d: writer did not start: %r, stderr: %s"
                % (rnd, line, err_file.read_text(errors="replace")[-3000:])
            )
            # the child sees exactly what the parent verified and appended
            assert int(line.split()[1]) == known, (rnd, line, known)
            time.sleep(delay)
        finally:
            rc = kill_child(proc)
            proc.stdout.close()
        assert rc == -signal.SIGKILL, "round %d: writer exited with %s, stderr: %s" % (
            rnd,
            rc,
            err_file.read_text(errors="replace")[-3000:],
        )

        acks = read_acks(ack_file)
        new_acks = acks[n_acks:]
        n_acks = len(acks)
        # the child acknowledges seqs in order, continuing after `known`
        assert new_acks == list(range(known + 1, known + 1 + len(new_acks))), (rnd, new_acks[:5])
        high = max([known] + new_acks)

        # what the kill left in the newest segment, before recovery touches it
        newest = seg_files(d)[-1]
        newest_recs, end, problem = scan_segment(newest.read_bytes())
        try:
            meta = (d / "meta.json").read_text()
        except FileNotFoundError:
            meta = None
        else:
            try:
                meta = json.dumps(json.loads(meta), sort_keys=True)
            except ValueError:
                pass
        if problem is not None:
            torn_rounds.append((rnd, newest.name, end, problem))

        caplog.clear()
        log = open_guarded(tmp_path, d, fsync=mode, segment_size=64 * 1024)
        try:
            st = log.stats()
            rows = served(log)
            seqs = [r[0] for r in rows]
            ctx = (
                "round %d (delay %.3f s, mode %s; before the reopen: highest acknowledged "
                "seq %d, newest segment %s with %d records, tail %r, meta.json %s)"
                % (rnd, delay, mode, high, newest.name, len(newest_recs), problem, meta)
            )
            # every acknowledged seq is present
            missing = sorted(set(range(1, high + 1)) - set(seqs))
            assert not missing, "%s: acknowledged/verified seqs lost: %r" % (ctx, missing[:20])
            # contiguous from first_seq to last_seq (docs/log.md: seqs are
            # contiguous; the seq of an append that never returned may be handed
            # out again, but no seq is skipped); nothing evicted (no limits)
            assert log.first_seq == 1, ctx
            holes = sorted(set(range(log.first_seq, log.last_seq + 1)) - set(seqs))
            assert not holes, "%s: last_seq %d but seqs %r were never served (skipped)" % (
                ctx,
                log.last_seq,
                holes[:20],
            )
            assert seqs == list(range(log.first_seq, log.last_seq + 1)), ctx
            assert len(log) == len(seqs), ctx
            # at most the one record appended but not yet acknowledged is extra
            assert high <= log.last_seq <= high + 1, (ctx, high, log.last_seq)
            check_content(rows)
            # a torn tail is reported, a clean one is not
            if problem is not None:
                assert st["truncated_bytes"] > 0, (ctx, st)
                assert any(newest.name in m for m in log_messages(caplog)), (ctx, caplog.text)
            else:
                assert st["truncated_bytes"] == 0, (ctx, st)
            assert st["corrupt_records"] == 0, (ctx, st)
            # no reuse: the next append gets last_seq + 1
            nxt = log.last_seq + 1
            assert log.append(subject(nxt), payload(nxt)) == nxt, ctx
            assert log.get(nxt).data == payload(nxt)
            known = nxt
        finally:
            log.close()
    print("mode=%s acknowledged=%d last_seq=%d torn tails=%r" % (mode, n_acks, known, torn_rounds))
    assert n_acks > 0, "no append was acknowledged in %d rounds" % ROUNDS

    # a last clean reopen serves the whole history
    with Log(path=d, fsync=mode, segment_size=64 * 1024) as log:
        rows = served(log)
        assert [r[0] for r in rows] == list(range(1, known + 1))
        check_content(rows)
        assert log.stats()["truncated_bytes"] == 0


# -- 3: torn tail of the newest segment ---------------------------------------------------

N_TAIL = 5


def _damage(kind, seg, last):
    """Damage the newest segment; returns the seq of the last record that stays good."""
    raw = bytearray(seg.read_bytes())
    off, length = last["offset"], last["length"]
    if kind == "truncated_mid_record":
        # the file ends in the middle of the last record (a torn write)
        os.truncate(seg, off + length // 2)
        return last["seq"] - 1
    if kind == "garbage_after_last":
        # non-zero bytes right after the last (intact) record, where the zero
        # fill should be
        end = off + length
        garbage = b"\x99garbage\xaa" * 3
        raw[end : end + len(garbage)] = garbage
        seg.write_bytes(bytes(raw))
        return last["seq"]
    if kind == "zeroed_inside_last":
        # a few bytes in the middle of the last record's payload zeroed: its
        # CRC no longer matches
        start = off + 36 + len(last["subject"]) + len(last["data"]) // 2
        assert any(raw[start : start + 4]), "test bug: those bytes are zero already"
        raw[start : start + 4] = bytes(4)
        seg.write_bytes(bytes(raw))
        return last["seq"] - 1
    if kind == "zeroed_length_field":
        # the length field of the last record zeroed, its other bytes intact:
        # what a writer killed between copying the record and storing its
        # length (written last) leaves behind; a torn tail (docs/log.md: logged
        # and counted, never served)
        raw[off : off + 4] = bytes(4)
        seg.write_bytes(bytes(raw))
        return last["seq"] - 1
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    ["truncated_mid_record", "garbage_after_last", "zeroed_inside_last", "zeroed_length_field"],
)
def test_torn_tail_recovered(kind, tmp_path, caplog):
    d = tmp_path / "log"
    with Log(path=d, segment_size=64 * 1024) as log:
        for seq in range(1, N_TAIL + 1):
            assert log.append(subject(seq), payload(seq)) == seq
    (seg,) = seg_files(d)
    recs, _, problem = scan_segment(seg.read_bytes())
    assert problem is None and [r["seq"] for r in recs] == list(range(1, N_TAIL + 1))
    good = _damage(kind, seg, recs[-1])

    caplog.set_level(logging.WARNING, logger=LOGGER)
    caplog.clear()
    log = open_guarded(tmp_path, d, segment_size=64 * 1024)
    try:
        st = log.stats()
        rows = served(log)
        ctx = "damage %s, last good seq %d, stats %r" % (kind, good, st)
        # the good records are there, the torn one is never served
        assert [r[0] for r in rows] == list(range(1, good + 1)), ctx
        check_content(rows)
        if good < N_TAIL:
            with pytest.raises(KeyError):
                log.get(N_TAIL)
        assert st["truncated_bytes"] > 0, ctx
        msgs = log_messages(caplog)
        assert any(seg.name in m for m in msgs), "%s: no warning naming %s on %r: %r" % (
            ctx,
            seg.name,
            LOGGER,
            msgs,
        )
        assert st["corrupt_records"] == 0, ctx
        # A torn record was never acknowledged (its append never returned), so
        # its seq may be handed out again; every seq up to the last good
        # record may have been acknowledged and is never reused.  The
        # implementation resumes at last_seq + 1 with last_seq either the last
        # good record or the torn one; nothing else is allowed.
        before = log.last_seq
        assert before in (good, N_TAIL), ctx
        new = log.append("after.recovery", b"new record")
        assert new == before + 1 and new > good, ctx
        assert log.get(new).data == b"new record" and log.get(new).subject == "after.recovery"
    finally:
        log.close()

    caplog.clear()
    with Log(path=d, segment_size=64 * 1024) as log:
        rows = served(log)
        assert [r[0] for r in rows] == list(range(1, good + 1)) + [new]
        check_content(rows[:-1])
        assert rows[-1][1:] == ("after.recovery", b"new record")
        assert log.stats()["truncated_bytes"] == 0
        assert not log_messages(caplog), caplog.text
    # on disk: the torn bytes are gone, zero fill after the new record
    recs, _, problem = scan_segment(seg.read_bytes())
    assert problem is None, problem
    assert [r["seq"] for r in recs] == list(range(1, good + 1)) + [new]


# -- 4: a corrupt record in an older segment -----------------------------------------------


def test_corruption_in_oldest_segment(tmp_path, caplog):
    d = tmp_path / "log"
    total = 150
    with Log(path=d, segment_size=4096) as log:
        for seq in range(1, total + 1):
            assert log.append(subject(seq), small_payload(seq)) == seq
    before = records_of(d)
    files = seg_files(d)
    assert len(files) >= 3, files
    assert [r["seq"] for _, r in before] == list(range(1, total + 1))
    oldest = files[0]
    in_oldest = [r for f, r in before if f == oldest]
    assert len(in_oldest) >= 6
    bad = in_oldest[3]
    # flip one byte in the middle of the record's payload
    pos = bad["offset"] + 36 + len(bad["subject"]) + len(bad["data"]) // 2
    raw = bytearray(oldest.read_bytes())
    raw[pos] ^= 0xFF
    oldest.write_bytes(bytes(raw))
    # docs: the scan resynchronises at the next record that verifies, so only
    # the damaged record is lost (and reported as a loss)
    skipped = [bad["seq"]]
    kept = [r["seq"] for f, r in before if r["seq"] != bad["seq"]]
    ctx = "flipped byte %d of %s (record seq %d at offset %d)" % (
        pos,
        oldest.name,
        bad["seq"],
        bad["offset"],
    )

    # strict: refuses to open, naming the file and the offset
    with pytest.raises(CorruptLogError) as ei:
        open_guarded(tmp_path, d, segment_size=4096, strict=True)
    msg = str(ei.value)
    assert oldest.name in msg and str(bad["offset"]) in msg, (ctx, msg)

    caplog.set_level(logging.WARNING, logger=LOGGER)
    caplog.clear()
    log = open_guarded(tmp_path, d, segment_size=4096)
    try:
        st = log.stats()
        rows = served(log)
        got = [r[0] for r in rows]
        msgs = log_messages(caplog)
        assert any(oldest.name in m and str(bad["offset"]) in m for m in msgs), (ctx, msgs)
        assert st["corrupt_records"] > 0, (ctx, st)
        assert st["corrupt_records"] == len(skipped), (ctx, st, skipped)
        assert bad["seq"] not in got, ctx
        assert got == kept, (ctx, got)
        assert log.losses == [{"first_seq": bad["seq"], "last_seq": bad["seq"],
                               "file": str(oldest), "offset": bad["offset"],
                               "reason": log.losses[0]["reason"]}], (ctx, log.losses)
        assert any("records {}..{} lost".format(bad["seq"], bad["seq"]) in m
                   for m in log_messages(caplog, logging.ERROR)), (ctx, msgs)
        check_content(rows, make=small_payload)
        # the sequence goes on after the newest record
        assert log.last_seq == total, ctx
        assert log.append(subject(total + 1), small_payload(total + 1)) == total + 1
    finally:
        log.close()


# -- 5: CRC32C and the record layout ---------------------------------------------------------


def test_crc32c_and_stored_checksums(seed, tmp_path):
    crc = _core.crc32c
    assert crc(b"123456789") == 0xE3069283
    assert py_crc32c(b"123456789") == 0xE3069283
    assert crc(b"") == 0
    assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    rng = random.Random(seed)
    for n in [1, 3, 7, 8, 9, 63, 64, 65, 1000, 4099]:
        data = bytes(rng.getrandbits(8) for _ in range(n))
        assert crc(data) == py_crc32c(data), n
        cut = rng.randrange(n + 1)
        assert crc(data[cut:], crc(data[:cut])) == crc(data), (n, cut)  # chainable
        assert crc(bytearray(data)) == crc(memoryview(data)) == crc(data)

    d = tmp_path / "log"
    with Log(path=d, segment_size=64 * 1024) as log:
        rows = [(subject(s), payload(s), s * 1000 - 7) for s in range(1, 9)]
        for subj, data, t in rows:
            log.append(subj, data, time=t)
        log.append("empty", b"")
        ts = list(log.read(0).ts)
        log.flush()
        (seg,) = seg_files(d)
        assert seg.name == "%020d.seg" % 1
        # the live segment is preallocated to segment_size, zero fill after
        # the last record
        live = seg.read_bytes()
        assert len(live) == 64 * 1024
        _, end, problem = scan_segment(live, crc=py_crc32c)
        assert problem is None and end < len(live) and not any(live[end:])
    buf = seg.read_bytes()  # closed: still nothing but zeros after the last record
    recs, end, problem = scan_segment(buf, crc=py_crc32c)
    assert problem is None
    assert len(buf) >= end and not any(buf[end:])
    assert len(recs) == 9
    off = 0
    for i, r in enumerate(recs):
        assert r["offset"] == off
        rec = buf[off : off + r["length"]]
        (stored,) = struct.unpack_from("<I", rec, 4)
        assert stored == crc(rec[8:]) == py_crc32c(rec[8:])
        assert r["seq"] == i + 1 and r["kind"] == KIND_RECORD and r["reserved"] == 2
        assert r["ts"] == ts[i]
        if i < 8:
            assert (r["subject"], r["data"], r["time"]) == rows[i]
        else:
            assert (r["subject"], r["data"], r["time"]) == ("empty", b"", 0)
        # format 2: the chain link SHA-256(previous link || body) ends the frame
        assert r["length"] == 36 + len(r["subject"].encode()) + len(r["data"]) + 32
        prev = hashlib.sha256(b"fastflow.chain.v1\0log").digest() if i == 0 else \
            buf[off - 32 : off]
        assert rec[-32:] == hashlib.sha256(prev + rec[8:-32]).digest()
        off += r["length"]


# -- 6: cursors -----------------------------------------------------------------------------

CURSOR_CHILD_SRC = r'''
import sys, time
from fastflow._core import Log
log = Log(path=sys.argv[1], fsync="always")
log.append_batch("a.b", [b"%d" % i for i in range(20)])
log.set_cursor("reader", 7)
log.set_cursor("audit", 20)
log.set_cursor("gone", 3)
log.delete_cursor("gone")
sys.stdout.write("ready\n")
sys.stdout.flush()
time.sleep(30)   # bounded: killed by the parent
'''


def test_cursors_survive_sigkill_and_restart(tmp_path):
    d = tmp_path / "log"
    script = tmp_path / "cursor_child.py"
    script.write_text(CURSOR_CHILD_SRC)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(d)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=child_env(),
        cwd=str(REPO),
    )
    try:
        line = wait_line(proc, timeout=15)
    finally:
        rc = kill_child(proc)
        proc.stdout.close()
    assert line == "ready\n", (line, rc)
    assert rc == -signal.SIGKILL
    # killed without close: the cursors are there
    log = open_guarded(tmp_path, d)
    with log:
        assert log.last_seq == 20
        assert log.cursors() == {"reader": 7, "audit": 20}
        assert log.cursor("reader") == 7 and log.cursor("gone") == 0
        assert log.lag("reader") == 13 and log.lag("audit") == 0
        log.set_cursor("reader", 15)
        log.delete_cursor("audit")
    # a clean restart
    with Log(path=d) as log:
        assert log.cursors() == {"reader": 15}
        assert log.lag("reader") == 5
    assert json.loads((d / "cursors.json").read_text()) == {"reader": 15}


@pytest.mark.parametrize(
    "content",
    [b'{"reader": 15', b"\x00\x00\x00\x00", b'["reader", 15]', b'{"reader": "15"}'],
    ids=["truncated", "zeros", "not_an_object", "not_an_int"],
)
def test_corrupt_cursors_file(content, tmp_path):
    d = tmp_path / "log"
    with Log(path=d) as log:
        log.append("a", b"x")
        log.set_cursor("reader", 1)
    cur = d / "cursors.json"
    assert json.loads(cur.read_text()) == {"reader": 1}
    cur.write_bytes(content)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CorruptLogError) as ei:
            open_guarded(tmp_path, d)
        msg = str(ei.value)
        del ei
        gc.collect()  # the half-built Log is garbage now
    assert "cursors.json" in msg, msg
    # the failed open released what it had opened (the live segment's file
    # and map) instead of leaving it to the garbage collector
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks, "Log(path=...) raising %r leaked: %r" % (msg, leaks)
    # the records are intact: a repaired file opens
    cur.write_bytes(b'{"reader": 1}')
    with Log(path=d) as log:
        assert log.cursors() == {"reader": 1}
        assert [r[0] for r in served(log)] == [1]


def test_recycled_segments_hold_no_stale_records(tmp_path):
    """Old segments are reused as new ones (their pages are resident); a
    reused file is cleared first, so a reopen finds exactly the retained
    records and no torn tail."""
    d = tmp_path / "log"
    # (format 1: with the chain's 32 bytes a frame, the phase of rolls and
    # deletions at the end differs and no spare may be left at that moment)
    with Log(path=d, segment_size=4096, max_events=50, chain=False) as log:
        for i in range(3000):
            log.append("r.%d" % (i % 7), b"%06d" % i + b"." * (i % 90))
        st = log.stats()
        assert st["deleted_segments"] > 10
        spares = [n for n in os.listdir(d) if n.endswith(".spare")]
        assert 1 <= len(spares) <= 2
        expect = [(s, bytes(m)) for s, _, _, m in log.read(1, limit=100)]
    with Log(path=d, segment_size=4096, max_events=50) as log:
        assert log.stats()["truncated_bytes"] == 0
        assert log.stats()["corrupt_records"] == 0
        assert [(s, bytes(m)) for s, _, _, m in log.read(1, limit=100)] == expect
        assert log.first_seq == 2951 and log.last_seq == 3000


def test_markers_only_segment_is_never_rolled_onto_itself(tmp_path):
    """A segment holding only markers is named after the next seq; when it is
    full, it grows (a roll would reopen the same name and erase the markers),
    also when the next record then arrives: the purge stays in force."""
    d = tmp_path / "log"
    with Log(path=d, segment_size=4096) as log:
        for i in range(5):
            log.append("keep.x" if i < 3 else "gone.x", b"%d" % i * 100)
        for i in range(100):  # markers roll into a segment named 6
            log.purge("nothing.%d" % i)
        assert sorted(p.name for p in d.glob("*.seg"))[-1] == "%020d.seg" % 6
        assert log.purge("gone.>") == 2  # its marker is in segment 6
        for i in range(100, 200):  # and fill it
            log.purge("nothing.%d" % i)
        assert log.append("keep.x", b"x" * 4018) == 6  # (4050 before the 32-byte link)
    with Log(path=d, segment_size=4096) as log:
        assert [s for s, _, _, _ in log.read(1)] == [1, 2, 3, 6]
        assert log.get(6).data == b"x" * 4018
        assert log.stats()["truncated_bytes"] == 0
