"""The event log's files under stress (issue 11): a full disk, close() racing
an append, damaged segments.

- A full disk: a small tmpfs is mounted where the tests run as root (they
  skip, saying why, elsewhere).  Every fill runs in a child process, so a
  SIGBUS (what a write through the map of an unallocated page does on a
  full disk) fails the test with its output instead of killing pytest.
- close() from one thread while another appends, many times, in a child
  process for the same reason (a segfault).
- Damaged segments: a flipped byte in the middle of the newest segment, a
  truncated or deleted sealed segment: only what is damaged is lost, and
  every loss is reported at ERROR with its seq range and in ``Log.losses``.

Every test runs on both cores.
"""

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

import fastflow
from fastflow.protocol import error_code

from peers import free_port

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_TIMEOUT = 240


def _mount_tmpfs(path, size):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the full-disk tests fill one)")
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here ({}): the full-disk tests need one".format(
            (r.stderr or r.stdout).strip()))


def _disk(tmp_path, size):
    path = str(tmp_path / "disk")
    _mount_tmpfs(path, size)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs, unmounted at the end."""
    yield from _disk(tmp_path, "4m")


@pytest.fixture
def server_disk(tmp_path):
    """An 8 MiB tmpfs, unmounted at the end."""
    yield from _disk(tmp_path, "8m")


def run_child(core, code, *args, timeout=CHILD_TIMEOUT):
    """Run ``code`` in a child Python with the log class of ``core`` (the
    ``core`` fixture) as ``Log``; returns its JSON result (the last stdout line).  A crash (a
    signal) fails the test with the child's output."""
    prelude = (
        "import json, os, sys, threading, time, random\n"
        "import fastflow\n"
        "from fastflow.errors import FastflowError, LogFullError\n"
        "if sys.argv[1] == 'ref':\n"
        "    from fastflow._ref.log import Log\n"
        "else:\n"
        "    from fastflow._core import Log\n"
    )
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONFAULTHANDLER="1")
    name = "native" if core.COMPILED else "ref"
    p = subprocess.run([sys.executable, "-c", prelude + code, name] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    out = "exit status {}\nstdout:\n{}\nstderr:\n{}".format(p.returncode, p.stdout[-4000:],
                                                             p.stderr[-4000:])
    assert p.returncode == 0, out
    return json.loads(p.stdout.strip().splitlines()[-1]), out


# -- a full disk: the in-process log ---------------------------------------------------------

FILL = r"""
d, filler, segment_size = sys.argv[2], sys.argv[3], int(sys.argv[4])
res = {}
# a filler takes part of the disk: deleting it frees space later
with open(filler, 'wb') as f:
    f.write(b'\1' * (1 << 20))
log = Log(path=d, segment_size=segment_size, fsync='never')
n = 0
err = None
payload = lambda i: (b'%08d' % i) * 500          # 4000 bytes
while n < 3000:                                   # 4 MiB hold fewer than 1100
    try:
        seq = log.append('fill.%d' % (n % 7), payload(n + 1))
    except LogFullError as exc:
        err = exc
        break
    n += 1
    assert seq == n, (seq, n)
res['stored'] = n
res['error'] = [type(err).__name__, str(err), getattr(err, 'path', None),
                getattr(err, 'wanted', None)]
# refused again, and a batch is refused as a whole; nothing changed
for _ in range(3):
    try:
        log.append('fill.x', payload(0))
        res['again'] = 'stored'
    except LogFullError as exc:
        res['again'] = type(exc).__name__
try:
    log.append_batch('fill.b', [b'x' * 1000] * 20)          # more than a record
    res['batch'] = 'stored'
except LogFullError as exc:
    res['batch'] = type(exc).__name__
res['after'] = [len(log), log.first_seq, log.last_seq]
# every record stored before is readable, byte for byte
ok = all(bytes(log.get(i).data) == payload(i) for i in range(1, n + 1))
res['readable'] = ok
res['stats'] = {k: log.stats().get(k) for k in ('storage_full', 'appended')}
log.close()
# a reopen on the still full disk: opens, everything there, appends refused
log = Log(path=d, segment_size=segment_size, fsync='never')
res['reopened'] = [len(log), log.last_seq]
res['reopened_readable'] = all(bytes(log.get(i).data) == payload(i)
                               for i in range(1, n + 1, 97))
try:
    log.append('fill.x', payload(0))
    res['reopened_append'] = 'stored'
except LogFullError as exc:
    res['reopened_append'] = type(exc).__name__
# space comes back: appends again, the seqs go on
os.unlink(filler)
res['freed'] = [log.append('fill.y', payload(n + 1)), log.append('fill.y', payload(n + 2))]
log.close()
log = Log(path=d, segment_size=segment_size, fsync='never')
res['final'] = [len(log), log.last_seq, bytes(log.get(n + 2).data) == payload(n + 2),
                all(bytes(log.get(i).data) == payload(i) for i in range(1, n + 1, 53))]
log.close()
print(json.dumps(res))
"""


@pytest.mark.parametrize("segment_size", [64 << 20, 256 << 10, 64 << 10],
                         ids=["one_segment", "rolls", "small_segments"])
def test_full_disk_refuses_the_append_and_keeps_the_log(core, small_disk, segment_size):
    """A full disk under the live segment (64 MiB sparse on a 4 MiB disk),
    or one that fills at segment rolls and while .idx / meta.json are
    written (256 KiB segments): StorageFullError (a LogFullError) naming
    the file and the bytes wanted, nothing stored before is lost, the log
    stays readable, reopens on the full disk, and takes appends again once
    space is free.  (Before: SIGBUS.)"""
    d = os.path.join(small_disk, "log")
    res, out = run_child(core, FILL, d, os.path.join(small_disk, "filler"), segment_size)
    n = res["stored"]
    assert 500 < n < 1100, out
    kind, msg, path, wanted = res["error"]
    assert kind == "StorageFullError", out
    assert msg.startswith("storage full: no space left on the device of " + d), out
    assert path.startswith(d) and path in msg and wanted > 0 and str(wanted) in msg, out
    assert res["again"] == res["batch"] == "StorageFullError", out
    assert res["after"] == [n, 1, n], out
    assert res["readable"] is True, out
    assert res["stats"]["storage_full"] >= 5 and res["stats"]["appended"] == n, out
    assert res["reopened"] == [n, n] and res["reopened_readable"] is True, out
    assert res["reopened_append"] == "StorageFullError", out
    assert res["freed"] == [n + 1, n + 2], out
    assert res["final"] == [n + 2, n + 2, True, True], out


ROLL = r"""
import logging
logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format='LOG %(message)s')
d, filler = sys.argv[2], sys.argv[3]
res = {}
log = Log(path=d, segment_size=64 << 10, fsync='always')
payload = lambda i: (b'%08d' % i) * 500
for i in range(1, 17):                            # 16 records fill the 64 KiB segment
    assert log.append('roll.x', payload(i)) == i
# the disk is made full: the next append must roll to a new segment, whose
# .idx and meta.json writes and allocation all meet ENOSPC
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
for size in (1 << 16, 4096, 1):
    try:
        while True:
            os.write(fd, b'\1' * size)
    except OSError:
        pass
os.close(fd)
try:
    log.append('roll.x', payload(17))
    res['roll'] = 'stored'
except LogFullError as exc:
    res['roll'] = [type(exc).__name__, str(exc)]
res['segments'] = sorted(p for p in os.listdir(d) if p.endswith('.seg'))
res['after'] = [len(log), log.last_seq,
                all(bytes(log.get(i).data) == payload(i) for i in range(1, 17))]
os.unlink(filler)
res['freed'] = log.append('roll.x', payload(17))
log.close()
log = Log(path=d, segment_size=64 << 10)
res['reopened'] = [len(log), log.last_seq,
                   all(bytes(log.get(i).data) == payload(i) for i in range(1, 18))]
log.close()
print(json.dumps(res))
"""


def test_full_disk_at_a_segment_roll(core, small_disk):
    """The disk full exactly when the live segment is: sealing it (its .idx,
    meta.json) and allocating the next one meet ENOSPC.  The append is
    refused, the sealed records stay, and once space is free the append
    goes into the new segment.  (Before: SIGBUS.)"""
    d = os.path.join(small_disk, "log")
    res, out = run_child(core, ROLL, d, os.path.join(small_disk, "filler"))
    kind, msg = res["roll"]
    assert kind == "StorageFullError", out
    assert "00000000000000000017.seg" in msg, out
    assert res["after"] == [16, 16, True], out
    assert res["freed"] == 17 and res["reopened"] == [17, 17, True], out
    assert "no space left to write" in out, out     # the .idx / meta.json left out, logged


def test_storage_full_error_is_a_log_full_error():
    e = fastflow.StorageFullError("storage full: x", "/p/1.seg", 10)
    assert isinstance(e, fastflow.LogFullError) and isinstance(e, fastflow.FastflowError)
    assert (e.path, e.wanted) == ("/p/1.seg", 10)
    assert error_code(e) == 507


# -- close() while another thread appends --------------------------------------------------

RACE = r"""
base, reps, fsync = sys.argv[2], int(sys.argv[3]), sys.argv[4]
random.seed(int(sys.argv[5]))
wrong = []
closed_seen = 0
for rep in range(reps):
    d = os.path.join(base, 'r%d' % rep)
    log = Log(path=d, segment_size=4096, fsync=fsync, fsync_interval=0.001,
              max_per_subject=3 if rep % 3 == 0 else 0)
    state = {'last': 0, 'exc': None}
    go = threading.Event()

    def appender():
        go.set()
        try:
            for i in range(200000):
                k = i % 4
                if k == 0:
                    state['last'] = log.append('race.%d' % (i % 5), b'p' * (i % 300))
                elif k == 1:
                    state['last'] = log.append_batch('race.b', [b'q' * 50] * 7)[1]
                elif k == 2 and i % 40 == 2:
                    log.purge(up_to=max(0, state['last'] - 20))
                else:
                    log.set_cursor('c', state['last']) if i % 50 == 3 else None
        except Exception as exc:
            state['exc'] = exc

    t = threading.Thread(target=appender)
    t.start()
    go.wait()
    time.sleep(random.random() * 0.02)
    log.close()
    t.join(60)
    exc = state['exc']
    if exc is None or not (isinstance(exc, FastflowError) and str(exc) == 'log is closed'):
        wrong.append([rep, repr(exc)])
    else:
        closed_seen += 1
    # the files are whole: every seq the appender got back is there
    log = Log(path=d, segment_size=4096)
    if log.last_seq < state['last']:
        wrong.append([rep, 'last_seq %d < %d' % (log.last_seq, state['last'])])
    log.close()
print(json.dumps({'wrong': wrong, 'closed_seen': closed_seen}))
"""


@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_close_while_another_thread_appends(core, tmp_path, fsync, seed):
    """close() waits for a call in progress in another thread; the other
    thread's next call raises FastflowError('log is closed').  (Before: a
    segfault in some runs, or 'truncate of closed file'.)"""
    reps = 40 if core.COMPILED else 15
    res, out = run_child(core, RACE, tmp_path, reps, fsync, seed)
    assert res["wrong"] == [], out
    assert res["closed_seen"] == reps, out


def test_closed_log_refuses_every_call(core, tmp_path):
    Log = core.Log
    log = Log(path=tmp_path / "l", segment_size=4096)
    log.append("a.b", b"x")
    log.close()
    for call in (lambda: log.append("a.b", b"y"), lambda: log.append_batch("a.b", [b"y"]),
                 lambda: log.purge(), lambda: log.set_cursor("c", 1), lambda: log.flush()):
        with pytest.raises(fastflow.FastflowError, match="^log is closed$"):
            call()
    log.close()                         # idempotent


# -- damaged segments -----------------------------------------------------------------------

LOGGER = "fastflow.log"


def _segments(d):
    return sorted(p for p in os.listdir(d) if p.endswith(".seg"))


def _records(path):
    """(seq, offset, length) of the records of one segment file."""
    import struct

    with open(path, "rb") as f:
        raw = f.read()
    out = []
    off = 0
    while off + 4 <= len(raw):
        (n,) = struct.unpack_from("<I", raw, off)
        if n == 0:
            break
        seq = struct.unpack_from("<Q", raw, off + 8)[0]
        out.append((seq, off, n))
        off += n
    return out


def _fill(Log, d, total, segment_size=4096):
    with Log(path=d, segment_size=segment_size) as log:
        for i in range(1, total + 1):
            assert log.append("dmg.%d" % (i % 3), b"%06d" % i * 8) == i


def _served(log):
    seqs = []
    seq = 1
    while True:
        b = log.read(seq, limit=1000)
        if not len(b):
            return seqs
        for i in range(len(b)):
            assert b.data(i).tobytes() == b"%06d" % b.seqs[i] * 8
        seqs.extend(b.seqs)
        seq = b.next_seq


def _errors(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.ERROR]


def test_flipped_byte_in_the_newest_segment_loses_one_record(core, tmp_path, caplog):
    """Before: the rest of the segment was dropped as a WARNING 'torn tail'."""
    Log = core.Log
    d = str(tmp_path / "log")
    _fill(Log, d, 60, segment_size=1 << 20)       # one segment
    (seg,) = _segments(d)
    path = os.path.join(d, seg)
    recs = _records(path)
    seq, off, n = recs[20]
    with open(path, "r+b") as f:
        f.seek(off + n - 3)
        b = f.read(1)
        f.seek(off + n - 3)
        f.write(bytes([b[0] ^ 0x40]))             # a payload byte of seq 21
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Log(path=d, segment_size=1 << 20) as log:
        assert _served(log) == [s for s in range(1, 61) if s != seq]
        assert log.losses == [{"first_seq": seq, "last_seq": seq, "file": path, "offset": off,
                               "reason": log.losses[0]["reason"]}]
        assert "checksum mismatch" in log.losses[0]["reason"]
        st = log.stats()
        assert st["lost_records"] == 1 and st["corrupt_records"] == 1
        assert st["truncated_bytes"] == 0
        assert log.append("dmg.0", b"%06d" % 61 * 8) == 61
    errs = _errors(caplog)
    assert any("records {0}..{0} lost".format(seq) in m and path in m and str(off) in m
               for m in errs), errs
    assert not any("torn tail" in r.getMessage() for r in caplog.records), caplog.text
    # the appends after the damage are there at the next open, the loss is still reported
    with Log(path=d, segment_size=1 << 20) as log:
        assert _served(log) == [s for s in range(1, 62) if s != seq]
        assert [(x["first_seq"], x["last_seq"]) for x in log.losses] == [(seq, seq)]


def test_torn_tail_is_not_a_loss(core, tmp_path, caplog):
    """The end of the newest segment cut in the middle of the last record
    (an append that never returned) stays a WARNING 'torn tail', no loss."""
    Log = core.Log
    d = str(tmp_path / "log")
    _fill(Log, d, 30, segment_size=1 << 20)
    (seg,) = _segments(d)
    path = os.path.join(d, seg)
    seq, off, n = _records(path)[-1]
    with open(path, "r+b") as f:
        f.truncate(off + n - 5)
    meta = os.path.join(d, "meta.json")
    with open(meta) as f:
        m = json.load(f)
    m["last_seq"] = 29                   # as if the last append had not returned
    with open(meta, "w") as f:
        json.dump(m, f)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Log(path=d, segment_size=1 << 20) as log:
        assert _served(log) == list(range(1, 30))
        assert log.losses == []
    assert any("torn tail" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records), caplog.text
    assert _errors(caplog) == []


@pytest.mark.parametrize("damage", ["truncated", "deleted", "deleted_oldest", "truncated_newest",
                                    "deleted_newest"])
def test_damaged_sealed_segment_is_reported(core, tmp_path, caplog, damage):
    """Before: a truncated or deleted sealed segment lost its records with no
    log line."""
    Log = core.Log
    d = str(tmp_path / "log")
    _fill(Log, d, 200)
    segs = _segments(d)
    assert len(segs) >= 4, segs
    victim = {"deleted_oldest": segs[0], "truncated_newest": segs[-1],
              "deleted_newest": segs[-1]}.get(damage, segs[1])
    vpath = os.path.join(d, victim)
    recs = _records(vpath)
    if damage.startswith("truncated"):
        lost = [r[0] for r in recs[len(recs) // 2:]]
        with open(vpath, "r+b") as f:
            f.truncate(recs[len(recs) // 2][1])     # at a record boundary: no bad bytes
    else:
        lost = [r[0] for r in recs]
        os.unlink(vpath)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    with Log(path=d, segment_size=4096) as log:
        assert _served(log) == [s for s in range(1, 201) if s not in lost]
        assert log.last_seq == 200                  # a seq is never reused
        assert [(x["first_seq"], x["last_seq"]) for x in log.losses] == [(lost[0], lost[-1])]
        assert log.stats()["lost_records"] == len(lost)
    errs = _errors(caplog)
    assert any("records {}..{} lost".format(lost[0], lost[-1]) in m for m in errs), errs


def test_strict_refuses_a_truncated_segment(core, tmp_path):
    Log = core.Log
    d = str(tmp_path / "log")
    _fill(Log, d, 120)
    victim = os.path.join(d, _segments(d)[1])
    recs = _records(victim)
    with open(victim, "r+b") as f:
        f.truncate(recs[2][1])
    with pytest.raises(fastflow.CorruptLogError, match=r"records \d+\.\.\d+ lost"):
        Log(path=d, segment_size=4096, strict=True)


# -- the server on a full disk -------------------------------------------------------------

CONFIG = """
data_dir = "{data}"
[[streams]]
name = "st"
subjects = ["st.>"]
storage = "file"
"""


def _nats_pub(port, subject, payload):
    """One PUB on the NATS door, answered up to the PONG (verbose off)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        buf = b""
        while b"\r\n" not in buf:
            buf += s.recv(4096)
        s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPUB ' + subject.encode() +
                  b" %d\r\n" % len(payload) + payload + b"\r\nPING\r\n")
        deadline = time.monotonic() + 10
        while b"PONG" not in buf and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf.decode("latin-1")
    finally:
        s.close()


def test_server_on_a_full_disk(core, server_disk, ffproc, monkeypatch, tmp_path):
    """``fastflow serve`` with a file-backed stream filling an 8 MiB disk:
    it does not die, each publish to the stream gets 507 (native door) /
    -ERR (NATS door), a storage_full advisory goes out, plain subscribers
    still get their events, and it restarts on the still full disk."""
    from fastflow import client as fc

    if not core.COMPILED:
        monkeypatch.setenv("FASTFLOW_NO_EXTENSIONS", "1")
    nats = core.COMPILED
    data = os.path.join(server_disk, "data")
    conf = tmp_path / "server.toml"
    conf.write_text(CONFIG.format(data=data))
    args = ["--config", conf]
    nats_port = free_port()
    if nats:
        args = ["--nats-port", nats_port] + args
    sp = ffproc(*args, monitor=True)

    async def session(fill):
        c = await fc.connect(sp.url)
        try:
            adv = []
            got = []
            c.subscribe("$SYS.advisory.storage_full", lambda ev: adv.append(ev))
            c.subscribe("plain.>", lambda ev: got.append(ev))
            await c.flush()
            stored = 0
            code = None
            if fill:
                # 64 KiB events until one is refused, then smaller ones: the
                # disk ends up too full for any event
                for size in (1 << 16, 1000, 1):
                    for _ in range(1000):           # 8 MiB hold about 125 of 64 KiB
                        try:
                            await c.publish_ack("st.x", b"e" * size)
                        except fc.ServerError as exc:
                            code = code or (exc.code, exc.message)
                            break
                        stored += 1
            for _ in range(3):                      # refused every time, the server lives
                with pytest.raises(fc.ServerError) as ei:
                    await c.publish_ack("st.y", b"z" * 1000)
                assert ei.value.code == 507, ei.value
                assert "storage full" in ei.value.message, ei.value
            c.publish("plain.a", b"still delivered")
            deadline = time.monotonic() + 15
            while (not got or not adv) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return stored, code, got, adv
        finally:
            await c.close()

    await_run = asyncio.run
    sp.start()
    stored, code, got, adv = await_run(session(True))
    assert 60 < stored < 1000 and code is not None and code[0] == 507, (stored, code, sp.log)
    assert "storage full" in code[1] and data in code[1], code
    assert [bytes(e.data) for e in got] == [b"still delivered"], sp.log
    assert adv, sp.log
    body = json.loads(bytes(adv[0].data))
    assert body["stream"] == "st" and body["path"].startswith(data), body
    if nats:
        # the NATS door answers a stream's refusal as nats-server answers a
        # core publish: no -ERR (nats-py would close), the connection lives
        answer = _nats_pub(nats_port, "st.z", b"abc")
        assert "-ERR" not in answer and "PONG" in answer, answer
    with urllib.request.urlopen("http://127.0.0.1:{}/streamz".format(sp.monitor_port),
                                timeout=10) as r:
        st = json.loads(r.read())["streams"]["st"]
    assert st["last_seq"] == stored and st["losses"] == [], st
    assert sp.proc.poll() is None, sp.log
    assert sp.stop() == 0, sp.log
    # a restart on the still full disk: serves, everything stored is there
    sp.start()
    stored2, _, got, adv = await_run(session(False))
    assert [bytes(e.data) for e in got] == [b"still delivered"], sp.log
    with urllib.request.urlopen("http://127.0.0.1:{}/streamz".format(sp.monitor_port),
                                timeout=10) as r:
        st = json.loads(r.read())["streams"]["st"]
    assert st["last_seq"] == stored and st["events"] == stored, st
    assert sp.stop() == 0, sp.log
    assert "Traceback" not in sp.log and "SIGBUS" not in sp.log, sp.log


def test_server_reports_losses_found_at_start(core, ffproc, monkeypatch, tmp_path):
    """A flipped byte in a stream's segment: the restarted server serves the
    rest, logs the lost seq range at ERROR and lists it in /streamz."""
    from fastflow import client as fc

    if not core.COMPILED:
        monkeypatch.setenv("FASTFLOW_NO_EXTENSIONS", "1")
    data = tmp_path / "data"
    conf = tmp_path / "server.toml"
    conf.write_text(CONFIG.format(data=data))
    sp = ffproc("--config", conf, monitor=True)

    async def publish():
        async with await fc.connect(sp.url) as c:
            for i in range(1, 41):
                assert await c.publish_ack("st.x", b"%04d" % i * 10) == (i, "st")

    sp.start()
    asyncio.run(publish())
    assert sp.stop() == 0, sp.log
    segdir = data / "streams" / "st"
    (seg,) = [p for p in os.listdir(segdir) if p.endswith(".seg")]
    path = str(segdir / seg)
    seq, off, n = _records(path)[16]
    with open(path, "r+b") as f:
        f.seek(off + n - 2)
        b = f.read(1)
        f.seek(off + n - 2)
        f.write(bytes([b[0] ^ 1]))
    sp.start()
    with urllib.request.urlopen("http://127.0.0.1:{}/streamz".format(sp.monitor_port),
                                timeout=10) as r:
        st = json.loads(r.read())["streams"]["st"]
    assert st["events"] == 39 and st["last_seq"] == 40, st
    assert [(x["first_seq"], x["last_seq"], x["file"], x["offset"]) for x in st["losses"]] == [
        (seq, seq, path, off)], st
    assert sp.stop() == 0, sp.log
    assert "stream st: events {0}..{0} lost".format(seq) in sp.log, sp.log
