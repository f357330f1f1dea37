"""The loader examples run as written: a plain PyTorch loop (with an exact resume that
changes the worker count) and a Hugging Face Trainer on a tiny Llama-style model."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

from meap_data.config import PrepareConfig
from meap_data.prepare import run_prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _example(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine: intra-op threads only spin against each
    other (a 4x slowdown measured here), so the examples run on one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def example_ds(tmp_path_factory, email_glob, tokenizer_path) -> str:
    out = str(tmp_path_factory.mktemp("examples") / "email")
    run_prepare(PrepareConfig(inputs=(email_glob,), seq_len=64, input_bytes_per_shard=150_000),
                out, tokenizer=tokenizer_path, beam_args=[], overwrite=True)
    return out


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_plain_torch_loop_trains_and_resumes_exactly(example_ds, tmp_path):
    loop = _example("plain_torch_loop")
    straight = loop.main(["--data", example_ds, "--steps", "16", "--batch-size", "4"])
    assert len(straight) == 16 and all(np.isfinite(straight))
    assert np.mean(straight[-4:]) < np.mean(straight[:4])  # it learns
    ckpt = str(tmp_path / "run.pt")
    first = loop.main(["--data", example_ds, "--steps", "7", "--batch-size", "4", "--checkpoint", ckpt])
    # Resume with worker processes: the same samples follow, so the same losses.
    second = loop.main(["--data", example_ds, "--steps", "16", "--batch-size", "4", "--checkpoint", ckpt,
                        "--num-workers", "2"])
    np.testing.assert_allclose(first + second, straight, rtol=1e-4)


def test_hf_trainer_on_tiny_llama(example_ds, tmp_path):
    pytest.importorskip("transformers", reason="the Hugging Face example needs transformers (pip install -e '.[dev]')")
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate (pip install -e '.[dev]')")
    hf = _example("hf_trainer")
    out = str(tmp_path / "hf")
    result = hf.main(["--data", example_ds, "--output", out, "--steps", "8", "--batch-size", "4", "--save-steps", "4"])
    assert result["global_step"] == 8
    assert all(np.isfinite(result["losses"]))
    assert result["loader_state"]["position"] == 8 * 4
    with open(os.path.join(out, "checkpoint-4", hf.LOADER_STATE)) as f:
        assert json.load(f)["position"] == 4 * 4
    resumed = hf.main(["--data", example_ds, "--output", out, "--steps", "8", "--batch-size", "4",
                       "--resume", os.path.join(out, "checkpoint-4")])
    assert resumed["global_step"] == 8
    assert resumed["loader_state"] == result["loader_state"]  # 4 more batches, not 8
