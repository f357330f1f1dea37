"""One diagnostic model for rustc and cargo output, and the parsers that fill it.

Four inputs share the model: rustc's JSON (``--error-format=json``, one object per
line on stderr), cargo's JSON stream (``--message-format=json``, diagnostics wrapped as
``reason: "compiler-message"`` on stdout), and the human-rendered output of both (ANSI
colour stripped, CRLF tolerated). JSON is authoritative; the human parser recovers
level, code, message, primary location, notes, helps and most labels, but not
suggestion replacements or their applicability, which rustc never prints as such.

Parsers never raise on bad input: they return the diagnostics they found plus a list
of problems, each a one-line reason naming the line.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

#: rustc's level string for a bug in the compiler itself (Level::Bug).
ICE_LEVEL = "error: internal compiler error"

LEVELS = ("error", "warning", "note", "help", "failure-note", ICE_LEVEL)

_ANSI = re.compile(r"\x1b\[[0-9;:?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


@dataclass(frozen=True)
class Span:
    """A source region: 1-based line and column (columns count characters)."""

    file: str
    line: int
    column: int
    line_end: int | None = None
    column_end: int | None = None
    label: str | None = None
    is_primary: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "line_end": self.line_end,
            "column_end": self.column_end,
            "label": self.label,
            "is_primary": self.is_primary,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Span":
        return cls(
            d["file"], d["line"], d["column"], d.get("line_end"), d.get("column_end"),
            d.get("label"), bool(d.get("is_primary", False)),
        )


@dataclass(frozen=True)
class Suggestion:
    """A machine-readable edit offered by a help: replace the span with ``replacement``."""

    message: str
    file: str
    line: int
    column: int
    line_end: int
    column_end: int
    replacement: str
    applicability: str | None  # MachineApplicable, MaybeIncorrect, HasPlaceholders, Unspecified

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "line_end": self.line_end,
            "column_end": self.column_end,
            "replacement": self.replacement,
            "applicability": self.applicability,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Suggestion":
        return cls(
            d["message"], d["file"], d["line"], d["column"], d["line_end"], d["column_end"],
            d["replacement"], d.get("applicability"),
        )


@dataclass
class Diagnostic:
    """A top-level compiler message.

    ``code`` is an E-code (``E0308``) or a lint name (``unused_variables``); ``primary``
    is the location rustc prints after ``-->``; ``labels`` are every other labelled span.
    """

    level: str
    message: str
    code: str | None = None
    primary: Span | None = None
    labels: list[Span] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    helps: list[str] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    rendered: str | None = None

    def identity(self) -> tuple[str, str | None, str | None, int | None, int | None, str]:
        """(level, code, file, line, column, message): what both formats must agree on."""
        p = self.primary
        return (
            self.level, self.code,
            p.file if p else None, p.line if p else None, p.column if p else None,
            self.message,
        )

    @property
    def is_summary(self) -> bool:
        """True for rustc's closing lines (``aborting due to ...``, ``For more information ...``)."""
        if self.level == "failure-note":
            return True
        return self.code is None and self.primary is None and bool(_SUMMARY_MESSAGE.match(self.message))

    def to_dict(self) -> dict[str, Any]:
        """The record form (schema ``$defs/diagnostic``): plain JSON types only."""
        return {
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "primary": self.primary.to_dict() if self.primary else None,
            "labels": [s.to_dict() for s in self.labels],
            "notes": list(self.notes),
            "helps": list(self.helps),
            "suggestions": [s.to_dict() for s in self.suggestions],
            "rendered": self.rendered,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Diagnostic":
        """Inverse of :meth:`to_dict`."""
        return cls(
            level=d["level"],
            message=d["message"],
            code=d.get("code"),
            primary=Span.from_dict(d["primary"]) if d.get("primary") else None,
            labels=[Span.from_dict(s) for s in d.get("labels", [])],
            notes=list(d.get("notes", [])),
            helps=list(d.get("helps", [])),
            suggestions=[Suggestion.from_dict(s) for s in d.get("suggestions", [])],
            rendered=d.get("rendered"),
        )


_SUMMARY_MESSAGE = re.compile(
    r"^(aborting due to .*|\d+ warnings? emitted)$"
)


@dataclass
class ParseResult:
    """What a parser found: diagnostics in input order, and one reason per problem."""

    diagnostics: list[Diagnostic]
    problems: list[str]
    format: str  # "json", "human" or "empty"

    def codes(self) -> list[str]:
        """Distinct codes in first-seen order (E-codes and lint names)."""
        seen: dict[str, None] = {}
        for d in self.diagnostics:
            if d.code:
                seen.setdefault(d.code, None)
        return list(seen)


# ---------------------------------------------------------------------------- input


def strip_ansi(text: str) -> str:
    """Remove ANSI colour and cursor escapes (CSI, OSC hyperlinks, two-byte escapes)."""
    return _ANSI.sub("", text)


def decode(data: bytes | str) -> tuple[str, list[str]]:
    """UTF-8 text and problems: invalid bytes become U+FFFD and are reported by offset."""
    if isinstance(data, str):
        return data, []
    problems = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        problems.append(
            f"invalid UTF-8 at byte {e.start} ({data[e.start:e.start + 1]!r}); "
            "decoded with U+FFFD replacement characters"
        )
        text = data.decode("utf-8", errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    return text, problems


def _lines(text: str) -> list[str]:
    return strip_ansi(text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")


def parse(data: bytes | str) -> ParseResult:
    """Parse any of the four formats, choosing JSON when a line starts with ``{``."""
    text, problems = decode(data)
    if not text.strip():
        return ParseResult([], problems + ["input is empty"], "empty")
    is_json = any(line.lstrip().startswith("{") for line in text.splitlines())
    result = parse_json(text) if is_json else parse_human(text)
    result.problems[:0] = problems
    return result


# ----------------------------------------------------------------------------- JSON


def parse_json(text: str) -> ParseResult:
    """Parse a rustc JSON stream or a cargo ``--message-format=json`` stream.

    Lines that are not JSON (an ICE's panic text, cargo status lines) are parsed as
    human output in place, so the order of diagnostics is the order of the stream.
    """
    diagnostics: list[Diagnostic] = []
    problems: list[str] = []
    pending: list[tuple[int, str]] = []
    messages = 0  # JSON objects that belong to the protocol, diagnostic or not

    def flush_text() -> None:
        if not pending:
            return
        first = pending[0][0]
        found, text_problems = _parse_human_lines([l for _, l in pending], first)
        diagnostics.extend(found)
        problems.extend(text_problems)
        pending.clear()

    for number, raw in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.strip()
        # A JSON value starts a line; indented "[... omitted 1 frame ...]" is backtrace text.
        if not (line.startswith("{") or raw.startswith("[")):
            if line or pending:  # blank lines separate diagnostics in the text between
                pending.append((number, raw))
            continue
        flush_text()
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {number}: invalid JSON ({e.msg} at column {e.colno}); truncated line?")
            continue
        found = _from_json_object(obj, diagnostics)
        messages += not found
        problems.extend(f"line {number}: {p}" for p in found)
    flush_text()
    if not diagnostics and not messages:
        problems.append("no diagnostic found in the JSON stream")
    return ParseResult(diagnostics, problems, "json")


def _from_json_object(obj: Any, out: list[Diagnostic]) -> list[str]:
    if not isinstance(obj, dict):
        return [f"JSON {type(obj).__name__} is not a diagnostic object"]
    if "reason" in obj:
        # cargo's protocol: only compiler-message carries a diagnostic; artifacts,
        # build-script and build-finished records are expected and skipped.
        if obj["reason"] != "compiler-message":
            return []
        obj = obj.get("message")
        if not isinstance(obj, dict):
            return ["cargo compiler-message without a 'message' object"]
    message_type = obj.get("$message_type", "diagnostic")
    if message_type != "diagnostic":
        return []  # artifact notices, future-incompat reports, unused-extern lists
    missing = [k for k in ("message", "level", "spans") if k not in obj]
    if missing:
        return [f"JSON object is not a rustc diagnostic (missing {', '.join(repr(k) for k in missing)})"]
    try:
        out.append(_diagnostic_from_json(obj))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        return [f"malformed rustc diagnostic ({type(e).__name__}: {e})"]
    return []


def _span_from_json(s: dict[str, Any]) -> Span:
    return Span(
        file=str(s["file_name"]),
        line=int(s["line_start"]),
        column=int(s["column_start"]),
        line_end=int(s["line_end"]),
        column_end=int(s["column_end"]),
        label=s.get("label") or None,  # rustc sends "" for an unlabelled span
        is_primary=bool(s.get("is_primary")),
    )


def _diagnostic_from_json(obj: dict[str, Any]) -> Diagnostic:
    code = obj.get("code")
    spans = [_span_from_json(s) for s in obj["spans"]]
    primary = next((s for s in spans if s.is_primary), None)
    if primary is not None:
        # rustc's "-->" names the earliest primary span of the first primary span's file.
        primary = min((s for s in spans if s.is_primary and s.file == primary.file), key=lambda s: (s.line, s.column))
    d = Diagnostic(
        level=str(obj["level"]),
        message=str(obj["message"]),
        code=str(code["code"]) if isinstance(code, dict) and code.get("code") else None,
        primary=primary,
        labels=sorted((s for s in spans if s is not primary and (s.label is not None or s.is_primary)), key=_span_order),
        rendered=strip_ansi(obj["rendered"]) if isinstance(obj.get("rendered"), str) else None,
    )
    d.suggestions.extend(_suggestions(obj["message"], obj["spans"]))
    for child in obj.get("children") or []:
        target = d.helps if child.get("level") == "help" else d.notes
        target.append(str(child["message"]))
        d.suggestions.extend(_suggestions(str(child["message"]), child.get("spans") or []))
    return d


def _span_order(s: Span) -> tuple[str, int, int, int, int]:
    return (s.file, s.line, s.column, s.line_end or 0, s.column_end or 0)


def _suggestions(message: str, spans: Iterable[dict[str, Any]]) -> list[Suggestion]:
    return [
        Suggestion(
            message=message,
            file=str(s["file_name"]),
            line=int(s["line_start"]),
            column=int(s["column_start"]),
            line_end=int(s["line_end"]),
            column_end=int(s["column_end"]),
            replacement=str(s["suggested_replacement"]),
            applicability=s.get("suggestion_applicability"),
        )
        for s in spans
        if s.get("suggested_replacement") is not None
    ]


# ---------------------------------------------------------------------------- human

_HEADER = re.compile(
    r"^(?P<level>error: internal compiler error|error|warning|note|help|failure-note)"
    r"(?:\[(?P<code>[A-Za-z0-9_:]+)\])?: (?P<message>.*)$"
)
_LOCATION = re.compile(r"^(?P<indent>\s*)(?P<arrow>-->|:::) (?P<file>.+?)(?::(?P<line>\d+)(?::(?P<col>\d+))?)?\s*$")
_GUTTER = re.compile(r"^(?P<num>\s*\d+)? *(?P<bar>[|+~-])(?: (?P<text>.*)|$)")
_EQ_NOTE = re.compile(r"^(?P<prefix>\s*= (?P<level>note|help|warning|error)(?:\[[\w:]+\])?: )(?P<message>.*)$")
_FAILURE_NOTE = re.compile(
    r"^(For more information about (?:this|an) error, try `rustc --explain E\d+`\."
    r"|Some errors have detailed explanations: .*)$"
)
_PANIC = re.compile(r"^thread '(?P<thread>[^']*)'(?: \([^)]*\))? panicked at (?P<location>.+?):?$")
_CARGO_STATUS = re.compile(
    r"^\s*(?:Compiling|Checking|Finished|Running|Blocking|Updating|Locking|Adding|Fresh|Dirty"
    r"|Documenting|Downloaded|Downloading|Packaging|Verifying|Archiving|Scraping|Removed"
    r"|Building|Locked|Unpacking|Skipping|Ignored|Summary|Creating|Created)\b"
)
# cargo's own per-unit summaries: the human stream has them, the JSON stdout does not.
_CARGO_SUMMARY = re.compile(
    r"^(?:error: could not compile `.*"
    r"|warning: `.*` \(.*\) generated \d+ warnings?.*"
    r"|warning: build failed, waiting for other jobs to finish\.\.\."
    r"|error: build failed)$"
)
_LINT_DEFAULT = re.compile(r"`#\[(?:warn|deny|forbid|expect)\((?P<lint>[\w:]+)\)\]`(?: \(part of `#\[\w+\([\w:]+\)\]`\))? on by default")
_LINT_IMPLIED = re.compile(r"`#\[(?:warn|deny|forbid|expect)\((?P<lint>[\w:]+)\)\]` implied by `#\[\w+\([\w:]+\)\]`")
_LINT_DEFINED_HERE = "the lint level is defined here"
_TEMPLATE_HOLE = re.compile(r"`[^`]*`|\d+")
# rustc names a lint only where it explains the lint's level, once per lint; later
# occurrences are recognised by message. These are rustc's wordings for the lints
# that most often repeat in one output.
_LINT_MESSAGES = [(re.compile(p), lint) for p, lint in (
    (r"^unused variables?: `", "unused_variables"),
    (r"^unused imports?: `", "unused_imports"),
    (r"^(?:unused import|unused imports)$", "unused_imports"),
    (r"^variables? does not need to be mutable$", "unused_mut"),
    (r"^(?:value assigned to|value captured by) `.*` is never read$", "unused_assignments"),
    (r"^(?:unused variable|variable) `.*` is assigned to, but never used$", "unused_variables"),
    (r"^(?:(?:associated )?(?:function|method|struct|enum|constant|static|type alias|trait|union|macro"
     r"|variant|field|associated const|associated type|module)s?|fields|variants|methods|functions"
     r"|associated items|multiple (?:fields|variants|methods|associated items)) "
     r".* (?:is|are) never (?:used|constructed|read)\b", "dead_code"),
    (r"^(?:variable|function|method|argument|crate|lifetime|structure field|module|trait method)"
     r" `.*` should have a snake case name$", "non_snake_case"),
    (r"^(?:type|trait|enum|variant|associated type|type parameter|struct|union) `.*` should have an"
     r" upper camel case name$", "non_camel_case_types"),
    (r"^(?:constant|static variable|constant in pattern|associated constant) `.*` should have an"
     r" upper case name$", "non_upper_case_globals"),
    (r"^unreachable (?:statement|expression|call|definition)$", "unreachable_code"),
    (r"^unreachable pattern$", "unreachable_patterns"),
    (r"^unused `.*` that must be used$", "unused_must_use"),
    (r"^unused (?:return value of|result of) `.*` that must be used$", "unused_must_use"),
    (r"^unnecessary parentheses around ", "unused_parens"),
    (r"^unnecessary braces around ", "unused_braces"),
    (r"^unnecessary `unsafe` block$", "unused_unsafe"),
    (r"^unused label$", "unused_labels"),
    (r"^unused doc comment$", "unused_doc_comments"),
)]


_MULTILINE_MARK = re.compile(r"^(?:/|\|_| _+[\^-])")


@dataclass
class _Builder:
    """A diagnostic being read from human output, one line at a time."""

    diag: Diagnostic
    lines: list[str]
    section: str = "main"  # "main" until a "note:"/"help:" child starts
    file: str | None = None  # file of the snippet being read
    snippet: list[tuple[int | None, str]] = field(default_factory=list)
    continuation: tuple[str, int] | None = ("message", 0)  # (target, indent to strip)
    lint_from_notes: str | None = None
    lint_in_attribute: str | None = None
    defined_here: bool = False

    def target(self, name: str) -> list[str]:
        return self.diag.helps if name == "help" else self.diag.notes


def parse_human(text: str) -> ParseResult:
    """Parse human-rendered rustc or cargo output (ANSI colour and CRLF tolerated)."""
    lines = _lines(text)
    diagnostics, problems = _parse_human_lines(lines, 1)
    if not diagnostics:
        non_blank = sum(1 for l in lines if l.strip())
        problems.append(f"no rustc or cargo diagnostic found in {non_blank} non-blank lines of text")
    return ParseResult(diagnostics, problems, "human")


def _parse_human_lines(lines: list[str], first_number: int) -> tuple[list[Diagnostic], list[str]]:
    out: list[Diagnostic] = []
    problems: list[str] = []
    cur: _Builder | None = None
    panic: _Builder | None = None
    after_blank = False
    skip_until: re.Pattern[str] | None = None  # inside a backtrace or a query stack

    def finish() -> None:
        nonlocal cur, panic
        if panic is not None:
            out.append(_finish(panic))
            panic = None
        if cur is not None:
            out.append(_finish(cur))
            cur = None

    for index, raw in enumerate(lines):
        number = first_number + index
        line = strip_ansi(raw).rstrip()
        if skip_until is not None:
            if skip_until.match(line):
                skip_until = None
            continue
        if panic is not None:
            # The panic payload runs until the backtrace, a note or a blank line.
            if line and line != "stack backtrace:" and not line.startswith("note: "):
                panic.diag.message = f"{panic.diag.message}\n{line}" if panic.diag.message else line
                panic.lines.append(line)
                continue
            finish()
        if not line:
            after_blank = True
            if cur is not None:
                _close_snippet(cur)
                cur.continuation = None
            continue
        if line == "stack backtrace:":
            finish()
            skip_until = re.compile(r"^$|^note: Some details are omitted")
            continue
        if line == "query stack during panic:":
            finish()
            skip_until = re.compile(r"^end of query stack$")
            continue
        m = _PANIC.match(line)
        if m:
            finish()
            panic = _Builder(Diagnostic(level=ICE_LEVEL, message=""), [line], continuation=None)
            panic.diag.notes.append(f"thread '{m['thread']}' panicked at {m['location']}")
            continue
        if cur is None or after_blank:
            if _CARGO_SUMMARY.match(line) or _CARGO_STATUS.match(line):
                finish()
                continue
            if _FAILURE_NOTE.match(line):
                finish()
                out.append(Diagnostic(level="failure-note", message=line, rendered=line + "\n"))
                continue
        m = _HEADER.match(line)
        if m:
            level = m["level"]
            if level == "error" and m["message"].startswith("the compiler unexpectedly panicked"):
                level = ICE_LEVEL
            if cur is not None and not after_blank and level in ("note", "help"):
                _start_child(cur, level, m["message"])
                cur.lines.append(line)
            else:
                finish()
                cur = _Builder(Diagnostic(level=level, code=m["code"], message=m["message"]), [line])
            after_blank = False
            continue
        if cur is None:
            problems.append(f"line {number}: text outside any diagnostic: {line[:80]!r}")
            continue
        after_blank = False
        cur.lines.append(line)
        if not _body_line(cur, line):
            problems.append(f"line {number}: unrecognised line inside a diagnostic: {line[:80]!r}")
    finish()
    _infer_lint_codes(out)
    return out, problems


def _start_child(cur: _Builder, level: str, message: str) -> None:
    _close_snippet(cur)
    cur.section = level
    cur.file = None
    cur.target(level).append(_plain_help(message) if level == "help" else message)
    cur.continuation = (level, len(level) + 2)  # continuation lines align after "note: "
    cur.defined_here = message == _LINT_DEFINED_HERE


def _body_line(cur: _Builder, line: str) -> bool:
    """Consume one line of a diagnostic's body; False when it is not recognised."""
    m = _LOCATION.match(line)
    if m:
        _close_snippet(cur)
        cur.continuation = None
        cur.file = m["file"]
        if m["arrow"] == "-->" and cur.section == "main" and cur.diag.primary is None and m["line"]:
            col = int(m["col"]) if m["col"] else 1
            cur.diag.primary = Span(m["file"], int(m["line"]), col, is_primary=True)
        return True
    m = _EQ_NOTE.match(line)
    if m:
        _close_snippet(cur)
        level = "help" if m["level"] == "help" else "note"
        cur.target(level).append(m["message"])
        cur.continuation = (level, len(m["prefix"]))
        lint = _LINT_IMPLIED.search(m["message"]) or _LINT_DEFAULT.search(m["message"])
        if lint and cur.lint_from_notes is None:
            cur.lint_from_notes = lint["lint"]
        return True
    if line.startswith("...") and not line[3:].strip(" |"):  # elided source lines
        cur.continuation = None
        return True
    m = _GUTTER.match(line)
    if m and (m["num"] is not None or line.lstrip().startswith("|")):
        cur.continuation = None
        if m["bar"] == "|":  # "+", "~", "-" rows are suggestion diffs, not spans
            cur.snippet.append((int(m["num"]) if m["num"] else None, m["text"] or ""))
        return True
    if cur.continuation is not None:
        target, indent = cur.continuation
        if indent and not line.startswith(" " * indent):
            return False
        text = line[indent:]
        if target == "message":
            cur.diag.message += "\n" + text
        else:
            cur.target(target)[-1] += "\n" + text
        return True
    return False


def _close_snippet(cur: _Builder) -> None:
    """Turn the snippet just read into labels (and the primary span's label)."""
    rows, cur.snippet = cur.snippet, []
    if not rows or cur.file is None or cur.section == "help":
        return  # help snippets show suggested code, not spans
    spans = _snippet_spans(cur.file, rows)
    if cur.defined_here:
        name = _marked_text(rows, spans)
        if name and re.fullmatch(r"[\w:]+", name):
            cur.lint_in_attribute = name
        return
    if cur.section != "main":
        return  # the model keeps a sub-diagnostic's message, not its spans (as for JSON)
    for span in spans:
        if span.label is not None and span.label.startswith("help: "):
            span = _inline_help(cur.diag, span)
        p = cur.diag.primary
        if (
            p is not None and p.label is None and p.line_end is None
            and span.is_primary and (span.file, span.line, span.column) == (p.file, p.line, p.column)
        ):
            cur.diag.primary = span
        elif span.label is not None or span.is_primary:
            cur.diag.labels.append(span)


def _plain_help(message: str) -> str:
    # The human emitter appends this remark to suggestions that only change case.
    suffix = " (notice the capitalization)"
    return message[: -len(suffix)] if message.endswith(suffix) else message


def _inline_help(d: Diagnostic, span: Span) -> Span:
    # rustc shows a short suggestion as a label "help: MESSAGE: `REPLACEMENT`" (or just
    # "help: MESSAGE"); JSON has it as a help child whose span carries the replacement.
    text = span.label[len("help: "):]  # type: ignore[index]
    message, replacement = text, None
    if text.endswith("`") and ": `" in text:
        message, _, rest = text.rpartition(": `")
        replacement = rest[:-1]
    d.helps.append(_plain_help(message))
    if replacement is not None:
        d.suggestions.append(Suggestion(
            message, span.file, span.line, span.column, span.line_end or span.line,
            span.column_end or span.column, replacement, None,
        ))
    return dataclasses.replace(span, label=None)


@dataclass
class _Mark:
    """A one-line marker (``^^^`` or ``---``) under an echoed line; its label may hang below."""

    start: int  # 0-based index into the code area of the snippet line
    length: int
    primary: bool
    line: int
    label: str | None = None

    def span(self, file: str) -> Span:
        return Span(file, self.line, self.start + 1, self.line, self.start + 1 + self.length, self.label, self.primary)


def _snippet_spans(file: str, rows: list[tuple[int | None, str]]) -> list[Span]:
    """Spans drawn in one snippet: ``rows`` are (line number or None, text after ``| ``)."""
    # A multi-line span draws a margin (2 columns per open span) left of the code;
    # depth 1 is handled, deeper nesting keeps the one-line markers only.
    margin = 2 if any(
        (num is None and _MULTILINE_MARK.match(t)) or (num is not None and t[:1] == "/") for num, t in rows
    ) else 0
    marks: list[_Mark] = []
    pending: list[_Mark] = []  # marks whose label hangs on a later row
    multiline: list[Span] = []
    line: int | None = None
    open_at: tuple[int, int] | None = None
    for num, text in rows:
        if num is not None:
            line = num
            if margin and text[:1] == "/":
                code = text[margin:]
                open_at = (num, len(code) - len(code.lstrip()) + 1)
            continue
        if line is None:
            continue
        if margin and re.match(r"^ _[_^-]*[\^-]$", text):
            # " ____-____^": a span opening at the last marker; a "-" or "^" inside the
            # underscores is a one-character span whose label hangs below.
            open_at = (line, len(text) - margin)
            for i in range(2, len(text) - 1):
                if text[i] in "^-":
                    mark = _Mark(i - margin, 1, text[i] == "^", line)
                    marks.append(mark)
                    pending.append(mark)
            continue
        m = re.match(r"^\|(_+)([\^-]+)\s*(.*)$", text) if margin else None
        if m:  # "|____^ label" closes the open multi-line span
            if open_at is not None:
                end_col = len(m[1]) + 1 + len(m[2]) - margin + 1
                multiline.append(Span(file, open_at[0], open_at[1], line, end_col, m[3] or None, m[2][0] == "^"))
                open_at = None
            continue
        _marker_row(text[margin:], line, marks, pending)
    return [mark.span(file) for mark in marks] + multiline


def _marker_row(area: str, line: int, marks: list[_Mark], pending: list[_Mark]) -> None:
    row: list[_Mark] = []
    i = 0
    while i < len(area):
        ch = area[i]
        if ch in " |":
            i += 1
            continue
        if ch in "^-" and (i == 0 or area[i - 1] in " |^-"):
            j = i
            while j < len(area) and area[j] == ch:
                j += 1
            row.append(_Mark(i, j - i, ch == "^", line))
            i = j
            continue
        label = area[i:]
        if row:
            row[-1].label = label
        else:
            waiting = next((p for p in pending if p.start == i), None)
            if waiting is not None:
                waiting.label = label
                pending.remove(waiting)
            else:
                # A second label under the same marker: rustc stacks labels of equal spans.
                same = next((p for p in reversed(marks) if p.start == i), None)
                if same is not None:
                    marks.append(dataclasses.replace(same, label=label))
        break
    marks.extend(row)
    pending.extend(r for r in row if r.label is None)


def _marked_text(rows: list[tuple[int | None, str]], spans: list[Span]) -> str | None:
    primary = next((s for s in spans if s.is_primary and s.line == s.line_end), None)
    if primary is None:
        return None
    for num, text in rows:
        if num == primary.line:
            return text[primary.column - 1:primary.column_end - 1]  # type: ignore[operator]
    return None


def _finish(cur: _Builder) -> Diagnostic:
    _close_snippet(cur)
    d = cur.diag
    d.rendered = "\n".join(cur.lines) + "\n"
    d.labels.sort(key=_span_order)
    if d.code is None and d.level in ("warning", "error"):
        d.code = cur.lint_from_notes or cur.lint_in_attribute
    return d


def _infer_lint_codes(diagnostics: list[Diagnostic]) -> None:
    # rustc explains a lint's level only on its first occurrence; later warnings of the
    # same lint carry no name. Learn message shapes from the explained ones.
    shapes: dict[tuple[str, str], str] = {}
    for d in diagnostics:
        shape = (d.level, _TEMPLATE_HOLE.sub("_", d.message))
        if d.code and not re.fullmatch(r"E\d{4}", d.code):
            shapes.setdefault(shape, d.code)
        elif d.code is None and d.level in ("warning", "error") and shape in shapes:
            d.code = shapes[shape]
        elif d.code is None and d.level in ("warning", "error") and d.primary is not None:
            d.code = next((lint for pattern, lint in _LINT_MESSAGES if pattern.search(d.message)), None)
