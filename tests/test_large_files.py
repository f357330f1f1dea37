"""One large JSON-lines file: cut by the planner into byte ranges at line starts (fixed by
configuration, never by the runner), processed in parallel, with output byte-identical
for any worker count; and the cutting itself on awkward files."""

from __future__ import annotations

import glob
import hashlib
import json
import os

import pytest

from meap_data.config import PrepareConfig
from meap_data.inputs import FileRange, expand_inputs, line_ranges, plan_units
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.readers import read_range
from meap_data.verify import verify_dataset


def _tree_digest(directory: str) -> dict:
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "**", "*"), recursive=True)):
        if os.path.isfile(path) and os.path.basename(path) != "run_info.json":
            out[os.path.relpath(path, directory)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


@pytest.mark.parametrize("unit", [1, 5, 64, 1000, 4096])
def test_cuts_fall_on_numbered_line_starts_with_long_lines_and_no_final_newline(tmp_path, unit):
    # Lines from 1 byte to 9 KB (longer than most ranges), a blank line, CRLF endings
    # (\r stays in the line: only \n ends a line) and no newline at the end.
    lines = [json.dumps({"text": "x" * (i * 997 % 9000 + 1)}) for i in range(40)]
    lines[7] = ""
    lines[9] = lines[9] + "\r"
    data = ("\n".join(lines)).encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(data)
    [f] = expand_inputs([str(path)])
    ranges = line_ranges(f, unit)
    line_starts = [0] + [i + 1 for i, b in enumerate(data) if b == 10 and i + 1 < len(data)]
    # Contiguous, covering the file, each starting at a line start with that line's number.
    assert ranges[0].start == 0 and ranges[-1].end == len(data)
    assert all(a.end == b.start for a, b in zip(ranges, ranges[1:]))
    for r in ranges:
        assert r.start in line_starts and r.first_line == line_starts.index(r.start) + 1
    # Cuts are nominal multiples of ``unit`` moved forward to the next line start.
    expected = sorted({next(s for s in line_starts + [len(data)] if s >= c)
                       for c in range(unit, len(data), unit)} - {len(data)})
    assert [r.start for r in ranges[1:]] == expected
    whole = list(read_range(FileRange(f)))
    assert [d for r in ranges for d in read_range(r)] == whole
    # The blank line 8 is layout, not a record; every other line is one document.
    assert [d.key for d in whole] == [f"big.jsonl:{n}" for n in range(1, 41) if n != 8]


def test_legacy_unnumbered_range_still_counts_its_lines(tmp_path):
    """A range built without ``first_line`` (an old plan) reads the same lines."""
    lines = [json.dumps({"text": f"line {i}"}) for i in range(50)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    [f] = expand_inputs([str(tmp_path / "a.jsonl")])
    numbered = line_ranges(f, 100)
    legacy = [FileRange(f, r.start + 3 if r.start else 0, r.end + 3 if r.end < f.size else r.end) for r in numbered]
    assert [d for r in legacy for d in read_range(r)] == [d for r in numbered for d in read_range(r)]


@pytest.fixture(scope="module")
def big_jsonl(tmp_path_factory, stdlib) -> str:
    """About 24 MB of JSON lines: every stdlib module of the top level, repeated with
    distinct ids so no two records are the same document."""
    names = sorted(n for n in os.listdir(stdlib) if n.endswith(".py"))
    texts = [open(os.path.join(stdlib, n), encoding="utf-8", errors="replace").read() for n in names]
    path = tmp_path_factory.mktemp("big") / "corpus.jsonl"
    size = 0
    with open(path, "w", encoding="utf-8") as out:
        for copy in range(100):
            for name, text in zip(names, texts):
                line = json.dumps({"id": f"{copy}/{name}", "text": text}) + "\n"
                out.write(line)
                size += len(line)
            if size >= 24 << 20:
                break
    return str(path)


def test_large_file_same_bytes_with_one_and_two_worker_processes(tmp_path, big_jsonl, tokenizer_path):
    size = os.path.getsize(big_jsonl)
    assert size >= 20 << 20
    config = PrepareConfig(inputs=(big_jsonl,), seq_len=512, input_bytes_per_shard=4 << 20)
    units = plan_units(expand_inputs([big_jsonl]), config.input_bytes_per_shard)
    assert len(units) >= 5 and all(len(u.ranges) == 1 and u.ranges[0].first_line for u in units)
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_prepare(config, one, tokenizer=tokenizer_path,
                beam_args=["--direct_num_workers", "1", "--direct_running_mode", "multi_processing"])
    run_prepare(config, two, tokenizer=tokenizer_path,
                beam_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    digest = _tree_digest(one)
    assert len([p for p in digest if p.endswith(".arrow")]) == len(units)
    assert digest == _tree_digest(two)
    manifest = read_manifest(two)
    assert verify_dataset(two) == []
    lines = sum(1 for _ in open(big_jsonl, "rb"))
    assert manifest["counts"]["documents_read"] == lines
    assert manifest["counts"]["documents_written"] + manifest["counts"]["documents_rejected"] == lines
