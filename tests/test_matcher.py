"""The matcher's behaviour, run against both cores (``core`` fixture)."""

import gc
import random
import weakref
from collections import Counter

import pytest

import fastflow
from fastflow import FastflowError, SubjectError


def values(m, subject):
    return sorted(m.match(subject), key=repr)


# -- matching -------------------------------------------------------------------


def test_literal(core):
    m = core.Matcher()
    m.add("orders.eu.AAPL", 1)
    assert m.match("orders.eu.AAPL") == [1]
    assert m.match("orders.eu.MSFT") == []
    assert m.match("orders.eu") == []
    assert m.match("orders.eu.AAPL.x") == []


def test_partial_wildcard_matches_exactly_one_token(core):
    m = core.Matcher()
    m.add("orders.*.AAPL", "p")
    assert m.match("orders.eu.AAPL") == ["p"]
    assert m.match("orders.us.AAPL") == ["p"]
    assert m.match("orders.AAPL") == []
    assert m.match("orders.eu.x.AAPL") == []


def test_full_wildcard_matches_one_or_more_tokens(core):
    m = core.Matcher()
    m.add("orders.>", "f")
    assert m.match("orders.eu") == ["f"]
    assert m.match("orders.eu.AAPL.bid") == ["f"]
    assert m.match("orders") == []
    m.add(">", "all")
    assert values(m, "orders") == ["all"]
    assert values(m, "x.y.z") == ["all"]


def test_mixed_wildcards(core):
    m = core.Matcher()
    m.add("*.*.>", "a")
    m.add("md.*.AAPL.*", "b")
    m.add("md.>", "c")
    m.add("*", "d")
    assert values(m, "md.x.AAPL.bid") == ["a", "b", "c"]
    assert values(m, "md.x") == ["c"]
    assert values(m, "md") == ["d"]
    assert values(m, "a.b.c") == ["a"]


def test_overlapping_patterns_each_count(core):
    m = core.Matcher()
    m.add("a.b", "v")
    m.add("a.*", "v")
    m.add("a.>", "v")
    assert m.match("a.b") == ["v", "v", "v"]


def test_dollar_subjects_private_to_leading_wildcards(core):
    m = core.Matcher()
    m.add(">", "all")
    m.add("*.x", "star")
    m.add("$SYS.>", "sys")
    m.add("$SYS.*", "sys1")
    m.add("a.*", "later")
    assert values(m, "$SYS.x") == ["sys", "sys1"]
    assert values(m, "$SYS.x.y") == ["sys"]
    assert values(m, "a.$b") == ["all", "later"]
    assert values(m, "b.x") == ["all", "star"]


def test_bytes_and_str_are_the_same_subject(core):
    m = core.Matcher()
    m.add(b"prices.\xe2\x82\xac.spot", 1)
    m.add("prices.*.spot", 2)
    assert sorted(m.match("prices.€.spot")) == [1, 2]
    assert sorted(m.match("prices.€.spot".encode())) == [1, 2]


def test_unicode_tokens(core):
    m = core.Matcher()
    m.add("天気.東京.>", "jp")
    assert m.match("天気.東京.today") == ["jp"]
    assert m.match("天気.大阪.today") == []


def test_len_and_contains(core):
    m = core.Matcher()
    h = m.add("a", 1)
    assert len(m) == 1 and h in m
    m.remove(h)
    assert len(m) == 0 and h not in m
    assert "nope" not in m


# -- removal --------------------------------------------------------------------


def test_remove(core):
    m = core.Matcher()
    h1 = m.add("a.*", 1)
    h2 = m.add("a.b", 2)
    assert sorted(m.match("a.b")) == [1, 2]
    m.remove(h1)
    assert m.match("a.b") == [2]
    m.remove(h2)
    assert m.match("a.b") == []
    assert len(m) == 0


@pytest.mark.parametrize("bad", [12345, -1, 1 << 70, "1", None, 1.5])
def test_remove_unknown_handle(core, bad):
    m = core.Matcher()
    m.add("a", 1)
    with pytest.raises(KeyError, match="unknown subscription handle"):
        m.remove(bad)
    assert m.match("a") == [1]


def test_remove_twice_and_stale_handles(core):
    m = core.Matcher()
    h = m.add("a", 1)
    m.remove(h)
    with pytest.raises(KeyError, match="unknown subscription handle"):
        m.remove(h)
    h2 = m.add("b", 2)  # may reuse h's slot: the old handle must stay dead
    assert h2 != h
    with pytest.raises(KeyError):
        m.remove(h)
    assert m.match("b") == [2]


def test_values_are_released(core):
    class V:
        pass

    m = core.Matcher()
    v = V()
    ref = weakref.ref(v)
    h = m.add("a", v)
    del v
    gc.collect()
    assert ref() is not None
    m.remove(h)
    gc.collect()
    assert ref() is None

    v2 = V()
    ref2 = weakref.ref(v2)
    m.add("a.b", v2)
    del v2, m
    gc.collect()
    assert ref2() is None


def test_value_finalizer_may_reenter(core):
    m = core.Matcher()

    class Reenter:
        def __del__(self):
            m.add("reentered", "r")
            m.match("a")

    h = m.add("a", Reenter())
    m.remove(h)
    gc.collect()
    assert m.match("reentered") == ["r"]
    assert m.match("a") == []


# -- queue groups -----------------------------------------------------------------


def test_queue_group_one_member_per_match(core):
    m = core.Matcher()
    for i in range(3):
        m.add("jobs.*", ("w", i), queue="workers")
    m.add("jobs.>", "audit")
    got = Counter()
    for _ in range(300):
        res = m.match("jobs.x")
        assert "audit" in res and len(res) == 2
        got.update(v for v in res if v != "audit")
    assert got == {("w", 0): 100, ("w", 1): 100, ("w", 2): 100}


def test_queue_group_spans_patterns(core):
    # members on different matching patterns form one group (nats-server too)
    m = core.Matcher()
    m.add("jobs.eu", "a", queue="q")
    m.add("jobs.*", "b", queue="q")
    m.add("jobs.>", "c", queue="q")
    m.add("jobs.*", "x", queue="other")
    counts = Counter()
    for _ in range(600):
        res = m.match("jobs.eu")
        assert len(res) == 2 and "x" in res
        counts.update(res)
    assert counts == {"a": 200, "b": 200, "c": 200, "x": 600}
    # a subject only some members match: only those share it
    assert m.match("jobs.us") in (["b", "x"], ["c", "x"], ["x", "b"], ["x", "c"])


def test_queue_group_removal(core):
    m = core.Matcher()
    hs = [m.add("q.a", i, queue="g") for i in range(4)]
    for h in hs[:3]:
        m.remove(h)
    assert [m.match("q.a") for _ in range(3)] == [[3], [3], [3]]
    m.remove(hs[3])
    assert m.match("q.a") == []
    m.add("q.a", "new", queue="g")
    assert m.match("q.a") == ["new"]


@pytest.mark.parametrize("queue, exc, msg", [
    ("", ValueError, "invalid queue group ''"),
    ("a b", ValueError, "invalid queue group 'a b'"),
    ("a\tb", ValueError, "invalid queue group"),
    (5, TypeError, "queue must be str or None, not int"),
    (b"q", TypeError, "queue must be str or None, not bytes"),
])
def test_queue_group_validation(core, queue, exc, msg):
    m = core.Matcher()
    with pytest.raises(exc, match=msg):
        m.add("a", 1, queue=queue)
    assert len(m) == 0 and m.match("a") == []


# -- validation -------------------------------------------------------------------

BAD_SUBJECTS = [
    ("", r"invalid subject '': empty subject"),
    ("orders..eu", r"invalid subject 'orders\.\.eu': empty token at position 2"),
    (".a", r"empty token at position 1"),
    ("a.", r"empty token at position 2"),
    ("a b", r"character ' ' not allowed in token 'a b' at position 1"),
    ("a.b\tc", r"character '\\t' not allowed in token 'b\\tc' at position 2"),
    ("a.\x00", r"character '\\x00' not allowed in token '\\x00' at position 2"),
    ("a.\x7f", r"character '\\x7f' not allowed"),
    ("a.b*.c", r"wildcard '\*' inside token 'b\*' at position 2"),
    ("a.>b", r"wildcard '>' inside token '>b' at position 2"),
    ("a.*",
     r"invalid subject 'a\.\*': wildcard '\*' at position 2: a publish subject must be literal"),
    (">", r"wildcard '>' at position 1: a publish subject must be literal"),
    ("a." * 700 + "a", r"1401 bytes, the limit is 1024"),
    (".".join(["t"] * 129), r"129 tokens, the limit is 128"),
    ("a.\ud800", r"not encodable as UTF-8"),
]

BAD_PATTERNS = [
    ("", r"invalid pattern '': empty pattern"),
    ("a..b", r"invalid pattern 'a\.\.b': empty token at position 2"),
    ("a.>.b", r"'>' must be the last token, found at position 2 of 3"),
    ("a.**", r"wildcard '\*' inside token '\*\*' at position 2"),
    ("a.b*", r"wildcard '\*' inside token 'b\*' at position 2"),
    ("a .>", r"character ' ' not allowed in token 'a ' at position 1"),
    ("x" * 1025, r"1025 bytes, the limit is 1024"),
]


@pytest.mark.parametrize("subject, msg", BAD_SUBJECTS)
def test_bad_subjects(core, subject, msg):
    m = core.Matcher()
    m.add(">", 1)
    with pytest.raises(SubjectError, match=msg):
        m.match(subject)
    with pytest.raises(SubjectError, match=msg):
        core.validate_subject(subject)
    assert m.match("still.works") == [1]


@pytest.mark.parametrize("pattern, msg", BAD_PATTERNS)
def test_bad_patterns(core, pattern, msg):
    m = core.Matcher()
    with pytest.raises(SubjectError, match=msg):
        m.add(pattern, 1)
    with pytest.raises(SubjectError, match=msg):
        core.validate_pattern(pattern)
    assert len(m) == 0


def test_limits_are_inclusive(core):
    m = core.Matcher()
    longest = "abcdefg." * 127 + "abcdefgh"
    assert len(longest) == 1024
    m.add(longest, 1)
    assert m.match(longest) == [1]
    deepest = ".".join(["t"] * 128)
    m.add(deepest, 2)
    assert m.match(deepest) == [2]
    m.add(".".join(["*"] * 127 + [">"]), 3)
    assert sorted(m.match(deepest)) == [2, 3]


def test_subject_error_is_a_value_error(core):
    assert issubclass(SubjectError, ValueError)
    assert issubclass(SubjectError, FastflowError)
    with pytest.raises(ValueError):
        core.validate_subject("a..b")


@pytest.mark.parametrize("bad", [None, 5, ["a"], 1.0])
def test_type_errors(core, bad):
    m = core.Matcher()
    with pytest.raises(TypeError, match="subject must be str or bytes"):
        m.match(bad)
    with pytest.raises(TypeError, match="pattern must be str or bytes"):
        m.add(bad, 1)


def test_long_subject_is_shortened_in_messages(core):
    s = "a" * 2000
    with pytest.raises(SubjectError) as info:
        core.validate_subject(s)
    assert len(str(info.value)) < 200
    assert "2000 bytes" in str(info.value)


# -- match_batch ----------------------------------------------------------------


def test_match_batch(core):
    m = core.Matcher()
    ha = m.add("a.*", "a*")
    hb = m.add("a.b", "ab")
    m.add("c", "c")
    subjects = ["a.b", "x", "a.c", "c"]
    for seq in (subjects, tuple(subjects), iter(subjects)):
        b = m.match_batch(seq)
        assert len(b) == 4
        assert list(b.offsets) == [0, 2, 2, 3, 4]
        assert sorted(list(b.handles)[0:2]) == sorted([ha, hb])
        assert list(b.handles)[2] == ha
        assert b.total == 4
        assert [sorted(x) for x in b.lists()] == [["a*", "ab"], [], ["a*"], ["c"]]
        assert b[-1] == ["c"]
        with pytest.raises(IndexError):
            b[4]


def test_match_batch_buffers(core):
    m = core.Matcher()
    m.add("a", 1)
    b = m.match_batch(["a", "a", "b"])
    mv = memoryview(b.handles)
    assert mv.format == "q" and mv.itemsize == 8 and len(mv) == 2
    assert memoryview(b.offsets).tolist() == [0, 1, 2, 2]


def test_match_batch_numpy_view():
    np = pytest.importorskip("numpy")
    m = fastflow.Matcher()
    m.add("a.*", 7)
    b = m.match_batch(["a.1", "a.2", "b"])
    off = np.asarray(b.offsets)
    assert off.dtype == np.int64 and off.tolist() == [0, 1, 2, 2]
    assert np.diff(off).tolist() == [1, 1, 0]


def test_match_batch_bad_subject_names_index(core):
    m = core.Matcher()
    m.add(">", 1)
    if core.COMPILED:
        with pytest.raises(SubjectError, match=r"empty token at position 2 \(subjects\[2\]\)"):
            m.match_batch(["a", "b", "c..d"])
    else:
        with pytest.raises(SubjectError, match=r"empty token at position 2"):
            m.match_batch(["a", "b", "c..d"])
    with pytest.raises(TypeError):
        m.match_batch(["a", 3])


def test_match_batch_skips_removed_handles(core):
    m = core.Matcher()
    h = m.add("a", 1)
    m.add("a", 2)
    b = m.match_batch(["a"])
    m.remove(h)
    assert b[0] == [2]


def test_match_batch_queue_groups(core):
    m = core.Matcher()
    for i in range(4):
        m.add("q", i, queue="g")
    b = m.match_batch(["q"] * 400)
    assert list(b.offsets)[-1] == 400
    assert Counter(v for lst in b.lists() for v in lst) == {0: 100, 1: 100, 2: 100, 3: 100}


# -- the result cache (native) and the shared counters ----------------------------


def test_stats_counters(core):
    m = core.Matcher()
    h = m.add("a.*", 1)
    m.add("b", 2)
    m.match("a.x")
    m.match("a.x")
    m.remove(h)
    st = m.stats()
    assert st["subscriptions"] == 1
    assert st["inserts"] == 2 and st["removes"] == 1
    assert st["matches"] == 2
    assert st["cache_hits"] + st["cache_misses"] == 2


@pytest.fixture
def native():
    if not fastflow.COMPILED:
        pytest.skip("the compiled core is not loaded (FASTFLOW_NO_EXTENSIONS=1)")
    return fastflow.Matcher


def test_cache_hits_and_misses(native):
    m = native(cache_size=1024)
    m.add("a.*", 1)
    assert m.match("a.x") == [1]
    assert m.match("a.x") == [1]
    assert m.match("zz") == []
    assert m.match("zz") == []  # no interest is cached too
    st = m.stats()
    assert (st["cache_hits"], st["cache_misses"], st["cache_entries"]) == (2, 2, 2)
    m._check()


def test_cache_invalidation_is_cheap_and_correct(native):
    m = native(cache_size=4096)
    m.add("orders.eu.*", "eu")
    subjects = ["orders.eu.%d" % i for i in range(50)] + ["trades.x.%d" % i for i in range(50)]
    for s in subjects:
        m.match(s)
    assert m.stats()["cache_entries"] == 100
    # a literal pattern drops one entry
    h = m.add("orders.eu.7", "seven")
    assert m.stats()["cache_entries"] == 99
    assert sorted(m.match("orders.eu.7")) == ["eu", "seven"]
    # a wildcard pattern with a literal first token makes the entries under
    # its first token stale in O(1) (a generation counter): the others stay
    h2 = m.add("trades.*.3", "t3")
    st = m.stats()
    assert st["cache_entries"] == 50 and st["cache_stale"] == 50
    assert m.match("orders.eu.1") == ["eu"]
    assert m.stats()["cache_hits"] >= 1
    assert m.match("trades.x.3") == ["t3"]
    assert m.match("trades.x.4") == []
    m._check()
    # removals invalidate the same way
    m.remove(h2)
    assert m.match("trades.x.3") == []
    m.remove(h)
    assert m.match("orders.eu.7") == ["eu"]
    st = m.stats()
    assert st["cache_flushes"] == 0 and st["cache_invalidations"] >= 4
    m._check()
    # a leading wildcard can touch anything: every entry goes stale
    m.add("*.eu.>", "any")
    assert m.stats()["cache_entries"] == 0 and m.stats()["cache_flushes"] == 1
    assert sorted(m.match("orders.eu.1")) == ["any", "eu"]
    m._check()


def test_cache_disabled(native):
    m = native(cache_size=0)
    m.add("a", 1)
    for _ in range(3):
        assert m.match("a") == [1]
    st = m.stats()
    assert st["cache_hits"] == 0 and st["cache_misses"] == 3 and st["cache_entries"] == 0


def test_cache_bytes_bounded(native):
    m = native(cache_size=1 << 16, cache_max_bytes=4096)
    m.add(">", 1)
    for i in range(2000):
        assert m.match("subject.number.%d" % i) == [1]
        assert m.stats()["cache_bytes"] <= 4096
    assert m.stats()["cache_flushes"] > 0
    m._check()


def test_cache_full_bucket_evicts(native):
    m = native(cache_size=1)  # rounded up to one bucket of 4 entries
    assert m.cache_size == 4
    m.add("a.*", 1)
    for s in ["a.1", "a.2", "a.3", "a.4", "a.5", "b"]:
        m.match(s)
    st = m.stats()
    assert st["cache_entries"] == 4 and st["cache_evictions"] == 2
    m.match("a.1")  # evicted first: a miss
    assert m.stats()["cache_misses"] == 7
    for _ in range(3):
        assert m.match("a.5") == [1]  # hits move it to the front
    assert m.stats()["cache_hits"] == 3
    m._check()


def test_cache_arguments(native):
    with pytest.raises(ValueError, match="cache_size must be >= 0, got -1"):
        native(cache_size=-1)
    with pytest.raises(ValueError, match="cache_max_bytes must be >= 0"):
        native(cache_max_bytes=-5)
    assert native(cache_size=1000).cache_size == 1024


def test_random_churn_against_reference(seed):
    """Long random add/remove/match run, native vs reference, same results."""
    if not fastflow.COMPILED:
        pytest.skip("the compiled core is not loaded")
    from conftest import REF_CORE

    rnd = random.Random(seed)
    toks = ["a", "b", "c", "d", "$s"]
    nat, ref = fastflow.Matcher(cache_size=64), REF_CORE.Matcher()
    live = []
    for step in range(4000):
        r = rnd.random()
        if r < 0.35 or not live:
            n = rnd.randint(1, 4)
            pat = [rnd.choice(toks + ["*", "*"]) for _ in range(n)]
            if rnd.random() < 0.3:
                pat[-1] = ">"
            pat = ".".join(pat)
            q = rnd.choice([None, None, "q1", "q2"])
            v = (step, pat, q)
            live.append((nat.add(pat, v, queue=q), ref.add(pat, v, queue=q)))
        elif r < 0.55:
            hn, hr = live.pop(rnd.randrange(len(live)))
            nat.remove(hn)
            ref.remove(hr)
        else:
            subj = ".".join(rnd.choice(toks) for _ in range(rnd.randint(1, 5)))
            assert sorted(nat.match(subj)) == sorted(ref.match(subj)), (step, subj)
        if step % 500 == 0:
            nat._check()
    nat._check()


def test_both_cores_report_the_same_stats_keys():
    from conftest import CORES

    keys = {name: set(c.Matcher().stats()) for name, c in CORES.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1, keys
