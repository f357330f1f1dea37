"""Every reader of a prepared dataset sees every row (issue 19): ``datasets.load_dataset``
through the dataset card, ``load_from_disk``, ``webdataset`` and the project's loaders,
on datasets of several shards and many Arrow record batches, text and both Rust splits.

``datasets`` 5.x keys ``load_dataset(DIR)``'s cache by the folder's name and the card,
not by the data files: before the card carried a content fingerprint, a dataset
rewritten at the same path (or another one in a folder of the same name) came back from
the old cache, with other rows and another count, and no warning.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pytest

from meap_data.config import PrepareConfig
from meap_data.loader import ShardLoader
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare

datasets = pytest.importorskip("datasets")

SEQ = 64
COLUMNS = ("key", "input_ids", "labels", "doc_offsets", "doc_keys", "length", "mask_span")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _prepare(glob: str, out: str, tokenizer: str, **kw) -> str:
    kw.setdefault("seq_len", SEQ)
    kw.setdefault("input_bytes_per_shard", 120_000)
    overwrite = kw.pop("overwrite", False)
    run_prepare(PrepareConfig(inputs=(glob,), **kw), out, tokenizer=tokenizer, overwrite=overwrite)
    return out


def _batches_per_shard(directory: str) -> list[int]:
    counts = []
    for entry in read_manifest(directory)["shards"]["arrow"]:
        with pa.ipc.open_stream(os.path.join(directory, entry["path"])) as reader:
            counts.append(sum(1 for _ in reader))
    return counts


def _rows(table) -> dict:
    """Columns as Python lists, in row order."""
    return {c: table[c] for c in COLUMNS}


def _reference(directory: str) -> dict:
    return _rows(datasets.load_from_disk(os.path.join(directory, "arrow")).to_dict())


@pytest.fixture(scope="module")
def text_ds(tmp_path_factory, email_glob, tokenizer_path) -> str:
    out = _prepare(email_glob, str(tmp_path_factory.mktemp("agree") / "email"), tokenizer_path)
    batches = _batches_per_shard(out)
    assert len(batches) >= 3 and max(batches) >= 3, batches  # several shards, many record batches
    return out


def test_load_dataset_gives_every_row_of_every_shard(text_ds, tmp_path):
    manifest = read_manifest(text_ds)
    loaded = datasets.load_dataset(text_ds, cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"]
    assert len(loaded["train"]) == manifest["counts"]["samples"] == sum(e["samples"] for e in manifest["shards"]["arrow"])
    assert _rows(loaded["train"].to_dict()) == _reference(text_ds)


def test_a_rewritten_dataset_is_never_served_from_the_old_cache(tmp_path, email_glob, json_pkg_glob, tokenizer_path):
    cache = str(tmp_path / "cache")
    out = str(tmp_path / "a" / "data")

    def load(directory):
        ds = datasets.load_dataset(directory, split="train", cache_dir=cache)
        return _rows(ds.to_dict())

    _prepare(json_pkg_glob, out, tokenizer_path, seq_len=512)
    assert load(out) == _reference(out)
    # The same path, rewritten: other inputs and lengths (another count), then only another
    # seed (the same count and byte sizes, other masks).
    for kw in (dict(seq_len=SEQ), dict(seq_len=SEQ, seed=7)):
        before = _reference(out)
        _prepare(email_glob, out, tokenizer_path, overwrite=True, **kw)
        after = _reference(out)
        assert after != before and load(out) == after
    # Another dataset in a folder of the same name shares datasets' cache folder name.
    other = _prepare(json_pkg_glob, str(tmp_path / "b" / "data"), tokenizer_path, seq_len=128)
    assert load(other) == _reference(other) and load(out) == _reference(out)


def test_a_lost_shard_is_an_error_not_fewer_rows(text_ds, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(text_ds, copy)
    first = read_manifest(copy)["shards"]["arrow"][0]
    os.remove(os.path.join(copy, first["path"]))
    with pytest.raises(datasets.exceptions.NonMatchingSplitsSizesError):
        datasets.load_dataset(copy, split="train", cache_dir=str(tmp_path / "cache"))


def test_webdataset_and_the_loaders_give_the_same_rows(text_ds):
    import webdataset as wds

    reference = _reference(text_ds)
    n = len(reference["key"])
    manifest = read_manifest(text_ds)
    urls = [os.path.join(text_ds, e["path"]) for e in manifest["shards"]["webdataset"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode())
    assert len(samples) == n
    for i, s in enumerate(samples):
        meta = s["json"]
        assert s["__key__"] == reference["key"][i] == meta["key"]
        assert s["input_ids.npy"].tolist() == reference["input_ids"][i]
        assert s["labels.npy"].tolist() == reference["labels"][i]
        assert [meta[c] for c in ("doc_offsets", "doc_keys", "length", "mask_span")] == \
            [reference[c][i] for c in ("doc_offsets", "doc_keys", "length", "mask_span")]
    for fmt in ("arrow", "webdataset"):
        batches = list(ShardLoader(text_ds, 7, format=fmt, shuffle=False, remainder="wrap",
                                   fields=("input_ids", "labels", "keys")))
        keys = [k for b in batches for k in b["keys"]][:n]
        assert keys == reference["key"], fmt
        ids = np.concatenate([b["input_ids"] for b in batches])[:n]
        labels = np.concatenate([b["labels"] for b in batches])[:n]
        np.testing.assert_array_equal(ids, np.array(reference["input_ids"]))
        np.testing.assert_array_equal(labels, np.array(reference["labels"]))


def test_a_webdataset_only_dataset_loads_from_its_tars(text_ds, tmp_path, email_glob, tokenizer_path):
    tars = _prepare(email_glob, str(tmp_path / "tars"), tokenizer_path, formats=("webdataset",))
    assert read_manifest(tars)["shards"]["webdataset"] == read_manifest(text_ds)["shards"]["webdataset"]
    loaded = datasets.load_dataset(tars, split="train", cache_dir=str(tmp_path / "cache"))
    reference = _reference(text_ds)
    assert len(loaded) == len(reference["key"])
    assert loaded["__key__"] == reference["key"]
    assert loaded["input_ids.npy"] == reference["input_ids"] and loaded["labels.npy"] == reference["labels"]
    meta = loaded["json"]
    for c in ("doc_offsets", "doc_keys", "length", "mask_span"):
        assert [m[c] for m in meta] == reference[c], c


@pytest.fixture(scope="module")
def rust_ds(tmp_path_factory, rust_docs_toolchain) -> str:
    """Train and eval datasets of Rust repair samples, several shards each."""
    from meap_data.kinds.rust import RustOptions
    from meap_data.rust import error_index as EI

    root = tmp_path_factory.mktemp("agree-rust")
    EI.build_corpus(root / "error-index.jsonl", limit=60, jobs=2, toolchain=rust_docs_toolchain)
    out = str(root / "out")
    run_prepare(PrepareConfig(inputs=(str(root / "error-index.jsonl"),), kind="rust", seq_len=1024,
                              input_bytes_per_shard=30_000, options=RustOptions(eval_fraction=0.3)), out)
    return out


def test_both_rust_splits_load_whole_through_the_parent_card(rust_ds, tmp_path):
    loaded = datasets.load_dataset(rust_ds, cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded) == ["eval", "train"]
    for split in ("train", "eval"):
        directory = os.path.join(rust_ds, split)
        manifest = read_manifest(directory)
        assert len(manifest["shards"]["arrow"]) >= 2, split
        assert len(loaded[split]) == manifest["counts"]["samples"] > 0
        assert _rows(loaded[split].to_dict()) == _reference(directory), split
        # Each split's own card loads it alone.
        alone = datasets.load_dataset(directory, split=split, cache_dir=str(tmp_path / "cache"))
        assert alone["key"] == loaded[split]["key"]
    card = open(os.path.join(rust_ds, "README.md")).read()
    info = json.loads(json.dumps(__import__("yaml").safe_load(card.split("---")[1])))
    assert {s["name"]: s["num_examples"] for s in info["dataset_info"]["splits"]} == \
        {s: read_manifest(os.path.join(rust_ds, s))["counts"]["samples"] for s in ("train", "eval")}
