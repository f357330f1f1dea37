"""Rows gathered from shards, before they become a batch; and the key-word helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..keys import keys_to_u64
from ..sample_format import Spans

# ASCII byte -> hex digit value, 255 for anything else.
_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_SHIFTS = (np.uint64(4) * np.arange(15, -1, -1, dtype=np.uint64))


def hex16_words(key_bytes: np.ndarray) -> np.ndarray | None:
    """uint64 words of keys given as an (n, 16) uint8 array of ASCII hex digits, exactly
    as :func:`meap_data.keys.keys_to_u64` maps them; None when any key is not plain hex
    (the caller then falls back to ``keys_to_u64`` on the strings)."""
    digits = _HEX[key_bytes]
    if (digits == 255).any():
        return None
    return np.bitwise_or.reduce(digits.astype(np.uint64) << _SHIFTS, axis=1)


def key_words(keys: list[str]) -> np.ndarray:
    """uint64 words of sample keys, the masking function's per-sample stream ids."""
    return keys_to_u64(list(keys))


@dataclass
class Rows:
    """``n`` samples of ``seq_len`` tokens, in the order they were asked for.

    ``input_ids``: (n, seq_len), the baked (masked) inputs, or None when not read. ``labels``: int32
    (n, seq_len), clean ids, -100 on padding. ``lengths``: int32 (n,), real tokens.
    ``doc_starts``: int32, every row's document-piece starts concatenated;
    ``doc_counts``: int64 (n,), pieces per row. ``key_words``: uint64 (n,) (None when not needed). ``keys``:
    the sample keys (list of str), or None when not decoded. ``mask_spans``: the rows'
    :class:`~meap_data.sample_format.Spans`, or None when not read.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    doc_starts: np.ndarray
    doc_counts: np.ndarray
    key_words: np.ndarray
    keys: list[str] | None = None
    mask_spans: "Spans | None" = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])


def _refcount_probe() -> bool:
    import sys

    held = [np.empty(1)]
    return sys.getrefcount(held[0]) == 2


class BufferPool:
    """Output arrays reused once nothing outside the pool refers to them any more.

    Freshly allocated multi-megabyte arrays are page-faulted in on first write, which
    costs more than filling them; reusing them keeps the loader at memory speed. An array
    is handed out again only when its reference count shows that no batch, view or
    tensor (``torch.from_numpy`` keeps a reference) still uses it, so a consumer that
    keeps batches never sees them overwritten. Arrays are allocated with ``rows``
    (at least) rows and handed out as leading slices, so one shape serves every group
    size; at most ``keep`` arrays per name are retained. Disabled where reference
    counts cannot tell (other Python VMs).
    """

    def __init__(self, rows: int, keep: int = 3):
        import sys

        self._getrefcount = sys.getrefcount
        self.rows = rows
        self.keep = keep
        self.enabled = _refcount_probe()
        self._arrays: dict[tuple, list[np.ndarray]] = {}

    def get(self, name: str, rows: int, width: int, dtype) -> np.ndarray:
        """An uninitialised (rows, width) array of ``dtype`` that nobody else holds;
        ``name`` keeps separate pools for arrays that are in use at the same time."""
        dtype = np.dtype(dtype)
        if not self.enabled or rows > self.rows:
            return np.empty((rows, width), dtype)
        arrays = self._arrays.setdefault((name, width, dtype.str), [])
        for i in range(len(arrays)):
            # 2 = the list's reference + getrefcount's argument: nobody else holds it.
            if self._getrefcount(arrays[i]) == 2:
                return arrays[i][:rows]
        fresh = np.empty((self.rows, width), dtype)
        if len(arrays) < self.keep:
            arrays.append(fresh)
        return fresh[:rows]
