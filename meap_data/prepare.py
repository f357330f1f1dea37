"""``meap-data prepare``: plan, set up the output directories and tokenizer, run the
Beam pipeline, and summarise. ``pipelines/corpus_to_shards.py`` runs the same function.

A run writes the datasets its data kind names (:meth:`DataKind.targets`): one for text;
for ``--kind rust`` two, ``DIR/train`` and ``DIR/eval``, from one pipeline run and one
tokenizer, each with its own manifest, so the loader and ``verify`` take either as is."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field

from . import storage
from .config import PrepareConfig
from .encoders import RUN_SAMPLE_CHARS, choose_backend
from .errors import BusyError, MeapDataError
from .inputs import expand_inputs, plan_units
from .hf_files import CARD, SPECIAL_TOKENS_MAP, TOKENIZER_CONFIG, dataset_card, parent_card, tokenizer_files
from .kinds import DatasetTarget, get_kind, resolve_config
from .manifest import MANIFEST, RUN_INFO, DatasetManifest, dumps
from .progress import Progress
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
    """A finished run: ``datasets`` maps each target's name to its outcome (manifest,
    run_info, directory); ``manifest``/``run_info`` are the first target's (the only one
    for text). ``splits`` is ``datasets`` when a run writes several (e.g. rust)."""

    manifest: dict
    run_info: dict
    directory: str = ""
    datasets: dict = field(default_factory=dict)

    @property
    def splits(self) -> dict:
        return self.datasets if len(self.datasets) > 1 else {}


LOCK = ".meap-data.lock"


class OutputLock:
    """One writer per output directory: ``DIR/.meap-data.lock``, created exclusively
    (:func:`meap_data.storage.create_exclusive`) before anything in DIR is touched and
    removed when the run ends. A lock left by a crashed run on this host (its process is
    gone) is taken over; any other lock makes the run fail with a one-line error."""

    def __init__(self, directories: list[str]):
        self.paths = [storage.join(d, LOCK) for d in directories]
        self.owned: list[str] = []
        self.me = {"pid": os.getpid(), "host": platform.node(), "started": time.time()}

    def __enter__(self) -> "OutputLock":
        try:
            for path in self.paths:
                self._take(path)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _take(self, path: str) -> None:
        data = json.dumps(self.me).encode()
        if storage.create_exclusive(path, data):
            self.owned.append(path)
            return
        holder = _read_lock(path)
        if holder and holder.get("host") == platform.node() and not _alive(holder.get("pid")):
            log.info("taking over %s, left by a run that is gone (pid %s)", path, holder.get("pid"))
            storage.remove(path)
            if storage.create_exclusive(path, data):
                self.owned.append(path)
                return
            holder = _read_lock(path)
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another run"
        raise BusyError(f"output directory {os.path.dirname(path) or '.'!r} is being written by {who} (lock "
                        f"{path}); wait for it, or remove the lock if that run is gone")

    def __exit__(self, *exc) -> None:
        for path in self.owned:
            storage.remove(path)
        self.owned = []


def _read_lock(path: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(path))
    except (OSError, ValueError):
        return None


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to mix datasets: an existing dataset (or a crashed run's leftovers) is
    replaced only with ``overwrite``, and then its manifest goes first, so no reader
    ever sees old and new shards as one complete dataset."""
    if not storage.is_remote(output_dir) and os.path.isfile(output_dir):
        raise MeapDataError(f"--output {output_dir!r} is a file; pass a directory (it is created when missing)")
    files = (MANIFEST, "tokenizer.json", RUN_INFO, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
    present = [n for n in storage.listdir(output_dir) if n in DATA_DIRS + files]
    if present and not overwrite:
        what = "a dataset" if MANIFEST in present else "files of an incomplete run"
        raise MeapDataError(
            f"output directory {output_dir!r} already holds {what} ({', '.join(present)}); "
            "pass --overwrite to replace it, or choose another --output"
        )
    if present:
        storage.remove(storage.join(output_dir, MANIFEST))
        for name in DATA_DIRS + files[1:] + (CARD,):
            storage.remove_tree(storage.join(output_dir, name))
    storage.makedirs(output_dir)


def resolve_tokenizer(spec: str | None, files, config: PrepareConfig, eos_token: str | None = None,
                      vocab_size: int = DEFAULT_TRAIN_VOCAB, bos_token: str | None = None) -> TokenizerInfo:
    """The tokenizer named by ``spec``, or (when None) a byte-level BPE trained on the
    first ``DEFAULT_TRAIN_CHARS`` characters of the kind's training texts."""
    if spec:
        tok = load_tokenizer(spec)
    else:
        log.info("no --tokenizer given: training a %d-token byte-level BPE on the inputs", vocab_size)
        docs = get_kind(config.kind).training_documents(files, config)
        tok = train_bpe(iter_training_texts(docs, DEFAULT_TRAIN_CHARS), vocab_size)
    return prepare_tokenizer(tok, eos_token=eos_token, add_bos=config.add_bos, bos_token=bos_token)


def run_sample(files, config: PrepareConfig, max_chars: int = RUN_SAMPLE_CHARS, spread: int = 8) -> list[str]:
    """Texts of the run's own inputs for the tokenizer backend's check: the first
    documents of up to ``spread`` files spaced evenly over the inputs, about
    ``max_chars / spread`` characters from each."""
    if not files:
        return []
    picks = files[:: -(-len(files) // spread)]
    per_file = max(1, max_chars // len(picks))
    kind = get_kind(config.kind)
    return [text[:per_file] for f in picks for text in iter_training_texts(kind.training_documents([f], config), per_file)]


class ShardWatcher:
    """Progress of a running pipeline, whatever the runner: a thread counts the finished
    shard files (they appear atomically, one per work unit) in every target's first
    format folder and feeds a :class:`~meap_data.progress.Progress`."""

    def __init__(self, targets: list[DatasetTarget], units: int, fmt: str, sink):
        self.dirs = [storage.join(t.directory, fmt) for t in targets]
        self.suffix = ".arrow" if fmt == "arrow" else ".tar"
        self.bar = Progress(units * len(targets), "prepare: shards", sink=sink)
        self.every_s = 10.0 if storage.is_remote(self.dirs[0]) else 1.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meap-data-progress", daemon=True)

    def _count(self) -> int:
        return sum(sum(n.endswith(self.suffix) for n in storage.listdir(d)) for d in self.dirs)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            done = self._count()
            if done > self.bar.done:
                self.bar.update(done - self.bar.done)

    def __enter__(self) -> "ShardWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            done = self._count()
            if done > self.bar.done:
                self.bar.update(done - self.bar.done)
            self.bar.close()


def run_prepare(
    config: PrepareConfig,
    output_dir: str,
    tokenizer: str | None = None,
    beam_args: list[str] | None = None,
    overwrite: bool = False,
    eos_token: str | None = None,
    bos_token: str | None = None,
    progress=None,
    tokenizer_backend: str = "auto",
) -> PrepareOutcome:
    """Run the whole prepare job; returns the manifests and run facts (timings, host,
    tokenizer backend). ``progress``: where shard progress goes: ``"stderr"`` (a tqdm bar
    on a terminal, as the CLI does), a callable taking a line, or None (default: nowhere,
    as befits a library). ``tokenizer_backend``: ``auto``, ``hf`` or ``fastokens`` (see
    :func:`meap_data.encoders.choose_backend`); the shards are the same whichever runs."""
    config = resolve_config(config)
    started = time.perf_counter()
    files = expand_inputs(list(config.inputs))
    units = plan_units(files, config.input_bytes_per_shard)
    input_bytes = sum(f.size for f in files)
    targets: list[DatasetTarget] = get_kind(config.kind).targets(config, output_dir)
    for target in targets:
        if not storage.is_remote(target.directory) and os.path.isfile(target.directory):
            raise MeapDataError(f"--output {target.directory!r} is a file; pass a directory (created when missing)")
    # One writer at a time: a second run into the same directory fails before touching it.
    with OutputLock([t.directory for t in targets]):
        return _write_datasets(config, output_dir, targets, files, units, input_bytes, started, tokenizer,
                               beam_args, overwrite, eos_token, bos_token, progress, tokenizer_backend)


def _write_datasets(config, output_dir, targets, files, units, input_bytes, started, tokenizer, beam_args,
                    overwrite, eos_token, bos_token, progress, tokenizer_backend) -> PrepareOutcome:
    from .beam import PrepareDatasets, PrepareShards, make_pipeline

    for target in targets:
        prepare_output_dir(target.directory, overwrite)
    info = resolve_tokenizer(tokenizer, files, config, eos_token, bos_token=bos_token)
    sample = run_sample(files, config) if tokenizer_backend != "hf" else []
    backend = choose_backend(info.json, tokenizer_backend, sample)
    info = dataclasses.replace(info, backend=backend.backend)
    for target in targets:
        storage.write_bytes_atomic(storage.join(target.directory, "tokenizer.json"), info.json.encode("utf-8"))
        for name, data in tokenizer_files(info, config.seq_len).items():
            storage.write_bytes_atomic(storage.join(target.directory, name), data)
    log.info(
        "%d input files (%.1f MB) planned as %d shards; writing %s to %s",
        len(files), input_bytes / 1e6, len(units), ",".join(config.formats),
        ", ".join(t.directory for t in targets),
    )
    pipeline = make_pipeline(beam_args or [])
    _ = pipeline | "Prepare" >> PrepareDatasets({
        f"Prepare{target.name.title()}": PrepareShards(target.config, info, target.directory, units)
        for target in targets})
    pipeline_started = time.perf_counter()
    with ShardWatcher(targets, len(units), config.formats[0], progress):
        pipeline.run().wait_until_finish()
    finished = time.perf_counter()
    outcomes = {}
    for target in targets:
        directory = target.directory
        if not storage.exists(storage.join(directory, MANIFEST)):
            raise MeapDataError(f"the pipeline finished but wrote no manifest to {directory!r}")
        manifest = DatasetManifest.read(directory)
        seconds = finished - pipeline_started
        run_info = {
            "seconds_total": round(finished - started, 3),
            "seconds_pipeline": round(seconds, 3),
            # With several targets, each one's own tokens over the one shared pipeline's time.
            "tokens_per_second": round(manifest.counts["tokens"] / max(seconds, 1e-9), 1),
            "input_bytes": input_bytes,
            "beam_args": beam_args or [],
            "tokenizer_backend": backend.to_json(),
            "host": platform.node(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
        }
        storage.write_bytes_atomic(storage.join(directory, RUN_INFO), dumps(run_info))
        storage.write_bytes_atomic(storage.join(directory, CARD), dataset_card(manifest.data, target.name or "train"))
        outcomes[target.name] = PrepareOutcome(manifest.data, run_info, directory)
    if len(targets) > 1:
        storage.write_bytes_atomic(storage.join(output_dir, CARD), parent_card({n: o.manifest for n, o in outcomes.items()}))
    first = outcomes[targets[0].name]
    return PrepareOutcome(first.manifest, first.run_info, first.directory, datasets=outcomes)


def format_summary(manifest: dict, run_info: dict) -> str:
    """The end-of-run summary: documents, tokens, masking, shards, throughput."""
    m = DatasetManifest("", manifest)
    c = m.counts
    lines = [
        f"documents: {c['documents_read']} read, {c['documents_written']} written, "
        f"{c['documents_rejected']} rejected",
    ]
    for reason, n in c["rejected_by_reason"].items():
        lines.append(f"  rejected {reason}: {n}")
    masked = c["masked_tokens"] / max(c["tokens"], 1)
    lines.append(
        f"samples: {c['samples']} x {m.seq_len} tokens; tokens: {c['tokens']} "
        f"(+{c['padding_tokens']} padding); masked: {c['masked_tokens']} ({masked:.1%}, rule {m.mask_rule.name})"
    )
    for fmt in m.formats:
        entries = m.shards(fmt)
        lines.append(f"{fmt}: {len(entries)} shards, {sum(e['bytes'] for e in entries) / 1e6:.1f} MB")
    lines.append(
        f"throughput: {run_info['tokens_per_second'] / 1e6:.2f} M tokens/s "
        f"({run_info['seconds_pipeline']:.1f} s in the pipeline, {run_info['seconds_total']:.1f} s in all"
        f"{'; tokenizer backend ' + run_info['tokenizer_backend']['backend'] if 'tokenizer_backend' in run_info else ''})"
    )
    return "\n".join(lines)
