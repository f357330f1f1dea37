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


def _yaml_configs(splits: dict[str, str]) -> str:
    lines = ["---", "configs:", "- config_name: default", "  data_files:"]
    for split, pattern in splits.items():
        lines += [f"  - split: {split}", f"    path: {pattern}"]
    return "\n".join(lines + ["---", ""])


def dataset_card(manifest: dict, split: str = "train") -> bytes:
    """``README.md`` of one dataset directory: the configs block, then what it holds."""
    c, rule = manifest["counts"], manifest["mask_rule"]
    body = [
        _yaml_configs({split: "arrow/data-*.arrow"}),
        "# MEAP-masked training samples (meap-data)",
        "",
        f"{c['samples']} samples of {manifest['seq_len']} tokens ({c['tokens']} real tokens, "
        f"{c['masked_tokens']} masked) from {c['documents_written']} documents; mask rule `{rule['name']}` "
        f"({', '.join(f'{k}={v}' for k, v in rule.items() if k != 'name')}).",
        "",
        "Fields: `input_ids` (model input, masked positions hold `[MASK]`), `labels` (clean targets "
        "aligned with the inputs, -100 where no loss is taken), `doc_offsets`/`doc_keys` (packed documents), "
        "`length`, `mask_span`, `key`. The same samples are in `webdataset/` when written.",
        "",
        "```python",
        "import datasets",
        f'ds = datasets.load_dataset("DIR")["{split}"]   # or datasets.load_from_disk("DIR/arrow")',
        "```",
        "",
        f"Configuration hash `{manifest['config_hash']}`; see `manifest.json` for the full configuration, "
        "counts and shard checksums.",
        "",
    ]
    return "\n".join(body).encode("utf-8")


def parent_card(splits: dict[str, dict]) -> bytes:
    """``README.md`` of a directory holding several datasets (``--kind rust``: train, eval)."""
    body = [
        _yaml_configs({name: f"{name}/arrow/data-*.arrow" for name in splits}),
        "# MEAP fine-tuning samples from Rust compiler transcripts (meap-data)",
        "",
        *(f"- `{name}/`: {m['counts']['samples']} samples of {m['seq_len']} tokens, "
          f"{len(m.get('codes', {}))} primary error codes" for name, m in splits.items()),
        "",
        "Each split is a complete dataset with its own `manifest.json`; no error code is in two splits.",
        "",
    ]
    return "\n".join(body).encode("utf-8")
