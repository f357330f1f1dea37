"""The manifest (written last: its presence means the dataset is complete), the typed
view every reader goes through (:class:`DatasetManifest`), and the Hugging Face
``datasets`` metadata that makes ``load_from_disk(DIR/arrow)`` work."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property

from . import storage
from .config import PrepareConfig
from .errors import CorruptDatasetError, DatasetIncompleteError, MeapDataError
from .masking import MaskRule, rule_from_json
from .sample_format import ARROW_DIR, SAMPLE_SCHEMA
from .tokenizer import TokenizerInfo

# 2: samples carry mask_span; the manifest records its mask_rule.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
RUN_INFO = "run_info.json"


def dumps(data: dict) -> bytes:
    """Canonical JSON bytes: sorted keys, fixed indentation, trailing newline."""
    return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def build_manifest(config: PrepareConfig, tokenizer: TokenizerInfo, rule: MaskRule, results: list[dict]) -> dict:
    """Merge per-unit results (in unit order) into the manifest dict; ``rule`` is the
    mask rule the samples were masked with."""
    results = sorted(results, key=lambda r: r["index"])
    rejected: dict[str, int] = {}
    counts = {k: 0 for k in ("documents_read", "documents_written", "samples", "tokens",
                             "padding_tokens", "masked_tokens")}
    shards: dict[str, list] = {fmt: [] for fmt in config.formats}
    rejected_files = []
    first_sample = 0
    for r in results:
        for k in counts:
            counts[k] += r[k]
        for reason, n in r["rejected"].items():
            rejected[reason] = rejected.get(reason, 0) + n
        for fmt in config.formats:
            entry = dict(r["files"][fmt])
            entry["first_sample"] = first_sample
            shards[fmt].append(entry)
        first_sample += r["samples"]
        if r.get("rejected_file"):
            rejected_files.append(r["rejected_file"])
    counts["documents_rejected"] = sum(rejected.values())
    counts["rejected_by_reason"] = dict(sorted(rejected.items()))
    if counts["documents_read"] != counts["documents_written"] + counts["documents_rejected"]:
        raise MeapDataError(
            f"internal accounting error: {counts['documents_read']} documents read but "
            f"{counts['documents_written']} written + {counts['documents_rejected']} rejected"
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "config": config.to_json(),
        "config_hash": config.hash(tokenizer.sha256),
        "tokenizer": tokenizer.manifest_entry(),
        "mask_token_id": tokenizer.mask_token_id,
        "mask_rule": rule.to_json(),
        "seq_len": config.seq_len,
        "counts": counts,
        "shards": shards,
        "rejected": rejected_files,
    }


def _hf_feature(arrow_type) -> dict:
    """The ``datasets`` feature dict of an Arrow type. ``Sequence`` is read by every
    ``datasets`` release (newer ones map it to ``List``), and writing it by hand keeps the
    heavy ``datasets`` import off the pipeline's critical path."""
    import pyarrow as pa

    if pa.types.is_list(arrow_type):
        return {"_type": "Sequence", "feature": _hf_feature(arrow_type.value_type)}
    return {"_type": "Value", "dtype": str(arrow_type)}


def content_fingerprint(manifests: list[dict]) -> str:
    """16 hex digits that change whenever a shard's bytes do: a hash of the configuration
    hash and every shard's sha256, over ``manifests`` in order. ``datasets`` keys its
    caches by it (``state.json``, the dataset card), so a rewritten dataset at the same
    path is never served from a stale cache."""
    digest = hashlib.sha256()
    for manifest in manifests:
        digest.update(manifest["config_hash"].encode())
        for fmt in sorted(manifest["shards"]):
            for entry in manifest["shards"][fmt]:
                digest.update(f"\n{entry['path']} {entry['sha256']}".encode())
    return digest.hexdigest()[:16]


def write_hf_metadata(output_dir: str, manifest: dict) -> None:
    """``state.json`` and ``dataset_info.json`` so ``datasets.load_from_disk`` opens DIR/arrow."""
    info = {
        "builder_name": "meap_data",
        "citation": "",
        "description": "MEAP-masked samples written by meap-data",
        "features": {f.name: _hf_feature(f.type) for f in SAMPLE_SCHEMA},
        "homepage": "",
        "license": "",
    }
    state = {
        "_data_files": [{"filename": e["path"].split("/")[-1]} for e in manifest["shards"]["arrow"]],
        "_fingerprint": content_fingerprint([manifest]),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    storage.write_bytes_atomic(storage.join(output_dir, ARROW_DIR, "dataset_info.json"), dumps(info))
    storage.write_bytes_atomic(storage.join(output_dir, ARROW_DIR, "state.json"), dumps(state))


def write_manifest(output_dir: str, manifest: dict) -> None:
    if "arrow" in manifest["shards"]:
        write_hf_metadata(output_dir, manifest)
    storage.write_bytes_atomic(storage.join(output_dir, MANIFEST), dumps(manifest))


def read_manifest(directory: str) -> dict:
    """The manifest of a complete dataset; a clear error when there is none."""
    path = storage.join(directory, MANIFEST)
    if not storage.exists(directory):
        raise MeapDataError(f"dataset directory {directory!r} does not exist")
    if not storage.exists(path):
        parent = storage.join(directory, "..")
        base = directory.rstrip("/").rsplit("/", 1)[-1]
        if base in ("arrow", "webdataset") and storage.exists(storage.join(parent, MANIFEST)):
            raise MeapDataError(f"{directory!r} is the {base} folder of a dataset; pass the dataset directory "
                                f"above it, {directory.rstrip('/')[: -len(base) - 1] or '.'!r}")
        splits = [n for n in ("train", "eval") if storage.exists(storage.join(directory, n, MANIFEST))]
        if splits:
            raise MeapDataError(f"{directory!r} holds the {' and '.join(splits)} datasets of a --kind rust run; "
                                f"pass one of them, e.g. {storage.join(directory, splits[0])!r}")
        raise DatasetIncompleteError(
            f"{directory!r} has no manifest.json: the dataset is incomplete or still being "
            "written (manifest.json is written last); rerun 'meap-data prepare' with --overwrite"
        )
    try:
        manifest = json.loads(storage.read_bytes(path))
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise CorruptDatasetError(f"{path!r} is not valid JSON ({exc}); the dataset is corrupt") from exc
    if not isinstance(manifest, dict):
        raise CorruptDatasetError(f"{path!r} holds a JSON {type(manifest).__name__}, not a manifest object; "
                                  "the dataset is corrupt")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise MeapDataError(
            f"{path!r} has schema_version {manifest.get('schema_version')!r}; this meap-data "
            f"reads version {SCHEMA_VERSION}: prepare the dataset again with this version"
        )
    problem = manifest_problem(manifest)
    if problem:
        raise CorruptDatasetError(f"{path!r} is malformed ({problem}); the dataset is corrupt or not meap-data's: "
                                  "prepare it again")
    return manifest


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas", "manifest.schema.json")
    with open(path, encoding="utf-8") as f:
        return jsonschema.Draft202012Validator(json.load(f))


def manifest_problem(manifest: object) -> str | None:
    """Why ``manifest`` is not a valid manifest (schema, and every path confined to the
    dataset directory, in its format's folder), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(manifest))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "top level"
        return f"{where}: {error.message[:160]}"
    for fmt, entries in manifest["shards"].items():
        for entry in entries:
            if not entry["path"].startswith(f"{fmt}/"):
                return f"shards/{fmt}: {entry['path']!r} is not in the {fmt}/ folder"
    return None


def _entry(*path: str, cast=int, doc: str = "") -> property:
    """A read-only property for the manifest value at ``path`` (keys into the JSON)."""

    def get(self: "DatasetManifest"):
        value = self.data
        for key in path:
            value = value[key]
        return cast(value)

    return property(get, doc=doc or f"manifest {'.'.join(path)}")


def _same(value):
    return value


@dataclass(frozen=True)
class DatasetManifest:
    """A complete dataset's manifest, read once, with typed accessors: the one place
    that knows where in the JSON each fact lives."""

    directory: str
    data: dict

    @classmethod
    def read(cls, directory: str) -> "DatasetManifest":
        return cls(directory, read_manifest(directory))

    config = _entry("config", cast=_same, doc="the prepare configuration (the kind's options flattened in)")
    kind = _entry("config", "kind", cast=str)
    seed = _entry("config", "seed", doc="the masking seed the pipeline used")
    seq_len = _entry("seq_len", doc="tokens per sample")
    config_hash = _entry("config_hash", cast=str)
    mask_token_id = _entry("mask_token_id")
    pad_token_id = _entry("tokenizer", "pad_token_id")
    eos_token_id = _entry("tokenizer", "eos_token_id")
    vocab_size = _entry("tokenizer", "vocab_size", doc="tokens in the vocabulary, special tokens included")
    counts = _entry("counts", cast=_same)
    samples = _entry("counts", "samples")
    masked_tokens = _entry("counts", "masked_tokens")
    formats = _entry("shards", cast=tuple, doc="the formats the dataset was written in")
    tokenizer = _entry("tokenizer", cast=_same, doc="the tokenizer entry: file, sha256, special tokens and ids")
    rejected = _entry("rejected", cast=_same, doc="the dead-letter files ({path, bytes, sha256, records})")

    @cached_property
    def mask_rule(self) -> MaskRule:
        """The rule the samples were masked with (re-draws per epoch in the loader)."""
        return rule_from_json(self.data["mask_rule"])

    @cached_property
    def content_id(self) -> str:
        """The identity of the data itself: sha256 over every shard's sha256. The same
        dataset copied elsewhere keeps it; another corpus under the same glob does not."""
        shas = {fmt: [e["sha256"] for e in self.shards(fmt)] for fmt in sorted(self.formats)}
        return hashlib.sha256(json.dumps(shas, sort_keys=True).encode()).hexdigest()

    @cached_property
    def tokenizer_json(self) -> str:
        """The dataset's exact tokenizer (``DIR/tokenizer.json``) as text."""
        return storage.read_bytes(storage.join(self.directory, self.tokenizer["file"])).decode("utf-8")

    def shards(self, fmt: str) -> list[dict]:
        """The shard entries of one format ({path, bytes, sha256, samples, first_sample})."""
        return self.data["shards"][fmt]
