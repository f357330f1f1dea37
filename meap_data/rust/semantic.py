"""Semantic mutation operators: edits that keep a Rust file compiling but change what
it computes, the bugs a test suite catches. Pure functions of the source text.

Operators (family ``semantic``):

- ``off_by_one``: a comparison's boundary moved (``<`` <-> ``<=``, ``>`` <-> ``>=``);
- ``swapped_comparison``: a comparison turned around (``<`` <-> ``>``, ``<=`` <-> ``>=``,
  ``==`` <-> ``!=``);
- ``wrong_operator``: ``+`` <-> ``-``, ``*`` <-> ``/``, ``&&`` <-> ``||``;
- ``dropped_negation``: a ``!`` removed;
- ``wrong_index``: an index one further (``v[i]`` -> ``v[i + 1]``);
- ``early_return``: a function returns a default at once (``return false;``, ``None``,
  ``0``, an empty ``String``/``Vec``, or ``return;``).

Every site is one expression on one line: ``[start, end)`` of the file, its ``original``
text and the ``replacement``; an early return inserts a line after the body's ``{``.
:func:`schema_text` writes the *mutant schema* of many sites at once: each expression
becomes ``(if crate::__meap_mutant(ID) { NEW } else { OLD })`` on the same line, so one
build of the crate holds every mutant and the environment variable ``MEAP_MUTANT``
picks the one a test run sees (mutant schemata, Untch et al. 1993; what makes testing
thousands of mutants affordable). Line numbers of the schema equal the original's;
:func:`map_location` turns a schema's ``file:line:col`` into the plain mutant's.

Sites are found only where an ``if`` expression is allowed: function bodies outside
test code, ``const fn``, macro arguments, ``const``/``static`` items and array lengths.
Operands are delimited by Rust's operator precedence over the lexer's tokens; a site
whose guess is wrong fails to compile in the schema and is dropped there.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from meap_data.rust.items import Block, innermost, item_blocks
from meap_data.rust.lexer import KEYWORDS, Token, line_of, matching, matching_angle, tokenize
from meap_data.rust.mutations import _in_macro_or_attr

HELPER = "__meap_mutant"
ENV_VAR = "MEAP_MUTANT"

#: Binary operator precedence (higher binds tighter); ``as`` binds tighter than all.
_PREC = {"*": 10, "/": 10, "%": 10, "+": 9, "-": 9, "<<": 8, ">>": 8, "&": 7, "^": 6, "|": 5,
         "==": 4, "!=": 4, "<": 4, ">": 4, "<=": 4, ">=": 4, "&&": 3, "||": 2}
# Tokens that end an operand scan whichever side they are on.
_STOP = {",", ";", "=>", "=", "+=", "-=", "*=", "/=", "%=", "^=", "&=", "|=", "<<=", ">>=", "..", "..=", ":",
         "{", "}", "return", "break", "if", "while", "match", "in", "let", "else", "for", "move", "loop",
         "unsafe", "async", "await", "|"}
_OPERAND_END_TAGS = {"ident", "int", "float", "str", "char"}


@dataclasses.dataclass(frozen=True)
class SemanticSite:
    """Replace ``[start, end)`` (one line; empty for an insertion) by ``replacement``.
    ``newline``: the plain mutant puts ``replacement`` on a new line (early return)."""

    operator: str
    start: int
    end: int
    original: str
    replacement: str
    line: int
    newline: str = ""  # early return: "\n" + indent, written before the replacement
    column: int = 0  # 1-based character column of start (filled by sites_in_bodies)

    def apply(self, src: str) -> str:
        """The plain mutant: what a person's buggy file would look like."""
        return src[:self.start] + self.newline + self.replacement + src[self.end:]

    def schema(self, mutant_id: int) -> str:
        """This site's text in a mutant schema (same line as the original)."""
        switch = f"crate::{HELPER}({mutant_id})"
        if self.operator == "early_return":
            return f" if {switch} {{ {self.replacement} }}"
        return f"(if {switch} {{ {self.replacement} }} else {{ {self.original} }})"


def _binary_ops(toks: list[Token]) -> list[tuple[int, int, str]]:
    """(first token, last token, operator) of binary operators, joining ``<`` ``<``
    and ``>`` ``>`` into shifts and leaving out generic angle brackets and unary uses."""
    generic: set[int] = set()
    for k in range(len(toks) - 1):
        if toks[k].text == "::" and toks[k + 1].text == "<":
            close = matching_angle(toks, k + 1)
            if close is not None:
                generic.update((k + 1, close))
    out = []
    k = 0
    while k < len(toks):
        t = toks[k]
        text, last = t.text, k
        if text in ("<", ">") and k + 1 < len(toks) and toks[k + 1].text == text and toks[k + 1].start == t.end:
            text, last = text * 2, k + 1
        if text in _PREC and k not in generic and _ends_operand(toks, k - 1) and _starts_operand(toks, last + 1):
            out.append((k, last, text))
        k = last + 1
    return out


def _ends_operand(toks: list[Token], k: int) -> bool:
    if k < 0:
        return False
    t = toks[k]
    return (t.tag in _OPERAND_END_TAGS and t.text not in KEYWORDS - {"self", "Self", "true", "false"}) \
        or t.text in (")", "]", "?")


def _starts_operand(toks: list[Token], k: int) -> bool:
    if k >= len(toks):
        return False
    t = toks[k]
    return t.tag in _OPERAND_END_TAGS or t.text in ("(", "[", "!", "-", "&", "*", "self", "Self") or \
        t.text in ("true", "false")


def _left(toks: list[Token], k: int, prec: int, closers: dict[int, int]) -> int | None:
    """First token of the left operand of the operator at ``k``."""
    j = k - 1
    while j >= 0:
        t = toks[j].text
        if t in (")", "]"):
            j = closers.get(j, -1)
            if j < 0:
                return None
        elif t in ("(", "[") or t in _STOP:
            break
        elif t in _PREC or (t in ("<", ">") and j > 0 and toks[j - 1].text == t):
            if _ends_operand(toks, j - 1) and _PREC.get(t, 8) < prec or (_PREC.get(t, 8) == 4 == prec):
                break
        j -= 1
    return j + 1 if j + 1 < k else None


def _right(toks: list[Token], k: int, prec: int) -> int | None:
    """Last token of the right operand of the operator ending at ``k``."""
    j = k + 1
    while j < len(toks):
        t = toks[j].text
        if t in ("(", "["):
            close = matching(toks, j)
            if close is None:
                return None
            j = close + 1
            continue
        if t in (")", "]") or t in _STOP:
            break
        if t in _PREC and _ends_operand(toks, j - 1) and _PREC[t] <= prec:
            break
        j += 1
    return j - 1 if j - 1 > k else None


def _closers(toks: list[Token]) -> dict[int, int]:
    """{index of ``)``/``]``: index of its opener}."""
    out, stack = {}, []
    for k, t in enumerate(toks):
        if t.text in ("(", "["):
            stack.append(k)
        elif t.text in (")", "]") and stack:
            out[k] = stack.pop()
    return out


_SWAPS = {
    "off_by_one": {"<": "<=", "<=": "<", ">": ">=", ">=": ">"},
    "swapped_comparison": {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "!=", "!=": "=="},
    "wrong_operator": {"+": "-", "-": "+", "*": "/", "/": "*", "&&": "||", "||": "&&"},
}


def _binary_sites(name: str, src: str, toks: list[Token]) -> list[SemanticSite]:
    swaps = _SWAPS[name]
    closers = _closers(toks)
    sites = []
    for k, last, op in _binary_ops(toks):
        if op not in swaps:
            continue
        lo = _left(toks, k, _PREC[op], closers)
        hi = _right(toks, last, _PREC[op])
        if lo is None or hi is None:
            continue
        start, end = toks[lo].start, toks[hi].end
        if "\n" in src[start:end]:
            continue
        original = src[start:end]
        a, b = toks[k].start - start, toks[last].end - start
        sites.append(SemanticSite(name, start, end, original, original[:a] + swaps[op] + original[b:],
                                  line_of(src, start)))
    return sites


def off_by_one(src: str, toks: list[Token]) -> list[SemanticSite]:
    """A comparison's boundary moved: ``i < n`` -> ``i <= n``."""
    return _binary_sites("off_by_one", src, toks)


def swapped_comparison(src: str, toks: list[Token]) -> list[SemanticSite]:
    """A comparison turned around: ``a < b`` -> ``a > b``, ``==`` -> ``!=``."""
    return _binary_sites("swapped_comparison", src, toks)


def wrong_operator(src: str, toks: list[Token]) -> list[SemanticSite]:
    """``+``/``-``, ``*``/``/`` and ``&&``/``||`` exchanged."""
    return _binary_sites("wrong_operator", src, toks)


def dropped_negation(src: str, toks: list[Token]) -> list[SemanticSite]:
    """A logical ``!`` dropped: ``!v.is_empty()`` -> ``v.is_empty()``."""
    sites = []
    for k, t in enumerate(toks[:-1]):
        if t.text != "!" or _ends_operand(toks, k - 1) or toks[k + 1].text in ("=", "!"):
            continue
        j = k + 1
        while j < len(toks):  # a postfix expression: path, calls, fields, indexing, ?
            if toks[j].text in ("(", "["):
                close = matching(toks, j)
                if close is None:
                    break
                j = close + 1
            elif toks[j].tag in ("ident", "int", "float") or toks[j].text in (".", "::", "?", "&"):
                j += 1
            else:
                break
        if j == k + 1 or toks[j - 1].text in (".", "::", "&") or j < len(toks) and toks[j].text == "as":
            continue
        start, end = t.start, toks[j - 1].end
        if "\n" in src[start:end]:
            continue
        sites.append(SemanticSite("dropped_negation", start, end, src[start:end], src[t.end:end].lstrip(),
                                  line_of(src, start)))
    return sites


def wrong_index(src: str, toks: list[Token]) -> list[SemanticSite]:
    """An index one further: ``v[i]`` -> ``v[i + 1]`` (no ranges)."""
    sites = []
    for k, t in enumerate(toks):
        if t.text != "[" or not _ends_operand(toks, k - 1) or toks[k - 1].text in KEYWORDS:
            continue
        close = matching(toks, k)
        if close is None or close == k + 1:
            continue
        inner = toks[k + 1:close]
        if any(x.text in ("..", "..=", ";", ",", "&") for x in inner) or toks[k + 1].tag == "str":
            continue
        start, end = toks[k + 1].start, toks[close - 1].end
        if "\n" in src[start:end]:
            continue
        original = src[start:end]
        new = str(int(original) + 1) if inner[0].tag == "int" and len(inner) == 1 and original.isdigit() \
            else f"{original} + 1"
        sites.append(SemanticSite("wrong_index", start, end, original, new, line_of(src, start)))
    return sites


_DEFAULTS = [
    (re.compile(r"^bool$"), "false"),
    (re.compile(r"^Option\s*<.*>$"), "None"),
    (re.compile(r"^(?:u8|u16|u32|u64|u128|usize|i8|i16|i32|i64|i128|isize)$"), "0"),
    (re.compile(r"^(?:f32|f64)$"), "0.0"),
    (re.compile(r"^String$"), "String::new()"),
    (re.compile(r"^Vec\s*<.*>$"), "Vec::new()"),
]


def early_return(src: str, toks: list[Token], blocks: list[Block] | None = None) -> list[SemanticSite]:
    """A function that returns a default value first thing (``return false;``)."""
    blocks = item_blocks(src, toks) if blocks is None else blocks
    sites = []
    for b in blocks:
        if b.keyword != "fn" or b.test:
            continue
        header = src[b.start:b.body]
        if re.search(r"\b(?:const|async)\s+(?:unsafe\s+)?fn\b", header):
            continue
        ret = header.split("->", 1)[1] if "->" in header else ""
        ret = re.split(r"\bwhere\b", ret)[0].strip()
        if ret:
            value = next((v for pattern, v in _DEFAULTS if pattern.match(ret)), None)
            if value is None:
                continue
            text = f"return {value};"
        else:
            text = "return;"
        line_start = src.rfind("\n", 0, b.body) + 1
        indent = re.match(r"[ \t]*", src[line_start:])[0] + "    "
        after = src[b.body + 1:src.find("\n", b.body) if "\n" in src[b.body:] else len(src)]
        if after.strip() or src[b.body + 1:b.end - 1].strip() == "":
            continue  # a one-line or empty body
        sites.append(SemanticSite("early_return", b.body + 1, b.body + 1, "", text, line_of(src, b.body),
                                  newline="\n" + indent))
    return sites


OPERATORS: dict[str, Callable[[str, list[Token]], list[SemanticSite]]] = {
    "off_by_one": off_by_one,
    "swapped_comparison": swapped_comparison,
    "wrong_operator": wrong_operator,
    "dropped_negation": dropped_negation,
    "wrong_index": wrong_index,
    "early_return": early_return,
}


def sites_in_bodies(src: str) -> dict[str, list[SemanticSite]]:
    """Every operator's sites where a mutant schema may put an ``if``: inside non-test,
    non-const function bodies, outside macro arguments, attributes, ``const``/``static``
    items and array lengths."""
    try:
        toks = tokenize(src)
    except ValueError:
        return {name: [] for name in OPERATORS}
    blocks = item_blocks(src, toks)
    inside_macro = _in_macro_or_attr(toks)
    banned = _const_ranges(src, toks)
    by_start = {t.start: k for k, t in enumerate(toks)}
    out = {}
    for name, find in OPERATORS.items():
        keep = []
        for site in (early_return(src, toks, blocks) if name == "early_return" else find(src, toks)):
            fn = innermost(blocks, site.start, site.end, "fn")
            if fn is None or fn.test or site.start <= fn.body or re.search(r"\bconst\s+fn\b", src[fn.start:fn.body]):
                continue
            if any(b.test and b.contains(site.start, site.end) for b in blocks):
                continue
            k = by_start.get(site.start)
            if (k is not None and inside_macro[k]) or any(lo <= site.start < hi for lo, hi in banned):
                continue
            keep.append(dataclasses.replace(site, column=site.start - src.rfind("\n", 0, site.start)))
        out[name] = keep
    return out


def _const_ranges(src: str, toks: list[Token]) -> list[tuple[int, int]]:
    """Character ranges evaluated at compile time: ``const``/``static`` statements and
    array lengths ``[x; N]``."""
    out = []
    for k, t in enumerate(toks):
        if t.text in ("const", "static") and k + 1 < len(toks) and toks[k + 1].tag == "ident" \
                and toks[k + 1].text not in ("fn", "unsafe", "async", "extern"):
            end = next((j for j in range(k, len(toks)) if toks[j].text == ";"), len(toks) - 1)
            out.append((t.start, toks[end].end))
        elif t.text == ";" and k:
            depth, j = 0, k - 1
            while j >= 0:
                if toks[j].text in (")", "]", "}"):
                    depth += 1
                elif toks[j].text in ("(", "[", "{"):
                    if depth == 0:
                        break
                    depth -= 1
                j -= 1
            if j >= 0 and toks[j].text == "[":
                close = matching(toks, j)
                if close is not None:
                    out.append((t.end, toks[close].start))
    return out


def schema_text(src: str, sites: list[tuple[int, SemanticSite]]) -> str:
    """``src`` with each (id, site) written as its schema; sites must not overlap."""
    for mutant_id, site in sorted(sites, key=lambda s: s[1].start, reverse=True):
        src = src[:site.start] + site.schema(mutant_id) + src[site.end:]
    return src


def helper_source(no_std: bool) -> str:
    """The switch the schema calls, appended to the crate root: which mutant is live,
    read once from ``MEAP_MUTANT`` (0 or unset: none)."""
    std = "    extern crate std;\n" if no_std else ""
    return (f"\n#[doc(hidden)]\n#[allow(dead_code, missing_docs, unreachable_pub)]\n/// meap-data: mutant switch.\n"
            f"pub fn {HELPER}(id: u32) -> bool {{\n{std}"
            f"    static LIVE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();\n"
            f"    *LIVE.get_or_init(|| std::env::var(\"{ENV_VAR}\").ok().and_then(|v| v.parse().ok()).unwrap_or(0)) == id\n"
            f"}}\n")


def plain_column(site: SemanticSite, mutant_id: int, column: int, live: bool) -> int:
    """A 1-based column on ``site``'s line of the schema, seen in the plain file where
    ``site`` is the live mutant (``live``) or absent. Columns inside the switch's own
    text map to the site's start."""
    start, schema = site.column, site.schema(mutant_id)
    if column < start:
        return column
    if column >= start + len(schema):  # after the site: the schema's extra length goes
        kept = 0 if site.operator == "early_return" else len(site.replacement if live else site.original)
        return column - len(schema) + kept
    if site.operator == "early_return":
        return start
    lead = len(f"(if crate::{HELPER}({mutant_id}) {{ ")
    at = lead if live else len(schema) - len(" })") - len(site.original)
    text = site.replacement if live else site.original
    return column - at if at <= column - start < at + len(text) else start


def map_location(live: tuple[int, SemanticSite], site_on_line: tuple[int, SemanticSite] | None, line: int,
                 column: int) -> tuple[int, int]:
    """A (line, column) of a schema file, seen in the plain mutant of ``live`` (id, site).
    ``site_on_line``: the schema's site on that line of that file, if any (at most one
    per line); the live mutant's own line when it is the one. An early return's new line
    moves the lines below it down by one."""
    live_id, live_site = live
    if site_on_line is not None:
        other_id, other = site_on_line
        column = plain_column(other, other_id, column, other is live_site)
    if live_site.operator == "early_return" and site_on_line is not None and site_on_line[1] is live_site:
        return line, column
    if live_site.operator == "early_return" and line > live_site.line:
        return line + 1, column
    return line, column
