"""Expanding input globs into a fixed, sorted plan of input files and byte ranges.

The plan depends only on the inputs and the configuration, never on the runner: it is
what makes shard placement deterministic. Each :class:`WorkUnit` becomes one shard.
"""

from __future__ import annotations

import glob
import os
import posixpath
from dataclasses import asdict, dataclass, field

from . import storage
from .errors import MeapDataError

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def file_type_of(path: str) -> str:
    """``jsonl``, ``parquet``, ``hf_dataset`` (a ``save_to_disk`` directory) or ``text``."""
    if not storage.is_remote(path) and os.path.isdir(path):
        return "hf_dataset"
    name = _strip_compression(path.lower())
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def is_splittable(path: str) -> bool:
    """Uncompressed JSON lines can be cut into byte ranges at line boundaries (not a
    ``.json`` file: it may be one pretty-printed JSON document)."""
    return path.lower().endswith((".jsonl", ".ndjson"))


@dataclass(frozen=True)
class InputFile:
    """A matched input: absolute path, its key prefix (path relative to the input root)."""

    path: str
    relpath: str
    size: int
    file_type: str  # jsonl, parquet, hf_dataset or text


@dataclass(frozen=True)
class FileRange:
    """Bytes [start, end) of a file; a line belongs to the range holding its first byte.

    ``first_line``: the 1-based number of the line starting at ``start`` when the planner
    knows it (it cut the range at a line start), so the reader seeks straight there;
    None makes the reader count the lines before ``start`` itself."""

    file: InputFile
    start: int = 0
    end: int | None = None  # None: to the end of the file
    first_line: int | None = None


@dataclass
class WorkUnit:
    """The inputs of one output shard, in order."""

    index: int
    ranges: list[FileRange] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "WorkUnit":
        ranges = [FileRange(InputFile(**r["file"]), r["start"], r["end"], r.get("first_line"))
                  for r in data["ranges"]]
        return cls(data["index"], ranges)


def _glob_root(pattern: str, sep: str = os.sep) -> str:
    """The directory part of a pattern before its first wildcard."""
    parts = pattern.split(sep)
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = sep.join(fixed) or "."
    if len(fixed) == len(parts):  # a plain path: its root is its parent directory
        root = sep.join(fixed[:-1]) or "."
    return root


def expand_inputs(patterns: list[str]) -> list[InputFile]:
    """Match every pattern; sorted by relative path, duplicates removed.

    Keys are paths relative to the common root of all patterns, so they do not depend
    on where the corpus sits on disk (or in which bucket). Raises :class:`MeapDataError`
    naming any pattern that matches nothing. Object-store URLs (``s3://``, ``gs://``) are
    globbed through fsspec; one run takes either local paths or URLs, not both.
    """
    if not patterns:
        raise MeapDataError("no input given: pass --input GLOB [GLOB ...]")
    remote = [storage.is_remote(p) for p in patterns]
    if any(remote):
        if not all(remote):
            raise MeapDataError(
                f"input patterns {list(patterns)!r} mix local paths and URLs: keys are paths relative "
                "to one common root, so copy the local inputs to the object store (or the reverse)"
            )
        return _expand_remote(patterns)
    matched: dict[str, None] = {}
    roots = []
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        hits = sorted(glob.glob(pattern, recursive=True))
        if not hits:
            raise MeapDataError(
                f"input pattern {pattern!r} matches no file: check the path, quote the glob "
                "so the shell does not expand it, and use ** with a recursive pattern"
            )
        roots.append(os.path.abspath(_glob_root(pattern)))
        for hit in hits:
            # A dataset directory is an input; other directories are not (glob ** lists them).
            if os.path.isdir(hit) and not _is_hf_dataset_dir(hit):
                continue
            matched[os.path.abspath(hit)] = None
    if not matched:
        raise MeapDataError(f"input patterns {patterns!r} match only directories, no files")
    root = os.path.commonpath(roots)
    files = []
    for path in matched:
        try:
            size = os.path.getsize(path) if not os.path.isdir(path) else _dir_size(path)
        except OSError:
            size = 0  # unreadable: the reader rejects it with its reason
        files.append(InputFile(path, os.path.relpath(path, root), size, file_type_of(path)))
    files.sort(key=lambda f: f.relpath)
    return files


def _expand_remote(patterns: list[str]) -> list[InputFile]:
    """``expand_inputs`` for URLs: fsspec globs, sizes from the listing, keys relative
    to the common root of the patterns (the bucket name included only when they differ)."""
    matched: dict[str, tuple[str, int]] = {}  # bucket/key path -> (URL, size)
    roots = []
    for pattern in patterns:
        fs, path = storage.filesystem(pattern)
        try:
            hits = fs.glob(path, detail=True)
        except OSError as exc:
            raise MeapDataError(f"cannot list input pattern {pattern!r}: {type(exc).__name__}: {exc}; "
                                "check the bucket name and the credentials") from exc
        files = {p: info for p, info in hits.items() if info.get("type") != "directory"}
        if not files:
            raise MeapDataError(
                f"input pattern {pattern!r} matches no object: check the bucket and prefix, "
                "and quote the glob so the shell does not expand it"
            )
        roots.append(_glob_root(path, sep="/"))
        for p, info in files.items():
            matched[p] = (fs.unstrip_protocol(p), int(info.get("size") or 0))
    root = posixpath.commonpath(roots) if len(set(roots)) > 1 else roots[0]
    files = [InputFile(url, posixpath.relpath(p, root), size, file_type_of(url))
             for p, (url, size) in matched.items()]
    files.sort(key=lambda f: f.relpath)
    return files


def _is_hf_dataset_dir(path: str) -> bool:
    return os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(
        os.path.join(path, "dataset_dict.json")
    )


def _dir_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(d, f)) for d, _, names in os.walk(path) for f in names
    )


def plan_units(files: list[InputFile], bytes_per_unit: int) -> list[WorkUnit]:
    """Group files (and byte ranges of large splittable files) into units of about
    ``bytes_per_unit`` input bytes each, in input order.
    """
    if bytes_per_unit <= 0:
        raise MeapDataError(f"--input-bytes-per-shard must be positive, got {bytes_per_unit}")
    units: list[WorkUnit] = []
    current = WorkUnit(0)
    filled = 0

    def close() -> None:
        nonlocal current, filled
        if current.ranges:
            units.append(current)
            current = WorkUnit(len(units))
            filled = 0

    for f in files:
        if is_splittable(f.path) and f.size > bytes_per_unit:
            close()
            for frange in line_ranges(f, bytes_per_unit):
                current.ranges.append(frange)
                close()
            continue
        current.ranges.append(FileRange(f, 0, None))
        filled += f.size
        if filled >= bytes_per_unit:
            close()
    close()
    return units


SCAN_CHUNK = 8 << 20


def line_ranges(f: InputFile, bytes_per_unit: int) -> list[FileRange]:
    """Ranges of about ``bytes_per_unit`` bytes of one JSON-lines file, each starting at a
    line start, with the number of that line.

    Nominal cuts fall every ``bytes_per_unit`` bytes; each moves forward to the next line
    start (a line belongs to the range holding its first byte). The file is read once,
    sequentially, to count lines, so a range's keys (``relpath:line``) are the ones a
    whole-file read gives, and a worker seeks straight to its range instead of counting
    the lines before it. Cuts depend only on the file and ``bytes_per_unit``, never on the
    runner. A cut inside a line longer than a range merges with the next.
    """
    cuts = list(range(bytes_per_unit, f.size, bytes_per_unit))
    starts = [(0, 1)]  # (byte offset, line number)
    lines_before = 0  # newlines in the bytes before ``offset``
    offset = 0
    pending = 0  # index into cuts
    with storage.open_read(f.path) as stream:
        while pending < len(cuts):
            chunk = stream.read(SCAN_CHUNK)
            if not chunk:
                break
            end = offset + len(chunk)
            while pending < len(cuts):
                # The next line start at or after the cut: one past the first newline at
                # or after cut - 1 (a line starting exactly at the cut stays whole).
                look = max(cuts[pending] - 1 - offset, 0)
                if cuts[pending] - 1 >= end:
                    break
                nl = chunk.find(b"\n", look)
                if nl < 0:
                    break  # no line start in this chunk: carry the cut to the next one
                start = offset + nl + 1
                number = lines_before + chunk.count(b"\n", 0, nl + 1) + 1
                if start < f.size and start > starts[-1][0]:
                    starts.append((start, number))
                # Later cuts that this line start already passed collapse into it.
                while pending < len(cuts) and cuts[pending] - 1 <= offset + nl:
                    pending += 1
            lines_before += chunk.count(b"\n")
            offset = end
    ends = [s for s, _ in starts[1:]] + [f.size]
    return [FileRange(f, s, e, n) for (s, n), e in zip(starts, ends)]
