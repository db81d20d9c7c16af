"""The synthetic market-data workload: the one generator behind
``fastflow demo`` and the benchmarks (``benchmarks/``), so that both measure
the same thing.  ``benchmarks/README.md`` describes it and its figures.

Subjects are shaped like ``orders.<region>.<symbol>``,
``trades.<venue>.<symbol>`` and ``md.<venue>.<symbol>.<field>``.  Publishes
draw from a fixed set of distinct subjects with a Zipf skew over their rank;
subjects with popular symbols rank first, so popular symbols are published
and subscribed to most.  5% of the subscriptions use ``*`` or ``>``.  The
subscriptions are chosen so that about 45% of the publishes match at least
one of them (mean fanout about 1.2).

Pure Python (``random.Random(seed)``, no numpy): the same arguments give the
same workload.  ``python -m fastflow.workload`` prints its figures.
"""

import argparse
import itertools
import math
import random
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

__all__ = (
    "DEFAULT_SEED",
    "Workload",
    "format_stats",
    "make_subscriptions",
    "make_workload",
    "to_mqtt",
)

DEFAULT_SEED = 2026

REGIONS = ("us", "ca", "br", "uk", "eu", "ch", "za", "in", "sg", "hk", "jp", "au")
VENUES = (
    "xnys", "xnas", "arcx", "bats", "edgx", "iexg", "xlon", "xetr",
    "xpar", "xams", "xswx", "xtks", "xhkg", "xasx", "xtse", "xsgx",
)
FIELDS = ("bid", "ask", "last", "vol", "depth", "stats")

FAMILY_CUM = (0.30, 0.50, 1.0)  # orders 30%, trades 20%, md 50% of the distinct subjects
ZIPF_S = 1.1  # publish skew over subject ranks
SYMBOL_S = 0.8  # popularity skew of symbols when building subjects and patterns
SUB_S = 0.6  # how strongly subscribed subjects follow publish popularity
WILDCARD_SHARE = 0.05
HIT_TARGET = 0.45  # share of publishes that should have >= 1 subscriber
WILD_TARGET = 0.25  # ... of which the wildcards may cover up to this much
MAX_DRAWS = 30  # redraws of a wildcard that would overshoot WILD_TARGET

# narrow wildcard kinds and their weights (the broad ones are added by count)
_WILD_KINDS = ("orders.*.S", "trades.*.S", "md.*.S.F", "md.V.S.*", "md.V.S.>", "md.*.S.>")
_WILD_W = (0.25, 0.20, 0.20, 0.15, 0.12, 0.08)


@dataclass
class Workload:
    patterns: list  # subscription patterns (with repeats: several subscribers)
    publishes: list  # the publish stream (literal subjects, shared str objects)
    distinct: list  # the distinct publish subjects, most popular first
    seed: int
    zipf_s: float
    wildcards: int = 0  # how many of the patterns contain '*' or '>'
    params: dict = field(default_factory=dict)  # the generator's arguments and constants

    def describe(self):
        return (
            "{:,} subscriptions ({:,} with wildcards), {:,} publishes over {:,} "
            "distinct subjects (zipf s={}), seed {}".format(
                len(self.patterns), self.wildcards, len(self.publishes),
                len(self.distinct), self.zipf_s, self.seed)
        )

    def mqtt_patterns(self):
        """The patterns as MQTT topic filters (see ``to_mqtt``)."""
        return [to_mqtt(p) for p in self.patterns]

    def mqtt_publishes(self):
        """The publish stream as MQTT topic names (one str per distinct subject)."""
        table = {s: to_mqtt(s) for s in self.distinct}
        return [table[s] for s in self.publishes]

    def stats(self, matcher_cls=None):
        """Hit ratio, mean fanout, distinct counts, ... of this workload,
        computed with the pure-Python reference matcher (independent of the
        compiled one), or with ``matcher_cls`` (e.g. ``fastflow.Matcher``)."""
        if matcher_cls is None:
            from fastflow._ref import Matcher as matcher_cls
        m = matcher_cls(cache_size=0)
        for i, p in enumerate(self.patterns):
            m.add(p, i)
        counts = Counter(self.publishes)
        hits = fan = 0
        for s, c in counts.items():
            k = len(m.match(s))
            fan += k * c
            if k:
                hits += c
        n = len(self.publishes)
        return {
            "seed": self.seed,
            "subscriptions": len(self.patterns),
            "distinct_patterns": len(set(self.patterns)),
            "wildcard_patterns": self.wildcards,
            "publishes": n,
            "distinct_subjects": len(self.distinct),
            "distinct_published": len(counts),
            "top_subject_share": counts.most_common(1)[0][1] / n if n else 0.0,
            "hit_ratio": hits / n if n else 0.0,
            "mean_fanout": fan / n if n else 0.0,
            "mean_fanout_of_hits": fan / hits if hits else 0.0,
        }


def format_stats(st):
    """One line from ``Workload.stats()``."""
    return (
        "seed {seed}: {subscriptions:,} subscriptions ({distinct_patterns:,} distinct, "
        "{wildcard_patterns:,} with wildcards), {publishes:,} publishes over "
        "{distinct_subjects:,} subjects ({distinct_published:,} published; hottest "
        "{top_subject_share:.1%} of publishes); hit ratio {hit_ratio:.1%}, mean fanout "
        "{mean_fanout:.2f} ({mean_fanout_of_hits:.2f} per hit)".format(**st)
    )


def to_mqtt(pattern):
    """fastflow syntax -> MQTT syntax: '.'->'/', '*'->'+', '>'->'#'.

    Only valid for the workload's tokens (no '/', '+' or '#' inside them).
    """
    return pattern.replace(".", "/").replace("*", "+").replace(">", "#")


# -- generation ----------------------------------------------------------------

def _power_weights(n, s):
    """Weights 1/r**s for ranks r = 1..n."""
    return [r ** -s for r in range(1, n + 1)]


def _symbols(rnd, n):
    """``n`` distinct ticker-like symbols (2-5 upper-case letters)."""
    letters = string.ascii_uppercase
    out = []
    seen = set()
    while len(out) < n:
        s = "".join(rnd.choices(letters, k=rnd.randint(2, 5)))
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def _distinct_subjects(rnd, n_subjects, symbols, sym_cum):
    """Distinct literal subjects in order of first draw (so popular symbols
    come first: rank and symbol popularity are correlated)."""
    out = []
    seen = set()
    while len(out) < n_subjects:
        k = max(4096, 2 * (n_subjects - len(out)))
        fams = rnd.choices((0, 1, 2), cum_weights=FAMILY_CUM, k=k)
        syms = rnd.choices(symbols, cum_weights=sym_cum, k=k)
        regs = rnd.choices(REGIONS, k=k)
        vens = rnd.choices(VENUES, k=k)
        flds = rnd.choices(FIELDS, k=k)
        for f, y, r, v, d in zip(fams, syms, regs, vens, flds):
            if f == 0:
                s = "orders." + r + "." + y
            elif f == 1:
                s = "trades." + v + "." + y
            else:
                s = "md." + v + "." + y + "." + d
            if s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) == n_subjects:
                    break
    return out


def _wildcard(rnd, kind, symbols, sym_cum):
    sym = rnd.choices(symbols, cum_weights=sym_cum)[0]
    region = rnd.choice(REGIONS)
    venue = rnd.choice(VENUES)
    fld = rnd.choice(FIELDS)
    return {
        "orders.*.S": "orders.*.{}".format(sym),
        "trades.*.S": "trades.*.{}".format(sym),
        "md.*.S.F": "md.*.{}.{}".format(sym, fld),
        "md.V.S.*": "md.{}.{}.*".format(venue, sym),
        "md.V.S.>": "md.{}.{}.>".format(venue, sym),
        "md.*.S.>": "md.*.{}.>".format(sym),
        "trades.V.*": "trades.{}.*".format(venue),
        "orders.R.>": "orders.{}.>".format(region),
    }[kind]


def _covers(ptoks, stoks):
    """Does pattern ``ptoks`` match subject ``stoks`` (token lists)?"""
    for i, t in enumerate(ptoks):
        if t == ">":
            return len(stoks) > i
        if i >= len(stoks) or (t != "*" and t != stoks[i]):
            return False
    return len(ptoks) == len(stoks)


class _Coverage:
    """Which distinct subjects the accepted patterns cover, and the publish
    probability mass they carry (the expected hit ratio)."""

    def __init__(self, distinct, p):
        self.p = p
        self.covered = bytearray(len(distinct))
        self.mass = 0.0
        self.toks = [s.split(".") for s in distinct]
        self.index = {}  # (first, second or None, third or None) -> subject ids
        for i, t in enumerate(self.toks):
            for key in ((t[0], None, None), (t[0], t[1], None), (t[0], None, t[2])):
                self.index.setdefault(key, []).append(i)

    def ids(self, pattern):
        pt = pattern.split(".")
        lit = [t not in ("*", ">") for t in pt]
        if not lit[0]:
            cand = range(len(self.toks))
        elif len(pt) > 2 and lit[2] and lit[1]:
            cand = self.index.get((pt[0], None, pt[2]), ())
            cand = [i for i in cand if self.toks[i][1] == pt[1]]
        elif len(pt) > 2 and lit[2]:
            cand = self.index.get((pt[0], None, pt[2]), ())
        elif len(pt) > 1 and lit[1]:
            cand = self.index.get((pt[0], pt[1], None), ())
        else:
            cand = self.index.get((pt[0], None, None), ())
        toks = self.toks
        return [i for i in cand if _covers(pt, toks[i])]

    def new_mass(self, ids):
        fresh = [i for i in ids if not self.covered[i]]
        return math.fsum(self.p[i] for i in fresh), fresh

    def accept(self, fresh, mass):
        for i in fresh:
            self.covered[i] = 1
        self.mass += mass


def make_workload(n_subs=10_000, n_publishes=1_000_000, n_subjects=50_000,
                  wildcard_share=WILDCARD_SHARE, zipf_s=ZIPF_S, seed=DEFAULT_SEED,
                  hit_target=HIT_TARGET):
    """Build the workload; deterministic for a given set of arguments.

    Subscriptions are accepted greedily so that the share of publishes with
    at least one subscriber (the hit ratio, computed from the exact publish
    distribution) stays near ``hit_target``: the wildcards may cover up to
    ``WILD_TARGET`` of it, literal subscriptions the rest; a wildcard that
    would overshoot is redrawn (the least covering of ``MAX_DRAWS`` draws is
    kept), a literal subject that would is skipped.  Subscriptions that add
    no new subject (another subscriber of a covered subject) are always
    accepted.
    """
    rnd = random.Random(seed)
    n_symbols = max(64, n_subjects // 25)
    symbols = _symbols(rnd, n_symbols)
    sym_cum = list(itertools.accumulate(_power_weights(n_symbols, SYMBOL_S)))
    distinct = _distinct_subjects(rnd, n_subjects, symbols, sym_cum)
    pub_w = _power_weights(n_subjects, zipf_s)
    pub_cum = list(itertools.accumulate(pub_w))
    total = pub_cum[-1]
    p = [w / total for w in pub_w]
    cov = _Coverage(distinct, p)
    wild_target = min(WILD_TARGET, hit_target)

    # -- wildcard subscriptions: a trades firehose, a few broad ones, then
    #    narrow ones (one symbol across venues, regions or fields) ------------
    n_wild = int(round(n_subs * wildcard_share))
    wild = []
    if n_wild:
        wild.append("trades.*.*")
        mass, fresh = cov.new_mass(cov.ids("trades.*.*"))
        cov.accept(fresh, mass)
        kinds = ["orders.R.>", "trades.V.*"] * max(1, n_subs // 5000)
        kinds += rnd.choices(_WILD_KINDS, weights=_WILD_W, k=n_wild)
        for kind in kinds[: n_wild - 1]:
            best = None
            for _ in range(MAX_DRAWS):
                pat = _wildcard(rnd, kind, symbols, sym_cum)
                mass, fresh = cov.new_mass(cov.ids(pat))
                if best is None or mass < best[1]:
                    best = (pat, mass, fresh)
                if cov.mass + mass <= wild_target:
                    break
            pat, mass, fresh = best
            cov.accept(fresh, mass)
            wild.append(pat)

    # -- literal subscriptions: distinct subjects in a random order weighted
    #    by a flattened publish popularity (rank ** -SUB_S; exponential race),
    #    each with 1-3 subscribers ---------------------------------------------
    n_lit = n_subs - len(wild)
    order = sorted(range(n_subjects),
                   key=lambda k: -math.log(1.0 - rnd.random()) * (k + 1) ** SUB_S)
    mult = rnd.choices((1, 2, 3), cum_weights=(0.6, 0.84, 1.0), k=max(1, n_lit))
    lit = []
    covered = cov.covered
    for k in order:
        if len(lit) >= n_lit:
            break
        if not covered[k]:
            if cov.mass + p[k] > hit_target:
                continue
            cov.accept((k,), p[k])
        lit.extend([distinct[k]] * min(mult[len(lit)], n_lit - len(lit)))
    base = len(lit)
    while len(lit) < n_lit:  # (only with more subscriptions than subjects)
        lit.append(lit[(len(lit) - base) % base] if base else distinct[0])
    patterns = lit + wild
    rnd.shuffle(patterns)

    # -- publishes -------------------------------------------------------------
    publishes = rnd.choices(distinct, cum_weights=pub_cum, k=n_publishes)

    params = dict(n_subs=n_subs, n_publishes=n_publishes, n_subjects=n_subjects,
                  n_symbols=n_symbols, zipf_s=zipf_s, wildcard_share=wildcard_share,
                  seed=seed, hit_target=hit_target, expected_hit_ratio=round(cov.mass, 4))
    return Workload(patterns, publishes, distinct, seed, zipf_s, len(wild), params)


def make_subscriptions(n=1_000_000, seed=DEFAULT_SEED):
    """The memory-scale set: ``n`` patterns of the same families, mostly
    distinct (per-account subscriptions over 20,000 symbols and 100,000
    accounts), 5% of them with a wildcard::

        orders.<region>.<symbol>.<account>     40%
        trades.<venue>.<symbol>.<account>      20%
        md.<venue>.<symbol>.<field>            35%
        orders.*.<symbol>.<account>            1.5%
        md.<venue>.<symbol>.>, md.*.<symbol>.<field>,
        trades.*.<symbol>.<account>            1% each
        orders.<region>.*.<account>            0.5%
    """
    rnd = random.Random(seed)
    n_symbols = 20_000
    symbols = _symbols(rnd, n_symbols)
    sym_cum = list(itertools.accumulate(_power_weights(n_symbols, SYMBOL_S)))
    accounts = ["a{:06d}".format(i) for i in range(100_000)]
    kinds = rnd.choices(range(8), cum_weights=(0.40, 0.60, 0.95, 0.965, 0.975, 0.985, 0.995, 1.0),
                        k=n)
    syms = rnd.choices(symbols, cum_weights=sym_cum, k=n)
    accs = rnd.choices(accounts, k=n)
    regs = rnd.choices(REGIONS, k=n)
    vens = rnd.choices(VENUES, k=n)
    flds = rnd.choices(FIELDS, k=n)
    out = []
    append = out.append
    for k, y, a, r, v, f in zip(kinds, syms, accs, regs, vens, flds):
        if k == 0:
            append("orders." + r + "." + y + "." + a)
        elif k == 1:
            append("trades." + v + "." + y + "." + a)
        elif k == 2:
            append("md." + v + "." + y + "." + f)
        elif k == 3:
            append("orders.*." + y + "." + a)
        elif k == 4:
            append("md." + v + "." + y + ".>")
        elif k == 5:
            append("md.*." + y + "." + f)
        elif k == 6:
            append("trades.*." + y + "." + a)
        else:
            append("orders." + r + ".*." + a)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastflow.workload",
                                 description="Print the synthetic workload's figures.")
    ap.add_argument("--subs", type=int, default=10_000)
    ap.add_argument("--publishes", type=int, default=1_000_000)
    ap.add_argument("--subjects", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--memory-set", type=int, default=0, metavar="N",
                    help="also build the memory-scale set of N subscriptions "
                         "and report how many patterns are distinct")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    w = make_workload(args.subs, args.publishes, args.subjects, seed=args.seed)
    dt = time.perf_counter() - t0
    print("generated in {:.2f} s; expected hit ratio {}".format(dt, w.params["expected_hit_ratio"]))
    print(format_stats(w.stats()))
    print("sample patterns:", ", ".join(w.patterns[:8]))
    print("sample publishes:", ", ".join(w.publishes[:8]))
    if args.memory_set:
        t0 = time.perf_counter()
        big = make_subscriptions(args.memory_set, args.seed)
        print("memory set: {:,} patterns, {:,} distinct, generated in {:.2f} s; sample: {}".format(
            len(big), len(set(big)), time.perf_counter() - t0, ", ".join(big[:4])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
