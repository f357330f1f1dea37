"""Stable keys and the 64-bit hashes that seed everything random.

Randomness in meap-data is a pure function of (seed, a stable key[, epoch]); these helpers
turn strings into the 64-bit words that the counter-based generators consume.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK64 = (1 << 64) - 1


def hash64(*parts: object) -> int:
    """A stable unsigned 64-bit hash of ``parts`` (joined with NUL); same on every machine."""
    h = hashlib.blake2b(digest_size=8)
    for i, part in enumerate(parts):
        if i:
            h.update(b"\x00")
        h.update(str(part).encode("utf-8"))
    return int.from_bytes(h.digest(), "little")


def sample_key(doc_key: str, token_offset: int) -> str:
    """Key of the sample that starts ``token_offset`` tokens into document ``doc_key``.

    16 hex digits: unique per start position, free of dots (WebDataset splits member
    names at the first dot) and of path separators.
    """
    return f"{hash64(doc_key, token_offset):016x}"


def keys_to_u64(keys: list[str]) -> np.ndarray:
    """uint64 words for a list of sample keys; hex keys map to their own value."""
    out = np.empty(len(keys), dtype=np.uint64)
    for i, key in enumerate(keys):
        if len(key) == 16:
            try:
                out[i] = int(key, 16)
                continue
            except ValueError:
                pass
        out[i] = hash64(key)
    return out


def stream_seed(seed: int, epoch: int | None = None, stream: str = "mask") -> int:
    """The 64-bit word that separates one (seed, epoch, purpose) stream from another."""
    return hash64(stream, int(seed), "" if epoch is None else int(epoch)) & _MASK64
