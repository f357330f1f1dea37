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
from contextlib import ExitStack
from functools import lru_cache

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


@lru_cache(maxsize=16)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """The ``.npy`` header ``np.save`` writes before a C-ordered array of this dtype and
    shape (the data follows as raw bytes), so a row needs no ``np.save`` call."""
    buf = io.BytesIO()
    np.save(buf, np.zeros(shape, dtype=np.dtype(dtype)), allow_pickle=False)
    return buf.getvalue()[: -np.dtype(dtype).itemsize * int(np.prod(shape))]


TAR_BLOCK = 512
TAR_RECORD = 20 * TAR_BLOCK  # tar pads its end to a multiple of this (tarfile.RECORDSIZE)
# A USTAR member header as tarfile writes ours (mode 644, uid/gid 0, no owner names,
# mtime 0, a regular file, so no device numbers), with an empty name and size and the
# checksum field blank.
_USTAR = bytearray(TAR_BLOCK)
for _at, _field in ((100, b"0000644\0"), (108, b"0000000\0"), (116, b"0000000\0"), (136, b"00000000000\0"),
                    (148, b" " * 8), (156, b"0"), (257, b"ustar\x0000")):
    _USTAR[_at : _at + len(_field)] = _field
_USTAR = bytes(_USTAR)
_USTAR_SUM = sum(_USTAR)


def ustar_header(name: str, size: int) -> bytes:
    """The 512-byte USTAR header of a regular file ``name`` (ASCII, at most 100 bytes) of
    ``size`` bytes: byte for byte what ``tarfile`` writes for our members, without its
    per-member Python objects (tested against ``tarfile``)."""
    raw = name.encode("ascii")
    if len(raw) > 100:
        raise ValueError(f"tar member name over 100 bytes: {name!r}")
    size_field = b"%011o\0" % size
    # The checksum: the sum of the header's bytes, its own field counted as spaces.
    checksum = b"%06o\0" % (_USTAR_SUM + sum(raw) + sum(size_field))
    return b"".join((raw, _USTAR[len(raw) : 124], size_field, _USTAR[136:148], checksum, _USTAR[155:]))


def _tar_member(parts: list, name: str, payload: list) -> None:
    """Append member ``name`` (header, payload pieces, padding) to ``parts``."""
    size = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in payload)
    parts.append(ustar_header(name, size))
    parts.extend(payload)
    if size % TAR_BLOCK:
        parts.append(bytes(TAR_BLOCK - size % TAR_BLOCK))


def meta_json(key: str, doc_offsets, doc_keys, length: int, mask_span) -> bytes:
    """``KEY.json``: what ``json.dumps(meta, sort_keys=True)`` gives, built directly."""
    return (f'{{"doc_keys": {json.dumps(list(doc_keys))}, "doc_offsets": [{", ".join(map(str, doc_offsets))}], '
            f'"key": {json.dumps(key)}, "length": {int(length)}, "mask_span": [{", ".join(map(str, mask_span))}]}}'
            ).encode("ascii")


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
            self._tar = raw
            self._files["webdataset"] = (rel, raw)

    def write(self, rows: SampleRows) -> None:
        """Append ``rows`` (int32 token arrays) in order."""
        if "arrow" in self.formats:
            self._pending.append(rows)
            self._pending_rows += len(rows)
            if self._pending_rows >= ARROW_BATCH_ROWS:
                self._flush_arrow()
        if "webdataset" in self.formats:
            self._tar.write(b"".join(self._tar_members(rows)))
        self.samples += len(rows)

    @staticmethod
    def _tar_members(rows: SampleRows) -> list:
        """The tar members of ``rows`` in order: ``.npy`` of input ids and labels (no
        pickle), then ``KEY.json``."""
        inputs = np.ascontiguousarray(rows.input_ids)
        labels = np.ascontiguousarray(rows.labels)
        inputs_npy = _npy_header(inputs.dtype.str, inputs.shape[1:])
        labels_npy = _npy_header(labels.dtype.str, labels.shape[1:])
        spans = rows.mask_spans.lists()
        parts: list = []
        for r, key in enumerate(rows.keys):
            _tar_member(parts, member_name(key, INPUT_IDS_MEMBER), [inputs_npy, inputs[r].data])
            _tar_member(parts, member_name(key, LABELS_MEMBER), [labels_npy, labels[r].data])
            _tar_member(parts, member_name(key, META_MEMBER), [meta_json(
                key, rows.doc_offsets[r], rows.doc_keys[r], rows.lengths[r], spans[r])])
        return parts

    def _flush_arrow(self, final: bool = False) -> None:
        """Write every whole batch of :data:`ARROW_BATCH_ROWS` pending rows (and, when
        ``final``, the partial last one); keep the rest pending. The pending rows are
        joined once, so a large write costs linear time, not one join per batch."""
        if not self._pending:
            return
        merged = SampleRows.concat(self._pending) if len(self._pending) > 1 else self._pending[0]
        end = len(merged) if final else len(merged) - len(merged) % ARROW_BATCH_ROWS
        for lo in range(0, end, ARROW_BATCH_ROWS):
            self._write_batch(merged.slice(lo, min(lo + ARROW_BATCH_ROWS, end)))
        self._pending = [merged.slice(end, len(merged))] if end < len(merged) else []
        self._pending_rows = len(merged) - end

    def _write_batch(self, batch_rows: SampleRows) -> None:
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

    def close(self) -> dict[str, dict]:
        """Finish every file; returns ``{format: {path, bytes, sha256, samples}}``."""
        if "arrow" in self.formats:
            self._flush_arrow(final=True)
            if self.samples == 0:
                # A stream with no batch at all makes datasets.Dataset.from_file fail
                # ("cannot construct ChunkedArray from empty vector"); one empty batch
                # reads as 0 rows. Units can be empty (all rejected, an empty eval split).
                self._arrow.write_batch(pa.RecordBatch.from_pylist([], schema=SAMPLE_SCHEMA))
            self._arrow.close()
        if "webdataset" in self.formats:
            # The end of archive: two zero blocks, then zeros to a whole record (as tarfile).
            end = self._tar.bytes_written + 2 * TAR_BLOCK
            self._tar.write(bytes(2 * TAR_BLOCK + (-end) % TAR_RECORD))
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
