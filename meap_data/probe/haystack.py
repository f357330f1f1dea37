"""The haystack: one long token stream the probe cuts its contexts from, with the
tokenizer that made it: the running Python's standard library source (present on every
machine), the classic passkey filler (a few sentences repeated, tokenized with the same
stdlib BPE), or the clean tokens of a prepared meap-data dataset."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

import numpy as np

from ..errors import MeapDataError

#: Share of the stream held out: evaluation contexts and held-out loss come from it only.
HELD_OUT_FRACTION = 0.1


@dataclass
class Haystack:
    """``train`` / ``held_out``: int32 token streams; ``tokenizer``: a ``tokenizers``
    Tokenizer; ``mask_id``/``eos_id``: its ``[MASK]`` and end-of-document ids;
    ``vocab_size``: ids in the vocabulary; ``source``: where the text came from."""

    train: np.ndarray
    held_out: np.ndarray
    tokenizer: object
    mask_id: int
    eos_id: int
    vocab_size: int
    source: str

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` alone (no special tokens), int32."""
        return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int32)


def _split(stream: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cut = int(len(stream) * (1 - HELD_OUT_FRACTION))
    return stream[:cut], stream[cut:]


#: The passkey-retrieval filler (Mohtashami and Jaggi, 2023): text a model predicts
#: almost perfectly after a few hundred steps, so its capacity goes to the needles.
FILLER = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
FILLER_REPEATS = 20_000
HAYSTACK_TEXTS = ("stdlib", "filler")


def stdlib_haystack(max_chars: int = 12_000_000, vocab_size: int = 4096, text: str = "stdlib") -> Haystack:
    """The standard library's top-level modules (sorted, up to ``max_chars`` characters),
    with a byte-level BPE of ``vocab_size`` tokens trained on them (about 10 s). ``text``
    "filler": the stream is :data:`FILLER` repeated instead (same tokenizer)."""
    from ..demo import stdlib_dir
    from ..tokenizer import prepare_tokenizer, train_bpe

    if text not in HAYSTACK_TEXTS:  # before the tokenizer's 10 s
        raise MeapDataError(f"--haystack-text must be one of {', '.join(HAYSTACK_TEXTS)}, got {text!r}")
    texts, total = [], 0
    for path in sorted(glob.glob(os.path.join(stdlib_dir(), "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
        total += len(texts[-1])
        if total >= max_chars:
            break
    info = prepare_tokenizer(train_bpe(texts, vocab_size))
    tok = info.build()
    if text == "filler":  # only the tokenizer comes from the stdlib: its text is not encoded
        ids = tok.encode(FILLER * FILLER_REPEATS, add_special_tokens=False).ids
        source = f"filler sentences x {FILLER_REPEATS:,} ({len(ids):,} tokens, the stdlib BPE of {vocab_size} tokens)"
    else:
        ids = []
        for enc in tok.encode_batch(texts, add_special_tokens=False):
            ids.extend(enc.ids)
            ids.append(info.eos_token_id)
        source = f"Python standard library ({len(texts)} modules, {total / 1e6:.1f} M characters)"
    train, held_out = _split(np.asarray(ids, dtype=np.int32))
    return Haystack(train, held_out, tok, info.mask_token_id, info.eos_token_id, info.vocab_size, source)


def _clean_tokens(table) -> np.ndarray:
    """The clean ids of a shard's samples, in order (see :func:`dataset_haystack`)."""
    from ..sample_format import IGNORE_INDEX

    rows = table.num_rows
    if rows == 0:  # an empty shard (a split no record went to)
        return np.zeros(0, dtype=np.int32)
    inputs = table.column("input_ids").combine_chunks().values.to_numpy().reshape(rows, -1)
    labels = table.column("labels").combine_chunks().values.to_numpy().reshape(rows, -1)
    real = np.arange(inputs.shape[1]) < table.column("length").to_numpy()[:, None]
    masked = np.zeros_like(real)
    for row, spans in enumerate(table.column("mask_span").to_pylist()):  # a few spans a row
        for start, end in zip(spans[0::2], spans[1::2]):
            masked[row, start:end] = True
    labelled = labels != IGNORE_INDEX
    keep = real & (labelled | ~masked)
    return np.where(labelled, labels, inputs)[keep].astype(np.int32)


def dataset_haystack(directory: str, max_tokens: int = 50_000_000, min_tokens: int = 100_000) -> Haystack:
    """The clean tokens of a prepared dataset's Arrow shards, in dataset order, up to
    ``max_tokens``; the dataset's own tokenizer. A position's clean id is its label where
    it has one, else its input id outside the masked spans (a fine-tuning prompt: no
    label, not masked); positions inside a masked span without a label (a masked copy of
    a prompt: the clean id is not stored, and the clean copy is kept) and padding are
    left out."""
    import pyarrow as pa
    from tokenizers import Tokenizer

    from .. import storage
    from ..manifest import DatasetManifest

    manifest = DatasetManifest.read(directory)
    if "arrow" not in manifest.formats:
        raise MeapDataError(f"--haystack {directory!r} has no Arrow shards; prepare it with --format arrow")
    parts, total = [], 0
    for entry in manifest.shards("arrow"):
        with storage.open_read(storage.join(directory, entry["path"])) as f:
            table = pa.ipc.open_stream(f).read_all()
        clean = _clean_tokens(table)
        parts.append(clean)
        total += len(clean)
        if total >= max_tokens:
            break
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
    if len(stream) < min_tokens:
        raise MeapDataError(f"--haystack {directory!r} holds {len(stream):,} clean tokens; the probe needs at least "
                            f"{min_tokens:,} to cut contexts from")
    train, held_out = _split(stream)
    return Haystack(train, held_out, Tokenizer.from_str(manifest.tokenizer_json), manifest.mask_token_id,
                    manifest.eos_token_id, manifest.vocab_size, f"dataset {directory} ({len(stream):,} tokens)")
