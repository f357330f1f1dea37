"""Document-masked attention through flex attention (a block mask from the documents'
offsets) computes what running each document alone computes, and what the dense SDPA
mask computes, for packed samples of 1, several and many documents, on MEAP (masked)
and NTP (clean) inputs. CPU, float32: the three agree to 2e-5 in logits and 1e-5 in loss
(flex runs its unfused reference there; on CUDA, compiled, it is the fused kernel of the
same function). Flex attention has no backward on CPU, so gradients and training on flex
are checked where CUDA is present; on CPU the trainer falls back to the dense mask and
says so.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from meap_data import train_shards
from meap_data.model import GPT, ModelConfig, choose_doc_attention, flex_attention_problem, next_token_loss

pytestmark = pytest.mark.skipif(flex_attention_problem() is not None, reason=str(flex_attention_problem()))

VOCAB, SEQ, MASK_ID = 300, 256, 1
TOL = 2e-5


@pytest.fixture(autouse=True)
def _quiet_flex():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


def _packed(n_docs: int, seed: int, batch: int = 2):
    """(ids, doc_ids, position_ids, boundaries per row) of ``batch`` packed samples,
    each cut into ``n_docs`` documents of random lengths."""
    rng = np.random.default_rng(seed)
    ids = torch.as_tensor(rng.integers(2, VOCAB, (batch, SEQ)), dtype=torch.long)
    doc_ids = torch.zeros(batch, SEQ, dtype=torch.long)
    position_ids = torch.zeros(batch, SEQ, dtype=torch.long)
    bounds = []
    for r in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, SEQ), n_docs - 1, replace=False)) if n_docs > 1 else np.array([], int)
        edges = [0, *cuts.tolist(), SEQ]
        bounds.append(list(zip(edges[:-1], edges[1:])))
        for d, (a, b) in enumerate(bounds[-1]):
            doc_ids[r, a:b] = d
            position_ids[r, a:b] = torch.arange(b - a)
    return ids, doc_ids, position_ids, bounds


def _models(seed: int = 0):
    torch.manual_seed(seed)
    base = ModelConfig(vocab_size=VOCAB, seq_len=SEQ, n_layer=2, n_embd=64, n_head=4, tie_embeddings=False)
    dense = GPT(base).eval()
    flex = GPT(dataclasses.replace(base, doc_attention="flex")).eval()
    flex.load_state_dict(dense.state_dict())
    return dense, flex


@pytest.mark.parametrize("n_docs", [1, 5, 60])
@pytest.mark.parametrize("objective", ["meap", "ntp"])
def test_flex_document_mask_equals_each_document_alone_and_the_dense_mask(n_docs, objective):
    dense, flex = _models()
    labels, doc_ids, position_ids, bounds = _packed(n_docs, seed=n_docs)
    inputs = labels.clone()
    if objective == "meap":  # 15% of the inputs masked, targets clean
        masked = torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)) < 0.15
        inputs[masked] = MASK_ID
    with torch.no_grad():
        by_flex = flex(inputs, doc_ids=doc_ids, position_ids=position_ids)
        by_dense = dense(inputs, doc_ids=doc_ids, position_ids=position_ids)
        alone = torch.zeros_like(by_dense)
        for r, row in enumerate(bounds):
            for a, b in row:
                alone[r, a:b] = dense(inputs[r:r + 1, a:b])[0]
        loss_flex = flex(inputs, labels, doc_ids, position_ids)
        loss_dense = dense(inputs, labels, doc_ids, position_ids)
    assert torch.allclose(by_flex, alone, atol=TOL, rtol=0), (by_flex - alone).abs().max()
    assert torch.allclose(by_flex, by_dense, atol=TOL, rtol=0), (by_flex - by_dense).abs().max()
    assert abs(float(loss_flex) - float(next_token_loss(alone, labels))) < 1e-5
    assert abs(float(loss_flex) - float(loss_dense)) < 1e-5
    if n_docs > 1:  # without the mask the documents do see each other
        with torch.no_grad():
            causal = dense(inputs, position_ids=position_ids)
        assert not torch.allclose(causal, alone, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex attention has no backward on CPU; needs CUDA")
def test_gradients_agree_between_flex_and_dense():
    dense, flex = _models(seed=3)
    dense, flex = dense.cuda(), flex.cuda()
    labels, doc_ids, position_ids, _ = (t.cuda() if torch.is_tensor(t) else t for t in _packed(7, seed=7))
    for model in (dense, flex):
        model.train()
        model.zero_grad()
        model(labels, labels, doc_ids, position_ids).backward()
    for (name, a), (_, b) in zip(dense.named_parameters(), flex.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_the_backend_choice_and_its_reason():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_doc_attention("auto", cuda)[0] == "flex"
    backend, reason = choose_doc_attention("auto", cpu, training=False)
    assert backend == "dense" and "not fused" in reason
    backend, reason = choose_doc_attention("flex", cpu)
    assert backend == "dense" and "no backward on cpu" in reason
    assert choose_doc_attention("flex", cpu, training=False)[0] == "flex"
    backend, reason = choose_doc_attention("flex", cuda, dropout=0.1)
    assert backend == "dense" and "dropout" in reason
    assert choose_doc_attention("dense", cuda)[0] == "dense"
    with pytest.raises(ValueError, match="--doc-attention"):
        choose_doc_attention("sparse", cpu)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, email_glob, tokenizer_path):
    from meap_data.config import PrepareConfig
    from meap_data.prepare import run_prepare

    out = str(tmp_path_factory.mktemp("docattn") / "email")
    run_prepare(PrepareConfig(inputs=(email_glob,), seq_len=128, input_bytes_per_shard=200_000), out,
                tokenizer=tokenizer_path)
    return out


def test_training_logs_the_backend_and_falls_back_where_flex_cannot_train(dataset, tmp_path, capsys):
    """On CPU a flex request trains on the dense mask, saying why; on CUDA it trains on
    flex and its losses follow the dense run's."""
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    common = ["--data", dataset, "--doc-mask", "--max-steps", "4", "--warmup-steps", "1", "--layers", "2",
              "--width", "64", "--heads", "4", "--batch-size", "4", "--eval-samples", "0", "--log-interval", "1",
              "--untied", "--device", device]
    runs = {}
    for backend in ("flex", "dense"):
        runs[backend] = train_shards.train(train_shards.build_parser().parse_args(
            [*common, "--out", str(tmp_path / backend), "--doc-attention", backend]))
        out = capsys.readouterr().out
        if backend == "flex" and device == "cpu":
            assert "document mask: dense SDPA mask: flex attention has no backward on cpu" in out
        else:
            assert f"document mask: {'flex attention' if backend == 'flex' else 'dense SDPA mask'}" in out
    assert runs["flex"]["losses"] == pytest.approx(runs["dense"]["losses"], abs=1e-4)
