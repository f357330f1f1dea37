"""Exact-match scoring of retrieval, with the first-needle shortcut told apart.

A model is scored through ``predict(ids) -> (B, T) next-token predictions`` (argmax of
its logits: ``pred[:, t]`` is its guess for token ``t + 1``), so any model, or a
hand-made one, can be scored. An answer is right when every answer token is predicted
from the true prefix; for greedy decoding this is the same as generating it exactly.

A model that always copies the first needle's value scores the *primacy baseline* (the
share of contexts whose target is the first needle) and 0 on the rest; so accuracy on
contexts whose target is not the first needle (``not_first``) is the figure that shows
retrieval by key, and the primacy baseline is printed next to overall accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .needles import Examples

Predict = Callable[[np.ndarray], np.ndarray]


def correct(predict: Predict, examples: Examples, batch_size: int = 32) -> np.ndarray:
    """Bool per example: the whole answer predicted exactly."""
    out = np.zeros(len(examples), dtype=bool)
    for lo in range(0, len(examples), batch_size):
        part = examples.take(slice(lo, lo + batch_size))
        pred = np.asarray(predict(part.ids))
        for i in range(len(part)):
            a, n = int(part.answer_start[i]), int(part.answer_len[i])
            out[lo + i] = np.array_equal(pred[i, a - 1:a - 1 + n], part.ids[i, a:a + n])
    return out


@dataclass(frozen=True)
class Accuracy:
    """Accuracy over examples (0..1). ``not_first``: over those whose target is not the
    first needle (None when there are none, e.g. one needle); ``primacy``: the share
    whose target is the first needle (what copying the first value scores); ``chance``:
    1 / needles (what copying a random needle scores); ``n``: examples."""

    accuracy: float
    not_first: float | None
    primacy: float
    chance: float
    n: int

    @property
    def genuine(self) -> float:
        """The retrieval figure: ``not_first``, or ``accuracy`` when every target is
        the only needle (the passkey variant)."""
        return self.accuracy if self.not_first is None else self.not_first


def accuracy(outcomes: np.ndarray, examples: Examples) -> Accuracy:
    first = examples.target_rank == 0
    later = ~first
    return Accuracy(
        accuracy=float(outcomes.mean()) if len(outcomes) else 0.0,
        not_first=float(outcomes[later].mean()) if later.any() else None,
        primacy=float(first.mean()) if len(first) else 0.0,
        chance=float(np.mean(1.0 / examples.needles)) if len(examples) else 0.0,
        n=len(outcomes),
    )


def by_depth(outcomes: np.ndarray, examples: Examples) -> dict[float, Accuracy]:
    """:func:`accuracy` per depth the examples were built at."""
    return {float(d): accuracy(outcomes[examples.depth == d], examples.take(examples.depth == d))
            for d in np.unique(examples.depth)}
