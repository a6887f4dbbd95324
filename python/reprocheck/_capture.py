"""Capture for `reprocheck run`: PyTorch's global hooks record a training script's tensors, data and
RNG states into a reprocheck dump, written by the C++ core (reprocheck._core).

What is recorded, in execution order (docs/python.md):
  - each DataLoader batch: its dataset indices and its tensors (phase input);
  - at the first forward of the model: its parameters and buffers (phase init, step -1);
  - at the start of every step: the RNG states of torch, CUDA, numpy and random (phase rng);
  - the model's inputs, the tapped layers' outputs with the hashes of their inputs, the model's
    output, the loss function's target and the loss;
  - gradients of the tapped outputs and of the parameters, as autograd produces them;
  - after every optimizer step: parameters, buffers and the optimizer's state.
The model is the top-level module with parameters that the script calls; layers are named from
its named_modules(). After `steps` optimizer steps the dump is written and the process exits 0.
"""
import atexit
import json
import os
import platform
import random
import socket
import sys
import threading
import time

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_post_hook

from . import _core
from ._util import _DTYPES, _IndexedBatch, _apply_knobs, _device_hash, _host_array, _report_error, _tensors, _type_name, _unwrap

class Session:
    """The capture of one process."""

    @classmethod
    def from_environment(cls):
        options = json.loads(os.environ.get("REPROCHECK_RUN_OPTIONS") or "{}")
        replay = None
        if os.environ.get("REPROCHECK_REPLAY_KEYS"):
            replay = (os.environ["REPROCHECK_REPLAY"], os.environ["REPROCHECK_REPLAY_KEYS"])
        return cls(os.environ["REPROCHECK_CAPTURE"], options, replay)

    def __init__(self, path, options, replay=None):
        self.pid = os.getpid()
        self.path = path
        self.options = options
        self.steps = int(options.get("steps", 2))
        self.layers = options.get("layers", "default")
        self.ops = bool(options.get("ops", False))
        self.hashes_only = bool(options.get("hashes_only", False))
        self.pending = []  # hash-only rows waiting for their device hashes, in execution order
        self.lock = threading.RLock()
        self.writer = None
        self.step = 0
        self.step_open = False
        self.entry = None  # the module the script calls (a DDP wrapper, or the model)
        self.root = None  # the model
        self.names = {}  # id(module) -> path in the model
        self.types = {}  # path -> qualified type
        self.tapped = set()
        self.param_names = {}  # id(parameter) -> full name
        self.stack = []  # paths of the modules running forward, innermost last
        self.input_hashes = {}  # id(module) -> stack of input hashes
        self.calls = {}  # per step: how often a layer, op or record name was seen
        self.depth = 0
        self.blocks = None  # None: record everywhere; else the depth of reprocheck.capture() blocks
        self.finished = False
        self.saw_forward = False
        self.skipped = 0
        self.notes = []
        self.replay = self._load_replay(replay) if replay else {}
        # A generator is recorded once the script has used or seeded it (its state moved from the
        # one seen first): an unseeded generator that nothing draws from differs between
        # processes without changing anything.
        self.rng_first = {}
        self.rng_used = set()
        for name, _, state in self._rng_states():
            self.rng_first[name] = state
        _apply_knobs(options)
        try:
            open(path + ".started", "a").close()
        except OSError:
            pass
        self.crashed = False
        self._install()
        atexit.register(self._at_exit)
        original_hook = sys.excepthook

        def excepthook(*exc):
            self.crashed = True  # the script's own error is the message, not a missing step
            original_hook(*exc)

        sys.excepthook = excepthook

    # -- switches -------------------------------------------------------------------------------

    def recording(self):
        return (
            os.getpid() == self.pid and not self.finished and (self.blocks is None or self.blocks > 0)
        )

    def enter_block(self):
        self.blocks = (self.blocks or 0) + 1

    def leave_block(self):
        self.blocks -= 1

    # -- hooks ----------------------------------------------------------------------------------

    def _install(self):
        from torch.utils.data import dataloader
        from torch.utils.data._utils import fetch

        register_module_forward_pre_hook(self._pre_forward)
        register_module_forward_hook(self._post_forward)
        register_optimizer_step_post_hook(lambda opt, args, kwargs: self.end_step(opt))

        original_backward = torch.autograd.backward

        def backward(tensors, *args, **kwargs):
            self._on_backward(tensors)
            return original_backward(tensors, *args, **kwargs)

        torch.autograd.backward = backward

        original_fetch = fetch._MapDatasetFetcher.fetch

        def fetch_with_indices(fetcher, possibly_batched_index):
            data = original_fetch(fetcher, possibly_batched_index)
            index = possibly_batched_index
            indices = list(index) if isinstance(index, (list, tuple, range)) else [index]
            if not all(isinstance(i, int) for i in indices):
                indices = None
            return _IndexedBatch(indices, data)

        fetch._MapDatasetFetcher.fetch = fetch_with_indices

        original_next = dataloader._BaseDataLoaderIter.__next__

        def next_batch(iterator):
            out = original_next(iterator)
            if isinstance(out, _IndexedBatch):
                indices, out = out.indices, out.data
                if self.recording():
                    self._on_batch(iterator, indices, out)
            return out

        dataloader._BaseDataLoaderIter.__next__ = next_batch

    def _pre_forward(self, module, args):
        if os.getpid() != self.pid:
            return None
        if self.depth == 0 and self.recording():
            if self.root is None and any(True for _ in module.parameters()):
                self._adopt(module)
            if module is self.entry:
                self._begin_step()
                self.saw_forward = True
                for name, t in _tensors(tuple(args), "input"):
                    self._write("input", "", "", "input", name, t)
            elif self.root is not None and not any(True for _ in module.parameters()) and len(args) >= 2:
                # A loss module called with (output, target).
                if isinstance(args[1], torch.Tensor):
                    self._write("input", "", "", "target", "target", args[1], call=self._count("target"))
        self.depth += 1
        path = self.names.get(id(module))
        if path is not None:
            self.stack.append(path)
            if id(module) in self.tapped and self.recording():
                h = 0
                for _, t in _tensors(tuple(args)):
                    h = _core.combine_hash(h, _core.hash_bytes(_host_array(t)))
                self.input_hashes.setdefault(id(module), []).append(h)
        if self.ops and module is self.entry and self.recording():
            from ._ops import _OpTap

            self._op_mode = _OpTap(self)
            self._op_mode.__enter__()
        return None

    def _post_forward(self, module, args, output):
        if os.getpid() != self.pid:
            return None
        self.depth -= 1
        replaced = None
        path = self.names.get(id(module))
        if path is not None:
            if self.stack and self.stack[-1] == path:
                self.stack.pop()
            if id(module) in self.tapped and self.recording():
                replaced = self._on_layer(module, path, output)
        if self.depth == 0 and module is self.entry:
            if getattr(self, "_op_mode", None) is not None:
                self._op_mode.__exit__(None, None, None)
                self._op_mode = None
            if self.recording():
                for name, t in _tensors(output if replaced is None else replaced, "output"):
                    self._write("output", "", "", "output", name, t)
        return replaced

    def _on_layer(self, module, path, output):
        call = self._count(("layer", path))
        stack = self.input_hashes.get(id(module))
        input_hash = stack.pop() if stack else None
        named = _tensors(output)
        replaced = False
        values = []
        for slot, (_, t) in enumerate(named):
            name = "out" if len(named) == 1 else f"out.{slot}"
            ref = self.replay.get(f"{self.step}|forward|{path}|activation|{name}|{call}")
            if ref is not None:
                with torch.no_grad():
                    t = ref.to(device=t.device, dtype=t.dtype).view(t.shape).requires_grad_(t.requires_grad)
                replaced = True
            values.append(t)
            self._write("forward", path, self.types[path], "activation", name, t, call, input_hash)
            self._hook_grad(t, path, self.types[path], name, call)
        if not replaced:
            return None
        if isinstance(output, torch.Tensor):
            return values[0]
        return type(output)(values) if isinstance(output, (tuple, list)) else None

    def _hook_grad(self, t, layer, layer_type, name, call):
        if not t.requires_grad:
            return
        step = self.step

        def on_grad(g):
            if not self.recording() or g is None:
                return None
            ref = self.replay.get(f"{step}|backward|{layer}|grad|{name}|{call}")
            if ref is not None:
                g = ref.to(device=g.device, dtype=g.dtype).view(g.shape)
            self._write("backward", layer, layer_type, "grad", name, g, call, step=step)
            return g if ref is not None else None

        t.register_hook(on_grad)

    def _on_backward(self, tensors):
        if self.root is None or not self.recording():
            return
        t = tensors if isinstance(tensors, torch.Tensor) else (tensors[0] if tensors else None)
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            self._write("loss", "", "", "loss", "loss", t, call=self._count("loss"))

    def _on_param_grad(self, name, p):
        if not self.recording() or p.grad is None:
            return
        layer, _, own = name.rpartition(".")
        ref = self.replay.get(f"{self.step}|param_grad|{layer}|param_grad|{own}|0")
        if ref is not None:
            with torch.no_grad():
                p.grad.copy_(ref.to(device=p.grad.device, dtype=p.grad.dtype).view(p.grad.shape))
        self._write("param_grad", layer, self.types.get(layer, ""), "param_grad", own, p.grad)

    def _on_batch(self, iterator, indices, batch):
        call = self._count("batch")
        loader = "torch.utils.data.DataLoader[workers={},in_order={}]".format(
            getattr(iterator, "_num_workers", 0), int(getattr(iterator, "_in_order", True))
        )
        if indices is not None:
            self._write("input", "", loader, "indices", "indices", torch.tensor(indices, dtype=torch.int64), call)
        for name, t in _tensors(batch, "batch"):
            self._write("input", "", loader, "batch", name, t, call)

    def end_step(self, optimizer):
        """A step boundary: records the state after the step; ends the run after `steps` steps."""
        if self.root is None or not self.recording():
            return
        self._record_state("after_step", self.step)
        if optimizer is not None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    name = self.param_names.get(id(p))
                    state = optimizer.state.get(p, {})
                    if name is None or not isinstance(state, dict):
                        continue
                    layer, _, own = name.rpartition(".")
                    for key, value in state.items():
                        if isinstance(value, torch.Tensor):
                            self._write("after_step", layer, self.types.get(layer, ""), "optim_state", f"{own}.{key}", value)
        self._flush_hashes()
        self.step += 1
        self.step_open = False
        if self.step >= self.steps:
            self._finish()
            sys.stdout.flush()
            raise SystemExit(0)

    # -- steps, model, records ------------------------------------------------------------------

    def _adopt(self, module):
        self.entry = module
        self.root = _unwrap(module)
        modules = list(self.root.named_modules())
        for path, m in modules:
            self.names[id(m)] = path
            self.types[path] = _type_name(m)
        selected = _core.select_layers(self.layers, [(path, _type_name(m)) for path, m in modules])
        if self.layers == "default" and not any(selected):
            # No conv, dropout or batch norm (an LSTM, a transformer): every leaf layer.
            selected = [i > 0 and not any(True for _ in m.children()) for i, (_, m) in enumerate(modules)]
            self._writer().set_attribute("layer_fallback", "leaf")
        self.tapped = {id(m) for (path, m), s in zip(modules, selected) if s}
        for name, p in self.root.named_parameters():
            self.param_names[id(p)] = name
            if p.requires_grad:
                p.register_post_accumulate_grad_hook(lambda p, name=name: self._on_param_grad(name, p))
        signature = 0
        for path, m in modules:
            signature = _core.combine_hash(signature, _core.hash_bytes(f"{path}|{_type_name(m)}".encode()))
        for name, p in self.root.named_parameters():
            signature = _core.combine_hash(signature, _core.hash_bytes(f"{name}{list(p.shape)}".encode()))
        self._writer().set_attribute("model_signature", f"{signature:016x}")
        self._writer().set_attribute("mode", "train" if self.root.training else "eval")
        device = next(self.root.parameters()).device
        self._writer().set_attribute("device", str(device) if device.type == "cpu" else f"{device.type}:{device.index or 0}")
        self._record_state("init", -1)

    def _begin_step(self):
        if self.step_open:
            return
        self.step_open = True
        self.calls = {}
        self._record_rng()

    def _record_state(self, phase, step):
        for name, p in self.root.named_parameters():
            layer, _, own = name.rpartition(".")
            self._write(phase, layer, self.types.get(layer, ""), "param", own, p, step=step)
        for name, b in self.root.named_buffers():
            layer, _, own = name.rpartition(".")
            self._write(phase, layer, self.types.get(layer, ""), "buffer", own, b, step=step)

    def _record_rng(self):
        for name, layer_type, state in self._rng_states():
            if name not in self.rng_used:
                first = self.rng_first.setdefault(name, state)
                if torch.equal(first, state):
                    continue
                self.rng_used.add(name)
            self._write("rng", "", layer_type, "rng_state", name, state)

    @staticmethod
    def _rng_states():
        """(name, type, state tensor) of torch's generators, numpy's global generator (when numpy is
        loaded) and Python's."""
        yield "torch", "torch.Generator", torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, state in enumerate(torch.cuda.get_rng_state_all()):
                yield f"cuda:{i}", "torch.cuda.Generator", state
        np = sys.modules.get("numpy")
        if np is not None:
            kind, keys, pos, has_gauss, gauss = np.random.get_state()
            words = np.concatenate([keys.astype(np.uint32), np.array([pos, has_gauss], dtype=np.uint32)])
            yield "numpy", "numpy.random", torch.from_numpy(words.view(np.int32).copy())
        version, words, gauss = random.getstate()
        yield "random", "random", torch.tensor(words, dtype=torch.int64)

    def _count(self, key):
        n = self.calls.get(key, 0)
        self.calls[key] = n + 1
        return n

    def _writer(self):
        if self.writer is None:
            path = self.path
            dist = getattr(torch, "distributed", None)
            if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
                stem = path[:-3] if path.endswith(".h5") else path
                path = f"{stem}.rank{dist.get_rank()}.h5"
            elif os.environ.get("RANK") is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
                stem = path[:-3] if path.endswith(".h5") else path
                path = f"{stem}.rank{os.environ['RANK']}.h5"
            self.writer = _core.DumpWriter(path, False, self.hashes_only)
            self._write_provenance()
        return self.writer

    def _write_provenance(self):
        w = self.writer
        w.set_attribute("front_end", "python")
        w.set_attribute("reprocheck_version", "0.1.0")
        w.set_attribute("libtorch_version", torch.__version__.split("+")[0])
        w.set_attribute("cuda_version", torch.version.cuda or "none")
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        w.set_attribute("cudnn_version", str(cudnn) if cudnn else "none")
        w.set_attribute("python_version", platform.python_version())
        w.set_attribute("device", "cpu")
        w.set_attribute("device_name", platform.processor() or platform.machine())
        w.set_attribute("host", socket.gethostname())
        w.set_attribute("time", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        w.set_attribute("model", str(self.options.get("model", sys.argv[0] if sys.argv else "")))
        w.set_attribute("model_signature", "none")
        w.set_attribute("layers", self.layers)
        w.set_attribute("deterministic", str(self.options.get("deterministic", "off")))
        w.set_attribute("benchmark", int(bool(self.options.get("benchmark", False))))

    def _write(self, phase, layer, layer_type, kind, name, t, call=0, input_hash=None, step=None):
        dtype = _DTYPES.get(t.dtype)
        if dtype is None or t.is_sparse or t.layout != torch.strided:
            self.skipped += 1
            return
        if self.hashes_only:
            self._write_hash(phase, layer, layer_type, kind, name, t, call, input_hash, step, dtype)
            return
        data = _host_array(t)
        with self.lock:
            self._writer().write(
                self.step if step is None else step, phase, layer, layer_type, kind, name, call, dtype,
                list(t.shape), data, input_hash,
            )

    def _write_hash(self, phase, layer, layer_type, kind, name, t, call, input_hash, step, dtype):
        """Hash-only capture: a CPU tensor's XXH3 now; a device tensor's hash_words on the device,
        fetched with the others of its step at the step's end (no synchronization per tensor)."""
        if t.device.type == "cpu":
            value, words = _core.hash_bytes(_host_array(t)), False
        else:
            value, words = _device_hash(t), True
        row = (self.step if step is None else step, phase, layer, layer_type, kind, name, call, dtype,
               list(t.shape), value, words, input_hash)
        with self.lock:
            self.pending.append(row)

    def _flush_hashes(self):
        with self.lock:
            rows, self.pending = self.pending, []
            if not rows:
                return
            device = [r[9] for r in rows if isinstance(r[9], torch.Tensor)]
            values = iter(torch.stack([d.to(device[0].device) for d in device]).cpu().tolist()) if device else iter(())
            w = self._writer()
            for r in rows:
                value = next(values) if isinstance(r[9], torch.Tensor) else r[9]
                w.write_hash(*r[:9], value & 0xFFFFFFFFFFFFFFFF, r[10], r[11])

    def _finish(self):
        if self.finished:
            return
        self.finished = True
        if self.writer is None:
            return
        self._flush_hashes()
        options = dict(self.options)
        options["threads"] = torch.get_num_threads()
        w = self.writer
        w.set_attribute("run_options", json.dumps(options, sort_keys=True))
        w.set_attribute("steps", self.step)
        w.set_attribute("threads", torch.get_num_threads())
        w.set_attribute("seed", torch.initial_seed() & 0x7FFFFFFFFFFFFFFF)
        if self.skipped:
            self.notes.append(f"{self.skipped} tensor(s) of dtypes a dump cannot store were not recorded")
        if self.notes:
            w.set_attribute("capture_notes", json.dumps(self.notes))
        w.commit()

    def _at_exit(self):
        if os.getpid() != self.pid or self.finished:
            return
        if self.saw_forward and self.step == 0 and not self.crashed:
            self.finished = True
            _report_error(
                f"'{' '.join(sys.argv)}' ran the model but never called optimizer.step(): reprocheck compares "
                "training steps; call a torch.optim optimizer's step(), or reprocheck.mark_step() at the end "
                "of each step"
            )
            os._exit(2)
        if self.writer is not None and self.step < self.steps:
            self.notes.append(f"the script ended after {self.step} of {self.steps} step(s)")
        self._finish()

    # -- replay (--isolate) ---------------------------------------------------------------------

    @staticmethod
    def _load_replay(replay):
        dump, keys_file = replay
        with open(keys_file) as f:
            wanted = {line.strip() for line in f if line.strip()}
        reader = _core.DumpReader(dump)
        out = {}
        torch_dtypes = {v: k for k, v in _DTYPES.items()}
        for meta in reader.index():
            if meta["key"] not in wanted:
                continue
            dtype = torch_dtypes[meta["dtype"]]
            raw = bytearray(reader.read_bytes(meta["order"]))
            storage = torch.int16 if dtype == torch.bfloat16 else dtype
            t = torch.frombuffer(raw, dtype=storage) if raw else torch.empty(0, dtype=storage)
            out[meta["key"]] = t.view(dtype).reshape(meta["shape"]).clone()
        return out
