"""Helpers of the capture: dtypes, tensors of nested values, the DataLoader batch wrapper, the run
options that reach the script before it runs."""
import os
import sys

import torch

_DTYPES = {
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
_UNINITIALIZED = {"empty", "empty_like", "new_empty", "empty_strided", "new_empty_strided"}


def _host_array(t):
    """The tensor's bytes as a contiguous numpy array on the CPU (bfloat16 as its 16-bit pattern)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.resolve_conj().resolve_neg().contiguous().numpy()


_HASH_STRIDE = 0x3C6EF372FE94F82A


def _device_hash(t):
    """hash_words of a tensor's bytes, computed where the tensor lives (docs/dump-format.md): the
    bytes as little-endian 32-bit words w_i, sum_i w_i * (i * K + 1) + nbytes mod 2^64, with integer
    ops only, so the value does not depend on reduction order. A 0-dim int64 tensor on t's device."""
    with torch.no_grad():
        b = t.detach().contiguous().reshape(-1).view(torch.uint8)
        n = b.numel()
        if n % 4:
            b = torch.cat([b, torch.zeros(4 - n % 4, dtype=torch.uint8, device=b.device)])
        words = b.view(torch.int32).to(torch.int64).bitwise_and_(0xFFFFFFFF)
        odd = torch.arange(words.numel(), dtype=torch.int64, device=b.device).mul_(_HASH_STRIDE).add_(1)
        return words.mul_(odd).sum().add_(n)


def _type_name(module):
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _tensors(value, prefix=""):
    """(name, tensor) pairs of a tensor, or of the tensors in a tuple, list or dict (one level deep
    for names: batch[0], batch['image'])."""
    if isinstance(value, torch.Tensor):
        return [(prefix, value)]
    out = []
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            out += _tensors(v, f"{prefix}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            out += _tensors(v, f"{prefix}[{k!r}]")
    return out


def _unwrap(module):
    """The model inside a DistributedDataParallel or DataParallel wrapper."""
    inner = getattr(module, "module", None)
    if isinstance(inner, torch.nn.Module) and type(module).__name__ in ("DistributedDataParallel", "DataParallel"):
        return inner
    return module


class _IndexedBatch:
    """A DataLoader batch with the dataset indices it was made from, from the fetcher (in the
    worker process, when there are workers) to the iterator in the main process."""

    __slots__ = ("indices", "data")

    def __init__(self, indices, data):
        self.indices = indices
        self.data = data

    def pin_memory(self, *args):
        from torch.utils.data._utils.pin_memory import pin_memory

        return _IndexedBatch(self.indices, pin_memory(self.data))


def _apply_knobs(options):
    threads = int(options.get("threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    deterministic = options.get("deterministic", "off")
    if deterministic in ("on", "warn"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=deterministic == "warn")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    if options.get("benchmark"):
        torch.backends.cudnn.benchmark = True


def _report_error(message):
    sys.stderr.write(f"reprocheck: error: {message}\n")
    path = os.environ.get("REPROCHECK_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            f.write(message)
