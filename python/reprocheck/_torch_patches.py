"""The private torch internals the capture depends on, patched in one place.

Each patch checks that the feature it relies on exists before it changes anything, and fails with
one clear line naming the torch version when it does not. The supported range is declared here and
checked at start-up.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any, Callable

import torch

# The torch releases whose DataLoader and hook internals this package was written and tested against.
SUPPORTED_TORCH = ((2, 4), (2, 12))  # >= 2.4, < 2.12


class UnsupportedTorch(RuntimeError):
    """torch lacks a feature the capture needs (one line: what, which version, what to do)."""


def torch_version() -> tuple[int, int]:
    parts = torch.__version__.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def check_torch_version() -> None:
    low, high = SUPPORTED_TORCH
    v = torch_version()
    if not (low <= v < high):
        raise UnsupportedTorch(
            f"torch {torch.__version__} is outside the range this capture package supports "
            f"(>= {low[0]}.{low[1]}, < {high[0]}.{high[1]}); install a torch in that range, or a reprocheck "
            "built for this torch"
        )


def _require(owner: Any, name: str, what: str) -> Any:
    value = getattr(owner, name, None)
    if value is None:
        raise UnsupportedTorch(
            f"torch {torch.__version__} has no {what} ({getattr(owner, '__name__', owner)}.{name}), which the capture "
            "needs to record DataLoader batches; use a torch in the supported range"
        )
    return value


class IndexedBatch:
    """A DataLoader batch with the dataset indices it was made from, carried from the fetcher (in
    the worker process, when there are workers) to the iterator in the main process."""

    __slots__ = ("indices", "data")

    def __init__(self, indices: list | None, data: Any) -> None:
        self.indices = indices
        self.data = data

    def pin_memory(self, *args: Any) -> IndexedBatch:
        from torch.utils.data._utils.pin_memory import pin_memory

        return IndexedBatch(self.indices, pin_memory(self.data))


def patch_data_loading(
    on_iter: Callable[[Any, Any], None], on_next: Callable[[Any, Callable[[], Any]], Any]
) -> Callable[[], None]:
    """Makes every map-style DataLoader batch carry its dataset indices (an IndexedBatch), hands
    each `next()` of a DataLoader iterator to `on_next(iterator, fetch)` (which calls `fetch()` and
    returns the batch the script gets), and tells `on_iter(loader, iterator)` of every iterator a
    DataLoader makes. Returns what undoes it."""
    from torch.utils.data import dataloader
    from torch.utils.data._utils import fetch

    fetcher = _require(fetch, "_MapDatasetFetcher", "map-style dataset fetcher")
    original_fetch = _require(fetcher, "fetch", "fetcher method")
    iterator_base = _require(dataloader, "_BaseDataLoaderIter", "DataLoader iterator base class")
    original_next = _require(iterator_base, "__next__", "iterator method")
    original_iter = dataloader.DataLoader.__iter__

    def fetch_with_indices(self: Any, possibly_batched_index: Any) -> IndexedBatch:
        data = original_fetch(self, possibly_batched_index)
        index = possibly_batched_index
        indices = list(index) if isinstance(index, (list, tuple, range)) else [index]
        return IndexedBatch(indices if all(isinstance(i, int) for i in indices) else None, data)

    def next_batch(iterator: Any) -> Any:
        return on_next(iterator, lambda: original_next(iterator))

    def iterate(loader: Any) -> Any:
        iterator = original_iter(loader)
        on_iter(loader, iterator)
        return iterator

    fetcher.fetch = fetch_with_indices
    iterator_base.__next__ = next_batch
    dataloader.DataLoader.__iter__ = iterate  # type: ignore[method-assign]

    def undo() -> None:
        fetcher.fetch = original_fetch
        iterator_base.__next__ = original_next
        dataloader.DataLoader.__iter__ = original_iter  # type: ignore[method-assign]

    return undo


def patch_backward(before: Callable[[Any], None], after: Callable[[], None]) -> Callable[[], None]:
    """Calls `before(tensors)` as torch.autograd.backward starts (Tensor.backward too), and `after()`
    once it has returned or raised. Returns what undoes it."""
    original = torch.autograd.backward

    def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            before(tensors)
            return original(tensors, *args, **kwargs)
        finally:
            after()

    torch.autograd.backward = backward
    return lambda: setattr(torch.autograd, "backward", original)


def patch_excepthook(on_crash: Callable[[type, BaseException], None]) -> Callable[[], None]:
    """Calls `on_crash(type, exception)` for an exception that ends the script, before Python's own
    report of it. Returns what undoes it."""
    original = sys.excepthook

    def excepthook(*exc: Any) -> None:
        on_crash(exc[0], exc[1])
        original(*exc)

    sys.excepthook = excepthook
    return lambda: setattr(sys, "excepthook", original)


def patch_module_compile(
    boundary: Callable[[torch.nn.Module, Callable[..., Any], tuple, dict], Any]
) -> Callable[[], None]:
    """`model.compile()` compiles the module's own call, global hooks included, so the capture
    would never see the module. After it, the compiled call is wrapped: `boundary(module, call,
    args, kwargs)` runs eagerly around it. Returns what undoes it."""
    original = getattr(torch.nn.Module, "compile", None)
    if original is None:
        return lambda: None  # a torch without Module.compile: nothing to wrap

    def compile(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        inner = getattr(self, "_compiled_call_impl", None)
        if inner is None:
            return

        def call(*a: Any, **k: Any) -> Any:
            return boundary(self, inner, a, k)

        self._compiled_call_impl = call

    torch.nn.Module.compile = compile  # type: ignore[method-assign]

    def undo() -> None:
        torch.nn.Module.compile = original  # type: ignore[method-assign]

    return undo


def loader_workers(iterator: Any) -> int:
    return int(getattr(iterator, "_num_workers", 0) or 0)


def is_compiled_module(module: torch.nn.Module) -> bool:
    """A module made by torch.compile (it runs its inner module as compiled code)."""
    return (type(module).__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")) or getattr(
        module, "_compiled_call_impl", None) is not None


def compiling() -> bool:
    """True while torch.compile traces: hooks then return at once, so the compiler builds the
    program the script runs, not one with the capture inside it."""
    compiler = getattr(torch, "compiler", None)
    is_compiling = getattr(compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling else False


def call_kwargs(module: torch.nn.Module) -> dict:
    """The keyword arguments of the call of `module` that a global forward pre-hook runs in (torch
    hands such a hook the positional ones only; `model(**batch)` passes them all by keyword): read
    from the frame of Module._call_impl that calls the hook. {} where no such frame is found."""
    frame: FrameType | None = sys._getframe(2)  # this function's caller is the hook; the hook's, torch's
    for _ in range(3):
        if frame is None:
            break
        local = frame.f_locals
        if local.get("self") is module and isinstance(local.get("kwargs"), dict):
            return local["kwargs"]
        frame = frame.f_back
    return {}


def _holders(module: torch.nn.Module, method: str) -> Iterator[tuple[torch.nn.Module, FrameType]]:
    """The modules, innermost first, that hold `module` and run `method` ("__init__", "forward") on
    the call stack, each with the frame of that method."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(64):
        if frame is None:
            return
        code = frame.f_code
        owner = frame.f_locals.get(code.co_varnames[0]) if code.co_name == method and code.co_argcount else None
        try:
            if isinstance(owner, torch.nn.Module) and owner is not module and any(m is module for m in owner.modules()):
                yield owner, frame
        except AttributeError:  # an owner before its Module.__init__ ran
            pass
        frame = frame.f_back


def built_by_owner(module: torch.nn.Module) -> bool:
    """`module` runs inside the __init__ of a module that already holds it: a shape probe
    (`n = self.features(torch.zeros(1, 3, 32, 32)).numel()` while the model is made), not the model
    the script trains."""
    return next(_holders(module, "__init__"), None) is not None


def forward_owner(module: torch.nn.Module) -> str | None:
    """`model.forward(x)` in place of `model(x)`: a module whose forward() runs without its call,
    so PyTorch's module hooks see its layers called one by one, each as if it were a model. When
    `module` is a layer of such a module (the outermost on the stack), says so in a capture note's
    words (the call's variable, file and line); None otherwise."""
    holders = list(_holders(module, "forward"))
    if not holders:
        return None
    owner, frame = holders[-1]
    caller = frame.f_back
    name, where = type(owner).__name__, "the script"
    if caller is not None:
        where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
        name = next((k for scope in (caller.f_locals, caller.f_globals) for k, v in scope.items()
                     if v is owner and k.isidentifier() and not k.startswith("_")), name)
    return (f"{name}.forward(...) runs the model at {where} without calling it, so PyTorch's module hooks do not "
            f"see it: each of its layers was recorded as a model of its own, its input and output not at all; call "
            f"{name}(...) instead of {name}.forward(...) for its layers' records")
