"""pytest-benchmark micro benchmarks for the subject matcher.

Not part of the test suite (``testpaths = ["tests"]``); run them explicitly::

    python -m pytest benchmarks/ -q                      # time them
    python -m pytest benchmarks/ -q --benchmark-disable  # only check they run

The workload (``fastflow.workload``, see README.md: 10,000 subscriptions,
100,000 publishes) is built once per module.  A whole loop over the stream is one round
(``benchmark.pedantic(rounds=5, iterations=1)``), so the figures are seconds
per 100,000 publishes.  There are no timing assertions here.
"""

from collections import Counter

import pytest

import fastflow
from _common import paho_add
from fastflow._ref import Matcher as RefMatcher
from fastflow.workload import DEFAULT_SEED, make_subscriptions, make_workload, to_mqtt

N_SUBS = 10_000
N_PUBLISHES = 100_000
N_SUBJECTS = 50_000
ROUNDS = 5


@pytest.fixture(scope="module")
def wl():
    print("workload seed", DEFAULT_SEED)
    return make_workload(n_subs=N_SUBS, n_publishes=N_PUBLISHES, n_subjects=N_SUBJECTS,
                         seed=DEFAULT_SEED)


@pytest.fixture(autouse=True)
def _seed_in_report(request):
    if "benchmark" in request.fixturenames:
        request.getfixturevalue("benchmark").extra_info["seed"] = DEFAULT_SEED


def _build(cls, patterns, **kw):
    m = cls(**kw)
    for i, p in enumerate(patterns):
        m.add(p, i)
    return m


@pytest.fixture(scope="module")
def ff_off(wl):
    return _build(fastflow.Matcher, wl.patterns, cache_size=0)


@pytest.fixture(scope="module")
def ff_warm(wl):
    m = _build(fastflow.Matcher, wl.patterns)
    m.match_batch(wl.publishes)  # one pass fills the result cache
    return m


@pytest.fixture(scope="module")
def ref(wl):
    return _build(RefMatcher, wl.patterns, cache_size=0)


@pytest.fixture(scope="module")
def paho(wl):
    matcher = pytest.importorskip("paho.mqtt.matcher")
    mm = matcher.MQTTMatcher()
    for i, p in enumerate(wl.patterns):
        paho_add(mm, to_mqtt(p), i)
    return mm


def _loop(match, stream):
    for s in stream:
        match(s)


def _loop_paho(iter_match, topics):
    for t in topics:
        list(iter_match(t))


def test_sanity(wl, ff_off, ff_warm, ref):
    """Not a benchmark: the matchers agree on the first publishes."""
    for s in wl.publishes[:500]:
        want = Counter(ref.match(s))
        assert Counter(ff_off.match(s)) == want
        assert Counter(ff_warm.match(s)) == want


def test_match_cache_off(benchmark, wl, ff_off):
    benchmark.extra_info["publishes"] = len(wl.publishes)
    benchmark.pedantic(_loop, args=(ff_off.match, wl.publishes), rounds=ROUNDS, iterations=1)


def test_match_cache_warm(benchmark, wl, ff_warm):
    benchmark.extra_info["publishes"] = len(wl.publishes)
    benchmark.pedantic(_loop, args=(ff_warm.match, wl.publishes), rounds=ROUNDS, iterations=1)


def test_match_batch_cache_off(benchmark, wl, ff_off):
    benchmark.extra_info["publishes"] = len(wl.publishes)
    batch = benchmark.pedantic(ff_off.match_batch, args=(wl.publishes,),
                               rounds=ROUNDS, iterations=1)
    assert len(batch) == len(wl.publishes)


def test_match_batch_cache_warm(benchmark, wl, ff_warm):
    benchmark.extra_info["publishes"] = len(wl.publishes)
    batch = benchmark.pedantic(ff_warm.match_batch, args=(wl.publishes,),
                               rounds=ROUNDS, iterations=1)
    assert len(batch) == len(wl.publishes)


@pytest.mark.parametrize("cache", ["off", "warm"])
def test_add_remove_churn(benchmark, wl, cache):
    """Add then remove 1,000 subscriptions on a matcher holding the 10,000
    of the workload (with a warm cache, each remove also invalidates)."""
    m = _build(fastflow.Matcher, wl.patterns, cache_size=0 if cache == "off" else 65536)
    churn = make_subscriptions(1_000, seed=7)

    def setup():
        if cache == "warm":
            m.match_batch(wl.publishes)  # refill what the last round invalidated
        return (), {}

    def add_remove():
        add = m.add
        hs = [add(p, None) for p in churn]
        remove = m.remove
        for h in hs:
            remove(h)

    benchmark.extra_info["subscriptions"] = len(churn)
    benchmark.pedantic(add_remove, setup=setup, rounds=ROUNDS, iterations=1)
    assert m.stats()["subscriptions"] == len(wl.patterns)


def test_ref_match(benchmark, wl, ref):
    benchmark.extra_info["publishes"] = len(wl.publishes)
    benchmark.pedantic(_loop, args=(ref.match, wl.publishes), rounds=ROUNDS, iterations=1)


def test_paho_match(benchmark, wl, paho):
    topics = wl.mqtt_publishes()
    benchmark.extra_info["publishes"] = len(topics)
    benchmark.pedantic(_loop_paho, args=(paho.iter_match, topics),
                       rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("remove", ["each", "many"])
def test_wildcard_client_warm_cache(benchmark, remove):
    """One client's 60,000 wildcard subscriptions on a matcher whose cache
    is warm (65,536 subjects under the same first token), then its
    disconnect: one ``remove`` per handle or one ``remove_many``.  Each
    change makes cache entries stale in O(1) (generation counters), so
    this no longer scales with the cache (it was ~1 ms per add on a loaded
    2-core VM, a scan of the whole cache)."""
    n = 60_000
    m = fastflow.Matcher()
    m.add("orders.>", "all")
    subjects = ["orders.%d.x" % i for i in range(65_536)]
    patterns = ["orders.*.c%d" % i for i in range(n)]

    def setup():
        m.match_batch(subjects)          # warm
        return (), {}

    def subscribe_disconnect():
        add = m.add
        hs = [add(p, None) for p in patterns]
        m.match_batch(subjects)          # warm again before the disconnect
        if remove == "many":
            m.remove_many(hs)
        else:
            rm = m.remove
            for h in hs:
                rm(h)

    benchmark.extra_info["subscriptions"] = n
    benchmark.pedantic(subscribe_disconnect, setup=setup, rounds=3, iterations=1)
    assert len(m) == 1
