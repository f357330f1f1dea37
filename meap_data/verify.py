"""``meap-data verify``: every file the manifest names, with its size and sha256; the
counts; the manifest against itself (its config hash), against ``tokenizer.json`` (the
special token ids) and against ``arrow/state.json`` (the shards ``datasets`` will load);
unique sample keys; and any file that does not belong (a mix of two runs, a leftover
temporary file)."""

from __future__ import annotations

import hashlib
import json

from . import storage
from .errors import CorruptDatasetError
from .hf_files import CARD, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG
from .manifest import MANIFEST, RUN_INFO, DatasetManifest

#: Files and folders a dataset directory may hold (besides what the manifest names).
EXPECTED = {MANIFEST, RUN_INFO, "tokenizer.json", TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP, CARD, "arrow", "webdataset",
            "rejected"}
ARROW_METADATA = {"state.json", "dataset_info.json"}


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
    intact = not problems  # the shards match their checksums: safe to read them
    problems += _manifest_consistency(directory, manifest)
    problems += _stray_files(directory, manifest)
    if "arrow" in manifest.formats:
        problems += _arrow_metadata(directory, manifest)
        if intact:
            problems += _unique_keys(directory, manifest)
    return problems


def _manifest_consistency(directory: str, manifest: DatasetManifest) -> list[str]:
    """The manifest's own hash, and its special ids against the tokenizer file."""
    problems = []
    blob = json.dumps({"config": manifest.config, "tokenizer": manifest.tokenizer["sha256"]}, sort_keys=True)
    if hashlib.sha256(blob.encode()).hexdigest() != manifest.config_hash:
        problems.append("manifest.json: config_hash does not match the configuration it records (edited?)")
    try:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(manifest.tokenizer_json)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        return problems + [f"tokenizer.json: not a loadable tokenizer ({type(exc).__name__})"]
    t = manifest.tokenizer
    expected = {"mask_token_id": t["mask_token"], "eos_token_id": t["eos_token"], "pad_token_id": t["eos_token"]}
    if t.get("bos_token"):
        expected["bos_token_id"] = t["bos_token"]
    for field, token in expected.items():
        if tok.token_to_id(token) != t.get(field):
            problems.append(f"manifest.json: tokenizer.{field} is {t.get(field)}, tokenizer.json has {token!r} "
                            f"at {tok.token_to_id(token)}")
    if manifest.data["mask_token_id"] != t["mask_token_id"]:
        problems.append(f"manifest.json: mask_token_id {manifest.data['mask_token_id']} differs from "
                        f"tokenizer.mask_token_id {t['mask_token_id']}")
    if tok.get_vocab_size(with_added_tokens=True) != t["vocab_size"]:
        problems.append(f"manifest.json: tokenizer.vocab_size {t['vocab_size']}, tokenizer.json has "
                        f"{tok.get_vocab_size(with_added_tokens=True)}")
    return problems


def _stray_files(directory: str, manifest: DatasetManifest) -> list[str]:
    problems = [f"{name}: not part of a meap-data dataset (left from another run?)"
                for name in storage.listdir(directory) if name not in EXPECTED and not name.startswith(".meap-data")]
    named = {e["path"] for fmt in manifest.formats for e in manifest.shards(fmt)} | {e["path"] for e in manifest.rejected}
    for folder in ("arrow", "webdataset", "rejected"):
        for name in storage.listdir(storage.join(directory, folder)):
            rel = f"{folder}/{name}"
            if rel in named or (folder == "arrow" and name in ARROW_METADATA):
                continue
            kind = "a leftover temporary file" if ".tmp-" in name else "not in the manifest (left from another run?)"
            problems.append(f"{rel}: {kind}")
    return problems


def _arrow_metadata(directory: str, manifest: DatasetManifest) -> list[str]:
    """``state.json`` must list exactly the manifest's Arrow shards, in order: datasets
    loads what it lists and nothing else."""
    try:
        state = json.loads(storage.read_bytes(storage.join(directory, "arrow", "state.json")))
        listed = [f["filename"] for f in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return ["arrow/state.json: missing or not datasets' state file; load_from_disk would fail"]
    shards = [e["path"].split("/")[-1] for e in manifest.shards("arrow")]
    if listed != shards:
        return [f"arrow/state.json: lists {len(listed)} files, the manifest {len(shards)} shards; "
                "load_from_disk would load other rows"]
    return []


def _unique_keys(directory: str, manifest: DatasetManifest) -> list[str]:
    import pyarrow as pa

    seen: set[str] = set()
    for entry in manifest.shards("arrow"):
        with storage.open_read(storage.join(directory, entry["path"])) as f:
            keys = pa.ipc.open_stream(f).read_all().column("key").to_pylist()
        for key in keys:
            if key in seen:
                return [f"{entry['path']}: sample key {key} appears twice; WebDataset readers refuse such tars"]
            seen.add(key)
    return []


def verify_or_raise(directory: str) -> DatasetManifest:
    problems = verify_dataset(directory)
    if problems:
        raise CorruptDatasetError(f"dataset {directory!r} is corrupt: " + "; ".join(problems))
    return DatasetManifest.read(directory)
