"""Helpers of the capture: dtypes, tensors of nested values, module facts, the run options that
reach the script before it runs."""
from __future__ import annotations

import os
import sys
from types import FrameType
from typing import Any

import torch

from . import _core
from ._shards import local_tensor

DTYPES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.bool: "bool",
}

# Outputs that hold uninitialized memory by contract: never recorded (they would differ run to run).
UNINITIALIZED = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}



def host_array(t: torch.Tensor) -> Any:
    """The tensor's bytes as a contiguous numpy array on the CPU (bfloat16 as its 16-bit pattern)."""
    t = local_tensor(t.detach())
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.resolve_conj().resolve_neg().contiguous().numpy()


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def hashable(t: torch.Tensor) -> Any:
    """What the core's hashers read for a tensor's bytes (hash_bytes, hash_many): a contiguous CPU
    tensor as it is, with no copy (the caller keeps it alive until hashed); any other as host_array()."""
    if t.__class__ in _PLAIN and t.is_cpu and t.is_contiguous() and not t.is_conj() and not t.is_neg():
        return t if t.__class__ is torch.Tensor else t.detach()  # a parameter's storage as of now
    return host_array(t)


def device_hash(t: torch.Tensor) -> torch.Tensor:
    """hash_words of a tensor's bytes, computed where the tensor lives (docs/dump-format.md): the
    bytes as little-endian 32-bit words w_i, sum_i w_i * (i * K + 1) + nbytes mod 2^64, with integer
    ops only, so the value does not depend on reduction order. A 0-dim int64 tensor on t's device."""
    with torch.no_grad():
        b = local_tensor(t.detach()).contiguous().reshape(-1).view(torch.uint8)
        n = b.numel()
        if n % 4:
            b = torch.cat([b, torch.zeros(4 - n % 4, dtype=torch.uint8, device=b.device)])
        words = b.view(torch.int32).to(torch.int64).bitwise_and_(0xFFFFFFFF)
        odd = torch.arange(words.numel(), dtype=torch.int64, device=b.device).mul_(_core.HASH_WORDS_STRIDE).add_(1)
        return words.mul_(odd).sum().add_(n)


def type_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def layer_category(module: torch.nn.Module) -> str:
    """What a module is by its class's ancestry: a subclass of a torch.nn conv is a conv (timm's
    ScaledStdConv2d), of a batch norm a batch norm (BatchNormAct2d). '' for none."""
    nn = torch.nn
    checks = (
        ("conv", (nn.modules.conv._ConvNd,)),
        ("batchnorm", (nn.modules.batchnorm._BatchNorm,)),
        ("dropout", (nn.modules.dropout._DropoutNd,)),
        ("linear", (nn.Linear, nn.Bilinear)),
        ("norm", (nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
         + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())),
    )
    for category, bases in checks:
        if isinstance(module, bases):
            return category
    return ""


def tensors(value: Any, prefix: str = "") -> list:
    """(name, tensor) pairs of a tensor, or of the tensors in a tuple, list or dict (one level deep
    for names: batch[0], batch['image'])."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value)]
    out: list = []
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            out += tensors(v, f"{prefix}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            out += tensors(v, f"{prefix}[{k!r}]")
    return out


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel, DataParallel or torch.compile wrapper."""
    for _ in range(4):
        if type(module).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = getattr(module, "module", None)
        elif type(module).__name__ == "OptimizedModule":
            inner = getattr(module, "_orig_mod", None)
        else:
            inner = None
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner
    return module


_OWN_FILES = (os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.abspath(torch.__file__)))


def variable_name(obj: Any, *also: Any) -> str | None:
    """The name the script's code gives `obj` (or one of `also`, its wrappers) in the nearest frame
    outside torch and reprocheck: 'netD', 'train_loader'. None when no variable holds it."""
    frame: FrameType | None = sys._getframe(1)
    targets = (obj,) + also
    while frame is not None:
        filename = os.path.abspath(frame.f_code.co_filename)
        if not filename.startswith(_OWN_FILES) and not filename.startswith("<frozen"):
            for scope in (frame.f_locals, frame.f_globals):
                for name, value in scope.items():
                    if any(value is t for t in targets) and name.isidentifier() and not name.startswith("_"):
                        return name
                # self.model inside a method: the attribute's name
                owner = scope.get("self") if scope is frame.f_locals else None
                if owner is not None and hasattr(owner, "__dict__"):
                    members = dict(vars(owner))
                    members.update(getattr(owner, "_modules", None) or {})
                    for name, value in members.items():
                        if any(value is t for t in targets) and not name.startswith("_"):
                            return name
            return None
        frame = frame.f_back
    return None


def apply_knobs(options: dict) -> None:
    threads = int(options.get("threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    interop = int(options.get("interop_threads", 0) or 0)
    if interop > 0:
        torch.set_num_interop_threads(interop)
    deterministic = options.get("deterministic", "off")
    if deterministic in ("on", "warn"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _core.CUBLAS_WORKSPACE_CONFIG)
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if options.get("benchmark"):
        torch.backends.cudnn.benchmark = True


def report_error(message: str) -> None:
    sys.stderr.write(f"{_core.ERROR_PREFIX}{message}\n")
    path = os.environ.get(_core.env.ERROR_FILE)
    if path:
        with open(path, "w") as f:
            f.write(message)


def error_line(exc_type: type, exc: BaseException) -> str:
    """The one line that says why a process failed: "RuntimeError: message". A launcher that relays
    a child's traceback (multiprocessing.spawn) gives the child's own last line."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text and lines:
        return lines[-1]
    return f"{exc_type.__name__}: {lines[0]}" if lines else exc_type.__name__


def report_process_error(exc_type: type, exc: BaseException) -> None:
    """Writes this process's error line for the runner: ERROR_FILE.rankR in a distributed run (each
    rank its own), ERROR_FILE.pidN otherwise."""
    path = os.environ.get(_core.env.ERROR_FILE)
    if not path or exc_type.__name__ == "ChildFailedError":  # torchrun's summary of its ranks' failure
        return
    rank = os.environ.get("RANK")
    who = f"rank{int(rank)}" if rank is not None and rank.isdigit() else f"pid{os.getpid()}"
    try:
        with open(f"{path}.{who}", "w") as f:
            f.write(error_line(exc_type, exc))
    except OSError:
        pass
