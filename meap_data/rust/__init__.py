"""Rust compiler transcripts: parse diagnostics, harvest compiles, build the error-index
corpus, render training text and mask it MEAP-style.

Modules, one job each: ``diagnostics`` (model and parsers), ``harvest`` (run rustc and
cargo, normalise, write records), ``error_index`` (the local toolchain's error-code
examples as a corpus), ``records`` (the record format and its schema), ``render``
(prompt/response and pre-training text), ``masking`` (MEAP masks for transcripts),
``cli`` (the ``meap-data rust`` commands).
"""
