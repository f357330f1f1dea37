"""A small Rust lexer: enough to find mutation sites without touching comments or strings.

Tokens carry their tag and character offsets into the source. Tags: ``ident``
(keywords included), ``lifetime``, ``int``, ``float``, ``str`` (all string forms: raw,
byte, C), ``char``, ``punct``. Comments and whitespace are skipped. Multi-character
operators that mutation sites need (``::``, ``->``, ``=>``, ``&&``, ``||``, ``..``,
comparison and compound assignment) are one token; ``<`` and ``>`` stay single so generic
brackets can be matched.
"""

from __future__ import annotations

import dataclasses
import re

KEYWORDS = frozenset("""as async await break const continue crate dyn else enum extern false fn for if impl in
let loop match mod move mut pub ref return self Self static struct super trait true type union unsafe use where
while""".split())

_IDENT = re.compile(r"(?:r#)?[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0x[0-9A-Fa-f_]+(?:[iu](?:8|16|32|64|128|size))?|0o[0-7_]+(?:[iu](?:8|16|32|64|128|size))?"
    r"|0b[01_]+(?:[iu](?:8|16|32|64|128|size))?"
    r"|(?P<dec>[0-9][0-9_]*)(?P<frac>\.(?![.A-Za-z_])[0-9_]*)?(?P<exp>[eE][+-]?[0-9_]+)?"
    r"(?P<suffix>(?:[iu](?:8|16|32|64|128|size)|f32|f64))?"
)
_PUNCT3 = ("..=", "...", "<<=", ">>=")
_PUNCT2 = ("::", "->", "=>", "&&", "||", "..", "==", "!=", "<=", ">=", "+=", "-=", "*=", "/=", "%=", "^=",
           "&=", "|=")
_CHAR = re.compile(r"b?'(?:[^'\\\n]|\\(?:x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f_]{1,6}\}|.))'")
_RAW_STR = re.compile(r'(?:br|cr|r)(?P<hashes>#*)"')


@dataclasses.dataclass(frozen=True)
class Token:
    tag: str  # ident, lifetime, int, float, str, char or punct
    text: str
    start: int  # character offset
    end: int

    def is_(self, text: str) -> bool:
        return self.text == text


class LexError(ValueError):
    """Text the lexer cannot follow (an unterminated string or comment)."""


def tokenize(src: str) -> list[Token]:
    """The tokens of ``src``, comments and whitespace left out."""
    out: list[Token] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
            continue
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
            continue
        if src.startswith("/*", i):
            i = _skip_block_comment(src, i)
            continue
        m = _RAW_STR.match(src, i)
        if m:
            close = '"' + m["hashes"]
            j = src.find(close, m.end())
            if j < 0:
                raise LexError(f"unterminated raw string at offset {i}")
            out.append(Token("str", src[i:j + len(close)], i, j + len(close)))
            i = j + len(close)
            continue
        if c == '"' or (c in "bc" and src.startswith('"', i + 1)):
            j = _skip_string(src, i + (0 if c == '"' else 1))
            out.append(Token("str", src[i:j], i, j))
            i = j
            continue
        if c == "'" or (c == "b" and src.startswith("'", i + 1)):
            m = _CHAR.match(src, i)
            if m:
                out.append(Token("char", m[0], i, m.end()))
                i = m.end()
                continue
            if c == "'":
                m = _IDENT.match(src, i + 1)
                if m:
                    out.append(Token("lifetime", src[i:m.end()], i, m.end()))
                    i = m.end()
                    continue
        m = _IDENT.match(src, i)
        if m:
            out.append(Token("ident", m[0], i, m.end()))
            i = m.end()
            continue
        if c.isdigit():
            m = _NUMBER.match(src, i)
            tag = "float" if (m["frac"] is not None or m["exp"] or (m["suffix"] or "").startswith("f")) else "int"
            out.append(Token(tag, m[0], i, m.end()))
            i = m.end()
            continue
        for op in _PUNCT3 + _PUNCT2:
            if src.startswith(op, i):
                out.append(Token("punct", op, i, i + len(op)))
                i += len(op)
                break
        else:
            out.append(Token("punct", c, i, i + 1))
            i += 1
    return out


def _skip_block_comment(src: str, i: int) -> int:
    depth, i = 0, i
    while i < len(src):
        if src.startswith("/*", i):
            depth += 1
            i += 2
        elif src.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    raise LexError("unterminated block comment")


def _skip_string(src: str, i: int) -> int:
    """Offset just past the string literal whose opening quote is at ``i``."""
    j = i + 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == '"':
            return j + 1
        j += 1
    raise LexError(f"unterminated string at offset {i}")


def matching(tokens: list[Token], at: int) -> int | None:
    """Index of the bracket closing ``tokens[at]`` (one of ``( [ {``), or None."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    open_, close = tokens[at].text, pairs[tokens[at].text]
    depth = 0
    for k in range(at, len(tokens)):
        t = tokens[k].text
        if t == open_:
            depth += 1
        elif t == close:
            depth -= 1
            if depth == 0:
                return k
    return None


def matching_angle(tokens: list[Token], at: int) -> int | None:
    """Index of the ``>`` closing the generic ``<`` at ``at`` (``>>`` is lexed as two)."""
    depth = 0
    for k in range(at, len(tokens)):
        t = tokens[k].text
        if t == "<":
            depth += 1
        elif t == ">":
            depth -= 1
            if depth == 0:
                return k
        elif t in (";", "{", "}") or (t == ")" and depth == 0):
            return None
    return None


def line_of(src: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return src.count("\n", 0, offset) + 1
