"""Hypothesis: the compiled matcher against the pure-Python reference.

Random patterns, subjects and add/remove/match sequences, with a tiny
result cache so that eviction and invalidation after every kind of change
are exercised; after each step the native matcher's internal invariants
(including "every cached result equals a fresh computation") are checked.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import fastflow
from fastflow import SubjectError

from conftest import REF_CORE

pytestmark = pytest.mark.skipif(
    not fastflow.COMPILED, reason="the compiled core is not loaded (FASTFLOW_NO_EXTENSIONS=1)"
)

if fastflow.COMPILED:
    from fastflow import _core

LITERALS = ["a", "b", "c", "$d", "é", "orders", "x1"]
literal = st.sampled_from(LITERALS)
subjects = st.lists(literal, min_size=1, max_size=5).map(".".join)


@st.composite
def patterns(draw):
    toks = draw(st.lists(st.one_of(literal, st.just("*")), min_size=1, max_size=5))
    if draw(st.booleans()):
        toks[-1] = ">"
    return ".".join(toks)


queues = st.sampled_from([None, None, None, "q1", "q2"])


class MatcherMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.nat = _core.Matcher(cache_size=8)
        self.ref = REF_CORE.Matcher()
        self.live = []
        self.counter = 0

    @rule(pattern=patterns(), queue=queues)
    def add(self, pattern, queue):
        self.counter += 1
        v = (self.counter, pattern, queue)
        self.live.append((self.nat.add(pattern, v, queue=queue),
                          self.ref.add(pattern, v, queue=queue)))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def remove(self, data):
        i = data.draw(st.integers(0, len(self.live) - 1))
        hn, hr = self.live.pop(i)
        self.nat.remove(hn)
        self.ref.remove(hr)

    @rule(subject=subjects)
    def match(self, subject):
        assert sorted(self.nat.match(subject)) == sorted(self.ref.match(subject))

    @rule(batch=st.lists(subjects, max_size=6))
    def match_batch(self, batch):
        bn = self.nat.match_batch(batch)
        br = self.ref.match_batch(batch)
        assert list(bn.offsets) == list(br.offsets)
        assert [sorted(x) for x in bn.lists()] == [sorted(x) for x in br.lists()]

    @rule()
    def clear_cache(self):
        self.nat.cache_clear()

    @invariant()
    def consistent(self):
        self.nat._check()
        assert len(self.nat) == len(self.ref) == len(self.live)


TestMatcherMachine = MatcherMachine.TestCase
TestMatcherMachine.settings = settings(
    max_examples=300, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@settings(max_examples=300, deadline=None)
@given(pats=st.lists(st.tuples(patterns(), queues), max_size=12),
       subs=st.lists(subjects, min_size=1, max_size=12))
def test_match_equals_reference(pats, subs):
    for cache_size in (0, 4, 1024):
        nat, ref = _core.Matcher(cache_size=cache_size), REF_CORE.Matcher()
        for i, (p, q) in enumerate(pats):
            nat.add(p, (i, q), queue=q)
            ref.add(p, (i, q), queue=q)
        for _ in range(2):  # the second round hits the cache
            for s in subs:
                assert sorted(nat.match(s)) == sorted(ref.match(s)), (s, pats)
        nat._check()


# any byte soup: both cores accept it or raise the same message
ALPHABET = st.sampled_from(list("ab.*>$ ") + ["\x00", "\t", "\x7f", "é", "..", "€"])
texts = st.lists(ALPHABET, max_size=12).map("".join)


def _outcome(fn, arg):
    try:
        fn(arg)
    except SubjectError as exc:
        return str(exc)
    return None


@settings(max_examples=1000, deadline=None)
@given(text=texts)
def test_validation_messages_equal_reference(text):
    assert _outcome(_core.validate_subject, text) == _outcome(REF_CORE.validate_subject, text)
    assert _outcome(_core.validate_pattern, text) == _outcome(REF_CORE.validate_pattern, text)
    b = text.encode()
    assert _outcome(_core.validate_pattern, b) == _outcome(REF_CORE.validate_pattern, b)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 200), width=st.integers(1, 12))
def test_length_and_token_limits_equal_reference(n, width):
    text = ".".join(["t" * width] * n)
    assert _outcome(_core.validate_subject, text) == _outcome(REF_CORE.validate_subject, text)
