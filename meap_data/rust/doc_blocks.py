"""Rust code blocks of the local toolchain's HTML docs, as the programs rustdoc compiles.

Two page families: mdBook books (the book, rust-by-example, the reference, the error
index...) keep a block's info string in ``<code class="language-rust edition2021 ...">``
and its hidden lines in ``<span class="boring">``; rustdoc's API pages (std, core,
alloc) put each example in ``<div class="example-wrap [compile_fail|ignore|...]">`` and
link it to the playground with the *whole* program (hidden lines, the ``fn main``
wrapper, crate attributes) in the link's ``code`` parameter.
"""

from __future__ import annotations

import dataclasses
import html
import re
from urllib.parse import parse_qs, urlsplit

_BLOCK = re.compile(r'<pre(?P<pre>[^>]*)>\s*<code class="(?P<cls>[^"]*)">(?P<body>.*?)</code>\s*</pre>', re.S)
_MDBOOK_MAIN = '<span class="boring">fn main() {\n</span>'
_TAG = re.compile(r"<[^>]+>")
_CODE = re.compile(r"^E\d{4}$")
_EDITION = re.compile(r"^edition(\d{4})$")
# Info-string words that make an mdbook code block Rust (``` alone, ```rust, ```no_run...).
_RUST_LANGS = {"rust", "compile_fail", "no_run", "should_panic", "ignore", "test_harness",
               "edition2015", "edition2018", "edition2021", "edition2024"}
# Tags of blocks that are not meant to compile as shown.
_NOT_COMPILING = {"compile_fail", "ignore", "does_not_compile"}
_API_EXAMPLE = re.compile(r'<div class="example-wrap(?P<cls>[^"]*)">(?P<body>.*?)</div>', re.S)
_PLAY_LINK = re.compile(r'href="(https://play\.rust-lang\.org/\?[^"]*)"')


@dataclasses.dataclass(frozen=True)
class CodeBlock:
    """A code block of a docs page: its info-string tags and its program text."""

    tags: tuple[str, ...]
    code: str

    @property
    def is_rust(self) -> bool:
        return bool(self.tags) and self.tags[0] in _RUST_LANGS

    @property
    def compile_fail(self) -> bool:
        return self.is_rust and "compile_fail" in self.tags and "ignore" not in self.tags

    @property
    def is_fix(self) -> bool:
        """A Rust block rustdoc expects to compile: neither compile_fail nor ignore."""
        return self.is_rust and not _NOT_COMPILING & set(self.tags)

    @property
    def edition(self) -> str:
        for tag in self.tags:
            m = _EDITION.match(tag)
            if m:
                return m[1]
        return "2015"

    @property
    def expected_code(self) -> str | None:
        return next((t for t in self.tags if _CODE.match(t)), None)

    @property
    def needs_nightly(self) -> bool:
        """Uses a feature gate (``#![feature(...)]``): compiles only with RUSTC_BOOTSTRAP."""
        return "#![feature(" in self.code


def page_blocks(page_html: str) -> list[CodeBlock]:
    """The code blocks of one mdBook page, in page order, as the programs rustdoc would compile.

    mdbook keeps the lines it hides (``#![allow(unused)]``, the ``fn main() {`` wrapper,
    the author's ``# `` lines) inside ``<span class="boring">``, so stripping tags
    yields the full program. Two mdbook habits differ from rustdoc and are undone:
    a hidden ``#![feature]`` line lands inside its ``fn main`` wrapper, where it is
    not a crate attribute; and blocks mdbook does not take for Rust (```` ```no_run ````)
    come raw, with ``# `` lines and no wrapper.
    """
    blocks = []
    for m in _BLOCK.finditer(page_html):
        words = m["cls"].split()
        tags = tuple(w[len("language-"):] if w.startswith("language-") else w for w in words)
        code = html.unescape(_TAG.sub("", m["body"]))
        if "playground" in m["pre"]:
            if _MDBOOK_MAIN in m["body"]:
                code = _hoist_crate_attributes(code)
        elif tags and tags[0] in _RUST_LANGS:
            code = rustdoc_wrap(code)
        blocks.append(CodeBlock(tags, code if code.endswith("\n") else code + "\n"))
    return blocks


def api_blocks(page_html: str) -> list[CodeBlock]:
    """The examples of one rustdoc API page that link to the playground, in page order.

    Tags: ``rust``, the example's classes (``compile_fail``, ``should_panic``...) and
    ``editionYYYY`` from the link. An example without a playground link (``ignore``
    examples have none) is left out: its full program is not in the page.
    """
    blocks = []
    for m in _API_EXAMPLE.finditer(page_html):
        link = _PLAY_LINK.search(m["body"])
        if link is None:
            continue
        query = parse_qs(urlsplit(html.unescape(link[1])).query)
        code = query.get("code", [""])[0]
        if not code.strip():
            continue
        tags = ["rust", *m["cls"].split()]
        if "edition" in query:
            tags.append(f"edition{query['edition'][0]}")
        blocks.append(CodeBlock(tuple(tags), code if code.endswith("\n") else code + "\n"))
    return blocks


def _hoist_crate_attributes(code: str) -> str:
    # Move #![...] lines from the top of the fn main body to above `fn main() {`.
    lines = code.split("\n")
    try:
        at = lines.index("fn main() {")
    except ValueError:
        return code
    end = at + 1
    attrs, kept = [], []
    while end < len(lines) and (lines[end].startswith("#![") or not lines[end].strip()
                                or lines[end].lstrip().startswith("//")):
        (attrs if lines[end].startswith("#![") else kept).append(lines[end])
        end += 1
    if not attrs:
        return code
    return "\n".join(lines[:at] + attrs + [lines[at]] + kept + lines[end:])


def rustdoc_wrap(code: str) -> str:
    """Prepare a raw doc-test block the way rustdoc does.

    ``# `` lines are unhidden, crate attributes (``#![...]``) stay at the top, the rest is
    wrapped in ``fn main() { ... }`` unless it defines main, and ``#![allow(unused)]``
    goes first, as rustdoc's default ``doc(test(attr(...)))`` does.
    """
    lines = []
    for line in code.rstrip("\n").split("\n"):
        stripped = line.lstrip()
        if stripped == "#":
            line = ""
        elif stripped.startswith("# "):
            line = line[: len(line) - len(stripped)] + stripped[2:]
        elif stripped.startswith("##"):
            line = line[: len(line) - len(stripped)] + stripped[1:]
        lines.append(line)
    attrs = [l for l in lines if l.startswith("#![")]
    body = [l for l in lines if not l.startswith("#![")]
    text = "\n".join(body)
    if not re.search(r"\bfn\s+main\s*\(", text):
        text = "fn main() {\n" + text + "\n}"
    return "\n".join(["#![allow(unused)]", *attrs, text]) + "\n"
