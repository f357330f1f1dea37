"""Paired training of one seed: one tiny decoder per objective, the same initial weights,
the same batches in the same order, the same shapes (so the same FLOPs); only the
inputs differ.

- ``ntp``: plain next-token prediction on the clean context.
- ``meap``: the package's MEAP pre-training rule (:class:`~meap_data.masking.PretrainRule`)
  replaces ``mask_ratio`` of the input positions with ``[MASK]``; targets stay clean.
- ``control``: the same positions get random tokens instead: input noise without a mask
  token, to tell MEAP's effect from generic corruption.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..masking import PRETRAIN_MASK_RATIO, PretrainRule
from .haystack import Haystack
from .needles import ContextBuilder, Examples, eval_set, needle_format
from .scoring import accuracy, correct

OBJECTIVES = ("ntp", "meap", "control")


@dataclass(frozen=True)
class ProbeConfig:
    """Every knob of a probe run. Sizes: ``seq_len`` tokens per context, ``n_layer`` x
    ``n_embd`` (``n_head`` heads) decoders, ``batch_size`` contexts per step, ``steps``
    optimiser steps, ``lr`` peak learning rate (warmup ``warmup`` steps, cosine to lr/10).
    Task: ``variant`` (kv, passkey, natural), ``needles`` per context (None: the
    variant's default), ``depths`` where the target is put for evaluation,
    ``eval_per_depth`` contexts per depth, ``eval_every`` steps between quick evaluations
    (``quick_eval`` contexts); ``train_queries`` queries end each training context
    (evaluation contexts end with one). ``seeds``: paired runs; ``objectives``: which to train.
    ``vocab_size``: tokens of the BPE trained on the default (stdlib) haystack;
    ``haystack_text``: stdlib or filler (the default haystack's text, see
    :mod:`~meap_data.probe.haystack`); ``token_shift``: the model's token shift
    (:class:`~meap_data.model.ModelConfig`)."""

    seq_len: int = 256
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    batch_size: int = 16
    steps: int = 600
    lr: float = 3e-3
    warmup: int = 50
    mask_ratio: float = PRETRAIN_MASK_RATIO
    variant: str = "kv"
    needles: int | None = None
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    eval_per_depth: int = 100
    eval_every: int = 100
    quick_eval: int = 100
    train_queries: int = 4
    seeds: int = 3
    objectives: tuple[str, ...] = ("ntp", "meap")
    eval_seed: int = 1234
    device: str = "auto"
    jobs: int = 1
    heldout_batches: int = 4
    vocab_size: int = 4096
    haystack_text: str = "stdlib"
    token_shift: bool = False

    @property
    def n_needles(self) -> int:
        return self.needles or needle_format(self.variant).default_needles

    def to_json(self) -> dict:
        data = asdict(self)
        data["depths"], data["objectives"] = list(self.depths), list(self.objectives)
        data["n_needles"] = self.n_needles
        return data


PRESETS = {
    # About 16 minutes on 2 CPU cores for 4 paired seeds x ntp/meap/control (two seeds at a
    # time, one core each). Calibrated on this machine (README, "the CPU calibration"):
    # the repeated-filler haystack costs the model nothing to predict, the needles are a
    # letter key and a one-digit value, and token shift gives one attention layer the
    # previous token; NTP then retrieves key-matched needles in ~500-750 steps, where the
    # same model without token shift, or on stdlib source, stays at the random-needle level.
    "cpu": ProbeConfig(seq_len=64, n_layer=2, n_embd=64, n_head=4, batch_size=64, steps=1000, lr=1e-3, warmup=40,
                       variant="pairs", needles=4, train_queries=8, eval_per_depth=100, eval_every=100,
                       quick_eval=100, seeds=4, jobs=2, objectives=("ntp", "meap", "control"), vocab_size=1024,
                       haystack_text="filler", token_shift=True),
    # One H100/H200: the cpu preset's recipe at 8x the context (512 tokens, 8 needles among
    # ~400 filler tokens), a 4 x 256 model, 8 seeds as concurrent processes, the control
    # too. Not yet calibrated on a GPU (none was lent when it was written).
    "gpu": ProbeConfig(seq_len=512, n_layer=4, n_embd=256, n_head=8, batch_size=64, steps=3000, lr=1e-3,
                       warmup=100, variant="pairs", needles=8, train_queries=16, eval_per_depth=200, eval_every=250,
                       quick_eval=200, seeds=8, jobs=8, objectives=("ntp", "meap", "control"), vocab_size=1024,
                       haystack_text="filler", token_shift=True),
}


@dataclass
class ObjectiveResult:
    """What one objective's run produced: ``outcomes`` (bool per evaluation example),
    ``curve`` (per logged step: loss in nats per token, and quick-eval accuracy where
    evaluated), ``heldout_loss`` (nats per token on clean held-out text),
    ``steps_to_50`` (first evaluated step with quick-eval accuracy >= 0.5, or None),
    ``seconds`` of training."""

    objective: str
    seed: int
    outcomes: list[bool]
    curve: list[dict] = field(default_factory=list)
    heldout_loss: float = math.nan
    steps_to_50: int | None = None
    seconds: float = 0.0


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def init_model(cfg: ProbeConfig, vocab_size: int, seed: int):
    """The seed's initial model: the same weights for every objective."""
    import torch

    from ..model import GPT, ModelConfig

    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=vocab_size, seq_len=cfg.seq_len, n_layer=cfg.n_layer, n_embd=cfg.n_embd,
                           n_head=cfg.n_head, tie_embeddings=False, token_shift=cfg.token_shift))


def batch_stream(cfg: ProbeConfig, haystack: Haystack, seed: int):
    """The seed's training contexts, step by step (B, seq_len): a pure function of the
    seed, so every objective trains on the same batches in the same order."""
    builder = ContextBuilder(haystack, haystack.train, needle_format(cfg.variant), cfg.seq_len, cfg.n_needles,
                             cfg.train_queries)
    rng = np.random.default_rng([seed, 1])
    for _ in range(cfg.steps):
        yield builder.batch(rng, cfg.batch_size).ids


def corrupt(objective: str, ids: np.ndarray, haystack: Haystack, cfg: ProbeConfig, seed: int, step: int) -> np.ndarray:
    """The model inputs of ``objective`` for clean contexts ``ids`` (B, T)."""
    if objective == "ntp":
        return ids
    rule = PretrainRule(cfg.mask_ratio, exclude_ids=(haystack.eos_id,))
    lengths = np.full(len(ids), ids.shape[1])
    keys = [f"probe:{seed}:{step}:{i}" for i in range(len(ids))]
    masked = rule.apply(ids, lengths, rule.spans(lengths), keys, mask_id=haystack.mask_id,
                        pad_id=haystack.eos_id, seed=seed)
    if objective == "meap":
        return masked.input_ids
    # control: the same positions get tokens drawn from the haystack (its unigram
    # distribution, never a special token), the same draw for every run of the seed.
    noisy = ids.copy()
    rng = np.random.default_rng([seed, 2, step])
    noisy.reshape(-1)[masked.flat] = haystack.train[rng.integers(0, len(haystack.train), masked.flat.size)]
    return noisy


def predictor(model, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """``ids -> argmax next-token predictions`` of ``model`` (clean inputs, eval mode)."""
    import torch

    def predict(ids: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad(), _autocast(device):
            logits = model(torch.as_tensor(ids, dtype=torch.long, device=device))
        model.train()
        return logits.argmax(-1).cpu().numpy()

    return predict


def _autocast(device: str):
    import contextlib

    import torch

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def heldout_loss(model, haystack: Haystack, cfg: ProbeConfig, device: str) -> float:
    """Mean next-token loss (nats per token) on clean held-out haystack windows."""
    import torch

    rng = np.random.default_rng([cfg.eval_seed, 3])
    stream, T = haystack.held_out, cfg.seq_len
    losses = []
    model.eval()
    with torch.no_grad(), _autocast(device):
        for _ in range(cfg.heldout_batches):
            starts = rng.integers(0, len(stream) - T, cfg.batch_size)
            ids = torch.as_tensor(np.stack([stream[s:s + T] for s in starts]), dtype=torch.long, device=device)
            losses.append(float(model(ids, ids)))
    model.train()
    return float(np.mean(losses))


def train_objective(objective: str, cfg: ProbeConfig, haystack: Haystack, seed: int, evals: Examples,
                    on_batch: Callable[[str, int, np.ndarray, np.ndarray], None] | None = None,
                    log: Callable[[str], None] | None = None) -> ObjectiveResult:
    """Train one objective of one seed and evaluate it. ``on_batch(objective, step,
    clean_ids, inputs)`` sees every batch (tests use it to check the pairing)."""
    import torch

    from ..model import adamw, cosine_lr

    device = pick_device(cfg.device)
    model = init_model(cfg, haystack.vocab_size, seed).to(device)
    optimizer = adamw(model, cfg.lr, 0.1, (0.9, 0.95))
    quick = evals.take(np.random.default_rng([cfg.eval_seed, 4]).permutation(len(evals))[:cfg.quick_eval])
    result = ObjectiveResult(objective, seed, [])
    predict = predictor(model, device)
    started = time.perf_counter()
    for step, ids in enumerate(batch_stream(cfg, haystack, seed)):
        inputs = corrupt(objective, ids, haystack, cfg, seed, step)
        if on_batch is not None:
            on_batch(objective, step, ids, inputs)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, cfg.lr, cfg.warmup, cfg.steps, cfg.lr / 10)
        x = torch.as_tensor(inputs, dtype=torch.long, device=device)
        y = torch.as_tensor(ids, dtype=torch.long, device=device)
        with _autocast(device):
            loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        last = step == cfg.steps - 1
        if step % 10 == 0 or (step + 1) % cfg.eval_every == 0 or last:
            record = {"step": step + 1, "loss": loss.item()}
            if (step + 1) % cfg.eval_every == 0 or last:
                acc = accuracy(correct(predict, quick), quick)
                record["accuracy"], record["genuine"] = acc.accuracy, acc.genuine
                if result.steps_to_50 is None and acc.accuracy >= 0.5:
                    result.steps_to_50 = step + 1
                if log:
                    log(f"seed {seed} {objective}: step {step + 1}/{cfg.steps} loss {record['loss']:.3f} "
                        f"retrieval {acc.accuracy:.2f} (not first needle {acc.genuine:.2f})")
            result.curve.append(record)
    result.seconds = time.perf_counter() - started
    result.outcomes = [bool(x) for x in correct(predict, evals)]
    result.heldout_loss = heldout_loss(model, haystack, cfg, device)
    return result


def evaluation_examples(cfg: ProbeConfig, haystack: Haystack) -> Examples:
    """The fixed evaluation contexts (from held-out text): the same for every seed and
    objective. They end with as many queries as training contexts (only the first is
    scored; the later ones come after it, so a causal model's answer cannot see them):
    with one query the haystack would be longer, and a needle at depth 1 would sit at
    positions where training never put one, which a model with learned positions
    cannot read (measured: 0 at depth 1.0 although it retrieved at depth 0.5)."""
    builder = ContextBuilder(haystack, haystack.held_out, needle_format(cfg.variant), cfg.seq_len, cfg.n_needles,
                             cfg.train_queries)
    return eval_set(builder, cfg.depths, cfg.eval_per_depth, cfg.eval_seed)


def train_seed(cfg: ProbeConfig, haystack: Haystack, seed: int, log=None) -> list[ObjectiveResult]:
    """Every objective of one seed, in order."""
    evals = evaluation_examples(cfg, haystack)
    return [train_objective(o, cfg, haystack, seed, evals, log=log) for o in cfg.objectives]
