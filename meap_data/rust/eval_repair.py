"""``meap-data rust eval-repair``: judge a model's Rust repairs with the compiler.

For each record of a ``--kind rust`` repair dataset (normally its ``eval`` split), the
prompt is the record's clean copy up to its answer, token for token as in training; the
model samples K answers; the text up to the closing fence is the candidate fix. Each
candidate is compiled with the record's edition, environment and emit mode (and its tests
run, when the record has test results). A generation *compiles* when rustc exits 0,
*removes the code* when the record's primary error code is no longer produced, and
*passes* when it compiles and, for records with tests, the tests pass.

The report gives compile rate, pass@1 and pass@K (the unbiased estimator), and the
code-gone rate, overall and by error-code family, next to the *identity baseline* (the
broken source returned as is), so the numbers have a floor. ``generations.jsonl`` holds
every generation as a transcript record with its own compiler output and
``fixed_source`` = the record's reference fix, so failed repairs are new training data.
``meap-data compare RUN_A RUN_B`` pairs two reports on the same records.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from meap_data.errors import MeapDataError
from meap_data.inputs import FileRange, expand_inputs
from meap_data.manifest import DatasetManifest
from meap_data.progress import Progress
from meap_data.rust.crate_judge import CrateBench
from meap_data.rust.crates import DEBIAN_REGISTRY
from meap_data.rust.harvest import Toolchain, compile_source, find_toolchain
from meap_data.rust.mutate import INFERENCE_CODES, OWNERSHIP_CODES
from meap_data.rust.records import SCHEMA_VERSION, iter_records, primary_code, write_records
from meap_data.rust.tests_run import file_tests
from meap_data.sample_format import IGNORE_INDEX
from meap_data.stats import Interval, McNemar, mcnemar, paired_bootstrap, pass_at_k

REPORT = "report.json"
GENERATIONS = "generations.jsonl"
FENCE = "```"
NAME_CODES = frozenset({"E0425", "E0433", "E0412", "E0432", "E0061", "E0423", "E0424", "E0405", "E0422", "E0063"})
TYPE_CODES = frozenset({"E0308", "E0277", "E0599", "E0369", "E0600", "E0614", "E0606", "E0605", "E0631", "E0053"})


def code_family(code: str | None) -> str:
    """inference, ownership, names, types or other, by the error code."""
    if code in INFERENCE_CODES:
        return "inference"
    if code in OWNERSHIP_CODES:
        return "ownership"
    if code in NAME_CODES:
        return "names"
    if code in TYPE_CODES:
        return "types"
    return "other"


@dataclasses.dataclass(frozen=True)
class Task:
    """One record to repair: its key, prompt token ids and the record."""

    key: str
    prompt_ids: list[int]
    record: dict

    @property
    def code(self) -> str | None:
        return primary_code(self.record)


def prompts_of(manifest: DatasetManifest) -> dict[str, list[int]]:
    """Record key -> the prompt token ids of its clean copy, in dataset order."""
    import pyarrow as pa

    from meap_data import storage

    out: dict[str, list[int]] = {}
    for entry in manifest.shards("arrow"):
        with storage.open_read(storage.join(manifest.directory, entry["path"])) as f:
            table = pa.ipc.open_stream(f).read_all()
        for row in table.select(["input_ids", "labels", "doc_offsets", "doc_keys", "length"]).to_pylist():
            bounds = row["doc_offsets"] + [row["length"]]
            for d, key in enumerate(row["doc_keys"]):
                a, b = bounds[d], bounds[d + 1]
                # The clean copy supervises its answer through the final eos; a masked
                # copy's eos takes no loss.
                if key in out or row["labels"][b - 1] == IGNORE_INDEX:
                    continue
                first = next(i for i in range(a, b) if row["labels"][i] != IGNORE_INDEX)
                out[key] = row["input_ids"][a:first]
    return out


#: (kind, task) of the datasets this judge reads: prompts are broken programs.
REPAIR_DATASET = ("rust", "repair")


def records_by_key(paths: Iterable[str], keys: set[str]) -> dict[str, dict]:
    """The transcript records of ``paths`` whose key is in ``keys``."""
    found = {}
    for f in expand_inputs(list(paths)):
        for record, _ in iter_records(FileRange(f)):
            if record is not None and record["key"] in keys:
                found[record["key"]] = record
    return found


def load_tasks(data: str, records: list[str] | None, limit: int | None) -> tuple[DatasetManifest, list[Task]]:
    manifest = DatasetManifest.read(data)
    if (manifest.kind, manifest.config.get("task")) != REPAIR_DATASET:
        raise MeapDataError(f"{data!r} is not a --kind rust --task repair dataset (it is kind {manifest.kind!r}, "
                            f"task {manifest.config.get('task')!r}); prepare one and pass its eval split, e.g. out/eval")
    if "arrow" not in manifest.formats:
        raise MeapDataError(f"{data!r} has no Arrow shards; prepare it with --format arrow")
    prompts = prompts_of(manifest)
    sources = records or list(manifest.config["inputs"])
    found = records_by_key(sources, set(prompts))
    missing = [k for k in prompts if k not in found]
    if missing:
        raise MeapDataError(f"{len(missing)} records of {data!r} (e.g. {missing[0]!r}) are not in "
                            f"{', '.join(sources)}; pass the transcript files it was prepared from with --records")
    tasks = [Task(k, ids, found[k]) for k, ids in prompts.items()
             if found[k].get("tool") == "rustc" or found[k].get("crate")]
    if not tasks:
        raise MeapDataError(f"{data!r} holds no single-file (rustc) or crate repair records to judge")
    return manifest, tasks[:limit]


def candidate_source(text: str) -> str:
    """The fix in a generated answer: the text before the closing code fence."""
    return text.split(FENCE, 1)[0]


@dataclasses.dataclass
class Judged:
    compiles: bool
    code_gone: bool
    passed: bool
    record: dict


def judge(task: Task, source: str, toolchain: Toolchain, time_limit_s: float, key: str,
          extra: dict[str, Any], bench: CrateBench | None = None) -> Judged:
    """Compile (and test) one candidate like its record; return the outcome and its transcript."""
    rec = task.record
    if rec.get("crate"):
        if bench is None:
            raise MeapDataError(f"record {task.key!r} comes from a crate: judging it needs the crate directory")
        return judge_in_crate(task, source, bench, toolchain, time_limit_s, key, extra)
    emit = "obj" if "--emit=obj" in rec.get("argv", []) else "metadata"
    env = dict(rec.get("env") or {})
    compiled = compile_source(source, toolchain, edition=rec["edition"], time_limit_s=time_limit_s, extra_env=env,
                              emit=emit)
    fields = compiled.record_fields()
    compiles = compiled.exit_code == 0
    code_gone = task.code not in fields["produced_codes"]
    tests = None
    if "tests" in rec and compiles:
        with tempfile.TemporaryDirectory(prefix="meap-eval-") as tmp:
            path = Path(tmp) / "main.rs"
            path.write_text(source, encoding="utf-8")
            tests = file_tests(path, Path(tmp), toolchain, edition=rec["edition"], time_limit_s=time_limit_s,
                               extra_env=env)
    passed = compiles and ("tests" not in rec or tests["status"] == "passed")
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "key": key, "origin": "generation", "tool": "rustc", "source": source,
        "source_path": "$SRC/main.rs", "edition": rec["edition"], "toolchain": toolchain.version, "env": env,
        "time_limit_s": time_limit_s, "fixed_source": rec.get("fixed_source"),
        "fix_edition": rec["edition"] if rec.get("fixed_source") else None,
        "fix_compiles": rec.get("fix_compiles"),
    }
    out.update(fields)
    if tests is not None:
        out["tests"] = tests
    out["generation"] = {"record": task.key, "compiles": compiles, "code_gone": code_gone, "passed": passed,
                         "primary_code": task.code, **extra}
    return Judged(compiles, code_gone, passed, out)


def judge_in_crate(task: Task, source: str, bench: CrateBench, toolchain: Toolchain, time_limit_s: float,
                   key: str, extra: dict[str, Any]) -> Judged:
    """A crate record's candidate: cargo check in the crate, and its suites when the
    record is a test failure (it passes only when they all pass)."""
    rec = task.record
    check, tests = bench.judge(rec, source)
    compiles = check.exit_code == 0 and not check.timed_out
    codes = list(dict.fromkeys(d["code"] for d in check.diagnostics if d.get("code")))
    code_gone = task.code not in codes
    passed = compiles and ("tests" not in rec or (tests is not None and tests["status"] == "passed"))
    first = rec["crate"]["fixed_lines"][0]
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "key": key, "origin": "generation", "tool": "cargo", "source": source,
        "source_path": rec["source_path"], "edition": rec["edition"], "toolchain": toolchain.version, "env": {},
        "time_limit_s": time_limit_s, "fixed_source": rec.get("fixed_source"), "fix_edition": rec["edition"],
        "fix_compiles": rec.get("fix_compiles"), "argv": list(rec["argv"]), "argv_json": list(rec.get("argv_json", [])),
        "exit_code": check.exit_code, "timed_out": check.timed_out, "diagnostics": check.diagnostics,
        "rendered": "".join(d.get("rendered") or "" for d in check.diagnostics), "problems": [],
        "produced_codes": codes,
        "crate": {**rec["crate"], "lines": [first, first + max(source.count("\n"), 1) - 1]},
    }
    if tests is not None:
        out["tests"] = tests
    out["generation"] = {"record": task.key, "compiles": compiles, "code_gone": code_gone, "passed": passed,
                         "primary_code": task.code, **extra}
    return Judged(compiles, code_gone, passed, out)


def generate(model_dir: str, tasks: list[Task], *, samples: int, max_new_tokens: int, temperature: float,
             seed: int, device: str, progress) -> list[list[str]]:
    """K decoded answers per task (sampling when temperature > 0, else greedy and K = 1)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        tok = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise MeapDataError(f"--model {model_dir!r}: cannot load a Hugging Face causal LM and tokenizer ({exc})") from exc
    answers = []
    bar = Progress(len(tasks), "eval-repair: generating", sink=progress)
    for i, task in enumerate(tasks):
        torch.manual_seed(seed + i)  # each record its own stream: results do not depend on --limit
        ids = torch.tensor([task.prompt_ids], device=device)
        with torch.no_grad():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                do_sample=temperature > 0, temperature=temperature if temperature > 0 else None, top_k=0,
                num_return_sequences=samples, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            )
        answers.append([tok.decode(seq[ids.shape[1]:], skip_special_tokens=True) for seq in out])
        bar.update(1)
    bar.close()
    return answers


def _metrics(rows: list[dict], k: int) -> dict[str, float]:
    n = len(rows)
    if n == 0:
        return {"records": 0}
    return {
        "records": n,
        "compile_rate": float(np.mean([r["compiled"] / r["n"] for r in rows])),
        "code_gone_rate": float(np.mean([r["code_gone"] / r["n"] for r in rows])),
        "pass@1": float(np.mean([pass_at_k(r["n"], r["passed"], 1) for r in rows])),
        f"pass@{k}": float(np.mean([pass_at_k(r["n"], r["passed"], min(k, r["n"])) for r in rows])),
    }


def eval_repair(model: str, data: str, output: str, *, samples: int = 4, max_new_tokens: int = 512,
                temperature: float = 0.8, limit: int | None = None, records: list[str] | None = None,
                jobs: int = 2, seed: int = 0, time_limit_s: float = 60.0, device: str = "cpu",
                toolchain: Toolchain | None = None, crates_dir: str = DEBIAN_REGISTRY, progress="stderr") -> dict:
    """Generate, compile, judge and report; writes OUTPUT/report.json and generations.jsonl.
    Records cut from crates are judged in a copy of their crate from ``crates_dir``."""
    if samples < 1:
        raise MeapDataError(f"--samples must be at least 1, got {samples}")
    if temperature <= 0 and samples > 1:
        raise MeapDataError("--temperature 0 is greedy decoding: every sample would be the same; use --samples 1")
    toolchain = toolchain or find_toolchain()
    manifest, tasks = load_tasks(data, records, limit)
    bench = CrateBench(crates_dir, toolchain, time_limit_s) if any(t.record.get("crate") for t in tasks) else None
    started = time.monotonic()
    answers = generate(model, tasks, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                       seed=seed, device=device, progress=progress)
    jobs_list = [(t, i, candidate_source(text)) for t, texts in zip(tasks, answers) for i, text in enumerate(texts)]
    bar = Progress(len(jobs_list) + len(tasks), "eval-repair: compiling", sink=progress)

    def one(item):
        task, i, source = item
        judged = judge(task, source, toolchain, time_limit_s, f"{task.key}-g{i}",
                       {"index": i, "model": os.path.basename(os.path.normpath(model)), "temperature": temperature,
                        "seed": seed}, bench)
        bar.update(1)
        return judged

    def identity(task: Task):
        judged = judge(task, task.record["source"], toolchain, time_limit_s, f"{task.key}-identity", {}, bench)
        bar.update(1)
        return judged

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            judged = list(pool.map(one, jobs_list))
            baseline = list(pool.map(identity, tasks))
    finally:
        if bench is not None:
            bench.close()
    bar.close()
    os.makedirs(output, exist_ok=True)
    write_records(os.path.join(output, GENERATIONS), [j.record for j in judged])
    per_record, ident = [], []
    for t_index, task in enumerate(tasks):
        mine = judged[t_index * samples:(t_index + 1) * samples]
        family = (task.record.get("mutation") or {}).get("family") or code_family(task.code)
        per_record.append({"key": task.key, "code": task.code, "family": family, "n": len(mine),
                           "compiled": sum(j.compiles for j in mine), "code_gone": sum(j.code_gone for j in mine),
                           "passed": sum(j.passed for j in mine)})
        b = baseline[t_index]
        ident.append({"key": task.key, "family": family, "n": 1, "compiled": int(b.compiles),
                      "code_gone": int(b.code_gone), "passed": int(b.passed)})
    families = sorted({r["family"] for r in per_record})
    report = {
        "model": model, "data": data, "samples": samples, "max_new_tokens": max_new_tokens,
        "temperature": temperature, "seed": seed, "toolchain": toolchain.version,
        "generations": len(judged), "compiles_recorded": sum(j.compiles for j in judged),
        "overall": _metrics(per_record, samples), "identity": _metrics(ident, 1),
        "by_family": {f: {"model": _metrics([r for r in per_record if r["family"] == f], samples),
                          "identity": _metrics([r for r in ident if r["family"] == f], 1)} for f in families},
        "per_record": per_record, "seconds": round(time.monotonic() - started, 1),
    }
    with open(os.path.join(output, REPORT), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return report


def format_report(report: dict) -> str:
    """A table: overall, identity baseline, and by family."""
    k = report["samples"]
    head = f"{'':<22}{'records':>8}{'compile':>9}{'code gone':>11}{'pass@1':>8}{f'pass@{k}':>9}"
    lines = [head]

    def row(name: str, m: dict) -> str:
        if not m.get("records"):
            return f"{name:<22}{0:>8}"
        pk = m.get(f"pass@{k}", m["pass@1"])
        return (f"{name:<22}{m['records']:>8}{m['compile_rate']:>9.1%}{m['code_gone_rate']:>11.1%}"
                f"{m['pass@1']:>8.1%}{pk:>9.1%}")

    lines.append(row("model", report["overall"]))
    lines.append(row("identity baseline", report["identity"]))
    for family, both in report["by_family"].items():
        lines.append(row(f"  {family}", both["model"]))
        lines.append(row(f"  {family} (identity)", both["identity"]))
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Comparison:
    records: int
    a_pass1: float
    b_pass1: float
    difference: Interval
    test: McNemar


def compare_reports(a_dir: str, b_dir: str, *, resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Pair two eval-repair reports on their common records: McNemar on "some sample
    passed", a bootstrap interval of the per-record pass@1 difference (A - B)."""
    def load(d: str) -> dict:
        path = os.path.join(d, REPORT)
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as exc:
            raise MeapDataError(f"{path}: not an eval-repair report ({exc}); run 'meap-data rust eval-repair' "
                                "with --output there") from exc

    ra, rb = load(a_dir), load(b_dir)
    a = {r["key"]: r for r in ra["per_record"]}
    b = {r["key"]: r for r in rb["per_record"]}
    common = [k for k in a if k in b]
    if not common:
        raise MeapDataError(f"{a_dir} and {b_dir} share no record; evaluate both on the same dataset")
    pa = [pass_at_k(a[k]["n"], a[k]["passed"], 1) for k in common]
    pb = [pass_at_k(b[k]["n"], b[k]["passed"], 1) for k in common]
    test = mcnemar([a[k]["passed"] > 0 for k in common], [b[k]["passed"] > 0 for k in common])
    return Comparison(len(common), float(np.mean(pa)), float(np.mean(pb)),
                      paired_bootstrap(pa, pb, resamples=resamples, seed=seed), test)
