"""Transcript records: keys, canonical JSON lines, and validation against the schema.

A record is a plain dict matching ``schemas/rust_transcript.schema.json``; every
producer (harvest, error index) and consumer (rendering, masking, the pipeline) goes
through this module so the file format has one definition.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import jsonschema

from meap_data.documents import Rejected
from meap_data.errors import MeapDataError
from meap_data.inputs import FileRange
from meap_data.readers import MAX_RECORD_BYTES, json_lines

SCHEMA_VERSION = 1
#: The primary code of a record whose diagnostics carry no code at all (parse errors).
NO_CODE = "none"
#: The primary code of a record that compiles and fails its tests.
TEST_FAILURE = "test_failure"
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "rust_transcript.schema.json"

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The transcript JSON Schema (draft 2020-12), read once."""
    try:
        return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    except OSError as e:
        raise MeapDataError(
            f"transcript schema not found at {SCHEMA_PATH}: {e.strerror}; "
            "reinstall meap-data so its schemas/ directory is present"
        ) from e


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate_record(record: Any) -> str | None:
    """None when ``record`` is a valid transcript, else one line saying where and why."""
    if not isinstance(record, dict):
        return f"record is a JSON {type(record).__name__}, not an object"
    error = jsonschema.exceptions.best_match(_validator().iter_errors(record))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    key = record.get("key")
    who = f"record {key!r}" if isinstance(key, str) else "record"
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"{who}: {where}: {message}"


def make_key(path: str) -> str:
    """A stable key for a source path: readable slug plus 8 hex digits of its hash.

    The hash keeps ``a/b.rs`` and ``a_b.rs`` apart after the slug folds both to ``a_b_rs``.
    """
    slug = _KEY_UNSAFE.sub("_", path).strip("_")[-120:] or "source"
    digest = hashlib.blake2b(path.encode("utf-8"), digest_size=4).hexdigest()
    return f"{slug}-{digest}"


def dumps_record(record: dict[str, Any]) -> str:
    """Canonical JSON line (sorted keys, UTF-8, no spaces, trailing newline): byte-stable."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"


def write_records(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSON lines atomically (temp file, then rename); returns the count.

    A crash leaves either the previous file or none, never a truncated one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "x") rather than mkstemp: the result gets the umask's permissions, not 0600.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    count = 0
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(dumps_record(record))
                count += 1
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def write_records_keeping_partial(path: str | os.PathLike[str], records: Iterable[dict[str, Any]]) -> int:
    """Like :func:`write_records`, for runs of hours: the lines go to ``PATH.partial``
    as they come (flushed), renamed to ``PATH`` at the end. An interrupted run leaves
    the records it finished in ``PATH.partial`` (a prefix of the full output, since
    records come in a fixed order) and says so; ``PATH`` itself is never half-written."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    count = 0
    try:
        with open(partial, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(dumps_record(record))
                count += 1
                f.flush()
        os.replace(partial, target)
    except BaseException as exc:
        if count:
            raise MeapDataError(f"interrupted ({type(exc).__name__}): the {count} records written so far are in "
                                f"{partial}") from exc
        partial.unlink(missing_ok=True)
        raise
    return count


def read_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """Yield (line number, record, None) for valid lines and (line number, None, reason) otherwise.

    Blank lines are skipped; nothing here raises on bad content, only on an unreadable file.
    """
    p = Path(path)
    try:
        handle = p.open("rb")
    except OSError as e:
        raise MeapDataError(f"cannot read transcript records {p}: {e.strerror}") from e
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield number, None, f"{p}:{number}: invalid UTF-8 at byte {e.start} of the line"
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield number, None, f"{p}:{number}: invalid JSON ({e.msg} at column {e.colno})"
                continue
            reason = validate_record(record)
            if reason is None:
                yield number, record, None
            else:
                yield number, None, f"{p}:{number}: {reason}"


def failing_tests(record: dict[str, Any]) -> bool:
    """The record compiles cleanly and fails tests: a test-failure example."""
    tests = record.get("tests") or {}
    return not record.get("diagnostics") and tests.get("status") == "failed" and tests.get("failed", 0) > 0


def primary_code(record: dict[str, Any]) -> str:
    """The code a record is about: its first error's code, else the example's expected
    code, else its first code of any level (a lint name), else :data:`TEST_FAILURE` for a
    record that compiles and fails tests, else :data:`NO_CODE`."""
    diagnostics = record.get("diagnostics") or []
    for d in diagnostics:
        if str(d.get("level", "")).startswith("error") and d.get("code"):
            return d["code"]
    if record.get("expected_code"):
        return record["expected_code"]
    for d in diagnostics:
        if d.get("code"):
            return d["code"]
    return TEST_FAILURE if failing_tests(record) else NO_CODE


def iter_records(frange: FileRange, max_bytes: int = MAX_RECORD_BYTES) -> Iterator[tuple[dict[str, Any] | None, Rejected | None]]:
    """(record, None) for each usable record of one input range, (None, Rejected) else.

    Reasons: ``invalid_utf8``, ``invalid_json``, ``invalid_record`` (fails the schema),
    ``timed_out`` (the compiler ran past its limit: no output to learn from) and
    ``no_diagnostics`` (it compiled cleanly); a whole file that is not JSON lines (a
    ``.rs`` source given by mistake) is one ``not_jsonl``. Compressed files (.gz, .zst)
    are read too. ``max_bytes``: the longest record line read (longer: ``record_too_large``).
    """
    f = frange.file
    if f.file_type != "jsonl":
        yield None, Rejected(f.relpath, "not_jsonl", (
            f"{f.file_type} input: --kind rust reads transcript JSON lines (.jsonl, optionally .gz/.zst); "
            "record sources first with 'meap-data rust harvest SRC... --output FILE.jsonl'"))
        return
    try:
        for item in json_lines(frange, max_bytes):
            if isinstance(item, Rejected):
                yield None, item
                continue
            where, record, _ = item
            problem = validate_record(record)
            if problem is not None:
                yield None, Rejected(where, "invalid_record", f"{problem}; see schemas/rust_transcript.schema.json")
                continue
            key = record["key"]
            if record["timed_out"]:
                yield None, Rejected(key, "timed_out", f"{where}: the compiler ran past {record.get('time_limit_s', '?')} s")
            elif not record["diagnostics"] and not failing_tests(record):
                yield None, Rejected(key, "no_diagnostics", f"{where}: the compiler printed no diagnostics")
            else:
                yield record, None
    except OSError as exc:
        yield None, Rejected(f.relpath, "unreadable_file", f"{type(exc).__name__}: {exc}")
