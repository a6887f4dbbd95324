"""--isolate: the reference run's values of the records to replay, read before the run starts."""
from __future__ import annotations

import torch

from . import _core
from ._util import DTYPES


def load_replay(dump: str, keys_file: str) -> dict:
    """key -> tensor of every record of `dump` whose key `keys_file` lists (one per line)."""
    with open(keys_file) as f:
        wanted = {line.strip() for line in f if line.strip()}
    reader = _core.DumpReader(dump)
    out = {}
    torch_dtypes = {v: k for k, v in DTYPES.items()}
    for meta in reader.index():
        if meta["key"] not in wanted:
            continue
        dtype = torch_dtypes[meta["dtype"]]
        raw = bytearray(reader.read_bytes(meta["order"]))
        storage = torch.int16 if dtype == torch.bfloat16 else dtype
        t = torch.frombuffer(raw, dtype=storage) if raw else torch.empty(0, dtype=storage)
        out[meta["key"]] = t.view(dtype).reshape(meta["shape"]).clone()
    return out
