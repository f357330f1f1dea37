"""The configuration of a prepare run: everything that shapes the output bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from .errors import MeapDataError

FORMATS = ("arrow", "webdataset")


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` does. Runner options and the output path are deliberately not
    part of it: they must not change the bytes written.

    ``seq_len``: tokens per sample. ``mask_ratio``: fraction of positions masked per
    sample (0 disables masking). ``input_bytes_per_shard``: input bytes grouped into one
    output shard (a shard holds about a quarter as many tokens for English text).
    """

    inputs: tuple[str, ...]
    kind: str = "text"
    text_field: str = "text"
    seq_len: int = 2048
    mask_ratio: float = 0.15
    seed: int = 0
    formats: tuple[str, ...] = FORMATS
    pack: bool = True
    mask_special_tokens: bool = True
    input_bytes_per_shard: int = 64 << 20
    tokenize_batch_chars: int = 1 << 20
    extra: dict = field(default_factory=dict)

    def validate(self) -> "PrepareConfig":
        if self.seq_len < 2:
            raise MeapDataError(f"--seq-len must be at least 2, got {self.seq_len}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise MeapDataError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise MeapDataError(f"--format takes a comma list of {','.join(FORMATS)}, got {','.join(self.formats)!r}")
        if self.kind not in ("text", "rust"):
            raise MeapDataError(f"--kind must be text or rust, got {self.kind!r}")
        return self

    def to_json(self) -> dict:
        data = asdict(self)
        data["inputs"] = list(self.inputs)
        data["formats"] = list(self.formats)
        return data

    def hash(self, tokenizer_sha256: str) -> str:
        """sha256 of the canonical JSON of the configuration and the tokenizer's hash."""
        blob = json.dumps({"config": self.to_json(), "tokenizer": tokenizer_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
