"""``meap-data rust parse | harvest | error-index | snippets | mutate | crates | eval-repair``: argparse wiring
for the Rust tools.

The package CLI calls :func:`register` with its subparsers and then ``args.func(args)``;
it turns :class:`~meap_data.errors.MeapDataError` into ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from meap_data.errors import MeapDataError
from meap_data.rust import crate_mutate, crates, diagnostics, test_mutate, error_index, harvest, mutate, mutations, snippets


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rust`` command and its sub-commands to a CLI's subparsers."""
    rust = subparsers.add_parser(
        "rust", help="Rust compiler transcripts: parse diagnostics, harvest compiles, error-index corpus",
        description="Rust compiler transcripts: parse diagnostics, harvest compiles, build the error-index corpus.",
    )
    sub = rust.add_subparsers(dest="rust_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "parse", help="diagnostics from rendered or JSON rustc/cargo output",
        description="Parse rustc or cargo output (JSON lines or human-rendered, ANSI colour allowed) "
                    "and print the normalised diagnostics.",
    )
    p.add_argument("file", metavar="FILE", help="captured compiler output ('-' for stdin)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default: text)")
    p.set_defaults(func=cmd_parse)

    h = sub.add_parser(
        "harvest", help="compile sources, record transcripts",
        description="Compile .rs files with rustc and crate directories with cargo check, "
                    "and write one transcript record per source, sorted by path.",
    )
    h.add_argument("sources", nargs="+", metavar="SRC", help=".rs files, crate directories, or directories to search")
    h.add_argument("--output", required=True, metavar="FILE.jsonl", help="where to write the records")
    h.add_argument("--jobs", type=int, default=2, metavar="N", help="compiles in parallel (default: 2)")
    h.add_argument("--time-limit", type=float, default=harvest.DEFAULT_TIME_LIMIT_S, metavar="SECONDS",
                   help=f"per compile run (default: {harvest.DEFAULT_TIME_LIMIT_S:g})")
    h.add_argument("--edition", choices=harvest.EDITIONS, default="2021",
                   help="edition for single files (crates use Cargo.toml's; default: 2021)")
    h.add_argument("--tests", action="store_true",
                   help="also build and run each source's tests (rustc --test / cargo test --offline) and record "
                   "the outcome per test")
    h.set_defaults(func=cmd_harvest)

    e = sub.add_parser(
        "error-index", help="corpus from the local toolchain's error-code examples",
        description="Compile every compile_fail example of the installed error index "
                    "(rustup component rust-docs), pair it with its page's fix, and write transcripts.",
    )
    e.add_argument("--output", required=True, metavar="FILE.jsonl", help="where to write the records")
    _bulk_options(e, "the first N examples, in page order", "compiles", harvest.DEFAULT_TIME_LIMIT_S)
    e.set_defaults(func=cmd_error_index)

    sn = sub.add_parser(
        "snippets", help="the compiling code blocks of the local toolchain's docs",
        description="Extract the Rust code blocks of the installed docs (std/core/alloc API examples with "
                    "their hidden lines, and the mdBook books) that rustdoc expects to compile, drop duplicates, "
                    "and keep the ones that type-check, one JSON line each (schemas/rust_snippet.schema.json).",
    )
    sn.add_argument("--output", required=True, metavar="FILE.jsonl", help="where to write the snippet records")
    sn.add_argument("--collections", default=",".join(snippets.COLLECTIONS), metavar="NAMES",
                    help="comma list of doc collections (default: all: " + ",".join(snippets.COLLECTIONS) + ")")
    _bulk_options(sn, "the first N unique blocks", "type-checks", snippets.SNIPPET_TIME_LIMIT_S)
    sn.set_defaults(func=cmd_snippets)

    mu = sub.add_parser(
        "mutate", help="repair examples: compiling programs broken by semantic mutations",
        description="Break compiling programs with semantic mutations (types, names, inference, ownership and "
                    "borrowing) and keep each mutant rustc rejects with an error code, as a transcript record "
                    "whose fixed_source is the original.",
    )
    mu.add_argument("inputs", nargs="*", metavar="INPUT",
                    help=".rs files, directories of them, or snippet JSON lines from 'meap-data rust snippets' "
                         "(none with --crates)")
    mu.add_argument("--output", required=True, metavar="FILE.jsonl", help="where to write the mutant transcripts")
    mu.add_argument("--seed", type=int, default=0, help="picks the sites to mutate (default: 0)")
    mu.add_argument("--per-operator", type=int, default=None, metavar="N",
                    help=f"mutants kept per program and operator (default: {mutate.DEFAULT_PER_OPERATOR}; with "
                         f"--crates per file and operator, default {crate_mutate.DEFAULT_PER_OPERATOR})")
    mu.add_argument("--operators", default=None, metavar="NAMES",
                    help="comma list of operators (default: all: " + ",".join(mutations.BY_NAME) + ")")
    mu.add_argument("--edition", choices=harvest.EDITIONS, default="2021",
                    help=".rs inputs' edition (snippets carry their own; default: 2021)")
    mu.add_argument("--crates", default=None, metavar="CRATES.jsonl|DIR",
                    help="mutate real crates instead: the records of 'meap-data rust crates' (the crates that build; "
                         "with --tests, those whose tests pass), or a directory of crate sources (all its crates; "
                         "one that fails cargo check is skipped); each mutant is checked with cargo check in a copy "
                         "of its crate, and the example is the whole file or the largest enclosing item within "
                         "--context-lines")
    mu.add_argument("--crates-dir", default=crates.DEBIAN_REGISTRY, metavar="DIR",
                    help=f"with --crates CRATES.jsonl: the crate sources (default: {crates.DEBIAN_REGISTRY})")
    mu.add_argument("--crate-names", default=None, metavar="NAMES", help="with --crates: comma list of crate names")
    mu.add_argument("--context-lines", type=int, default=crate_mutate.DEFAULT_CONTEXT_LINES, metavar="N",
                    help="with --crates: the longest window an example shows, in lines "
                         f"(default: {crate_mutate.DEFAULT_CONTEXT_LINES})")
    mu.add_argument("--work-dir", default=None, metavar="DIR",
                    help="with --crates: where crate copies and target dirs go (default: $TMPDIR)")
    mu.add_argument("--resume", action="store_true",
                    help="with --crates: keep the crates an interrupted run finished (OUTPUT.partial) and do the rest")
    mu.add_argument("--tests", action="store_true",
                    help="with --crates: test-failure examples instead: semantic mutations (off-by-one, swapped "
                         "comparison, wrong operator, dropped negation, wrong index, early return) of crates with a "
                         "passing test suite, kept when they compile and fail a test; the failing tests are the "
                         "diagnostic")
    mu.add_argument("--max-mutants", type=int, default=test_mutate.DEFAULT_MAX_MUTANTS, metavar="N",
                    help=f"with --crates --tests: mutants tried per crate (default: {test_mutate.DEFAULT_MAX_MUTANTS})")
    _bulk_options(mu, "the first N programs (crates with --crates)", "programs (crates with --crates)", None)
    mu.set_defaults(func=cmd_mutate)

    cr = sub.add_parser(
        "crates", help="which crates of a crate-source directory build offline and pass their own tests",
        description="Copy each crate of DIR (Debian's librust-*-dev registry by default, or any cargo-vendored "
                    "directory), build it offline against the crates of DIR only (cargo build, then cargo test "
                    "--no-run and each test binary alone), and write one record per crate: provenance, licence, "
                    "build outcome and every suite's test cases. Installs and downloads nothing.")
    cr.add_argument("--dir", default=crates.DEBIAN_REGISTRY, metavar="DIR",
                    help=f"crate sources, one NAME-VERSION folder each (default: {crates.DEBIAN_REGISTRY})")
    cr.add_argument("--output", required=True, metavar="FILE.jsonl", help="where to write the crate records")
    cr.add_argument("--crates", default=None, metavar="NAMES", help="comma list of crate names (default: all)")
    cr.add_argument("--work-dir", default=None, metavar="DIR",
                    help="where the scratch folder for crate copies and target dirs goes (default: $TMPDIR); "
                         "the folder is removed at the end, DIR is kept")
    _bulk_options(cr, "the first N crates by name", "crates", crates.DEFAULT_TIME_LIMIT_S)
    cr.set_defaults(func=cmd_crates)

    ev = sub.add_parser(
        "eval-repair", help="judge a model's repairs of a repair dataset with rustc",
        description="Prompt a Hugging Face causal LM with each record of a --kind rust repair dataset (its eval "
                    "split) as in training, sample fixes, compile each like the record (and run its tests), and "
                    "report compile rate, pass@1/pass@K and the code-gone rate by error family, next to the "
                    "identity baseline. Writes OUTPUT/report.json and OUTPUT/generations.jsonl.",
    )
    ev.add_argument("--model", required=True, metavar="DIR", help="a save_pretrained directory (e.g. RUN/hf)")
    ev.add_argument("--data", required=True, metavar="DATASET_DIR", help="a --kind rust repair dataset, e.g. out/eval")
    ev.add_argument("--output", required=True, metavar="DIR", help="where report.json and generations.jsonl go")
    ev.add_argument("--records", nargs="+", default=None, metavar="FILE",
                    help="the transcripts the dataset was prepared from (default: the manifest's inputs)")
    ev.add_argument("--samples", type=int, default=4, metavar="K", help="fixes sampled per record (default: 4)")
    ev.add_argument("--max-new-tokens", type=int, default=512, metavar="N", help="per fix (default: 512)")
    ev.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, 0 greedy (default: 0.8)")
    ev.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    ev.add_argument("--device", default="cpu", help="torch device for generation (default: cpu)")
    ev.add_argument("--crates-dir", default=crates.DEBIAN_REGISTRY, metavar="DIR",
                    help="crate sources to judge records of 'rust mutate --crates' in (default: "
                         f"{crates.DEBIAN_REGISTRY})")
    _bulk_options(ev, "the first N records", "compiles", harvest.DEFAULT_TIME_LIMIT_S)
    ev.set_defaults(func=cmd_eval_repair)


def _bulk_options(parser: argparse.ArgumentParser, limit_what: str, parallel_what: str,
                  time_limit_s: float | None) -> None:
    """--limit, --jobs and --time-limit, as every bulk Rust command takes them (``None``:
    mutate's two defaults, per mutant and per crate check)."""
    parser.add_argument("--limit", type=int, default=None, metavar="N", help=f"only {limit_what}")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help=f"{parallel_what} in parallel (default: 2)")
    default = (f"{time_limit_s:g}" if time_limit_s is not None else
               f"{mutate.MUTANT_TIME_LIMIT_S:g}, {crate_mutate.CHECK_TIME_LIMIT_S:g} per cargo check with --crates")
    parser.add_argument("--time-limit", type=float, default=time_limit_s, metavar="SECONDS",
                        help=f"per compile run (default: {default})")


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError:
        raise MeapDataError(f"{name}: no such file; pass a file holding rustc or cargo output") from None
    except OSError as e:
        raise MeapDataError(f"{name}: cannot read ({e.strerror})") from e


def cmd_parse(args: argparse.Namespace) -> int:
    """Print the diagnostics of a file; MeapDataError when it holds none."""
    result = diagnostics.parse(_read_input(args.file))
    if not result.diagnostics:
        reason = result.problems[-1] if result.problems else "no diagnostic found"
        raise MeapDataError(
            f"{args.file}: nothing parseable ({reason}); expected rustc or cargo output, "
            "human-rendered or from --error-format=json / --message-format=json"
        )
    if args.format == "json":
        doc = {
            "format": result.format,
            "diagnostics": [d.to_dict() for d in result.diagnostics],
            "problems": result.problems,
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        for d in result.diagnostics:
            print(format_diagnostic(d))
    for problem in result.problems:
        print(f"warning: {args.file}: {problem}", file=sys.stderr)
    return 0


def format_diagnostic(d: diagnostics.Diagnostic) -> str:
    """One diagnostic as ``file:line:col: level[code]: message`` plus indented details."""
    where = f"{d.primary.file}:{d.primary.line}:{d.primary.column}: " if d.primary else ""
    code = f"[{d.code}]" if d.code else ""
    lines = [f"{where}{d.level}{code}: {d.message}"]
    for s in d.labels:
        lines.append(f"    label {s.file}:{s.line}:{s.column}: {s.label}")
    lines += [f"    note: {n}" for n in d.notes]
    lines += [f"    help: {h}" for h in d.helps]
    for s in d.suggestions:
        lines.append(f"    suggestion {s.file}:{s.line}:{s.column}-{s.line_end}:{s.column_end} "
                     f"({s.applicability}): {s.replacement!r}")
    return "\n".join(lines)


def cmd_harvest(args: argparse.Namespace) -> int:
    """Compile the sources and write their transcripts."""
    if args.jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {args.jobs}")
    summary = harvest.harvest(
        args.sources, args.output, jobs=args.jobs, time_limit_s=args.time_limit, edition=args.edition,
        progress=_sink(args), tests=args.tests,
    )
    print(f"harvest: {summary.records} records ({summary.failed} did not compile, {summary.timed_out} timed out) "
          f"written to {args.output} in {summary.seconds:.1f} s")
    return 0


def cmd_error_index(args: argparse.Namespace) -> int:
    """Build the error-index corpus; progress on stderr, a summary line at the end."""
    if args.jobs < 1:
        raise MeapDataError(f"--jobs must be at least 1, got {args.jobs}")
    summary = error_index.build_corpus(
        args.output, limit=args.limit, jobs=args.jobs, time_limit_s=args.time_limit,
        progress=_sink(args),
    )
    print(f"{summary.line()}; written to {args.output}")
    return 0


def _sink(args: argparse.Namespace):
    return None if getattr(args, "quiet", False) else "stderr"


def cmd_snippets(args: argparse.Namespace) -> int:
    """Extract and type-check the docs' snippets; a summary line at the end."""
    collections = tuple(c.strip() for c in args.collections.split(",") if c.strip())
    summary = snippets.build_snippets(args.output, jobs=args.jobs, time_limit_s=args.time_limit,
                                      collections=collections, limit=args.limit, progress=_sink(args))
    print(f"{summary.line()}; written to {args.output}")
    print("  by collection: " + ", ".join(f"{k} {v}" for k, v in summary.by_collection.items()))
    return 0


def cmd_mutate(args: argparse.Namespace) -> int:
    """Mutate the programs; a summary with the operators and first error codes."""
    operators = None if args.operators is None else [o.strip() for o in args.operators.split(",") if o.strip()]
    if args.crates is not None:
        return _mutate_crates(args, operators)
    if not args.inputs:
        raise MeapDataError("rust mutate: pass INPUT files (.rs, directories, snippet JSON lines) or --crates FILE")
    summary = mutate.mutate(args.inputs, args.output, seed=args.seed,
                            per_operator=args.per_operator or mutate.DEFAULT_PER_OPERATOR, operators=operators,
                            jobs=args.jobs, edition=args.edition, limit=args.limit,
                            time_limit_s=args.time_limit or mutate.MUTANT_TIME_LIMIT_S, progress=_sink(args))
    print(f"{summary.line()}; written to {args.output}")
    print("  by operator: " + ", ".join(f"{k} {v}" for k, v in summary.by_operator.items()))
    print("  first error codes: " + ", ".join(f"{k} {v}" for k, v in list(summary.by_code.items())[:20]))
    return 0


def _mutate_crates(args: argparse.Namespace, operators: list[str] | None) -> int:
    from meap_data.rust.toolchain import find_toolchain

    if args.inputs:
        raise MeapDataError("rust mutate --crates reads crates, not INPUT files; drop " + " ".join(args.inputs))
    names = None if args.crate_names is None else [c.strip() for c in args.crate_names.split(",") if c.strip()]
    if args.tests:
        if operators is not None:
            raise MeapDataError("--operators names compile-error operators; --tests uses the semantic ones: "
                                + ", ".join(test_mutate.OPERATORS))
        summary = test_mutate.mutate_tests(
            args.crates, args.output, find_toolchain(), crates_dir=args.crates_dir, seed=args.seed,
            per_operator=args.per_operator or test_mutate.DEFAULT_PER_OPERATOR, max_mutants=args.max_mutants,
            context_lines=args.context_lines, jobs=args.jobs, limit=args.limit, only=names,
            time_limit_s=args.time_limit or crate_mutate.CHECK_TIME_LIMIT_S, work_dir=args.work_dir,
            resume=args.resume, progress=_sink(args))
        print(f"{summary.line()}; written to {args.output}")
        print("  by operator: " + ", ".join(f"{k} {v}" for k, v in summary.by_operator.items()))
        print("  failures: " + ", ".join(f"{k} {v}" for k, v in summary.by_failure.items()))
        print("  not kept: " + ", ".join(f"{k} {v}" for k, v in summary.dropped.items()))
        if summary.skipped:
            print("  crates skipped: " + ", ".join(f"{k} ({v})" for k, v in summary.skipped.items()))
        return 0
    chosen = mutations.OPERATORS if operators is None else tuple(mutate._operator(o) for o in operators)
    summary = crate_mutate.mutate_crates(
        args.crates, args.output, find_toolchain(), crates_dir=args.crates_dir, seed=args.seed,
        per_operator=args.per_operator or crate_mutate.DEFAULT_PER_OPERATOR, operators=chosen,
        context_lines=args.context_lines, jobs=args.jobs, limit=args.limit, only=names,
        time_limit_s=args.time_limit or crate_mutate.CHECK_TIME_LIMIT_S, work_dir=args.work_dir,
        resume=args.resume, progress=_sink(args))
    print(f"{summary.line()}; written to {args.output}")
    print("  by operator: " + ", ".join(f"{k} {v}" for k, v in summary.by_operator.items()))
    print("  first error codes: " + ", ".join(f"{k} {v}" for k, v in list(summary.by_code.items())[:20]))
    print("  not kept: " + ", ".join(f"{k} {v}" for k, v in summary.dropped.items())
          + f"; {summary.too_long} sites in items longer than --context-lines")
    if summary.skipped:
        print("  crates skipped: " + ", ".join(f"{k} ({v})" for k, v in summary.skipped.items()))
    return 0


def cmd_crates(args: argparse.Namespace) -> int:
    """Survey the crates; the counts on stdout."""
    from meap_data.rust.toolchain import find_toolchain

    names = None if args.crates is None else [c.strip() for c in args.crates.split(",") if c.strip()]
    summary = crates.survey(args.dir, args.output, find_toolchain(), jobs=args.jobs, time_limit_s=args.time_limit,
                            limit=args.limit, only=names, work_dir=args.work_dir, progress=_sink(args))
    print(f"{summary.line()}; written to {args.output}")
    return 0


def cmd_eval_repair(args: argparse.Namespace) -> int:
    """Generate, compile and report; the table on stdout."""
    from meap_data.rust import eval_repair

    report = eval_repair.eval_repair(
        args.model, args.data, args.output, samples=args.samples, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, limit=args.limit, records=args.records, jobs=args.jobs, seed=args.seed,
        time_limit_s=args.time_limit, device=args.device, crates_dir=args.crates_dir, progress=_sink(args))
    print(eval_repair.format_report(report))
    print(f"{report['generations']} generations ({report['compiles_recorded']} compile) in {report['seconds']} s; "
          f"written to {args.output}")
    return 0


