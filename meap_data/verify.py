"""``meap-data verify``: every file the manifest names, with its size and sha256, plus
the counts; also any shard file the manifest does not name (a mix of two runs)."""

from __future__ import annotations

from . import storage
from .errors import MeapDataError
from .manifest import DatasetManifest


def verify_dataset(directory: str) -> list[str]:
    """Problems found (empty when the dataset is intact). Raises for a missing manifest."""
    manifest = DatasetManifest.read(directory)
    problems: list[str] = []

    def check(entry: dict) -> None:
        path = storage.join(directory, entry["path"])
        if not storage.exists(path):
            problems.append(f"{entry['path']}: missing")
            return
        size = storage.size(path)
        if size != entry["bytes"]:
            problems.append(f"{entry['path']}: {size} bytes, manifest says {entry['bytes']}")
            return
        digest = storage.sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}...")

    for fmt in manifest.formats:
        entries = manifest.shards(fmt)
        for entry in entries:
            check(entry)
        total = sum(e["samples"] for e in entries)
        if total != manifest.samples:
            problems.append(f"{fmt}: shards hold {total} samples, counts say {manifest.samples}")
        listed = {e["path"].split("/")[-1] for e in entries}
        for name in storage.listdir(storage.join(directory, fmt)):
            if name.endswith((".arrow", ".tar")) and name not in listed:
                problems.append(f"{fmt}/{name}: not in the manifest (left from another run?)")
    for entry in manifest.rejected:
        check(entry)
    tok = manifest.tokenizer
    check({"path": tok["file"], "bytes": storage.size(storage.join(directory, tok["file"]))
           if storage.exists(storage.join(directory, tok["file"])) else -1, "sha256": tok["sha256"]})
    c = manifest.counts
    if c["documents_read"] != c["documents_written"] + c["documents_rejected"]:
        problems.append(
            f"counts: {c['documents_read']} read != {c['documents_written']} written + "
            f"{c['documents_rejected']} rejected"
        )
    return problems


def verify_or_raise(directory: str) -> DatasetManifest:
    problems = verify_dataset(directory)
    if problems:
        raise MeapDataError(f"dataset {directory!r} is corrupt: " + "; ".join(problems))
    return DatasetManifest.read(directory)
