"""Parsers for rustc/cargo diagnostics, on recorded outputs (no toolchain needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meap_data.rust import diagnostics as D

DATA = Path(__file__).parent / "data" / "rust"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def identities(result: D.ParseResult) -> list[tuple]:
    return [d.identity() for d in result.diagnostics]


# ------------------------------------------------------------------ good input


def test_rustc_json_model_fields():
    result = D.parse(read("borrow.rustc.jsonl"))
    assert result.format == "json" and result.problems == []
    levels = [(d.level, d.code) for d in result.diagnostics]
    assert levels == [
        ("warning", "unused_mut"), ("error", "E0382"), ("warning", "unused_variables"),
        ("warning", "unused_variables"), ("error", None), ("failure-note", None),
    ]
    moved = result.diagnostics[1]
    assert moved.message == "borrow of moved value: `v`"
    assert (moved.primary.file, moved.primary.line, moved.primary.column) == ("borrow.rs", 10, 29)
    assert moved.primary.label == "value borrowed here after move"
    assert [(s.line, s.label) for s in moved.labels] == [
        (6, "move occurs because `v` has type `Vec<i32>`, which does not implement the `Copy` trait"),
        (9, "value moved here"),
    ]
    assert moved.notes[0].startswith("consider changing this parameter type")
    clone = moved.suggestions[0]
    assert (clone.replacement, clone.applicability, clone.line, clone.column) == (".clone()", "MachineApplicable", 9, 22)
    assert result.codes() == ["unused_mut", "E0382", "unused_variables"]
    assert result.diagnostics[-1].is_summary and not moved.is_summary


def test_human_and_json_agree_on_recorded_rustc_output():
    from_json = D.parse(read("borrow.rustc.jsonl"))
    from_text = D.parse(read("borrow.rustc.txt"))
    assert from_text.format == "human" and from_text.problems == []
    assert identities(from_text) == identities(from_json)
    for j, h in zip(from_json.diagnostics, from_text.diagnostics):
        assert h.notes == j.notes
    # Labels and inline help suggestions come back from the text too (no applicability).
    moved_text, moved_json = from_text.diagnostics[1], from_json.diagnostics[1]
    assert moved_text.labels == moved_json.labels and moved_text.primary == moved_json.primary
    unused = from_text.diagnostics[2]
    assert unused.helps == ["if this is intentional, prefix it with an underscore"]
    assert [(s.replacement, s.applicability) for s in unused.suggestions] == [("_unused", None)]


def test_ansi_coloured_text_parses_like_plain_text():
    coloured = read("borrow.rustc.ansi.txt")
    assert b"\x1b[" in coloured
    result = D.parse(coloured)
    assert result.problems == []
    assert identities(result) == identities(D.parse(read("borrow.rustc.txt")))
    assert all("\x1b" not in (d.rendered or "") for d in result.diagnostics)


def test_crlf_line_endings_are_tolerated():
    crlf = read("borrow.rustc.txt").replace(b"\n", b"\r\n")
    assert identities(D.parse(crlf)) == identities(D.parse(read("borrow.rustc.txt")))
    json_crlf = read("borrow.rustc.jsonl").replace(b"\n", b"\r\n")
    assert identities(D.parse(json_crlf)) == identities(D.parse(read("borrow.rustc.jsonl")))


def test_cargo_json_stream_and_cargo_human_output_agree():
    stream = D.parse(read("borrow.cargo.jsonl"))
    assert stream.problems == []  # artifact / build-finished records are skipped silently
    assert stream.diagnostics[0].primary.file == "src/main.rs"
    human = D.parse(read("borrow.cargo.txt"))
    assert human.problems == []  # "Checking", "generated 3 warnings", "could not compile" skipped
    assert identities(human) == identities(stream)
    # cargo drops rustc's "aborting due to" line in both forms
    assert not any(d.message.startswith("aborting") for d in human.diagnostics)


def test_lint_names_are_recovered_from_text_for_repeated_lints():
    text = (
        "warning: unused variable: `a`\n --> x.rs:1:5\n  |\n1 | let a = 1;\n  |     ^\n  |\n"
        "  = note: `#[warn(unused_variables)]` (part of `#[warn(unused)]`) on by default\n\n"
        "warning: unused variable: `b`\n --> x.rs:2:5\n  |\n2 | let b = 1;\n  |     ^\n\n"
        "warning: function `f` is never used\n --> x.rs:3:4\n  |\n3 | fn f() {}\n  |    ^\n\n"
    )
    result = D.parse_human(text)
    assert [d.code for d in result.diagnostics] == ["unused_variables", "unused_variables", "dead_code"]


def test_lint_level_defined_here_names_the_lint_under_the_caret():
    text = (
        "error: unused variable: `a`\n --> x.rs:2:9\n  |\n2 |     let a = 1;\n  |         ^\n  |\n"
        "note: the lint level is defined here\n --> x.rs:1:9\n  |\n1 | #![deny(unused_variables)]\n"
        "  |         ^^^^^^^^^^^^^^^^\n\n"
    )
    [d] = D.parse_human(text).diagnostics
    assert d.code == "unused_variables" and d.notes == ["the lint level is defined here"]


# ------------------------------------------------------------------- bad input


def test_truncated_json_line_is_a_problem_not_a_crash():
    lines = read("borrow.rustc.jsonl").splitlines(keepends=True)
    truncated = b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2] + b"\n" + b"".join(lines[3:])
    result = D.parse(truncated)
    assert len(result.diagnostics) == len(lines) - 1
    assert len(result.problems) == 1 and result.problems[0].startswith("line 3: invalid JSON")
    assert "truncated" in result.problems[0]


def test_json_that_is_not_a_diagnostic():
    result = D.parse(b'{"hello": "world"}\n[1, 2]\n{"$message_type": "artifact", "artifact": "x.rmeta"}\n')
    assert result.diagnostics == []
    assert result.problems == [
        "line 1: JSON object is not a rustc diagnostic (missing 'message', 'level', 'spans')",
        "line 2: JSON list is not a diagnostic object",
    ]


def test_malformed_diagnostic_object_is_reported():
    result = D.parse(b'{"message": "x", "level": "error", "spans": [{"file_name": "a.rs"}]}\n')
    assert result.diagnostics == []
    assert result.problems and result.problems[0].startswith("line 1: malformed rustc diagnostic (KeyError")


def test_text_without_any_diagnostic():
    result = D.parse(b"Compiling the universe\nall good here\n")
    assert result.diagnostics == []
    assert result.problems[-1] == "no rustc or cargo diagnostic found in 2 non-blank lines of text"
    assert D.parse(b"   \n\n").problems == ["input is empty"]


def test_invalid_utf8_is_replaced_and_reported():
    data = read("borrow.rustc.txt").replace(b"`v`", b"`\xff`", 1)
    result = D.parse(data)
    assert result.problems[0].startswith("invalid UTF-8 at byte ")
    assert "\ufffd" in result.diagnostics[1].message
    assert len(result.diagnostics) == len(D.parse(read("borrow.rustc.txt")).diagnostics)


def test_internal_compiler_error_is_classified_in_both_formats():
    text = D.parse(read("ice.rustc.txt"))
    json_ = D.parse(read("ice.rustc.jsonl"))
    assert text.problems == [] and json_.problems == []
    assert identities(text) == identities(json_)
    first, panic, unexpected = text.diagnostics[:3]
    assert (first.level, first.code) == (D.ICE_LEVEL, "E0308")
    assert panic.level == D.ICE_LEVEL and panic.message == "aborting due to `-Z treat-err-as-bug=1`"
    assert panic.notes[0].startswith("thread 'rustc' panicked at ")
    assert unexpected.level == D.ICE_LEVEL and unexpected.message.startswith("the compiler unexpectedly panicked")
    # backtrace frames and the query stack are not mistaken for diagnostics
    assert all("rustc_errors" not in d.message for d in text.diagnostics)


def test_bare_panic_without_an_ice_header_is_still_an_ice():
    lines = read("ice.rustc.txt").decode().splitlines(keepends=True)
    start = next(i for i, l in enumerate(lines) if l.startswith("thread 'rustc'"))
    result = D.parse("".join(lines[start:]))
    assert result.diagnostics[0].level == D.ICE_LEVEL
    assert result.problems == []


@pytest.mark.parametrize("garbage", [b"\x00\x01\x02", b"{", b"}{", "error[".encode(), b"\xff\xfe" * 10])
def test_garbage_never_raises(garbage):
    result = D.parse(garbage)
    assert isinstance(result.problems, list) and result.problems


def test_round_trip_through_dicts():
    for d in D.parse(read("borrow.rustc.jsonl")).diagnostics:
        assert D.Diagnostic.from_dict(d.to_dict()) == d
