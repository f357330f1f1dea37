"""The data contracts in schemas/ match what the code writes."""

from __future__ import annotations

import json
import os

import jsonschema
import pytest

from meap_data.config import PrepareConfig
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.sample_format import SAMPLE_SCHEMA

SCHEMAS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "meap_data", "schemas")


def test_manifest_validates_and_a_broken_one_does_not(tmp_path, json_pkg_glob, tokenizer_path):
    out = str(tmp_path / "ds")
    run_prepare(PrepareConfig(inputs=(json_pkg_glob,), seq_len=64), out, tokenizer=tokenizer_path)
    schema = json.load(open(os.path.join(SCHEMAS, "manifest.schema.json")))
    manifest = read_manifest(out)
    jsonschema.validate(manifest, schema)
    del manifest["counts"]["masked_tokens"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, schema)


def test_sample_schema_file_matches_the_writer():
    described = json.load(open(os.path.join(SCHEMAS, "sample.arrow.json")))["fields"]
    assert [f["name"] for f in described] == SAMPLE_SCHEMA.names
    assert [f["type"] for f in described] == [_short(t) for t in SAMPLE_SCHEMA.types]


def _short(t) -> str:
    import pyarrow as pa

    return f"list<{t.value_type}>" if pa.types.is_list(t) else str(t)
