"""``ShardLoader``: the framework-free batch iterator over a prepared dataset directory.

Policies (also in the README's "Loading shards"):

- Order: see :mod:`meap_data.loader.order`. A position in the epoch's order maps to a
  sample in O(1); the state is ``(epoch, position)``, in samples consumed by the whole
  job, so a resume with another world size, worker count or batch size continues at
  exactly the next sample.
- Split: the order is cut into global batches of ``batch_size * world_size`` samples;
  rank ``r`` takes the ``r``-th slice of each, and DataLoader worker ``w`` of ``K``
  takes the rank's batches ``w, w + K, ...`` (which is the order a DataLoader hands them
  out in). Remainder policy ``drop`` (default): only full global batches, so every rank
  gets ``(samples - position) // (batch_size * world_size)`` batches; ``wrap``: the last
  global batch is completed with the first samples of the same epoch's order.
- Masks: ``static`` returns the masks baked into the shards; ``per_epoch`` re-draws
  them with the dataset's own mask rule (the manifest's ``mask_rule``, see
  :mod:`meap_data.masking`) inside each sample's ``mask_span``, with ``epoch=None`` at
  epoch 0 (the pipeline's draw, so epoch 0 reproduces the shards exactly) and
  ``epoch=e`` from epoch 1 on.

Memory, per loader (one per rank, or per DataLoader worker):

- the order: O(shards) integers; a position's sample is computed, never stored;
- Arrow: shards are memory-mapped (the page cache holds what was read); per opened
  shard nine integers per 256-row record batch; output buffers reused from a pool of at
  most 3 arrays per field of ``rows_per_read x seq_len`` (256 x 2048 x 8 bytes = 4 MiB
  each by default);
- WebDataset: decoded samples of this consumer's share of the current shuffle window
  (about ``window_shards x samples per shard / (world_size x workers)``) plus fewer than
  one batch left over from the previous window, and with ``wrap`` at most one batch
  kept for the end of the epoch. Every consumer streams every tar of a window it needs
  (it skips the others' samples without decoding them, by seeking where it can).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import storage
from ..errors import CorruptDatasetError, MeapDataError
from ..manifest import DatasetManifest
from ..sample_format import IGNORE_INDEX, Spans
from .arrow_source import ArrowSource
from .order import REMAINDER_POLICIES, EpochOrder, batches_per_epoch, dataset_segments
from .rows import BufferPool, Rows, key_words
from .webdataset_source import WebDatasetSource

STATE_VERSION = 1
FORMATS = ("arrow", "webdataset")
MASK_MODES = ("static", "per_epoch")
# Batch entries (B = batch_size, L = seq_len):
#   input_ids      (B, L) dtype   model inputs, masked positions hold the mask id
#   labels         (B, L) dtype   clean ids aligned with input_ids (the model shifts), -100 on padding
#   position_ids   (B, L) index   0, 1, ... restarting at every document piece and at the padding
#   doc_ids        (B, L) index   document piece of each token within its row, -1 on padding
#   attention_mask (B, L) index   1 on real tokens, 0 on padding
#   cu_seqlens     (P + 1,) int32 piece boundaries in the flattened B * L batch (padding is a
#                                 piece of its own): flash-attn's varlen cu_seqlens
#   max_seqlen     int            longest piece, flash-attn's max_seqlen
#   lengths        (B,) index     real tokens per row
#   in_mask_span   (B, L) index   1 inside a span the mask rule draws from (e.g. a fine-tuning
#                                 sample's masked copy), 0 elsewhere
#   keys           list of str    stable sample keys
DEFAULT_FIELDS = ("input_ids", "labels", "position_ids")
ALL_FIELDS = DEFAULT_FIELDS + ("doc_ids", "attention_mask", "cu_seqlens", "max_seqlen", "lengths", "in_mask_span",
                               "keys")
# Tar shards a WebDataset loader shuffles together by default: the memory bound is this
# many shards' samples (a worker's share of them), see README "Loading shards".
DEFAULT_WEBDATASET_WINDOW = 4
# Samples read and processed together (then cut into batches): amortises per-call
# overhead of the gather and of per-epoch masking.
DEFAULT_ROWS_PER_READ = 256
_GROUPS_PER_INDEX_BLOCK = 16


def check_dataset_files(directory: str, manifest: DatasetManifest, fmt: str) -> None:
    """Every shard of ``fmt`` that the manifest names exists with the recorded size."""
    if fmt not in manifest.formats:
        have = ", ".join(manifest.formats) or "none"
        raise MeapDataError(
            f"dataset {directory!r} has no {fmt} shards (it has: {have}); pass format="
            f"{next(iter(manifest.formats), 'arrow')!r} or rerun prepare with --format arrow,webdataset"
        )
    entries = manifest.shards(fmt)
    total = manifest.samples
    expected_first = 0
    for entry in entries:
        path = storage.join(directory, entry["path"])
        if not storage.exists(path):
            raise MeapDataError(
                f"the manifest of {directory!r} names {entry['path']}, which is missing: the dataset was "
                "moved or partly deleted; restore the file or rerun 'meap-data prepare'"
            )
        size = storage.size(path)
        if size != entry["bytes"]:
            raise MeapDataError(
                f"shard {entry['path']} is {size} bytes, the manifest says {entry['bytes']}: it is truncated "
                "or was replaced; re-copy it or rerun 'meap-data prepare'"
            )
        if entry["first_sample"] != expected_first:
            raise MeapDataError(f"manifest of {directory!r}: {entry['path']} starts at sample {entry['first_sample']}, expected {expected_first}")
        expected_first += entry["samples"]
    if expected_first != total:
        raise MeapDataError(f"manifest of {directory!r}: {fmt} shards hold {expected_first} samples, counts say {total}")


class ShardLoader:
    """Batches of a prepared dataset for one rank (and one DataLoader worker), as numpy.

    ``path``: dataset directory (a complete one: its ``manifest.json`` must exist).
    ``batch_size``: samples per batch on this rank. ``format``: ``"arrow"`` (memory
    map, random access; local disk) or ``"webdataset"`` (tars streamed; local or URL).
    ``shuffle``/``seed``: the seeded order, different each epoch. ``window_shards``:
    shards shuffled together; ``"auto"``: all of them for Arrow (memory does not grow
    with it), 4 for WebDataset (a consumer holds its share of one window's samples);
    ``None``: all. ``rank``/``world_size``, ``worker_id``/``num_workers``: this
    consumer's slice.
    ``remainder``: ``"drop"`` or ``"wrap"``, see the module docstring. ``masks``:
    ``"static"`` or ``"per_epoch"`` (re-drawn by the dataset's mask rule);
    ``mask_seed``/``mask_ratio`` default to the pipeline's. ``verify_checksums``: check each shard's sha256 before using it (reads
    every shard in full once per process). ``fields``: the batch entries, from
    :data:`ALL_FIELDS` (described above it). ``sample_range``: ``(start, stop)`` global sample indices to use
    (e.g. to hold out the last samples for evaluation). ``dtype``: numpy dtype of
    ``input_ids`` and ``labels`` (``int64``, what ``torch`` losses need, or ``int32`` to
    halve host memory traffic and cast on the device). ``index_dtype``: dtype of
    ``position_ids``, ``doc_ids``, ``attention_mask`` and ``lengths`` (``int32``: what
    flash-attn and rotary embeddings take; ``int64`` if a model insists).
    ``rows_per_read``: samples gathered and processed together (Arrow).

    Iterating yields the rest of the current epoch from the current state, then moves
    the state to the next epoch. ``state_dict`` is exact when this object is what
    delivers batches (``num_workers=1``); with several workers, see
    :class:`meap_data.loader.ShardDataLoader`.
    """

    def __init__(
        self,
        path: str,
        batch_size: int,
        *,
        format: str = "arrow",
        shuffle: bool = True,
        seed: int = 0,
        window_shards: int | None | str = "auto",
        rank: int = 0,
        world_size: int = 1,
        worker_id: int = 0,
        num_workers: int = 1,
        remainder: str = "drop",
        masks: str = "static",
        mask_seed: int | None = None,
        mask_ratio: float | None = None,
        verify_checksums: bool = False,
        fields: tuple[str, ...] = DEFAULT_FIELDS,
        sample_range: tuple[int, int] | None = None,
        dtype: str = "int64",
        index_dtype: str = "int32",
        rows_per_read: int = DEFAULT_ROWS_PER_READ,
    ):
        if format not in FORMATS:
            raise MeapDataError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if masks not in MASK_MODES:
            raise MeapDataError(f"masks must be one of {', '.join(MASK_MODES)}, got {masks!r}")
        if remainder not in REMAINDER_POLICIES:
            raise MeapDataError(f"remainder must be one of {', '.join(REMAINDER_POLICIES)}, got {remainder!r}")
        if batch_size < 1:
            raise MeapDataError(f"batch_size must be at least 1, got {batch_size}")
        if not (world_size >= 1 and 0 <= rank < world_size):
            raise MeapDataError(f"rank {rank} is not in [0, world_size={world_size})")
        if not (num_workers >= 1 and 0 <= worker_id < num_workers):
            raise MeapDataError(f"worker_id {worker_id} is not in [0, num_workers={num_workers})")
        bad = [f for f in fields if f not in ALL_FIELDS]
        if bad:
            raise MeapDataError(f"unknown fields {bad}; choose from {', '.join(ALL_FIELDS)}")
        self.path = path
        self._manifest_file = storage.join(path, "manifest.json")
        self._manifest_stamp = storage.fingerprint(self._manifest_file)
        self.manifest = manifest = DatasetManifest.read(path)
        check_dataset_files(path, manifest, format)
        self.format = format
        self.seq_len = manifest.seq_len
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        if window_shards == "auto":
            window_shards = None if format == "arrow" else DEFAULT_WEBDATASET_WINDOW
        elif window_shards is not None and int(window_shards) < 1:
            raise MeapDataError(f"window_shards must be at least 1 (or None for all shards), got {window_shards}")
        self.window_shards = None if window_shards is None else int(window_shards)
        self.rank, self.world_size = int(rank), int(world_size)
        self.worker_id, self.num_workers = int(worker_id), int(num_workers)
        self.remainder = remainder
        self.masks = masks
        self.mask_seed = manifest.seed if mask_seed is None else int(mask_seed)
        # Read only for per_epoch: a dataset whose rule this version cannot re-draw still
        # loads with its static masks.
        self.mask_rule = None
        if masks == "per_epoch":
            rule = manifest.mask_rule
            self.mask_rule = rule if mask_ratio is None else rule.with_ratio(mask_ratio)
        self.mask_id = manifest.mask_token_id
        self.pad_id = manifest.pad_token_id
        self.verify_checksums = bool(verify_checksums)
        self.fields = tuple(fields)
        self.dtype = np.dtype(dtype)
        self.index_dtype = np.dtype(index_dtype)
        for name, value in (("dtype", self.dtype), ("index_dtype", self.index_dtype)):
            if value not in (np.dtype(np.int32), np.dtype(np.int64)):
                raise MeapDataError(f"{name} must be int32 or int64, got {value}")
        total = manifest.samples
        lo, hi = sample_range if sample_range is not None else (0, total)
        if not 0 <= lo < hi <= total:
            raise MeapDataError(f"sample_range {sample_range} must satisfy 0 <= start < stop <= {total} (the dataset's samples)")
        self.sample_range = (int(lo), int(hi))
        self._segments = dataset_segments(manifest.shards(format), self.sample_range)
        self.samples = hi - lo
        if remainder == "drop" and self.samples < self.global_batch:
            raise MeapDataError(
                f"{path!r} has {self.samples} samples, fewer than one global batch ({batch_size} x "
                f"{world_size} ranks), so remainder='drop' leaves nothing: lower batch_size or pass remainder='wrap'"
            )
        self.rows_per_read = max(1, int(rows_per_read))
        self._remote = storage.is_remote(path)
        self.vocab_size = manifest.vocab_size
        self._source = None
        self._order_cache: tuple[int, EpochOrder] | None = None
        self._epoch = 0
        self._position = 0

    # ------------------------------------------------------------------ state

    @property
    def global_batch(self) -> int:
        """Samples consumed by the whole job per step: ``batch_size * world_size``."""
        return self.batch_size * self.world_size

    @property
    def epoch(self) -> int:
        """The epoch the next batch belongs to (0-based)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Samples of this epoch's order the whole job has consumed."""
        return self._position

    def _normalised(self) -> tuple[int, int]:
        if batches_per_epoch(self.samples, self._position, self.global_batch, self.remainder) == 0:
            return self._epoch + 1, 0
        return self._epoch, self._position

    def state_dict(self) -> dict:
        """The position in the global order (JSON-able). An epoch with no full batch left
        for this job's shape is reported as the start of the next one."""
        epoch, position = self._normalised()
        return {
            "version": STATE_VERSION,
            "epoch": epoch,
            "position": position,
            "samples": self.samples,
            "sample_range": list(self.sample_range),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "window_shards": self.window_shards,
            "dataset": self.manifest.content_id,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict`, possibly of a job with another
        world size, worker count or batch size). Refuses a state of another order."""
        if state.get("version") != STATE_VERSION:
            raise MeapDataError(f"loader state version {state.get('version')!r}; this meap-data reads {STATE_VERSION}")
        mine = self.state_dict()
        for field in ("samples", "sample_range", "seed", "shuffle", "window_shards", "dataset"):
            if state.get(field) != mine[field]:
                raise MeapDataError(
                    f"loader state has {field}={state.get(field)!r} but this loader has {mine[field]!r}: "
                    "the saved position belongs to another sample order; resume with the same dataset, "
                    "seed, shuffle, window_shards and sample_range"
                )
        if not 0 <= state["position"] <= self.samples:
            raise MeapDataError(f"loader state position {state['position']} is outside [0, {self.samples}]")
        self._epoch = int(state["epoch"])
        self._position = int(state["position"])

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning; a no-op when already in that epoch
        (so a trainer calling it after a resume keeps the resumed position)."""
        if int(epoch) != self._epoch:
            self._epoch = int(epoch)
            self._position = 0

    def advance(self, batches: int = 1) -> None:
        """Move the state past ``batches`` of this rank's batches (all ranks move in step),
        rolling into the next epoch after the last one."""
        epoch, position = self._normalised()
        left = batches_per_epoch(self.samples, position, self.global_batch, self.remainder)
        if batches >= left:
            self._epoch, self._position = epoch + 1, 0
        else:
            self._epoch, self._position = epoch, position + batches * self.global_batch

    def __len__(self) -> int:
        """Batches this consumer yields from the current state to the end of the epoch."""
        _, position = self._normalised()
        n = batches_per_epoch(self.samples, position, self.global_batch, self.remainder)
        return len(range(self.worker_id, n, self.num_workers))

    def batches_per_epoch(self) -> int:
        """Batches per rank in a whole epoch (all workers together)."""
        return batches_per_epoch(self.samples, 0, self.global_batch, self.remainder)

    # ------------------------------------------------------------------ order

    def order(self, epoch: int) -> EpochOrder:
        """The global sample order of ``epoch`` (positions -> global sample indices)."""
        if self._order_cache is None or self._order_cache[0] != epoch:
            self._order_cache = (epoch, EpochOrder(self._segments, self.seed, epoch, shuffle=self.shuffle,
                                                   window_shards=self.window_shards))
        return self._order_cache[1]

    def _my_batches(self, start: int) -> list[int]:
        n = batches_per_epoch(self.samples, start, self.global_batch, self.remainder)
        return list(range(self.worker_id, n, self.num_workers))

    # ------------------------------------------------------------------ iteration

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None  # memory maps and open files are per process
        state.pop("_buffers", None)
        return state

    def _get_source(self):
        if self._source is None:
            cls = ArrowSource if self.format == "arrow" else WebDatasetSource
            self._source = cls(self.path, self.manifest, self.verify_checksums)
        return self._source

    def check_unchanged(self) -> None:
        """Refuse to go on when the dataset was replaced (``prepare --overwrite``) or
        removed after this loader opened it: old and new rows must never mix."""
        if storage.fingerprint(self._manifest_file) != self._manifest_stamp:
            raise CorruptDatasetError(
                f"dataset {self.path!r} was replaced or removed while it was being loaded (its manifest.json "
                "changed); restart the job (from its last checkpoint) once the new dataset is complete")

    def __iter__(self) -> Iterator[dict]:
        self.check_unchanged()
        epoch, start = self._normalised()
        self._epoch, self._position = epoch, start
        order = self.order(epoch)
        mine = self._my_batches(start)
        total_batches = batches_per_epoch(self.samples, start, self.global_batch, self.remainder)
        accounting = self.num_workers == 1
        per_read = max(1, self.rows_per_read // self.batch_size)
        reader = None
        if self.format == "webdataset":
            reader = _WindowReader(self, order, start, total_batches)
            # One batch at a time, so at most the windows that one batch touches are
            # held (the decode dominates the cost there, not per-call overhead).
            per_read = 1
        B = self.batch_size
        mine = np.asarray(mine, dtype=np.int64)
        block_lo = block_hi = 0
        block_pos = block_idx = None
        for g0, size in _ramped_groups(len(mine), per_read):
            if g0 + size > block_hi:
                # Positions -> sample indices for many groups in one call: the Feistel
                # network's cost is mostly per call, not per element.
                block_lo, block_hi = g0, min(len(mine), g0 + max(size, per_read * _GROUPS_PER_INDEX_BLOCK))
                block = mine[block_lo:block_hi]
                block_pos = (start + (block * self.world_size + self.rank) * B)[:, None] + np.arange(B, dtype=np.int64)
                block_idx = order.indices(block_pos.reshape(-1) % order.total) if reader is None else None
            lo = g0 - block_lo
            group = mine[g0 : g0 + size].tolist()
            positions = block_pos[lo : lo + size].reshape(-1)
            indices = None if block_idx is None else block_idx[lo * B : (lo + size) * B]
            batches = self._make_batches(self._fetch(order, positions, reader, indices), epoch, len(group))
            for k in range(len(group)):
                batch = batches[k]
                batches[k] = None  # the consumer's reference is then the only one
                if accounting:
                    if group[k] + 1 >= total_batches:
                        self._epoch, self._position = epoch + 1, 0
                    else:
                        self._epoch, self._position = epoch, start + (group[k] + 1) * self.global_batch
                yield batch
                del batch
        if self._epoch == epoch:
            self._epoch, self._position = epoch + 1, 0

    def _fetch(self, order: EpochOrder, positions: np.ndarray, reader: "_WindowReader | None",
               indices: np.ndarray | None = None) -> Rows:
        if not self._remote:
            self.check_unchanged()  # a stat per read: cheap locally
        n, L = len(positions), self.seq_len
        pool = self._pool
        remask = self.mask_rule is not None
        # Re-drawn masks are computed into new arrays: the stored rows are read as int32.
        inputs = None
        if not remask:
            inputs = pool.get("input_ids", n, L, self.dtype)
        elif self.mask_rule.needs_inputs:
            inputs = pool.get("stored_input_ids", n, L, np.int32)
        labels = pool.get("labels", n, L, np.int32 if remask else self.dtype)
        if reader is not None:
            return reader.fetch(order, positions, inputs, labels)
        if indices is None:
            indices = order.indices(positions % order.total)
        return self._get_source().fetch(indices, inputs, labels, want_keys="keys" in self.fields,
                                        want_words=remask, want_spans=remask or "in_mask_span" in self.fields)

    @property
    def _pool(self) -> BufferPool:
        pool = self.__dict__.get("_buffers")
        if pool is None:
            pool = self._buffers = BufferPool(max(self.batch_size, self.rows_per_read // self.batch_size * self.batch_size))
        return pool

    def _arange(self, size: int) -> np.ndarray:
        cached = self.__dict__.get("_arange_cache")
        if cached is None or cached.shape[0] < size:
            cached = self._arange_cache = np.arange(size, dtype=np.int32)
        return cached[:size]

    def _check_rows(self, rows: Rows) -> None:
        """Cheap sanity checks of every read (min/max passes): ids inside the vocabulary,
        labels ids or -100, lengths within the sample. A shard that passes its size check
        but holds such rows was written by something else, or damaged in place."""
        problem = None
        if _bad_ids(rows.labels, self.vocab_size, ignore_ok=True):
            problem = "labels outside the vocabulary (and not -100)"
        elif rows.input_ids is not None and _bad_ids(rows.input_ids, self.vocab_size, ignore_ok=False):
            problem = "input_ids outside the vocabulary"
        elif len(rows) and (int(rows.lengths.max()) > self.seq_len or int(rows.lengths.min()) < 0):
            problem = f"a length outside [0, {self.seq_len}]"
        if problem:
            raise CorruptDatasetError(f"dataset {self.path!r}: a read holds {problem} (vocabulary {self.vocab_size}); "
                                      "the shards are damaged or not this manifest's: run 'meap-data verify'")

    def _make_batches(self, rows: Rows, epoch: int, count: int) -> list[dict]:
        """Cut ``rows`` (``count`` batches' worth) into batch dicts of numpy arrays."""
        L, B, n = self.seq_len, self.batch_size, len(rows)
        dt = self.dtype
        it = self.index_dtype
        fields = self.fields
        self._check_rows(rows)
        labels = rows.labels
        if self.mask_rule is not None:
            masked = self.mask_rule.apply(
                labels, rows.lengths, rows.mask_spans, rows.key_words, mask_id=self.mask_id, pad_id=self.pad_id,
                seed=self.mask_seed, epoch=None if epoch == 0 else epoch, inputs=rows.input_ids,
            )
            inputs = masked.input_ids.astype(dt, copy=False)
            labels = masked.labels.astype(dt, copy=False)
        else:
            inputs = rows.input_ids
        # Pieces: every document piece of every row, plus each row's padding as a piece
        # (doc index -1), as start offsets into the flattened (n * L) batch.
        piece_row = np.repeat(np.arange(n, dtype=np.int64), rows.doc_counts)
        first_piece = np.concatenate([[0], np.cumsum(rows.doc_counts)[:-1]]).astype(np.int64)
        doc_index = np.arange(len(piece_row), dtype=np.int64) - np.repeat(first_piece, rows.doc_counts)
        starts = piece_row * L + rows.doc_starts.astype(np.int64)
        padded = np.flatnonzero(rows.lengths < L)
        if padded.size:
            starts = np.concatenate([starts, padded * L + rows.lengths[padded]])
            doc_index = np.concatenate([doc_index, np.full(padded.size, -1, dtype=np.int64)])
            sort = np.argsort(starts, kind="stable")
            starts, doc_index = starts[sort], doc_index[sort]
        piece_len = np.diff(np.append(starts, n * L))
        full = {"input_ids": inputs, "labels": labels}
        if "position_ids" in fields:
            pos = self._pool.get("position_ids", n, L, it)
            # Position = column - start of the token's piece in its row; the column
            # comes from one broadcast row (stays in cache), the piece starts from an
            # int32 repeat: the least memory traffic found for this step.
            piece_start = np.repeat((starts - (starts // L) * L).astype(np.int32), piece_len).reshape(n, L)
            np.subtract(self._arange(L)[None, :], piece_start, out=pos, casting="unsafe")
            full["position_ids"] = pos
        if "doc_ids" in fields:
            doc = self._pool.get("doc_ids", n, L, it)
            np.copyto(doc.reshape(-1), np.repeat(doc_index.astype(np.int32), piece_len), casting="unsafe")
            full["doc_ids"] = doc
        if "attention_mask" in fields:
            full["attention_mask"] = (np.arange(L)[None, :] < rows.lengths[:, None]).astype(it)
        if "lengths" in fields:
            full["lengths"] = rows.lengths.astype(it)
        if "in_mask_span" in fields:
            full["in_mask_span"] = rows.mask_spans.covered(L).astype(it)
        array_fields = [f for f in fields if f in full]
        want_cu = "cu_seqlens" in fields or "max_seqlen" in fields
        out = []
        for k in range(count):
            a, b = k * B, (k + 1) * B
            batch = {f: full[f][a:b] for f in array_fields}
            if want_cu:
                lo, hi = np.searchsorted(starts, [a * L, b * L])
                cu = np.append(starts[lo:hi] - a * L, B * L).astype(np.int32)
                if "cu_seqlens" in fields:
                    batch["cu_seqlens"] = cu
                if "max_seqlen" in fields:
                    batch["max_seqlen"] = int(np.diff(cu).max())
            if "keys" in fields:
                batch["keys"] = list(rows.keys[a:b])
            out.append(batch)
        return out


def _bad_ids(array: np.ndarray, vocab: int, ignore_ok: bool) -> bool:
    """Any id at or above ``vocab``, or negative (besides -100 where ``ignore_ok``)."""
    if array.size == 0:
        return False
    if np.issubdtype(array.dtype, np.signedinteger) and array.flags.c_contiguous:
        # One pass for the usual case: read as unsigned, a negative id is huge, so a
        # maximum under the vocabulary means every id is in [0, vocab).
        if int(array.view(array.dtype.str.replace("i", "u")).max()) < vocab:
            return False
    if int(array.max()) >= vocab:
        return True
    low = int(array.min())
    if low >= 0:
        return False
    if not ignore_ok or low < IGNORE_INDEX:
        return True
    return bool(((array < 0) & (array > IGNORE_INDEX)).any())


def _ramped_groups(count: int, largest: int) -> Iterator[tuple[int, int]]:
    """``(first, size)`` groups covering ``range(count)``: sizes 1, 2, 4, ... up to
    ``largest``, so the first batch of a pass (or of a resume) comes after reading one
    batch's rows, not a whole group's."""
    first, size = 0, 1
    while first < count:
        take = min(size, largest, count - first)
        yield first, take
        first += take
        size *= 2


class _WindowReader:
    """WebDataset fetches: loads whole windows of tars on demand, keeping only this
    consumer's samples of them, keyed by position (a sample can occur twice with
    ``wrap``)."""

    def __init__(self, loader: ShardLoader, order: EpochOrder, start: int, total_batches: int):
        self.loader = loader
        self.order = order
        self.start = start
        self.end = start + total_batches * loader.global_batch
        self.buffer: dict[int, tuple[str, dict]] = {}
        self.loaded: set[int] = set()

    def _mine(self, positions: np.ndarray) -> np.ndarray:
        ld = self.loader
        rel = positions - self.start
        batch = rel // ld.global_batch
        return ((rel >= 0) & (positions < self.end) & ((rel % ld.global_batch) // ld.batch_size == ld.rank)
                & (batch % ld.num_workers == ld.worker_id))

    def _load(self, window: int) -> None:
        ws, we = self.order.window_range(window)
        total = self.order.total
        candidates = [np.arange(max(ws, self.start), min(we, self.end), dtype=np.int64)]
        if self.end > total:  # wrapped positions of the last global batch
            candidates.append(np.arange(max(total + ws, self.start), min(total + we, self.end), dtype=np.int64))
        positions = np.concatenate(candidates)
        positions = positions[self._mine(positions)]
        indices = self.order.indices(positions % total)
        wanted: dict[int, list[int]] = {}
        for p, i in zip(positions.tolist(), indices.tolist()):
            wanted.setdefault(i, []).append(p)
        source = self.loader._get_source()
        for seg in self.order.window_segments(window):
            if not any(seg.first <= i < seg.first + seg.count for i in wanted):
                continue
            for index, key, members in source.read(seg.shard, seg.first, seg.count, wanted.keys()):
                for p in wanted[index]:
                    self.buffer[p] = (key, members)
        self.loaded.add(window)

    def fetch(self, order: EpochOrder, positions: np.ndarray, input_ids: np.ndarray | None,
              labels: np.ndarray) -> Rows:
        total = order.total
        for p in positions.tolist():
            if p not in self.buffer:
                window = int(order.window_of(np.array([p % total]))[0])
                if window in self.loaded:
                    raise MeapDataError(f"internal error: position {p} not found in loaded window {window}")
                self._load(window)
        samples = [self.buffer.pop(p) for p in positions.tolist()]
        keys = [k for k, _ in samples]
        metas = [m["json"] for _, m in samples]
        doc_lists = [np.asarray(m["doc_offsets"], dtype=np.int32) for m in metas]
        for i, (_, m) in enumerate(samples):
            if input_ids is not None:
                input_ids[i] = m["input_ids"]
            labels[i] = m["labels"]
        return Rows(
            input_ids=input_ids,
            labels=labels,
            lengths=np.array([m["length"] for m in metas], dtype=np.int32),
            doc_starts=np.concatenate(doc_lists) if doc_lists else np.zeros(0, np.int32),
            doc_counts=np.array([len(d) for d in doc_lists], dtype=np.int64),
            key_words=key_words(keys),
            keys=keys,
            mask_spans=Spans.from_lists([m["mask_span"] for m in metas]),
        )
