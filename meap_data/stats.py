"""Small, exact statistics for comparing models on the same items (no SciPy needed).

- :func:`pass_at_k`: the unbiased pass@k estimator of Chen et al. (2021, Codex):
  ``1 - C(n - c, k) / C(n, k)`` for n samples of which c pass.
- :func:`mcnemar`: McNemar's exact test on paired pass/fail outcomes (a two-sided
  binomial test on the discordant pairs).
- :func:`paired_bootstrap`: a percentile bootstrap interval of the mean paired difference,
  seeded (resampling items, keeping each item's pair together).
- :func:`sign_test` and :func:`wilcoxon_signed_rank`: exact two-sided tests of paired
  differences (e.g. one per seed), zeros dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of ``k`` samples drawn without replacement from ``n``
    (``c`` of them correct) is correct. ``k`` must not exceed ``n``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k / i): numerically stable for large n.
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


@dataclass(frozen=True)
class McNemar:
    """Discordant counts (``a_only``: A passed, B failed; ``b_only``: the reverse) and the
    exact two-sided p-value."""

    a_only: int
    b_only: int
    p_value: float


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> McNemar:
    """McNemar's exact test of paired outcomes ``a[i]``, ``b[i]`` (same items)."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes must have one length, got {len(a)} and {len(b)}")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n = a_only + b_only
    if n == 0:
        return McNemar(0, 0, 1.0)
    tail = sum(math.comb(n, i) for i in range(0, min(a_only, b_only) + 1)) / 2 ** n
    return McNemar(a_only, b_only, min(1.0, 2 * tail))


@dataclass(frozen=True)
class Interval:
    """A mean difference and its percentile bootstrap interval (``level``: e.g. 0.95)."""

    mean: float
    low: float
    high: float
    level: float


def paired_bootstrap(a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> Interval:
    """Interval of ``mean(a - b)`` by resampling items with replacement (seeded)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        raise ValueError("paired_bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, (resamples, diff.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(diff.mean()), float(low), float(high), level)


def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test p-value of paired ``differences`` (zeros dropped; 1.0
    when none are left)."""
    d = [x for x in differences if x != 0]
    n, k = len(d), sum(1 for x in d if x > 0)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def wilcoxon_signed_rank(differences: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p-value of paired ``differences``: zeros
    dropped, tied magnitudes get their average rank, the null distribution of the
    positive rank sum enumerated exactly (a dynamic program over ranks; fine for the
    tens of pairs a probe has). 1.0 when no non-zero difference is left."""
    d = np.asarray([x for x in differences if x != 0], dtype=float)
    n = d.size
    if n == 0:
        return 1.0
    order = np.argsort(np.abs(d), kind="stable")
    ranks = np.empty(n)
    magnitudes = np.abs(d)[order]
    i = 0
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and magnitudes[j + 1] == magnitudes[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    doubled = np.rint(2 * ranks).astype(int)  # half-integer ranks as integers
    counts = np.zeros(int(doubled.sum()) + 1)
    counts[0] = 1.0
    for r in doubled:  # ways to reach each positive rank sum
        counts[r:] = counts[r:] + counts[:-r].copy() if r else counts
    probs = counts / 2 ** n
    total = doubled.sum()
    observed = doubled[d > 0].sum()
    centre = total / 2
    sums = np.arange(total + 1)
    return float(min(1.0, probs[np.abs(sums - centre) >= abs(observed - centre) - 1e-9].sum()))
