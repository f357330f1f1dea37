"""Judge a repair of a crate example in its crate: ``rust eval-repair`` for records of
``rust mutate --crates`` (compile errors) and ``--crates --tests`` (test failures).

A record holds a window of one file (``crate.fixed_lines`` of the original); outside the
window the mutant and the original agree, so a candidate fix is judged by writing the
original file with that window replaced by the candidate into a copy of the crate, then
``cargo check`` and, for a test-failure record, building the tests and running the suites
the record ran (``crate.suites``), in order. Copies and target dirs are kept per thread
and crate, so a crate's dependencies build once.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from meap_data.errors import MeapDataError
from meap_data.rust.crate_mutate import Check, cargo_check
from meap_data.rust.crates import CrateSource, build_tests, crate_copy_at, discover, run_suite, write_cargo_home
from meap_data.rust.tests_run import TEST_ENV
from meap_data.rust.toolchain import Normaliser, Toolchain


def splice(original: str, fixed_lines: list[int], window: str) -> str:
    """``original`` with its lines ``fixed_lines`` (first, last; 1-based) replaced by ``window``."""
    lines = original.splitlines(keepends=True)
    first, last = fixed_lines
    if window and not window.endswith("\n") and last < len(lines):
        window += "\n"
    return "".join(lines[:first - 1]) + window + "".join(lines[last:])


class CrateBench:
    """Copies of crates to judge candidates in; thread-safe (state per thread)."""

    def __init__(self, crates_dir: str, toolchain: Toolchain, time_limit_s: float, work_dir: str | None = None):
        if toolchain.cargo is None:
            raise MeapDataError("cargo not found on PATH; judging crate repairs needs cargo")
        self.root = Path(crates_dir).resolve()
        self.crates = {c.key: c for c in discover(self.root)}
        self.toolchain = toolchain
        self.time_limit_s = time_limit_s
        self.scratch = Path(tempfile.mkdtemp(prefix="meap-crate-judge-", dir=work_dir))
        self.home = write_cargo_home(self.scratch / "cargo-home", self.root)
        self.local = threading.local()

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def crate_of(self, record: dict[str, Any]) -> CrateSource:
        info = record["crate"]
        key = f"{info['name']}-{info['version']}"
        if key not in self.crates:
            raise MeapDataError(f"record {record['key']!r} comes from crate {key}, which is not in {self.root}; "
                                "pass the crate directory it was made from with --crates-dir")
        return self.crates[key]

    def _copy(self, crate: CrateSource) -> tuple[Path, Path]:
        if not hasattr(self.local, "dir"):
            self.local.dir = Path(tempfile.mkdtemp(prefix="worker-", dir=self.scratch))
        copy = self.local.dir / crate.key
        if not copy.exists():
            shutil.copytree(crate.path, copy, ignore=shutil.ignore_patterns("target", "Cargo.lock"))
        return copy, self.local.dir / "target"

    def judge(self, record: dict[str, Any], candidate: str) -> tuple[Check, dict[str, Any] | None]:
        """``cargo check`` of the crate with ``candidate`` in place of the record's
        window, and for a test-failure record the outcome of its suites (None when the
        record has no tests or the candidate does not compile)."""
        crate = self.crate_of(record)
        copy, target = self._copy(crate)
        path = copy / record["crate"]["file"]
        original = (crate.path / record["crate"]["file"]).read_text(encoding="utf-8", errors="replace")
        made = crate_copy_at(copy, crate, self.local.dir, target, self.toolchain, self.home, TEST_ENV)
        normaliser, env = made.normaliser, made.env
        path.write_text(splice(original, record["crate"]["fixed_lines"], candidate), encoding="utf-8")
        try:
            check = cargo_check(copy, self.toolchain, env, normaliser, self.time_limit_s)
            if "tests" not in record or check.exit_code != 0:
                return check, None
            return check, self._tests(record, copy, env, normaliser)
        finally:
            path.write_text(original, encoding="utf-8")

    def _tests(self, record: dict[str, Any], copy: Path, env: dict[str, str],
               normaliser: Normaliser) -> dict[str, Any]:
        argv = record["tests"]["argv"]
        step, binaries = build_tests(copy, self.toolchain, env, normaliser, self.time_limit_s)
        if step["status"] != "passed":
            status = "timed_out" if step["status"] == "timed_out" else "compile_error"
            return {"status": status, "passed": 0, "failed": 0, "ignored": 0, "cases": [], "argv": argv}
        by_name = dict(binaries)
        outcome: dict[str, Any] = {"status": "no_tests", "passed": 0, "failed": 0, "ignored": 0, "cases": []}
        for name in record["crate"].get("suites") or []:
            if name not in by_name:
                raise MeapDataError(f"record {record['key']!r}: suite {name!r} is not built by its crate here")
            outcome = run_suite(name, by_name[name], copy, env, normaliser, self.time_limit_s)
            if outcome["status"] != "passed":
                break
        outcome.pop("suite", None)
        if outcome["status"] == "crashed":
            outcome["status"] = "failed"
        return {**outcome, "argv": argv}
