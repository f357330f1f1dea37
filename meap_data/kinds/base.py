"""What a data kind owns, as one small strategy object (see :mod:`meap_data.kinds`)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Iterator

from ..config import PrepareConfig
from ..documents import Document
from ..inputs import InputFile
from ..masking import MaskRule
from ..tokenizer import TokenizerInfo


@dataclass(frozen=True)
class DatasetTarget:
    """One dataset a run writes: its name (``""`` when a run writes one dataset, else
    e.g. ``"train"``), its configuration and its directory."""

    name: str
    config: PrepareConfig
    directory: str


class DataKind:
    """Base class of the kinds. Override what differs; the defaults describe a kind with
    no options that writes one dataset."""

    name: str = ""
    #: The kind's options: a frozen dataclass with ``to_json()``, or None.
    options_type: type | None = None

    # ---------------------------------------------------------------- configuration

    def default_options(self) -> Any:
        return self.options_type() if self.options_type is not None else None

    def default_mask_ratio(self, config: PrepareConfig) -> float:
        """The mask ratio when ``--mask-ratio`` is not given."""
        raise NotImplementedError

    def validate(self, config: PrepareConfig) -> None:
        """One-line errors for options this kind cannot use."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> list[str]:
        """Add this kind's ``prepare`` flags; returns their argparse ``dest`` names."""
        return []

    def options_from_args(self, args: argparse.Namespace) -> Any:
        """The options from parsed ``prepare`` flags."""
        return self.default_options()

    # ---------------------------------------------------------------- data

    def training_documents(self, files: list[InputFile], config: PrepareConfig) -> Iterator[Document]:
        """The texts a tokenizer trained on these inputs learns from, in input order."""
        raise NotImplementedError

    def mask_rule(self, config: PrepareConfig, tokenizer: TokenizerInfo) -> MaskRule:
        """The rule that masks this kind's samples (recorded in the manifest)."""
        raise NotImplementedError

    def targets(self, config: PrepareConfig, output_dir: str) -> list[DatasetTarget]:
        """The datasets one run writes."""
        return [DatasetTarget("", config, output_dir)]

    def make_processor(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str,
                       total_units: int):
        """The Beam-free unit processor (``process(unit) -> UnitResult``) for one dataset."""
        raise NotImplementedError

    def manifest_extras(self, config: PrepareConfig, results: list[dict]) -> dict:
        """Entries this kind adds to the manifest, from the units' results."""
        return {}

    def describe(self, manifest: dict) -> str:
        """A short line about a finished dataset of this kind (the run summary prints it)."""
        return ""
