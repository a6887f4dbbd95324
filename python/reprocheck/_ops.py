"""--ops for training scripts: every torch function the model's forward calls."""
from __future__ import annotations

from typing import Any

import torch

from ._util import UNINITIALIZED, tensors


class OpTap(torch.overrides.TorchFunctionMode):
    """--ops: records the output of every torch function the model's forward calls, named
    'module.path:function#k' (k counts the calls within that module's call). A random function
    called with a generator of the script's own is noted as such (the dump's `op_generators`)."""

    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        s = self.session
        name = getattr(func, "__name__", None) or str(func)
        if not s.recording() or name in UNINITIALIZED or name.startswith("__") and name != "__getitem__":
            return out
        outputs = tensors(out)
        if not outputs or any(t is a for _, t in outputs for a in args if isinstance(a, torch.Tensor)):
            return out  # an alias of an input (a no-op .to(), a view of itself): not a new value
        path = s.stack[-1] if s.stack else ""
        k = s._count(("op", path))
        layer = f"{path}:{name}#{k}" if path else f"{name}#{k}"
        generator = kwargs.get("generator")
        if isinstance(generator, torch.Generator) and generator is not torch.default_generator:
            s.op_generators[layer] = "private"
        for slot, (_, t) in enumerate(outputs):
            own = "out" if len(outputs) == 1 else f"out.{slot}"
            s._write("forward", layer, name, "activation", own, t)
            s._hook_grad(t, layer, name, own, 0)
        return out
