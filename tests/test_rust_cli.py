"""The ``rust`` CLI leaves, through an argparse parser built here with ``register``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import harvest as H
from meap_data.rust.cli import register

DATA = Path(__file__).parent / "data" / "rust"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="meap-data")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_parse_prints_one_line_per_diagnostic(capsys):
    assert run(["rust", "parse", str(DATA / "borrow.rustc.txt")]) == 0
    out = capsys.readouterr().out
    assert "borrow.rs:10:29: error[E0382]: borrow of moved value: `v`" in out
    assert "borrow.rs:7:9: warning[unused_variables]: unused variable: `unused`" in out


def test_parse_json_format_matches_for_json_and_text_input(capsys):
    assert run(["rust", "parse", "--format", "json", str(DATA / "borrow.rustc.jsonl")]) == 0
    from_json = json.loads(capsys.readouterr().out)
    assert run(["rust", "parse", "--format", "json", str(DATA / "borrow.rustc.ansi.txt")]) == 0
    from_text = json.loads(capsys.readouterr().out)
    assert from_json["format"] == "json" and from_text["format"] == "human"
    pick = lambda doc: [(d["level"], d["code"], d["message"], d["primary"] and d["primary"]["line"])
                        for d in doc["diagnostics"]]
    assert pick(from_json) == pick(from_text)
    assert from_json["diagnostics"][1]["suggestions"][0]["applicability"] == "MachineApplicable"


def test_parse_warns_about_problems_but_succeeds(tmp_path, capsys):
    lines = (DATA / "borrow.rustc.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "cut.jsonl").write_bytes(lines[0] + lines[1][:40] + b"\n")
    assert run(["rust", "parse", str(tmp_path / "cut.jsonl")]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") >= 1
    assert "warning: " in captured.err and "line 2: invalid JSON" in captured.err


@pytest.mark.parametrize("content", [b"just some text\n", b"", b'{"not": "a diagnostic"}\n'])
def test_parse_of_nothing_parseable_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "junk.txt"
    path.write_bytes(content)
    with pytest.raises(MeapDataError) as info:
        run(["rust", "parse", str(path)])
    message = str(info.value)
    assert message.startswith(f"{path}: nothing parseable") and "\n" not in message


def test_parse_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(MeapDataError, match="no such file"):
        run(["rust", "parse", str(tmp_path / "nope.txt")])


def test_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as info:
        run(["rust"])
    assert info.value.code == 2


@pytest.fixture(scope="module")
def toolchain(rust_toolchain) -> H.Toolchain:
    return rust_toolchain


def test_harvest_and_error_index_leaves(toolchain, tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.rs").write_text('fn main() { let x: u8 = "x"; }\n', encoding="utf-8")
    out = tmp_path / "t.jsonl"
    assert run(["rust", "harvest", str(tmp_path / "src"), "--output", str(out), "--jobs", "1",
                "--time-limit", "60", "--edition", "2018"]) == 0
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["edition"] == "2018" and record["produced_codes"] == ["E0308"]
    assert "harvest: 1 records (1 did not compile, 0 timed out)" in capsys.readouterr().out
    with pytest.raises(MeapDataError, match="--jobs"):
        run(["rust", "harvest", str(tmp_path / "src"), "--output", str(out), "--jobs", "0"])
    try:
        from meap_data.rust.error_index import error_codes_dir
        error_codes_dir(toolchain)
    except MeapDataError as e:
        pytest.skip(f"error index not installed: {e}")
    out = tmp_path / "ei.jsonl"
    assert run(["rust", "error-index", "--output", str(out), "--limit", "3", "--jobs", "2"]) == 0
    captured = capsys.readouterr()
    assert len(out.read_text().splitlines()) == 3
    assert captured.out.startswith("error-index: 3 examples, expected code produced for ")
    assert "error-index: compiling: 3/3 (" in captured.err and "eta " in captured.err
    with pytest.raises(MeapDataError, match="--limit"):
        run(["rust", "error-index", "--output", str(out), "--limit", "0"])
