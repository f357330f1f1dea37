"""Object storage end to end against an S3-compatible server this test starts itself
(moto's server mode on 127.0.0.1): prepare into ``s3://``, verify there, train-load it
back, prepare from ``s3://`` inputs, and atomic uploads. The same fsspec code path
serves ``gs://`` (gcsfs); only the endpoint differs."""

from __future__ import annotations

import json
import os
import socket

import numpy as np
import pytest

from meap_data import storage
from meap_data.config import PrepareConfig
from meap_data.errors import MeapDataError
from meap_data.inputs import expand_inputs, plan_units
from meap_data.loader import ShardLoader
from meap_data.manifest import read_manifest
from meap_data.prepare import run_prepare
from meap_data.readers import read_range
from meap_data.verify import verify_dataset

pytest.importorskip("s3fs", reason="object-storage tests need the dev extra: pip install -e '.[dev]'")
moto_server = pytest.importorskip("moto.server", reason="needs moto[server] from the dev extra")

SEQ = 128
BUCKET = "meap-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """A fresh S3 server for this module, reachable by every process this test starts:
    Beam's multi_processing workers inherit the environment, and botocore reads the
    endpoint from ``AWS_ENDPOINT_URL_S3``."""
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()  # drop clients bound to another endpoint
    fs = fsspec.filesystem("s3", skip_instance_cache=True, use_listings_cache=False)
    fs.mkdir(BUCKET)
    try:
        yield fs
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fsspec.filesystem("s3").clear_instance_cache()


def _config(*inputs, **kw) -> PrepareConfig:
    kw.setdefault("seq_len", SEQ)
    kw.setdefault("input_bytes_per_shard", 10_000)
    return PrepareConfig(inputs=tuple(inputs), **kw)


def _shard_digests(manifest: dict) -> dict:
    return {fmt: [(e["path"], e["bytes"], e["sha256"], e["samples"]) for e in entries]
            for fmt, entries in manifest["shards"].items()}


@pytest.fixture(scope="module")
def local_ref(tmp_path_factory, json_pkg_glob, tokenizer_path):
    out = str(tmp_path_factory.mktemp("ref") / "ds")
    run_prepare(_config(json_pkg_glob), out, tokenizer=tokenizer_path)
    return out


def test_prepare_to_s3_verify_and_load_back(s3, local_ref, json_pkg_glob, tokenizer_path):
    url = f"s3://{BUCKET}/ds"
    # Two worker processes, as remote workers: each must find the endpoint and
    # credentials on its own and write its shards straight to the bucket.
    outcome = run_prepare(_config(json_pkg_glob), url, tokenizer=tokenizer_path,
                          beam_args=["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"])
    remote_manifest = read_manifest(url)
    assert outcome.manifest == remote_manifest
    local_manifest = read_manifest(local_ref)
    assert len(local_manifest["shards"]["arrow"]) >= 3
    # Byte-identical shards wherever they are written.
    assert _shard_digests(remote_manifest) == _shard_digests(local_manifest)
    assert remote_manifest["counts"] == local_manifest["counts"]
    assert s3.exists(f"{BUCKET}/ds/webdataset/shard-000000.tar")
    assert verify_dataset(url) == []

    # The loader streams the tars from the bucket, the same batches as from disk.
    remote = list(ShardLoader(url, 4, format="webdataset", seed=3, fields=("keys", "input_ids", "labels")))
    local = list(ShardLoader(local_ref, 4, format="webdataset", seed=3, fields=("keys", "input_ids", "labels")))
    assert len(remote) == len(local) == remote_manifest["counts"]["samples"] // 4
    for a, b in zip(remote, local):
        assert list(a["keys"]) == list(b["keys"])
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["labels"], b["labels"])

    # verify catches damage in the bucket too.
    first = remote_manifest["shards"]["webdataset"][0]["path"]
    data = bytearray(s3.cat_file(f"{BUCKET}/ds/{first}"))
    data[len(data) // 2] ^= 0xFF
    s3.pipe_file(f"{BUCKET}/ds/{first}", bytes(data))
    problems = verify_dataset(url)
    assert len(problems) == 1 and first in problems[0] and "sha256" in problems[0]


def test_prepare_from_s3_inputs_matches_local_inputs(s3, tmp_path, stdlib, tokenizer_path):
    """JSON lines in a bucket, one file large enough to be cut into seeked byte ranges:
    same documents, keys and shards as the same files on disk."""
    local_dir = tmp_path / "in"
    local_dir.mkdir()
    names = sorted(n for n in os.listdir(os.path.join(stdlib, "json")) if n.endswith(".py"))
    texts = [open(os.path.join(stdlib, "json", n), encoding="utf-8").read() for n in names]
    big = "".join(json.dumps({"text": t}) + "\n" for t in texts * 4)  # ~200 KB: several ranges
    small = "".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    (local_dir / "big.jsonl").write_text(big)
    (local_dir / "small.jsonl").write_text(small + "not json\n")
    for name in ("big.jsonl", "small.jsonl"):
        s3.put_file(str(local_dir / name), f"{BUCKET}/in/{name}")

    remote_files = expand_inputs([f"s3://{BUCKET}/in/*.jsonl"])
    local_files = expand_inputs([str(local_dir / "*.jsonl")])
    assert [(f.relpath, f.size, f.file_type) for f in remote_files] == [(f.relpath, f.size, f.file_type) for f in local_files]
    assert remote_files[0].path == f"s3://{BUCKET}/in/big.jsonl"
    remote_units, local_units = plan_units(remote_files, 10_000), plan_units(local_files, 10_000)
    assert len(remote_units) >= 5
    assert ([[(r.start, r.end, r.first_line) for r in u.ranges] for u in remote_units]
            == [[(r.start, r.end, r.first_line) for r in u.ranges] for u in local_units])
    remote_docs = [d for u in remote_units for r in u.ranges for d in read_range(r)]
    assert remote_docs == [d for u in local_units for r in u.ranges for d in read_range(r)]
    assert len(remote_docs) == len(texts) * 5 + 1

    a, b = f"s3://{BUCKET}/from-s3", str(tmp_path / "from-local")
    run_prepare(_config(f"s3://{BUCKET}/in/*.jsonl"), a, tokenizer=tokenizer_path)
    run_prepare(_config(str(local_dir / "*.jsonl")), b, tokenizer=tokenizer_path)
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["counts"]["rejected_by_reason"] == {"invalid_json": 1}
    assert _shard_digests(ma) == _shard_digests(mb)
    assert ma["counts"] == mb["counts"]
    [dead] = ma["rejected"]
    assert dead == mb["rejected"][0]
    assert b'"small.jsonl:' in s3.cat_file(f"{BUCKET}/from-s3/{dead['path']}")


def test_remote_input_errors_name_the_pattern(s3):
    with pytest.raises(MeapDataError, match=f"s3://{BUCKET}/nothing/.*matches no object"):
        expand_inputs([f"s3://{BUCKET}/nothing/*.jsonl"])
    with pytest.raises(MeapDataError, match="mix local paths and URLs"):
        expand_inputs([f"s3://{BUCKET}/in/*.jsonl", "/tmp/*.jsonl"])


def test_failed_upload_leaves_no_object(s3):
    """A writer that fails mid-shard (a crashed or retried bundle) aborts its upload: no
    partial object appears under the final name."""
    url = f"s3://{BUCKET}/atomic/shard.tar"
    with pytest.raises(RuntimeError):
        with storage.atomic_writer(url) as w:
            w.write(b"x" * (6 << 20))
            raise RuntimeError("worker died")
    assert not storage.exists(url)
    sha = storage.write_bytes_atomic(url, b"complete")
    assert storage.read_bytes(url) == b"complete" and len(sha) == 64


def test_the_output_lock_is_exclusive_on_s3(s3, json_pkg_glob, tokenizer_path):
    from meap_data.errors import BusyError
    from meap_data.prepare import LOCK, OutputLock

    lock = f"s3://{BUCKET}/locked/{LOCK}"
    assert storage.create_exclusive(lock, b'{"pid": 1, "host": "elsewhere"}')
    assert not storage.create_exclusive(lock, b"second")  # the server refuses the overwrite
    assert s3.cat(lock.replace("s3://", "")) == b'{"pid": 1, "host": "elsewhere"}'
    with pytest.raises(BusyError, match="pid 1 on elsewhere"):
        run_prepare(_config(json_pkg_glob), f"s3://{BUCKET}/locked", tokenizer=tokenizer_path)
    with OutputLock([f"s3://{BUCKET}/free"]):
        assert s3.exists(f"{BUCKET}/free/{LOCK}")
    assert not s3.exists(f"{BUCKET}/free/{LOCK}")
