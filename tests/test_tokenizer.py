"""Tokenizers: local files and directories, the hub-name path, special tokens added."""

from __future__ import annotations

import os

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from meap_data.errors import MeapDataError
from meap_data.tokenizer import load_tokenizer, prepare_tokenizer


def _wordlevel_without_specials(tmp_path) -> str:
    tok = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def test_mask_and_eos_added_when_absent(tmp_path):
    tok = load_tokenizer(_wordlevel_without_specials(tmp_path))
    info = prepare_tokenizer(tok)
    assert (info.eos_token, info.eos_token_id, info.mask_token_id) == ("<|endoftext|>", 3, 4)
    rebuilt = info.build()
    assert rebuilt.encode("hello [MASK] world").ids == [0, 4, 1]
    assert info.vocab_size == 5


def test_existing_eos_is_reused_and_directory_path_works(tmp_path):
    tok = load_tokenizer(_wordlevel_without_specials(tmp_path))
    tok.add_special_tokens(["</s>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    info = prepare_tokenizer(load_tokenizer(str(tmp_path)))
    assert info.eos_token == "</s>" and info.eos_token_id == 3 and info.mask_token_id == 4
    again = prepare_tokenizer(info.build())
    assert again.sha256 == info.sha256  # idempotent: nothing added twice


def test_trained_tokenizer_round_trips_stdlib_source(tokenizer_path, stdlib):
    tok = Tokenizer.from_file(tokenizer_path)
    text = open(os.path.join(stdlib, "json", "encoder.py"), encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # BPE merges learned from the corpus


def test_hub_name_goes_through_the_hub_loader_and_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MeapDataError, match="hub name"):
        load_tokenizer("meap-data-test/no-such-tokenizer")


def test_broken_tokenizer_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(MeapDataError, match="not a valid tokenizer.json"):
        load_tokenizer(str(bad))
