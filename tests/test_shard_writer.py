"""The shard writer's fast paths write what the standard tools would: tar members byte
for byte as ``tarfile``, ``KEY.json`` as ``json.dumps``, ``.npy`` as ``np.save``; the
background hashing writer keeps order, hashes every byte and reports its errors."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest

from meap_data import storage
from meap_data.sample_format import SampleRows, Spans
from meap_data.shards import ShardWriter, meta_json, ustar_header


def _tarfile_member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = len(data), 0, 0o644, 0, 0, "", ""
    return info.tobuf(tarfile.USTAR_FORMAT, tarfile.ENCODING, "surrogateescape")


# Older CPython tarfile wrote device numbers ("0000000") into regular files' headers; ours
# follow the newer tarfile (none), whatever Python runs, so shard bytes never depend on it.
old_tarfile = pytest.mark.skipif(_tarfile_member("a", b"")[329:337] != bytes(8),
                                 reason="this Python's tarfile writes device numbers for regular files")


@old_tarfile
@pytest.mark.parametrize("name,size", [("0123456789abcdef.input_ids.npy", 8320), ("a.json", 0), ("k" * 100, 511),
                                       ("fedcba9876543210.json", 512), ("x.labels.npy", 8**11 - 1)])
def test_ustar_header_is_tarfiles(name, size):
    assert ustar_header(name, size) == _tarfile_member(name, bytes(size))


def test_ustar_header_refuses_a_long_name():
    with pytest.raises(ValueError, match="over 100 bytes"):
        ustar_header("n" * 101, 1)


@pytest.mark.parametrize("doc_keys", [["a"], ["caf\u00e9 \"quoted\" \\ back", "tab\tnew\nline"], ["\U0001f980", "x" * 300], []])
def test_meta_json_is_json_dumps_sorted(doc_keys):
    meta = {"key": "00ff00ff00ff00ff", "doc_offsets": list(range(len(doc_keys))), "doc_keys": doc_keys,
            "length": 2048, "mask_span": [3, 2048] if doc_keys else []}
    built = meta_json(meta["key"], np.array(meta["doc_offsets"], np.int32), meta["doc_keys"], np.int32(2048),
                      meta["mask_span"])
    assert built == json.dumps(meta, sort_keys=True).encode()
    assert json.loads(built) == meta


def _rows(n: int, seq: int, seed: int = 0) -> SampleRows:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 50_000, (n, seq), dtype=np.int32)
    lengths = rng.integers(1, seq + 1, n).astype(np.int32)
    labels[np.arange(seq)[None, :] >= lengths[:, None]] = -100
    keys = [f"{seed:08x}{i:08x}" for i in range(n)]
    return SampleRows(labels.copy(), labels, lengths, Spans.one_per_row(np.zeros(n), lengths), keys,
                      [[0, 5]] * n, [[f"doc-{i}", f"doc-{i + 1}"] for i in range(n)])


@old_tarfile
def test_the_webdataset_shard_is_the_tar_tarfile_writes(tmp_path):
    batches = [_rows(3, 64, 1), _rows(300, 64, 2), _rows(1, 64, 3)]
    writer = ShardWriter(str(tmp_path), 0, 1, ("webdataset",))
    for rows in batches:
        writer.write(rows)
    entry = writer.close()["webdataset"]
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for rows in batches:
            for r, (key, meta) in enumerate(zip(rows.keys, rows.metas())):
                for suffix, data in ((".input_ids.npy", rows.input_ids[r]), (".labels.npy", rows.labels[r])):
                    buf = io.BytesIO()
                    np.save(buf, data, allow_pickle=False)
                    info = tarfile.TarInfo(key + suffix)
                    info.size, info.uname, info.gname = len(buf.getvalue()), "", ""
                    tar.addfile(info, io.BytesIO(buf.getvalue()))
                body = json.dumps(meta, sort_keys=True).encode()
                info = tarfile.TarInfo(key + ".json")
                info.size, info.uname, info.gname = len(body), "", ""
                tar.addfile(info, io.BytesIO(body))
    written = (tmp_path / entry["path"]).read_bytes()
    assert written == expected.getvalue()
    assert entry["bytes"] == len(written) and entry["sha256"] == hashlib.sha256(written).hexdigest()
    assert entry["samples"] == 304


def test_the_arrow_shard_does_not_depend_on_how_rows_arrive(tmp_path):
    """One 3,000-row write (a huge document's rows) and the same rows in writes of 1 to
    700 give the same bytes: fixed 256-row record batches, in order."""
    import pyarrow as pa

    rows = _rows(3000, 32, 4)
    whole = ShardWriter(str(tmp_path / "whole"), 0, 1, ("arrow",))
    whole.write(rows)
    pieces = ShardWriter(str(tmp_path / "pieces"), 0, 1, ("arrow",))
    lo = 0
    for size in [1, 255, 2, 700, 256, 512, 3, 600] * 3:
        if lo < len(rows):
            pieces.write(rows.slice(lo, min(lo + size, len(rows))))
            lo += size
    assert lo >= len(rows)
    a, b = whole.close()["arrow"], pieces.close()["arrow"]
    assert a["sha256"] == b["sha256"] and a["samples"] == b["samples"] == 3000
    with pa.ipc.open_stream(str(tmp_path / "whole" / a["path"])) as reader:
        sizes = [batch.num_rows for batch in reader]
    assert sizes == [256] * 11 + [184]


def test_hashing_writer_keeps_order_and_hashes_everything(tmp_path):
    rng = np.random.default_rng(0)
    pieces = [rng.bytes(int(n)) for n in rng.integers(0, 3 * storage.HashingWriter.CHUNK_BYTES // 2, 12)]
    pieces += [b"", b"x", memoryview(np.arange(1000, dtype=np.int32).reshape(10, 100))]
    path = str(tmp_path / "f.bin")
    with storage.atomic_writer(path) as w:
        for p in pieces:
            w.write(p)
    flat = b"".join(bytes(p) for p in pieces)
    assert open(path, "rb").read() == flat
    assert w.bytes_written == len(flat) and w.sha256() == hashlib.sha256(flat).hexdigest()


def test_a_reused_caller_buffer_is_copied_before_the_background_write(tmp_path):
    buf = bytearray(b"a" * (storage.HashingWriter.CHUNK_BYTES + 10))
    path = str(tmp_path / "f.bin")
    with storage.atomic_writer(path) as w:
        w.write(buf)
        buf[:] = b"b" * len(buf)  # the caller reuses its buffer at once
        w.write(buf)
    data = open(path, "rb").read()
    assert data == b"a" * len(buf) + b"b" * len(buf)


class _FailingFile(io.RawIOBase):
    def writable(self):
        return True

    def write(self, data):
        raise OSError(28, "No space left on device")


def test_a_write_error_in_the_background_reaches_the_caller_and_nothing_is_committed(tmp_path):
    w = storage.HashingWriter(_FailingFile())
    w.write(bytes(storage.HashingWriter.CHUNK_BYTES))
    with pytest.raises(OSError, match="No space left"):
        for _ in range(8):  # the error surfaces on a later write, or at finish at the latest
            w.write(bytes(storage.HashingWriter.CHUNK_BYTES))
        w.finish()
    w.discard()
    pending = storage.HashingWriter(io.BytesIO())
    pending.write(b"x")
    with pytest.raises(RuntimeError, match="before finish"):
        pending.sha256()
    path = tmp_path / "never.bin"
    with pytest.raises(KeyError):
        with storage.atomic_writer(str(path)) as w2:
            w2.write(bytes(storage.HashingWriter.CHUNK_BYTES * 3))
            raise KeyError("stop")
    assert not list(tmp_path.iterdir())
