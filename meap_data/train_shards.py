"""train_shards.py: train a small GPT decoder on meap-data shards, with MEAP or plain NTP.

The minimal training loop that proves the shards work end to end, and lets you compare
MEAP (masked inputs, clean next-token targets) with plain next-token prediction on the
same data. Read it top to bottom, like nanoGPT's ``train.py``: configuration, the small
pieces (schedule, objectives, data, checkpoints, evaluation), then ``train()``.

    meap-train --data DIR --out runs/meap --objective meap          # one CPU or GPU
    meap-train --data DIR --out runs/ntp  --objective ntp           # same data, clean inputs
    torchrun --nproc_per_node 8 -m meap_data.train_shards --data DIR --out runs/x --compile
    meap-train --data DIR --out runs/meap --resume                  # continue from runs/meap/ckpt.pt

Objectives follow the dataset's mask rule (the manifest's ``mask_rule``):

- ``meap``: the ``input_ids`` as stored (or re-drawn per epoch with ``--masks
  per_epoch``), labels as stored.
- ``ntp``: the rule's plain view (:meth:`meap_data.masking.MaskRule.ntp_view`). Pre-training
  data: the same samples with clean inputs. Fine-tuning data (``sft``): the clean copies
  only, prompts as input; masked copies are dropped (``rows``) or cut to their clean half
  (``concat``), so the baseline sees what MEAP-SFT's clean copies hold and nothing else.

Each step: --grad-accum micro-batches of --batch-size samples per rank from the shard
loader (rank r takes its slice of every global batch), AdamW with warmup + cosine,
gradient clipping; bf16 autocast on CUDA. The last --eval-samples samples of the dataset
are held out and evaluated every --eval-interval steps with the ``ntp`` view for both
objectives (the comparable number) and, for MEAP, also the ``meap`` view. OUT/ckpt.pt
holds the model, optimiser, step, schedule, each rank's loader state and RNG states:
--resume continues bit for bit on CPU (same flags, same process count).

Performance accounting (printed every --log-interval steps and appended to
``OUT/metrics.jsonl``):

- tokens/s: positions fed to the model per second, all ranks together (padding positions
  count, as the model computes on them; rows an objective drops do not).
- MFU (model FLOPs utilisation) = tokens/s x FLOPs per token / (peak FLOP/s x GPUs), see
  :func:`meap_data.model.flops_per_token` and :data:`meap_data.model.PEAK_FLOPS`. On CPU,
  or an unlisted GPU, MFU is n/a unless --peak-flops gives the figure.
- data wait: host wall time spent getting batches from the loader and handing them to
  the device, as a fraction of step wall time. On CUDA the next micro-batch is fetched
  while the GPU still runs the current one, so this is an upper bound on GPU starvation.
- samples and target tokens seen: what the objective actually trained on (targets are
  labels that are not -100, after the shift), all ranks together.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .errors import MeapDataError, run_command
from .loader import ShardDataLoader, ShardIterableDataset, ShardLoader
from .manifest import DatasetManifest
from .masking import MaskRule
from .model import DOC_ATTENTION, GPT, ModelConfig, choose_doc_attention, cosine_lr, flops_per_token, mfu, peak_flops
from .sample_format import IGNORE_INDEX

CHECKPOINT = "ckpt.pt"
HF_EXPORT = "hf"  # --init-from runs: the model as save_pretrained writes it
METRICS = "metrics.jsonl"
OBJECTIVES = ("meap", "ntp")


# -----------------------------------------------------------------------------
# configuration


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meap-train",
        description="Train a small decoder-only transformer on a meap-data dataset with MEAP "
        "(masked inputs, clean next-token targets) or plain next-token prediction. "
        "Multi-GPU: torchrun --nproc_per_node N -m meap_data.train_shards ...",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="DIR", help="dataset directory written by 'meap-data prepare'")
    g.add_argument("--objective", choices=OBJECTIVES, default="meap",
                   help="meap: the masked input_ids; ntp: the dataset rule's plain view (clean inputs; on "
                   "fine-tuning data the clean copies only) (default: meap)")
    g.add_argument("--doc-mask", action="store_true",
                   help="no attention across the documents packed into one sample (see --doc-attention)")
    g.add_argument("--doc-attention", choices=DOC_ATTENTION, default="auto",
                   help="how --doc-mask attention runs: flex (flex attention, a block mask: blocks of different "
                   "documents skipped), dense (SDPA with a (B, 1, L, L) boolean mask) or auto (default: flex on "
                   "CUDA, dense elsewhere); where flex cannot run it falls back to dense; the choice and its "
                   "reason are printed")
    g.add_argument("--eval-samples", type=int, default=256,
                   help="samples held out for evaluation, taken from the end of the dataset (default: 256, at most 10%%)")
    g.add_argument("--num-workers", type=int, default=0, help="loader worker processes per rank (default: 0)")
    g.add_argument("--masks", choices=("static", "per_epoch"), default="static",
                   help="MEAP masks: as baked into the shards, or re-drawn every epoch by the dataset's mask "
                   "rule (default: static)")
    g = p.add_argument_group("model")
    g.add_argument("--init-from", metavar="DIR", default=None,
                   help="fine-tune a local Hugging Face causal LM (config.json, safetensors, tokenizer.json) "
                   "instead of training a small GPT from scratch; --data must be prepared with --tokenizer DIR. "
                   "The model is saved with save_pretrained to OUT/hf at every checkpoint")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="with --init-from: recompute activations in the backward pass (less memory, more time)")
    g.add_argument("--layers", type=int, default=12, help="transformer blocks (default: 12)")
    g.add_argument("--width", type=int, default=768, help="model width n_embd (default: 768)")
    g.add_argument("--heads", type=int, default=12, help="attention heads; must divide --width (default: 12)")
    g.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sample fed to the model; samples are cropped to it (default: the dataset's)")
    g.add_argument("--dropout", type=float, default=0.0, help="dropout probability (default: 0)")
    g.add_argument("--untied", action="store_true",
                   help="separate output layer instead of GPT-2's tied token table (tiny models learn much faster)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=int, default=8, help="samples per micro-batch per rank (default: 8)")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step (default: 1)")
    g.add_argument("--max-steps", type=int, default=1000, help="optimiser steps; the cosine ends here (default: 1000)")
    g.add_argument("--stop-at-step", type=int, default=None,
                   help="checkpoint and stop after this step, schedule unchanged (to split a run into jobs)")
    g.add_argument("--lr", type=float, default=6e-4, help="peak learning rate (default: 6e-4)")
    g.add_argument("--min-lr", type=float, default=None, help="final learning rate (default: --lr / 10)")
    g.add_argument("--warmup-steps", type=int, default=100, help="linear warmup steps (default: 100)")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices (default: 0.1)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: 0.9)")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default: 0.95)")
    g.add_argument("--grad-clip", type=float, default=1.0, help="max global gradient norm, 0 for none (default: 1)")
    g.add_argument("--seed", type=int, default=1337, help="seed for init, dropout and the loader's shuffle (default: 1337)")
    g = p.add_argument_group("system")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when present")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="autocast dtype; auto: bfloat16 on CUDA, float32 on CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (default: inductor; 'eager' captures graphs without generating code)")
    g.add_argument("--peak-flops", type=float, default=None,
                   help="peak FLOP/s per device for MFU (default: from PEAK_FLOPS for known GPUs; n/a on CPU)")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR", help="run directory: ckpt.pt and metrics.jsonl")
    g.add_argument("--resume", action="store_true", help="continue exactly where OUT/ckpt.pt stopped")
    g.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that holds one (its checkpoint and log are replaced)")
    g.add_argument("--log-interval", type=int, default=10, help="steps between log lines (default: 10)")
    g.add_argument("--eval-interval", type=int, default=200, help="steps between evaluations, 0 for none but the last (default: 200)")
    g.add_argument("--eval-batches", type=int, default=None, help="batches per evaluation (default: all held-out samples)")
    g.add_argument("--checkpoint-interval", type=int, default=500, help="steps between checkpoints (default: 500; always at the end)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on the terminal")
    return p


@dataclass(frozen=True)
class TrainConfig:
    """Every flag of ``meap-train`` (see :func:`build_parser` for their meaning and units).
    Built once from the command line; values the dataset decides (``seq_len``) are
    filled by :func:`resolve` into a new config, never by mutation."""

    data: str
    out: str
    init_from: str | None = None
    gradient_checkpointing: bool = False
    objective: str = "meap"
    doc_mask: bool = False
    doc_attention: str = "auto"
    eval_samples: int = 256
    num_workers: int = 0
    masks: str = "static"
    layers: int = 12
    width: int = 768
    heads: int = 12
    seq_len: int | None = None
    dropout: float = 0.0
    untied: bool = False
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 1000
    stop_at_step: int | None = None
    lr: float = 6e-4
    min_lr: float | None = None
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"
    peak_flops: float | None = None
    resume: bool = False
    overwrite: bool = False
    log_interval: int = 10
    eval_interval: int = 200
    eval_batches: int | None = None
    checkpoint_interval: int = 500
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainConfig":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    def check(self) -> "TrainConfig":
        """One-line errors for flag values no run could use."""
        for name in ("batch_size", "grad_accum", "max_steps", "log_interval", "checkpoint_interval", "eval_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise MeapDataError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.warmup_steps < 0 or self.eval_interval < 0 or self.eval_samples < 0:
            raise MeapDataError("--warmup-steps, --eval-interval and --eval-samples cannot be negative")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.max_steps:
            raise MeapDataError(f"--stop-at-step must be in [1, --max-steps={self.max_steps}], got {self.stop_at_step}")
        if self.width % self.heads:
            raise MeapDataError(f"--heads {self.heads} must divide --width {self.width}")
        return self


def resolve(cfg: TrainConfig, manifest: DatasetManifest) -> TrainConfig:
    """``cfg`` with what the dataset decides filled in, checked against it."""
    if "arrow" not in manifest.formats:
        raise MeapDataError(f"{cfg.data!r} has no Arrow shards; prepare it with --format arrow (the default)")
    seq_len = cfg.seq_len or manifest.seq_len
    if seq_len > manifest.seq_len:
        raise MeapDataError(f"--seq-len {seq_len} is longer than the dataset's samples ({manifest.seq_len} tokens); "
                            f"use at most {manifest.seq_len} or prepare with a larger --seq-len")
    if not cfg.resume and not cfg.overwrite and os.path.exists(os.path.join(cfg.out, CHECKPOINT)):
        raise MeapDataError(f"--out {cfg.out!r} holds a run ({CHECKPOINT}); pass --resume to continue it, "
                            "--overwrite to replace it, or another --out")
    if cfg.init_from:
        from .hf_model import check_tokenizer

        if cfg.doc_mask:
            raise MeapDataError("--doc-mask is for the built-in model; a --init-from model attends causally over "
                                "the whole sample (prepare without --sft-pack to keep examples apart)")
        check_tokenizer(cfg.init_from, manifest.tokenizer_json, cfg.data)
    elif cfg.gradient_checkpointing:
        raise MeapDataError("--gradient-checkpointing applies to --init-from models only")
    return dataclasses.replace(cfg, seq_len=seq_len)


# -----------------------------------------------------------------------------
# small pieces of the loop


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup over
    ``--warmup-steps``, then cosine from ``--lr`` down to ``--min-lr`` at ``--max-steps``."""
    min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
    return cosine_lr(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, min_lr)


def _numpy(value) -> np.ndarray | None:
    return None if value is None else (value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value))


def model_inputs(batch: dict, objective: str, rule: MaskRule, pad_id: int, seq_len: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(inputs, labels, doc_ids, position_ids) of ``objective`` on ``device`` from a loader
    batch, cropped to ``seq_len``; the last two are None unless the loader was asked for
    them (--doc-mask). ``meap``: the stored inputs and labels; ``ntp``: ``rule``'s plain
    view, which may drop rows. A micro-batch that would lose every row keeps one with no
    target (the loss is then 0, the gradient none), so every rank still steps together."""
    arrays = {k: batch[k] for k in ("input_ids", "labels", "doc_ids", "position_ids") if k in batch}
    if objective == "ntp":
        inputs, labels, kept = rule.ntp_view(_numpy(batch["input_ids"]), _numpy(batch["labels"]), pad_id,
                                             _numpy(batch.get("in_mask_span")), _numpy(batch.get("doc_ids")))
        if not kept.any():
            kept[0] = True
            inputs = np.full_like(_numpy(batch["input_ids"])[:1], pad_id)
            labels = np.full_like(_numpy(batch["labels"])[:1], IGNORE_INDEX)
        arrays["input_ids"], arrays["labels"] = inputs, labels
        if not kept.all():
            for k in ("doc_ids", "position_ids"):
                if k in arrays:
                    arrays[k] = _numpy(arrays[k])[kept]
    # non_blocking: from pinned memory (CUDA) the copy overlaps the GPU's work; on CPU
    # ``.to`` returns the tensor itself.
    moved = {k: torch.as_tensor(v)[:, :seq_len].to(device, non_blocking=True) for k, v in arrays.items()}
    return moved["input_ids"], moved["labels"], moved.get("doc_ids"), moved.get("position_ids")


def target_count(labels: torch.Tensor) -> torch.Tensor:
    """Positions that are trained on: labels after the model's shift that are not -100."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


# -----------------------------------------------------------------------------
# data


def loader_fields(cfg: TrainConfig, rule: MaskRule, for_eval: bool) -> tuple[str, ...]:
    """The batch fields the objectives need: evaluation always takes the ntp view."""
    fields = ["input_ids", "labels"]
    # doc_ids / position_ids only for --doc-mask: positions then restart at every
    # document, so each packed document looks to the model like a sequence of its own.
    if cfg.doc_mask:
        fields += ["doc_ids", "position_ids"]
    if cfg.objective == "ntp" or for_eval:
        fields += [f for f in rule.ntp_fields if f not in fields]
    return tuple(fields)


def open_data(cfg: TrainConfig, manifest: DatasetManifest, rank: int, world: int, pin_memory: bool):
    """(train loader, eval loader or None) for this rank, both from meap_data.loader.

    Training: a ``ShardDataLoader`` over samples ``[0, total - held out)`` in the seeded
    global order, rank r taking its slice of every global batch, with an exact
    ``state_dict``. Evaluation: the last ``--eval-samples`` samples of the dataset (at
    most a tenth of it), which training never sees, in manifest order."""
    total = manifest.samples
    held_out = min(cfg.eval_samples, total // 10)
    rule = manifest.mask_rule
    common = dict(rank=rank, world_size=world, seed=cfg.seed, masks=cfg.masks)
    if (total - held_out) < cfg.batch_size * world:
        raise MeapDataError(f"{cfg.data!r} has {total - held_out} training samples, fewer than one global batch "
                            f"(--batch-size {cfg.batch_size} x {world} ranks); lower --batch-size")
    train = ShardDataLoader(
        ShardIterableDataset(cfg.data, cfg.batch_size, sample_range=(0, total - held_out), shuffle=True,
                             fields=loader_fields(cfg, rule, False), **common),
        num_workers=cfg.num_workers, pin_memory=pin_memory,
    )
    evals = None
    eval_batch = min(cfg.batch_size, held_out // world)
    if eval_batch >= 1:
        evals = ShardLoader(cfg.data, eval_batch, sample_range=(total - held_out, total), shuffle=False,
                            fields=loader_fields(cfg, rule, True), **common)
    return train, evals


def batches_forever(loader):
    """The loader's batches, epoch after epoch (each pass over a ShardDataLoader is the
    rest of one epoch; its state then points at the next)."""
    while True:
        epoch = iter(loader)
        # With worker processes, torch's DataLoader draws its workers' base seed from the
        # global torch RNG when an epoch starts; shield the training RNG (dropout) from
        # that, so the run does not depend on --num-workers and resumes bit for bit.
        with torch.random.fork_rng(devices=[]):
            batch = next(epoch, None)
        if batch is None:
            raise MeapDataError("the loader yielded no batch for a whole epoch; lower --batch-size")
        yield batch
        yield from epoch


# -----------------------------------------------------------------------------
# checkpoints


def rng_state() -> dict:
    """Every random stream this process may draw from (dropout uses torch's), as plain
    Python values (bytes for generator states): they travel through
    ``all_gather_object`` and load with ``torch.load(weights_only=True)``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, keys.tobytes(), pos, has_gauss, cached),
             "torch": torch.get_rng_state().numpy().tobytes()}
    if torch.cuda.is_available():
        state["cuda"] = [s.numpy().tobytes() for s in torch.cuda.get_rng_state_all()]
    return state


def _byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.frombuffer(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_byte_tensor(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_byte_tensor(s) for s in state["cuda"]])


# Flags a resumed run must share with its checkpoint: they fix the model's shape, the
# data order and split, or what the loss means. The schedule (--lr, --max-steps...) may
# change on purpose; --batch-size, --grad-accum and the process count may change too
# (the loader resumes at the next sample whatever the job shape), but then the run is
# no longer the same as an uninterrupted one, and a note says so.
RESUME_MUST_MATCH = ("init_from", "objective", "doc_mask", "eval_samples", "layers", "width", "heads", "seq_len", "untied",
                     "seed", "masks")
RESUME_EXACT_ONLY_IF_SAME = ("batch_size", "grad_accum", "world")


def save_checkpoint(path: str, raw_model: GPT, optimizer, step: int, cfg: TrainConfig, dataset_hash: str,
                    world: int, per_rank: list[dict], seen: list[int]) -> None:
    """Write ``path`` atomically (a crash mid-write leaves the previous checkpoint).
    ``per_rank``: each rank's loader state and RNG state, in rank order. ``seen``:
    positions, samples and targets fed so far, all ranks together."""
    state = {
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "seen": list(seen),
        "schedule": {k: getattr(cfg, k) for k in ("lr", "min_lr", "warmup_steps", "max_steps")},
        "args": {k: getattr(cfg, k) for k in RESUME_MUST_MATCH + RESUME_EXACT_ONLY_IF_SAME[:2]},
        "world": world,
        "dataset": dataset_hash,
        "ranks": per_rank,
    }
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, cfg: TrainConfig, dataset_hash: str, world: int) -> tuple[dict, list[str]]:
    """The checkpoint at ``path``, checked against this run; also the names of the
    flags that differ from it but may (see RESUME_EXACT_ONLY_IF_SAME)."""
    if not os.path.isfile(path):
        raise MeapDataError(f"--resume: no checkpoint at {path!r}; drop --resume to start a new run in --out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and what to do
        raise MeapDataError(f"--resume: {path!r} is not a readable meap-train checkpoint ({exc}); "
                            "start a new run in another --out") from exc
    if state["dataset"] != dataset_hash:
        raise MeapDataError(f"--resume: {path!r} was trained on another dataset (config hash "
                            f"{state['dataset'][:12]}, --data has {dataset_hash[:12]}); pass the same --data")
    for key in RESUME_MUST_MATCH:
        if state["args"][key] != getattr(cfg, key):
            raise MeapDataError(f"--resume: {path!r} was trained with --{key.replace('_', '-')} "
                                f"{state['args'][key]!r}, this run has {getattr(cfg, key)!r}; "
                                "use the same value or a new --out")
    now = {"batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum, "world": world}
    then = dict(state["args"], world=state["world"])
    return state, [k for k in RESUME_EXACT_ONLY_IF_SAME if then[k] != now[k]]


# -----------------------------------------------------------------------------
# the run's parts: devices, model, resume, a step, evaluation, logging


@dataclass
class Runtime:
    """Where this process runs: rank and world (torchrun sets RANK / WORLD_SIZE /
    LOCAL_RANK), the device, the autocast context and the precision."""

    ddp: bool
    rank: int
    world: int
    local_rank: int
    device: torch.device
    dtype: torch.dtype
    autocast: object

    @property
    def master(self) -> bool:
        return self.rank == 0


def launched_distributed() -> bool:
    """Whether this process is one rank of several (torchrun's environment)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_runtime(cfg: TrainConfig) -> Runtime:
    ddp = launched_distributed()
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise MeapDataError("--device cuda: this torch sees no CUDA device; use --device cpu")
    rank, world, local_rank = 0, 1, 0
    if ddp:
        rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    dtype = {"auto": torch.bfloat16 if use_cuda else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]
    # Autocast only when lowering precision: float32 runs plain, which keeps CPU exact.
    autocast = torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    return Runtime(ddp, rank, world, local_rank, device, dtype, autocast)


class ProcessSwitches:
    """Exact CPU results for bit-for-bit resume; on CUDA speed wins (TF32 for float32
    matmuls). Process-wide switches, restored on exit for callers in-process."""

    def __init__(self, exact: bool):
        self.exact = exact

    def __enter__(self):
        self.saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
                      torch.backends.cudnn.allow_tf32)
        torch.use_deterministic_algorithms(self.exact)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved[1:]


@dataclass
class Run:
    """Everything one training process holds, so the loop's parts take one argument."""

    cfg: TrainConfig
    rt: Runtime
    manifest: DatasetManifest
    rule: MaskRule
    pad_id: int
    dataset_hash: str
    raw_model: GPT
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: ShardDataLoader
    eval_loader: ShardLoader | None
    eval_start: dict | None
    flops_per_token: float
    peak: float | None
    meter: "Throughput"
    log: "MetricsLog"


def build_model(cfg: TrainConfig, manifest: DatasetManifest, rt: Runtime):
    """(the raw model on the device, its optimiser): a pretrained Hugging Face model
    (--init-from) or a new GPT, the same init on every rank (DDP also broadcasts it)."""
    torch.manual_seed(cfg.seed)
    if cfg.init_from:
        from .hf_model import load_pretrained

        raw_model = load_pretrained(cfg.init_from, manifest.vocab_size, cfg.gradient_checkpointing).to(rt.device)
    else:
        backend = "dense"
        if cfg.doc_mask:
            backend, reason = choose_doc_attention(cfg.doc_attention, rt.device, cfg.dropout)
            if rt.master and not cfg.quiet:
                print(f"document mask: {reason}", flush=True)
        model_cfg = ModelConfig(vocab_size=manifest.vocab_size, seq_len=cfg.seq_len, n_layer=cfg.layers,
                                n_embd=cfg.width, n_head=cfg.heads, dropout=cfg.dropout, tie_embeddings=not cfg.untied,
                                doc_attention=backend)
        raw_model = GPT(model_cfg).to(rt.device)
    optimizer = raw_model.configure_optimizer(cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    return raw_model, optimizer


def setup(cfg: TrainConfig, manifest: DatasetManifest, rt: Runtime) -> Run:
    """The model, optimiser, loaders and meters of this process (the output directory
    is created; a new run's old log is cleared later, by :func:`restore`)."""
    os.makedirs(cfg.out, exist_ok=True)
    raw_model, optimizer = build_model(cfg, manifest, rt)
    loader, eval_loader = open_data(cfg, manifest, rt.rank, rt.world, pin_memory=rt.device.type == "cuda")
    model = torch.compile(raw_model, backend=cfg.compile_backend) if cfg.compile else raw_model
    if rt.ddp:
        model = DDP(model, device_ids=[rt.local_rank] if rt.device.type == "cuda" else None)
    run = Run(cfg=cfg, rt=rt, manifest=manifest, rule=manifest.mask_rule, pad_id=manifest.pad_token_id,
              dataset_hash=manifest.content_id, raw_model=raw_model, model=model, optimizer=optimizer,
              loader=loader, eval_loader=eval_loader, eval_start=eval_loader.state_dict() if eval_loader else None,
              flops_per_token=flops_per_token(raw_model.num_params(), *raw_model.shape(), cfg.seq_len),
              peak=peak_flops(rt.device, cfg.peak_flops), meter=Throughput(rt.device), log=MetricsLog(None))
    if rt.master and not cfg.quiet:
        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * rt.world
        layers, width = raw_model.shape()
        what = f"{cfg.init_from} ({layers} layers, width {width}" if cfg.init_from else \
            f"GPT ({layers} layers, width {width}, {cfg.heads} heads"
        print(f"model: {what}, seq {cfg.seq_len}, vocab {manifest.vocab_size}): "
              f"{raw_model.num_params(non_embedding=False) / 1e6:.2f} M parameters, "
              f"{raw_model.num_params() / 1e6:.2f} M in matmuls, {run.flops_per_token / 1e9:.3f} GFLOP/token")
        print(f"run: {cfg.objective} on {cfg.data} ({run.rule.name} data), {rt.world} x {rt.device.type} "
              f"{str(rt.dtype).replace('torch.', '')}{' compiled' if cfg.compile else ''}, up to {tokens_per_step} "
              f"positions/step, {eval_loader.samples if eval_loader else 0} held-out samples")
    return run


def seed_dropout(cfg: TrainConfig, rank: int) -> None:
    """Each rank its own dropout stream, seeded apart from the init stream."""
    random.seed(cfg.seed + 1 + rank)
    np.random.seed(cfg.seed + 1 + rank)
    torch.manual_seed(cfg.seed + 1 + rank)


def restore(run: Run) -> int:
    """With --resume: model, optimiser, loader position, RNG and the counts of what was
    seen, from the checkpoint; returns the step to continue from (0 for a new run, whose
    old log is cleared)."""
    cfg, rt = run.cfg, run.rt
    ckpt_path = os.path.join(cfg.out, CHECKPOINT)
    seed_dropout(cfg, rt.rank)
    if not cfg.resume:
        if rt.master:
            if os.path.exists(ckpt_path) and not cfg.quiet:
                print(f"note: starting a new run; {ckpt_path} will be replaced (--overwrite)")
            if os.path.exists(os.path.join(cfg.out, METRICS)):
                os.remove(os.path.join(cfg.out, METRICS))  # a new run starts a new log
        return 0
    state, changed = load_checkpoint(ckpt_path, cfg, run.dataset_hash, rt.world)
    run.raw_model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    # The loader's state is global (samples the whole job consumed), the same on every
    # rank, so any job shape continues at the next sample.
    run.loader.load_state_dict(state["ranks"][0]["loader"])
    if state["world"] == rt.world:
        set_rng_state(state["ranks"][rt.rank]["rng"])
    run.meter.total += torch.tensor(state["seen"], dtype=torch.int64, device=rt.device)
    if changed and rt.master:
        print(f"note: resuming with a different {', '.join(changed)} than the checkpoint: training "
              "continues at the next sample, but not as the uninterrupted run would have", flush=True)
    return state["step"]


def train_step(run: Run, batches, batch: dict, save_now: bool, last_step: bool):
    """One optimiser step over --grad-accum micro-batches; returns (the step's loss,
    the next batch, the loader state to checkpoint or None)."""
    cfg, rt, meter = run.cfg, run.rt, run.meter
    loader_state = None
    step_loss = torch.zeros((), device=rt.device)
    for micro in range(cfg.grad_accum):
        last_micro = micro == cfg.grad_accum - 1
        t0 = time.perf_counter()
        inputs, labels, doc_ids, position_ids = model_inputs(batch, cfg.objective, run.rule, run.pad_id,
                                                             cfg.seq_len, rt.device)
        meter.count(inputs, labels)
        meter.data_time += time.perf_counter() - t0
        # DDP all-reduces gradients only on the last micro-batch of a step.
        sync = run.model.no_sync() if rt.ddp and not last_micro else nullcontext()
        with sync:
            with rt.autocast:
                loss = run.model(inputs, labels, doc_ids, position_ids) / cfg.grad_accum
            # Fetch the next micro-batch while the device runs this one (CUDA is
            # asynchronous). The loader state for a checkpoint is taken before this
            # look-ahead, so a resume replays the batch fetched here.
            t0 = time.perf_counter()
            if last_micro and save_now:
                loader_state = copy.deepcopy(run.loader.state_dict())
            batch = None if (last_micro and last_step) else next(batches)
            meter.data_time += time.perf_counter() - t0
            loss.backward()
        step_loss += loss.detach()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), cfg.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return step_loss, batch, loader_state


@torch.no_grad()
def evaluate(run: Run) -> dict | None:
    """Held-out losses (nats per target token, averaged over batches and ranks), from
    the first held-out batch each time; None when nothing is held out.

    ``clean``: the ntp view's loss, whatever the objective: the number that compares a
    MEAP run with an NTP run. ``masked`` (MEAP only): the training objective's loss."""
    cfg, rt = run.cfg, run.rt
    if run.eval_loader is None:
        return None
    run.eval_loader.load_state_dict(run.eval_start)
    objectives = ("ntp", "meap") if cfg.objective == "meap" else ("ntp",)
    run.model.eval()
    totals, count = torch.zeros(len(objectives), device=rt.device), 0
    for batch in run.eval_loader:
        for i, objective in enumerate(objectives):
            inputs, labels, doc_ids, position_ids = model_inputs(batch, objective, run.rule, run.pad_id,
                                                                 cfg.seq_len, rt.device)
            with rt.autocast:
                totals[i] += run.model(inputs, labels, doc_ids, position_ids).float()
        count += 1
        if count == cfg.eval_batches:
            break
    run.model.train()
    means = totals / max(count, 1)
    if dist.is_initialized():
        dist.all_reduce(means, op=dist.ReduceOp.AVG)
    return dict(zip(("clean", "masked"), means.tolist()))


def checkpoint(run: Run, step: int, loader_state: dict) -> None:
    """Gather every rank's loader and RNG state; rank 0 writes OUT/ckpt.pt."""
    rt = run.rt
    mine = {"loader": loader_state, "rng": rng_state()}
    seen = run.meter.totals_now(rt.ddp)
    per_rank = [None] * rt.world
    if rt.ddp:
        dist.all_gather_object(per_rank, mine)
    else:
        per_rank = [mine]
    if rt.master:
        path = os.path.join(run.cfg.out, CHECKPOINT)
        save_checkpoint(path, run.raw_model, run.optimizer, step, run.cfg, run.dataset_hash, rt.world, per_rank, seen)
        if run.cfg.init_from:
            from .hf_model import save_pretrained

            eos = run.manifest.tokenizer["eos_token"]
            save_pretrained(run.raw_model, os.path.join(run.cfg.out, HF_EXPORT), run.manifest.tokenizer_json, eos, eos)
        if not run.cfg.quiet:
            extra = f" and {os.path.join(run.cfg.out, HF_EXPORT)}" if run.cfg.init_from else ""
            print(f"checkpoint: step {step} -> {path}{extra}", flush=True)


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class MetricsLog:
    """Records kept in memory and appended to OUT/metrics.jsonl (rank 0 only)."""

    def __init__(self, path: str | None):
        self.records: list[dict] = []
        self._file = open(path, "a") if path else None

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()


class Throughput:
    """Per log interval: steps, wall time, host time spent on data, and what the
    objective fed the model (positions, samples, targets), summed over ranks at read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.data_time = 0.0
        self.steps = 0
        self.started = time.perf_counter()
        self.fed = torch.zeros(3, dtype=torch.int64, device=device)  # positions, samples, targets
        self.total = torch.zeros(3, dtype=torch.int64, device=device)

    def count(self, inputs: torch.Tensor, labels: torch.Tensor) -> None:
        self.fed[0] += inputs.numel()
        self.fed[1] += (labels != IGNORE_INDEX).any(dim=1).sum()  # a placeholder row is no sample
        self.fed[2] += target_count(labels)

    def totals_now(self, ddp: bool) -> list[int]:
        """Positions, samples and targets fed since the run began, all ranks together."""
        fed = self.fed.clone()
        if ddp:
            dist.all_reduce(fed)
        return (self.total + fed).tolist()

    def read(self, ddp: bool) -> dict:
        """The interval's figures (then a new interval starts): a host sync."""
        elapsed = time.perf_counter() - self.started
        fed, wait = self.fed.clone(), torch.tensor([self.data_time / elapsed])
        if ddp:
            dist.all_reduce(fed)
            dist.all_reduce(wait, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
        self.total += fed
        figures = {"elapsed": elapsed, "steps": self.steps, "tokens_per_s": fed[0].item() / elapsed,
                   "data_wait": wait.item(), "totals": self.total.tolist()}
        self.fed.zero_()
        self.data_time, self.steps = 0.0, 0
        self.started = time.perf_counter()
        return figures


def log_train(run: Run, step: int, stop: int, lr: float, step_losses: list[float]) -> dict:
    """The interval's record: loss, learning rate, throughput, MFU, data wait, and the
    positions, samples and targets seen so far."""
    figures = run.meter.read(run.rt.ddp)
    positions, samples, targets = figures["totals"]
    tok_s = figures["tokens_per_s"]
    record = {"kind": "train", "step": step, "loss": step_losses[-1], "lr": lr, "tokens_per_s": tok_s,
              "step_s": figures["elapsed"] / max(figures["steps"], 1), "data_wait": figures["data_wait"],
              "mfu": mfu(tok_s, run.flops_per_token, run.peak, run.rt.world), "tokens": positions,
              "samples_seen": samples, "targets_seen": targets, "epoch": run.loader.state_dict()["epoch"]}
    run.log.write(record)
    if run.rt.master and not run.cfg.quiet:
        mfu_text = f"{record['mfu']:.1%}" if run.peak else "n/a"
        eta = (stop - step) * record["step_s"]
        print(f"step {step:>6}/{stop} | loss {record['loss']:.4f} | lr {lr:.2e} | {tok_s / 1e3:,.1f}k tok/s | "
              f"mfu {mfu_text} | data {record['data_wait']:.1%} | {record['step_s'] * 1e3:.0f} ms/step | "
              f"eta {format_seconds(eta)}", flush=True)
    return record


def log_eval(run: Run, step: int, stop: int, held_out: dict) -> None:
    run.log.write({"kind": "eval", "step": step, "eval_loss": held_out["clean"],
                   "eval_loss_masked": held_out.get("masked")})
    if run.rt.master and not run.cfg.quiet:
        masked = f" | masked inputs {held_out['masked']:.4f}" if "masked" in held_out else ""
        print(f"eval {step:>6}/{stop} | held-out loss {held_out['clean']:.4f}{masked}", flush=True)


# -----------------------------------------------------------------------------
# the training run


def train(cfg: TrainConfig | argparse.Namespace) -> dict:
    """Run training as configured (a :class:`TrainConfig`, or the parsed flags). Returns
    the per-step training losses (nats per target token), the held-out evaluations
    ``[(step, loss)]`` of the ntp view, the log records, the matmul parameter count, the
    FLOPs per token, and the samples and target tokens the objective saw."""
    if isinstance(cfg, argparse.Namespace):
        cfg = TrainConfig.from_args(cfg)
    manifest = DatasetManifest.read(cfg.check().data)
    cfg = resolve(cfg, manifest)
    if cfg.objective == "meap" and cfg.masks == "static" and manifest.masked_tokens == 0:
        print(f"note: {cfg.data!r} was prepared with --mask-ratio 0, so --objective meap trains plain NTP; "
              "prepare it with a mask ratio above 0 for MEAP", file=sys.stderr)
    rt = setup_runtime(cfg)
    run = None
    try:
        with ProcessSwitches(exact=rt.device.type == "cpu"):
            run = setup(cfg, manifest, rt)
            step = restore(run)
            stop = cfg.stop_at_step or cfg.max_steps
            if step >= stop and rt.master and not cfg.quiet:
                print(f"{os.path.join(cfg.out, CHECKPOINT)} is at step {step}: nothing to do before step {stop} "
                      "(raise --max-steps to go on)")
            run.log = MetricsLog(os.path.join(cfg.out, METRICS) if rt.master else None)
            losses, evals, pending = [], [], []  # pending: step losses not yet read (reading syncs the GPU)
            batches = batches_forever(run.loader)
            t0 = run.meter.started = time.perf_counter()
            batch = next(batches) if step < stop else None
            run.meter.data_time += time.perf_counter() - t0
            while step < stop:
                lr = lr_at(step, cfg)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
                last_step = step + 1 == stop
                save_now = last_step or (step + 1) % cfg.checkpoint_interval == 0
                loss, batch, loader_state = train_step(run, batches, batch, save_now, last_step)
                step += 1
                run.meter.steps += 1
                pending.append(loss)
                if step % cfg.log_interval == 0 or last_step:
                    step_losses = torch.stack(pending)
                    if rt.ddp:
                        dist.all_reduce(step_losses, op=dist.ReduceOp.AVG)
                    losses += step_losses.tolist()
                    pending = []
                    log_train(run, step, stop, lr, losses)
                t_aside = time.perf_counter()  # evaluation and checkpoints are not step time
                if (cfg.eval_interval and step % cfg.eval_interval == 0) or last_step:
                    held_out = evaluate(run)
                    if held_out is not None:
                        evals.append((step, held_out["clean"]))
                        log_eval(run, step, stop, held_out)
                if save_now:
                    checkpoint(run, step, loader_state)
                run.meter.started += time.perf_counter() - t_aside
            _, samples, targets = run.meter.totals_now(rt.ddp)
            if rt.master and not cfg.quiet and losses:
                print(f"seen: {samples} samples, {targets} target tokens ({cfg.objective} view of "
                      f"{run.rule.name} data)", flush=True)
            if rt.ddp:
                # Tear down together: a rank leaving while rank 0 still writes the
                # checkpoint can make gloo abort the process that is left behind.
                dist.barrier()
            return {"losses": losses, "evals": evals, "records": run.log.records, "step": step, "world": rt.world,
                    "params": run.raw_model.num_params(), "flops_per_token": run.flops_per_token,
                    "samples_seen": samples, "targets_seen": targets}
    finally:
        if run is not None:
            run.log.close()
        if rt.ddp:
            dist.destroy_process_group()


def exit_rank_process(code: int) -> NoReturn:
    """End a rank process of a multi-process run now, skipping interpreter finalization.

    DDP keeps its gloo process group alive after ``destroy_process_group`` (torch 2.13:
    the group's worker threads outlive the DDP module and the garbage collector; a bare
    process group without DDP is freed). A worker thread frees each collective after it
    completes, and freeing tensors made in Python takes the GIL. When that happens while
    the interpreter finalizes, the thread is made to exit through a C++ destructor and the
    process aborts ("terminate called without an active exception", SIGABRT: about 1 run
    in 10 on a loaded 2-core machine; core dump in the README). Everything the run writes
    is closed by now (checkpoint, metrics), so flushing stdio and logging is all that the
    skipped finalization would have done for us."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``meap-train``: exits 0 on success, else with a one-line error
    and the failure's code (:mod:`meap_data.errors`). A rank of a torchrun job ends
    through :func:`exit_rank_process`."""
    args = build_parser().parse_args(argv)
    code = run_command(lambda: train(TrainConfig.from_args(args)) and 0)
    if launched_distributed():
        exit_rank_process(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
