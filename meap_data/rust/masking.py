"""MEAP masks for Rust transcripts: the fine-tuning recipe plus segment-aware rates.

Fine-tuning (MEAP-SFT, official code): every example gives a clean copy (prompt labels
-100, answer and eos supervised) and, when the answer has more than 50 tokens, a masked
copy: ``max(1, int(n * 0.1))`` answer positions replaced by the mask token, labels only
at those positions. The copies are separate rows (default) or one concatenated row.

Segment-aware rates refine *which* positions: each kind of text from
:mod:`meap_data.rust.render` gets its own rate (source, message, fix); an error code or
lint name is masked whole or not at all; snippet lines that echo the source and our
template text are never masked (a masked echo could be copied from the source above).

Randomness is a pure function of (seed, record key[, epoch]): a Philox generator keyed
by blake2b of those, never of order, worker or batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Mapping, Sequence

import numpy as np

from meap_data.rust.render import KINDS, Layout, Segment

IGNORE_INDEX = -100
MIN_ANSWER_TOKENS = 50  # masked copy only for answers longer than this (official code)
SFT_RATIO = 0.1
PRETRAIN_RATIO = 0.15

_KIND_ID = {k: i for i, k in enumerate(KINDS)}
# When a token straddles kinds, the most protective wins: never-masked kinds first,
# then the code unit (so a code's edge tokens join the unit), then the rest.
_PRECEDENCE = {"echo": 5, "template": 4, "code": 3, "fix": 2, "message": 1, "source": 0}
_BY_PRECEDENCE = sorted(KINDS, key=_PRECEDENCE.__getitem__)
_NEVER = ("echo", "template")


def record_rng(seed: int, key: str, epoch: int | None = None) -> np.random.Generator:
    """The generator for one record: Philox keyed by blake2b(seed, key, epoch), 128 bits."""
    h = hashlib.blake2b(digest_size=16, person=b"meap-rust-mask")
    h.update(f"{int(seed)}\x00{key}\x00{'' if epoch is None else int(epoch)}".encode("utf-8"))
    return np.random.Generator(np.random.Philox(key=int.from_bytes(h.digest(), "little")))


# ------------------------------------------------------------------ token kinds


@dataclasses.dataclass(frozen=True)
class TokenKinds:
    """Per token: its kind (index into ``render.KINDS``) and its unit.

    Tokens with the same ``unit`` >= 0 belong to one error code and are masked together;
    -1 means the token is a unit of its own.
    """

    kinds: np.ndarray  # int8, shape (n,)
    units: np.ndarray  # int32, shape (n,)

    def __len__(self) -> int:
        return len(self.kinds)


def token_kinds(offsets: np.ndarray | Sequence[tuple[int, int]], segments: Sequence[Segment], text_length: int, base: int = 0) -> TokenKinds:
    """Map character segments to tokens via tokenizer offsets (HF ``Encoding.offsets``).

    ``offsets`` are ``(start, end)`` character offsets into a text that begins at
    character ``base`` of the layout the segments index. Characters no segment covers
    and zero-width tokens (special tokens) count as template, never masked.
    """
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    n = len(off)
    if n == 0:
        return TokenKinds(np.zeros(0, np.int8), np.zeros(0, np.int32))
    rank = np.full(text_length + 1, _PRECEDENCE["template"], dtype=np.int8)
    unit = np.full(text_length + 1, -1, dtype=np.int32)
    code_id = 0
    # Paint low precedence first so higher precedence overwrites it where they overlap.
    for seg in sorted(segments, key=lambda s: _PRECEDENCE[s.kind]):
        a, b = max(seg.start - base, 0), min(seg.end - base, text_length)
        if a >= b:
            continue
        rank[a:b] = _PRECEDENCE[seg.kind]
        if seg.kind == "code":
            unit[a:b] = code_id
            code_id += 1
    starts = np.clip(off[:, 0], 0, text_length)
    ends = np.clip(off[:, 1], 0, text_length)
    # The highest precedence among a token's characters: per level, a prefix count of
    # characters at that level tells whether [start, end) holds any.
    token_rank = np.full(n, -1, dtype=np.int8)
    for level in range(len(KINDS)):
        count = np.concatenate([[0], np.cumsum(rank[:text_length] == level)])
        token_rank[(count[ends] - count[starts]) > 0] = level
    token_rank[token_rank < 0] = _PRECEDENCE["template"]  # zero-width tokens
    # A token's unit: the unit of the first code character at or after its start, if
    # that character lies before its end.
    positions = np.where(unit[:text_length] >= 0, np.arange(text_length), text_length)
    next_code = np.append(np.minimum.accumulate(positions[::-1])[::-1], text_length)
    first = next_code[starts]
    token_unit = np.where(first < ends, unit[first], -1)
    kinds = np.array([_KIND_ID[k] for k in _BY_PRECEDENCE], dtype=np.int8)[token_rank]
    return TokenKinds(kinds.astype(np.int8), token_unit.astype(np.int32))


# -------------------------------------------------------------------- selection


def choose_positions(
    rng: np.random.Generator,
    candidates: np.ndarray,
    tokens: TokenKinds | None = None,
    rates: Mapping[str, float] | None = None,
    ratio: float = SFT_RATIO,
) -> np.ndarray:
    """Sorted positions to mask among ``candidates`` (bool array).

    Without ``tokens``/``rates``: exactly ``max(1, int(n * ratio))`` of the n candidates,
    uniformly without replacement (the paper's rule). With them: per rate kind
    ("source", "message", "fix"; codes count as "message"), a budget of
    ``max(1, int(n_kind * rate))`` tokens filled by whole units in random order;
    echo and template tokens are never chosen, nor a code unit touching one.
    """
    candidates = np.asarray(candidates, dtype=bool)
    n = int(candidates.sum())
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if tokens is None or rates is None:
        k = max(1, int(n * ratio))
        pool = np.flatnonzero(candidates)
        return np.sort(rng.permutation(pool)[:k])
    kinds, units = tokens.kinds, tokens.units
    rate_kind = np.where(kinds == _KIND_ID["code"], _KIND_ID["message"], kinds)
    eligible = candidates & ~np.isin(kinds, [_KIND_ID[k] for k in _NEVER])
    # A unit is eligible only if every one of its tokens is.
    coded = units >= 0
    if coded.any():
        bad_units = np.unique(units[coded & ~eligible])
        eligible &= ~np.isin(units, bad_units) | ~coded
    chosen: list[np.ndarray] = []
    for name in ("source", "message", "fix"):
        rate = float(rates.get(name, 0.0))
        members = eligible & (rate_kind == _KIND_ID[name])
        count = int(members.sum())
        if rate <= 0 or count == 0:
            continue
        chosen.append(_fill_budget(rng, np.flatnonzero(members), units, max(1, int(count * rate))))
    if not chosen:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(chosen))


def _fill_budget(rng: np.random.Generator, positions: np.ndarray, units: np.ndarray, budget: int) -> np.ndarray:
    # Group positions into units: a code's tokens share one id, others stand alone.
    ids = np.where(units[positions] >= 0, units[positions], -1 - positions)
    uniq, inverse, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    order = rng.permutation(len(uniq))
    cum = np.cumsum(sizes[order])
    taken = order[cum <= budget]  # the longest random prefix that fits
    short = budget - int(sizes[taken].sum())
    if short > 0:
        # Fill what a too-big unit left over with the next single tokens, in the same order.
        rest = order[cum > budget]
        rest = rest[sizes[rest] == 1][:short]
        taken = np.concatenate([taken, rest])
    return positions[np.isin(inverse, taken)]


# --------------------------------------------------------------------- SFT rows


@dataclasses.dataclass(frozen=True)
class SftRow:
    """One training row: ``input_ids`` and ``labels`` aligned (the model shifts).

    ``copy`` is "clean", "masked", or "clean+masked" (concatenated layout, whose
    ``lengths`` give the two documents' lengths for attention boundaries).
    """

    input_ids: np.ndarray  # int64
    labels: np.ndarray  # int64, IGNORE_INDEX where no loss is taken
    copy: str
    lengths: tuple[int, ...]


def meap_sft(
    prompt_ids: Sequence[int] | np.ndarray,
    answer_ids: Sequence[int] | np.ndarray,
    *,
    eos_id: int,
    mask_id: int,
    seed: int,
    key: str,
    epoch: int | None = None,
    ratio: float = SFT_RATIO,
    min_answer_tokens: int = MIN_ANSWER_TOKENS,
    layout: str = "rows",
    answer_kinds: TokenKinds | None = None,
    rates: Mapping[str, float] | None = None,
    max_length: int | None = None,
) -> list[SftRow]:
    """MEAP fine-tuning rows for one (prompt, answer) pair.

    ``layout`` "rows" returns [clean] or [clean, masked]; "concat" returns one row
    holding both. ``answer_kinds`` and ``rates`` switch on segment-aware masking.
    ``max_length`` (tokens) truncates as the official code does: the answer is cut so
    that the sequence plus eos fits.
    """
    if layout not in ("rows", "concat"):
        raise ValueError(f"layout must be 'rows' or 'concat', got {layout!r}")
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    answer = np.asarray(answer_ids, dtype=np.int64)
    if max_length is not None:
        prompt = prompt[: max(0, max_length - 1)]
        keep = max(0, min(len(answer), max_length - 1 - len(prompt)))
        answer = answer[:keep]
        if answer_kinds is not None:
            answer_kinds = TokenKinds(answer_kinds.kinds[:keep], answer_kinds.units[:keep])
    eos = np.array([eos_id], dtype=np.int64)
    ignore_prompt = np.full(len(prompt), IGNORE_INDEX, dtype=np.int64)
    clean = SftRow(
        np.concatenate([prompt, answer, eos]),
        np.concatenate([ignore_prompt, answer, eos]),
        "clean", (len(prompt) + len(answer) + 1,),
    )
    rows = [clean]
    if len(answer) > min_answer_tokens:
        rng = record_rng(seed, key, epoch)
        positions = choose_positions(rng, np.ones(len(answer), dtype=bool), answer_kinds, rates, ratio)
        masked_answer = answer.copy()
        masked_answer[positions] = mask_id
        answer_labels = np.full(len(answer), IGNORE_INDEX, dtype=np.int64)
        answer_labels[positions] = answer[positions]
        rows.append(SftRow(
            np.concatenate([prompt, masked_answer, eos]),
            np.concatenate([ignore_prompt, answer_labels, np.array([IGNORE_INDEX])]),
            "masked", (len(prompt) + len(answer) + 1,),
        ))
    if layout == "concat" and len(rows) == 2:
        return [SftRow(
            np.concatenate([rows[0].input_ids, rows[1].input_ids]),
            np.concatenate([rows[0].labels, rows[1].labels]),
            "clean+masked", rows[0].lengths + rows[1].lengths,
        )]
    return rows


def meap_pretrain(
    ids: Sequence[int] | np.ndarray,
    *,
    mask_id: int,
    seed: int,
    key: str,
    epoch: int | None = None,
    ratio: float = PRETRAIN_RATIO,
    tokens: TokenKinds | None = None,
    rates: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MEAP pre-training masking of one transcript text: (input_ids, labels).

    Labels are the clean ids everywhere (loss on every position); masked inputs hold
    ``mask_id``; the last position is never masked (its target lies outside the row).
    """
    clean = np.asarray(ids, dtype=np.int64)
    rng = record_rng(seed, key, epoch)
    if len(clean) < 2:
        positions = np.zeros(0, dtype=np.int64)
    elif tokens is None or rates is None:
        # The paper's count is of the whole row, L, though the last position is excluded.
        k = min(max(1, int(len(clean) * ratio)), len(clean) - 1)
        positions = np.sort(rng.permutation(len(clean) - 1)[:k])
    else:
        candidates = np.ones(len(clean), dtype=bool)
        candidates[-1] = False
        positions = choose_positions(rng, candidates, tokens, rates, ratio)
    inputs = clean.copy()
    inputs[positions] = mask_id
    return inputs, clean.copy()


# ------------------------------------------------------------------ tokenizing


@dataclasses.dataclass(frozen=True)
class EncodedLayout:
    """A layout tokenized: prompt and response encoded apart, so their boundary is a token boundary."""

    prompt_ids: np.ndarray
    response_ids: np.ndarray
    prompt_kinds: TokenKinds
    response_kinds: TokenKinds


def encode_layout(tokenizer: Any, layout: Layout) -> EncodedLayout:
    """Tokenize a layout with an HF ``tokenizers.Tokenizer`` (no special tokens added)."""
    p = tokenizer.encode(layout.prompt, add_special_tokens=False)
    r = tokenizer.encode(layout.response, add_special_tokens=False)
    return EncodedLayout(
        np.asarray(p.ids, dtype=np.int64),
        np.asarray(r.ids, dtype=np.int64),
        token_kinds(p.offsets, layout.segments, len(layout.prompt), base=0),
        token_kinds(r.offsets, layout.segments, len(layout.response), base=len(layout.prompt)),
    )


def sft_rows(
    tokenizer: Any,
    layout: Layout,
    *,
    key: str,
    seed: int,
    eos_id: int,
    mask_id: int,
    epoch: int | None = None,
    rates: Mapping[str, float] | None = None,
    layout_mode: str = "rows",
    max_length: int | None = None,
) -> list[SftRow]:
    """Tokenize a diagnose or repair layout and build its MEAP fine-tuning rows.

    ``key`` is the sample's stable key; when one record yields several samples (both
    tasks), give each its own, e.g. ``f"{record['key']}-repair"``.
    """
    enc = encode_layout(tokenizer, layout)
    return meap_sft(
        enc.prompt_ids, enc.response_ids, eos_id=eos_id, mask_id=mask_id, seed=seed, key=key,
        epoch=epoch, layout=layout_mode, answer_kinds=enc.response_kinds if rates else None,
        rates=rates, max_length=max_length,
    )
