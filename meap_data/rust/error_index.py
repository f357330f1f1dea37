"""A transcript corpus from the local toolchain's error index, offline.

``$(rustc --print sysroot)/share/doc/rust/html/error_codes/E*.html`` (the rust-docs
component) holds, per error code, ``compile_fail`` examples tagged with the code they
must produce and usually a corrected example. Each failing example is compiled as
rustdoc would (its tagged edition, 2015 when untagged; ``RUSTC_BOOTSTRAP=1`` so
feature gates work; a binary crate, compiled to an object file with ``--emit=obj`` so
errors found only during code generation show, without needing a linker) and paired
with the page's fix, whose compiling is recorded too.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import difflib
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from meap_data.errors import MeapDataError
from meap_data.progress import Progress
from meap_data.rust.doc_blocks import CodeBlock, page_blocks
from meap_data.rust.harvest import (
    DEFAULT_TIME_LIMIT_S, Toolchain, compile_file, compiler_env, find_toolchain, run_compiler,
)
from meap_data.rust.records import SCHEMA_VERSION, write_records

BOOTSTRAP_ENV = {"RUSTC_BOOTSTRAP": "1"}


@dataclasses.dataclass(frozen=True)
class Example:
    """One compile_fail example and the page's corrected example, when there is one."""

    page: str
    index: int
    block: CodeBlock
    fix: CodeBlock | None

    @property
    def key(self) -> str:
        return f"{self.page}-{self.index}"


def error_codes_dir(toolchain: Toolchain) -> Path:
    """The error index's HTML directory, or a MeapDataError naming it and the fix."""
    d = Path(toolchain.sysroot) / "share" / "doc" / "rust" / "html" / "error_codes"
    if not d.is_dir() or not any(d.glob("E*.html")):
        raise MeapDataError(
            f"error index not found: {d} has no E*.html pages; install the docs with "
            "`rustup component add rust-docs`"
        )
    return d


def page_examples(page: str, page_html: str) -> list[Example]:
    """compile_fail examples of a page, each with its fix.

    The fix is the first compiling Rust block after the example, else the last one before
    it: pages alternate "erroneous code", then "corrected code".
    """
    blocks = page_blocks(page_html)
    examples = []
    for i, block in enumerate(blocks):
        if not block.compile_fail:
            continue
        after = next((b for b in blocks[i + 1:] if b.is_fix), None)
        before = next((b for b in reversed(blocks[:i]) if b.is_fix), None)
        examples.append(Example(page, len(examples), block, after or before))
    return examples


def all_examples(docs: Path) -> list[Example]:
    """Every compile_fail example under ``docs``, in (page, index) order."""
    out = []
    for path in sorted(docs.glob("E*.html")):
        out.extend(page_examples(path.stem, path.read_text(encoding="utf-8", errors="replace")))
    return out


def fix_compiles(source: str, edition: str, toolchain: Toolchain, time_limit_s: float) -> bool:
    """Whether ``source`` compiles to an object file (``rustc --emit=obj``, no linking)."""
    with tempfile.TemporaryDirectory(prefix="meap-rust-") as tmp:
        (Path(tmp) / "main.rs").write_text(source, encoding="utf-8")
        argv = [toolchain.rustc, "--edition", edition, "--error-format=json", "--emit=obj",
                "--out-dir", str(Path(tmp) / "out"), "main.rs"]
        out = run_compiler(argv, Path(tmp), compiler_env(BOOTSTRAP_ENV, Path(tmp)), time_limit_s)
        return out.exit_code == 0


# A comment that talks to the reader of the docs page, not part of the program:
# "// error: ...", "// ok!", "// Correct.", "// this is incorrect", "// no error!".
_ANNOTATION = re.compile(
    r"^\s*(?:(?:no\s+)?errors?\b|ok\b|okay\b|correct\b|incorrect\b|this is (?:also )?(?:in)?correct|"
    r"that's (?:good|ok)|(?:also )?works\b|compiles\b|fine\b)", re.I)
# A continuation of an annotation: an indented comment ("//        expected 2, found 1")
# or a pointer ("// ^ expected lifetime parameter").
_CONTINUATION = re.compile(r"^(?:\s{2,}|\s*\^)")
#: Fixes whose similarity to the example (difflib ratio of the texts) is below this are
#: not fixes of the shown program but the page's next example.
MIN_FIX_SIMILARITY = 0.6
MODERN_EDITION = "2021"


def _comment_start(line: str) -> int:
    """Index of a line comment's ``//`` outside string and char literals, or -1."""
    quote = None
    i = 0
    while i < len(line) - 1:
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c == '"':
            quote = '"'
        elif c == "/" and line[i + 1] == "/":
            return i
        i += 1
    return -1


def strip_annotations(code: str) -> str:
    """``code`` without the page's reader-facing comments (``// error: ...``, ``// ok!``
    and their indented continuation lines); a line left empty by it is removed."""
    out = []
    continuing = False
    for line in code.split("\n"):
        at = _comment_start(line)
        if at < 0:
            out.append(line)
            continuing = False
            continue
        comment = line[at + 2:]
        code_part = line[:at].rstrip()
        if _ANNOTATION.match(comment) or (continuing and not code_part and _CONTINUATION.match(comment)):
            continuing = True
            if code_part:
                out.append(code_part)
            continue
        continuing = False
        out.append(line)
    return "\n".join(out)


def fix_problem(source: str, fix_code: str) -> tuple[str | None, float]:
    """(why the page's corrected example is not a fix of ``source``, or None; the
    similarity of the two texts, 0..1)."""
    similarity = difflib.SequenceMatcher(None, source, fix_code, autojunk=False).ratio()
    if re.search(r"//\s*or\b", fix_code, re.I):
        return "alternatives: the corrected example shows several versions ('// or:')", similarity
    if similarity < MIN_FIX_SIMILARITY:
        return (f"low_similarity: {similarity:.2f} < {MIN_FIX_SIMILARITY} to the example; the page's corrected "
                "code is another program, not a fix of this one"), similarity
    return None, similarity


def _compile_example(code: str, edition: str, toolchain: Toolchain, time_limit_s: float):
    with tempfile.TemporaryDirectory(prefix="meap-rust-") as tmp:
        path = Path(tmp) / "main.rs"
        path.write_text(code, encoding="utf-8")
        return compile_file(path, Path(tmp), toolchain, edition=edition, time_limit_s=time_limit_s,
                            extra_env=BOOTSTRAP_ENV, crate_type="bin", emit="obj")


def example_record(example: Example, toolchain: Toolchain, *, time_limit_s: float) -> dict[str, Any]:
    """Compile one example (and its fix) and return its transcript record.

    The page's annotations (``// error: ...``, ``// ok!``) are stripped from both: a model
    would learn to write them. The example is compiled with edition 2021 when it still
    produces its expected code there (else with its tagged edition). The fix is dropped,
    with the reason in ``fix_rejected``, when it is not a fix of the shown program.
    The file is always ``main.rs``: a name carrying the error code would leak the answer.
    """
    block = example.block
    source = strip_annotations(block.code)
    edition = block.edition
    compiled = None
    if int(edition) < int(MODERN_EDITION):
        modern = _compile_example(source, MODERN_EDITION, toolchain, time_limit_s)
        produced = modern.record_fields()["produced_codes"]
        if not modern.timed_out and modern.exit_code != 0 and (block.expected_code is None
                                                                 or block.expected_code in produced):
            compiled, edition = modern, MODERN_EDITION
    if compiled is None:
        compiled = _compile_example(source, edition, toolchain, time_limit_s)
    fixed = rejected = similarity = None
    if example.fix is not None:
        fixed = strip_annotations(example.fix.code)
        rejected, similarity = fix_problem(source, fixed)
        if rejected:
            fixed = None
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "key": example.key,
        "origin": "error-index",
        "tool": "rustc",
        "source": source,
        "source_path": "$SRC/main.rs",
        "edition": edition,
        "toolchain": toolchain.version,
        "env": dict(BOOTSTRAP_ENV),
        "time_limit_s": time_limit_s,
        "expected_code": block.expected_code,
        "example": {"page": example.page, "index": example.index, "tags": list(block.tags),
                    "tagged_edition": block.edition},
        "fixed_source": fixed,
        "fix_edition": edition if fixed is not None else None,
        "fix_compiles": fix_compiles(fixed, edition, toolchain, time_limit_s) if fixed is not None else None,
    }
    if similarity is not None:
        record["fix_similarity"] = round(similarity, 3)
    if rejected:
        record["fix_rejected"] = rejected
    record.update(compiled.record_fields())
    return record


@dataclasses.dataclass(frozen=True)
class CorpusSummary:
    """What one error-index run produced; ``seconds`` is wall-clock, for the log only."""

    examples: int
    with_expected: int  # examples whose tag names a code
    matched: int  # ... and that produced it
    fixes: int
    fixes_compiled: int
    timed_out: int
    seconds: float

    @property
    def matched_percent(self) -> float:
        return 100.0 * self.matched / self.with_expected if self.with_expected else 0.0

    def line(self) -> str:
        return (
            f"error-index: {self.examples} examples, expected code produced for {self.matched}/"
            f"{self.with_expected} ({self.matched_percent:.1f}%), fixes compiled {self.fixes_compiled}/"
            f"{self.fixes}, timed out {self.timed_out}, {self.seconds:.1f} s"
        )


def build_corpus(
    output: str | Path,
    *,
    limit: int | None = None,
    jobs: int = 2,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    toolchain: Toolchain | None = None,
    progress: Callable[[str], None] | None | str = None,
) -> CorpusSummary:
    """Compile the first ``limit`` examples (all when None), ``jobs`` at a time, into ``output``.

    Records are written in (page, index) order whatever order the compiles finish in.
    """
    if limit is not None and limit < 1:
        raise MeapDataError(f"--limit must be at least 1, got {limit}")
    toolchain = toolchain or find_toolchain()
    examples = all_examples(error_codes_dir(toolchain))[:limit]
    start = time.monotonic()
    n = {"expected": 0, "matched": 0, "fixes": 0, "fixed": 0, "timed_out": 0}

    def one(example: Example) -> dict[str, Any]:
        return example_record(example, toolchain, time_limit_s=time_limit_s)

    bar = Progress(len(examples), "error-index: compiling", sink=progress)

    def ordered() -> Iterator[dict[str, Any]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for record in pool.map(one, examples):
                if record["expected_code"]:
                    n["expected"] += 1
                    n["matched"] += record["expected_code"] in record["produced_codes"]
                n["fixes"] += record["fixed_source"] is not None
                n["fixed"] += bool(record["fix_compiles"])
                n["timed_out"] += record["timed_out"]
                bar.update(1, f"{n['matched']}/{n['expected']} produced their expected code")
                yield record

    count = write_records(output, ordered())
    bar.close(f"{n['matched']}/{n['expected']} produced their expected code")
    return CorpusSummary(count, n["expected"], n["matched"], n["fixes"], n["fixed"], n["timed_out"],
                         time.monotonic() - start)
