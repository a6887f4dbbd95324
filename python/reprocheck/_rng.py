"""The RNG states a step starts from: torch's, CUDA's, numpy's global generator, Python's `random`,
and the generators of the script's DataLoaders and samplers.

A generator is recorded once the script has used or seeded it (its state moved from the one seen
first): an unseeded generator that nothing draws from differs between processes without changing
anything.
"""
from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import NamedTuple

import torch


class RngState(NamedTuple):
    layer: str  # "" for the global generators; a DataLoader's layer for its generators
    name: str  # torch, cuda:N, numpy, random, generator, sampler.generator
    type: str
    state: torch.Tensor


def global_states() -> Iterator[RngState]:
    """torch's generators, numpy's global generator (when numpy is loaded) and Python's."""
    yield RngState("", "torch", "torch.Generator", torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            yield RngState("", f"cuda:{i}", "torch.cuda.Generator", state)
    np = sys.modules.get("numpy")
    if np is not None:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        words = np.concatenate([keys.astype(np.uint32), np.array([pos, has_gauss], dtype=np.uint32)])
        yield RngState("", "numpy", "numpy.random", torch.from_numpy(words.view(np.int32).copy()))
    version, words, gauss = random.getstate()
    yield RngState("", "random", "random", torch.tensor(words, dtype=torch.int64))


class RngTracker:
    """Which generators have been used, and their states to record at a step's start."""

    def __init__(self) -> None:
        self.first: dict = {}
        self.used: set = set()
        self.generators: list = []  # (layer, name, torch.Generator) of DataLoaders and samplers
        for s in global_states():
            self.first[(s.layer, s.name)] = s.state

    def add_generator(self, layer: str, name: str, generator: torch.Generator) -> None:
        if any(g is generator for _, _, g in self.generators):
            return
        self.generators.append((layer, name, generator))
        self.used.add((layer, name))  # a loader's generator is drawn from by the loader itself

    def states(self) -> Iterator[RngState]:
        yield from global_states()
        for layer, name, g in self.generators:
            yield RngState(layer, name, "torch.Generator", g.get_state())

    def to_record(self) -> list:
        """The states of the generators used so far."""
        out = []
        for s in self.states():
            key = (s.layer, s.name)
            if key not in self.used:
                first = self.first.setdefault(key, s.state)
                if torch.equal(first, s.state):
                    continue
                self.used.add(key)
            out.append(s)
        return out
