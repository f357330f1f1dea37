"""The shard loader on real prepared datasets (stdlib source): the seeded global order,
even rank and worker splits, exact resume across job shapes, per-epoch re-masking that
reproduces the baked masks at epoch 0, batch fields, and bad input."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shutil
import tarfile
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch

from meap_data.config import PrepareConfig
from meap_data.errors import ChecksumError, DatasetIncompleteError, MeapDataError
from meap_data.loader import FeistelPermutation, ShardDataLoader, ShardIterableDataset, ShardLoader
from meap_data.manifest import read_manifest
from meap_data.sample_format import IGNORE_INDEX
from meap_data.prepare import run_prepare

SEQ = 64
ALL = ("input_ids", "labels", "position_ids", "doc_ids", "attention_mask", "cu_seqlens", "max_seqlen", "lengths", "keys")


@pytest.fixture(scope="session")
def packed_ds(tmp_path_factory, email_glob, tokenizer_path) -> str:
    """The stdlib email package, packed, 64-token samples in about 6 shards."""
    out = str(tmp_path_factory.mktemp("loader") / "email")
    run_prepare(PrepareConfig(inputs=(email_glob,), seq_len=SEQ, input_bytes_per_shard=90_000, seed=0),
                out, tokenizer=tokenizer_path, beam_args=[], overwrite=True)
    return out


@pytest.fixture(scope="session")
def padded_ds(tmp_path_factory, json_pkg_glob, tokenizer_path) -> str:
    """The stdlib json package unpacked (padded samples), special tokens never masked,
    another seed: the other branches of the pipeline's masking call."""
    out = str(tmp_path_factory.mktemp("loader") / "json")
    run_prepare(PrepareConfig(inputs=(json_pkg_glob,), seq_len=SEQ, input_bytes_per_shard=15_000, seed=7,
                              pack=False, mask_special_tokens=False, mask_ratio=0.2),
                out, tokenizer=tokenizer_path, beam_args=[], overwrite=True)
    return out


def reference(directory: str) -> dict:
    """Every sample in manifest order, read straight from the Arrow files."""
    manifest = read_manifest(directory)
    tables = [pa.ipc.open_stream(pa.memory_map(os.path.join(directory, e["path"]))).read_all()
              for e in manifest["shards"]["arrow"]]
    table = pa.concat_tables(tables)
    shard_of = np.concatenate([np.full(e["samples"], i) for i, e in enumerate(manifest["shards"]["arrow"])])
    return {
        "keys": table.column("key").to_pylist(),
        "input_ids": np.array(table.column("input_ids").to_pylist(), dtype=np.int64),
        "labels": np.array(table.column("labels").to_pylist(), dtype=np.int64),
        "doc_offsets": table.column("doc_offsets").to_pylist(),
        "length": np.array(table.column("length").to_pylist()),
        "shard": shard_of,
    }


@pytest.fixture(scope="session")
def packed_ref(packed_ds) -> dict:
    return reference(packed_ds)


@pytest.fixture(scope="session")
def padded_ref(padded_ds) -> dict:
    return reference(padded_ds)


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["keys"]]


def index_of(ref: dict) -> dict:
    return {k: i for i, k in enumerate(ref["keys"])}


# --------------------------------------------------------------------------- order


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64, 1000, 4099])
def test_feistel_is_a_bijection(n):
    image = FeistelPermutation(n, key=12345)(np.arange(n))
    assert sorted(image.tolist()) == list(range(n))
    if n >= 64:
        assert not (image == np.arange(n)).all()


def test_order_is_seeded_and_changes_each_epoch(packed_ds, packed_ref):
    n = len(packed_ref["keys"])
    a = ShardLoader(packed_ds, 4, seed=5)
    b = ShardLoader(packed_ds, 4, seed=5)
    c = ShardLoader(packed_ds, 4, seed=6)
    e0 = a.order(0).indices(np.arange(n))
    assert sorted(e0.tolist()) == list(range(n))  # a permutation of every sample
    assert (e0 == b.order(0).indices(np.arange(n))).all()
    assert (e0 != a.order(1).indices(np.arange(n))).mean() > 0.9
    assert (e0 != c.order(0).indices(np.arange(n))).mean() > 0.9


def test_shuffle_mixes_samples_across_shards(packed_ds, packed_ref):
    shards = packed_ref["shard"]
    n_shards = shards.max() + 1
    assert n_shards >= 4
    loader = ShardLoader(packed_ds, 16, seed=0, fields=("keys",))
    first = next(iter(loader))["keys"]
    idx = index_of(packed_ref)
    # 16 samples drawn across the whole dataset come from several shards.
    assert len({int(shards[idx[k]]) for k in first}) >= 3
    # With a window of 2 shards, each window's samples come from exactly 2 shards,
    # and which shards pair up changes with the epoch.
    windowed = ShardLoader(packed_ds, 4, seed=0, window_shards=2)
    pairs = []
    for epoch in (0, 1):
        order = windowed.order(epoch)
        lo, hi = order.window_range(0)
        got = set(shards[order.indices(np.arange(lo, hi))].tolist())
        assert len(got) == 2
        pairs.append(got)
    assert pairs[0] != pairs[1]


def test_no_shuffle_is_manifest_order(packed_ds, packed_ref):
    loader = ShardLoader(packed_ds, 8, shuffle=False, fields=("keys",), remainder="wrap")
    keys = keys_of(loader)
    n = len(packed_ref["keys"])
    assert keys[:n] == packed_ref["keys"]


# --------------------------------------------------------------------------- splits


@pytest.mark.parametrize("remainder", ["drop", "wrap"])
def test_ranks_get_equal_batch_counts_and_disjoint_samples(packed_ds, packed_ref, remainder):
    n = len(packed_ref["keys"])
    world, bs = 3, 7
    ranks = [ShardLoader(packed_ds, bs, rank=r, world_size=world, seed=1, fields=("keys",), remainder=remainder)
             for r in range(world)]
    per_rank = [list(r) for r in ranks]
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1  # no rank waits for a batch another never gets
    assert all(len(batch["keys"]) == bs for b in per_rank for batch in b)
    seen = [k for b in per_rank for batch in b for k in batch["keys"]]
    if remainder == "drop":
        assert len(per_rank[0]) == n // (bs * world)
        assert len(seen) == len(set(seen))
        assert n - len(seen) < bs * world
    else:
        assert len(per_rank[0]) == -(-n // (bs * world))
        assert set(seen) == set(packed_ref["keys"])  # nothing skipped
        assert len(seen) - n < bs * world  # the repeats only complete the last global batch


def test_len_matches_batches_yielded(packed_ds):
    for world, rank, workers, wid in [(1, 0, 1, 0), (2, 1, 1, 0), (2, 0, 3, 2), (3, 2, 2, 1)]:
        loader = ShardLoader(packed_ds, 5, rank=rank, world_size=world, worker_id=wid, num_workers=workers,
                             fields=("labels",))
        expected = len(loader)
        assert sum(1 for _ in loader) == expected


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_torch_workers_deliver_the_single_process_sequence(packed_ds):
    single = [(b["keys"], b["input_ids"]) for b in ShardIterableDataset(packed_ds, 8, seed=2, fields=("keys", "input_ids"))]
    for workers in (2, 3):
        loader = ShardDataLoader(ShardIterableDataset(packed_ds, 8, seed=2, fields=("keys", "input_ids")),
                                 num_workers=workers)
        got = [(b["keys"], b["input_ids"]) for b in loader]  # all kept: buffers must not be reused under them
        assert [k for k, _ in got] == [k for k, _ in single]
        for (_, a), (_, b) in zip(got, single):
            assert torch.equal(a, b)
        assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["position"] == 0


def test_worker_loader_leaves_the_global_torch_rng_alone(packed_ds):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for _ in ShardDataLoader(ShardIterableDataset(packed_ds, 8, seed=2, fields=("keys",)), num_workers=2):
        pass
    assert torch.equal(torch.rand(3), expected)  # a trainer's dropout stream is unchanged


# --------------------------------------------------------------------------- resume


def _run_world(directory, world, state, steps=None, **kw):
    """Batches of ``world`` ranks in lockstep from ``state``; returns (keys in global
    position order, state after)."""
    ranks = [ShardLoader(directory, 6, rank=r, world_size=world, seed=4, fields=("keys",), **kw) for r in range(world)]
    for r in ranks:
        if state is not None:
            r.load_state_dict(state)
    iters = [iter(r) for r in ranks]
    keys = []
    step = 0
    while steps is None or step < steps:
        batches = [next(it, None) for it in iters]
        if batches[0] is None:
            assert all(b is None for b in batches)
            break
        for b in batches:
            keys.extend(b["keys"])
        step += 1
    states = [r.state_dict() for r in ranks]
    assert all(s == states[0] for s in states)
    return keys, states[0]


@pytest.mark.parametrize("before,after", [(2, 1), (1, 3), (3, 2)])
def test_resume_with_another_world_size_continues_exactly(packed_ds, packed_ref, before, after):
    n = len(packed_ref["keys"])
    order = ShardLoader(packed_ds, 6, seed=4).order(0)
    expected = [packed_ref["keys"][i] for i in order.indices(np.arange(n))]
    head, state = _run_world(packed_ds, before, None, steps=11)
    assert state["epoch"] == 0 and state["position"] == 11 * 6 * before
    tail, end = _run_world(packed_ds, after, state)
    assert end == {**state, "epoch": 1, "position": 0}
    got = head + tail
    assert len(got) == len(set(got))  # none repeated
    assert got == expected[: len(got)]  # exactly the order: none lost, none reordered
    assert n - len(got) < 6 * after  # only the dropped remainder of the epoch is missing


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_resume_with_another_worker_count(packed_ds):
    ds = ShardIterableDataset(packed_ds, 4, seed=9, fields=("keys",))
    reference_keys = [b["keys"] for b in ShardIterableDataset(packed_ds, 4, seed=9, fields=("keys",))]
    loader = ShardDataLoader(ds, num_workers=2)
    head = []
    for batch in loader:
        head.append(batch["keys"])
        if len(head) == 13:
            break
    state = json.loads(json.dumps(loader.state_dict()))  # survives a JSON checkpoint
    assert state["position"] == 13 * 4
    for workers in (3, 0):
        resumed = ShardDataLoader(ShardIterableDataset(packed_ds, 4, seed=9, fields=("keys",)), num_workers=workers)
        resumed.load_state_dict(state)
        assert len(resumed) == len(reference_keys) - 13
        tail = [b["keys"] for b in resumed]
        assert head + tail == reference_keys


def test_resume_mid_batch_position_and_next_epoch(packed_ds, packed_ref):
    """A position that is not a multiple of the new global batch still continues at the
    next sample; iterating on after the epoch starts the next one."""
    loader = ShardLoader(packed_ds, 5, seed=4, fields=("keys",))
    state = {**loader.state_dict(), "position": 17}
    loader.load_state_dict(state)
    first = next(iter(loader))["keys"]
    order = loader.order(0)
    assert first == [packed_ref["keys"][i] for i in order.indices(np.arange(17, 22))]
    rest = keys_of(loader)
    assert loader.epoch == 1
    nxt = next(iter(loader))["keys"]
    assert nxt == [packed_ref["keys"][i] for i in loader.order(1).indices(np.arange(5))]
    assert len(rest) > 0


def test_state_of_another_order_is_refused(packed_ds):
    state = ShardLoader(packed_ds, 4, seed=1).state_dict()
    with pytest.raises(MeapDataError, match="seed"):
        ShardLoader(packed_ds, 4, seed=2).load_state_dict(state)
    with pytest.raises(MeapDataError, match="window_shards"):
        ShardLoader(packed_ds, 4, seed=1, window_shards=2).load_state_dict(state)


def test_set_epoch_keeps_a_resumed_position(packed_ds):
    loader = ShardLoader(packed_ds, 4, seed=1)
    loader.load_state_dict({**loader.state_dict(), "epoch": 3, "position": 40})
    loader.set_epoch(3)
    assert (loader.epoch, loader.position) == (3, 40)
    loader.set_epoch(4)
    assert (loader.epoch, loader.position) == (4, 0)


def test_sample_range_holds_out_samples(packed_ds, packed_ref):
    n = len(packed_ref["keys"])
    train = ShardLoader(packed_ds, 8, sample_range=(0, n - 100), fields=("keys",))
    held = ShardLoader(packed_ds, 4, sample_range=(n - 100, n), shuffle=False, fields=("keys",))
    train_keys, held_keys = set(keys_of(train)), keys_of(held)
    assert held_keys == packed_ref["keys"][n - 100 :]
    assert not train_keys & set(held_keys)


# --------------------------------------------------------------------------- masks and fields


@pytest.mark.parametrize("fmt", ["arrow", "webdataset"])
def test_per_epoch_masks_reproduce_the_baked_masks_at_epoch_0(packed_ds, padded_ds, fmt):
    for directory in (packed_ds, padded_ds):
        kw = dict(format=fmt, seed=3, fields=("input_ids", "labels", "keys"), remainder="wrap")
        static = list(ShardLoader(directory, 8, masks="static", **kw))
        remask = ShardLoader(directory, 8, masks="per_epoch", **kw)
        epoch0 = list(remask)
        assert len(static) == len(epoch0)
        for a, b in zip(static, epoch0):
            assert a["keys"] == b["keys"]
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        # Epoch 1: new positions, same labels and the same number of masks per sample.
        mask_id = read_manifest(directory)["mask_token_id"]
        base = {k: (s["input_ids"][i], s["labels"][i]) for s in static for i, k in enumerate(s["keys"])}
        changed = 0
        for batch in remask:
            for i, k in enumerate(batch["keys"]):
                old_inputs, labels = base[k]
                np.testing.assert_array_equal(batch["labels"][i], labels)
                assert (batch["input_ids"][i] == mask_id).sum() == (old_inputs == mask_id).sum()
                differ = np.flatnonzero(batch["input_ids"][i] != old_inputs)
                length = int((labels != IGNORE_INDEX).sum())
                assert differ.size == 0 or differ.max() < length - 1  # never the last real token
                changed += differ.size > 0
        assert changed > 0.9 * len(base)


def test_fields_describe_the_packed_documents(padded_ds, padded_ref):
    idx = index_of(padded_ref)
    loader = ShardLoader(padded_ds, 6, seed=0, fields=ALL, remainder="wrap")
    padded_rows = 0
    for batch in loader:
        for f in ("input_ids", "labels", "position_ids", "doc_ids", "attention_mask"):
            assert batch[f].shape == (6, SEQ)
            assert batch[f].dtype == (np.int64 if f in ("input_ids", "labels") else np.int32)
        flat_starts = []
        for i, key in enumerate(batch["keys"]):
            j = idx[key]
            np.testing.assert_array_equal(batch["input_ids"][i], padded_ref["input_ids"][j])
            np.testing.assert_array_equal(batch["labels"][i], padded_ref["labels"][j])
            length = padded_ref["length"][j]
            starts = padded_ref["doc_offsets"][j]
            bounds = starts + [length]
            expect_pos = np.zeros(SEQ, dtype=np.int64)
            expect_doc = np.full(SEQ, -1, dtype=np.int64)
            for d, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
                expect_pos[a:b] = np.arange(b - a)
                expect_doc[a:b] = d
            expect_pos[length:] = np.arange(SEQ - length)  # padding: a piece of its own
            np.testing.assert_array_equal(batch["position_ids"][i], expect_pos)
            np.testing.assert_array_equal(batch["doc_ids"][i], expect_doc)
            np.testing.assert_array_equal(batch["attention_mask"][i], np.arange(SEQ) < length)
            assert batch["lengths"][i] == length
            assert (batch["labels"][i][length:] == IGNORE_INDEX).all()
            flat_starts += [i * SEQ + s for s in starts] + ([i * SEQ + length] if length < SEQ else [])
            padded_rows += length < SEQ
        np.testing.assert_array_equal(batch["cu_seqlens"], flat_starts + [6 * SEQ])
        assert batch["cu_seqlens"].dtype == np.int32
        assert batch["max_seqlen"] == int(np.diff(batch["cu_seqlens"]).max())
    assert padded_rows > 0


def test_torch_batches_are_fixed_shape_int64_tensors(packed_ds):
    ds = ShardIterableDataset(packed_ds, 4, seed=0)
    batch = next(iter(ds))
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    for name, t in batch.items():
        assert isinstance(t, torch.Tensor) and t.shape == (4, SEQ)
    # Token ids and labels as torch losses want them; positions as rotary/flash-attn take them.
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.int64
    assert batch["position_ids"].dtype == torch.int32
    wide = next(iter(ShardIterableDataset(packed_ds, 4, seed=0, dtype="int32", index_dtype="int64")))
    assert wide["input_ids"].dtype == torch.int32 and wide["position_ids"].dtype == torch.int64
    assert torch.equal(wide["input_ids"].long(), batch["input_ids"])
    assert torch.equal(wide["position_ids"], batch["position_ids"].long())
    with pytest.raises(MeapDataError, match="int32 or int64"):
        ShardLoader(packed_ds, 4, dtype="float32")


def test_pin_memory(packed_ds):
    ds = ShardIterableDataset(packed_ds, 4, seed=0, pin_memory=True)
    if torch.cuda.is_available():
        assert next(iter(ds))["input_ids"].is_pinned()
    else:
        with pytest.warns(UserWarning, match="no CUDA"):
            batch = next(iter(ds))
        assert not batch["input_ids"].is_pinned()


def test_batches_kept_by_the_consumer_are_never_overwritten(packed_ds, packed_ref):
    """The loader reuses output buffers, but only those nobody refers to any more."""
    idx = index_of(packed_ref)
    kept = list(ShardIterableDataset(packed_ds, 8, seed=0, fields=("input_ids", "labels", "keys")))
    list(ShardIterableDataset(packed_ds, 8, seed=0))  # more traffic through the pools
    for batch in kept:
        rows = [idx[k] for k in batch["keys"]]
        np.testing.assert_array_equal(batch["input_ids"].numpy(), packed_ref["input_ids"][rows])
        np.testing.assert_array_equal(batch["labels"].numpy(), packed_ref["labels"][rows])


@pytest.mark.parametrize("fmt,middle", [("arrow", False), ("webdataset", False), ("webdataset", True)])
def test_formats_give_identical_batches(packed_ds, packed_ref, fmt, middle):
    n = len(packed_ref["keys"])
    sample_range = (100, n - 150) if middle else None  # cuts into the first and last shards
    kw = dict(seed=8, window_shards=2, fields=ALL, remainder="wrap", world_size=2, rank=1, sample_range=sample_range)
    a = list(ShardLoader(packed_ds, 5, format="arrow", **kw))
    b = list(ShardLoader(packed_ds, 5, format=fmt, **kw))
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["keys"] == y["keys"]
        for f in ALL:
            if f not in ("keys", "max_seqlen"):
                np.testing.assert_array_equal(x[f], y[f])


def test_webdataset_memory_is_bounded_by_the_window(packed_ds):
    """A WebDataset loader holds at most its share of two windows of samples."""
    from meap_data.loader import core

    bs, world = 4, 2
    loader = ShardLoader(packed_ds, bs, format="webdataset", window_shards=1, seed=0, world_size=world, rank=0)
    largest = max(e["samples"] for e in read_manifest(packed_ds)["shards"]["webdataset"])
    held = []
    original = core._WindowReader._load

    def spy(self, window):
        original(self, window)
        held.append(len(self.buffer))

    core._WindowReader._load = spy
    try:
        count = sum(1 for _ in loader)
    finally:
        core._WindowReader._load = original
    assert count == len(ShardLoader(packed_ds, bs, world_size=world))
    assert len(held) == len(read_manifest(packed_ds)["shards"]["webdataset"])  # each window read once
    # Rank 0's half of one window, plus what is left of the previous one (< 1 batch).
    assert 0 < max(held) <= largest // world + 2 * bs


# --------------------------------------------------------------------------- bad input


@pytest.fixture()
def copy_ds(packed_ds, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(packed_ds, out)
    return out


def _rewrite_manifest(directory, fmt, index, path):
    """Point the manifest's entry at ``path``'s current size and sha256."""
    manifest = read_manifest(directory)
    data = open(os.path.join(directory, path), "rb").read()
    manifest["shards"][fmt][index].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)


@pytest.mark.parametrize("fmt", ["arrow", "webdataset"])
def test_flipped_byte_is_a_checksum_error_naming_the_shard(copy_ds, fmt):
    entry = read_manifest(copy_ds)["shards"][fmt][1]
    path = os.path.join(copy_ds, entry["path"])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(ChecksumError, match=entry["path"].replace(".", r"\.")):
        list(ShardLoader(copy_ds, 4, format=fmt, verify_checksums=True, shuffle=False, window_shards=1))


def test_truncated_tar(copy_ds):
    entry = read_manifest(copy_ds)["shards"]["webdataset"][0]
    path = os.path.join(copy_ds, entry["path"])
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2 + 100])
    # The size check names the shard before anything is read...
    with pytest.raises(MeapDataError, match=f"{entry['path']}.*truncated"):
        ShardLoader(copy_ds, 4, format="webdataset")
    # ...and the tar reader catches it too when the manifest was rewritten to match.
    _rewrite_manifest(copy_ds, "webdataset", 0, entry["path"])
    with pytest.raises(MeapDataError, match=f"shard {entry['path']}: truncated tar"):
        list(ShardLoader(copy_ds, 4, format="webdataset", shuffle=False))


def test_directory_without_manifest(copy_ds):
    os.remove(os.path.join(copy_ds, "manifest.json"))
    with pytest.raises(DatasetIncompleteError, match="incomplete or still being written"):
        ShardLoader(copy_ds, 4)
    with pytest.raises(DatasetIncompleteError):
        ShardIterableDataset(copy_ds, 4, format="webdataset")


@pytest.mark.parametrize("fmt", ["arrow", "webdataset"])
def test_manifest_naming_a_missing_file(copy_ds, fmt):
    entry = read_manifest(copy_ds)["shards"][fmt][2]
    os.remove(os.path.join(copy_ds, entry["path"]))
    with pytest.raises(MeapDataError, match=f"names {entry['path']}, which is missing"):
        ShardLoader(copy_ds, 4, format=fmt)


def test_tar_member_escaping_the_directory(copy_ds):
    entry = read_manifest(copy_ds)["shards"]["webdataset"][0]
    path = os.path.join(copy_ds, entry["path"])
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read()) for m in src.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as dst:
        for i, (m, data) in enumerate(members):
            if i == 4:  # the second sample's labels
                m.name = "../../etc/" + m.name
            dst.addfile(m, io.BytesIO(data))
    open(path, "wb").write(buf.getvalue())
    _rewrite_manifest(copy_ds, "webdataset", 0, entry["path"])
    with pytest.raises(MeapDataError, match=rf"shard {entry['path']}: member '\.\./\.\./etc/.*escape"):
        list(ShardLoader(copy_ds, 4, format="webdataset", shuffle=False))


def test_arguments_that_cannot_work(packed_ds, packed_ref):
    n = len(packed_ref["keys"])
    with pytest.raises(MeapDataError, match="fewer than one global batch"):
        ShardLoader(packed_ds, n, world_size=2)
    assert len(ShardLoader(packed_ds, n, world_size=2, remainder="wrap")) == 1
    with pytest.raises(MeapDataError, match="format"):
        ShardLoader(packed_ds, 4, format="parquet")
    with pytest.raises(MeapDataError, match="rank 2"):
        ShardLoader(packed_ds, 4, rank=2, world_size=2)
    with pytest.raises(MeapDataError, match="unknown fields"):
        ShardLoader(packed_ds, 4, fields=("input_ids", "attention"))


def test_framework_free_loader_does_not_import_torch(packed_ds):
    import subprocess
    import sys

    code = ("import sys; from meap_data.loader import ShardLoader; "
            f"b = next(iter(ShardLoader({packed_ds!r}, 2))); assert 'torch' not in sys.modules, 'torch imported'")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={**os.environ, "PYTHONPATH": root})


def test_warnings_are_not_raised_in_normal_use(packed_ds):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(ShardIterableDataset(packed_ds, 8, seed=0, masks="per_epoch"))
    assert glob.glob(os.path.join(packed_ds, "arrow", "*.arrow"))


def test_hex_key_words_match_the_masking_keys():
    from meap_data.keys import keys_to_u64
    from meap_data.loader.rows import hex16_words

    rng = np.random.default_rng(0)
    keys = [f"{int(x):016x}" for x in rng.integers(0, 2**63, 50)] + ["00000000000000ff", "ABCDEF0123456789"]
    raw = np.frombuffer("".join(keys).encode(), dtype=np.uint8).reshape(-1, 16)
    np.testing.assert_array_equal(hex16_words(raw), keys_to_u64(keys))
    for odd in ("0x00000000000001", "g000000000000000", "0000 00000000000"):
        assert hex16_words(np.frombuffer(odd.encode(), dtype=np.uint8).reshape(1, 16)) is None


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_persistent_workers_move_to_the_next_epoch(packed_ds):
    from torch.utils.data import DataLoader

    single = ShardIterableDataset(packed_ds, 16, seed=3, fields=("keys",))
    epochs = [[b["keys"] for b in single] for _ in range(2)]
    loader = DataLoader(ShardIterableDataset(packed_ds, 16, seed=3, fields=("keys",)), batch_size=None,
                        num_workers=2, persistent_workers=True)
    assert [[b["keys"] for b in loader] for _ in range(2)] == epochs
    assert epochs[0] != epochs[1]


def test_rank_and_world_size_come_from_torch_distributed(packed_ds, tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ds = ShardIterableDataset(packed_ds, 4)
        assert (ds.loader.rank, ds.loader.world_size) == (0, 1)
        assert ShardIterableDataset(packed_ds, 4, rank=1, world_size=2).loader.rank == 1
    finally:
        dist.destroy_process_group()


def test_streams_tars_from_an_object_store_url(packed_ds, packed_ref):
    """Any fsspec URL streams (here fsspec's in-memory filesystem stands in for gs://);
    Arrow needs a local disk for its memory map and says so."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in glob.glob(os.path.join(packed_ds, "**", "*"), recursive=True):
        if os.path.isfile(path):
            fs.pipe(f"/remote-ds/{os.path.relpath(path, packed_ds)}", open(path, "rb").read())
    try:
        remote = ShardLoader("memory://remote-ds", 8, format="webdataset", seed=1, fields=("keys", "labels"))
        local = ShardLoader(packed_ds, 8, format="webdataset", seed=1, fields=("keys", "labels"))
        a, b = list(remote), list(local)
        assert [x["keys"] for x in a] == [x["keys"] for x in b]
        np.testing.assert_array_equal(a[5]["labels"], b[5]["labels"])
        with pytest.raises(MeapDataError, match="local disk"):
            next(iter(ShardLoader("memory://remote-ds", 8, format="arrow")))
    finally:
        fs.rm("/remote-ds", recursive=True)


def test_empty_shards_are_skipped(copy_ds):
    """Prepare writes empty shards for units with no sample (all rejected, an empty
    split); they take no position in the order and break nothing."""
    from meap_data.manifest import write_manifest
    from meap_data.shards import ShardWriter

    manifest = read_manifest(copy_ds)
    n = manifest["counts"]["samples"]
    writer = ShardWriter(copy_ds, 99, 100, ("arrow", "webdataset"))
    files = writer.close()
    for fmt in ("arrow", "webdataset"):
        manifest["shards"][fmt].insert(1, {**files[fmt], "first_sample": manifest["shards"][fmt][1]["first_sample"]})
    write_manifest(copy_ds, manifest)
    for fmt in ("arrow", "webdataset"):
        loader = ShardLoader(copy_ds, 4, format=fmt, seed=0, window_shards=1, remainder="wrap", fields=("keys",))
        keys = keys_of(loader)
        assert set(keys) == set(reference(copy_ds)["keys"]) and len(set(keys)) == n


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_id_range_check_catches_every_bad_id_on_both_paths(dtype):
    from meap_data.loader.core import _bad_ids

    good = np.arange(1000, dtype=dtype).reshape(10, 100)
    assert not _bad_ids(good, 1000, ignore_ok=False)  # the one-pass unsigned path
    padded = good.copy()
    padded[:, 90:] = -100
    assert not _bad_ids(padded, 1000, ignore_ok=True) and _bad_ids(padded, 1000, ignore_ok=False)
    for bad_value, ignore_ok in ((1000, False), (-1, False), (-5, True), (-101, True), (1000, True)):
        bad = padded.copy() if ignore_ok else good.copy()
        bad[3, 7] = bad_value
        assert _bad_ids(bad, 1000, ignore_ok), (bad_value, ignore_ok)
    assert _bad_ids(good[:, ::2], 998, ignore_ok=False) and not _bad_ids(good[:, ::2], 999, ignore_ok=False)  # not contiguous: the plain path
