"""``meap-data rust crates``: offline builds and own test suites of a directory of crate
sources (a vendored directory made here, and Debian's registry where crates are installed)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import crates

pytestmark = pytest.mark.skipif(shutil.which("cargo") is None or shutil.which("rustc") is None,
                                reason="rust crates needs cargo and rustc on PATH (install with rustup)")

ALPHA_LIB = """
/// Index of the largest element (the first one on ties).
pub fn argmax(xs: &[i64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, x) in xs.iter().enumerate() {
        if best.map_or(true, |b| *x > xs[b]) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_largest() {
        assert_eq!(argmax(&[3, 9, 2]), Some(1));
    }

    #[test]
    fn empty_is_none() {
        assert_eq!(argmax(&[]), None);
    }
}
"""

ALPHA_TESTS = """
#[test]
fn ties_go_to_the_first() {
    assert_eq!(alpha::argmax(&[5, 5]), Some(0));
}

#[test]
fn deliberately_wrong() {
    assert_eq!(alpha::argmax(&[1, 2]), Some(0), "the packaged test that fails");
}
"""


def _crate(root: Path, name: str, version: str, lib: str, extra_toml: str = "", files: dict | None = None) -> Path:
    folder = root / f"{name}-{version}"
    (folder / "src").mkdir(parents=True)
    (folder / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "{version}"\nedition = "2021"\nlicense = "MIT OR Apache-2.0"\n'
        + extra_toml)
    (folder / "src" / "lib.rs").write_text(lib)
    for rel, text in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    # What `cargo vendor` writes: a directory source checks these files against it.
    (folder / ".cargo-checksum.json").write_text(json.dumps({"files": {}, "package": None}))
    return folder


@pytest.fixture(scope="module")
def vendored(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vendor")
    _crate(root, "alpha", "0.1.0", ALPHA_LIB, files={"tests/ties.rs": ALPHA_TESTS})
    _crate(root, "beta", "1.2.3", "pub fn top(xs: &[i64]) -> Option<i64> { alpha::argmax(xs).map(|i| xs[i]) }\n",
           '\n[dependencies]\nalpha = "0.1"\n\n[dev-dependencies.not-vendored]\nversion = "1"\n')
    _crate(root, "gamma", "0.0.1", "pub fn broken() -> u8 { \"not a number\" }\n")
    return root


def _records(path: str) -> dict[str, dict]:
    return {r["crate"]: r for r in map(json.loads, open(path, encoding="utf-8"))}


def test_a_vendored_directory_builds_offline_and_each_suite_is_recorded(vendored, tmp_path):
    from meap_data.rust.toolchain import find_toolchain

    out = str(tmp_path / "crates.jsonl")
    summary = crates.survey(vendored, out, find_toolchain(), jobs=1, progress=None)
    records = _records(out)
    assert list(records) == ["alpha", "beta", "gamma"] and summary.crates == 3 and summary.built == 2
    alpha = records["alpha"]
    assert alpha["license"] == "MIT OR Apache-2.0" and alpha["version"] == "0.1.0" and alpha["package"] is None
    assert alpha["rs_files"] == ["src/lib.rs", "tests/ties.rs"] and alpha["build"] == {"status": "passed"}
    suites = {s["suite"]: s for s in alpha["tests"]["suites"]}
    assert set(suites) == {"lib:alpha:$CRATE/src/lib.rs", "test:ties:$CRATE/tests/ties.rs"}
    assert suites["lib:alpha:$CRATE/src/lib.rs"]["status"] == "passed"
    assert suites["lib:alpha:$CRATE/src/lib.rs"]["passed"] == 2
    ties = suites["test:ties:$CRATE/tests/ties.rs"]
    assert ties["status"] == "failed" and ties["passed"] == 1 and ties["failed"] == 1
    failed = [c for c in ties["cases"] if c["outcome"] == "failed"]
    assert failed[0]["name"] == "deliberately_wrong" and "the packaged test that fails" in failed[0]["message"]
    assert alpha["tests"]["status"] == "failed" and summary.tests_failed == 1
    # beta resolves alpha from the directory; its dev-dependency is not there, so the
    # library builds without it and the tests say what is missing.
    beta = records["beta"]
    assert beta["build"] == {"status": "passed", "without_dev_dependencies": True}
    assert beta["tests"] == {"status": "unresolved", "missing": ["not-vendored"], "suites": []}
    gamma = records["gamma"]
    assert gamma["build"]["status"] == "failed" and any("E0308" in e for e in gamma["build"]["errors"])
    assert gamma["tests"]["status"] == "not_run"
    assert str(vendored) not in open(out, encoding="utf-8").read()  # machine paths normalised


def test_records_are_the_same_bytes_for_any_jobs(vendored, tmp_path):
    from meap_data.rust.toolchain import find_toolchain

    one, two = str(tmp_path / "one.jsonl"), str(tmp_path / "two.jsonl")
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("a user's file")
    crates.survey(vendored, one, find_toolchain(), jobs=1, progress=None, work_dir=str(work))
    crates.survey(vendored, two, find_toolchain(), jobs=2, progress=None, only=["gamma", "alpha", "beta"])
    assert open(one, "rb").read() == open(two, "rb").read()
    assert os.listdir(work) == ["keep.txt"]  # only its own scratch folder is removed


def test_dev_dependency_tables_and_their_targets_are_removed():
    text = ("[package]\nname = \"x\"\n\n[dependencies.serde]\nversion = \"1\"\n\n[dev-dependencies]\nrand = \"0.8\"\n\n"
            "[dev-dependencies.criterion]\nversion = \"0.3\"\n\n[[bench]]\nname = \"speed\"\nharness = false\n\n"
            "[target.'cfg(unix)'.dev-dependencies.libc]\nversion = \"0.2\"\n\n[features]\ndefault = []\n")
    stripped = crates.without_dev_dependencies(text)
    assert "serde" in stripped and "[features]" in stripped and "default = []" in stripped
    assert "rand" not in stripped and "criterion" not in stripped and "bench" not in stripped
    assert "libc" not in stripped


def test_missing_directory_and_unknown_crate_names_are_clear_errors(vendored, tmp_path):
    with pytest.raises(MeapDataError, match="no such directory of crate sources"):
        crates.discover(tmp_path / "nowhere")
    with pytest.raises(MeapDataError, match="no crate named zeta"):
        crates.discover(vendored, only=["alpha", "zeta"])


@pytest.mark.skipif(not os.path.isdir(os.path.join(crates.DEBIAN_REGISTRY, "itoa-1.0.1")),
                    reason="Debian's librust-itoa-dev is not installed (pipelines/install_debian_crates.sh)")
def test_a_debian_packaged_crate_builds_and_passes_its_tests(tmp_path):
    from meap_data import cli

    out = str(tmp_path / "debian.jsonl")
    assert cli.main(["rust", "crates", "--crates", "itoa", "--output", out, "-q"]) == 0
    (record,) = _records(out).values()
    assert record["package"] == "librust-itoa-dev" and record["license"] == "MIT OR Apache-2.0"
    assert record["build"]["status"] == "passed" and record["tests"]["status"] == "passed"
    assert record["tests"]["passed"] >= 5
