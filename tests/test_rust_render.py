"""Training renderings of transcript records (no toolchain needed: recorded output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import diagnostics as D
from meap_data.rust import render as R
from meap_data.rust.records import validate_record

DATA = Path(__file__).parent / "data" / "rust"


def fixture_record() -> dict:
    """A transcript record built from the recorded compile of borrow.rs."""
    source = (DATA / "borrow.rs").read_text(encoding="utf-8")
    parsed = D.parse((DATA / "borrow.rustc.jsonl").read_bytes())
    return {
        "schema_version": 1,
        "key": "borrow_rs-0a1b2c3d",
        "origin": "external",
        "tool": "rustc",
        "source": source,
        "source_path": "$SRC/borrow.rs",
        "edition": "2021",
        "toolchain": "rustc 1.95.0 (59807616e 2026-04-14)",
        "argv": ["rustc", "--edition", "2021", "--emit=metadata", "borrow.rs"],
        "exit_code": 1,
        "timed_out": False,
        "diagnostics": [d.to_dict() for d in parsed.diagnostics],
        "rendered": (DATA / "borrow.rustc.txt").read_text(encoding="utf-8"),
        "produced_codes": parsed.codes(),
        "fixed_source": source.replace("consume(v)", "consume(v.clone())"),
        "fix_compiles": True,
    }


def test_fixture_record_is_valid():
    assert validate_record(fixture_record()) is None


def test_diagnose_prompt_holds_the_source_and_response_the_output():
    record = fixture_record()
    prompt, response = R.diagnose(record)
    assert record["source"] in prompt and record["rendered"] not in prompt
    assert response == record["rendered"]
    assert prompt.startswith("### Rust source: borrow.rs (edition 2021)\n```rust\n")
    assert prompt.endswith("### Compiler output: rustc --edition 2021 --emit=metadata borrow.rs\n")


def test_repair_prompt_holds_source_and_output_and_response_the_fix():
    record = fixture_record()
    prompt, response = R.repair(record)
    assert record["source"] in prompt and record["rendered"] in prompt
    assert response == record["fixed_source"] + "```\n"
    assert prompt.endswith("### Fixed source\n```rust\n")


def test_transcript_text_is_a_shell_session():
    text = R.transcript_text(fixture_record())
    assert text.startswith("$ cat borrow.rs\nfn consume")
    assert "$ rustc --edition 2021 --emit=metadata borrow.rs\nwarning: variable does not need to be mutable" in text
    assert "$ cat borrow.rs  # fixed\n" in text and text.endswith("$ rustc --edition 2021 --emit=metadata borrow.rs\n")


def test_crate_transcript_shows_every_file():
    record = fixture_record()
    record.update(tool="cargo", source_path="$SRC/demo", argv=["cargo", "check"],
                  files={"Cargo.toml": '[package]\nname = "demo"\n', "src/main.rs": record["source"]})
    text = R.transcript_text(record)
    assert text.startswith('$ cd demo\n$ cat Cargo.toml\n[package]\nname = "demo"\n$ cat src/main.rs\nfn consume')


def test_unusable_records_are_refused_with_a_reason():
    record = fixture_record()
    record["fixed_source"] = None
    with pytest.raises(MeapDataError, match="no fixed_source"):
        R.repair(record)
    record.update(timed_out=True, rendered="", diagnostics=[], exit_code=None)
    with pytest.raises(MeapDataError, match="timed out"):
        R.diagnose(record)
    assert "^C  (still compiling" in R.transcript_text(record)


def test_renderings_are_pure_functions():
    record = fixture_record()
    before = repr(record)
    assert R.diagnose(record) == R.diagnose(record) and R.repair(record) == R.repair(record)
    assert R.transcript_text(record) == R.transcript_text(record)
    assert repr(record) == before
