"""The whole probe: haystack, every seed (in worker processes when ``jobs`` > 1), the
report files."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import time

from ..errors import MeapDataError
from .haystack import Haystack, dataset_haystack, stdlib_haystack
from .needles import describe, needle_format
from .report import summarize, write_report
from .train import ProbeConfig, evaluation_examples, train_seed

log = logging.getLogger("meap_data.probe")


def load_haystack(directory: str | None, cfg: ProbeConfig) -> Haystack:
    """The user's dataset when ``directory`` is given, else the default haystack of ``cfg``."""
    if directory:
        return dataset_haystack(directory)
    return stdlib_haystack(vocab_size=cfg.vocab_size, text=cfg.haystack_text)


def _seed_job(cfg: ProbeConfig, haystack_dir: str | None, seed: int, threads: int):
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    return train_seed(cfg, load_haystack(haystack_dir, cfg), seed, log=log.info)


def run_probe(cfg: ProbeConfig, output: str, haystack_dir: str | None = None) -> dict:
    """Train and evaluate every (seed, objective); write report.json, report.md and
    probe.png to ``output``; return the report."""
    bad = [o for o in cfg.objectives if o not in ("ntp", "meap", "control")]
    if bad or not cfg.objectives:
        raise MeapDataError(f"--objectives takes ntp, meap and control, got {','.join(cfg.objectives)!r}")
    if cfg.seeds < 1 or cfg.steps < 1:
        raise MeapDataError(f"--seeds and --steps must be at least 1, got {cfg.seeds} and {cfg.steps}")
    if os.path.exists(os.path.join(output, "report.json")):
        raise MeapDataError(f"{output!r} already holds a probe report; choose another --output or remove it")
    started = time.perf_counter()
    haystack = load_haystack(haystack_dir, cfg)
    evals = evaluation_examples(cfg, haystack)
    log.info("probe: %s; %d seeds x %s, %d steps each, %d evaluation contexts", haystack.source, cfg.seeds,
             "/".join(cfg.objectives), cfg.steps, len(evals))
    seeds = list(range(cfg.seeds))
    results = []
    if cfg.jobs <= 1:
        for seed in seeds:
            results += train_seed(cfg, haystack, seed, log=log.info)
    else:
        threads = max(1, (os.cpu_count() or 1) // cfg.jobs)
        # spawn: CUDA cannot be shared with forked children.
        with concurrent.futures.ProcessPoolExecutor(cfg.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for part in pool.map(_seed_job, [cfg] * len(seeds), [haystack_dir] * len(seeds), seeds,
                                 [threads] * len(seeds)):
                results += part
    report = summarize(cfg, results, evals, haystack.source, describe(needle_format(cfg.variant), haystack))
    report["seconds"] = time.perf_counter() - started
    paths = write_report(report, output)
    log.info("probe: %s", report["verdict"])
    log.info("probe: wrote %s", ", ".join(paths.values()))
    return report
