"""Raw corpora to MEAP-masked Arrow and WebDataset shards, as a runnable Beam pipeline.

    python pipelines/corpus_to_shards.py --input 'data/*.jsonl.zst' --output out/ \
        [--tokenizer tokenizer.json] [--seq-len 2048] [--mask-ratio 0.15] [--seed 0] \
        [--runner DataflowRunner --project P --region R --temp_location gs://... \
         --setup_file ./setup.py]

Same options as ``meap-data prepare`` (any option it does not know goes to Beam); this
file only composes the library's pieces so it can be read, copied and run as is.
"""

from __future__ import annotations

import sys

from meap_data.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
