"""The configuration of a prepare run: everything that shapes the output bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .errors import MeapDataError

FORMATS = ("arrow", "webdataset")
KINDS = ("text", "rust")
RUST_TASKS = ("repair", "diagnose", "transcript")
SFT_LAYOUTS = ("rows", "concat")
SPLITS = ("train", "eval")
TEXT_MASK_RATIO = 0.15  # MEAP pre-training (official code)
RUST_MASK_RATIO = 0.1  # MEAP-SFT answer masking (official code)
RUST_EVAL_FRACTION = 0.1  # hashed share of error codes held out when no --eval-codes
# Fields that only shape --kind rust output: left out of a text dataset's config JSON so
# text manifests (and their config hashes) stay what they were before rust existed.
RUST_FIELDS = ("task", "sft_layout", "eval_codes", "eval_fraction", "split")


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` does. Runner options and the output path are deliberately not
    part of it: they must not change the bytes written.

    ``seq_len``: tokens per sample. ``mask_ratio``: fraction of positions masked per
    sample (0 disables masking); None means the kind's default: 0.15 for text and the
    rust transcript task (MEAP pre-training), 0.1 for the rust repair and diagnose tasks
    (MEAP-SFT: the fraction of *answer* tokens masked in the masked copy).
    ``input_bytes_per_shard``: input bytes grouped into one output shard (a shard holds
    about a quarter as many tokens for English text).

    Rust only (see :mod:`meap_data.rust.shards`): ``task`` (repair, diagnose or
    transcript), ``sft_layout`` (rows or concat), the split by primary error code
    (``eval_codes`` held out by name, plus the codes whose hash falls under
    ``eval_fraction``; None means 0.1 without ``eval_codes`` and 0 with them), and
    ``split``, the half of that split this dataset holds. Defaults are resolved at
    construction, so a manifest always records explicit values.
    """

    inputs: tuple[str, ...]
    kind: str = "text"
    text_field: str = "text"
    seq_len: int = 2048
    mask_ratio: float | None = None
    seed: int = 0
    formats: tuple[str, ...] = FORMATS
    pack: bool = True
    mask_special_tokens: bool = True
    input_bytes_per_shard: int = 64 << 20
    tokenize_batch_chars: int = 1 << 20
    extra: dict = field(default_factory=dict)
    task: str = "repair"
    sft_layout: str = "rows"
    eval_codes: tuple[str, ...] = ()
    eval_fraction: float | None = None
    split: str = "train"

    def __post_init__(self):
        # Frozen dataclass: resolve kind-dependent defaults once, so to_json is explicit.
        if self.mask_ratio is None:
            sft = self.kind == "rust" and self.task != "transcript"
            object.__setattr__(self, "mask_ratio", RUST_MASK_RATIO if sft else TEXT_MASK_RATIO)
        if self.eval_fraction is None:
            object.__setattr__(self, "eval_fraction", 0.0 if self.eval_codes else RUST_EVAL_FRACTION)
        # Canonical order and spelling, so "--eval-codes e0382,E0308" and
        # "E0308,E0382" give the same config hash.
        codes = tuple(sorted({c.strip() for c in self.eval_codes if c.strip()}))
        object.__setattr__(self, "eval_codes", codes)

    def validate(self) -> "PrepareConfig":
        if self.seq_len < 2:
            raise MeapDataError(f"--seq-len must be at least 2, got {self.seq_len}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise MeapDataError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise MeapDataError(f"--format takes a comma list of {','.join(FORMATS)}, got {','.join(self.formats)!r}")
        if self.kind not in KINDS:
            raise MeapDataError(f"--kind must be text or rust, got {self.kind!r}")
        if self.task not in RUST_TASKS:
            raise MeapDataError(f"--task must be one of {', '.join(RUST_TASKS)}, got {self.task!r}")
        if self.sft_layout not in SFT_LAYOUTS:
            raise MeapDataError(f"--sft-layout must be rows or concat, got {self.sft_layout!r}")
        if not 0.0 <= self.eval_fraction <= 1.0:
            raise MeapDataError(f"--eval-fraction must be in [0, 1], got {self.eval_fraction}")
        if self.split not in SPLITS:
            raise MeapDataError(f"split must be train or eval, got {self.split!r}")
        return self

    def to_json(self) -> dict:
        data = asdict(self)
        data["inputs"] = list(self.inputs)
        data["formats"] = list(self.formats)
        data["eval_codes"] = list(self.eval_codes)
        if self.kind != "rust":
            for name in RUST_FIELDS:
                del data[name]
        return data

    def hash(self, tokenizer_sha256: str) -> str:
        """sha256 of the canonical JSON of the configuration and the tokenizer's hash."""
        blob = json.dumps({"config": self.to_json(), "tokenizer": tokenizer_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
