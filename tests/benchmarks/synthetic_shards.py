"""Synthetic datasets in the exact on-disk format, for loader benchmarks.

Random token documents go through the pipeline's own packer, masking function, shard
writer and manifest builder, so the files are what ``meap-data prepare`` writes; only
the tokenizer is a stand-in (no text is tokenized). Much faster than preparing a real
corpus of the same size, which matters for the 2048-token and million-sample cases.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from meap_data.config import PrepareConfig
from meap_data.keys import sample_key
from meap_data.kinds import resolve_config
from meap_data.manifest import build_manifest, write_manifest
from meap_data.masking import PretrainRule
from meap_data.packing import Packer
from meap_data.sample_format import SampleRows
from meap_data.shards import ShardWriter
from meap_data.storage import write_bytes_atomic
from meap_data.tokenizer import TokenizerInfo

VOCAB = 32000
PAD, EOS, MASK = 0, 2, 1


def _tokenizer() -> TokenizerInfo:
    body = '{"synthetic": "stand-in tokenizer for loader benchmarks"}'
    return TokenizerInfo(json=body, sha256=hashlib.sha256(body.encode()).hexdigest(), vocab_size=VOCAB,
                         mask_token="[MASK]", mask_token_id=MASK, eos_token="</s>", eos_token_id=EOS,
                         pad_token_id=PAD)


def build_synthetic(out_dir: str, samples: int, seq_len: int, shards: int, formats=("arrow", "webdataset"),
                    mean_doc_tokens: int = 700, seed: int = 0, fast: bool = False) -> dict:
    """Write a dataset of ``samples`` samples of ``seq_len`` tokens in ``shards`` shards.

    ``fast``: skip the packer (each sample one document piece, or two) so a million
    short samples take seconds; the files have the same format either way.
    """
    os.makedirs(out_dir, exist_ok=True)
    info = _tokenizer()
    config = resolve_config(PrepareConfig(inputs=("synthetic",), seq_len=seq_len, formats=tuple(formats), seed=seed))
    rule = PretrainRule(ratio=config.mask_ratio)
    write_bytes_atomic(os.path.join(out_dir, "tokenizer.json"), info.json.encode())
    rng = np.random.default_rng(seed)
    per_shard = [samples // shards + (1 if i < samples % shards else 0) for i in range(shards)]
    results = []
    doc_counter = 0
    for index, n in enumerate(per_shard):
        writer = ShardWriter(out_dir, index, shards, tuple(formats))
        if fast:
            labels = rng.integers(3, VOCAB, (n, seq_len), dtype=np.int32)
            split = rng.integers(1, seq_len, n)
            two = rng.random(n) < 0.3
            labels[two, split[two] - 1] = EOS
            keys = [sample_key(f"shard{index}", r) for r in range(n)]
            offsets = [[0, int(s)] if t else [0] for s, t in zip(split, two)]
            doc_keys = [[f"d{index}-{r}", f"d{index}-{r}b"] if t else [f"d{index}-{r}"] for r, t in enumerate(two)]
            lengths = np.full(n, seq_len, dtype=np.int32)
            batches = [(labels, lengths, keys, offsets, doc_keys)]
        else:
            packer = Packer(seq_len, EOS, PAD)
            batches = []
            made = 0
            while made < n:
                size = int(rng.geometric(1.0 / mean_doc_tokens))
                packer.add(f"doc{doc_counter}", rng.integers(3, VOCAB, size, dtype=np.int32))
                doc_counter += 1
                made = packer.pending_rows()
            packed = packer.drain()
            take = slice(0, n)  # the shard holds exactly n full samples
            batches = [(packed.labels[take], packed.lengths[take], packed.keys[take],
                        packed.doc_offsets[take], packed.doc_keys[take])]
        tokens = masked = 0
        for labels, lengths, keys, offsets, doc_keys in batches:
            spans = rule.spans(lengths)
            out = rule.apply(labels, lengths, spans, keys, mask_id=MASK, pad_id=PAD, seed=config.seed)
            writer.write(SampleRows(out.input_ids, labels, lengths, spans, keys, offsets, doc_keys))
            tokens += int(lengths.sum())
            masked += out.count
        files = writer.close()
        results.append({"index": index, "documents_read": 0, "documents_written": 0, "rejected": {},
                        "samples": n, "tokens": tokens, "padding_tokens": n * seq_len - tokens,
                        "masked_tokens": masked, "files": files})
    manifest = build_manifest(config, info, rule, results)
    write_manifest(out_dir, manifest)
    return manifest
