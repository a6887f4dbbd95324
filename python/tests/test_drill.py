"""Pass 3's capture for training scripts: every ATen op of one step, forward and backward, with the
line that called it, and the same numbers as a plain run."""
from __future__ import annotations

import inspect
import json
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(F.relu(self.lin(x)), 0.5, self.training)


DROPOUT_LINE = inspect.getsourcelines(Block.forward)[1] + 1


def train(model: nn.Module, steps: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.rand(4, 4, generator=g), torch.randint(0, 8, (4,), generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_the_drill_step_records_every_op_forward_and_backward_with_its_line(capture: Any) -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(Block())
    torch.manual_seed(0)
    train(plain, 2)

    torch.manual_seed(0)
    model = nn.Sequential(Block())
    out = capture(lambda: train(model, 2), steps=2, drill_step=1, drill_scope="")
    ops = [r for r in out.rows if "#" in r["layer"]]
    assert ops and {r["step"] for r in ops} == {1}  # only the drill step
    sources = json.loads(out.attributes["op_sources"])
    assert sources["step"] == 1
    by_op = {s["op"]: (layer, s) for layer, s in sources["ops"].items()}
    # The dropout's random op, in the block, at the line that calls F.dropout.
    layer, bernoulli = by_op["aten::bernoulli_"]
    assert bernoulli["module"] == "0" and bernoulli["phase"] == "forward" and bernoulli["generator"] == "global"
    assert bernoulli["file"].endswith("test_drill.py") and bernoulli["line"] == DROPOUT_LINE
    assert layer.startswith("0:aten::bernoulli_#")
    assert bernoulli["within"] == "torch.nn.functional.dropout"  # the call the script made
    # The linear layer's backward: named after the forward call it differentiates.
    backward = [s for s in sources["ops"].values() if s["phase"] == "backward" and s["module"] == "0.lin"]
    assert backward and all(s["site"] == "forward" and s["node"] for s in backward)
    assert {r["phase"] for r in ops} >= {"forward", "backward"}
    # The optimizer's update, outside any module after the backward.
    assert any(s["phase"] == "after_step" for s in sources["ops"].values())
    # Views are not new values; reprocheck's own copies are not the script's ops.
    assert not any(s["op"] in ("aten::view", "aten::t", "aten::detach") for s in sources["ops"].values())
    # The same numbers as the plain run.
    for a, b in zip(plain.parameters(), model.parameters()):
        assert torch.equal(a, b)


def test_a_scope_keeps_the_ops_of_that_module_and_its_backward(capture: Any) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Block(), nn.Linear(8, 8))
    out = capture(lambda: train(model, 1), steps=1, drill_step=0, drill_scope="0.lin")
    sources = json.loads(out.attributes["op_sources"])["ops"]
    assert sources and {s["module"] for s in sources.values()} == {"0.lin"}
    assert {s["phase"] for s in sources.values()} == {"forward", "backward"}


def test_without_a_drill_step_nothing_changes(capture: Any) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Block())
    out = capture(lambda: train(model, 1), steps=1)
    assert "op_sources" not in out.attributes
    assert not [r for r in out.rows if "#" in r["layer"]]


class _Recording:
    """What Drill.input_hash asks of its session."""

    def recording(self) -> bool:
        return True


def test_an_op_carries_the_hash_of_what_it_reads_not_of_what_it_writes() -> None:
    from reprocheck._drill import Drill

    drill = Drill(_Recording(), 0, "")
    aten = torch.ops.aten
    a, b = torch.rand(8), torch.rand(8)
    # bernoulli_ fills its tensor: whatever that held is not an input.
    filled = drill.input_hash(aten.bernoulli_.float, (a, 0.5), {})
    assert filled == drill.input_hash(aten.bernoulli_.float, (b, 0.5), {})
    # add_ reads its own tensor, `other` and its numbers: a value made outside the ops shows there.
    same = drill.input_hash(aten.add_.Tensor, (a, a), {"alpha": 1.0})
    assert same != drill.input_hash(aten.add_.Tensor, (b, a), {"alpha": 1.0})
    assert same != drill.input_hash(aten.add_.Tensor, (a, b), {"alpha": 1.0})
    assert same != drill.input_hash(aten.add_.Tensor, (a, a), {"alpha": 2.0})
    # An out= tensor is only written.
    plain = drill.input_hash(aten.add.out, (a, a), {"out": torch.empty(8)})
    assert plain == drill.input_hash(aten.add.out, (a, a), {"out": b})
    # A view makes no new value: no hash.
    assert drill.input_hash(aten.view.default, (a, [2, 4]), {}) is None


def test_the_drill_step_records_the_inputs_of_each_op(capture: Any) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Block())
    out = capture(lambda: train(model, 1), steps=1, drill_step=0, drill_scope="")
    ops = [r for r in out.rows if "#" in r["layer"]]
    assert ops and all(isinstance(r["input_hash"], int) for r in ops)
