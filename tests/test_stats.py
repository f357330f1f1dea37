"""The paired statistics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from meap_data.stats import mcnemar, paired_bootstrap, pass_at_k


def test_pass_at_k_matches_the_definition():
    # n=5 samples, c=2 correct: pass@1 = 2/5; pass@2 = 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 wrong: 4 draws always hit a correct one
    assert pass_at_k(10, 0, 3) == 0.0
    for n, c, k in ((20, 3, 5), (100, 17, 10)):
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_mcnemar_exact_two_sided():
    a = [True] * 7 + [False] * 2 + [True] * 5 + [False] * 6
    b = [False] * 7 + [True] * 2 + [True] * 5 + [False] * 6
    result = mcnemar(a, b)
    assert (result.a_only, result.b_only) == (7, 2)
    # 2 * P(X <= 2), X ~ Binomial(9, 1/2) = 2 * (1 + 9 + 36) / 512
    assert result.p_value == pytest.approx(2 * 46 / 512)
    assert mcnemar([True, False], [True, False]).p_value == 1.0


def test_paired_bootstrap_is_seeded_and_brackets_the_mean():
    a = [1, 1, 0, 1, 1, 0, 1, 1, 1, 0]
    b = [0, 1, 0, 0, 1, 0, 1, 0, 1, 0]
    first = paired_bootstrap(a, b, seed=3)
    assert first == paired_bootstrap(a, b, seed=3)
    assert first.mean == pytest.approx(0.3)
    assert first.low <= 0.3 <= first.high and first.low >= 0.0 and first.high <= 0.7
    constant = paired_bootstrap([1, 1, 1], [0, 0, 0])
    assert (constant.low, constant.high) == (1.0, 1.0)
