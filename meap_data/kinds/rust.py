"""The ``rust`` kind: transcript records to train and eval datasets, free of Beam.

Transcript JSONL (``schemas/rust_transcript.schema.json``, from ``meap-data rust
harvest`` / ``rust error-index``) becomes shards of the same dataset layout as text, so
the loader, ``inspect`` and ``verify`` work unchanged. Three tasks (``--task``):

- ``repair`` (default): prompt = source + compiler output, answer = the fixed source.
  A record without ``fixed_source`` is rejected as ``no_fix`` rather than silently turned
  into a diagnose example: a repair dataset holds only repair examples, and the rejected
  file names the records a ``--task diagnose`` run would use.
- ``diagnose``: prompt = the source, answer = what the compiler printed.
- ``transcript``: the record as one shell-session text, packed and masked exactly like
  text (the ``pretrain`` rule).

The fine-tuning tasks use the ``sft`` rule (:class:`meap_data.masking.SftRule`): a clean
copy and, for answers over 50 tokens, a masked copy, as consecutive samples (``rows``) or
one sample (``concat``, ``doc_offsets`` marking where the second copy starts). Examples
are not packed by default: each is one sample padded to ``seq_len``; one that does not fit is
rejected as ``too_long`` (truncating a fix would teach a wrong fix). ``--sft-pack`` places
several examples' copies end to end in one sample instead (whole copies, document
boundaries kept), so padding falls from most of a sample to its tail.

The split: every record has a *primary code* (:func:`primary_code`); a code is held out
for evaluation when named in ``eval_codes`` or when its hash falls under
``eval_fraction`` (:func:`is_eval_code`), so no code lands in both datasets. With
``--split-by crate`` a record cut from a crate (``crate`` field) is held out by the same
hash of its crate's name instead, so no crate lands in both (records without a crate
still follow their code); a repair benchmark then asks for fixes in code it never saw. Records
rejected before their code is known (bad JSON, schema errors, time-outs, no diagnostics)
are counted in the train dataset only, so the two manifests' ``documents_read`` add up
to the number of input records.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .. import storage
from ..config import PrepareConfig
from ..documents import Document, Rejected
from ..errors import MeapDataError
from ..inputs import FileRange, WorkUnit
from ..keys import hash64, sample_key
from ..masking import PRETRAIN_MASK_RATIO, SFT_LAYOUTS, SFT_MASK_RATIO, SftCopy, SftRule
from ..process import DeadLetters, PackedDocumentsProcessor, UnitProcessor, UnitResult, pretrain_rule
from ..rust.records import NO_CODE, iter_records, primary_code  # noqa: F401 (re-exported)
from ..rust.render import diagnose, repair, transcript_text
from ..sample_format import IGNORE_INDEX, SampleRows, Spans
from .base import DataKind, DatasetTarget

TASKS = ("repair", "diagnose", "transcript")
SPLITS = ("train", "eval")
SPLIT_BY = ("code", "crate")
#: Share of primary codes held out by hash when no ``--eval-codes`` are named.
EVAL_FRACTION = 0.1
#: Records tokenized per encoder call (the tokenizer threads within a batch).
SFT_BATCH_RECORDS = 256
_SPLIT_BUCKETS = 1_000_000


@dataclass(frozen=True)
class RustOptions:
    """``task``: repair, diagnose or transcript. ``sft_layout``: rows or concat.
    ``eval_codes``: primary codes held out by name; ``eval_fraction``: share held out by
    hash (None: 0.1 without ``eval_codes``, 0 with them). ``split``: the half of the
    split a dataset holds (set per target). ``sft_pack``: several fine-tuning examples per
    sample, end to end with document boundaries (default: one per sample). ``split_by``:
    ``code``, or ``crate`` (records cut from a crate follow their crate, the others their
    code; crate names may be listed in ``eval_codes`` too)."""

    task: str = "repair"
    sft_layout: str = "rows"
    eval_codes: tuple[str, ...] = ()
    eval_fraction: float | None = None
    split: str = "train"
    sft_pack: bool = False
    split_by: str = "code"

    def __post_init__(self):
        # Canonical order and spelling, so "--eval-codes E0382,E0308" and
        # "E0308,E0382" give the same config hash.
        codes = tuple(sorted({c.strip() for c in self.eval_codes if c.strip()}))
        object.__setattr__(self, "eval_codes", codes)
        if self.eval_fraction is None:
            object.__setattr__(self, "eval_fraction", 0.0 if codes else EVAL_FRACTION)

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["eval_codes"] = list(self.eval_codes)
        return data


# ---------------------------------------------------------------------- the split


def is_eval_code(code: str, eval_codes: tuple[str, ...] | frozenset[str], eval_fraction: float) -> bool:
    """Whether ``code`` is held out: named in ``eval_codes``, or its 64-bit hash lands in
    the first ``eval_fraction`` of the buckets. A pure function of the code: the split
    never depends on the seed, the inputs' order or which other codes exist."""
    if code in eval_codes:
        return True
    return hash64("meap-eval-split", code) % _SPLIT_BUCKETS < round(eval_fraction * _SPLIT_BUCKETS)


# ---------------------------------------------------------------------- reading


class SplitRecords:
    """One unit's records of one split, as (key, record) or Rejected, in input order;
    counts records per primary code as it goes (the manifest's ``codes``)."""

    def __init__(self, options: RustOptions, max_bytes: int):
        self.options = options
        self.max_bytes = max_bytes
        self.codes: dict[str, int] = {}
        self.crates: dict[str, int] = {}

    def reset(self) -> None:
        self.codes, self.crates = {}, {}

    def extras(self) -> dict[str, dict[str, int]]:
        return {"codes": dict(sorted(self.codes.items())), "crates": dict(sorted(self.crates.items()))}

    def __call__(self, unit: WorkUnit) -> Iterator[tuple[str, dict[str, Any]] | Rejected]:
        opts = self.options
        for frange in unit.ranges:
            for record, rejected in iter_records(frange, self.max_bytes):
                if rejected is not None:
                    if opts.split == "train":  # no code known: train counts it
                        yield rejected
                    continue
                code = primary_code(record)
                crate = (record.get("crate") or {}).get("name")
                if opts.split_by == "crate" and crate:
                    held_out = is_eval_code(f"crate:{crate}", (), opts.eval_fraction) or crate in opts.eval_codes
                else:
                    held_out = is_eval_code(code, opts.eval_codes, opts.eval_fraction)
                if ("eval" if held_out else "train") == opts.split:
                    self.codes[code] = self.codes.get(code, 0) + 1
                    if crate:
                        self.crates[crate] = self.crates.get(crate, 0) + 1
                    yield record["key"], record

    def documents(self, unit: WorkUnit) -> Iterator[Document | Rejected]:
        """The records as transcript documents (the ``transcript`` task)."""
        for item in self(unit):
            yield item if isinstance(item, Rejected) else Document(item[0], transcript_text(item[1]))


# ---------------------------------------------------------------------- processing


class TranscriptProcessor(PackedDocumentsProcessor):
    """``--task transcript``: records as packed pre-training text."""

    def __init__(self, config, tokenizer, output_dir, total_units):
        self.records = SplitRecords(config.options, config.max_document_bytes)
        super().__init__(config, tokenizer, output_dir, total_units, self.records.documents)

    def process(self, unit: WorkUnit) -> UnitResult:
        self.records.reset()
        result = super().process(unit)
        result.extras = self.records.extras()
        return result


class SftProcessor(UnitProcessor):
    """``--task repair|diagnose``: one unpacked MEAP-SFT example per sample (or two, the
    clean and the masked copy, with layout ``rows``)."""

    def __init__(self, config, tokenizer, output_dir, total_units, rule: SftRule):
        super().__init__(config, tokenizer, output_dir, total_units, rule)
        self.records = SplitRecords(config.options, config.max_document_bytes)
        self.render = repair if config.options.task == "repair" else diagnose

    def process(self, unit: WorkUnit) -> UnitResult:
        started = time.perf_counter()
        self.records.reset()
        self.packer = CopyPacker(self.config.seq_len, self.config.options.sft_pack)
        result = UnitResult(unit.index)
        dead = DeadLetters(self.output_dir, unit.index)
        writer = self.new_writer(unit)
        try:
            batch: list[tuple[str, tuple[str, str]]] = []
            for item in self.records(unit):
                result.documents_read += 1
                if isinstance(item, Rejected):
                    dead.add(item)
                    continue
                key, record = item
                try:
                    batch.append((key, self.render(record)))
                except MeapDataError as exc:  # repair: the record has no fixed_source
                    dead.add(Rejected(key, "no_fix", str(exc)))
                    continue
                if len(batch) >= SFT_BATCH_RECORDS:
                    self._write(batch, result, writer, dead)
                    batch = []
            self._write(batch, result, writer, dead)
            self._write_rows(self.packer.drain(final=True), result, writer)
            result.files = writer.close()
        except BaseException:
            writer.abort()
            dead.abort()
            raise
        dead.close(result)
        result.extras = self.records.extras()
        self.log_done(result, dead.records, started, what=f"{self.config.options.split} records")
        return result

    def _write(self, batch: list[tuple[str, tuple[str, str]]], result: UnitResult, writer, dead: DeadLetters) -> None:
        """Tokenize a batch of (prompt, answer) pairs, build their copies, place those
        that fit ``seq_len`` into samples, and mask and write the finished samples."""
        if not batch:
            return
        seq_len = self.config.seq_len
        # Prompt and answer encoded apart, so their boundary is a token boundary.
        prompts = [ids.tolist() for ids in self.encoder.encode([p for _, (p, _) in batch])]
        answers = [ids.tolist() for ids in self.encoder.encode([a for _, (_, a) in batch])]
        bos = [self.info.bos_token_id] if self.config.add_bos else []
        for (key, _), prompt, answer in zip(batch, prompts, answers):
            copies = self.rule.copies(bos + prompt, answer, self.info.eos_token_id)
            longest = max(len(c.input_ids) for c in copies)
            if longest > seq_len:
                dead.add(Rejected(key, "too_long", (
                    f"{longest} tokens ({len(prompt)} prompt + {len(answer)} answer + eos"
                    f"{', twice: concat layout' if len(copies[0].doc_offsets) == 2 else ''}) > --seq-len {seq_len}; "
                    "raise --seq-len to keep it")))
                continue
            result.documents_written += 1
            for copy in copies:
                self.packer.add(key, copy)
        self._write_rows(self.packer.drain(), result, writer)

    def _write_rows(self, rows: list[list[tuple[str, SftCopy]]], result: UnitResult, writer) -> None:
        """Mask and write samples, each a list of (record key, copy) placed end to end."""
        if not rows:
            return
        seq_len, task = self.config.seq_len, self.config.options.task
        inputs = np.full((len(rows), seq_len), self.info.pad_token_id, dtype=np.int32)
        labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int32)
        lengths = np.empty(len(rows), dtype=np.int32)
        keys, doc_offsets, doc_keys, spans = [], [], [], []
        for i, row in enumerate(rows):
            at, offsets, owners, pairs = 0, [], [], []
            for key, c in row:
                n = len(c.input_ids)
                inputs[i, at:at + n] = c.input_ids
                labels[i, at:at + n] = c.labels
                offsets += [at + o for o in c.doc_offsets]
                owners += [key] * len(c.doc_offsets)
                if c.mask_span[1] > c.mask_span[0]:
                    pairs += [at + c.mask_span[0], at + c.mask_span[1]]
                at += n
            first_key, first = row[0]
            keys.append(sample_key(f"{first_key}/{task}/{first.copy}", 0))
            lengths[i] = at
            doc_offsets.append(offsets)
            doc_keys.append(owners)
            spans.append(pairs)
        self.mask_and_write(writer, result, SampleRows(inputs, labels, lengths, Spans.from_lists(spans), keys,
                                                       doc_offsets, doc_keys))


class CopyPacker:
    """Places fine-tuning copies into samples of ``seq_len`` tokens. Unpacked: one copy
    (one example for ``concat``) per sample. Packed (``--sft-pack``): first fit over a
    window of ``open_rows`` (64) samples being filled: a copy goes to the first open sample
    with room, else to a new one (the oldest open sample is finished when the window is
    full). A copy is never split. In input order, so samples never depend on how
    records were batched."""

    def __init__(self, seq_len: int, pack: bool, open_rows: int = 64):
        self.seq_len, self.pack, self.open_rows = seq_len, pack, open_rows
        self._done: list[list[tuple[str, SftCopy]]] = []
        self._open: list[tuple[int, list[tuple[str, SftCopy]]]] = []  # (used tokens, copies)

    def add(self, key: str, copy: SftCopy) -> None:
        n = len(copy.input_ids)
        if not self.pack:
            self._done.append([(key, copy)])
            return
        for i, (used, row) in enumerate(self._open):
            if used + n <= self.seq_len:
                row.append((key, copy))
                self._open[i] = (used + n, row)
                return
        if len(self._open) >= self.open_rows:
            self._done.append(self._open.pop(0)[1])
        self._open.append((n, [(key, copy)]))

    def drain(self, final: bool = False) -> list[list[tuple[str, SftCopy]]]:
        """Finished samples (all, the open ones included, when ``final``)."""
        if final:
            self._done += [row for _, row in self._open]
            self._open = []
        rows, self._done = self._done, []
        return rows


# ---------------------------------------------------------------------- the kind


class RustKind(DataKind):
    name = "rust"
    options_type = RustOptions

    def default_mask_ratio(self, config: PrepareConfig) -> float:
        return PRETRAIN_MASK_RATIO if config.options.task == "transcript" else SFT_MASK_RATIO

    def validate(self, config: PrepareConfig) -> None:
        opts = config.options
        if opts.task not in TASKS:
            raise MeapDataError(f"--task must be one of {', '.join(TASKS)}, got {opts.task!r}")
        if opts.sft_layout not in SFT_LAYOUTS:
            raise MeapDataError(f"--sft-layout must be rows or concat, got {opts.sft_layout!r}")
        if not 0.0 <= opts.eval_fraction <= 1.0:
            raise MeapDataError(f"--eval-fraction must be in [0, 1], got {opts.eval_fraction}")
        if opts.split_by not in SPLIT_BY:
            raise MeapDataError(f"--split-by must be one of {', '.join(SPLIT_BY)}, got {opts.split_by!r}")
        if opts.split not in SPLITS:
            raise MeapDataError(f"split must be train or eval, got {opts.split!r}")

    def add_arguments(self, parser: argparse.ArgumentParser) -> list[str]:
        group = parser.add_argument_group(
            "--kind rust", "transcript JSONL from 'meap-data rust harvest' / 'rust error-index'; writes two "
            "datasets, DIR/train and DIR/eval, split by each record's primary error code")
        group.add_argument("--task", choices=TASKS, default="repair",
                           help="repair: source + compiler output -> fixed source (records without a fix are "
                           "rejected as no_fix); diagnose: source -> compiler output; transcript: the record as "
                           "packed pre-training text (default: repair)")
        group.add_argument("--sft-layout", choices=SFT_LAYOUTS, default="rows",
                           help="MEAP-SFT clean and masked copies as consecutive samples (rows) or one "
                           "sample holding both (concat) (default: rows)")
        group.add_argument("--eval-codes", default="", metavar="E0308,E0382,...",
                           help="primary codes held out for DIR/eval by name (comma list)")
        group.add_argument("--eval-fraction", type=float, default=None, metavar="F",
                           help="share of primary codes held out by a hash of the code (default: 0.1 without "
                           "--eval-codes, 0 with them; both together hold out the union)")
        group.add_argument("--split-by", choices=SPLIT_BY, default="code",
                           help="hold out by primary code, or by crate: records cut from a crate (rust mutate "
                           "--crates) go where their crate goes, so no crate is in both datasets; the others still "
                           "split by code; --eval-codes may then name crates too (default: code)")
        group.add_argument("--sft-pack", action="store_true",
                           help="pack several fine-tuning examples into each sample (document boundaries kept, "
                           "prompts unsupervised) instead of padding every example to --seq-len")
        return ["task", "sft_layout", "eval_codes", "eval_fraction", "sft_pack", "split_by"]

    def options_from_args(self, args: argparse.Namespace) -> RustOptions:
        return RustOptions(task=args.task, sft_layout=args.sft_layout,
                           eval_codes=tuple(c for c in args.eval_codes.split(",") if c.strip()),
                           eval_fraction=args.eval_fraction, sft_pack=args.sft_pack, split_by=args.split_by)

    def training_documents(self, files, config):
        """Transcript texts of every usable record (both splits: the vocabulary sees eval
        text, the model does not)."""
        for f in files:
            for record, _ in iter_records(FileRange(f)):
                if record is not None:
                    yield Document(record["key"], transcript_text(record))

    def mask_rule(self, config, tokenizer):
        if config.options.task == "transcript":
            return pretrain_rule(config, tokenizer)
        return SftRule(ratio=config.mask_ratio, layout=config.options.sft_layout)

    def targets(self, config, output_dir):
        return [DatasetTarget(split, dataclasses.replace(config, options=dataclasses.replace(config.options, split=split)),
                              storage.join(output_dir, split)) for split in SPLITS]

    def make_processor(self, config, tokenizer, output_dir, total_units):
        if config.options.task == "transcript":
            return TranscriptProcessor(config, tokenizer, output_dir, total_units)
        return SftProcessor(config, tokenizer, output_dir, total_units, self.mask_rule(config, tokenizer))

    def manifest_extras(self, config, results):
        # Which primary codes this split holds (records per code), so anyone can check
        # that train and eval share none without reading the shards.
        out: dict[str, dict[str, int]] = {"codes": {}, "crates": {}}
        for r in results:
            for field, counts in out.items():
                for name, n in r.get("extras", {}).get(field, {}).items():
                    counts[name] = counts.get(name, 0) + n
        return {field: dict(sorted(counts.items())) for field, counts in out.items()}

    def describe(self, manifest):
        codes = list(manifest.get("codes", {}))
        shown = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")
        crates = manifest.get("crates") or {}
        return f"{len(codes)} primary codes ({shown})" + (f", {len(crates)} crates" if crates else "")
