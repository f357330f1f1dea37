"""Encoder backends: fastokens reproduces tokenizers' ids where it is chosen, refuses or
is refused with a reason elsewhere, and a dataset is byte-identical whichever backend
wrote it; the backend is a fact of the run (run_info.json), not of the dataset."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from meap_data import encoders
from meap_data.config import PrepareConfig
from meap_data.encoders import FastokensEncoder, HfEncoder, build_encoder, choose_backend, first_difference
from meap_data.errors import MeapDataError
from meap_data.prepare import run_prepare
from meap_data.tokenizer import prepare_tokenizer

pytest.importorskip("fastokens", reason="fastokens is a dependency of meap-data; install the project")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def _stdlib_texts(stdlib, pattern="json/*.py") -> list[str]:
    return [open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(stdlib, pattern)))]


def _trained(kind: str, texts: list[str]) -> str:
    """A small tokenizer of one of the shapes hub models use, trained on ``texts``; its JSON."""
    byte_alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<|endoftext|>", "[MASK]"]
    if kind == "byte_level":  # GPT-2
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, initial_alphabet=byte_alphabet)
    elif kind == "split_regex":  # Llama 3, Qwen
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, initial_alphabet=byte_alphabet)
    elif kind == "byte_fallback":  # Llama 2, Mistral
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=["<unk>", "</s>", "[MASK]"]
                                      + [f"<0x{i:02X}>" for i in range(256)])
    elif kind == "nfkc":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, initial_alphabet=byte_alphabet)
    elif kind == "wordpiece":  # BERT
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=1500, special_tokens=["[UNK]", "[SEP]", "[MASK]"])
    elif kind == "unigram":  # T5
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=1500, special_tokens=["<unk>", "</s>", "[MASK]"], unk_token="<unk>")
    else:
        raise ValueError(kind)
    trainer.show_progress = False
    tok.train_from_iterator(texts, trainer=trainer)
    return prepare_tokenizer(tok).json


def test_fastokens_reproduces_tokenizers_on_stdlib_source_and_the_self_check(tokenizer_path, stdlib):
    texts = _stdlib_texts(stdlib, "email/*.py") + encoders.self_check_texts(["[MASK]", "<|endoftext|>"])
    tok_json = open(tokenizer_path, encoding="utf-8").read()
    fast, hf = FastokensEncoder(tok_json), HfEncoder(tok_json)
    got, want = fast.encode(texts), hf.encode(texts)
    assert sum(map(len, want)) > 50_000
    assert all(a.dtype == np.int32 and np.array_equal(a, b) for a, b in zip(got, want))
    # Special-token names inside a document are text, never the special ids.
    mask_id = Tokenizer.from_str(tok_json).token_to_id("[MASK]")
    assert mask_id not in np.concatenate(got).tolist()
    ids, offsets = fast.encode_flat(texts)
    assert len(offsets) == len(texts) + 1 and int(offsets[-1]) == len(ids)


@pytest.mark.parametrize("kind", ["byte_level", "split_regex", "byte_fallback"])
def test_auto_takes_fastokens_where_it_reproduces_the_ids(kind, stdlib):
    tok_json = _trained(kind, _stdlib_texts(stdlib))
    sample = _stdlib_texts(stdlib, "email/mime/*.py")
    choice = choose_backend(tok_json, "auto", run_sample=sample)
    assert choice.backend == "fastokens", choice.reason
    added = HfEncoder(tok_json).added_tokens()[: encoders.MAX_CHECKED_ADDED_TOKENS]
    assert choice.checked_texts == len(encoders.self_check_texts(added)) + len(sample)
    assert choice.checked_tokens > 1000 and choice.version
    assert f"{len(sample)} from this run's inputs" in choice.reason


@pytest.mark.parametrize("kind,unsupported", [("nfkc", "NFKC"), ("wordpiece", "BertNormalizer"), ("unigram", "Metaspace")])
def test_auto_falls_back_with_the_reason_and_explicit_fastokens_refuses(kind, unsupported, stdlib, caplog):
    tok_json = _trained(kind, _stdlib_texts(stdlib))
    with caplog.at_level("WARNING", logger="meap_data"):
        choice = choose_backend(tok_json, "auto")
    assert choice.backend == "hf" and unsupported in choice.reason
    assert any(unsupported in r.getMessage() and "using tokenizers" in r.getMessage() for r in caplog.records)
    with pytest.raises(MeapDataError, match=f"--tokenizer-backend fastokens: .*{unsupported}.*--tokenizer-backend hf"):
        choose_backend(tok_json, "fastokens")
    assert choose_backend(tok_json, "hf").backend == "hf"


class _DiffersOn(FastokensEncoder):
    """fastokens with one wrong id on texts holding ``marker``: a backend bug stand-in."""

    marker = "zebra"

    def encode(self, texts):
        return [np.concatenate([ids[:-1], [7]]) if self.marker in t and len(ids) else ids
                for t, ids in zip(texts, super().encode(texts))]


def test_a_difference_on_the_runs_own_documents_keeps_tokenizers(tokenizer_path, monkeypatch):
    tok_json = open(tokenizer_path, encoding="utf-8").read()
    monkeypatch.setattr(encoders, "FastokensEncoder", _DiffersOn)
    assert choose_backend(tok_json, "auto", run_sample=["plain text"]).backend == "fastokens"
    choice = choose_backend(tok_json, "auto", run_sample=["plain text", "a zebra crossing"])
    assert choice.backend == "hf"
    assert "differ" in choice.reason and "'a zebra crossing'" in choice.reason and "at token" in choice.reason
    texts = ["x", "the zebra"]
    assert first_difference(_DiffersOn(tok_json), HfEncoder(tok_json), texts).startswith("text 1 ('the zebra'")


def test_without_fastokens_auto_uses_tokenizers_and_a_worker_falls_back(tokenizer_path, monkeypatch, caplog):
    tok_json = open(tokenizer_path, encoding="utf-8").read()
    monkeypatch.setitem(sys.modules, "fastokens", None)  # import fastokens -> ImportError
    choice = choose_backend(tok_json, "auto")
    assert choice.backend == "hf" and "not installed" in choice.reason
    with pytest.raises(MeapDataError, match="not installed"):
        choose_backend(tok_json, "fastokens")
    with caplog.at_level("WARNING", logger="meap_data"):
        encoder = build_encoder(tok_json, "fastokens")
    assert encoder.name == "hf" and "unavailable on this worker" in caplog.text


def _tree(directory: str) -> dict[str, str]:
    return {os.path.relpath(p, directory): hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True))
            if os.path.isfile(p) and not p.endswith("run_info.json")}


def test_shards_are_byte_identical_whichever_backend_wrote_them(tmp_path, stdlib, tokenizer_path):
    tricky = tmp_path / "tricky.jsonl"
    lines = [{"text": t} for t in encoders.SELF_CHECK_TEXTS if t.strip()]
    lines += [{"text": "a [MASK] b <|endoftext|> c " * 50}, {"text": 5}, {"text": "\ud83e\udd80 crab \ud800"}]
    tricky.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    config = PrepareConfig(inputs=(os.path.join(stdlib, "json", "*.py"), str(tricky)), seq_len=256,
                           input_bytes_per_shard=40_000)
    runs = {}
    for backend in ("hf", "fastokens", "auto"):
        out = str(tmp_path / backend)
        outcome = run_prepare(config, out, tokenizer=tokenizer_path, tokenizer_backend=backend)
        runs[backend] = (_tree(out), outcome)
    tree, outcome = runs["hf"]
    assert len([p for p in tree if p.endswith(".tar")]) >= 2 and outcome.manifest["counts"]["documents_rejected"] == 2
    assert runs["fastokens"][0] == tree == runs["auto"][0]
    info = {b: o.run_info["tokenizer_backend"] for b, (_, o) in runs.items()}
    assert info["hf"]["backend"] == "hf" and info["fastokens"]["backend"] == "fastokens"
    assert info["auto"]["backend"] == "fastokens" and info["auto"]["requested"] == "auto"
    assert "run's inputs" in info["auto"]["reason"]
    on_disk = json.load(open(os.path.join(tmp_path, "auto", "run_info.json")))
    assert on_disk["tokenizer_backend"] == info["auto"]
    manifest_text = open(os.path.join(tmp_path, "auto", "manifest.json")).read()
    assert "fastokens" not in manifest_text and "backend" not in manifest_text


def test_cli_backend_flag_refuses_an_unsupported_tokenizer_in_one_line(tmp_path, stdlib):
    tok = tmp_path / "nfkc.json"
    tok.write_text(_trained("nfkc", _stdlib_texts(stdlib)), encoding="utf-8")
    base = [sys.executable, "-m", "meap_data", "-q", "prepare", "--input", os.path.join(stdlib, "json", "__init__.py"),
            "--tokenizer", str(tok), "--seq-len", "128"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    refused = subprocess.run(base + ["--output", str(tmp_path / "a"), "--tokenizer-backend", "fastokens"],
                             capture_output=True, text=True, env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: --tokenizer-backend fastokens: fastokens cannot")
    assert not os.path.exists(tmp_path / "a" / "manifest.json")
    ok = subprocess.run(base + ["--output", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    run_info = json.load(open(tmp_path / "b" / "run_info.json"))
    assert run_info["tokenizer_backend"]["backend"] == "hf" and "NFKC" in run_info["tokenizer_backend"]["reason"]
    bad = subprocess.run(base + ["--output", str(tmp_path / "c"), "--tokenizer-backend", "fast"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "invalid choice: 'fast'" in bad.stderr
