"""Semantic mutation operators: small edits that make a compiling Rust program fail the
way real programs do. Pure functions of the source text (no compiler here).

Each operator lists every *site* where it applies; a site is a set of text edits and the
line it concerns. :mod:`meap_data.rust.mutate` picks sites, compiles the mutants and keeps
those rustc rejects with an error code. Families (what a model must learn to fix):

- ``types``: a literal of the wrong type, a removed ``&`` or ``mut``, ``&`` made ``&mut``;
- ``names``: an identifier near-miss, a removed ``use``, a dropped argument;
- ``inference``: a removed turbofish, ``let`` type annotation, closure parameter type,
  numeric literal suffix, or the statements that fill a new collection;
- ``ownership``: a removed ``.clone()``, a use after a move, a shared or mutable borrow
  held across another use, a reference to a local returned, a mutation through ``&``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from meap_data.rust.lexer import KEYWORDS, Token, line_of, matching, matching_angle, tokenize

Edit = tuple[int, int, str]  # replace src[start:end] by the text


@dataclasses.dataclass(frozen=True)
class Site:
    """One way to apply an operator: edits (character ranges) and the line it concerns."""

    edits: tuple[Edit, ...]
    line: int

    def apply(self, src: str) -> str:
        for start, end, text in sorted(self.edits, reverse=True):
            src = src[:start] + text + src[end:]
        return src


@dataclasses.dataclass(frozen=True)
class Operator:
    name: str
    family: str
    find: Callable[[str, list[Token]], list[Site]]
    description: str


# Tokens after which a ``&`` is a unary borrow, not a binary and.
_EXPR_START = {"(", ",", "=", "[", "{", ";", "=>", "return", "in", "+=", "-=", "==", "!=", "<", ">", "<=", ">=",
               "&&", "||", "!", ":", "..", "..="}
_NOT_CALLEES = KEYWORDS | {"Some", "Ok", "Err", "Box"}


def _site(src: str, edits: list[Edit], at: int) -> Site:
    return Site(tuple(edits), line_of(src, at))


def _line_span(src: str, offset: int) -> tuple[int, int]:
    """(start, end) of the line holding ``offset``, end past its newline."""
    start = src.rfind("\n", 0, offset) + 1
    end = src.find("\n", offset)
    return start, (len(src) if end < 0 else end + 1)


def _indent(src: str, offset: int) -> str:
    start, _ = _line_span(src, offset)
    m = re.match(r"[ \t]*", src[start:])
    return m[0] if m else ""


def _in_macro_or_attr(toks: list[Token]) -> list[bool]:
    """Per token: inside a macro invocation's brackets or an attribute ``#[...]``."""
    inside = [False] * len(toks)
    k = 0
    while k < len(toks):
        t = toks[k]
        opener = None
        if t.text == "!" and k > 0 and toks[k - 1].tag == "ident" and k + 1 < len(toks) and toks[k + 1].text in "([{":
            opener = k + 1
        elif t.text == "#" and k + 1 < len(toks) and toks[k + 1].text in ("[", "!"):
            opener = k + 1 if toks[k + 1].text == "[" else (k + 2 if k + 2 < len(toks) and toks[k + 2].text == "[" else None)
        if opener is not None:
            close = matching(toks, opener)
            if close is not None:
                for j in range(opener, close + 1):
                    inside[j] = True
                k = close + 1
                continue
        k += 1
    return inside


def _let_bindings(toks: list[Token]) -> list[tuple[int, int, bool]]:
    """(index of ``let``, index of the bound name, declared ``mut``) for ``let [mut] NAME``."""
    out = []
    for k, t in enumerate(toks[:-1]):
        if t.text != "let":
            continue
        j = k + 1
        mut = toks[j].text == "mut"
        if mut:
            j += 1
        if j < len(toks) and toks[j].tag == "ident" and toks[j].text not in KEYWORDS and toks[j].text != "_":
            out.append((k, j, mut))
    return out


def _statement_end(toks: list[Token], k: int) -> int | None:
    """Index of the ``;`` ending the statement that starts at ``k`` (brackets skipped)."""
    j = k
    while j < len(toks):
        t = toks[j].text
        if t in "([{":
            close = matching(toks, j)
            if close is None:
                return None
            j = close + 1
            continue
        if t == ";":
            return j
        if t == "}":
            return None
        j += 1
    return None


def _uses_after(toks: list[Token], name: str, after: int) -> list[int]:
    """Indices of later plain uses of a local ``name`` (not a field, method, path or macro)."""
    out = []
    for j in range(after + 1, len(toks)):
        t = toks[j]
        if t.tag != "ident" or t.text != name:
            continue
        before = toks[j - 1].text if j else ""
        after_t = toks[j + 1].text if j + 1 < len(toks) else ""
        if before in (".", "::", "let", "mut", "fn", "struct", "enum", "'") or after_t in ("!", "::", ":"):
            continue
        out.append(j)
    return out


# ------------------------------------------------------------------ types


def wrong_literal_type(src: str, toks: list[Token]) -> list[Site]:
    """An integer literal written as a string (``5`` -> ``"5"``)."""
    inside = _in_macro_or_attr(toks)
    sites = []
    for k, t in enumerate(toks):
        if t.tag == "int" and not inside[k] and not (k and toks[k - 1].text in (".", ";")):
            digits = t.text.replace("_", "")
            sites.append(_site(src, [(t.start, t.end, f'"{digits}"')], t.start))
    return sites


def _unary_borrows(toks: list[Token]) -> list[int]:
    return [k for k, t in enumerate(toks)
            if t.text == "&" and k and (toks[k - 1].text in _EXPR_START or toks[k - 1].tag == "ident"
                                        and toks[k - 1].text in ("return", "in", "match", "if", "while"))]


def remove_borrow(src: str, toks: list[Token]) -> list[Site]:
    """A borrow removed where one was needed (``f(&x)`` -> ``f(x)``, ``&mut x`` -> ``x``)."""
    inside = _in_macro_or_attr(toks)
    sites = []
    for k in _unary_borrows(toks):
        if inside[k] or k + 1 >= len(toks):
            continue
        end = toks[k + 2].start if toks[k + 1].text == "mut" and k + 2 < len(toks) else toks[k + 1].start
        sites.append(_site(src, [(toks[k].start, end, "")], toks[k].start))
    return sites


def borrow_to_mut_borrow(src: str, toks: list[Token]) -> list[Site]:
    """A shared borrow made mutable (``&x`` -> ``&mut x``)."""
    inside = _in_macro_or_attr(toks)
    return [_site(src, [(toks[k].end, toks[k].end, "mut ")], toks[k].start)
            for k in _unary_borrows(toks)
            if not inside[k] and k + 1 < len(toks) and toks[k + 1].text not in ("mut", "&", "'")
            and toks[k + 1].tag != "lifetime"]


def remove_mut(src: str, toks: list[Token]) -> list[Site]:
    """``let mut x`` -> ``let x`` for a binding that is then mutated."""
    return [_site(src, [(toks[k + 1].start, toks[k + 2].start, "")], toks[k].start)
            for k, _, mut in _let_bindings(toks) if mut]


# ------------------------------------------------------------------ names


def _near_miss(name: str) -> str:
    """A typo: two adjacent letters swapped (first differing pair after the first), else
    the last letter dropped."""
    for i in range(1, len(name) - 1):
        if name[i] != name[i + 1] and name[i] != "_" and name[i + 1] != "_":
            return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    return name[:-1]


def identifier_near_miss(src: str, toks: list[Token]) -> list[Site]:
    """A later use of a local misspelled (``count`` -> ``cuont``)."""
    sites = []
    for k, j, _ in _let_bindings(toks):
        name = toks[j].text
        if len(name) < 3 or name.startswith("_"):
            continue
        for u in _uses_after(toks, name, j):
            t = toks[u]
            sites.append(_site(src, [(t.start, t.end, _near_miss(name))], t.start))
    return sites


def remove_use(src: str, toks: list[Token]) -> list[Site]:
    """A ``use`` declaration deleted (the whole line when it stands alone)."""
    sites = []
    for k, t in enumerate(toks):
        if t.text != "use" or (k and toks[k - 1].text not in (";", "{", "}", "]", "pub")):
            continue
        end = _statement_end(toks, k)
        if end is None:
            continue
        start = toks[k - 1].start if k and toks[k - 1].text == "pub" else t.start
        line_start, line_end = _line_span(src, start)
        if src[line_start:start].strip() == "" and src[toks[end].end:line_end].strip() == "":
            sites.append(_site(src, [(line_start, line_end, "")], start))
        else:
            sites.append(_site(src, [(start, toks[end].end, "")], start))
    return sites


def drop_argument(src: str, toks: list[Token]) -> list[Site]:
    """A call's last argument left out (``f(a, b)`` -> ``f(a)``)."""
    inside = _in_macro_or_attr(toks)
    sites = []
    for k, t in enumerate(toks[:-1]):
        if (t.tag != "ident" or t.text in _NOT_CALLEES or toks[k + 1].text != "(" or inside[k]
                or (k and toks[k - 1].text in ("fn", "struct", "enum", "impl", "trait", "|"))):
            continue
        close = matching(toks, k + 1)
        if close is None or close == k + 2:
            continue
        commas = [j for j in range(k + 2, close) if toks[j].text == "," and _depth(toks, k + 2, j) == 0]
        if commas and commas[-1] == close - 1:  # trailing comma
            commas = commas[:-1]
        start = toks[commas[-1]].start if commas else toks[k + 2].start
        sites.append(_site(src, [(start, toks[close].start, "")], t.start))
    return sites


def _depth(toks: list[Token], lo: int, hi: int) -> int:
    d = 0
    for j in range(lo, hi):
        if toks[j].text in "([{":
            d += 1
        elif toks[j].text in ")]}":
            d -= 1
    return d


# ------------------------------------------------------------------ inference


def remove_turbofish(src: str, toks: list[Token]) -> list[Site]:
    """An explicit type argument dropped (``collect::<Vec<_>>()`` -> ``collect()``)."""
    sites = []
    for k, t in enumerate(toks[:-1]):
        if t.text == "::" and toks[k + 1].text == "<":
            close = matching_angle(toks, k + 1)
            if close is not None:
                sites.append(_site(src, [(t.start, toks[close].end, "")], t.start))
    return sites


_SUFFIX = re.compile(r"_?(?:[iu](?:8|16|32|64|128|size)|f32|f64)$")


def remove_literal_suffix(src: str, toks: list[Token]) -> list[Site]:
    """A numeric literal's type suffix dropped (``2.0_f64.sqrt()`` -> ``2.0.sqrt()``),
    leaving ``{integer}``/``{float}`` for inference to pin."""
    sites = []
    for t in toks:
        if t.tag in ("int", "float") and not t.text.startswith(("0x", "0o", "0b")):
            m = _SUFFIX.search(t.text)
            if m and m.start() > 0:
                sites.append(_site(src, [(t.start + m.start(), t.end, "")], t.start))
    return sites


def remove_let_type(src: str, toks: list[Token]) -> list[Site]:
    """A ``let`` type annotation dropped (``let v: Vec<i32> = ...`` -> ``let v = ...``)."""
    sites = []
    for k, t in enumerate(toks):
        if t.text != "let":
            continue
        j, depth = k + 1, 0
        while j < len(toks) and toks[j].text not in (";", "=") and not (toks[j].text == ":" and depth == 0):
            depth += toks[j].text in "([{"
            depth -= toks[j].text in ")]}"
            j += 1
        if j >= len(toks) or toks[j].text != ":":
            continue
        eq = j
        while eq < len(toks) and toks[eq].text not in ("=", ";"):
            eq += 1
        if eq < len(toks) and toks[eq].text == "=":
            sites.append(_site(src, [(toks[j].start, toks[eq].start, " ")], t.start))
    return sites


def remove_closure_param_types(src: str, toks: list[Token]) -> list[Site]:
    """A closure's parameter types dropped (``|x: i32| x + 1`` -> ``|x| x + 1``)."""
    sites = []
    for k, t in enumerate(toks):
        if t.text != "|" or not k or toks[k - 1].text not in ("(", ",", "=", "{", ";", "move", "=>", "return"):
            continue
        end = k + 1
        while end < len(toks) and toks[end].text != "|":
            if toks[end].text in (";", "{", "}"):
                break
            end += 1
        if end >= len(toks) or toks[end].text != "|":
            continue
        edits = []
        j = k + 1
        while j < end:
            if toks[j].text == ":" and _depth(toks, k + 1, j) == 0:
                stop = j + 1
                angle = 0
                while stop < end and not (toks[stop].text == "," and angle == 0 and _depth(toks, j, stop) == 0):
                    angle += (toks[stop].text == "<") - (toks[stop].text == ">")
                    stop += 1
                edits.append((toks[j].start, toks[stop - 1].end, ""))
                j = stop
            j += 1
        if edits:
            sites.append(_site(src, edits, t.start))
    return sites


_GENERIC_COLLECTIONS = {"Vec", "VecDeque", "HashMap", "HashSet", "BTreeMap", "BTreeSet", "BinaryHeap", "LinkedList"}


def remove_filling_statements(src: str, toks: list[Token]) -> list[Site]:
    """The statements that fill a new, unannotated collection deleted, so nothing tells
    it its element type (``let mut v = Vec::new(); v.push(1); v.len()`` -> no push)."""
    sites = []
    for k, j, mut in _let_bindings(toks):
        eq = j + 1
        if (not mut or eq + 4 >= len(toks) or toks[eq].text != "=" or toks[eq + 1].text not in _GENERIC_COLLECTIONS
                or toks[eq + 2].text != "::" or toks[eq + 3].text not in ("new", "with_capacity", "default")):
            continue
        end = _statement_end(toks, k)
        if end is None:
            continue
        name = toks[j].text
        edits = []
        for first in _lines_using(src, toks, name, end, mutating=True):
            line_start, line_end = _line_span(src, toks[first].start)
            if toks[first].text == name and src[line_start:line_end].rstrip().endswith(";"):
                edits.append((line_start, line_end, ""))
        if edits and len(_uses_after(toks, name, end)) > len(edits):  # something still reads it
            sites.append(_site(src, sorted(set(edits)), toks[k].start))
    return sites


# ------------------------------------------------------------------ ownership


def remove_clone(src: str, toks: list[Token]) -> list[Site]:
    """A ``.clone()`` dropped, so the value is moved instead."""
    return [_site(src, [(toks[k].start, toks[k + 3].end, "")], toks[k].start)
            for k in range(len(toks) - 3)
            if toks[k].text == "." and toks[k + 1].text == "clone" and toks[k + 2].text == "("
            and toks[k + 3].text == ")"]


def use_after_move(src: str, toks: list[Token]) -> list[Site]:
    """A local moved away right after it is bound, while later code still uses it."""
    sites = []
    for k, j, _ in _let_bindings(toks):
        end = _statement_end(toks, k)
        if end is None or not _uses_after(toks, toks[j].text, end):
            continue
        line_start, line_end = _line_span(src, toks[end].end)
        if src[toks[end].end:line_end].strip():
            continue  # something else follows on the line
        text = f"{_indent(src, toks[k].start)}let taken = {toks[j].text};\n"
        sites.append(_site(src, [(line_end, line_end, text)], line_end))
    return sites


_MUTATING_CALLS = {"push", "push_str", "insert", "remove", "clear", "pop", "truncate", "extend", "sort",
                   "sort_unstable", "retain", "drain", "append", "dedup", "reverse", "swap", "entry",
                   "push_back", "push_front", "pop_back", "pop_front", "iter_mut", "get_mut", "as_mut_str"}


def _lines_using(src: str, toks: list[Token], name: str, after: int, mutating: bool) -> list[int]:
    """Token indices (first token of their line) of later whole-line statements that use
    ``name`` (mutating: call a mutating method on it or assign to it)."""
    out = []
    for u in _uses_after(toks, name, after):
        nxt = toks[u + 1].text if u + 1 < len(toks) else ""
        if mutating and not ((nxt == "." and u + 2 < len(toks) and toks[u + 2].text in _MUTATING_CALLS)
                             or nxt in ("=", "+=", "-=", "*=", "/=", "[")):
            continue
        line_start, _ = _line_span(src, toks[u].start)
        first = next(i for i in range(u, -1, -1) if i == 0 or toks[i - 1].end <= line_start)
        if first < len(toks) and toks[first].text not in ("let", "}", "else") and src[line_start:toks[first].start].strip() == "":
            out.append(first)
    return out


def _hold_borrow(src: str, toks: list[Token], borrow: str, mutating: bool) -> list[Site]:
    sites = []
    for k, j, mut in _let_bindings(toks):
        if not mut:
            continue
        name = toks[j].text
        end = _statement_end(toks, k)
        if end is None:
            continue
        for first in _lines_using(src, toks, name, end, mutating):
            line_start, line_end = _line_span(src, toks[first].start)
            if not src[line_start:line_end].rstrip().endswith(";"):
                continue
            ind = _indent(src, toks[first].start)
            before = f"{ind}let held = {borrow}{name};\n"
            after = f"{ind}drop(held);\n"
            sites.append(_site(src, [(line_start, line_start, before), (line_end, line_end, after)], toks[first].start))
    return sites


def borrow_across_mutation(src: str, toks: list[Token]) -> list[Site]:
    """A shared borrow of a local held across a line that mutates it."""
    return _hold_borrow(src, toks, "&", mutating=True)


def mutable_borrow_across_use(src: str, toks: list[Token]) -> list[Site]:
    """A mutable borrow of a local held across a line that uses it."""
    return _hold_borrow(src, toks, "&mut ", mutating=False)


def return_local_reference(src: str, toks: list[Token]) -> list[Site]:
    """A function made to return a reference to its own local (``-> String`` ... ``s``
    becomes ``-> &'static String`` ... ``&s``; ``-> &String`` when a parameter lends one)."""
    sites = []
    for k, t in enumerate(toks):
        if t.text != "fn" or k + 2 >= len(toks) or toks[k + 2].text not in ("(", "<"):
            continue
        paren = k + 2 if toks[k + 2].text == "(" else None
        if paren is None:
            close_angle = matching_angle(toks, k + 2)
            if close_angle is None or close_angle + 1 >= len(toks) or toks[close_angle + 1].text != "(":
                continue
            paren = close_angle + 1
        close = matching(toks, paren)
        if close is None or close + 2 >= len(toks) or toks[close + 1].text != "->":
            continue
        ret = close + 2
        body = next((j for j in range(ret, len(toks)) if toks[j].text in ("{", ";", "where")), None)
        if body is None or toks[body].text != "{" or toks[ret].text in ("&", "impl", "!", "("):
            continue
        end = matching(toks, body)
        if end is None or toks[end - 1].tag != "ident":
            continue
        tail = toks[end - 1]
        locals_ = {toks[j].text for let, j, _ in _let_bindings(toks) if body < let < end}
        if tail.text not in locals_ or toks[end - 2].text not in (";", "}"):
            continue
        lends = any(toks[j].text == "&" for j in range(paren, close))
        prefix = "&" if lends else "&'static "
        sites.append(_site(src, [(toks[ret].start, toks[ret].start, prefix), (tail.start, tail.start, "&")],
                           tail.start))
    return sites


def mutate_through_shared_ref(src: str, toks: list[Token]) -> list[Site]:
    """A ``&mut`` parameter (or ``&mut self``) made a shared ``&``, while the body mutates
    through it."""
    return [_site(src, [(toks[k + 1].start, toks[k + 2].start, "")], toks[k].start)
            for k in range(1, len(toks) - 2)
            if toks[k].text == "&" and toks[k + 1].text == "mut" and toks[k - 1].text in (":", "(", ",")
            and _inside_fn_params(toks, k)]


def _inside_fn_params(toks: list[Token], k: int) -> bool:
    depth = 0
    for j in range(k - 1, -1, -1):
        t = toks[j].text
        if t == ")":
            depth += 1
        elif t == "(":
            if depth == 0:
                return j >= 2 and (toks[j - 2].text == "fn" or toks[j - 1].text == ">")
            depth -= 1
        elif t in ("{", "}", ";"):
            return False
    return False


OPERATORS: tuple[Operator, ...] = (
    Operator("wrong_literal_type", "types", wrong_literal_type, "an integer literal written as a string"),
    Operator("remove_borrow", "types", remove_borrow, "a needed & (or &mut) removed"),
    Operator("borrow_to_mut_borrow", "types", borrow_to_mut_borrow, "& made &mut"),
    Operator("remove_mut", "ownership", remove_mut, "let mut made let"),
    Operator("identifier_near_miss", "names", identifier_near_miss, "a local's use misspelled"),
    Operator("remove_use", "names", remove_use, "a use declaration deleted"),
    Operator("drop_argument", "names", drop_argument, "a call's last argument left out"),
    Operator("remove_turbofish", "inference", remove_turbofish, "::<T> removed"),
    Operator("remove_let_type", "inference", remove_let_type, "a let type annotation removed"),
    Operator("remove_closure_param_types", "inference", remove_closure_param_types, "closure parameter types removed"),
    Operator("remove_literal_suffix", "inference", remove_literal_suffix, "a numeric literal's type suffix removed"),
    Operator("remove_filling_statements", "inference", remove_filling_statements,
             "the statements filling a new collection removed"),
    Operator("remove_clone", "ownership", remove_clone, ".clone() removed"),
    Operator("use_after_move", "ownership", use_after_move, "a local moved, then used"),
    Operator("borrow_across_mutation", "ownership", borrow_across_mutation, "a shared borrow held across a mutation"),
    Operator("mutable_borrow_across_use", "ownership", mutable_borrow_across_use, "a mutable borrow held across a use"),
    Operator("return_local_reference", "ownership", return_local_reference, "a reference to a local returned"),
    Operator("mutate_through_shared_ref", "ownership", mutate_through_shared_ref, "&mut parameter made &"),
)
BY_NAME = {op.name: op for op in OPERATORS}


def sites_of(src: str, operator: Operator) -> list[Site]:
    """Every site of ``operator`` in ``src`` (none when the source cannot be lexed)."""
    try:
        toks = tokenize(src)
    except ValueError:
        return []
    return operator.find(src, toks)
