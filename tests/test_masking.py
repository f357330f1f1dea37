"""MEAP pre-training masking: exact counts, never the last position, uniform positions,
and a pure function of (seed, key[, epoch]) whatever the batch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from meap_data.masking import IGNORE_INDEX, apply_meap_mask, mask_count

MASK_ID = 9999


def _batch(rows: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5000, (rows, width), dtype=np.int32)
    keys = [f"{i:016x}" for i in rng.integers(0, 2**63, rows)]
    return labels, np.full(rows, width), keys


def test_exact_count_and_last_position_never_masked():
    labels, lengths, keys = _batch(300, 257)
    inputs, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, ratio=0.15, seed=3)
    assert (mask.sum(axis=1) == int(257 * 0.15)).all()
    assert not mask[:, -1].any()
    assert (inputs[mask] == MASK_ID).all()
    assert (inputs[~mask] == labels[~mask]).all()


def test_count_formula_matches_official_code():
    assert mask_count(2048, 0.15) == 307
    assert mask_count(5, 0.15) == 1  # max(1, int(0.75))
    assert mask_count(100, 0.05) == 5


def test_padded_rows_mask_only_real_tokens():
    labels, _, keys = _batch(50, 64)
    lengths = np.arange(2, 52)
    for r, n in enumerate(lengths):
        labels[r, n:] = IGNORE_INDEX
    inputs, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, ratio=0.25, seed=0, pad_id=7)
    for r, n in enumerate(lengths):
        assert mask[r].sum() == max(1, int(n * 0.25)) if n > 1 else 0
        assert not mask[r, n - 1 :].any()
        assert (inputs[r, n:] == 7).all()


def test_positions_are_uniform_chi_square():
    width = 64
    labels, lengths, keys = _batch(20000, width, seed=1)
    _, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, ratio=0.15, seed=11)
    observed = mask[:, : width - 1].sum(axis=0)
    expected = np.full(width - 1, observed.sum() / (width - 1))
    chi2, p = stats.chisquare(observed, expected)
    assert p > 1e-3, f"positions not uniform: chi2={chi2:.1f}, p={p:.2e}"
    # Pairs too: a sampler without replacement must not favour adjacent positions.
    adjacent = (mask[:, :-2] & mask[:, 1:-1]).sum()
    k, n = int(width * 0.15), width - 1
    expected_adjacent = 20000 * (n - 1) * k * (k - 1) / (n * (n - 1))
    assert abs(adjacent - expected_adjacent) < 5 * np.sqrt(expected_adjacent)


def test_same_key_same_mask_whatever_the_batch():
    labels, lengths, keys = _batch(700, 128)
    _, whole = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, seed=5)
    order = np.random.default_rng(0).permutation(700)
    for chunk in np.array_split(order, 7):
        _, part = apply_meap_mask(labels[chunk], lengths[chunk], [keys[i] for i in chunk], mask_id=MASK_ID, seed=5)
        assert (part == whole[chunk]).all()


def test_different_keys_seeds_epochs_give_different_masks():
    labels, lengths, keys = _batch(200, 128)
    _, base = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, seed=5)
    assert len({m.tobytes() for m in base}) == 200
    _, other_seed = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, seed=6)
    _, other_epoch = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, seed=5, epoch=1)
    assert (base != other_seed).any(axis=1).all()
    assert (base != other_epoch).any(axis=1).all()


def test_excluded_special_tokens_are_never_masked():
    labels, lengths, keys = _batch(100, 128)
    labels[:, ::3] = 1  # an "eos" every third position
    inputs, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, seed=0, exclude_ids=(1,))
    assert not mask[labels == 1].any()
    assert (mask.sum(axis=1) == int(128 * 0.15)).all()


def test_zero_ratio_masks_nothing():
    labels, lengths, keys = _batch(10, 32)
    inputs, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, ratio=0.0)
    assert not mask.any() and (inputs == labels).all()


@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_other_ratios(ratio):
    labels, lengths, keys = _batch(20, 2048)
    _, mask = apply_meap_mask(labels, lengths, keys, mask_id=MASK_ID, ratio=ratio)
    assert (mask.sum(axis=1) == int(2048 * ratio)).all()
