"""``meap-data rust snippets``: which doc blocks are taken, how they are wrapped and
deduplicated, RUSTC_BOOTSTRAP only where a block needs it, and byte-identical output
across --jobs on the real docs of the local toolchain."""

from __future__ import annotations

import dataclasses
import html
import json
from urllib.parse import quote_plus

import pytest

from meap_data.cli import main
from meap_data.rust import snippets as S
from meap_data.rust.doc_blocks import api_blocks

BOOK_PAGE = """<html><body>
<pre class="playground"><code class="language-rust edition2021"><span class="boring">#![allow(unused)]
</span><span class="boring">fn main() {
</span>let v = vec![1, 2, 3];
println!("{}", v.len());
<span class="boring">}</span></code></pre>
<pre><code class="language-rust ignore">this is not rust at all</code></pre>
<pre><code class="language-rust compile_fail edition2021">fn main() { let x: i32 = "a"; }</code></pre>
<pre><code class="language-rust edition2021">fn main() { undefined_function(); }</code></pre>
<pre><code class="language-text">plain text</code></pre>
</body></html>"""

FEATURE_PROGRAM = "#![allow(unused)]\n#![feature(never_type)]\nfn main() {\n    let f = || -> ! { panic!() };\n}\n"
PLAIN_PROGRAM = "#![allow(unused)]\nfn main() {\n    assert_eq!(1 + 1, 2);\n}\n"


def _api_example(code: str, cls: str = "") -> str:
    href = "https://play.rust-lang.org/?code=" + quote_plus(code) + "&edition=2024"
    return (f'<div class="example-wrap{cls}"><pre class="rust rust-example-rendered"><code>shown</code></pre>'
            f'<a class="test-arrow" target="_blank" title="Run code" href="{html.escape(href)}">Run</a></div>')


@pytest.fixture()
def fake_docs(tmp_path, rust_toolchain):
    html_dir = tmp_path / "share" / "doc" / "rust" / "html"
    (html_dir / "book").mkdir(parents=True)
    (html_dir / "book" / "a.html").write_text(BOOK_PAGE)
    (html_dir / "book" / "b.html").write_text(BOOK_PAGE.split("</pre>")[0] + "</pre>")  # the first block again
    (html_dir / "std").mkdir()
    (html_dir / "std" / "x.html").write_text(
        _api_example(PLAIN_PROGRAM) + _api_example(FEATURE_PROGRAM) + _api_example("fn main() {}", " compile_fail"))
    return dataclasses.replace(rust_toolchain, sysroot=str(tmp_path))


def test_api_pages_give_the_whole_program_from_the_playground_link():
    [plain, feature, failing] = api_blocks(_api_example(PLAIN_PROGRAM) + _api_example(FEATURE_PROGRAM)
                                           + _api_example("fn main() {}", " compile_fail"))
    assert plain.code == PLAIN_PROGRAM and plain.edition == "2024" and plain.is_fix
    assert feature.needs_nightly and not plain.needs_nightly
    assert failing.compile_fail and not failing.is_fix


def test_blocks_are_chosen_deduplicated_and_compiled(fake_docs, tmp_path):
    out = tmp_path / "snippets.jsonl"
    summary = S.build_snippets(out, jobs=2, collections=("book", "std"), toolchain=fake_docs, progress=None)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    # book: 5 blocks (4 Rust) + 1 again; std: 3 examples
    assert (summary.blocks, summary.expected_to_compile, summary.duplicates) == (8, 5, 1)
    assert summary.compiled == 3 and summary.dropped == {"does_not_compile": 1}
    by_page = {(r["doc"]["collection"], r["doc"]["page"], r["doc"]["index"]): r for r in records}
    assert set(by_page) == {("book", "a.html", 0), ("std", "x.html", 0), ("std", "x.html", 1)}
    book = by_page[("book", "a.html", 0)]
    assert book["source"] == "#![allow(unused)]\nfn main() {\nlet v = vec![1, 2, 3];\nprintln!(\"{}\", v.len());\n}\n"
    assert book["edition"] == "2021" and book["doc"]["duplicates"] == 1 and book["env"] == {}
    assert by_page[("std", "x.html", 0)]["env"] == {}  # RUSTC_BOOTSTRAP only where a block needs it
    assert by_page[("std", "x.html", 1)]["env"] == {"RUSTC_BOOTSTRAP": "1"}
    assert all(S.validate_snippet(r) is None for r in records)


def test_real_docs_are_extracted_identically_whatever_the_job_count(rust_docs_toolchain, tmp_path, capsys):
    try:
        S.docs_root(rust_docs_toolchain)
    except Exception as e:  # rust-docs component absent
        pytest.skip(str(e))
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    assert main(["-q", "rust", "snippets", "--output", str(one), "--collections", "book,std", "--limit", "60",
                 "--jobs", "1"]) == 0
    assert "compiled" in capsys.readouterr().out
    assert main(["-q", "rust", "snippets", "--output", str(two), "--collections", "book,std", "--limit", "60",
                 "--jobs", "2"]) == 0
    assert one.read_bytes() == two.read_bytes()
    records = [json.loads(line) for line in one.read_text().splitlines()]
    assert 50 <= len(records) <= 60 and len({r["key"] for r in records}) == len(records)
    assert len({r["sha256"] for r in records}) == len(records)
    assert {r["doc"]["collection"] for r in records} == {"book"}  # the first 60 unique blocks are the book's


def test_unknown_collection_is_a_one_line_error(capsys, tmp_path):
    assert main(["rust", "snippets", "--output", str(tmp_path / "x.jsonl"), "--collections", "books"]) == 2
    assert "unknown doc collections ['books']" in capsys.readouterr().err
