"""train_shards.py on a real corpus (the stdlib ``email`` package) prepared by the
pipeline: learning below the unigram entropy, bit-for-bit resume, DDP on CPU with gloo,
document-masked attention, bf16 autocast, torch.compile, logs and errors."""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import torch

from meap_data import train_shards
from meap_data.config import PrepareConfig
from meap_data.loader import ShardLoader
from meap_data.manifest import read_manifest
from meap_data.masking import PretrainRule
from meap_data.model import GPT, ModelConfig, document_causal_mask, flops_per_token, peak_flops, peak_flops_of
from meap_data.prepare import run_prepare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 128
# A tiny model: 2 layers, width 64. Each test's step count is kept to what it needs.
TINY = ["--layers", "2", "--width", "64", "--heads", "4", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: a tiny model's many small ops gain nothing from a second
    thread, and on a busy 2-core machine its barriers cost 3-5x (measured: 6 s vs 19-30 s
    for 60 steps under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, email_glob, tokenizer_path):
    """~940 samples of 128 tokens (3 shards) from the stdlib email package, 2048-token BPE."""
    out = str(tmp_path_factory.mktemp("train") / "email")
    config = PrepareConfig(inputs=(email_glob,), seq_len=SEQ, mask_ratio=0.15, input_bytes_per_shard=120_000)
    run_prepare(config, out, tokenizer=tokenizer_path, overwrite=True)
    return out


def _args(dataset, out, *extra):
    return train_shards.build_parser().parse_args(["--data", dataset, "--out", str(out), *TINY, *extra])


def _read_labels(dataset) -> np.ndarray:
    """All label ids of the dataset straight from the Arrow shards (no loader involved)."""
    parts = []
    for path in sorted(glob.glob(os.path.join(dataset, "arrow", "*.arrow"))):
        with open(path, "rb") as f:
            table = pa.ipc.open_stream(f).read_all()
        parts.append(table.column("labels").combine_chunks().flatten().to_numpy())
    labels = np.concatenate(parts)
    return labels[labels != -100]


def _metrics(out) -> list[dict]:
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


# ----------------------------------------------------------------------------- learning


def test_meap_loss_falls_well_below_the_unigram_entropy(dataset, tmp_path):
    labels = _read_labels(dataset)
    counts = np.bincount(labels)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())  # nats per token of the best context-free model
    assert 5.5 < entropy < 7.0  # Python source under a 2048-token BPE

    # Untied output layer: a tied 2 x 64 model spends these steps on a plateau near the
    # unigram entropy (see ModelConfig.tie_embeddings). Over seeds 1-3 and 1337 this run
    # ends 1.4-1.8 nats below the entropy in training and 0.7-0.95 on held-out samples.
    args = _args(dataset, tmp_path, "--objective", "meap", "--untied", "--batch-size", "16", "--max-steps", "150",
                 "--warmup-steps", "15", "--lr", "3e-3", "--eval-interval", "75", "--log-interval", "25",
                 "--peak-flops", "1e12")
    result = train_shards.train(args)
    losses = result["losses"]
    assert len(losses) == 150
    assert losses[0] == pytest.approx(math.log(2048), abs=0.3)  # starts at chance (uniform over the vocab)
    train_loss = float(np.mean(losses[-20:]))
    (_, first_eval), (_, final_eval) = result["evals"]
    final_masked = [r for r in _metrics(tmp_path) if r["kind"] == "eval"][-1]["eval_loss_masked"]
    print(f"unigram entropy {entropy:.3f} nats; MEAP train loss {train_loss:.3f}, held-out {final_eval:.3f} "
          f"(clean inputs), {final_masked:.3f} (masked inputs)")
    # A unigram model can do no better than `entropy`; a model that uses context must.
    assert train_loss < entropy - 1.0
    assert final_eval < entropy - 0.5 and final_eval < first_eval
    assert final_masked < entropy - 0.5

    # The log has what the issue asks for, per interval, and MFU follows its formula.
    records = _metrics(tmp_path)
    train_records = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == list(range(25, 151, 25))
    assert [r["step"] for r in records if r["kind"] == "eval"] == [75, 150]
    for r in train_records:
        assert r["tokens_per_s"] > 0 and 0 <= r["data_wait"] < 1
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * result["flops_per_token"] / 1e12)
    assert result["flops_per_token"] == flops_per_token(result["params"], 2, 64, SEQ)
    assert train_records[-1]["tokens"] == 150 * 16 * SEQ
    assert train_records[-1]["lr"] == pytest.approx(train_shards.lr_at(149, args))


def test_ntp_and_meap_see_the_same_samples_and_targets(dataset):
    manifest = read_manifest(dataset)
    batch = next(iter(ShardLoader(dataset, 4, seed=3)))
    pad, mask_id = manifest["tokenizer"]["pad_token_id"], manifest["mask_token_id"]
    cpu = torch.device("cpu")
    rule = PretrainRule(**{k: v for k, v in manifest["mask_rule"].items() if k != "name"})
    m_in, m_lab, _, _ = train_shards.model_inputs(batch, "meap", rule, pad, SEQ, cpu)
    n_in, n_lab, _, _ = train_shards.model_inputs(batch, "ntp", rule, pad, SEQ, cpu)
    assert torch.equal(m_lab, n_lab)
    differ = m_in != n_in
    assert differ.any() and bool((m_in[differ] == mask_id).all())  # MEAP differs only at [MASK]s
    assert torch.equal(n_in, m_lab.masked_fill(m_lab == -100, pad))
    cropped, _, _, _ = train_shards.model_inputs(batch, "meap", rule, pad, 64, cpu)
    assert cropped.shape == (4, 64)


# ----------------------------------------------------------------------------- resume


def test_stop_and_resume_gives_the_same_losses_bit_for_bit(dataset, tmp_path):
    # Dropout makes the RNG state matter; accumulation and a mid-run evaluation put the
    # checkpoint between a look-ahead fetch and an evaluation.
    common = ["--batch-size", "4", "--grad-accum", "2", "--max-steps", "8", "--warmup-steps", "3",
              "--dropout", "0.1", "--eval-interval", "3", "--eval-batches", "2", "--log-interval", "1"]
    straight = train_shards.train(_args(dataset, tmp_path / "a", *common))
    first = train_shards.train(_args(dataset, tmp_path / "b", *common, "--stop-at-step", "5"))
    # The resumed half reads through a worker process: the order must not depend on it.
    second = train_shards.train(_args(dataset, tmp_path / "b", *common, "--resume", "--num-workers", "1"))
    assert len(straight["losses"]) == 8 and len(first["losses"]) == 5 and len(second["losses"]) == 3
    assert first["losses"] + second["losses"] == straight["losses"]
    assert [e for e in first["evals"] + second["evals"] if e[0] != 5] == straight["evals"]
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["ranks"][0]["loader"] == b["ranks"][0]["loader"]
    # metrics.jsonl continues across the resume
    assert [r["step"] for r in _metrics(tmp_path / "b") if r["kind"] == "train"] == list(range(1, 9))


def test_resume_refuses_a_checkpoint_of_another_model(dataset, tmp_path):
    train_shards.train(_args(dataset, tmp_path, "--batch-size", "4", "--max-steps", "2", "--eval-samples", "0"))
    code, err = _main_error(["--data", dataset, "--out", str(tmp_path), "--layers", "3", "--width", "64",
                             "--heads", "4", "--resume", "--max-steps", "4", "--eval-samples", "0"])
    assert code == 2 and "--layers 2" in err and "this run has 3" in err


# ----------------------------------------------------------------------------- multi-process


def test_ddp_two_cpu_ranks_match_one_process_with_the_same_global_batch(dataset, tmp_path):
    """torchrun, 2 ranks, gloo: rank r trains on its slice of each global batch of 8;
    after the gradient all-reduce the model equals a single process's with batch 8."""
    common = ["--max-steps", "4", "--warmup-steps", "1", "--lr", "3e-3", "--log-interval", "1",
              "--eval-samples", "0", "--layers", "2", "--width", "64", "--heads", "4", "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "meap_data.train_shards", "--data", dataset, "--out", str(tmp_path / "ddp"),
           "--batch-size", "4", *common]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    single = train_shards.train(train_shards.build_parser().parse_args(
        ["--data", dataset, "--out", str(tmp_path / "one"), "--batch-size", "8", *common]))
    ddp_losses = [r["loss"] for r in _metrics(tmp_path / "ddp") if r["kind"] == "train"]
    assert ddp_losses == pytest.approx(single["losses"], rel=1e-3)
    a = torch.load(tmp_path / "ddp" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "ckpt.pt", weights_only=True)
    assert a["world"] == 2 and len(a["ranks"]) == 2
    moved = max((b["model"][k] - a["model"][k]).abs().max().item() for k in a["model"])
    assert moved < 1e-4  # float noise only: without the all-reduce, rank 0 would be ~1e-3 away


# ----------------------------------------------------------------------------- attention, precision, compile


def test_document_mask_keeps_attention_inside_documents(dataset):
    torch.manual_seed(0)
    loader = ShardLoader(dataset, 64, shuffle=False, fields=("input_ids", "labels", "doc_ids", "position_ids"))
    batch = next(iter(loader))
    doc_ids = torch.as_tensor(batch["doc_ids"])
    row = int(torch.nonzero(doc_ids.amax(dim=1) >= 1)[0])  # a sample holding two documents
    ids = torch.as_tensor(batch["labels"][row : row + 1]).clamp(min=0)
    docs = doc_ids[row : row + 1]
    boundary = int((docs[0] == 1).nonzero()[0])
    assert boundary > 0 and int(batch["position_ids"][row, boundary]) == 0  # positions restart per document

    model = GPT(ModelConfig(vocab_size=2048, seq_len=SEQ, n_layer=2, n_embd=64, n_head=4)).eval()
    changed = ids.clone()
    changed[0, : boundary] = (changed[0, : boundary] + 7) % 2048  # rewrite the first document
    with torch.no_grad():
        masked = [model(x, doc_ids=docs)[0, boundary:] for x in (ids, changed)]
        causal = [model(x)[0, boundary:] for x in (ids, changed)]
    assert torch.allclose(masked[0], masked[1], atol=1e-6)  # the second document never saw the first
    assert not torch.allclose(causal[0], causal[1], atol=1e-3)  # plain causal attention does

    mask = document_causal_mask(torch.tensor([[0, 0, 1, 1]]))
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)


def test_loss_is_next_token_cross_entropy_on_the_clean_labels():
    """HF convention: labels aligned with inputs, the model shifts; -100 is skipped."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=100, seq_len=16, n_layer=1, n_embd=32, n_head=2)).eval()
    inputs = torch.randint(0, 100, (2, 16))
    labels = torch.randint(0, 100, (2, 16))
    labels[1, 10:] = -100  # padding
    with torch.no_grad():
        logits = model(inputs)
        loss = model(inputs, labels)
    keep = labels[:, 1:] != -100
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][keep], labels[:, 1:][keep])
    assert torch.allclose(loss, manual, atol=1e-6)


def test_doc_mask_bf16_and_compile_paths_train(dataset, tmp_path):
    common = ["--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1", "--eval-samples", "0"]
    plain = train_shards.train(_args(dataset, tmp_path / "plain", *common, "--doc-mask"))
    bf16 = train_shards.train(_args(dataset, tmp_path / "bf16", *common, "--doc-mask", "--dtype", "bfloat16"))
    # bfloat16 autocast is really on (results differ), and stays close to float32.
    assert bf16["losses"] != plain["losses"]
    assert bf16["losses"] == pytest.approx(plain["losses"], rel=0.02)
    # torch.compile: Dynamo captures the model (the 'eager' backend skips code generation,
    # which takes a minute on CPU); the graph must compute what the module does.
    compiled = train_shards.train(_args(dataset, tmp_path / "compiled", *common, "--doc-mask",
                                        "--compile", "--compile-backend", "eager"))
    assert compiled["losses"] == pytest.approx(plain["losses"], rel=1e-5)


# ----------------------------------------------------------------------------- formulas and errors


def test_schedule_warms_up_then_follows_the_cosine():
    args = train_shards.build_parser().parse_args(["--data", "x", "--out", "y", "--lr", "1e-3",
                                                    "--warmup-steps", "10", "--max-steps", "110"])
    lrs = [train_shards.lr_at(s, args) for s in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-4 + 0.5 * (1e-3 - 1e-4))  # half way down the cosine
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[110] == lrs[119] == pytest.approx(1e-4)


def test_124m_config_has_gpt2_small_size_and_documented_flops():
    cfg = ModelConfig(vocab_size=50257, seq_len=1024, n_layer=12, n_embd=768, n_head=12)
    with torch.device("meta"):
        model = GPT(cfg)
    d, L = 768, 12
    expected = L * (12 * d * d + 4 * d) + 2 * d + 50304 * d  # blocks, final LN, tied table
    assert model.num_params() == expected and 123e6 < model.num_params(non_embedding=False) < 125e6
    with torch.device("meta"):
        untied = GPT(ModelConfig(vocab_size=50257, seq_len=1024, tie_embeddings=False))
    assert untied.num_params() == expected  # the same matmuls: the table is then a lookup only
    assert flops_per_token(expected, L, d, 1024) == 6 * expected + 12 * L * d * 1024


def test_peak_flops_table_and_override():
    assert peak_flops(torch.device("cpu"), None) is None  # MFU n/a on CPU
    assert peak_flops(torch.device("cpu"), 2e12) == 2e12
    of = peak_flops_of
    assert of("NVIDIA H100 80GB HBM3") == of("NVIDIA H200") == of("NVIDIA GH200 480GB") == 989e12
    assert of("NVIDIA H100 PCIe") == 756e12 and of("NVIDIA H100 NVL") == 835e12
    assert of("NVIDIA GeForce RTX 4090") is None


def _main_error(argv) -> tuple[int, str]:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = train_shards.main(argv)
    return code, err.getvalue()


def test_bad_input_gives_one_line_errors(dataset, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = _main_error(["--data", str(empty), "--out", str(tmp_path / "o")])
    assert code == 2 and "manifest.json" in err and err.count("\n") == 1
    base = ["--data", dataset, "--out", str(tmp_path / "o")]
    for extra, needle in ((["--width", "64", "--heads", "5"], "--heads 5 must divide --width 64"),
                          (["--seq-len", "4096"], "--seq-len 4096 is longer than the dataset's samples (128"),
                          (["--resume"], "no checkpoint at"),
                          (["--batch-size", "1000"], "fewer than one global batch")):
        code, err = _main_error(base + extra)
        assert code == 2 and needle in err and err.count("\n") == 1, err


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "meap_data.train_shards", "--help"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    assert proc.returncode == 0
    for flag in ("--objective", "--doc-mask", "--resume", "--compile", "--grad-accum", "--peak-flops"):
        assert flag in proc.stdout
