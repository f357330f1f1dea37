"""Readers: every input format, stable keys, byte ranges, and each kind of bad input
ending as a counted rejection with its reason."""

from __future__ import annotations

import gzip
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from meap_data.documents import Document, Rejected
from meap_data.errors import MeapDataError
from meap_data.inputs import FileRange, expand_inputs, plan_units
from meap_data.readers import read_range


def _read_all(pattern: str, text_field: str = "text"):
    return [item for f in expand_inputs([pattern]) for item in read_range(FileRange(f), text_field)]


def _stdlib_texts(stdlib, n=6):
    names = sorted(n for n in os.listdir(stdlib) if n.endswith(".py"))[:n]
    return [(name, open(os.path.join(stdlib, name), encoding="utf-8").read()) for name in names]


def test_jsonl_plain_gzip_zstd_give_the_same_documents(tmp_path, stdlib):
    texts = _stdlib_texts(stdlib)
    body = "".join(json.dumps({"text": t}) + "\n" for _, t in texts).encode()
    (tmp_path / "a.jsonl").write_bytes(body)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "c.json.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    for name in ("a.jsonl", "b.jsonl.gz", "c.json.zst"):
        docs = _read_all(str(tmp_path / name))
        assert [d.text for d in docs] == [t for _, t in texts]
        assert docs[0].key == f"{name}:1" and docs[-1].key == f"{name}:{len(texts)}"


def test_id_field_is_the_key_and_text_field_is_selectable(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"id": "alpha", "body": "one"}\n{"body": "two"}\n')
    docs = _read_all(str(tmp_path / "x.jsonl"), text_field="body")
    assert docs == [Document("alpha", "one", origin="x.jsonl:1"), Document("x.jsonl:2", "two", origin="x.jsonl:2")]


def test_parquet_and_text_files_and_hf_dataset(tmp_path, stdlib):
    import datasets

    texts = _stdlib_texts(stdlib, 4)
    pq.write_table(pa.table({"text": [t for _, t in texts], "id": ["p0", None, "p2", "p3"]}), tmp_path / "d.parquet")
    docs = _read_all(str(tmp_path / "d.parquet"))
    assert [d.key for d in docs] == ["p0", "d.parquet:1", "p2", "p3"]
    assert [d.text for d in docs] == [t for _, t in texts]

    docs = _read_all(os.path.join(stdlib, "json", "*.py"))
    assert [d.key for d in docs] == sorted(n for n in os.listdir(os.path.join(stdlib, "json")) if n.endswith(".py"))

    datasets.Dataset.from_dict({"text": [t for _, t in texts]}).save_to_disk(str(tmp_path / "hfds"))
    docs = _read_all(str(tmp_path / "hfds"))
    assert [d.text for d in docs] == [t for _, t in texts]
    assert docs[2].key == "hfds:2"


def test_json_bad_records_each_rejected_with_reason(tmp_path):
    lines = [
        b'{"text": "good"}',
        b"this is not json",
        b'{"other": "x"}',
        b'{"text": null}',
        b'{"text": 42}',
        b'{"text": "   "}',
        b'{"text": "caf\xe9"}',  # latin-1 byte: invalid UTF-8
        b"[1, 2]",
    ]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    items = _read_all(str(tmp_path / "bad.jsonl"))
    assert len(items) == len(lines)
    assert items[0] == Document("bad.jsonl:1", "good", origin="bad.jsonl:1")
    reasons = [i.reason for i in items[1:]]
    assert reasons == ["invalid_json", "missing_text_field", "null_text", "text_not_string",
                       "empty_text", "invalid_utf8", "not_an_object"]
    assert [i.key for i in items[1:]] == [f"bad.jsonl:{n}" for n in range(2, 9)]


def test_truncated_gzip_keeps_what_was_read_and_rejects_the_rest(tmp_path):
    body = "".join(json.dumps({"text": f"document number {i} " * 20}) + "\n" for i in range(2000)).encode()
    data = gzip.compress(body)
    (tmp_path / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    items = _read_all(str(tmp_path / "cut.jsonl.gz"))
    docs = [i for i in items if isinstance(i, Document)]
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert 0 < len(docs) < 2000
    assert len(rejected) == 1 and rejected[0].reason == "truncated_or_corrupt_file"
    assert rejected[0].key == f"cut.jsonl.gz:{len(docs) + 1}"


def test_truncated_zstd_and_rust_transcripts_are_rejected_not_crashed(tmp_path):
    from meap_data.kinds.rust import iter_records

    body = "".join(json.dumps({"text": f"line {i} " * 30}) + "\n" for i in range(3000)).encode()
    data = zstandard.ZstdCompressor().compress(body)
    (tmp_path / "cut.jsonl.zst").write_bytes(data[: len(data) // 2])
    items = _read_all(str(tmp_path / "cut.jsonl.zst"))
    assert isinstance(items[-1], Rejected) and items[-1].reason == "truncated_or_corrupt_file"
    assert all(isinstance(i, Document) for i in items[:-1]) and 0 < len(items) - 1 < 3000

    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(body)[:5000])
    f = expand_inputs([str(tmp_path / "cut.jsonl.gz")])[0]
    rejected = [r for _, r in iter_records(FileRange(f)) if r is not None]
    # Lines before the damage are not transcript records (schema), the tail is lost: both named.
    assert rejected[-1].reason == "truncated_or_corrupt_file"
    assert {r.reason for r in rejected[:-1]} == {"invalid_record"}


def test_invalid_utf8_text_file_and_unreadable_file(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage\x80")
    os.symlink(tmp_path / "does-not-exist", tmp_path / "dangling.txt")
    items = {i.key: i for i in _read_all(str(tmp_path / "*.txt"))}
    assert items["bin.txt"].reason == "invalid_utf8"
    assert items["dangling.txt"].reason == "unreadable_file"
    assert "No such file" in items["dangling.txt"].detail


def test_glob_matching_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(MeapDataError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing-*.jsonl")])


def test_keys_relative_to_common_root_of_several_globs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("one")
    (tmp_path / "b" / "x.txt").write_text("two")
    files = expand_inputs([str(tmp_path / "a" / "*.txt"), str(tmp_path / "b" / "*.txt")])
    assert [f.relpath for f in files] == ["a/x.txt", "b/x.txt"]


@pytest.mark.parametrize("range_bytes", [1, 7, 100, 1000, 10**6])
def test_byte_ranges_cover_every_line_exactly_once(tmp_path, range_bytes):
    lines = [json.dumps({"text": "w" * (i % 37 + 1)}) for i in range(300)]
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    whole = _read_all(str(tmp_path / "big.jsonl"))
    units = plan_units(expand_inputs([str(tmp_path / "big.jsonl")]), range_bytes)
    split = [item for u in units for r in u.ranges for item in read_range(r)]
    assert split == whole
    assert [d.key for d in whole] == [f"big.jsonl:{n}" for n in range(1, 301)]
