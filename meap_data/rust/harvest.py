"""Compile Rust sources and record what the compiler said, reproducibly.

Each source is compiled twice with the same flags: once for the human-rendered stderr
(kept verbatim as ``rendered``) and once with machine-readable JSON (parsed into
``diagnostics``). Two runs, rather than stripping colour from JSON's ``rendered``
fields, because only a real human run shows exactly what a person sees: cargo's status
lines, an ICE's panic text, anything rustc writes outside a diagnostic.

Records are made reproducible by replacing machine-specific paths (the source root,
temp dirs, the sysroot, $HOME) with placeholders and scrubbing the random parts of
file names rustc invents (``long-type-<n>.txt``, ``rustc-ice-<time>-<pid>.txt``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import posixpath
import re
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from meap_data.errors import MeapDataError
from meap_data.progress import Progress
from meap_data.rust import diagnostics as diag
from meap_data.rust.records import SCHEMA_VERSION, make_key, write_records
from meap_data.rust.tests_run import crate_tests, file_tests
from meap_data.rust.toolchain import (  # noqa: F401  (re-exported: harvest's public names)
    Normaliser, RunOutput, Toolchain, compiler_env, find_toolchain, home_dir as _home, run_compiler,
)

EDITIONS = ("2015", "2018", "2021", "2024")
DEFAULT_TIME_LIMIT_S = 60.0

_SKIP_DIRS = {"target", ".git", ".hg", ".svn", "node_modules"}


# ------------------------------------------------------------------ normalising

# --------------------------------------------------------------------- compiling


@dataclasses.dataclass(frozen=True)
class Compiled:
    """The parts of a transcript record that come from compiling one source."""

    argv: list[str]
    argv_json: list[str]
    exit_code: int | None
    timed_out: bool
    diagnostics: list[dict[str, Any]]
    rendered: str
    problems: list[str]

    def record_fields(self) -> dict[str, Any]:
        produced: dict[str, None] = {}
        for d in self.diagnostics:
            if d.get("code"):
                produced.setdefault(d["code"], None)
        return {
            "argv": self.argv,
            "argv_json": self.argv_json,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "diagnostics": self.diagnostics,
            "rendered": self.rendered,
            "problems": self.problems,
            "produced_codes": list(produced),
        }


def compile_twice(
    argv: Sequence[str],
    argv_json: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    time_limit_s: float,
    normaliser: Normaliser,
    json_on: str,
    between: Callable[[], None] | None = None,
) -> Compiled:
    """Run the human and the JSON command; parse the JSON, keep the human stderr verbatim.

    ``json_on`` is "stderr" for rustc and "stdout" for cargo; cargo's stderr in JSON
    mode still carries cargo's own errors (a broken manifest), parsed as text.
    ``between`` runs after the human run (cargo: empty the target dir so the JSON run
    compiles from scratch too). The recorded argv names the tool, not its absolute path.
    """
    display = normaliser.value([Path(argv[0]).name, *argv[1:]])
    display_json = normaliser.value([Path(argv_json[0]).name, *argv_json[1:]])
    killed = Compiled(display, display_json, None, True, [], "",
                      [f"compiler ran past the {time_limit_s:g} s time limit and was killed"])
    human = run_compiler(argv, cwd, env, time_limit_s)
    if human.timed_out:
        return killed
    if between is not None:
        between()
    machine = run_compiler(argv_json, cwd, env, time_limit_s)
    if machine.timed_out:
        return killed
    rendered, problems = diag.decode(human.stderr)
    stream = machine.stderr if json_on == "stderr" else machine.stdout
    found: list[diag.Diagnostic] = []
    if stream.strip():
        parsed = diag.parse_json(diag.decode(stream)[0])
        found += parsed.diagnostics
        problems += parsed.problems
    if json_on == "stdout" and machine.stderr.strip():
        found += diag.parse_human(diag.decode(machine.stderr)[0]).diagnostics
    return Compiled(
        display, display_json, human.exit_code, False,
        [normaliser.value(d.to_dict()) for d in found],
        normaliser.text(diag.strip_ansi(rendered.replace("\r\n", "\n"))),
        [normaliser.text(p) for p in problems],
    )


def has_main(source: str) -> bool:
    """True when the source defines ``fn main`` (else it is compiled as a library)."""
    return re.search(r"(?m)^\s*(?:pub\s+)?(?:async\s+)?fn\s+main\s*\(", source) is not None


def rustc_flags(source: str, rel: str, out_dir: Path, *, edition: str, crate_type: str, emit: str) -> list[str]:
    """rustc's flags for one file: edition, ``--crate-type lib`` for a main-less source
    under ``crate_type`` "auto" (or "lib"), what to emit, where to, and the file."""
    flags = ["--edition", edition]
    if crate_type == "lib" or (crate_type == "auto" and not has_main(source)):
        flags += ["--crate-type", "lib"]
    return flags + [f"--emit={emit}", "--out-dir", str(out_dir), rel]


def compile_file(
    path: Path,
    base: Path,
    toolchain: Toolchain,
    *,
    edition: str,
    time_limit_s: float,
    extra_env: dict[str, str] | None = None,
    crate_type: str = "auto",
    emit: str = "metadata",
    source_placeholder: str = "$SRC",
) -> Compiled:
    """Compile one .rs file with rustc (``--emit=metadata``: type and borrow checking, no codegen).

    ``crate_type`` "auto" compiles a file without ``fn main`` as a library (so a snippet
    is not reported for lacking main); "bin" and "lib" force the choice. ``emit`` "obj"
    adds code generation (no linking), which post-monomorphization errors need.

    rustc runs in ``base`` with the path relative to it, so diagnostics name the file as
    ``source_path`` does; outputs go to a temp dir so the source tree stays untouched.
    """
    rel = path.relative_to(base).as_posix()
    source = path.read_text(encoding="utf-8", errors="replace")
    with tempfile.TemporaryDirectory(prefix="meap-rust-") as tmp:
        flags = rustc_flags(source, rel, Path(tmp) / "out", edition=edition, crate_type=crate_type, emit=emit)
        normaliser = Normaliser({str(base): source_placeholder, tmp: "$TMP", toolchain.sysroot: "$SYSROOT", _home(): "$HOME"})
        return compile_twice(
            [toolchain.rustc, *flags], [toolchain.rustc, "--error-format=json", *flags],
            cwd=base, env=compiler_env(extra_env, Path(tmp)), time_limit_s=time_limit_s,
            normaliser=normaliser, json_on="stderr",
        )


def compile_source(
    source: str,
    toolchain: Toolchain,
    *,
    edition: str,
    time_limit_s: float,
    extra_env: dict[str, str] | None = None,
    crate_type: str = "auto",
    emit: str = "metadata",
) -> Compiled:
    """Compile a source text as ``main.rs`` with one rustc run (``--error-format=json``).

    For rustc (not cargo) the human stderr is exactly the JSON diagnostics' ``rendered``
    texts in order (tested), so one run gives both, at half the cost of
    :func:`compile_file`'s two: what bulk producers (snippets, mutants) need.
    """
    with tempfile.TemporaryDirectory(prefix="meap-rust-") as tmp:
        base = Path(tmp) / "src"
        base.mkdir()
        (base / "main.rs").write_text(source, encoding="utf-8")
        flags = rustc_flags(source, "main.rs", Path(tmp) / "out", edition=edition, crate_type=crate_type, emit=emit)
        normaliser = Normaliser({str(base): "$SRC", tmp: "$TMP", toolchain.sysroot: "$SYSROOT", _home(): "$HOME"})
        display = normaliser.value(["rustc", *flags])
        display_json = normaliser.value(["rustc", "--error-format=json", *flags])
        run = run_compiler([toolchain.rustc, "--error-format=json", *flags], base,
                           compiler_env(extra_env, Path(tmp)), time_limit_s)
    if run.timed_out:
        return Compiled(display, display_json, None, True, [], "",
                        [f"compiler ran past the {time_limit_s:g} s time limit and was killed"])
    parsed = diag.parse_json(diag.decode(run.stderr)[0]) if run.stderr.strip() else None
    found = parsed.diagnostics if parsed else []
    rendered = "".join(d.rendered or "" for d in found)
    return Compiled(display, display_json, run.exit_code, False, [normaliser.value(d.to_dict()) for d in found],
                    normaliser.text(rendered), [normaliser.text(p) for p in (parsed.problems if parsed else [])])


def path_dependencies(crate: Path) -> list[Path]:
    """Directories of a crate's ``path = ...`` dependencies (all dependency tables)."""
    try:
        manifest = tomllib.loads((crate / "Cargo.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    tables = [manifest.get(k, {}) for k in ("dependencies", "dev-dependencies", "build-dependencies")]
    tables.append(manifest.get("workspace", {}).get("dependencies", {}))
    for target in manifest.get("target", {}).values():
        if isinstance(target, dict):
            tables += [target.get(k, {}) for k in ("dependencies", "dev-dependencies", "build-dependencies")]
    found = []
    for table in tables:
        if isinstance(table, dict):
            for spec in table.values():
                if isinstance(spec, dict) and isinstance(spec.get("path"), str):
                    found.append((crate / spec["path"]).resolve())
    return found


def workspace_root(crate: Path) -> Path | None:
    """The nearest directory at or above ``crate`` whose Cargo.toml has ``[workspace]``."""
    for d in (crate, *crate.parents):
        toml = d / "Cargo.toml"
        if toml.is_file():
            try:
                if "workspace" in tomllib.loads(toml.read_text(encoding="utf-8")):
                    return d
            except (OSError, tomllib.TOMLDecodeError):
                continue
    return None


def crate_copy_root(crate: Path) -> Path:
    """What to copy so the crate builds elsewhere: the crate widened to the common
    ancestor of its path dependencies (followed recursively) and its workspace root."""
    dirs, todo = {crate}, [crate]
    while todo:
        for dep in path_dependencies(todo.pop()):
            if dep not in dirs and (dep / "Cargo.toml").is_file():
                dirs.add(dep)
                todo.append(dep)
    ws = workspace_root(crate)
    if ws is not None:
        dirs.add(ws)
    return Path(os.path.commonpath([str(d) for d in dirs]))


def compile_crate(crate: Path, rel: str, toolchain: Toolchain, *, time_limit_s: float,
                  tests: bool = False) -> tuple[Compiled, dict[str, Any] | None]:
    """``cargo check --offline`` a crate directory, on a copy so the source tree stays
    untouched; with ``tests``, then ``cargo test`` on the copy (all test targets built).

    The copy holds the crate's path dependencies and workspace root too
    (:func:`crate_copy_root`), so they keep working. Both check runs use the same target
    dir (emptied in between) so paths in the two outputs agree, and each compiles from
    scratch like a person's first ``cargo check``.
    """
    if toolchain.cargo is None:
        raise MeapDataError(f"cargo not found on PATH, needed for crate {crate}; install it with rustup")
    root = crate_copy_root(crate)
    with tempfile.TemporaryDirectory(prefix="meap-rust-") as tmp:
        copy_root = Path(tmp) / "src" / root.name
        shutil.copytree(root, copy_root, ignore=shutil.ignore_patterns(*_SKIP_DIRS))
        copy = copy_root / crate.relative_to(root)
        target = Path(tmp) / "target"
        # The default targets only: with --all-targets a failing crate stops at whichever of
        # bin and bin-test cargo happens to build first, so the transcript would vary.
        # ``cargo test`` (tests=True) builds and reports the test targets.
        flags = ["check", "--offline", "--target-dir", str(target)]
        paths = {str(copy): f"$SRC/{rel}", tmp: "$TMP", toolchain.sysroot: "$SYSROOT", _home(): "$HOME"}
        if root != crate:
            paths[str(copy_root)] = "$SRC/" + posixpath.normpath(f"{rel}/{os.path.relpath(root, crate)}")
        normaliser = Normaliser(paths)
        compiled = compile_twice(
            [toolchain.cargo, *flags], [toolchain.cargo, *flags, "--message-format=json"],
            cwd=copy, env=compiler_env(None, Path(tmp)), time_limit_s=time_limit_s,
            normaliser=normaliser, json_on="stdout",
            between=lambda: shutil.rmtree(target, ignore_errors=True),
        )
        outcome = crate_tests(copy, rel, target, toolchain, time_limit_s=time_limit_s,
                              normaliser=normaliser) if tests else None
    return compiled, outcome


# ------------------------------------------------------------------- discovery


@dataclasses.dataclass(frozen=True)
class SourceUnit:
    """One thing to compile: a .rs file (rustc) or a crate directory (cargo)."""

    path: Path  # absolute
    base: Path  # directory that $SRC stands for
    tool: str  # "rustc" or "cargo"

    @property
    def rel(self) -> str:
        return self.path.relative_to(self.base).as_posix()

    @property
    def source_path(self) -> str:
        return f"$SRC/{self.rel}"


def discover(sources: Iterable[str | os.PathLike[str]]) -> list[SourceUnit]:
    """Expand files and directories into compile units, sorted by source path.

    A directory with a Cargo.toml is a crate; any other directory is searched for
    crates and loose .rs files (files inside a crate belong to the crate). Paths are
    relative to the parent of each argument, so ``progs/`` gives ``$SRC/progs/...``.
    """
    units: dict[str, SourceUnit] = {}

    def add(unit: SourceUnit) -> None:
        other = units.get(unit.rel)
        if other is not None and other.path != unit.path:
            raise MeapDataError(
                f"two sources map to the same path {unit.source_path}: {other.path} and {unit.path}; "
                "pass them in separate harvest runs or rename one"
            )
        units[unit.rel] = unit

    for arg in sources:
        p = Path(arg).resolve()
        if p.is_file():
            if p.suffix != ".rs":
                raise MeapDataError(f"{arg}: not a .rs file or a directory; harvest takes Rust sources and crate directories")
            add(SourceUnit(p, p.parent, "rustc"))
        elif p.is_dir():
            base = p.parent
            if (p / "Cargo.toml").is_file():
                add(SourceUnit(p, base, "cargo"))
                continue
            for unit in _walk(p, base):
                add(unit)
        else:
            raise MeapDataError(f"{arg}: no such file or directory; pass .rs files or directories")
    return [units[k] for k in sorted(units)]


def _walk(root: Path, base: Path) -> Iterator[SourceUnit]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root and (here / "Cargo.toml").is_file():
            dirnames[:] = []
            yield SourceUnit(here, base, "cargo")
            continue
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".rs"):
                yield SourceUnit(here / name, base, "rustc")


def _crate_files(crate: Path) -> dict[str, str]:
    files = {}
    for dirpath, dirnames, filenames in os.walk(crate):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in filenames:
            if name.endswith(".rs") or (name == "Cargo.toml" and Path(dirpath) == crate):
                p = Path(dirpath) / name
                files[p.relative_to(crate).as_posix()] = p.read_text(encoding="utf-8", errors="replace")
    return dict(sorted(files.items()))


def crate_edition(manifest: str) -> str:
    """The ``[package] edition`` of a Cargo.toml's text; cargo's default 2015 when absent."""
    try:
        package = tomllib.loads(manifest).get("package", {})
    except tomllib.TOMLDecodeError:
        return "2015"
    edition = str(package.get("edition", "2015")) if isinstance(package, dict) else "2015"
    return edition if edition in EDITIONS else "2015"


def crate_source(files: dict[str, str]) -> str:
    """All .rs files of a crate as one text, each after a ``// file: PATH`` line."""
    parts = [f"// file: {path}\n{text}" + ("" if text.endswith("\n") else "\n") for path, text in files.items() if path.endswith(".rs")]
    return "".join(parts)


# ---------------------------------------------------------------------- harvest


def transcript(unit: SourceUnit, toolchain: Toolchain, *, edition: str, time_limit_s: float,
               tests: bool = False) -> dict[str, Any]:
    """Compile one unit (and with ``tests`` run its tests) and return its transcript record."""
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": make_key(unit.rel),
        "origin": "harvest",
        "tool": unit.tool,
        "source_path": unit.source_path,
        "toolchain": toolchain.version,
        "time_limit_s": time_limit_s,
    }
    if unit.tool == "rustc":
        record["source"], source_problems = diag.decode(unit.path.read_bytes())
        record["edition"] = edition
        compiled = compile_file(unit.path, unit.base, toolchain, edition=edition, time_limit_s=time_limit_s)
        compiled.problems[:0] = [f"source: {p}" for p in source_problems]
        if tests:
            record["tests"] = file_tests(unit.path, unit.base, toolchain, edition=edition, time_limit_s=time_limit_s)
    else:
        files = _crate_files(unit.path)
        record["files"] = files
        record["source"] = crate_source(files)
        record["edition"] = crate_edition(files.get("Cargo.toml", ""))
        compiled, outcome = compile_crate(unit.path, unit.rel, toolchain, time_limit_s=time_limit_s, tests=tests)
        if outcome is not None:
            record["tests"] = outcome
    record.update(compiled.record_fields())
    return record


@dataclasses.dataclass(frozen=True)
class HarvestSummary:
    """Counts from one harvest run (seconds are wall-clock, for the log only)."""

    records: int
    failed: int  # non-zero exit
    timed_out: int
    seconds: float


def harvest(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    jobs: int = 2,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    edition: str = "2021",
    toolchain: Toolchain | None = None,
    progress: Callable[[str], None] | None | str = None,
    tests: bool = False,
) -> HarvestSummary:
    """Compile every source (``jobs`` at a time) and write records sorted by source path.

    ``edition`` applies to single files; crates use their Cargo.toml's edition. ``tests``:
    also build and run each source's tests (:mod:`meap_data.rust.tests_run`).
    """
    if edition not in EDITIONS:
        raise MeapDataError(f"--edition {edition!r} is not one of {', '.join(EDITIONS)}")
    if time_limit_s <= 0:
        raise MeapDataError(f"--time-limit must be positive seconds, got {time_limit_s}")
    units = discover(sources)
    if not units:
        raise MeapDataError(f"no .rs files or crates found under {', '.join(map(str, sources))}")
    toolchain = toolchain or find_toolchain()
    start = time.monotonic()
    counts = {"failed": 0, "timed_out": 0}

    def one(unit: SourceUnit) -> dict[str, Any]:
        return transcript(unit, toolchain, edition=edition, time_limit_s=time_limit_s, tests=tests)

    bar = Progress(len(units), "harvest: compiling", sink=progress)

    def ordered() -> Iterator[dict[str, Any]]:
        # map() yields in submission order whatever the completion order.
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for record in pool.map(one, units):
                counts["timed_out"] += record["timed_out"]
                counts["failed"] += bool(record["exit_code"])
                tested = f", tests {record['tests']['status']}" if "tests" in record else ""
                bar.update(1, f"{record['source_path']}: "
                           + ("timed out" if record["timed_out"] else f"exit {record['exit_code']}") + tested)
                yield record

    n = write_records(output, ordered())
    bar.close(f"{counts['failed']} did not compile")
    return HarvestSummary(n, counts["failed"], counts["timed_out"], time.monotonic() - start)
