"""Rust compiler transcripts: parse diagnostics, harvest compiles, build the error-index
corpus, render training text.

Modules, one job each: ``diagnostics`` (model and parsers), ``harvest`` (run rustc and
cargo, normalise, write records), ``error_index`` (the local toolchain's error-code
examples as a corpus), ``records`` (the record format and its schema), ``render``
(prompt/response and pre-training text), ``cli`` (the ``meap-data rust`` commands).
Turning records into datasets is the ``rust`` data kind (:mod:`meap_data.kinds.rust`);
their masks are the ``sft`` and ``pretrain`` rules of :mod:`meap_data.masking`.
"""
