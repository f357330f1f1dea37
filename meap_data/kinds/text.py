"""The ``text`` kind: raw documents (JSON lines, Parquet, datasets, plain files),
packed and masked for MEAP pre-training."""

from __future__ import annotations

from ..inputs import FileRange
from ..masking import PRETRAIN_MASK_RATIO
from ..process import PackedDocumentsProcessor, pretrain_rule
from ..readers import read_range
from .base import DataKind


class TextKind(DataKind):
    name = "text"

    def default_mask_ratio(self, config):
        return PRETRAIN_MASK_RATIO

    def training_documents(self, files, config):
        return (d for f in files for d in read_range(FileRange(f), config.text_field, config.max_document_bytes))

    def mask_rule(self, config, tokenizer):
        return pretrain_rule(config, tokenizer)

    def make_processor(self, config, tokenizer, output_dir, total_units):
        def documents(unit):
            for frange in unit.ranges:
                yield from read_range(frange, config.text_field, config.max_document_bytes)

        return PackedDocumentsProcessor(config, tokenizer, output_dir, total_units, documents)
