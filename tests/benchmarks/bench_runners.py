"""Prepare throughput on Beam's distributed runners against the default runner, in one run.

Runners (each a whole ``meap-data prepare`` command in a child process):
  - default: the in-process FnApiRunner (the baseline);
  - direct x2: Beam's own multi-process mode (--direct_num_workers 2 multi_processing);
  - dask x2, dask x4: ``--runner DaskRunner`` on a ``dask scheduler`` with ``dask worker
    --nworkers N`` processes (one thread each), all on loopback;
  - portable: ``PortableRunner --job_endpoint embed`` with an EXTERNAL Beam worker pool.

For each: wall clock, the pipeline's own seconds (run_info.json), tokens/s and the ratio
to the default runner, and whether the shards equal the default runner's byte for byte.
Every runner is run twice, on a one-unit corpus and on the whole corpus, so the fixed
cost (start-up, job submission, worker start) and the cost per token can be told apart:
marginal = (tokens_big - tokens_small) / (wall_big - wall_small), fixed = wall_small -
tokens_small / marginal.

Corpus: every .py file of this Python's standard library, ``--repeat`` times over (default
4: about 130 MB), as JSON lines in 8 files; 16k BPE trained on it, seq 2048,
--input-bytes-per-shard 4 MiB (about 32 units); the one-unit run takes the first 4 MiB.
Run: ``.venv/bin/python tests/benchmarks/bench_runners.py`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

from meap_data.demo import stdlib_dir  # noqa: E402
from meap_data.tokenizer import prepare_tokenizer, train_bpe  # noqa: E402

BIN = os.path.dirname(sys.executable)


def tree(directory: str) -> str:
    digest = hashlib.sha256()
    for base, _, names in sorted(os.walk(directory)):
        for name in sorted(names):
            if name != "run_info.json":
                path = os.path.join(base, name)
                digest.update(os.path.relpath(path, directory).encode())
                digest.update(hashlib.sha256(open(path, "rb").read()).digest())
    return digest.hexdigest()


def prepare(inputs: list[str], out: str, tokenizer: str, beam_args: list[str]) -> dict:
    started = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "meap_data", "prepare", "--input", *inputs, "--output", out,
                        "--tokenizer", tokenizer, "--seq-len", "2048", "--input-bytes-per-shard", str(4 << 20),
                        "--overwrite", "-q", *beam_args], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if r.returncode != 0:
        raise SystemExit(f"prepare {' '.join(beam_args)} failed:\n{r.stderr[-3000:]}")
    info = json.load(open(os.path.join(out, "run_info.json")))
    tokens = json.load(open(os.path.join(out, "manifest.json")))["counts"]["tokens"]
    return {"wall": wall, "pipeline": info["seconds_pipeline"], "tokens": tokens, "tree": tree(out)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskCluster:
    def __init__(self, workers: int, directory: str):
        self.file = os.path.join(directory, f"scheduler-{workers}.json")
        self.log = open(os.path.join(directory, f"dask-{workers}.log"), "w")
        self.procs = [subprocess.Popen([os.path.join(BIN, "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                                        "--no-dashboard", "--scheduler-file", self.file],
                                       stdout=self.log, stderr=self.log)]
        while not os.path.exists(self.file):
            time.sleep(0.2)
        self.procs.append(subprocess.Popen([os.path.join(BIN, "dask"), "worker", "--scheduler-file", self.file,
                                            "--nworkers", str(workers), "--nthreads", "1", "--no-dashboard",
                                            "--host", "127.0.0.1"], stdout=self.log, stderr=self.log, cwd=directory))
        from distributed import Client

        with Client(scheduler_file=self.file, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
            self.address = client.scheduler.address

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            p.wait(timeout=30)
        self.log.close()


class WorkerPool:
    def __init__(self, directory: str):
        port = free_port()
        self.log_path = os.path.join(directory, "pool.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.proc = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                      "--service_port", str(port)], cwd=directory, env=env,
                                     stdout=self.log, stderr=self.log)
        while "Started worker pool servicer" not in open(self.log_path).read():
            time.sleep(0.2)
        self.address = f"localhost:{port}"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-dask-workers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=4, help="the stdlib source this many times over (default 4)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-runners-")
    try:
        files = sorted(p for p in glob.glob(os.path.join(stdlib_dir(), "**", "*.py"), recursive=True)
                       if "site-packages" not in p)
        texts = [open(p, encoding="utf-8", errors="replace").read() for p in files]
        corpus = []
        for i in range(8):
            path = os.path.join(tmp, f"corpus-{i}.jsonl")
            with open(path, "w") as f:
                for r in range(args.repeat):
                    for j in range(i, len(texts), 8):
                        f.write(json.dumps({"id": f"{r}/{files[j]}", "text": texts[j]}) + "\n")
            corpus.append(path)
        tokenizer = os.path.join(tmp, "tokenizer.json")
        with open(tokenizer, "w") as f:
            f.write(prepare_tokenizer(train_bpe(texts, 16384)).json)
        small = [os.path.join(tmp, "one-unit.jsonl")]  # the first records, under one unit's 4 MiB
        with open(corpus[0]) as src, open(small[0], "w") as dst:
            for line in src:
                if dst.tell() + len(line.encode()) > 4 << 20:
                    break
                dst.write(line)
        size = sum(os.path.getsize(p) for p in corpus) / 1e6
        print(f"corpus: {size:.1f} MB of JSON lines in 8 files (one-unit run: {os.path.getsize(small[0]) / 1e6:.1f} MB); "
              f"16k BPE, seq 2048, 4 MiB units, arrow + webdataset; {os.cpu_count()} cores")

        runs: dict[str, list[str]] = {"default": [],
                                      "direct x2": ["--direct_num_workers", "2", "--direct_running_mode",
                                                    "multi_processing"]}
        results = {}
        clusters = []
        try:
            for n in sorted({2, args.max_dask_workers}):
                cluster = DaskCluster(n, tmp)
                clusters.append(cluster)
                runs[f"dask x{n}"] = ["--runner", "DaskRunner", "--dask_client_address", cluster.address]
            pool = WorkerPool(tmp)
            clusters.append(pool)
            runs["portable"] = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type",
                                "EXTERNAL", "--environment_config", pool.address]
            for name, beam_args in runs.items():
                out = os.path.join(tmp, "out")
                results[name] = {"small": prepare(small, out, tokenizer, beam_args),
                                 "big": prepare(corpus, out, tokenizer, beam_args)}
                shutil.rmtree(out)
        finally:
            for c in clusters:
                c.close()

        base = results["default"]["big"]
        print(f"{'runner':10} {'wall s':>7} {'pipeline s':>10} {'M tok/s':>8} {'vs default':>10} "
              f"{'fixed s':>8} {'marginal M tok/s':>16} {'same bytes':>10}")
        for name, r in results.items():
            big, small_r = r["big"], r["small"]
            marginal = (big["tokens"] - small_r["tokens"]) / max(big["wall"] - small_r["wall"], 1e-9)
            fixed = small_r["wall"] - small_r["tokens"] / marginal
            rate = big["tokens"] / big["wall"]
            print(f"{name:10} {big['wall']:>7.1f} {big['pipeline']:>10.1f} {rate / 1e6:>8.2f} "
                  f"{rate / (base['tokens'] / base['wall']):>9.2f}x {fixed:>8.1f} {marginal / 1e6:>16.2f} "
                  f"{str(big['tree'] == base['tree']):>10}")
        print(f"tokens: {base['tokens']} (whole corpus), {results['default']['small']['tokens']} (one unit)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
