"""meap-data: MEAP-masked training shards from text corpora and Rust compiler transcripts.

The core (readers, tokenizer, masking, packing, shard writers) is plain Python + numpy +
pyarrow; :mod:`meap_data.beam` holds the Apache Beam transforms over it.
"""

__version__ = "0.1.0"
