"""Data kinds, registered in one place.

A kind (:class:`meap_data.kinds.base.DataKind`) owns everything that differs between
kinds of input: its options and command-line flags, its reader, the texts an auto-trained
tokenizer learns from, its unit processor, its mask rule, the datasets one run writes and
their manifest extras. The core (``process``, ``beam``, ``prepare``, ``manifest``)
imports no kind module: it asks this registry by name. Adding a kind is one new module
and one line in :data:`KINDS`.
"""

from __future__ import annotations

import dataclasses
import importlib

from ..config import PrepareConfig
from ..errors import MeapDataError
from .base import DataKind, DatasetTarget

#: kind name -> "module:class", imported on first use.
KINDS = {
    "text": "meap_data.kinds.text:TextKind",
    "rust": "meap_data.kinds.rust:RustKind",
}

_loaded: dict[str, DataKind] = {}


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def get_kind(name: str) -> DataKind:
    """The registered kind called ``name``; a one-line error naming the known ones."""
    kind = _loaded.get(name)
    if kind is None:
        if name not in KINDS:
            raise MeapDataError(f"--kind must be one of {', '.join(KINDS)}, got {name!r}")
        module, cls = KINDS[name].split(":")
        kind = _loaded[name] = getattr(importlib.import_module(module), cls)()
    return kind


def resolve_config(config: PrepareConfig) -> PrepareConfig:
    """``config`` with its kind's defaults filled in (options, mask ratio), validated."""
    kind = get_kind(config.kind)
    options = config.options if config.options is not None else kind.default_options()
    resolved = dataclasses.replace(config, options=options)
    if resolved.mask_ratio is None:
        resolved = dataclasses.replace(resolved, mask_ratio=kind.default_mask_ratio(resolved))
    resolved.validate()
    kind.validate(resolved)
    return resolved


__all__ = ["DataKind", "DatasetTarget", "KINDS", "get_kind", "kind_names", "resolve_config"]
