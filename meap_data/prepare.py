"""``meap-data prepare``: plan, set up the output directory and tokenizer, run the Beam
pipeline, and summarise. ``pipelines/corpus_to_shards.py`` runs the same function.

``--kind rust`` writes two complete datasets, ``DIR/train`` and ``DIR/eval`` (split by
primary error code, see :mod:`meap_data.rust.shards`), from one pipeline run and one
tokenizer; each has its own manifest, so the loader and ``verify`` take either as is."""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field, replace

from . import storage
from .config import PrepareConfig
from .errors import MeapDataError
from .inputs import expand_inputs, plan_units
from .manifest import MANIFEST, RUN_INFO, dumps
from .readers import read_range
from .tokenizer import (
    TokenizerInfo,
    iter_training_texts,
    load_tokenizer,
    prepare_tokenizer,
    train_bpe,
)

log = logging.getLogger("meap_data")

DATA_DIRS = ("arrow", "webdataset", "rejected")
DEFAULT_TRAIN_VOCAB = 8192
DEFAULT_TRAIN_CHARS = 32 << 20


@dataclass
class PrepareOutcome:
    """A finished dataset's manifest and run facts. For ``--kind rust``, ``splits`` maps
    "train" and "eval" to each dataset's own outcome, and ``manifest``/``run_info`` are
    the train dataset's."""

    manifest: dict
    run_info: dict
    splits: dict = field(default_factory=dict)


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to mix datasets: an existing dataset (or a crashed run's leftovers) is
    replaced only with ``overwrite``, and then its manifest goes first, so no reader
    ever sees old and new shards as one complete dataset."""
    present = [n for n in storage.listdir(output_dir) if n in DATA_DIRS + (MANIFEST, "tokenizer.json", RUN_INFO)]
    if present and not overwrite:
        what = "a dataset" if MANIFEST in present else "files of an incomplete run"
        raise MeapDataError(
            f"output directory {output_dir!r} already holds {what} ({', '.join(present)}); "
            "pass --overwrite to replace it, or choose another --output"
        )
    if present:
        storage.remove(storage.join(output_dir, MANIFEST))
        for name in DATA_DIRS + ("tokenizer.json", RUN_INFO):
            storage.remove_tree(storage.join(output_dir, name))
    storage.makedirs(output_dir)


def resolve_tokenizer(spec: str | None, files, text_field: str, eos_token: str | None = None,
                      vocab_size: int = DEFAULT_TRAIN_VOCAB, kind: str = "text") -> TokenizerInfo:
    """The tokenizer named by ``spec``, or (when None) a byte-level BPE trained on the
    first ``DEFAULT_TRAIN_CHARS`` characters of the inputs (for ``kind`` rust: of the
    records rendered as transcript texts)."""
    if spec:
        tok = load_tokenizer(spec)
    else:
        log.info("no --tokenizer given: training a %d-token byte-level BPE on the inputs", vocab_size)
        from .inputs import FileRange

        if kind == "rust":
            from .rust.shards import training_documents

            docs = training_documents(files)
        else:
            docs = (d for f in files for d in read_range(FileRange(f), text_field))
        tok = train_bpe(iter_training_texts(docs, DEFAULT_TRAIN_CHARS), vocab_size)
    return prepare_tokenizer(tok, eos_token=eos_token)


def dataset_targets(config: PrepareConfig, output_dir: str) -> list[tuple[str, PrepareConfig, str]]:
    """(pipeline label, config, directory) of each dataset one run writes: text one in
    ``output_dir``; rust two, ``output_dir/train`` and ``output_dir/eval``."""
    if config.kind != "rust":
        return [("Prepare", config, output_dir)]
    return [(f"Prepare{split.title()}", replace(config, split=split), storage.join(output_dir, split))
            for split in ("train", "eval")]


def run_prepare(
    config: PrepareConfig,
    output_dir: str,
    tokenizer: str | None = None,
    beam_args: list[str] | None = None,
    overwrite: bool = False,
    eos_token: str | None = None,
) -> PrepareOutcome:
    """Run the whole prepare job; returns the manifest and run facts (timings, host)."""
    from .beam import PrepareShards, make_pipeline

    config.validate()
    started = time.perf_counter()
    files = expand_inputs(list(config.inputs))
    units = plan_units(files, config.input_bytes_per_shard)
    input_bytes = sum(f.size for f in files)
    targets = dataset_targets(config, output_dir)
    for _, _, directory in targets:
        prepare_output_dir(directory, overwrite)
    info = resolve_tokenizer(tokenizer, files, config.text_field, eos_token, kind=config.kind)
    for _, _, directory in targets:
        storage.write_bytes_atomic(storage.join(directory, "tokenizer.json"), info.json.encode("utf-8"))
    log.info(
        "%d input files (%.1f MB) planned as %d shards; writing %s to %s",
        len(files), input_bytes / 1e6, len(units), ",".join(config.formats),
        ", ".join(directory for _, _, directory in targets),
    )
    pipeline = make_pipeline(beam_args or [])
    for label, target_config, directory in targets:
        _ = pipeline | label >> PrepareShards(target_config, info, directory, units)
    pipeline_started = time.perf_counter()
    pipeline.run().wait_until_finish()
    finished = time.perf_counter()
    outcomes = {}
    for _, target_config, directory in targets:
        if not storage.exists(storage.join(directory, MANIFEST)):
            raise MeapDataError(f"the pipeline finished but wrote no manifest to {directory!r}")
        manifest = json.loads(storage.read_bytes(storage.join(directory, MANIFEST)))
        seconds = finished - pipeline_started
        run_info = {
            "seconds_total": round(finished - started, 3),
            "seconds_pipeline": round(seconds, 3),
            # For rust, each split's own tokens over the one shared pipeline's time.
            "tokens_per_second": round(manifest["counts"]["tokens"] / max(seconds, 1e-9), 1),
            "input_bytes": input_bytes,
            "beam_args": beam_args or [],
            "host": platform.node(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
        }
        storage.write_bytes_atomic(storage.join(directory, RUN_INFO), dumps(run_info))
        outcomes[target_config.split] = PrepareOutcome(manifest, run_info)
    if config.kind != "rust":
        return outcomes[config.split]
    return PrepareOutcome(outcomes["train"].manifest, outcomes["train"].run_info, splits=outcomes)


def format_summary(manifest: dict, run_info: dict) -> str:
    """The end-of-run summary: documents, tokens, masking, shards, throughput."""
    c = manifest["counts"]
    lines = [
        f"documents: {c['documents_read']} read, {c['documents_written']} written, "
        f"{c['documents_rejected']} rejected",
    ]
    for reason, n in c["rejected_by_reason"].items():
        lines.append(f"  rejected {reason}: {n}")
    masked = c["masked_tokens"] / max(c["tokens"], 1)
    lines.append(
        f"samples: {c['samples']} x {manifest['seq_len']} tokens; tokens: {c['tokens']} "
        f"(+{c['padding_tokens']} padding); masked: {c['masked_tokens']} ({masked:.1%})"
    )
    for fmt, entries in manifest["shards"].items():
        total = sum(e["bytes"] for e in entries)
        lines.append(f"{fmt}: {len(entries)} shards, {total / 1e6:.1f} MB")
    lines.append(
        f"throughput: {run_info['tokens_per_second'] / 1e6:.2f} M tokens/s "
        f"({run_info['seconds_pipeline']:.1f} s in the pipeline, {run_info['seconds_total']:.1f} s in all)"
    )
    return "\n".join(lines)
