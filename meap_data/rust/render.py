"""Training text from transcript records: pure functions of the record.

Three renderings:

- diagnose: prompt = the source, response = what the compiler printed;
- repair: prompt = the source and the compiler output, response = the fixed source;
- transcript: one plain text, a shell session (cat the source, run the compiler, see
  the output, and the fix when there is one), for pre-training.
"""

from __future__ import annotations

from typing import Any, Mapping

from meap_data.errors import MeapDataError
from meap_data.rust.records import failing_tests


# ---------------------------------------------------------------------- helpers


def display_path(record: Mapping[str, Any]) -> str:
    """The source path as the compiler names it (``$SRC/`` dropped)."""
    path = str(record.get("source_path", "main.rs"))
    return path[len("$SRC/"):] if path.startswith("$SRC/") else path


def _fenced(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _require(record: Mapping[str, Any], *, fix: bool = False) -> None:
    key = record.get("key", "?")
    if record.get("timed_out"):
        raise MeapDataError(f"record {key!r} timed out: it has no compiler output to train on; skip it")
    if fix and not record.get("fixed_source"):
        why = f" ({record['fix_rejected']})" if record.get("fix_rejected") else ""
        raise MeapDataError(f"record {key!r} has no fixed_source{why}, so no repair example; use the diagnose task")


def _command(record: Mapping[str, Any]) -> str:
    return " ".join(record.get("argv") or [record.get("tool", "rustc")])


def _source_block(record: Mapping[str, Any]) -> str:
    crate = record.get("crate")
    if crate:  # a window of a crate's file: say which lines, so the compiler's line numbers fit
        first, last = crate["lines"]
        where = (f"{display_path(record)}" + (f", lines {first}-{last}" if (first, last) != (1, crate["file_lines"])
                                              else "") + f" (crate {crate['name']} {crate['version']}, "
                 f"edition {record['edition']})")
    else:
        where = f"{display_path(record)} (edition {record['edition']})"
    return f"### Rust source: {where}\n```rust\n{_fenced(str(record['source']))}```\n"


# -------------------------------------------------------------------- renderings

#: Prompt headings are fixed strings so a model sees one format across the corpus.
OUTPUT_HEADING = "### Compiler output: {command}\n"
FIX_HEADING = "### Fixed source\n```rust\n"


TESTS_HEADING = "### Test output: {command}\n"
#: Suites with more cases list only their failures.
MAX_LISTED_TESTS = 20
#: Failures whose panic text is shown (the rest are named in the list).
MAX_FAILURES_SHOWN = 4
_STATUS_LINE = {"compile_error": "error: the tests did not compile\n",
                "timed_out": "^C  (the tests were still running at the time limit)\n"}


def tests_report(record: Mapping[str, Any]) -> str:
    """A record's test outcome (``harvest --tests``) as libtest prints it: a line per test,
    each failure's panic text, the result line. Empty when the record has none."""
    tests = record.get("tests")
    if not tests:
        return ""
    if tests["status"] in _STATUS_LINE:
        return _STATUS_LINE[tests["status"]]
    lines = [f"running {len(tests['cases'])} tests"]
    outcome = {"passed": "ok", "failed": "FAILED", "ignored": "ignored"}
    listed = tests["cases"]
    if len(listed) > MAX_LISTED_TESTS:  # a big suite: the failures are what a fix needs
        listed = [c for c in listed if c["outcome"] == "failed"]
    lines += [f"test {c['name']} ... {outcome[c['outcome']]}" for c in listed]
    if len(listed) < len(tests["cases"]):
        lines.append(f"({len(tests['cases']) - len(listed)} tests that passed or were ignored not listed)")
    failed = [c for c in tests["cases"] if c["outcome"] == "failed"]
    for c in failed[:MAX_FAILURES_SHOWN]:
        lines += ["", f"---- {c['name']} stdout ----", (c["message"] or "").rstrip("\n")]
    if len(failed) > MAX_FAILURES_SHOWN:
        lines += ["", f"({len(failed) - MAX_FAILURES_SHOWN} more failures not shown)"]
    verdict = "FAILED" if tests["failed"] else "ok"
    lines += ["", f"test result: {verdict}. {tests['passed']} passed; {tests['failed']} failed; "
                  f"{tests['ignored']} ignored"]
    return "\n".join(lines) + "\n"


def _tests_section(record: Mapping[str, Any], heading: str) -> str:
    report = tests_report(record)
    return heading.format(command=" ".join(record["tests"]["argv"])) + report if report else ""


def diagnose(record: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt, response) for the diagnose task: the source and the command, then the
    compiler's human output, and the test output when the record ran its tests. Loss
    goes on the response only."""
    _require(record)
    prompt = _source_block(record) + OUTPUT_HEADING.format(command=_command(record))
    return prompt, str(record["rendered"]) + _tests_section(record, TESTS_HEADING)


def repair(record: Mapping[str, Any]) -> tuple[str, str]:
    """(prompt, response) for the repair task: the source and the compiler output, then
    the fixed source. Loss goes on the response only."""
    _require(record, fix=True)
    if failing_tests(record):  # it compiles: the failing tests are the diagnostic
        prompt = _source_block(record) + _tests_section(record, TESTS_HEADING) + FIX_HEADING
    else:
        prompt = (_source_block(record) + OUTPUT_HEADING.format(command=_command(record))
                  + _fenced(str(record["rendered"])) + FIX_HEADING)
    return prompt, _fenced(str(record["fixed_source"])) + "```\n"


def transcript_text(record: Mapping[str, Any]) -> str:
    """The whole record as a shell session: plain pre-training text."""
    parts = []
    files = record.get("files")
    if files:
        parts.append(f"$ cd {display_path(record)}\n")
        for name, text in files.items():
            parts += [f"$ cat {name}\n", _fenced(text)]
    else:
        parts += [f"$ cat {display_path(record)}\n", _fenced(str(record["source"]))]
    parts.append(f"$ {_command(record)}\n")
    if record.get("timed_out"):
        parts.append(f"^C  (still compiling after {record.get('time_limit_s', '?')} s)\n")
    else:
        parts.append(str(record["rendered"]))
        parts.append(_tests_section(record, "$ {command}\n"))
    if record.get("fixed_source"):
        parts += [f"$ cat {display_path(record)}  # fixed\n", _fenced(str(record["fixed_source"]))]
        if record.get("fix_compiles"):
            parts.append(f"$ {_command(record)}\n")
    return "".join(parts)
