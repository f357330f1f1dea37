"""Hugging Face conventions for a prepared dataset directory, written by hand (no
transformers import in the pipeline):

- ``tokenizer_config.json`` and ``special_tokens_map.json`` beside ``tokenizer.json``, so
  ``AutoTokenizer.from_pretrained(DIR)`` knows the eos, pad, mask (and bos) tokens;
- a dataset card ``README.md`` whose YAML ``configs`` point at the Arrow shards, so
  ``datasets.load_dataset(DIR)`` works and the directory uploads to the Hub as is. For
  ``--kind rust`` the parent directory gets a card too, with one split per dataset.
"""

from __future__ import annotations

import json

import yaml

from .manifest import content_fingerprint
from .sample_format import ARROW_DIR, INPUT_IDS_MEMBER, LABELS_MEMBER, META_MEMBER, WEBDATASET_DIR
from .tokenizer import TokenizerInfo

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CARD = "README.md"


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def tokenizer_files(info: TokenizerInfo, seq_len: int) -> dict[str, bytes]:
    """The two files ``AutoTokenizer`` reads next to ``tokenizer.json``."""
    special = {"eos_token": info.eos_token, "pad_token": info.pad_token, "mask_token": info.mask_token}
    if info.bos_token:
        special["bos_token"] = info.bos_token
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": seq_len,
              "clean_up_tokenization_spaces": False, **special}
    return {TOKENIZER_CONFIG: _json(config), SPECIAL_TOKENS_MAP: _json(special)}


#: The columns ``load_dataset(DIR)`` gives from the tars of a ``--format webdataset``
#: dataset, written out so ``datasets`` does not guess them from the first samples (an
#: empty ``mask_span`` there reads as a list of nulls and fails on the next sample).
#: ``sequence`` is read by every release.
WEBDATASET_FEATURES = [
    {"name": INPUT_IDS_MEMBER, "sequence": "int32"},
    {"name": LABELS_MEMBER, "sequence": "int32"},
    {"name": META_MEMBER, "struct": [
        {"name": "doc_keys", "sequence": "string"},
        {"name": "doc_offsets", "sequence": "int64"},
        {"name": "key", "dtype": "string"},
        {"name": "length", "dtype": "int64"},
        {"name": "mask_span", "sequence": "int64"},
    ]},
    {"name": "__key__", "dtype": "string"},
    {"name": "__url__", "dtype": "string"},
]
_PATTERNS = {"arrow": f"{ARROW_DIR}/data-*.arrow", "webdataset": f"{WEBDATASET_DIR}/shard-*.tar"}


def card_format(manifests: list[dict]) -> str:
    """The format ``load_dataset(DIR)`` reads: Arrow when written, else the tars (one
    card has one builder for all its configs, so it cannot offer both)."""
    return "arrow" if all("arrow" in m["shards"] for m in manifests) else "webdataset"


def _front_matter(splits: dict[str, tuple[str, dict]]) -> str:
    """The YAML block ``datasets.load_dataset(DIR)`` reads. ``splits``: split name ->
    (folder prefix inside DIR, that dataset's manifest).

    Two things keep ``load_dataset`` honest. ``datasets`` (5.x) keys its cache by the
    directory's name and this YAML, not by the data files, so a dataset rewritten at the
    same path, or another one under a folder of the same name, would be served from the
    old cache: the config's ``description`` carries :func:`content_fingerprint`. And
    ``dataset_info`` records every split's sample count, which ``datasets`` checks after
    building (``NonMatchingSplitsSizesError`` rather than silently fewer rows).
    """
    manifests = [m for _, m in splits.values()]
    fmt = card_format(manifests)
    config = {"config_name": "default",
              "data_files": [{"split": s, "path": prefix + _PATTERNS[fmt]} for s, (prefix, _) in splits.items()],
              "description": f"meap-data {fmt} shards, content {content_fingerprint(manifests)}"}
    sizes = {s: sum(e["bytes"] for e in m["shards"][fmt]) for s, (_, m) in splits.items()}
    info = {"config_name": "default", **({"features": WEBDATASET_FEATURES} if fmt == "webdataset" else {}),
            "splits": [{"name": s, "num_bytes": sizes[s], "num_examples": m["counts"]["samples"]}
                       for s, (_, m) in splits.items()],
            "download_size": sum(sizes.values()), "dataset_size": sum(sizes.values())}
    block = yaml.safe_dump({"configs": [config], "dataset_info": info}, sort_keys=False, allow_unicode=True)
    return f"---\n{block}---\n"


def _usage_arrow(split: str) -> list[str]:
    return ["The same samples, in the same order, are in `webdataset/` when written.", "", "```python",
            "import datasets",
            f'ds = datasets.load_dataset("DIR")["{split}"]   # or datasets.load_from_disk("DIR/arrow")', "```"]


def _usage_webdataset(split: str) -> list[str]:
    return ["Only WebDataset tars were written: `load_dataset` reads them, with the columns "
            "`input_ids.npy`, `labels.npy` and `json` (the other fields).", "", "```python", "import datasets",
            f'ds = datasets.load_dataset("DIR")["{split}"]   # or webdataset.WebDataset(...), meap_data.ShardLoader',
            "```"]


def dataset_card(manifest: dict, split: str = "train") -> bytes:
    """``README.md`` of one dataset directory: the configs block, then what it holds."""
    c, rule = manifest["counts"], manifest["mask_rule"]
    body = [
        _front_matter({split: ("", manifest)}),
        "# MEAP-masked training samples (meap-data)",
        "",
        f"{c['samples']} samples of {manifest['seq_len']} tokens ({c['tokens']} real tokens, "
        f"{c['masked_tokens']} masked) from {c['documents_written']} documents; mask rule `{rule['name']}` "
        f"({', '.join(f'{k}={v}' for k, v in rule.items() if k != 'name')}).",
        "",
        "Fields: `input_ids` (model input, masked positions hold `[MASK]`), `labels` (clean targets "
        "aligned with the inputs, -100 where no loss is taken), `doc_offsets`/`doc_keys` (packed documents), "
        "`length`, `mask_span`, `key`.",
        "",
        *(_usage_arrow(split) if card_format([manifest]) == "arrow" else _usage_webdataset(split)),
        "",
        f"Configuration hash `{manifest['config_hash']}`; see `manifest.json` for the full configuration, "
        "counts and shard checksums.",
        "",
    ]
    return "\n".join(body).encode("utf-8")


def parent_card(splits: dict[str, dict]) -> bytes:
    """``README.md`` of a directory holding several datasets (``--kind rust``: train, eval)."""
    # datasets cannot build a split of no rows ("corresponds to no data"): list only the
    # splits that have samples, unless none has.
    listed = {name: m for name, m in splits.items() if m["counts"]["samples"]} or splits
    body = [
        _front_matter({name: (f"{name}/", m) for name, m in listed.items()}),
        "# MEAP fine-tuning samples from Rust compiler transcripts (meap-data)",
        "",
        *(f"- `{name}/`: {m['counts']['samples']} samples of {m['seq_len']} tokens, "
          f"{len(m.get('codes', {}))} primary error codes"
          f"{'' if name in listed else ' (no samples: not a split of load_dataset(DIR))'}"
          for name, m in splits.items()),
        "",
        "Each split is a complete dataset with its own `manifest.json`; no error code is in two splits.",
        "",
    ]
    return "\n".join(body).encode("utf-8")
