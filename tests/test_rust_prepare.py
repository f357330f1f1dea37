"""``prepare --kind rust``: a real error-index corpus to train/eval datasets.

Builds 40 error-index examples with the local toolchain (skipped, with the reason, when
rustc or its docs are missing), adds a file of bad records, and checks the datasets the
loader reads: prompt labels, MEAP-SFT masked copies, counts, the split by primary code,
and byte-identical reruns.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import jsonschema
import numpy as np
import pytest

from meap_data.cli import main
from meap_data.config import PrepareConfig
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.rust import error_index as EI
from meap_data.kinds.rust import NO_CODE, RustOptions, is_eval_code, primary_code
from meap_data.masking import SFT_MIN_ANSWER_TOKENS
from meap_data.rust.render import diagnose, repair
from meap_data.sample_format import IGNORE_INDEX
from meap_data.verify import verify_dataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 1024
HELD_OUT = "E0004"
BAD_REASONS = {"invalid_json": 1, "invalid_record": 1, "timed_out": 1, "no_diagnostics": 1, "not_jsonl": 1}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, rust_docs_toolchain) -> tuple[str, list[dict]]:
    """A glob over 40 error-index records plus a file of one bad record per reason."""
    toolchain = rust_docs_toolchain
    root = tmp_path_factory.mktemp("rust-corpus")
    EI.build_corpus(root / "a-error-index.jsonl", limit=40, jobs=2, toolchain=toolchain)
    records = [json.loads(line) for line in (root / "a-error-index.jsonl").read_text().splitlines()]
    timed_out = dict(records[0], key="timed-out", timed_out=True, exit_code=None, diagnostics=[], rendered="")
    clean = dict(records[0], key="compiles-cleanly", exit_code=0, diagnostics=[], rendered="")
    bad = [
        '{"key": "broken", "source": ',  # invalid JSON
        json.dumps({"schema_version": 1, "key": "no-fields"}),  # fails the schema
        json.dumps(timed_out),
        json.dumps(clean),
    ]
    (root / "b-bad.jsonl").write_text("\n".join(bad) + "\n")
    (root / "c-main.rs").write_text("fn main() {}\n")  # a source where records belong
    return str(root / "*"), records


def _config(pattern: str, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", SEQ)
    kw.setdefault("options", RustOptions(eval_codes=(HELD_OUT,), eval_fraction=0.1))
    return PrepareConfig(inputs=(pattern,), kind="rust", **kw)


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("rust-prepared") / "out")
    # Small units: the 40-record file is cut into byte ranges, several shards per split.
    run_prepare(_config(corpus[0], input_bytes_per_shard=40_000), out)
    return out


def _samples(directory: str) -> list[dict]:
    import datasets

    ds = datasets.load_from_disk(os.path.join(directory, "arrow"))
    return [ds[i] for i in range(len(ds))]


def _tokenizer(directory: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))


def test_split_is_a_pure_function_of_the_code():
    assert is_eval_code("E0308", ("E0308",), 0.0)
    assert not is_eval_code("E0382", ("E0308",), 0.0)
    assert is_eval_code("E0382", (), 1.0)
    codes = [f"E{i:04d}" for i in range(2000)]
    held = [c for c in codes if is_eval_code(c, (), 0.1)]
    assert 140 < len(held) < 260  # about a tenth
    assert held == [c for c in codes if is_eval_code(c, (), 0.1)]
    record = {"diagnostics": [{"level": "warning", "code": "unused_variables"},
                              {"level": "error", "code": None}, {"level": "error", "code": "E0382"}]}
    assert primary_code(record) == "E0382"
    assert primary_code({"diagnostics": [{"level": "warning", "code": "dead_code"}]}) == "dead_code"
    assert primary_code({"diagnostics": [{"level": "error", "code": None}], "expected_code": "E0001"}) == "E0001"
    assert primary_code({"diagnostics": [{"level": "error", "code": None}]}) == NO_CODE


def test_datasets_load_and_verify(prepared):
    for split in ("train", "eval"):
        directory = os.path.join(prepared, split)
        assert verify_dataset(directory) == []
        manifest = read_manifest(directory)
        with open(os.path.join(REPO, "schemas", "manifest.schema.json")) as f:
            jsonschema.validate(manifest, json.load(f))
        assert manifest["config"]["split"] == split
        assert manifest["config"]["task"] == "repair" and manifest["config"]["sft_layout"] == "rows"
        assert manifest["config"]["mask_ratio"] == 0.1
        samples = _samples(directory)
        assert len(samples) == manifest["counts"]["samples"] > 0
        assert len({s["key"] for s in samples}) == len(samples)
        assert all("." not in s["key"] for s in samples)
    assert len(read_manifest(os.path.join(prepared, "train"))["shards"]["arrow"]) > 1
    # No --tokenizer: the BPE was trained on rendered transcripts, so their scaffolding is
    # merged tokens (16 measured; a byte-level fallback needs one per byte, 41).
    tok = _tokenizer(os.path.join(prepared, "train"))
    assert len(tok.encode("### Compiler output: rustc --edition 2015", add_special_tokens=False).ids) < 25


def test_counts_balance_and_bad_records_are_rejected_with_reasons(prepared, corpus):
    _, records = corpus
    train = read_manifest(os.path.join(prepared, "train"))["counts"]
    evaluation = read_manifest(os.path.join(prepared, "eval"))["counts"]
    for c in (train, evaluation):
        assert c["documents_read"] == c["documents_written"] + c["documents_rejected"]
    # Every input line is counted once, in one of the two datasets.
    assert train["documents_read"] + evaluation["documents_read"] == len(records) + sum(BAD_REASONS.values())
    for reason, n in BAD_REASONS.items():
        assert train["rejected_by_reason"].get(reason) == n
        assert reason not in evaluation["rejected_by_reason"]
    no_fix = sum(1 for r in records if not r.get("fixed_source"))
    assert train["rejected_by_reason"].get("no_fix", 0) + evaluation["rejected_by_reason"].get("no_fix", 0) == no_fix
    rejected = [json.loads(line) for path in sorted(glob.glob(os.path.join(prepared, "train", "rejected", "*.jsonl")))
                for line in open(path)]
    by_reason = {r["reason"]: r for r in rejected}
    assert by_reason["invalid_json"]["key"] == "b-bad.jsonl:1"
    assert "rust_transcript.schema.json" in by_reason["invalid_record"]["detail"]
    assert by_reason["timed_out"]["key"] == "timed-out"
    assert "rust harvest" in by_reason["not_jsonl"]["detail"]


def test_no_primary_code_in_both_splits(prepared, corpus):
    _, records = corpus
    by_key = {r["key"]: r for r in records}
    seen = {}
    for split in ("train", "eval"):
        directory = os.path.join(prepared, split)
        codes = {primary_code(by_key[s["doc_keys"][0]]) for s in _samples(directory)}
        assert codes <= set(read_manifest(directory)["codes"])
        seen[split] = codes
    train_codes = set(read_manifest(os.path.join(prepared, "train"))["codes"])
    eval_codes = set(read_manifest(os.path.join(prepared, "eval"))["codes"])
    assert not train_codes & eval_codes
    assert HELD_OUT in eval_codes and HELD_OUT in seen["eval"]
    assert all(is_eval_code(c, (HELD_OUT,), 0.1) for c in eval_codes)
    assert train_codes | eval_codes == {primary_code(r) for r in records}


def test_prompt_labels_ignored_masked_copies_only_for_long_answers(prepared, corpus):
    _, records = corpus
    by_key = {r["key"]: r for r in records}
    directory = os.path.join(prepared, "train")
    tok = _tokenizer(directory)
    mask_id = read_manifest(directory)["mask_token_id"]
    samples = _samples(directory)
    masked_copies = i = 0
    while i < len(samples):
        clean = samples[i]
        prompt, answer = repair(by_key[clean["doc_keys"][0]])
        n_prompt = len(tok.encode(prompt, add_special_tokens=False).ids)
        n_answer = len(tok.encode(answer, add_special_tokens=False).ids)
        ids, labels, n = np.array(clean["input_ids"]), np.array(clean["labels"]), clean["length"]
        assert n == n_prompt + n_answer + 1 and clean["doc_offsets"] == [0]
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        assert (labels[n_prompt:n] == ids[n_prompt:n]).all() and mask_id not in ids[:n]
        assert (labels[n:] == IGNORE_INDEX).all()
        has_masked = i + 1 < len(samples) and samples[i + 1]["doc_keys"] == clean["doc_keys"]
        assert has_masked == (n_answer > SFT_MIN_ANSWER_TOKENS)
        assert clean["mask_span"] == []
        if has_masked:
            masked = samples[i + 1]
            m_ids, m_labels = np.array(masked["input_ids"]), np.array(masked["labels"])
            assert masked["mask_span"] == [n_prompt, n_prompt + n_answer]
            at = m_ids == mask_id
            assert at.sum() == max(1, int(n_answer * 0.1))
            assert (np.flatnonzero(at) >= n_prompt).all()
            assert ((m_labels != IGNORE_INDEX) == at).all()
            assert (m_labels[at] == ids[at]).all()  # the clean tokens behind the masks
            assert (m_ids[~at] == ids[~at]).all()
            masked_copies += 1
        i += 2 if has_masked else 1
    assert masked_copies > 0


def _files(directory: str) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name != "run_info.json":
                path = os.path.join(root, name)
                out[os.path.relpath(path, directory)] = open(path, "rb").read()
    return out


def test_rerun_is_byte_identical(prepared, corpus, tmp_path):
    again = str(tmp_path / "again")
    run_prepare(_config(corpus[0], input_bytes_per_shard=40_000), again,
                beam_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"])
    first, second = _files(prepared), _files(again)
    assert sorted(first) == sorted(second)
    assert [p for p in first if first[p] != second[p]] == []


def test_cli_diagnose_concat_rejects_too_long(prepared, corpus, tmp_path, capsys):
    out = str(tmp_path / "cli")
    tokenizer = os.path.join(prepared, "train", "tokenizer.json")
    rc = main(["-q", "prepare", "--kind", "rust", "--input", corpus[0], "--output", out, "--task", "diagnose",
               "--sft-layout", "concat", "--eval-codes", f"{HELD_OUT},E0005", "--seq-len", "600",
               "--tokenizer", tokenizer])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "== train:" in printed and "== eval:" in printed and os.path.join(out, "eval") in printed
    manifest = read_manifest(os.path.join(out, "train"))
    assert manifest["config"]["eval_codes"] == ["E0004", "E0005"] and manifest["config"]["eval_fraction"] == 0.0
    assert set(read_manifest(os.path.join(out, "eval"))["codes"]) == {"E0004", "E0005"}
    assert manifest["counts"]["rejected_by_reason"].get("too_long", 0) > 0
    by_key = {r["key"]: r for r in corpus[1]}
    tok = _tokenizer(os.path.join(out, "train"))
    concatenated = 0
    for s in _samples(os.path.join(out, "train")):
        assert s["length"] <= 600
        prompt, _ = diagnose(by_key[s["doc_keys"][0]])
        n_prompt = len(tok.encode(prompt, add_special_tokens=False).ids)
        labels = np.array(s["labels"])
        assert (labels[:n_prompt] == IGNORE_INDEX).all()
        if len(s["doc_offsets"]) == 2:  # clean copy, then the masked copy in the same row
            concatenated += 1
            half = s["doc_offsets"][1]
            assert s["length"] == 2 * half and s["doc_keys"][0] == s["doc_keys"][1]
            assert (labels[half:half + n_prompt] == IGNORE_INDEX).all()
    assert concatenated > 0


def test_cli_rejects_rust_options_on_text(tmp_path, capsys, corpus):
    rc = main(["prepare", "--input", corpus[0], "--output", str(tmp_path / "x"), "--task", "diagnose"])
    assert rc == 2
    assert "--task apply to --kind rust only" in capsys.readouterr().err


def test_pipeline_script_transcript_task_packs_like_text(prepared, corpus, tmp_path):
    out = str(tmp_path / "pipe")
    tokenizer = os.path.join(prepared, "train", "tokenizer.json")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "rust_transcripts_to_shards.py"), "-q",
         "--input", corpus[0], "--output", out, "--task", "transcript", "--seq-len", "256",
         "--eval-fraction", "0", "--tokenizer", tokenizer],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = read_manifest(os.path.join(out, "train"))
    assert manifest["config"]["mask_ratio"] == 0.15 and manifest["config"]["task"] == "transcript"
    assert read_manifest(os.path.join(out, "eval"))["counts"]["samples"] == 0
    samples = _samples(os.path.join(out, "train"))
    assert len(samples) > len(corpus[1])  # packed into 256-token rows: long records span several
    packed = [s for s in samples if len(s["doc_keys"]) > 1]
    assert packed, "short transcripts share rows as packed text does"
    for s in samples:
        labels = np.array(s["labels"][: s["length"]])
        assert (labels != IGNORE_INDEX).all()  # pre-training: loss on every real position
    c = manifest["counts"]
    assert 0.14 < c["masked_tokens"] / c["tokens"] < 0.16


@pytest.mark.parametrize("fmt", ["arrow", "webdataset"])
def test_per_epoch_masks_follow_the_sft_rule(prepared, fmt):
    """Re-drawn masks of a repair dataset: epoch 0 is the baked dataset exactly; epoch 1
    moves masks only inside the answers of masked copies, with the same count."""
    from meap_data.loader import ShardLoader

    directory = os.path.join(prepared, "train")
    manifest = read_manifest(directory)
    assert manifest["mask_rule"] == {"name": "sft", "ratio": 0.1, "min_answer_tokens": 50, "layout": "rows"}
    mask_id = manifest["mask_token_id"]
    kw = dict(format=fmt, seed=3, fields=("input_ids", "labels", "in_mask_span", "keys"), remainder="wrap")
    static = list(ShardLoader(directory, 4, masks="static", **kw))
    remask = ShardLoader(directory, 4, masks="per_epoch", **kw)
    for a, b in zip(static, list(remask), strict=True):
        assert a["keys"] == b["keys"]
        for field in ("input_ids", "labels", "in_mask_span"):
            np.testing.assert_array_equal(a[field], b[field])
    base = {k: (s["input_ids"][i], s["labels"][i], s["in_mask_span"][i]) for s in static for i, k in enumerate(s["keys"])}
    moved = clean_rows = 0
    for batch in remask:  # epoch 1
        for i, key in enumerate(batch["keys"]):
            old_inputs, old_labels, in_span = base[key]
            inputs, labels = batch["input_ids"][i], batch["labels"][i]
            differ = (inputs != old_inputs) | (labels != old_labels)
            if not in_span.any():  # a clean copy: never touched
                assert not differ.any()
                clean_rows += 1
                continue
            assert not (differ & (in_span == 0)).any()  # only inside the answer span
            span_len = int(in_span.sum())
            assert (inputs == mask_id).sum() == (old_inputs == mask_id).sum() == max(1, int(span_len * 0.1))
            # the clean tokens behind the masks are the same ones
            np.testing.assert_array_equal(np.where(labels != IGNORE_INDEX, labels, inputs),
                                          np.where(old_labels != IGNORE_INDEX, old_labels, old_inputs))
            moved += differ.any()
    assert moved > 0 and clean_rows > 0


def test_sft_pack_fills_samples_with_whole_examples(prepared, corpus, tmp_path):
    """--sft-pack: several examples per sample, copies whole and end to end with their
    document boundaries, prompts unsupervised; padding falls where one example per
    sample leaves most of each sample padding (packed: under 15% on 40 records); per-epoch re-draws still exact at epoch 0."""
    from meap_data.loader import ShardLoader

    out = str(tmp_path / "packed")
    run_prepare(_config(corpus[0], options=RustOptions(eval_codes=(HELD_OUT,), eval_fraction=0.1, sft_pack=True)),
                out, tokenizer=os.path.join(prepared, "train", "tokenizer.json"))
    packed = read_manifest(os.path.join(out, "train"))
    plain = read_manifest(os.path.join(prepared, "train"))
    assert packed["config"]["sft_pack"] is True
    for m in (packed, plain):
        m["padding"] = m["counts"]["padding_tokens"] / (m["counts"]["samples"] * SEQ)
    print(f"padding: one example per sample {plain['padding']:.1%}, packed {packed['padding']:.1%}")
    # 40 records leave the last open samples part-filled; large corpora measure under 10% (README)
    assert plain["padding"] > 0.5 and packed["padding"] < 0.15
    assert packed["counts"]["documents_written"] == plain["counts"]["documents_written"]
    assert packed["counts"]["tokens"] == plain["counts"]["tokens"]  # the same copies, fewer samples
    assert packed["counts"]["masked_tokens"] == plain["counts"]["masked_tokens"]
    samples = _samples(os.path.join(out, "train"))
    mask_id = packed["mask_token_id"]
    several = 0
    for s in samples:
        labels, ids = np.array(s["labels"]), np.array(s["input_ids"])
        bounds = s["doc_offsets"] + [s["length"]]
        assert s["doc_offsets"][0] == 0 and len(set(s["doc_keys"])) >= 1
        spans = list(zip(s["mask_span"][::2], s["mask_span"][1::2]))
        several += len(s["doc_offsets"]) > 2
        for a, b in zip(bounds[:-1], bounds[1:]):  # every document starts with its unsupervised prompt
            assert labels[a] == IGNORE_INDEX and b > a
        for a, b in spans:  # masks only inside spans, each span inside one document
            assert any(x <= a and b <= y for x, y in zip(bounds[:-1], bounds[1:]))
        masked_at = np.flatnonzero(ids == mask_id)
        assert all(any(a <= p < b for a, b in spans) for p in masked_at)
    assert several > 0
    kw = dict(seed=1, fields=("input_ids", "labels", "keys"), remainder="wrap")
    directory = os.path.join(out, "train")
    for a, b in zip(ShardLoader(directory, 2, **kw), ShardLoader(directory, 2, masks="per_epoch", **kw)):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["labels"], b["labels"])


def test_the_probe_reads_a_repair_datasets_clean_tokens(prepared, corpus):
    """``probe --haystack`` on a fine-tuning dataset: prompts (no labels) are read from the
    inputs outside masked spans, answers from the labels, masked copies are skipped, so
    the stream holds no mask token and reads as the records' text."""
    from meap_data.errors import MeapDataError
    from meap_data.probe.haystack import dataset_haystack

    train = os.path.join(prepared, "train")
    hay = dataset_haystack(train, min_tokens=1_000)
    stream = np.concatenate([hay.train, hay.held_out])
    assert hay.mask_id not in stream
    labelled = sum(int((np.asarray(s["labels"]) != IGNORE_INDEX).sum()) for s in _samples(train))
    assert len(stream) > 2 * labelled  # the prompts too, not only the answers
    text = hay.tokenizer.decode(stream[:4000].tolist())
    assert "error[E" in text and "fn " in text
    with pytest.raises(MeapDataError, match="clean tokens; the probe needs at least 100,000"):
        dataset_haystack(train)
