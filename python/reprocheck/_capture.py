"""Capture for `reprocheck run`: PyTorch's global hooks record a training script's tensors, data and
RNG states into a reprocheck dump, written by the C++ core (reprocheck._core). What a model and a
step are, and what is recorded when, in execution order: docs/python.md ("How capture switches on",
"What a run records"). Within a step every record has its own key: a repeated layer, batch or loss
counts its calls.
"""
from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils.data import get_worker_info

from . import _core
from . import _torch_patches as patches
from ._data import Loaders, batch_records, subset_indices
from ._drill import make_drill
from ._models import Model, Models, SelectorError
from ._records import Losses, OutputHashes, Recorder, Row, distributed, json_attribute, provenance
from ._replay import load_replay
from ._rng import RngTracker
from ._shards import describe, describe_flat, is_flat_param, is_sharded, local_tensor
from ._torch_patches import IndexedBatch, call_kwargs, check_torch_version, compiling
from ._util import DTYPES, apply_knobs, report_error, report_process_error, tensors

_STATE_KINDS = ("param", "param_grad", "optim_state", "buffer")


class Session:
    """The capture of one process. `install()` switches its hooks on."""

    @classmethod
    def from_environment(cls) -> Session:
        env = _core.env
        options = json.loads(os.environ.get(env.RUN_OPTIONS) or "{}")
        replay = None
        if os.environ.get(env.REPLAY_KEYS):
            replay = (os.environ[env.REPLAY], os.environ[env.REPLAY_KEYS])
        check_torch_version()
        session = cls(os.environ[env.CAPTURE], options, replay)
        session.install()
        return session

    def __init__(self, path: str, options: dict, replay: tuple | None = None) -> None:
        self.pid = os.getpid()
        self.options = options
        self.steps = int(options.get("steps", 2))
        self.layers = options.get("layers", "default")
        self.ops = bool(options.get("ops", False))
        self.recorder = Recorder(path, bool(options.get("hashes_only", False)), provenance(options, sys.argv),
                                 str(options.get("capture_plan", "")))
        self.lock = threading.RLock()
        self.rng = RngTracker()
        self.loaders = Loaders()
        self.models = Models(self.layers, self.ops)
        self.stack: list[str] = []  # paths of the modules running forward, innermost last
        self.input_hashes: dict[int, list] = {}
        self.calls: dict[Any, int] = {}  # per step: how often a key was recorded
        self.depth = 0
        self.distributed = False  # several ranks: known once the step begins
        self.in_backward = 0  # inside torch.autograd.backward, called through install()'s wrapper
        self.output_hashes = OutputHashes()
        self.grad_hooked: set[int] = set()  # ids of the parameters with a gradient hook
        self.step = 0
        self.step_open = False  # the step's RNG states are recorded
        self.pending_close = False  # an optimizer stepped: the step ends at the next iteration
        self.loader_driven = False  # the loop draws batches from a DataLoader
        self.stepped = False
        self.blocks: int | None = None  # None: record everywhere; else the depth of capture() blocks
        self.finished = False
        self.saw_forward = False
        self.crashed = False
        self.notes: list[str] = []
        self.losses = Losses()
        self.dropout_elements = 0
        self.op_generators: dict[str, str] = {}
        self.shards: dict[str, dict] = {}  # a sharded tensor's name: where its local shard sits
        self.replay = load_replay(*replay) if replay else {}
        self._undo: list = []  # what uninstall() puts back
        self._op_mode: Any = None
        self.drill = make_drill(self, options)
        apply_knobs(options)
        try:
            open(path + ".started", "a").close()
        except OSError:
            pass

    def install(self) -> None:
        """Switches capture on: PyTorch's global hooks, the loss, the DataLoader, the exit."""
        handles = [register_module_forward_pre_hook(self._pre_forward),
                   register_module_forward_hook(self._post_forward, always_call=True),
                   register_optimizer_step_pre_hook(lambda opt, args, kwargs: self._before_optimizer_step(opt)),
                   register_optimizer_step_post_hook(lambda opt, args, kwargs: self.on_optimizer_step(opt))]
        self._undo += [h.remove for h in handles]
        self._undo.append(patches.patch_backward(self._on_backward, self._after_backward))
        self._undo.append(patches.patch_data_loading(self.loaders.on_iter, self.on_next))
        self._undo.append(patches.patch_module_compile(self.compiled_call))
        atexit.register(self._at_exit)
        self._undo.append(lambda: atexit.unregister(self._at_exit))
        self._undo.append(patches.patch_excepthook(self._on_crash))

    def _on_crash(self, exc_type: type, exc: BaseException) -> None:
        self.crashed = True  # the script's own error is the message, not a missing step
        if not issubclass(exc_type, KeyboardInterrupt):
            report_process_error(exc_type, exc)

    def uninstall(self) -> None:
        """Puts back everything install() changed (tests run several sessions in one process)."""
        while self._undo:
            self._undo.pop()()

    def recording(self) -> bool:  # not in a DataLoader worker: a spawned one has a session of its own
        return (os.getpid() == self.pid and not self.finished and (self.blocks is None or self.blocks > 0)
                and get_worker_info() is None)

    def enter_block(self) -> None:
        self.blocks = (self.blocks or 0) + 1

    def leave_block(self) -> None:
        self.blocks = (self.blocks or 1) - 1

    def _count(self, key: Any) -> int:
        n = self.calls.get(key, 0)
        self.calls[key] = n + 1
        return n

    def _write(self, phase: str, layer: str, layer_type: str, kind: str, name: str, t: torch.Tensor, call: int = 0,
               input_hash: int | None = None, step: int | None = None, keep: bool = False,
               defer: bool = False) -> int | None:
        plain = t.__class__ is torch.Tensor  # neither a DTensor nor an FSDP flat parameter
        if not plain and is_sharded(t):
            if kind in _STATE_KINDS:
                key = f"{layer}.{name}" if layer else name
                if key not in self.shards:
                    self.shards[key] = describe(t)
            t = local_tensor(t)
        elif not plain and kind in _STATE_KINDS and is_flat_param(t):
            key = f"{layer}.{name}" if layer else name
            if key not in self.shards:
                self.shards[key] = describe_flat(t)
        dtype = DTYPES.get(t.dtype, "")
        row = Row(self.step if step is None else step, phase, layer, layer_type, kind, name, call, dtype,
                  list(t.shape), input_hash)
        return self.recorder.write(row, t, keep, defer)

    # -- steps ----------------------------------------------------------------------------------

    def _begin_step(self) -> None:
        if self.step_open:
            return
        self.step_open = True
        self.distributed = distributed()
        for s in self.rng.to_record():
            self._write("rng", s.layer, s.type, "rng_state", s.name, s.state)

    def _stop_if_plan_done(self) -> None:
        """Pass 2 ends once its plan's records are written, here (never inside autograd); a
        distributed run (its ranks meet in collectives) or one that drills ends with its step."""
        if not self.recorder.plan_done or self.finished or self.drill.step >= 0 or distributed():
            return
        self._finish()
        sys.stdout.flush()
        raise SystemExit(0)

    def _next_iteration(self) -> None:
        """The loop starts its next iteration: a step an optimizer ended is over."""
        self._stop_if_plan_done()
        if self.pending_close:
            self._close_step(exit_when_done=True)

    def _close_step(self, exit_when_done: bool) -> None:
        self.drill.leave()
        for model in self.models.list:  # the parameters no optimizer stepped (an EMA model's), the buffers
            for kind, named in (("param", model.root.named_parameters()), ("buffer", model.root.named_buffers())):
                for name, t in named:
                    full = model.path(name)
                    if ((kind == "param" and ("after_step", full) in self.calls) or not self.models.owns(full, t, kind)
                            or id(t) in self.models.lazy):
                        continue  # its optimizer's step hook recorded it, another model's name is its, not made yet
                    layer, own, layer_type = self.models.parts(full)
                    self._write("after_step", layer, layer_type, kind, own, t, call=self._count(("after_step", full)),
                                defer=True)
        self.losses.check(self.step)
        self.recorder.flush()
        self.step += 1
        self.calls = {}
        self.output_hashes.clear()
        self.step_open = False
        self.pending_close = False
        if exit_when_done and self.step >= self.steps:
            self._finish()
            sys.stdout.flush()
            raise SystemExit(0)

    def _before_optimizer_step(self, optimizer: Any) -> None:
        """At its first step, each parameter of no model it steps: its value, its gradient, a hook."""
        if not self.models or not self.recording() or compiling():
            return
        for p in (p for group in optimizer.param_groups for p in group["params"]):
            if id(p) not in self.models.param_names and id(p) not in self.models.free:
                layer, name, layer_type = self.models.parts(self.models.free_param(optimizer, p))
                self._write("init", layer, layer_type, "param", name, p, step=-1)
                if p.requires_grad and id(p) not in self.grad_hooked:
                    self.grad_hooked.add(id(p))
                    p.register_post_accumulate_grad_hook(self._on_param_grad)
                    self._on_param_grad(p)

    def on_optimizer_step(self, optimizer: Any) -> None:
        """After an optimizer's step: its parameters and state; the step ends at the next iteration."""
        if not self.models or not self.recording() or compiling():
            return
        self.stepped = True
        for group in optimizer.param_groups:
            for p in group["params"]:
                name = self.models.name_of(p) or self.models.free_param(optimizer, p)
                layer, own, layer_type = self.models.parts(name)
                self._write("after_step", layer, layer_type, "param", own, p, call=self._count(("after_step", name)),
                            defer=True)
                state = optimizer.state.get(p, {})
                for key, value in state.items() if isinstance(state, dict) else ():
                    if isinstance(value, torch.Tensor):
                        self._write("after_step", layer, layer_type, "optim_state", f"{own}.{key}", value,
                                    call=self._count(("optim", name, key)), defer=True)
        self.recorder.settle()
        self.pending_close = True
        self._stop_if_plan_done()

    def mark_step(self) -> None:
        """A step boundary set by the script: parameters and buffers now, and the step ends."""
        if not self.models or not self.recording():
            return
        self.stepped = True
        self._close_step(exit_when_done=True)

    # -- models ---------------------------------------------------------------------------------

    def _model_for(self, module: torch.nn.Module) -> Model | None:
        """The model `module` is the entry of, adopting a new one (its first call)."""
        model = self.models.known(module)
        if model is not None or not self.models.is_new_model(module):
            return model
        try:
            model = self.models.adopt(module)
        except SelectorError as e:
            report_error(str(e))
            os._exit(2)
        self._on_adopted(model)
        return model

    def _on_adopted(self, model: Model) -> None:
        """A new model: gradient hooks on its parameters, its attributes, its initial state."""
        root, a, w = model.root, _core.attr, self.recorder
        w.set_attribute(a.MODEL_SIGNATURE, f"{self.models.signature:016x}")
        if model is self.models.first:
            w.set_attribute(a.MODE, "train" if root.training else "eval")
            device = next(root.parameters()).device
            w.set_attribute(a.DEVICE, str(device) if device.type == "cpu" else f"{device.type}:{device.index or 0}")
        if self.models.categories:
            w.set_attribute(a.LAYER_CATEGORIES, json_attribute(self.models.categories))
        named = list(root.named_parameters()) + list(root.named_buffers())
        self._record_init(model, [(n, t) for n, t in named if id(t) not in self.models.lazy], defer=True)
        w.settle()

    def _record_init(self, model: Model, named: list, defer: bool) -> None:
        """Initial values, and a gradient hook on each parameter (once: a model may absorb another)."""
        for name, t in named:
            layer, _, own = model.path(name).rpartition(".")
            kind = "param" if isinstance(t, torch.nn.Parameter) else "buffer"
            self._write("init", layer, self.models.types.get(layer, ""), kind, own, t, step=-1, defer=defer)
            if kind == "param" and t.requires_grad and id(t) not in self.grad_hooked:
                self.grad_hooked.add(id(t))
                t.register_post_accumulate_grad_hook(self._on_param_grad)

    def _on_materialized(self) -> None:
        """Parameters a lazy module's first call made (nn.LazyLinear): recorded before its output."""
        for model, name, t in self.models.materialized():
            self._record_init(model, [(name, t)], defer=False)
            self.recorder.set_attribute(_core.attr.MODEL_SIGNATURE, f"{self.models.signature:016x}")

    # -- hooks ----------------------------------------------------------------------------------

    def _pre_forward(self, module: torch.nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        if compiling() or os.getpid() != self.pid:
            return None
        model = None
        if self.depth == 0 and self.recording():
            model = self._model_for(module)
            if model is not None:
                self._on_model_call(model, args, call_kwargs(module) if kwargs is None else kwargs)
            elif (self.models and id(module) not in self.models.names and len(args) >= 2
                  and isinstance(args[1], torch.Tensor)):
                # A loss module called with (output, target).
                self._write("input", "", "", "target", "target", args[1], call=self._count("target"))
        self.depth += 1
        path = self.models.names.get(id(module))
        if path is not None:
            self.stack.append(path)
            if id(module) in self.models.tapped and self.recording():
                h = 0
                for _, t in tensors(tuple(args)):
                    h = _core.combine_hash(h, self.output_hashes.input_hash(t))
                self.input_hashes.setdefault(id(module), []).append(h)
        if model is not None and self.ops and not model.compiled:
            from ._ops import OpTap

            self._op_mode = OpTap(self)
            self._op_mode.__enter__()
        return None

    def compiled_call(self, module: torch.nn.Module, call: Any, args: tuple, kwargs: dict) -> Any:
        """A module compiled in place (model.compile()): its boundary, captured eagerly."""
        if compiling():
            return call(*args, **kwargs)
        self._pre_forward(module, args, kwargs)
        output = None
        try:
            output = call(*args, **kwargs)
        finally:
            replaced = self._post_forward(module, args, output)
        return output if replaced is None else replaced

    def _on_model_call(self, model: Model, args: tuple, kwargs: dict) -> None:
        if model is self.models.first and not self.loader_driven:
            self._next_iteration()
        self._begin_step()
        self.drill.start(self.step, model.compiled)
        self.saw_forward = True
        for name, t in tensors(tuple(args), "input") + tensors(kwargs, "input"):
            self._write("input", model.prefix, "", "input", name, t, call=self._count(("input", model.prefix, name)))

    def _post_forward(self, module: torch.nn.Module, args: tuple, output: Any) -> Any:
        if compiling() or os.getpid() != self.pid:
            return None
        self.depth -= 1
        if self.models.lazy:
            self._on_materialized()
        replaced = None
        path = self.models.names.get(id(module))
        if path is not None:
            if self.stack and self.stack[-1] == path:
                self.stack.pop()
            if id(module) in self.models.tapped:
                hashes = self.input_hashes.get(id(module))
                input_hash = hashes.pop() if hashes else None
                if self.recording() and output is not None:
                    replaced = self._on_layer(module, path, output, input_hash)
        if self.depth == 0:
            if self._op_mode is not None:
                self._op_mode.__exit__(None, None, None)
                self._op_mode = None
            model = self.models.known(module)
            if model is not None and self.recording() and output is not None:
                for name, t in tensors(output if replaced is None else replaced, "output"):
                    self._write("output", model.prefix, "", "output", name, t,
                                call=self._count(("output", model.prefix, name)))
                self._stop_if_plan_done()
        return replaced

    def _on_layer(self, module: torch.nn.Module, path: str, output: Any, input_hash: int | None) -> Any:
        call = self._count(("layer", path))
        named = tensors(output)
        layer_type = self.models.types[path]
        if self.models.categories.get(layer_type) == "dropout" and module.training:
            self.dropout_elements += sum(t.numel() for _, t in named)
        replaced = False
        values = []
        for slot, (_, t) in enumerate(named):
            name = "out" if len(named) == 1 else f"out.{slot}"
            ref = self.replay.get(f"{self.step}|forward|{path}|activation|{name}|{call}") if self.replay else None
            if ref is not None:
                with torch.no_grad():
                    t = ref.to(device=t.device, dtype=t.dtype).view(t.shape).requires_grad_(t.requires_grad)
                replaced = True
            values.append(t)
            h = self._write("forward", path, layer_type, "activation", name, t, call, input_hash)
            self.output_hashes.remember(t, h)
            self._hook_grad(t, path, layer_type, name, call)
        if not replaced:
            return None
        if isinstance(output, torch.Tensor):
            return values[0]
        return type(output)(values) if isinstance(output, (tuple, list)) else None

    def _hook_grad(self, t: torch.Tensor, layer: str, layer_type: str, name: str, call: int) -> None:
        if not t.requires_grad:
            return
        step, fired = self.step, [0]

        def on_grad(g: torch.Tensor | None) -> torch.Tensor | None:
            if not self.recording() or g is None:
                return None
            fired[0] += 1  # again (backward through a retained graph, autograd.grad, then backward): out#2
            label = name if fired[0] == 1 else f"{name}#{fired[0]}"
            ref = self.replay.get(f"{step}|backward|{layer}|grad|{label}|{call}") if self.replay else None
            if ref is not None:
                g = ref.to(device=g.device, dtype=g.dtype).view(g.shape)
            self._write("backward", layer, layer_type, "grad", label, g, call, step=step)
            return g if ref is not None else None

        t.register_hook(on_grad)

    def _on_backward(self, tensors_: Any) -> None:
        self.in_backward += 1
        if not self.models or not self.recording() or compiling():
            return
        t = tensors_ if isinstance(tensors_, torch.Tensor) else (tensors_[0] if tensors_ else None)
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            self._write("loss", "", "", "loss", "loss", t, call=self._count("loss"))
            self.losses.add(t)
        self._stop_if_plan_done()

    def _after_backward(self) -> None:
        self.in_backward -= 1
        self.recorder.settle()  # the gradients recorded during backward, before the script sees them

    def _on_param_grad(self, p: torch.Tensor) -> None:
        name = self.models.name_of(p)  # as of now: a model adopted later may rename it
        if name is None or not self.recording() or p.grad is None or compiling():
            return
        layer, own, layer_type = self.models.parts(name)
        call = self._count(("param_grad", name))
        ref = self.replay.get(f"{self.step}|param_grad|{layer}|param_grad|{own}|{call}") if self.replay else None
        if ref is not None:
            grad = local_tensor(p.grad)
            with torch.no_grad():
                grad.copy_(ref.to(device=grad.device, dtype=grad.dtype).view(grad.shape))
        # Until backward returns (one that install()'s wrapper sees), only autograd touches the
        # gradient: it can wait for settle(). A distributed run's gradients are reduced in place.
        self._write("param_grad", layer, layer_type, "param_grad", own, p.grad, call,
                    defer=self.in_backward > 0 and not self.distributed)

    # -- data -----------------------------------------------------------------------------------

    def on_next(self, iterator: Any, fetch: Any) -> Any:
        """A DataLoader iterator's next(): the batch, recorded with its dataset indices."""
        recording = self.recording()
        if recording:
            self.loader_driven = True
            self._next_iteration()
        out = fetch()
        indices = None
        if isinstance(out, IndexedBatch):
            indices, out = out.indices, out.data
        if recording:
            self._on_batch(iterator, indices, out)
        return out

    def _announce_loaders(self) -> None:
        while self.loaders.new:
            layer, loader = self.loaders.new.pop(0)
            for name, g in self.loaders.generators(loader):
                self.rng.add_generator(layer, name, g)
            split = subset_indices(getattr(loader, "dataset", None))
            if split is not None:
                self._write("input", layer, "torch.utils.data.Subset", "indices", "split",
                            torch.tensor(split, dtype=torch.int64), call=self._count(("split", layer)))
            self.recorder.set_attribute(_core.attr.DATA_LOADERS, json_attribute(self.loaders.descriptions))

    def _on_batch(self, iterator: Any, indices: list | None, batch: Any) -> None:
        self._announce_loaders()
        layer = self.loaders.layer_of(iterator)
        call = self._count(("batch", layer))
        for kind, name, t in batch_records(indices, batch):
            self._write("input", layer, "torch.utils.data.DataLoader", kind, name, t, call)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if not self.recorder.opened:
            return
        w = self.recorder
        w.set_run_attributes(self.options, self.step, self.dropout_elements, self.losses.nonfinite_steps,
                             self.op_generators, self.shards)
        # The leaf fallback as the run ends: a model adopted later may absorb the one that had it.
        w.commit(self.models.notes + self.notes + self.drill.finish(w), self.models.leaf_fallback)

    def _at_exit(self) -> None:
        if os.getpid() != self.pid or self.finished:
            return
        if self.saw_forward and not self.stepped and not self.crashed:
            self.finished = True
            report_error(f"'{' '.join(sys.argv)}' ran the model but never called optimizer.step(): reprocheck "
                         "compares training steps; call a torch.optim optimizer's step(), or reprocheck.mark_step() "
                         "at the end of each step")
            os._exit(2)
        if self.pending_close:
            self._close_step(exit_when_done=False)
        if self.recorder.opened and self.step < self.steps:
            self.notes.append(f"the script ended after {self.step} of {self.steps} step(s)")
        self._finish()
