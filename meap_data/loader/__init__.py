"""Loading prepared shards into any trainer.

- :class:`ShardLoader`: framework-free iterator of numpy batches (no torch import).
- :class:`ShardIterableDataset`: a ``torch.utils.data.IterableDataset`` of tensor batches.
- :class:`ShardDataLoader`: a ``DataLoader`` wrapper with an exact ``state_dict`` when
  worker processes prefetch.

All three read a complete dataset directory (its manifest must exist), shuffle by a
seeded global order that is the same for every job shape, split it evenly across ranks
and workers, resume exactly from ``state_dict()``, and return the baked masks or
re-mask per epoch. Policies and memory bounds: :mod:`meap_data.loader.core` and the
README's "Loading shards".
"""

from __future__ import annotations

from .core import ALL_FIELDS, DEFAULT_FIELDS, ShardLoader, check_dataset_files
from .order import EpochOrder, FeistelPermutation

__all__ = [
    "ALL_FIELDS",
    "DEFAULT_FIELDS",
    "EpochOrder",
    "FeistelPermutation",
    "ShardDataLoader",
    "ShardIterableDataset",
    "ShardLoader",
    "check_dataset_files",
]


def __getattr__(name: str):
    # torch is imported only when its adapters are asked for.
    if name in ("ShardIterableDataset", "ShardDataLoader", "to_torch"):
        from . import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
