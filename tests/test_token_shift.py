"""Token shift in the package's GPT: each position also sees the previous token's
embedding, never across a document boundary, and models without it are unchanged."""

from __future__ import annotations

import dataclasses

import torch

from meap_data.model import GPT, ModelConfig

BASE = ModelConfig(vocab_size=200, seq_len=64, n_layer=2, n_embd=32, n_head=4, tie_embeddings=False)


def test_off_by_default_and_the_parameters_are_unchanged():
    torch.manual_seed(0)
    plain = GPT(BASE)
    shifted = GPT(dataclasses.replace(BASE, token_shift=True))
    assert plain.shift is None and "shift" not in plain.state_dict()
    assert set(shifted.state_dict()) == set(plain.state_dict()) | {"shift"}
    assert torch.equal(shifted.shift, torch.full((32,), 0.5))


def test_the_previous_token_reaches_a_one_layer_model_and_stays_inside_its_document():
    torch.manual_seed(0)
    cfg = dataclasses.replace(BASE, n_layer=1, token_shift=True)
    model = GPT(cfg).eval()
    ids = torch.randint(2, 200, (1, 40))
    other = ids.clone()
    other[0, 19] = (ids[0, 19] + 1) % 198 + 2  # change token 19 only
    doc_ids = torch.zeros(1, 40, dtype=torch.long)
    doc_ids[0, 20:] = 1
    positions = torch.cat([torch.arange(20), torch.arange(20)])[None]
    with torch.no_grad():
        a, b = model(ids), model(other)
        # position 20 is the first of document 2: it must not see token 19
        packed_a = model(ids, doc_ids=doc_ids, position_ids=positions)
        packed_b = model(other, doc_ids=doc_ids, position_ids=positions)
        alone = model(ids[:, 20:])
    assert not torch.allclose(a[0, 20], b[0, 20])  # without documents it does see it
    with torch.no_grad():
        model.shift.zero_()
        unshifted = model(ids)
    assert not torch.allclose(unshifted, a, atol=1e-4)  # the shift is in the forward pass
    assert torch.allclose(packed_a[0, 20:], packed_b[0, 20:], atol=1e-6)
    assert torch.allclose(packed_a[0, 20:], alone[0], atol=1e-5)
    assert not torch.allclose(packed_a[0, 19], packed_b[0, 19])
