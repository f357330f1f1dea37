"""The core step: one work unit's inputs to one finished shard, free of Beam and of any
data kind.

:class:`UnitProcessor` holds what every kind shares: the tokenizer (built once per
worker), the mask rule, the mask-then-write step and the dead letters.
:class:`PackedDocumentsProcessor` is the pre-training path, read -> tokenize
(:mod:`meap_data.encoders`, multi-threaded in Rust) -> pack -> mask -> write, over the
documents a kind reads. Beam runs a processor per unit (:mod:`meap_data.beam`); tests
and small jobs call it directly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from . import storage
from .config import PrepareConfig
from .documents import Document, Rejected
from .inputs import WorkUnit
from .masking import MaskRule, PretrainRule
from .packing import Packer
from .sample_format import SampleRows
from .shards import ShardWriter
from .tokenizer import TokenizerInfo, split_for_encoding

log = logging.getLogger("meap_data")

MASK_BATCH_ROWS = 512
# Characters of documents tokenized per call: large enough for the tokenizer's threads,
# small enough to overlap with packing and writing. Never changes the output bytes.
TOKENIZE_BATCH_CHARS = 1 << 20
# A document longer than this is tokenized in pieces of at most this many characters.
MAX_ENCODE_CHARS = 1 << 20
MAX_PENDING_REJECTED = 10_000
#: Seconds between progress lines of one unit (a huge document can keep a unit busy for
#: minutes; only finished shards are seen outside it).
UNIT_PROGRESS_EVERY_S = 10.0


@dataclass
class UnitResult:
    """Counts and files of one finished unit (JSON-able; merged into the manifest).
    ``extras``: a kind's own per-unit facts, merged by its ``manifest_extras``."""

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
    extras: dict = field(default_factory=dict)

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


def rejected_name(index: int) -> str:
    return f"rejected/rejected-{index:05d}.jsonl"


class DeadLetters:
    """A unit's rejected inputs, streamed to ``rejected/rejected-NNNNN.jsonl`` as they
    come (the file appears atomically at :meth:`close`; memory holds only the counts)."""

    def __init__(self, output_dir: str, index: int):
        self.rel = rejected_name(index)
        self.path = storage.join(output_dir, self.rel)
        self.counts: dict[str, int] = {}
        self.records = 0
        self._stack = ExitStack()
        self._writer = None

    def add(self, rejected: Rejected) -> None:
        if self._writer is None:
            self._writer = self._stack.enter_context(storage.atomic_writer(self.path))
        line = json.dumps(rejected.to_json(), sort_keys=True, ensure_ascii=False) + "\n"
        self._writer.write(line.encode("utf-8"))
        self.counts[rejected.reason] = self.counts.get(rejected.reason, 0) + 1
        self.records += 1

    def close(self, result: "UnitResult") -> None:
        """Commit the file and put the counts and its entry into ``result``."""
        self._stack.close()
        if self._writer is not None:
            result.rejected_file = {"path": self.rel, "bytes": self._writer.bytes_written,
                                    "sha256": self._writer.sha256(), "records": self.records}
        result.rejected = dict(sorted(self.counts.items()))

    def abort(self) -> None:
        try:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
        except RuntimeError:
            pass


class UnitProcessor:
    """Processes units into shards for one dataset: ``process(unit) -> UnitResult``."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, total_units: int,
                 rule: MaskRule):
        self.config = config
        self.info = tokenizer
        self.output_dir = output_dir
        self.total_units = total_units
        self.rule = rule
        # Special-token text inside a document encodes as text (see meap_data.encoders).
        self.encoder = tokenizer.encoder()

    def process(self, unit: WorkUnit) -> UnitResult:
        raise NotImplementedError

    def new_writer(self, unit: WorkUnit) -> ShardWriter:
        return ShardWriter(self.output_dir, unit.index, self.total_units, self.config.formats)

    def mask_and_write(self, writer: ShardWriter, result: UnitResult, rows: SampleRows) -> None:
        """Mask unmasked ``rows`` with the dataset's rule (keyed by the sample keys, the
        pipeline's draw: ``epoch=None``), write them, and count them into ``result``."""
        masked = self.rule.apply(rows.labels, rows.lengths, rows.mask_spans, rows.keys,
                                 mask_id=self.info.mask_token_id, pad_id=self.info.pad_token_id,
                                 seed=self.config.seed, inputs=rows.input_ids)
        writer.write(dataclasses.replace(rows, input_ids=masked.input_ids, labels=masked.labels))
        n_tokens = int(rows.lengths.sum())
        result.samples += len(rows)
        result.tokens += n_tokens
        result.padding_tokens += rows.labels.size - n_tokens
        result.masked_tokens += masked.count

    def log_progress(self, result: UnitResult, started: float, last: list[float]) -> None:
        """A progress line for a unit still running, at most one per
        :data:`UNIT_PROGRESS_EVERY_S` (``last[0]``: when the previous one was logged)."""
        now = time.perf_counter()
        if now - last[0] < UNIT_PROGRESS_EVERY_S:
            return
        last[0] = now
        log.info("shard %d/%d: running, %d documents, %d samples, %.2f M tokens so far (%.2f M tokens/s)",
                 result.index + 1, self.total_units, result.documents_read, result.samples, result.tokens / 1e6,
                 result.tokens / 1e6 / max(now - started, 1e-9))

    def log_done(self, result: UnitResult, rejected: int, started: float, what: str = "documents") -> None:
        log.info(
            "shard %d/%d: %d %s (%d rejected), %d samples, %.2f M tokens in %.1f s",
            result.index + 1, self.total_units, result.documents_read, what, rejected,
            result.samples, result.tokens / 1e6, time.perf_counter() - started,
        )


def pretrain_rule(config: PrepareConfig, tokenizer: TokenizerInfo) -> PretrainRule:
    """The rule of packed pre-training samples; ``--no-mask-special-tokens`` keeps the
    end-of-document and mask tokens unmasked."""
    specials = (tokenizer.eos_token_id, tokenizer.mask_token_id, tokenizer.bos_token_id)
    exclude = () if config.mask_special_tokens else tuple(i for i in specials if i is not None)
    return PretrainRule(ratio=config.mask_ratio, exclude_ids=exclude)


class PackedDocumentsProcessor(UnitProcessor):
    """Pre-training samples: documents tokenized, packed into ``seq_len`` rows with
    their boundaries, masked by :func:`pretrain_rule`. The kind gives ``documents(unit)``:
    Documents and Rejected in input order."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, total_units: int,
                 documents, tokenize_batch_chars: int = TOKENIZE_BATCH_CHARS):
        super().__init__(config, tokenizer, output_dir, total_units, pretrain_rule(config, tokenizer))
        self.documents = documents
        self.tokenize_batch_chars = tokenize_batch_chars

    def _encoded_batches(self, unit: WorkUnit):
        """(items, token ids per document) per batch of about ``tokenize_batch_chars``
        characters, in input order; items are the documents and rejections, interleaved
        as read. A batch also closes after ``MAX_PENDING_REJECTED`` rejections, so a long
        run of bad lines is never held in memory."""
        batch: list[Document | Rejected] = []
        chars = rejected = 0
        for item in self.documents(unit):
            batch.append(item)
            if isinstance(item, Rejected):
                rejected += 1
            else:
                chars += len(item.text)
            if chars >= self.tokenize_batch_chars or rejected >= MAX_PENDING_REJECTED:
                yield batch, self._encode([d for d in batch if isinstance(d, Document)])
                batch, chars, rejected = [], 0, 0
        yield batch, self._encode([d for d in batch if isinstance(d, Document)])

    def _encode(self, docs: list[Document]) -> list[np.ndarray]:
        if not docs:
            return []
        encode = self.encoder.encode
        small = [d.text for d in docs if len(d.text) <= MAX_ENCODE_CHARS]
        if len(small) == len(docs):
            return encode(small)
        encoded = iter(encode(small))
        out = []
        for d in docs:
            if len(d.text) <= MAX_ENCODE_CHARS:
                out.append(next(encoded))
            else:
                # A huge document: bounded pieces, one call each (see split_for_encoding
                # for why the ids equal whole-text encoding).
                out.append(np.concatenate([ids for piece in split_for_encoding(d.text, MAX_ENCODE_CHARS)
                                           for ids in encode([piece])]))
        return out

    def process(self, unit: WorkUnit) -> UnitResult:
        """Write unit ``unit.index``'s shard(s) and dead letters; return its counts.

        Reading and tokenizing run one batch ahead in a thread (both encoders release
        the GIL), overlapping packing, masking and writing of the previous batch.
        """
        started = time.perf_counter()
        result = UnitResult(unit.index)
        dead = DeadLetters(self.output_dir, unit.index)
        packer = Packer(self.config.seq_len, self.info.eos_token_id, self.info.pad_token_id, self.config.pack,
                        self.info.bos_token_id if self.config.add_bos else None)
        writer = self.new_writer(unit)
        last_progress = [started]
        try:
            for items, token_ids in prefetch(self._encoded_batches(unit), depth=2):
                ids_of = iter(token_ids)
                for item in items:
                    if isinstance(item, Rejected):
                        dead.add(item)
                        result.documents_read += 1
                        continue
                    packer.add(item.key, next(ids_of), origin=item.origin or None, last=item.last)
                    if item.last:  # a document given in pieces counts once
                        result.documents_read += 1
                        result.documents_written += 1
                    if packer.pending_rows() >= MASK_BATCH_ROWS:
                        self._write_ready(packer, result, writer)
                        self.log_progress(result, started, last_progress)
            packer.finish()
            self._write_ready(packer, result, writer)
            result.files = writer.close()
        except BaseException:
            writer.abort()
            dead.abort()
            raise
        dead.close(result)
        self.log_done(result, dead.records, started)
        return result

    def _write_ready(self, packer: Packer, result: UnitResult, writer: ShardWriter) -> None:
        """Mask and write the finished rows, :data:`MASK_BATCH_ROWS` at a time: one huge
        document yields many thousand rows at once, and whole they would cost memory in
        proportion to the document (the bytes written are the same either way)."""
        while (rows := packer.drain(MASK_BATCH_ROWS)) is not None:
            rows.mask_spans = PretrainRule.spans(rows.lengths)
            self.mask_and_write(writer, result, rows)
