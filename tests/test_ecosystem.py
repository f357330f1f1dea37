"""Fitting the ecosystem: typos refused, -q anywhere, --version, Hugging Face-native
dataset directories (AutoTokenizer, load_dataset), BOS and more eos names, the right
diagnosis for a wrong directory, a current s3fs in the project's own set-up, and plots."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os

import numpy as np
import pytest

from meap_data import train_shards
from meap_data.cli import main
from meap_data.config import PrepareConfig
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.tokenizer import load_tokenizer, prepare_tokenizer


@pytest.fixture(scope="module")
def ds(tmp_path_factory, json_pkg_glob, tokenizer_path):
    out = str(tmp_path_factory.mktemp("eco") / "ds")
    run_prepare(PrepareConfig(inputs=(json_pkg_glob,), seq_len=64, add_bos=True), out, tokenizer=tokenizer_path,
                progress=None)
    return out


def test_a_typo_is_an_error_not_a_beam_option(tmp_path, capsys, json_pkg_glob):
    out = tmp_path / "x"
    assert main(["prepare", "--input", json_pkg_glob, "--output", str(out), "--seqlen", "128"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments: --seqlen 128") and err.count("\n") == 1
    assert not out.exists()
    assert main(["verify", str(out), "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_real_beam_options_pass_and_quiet_works_after_the_command(tmp_path, capsys, json_pkg_glob, tokenizer_path):
    out = tmp_path / "ok"
    assert main(["prepare", "--input", json_pkg_glob, "--output", str(out), "--seq-len", "64", "--tokenizer",
                 tokenizer_path, "--direct_num_workers", "1", "-q"]) == 0
    captured = capsys.readouterr()
    assert "dataset written to" in captured.out and "shard 1/1" not in captured.err  # -q after the command
    # The Beam options reach Beam (they were once checked, then dropped).
    assert json.load(open(out / "run_info.json"))["beam_args"] == ["--direct_num_workers", "1"]
    assert main(["prepare", "--input", json_pkg_glob, "--output", str(tmp_path / "r"), "--runner", "NoSuchRunner"]) == 2
    assert "--runner NoSuchRunner: not a Beam runner here" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("meap-data ")


def test_hugging_face_loads_the_directory(ds, monkeypatch):
    transformers = pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    manifest = read_manifest(ds)
    tok = transformers.AutoTokenizer.from_pretrained(ds)
    t = manifest["tokenizer"]
    assert tok.mask_token_id == manifest["mask_token_id"] and tok.eos_token_id == t["eos_token_id"]
    assert tok.pad_token_id == t["pad_token_id"] and tok.bos_token_id == t["bos_token_id"]
    assert tok.model_max_length == 64
    loaded = datasets.load_dataset(ds)["train"]
    assert len(loaded) == manifest["counts"]["samples"]
    reference = datasets.load_from_disk(os.path.join(ds, "arrow"))
    assert loaded[0] == reference[0] and loaded[len(loaded) - 1] == reference[len(reference) - 1]
    card = open(os.path.join(ds, "README.md")).read()
    assert card.startswith("---\nconfigs:\n") and manifest["config_hash"] in card


def test_every_document_starts_with_bos(ds):
    import datasets

    manifest = read_manifest(ds)
    bos = manifest["tokenizer"]["bos_token_id"]
    assert manifest["config"]["add_bos"] is True and manifest["tokenizer"]["added_tokens"] == ["<|startoftext|>"]
    starts = 0
    for row in datasets.load_from_disk(os.path.join(ds, "arrow")):
        starts += int((np.array(row["labels"]) == bos).sum())
    assert starts == manifest["counts"]["documents_written"]  # one BOS per document


def test_tokens_added_are_logged_and_eos_names_detected(tokenizer_path, caplog):
    from tokenizers import Tokenizer, models

    with caplog.at_level(logging.INFO, logger="meap_data"):
        info = prepare_tokenizer(load_tokenizer(tokenizer_path), add_bos=True, bos_token="<s>")
    assert "added <s> (id" in caplog.text and f"-> {info.vocab_size} tokens" in caplog.text
    assert info.added_tokens == ("<s>",) and info.bos_token_id == info.vocab_size - 1
    # a tokenizer whose only end token is <EOT> gets it as its eos
    only_eot = Tokenizer(models.BPE())
    only_eot.add_special_tokens(["<EOT>"])
    assert prepare_tokenizer(only_eot).eos_token == "<EOT>"


def test_wrong_directories_get_the_right_diagnosis(ds, tmp_path, capsys):
    assert main(["verify", os.path.join(ds, "arrow")]) == 2
    assert f"pass the dataset directory above it, {ds!r}" in capsys.readouterr().err
    parent = tmp_path / "rust-out"
    (parent / "train").mkdir(parents=True)
    (parent / "train" / "manifest.json").write_text(open(os.path.join(ds, "manifest.json")).read())
    assert main(["inspect", str(parent)]) == 2
    assert "datasets of a --kind rust run; pass one of them" in capsys.readouterr().err


def test_the_setup_resolves_a_current_s3fs():
    try:
        version = importlib.metadata.version("s3fs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("s3fs is not installed (the dev and aws extras bring it)")
    assert int(version.split(".")[0]) >= 2023, f"s3fs {version}: the set-up fell back to an old release"


def test_plot_draws_meap_and_ntp_runs(ds, tmp_path):
    pytest.importorskip("matplotlib")
    import torch

    torch.set_num_threads(1)
    for objective in ("meap", "ntp"):
        train_shards.train(train_shards.build_parser().parse_args([
            "--data", ds, "--out", str(tmp_path / objective), "--objective", objective, "--layers", "1", "--width",
            "32", "--heads", "2", "--batch-size", "4", "--max-steps", "6", "--warmup-steps", "1", "--eval-interval",
            "3", "--eval-samples", "8", "--log-interval", "2", "--quiet"]))
    png = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "meap"), str(tmp_path / "ntp"), "--output", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert main(["plot", str(tmp_path / "missing"), "--output", str(png)]) == 2
