"""The transcript record format: schema validation, keys, canonical JSON lines."""

from __future__ import annotations

import json
import os
import stat

import jsonschema
import pytest

from meap_data.rust import records as REC
from test_rust_render import fixture_record


def test_schema_is_draft_2020_12_and_loaded_through_the_package():
    schema = REC.load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert REC.SCHEMA_PATH.parts[-3:] == ("meap_data", "schemas", "rust_transcript.schema.json")
    # every top-level field is documented
    assert all("description" in v for v in schema["properties"].values())


def test_valid_record_passes():
    assert REC.validate_record(fixture_record()) is None


@pytest.mark.parametrize(
    "change, where",
    [
        ({"key": "a.b"}, "key"),
        ({"duration_ms": 12}, "(top level)"),
        ({"edition": "2020"}, "edition"),
        ({"exit_code": "1"}, "exit_code"),
        ({"diagnostics": [{"level": "error", "code": None, "message": "x", "primary": {"file": "a.rs", "line": "2", "column": 1}}]},
         "diagnostics/0/primary"),
        ({"expected_code": "E308"}, "expected_code"),
    ],
)
def test_invalid_records_give_a_reason_naming_the_place(change, where):
    record = fixture_record() | change
    reason = REC.validate_record(record)
    assert reason is not None and reason.startswith(f"record {record['key']!r}: {where}")


def test_missing_field_and_non_objects_are_reasons_not_crashes():
    record = fixture_record()
    del record["rendered"]
    assert "'rendered' is a required property" in REC.validate_record(record)
    assert REC.validate_record([1, 2]) == "record is a JSON list, not an object"
    assert REC.validate_record(None) == "record is a JSON NoneType, not an object"


def test_read_records_yields_reasons_for_bad_lines(tmp_path):
    good = REC.dumps_record(fixture_record())
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(
        good.encode() + b"\n" + b'{"key": "x"\n' + b"\xff\xfe\n" + json.dumps({"key": "k"}).encode() + b"\n" + good.encode()
    )
    results = list(REC.read_records(path))
    assert [n for n, _, _ in results] == [1, 3, 4, 5, 6]
    assert results[0][1] == fixture_record() and results[-1][2] is None
    assert "invalid JSON" in results[1][2] and f"{path}:3:" in results[1][2]
    assert "invalid UTF-8" in results[2][2]
    assert "required property" in results[3][2]


def test_write_records_is_canonical_atomic_and_not_private(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    assert REC.write_records(path, [fixture_record(), fixture_record()]) == 2
    first = path.read_bytes()
    REC.write_records(path, [dict(reversed(list(fixture_record().items())))] * 2)
    assert path.read_bytes() == first  # key order in the dict does not matter
    assert os.listdir(path.parent) == ["out.jsonl"]  # no temp file left
    assert stat.S_IMODE(path.stat().st_mode) & 0o044  # readable by others, as the umask allows

    def boom():
        yield fixture_record()
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        REC.write_records(path, boom())
    assert path.read_bytes() == first and os.listdir(path.parent) == ["out.jsonl"]


def test_keys_are_stable_and_safe():
    assert REC.make_key("progs/a.rs") == REC.make_key("progs/a.rs")
    assert REC.make_key("progs/a_b.rs") != REC.make_key("progs/a/b.rs")
    key_schema = REC.load_schema()["properties"]["key"]
    for path in ("progs/a.rs", "weird name/ü.rs", "../x", ""):
        key = REC.make_key(path)
        assert "." not in key and jsonschema.Draft202012Validator(key_schema).is_valid(key)
