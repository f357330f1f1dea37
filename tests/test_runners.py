"""The same prepare on distributed Beam runners, byte-identical to the default runner
(issue 20): Beam's ``DaskRunner`` on a ``distributed`` cluster of two worker processes,
and Beam's portable path (``PortableRunner --job_endpoint embed`` with an ``EXTERNAL``
worker pool) whose workers boot like a Dataflow container: they install the wheel the
job staged (``--extra_package``) or the sdist Beam built from ``--setup_file``, in a
fresh virtual environment that holds the dependencies but not meap-data.

Every process a test starts listens on 127.0.0.1 and is stopped by the fixture.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from meap_data.config import PrepareConfig
from meap_data.manifest import read_manifest
from meap_data.prepare import LOCK, run_prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOT = os.path.join(ROOT, "pipelines", "worker_boot.py")
SEQ = 256
RUST_SEQ = 1024  # a repair sample holds source, diagnostics and fix
NOT_CONTENT = {"run_info.json", LOCK}  # timings and host facts; the lock is gone after a run


def _tree(directory: str) -> dict[str, str]:
    """sha256 of every file under ``directory`` but run facts, by relative path."""
    out = {}
    for base, _, names in os.walk(directory):
        for name in names:
            if name not in NOT_CONTENT:
                path = os.path.join(base, name)
                out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=20)


def _prepare_cli(inputs: list[str], out: str, tokenizer: str | None, *extra: str, kind: str = "text",
                 timeout: int = 300) -> subprocess.CompletedProcess:
    seq = RUST_SEQ if kind == "rust" else SEQ
    args = [sys.executable, "-m", "meap_data", "prepare", "--input", *inputs, "--output", out, "--kind", kind,
            "--seq-len", str(seq), "--input-bytes-per-shard", "100000", "-q", *extra]
    if tokenizer:
        args += ["--tokenizer", tokenizer]
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# ---------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def text_inputs(tmp_path_factory, email_glob) -> list[str]:
    """The stdlib email package (an empty module among it) and JSON lines with bad records."""
    d = tmp_path_factory.mktemp("runner-inputs")
    lines = ['{"id": "a", "text": "a plain document"}', '{"id": "b", "text": ', '{"id": "c", "text": null}',
             '{"text": 5}', '{"id": "d", "text": "hello \\ud800 world"}', "[1, 2]",
             '{"id": "e", "text": "' + "x y " * 5000 + '"}']
    (d / "records.jsonl").write_text("\n".join(lines) + "\n")
    return [email_glob, str(d / "records.jsonl")]


@pytest.fixture(scope="module")
def text_reference(tmp_path_factory, text_inputs, tokenizer_path) -> str:
    out = str(tmp_path_factory.mktemp("runner-ref") / "text")
    run_prepare(PrepareConfig(inputs=tuple(text_inputs), seq_len=SEQ, input_bytes_per_shard=100_000), out,
                tokenizer=tokenizer_path)
    counts = read_manifest(out)["counts"]
    assert len(read_manifest(out)["shards"]["arrow"]) >= 3 and counts["documents_rejected"] >= 5
    return out


@pytest.fixture(scope="module")
def rust_inputs(tmp_path_factory, rust_docs_toolchain) -> list[str]:
    from meap_data.rust import error_index as EI

    d = tmp_path_factory.mktemp("runner-rust")
    EI.build_corpus(d / "error-index.jsonl", limit=40, jobs=2, toolchain=rust_docs_toolchain)
    with open(d / "error-index.jsonl", "a") as f:
        f.write('{"key": "broken", "source": \n')  # a dead letter
    return [str(d / "error-index.jsonl")]


@pytest.fixture(scope="module")
def rust_reference(tmp_path_factory, rust_inputs) -> str:
    out = str(tmp_path_factory.mktemp("runner-rust-ref") / "rust")
    # The CLI's own tokenizer training (no --tokenizer): the same on every runner.
    r = _prepare_cli(rust_inputs, out, None, kind="rust")
    assert r.returncode == 0, r.stderr
    return out


# ---------------------------------------------------------------------- Dask


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A ``dask scheduler`` and ``dask worker --nworkers 2`` on loopback; its address."""
    pytest.importorskip("distributed", reason="the dask extra (pip install 'meap-data[dask]') is not installed")
    from distributed import Client

    d = tmp_path_factory.mktemp("dask")
    scheduler_file = str(d / "scheduler.json")
    bin_dir = os.path.dirname(sys.executable)
    dask = os.path.join(bin_dir, "dask")
    log = open(d / "cluster.log", "w")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                  "--scheduler-file", scheduler_file], stdout=log, stderr=log)
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(scheduler_file) and time.monotonic() < deadline:
            time.sleep(0.2)
        # The workers import what the driver does: this environment, as an image would hold it.
        workers = subprocess.Popen([dask, "worker", "--scheduler-file", scheduler_file, "--nworkers", "2",
                                    "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                   stdout=log, stderr=log, cwd=str(d))
        with Client(scheduler_file=scheduler_file, timeout=60) as client:
            client.wait_for_workers(2, timeout=90)
            address = client.scheduler.address
        yield address
    finally:
        for proc in (workers, scheduler):
            if proc is not None:
                _stop(proc)
        log.close()


def test_dask_runner_writes_the_default_runners_bytes_for_text(dask_cluster, text_inputs, text_reference,
                                                               tokenizer_path, tmp_path):
    out = str(tmp_path / "dask")
    r = _prepare_cli(text_inputs, out, tokenizer_path, "--runner", "DaskRunner", "--dask_client_address", dask_cluster)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.load(open(os.path.join(out, "run_info.json")))["beam_args"][:2] == ["--runner", "DaskRunner"]
    assert _tree(out) == _tree(text_reference)


def test_dask_runner_writes_the_default_runners_bytes_for_rust(dask_cluster, rust_inputs, rust_reference, tmp_path):
    out = str(tmp_path / "dask-rust")
    r = _prepare_cli(rust_inputs, out, None, "--runner", "DaskRunner", "--dask_client_address", dask_cluster,
                     kind="rust")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _tree(out) == _tree(rust_reference) and {"train", "eval"} <= set(os.listdir(out))


# ---------------------------------------------------------------------- portable, staged


@pytest.fixture(scope="module")
def staged_wheel(tmp_path_factory) -> str:
    """The package built as a wheel, as a user ships it with ``--extra_package``."""
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir", str(dist), ROOT],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [wheel] = glob.glob(str(dist / "meap_data-*.whl"))
    return wheel


@pytest.fixture(scope="module")
def worker_pool(tmp_path_factory):
    """Beam's Python worker pool in a fresh virtual environment that has meap-data's
    dependencies (this environment's site-packages, on a path entry) but not meap-data,
    booting each worker with ``pipelines/worker_boot.py``; (address, pool log path)."""
    d = tmp_path_factory.mktemp("pool")
    venv = d / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    worker_site = subprocess.run([py, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(worker_site, "deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    home = d / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", TMPDIR=str(home))
    # Not importable before the job ships it (an editable install is not on a plain path entry).
    probe = subprocess.run([py, "-c", "import meap_data"], cwd=str(home), env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'meap_data'" in probe.stderr
    port = _free_port()
    log_path = str(d / "pool.log")
    log = open(log_path, "w")
    pool = subprocess.Popen([py, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(port),
                             "--container_executable", BOOT], cwd=str(home), env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "Started worker pool servicer" not in open(log_path).read():
            assert pool.poll() is None and time.monotonic() < deadline, open(log_path).read()[-2000:]
            time.sleep(0.2)
        yield f"localhost:{port}", log_path, str(home)
    finally:
        _stop(pool)
        log.close()


def _portable(pool: str, *staging: str) -> list[str]:
    return ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "EXTERNAL",
            "--environment_config", pool, *staging]


def test_portable_workers_run_the_staged_wheel_and_write_the_same_bytes(worker_pool, staged_wheel, text_inputs,
                                                                         text_reference, tokenizer_path, tmp_path):
    pool, log_path, home = worker_pool
    out = str(tmp_path / "portable")
    r = _prepare_cli(text_inputs, out, tokenizer_path, *_portable(pool, "--extra_package", staged_wheel))
    assert r.returncode == 0, r.stderr[-3000:] + open(log_path).read()[-3000:]
    assert _tree(out) == _tree(text_reference)
    log = open(log_path).read()
    assert f"installed {os.path.basename(staged_wheel)} (staged by the job)" in log
    used = [line.split(": ", 2)[2] for line in log.splitlines() if "meap_data for this worker: " in line]
    assert used and all(p.startswith(home) and p.endswith("site-packages/meap_data/__init__.py") for p in used)


def test_portable_workers_build_from_setup_file_for_rust(worker_pool, rust_inputs, rust_reference, tmp_path):
    pool, log_path, _ = worker_pool
    out = str(tmp_path / "portable-rust")
    r = _prepare_cli(rust_inputs, out, None, *_portable(pool, "--setup_file", os.path.join(ROOT, "setup.py")),
                     kind="rust")
    assert r.returncode == 0, r.stderr[-3000:] + open(log_path).read()[-3000:]
    assert _tree(out) == _tree(rust_reference)
    assert "installed workflow.tar.gz (staged by the job)" in open(log_path).read()
    shutil.rmtree(out)
