"""Writing records: one Row per tensor, into a dump through the core's writer (reprocheck._core).

Full capture writes each tensor's bytes at once. Hash-only capture hashes a CPU tensor at once and
a device tensor on its device, keeping the row until the step ends, when the step's device hashes
cross to the host in one transfer.
"""
from __future__ import annotations

import json
import os
import platform
import threading
from typing import Any, NamedTuple

import torch

from . import _core
from ._util import DTYPES, device_hash, host_array


class Row(NamedTuple):
    """One record's index row (docs/dump-format.md)."""

    step: int
    phase: str
    layer: str
    layer_type: str
    kind: str
    name: str
    call: int
    dtype: str
    shape: list
    input_hash: int | None = None

    def key(self) -> tuple:
        return (self.step, self.phase, self.layer, self.kind, self.name, self.call)


class PendingHash(NamedTuple):
    row: Row
    value: int | torch.Tensor  # an XXH3 hash, or a device tensor holding hash_words
    words: bool


def rank_path(path: str) -> str:
    """The dump path of this process: `STEM.rankR.h5` in a distributed run with several ranks."""
    rank = None
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        rank = dist.get_rank()
    elif os.environ.get("RANK") is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        rank = int(os.environ["RANK"])
    if rank is None:
        return path
    stem = path[:-3] if path.endswith(".h5") else path
    return f"{stem}.rank{rank}.h5"


class Recorder:
    """The dump of one process. Opened at the first record (a distributed run's rank is known
    by then); `commit()` writes it whole."""

    def __init__(self, path: str, hashes_only: bool, provenance: dict) -> None:
        self.path = path
        self.hashes_only = hashes_only
        self.provenance = provenance
        self.lock = threading.RLock()
        self.writer: Any = None
        self.pending: list[PendingHash] = []
        self.skipped = 0  # tensors of dtypes or layouts a dump cannot store
        self.attributes: dict[str, Any] = {}

    def _open(self) -> Any:
        if self.writer is None:
            self.writer = _core.DumpWriter(rank_path(self.path), False, self.hashes_only)
            for name, value in self.provenance.items():
                self.writer.set_attribute(name, value)
            for name, value in self.attributes.items():
                self.writer.set_attribute(name, value)
        return self.writer

    @property
    def opened(self) -> bool:
        return self.writer is not None

    def set_attribute(self, name: str, value: Any) -> None:
        self.attributes[name] = value
        if self.writer is not None:
            self.writer.set_attribute(name, value)

    def write(self, row: Row, t: torch.Tensor) -> None:
        if DTYPES.get(t.dtype) is None or t.is_sparse or t.layout != torch.strided:
            self.skipped += 1
            return
        if self.hashes_only:
            if t.device.type == "cpu":
                value: int | torch.Tensor = _core.hash_bytes(host_array(t))
                words = False
            else:
                value, words = device_hash(t), True
            with self.lock:
                self._open()
                self.pending.append(PendingHash(row, value, words))
            return
        data = host_array(t)
        with self.lock:
            self._open().write(row.step, row.phase, row.layer, row.layer_type, row.kind, row.name, row.call,
                               row.dtype, row.shape, data, row.input_hash)

    def flush(self) -> None:
        """Writes the hash-only rows waiting for their device hashes (one transfer)."""
        with self.lock:
            rows, self.pending = self.pending, []
            if not rows:
                return
            device = [r.value for r in rows if isinstance(r.value, torch.Tensor)]
            fetched = iter(torch.stack([d.to(device[0].device) for d in device]).cpu().tolist()) if device else iter(())
            w = self._open()
            for r in rows:
                value = next(fetched) if isinstance(r.value, torch.Tensor) else r.value
                w.write_hash(r.row.step, r.row.phase, r.row.layer, r.row.layer_type, r.row.kind, r.row.name,
                             r.row.call, r.row.dtype, r.row.shape, value & 0xFFFFFFFFFFFFFFFF, r.words,
                             r.row.input_hash)

    def commit(self) -> None:
        self.flush()
        with self.lock:
            self._open().commit()


def blas_of(config: str) -> str:
    """The BLAS torch was built with and the CPU kernels it dispatches to, from its build
    configuration: "mkl, AVX512 kernels" ("unknown" when it says neither)."""
    blas = isa = ""
    for line in config.splitlines():
        for item in line.split(","):
            key, _, value = item.strip().partition("=")
            if key == "BLAS_INFO" and value:
                blas = value.strip()
        if "CPU capability usage:" in line:
            isa = line.split("CPU capability usage:", 1)[1].strip()
    blas = blas or "unknown"
    return f"{blas}, {isa} kernels" if isa else blas


def provenance(options: dict, argv: list) -> dict:
    """The dump's root attributes that describe where and how this process ran (host facts from the
    core, as the TorchScript front end writes them)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    host, cpu, utc = _core.host_facts()
    a = _core.attr
    return {
        a.FRONT_END: "python",
        a.REPROCHECK_VERSION: _core.version(),
        a.LIBTORCH_VERSION: torch.__version__.split("+")[0],
        a.CUDA_VERSION: torch.version.cuda or "none",
        a.CUDNN_VERSION: str(cudnn) if cudnn else "none",
        a.PYTHON_VERSION: platform.python_version(),
        a.DEVICE: "cpu",
        a.DEVICE_NAME: cpu,
        a.CPU: cpu,
        a.BLAS: blas_of(torch.__config__.show()),
        a.TORCH_THREADS: int(torch.get_num_threads()),
        a.HOST: host,
        a.TIME: utc,
        a.MODEL: str(options.get("model", argv[0] if argv else "")),
        a.MODEL_SIGNATURE: "none",
        a.LAYERS: str(options.get("layers", "default")),
        a.DETERMINISTIC: str(options.get("deterministic", "off")),
        a.BENCHMARK: int(bool(options.get("benchmark", False))),
    }


def json_attribute(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
