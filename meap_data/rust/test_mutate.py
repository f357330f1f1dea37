"""Test-failure repair examples from real crates: ``meap-data rust mutate --crates FILE --tests``.

For each crate with a test suite that passed in ``meap-data rust crates`` (suites that
fail unmutated are not run), the semantic
operators of :mod:`meap_data.rust.semantic` pick up to ``max_mutants`` sites in the
library's files (seeded, spread over files and operators, at most one per line). All of
them go into one *mutant schema* of the crate, built once; ``cargo check`` first drops
the sites whose schema does not compile (their line has an error), then
``cargo test --no-run`` builds the test binaries. Each mutant is then run like
``cargo test`` would run it, with ``MEAP_MUTANT=ID``: the suites in cargo's order (the
library's unit tests first), one test thread, stopping at the first failing suite, each
under ``5 x`` its unmutated time (at least 1 s); suites slower than 5 s unmutated are left
out (a looping mutant would hold a worker 25 s per try).

A mutant is kept when a suite fails with at least one failed test and a second run of
that suite fails the same tests with the same messages (a timeout, a crash without
libtest's summary, all tests passing, or a *flaky* failure drop it, counted by reason). Its record
has the plain mutant's window as ``source`` (whole file or enclosing item, as for
compile-error mutants), the original's window as ``fixed_source`` and the failing suite's
outcome as ``tests`` (test names, assertion messages and panics, their ``file:line:col``
mapped from the schema to the plain mutant). Byte-identical across runs and ``--jobs``
as long as the crate's tests are deterministic: a test whose message depends on hash
order (``HashMap``'s random seed) can pass the flaky check in one run and not the next.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

from meap_data.errors import MeapDataError
from meap_data.keys import hash64
from meap_data.progress import Progress
from meap_data.rust.crate_mutate import (
    CHECK_TIME_LIMIT_S, DEFAULT_CONTEXT_LINES, cargo_check, compiled_files, finished_crates, select_crates,
    timed_out, unmodified_check_failure,
)
from meap_data.rust.crates import DEBIAN_REGISTRY, CrateSource, build_tests, copy_crate, map_crates, run_suite
from meap_data.rust.items import context_window, item_blocks
from meap_data.rust.lexer import line_of, tokenize
from meap_data.rust.records import SCHEMA_VERSION, make_key, write_records_keeping_partial
from meap_data.rust.semantic import (
    ENV_VAR, OPERATORS, SemanticSite, helper_source, map_location, schema_text, sites_in_bodies,
)
from meap_data.rust.tests_run import TEST_ENV
from meap_data.rust.toolchain import Normaliser, Toolchain

DEFAULT_MAX_MUTANTS = 80
DEFAULT_PER_OPERATOR = 8
#: A mutant's suite may run this many times its unmutated time (at least MIN_RUN_S).
SLOWDOWN = 5.0
MIN_RUN_S = 1.0
#: Suites slower than this unmutated (seconds) are not run: a mutant that loops would
#: hold a worker for SLOWDOWN times as long, and a few such crates would dominate a run.
MAX_SUITE_S = 5.0
SCHEMA_ROUNDS = 6
_LOCATION = re.compile(r"(?P<file>[A-Za-z0-9_./-]+\.rs):(?P<line>\d+):(?P<col>\d+)")


@dataclasses.dataclass(frozen=True)
class Planned:
    """A mutant of the schema: its id (1-based), file and site."""

    id: int
    file: str
    site: SemanticSite


def library_root(copy: Path) -> str | None:
    """The crate's library root file, relative (``[lib] path`` or ``src/lib.rs``)."""
    try:
        manifest = tomllib.loads((copy / "Cargo.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    path = (manifest.get("lib") or {}).get("path", "src/lib.rs")
    return path if (copy / path).is_file() else None


def plan(crate_key: str, texts: dict[str, str], *, seed: int, per_operator: int, max_mutants: int) -> list[Planned]:
    """Up to ``max_mutants`` sites: per file, each operator's sites in a seeded order
    (at most ``per_operator``), taken round-robin over files, one per line."""
    queues = []
    for file in sorted(texts):
        by_op = sites_in_bodies(texts[file])
        picked = []
        for name in OPERATORS:
            sites = by_op[name]
            order = list(range(len(sites)))
            random.Random(hash64("meap-test-mutate", seed, crate_key, file, name)).shuffle(order)
            picked.append([sites[i] for i in order[:per_operator]])
        interleaved = [s for group in zip(*[g + [None] * (per_operator - len(g)) for g in picked]) for s in group
                       if s is not None]
        queues.append((file, interleaved))
    out: list[Planned] = []
    used: set[tuple[str, int]] = set()
    depth = 0
    while len(out) < max_mutants and any(depth < len(q) for _, q in queues):
        for file, queue in queues:
            if depth < len(queue) and len(out) < max_mutants:
                site = queue[depth]
                if (file, site.line) not in used:
                    used.add((file, site.line))
                    out.append(Planned(len(out) + 1, file, site))
        depth += 1
    return out


@dataclasses.dataclass
class TestCrateResult:
    key: str
    planned: int = 0
    built: int = 0
    runs: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    records: list = dataclasses.field(default_factory=list)
    error: str | None = None

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


def _suite_order(name: str) -> tuple[int, str]:
    target_kind = name.split(":", 1)[0]
    return ({"lib": 0, "bin": 1, "test": 2}.get(target_kind, 3), name)


def suite_argv(name: str) -> list[str]:
    """The cargo command that runs one suite (``KIND:NAME:SRC``)."""
    target_kind, target = name.split(":")[:2]
    select = ["--lib"] if target_kind == "lib" else [f"--{target_kind.split('/')[0]}", target]
    return ["cargo", "test", "--offline", *select, "--", "--test-threads=1"]


def mutate_tests_crate(crate: CrateSource, toolchain: Toolchain, scratch: Path, cargo_home: Path, target: Path, *,
                       seed: int, per_operator: int, max_mutants: int, context_lines: int,
                       time_limit_s: float) -> TestCrateResult:
    """The kept test-failure mutants of one crate, in mutant id order."""
    result = TestCrateResult(crate.key)
    made = copy_crate(crate, scratch, target, toolchain, cargo_home, TEST_ENV)
    copy, normaliser, env = made.path, made.normaliser, made.env
    try:
        root = library_root(copy)
        if root is None:
            result.error = "no library target"
            return result
        since = time.time() - 1
        result.error = unmodified_check_failure(cargo_check(copy, toolchain, env, normaliser, time_limit_s),
                                                time_limit_s)
        if result.error:
            return result
        files = [f for f in compiled_files(target, copy, since)
                 if not f.startswith(("src/bin/", "examples/", "tests/", "benches/")) and f != "src/main.rs"]
        originals = {f: (copy / f).read_text(encoding="utf-8", errors="replace") for f in files}
        planned = plan(crate.key, originals, seed=seed, per_operator=per_operator, max_mutants=max_mutants)
        result.planned = len(planned)
        if not planned:
            result.error = "no mutation sites"
            return result
        no_std = bool(re.search(r"#!\[\s*no_std\s*\]|#!\[\s*cfg_attr\([^]]*no_std", originals.get(root, "")))
        root_text = originals.get(root) or (copy / root).read_text(encoding="utf-8", errors="replace")
        live = _compile_schema(copy, root, root_text, originals, planned, no_std, toolchain, env, normaliser,
                               time_limit_s, result)
        result.built = len(live)
        if not live:
            return result
        step, binaries = build_tests(copy, toolchain, env, normaliser, time_limit_s)
        if step["status"] != "passed":
            result.error = (timed_out("building the mutant schema's tests", time_limit_s)
                            if step["status"] == "timed_out" else "the mutant schema's tests do not build")
            result.drop("schema_tests_do_not_build", len(live))
            return result
        binaries.sort(key=lambda b: _suite_order(b[0]))
        baseline = []
        for name, binary in binaries:
            started = time.perf_counter()
            suite = run_suite(name, binary, copy, {**env, ENV_VAR: "0"}, normaliser, time_limit_s)
            seconds = time.perf_counter() - started
            if suite["status"] in ("passed", "no_tests") and suite["passed"] and seconds <= MAX_SUITE_S:
                baseline.append((name, binary, min(time_limit_s, max(MIN_RUN_S, SLOWDOWN * seconds))))
            elif seconds > MAX_SUITE_S:
                result.drop("slow_suites_not_run")
        if not baseline:
            result.error = "no suite passes in under 5 s with the schema and no mutant live"
            result.drop("no_passing_suite", len(live))
            return result
        by_line = {(q.file, q.site.line): q for q in live}
        for p in live:
            outcome = None
            ran = []
            for name, binary, limit in baseline:
                result.runs += 1
                ran.append(name)
                suite = run_suite(name, binary, copy, {**env, ENV_VAR: str(p.id)}, normaliser, limit)
                if suite["status"] in ("timed_out", "crashed") or suite["failed"]:
                    outcome, failing = suite, (name, binary, limit)
                    break
            if outcome is None:
                result.drop("survived")
            elif outcome["status"] == "timed_out":
                result.drop("timed_out")
            elif not outcome["failed"]:
                result.drop("crashed")
            elif _failures(run_suite(*failing[:2], copy, {**env, ENV_VAR: str(p.id)}, normaliser,
                                     failing[2])) != _failures(outcome):
                result.drop("flaky")  # a second run failed differently: hash order, time, threads...
            else:
                result.records.append(_record(crate, p, originals[p.file], outcome, ran, seed, context_lines,
                                              toolchain, time_limit_s, by_line))
        return result
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _compile_schema(copy: Path, root: str, root_text: str, originals: dict[str, str], planned: list[Planned],
                    no_std: bool, toolchain: Toolchain, env: dict[str, str], normaliser: Normaliser,
                    time_limit_s: float, result: TestCrateResult) -> list[Planned]:
    """Write the schema and drop the sites on lines ``cargo check`` rejects, until it
    passes; the live mutants."""
    live = list(planned)
    for _ in range(SCHEMA_ROUNDS):
        by_file: dict[str, list[Planned]] = {}
        for p in live:
            by_file.setdefault(p.file, []).append(p)
        for file, text in originals.items():
            new = schema_text(text, [(p.id, p.site) for p in by_file.get(file, [])])
            if file == root:
                new += helper_source(no_std)
            (copy / file).write_text(new, encoding="utf-8")
        if root not in originals:
            (copy / root).write_text(root_text + helper_source(no_std), encoding="utf-8")
        check = cargo_check(copy, toolchain, env, normaliser, time_limit_s)
        if check.exit_code == 0:
            return live
        if check.timed_out:
            result.error = timed_out("cargo check of the mutant schema", time_limit_s)
            result.drop("schema_does_not_compile", len(live))
            return []
        bad_lines = {(d["primary"]["file"], line) for d in check.diagnostics
                     if str(d.get("level", "")).startswith("error") and d.get("primary")
                     for line in range(d["primary"]["line"], (d["primary"].get("line_end") or d["primary"]["line"]) + 1)}
        keep = [p for p in live if (p.file, p.site.line) not in bad_lines]
        if len(keep) == len(live):
            result.error = "the mutant schema does not compile for a reason no site explains"
            result.drop("schema_does_not_compile", len(live))
            return []
        result.drop("does_not_compile", len(live) - len(keep))
        live = keep
    result.drop("schema_does_not_compile", len(live))
    return []


def _failures(suite: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(c["name"], c["message"]) for c in suite["cases"] if c["outcome"] == "failed"]


def _map_message(text: str, p: Planned, by_line: dict[tuple[str, int], Planned]) -> str:
    """Panic locations (``file:line:col``) of the schema as the plain mutant has them."""
    def repl(m: re.Match) -> str:
        line, col = int(m["line"]), int(m["col"])
        on = by_line.get((m["file"], line))
        if on is None and m["file"] != p.file:
            return m[0]
        line, col = map_location((p.id, p.site), (on.id, on.site) if on else None, line, col)
        return f"{m['file']}:{line}:{col}"
    return _LOCATION.sub(repl, text)


def _record(crate: CrateSource, p: Planned, original: str, outcome: dict[str, Any], suites: list[str], seed: int,
            context_lines: int, toolchain: Toolchain, time_limit_s: float,
            by_line: dict[tuple[str, int], Planned]) -> dict[str, Any]:
    site = p.site
    mutant = site.apply(original)
    toks = tokenize(original)
    window = context_window(original, item_blocks(original, toks), site.start, max(site.end, site.start + 1),
                            context_lines)
    if window is None:  # an item longer than the budget: the enclosing lines
        lo = original.rfind("\n", 0, max(0, site.start - 2000)) + 1
        window = (lo, original.find("\n", site.end) + 1 or len(original))
    lo, hi = window
    delta = len(mutant) - len(original)
    cases = [{**c, "message": _map_message(c["message"], p, by_line) if c.get("message") else c.get("message")}
             for c in outcome["cases"]]
    argv = suite_argv(outcome["suite"])
    return {
        "schema_version": SCHEMA_VERSION,
        "key": make_key(f"{crate.key}/{p.file}-{site.operator}-{p.id}"),
        "origin": "mutation",
        "tool": "cargo",
        "source": mutant[lo:hi + delta],
        "source_path": f"$SRC/{p.file}",
        "edition": crate.edition,
        "toolchain": toolchain.version,
        "argv": ["cargo", "check", "--offline"],
        "argv_json": ["cargo", "check", "--offline", "--message-format=json"],
        "env": {},
        "time_limit_s": time_limit_s,
        "exit_code": 0,
        "timed_out": False,
        "diagnostics": [],
        "rendered": "",
        "problems": [],
        "produced_codes": [],
        "fixed_source": original[lo:hi],
        "fix_edition": crate.edition,
        "fix_compiles": True,
        "tests": {"status": "failed", "passed": outcome["passed"], "failed": outcome["failed"],
                  "ignored": outcome["ignored"], "cases": cases, "argv": argv},
        "mutation": {
            "operator": site.operator,
            "family": "semantic",
            "line": site.line,
            "program": f"{crate.key}/{p.file}",
            "seed": seed,
            "from": {"crate": crate.key, "path": p.file},
        },
        "crate": {
            "name": crate.name, "version": crate.version, "package": crate.package, "license": crate.license,
            "file": p.file, "lines": [line_of(mutant, lo), line_of(mutant, max(lo, hi + delta - 1))],
            "fixed_lines": [line_of(original, lo), line_of(original, max(lo, hi - 1))],
            "file_lines": original.count("\n") + (not original.endswith("\n")), "suites": suites,
        },
    }


@dataclasses.dataclass(frozen=True)
class TestMutateSummary:
    """Counts of a test-failure mutation run; ``seconds`` wall."""

    crates: int
    skipped: dict[str, int]
    planned: int
    built: int
    runs: int
    kept: int
    dropped: dict[str, int]
    by_operator: dict[str, int]
    by_failure: dict[str, int]
    seconds: float

    def line(self) -> str:
        return (f"mutate --crates --tests: {self.crates} crates ({sum(self.skipped.values())} skipped), "
                f"{self.planned} mutants planned, {self.built} compiled in their schema, {self.runs} suite runs, "
                f"{self.kept} kept (fail a test); {self.seconds:.0f} s")


def mutate_tests(records_path: str, output: str, toolchain: Toolchain, *, crates_dir: str = DEBIAN_REGISTRY,
                 seed: int = 0, per_operator: int = DEFAULT_PER_OPERATOR, max_mutants: int = DEFAULT_MAX_MUTANTS,
                 context_lines: int = DEFAULT_CONTEXT_LINES, jobs: int = 2, limit: int | None = None,
                 only: list[str] | None = None, time_limit_s: float = CHECK_TIME_LIMIT_S,
                 work_dir: str | None = None, resume: bool = False,
                 progress: Callable[[str], None] | None | str = "stderr") -> TestMutateSummary:
    """Test-failure mutants of every crate whose tests pass (``jobs`` crates at a time).
    ``resume``: keep the crates an interrupted run finished (``OUTPUT.partial``) and do
    the rest; the output is the same as an uninterrupted run's (the counts other than
    ``kept`` leave the kept crates out)."""
    if jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {jobs}")
    if max_mutants < 1 or per_operator < 1:
        raise MeapDataError("--max-mutants and --per-operator must be at least 1")
    if toolchain.cargo is None:
        raise MeapDataError("cargo not found on PATH; mutate --crates --tests builds and runs tests with cargo")
    start = time.monotonic()
    root = Path(records_path if Path(records_path).is_dir() else crates_dir).resolve()
    crates = select_crates(records_path, root, tests_passed=True, only=only)[:limit]
    done, earlier = finished_crates(output, crates) if resume else (0, [])
    bar = Progress(len(crates) - done, "mutate --tests", sink=progress)
    totals = {"planned": 0, "built": 0, "runs": 0, "kept": 0}
    skipped: dict[str, int] = {}
    dropped: dict[str, int] = {}
    by_operator: dict[str, int] = {}
    by_failure: dict[str, int] = {}

    def one(crate: CrateSource, scratch: Path, home: Path, target: Path) -> TestCrateResult:
        return mutate_tests_crate(crate, toolchain, scratch, home, target, seed=seed, per_operator=per_operator,
                                  max_mutants=max_mutants, context_lines=context_lines, time_limit_s=time_limit_s)

    def kept() -> Iterator[dict[str, Any]]:
        resumed = TestCrateResult("resumed", records=earlier)
        for result in itertools.chain([resumed], map_crates(crates[done:], root, one, jobs=jobs, work_dir=work_dir,
                                                            prefix="meap-test-mutate-")):
            if result.error:
                skipped[result.error] = skipped.get(result.error, 0) + 1
            for k in ("planned", "built", "runs"):
                totals[k] += getattr(result, k)
            for reason, n in result.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            for record in result.records:
                totals["kept"] += 1
                op = record["mutation"]["operator"]
                by_operator[op] = by_operator.get(op, 0) + 1
                kinds = {c.get("failure", "panic") for c in record["tests"]["cases"] if c["outcome"] == "failed"}
                kind = "assertion" if kinds == {"assertion"} else "panic" if kinds == {"panic"} else "both"
                by_failure[kind] = by_failure.get(kind, 0) + 1
                yield record
            if result is not resumed:
                bar.update(1, f"{totals['kept']} kept")

    try:
        write_records_keeping_partial(output, kept())
    finally:
        bar.close(f"{totals['kept']} kept")
    return TestMutateSummary(len(crates), dict(sorted(skipped.items())), totals["planned"], totals["built"],
                             totals["runs"], totals["kept"], dict(sorted(dropped.items())),
                             dict(sorted(by_operator.items())), dict(sorted(by_failure.items())),
                             time.monotonic() - start)

