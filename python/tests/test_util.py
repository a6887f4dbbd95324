"""The capture's helpers: device hashes, RNG tracking, DataLoader descriptions."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset, WeightedRandomSampler

from reprocheck import _core
from reprocheck._data import describe, subset_indices
from reprocheck._rng import RngTracker
from reprocheck._torch_patches import SUPPORTED_TORCH, torch_version
from reprocheck._util import device_hash, host_array


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.uint8, torch.bool])
def test_the_device_hash_is_the_cores_hash_words(dtype: torch.dtype) -> None:
    t = (torch.arange(37) * 3 % 11).to(dtype)
    assert int(device_hash(t)) & 0xFFFFFFFFFFFFFFFF == _core.hash_words(host_array(t))


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
