#!/usr/bin/env python3
"""Boot a Beam Python SDK worker the way a Dataflow (or Flink/Spark portable) container
does, for Beam's ``EXTERNAL`` and ``PROCESS`` environments on your own machines.

Beam's Python worker pool (``python -m apache_beam.runners.worker.worker_pool_main
--service_port P --container_executable pipelines/worker_boot.py``) runs this once per
worker with the container contract's flags. It asks the job's provision service for the
pipeline options and the staged files (the wheel from ``--extra_package``, the sdist
Beam builds from ``--setup_file``), fetches them from the artifact service, installs the
packages into a directory of this worker's own (``pip install --no-deps --no-index
--target``: the worker's environment must already hold their dependencies, as a worker
image does), and then becomes the SDK harness (``sdk_worker_main``) with that directory
first on ``PYTHONPATH``. So the workers run the code the job shipped, not whatever copy
of meap-data the worker machine may have.

Standard library, grpc and apache_beam only: it runs before the job's package exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import grpc
from apache_beam.portability import common_urns
from apache_beam.portability.api import (
    beam_artifact_api_pb2,
    beam_artifact_api_pb2_grpc,
    beam_provision_api_pb2,
    beam_provision_api_pb2_grpc,
    beam_runner_api_pb2,
    endpoints_pb2,
)
from google.protobuf import json_format, text_format

#: Staged files installed as packages: wheels, and the sdist Beam builds from --setup_file.
PACKAGE_SUFFIXES = (".whl", ".tar.gz", ".zip")


def log(message: str) -> None:
    print(f"worker_boot: {message}", file=sys.stderr, flush=True)


def staged_name(artifact) -> str | None:
    if artifact.role_urn != common_urns.artifact_roles.STAGING_TO.urn:
        return None
    payload = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload)
    return os.path.basename(payload.staged_name)


def fetch_artifacts(endpoint: str, dependencies, directory: str, metadata) -> list[str]:
    """The job's staged files, written to ``directory``; their paths, in staging order."""
    stub = beam_artifact_api_pb2_grpc.ArtifactRetrievalServiceStub(grpc.insecure_channel(endpoint))
    resolved = stub.ResolveArtifacts(beam_artifact_api_pb2.ResolveArtifactsRequest(artifacts=dependencies),
                                     metadata=metadata).replacements
    paths = []
    for i, artifact in enumerate(resolved):
        name = staged_name(artifact) or f"artifact-{i}"
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            for chunk in stub.GetArtifact(beam_artifact_api_pb2.GetArtifactRequest(artifact=artifact),
                                          metadata=metadata):
                f.write(chunk.data)
        paths.append(path)
    return paths


def install(packages: list[str], target: str) -> None:
    if not packages:
        log("the job staged no package; the worker runs what its environment has")
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
           "--disable-pip-version-check", "--target", target, *packages]
    subprocess.run(cmd, check=True)
    log(f"installed {', '.join(os.path.basename(p) for p in packages)} (staged by the job) into {target}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("id", "logging_endpoint", "artifact_endpoint", "provision_endpoint", "control_endpoint"):
        ap.add_argument(f"--{flag}", required=flag != "logging_endpoint")
    ap.add_argument("--semi_persist_dir", default=None)
    args, _ = ap.parse_known_args(argv)
    metadata = [("worker_id", args.id)]

    provision = beam_provision_api_pb2_grpc.ProvisionServiceStub(grpc.insecure_channel(args.provision_endpoint))
    info = provision.GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=metadata).info
    home = args.semi_persist_dir or tempfile.mkdtemp(prefix=f"beam-worker-{args.id}-")
    staged, site = os.path.join(home, "staged"), os.path.join(home, "site-packages")
    os.makedirs(staged, exist_ok=True)
    files = fetch_artifacts(args.artifact_endpoint, info.dependencies, staged, metadata)
    install([p for p in files if p.endswith(PACKAGE_SUFFIXES)], site)

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["WORKER_ID"] = args.id
    env["SEMI_PERSISTENT_DIRECTORY"] = home
    env["PIPELINE_OPTIONS"] = json_format.MessageToJson(info.pipeline_options)
    env["CONTROL_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
        endpoints_pb2.ApiServiceDescriptor(url=args.control_endpoint))
    if args.logging_endpoint:
        env["LOGGING_API_SERVICE_DESCRIPTOR"] = text_format.MessageToString(
            endpoints_pb2.ApiServiceDescriptor(url=args.logging_endpoint))
    try:  # what the harness will import: the staged copy, or the environment's own
        where = subprocess.run([sys.executable, "-c", "import meap_data; print(meap_data.__file__)"], env=env,
                               capture_output=True, text=True, cwd=home).stdout.strip()
        log(f"meap_data for this worker: {where or 'not importable'}")
    except OSError:
        pass
    os.chdir(home)
    os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], env)


if __name__ == "__main__":
    main()
