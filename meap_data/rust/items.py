"""Where the items of a Rust file are: functions, impl, trait and mod blocks, and the
test-only code among them. Pure functions of the source text (the lexer's tokens).

Used to cut a mutant's context out of a large file (the largest enclosing item that fits
a line budget) and to keep mutations out of code ``cargo check`` never compiles
(``#[cfg(test)]`` modules and ``#[test]`` functions).
"""

from __future__ import annotations

import dataclasses
import re

from meap_data.rust.lexer import Token, matching

_ITEM_KEYWORDS = ("fn", "impl", "trait", "mod")
# Tokens that may stand right before an item keyword (visibility, qualifiers, the end
# of an attribute or of the previous item); ``-> impl Trait`` and ``x: impl`` are types.
_ITEM_PREFIX = {"}", ";", "{", "]", ")", "pub", "unsafe", "async", "const", "extern", "default", "auto"}
_TEST_ATTR = re.compile(r"#\[\s*(?:cfg\s*\(\s*test\s*\)|test\s*\]|tokio::test|bench\s*\])")


@dataclasses.dataclass(frozen=True)
class Block:
    """An item with a braced body (``keyword``: fn, impl, trait or mod). Offsets are
    characters: ``start`` is the start of
    its first attribute or doc-comment line, ``body`` the offset of ``{``, ``end`` just
    past the closing ``}``; ``test``: the item is test-only code."""

    keyword: str
    name: str
    start: int
    body: int
    end: int
    test: bool

    def contains(self, lo: int, hi: int) -> bool:
        return self.start <= lo and hi <= self.end


def _line_start(src: str, offset: int) -> int:
    return src.rfind("\n", 0, offset) + 1


def _attribute_start(src: str, offset: int) -> int:
    """Move ``offset`` (a line start) up over the attribute and ``///`` lines above it."""
    while offset > 0:
        prev = _line_start(src, offset - 1)
        text = src[prev:offset].strip()
        if not (text.startswith("#[") or text.startswith("///") or text.startswith("/**")
                or (text.startswith("#") and text.endswith("]"))):
            break
        offset = prev
    return offset


def item_blocks(src: str, toks: list[Token]) -> list[Block]:
    """Every fn, impl, trait and mod item with a body, in source order (nested ones too)."""
    blocks: list[Block] = []
    for k, t in enumerate(toks):
        if t.tag != "ident" or t.text not in _ITEM_KEYWORDS:
            continue
        if k and toks[k - 1].text not in _ITEM_PREFIX and toks[k - 1].tag != "str":  # extern "C" fn
            continue
        if t.text == "fn" and not (k + 2 < len(toks) and toks[k + 1].tag == "ident"
                                   and toks[k + 2].text in ("(", "<")):
            continue
        j, depth = k + 1, 0
        while j < len(toks) and not (depth == 0 and toks[j].text in ("{", ";")):
            depth += toks[j].text in ("(", "[")
            depth -= toks[j].text in (")", "]")
            j += 1
        if j >= len(toks) or toks[j].text != "{":
            continue
        close = matching(toks, j)
        if close is None:
            continue
        start = _attribute_start(src, _line_start(src, t.start))
        name = toks[k + 1].text if k + 1 < len(toks) and toks[k + 1].tag == "ident" else ""
        header = src[start:toks[j].start]
        blocks.append(Block(t.text, name, start, toks[j].start, toks[close].end, bool(_TEST_ATTR.search(header))))
    # Test-only code includes everything nested in a test item.
    tests = [b for b in blocks if b.test]
    return [dataclasses.replace(b, test=True) if not b.test and any(o.contains(b.start, b.end) for o in tests) else b
            for b in blocks]


def innermost(blocks: list[Block], lo: int, hi: int, keyword: str | None = None) -> Block | None:
    """The smallest block (a ``keyword`` item) holding the character range [lo, hi)."""
    inside = [b for b in blocks if b.contains(lo, hi) and keyword in (None, b.keyword)]
    return min(inside, key=lambda b: b.end - b.start, default=None)


def context_window(src: str, blocks: list[Block], lo: int, hi: int, max_lines: int) -> tuple[int, int] | None:
    """The character range a repair example shows for an edit of [lo, hi): the whole
    file when it has at most ``max_lines`` lines, else the largest enclosing item that
    does (a method, its impl block, a module...), from the start of its first line to
    the end of its last; None when not even the innermost item fits."""
    def lines(a: int, b: int) -> int:
        return src.count("\n", a, b) + (0 if b and src[b - 1] == "\n" else 1)

    if lines(0, len(src)) <= max_lines:
        return 0, len(src)
    best = None
    for b in sorted((b for b in blocks if b.contains(lo, hi)), key=lambda b: b.end - b.start):
        end = src.find("\n", b.end)
        end = len(src) if end < 0 else end + 1
        if lines(b.start, end) > max_lines:
            break
        best = (b.start, end)
    return best

