"""Random access to the Arrow shards by memory map.

Each shard (an Arrow IPC stream file) is memory-mapped once per process and its record
batches are located without touching their data: for every batch we keep the file
offsets of its columns' buffers. Gathering a row is then a slice of the mapped file
copied straight into the batch array: zero copies until the batch is assembled, and
only the pages of the rows asked for are read from disk.

Memory: the page cache holds what was touched; per opened shard this keeps a handful of
integers per 256-row record batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import storage
from ..errors import ChecksumError, CorruptDatasetError, MeapDataError
from ..sample_format import COLUMN, SAMPLE_SCHEMA, Spans
from .rows import Rows, hex16_words, key_words


class ArrowShard:
    """One memory-mapped Arrow shard: row gathers by local row index."""

    def __init__(self, path: str, name: str, seq_len: int, samples: int):
        self.name = name
        self.seq_len = seq_len
        try:
            self._mm = pa.memory_map(path, "r")
            size = self._mm.size()
            whole = self._mm.read_buffer(size)
            self._mm.seek(0)
            table = pa.ipc.open_stream(self._mm).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptDatasetError(
                f"shard {name}: not a readable Arrow IPC stream ({exc}); the file is corrupt or "
                "truncated: run 'meap-data verify' on the dataset, then re-copy it or rerun prepare"
            ) from exc
        if not table.schema.equals(SAMPLE_SCHEMA):
            diff = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in table.schema
                    if f not in SAMPLE_SCHEMA] or [f"fields {table.schema.names}"]
            raise CorruptDatasetError(f"shard {name}: not meap-data's sample schema ({'; '.join(diff)}, expected "
                                      f"{SAMPLE_SCHEMA.names}); the shard is not ours or was rewritten")
        if table.num_rows != samples:
            raise CorruptDatasetError(f"shard {name}: {table.num_rows} rows, the manifest says {samples}")
        for column in ("input_ids", "labels"):
            if table.num_rows:
                low, high = pc.min_max(pc.list_value_length(table.column(column))).values()
                if low.as_py() != seq_len or high.as_py() != seq_len:
                    raise CorruptDatasetError(f"shard {name}: {column} rows are not all {seq_len} tokens long; the shard is corrupt")
        self._whole = whole  # keeps the mapping alive for the views below
        self.words = np.frombuffer(whole, dtype=np.int32, count=size // 4)
        self.bytes = np.frombuffer(whole, dtype=np.uint8)
        # A read-only (words - L + 1, L) view: row i = words[i : i + L]; no copy.
        self.rows = np.lib.stride_tricks.sliding_window_view(self.words, seq_len) if len(self.words) >= seq_len else None
        # Per record batch, the file offsets of its buffers. Arrays read from an IPC
        # stream are never sliced (array offsets are 0), so the raw buffers are exact.
        base = whole.address
        rows_per_batch, addresses = [], []
        for batch in table.to_batches():
            kb, ib, lb, db, nb, sb = (batch.column(COLUMN[name]).buffers() for name in
                                      ("key", "input_ids", "labels", "doc_offsets", "length", "mask_span"))
            rows_per_batch.append(batch.num_rows)
            # An empty values buffer may be absent (no span in the whole batch): its
            # offsets are then all equal and never dereferenced.
            span_values = sb[3].address if sb[3] is not None else base
            addresses.append((ib[1].address, ib[3].address, lb[1].address, lb[3].address, db[1].address,
                              db[3].address, nb[1].address, sb[1].address, span_values,
                              kb[1].address, kb[2].address))
        at = np.array(addresses, dtype=np.int64).reshape(-1, 11) - base
        if (at[:, :10] % 4).any():
            raise CorruptDatasetError(f"shard {name}: buffers not aligned to 4 bytes; the shard is corrupt")
        words_at = at // 4
        self.row0 = np.concatenate([[0], np.cumsum(rows_per_batch)]).astype(np.int64)
        # A row's tokens start at values + offsets[row]; rows are seq_len apart (checked above).
        self.ids = words_at[:, 1] + self.words[words_at[:, 0]]
        self.labels = words_at[:, 3] + self.words[words_at[:, 2]]
        self.doc_offs, self.doc_vals, self.lens = words_at[:, 4], words_at[:, 5], words_at[:, 6]
        self.span_offs, self.span_vals = words_at[:, 7], words_at[:, 8]
        self.key_offs, self.key_data = words_at[:, 9], at[:, 10]

    def gather(self, local: np.ndarray, slots: np.ndarray, out: Rows, want_keys: bool,
               doc_lists: list, key_list: list | None, want_inputs: bool = True, want_words: bool = True,
               span_lists: list | None = None) -> None:
        """Copy rows ``local`` of this shard into ``out`` at rows ``slots``; key words
        (the masking streams) only when ``want_words``, key strings when ``want_keys``,
        each row's stored mask span pairs into ``span_lists`` when given."""
        L = self.seq_len
        c = np.searchsorted(self.row0, local, side="right") - 1
        r = local - self.row0[c]
        w = self.words
        ids_at = self.ids[c] + r * L
        lab_at = self.labels[c] + r * L
        # One fancy-indexing call per column: row i of ``self.rows`` is the L words
        # starting at word i of the file, so this copies whole rows in C.
        if want_inputs:
            out.input_ids[slots] = self.rows[ids_at]
        out.labels[slots] = self.rows[lab_at]
        out.lengths[slots] = w[self.lens[c] + r]
        lo = w[self.doc_offs[c] + r].astype(np.int64)
        hi = w[self.doc_offs[c] + r + 1].astype(np.int64)
        vals = self.doc_vals[c]
        for slot, a, b in zip(slots.tolist(), (vals + lo).tolist(), (vals + hi).tolist()):
            doc_lists[slot] = w[a:b]
        if span_lists is not None:
            s_lo = (self.span_vals[c] + w[self.span_offs[c] + r]).tolist()
            s_hi = (self.span_vals[c] + w[self.span_offs[c] + r + 1]).tolist()
            for slot, a, b in zip(slots.tolist(), s_lo, s_hi):
                span_lists[slot] = w[a:b]
        if not (want_keys or want_words):
            return
        klo = w[self.key_offs[c] + r].astype(np.int64)
        khi = w[self.key_offs[c] + r + 1].astype(np.int64)
        start = self.key_data[c] + klo
        words = None
        if ((khi - klo) == 16).all():
            words = hex16_words(self.bytes[start[:, None] + np.arange(16)])
        if words is None or want_keys:
            strings = [self.bytes[a : a + n].tobytes().decode("utf-8") for a, n in zip(start.tolist(), (khi - klo).tolist())]
            if words is None:
                words = key_words(strings)
            if key_list is not None:
                for slot, s in zip(slots.tolist(), strings):
                    key_list[slot] = s
        if out.key_words is not None:
            out.key_words[slots] = words


class ArrowSource:
    """All Arrow shards of a dataset; opens each on first use (per process)."""

    def __init__(self, directory: str, manifest: dict, verify: bool):
        if storage.is_remote(directory):
            raise MeapDataError(
                f"the Arrow loader memory-maps shards, so {directory!r} must be on a local disk: copy the "
                "dataset locally, or pass format='webdataset' to stream the tars from there"
            )
        self.directory = directory
        self.entries = manifest.shards("arrow")
        self.seq_len = manifest.seq_len
        self.verify = verify
        self.firsts = np.array([e["first_sample"] for e in self.entries], dtype=np.int64)
        self._open: dict[int, ArrowShard] = {}

    def shard(self, i: int) -> ArrowShard:
        shard = self._open.get(i)
        if shard is None:
            entry = self.entries[i]
            path = storage.join(self.directory, entry["path"])
            if self.verify:
                digest = storage.sha256_file(path)
                if digest != entry["sha256"]:
                    raise ChecksumError(
                        f"shard {entry['path']}: sha256 {digest[:16]}... but the manifest says "
                        f"{entry['sha256'][:16]}...; the file is corrupt: re-copy it or rerun prepare"
                    )
            shard = self._open[i] = ArrowShard(path, entry["path"], self.seq_len, entry["samples"])
        return shard

    def fetch(self, indices: np.ndarray, input_ids: np.ndarray | None, labels: np.ndarray,
              want_keys: bool = False, want_words: bool = True, want_spans: bool = False) -> Rows:
        """Samples at global ``indices`` (int64), in that order. Token rows are copied
        into ``input_ids`` (skipped when None) and ``labels``, arrays of shape
        (len(indices), seq_len) of any integer dtype: the copy converts."""
        n = len(indices)
        out = Rows(
            input_ids=input_ids,
            labels=labels,
            lengths=np.empty(n, dtype=np.int32),
            doc_starts=None,
            doc_counts=None,
            key_words=np.empty(n, dtype=np.uint64) if want_words else None,
        )
        doc_lists: list = [None] * n
        span_lists: list | None = [None] * n if want_spans else None
        key_list = [None] * n if want_keys else None
        shard_of = np.searchsorted(self.firsts, indices, side="right") - 1
        for s in np.unique(shard_of).tolist():
            slots = np.flatnonzero(shard_of == s)
            self.shard(s).gather(indices[slots] - self.firsts[s], slots, out, want_keys, doc_lists, key_list,
                                 input_ids is not None, want_words, span_lists)
        out.doc_counts = np.fromiter((len(d) for d in doc_lists), dtype=np.int64, count=n)
        out.doc_starts = np.concatenate(doc_lists) if n else np.zeros(0, dtype=np.int32)
        out.keys = key_list
        if span_lists is not None:
            out.mask_spans = Spans.from_lists(span_lists)
        return out
