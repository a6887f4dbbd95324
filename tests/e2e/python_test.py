"""The Python front end end to end: `reprocheck run -- python SCRIPT` on the fixture training
scripts (fixtures/scripts), with h5py reading the dumps as an outside client."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import h5py
import numpy as np
import xxhash

BIN = os.environ["REPROCHECK_BINARY"]
PY = os.environ["REPROCHECK_PYTHON"]
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "scripts")
TORCHRUN = os.path.join(os.path.dirname(PY), "torchrun")


def reprocheck(*args, timeout=300, env=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, cwd=SCRIPTS, env=env)


def script(name):
    return os.path.join(SCRIPTS, name + ".py")


def loop(name):
    return os.path.join(SCRIPTS, "loops", name + ".py")


def plain_report(path, *args):
    """What the script computes without reprocheck: XXH3 of each loss and of the final parameters."""
    with tempfile.TemporaryDirectory() as d:
        report = os.path.join(d, "report.json")
        env = dict(os.environ, FIXTURE_REPORT=report)
        r = subprocess.run([PY, path, *args], capture_output=True, text=True, cwd=os.path.dirname(path), env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        with open(report) as f:
            return json.load(f)


def keys_are_unique(test, rows):
    keys = [(r["step"], r["phase"], r["layer"], r["kind"], r["name"], r["call"]) for r in rows]
    test.assertEqual(len(keys), len(set(keys)), [k for k in keys if keys.count(k) > 1][:5])


# Training loops as people write them (fixtures/scripts/loops): the loss records the plain script's
# report holds, by the call index of the loss within its step (None: all of them).
LOOP_SHAPES = {"grad_accum": None, "gan": 1, "two_loaders": None, "two_optimizers": None, "lbfgs": 0,
               "eval_between": None, "set_to_none": None, "probed": None}


def index(path):
    with h5py.File(path) as f:
        rows = f["index"][:]
        attrs = dict(f.attrs)
    out = []
    for r in rows:
        out.append({k: (r[k].decode() if isinstance(r[k], bytes) else r[k]) for k in rows.dtype.names})
    return out, attrs


def tensor(path, row):
    with h5py.File(path) as f:
        return f[row["dataset"]][()]


class Reproducible(unittest.TestCase):
    """Every fully seeded fixture script: 10 runs in fresh processes agree bitwise."""

    def check(self, *command, runs=10):
        r = reprocheck("run", "--runs", str(runs), "--jobs", "2", "--", *command)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("verdict: REPRODUCIBLE", r.stdout)
        self.assertIn(f"{runs} runs of 2 step(s)", r.stdout)

    def test_cnn_with_augmentation_and_workers(self):
        self.check(PY, script("cnn_augment"))

    def test_adamw(self):
        self.check(PY, script("adamw_mlp"))

    def test_bf16_autocast(self):
        self.check(PY, script("bf16_autocast"))

    def test_text_classifier(self):
        self.check(PY, script("text_classifier"))

    def test_ddp_two_ranks(self):
        self.check(TORCHRUN, "--nproc_per_node", "2", script("ddp_train"))


class LoopShapes(unittest.TestCase):
    """Each loop shape is reproducible, writes one record per key, and the capture changes no loss."""

    def run_shape(self, name):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--runs", "3", "--jobs", "2", "--hashes-only", "--keep", d, "--", PY, loop(name))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("verdict: REPRODUCIBLE", r.stdout)
        rows, attrs = index(os.path.join(d, "run-0.h5"))
        keys_are_unique(self, rows)
        plain = plain_report(loop(name))
        call = LOOP_SHAPES[name]
        losses = [int(r["hash"]) for r in rows if r["kind"] == "loss" and (call is None or r["call"] == call)]
        self.assertTrue(losses)
        self.assertEqual(losses, plain["losses"][:len(losses)])
        return rows, attrs

    def test_gradient_accumulation_records_each_micro_batch_once(self):
        rows, _ = self.run_shape("grad_accum")
        for step in (0, 1):
            batches = [r["call"] for r in rows if r["step"] == step and r["kind"] == "indices"]
            self.assertEqual(batches, [0, 1])  # two micro-batches per optimizer step, in order
            grads = [r["call"] for r in rows if r["step"] == step and r["kind"] == "param_grad" and r["layer"] == "fc"
                     and r["name"] == "weight"]
            self.assertEqual(grads, [0, 1])

    def test_a_gan_records_both_models_and_both_optimizers(self):
        rows, attrs = self.run_shape("gan")
        layers = {r["layer"] for r in rows if r["phase"] == "forward"}
        self.assertTrue({"netD.0", "netD.2"} <= layers, layers)  # the discriminator, named by its variable
        stepped = {r["layer"].split(".")[0] for r in rows if r["phase"] == "after_step" and r["kind"] == "param"
                   and r["step"] == 0}
        self.assertEqual(stepped, {"netD", "0", "2"})  # netD's and the generator's layers 0 and 2
        self.assertEqual([r["call"] for r in rows if r["kind"] == "loss" and r["step"] == 0], [0, 1])

    def test_two_loaders_are_told_apart(self):
        rows, attrs = self.run_shape("two_loaders")
        loaders = json.loads(attrs["data_loaders"])
        self.assertEqual(sorted(loaders), ["", "val_loader"])
        self.assertEqual(loaders["val_loader"]["sampler"], "torch.utils.data.sampler.SequentialSampler")
        val = [r for r in rows if r["layer"] == "val_loader" and r["kind"] == "indices"]
        self.assertEqual(len(val), 2)  # 16 validation samples in batches of 8, after step 0

    def test_other_shapes(self):
        for name in ("two_optimizers", "lbfgs", "eval_between", "set_to_none", "probed"):
            with self.subTest(shape=name):
                rows, _ = self.run_shape(name)
                if name == "lbfgs":  # the closure runs several times within one step
                    self.assertGreater(len([r for r in rows if r["kind"] == "loss" and r["step"] == 0]), 1)
                if name == "set_to_none":  # a frozen parameter has no gradient
                    self.assertFalse([r for r in rows if r["kind"] == "param_grad" and r["layer"] == "bn"
                                      and r["name"] == "weight"])
                if name == "probed":  # the features run before the model was made are a part of it
                    grads = {r["layer"] for r in rows if r["kind"] == "param_grad" and r["step"] == 1}
                    self.assertEqual(grads, {"model.features.0", "model.features.0.parametrizations.weight",
                                             "model.features.1", "model.fc"})
                    self.assertEqual({r["step"] for r in rows if r["kind"] == "loss"}, {0, 1})


class Compiled(unittest.TestCase):
    """torch.compile (inductor): the capture leaves the compiled program alone."""

    def test_instrumented_equals_plain(self):
        for form in ([], ["--in-place"]):
            with self.subTest(form=form or "torch.compile(model)"):
                path = script("compiled_cnn")
                plain = plain_report(path, "--max-steps", "2", *form)
                d = tempfile.mkdtemp()
                r = reprocheck("run", "--hashes-only", "--keep", d, "--", PY, path, *form, timeout=600)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertIn("is compiled (torch.compile)", r.stdout)
                rows, _ = index(os.path.join(d, "run-0.h5"))
                self.assertEqual([int(r["hash"]) for r in rows if r["kind"] == "loss"], plain["losses"])
                final = {(r["layer"] + "." + r["name"]).lstrip("."): int(r["hash"]) for r in rows
                         if r["phase"] == "after_step" and r["kind"] == "param" and r["step"] == 1}
                self.assertEqual(final, plain["params"])


class Capture(unittest.TestCase):
    """What a run records, and that recording changes no number."""

    def keep(self, name, *flags, command=None):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--keep", d, *flags, "--", *(command or [PY, script(name)]))
        self.assertIn(r.returncode, (0, 1), r.stdout + r.stderr)
        return d

    def plain(self, name, steps=2):
        with tempfile.TemporaryDirectory() as d:
            report = os.path.join(d, "report.json")
            env = dict(os.environ, FIXTURE_REPORT=report)
            r = subprocess.run([PY, script(name), "--max-steps", str(steps)], capture_output=True, text=True,
                               cwd=SCRIPTS, env=env, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            with open(report) as f:
                return json.load(f)

    def test_instrumented_equals_plain(self):
        for name in ("cnn_augment", "adamw_mlp", "bf16_autocast", "text_classifier"):
            with self.subTest(script=name):
                plain = self.plain(name)
                rows, _ = index(os.path.join(self.keep(name), "run-0.h5"))
                losses = [int(r["hash"]) for r in rows if r["kind"] == "loss"]
                self.assertEqual(losses, plain["losses"])
                final = {(r["layer"] + "." + r["name"]).lstrip("."): int(r["hash"]) for r in rows
                         if r["phase"] == "after_step" and r["kind"] == "param" and r["step"] == 1}
                self.assertEqual(final, plain["params"])

    def test_record_order_within_each_step(self):
        rows, attrs = index(os.path.join(self.keep("cnn_augment"), "run-0.h5"))
        self.assertEqual(attrs["front_end"], "python")
        self.assertEqual(attrs["model"], script("cnn_augment"))
        self.assertEqual(rows[0]["kind"], "indices")  # the first batch comes before the model runs
        phases = [r["phase"] for r in rows if r["step"] == 1]
        firsts = sorted(set(phases), key=phases.index)
        # fc is not tapped: its parameter gradients come before the first tapped layer's gradient.
        self.assertEqual(firsts, ["input", "rng", "forward", "output", "loss", "param_grad", "backward",
                                  "after_step"])
        forward = [r["layer"] for r in rows if r["step"] == 0 and r["phase"] == "forward"]
        backward = [r["layer"] for r in rows if r["step"] == 0 and r["phase"] == "backward"]
        self.assertEqual(forward, ["conv1", "bn1", "conv2", "drop"])  # default: conv, batch norm, dropout
        self.assertEqual(backward, forward[::-1])  # gradients in backward order
        tapped = [r for r in rows if r["phase"] == "forward"]
        self.assertTrue(all(r["has_input_hash"] for r in tapped))
        init = [r for r in rows if r["phase"] == "init"]
        self.assertTrue(init and all(r["step"] == -1 for r in init))
        optim = {r["name"] for r in rows if r["kind"] == "optim_state"}
        self.assertIn("weight.momentum_buffer", optim)

    def test_adam_state_is_recorded(self):
        rows, _ = index(os.path.join(self.keep("adamw_mlp"), "run-0.h5"))
        optim = {r["name"] for r in rows if r["kind"] == "optim_state" and r["layer"] == "0"}
        self.assertEqual(optim, {"weight.exp_avg", "weight.exp_avg_sq", "weight.step", "bias.exp_avg",
                                 "bias.exp_avg_sq", "bias.step"})
        # No conv, dropout... it has a Dropout: default layers tap it; LayerNorm is not tapped.
        layers = {r["layer"] for r in rows if r["phase"] == "forward"}
        self.assertEqual(layers, {"2"})

    def test_ops_taps_the_functions_inside_layers(self):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--ops", "--runs", "2", "--keep", d, "--", PY, script("adamw_mlp"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rows, _ = index(os.path.join(d, "run-0.h5"))
        ops = [r["layer"] for r in rows if r["phase"] == "forward" and ":" in r["layer"] and r["step"] == 0]
        self.assertIn("0:linear#0", ops)
        self.assertIn("4:layer_norm#0", ops)
        self.assertIn("1:gelu#0", ops)

    def test_autocast_records_tensors_in_their_dtype(self):
        rows, _ = index(os.path.join(self.keep("bf16_autocast"), "run-0.h5"))
        conv = [r for r in rows if r["phase"] == "forward" and r["layer"] == "0"]
        self.assertEqual(conv[0]["dtype"], "bfloat16")
        loss = [r for r in rows if r["kind"] == "loss"]
        self.assertEqual(loss[0]["dtype"], "float32")

    def test_batches_carry_their_dataset_indices(self):
        sys.path.insert(0, SCRIPTS)
        import text_classifier

        corpus = text_classifier.CORPUS
        words = sorted({w for t, _ in corpus for w in t.split()})
        vocab = {w: i + 1 for i, w in enumerate(words)}
        length = max(len(t.split()) for t, _ in corpus)
        ids = np.array([[vocab[w] for w in t.split()] + [0] * (length - len(t.split())) for t, _ in corpus])
        labels = np.array([label for _, label in corpus])
        path = os.path.join(self.keep("text_classifier"), "run-0.h5")
        rows, attrs = index(path)
        loaders = json.loads(attrs["data_loaders"])
        self.assertEqual(list(loaders), [""])  # the first DataLoader's records have layer ""
        self.assertEqual(loaders[""]["workers"], 0)
        self.assertEqual(loaders[""]["sampler"], "torch.utils.data.sampler.RandomSampler")
        seen = []
        for step in (0, 1):
            by_name = {r["name"]: r for r in rows if r["step"] == step and r["phase"] == "input" and r["kind"] in ("indices", "batch")}
            idx = tensor(path, by_name["indices"])
            self.assertEqual(len(idx), 4)
            np.testing.assert_array_equal(tensor(path, by_name["batch[0]"]), ids[idx])
            np.testing.assert_array_equal(tensor(path, by_name["batch[1]"]), labels[idx])
            seen += list(idx)
            self.assertEqual(by_name["indices"]["layer_type"], "torch.utils.data.DataLoader")
        self.assertEqual(len(set(seen)), 8)  # one epoch: every sample once, shuffled

    def test_rng_records_hold_the_generators_states(self):
        probe = os.path.join(tempfile.mkdtemp(), "probe.py")
        with open(probe, "w") as f:
            f.write(textwrap.dedent("""
                import json, random, sys
                import numpy as np
                import torch
                random.seed(3); np.random.seed(4); torch.manual_seed(5)
                random.random(); np.random.rand(); torch.rand(2)
                model = torch.nn.Linear(2, 1)
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                for step in range(2):
                    x = torch.randn(3, 2)
                    states = {"torch": torch.get_rng_state().tolist(), "random": list(random.getstate()[1]),
                              "numpy": np.random.get_state()[1].tolist()}
                    with open(sys.argv[1] + f".{step}.json", "w") as out:
                        json.dump(states, out)
                    model(x).sum().backward()
                    opt.step()
                    random.random()
                    np.random.rand()
            """))
        d = tempfile.mkdtemp()
        expected = os.path.join(d, "states")
        r = reprocheck("run", "--runs", "2", "--keep", d, "--", PY, probe, expected)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        path = os.path.join(d, "run-0.h5")
        rows, _ = index(path)
        for step in (0, 1):
            with open(f"{expected}.{step}.json") as f:
                states = json.load(f)
            rng = {r["name"]: tensor(path, r) for r in rows if r["kind"] == "rng_state" and r["step"] == step}
            self.assertEqual(set(rng), {"torch", "random", "numpy"})
            self.assertEqual(rng["torch"].tolist(), states["torch"])
            self.assertEqual(rng["random"].tolist(), states["random"])
            self.assertEqual(rng["numpy"].view(np.uint32)[:624].tolist(), states["numpy"])


class Ladder(unittest.TestCase):
    """Hash-only capture in a training script, and goldens for `run`."""

    def test_device_hash_is_the_cores_hash_words(self):
        code = """
import torch
from reprocheck import _core
from reprocheck._util import device_hash, host_array
torch.manual_seed(0)
for t in (torch.randn(1001), torch.randn(3, 5).t(), torch.randn(7).to(torch.bfloat16), torch.tensor([True, False, True]),
          torch.randint(-9, 9, (13,), dtype=torch.int8), torch.arange(5, dtype=torch.int64) - 2, torch.zeros(0)):
    want = _core.hash_words(host_array(t))
    got = int(device_hash(t)) & 0xFFFFFFFFFFFFFFFF
    assert got == want, (t.dtype, got, want)
print("ok")
"""
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "ok")

    def test_hash_only_capture_computes_the_same_numbers(self):
        cap = Capture()
        plain = cap.plain("adamw_mlp")
        d = cap.keep("adamw_mlp", "--hashes-only")
        rows, attrs = index(os.path.join(d, "run-0.h5"))
        self.assertEqual(attrs["capture"], "hashes")
        self.assertTrue(all(r["dataset"].startswith("hash:") for r in rows))
        with h5py.File(os.path.join(d, "run-0.h5")) as f:
            self.assertEqual(len(f["tensors"]), 0)
        self.assertEqual([int(r["hash"]) for r in rows if r["kind"] == "loss"], plain["losses"])
        final = {(r["layer"] + "." + r["name"]).lstrip("."): int(r["hash"]) for r in rows
                 if r["phase"] == "after_step" and r["kind"] == "param" and r["step"] == 1}
        self.assertEqual(final, plain["params"])

    def test_pass_two_keeps_the_plans_data_and_stops_after_it(self):
        # The capture ladder's pass 2 in a script: hashes, the data of the plan's records only, and
        # the script ends at the next point where its own code runs once they are written.
        def capture(d, name, **options):
            path = os.path.join(d, name)
            env = dict(os.environ, REPROCHECK_CAPTURE=path,
                       REPROCHECK_RUN_OPTIONS=json.dumps(dict(steps=2, hashes_only=True, **options)))
            r = subprocess.run([PY, script("cnn_augment")], capture_output=True, text=True, cwd=SCRIPTS, env=env,
                               timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            return index(path)[0]

        def key(r):
            return f"{r['step']}|{r['phase']}|{r['layer']}|{r['kind']}|{r['name']}|{r['call']}"

        with tempfile.TemporaryDirectory() as d:
            pass1 = capture(d, "pass1.h5")
            first = [r for r in pass1 if r["step"] == 0 and r["phase"] == "forward"][0]
            plan = os.path.join(d, "plan")
            with open(plan, "w") as f:
                f.write(key(first) + "\n")
            pass2 = capture(d, "pass2.h5", capture_plan=plan)
            self.assertEqual([key(r) for r in pass2 if not r["dataset"].startswith("hash:")], [key(first)])
            self.assertTrue(any(r["phase"] == "output" and r["step"] == 0 for r in pass2))
            self.assertFalse(any(r["phase"] in ("backward", "param_grad", "after_step") or r["step"] == 1
                                 for r in pass2), [key(r) for r in pass2])
            hashes = {key(r): r["hash"] for r in pass1}
            for r in pass2:
                self.assertEqual(r["hash"], hashes[key(r)], key(r))
            # Drilling as well (pass 3's ops in the same run): the whole step, the ops with data.
            drill = capture(d, "drill.h5", capture_plan=plan, drill_step=0)
            self.assertTrue(any(r["phase"] == "after_step" and r["step"] == 0 for r in drill))
            ops = [r for r in drill if ":aten::" in r["layer"] or r["layer"].startswith("aten::")]
            self.assertTrue(ops)
            self.assertTrue(all(not r["dataset"].startswith("hash:") for r in ops))

    def test_default_run_is_hashes_first(self):
        with tempfile.TemporaryDirectory() as d:
            j = os.path.join(d, "r.json")
            r = reprocheck("run", "--json", j, "--", PY, script("adamw_mlp"))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            with open(j) as f:
                report = json.load(f)
            self.assertEqual(report["capture"]["mode"], "ladder")
            self.assertFalse(report["capture"]["pass2"])

    def test_golden_of_a_script(self):
        with tempfile.TemporaryDirectory() as d:
            train = os.path.join(d, "train.py")
            with open(train, "w") as f:
                f.write(
                    "import os, torch\n"
                    "torch.manual_seed(0)\n"
                    "model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))\n"
                    "opt = torch.optim.SGD(model.parameters(), lr=float(os.environ.get('LR', '0.1')))\n"
                    "x, y = torch.randn(16, 4), torch.randn(16, 1)\n"
                    "for _ in range(3):\n"
                    "    opt.zero_grad()\n"
                    "    torch.nn.functional.mse_loss(model(x), y).backward()\n"
                    "    opt.step()\n")
            golden = os.path.join(d, "golden.h5")
            r = reprocheck("run", "--save-baseline", golden, "--", PY, train)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            r = reprocheck("run", "--baseline", golden, "--", PY, train)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("verdict: MATCHES THE GOLDEN", r.stdout)
            j = os.path.join(d, "r.json")
            r = reprocheck("run", "--baseline", golden, "--env", "LR=0.2", "--json", j, "--", PY, train)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("verdict: NUMERICS CHANGED", r.stdout)
            with open(j) as f:
                fd = json.load(f)["first_divergence"]
            # The learning rate first shows in the parameters after step 0.
            self.assertEqual((fd["step"], fd["phase"], fd["kind"]), (0, "after_step", "param"))
            with open(j) as f:
                full = json.load(f)
            hints = full["hints"]
            # The script's dump records where it ran: the CPU, the BLAS and the threads it had.
            prov = full["baseline"]["provenance"]
            self.assertTrue(prov["cpu"] and prov["blas"], prov)
            self.assertGreaterEqual(int(prov["torch_threads"]), 1)
            self.assertEqual(full["baseline"]["environment_diffs"], [])
            # A change since the golden, in the run front end's terms.
            self.assertEqual(hints[0]["cause"], "option_changed")
            self.assertIn("LR=0.2", hints[0]["evidence"])
            self.assertTrue(hints[0]["test_it"].startswith("reprocheck run "), hints[0]["test_it"])
            self.assertTrue(hints[0]["test_it"].endswith(f"-- {PY} {train}"), hints[0]["test_it"])
            self.assertNotIn("MODEL.pt", r.stdout)
            self.assertNotIn("reprocheck record", r.stdout)


class Layers(unittest.TestCase):
    SCRIPT = textwrap.dedent("""
        import torch, torch.nn as nn, torch.nn.functional as F

        class ScaledStdConv2d(nn.Conv2d):  # timm's kind: a conv by ancestry, a name of its own
            def forward(self, x):
                w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                                 eps=1e-6).reshape_as(self.weight)
                return F.conv2d(x, w, self.bias, self.stride, self.padding)

        class BatchNormAct2d(nn.BatchNorm2d):
            def forward(self, x):
                return torch.relu(super().forward(x))

        torch.manual_seed(0)
        model = nn.Sequential(ScaledStdConv2d(3, 4, 3, padding=1), BatchNormAct2d(4), nn.Flatten(), nn.Linear(64, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            loss = model(torch.rand(2, 3, 4, 4)).sum()
            opt.zero_grad(); loss.backward(); opt.step()
    """)

    def setUp(self):
        self.path = os.path.join(tempfile.mkdtemp(), "subclasses.py")
        with open(self.path, "w") as f:
            f.write(self.SCRIPT)

    def test_subclasses_are_layers_of_their_kind(self):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--hashes-only", "--keep", d, "--", PY, self.path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rows, attrs = index(os.path.join(d, "run-0.h5"))
        self.assertEqual({r["layer"] for r in rows if r["phase"] == "forward"}, {"0", "1"})
        self.assertEqual(json.loads(attrs["layer_categories"])["__main__.ScaledStdConv2d"], "conv")

    def test_selectors_combine_and_an_unknown_one_is_an_error(self):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--hashes-only", "--keep", d, "--layers", "default,Linear", "--", PY, self.path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rows, _ = index(os.path.join(d, "run-0.h5"))
        self.assertEqual({r["layer"] for r in rows if r["phase"] == "forward"}, {"0", "1", "3"})
        r = reprocheck("run", "--layers", "default,Lineer", "--", PY, self.path)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("unknown --layers selector 'Lineer'", r.stderr)
        self.assertIn("ScaledStdConv2d", r.stderr)
        self.assertNotIn("Traceback", r.stderr)


class Errors(unittest.TestCase):
    def one_line(self, r):
        lines = [l for l in r.stderr.splitlines() if l.startswith("reprocheck: error: ")]
        self.assertEqual(len(lines), 1, r.stderr)
        return lines[0]

    def write(self, text):
        path = os.path.join(tempfile.mkdtemp(), "script.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def test_no_optimizer_step(self):
        path = self.write("""
            import torch
            model = torch.nn.Linear(2, 1)
            model(torch.randn(4, 2)).sum().backward()
        """)
        r = reprocheck("run", "--", PY, path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("never called optimizer.step()", self.one_line(r))

    def test_no_module(self):
        path = self.write("""
            import torch
            print(torch.ones(2).sum())
        """)
        r = reprocheck("run", "--", PY, path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no nn.Module ran forward", self.one_line(r))

    def test_a_python_without_the_package(self):
        path = self.write("print('hello')\n")
        r = reprocheck("run", "--", "/usr/bin/python3", path)
        self.assertEqual(r.returncode, 2)
        line = self.one_line(r)
        self.assertIn("does not have the reprocheck package", line)
        self.assertIn("pip install", line)

    def test_no_command(self):
        r = reprocheck("run", "--runs", "2")
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs the command after '--'", self.one_line(r))

    def test_the_scripts_own_failure_is_a_failed_run(self):
        path = self.write("raise RuntimeError('boom')\n")
        r = reprocheck("run", "--", PY, path)
        self.assertEqual(r.returncode, 3)
        self.assertIn("RuntimeError: boom", r.stderr)


class Knobs(unittest.TestCase):
    def test_vary_threads_names_the_knob(self):
        r = reprocheck("run", "--vary", "threads=1,2", "--", PY, script("adamw_mlp"))
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertIn("run 1 differs from run 0 in: threads (1 vs 2)", r.stdout)

    def test_interop_threads_reach_the_script(self):
        d = tempfile.mkdtemp()
        path = os.path.join(d, "interop.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""
                import os, torch
                with open(os.path.join({d!r}, "seen-%d" % os.getpid()), "w") as out:
                    out.write(str(torch.get_num_interop_threads()))
                torch.manual_seed(0)
                model = torch.nn.Linear(4, 1)
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                for step in range(2):
                    model(torch.ones(2, 4)).sum().backward()
                    opt.step()
            """))
        r = reprocheck("run", "--interop-threads", "3", "--", PY, path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        seen = [open(os.path.join(d, n)).read() for n in os.listdir(d) if n.startswith("seen-")]
        self.assertEqual(seen, ["3", "3"])

    def test_vary_env_reaches_the_script(self):
        path = os.path.join(tempfile.mkdtemp(), "hashseed.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                import torch
                words = list({"a", "bb", "ccc", "dddd", "eeeee", "ffffff"})
                torch.manual_seed(0)
                model = torch.nn.Linear(6, 1)
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                for step in range(2):
                    x = torch.tensor([[float(len(w)) * (i + 1) for i, w in enumerate(words)]])
                    model(x).sum().backward()
                    opt.step()
            """))
        r = reprocheck("run", "--vary", "env:PYTHONHASHSEED=1,2", "--", PY, path)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("env (", r.stdout)
        r = reprocheck("run", "--env", "PYTHONHASHSEED=0", "--", PY, path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_isolate_replays_sources_in_the_script(self):
        r = reprocheck("run", "--vary", "threads=1,2", "--isolate", "--json", os.path.join(tempfile.mkdtemp(), "r.json"),
                       "--", PY, script("cnn_augment"))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("with these replayed from run 0, the runs agree through step 0", r.stdout)
        self.assertIn("1. step 0 · param_grad · conv1.weight (Conv2d)", r.stdout)

    def test_ddp_dumps_name_the_rank(self):
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--keep", d, "--", TORCHRUN, "--nproc_per_node", "2", script("ddp_train"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rows, attrs = index(os.path.join(d, "run-0.h5"))
        self.assertEqual(int(attrs["ranks"]), 2)
        self.assertTrue(any(r["layer"].startswith("rank1/") for r in rows))
        losses = [r["layer"] for r in rows if r["kind"] == "loss"]
        self.assertEqual(sorted(set(losses)), ["rank0", "rank1"])


class Distributed(unittest.TestCase):
    """FSDP2 and tensor parallelism (torchrun, 2 ranks over Gloo): shards recorded per rank."""

    def test_fsdp2_instrumented_equals_plain(self):
        path = script("fsdp2_train")
        with tempfile.TemporaryDirectory() as plain_dir:
            report = os.path.join(plain_dir, "report.json")
            r = subprocess.run([TORCHRUN, "--nproc_per_node", "2", path, "--max-steps", "2"], capture_output=True,
                               text=True, cwd=SCRIPTS, env=dict(os.environ, FIXTURE_REPORT=report), timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            plain = {}
            for rank in (0, 1):
                with open(f"{report}.rank{rank}") as f:
                    plain[rank] = json.load(f)
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--keep", d, "--", TORCHRUN, "--nproc_per_node", "2", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        rows, attrs = index(os.path.join(d, "run-0.h5"))
        for rank in (0, 1):
            prefix = f"rank{rank}"
            mine = [r for r in rows if r["layer"] == prefix or r["layer"].startswith(prefix + "/")]
            self.assertEqual([int(r["hash"]) for r in mine if r["kind"] == "loss"], plain[rank]["losses"])
            final = {(r["layer"][len(prefix) + 1:] + "." + r["name"]).lstrip("."): int(r["hash"]) for r in mine
                     if r["phase"] == "after_step" and r["kind"] == "param" and r["step"] == 1}
            self.assertEqual(final, plain[rank]["params"])
        # Each rank's shard says where it sits in the full parameter: rows 8:16 of [16, 10] on rank 1.
        shards = json.loads(attrs["shards"])
        self.assertEqual(shards["rank1/0.weight"]["slice"], "[8:16, 0:10]")
        self.assertEqual(shards["rank1/0.weight"]["shape"], [16, 10])
        self.assertEqual(shards["rank0/0.weight"]["placements"], "Shard(dim=0)")
        self.assertIn("rank1/0.weight.exp_avg", shards)
        grads = [r for r in rows if r["kind"] == "param_grad" and r["layer"] == "rank1/0" and r["name"] == "weight"]
        self.assertTrue(grads and all(list(g["shape"]) == [8, 10] for g in grads), grads)
        self.assertNotIn("replica_notes", attrs)  # shards are not replicas

    def test_fsdp1_flat_parameters_are_shards_not_replicas(self):
        path = os.path.join(tempfile.mkdtemp(), "fsdp1.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                import torch, torch.distributed as dist, torch.nn as nn
                from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
                dist.init_process_group("gloo")
                torch.manual_seed(0)
                model = FSDP(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)),
                             device_id=torch.device("cpu"))
                opt = torch.optim.AdamW(model.parameters(), lr=0.01)
                g = torch.Generator().manual_seed(3 + dist.get_rank())
                for step in range(2):
                    loss = model(torch.randn(4, 8, generator=g)).pow(2).mean()
                    opt.zero_grad(); loss.backward(); opt.step()
                dist.destroy_process_group()
            """))
        d = tempfile.mkdtemp()
        r = reprocheck("run", "--keep", d, "--", TORCHRUN, "--nproc_per_node", "2", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("replicas disagree", r.stdout)
        _, attrs = index(os.path.join(d, "run-0.h5"))
        shards = json.loads(attrs["shards"])
        self.assertEqual(shards["rank1/_fsdp_wrapped_module._flat_param"]["slice"], "[106:212]")

    def test_a_failed_rank_says_why(self):
        path = os.path.join(tempfile.mkdtemp(), "rank_fails.py")
        with open(path, "w") as f:
            f.write(textwrap.dedent("""
                import time
                import torch, torch.distributed as dist
                dist.init_process_group("gloo")
                torch.manual_seed(0)
                model = torch.nn.Linear(4, 1)
                opt = torch.optim.SGD(model.parameters(), lr=0.1)
                model(torch.ones(2, 4)).sum().backward()
                opt.step()
                if dist.get_rank() == 1:
                    raise ValueError("the shard file for rank 1 is missing")
                time.sleep(30)
            """))
        r = reprocheck("run", "--", TORCHRUN, "--nproc_per_node", "2", path)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn("rank 1 raised ValueError: the shard file for rank 1 is missing", r.stderr)


if __name__ == "__main__":
    unittest.main()
