"""Transcript records to dataset shards: the ``--kind rust`` unit processor, free of Beam.

One work unit of transcript JSONL (``schemas/rust_transcript.schema.json``) becomes one
shard of the same dataset layout as text (:class:`meap_data.shards.ShardWriter`), so the
loader, ``inspect`` and ``verify`` work unchanged. Three tasks (``--task``):

- ``repair`` (default): prompt = source + compiler output, answer = the fixed source.
  A record without ``fixed_source`` is rejected as ``no_fix`` rather than silently turned
  into a diagnose example: a repair dataset holds only repair examples, and the rejected
  file names the records a ``--task diagnose`` run would use.
- ``diagnose``: prompt = the source, answer = what the compiler printed.
- ``transcript``: the record as one shell-session text, packed and masked exactly like
  text (``apply_meap_mask``, MEAP pre-training).

The SFT tasks follow MEAP-SFT (:func:`meap_data.rust.masking.meap_sft`): a clean copy
(prompt labels -100, answer + eos supervised) and, for answers over 50 tokens, a masked
copy (``max(1, int(n * mask_ratio))`` answer tokens masked, labels only there). Layout
``rows``: the copies are consecutive samples; ``concat``: one sample holding both, its
``doc_offsets`` marking where the second starts. Samples are never packed: each is one
example padded to ``seq_len`` (padding labels -100); an example that does not fit is
rejected as ``too_long`` (truncating a fix would teach a wrong fix).

The split: every record has a *primary code* (:func:`primary_code`); a code is held out
for evaluation when named in ``eval_codes`` or when its hash falls under
``eval_fraction`` (:func:`is_eval_code`), so no code lands in both datasets. Records
rejected before their code is known (bad JSON, schema errors, time-outs, no diagnostics)
are counted in the train dataset only, so the two manifests' ``documents_read`` add up
to the number of input records.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Iterator

import numpy as np

from meap_data.config import PrepareConfig
from meap_data.documents import Document, Rejected
from meap_data.errors import MeapDataError
from meap_data.inputs import FileRange, InputFile, WorkUnit
from meap_data.keys import hash64, sample_key
from meap_data.process import UnitProcessor, UnitResult
from meap_data.readers import json_lines
from meap_data.rust.masking import IGNORE_INDEX, MIN_ANSWER_TOKENS, SftRow, meap_sft
from meap_data.rust.records import validate_record
from meap_data.rust.render import diagnose_layout, repair_layout, transcript_text
from meap_data.shards import ShardWriter

log = logging.getLogger("meap_data")

#: The primary code of a record whose diagnostics carry no code at all (parse errors).
NO_CODE = "none"
#: Records tokenized per ``encode_batch`` call (the tokenizer threads within a batch).
SFT_BATCH_RECORDS = 256
_SPLIT_BUCKETS = 1_000_000


# ---------------------------------------------------------------------- the split


def primary_code(record: dict[str, Any]) -> str:
    """The code a record is about: its first error's code, else the example's expected
    code, else its first code of any level (a lint name), else :data:`NO_CODE`."""
    diagnostics = record.get("diagnostics") or []
    for d in diagnostics:
        if str(d.get("level", "")).startswith("error") and d.get("code"):
            return d["code"]
    if record.get("expected_code"):
        return record["expected_code"]
    for d in diagnostics:
        if d.get("code"):
            return d["code"]
    return NO_CODE


def is_eval_code(code: str, eval_codes: tuple[str, ...] | frozenset[str], eval_fraction: float) -> bool:
    """Whether ``code`` is held out: named in ``eval_codes``, or its 64-bit hash lands in
    the first ``eval_fraction`` of the buckets. A pure function of the code: the split
    never depends on the seed, the inputs' order or which other codes exist."""
    if code in eval_codes:
        return True
    return hash64("meap-eval-split", code) % _SPLIT_BUCKETS < round(eval_fraction * _SPLIT_BUCKETS)


def split_of(code: str, config: PrepareConfig) -> str:
    """``"eval"`` or ``"train"`` for a record with primary code ``code``."""
    return "eval" if is_eval_code(code, config.eval_codes, config.eval_fraction) else "train"


# ---------------------------------------------------------------------- reading


def iter_records(frange: FileRange) -> Iterator[tuple[dict[str, Any] | None, Rejected | None]]:
    """(record, None) for each usable record of one input range, (None, Rejected) else.

    Reasons: ``invalid_utf8``, ``invalid_json``, ``invalid_record`` (fails the schema),
    ``timed_out`` (the compiler ran past its limit: no output to learn from) and
    ``no_diagnostics`` (it compiled cleanly); a whole file that is not JSON lines (a
    ``.rs`` source given by mistake) is one ``not_jsonl``. Compressed files (.gz, .zst)
    are read too.
    """
    f = frange.file
    if f.kind != "jsonl":
        yield None, Rejected(f.relpath, "not_jsonl", (
            f"{f.kind} input: --kind rust reads transcript JSON lines (.jsonl, optionally .gz/.zst); "
            "record sources first with 'meap-data rust harvest SRC... --output FILE.jsonl'"))
        return
    try:
        for item in json_lines(frange):
            if isinstance(item, Rejected):
                yield None, item
                continue
            where, record = item
            problem = validate_record(record)
            if problem is not None:
                yield None, Rejected(where, "invalid_record", f"{problem}; see schemas/rust_transcript.schema.json")
                continue
            key = record["key"]
            if record["timed_out"]:
                yield None, Rejected(key, "timed_out", f"{where}: the compiler ran past {record.get('time_limit_s', '?')} s")
            elif not record["diagnostics"]:
                yield None, Rejected(key, "no_diagnostics", f"{where}: the compiler printed no diagnostics")
            else:
                yield record, None
    except OSError as exc:
        yield None, Rejected(f.relpath, "unreadable_file", f"{type(exc).__name__}: {exc}")


def training_documents(files: list[InputFile]) -> Iterator[Document]:
    """Transcript texts of every usable record, for training a tokenizer on the inputs
    (both splits: the vocabulary sees eval text, the model does not)."""
    for f in files:
        for record, _ in iter_records(FileRange(f)):
            if record is not None:
                yield Document(record["key"], transcript_text(record))


# ---------------------------------------------------------------------- processing


class TranscriptUnitProcessor(UnitProcessor):
    """Writes one unit's records of ``config.split`` as one shard (``process(unit)``).

    ``transcript`` reuses the text path (packing, ``apply_meap_mask``) through
    :meth:`documents`; ``repair`` and ``diagnose`` write one unpacked SFT example per
    sample (:meth:`process`).
    """

    def _records(self, unit: WorkUnit) -> Iterator[tuple[str, dict[str, Any]] | Rejected]:
        """This split's records as (key, record), and the rejections it counts, in input order."""
        for frange in unit.ranges:
            for record, rejected in iter_records(frange):
                if rejected is not None:
                    if self.config.split == "train":  # no code known: train counts it
                        yield rejected
                else:
                    code = primary_code(record)
                    if split_of(code, self.config) == self.config.split:
                        self._codes[code] = self._codes.get(code, 0) + 1
                        yield record["key"], record

    def documents(self, unit: WorkUnit) -> Iterator[Document | Rejected]:
        for item in self._records(unit):
            yield item if isinstance(item, Rejected) else Document(item[0], transcript_text(item[1]))

    def process(self, unit: WorkUnit) -> UnitResult:
        self._codes: dict[str, int] = {}  # filled by _records as the unit is read
        if self.config.task == "transcript":
            result = super().process(unit)
        else:
            result = self._process_sft(unit)
        result.codes = dict(sorted(self._codes.items()))
        return result

    def _process_sft(self, unit: WorkUnit) -> UnitResult:
        started = time.perf_counter()
        result = UnitResult(unit.index)
        rejected: list[Rejected] = []
        render = repair_layout if self.config.task == "repair" else diagnose_layout
        writer = ShardWriter(self.output_dir, unit.index, self.total_units, self.config.formats)
        try:
            batch: list[tuple[str, Any]] = []
            for item in self._records(unit):
                result.documents_read += 1
                if isinstance(item, Rejected):
                    rejected.append(item)
                    continue
                key, record = item
                try:
                    layout = render(record)
                except MeapDataError as exc:  # repair_layout: the record has no fixed_source
                    rejected.append(Rejected(key, "no_fix", str(exc)))
                    continue
                batch.append((key, layout))
                if len(batch) >= SFT_BATCH_RECORDS:
                    self._write_sft(batch, result, writer, rejected)
                    batch = []
            self._write_sft(batch, result, writer, rejected)
            result.files = writer.close()
        except BaseException:
            writer.abort()
            raise
        self._write_rejected(result, rejected)
        log.info(
            "%s shard %d/%d: %d records (%d rejected), %d samples, %.2f M tokens in %.1f s",
            self.config.split, unit.index + 1, self.total_units, result.documents_read, len(rejected),
            result.samples, result.tokens / 1e6, time.perf_counter() - started,
        )
        return result

    def _rows(self, key: str, prompt_ids: list[int], answer_ids: list[int]) -> list[SftRow]:
        # --mask-ratio 0 means no masking, as for text: only the clean copy.
        min_answer = MIN_ANSWER_TOKENS if self.config.mask_ratio > 0 else sys.maxsize
        return meap_sft(
            prompt_ids, answer_ids, eos_id=self.info.eos_token_id, mask_id=self.info.mask_token_id,
            seed=self.config.seed, key=f"{key}/{self.config.task}", ratio=self.config.mask_ratio,
            min_answer_tokens=min_answer, layout=self.config.sft_layout,
        )

    def _write_sft(self, batch: list[tuple[str, Any]], result: UnitResult, writer: ShardWriter,
                   rejected: list[Rejected]) -> None:
        """Tokenize a batch of layouts, build their rows, write those that fit ``seq_len``."""
        if not batch:
            return
        seq_len = self.config.seq_len
        # Prompt and answer encoded apart, so their boundary is a token boundary.
        prompts = self.tokenizer.encode_batch([layout.prompt for _, layout in batch], add_special_tokens=False)
        answers = self.tokenizer.encode_batch([layout.response for _, layout in batch], add_special_tokens=False)
        samples: list[tuple[str, SftRow]] = []
        for (key, _), prompt, answer in zip(batch, prompts, answers):
            rows = self._rows(key, prompt.ids, answer.ids)
            longest = max(len(row.input_ids) for row in rows)
            if longest > seq_len:
                rejected.append(Rejected(key, "too_long", (
                    f"{longest} tokens ({len(prompt.ids)} prompt + {len(answer.ids)} answer + eos"
                    f"{', twice: concat layout' if len(rows[0].lengths) == 2 else ''}) > --seq-len {seq_len}; "
                    "raise --seq-len to keep it")))
                continue
            result.documents_written += 1
            samples.extend((key, row) for row in rows)
        if not samples:
            return
        inputs = np.full((len(samples), seq_len), self.info.pad_token_id, dtype=np.int32)
        labels = np.full((len(samples), seq_len), IGNORE_INDEX, dtype=np.int32)
        lengths = np.empty(len(samples), dtype=np.int32)
        keys, doc_offsets, doc_keys = [], [], []
        for i, (key, row) in enumerate(samples):
            n = len(row.input_ids)
            inputs[i, :n] = row.input_ids
            labels[i, :n] = row.labels
            lengths[i] = n
            keys.append(sample_key(f"{key}/{self.config.task}/{row.copy}", 0))
            doc_offsets.append([0, row.lengths[0]] if len(row.lengths) == 2 else [0])
            doc_keys.append([key] * len(row.lengths))
        writer.write(inputs, labels, lengths, keys, doc_offsets, doc_keys)
        result.samples += len(samples)
        result.tokens += int(lengths.sum())
        result.padding_tokens += inputs.size - int(lengths.sum())
        # Masked positions are those whose input is the mask token and whose label is kept.
        result.masked_tokens += int(((inputs == self.info.mask_token_id) & (labels != IGNORE_INDEX)).sum())
