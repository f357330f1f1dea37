"""Streaming the WebDataset tars: a small strict tar reader and a window buffer.

Tars are read front to back as a stream (``storage.open_read``: local files and
object-store URLs alike), never extracted. The reader accepts exactly what meap-data
writes: ustar regular-file members named as :mod:`meap_data.sample_format` declares
(``KEY.input_ids.npy``, ``KEY.labels.npy``, ``KEY.json``), three per sample, in order. Anything else is an error that names
the shard and the member: links, directories, names with a path separator or ``..``
(which could escape a directory when extracted by another tool), a header whose
checksum fails, a file that ends before the end-of-archive blocks.

Samples that the caller does not want are skipped without decoding (by seeking past
their data, unless checksums are being verified, which needs every byte).
"""

from __future__ import annotations

import ast
import hashlib
import json
from typing import IO, Callable, Iterator

import numpy as np

from .. import storage
from ..errors import ChecksumError, CorruptDatasetError
from ..sample_format import INPUT_IDS_MEMBER, LABELS_MEMBER, MEMBERS, META_MEMBER

BLOCK = 512
#: The key a decoded member is stored under in a sample's ``members`` dict.
_FIELD = {INPUT_IDS_MEMBER: "input_ids", LABELS_MEMBER: "labels", META_MEMBER: "json"}


class TarFormatError(CorruptDatasetError):
    """A tar shard that is truncated, corrupt, or holds members meap-data never writes."""


def _fix_hint() -> str:
    return "re-copy the shard or rerun 'meap-data prepare'; 'meap-data verify DIR' checks every shard"


class _Reader:
    """Reads a stream, optionally hashing every byte and counting the position."""

    def __init__(self, raw: IO[bytes], hashing: bool):
        self.raw = raw
        self.hash = hashlib.sha256() if hashing else None
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self.raw.read(n)
        while len(data) < n:
            more = self.raw.read(n - len(data))
            if not more:
                break
            data += more
        self.pos += len(data)
        if self.hash is not None:
            self.hash.update(data)
        return data

    def skip(self, n: int) -> int:
        """Skip ``n`` bytes; returns the number skipped (fewer at end of file)."""
        if self.hash is None and hasattr(self.raw, "seekable") and self.raw.seekable():
            here = self.raw.tell()
            end = self.raw.seek(0, 2)
            target = min(here + n, end)
            self.raw.seek(target)
            self.pos += target - here
            return target - here
        return len(self.read(n))

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple, int]] = {}


def _npy(data: bytes, where: str) -> np.ndarray:
    """An array from ``.npy`` bytes (no pickle); headers are parsed once and cached."""
    if data[:6] != b"\x93NUMPY":
        raise TarFormatError(f"{where}: not a .npy file; {_fix_hint()}")
    major = data[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(data[8 : 8 + hlen_size], "little")
    start = 8 + hlen_size + hlen
    header = data[8 + hlen_size : start]
    parsed = _NPY_HEADERS.get(header)
    if parsed is None:
        try:
            d = ast.literal_eval(header.decode("latin1"))
            dtype = np.dtype(d["descr"])
            if dtype.hasobject or d["fortran_order"]:
                raise ValueError("object or Fortran-order array")
        except (ValueError, SyntaxError, KeyError, TypeError) as exc:
            raise TarFormatError(f"{where}: bad .npy header ({exc}); {_fix_hint()}") from exc
        parsed = _NPY_HEADERS[header] = (dtype, tuple(d["shape"]), start)
    dtype, shape, start = parsed
    count = int(np.prod(shape))
    if len(data) - start != count * dtype.itemsize:
        raise TarFormatError(f"{where}: .npy data is {len(data) - start} bytes, its header says {count * dtype.itemsize}; {_fix_hint()}")
    return np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(shape)


def _octal(field: bytes, shard: str, what: str) -> int:
    """A ustar number: NUL- or space-terminated octal digits. Base-256 numbers (a first
    byte with the high bit set) and anything else are refused: meap-data never writes
    them, and a negative size would make a reader step backwards forever."""
    if field[:1] and field[0] & 0x80:
        raise TarFormatError(f"shard {shard}: a tar {what} in base-256 form; meap-data writes plain octal "
                             f"headers: the shard is not ours or was tampered with")
    text = field.split(b"\0", 1)[0].strip()
    if text and not all(48 <= c <= 55 for c in text):
        raise TarFormatError(f"shard {shard}: tar {what} field {text[:12]!r} is not an octal number; {_fix_hint()}")
    return int(text, 8) if text else 0


def _member_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", errors="replace")


def iter_tar_samples(
    raw: IO[bytes],
    shard: str,
    wanted: Callable[[int], bool],
    expected_samples: int,
    expected_sha256: str | None = None,
) -> Iterator[tuple[int, str, dict]]:
    """Samples of one tar, in order: ``(local index, key, members)``, for the local
    indices where ``wanted(i)`` is true (the rest are skipped undecoded).

    ``members`` maps ``input_ids``/``labels`` to int32 arrays and ``json`` to the dict.
    Checks the sample count against ``expected_samples`` at the end, and the sha256
    against ``expected_sha256`` when given (reading every byte). Raises
    :class:`TarFormatError` or :class:`ChecksumError`, naming ``shard``.
    """
    reader = _Reader(raw, hashing=expected_sha256 is not None)
    try:
        yield from _parse(reader, shard, wanted, expected_samples)
    except TarFormatError as exc:
        # With verification on, a corrupt byte is reported as what it is: a checksum
        # mismatch of the shard (the parse error rides along as the cause).
        if reader.hash is not None:
            reader.drain()
            if reader.hash.hexdigest() != expected_sha256:
                raise _checksum_error(shard, reader.hash.hexdigest(), expected_sha256) from exc
        raise
    if reader.hash is not None and reader.hash.hexdigest() != expected_sha256:
        raise _checksum_error(shard, reader.hash.hexdigest(), expected_sha256)


def _checksum_error(shard: str, got: str, expected: str) -> ChecksumError:
    return ChecksumError(
        f"shard {shard}: sha256 {got[:16]}... but the manifest says {expected[:16]}...; "
        "the file is corrupt: re-copy it or rerun prepare"
    )


def _parse(reader: _Reader, shard: str, wanted: Callable[[int], bool], expected_samples: int):
    index = -1
    key = None
    members: dict = {}
    seen: set = set()
    keep = False
    ended = False

    def finish_sample():
        if key is not None and len(seen) != len(MEMBERS):
            missing = sorted(set(MEMBERS) - seen)
            raise TarFormatError(f"shard {shard}: sample {key} lacks {', '.join(missing)}; {_fix_hint()}")

    while True:
        header = reader.read(BLOCK)
        if len(header) < BLOCK:
            raise TarFormatError(
                f"shard {shard}: truncated tar, the file ends at byte {reader.pos} before the "
                f"end-of-archive marker; {_fix_hint()}"
            )
        if header == b"\0" * BLOCK:
            ended = True
            break
        stored = _octal(header[148:156], shard, "checksum")
        computed = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if stored != computed:
            raise TarFormatError(f"shard {shard}: corrupt tar header at byte {reader.pos - BLOCK}; {_fix_hint()}")
        name = _member_name(header)
        kind = header[156:157]
        if "/" in name or "\\" in name or name.startswith("..") or ".." in name.split("."):
            raise TarFormatError(
                f"shard {shard}: member {name!r} has a path in its name that could escape the "
                f"dataset directory; meap-data never writes such members: the shard is not ours or was tampered with"
            )
        if kind not in (b"0", b"\0"):
            raise TarFormatError(f"shard {shard}: member {name!r} is not a regular file (type {kind!r}); refusing it")
        member_key, _, ext = name.partition(".")
        if ext not in MEMBERS:
            raise TarFormatError(f"shard {shard}: unexpected member {name!r}; samples hold {', '.join('KEY.' + m for m in MEMBERS)}")
        size = _octal(header[124:136], shard, "size")
        padded = -(-size // BLOCK) * BLOCK
        if member_key != key:
            finish_sample()
            if keep:
                yield index, key, members
            index += 1
            key, members, seen = member_key, {}, set()
            keep = wanted(index)
        if ext in seen:
            raise TarFormatError(f"shard {shard}: sample {member_key} has two {ext} members; {_fix_hint()}")
        seen.add(ext)
        if keep:
            data = reader.read(padded)
            if len(data) < padded:
                raise TarFormatError(f"shard {shard}: truncated tar, member {name!r} ends past the end of the file; {_fix_hint()}")
            body = data[:size]
            where = f"shard {shard}: member {name!r}"
            if ext == META_MEMBER:
                try:
                    members[_FIELD[ext]] = json.loads(body)
                except ValueError as exc:
                    raise TarFormatError(f"{where}: invalid JSON ({exc}); {_fix_hint()}") from exc
            else:
                members[_FIELD[ext]] = _npy(body, where)
        elif reader.skip(padded) < padded:
            raise TarFormatError(f"shard {shard}: truncated tar, member {name!r} ends past the end of the file; {_fix_hint()}")
    finish_sample()
    if keep:
        yield index, key, members
    if ended and reader.hash is not None:
        reader.drain()
    if index + 1 != expected_samples:
        raise TarFormatError(f"shard {shard}: holds {index + 1} samples, the manifest says {expected_samples}; {_fix_hint()}")


class WebDatasetSource:
    """Streams whole windows of tar shards, keeping only the samples asked for."""

    def __init__(self, directory: str, manifest: dict, verify: bool):
        self.directory = directory
        self.entries = manifest.shards("webdataset")
        self.seq_len = manifest.seq_len
        self.verify = verify

    def read(self, shard: int, first: int, count: int, wanted: set[int]) -> Iterator[tuple[int, str, dict]]:
        """``(global index, key, members)`` of the ``wanted`` global indices among the
        samples ``[first, first + count)`` of tar ``shard``."""
        entry = self.entries[shard]
        base = entry["first_sample"]
        lo, hi = first - base, first - base + count
        with storage.open_read(storage.join(self.directory, entry["path"])) as raw:
            for local, key, members in iter_tar_samples(
                raw, entry["path"], lambda i: lo <= i < hi and (base + i) in wanted, entry["samples"],
                entry["sha256"] if self.verify else None,
            ):
                self._check(entry["path"], key, members)
                yield base + local, key, members

    def _check(self, shard: str, key: str, members: dict) -> None:
        for name in ("input_ids", "labels"):
            a = members[name]
            if a.shape != (self.seq_len,) or a.dtype != np.int32:
                raise TarFormatError(f"shard {shard}: {key}.{name}.npy is {a.dtype}{list(a.shape)}, expected int32[{self.seq_len}]")
