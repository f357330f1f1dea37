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
- ``mask_span``: int32[0 or 2], ``[start, end)`` of the positions the dataset's mask rule
  draws masked positions from (empty when the rule never masks this sample, e.g. the
  clean copy of a fine-tuning example). A loader re-draws masks inside it.
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
class SampleRows:
    """``n`` samples of ``seq_len`` tokens, before masking or ready to write.

    ``input_ids``/``labels``: int32 (n, seq_len); before masking ``input_ids`` may be
    None (the labels hold every token). ``lengths``: int32 (n,), real tokens.
    ``mask_spans``: int32 (n, 2), ``[start, end)`` per row, ``start == end`` for none
    (None until a rule's spans are set). ``keys``, ``doc_offsets``, ``doc_keys``: per
    row, see the module docstring.
    """

    input_ids: np.ndarray | None
    labels: np.ndarray
    lengths: np.ndarray
    mask_spans: np.ndarray | None
    keys: list[str]
    doc_offsets: list[list[int]]
    doc_keys: list[list[str]]

    def __len__(self) -> int:
        return len(self.keys)

    def meta(self, row: int) -> dict:
        """The ``KEY.json`` dict of row ``row``."""
        start, end = (int(v) for v in self.mask_spans[row])
        return {"key": self.keys[row], "doc_offsets": [int(o) for o in self.doc_offsets[row]],
                "doc_keys": list(self.doc_keys[row]), "length": int(self.lengths[row]),
                "mask_span": [start, end] if end > start else []}


def spans_to_lists(spans: np.ndarray) -> pa.Array:
    """The ``mask_span`` column from an (n, 2) array: two entries per non-empty span."""
    spans = np.asarray(spans, dtype=np.int32).reshape(-1, 2)
    has = spans[:, 1] > spans[:, 0]
    offsets = np.concatenate([[0], np.cumsum(has.astype(np.int32) * 2)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(spans[has].reshape(-1)))


def span_of(values) -> tuple[int, int]:
    """``(start, end)`` of a stored ``mask_span`` list; ``(0, 0)`` when it is empty."""
    return (int(values[0]), int(values[1])) if len(values) == 2 else (0, 0)
