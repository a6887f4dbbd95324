"""Models whose parameters the capture cannot take as they are: lazy ones, sparse gradients."""
from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def test_a_lazy_modules_parameters_are_recorded_once_its_first_call_makes_them(capture: Any) -> None:
    # nn.LazyConv2d and nn.LazyLinear have no shapes until their first call: adopting the model read
    # them and the capture raised inside the script's forward.
    def loop() -> None:
        model = nn.Sequential(nn.LazyConv2d(4, 3), nn.LazyBatchNorm2d(), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
        model(torch.rand(1, 3, 6, 6))  # made before the optimizer, as PyTorch asks
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            F.cross_entropy(model(torch.rand(2, 3, 6, 6)), torch.tensor([0, 1])).backward()
            opt.step()
            opt.zero_grad()

    out = capture(loop, steps=2)
    keys = out.keys()
    assert len(keys) == len(set(keys))
    init = {(r["layer"], r["name"]): r["shape"] for r in out.where(phase="init")}
    assert init == {("0", "weight"): [4, 3, 3, 3], ("0", "bias"): [4], ("1", "weight"): [4], ("1", "bias"): [4],
                    ("1", "running_mean"): [4], ("1", "running_var"): [4], ("1", "num_batches_tracked"): [],
                    ("4", "weight"): [2, 64], ("4", "bias"): [2]}
    # Each one's initial value comes before the output its layer computed with it.
    order = [(r["phase"], r["layer"]) for r in out.rows]
    assert order.index(("init", "0")) < order.index(("forward", "0"))
    assert order.index(("init", "1")) < order.index(("forward", "1"))
    # Their gradients are hooked once made: every parameter's, in both steps.
    for step in (0, 1):
        grads = sorted((r["layer"], r["name"]) for r in out.where(step=step, kind="param_grad"))
        assert grads == sorted((layer, n) for layer in ("0", "1", "4") for n in ("weight", "bias")), step


def test_a_sparse_gradient_is_named_in_the_note_of_what_was_not_recorded(capture: Any) -> None:
    # nn.Embedding(sparse=True) with SparseAdam: its gradient is a sparse tensor, which a dump cannot
    # hold; the note said "tensor(s) of dtypes a dump cannot store", naming neither the layout nor
    # the tensor.
    def loop() -> None:
        emb, fc = nn.Embedding(20, 4, sparse=True), nn.Linear(4, 2)
        model = nn.Sequential(emb, nn.Dropout(0.2), nn.Flatten(), fc)
        opts = [torch.optim.SparseAdam(list(emb.parameters()), lr=0.01), torch.optim.Adam(fc.parameters(), lr=0.01)]
        for _ in range(3):
            F.cross_entropy(model(torch.randint(0, 20, (2, 1))), torch.tensor([0, 1])).backward()
            for opt in opts:
                opt.step()
                opt.zero_grad()

    out = capture(loop, steps=2)
    notes = json.loads(out.attributes["capture_notes"])
    assert "not recorded, as a dump stores dense tensors of the dtypes in docs/dump-format.md: " \
           "2 sparse_coo (0.weight param_grad)" in notes, notes
    assert not out.where(kind="param_grad", layer="0")
    assert len(out.where(kind="param", phase="after_step", layer="0", name="weight")) == 2  # its values are


def test_a_lazy_module_the_model_never_calls_is_left_out(capture: Any) -> None:
    # A lazy head the script never runs keeps uninitialized parameters: the step's end, which records
    # each parameter no optimizer stepped, must pass it by (its shape cannot be read).
    def loop() -> None:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2))
        model.add_module("spare", nn.LazyLinear(3))
        model.forward = lambda x: model[2](model[1](model[0](x)))  # type: ignore[method-assign]
        opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("spare")], lr=0.1)
        for _ in range(3):
            F.cross_entropy(model(torch.rand(2, 3, 6, 6)), torch.tensor([0, 1])).backward()
            opt.step()
            opt.zero_grad()

    out = capture(loop, steps=2)
    assert out.attributes["steps"] == "2"
    assert not [r for r in out.rows if r["layer"] == "spare"]
    assert len(out.where(phase="after_step", kind="param")) == 2 * 4
