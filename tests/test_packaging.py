"""Dataflow readiness that can be checked on one machine: the DoFns survive Beam's own
pickler (as they do when shipped to remote workers), the plan holds nothing local but
input paths, and the package builds as an sdist and a wheel (built from that sdist, as
``--setup_file`` workers do) that carry the schemas as real files."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile
import zipfile


from meap_data.beam import ProcessUnitFn, WriteManifestFn
from meap_data.config import PrepareConfig
from meap_data.inputs import expand_inputs, plan_units
from meap_data.tokenizer import load_tokenizer, prepare_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "schemas", "*.json")))


def test_dofns_round_trip_through_beams_pickler_and_process_a_unit(tmp_path, json_pkg_glob, tokenizer_path):
    from apache_beam.internal import pickler

    config = PrepareConfig(inputs=(json_pkg_glob,), seq_len=64, input_bytes_per_shard=20_000)
    info = prepare_tokenizer(load_tokenizer(tokenizer_path))
    units = plan_units(expand_inputs([json_pkg_glob]), config.input_bytes_per_shard)
    out = str(tmp_path / "ds")
    fn = pickler.loads(pickler.dumps(ProcessUnitFn(config, info, out, len(units))))
    pickler.loads(pickler.dumps(WriteManifestFn(config, info, out)))
    # The unit crosses workers as JSON text; it names input files and nothing else local.
    wire = json.dumps(units[0].to_json())
    paths = {r["file"]["path"] for r in json.loads(wire)["ranges"]}
    assert paths and all(p.startswith(os.path.dirname(json_pkg_glob)) for p in paths)
    assert tokenizer_path not in wire
    fn.setup()
    [result] = list(fn.process(wire))
    assert result["index"] == 0 and result["tokens"] > 1000 and result["samples"] > 10
    assert os.path.exists(os.path.join(out, result["files"]["arrow"]["path"]))
    # The tokenizer travels as JSON text inside the DoFn, not as a path on this disk.
    assert fn.tokenizer == info and json.loads(fn.tokenizer.json)["model"]["type"] == "BPE"


def test_sdist_and_wheel_build_and_carry_the_schemas(tmp_path):
    """``python -m build`` makes the sdist, then the wheel from the sdist (what a
    Dataflow worker installs from ``--setup_file``); about 15 s, no network (the
    build uses this environment's setuptools)."""
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), ROOT],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [sdist] = glob.glob(str(dist / "meap_data-*.tar.gz"))
    [wheel] = glob.glob(str(dist / "meap_data-*.whl"))
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1]: m for m in t.getmembers() if "/" in m.name}
    assert "setup.py" in members and "pyproject.toml" in members
    for name in SCHEMAS:
        assert members[f"meap_data/schemas/{name}"].isfile()  # a file, not the symlink
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in SCHEMAS:
            body = z.read(f"meap_data/schemas/{name}")
            assert body == open(os.path.join(ROOT, "schemas", name), "rb").read()
    assert {"meap_data/beam.py", "meap_data/loader/core.py", "meap_data/kinds/rust.py"} <= names
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith("METADATA"))
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(metadata).decode()
    assert "Provides-Extra: aws" in meta and "Provides-Extra: gcp" in meta
