"""A plain resnet training script (eager PyTorch) for `script_step_bench.py`: resnet18 or resnet50
(fixtures/resnet_mini.py) on 8x3x64x64 batches from a DataLoader ($BENCH_PIXELS: another image
size), SGD with momentum. Each step's
seconds are appended to $BENCH_STEP_TIMES as it ends (a capture that ends the script after its
steps still leaves them).

With $BENCH_H5PY set, the script captures itself the way one writes it by hand (the baseline):
forward hooks on the conv, batch-norm and dropout layers and tensor hooks on their outputs write
each output and gradient with h5py, and after each step every parameter and its gradient.

    python bench/resnet_script.py [resnet18|resnet50] [STEPS=12]
"""
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import resnet_mini


class HandCapture:
    """Python hooks and h5py: the capture reprocheck replaces."""

    def __init__(self, model, path):
        import h5py

        self.file = h5py.File(path, "w")
        self.step = 0
        kinds = (torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Dropout)
        for name, module in model.named_modules():
            if isinstance(module, kinds):
                module.register_forward_hook(self.forward_hook(name))

    def save(self, name, t):
        self.file.create_dataset(f"{self.step}/{name}", data=t.detach().cpu().numpy())

    def forward_hook(self, name):
        def hook(module, args, out):
            self.save(f"{name}.out", out)
            if out.requires_grad:
                out.register_hook(lambda g: self.save(f"{name}.grad", g))
        return hook

    def step_done(self, model):
        for name, p in model.named_parameters():
            self.save(name, p)
            if p.grad is not None:
                self.save(f"{name}.grad", p.grad)
        self.file.flush()
        self.step += 1


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    torch.manual_seed(0)
    model = resnet_mini.ResNet18() if name == "resnet18" else resnet_mini.ResNet50()
    pixels = int(os.environ.get("BENCH_PIXELS", "64"))
    data = TensorDataset(torch.randn(8 * steps, 3, pixels, pixels), torch.randint(0, 1000, (8 * steps,)))
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    out = os.environ.get("BENCH_STEP_TIMES")
    save = HandCapture(model, os.environ["BENCH_H5PY"]) if os.environ.get("BENCH_H5PY") else None
    last = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if save:
            save.step_done(model)
        now = time.perf_counter()
        if out:
            with open(out, "a") as f:
                f.write(f"{now - last}\n")
        last = now


if __name__ == "__main__":
    main()
