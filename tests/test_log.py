"""The event log (docs/log.md), run against both cores (``core`` fixture:
``native`` is fastflow._core.Log, ``ref`` the pure-Python reference).
Timing is only ever checked loosely ("at least", never "at most" tight
bounds).
"""

import asyncio
import datetime as dt
import json
import logging
import mmap
import random
import struct
import time
from array import array

import pytest

from fastflow._ref.log import COUNTERS
from fastflow.errors import (
    CorruptLogError,
    EventTooLarge,
    FastflowError,
    GapError,
    LogFullError,
    StaleRecordError,
    SubjectError,
)

from conftest import CORES, REF_CORE, both_cores


def payloads(batch):
    return [bytes(m) for _, _, _, m in batch]


def seqs(batch):
    return list(batch.seqs)


def all_seqs(log):
    return seqs(log.read(0, limit=1 << 30))


STAT_KEYS = set(COUNTERS)
FILE_STAT_KEYS = {"fsyncs", "segments", "truncated_bytes", "corrupt_records"}


# -- CRC32C and the on-disk record format (test-side parser) ---------------------------


def test_crc32c_vectors():
    crc = REF_CORE.crc32c
    assert crc(b"123456789") == 0xE3069283
    assert crc(b"") == 0
    assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc(b"\xff" * 32) == 0x62A8AB43
    assert crc(bytes(range(32))) == 0x46DD794E
    assert crc(b"56789", crc(b"1234")) == 0xE3069283


HEADER = struct.Struct("<IIQqqHBB")
assert HEADER.size == 36


def parse_segment(path):
    """Records of a segment file as dicts, checking lengths and CRCs."""
    buf = path.read_bytes()
    out = []
    off = 0
    while off + 4 <= len(buf):
        length, crc, seq, ts, t, slen, kind, reserved = (
            HEADER.unpack_from(buf, off) if off + 36 <= len(buf) else (0,) * 8
        )
        if length == 0:
            break
        assert REF_CORE.crc32c(buf[off + 8 : off + length]) == crc, (path, off)
        # byte 35: 0 = format 1, 2 = format 2 (a 32-byte chain link ends the frame)
        assert reserved in (0, 2) and kind in (1, 2, 3, 4)
        link = buf[off + length - 32 : off + length] if reserved == 2 else None
        out.append(
            dict(
                offset=off,
                length=length,
                seq=seq,
                ts=ts,
                time=t,
                kind=kind,
                subject=buf[off + 36 : off + 36 + slen].decode(),
                data=buf[off + 36 + slen : off + length - (32 if link else 0)],
                link=link,
            )
        )
        off += length
    return out


def seg_files(path):
    return sorted(p for p in path.iterdir() if p.suffix == ".seg")


# -- basics -------------------------------------------------------------------------------


def test_new_log(core):
    log = core.Log()
    assert (log.first_seq, log.last_seq, len(log), log.bytes, log.subjects) == (1, 0, 0, 0, 0)
    st = log.stats()
    assert STAT_KEYS <= set(st)  # a core may report more (sizes, arena)
    assert all(st[k] == 0 for k in STAT_KEYS)
    b = log.read(0)
    assert len(b) == 0 and b.next_seq == 1
    assert log.seek() == (1, 0)
    assert log.seek("last") == (1, 0)
    assert log.seek("new") == (1, 0)


def test_append_and_get(core):
    log = core.Log()
    assert log.append("orders.eu", b"one") == 1
    assert log.append(b"orders.us", bytearray(b"two"), time=123) == 2
    assert log.append("orders.eu", memoryview(b"xthreex")[1:-1]) == 3
    assert (log.first_seq, log.last_seq, len(log)) == (1, 3, 3)
    assert log.subjects == 2
    assert log.bytes == (9 + 3) + (9 + 3) + (9 + 5)
    r = log.get(2)
    assert (r.seq, r.time, r.subject) == (2, 123, "orders.us")
    assert r.data == b"two" and bytes(r) == b"two"
    assert isinstance(r.data, bytes) and isinstance(r.subject, str)
    assert log.get(1).time == 0
    assert log.get(3).data == b"three"
    assert log.stats()["appended"] == 3


def test_data_accepts_buffers_not_str(core):
    log = core.Log()
    log.append("a", array("i", [1, 2]))
    assert log.get(1).data == array("i", [1, 2]).tobytes()
    log.append("a", b"")
    assert log.get(2).data == b""
    with pytest.raises(TypeError):
        log.append("a", "text")
    with pytest.raises(TypeError):
        log.append("a", 12)
    assert log.last_seq == 2


def test_time_kept_as_is(core):
    log = core.Log()
    for t in (0, -5, 1, 2**62, -(2**63), 2**63 - 1):
        assert log.get(log.append("a", b"", time=t)).time == t
    with pytest.raises(ValueError, match="time"):
        log.append("a", b"", time=2**63)
    with pytest.raises(TypeError):
        log.append("a", b"", time=1.5)


def test_timestamps_never_decrease(core):
    log = core.Log()
    before = time.time_ns()
    for _ in range(3000):
        log.append("a.b", b"x")
    after = time.time_ns()
    ts = list(log.read(0, limit=5000).ts)
    assert len(ts) == 3000
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert before - 10**9 <= ts[0] and ts[-1] <= after + 10**9


@pytest.mark.parametrize(
    "subject, msg",
    [
        ("a..b", "invalid subject 'a..b': empty token at position 2"),
        ("a.*", "wildcard '\\*' at position 2"),
        ("a.>", "wildcard '>' at position 2"),
        ("", "empty subject"),
        ("a b", "not allowed"),
    ],
)
def test_invalid_subject(core, subject, msg):
    log = core.Log()
    with pytest.raises(SubjectError, match=msg):
        log.append(subject, b"x")
    with pytest.raises(ValueError):
        log.append(subject, b"x")
    assert log.last_seq == 0 and len(log) == 0


def test_subject_type(core):
    with pytest.raises(TypeError):
        core.Log().append(5, b"x")


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(max_events=-1), "max_events"),
        (dict(max_bytes=-1), "max_bytes"),
        (dict(max_age=-0.5), "max_age"),
        (dict(max_age=float("nan")), "max_age"),
        (dict(max_per_subject=-1), "max_per_subject"),
        (dict(max_event_size=-1), "max_event_size"),
        (dict(discard="oldest"), "discard"),
        (dict(dedup_window=-1), "dedup_window"),
        (dict(dedup_max=-1), "dedup_max"),
        (dict(fsync="sometimes"), "fsync"),
        (dict(fsync_interval=-1), "fsync_interval"),
        (dict(segment_size=4095), "segment_size"),
    ],
)
def test_invalid_arguments(core, kwargs, name):
    with pytest.raises(ValueError, match=name):
        core.Log(**kwargs)


def test_constructor_is_keyword_only(core):
    with pytest.raises(TypeError):
        core.Log(10)


# -- limits -------------------------------------------------------------------------------


def test_max_event_size(core):
    log = core.Log(max_event_size=1024)
    log.append("a", b"x" * 1024)
    with pytest.raises(EventTooLarge, match=r"1025 bytes.*max_event_size=1024") as ei:
        log.append("a", b"x" * 1025)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FastflowError)
    assert log.last_seq == 1 and len(log) == 1
    assert log.stats()["rejected"] == 0


def test_max_event_size_zero_means_no_limit(core):
    log = core.Log(max_event_size=0)
    log.append("a", bytes(3 << 20))
    assert len(log.get(1).data) == 3 << 20


def test_record_larger_than_max_bytes(core):
    log = core.Log(max_bytes=10)
    log.append("a", b"123456789")  # 1 + 9
    with pytest.raises(EventTooLarge, match="max_bytes=10"):
        log.append("a", b"1234567890")
    assert all_seqs(log) == [1]


def test_max_events_discard_old(core):
    log = core.Log(max_events=3)
    for i in range(10):
        log.append("a", b"%d" % i)
        assert len(log) == min(i + 1, 3)
    assert (log.first_seq, log.last_seq) == (8, 10)
    assert payloads(log.read(0)) == [b"7", b"8", b"9"]
    st = log.stats()
    assert st["evicted_max_events"] == 7 == st["evicted"]
    assert st["appended"] == 10


def test_max_bytes_discard_old(core):
    log = core.Log(max_bytes=20)  # subject "s" + payload
    log.append("s", b"x" * 9)  # 10
    log.append("s", b"x" * 4)  # 5
    log.append("s", b"x" * 4)  # 5 -> 20 exactly
    assert len(log) == 3 and log.bytes == 20
    log.append("s", b"x" * 11)  # 12: evicts 10 and 5
    assert all_seqs(log) == [3, 4] and log.bytes == 17
    assert log.stats()["evicted_max_bytes"] == 2


def test_max_per_subject_evicts_oldest_of_that_subject(core):
    log = core.Log(max_per_subject=2)
    log.append("a", b"a1")  # 1
    log.append("b", b"b1")  # 2
    log.append("a", b"a2")  # 3
    log.append("a", b"a3")  # 4 evicts 1
    assert all_seqs(log) == [2, 3, 4]
    assert log.first_seq == 2
    log.append("a", b"a4")  # 5 evicts 3 (a hole)
    assert all_seqs(log) == [2, 4, 5]
    assert log.first_seq == 2 and len(log) == 3
    with pytest.raises(KeyError):
        log.get(3)
    assert log.stats()["evicted_max_per_subject"] == 2
    assert log.subjects == 2


def test_per_subject_before_global_limits(core):
    # the per-subject eviction makes room: no global eviction needed
    log = core.Log(max_events=3, max_per_subject=1)
    log.append("b", b"")
    log.append("a", b"")
    log.append("c", b"")
    log.append("a", b"")
    assert all_seqs(log) == [1, 3, 4]
    st = log.stats()
    assert st["evicted_max_per_subject"] == 1 and st["evicted_max_events"] == 0


def test_limits_combined(core):
    log = core.Log(max_events=5, max_bytes=30, max_per_subject=3)
    for i in range(40):
        log.append("s%d" % (i % 3), b"x" * (i % 7))
        assert len(log) <= 5 and log.bytes <= 30
        per = {}
        for _, _, s, _ in log.read(0):
            per[s] = per.get(s, 0) + 1
        assert max(per.values()) <= 3
    assert log.last_seq == 40
    assert log.get(40).data == b"x" * (39 % 7)
    st = log.stats()
    assert st["evicted"] == sum(st["evicted_" + r]
                                for r in ("max_events", "max_bytes", "max_age", "max_per_subject"))
    assert st["evicted"] + len(log) == 40


def test_discard_new_max_events(core):
    log = core.Log(max_events=3, discard="new")
    for _ in range(3):
        log.append("a", b"x")
    with pytest.raises(LogFullError,
                       match=r"^log full: max_events=3 reached \(discard='new'\)$") as ei:
        log.append("a", b"x")
    assert isinstance(ei.value, FastflowError)
    assert (log.first_seq, log.last_seq, len(log)) == (1, 3, 3)
    assert log.stats()["rejected"] == 1
    assert log.stats()["evicted"] == 0


def test_discard_new_max_bytes(core):
    log = core.Log(max_bytes=20, discard="new")
    log.append("s", b"x" * 15)
    with pytest.raises(LogFullError, match=r"^log full: max_bytes=20 reached.*\(discard='new'\)"):
        log.append("s", b"x" * 4)
    log.append("s", b"x" * 3)
    assert log.bytes == 20


def test_discard_new_max_per_subject(core):
    log = core.Log(max_per_subject=2, discard="new")
    log.append("a", b"")
    log.append("a", b"")
    with pytest.raises(LogFullError,
                       match=r"^log full: max_per_subject=2 reached for .*'a'.*\(discard='new'\)"):
        log.append("a", b"")
    log.append("b", b"")
    assert all_seqs(log) == [1, 2, 3]


def test_batch_atomic_under_discard_new(core):
    log = core.Log(max_events=4, discard="new")
    log.append("a", b"1")
    log.append("a", b"2")
    with pytest.raises(LogFullError, match="max_events=4"):
        log.append_batch("a", [b"3", b"4", b"5"])
    assert (log.last_seq, len(log)) == (2, 2)
    assert log.stats()["rejected"] == 3
    assert log.append_batch("a", [b"3", b"4"]) == (3, 4)
    assert payloads(log.read(0)) == [b"1", b"2", b"3", b"4"]

    log = core.Log(max_per_subject=2, discard="new")
    log.append("a", b"")
    with pytest.raises(LogFullError, match="max_per_subject=2"):
        log.append_batch(["b", "a", "a"], [b"", b"", b""])
    assert log.last_seq == 1
    log = core.Log(max_bytes=10, discard="new")
    with pytest.raises(LogFullError, match="max_bytes=10"):
        log.append_batch("a", [b"1234", b"1234", b"1234"])  # 3 x 5 bytes
    assert log.last_seq == 0
    assert log.append_batch("a", [b"1234", b"1234"]) == (1, 2)  # exactly 10


def test_batch_under_discard_old_larger_than_limit(core):
    log = core.Log(max_events=3)
    assert log.append_batch("a", [b"%d" % i for i in range(7)]) == (1, 7)
    assert payloads(log.read(0)) == [b"4", b"5", b"6"]
    assert log.stats()["appended"] == 7


# -- append_batch ------------------------------------------------------------------------


def test_append_batch(core):
    log = core.Log()
    assert log.append_batch("a.b", [b"1", b"2"]) == (1, 2)
    assert log.append_batch(["x", b"y", "z"], (b"3", bytearray(b"4"), memoryview(b"5")),
                            time=7) == (3, 5)
    b = log.read(0)
    assert [b.subject(i) for i in range(len(b))] == ["a.b", "a.b", "x", "y", "z"]
    assert payloads(b) == [b"1", b"2", b"3", b"4", b"5"]
    assert list(b.times) == [0, 0, 7, 7, 7]
    ts = list(b.ts)
    assert ts == sorted(ts)


def test_append_batch_empty(core):
    log = core.Log()
    assert log.append_batch("a", []) == (1, 0)
    log.append("a", b"")
    assert log.append_batch([], []) == (2, 1)
    assert log.last_seq == 1


def test_append_batch_validates_before_storing(core):
    log = core.Log(max_event_size=4)
    with pytest.raises(SubjectError, match=r"invalid subject 'b\.\.c'") as ei:
        log.append_batch(["a", "b..c", "d"], [b"", b"", b""])
    assert "subjects[1]" in str(ei.value)
    with pytest.raises(EventTooLarge, match=r"5 bytes.*max_event_size=4") as ei:
        log.append_batch("a", [b"", b"1234", b"12345"])
    assert "datas[2]" in str(ei.value)
    with pytest.raises(TypeError, match=r"datas\[1\]"):
        log.append_batch("a", [b"", "str"])
    with pytest.raises(ValueError, match="subjects"):
        log.append_batch(["a", "b"], [b"", b"", b""])
    assert log.last_seq == 0 and len(log) == 0


# -- dedup -------------------------------------------------------------------------------


def test_append_unique(core):
    log = core.Log()
    assert log.append_unique("a", b"1", "m1") == (1, False)
    assert log.append_unique("a", b"2", "m2") == (2, False)
    assert log.append_unique("a", b"1 again", "m1") == (1, True)
    assert log.append_unique("b", b"x", b"m1") == (1, True)  # str and bytes ids are one id
    assert log.last_seq == 2
    assert log.stats()["duplicates"] == 2
    assert log.stats()["appended"] == 2
    with pytest.raises(TypeError):
        log.append_unique("a", b"", 5)


def test_dedup_original_evicted(core):
    log = core.Log(max_events=1)
    log.append_unique("a", b"1", "m1")
    log.append("a", b"2")
    assert log.append_unique("a", b"1", "m1") == (1, True)


def test_dedup_window_time_bound(core):
    log = core.Log(dedup_window=0.05)
    assert log.append_unique("a", b"", "m") == (1, False)
    assert log.append_unique("a", b"", "m") == (1, True)
    time.sleep(0.12)
    assert log.append_unique("a", b"", "m") == (2, False)
    assert log.append_unique("a", b"", "m") == (2, True)


def test_dedup_window_size_bound(core):
    log = core.Log(dedup_max=2)
    log.append_unique("a", b"", "m1")  # 1
    log.append_unique("a", b"", "m2")  # 2
    log.append_unique("a", b"", "m3")  # 3: m1 forgotten
    assert log.append_unique("a", b"", "m3") == (3, True)
    assert log.append_unique("a", b"", "m2") == (2, True)
    assert log.append_unique("a", b"", "m1") == (4, False)  # m2 forgotten now
    assert log.append_unique("a", b"", "m2") == (5, False)


def test_dedup_rejected_append_not_remembered(core):
    log = core.Log(max_events=1, discard="new")
    log.append("a", b"")
    with pytest.raises(LogFullError):
        log.append_unique("a", b"", "m")
    log.purge()
    assert log.append_unique("a", b"", "m") == (2, False)


def test_dedup_msg_id_limit(core):
    log = core.Log()
    assert log.append_unique("a", b"", "m" * 65535) == (1, False)
    assert log.append_unique("a", b"", b"m" * 65535) == (1, True)
    with pytest.raises(ValueError, match="65536 bytes is over the limit of 65535"):
        log.append_unique("a", b"", "m" * 65536)
    assert log.last_seq == 1


@both_cores
@pytest.mark.parametrize("dedup_max", [0, 1, 7, 300])
def test_dedup_window_under_churn_matches_the_reference(dedup_max):
    """Thousands of keys, short and long (kept in the entry and out of it),
    repeated at random: the native window (a ring and an open-addressing
    table with backward-shift deletion) answers as the reference's dict."""
    rnd = random.Random(dedup_max)
    logs = [c.Log(dedup_max=dedup_max) for c in CORES.values()]
    keys = ["k%d" % i for i in range(500)] + ["long-" + "x" * 50 + str(i) for i in range(100)]
    keys.append(b"")
    for step in range(6000):
        k = rnd.choice(keys[:50] if step % 3 == 0 else keys)
        got = {lg.append_unique("a", b"", k) for lg in logs}
        assert len(got) == 1, (step, k, got)
    assert len({(lg.last_seq, lg.stats()["duplicates"]) for lg in logs}) == 1


# -- age ---------------------------------------------------------------------------------


def test_max_age_reads_and_expire(core):
    log = core.Log(max_age=0.05)
    log.append_batch("a", [b"1", b"2", b"3"])
    assert all_seqs(log) == [1, 2, 3]
    time.sleep(0.12)
    # reads never return expired records, even before they are evicted
    assert len(log.read(0)) == 0
    assert log.read(0).next_seq == 4
    with pytest.raises(KeyError):
        log.get(2)
    assert log.seek() == (4, 0)
    assert log.seek(seq=1) == (4, 3)
    assert len(log.last_per_subject()) == 0
    assert log.expire() == 3
    assert (len(log), log.first_seq, log.last_seq, log.bytes) == (0, 4, 3, 0)
    assert log.stats()["evicted_max_age"] == 3
    assert log.expire() == 0


def test_max_age_evicted_by_append(core):
    log = core.Log(max_age=0.05)
    log.append("a", b"old")
    time.sleep(0.12)
    log.append("a", b"new")
    assert len(log) == 1 and log.first_seq == 2
    assert log.stats()["evicted_max_age"] == 1


def test_age_eviction_bounded_per_call(core):
    step = core.Log.AGE_EVICT_STEP
    assert step == 4096
    log = core.Log(max_age=0.05)
    log.append_batch("a", [b"x"] * 5000)
    time.sleep(0.12)
    log.append("a", b"y")
    assert log.stats()["evicted_max_age"] == step
    assert len(log) == 5000 - step + 1
    assert log.first_seq == step + 1
    assert all_seqs(log) == [5001]  # reads skip the expired rest
    assert log.expire() == 5000 - step
    assert len(log) == 1


def test_expired_records_never_block_discard_new(core):
    log = core.Log(max_events=2, max_age=0.05, discard="new")
    log.append("a", b"")
    log.append("a", b"")
    time.sleep(0.12)
    log.append("a", b"")
    assert all_seqs(log) == [3]


# -- purge -------------------------------------------------------------------------------


def _filled(core, **kw):
    log = core.Log(**kw)
    for i, s in enumerate(["a.x", "b.x", "a.y", "b.y", "a.x", "c"], 1):
        log.append(s, b"%d" % i)
    return log


def test_purge_all_keeps_counter(core):
    log = _filled(core)
    assert log.purge() == 6
    assert (len(log), log.first_seq, log.last_seq, log.bytes, log.subjects) == (0, 7, 6, 0, 0)
    assert log.append("a", b"") == 7
    assert log.stats()["purged"] == 6
    assert log.stats()["evicted"] == 0
    assert log.purge() == 1
    assert log.purge() == 0


def test_purge_subject_pattern(core):
    log = _filled(core)
    assert log.purge("a.*") == 3
    assert all_seqs(log) == [2, 4, 6]
    assert log.first_seq == 2
    assert log.purge("nothing") == 0
    assert log.purge(">") == 3
    assert log.first_seq == 7 and log.last_seq == 6
    with pytest.raises(SubjectError):
        log.purge("a..b")


def test_purge_one_subject(core):
    """A subject without wildcards is looked up (not walked to): the same
    results, with up_to, for a subject never seen, and for one freed and
    used again."""
    log = _filled(core)
    assert log.purge("a.x", up_to=4) == 1
    assert all_seqs(log) == [2, 3, 4, 5, 6]
    assert log.purge(b"a.x") == 1 and log.subjects == 4
    assert log.purge("a.x") == 0 and log.purge("never.seen") == 0
    log.append("a.x", b"again")
    assert log.purge("a.x") == 1
    assert all_seqs(log) == [2, 3, 4, 6] and log.subjects == 4


def test_purge_up_to(core):
    log = _filled(core)
    assert log.purge(up_to=3) == 3
    assert all_seqs(log) == [4, 5, 6] and log.first_seq == 4
    assert log.purge(up_to=2) == 0
    assert log.purge(up_to=100) == 3
    assert log.last_seq == 6 and log.first_seq == 7
    with pytest.raises(ValueError, match="up_to"):
        log.purge(up_to=-1)


def test_purge_subject_and_up_to(core):
    log = _filled(core)
    assert log.purge("a.>", up_to=4) == 2
    assert all_seqs(log) == [2, 4, 5, 6]
    assert log.bytes == sum(len(s) + 1 for s in ["b.x", "b.y", "a.x", "c"])


# -- get / read ----------------------------------------------------------------------------


def test_get_keyerror_names_seq_and_range(core):
    log = core.Log(max_events=3)
    with pytest.raises(KeyError, match=r"\b1\b"):
        log.get(1)
    for _ in range(6):
        log.append("a", b"")
    with pytest.raises(KeyError, match=r"\b2\b.*\b4\.\.6\b"):
        log.get(2)
    with pytest.raises(KeyError, match=r"\b7\b.*\b4\.\.6\b"):
        log.get(7)
    with pytest.raises(KeyError, match=r"\b0\b"):
        log.get(0)
    with pytest.raises(ValueError, match="seq"):
        log.get(-1)


def test_stale_record(core):
    log = core.Log(max_events=1)
    log.append("a", b"one")
    r = log.get(1)
    assert r.data == b"one"
    log.append("a", b"two")
    assert (r.seq, r.subject) == (1, "a")  # metadata stays readable
    with pytest.raises(StaleRecordError):
        r.data
    with pytest.raises(StaleRecordError):
        bytes(r)
    r2 = log.get(2)
    log.purge()
    with pytest.raises(StaleRecordError):
        r2.data


def test_record_buffer_protocol(core):
    if not core.COMPILED:
        pytest.skip("the reference cannot export a buffer on Python < 3.12")
    log = core.Log()
    log.append("a", b"payload")
    r = log.get(1)
    mv = memoryview(r)
    assert mv.readonly and bytes(mv) == b"payload" and len(mv) == 7
    mv.release()


def test_read_limit_and_next_seq(core):
    log = core.Log()
    for i in range(10):
        log.append("a", b"%d" % i)
    b = log.read(3, limit=4)
    assert seqs(b) == [3, 4, 5, 6] and b.next_seq == 7
    b = log.read(b.next_seq, limit=100)
    assert seqs(b) == [7, 8, 9, 10] and b.next_seq == 11
    b = log.read(11)
    assert len(b) == 0 and b.next_seq == 11
    b = log.read(50)
    assert len(b) == 0 and b.next_seq == 11  # clamped like seek
    with pytest.raises(ValueError, match="limit"):
        log.read(1, limit=0)
    with pytest.raises(ValueError, match="seq"):
        log.read(-1)


def test_read_from_evicted_seq_starts_at_first(core):
    log = core.Log(max_events=3)
    for _ in range(6):
        log.append("a", b"")
    assert seqs(log.read(1)) == [4, 5, 6]


def test_read_max_bytes(core):
    log = core.Log()
    for n in (5, 5, 5, 20, 1):
        log.append("a", b"x" * n)
    b = log.read(1, max_bytes=12)
    assert seqs(b) == [1, 2] and b.next_seq == 3
    b = log.read(1, max_bytes=15)
    assert seqs(b) == [1, 2, 3] and b.next_seq == 4
    b = log.read(4, max_bytes=3)  # at least one record
    assert seqs(b) == [4] and b.next_seq == 5
    b = log.read(1, max_bytes=0)
    assert len(b) == 5


def test_read_filter(core):
    log = _filled(core)
    b = log.read(0, filter="a.*")
    assert seqs(b) == [1, 3, 5] and b.next_seq == 7
    b = log.read(0, filter="a.*", limit=2)
    assert seqs(b) == [1, 3] and b.next_seq == 4
    b = log.read(4, filter="a.*", limit=1)
    assert seqs(b) == [5] and b.next_seq == 6
    b = log.read(6, filter="zzz")
    assert len(b) == 0 and b.next_seq == 7
    assert seqs(log.read(0, filter=">")) == [1, 2, 3, 4, 5, 6]
    assert seqs(log.read(0, filter="*")) == [6]
    with pytest.raises(SubjectError):
        log.read(0, filter="a.>.b")


def test_batch_structure(core):
    log = core.Log()
    log.append("s.one", b"abc", time=11)
    log.append("s.two", b"", time=12)
    log.append("s.one", b"defg", time=13)
    b = log.read(1)
    assert len(b) == 3
    assert bytes(b.buffer) == b"abcdefg"
    assert list(b.offsets) == [0, 3, 3, 7] and len(b.offsets) == 4
    assert b.offsets[0] == 0 and b.offsets[-1] == 7
    assert list(b.seqs) == [1, 2, 3]
    assert list(b.times) == [11, 12, 13]
    assert len(b.ts) == 3 and b.ts[0] == log.get(1).ts
    assert [b.subject(i) for i in range(3)] == ["s.one", "s.two", "s.one"]
    assert b.subject(-1) == "s.one"
    assert isinstance(b.data(0), memoryview) and bytes(b.data(0)) == b"abc"
    assert bytes(b.data(1)) == b"" and bytes(b.data(2)) == b"defg"
    with pytest.raises(IndexError):
        b.subject(3)
    with pytest.raises(IndexError):
        b.data(-4)
    items = list(b)
    assert [(s, subj, bytes(m)) for s, _, subj, m in items] == [
        (1, "s.one", b"abc"), (2, "s.two", b""), (3, "s.one", b"defg")
    ]
    assert [t for _, t, _, _ in items] == list(b.ts)
    # the batch owns its buffer: eviction does not touch it
    log.purge()
    assert bytes(b.data(2)) == b"defg"


def test_read_into(core):
    log = core.Log()
    for p in (b"aaa", b"bb", b"cccc", b"d"):
        log.append("x", p)
    log.append("y", b"yy")
    buf = bytearray(8)
    count, nxt, offsets = log.read_into(buf, 1)
    assert (count, nxt) == (2, 3)
    assert list(offsets) == [0, 3, 5]
    assert bytes(buf[:5]) == b"aaabb"
    count, nxt, offsets = log.read_into(buf, nxt)
    assert (count, nxt, list(offsets)) == (3, 6, [0, 4, 5, 7])
    assert bytes(buf[:7]) == b"ccccdyy"
    count, nxt, offsets = log.read_into(buf, 1, limit=1)
    assert (count, nxt, list(offsets)) == (1, 2, [0, 3])
    count, nxt, offsets = log.read_into(buf, 1, filter="y")
    assert (count, nxt, list(offsets)) == (1, 6, [0, 2])
    count, nxt, offsets = log.read_into(buf, 6)
    assert (count, nxt, list(offsets)) == (0, 6, [0])
    with pytest.raises(TypeError):
        log.read_into(b"readonly", 1)
    with pytest.raises(ValueError, match="buffer too small"):
        log.read_into(bytearray(2), 3)


def _read_stopped_by_size(log):
    """read and read_into from seq 1 where the second readable record does not fit."""
    b = log.read(1, max_bytes=5)
    count, nxt, offsets = log.read_into(bytearray(5), 1)
    return seqs(b), b.next_seq, (count, nxt, list(offsets))


def test_read_next_seq_after_size_stop_is_the_record_left_out(core, tmp_path):
    # Records 2, 4 and 6 purged: after a reopen the native index holds only
    # 1, 3, 5 (not 2 as a deleted entry), and a read that stops for size
    # used to report next_seq 2 (after the last record scanned) there, 3 in
    # memory.  next_seq is the first record left for the next read: 3.
    with core.Log(path=tmp_path, fsync="never") as log:
        for i in range(1, 7):
            log.append("a" if i % 2 else "b", b"x" * 5)
        log.purge("b")
        assert _read_stopped_by_size(log) == ([1], 3, (1, 3, [0, 5]))
    with core.Log(path=tmp_path, fsync="never") as log:
        assert all_seqs(log) == [1, 3, 5]
        assert _read_stopped_by_size(log) == ([1], 3, (1, 3, [0, 5]))
        b = log.read(3, max_bytes=5, filter="a")
        assert seqs(b) == [3] and b.next_seq == 5


def test_read_next_seq_after_size_stop_in_a_compacted_index(core):
    # The same in memory: a purge of a quarter of the index or more, then an
    # append that needs more index room, compacts the native index.
    log = core.Log()
    for i in range(1, 1025):
        log.append("a" if i % 2 else "b", b"x" * 5)
    log.purge("b")
    log.append("a", b"x" * 5)
    assert _read_stopped_by_size(log) == ([1], 3, (1, 3, [0, 5]))
    b = log.read(1023, max_bytes=5)
    assert seqs(b) == [1023] and b.next_seq == 1025
    if core is not REF_CORE:
        log._check()                            # the native index's invariants


def test_read_lost_counts_records_gone_before_the_first(core):
    log = core.Log(max_events=4)
    b = log.read(1)
    assert len(b) == 0 and b.lost == 0          # a new log lost nothing
    for _ in range(10):
        log.append("a", b"")
    assert log.first_seq == 7
    b = log.read(2)
    assert seqs(b) == [7, 8, 9, 10] and b.lost == 5 and b.lost == log.seek(seq=2).lost
    assert log.read(0).lost == 6 and log.read(1).lost == 6
    assert log.read(6).lost == 1
    assert log.read(7).lost == 0 and log.read(9).lost == 0 and log.read(50).lost == 0
    # with limit, max_bytes and a filter the notice is the same
    assert log.read(3, limit=1, max_bytes=1, filter="zzz").lost == 4
    # records purged after the first readable one are not a gap (as seek)
    log.purge(up_to=7)
    log.append("b", b"")
    log.purge("b")                              # seq 11 gone, 8..10 kept
    assert log.read(8).lost == 0
    assert log.read(3).lost == 5 == log.seek(seq=3).lost
    # everything gone: the gap runs up to last_seq
    log.purge()
    assert log.first_seq == 12
    b = log.read(5)
    assert len(b) == 0 and b.next_seq == 12 and b.lost == 7
    # a replay's batches carry the replay's own running count
    for _ in range(3):
        log.append("a", b"")
    r = log.replay(seq=10)
    assert [b.lost for b in r] == [r.lost] == [2]


def test_read_lost_counts_expired_records(core):
    log = core.Log(max_age=0.05)
    log.append("a", b"")
    log.append("a", b"")
    time.sleep(0.1)
    assert log.first_seq == 1                   # expired, not evicted yet: reads skip them
    b = log.read(1)
    assert len(b) == 0 and b.next_seq == 3 and b.lost == 2 == log.seek(seq=1).lost


# -- seek ----------------------------------------------------------------------------------


def test_seek_starts(core):
    log = core.Log()
    for _ in range(5):
        log.append("a", b"")
    assert log.seek() == (1, 0) and log.seek("first") == (1, 0)
    assert log.seek("last") == (5, 0)
    assert log.seek("new") == (6, 0)
    pos = log.seek("last")
    assert pos.seq == 5 and pos.lost == 0
    with pytest.raises(ValueError, match="start"):
        log.seek("middle")
    log.purge(up_to=5)
    assert log.seek("first") == (6, 0) and log.seek("last") == (6, 0) and log.seek("new") == (6, 0)


def test_seek_last_with_purged_tail(core):
    log = core.Log()
    log.append("a", b"")
    log.append("a", b"")
    log.append("b", b"")
    log.purge("b")
    assert log.seek("last") == (2, 0)
    assert log.seek("new") == (4, 0)


def test_seek_seq_gap_and_strict(core):
    log = core.Log(max_events=5)
    for _ in range(12):
        log.append("a", b"")
    assert log.first_seq == 8
    assert log.seek(seq=3) == (8, 5)
    assert log.seek(seq=8) == (8, 0)
    assert log.seek(seq=10) == (10, 0)
    assert log.seek(seq=13) == (13, 0)
    assert log.seek(seq=99) == (13, 0)
    with pytest.raises(GapError, match=r"\b3\b.*\b8\b"):
        log.seek(seq=3, strict=True)
    assert log.seek(seq=9, strict=True) == (9, 0)
    with pytest.raises(ValueError, match="seq"):
        log.seek(seq=-1)


def test_seek_seq_on_new_and_empty_log(core):
    log = core.Log()
    assert log.seek(seq=1) == (1, 0)
    assert log.seek(seq=5) == (1, 0)
    for _ in range(10):
        log.append("a", b"")
    log.purge()
    assert log.seek(seq=3) == (11, 8)
    assert log.seek(seq=0) == (11, 10)


def test_seek_seq_in_hole(core):
    log = _filled(core)
    log.purge("b.*")
    assert log.seek(seq=2) == (2, 0)
    assert seqs(log.read(log.seek(seq=2).seq)) == [3, 5, 6]


def test_seek_time(core):
    log = core.Log()
    for i in range(5):
        log.append("a", b"%d" % i)
        time.sleep(0.002)
    ts = list(log.read(0).ts)
    assert log.seek(time=ts[0] - 10**9) == (1, 0)
    assert log.seek(time=ts[2]) == (3, 0)  # exact ts: that record
    assert log.seek(time=ts[2] + 1).seq == 4  # 2 ms apart
    assert log.seek(time=ts[4]) == (5, 0)
    assert log.seek(time=ts[4] + 1) == (6, 0)  # after the last record
    assert log.seek(time=0) == (1, 0)
    d = dt.datetime.fromtimestamp(ts[2] / 1e9 + 3600, tz=dt.timezone.utc)
    assert log.seek(time=d) == (6, 0)
    d = dt.datetime.fromtimestamp(ts[0] / 1e9 - 3600, tz=dt.timezone.utc)
    assert log.seek(time=d) == (1, 0)
    with pytest.raises(TypeError):
        log.seek(time=1.5)
    with pytest.raises(ValueError):
        log.seek(seq=1, time=ts[0])


def test_seek_time_equal_timestamps_first_one(core):
    log = core.Log()
    log.append_batch("a", [b"1", b"2", b"3"])  # one call: one timestamp
    ts = list(log.read(0).ts)
    assert log.seek(time=ts[1]).seq == 1 + ts.index(ts[1])


def test_seek_time_after_eviction(core):
    log = core.Log(max_events=3)
    for _ in range(6):
        log.append("a", b"")
    assert log.seek(time=0) == (4, 0)


# -- last_per_subject ----------------------------------------------------------------------


def test_last_per_subject(core):
    log = _filled(core)
    b = log.last_per_subject()
    assert seqs(b) == [2, 3, 4, 5, 6]
    assert [b.subject(i) for i in range(len(b))] == ["b.x", "a.y", "b.y", "a.x", "c"]
    assert payloads(b) == [b"2", b"3", b"4", b"5", b"6"]
    b = log.last_per_subject(filter="a.*")
    assert seqs(b) == [3, 5]
    log.purge("a.x")
    assert seqs(log.last_per_subject()) == [2, 3, 4, 6]
    assert len(core.Log().last_per_subject()) == 0


# -- replay --------------------------------------------------------------------------------


def test_replay_batches(core):
    log = core.Log()
    for i in range(25):
        log.append("s.%d" % (i % 2), b"%d" % i)
    batches = list(log.replay(batch=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert sum((seqs(b) for b in batches), []) == list(range(1, 26))
    assert [seqs(b) for b in log.replay(seq=20, batch=4)] == [[20, 21, 22, 23], [24, 25]]
    assert sum((seqs(b) for b in log.replay(filter="s.1", limit=3)), []) == [2, 4, 6]
    assert sum((seqs(b) for b in log.replay(limit=12, batch=5)), []) == list(range(1, 13))
    assert list(log.replay("new")) == []
    assert sum((seqs(b) for b in log.replay("last")), []) == [25]
    assert list(log.replay(limit=0)) == []
    with pytest.raises(ValueError, match="batch"):
        log.replay(batch=0)


def test_replay_time_start(core):
    log = core.Log()
    for _ in range(3):
        log.append("a", b"")
        time.sleep(0.002)
    t = log.get(2).ts
    assert sum((seqs(b) for b in log.replay(time=t)), []) == [2, 3]


def test_replay_gap_notice(core):
    log = core.Log(max_events=4)
    for _ in range(10):
        log.append("a", b"")
    r = log.replay(seq=2)
    assert r.lost == 5
    assert sum((seqs(b) for b in r), []) == [7, 8, 9, 10]
    assert log.replay().lost == 0
    with pytest.raises(GapError):
        log.replay(seq=2, strict=True)


def test_replay_stops_at_the_end(core):
    log = core.Log()
    log.append_batch("a", [b""] * 3)
    it = log.replay(batch=2)
    first = next(it)
    log.append("a", b"later")
    rest = list(it)
    assert seqs(first) + sum((seqs(b) for b in rest), []) == [1, 2, 3]


def test_paced_replay(core):
    log = core.Log()
    for i in range(3):
        log.append("a.%d" % i, b"%d" % i, time=i)
        if i < 2:
            time.sleep(0.02)
    t0 = time.monotonic()
    recs = list(log.replay(speed=1.0))
    elapsed = time.monotonic() - t0
    assert [r.seq for r in recs] == [1, 2, 3]
    assert [r.data for r in recs] == [b"0", b"1", b"2"]
    assert [r.subject for r in recs] == ["a.0", "a.1", "a.2"]
    assert [r.time for r in recs] == [0, 1, 2]
    assert elapsed >= 0.03
    # faster: just the order (no upper bound on the duration)
    assert [r.seq for r in log.replay(speed=1000, filter="a.1")] == [2]
    assert [r.seq for r in log.replay(speed=50.0, limit=2)] == [1, 2]
    with pytest.raises(ValueError, match="speed"):
        log.replay(speed=0)
    with pytest.raises(ValueError, match="speed"):
        log.replay(speed=-1)


def test_areplay(core):
    log = core.Log()
    for i in range(5):
        log.append("a", b"%d" % i)
        time.sleep(0.005)

    async def collect():
        out = []
        async for b in log.areplay(batch=2):
            out.append(seqs(b))
        recs = []
        t0 = time.monotonic()
        async for r in log.areplay(seq=3, speed=1.0):
            recs.append((r.seq, r.data))
        return out, recs, time.monotonic() - t0

    out, recs, elapsed = asyncio.run(collect())
    assert out == [[1, 2], [3, 4], [5]]
    assert recs == [(3, b"2"), (4, b"3"), (5, b"4")]
    assert elapsed >= 0.008

    async def gap():
        r = log.areplay(seq=0, strict=True)
        return r.lost

    assert asyncio.run(gap()) == 0


# -- cursors ------------------------------------------------------------------------------


def test_cursors(core):
    log = core.Log()
    assert log.cursor("c1") == 0
    assert log.cursors() == {}
    for _ in range(10):
        log.append("a", b"")
    log.set_cursor("c1", 4)
    log.set_cursor("c2", 10)
    assert log.cursor("c1") == 4
    assert log.cursors() == {"c1": 4, "c2": 10}
    assert log.lag("c1") == 6 and log.lag("c2") == 0 and log.lag("new") == 10
    log.set_cursor("c1", 2)  # may move back
    assert log.cursor("c1") == 2
    with pytest.raises(ValueError, match=r"11.*last_seq|last_seq.*11"):
        log.set_cursor("c1", 11)
    assert log.cursor("c1") == 2
    with pytest.raises(ValueError):
        log.set_cursor("c1", -1)
    log.delete_cursor("c2")
    assert log.cursors() == {"c1": 2}
    with pytest.raises(KeyError, match="c2"):
        log.delete_cursor("c2")


def test_lag_after_eviction_and_purge(core):
    log = core.Log(max_events=5)
    for _ in range(10):
        log.append("s.%d" % (_ % 2), b"")
    log.set_cursor("c", 2)
    assert log.first_seq == 6
    assert log.lag("c") == 5  # only the records that still exist
    log.set_cursor("c", 7)
    assert log.lag("c") == 3
    log.purge("s.0")  # removes 8 and 10: holes are counted
    assert log.lag("c") == 3
    log.purge()
    assert log.lag("c") == 0


# -- closed log ----------------------------------------------------------------------------


def test_closed_log(core):
    log = core.Log()
    log.append("a", b"x")
    r = log.get(1)
    log.close()
    log.close()  # idempotent
    assert log.closed
    for call in (
        lambda: log.append("a", b""),
        lambda: log.append_batch("a", [b""]),
        lambda: log.append_unique("a", b"", "m"),
        lambda: log.get(1),
        lambda: log.read(1),
        lambda: log.read_into(bytearray(4), 1),
        lambda: log.seek(),
        lambda: log.replay(),
        lambda: log.areplay(),
        lambda: log.last_per_subject(),
        lambda: log.purge(),
        lambda: log.expire(),
        lambda: log.set_cursor("c", 0),
        lambda: log.cursor("c"),
        lambda: log.cursors(),
        lambda: log.lag("c"),
        lambda: log.stats(),
        lambda: log.flush(),
        lambda: len(log),
        lambda: log.first_seq,
        lambda: log.last_seq,
        lambda: log.bytes,
    ):
        with pytest.raises(FastflowError, match="closed"):
            call()
    with pytest.raises(StaleRecordError):
        r.data


def test_context_manager(core):
    with core.Log() as log:
        log.append("a", b"")
    assert log.closed
    with pytest.raises(FastflowError):
        log.append("a", b"")


def test_replay_after_close(core):
    log = core.Log()
    log.append_batch("a", [b""] * 3)
    it = log.replay(batch=1)
    next(it)
    log.close()
    with pytest.raises(FastflowError, match="closed"):
        next(it)


# -- file-backed ---------------------------------------------------------------------------


def test_file_reopen_keeps_everything(core, tmp_path):
    with core.Log(path=tmp_path) as log:
        log.append("a.b", b"one", time=5)
        log.append_batch(["c", "d"], [b"two", b"three"])
        log.set_cursor("reader", 2)
        ts = list(log.read(0).ts)
        assert STAT_KEYS | FILE_STAT_KEYS <= set(log.stats())
    assert (tmp_path / "meta.json").exists() and (tmp_path / "cursors.json").exists()
    assert json.loads((tmp_path / "cursors.json").read_text()) == {"reader": 2}
    assert json.loads((tmp_path / "meta.json").read_text())["first_seq"] == 1
    with core.Log(path=str(tmp_path)) as log:
        assert (log.first_seq, log.last_seq, len(log)) == (1, 3, 3)
        b = log.read(0)
        assert payloads(b) == [b"one", b"two", b"three"]
        assert [b.subject(i) for i in range(3)] == ["a.b", "c", "d"]
        assert list(b.ts) == ts and list(b.times) == [5, 0, 0]
        assert log.cursors() == {"reader": 2}
        assert log.lag("reader") == 1
        assert log.append("e", b"four") == 4
        assert log.get(4).ts >= ts[-1]
        assert log.seek(time=ts[1]).seq == 2


def test_file_directory_created(core, tmp_path):
    p = tmp_path / "new" / "dir"
    with core.Log(path=p) as log:
        log.append("a", b"")
    assert p.is_dir()


def test_file_one_writer(core, tmp_path):
    with core.Log(path=tmp_path):
        with pytest.raises(FastflowError, match="open|lock"):
            core.Log(path=tmp_path)
    with core.Log(path=tmp_path):
        pass  # released on close


def test_file_format(core, tmp_path):
    with core.Log(path=tmp_path) as log:
        log.append("orders.eu", b"payload", time=-3)
        log.append("x", b"")
        r = log.get(1)
        rts = r.ts
    (seg,) = seg_files(tmp_path)
    assert seg.name == "%020d.seg" % 1
    recs = parse_segment(seg)
    assert [(x["seq"], x["kind"], x["subject"], x["data"], x["time"]) for x in recs] == [
        (1, 1, "orders.eu", b"payload", -3),
        (2, 1, "x", b"", 0),
    ]
    assert recs[0]["ts"] == rts
    # format 2: the frame ends with its chain link
    assert recs[0]["offset"] == 0 and recs[0]["length"] == 36 + 9 + 7 + 32
    assert recs[1]["offset"] == recs[0]["length"]
    genesis = core.chain_genesis(tmp_path.name)
    body0 = seg.read_bytes()[8 : recs[0]["length"] - 32]
    assert recs[0]["link"] == core.chain_link(genesis, body0)


def test_file_format_without_chain(core, tmp_path):
    # chain=False writes format-1 frames (byte 35 = 0, no link)
    with core.Log(path=tmp_path, chain=False) as log:
        log.append("orders.eu", b"payload", time=-3)
        assert log.chain_head() == (1, None)
    (seg,) = seg_files(tmp_path)
    (rec,) = parse_segment(seg)
    assert rec["length"] == 36 + 9 + 7 and rec["link"] is None and rec["data"] == b"payload"


def test_segments_roll_over(core, tmp_path):
    n = 300
    with core.Log(path=tmp_path, segment_size=4096) as log:
        for i in range(n):
            log.append("s.%d" % (i % 3), b"%04d" % i + bytes(96))
        assert log.stats()["segments"] == len(seg_files(tmp_path)) > 5
    files = seg_files(tmp_path)
    got = []
    for f in files:
        recs = [r for r in parse_segment(f) if r["kind"] == 1]
        assert int(f.stem) == recs[0]["seq"]  # named after its first record
        assert f.stat().st_size <= 4096
        got.extend(r["seq"] for r in recs)
    assert got == list(range(1, n + 1))
    for f in files[:-1]:  # sealed: truncated to used size, with an index
        idx = f.with_suffix(".idx").read_bytes()
        assert len(idx) % 24 == 0 and len(idx) >= 24
        seq, ts, off = struct.unpack_from("<QqQ", idx, 0)
        assert seq == int(f.stem) and off == 0
        # cut to its frames and the rest of their last page (a reader in
        # another process reading the zero after them stays in the file)
        used = sum(r["length"] for r in parse_segment(f))
        assert used < f.stat().st_size <= max(4096, used + 8 + mmap.PAGESIZE)
        assert not f.read_bytes()[used:].strip(b"\0")
    with core.Log(path=tmp_path, segment_size=4096) as log:
        assert all_seqs(log) == list(range(1, n + 1))
        log.append("s.0", b"more")
        assert log.last_seq == n + 1


def test_retention_deletes_whole_segments(core, tmp_path):
    with core.Log(path=tmp_path, segment_size=4096, max_events=40) as log:
        for i in range(600):
            log.append("s", b"%04d" % i + bytes(96))
        first = log.first_seq
        assert first == 561
        bases = [int(f.stem) for f in seg_files(tmp_path)]
        assert log.stats()["segments"] == len(bases) <= 4
        # the oldest kept segment holds first_seq, the next one starts after it
        assert bases[0] <= first and (len(bases) == 1 or bases[1] > first)
        assert not any(p.suffix == ".idx" and int(p.stem) < bases[0] for p in tmp_path.iterdir())
    with core.Log(path=tmp_path, segment_size=4096, max_events=40) as log:
        assert log.first_seq == first and log.last_seq == 600 and len(log) == 40


def test_reopen_after_purge(core, tmp_path):
    with core.Log(path=tmp_path) as log:
        for s in ["a", "b", "a", "b", "c"]:
            log.append(s, s.encode())
        log.purge("b")
        log.purge(up_to=1)
    with core.Log(path=tmp_path) as log:
        assert all_seqs(log) == [3, 5]
        log.purge()
    with core.Log(path=tmp_path) as log:
        assert (len(log), log.first_seq, log.last_seq) == (0, 6, 5)
        assert log.append("a", b"") == 6


def test_reopen_after_crash_keeps_deletions(core, tmp_path):
    """Nothing deleted comes back when the log is not closed (process killed:
    the mmap'd data is in the page cache)."""
    log = core.Log(path=tmp_path, max_events=2, fsync="never", segment_size=4096)
    log.append("a", b"1")
    log.append("b", b"2")
    log.append("b", b"3")  # evicts 1
    log.purge("b")
    # simulate the crash: copy the files as they are now
    crash = tmp_path / "crash"
    crash.mkdir()
    for p in tmp_path.iterdir():
        if p.is_file():
            (crash / p.name).write_bytes(p.read_bytes())
    log.close()
    with core.Log(path=crash, segment_size=4096) as log2:
        assert len(log2) == 0 and log2.last_seq == 3


def test_per_subject_eviction_survives_reopen_with_looser_limit(core, tmp_path):
    with core.Log(path=tmp_path, max_per_subject=1) as log:
        for i in range(5):
            log.append("a", b"%d" % i)
        log.append("b", b"b")
    with core.Log(path=tmp_path) as log:
        assert all_seqs(log) == [5, 6]


def test_per_subject_eviction_killed_between_frames_keeps_a_record(core, tmp_path):
    """An append that evicts by max_per_subject writes two frames, the new
    record and the old one's delete marker: killed after any frame (the
    files as they are then: the mmap'd bytes survive a SIGKILL), the
    reopened log holds the subject's newest record written, never none."""
    log = core.Log(path=tmp_path / "live", max_per_subject=1, fsync="never")
    for i in range(1, 4):
        log.append("a", b"%d" % i)
    live = {p.name: p.read_bytes() for p in (tmp_path / "live").iterdir() if p.is_file()}
    log.close()
    seg = next(name for name in live if name.endswith(".seg"))
    data = live[seg]
    ends, off = [0], 0
    while off + 4 <= len(data) and struct.unpack_from("<I", data, off)[0]:
        off += struct.unpack_from("<I", data, off)[0]
        ends.append(off)
    kinds = [data[e + 34] for e in ends[:-1]]
    assert kinds.count(1) == 3 and kinds.count(2) == 2
    for k, end in enumerate(ends):
        crash = tmp_path / "crash{}".format(k)
        crash.mkdir()
        for name, body in live.items():
            if name == seg:
                body = body[:end] + bytes(len(body) - end)
            (crash / name).write_bytes(body)
        newest = kinds[:k].count(1)     # the records among the frames kept
        with core.Log(path=crash, max_per_subject=1) as back:
            assert payloads(back.read(0)) == ([b"%d" % newest] if newest else []), (k, kinds)


def test_reopen_with_a_tighter_per_subject_limit(core, tmp_path):
    """The replay evicts by max_per_subject (the subject's only record
    evicted: its slot released, then taken again by the next record)."""
    with core.Log(path=tmp_path) as log:
        log.append_batch("a", [b"1", b"2"])
        log.append("b", b"3")
    with core.Log(path=tmp_path, max_per_subject=1) as log:
        assert payloads(log.read(0)) == [b"2", b"3"]
        assert log.append("a", b"4") == 4
        assert payloads(log.read(0)) == [b"3", b"4"]


def test_reopen_with_tighter_limits(core, tmp_path):
    with core.Log(path=tmp_path) as log:
        log.append_batch("a", [b"%d" % i for i in range(10)])
    with core.Log(path=tmp_path, max_events=3) as log:
        assert all_seqs(log) == [8, 9, 10]
    with core.Log(path=tmp_path) as log:
        assert all_seqs(log) == [8, 9, 10]


def test_cursors_persist(core, tmp_path):
    with core.Log(path=tmp_path) as log:
        log.append_batch("a", [b""] * 5)
        log.set_cursor("x", 3)
        log.set_cursor("y", 5)
        log.delete_cursor("y")
    with core.Log(path=tmp_path) as log:
        assert log.cursors() == {"x": 3}
        assert log.lag("x") == 2


def test_fsync_modes(core, tmp_path):
    for mode in ("always", "interval", "never"):
        d = tmp_path / mode
        with core.Log(path=d, fsync=mode, fsync_interval=0.01) as log:
            for i in range(5):
                log.append("a", b"%d" % i)
            n = log.stats()["fsyncs"]
            if mode == "always":
                assert n >= 5
            elif mode == "never":
                assert n == 0
            log.flush()
            assert log.stats()["fsyncs"] >= n
        with core.Log(path=d) as log:
            assert len(log) == 5


def test_torn_tail_truncated(core, tmp_path, caplog):
    with core.Log(path=tmp_path) as log:
        for i in range(5):
            log.append("a", b"record-%d" % i)
    (seg,) = seg_files(tmp_path)
    recs = parse_segment(seg)
    cut = recs[-1]["offset"] + 20  # mid-record
    with open(seg, "r+b") as f:
        f.truncate(cut)
        f.seek(recs[-1]["offset"])
        torn = f.read()
    with caplog.at_level(logging.WARNING, logger="fastflow.log"):
        log = core.Log(path=tmp_path)
    with log:
        assert all_seqs(log) == [1, 2, 3, 4]
        # the 20 bytes of the torn record, but zeros at its end: a file's
        # zero-filled tail is not counted (the record's 20th byte differs
        # from run to run, and is a zero in some)
        assert log.stats()["truncated_bytes"] == len(torn.rstrip(b"\0")) > 0
        assert any(seg.name in r.getMessage() for r in caplog.records)
        # the seq of a record that may have been seen is not reused
        assert log.append("a", b"new") == 6
        assert log.get(6).data == b"new"
    with core.Log(path=tmp_path) as log:
        assert all_seqs(log) == [1, 2, 3, 4, 6]
        assert log.stats()["truncated_bytes"] == 0


def test_garbage_tail_truncated(core, tmp_path, caplog):
    with core.Log(path=tmp_path) as log:
        for i in range(3):
            log.append("a", b"r%d" % i)
    (seg,) = seg_files(tmp_path)
    garbage = b"\x99garbage\xaa" * 3
    with open(seg, "r+b") as f:     # right after the frames (the file goes on in zeros)
        f.seek(sum(r["length"] for r in parse_segment(seg)))
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger="fastflow.log"):
        with core.Log(path=tmp_path) as log:
            assert all_seqs(log) == [1, 2, 3]
            assert log.stats()["truncated_bytes"] == len(garbage)
            assert log.append("a", b"r3") == 4
    assert caplog.records
    with core.Log(path=tmp_path) as log:
        assert payloads(log.read(0)) == [b"r0", b"r1", b"r2", b"r3"]


def _three_segments(core, tmp_path):
    with core.Log(path=tmp_path, segment_size=4096) as log:
        for i in range(100):
            log.append("s", b"data-%03d" % i + bytes(100))
    files = seg_files(tmp_path)
    assert len(files) >= 3
    return files


def test_corrupt_older_segment_reported(core, tmp_path, caplog):
    files = _three_segments(core, tmp_path)
    victim = files[1]
    recs = parse_segment(victim)
    bad = recs[2]
    raw = bytearray(victim.read_bytes())
    raw[bad["offset"] + 40] ^= 0x01  # a byte of the subject/data
    victim.write_bytes(bytes(raw))
    later = [r["seq"] for f in files[2:] for r in parse_segment(f)]
    with caplog.at_level(logging.WARNING, logger="fastflow.log"):
        with core.Log(path=tmp_path, segment_size=4096) as log:
            kept = all_seqs(log)
            st = log.stats()
    # the scan resynchronises at the next record: only the damaged one is lost
    lost = [bad["seq"]]
    assert st["corrupt_records"] >= 1
    assert st["corrupt_records"] == len(lost)
    assert not set(lost) & set(kept)
    assert [r["seq"] for r in recs if r["seq"] != bad["seq"]] == [
        s for s in kept if s in {r["seq"] for r in recs}]
    assert set(later) <= set(kept)
    assert kept[0] == 1
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert victim.name in msgs and str(bad["offset"]) in msgs


def test_corrupt_older_segment_strict(core, tmp_path):
    files = _three_segments(core, tmp_path)
    victim = files[0]
    recs = parse_segment(victim)
    raw = bytearray(victim.read_bytes())
    raw[recs[1]["offset"] + 12] ^= 0xFF  # in the seq field
    victim.write_bytes(bytes(raw))
    with pytest.raises(CorruptLogError, match=r"%s.*offset %d" % (victim.name, recs[1]["offset"])):
        core.Log(path=tmp_path, segment_size=4096, strict=True)
    # not strict: opens (and the lock was released by the failed open)
    with core.Log(path=tmp_path, segment_size=4096) as log:
        assert log.stats()["corrupt_records"] >= 1
        assert 1 in all_seqs(log) and 2 not in all_seqs(log)


def test_closed_file_log(core, tmp_path):
    log = core.Log(path=tmp_path)
    log.append("a", b"")
    log.close()
    with pytest.raises(FastflowError, match="closed"):
        log.append("a", b"")
    with pytest.raises(FastflowError, match="closed"):
        log.flush()


def test_file_event_larger_than_segment(core, tmp_path):
    with core.Log(path=tmp_path, segment_size=4096) as log:
        log.append("a", b"x" * (4096 - 37 - 32))  # 36-byte header + subject "a" + link
        with pytest.raises(EventTooLarge, match="segment_size=4096"):
            log.append("a", b"x" * (4096 - 36 - 32))
        assert log.last_seq == 1


def test_file_many_markers_one_segment(core, tmp_path):
    # segments filled by delete markers only (no record to name a new one after)
    with core.Log(path=tmp_path, segment_size=4096) as log:
        for i in range(300):
            log.append("s.%d" % i, b"x")
        for i in range(299):
            assert log.purge("s.%d" % i) == 1
        assert all_seqs(log) == [300]
    with core.Log(path=tmp_path, segment_size=4096) as log:
        assert all_seqs(log) == [300]
        assert log.append("s.0", b"y") == 301
    with core.Log(path=tmp_path, segment_size=4096) as log:
        assert all_seqs(log) == [300, 301]


def test_append_buffer(core):
    from array import array

    log = core.Log()
    buf = b"abcdefghij"
    assert log.append_buffer("s.one", buf, array("q", [0, 3, 3, 10])) == (1, 3)
    assert [bytes(m) for _, _, _, m in log.read(1)] == [b"abc", b"", b"defghij"]
    # a batch as it was read appends as it was read
    b = log.read(1)
    other = core.Log()
    assert other.append_buffer(b.subjects, b.buffer, b.offsets) == (1, 3)
    assert [(s, bytes(m)) for _, _, s, m in other.read(1)] == [
        (s, bytes(m)) for _, _, s, m in b
    ]
    assert other.append_buffer(["x.a", "x.b"], bytearray(b"12"), [0, 1, 2]) == (4, 5)
    assert other.append_buffer("x", b"", [0]) == (6, 5)
    with pytest.raises(ValueError, match=r"offsets\[0:2\] = 0\.\.5 is not a slice of the 3-byte"):
        other.append_buffer("a", b"abc", [0, 5])
    with pytest.raises(ValueError, match="offsets"):
        other.append_buffer("a", b"abc", [2, 1])
    with pytest.raises(TypeError, match="int64"):
        other.append_buffer("a", b"abc", array("i", [0, 1]))
    with pytest.raises(ValueError, match="subjects has 2 items but datas has 1"):
        other.append_buffer(["a", "b"], b"abc", [0, 1])
    with pytest.raises(SubjectError, match=r"subjects\[1\]"):
        other.append_buffer(["a", "b..c"], b"abc", [0, 1, 2])
    assert other.last_seq == 5


def test_records_after_only_empty_payloads(core):
    # every retained payload empty: the arena's tail meets its head without
    # the arena being full; the next payload must land inside it, whole
    log = core.Log()
    want = {log.append("a", b""): b""}
    want[log.append("a", b"12345")] = b"12345"
    log2 = core.Log(max_events=3)
    want2 = {}
    for i in range(200):
        datas = [b""] * (i % 4) + [bytes([i % 256]) * (i * 37 % 5000)]
        first, _ = log2.append_batch("b.c", datas)
        want2.update({first + k: d for k, d in enumerate(datas)})
        for seq in range(log2.first_seq, log2.last_seq + 1):
            assert bytes(log2.get(seq).data) == want2[seq]
    log.append_batch("a", [b"x" * 3000] * 40)
    assert [bytes(log.get(s).data) for s in (1, 2)] == [want[1], want[2]]


# -- append_at: a mirror's append (the seqs of another log) ------------------------------


def _check(core, log):
    if core is not REF_CORE:
        log._check()                            # the native index's invariants


def test_append_at_skips_the_seqs_between(core):
    log = core.Log()
    assert log.append("a", b"1") == 1
    assert log.append_at(2, "a", b"2") == 2     # the next seq: no gap
    assert log.append_at(5, "b", b"5") == 5
    assert (log.first_seq, log.last_seq, len(log)) == (1, 5, 3)
    assert all_seqs(log) == [1, 2, 5]
    for seq in (3, 4):
        with pytest.raises(KeyError, match="{} is not retained".format(seq)):
            log.get(seq)
    assert log.get(5).data == b"5" and log.get(5).subject == "b"
    b = log.read(3)
    assert seqs(b) == [5] and b.lost == 0 and b.next_seq == 6
    assert log.seek(seq=3) == (3, 0)
    assert log.append("c", b"6") == 6           # append goes on after it
    assert log.append_at(1000, "c", b"x") == 1000
    assert log.append_batch("c", [b"y", b"z"]) == (1001, 1002)
    assert all_seqs(log) == [1, 2, 5, 6, 1000, 1001, 1002]
    assert [r[0] for r in log.last_per_subject()] == [2, 5, 1002]
    assert seqs(log.read(7, limit=2)) == [1000, 1001]
    assert [len(b) for b in log.replay(seq=3, batch=2)] == [2, 2, 1]
    _check(core, log)


def test_append_at_on_an_empty_log_sets_first_seq(core):
    log = core.Log()
    assert log.append_at(100, "a", b"x") == 100
    assert (log.first_seq, log.last_seq, len(log)) == (100, 100, 1)
    assert log.seek() == (100, 0)
    assert log.seek(seq=1) == (100, 99)         # as seen from the log it mirrors: gone
    log.purge()
    assert (log.first_seq, log.last_seq) == (101, 100)
    assert log.append_at(200, "a", b"y") == 200
    assert (log.first_seq, log.last_seq, all_seqs(log)) == (200, 200, [200])
    _check(core, log)


def test_append_at_refuses_a_seq_not_after_last_seq(core):
    log = core.Log()
    log.append_at(5, "a", b"x")
    for seq in (0, 4, 5):
        with pytest.raises(ValueError, match="append_at: seq {} must be after last_seq 5"
                           .format(seq)):
            log.append_at(seq, "a", b"y")
    with pytest.raises(ValueError, match="below 2..63"):
        log.append_at(1 << 63, "a", b"y")
    with pytest.raises(TypeError, match="seq must be an int"):
        log.append_at("6", "a", b"y")
    with pytest.raises(TypeError, match="seq must be an int"):
        log.append_at(True, "a", b"y")
    assert log.last_seq == 5 and len(log) == 1


def test_append_at_refused_skips_nothing(core):
    log = core.Log(max_events=1, discard="new", max_event_size=10)
    log.append_at(3, "a", b"x")
    with pytest.raises(LogFullError):
        log.append_at(7, "a", b"y")
    with pytest.raises(EventTooLarge):
        log.append_at(7, "a", b"y" * 11)
    with pytest.raises(SubjectError):
        log.append_at(7, "a..b", b"y")
    assert (log.first_seq, log.last_seq, len(log)) == (3, 3, 1)
    log.purge()
    assert log.append_at(7, "a", b"y") == 7
    assert (log.first_seq, log.last_seq) == (7, 7)


def test_append_at_under_retention(core):
    log = core.Log(max_events=3, max_per_subject=2)
    for seq in (2, 4, 6, 8, 10):
        log.append_at(seq, "s{}".format(seq % 3), bytes([seq]))
        _check(core, log)
    assert all_seqs(log) == [6, 8, 10]
    assert log.first_seq == 6
    assert log.read(1).lost == 5                # 1..5 are gone (as seen by the mirror)
    log.append_at(12, "s0", b"c")               # s0: 6, 12 -> per subject: 2 kept
    log.append_at(15, "s0", b"f")
    assert all_seqs(log) == [10, 12, 15]
    _check(core, log)


def test_append_at_many_gaps_index_growth(core):
    # gaps across index growth, wrap and compaction (native: the index is no
    # longer dense; lookups by binary search)
    log = core.Log(max_events=1500)
    want = {}
    rnd = random.Random(7)
    for i in range(5000):
        data = b"%d" % i
        if rnd.random() < 0.5:
            seq = log.append_at(log.last_seq + rnd.choice((1, 2, 5, 300)), "a.{}".format(i % 7),
                                data)
        else:
            seq = log.append("a.{}".format(i % 7), data)
        want[seq] = data
        if i % 997 == 0:
            log.purge("a.3")
    kept = all_seqs(log)
    assert len(kept) <= 1500 and kept == sorted(kept)
    for s in kept[::50]:
        assert log.get(s).data == want[s]
    for s in range(kept[0], kept[-1], 37):
        b = log.read(s, limit=1)
        assert seqs(b) == [min(k for k in kept if k >= s)]
    _check(core, log)


def log_has(log, seq):
    try:
        log.get(seq)
    except KeyError:
        return False
    return True


def test_append_at_file_backed_reopen(core, tmp_path):
    d = tmp_path / "m"
    with core.Log(path=d, fsync="never", segment_size=4096) as log:
        assert log.append_at(10, "a", b"x" * 100) == 10
        for seq in range(11, 40):
            log.append_at(seq * 3, "a.{}".format(seq % 3), b"y" * 300)   # several segments
        log.append_at(200, "b", b"z")
        before = all_seqs(log)
        first, last = log.first_seq, log.last_seq
    with core.Log(path=d, fsync="never", segment_size=4096) as log:
        assert (log.first_seq, log.last_seq) == (first, last) == (10, 200)
        assert all_seqs(log) == before
        assert log.losses == [] and log.stats()["lost_records"] == 0
        assert log.get(200).data == b"z"
        assert log.append_at(300, "b", b"w") == 300
        assert log.append("b", b"v") == 301
    with core.Log(path=d, fsync="never", segment_size=4096) as log:
        assert all_seqs(log)[-3:] == [200, 300, 301]
        assert log.losses == []
        _check(core, log)


def test_append_at_file_backed_empty_log_reopen(core, tmp_path):
    d = tmp_path / "m"
    with core.Log(path=d, fsync="never") as log:
        log.append_at(50, "a", b"x")
    with core.Log(path=d, fsync="never") as log:
        assert (log.first_seq, log.last_seq, all_seqs(log)) == (50, 50, [50])
        log.purge()
    with core.Log(path=d, fsync="never") as log:
        assert (log.first_seq, log.last_seq, len(log)) == (51, 50, 0)
        log.append_at(70, "a", b"y")
    with core.Log(path=d, fsync="never") as log:
        assert (log.first_seq, log.last_seq, all_seqs(log)) == (70, 70, [70])
        assert log.losses == []


def test_append_at_tail_reader_counts_the_skipped_seqs(core, tmp_path):
    d = tmp_path / "m"
    with core.Log(path=d, fsync="never") as log:
        log.append_at(3, "a", b"x")
        log.append_at(6, "a", b"y")
        r = core.Log.open_reader(str(d), seq=1)
        b = r.read(timeout=1.0)
        assert seqs(b) == [3, 6]
        assert r.next_seq == 7
        r.close()
