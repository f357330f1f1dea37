"""``rust harvest --tests``: a correct solution, a compile error, a wrong answer and a panic
give different records; a crate keeps its path dependency; the outcome is rendered for
the diagnose and transcript tasks."""

from __future__ import annotations

import json

import pytest

from meap_data.rust import render as R
from meap_data.rust.harvest import harvest
from meap_data.rust.records import validate_record
from meap_data.rust.tests_run import parse_libtest

SOLUTION = """\
pub fn add(a: i32, b: i32) -> i32 {
    {body}
}

fn main() {{}}

#[cfg(test)]
mod tests {{
    use super::*;

    #[test]
    fn adds() {{
        assert_eq!(add(2, 3), 5);
    }}

    #[test]
    fn zero() {{
        assert_eq!(add(0, 0), 0);
    }}

    #[test]
    #[ignore]
    fn slow() {{}}
}}
"""

BODIES = {
    "correct": "a + b",
    "compile_error": 'a + "b"',
    "wrong_answer": "a - b",
    "panic": "let v: Vec<i32> = Vec::new(); v[(a + b) as usize]",
}


@pytest.fixture(scope="module")
def harvested(tmp_path_factory, rust_toolchain):
    root = tmp_path_factory.mktemp("solutions")
    src = root / "solutions"
    src.mkdir()
    for name, body in BODIES.items():
        (src / f"{name}.rs").write_text(SOLUTION.replace("{body}", body).replace("{{", "{").replace("}}", "}"))
    out = root / "out.jsonl"
    summary = harvest([str(src)], out, jobs=2, time_limit_s=120, toolchain=rust_toolchain, tests=True)
    records = {json.loads(line)["source_path"].split("/")[-1][:-3]: json.loads(line)
               for line in out.read_text().splitlines()}
    assert summary.records == 4
    return records


def test_four_kinds_of_solution_are_told_apart(harvested):
    for record in harvested.values():
        assert validate_record(record) is None, validate_record(record)
    correct, broken = harvested["correct"]["tests"], harvested["compile_error"]["tests"]
    wrong, panic = harvested["wrong_answer"]["tests"], harvested["panic"]["tests"]
    assert (correct["status"], correct["passed"], correct["failed"], correct["ignored"]) == ("passed", 2, 0, 1)
    assert [c["outcome"] for c in correct["cases"]] == ["passed", "ignored", "passed"]  # tests::adds, slow, zero
    assert broken["status"] == "compile_error" and broken["cases"] == []
    assert harvested["compile_error"]["produced_codes"] == ["E0277"]
    assert (wrong["status"], wrong["passed"], wrong["failed"]) == ("failed", 1, 1)
    [failed] = [c for c in wrong["cases"] if c["outcome"] == "failed"]
    assert failed["name"] == "tests::adds" and failed["failure"] == "assertion"
    assert "left: -1" in failed["message"] and "right: 5" in failed["message"]
    assert "thread 'tests::adds' (<id>) panicked at " in failed["message"]
    assert panic["status"] == "failed" and panic["failed"] == 2
    assert {c["failure"] for c in panic["cases"] if c["outcome"] == "failed"} == {"panic"}
    assert all("index out of bounds" in c["message"] for c in panic["cases"] if c["outcome"] == "failed")


def test_outcomes_are_rendered_for_diagnose_and_transcript(harvested):
    _, response = R.diagnose(harvested["wrong_answer"])
    assert "### Test output: $TMP/tests --test-threads=1\nrunning 3 tests\ntest tests::adds ... FAILED" in response
    assert response.endswith("test result: FAILED. 1 passed; 1 failed; 1 ignored\n")
    text = R.transcript_text(harvested["panic"])
    assert "$ $TMP/tests --test-threads=1\nrunning 3 tests" in text and "index out of bounds" in text
    assert "error: the tests did not compile" in R.diagnose(harvested["compile_error"])[1]
    plain = dict(harvested["correct"])
    del plain["tests"]
    assert R.diagnose(plain)[1] == plain["rendered"]  # without --tests, nothing changes


def test_crate_with_a_path_dependency_checks_and_tests(tmp_path, rust_toolchain):
    if rust_toolchain.cargo is None:
        pytest.skip("cargo not on PATH")
    ws = tmp_path / "ws"
    (ws / "util" / "src").mkdir(parents=True)
    (ws / "util" / "Cargo.toml").write_text('[package]\nname = "util"\nversion = "0.1.0"\nedition = "2021"\n')
    (ws / "util" / "src" / "lib.rs").write_text("pub fn double(x: i32) -> i32 { x * 2 }\n")
    (ws / "app" / "src").mkdir(parents=True)
    (ws / "app" / "Cargo.toml").write_text('[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n'
                                           '[dependencies]\nutil = { path = "../util" }\n')
    (ws / "app" / "src" / "main.rs").write_text(
        "fn main() { println!(\"{}\", util::double(2)); }\n\n#[cfg(test)]\nmod tests {\n"
        "    #[test]\n    fn doubles() { assert_eq!(util::double(2), 4); }\n"
        "    #[test]\n    fn wrong() { assert_eq!(util::double(2), 5); }\n}\n")
    out = tmp_path / "crate.jsonl"
    harvest([str(ws / "app")], out, jobs=1, time_limit_s=300, toolchain=rust_toolchain, tests=True)
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert validate_record(record) is None
    assert record["exit_code"] == 0, record["rendered"]  # the path dependency resolved in the copy
    tests = record["tests"]
    assert (tests["status"], tests["passed"], tests["failed"]) == ("failed", 1, 1)
    assert [c["name"] for c in tests["cases"]] == ["tests::doubles", "tests::wrong"]


def test_libtest_parser_on_several_binaries():
    out = ("\nrunning 1 test\ntest a ... ok\n\ntest result: ok. 1 passed; 0 failed\n\n"
           "running 2 tests\ntest b - should panic ... ok\ntest c ... FAILED\n\nfailures:\n\n---- c stdout ----\n"
           "\nthread 'c' panicked at src/lib.rs:3:5:\nexplicit panic\nnote: run with `RUST_BACKTRACE=1` "
           "environment variable to display a backtrace\n\n\nfailures:\n    c\n\ntest result: FAILED.\n")
    result = parse_libtest(out)
    assert [(c["name"], c["outcome"]) for c in result["cases"]] == [("a", "passed"), ("b - should panic", "passed"),
                                                                     ("c", "failed")]
    assert result["cases"][2]["message"] == "thread 'c' panicked at src/lib.rs:3:5:\nexplicit panic"
    assert result["cases"][2]["failure"] == "panic" and result["status"] == "failed"
    assert parse_libtest("\nrunning 0 tests\n\ntest result: ok. 0 passed\n")["status"] == "no_tests"
