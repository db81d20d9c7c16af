"""fastflow._stats: the one percentile rule (nearest rank) of the CLI's bench
and of benchmarks/."""

import pytest

from fastflow._stats import percentile, rank


@pytest.mark.parametrize("q,expected", [
    (0, 1), (1, 1), (7, 7), (50, 50), (90, 90), (99, 99), (99.9, 100), (100, 100)])
def test_percentile_of_one_to_a_hundred(q, expected):
    assert percentile(list(range(1, 101)), q) == expected


def test_percentile_is_a_measured_value_never_an_interpolation():
    values = [10, 20, 30, 40]
    # nearest rank: ceil(q * 4 / 100); linear interpolation would give 25, 37 and 39.7
    assert [percentile(values, q) for q in (50, 90, 99)] == [20, 40, 40]
    assert percentile(values, 25) == 10 and percentile(values, 26) == 20


def test_percentile_edges():
    assert percentile([], 50) is None
    assert percentile([7], 0) == percentile([7], 99.9) == 7
    assert percentile(list(range(1, 1001)), 99.9) == 999     # q / 100 * n would round to 1000
    assert rank(7, 100) == 7 and rank(0, 5) == 1 and rank(100, 5) == 5
