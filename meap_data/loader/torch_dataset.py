"""PyTorch adapters: an ``IterableDataset`` of whole batches, and a thin stateful wrapper
around ``torch.utils.data.DataLoader`` whose ``state_dict`` counts the batches it has
actually handed to the training loop (prefetched ones are not counted)."""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import MeapDataError
from .core import ShardLoader


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def to_torch(batch: dict, pin_memory: bool = False) -> dict:
    """numpy arrays of a batch as tensors (zero copy), optionally in pinned memory."""
    out = {}
    for name, value in batch.items():
        if type(value) is np.ndarray:
            value = torch.from_numpy(value)
            if pin_memory:
                value = value.pin_memory()
        out[name] = value
    return out


def _can_pin(requested: bool) -> bool:
    if requested and not torch.cuda.is_available():
        warnings.warn("pin_memory=True but no CUDA device is present: batches stay in pageable memory", stacklevel=3)
        return False
    return requested


class ShardIterableDataset(IterableDataset):
    """A ``torch.utils.data.IterableDataset`` yielding whole batches (dicts of tensors).

    Use it with ``DataLoader(ds, batch_size=None, ...)`` or, for an exact
    ``state_dict`` with worker processes, :class:`ShardDataLoader`. ``rank`` and
    ``world_size`` default to ``torch.distributed``'s when it is initialised (else 0
    and 1). Other keyword arguments are :class:`ShardLoader`'s. Inside a DataLoader
    worker, each worker takes every ``num_workers``-th batch of the rank.
    ``pin_memory``: pin batches when iterated in the main process (with workers, ask
    the DataLoader instead).
    """

    def __init__(self, path: str, batch_size: int, *, rank: int | None = None, world_size: int | None = None,
                 pin_memory: bool = False, **loader_kwargs):
        super().__init__()
        if rank is None or world_size is None:
            d_rank, d_world = _dist_rank_world()
            rank = d_rank if rank is None else rank
            world_size = d_world if world_size is None else world_size
        self.loader = ShardLoader(path, batch_size, rank=rank, world_size=world_size, **loader_kwargs)
        self.pin_memory = pin_memory

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is not None:
            # This object is the worker's own copy: it keeps its epoch bookkeeping, so
            # persistent workers move on to the next epoch by themselves.
            self.loader.worker_id, self.loader.num_workers = info.id, info.num_workers
            for batch in self.loader:
                yield to_torch(batch)
            return
        pin = _can_pin(self.pin_memory)
        for batch in self.loader:
            yield to_torch(batch, pin)

    def __len__(self) -> int:
        """Batches this rank yields from the current state to the end of the epoch."""
        return len(self.loader)

    def state_dict(self) -> dict:
        """See :meth:`ShardLoader.state_dict` (exact when iterated in this process)."""
        return self.loader.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.loader.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)


class ShardDataLoader:
    """``DataLoader`` over a :class:`ShardIterableDataset` with an exact ``state_dict``.

    ``num_workers``: worker processes (0: read in this process). The state counts the
    batches this object has yielded, so it is exact whatever the prefetch depth, and a
    new iteration (workers are not persistent) starts exactly there. ``pin_memory``:
    batches in page-locked memory (needs CUDA; a warning otherwise).
    """

    def __init__(self, dataset: ShardIterableDataset, *, num_workers: int = 0, pin_memory: bool = False,
                 prefetch_factor: int | None = None, multiprocessing_context=None, timeout: float = 0):
        if not isinstance(dataset, ShardIterableDataset):
            raise MeapDataError("ShardDataLoader takes a ShardIterableDataset; build one with ShardIterableDataset(path, batch_size)")
        if num_workers < 0:
            raise MeapDataError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.multiprocessing_context = multiprocessing_context
        self.timeout = timeout

    @property
    def batch_size(self) -> int:
        return self.dataset.loader.batch_size

    def __iter__(self) -> Iterator[dict]:
        loader = self.dataset.loader
        if self.num_workers == 0:
            pin = _can_pin(self.pin_memory)
            for batch in loader:
                yield to_torch(batch, pin)
            return
        epoch, position = loader._normalised()
        loader._epoch, loader._position = epoch, position
        expected = len(loader)
        torch_loader = DataLoader(
            self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=_can_pin(self.pin_memory),
            prefetch_factor=self.prefetch_factor, multiprocessing_context=self.multiprocessing_context,
            timeout=self.timeout, persistent_workers=False,
            # A private generator: DataLoader draws its workers' base seed from it, which
            # would otherwise consume the global torch RNG (and shift a trainer's dropout).
            generator=torch.Generator().manual_seed(epoch),
        )
        delivered = 0
        for batch in torch_loader:
            delivered += 1
            loader.advance(1)
            yield batch
        if delivered != expected:
            raise MeapDataError(f"internal error: the workers delivered {delivered} batches, expected {expected}")
        if loader.epoch == epoch:  # an epoch with no batch for this shape: move on
            loader._epoch, loader._position = epoch + 1, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def state_dict(self) -> dict:
        """Position of the next batch this loader will yield (JSON-able)."""
        return self.dataset.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.dataset.load_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)
