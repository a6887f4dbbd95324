"""A plain resnet training script (eager PyTorch) for `script_step_bench.py`: resnet18 or resnet50
(fixtures/resnet_mini.py) on 8x3x64x64 batches from a DataLoader, SGD with momentum. Each step's
seconds are appended to $BENCH_STEP_TIMES as it ends (a capture that ends the script after its
steps still leaves them).

    python bench/resnet_script.py [resnet18|resnet50] [STEPS=12]
"""
import os
import sys
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
import resnet_mini


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "resnet18"
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    torch.manual_seed(0)
    model = resnet_mini.ResNet18() if name == "resnet18" else resnet_mini.ResNet50()
    data = TensorDataset(torch.randn(8 * steps, 3, 64, 64), torch.randint(0, 1000, (8 * steps,)))
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    out = os.environ.get("BENCH_STEP_TIMES")
    last = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        now = time.perf_counter()
        if out:
            with open(out, "a") as f:
                f.write(f"{now - last}\n")
        last = now


if __name__ == "__main__":
    main()
