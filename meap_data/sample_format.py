"""The sample contract, declared once: the Arrow schema, the WebDataset member names and
the fields of ``KEY.json``. The shard writers and the loader's readers both use it.

A sample (``schemas/sample.arrow.json`` describes the same fields for other tools):

- ``key``: stable sample key, 16 hex digits, no dots (WebDataset splits member names at
  the first dot);
- ``input_ids``: int32[seq_len], the model input, masked positions hold the mask id;
- ``labels``: int32[seq_len], aligned with ``input_ids`` (the model shifts), the clean
  ids, :data:`IGNORE_INDEX` where no loss is taken;
- ``doc_offsets``: int32[], the start of each document piece; ``doc_keys``: the key of
  each piece's document;
- ``length``: real tokens, the rest is padding;
- ``mask_span``: int32[2k], k spans ``[start, end)`` (flattened pairs) of the positions
  the dataset's mask rule draws masked positions from: one for pre-training samples, one
  per masked copy of a fine-tuning sample (several when examples are packed), none for
  a sample the rule never masks (a clean copy). A loader re-draws masks inside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

IGNORE_INDEX = -100  # labels where no loss is taken (PyTorch's cross_entropy default)

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_offsets", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_keys", pa.list_(pa.string()), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("mask_span", pa.list_(pa.int32()), nullable=False),
    ]
)
#: Column positions in :data:`SAMPLE_SCHEMA`, for readers that walk raw buffers.
COLUMN = {name: i for i, name in enumerate(SAMPLE_SCHEMA.names)}

#: WebDataset members of one sample, ``KEY.<suffix>``, in the order they are written.
INPUT_IDS_MEMBER = "input_ids.npy"
LABELS_MEMBER = "labels.npy"
META_MEMBER = "json"
MEMBERS = (INPUT_IDS_MEMBER, LABELS_MEMBER, META_MEMBER)
#: Fields of ``KEY.json``: every column that is not a token array.
META_FIELDS = ("key", "doc_offsets", "doc_keys", "length", "mask_span")

ARROW_DIR = "arrow"
WEBDATASET_DIR = "webdataset"


def arrow_shard_name(index: int, total: int) -> str:
    return f"data-{index:05d}-of-{total:05d}.arrow"


def webdataset_shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def member_name(key: str, member: str) -> str:
    """The tar member name of ``member`` (one of :data:`MEMBERS`) of sample ``key``."""
    return f"{key}.{member}"


@dataclass
class Spans:
    """The mask spans of ``n_rows`` rows as a table, rows in order: span i covers
    positions ``[start[i], end[i])`` of row ``row[i]``."""

    row: np.ndarray  # int64 (m,)
    start: np.ndarray  # int32 (m,)
    end: np.ndarray  # int32 (m,)
    n_rows: int

    @classmethod
    def from_lists(cls, lists) -> "Spans":
        """From per-row flattened pairs ``[[s1, e1, s2, e2], [], ...]`` (lists or int
        arrays; empty spans dropped)."""
        arrays = [np.asarray(x, dtype=np.int32).reshape(-1) for x in lists]
        counts = np.fromiter((len(a) // 2 for a in arrays), dtype=np.int64, count=len(arrays))
        pairs = (np.concatenate(arrays) if arrays else np.zeros(0, np.int32)).reshape(-1, 2)
        rows = np.repeat(np.arange(len(arrays), dtype=np.int64), counts)
        keep = pairs[:, 1] > pairs[:, 0]
        return cls(rows[keep], pairs[keep, 0].astype(np.int32), pairs[keep, 1].astype(np.int32), len(arrays))

    @classmethod
    def one_per_row(cls, starts, ends) -> "Spans":
        """One span per row (``start == end``: none for that row)."""
        starts, ends = np.asarray(starts, np.int32), np.asarray(ends, np.int32)
        keep = np.flatnonzero(ends > starts)
        return cls(keep.astype(np.int64), starts[keep], ends[keep], len(starts))

    @classmethod
    def concat(cls, parts: list["Spans"]) -> "Spans":
        offsets = np.cumsum([0] + [p.n_rows for p in parts[:-1]])
        return cls(np.concatenate([p.row + o for p, o in zip(parts, offsets)]).astype(np.int64),
                   np.concatenate([p.start for p in parts]).astype(np.int32),
                   np.concatenate([p.end for p in parts]).astype(np.int32), int(sum(p.n_rows for p in parts)))

    def __len__(self) -> int:
        return len(self.row)

    def rows(self, lo: int, hi: int) -> "Spans":
        """The spans of rows ``[lo, hi)``, renumbered from 0."""
        a, b = np.searchsorted(self.row, [lo, hi])
        return Spans(self.row[a:b] - lo, self.start[a:b], self.end[a:b], hi - lo)

    def index_in_row(self) -> np.ndarray:
        """0 for each row's first span, 1 for its second..."""
        first = np.searchsorted(self.row, self.row)
        return np.arange(len(self.row)) - first

    def covered(self, width: int) -> np.ndarray:
        """Boolean (n_rows, width): the positions inside a span."""
        out = np.zeros((self.n_rows, width + 1), dtype=np.int8)
        np.add.at(out, (self.row, self.start), 1)
        np.add.at(out, (self.row, self.end), -1)
        return np.cumsum(out, axis=1)[:, :width] > 0

    def lists(self) -> list[list[int]]:
        """Per-row flattened pairs (the stored ``mask_span`` values)."""
        out: list[list[int]] = [[] for _ in range(self.n_rows)]
        for r, a, b in zip(self.row.tolist(), self.start.tolist(), self.end.tolist()):
            out[r] += [a, b]
        return out

    def to_arrow(self) -> pa.Array:
        counts = np.bincount(self.row, minlength=self.n_rows) * 2
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        values = np.stack([self.start, self.end], axis=1).reshape(-1).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


@dataclass
class SampleRows:
    """``n`` samples of ``seq_len`` tokens, before masking or ready to write.

    ``input_ids``/``labels``: int32 (n, seq_len); before masking ``input_ids`` may be
    None (the labels hold every token). ``lengths``: int32 (n,), real tokens.
    ``mask_spans``: the rows' :class:`Spans` (None until a rule's spans are set).
    ``keys``, ``doc_offsets``, ``doc_keys``: per row, see the module docstring.
    """

    input_ids: np.ndarray | None
    labels: np.ndarray
    lengths: np.ndarray
    mask_spans: Spans | None
    keys: list[str]
    doc_offsets: list[list[int]]
    doc_keys: list[list[str]]

    def __len__(self) -> int:
        return len(self.keys)

    def metas(self) -> list[dict]:
        """The ``KEY.json`` dicts of the rows."""
        spans = self.mask_spans.lists()
        return [{"key": self.keys[r], "doc_offsets": [int(o) for o in self.doc_offsets[r]],
                 "doc_keys": list(self.doc_keys[r]), "length": int(self.lengths[r]), "mask_span": spans[r]}
                for r in range(len(self))]

    def slice(self, lo: int, hi: int) -> "SampleRows":
        return SampleRows(self.input_ids[lo:hi], self.labels[lo:hi], self.lengths[lo:hi],
                          self.mask_spans.rows(lo, hi), self.keys[lo:hi], self.doc_offsets[lo:hi],
                          self.doc_keys[lo:hi])

    @classmethod
    def concat(cls, parts: list["SampleRows"]) -> "SampleRows":
        return cls(np.concatenate([p.input_ids for p in parts]), np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.lengths for p in parts]), Spans.concat([p.mask_spans for p in parts]),
                   [k for p in parts for k in p.keys], [o for p in parts for o in p.doc_offsets],
                   [d for p in parts for d in p.doc_keys])
