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
            (["--input-shape", "0,3"], "dimensions of 1 or more"),
            (["--input-shape", "-2,3"], "dimensions of 1 or more"),
            (["--input-shape", "100000,3,1000,1000"], "GB"),
            (["--steps", "0"], "an integer from 1 to 100000"),
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

    def test_a_script_in_a_full_tmpdir_says_why(self):
        # The run's output is kept in memory: its own error reaches the report, not "(none)".
        env = dict(os.environ, TMPDIR=self.small)
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "scripts",
                              "cnn_augment.py")
        r = subprocess.run([BIN, "run", "--full", "--", PY, script], capture_output=True, text=True, env=env,
                           timeout=300)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertNotIn("(none)", r.stderr)
        self.assertRegex(r.stderr, "No space left on device|disk space")
        # Nothing of reprocheck's is left (the script's own temporary files are its business).
        self.assertEqual([n for n in os.listdir(self.small) if n.startswith("reprocheck")], [])

    def test_keep_and_reports_on_a_full_disk(self):
        # The runs finish; the verdict is printed; keeping fails in one line, exit 2, and no empty or
        # partial folder is left.
        keep = os.path.join(self.small, "kept")
        r = run(fixture("resnet_mini"), "--device", "cpu", "--full", "--keep", keep)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("verdict: REPRODUCIBLE", r.stdout)
        line = one_line(self, r)
        self.assertIn("nothing was kept", line)
        self.assertFalse(os.path.exists(keep), os.listdir(self.small))
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


class Round2(unittest.TestCase):
    """What the second trust probe found: every failure says why, in one line, with the right code."""

    def test_the_command_line(self):
        cases = [
            (["run", "python", "x.py"], "put '--' before the command to run: reprocheck run [options] -- python x.py"),
            (["run", "--stpes", "3", "--", PY, "x.py"], "unknown flag '--stpes'; did you mean '--steps'?"),
            ([fixture("dropout_mlp"), "--stpes", "3"], "did you mean '--steps'?"),
            (["--version", "extra"], "--version takes no arguments, got 'extra'"),
            (["run", "--", "/no/such/python", "train.py"], "cannot run '/no/such/python': No such file or directory"),
            (["run", "--", "no-such-program-here", "train.py"], "cannot run 'no-such-program-here': no such program on PATH"),
            (["run", "--baseline", FIX, "--", PY, "x.py"], "is a folder; pass the golden dump file"),
            (["run", "--baseline", "/dev/zero", "--", PY, "x.py"], "is not a regular file"),
        ]
        for args, expected in cases:
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                self.assertIn(expected, one_line(self, r))
                self.assertNotIn("Traceback", r.stderr)

    def test_a_script_s_forked_helpers_end_with_its_run(self):
        d = tempfile.mkdtemp()
        marker = f"reprocheck-helper-{os.getpid()}"
        script = os.path.join(d, "forks.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(f"""
                import subprocess, sys, torch
                subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "{marker}"])
                torch.manual_seed(0)
                m = torch.nn.Linear(2, 1)
                opt = torch.optim.SGD(m.parameters(), lr=0.1)
                for _ in range(3):
                    loss = m(torch.ones(1, 2)).sum()
                    opt.zero_grad(); loss.backward(); opt.step()
            """))
        r = run("run", "--", PY, script)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        time.sleep(0.3)
        left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
        self.assertEqual(left, [], "helpers outlived the check")

    def test_hostile_dumps_and_databases(self):
        import h5py
        import numpy as np

        d = tempfile.mkdtemp()
        good = os.path.join(d, "good.h5")
        r = run("record", fixture("dropout_mlp"), "--device", "cpu", "-o", good)
        self.assertEqual(r.returncode, 0, r.stderr)
        # A row that claims 10^12 elements over a small dataset: refused before anything is allocated.
        huge = os.path.join(d, "huge.h5")
        subprocess.run(["cp", good, huge], check=True)
        with h5py.File(huge, "r+") as f:
            rows = f["index"][:]
            rows[0]["numel"] = 10**12
            rows[0]["shape"] = np.array([10**12], dtype=np.int64)
            del f["index"]
            f.create_dataset("index", data=rows)
            # A dataset of that shape that stores almost nothing (chunked, never written).
            del f[rows[0]["dataset"].decode()]
            f.create_dataset(rows[0]["dataset"].decode(), shape=(10**12,), dtype=np.float32, chunks=(1024,))
        # format_version stored as the text "1".
        text_version = os.path.join(d, "text_version.h5")
        subprocess.run(["cp", good, text_version], check=True)
        with h5py.File(text_version, "r+") as f:
            del f.attrs["format_version"]
            f.attrs["format_version"] = "1"
        for dump, expected in ((huge, "claims 1000000000000 element(s)"), (text_version, "'format_version' is text")):
            with self.subTest(dump=os.path.basename(dump)):
                r = run("diff", good, dump)
                self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                line = one_line(self, r)
                self.assertIn(expected, line)
                self.assertNotIn("bad_alloc", line)
        # A history database whose schema version disagrees with its tables: exit 2, left as it is.
        db = os.path.join(d, "history.sqlite")
        audit_file = os.path.join(d, "a.toml")
        with open(audit_file, "w") as f:
            f.write(f'[[model]]\nname = "m"\npath = "{fixture("dropout_mlp")}"\n')
        self.assertEqual(run("audit", audit_file, "--db", db).returncode, 0)
        import sqlite3

        con = sqlite3.connect(db)
        con.execute("PRAGMA user_version = 1")
        con.commit()
        con.close()
        before = open(db, "rb").read()
        r = run("audit", audit_file, "--db", db)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("is inconsistent", one_line(self, r))
        self.assertEqual(open(db, "rb").read(), before)
        # An integer beyond every limit names the limit.
        with open(audit_file, "w") as f:
            f.write(f'[defaults]\nruns = 9223372036854775807\n[[model]]\nname = "m"\npath = "{fixture("dropout_mlp")}"\n')
        r = run("audit", audit_file, "--db", os.path.join(d, "other.sqlite"))
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        self.assertIn("an integer from 2 to 1000000", one_line(self, r))

    def test_an_archive_whose_code_does_not_parse(self):
        import zipfile

        d = tempfile.mkdtemp()
        src = fixture("dropout_mlp")
        bad = os.path.join(d, "edited.pt")
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                data = zin.read(item.filename)
                if item.filename.endswith(".py") and b"def forward" in data:
                    data = data.replace(b"def forward", b"def for-ward", 1)
                zout.writestr(item, data)
        r = run("info", bad)
        self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
        line = one_line(self, r)
        self.assertIn("does not parse", line)
        self.assertNotIn("same PyTorch version", line)
