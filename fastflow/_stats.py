"""Percentiles of measured samples, one definition for the CLI's ``bench``
and the scripts in ``benchmarks/``.

The rule is the nearest rank: the q-th percentile of N sorted values is the
value of rank ``ceil(q * N / 100)`` (at least 1), the smallest value that at
least q% of the values do not exceed. It is always a value that was measured
(never an interpolation between two), ``q = 100`` is the maximum, and it is
HdrHistogram's rule, which ``benchmarks/compare_engine.py``'s histogram
follows too."""

import math

__all__ = ("percentile", "rank")


def rank(q, n):
    """The 1-based rank of the q-th percentile (0 <= q <= 100) among n values."""
    # q * n first: exact for whole products, where q / 100 * n can round up a rank
    # (7 / 100 * 100 = 7.000000000000001)
    return max(1, math.ceil(q * n / 100))


def percentile(sorted_values, q):
    """The q-th percentile of ``sorted_values`` (ascending), None when there are none."""
    if not sorted_values:
        return None
    return sorted_values[rank(q, len(sorted_values)) - 1]
