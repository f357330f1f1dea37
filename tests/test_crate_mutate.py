"""``rust mutate --crates`` (compile errors) and ``--crates --tests`` (test failures) on a
vendored multi-file crate, and on Debian's packaged crates where they are installed.

The batched checks are proven equal to checking each mutant alone; the test-failure
records' test output (mapped from the mutant schema) is proven equal to running the
plain mutant's tests, and a crate repair is judged by running them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import crate_mutate, semantic, test_mutate
from meap_data.rust.crate_judge import CrateBench, splice
from meap_data.rust.items import context_window, item_blocks
from meap_data.rust.lexer import tokenize
from meap_data.rust.records import TEST_FAILURE, primary_code, validate_record
from meap_data.rust.render import repair
from meap_data.rust.toolchain import Normaliser, compiler_env, find_toolchain
from tests.rust_fixture_crate import LIB, STATS, write_crate

needs_cargo = pytest.mark.skipif(shutil.which("cargo") is None or shutil.which("rustc") is None,
                                 reason="crate mutation needs cargo and rustc on PATH (install with rustup)")


@pytest.fixture(scope="module")
def vendor(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vendor")
    write_crate(root)
    write_crate(root, "delta", "1.0.0")
    return root


@pytest.fixture(scope="module")
def compile_mutants(vendor, tmp_path_factory) -> tuple[Path, crate_mutate.CrateMutateSummary]:
    out = tmp_path_factory.mktemp("cm") / "mutants.jsonl"
    summary = crate_mutate.mutate_crates(vendor, out, find_toolchain(), context_lines=25, jobs=2, progress=None)
    return out, summary


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------- pure parts


def test_the_context_is_the_file_when_short_else_the_largest_item_that_fits():
    toks = tokenize(STATS)
    blocks = item_blocks(STATS, toks)
    at = STATS.index("out.push(acc)")
    assert context_window(STATS, blocks, at, at + 1, 500) == (0, len(STATS))
    lo, hi = context_window(STATS, blocks, at, at + 1, 15)
    assert STATS[lo:hi].startswith("/// Prefix sums") and STATS[lo:hi].rstrip().endswith("}")
    assert "pub fn mean" not in STATS[lo:hi] and "pub fn count_above" not in STATS[lo:hi]
    assert context_window(STATS, blocks, at, at + 1, 3) is None  # not even the function fits


def test_test_modules_are_marked_test_only():
    blocks = item_blocks(LIB, tokenize(LIB))
    tests = {b.name for b in blocks if b.test}
    assert {"tests", "finds_the_largest", "sorted_and_not"} <= tests
    assert not any(b.test for b in blocks if b.name in ("argmax", "is_sorted"))


def test_semantic_operators_find_their_sites_outside_tests():
    found = semantic.sites_in_bodies(LIB)
    by_op = {name: {(s.original, s.replacement) for s in sites} for name, sites in found.items()}
    assert ("*x > xs[b]", "*x >= xs[b]") in by_op["off_by_one"]
    assert ("i < xs.len()", "i > xs.len()") in by_op["swapped_comparison"]
    assert ("i - 1", "i + 1") in by_op["wrong_operator"]
    assert ("i", "i + 1") in by_op["wrong_index"]
    assert ("", "return false;") in by_op["early_return"]
    test_code = LIB.index("#[cfg(test)]")
    assert all(s.start < test_code for sites in found.values() for s in sites)


def test_a_schema_keeps_line_numbers_and_locations_map_back():
    sites = semantic.sites_in_bodies(LIB)["wrong_operator"]
    site = next(s for s in sites if s.original == "i - 1")
    schema = semantic.schema_text(LIB, [(7, site)])
    assert schema.count("\n") == LIB.count("\n")
    line = schema.split("\n")[site.line - 1]
    mutant_line = site.apply(LIB).split("\n")[site.line - 1]
    after, inside = "] > xs[i]", "i + 1 }"
    live = (7, site)
    for col_of, want in ((line.index(after) + 1, mutant_line.index(after) + 1),
                         (line.index(inside) + 1, mutant_line.index("i + 1") + 1),
                         (line.index("xs[") + 1, line.index("xs[") + 1)):
        assert semantic.map_location(live, live, site.line, col_of) == (site.line, want)
    # The same line holding another, inactive site: columns map to the original text.
    assert semantic.map_location((9, site), (7, site), site.line, line.index(after) + 1)[1] == \
        mutant_line.index(after) + 1
    other = semantic.schema_text(LIB, [(3, site)]).split("\n")[site.line - 1]
    assert semantic.plain_column(site, 3, other.index(after) + 1, live=False) == LIB.split("\n")[site.line - 1].index(after) + 1
    assert semantic.map_location(live, None, site.line + 3, 9) == (site.line + 3, 9)


def test_splice_puts_a_window_back_into_its_file():
    original = "a\nb\nc\nd\n"
    assert splice(original, [2, 3], "B\nC\n") == "a\nB\nC\nd\n"
    assert splice(original, [2, 3], "X\n") == "a\nX\nd\n"


# ------------------------------------------------------------ compile errors


@needs_cargo
def test_crate_mutants_are_valid_records_cut_from_their_file(compile_mutants, vendor):
    out, summary = compile_mutants
    records = _records(out)
    assert summary.kept == len(records) >= 20
    assert summary.checks < summary.tried  # batched: fewer cargo checks than mutants
    for r in records:
        assert validate_record(r) is None, r["key"]
        original = (vendor / f"{r['crate']['name']}-{r['crate']['version']}" / r["crate"]["file"]).read_text()
        a, b = r["crate"]["fixed_lines"]
        assert "".join(original.splitlines(keepends=True)[a - 1:b]) == r["fixed_source"]
        assert r["source"] != r["fixed_source"]
        assert r["mutation"]["first_code"].startswith("E")
        assert b - a + 1 <= 25 or (a, b) == (1, r["crate"]["file_lines"])
        lo, hi = r["crate"]["lines"]
        assert all(lo <= d["primary"]["line"] <= hi for d in r["diagnostics"])
        assert r["rendered"].rstrip().endswith("emitted") or "previous error" in r["rendered"]
    assert {r["crate"]["name"] for r in records} == {"gamma", "delta"}
    assert summary.ownership > 0 and summary.inference > 0


@needs_cargo
def test_a_batched_mutant_says_what_it_says_when_checked_alone(compile_mutants, vendor, tmp_path):
    """Batches put one mutant per file (or several in disjoint items): each record's
    diagnostics must be exactly those of a check of that mutant alone."""
    out, _ = compile_mutants
    toolchain = find_toolchain()
    records = [r for r in _records(out) if r["crate"]["name"] == "gamma"]
    crate = vendor / "gamma-0.3.1"
    copy = tmp_path / "gamma-0.3.1"
    shutil.copytree(crate, copy)
    home = crate_mutate.write_cargo_home(tmp_path / "home", vendor)
    mismatched = 0
    env = compiler_env({"CARGO_HOME": str(home), "CARGO_TARGET_DIR": str(tmp_path / "target")}, tmp_path)
    normaliser = Normaliser({str(copy): "$CRATE", str(tmp_path / "target"): "$TARGET", str(vendor): "$REGISTRY",
                             toolchain.sysroot: "$SYSROOT"})
    for r in records:
        path = copy / r["crate"]["file"]
        original = path.read_text()
        path.write_text(splice(original, r["crate"]["fixed_lines"], r["source"]))
        try:
            check = crate_mutate.cargo_check(copy, toolchain, env, normaliser, 120)
        finally:
            path.write_text(original)
        lo, hi = r["crate"]["lines"]
        alone = [d for d in check.diagnostics if d.get("code") != "dead_code" and d.get("primary")
                 and d["primary"]["file"] == r["crate"]["file"] and lo <= d["primary"]["line"] <= hi]
        mismatched += alone != r["diagnostics"]
    assert mismatched == 0, f"{mismatched} of {len(records)} records differ from their mutant checked alone"


@needs_cargo
def test_crate_mutants_are_the_same_bytes_for_any_jobs(compile_mutants, vendor, tmp_path):
    out, _ = compile_mutants
    again = tmp_path / "one-job.jsonl"
    crate_mutate.mutate_crates(vendor, again, find_toolchain(), context_lines=25, jobs=1, progress=None)
    assert again.read_bytes() == out.read_bytes()


def test_a_survey_file_that_is_not_one_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"key": "not a crate record"}\n')
    with pytest.raises(MeapDataError, match="not a crate record"):
        crate_mutate.read_crate_records(bad)
    with pytest.raises(MeapDataError, match="cannot read crate records"):
        crate_mutate.read_crate_records(tmp_path / "missing.jsonl")


# ------------------------------------------------------------ test failures


@pytest.fixture(scope="module")
def test_mutants(vendor, tmp_path_factory) -> tuple[Path, test_mutate.TestMutateSummary]:
    out = tmp_path_factory.mktemp("tm") / "tests.jsonl"
    summary = test_mutate.mutate_tests(vendor, out, find_toolchain(), only=["gamma"], context_lines=25,
                                       jobs=1, progress=None)
    return out, summary


@needs_cargo
def test_test_failure_mutants_compile_fail_a_test_and_render_as_repairs(test_mutants):
    out, summary = test_mutants
    records = _records(out)
    assert summary.kept == len(records) >= 8
    assert {r["mutation"]["operator"] for r in records} >= {"off_by_one", "swapped_comparison", "early_return"}
    for r in records:
        assert validate_record(r) is None, r["key"]
        assert r["diagnostics"] == [] and r["tests"]["failed"] >= 1
        assert primary_code(r) == TEST_FAILURE
        prompt, answer = repair(r)
        assert "### Test output: cargo test --offline" in prompt and "FAILED" in prompt
        assert answer.startswith(r["fixed_source"])


@needs_cargo
def test_judging_a_test_failure_runs_its_tests_and_matches_the_recorded_output(test_mutants, vendor):
    """The mutant as written fails the recorded tests with the recorded messages (the
    schema's locations mapped right), and the reference fix passes them."""
    out, _ = test_mutants
    records = _records(out)
    bench = CrateBench(str(vendor), find_toolchain(), 120)
    try:
        for r in records[:: max(1, len(records) // 6)]:
            check, tests = bench.judge(r, r["source"])
            assert check.exit_code == 0
            failed = {c["name"]: c["message"] for c in tests["cases"] if c["outcome"] == "failed"}
            want = {c["name"]: c["message"] for c in r["tests"]["cases"] if c["outcome"] == "failed"}
            assert failed == want, r["key"]
            check, tests = bench.judge(r, r["fixed_source"])
            assert check.exit_code == 0 and tests["status"] == "passed", r["key"]
    finally:
        bench.close()


@needs_cargo
def test_test_failure_mutants_are_the_same_bytes_on_a_second_resumed_run(test_mutants, vendor, tmp_path):
    out, summary = test_mutants
    lines = out.read_text().splitlines(keepends=True)
    again = tmp_path / "again.jsonl"
    # Stopped while writing gamma's third record: gamma is done again, from the start.
    Path(str(again) + ".partial").write_text("".join(lines[:2]) + lines[2][:40])
    resumed = test_mutate.mutate_tests(vendor, again, find_toolchain(), only=["gamma"], context_lines=25, jobs=2,
                                       resume=True, progress=None)
    assert again.read_bytes() == out.read_bytes()
    assert resumed.kept == summary.kept and resumed.runs == summary.runs
    assert not Path(str(again) + ".partial").exists()


# ------------------------------------------------------------ Debian's crates


@pytest.mark.skipif(not os.path.isdir("/usr/share/cargo/registry/strsim-0.10.0"),
                    reason="Debian's librust-strsim-dev is not installed (sh pipelines/install_debian_crates.sh)")
@needs_cargo
def test_a_debian_crate_gives_compile_error_and_test_failure_examples(tmp_path):
    toolchain = find_toolchain()
    out = tmp_path / "strsim.jsonl"
    summary = crate_mutate.mutate_crates(crate_mutate.DEBIAN_REGISTRY, out, toolchain, only=["strsim"],
                                         progress=None)
    records = _records(out)
    assert summary.kept == len(records) > 20
    assert all(r["crate"]["package"] == "librust-strsim-dev" and r["crate"]["license"] for r in records)
    tests_out = tmp_path / "strsim-tests.jsonl"
    tsummary = test_mutate.mutate_tests(crate_mutate.DEBIAN_REGISTRY, tests_out, toolchain, only=["strsim"],
                                        progress=None)
    assert tsummary.kept > 5


# ------------------------------------------------------------ prepare, split by crate


@needs_cargo
def test_prepare_splits_by_crate_over_every_source(compile_mutants, test_mutants, rust_docs_toolchain, tmp_path):
    """Error-index records (no crate, split by code) and both kinds of crate records in
    one repair run: each crate lands in one split only; test failures render as repairs."""
    from meap_data.cli import main
    from meap_data.manifest import read_manifest
    from meap_data.rust import error_index

    inputs = tmp_path / "in"
    inputs.mkdir()
    error_index.build_corpus(inputs / "a-error-index.jsonl", limit=12, jobs=2, toolchain=rust_docs_toolchain)
    shutil.copy(compile_mutants[0], inputs / "b-crate-mutants.jsonl")
    shutil.copy(test_mutants[0], inputs / "c-test-mutants.jsonl")
    out = tmp_path / "ds"
    rc = main(["-q", "prepare", "--kind", "rust", "--input", str(inputs / "*.jsonl"), "--output", str(out),
               "--task", "repair", "--split-by", "crate", "--eval-codes", "delta", "--eval-fraction", "0",
               "--seq-len", "4096"])
    assert rc == 0
    train, evals = read_manifest(str(out / "train")), read_manifest(str(out / "eval"))
    assert set(evals["crates"]) == {"delta"} and "gamma" in train["crates"]
    assert not set(train["crates"]) & set(evals["crates"])
    assert train["codes"].get(TEST_FAILURE, 0) > 0  # gamma's test failures went to train with gamma
    assert train["config"]["split_by"] == "crate"
    read = train["counts"]["documents_read"] + evals["counts"]["documents_read"]
    total = sum(len(_records(p)) for p in inputs.glob("*.jsonl"))
    assert read == total


@needs_cargo
def test_the_cli_mutates_crates_and_says_what_it_kept(vendor, tmp_path, capsys):
    from meap_data.cli import main

    out = tmp_path / "m.jsonl"
    assert main(["-q", "rust", "mutate", "--crates", str(vendor), "--crate-names", "delta", "--per-operator", "1",
                 "--context-lines", "25", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mutate --crates: 1 crates (0 skipped)" in printed and "first error codes: E" in printed
    assert len(_records(out)) > 0
    for argv, message in (
        (["x.rs", "--crates", str(vendor)], "reads crates, not INPUT files"),
        (["--crates", str(vendor), "--tests", "--operators", "remove_clone"], "--tests uses the semantic ones"),
        (["--crates", str(vendor), "--crate-names", "nope"], "no crate named nope"),
    ):
        assert main(["rust", "mutate", *argv, "--output", str(out)]) == 2
        assert message in capsys.readouterr().err


@needs_cargo
def test_an_interrupted_run_resumes_to_the_same_bytes(compile_mutants, vendor, tmp_path):
    out, _ = compile_mutants
    lines = out.read_text().splitlines(keepends=True)
    delta = [line for line in lines if '"name":"delta"' in line]
    again = tmp_path / "resumed.jsonl"
    # delta's records, one of gamma's and half the next: the run stopped while writing gamma,
    # so delta is kept and gamma done again.
    partial = "".join(delta) + lines[len(delta)] + lines[len(delta) + 1][:40]
    Path(str(again) + ".partial").write_text(partial)
    summary = crate_mutate.mutate_crates(vendor, again, find_toolchain(), context_lines=25, jobs=2, resume=True,
                                         progress=None)
    assert again.read_bytes() == out.read_bytes()
    assert summary.crates == 2 and summary.kept == len(lines)
    assert not Path(str(again) + ".partial").exists()
    Path(str(again) + ".partial").write_text(lines[-1])  # gamma only: not a prefix of this run
    with pytest.raises(MeapDataError, match="not an interrupted run over these crates"):
        crate_mutate.mutate_crates(vendor, again, find_toolchain(), context_lines=25, resume=True, progress=None,
                                   only=["delta"])


def test_machine_fixes_outside_a_window_are_left_alone():
    from meap_data.rust.mutate import apply_machine_fixes

    window = "fn f() {\n    let x = 1;\n}\n"
    inside = {"applicability": "MachineApplicable", "file": "src/a.rs", "line": 2, "column": 9, "line_end": 2,
              "column_end": 10, "replacement": "_x"}
    beyond = dict(inside, line=40, line_end=40)
    fixed = apply_machine_fixes(window, [{"suggestions": [inside, beyond]}], file="src/a.rs")
    assert fixed == "fn f() {\n    let _x = 1;\n}\n"


@needs_cargo
def test_a_crate_that_runs_past_the_time_limit_is_skipped_with_the_reason_and_fix(vendor, tmp_path):
    """Time-outs depend on the machine's load, so the summary must say them apart from
    crates that do not build."""
    out = tmp_path / "m.jsonl"
    for run in (crate_mutate.mutate_crates, test_mutate.mutate_tests):
        summary = run(vendor, out, find_toolchain(), only=["gamma"], time_limit_s=0.01, jobs=1, progress=None)
        assert summary.kept == 0 and out.read_text() == ""
        assert summary.skipped == {"cargo check of the unmodified crate timed out after 0.01 s "
                                   "(raise --time-limit or lower --jobs)": 1}
