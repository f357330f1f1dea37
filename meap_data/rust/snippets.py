"""``meap-data rust snippets``: the compiling code blocks of the local toolchain's docs.

The rust-docs component holds thousands of Rust programs that rustdoc expects to compile:
the examples of the std/core/alloc API pages (their playground links carry the whole
program, hidden lines included) and the blocks of the mdBook books (the book,
rust-by-example, the reference, the nomicon...). This module extracts every block not
marked ``compile_fail``/``ignore``/``does_not_compile``, in a fixed order (collection,
page path, position), drops exact duplicates (core's examples reappear under std), and
keeps the ones that type-check (``rustc --emit=metadata``) with their own edition; a block
with a feature gate gets ``RUSTC_BOOTSTRAP=1`` (recorded in its ``env``), no other does.
Each record (``schemas/rust_snippet.schema.json``) names where it came from. These are
the programs ``meap-data rust mutate`` breaks into repair examples.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema

from meap_data.errors import MeapDataError
from meap_data.progress import Progress
from meap_data.rust.doc_blocks import CodeBlock, api_blocks, page_blocks
from meap_data.rust.harvest import Toolchain, compile_source, find_toolchain
from meap_data.rust.records import make_key, write_records

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "rust_snippet.schema.json"
BOOTSTRAP_ENV = {"RUSTC_BOOTSTRAP": "1"}
#: mdBook collections under share/doc/rust/html, in extraction order.
BOOKS = ("book", "rust-by-example", "reference", "nomicon", "edition-guide", "embedded-book", "cargo",
         "rustc", "rustdoc", "unstable-book", "style-guide")
#: rustdoc API collections.
API_CRATES = ("std", "core", "alloc", "proc_macro")
COLLECTIONS = BOOKS + API_CRATES
#: A type-check of a doc example takes ~0.06 s; anything near this is stuck.
SNIPPET_TIME_LIMIT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Snippet:
    """A doc block expected to compile: where it is, and the program."""

    collection: str
    page: str  # path relative to the collection, e.g. "ch04-01-what-is-ownership.html"
    index: int  # position among the page's blocks
    block: CodeBlock
    duplicates: int = 0  # later blocks with the same program, dropped

    @property
    def key(self) -> str:
        return make_key(f"{self.collection}/{self.page}#{self.index}")

    @property
    def env(self) -> dict[str, str]:
        return dict(BOOTSTRAP_ENV) if self.block.needs_nightly else {}


def docs_root(toolchain: Toolchain) -> Path:
    """The toolchain's HTML docs, or a MeapDataError naming the fix."""
    root = Path(toolchain.sysroot) / "share" / "doc" / "rust" / "html"
    if not (root / "std").is_dir():
        raise MeapDataError(f"the Rust docs are not installed ({root} has no std/); install them with "
                            "`rustup component add rust-docs`")
    return root


def collection_blocks(root: Path, collection: str) -> Iterator[tuple[str, int, CodeBlock]]:
    """(page, index, block) of every Rust block of one collection, in path order."""
    base = root / collection
    if not base.is_dir():
        return
    extract = api_blocks if collection in API_CRATES else page_blocks
    for path in sorted(base.rglob("*.html")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if "play.rust-lang.org" not in text and "language-" not in text:
            continue
        for index, block in enumerate(b for b in extract(text) if b.is_rust):
            yield path.relative_to(base).as_posix(), index, block


def find_snippets(root: Path, collections: tuple[str, ...] = COLLECTIONS) -> tuple[list[Snippet], dict[str, int]]:
    """Unique blocks expected to compile, in extraction order, and counts of what was seen."""
    unknown = [c for c in collections if c not in COLLECTIONS]
    if unknown:
        raise MeapDataError(f"unknown doc collections {unknown}; choose from {', '.join(COLLECTIONS)}")
    stats = {"blocks": 0, "expected_to_compile": 0, "duplicates": 0}
    first: dict[str, int] = {}
    found: list[Snippet] = []
    for collection in collections:
        for page, index, block in collection_blocks(root, collection):
            stats["blocks"] += 1
            if not block.is_fix:
                continue
            stats["expected_to_compile"] += 1
            identity = block.code.strip()
            if identity in first:
                stats["duplicates"] += 1
                at = first[identity]
                found[at] = dataclasses.replace(found[at], duplicates=found[at].duplicates + 1)
                continue
            first[identity] = len(found)
            found.append(Snippet(collection, page, index, block))
    return found, stats


def snippet_record(snippet: Snippet, toolchain: Toolchain, time_limit_s: float) -> tuple[dict[str, Any] | None, str]:
    """(record, "") when the snippet type-checks, else (None, the reason it was dropped)."""
    block = snippet.block
    compiled = compile_source(block.code, toolchain, edition=block.edition, time_limit_s=time_limit_s,
                              extra_env=snippet.env)
    if compiled.timed_out:
        return None, "timed_out"
    if compiled.exit_code != 0:
        return None, "does_not_compile"
    return {
        "schema_version": SCHEMA_VERSION,
        "key": snippet.key,
        "source": block.code,
        "edition": block.edition,
        "env": snippet.env,
        "toolchain": toolchain.version,
        "doc": {"collection": snippet.collection, "page": snippet.page, "index": snippet.index,
                "tags": list(block.tags), "duplicates": snippet.duplicates},
        "sha256": hashlib.sha256(block.code.encode("utf-8")).hexdigest(),
    }, ""


@dataclasses.dataclass(frozen=True)
class SnippetSummary:
    """Counts of one run; ``seconds`` is wall-clock, for the log only."""

    blocks: int
    expected_to_compile: int
    duplicates: int
    checked: int
    compiled: int
    dropped: dict[str, int]
    bootstrap: int
    by_collection: dict[str, int]
    seconds: float

    def line(self) -> str:
        rate = 100.0 * self.compiled / max(self.checked, 1)
        return (f"snippets: {self.blocks} Rust blocks, {self.expected_to_compile} expected to compile, "
                f"{self.duplicates} duplicates dropped, {self.compiled}/{self.checked} compiled ({rate:.1f}%; "
                f"{self.bootstrap} with RUSTC_BOOTSTRAP), {self.seconds:.0f} s")


def build_snippets(
    output: str | Path,
    *,
    jobs: int = 2,
    time_limit_s: float = SNIPPET_TIME_LIMIT_S,
    collections: tuple[str, ...] = COLLECTIONS,
    limit: int | None = None,
    toolchain: Toolchain | None = None,
    progress: Callable[[str], None] | None | str = "stderr",
) -> SnippetSummary:
    """Extract, type-check (``jobs`` at a time) and write the compiling snippets to
    ``output`` in extraction order, whatever order the compiles finish in."""
    if jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {jobs}")
    if limit is not None and limit < 1:
        raise MeapDataError(f"--limit must be at least 1, got {limit}")
    toolchain = toolchain or find_toolchain()
    start = time.monotonic()
    snippets, stats = find_snippets(docs_root(toolchain), collections)
    snippets = snippets[:limit]
    dropped: dict[str, int] = {}
    by_collection: dict[str, int] = {}
    bar = Progress(len(snippets), "snippets: type-checking", sink=progress)

    def one(snippet: Snippet):
        return snippet_record(snippet, toolchain, time_limit_s)

    def kept() -> Iterator[dict[str, Any]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            for record, reason in pool.map(one, snippets):
                bar.update(1)
                if record is None:
                    dropped[reason] = dropped.get(reason, 0) + 1
                    continue
                collection = record["doc"]["collection"]
                by_collection[collection] = by_collection.get(collection, 0) + 1
                yield record

    records = list(kept())
    write_records_checked(output, records)
    bar.close(f"{len(records)} compiled")
    return SnippetSummary(stats["blocks"], stats["expected_to_compile"], stats["duplicates"], len(snippets),
                          len(records), dict(sorted(dropped.items())), sum(1 for r in records if r["env"]),
                          by_collection, time.monotonic() - start)


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate_snippet(record: Any) -> str | None:
    """None when ``record`` is a valid snippet record, else one line saying why."""
    error = jsonschema.exceptions.best_match(_validator().iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{where}: {error.message[:200]}"


def write_records_checked(output: str | Path, records: list[dict[str, Any]]) -> int:
    for record in records:
        problem = validate_snippet(record)
        if problem:
            raise MeapDataError(f"internal error: snippet {record.get('key')} fails its schema: {problem}")
    return write_records(output, records)


def read_snippets(path: str | Path) -> Iterator[dict[str, Any]]:
    """Snippet records of a JSON-lines file; a one-line error naming the line otherwise."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise MeapDataError(f"cannot read snippets {p}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise MeapDataError(f"{p}:{number}: not JSON ({e.msg}); expected snippet records from "
                                "'meap-data rust snippets'") from e
        problem = validate_snippet(record)
        if problem:
            raise MeapDataError(f"{p}:{number}: not a snippet record ({problem}); see schemas/rust_snippet.schema.json")
        yield record
