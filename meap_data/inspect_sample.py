"""``meap-data inspect``: one sample decoded back to text, masked positions marked."""

from __future__ import annotations

import numpy as np

from . import storage
from .errors import MeapDataError
from .manifest import DatasetManifest
from .sample_format import IGNORE_INDEX, INPUT_IDS_MEMBER, LABELS_MEMBER, META_FIELDS, META_MEMBER

MASK_OPEN, MASK_CLOSE = "[[", "]]"
DOC_BREAK = "\n----- document boundary -----\n"


def read_sample(directory: str, index: int) -> dict:
    """Sample ``index`` (0-based, global order): ``input_ids`` and ``labels`` as numpy
    arrays, and the other fields of :mod:`meap_data.sample_format`."""
    import pyarrow as pa

    manifest = DatasetManifest.read(directory)
    if not 0 <= index < manifest.samples:
        raise MeapDataError(f"--index {index} is out of range: the dataset has {manifest.samples} samples")
    fmt = "arrow" if "arrow" in manifest.formats else "webdataset"
    entry = next(e for e in manifest.shards(fmt) if e["first_sample"] <= index < e["first_sample"] + e["samples"])
    local = index - entry["first_sample"]
    with storage.open_read(storage.join(directory, entry["path"])) as f:
        if fmt == "arrow":
            row = pa.ipc.open_stream(f).read_all().slice(local, 1).to_pylist()[0]
            meta = {name: row[name] for name in META_FIELDS}
            ids, labels = row["input_ids"], row["labels"]
        else:
            meta, ids, labels = _read_tar_sample(f, local)
    return {**meta, "input_ids": np.asarray(ids, dtype=np.int32), "labels": np.asarray(labels, dtype=np.int32)}


def _read_tar_sample(f, local: int) -> tuple[dict, np.ndarray, np.ndarray]:
    import io
    import json
    import tarfile

    members: dict[str, bytes] = {}
    group, current = -1, None
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            key, _, suffix = member.name.partition(".")
            if key != current:
                current, group = key, group + 1
            if group > local:
                break
            if group == local:
                members[suffix] = tar.extractfile(member).read()
    meta = json.loads(members[META_MEMBER])
    return (meta, np.load(io.BytesIO(members[INPUT_IDS_MEMBER]), allow_pickle=False),
            np.load(io.BytesIO(members[LABELS_MEMBER]), allow_pickle=False))


def masked_positions(sample: dict, mask_id: int) -> np.ndarray:
    """Bool over the sample's real tokens: the input is the mask id and the label holds
    another (clean) token there."""
    n = int(sample["length"])
    ids, labels = sample["input_ids"][:n], sample["labels"][:n]
    return (ids == mask_id) & (labels != mask_id) & (labels != IGNORE_INDEX)


def render_sample(sample: dict, tokenizer, mask_id: int) -> str:
    """Text of the sample; masked tokens shown as ``[[clean text]]``, documents separated."""
    ids, labels = sample["input_ids"], sample["labels"]
    n = int(sample["length"])
    masked = masked_positions(sample, mask_id)
    starts = set(sample["doc_offsets"][1:])
    pieces: list[str] = []
    run: list[int] = []

    def flush() -> None:
        if run:
            pieces.append(tokenizer.decode(run, skip_special_tokens=False))
            run.clear()

    for pos in range(n):
        if pos in starts:
            flush()
            pieces.append(DOC_BREAK)
        if masked[pos]:
            flush()
            pieces.append(MASK_OPEN + tokenizer.decode([int(labels[pos])], skip_special_tokens=False) + MASK_CLOSE)
        else:
            # Fine-tuning samples (--kind rust) take no loss on prompts: labels are -100
            # there, and the input holds the text.
            run.append(int(labels[pos]) if labels[pos] != IGNORE_INDEX else int(ids[pos]))
    flush()
    return "".join(pieces)


def inspect_dataset(directory: str, index: int = 0) -> str:
    """A printable report of sample ``index``."""
    from tokenizers import Tokenizer

    manifest = DatasetManifest.read(directory)
    sample = read_sample(directory, index)
    tok = Tokenizer.from_str(storage.read_bytes(storage.join(directory, "tokenizer.json")).decode("utf-8"))
    mask_id = manifest.mask_token_id
    n = int(sample["length"])
    n_masked = int(masked_positions(sample, mask_id).sum())
    header = [
        f"sample {index} key={sample['key']} tokens={n}/{len(sample['labels'])} masked={n_masked} "
        f"(shown as {MASK_OPEN}text{MASK_CLOSE})",
        "documents: " + ", ".join(f"{k}@{o}" for k, o in zip(sample["doc_keys"], sample["doc_offsets"])),
        "",
    ]
    return "\n".join(header) + render_sample(sample, tok, mask_id)
