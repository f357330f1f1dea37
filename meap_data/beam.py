"""Apache Beam transforms: thin composites over the Beam-free core (:mod:`process` and
the data kind's unit processor, looked up in :mod:`meap_data.kinds`).

The data flow: planned work units -> spread over workers -> each unit read, tokenized,
packed, masked and written as its own shard -> per-unit counts gathered -> manifest.
Shard placement comes from the unit index (fixed by the plan), never from Beam's
``num_shards`` (random placement), so output is byte-identical on every runner.
No token data is shuffled; only unit descriptions and small counts cross workers.
"""

from __future__ import annotations

import importlib
import json

import apache_beam as beam
from apache_beam.metrics import Metrics

from .config import PrepareConfig
from .errors import MeapDataError
from .inputs import WorkUnit
from .kinds import get_kind, resolve_config
from .manifest import build_manifest, write_manifest
from .tokenizer import TokenizerInfo


class ProcessUnitFn(beam.DoFn):
    """Unit JSON in, unit result JSON out; the shard files are written as a side effect
    (atomically, under names fixed by the unit index, so a retried bundle is harmless)."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, total_units: int):
        self.config = resolve_config(config)
        self.tokenizer = tokenizer
        self.output_dir = output_dir
        self.total_units = total_units
        self._docs_read = Metrics.counter("meap_data", "documents_read")
        self._docs_rejected = Metrics.counter("meap_data", "documents_rejected")
        self._tokens = Metrics.counter("meap_data", "tokens")
        self._samples = Metrics.counter("meap_data", "samples")

    def setup(self):
        kind = get_kind(self.config.kind)
        self._processor = kind.make_processor(self.config, self.tokenizer, self.output_dir, self.total_units)

    def process(self, unit_json: str):
        result = self._processor.process(WorkUnit.from_json(json.loads(unit_json)))
        self._docs_read.inc(result.documents_read)
        self._docs_rejected.inc(sum(result.rejected.values()))
        self._tokens.inc(result.tokens)
        self._samples.inc(result.samples)
        yield result.to_json()


class WriteManifestFn(beam.DoFn):
    """All unit results in, the manifest out (written last, atomically)."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str):
        self.config = resolve_config(config)
        self.tokenizer = tokenizer
        self.output_dir = output_dir

    def process(self, results: list[dict]):
        kind = get_kind(self.config.kind)
        manifest = build_manifest(self.config, self.tokenizer, kind.mask_rule(self.config, self.tokenizer), results)
        manifest.update(kind.manifest_extras(self.config, results))
        write_manifest(self.output_dir, manifest)
        yield manifest


class PrepareShards(beam.PTransform):
    """``pipeline | PrepareShards(...)``: the whole prepare job; outputs the manifest."""

    def __init__(self, config: PrepareConfig, tokenizer: TokenizerInfo, output_dir: str, units: list[WorkUnit]):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.output_dir = output_dir
        self.units = units

    def expand(self, pbegin):
        return (
            pbegin
            # As JSON text: Beam infers a Create's element type by walking every element,
            # which for dicts listing thousands of input files took seconds.
            | "PlanUnits" >> beam.Create([json.dumps(u.to_json()) for u in self.units])
            | "SpreadOverWorkers" >> beam.Reshuffle()
            | "TokenizeMaskWriteShard"
            >> beam.ParDo(ProcessUnitFn(self.config, self.tokenizer, self.output_dir, len(self.units)))
            | "GatherCounts" >> beam.combiners.ToList()
            | "WriteManifest" >> beam.ParDo(WriteManifestFn(self.config, self.tokenizer, self.output_dir))
        )


class PrepareDatasets(beam.PTransform):
    """``pipeline | PrepareDatasets({label: PrepareShards(...)})``: several datasets from
    one pipeline (``--kind rust``: train and eval), ending in one step that needs every
    manifest. Beam's DaskRunner computes only the last step of a pipeline and what it
    depends on, so two loose branches would leave one dataset unwritten there."""

    def __init__(self, datasets: dict[str, PrepareShards]):
        super().__init__()
        self.datasets = datasets

    def expand(self, pbegin):
        manifests = [pbegin | label >> prepare for label, prepare in self.datasets.items()]
        return manifests | "AllManifests" >> beam.Flatten()


def unknown_pipeline_args(beam_args: list[str]) -> list[str]:
    """The arguments no Beam pipeline option takes (Beam itself would drop them with a
    logged warning), parsed as Beam's ``PipelineOptions.get_all_options`` does; a
    one-line error for a ``--runner`` that cannot run here."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    named_runner(beam_args)  # also declares an extra runner's own options before parsing
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(beam_args)
    return unknown


#: Runners Beam ships but does not know by their short name (``--runner DaskRunner``):
#: the class to run, whose module also declares the runner's own options.
EXTRA_RUNNERS = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def named_runner(beam_args: list[str]):
    """The class of an :data:`EXTRA_RUNNERS` runner named by ``--runner`` (importing it
    declares its options, e.g. ``--dask_client_address``), else None. A one-line error
    for a name Beam would refuse only once the job is set up, or an extra runner whose
    packages are not installed."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    runner = PipelineOptions(beam_args).view_as(StandardOptions).runner
    if runner is None or "." in runner:
        return None
    path = EXTRA_RUNNERS.get(runner)
    if path is None:
        known = list(StandardOptions.KNOWN_RUNNER_NAMES)
        lowered = {k.lower() for k in known}
        if runner.lower() not in lowered and runner.lower() + "runner" not in lowered:
            raise MeapDataError(f"--runner {runner}: not a Beam runner here; choose one of "
                                f"{', '.join(known + list(EXTRA_RUNNERS))}, or a class's full dotted name")
        return None
    module, name = path.rsplit(".", 1)
    try:
        import dask.distributed  # noqa: F401  (the runner imports it late: fail here, not mid-run)

        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise MeapDataError(f"--runner {runner} needs the dask extra: pip install 'meap-data[dask]' "
                            f"({exc})") from exc


def make_pipeline(beam_args: list[str]) -> beam.Pipeline:
    """A pipeline from Beam's own command-line options.

    With no ``--runner`` (or ``DirectRunner``) the in-process FnApiRunner runs it: the
    DirectRunner would first try to download the Prism runner. It honours
    ``--direct_num_workers`` and ``--direct_running_mode``. ``DaskRunner`` is Beam's
    (:data:`EXTRA_RUNNERS`); any other runner name (``DataflowRunner``,
    ``PortableRunner``, ...) is passed to Beam as given.
    """
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions(beam_args)
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "DirectRunner", "direct", "FnApiRunner"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    extra = named_runner(beam_args)
    if extra is not None:
        return beam.Pipeline(runner=extra(), options=options)
    return beam.Pipeline(options=options)
