"""Statistics across seeds, the verdict, and the report files.

The compared figure per seed is *genuine retrieval*: exact-match accuracy on evaluation
contexts whose target is not the first needle (overall accuracy for one-needle
variants), so copying the first value cannot pass as retrieval. MEAP (and the control)
are compared with NTP seed by seed (paired: same batches, same initialisation).

Verdict, in this order:

- ``uninformative``: NTP's mean genuine retrieval is below :data:`LEARNED_FLOOR`; the
  models did not learn retrieval, so a difference says nothing: use a bigger preset.
- ``MEAP helps`` / ``MEAP hurts``: the bootstrap 95% interval of the mean paired
  difference excludes 0 *and* McNemar's exact test on all evaluation outcomes pooled
  over seeds gives p < 0.05.
- ``no effect``: the interval lies inside +-:data:`EQUIVALENCE_MARGIN`.
- ``inconclusive``: anything else (more seeds narrow the interval).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np

from ..stats import mcnemar, paired_bootstrap, sign_test, wilcoxon_signed_rank
from .needles import Examples
from .scoring import accuracy, by_depth
from .train import ObjectiveResult, ProbeConfig

#: NTP must reach this mean genuine retrieval (0..1) for a comparison to mean anything.
LEARNED_FLOOR = 0.2
#: A difference (accuracy points, 0..1) this small either way counts as no effect.
EQUIVALENCE_MARGIN = 0.05
BASELINE = "ntp"


def summarize(cfg: ProbeConfig, results: list[ObjectiveResult], evals: Examples, haystack_source: str,
              needles: str = "") -> dict:
    """The report as a JSON-able dict: per objective (accuracy by depth, genuine
    retrieval, held-out loss, steps to 50%) and per comparison with NTP (paired
    differences per seed, bootstrap interval, sign and Wilcoxon tests, McNemar within
    each seed and pooled), and the verdict."""
    seeds = sorted({r.seed for r in results})
    runs = {(r.objective, r.seed): r for r in results}
    objectives = {}
    for objective in cfg.objectives:
        mine = [runs[(objective, s)] for s in seeds]
        per_seed = [accuracy(np.array(r.outcomes), evals) for r in mine]
        seed_depths = [by_depth(np.array(r.outcomes), evals) for r in mine]  # once per run
        depth_rows = {}
        for depth in cfg.depths:
            values = [d[float(depth)] for d in seed_depths]
            accs = [v.accuracy for v in values]
            depth_rows[str(depth)] = {
                "accuracy": float(np.mean(accs)),
                "interval": _interval(accs),
                "not_first": _mean([v.not_first for v in values]),
                "primacy": values[0].primacy,
            }
        objectives[objective] = {
            "accuracy": float(np.mean([a.accuracy for a in per_seed])),
            "genuine": float(np.mean([a.genuine for a in per_seed])),
            "genuine_per_seed": [a.genuine for a in per_seed],
            "primacy": per_seed[0].primacy,
            "chance": per_seed[0].chance,
            "heldout_loss": float(np.mean([r.heldout_loss for r in mine])),
            "steps_to_50": [r.steps_to_50 for r in mine],
            "seconds": float(sum(r.seconds for r in mine)),
            "by_depth": depth_rows,
            "curves": {str(r.seed): r.curve for r in mine},
        }
    comparisons = {}
    for objective in cfg.objectives:
        if objective == BASELINE or BASELINE not in cfg.objectives:
            continue
        comparisons[f"{objective}-vs-{BASELINE}"] = compare(
            [runs[(objective, s)] for s in seeds], [runs[(BASELINE, s)] for s in seeds], evals)
    report = {
        "config": cfg.to_json(),
        "haystack": haystack_source,
        "needles": needles,
        "seeds": seeds,
        "evaluation": {"examples": len(evals), "depths": list(cfg.depths), "needles": cfg.n_needles},
        "objectives": objectives,
        "comparisons": comparisons,
    }
    report["verdict"] = verdict(report)
    return report


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _interval(values: list[float]) -> list[float]:
    """Bootstrap 95% interval of a mean over seeds (the values against zeros)."""
    if len(values) < 2:
        return [float(values[0]), float(values[0])] if values else [0.0, 0.0]
    iv = paired_bootstrap(values, [0.0] * len(values), resamples=2000, seed=0)
    return [iv.low, iv.high]


def _genuine_mask(evals: Examples) -> np.ndarray:
    later = evals.target_rank > 0
    return later if later.any() else np.ones(len(evals), dtype=bool)


def compare(a: list[ObjectiveResult], b: list[ObjectiveResult], evals: Examples) -> dict:
    """``a`` vs ``b`` (the same seeds, in order) on genuine retrieval."""
    keep = _genuine_mask(evals)
    ga = [float(np.array(r.outcomes)[keep].mean()) for r in a]
    gb = [float(np.array(r.outcomes)[keep].mean()) for r in b]
    diffs = [x - y for x, y in zip(ga, gb)]
    iv = paired_bootstrap(ga, gb, resamples=10_000, seed=0)
    within = [mcnemar(list(np.array(x.outcomes)[keep]), list(np.array(y.outcomes)[keep])) for x, y in zip(a, b)]
    pooled_a = [o for r in a for o in np.array(r.outcomes)[keep]]
    pooled_b = [o for r in b for o in np.array(r.outcomes)[keep]]
    pooled = mcnemar(pooled_a, pooled_b)
    return {
        "differences": diffs,
        "mean_difference": iv.mean,
        "interval": [iv.low, iv.high],
        "sign_test_p": sign_test(diffs),
        "wilcoxon_p": wilcoxon_signed_rank(diffs),
        "mcnemar_per_seed": [asdict(m) for m in within],
        "mcnemar_pooled": asdict(pooled),
    }


def format_p(p: float) -> str:
    """``=0.0123``, or ``<1e-300`` where an exact test's p-value underflows a double (an
    exact binomial over thousands of discordant pairs) rather than a misleading ``=0``."""
    return "<1e-300" if p < 1e-300 else f"={p:.3g}"


def verdict(report: dict) -> str:
    """One line: the verdict on MEAP vs NTP and the figures behind it (see the module)."""
    objectives = report["objectives"]
    if "meap" not in objectives or BASELINE not in objectives:
        return "no verdict: train both meap and ntp (--objectives ntp,meap)"
    ntp, meap = objectives[BASELINE]["genuine"], objectives["meap"]["genuine"]
    cmp = report["comparisons"]["meap-vs-ntp"]
    low, high = cmp["interval"]
    figures = (f"genuine retrieval NTP {ntp:.2f}, MEAP {meap:.2f}; difference {cmp['mean_difference']:+.3f} "
               f"[{low:+.3f}, {high:+.3f}] over {len(report['seeds'])} seeds, pooled McNemar "
               f"p{format_p(cmp['mcnemar_pooled']['p_value'])}")
    if ntp < LEARNED_FLOOR:
        return (f"uninformative: NTP did not learn genuine retrieval ({ntp:.2f} < {LEARNED_FLOOR} on targets that "
                f"are not the first needle; {figures}); use a bigger preset (--preset gpu) or more --steps")
    significant = cmp["mcnemar_pooled"]["p_value"] < 0.05
    if low > 0 and significant:
        return f"MEAP helps: {figures}"
    if high < 0 and significant:
        return f"MEAP hurts: {figures}"
    if -EQUIVALENCE_MARGIN <= low and high <= EQUIVALENCE_MARGIN:
        return f"no effect: {figures}"
    return f"inconclusive: {figures}; add seeds (--seeds)"


def markdown(report: dict) -> str:
    """``report.md``: the tables and the verdict."""
    cfg = report["config"]
    lines = [
        "# MEAP retrieval probe",
        "",
        f"**Verdict:** {report['verdict']}",
        "",
        f"Haystack: {report['haystack']}. Variant `{cfg['variant']}`, {cfg['n_needles']} needles per context, "
        f"{cfg['seq_len']} tokens; {cfg['n_layer']} layers x {cfg['n_embd']} wide; {cfg['steps']} steps of "
        f"{cfg['batch_size']} contexts; seeds {report['seeds']}; {report['evaluation']['examples']} evaluation "
        "contexts (held-out text), the same for every run.",
        "",
        f"Needles: {report.get('needles') or cfg['variant']}.",
        "",
        "| objective | accuracy | not first needle (genuine) | primacy baseline | chance | held-out loss (nats) "
        "| steps to 50% |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, o in report["objectives"].items():
        steps = ", ".join("-" if s is None else str(s) for s in o["steps_to_50"])
        lines.append(f"| {name} | {o['accuracy']:.3f} | {o['genuine']:.3f} | {o['primacy']:.3f} | {o['chance']:.3f} "
                     f"| {o['heldout_loss']:.3f} | {steps} |")
    lines += ["", "Accuracy by depth of the target (mean over seeds, bootstrap 95% interval; primacy = share of "
              "contexts at that depth whose target is the first needle):", "",
              "| depth | " + " | ".join(report["objectives"]) + " | primacy |",
              "|---|" + "---|" * (len(report["objectives"]) + 1)]
    for depth in map(str, cfg["depths"]):
        cells = []
        for o in report["objectives"].values():
            row = o["by_depth"][depth]
            cells.append(f"{row['accuracy']:.2f} [{row['interval'][0]:.2f}, {row['interval'][1]:.2f}]")
        primacy = next(iter(report["objectives"].values()))["by_depth"][depth]["primacy"]
        lines.append(f"| {depth} | " + " | ".join(cells) + f" | {primacy:.2f} |")
    if report["comparisons"]:
        lines += ["", "Paired comparisons on genuine retrieval (per seed: objective minus NTP):", "",
                  "| comparison | differences | mean [95% CI] | sign p | Wilcoxon p | McNemar pooled p |",
                  "|---|---|---|---|---|---|"]
        for name, c in report["comparisons"].items():
            diffs = ", ".join(f"{d:+.3f}" for d in c["differences"])
            lines.append(f"| {name} | {diffs} | {c['mean_difference']:+.3f} [{c['interval'][0]:+.3f}, "
                         f"{c['interval'][1]:+.3f}] | {c['sign_test_p']:.3g} | {c['wilcoxon_p']:.3g} | "
                         f"{format_p(c['mcnemar_pooled']['p_value']).lstrip('=')} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: str) -> str:
    """``probe.png``: accuracy by depth per objective (with intervals and the primacy
    baseline) and the training curves (loss and quick-eval retrieval per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_depth, ax_loss, ax_acc) = plt.subplots(1, 3, figsize=(16, 4.5), constrained_layout=True)
    depths = report["config"]["depths"]
    colors = dict(zip(report["objectives"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for name, o in report["objectives"].items():
        rows = [o["by_depth"][str(d)] for d in depths]
        mean = np.array([r["accuracy"] for r in rows])
        low = mean - np.array([r["interval"][0] for r in rows])
        high = np.array([r["interval"][1] for r in rows]) - mean
        ax_depth.errorbar(depths, mean, yerr=[low, high], marker="o", capsize=3, label=name, color=colors[name])
        for seed, curve in o["curves"].items():
            label = name if seed == next(iter(o["curves"])) else None
            ax_loss.plot([r["step"] for r in curve], [r["loss"] for r in curve], color=colors[name], alpha=0.6,
                         label=label)
            evals = [r for r in curve if "genuine" in r]
            ax_acc.plot([r["step"] for r in evals], [r["genuine"] for r in evals], marker=".", color=colors[name],
                        alpha=0.7, label=label)
    first = next(iter(report["objectives"].values()))
    ax_depth.plot(depths, [first["by_depth"][str(d)]["primacy"] for d in depths], "k--", label="primacy baseline")
    ax_depth.set(xlabel="depth of the target (0 = start)", ylabel="exact-match accuracy", ylim=(-0.02, 1.02),
                 title="retrieval by depth")
    ax_loss.set(xlabel="step", ylabel="training loss (nats/token)", title="training loss")
    ax_acc.set(xlabel="step", ylabel="retrieval, target not first needle", ylim=(-0.02, 1.02),
               title="genuine retrieval during training")
    for ax in (ax_depth, ax_loss, ax_acc):
        ax.legend()
    fig.suptitle(report["verdict"][:150], fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, output: str) -> dict[str, str]:
    """report.json, report.md and probe.png in ``output``; their paths."""
    os.makedirs(output, exist_ok=True)
    paths = {"json": os.path.join(output, "report.json"), "md": os.path.join(output, "report.md"),
             "png": os.path.join(output, "probe.png")}
    with open(paths["json"], "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(markdown(report))
    plot(report, paths["png"])
    return paths
