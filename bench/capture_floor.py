"""The least any capture of an eager training step can add, against which `reprocheck run`'s per-step
cost is judged: bench/resnet_script.py's step (resnet18 or resnet50, 8x3x64x64, SGD with momentum),
timed in one process, the conditions taking turns in runs of 4 steps (their order rotated):

- plain: the step alone;
- global hooks: with no-op global forward pre- and post-hooks (what finding the models needs);
- least capture: those, a forward hook on each default layer (conv, batch norm, dropout) and a hook
  on its output's gradient that only keep the tensor, and every tensor a pass-1 capture hashes,
  hashed in four calls of reprocheck's hasher (the tapped outputs and their gradients, the
  parameters' gradients, the parameters after the update and the momentum): no rows, no names, no
  order, none of the checks a real capture makes, so a floor, not a capture.

Printed: the median step (ms) and its ratio to the plain one.

    .venv/bin/python bench/capture_floor.py [ROUNDS=15] [MODEL=resnet18 ...]
"""
import os
import statistics
import sys
import time

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from reprocheck import _core

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import resnet_mini

TAPPED = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Dropout)


class LeastCapture:
    def __init__(self, model, opt):
        self.model, self.opt, self.kept, self.handles = model, opt, [], []

    def install(self):
        self.handles = [register_module_forward_pre_hook(lambda m, a: None),
                        register_module_forward_hook(lambda m, a, o: None)]
        self.handles += [m.register_forward_hook(self.on_output) for m in self.model.modules()
                         if isinstance(m, TAPPED)]

    def on_output(self, module, args, out):
        self.kept.append(out.detach())
        if out.requires_grad:
            out.register_hook(lambda g: self.kept.append(g))

    def after_backward(self):
        _core.hash_many(self.kept, 2)
        _core.hash_many([p.grad for p in self.model.parameters()], 2)
        self.kept = []

    def after_step(self):
        params = list(self.model.parameters())
        _core.hash_many([p.detach() for p in params], 2)
        _core.hash_many([self.opt.state[p]["momentum_buffer"] for p in params], 2)

    def uninstall(self):
        for h in self.handles:
            h.remove()


def measure(name, rounds):
    torch.manual_seed(0)
    model = resnet_mini.ResNet18() if name == "resnet18" else resnet_mini.ResNet50()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 1000, (8,))
    least = LeastCapture(model, opt)
    times = {"plain": [], "global hooks": [], "least capture": []}
    conditions = list(times)
    for r in range(rounds + 1):
        # Runs of 4 steps, the first of each left out: a step that follows a hashing one starts with
        # colder caches, and in a captured run every step does. The order rotates each round.
        for condition in conditions[r % 3:] + conditions[:r % 3]:
            handles = []
            if condition == "global hooks":
                handles = [register_module_forward_pre_hook(lambda m, a: None),
                           register_module_forward_hook(lambda m, a, o: None)]
            elif condition == "least capture":
                least.install()
            for k in range(4):
                t0 = time.perf_counter()
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x), y).backward()
                if condition == "least capture":
                    least.after_backward()
                opt.step()
                if condition == "least capture":
                    least.after_step()
                if r > 0 and k > 0:  # round 0 allocates the momentum and warms the allocator
                    times[condition].append(time.perf_counter() - t0)
            least.uninstall()
            for h in handles:
                h.remove()
    plain = statistics.median(times["plain"])
    for condition, values in times.items():
        m = statistics.median(values)
        print(f"| {name} | {condition} | {m * 1e3:.2f} | {m / plain:.3f}x |", flush=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    print(f"median of {3 * rounds} steps each ({rounds} runs of 4, the first step of each left out)\n")
    print("| model | condition | step (ms) | ratio |")
    print("|---|---|---:|---:|")
    for name in sys.argv[2:] or ["resnet18"]:
        measure(name, rounds)


if __name__ == "__main__":
    main()
