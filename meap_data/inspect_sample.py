"""``meap-data inspect``: one sample decoded back to text, masked positions marked."""

from __future__ import annotations

import numpy as np

from . import storage
from .errors import MeapDataError
from .manifest import read_manifest
from .masking import IGNORE_INDEX

MASK_OPEN, MASK_CLOSE = "[[", "]]"
DOC_BREAK = "\n----- document boundary -----\n"


def read_sample(directory: str, index: int) -> dict:
    """Sample ``index`` (0-based, global order) as a dict of numpy arrays and metadata."""
    import pyarrow as pa

    manifest = read_manifest(directory)
    total = manifest["counts"]["samples"]
    if not 0 <= index < total:
        raise MeapDataError(f"--index {index} is out of range: the dataset has {total} samples")
    if "arrow" in manifest["shards"]:
        for entry in manifest["shards"]["arrow"]:
            if entry["first_sample"] <= index < entry["first_sample"] + entry["samples"]:
                with storage.open_read(storage.join(directory, entry["path"])) as f:
                    table = pa.ipc.open_stream(f).read_all()
                row = table.slice(index - entry["first_sample"], 1).to_pylist()[0]
                return {
                    "key": row["key"],
                    "input_ids": np.asarray(row["input_ids"], dtype=np.int32),
                    "labels": np.asarray(row["labels"], dtype=np.int32),
                    "doc_offsets": row["doc_offsets"],
                    "doc_keys": row["doc_keys"],
                    "length": row["length"],
                }
    return _read_webdataset_sample(directory, manifest, index)


def _read_webdataset_sample(directory: str, manifest: dict, index: int) -> dict:
    import io
    import json
    import tarfile

    for entry in manifest["shards"]["webdataset"]:
        if entry["first_sample"] <= index < entry["first_sample"] + entry["samples"]:
            want = index - entry["first_sample"]
            members: dict[str, bytes] = {}
            group, current = -1, None
            with storage.open_read(storage.join(directory, entry["path"])) as f, tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    key, _, ext = member.name.partition(".")
                    if key != current:
                        current, group = key, group + 1
                    if group > want:
                        break
                    if group == want:
                        members[ext] = tar.extractfile(member).read()
            meta = json.loads(members["json"])
            return {
                "key": meta["key"],
                "input_ids": np.load(io.BytesIO(members["input_ids.npy"]), allow_pickle=False),
                "labels": np.load(io.BytesIO(members["labels.npy"]), allow_pickle=False),
                "doc_offsets": meta["doc_offsets"],
                "doc_keys": meta["doc_keys"],
                "length": meta["length"],
            }
    raise MeapDataError(f"sample {index} not found in {directory!r}")


def render_sample(sample: dict, tokenizer, mask_id: int) -> str:
    """Text of the sample; masked tokens shown as ``[[clean text]]``, documents separated."""
    ids, labels = sample["input_ids"], sample["labels"]
    n = int(sample["length"])
    masked = (ids[:n] == mask_id) & (labels[:n] != mask_id) & (labels[:n] != IGNORE_INDEX)
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

    manifest = read_manifest(directory)
    sample = read_sample(directory, index)
    tok = Tokenizer.from_str(storage.read_bytes(storage.join(directory, "tokenizer.json")).decode("utf-8"))
    mask_id = manifest["mask_token_id"]
    n = int(sample["length"])
    n_masked = int(((sample["input_ids"][:n] == mask_id) & (sample["labels"][:n] != mask_id)).sum())
    header = [
        f"sample {index} key={sample['key']} tokens={n}/{len(sample['labels'])} masked={n_masked} "
        f"(shown as {MASK_OPEN}text{MASK_CLOSE})",
        "documents: " + ", ".join(f"{k}@{o}" for k, o in zip(sample["doc_keys"], sample["doc_offsets"])),
        "",
    ]
    return "\n".join(header) + render_sample(sample, tok, mask_id)
