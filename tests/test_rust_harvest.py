"""Harvesting transcripts from small Rust programs these tests write and compile."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import diagnostics as D
from meap_data.rust import harvest as H
from meap_data.rust.records import read_records, validate_record

PROGRAMS = {
    "typeck.rs": 'fn main() {\n    let x: i32 = "a";\n    undefined_fn(x);\n}\n',
    "borrow.rs": (
        "fn consume(v: Vec<i32>) -> usize {\n    v.len()\n}\n\nfn main() {\n    let v = vec![1, 2, 3];\n"
        "    let unused = 5;\n    let mut count = 0;\n    let n = consume(v);\n"
        '    println!("{} {} {}", n, v.len(), count);\n}\n'
    ),
    "lints.rs": (
        "#![deny(warnings)]\nuse std::collections::HashMap;\nenum Unused { A }\nfn helper() {}\n"
        "fn main() {\n    let Snake = 1;\n}\n"
    ),
    "multiline.rs": "fn main() {\n    let x: i32 = if true {\n        1\n    };\n}\n",
    "syntax.rs": "fn main() {\n    let x = ;\n    let y = (1, 2;\n}\n",
    "unicode.rs": 'fn main() {\n    let s = "héllo wörld"; let n: i32 = s;\n}\n',
    "tabs.rs": "fn main() {\n\tlet tabbed: u8 = 300;\n\tlet z: bool = 1;\n}\n",
    "macros.rs": (
        "macro_rules! make { ($t:ty) => { let v: $t = \"s\"; }; }\n"
        'fn main() {\n    println!("{}", undefined_name);\n    make!(u32);\n}\n'
    ),
    "clean.rs": 'fn main() {\n    println!("hello");\n}\n',
    "snippet.rs": "pub fn half(x: u32) -> u32 {\n    x / 2.0\n}\n",
    "longtype.rs": (
        "fn main() {\n    let x: " + "Option<" * 40 + "i32" + ">" * 40 + " = None;\n    let y: () = x;\n}\n"
    ),
}
CRATE = {
    "Cargo.toml": '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n',
    "src/main.rs": "mod util;\n\nfn main() {\n    let unused = 1;\n    util::run();\n}\n",
    "src/util.rs": "pub fn run() {\n    let n: u32 = -1;\n}\n",
}
SLOW = (
    "const fn spin(n: u64) -> u64 {\n    let mut i = 0;\n    let mut s = 0u64;\n    while i < n {\n"
    "        s = s.wrapping_mul(6364136223846793005).wrapping_add(i);\n        i += 1;\n    }\n    s\n}\n"
    "#[allow(long_running_const_eval)]\nconst X: u64 = spin(50_000_000);\nfn main() { println!(\"{}\", X); }\n"
)


@pytest.fixture(scope="module")
def toolchain(rust_toolchain) -> H.Toolchain:
    return rust_toolchain


def write_tree(root: Path) -> Path:
    progs = root / "progs"
    for name, text in PROGRAMS.items():
        (progs / name).parent.mkdir(parents=True, exist_ok=True)
        (progs / name).write_text(text, encoding="utf-8")
    for name, text in CRATE.items():
        path = progs / "demo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return progs


@pytest.fixture(scope="module")
def harvested(toolchain, tmp_path_factory) -> tuple[Path, Path, list[dict]]:
    progs = write_tree(tmp_path_factory.mktemp("harvest-a"))
    out = progs.parent / "out.jsonl"
    summary = H.harvest([progs], out, jobs=2, time_limit_s=60, toolchain=toolchain)
    assert summary.records == len(PROGRAMS) + 1
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return progs, out, records


def test_records_are_sorted_valid_and_complete(harvested):
    progs, out, records = harvested
    paths = [r["source_path"] for r in records]
    assert paths == sorted(paths)
    assert paths[0] == "$SRC/progs/borrow.rs" and "$SRC/progs/demo" in paths
    assert len({r["key"] for r in records}) == len(records)
    assert all("." not in r["key"] for r in records)
    for r in records:
        assert validate_record(r) is None, validate_record(r)
        assert r["timed_out"] is False and r["toolchain"].startswith("rustc ")
        assert "duration_ms" not in r
    by_path = {r["source_path"]: r for r in records}
    assert by_path["$SRC/progs/clean.rs"]["exit_code"] == 0
    assert by_path["$SRC/progs/clean.rs"]["diagnostics"] == []
    assert by_path["$SRC/progs/typeck.rs"]["produced_codes"] == ["E0308", "E0425"]
    assert by_path["$SRC/progs/typeck.rs"]["argv"] == [
        "rustc", "--edition", "2021", "--emit=metadata", "--out-dir", "$TMP/out", "progs/typeck.rs",
    ]
    # a file without main is compiled as a library, not reported for lacking main
    snippet = by_path["$SRC/progs/snippet.rs"]
    assert "--crate-type" in snippet["argv"] and "E0601" not in snippet["produced_codes"]
    crate = by_path["$SRC/progs/demo"]
    assert crate["tool"] == "cargo" and crate["edition"] == "2021" and crate["exit_code"] == 101
    assert set(crate["files"]) == {"Cargo.toml", "src/main.rs", "src/util.rs"}
    assert crate["rendered"].startswith("    Checking demo v0.1.0 ($SRC/progs/demo)\n")
    assert {d["primary"]["file"] for d in crate["diagnostics"] if d["primary"]} == {"src/main.rs", "src/util.rs"}
    assert not (progs / "demo" / "target").exists() and not (progs / "demo" / "Cargo.lock").exists()


def test_rendered_and_json_parse_to_the_same_diagnostics(harvested):
    _, _, records = harvested
    compared = 0
    for r in records:
        from_json = [D.Diagnostic.from_dict(d).identity() for d in r["diagnostics"]]
        text = D.parse_human(r["rendered"])
        if not r["diagnostics"]:
            assert r["rendered"] == ""
            continue
        assert [d.identity() for d in text.diagnostics] == from_json, r["source_path"]
        assert text.problems == [], (r["source_path"], text.problems)
        compared += len(from_json)
    assert compared > 30


def test_machine_paths_are_normalised_so_records_are_byte_identical(harvested, toolchain, tmp_path):
    _, out, records = harvested
    text = out.read_text(encoding="utf-8")
    for leak in (tempfile.gettempdir() + "/", os.environ.get("HOME", "/nonexistent") + "/", toolchain.sysroot):
        assert leak not in text
    longtype = next(r for r in records if r["source_path"].endswith("longtype.rs"))
    assert "$TMP/out/longtype.long-type-<hash>.txt" in longtype["rendered"]
    # Same sources elsewhere, deeper, one job: same bytes.
    other = write_tree(tmp_path / "x" / "y")
    out2 = tmp_path / "again.jsonl"
    H.harvest([other], out2, jobs=1, time_limit_s=60, toolchain=toolchain)
    assert out2.read_bytes() == out.read_bytes()


def test_compiler_past_the_time_limit_is_recorded_as_timed_out(toolchain, tmp_path):
    (tmp_path / "slow.rs").write_text(SLOW, encoding="utf-8")
    start = time.monotonic()
    H.harvest([tmp_path / "slow.rs"], tmp_path / "slow.jsonl", time_limit_s=0.5, toolchain=toolchain)
    assert time.monotonic() - start < 10  # killed, not waited for
    [(_, record, reason)] = list(read_records(tmp_path / "slow.jsonl"))
    assert reason is None
    assert record["timed_out"] is True and record["exit_code"] is None
    assert record["diagnostics"] == [] and record["rendered"] == ""
    assert record["problems"] == ["compiler ran past the 0.5 s time limit and was killed"]


def test_a_real_ice_parses_alike_in_both_formats(toolchain, tmp_path):
    (tmp_path / "main.rs").write_text(PROGRAMS["typeck.rs"], encoding="utf-8")
    env = H.compiler_env({"RUSTC_BOOTSTRAP": "1"}, tmp_path)
    flags = ["-Ztreat-err-as-bug=1", "--emit=metadata", "--out-dir", str(tmp_path / "out"), "main.rs"]
    human = H.run_compiler([toolchain.rustc, *flags], tmp_path, env, 60)
    machine = H.run_compiler([toolchain.rustc, "--error-format=json", *flags], tmp_path, env, 60)
    assert human.exit_code == machine.exit_code == 101
    # Each run writes its own rustc-ice-<time>-<pid>.txt; the normaliser scrubs the name.
    scrub = H.Normaliser({})
    text = D.parse(scrub.text(human.stderr.decode()))
    json_ = D.parse(scrub.text(machine.stderr.decode()))
    assert [d.identity() for d in text.diagnostics] == [d.identity() for d in json_.diagnostics]
    assert text.diagnostics[0].level == D.ICE_LEVEL and text.diagnostics[0].code == "E0308"
    assert any(d.level == D.ICE_LEVEL and d.primary is None for d in json_.diagnostics)


def test_normaliser_scrubs_paths_and_random_names():
    n = H.Normaliser({"/work/src": "$SRC", "/tmp/abc": "$TMP", "/root/.rustup/tc": "$SYSROOT", "/root": "$HOME"})
    assert n.text("--> /work/src/a.rs and /work/srcx/b.rs") == "--> $SRC/a.rs and /work/srcx/b.rs"
    assert n.text("/root/.rustup/tc/lib and /root/.cargo") == "$SYSROOT/lib and $HOME/.cargo"
    assert n.text("'/tmp/abc/t/debug/deps/demo-240b0c63713fbbde.long-type-13219693453389828520.txt'") == (
        "'$TMP/t/debug/deps/demo-<hash>.long-type-<hash>.txt'"
    )
    assert n.text("at `/tmp/abc/rustc-ice-2026-11-22T08_41_44-3092.txt` x") == "at `$TMP/rustc-ice-<id>.txt` x"
    assert n.text("thread 'rustc' (3096) panicked") == "thread 'rustc' (<id>) panicked"
    assert n.text("    Finished `dev` profile [unoptimized + debuginfo] target(s) in 0.42s") == (
        "    Finished `dev` profile [unoptimized + debuginfo] target(s) in <time>"
    )
    assert n.value({"a": ["/tmp/abc/x"], "b": 3}) == {"a": ["$TMP/x"], "b": 3}


def test_discovery_errors_name_the_input(tmp_path):
    with pytest.raises(MeapDataError, match="no such file or directory"):
        H.discover([tmp_path / "missing"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(MeapDataError, match="not a .rs file"):
        H.discover([tmp_path / "notes.txt"])
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "same.rs").write_text("fn main() {}\n")
    with pytest.raises(MeapDataError, match="same path"):
        H.discover([tmp_path / "a" / "same.rs", tmp_path / "b" / "same.rs"])


def test_crate_edition_defaults_like_cargo():
    assert H.crate_edition('[package]\nname = "x"\nedition = "2024"\n') == "2024"
    assert H.crate_edition('[package]\nname = "x"\n') == "2015"
    assert H.crate_edition("not toml [") == "2015"


def test_invalid_utf8_source_is_recorded_with_a_problem(toolchain, tmp_path):
    (tmp_path / "latin1.rs").write_bytes(b'fn main() { let s = "caf\xe9"; }\n')
    H.harvest([tmp_path / "latin1.rs"], tmp_path / "o.jsonl", toolchain=toolchain)
    [(_, record, reason)] = list(read_records(tmp_path / "o.jsonl"))
    assert reason is None
    assert record["problems"][0].startswith("source: invalid UTF-8 at byte 24")
    assert "\ufffd" in record["source"] and record["exit_code"] == 1
    assert "stream did not contain valid UTF-8" in record["rendered"]
