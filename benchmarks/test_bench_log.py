"""pytest-benchmark micro benchmarks for the event log (``fastflow._core.Log``).

Not part of the test suite (``testpaths = ["tests"]``); run them explicitly::

    python -m pytest benchmarks/test_bench_log.py -q                      # time them
    python -m pytest benchmarks/test_bench_log.py -q --benchmark-disable  # only check they run

100-byte payloads, one subject.  The append benchmarks run on logs of
``max_events=100,000`` that have already cycled (200,000 appends before the
first round), so they time the steady state, not growth.  One round is a
whole loop or batch (``benchmark.pedantic(..., iterations=1)``); the
figures are seconds per round, and ``extra_info["records"]`` says how many
records a round handles.  There are no timing assertions here; see
``compare_logs.py`` for the comparison with deque / bytearray / numpy rings
and the targets.
"""

import random
import time

import pytest

from fastflow._core import Log

SUBJECT = "md.xnas.AAPL"
PAYLOAD = 100
RING = 100_000  # max_events of the steady-state logs
PREFILL = 200_000
CALLS = 1_000  # append() per round
BATCH = 10_000  # append_batch() / read() per round
SEEK_RECORDS = 1_000_000
SEEKS = 1_000
ROUNDS = 20
SEED = 2026


def _precycle(log, payloads):
    for _ in range(PREFILL // BATCH):
        log.append_batch(SUBJECT, payloads)
    assert len(log) == RING and log.first_seq == PREFILL - RING + 1


@pytest.fixture(scope="module")
def steady_log(payloads):
    log = Log(max_events=RING)
    _precycle(log, payloads)
    return log


@pytest.fixture(scope="module")
def full_log(payloads):
    """RING records, not cycled: read() and get() see one fixed range."""
    log = Log(max_events=RING)
    for _ in range(RING // BATCH):
        log.append_batch(SUBJECT, payloads)
    return log


@pytest.fixture(scope="module")
def seek_log():
    """SEEK_RECORDS records of 16 bytes, a few distinct timestamps apart."""
    log = Log(max_events=SEEK_RECORDS)
    small = [b"%016d" % i for i in range(BATCH)]
    for _ in range(SEEK_RECORDS // BATCH):
        log.append_batch(SUBJECT, small)
    return log


def _append_loop(append, payload, n):
    for _ in range(n):
        append(SUBJECT, payload)


def test_append(benchmark, steady_log, payload):
    benchmark.extra_info["records"] = CALLS
    stats0 = steady_log.stats()
    benchmark.pedantic(_append_loop, args=(steady_log.append, payload, CALLS),
                       rounds=ROUNDS, iterations=1, warmup_rounds=1)
    stats1 = steady_log.stats()
    assert len(steady_log) == RING
    assert stats1["arena_bytes"] == stats0["arena_bytes"]  # steady: no growth


def test_append_batch(benchmark, steady_log, payloads):
    benchmark.extra_info["records"] = BATCH
    first, last = benchmark.pedantic(steady_log.append_batch, args=(SUBJECT, payloads),
                                     rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert last - first + 1 == BATCH
    assert len(steady_log) == RING


def test_read(benchmark, full_log):
    benchmark.extra_info["records"] = BATCH
    seq = full_log.first_seq + RING // 2
    batch = benchmark.pedantic(full_log.read, args=(seq,), kwargs={"limit": BATCH},
                               rounds=ROUNDS, iterations=1)
    assert len(batch) == BATCH and batch.next_seq == seq + BATCH


def test_read_into(benchmark, full_log):
    benchmark.extra_info["records"] = BATCH
    buf = bytearray(BATCH * PAYLOAD)
    seq = full_log.first_seq + RING // 2
    count, nxt, _offsets = benchmark.pedantic(full_log.read_into, args=(buf, seq),
                                              kwargs={"limit": BATCH}, rounds=ROUNDS,
                                              iterations=1)
    assert count == BATCH and nxt == seq + BATCH


def _seek_loop(seek, times):
    for t in times:
        seek(time=t)


def test_seek_time(benchmark, seek_log):
    first_ts = seek_log.get(seek_log.first_seq).ts
    last_ts = seek_log.get(seek_log.last_seq).ts
    rnd = random.Random(SEED)
    times = [rnd.randint(first_ts, last_ts) for _ in range(SEEKS)]
    benchmark.extra_info["seeks"] = SEEKS
    benchmark.extra_info["records"] = len(seek_log)
    benchmark.pedantic(_seek_loop, args=(seek_log.seek, times), rounds=ROUNDS, iterations=1)
    for t in times[:50]:
        pos = seek_log.seek(time=t)
        assert seek_log.first_seq <= pos.seq <= seek_log.last_seq
        assert seek_log.get(pos.seq).ts >= t
        assert pos.seq == seek_log.first_seq or seek_log.get(pos.seq - 1).ts < t


def _get_loop(get, seqs):
    for s in seqs:
        get(s)


def test_get(benchmark, full_log):
    rnd = random.Random(SEED)
    seqs = [rnd.randint(full_log.first_seq, full_log.last_seq) for _ in range(CALLS)]
    benchmark.extra_info["records"] = CALLS
    benchmark.pedantic(_get_loop, args=(full_log.get, seqs), rounds=ROUNDS, iterations=1)
    assert full_log.get(seqs[0]).seq == seqs[0]


@pytest.mark.parametrize("mode", ["per_call", "batch"])
def test_file_append(benchmark, tmp_path, payload, payloads, mode):
    """fsync="interval" (the default), pre-cycled like the in-memory log.  The
    writes land in the page cache; new segment pages are first-touched as the
    live segment fills."""
    log = Log(max_events=RING, path=str(tmp_path / "log"), fsync="interval")
    try:
        _precycle(log, payloads)
        if mode == "per_call":
            benchmark.extra_info["records"] = CALLS
            benchmark.pedantic(_append_loop, args=(log.append, payload, CALLS),
                               rounds=ROUNDS, iterations=1, warmup_rounds=1)
        else:
            benchmark.extra_info["records"] = BATCH
            benchmark.pedantic(log.append_batch, args=(SUBJECT, payloads),
                               rounds=ROUNDS, iterations=1, warmup_rounds=1)
        assert len(log) == RING
    finally:
        log.close()


def test_sanity(full_log, payloads):
    """Not a benchmark: read() returns what append_batch stored."""
    b = full_log.read(full_log.first_seq, limit=BATCH)
    assert len(b) == BATCH
    assert bytes(b.buffer) == b"".join(payloads)
    assert b.subject(0) == SUBJECT
    assert abs(b.ts[0] - time.time_ns()) < 3600 * 10**9
