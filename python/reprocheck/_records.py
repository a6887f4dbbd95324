"""Writing records: one Row per tensor, into a dump through the core's writer (reprocheck._core).

Full capture writes each tensor's bytes at once. Hash-only capture hashes a CPU tensor at once and
a device tensor on its device, keeping the row until the step ends, when the step's device hashes
cross to the host in one transfer. A CPU tensor that nothing can change before `settle()` (an
optimizer's state in its step hook, the parameters' gradients until backward returns) may be
written deferred: `settle()` hashes the waiting ones together, on torch's threads (at most 8).
"""
from __future__ import annotations

import json
import math
import os
import platform
import threading
import weakref
from typing import Any, NamedTuple

import torch

from . import _core
from ._shards import local_tensor
from ._util import device_hash, hashable, host_array


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

    def text_key(self) -> str:
        """The record's key as the core spells it (TensorMeta::key()): a capture plan's line."""
        return f"{self.step}|{self.phase}|{self.layer}|{self.kind}|{self.name}|{self.call}"


class PendingHash(NamedTuple):
    row: Row
    value: Any  # an XXH3 hash; a device tensor holding hash_words; a CPU tensor or host array to hash at settle()
    words: bool


class Losses:
    """The open step's losses, checked for NaN or Inf when the step ends."""

    def __init__(self) -> None:
        self.open: list[torch.Tensor] = []
        self.nonfinite_steps: list[int] = []

    def add(self, loss: torch.Tensor) -> None:
        self.open.append(local_tensor(loss.detach()))

    def check(self, step: int) -> None:
        if not self.open:
            return
        if all(t.is_cpu and not t.is_complex() for t in self.open):  # read at once, no tensor ops
            finite = all(math.isfinite(float(t)) for t in self.open)
        else:  # one transfer from the device for all of them
            finite = bool(torch.isfinite(torch.stack([t.float().reshape(()).cpu() for t in self.open])).all())
        if not finite and step not in self.nonfinite_steps:
            self.nonfinite_steps.append(step)
        self.open = []


class OutputHashes:
    """The hashes of this step's tapped outputs, by tensor: a tapped layer's input that is one of
    them, unchanged since (a conv's output into a batch norm), is not hashed again."""

    def __init__(self) -> None:
        self.seen: dict[int, tuple] = {}  # id: (weakref, version counter, hash)

    def remember(self, t: torch.Tensor, h: int | None) -> None:
        if h is not None and not t.is_inference():
            self.seen[id(t)] = (weakref.ref(t), t._version, h)

    def input_hash(self, t: torch.Tensor) -> int:
        seen = self.seen.get(id(t))
        if seen is not None and seen[0]() is t and seen[1] == t._version:
            return int(seen[2])
        return _core.hash_bytes(hashable(t))

    def clear(self) -> None:
        self.seen = {}


def process_rank() -> int | None:
    """This process's rank in a distributed run of several processes; None otherwise."""
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return int(dist.get_rank())
    if os.environ.get("RANK") is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"])
    return None


def distributed() -> bool:
    return process_rank() is not None


def rank_path(path: str) -> str:
    """The dump path of this process: `STEM.rankR.h5` in a distributed run with several ranks."""
    rank = process_rank()
    if rank is None:
        return path
    stem = path[:-3] if path.endswith(".h5") else path
    return f"{stem}.rank{rank}.h5"


class Recorder:
    """The dump of one process. Opened at the first record (a distributed run's rank is known
    by then); `commit()` writes it whole."""

    def __init__(self, path: str, hashes_only: bool, provenance: dict, plan: str = "") -> None:
        self.path = path
        self.hashes_only = hashes_only
        self.provenance = provenance
        # Pass 2 of the capture ladder: the records whose data a hash-only run keeps.
        self.plan: frozenset[str] = frozenset()
        self.plan_path = plan if hashes_only else ""
        if self.plan_path:
            with open(plan, encoding="utf-8") as f:
                self.plan = frozenset(line.rstrip("\n") for line in f if line.strip())
        self.kept: set[str] = set()
        self.lock = threading.RLock()
        self.writer: Any = None
        self.pending: list[PendingHash] = []
        self.unhashed: list[int] = []  # positions in `pending` of rows whose bytes settle() hashes
        self.skipped: dict[str, list[str]] = {}  # what a dump cannot store (a dtype, "sparse") -> the records
        self.attributes: dict[str, Any] = {}

    def _open(self) -> Any:
        if self.writer is None:
            self.writer = _core.DumpWriter(rank_path(self.path), False, self.hashes_only)
            if self.plan_path:
                self.writer.keep_data_from(self.plan_path)
            for name, value in self.provenance.items():
                self.writer.set_attribute(name, value)
            for name, value in self.attributes.items():
                self.writer.set_attribute(name, value)
        return self.writer

    @property
    def opened(self) -> bool:
        return self.writer is not None

    @property
    def plan_done(self) -> bool:
        """Every record of the capture plan has been written: pass 2 may stop."""
        return bool(self.plan) and len(self.kept) >= len(self.plan)

    def set_attribute(self, name: str, value: Any) -> None:
        self.attributes[name] = value
        if self.writer is not None:
            self.writer.set_attribute(name, value)

    def set_run_attributes(self, options: dict, steps: int, dropout_elements: int, nonfinite_steps: list,
                           op_generators: dict, shards: dict) -> None:
        """The attributes known when the run ends: its options as run, steps, seed, what it drew."""
        a = _core.attr
        self.set_attribute(a.RUN_OPTIONS, json.dumps(dict(options, threads=torch.get_num_threads()), sort_keys=True))
        self.set_attribute(a.STEPS, steps)
        self.set_attribute(a.THREADS, torch.get_num_threads())
        self.set_attribute(a.SEED, torch.initial_seed() & 0x7FFFFFFFFFFFFFFF)
        self.set_attribute(a.DROPOUT_ELEMENTS, dropout_elements)
        for name, value in ((a.NONFINITE_LOSS, nonfinite_steps), (a.OP_GENERATORS, op_generators),
                            (a.SHARDS, shards)):
            if value:
                self.set_attribute(name, json_attribute(value))

    def write(self, row: Row, t: torch.Tensor, keep: bool = False, defer: bool = False) -> int | None:
        """Writes one record: its data, or in a hash-only dump its hash, unless the capture plan lists
        it or `keep` asks for its data (pass 2's drill-down ops). `defer`: the caller guarantees that
        the tensor does not change before `settle()`. Returns the hash of a CPU tensor's bytes when
        it was computed here (a hash-only record), else None."""
        if not row.dtype or t.layout != torch.strided:  # a dtype DTYPES lacks, a sparse layout
            why = str(t.layout if row.dtype else t.dtype).removeprefix("torch.")  # sparse_coo, complex64
            self.skipped.setdefault(why, []).append(".".join(p for p in (row.layer, row.name) if p) + f" {row.kind}")
            return None
        planned = self.hashes_only and bool(self.plan) and row.text_key() in self.plan
        keep = keep and self.hashes_only
        if self.hashes_only and not planned and not keep:
            value: Any
            if not t.is_cpu:
                value, words = device_hash(t), True
            elif defer:
                value, words = hashable(t), False
            else:
                value, words = _core.hash_bytes(hashable(t)), False
            with self.lock:
                self._open()
                if defer:
                    self.unhashed.append(len(self.pending))
                self.pending.append(PendingHash(row, value, words))
            return value if isinstance(value, int) else None
        data = host_array(t)
        with self.lock:
            if planned or keep:
                self.flush()  # rows keep their order: the hashes waiting for the device come first
            if planned:
                self.kept.add(row.text_key())
            self._open().write(row.step, row.phase, row.layer, row.layer_type, row.kind, row.name, row.call,
                               row.dtype, row.shape, data, row.input_hash, planned or keep)
        return None

    def settle(self) -> None:
        """Hashes the deferred CPU records, together (largest first, on torch's threads, at most 8,
        without the GIL); their rows stay in order with the others until flush()."""
        with self.lock:
            if not self.unhashed:
                return
            threads = min(torch.get_num_threads(), 8)  # memory bandwidth, not cores, bounds it beyond a few
            hashes = _core.hash_many([self.pending[i].value for i in self.unhashed], threads)
            for i, h in zip(self.unhashed, hashes):
                self.pending[i] = self.pending[i]._replace(value=h)
            self.unhashed = []

    def flush(self) -> None:
        """Writes the hash-only rows waiting for their device hashes (one transfer)."""
        with self.lock:
            self.settle()
            rows, self.pending = self.pending, []
            if not rows:
                return
            device = [r.value for r in rows if isinstance(r.value, torch.Tensor)]
            fetched = torch.stack([d.to(device[0].device) for d in device]).cpu().tolist() if device else []
            self._open().write_pending(rows, [h & 0xFFFFFFFFFFFFFFFF for h in fetched])

    def commit(self, notes: list[str], leaf_fallback: bool) -> None:
        """Writes the dump whole, with the capture's notes (and one for what it could not store)."""
        if leaf_fallback:
            self.set_attribute(_core.attr.LAYER_FALLBACK, "leaf")
        if self.skipped:
            notes = [*notes, "not recorded, as a dump stores dense tensors of the dtypes in docs/dump-format.md: "
                     + "; ".join(f"{len(rows)} {why} ({few(list(dict.fromkeys(rows)))})"
                                 for why, rows in self.skipped.items())]
        if notes:
            self.set_attribute(_core.attr.CAPTURE_NOTES, json.dumps(notes))
        self.flush()
        with self.lock:
            self._open().commit()


def few(names: list[str]) -> str:
    """The first three names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


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
