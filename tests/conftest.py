"""Shared fixtures: a real corpus (this Python's standard library source) and a
tokenizer trained on it, both built once per test session."""

from __future__ import annotations

import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from meap_data.demo import stdlib_dir  # noqa: E402


@pytest.fixture(scope="session")
def stdlib() -> str:
    return stdlib_dir()


@pytest.fixture(scope="session")
def json_pkg_glob(stdlib) -> str:
    """The stdlib ``json`` package: 5 real modules, about 50 KB."""
    return os.path.join(stdlib, "json", "*.py")


@pytest.fixture(scope="session")
def email_glob(stdlib) -> str:
    """The stdlib ``email`` package: a few dozen modules, about 500 KB."""
    return os.path.join(stdlib, "email", "**", "*.py")


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory, stdlib) -> str:
    """A 2048-token byte-level BPE trained on stdlib modules, saved as tokenizer.json."""
    from meap_data.tokenizer import prepare_tokenizer, train_bpe

    texts = []
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py")))[:60]:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts.append(f.read())
    info = prepare_tokenizer(train_bpe(texts, 2048))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(info.json, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def rust_toolchain():
    """The local Rust toolchain; the test skips, saying why, where rustc is missing."""
    from meap_data.errors import MeapDataError
    from meap_data.rust.harvest import find_toolchain

    try:
        return find_toolchain()
    except MeapDataError as e:
        pytest.skip(f"rustc not found on PATH: {e}")


@pytest.fixture(scope="session")
def rust_docs_toolchain(rust_toolchain):
    """The toolchain, when its error index (the rust-docs component) is installed."""
    from meap_data.errors import MeapDataError
    from meap_data.rust.error_index import error_codes_dir

    try:
        error_codes_dir(rust_toolchain)
    except MeapDataError as e:
        pytest.skip(f"error index not installed (rustup component add rust-docs): {e}")
    return rust_toolchain
