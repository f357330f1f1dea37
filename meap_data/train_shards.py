"""train_shards.py: train a small GPT decoder on meap-data shards, with MEAP or plain NTP.

The minimal training loop that proves the shards work end to end, and lets you compare
MEAP (masked inputs, clean next-token targets) with plain next-token prediction on the
same samples and the same tokens. Read it top to bottom, like nanoGPT's ``train.py``.

    meap-train --data DIR --out runs/meap --objective meap          # one CPU or GPU
    meap-train --data DIR --out runs/ntp  --objective ntp           # same data, clean inputs
    torchrun --nproc_per_node 8 -m meap_data.train_shards --data DIR --out runs/x --compile
    meap-train --data DIR --out runs/meap --resume                  # continue from runs/meap/ckpt.pt

Each step: --grad-accum micro-batches of --batch-size samples per rank from the shard
loader (rank r takes its slice of every global batch), AdamW with warmup + cosine,
gradient clipping; bf16 autocast on CUDA. The last --eval-samples samples of the dataset
are held out and evaluated every --eval-interval steps, on clean inputs for both
objectives (the comparable number) and, for MEAP, also on masked inputs. OUT/ckpt.pt holds the model,
optimiser, step, schedule, each rank's loader state and RNG states: --resume continues
bit for bit on CPU (same flags, same process count).

Performance accounting (printed every --log-interval steps and appended to
``OUT/metrics.jsonl``):

- tokens/s: sample positions fed to the model per second, all ranks together
  (batch x seq_len x grad-accum x world size per step; padding positions count, as the
  model computes on them).
- MFU (model FLOPs utilisation) = tokens/s x FLOPs per token / (peak FLOP/s x GPUs), with
  FLOPs per token = 6 N + 12 n_layer n_embd seq_len (PaLM, appendix B; nanoGPT):
  N = parameters that do matmuls (the output layer counts, tied to the token table or
  not; tables that are only looked up do not), 6 = 2 FLOPs per multiply-add x 3
  (forward, and the two backward matmuls); the second term is attention's QK^T and AV
  over the full L x L square. Peak: dense bf16 tensor-core FLOP/s from NVIDIA's data sheets, see PEAK_FLOPS
  (H100 SXM and H200: 989 TFLOP/s; H100 PCIe: 756). On CPU, or an unlisted GPU, MFU is
  n/a unless --peak-flops gives the figure.
- data wait: host wall time spent getting batches from the loader and handing them to
  the device, as a fraction of step wall time. On CUDA the next micro-batch is fetched
  while the GPU still runs the current one, so this is an upper bound on GPU starvation.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from .errors import MeapDataError
from .loader import ShardDataLoader, ShardIterableDataset, ShardLoader
from .manifest import read_manifest
from .model import GPT, IGNORE_INDEX, ModelConfig, flops_per_token

# Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name();
# first match wins, so the PCIe and NVL H100s come before the generic H100 (SXM).
PEAK_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM ("NVIDIA H100 80GB HBM3")
    ("H200", 989e12),  # also GH200
    ("A100", 312e12),
)
CHECKPOINT = "ckpt.pt"
METRICS = "metrics.jsonl"


# -----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meap-train",
        description="Train a small decoder-only transformer on a meap-data dataset with MEAP "
        "(masked inputs, clean next-token targets) or plain next-token prediction. "
        "Multi-GPU: torchrun --nproc_per_node N -m meap_data.train_shards ...",
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, metavar="DIR", help="dataset directory written by 'meap-data prepare'")
    g.add_argument("--objective", choices=("meap", "ntp"), default="meap",
                   help="meap: masked input_ids; ntp: the same samples with clean inputs (default: meap)")
    g.add_argument("--doc-mask", action="store_true",
                   help="no attention across the documents packed into one sample (dense mask; slower on GPU)")
    g.add_argument("--eval-samples", type=int, default=256,
                   help="samples held out for evaluation, taken from the end of the dataset (default: 256, at most 10%%)")
    g.add_argument("--num-workers", type=int, default=0, help="loader worker processes per rank (default: 0)")
    g.add_argument("--masks", choices=("static", "per_epoch"), default="static",
                   help="MEAP masks: as baked into the shards, or redrawn every epoch (default: static)")
    g = p.add_argument_group("model")
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
    g.add_argument("--log-interval", type=int, default=10, help="steps between log lines (default: 10)")
    g.add_argument("--eval-interval", type=int, default=200, help="steps between evaluations, 0 for none but the last (default: 200)")
    g.add_argument("--eval-batches", type=int, default=None, help="batches per evaluation (default: all held-out samples)")
    g.add_argument("--checkpoint-interval", type=int, default=500, help="steps between checkpoints (default: 500; always at the end)")
    g.add_argument("--quiet", action="store_true", help="no progress lines on the terminal")
    return p


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for flag values no run could use."""
    for name in ("batch_size", "grad_accum", "max_steps", "log_interval", "checkpoint_interval", "eval_batches"):
        if getattr(args, name) is None:
            continue
        if getattr(args, name) < 1:
            raise MeapDataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.warmup_steps < 0 or args.eval_interval < 0 or args.eval_samples < 0:
        raise MeapDataError("--warmup-steps, --eval-interval and --eval-samples cannot be negative")
    if args.stop_at_step is not None and not 1 <= args.stop_at_step <= args.max_steps:
        raise MeapDataError(f"--stop-at-step must be in [1, --max-steps={args.max_steps}], got {args.stop_at_step}")
    if args.width % args.heads:
        raise MeapDataError(f"--heads {args.heads} must divide --width {args.width}")


# -----------------------------------------------------------------------------
# small pieces of the loop


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warmup over
    ``--warmup-steps``, then cosine from ``--lr`` down to ``--min-lr`` at ``--max-steps``."""
    min_lr = args.lr / 10 if args.min_lr is None else args.min_lr
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    if step >= args.max_steps:
        return min_lr
    progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (args.lr - min_lr)


def peak_flops_of(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU named ``device_name`` (as torch.cuda reports it),
    None when the table does not know it."""
    return next((flops for key, flops in PEAK_FLOPS if key in device_name), None)


def peak_flops(device: torch.device, override: float | None) -> float | None:
    """Peak FLOP/s of one device: ``override`` if given, else the PEAK_FLOPS entry for a
    known GPU, else None (MFU is then reported as n/a)."""
    if override:
        return override
    return peak_flops_of(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def make_optimizer(model: GPT, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on LayerNorm gains and biases).
    The fused kernel exists on CPU and CUDA alike, so both take the same path."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), fused=True)


def model_inputs(batch: dict, objective: str, pad_id: int, seq_len: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(inputs, labels, doc_ids, position_ids) on ``device`` from a loader batch, cropped to
    ``seq_len``; the last two are None unless the loader was asked for them (--doc-mask).
    MEAP feeds the masked ``input_ids``; NTP feeds the clean ``labels``, with the pad id
    where labels hold -100 (padding), so both objectives see the same samples and targets."""
    # non_blocking: from pinned memory (CUDA) the copy overlaps the GPU's work; on CPU
    # ``.to`` returns the tensor itself.
    moved = {k: torch.as_tensor(batch[k])[:, :seq_len].to(device, non_blocking=True)
             for k in ("input_ids", "labels", "doc_ids", "position_ids") if k in batch}
    labels = moved["labels"]
    inputs = moved["input_ids"] if objective == "meap" else labels.masked_fill(labels == IGNORE_INDEX, pad_id)
    return inputs, labels, moved.get("doc_ids"), moved.get("position_ids")


# -----------------------------------------------------------------------------
# data


def open_data(args, manifest: dict, rank: int, world: int, pin_memory: bool):
    """(train loader, eval loader or None) for this rank, both from meap_data.loader.

    Training: a ``ShardDataLoader`` over samples ``[0, total - held out)`` in the seeded
    global order, rank r taking its slice of every global batch, with an exact
    ``state_dict``. Evaluation: the last ``--eval-samples`` samples of the dataset (at
    most a tenth of it), which training never sees, in manifest order."""
    total = manifest["counts"]["samples"]
    held_out = min(args.eval_samples, total // 10)
    # doc_ids / position_ids only for --doc-mask: positions then restart at every
    # document, so each packed document looks to the model like a sequence of its own.
    fields = ("input_ids", "labels") + (("doc_ids", "position_ids") if args.doc_mask else ())
    common = dict(rank=rank, world_size=world, fields=fields, seed=args.seed, masks=args.masks)
    if (total - held_out) < args.batch_size * world:
        raise MeapDataError(f"{args.data!r} has {total - held_out} training samples, fewer than one global batch "
                            f"(--batch-size {args.batch_size} x {world} ranks); lower --batch-size")
    train = ShardDataLoader(
        ShardIterableDataset(args.data, args.batch_size, sample_range=(0, total - held_out), shuffle=True, **common),
        num_workers=args.num_workers, pin_memory=pin_memory,
    )
    evals = None
    eval_batch = min(args.batch_size, held_out // world)
    if eval_batch >= 1:
        evals = ShardLoader(args.data, eval_batch, sample_range=(total - held_out, total), shuffle=False, **common)
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
RESUME_MUST_MATCH = ("objective", "doc_mask", "eval_samples", "layers", "width", "heads", "seq_len", "untied",
                     "seed", "masks")
RESUME_EXACT_ONLY_IF_SAME = ("batch_size", "grad_accum", "world")


def save_checkpoint(path: str, raw_model: GPT, optimizer, step: int, args, dataset_hash: str,
                    world: int, per_rank: list[dict]) -> None:
    """Write ``path`` atomically (a crash mid-write leaves the previous checkpoint).
    ``per_rank``: each rank's loader state and RNG state, in rank order."""
    state = {
        "model": raw_model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "schedule": {k: getattr(args, k) for k in ("lr", "min_lr", "warmup_steps", "max_steps")},
        "args": {k: getattr(args, k) for k in RESUME_MUST_MATCH + RESUME_EXACT_ONLY_IF_SAME[:2]},
        "world": world,
        "dataset": dataset_hash,
        "ranks": per_rank,
    }
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str, args, dataset_hash: str, world: int) -> tuple[dict, list[str]]:
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
        if state["args"][key] != getattr(args, key):
            raise MeapDataError(f"--resume: {path!r} was trained with --{key.replace('_', '-')} "
                                f"{state['args'][key]!r}, this run has {getattr(args, key)!r}; "
                                "use the same value or a new --out")
    now = {"batch_size": args.batch_size, "grad_accum": args.grad_accum, "world": world}
    then = dict(state["args"], world=state["world"])
    return state, [k for k in RESUME_EXACT_ONLY_IF_SAME if then[k] != now[k]]


# -----------------------------------------------------------------------------
# evaluation and logging


@torch.no_grad()
def evaluate(model, loader: ShardLoader | None, start: dict | None, args, pad_id: int, seq_len: int,
             device: torch.device, autocast) -> dict | None:
    """Held-out losses (nats per supervised token, averaged over batches and ranks), from
    the first held-out batch each time; None when nothing is held out.

    ``clean``: next-token loss on clean inputs, whatever the objective: the number that
    compares a MEAP run with an NTP run. ``masked`` (MEAP only): the training objective,
    on the masked inputs."""
    if loader is None:
        return None
    loader.load_state_dict(start)
    objectives = ("ntp", "meap") if args.objective == "meap" else ("ntp",)
    model.eval()
    totals, count = torch.zeros(len(objectives), device=device), 0
    for batch in loader:
        for i, objective in enumerate(objectives):
            inputs, labels, doc_ids, position_ids = model_inputs(batch, objective, pad_id, seq_len, device)
            with autocast:
                totals[i] += model(inputs, labels, doc_ids, position_ids).float()
        count += 1
        if count == args.eval_batches:
            break
    model.train()
    means = totals / max(count, 1)
    if dist.is_initialized():
        dist.all_reduce(means, op=dist.ReduceOp.AVG)
    return dict(zip(("clean", "masked"), means.tolist()))


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


# -----------------------------------------------------------------------------
# the training run


def train(args: argparse.Namespace) -> dict:
    """Run training as configured by ``args`` (see ``build_parser``). Returns the
    per-step training losses (nats per supervised token), the held-out evaluations on
    clean inputs ``[(step, loss)]``, the log records, the matmul parameter count and
    the FLOPs per token."""
    check_args(args)
    manifest = read_manifest(args.data)
    if "arrow" not in manifest["shards"]:
        raise MeapDataError(f"{args.data!r} has no Arrow shards; prepare it with --format arrow (the default)")
    seq_len = args.seq_len or manifest["seq_len"]
    if seq_len > manifest["seq_len"]:
        raise MeapDataError(f"--seq-len {seq_len} is longer than the dataset's samples ({manifest['seq_len']} tokens); "
                            f"use at most {manifest['seq_len']} or prepare with a larger --seq-len")
    args.seq_len = seq_len
    pad_id = manifest["tokenizer"]["pad_token_id"]
    if args.objective == "meap" and args.masks == "static" and manifest["counts"]["masked_tokens"] == 0:
        print(f"note: {args.data!r} was prepared with --mask-ratio 0, so --objective meap trains plain NTP; "
              "prepare it with --mask-ratio 0.15 for MEAP", file=sys.stderr)

    # --- processes and devices: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK
    ddp = "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "cuda" and not torch.cuda.is_available():
        raise MeapDataError("--device cuda: this torch sees no CUDA device; use --device cpu")
    rank, world, local_rank = 0, 1, 0
    if ddp:
        rank, world, local_rank = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    master = rank == 0
    dtype = {"auto": torch.bfloat16 if use_cuda else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    # Autocast only when lowering precision: float32 runs plain, which keeps CPU exact.
    autocast = torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    # Exact CPU results for bit-for-bit resume; on CUDA speed wins (TF32 for float32
    # matmuls). Process-wide switches: restored on the way out, for callers in-process.
    saved_switches = (torch.are_deterministic_algorithms_enabled(), torch.backends.cuda.matmul.allow_tf32,
                      torch.backends.cudnn.allow_tf32)
    torch.use_deterministic_algorithms(not use_cuda)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    ckpt_path = os.path.join(args.out, CHECKPOINT)
    log_file = None

    try:
        os.makedirs(args.out, exist_ok=True)
        # --- model and optimiser (the same init on every rank; DDP also broadcasts it)
        torch.manual_seed(args.seed)
        cfg = ModelConfig(vocab_size=manifest["tokenizer"]["vocab_size"], seq_len=seq_len, n_layer=args.layers,
                          n_embd=args.width, n_head=args.heads, dropout=args.dropout, tie_embeddings=not args.untied)
        raw_model = GPT(cfg).to(device)
        optimizer = make_optimizer(raw_model, args)
        n_params = raw_model.num_params()
        flops_tok = flops_per_token(cfg, n_params)
        peak = peak_flops(device, args.peak_flops)
        loader, eval_loader = open_data(args, manifest, rank, world, pin_memory=use_cuda)
        eval_start = eval_loader.state_dict() if eval_loader else None

        step = 0
        # Each rank its own dropout stream, seeded apart from the init stream.
        random.seed(args.seed + 1 + rank)
        np.random.seed(args.seed + 1 + rank)
        torch.manual_seed(args.seed + 1 + rank)
        if args.resume:
            state, changed = load_checkpoint(ckpt_path, args, manifest["config_hash"], world)
            raw_model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            step = state["step"]
            # The loader's state is global (samples the whole job consumed), the same on
            # every rank, so any job shape continues at the next sample.
            loader.load_state_dict(state["ranks"][0]["loader"])
            if state["world"] == world:
                set_rng_state(state["ranks"][rank]["rng"])
            if changed and master:
                print(f"note: resuming with a different {', '.join(changed)} than the checkpoint: training "
                      "continues at the next sample, but not as the uninterrupted run would have", flush=True)
            del state
        elif master:
            if os.path.exists(ckpt_path) and not args.quiet:
                print(f"note: starting a new run; {ckpt_path} will be replaced (pass --resume to continue it)")
            if os.path.exists(os.path.join(args.out, METRICS)):
                os.remove(os.path.join(args.out, METRICS))  # a new run starts a new log

        model = torch.compile(raw_model, backend=args.compile_backend) if args.compile else raw_model
        if ddp:
            model = DDP(model, device_ids=[local_rank] if use_cuda else None)

        stop = args.stop_at_step or args.max_steps
        if step >= stop and master and not args.quiet:
            print(f"{ckpt_path} is at step {step}: nothing to do before step {stop} (raise --max-steps to go on)")
        tokens_per_step = args.batch_size * seq_len * args.grad_accum * world
        if master and not args.quiet:
            print(f"model: {raw_model.num_params(non_embedding=False) / 1e6:.2f} M parameters, "
                  f"{n_params / 1e6:.2f} M in matmuls ({args.layers} layers, width {args.width}, "
                  f"{args.heads} heads, seq {seq_len}, vocab {cfg.vocab_size}), {flops_tok / 1e9:.3f} GFLOP/token")
            print(f"run: {args.objective} on {args.data}, {world} x {device.type} {str(dtype).replace('torch.', '')}"
                  f"{' compiled' if args.compile else ''}, {tokens_per_step} tokens/step, steps {step} -> {stop} "
                  f"of {args.max_steps}, {eval_loader.samples if eval_loader else 0} held-out samples")

        log_file = open(os.path.join(args.out, METRICS), "a") if master else None
        losses: list[float] = []
        evals: list[tuple[int, float]] = []
        records: list[dict] = []
        pending: list[torch.Tensor] = []  # per-step losses not yet read back (reading syncs the GPU)
        data_time = 0.0
        t_interval = time.perf_counter()
        steps_in_interval = 0

        def log(record: dict) -> None:
            records.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()

        batches = batches_forever(loader)
        t0 = time.perf_counter()
        batch = next(batches) if step < stop else None
        data_time += time.perf_counter() - t0
        while step < stop:
            lr = lr_at(step, args)
            for group in optimizer.param_groups:
                group["lr"] = lr
            last_step = step + 1 == stop
            save_now = last_step or (step + 1) % args.checkpoint_interval == 0
            loader_state = None
            step_loss = torch.zeros((), device=device)
            for micro in range(args.grad_accum):
                last_micro = micro == args.grad_accum - 1
                t0 = time.perf_counter()
                inputs, labels, doc_ids, position_ids = model_inputs(batch, args.objective, pad_id, seq_len, device)
                data_time += time.perf_counter() - t0
                # DDP all-reduces gradients only on the last micro-batch of a step.
                sync = model.no_sync() if ddp and not last_micro else nullcontext()
                with sync:
                    with autocast:
                        loss = model(inputs, labels, doc_ids, position_ids) / args.grad_accum
                    # Fetch the next micro-batch while the device runs this one (CUDA is
                    # asynchronous). The loader state for a checkpoint is taken before
                    # this look-ahead, so a resume replays the batch fetched here.
                    t0 = time.perf_counter()
                    if last_micro and save_now:
                        loader_state = copy.deepcopy(loader.state_dict())
                    batch = None if (last_micro and last_step) else next(batches)
                    data_time += time.perf_counter() - t0
                    loss.backward()
                step_loss += loss.detach()
            if args.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(raw_model.parameters(), args.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_in_interval += 1
            pending.append(step_loss)

            if step % args.log_interval == 0 or last_step:
                step_losses = torch.stack(pending)
                if ddp:
                    dist.all_reduce(step_losses, op=dist.ReduceOp.AVG)
                losses += step_losses.tolist()  # .tolist() waits for the device: the interval's true end
                pending = []
                now = time.perf_counter()
                elapsed = now - t_interval
                tok_s = tokens_per_step * steps_in_interval / elapsed
                wait = torch.tensor([data_time / elapsed])
                if ddp:
                    dist.all_reduce(wait, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
                record = {"kind": "train", "step": step, "loss": losses[-1], "lr": lr, "tokens_per_s": tok_s,
                          "step_s": elapsed / steps_in_interval, "data_wait": wait.item(),
                          "mfu": tok_s * flops_tok / (peak * world) if peak else None,
                          "tokens": step * tokens_per_step, "epoch": loader.state_dict()["epoch"]}
                log(record)
                if master and not args.quiet:
                    mfu = f"{record['mfu']:.1%}" if peak else "n/a"
                    eta = (stop - step) * record["step_s"]
                    print(f"step {step:>6}/{stop} | loss {record['loss']:.4f} | lr {lr:.2e} | "
                          f"{tok_s / 1e3:,.1f}k tok/s | mfu {mfu} | data {record['data_wait']:.1%} | "
                          f"{record['step_s'] * 1e3:.0f} ms/step | eta {format_seconds(eta)}", flush=True)
                data_time, steps_in_interval = 0.0, 0
                t_interval = time.perf_counter()

            t_aside = time.perf_counter()  # evaluation and checkpoints are not step time
            if (args.eval_interval and step % args.eval_interval == 0) or last_step:
                held_out = evaluate(model, eval_loader, eval_start, args, pad_id, seq_len, device, autocast)
                if held_out is not None:
                    evals.append((step, held_out["clean"]))
                    log({"kind": "eval", "step": step, "eval_loss": held_out["clean"],
                         "eval_loss_masked": held_out.get("masked")})
                    if master and not args.quiet:
                        masked = f" | masked inputs {held_out['masked']:.4f}" if "masked" in held_out else ""
                        print(f"eval {step:>6}/{stop} | held-out loss {held_out['clean']:.4f}{masked}", flush=True)

            if save_now:
                mine = {"loader": loader_state, "rng": rng_state()}
                per_rank = [None] * world
                if ddp:
                    dist.all_gather_object(per_rank, mine)
                else:
                    per_rank = [mine]
                if master:
                    save_checkpoint(ckpt_path, raw_model, optimizer, step, args, manifest["config_hash"], world, per_rank)
                    if not args.quiet:
                        print(f"checkpoint: step {step} -> {ckpt_path}", flush=True)
            t_interval += time.perf_counter() - t_aside
        if ddp:
            # Tear down together: a rank leaving while rank 0 still writes the checkpoint
            # can make gloo abort the process that is left behind.
            dist.barrier()
        return {"losses": losses, "evals": evals, "records": records, "params": n_params,
                "flops_per_token": flops_tok, "step": step, "world": world}
    finally:
        if log_file:
            log_file.close()
        torch.use_deterministic_algorithms(saved_switches[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_switches[1:]
        if ddp:
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``meap-train``: exits 0 on success, 2 with a one-line error."""
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except MeapDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
