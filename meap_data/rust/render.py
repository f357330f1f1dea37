"""Training text from transcript records: pure functions of the record.

Three renderings:

- diagnose: prompt = the source, response = what the compiler printed;
- repair: prompt = the source and the compiler output, response = the fixed source;
- transcript: one plain text, a shell session (cat the source, run the compiler, see
  the output, and the fix when there is one), for pre-training.

Every rendering also comes as a :class:`Layout`, which marks each character range with
the kind of text it holds, so masking can treat them differently: ``source`` (the
program), ``message`` (what the compiler says), ``code`` (an error code or lint name,
masked as one unit), ``echo`` (a snippet line that merely repeats the source, never
masked), ``fix`` (the corrected program) and ``template`` (our own scaffolding).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

from meap_data.errors import MeapDataError

KINDS = ("template", "source", "message", "code", "fix", "echo")

_ECHO = re.compile(r"^(?P<num>\s*\d+) *(?P<bar>[|-]) ?(?P<code>.*)$")
_DIFF = re.compile(r"^\s*\d+ *[+~] ?")
_LOCATION = re.compile(r"^\s*(?:-->|:::) (?P<file>.+?)(?::\d+(?::\d+)?)?$")
_CHILD = re.compile(r"^(?P<level>note|help|warning|error)(?:\[[\w:]+\])?: ")
_HEADER_CODE = re.compile(r"^(?:error|warning|error: internal compiler error)\[(?P<code>[\w:]+)\]")
_E_CODE = re.compile(r"\bE\d{4}\b")
_LINT_ATTR = re.compile(r"#!?\[(?:warn|deny|forbid|allow|expect)\((?P<lint>[\w:]+)\)\]")


@dataclasses.dataclass(frozen=True)
class Segment:
    """Characters ``[start, end)`` of ``prompt + response`` hold text of one kind."""

    start: int
    end: int
    kind: str


@dataclasses.dataclass(frozen=True)
class Layout:
    """A rendering: the prompt, the response (where loss is taken) and the kinds of text."""

    prompt: str
    response: str
    segments: tuple[Segment, ...]

    @property
    def text(self) -> str:
        return self.prompt + self.response

    def pair(self) -> tuple[str, str]:
        return self.prompt, self.response


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.segments: list[Segment] = []
        self.length = 0

    def add(self, text: str, kind: str) -> None:
        if text:
            self.segments.append(Segment(self.length, self.length + len(text), kind))
            self.parts.append(text)
            self.length += len(text)

    def add_output(self, text: str, sources: Mapping[str, list[str]]) -> None:
        for seg in output_segments(text, sources):
            self.segments.append(Segment(seg.start + self.length, seg.end + self.length, seg.kind))
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        return "".join(self.parts)


def output_segments(text: str, sources: Mapping[str, list[str]] | None = None) -> list[Segment]:
    """Kinds of the characters of compiler output (offsets into ``text``).

    A snippet line (``3 |     let x: i32 = "a";``) is ``echo``: it repeats the source
    that the reader has already seen. The exception is a line in a ``help:`` snippet
    whose code differs from the source line it numbers: that is a suggested edit, new
    text, so it is ``message``. ``sources`` maps file names as they appear after
    ``-->`` to their lines; unknown files count as echoed. Error codes (``E0308``) and
    lint names (``#[warn(unused_variables)]``) are ``code`` segments inside messages.
    """
    sources = sources or {}
    segments: list[Segment] = []
    pos = 0
    file: str | None = None
    in_help = False
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        m = _LOCATION.match(body)
        if m:
            file = m["file"]
        elif _CHILD.match(body):
            in_help = body.startswith("help")
        elif body and not body[0].isspace() and not body[0].isdigit():
            in_help = False
        echo = _ECHO.match(body)
        if echo and not _DIFF.match(body) and _is_echo(echo, sources.get(file or ""), in_help, file in sources):
            segments.append(Segment(pos, pos + len(line), "echo"))
        else:
            segments.append(Segment(pos, pos + len(line), "message"))
            segments.extend(_code_units(body, pos))
        pos += len(line)
    return segments


def _is_echo(m: re.Match[str], lines: list[str] | None, in_help: bool, known: bool) -> bool:
    if not in_help or not known or lines is None:
        return True
    number = int(m["num"])
    if not 1 <= number <= len(lines):
        return True
    # rustc renders tabs as four spaces and may cut long lines; compare loosely.
    return m["code"].strip() == lines[number - 1].replace("\t", "    ").strip()


def _code_units(line: str, offset: int) -> list[Segment]:
    found = []
    m = _HEADER_CODE.match(line)
    if m:
        found.append((m.start("code"), m.end("code")))
    found += [(x.start(), x.end()) for x in _E_CODE.finditer(line) if not m or x.start() != m.start("code")]
    found += [(x.start("lint"), x.end("lint")) for x in _LINT_ATTR.finditer(line)]
    return [Segment(offset + a, offset + b, "code") for a, b in sorted(set(found))]


# ---------------------------------------------------------------------- helpers


def display_path(record: Mapping[str, Any]) -> str:
    """The source path as the compiler names it (``$SRC/`` dropped)."""
    path = str(record.get("source_path", "main.rs"))
    return path[len("$SRC/"):] if path.startswith("$SRC/") else path


def _sources(record: Mapping[str, Any]) -> dict[str, list[str]]:
    files = record.get("files")
    if files:
        return {name: text.splitlines() for name, text in files.items() if name.endswith(".rs")}
    return {display_path(record): str(record["source"]).splitlines()}


def _fenced(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _require(record: Mapping[str, Any], *, fix: bool = False) -> None:
    key = record.get("key", "?")
    if record.get("timed_out"):
        raise MeapDataError(f"record {key!r} timed out: it has no compiler output to train on; skip it")
    if fix and not record.get("fixed_source"):
        raise MeapDataError(f"record {key!r} has no fixed_source, so no repair example; use the diagnose task")


def _command(record: Mapping[str, Any]) -> str:
    return " ".join(record.get("argv") or [record.get("tool", "rustc")])


def _source_block(b: _Builder, record: Mapping[str, Any]) -> None:
    b.add(f"### Rust source: {display_path(record)} (edition {record['edition']})\n```rust\n", "template")
    b.add(_fenced(str(record["source"])), "source")
    b.add("```\n", "template")


# -------------------------------------------------------------------- renderings

#: Prompt headings are fixed strings so a model sees one format across the corpus.
OUTPUT_HEADING = "### Compiler output: {command}\n"
FIX_HEADING = "### Fixed source\n```rust\n"


def diagnose_layout(record: Mapping[str, Any]) -> Layout:
    """Prompt: the source and the command; response: the compiler's human output."""
    _require(record)
    b = _Builder()
    _source_block(b, record)
    b.add(OUTPUT_HEADING.format(command=_command(record)), "template")
    prompt_len, prompt = b.length, b.text()
    b.add_output(str(record["rendered"]), _sources(record))
    return Layout(prompt, b.text()[prompt_len:], tuple(b.segments))


def diagnose(record: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt, response) for the diagnose task; loss goes on the response only."""
    return diagnose_layout(record).pair()


def repair_layout(record: Mapping[str, Any]) -> Layout:
    """Prompt: the source and the compiler output; response: the fixed source."""
    _require(record, fix=True)
    b = _Builder()
    _source_block(b, record)
    b.add(OUTPUT_HEADING.format(command=_command(record)), "template")
    b.add_output(_fenced(str(record["rendered"])), _sources(record))
    b.add(FIX_HEADING, "template")
    prompt_len, prompt = b.length, b.text()
    b.add(_fenced(str(record["fixed_source"])), "fix")
    b.add("```\n", "template")
    return Layout(prompt, b.text()[prompt_len:], tuple(b.segments))


def repair(record: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt, response) for the repair task; loss goes on the response only."""
    return repair_layout(record).pair()


def transcript_layout(record: Mapping[str, Any]) -> Layout:
    """The whole record as a shell session; all of it is ``response`` (no prompt)."""
    b = _Builder()
    files = record.get("files")
    if files:
        b.add(f"$ cd {display_path(record)}\n", "template")
        for name, text in files.items():
            b.add(f"$ cat {name}\n", "template")
            b.add(_fenced(text), "source")
    else:
        b.add(f"$ cat {display_path(record)}\n", "template")
        b.add(_fenced(str(record["source"])), "source")
    b.add(f"$ {_command(record)}\n", "template")
    if record.get("timed_out"):
        b.add(f"^C  (still compiling after {record.get('time_limit_s', '?')} s)\n", "template")
    else:
        b.add_output(str(record["rendered"]), _sources(record))
    if record.get("fixed_source"):
        b.add(f"$ cat {display_path(record)}  # fixed\n", "template")
        b.add(_fenced(str(record["fixed_source"])), "fix")
        if record.get("fix_compiles"):
            b.add(f"$ {_command(record)}\n", "template")
    return Layout("", b.text(), tuple(b.segments))


def transcript_text(record: Mapping[str, Any]) -> str:
    """Plain pre-training text for a record (see :func:`transcript_layout`)."""
    return transcript_layout(record).text
