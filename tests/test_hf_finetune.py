"""Fine-tuning a Hugging Face causal LM with MEAP-SFT (``meap-train --init-from``) and
judging its Rust repairs with the compiler (``rust eval-repair``, ``compare``).

A tiny random Llama is built from a config, with a byte-level BPE trained here on
error-index transcripts as its tokenizer, and saved locally: nothing comes from a hub.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from meap_data import train_shards
from meap_data.cli import main
from meap_data.config import PrepareConfig
from meap_data.kinds.rust import RustOptions
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.rust import error_index as EI
from meap_data.rust.eval_repair import compare_reports, eval_repair
from meap_data.rust.records import validate_record
from meap_data.rust.render import transcript_text

transformers = pytest.importorskip("transformers", reason="needs transformers (the dev extra)")
SEQ = 768


@pytest.fixture(scope="module")
def setup(tmp_path_factory, rust_docs_toolchain):
    """(error-index corpus, a saved tiny Llama with its own tokenizer, a repair dataset
    prepared with that tokenizer)."""
    from tokenizers import ByteLevelBPETokenizer

    root = tmp_path_factory.mktemp("hf")
    corpus = root / "error-index.jsonl"
    EI.build_corpus(corpus, limit=60, jobs=2, toolchain=rust_docs_toolchain)
    records = [json.loads(line) for line in corpus.read_text().splitlines()]
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([transcript_text(r) for r in records], vocab_size=900, min_frequency=2,
                            special_tokens=["</s>"], show_progress=False)
    model_dir = root / "tiny-llama"
    model_dir.mkdir()
    tok.save(str(model_dir / "tokenizer.json"))
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ, eos_token_id=tok.token_to_id("</s>"))
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    out = str(root / "ds")
    run_prepare(PrepareConfig(inputs=(str(corpus),), kind="rust", seq_len=SEQ,
                              options=RustOptions(eval_fraction=0.3)), out, tokenizer=str(model_dir))
    return str(corpus), str(model_dir), out, tok.get_vocab_size()


def _train(data, out, model_dir, *extra):
    torch.set_num_threads(1)
    args = train_shards.build_parser().parse_args([
        "--data", data, "--out", str(out), "--init-from", model_dir, "--batch-size", "4", "--lr", "3e-3",
        "--warmup-steps", "2", "--eval-samples", "0", "--quiet", *extra])
    return train_shards.train(args)


def test_init_from_trains_saves_and_reloads(setup, tmp_path):
    _, model_dir, ds, model_vocab = setup
    train = os.path.join(ds, "train")
    manifest = read_manifest(train)
    assert manifest["tokenizer"]["vocab_size"] == model_vocab + 1  # [MASK] added; </s> was there
    result = _train(train, tmp_path / "run", model_dir, "--max-steps", "40", "--log-interval", "5")
    losses = result["losses"]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1.0, losses  # it learns
    hf_dir = tmp_path / "run" / "hf"
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert model.get_input_embeddings().weight.shape[0] == manifest["tokenizer"]["vocab_size"]
    assert tok.mask_token == "[MASK]" and tok.convert_tokens_to_ids("[MASK]") == manifest["mask_token_id"]
    assert tok.eos_token_id == model.config.eos_token_id == manifest["tokenizer"]["eos_token_id"]
    # the reloaded model holds the trained weights of the final checkpoint
    from meap_data.hf_model import HFCausalLM

    state = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["model"]
    wrapper = HFCausalLM(model)
    assert all(torch.equal(v, state[k]) for k, v in wrapper.state_dict().items())


def test_init_from_resumes_bit_for_bit(setup, tmp_path):
    _, model_dir, ds, _ = setup
    train = os.path.join(ds, "train")
    common = ["--max-steps", "6", "--log-interval", "1"]
    straight = _train(train, tmp_path / "a", model_dir, *common)
    first = _train(train, tmp_path / "b", model_dir, *common, "--stop-at-step", "3")
    second = _train(train, tmp_path / "b", model_dir, *common, "--resume")
    assert first["losses"] + second["losses"] == straight["losses"]


def test_a_dataset_of_another_tokenizer_is_refused(setup, tmp_path, capsys, json_pkg_glob, tokenizer_path):
    _, model_dir, _, _ = setup
    other = str(tmp_path / "other")
    run_prepare(PrepareConfig(inputs=(json_pkg_glob,), seq_len=64), other, tokenizer=tokenizer_path)
    code = train_shards.main(["--data", other, "--out", str(tmp_path / "x"), "--init-from", model_dir])
    err = capsys.readouterr().err
    assert code == 2 and "prepared with another tokenizer" in err and f"--tokenizer {model_dir}" in err
    assert err.count("\n") == 1


def test_eval_repair_judges_every_generation_with_rustc(setup, tmp_path, capsys):
    corpus, model_dir, ds, _ = setup
    _train(os.path.join(ds, "train"), tmp_path / "run", model_dir, "--max-steps", "20")
    hf_dir = str(tmp_path / "run" / "hf")
    out = str(tmp_path / "eval")
    assert main(["-q", "rust", "eval-repair", "--model", hf_dir, "--data", os.path.join(ds, "eval"), "--output", out,
                 "--samples", "2", "--max-new-tokens", "40", "--limit", "4", "--temperature", "1.0"]) == 0
    printed = capsys.readouterr().out
    assert "identity baseline" in printed and "pass@2" in printed
    report = json.load(open(os.path.join(out, "report.json")))
    generations = [json.loads(line) for line in open(os.path.join(out, "generations.jsonl"))]
    assert len(generations) == report["generations"] == 4 * 2
    for g in generations:
        assert validate_record(g) is None, validate_record(g)
        assert g["origin"] == "generation" and g["argv"][0] == "rustc"  # each compiled, transcript kept
        assert g["generation"]["compiles"] == (g["exit_code"] == 0)
    # the reported counts are the compiles recorded
    assert report["compiles_recorded"] == sum(g["generation"]["compiles"] for g in generations)
    assert sum(r["compiled"] for r in report["per_record"]) == report["compiles_recorded"]
    assert sum(r["passed"] for r in report["per_record"]) == sum(g["generation"]["passed"] for g in generations)
    # the identity baseline returns the broken source: it never compiles on these records
    assert report["identity"]["compile_rate"] == 0.0 and report["identity"]["pass@1"] == 0.0
    again = str(tmp_path / "again")
    eval_repair(hf_dir, os.path.join(ds, "eval"), again, samples=2, max_new_tokens=40, limit=4, temperature=1.0,
                seed=1, progress=None)
    comparison = compare_reports(out, again)
    assert comparison.records == 4 and 0.0 <= comparison.test.p_value <= 1.0
    assert main(["compare", out, again]) == 0
    assert "McNemar" in capsys.readouterr().out
