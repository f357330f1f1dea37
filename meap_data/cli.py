"""The ``meap-data`` command line. Every command exits 0 on success and 2 with a
one-line ``error: ...`` on bad input."""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .errors import EXIT_CORRUPT, MeapDataError, interrupted, run_command
from .kinds import get_kind, kind_names


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare",
        help="raw corpora to tokenized, MEAP-masked, packed shards (Apache Beam)",
        description="Read, tokenize, mask, pack and write Arrow and WebDataset shards. "
        "Unknown options are passed to Apache Beam (e.g. --runner DataflowRunner, "
        "--runner DaskRunner --dask_client_address tcp://HOST:8786, --runner PortableRunner "
        "--job_endpoint embed --environment_type EXTERNAL --environment_config HOST:PORT, "
        "--direct_num_workers 2 --direct_running_mode multi_processing). Without --runner "
        "the job runs in-process and never downloads a runner.",
    )
    p.add_argument("--input", nargs="+", required=True, metavar="GLOB",
                   help="input files: .jsonl/.json (optionally .gz/.zst), .parquet, a datasets "
                   "save_to_disk directory, or anything else as one text document per file")
    p.add_argument("--output", required=True, metavar="DIR", help="dataset directory to write")
    p.add_argument("--kind", choices=kind_names(), default="text", help="input kind (default: text)")
    p.add_argument("--tokenizer", metavar="PATH_OR_NAME",
                   help="tokenizer.json path or hub name; default: train a byte-level BPE on the inputs")
    p.add_argument("--tokenizer-backend", choices=("auto", "hf", "fastokens"), default="auto",
                   help="who encodes: fastokens (fast) or Hugging Face tokenizers; auto (default) uses "
                   "fastokens when it loads the tokenizer and reproduces tokenizers' ids on a self-check "
                   "and on a sample of the inputs, else tokenizers. Shards are identical either way")
    p.add_argument("--eos-token", help="end-of-document token (added when absent; default: detected, else <|endoftext|>)")
    p.add_argument("--text-field", default="text", help="field holding the text in JSON/Parquet/datasets rows (default: text)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sample (default: 2048)")
    p.add_argument("--mask-ratio", type=float, default=None,
                   help="fraction of positions masked per sample, 0 for none (default: 0.15 for text and "
                   "--task transcript; 0.1 for --task repair/diagnose, the MEAP-SFT share of answer "
                   "tokens masked in the masked copy)")
    p.add_argument("--seed", type=int, default=0, help="masking seed (default: 0)")
    p.add_argument("--format", default="arrow,webdataset", help="comma list of arrow,webdataset (default: both)")
    p.add_argument("--no-pack", action="store_true", help="one document per sample (long ones split, short ones padded)")
    p.add_argument("--no-mask-special-tokens", action="store_true",
                   help="never mask the end-of-document, beginning-of-document or mask tokens")
    p.add_argument("--add-bos", action="store_true",
                   help="start every document (every fine-tuning copy) with a beginning-of-document token")
    p.add_argument("--bos-token", help="with --add-bos: that token (added when absent; default: detected, else "
                   "<|startoftext|>)")
    p.add_argument("--input-bytes-per-shard", type=int, default=64 << 20,
                   help="input bytes grouped into one output shard; also the byte-range size large JSON-lines files are cut into (default: 64 MiB)")
    p.add_argument("--max-document-bytes", type=int, default=64 << 20,
                   help="longest document read, in bytes: a JSON line, or a text file once decompressed (a small "
                   ".gz can inflate to gigabytes); longer ones are rejected as record_too_large after reading at "
                   "most this much (default: 64 MiB)")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --output")
    kind_flags = {name: get_kind(name).add_arguments(p) for name in kind_names()}
    p.set_defaults(func=_cmd_prepare, accepts_beam_args=True, kind_flags=kind_flags, prepare_parser=p)


def _cmd_prepare(args, beam_args: list[str]) -> int:
    from .config import PrepareConfig
    from .prepare import format_summary, run_prepare

    # Another kind's flags on this run would silently do nothing.
    for name, dests in args.kind_flags.items():
        given = [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != args.prepare_parser.get_default(d)]
        if name != args.kind and given:
            raise MeapDataError(f"{', '.join(given)} apply to --kind {name} only; drop them or pass --kind {name}")
    kind = get_kind(args.kind)
    config = PrepareConfig(
        inputs=tuple(args.input),
        kind=args.kind,
        text_field=args.text_field,
        seq_len=args.seq_len,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        formats=tuple(f.strip() for f in args.format.split(",") if f.strip()),
        pack=not args.no_pack,
        mask_special_tokens=not args.no_mask_special_tokens,
        add_bos=args.add_bos,
        input_bytes_per_shard=args.input_bytes_per_shard,
        max_document_bytes=args.max_document_bytes,
        options=kind.options_from_args(args),
    )
    if args.bos_token and not args.add_bos:
        raise MeapDataError("--bos-token names the token --add-bos adds; pass --add-bos too")
    outcome = run_prepare(config, args.output, args.tokenizer, beam_args, args.overwrite, args.eos_token,
                          bos_token=args.bos_token, progress=None if args.quiet else "stderr",
                          tokenizer_backend=args.tokenizer_backend)
    for name, part in outcome.datasets.items():
        if len(outcome.datasets) > 1:
            print(f"== {name}: {kind.describe(part.manifest)}")
        print(format_summary(part.manifest, part.run_info))
        print(f"dataset written to {part.directory}")
    return 0


def _add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="show a sample decoded to text, masked positions marked")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--index", type=int, default=0, help="sample index in dataset order (default: 0)")
    p.set_defaults(func=lambda a: (print(__import__("meap_data.inspect_sample", fromlist=["x"]).inspect_dataset(a.dir, a.index)), 0)[1])


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="check checksums and counts; non-zero exit if corrupt")
    p.add_argument("dir", metavar="DIR")
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args) -> int:
    from .verify import verify_dataset

    problems = verify_dataset(args.dir)
    for problem in problems:
        print(f"corrupt: {problem}", file=sys.stderr)
    if problems:
        print(f"error: dataset {args.dir} failed verification ({len(problems)} problems)", file=sys.stderr)
        return EXIT_CORRUPT
    from .manifest import DatasetManifest

    m = DatasetManifest.read(args.dir)
    files = sum(len(m.shards(fmt)) for fmt in m.formats)
    print(f"ok: {args.dir}: {files} shard files, {m.samples} samples, checksums match")
    return 0


def _add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer", help="tokenizer tools")
    tsub = p.add_subparsers(dest="tokenizer_command", required=True)
    t = tsub.add_parser("train", help="train a byte-level BPE (with <|endoftext|> and [MASK]) on a corpus")
    t.add_argument("--input", nargs="+", required=True, metavar="GLOB")
    t.add_argument("--vocab-size", type=int, required=True, help="vocabulary size in tokens, specials included")
    t.add_argument("--output", required=True, metavar="tokenizer.json")
    t.add_argument("--text-field", default="text")
    t.add_argument("--max-chars", type=int, default=256 << 20, help="characters of input to train on (default: 256 Mi)")
    t.set_defaults(func=_cmd_tokenizer_train)


def _cmd_tokenizer_train(args) -> int:
    from . import storage
    from .inputs import FileRange, expand_inputs
    from .readers import read_range
    from .tokenizer import iter_training_texts, prepare_tokenizer, train_bpe

    files = expand_inputs(args.input)
    docs = (d for f in files for d in read_range(FileRange(f), args.text_field))
    info = prepare_tokenizer(train_bpe(iter_training_texts(docs, args.max_chars), args.vocab_size))
    storage.write_bytes_atomic(args.output, info.json.encode("utf-8"))
    print(f"tokenizer with {info.vocab_size} tokens ([MASK]={info.mask_token_id}, "
          f"{info.eos_token}={info.eos_token_id}) written to {args.output}")
    return 0


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="pair two eval-repair reports on the same records (McNemar, bootstrap)",
                       description="Compare two 'meap-data rust eval-repair' outputs (e.g. a MEAP- and an NTP-"
                       "fine-tuned model) on their common records: McNemar's exact test on per-record pass (some "
                       "sample passed) and a bootstrap 95%% interval of the pass@1 difference A - B.")
    p.add_argument("run_a", metavar="RUN_A", help="an eval-repair --output directory")
    p.add_argument("run_b", metavar="RUN_B", help="another, on the same dataset")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from .rust.eval_repair import compare_reports

    c = compare_reports(args.run_a, args.run_b, seed=args.seed)
    d = c.difference
    print(f"records: {c.records}; pass@1 A {c.a_pass1:.1%}, B {c.b_pass1:.1%}; A - B {d.mean:+.1%} "
          f"(95% bootstrap interval {d.low:+.1%} .. {d.high:+.1%})")
    print(f"McNemar (some sample passed): A only {c.test.a_only}, B only {c.test.b_only}, exact p = {c.test.p_value:.3g}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="training curves of meap-train runs, overlaid, to a PNG",
                       description="Draw the training and held-out losses of one or more meap-train runs "
                       "(their metrics.jsonl) into one PNG, e.g. a MEAP and an NTP run side by side.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="meap-train --out directories")
    p.add_argument("--output", required=True, metavar="FILE.png", help="the picture to write")
    p.add_argument("--x", choices=("step", "tokens"), default="step", help="x axis (default: step)")
    p.set_defaults(func=lambda a: print(f"curves written to {__import__('meap_data.plot', fromlist=['x']).plot_runs(a.runs, a.output, a.x)}") or 0)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole path on the Python standard library's source, offline")
    p.add_argument("--output", default=None, metavar="DIR", help="where to write (default: ./demo-output)")
    p.add_argument("--quick", action="store_true", help="a smaller slice of the corpus")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo dataset in --output")
    p.set_defaults(func=lambda a: __import__("meap_data.demo", fromlist=["x"]).run_demo(a.output, a.quick, a.overwrite))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meap-data",
        description="MEAP-masked training shards from text corpora and Rust compiler transcripts.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the summary")
    parser.add_argument("--version", action="version", version=f"meap-data {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prepare(sub)
    _add_inspect(sub)
    _add_verify(sub)
    _add_tokenizer(sub)
    try:
        from .rust.cli import register as register_rust
    except ImportError:
        register_rust = None
    if register_rust is not None:
        register_rust(sub)
    _add_compare(sub)
    _add_plot(sub)
    from .probe.cli import register as register_probe

    register_probe(sub)
    _add_demo(sub)
    _quiet_everywhere(sub)
    return parser


def _quiet_everywhere(sub) -> None:
    """``-q`` after any (sub)command too; SUPPRESS keeps a ``-q`` given before it."""
    for p in sub.choices.values():
        p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only warnings and the summary")
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                _quiet_everywhere(action)


def setup_logging(quiet: bool) -> None:
    """Our progress lines on stderr; other libraries only at ERROR (Beam logs import-time
    warnings about optional cloud clients through the root logger)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    # After Ctrl-C, Beam logs the interrupted DoFn's traceback: the one "interrupted" line says it all.
    handler.addFilter(lambda r: (r.name.startswith("meap_data") or r.levelno >= logging.ERROR) and not interrupted())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("meap_data").setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    setup_logging(args.quiet)
    unknown = extra
    if extra and getattr(args, "accepts_beam_args", False):
        from .beam import unknown_pipeline_args

        # A typo (--seqlen) must not pass silently to Beam, which would drop it.
        try:
            unknown = unknown_pipeline_args(extra)
        except MeapDataError as exc:  # a --runner that cannot run here (unknown, or its extra missing)
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code
        what = f"a meap-data {args.command} option or an Apache Beam pipeline option"
    else:
        what = f"a meap-data {args.command} option"
    if unknown:
        print(f"error: unrecognized arguments: {' '.join(unknown)} (not {what}; see meap-data {args.command} --help)",
              file=sys.stderr)
        return 2
    if getattr(args, "accepts_beam_args", False):
        return run_command(lambda: args.func(args, extra))
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
