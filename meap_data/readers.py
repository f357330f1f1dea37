"""Reading documents from one planned input range, rejecting bad records with reasons.

Every input record ends as exactly one :class:`Document` or one :class:`Rejected`, so
``documents read = written + rejected`` holds downstream. Keys: the record's ``id`` field
when present, else ``relpath:line`` (JSON lines, 1-based), ``relpath:row`` (Parquet and
dataset rows, 0-based) or ``relpath`` (a text file is one document). A document's
``origin`` is always its position (``relpath:line``...), unique even when ids repeat.

Memory and time stay bounded whatever the input. One document is at most ``max_bytes``
(``--max-document-bytes``, default :data:`MAX_RECORD_BYTES`): a longer JSON line, or a
text file longer than that once decompressed (a 1 MB ``.txt.gz`` can inflate to 1 GiB),
is rejected (``record_too_large``) after reading at most ``max_bytes`` of it, never held.
A text file larger than :data:`TEXT_PIECE_BYTES` is streamed as consecutive pieces of
one document (after a first pass that checks it is UTF-8 and within the limit); a line
nested deeper than JSON parsing allows and a string with an unpaired surrogate escape
(``"\\ud800"``, which no UTF-8 text holds) are rejected.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from typing import Iterator

from . import storage
from .documents import Document, Rejected
from .inputs import FileRange

ID_FIELD = "id"
#: The default longest document (bytes): a JSON line, or a text file once decompressed;
#: longer ones are rejected without being held (``--max-document-bytes`` changes it).
MAX_RECORD_BYTES = 64 << 20
#: Text files are read in pieces of this many bytes once they are larger.
TEXT_PIECE_BYTES = 16 << 20
_SURROGATE = re.compile("[\ud800-\udfff]")


def read_range(frange: FileRange, text_field: str = "text",
               max_bytes: int = MAX_RECORD_BYTES) -> Iterator[Document | Rejected]:
    """Documents (or rejections) of one input range, in input order. ``max_bytes``: the
    longest document read (a JSON line, a text file after decompression), in bytes."""
    f = frange.file
    try:
        if f.file_type == "jsonl":
            yield from _read_jsonl(frange, text_field, max_bytes)
        elif f.file_type == "parquet":
            yield from _read_parquet(frange, text_field)
        elif f.file_type == "hf_dataset":
            yield from _read_hf_dataset(frange, text_field)
        else:
            yield from _read_text(frange, max_bytes)
    except OSError as exc:  # opening failed: the whole file is one rejected input
        yield Rejected(f.relpath, "unreadable_file", f"{type(exc).__name__}: {exc}")


def _text_or_reason(value: object, text_field: str) -> tuple[str | None, str, str]:
    if value is None:
        return None, "null_text", f"field {text_field!r} is null"
    if not isinstance(value, str):
        return None, "text_not_string", f"field {text_field!r} is {type(value).__name__}, not a string"
    if not value.strip():
        return None, "empty_text", f"field {text_field!r} is empty"
    return value, "", ""


def _record_to_doc(record: object, text_field: str, fallback_key: str, escapes: bool = False) -> Document | Rejected:
    """``fallback_key``: the record's position. ``escapes``: its JSON held a ``\\uD...``
    escape, so its strings may hold unpaired surrogates (checked only then: cheap)."""
    if not isinstance(record, dict):
        return Rejected(fallback_key, "not_an_object", f"record is {type(record).__name__}, not an object")
    key = record.get(ID_FIELD)
    key = str(key) if key is not None and key != "" else fallback_key
    if escapes and _SURROGATE.search(key):
        return Rejected(fallback_key, "invalid_unicode", f"field {ID_FIELD!r} holds an unpaired surrogate escape")
    if text_field not in record:
        return Rejected(key, "missing_text_field", f"no field {text_field!r}; fields: {sorted(map(str, record))[:10]}")
    text, reason, detail = _text_or_reason(record[text_field], text_field)
    if text is None:
        return Rejected(key, reason, detail)
    if escapes:
        bad = _SURROGATE.search(text)
        if bad:
            return Rejected(key, "invalid_unicode", f"field {text_field!r} holds an unpaired surrogate escape "
                            f"(U+{ord(bad.group()):04X}) at character {bad.start()}: not encodable text")
    return Document(key, text, origin=fallback_key)


def _is_compressed(path: str) -> bool:
    return path.lower().endswith((".gz", ".zst", ".zstd"))


def _open_binary(path: str):
    raw = storage.open_read(path)
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if lower.endswith((".zst", ".zstd")):
        import zstandard

        return io.BufferedReader(_ZstdFrames(raw))
    return raw


class _ZstdFrames(io.RawIOBase):
    """Decompresses concatenated zstd frames and, unlike zstandard's stream_reader,
    raises EOFError when the input ends inside a frame (a truncated file)."""

    def __init__(self, raw):
        import zstandard

        self._raw = raw
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._obj = self._new()
        self._started = False
        self._pending = b""
        self._offset = 0  # into _pending: slicing it per read would copy it again and again

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self._offset >= len(self._pending):
            self._pending, self._offset = b"", 0
            chunk = self._raw.read(1 << 20)
            if not chunk:
                if self._started and not self._obj.eof:
                    raise EOFError("zstd stream ends inside a frame (truncated file)")
                return 0
            while chunk:
                if self._obj.eof:  # the next frame starts
                    self._obj = self._new()
                self._started = True
                self._pending += self._obj.decompress(chunk)
                chunk = self._obj.unused_data if self._obj.eof else b""
        n = min(len(buffer), len(self._pending) - self._offset)
        buffer[:n] = memoryview(self._pending)[self._offset : self._offset + n]
        self._offset += n
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


LINE_CHUNK = 1 << 20


class Oversized:
    """Stands for a line longer than the caller's maximum, which was skipped unread."""

    def __init__(self, length: int):
        self.length = length


def _iter_lines(stream, limit: float = float("inf"), max_line: int = MAX_RECORD_BYTES) -> Iterator[bytes | Oversized]:
    """Lines of ``stream`` (each with its newline, the last maybe without), from its
    position, stopping after the line that crosses ``limit`` bytes read. A line longer
    than ``max_line`` bytes comes as an :class:`Oversized` and is never held in memory.

    Reads large chunks and splits in C: the same speed on local files, decompressors and
    object-store files (whose own ``readline`` fetches a whole block per call).
    """
    pending: list[bytes] = []  # pieces of a line not finished yet
    held = 0  # bytes in pending
    skipping = -1  # >= 0: length so far of an oversized line being skipped
    consumed = 0  # bytes of finished lines
    while consumed < limit:
        block = stream.read(LINE_CHUNK)
        if not block:
            break
        parts = block.split(b"\n")
        if len(parts) == 1:  # no newline: a long line continues
            if skipping >= 0:
                skipping += len(block)
            elif held + len(block) > max_line:
                skipping, pending, held = held + len(block), [], 0
            else:
                pending.append(block)
                held += len(block)
            continue
        if skipping >= 0:
            first: bytes | Oversized = Oversized(skipping + len(parts[0]) + 1)
            skipping = -1
        elif held + len(parts[0]) + 1 > max_line:
            first = Oversized(held + len(parts[0]) + 1)
        else:
            first = b"".join(pending) + parts[0] + b"\n" if pending else parts[0] + b"\n"
        pending = [parts[-1]] if parts[-1] else []
        held = len(parts[-1])
        yield first
        consumed += first.length if isinstance(first, Oversized) else len(first)
        for part in parts[1:-1]:
            if consumed >= limit:
                return
            line: bytes | Oversized = part + b"\n" if len(part) < max_line else Oversized(len(part) + 1)
            yield line
            consumed += len(part) + 1
    if consumed < limit:
        if skipping >= 0:
            yield Oversized(skipping)
        elif pending:
            yield b"".join(pending)


def _lines_in_range(frange: FileRange, max_line: int = MAX_RECORD_BYTES) -> Iterator[tuple[int, bytes | Oversized]]:
    """(1-based line number, line bytes) for lines whose first byte lies in the range.

    Line numbers of a range that starts mid-file are counted from the file start, so
    keys do not depend on how the file was cut.
    """
    f = frange.file
    if frange.start == 0 and frange.end is None:
        with _open_binary(f.path) as stream:
            if _is_compressed(f.path):
                # Line by line through the decompressor, so a truncated file keeps every
                # line before the damage (a chunked read would lose the last chunk).
                buffered = io.BufferedReader(stream) if not hasattr(stream, "peek") else stream
                yield from enumerate(_bounded_readlines(buffered, max_line), start=1)
            else:
                yield from enumerate(_iter_lines(stream, max_line=max_line), start=1)
        return
    end = frange.end if frange.end is not None else float("inf")
    with storage.open_read(f.path) as raw:
        if frange.first_line is not None:
            # The planner cut here at a line start and numbered it (inputs.line_ranges).
            raw.seek(frange.start)
            yield from enumerate(_iter_lines(raw, end - frange.start, max_line), start=frange.first_line)
            return
        number = 1
        if frange.start > 0:
            # Count lines before the range (cheap: a bytes.count over buffers) and skip
            # the line that straddles the start; it belongs to the previous range.
            remaining = frange.start - 1
            while remaining > 0:
                chunk = raw.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                number += chunk.count(b"\n")
                remaining -= len(chunk)
            prev = raw.read(1)
            if prev != b"\n":
                rest = raw.readline()
                if rest:
                    number += 1
            else:
                number += 1
        pos = raw.tell()
        for line in _iter_lines(raw, end - pos, max_line):
            yield number, line
            number += 1


def _bounded_readlines(stream, max_line: int = MAX_RECORD_BYTES) -> Iterator[bytes | Oversized]:
    """``readline`` one line at a time, never holding more than ``max_line`` bytes of one."""
    while True:
        line = stream.readline(max_line + 1)
        if not line:
            return
        if len(line) > max_line and not line.endswith(b"\n"):
            length = len(line)
            while True:  # skip the rest of the line in bounded reads
                more = stream.readline(LINE_CHUNK)
                length += len(more)
                if not more or more.endswith(b"\n"):
                    break
            yield Oversized(length)
            continue
        yield line


def _is_decompression_error(exc: BaseException) -> bool:
    # zstandard raises its own ZstdError; gzip raises EOFError, zlib.error or BadGzipFile.
    return isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)) or type(exc).__name__ == "ZstdError"


def json_lines(frange: FileRange, max_bytes: int = MAX_RECORD_BYTES) -> Iterator[tuple[str, object] | Rejected]:
    """``(where, parsed value)`` per JSON line of the range (``where`` = ``relpath:line``),
    or a :class:`Rejected` for a line that is not UTF-8, not JSON, nested too deeply or
    longer than ``max_bytes``, and one for the lost tail of a truncated or
    corrupt compressed file. Blank lines are skipped. ``(where, value, surrogates)``:
    ``surrogates`` says whether the line holds a ``\\uD...`` escape, the only way its
    strings can hold an unpaired surrogate (so only those need the costly check)."""
    f = frange.file
    number = 0
    try:
        for number, line in _lines_in_range(frange, max_bytes):
            where = f"{f.relpath}:{number}"
            if isinstance(line, Oversized):
                yield Rejected(where, "record_too_large", f"a line of {line.length} bytes; {_limit_note(max_bytes)}")
                continue
            if not line.strip():
                continue  # blank lines are layout, not records
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Rejected(where, "invalid_utf8", f"byte {exc.start} of the line: {exc.reason}")
                continue
            try:
                yield where, json.loads(text), b"\\ud" in line or b"\\uD" in line
            except json.JSONDecodeError as exc:
                yield Rejected(where, "invalid_json", f"{exc.msg} at column {exc.colno}")
            except RecursionError:
                yield Rejected(where, "invalid_json", "nested too deeply to parse (a JSON value inside "
                               "thousands of arrays or objects)")
    except Exception as exc:
        if not _is_decompression_error(exc):
            raise
        yield Rejected(
            f"{f.relpath}:{number + 1}",
            "truncated_or_corrupt_file",
            f"decompression stopped after line {number}: {exc}; the rest of the file is lost",
        )


#: A ``.json`` file that is one JSON document (an array of records, or one record) is
#: parsed whole up to this size.
MAX_JSON_DOCUMENT_BYTES = 256 << 20


def _json_document(frange: FileRange, text_field: str) -> Iterator[Document | Rejected] | None:
    """The records of a ``.json`` file written as one JSON document (a pretty-printed
    array or object), or None when it is JSON lines after all."""
    f = frange.file
    if not _strip_compression_suffix(f.path.lower()).endswith(".json") or frange.start != 0:
        return None
    with _open_binary(f.path) as stream:
        head = stream.read(4096).lstrip()
        if not head.startswith((b"[", b"{")):
            return None
        data = head + stream.read(MAX_JSON_DOCUMENT_BYTES)
        if stream.read(1):
            return iter([Rejected(f.relpath, "record_too_large", f"a JSON document over {MAX_JSON_DOCUMENT_BYTES} "
                                  "bytes; write it as JSON lines (.jsonl), which streams")])
    if head.startswith(b"{") and b"\n" in data.strip() and _is_json_lines(data):
        return None
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        if head.startswith(b"{"):
            return None  # JSON lines whose first record is an object: read line by line
        return iter([Rejected(f.relpath, "invalid_json", f"a JSON array that does not parse: {exc}")])
    records = value if isinstance(value, list) else [value]
    return (_record_to_doc(r, text_field, f"{f.relpath}:{i}", escapes=True) for i, r in enumerate(records))


def _is_json_lines(data: bytes) -> bool:
    first = data.split(b"\n", 1)[0]
    try:
        json.loads(first)
        return True
    except (ValueError, RecursionError):
        return False


def _strip_compression_suffix(name: str) -> str:
    for suffix in (".gz", ".zst", ".zstd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _read_jsonl(frange: FileRange, text_field: str, max_bytes: int) -> Iterator[Document | Rejected]:
    document = _json_document(frange, text_field)
    if document is not None:
        yield from document
        return
    for item in json_lines(frange, max_bytes):
        if isinstance(item, Rejected):
            yield item
        else:
            where, record, surrogates = item
            yield _record_to_doc(record, text_field, where, escapes=surrogates)


def _limit_note(max_bytes: int) -> str:
    return (f"documents are read up to {max_bytes} bytes (--max-document-bytes; raise it to take this one, "
            "or split the document)")


def _read_text(frange: FileRange, max_bytes: int = MAX_RECORD_BYTES) -> Iterator[Document | Rejected]:
    """The file as one document: whole when it is small; else in pieces of
    :data:`TEXT_PIECE_BYTES`, after a first streaming pass that checks it decodes and
    stays within ``max_bytes`` (bytes, after decompression)."""
    f = frange.file
    if not _is_compressed(f.path) and f.size > max_bytes:
        yield Rejected(f.relpath, "record_too_large", f"a text file of {f.size} bytes; {_limit_note(max_bytes)}")
        return
    with _open_binary(f.path) as stream:
        try:
            data = stream.read(min(TEXT_PIECE_BYTES, max_bytes) + 1)
        except Exception as exc:
            if not _is_decompression_error(exc):
                raise
            yield Rejected(f.relpath, "truncated_or_corrupt_file", str(exc))
            return
    if len(data) <= min(TEXT_PIECE_BYTES, max_bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Rejected(f.relpath, "invalid_utf8", f"byte {exc.start}: {exc.reason}")
            return
        if not text.strip():
            yield Rejected(f.relpath, "empty_text", "the file holds no text")
            return
        yield Document(f.relpath, text)
        return
    del data
    problem = _check_large_text(f.path, f.size, max_bytes)
    if problem is not None:
        yield Rejected(f.relpath, *problem)
        return
    yield from _text_pieces(f.path, f.relpath)


def _decoded_pieces(path: str, counted: list[int] | None = None) -> Iterator[str]:
    """The file's text in pieces of about :data:`TEXT_PIECE_BYTES`; ``counted[0]`` is
    kept at the bytes read so far (after decompression)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with _open_binary(path) as stream:
        while True:
            chunk = stream.read(TEXT_PIECE_BYTES)
            if counted is not None:
                counted[0] += len(chunk)
            final = not chunk
            text = decoder.decode(chunk, final=final)
            if text:
                yield text
            if final:
                return


def _check_large_text(path: str, stored_bytes: int, max_bytes: int) -> tuple[str, str] | None:
    """(reason, detail) when a large text file cannot be one document, else None. Stops
    reading once more than ``max_bytes`` came out of the decompressor."""
    offset, blank, counted = 0, True, [0]
    try:
        for text in _decoded_pieces(path, counted):
            if counted[0] > max_bytes:
                return "record_too_large", (f"a text file of more than {max_bytes} bytes once decompressed "
                                            f"({stored_bytes} bytes stored); {_limit_note(max_bytes)}")
            blank = blank and not text.strip()
            offset += len(text)
    except UnicodeDecodeError as exc:
        return "invalid_utf8", f"near character {offset}: {exc.reason}"
    except Exception as exc:
        if not _is_decompression_error(exc):
            raise
        return "truncated_or_corrupt_file", str(exc)
    return ("empty_text", "the file holds no text") if blank else None


def _text_pieces(path: str, key: str) -> Iterator[Document]:
    """Consecutive pieces of one large document (the last marked ``last``)."""
    previous = None
    for text in _decoded_pieces(path):
        if previous is not None:
            yield Document(key, previous, last=False)
        previous = text
    yield Document(key, previous if previous is not None else "", last=True)


def _read_parquet(frange: FileRange, text_field: str) -> Iterator[Document | Rejected]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = frange.file
    try:
        # Object-store files through fsspec (Parquet reads its footer and row groups by seeking).
        pf = pq.ParquetFile(storage.open_read(f.path) if storage.is_remote(f.path) else f.path)
    except (pa.ArrowInvalid, OSError) as exc:
        yield Rejected(f.relpath, "unreadable_file", f"not a readable Parquet file: {exc}")
        return
    names = pf.schema_arrow.names
    if text_field not in names:
        yield Rejected(f.relpath, "missing_text_field", f"no column {text_field!r}; columns: {names[:10]}")
        return
    columns = [text_field] + ([ID_FIELD] if ID_FIELD in names and ID_FIELD != text_field else [])
    row = 0
    for batch in pf.iter_batches(columns=columns, batch_size=4096):
        for record in batch.to_pylist():
            yield _record_to_doc(record, text_field, f"{f.relpath}:{row}")
            row += 1


def _read_hf_dataset(frange: FileRange, text_field: str) -> Iterator[Document | Rejected]:
    import datasets

    f = frange.file
    loaded = datasets.load_from_disk(f.path)
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, ds in splits:
        prefix = f"{f.relpath}/{split}" if split else f.relpath
        if text_field not in ds.column_names:
            yield Rejected(prefix, "missing_text_field", f"no column {text_field!r}; columns: {ds.column_names[:10]}")
            continue
        columns = [c for c in (text_field, ID_FIELD) if c in ds.column_names]
        row = 0
        for batch in ds.select_columns(columns).iter(batch_size=1024):
            for i in range(len(batch[text_field])):
                record = {c: batch[c][i] for c in columns}
                yield _record_to_doc(record, text_field, f"{prefix}:{row}")
                row += 1
