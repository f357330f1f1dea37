"""``meap-data probe``: its options (every :class:`ProbeConfig` knob) and the command."""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import MeapDataError
from .haystack import HAYSTACK_TEXTS
from .needles import VARIANTS
from .train import PRESETS, ProbeConfig

_HELP = {
    "seq_len": "tokens per context", "n_layer": "decoder layers", "n_embd": "model width", "n_head": "attention heads",
    "batch_size": "contexts per step", "steps": "optimiser steps per run", "lr": "peak learning rate",
    "warmup": "warmup steps", "mask_ratio": "share of inputs MEAP masks (and the control corrupts)",
    "needles": "needles per context (default: the variant's: kv 8, pairs 4, passkey 1, natural 4)",
    "eval_per_depth": "evaluation contexts per depth", "eval_every": "steps between quick evaluations",
    "quick_eval": "contexts in a quick evaluation", "train_queries": "queries ending each training context",
    "seeds": "paired seeds", "eval_seed": "seed of the evaluation contexts", "device": "auto, cpu or cuda[:N]",
    "jobs": "seeds trained at once, one process each (gpu preset: 8 on one GPU)",
    "heldout_batches": "batches of clean held-out text for the held-out loss",
    "vocab_size": "tokens of the BPE trained on the default haystack (ignored with --haystack)",
}


def register(sub) -> None:
    p = sub.add_parser(
        "probe", help="does MEAP beat NTP at in-context retrieval here? paired tiny models, statistics, verdict",
        description="Train paired tiny decoders (MEAP, NTP, optionally a random-token control) on the same "
        "haystack, batches and initialisation per seed, then score exact-match retrieval of needles placed at "
        "controlled depths among distractors. Writes report.json, report.md and probe.png to --output and "
        "prints the verdict. Presets: cpu (4 seeds x ntp/meap/control, about 16 minutes on 2 cores), gpu "
        "(one H100/H200, 8 seeds at once; not yet timed on one); every knob below overrides the preset.")
    p.add_argument("--output", required=True, metavar="DIR", help="where the report goes (must not hold one)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="starting sizes (default: cpu)")
    p.add_argument("--haystack", metavar="DATASET_DIR", default=None,
                   help="a prepared meap-data dataset to cut contexts from (default: --haystack-text)")
    p.add_argument("--variant", choices=VARIANTS, default=None,
                   help="pairs (cpu preset: a letter key then a one-digit value, '\\nQ7\\n'), kv (gpu preset: "
                   "'key 4821 holds 9317.'), passkey or natural")
    p.add_argument("--haystack-text", choices=HAYSTACK_TEXTS, default=None,
                   help="the default haystack's text: filler (cpu preset: a few sentences repeated) or stdlib "
                   "(gpu preset: the standard library's source); ignored with --haystack")
    p.add_argument("--token-shift", action=argparse.BooleanOptionalAction, default=None,
                   help="mix each token's embedding with the previous one's (cpu preset: on; gpu: off)")
    p.add_argument("--objectives", default=None, metavar="LIST",
                   help="comma-separated from ntp, meap, control (cpu preset: ntp,meap; gpu: all three)")
    p.add_argument("--depths", default=None, metavar="LIST", help="target depths, 0..1 (default: 0,0.25,0.5,0.75,1)")
    for f in dataclasses.fields(ProbeConfig):
        if f.name in _HELP:
            kind = float if f.name in ("lr", "mask_ratio") else (str if f.name == "device" else int)
            p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None, help=_HELP[f.name])
    p.set_defaults(func=cmd_probe)


def config_from_args(args: argparse.Namespace) -> ProbeConfig:
    """The preset with every given option applied."""
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(ProbeConfig)
               if f.name in _HELP and getattr(args, f.name, None) is not None}
    for name in ("variant", "haystack_text", "token_shift"):
        if getattr(args, name, None) is not None:
            changes[name] = getattr(args, name)
    if args.objectives:
        changes["objectives"] = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    if args.depths:
        try:
            changes["depths"] = tuple(float(d) for d in args.depths.split(","))
        except ValueError:
            raise MeapDataError(f"--depths takes numbers between 0 and 1, got {args.depths!r}") from None
        if not all(0 <= d <= 1 for d in changes["depths"]):
            raise MeapDataError(f"--depths takes numbers between 0 and 1, got {args.depths!r}")
    return dataclasses.replace(PRESETS[args.preset], **changes)


def cmd_probe(args: argparse.Namespace) -> int:
    from .run import run_probe

    report = run_probe(config_from_args(args), args.output, args.haystack)
    print(open(f"{args.output}/report.md", encoding="utf-8").read())
    print(f"verdict: {report['verdict']}")
    return 0
