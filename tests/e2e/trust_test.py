"""Trust, end to end: signals, bad values, report destinations, concurrent writers, and the notes
that keep a REPRODUCIBLE verdict from claiming more than the runs could see."""
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import unittest

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]
PY = os.environ["REPROCHECK_PYTHON"]


def run(*args, timeout=300):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=timeout)


def fixture(name):
    return os.path.join(FIX, name + ".pt")


def one_line(test, r):
    lines = [l for l in r.stderr.splitlines() if l.startswith("reprocheck: error: ")]
    test.assertEqual(len(lines), 1, r.stderr)
    test.assertNotIn("internal error", lines[0])
    return lines[0]


def script_model(directory, name, source, input_shape, extra=""):
    """Scripts a small model defined in `source` (class Model) into DIRECTORY/NAME.pt."""
    path = os.path.join(directory, name + ".pt")
    code = textwrap.dedent(source) + textwrap.dedent(f"""
        import json, torch
        m = torch.jit.script(Model())
        m.save({path!r}, _extra_files={{"reprocheck.json": json.dumps({{"input_shape": {input_shape}{extra}}})}})
    """)
    source = os.path.join(directory, name + "_model.py")  # TorchScript reads the class's source file
    with open(source, "w") as f:
        f.write(code)
    subprocess.run([PY, source], check=True, capture_output=True)
    return path


class Values(unittest.TestCase):
    def test_bad_values_are_one_line_and_exit_2(self):
        model = fixture("dropout_mlp")
        cases = [
            (["--lr", "nan"], "--lr"),
            (["--lr", "-1"], "--lr"),
            (["--momentum", "-1"], "--momentum"),
            (["--input-shape", "0,3"], "every dimension must be 1 or more"),
            (["--input-shape", "-2,3"], "every dimension must be 1 or more"),
            (["--input-shape", "100000,3,1000,1000"], "GB"),
            (["--steps", "0"], "expected 1 to 100000"),
        ]
        for flags, expected in cases:
            with self.subTest(flags=flags):
                r = run("record", model, "--device", "cpu", "-o", "/tmp/never-written.h5", *flags)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(expected, one_line(self, r))
        with tempfile.TemporaryDirectory() as d:
            a = os.path.join(d, "a.h5")
            self.assertEqual(run("record", model, "--device", "cpu", "-o", a).returncode, 0)
            r = run("diff", a, a, "--atol", "-1")
            self.assertEqual(r.returncode, 2)
            self.assertIn("--atol", one_line(self, r))

    def test_a_fifo_given_as_a_model_is_refused_at_once(self):
        with tempfile.TemporaryDirectory() as d:
            fifo = os.path.join(d, "model.pt")
            os.mkfifo(fifo)
            start = time.monotonic()
            r = run("info", fifo, timeout=30)
            self.assertEqual(r.returncode, 2)
            self.assertIn("not a regular file", one_line(self, r))
            self.assertLess(time.monotonic() - start, 10)

    def test_a_custom_op_without_its_library_says_so(self):
        r = run("info", fixture("racy_net"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("--load-library", one_line(self, r))

    def test_a_zero_dimension_in_reprocheck_json_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            path = script_model(d, "zero", """
                import torch
                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc = torch.nn.Linear(3, 2)
                    def forward(self, x):
                        return self.fc(x)
            """, [0, 3])
            r = run(path, "--device", "cpu")
            self.assertEqual(r.returncode, 2)
            self.assertIn("dimension below 1", one_line(self, r))


class Destinations(unittest.TestCase):
    def test_an_unwritable_report_is_found_before_any_run(self):
        start = time.monotonic()
        r = run(fixture("resnet_mini"), "--device", "cpu", "--json", "/no/such/folder/report.json")
        self.assertEqual(r.returncode, 2)
        self.assertIn("does not exist", one_line(self, r))
        self.assertNotIn("started", r.stderr)  # no run began
        self.assertLess(time.monotonic() - start, 20)

    def test_two_writers_of_one_dump_never_both_succeed(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "run.h5")
            args = [BIN, "record", fixture("resnet_mini"), "--device", "cpu", "--steps", "3", "-o", out]
            procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
            results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
            codes = sorted(code for code, _ in results)
            self.assertEqual(codes, [0, 2], results)
            refused = [err for code, err in results if code == 2][0]
            self.assertTrue("another process is writing it" in refused or "already exists" in refused, refused)
            self.assertEqual(sorted(os.listdir(d)), ["run.h5"])  # no temporary or lock file left


class DiskFull(unittest.TestCase):
    """Each write is checked: on a full file system nothing appears under a final name unless it is
    whole, no temporary or lock file is left, and the message names the storage."""

    def setUp(self):
        self.small = tempfile.mkdtemp()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", self.small], capture_output=True)
        if r.returncode != 0:
            os.rmdir(self.small)
            self.skipTest("cannot mount a small tmpfs here (needs root)")

    def tearDown(self):
        subprocess.run(["umount", self.small], capture_output=True)
        os.rmdir(self.small)

    def check_failed_cleanly(self, r):
        self.assertIn(r.returncode, (2, 3), r.stdout + r.stderr)
        line = one_line(self, r)
        self.assertNotIn("forward of model", line)
        return line

    def test_record_to_a_full_disk(self):
        r = run("record", fixture("resnet_mini"), "--device", "cpu", "-o", os.path.join(self.small, "run.h5"))
        line = self.check_failed_cleanly(r)
        self.assertIn(self.small, line)
        self.assertEqual(os.listdir(self.small), [])

    def test_worker_dumps_in_a_full_tmpdir(self):
        env = dict(os.environ, TMPDIR=self.small)
        # Full dumps (a hash-only first pass fits in the small file system), and a divergent check
        # whose second pass fills it.
        for args in (["--full"], ["--vary", "seed=0,1"]):
            r = subprocess.run([BIN, fixture("resnet_mini"), "--device", "cpu", *args], capture_output=True, text=True,
                               env=env, timeout=300)
            self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
            self.assertIn("disk space", r.stderr)
            self.assertNotIn("forward of model", r.stderr)
            self.assertEqual(os.listdir(self.small), [])
        r = subprocess.run([BIN, fixture("resnet_mini"), "--device", "cpu"], capture_output=True, text=True, env=env,
                           timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)  # hashes only: about 0.2 MB per run
        self.assertEqual(os.listdir(self.small), [])

    def test_keep_and_reports_on_a_full_disk(self):
        keep = os.path.join(self.small, "kept")
        r = run(fixture("resnet_mini"), "--device", "cpu", "--keep", keep)
        self.check_failed_cleanly(r)
        for name in os.listdir(keep) if os.path.isdir(keep) else []:
            self.assertFalse(name.startswith("run-") and name.endswith(".h5"), "a truncated dump was kept")
            self.assertNotIn(".tmp", name)
        with open(os.path.join(self.small, "filler"), "wb") as f:  # leave a few bytes free
            try:
                f.write(b"x" * (1 << 20))
            except OSError:
                pass
        r = run(fixture("dropout_mlp"), "--device", "cpu", "--json", os.path.join(self.small, "report.json"))
        self.check_failed_cleanly(r)
        self.assertEqual(sorted(n for n in os.listdir(self.small) if n != "kept"), ["filler"])


class Signals(unittest.TestCase):
    def test_record_stops_within_a_second_inside_a_long_forward(self):
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "run.h5")
            p = subprocess.Popen([BIN, "record", fixture("resnet_mini"), "--device", "cpu", "--threads", "1",
                                  "--input-shape", "48,3,192,192", "--steps", "20", "-o", out],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            time.sleep(3)
            self.assertIsNone(p.poll(), "the run ended before the signal")
            sent = time.monotonic()
            p.send_signal(signal.SIGINT)
            code = p.wait(timeout=30)
            self.assertLess(time.monotonic() - sent, 2.0)
            self.assertEqual(code, 130, p.stderr.read())
            self.assertEqual(os.listdir(d), [])  # no partial dump, temporary or lock file


class Notes(unittest.TestCase):
    def test_a_model_without_conv_dropout_or_batch_norm_taps_every_leaf(self):
        with tempfile.TemporaryDirectory() as d:
            path = script_model(d, "mlp", """
                import torch
                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.fc1 = torch.nn.Linear(4, 8)
                        self.act = torch.nn.Tanh()
                        self.fc2 = torch.nn.Linear(8, 2)
                    def forward(self, x):
                        return self.fc2(self.act(self.fc1(x)))
            """, [3, 4])
            r = run(path, "--device", "cpu")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("every leaf layer was tapped", r.stdout)

    def test_seed_random_on_a_model_that_draws_nothing_is_noted(self):
        r = run(fixture("bn_net"), "--device", "cpu", "--seed", "random")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("--seed random does not reach this model", r.stdout)
        r = run(fixture("dropout_mlp"), "--device", "cpu", "--seed", "random", "--runs", "8")
        self.assertNotIn("does not reach this model", r.stdout)

    def test_outputs_the_loss_ignores_are_noted(self):
        with tempfile.TemporaryDirectory() as d:
            path = script_model(d, "aux", """
                import torch
                from typing import Tuple
                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.conv = torch.nn.Conv2d(3, 4, 3)
                        self.aux = torch.nn.Conv2d(3, 4, 3)
                    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
                        return self.conv(x), self.aux(x)
            """, [2, 3, 8, 8])
            r = run(path, "--device", "cpu", "--markdown", os.path.join(d, "r.md"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("1 more output(s) that the loss ignores", r.stdout)
            with open(os.path.join(d, "r.md")) as f:
                self.assertIn("loss ignores", f.read())

    def test_uninitialized_and_aliasing_ops_do_not_make_ops_capture_diverge(self):
        with tempfile.TemporaryDirectory() as d:
            path = script_model(d, "empty", """
                import torch
                class Model(torch.nn.Module):
                    def __init__(self):
                        super().__init__()
                        self.conv = torch.nn.Conv2d(3, 4, 3)
                        self.fc = torch.nn.Linear(4, 2)
                    def forward(self, x):
                        y = torch.empty_like(x)
                        y.copy_(x * 2)
                        z = x.new_empty(x.shape).fill_(1.0)
                        h = self.conv(y + z).mean(dim=(2, 3))
                        w = self.fc.weight.to(h.dtype).contiguous()
                        return torch.nn.functional.linear(h, w, self.fc.bias)
            """, [2, 3, 8, 8])
            r = run(path, "--device", "cpu", "--ops", "--runs", "3")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("uninitialized by contract", r.stdout)

    def test_a_model_traced_in_eval_mode_is_noted(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "eval.pt")
            source = os.path.join(d, "trace.py")
            with open(source, "w") as f:
                f.write(textwrap.dedent(f"""
                    import json, torch
                    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5)).eval()
                    t = torch.jit.trace(m, torch.randn(2, 3, 8, 8))
                    t.save({path!r}, _extra_files={{"reprocheck.json": json.dumps({{"input_shape": [2, 3, 8, 8]}})}})
                """))
            subprocess.run([PY, source], check=True, capture_output=True)
            r = run(path, "--device", "cpu")
            self.assertIn(r.returncode, (0, 1), r.stderr)
            self.assertIn("traced in eval mode", r.stdout)


if __name__ == "__main__":
    unittest.main()
