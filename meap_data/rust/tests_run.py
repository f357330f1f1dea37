"""Run a program's tests and record the outcome: ``rust harvest --tests``.

Single files: ``rustc --test`` then the test binary; crates: ``cargo test --offline``.
Both run one test thread (``--test-threads=1``: a stable order) with ``RUST_BACKTRACE=0``,
under the harvest's time limit. libtest's human output is parsed into

    {status: passed|failed|compile_error|timed_out|no_tests, passed, failed, ignored,
     cases: [{name, outcome: passed|failed|ignored, message, failure}]}

where ``message`` is the panic text (thread ids and machine paths normalised) and
``failure`` tells a wrong answer (``assertion``: an assert failed) from a ``panic``
(anything else: an unwrap on None, an index out of bounds...). A correct solution, a
compile error, a wrong answer and a panic therefore give four different records.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from meap_data.rust import diagnostics as diag
from meap_data.rust.toolchain import Normaliser, Toolchain, compiler_env, home_dir as _home, run_compiler

_CASE = re.compile(r"^test (?P<name>.+?) \.\.\. (?P<outcome>ok|FAILED|ignored)\b", re.M)
_FAILURE_BLOCK = re.compile(r"^---- (?P<name>.+?) stdout ----\n(?P<body>.*?)(?=^---- |^failures:$|\Z)", re.M | re.S)
_NOTE = re.compile(r"^note: run with `RUST_BACKTRACE=1`.*$\n?", re.M)
_OUTCOME = {"ok": "passed", "FAILED": "failed", "ignored": "ignored"}
TEST_ENV = {"RUST_BACKTRACE": "0"}


def parse_libtest(stdout: str, normaliser: Normaliser | None = None) -> dict[str, Any]:
    """Cases and counts from libtest's human output (one or several test binaries)."""
    messages = {}
    for m in _FAILURE_BLOCK.finditer(stdout):
        text = _NOTE.sub("", m["body"]).strip("\n")
        messages[m["name"]] = normaliser.text(text) if normaliser else text
    cases = []
    for m in _CASE.finditer(stdout):
        outcome = _OUTCOME[m["outcome"]]
        name = m["name"]
        case: dict[str, Any] = {"name": name, "outcome": outcome, "message": None}
        if outcome == "failed":
            message = messages.get(name, "")
            case["message"] = message
            case["failure"] = "assertion" if re.search(r"panicked at [^\n]*\n\s*assertion", message) else "panic"
        cases.append(case)
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "ignored")}
    status = "failed" if counts["failed"] else ("passed" if counts["passed"] else "no_tests")
    return {"status": status, **counts, "cases": cases}


def _outcome(status: str, argv: list[str], **extra) -> dict[str, Any]:
    return {"status": status, "passed": 0, "failed": 0, "ignored": 0, "cases": [], "argv": argv, **extra}


def file_tests(path: Path, base: Path, toolchain: Toolchain, *, edition: str, time_limit_s: float,
               extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Build a single file's tests (``rustc --test``) and run them."""
    rel = path.relative_to(base).as_posix()
    with tempfile.TemporaryDirectory(prefix="meap-rust-test-") as tmp:
        binary = Path(tmp) / "tests"
        normaliser = Normaliser({str(base): "$SRC", tmp: "$TMP", toolchain.sysroot: "$SYSROOT", _home(): "$HOME"})
        build = ["rustc", "--edition", edition, "--test", rel, "-o", "$TMP/tests"]
        run_argv = ["$TMP/tests", "--test-threads=1"]
        env = compiler_env({**(extra_env or {}), **TEST_ENV}, Path(tmp))
        built = run_compiler([toolchain.rustc, "--edition", edition, "--test", rel, "-o", str(binary)], base, env,
                             time_limit_s)
        if built.timed_out:
            return _outcome("timed_out", build)
        if built.exit_code != 0:
            return _outcome("compile_error", build)
        ran = run_compiler([str(binary), "--test-threads=1"], base, env, time_limit_s)
        if ran.timed_out:
            return _outcome("timed_out", run_argv)
        result = parse_libtest(diag.decode(ran.stdout)[0], normaliser)
        return {**result, "argv": run_argv}


def crate_tests(copy: Path, rel: str, target: Path, toolchain: Toolchain, *, time_limit_s: float,
                normaliser: Normaliser) -> dict[str, Any]:
    """``cargo test --offline`` in a crate copy (``target``: its target dir)."""
    argv = ["cargo", "test", "--offline", "--", "--test-threads=1"]
    ran = run_compiler([toolchain.cargo, "test", "--offline", "--target-dir", str(target), "--",
                        "--test-threads=1"], copy, compiler_env(TEST_ENV, target.parent), time_limit_s)
    if ran.timed_out:
        return _outcome("timed_out", argv)
    stdout = diag.decode(ran.stdout)[0]
    if ran.exit_code != 0 and "running " not in stdout:
        return _outcome("compile_error", argv)
    return {**parse_libtest(stdout, normaliser), "argv": argv}
