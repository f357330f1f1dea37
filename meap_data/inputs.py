"""Expanding input globs into a fixed, sorted plan of input files and byte ranges.

The plan depends only on the inputs and the configuration, never on the runner: it is
what makes shard placement deterministic. Each :class:`WorkUnit` becomes one shard.
"""

from __future__ import annotations

import glob
import os
from dataclasses import asdict, dataclass, field

from .errors import MeapDataError

COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def _strip_compression(name: str) -> str:
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def file_kind(path: str) -> str:
    """``jsonl``, ``parquet``, ``hf_dataset`` (a ``save_to_disk`` directory) or ``text``."""
    if os.path.isdir(path):
        return "hf_dataset"
    name = _strip_compression(path.lower())
    if name.endswith(JSON_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "text"


def is_splittable(path: str) -> bool:
    """Uncompressed JSON lines can be cut into byte ranges at line boundaries."""
    return file_kind(path) == "jsonl" and not path.lower().endswith(COMPRESSED_SUFFIXES)


@dataclass(frozen=True)
class InputFile:
    """A matched input: absolute path, its key prefix (path relative to the input root)."""

    path: str
    relpath: str
    size: int
    kind: str


@dataclass(frozen=True)
class FileRange:
    """Bytes [start, end) of a file; a line belongs to the range holding its first byte."""

    file: InputFile
    start: int = 0
    end: int | None = None  # None: to the end of the file


@dataclass
class WorkUnit:
    """The inputs of one output shard, in order."""

    index: int
    ranges: list[FileRange] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "WorkUnit":
        ranges = [FileRange(InputFile(**r["file"]), r["start"], r["end"]) for r in data["ranges"]]
        return cls(data["index"], ranges)


def _glob_root(pattern: str) -> str:
    """The directory part of a pattern before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = os.sep.join(fixed) or "."
    if len(fixed) == len(parts):  # a plain path: its root is its parent directory
        root = os.path.dirname(root) or "."
    return root


def expand_inputs(patterns: list[str]) -> list[InputFile]:
    """Match every pattern; sorted by relative path, duplicates removed.

    Keys are paths relative to the common root of all patterns, so they do not depend
    on where the corpus sits on disk. Raises :class:`MeapDataError` naming any pattern
    that matches nothing.
    """
    if not patterns:
        raise MeapDataError("no input given: pass --input GLOB [GLOB ...]")
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
        files.append(InputFile(path, os.path.relpath(path, root), size, file_kind(path)))
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
            for start in range(0, f.size, bytes_per_unit):
                current.ranges.append(FileRange(f, start, min(start + bytes_per_unit, f.size)))
                close()
            continue
        current.ranges.append(FileRange(f, 0, None))
        filled += f.size
        if filled >= bytes_per_unit:
            close()
    close()
    return units
