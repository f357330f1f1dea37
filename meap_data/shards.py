"""Shard writers for the two formats of the contract, written side by side.

Arrow: one IPC *stream* file per shard (``datasets.Dataset.from_file`` reads only the
stream format), record batches of a fixed row count so bytes never depend on how the
pipeline batched its work. WebDataset: one tar per shard, the members of
:mod:`meap_data.sample_format`, with fixed mtime/uid/gid so bytes are reproducible.
No pickle anywhere: ``.npy`` is written with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
import tarfile
from contextlib import ExitStack

import numpy as np
import pyarrow as pa

from . import storage
from .sample_format import (
    ARROW_DIR,
    INPUT_IDS_MEMBER,
    LABELS_MEMBER,
    META_MEMBER,
    SAMPLE_SCHEMA,
    WEBDATASET_DIR,
    SampleRows,
    arrow_shard_name,
    member_name,
    webdataset_shard_name,
)

ARROW_BATCH_ROWS = 256


def _list_array(rows: np.ndarray) -> pa.Array:
    """A list<int32> column from a (rows x L) array without per-row Python work."""
    n, width = rows.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(rows).reshape(-1)))


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class ShardWriter:
    """Writes one shard in every requested format; ``close`` returns their file entries."""

    def __init__(self, directory: str, index: int, total: int, formats: tuple[str, ...]):
        self.formats = formats
        self._stack = ExitStack()
        self._files: dict[str, tuple[str, storage.HashingWriter]] = {}
        self._pending: list[SampleRows] = []
        self._pending_rows = 0
        self.samples = 0
        if "arrow" in formats:
            rel = f"{ARROW_DIR}/{arrow_shard_name(index, total)}"
            raw = self._stack.enter_context(storage.atomic_writer(storage.join(directory, rel)))
            self._arrow = pa.ipc.new_stream(raw, SAMPLE_SCHEMA)
            self._files["arrow"] = (rel, raw)
        if "webdataset" in formats:
            rel = f"{WEBDATASET_DIR}/{webdataset_shard_name(index)}"
            raw = self._stack.enter_context(storage.atomic_writer(storage.join(directory, rel)))
            self._tar = tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT)
            self._files["webdataset"] = (rel, raw)

    def write(self, rows: SampleRows) -> None:
        """Append ``rows`` (int32 token arrays) in order."""
        if "arrow" in self.formats:
            self._pending.append(rows)
            self._pending_rows += len(rows)
            while self._pending_rows >= ARROW_BATCH_ROWS:
                self._flush_arrow(ARROW_BATCH_ROWS)
        if "webdataset" in self.formats:
            for r, (key, meta) in enumerate(zip(rows.keys, rows.metas())):
                self._add_member(member_name(key, INPUT_IDS_MEMBER), _npy_bytes(rows.input_ids[r]))
                self._add_member(member_name(key, LABELS_MEMBER), _npy_bytes(rows.labels[r]))
                self._add_member(member_name(key, META_MEMBER), json.dumps(meta, sort_keys=True).encode())
        self.samples += len(rows)

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def _flush_arrow(self, rows: int) -> None:
        if not self._pending:
            return
        merged = SampleRows.concat(self._pending)
        take = min(rows, len(merged))
        batch_rows = merged.slice(0, take)
        batch = pa.record_batch(
            [
                pa.array(batch_rows.keys, pa.string()),
                _list_array(batch_rows.input_ids),
                _list_array(batch_rows.labels),
                pa.array(batch_rows.doc_offsets, pa.list_(pa.int32())),
                pa.array(batch_rows.doc_keys, pa.list_(pa.string())),
                pa.array(batch_rows.lengths, pa.int32()),
                batch_rows.mask_spans.to_arrow(),
            ],
            schema=SAMPLE_SCHEMA,
        )
        self._arrow.write_batch(batch)
        rest = len(merged) - take
        self._pending = [] if rest == 0 else [merged.slice(take, len(merged))]
        self._pending_rows = rest

    def close(self) -> dict[str, dict]:
        """Finish every file; returns ``{format: {path, bytes, sha256, samples}}``."""
        if "arrow" in self.formats:
            while self._pending_rows:
                self._flush_arrow(ARROW_BATCH_ROWS)
            if self.samples == 0:
                # A stream with no batch at all makes datasets.Dataset.from_file fail
                # ("cannot construct ChunkedArray from empty vector"); one empty batch
                # reads as 0 rows. Units can be empty (all rejected, an empty eval split).
                self._arrow.write_batch(pa.RecordBatch.from_pylist([], schema=SAMPLE_SCHEMA))
            self._arrow.close()
        if "webdataset" in self.formats:
            self._tar.close()
        self._stack.close()
        return {
            fmt: {"path": rel, "bytes": raw.bytes_written, "sha256": raw.sha256(), "samples": self.samples}
            for fmt, (rel, raw) in self._files.items()
        }

    def abort(self) -> None:
        """Drop partial files (the atomic writers delete their temporaries)."""
        try:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass
