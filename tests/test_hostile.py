"""Hostile and unlucky input (issue 13): bad records become dead letters, memory stays
bounded, one writer per output, untrusted dataset directories cannot make a reader
escape or hang, and every CLI failure is one ``error:`` line with its own exit code."""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from meap_data import errors
from meap_data.config import PrepareConfig
from meap_data.errors import BusyError, CorruptDatasetError, MeapDataError
from meap_data.loader import ShardLoader
from meap_data.manifest import DatasetManifest, read_manifest
from meap_data.prepare import LOCK, run_prepare
from meap_data.tokenizer import split_for_encoding
from meap_data.verify import verify_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ = 128
#: The peak resident memory every hostile input must stay under (issue 13's bound).
RSS_BOUND_MB = 1536


def _config(*inputs, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", SEQ)
    kw.setdefault("input_bytes_per_shard", 120_000)
    return PrepareConfig(inputs=tuple(inputs), **kw)


def _cli(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meap_data", *args], capture_output=True, text=True,
                          cwd=kw.pop("cwd", ROOT), timeout=timeout, **kw)


def _one_error_line(stderr: str) -> str:
    """The stderr of a failed command: exactly one ``error:`` line, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _peak_rss_mb(args: list[str]) -> tuple[int, float, str]:
    """Exit code, peak resident memory (MB) and stderr of ``meap-data ARGS`` in a child."""
    proc = subprocess.Popen([sys.executable, "-m", "meap_data", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024, err


@pytest.fixture(scope="module")
def ds(tmp_path_factory, email_glob, tokenizer_path) -> str:
    out = str(tmp_path_factory.mktemp("hostile") / "email")
    run_prepare(_config(email_glob), out, tokenizer=tokenizer_path)
    assert len(read_manifest(out)["shards"]["arrow"]) >= 2
    return out


@pytest.fixture
def copy(ds, tmp_path) -> str:
    """A private copy of the dataset, to damage."""
    target = str(tmp_path / "copy")
    shutil.copytree(ds, target)
    return target


def _edit_manifest(directory: str, edit) -> None:
    path = os.path.join(directory, "manifest.json")
    data = json.load(open(path))
    edit(data)
    open(path, "w").write(json.dumps(data))


# ---------------------------------------------------------------------- records


def test_hostile_records_become_dead_letters_with_reasons(tmp_path, tokenizer_path):
    lines = [
        '{"text": ' + "[" * 100_000 + "]" * 100_000 + "}",  # RecursionError in json
        '{"id": "a", "text": "hello \\ud800 world"}',  # lone surrogate in the text
        '{"id": "b\\udc00", "text": "good text"}',  # ... in the id (the Arrow writer's UTF-8)
        '{"id": "c\\udc00", "text": 5}',  # ... in a record rejected for another reason
        '{"id": "d", "text": "a literal [MASK] and <|endoftext|> inside a document"}',
        '{"id": "e", "text": "a plain document"}',
    ]
    src = tmp_path / "hostile.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "out")
    run_prepare(_config(str(src), seq_len=64), out, tokenizer=tokenizer_path)
    m = read_manifest(out)
    c = m["counts"]
    assert (c["documents_read"], c["documents_written"], c["documents_rejected"]) == (6, 2, 4)
    assert c["rejected_by_reason"] == {"invalid_json": 1, "invalid_unicode": 3}
    dead = [json.loads(line) for f in sorted(glob.glob(os.path.join(out, "rejected", "*.jsonl")))
            for line in open(f, encoding="utf-8")]
    assert [d["reason"] for d in dead] == ["invalid_json", "invalid_unicode", "invalid_unicode", "invalid_unicode"]
    assert "nested too deeply" in dead[0]["detail"] and "U+D800" in dead[1]["detail"]
    assert verify_dataset(out) == []

    # Special-token text inside a document is text: neither [MASK] nor eos ids appear in
    # the clean labels except the one eos closing each document.
    import datasets

    rows = datasets.load_from_disk(os.path.join(out, "arrow"))
    labels = np.array([t for row in rows["labels"] for t in row])
    t = m["tokenizer"]
    assert not (labels == t["mask_token_id"]).any()
    assert int((labels == t["eos_token_id"]).sum()) == c["documents_written"]


def test_a_json_array_file_is_documents_not_bad_lines(tmp_path, tokenizer_path):
    (tmp_path / "array.json").write_text(json.dumps(
        [{"id": "x", "text": "first document"}, {"id": "y", "text": "second document"}, {"id": "z", "text": 7}],
        indent=2))
    (tmp_path / "object.json").write_text(json.dumps({"id": "w", "text": "an object file"}, indent=2))
    out = str(tmp_path / "out")
    run_prepare(_config(str(tmp_path / "*.json"), seq_len=32), out, tokenizer=tokenizer_path)
    c = read_manifest(out)["counts"]
    assert (c["documents_read"], c["documents_written"], c["documents_rejected"]) == (4, 3, 1)
    assert c["rejected_by_reason"] == {"text_not_string": 1}


def test_duplicate_ids_without_packing_load_in_every_reader(tmp_path, tokenizer_path):
    src = tmp_path / "dups.jsonl"
    src.write_text("".join(json.dumps({"id": "same", "text": f"document number {i}"}) + "\n" for i in range(5)))
    out = str(tmp_path / "out")
    run_prepare(_config(str(src), seq_len=32, pack=False), out, tokenizer=tokenizer_path)
    assert verify_dataset(out) == []
    import webdataset as wds

    tars = sorted(glob.glob(os.path.join(out, "webdataset", "*.tar")))
    assert len(list(wds.WebDataset(tars, shardshuffle=False))) == 5
    for fmt in ("arrow", "webdataset"):
        batches = list(ShardLoader(out, 1, format=fmt, shuffle=False))
        assert len(batches) == 5


def test_huge_documents_are_tokenized_in_pieces_with_the_whole_texts_ids(stdlib, tokenizer_path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    text = "".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(stdlib, "json", "*.py"))))
    pieces = split_for_encoding(text, 4096)
    assert len(pieces) > 10 and "".join(pieces) == text and max(map(len, pieces)) <= 4096
    whole = tok.encode(text, add_special_tokens=False).ids
    joined = [i for p in tok.encode_batch(pieces, add_special_tokens=False) for i in p.ids]
    assert joined == whole
    # No whitespace to cut at: cut at the window's end (the ids there may differ).
    assert [len(p) for p in split_for_encoding("x" * 10_000, 4096)] == [4096, 4096, 1808]


# ---------------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory, stdlib) -> dict[str, str]:
    d = tmp_path_factory.mktemp("big")
    source = open(os.path.join(stdlib, "typing.py"), encoding="utf-8").read()
    files = {}
    text = (source * (50_000_000 // len(source) + 1))[:50_000_000]
    files["one_line_50mb"] = str(d / "one-line.jsonl")
    with open(files["one_line_50mb"], "w") as f:
        f.write(json.dumps({"id": "huge", "text": text}) + "\n" + json.dumps({"id": "small", "text": "x y"}) + "\n")
    files["gzip_bomb"] = str(d / "bomb.jsonl.gz")
    with gzip.open(files["gzip_bomb"], "wb", compresslevel=9) as f:
        f.write(b'{"text": "')
        block = b"a" * (1 << 20)
        for _ in range(1024):  # one 1 GiB line
            f.write(block)
        f.write(b'"}\n{"id": "after", "text": "the record after the bomb"}\n')
    files["rejected_3m"] = str(d / "rejected.jsonl")
    with open(files["rejected_3m"], "w") as f:
        f.write('{"text": 5}\n' * 3_000_000)
    files["text_30mb"] = str(d / "big.txt")
    with open(files["text_30mb"], "w") as f:
        f.write(text[:30_000_000])
    # One document of 60 MiB with no whitespace at all: it arrives as thousands of rows at
    # once (it peaked at 1.6 GB when they were masked and written in one go).
    files["nul_text_60mb"] = str(d / "nul.txt.gz")
    with gzip.open(files["nul_text_60mb"], "wb", compresslevel=1) as f:
        for _ in range(60):
            f.write(bytes(1 << 20))
    return files


@pytest.mark.parametrize("case, read, written", [
    ("one_line_50mb", 2, 2), ("gzip_bomb", 2, 1), ("rejected_3m", 3_000_000, 0), ("text_30mb", None, None),
    ("nul_text_60mb", 1, 1)])
def test_peak_memory_stays_bounded(hostile_files, tokenizer_path, tmp_path, case, read, written):
    src = hostile_files[case]
    out = str(tmp_path / "out")
    code, peak_mb, err = _peak_rss_mb(["prepare", "--input", src, "--output", out, "--tokenizer", tokenizer_path,
                                       "--seq-len", "2048", "-q"])
    assert code == 0, err
    c = read_manifest(out)["counts"]
    assert c["documents_read"] == c["documents_written"] + c["documents_rejected"]
    if read is not None:
        assert (c["documents_read"], c["documents_written"]) == (read, written)
    if case == "gzip_bomb":
        assert os.path.getsize(src) < 2_000_000 and c["rejected_by_reason"] == {"record_too_large": 1}
    if case == "text_30mb":  # one document, read and tokenized as 16 MB pieces
        assert c["documents_written"] >= 1 and c["tokens"] > 5_000_000
    print(f"{case}: peak RSS {peak_mb:.0f} MB")
    assert peak_mb < RSS_BOUND_MB, f"{case}: peak RSS {peak_mb:.0f} MB"


# ---------------------------------------------------------------------- text bombs


@pytest.fixture(scope="module")
def text_bomb(tmp_path_factory, stdlib) -> dict[str, str]:
    """A 1 MB ``.txt.gz`` that inflates to 1 GiB of NUL bytes: alone, and among 100
    good documents (stdlib modules as ``.txt``)."""
    d = tmp_path_factory.mktemp("text-bomb")
    (d / "alone").mkdir()
    (d / "mixed").mkdir()
    bomb = d / "alone" / "bomb.txt.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        block = bytes(1 << 20)
        for _ in range(1024):
            f.write(block)
    assert bomb.stat().st_size < 1_100_000
    shutil.copy(bomb, d / "mixed" / "bomb.txt.gz")
    for i, path in enumerate(sorted(glob.glob(os.path.join(stdlib, "*.py")))[:100]):
        shutil.copy(path, d / "mixed" / f"doc-{i:03d}.txt")
    return {"alone": str(d / "alone" / "*"), "mixed": str(d / "mixed" / "*")}


@pytest.mark.parametrize("case, read, written", [("alone", 1, 0), ("mixed", 101, 100)])
def test_a_compressed_text_bomb_is_a_dead_letter_within_seconds(text_bomb, tokenizer_path, tmp_path, case, read,
                                                                written):
    out = str(tmp_path / "out")
    started = time.monotonic()
    code, peak_mb, err = _peak_rss_mb(["prepare", "--input", text_bomb[case], "--output", out, "--tokenizer",
                                       tokenizer_path, "--seq-len", "512", "-q"])
    seconds = time.monotonic() - started
    assert code == 0, err
    c = read_manifest(out)["counts"]
    assert (c["documents_read"], c["documents_written"]) == (read, written)
    assert c["documents_read"] == c["documents_written"] + c["documents_rejected"]
    assert c["rejected_by_reason"] == {"record_too_large": 1}
    dead = [json.loads(line) for path in glob.glob(os.path.join(out, "rejected", "*.jsonl")) for line in open(path)]
    assert [d["key"] for d in dead] == ["bomb.txt.gz"]
    assert "once decompressed" in dead[0]["detail"] and "--max-document-bytes" in dead[0]["detail"]
    print(f"text bomb {case}: {seconds:.1f} s, peak RSS {peak_mb:.0f} MB")
    assert seconds < 60 and peak_mb < RSS_BOUND_MB, (seconds, peak_mb)


def test_max_document_bytes_bounds_text_files_and_json_lines(tmp_path, stdlib, tokenizer_path):
    text = "".join(open(p, encoding="utf-8").read() for p in sorted(glob.glob(os.path.join(stdlib, "json", "*.py"))))
    assert len(text.encode()) > 30_000
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "plain.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "in" / "packed.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    (tmp_path / "in" / "records.jsonl").write_text(json.dumps({"id": "long", "text": text}) + "\n"
                                                   + json.dumps({"id": "short", "text": "a short one"}) + "\n")
    pattern = str(tmp_path / "in" / "*")
    small = run_prepare(_config(pattern, max_document_bytes=20_000), str(tmp_path / "small")).manifest
    assert small["counts"]["rejected_by_reason"] == {"record_too_large": 3}
    assert small["counts"]["documents_written"] == 1 and small["config"]["max_document_bytes"] == 20_000
    large = run_prepare(_config(pattern, max_document_bytes=1 << 20), str(tmp_path / "large")).manifest
    assert large["counts"]["documents_written"] == 4 and large["counts"]["documents_rejected"] == 0
    r = _cli("prepare", "--input", pattern, "--output", str(tmp_path / "cli"), "--tokenizer", tokenizer_path,
             "--max-document-bytes", "0")
    assert r.returncode == errors.EXIT_BAD_INPUT and "--max-document-bytes" in _one_error_line(r.stderr)


def test_a_long_unit_logs_progress_before_its_shard_is_done(tmp_path, email_glob, tokenizer_path, monkeypatch, caplog):
    import logging

    from meap_data import process

    monkeypatch.setattr(process, "UNIT_PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="meap_data"):
        run_prepare(_config(email_glob, input_bytes_per_shard=1 << 30), str(tmp_path / "out"), tokenizer=tokenizer_path)
    running = [r.getMessage() for r in caplog.records if ": running, " in r.getMessage()]
    assert running and running[0].startswith("shard 1/1: running, ") and "M tokens so far" in running[0]


# ---------------------------------------------------------------------- one writer


def test_concurrent_prepares_one_wins_the_other_fails_naming_the_directory(tmp_path, stdlib, tokenizer_path):
    out = str(tmp_path / "out")
    common = ["prepare", "--input", os.path.join(stdlib, "*.py"), "--output", out, "--tokenizer", tokenizer_path,
              "--seq-len", "256", "--input-bytes-per-shard", "1000000", "--overwrite", "-q"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "meap_data", *common, "--seed", "1"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-m", "meap_data", *common, "--seed", "2",
                          "--direct_running_mode=multi_processing", "--direct_num_workers=2"], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, errors.EXIT_BUSY], results
    winner = 1 + [code for code, _ in results].index(0)
    loser_err = next(err for code, err in results if code)
    line = _one_error_line(loser_err)
    assert f"output directory {out!r} is being written by pid" in line
    assert verify_dataset(out) == [] and DatasetManifest.read(out).seed == winner
    assert not os.path.exists(os.path.join(out, LOCK))


def test_a_live_lock_refuses_and_a_dead_runs_lock_is_taken_over(tmp_path, json_pkg_glob, tokenizer_path):
    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK
    import platform

    lock.write_text(json.dumps({"pid": os.getpid(), "host": platform.node(), "started": time.time()}))
    with pytest.raises(BusyError, match=f"pid {os.getpid()}"):
        run_prepare(_config(json_pkg_glob), str(out), tokenizer=tokenizer_path)
    assert lock.exists() and not (out / "arrow").exists()  # nothing touched
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": platform.node(), "started": 0}))
    run_prepare(_config(json_pkg_glob), str(out), tokenizer=tokenizer_path)
    assert verify_dataset(str(out)) == [] and not lock.exists()


# ---------------------------------------------------------------------- untrusted datasets


@pytest.mark.parametrize("path", ["../../dev/zero", "/etc/passwd", "arrow/../../../etc/passwd", "webdataset/x.tar"])
def test_manifest_paths_cannot_leave_the_dataset(copy, path):
    _edit_manifest(copy, lambda m: m["shards"]["arrow"][0].__setitem__("path", path))
    with pytest.raises(CorruptDatasetError, match="malformed"):
        DatasetManifest.read(copy)
    with pytest.raises(CorruptDatasetError):
        ShardLoader(copy, 2)
    cli = _cli("verify", copy, timeout=60)
    assert cli.returncode == errors.EXIT_CORRUPT
    line = _one_error_line(cli.stderr)
    assert "manifest.json" in line and "root:" not in cli.stderr


@pytest.mark.parametrize("size_field", [b"-0000000001\0", b"\x80" + b"\0" * 10 + b"\x05", b"12x4\0\0\0\0\0\0\0\0"])
def test_malformed_tar_sizes_are_one_line_errors_naming_the_shard(copy, size_field):
    tar = sorted(glob.glob(os.path.join(copy, "webdataset", "*.tar")))[0]
    data = bytearray(open(tar, "rb").read())
    data[124:136] = size_field.ljust(12, b"\0")[:12]
    data[148:156] = b" " * 8
    data[148:156] = f"{sum(data[:512]):06o}\0 ".encode()
    open(tar, "wb").write(bytes(data))
    loader = ShardLoader(copy, 2, format="webdataset", shuffle=False)
    with pytest.raises(CorruptDatasetError) as info:
        for _ in loader:
            pass
    assert os.path.basename(tar) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("edit, expected", [
    (lambda m: m["tokenizer"].__setitem__("mask_token_id", m["tokenizer"]["mask_token_id"] - 1), "mask_token_id"),
    (lambda m: m["config"].__setitem__("seed", m["config"]["seed"] + 1), "config_hash"),
    (lambda m: m["tokenizer"].__setitem__("pad_token_id", 3), "pad_token_id"),
])
def test_verify_catches_an_edited_manifest(copy, edit, expected):
    _edit_manifest(copy, edit)
    problems = verify_dataset(copy)
    assert problems and any(expected in p for p in problems), problems


def test_verify_catches_a_partial_state_json_and_leftover_files(copy):
    state_path = os.path.join(copy, "arrow", "state.json")
    state = json.load(open(state_path))
    state["_data_files"] = state["_data_files"][:-1]
    open(state_path, "w").write(json.dumps(state))
    open(os.path.join(copy, "arrow", "data-00001-of-00003.arrow.tmp-0123456789ab"), "wb").write(b"partial")
    open(os.path.join(copy, "notes.txt"), "w").write("?")
    problems = verify_dataset(copy)
    assert any(p.startswith("arrow/state.json: lists") for p in problems)
    assert any("leftover temporary file" in p for p in problems)
    assert any(p.startswith("notes.txt") for p in problems)
    assert _cli("verify", copy).returncode == errors.EXIT_CORRUPT


def _rewrite_arrow_shard(directory: str, change) -> None:
    """Replace the first Arrow shard with ``change(table)`` and make the manifest agree
    (size and sha256): a consistent dataset whose rows are wrong."""
    import pyarrow as pa

    entry_path = read_manifest(directory)["shards"]["arrow"][0]["path"]
    path = os.path.join(directory, entry_path)
    table = change(pa.ipc.open_stream(open(path, "rb").read()).read_all())  # not mapped: rewritten below
    with pa.OSFile(path, "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
        writer.write_table(table)
    data = open(path, "rb").read()

    def agree(m):
        entry = m["shards"]["arrow"][0]
        entry["bytes"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()

    _edit_manifest(directory, agree)


@pytest.mark.parametrize("column, value", [("input_ids", 10**6), ("labels", -5), ("length", 10**4)])
def test_the_loader_refuses_rows_a_manifest_cannot_hold(copy, column, value):
    import pyarrow as pa
    import pyarrow.compute as pc

    def change(table):
        i = table.schema.get_field_index(column)
        col = table.column(column)
        if pa.types.is_list(col.type):
            first = col.combine_chunks()
            values = first.values.to_numpy().copy()
            values[first.offsets[1].as_py() - 1] = value
            new = pa.ListArray.from_arrays(first.offsets, pa.array(values, type=first.type.value_type))
        else:
            values = col.to_numpy().copy()
            values[0] = value
            new = pa.array(values, type=col.type)
        assert pc.max(new.values if pa.types.is_list(col.type) else new).as_py() is not None
        return table.set_column(i, table.schema.field(i), new)

    _rewrite_arrow_shard(copy, change)
    with pytest.raises(CorruptDatasetError, match="verify"):
        for _ in ShardLoader(copy, 4, shuffle=False):
            pass


def test_the_loader_stops_when_the_dataset_is_replaced_under_it(copy, email_glob, tokenizer_path):
    loader = ShardLoader(copy, 2, shuffle=False, rows_per_read=2)
    it = iter(loader)
    next(it)
    time.sleep(0.01)
    run_prepare(_config(email_glob, seed=7), copy, tokenizer=tokenizer_path, overwrite=True)
    with pytest.raises(CorruptDatasetError, match="replaced"):
        for _ in range(1000):
            next(it)


def test_loader_state_identity_is_the_content_not_the_path(ds, copy, tmp_path, email_glob, tokenizer_path):
    a = ShardLoader(ds, 4, seed=3)
    it = iter(a)
    next(it)
    state = a.state_dict()
    # The same bytes elsewhere, through a relative path: accepted.
    same = ShardLoader(os.path.relpath(copy), 4, seed=3)
    same.load_state_dict(state)
    assert same.state_dict()["position"] == state["position"]
    # Other data with the same sample count and input glob (another mask seed): refused.
    other = str(tmp_path / "other")
    run_prepare(_config(email_glob, seed=1), other, tokenizer=tokenizer_path)
    assert DatasetManifest.read(other).samples == a.samples
    with pytest.raises(MeapDataError, match="dataset="):
        ShardLoader(other, 4, seed=3).load_state_dict(state)


# ---------------------------------------------------------------------- the command line


def test_cli_failures_are_one_line_with_distinct_codes(ds, copy, tmp_path, json_pkg_glob, tokenizer_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    r = _cli("prepare", "--input", json_pkg_glob, "--output", str(a_file), "--tokenizer", tokenizer_path)
    assert r.returncode == errors.EXIT_BAD_INPUT and "is a file" in _one_error_line(r.stderr)

    open(os.path.join(copy, "manifest.json"), "w").write('{"schema_version": 2, "shards": ')
    for command in (["verify", copy], ["inspect", copy]):
        r = _cli(*command)
        assert r.returncode == errors.EXIT_CORRUPT and "not valid JSON" in _one_error_line(r.stderr)
    open(os.path.join(copy, "manifest.json"), "w").write("[1, 2]")
    r = _cli("verify", copy)
    assert r.returncode == errors.EXIT_CORRUPT and "not a manifest" in _one_error_line(r.stderr)

    r = _cli("demo", "--output", ds)  # an existing dataset: refused, not replaced
    assert r.returncode == errors.EXIT_BAD_INPUT and "--overwrite" in _one_error_line(r.stderr)
    assert verify_dataset(ds) == []

    out = tmp_path / "run"
    out.mkdir()
    (out / "ckpt.pt").write_bytes(b"an earlier run")
    r = subprocess.run([sys.executable, "-m", "meap_data.train_shards", "--data", ds, "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == errors.EXIT_BAD_INPUT and "--overwrite" in _one_error_line(r.stderr)
    assert (out / "ckpt.pt").read_bytes() == b"an earlier run"


def test_a_closed_pipe_exits_quietly_with_141(tmp_path):
    report = tmp_path / "rustc.txt"
    report.write_text("error[E0425]: cannot find value `x` in this scope\n --> main.rs:1:1\n  |\n1 | x\n"
                      "  | ^ not found in this scope\n\n" * 20_000)
    r = subprocess.run(f"set -o pipefail; {sys.executable} -m meap_data rust parse {report} | head -1",
                       shell=True, executable="/bin/bash", capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == errors.EXIT_BROKEN_PIPE and r.stdout.count("\n") == 1 and r.stderr == ""


def test_ctrl_c_exits_130_with_one_line(tmp_path, hostile_files, tokenizer_path):
    out = str(tmp_path / "out")
    code, err = _start_and_stop(out, _slow_inputs(hostile_files), tokenizer_path,
                                lambda p: p.send_signal(signal.SIGINT))
    assert code == errors.EXIT_INTERRUPTED
    assert _one_error_line(err) == "error: interrupted" and err.rstrip().endswith("error: interrupted")
    assert not os.path.exists(os.path.join(out, LOCK)) and not os.path.exists(os.path.join(out, "manifest.json"))


def _slow_inputs(hostile_files) -> list[str]:
    """Inputs whose prepare at --seq-len 256 runs about 13 s here: long enough that a
    signal sent a second after it starts always lands mid-run (the 30 MB text alone
    now finishes in about a second)."""
    return [hostile_files["text_30mb"], hostile_files["nul_text_60mb"]]


def _start_and_stop(out: str, inputs: list[str], tokenizer_path: str, stop) -> tuple[int, str]:
    """Start a prepare of ``inputs``, ``stop(proc)`` once it is writing; its exit code and stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "meap_data", "prepare", "--input", *inputs, "--output", out,
                             "--tokenizer", tokenizer_path, "--seq-len", "256"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = ""
    while "planned as" not in seen:
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    time.sleep(1.0)
    stop(proc)
    err = proc.stderr.read()
    return proc.wait(timeout=120), err


def _leftovers(out) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), out) for d, _, names in os.walk(out) for n in names
                  if ".tmp-" in n or n == LOCK)


def test_sigterm_stops_cleanly_and_a_rerun_replaces_the_partial_output(tmp_path, hostile_files, tokenizer_path):
    out = str(tmp_path / "out")
    code, err = _start_and_stop(out, _slow_inputs(hostile_files), tokenizer_path, lambda p: p.terminate())
    assert code == errors.EXIT_TERMINATED and _one_error_line(err) == "error: terminated"
    # No lock, no temporary file, no manifest: what is left is the tokenizer files and
    # the shard folders, with only whole shards of finished units in them.
    assert _leftovers(out) == [] and not os.path.exists(os.path.join(out, "manifest.json"))
    assert {"arrow", "webdataset", "tokenizer.json"} <= set(os.listdir(out))
    rerun = ["prepare", "--input", hostile_files["text_30mb"], "--output", out, "--tokenizer", tokenizer_path,
             "--seq-len", "256", "-q"]  # the rerun may be quicker: only the output's state matters
    r = _cli(*rerun)
    assert r.returncode == errors.EXIT_BAD_INPUT
    assert "files of an incomplete run" in _one_error_line(r.stderr) and "--overwrite" in r.stderr
    r = _cli(*rerun, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert verify_dataset(out) == [] and _leftovers(out) == []


def test_after_sigkill_a_rerun_takes_the_lock_over_and_replaces_the_partial_output(tmp_path, hostile_files,
                                                                                  tokenizer_path):
    out = str(tmp_path / "out")
    code, _ = _start_and_stop(out, _slow_inputs(hostile_files), tokenizer_path, lambda p: p.kill())
    assert code == -signal.SIGKILL
    assert LOCK in _leftovers(out)  # nothing runs after SIGKILL: the lock of a dead pid stays
    r = _cli("prepare", "--input", hostile_files["text_30mb"], "--output", out, "--tokenizer", tokenizer_path,
             "--seq-len", "256", "-q", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert verify_dataset(out) == [] and _leftovers(out) == []
