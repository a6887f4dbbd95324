"""The models a training script trains: which modules are models, how their layers are named, what
each layer is (its category), and which layers are tapped."""
from __future__ import annotations

import torch
from torch.nn.parameter import is_lazy

from . import _core
from ._torch_patches import built_by_owner, forward_owner, is_compiled_module
from ._util import layer_category, type_name, unwrap, variable_name


class SelectorError(ValueError):
    """A --layers selector the model cannot take (one line, naming the choices)."""


class Model:
    """One model the script trains: what the script calls (`entry`) and the module inside."""

    def __init__(self, prefix: str, entry: torch.nn.Module, root: torch.nn.Module) -> None:
        self.prefix = prefix
        self.entry = entry
        self.root = root
        self.compiled = is_compiled_module(entry)
        self.fallback = False  # no conv, dropout or batch norm: its leaf layers are tapped

    def path(self, inner: str) -> str:
        if not self.prefix:
            return inner
        return f"{self.prefix}.{inner}" if inner else self.prefix


class Models:
    """Every model adopted so far, and what is known of their modules and parameters."""

    def __init__(self, layers: str, ops: bool) -> None:
        self.layers = layers
        self.ops = ops
        self.list: list[Model] = []
        self.by_entry: dict[int, Model] = {}
        self.names: dict[int, str] = {}  # id(module) -> path
        self.types: dict[str, str] = {}  # path -> qualified type
        self.categories: dict[str, str] = {}  # qualified type -> category
        self.tapped: set[int] = set()
        self.param_names: dict[int, str] = {}  # id(parameter) -> path.name (of the model adopted last)
        self.buffer_names: dict[int, str] = {}  # id(buffer) -> path.name (of the model adopted last)
        self.free: dict[int, str] = {}  # id(parameter) of no model -> free_param()
        self.name_parts: dict[str, tuple[str, str, str]] = {}  # path.name -> (path, name, type of path)
        self.signature = 0
        self.notes: list[str] = []
        self.leaf_fallback = False
        # A lazy module's parameters and buffers (nn.LazyLinear's) until its first call makes them:
        # id -> (model, name in its root, tensor).
        self.lazy: dict[int, tuple[Model, str, torch.Tensor]] = {}

    def __bool__(self) -> bool:
        return bool(self.list)

    @property
    def first(self) -> Model:
        return self.list[0]

    def parts(self, name: str) -> tuple[str, str, str]:
        """A parameter's or buffer's layer, own name and layer type from its full name (the same
        names every step: split once)."""
        parts = self.name_parts.get(name)
        if parts is None:
            layer, _, own = name.rpartition(".")
            parts = self.name_parts[name] = (layer, own, self.types.get(layer, ""))
        return parts

    def known(self, module: torch.nn.Module) -> Model | None:
        """The model `module` is the entry of; None for any other module."""
        return self.by_entry.get(id(module))

    def is_new_model(self, module: torch.nn.Module) -> bool:
        """A module with parameters that is no model yet and no layer of one, nor a part of a module
        being made (a shape probe in its __init__) or torch computing a parametrized weight."""
        if id(module) in self.by_entry or id(module) in self.names:
            return False
        if isinstance(module, torch.nn.utils.parametrize.ParametrizationList):  # spectral_norm, weight_norm
            return False
        return any(True for _ in module.parameters()) and not built_by_owner(module)

    def adopt(self, entry: torch.nn.Module) -> Model:
        """Adopts a new model: names its layers, selects the tapped ones. Raises SelectorError."""
        direct = forward_owner(entry)  # model.forward(x): entry is one of its layers
        root = unwrap(entry)
        model = Model(self._prefix(entry, root), entry, root)
        modules = list(root.named_modules())
        self._absorb(model, {id(m) for _, m in modules})
        self.by_entry[id(entry)] = model
        refs = []
        for path, m in modules:
            full = model.path(path)
            self.names[id(m)] = full
            self.types[full] = type_name(m)
            category = layer_category(m)
            if category:
                self.categories[type_name(m)] = category
            leaf = not any(True for _ in m.children()) and any(True for _ in m.parameters(recurse=False))
            refs.append((full, type_name(m), category, leaf))
        self._select(model, modules, refs)
        if direct:  # not a model without conv, dropout or batch norm: a layer run as a model
            model.fallback = False
            if direct not in self.notes:
                self.notes.append(direct)
        self.leaf_fallback = self.list[0].fallback  # "the model has no conv, ...": the first one
        for names, named in ((self.param_names, root.named_parameters()), (self.buffer_names, root.named_buffers())):
            for name, t in named:
                names[id(t)] = model.path(name)
                if is_lazy(t):
                    self.lazy[id(t)] = (model, name, t)
        for full, tname, _, _ in refs:
            self.signature = _core.combine_hash(self.signature, _core.hash_bytes(f"{full}|{tname}".encode()))
        for name, p in root.named_parameters():
            self._sign(model.path(name), p)
        return model

    def _sign(self, full: str, p: torch.Tensor) -> None:
        shape = "lazy" if is_lazy(p) else list(p.shape)
        self.signature = _core.combine_hash(self.signature, _core.hash_bytes(f"{full}{shape}".encode()))

    def materialized(self) -> list[tuple[Model, str, torch.Tensor]]:
        """The lazy parameters and buffers that their module's first call has made since the last
        call (their shapes join the signature): (model, name in its root, tensor)."""
        done = [entry for entry in self.lazy.values() if not is_lazy(entry[2])]
        for model, name, t in done:
            del self.lazy[id(t)]
            if isinstance(t, torch.nn.Parameter):
                self._sign(model.path(name), t)
        return done

    def _absorb(self, model: Model, inner: set[int]) -> None:
        """Adds `model`. Earlier models that are parts of it (`features(x)` run once before the model
        around it was made, the module inside a DDP or torch.compile wrapper called bare) become its
        layers: it takes the place of the first of them (the first model drives the steps) and its
        own layer selection replaces theirs."""
        parts = [m for m in self.list if id(m.root) in inner]
        for old in parts:
            self.by_entry.pop(id(old.entry), None)
            self.tapped -= {id(m) for m in old.root.modules()}
        at = self.list.index(parts[0]) if parts else len(self.list)
        self.list = [m for m in self.list if m not in parts]
        self.list.insert(at, model)

    def free_param(self, optimizer: torch.optim.Optimizer, p: torch.Tensor) -> str:
        """The full name of a parameter an optimizer steps that no model holds (SAC's log_alpha, a
        prompt tuned against a frozen model): the optimizer's variable as its layer (its type the
        layer's type), the parameter's variable ('alpha_opt.log_alpha') or its place among the
        optimizer's ('optimizer.param3'). parts() splits it."""
        name = self.free.get(id(p))
        if name is None:
            index = next(i for i, q in enumerate(q for g in optimizer.param_groups for q in g["params"]) if q is p)
            layer, own = variable_name(optimizer) or type(optimizer).__name__, variable_name(p) or f"param{index}"
            name = self.free[id(p)] = f"{layer}.{own}"
            self.name_parts[name] = (layer, own, type_name(optimizer))
        return name

    def name_of(self, p: torch.Tensor) -> str | None:
        """A parameter's full name: its model's, or as free_param() named it; None if neither."""
        return self.param_names.get(id(p)) or self.free.get(id(p))

    def owns(self, full: str, t: torch.Tensor, kind: str) -> bool:
        """`full` is the name of parameter or buffer `t` (a tensor that two models share is named by
        the one adopted last, and recorded under that name only)."""
        names = self.param_names if kind == "param" else self.buffer_names
        return names.get(id(t), full) == full

    def _prefix(self, entry: torch.nn.Module, root: torch.nn.Module) -> str:
        """"" for the first model; the script's variable (or class) name for the others."""
        if not self.list:
            return ""
        base = variable_name(entry, root) or type(root).__name__
        prefix, k = base, 2
        while any(m.prefix == prefix for m in self.list) or prefix in self.types:
            prefix, k = f"{base}{k}", k + 1
        return prefix

    def _select(self, model: Model, modules: list, refs: list) -> None:
        try:
            selected = _core.select_layers(self.layers, refs)
        except _core.Error as e:
            raise SelectorError(str(e)) from None
        if self.layers == "default" and not any(selected):
            # No conv, dropout or batch norm (an LSTM, a transformer): every leaf layer.
            selected = [i > 0 and not any(True for _ in m.children()) for i, (_, m) in enumerate(modules)]
            model.fallback = True
        elif note := _core.sparse_selection_note(self.layers, refs, selected):
            self.notes.append(note)
        if model.compiled:
            self.notes.append(
                f"{model.prefix or 'the model'} is compiled (torch.compile): its inputs, output, loss, parameters and "
                "gradients are compared, its inner layers are not tapped, so that the compiler builds the program "
                "the script runs" + (" (--ops does not reach inside it either)" if self.ops else ""))
            return
        self.tapped |= {id(m) for (_, m), s in zip(modules, selected) if s}
