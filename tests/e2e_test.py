"""End-to-end tests: run the built reprocheck binary as a user would."""
import os
import subprocess
import unittest

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


if __name__ == "__main__":
    unittest.main()
