"""Benchmark of `meap-data prepare` against raw tokenization, from one run, one corpus, one tokenizer.

Prints, on a corpus of at least 100 MB (JSON lines):
  - raw Hugging Face `encode_batch_fast` (the baseline: tokenization alone, texts already
    in memory, batches of about 1 M characters, ids taken out of each Encoding),
  - raw fastokens `encode_batch_flat` (the fast backend alone, same texts and batches),
  - `meap-data prepare` end to end: the whole command as a child process (interpreter
    start, planning, backend self-check, read, JSON parsing, tokenize, pack, mask, write
    Arrow + WebDataset with sha256, manifest), with its peak RSS; once with the default
    `--tokenizer-backend auto` and once with `--tokenizer-backend hf`,
  - the ratios against their targets: prepare >= 4x raw encode_batch_fast and >= 0.5x
    the raw fast backend,
  - MEAP masking alone in tokens/s (target >= 100 M/s).

Corpus: every .py file of this Python's standard library, then the local Rust toolchain's
HTML documentation (book, reference, std, ...), until `--min-mb` MB; without Rust docs,
further copies of the stdlib. Tokenizer: a 16k byte-level BPE trained on the stdlib.
Timings: best of `--repeats` interleaved rounds (the machine is shared).
Run: `.venv/bin/python tests/benchmarks/bench_prepare.py` (about 5 minutes on 2 cores).
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from meap_data.demo import stdlib_dir  # noqa: E402
from meap_data.masking import PretrainRule  # noqa: E402
from meap_data.tokenizer import prepare_tokenizer, train_bpe  # noqa: E402

FILE_MB = 16  # JSON-lines file size of the corpus
# Runs a command as a child and prints the child's peak RSS (kB).
MAXRSS_WRAPPER = textwrap.dedent("""
    import resource, subprocess, sys
    rc = subprocess.call(sys.argv[1:])
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
    sys.exit(rc)
""")


def rust_doc_files() -> list[str]:
    """HTML pages of the local Rust toolchain's documentation, sorted; [] without rustc."""
    try:
        sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    html = os.path.join(sysroot, "share", "doc", "rust", "html")
    return sorted(glob.glob(os.path.join(html, "**", "*.html"), recursive=True)) if sysroot else []


def corpus_texts(min_bytes: int) -> tuple[list[str], str, int]:
    """Texts of at least ``min_bytes`` UTF-8 bytes in all, where they came from, and how
    many of them (the first) are the stdlib's."""
    stdlib = sorted(p for p in glob.glob(os.path.join(stdlib_dir(), "**", "*.py"), recursive=True)
                    if "site-packages" not in p)
    texts, total = [], 0

    def add(path: str) -> None:
        nonlocal total
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if text.strip():
            texts.append(text)
            total += len(text.encode("utf-8"))

    for p in stdlib:
        add(p)
    n_stdlib = len(texts)
    what = f"{n_stdlib} stdlib .py files"
    docs = rust_doc_files()
    n_docs = 0
    for p in docs:
        if total >= min_bytes:
            break
        add(p)
        n_docs += 1
    if n_docs:
        what += f" + {n_docs} Rust doc pages"
    copies = 1
    while total < min_bytes:  # no Rust docs here: the stdlib again
        copies += 1
        for p in stdlib:
            add(p)
    if copies > 1:
        what += f" x{copies}"
    return texts, what, n_stdlib


def write_jsonl(directory: str, texts: list[str]) -> int:
    """The texts as JSON lines in files of about FILE_MB MB; returns bytes written."""
    os.makedirs(directory, exist_ok=True)
    total = part = size = 0
    out = None
    for i, text in enumerate(texts):
        if out is None or size >= FILE_MB << 20:
            if out is not None:
                out.close()
            out = open(os.path.join(directory, f"part-{part:04d}.jsonl"), "w", encoding="utf-8")
            part, size = part + 1, 0
        line = json.dumps({"id": str(i), "text": text}) + "\n"
        out.write(line)
        size += len(line)
        total += len(line)
    out.close()
    return total


def batches(texts: list[str], chars: int = 1 << 20):
    batch, n = [], 0
    for text in texts:
        batch.append(text)
        n += len(text)
        if n >= chars:
            yield batch
            batch, n = [], 0
    if batch:
        yield batch


def raw_hf(tok, texts: list[str]) -> int:
    return sum(len(e.ids) for b in batches(texts) for e in tok.encode_batch_fast(b, add_special_tokens=False))


def raw_fastokens(tok, texts: list[str]) -> int:
    return sum(len(tok.encode_batch_flat(b, add_special_tokens=False, split_special_tokens=True)[0]) // 4
               for b in batches(texts))


def prepare_command(corpus: str, out: str, tokenizer: str, backend: str) -> tuple[float, float, dict, dict]:
    """(wall seconds, peak RSS MB, manifest, run_info) of the whole `meap-data prepare`."""
    cmd = [sys.executable, "-c", MAXRSS_WRAPPER, sys.executable, "-m", "meap_data", "-q", "prepare",
           "--input", os.path.join(corpus, "*.jsonl"), "--output", out, "--tokenizer", tokenizer,
           "--seq-len", "2048", "--tokenizer-backend", backend, "--overwrite"]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    kb = int(proc.stdout.rsplit("MAXRSS_KB", 1)[1].split()[0])
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(out, "run_info.json")) as f:
        run_info = json.load(f)
    return seconds, kb / 1024, manifest, run_info


def best(fn, repeats: int) -> tuple[float, object]:
    result, seconds = None, float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        seconds = min(seconds, time.perf_counter() - t)
    return seconds, result


def main() -> None:
    import fastokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-mb", type=int, default=120, help="corpus size in MB of UTF-8 text (default: 120)")
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is reported")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    texts, what, n_stdlib = corpus_texts(args.min_mb * 10**6)
    work = tempfile.mkdtemp(prefix="meap-bench-prepare-")
    try:
        corpus = os.path.join(work, "corpus")
        corpus_bytes = write_jsonl(corpus, texts)
        print(f"corpus: {what}: {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M characters, "
              f"{corpus_bytes / 1e6:.1f} MB of JSON lines in {len(os.listdir(corpus))} files; {os.cpu_count()} cores")
        t = time.perf_counter()
        info = prepare_tokenizer(train_bpe(texts[:n_stdlib], args.vocab_size))
        tok_path = os.path.join(work, "tokenizer.json")
        with open(tok_path, "w", encoding="utf-8") as f:
            f.write(info.json)
        print(f"tokenizer: {info.vocab_size}-token byte-level BPE trained in {time.perf_counter() - t:.1f} s")
        hf = info.build()
        hf.encode_special_tokens = True
        fast = fastokens.Tokenizer.from_json_str(info.json)

        hf_s = fast_s = auto_s = float("inf")
        auto = None
        for _ in range(args.repeats):
            s, n_hf = best(lambda: raw_hf(hf, texts), 1)
            hf_s = min(hf_s, s)
            s, n_fast = best(lambda: raw_fastokens(fast, texts), 3)
            fast_s = min(fast_s, s)
            s, rss, manifest, run_info = prepare_command(corpus, os.path.join(work, "out"), tok_path, "auto")
            if s < auto_s:
                auto_s, auto = s, (rss, manifest, run_info)
        if n_hf != n_fast:
            raise SystemExit(f"the backends disagree: {n_hf} vs {n_fast} tokens")
        hf_cmd_s, hf_rss, hf_manifest, _ = prepare_command(corpus, os.path.join(work, "out-hf"), tok_path, "hf")
        rss, manifest, run_info = auto
        same = all(a["sha256"] == b["sha256"] for fmt in manifest["shards"]
                   for a, b in zip(manifest["shards"][fmt], hf_manifest["shards"][fmt]))
        tokens = manifest["counts"]["tokens"] - manifest["counts"]["documents_written"]  # minus eos
        if tokens != n_hf:
            raise SystemExit(f"prepare wrote {tokens} document tokens, raw encoding gave {n_hf}")

        hf_tps, fast_tps, auto_tps, hf_cmd_tps = (n_hf / hf_s, n_hf / fast_s, tokens / auto_s, tokens / hf_cmd_s)
        backend = run_info["tokenizer_backend"]["backend"]
        print(f"raw encode_batch_fast (tokenizers): {hf_tps / 1e6:8.2f} M tokens/s  ({n_hf} tokens in {hf_s:.2f} s)")
        print(f"raw encode_batch_flat (fastokens):  {fast_tps / 1e6:8.2f} M tokens/s  ({fast_s:.2f} s)")
        print(f"prepare, whole command ({backend}):  {auto_tps / 1e6:8.2f} M tokens/s  ({auto_s:.2f} s, "
              f"{run_info['seconds_pipeline']:.2f} s in the pipeline; peak RSS {rss:.0f} MB; "
              f"{len(manifest['shards']['arrow'])} shards x 2 formats)")
        print(f"prepare, whole command (hf):         {hf_cmd_tps / 1e6:8.2f} M tokens/s  ({hf_cmd_s:.2f} s; "
              f"peak RSS {hf_rss:.0f} MB); shards byte-identical to the {backend} run: {same}")
        print(f"ratio prepare / raw encode_batch_fast: {auto_tps / hf_tps:6.2f}x  (target >= 4)")
        print(f"ratio prepare / raw fastokens:         {auto_tps / fast_tps:6.2f}x  (target >= 0.5)")
        print(f"ratio prepare (hf) / raw encode_batch_fast: {hf_cmd_tps / hf_tps:6.2f}x")

        rows, seq_len = 1024, 2048
        labels = np.random.default_rng(0).integers(0, args.vocab_size, (rows, seq_len), dtype=np.int32)
        keys = [f"{i:016x}" for i in range(rows)]
        lengths = np.full(rows, seq_len)
        rule = PretrainRule(ratio=0.15)
        spans = rule.spans(lengths)
        mask_s, _ = best(lambda: rule.apply(labels, lengths, spans, keys, mask_id=info.mask_token_id,
                                            pad_id=info.pad_token_id, seed=0), 10)
        print(f"masking alone: {rows * seq_len / mask_s / 1e6:8.1f} M tokens/s  ({rows} x {seq_len}; target >= 100)")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
