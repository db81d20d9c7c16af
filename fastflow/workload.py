"""A synthetic market-data workload, shared by ``fastflow demo`` and the
benchmarks so that both measure the same thing.

Subjects are shaped like ``orders.<region>.<symbol>``,
``trades.<venue>.<symbol>`` and ``md.<venue>.<symbol>.<field>``; publishes
and literal subscriptions are drawn with a zipf skew over the distinct
subjects (popular symbols are published and subscribed to most); a share of
the subscriptions use ``*`` or ``>``.  Everything is derived from ``seed``.
"""

import itertools
import random
import string
from dataclasses import dataclass, field

__all__ = ("Workload", "make_workload", "make_subscriptions")

REGIONS = ("eu", "us", "ap", "latam", "mea", "uk", "ch", "jp")
VENUES = ("xnas", "xnys", "arcx", "bats", "iexg", "xlon", "xetr", "xpar", "xtks", "xhkg", "xasx", "xtse")
FIELDS = ("bid", "ask", "last", "vol", "oi", "hi", "lo")


@dataclass
class Workload:
    patterns: list  # subscription patterns (with repeats: several subscribers)
    publishes: list  # the publish stream (literal subjects)
    distinct: list  # the distinct publish subjects, most popular first
    seed: int
    zipf_s: float
    wildcards: int = 0
    info: dict = field(default_factory=dict)

    def describe(self):
        return (
            "{:,} subscriptions ({:,} with wildcards), {:,} publishes over {:,} "
            "distinct subjects (zipf s={}), seed {}".format(
                len(self.patterns), self.wildcards, len(self.publishes),
                len(self.distinct), self.zipf_s, self.seed)
        )


def _symbols(rnd, n):
    seen = set()
    out = []
    letters = string.ascii_uppercase
    while len(out) < n:
        s = "".join(rnd.choice(letters) for _ in range(rnd.choice((3, 4, 4, 5))))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _distinct_subjects(rnd, n_subjects):
    # about n_subjects / 12 symbols, each seen in a few subject shapes
    symbols = _symbols(rnd, max(1, n_subjects // 12))
    out = []
    seen = set()
    for sym in itertools.cycle(symbols):
        if len(out) >= n_subjects:
            break
        kind = rnd.random()
        if kind < 0.3:
            s = "orders.{}.{}".format(rnd.choice(REGIONS), sym)
        elif kind < 0.55:
            s = "trades.{}.{}".format(rnd.choice(VENUES), sym)
        else:
            s = "md.{}.{}.{}".format(rnd.choice(VENUES), sym, rnd.choice(FIELDS))
        if s not in seen:
            seen.add(s)
            out.append(s)
    rnd.shuffle(out)  # popularity rank independent of the shape
    return out, symbols


def _wildcard_pattern(rnd, symbols):
    # mostly one symbol across venues/regions/fields; 1 in 50 is a broad
    # venue- or region-wide subscription
    sym = rnd.choice(symbols)
    if rnd.random() < 0.02:
        return rnd.choice((
            "trades.{}.*".format(rnd.choice(VENUES)),
            "md.{}.>".format(rnd.choice(VENUES)),
            "orders.{}.>".format(rnd.choice(REGIONS)),
        ))
    return rnd.choice((
        "orders.*.{}".format(sym),
        "trades.*.{}".format(sym),
        "md.*.{}.*".format(sym),
        "md.{}.{}.>".format(rnd.choice(VENUES), sym),
    ))


def make_workload(n_subs=10_000, n_publishes=1_000_000, n_subjects=50_000,
                  wildcard_share=0.05, zipf_s=1.1, seed=2026):
    """Build the workload; deterministic for a given set of arguments."""
    rnd = random.Random(seed)
    distinct, symbols = _distinct_subjects(rnd, n_subjects)
    cum = list(itertools.accumulate(1.0 / (r ** zipf_s) for r in range(1, len(distinct) + 1)))
    n_wild = int(round(n_subs * wildcard_share))
    # literal subscriptions: distinct subjects, half of them among the most
    # published tenth, the rest anywhere (mean fanout stays near 1-2)
    n_lit = min(n_subs - n_wild, len(distinct))
    top = max(1, len(distinct) // 10)
    hot = rnd.sample(range(top), min(top, n_lit // 2))
    cold = rnd.sample(range(top, len(distinct)), min(len(distinct) - top, n_lit - len(hot)))
    patterns = [distinct[i] for i in hot + cold]
    patterns += [_wildcard_pattern(rnd, symbols) for _ in range(n_wild)]
    rnd.shuffle(patterns)
    publishes = rnd.choices(distinct, cum_weights=cum, k=n_publishes)
    return Workload(patterns, publishes, distinct, seed, zipf_s, n_wild)


def make_subscriptions(n=1_000_000, seed=2026):
    """``n`` mostly distinct patterns of the same shapes, with an account
    token (``orders.<region>.<symbol>.<account>``), 5% with wildcards: the
    memory-scale workload."""
    rnd = random.Random(seed)
    symbols = _symbols(rnd, 20_000)
    out = []
    for i in range(n):
        sym = symbols[i % len(symbols)]
        acct = "a{}".format(rnd.randrange(1 << 30))
        r = rnd.random()
        if r < 0.05:
            out.append("orders.*.{}.{}".format(sym, acct) if r < 0.025 else "md.{}.{}.>".format(rnd.choice(VENUES), acct))
        elif r < 0.5:
            out.append("orders.{}.{}.{}".format(rnd.choice(REGIONS), sym, acct))
        elif r < 0.75:
            out.append("trades.{}.{}.{}".format(rnd.choice(VENUES), sym, acct))
        else:
            out.append("md.{}.{}.{}.{}".format(rnd.choice(VENUES), sym, rnd.choice(FIELDS), acct))
    return out
