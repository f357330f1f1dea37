"""``meap-data rust mutate``: every operator on a program written here, the kept mutants'
codes reproduced by a fresh rustc call, fix = original, determinism across --jobs, the
rustc-fixable flag, and a repair dataset that rejects no mutant as no_fix."""

from __future__ import annotations

import json
import os

import pytest

from meap_data.rust import mutations as M
from meap_data.rust.harvest import compile_source
from meap_data.rust.lexer import tokenize
from meap_data.rust.mutate import Program, apply_machine_fixes, mutate, mutate_program
from meap_data.rust.records import validate_record

PROGRAM = """\
use std::collections::HashMap;

fn total(values: &mut Vec<i32>, extra: i32) -> i32 {
    values.push(extra);
    values.iter().sum()
}

fn make_label(n: i32) -> String {
    let label = format!("n={}", n);
    label
}

fn main() {
    let mut numbers = vec![1, 2, 3];
    let name = String::from("count");
    let copy = name.clone();
    let parsed = "42".parse::<i32>().unwrap();
    let doubled: Vec<i32> = numbers.iter().map(|x| x * 2).collect();
    let measure = |s: &str| s.len();
    let root = 2.0_f64.sqrt();
    let mut seen = Vec::new();
    seen.push(7);
    seen.push(8);
    let mut map = HashMap::new();
    map.insert(name, parsed);
    let sum = total(&mut numbers, 4);
    numbers.push(5);
    println!("{} {} {:?} {} {:?} {} {} {}", copy, sum, doubled, make_label(3), map, numbers.len(), measure("abc"), root + seen.len() as f64);
}
"""

# What each operator must make rustc say about PROGRAM (first error code of a kept mutant).
EXPECTED = {
    "wrong_literal_type": {"E0308"},
    "remove_borrow": {"E0308"},
    "borrow_to_mut_borrow": {"E0596", "E0308", "E0631"},
    "remove_mut": {"E0596"},
    "identifier_near_miss": {"E0425"},
    "remove_use": {"E0433"},
    "drop_argument": {"E0061"},
    "remove_turbofish": {"E0284"},
    "remove_let_type": {"E0282", "E0283"},
    "remove_closure_param_types": {"E0282"},
    "remove_literal_suffix": {"E0689"},
    "remove_filling_statements": {"E0282"},
    "remove_clone": {"E0382"},
    "use_after_move": {"E0382"},
    "borrow_across_mutation": {"E0502"},
    "mutable_borrow_across_use": {"E0499"},
    "return_local_reference": {"E0515"},
    "mutate_through_shared_ref": {"E0596"},
}


def test_the_lexer_skips_comments_and_strings():
    toks = tokenize('let s = "a // not a comment"; // a comment\nlet c = \'x\'; /* /* nested */ */ r#"raw "q""#')
    assert [t.tag for t in toks] == ["ident", "ident", "punct", "str", "punct", "ident", "ident", "punct", "char",
                                      "punct", "str"]
    assert [t.tag for t in tokenize("'a 'b' 1.5 2..3 0x1F")] == ["lifetime", "char", "float", "int", "punct", "int", "int"]


def test_every_operator_has_a_site_in_the_test_program():
    assert set(EXPECTED) == set(M.BY_NAME)
    for op in M.OPERATORS:
        assert M.sites_of(PROGRAM, op), op.name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_operator_makes_rustc_fail_as_expected(rust_toolchain, name):
    program = Program("test-program", PROGRAM, "2021", {}, {"path": "test.rs"})
    result = mutate_program(program, rust_toolchain, seed=0, per_operator=3, operators=(M.BY_NAME[name],),
                            time_limit_s=60)
    assert result.compiled and result.records, f"{name}: no mutant kept"
    for record in result.records:
        assert validate_record(record) is None
        m = record["mutation"]
        assert m["operator"] == name and m["program"] == "test-program"
        assert record["fixed_source"] == PROGRAM and record["fix_compiles"] is True
        assert record["source"] != PROGRAM and record["source_path"] == "$SRC/main.rs"
        assert "main.rs" in record["rendered"]
        # a fresh rustc call reproduces the recorded codes
        again = compile_source(record["source"], rust_toolchain, edition="2021", time_limit_s=60)
        assert again.record_fields()["produced_codes"] == record["produced_codes"]
        assert again.rendered == record["rendered"]
    codes = {r["mutation"]["first_code"] for r in result.records}
    assert codes & EXPECTED[name], f"{name}: {codes}"


def test_the_original_must_compile(rust_toolchain):
    broken = Program("broken", "fn main() { let x: i32 = \"no\"; }\n", "2021", {}, {"path": "b.rs"})
    result = mutate_program(broken, rust_toolchain, seed=0, per_operator=2, operators=M.OPERATORS, time_limit_s=60)
    assert not result.compiled and result.records == []


def test_machine_applicable_fixes_are_applied_like_rustfix(rust_toolchain):
    source = "fn main() {\n    let v = Vec::new();\n    v.push(1);\n}\n"
    fixed = "fn main() {\n    let mut v = Vec::new();\n    v.push(1);\n}\n"
    compiled = compile_source(source, rust_toolchain, edition="2021", time_limit_s=60)
    assert compiled.record_fields()["produced_codes"][0] == "E0596"
    assert apply_machine_fixes(source, compiled.diagnostics) == fixed
    program = Program("p", fixed, "2021", {}, {"path": "p.rs"})
    result = mutate_program(program, rust_toolchain, seed=0, per_operator=1, operators=(M.BY_NAME["remove_mut"],),
                            time_limit_s=60)
    [record] = result.records
    assert record["mutation"]["rustc_fix"] is True  # rustc's own suggestion restores `mut`
    misspelt = mutate_program(Program("q", PROGRAM, "2021", {}, {"path": "q.rs"}), rust_toolchain, seed=0,
                              per_operator=1, operators=(M.BY_NAME["use_after_move"],), time_limit_s=60)
    assert misspelt.records and not any(r["mutation"]["rustc_fix"] for r in misspelt.records)


def _programs(tmp_path) -> str:
    folder = tmp_path / "progs"
    folder.mkdir()
    (folder / "a.rs").write_text(PROGRAM)
    (folder / "b.rs").write_text(
        "fn longest(words: &Vec<String>) -> usize {\n    words.iter().map(|w| w.len()).max().unwrap_or(0)\n}\n\n"
        "fn main() {\n    let mut words = vec![String::from(\"a\"), String::from(\"bb\")];\n"
        "    let first = words[0].clone();\n    words.push(first);\n    let n: usize = longest(&words);\n"
        "    println!(\"{} {}\", n, words.len());\n}\n")
    (folder / "c.rs").write_text("fn main() {\n    let x: i32 = \"not compiling\";\n}\n")
    return str(folder)


def test_output_is_byte_identical_across_jobs_and_runs(rust_toolchain, tmp_path):
    folder = _programs(tmp_path)
    one = tmp_path / "one.jsonl"
    two = tmp_path / "two.jsonl"
    s1 = mutate([folder], one, jobs=1, seed=7, toolchain=rust_toolchain, progress=None)
    s2 = mutate([folder], two, jobs=2, seed=7, toolchain=rust_toolchain, progress=None)
    assert one.read_bytes() == two.read_bytes() and s1.kept == s2.kept > 20
    assert s1.programs == 3 and s1.compiled == 2  # c.rs does not compile: nothing from it
    other = tmp_path / "other.jsonl"
    mutate([folder], other, jobs=2, seed=8, toolchain=rust_toolchain, progress=None)
    assert other.read_bytes() != one.read_bytes()  # the seed picks the sites
    records = [json.loads(line) for line in one.read_text().splitlines()]
    assert len({r["source"] for r in records}) == len(records)  # duplicates dropped
    assert len({r["key"] for r in records}) == len(records)


def test_prepare_repair_keeps_every_mutant(rust_toolchain, tmp_path):
    from meap_data.config import PrepareConfig
    from meap_data.kinds.rust import RustOptions
    from meap_data.manifest import read_manifest
    from meap_data.prepare import run_prepare

    corpus = tmp_path / "mutants.jsonl"
    summary = mutate([_programs(tmp_path)], corpus, jobs=2, toolchain=rust_toolchain, progress=None)
    out = str(tmp_path / "ds")
    run_prepare(PrepareConfig(inputs=(str(corpus),), kind="rust", seq_len=2048,
                              options=RustOptions(eval_fraction=0.0)), out)
    counts = read_manifest(os.path.join(out, "train"))["counts"]
    assert counts["documents_read"] == summary.kept
    assert "no_fix" not in counts["rejected_by_reason"]
    assert counts["documents_written"] == summary.kept
