"""Hypothesis: the compiled Log against the pure-Python reference.

Both logs get the same drawn limits and the same random operations
(appends, batches, dedup, purges, reads with filters, seeks, cursors and,
for file-backed logs, close + reopen); after every step their sizes,
counters and full contents must be equal.  Timestamps come from
``time.time_ns()`` in each log, so they are compared only through their
order, and time seeks use the timestamps each log reports.
"""

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from fastflow._ref.log import COUNTERS

from conftest import CORES, both_cores

pytestmark = both_cores

SUBJECTS = ["a", "b", "a.x", "a.y", "$s.x"]
PATTERNS = SUBJECTS + ["a.*", ">", "*", "$s.>", "a.>"]
subjects = st.sampled_from(SUBJECTS)
patterns = st.sampled_from(PATTERNS)
datas = st.binary(max_size=12)


def outcome(fn, *args, **kwargs):
    """("ok", result) or ("error", type name): the message texts are pinned by
    test_log.py, here only the kind of outcome has to agree."""
    try:
        return ("ok", fn(*args, **kwargs))
    except Exception as exc:  # compared, not swallowed
        return ("error", type(exc).__name__)


def content(log):
    b = log.read(0, limit=1 << 20)
    return (
        list(b.seqs),
        [b.subject(i) for i in range(len(b))],
        [bytes(b.data(i)) for i in range(len(b))],
        list(b.times),
        b.next_seq,
    )


def batch_view(b):
    return (
        list(b.seqs),
        [b.subject(i) for i in range(len(b))],
        bytes(b.buffer),
        list(b.offsets),
        list(b.times),
        b.next_seq,
    )


class LogMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.nat = self.ref = None
        self.dirs = []
        self.kwargs = {}

    @initialize(
        max_events=st.sampled_from([0, 0, 3, 8]),
        max_bytes=st.sampled_from([0, 0, 30, 120]),
        max_per_subject=st.sampled_from([0, 0, 1, 3]),
        discard=st.sampled_from(["old", "new"]),
        dedup_max=st.sampled_from([0, 2, 100]),
        on_disk=st.booleans(),
    )
    def setup(self, max_events, max_bytes, max_per_subject, discard, dedup_max, on_disk):
        self.kwargs = dict(
            max_events=max_events,
            max_bytes=max_bytes,
            max_per_subject=max_per_subject,
            discard=discard,
            dedup_max=dedup_max,
            max_event_size=64,
        )
        if on_disk:
            self.dirs = [tempfile.mkdtemp(prefix="fastflow-log-"),
                         tempfile.mkdtemp(prefix="fastflow-log-")]
            self.kwargs.update(segment_size=4096, fsync="never")
        self._open()

    def _open(self):
        if self.dirs:
            self.nat = CORES["native"].Log(path=self.dirs[0], **self.kwargs)
            self.ref = CORES["ref"].Log(path=self.dirs[1], **self.kwargs)
        else:
            self.nat = CORES["native"].Log(**self.kwargs)
            self.ref = CORES["ref"].Log(**self.kwargs)

    def teardown(self):
        for log in (self.nat, self.ref):
            if log is not None:
                log.close()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def both(self, name, *args, **kwargs):
        rn = outcome(getattr(self.nat, name), *args, **kwargs)
        rr = outcome(getattr(self.ref, name), *args, **kwargs)
        assert rn == rr, (name, args, kwargs)
        return rr

    # -- writes -------------------------------------------------------------

    @rule(subject=subjects, data=datas, t=st.integers(-5, 5))
    def append(self, subject, data, t):
        self.both("append", subject, data, time=t)

    @rule(subject=st.one_of(subjects, st.lists(subjects, min_size=0, max_size=5)),
          n=st.integers(0, 5), data=datas)
    def append_batch(self, subject, n, data):
        if isinstance(subject, list):
            n = len(subject)
        self.both("append_batch", subject, [data[: i + 1] for i in range(n)])

    @rule(subject=subjects, data=datas, msg_id=st.sampled_from(["m1", "m2", "m3", b"m1", b"m4"]))
    def append_unique(self, subject, data, msg_id):
        self.both("append_unique", subject, data, msg_id)

    @rule(subject=subjects, data=datas, ahead=st.integers(-2, 6))
    def append_at(self, subject, data, ahead):
        # a mirror's append: the seqs between are skipped (ahead <= 0: refused)
        self.both("append_at", self.ref.last_seq + ahead, subject, data)

    @rule(subject=st.one_of(st.none(), patterns), up_to=st.one_of(st.none(), st.integers(0, 40)))
    def purge(self, subject, up_to):
        self.both("purge", subject, up_to)

    @rule(big=st.integers(65, 80))
    def too_large(self, big):
        self.both("append", "a", bytes(big))

    # -- reads --------------------------------------------------------------

    @rule(seq=st.integers(0, 45), limit=st.integers(1, 6),
          max_bytes=st.sampled_from([0, 1, 10, 30]), filter=st.one_of(st.none(), patterns))
    def read(self, seq, limit, max_bytes, filter):
        bn = self.nat.read(seq, limit=limit, max_bytes=max_bytes, filter=filter)
        br = self.ref.read(seq, limit=limit, max_bytes=max_bytes, filter=filter)
        assert batch_view(bn) == batch_view(br)
        assert bn.lost == br.lost == self.ref.seek(seq=seq).lost
        ts = list(bn.ts)
        assert ts == sorted(ts)

    @rule(seq=st.integers(0, 45), size=st.integers(1, 40), filter=st.one_of(st.none(), patterns))
    def read_into(self, seq, size, filter):
        bufn, bufr = bytearray(size), bytearray(size)
        rn = outcome(self.nat.read_into, bufn, seq, filter=filter)
        rr = outcome(self.ref.read_into, bufr, seq, filter=filter)
        norm = lambda r: (r[0], r[1][0], r[1][1], list(r[1][2])) if r[0] == "ok" else r  # noqa: E731
        assert norm(rn) == norm(rr)
        if rr[0] == "ok":
            end = rr[1][2][-1]
            assert bufn[:end] == bufr[:end]

    @rule(filter=st.one_of(st.none(), patterns))
    def last_per_subject(self, filter):
        assert batch_view(self.nat.last_per_subject(filter)) == \
            batch_view(self.ref.last_per_subject(filter))

    @rule(seq=st.integers(0, 45))
    def get(self, seq):
        rn = outcome(self.nat.get, seq)
        rr = outcome(self.ref.get, seq)
        if rr[0] == "ok":
            assert rn[0] == "ok", rn
            a, b = rn[1], rr[1]
            assert (a.seq, a.time, a.subject, a.data) == (b.seq, b.time, b.subject, b.data)
        else:
            assert rn[0] == "error" and rn[1] == rr[1], (rn, rr)

    @rule(start=st.sampled_from(["first", "last", "new"]),
          seq=st.one_of(st.none(), st.integers(0, 45)), strict=st.booleans())
    def seek(self, start, seq, strict):
        self.both("seek", start, seq=seq, strict=strict)

    @rule(k=st.integers(0, 40), delta=st.sampled_from([-1, 0, 1]))
    def seek_time(self, k, delta):
        bn = self.nat.read(0, limit=1 << 20)
        br = self.ref.read(0, limit=1 << 20)
        if len(br) == 0:
            assert self.nat.seek(time=0) == self.ref.seek(time=0)
            return
        i = k % len(br)
        for log, b in ((self.nat, bn), (self.ref, br)):
            t = b.ts[i] + delta
            expect = next((s for s, ts in zip(b.seqs, b.ts) if ts >= t), log.last_seq + 1)
            assert log.seek(time=t) == (expect, 0)
        # with distinct timestamps around the record, both land on the same seq
        if all(b.ts[i - 1] < b.ts[i] if i else True for b in (bn, br)) and delta == 0:
            assert self.nat.seek(time=bn.ts[i]) == self.ref.seek(time=br.ts[i])

    @rule(seq=st.one_of(st.none(), st.integers(0, 45)), filter=st.one_of(st.none(), patterns),
          limit=st.one_of(st.none(), st.integers(0, 7)), batch=st.integers(1, 4))
    def replay(self, seq, filter, limit, batch):
        rn = self.nat.replay(seq=seq, filter=filter, limit=limit, batch=batch)
        rr = self.ref.replay(seq=seq, filter=filter, limit=limit, batch=batch)
        assert rn.lost == rr.lost
        assert [batch_view(b)[:5] for b in rn] == [batch_view(b)[:5] for b in rr]

    # -- cursors ------------------------------------------------------------

    @rule(name=st.sampled_from(["c1", "c2"]), seq=st.integers(0, 45))
    def set_cursor(self, name, seq):
        self.both("set_cursor", name, seq)

    @rule(name=st.sampled_from(["c1", "c2", "c3"]))
    def lag(self, name):
        self.both("lag", name)
        self.both("cursor", name)

    @rule(name=st.sampled_from(["c1", "c2"]))
    def delete_cursor(self, name):
        rn = outcome(self.nat.delete_cursor, name)
        rr = outcome(self.ref.delete_cursor, name)
        assert rn[:2] == rr[:2]

    # -- files --------------------------------------------------------------

    @precondition(lambda self: bool(self.dirs))
    @rule()
    def reopen(self):
        self.nat.close()
        self.ref.close()
        self._open()

    @invariant()
    def same_state(self):
        if self.ref is None:
            return
        for attr in ("first_seq", "last_seq", "bytes", "subjects"):
            assert getattr(self.nat, attr) == getattr(self.ref, attr), attr
        assert len(self.nat) == len(self.ref)
        assert self.nat.cursors() == self.ref.cursors()
        sn, sr = self.nat.stats(), self.ref.stats()
        assert {k: sn[k] for k in COUNTERS} == {k: sr[k] for k in COUNTERS}
        assert content(self.nat) == content(self.ref)
        self.nat._check()


TestLogMachine = LogMachine.TestCase
TestLogMachine.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
