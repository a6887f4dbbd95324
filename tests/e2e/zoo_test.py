"""Runs the zoo of planted nondeterminism (fixtures/zoo/cases.py) and checks each verdict and
hint, plus the deterministic controls and the isolation of two independent sources.

    python zoo_test.py cpu|gpu|controls|layers|isolate|ladder
A GPU selection without a CUDA device exits 77 (ctest: skipped).
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]
OPS = os.environ["REPROCHECK_ZOO_OPS"]
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "zoo"))
from cases import CASES  # noqa: E402

FIXTURES = ["seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet"]


def cuda_available():
    r = subprocess.run([BIN, "--version"], capture_output=True, text=True)
    return "(available" in r.stdout


def reprocheck(model, args, json_path, zoo_ops=False):
    cmd = [BIN, os.path.join(FIX, model + ".pt"), "--json", json_path, *args]
    if zoo_ops:
        cmd += ["--load-library", OPS]
    if "--device" not in args:
        cmd += ["--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


class Zoo(unittest.TestCase):
    GPU = False

    def test_cases(self):
        cases = [c for c in CASES if c.get("gpu", False) == self.GPU]
        self.assertTrue(cases)
        for case in cases:
            with self.subTest(case=case["name"]), tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "r.json")
                r = reprocheck(case["model"], case["args"], path, case.get("zoo_ops", False))
                if case.get("verdict") == "any" and r.returncode == 0:
                    continue  # no divergence this time: nothing to explain
                self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
                with open(path) as f:
                    report = json.load(f)
                fd = report["first_divergence"]
                for key, want in case.get("first", {}).items():
                    if key == "phase_in":
                        self.assertIn(fd["phase"], want, fd)
                    elif key == "layer_prefix":
                        self.assertTrue(fd["layer"].startswith(want), fd)
                    else:
                        self.assertEqual(fd[key], want, (key, fd))
                hint = report["hints"][0]
                self.assertEqual(hint["cause"], case["cause"], report["hints"])
                if "evidence" in case:
                    self.assertIn(case["evidence"], hint["evidence"])
                if "fix_flag" in case:
                    self.assertIn(case["fix_flag"], hint["fix_flag"])
                causes = [h["cause"] for h in report["hints"]]
                for also in case.get("also", []):
                    self.assertIn(also, causes[1:])
                if "never_test" in case:
                    for h in report["hints"]:
                        self.assertNotIn(case["never_test"], h["test_it"], h)
                self.assertIn("likely cause", r.stdout)
                dd = report["drill_down"]
                if case.get("drill") == "any":
                    pass  # whether pass 3 runs depends on where the divergence lands
                elif case.get("drill") is None:
                    self.assertIsNone(dd)  # already at op granularity, or a record that names its cause
                else:
                    self.assertTrue(dd["found"], dd)
                    for key, want in case["drill"].items():
                        self.assertEqual(dd[key], want, (key, dd))
                    self.assertIn(dd["op"], r.stdout)


class ZooGpu(Zoo):
    GPU = True


class Controls(unittest.TestCase):
    """Every fixture with fixed seeds: 20 runs, no false divergence."""

    def test_twenty_runs_per_fixture(self):
        for model in FIXTURES:
            with self.subTest(model=model), tempfile.TemporaryDirectory() as tmp:
                r = reprocheck(model, ["--runs", "20", "--jobs", "2"], os.path.join(tmp, "r.json"))
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                with open(os.path.join(tmp, "r.json")) as f:
                    report = json.load(f)
                self.assertEqual(len(report["runs"]), 20)
                self.assertEqual(report["hints"], [])
                self.assertIsNone(report["drill_down"])  # a passing check never runs pass 3


class Layers(unittest.TestCase):
    """TorchScript flattens classes: a subclass of nn.Conv2d or nn.BatchNorm2d (timm's
    ScaledStdConv2d, BatchNormAct2d) is known by the ops its forward calls."""

    def test_default_taps_subclasses_by_their_ops(self):
        import h5py

        with tempfile.TemporaryDirectory() as tmp:
            dump = os.path.join(tmp, "run.h5")
            r = subprocess.run([BIN, "record", os.path.join(FIX, "subclass_net.pt"), "-o", dump], capture_output=True,
                               text=True, timeout=300)
            self.assertEqual(r.returncode, 0, r.stderr)
            with h5py.File(dump) as f:
                layers = {row["layer"].decode() for row in f["index"][:] if row["phase"] == b"forward"}
                categories = json.loads(f.attrs["layer_categories"])
            self.assertEqual(layers, {"stem", "bn1", "conv", "bn2", "drop"})
            self.assertEqual(categories["ScaledStdConv2d"], "conv")
            self.assertEqual(categories["BatchNormAct2d"], "batchnorm")


class Isolate(unittest.TestCase):
    def test_two_independent_sources(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "r.json")
            r = reprocheck("two_source_net", ["--layers", "all", "--isolate"], path, zoo_ops=True)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            with open(path) as f:
                iso = json.load(f)["isolation"]
            self.assertEqual([s["layer"] for s in iso["sources"]], ["mix1", "mix2"])
            self.assertTrue(all(s["inputs_identical"] for s in iso["sources"]))
            self.assertTrue(iso["agreed"])
            self.assertIn("2 independent source(s) in step 0", r.stdout)


class Ladder(unittest.TestCase):
    """The default check (hashes first) against --full on every CPU zoo case: the same first
    divergence and cause; the same statistics where the divergence is deterministic."""

    def run_json(self, case, extra, tmp, name):
        path = os.path.join(tmp, name)
        r = reprocheck(case["model"], case["args"] + extra, path, case.get("zoo_ops", False))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        with open(path) as f:
            return json.load(f)

    def test_every_case_matches_full_capture(self):
        for case in [c for c in CASES if not c.get("gpu", False) and c.get("verdict") != "any"]:
            with self.subTest(case=case["name"]), tempfile.TemporaryDirectory() as tmp:
                ladder = self.run_json(case, [], tmp, "ladder.json")
                full = self.run_json(case, ["--full"], tmp, "full.json")
                self.assertEqual(ladder["capture"]["mode"], "ladder")
                self.assertTrue(ladder["capture"]["pass2"])
                self.assertEqual(full["capture"]["mode"], "full")
                lf, ff = ladder["first_divergence"], full["first_divergence"]
                for key in ("step", "phase", "layer", "kind", "name", "inputs_identical"):
                    self.assertEqual(lf[key], ff[key], key)
                self.assertIsNotNone(lf["stats"])
                self.assertEqual(ladder["hints"][0]["cause"], full["hints"][0]["cause"])
                # Pass 2 keeps the data of a window, not of whole steps.
                self.assertLessEqual(ladder["capture"]["pass2_records"], 17 * len(ladder["pairs"]))
                if "--vary" in case["args"]:  # one setting per run: the same numbers every time
                    self.assertEqual(lf["stats"], ff["stats"])
                    self.assertEqual(ladder["hints"], full["hints"])
                    # The same counts: every step's divergent tensors, from pass 1's hashes.
                    self.assertEqual([p["divergent"] for p in ladder["pairs"]], [p["divergent"] for p in full["pairs"]])
                    self.assertEqual([(r["step"], r["phase"], r["count"]) for r in ladder["pairs"][0]["after_first"]],
                                     [(r["step"], r["phase"], r["count"]) for r in full["pairs"][0]["after_first"]])

    def test_an_intermittent_source_is_never_reproducible(self):
        # flaky_once diverges in the first process that runs it only: pass 1 sees it, pass 2 not.
        with tempfile.TemporaryDirectory() as tmp:
            marker = os.path.join(tmp, "flaky")
            os.mkdir(marker)
            path = os.path.join(tmp, "r.json")
            cmd = [BIN, os.path.join(FIX, "flaky_net.pt"), "--device", "cpu", "--json", path, "--load-library", OPS]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                               env=dict(os.environ, REPROCHECK_ZOO_FLAKY_DIR=marker))
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            with open(path) as f:
                report = json.load(f)
            self.assertEqual(report["verdict"], "divergent")
            self.assertEqual(report["capture"]["intermittent_runs"], [1])
            self.assertTrue(report["first_divergence"]["hash_only"])
            self.assertIn("intermittent: run(s) 1 diverged in pass 1 but not when captured again", r.stdout)
            self.assertIn("verdict: DIVERGENT", r.stdout)


if __name__ == "__main__":
    which = sys.argv.pop(1) if len(sys.argv) > 1 else "cpu"
    if which == "gpu" and not cuda_available():
        print("no CUDA device: GPU zoo cases skipped")
        sys.exit(77)
    suite = {"cpu": Zoo, "gpu": ZooGpu, "controls": Controls, "layers": Layers, "isolate": Isolate,
             "ladder": Ladder}[which]
    result = unittest.TextTestRunner(verbosity=2).run(unittest.TestLoader().loadTestsFromTestCase(suite))
    sys.exit(0 if result.wasSuccessful() else 1)
