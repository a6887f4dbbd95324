"""Sharded tensors (DTensor: FSDP2, tensor parallelism): each rank records its local shard, and the
dump's `shards` attribute says where that shard sits in the full tensor, so that a divergence can
be found in the full parameter. FSDP1's flat parameters are plain tensors and are recorded as such.
"""
from __future__ import annotations

import sys
from typing import Any

import torch


def is_sharded(t: Any) -> bool:
    """A DTensor. Looked up among the modules the script imported: a script that makes DTensors has
    imported torch.distributed.tensor, and one that does not never pays for importing it."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, getattr(module, "DTensor", ()))


def placement_text(placements: Any) -> str:
    return ", ".join(repr(p) for p in placements)


def local_slice(global_shape: list[int], mesh_shape: list[int], coordinate: list[int],
                placements: Any) -> tuple[list[int], list[int]] | None:
    """(offset, shape) of the block a rank holds: Shard(d) over mesh dimension i splits dimension d as
    torch.chunk does, in the order of the mesh's dimensions. None for a layout that is not one block
    (a strided shard, as FSDP2 over tensor parallelism makes)."""
    offset = [0] * len(global_shape)
    shape = list(global_shape)
    for i, p in enumerate(placements):
        if not p.is_shard():
            continue
        if type(p).__name__ != "Shard":
            return None
        d = p.dim if p.dim >= 0 else p.dim + len(shape)
        n, c = mesh_shape[i], coordinate[i]
        chunk = -(-shape[d] // n)
        start = min(c * chunk, shape[d])
        end = min(start + chunk, shape[d])
        offset[d] += start
        shape[d] = end - start
    return offset, shape


def describe(t: Any) -> dict:
    """Where a DTensor's local shard sits: placements, mesh, the full shape, and the slice it holds."""
    mesh = t.device_mesh
    mesh_shape = list(mesh.shape)
    coordinate = mesh.get_coordinate()
    local = list(t.to_local().shape)
    full = list(t.shape)
    out: dict = {"placements": placement_text(t.placements), "mesh": mesh_shape, "shape": full, "local": local}
    if coordinate is not None:
        block = local_slice(full, mesh_shape, list(coordinate), t.placements)
        if block is not None and block[1] == local:
            offset, shape = block
            out["offset"] = offset
            out["slice"] = "[" + ", ".join(f"{o}:{o + s}" for o, s in zip(offset, shape)) + "]"
    out["replicated"] = all(p.is_replicate() for p in t.placements)
    return out


def is_flat_param(t: Any) -> bool:
    """FSDP1's FlatParameter: a plain tensor holding this rank's part of a flattened module."""
    return bool(getattr(t, "_is_flat_param", False)) or type(t).__name__ == "FlatParameter"


def describe_flat(t: Any) -> dict:
    """Where an FSDP1 flat parameter's local part sits in the flattened, unsharded parameters of its
    module (padded at the end to divide evenly between the ranks)."""
    local = t.numel()
    full_size = getattr(t, "_unpadded_unsharded_size", None)
    full = int(torch.Size(full_size).numel()) if full_size is not None else local
    dist = torch.distributed
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    start = min(rank * local, full)
    end = min(start + local, full)
    return {"placements": "FSDP1 FlatParameter (flattened, sharded)", "mesh": [world], "shape": [full],
            "local": [local], "offset": [start], "slice": f"[{start}:{end}]", "replicated": False}


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The tensor a rank holds: a DTensor's local shard, any other tensor itself."""
    return t.to_local() if is_sharded(t) else t  # type: ignore[attr-defined]
