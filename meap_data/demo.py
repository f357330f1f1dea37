"""``meap-data demo``: the whole path on the machine's own Python standard library.

No argument, no network: the stdlib's ``.py`` files are the corpus; a tokenizer is
trained on them, both formats are prepared, verified, and a sample is inspected.
"""

from __future__ import annotations

import os
import sysconfig

from .config import PrepareConfig
from .errors import MeapDataError
from .inspect_sample import inspect_dataset
from .masking import PRETRAIN_MASK_RATIO
from .prepare import format_summary, run_prepare
from .verify import verify_dataset


def stdlib_dir() -> str:
    """The standard library's source directory of the running Python."""
    path = sysconfig.get_paths()["stdlib"]
    if not os.path.isfile(os.path.join(path, "os.py")):
        raise MeapDataError(f"the Python standard library source is not at {path!r}; the demo needs it")
    return path


def stdlib_globs(quick: bool = False) -> list[str]:
    """Globs over the stdlib: top-level modules, plus (unless quick) a few packages."""
    root = stdlib_dir()
    globs = [os.path.join(root, "*.py")]
    if not quick:
        globs += [os.path.join(root, pkg, "**", "*.py") for pkg in ("asyncio", "email", "json", "unittest", "xml")]
    return globs


def run_demo(output: str | None = None, quick: bool = False, overwrite: bool = False) -> int:
    """Run the demo into ``output`` (default ``./demo-output``; an earlier dataset there is
    replaced only with ``overwrite``)."""
    output = output or os.path.abspath("demo-output")
    print(f"corpus: the Python standard library at {stdlib_dir()}")
    config = PrepareConfig(
        inputs=tuple(stdlib_globs(quick)),
        seq_len=512,
        mask_ratio=PRETRAIN_MASK_RATIO,
        seed=0,
        input_bytes_per_shard=2 << 20,
    )
    outcome = run_prepare(config, output, tokenizer=None, beam_args=[], overwrite=overwrite, progress="stderr")
    print(format_summary(outcome.manifest, outcome.run_info))
    problems = verify_dataset(output)
    if problems:
        raise MeapDataError("verification failed: " + "; ".join(problems))
    print(f"verify: ok, every shard matches its sha256 in {output}/manifest.json")
    print()
    print(inspect_dataset(output, 0)[:3000])
    print()
    print(f"dataset: {output}  (try: meap-data inspect {output} --index 1)")
    return 0
