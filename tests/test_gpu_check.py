"""``tests/benchmarks/gpu_check.py`` runs its three steps (training benchmark with causal
and document-masked attention, an ``--init-from`` fine-tune with ``rust eval-repair``, the
probe's gpu preset) at tiny sizes on CPU in under 3 minutes and writes both reports, so
the script is known to work before a GPU ever runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "benchmarks", "gpu_check.py")


def test_gpu_check_runs_every_step_at_tiny_size(tmp_path):
    out = tmp_path / "report"
    started = time.monotonic()
    r = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--tiny"], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    seconds = time.monotonic() - started
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.load(open(out / "report.json"))
    assert set(report["steps"]) == {"bench", "finetune", "probe"} and report["mode"] == "tiny"
    for name, step in report["steps"].items():
        assert step["status"] == "ok" or step["status"].startswith("skipped: no --rust-corpus"), (name, step["status"])
    bench = report["steps"]["bench"]["result"]
    for key in ("causal", "doc_mask"):
        assert set(bench[key]["tokens_per_s"]) == {"meap", "ntp"} and bench[key]["step_time_ratio_meap_over_ntp"] > 0
    assert bench["doc_mask_backend"] in ("flex", "dense") and bench["doc_mask_reason"]
    probe = report["steps"]["probe"]["result"]
    assert probe["seeds"] == 2 and set(probe["objectives"]) == {"ntp", "meap", "control"}
    if report["steps"]["finetune"]["status"] == "ok":
        finetune = report["steps"]["finetune"]["result"]
        assert finetune["steps"] == 8 and "eval_repair" in finetune
    import torch

    if not torch.cuda.is_available():
        assert all(t == "not measured: no CUDA device" for t in report["targets"].values())
    md = open(out / "report.md").read()
    assert md.startswith("# GPU check:") and "| bench | ok |" in md
    assert seconds < 180, f"the tiny run took {seconds:.0f} s (budget 180 s)"
