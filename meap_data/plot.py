"""``meap-data plot RUN...``: training curves of ``meap-train`` runs as one PNG.

Left: the training loss per logged step; right: the held-out loss (the ntp view, which
compares objectives; dashed: a MEAP run's loss on masked inputs). Runs are overlaid,
labelled by their directory, so a MEAP and an NTP run on the same data read side by side.
"""

from __future__ import annotations

import json
import os

from .errors import MeapDataError

METRICS = "metrics.jsonl"


def read_metrics(run: str) -> tuple[list[dict], list[dict]]:
    """(train records, eval records) of a run directory's metrics.jsonl."""
    path = os.path.join(run, METRICS)
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except OSError as exc:
        raise MeapDataError(f"{run!r} has no readable {METRICS} ({exc.strerror}); pass a meap-train --out "
                            "directory") from exc
    except json.JSONDecodeError as exc:
        raise MeapDataError(f"{path}: not JSON lines ({exc.msg}); the run's log is damaged") from exc
    return [r for r in records if r.get("kind") == "train"], [r for r in records if r.get("kind") == "eval"]


def _labels(runs: list[str]) -> list[str]:
    names = [os.path.basename(os.path.normpath(r)) for r in runs]
    if len(set(names)) < len(names):  # same basename: add the parent
        names = [os.path.join(*os.path.normpath(r).split(os.sep)[-2:]) for r in runs]
    return names


def plot_runs(runs: list[str], output: str, x: str = "step") -> str:
    """Draw the runs' curves into ``output`` (PNG); ``x``: "step" or "tokens" (positions
    fed). Returns ``output``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MeapDataError("meap-data plot needs matplotlib: pip install 'meap-data[train]'") from exc
    if x not in ("step", "tokens"):
        raise MeapDataError(f"--x must be step or tokens, got {x!r}")
    data = [read_metrics(r) for r in runs]
    if not any(train for train, _ in data):
        raise MeapDataError(f"no training records in {', '.join(runs)}: the runs logged nothing yet")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for label, (train, evals), color in zip(_labels(runs), data, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 9):
        if train:
            left.plot([r[x] for r in train], [r["loss"] for r in train], color=color, label=label)
        if evals:
            # The eval records carry the step; tokens come from the train record of that step.
            at = {r["step"]: r[x] for r in train}
            xs = [at.get(r["step"], r["step"]) if x == "tokens" else r["step"] for r in evals]
            right.plot(xs, [r["eval_loss"] for r in evals], "o-", color=color, label=f"{label} (clean inputs)")
            masked = [r.get("eval_loss_masked") for r in evals]
            if any(v is not None for v in masked):
                right.plot(xs, masked, "s--", color=color, alpha=0.6, label=f"{label} (masked inputs)")
    xlabel = "optimiser step" if x == "step" else "positions fed (tokens)"
    for ax, title in ((left, "training loss"), (right, "held-out loss")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("nats per target token")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
