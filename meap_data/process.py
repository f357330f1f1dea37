"""The core step: one work unit's inputs to one finished shard, free of Beam.

read -> tokenize (``encode_batch_fast``, multi-threaded in Rust) -> pack -> mask -> write.
Beam runs this per unit (:mod:`meap_data.beam`); tests and small jobs call it directly.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import storage
from .config import PrepareConfig
from .documents import Document, Rejected
from .inputs import WorkUnit
from .masking import apply_meap_mask
from .packing import Packer
from .readers import read_range
from .shards import ShardWriter
from .tokenizer import TokenizerInfo

log = logging.getLogger("meap_data")

MASK_BATCH_ROWS = 512


@dataclass
class UnitResult:
    """Counts and files of one finished unit (JSON-able; merged into the manifest)."""

    index: int
    documents_read: int = 0
    documents_written: int = 0
    rejected: dict = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    padding_tokens: int = 0
    masked_tokens: int = 0
    files: dict = field(default_factory=dict)
    rejected_file: dict | None = None
    # --kind rust: records per primary error code in this unit (the manifest's "codes").
    codes: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return dict(self.__dict__)


def prefetch(items: Iterator, depth: int) -> Iterator:
    """Iterate ``items`` in a background thread, up to ``depth`` ahead, in order.

    An exception in the producer is re-raised in the consumer; a consumer that stops
    early releases the producer."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((False, exc))

    thread = threading.Thread(target=produce, name="meap-data-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = buffer.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def make_processor(config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, total_units: int) -> "UnitProcessor":
    """The unit processor for ``config.kind``: text documents, or Rust transcript records."""
    if config.kind == "rust":
        from .rust.shards import TranscriptUnitProcessor

        return TranscriptUnitProcessor(config, tokenizer, output_dir, total_units)
    return UnitProcessor(config, tokenizer, output_dir, total_units)


def rejected_name(index: int) -> str:
    return f"rejected/rejected-{index:05d}.jsonl"


class UnitProcessor:
    """Holds the tokenizer (built once per worker) and processes units into shards."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, total_units: int):
        self.config = config
        self.info = tokenizer
        self.output_dir = output_dir
        self.total_units = total_units
        self.tokenizer = tokenizer.build()
        self.exclude_ids = () if config.mask_special_tokens else (tokenizer.eos_token_id, tokenizer.mask_token_id)

    def documents(self, unit: WorkUnit):
        for frange in unit.ranges:
            yield from read_range(frange, self.config.text_field)

    def _encoded_batches(self, unit: WorkUnit):
        """(documents, encodings, rejected) per batch of about ``tokenize_batch_chars``
        characters, in input order."""
        batch: list[Document] = []
        rejected: list[Rejected] = []
        chars = 0
        for item in self.documents(unit):
            if isinstance(item, Rejected):
                rejected.append(item)
                continue
            batch.append(item)
            chars += len(item.text)
            if chars >= self.config.tokenize_batch_chars:
                yield batch, self._encode(batch), rejected
                batch, rejected, chars = [], [], 0
        yield batch, self._encode(batch), rejected

    def _encode(self, docs: list[Document]) -> list[np.ndarray]:
        if not docs:
            return []
        # encode_batch_fast skips character offsets (unused here): same ids, about a third
        # less CPU per token than encode_batch. Older tokenizers lack it.
        encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)
        encodings = encode([d.text for d in docs], add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int32) for e in encodings]

    def process(self, unit: WorkUnit) -> UnitResult:
        """Write unit ``unit.index``'s shard(s) and dead letters; return its counts.

        Reading and tokenizing run one batch ahead in a thread (``encode_batch`` releases
        the GIL), overlapping packing, masking and writing of the previous batch.
        """
        started = time.perf_counter()
        result = UnitResult(unit.index)
        rejected: list[Rejected] = []
        packer = Packer(self.config.seq_len, self.info.eos_token_id, self.info.pad_token_id, self.config.pack)
        writer = ShardWriter(self.output_dir, unit.index, self.total_units, self.config.formats)
        try:
            for docs, token_ids, batch_rejected in prefetch(self._encoded_batches(unit), depth=2):
                rejected.extend(batch_rejected)
                result.documents_read += len(docs) + len(batch_rejected)
                for doc, ids in zip(docs, token_ids):
                    packer.add(doc.key, ids)
                    result.documents_written += 1
                    if packer.pending_rows() >= MASK_BATCH_ROWS:
                        self._write_ready(packer, result, writer)
            packer.finish()
            self._write_ready(packer, result, writer)
            result.files = writer.close()
        except BaseException:
            writer.abort()
            raise
        self._write_rejected(result, rejected)
        elapsed = time.perf_counter() - started
        log.info(
            "shard %d/%d: %d documents (%d rejected), %d samples, %.2f M tokens in %.1f s",
            unit.index + 1, self.total_units, result.documents_read, len(rejected),
            result.samples, result.tokens / 1e6, elapsed,
        )
        return result

    def _write_rejected(self, result: UnitResult, rejected: list[Rejected]) -> None:
        """Count ``rejected`` by reason into ``result`` and write the unit's dead letters."""
        for r in rejected:
            result.rejected[r.reason] = result.rejected.get(r.reason, 0) + 1
        if rejected:
            rel = rejected_name(result.index)
            body = "".join(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False) + "\n" for r in rejected)
            data = body.encode("utf-8")
            sha = storage.write_bytes_atomic(storage.join(self.output_dir, rel), data)
            result.rejected_file = {"path": rel, "bytes": len(data), "sha256": sha, "records": len(rejected)}
        result.rejected = dict(sorted(result.rejected.items()))

    def _write_ready(self, packer: Packer, result: UnitResult, writer: ShardWriter) -> None:
        packed = packer.drain()
        if packed is None:
            return
        inputs, mask = apply_meap_mask(
            packed.labels,
            packed.lengths,
            packed.keys,
            mask_id=self.info.mask_token_id,
            ratio=self.config.mask_ratio,
            seed=self.config.seed,
            exclude_ids=self.exclude_ids,
            pad_id=self.info.pad_token_id,
        )
        writer.write(inputs, packed.labels, packed.lengths, packed.keys, packed.doc_offsets, packed.doc_keys)
        n_tokens = int(packed.lengths.sum())
        result.samples += len(packed)
        result.tokens += n_tokens
        result.padding_tokens += packed.labels.size - n_tokens
        result.masked_tokens += int(mask.sum())
