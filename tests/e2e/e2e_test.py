"""End-to-end tests: run the built reprocheck binary as a user would."""
import json
import os
import signal
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np
import xxhash
from lxml import etree

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]
FIXTURES = ["seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet"]


OPS = os.environ.get("REPROCHECK_ZOO_OPS", "")
XSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "junit.xsd")


def run(*args, timeout=120, env=None):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout, env=env)


def fixture(name):
    return os.path.join(FIX, name + ".pt")


def workers_of(model, folder):
    """PIDs of running `reprocheck-torch record MODEL` processes whose dumps go under `folder` (a
    test's TMPDIR: other tests running at the same time use the same model), from /proc."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"record" in args and model.encode() in args and any(a.startswith(folder.encode()) for a in args):
            pids.append(int(pid))
    return pids


class Basics(unittest.TestCase):
    def test_help_lists_commands(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("info", "--version", "Exit codes"):
            self.assertIn(word, r.stdout)

    def test_the_command_does_not_load_libtorch(self):
        # LibTorch and its CUDA libraries cost about half a second per process: `reprocheck` (the
        # parent of every check, `diff`, `run`) links the core only; reprocheck-torch runs models.
        libs = subprocess.run(["ldd", BIN], capture_output=True, text=True).stdout
        self.assertNotIn("libtorch", libs)
        self.assertNotIn("libc10", libs)
        torch_libs = subprocess.run(["ldd", os.path.join(os.path.dirname(BIN), "reprocheck-torch")],
                                    capture_output=True, text=True).stdout
        self.assertIn("libtorch", torch_libs)

    def test_no_arguments_is_a_usage_error(self):
        self.assertEqual(run().returncode, 2)

    def test_version_names_every_library(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        for lib in ("reprocheck 0.", "LibTorch   2.11.0", "cuDNN", "HDF5       1.", "CUDA"):
            self.assertIn(lib, r.stdout)

    def test_info_lists_modules(self):
        r = run("info", os.path.join(FIX, "resnet_mini.pt"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("layer1.0.conv1", r.stdout)
        self.assertIn("torch.nn.modules.batchnorm.BatchNorm2d", r.stdout)
        self.assertIn("[4, 3, 32, 32]", r.stdout)

    def test_checkpoint_gets_one_line_and_exit_2(self):
        r = run("info", os.path.join(FIX, "broken", "state_dict.pt"))
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stdout, "")
        lines = r.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith("reprocheck: error: cannot load model"), lines[0])
        self.assertIn("torch.save checkpoint", lines[0])

    def test_unknown_command(self):
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)

    def test_missing_model_argument(self):
        r = run("info")
        self.assertEqual(r.returncode, 2)
        self.assertIn("model", r.stderr)



def raw_bytes(ds):
    """The bytes reprocheck hashed: the dataset's elements, row-major, in their stored type."""
    return np.ascontiguousarray(ds[()]).tobytes()


class Record(unittest.TestCase):
    """h5py, as an outside reader, checks every dump the command writes."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, model, *args, out="run.h5"):
        path = os.path.join(self.tmp.name, out)
        r = run("record", os.path.join(FIX, model + ".pt"), "-o", path, "--device", "cpu", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("wrote " + path, r.stdout)
        return path

    def check_dump(self, path):
        with h5py.File(path, "r") as f:
            self.assertEqual(f.attrs["format"], "reprocheck-dump")
            self.assertEqual(int(f.attrs["format_version"]), 1)
            for key in ("libtorch_version", "cuda_version", "cudnn_version", "device", "host", "time", "seed",
                        "data_seed", "deterministic", "benchmark", "threads", "mode", "run_options", "model_signature"):
                self.assertIn(key, f.attrs, key)
            index = f["index"][()]
            self.assertEqual(len(index), int(f.attrs["tensor_count"]))
            self.assertEqual(len(index), len(f["tensors"]))
            self.assertEqual(list(index["order"]), list(range(len(index))))
            for row in index:
                ds = f[row["dataset"].decode()]
                self.assertEqual(list(ds.shape), list(row["shape"]))
                self.assertEqual(ds.name, "/tensors/%06d" % row["order"])
                self.assertEqual(xxhash.xxh3_64_intdigest(raw_bytes(ds)), int(row["hash"]), row["dataset"])
            return index

    def test_every_fixture_default_and_all(self):
        for model in FIXTURES:
            for layers in ("default", "all"):
                with self.subTest(model=model, layers=layers):
                    index = self.check_dump(self.record(model, "--layers", layers, "--force"))
                    phases = {p.decode() for p in index["phase"]}
                    self.assertTrue({"init", "input", "forward", "output", "loss", "param_grad", "after_step"} <= phases)

    def test_dtypes_as_documented(self):
        f16 = self.record("bn_net", "--dtype", "float16", "--steps", "1", out="f16.h5")
        bf16 = self.record("bn_net", "--dtype", "bfloat16", "--steps", "1", out="bf16.h5")
        self.check_dump(f16)
        self.check_dump(bf16)
        with h5py.File(f16) as f:
            self.assertEqual(f["tensors/000000"].dtype, np.float16)
        with h5py.File(bf16) as f:
            ds = f["tensors/000000"]
            self.assertEqual(ds.dtype, np.uint16)
            self.assertEqual(f["index"][0]["dtype"], b"bfloat16")
            # The upper half of a float32: bfloat16 bits widen exactly.
            widened = (ds[()].astype(np.uint32) << 16).view(np.float32)
            self.assertTrue(np.all(np.isfinite(widened)))
        with h5py.File(self.record("bn_net", "--steps", "1", out="bool.h5")) as f:
            idx = f["index"][()]
            nbt = [r for r in idx if r["layer"] == b"bn" and r["name"] == b"num_batches_tracked"]
            self.assertEqual(f[nbt[0]["dataset"].decode()].dtype, np.int64)

    def test_same_seed_same_hashes_other_seed_differs(self):
        a = self.record("dropout_mlp", out="a.h5")
        b = self.record("dropout_mlp", out="b.h5")
        c = self.record("dropout_mlp", "--seed", "1", out="c.h5")
        with h5py.File(a) as fa, h5py.File(b) as fb, h5py.File(c) as fc:
            ha, hb, hc = (list(x["index"]["hash"]) for x in (fa, fb, fc))
        self.assertEqual(ha, hb)
        self.assertNotEqual(ha, hc)

    def test_refuses_to_overwrite(self):
        path = os.path.join(self.tmp.name, "mine.h5")
        with open(path, "w") as f:
            f.write("mine")
        r = run("record", os.path.join(FIX, "dropout_mlp.pt"), "-o", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--force", r.stderr)
        with open(path) as f:
            self.assertEqual(f.read(), "mine")

    def test_bad_input_shape_is_one_line(self):
        r = run("record", os.path.join(FIX, "seed_convnet.pt"), "-o", os.path.join(self.tmp.name, "x.h5"),
                "--input-shape", "4,5,32,32")
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("[4, 3, 32, 32]", r.stderr)
        self.assertEqual(os.listdir(self.tmp.name), [])

    def test_interop_threads_are_a_run_option(self):
        # A row of the option table: the flag, the run's JSON, and the dump's run_options.
        path = self.record("dropout_mlp", "--interop-threads", "3")
        with h5py.File(path, "r") as f:
            self.assertEqual(json.loads(f.attrs["run_options"])["interop_threads"], 3)
        r = run("diff", path, self.record("dropout_mlp", out="default.h5"))
        self.assertIn("interop_threads (3 vs 0)", r.stdout)

    def test_bad_flag_values(self):
        for args in (["--seed", "abc"], ["--mode", "training"], ["--layers", "path:("], ["--device", "tpu"],
                     ["--interop-threads", "-1"]):
            with self.subTest(args=args):
                r = run("record", os.path.join(FIX, "dropout_mlp.pt"), "-o", os.path.join(self.tmp.name, "x.h5"), *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith("reprocheck: error: "), r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertEqual(os.listdir(self.tmp.name), [])



class Reproducible(unittest.TestCase):
    """Fixed seeds and equal thread counts: no false divergence, invocation after invocation."""

    def test_every_fixture_five_times(self):
        for model in FIXTURES:
            for i in range(5):
                with self.subTest(model=model, invocation=i):
                    r = run(fixture(model), "--device", "cpu", "--threads", "1")
                    self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                    self.assertIn("verdict: REPRODUCIBLE", r.stdout)


class InTempDir(unittest.TestCase):
    """A private folder per test, also the runs' TMPDIR."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.env = dict(os.environ, TMPDIR=self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)


class Check(InTempDir):
    def check(self, model, *args, expect=1):
        r = run(fixture(model), "--device", "cpu", "--json", self.path("r.json"), "--junit", self.path("r.xml"),
                "--markdown", self.path("r.md"), *args, env=self.env)
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        with open(self.path("r.json")) as f:
            report = json.load(f)
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["r.json", "r.md", "r.xml"])  # no temp files left
        return r, report

    def test_random_seed_diverges_at_the_dropout_forward(self):
        # Dropout on 3 elements: two random masks agree with probability 1/8 per step, so 8 runs
        # make a pair that differs at step 0 all but certain ((1/8)^7 to miss).
        r, report = self.check("dropout_mlp", "--seed", "random", "--runs", "8", "--jobs", "2")
        self.assertEqual(report["verdict"], "divergent")
        fd = report["first_divergence"]
        self.assertEqual((fd["step"], fd["phase"], fd["layer"], fd["kind"]), (0, "forward", "drop", "activation"))
        self.assertEqual(fd["layer_type"], "torch.nn.modules.dropout.Dropout")
        self.assertTrue(fd["inputs_identical"])
        for key in ("numel", "mismatched", "max_abs", "max_rel", "mean_abs", "rms", "max_ulp", "cosine", "first_index"):
            self.assertIn(key, fd["stats"])
        self.assertGreater(fd["stats"]["mismatched"], 0)
        self.assertIn("seed_value", report["pairs"][0]["knob_diffs"])
        self.assertGreater(len(report["divergent_tensors"]), 1)
        self.assertIn("verdict: DIVERGENT", r.stdout)
        self.assertIn("first divergence  step 0 · forward · drop (Dropout) output", r.stdout)
        self.assertNotIn("\033[", r.stdout)  # no color when not on a terminal

    def test_thread_counts_diverge_in_conv_backward_never_forward(self):
        r, report = self.check("seed_convnet", "--vary", "threads=1,2")
        fd = report["first_divergence"]
        self.assertIn(fd["phase"], ("param_grad", "backward"))
        self.assertEqual(fd["layer_type"], "torch.nn.modules.conv.Conv2d")
        self.assertEqual(report["pairs"][0]["knob_diffs"]["threads"], "1 vs 2")
        self.assertIn("run 1/2 (threads=1): started", r.stderr)
        self.assertIn("run 2/2 (threads=2): recorded", r.stderr)

    def test_reports_when_reproducible(self):
        r, report = self.check("bn_net", "--threads", "1", expect=0)
        self.assertEqual(report["verdict"], "reproducible")
        self.assertIsNone(report["first_divergence"])
        self.assertEqual(report["divergent_tensors"], [])
        self.assertEqual(len(report["runs"]), 2)
        xml = etree.parse(self.path("r.xml"))
        etree.XMLSchema(etree.parse(XSD)).assertValid(xml)
        self.assertEqual(xml.getroot().get("failures"), "0")
        self.assertGreater(int(xml.getroot().get("tests")), 5)
        with open(self.path("r.md")) as f:
            self.assertIn("### reprocheck: **reproducible**", f.read())

    def test_junit_and_markdown_name_the_divergence(self):
        _, report = self.check("dropout_mlp", "--vary", "seed=0,1")
        xml = etree.parse(self.path("r.xml"))
        etree.XMLSchema(etree.parse(XSD)).assertValid(xml)
        failures = xml.findall(".//testcase/failure")
        self.assertGreater(len(failures), 0)
        names = [tc.get("name") for tc in xml.findall(".//testcase") if tc.find("failure") is not None]
        self.assertIn("forward drop (Dropout)", names)
        passed = [tc.get("name") for tc in xml.findall(".//testcase") if tc.find("failure") is None]
        self.assertIn("input input", passed)  # the input batch did not diverge
        with open(self.path("r.md")) as f:
            md = f.read()
        self.assertIn("### reprocheck: **divergent**", md)
        self.assertIn("**First divergence:** step 0 · forward · drop (Dropout) output", md)
        self.assertIn("| mismatched elements |", md)

    def test_crashing_worker_exits_3_with_the_signal(self):
        r = run(fixture("crash_net"), "--device", "cpu", "--load-library", OPS, "--layers", "all", env=self.env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("killed by signal 11 (SIGSEGV)", r.stderr)
        self.assertEqual(os.listdir(self.tmp.name), [])

    def test_timeout_exits_3(self):
        r = run(fixture("resnet_mini"), "--device", "cpu", "--steps", "50", "--timeout", "0.5", env=self.env)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("timed out after 0.5 s", r.stderr)
        self.assertEqual(os.listdir(self.tmp.name), [])

    def test_input_error_in_the_model_is_relayed_as_one_line(self):
        r = run(fixture("seed_convnet"), "--device", "cpu", "--input-shape", "4,5,32,32", env=self.env)
        self.assertEqual(r.returncode, 2, r.stderr)
        errors = [l for l in r.stderr.splitlines() if l.startswith("reprocheck: error:")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn("expected input[4, 5, 32, 32] to have 3 channels", errors[0])

    def test_ctrl_c_stops_workers_and_cleans_up(self):
        p = subprocess.Popen([BIN, fixture("resnet_mini"), "--device", "cpu", "--steps", "400", "--jobs", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        time.sleep(2.5)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
        self.assertEqual(p.returncode, 130, err)
        self.assertEqual(os.listdir(self.tmp.name), [])
        self.assertEqual(workers_of(fixture("resnet_mini"), self.tmp.name), [], "a worker outlived the runner")

    def test_op_without_deterministic_implementation_is_named(self):
        args = [fixture("put_net"), "--device", "cpu", "--load-library", OPS, "--layers", "all"]
        r = run(*args, "--deterministic", env=self.env)
        self.assertEqual(r.returncode, 2, r.stderr)
        errors = [l for l in r.stderr.splitlines() if l.startswith("reprocheck: error:")]
        self.assertEqual(len(errors), 1, r.stderr)
        self.assertIn("aten::put_ in layer 'scatter' (ScatterPut) has no deterministic implementation", errors[0])
        self.assertIn("--deterministic=warn", errors[0])
        r = run(*args, "--deterministic=warn", env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("put_ does not have a deterministic implementation", r.stderr)  # LibTorch's warning

    def test_keep_keeps_dumps_and_never_overwrites(self):
        keep = self.path("dumps")
        r = run(fixture("dropout_mlp"), "--device", "cpu", "--keep", keep, "--runs", "3", env=self.env)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(os.listdir(keep)), ["run-0.h5", "run-1.h5", "run-2.h5"])
        before = os.path.getmtime(os.path.join(keep, "run-0.h5"))
        r = run(fixture("dropout_mlp"), "--device", "cpu", "--keep", keep, env=self.env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--force", r.stderr)
        self.assertEqual(os.path.getmtime(os.path.join(keep, "run-0.h5")), before)
        r = run("diff", *(os.path.join(keep, f"run-{i}.h5") for i in range(3)))
        self.assertEqual(r.returncode, 0, r.stderr)

    def run_on_terminal(self, *args, env):
        """Runs the binary with stdout and stderr on a pseudo-terminal; returns what it printed."""
        import pty
        master, slave = pty.openpty()
        p = subprocess.Popen([BIN, *args], stdout=slave, stderr=slave, env=env)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        p.wait(timeout=120)
        os.close(master)
        return p.returncode, out.decode(errors="replace")

    def test_color_only_on_a_terminal_and_never_with_no_color(self):
        args = (fixture("dropout_mlp"), "--device", "cpu", "--vary", "seed=0,1")
        code, out = self.run_on_terminal(*args, env=self.env)
        self.assertEqual(code, 1, out)
        self.assertIn("\033[1;31mverdict: DIVERGENT", out)
        self.assertIn("\r\033[K", out)  # the progress line is rewritten in place
        env = dict(self.env, NO_COLOR="1")
        code, out = self.run_on_terminal(*args, env=env)
        self.assertEqual(code, 1, out)
        self.assertNotIn("\033[1;31m", out)
        self.assertIn("verdict: DIVERGENT", out)

    def test_bad_runner_flags(self):
        for args in (["--runs", "1"], ["--vary", "threads"], ["--vary", "colour=1,2"], ["--vary", "threads=1,x"],
                     ["--vary", "threads=1,2", "--runs", "3"], ["--tolerance", "loose"]):
            with self.subTest(args=args):
                r = run(fixture("dropout_mlp"), "--device", "cpu", *args, env=self.env)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # A knob a training script sets itself is refused before anything runs.
        r = run("run", "--vary", "seed=1,2", "--", "/no/such/python", "train.py", env=self.env)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--vary seed: a training script sets its own seed; knobs for scripts: deterministic, benchmark, "
                      "threads, interop-threads, env:NAME", r.stderr)


class Ladder(InTempDir):
    """The capture ladder: hashes first, full capture only where the runs split; goldens."""

    def check(self, *args, expect, env=None):
        j = self.path("r.json")
        r = run(*args, "--device", "cpu", "--json", j, env=env or self.env)
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        with open(j) as f:
            report = json.load(f)
        os.remove(j)
        return r, report

    def test_a_passing_check_writes_no_tensor_data(self):
        keep = self.path("keep")
        r = run(fixture("resnet_mini"), "--device", "cpu", "--hashes-only", "--keep", keep, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name in ("run-0.h5", "run-1.h5"):
            with h5py.File(os.path.join(keep, name), "r") as f:
                self.assertEqual(f.attrs["capture"], "hashes")
                self.assertEqual(len(f["tensors"]), 0)  # not one dataset
                index = f["index"][:]
                self.assertGreater(len(index), 100)
                self.assertTrue(all(row["dataset"].startswith(b"hash:") for row in index))
                self.assertTrue(all(row["hash"] != 0 for row in index))
        r, report = self.check(fixture("resnet_mini"), expect=0)
        self.assertEqual(report["capture"]["mode"], "ladder")
        self.assertFalse(report["capture"]["pass2"])
        self.assertIn("capture: pass 1 (hashes only) found every tensor equal", r.stdout)
        self.assertIn("no tensor data was written", r.stdout)

    def test_a_divergence_matches_a_full_check(self):
        args = (fixture("dropout_mlp"), "--vary", "seed=0,1", "--steps", "3")
        r, ladder = self.check(*args, expect=1)
        _, full = self.check(*args, "--full", expect=1)
        self.assertTrue(ladder["capture"]["pass2"])
        self.assertEqual(ladder["capture"]["pass2_steps"], 1)  # the seed shows before step 1
        self.assertEqual(ladder["capture"]["pass2_runs"], [0, 1])
        self.assertGreater(ladder["capture"]["pass2_bytes"], 0)
        self.assertEqual(full["capture"]["mode"], "full")
        lf, ff = ladder["first_divergence"], full["first_divergence"]
        for key in ("step", "phase", "layer", "kind", "name", "call"):
            self.assertEqual(lf[key], ff[key], key)
        self.assertEqual(lf["stats"], ff["stats"])
        self.assertEqual([h["cause"] for h in ladder["hints"]], [h["cause"] for h in full["hints"]])
        self.assertEqual(ladder["pairs"][0]["divergent"], full["pairs"][0]["divergent"])
        # Steps 1 and 2 were not captured again: their counts come from the hashes.
        late = [t for t in ladder["divergent_tensors"] if t["step"] >= 1]
        self.assertTrue(late and all(t["hash_only"] and t["max_abs"] is None for t in late))
        self.assertIn("the statistics come from pass 2", r.stdout)

    def test_random_seeds_are_carried_into_the_second_pass(self):
        # --seed random draws a seed per run; pass 2 runs with the seed pass 1 drew, so it
        # reproduces the divergence and gives statistics (never "intermittent").
        _, report = self.check(fixture("dropout_mlp"), "--seed", "random", "--runs", "4", "--steps", "3", expect=1)
        self.assertEqual(report["capture"]["intermittent_runs"], [])
        self.assertIsNotNone(report["first_divergence"]["stats"])

    def test_golden_from_a_fixed_seed_passes_and_another_seed_fails(self):
        golden = self.path("golden.h5")
        r = run(fixture("resnet_mini"), "--device", "cpu", "--save-baseline", golden, env=self.env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("wrote golden", r.stdout)
        self.assertLess(os.path.getsize(golden), 250_000)  # hashes only: about 530 bytes per tensor
        with h5py.File(golden, "r") as f:
            self.assertEqual(len(f["tensors"]), 0)
        r, report = self.check(fixture("resnet_mini"), "--baseline", golden, expect=0)
        self.assertIn("verdict: MATCHES THE GOLDEN", r.stdout)
        self.assertTrue(report["baseline"]["matches"])
        r, report = self.check(fixture("resnet_mini"), "--baseline", golden, "--seed", "7", expect=1)
        self.assertIn("verdict: NUMERICS CHANGED", r.stdout)
        fd = report["first_divergence"]
        self.assertEqual((fd["step"], fd["phase"], fd["kind"]), (0, "forward", "activation"))  # the dropout mask
        self.assertIsNone(fd["stats"])
        self.assertIn(f"first divergence  step 0 · forward · {fd['layer']}", r.stdout)
        self.assertIn("record a full golden on the base commit", r.stdout)
        # A change, not nondeterminism: the option, with both values, and the check with the golden's.
        hints = report["hints"]
        self.assertEqual(hints[0]["cause"], "option_changed")
        self.assertIn("(0 in the golden, 7 now)", hints[0]["evidence"])
        self.assertIn("--seed 0 --baseline", hints[0]["test_it"])
        self.assertTrue(all(h["cause"].endswith("_changed") for h in hints), hints)
        self.assertIn(f"against the golden '{golden}'", r.stdout)  # the header names the golden
        # Refreshing the golden is explicit.
        r = run(fixture("resnet_mini"), "--device", "cpu", "--save-baseline", golden, env=self.env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--force", r.stderr)
        # A full golden gives statistics.
        full = self.path("full.h5")
        self.assertEqual(run("record", fixture("resnet_mini"), "-o", full, "--device", "cpu").returncode, 0)
        r, report = self.check(fixture("resnet_mini"), "--baseline", full, "--seed", "7", expect=1)
        self.assertIsNotNone(report["first_divergence"]["stats"])
        self.assertGreater(report["first_divergence"]["stats"]["mismatched"], 0)

    def test_a_golden_from_another_environment_says_so_first(self):
        golden = self.path("golden.h5")
        env2 = dict(self.env, OMP_NUM_THREADS="2")
        r = run(fixture("resnet_mini"), "--save-baseline", golden, env=env2)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        r, report = self.check(fixture("resnet_mini"), "--baseline", golden, env=env2, expect=0)
        self.assertEqual(report["baseline"]["environment_diffs"], [])
        # The same check on a runner with one thread: no option differs, the environment does.
        r, report = self.check(fixture("resnet_mini"), "--baseline", golden, env=dict(self.env, OMP_NUM_THREADS="1"),
                               expect=1)
        self.assertEqual(report["baseline"]["environment_diffs"], [{"what": "threads", "golden": "2", "now": "1"}])
        self.assertIn("ran elsewhere than the golden was recorded", r.stdout)
        hint = report["hints"][0]
        self.assertEqual(hint["cause"], "environment_changed")
        self.assertIn("likely cause", hint["title"])
        self.assertIn("threads 2 -> 1", hint["evidence"])
        self.assertIn("--threads 2", hint["fix_python"])  # or pin the thread count
        self.assertIn("--save-baseline", hint["test_it"])
        self.assertIn("threads1", hint["test_it"])  # a golden named after this runner's kind
        self.assertEqual(report["provenance"]["torch_threads"], "1")  # the checked run's, not the golden's
        self.assertEqual(report["baseline"]["provenance"]["torch_threads"], "2")

    def test_record_hashes_only_and_diff_of_a_mix(self):
        h = self.path("h.h5")
        f = self.path("f.h5")
        self.assertEqual(run("record", fixture("bn_net"), "-o", h, "--hashes-only", "--device", "cpu").returncode, 0)
        self.assertEqual(run("record", fixture("bn_net"), "-o", f, "--device", "cpu").returncode, 0)
        self.assertLess(os.path.getsize(h) * 3, os.path.getsize(f))
        for a, b in ((h, f), (f, h)):
            r = run("diff", a, b)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        other = self.path("o.h5")
        self.assertEqual(run("record", fixture("bn_net"), "-o", other, "--data-seed", "3", "--device", "cpu").returncode, 0)
        r = run("diff", h, other)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("a run recorded only hashes, so there are no statistics", r.stdout)

    def test_conflicting_flags_are_one_line(self):
        for args, words in ((("--full", "--hashes-only"), "exclude each other"),
                            (("--baseline", self.path("none.h5")), "no such golden"),
                            (("--isolate", "--hashes-only"), "needs full dumps")):
            r = run(fixture("bn_net"), "--device", "cpu", *args, env=self.env)
            self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
            self.assertIn(words, r.stderr)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)


class Diff(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def record(self, model, out, *args):
        path = os.path.join(self.tmp.name, out)
        r = run("record", fixture(model), "-o", path, "--device", "cpu", "--threads", "1", *args)
        self.assertEqual(r.returncode, 0, r.stderr)
        return path

    def test_same_and_different_seeds(self):
        a = self.record("bn_net", "a.h5")
        b = self.record("bn_net", "b.h5")
        c = self.record("bn_net", "c.h5", "--data-seed", "5")
        r = run("diff", a, b)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("verdict: REPRODUCIBLE", r.stdout)
        j = os.path.join(self.tmp.name, "d.json")
        r = run("diff", a, b, c, "--json", j)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        with open(j) as f:
            report = json.load(f)
        fd = report["first_divergence"]
        self.assertEqual((fd["run"], fd["phase"], fd["kind"]), (2, "input", "input"))
        self.assertEqual(report["pairs"][0]["divergent"], 0)
        self.assertEqual(report["pairs"][1]["knob_diffs"]["data_seed"], "0 vs 5")

    def test_tolerance_flags(self):
        a = self.record("seed_convnet", "a.h5")
        b = self.record("seed_convnet", "b.h5", "--threads", "2")
        self.assertEqual(run("diff", a, b).returncode, 1)
        r = run("diff", a, b, "--atol", "1e-4")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("within tolerance", r.stdout)
        # Thread-count differences (a few 1e-7) are inside torch's float32 presets.
        r = run("diff", a, b, "--tolerance", "torch")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("tolerance torch presets", r.stdout)

    def test_refuses_other_models_versions_and_non_dumps(self):
        a = self.record("bn_net", "a.h5")
        b = self.record("dropout_mlp", "b.h5")
        r = run("diff", a, b)
        self.assertEqual(r.returncode, 2)
        self.assertIn("different models", r.stderr)
        v2 = os.path.join(self.tmp.name, "v2.h5")
        with open(a, "rb") as src, open(v2, "wb") as dst:
            dst.write(src.read())
        with h5py.File(v2, "r+") as f:
            f.attrs["format_version"] = np.int64(2)
        r = run("diff", a, v2)
        self.assertEqual(r.returncode, 2)
        self.assertIn("format version 2", r.stderr)
        r = run("diff", a, fixture("bn_net"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("not an HDF5 file", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1)
        self.assertEqual(run("diff", a).returncode, 2)


if __name__ == "__main__":
    unittest.main()


class Compat(unittest.TestCase):
    """Dumps stay format-compatible: a dump recorded by an earlier reprocheck (tests/data, recorded
    with the same options) compares as identical to one recorded now."""

    DATA = os.environ["REPROCHECK_TEST_DATA"]

    def check(self, stored, *flags):
        with tempfile.TemporaryDirectory() as d:
            fresh = os.path.join(d, "now.h5")
            r = run("record", fixture("dropout_mlp"), "--threads", "1", "--device", "cpu", *flags, "-o", fresh)
            self.assertEqual(r.returncode, 0, r.stderr)
            r = run("diff", os.path.join(self.DATA, stored), fresh)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("verdict: REPRODUCIBLE", r.stdout)
            self.assertNotIn("differs from run 0 in", r.stdout)  # the same run options, read back
            # Dumps now also hold the optimizer's state, which the older ones lack: it is left out, said so.
            self.assertIn("the optimizer state is not compared", r.stdout)
            with h5py.File(os.path.join(self.DATA, stored)) as old, h5py.File(fresh) as new:
                rows = [row for row in new["index"] if row["kind"] != b"optim_state"]
                self.assertEqual(len(old["index"]), len(rows))
                self.assertGreater(len(new["index"]), len(rows))
                # Every option an older dump carries is still written (new options may join them).
                self.assertLessEqual(set(json.loads(old.attrs["run_options"])), set(json.loads(new.attrs["run_options"])))

    def test_default_layers(self):
        self.check("dropout_mlp-v1.h5")

    def test_all_layers_and_ops(self):
        self.check("dropout_mlp-ops-v1.h5", "--layers", "all", "--ops")
