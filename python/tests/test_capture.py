"""The capture on small models in this process: steps, keys, models, layers, data, unwinding; and
what the start-up hook does to a fresh process."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset, random_split

from reprocheck._models import Models, SelectorError
from reprocheck._records import Losses


def data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.rand(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g))


def net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))


def test_gradient_accumulation_is_one_step_with_every_key_once(capture: Any) -> None:
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(data(), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))

    def loop() -> None:
        for i, (x, y) in enumerate(loader):
            (F.cross_entropy(model(x), y) / 2).backward()
            if i % 2 == 1:
                opt.step()
                opt.zero_grad()

    out = capture(loop, steps=2)
    keys = out.keys()
    assert len(keys) == len(set(keys)), [k for k, n in collections.Counter(keys).items() if n > 1]
    assert [r["call"] for r in out.where(step=0, kind="indices")] == [0, 1]
    assert [r["call"] for r in out.where(step=1, kind="loss")] == [0, 1]
    assert [r["call"] for r in out.where(step=0, kind="param_grad", layer="0", name="weight")] == [0, 1]
    assert out.attributes["steps"] == "2"


def test_a_model_called_with_keywords_records_them_as_its_inputs_before_its_layers(capture: Any) -> None:
    class Classifier(nn.Module):  # called as Hugging Face models are: model(**batch)
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.drop = nn.Dropout(0.1)
            self.head = nn.Linear(4, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: Any = None,
                    return_dict: bool = True) -> dict:
            h = (self.drop(self.embed(input_ids)) * attention_mask[..., None]).mean(1)
            logits = self.head(h)
            return {"loss": F.cross_entropy(logits, labels), "logits": logits}

    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        for step in range(2):
            batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, step]]), "attention_mask": torch.ones(2, 3),
                     "labels": torch.tensor([0, 1]), "return_dict": True}
            model(**batch)["loss"].backward()
            opt.step()
            opt.zero_grad()

    out = capture(loop, steps=2)
    inputs = out.where(step=1, phase="input", kind="input")
    assert [r["name"] for r in inputs] == ["input['input_ids']", "input['attention_mask']", "input['labels']"]
    step1 = [r for r in out.rows if r["step"] == 1]
    assert step1.index(inputs[-1]) < step1.index(out.where(step=1, phase="forward", layer="drop")[0])
    ids = out.where(kind="input", name="input['input_ids']")
    assert ids[0]["hash"] != ids[1]["hash"]  # their values: the step number is in the ids


def test_a_model_run_through_its_forward_method_is_named_in_a_note(capture: Any) -> None:
    # model.forward(x) bypasses the module hooks: its layers arrive one by one, each looking like a
    # model. Say so (and not that the model lacks conv, dropout and batch-norm layers).
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop(direct: bool) -> None:
        for _ in range(3):
            x = torch.rand(2, 3, 6, 6)
            F.cross_entropy(model.forward(x) if direct else model(x), torch.tensor([0, 1])).backward()
            opt.step()

    out = capture(lambda: loop(True), steps=2)
    notes = json.loads(out.attributes["capture_notes"])
    assert any(n.startswith("model.forward(...) runs the model at test_capture.py:") and "call model(...)" in n
               for n in notes), notes
    assert "layer_fallback" not in out.attributes
    out = capture(lambda: loop(False), steps=2)
    assert not any("forward(...)" in n for n in json.loads(out.attributes.get("capture_notes", "[]")))


def test_parameters_no_optimizer_steps_are_recorded_at_the_steps_end(capture: Any) -> None:
    # A mean teacher: the script updates it in place, no optimizer steps it. Its parameters are
    # recorded after each step, once; the student's once, by its optimizer's hook.
    student = nn.Linear(2, 2)
    teacher = nn.Linear(2, 2).requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)

    def loop() -> None:
        for _ in range(3):
            x = torch.rand(4, 2)
            with torch.no_grad():
                soft = teacher(x).softmax(1)
            F.kl_div(student(x).log_softmax(1), soft, reduction="batchmean").backward()
            opt.step()
            with torch.no_grad():
                for t, s in zip(teacher.parameters(), student.parameters()):
                    t.mul_(0.9).add_(s, alpha=0.1)

    out = capture(loop, steps=2)
    after = [(r["step"], r["layer"], r["name"], r["call"]) for r in out.where(phase="after_step", kind="param")]
    assert sorted(after) == sorted((step, layer, name, 0) for step in (0, 1) for layer in ("", "student")
                                   for name in ("weight", "bias")), after
    teacher_weights = out.where(phase="after_step", kind="param", layer="", name="weight")
    assert teacher_weights[0]["hash"] != teacher_weights[1]["hash"]  # the update is in them


def test_two_models_are_named_by_their_variables(capture: Any) -> None:
    generator = nn.Sequential(nn.Linear(2, 4), nn.Tanh())
    critic = nn.Sequential(nn.Linear(4, 1))
    opt_g = torch.optim.Adam(generator.parameters())
    opt_c = torch.optim.Adam(critic.parameters())

    def loop() -> None:
        for _ in range(4):
            fake = generator(torch.rand(3, 2))
            critic(fake.detach()).mean().backward()
            opt_c.step()
            critic(fake).mean().backward()
            opt_g.step()

    out = capture(loop, steps=2)
    layers = {r["layer"] for r in out.where(phase="init")}
    assert layers == {"0", "critic.0"}
    # Both optimizers step within one iteration: one step each, both models' parameters after it.
    assert {r["layer"] for r in out.where(step=0, phase="after_step", kind="param")} == {"0", "critic.0"}


def test_layers_are_what_their_classes_derive_from() -> None:
    class ScaledConv(nn.Conv2d):
        pass

    class NormAct(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(super().forward(x))

    model = nn.Sequential(ScaledConv(3, 4, 3), NormAct(4), nn.Flatten(), nn.Linear(4, 2))
    models = Models("default", False)
    models.adopt(model)
    tapped = {models.names[i] for i in models.tapped}
    assert tapped == {"0", "1"}
    assert models.categories[f"{__name__}.test_layers_are_what_their_classes_derive_from.<locals>.ScaledConv"] == "conv"
    with pytest.raises(SelectorError, match="unknown --layers selector 'Lineer'"):
        Models("default,Lineer", False).adopt(nn.Sequential(nn.Linear(2, 2)))


def test_a_loader_over_a_split_records_the_split_and_its_description(capture: Any) -> None:
    torch.manual_seed(5)
    train, _ = random_split(data(), [24, 8])
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(train, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))

    def loop() -> None:
        for x, y in loader:
            F.cross_entropy(model(x), y).backward()
            opt.step()

    out = capture(loop)
    split = out.where(kind="indices", name="split")
    assert len(split) == 1 and split[0]["shape"] == [24]
    import json

    loaders = json.loads(out.attributes["data_loaders"])
    assert loaders[""]["subset"] is True
    assert loaders[""]["sampler"] == "torch.utils.data.sampler.RandomSampler"
    assert loaders[""]["generator"] is True


def test_a_forward_that_raises_unwinds_the_capture(capture: Any) -> None:
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(2, 2), Fails())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state: dict[str, Any] = {}

    def loop() -> None:
        from reprocheck import _autostart  # noqa: F401  (the session under test is the fixture's)

        with pytest.raises(RuntimeError, match="boom"):
            model(torch.rand(1, 2))
        import gc

        session = next(o for o in gc.get_objects() if type(o).__name__ == "Session" and not o.finished)
        state["depth"], state["stack"] = session.depth, list(session.stack)
        loss = model[0](torch.rand(1, 2)).sum()
        loss.backward()
        opt.step()

    capture(loop, steps=1)
    assert state == {"depth": 0, "stack": []}


def test_the_loss_of_every_step_is_checked_for_nan(capture: Any) -> None:
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loop() -> None:
        for _ in range(3):
            (model(torch.rand(1, 2)).sum() * float("nan")).backward()
            opt.step()

    out = capture(loop, steps=2)
    assert out.attributes["nonfinite_loss"] == "[0, 1]"


def test_a_step_is_nonfinite_when_any_of_its_losses_is_nan_or_inf() -> None:
    losses = Losses()
    steps = [[torch.tensor(1.5), torch.tensor([2.0], dtype=torch.float16)],
             [torch.tensor(1.0), torch.tensor(float("inf"), dtype=torch.bfloat16)],
             [torch.tensor(-float("inf"), dtype=torch.float64)],
             [torch.tensor(3, dtype=torch.int64)],
             [torch.tensor([float("nan")])]]
    for step, values in enumerate(steps):
        for v in values:
            losses.add(v)
        losses.check(step)
    assert losses.nonfinite_steps == [1, 2, 4]


def test_a_hash_only_capture_hashes_what_a_full_capture_stores(capture: Any) -> None:
    """Pass 1 hashes the parameters' gradients once backward returns and the optimizer's state in
    one batch (on several threads), and takes a batch norm's input hash from the conv output it is:
    every hash and input hash must still be those of the bytes a full capture stores, also where the
    script changes gradients in place right after backward (clipping) and a ReLU changes a batch
    norm's output in place before the next conv reads it."""

    def loop() -> None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3),
                              nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        x, y = torch.rand(16, 3, 8, 8), torch.randint(0, 2, (16,))
        for _ in range(2):
            for half in (slice(0, 8), slice(8, 16)):
                F.cross_entropy(model(x[half]), y[half]).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            opt.step()
            opt.zero_grad()

    full = capture(loop, steps=2, threads=2)
    hashes = capture(loop, steps=2, threads=2, hashes_only=True)
    assert full.keys() == hashes.keys()
    pairs = list(zip(full.rows, hashes.rows))
    assert [r["key"] for r, h in pairs if r["hash"] != h["hash"]] == []
    assert [r["key"] for r, h in pairs if r["input_hash"] != h["input_hash"]] == []
    grads = [r for r in full.where(kind="param_grad", layer="0", name="weight")]
    assert len(grads) == 4 and len({r["hash"] for r in grads}) == 4  # each micro-batch's, before clipping
    assert len([r for r in full.rows if r["input_hash"] is not None]) == 16  # 4 tapped layers, 4 forwards


def test_the_start_up_hook_keeps_what_lives_before_the_script_out_of_full_collections(tmp_path: Any) -> None:
    """What is alive when the hook has started the capture (torch, the capture) is frozen, so the
    records of the steps do not set off full collections that walk all of torch's objects; a
    process without the capture is left as it was."""
    script = "import gc, sys; sys.stdout.write(str(gc.get_freeze_count()))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROCHECK_")}
    plain = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    env["REPROCHECK_CAPTURE"] = str(tmp_path / "run.h5")
    captured = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert int(plain.stdout) == 0
    assert int(captured.stdout) > 10000, captured.stderr  # torch's modules, classes and functions


def unique_keys(out: Any) -> None:
    duplicates = [k for k, n in collections.Counter(out.keys()).items() if n > 1]
    assert not duplicates, duplicates


def train_images(model: nn.Module, opt: torch.optim.Optimizer, iterations: int) -> None:
    """`iterations` steps of `model` on random 2x3x6x6 images of classes 0 and 1."""
    for _ in range(iterations):
        F.cross_entropy(model(torch.rand(2, 3, 6, 6)), torch.tensor([0, 1])).backward()
        opt.step()


class Probed(nn.Module):
    """A model that runs its features once while it is made, for the size of its last layer."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.2))
        with torch.no_grad():
            n = self.features(torch.zeros(1, 3, 6, 6)).numel()
        self.fc = nn.Linear(n, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def test_a_shape_probe_while_the_model_is_made_is_no_model(capture: Any) -> None:
    # The probe ran the features before the model existed: they were the model, the real one a
    # second model with every parameter's gradient recorded twice.
    def loop() -> None:
        model = Probed()
        train_images(model, torch.optim.SGD(model.parameters(), lr=0.1), 3)

    out = capture(loop, steps=2)
    unique_keys(out)
    assert {r["layer"] for r in out.where(phase="forward")} == {"features.0", "features.1", "features.3"}
    grads = [(r["step"], r["layer"], r["name"]) for r in out.where(kind="param_grad")]
    assert sorted(grads) == sorted((s, layer, n) for s in (0, 1) for layer in ("features.0", "features.1", "fc")
                                   for n in ("weight", "bias"))


def test_a_model_that_holds_an_earlier_model_takes_its_place(capture: Any) -> None:
    # features(x) at the top of the script, then the model made around it: the model takes the first
    # model's place, so that its calls end the steps of a loop without a DataLoader (before: one
    # step that never ended), and each tensor is recorded once, under the model's name.
    def loop() -> None:
        features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        with torch.no_grad():
            n = features(torch.zeros(1, 3, 6, 6)).numel()
        model = nn.Sequential(features, nn.Flatten(), nn.Linear(n, 2))
        train_images(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 4)

    out = capture(loop, steps=2)
    unique_keys(out)
    for step in (0, 1):
        grads = sorted((r["layer"], r["name"]) for r in out.where(step=step, kind="param_grad"))
        assert grads == [("model.0.0", "bias"), ("model.0.0", "weight"), ("model.2", "bias"), ("model.2", "weight")]
        assert len(out.where(step=step, phase="after_step", kind="param")) == 4
        assert len(out.where(step=step, phase="input", kind="input")) == (2 if step == 0 else 1)  # the probe's
    assert int(out.attributes["steps"]) == 2


def test_a_parametrized_weight_is_no_model(capture: Any) -> None:
    # spectral_norm runs its parametrization as it is registered: that was the model (its weight's
    # `original`), the real model a second one, and "no conv, dropout or batch-norm layer" its note.
    from torch.nn.utils import parametrizations

    def loop() -> None:
        model = nn.Sequential(parametrizations.spectral_norm(nn.Conv2d(3, 4, 3)), nn.Flatten(),
                              parametrizations.weight_norm(nn.Linear(64, 2)))
        train_images(model, torch.optim.SGD(model.parameters(), lr=0.1), 3)

    out = capture(loop, steps=2)
    unique_keys(out)
    assert "layer_fallback" not in out.attributes
    assert {r["layer"] for r in out.where(phase="forward")} == {"0"}
    assert {r["layer"] for r in out.rows if r["phase"] != "rng"} >= {"0", "0.parametrizations.weight", "2"}
    assert not [r for r in out.rows if r["phase"] in ("init", "param_grad") and r["layer"] == ""]


def test_a_gradient_that_reaches_an_output_again_has_a_key_of_its_own(capture: Any) -> None:
    # Two losses through one retained graph, and a gradient penalty (autograd.grad, then backward
    # through its graph): the tapped outputs' hooks run again, and wrote the same key twice.
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
    head = nn.Linear(64, 2)
    opt = torch.optim.SGD(list(trunk.parameters()) + list(head.parameters()), lr=0.1)

    def loop(penalty: bool) -> None:
        for _ in range(3):
            x = torch.rand(2, 3, 6, 6, requires_grad=penalty)
            out = head(trunk(x))
            if penalty:
                grad, = torch.autograd.grad(out.sum(), x, create_graph=True)
                (out.mean() + grad.square().mean()).backward()
            else:
                F.cross_entropy(out, torch.tensor([0, 1])).backward(retain_graph=True)
                out.square().mean().backward()
            opt.step()

    for penalty in (False, True):
        out = capture(lambda penalty=penalty: loop(penalty), steps=2)
        unique_keys(out)
        names = sorted(r["name"] for r in out.where(step=0, phase="backward", layer="0"))
        assert names == ["out", "out#2"], names


def test_the_fallback_note_is_about_the_first_model(capture: Any) -> None:
    # A second model without conv, dropout or batch norm (a linear head the script calls on its own)
    # has its leaf layers tapped, but "the model has none" is about the first.
    trunk = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    head = nn.Linear(64, 2)
    opt = torch.optim.SGD(list(trunk.parameters()) + list(head.parameters()), lr=0.1)

    def loop(first: nn.Module, second: nn.Module) -> None:
        for _ in range(3):
            x = torch.rand(2, 3, 6, 6)
            if first is head:
                head(torch.rand(2, 64))
            F.cross_entropy(head(trunk(x)), torch.tensor([0, 1])).backward()
            opt.step()

    out = capture(lambda: loop(trunk, head), steps=2)
    assert "layer_fallback" not in out.attributes
    assert {r["layer"] for r in out.where(kind="input")} == {"", "second"}  # the head: a model of its own
    out = capture(lambda: loop(head, trunk), steps=2)
    assert out.attributes["layer_fallback"] == "leaf"


def test_parameters_of_no_model_are_named_by_their_optimizer(capture: Any) -> None:
    # SAC's temperature: a tensor of its own, stepped by an optimizer of its own. Unrecorded, a
    # change to its update showed first in the next step's loss.
    policy = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
    log_alpha = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    alpha_opt = torch.optim.Adam([log_alpha], lr=0.01)
    inline = torch.optim.SGD([torch.ones(2, requires_grad=True)], lr=0.1, momentum=0.9)

    def loop() -> None:
        for i in range(3):
            logits = policy(torch.rand(4, 4))
            entropy = -(logits.log_softmax(-1).exp() * logits.log_softmax(-1)).sum(-1).mean()
            (logits.square().mean() - log_alpha.exp().detach() * entropy).backward()
            opt.step()
            (-(log_alpha * (i - entropy.detach()))).backward()
            alpha_opt.step()
            inline.param_groups[0]["params"][0].sum().backward()
            inline.step()

    out = capture(loop, steps=2)
    unique_keys(out)
    for step in (0, 1):  # its gradient (step 0's as the optimizer first met it, then from its hook)
        assert [(r["phase"], r["name"]) for r in out.where(step=step, layer="alpha_opt")] == [
            ("param_grad", "log_alpha"), ("after_step", "log_alpha"), ("after_step", "log_alpha.step"),
            ("after_step", "log_alpha.exp_avg"), ("after_step", "log_alpha.exp_avg_sq")]
        assert [(r["phase"], r["name"]) for r in out.where(step=step, layer="inline")] == [
            ("param_grad", "param0"), ("after_step", "param0"), ("after_step", "param0.momentum_buffer")]
    grads = out.where(layer="alpha_opt", kind="param_grad")
    assert {r["layer_type"] for r in grads} == {"torch.optim.adam.Adam"} and grads[0]["hash"] != grads[1]["hash"]
    assert [(r["layer"], r["name"]) for r in out.where(phase="init") if r["layer"] in ("alpha_opt", "inline")] == [
        ("alpha_opt", "log_alpha"), ("inline", "param0")]
    assert out.where(layer="alpha_opt", name="log_alpha", phase="init")[0]["layer_type"] == "torch.optim.adam.Adam"


SPAWNED_WORKER = '''
import torch, torch.nn as nn, torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

class Blurred(Dataset):  # a module with parameters runs in the worker
    def __init__(self):
        self.x, self.blur = torch.rand(16, 3, 6, 6), nn.Conv2d(3, 3, 3, padding=1, bias=False)
    def __len__(self):
        return 16
    def __getitem__(self, i):
        with torch.no_grad():
            return self.blur(self.x[i:i + 1])[0], i % 2

if __name__ == "__main__":
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in DataLoader(Blurred(), batch_size=4, num_workers=1, multiprocessing_context="spawn"):
        F.cross_entropy(model(x), y).backward()
        opt.step()
'''


def test_a_spawned_data_loader_worker_records_nothing(tmp_path: Any) -> None:
    # A worker started by spawn runs the start-up hook too: it adopted the dataset's conv as a model
    # and took the dump's lock, and the script failed on its first batch.
    (tmp_path / "train.py").write_text(SPAWNED_WORKER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROCHECK_")}
    env.update(REPROCHECK_CAPTURE=str(tmp_path / "run.h5"), REPROCHECK_RUN_OPTIONS='{"steps": 2}')
    r = subprocess.run([sys.executable, str(tmp_path / "train.py")], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    from conftest import Captured

    out = Captured(str(tmp_path / "run.h5"))
    assert {r["layer"] for r in out.where(phase="forward")} == {"0"}
    assert {r["step"] for r in out.where(kind="loss")} == {0, 1}
