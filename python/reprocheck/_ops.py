"""--ops for training scripts: every torch function the model's forward calls."""
import torch

from ._util import _UNINITIALIZED, _tensors


class _OpTap(torch.overrides.TorchFunctionMode):
    """--ops: records the output of every torch function the model's forward calls, named
    'module.path:function#k' (k counts the calls within that module's call)."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        s = self.session
        name = getattr(func, "__name__", None) or str(func)
        if not s.recording() or name in _UNINITIALIZED or name.startswith("__") and name != "__getitem__":
            return out
        outputs = _tensors(out)
        if not outputs or any(t is a for _, t in outputs for a in args if isinstance(a, torch.Tensor)):
            return out  # an alias of an input (a no-op .to(), a view of itself): not a new value
        path = s.stack[-1] if s.stack else ""
        k = s._count(("op", path))
        layer = f"{path}:{name}#{k}" if path else f"{name}#{k}"
        for slot, (_, t) in enumerate(outputs):
            own = "out" if len(outputs) == 1 else f"out.{slot}"
            s._write("forward", layer, name, "activation", own, t)
            s._hook_grad(t, layer, name, own, 0)
        return out
