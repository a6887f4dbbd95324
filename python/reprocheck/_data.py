"""The script's DataLoaders: each gets a record layer ("" for the first one the script iterates,
its variable name or `loaderK` for the others) and a description of who draws its order (the
dump's `data_loaders` attribute, which the hints read)."""
from __future__ import annotations

import weakref
from typing import Any

import torch

from ._util import tensors, type_name, variable_name


def subset_indices(dataset: Any) -> list | None:
    """The indices of the base dataset a Subset (random_split) holds, through nested Subsets."""
    from torch.utils.data import Subset

    if not isinstance(dataset, Subset):
        return None
    indices = list(dataset.indices)
    inner = dataset.dataset
    while isinstance(inner, Subset):
        indices = [inner.indices[i] for i in indices]
        inner = inner.dataset
    if not all(isinstance(i, int) for i in indices):
        return None
    return [int(i) for i in indices]


def batch_records(indices: list | None, batch: Any) -> list[tuple[str, str, torch.Tensor]]:
    """(kind, name, tensor) of a DataLoader batch's records: its dataset indices, then its tensors."""
    out = [("indices", "indices", torch.tensor(indices, dtype=torch.int64))] if indices is not None else []
    return out + [("batch", name, t) for name, t in tensors(batch, "batch")]


def describe(loader: Any, name: str | None) -> dict:
    """Who draws a DataLoader's order: its sampler and batch sampler, their generators, workers."""
    from torch.utils.data import BatchSampler, Subset

    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    own_generator = getattr(sampler, "generator", None)
    return {
        "name": name or "",
        "workers": int(getattr(loader, "num_workers", 0) or 0),
        "in_order": bool(getattr(loader, "in_order", True)),
        "sampler": type_name(sampler) if sampler is not None else "",
        # a batch sampler the script gave (torch makes a BatchSampler of its own otherwise)
        "batch_sampler": type_name(batch_sampler)
        if batch_sampler is not None and type(batch_sampler) is not BatchSampler
        else "",
        "generator": getattr(loader, "generator", None) is not None,
        "sampler_generator": own_generator is not None and own_generator is not getattr(loader, "generator", None),
        "replacement": bool(getattr(sampler, "replacement", False)),
        "subset": isinstance(getattr(loader, "dataset", None), Subset),
    }


class Loaders:
    """The DataLoaders seen so far, by the order the script first iterated them."""

    def __init__(self) -> None:
        self.layers: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self.descriptions: dict = {}  # layer -> description
        self.iterators: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self.new: list = []  # (layer, loader) seen but not yet announced to the session

    def on_iter(self, loader: Any, iterator: Any) -> None:
        try:
            self.iterators[iterator] = loader
        except TypeError:
            return
        if loader in self.layers:
            return
        name = variable_name(loader)
        k = len(self.descriptions)
        layer = "" if k == 0 else (name if name and name not in self.descriptions else f"loader{k}")
        self.layers[loader] = layer
        self.descriptions[layer] = describe(loader, name)
        self.new.append((layer, loader))

    def loader_of(self, iterator: Any) -> Any | None:
        try:
            return self.iterators.get(iterator)
        except TypeError:
            return None

    def layer_of(self, iterator: Any) -> str:
        loader = self.loader_of(iterator)
        return self.layers.get(loader, "") if loader is not None else ""

    def generators(self, loader: Any) -> list:
        """(name, generator) of a loader: its own, and its sampler's when that is another."""
        out = []
        g = getattr(loader, "generator", None)
        if isinstance(g, torch.Generator):
            out.append(("generator", g))
        sg = getattr(getattr(loader, "sampler", None), "generator", None)
        if isinstance(sg, torch.Generator) and sg is not g:
            out.append(("sampler.generator", sg))
        return out
