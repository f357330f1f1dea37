"""Which crates of a directory of crate sources build offline and pass their own tests:
``meap-data rust crates``.

The default directory is Debian's packaged crate registry (``librust-*-dev`` packages
install each crate's published source under :data:`DEBIAN_REGISTRY`); any vendored
directory (``cargo vendor``: one ``NAME-VERSION`` folder with a ``Cargo.toml`` and a
``.cargo-checksum.json`` per crate) works the same. Nothing is installed or downloaded:
cargo runs ``--offline`` with a private ``CARGO_HOME`` whose only source is that
directory, so a crate whose dependencies are not there fails to resolve, and says so.

Each crate is copied to a scratch folder (the registry is read-only and cargo writes a
``Cargo.lock``), built (``cargo build``), then its test targets are built
(``cargo test --no-run``) and every test binary is run on its own, one test thread, so
each suite (the library's unit tests, each ``tests/*.rs``) gets its own outcome. Doc-tests
are not run: rustdoc compiles each one alone, minutes per crate, and mutation needs unit
tests.

One JSON line per crate, sorted by name and version, with provenance (crate, version,
Debian package, files) and the licence from ``Cargo.toml``; no timings in the records, so
two runs, with any ``--jobs``, write the same bytes.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import re
import shutil
import tempfile
import threading
import time
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from meap_data.errors import MeapDataError
from meap_data.progress import Progress
from meap_data.rust import diagnostics as diag
from meap_data.rust.tests_run import TEST_ENV, parse_libtest
from meap_data.rust.toolchain import Normaliser, Toolchain, compiler_env, run_compiler

DEBIAN_REGISTRY = "/usr/share/cargo/registry"
DPKG_INFO = "/var/lib/dpkg/info"
#: Seconds per cargo invocation (a build, a test build, one test binary).
DEFAULT_TIME_LIMIT_S = 300.0
#: Lines of cargo's error output kept in a failed build's record.
ERROR_LINES = 20


@dataclasses.dataclass(frozen=True)
class CrateSource:
    """One crate folder. ``rs_files``: its ``.rs`` files, relative, sorted; ``package``:
    the Debian package that installed it (None for a vendored folder)."""

    name: str
    version: str
    path: Path
    license: str | None
    edition: str
    package: str | None
    rs_files: tuple[str, ...]

    @property
    def key(self) -> str:
        return f"{self.name}-{self.version}"


def debian_packages(registry: Path, info_dir: str = DPKG_INFO) -> dict[str, str]:
    """``{crate folder name: Debian package}`` from dpkg's file lists (no dpkg call)."""
    owners: dict[str, str] = {}
    prefix = str(registry).rstrip("/") + "/"
    try:
        names = sorted(os.listdir(info_dir))
    except OSError:
        return owners
    for name in names:
        if not (name.startswith("librust-") and name.endswith(".list")):
            continue
        package = name[:-len(".list")].split(":")[0]
        with open(os.path.join(info_dir, name), encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\n")
                if line.startswith(prefix) and "/" not in line[len(prefix):]:
                    owners.setdefault(line[len(prefix):], package)
    return owners


def discover(root: str | os.PathLike, only: Iterable[str] | None = None) -> list[CrateSource]:
    """The crates under ``root`` (one folder each, holding ``Cargo.toml``), sorted by
    (name, version); ``only``: crate names to keep."""
    root = Path(root)
    if not root.is_dir():
        hint = (" (install crates with pipelines/install_debian_crates.sh or apt-get install librust-NAME-dev)"
                if str(root) == DEBIAN_REGISTRY else "")
        raise MeapDataError(f"{root}: no such directory of crate sources{hint}")
    wanted = set(only) if only else None
    owners = debian_packages(root)
    crates = []
    for folder in sorted(p for p in root.iterdir() if (p / "Cargo.toml").is_file()):
        try:
            manifest = tomllib.loads((folder / "Cargo.toml").read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise MeapDataError(f"{folder / 'Cargo.toml'}: not valid TOML ({e})") from e
        package = manifest.get("package") or {}
        name, version = package.get("name"), str(package.get("version", ""))
        if not name or (wanted is not None and name not in wanted):
            continue
        licence = package.get("license") or (f"file:{package['license-file']}" if package.get("license-file") else None)
        files = tuple(sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.rs")
                             if "target" not in p.relative_to(folder).parts))
        crates.append(CrateSource(name, version, folder, licence, str(package.get("edition", "2015")),
                                  owners.get(folder.name), files))
    crates.sort(key=lambda c: (c.name, c.version))
    if wanted is not None:
        missing = sorted(wanted - {c.name for c in crates})
        if missing:
            raise MeapDataError(f"{root}: no crate named {', '.join(missing)}")
    return crates


def write_cargo_home(home: Path, registry: Path) -> Path:
    """A ``CARGO_HOME`` whose config replaces crates.io with ``registry`` (a directory
    source) and forbids the network."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        "[source.crates-io]\nreplace-with = \"local-crates\"\n\n"
        f"[source.local-crates]\ndirectory = {json.dumps(str(registry))}\n\n[net]\noffline = true\n",
        encoding="utf-8")
    return home


@dataclasses.dataclass(frozen=True)
class CrateCopy:
    """A crate copied to scratch space (``path``), with the ``target`` dir it builds
    into, the normaliser of its paths and the environment of its cargo runs."""

    path: Path
    target: Path
    normaliser: Normaliser
    env: dict[str, str]


def copy_crate(crate: CrateSource, work: Path, target: Path, toolchain: Toolchain, cargo_home: Path,
               extra_env: dict[str, str] | None = None) -> CrateCopy:
    """Copy ``crate`` to ``work/NAME-VERSION`` (the registry is read-only and cargo writes
    a ``Cargo.lock``); its paths normalise to ``$CRATE``, ``$TARGET``, ``$REGISTRY``."""
    copy = work / crate.key
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(crate.path, copy, ignore=shutil.ignore_patterns("target", "Cargo.lock"))
    return crate_copy_at(copy, crate, work, target, toolchain, cargo_home, extra_env)


def crate_copy_at(copy: Path, crate: CrateSource, work: Path, target: Path, toolchain: Toolchain, cargo_home: Path,
                  extra_env: dict[str, str] | None = None) -> CrateCopy:
    """The normaliser and cargo environment of ``crate`` already copied to ``copy``."""
    normaliser = Normaliser({str(copy): "$CRATE", str(target): "$TARGET", str(crate.path.parent): "$REGISTRY",
                             toolchain.sysroot: "$SYSROOT"})
    env = compiler_env({**(extra_env or {}), "CARGO_HOME": str(cargo_home), "CARGO_TARGET_DIR": str(target)}, work)
    return CrateCopy(copy, target, normaliser, env)


def map_crates(crates: list[CrateSource], root: Path, one: Callable[[CrateSource, Path, Path, Path], Any], *,
               jobs: int, work_dir: str | None, prefix: str) -> Iterator[Any]:
    """``one(crate, scratch, cargo_home, target)`` for every crate, ``jobs`` at a time,
    results in crate order. Scratch space is a fresh folder in ``work_dir`` (or
    $TMPDIR), removed at the end; each worker thread keeps one target dir, so shared
    dependencies build once per worker."""
    if work_dir:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=prefix, dir=work_dir))
    home = write_cargo_home(scratch / "cargo-home", root)
    local = threading.local()

    def run(crate: CrateSource) -> Any:
        if not hasattr(local, "target"):
            local.target = Path(tempfile.mkdtemp(prefix="target-", dir=scratch))
        return one(crate, scratch, home, local.target)

    try:
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            yield from pool.map(run, crates)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _error_tail(text: str, normaliser: Normaliser) -> list[str]:
    lines = [line for line in normaliser.text(text).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    return (errors or lines)[:ERROR_LINES]


def check_crate(crate: CrateSource, toolchain: Toolchain, work: Path, cargo_home: Path, target: Path,
                time_limit_s: float = DEFAULT_TIME_LIMIT_S) -> dict[str, Any]:
    """Build ``crate`` and run its test suites in a copy under ``work``; ``target`` is
    the cargo target dir (shared by the crates one worker checks). The record has
    ``build`` (passed | failed | timed_out, with ``errors`` when not passed) and
    ``tests`` (the same for the test build, and ``suites``: per test binary, libtest's
    counts and cases)."""
    made = copy_crate(crate, work, target, toolchain, cargo_home, TEST_ENV)
    copy, normaliser, env = made.path, made.normaliser, made.env
    record: dict[str, Any] = {
        "crate": crate.name, "version": crate.version, "package": crate.package, "license": crate.license,
        "edition": crate.edition, "source": crate.key, "rs_files": list(crate.rs_files), "toolchain": toolchain.version,
    }
    try:
        built = run_compiler([toolchain.cargo, "build", "--offline"], copy, env, time_limit_s)
        record["build"] = _step(built, normaliser)
        missing = _missing_packages(record["build"])
        if missing:
            # cargo resolves dev-dependencies even to build the library: when only they
            # are absent, the library still builds without them (its tests cannot).
            manifest = copy / "Cargo.toml"  # the copy's: it is removed below
            manifest.write_text(without_dev_dependencies(manifest.read_text(encoding="utf-8")), encoding="utf-8")
            record["build"] = _step(run_compiler([toolchain.cargo, "build", "--offline"], copy, env, time_limit_s),
                                    normaliser)
            if record["build"]["status"] == "passed":
                record["build"]["without_dev_dependencies"] = True
                record["tests"] = {"status": "unresolved", "missing": missing, "suites": []}
                return record
        if record["build"]["status"] != "passed":
            record["tests"] = {"status": "not_run", "suites": []}
            return record
        record["tests"] = _tests(copy, toolchain, env, normaliser, time_limit_s)
        return record
    finally:
        shutil.rmtree(copy, ignore_errors=True)


_MISSING = re.compile(r"no matching package named `([^`]+)` found")
_TABLE = re.compile(r"^\s*\[\[?([^\]]+)\]\]?\s*$")


def _missing_packages(step: dict[str, Any]) -> list[str]:
    return sorted({m[1] for line in step.get("errors", []) for m in _MISSING.finditer(line)})


def without_dev_dependencies(cargo_toml: str) -> str:
    """``cargo_toml`` without its dev-dependency tables (``[dev-dependencies]``,
    ``[dev-dependencies.NAME]``, ``[target.X.dev-dependencies]``) and without the
    bench and example targets that may need them."""
    out, skipping = [], False
    for line in cargo_toml.splitlines(keepends=True):
        header = _TABLE.match(line)
        if header:
            name = header[1].strip()
            skipping = ("dev-dependencies" in name or "dev_dependencies" in name
                        or name in ("bench", "example") and line.lstrip().startswith("[["))
        if not skipping:
            out.append(line)
    return "".join(out)


def _step(run, normaliser: Normaliser) -> dict[str, Any]:
    if run.timed_out:
        return {"status": "timed_out"}
    if run.exit_code != 0:
        return {"status": "failed", "errors": _error_tail(diag.decode(run.stderr)[0], normaliser)}
    return {"status": "passed"}


def build_tests(copy: Path, toolchain: Toolchain, env: dict[str, str], normaliser: Normaliser,
                time_limit_s: float) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``cargo test --no-run`` in ``copy``: the step's outcome and the test binaries as
    (suite name ``KIND:NAME:SRC``, executable path), sorted."""
    built = run_compiler([toolchain.cargo, "test", "--offline", "--no-run", "--message-format=json"], copy, env,
                         time_limit_s)
    step = _step(built, normaliser)
    if step["status"] != "passed":
        return step, []
    binaries = []
    for line in diag.decode(built.stdout)[0].splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable") and \
                message.get("profile", {}).get("test"):
            target = message["target"]
            src = normaliser.text(target["src_path"])
            binaries.append((f"{'/'.join(target['kind'])}:{target['name']}:{src}", message["executable"]))
    return step, sorted(set(binaries))


def run_suite(name: str, binary: str, copy: Path, env: dict[str, str], normaliser: Normaliser,
              time_limit_s: float) -> dict[str, Any]:
    """Run one test binary (one thread, in the crate's folder, as cargo does): libtest's
    counts and cases, status ``passed``/``failed``/``no_tests``, ``timed_out``, or
    ``crashed`` (killed by a signal or aborted before libtest's summary)."""
    ran = run_compiler([binary, "--test-threads=1"], copy, {**env, "CARGO_MANIFEST_DIR": str(copy)}, time_limit_s)
    if ran.timed_out:
        return {"suite": name, "status": "timed_out", "passed": 0, "failed": 0, "ignored": 0, "cases": []}
    result = parse_libtest(diag.decode(ran.stdout)[0], normaliser)
    if ran.exit_code != 0 and result["status"] != "failed":
        result["status"] = "crashed"
    return {"suite": name, **result}


def _tests(copy: Path, toolchain: Toolchain, env: dict[str, str], normaliser: Normaliser,
           time_limit_s: float) -> dict[str, Any]:
    step, binaries = build_tests(copy, toolchain, env, normaliser, time_limit_s)
    if step["status"] != "passed":
        return {**step, "suites": []}
    suites = [run_suite(name, binary, copy, env, normaliser, time_limit_s) for name, binary in binaries]
    passed = sum(s["passed"] for s in suites)
    status = ("failed" if any(s["status"] in ("failed", "crashed", "timed_out") for s in suites)
              else "passed" if passed else "no_tests")
    return {"status": status, "passed": passed, "failed": sum(s["failed"] for s in suites), "suites": suites}


@dataclasses.dataclass
class CratesSummary:
    """Counts of a survey: crates seen, built, with passing tests; ``seconds`` wall."""

    crates: int = 0
    built: int = 0
    tests_passed: int = 0
    tests_failed: int = 0
    no_tests: int = 0
    unresolved: int = 0
    tests: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        return (f"{self.crates} crates: {self.built} built, {self.tests_passed} with every test passing "
                f"({self.tests:,} passing tests in all), {self.tests_failed} with a failing or unbuildable suite, "
                f"{self.no_tests} without tests, {self.unresolved} whose dev-dependencies are not in the directory; "
                f"{self.seconds:.0f} s")


def survey(root: str | os.PathLike, output: str, toolchain: Toolchain, *, jobs: int = 2,
           time_limit_s: float = DEFAULT_TIME_LIMIT_S, limit: int | None = None, only: Iterable[str] | None = None,
           work_dir: str | None = None, progress: Callable[[str], None] | None | str = "stderr") -> CratesSummary:
    """Check every crate under ``root`` (the first ``limit`` by name) with ``jobs``
    workers and write ``output`` (JSON lines, sorted by name and version)."""
    if jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {jobs}")
    if toolchain.cargo is None:
        raise MeapDataError("cargo not found on PATH; rust crates builds with cargo (install it with rustup)")
    root = Path(root).resolve()
    crates = discover(root, only)[:limit]
    if not crates:
        raise MeapDataError(f"{root}: no crate folders (NAME-VERSION/Cargo.toml) found")
    started = time.perf_counter()
    bar = Progress(len(crates), "crates", sink=progress)

    def check(crate: CrateSource, scratch: Path, home: Path, target: Path) -> dict[str, Any]:
        return check_crate(crate, toolchain, scratch, home, target, time_limit_s)

    summary = CratesSummary(crates=len(crates))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(output, "w", encoding="utf-8") as f:
            for record in map_crates(crates, root, check, jobs=jobs, work_dir=work_dir, prefix="meap-crates-"):
                f.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
                bar.update(1)
                summary.built += record["build"]["status"] == "passed"
                status = record["tests"]["status"]
                summary.tests_passed += status == "passed"
                summary.tests_failed += status in ("failed", "timed_out")
                summary.no_tests += status == "no_tests"
                summary.unresolved += status == "unresolved"
                summary.tests += record["tests"].get("passed", 0)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
