"""The router's subject sampler (``Router.sample_subjects`` /
``take_samples``), on both cores: every ``every``-th event counted in
``n_published`` records its routing subject into a bounded buffer (entries
of a weight and a subject; a run of one subject in a batch is one entry),
and ``take_samples`` returns ``({subject: weight}, dropped)``.

The model used throughout: with ``every = e`` and the subjects of the
events published since the countdown started, in order, ``seq``, the
sampled events are ``seq[e - 1::e]``."""

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastflow._ref.router import SAMPLE_BYTES, SAMPLE_HEAD

from conftest import CORES, both_cores

# (SAMPLE_BYTES and SAMPLE_HEAD: the reference's copies of src_ext/consts.pxi's;
# the tests below hold the compiled core to them too)


def make_router(core, **kw):
    """A router with a stream on ``s.>`` (a batch of one subject there takes
    the native fast path), a callback subscriber on ``t.>`` (which publishes
    on ``n.x`` for an event whose data starts with ``!``) and one on
    ``same`` that republishes what it gets (a loop, broken at once); ``n.>``
    and anything else: no interest."""
    r = core.Router(**kw)
    r.add("s.>", core.StreamTarget("S", core.Log()))

    def on_t(e):
        if e.data.startswith(b"!"):
            r.publish("n.x", b"")

    r.add("t.>", core.SubTarget(on_t))
    r.add("same", core.SubTarget(lambda e: r.publish(e.derive())))
    return r


@pytest.fixture
def router(core):
    return make_router(core)


def expected(seq, every):
    return dict(Counter(seq[every - 1::every]))


def test_off_by_default(router):
    assert router.sample_every == 0
    router.publish("s.a", b"x")
    router.publish_batch("s.a", [b"1"] * 10)
    router.publish_batch(["t.a", "n.a"], [b"", b""])
    assert router.take_samples() == ({}, 0)


def test_sample_every_is_read_only(router):
    with pytest.raises(AttributeError):
        router.sample_every = 3


@pytest.mark.parametrize("every", [-1, -(1 << 40)])
def test_a_negative_every_raises_naming_it(router, every):
    with pytest.raises(ValueError, match=r"every must be >= 0 \(0 = off\), got {}".format(every)):
        router.sample_subjects(every)
    assert router.sample_every == 0


def test_every_one_counts_each_publish_on_every_path(router):
    router.sample_subjects(1)
    assert router.sample_every == 1
    router.publish("n.a", b"")                          # no interest
    router.publish("t.a", b"")                          # a subscriber
    router.publish("s.a", b"", type="x.y")              # attributes: the general path
    router.publish_batch("s.b", [b"1"] * 7)             # a run on a stream: the fast path
    router.publish_batch("t.b", [b"1"] * 5)             # a run to a subscriber: the fast path
    router.publish_batch("n.b", [b"1"] * 3)             # a run without interest
    router.publish_batch(["s.a", "t.a", "s.a", "n.a"], [b""] * 4)   # mixed subjects
    router.publish_batch("s.c", [b""] * 2, type="x.y")  # a batch with attributes
    router.publish("same", b"")                         # delivered, then its copy is a loop
    assert router.n_dropped_no_interest == 5 and router.n_dropped_loop == 1
    samples, dropped = router.take_samples()
    assert dropped == 0
    assert samples == {"n.a": 2, "t.a": 2, "s.a": 3, "s.b": 7, "t.b": 5, "n.b": 3,
                       "s.c": 2, "same": 2}
    assert sum(samples.values()) == router.n_published == 26
    assert router.take_samples() == ({}, 0)             # taken: empty again


@pytest.mark.parametrize("every", [2, 3, 7])
def test_every_e_samples_one_in_e(router, every):
    subjects = ["s.a", "t.b", "n.c", "s.d", "s.d"]
    seq = [subjects[i % len(subjects)] for i in range(50)]
    router.sample_subjects(every)
    for s in seq:
        router.publish(s, b"")
    samples, dropped = router.take_samples()
    assert (samples, dropped) == (expected(seq, every), 0)
    assert sum(samples.values()) == len(seq) // every


@pytest.mark.parametrize("every", [1, 3, 4, 64])
def test_a_batch_run_has_the_countdown_hits_as_its_weight(router, every):
    router.sample_subjects(every)
    seq = []
    for subject, k in [("s.a", 5), ("s.b", 1), ("t.a", 11), ("s.a", 100), ("n.a", 3),
                       ("s.c", 64), ("t.b", 2)]:
        if k == 1:
            router.publish(subject, b"")
        else:
            router.publish_batch(subject, [b"d"] * k)
        seq += [subject] * k
    assert router.take_samples() == (expected(seq, every), 0)


def test_callbacks_publishing_inside_a_run_count_in_order(router):
    # t.> publishes n.x for data starting with "!": inside a run of t.a
    router.sample_subjects(2)
    router.publish_batch("t.a", [b"!", b"", b"!", b"!", b""])
    seq = ["t.a", "n.x", "t.a", "t.a", "n.x", "t.a", "n.x", "t.a"]
    assert router.n_published == len(seq)
    assert router.take_samples() == (expected(seq, 2), 0)


def test_a_run_stopped_by_bad_data_counts_what_it_published(core):
    r = make_router(core)
    r.sample_subjects(1)
    with pytest.raises(core.EventError, match="expected a bytes-like object, got int"):
        r.publish_batch("s.a", [b"", bytearray(b"x"), b"", 3, b""])
    assert r.n_published == 3
    assert r.take_samples() == ({"s.a": 3}, 0)


def test_a_run_stopped_by_a_new_subscription_goes_on_counting(core):
    r = make_router(core)
    r.add("s.>", core.SubTarget(lambda e: e.data == b"!" and r.add("s.a", core.SubTarget())))
    r.sample_subjects(2)
    r.publish_batch("s.a", [b"", b"", b"!", b"", b"", b""])    # fast path, then the general
    assert r.take_samples() == ({"s.a": 3}, 0)


def test_changing_every_keeps_the_samples_and_restarts_the_countdown(router):
    router.sample_subjects(2)
    for s in ["s.a", "s.b", "s.c"]:                     # s.b sampled, s.c counted
        router.publish(s, b"")
    router.sample_subjects(3)                           # the countdown starts again (s.c
                                                        # does not count toward it)
    for s in ["t.a", "t.b", "t.c", "t.d"]:              # t.c sampled
        router.publish(s, b"")
    assert router.sample_every == 3
    assert router.take_samples() == ({"s.b": 1, "t.c": 1}, 0)


def test_zero_turns_it_off_and_clears(router):
    router.sample_subjects(1)
    router.publish_batch("s.a", [b""] * 4)
    router.sample_subjects(0)
    assert router.sample_every == 0
    router.publish("s.a", b"")
    assert router.take_samples() == ({}, 0)
    router.sample_subjects(1)                           # on again: from empty
    router.publish("s.b", b"")
    assert router.take_samples() == ({"s.b": 1}, 0)


def _subject(i, n):
    """A distinct subject of ``n`` bytes."""
    head = "f{:04d}.".format(i)
    return head + "x" * (n - len(head))


def _fill(router, room):
    """Publish distinct subjects (every=1) until ``room`` bytes of the
    buffer are left; returns how many."""
    left, i = SAMPLE_BYTES - room, 0
    while left:
        n = min(1018, left - SAMPLE_HEAD)
        router.publish(_subject(i, n), b"")
        left -= SAMPLE_HEAD + n
        i += 1
    return i


def test_a_batch_run_is_one_entry(router):
    router.sample_subjects(1)
    nfill = _fill(router, SAMPLE_HEAD + len("s.run"))   # room for one entry of s.run
    router.publish_batch("s.run", [b""] * 50)           # the fast path: one entry of 50
    router.publish_batch("t.run", [b""] * 3)            # no room: its weight is dropped
    router.publish("s.run", b"")                        # ... but s.run's entry is the last
    samples, dropped = router.take_samples()
    assert len(samples) == nfill + 1
    assert samples["s.run"] == 51 and dropped == 3


@pytest.mark.parametrize("every", [1, 2, 5])
def test_the_buffer_limit_counts_what_did_not_fit(router, every):
    router.sample_subjects(every)
    n = 1000
    for i in range(300):
        for _ in range(1 + i % 3):                      # (repeats: one entry, more weight)
            router.publish(_subject(i, n), b"")
    samples, dropped = router.take_samples()
    assert dropped > 0
    assert len(samples) <= SAMPLE_BYTES // (SAMPLE_HEAD + n)
    assert sum(samples.values()) + dropped == router.n_published // every
    # taken: the buffer is empty again, the countdown goes on
    router.publish_batch("s.a", [b""] * (2 * every))
    assert router.take_samples() == ({"s.a": 2}, 0)


def test_with_every_one_the_buffer_keeps_exactly_what_fits(router):
    router.sample_subjects(1)
    n = 1000
    for i in range(100):
        router.publish(_subject(i, n), b"")
    samples, dropped = router.take_samples()
    kept = SAMPLE_BYTES // (SAMPLE_HEAD + n)
    assert samples == {_subject(i, n): 1 for i in range(kept)}
    assert dropped == 100 - kept


# -- the two cores against each other ------------------------------------------------

SUBJECTS = ["s.a", "s.b", "t.a", "t.b", "n.a", "same", "s.é"]
LONG = [_subject(i, 1000) for i in range(3)]

_ops = st.one_of(
    st.tuples(st.just("every"), st.sampled_from([0, 1, 1, 2, 3, 5, 64])),
    st.tuples(st.just("publish"), st.sampled_from(SUBJECTS), st.sampled_from([b"", b"!"])),
    st.tuples(st.just("run"), st.sampled_from(SUBJECTS), st.lists(
        st.sampled_from([b"", b"!"]), min_size=2, max_size=80)),
    st.tuples(st.just("mixed"), st.lists(st.sampled_from(SUBJECTS + LONG), max_size=12)),
    st.tuples(st.just("long"), st.integers(1, 90)),
    st.tuples(st.just("take"),),
)


def _apply(r, op):
    kind = op[0]
    if kind == "every":
        r.sample_subjects(op[1])
    elif kind == "publish":
        r.publish(op[1], op[2])
    elif kind == "run":
        r.publish_batch(op[1], op[2])
    elif kind == "mixed":
        r.publish_batch(op[1], [b"!"] * len(op[1]))
    elif kind == "long":                                # distinct long subjects: fills it
        r.publish_batch([LONG[i % len(LONG)] for i in range(op[1])], [b""] * op[1])
    else:
        return r.take_samples()
    return None


@both_cores
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_ops, max_size=30))
def test_both_cores_sample_alike(ops):
    routers = [make_router(CORES["native"]), make_router(CORES["ref"])]
    for op in ops + [("take",)]:
        out = [_apply(r, op) for r in routers]
        assert out[0] == out[1], op
        assert routers[0].n_published == routers[1].n_published
        assert routers[0].sample_every == routers[1].sample_every
