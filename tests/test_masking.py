"""The mask rules: pretrain (exact counts, never the last position, uniform positions) and
sft (answer-only masked copies), both pure functions of (seed, key[, epoch]) whatever
the batch, re-drawable from stored rows, and their plain next-token views."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from meap_data.errors import MeapDataError
from meap_data.masking import PretrainRule, SftRule, mask_count, rule_from_json
from meap_data.sample_format import IGNORE_INDEX, Spans

MASK_ID, PAD, EOS = 9999, 7, 3


def _batch(rows: int, width: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(10, 5000, (rows, width), dtype=np.int32)
    keys = [f"{i:016x}" for i in rng.integers(0, 2**63, rows)]
    return labels, np.full(rows, width), keys


def pretrain(labels, lengths, keys, ratio=0.15, seed=0, epoch=None, exclude_ids=(), pad_id=PAD):
    rule = PretrainRule(ratio=ratio, exclude_ids=exclude_ids)
    out = rule.apply(labels, lengths, rule.spans(lengths), keys, mask_id=MASK_ID, pad_id=pad_id, seed=seed,
                     epoch=epoch)
    return out.input_ids, out.mask()


# ------------------------------------------------------------------ pretrain


def test_exact_count_and_last_position_never_masked():
    labels, lengths, keys = _batch(300, 257)
    inputs, mask = pretrain(labels, lengths, keys, seed=3)
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
    inputs, mask = pretrain(labels, lengths, keys, ratio=0.25)
    for r, n in enumerate(lengths):
        assert mask[r].sum() == max(1, int(n * 0.25))
        assert not mask[r, n - 1 :].any()
        assert (inputs[r, n:] == PAD).all()


def test_positions_are_uniform_chi_square():
    width = 64
    labels, lengths, keys = _batch(20000, width, seed=1)
    _, mask = pretrain(labels, lengths, keys, seed=11)
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
    _, whole = pretrain(labels, lengths, keys, seed=5)
    order = np.random.default_rng(0).permutation(700)
    for chunk in np.array_split(order, 7):
        _, part = pretrain(labels[chunk], lengths[chunk], [keys[i] for i in chunk], seed=5)
        assert (part == whole[chunk]).all()


def test_different_keys_seeds_epochs_give_different_masks():
    labels, lengths, keys = _batch(200, 128)
    _, base = pretrain(labels, lengths, keys, seed=5)
    assert len({m.tobytes() for m in base}) == 200
    _, other_seed = pretrain(labels, lengths, keys, seed=6)
    _, other_epoch = pretrain(labels, lengths, keys, seed=5, epoch=1)
    assert (base != other_seed).any(axis=1).all()
    assert (base != other_epoch).any(axis=1).all()


def test_excluded_special_tokens_are_never_masked():
    labels, lengths, keys = _batch(100, 128)
    labels[:, ::3] = 1  # an "eos" every third position
    _, mask = pretrain(labels, lengths, keys, exclude_ids=(1,))
    assert not mask[labels == 1].any()
    assert (mask.sum(axis=1) == int(128 * 0.15)).all()


def test_zero_ratio_masks_nothing():
    labels, lengths, keys = _batch(10, 32)
    inputs, mask = pretrain(labels, lengths, keys, ratio=0.0)
    assert not mask.any() and (inputs == labels).all()


@pytest.mark.parametrize("ratio", [0.05, 0.2])
def test_other_ratios(ratio):
    labels, lengths, keys = _batch(20, 2048)
    _, mask = pretrain(labels, lengths, keys, ratio=ratio)
    assert (mask.sum(axis=1) == int(2048 * ratio)).all()


# ------------------------------------------------------------------ sft


def ids(n: int, start: int = 10) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int32)


def sft_rows(rule: SftRule, pairs, width: int, seed: int = 0, epoch=None):
    """Pack the copies of (prompt, answer) pairs into padded rows and mask them, as the
    rust kind does; returns the copies and the masked rows."""
    copies = [c for i, (p, a) in enumerate(pairs) for c in rule.copies(p, a, EOS)]
    n = len(copies)
    inputs = np.full((n, width), PAD, dtype=np.int32)
    labels = np.full((n, width), IGNORE_INDEX, dtype=np.int32)
    for r, c in enumerate(copies):
        inputs[r, : len(c.input_ids)] = c.input_ids
        labels[r, : len(c.labels)] = c.labels
    lengths = np.array([len(c.input_ids) for c in copies])
    spans = Spans.one_per_row(*zip(*[c.mask_span for c in copies]))
    keys = [f"{r:016x}" for r in range(n)]
    return copies, rule.apply(labels, lengths, spans, keys, mask_id=MASK_ID, pad_id=PAD, seed=seed, epoch=epoch,
                              inputs=inputs), (labels, lengths, spans, keys)


def test_short_answer_gives_only_the_clean_copy():
    [clean] = SftRule().copies(ids(7), ids(50, 100), EOS)
    assert clean.copy == "clean" and clean.mask_span == (0, 0)
    assert clean.input_ids.tolist() == ids(7).tolist() + ids(50, 100).tolist() + [EOS]
    assert clean.labels.tolist() == [IGNORE_INDEX] * 7 + ids(50, 100).tolist() + [EOS]


@pytest.mark.parametrize("n", [51, 99, 100, 431])
def test_masked_copy_masks_exactly_max1_int_n_tenth_answer_positions(n):
    copies, out, _ = sft_rows(SftRule(), [(ids(9), ids(n, 1000))], width=9 + n + 1, seed=3)
    clean, masked = copies
    assert masked.copy == "masked" and masked.mask_span == (9, 9 + n)
    assert (out.input_ids[0] == clean.input_ids).all() and (out.labels[0] == clean.labels).all()  # clean copy untouched
    hit = np.flatnonzero(out.input_ids[1] == MASK_ID)
    assert len(hit) == max(1, int(n * 0.1))
    assert hit.min() >= 9 and hit.max() < 9 + n  # answer only: never prompt, never eos
    assert np.array_equal(np.flatnonzero(out.labels[1] != IGNORE_INDEX), hit)  # labels only where masked
    assert np.array_equal(out.labels[1][hit], clean.input_ids[hit])
    untouched = np.setdiff1d(np.arange(len(clean.input_ids)), hit)
    assert np.array_equal(out.input_ids[1][untouched], clean.input_ids[untouched])


def test_concat_layout_holds_both_copies_in_one_row():
    rows_copies, rows_out, _ = sft_rows(SftRule(), [(ids(4), ids(60, 100))], width=130)
    [both], concat_out, _ = sft_rows(SftRule(layout="concat"), [(ids(4), ids(60, 100))], width=130)
    assert both.copy == "clean+masked" and both.doc_offsets == (0, 65) and both.mask_span == (69, 129)
    assert np.array_equal(concat_out.labels[0, :65], rows_copies[0].labels)
    assert (concat_out.input_ids[0, 65:69] == ids(4)).all()
    assert (concat_out.input_ids[0, 65:130] == MASK_ID).sum() == 6
    [only] = SftRule(layout="concat").copies(ids(4), ids(20, 100), EOS)
    assert only.copy == "clean"
    with pytest.raises(MeapDataError, match="layout"):
        SftRule(layout="zip")


def test_sft_masks_are_a_pure_function_of_seed_key_epoch_and_redraw_from_stored_rows():
    pairs = [(ids(5), ids(400, 100)), (ids(8), ids(120, 30))]
    _, baked, (_, lengths, spans, keys) = sft_rows(SftRule(), pairs, width=420, seed=1)
    # Re-drawing from the stored (masked) rows reproduces them at the pipeline's epoch...
    rule = SftRule()
    again = rule.apply(baked.labels, lengths, spans, keys, mask_id=MASK_ID, pad_id=PAD, seed=1,
                       inputs=baked.input_ids)
    assert np.array_equal(again.input_ids, baked.input_ids) and np.array_equal(again.labels, baked.labels)
    # ... and moves only answer positions of the masked copies in another epoch.
    other = rule.apply(baked.labels, lengths, spans, keys, mask_id=MASK_ID, pad_id=PAD, seed=1, epoch=1,
                       inputs=baked.input_ids)
    differ = (other.input_ids != baked.input_ids) | (other.labels != baked.labels)
    assert differ[[1, 3]].any(axis=1).all() and not differ[[0, 2]].any()
    for r in (1, 3):
        cols = np.flatnonzero(differ[r])
        [k] = np.flatnonzero(spans.row == r)
        assert cols.min() >= spans.start[k] and cols.max() < spans.end[k]
        assert (other.input_ids[r] == MASK_ID).sum() == (baked.input_ids[r] == MASK_ID).sum()
    _, seed2, _ = sft_rows(SftRule(), pairs, width=420, seed=2)
    assert not np.array_equal(seed2.input_ids, baked.input_ids)


def test_literal_mask_text_in_an_answer_survives_a_redraw():
    answer = ids(80, 100)
    answer[5] = MASK_ID  # the answer's own text encodes to the mask id
    _, baked, (_, lengths, spans, keys) = sft_rows(SftRule(), [(ids(3), answer)], width=100, seed=4)
    for epoch in (None, 1, 2):
        out = SftRule().apply(baked.labels, lengths, spans, keys, mask_id=MASK_ID, pad_id=PAD, seed=4,
                              epoch=epoch, inputs=baked.input_ids)
        clean = np.where(out.labels != IGNORE_INDEX, out.labels, out.input_ids)
        assert np.array_equal(clean[1, :84], np.concatenate([ids(3), answer, [EOS]]))


# ------------------------------------------------------------------ views and records


def test_ntp_view_of_sft_rows_keeps_clean_copies_with_their_prompts():
    pairs = [(ids(5), ids(60, 100)), (ids(6), ids(20, 300))]  # the second has no masked copy
    copies, out, (_, _, spans, _) = sft_rows(SftRule(), pairs, width=80)
    doc_ids = np.where(np.arange(80)[None, :] < np.array([len(c.input_ids) for c in copies])[:, None], 0, -1)
    inputs, labels, kept = SftRule().ntp_view(out.input_ids, out.labels, PAD, spans.covered(80), doc_ids)
    assert kept.tolist() == [True, False, True]  # the masked copy is dropped
    assert np.array_equal(inputs[0, :66], copies[0].input_ids) and MASK_ID not in inputs
    assert np.array_equal(labels[0, :66], copies[0].labels)
    # concat: the clean half stays, the masked half becomes padding
    [both], concat, (_, _, cspans, _) = sft_rows(SftRule(layout="concat"), pairs[:1], width=140)
    docs = np.full((1, 140), -1)
    docs[0, :66], docs[0, 66:132] = 0, 1
    inputs, labels, kept = SftRule().ntp_view(concat.input_ids, concat.labels, PAD, cspans.covered(140), docs)
    assert kept.tolist() == [True]
    assert np.array_equal(inputs[0, :66], copies[0].input_ids) and (inputs[0, 66:] == PAD).all()
    assert np.array_equal(labels[0, :66], copies[0].labels) and (labels[0, 66:] == IGNORE_INDEX).all()


def test_ntp_view_of_pretrain_rows_is_the_clean_labels():
    labels, lengths, keys = _batch(4, 32)
    labels[0, 20:] = IGNORE_INDEX
    inputs, _ = pretrain(labels, lengths, keys)
    clean, same, kept = PretrainRule().ntp_view(inputs, labels, PAD)
    assert kept.all() and same is labels
    assert (clean[0, 20:] == PAD).all() and (clean[:, :20] == labels[:, :20]).all()


def test_rules_round_trip_through_the_manifest_json():
    for rule in (PretrainRule(0.2, exclude_ids=(3, 4)), SftRule(0.1, layout="concat")):
        assert rule_from_json(rule.to_json()) == rule
    assert PretrainRule().to_json() == {"name": "pretrain", "ratio": 0.15, "exclude_ids": []}
    with pytest.raises(MeapDataError, match="masks='static'"):
        rule_from_json({"name": "span-corruption", "ratio": 0.15})


def test_several_spans_in_one_row_each_get_their_own_count_and_stream():
    """Packed fine-tuning samples hold several masked copies: each span gets
    max(1, int(n * ratio)) masks, drawn from its own stream; a row's first span draws
    exactly as a one-span row would."""
    rng = np.random.default_rng(0)
    labels = rng.integers(10, 5000, (3, 300), dtype=np.int32)
    keys = ["00000000000000a1", "00000000000000b2", "00000000000000c3"]
    packed = Spans.from_lists([[10, 90, 120, 250], [], [5, 60]])
    out = SftRule().apply(labels, np.full(3, 300), packed, keys, mask_id=MASK_ID, pad_id=PAD, seed=1,
                          inputs=labels)
    hit = out.input_ids == MASK_ID
    assert hit[0, 10:90].sum() == 8 and hit[0, 120:250].sum() == 13 and hit[0].sum() == 21
    assert not hit[1].any() and hit[2, 5:60].sum() == 5 and hit[2].sum() == 5
    inside = packed.covered(300)
    assert ((out.labels != IGNORE_INDEX) == hit)[inside].all()  # in a span: labels only where masked
    assert np.array_equal(out.labels[~inside], labels[~inside])  # elsewhere untouched
    single = SftRule().apply(labels[:1], np.full(1, 300), Spans.from_lists([[10, 90]]), keys[:1], mask_id=MASK_ID,
                             pad_id=PAD, seed=1, inputs=labels[:1])
    assert np.array_equal(single.input_ids[0, :90], out.input_ids[0, :90])
    assert packed.lists() == [[10, 90, 120, 250], [], [5, 60]]
    assert packed.covered(300).sum() == 80 + 130 + 55
