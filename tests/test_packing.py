"""Packing: nothing dropped, boundaries recorded, long documents split, unpacked padding."""

from __future__ import annotations

import numpy as np

from meap_data.sample_format import IGNORE_INDEX
from meap_data.packing import Packer

EOS, PAD = 1, 1


def _docs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(f"doc{i}", rng.integers(5, 100, rng.integers(1, 60), dtype=np.int32)) for i in range(n)]


def _stream(batch):
    return np.concatenate([row[: n] for row, n in zip(batch.labels, batch.lengths)])


def test_packed_keeps_every_token_in_order_with_boundaries():
    docs = _docs(40)
    packer = Packer(32, EOS, PAD)
    for key, ids in docs:
        packer.add(key, ids)
    packer.finish()
    batch = packer.drain()
    expected = np.concatenate([np.append(ids, EOS) for _, ids in docs])
    assert (_stream(batch) == expected).all()
    assert (batch.lengths[:-1] == 32).all()
    assert (batch.labels[-1, batch.lengths[-1]:] == IGNORE_INDEX).all()
    # Boundaries: each piece starts where the offsets say and belongs to the named doc.
    seen = []
    for r in range(len(batch)):
        offs = batch.doc_offsets[r] + [int(batch.lengths[r])]
        for j, key in enumerate(batch.doc_keys[r]):
            seen.append((key, batch.labels[r, offs[j]:offs[j + 1]]))
    rebuilt = {}
    for key, piece in seen:
        rebuilt.setdefault(key, []).append(piece)
    for key, ids in docs:
        assert (np.concatenate(rebuilt[key]) == np.append(ids, EOS)).all()
    assert len(set(batch.keys)) == len(batch.keys)


def test_document_much_longer_than_seq_len_is_split_not_dropped():
    ids = np.arange(16 * 3000 + 5, dtype=np.int32) % 1000 + 2
    packer = Packer(16, EOS, PAD)
    packer.add("huge", ids)
    packer.finish()
    batch = packer.drain()
    assert len(batch) == 3001
    assert (_stream(batch) == np.append(ids, EOS)).all()


def test_unpacked_starts_each_document_in_a_new_padded_sample():
    docs = _docs(10, seed=2)
    packer = Packer(40, EOS, PAD, pack=False)
    for key, ids in docs:
        packer.add(key, ids)
    packer.finish()
    batch = packer.drain()
    for r in range(len(batch)):
        assert batch.doc_offsets[r] == [0] and len(batch.doc_keys[r]) == 1
    expected = np.concatenate([np.append(ids, EOS) for _, ids in docs])
    assert (_stream(batch) == expected).all()
    starts = [batch.doc_keys[r][0] for r in range(len(batch))]
    assert starts[0] == "doc0" and len(set(starts)) == 10
