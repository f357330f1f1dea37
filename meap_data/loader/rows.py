"""Rows gathered from shards, before they become a batch; and the key-word helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..keys import keys_to_u64

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

    ``input_ids``: int32 (n, seq_len), the baked (masked) inputs. ``labels``: int32
    (n, seq_len), clean ids, -100 on padding. ``lengths``: int32 (n,), real tokens.
    ``doc_starts``: int32, every row's document-piece starts concatenated;
    ``doc_counts``: int64 (n,), pieces per row. ``key_words``: uint64 (n,). ``keys``:
    the sample keys (list of str), or None when not decoded.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    lengths: np.ndarray
    doc_starts: np.ndarray
    doc_counts: np.ndarray
    key_words: np.ndarray
    keys: list[str] | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])
