"""Pass 3, the drill-down, for training scripts: every ATen op of one step, forward and backward,
with the line of the script that called it.

A `TorchDispatchMode` sees each ATen op below autograd, the backward's too; a `TorchFunctionMode`
above autograd tags each forward call's autograd node with its module and source line, so that a
backward op is named after the forward call it differentiates. Records are named
'module.path:aten::op#k' (k counts that op's calls in that module in the step); the dump's
`op_sources` attribute maps each name to its op, module, file, line and stack."""
from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import _core
from ._records import json_attribute
from ._util import UNINITIALIZED, hashable, tensors

_OWN_DIRS = (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(os.path.abspath(__file__)) + os.sep)
_TAG = "reprocheck"
# Unnamed results of backward ops, by what they are the gradient of.
_RESULT_NAMES = {
    "aten::convolution_backward": ("grad_input", "grad_weight", "grad_bias"),
    "aten::native_batch_norm_backward": ("grad_input", "grad_weight", "grad_bias"),
    "aten::native_layer_norm_backward": ("grad_input", "grad_weight", "grad_bias"),
    "aten::native_group_norm_backward": ("grad_input", "grad_weight", "grad_bias"),
}
_STACK_DEPTH = 8
# In-place ops that overwrite their tensor without reading it.
_OVERWRITES = {"bernoulli_", "uniform_", "normal_", "random_", "exponential_", "geometric_", "cauchy_",
               "log_normal_", "fill_", "zero_", "copy_", "set_", "resize_", "resize_as_"}
# reprocheck's functions that call into the user's work (loss.backward() goes through the wrapper).
_ENTRY_POINTS = {"backward", "compiled_call"}


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def user_stack() -> list[tuple[str, int, str]] | None:
    """The calling frames of the user's code, innermost first: not torch's, not reprocheck's. None
    when reprocheck's own code made the call (recording a tensor), except its `backward` wrapper."""
    out: list[tuple[str, int, str]] = []
    f: Any = sys._getframe(1)
    while f is not None and len(out) < _STACK_DEPTH:
        name = f.f_code.co_filename
        if name.startswith(_OWN_DIRS[1]) and not out and f.f_code.co_name not in _ENTRY_POINTS:
            if not name.endswith("_drill.py"):
                return None
        elif not name.startswith("<") and not name.startswith(_OWN_DIRS):
            out.append((_short(name), f.f_lineno, f.f_code.co_name))
        f = f.f_back
    return out


def _is_view(func: Any) -> bool:
    """An op whose results alias its inputs without writing them (a view): not a new value."""
    return any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)


def _metadata(node: Any) -> dict:
    """An autograd node's metadata dict (a property at run time)."""
    meta: dict = node.metadata
    return meta


def call_name(func: Any) -> str:
    """The name of a torch function as the script calls it: 'reprocheck_zoo::racy_scatter_add',
    'torch.nn.functional.dropout', 'Tensor.add'."""
    qualified = getattr(func, "_qualified_op_name", None)
    if qualified:
        return str(qualified)
    name = getattr(func, "__name__", None) or str(func)
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else f"Tensor.{name}"


def _generator(args: tuple, kwargs: dict) -> str:
    g = kwargs.get("generator")
    if g is None:
        g = next((a for a in args if isinstance(a, torch.Generator)), None)
    return "private" if isinstance(g, torch.Generator) and g is not torch.default_generator else "global"


class _Tagger(TorchFunctionMode):
    """Above autograd: each forward call's autograd node is tagged with its module and stack."""

    def __init__(self, drill: Drill) -> None:
        super().__init__()
        self.drill = drill

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        self.drill.calls.append(func)
        try:
            out = func(*args, **(kwargs or {}))
        finally:
            self.drill.calls.pop()
        if self.drill.active:
            site = None
            for _, t in tensors(out):
                node = t.grad_fn
                if node is not None and _TAG not in _metadata(node):
                    site = site or (self.drill.module(), user_stack() or [])
                    _metadata(node)[_TAG] = site
        return out


class _Ops(TorchDispatchMode):
    """Below autograd: every ATen op's results, forward and backward."""

    def __init__(self, drill: Drill) -> None:
        super().__init__()
        self.drill = drill

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        before = self.drill.input_hash(func, args, kwargs) if self.drill.active else None
        out = func(*args, **kwargs)
        if self.drill.active:
            self.drill.on_op(func, args, kwargs, out, before)
        return out


class Drill:
    """The drill-down of one step: entered when the step begins, left when it ends."""

    def __init__(self, session: Any, step: int, scope: str) -> None:
        self.session = session
        self.step = step
        self.scope = scope
        self.active = False
        self.sources: dict[str, dict] = {}
        self.ops = 0
        self.failed = ""
        self.backward_seen = False
        self.calls: list = []  # the torch functions the script is in (the outermost first)
        self._modes: list = []

    def enter(self) -> None:
        if self._modes:
            return
        self._modes = [_Tagger(self), _Ops(self)]
        for m in self._modes:
            m.__enter__()
        self.active = True

    def leave(self) -> None:
        self.active = False
        while self._modes:
            self._modes.pop().__exit__(None, None, None)

    def module(self) -> str:
        stack = self.session.stack
        return stack[-1] if stack else ""

    def in_scope(self, module: str) -> bool:
        return not self.scope or module == self.scope or module.startswith(self.scope + ".")

    def input_hash(self, func: Any, args: tuple, kwargs: dict) -> int | None:
        """The hash of the arguments an op reads, as it is called: its tensors and numbers, so that an
        input no captured op made (torch.from_numpy, a learning rate from the clock) is compared too.
        What it only writes is left out: an out= tensor, and the tensor that a fill (bernoulli_,
        zero_, copy_) overwrites, which holds whatever memory held; add_ and div_ read theirs."""
        schema = func._schema
        name = schema.name.split("::")[-1]
        if name in UNINITIALIZED or _is_view(func) or not self.session.recording():
            return None
        if self.scope and torch._C._current_autograd_node() is None and not self.in_scope(self.module()):
            return None  # a forward op outside the drill's module: not recorded
        fills = name in _OVERWRITES
        written = {a.name for a in schema.arguments
                   if a.alias_info is not None and a.alias_info.is_write and (a.kwarg_only or fills)}
        read = [v for a, v in zip(schema.arguments, args) if a.name not in written]
        read += [v for k, v in kwargs.items() if k not in written]
        h = _core.hash_bytes(repr([v for v in read if isinstance(v, (bool, int, float))]).encode())
        try:
            for _, t in tensors(read):
                h = _core.combine_hash(h, _core.hash_bytes(hashable(t)))
        except Exception:  # a tensor numpy cannot hold (quantized, sparse, a subclass): no hash, no failure
            return None
        return h

    def on_op(self, func: Any, args: tuple, kwargs: dict, out: Any, input_hash: int | None = None) -> None:
        s = self.session
        op = func._schema.name
        if not s.recording() or op.split("::")[-1] in UNINITIALIZED or _is_view(func):
            return
        # Results by their position in the op's schema (convolution_backward returns None for an
        # input that needs no gradient).
        results = list(out) if isinstance(out, (tuple, list)) else [out]
        outputs = [(slot, t) for slot, t in enumerate(results) if isinstance(t, torch.Tensor)]
        if not outputs:
            return
        try:
            caller = user_stack()
            if caller is None:
                return  # reprocheck recording a tensor
            node = torch._C._current_autograd_node()
            backward = node is not None
            site = "call"
            if backward:
                self.backward_seen = True
                module, stack = _metadata(node).get(_TAG, ("", []))
                site = "forward"  # the line of the forward call it differentiates
                if caller and caller[0][2] == "backward":  # a torch.autograd.Function's own backward
                    stack, site = caller, "call"
            else:
                module, stack = self.module(), caller
            if not self.in_scope(module):
                return
            # Outside a module after a backward: the optimizer's update.
            phase = "backward" if backward else "forward" if s.stack or not self.backward_seen else "after_step"
            k = s._count(("drill", phase, module, op))
            layer = f"{module}:{op}#{k}" if module else f"{op}#{k}"
            names = _RESULT_NAMES.get(op)
            for slot, t in outputs:
                own = names[slot] if names and slot < len(names) else ("out" if len(results) == 1 else f"out.{slot}")
                s._write(phase, layer, op, "grad" if backward else "activation", own, t, keep=True,
                         input_hash=input_hash)
            self.ops += 1
            source: dict[str, Any] = {"op": op, "module": module, "phase": phase, "site": site,
                                      "generator": _generator(args, kwargs),
                                      "stack": [f"{f}:{line} in {fn}" for f, line, fn in stack]}
            if stack:
                source["file"], source["line"] = stack[0][0], stack[0][1]
            if self.calls and not backward:
                source["within"] = call_name(self.calls[0])
            if backward:
                source["node"] = node.name()
            self.sources[layer] = source
        except Exception as e:  # the drill-down must never break the script it watches
            self.failed = self.failed or f"{type(e).__name__}: {e}"

    def start(self, step: int, compiled: bool) -> None:
        """A model's first call in a step: the drill step's ops are captured from here on."""
        if step != self.step or self.active:
            return
        if compiled:
            self.failed = self.failed or "the model is compiled (torch.compile): its ops run in generated code"
            return
        self.enter()

    def finish(self, writer: Any) -> list[str]:
        """The dump's `op_sources` attribute; the notes of a drill-down that could not run."""
        self.leave()
        if self.step < 0:
            return []
        writer.set_attribute(_core.attr.OP_SOURCES, json_attribute({"step": self.step, "scope": self.scope,
                                                                     "ops": self.sources}))
        return [f"drill-down: {self.failed}"] if self.failed else []


def make_drill(session: Any, options: dict) -> Drill:
    """The drill-down the run options ask for: of step `drill_step` (-1: none, and it does nothing)."""
    return Drill(session, int(options.get("drill_step", -1)), str(options.get("drill_scope", "")))
