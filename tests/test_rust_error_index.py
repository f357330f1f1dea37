"""The error-index corpus: page parsing (offline HTML) and a compiled sample of the real index."""

from __future__ import annotations

import json
import re

import pytest

from meap_data.errors import MeapDataError
from meap_data.rust import diagnostics as D
from meap_data.rust import error_index as EI
from meap_data.rust import harvest as H
from meap_data.rust.records import dumps_record, validate_record

SAMPLE = 40

PAGE = """
<h1>Error code E0999</h1>
<pre class="playground"><code class="language-rust compile_fail E0999"><span class="boring">#![allow(unused)]
</span><span class="boring">fn main() {
</span>let x: i32 = &quot;a&quot;; // error
<span class="boring">}</span></code></pre>
<p>Fix it:</p>
<pre class="playground"><code class="language-rust"><span class="boring">#![allow(unused)]
</span><span class="boring">fn main() {
</span><span class="boring">#![feature(never_type)]
</span>let x: i32 = 1;
<span class="boring">}</span></code></pre>
<pre class="playground"><code class="language-rust compile_fail E0999 edition2018">fn main() { let y = 1 + &quot;b&quot;; }
</code></pre>
<pre class="playground"><code class="language-rust ignore (pseudo-code)">fn nope() {}
</code></pre>
<pre><code class="language-text">not rust</code></pre>
<pre class="playground"><code class="language-rust compile_fail">fn main() { undefined(); }
</code></pre>
<pre><code class="language-no_run"># use std::fmt;
unsafe { let p = 1; }
</code></pre>
"""


def test_page_blocks_are_the_programs_rustdoc_compiles():
    blocks = EI.page_blocks(PAGE)
    assert [b.tags[:2] for b in blocks] == [
        ("rust", "compile_fail"), ("rust",), ("rust", "compile_fail"), ("rust", "ignore"), ("text",),
        ("rust", "compile_fail"), ("no_run",),
    ]
    assert blocks[0].code == '#![allow(unused)]\nfn main() {\nlet x: i32 = "a"; // error\n}\n'
    # a hidden #![feature] that mdbook left inside its fn main wrapper is a crate attribute again
    assert blocks[1].code == "#![allow(unused)]\n#![feature(never_type)]\nfn main() {\nlet x: i32 = 1;\n}\n"
    # a raw no_run block is unhidden and wrapped as rustdoc does
    assert blocks[6].code == "#![allow(unused)]\nfn main() {\nuse std::fmt;\nunsafe { let p = 1; }\n}\n"
    assert [b.edition for b in blocks[:3]] == ["2015", "2015", "2018"]
    assert [b.expected_code for b in blocks[:3]] == ["E0999", None, "E0999"]


def test_examples_pair_with_the_next_fix_else_the_previous_one():
    examples = EI.page_examples("E0999", PAGE)
    assert [e.key for e in examples] == ["E0999-0", "E0999-1", "E0999-2"]
    assert examples[0].fix.tags == ("rust",)
    assert examples[1].fix.tags == ("no_run",)  # the ignore block is not a fix
    assert examples[2].fix.tags == ("no_run",)
    assert examples[2].block.expected_code is None


def test_missing_docs_name_the_path_and_the_fix(tmp_path):
    fake = H.Toolchain("rustc", None, "rustc 0.0.0", str(tmp_path))
    with pytest.raises(MeapDataError) as info:
        EI.error_codes_dir(fake)
    message = str(info.value)
    assert str(tmp_path / "share" / "doc" / "rust" / "html" / "error_codes") in message
    assert "rustup component add rust-docs" in message
    with pytest.raises(MeapDataError, match="rust-docs"):
        EI.build_corpus(tmp_path / "out.jsonl", toolchain=fake)
    assert not (tmp_path / "out.jsonl").exists()


@pytest.fixture(scope="module")
def toolchain(rust_docs_toolchain) -> H.Toolchain:
    return rust_docs_toolchain


@pytest.fixture(scope="module")
def sample(toolchain, tmp_path_factory):
    out = tmp_path_factory.mktemp("error-index") / "sample.jsonl"
    messages: list[str] = []
    summary = EI.build_corpus(out, limit=SAMPLE, jobs=2, toolchain=toolchain, progress=messages.append)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return summary, records, messages


def test_sample_produces_expected_codes(sample):
    summary, records, messages = sample
    assert summary.examples == len(records) == SAMPLE
    assert summary.with_expected >= 30
    assert summary.matched_percent >= 95.0, [
        (r["key"], r["expected_code"], r["produced_codes"]) for r in records
        if r["expected_code"] and r["expected_code"] not in r["produced_codes"]
    ]
    assert summary.fixes_compiled >= 0.9 * summary.fixes
    assert messages[-1].startswith(f"error-index: compiling: {SAMPLE}/{SAMPLE} (")
    assert messages[-1].endswith(f"{summary.matched}/{summary.with_expected} produced their expected code")
    assert summary.line().startswith(
        f"error-index: {SAMPLE} examples, expected code produced for {summary.matched}/{summary.with_expected} ("
    )


def test_sample_records_are_ordered_valid_and_carry_their_provenance(sample):
    _, records, _ = sample
    keys = [(r["example"]["page"], r["example"]["index"]) for r in records]
    assert keys == sorted(keys)
    assert records[0]["key"] == f"{keys[0][0]}-{keys[0][1]}"
    for r in records:
        assert validate_record(r) is None, validate_record(r)
        assert r["origin"] == "error-index" and r["env"] == {"RUSTC_BOOTSTRAP": "1"}
        assert r["source_path"] == "$SRC/main.rs" and r["argv"][-1] == "main.rs"
        assert r["exit_code"] != 0  # compile_fail examples fail
        assert (r["fixed_source"] is None) == (r["fix_compiles"] is None)
        # the file is main.rs, a name that does not leak the expected code
        assert {d["primary"]["file"] for d in r["diagnostics"] if d["primary"]} <= {"main.rs"}


def test_sample_rendered_and_json_agree(sample):
    _, records, _ = sample
    compared = 0
    for r in records:
        text = D.parse_human(r["rendered"])
        assert [d.identity() for d in text.diagnostics] == [
            D.Diagnostic.from_dict(d).identity() for d in r["diagnostics"]
        ], r["key"]
        assert text.problems == [], (r["key"], text.problems)
        compared += len(r["diagnostics"])
    assert compared > 2 * SAMPLE


def test_corpus_is_byte_identical_across_runs_and_job_counts(sample, toolchain, tmp_path):
    _, records, _ = sample
    out = tmp_path / "again.jsonl"
    EI.build_corpus(out, limit=8, jobs=1, toolchain=toolchain)
    assert out.read_text(encoding="utf-8") == "".join(dumps_record(r) for r in records[:8])


def test_annotations_are_stripped_and_non_fixes_rejected():
    code = ('fn main() {\n    let x: i32 = "a"; // error: mismatched types\n    //        expected `i32`\n'
            '    let y = 3; // ok!\n    // a comment that explains the program stays\n    let url = "http://x"; // Correct.\n}')
    assert EI.strip_annotations(code) == ('fn main() {\n    let x: i32 = "a";\n    let y = 3;\n'
                                          '    // a comment that explains the program stays\n    let url = "http://x";\n}')
    source = "fn main() {\n    let v = vec![1, 2];\n    let w = v;\n    println!(\"{:?}\", v);\n}\n"
    assert EI.fix_problem(source, source.replace("let w = v;", "let w = v.clone();"))[0] is None
    assert EI.fix_problem(source, source + "// or:\nfn main() {}\n")[0].startswith("alternatives")
    assert EI.fix_problem(source, "struct Unrelated;\nimpl Unrelated { fn new() -> Self { Unrelated } }\n")[0] \
        .startswith("low_similarity")


def test_sample_sources_are_clean_modern_and_fixes_close(sample):
    _, records, _ = sample
    for r in records:
        assert not re.search(r"//\s*(ok|error)\b", r["source"] + (r["fixed_source"] or ""), re.I), r["key"]
        if r["fixed_source"] is not None:
            assert r["fix_similarity"] >= EI.MIN_FIX_SIMILARITY and "fix_rejected" not in r
        elif "fix_rejected" in r:
            assert r["fix_compiles"] is None
        if r["edition"] != r["example"]["tagged_edition"]:
            assert r["edition"] == "2021" and r["expected_code"] in r["produced_codes"] + [None]
    assert sum(r["edition"] == "2021" for r in records) > 0.8 * len(records)
