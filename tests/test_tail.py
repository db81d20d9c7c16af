"""Tailing a file-backed log from other processes (docs/latency.md): the
reader follows appends, segment rolls, recycling and retention, never serves
a torn or overwritten record, and survives its writer being SIGKILLed."""

import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from fastflow import _core, _ref
from fastflow.errors import FastflowError, GapError, SubjectError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORES = [c for c in (_core, _ref) if c is not None]


def payload(seq):
    """The bytes of record ``seq``: its seq repeated, a length that varies."""
    return struct.pack("<Q", seq) * (1 + seq % 13)


def check(batch):
    """Every record of a batch is the one its seq says, in order."""
    seqs = list(batch.seqs)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    for i, s in enumerate(seqs):
        assert bytes(batch.data(i)) == payload(s), "record {} is not what was written".format(s)
    return seqs


@pytest.fixture(params=["native-writer", "ref-writer"])
def writer_core(request):
    return _core if request.param == "native-writer" else _ref


@pytest.fixture(params=["native-reader", "ref-reader"])
def reader_core(request):
    return _core if request.param == "native-reader" else _ref


def test_reader_follows_appends_from_every_start(writer_core, reader_core, tmp_path):
    d = str(tmp_path / "s")
    early = reader_core.TailReader(d)              # before the log exists
    assert not early.attached and len(early.read()) == 0
    log = writer_core.Log(path=d, segment_size=4096)
    for s in range(1, 11):
        log.append("a.%d" % (s % 2), payload(s))
    assert check(early.read()) == list(range(1, 11))
    assert early.attached and early.next_seq == 11 and early.lag == 0
    assert check(reader_core.Log.open_reader(d, seq=5).read()) == list(range(5, 11))
    assert check(reader_core.TailReader(d, "last").read()) == [10]
    new = reader_core.TailReader(d, "new")
    assert len(new.read()) == 0
    t = time.time_ns()
    at_time = reader_core.TailReader(d, time=t)
    flt = reader_core.TailReader(d, filter="a.1")
    for s in range(11, 200):                        # several segment rolls
        log.append("a.%d" % (s % 2), payload(s))
    got = []
    while True:
        b = new.read(limit=37)
        if not len(b):
            break
        got += check(b)
    assert got == list(range(11, 200)) and new.stats()["rolls"] >= 2
    assert check(at_time.read(limit=1000))[0] == 11
    got = []
    for _ in range(20):
        got += check(flt.read())
    assert got == [s for s in range(1, 200) if s % 2] and flt.lost == 0
    buf = bytearray(1 << 16)
    r = reader_core.TailReader(d, seq=150)
    n, nxt, offs = r.read_into(buf, limit=10)
    assert n == 10 and nxt == 160 and list(offs)[0] == 0
    assert bytes(buf[offs[0]:offs[1]]) == payload(150)
    log.close()
    assert early.writer_closed
    for r in (early, new, at_time, flt):
        r.close()
    with pytest.raises(FastflowError, match="closed"):
        early.read()


def test_reader_arguments_are_checked(reader_core, tmp_path):
    TR = reader_core.TailReader
    for kw, what in ((dict(wait="busy"), "wait"), (dict(spin=-1), "spin"),
                     (dict(poll_interval=0), "poll_interval"), (dict(seq=-1), "seq"),
                     (dict(seq=1, time=1), "not both")):
        with pytest.raises((ValueError, TypeError), match=what):
            TR(str(tmp_path), **kw)
    with pytest.raises(ValueError, match="start"):
        TR(str(tmp_path), "middle")
    with pytest.raises(SubjectError):
        TR(str(tmp_path), filter="a..b")
    r = TR(str(tmp_path))
    with pytest.raises(ValueError, match="timeout"):
        r.read(timeout=-1)
    with pytest.raises(TypeError, match="writable"):
        r.read_into(b"xx")


def test_buffer_too_small_names_the_record(reader_core, tmp_path):
    log = _core.Log(path=str(tmp_path))
    log.append("a", b"x" * 100)
    r = reader_core.TailReader(str(tmp_path))
    with pytest.raises(ValueError, match="record 1 has 100 bytes"):
        r.read_into(bytearray(10))
    n, nxt, _ = r.read_into(bytearray(100))
    assert (n, nxt) == (1, 2)
    log.close()


def test_retention_and_recycling_under_a_slow_reader(writer_core, reader_core, tmp_path):
    """Segments deleted and recycled under a reader: it says how many it
    lost, never hands out bytes of a reused segment."""
    d = str(tmp_path / "s")
    log = writer_core.Log(path=d, segment_size=4096, max_events=60)
    log.append("x", payload(1))
    slow = reader_core.TailReader(d, seq=1)
    strict = reader_core.TailReader(d, seq=1, strict=True)
    assert check(slow.read(limit=1)) == [1]
    seen = [1]
    s = 1
    rng = random.Random(7)
    for _rnd in range(40):
        for _ in range(rng.randrange(1, 120)):
            s += 1
            log.append("x", payload(s))
        b = slow.read(limit=rng.randrange(1, 50))
        seen += check(b)
    while True:
        b = slow.read()
        if not len(b):
            break
        seen += check(b)
    assert seen == sorted(seen) and seen[-1] == s
    assert slow.lost == s - len(seen) > 0 and slow.stats()["gaps"] >= 1
    assert min(int(n[:20]) for n in os.listdir(d) if n.endswith(".seg")) > 1
    with pytest.raises(GapError, match="records from seq 1 .* goes on from seq"):
        for _ in range(100):
            strict.read()
    # raised once; the next reads go on after the gap
    got = []
    for _ in range(100):
        got += check(strict.read())
    assert got == list(range(got[0], s + 1)) and strict.lost == got[0] - 1
    log.close()


def test_many_readers_at_different_positions(tmp_path):
    d = str(tmp_path)
    log = _core.Log(path=d, segment_size=8192)
    for s in range(1, 501):
        log.append("m", payload(s))
    readers = [_core.TailReader(d, seq=k) for k in (1, 100, 250, 499, 600)]
    readers.append(_ref.TailReader(d, seq=300))
    for s in range(501, 701):
        log.append("m", payload(s))
    for r, start in zip(readers, (1, 100, 250, 499, 600, 300)):
        got = []
        while True:
            b = r.read(limit=97)
            if not len(b):
                break
            got += check(b)
        assert got == list(range(start, 701)), start
    log.close()


def test_reader_waits_in_every_mode(tmp_path):
    d = str(tmp_path)
    log = _core.Log(path=d, notify=True)
    for mode in ("spin", "yield", "block"):
        r = _core.TailReader(d, "new", wait=mode)
        t0 = time.monotonic()
        assert len(r.read(timeout=0.05)) == 0
        assert time.monotonic() - t0 >= 0.04
        assert not r.wait(0.01)
        log.append("w", payload(log.last_seq + 1))
        assert r.wait(1.0)
        assert len(check(r.read(timeout=1.0))) == 1
        r.close()
    log.close()


WRITER = textwrap.dedent("""
    import struct, sys
    from fastflow._core import Log
    def payload(seq):
        return struct.pack("<Q", seq) * (1 + seq % 13)
    log = Log(path=sys.argv[1], segment_size=int(sys.argv[2]), fsync="never", notify=True,
              max_events=int(sys.argv[3]))
    stop = int(sys.argv[4])
    print("open", log.last_seq, flush=True)
    while log.last_seq < stop:
        s = log.last_seq + 1
        if s % 3:
            log.append("k.%d" % (s % 5), payload(s))
        else:
            n = min(stop - s + 1, 1 + s % 50)
            log.append_batch(["k.%d" % ((s + i) % 5) for i in range(n)],
                             [payload(s + i) for i in range(n)])
    log.close()
    print("done", flush=True)
""")

READER = textwrap.dedent("""
    import struct, sys, json
    from fastflow import _core, _ref
    core = _ref if sys.argv[4] == "ref" else _core
    def payload(seq):
        return struct.pack("<Q", seq) * (1 + seq % 13)
    r = core.TailReader(sys.argv[1], seq=1, wait=sys.argv[2])
    stop = int(sys.argv[3])
    last = 0
    n = 0
    bad = []
    while last < stop:
        b = r.read(limit=4096, timeout=30)
        if not len(b):
            bad.append("timed out at %d" % r.next_seq)
            break
        for i, s in enumerate(b.seqs):
            if s <= last:
                bad.append("seq %d after %d" % (s, last))
            if bytes(b.data(i)) != payload(s):
                bad.append("torn or wrong record %d" % s)
            last = s
            n += 1
    print(json.dumps({"n": n, "last": last, "lost": r.lost, "bad": bad[:5],
                      "stats": r.stats()}), flush=True)
""")


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.parametrize("max_events", [0, 3000])
def test_writer_sigkilled_at_random_points(tmp_path, seed, max_events):
    """A writer appending at full speed, SIGKILLed at random points and
    reopened; readers in other processes (spinning, blocking, the reference
    core's) see every record that was fully written, in order, never a torn
    one (with retention: in order, the rest counted as lost)."""
    if _core is None:
        pytest.skip("needs the native core")
    rng = random.Random(seed)
    d = str(tmp_path / "s")
    stop = 60000
    seg = 16384
    env = _env()
    readers = [subprocess.Popen([sys.executable, "-c", READER, d, mode, str(stop), which],
                                stdout=subprocess.PIPE, env=env, text=True)
               for mode, which in (("spin", "native"), ("block", "native"),
                                   ("yield", "ref"))]
    kills = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            w = subprocess.Popen([sys.executable, "-c", WRITER, d, str(seg), str(max_events),
                                  str(stop)], stdout=subprocess.PIPE, env=env, text=True)
            with w.stdout:
                w.stdout.readline()             # opened
                if kills < 8:
                    time.sleep(rng.uniform(0.0, 0.15))
                    if w.poll() is None:
                        w.send_signal(signal.SIGKILL)
                        kills += 1
                    w.wait(10)
                    if w.returncode == 0:
                        break
                    continue
                assert w.wait(60) == 0
                break
        results = []
        for r in readers:
            out, _ = r.communicate(timeout=90)
            results.append(__import__("json").loads(out))
    finally:
        for p in readers:
            if p.poll() is None:
                p.kill()
    assert kills >= 1
    for res in results:
        assert res["bad"] == [], res
        assert res["last"] == stop
        if max_events == 0:
            assert res["n"] == stop and res["lost"] == 0, res
        else:
            assert res["n"] + res["lost"] == stop, res


def test_sealed_segments_keep_their_last_page(tmp_path):
    """A reader reading the zero length after the last frame of a sealed
    segment must not touch a page past the end of the file."""
    log = _core.Log(path=str(tmp_path), segment_size=4096)
    for s in range(1, 200):
        log.append("p", payload(s))
    log.close()
    page = __import__("mmap").PAGESIZE
    for name in sorted(os.listdir(str(tmp_path))):
        if name.endswith(".seg"):
            size = os.path.getsize(str(tmp_path / name))
            assert size % page == 0 or size == 4096


FLOW_WRITER = textwrap.dedent("""
    import sys
    from fastflow import Event, Flow
    f = Flow(sys.argv[1], wake_readers=True)
    f.add_stream("md", ["px.>"])
    for i in range(int(sys.argv[2])):
        f.publish(Event("px.%d" % (i % 3), b"%d" % i, type="tick", source="feed"))
    f.close()
""")


@pytest.mark.parametrize("which", ["native", "ref"])
def test_a_flow_stream_tailed_by_name_from_another_process(tmp_path, which):
    """(``which``: the core of the writing process)"""
    import fastflow
    from fastflow.tail import StreamReader, open_stream_reader

    d = str(tmp_path / "flow")
    r = open_stream_reader(d, "md", wait="block")       # before the stream exists
    assert isinstance(r, StreamReader) and fastflow.open_stream_reader is open_stream_reader
    with pytest.raises(ValueError, match="stream"):
        open_stream_reader(d, "../x")
    env = _env()
    if which == "ref":
        env["FASTFLOW_NO_EXTENSIONS"] = "1"
    subprocess.run([sys.executable, "-c", FLOW_WRITER, d, "300"], env=env, check=True,
                   timeout=60)
    got = []
    while len(got) < 300:
        evs = r.read_events(limit=64, timeout=5)
        assert evs, "no events"
        got += evs
    assert [e.data for e in got] == [b"%d" % i for i in range(300)]
    assert [e.routing_subject for e in got[:4]] == ["px.0", "px.1", "px.2", "px.0"]
    assert got[0].type == "tick" and got[0].source == "feed" and got[0].stream == "md"
    assert [e.seq for e in got] == list(range(1, 301))
    # the original pace, from a reader process's view of the stream
    paced = fastflow.Flow.open_reader(d, "md", seq=1)
    t0 = time.monotonic()
    evs = list(paced.replay(speed=1000.0, limit=50))
    assert [e.seq for e in evs] == list(range(1, 51)) and time.monotonic() - t0 < 5
    r.close()
    paced.close()


def test_a_server_stream_tailed_beside_fastflow_serve(aloop, ffproc, tmp_path):
    """``fastflow serve`` with a data dir: a process on the same machine
    tails its stream from the segment files, blocked until the server's
    publish path wakes it (``wake_readers``)."""
    import asyncio

    import fastflow.client as fc
    from fastflow.tail import open_stream_reader

    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    config.write_text('data_dir = "{}"\nwake_readers = true\n\n[[streams]]\nname = "md"\n'
                      'subjects = ["md.>"]\n'.format(data))
    server = ffproc("-c", config)
    r = open_stream_reader(str(data), "md", wait="block")

    async def main():
        await server.astart()
        async with await fc.connect(server.url, reconnect=False) as c:
            for i in range(200):
                c.publish("md.x.%d" % (i % 4), b"%d" % i)
            await c.flush()
        got = []
        for _ in range(100):
            got += await asyncio.to_thread(r.read_events, 256, 5.0)
            if len(got) >= 200:
                break
        return got

    try:
        got = aloop(main)
        assert [e.data for e in got] == [b"%d" % i for i in range(200)]
        assert got[5].routing_subject == "md.x.1" and got[-1].seq == 200
        assert r.lost == 0
    finally:
        r.close()
        server.kill()


@pytest.mark.parametrize("mode", ["spin", "block"])
def test_segments_never_fill_to_the_byte_and_timeouts_hold(writer_core, reader_core, tmp_path,
                                                           mode):
    """Frames that would fill a segment exactly roll it instead: a zero
    length always follows the last frame, and a reader waiting there
    returns at its timeout."""
    d = str(tmp_path)
    log = writer_core.Log(path=d, segment_size=4096)
    for i in range(4):                  # frames of 1,024 bytes
        log.append("a", bytes([i]) * 955)
    assert len([n for n in os.listdir(d) if n.endswith(".seg")]) == 2
    r = reader_core.TailReader(d, wait=mode)
    assert len(r.read(limit=100)) + len(r.read(limit=100)) == 4     # one segment a read
    t0 = time.monotonic()
    assert len(r.read(timeout=0.2)) == 0
    assert 0.15 < time.monotonic() - t0 < 2
    log.append("a", b"more")
    assert [bytes(x[3]) for x in r.read(timeout=1)] == [b"more"]
    log.close()


def test_a_length_past_the_end_of_the_file_is_corruption(reader_core, tmp_path):
    d = str(tmp_path)
    log = _core.Log(path=d, segment_size=4096)
    for s in range(1, 40):
        log.append("c", payload(s))
    log.close()
    seg = os.path.join(d, sorted(n for n in os.listdir(d) if n.endswith(".seg"))[0])
    r = reader_core.TailReader(d)
    got = check(r.read(limit=5))
    with open(seg, "r+b") as f:         # the next frame's length now points past the file
        data = f.read()
        off = 0
        for _ in range(5):
            off += struct.unpack_from("<I", data, off)[0]
        f.seek(off)
        f.write(struct.pack("<I", 1 << 30))
    with pytest.raises(__import__("fastflow").CorruptLogError, match="offset {}".format(off)):
        r.read(timeout=1)
    assert got == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("mode", ["spin", "block"])
def test_close_from_another_thread_ends_a_waiting_read(reader_core, tmp_path, mode):
    import threading

    d = str(tmp_path)
    log = _core.Log(path=d)
    log.append("a", b"x")
    r = reader_core.TailReader(d, wait=mode)
    got, errors = [], []

    def it():
        try:
            for b in r:
                got.append(len(b))
        except Exception as exc:        # pragma: no cover - the failure shown
            errors.append(exc)

    t = threading.Thread(target=it)
    t.start()
    time.sleep(0.2)
    r.close()
    t.join(5)
    assert not t.is_alive() and errors == [] and got == [1]
    with pytest.raises(FastflowError, match="closed"):
        r.read()
    log.close()


def test_a_reopening_writer_never_cuts_a_mapped_segment(writer_core, reader_core, tmp_path):
    """A writer reopening the log clears a torn tail in place (a reader may
    map the file: cutting it would be SIGBUS there)."""
    d = str(tmp_path)
    log = writer_core.Log(path=d, segment_size=1 << 16)
    log.append("a", b"x" * (4096 - 36 - 1 - 32))        # ends on a page boundary
    log.close()
    r = reader_core.TailReader(d, wait="block")
    assert len(r.read()) == 1
    for i in range(20):
        log = writer_core.Log(path=d, segment_size=1 << 16)
        if i % 5 == 0:
            log.append("a", b"y")
        log.close()
        r.read()
    assert r.next_seq == 6 and r.lost == 0
