"""MEAP masks: every rule in one place, over one keyed random stream.

A *mask rule* says which input positions of a sample are replaced by the ``[MASK]`` id
and what the labels become. Rules are named; a dataset's manifest records its rule with
the parameters (``{"name": "pretrain", "ratio": 0.15, ...}``), and the loader re-draws
masks per epoch with that same rule (:func:`rule_from_json`).

- ``pretrain`` (arXiv 2502.07490, official ``meap_1b.py``): per sample an exact count
  ``max(1, int(L * ratio))`` of positions (L = real tokens), uniformly without
  replacement, never the last position; labels stay the clean ids everywhere.
- ``sft`` (official ``MEAP-SFT.py``): every (prompt, answer) example gives a clean copy
  (prompt labels -100, answer and eos supervised) and, when the answer has more than
  ``min_answer_tokens`` tokens, a masked copy: ``max(1, int(n * ratio))`` of its n answer
  positions masked, labels only there. The copies are consecutive samples (layout
  ``rows``) or one sample holding both (``concat``).

Both draw positions from each sample's ``mask_span`` (see :mod:`meap_data.sample_format`):
``[0, L - 1)`` for pretrain, the answer for an sft masked copy, empty for a clean copy.

Randomness is a pure function of (seed, sample key, epoch): each row's stream word is
splitmix64 of (hash of seed and epoch) xor (the key's 64-bit hash), and a partial
Fisher-Yates shuffle, vectorised across rows, takes its k draws as splitmix64 outputs of
(row word, draw index). No per-row generator objects; the k-step loop runs over whole
batches (above 100 M tokens/s). Unlike the official pre-training code
(``random.seed(50 + step % 51)``: 51 patterns, one per batch), a sample gets the same mask
whatever batch, worker, rank or runner computes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Iterable

import numpy as np

from .errors import MeapDataError
from .keys import keys_to_u64, stream_seed
from .sample_format import IGNORE_INDEX, Spans

PRETRAIN_MASK_RATIO = 0.15  # official pre-training code
SFT_MASK_RATIO = 0.1  # official MEAP-SFT code: share of answer tokens masked
SFT_MIN_ANSWER_TOKENS = 50  # official MEAP-SFT code: masked copy only for longer answers
SFT_LAYOUTS = ("rows", "concat")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ROWS_PER_BLOCK = 1024  # keeps the permutation block in cache


# ------------------------------------------------------------------ the keyed stream


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def row_words(keys: Iterable[str] | np.ndarray, seed: int, epoch: int | None = None) -> np.ndarray:
    """The random stream word (uint64) of each row, from its sample key (a string, or
    the key's uint64 word) and (seed, epoch). ``epoch=None`` is the pipeline's draw."""
    words = keys if isinstance(keys, np.ndarray) else keys_to_u64(list(keys))
    return _splitmix64(words.astype(np.uint64) ^ np.uint64(stream_seed(seed, epoch)))


def masked_flat_indices(
    words: np.ndarray,
    eligible: np.ndarray,
    counts: np.ndarray,
    width: int | None = None,
    starts: np.ndarray | None = None,
) -> np.ndarray:
    """Flat indices (into a rows x width array) of the chosen positions.

    Per row, ``counts[r]`` of its eligible positions, uniformly without replacement
    (capped at the number eligible), driven by ``words[r]`` (see :func:`row_words`).
    ``eligible``: bool (rows x width), or a 1-D int array of span lengths n: positions
    ``starts[r] .. starts[r] + n - 1`` (``starts`` default 0; then ``width`` is needed).
    A row's positions depend only on its word, eligibility and count.
    """
    eligible = np.asarray(eligible)
    prefix = eligible.ndim == 1
    if prefix:
        if width is None:
            raise ValueError("width is required when eligible is given as span lengths")
        n_rows = eligible.shape[0]
    else:
        eligible = eligible.astype(bool, copy=False)
        n_rows, width = eligible.shape
    parts = []
    for lo in range(0, n_rows, _ROWS_PER_BLOCK):
        hi = min(lo + _ROWS_PER_BLOCK, n_rows)
        block = _mask_block(np.asarray(words[lo:hi], dtype=np.uint64), eligible[lo:hi],
                            np.asarray(counts[lo:hi], dtype=np.int64), width)
        parts.append(block + lo * width)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if prefix and starts is not None and flat.size:
        flat = flat + np.asarray(starts, dtype=np.int64)[flat // width]
    return flat


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


def mask_count(length: int | np.ndarray, ratio: float) -> np.ndarray:
    """Positions to mask for ``length`` tokens: ``max(1, int(length * ratio))``."""
    length = np.asarray(length, dtype=np.int64)
    return np.maximum(1, (length * ratio).astype(np.int64))


# ------------------------------------------------------------------ the rules


@dataclass
class Masked:
    """Rows after a rule: ``input_ids`` and ``labels`` (n, L), and ``flat``, the flat
    indices of the masked positions."""

    input_ids: np.ndarray
    labels: np.ndarray
    flat: np.ndarray

    @property
    def count(self) -> int:
        return int(self.flat.size)

    def mask(self) -> np.ndarray:
        """Boolean (n, L), True at masked positions."""
        out = np.zeros(self.input_ids.shape, dtype=bool)
        out.reshape(-1)[self.flat] = True
        return out


@dataclass(frozen=True)
class MaskRule:
    """A named masking rule. Subclasses set ``name`` and implement :meth:`apply`.

    ``needs_inputs``: re-drawing reads the stored ``input_ids`` as well as the labels.
    ``ntp_fields``: loader fields :meth:`ntp_view` needs besides input_ids and labels.
    """

    ratio: float
    name: ClassVar[str] = ""
    needs_inputs: ClassVar[bool] = False
    ntp_fields: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict:
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        return {"name": self.name, **params}

    def with_ratio(self, ratio: float) -> "MaskRule":
        return dataclasses.replace(self, ratio=float(ratio))

    def _draw(self, keys, seed: int, epoch: int | None, spans: Spans, counts: np.ndarray, width: int,
              eligible: np.ndarray | None = None) -> np.ndarray:
        """Flat indices (into rows x width) of ``counts[i]`` positions drawn in span i. A
        row's first span draws from the row's word; its k-th from splitmix64 of (word, k),
        so one-span rows and packed rows share one scheme. ``eligible`` (rows x width,
        one span per row): positions to draw from instead of the spans' ranges."""
        words = row_words(keys, seed, epoch)
        if eligible is not None:
            return masked_flat_indices(words, eligible, counts)
        k = spans.index_in_row().astype(np.uint64)
        span_words = words[spans.row]
        later = k > 0
        span_words[later] = _splitmix64(span_words[later] + k[later] * _GOLDEN)
        flat = masked_flat_indices(span_words, (spans.end - spans.start).astype(np.int64), counts, width,
                                   starts=spans.start)
        if flat.size == 0:
            return flat
        # Virtual rows (one per span) back to the real rows.
        virtual = flat // width
        return spans.row[virtual] * width + (flat - virtual * width)

    def apply(self, labels: np.ndarray, lengths: np.ndarray, spans: Spans, keys, *, mask_id: int,
              pad_id: int, seed: int, epoch: int | None = None, inputs: np.ndarray | None = None) -> Masked:
        """Mask rows. ``labels``/``inputs``: (n, L) as stored (``inputs`` only when
        :attr:`needs_inputs`); ``lengths``: real tokens per row; ``spans``: the rows' mask
        spans; ``keys``: sample keys (strings or their uint64 words)."""
        raise NotImplementedError

    def ntp_view(self, input_ids: np.ndarray, labels: np.ndarray, pad_id: int, in_mask_span: np.ndarray | None = None,
                 doc_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plain next-token-prediction rows from a batch of this rule's samples:
        ``(input_ids, labels, kept)``, ``kept`` the bool row selection applied."""
        raise NotImplementedError


@dataclass(frozen=True)
class PretrainRule(MaskRule):
    """MEAP pre-training: ``max(1, int(L * ratio))`` positions of ``[0, L - 1)``, labels
    clean. ``exclude_ids``: token ids never masked (e.g. eos and ``[MASK]`` itself)."""

    ratio: float = PRETRAIN_MASK_RATIO
    exclude_ids: tuple[int, ...] = ()
    name: ClassVar[str] = "pretrain"

    def __post_init__(self):
        object.__setattr__(self, "exclude_ids", tuple(int(i) for i in self.exclude_ids))

    @staticmethod
    def spans(lengths: np.ndarray) -> Spans:
        """``[0, L - 1)`` per row: every real position but the last (its target lies
        outside the row)."""
        lengths = np.asarray(lengths, dtype=np.int32)
        return Spans.one_per_row(np.zeros_like(lengths), np.maximum(lengths - 1, 0))

    def apply(self, labels, lengths, spans, keys, *, mask_id, pad_id, seed, epoch=None, inputs=None) -> Masked:
        labels = np.asarray(labels)
        lengths = np.asarray(lengths, dtype=np.int64)
        out = labels.copy()
        padding = labels == IGNORE_INDEX
        if padding.any():
            out[padding] = pad_id
        if self.ratio <= 0 or len(spans) == 0:
            return Masked(out, labels, np.zeros(0, dtype=np.int64))
        # The paper's count is of the row's real tokens, though the last is never drawn.
        counts = mask_count(lengths[spans.row], self.ratio)
        eligible = None
        if self.exclude_ids:
            eligible = spans.covered(labels.shape[1]) & ~np.isin(out, self.exclude_ids)
            counts = np.zeros(len(labels), dtype=np.int64)
            counts[spans.row] = mask_count(lengths[spans.row], self.ratio)
        flat = self._draw(keys, seed, epoch, spans, counts, labels.shape[1], eligible)
        out.reshape(-1)[flat] = mask_id
        return Masked(out, labels, flat)

    def ntp_view(self, input_ids, labels, pad_id, in_mask_span=None, doc_ids=None):
        clean = np.where(labels == IGNORE_INDEX, pad_id, labels).astype(labels.dtype, copy=False)
        return clean, labels, np.ones(len(labels), dtype=bool)


@dataclass(frozen=True)
class SftCopy:
    """One unmasked fine-tuning sample: ``input_ids`` and ``labels`` (int32, aligned),
    which ``copy`` it is ("clean", "masked" or "clean+masked"), its document starts, and
    its mask span (``(0, 0)`` for a clean copy)."""

    input_ids: np.ndarray
    labels: np.ndarray
    copy: str
    doc_offsets: tuple[int, ...]
    mask_span: tuple[int, int]


@dataclass(frozen=True)
class SftRule(MaskRule):
    """MEAP-SFT, see the module docstring: :meth:`copies` builds an example's samples,
    :meth:`apply` masks ``max(1, int(n * ratio))`` positions of each mask span and keeps
    labels only there."""

    ratio: float = SFT_MASK_RATIO
    min_answer_tokens: int = SFT_MIN_ANSWER_TOKENS
    layout: str = "rows"
    name: ClassVar[str] = "sft"
    needs_inputs: ClassVar[bool] = True
    ntp_fields: ClassVar[tuple[str, ...]] = ("in_mask_span", "doc_ids")

    def __post_init__(self):
        if self.layout not in SFT_LAYOUTS:
            raise MeapDataError(f"sft layout must be one of {', '.join(SFT_LAYOUTS)}, got {self.layout!r}")

    def copies(self, prompt_ids, answer_ids, eos_id: int) -> list[SftCopy]:
        """The samples of one (prompt, answer) example, before masking: [clean], or
        [clean, masked] (layout rows), or [clean+masked] (layout concat)."""
        prompt = np.asarray(prompt_ids, dtype=np.int32)
        answer = np.asarray(answer_ids, dtype=np.int32)
        n_p, n_a = len(prompt), len(answer)
        ids = np.concatenate([prompt, answer, np.array([eos_id], dtype=np.int32)])
        ignore_prompt = np.full(n_p, IGNORE_INDEX, dtype=np.int32)
        clean_labels = np.concatenate([ignore_prompt, answer, np.array([eos_id], dtype=np.int32)])
        clean = SftCopy(ids, clean_labels, "clean", (0,), (0, 0))
        if self.ratio <= 0 or n_a <= self.min_answer_tokens:
            return [clean]
        # The masked copy supervises only its masked answer tokens (apply() drops the
        # rest of the span's labels); never the prompt or eos.
        masked_labels = np.concatenate([ignore_prompt, answer, np.array([IGNORE_INDEX], dtype=np.int32)])
        if self.layout == "rows":
            return [clean, SftCopy(ids, masked_labels, "masked", (0,), (n_p, n_p + n_a))]
        n = len(ids)
        return [SftCopy(np.concatenate([ids, ids]), np.concatenate([clean_labels, masked_labels]),
                        "clean+masked", (0, n), (n + n_p, n + n_p + n_a))]

    def apply(self, labels, lengths, spans, keys, *, mask_id, pad_id, seed, epoch=None, inputs=None) -> Masked:
        if inputs is None:
            raise ValueError("the sft rule needs the stored input_ids to re-draw masks")
        labels = np.asarray(labels)
        # The clean tokens: a masked position's label holds its token, every other
        # position's input does (prompt, unmasked answer, padding).
        clean = np.where(labels != IGNORE_INDEX, labels, inputs).astype(labels.dtype, copy=False)
        width = labels.shape[1]
        out_labels = np.where(spans.covered(width), IGNORE_INDEX, labels).astype(labels.dtype, copy=False)
        n = (spans.end - spans.start).astype(np.int64)
        counts = mask_count(n, self.ratio) if self.ratio > 0 else np.zeros(len(n), dtype=np.int64)
        flat = self._draw(keys, seed, epoch, spans, counts, width)
        out_inputs = clean.copy()
        out_inputs.reshape(-1)[flat] = mask_id
        out_labels.reshape(-1)[flat] = clean.reshape(-1)[flat]
        return Masked(out_inputs, out_labels, flat)

    def ntp_view(self, input_ids, labels, pad_id, in_mask_span=None, doc_ids=None):
        """The fair baseline for fine-tuning data: the clean copies only, with their real
        prompts as input. Every document holding a mask span is a masked copy and becomes
        padding (``rows``: the whole sample, which is then dropped; ``concat``: its second
        half; packed samples: each masked copy); rows left without a target are dropped."""
        if in_mask_span is None or doc_ids is None:
            raise ValueError("the sft rule's ntp view needs the batch's in_mask_span and doc_ids fields")
        in_span = np.asarray(in_mask_span).astype(bool)
        inputs, labels = input_ids.copy(), labels.copy()
        if in_span.any():
            rows, cols = np.nonzero(in_span)
            n_docs = int(doc_ids.max()) + 2  # doc -1 (padding) shifted to 0
            masked_doc = np.zeros((len(labels), n_docs), dtype=bool)
            masked_doc[rows, doc_ids[rows, cols] + 1] = True
            blank = np.take_along_axis(masked_doc, doc_ids + 1, axis=1) & (doc_ids >= 0)
            inputs[blank] = pad_id
            labels[blank] = IGNORE_INDEX
        kept = (labels != IGNORE_INDEX).any(axis=1)
        return inputs[kept], labels[kept], kept


RULES: dict[str, type[MaskRule]] = {PretrainRule.name: PretrainRule, SftRule.name: SftRule}


def rule_from_json(data: dict) -> MaskRule:
    """The rule a manifest records (:meth:`MaskRule.to_json`)."""
    params = dict(data)
    name = params.pop("name", None)
    cls = RULES.get(name)
    if cls is None:
        raise MeapDataError(
            f"mask rule {name!r} is unknown to this meap-data (it knows {', '.join(RULES)}): its masks "
            "cannot be re-drawn; load the dataset with masks='static'"
        )
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - fields)
    if unknown:
        raise MeapDataError(f"mask rule {name!r} has unknown parameters {unknown}; load it with masks='static'")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})
