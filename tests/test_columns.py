"""Columnar export and import of a log (docs/log.md, "Columns"): Log.columns,
Columns.view, Log.append_columns and Stream.columns, on both cores
(``core`` fixture: the compiled one and the pure-Python reference)."""

import random
from array import array

import pytest

from fastflow import Flow, Retention
from fastflow.errors import EventTooLarge, LogFullError, SubjectError

np = pytest.importorskip("numpy")

from conftest import CORES  # noqa: E402

SUBJECTS = ("md.xnas.AAPL", "md.xnas.MSFT", "orders.eu.created")


def fill(log, rnd, n, subjects=SUBJECTS, size=(0, 40)):
    """n records of random subjects, payloads and producer times; returns
    [(seq, subject, payload, time)]."""
    out = []
    for _ in range(n):
        s = rnd.choice(subjects)
        d = rnd.randbytes(rnd.randint(*size))
        t = rnd.randrange(-(1 << 40), 1 << 40)
        out.append((log.append(s, d, time=t), s, d, t))
    return out


def rows(cols):
    """[(seq, subject, payload, time)] of a Columns."""
    return [(int(cols.seq[i]), cols.subjects[cols.subject_id[i]], bytes(cols.data(i)),
             int(cols.time[i])) for i in range(len(cols))]


def check_shape(cols):
    n = len(cols)
    assert cols.seq.dtype == np.int64 and cols.seq.shape == (n,)
    assert cols.ts.dtype == np.int64 and cols.ts.shape == (n,)
    assert cols.time.dtype == np.int64 and cols.time.shape == (n,)
    assert cols.subject_id.dtype == np.int32 and cols.subject_id.shape == (n,)
    assert cols.offsets.dtype == np.int64 and cols.offsets.shape == (n + 1,)
    assert cols.payload.dtype == np.uint8 and cols.payload.shape == (int(cols.offsets[-1]),)
    assert isinstance(cols.subjects, tuple) and all(isinstance(s, str) for s in cols.subjects)
    # the table: each subject once, in order of first appearance
    assert len(set(cols.subjects)) == len(cols.subjects)
    if n:
        first = [int(np.flatnonzero(cols.subject_id == j)[0]) for j in range(len(cols.subjects))]
        assert first == sorted(first)
        assert int(cols.offsets[0]) == 0 and (np.diff(cols.offsets) >= 0).all()
        assert (np.diff(cols.seq) > 0).all() and (np.diff(cols.ts) >= 0).all()


# -- export --------------------------------------------------------------------------


def test_columns_equal_read(core, seed):
    rnd = random.Random(seed)
    log = core.Log()
    recs = fill(log, rnd, 500)
    cols = log.columns()
    check_shape(cols)
    assert rows(cols) == [(q, s, d, t) for q, s, d, t in recs]
    b = log.read(1, limit=10_000)
    assert cols.seq.tolist() == list(b.seqs) and cols.ts.tolist() == list(b.ts)
    assert bytes(cols.payload) == bytes(b.buffer)
    assert cols.offsets.tolist() == list(b.offsets)
    assert cols.lost == 0 and cols.next_seq == log.last_seq + 1
    assert cols.subject(3) == recs[3][1]


def test_columns_ranges_and_filters(core, seed):
    rnd = random.Random(seed)
    log = core.Log()
    recs = fill(log, rnd, 300)
    by_seq = {q: (q, s, d, t) for q, s, d, t in recs}
    cases = [
        dict(seq=50), dict(seq=50, stop=120), dict(seq=50, limit=7), dict(stop=10),
        dict(seq=0, stop=1), dict(seq=300), dict(seq=301), dict(seq=10_000), dict(limit=0),
        dict(filter="md.>"), dict(filter="*.*.created", seq=100, limit=20),
        dict(filter="md.xnas.MSFT", stop=200), dict(start="last"), dict(start="new"),
    ]
    for kw in cases:
        cols = log.columns(**kw)
        check_shape(cols)
        lo = max(kw.get("seq", 1), 1) if kw.get("start") is None else (
            300 if kw["start"] == "last" else 301)
        hi = min(kw.get("stop", 301), 301)
        want = [by_seq[q] for q in range(lo, hi)]
        if "filter" in kw:
            pat = kw["filter"].split(".")
            want = [r for r in want if _matches(pat, r[1].split("."))]
        if "limit" in kw:
            want = want[:kw["limit"]]
        assert rows(cols) == want, kw
    # next_seq continues an export in chunks
    got, nxt = [], 1
    while True:
        cols = log.columns(seq=nxt, limit=64, filter="md.>")
        if not len(cols):
            break
        got += rows(cols)
        nxt = cols.next_seq
    assert got == [r for r in recs if r[1].startswith("md.")]
    assert nxt == log.last_seq + 1


def _matches(pat, toks):
    for i, p in enumerate(pat):
        if p == ">":
            return len(toks) > i
        if i >= len(toks) or (p != "*" and p != toks[i]):
            return False
    return len(toks) == len(pat)


def test_columns_by_time(core):
    log = core.Log()
    for i in range(20):
        log.append("a", bytes([i]))
    t = log.get(11).ts
    cols = log.columns(time=t)
    assert cols.seq[0] <= 11 and int(cols.ts[0]) >= t
    assert cols.seq[-1] == 20


def test_columns_lost(core):
    log = core.Log(max_events=10)
    for i in range(30):
        log.append("a.b", bytes([i]) * 3)
    cols = log.columns(seq=5)
    assert cols.lost == 16 and cols.seq.tolist() == list(range(21, 31))
    assert log.columns(seq=5).lost == log.read(5).lost == log.seek(seq=5).lost
    assert log.columns(seq=5, stop=12).lost == 7 and len(log.columns(seq=5, stop=12)) == 0
    assert log.columns(seq=0).lost == 0 + 20 and log.columns().lost == 0
    log.purge(subject="a.b")
    assert len(log.columns()) == 0


def test_columns_empty(core):
    log = core.Log()
    cols = log.columns()
    check_shape(cols)
    assert len(cols) == 0 and cols.subjects == () and cols.offsets.tolist() == [0]
    assert cols.next_seq == 1 and cols.lost == 0
    assert len(cols.view(np.dtype("i8"))) == 0
    log.append("a", b"")
    cols = log.columns()
    assert len(cols) == 1 and len(cols.payload) == 0 and cols.offsets.tolist() == [0, 0]
    assert "Columns(" in repr(cols)


def test_columns_skip_deleted_records(core):
    log = core.Log(max_per_subject=2)
    for i in range(10):
        log.append("a" if i % 2 else "b", bytes([i]))
    log.append("c", b"x")
    cols = log.columns()
    assert rows(cols) == [(q, r.subject, bytes(r.data), r.time) for q in
                          (7, 8, 9, 10, 11) for r in [log.get(q)]]


def test_columns_arrays_are_writable_and_own_their_data(core):
    log = core.Log()
    log.append_batch("a", [b"abcd"] * 4)
    cols = log.columns()
    cols.payload[0] = ord("z")
    assert log.get(1).data == b"abcd"        # a copy, not the log's memory
    log.append("a", b"more")                 # the log changes; the columns do not
    assert len(cols) == 4


def test_view_fixed_width(core):
    dt = np.dtype([("px", "<f8"), ("qty", "<i4"), ("side", "u1"), ("pad", "V3")])
    arr = np.zeros(1000, dt)
    arr["px"] = np.arange(1000) * 0.5
    arr["qty"] = np.arange(1000)
    arr["side"] = np.arange(1000) % 2
    log = core.Log()
    log.append_batch("md.x", [a.tobytes() for a in arr])
    cols = log.columns()
    v = cols.view(dt)
    assert v.dtype == dt and len(v) == 1000
    assert (v == arr).all()
    assert v.base is not None                # a view of payload, not a copy
    assert np.shares_memory(v, cols.payload)
    assert (cols.view("<f8,<i4,u1,V3")["f1"] == arr["qty"]).all()


def test_view_refuses_mixed_widths(core):
    log = core.Log()
    log.append_batch("a", [b"x" * 8] * 5 + [b"y" * 7] + [b"z" * 9])
    cols = log.columns()
    with pytest.raises(ValueError, match=r"record at index 5 \(seq 6\) has 7 bytes, dtype "
                                         r"int64 needs 8 \(2 of 7 records differ\)"):
        cols.view(np.int64)
    with pytest.raises(ValueError, match="no bytes"):
        cols.view(np.dtype([]))


# -- import ----------------------------------------------------------------------------


def test_round_trip_through_columns(core, seed):
    rnd = random.Random(seed)
    a = core.Log()
    recs = fill(a, rnd, 400)
    cols = a.columns()
    b = core.Log()
    assert b.append_columns(cols) == (1, 400)
    back = b.columns()
    assert rows(back) == rows(cols)
    assert back.subjects == cols.subjects
    # a filtered export appended elsewhere keeps its subjects and times
    c = core.Log()
    c.append("zz", b"first")
    c.append_columns(a.columns(filter="md.>"))
    assert [r[1:] for r in rows(c.columns(seq=2))] == [r[1:] for r in recs
                                                         if r[1].startswith("md.")]


def test_append_columns_forms(core):
    log = core.Log()
    payload = np.frombuffer(b"aabbbc", np.uint8)
    offs = np.array([0, 2, 5, 6], np.int64)
    assert log.append_columns(payload, offs, subject="s.one") == (1, 3)
    assert log.append_columns(b"aabbbc", [0, 2, 5, 6], subject=b"s.two", time=7) == (4, 6)
    ids = np.array([1, 0, 1], np.uint8)
    assert log.append_columns(bytearray(b"aabbbc"), array("q", [0, 2, 5, 6]), subject_id=ids,
                              subjects=["x.a", "x.b"],
                              time=np.array([1, 2, 3], np.int64)) == (7, 9)
    fixed = np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])
    assert log.append_columns(fixed, subject="f") == (10, 11)
    two_d = np.arange(6, dtype=np.uint8).reshape(3, 2)
    assert log.append_columns(two_d, subject_id=np.zeros(3, np.int64),
                              subjects=("g",)) == (12, 14)
    got = [(r[1], r[2], r[3]) for r in rows(log.columns())]
    assert got == [
        ("s.one", b"aa", 0), ("s.one", b"bbb", 0), ("s.one", b"c", 0),
        ("s.two", b"aa", 7), ("s.two", b"bbb", 7), ("s.two", b"c", 7),
        ("x.b", b"aa", 1), ("x.a", b"bbb", 2), ("x.b", b"c", 3),
        ("f", fixed[:1].tobytes(), 0), ("f", fixed[1:].tobytes(), 0),
        ("g", b"\x00\x01", 0), ("g", b"\x02\x03", 0), ("g", b"\x04\x05", 0),
    ]
    assert log.append_columns(b"", [0], subject="s") == (15, 14)
    if core.COMPILED:
        log._check()                         # (the compiled core's invariants)


def test_append_columns_under_limits(core):
    log = core.Log(max_events=5)
    log.append_columns(np.zeros((12, 4), np.uint8), subject="a")
    assert len(log) == 5 and log.first_seq == 8
    log = core.Log(max_per_subject=2)
    log.append_columns(np.zeros((6, 1), np.uint8), subject_id=np.array([0, 1, 0, 1, 0, 0]),
                       subjects=["a", "b"])
    assert [r[1] for r in rows(log.columns())] == ["b", "b", "a", "a"]
    if core.COMPILED:
        log._check()                         # (the compiled core's invariants)


def test_append_columns_atomic_under_discard_new(core):
    log = core.Log(max_events=10, discard="new")
    log.append_batch("a", [b"x"] * 8)
    with pytest.raises(LogFullError, match="max_events=10"):
        log.append_columns(np.zeros((3, 2), np.uint8), subject="a")
    assert len(log) == 8 and log.last_seq == 8
    log = core.Log(max_per_subject=2, discard="new")
    with pytest.raises(LogFullError, match="max_per_subject=2"):
        log.append_columns(np.zeros((4, 2), np.uint8),
                           subject_id=np.array([0, 1, 1, 1], np.int32), subjects=["a", "b"])
    assert len(log) == 0 and log.last_seq == 0


def test_append_columns_bad_input(core):
    log = core.Log(max_event_size=100)
    buf, offs = b"abcdef", np.array([0, 3, 6], np.int64)
    with pytest.raises(ValueError, match="give subject= .* or subject_id= and subjects="):
        log.append_columns(buf, offs)
    with pytest.raises(ValueError, match="not both"):
        log.append_columns(buf, offs, subject="a", subjects=["b"], subject_id=[0, 0])
    with pytest.raises(SubjectError, match=r"subjects\[1\]"):
        log.append_columns(buf, offs, subject_id=np.array([0, 0]), subjects=["a", "b..c"])
    with pytest.raises(SubjectError, match="a.>"):
        log.append_columns(buf, offs, subject="a.>")
    with pytest.raises(ValueError, match=r"subject_id\[1\] = 2 is not an index of the "
                                         r"2-subject table"):
        log.append_columns(buf, offs, subject_id=np.array([0, 2]), subjects=["a", "b"])
    with pytest.raises(ValueError, match="subject_id has 3 values, the payloads are 2"):
        log.append_columns(buf, offs, subject_id=np.array([0, 0, 0]), subjects=["a"])
    with pytest.raises(TypeError, match="subject_id must hold native integers"):
        log.append_columns(buf, offs, subject_id=np.array([0.0, 0.0]), subjects=["a"])
    with pytest.raises(TypeError, match="subject_id must be an integer array"):
        log.append_columns(buf, offs, subject_id=5, subjects=["a"])
    with pytest.raises(TypeError, match="subjects must be a sequence"):
        log.append_columns(buf, offs, subject_id=np.array([0, 0]), subjects="a")
    with pytest.raises(ValueError, match=r"offsets\[1:3\] = 3..7 is not a slice of the "
                                         r"6-byte payload"):
        log.append_columns(buf, np.array([0, 3, 7], np.int64), subject="a")
    with pytest.raises(ValueError, match=r"offsets\[0:2\] = 3..1"):
        log.append_columns(buf, np.array([3, 1, 6], np.int64), subject="a")
    with pytest.raises(TypeError, match="offsets must be a contiguous 1-d array of int64"):
        log.append_columns(buf, np.array([0, 3, 6], np.int32), subject="a")
    with pytest.raises(TypeError, match="offsets must be a buffer of int64"):
        log.append_columns(buf, "0,3,6", subject="a")
    with pytest.raises(ValueError, match="needs offsets"):
        log.append_columns(buf, subject="a")
    with pytest.raises(TypeError, match="payload must be a buffer"):
        log.append_columns([b"abc"], [0, 3], subject="a")
    with pytest.raises(EventTooLarge, match="payload 1: 101 bytes exceeds max_event_size=100"):
        log.append_columns(b"x" * 110, [0, 9, 110], subject="a")
    with pytest.raises(ValueError, match="time has 3 values, the payloads are 2"):
        log.append_columns(buf, offs, subject="a", time=np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="time must be a contiguous 1-d array of int64"):
        log.append_columns(buf, offs, subject="a", time=np.zeros(2, np.float64))
    with pytest.raises(TypeError, match="subject must be str or bytes"):
        log.append_columns(buf, offs, subject=5)
    assert log.last_seq == 0 and len(log) == 0
    with pytest.raises(ValueError, match="limit must be an int >= 0"):
        log.columns(limit=-1)
    with pytest.raises(ValueError, match="stop must be a seq"):
        log.columns(stop="x")
    with pytest.raises(SubjectError):
        log.columns(filter="a..b")


def test_both_cores_agree(seed):
    if len(CORES) < 2:
        pytest.skip("one core only")
    rnd = random.Random(seed)
    logs = [c.Log(max_events=150) for c in CORES.values()]
    for _ in range(6):
        n = rnd.randint(0, 80)
        ids = np.array([rnd.randrange(3) for _ in range(n)], np.int32)
        sizes = [rnd.randint(0, 20) for _ in range(n)]
        offs = np.zeros(n + 1, np.int64)
        offs[1:] = np.cumsum(sizes)
        payload = np.frombuffer(rnd.randbytes(int(offs[-1])), np.uint8)
        times = np.array([rnd.randrange(1 << 50) for _ in range(n)], np.int64)
        res = [lg.append_columns(payload, offs, subject_id=ids, subjects=SUBJECTS, time=times)
               for lg in logs]
        assert res[0] == res[1]
        if rnd.random() < 0.3:
            for lg in logs:
                lg.purge(subject="md.xnas.MSFT")
    for kw in (dict(), dict(seq=3), dict(filter="md.>", limit=40), dict(seq=100, stop=200)):
        a, b = (lg.columns(**kw) for lg in logs)
        assert rows(a) == rows(b) and a.subjects == b.subjects
        assert (a.lost, a.next_seq) == (b.lost, b.next_seq)


@pytest.mark.slow
def test_big(core):
    if not core.COMPILED:
        pytest.skip("1e6 records: the compiled core")
    n = 1_000_000
    dt = np.dtype([("seq", "<i8"), ("px", "<f8")])
    arr = np.zeros(n, dt)
    arr["seq"] = np.arange(n)
    arr["px"] = np.arange(n) * 0.25
    log = core.Log()
    assert log.append_columns(arr, subject_id=(np.arange(n) % 7).astype(np.int32),
                              subjects=["s.{}".format(i) for i in range(7)],
                              time=np.arange(n, dtype=np.int64)) == (1, n)
    cols = log.columns()
    assert len(cols) == n and (cols.view(dt) == arr).all()
    assert (cols.time == np.arange(n)).all() and (cols.seq == np.arange(1, n + 1)).all()
    assert cols.subjects == tuple("s.{}".format(i) for i in range(7))
    assert (cols.subject_id == np.arange(n) % 7).all()
    part = log.columns(seq=500_001, filter="s.3")
    assert (part.view(dt)["seq"] == arr["seq"][500_000:][arr["seq"][500_000:] % 7 == 3]).all()


# -- a Flow stream: the events' data through the record layout ---------------------------


def test_stream_columns_give_event_data():
    flow = Flow()
    st = flow.add_stream("orders", ["orders.>"], Retention(max_events=1000))
    flow.publish("orders.eu.created", b"first")
    flow.publish_batch("orders.us.created", [b"a", b"bb", b""])
    flow.publish("orders.eu.created", b"with attrs", type="t", subject="x", id="my-id",
                 k="v")
    cols = st.columns()
    assert cols.subjects == ("orders.eu.created", "orders.us.created")
    assert [bytes(cols.data(i)) for i in range(len(cols))] == [
        b"first", b"a", b"bb", b"", b"with attrs"]
    events = list(st.replay())
    assert cols.seq.tolist() == [ev.seq for ev in events]
    assert cols.ts.tolist() == [ev.ts for ev in events]
    assert cols.time.tolist() == [0] * 5
    recs = st.columns(data=False, filter="orders.eu.*")
    assert [bytes(recs.data(i)) for i in range(len(recs))] == [
        bytes(st.log.get(1)), bytes(st.log.get(5))]
    fixed = st.columns(seq=2, stop=3).view("S1")
    assert fixed.tolist() == [b"a"]
    flow.close()


def test_event_records_on_both_cores():
    """The record layout is read the same by each core's Log (events=True)."""
    flow = Flow()
    st = flow.add_stream("s", [">"])
    flow.publish_batch("a.b", [b"x" * i for i in range(20)])
    flow.publish("c", b"attrs", type="t", id="x1", source="/src")
    b = st.log.read(1, limit=100)
    for c in CORES.values():
        log = c.Log()
        log.append_buffer(b.subjects, b.buffer, b.offsets)
        cols = log.columns(events=True)
        assert [bytes(cols.data(i)) for i in range(len(cols))] == [
            b"x" * i for i in range(20)] + [b"attrs"]
        plain = c.Log()
        plain.append("a", b"no")
        with pytest.raises(ValueError, match="record 1 is not a CloudEvents record"):
            plain.columns(events=True)
    flow.close()
