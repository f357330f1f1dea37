"""Shard writers for the two formats of the contract, written side by side.

Arrow: one IPC *stream* file per shard (``datasets.Dataset.from_file`` reads only the
stream format), record batches of a fixed row count so bytes never depend on how the
pipeline batched its work. WebDataset: one tar per shard, members ``KEY.input_ids.npy``,
``KEY.labels.npy`` and ``KEY.json``, with fixed mtime/uid/gid so bytes are reproducible.
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

ARROW_BATCH_ROWS = 256

SAMPLE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_offsets", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_keys", pa.list_(pa.string()), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
    ]
)


def arrow_shard_name(index: int, total: int) -> str:
    return f"data-{index:05d}-of-{total:05d}.arrow"


def webdataset_shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


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
        self._pending: list[dict] = []
        self._pending_rows = 0
        self.samples = 0
        if "arrow" in formats:
            rel = f"arrow/{arrow_shard_name(index, total)}"
            raw = self._stack.enter_context(storage.atomic_writer(storage.join(directory, rel)))
            self._arrow = pa.ipc.new_stream(raw, SAMPLE_SCHEMA)
            self._files["arrow"] = (rel, raw)
        if "webdataset" in formats:
            rel = f"webdataset/{webdataset_shard_name(index)}"
            raw = self._stack.enter_context(storage.atomic_writer(storage.join(directory, rel)))
            self._tar = tarfile.open(fileobj=raw, mode="w|", format=tarfile.USTAR_FORMAT)
            self._files["webdataset"] = (rel, raw)

    def write(self, input_ids: np.ndarray, labels: np.ndarray, lengths: np.ndarray, keys, doc_offsets, doc_keys) -> None:
        """Append rows (numpy rows x L, int32) in order."""
        if "arrow" in self.formats:
            self._pending.append(dict(ids=input_ids, labels=labels, lengths=lengths, keys=keys,
                                      offsets=doc_offsets, doc_keys=doc_keys))
            self._pending_rows += len(keys)
            while self._pending_rows >= ARROW_BATCH_ROWS:
                self._flush_arrow(ARROW_BATCH_ROWS)
        if "webdataset" in self.formats:
            for r, key in enumerate(keys):
                meta = {"key": key, "doc_offsets": doc_offsets[r], "doc_keys": doc_keys[r],
                        "length": int(lengths[r])}
                self._add_member(f"{key}.input_ids.npy", _npy_bytes(input_ids[r]))
                self._add_member(f"{key}.labels.npy", _npy_bytes(labels[r]))
                self._add_member(f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self.samples += len(keys)

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
        merged = {k: [] for k in ("ids", "labels", "lengths", "keys", "offsets", "doc_keys")}
        for part in self._pending:
            for k in merged:
                merged[k].append(part[k])
        ids = np.concatenate(merged["ids"])
        labels = np.concatenate(merged["labels"])
        lengths = np.concatenate(merged["lengths"])
        keys = [k for part in merged["keys"] for k in part]
        offsets = [o for part in merged["offsets"] for o in part]
        doc_keys = [d for part in merged["doc_keys"] for d in part]
        take = min(rows, len(keys))
        batch = pa.record_batch(
            [
                pa.array(keys[:take], pa.string()),
                _list_array(ids[:take]),
                _list_array(labels[:take]),
                pa.array(offsets[:take], pa.list_(pa.int32())),
                pa.array(doc_keys[:take], pa.list_(pa.string())),
                pa.array(lengths[:take], pa.int32()),
            ],
            schema=SAMPLE_SCHEMA,
        )
        self._arrow.write_batch(batch)
        rest = len(keys) - take
        self._pending = [] if rest == 0 else [dict(ids=ids[take:], labels=labels[take:], lengths=lengths[take:],
                                                   keys=keys[take:], offsets=offsets[take:], doc_keys=doc_keys[take:])]
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
