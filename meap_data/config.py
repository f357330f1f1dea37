"""The configuration of a prepare run: everything that shapes the output bytes, and
nothing that does not (runner options, output path, batch sizes of the work)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from .errors import MeapDataError

FORMATS = ("arrow", "webdataset")


@dataclass(frozen=True)
class PrepareConfig:
    """What ``prepare`` does.

    ``kind``: a name from :mod:`meap_data.kinds` (``text``, ``rust``); ``options``: that
    kind's own options (a frozen dataclass with ``to_json``; None means its defaults).
    ``seq_len``: tokens per sample. ``mask_ratio``: the mask rule's ratio (0 disables
    masking); None means the kind's default. ``add_bos``: each document (each fine-tuning
    copy) starts with the tokenizer's beginning-of-document token. ``input_bytes_per_shard``: input bytes
    grouped into one output shard (a shard holds about a quarter as many tokens for
    English text). ``max_document_bytes``: the longest document read, in bytes (a JSON
    line, or a text file after decompression); longer ones are dead letters. :func:`meap_data.kinds.resolve_config` fills the defaults, so a
    manifest always records explicit values.
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
    add_bos: bool = False
    input_bytes_per_shard: int = 64 << 20
    max_document_bytes: int = 64 << 20
    options: Any = None

    def validate(self) -> "PrepareConfig":
        """The checks every kind shares; a kind checks its own options."""
        if self.seq_len < 2:
            raise MeapDataError(f"--seq-len must be at least 2, got {self.seq_len}")
        if self.mask_ratio is None or not 0.0 <= self.mask_ratio < 1.0:
            raise MeapDataError(f"--mask-ratio must be in [0, 1), got {self.mask_ratio}")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise MeapDataError(f"--format takes a comma list of {','.join(FORMATS)}, got {','.join(self.formats)!r}")
        if self.input_bytes_per_shard < 1:
            raise MeapDataError(f"--input-bytes-per-shard must be at least 1, got {self.input_bytes_per_shard}")
        if self.max_document_bytes < 1:
            raise MeapDataError(f"--max-document-bytes must be at least 1, got {self.max_document_bytes}")
        return self

    def to_json(self) -> dict:
        """The canonical JSON: the shared fields plus the kind's options, flattened."""
        data = {k: v for k, v in asdict(self).items() if k != "options"}
        data["inputs"] = list(self.inputs)
        data["formats"] = list(self.formats)
        extra = self.options.to_json() if self.options is not None else {}
        clash = sorted(set(extra) & set(data))
        if clash:
            raise MeapDataError(f"kind {self.kind!r} options {clash} clash with shared configuration fields")
        data.update(extra)
        return data

    def hash(self, tokenizer_sha256: str) -> str:
        """sha256 of the canonical JSON of the configuration and the tokenizer's hash."""
        blob = json.dumps({"config": self.to_json(), "tokenizer": tokenizer_sha256}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
