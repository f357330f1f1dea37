"""Compile-error repair examples from real crates: ``meap-data rust mutate --crates``.

Reads the records of ``meap-data rust crates`` (which crates build) and the crate
sources, and breaks the files each crate's ``cargo check`` compiles with the operators
of :mod:`meap_data.rust.mutations`, checking every mutant with ``cargo check`` in a copy
of the crate (its packaged dependencies, offline).

Batching. One check of a crate costs about as much with one edited file as with twenty
(0.3-0.5 s incremental on these machines), and rustc type-checks and borrow-checks each
function body on its own, reporting errors in every body (an unresolved name in one
does not hide a moved value in another). So each check carries one mutant per file of
the crate, each inside a function body, and a diagnostic belongs to the mutant of the
file its primary span is in. Operators whose effect can reach other files (a removed
``use`` in a module with submodules, which may glob-import it; a return type changed) and edits in functions that
return ``impl Trait`` (callers see the body's type) are checked alone, one kept per file
and operator. A batch with an
error no mutant owns (another file, no span) is checked again one mutant at a time.

Context. A record shows the whole file when it has at most ``context_lines`` lines,
else the largest enclosing item that fits (the method, its impl block, the module);
``crate.lines`` says which lines of the file the window is. A mutant is kept when its
check fails with an error code inside its window and nowhere else; the record's
diagnostics are those in the window (line numbers are the file's), ``rendered`` their
text plus cargo's closing line recounted for them, ``fixed_source`` the same window of
the original file.

Sites are tried per file in a seeded order (a pure function of the seed, crate, file
and operator), ``per_operator`` kept and at most ``3 x per_operator`` tried per file and
operator. Records come out in crate, file and try order: the file is byte-identical
across runs and ``--jobs``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from meap_data.errors import MeapDataError
from meap_data.keys import hash64
from meap_data.progress import Progress
from meap_data.rust import diagnostics as diag
from meap_data.rust.crates import (  # noqa: F401  (write_cargo_home: re-exported for tests)
    DEBIAN_REGISTRY, CrateSource, copy_crate, discover, map_crates, write_cargo_home,
)
from meap_data.rust.items import context_window, innermost, item_blocks
from meap_data.rust.lexer import line_of, tokenize
from meap_data.rust.mutate import TRIES_PER_KEPT, CodeFamilyCounts, KeptMutants, apply_machine_fixes
from meap_data.rust.mutations import OPERATORS, Operator, Site
from meap_data.rust.records import SCHEMA_VERSION, make_key, write_records_keeping_partial
from meap_data.rust.toolchain import Normaliser, Toolchain, run_compiler

DEFAULT_PER_OPERATOR = 2
DEFAULT_CONTEXT_LINES = 120
CHECK_TIME_LIMIT_S = 120.0
#: Operators whose mutants can break code in other files: never batched.
ALONE = frozenset({"remove_use", "return_local_reference"})
#: Operators that edit a signature, not a body, but whose errors stay in the item (a
#: ``&mut`` parameter made ``&``: callers still coerce), so they may share a check.
SIGNATURE_LOCAL = frozenset({"mutate_through_shared_ref"})
CHECK_ARGV = ["cargo", "check", "--offline"]
_E_CODE = re.compile(r"^E\d{4}$")


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One mutation of one file: ``text`` the whole mutated file; ``window`` the
    context's character range in the original, ``mutated_window`` in ``text``."""

    file: str
    op: Operator
    index: int
    site: Site
    text: str
    window: tuple[int, int]
    mutated_window: tuple[int, int]
    batch: bool

    def lines(self) -> tuple[int, int]:
        """1-based first and last line of the window in the mutated file."""
        lo, hi = self.mutated_window
        return line_of(self.text, lo), line_of(self.text, max(lo, hi - 1))


class FilePlan:
    """The mutants of one file, handed out in seeded order under the per-operator caps."""

    def __init__(self, crate_key: str, file: str, text: str, *, seed: int, per_operator: int,
                 operators: tuple[Operator, ...], context_lines: int, leaf: bool = False):
        self.file, self.text, self.per_operator, self.leaf = file, text, per_operator, leaf
        self.context_lines = context_lines
        try:
            toks = tokenize(text)
        except ValueError:
            toks = []
        self.blocks = item_blocks(text, toks) if toks else []
        self.queues: list[tuple[Operator, list[tuple[int, Site]]]] = []
        for op in operators:
            sites = op.find(text, toks) if toks else []
            order = list(range(len(sites)))
            random.Random(hash64("meap-crate-mutate", seed, crate_key, file, op.name)).shuffle(order)
            self.queues.append((op, [(i, sites[i]) for i in order]))
        self.kept = {op.name: 0 for op in operators}
        self.tried = {op.name: 0 for op in operators}
        self.seen = {text}
        self.cursor = 0
        self.too_long = 0
        self.cache: dict[tuple[str, int], Mutant | None] = {}

    def _open(self, op: Operator) -> bool:
        # Operators checked alone cost a cargo check per try: one kept per file.
        cap = 1 if op.name in ALONE else self.per_operator
        return self.kept[op.name] < cap and self.tried[op.name] < TRIES_PER_KEPT * cap

    def _candidates(self, op: Operator, batch: bool) -> Iterator[tuple[int, Mutant]]:
        """(queue position, mutant) of ``op``'s untried mutants of the kind asked for."""
        queue = next(q for o, q in self.queues if o is op)
        pos = 0
        while pos < len(queue):
            index, site = queue[pos]
            if (op.name, index) not in self.cache:
                self.cache[(op.name, index)] = self._mutant(op, index, site)
            mutant = self.cache[(op.name, index)]
            if mutant is None:
                del queue[pos]
                continue
            if mutant.batch == batch:
                yield pos, mutant
            pos += 1

    def _take(self, op: Operator, pos: int) -> None:
        next(q for o, q in self.queues if o is op).pop(pos)
        self.tried[op.name] += 1

    def next_alone(self) -> Mutant | None:
        """The next untried mutant that must be checked alone (after the batches)."""
        for turn in range(len(self.queues)):
            op = self.queues[(self.cursor + turn) % len(self.queues)][0]
            if not self._open(op):
                continue
            for pos, mutant in self._candidates(op, False):
                self._take(op, pos)
                self.cursor = (self.cursor + turn + 1) % len(self.queues)
                return mutant
        return None

    def round(self) -> list[Mutant]:
        """Mutants to check together: at most one per operator (so the caps hold),
        windows that do not overlap, and at most one that adds or removes lines, after
        all the others (so every window keeps its line numbers)."""
        chosen: list[Mutant] = []
        shifter: Mutant | None = None
        for turn in range(len(self.queues)):
            op = self.queues[(self.cursor + turn) % len(self.queues)][0]
            if not self._open(op):
                continue
            for pos, m in self._candidates(op, True):
                if any(m.window[0] < c.window[1] and c.window[0] < m.window[1] for c in chosen):
                    continue
                shifts = m.text.count("\n") != self.text.count("\n")
                if shifts and (shifter is not None or any(c.window[0] > m.window[0] for c in chosen)):
                    continue
                if not shifts and shifter is not None and m.window[0] > shifter.window[0]:
                    continue
                self._take(op, pos)
                chosen.append(m)
                shifter = m if shifts else shifter
                break
        self.cursor = (self.cursor + 1) % len(self.queues)
        return chosen

    def composite(self, mutants: list[Mutant]) -> str:
        """The file with every mutant of a round applied."""
        edits = sorted((e for m in mutants for e in m.site.edits), reverse=True)
        text = self.text
        for start, end, new in edits:
            text = text[:start] + new + text[end:]
        return text

    def _mutant(self, op: Operator, index: int, site: Site) -> Mutant | None:
        lo = min(e[0] for e in site.edits)
        hi = max(e[1] for e in site.edits)
        fn = innermost(self.blocks, lo, hi, "fn")
        if any(b.test and b.contains(lo, hi) for b in self.blocks):
            return None  # test-only code: cargo check does not compile it
        window = context_window(self.text, self.blocks, lo, hi, self.context_lines)
        text = site.apply(self.text)
        if window is None:
            self.too_long += 1
            return None
        if text in self.seen:
            return None
        self.seen.add(text)
        delta = len(text) - len(self.text)
        if op.name not in ALONE | SIGNATURE_LOCAL and op.name != "remove_use" and (fn is None or lo <= fn.body):
            return None  # a type in a signature or an item outside functions: not what these operators model
        if op.name == "remove_use":
            # A private use in a module without submodules: nothing outside the file sees it.
            batch = self.leaf and not self.text[lo:hi].lstrip().startswith("pub")
        else:
            batch = (op.name not in ALONE and fn is not None and (lo > fn.body or op.name in SIGNATURE_LOCAL)
                     and "impl" not in self.text[fn.start:fn.body].split("->", 1)[-1])
        return Mutant(self.file, op, index, site, text, window, (window[0], window[1] + delta), batch)

    def done(self, mutant: Mutant, kept: bool) -> None:
        self.kept[mutant.op.name] += kept


@dataclasses.dataclass
class Check:
    """One cargo check: its diagnostics (record form, stream order, summaries dropped)
    with the target each came from, and whether it ran out of time."""

    diagnostics: list[dict[str, Any]]
    targets: list[str]
    timed_out: bool
    exit_code: int | None


def cargo_check(copy: Path, toolchain: Toolchain, env: dict[str, str], normaliser: Normaliser,
                time_limit_s: float) -> Check:
    """``cargo check --offline --message-format=json`` in ``copy``."""
    ran = run_compiler([toolchain.cargo, *CHECK_ARGV[1:], "--message-format=json"], copy, env, time_limit_s)
    if ran.timed_out:
        return Check([], [], True, None)
    found, targets = [], []
    for line in diag.decode(ran.stdout)[0].splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") != "compiler-message":
            continue
        for d in diag.parse_json(json.dumps(message["message"])).diagnostics:
            if not d.is_summary:
                found.append(normaliser.value(d.to_dict()))
                kind = message.get("target", {}).get("kind", ["lib"])[0]
                targets.append("lib" if kind in ("lib", "rlib", "proc-macro") else
                               f"{kind} \"{message['target'].get('name', '')}\"")
    return Check(found, targets, False, ran.exit_code)


def timed_out(what: str, time_limit_s: float) -> str:
    """A crate's skip reason when a step ran past the limit: it depends on the machine's
    load, so the summary names it and says the fix."""
    return f"{what} timed out after {time_limit_s:g} s (raise --time-limit or lower --jobs)"


def unmodified_check_failure(base: Check, time_limit_s: float) -> str | None:
    """Why a crate is skipped when ``cargo check`` of it unmodified fails (None when it
    passes)."""
    if base.timed_out:
        return timed_out("cargo check of the unmodified crate", time_limit_s)
    return None if base.exit_code == 0 else "the unmodified crate does not pass cargo check"


def _is_error(d: dict[str, Any]) -> bool:
    return str(d.get("level", "")).startswith("error")


def _file_of(d: dict[str, Any]) -> str | None:
    return d["primary"]["file"] if d.get("primary") else None


def closing_line(crate: str, target: str, errors: int, warnings: int) -> str:
    """cargo's last line for a failed check with these counts."""
    text = f"error: could not compile `{crate}` ({target}) due to {errors} previous error{'s' * (errors != 1)}"
    if warnings:
        text += f"; {warnings} warning{'s' * (warnings != 1)} emitted"
    return text + "\n"


@dataclasses.dataclass
class Outcome:
    """What one mutant's check said: ``diagnostics`` in its window (with their targets),
    or why it is not kept."""

    mutant: Mutant
    diagnostics: list[dict[str, Any]]
    targets: list[str]
    reason: str | None  # None: kept


def judge(mutant: Mutant, check: Check, alone: bool = True) -> Outcome:
    """Keep or drop ``mutant`` given a check that held it: ``alone``, or in a batch the
    caller found clean (every error inside some mutant's window)."""
    if check.timed_out:
        return Outcome(mutant, [], [], "timed_out")
    first, last = mutant.lines()
    mine, targets, outside = [], [], False
    for d, target in zip(check.diagnostics, check.targets):
        if d.get("code") == "dead_code":
            continue  # crate-wide: an item another mutant stopped using is reported where it is defined
        if _file_of(d) == mutant.file and first <= d["primary"]["line"] <= last:
            mine.append(d)
            targets.append(target)
        elif alone and _is_error(d):
            outside = True
    if outside:
        return Outcome(mutant, [], [], "errors_outside_window")
    code = next((d["code"] for d in mine if _is_error(d) and d.get("code")), None)
    if code is None or not code.startswith("E"):
        return Outcome(mutant, [], [], "compiles" if not any(_is_error(d) for d in mine) else "no_error_code")
    return Outcome(mutant, mine, targets, None)


#: rustc lists a trait's implementations in an order that depends on what else the
#: compilation touched: such a diagnostic from a batch is not what the mutant alone gets.
_LISTS_IMPLS = "implement trait"


def order_sensitive(mutant: Mutant, check: Check, baseline: set[tuple[str | None, str | None, str]]) -> bool:
    """Whether ``mutant``'s diagnostics in a batched check may differ from its own check:
    rustc lists trait implementations in an order that depends on what else it compiled,
    and says a lint is on by default only at the lint's first warning in the crate, which
    another mutant's warning may have taken."""
    first, last = mutant.lines()
    seen_foreign: set[str] = set()
    for d in check.diagnostics:
        mine = _file_of(d) == mutant.file and first <= d["primary"]["line"] <= last
        code = d.get("code")
        if mine:
            if _LISTS_IMPLS in (d.get("rendered") or "") or (code and code in seen_foreign):
                return True
        elif code and not _E_CODE.match(code) and (_file_of(d), code, d["message"]) not in baseline:
            seen_foreign.add(code)
    return False


def unclaimed_errors(check: Check, batch: dict[str, list[Mutant]]) -> set[str | None]:
    """Files (None: no file) with an error outside every window of the batch's mutants."""
    windows = {f: [m.lines() for m in ms] for f, ms in batch.items()}
    out: set[str | None] = set()
    for d in check.diagnostics:
        if not _is_error(d):
            continue
        f = _file_of(d)
        if f not in windows or not any(a <= d["primary"]["line"] <= b for a, b in windows[f]):
            out.add(f)
    return out


@dataclasses.dataclass
class CrateResult:
    key: str
    files: int = 0
    checks: int = 0
    tried: int = 0
    too_long: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    checks_by: dict[str, int] = dataclasses.field(default_factory=dict)
    records: list = dataclasses.field(default_factory=list)
    error: str | None = None


def is_leaf_module(crate: Path, rel: str) -> bool:
    """``rel`` is a module file with no submodules (not a crate root or ``mod.rs``, no
    folder of its own): what it imports privately, no other file can see."""
    path = Path(rel)
    if path.name in ("lib.rs", "main.rs", "mod.rs", "build.rs") or path.parts[:2] == ("src", "bin"):
        return False
    return not (crate / path.with_suffix("")).is_dir()


def compiled_files(target: Path, copy: Path, since: float) -> list[str]:
    """The crate's ``.rs`` files the last check compiled, from cargo's dep-info files."""
    found: set[str] = set()
    prefix = str(copy) + "/"
    for d in (target / "debug" / "deps").glob("*.d"):
        if d.stat().st_mtime < since:
            continue
        for line in d.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.endswith(".rs:"):
                continue
            path = line[:-1]
            rel = path[len(prefix):] if path.startswith(prefix) else path  # cargo writes the crate's own relative
            if not rel.startswith("/") and (copy / rel).is_file():
                found.add(rel)
    return sorted(found)


def mutate_crate(crate: CrateSource, toolchain: Toolchain, scratch: Path, cargo_home: Path, target: Path, *,
                 seed: int, per_operator: int, operators: tuple[Operator, ...], context_lines: int,
                 time_limit_s: float) -> CrateResult:
    """The kept compile-error mutants of one crate, in file and try order."""
    result = CrateResult(crate.key)
    made = copy_crate(crate, scratch, target, toolchain, cargo_home)
    copy, normaliser, env = made.path, made.normaliser, made.env
    try:
        since = time.time() - 1
        base = cargo_check(copy, toolchain, env, normaliser, time_limit_s)
        result.checks += 1
        result.error = unmodified_check_failure(base, time_limit_s)
        if result.error:
            return result
        baseline = {(_file_of(d), d.get("code"), d["message"]) for d in base.diagnostics}
        files = compiled_files(target, copy, since)
        result.files = len(files)
        originals = {f: (copy / f).read_text(encoding="utf-8", errors="replace") for f in files}
        plans = [FilePlan(crate.key, f, originals[f], seed=seed, per_operator=per_operator, operators=operators,
                          context_lines=context_lines, leaf=is_leaf_module(copy, f)) for f in files]

        def check_with(texts: dict[str, str], why: str = "batch") -> Check:
            result.checks_by[why] = result.checks_by.get(why, 0) + 1
            for f, text in texts.items():
                (copy / f).write_text(text, encoding="utf-8")
            try:
                result.checks += 1
                return cargo_check(copy, toolchain, env, normaliser, time_limit_s)
            finally:
                for f in texts:
                    (copy / f).write_text(originals[f], encoding="utf-8")

        def settle(outcome: Outcome, plan: FilePlan) -> None:
            result.tried += 1
            plan.done(outcome.mutant, outcome.reason is None)
            if outcome.reason is None:
                result.records.append(_record(crate, outcome, originals[outcome.mutant.file], seed, toolchain,
                                              time_limit_s))
            else:
                result.dropped[outcome.reason] = result.dropped.get(outcome.reason, 0) + 1

        by_file = {p.file: p for p in plans}
        while True:
            batch = {p.file: ms for p in plans if (ms := p.round())}
            if not batch:
                break
            check = check_with({f: by_file[f].composite(ms) for f, ms in batch.items()})
            unclaimed = unclaimed_errors(check, batch) if not check.timed_out else {None}
            for f, ms in batch.items():
                if None in unclaimed or f in unclaimed or any(u not in batch for u in unclaimed):
                    alone = len(batch) == 1 and len(ms) == 1
                    for m in ms:
                        settle(judge(m, check if alone else check_with({f: m.text}, "unclaimed")), by_file[f])
                else:
                    for m in ms:
                        outcome = judge(m, check, alone=False)
                        if outcome.reason is None and order_sensitive(m, check, baseline):
                            outcome = judge(m, check_with({f: m.text}, "order"))
                        settle(outcome, by_file[f])
        for plan in plans:
            while (m := plan.next_alone()) is not None:
                settle(judge(m, check_with({m.file: m.text}, "alone_op")), plan)
        result.too_long = sum(p.too_long for p in plans)
        result.records.sort(key=lambda r: r["crate"]["file"])  # stable: try order within a file
        return result
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _record(crate: CrateSource, outcome: Outcome, original: str, seed: int, toolchain: Toolchain,
            time_limit_s: float) -> dict[str, Any]:
    m = outcome.mutant
    lo, hi = m.window
    mlo, mhi = m.mutated_window
    source, fixed = m.text[mlo:mhi], original[lo:hi]
    first, last = m.lines()
    errors = sum(_is_error(d) for d in outcome.diagnostics)
    warnings = len(outcome.diagnostics) - errors
    rendered = "".join(d.get("rendered") or "" for d in outcome.diagnostics)
    rendered += closing_line(crate.name, outcome.targets[0], errors, warnings)
    codes = list(dict.fromkeys(d["code"] for d in outcome.diagnostics if d.get("code")))
    first_code = next(d["code"] for d in outcome.diagnostics if _is_error(d) and d.get("code"))
    local = [_shift(d, first - 1) for d in outcome.diagnostics]
    return {
        "schema_version": SCHEMA_VERSION,
        "key": make_key(f"{crate.key}/{m.file}-{m.op.name}-{m.index}"),
        "origin": "mutation",
        "tool": "cargo",
        "source": source,
        "source_path": f"$SRC/{m.file}",
        "edition": crate.edition,
        "toolchain": toolchain.version,
        "argv": list(CHECK_ARGV),
        "argv_json": [*CHECK_ARGV, "--message-format=json"],
        "env": {},
        "time_limit_s": time_limit_s,
        "exit_code": 101,
        "timed_out": False,
        "diagnostics": outcome.diagnostics,
        "rendered": rendered,
        "problems": [],
        "produced_codes": codes,
        "fixed_source": fixed,
        "fix_edition": crate.edition,
        "fix_compiles": True,
        "mutation": {
            "operator": m.op.name,
            "family": m.op.family,
            "line": line_of(original, min(e[0] for e in m.site.edits)),
            "program": f"{crate.key}/{m.file}",
            "seed": seed,
            "first_code": first_code,
            "rustc_fix": apply_machine_fixes(source, local, file=m.file) == fixed,
            "from": {"crate": crate.key, "path": m.file},
        },
        "crate": {
            "name": crate.name, "version": crate.version, "package": crate.package, "license": crate.license,
            "file": m.file, "lines": [first, last], "fixed_lines": [line_of(original, lo), line_of(original, max(lo, hi - 1))],
            "file_lines": original.count("\n") + (not original.endswith("\n")),
        },
    }


def _shift(d: dict[str, Any], by: int) -> dict[str, Any]:
    """A diagnostic's suggestions with line numbers relative to a window starting ``by``
    lines into the file (for applying them to the window's text)."""
    return {**d, "suggestions": [{**s, "line": s["line"] - by, "line_end": s["line_end"] - by}
                                 for s in d.get("suggestions", [])]}


@dataclasses.dataclass(frozen=True)
class CrateMutateSummary(CodeFamilyCounts):
    """Counts of a crate mutation run; ``seconds`` wall."""

    crates: int
    skipped: dict[str, int]
    files: int
    checks: int
    tried: int
    kept: int
    duplicates: int
    too_long: int
    dropped: dict[str, int]
    by_operator: dict[str, int]
    by_code: dict[str, int]
    rustc_fixable: int
    prompt_lines: dict[str, int]
    seconds: float

    def line(self) -> str:
        return (f"mutate --crates: {self.crates} crates ({sum(self.skipped.values())} skipped), {self.files} files, "
                f"{self.tried} mutants in {self.checks} cargo checks, {self.kept} kept, "
                f"{self.duplicates} duplicates dropped; type inference {self.inference}, ownership/borrowing "
                f"{self.ownership}, rustc-fixable {self.rustc_fixable}; window lines median "
                f"{self.prompt_lines.get('median', 0)}, max {self.prompt_lines.get('max', 0)}; {self.seconds:.0f} s")


def finished_crates(output: str | os.PathLike, crates: list[CrateSource]) -> tuple[int, list[dict[str, Any]]]:
    """(how many of ``crates`` an interrupted run finished, their records) from
    ``OUTPUT.partial``. The last crate with records there may be cut short: it and the
    crates after it are done again."""
    partial = Path(str(output) + ".partial")
    if not partial.is_file():
        return 0, []
    records = []
    for line in partial.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the line being written when the run stopped
    order = {c.key: i for i, c in enumerate(crates)}
    seen = [order.get(f"{r['crate']['name']}-{r['crate']['version']}", -1) for r in records]
    if not records or -1 in seen or seen != sorted(seen):
        raise MeapDataError(f"{partial} is not an interrupted run over these crates; remove it or drop --resume")
    last = seen[-1]
    return last, [r for r, i in zip(records, seen) if i < last]


def read_crate_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``meap-data rust crates`` (JSON lines)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MeapDataError(f"{p}: cannot read crate records ({e.strerror}); write them with "
                            "'meap-data rust crates --output FILE'") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MeapDataError(f"{p}:{n}: not JSON ({e.msg}); expected 'meap-data rust crates' output") from e
        if not isinstance(record, dict) or "crate" not in record or "build" not in record:
            raise MeapDataError(f"{p}:{n}: not a crate record (no 'crate'/'build'); expected 'meap-data rust crates' "
                                "output")
        out.append(record)
    return out


def select_crates(records_path: str | os.PathLike, crates_dir: str | os.PathLike, *, tests_passed: bool = False,
                  only: list[str] | None = None) -> list[CrateSource]:
    """The crates of ``crates_dir`` whose survey record says they build (and, with
    ``tests_passed``, have a suite that passes), in name and version order. ``records_path``
    may be a directory of crate sources instead: all its crates (each is checked
    before it is mutated anyway)."""
    if Path(records_path).is_dir():
        crates = discover(records_path, only)
        if not crates:
            raise MeapDataError(f"{records_path}: no crate folders (NAME-VERSION/Cargo.toml) found")
        return crates
    wanted = {}
    for r in read_crate_records(records_path):
        if r["build"]["status"] != "passed":
            continue
        if tests_passed and not any(s["status"] == "passed" for s in r["tests"].get("suites", [])):
            continue
        wanted[r["source"]] = r
    crates = [c for c in discover(crates_dir, only) if c.key in wanted]
    if not crates:
        raise MeapDataError(f"{records_path}: no crate of {crates_dir} is recorded as building"
                            + (" with passing tests" if tests_passed else ""))
    return crates


def mutate_crates(records_path: str | os.PathLike, output: str | os.PathLike, toolchain: Toolchain, *,
                  crates_dir: str | os.PathLike = DEBIAN_REGISTRY, seed: int = 0,
                  per_operator: int = DEFAULT_PER_OPERATOR, operators: tuple[Operator, ...] = OPERATORS,
                  context_lines: int = DEFAULT_CONTEXT_LINES, jobs: int = 2, limit: int | None = None,
                  only: list[str] | None = None, time_limit_s: float = CHECK_TIME_LIMIT_S,
                  work_dir: str | None = None, resume: bool = False,
                  progress: Callable[[str], None] | None | str = "stderr") -> CrateMutateSummary:
    """Mutate every building crate (``jobs`` crates at a time) and write the kept mutants.
    ``resume``: keep the crates an interrupted run finished (``OUTPUT.partial``) and do
    the rest; the output is the same as an uninterrupted run's (the checks and tries of
    the kept crates are not counted again)."""
    if jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {jobs}")
    if per_operator < 1:
        raise MeapDataError(f"--per-operator must be at least 1, got {per_operator}")
    if context_lines < 10:
        raise MeapDataError(f"--context-lines must be at least 10, got {context_lines}")
    if toolchain.cargo is None:
        raise MeapDataError("cargo not found on PATH; mutate --crates checks mutants with cargo (install it with rustup)")
    start = time.monotonic()
    root = Path(records_path if Path(records_path).is_dir() else crates_dir).resolve()
    crates = select_crates(records_path, root, only=only)[:limit]
    done, earlier = finished_crates(output, crates) if resume else (0, [])
    bar = Progress(len(crates) - done, "mutate --crates", sink=progress)
    totals = {"files": 0, "checks": 0, "tried": 0, "too_long": 0}
    skipped: dict[str, int] = {}
    dropped: dict[str, int] = {}
    tally = KeptMutants()
    window_lines: list[int] = []

    def one(crate: CrateSource, scratch: Path, home: Path, target: Path) -> CrateResult:
        return mutate_crate(crate, toolchain, scratch, home, target, seed=seed, per_operator=per_operator,
                            operators=operators, context_lines=context_lines, time_limit_s=time_limit_s)

    def kept() -> Iterator[dict[str, Any]]:
        resumed = CrateResult("resumed", records=earlier)
        for result in itertools.chain([resumed], map_crates(crates[done:], root, one, jobs=jobs, work_dir=work_dir,
                                                            prefix="meap-crate-mutate-")):
            if result.error:
                skipped[result.error] = skipped.get(result.error, 0) + 1
            for k in ("files", "checks", "tried", "too_long"):
                totals[k] += getattr(result, k)
            for reason, n in result.dropped.items():
                dropped[reason] = dropped.get(reason, 0) + n
            for record in result.records:
                if tally.add(record, record["crate"]["file"] + "\0" + record["source"]):
                    window_lines.append(record["crate"]["lines"][1] - record["crate"]["lines"][0] + 1)
                    yield record
            if result is not resumed:
                bar.update(1, f"{tally.kept} mutants")

    try:
        write_records_keeping_partial(output, kept())
    finally:
        bar.close(f"{tally.kept} mutants kept")
    window_lines.sort()
    lines = ({"median": window_lines[len(window_lines) // 2], "max": window_lines[-1]} if window_lines else {})
    return CrateMutateSummary(len(crates), dict(sorted(skipped.items())), totals["files"], totals["checks"],
                              totals["tried"], tally.kept, tally.duplicates, totals["too_long"], dict(sorted(dropped.items())),
                              dict(sorted(tally.by_operator.items())),
                              dict(sorted(tally.by_code.items(), key=lambda kv: (-kv[1], kv[0]))), tally.fixable,
                              lines, time.monotonic() - start)
