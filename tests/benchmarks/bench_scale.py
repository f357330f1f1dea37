"""Scale benchmark, from one run: bounded memory and throughput against datatrove.

Prints:
  - peak memory (max RSS of the prepare process) on a corpus and on the same corpus
    repeated ten times, and their ratio (target <= 1.25: memory does not grow with the
    corpus; it is bounded by the shard size, --input-bytes-per-shard, fixed here);
  - end-to-end throughput (wall clock of the whole command, interpreter start included)
    of our `meap-data prepare` (Arrow + WebDataset, MEAP masking, packing, manifest;
    default tokenizer backend) and of datatrove's tokenization pipeline (JsonlReader ->
    DocumentTokenizer writing its own .ds shards, LocalPipelineExecutor with
    tasks=workers=cores, shuffle off: its fastest setting) on the same JSON-lines corpora,
    tokenizer and cores, and the ratios: on the corpus (about 8 M tokens, where start-up
    weighs) and on the corpus x10 (target >= 5x there: a corpus over 100 MB).

datatrove pins other versions than ours, so this script installs it into its own virtual
environment (tests/benchmarks/.venvs/datatrove, git-ignored) from the package registry;
if that fails it says why and still prints our figures.

Corpus: every .py file of this Python's standard library (about 30 MB) as JSON lines in
8 files; x10: the same files ten times. Tokenizer: a 16k byte-level BPE trained on it.
Run: `.venv/bin/python tests/benchmarks/bench_scale.py` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from meap_data.demo import stdlib_dir  # noqa: E402
from meap_data.tokenizer import prepare_tokenizer, train_bpe  # noqa: E402

PEER_VENV = os.path.join(HERE, ".venvs", "datatrove")
PEER_REQUIREMENTS = ["datatrove==0.10.1", "tokenizers", "orjson"]
N_FILES = 8

# Runs a command as a child and prints the child's peak RSS (kB): RUSAGE_CHILDREN of a
# fresh wrapper covers exactly that command (and its own children, if any).
MAXRSS_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    rc = subprocess.call(sys.argv[1:])
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
    sys.exit(rc)
""")

DATATROVE_SCRIPT = textwrap.dedent("""
    import sys
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    src, out, work, logs, tok, eos, cores = sys.argv[1:8]
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(data_folder=src, glob_pattern="*.jsonl", text_key="text"),
            DocumentTokenizer(output_folder=out, local_working_dir=work, tokenizer_name_or_path=tok,
                              eos_token=eos, shuffle_documents=False, shuffle_chunk_size=None),
        ],
        tasks=int(cores), workers=int(cores), logging_dir=logs,
    ).run()
""")


def write_corpus(directory: str, texts: list[tuple[str, str]], copies: int) -> int:
    """``copies`` x the corpus as JSON lines in N_FILES files per copy; returns bytes."""
    os.makedirs(directory, exist_ok=True)
    total = 0
    for copy in range(copies):
        for part in range(N_FILES):
            path = os.path.join(directory, f"c{copy:02d}-part{part}.jsonl")
            with open(path, "w", encoding="utf-8") as out:
                for name, text in texts[part::N_FILES]:
                    out.write(json.dumps({"id": f"{copy}/{name}", "text": text}) + "\n")
            total += os.path.getsize(path)
    return total


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, output) of ``cmd``; raises with its output on failure."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", MAXRSS_WRAPPER, *cmd], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}... failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    kb = int(proc.stdout.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return seconds, kb / 1024, proc.stdout + proc.stderr


def our_prepare(corpus: str, out: str, tokenizer: str, shard_bytes: int) -> tuple[float, float, dict]:
    cmd = [sys.executable, "-m", "meap_data", "prepare", "--input", os.path.join(corpus, "*.jsonl"),
           "--output", out, "--tokenizer", tokenizer, "--seq-len", "2048",
           "--input-bytes-per-shard", str(shard_bytes)]
    seconds, mb, _ = run_measured(cmd, env={**os.environ, "PYTHONPATH": ROOT})
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    return seconds, mb, manifest


def ensure_peer_venv() -> str | None:
    """The datatrove environment's python, installing it on first use; None (with the
    reason printed) when it cannot be installed."""
    python = os.path.join(PEER_VENV, "bin", "python")
    probe = [python, "-c", "import datatrove.pipeline.tokens, tokenizers"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"installing {', '.join(PEER_REQUIREMENTS)} into {PEER_VENV} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", PEER_VENV], check=True, capture_output=True)
        proc = subprocess.run([python, "-m", "pip", "install", "-q", *PEER_REQUIREMENTS],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"datatrove could not be installed from the registry:\n{proc.stderr[-2000:]}")
            return None
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"datatrove could not be installed: {exc}")
        return None
    return python if subprocess.run(probe, capture_output=True).returncode == 0 else None


def datatrove_tokens(out: str) -> int:
    """Tokens datatrove wrote: its .ds files hold raw uint16 ids (vocab < 65536)."""
    return sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "**", "*.ds"), recursive=True)) // 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--glob", default=os.path.join(stdlib_dir(), "**", "*.py"))
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--shard-mb", type=int, default=8, help="--input-bytes-per-shard in MB (fixed for both sizes)")
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    paths = sorted(p for p in glob.glob(args.glob, recursive=True) if "site-packages" not in p)
    texts = []
    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if text.strip():
            texts.append((os.path.relpath(p, stdlib_dir()), text))
    work = tempfile.mkdtemp(prefix="meap-bench-scale-")
    try:
        small, large = os.path.join(work, "x1"), os.path.join(work, f"x{args.copies}")
        small_bytes = write_corpus(small, texts, 1)
        large_bytes = write_corpus(large, texts, args.copies)
        print(f"corpus: {len(texts)} stdlib modules, {small_bytes / 1e6:.1f} MB JSON lines in {N_FILES} files; "
              f"x{args.copies}: {large_bytes / 1e6:.1f} MB; {cores} cores")
        t = time.perf_counter()
        info = prepare_tokenizer(train_bpe((t for _, t in texts), args.vocab_size))
        tok_path = os.path.join(work, "tokenizer.json")
        with open(tok_path, "w", encoding="utf-8") as f:
            f.write(info.json)
        print(f"tokenizer: {info.vocab_size}-token byte-level BPE (eos {info.eos_token!r}) trained in "
              f"{time.perf_counter() - t:.1f} s")

        shard_bytes = args.shard_mb << 20
        s1, m1, man1 = our_prepare(small, os.path.join(work, "out-x1"), tok_path, shard_bytes)
        s10, m10, man10 = our_prepare(large, os.path.join(work, "out-x10"), tok_path, shard_bytes)
        tok1, tok10 = man1["counts"]["tokens"], man10["counts"]["tokens"]
        print("\n== bounded memory: meap-data prepare (local runner, in-process), "
              f"--input-bytes-per-shard {args.shard_mb} MB, seq 2048, arrow + webdataset")
        print(f"x1 : {tok1 / 1e6:8.1f} M tokens, {len(man1['shards']['arrow']):3d} shards, peak RSS {m1:7.1f} MB")
        print(f"x{args.copies}: {tok10 / 1e6:8.1f} M tokens, {len(man10['shards']['arrow']):3d} shards, peak RSS {m10:7.1f} MB")
        print(f"peak memory ratio x{args.copies}/x1: {m10 / m1:.3f} (target <= 1.25)")

        ours_tps = tok1 / s1
        print("\n== end-to-end throughput on the x1 corpus (wall clock of the whole command)")
        print(f"meap-data prepare : {tok1 / 1e6:.2f} M tokens in {s1:.1f} s = {ours_tps / 1e6:.3f} M tokens/s "
              f"({ours_tps / cores / 1e6:.3f} M per core); x{args.copies} corpus: {tok10 / s10 / 1e6:.3f} M tokens/s")
        python = ensure_peer_venv()
        if python is None:
            print("datatrove: not available (see above); no ratio")
            return
        version = subprocess.run([python, "-c", "import datatrove, importlib.metadata as m; print(m.version('datatrove'))"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"datatrove {version} (tasks=workers={cores}, the same tokenizer and eos):")
        for label, corpus, ours_s, ours_tokens in (("x1 ", small, s1, tok1), (f"x{args.copies}", large, s10, tok10)):
            name = label.strip()  # own work and log folders: datatrove skips tasks its logs mark done
            dt_out = os.path.join(work, f"dt-out-{name}")
            ds, dm, _ = run_measured([python, "-c", DATATROVE_SCRIPT, corpus, dt_out, os.path.join(work, f"dt-work-{name}"),
                                      os.path.join(work, f"dt-logs-{name}"), tok_path, info.eos_token, str(cores)])
            dt_tokens = datatrove_tokens(dt_out)
            shutil.rmtree(dt_out, ignore_errors=True)
            dt_tps, our_tps = dt_tokens / ds, ours_tokens / ours_s
            target = "" if label.strip() == "x1" else " (target >= 5)"
            print(f"{label}: datatrove {dt_tokens / 1e6:.2f} M tokens in {ds:.1f} s = {dt_tps / 1e6:.3f} M tokens/s "
                  f"(peak RSS of one process {dm:.0f} MB); meap-data {our_tps / 1e6:.3f} M tokens/s; "
                  f"ratio {our_tps / dt_tps:.2f}x{target}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
