"""The prepare pipeline end to end on real stdlib source: interop with `datasets` and
`webdataset`, counts, dead letters, determinism across runs and worker counts,
verify, inspect, overwrite safety and the command line."""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from meap_data.config import PrepareConfig
from meap_data.errors import MeapDataError
from meap_data.inspect_sample import inspect_dataset, read_sample
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.verify import verify_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 128


def _config(*inputs, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", SEQ)
    kw.setdefault("input_bytes_per_shard", 120_000)
    return PrepareConfig(inputs=tuple(inputs), **kw)


def _tree_digest(directory: str, exclude=("run_info.json",)) -> dict:
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        rel = os.path.relpath(path, directory)
        if os.path.isfile(path) and os.path.basename(path) not in exclude:
            out[rel] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, email_glob, tokenizer_path):
    out = str(tmp_path_factory.mktemp("ds") / "email")
    run_prepare(_config(email_glob), out, tokenizer=tokenizer_path)
    return out


def test_datasets_and_webdataset_read_the_same_samples(dataset):
    import datasets
    import webdataset as wds

    manifest = read_manifest(dataset)
    assert len(manifest["shards"]["arrow"]) >= 3
    hf = datasets.load_from_disk(os.path.join(dataset, "arrow"))
    assert len(hf) == manifest["counts"]["samples"]
    urls = sorted(glob.glob(os.path.join(dataset, "webdataset", "*.tar")))
    tar_samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert len(tar_samples) == len(hf)
    for row, sample in zip(hf, tar_samples):
        assert sample["__key__"] == row["key"]
        assert (sample["input_ids.npy"] == np.asarray(row["input_ids"])).all()
        assert (sample["labels.npy"] == np.asarray(row["labels"])).all()
        assert sample["json"]["doc_offsets"] == row["doc_offsets"]
        assert sample["json"]["doc_keys"] == row["doc_keys"]


def test_every_token_of_every_document_is_in_the_shards(dataset, email_glob, tokenizer_path):
    import datasets
    from tokenizers import Tokenizer

    manifest = read_manifest(dataset)
    tok = Tokenizer.from_file(os.path.join(dataset, "tokenizer.json"))
    eos = manifest["tokenizer"]["eos_token_id"]
    hf = datasets.load_from_disk(os.path.join(dataset, "arrow"))
    stream = np.concatenate([np.asarray(r["labels"][: r["length"]]) for r in hf])
    from meap_data.inputs import expand_inputs

    texts = [open(f.path, encoding="utf-8").read() for f in expand_inputs([email_glob])]
    empty = sum(1 for t in texts if not t.strip())  # empty __init__.py files: rejected
    expected = np.concatenate(
        [np.append(tok.encode(t, add_special_tokens=False).ids, eos) for t in texts if t.strip()]
    )
    assert (stream == expected).all()
    c = manifest["counts"]
    assert c["tokens"] == len(expected)
    assert c["documents_read"] == len(texts) and c["documents_written"] == len(texts) - empty
    assert c["rejected_by_reason"] == ({"empty_text": empty} if empty else {})
    assert c["samples"] == len(hf)
    masked = sum(int(((np.asarray(r["input_ids"]) == manifest["mask_token_id"])
                      & (np.asarray(r["labels"]) != manifest["mask_token_id"])).sum()) for r in hf)
    assert masked == c["masked_tokens"]
    full_rows = sum(1 for r in hf if r["length"] == SEQ)
    assert c["masked_tokens"] >= full_rows * int(SEQ * 0.15)


def test_verify_passes_then_catches_a_flipped_byte(dataset, tmp_path):
    import shutil

    assert verify_dataset(dataset) == []
    copy = str(tmp_path / "copy")
    shutil.copytree(dataset, copy)
    shard = sorted(glob.glob(os.path.join(copy, "arrow", "*.arrow")))[1]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(shard, "wb").write(bytes(data))
    problems = verify_dataset(copy)
    assert len(problems) == 1 and os.path.basename(shard) in problems[0] and "sha256" in problems[0]
    cli = subprocess.run([sys.executable, "-m", "meap_data", "verify", copy], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 3 and os.path.basename(shard) in cli.stderr


def test_inspect_marks_masked_tokens(dataset):
    report = inspect_dataset(dataset, 3)
    manifest = read_manifest(dataset)
    sample = read_sample(dataset, 3)
    n_masked = int((sample["input_ids"] == manifest["mask_token_id"]).sum())
    assert report.count("[[") >= n_masked - 2  # adjacent masks each get their own marker
    assert f"masked={n_masked}" in report
    assert sample["doc_keys"][0] in report


def test_same_inputs_give_byte_identical_output_across_runs_and_worker_counts(tmp_path, json_pkg_glob, email_glob, tokenizer_path):
    inputs = (json_pkg_glob, os.path.join(os.path.dirname(email_glob), "mime", "*.py"))
    config = _config(*inputs, input_bytes_per_shard=20_000)
    a, b, c = (str(tmp_path / n) for n in "abc")
    run_prepare(config, a, tokenizer=tokenizer_path)
    run_prepare(config, b, tokenizer=tokenizer_path)
    run_prepare(config, c, tokenizer=tokenizer_path,
                beam_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    digest = _tree_digest(a)
    assert len([p for p in digest if p.endswith(".arrow")]) >= 3
    assert digest == _tree_digest(b) == _tree_digest(c)
    run_info = json.load(open(os.path.join(c, "run_info.json")))
    assert "multi_processing" in run_info["beam_args"]


def test_bad_inputs_are_counted_and_land_in_rejected(tmp_path, tokenizer_path, stdlib):
    good = open(os.path.join(stdlib, "json", "decoder.py"), encoding="utf-8").read()
    src = tmp_path / "src"
    src.mkdir()
    lines = [json.dumps({"id": "ok-1", "text": good}), "{not json", json.dumps({"text": None}),
             json.dumps({"txt": "wrong field"}), json.dumps({"id": "ok-2", "text": "x " * 20000})]
    (src / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    (src / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    body = "".join(json.dumps({"text": good}) + "\n" for _ in range(300)).encode()
    (src / "cut.jsonl.gz").write_bytes(gzip.compress(body)[:4000])
    os.symlink(src / "missing", src / "gone.jsonl")
    out = str(tmp_path / "out")
    outcome = run_prepare(_config(str(src / "*")), out, tokenizer=tokenizer_path)
    c = outcome.manifest["counts"]
    assert c["documents_read"] == c["documents_written"] + c["documents_rejected"]
    assert c["rejected_by_reason"] == {
        "invalid_json": 1, "invalid_utf8": 1, "missing_text_field": 1, "null_text": 1,
        "truncated_or_corrupt_file": 1, "unreadable_file": 1,
    }
    dead = [json.loads(l) for f in sorted(glob.glob(os.path.join(out, "rejected", "*.jsonl"))) for l in open(f)]
    assert sorted(d["reason"] for d in dead) == sorted(k for k in c["rejected_by_reason"])
    assert {"key", "reason", "detail"} <= set(dead[0])
    assert "mixed.jsonl:2" in {d["key"] for d in dead}
    # The 40000-character document is thousands of tokens: split over samples, not dropped.
    import datasets

    hf = datasets.load_from_disk(os.path.join(out, "arrow"))
    assert sum(1 for r in hf if "ok-2" in r["doc_keys"]) >= 20000 * 2 // SEQ // 4
    assert verify_dataset(out) == []


def test_existing_dataset_is_refused_then_replaced_without_a_mix(tmp_path, json_pkg_glob, email_glob, tokenizer_path):
    out = str(tmp_path / "out")
    run_prepare(_config(email_glob), out, tokenizer=tokenizer_path)
    with pytest.raises(MeapDataError, match="--overwrite"):
        run_prepare(_config(json_pkg_glob), out, tokenizer=tokenizer_path)
    run_prepare(_config(json_pkg_glob), out, tokenizer=tokenizer_path, overwrite=True)
    manifest = read_manifest(out)
    listed = {e["path"] for fmt in manifest["shards"].values() for e in fmt}
    on_disk = {os.path.relpath(p, out) for p in glob.glob(os.path.join(out, "*", "*")) if p.endswith((".arrow", ".tar"))}
    assert listed == on_disk
    assert verify_dataset(out) == []


def test_unpacked_mode_one_document_per_sample(tmp_path, json_pkg_glob, tokenizer_path):
    import datasets

    out = str(tmp_path / "nopack")
    run_prepare(_config(json_pkg_glob, pack=False, formats=("arrow",)), out, tokenizer=tokenizer_path)
    hf = datasets.load_from_disk(os.path.join(out, "arrow"))
    assert all(r["doc_offsets"] == [0] and len(r["doc_keys"]) == 1 for r in hf)
    padded = [r for r in hf if r["length"] < SEQ]
    assert len(padded) == 5  # one partial tail per json module
    assert all(all(v == -100 for v in r["labels"][r["length"]:]) for r in padded)
    assert not os.path.exists(os.path.join(out, "webdataset"))


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "meap_data", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_prepare_verify_inspect_and_errors(tmp_path, json_pkg_glob, tokenizer_path):
    out = str(tmp_path / "cli")
    done = _cli("prepare", "--input", json_pkg_glob, "--output", out, "--tokenizer", tokenizer_path,
                "--seq-len", "64", "--mask-ratio", "0.2", "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert "documents: 5 read, 5 written, 0 rejected" in done.stdout
    assert "throughput:" in done.stdout and "shard 1/1" in done.stderr
    assert read_manifest(out)["config"]["seed"] == 7
    assert _cli("verify", out).returncode == 0
    shown = _cli("inspect", out, "--index", "1")
    assert shown.returncode == 0 and "[[" in shown.stdout
    nothing = _cli("prepare", "--input", str(tmp_path / "none-*.jsonl"), "--output", str(tmp_path / "x"))
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: ") and "matches no file" in nothing.stderr
    again = _cli("prepare", "--input", json_pkg_glob, "--output", out, "--tokenizer", tokenizer_path)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    missing = _cli("verify", str(tmp_path))
    assert missing.returncode == 2 and "incomplete" in missing.stderr
    for cmd in (["--help"], ["prepare", "--help"], ["inspect", "--help"], ["verify", "--help"],
                ["tokenizer", "train", "--help"], ["demo", "--help"]):
        assert _cli(*cmd).returncode == 0


def test_tokenizer_train_command(tmp_path, json_pkg_glob):
    from tokenizers import Tokenizer

    out = str(tmp_path / "tok.json")
    done = _cli("tokenizer", "train", "--input", json_pkg_glob, "--vocab-size", "600", "--output", out)
    assert done.returncode == 0, done.stderr
    tok = Tokenizer.from_file(out)
    assert tok.token_to_id("[MASK]") is not None and tok.token_to_id("<|endoftext|>") is not None
    assert 300 < tok.get_vocab_size() <= 600
