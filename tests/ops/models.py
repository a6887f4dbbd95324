"""Models for the tests that need the test-only op library (test_ops.cpp).

    python models.py OUTDIR LIBRARY
"""
import json
import os
import sys

import torch
from torch import nn


class CrashNet(nn.Module):
    """A linear layer followed by an op that crashes the process."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.ops.reprocheck_test.crash(self.fc(x))


def main():
    out, library = sys.argv[1], sys.argv[2]
    torch.ops.load_library(library)
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    m = torch.jit.script(CrashNet())
    m.save(os.path.join(out, "crash_net.pt"),
           _extra_files={"reprocheck.json": json.dumps({"input_shape": [2, 4], "loss": "mse"})})


if __name__ == "__main__":
    main()
