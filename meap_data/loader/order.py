"""The global sample order of one epoch, and how ranks and workers split it.

The order is a pure function of (seed, epoch, the dataset's shard sizes, the window
size); it never depends on rank, world size, worker count or batch size. A loader's
state is therefore just ``(epoch, position)``: how many samples of this order the whole
job has consumed. Any job shape can resume from it.

Construction (per epoch):

1. The dataset's samples, in manifest order, are cut into *segments* (one per shard,
   clipped to the loader's sample range).
2. The segments are permuted (a seeded NumPy Philox permutation: O(shards) memory).
3. Consecutive permuted segments form *windows* of ``window_shards`` segments each (the
   last window may be shorter). ``window_shards=None`` makes one window of everything.
4. Inside each window the samples are permuted by a keyed Feistel bijection over
   ``[0, window samples)`` with cycle walking: any position maps to its sample in O(1)
   time and memory, and so does a resume.

The epoch order is the windows one after another. Samples therefore mix across every
shard of a window (all shards with ``window_shards=None``); shards meet different window
partners each epoch because step 2 changes with the epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..keys import hash64

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_FEISTEL_ROUNDS = 6


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective 64-bit mixer, the Feistel round function."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


class FeistelPermutation:
    """A keyed bijection of ``[0, n)`` evaluated element-wise: O(1) memory, O(1) seek.

    A balanced Feistel network over ``2 * half`` bits (the smallest even bit count with
    ``2 ** bits >= n``, so the domain is under ``4 n``), made to stay inside ``[0, n)``
    by cycle walking: re-encrypt until the value falls in range. Each step is a
    permutation of the power-of-two domain, so the walk ends and the result is a
    permutation of ``[0, n)``; the expected number of walks is under 4.
    """

    def __init__(self, n: int, key: int):
        self.n = int(n)
        bits = max(2, int(self.n - 1).bit_length()) if self.n > 1 else 2
        bits += bits % 2
        self.half = np.uint64(bits // 2)
        self.low = np.uint64((1 << (bits // 2)) - 1)
        self.round_keys = [np.uint64(hash64("feistel", key, r)) for r in range(_FEISTEL_ROUNDS)]

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left = x >> self.half
        right = x & self.low
        for k in self.round_keys:
            left, right = right, left ^ (_mix64(right ^ k) & self.low)
        return (left << self.half) | right

    def __call__(self, index: np.ndarray) -> np.ndarray:
        """The images of ``index`` (int array, each in ``[0, n)``), as int64."""
        x = np.asarray(index, dtype=np.int64)
        if self.n <= 1:
            return np.zeros_like(x)
        y = self._encrypt(x.astype(np.uint64))
        outside = y >= np.uint64(self.n)
        while outside.any():
            y[outside] = self._encrypt(y[outside])
            outside = y >= np.uint64(self.n)
        return y.astype(np.int64)


@dataclass(frozen=True)
class Segment:
    """Samples ``[first, first + count)`` of the dataset (global indices), all in ``shard``."""

    shard: int
    first: int
    count: int


def dataset_segments(shard_entries: list[dict], sample_range: tuple[int, int]) -> list[Segment]:
    """One segment per shard of the manifest, clipped to ``sample_range`` (global indices)."""
    lo, hi = sample_range
    segments = []
    for i, entry in enumerate(shard_entries):
        first = max(entry["first_sample"], lo)
        stop = min(entry["first_sample"] + entry["samples"], hi)
        if stop > first:
            segments.append(Segment(i, first, stop - first))
    return segments


class EpochOrder:
    """The sample order of one epoch: position in ``[0, total)`` -> global sample index.

    ``window_shards``: shards whose samples are shuffled together (None: all of them).
    ``shuffle=False`` gives the manifest order (for evaluation).
    """

    def __init__(self, segments: list[Segment], seed: int, epoch: int, *, shuffle: bool = True,
                 window_shards: int | None = None):
        self.total = sum(s.count for s in segments)
        self.shuffle = shuffle
        if shuffle:
            rng = np.random.Generator(np.random.Philox(key=hash64("shard-order", seed, epoch)))
            permuted = [segments[i] for i in rng.permutation(len(segments))]
        else:
            permuted = list(segments)
        width = len(permuted) if (window_shards is None or not shuffle) else max(1, int(window_shards))
        self.windows: list[list[Segment]] = [permuted[i : i + width] for i in range(0, len(permuted), width)] or [[]]
        sizes = [sum(s.count for s in w) for w in self.windows]
        self.window_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        # Per window: the segments' starts inside the window and their first global index.
        self._seg_starts = [np.concatenate([[0], np.cumsum([s.count for s in w])]).astype(np.int64) for w in self.windows]
        self._seg_firsts = [np.array([s.first for s in w], dtype=np.int64) for w in self.windows]
        self._perms = [FeistelPermutation(n, hash64("window", seed, epoch, i)) if shuffle else None
                       for i, n in enumerate(sizes)]

    def window_of(self, positions: np.ndarray) -> np.ndarray:
        """Window index of each position."""
        return np.searchsorted(self.window_starts, positions, side="right") - 1

    def window_range(self, window: int) -> tuple[int, int]:
        """Positions ``[start, stop)`` that window ``window`` covers."""
        return int(self.window_starts[window]), int(self.window_starts[window + 1])

    def window_segments(self, window: int) -> list[Segment]:
        return self.windows[window]

    def indices(self, positions: np.ndarray) -> np.ndarray:
        """Global sample index (int64) at each position (int array, each in ``[0, total)``)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.total):
            raise IndexError(f"positions must lie in [0, {self.total})")
        out = np.empty_like(positions)
        windows = self.window_of(positions)
        for w in np.unique(windows):
            sel = windows == w
            local = positions[sel] - self.window_starts[w]
            if self._perms[w] is not None:
                local = self._perms[w](local)
            seg = np.searchsorted(self._seg_starts[w], local, side="right") - 1
            out[sel] = self._seg_firsts[w][seg] + (local - self._seg_starts[w][seg])
        return out


REMAINDER_POLICIES = ("drop", "wrap")


def batches_per_epoch(total: int, start: int, global_batch: int, remainder: str) -> int:
    """Global batches left in an epoch of ``total`` samples from position ``start``.

    ``drop``: only full global batches; the last ``< global_batch`` samples of this
    epoch's order are skipped (a different set each epoch, as the order changes).
    ``wrap``: the last global batch is completed with the first samples of the same
    epoch's order (a few samples seen twice), so nothing is skipped.
    Either way every rank gets the same number of batches.
    """
    left = max(0, total - start)
    if remainder == "drop":
        return left // global_batch
    return -(-left // global_batch)
