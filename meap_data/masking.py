"""MEAP masking as a pure, vectorised function of (seed, sample key[, epoch]).

Pre-training (arXiv 2502.07490, official ``meap_1b.py``): per sequence an exact count
``max(1, int(L * ratio))`` of input positions, drawn uniformly without replacement and
never the last position, is replaced by the ``[MASK]`` id; labels stay the clean tokens.

Unlike the official code (``random.seed(50 + step % 51)``: 51 patterns, one per batch),
each row's positions come from its own counter-based stream keyed by
``hash(seed, epoch) + key``, so a sample gets the same mask whatever batch, worker, rank
or runner computes it.

How: a partial Fisher-Yates shuffle, vectorised across rows. Its k random draws per row
are splitmix64 outputs of (row word, draw index): no per-row generator objects, and the
k-step loop runs over whole batches, which keeps it above 100 M tokens/s.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from .keys import keys_to_u64, stream_seed

IGNORE_INDEX = -100
DEFAULT_MASK_RATIO = 0.15

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROWS_PER_BLOCK = 1024  # keeps the permutation block in cache


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def mask_count(length: int | np.ndarray, ratio: float) -> np.ndarray:
    """Masked positions for a sequence of ``length`` real tokens: ``max(1, int(L * ratio))``."""
    length = np.asarray(length, dtype=np.int64)
    return np.maximum(1, (length * ratio).astype(np.int64))


def masked_flat_indices(
    row_words: np.ndarray,
    eligible: np.ndarray,
    counts: np.ndarray,
    width: int | None = None,
) -> np.ndarray:
    """Flat indices (into a rows x L array) of the masked positions.

    Per row, ``counts[r]`` of its eligible positions, uniformly without replacement.
    ``row_words``: uint64 per row, the row's random stream (see :func:`row_words`).
    ``eligible``: either bool (rows x L), the positions that may be masked, or a 1-D int
    array of prefix lengths (positions ``0 .. n-1`` of row r eligible; then give ``width``).
    ``counts``: int per row, capped here at the number of eligible positions.
    The positions of a row depend only on that row's word, eligibility and count.
    """
    eligible = np.asarray(eligible)
    prefix = eligible.ndim == 1
    if prefix:
        if width is None:
            raise ValueError("width is required when eligible is given as prefix lengths")
        n_rows = eligible.shape[0]
    else:
        eligible = eligible.astype(bool, copy=False)
        n_rows, width = eligible.shape
    parts = []
    for start in range(0, n_rows, _ROWS_PER_BLOCK):
        stop = min(start + _ROWS_PER_BLOCK, n_rows)
        block = _mask_block(
            np.asarray(row_words[start:stop], dtype=np.uint64),
            eligible[start:stop],
            np.asarray(counts[start:stop], dtype=np.int64),
            width,
        )
        parts.append(block + start * width)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def mask_positions(
    row_words: np.ndarray, eligible: np.ndarray, counts: np.ndarray, width: int | None = None
) -> np.ndarray:
    """Boolean mask (rows x L) of :func:`masked_flat_indices` (same arguments)."""
    eligible = np.asarray(eligible)
    shape = (eligible.shape[0], width) if eligible.ndim == 1 else eligible.shape
    out = np.zeros(shape, dtype=bool)
    out.reshape(-1)[masked_flat_indices(row_words, eligible, counts, width)] = True
    return out


def _mask_block(words: np.ndarray, eligible: np.ndarray, counts: np.ndarray, width: int) -> np.ndarray:
    n_rows = words.shape[0]
    if eligible.ndim == 1:
        n_eligible = np.minimum(eligible.astype(np.int64), width)
        order = np.empty((n_rows, width), dtype=np.int32)
        order[:] = np.arange(width, dtype=np.int32)
    else:
        n_eligible = eligible.sum(axis=1)
        # Each row's eligible positions packed to the front, in position order: the
        # array the partial shuffle permutes.
        order = np.argsort(~eligible, axis=1, kind="stable").astype(np.int32)
    k = np.minimum(counts, n_eligible)
    k_max = int(k.max(initial=0))
    if k_max == 0:
        return np.zeros(0, dtype=np.int64)
    # Draw j of row r picks a slot in [j, n_eligible): splitmix64 of (row word, j),
    # scaled by a 32x32-bit multiply (bias under 2**-20 for rows under a million tokens).
    draw = np.arange(1, k_max + 1, dtype=np.uint64)[:, None]
    bits = _splitmix64(words[None, :] + draw * _GOLDEN) >> np.uint64(32)
    j = np.arange(k_max, dtype=np.int64)[:, None]
    remaining = np.maximum(n_eligible[None, :] - j, 1).astype(np.uint64)
    swap_with = j + ((bits * remaining) >> np.uint64(32)).astype(np.int64)
    uniform_k = bool((k == k_max).all())
    if not uniform_k:
        # Rows that need fewer draws swap a slot with itself: a no-op.
        swap_with = np.where(j < k[None, :], swap_with, j)
    flat = order.reshape(-1)
    base = np.arange(n_rows, dtype=np.int64) * width
    for step in range(k_max):
        ia = base + step
        ib = base + swap_with[step]
        held = flat[ia]
        flat[ia] = flat[ib]
        flat[ib] = held
    chosen = order[:, :k_max] + base[:, None]
    if uniform_k:
        return chosen.reshape(-1)
    return chosen[j.T < k[:, None]]


def row_words(keys: Iterable[str] | np.ndarray, seed: int, epoch: int | None = None) -> np.ndarray:
    """uint64 stream word per row from sample keys (strings or uint64 words)."""
    words = keys if isinstance(keys, np.ndarray) else keys_to_u64(list(keys))
    mixed = _splitmix64(words.astype(np.uint64) ^ np.uint64(stream_seed(seed, epoch)))
    return mixed


def meap_eligible(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    exclude_ids: Iterable[int] = (),
) -> np.ndarray:
    """Positions MEAP may mask: real tokens (< length), never the last real one, never
    a token in ``exclude_ids`` (e.g. the end-of-document or pad ids)."""
    n_rows, width = input_ids.shape
    pos = np.arange(width)[None, :]
    eligible = pos < (np.asarray(lengths)[:, None] - 1)
    for token_id in exclude_ids:
        eligible &= input_ids != token_id
    return eligible


def apply_meap_mask(
    labels: np.ndarray,
    lengths: np.ndarray,
    keys: Iterable[str] | np.ndarray,
    *,
    mask_id: int,
    ratio: float = DEFAULT_MASK_RATIO,
    seed: int = 0,
    epoch: int | None = None,
    exclude_ids: Iterable[int] = (),
    pad_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MEAP pre-training inputs from clean tokens.

    ``labels``: int32 (rows x L), the clean token ids, :data:`IGNORE_INDEX` on padding.
    ``lengths``: real tokens per row. Returns ``(input_ids, mask)``: the inputs with
    masked positions set to ``mask_id`` (padding set to ``pad_id`` when given), and the
    boolean mask. Count per row: ``max(1, int(length * ratio))``; see module docstring.
    """
    labels = np.asarray(labels)
    lengths = np.asarray(lengths, dtype=np.int64)
    inputs = labels.copy()
    padding = labels == IGNORE_INDEX
    if padding.any():
        inputs[padding] = pad_id if pad_id is not None else 0
    exclude_ids = tuple(exclude_ids)
    # Without exclusions the eligible positions are a prefix: no per-row sort needed.
    eligible = meap_eligible(inputs, lengths, exclude_ids) if exclude_ids else np.maximum(lengths - 1, 0)
    mask = np.zeros(labels.shape, dtype=bool)
    if ratio > 0:
        flat = masked_flat_indices(
            row_words(keys, seed, epoch), eligible, mask_count(lengths, ratio), labels.shape[1]
        )
        inputs.reshape(-1)[flat] = mask_id
        mask.reshape(-1)[flat] = True
    return inputs, mask
