"""The capture's helpers: device hashes, RNG tracking, DataLoader descriptions."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler

from reprocheck import _core
from reprocheck._data import describe, subset_indices
from reprocheck._records import PendingHash, Row
from reprocheck._rng import RngTracker
from reprocheck._torch_patches import SUPPORTED_TORCH, torch_version
from reprocheck._util import device_hash, hashable, host_array


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.uint8, torch.bool])
def test_the_device_hash_is_the_cores_hash_words(dtype: torch.dtype) -> None:
    t = (torch.arange(37) * 3 % 11).to(dtype)
    assert int(device_hash(t)) & 0xFFFFFFFFFFFFFFFF == _core.hash_words(host_array(t))


def test_hash_many_hashes_each_buffer_as_hash_bytes_does() -> None:
    buffers = [np.arange(n, dtype=np.float32) for n in (0, 1, 1000, 600_000, 300_000)]
    for threads in (1, 2, 4):
        assert _core.hash_many(buffers, threads) == [_core.hash_bytes(b) for b in buffers]
    assert _core.hash_many([], 2) == []
    with pytest.raises(ValueError, match="not contiguous"):
        _core.hash_many([np.arange(600_000, dtype=np.float32)[::2]], 2)


def test_a_tensor_hashes_where_it_lies_as_its_host_array_does() -> None:
    base = torch.arange(600_000, dtype=torch.float32)
    cases = [base, base[1000:], base.view(600, 1000)[10], torch.nn.Parameter(base[:77].clone()),
             torch.empty(0), base[:1000].to(torch.bfloat16), base[:10].to(torch.bool)]
    for t in cases:
        assert hashable(t).data_ptr() == t.data_ptr()  # contiguous on the CPU: no copy
        assert _core.hash_bytes(t) == _core.hash_bytes(host_array(t))
    assert _core.hash_many(cases, 2) == [_core.hash_bytes(host_array(t)) for t in cases]
    strided = [base[::2], base.view(600, 1000).t(), torch.complex(base[:4], base[:4]).conj().real]
    for t in strided:  # copied: hashed as the bytes of its values in order
        assert isinstance(hashable(t), np.ndarray)
        assert _core.hash_bytes(hashable(t)) == _core.hash_bytes(t.contiguous())
    assert _core.hash_bytes(base[1000:]) != _core.hash_bytes(base[1001:])
    p = torch.nn.Parameter(torch.ones(5))
    waiting = hashable(p)  # hashed later (settle()): the bytes it had, even if the script sets .data
    p.data = torch.zeros(5)
    assert _core.hash_bytes(waiting) == _core.hash_bytes(torch.ones(5)) != _core.hash_bytes(p)


def test_hash_many_runs_on_torchs_openmp_threads_when_torch_uses_openmp() -> None:
    # Right after a kernel, torch's OpenMP workers spin on the other cores: hashing threads of
    # hash_many's own would share those cores with them (bench/README.md).
    openmp = "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()
    assert _core.hash_pool() == ("openmp" if openmp else "threads")


def test_a_generator_is_recorded_once_it_is_used() -> None:
    tracker = RngTracker()
    assert [s.name for s in tracker.to_record()] == []  # nothing used yet
    random.random()
    np.random.rand()
    assert {s.name for s in tracker.to_record()} == {"random", "numpy"}
    g = torch.Generator().manual_seed(1)
    tracker.add_generator("val_loader", "generator", g)
    assert ("val_loader", "generator") in {(s.layer, s.name) for s in tracker.to_record()}


def test_subsets_resolve_to_the_base_dataset_and_samplers_are_described() -> None:
    base = TensorDataset(torch.arange(10))
    inner = Subset(base, [9, 8, 7, 6, 5])
    outer = Subset(inner, [4, 0])
    assert subset_indices(outer) == [5, 9]
    assert subset_indices(base) is None
    sampler = WeightedRandomSampler(torch.ones(10), 10, replacement=True)
    d = describe(DataLoader(base, sampler=sampler), "loader")
    assert d["sampler"] == "torch.utils.data.sampler.WeightedRandomSampler"
    assert d["replacement"] is True and d["generator"] is False and d["subset"] is False


def test_the_installed_torch_is_in_the_supported_range() -> None:
    low, high = SUPPORTED_TORCH
    assert low <= torch_version() < high


def test_a_shard_is_the_block_torch_chunk_gives_each_rank() -> None:
    from torch.distributed.tensor import Replicate, Shard

    from reprocheck._shards import local_slice

    # Shard(0) over 2 ranks of 16 rows: rows 8:16 on rank 1; uneven 5 rows over 2: 0:3 and 3:5.
    assert local_slice([16, 8], [2], [1], [Shard(0)]) == ([8, 0], [8, 8])
    assert local_slice([5, 4], [2], [0], [Shard(0)]) == ([0, 0], [3, 4])
    assert local_slice([5, 4], [2], [1], [Shard(0)]) == ([3, 0], [2, 4])
    # A 2-D mesh: Shard(0) over 2, then Shard(1) over 2 of what remains; Replicate keeps the block.
    assert local_slice([8, 6], [2, 2], [1, 1], [Shard(0), Shard(1)]) == ([4, 3], [4, 3])
    assert local_slice([8, 6], [2, 3], [1, 2], [Shard(0), Replicate()]) == ([4, 0], [4, 6])
    assert local_slice([8, 6], [2], [1], [Shard(-1)]) == ([0, 3], [8, 3])


def test_write_pending_writes_the_rows_write_hash_writes(tmp_path: Any) -> None:
    rows = [Row(0, "forward", "conv", "torch.nn.Conv2d", "activation", "out", 0, "float32", [2, 3], 7),
            Row(0, "after_step", "conv", "torch.nn.Conv2d", "param", "weight", 1, "bfloat16", [4], None),
            Row(1, "backward", "conv", "torch.nn.Conv2d", "grad", "out", 0, "float32", [2, 3], None)]
    # A CPU hash as an int; a device hash as anything else, taken in order from device_hashes.
    pending = [PendingHash(rows[0], 0xFFFFFFFFFFFFFFFF, False), PendingHash(rows[1], torch.zeros(()), True),
               PendingHash(rows[2], 5, False)]
    for path, one_call in ((tmp_path / "many.h5", True), (tmp_path / "each.h5", False)):
        w = _core.DumpWriter(str(path), False, True)
        if one_call:
            w.write_pending(pending, [-2 & 0xFFFFFFFFFFFFFFFF])
        else:
            for r, h, words in ((rows[0], 0xFFFFFFFFFFFFFFFF, False), (rows[1], 2**64 - 2, True), (rows[2], 5, False)):
                w.write_hash(*r[:9], h, words, r.input_hash)
        w.commit()
    many, each = (_core.DumpReader(str(tmp_path / f)).index() for f in ("many.h5", "each.h5"))
    assert many == each and len(many) == 3
    assert many[0]["hash"] == 0xFFFFFFFFFFFFFFFF and many[0]["input_hash"] == 7 and many[1]["kind"] == "param"
    assert many[1]["hash"] == 2**64 - 2 and many[2]["step"] == 1 and many[2]["shape"] == [2, 3]
    bad = _core.DumpWriter(str(tmp_path / "bad.h5"), False, True)
    with pytest.raises(ValueError, match="10 values"):
        bad.write_pending([(rows[0][:9], 1, False)], [])
    with pytest.raises(ValueError, match="too few device hashes"):
        bad.write_pending(pending, [])
    with pytest.raises(ValueError, match="too many device hashes"):
        bad.write_pending(pending[:1], [3])
    with pytest.raises(TypeError, match="field 2 is not a str"):
        bad.write_pending([(rows[0]._replace(layer=3), 1, False)], [])
