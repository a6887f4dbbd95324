"""End-to-end tests: run the built reprocheck binary as a user would."""
import os
import subprocess
import tempfile
import unittest

import h5py
import numpy as np
import xxhash

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]


def run(*args, timeout=120):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


class Basics(unittest.TestCase):
    def test_help_lists_commands(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        for word in ("info", "--version", "Exit codes"):
            self.assertIn(word, r.stdout)

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

FIXTURES = ["seed_convnet", "dropout_mlp", "bn_net", "resnet_mini", "traced_convnet"]


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

    def test_same_seed_same_hashes_random_seed_differs(self):
        a = self.record("dropout_mlp", out="a.h5")
        b = self.record("dropout_mlp", out="b.h5")
        c = self.record("dropout_mlp", "--seed", "random", out="c.h5")
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

    def test_bad_flag_values(self):
        for args in (["--seed", "abc"], ["--mode", "training"], ["--layers", "path:("], ["--device", "tpu"]):
            with self.subTest(args=args):
                r = run("record", os.path.join(FIX, "dropout_mlp.pt"), "-o", os.path.join(self.tmp.name, "x.h5"), *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.startswith("reprocheck: error: "), r.stderr)
                self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertEqual(os.listdir(self.tmp.name), [])


if __name__ == "__main__":
    unittest.main()
