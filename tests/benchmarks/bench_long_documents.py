"""Long documents without whitespace, and a compressed text bomb: speed and memory of the
whole ``meap-data prepare`` command, each run in a child process (wall clock, peak RSS).

Inputs, each one text file of ``--mb`` MiB (one document):
  - ``text``: this Python's standard library source, concatenated (the baseline);
  - ``base64``: one line of base64 (no whitespace at all, many short tokens);
  - ``nul``: NUL bytes (no whitespace, one token per byte), gzip-compressed;
and the bomb: a 1 MB ``.txt.gz`` that inflates to 1 GiB of NUL bytes, alone.

Prints tokens/s and input MB/s of each against ``text`` in the same run, and the bomb's
wall clock and peak RSS (targets: under 60 s and 1.5 GB: it must be a dead letter).
Run: ``.venv/bin/python tests/benchmarks/bench_long_documents.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import base64
import glob
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from meap_data.demo import stdlib_dir  # noqa: E402
from meap_data.tokenizer import prepare_tokenizer, train_bpe  # noqa: E402


def _prepare(src: str, out: str, tokenizer: str, max_document_bytes: int) -> dict:
    """One ``meap-data prepare`` in a child: wall seconds, peak RSS (MB) and its counts."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "meap_data", "prepare", "--input", src, "--output", out,
                             "--tokenizer", tokenizer, "--seq-len", "2048", "--max-document-bytes",
                             str(max_document_bytes), "-q"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare of {src} failed:\n{err}")
    with open(os.path.join(out, "manifest.json")) as f:
        counts = json.load(f)["counts"]
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "counts": counts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=48, help="size of each long document in MiB (default 48)")
    args = ap.parse_args()
    size = args.mb << 20
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        source = "".join(open(p, encoding="utf-8", errors="replace").read()
                         for p in sorted(glob.glob(os.path.join(stdlib_dir(), "*.py"))))
        tokenizer = os.path.join(tmp, "tokenizer.json")
        with open(tokenizer, "w") as f:
            f.write(prepare_tokenizer(train_bpe([source[: 8 << 20]], 16384)).json)
        inputs = {}
        inputs["text"] = os.path.join(tmp, "text.txt")
        with open(inputs["text"], "w", encoding="utf-8") as f:
            f.write((source * (size // len(source) + 1))[:size])
        inputs["base64"] = os.path.join(tmp, "base64.txt")
        with open(inputs["base64"], "wb") as f:
            f.write(base64.b64encode(os.urandom(size * 3 // 4)))
        inputs["nul"] = os.path.join(tmp, "nul.txt.gz")
        with gzip.open(inputs["nul"], "wb", compresslevel=1) as f:
            for _ in range(args.mb):
                f.write(bytes(1 << 20))
        bomb = os.path.join(tmp, "bomb.txt.gz")
        with gzip.open(bomb, "wb", compresslevel=9) as f:
            for _ in range(1024):
                f.write(bytes(1 << 20))

        print(f"one document of {args.mb} MiB each; prepare --seq-len 2048, arrow + webdataset, 16k BPE, "
              "default tokenizer backend; whole command in a child process")
        results = {}
        for name, src in inputs.items():
            results[name] = r = _prepare(src, os.path.join(tmp, f"out-{name}"), tokenizer, 2 * size)
            r["tokens_per_s"] = r["counts"]["tokens"] / r["seconds"]
            r["mb_per_s"] = size / 1e6 / r["seconds"]
            os.system(f"rm -rf {os.path.join(tmp, f'out-{name}')}")
        base = results["text"]
        print(f"{'input':8} {'tokens':>12} {'seconds':>8} {'M tok/s':>8} {'MB/s':>7} {'peak MB':>8} "
              f"{'tok/s vs text':>14} {'MB/s vs text':>13}")
        for name, r in results.items():
            print(f"{name:8} {r['counts']['tokens']:>12} {r['seconds']:>8.1f} {r['tokens_per_s'] / 1e6:>8.2f} "
                  f"{r['mb_per_s']:>7.1f} {r['peak_mb']:>8.0f} {r['tokens_per_s'] / base['tokens_per_s']:>13.2f}x "
                  f"{r['mb_per_s'] / base['mb_per_s']:>12.2f}x")
        r = _prepare(bomb, os.path.join(tmp, "out-bomb"), tokenizer, 64 << 20)
        c = r["counts"]
        print(f"bomb: {os.path.getsize(bomb) / 1e6:.2f} MB .txt.gz inflating to 1 GiB: {r['seconds']:.1f} s, "
              f"peak RSS {r['peak_mb']:.0f} MB (targets < 60 s, < 1536 MB), rejected {c['rejected_by_reason']}, "
              f"{c['documents_read']} read = {c['documents_written']} written + {c['documents_rejected']} rejected")


if __name__ == "__main__":
    main()
