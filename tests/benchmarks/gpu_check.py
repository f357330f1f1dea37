"""The GPU path, measured in one short window: one command for a lent CUDA machine.

    python tests/benchmarks/gpu_check.py --out gpu-report [--rust-corpus error-index.jsonl]
    python tests/benchmarks/gpu_check.py --out gpu-report --tiny     # the same steps on CPU, ~2 min

Steps, each timed, each reported even when another fails:
  1. bench: ``bench_train_gpu.py`` (GPT-2 small, bf16, compiled) for MEAP and NTP, with
     causal attention and with the flex-attention document mask: tokens/s, MFU,
     data-wait fraction, the MEAP/NTP step-time ratio, flex vs causal step time.
  2. finetune: a small Hugging Face Llama built from a config (its tokenizer trained
     here on the Rust corpus), ``meap-train --init-from`` on a ``--kind rust`` repair
     dataset, then ``rust eval-repair`` on 50 eval examples (skipped, saying why, where
     rustc is missing: the GPU image has none, so pass ``--rust-corpus`` built elsewhere
     with ``meap-data rust error-index``; generation is judged only with rustc).
  3. probe: the probe's ``gpu`` preset (concurrent seeds, control included) at reduced steps.

Writes ``report.json`` and ``report.md`` under ``--out`` with the targets: MFU >= 40% at
124M on H100, MEAP/NTP step time within 2%, flex document mask within 15% of causal step
time ("not measured" without CUDA). ``--tiny`` (the default without CUDA) runs every step
at tiny sizes, so the script is known to work before a GPU sees it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import torch  # noqa: E402

TARGETS = {"mfu": 0.40, "meap_ntp_ratio": 0.02, "flex_vs_causal": 0.15}


class SkipStep(Exception):
    """A step this machine cannot run; reported as skipped, with the reason."""


def step_bench(work: str, tiny: bool) -> dict:
    import bench_train_gpu as bench

    from meap_data.model import choose_doc_attention

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = ["--work", os.path.join(work, "bench")]
    if tiny:
        base += ["--cpu-small", "--tiny", "--steps", "6", "--interval", "2", "--batch-size", "4", "--threads", "1"]
    else:
        base += ["--steps", "40", "--interval", "10"]
    causal = bench.benchmark(bench.build_parser().parse_args(base))
    flex = bench.benchmark(bench.build_parser().parse_args([*base, "--doc-mask", "--doc-attention", "flex"]))
    backend, reason = choose_doc_attention("flex", device)
    return {
        "causal": causal,
        "doc_mask": flex,
        "doc_mask_backend": backend,
        "doc_mask_reason": reason,
        "flex_over_causal_step_time": {o: flex["step_s"][o] / causal["step_s"][o] for o in ("meap", "ntp")},
    }


def _rust_corpus(work: str, given: str | None, tiny: bool) -> str:
    if given:
        return given
    from meap_data.errors import MeapDataError
    from meap_data.rust import error_index as EI
    from meap_data.rust.harvest import find_toolchain

    try:
        toolchain = find_toolchain()
    except MeapDataError as exc:
        raise SkipStep(f"no --rust-corpus and no rustc to build one ({exc})") from exc
    path = os.path.join(work, "error-index.jsonl")
    EI.build_corpus(path, limit=80 if tiny else 400, jobs=os.cpu_count() or 2, toolchain=toolchain)
    return path


def step_finetune(work: str, tiny: bool, corpus_arg: str | None) -> dict:
    import transformers
    from tokenizers import ByteLevelBPETokenizer

    from meap_data import train_shards
    from meap_data.config import PrepareConfig
    from meap_data.kinds.rust import RustOptions
    from meap_data.prepare import run_prepare
    from meap_data.rust.render import transcript_text

    corpus = _rust_corpus(work, corpus_arg, tiny)
    records = [json.loads(line) for line in open(corpus, encoding="utf-8")]
    seq = 768 if tiny else 1024
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([transcript_text(r) for r in records], vocab_size=900 if tiny else 4096,
                            min_frequency=2, special_tokens=["</s>"], show_progress=False)
    model_dir = os.path.join(work, "llama")
    os.makedirs(model_dir, exist_ok=True)
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    size = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4) if tiny else \
        dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8)
    config = transformers.LlamaConfig(vocab_size=tok.get_vocab_size(), num_key_value_heads=size["num_attention_heads"],
                                      max_position_embeddings=seq, eos_token_id=tok.token_to_id("</s>"), **size)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    data = os.path.join(work, "rust-ds")
    run_prepare(PrepareConfig(inputs=(corpus,), kind="rust", seq_len=seq, options=RustOptions(eval_fraction=0.3)),
                data, tokenizer=model_dir, overwrite=True)
    run = os.path.join(work, "finetune")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    result = train_shards.train(train_shards.build_parser().parse_args([
        "--data", os.path.join(data, "train"), "--out", run, "--init-from", model_dir, "--device", device,
        "--batch-size", "4" if tiny else "16", "--lr", "3e-3" if tiny else "1e-3", "--warmup-steps", "2",
        "--max-steps", "8" if tiny else "150", "--eval-samples", "0", "--quiet", "--overwrite"]))
    out = {"corpus_records": len(records), "params": sum(p.numel() for p in transformers.AutoModelForCausalLM
                                                          .from_pretrained(os.path.join(run, "hf")).parameters()),
           "steps": result["step"], "first_loss": result["losses"][0], "last_loss": result["losses"][-1],
           "train_seconds": time.perf_counter() - started}
    try:
        from meap_data.rust.harvest import find_toolchain

        find_toolchain()
    except Exception as exc:  # the GPU image has no Rust toolchain
        out["eval_repair"] = f"skipped: rustc not found here ({exc}); generations are judged only by the compiler"
        return out
    from meap_data.rust.eval_repair import eval_repair

    report = eval_repair(os.path.join(run, "hf"), os.path.join(data, "eval"), os.path.join(work, "eval-repair"),
                         records=[corpus], limit=50, samples=1 if tiny else 4, max_new_tokens=32 if tiny else 256,
                         device=device)
    out["eval_repair"] = {k: report[k] for k in ("samples", "generations", "overall", "identity", "seconds")}
    return out


def step_probe(work: str, tiny: bool) -> dict:
    from meap_data.probe.run import run_probe
    from meap_data.probe.train import PRESETS

    cfg = PRESETS["gpu"]
    if tiny:  # the gpu preset's code path (concurrent seed processes, control) at toy sizes
        cfg = dataclasses.replace(cfg, seq_len=128, n_layer=1, n_embd=32, n_head=2, batch_size=4, steps=6, needles=2,
                                  train_queries=2,
                                  seeds=2, jobs=2, eval_per_depth=6, quick_eval=6, eval_every=3, heldout_batches=1,
                                  vocab_size=512, device="cpu")
    else:
        cfg = dataclasses.replace(cfg, steps=600, eval_every=200)
    out = os.path.join(work, "probe")
    shutil.rmtree(out, ignore_errors=True)
    report = run_probe(cfg, out)
    return {"verdict": report["verdict"], "seconds": report["seconds"], "steps": cfg.steps, "seeds": cfg.seeds,
            "objectives": {name: {k: o[k] for k in ("accuracy", "genuine", "heldout_loss") if k in o}
                           for name, o in report["objectives"].items()}}


def targets(bench: dict | None) -> dict:
    """Each target: measured value and verdict, or "not measured" (no CUDA, or no bench)."""
    if not bench or not torch.cuda.is_available():
        why = "not measured: no CUDA device" if not torch.cuda.is_available() else "not measured: the bench failed"
        return {name: why for name in TARGETS}
    mfu = bench["causal"]["mfu"]["meap"]
    ratio = bench["causal"]["step_time_ratio_meap_over_ntp"]
    flex = max(bench["flex_over_causal_step_time"].values())
    return {
        "mfu": {"value": mfu, "target": ">= 0.40", "met": mfu is not None and mfu >= TARGETS["mfu"]},
        "meap_ntp_ratio": {"value": ratio, "target": "within 2%", "met": abs(ratio - 1) <= TARGETS["meap_ntp_ratio"]},
        "flex_vs_causal": {"value": flex, "target": "within 15%",
                           "met": bench["doc_mask_backend"] == "flex" and flex <= 1 + TARGETS["flex_vs_causal"]},
    }


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "", f"torch {report['torch']}, {report['mode']} sizes, "
             f"{report['seconds']:.0f} s in all", "", "| step | status | seconds |", "|---|---|---|"]
    for name, step in report["steps"].items():
        lines.append(f"| {name} | {step['status']} | {step['seconds']:.1f} |")
    lines += ["", "## Targets", ""]
    for name, t in report["targets"].items():
        lines.append(f"- {name}: " + (t if isinstance(t, str) else
                                      f"{t['value']:.4g} (target {t['target']}): {'met' if t['met'] else 'NOT met'}"))
    bench = report["steps"].get("bench", {}).get("result")
    if bench:
        lines += ["", "## Bench", "", "| attention | objective | ms/step | tokens/s | MFU |", "|---|---|---|---|---|"]
        for label, key in (("causal", "causal"), (f"document mask ({bench['doc_mask_backend']})", "doc_mask")):
            for o in ("meap", "ntp"):
                mfu = bench[key]["mfu"][o]
                lines.append(f"| {label} | {o} | {bench[key]['step_s'][o] * 1e3:.1f} | "
                             f"{bench[key]['tokens_per_s'][o]:,.0f} | {'n/a' if mfu is None else f'{mfu:.1%}'} |")
        lines += ["", f"MEAP/NTP step time (causal): {bench['causal']['step_time_ratio_meap_over_ntp']:.4f}; "
                      f"data wait: {bench['causal']['data_wait']:.2%}; document mask: {bench['doc_mask_reason']}"]
    for name in ("finetune", "probe"):
        result = report["steps"].get(name, {}).get("result")
        if result:
            lines += ["", f"## {name.title()}", "", "```json", json.dumps(result, indent=1, default=str)[:4000], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for report.json, report.md and the work files")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the default without CUDA)")
    p.add_argument("--rust-corpus", default=None, help="error-index JSONL (meap-data rust error-index) for the "
                   "fine-tune; default: built here when rustc is found")
    p.add_argument("--steps", default="bench,finetune,probe", help="which steps, comma-separated")
    args = p.parse_args(argv)
    tiny = args.tiny or not torch.cuda.is_available()
    if tiny:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, "work")
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    steps: dict[str, dict] = {}
    runners = {"bench": lambda: step_bench(work, tiny), "finetune": lambda: step_finetune(work, tiny, args.rust_corpus),
               "probe": lambda: step_probe(work, tiny)}
    for name in [s.strip() for s in args.steps.split(",") if s.strip()]:
        t0 = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            steps[name] = {"status": "ok", "result": runners[name]()}
        except SkipStep as exc:
            steps[name] = {"status": f"skipped: {exc}"}
        except Exception as exc:  # one step's failure must not cost the others their figures
            steps[name] = {"status": f"failed: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        steps[name]["seconds"] = time.perf_counter() - t0
        print(f"gpu_check: {name}: {steps[name]['status']} ({steps[name]['seconds']:.0f} s)", flush=True)
    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or 'cpu'})",
        "torch": torch.__version__, "mode": "tiny" if tiny else "full", "steps": steps,
        "targets": targets(steps.get("bench", {}).get("result")), "seconds": time.perf_counter() - started,
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    return 0 if all(s["status"] == "ok" or s["status"].startswith("skipped") for s in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
