"""Rust compiler transcripts to MEAP-SFT (or pre-training) shards, as a runnable Beam pipeline.

    meap-data rust error-index --output corpus.jsonl        # or: meap-data rust harvest SRC...
    python pipelines/rust_transcripts_to_shards.py --input corpus.jsonl --output out/ \
        [--task repair|diagnose|transcript] [--sft-layout rows|concat] \
        [--eval-codes E0308,E0382] [--eval-fraction 0.1] [--seq-len 2048] [--mask-ratio 0.1] \
        [--tokenizer tokenizer.json] [--runner DataflowRunner --project P --region R ...]

Writes two datasets, out/train and out/eval, split by primary error code. Same options
as ``meap-data prepare --kind rust`` (any option it does not know goes to Beam); this
file only presets the kind so it can be read, copied and run as is.
"""

from __future__ import annotations

import sys

from meap_data.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "--kind", "rust", *sys.argv[1:]]))
