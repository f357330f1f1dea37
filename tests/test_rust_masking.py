"""MEAP fine-tuning masks for transcripts, with a tokenizer trained here on transcripts."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer

from meap_data.rust import masking as M
from meap_data.rust import render as R
from test_rust_render import fixture_record

IGNORE = M.IGNORE_INDEX
EOS, MASK = 0, 1


@pytest.fixture(scope="module")
def tokenizer() -> ByteLevelBPETokenizer:
    record = fixture_record()
    tok = ByteLevelBPETokenizer()
    texts = [R.transcript_text(record), R.repair_layout(record).text, record["rendered"]]
    tok.train_from_iterator(texts, vocab_size=500, min_frequency=1, special_tokens=["<eos>", "[MASK]"],
                            show_progress=False)
    assert tok.token_to_id("<eos>") == EOS and tok.token_to_id("[MASK]") == MASK
    return tok


def ids(n: int, start: int = 10) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int64)


# ------------------------------------------------------------- the SFT recipe


def test_short_answer_gives_only_the_clean_copy():
    [clean] = M.meap_sft(ids(7), ids(50, 100), eos_id=EOS, mask_id=MASK, seed=0, key="k")
    assert clean.copy == "clean"
    assert clean.input_ids.tolist() == ids(7).tolist() + ids(50, 100).tolist() + [EOS]
    assert clean.labels.tolist() == [IGNORE] * 7 + ids(50, 100).tolist() + [EOS]


@pytest.mark.parametrize("n", [51, 99, 100, 431])
def test_masked_copy_masks_exactly_max1_int_n_tenth_answer_positions(n):
    prompt, answer = ids(9), ids(n, 1000)
    clean, masked = M.meap_sft(prompt, answer, eos_id=EOS, mask_id=MASK, seed=3, key="rec-1")
    assert masked.copy == "masked" and len(masked.input_ids) == len(clean.input_ids) == 9 + n + 1
    hit = np.flatnonzero(masked.input_ids == MASK)
    assert len(hit) == max(1, int(n * 0.1))
    assert hit.min() >= 9 and hit.max() < 9 + n  # answer only: never prompt, never eos
    # labels only at the masked positions, holding the clean tokens
    assert np.array_equal(np.flatnonzero(masked.labels != IGNORE), hit)
    assert np.array_equal(masked.labels[hit], clean.input_ids[hit])
    assert masked.labels[-1] == IGNORE and masked.input_ids[-1] == EOS
    untouched = np.setdiff1d(np.arange(len(clean.input_ids)), hit)
    assert np.array_equal(masked.input_ids[untouched], clean.input_ids[untouched])


def test_mask_is_a_pure_function_of_seed_key_and_epoch():
    def positions(**kw):
        args = dict(seed=1, key="E0308-0", epoch=None) | kw
        rows = M.meap_sft(ids(5), ids(400, 100), eos_id=EOS, mask_id=MASK, **args)
        return tuple(np.flatnonzero(rows[1].input_ids == MASK))

    assert positions() == positions()
    assert len({positions(), positions(seed=2), positions(key="E0308-1"), positions(epoch=0), positions(epoch=1)}) == 5
    # the generator itself: counter-based Philox keyed by a hash, reproducible across calls
    a = M.record_rng(7, "k", 2).integers(0, 1 << 30, 4)
    assert np.array_equal(a, M.record_rng(7, "k", 2).integers(0, 1 << 30, 4))
    assert isinstance(M.record_rng(7, "k").bit_generator, np.random.Philox)


def test_concatenated_layout_holds_both_copies_in_one_row():
    rows = M.meap_sft(ids(4), ids(60, 100), eos_id=EOS, mask_id=MASK, seed=0, key="k")
    [both] = M.meap_sft(ids(4), ids(60, 100), eos_id=EOS, mask_id=MASK, seed=0, key="k", layout="concat")
    assert both.copy == "clean+masked" and both.lengths == (65, 65)
    assert np.array_equal(both.input_ids, np.concatenate([r.input_ids for r in rows]))
    assert np.array_equal(both.labels, np.concatenate([r.labels for r in rows]))
    [only] = M.meap_sft(ids(4), ids(20, 100), eos_id=EOS, mask_id=MASK, seed=0, key="k", layout="concat")
    assert only.copy == "clean"
    with pytest.raises(ValueError, match="layout"):
        M.meap_sft(ids(4), ids(20), eos_id=EOS, mask_id=MASK, seed=0, key="k", layout="zip")


def test_max_length_truncates_the_answer_and_keeps_eos():
    clean, masked = M.meap_sft(ids(10), ids(200, 100), eos_id=EOS, mask_id=MASK, seed=0, key="k", max_length=128)
    assert len(clean.input_ids) == len(masked.input_ids) == 128
    assert clean.input_ids[-1] == EOS and clean.labels[-1] == EOS
    assert (masked.input_ids == MASK).sum() == int(117 * 0.1)


def test_pretrain_variant_masks_anywhere_but_the_last_position():
    clean = ids(300, 50)
    inputs, labels = M.meap_pretrain(clean, mask_id=MASK, seed=0, key="k")
    assert np.array_equal(labels, clean)
    hit = np.flatnonzero(inputs == MASK)
    assert len(hit) == int(300 * 0.15) and hit.max() < 299


# ---------------------------------------------------- segment-aware masking


def test_tokens_inherit_segment_kinds_through_offsets():
    segments = [R.Segment(0, 6, "message"), R.Segment(6, 11, "code"), R.Segment(11, 20, "echo")]
    kinds = M.token_kinds([(0, 3), (3, 7), (7, 11), (11, 14), (14, 20), (20, 20)], segments, 20)
    names = [R.KINDS[k] for k in kinds.kinds]
    # a token straddling message and code joins the code unit
    assert names == ["message", "code", "code", "echo", "echo", "template"]
    assert kinds.units[1] == kinds.units[2] >= 0 and kinds.units[0] == -1


def test_segment_rates_mask_codes_whole_and_never_echo(tokenizer):
    record = fixture_record()
    layout = R.diagnose_layout(record)
    enc = M.encode_layout(tokenizer, layout)
    kinds, units = enc.response_kinds.kinds, enc.response_kinds.units
    echo = kinds == R.KINDS.index("echo")
    assert echo.sum() > 20  # the rendered output echoes several source lines
    code_units = np.unique(units[units >= 0])
    assert len(code_units) >= 4  # E0382 (twice) and three lint names
    eligible = (~np.isin(kinds, [R.KINDS.index("echo"), R.KINDS.index("template")])).sum()
    masked_codes = 0
    for seed in range(40):
        rows = M.sft_rows(tokenizer, layout, key=record["key"], seed=seed, eos_id=EOS, mask_id=MASK,
                          rates={"message": 0.15})
        masked = rows[1]
        hit = np.flatnonzero(masked.input_ids == MASK) - len(enc.prompt_ids)
        assert hit.min() >= 0
        assert len(hit) == int(eligible * 0.15)  # the message budget, exactly
        assert not echo[hit].any()  # never an echoed source line
        for u in code_units:  # a code is masked whole or not at all
            members = np.flatnonzero(units == u)
            covered = np.isin(members, hit)
            assert covered.all() or not covered.any()
            masked_codes += covered.all()
    assert masked_codes > 0  # and codes do get masked


def test_segment_rates_apply_per_kind(tokenizer):
    layout = R.transcript_layout(fixture_record())
    enc = M.encode_layout(tokenizer, layout)
    tokens = enc.response_kinds
    rng = M.record_rng(0, "k")
    candidates = np.ones(len(tokens), dtype=bool)
    hit = M.choose_positions(rng, candidates, tokens, {"source": 0.2, "fix": 0.0, "message": 0.05})
    kinds = np.array(R.KINDS)[tokens.kinds[hit]]
    n_source = (tokens.kinds == R.KINDS.index("source")).sum()
    assert (kinds == "source").sum() == int(n_source * 0.2)
    assert "fix" not in kinds and "echo" not in kinds and "template" not in kinds
    assert np.array_equal(hit, np.sort(hit))


def test_rng_defaults_match_the_paper_without_segments():
    rng = M.record_rng(0, "k")
    hit = M.choose_positions(rng, np.ones(73, dtype=bool))
    assert len(hit) == 7 and len(set(hit.tolist())) == 7
    assert len(M.choose_positions(rng, np.zeros(5, dtype=bool))) == 0
