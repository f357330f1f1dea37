"""``meap-data rust mutate``: repair examples from compiling programs, by breaking them.

For each program (a ``.rs`` file, or a snippet record from ``meap-data rust snippets``)
that compiles, every operator of :mod:`meap_data.rust.mutations` lists its sites; sites are
tried in a seeded order (a pure function of the seed, the program's key and the
operator) until ``per_operator`` mutants are kept or ``3 x per_operator`` were tried. A
mutant is kept when rustc rejects it with an error code (``E....``); its record is a
transcript (``schemas/rust_transcript.schema.json``, origin ``mutation``) whose
``fixed_source`` is the original program, the file named ``main.rs``. Identical mutants
are kept once. ``mutation.rustc_fix`` marks mutants that rustc's own machine-applicable
suggestions already repair (apply them and the original comes back), so users can
down-weight them. Output order is program order, then operator order, whatever
``--jobs``: the file is byte-identical across runs and job counts.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import random
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from meap_data.errors import MeapDataError
from meap_data.keys import hash64
from meap_data.progress import Progress
from meap_data.rust.harvest import EDITIONS, Compiled, Toolchain, compile_source, find_toolchain
from meap_data.rust.mutations import BY_NAME, OPERATORS, Operator, sites_of
from meap_data.rust.records import SCHEMA_VERSION, make_key, write_records
from meap_data.rust.snippets import read_snippets

DEFAULT_PER_OPERATOR = 4
TRIES_PER_KEPT = 3
MUTANT_TIME_LIMIT_S = 30.0
_E_CODE = re.compile(r"^E\d{4}$")
#: Error-code families the summary counts (first error code of a mutant).
INFERENCE_CODES = frozenset({"E0282", "E0283", "E0284", "E0689", "E0790", "E0698"})
OWNERSHIP_CODES = frozenset({"E0382", "E0499", "E0502", "E0503", "E0505", "E0506", "E0507", "E0515", "E0596",
                             "E0597", "E0594", "E0384", "E0716", "E0373", "E0521", "E0713", "E0508", "E0509"})


@dataclasses.dataclass(frozen=True)
class Program:
    """A compiling program to mutate: its key, text, edition, environment and origin."""

    key: str
    source: str
    edition: str
    env: dict
    origin: dict  # where it came from: {"snippet": key, "doc": {...}} or {"path": ...}
    trusted: bool = False  # already type-checked by this toolchain (a snippet record)


def programs_from(inputs: Iterable[str], edition: str, toolchain: Toolchain) -> list[Program]:
    """Programs of ``.rs`` files, directories of them (sorted) and snippet JSON lines."""
    out: list[Program] = []
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            for f in sorted(p.rglob("*.rs")):
                rel = f.relative_to(p.parent).as_posix()
                out.append(Program(make_key(rel), f.read_text(encoding="utf-8", errors="replace"), edition, {},
                                   {"path": rel}))
        elif p.suffix == ".rs":
            out.append(Program(make_key(p.name), p.read_text(encoding="utf-8", errors="replace"), edition, {},
                               {"path": p.name}))
        elif p.suffix in (".jsonl", ".json"):
            for r in read_snippets(p):
                out.append(Program(r["key"], r["source"], r["edition"], dict(r["env"]),
                                   {"snippet": r["key"], "doc": r["doc"]}, trusted=r["toolchain"] == toolchain.version))
        elif not p.exists():
            raise MeapDataError(f"{arg}: no such file or directory; pass .rs files, directories or snippet JSON lines")
        else:
            raise MeapDataError(f"{arg}: not a .rs file, a directory or snippet JSON lines (.jsonl)")
    keys: dict[str, int] = {}
    for prog in out:
        keys[prog.key] = keys.get(prog.key, 0) + 1
    clash = [k for k, n in keys.items() if n > 1]
    if clash:
        raise MeapDataError(f"two programs share the key {clash[0]!r}; pass them in separate runs or rename one")
    return out


def first_error_code(compiled: Compiled) -> str | None:
    """The first error-level diagnostic's E-code, or None."""
    return next((d["code"] for d in compiled.diagnostics
                 if str(d.get("level", "")).startswith("error") and d.get("code") and _E_CODE.match(d["code"])), None)


def apply_machine_fixes(source: str, diagnostics: list[dict[str, Any]], file: str = "main.rs") -> str:
    """``source`` (the text of ``file``) with every machine-applicable suggestion of
    ``diagnostics`` applied (rustfix's rule; overlapping ones after the first are
    skipped). Columns count characters, 1-based, end exclusive."""
    starts = [0]
    for line in source.split("\n"):
        starts.append(starts[-1] + len(line) + 1)

    def offset(line: int, column: int) -> int:
        return starts[max(line, 1) - 1] + column - 1

    edits = []
    for d in diagnostics:
        for s in d.get("suggestions", []):
            # Inside the text only: a window's diagnostics may suggest edits elsewhere in the file.
            if s.get("applicability") == "MachineApplicable" and s["file"] == file and \
                    1 <= s["line"] and s["line_end"] < len(starts):
                edits.append((offset(s["line"], s["column"]), offset(s["line_end"], s["column_end"]), s["replacement"]))
    out, last = [], 0
    for start, end, text in sorted(set(edits)):
        if start < last:
            continue
        out += [source[last:start], text]
        last = end
    return "".join(out) + source[last:]


@dataclasses.dataclass
class ProgramResult:
    key: str
    compiled: bool
    tried: int = 0
    records: list = dataclasses.field(default_factory=list)


def mutate_program(program: Program, toolchain: Toolchain, *, seed: int, per_operator: int,
                   operators: tuple[Operator, ...], time_limit_s: float) -> ProgramResult:
    """The kept mutants of one program, in operator order."""
    def compile_(text: str) -> Compiled:
        return compile_source(text, toolchain, edition=program.edition, time_limit_s=time_limit_s,
                              extra_env=program.env)

    if not program.trusted and compile_(program.source).exit_code != 0:
        return ProgramResult(program.key, False)
    result = ProgramResult(program.key, True)
    seen = {program.source}
    for op in operators:
        sites = sites_of(program.source, op)
        order = list(range(len(sites)))
        random.Random(hash64("meap-mutate", seed, program.key, op.name)).shuffle(order)
        kept = tried = 0
        for index in order:
            if kept >= per_operator or tried >= TRIES_PER_KEPT * per_operator:
                break
            text = sites[index].apply(program.source)
            if text in seen:
                continue
            seen.add(text)
            tried += 1
            compiled = compile_(text)
            code = first_error_code(compiled)
            if compiled.timed_out or compiled.exit_code == 0 or code is None:
                continue
            kept += 1
            result.records.append(_record(program, op, index, sites[index].line, text, compiled, seed, toolchain,
                                          time_limit_s))
        result.tried += tried
    return result


def _record(program: Program, op: Operator, index: int, line: int, text: str, compiled: Compiled, seed: int,
            toolchain: Toolchain, time_limit_s: float) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": f"{program.key}-{op.name}-{index}",
        "origin": "mutation",
        "tool": "rustc",
        "source": text,
        "source_path": "$SRC/main.rs",
        "edition": program.edition,
        "toolchain": toolchain.version,
        "env": dict(program.env),
        "time_limit_s": time_limit_s,
        "fixed_source": program.source,
        "fix_edition": program.edition,
        "fix_compiles": True,
    }
    record.update(compiled.record_fields())
    record["mutation"] = {
        "operator": op.name,
        "family": op.family,
        "line": line,
        "program": program.key,
        "seed": seed,
        "first_code": first_error_code(compiled),
        "rustc_fix": apply_machine_fixes(text, compiled.diagnostics) == program.source,
        "from": program.origin,
    }
    return record


class KeptMutants:
    """Drops a mutant whose text was kept already, and counts the kept ones: in all, by
    operator, by first error code, and those rustc's own suggestions repair."""

    def __init__(self) -> None:
        self.digests: set[bytes] = set()
        self.kept = self.duplicates = self.fixable = 0
        self.by_operator: dict[str, int] = {}
        self.by_code: dict[str, int] = {}

    def add(self, record: dict[str, Any], identity: str) -> bool:
        """Count ``record`` (its text ``identity``); False when it repeats a kept one."""
        digest = hashlib.blake2b(identity.encode("utf-8"), digest_size=16).digest()
        if digest in self.digests:
            self.duplicates += 1
            return False
        self.digests.add(digest)
        m = record["mutation"]
        self.kept += 1
        self.fixable += m["rustc_fix"]
        self.by_operator[m["operator"]] = self.by_operator.get(m["operator"], 0) + 1
        self.by_code[m["first_code"]] = self.by_code.get(m["first_code"], 0) + 1
        return True


class CodeFamilyCounts:
    """Kept mutants of the two families the issue counts, from a summary's ``by_code``
    (first error code -> mutants)."""

    by_code: dict[str, int]

    @property
    def inference(self) -> int:
        return sum(n for c, n in self.by_code.items() if c in INFERENCE_CODES)

    @property
    def ownership(self) -> int:
        return sum(n for c, n in self.by_code.items() if c in OWNERSHIP_CODES)


@dataclasses.dataclass(frozen=True)
class MutateSummary(CodeFamilyCounts):
    programs: int
    compiled: int
    tried: int
    kept: int
    duplicates: int
    by_operator: dict[str, int]
    by_code: dict[str, int]
    rustc_fixable: int
    seconds: float

    def line(self) -> str:
        rate = 100.0 * self.kept / max(self.tried, 1)
        return (f"mutate: {self.programs} programs ({self.compiled} compile), {self.tried} mutants compiled, "
                f"{self.kept} kept ({rate:.0f}% failed with an E-code), {self.duplicates} duplicates dropped; "
                f"type inference {self.inference}, ownership/borrowing {self.ownership}, "
                f"rustc-fixable {self.rustc_fixable}; {self.seconds:.0f} s")


def mutate(
    inputs: Iterable[str],
    output: str | Path,
    *,
    seed: int = 0,
    per_operator: int = DEFAULT_PER_OPERATOR,
    operators: Iterable[str] | None = None,
    jobs: int = 2,
    edition: str = "2021",
    limit: int | None = None,
    time_limit_s: float = MUTANT_TIME_LIMIT_S,
    toolchain: Toolchain | None = None,
    progress: Callable[[str], None] | None | str = "stderr",
) -> MutateSummary:
    """Mutate every program (``jobs`` programs at a time) and write the kept mutants."""
    if jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {jobs}")
    if per_operator < 1:
        raise MeapDataError(f"--per-operator must be at least 1, got {per_operator}")
    if edition not in EDITIONS:
        raise MeapDataError(f"--edition {edition!r} is not one of {', '.join(EDITIONS)}")
    chosen = OPERATORS if operators is None else tuple(_operator(name) for name in operators)
    toolchain = toolchain or find_toolchain()
    start = time.monotonic()
    programs = programs_from(inputs, edition, toolchain)[:limit]
    if not programs:
        raise MeapDataError("no programs to mutate: pass .rs files, directories of them, or snippet JSON lines")
    bar = Progress(len(programs), "mutate: programs", sink=progress)
    counts = {"compiled": 0, "tried": 0}
    tally = KeptMutants()

    def one(program: Program) -> ProgramResult:
        return mutate_program(program, toolchain, seed=seed, per_operator=per_operator, operators=chosen,
                              time_limit_s=time_limit_s)

    def kept() -> Iterator[dict[str, Any]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(one, programs):
                counts["compiled"] += result.compiled
                counts["tried"] += result.tried
                for record in result.records:
                    if tally.add(record, record["source"]):
                        yield record
                bar.update(1, f"{tally.kept} mutants")

    write_records(output, kept())
    bar.close(f"{tally.kept} mutants kept")
    return MutateSummary(len(programs), counts["compiled"], counts["tried"], tally.kept, tally.duplicates,
                         dict(sorted(tally.by_operator.items())),
                         dict(sorted(tally.by_code.items(), key=lambda kv: -kv[1])), tally.fixable,
                         time.monotonic() - start)


def _operator(name: str) -> Operator:
    if name not in BY_NAME:
        raise MeapDataError(f"unknown mutation operator {name!r}; choose from {', '.join(BY_NAME)}")
    return BY_NAME[name]
