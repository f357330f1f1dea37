"""meap-train on fine-tuning data (a --kind rust repair dataset from the local toolchain's
error index): the objectives follow the dataset's sft rule. MEAP trains on clean and
masked copies; the NTP baseline on the clean copies only, with every prompt token as
input. The inputs each model received are recorded and checked against the shards."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from meap_data import train_shards
from meap_data.config import PrepareConfig
from meap_data.kinds.rust import RustOptions
from meap_data.manifest import read_manifest
from meap_data.model import GPT
from meap_data.prepare import run_prepare
from meap_data.rust import error_index as EI
from meap_data.rust.render import repair
from meap_data.sample_format import IGNORE_INDEX

SEQ = 768
STEPS = 6
BATCH = 4
FORWARD = GPT.forward  # the unwrapped method (each run wraps it anew)


@pytest.fixture(scope="module")
def records(tmp_path_factory, rust_docs_toolchain) -> tuple[str, dict]:
    root = tmp_path_factory.mktemp("sft-corpus")
    EI.build_corpus(root / "error-index.jsonl", limit=40, jobs=2, toolchain=rust_docs_toolchain)
    by_key = {}
    for line in (root / "error-index.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_key[record["key"]] = record
    return str(root / "error-index.jsonl"), by_key


def _prepare(records, tmp_path_factory, layout: str) -> str:
    out = str(tmp_path_factory.mktemp(f"sft-{layout}") / "out")
    config = PrepareConfig(inputs=(records[0],), kind="rust", seq_len=SEQ,
                           options=RustOptions(sft_layout=layout, eval_fraction=0.0))
    run_prepare(config, out)
    return os.path.join(out, "train")


def _train_recording(monkeypatch, dataset: str, out, objective: str) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]]]:
    """Train a tiny model; return the result and the (inputs, labels) of every training
    forward call (evaluation calls are not recorded)."""
    seen = []
    forward = FORWARD

    def recording(self, input_ids, labels=None, doc_ids=None, position_ids=None):
        if self.training:
            seen.append((input_ids.numpy().copy(), labels.numpy().copy()))
        return forward(self, input_ids, labels, doc_ids, position_ids)

    monkeypatch.setattr(GPT, "forward", recording)
    args = train_shards.build_parser().parse_args([
        "--data", dataset, "--out", str(out), "--objective", objective, "--layers", "1", "--width", "32",
        "--heads", "2", "--batch-size", str(BATCH), "--max-steps", str(STEPS), "--warmup-steps", "1",
        "--eval-samples", "0", "--seed", "5", "--quiet"])
    torch.set_num_threads(1)
    return train_shards.train(args), seen


@pytest.mark.parametrize("layout", ["rows", "concat"])
def test_ntp_on_sft_data_sees_clean_copies_with_every_prompt_token(records, tmp_path_factory, tmp_path,
                                                                   monkeypatch, layout):
    dataset = _prepare(records, tmp_path_factory, layout)
    manifest = read_manifest(dataset)
    assert manifest["mask_rule"]["name"] == "sft" and manifest["mask_rule"]["layout"] == layout
    mask_id, pad = manifest["mask_token_id"], manifest["tokenizer"]["pad_token_id"]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(dataset, "tokenizer.json"))

    meap, meap_rows = _train_recording(monkeypatch, dataset, tmp_path / "meap", "meap")
    ntp, ntp_rows = _train_recording(monkeypatch, dataset, tmp_path / "ntp", "ntp")
    assert len(meap_rows) == len(ntp_rows) == STEPS  # the same steps over the same batches

    prompts = {tuple(tok.encode(repair(r)[0], add_special_tokens=False).ids)
               for r in records[1].values() if r.get("fixed_source")}
    masked_rows = kept_rows = 0
    for (m_in, m_lab), (n_in, n_lab) in zip(meap_rows, ntp_rows):
        assert m_in.shape == (BATCH, SEQ)
        # NTP never sees a mask token, and it gets exactly MEAP's batch minus the masked copies
        assert not (n_in == mask_id).any()
        # a micro-batch that lost every row keeps one placeholder without targets
        placeholder = ~(n_lab != IGNORE_INDEX).any(axis=1)
        assert placeholder.sum() <= 1 and (n_in[placeholder] == pad).all()
        n_in, n_lab = n_in[~placeholder], n_lab[~placeholder]
        expected_in, expected_lab = [], []
        for row_in, row_lab in zip(m_in, m_lab):
            if not (row_in == mask_id).any():  # a clean copy: the same row for both objectives
                expected_in.append(row_in)
                expected_lab.append(row_lab)
                continue
            masked_rows += 1
            if layout == "concat":  # the clean half stays; the masked half becomes padding
                clean_len = _clean_half(row_lab)
                keep_in, keep_lab = row_in.copy(), row_lab.copy()
                keep_in[clean_len:], keep_lab[clean_len:] = pad, IGNORE_INDEX
                expected_in.append(keep_in)
                expected_lab.append(keep_lab)
        assert np.array_equal(n_in, np.array(expected_in).reshape(-1, SEQ))
        assert np.array_equal(n_lab, np.array(expected_lab).reshape(-1, SEQ))
        kept_rows += len(n_in)
        # Every prompt token is input: each row starts with a record's whole rendered prompt.
        for row_in, row_lab in zip(n_in, n_lab):
            n_prompt = int(np.flatnonzero(row_lab != IGNORE_INDEX)[0])
            assert tuple(row_in[:n_prompt].tolist()) in prompts
    assert masked_rows > 0
    assert meap["samples_seen"] == STEPS * BATCH
    assert ntp["samples_seen"] == kept_rows == STEPS * BATCH - (masked_rows if layout == "rows" else 0)
    assert ntp["targets_seen"] == sum(int((lab[:, 1:] != IGNORE_INDEX).sum()) for _, lab in ntp_rows)
    assert all(np.isfinite(ntp["losses"])) and all(np.isfinite(meap["losses"]))


def _clean_half(row_lab: np.ndarray) -> int:
    """Length of a concat row's clean copy: its supervised run (answer + eos) is
    contiguous; the masked copy's first supervised position comes after its prompt."""
    supervised = np.flatnonzero(row_lab != IGNORE_INDEX)
    gaps = np.flatnonzero(np.diff(supervised) > 1)
    return int(supervised[gaps[0]] + 1)
