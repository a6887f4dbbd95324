"""End-to-end tests of `reprocheck audit`: a small audit of fixtures (2 models x 3 settings, one a
negative control) run twice, a regression, shards and merge, and the faults an audit must survive."""
import json
import os
import signal
import sqlite3
import subprocess
import unittest

from lxml import etree

from e2e_test import InTempDir  # a private folder per test, also the runs' TMPDIR

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]
OPS = os.environ["REPROCHECK_ZOO_OPS"]
XSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "junit.xsd")

AUDIT = """
[audit]
name = "e2e"
jobs = 2
time_regression_min_s = 1000   # these tests do not judge timings

[defaults]
steps = 1
runs = 2

[matrix]
threads = [1, 2, 3]

[[model]]
name = "seed_convnet"
path = "{fix}/seed_convnet.pt"
{extra}

[[model]]
name = "racy_net"
path = "{fix}/racy_net.pt"
args = ["--load-library", "{ops}"]
expect = "divergent"
"""


class AuditCase(InTempDir):
    def write_audit(self, name="audit.toml", extra="", text=None):
        with open(self.path(name), "w") as f:
            f.write(text if text is not None else AUDIT.format(fix=FIX, ops=OPS, extra=extra))
        return self.path(name)

    def audit(self, *args, expect=0, timeout=300):
        r = subprocess.run([BIN, "audit", *args], capture_output=True, text=True, timeout=timeout, env=self.env)
        self.assertEqual(r.returncode, expect, r.stdout + r.stderr)
        return r

    def load(self, name):
        with open(self.path(name)) as f:
            return json.load(f) if name.endswith(".json") else f.read()

    def rows(self, db, sql):
        with sqlite3.connect(db) as c:
            return c.execute(sql).fetchall()


class History(AuditCase):
    def test_two_audits_record_rows_and_no_regressions_then_a_changed_cell_regresses(self):
        toml, db = self.write_audit(), self.path("h.sqlite")
        first = self.audit(toml, "--db", db, "--json", self.path("1.json"), "--junit", self.path("1.xml"),
                           "--markdown", self.path("1.md"), "--html", self.path("1.html"))
        self.assertIn("6 of 6 cells as expected, no regressions (exit 0)", first.stdout)
        report = self.load("1.json")
        self.assertEqual(report["columns"], ["threads=1", "threads=2", "threads=3"])
        verdicts = {(c["model"], c["column"]): c["verdict"] for c in report["cells"]}
        self.assertEqual(set(verdicts[("seed_convnet", f"threads={t}")] for t in (1, 2, 3)), {"reproducible"})
        self.assertEqual(set(verdicts[("racy_net", f"threads={t}")] for t in (1, 2, 3)), {"divergent"})
        control = next(c for c in report["cells"] if c["model"] == "racy_net")
        self.assertTrue(control["meets_expectation"])
        self.assertEqual(control["first_divergence"]["layer"], "conv2")
        self.assertEqual(control["provenance"]["libtorch"], "2.11.0")
        etree.XMLSchema(etree.parse(XSD)).assertValid(etree.parse(self.path("1.xml")))
        self.assertEqual(len(etree.parse(self.path("1.xml")).findall(".//testcase")), 6)
        self.assertIn("| racy\\_net |", self.load("1.md"))

        second = self.audit(toml, "--db", db, "--json", self.path("2.json"))
        self.assertIn("no regressions", second.stdout)
        self.assertEqual(self.load("2.json")["regressions"], [])
        self.assertEqual(self.rows(db, "SELECT count(*) FROM audits"), [(2,)])
        self.assertEqual(self.rows(db, "SELECT audit_id, count(*) FROM cells GROUP BY audit_id"), [(1, 6), (2, 6)])
        self.assertEqual(self.rows(db, "SELECT status FROM audit_ends ORDER BY audit_id"), [("complete",), ("complete",)])
        first_rows = self.rows(db, "SELECT * FROM cells WHERE audit_id = 1 ORDER BY id")

        # The model's cells now compare runs with 1 and 2 threads: they diverge.
        self.write_audit(extra='args = ["--vary", "threads=1,2"]')
        third = self.audit(toml, "--db", db, "--json", self.path("3.json"), expect=1)
        report = self.load("3.json")
        kinds = sorted((r["model"], r["column"], r["kind"]) for r in report["regressions"])
        self.assertEqual(kinds, [("seed_convnet", f"threads={t}", "newly_divergent") for t in (1, 2, 3)])
        self.assertTrue(all(r["blocking"] for r in report["regressions"]))
        self.assertEqual(report["broken"], 3)
        self.assertIn("features.0.weight", report["regressions"][0]["message"])
        self.assertIn("3 of 6 cells as expected, 3 break their expectation, 3 regressions (exit 1)", third.stdout)
        self.assertEqual(self.rows(db, "SELECT count(*) FROM regressions WHERE audit_id = 3"), [(3,)])
        # Old rows are never rewritten.
        self.assertEqual(self.rows(db, "SELECT * FROM cells WHERE audit_id = 1 ORDER BY id"), first_rows)
        self.assertEqual([t["divergent"] for t in report["trend"]], [3, 3, 6])


class Shards(AuditCase):
    def test_shards_merged_equal_one_audit(self):
        toml = self.write_audit()
        self.audit(toml, "--db", self.path("all.sqlite"), "--json", self.path("all.json"))
        for i in (1, 2):
            r = self.audit(toml, "--db", self.path(f"s{i}.sqlite"), "--shard", f"{i}/2")
            self.assertIn("3 cells · shard " + f"{i}/2", r.stdout)
        r = self.audit("merge", "--db", self.path("merged.sqlite"), self.path("s2.sqlite"), self.path("s1.sqlite"),
                       "--json", self.path("merged.json"), "--html", self.path("merged.html"))
        whole, merged = self.load("all.json"), self.load("merged.json")
        keep = ("position", "key", "model", "column", "expect", "verdict", "meets_expectation")
        self.assertEqual([{k: c[k] for k in keep} for c in merged["cells"]],
                         [{k: c[k] for k in keep} for c in whole["cells"]])
        first = lambda c: c["first_divergence"] and (c["first_divergence"]["step"], c["first_divergence"]["tensor"])
        self.assertEqual([first(c) for c in merged["cells"]], [first(c) for c in whole["cells"]])
        self.assertEqual((merged["models"], merged["columns"]), (whole["models"], whole["columns"]))
        self.assertEqual(merged["audit"]["shard"], "merged from 2 shards")
        self.assertEqual(merged["exit_code"], whole["exit_code"])
        self.assertIn('data-verdict="divergent"', self.load("merged.html"))
        # The same merge again adds nothing: one line, the same audit's reports.
        r = self.audit("merge", "--db", self.path("merged.sqlite"), self.path("s1.sqlite"), self.path("s2.sqlite"),
                       "--json", self.path("again.json"))
        self.assertIn("already in", r.stderr)
        self.assertIn("nothing added", r.stderr)
        self.assertEqual(self.rows(self.path("merged.sqlite"), "SELECT count(*) FROM audits"), [(1,)])
        self.assertEqual(self.load("again.json")["audit"]["id"], merged["audit"]["id"])
        # A missing or repeated shard is refused.
        r = self.audit("merge", "--db", self.path("m2.sqlite"), self.path("s1.sqlite"), expect=2)
        self.assertIn("shard 2/2 is missing", r.stderr)
        self.assertIn("--allow-missing-shards", r.stderr)
        self.assertFalse(os.path.exists(self.path("m2.sqlite")) and
                         self.rows(self.path("m2.sqlite"), "SELECT count(*) FROM audits") != [(0,)])
        r = self.audit("merge", "--db", self.path("m2.sqlite"), self.path("s1.sqlite"), self.path("s1.sqlite"), expect=2)
        self.assertIn("given twice", r.stderr)
        # --allow-missing-shards publishes what ran: an incomplete audit naming the missing shard, exit 3.
        r = self.audit("merge", "--db", self.path("m3.sqlite"), self.path("s1.sqlite"), "--allow-missing-shards",
                       "--json", self.path("part.json"), "--junit", self.path("part.xml"), expect=3)
        part = self.load("part.json")
        self.assertEqual(part["audit"]["status"], "incomplete")
        self.assertEqual(part["audit"]["missing_shards"], ["2/2"])
        self.assertEqual(part["exit_code"], 3)
        self.assertEqual(len(part["cells"]), 3)
        self.assertIn("shard(s) 2/2 are missing", r.stdout)
        self.assertIn("(exit 3)", r.stdout)
        # The missing shard arriving later does not join that audit silently: one line, nothing added.
        r = self.audit("merge", "--db", self.path("m3.sqlite"), self.path("s1.sqlite"), self.path("s2.sqlite"), expect=2)
        self.assertIn("already in", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertEqual(self.rows(self.path("m3.sqlite"), "SELECT count(*) FROM audits"), [(1,)])


class Faults(AuditCase):
    def test_a_damaged_database_is_one_line_and_left_alone(self):
        toml, db = self.write_audit(), self.path("h.sqlite")
        junk = os.urandom(5000)
        with open(db, "wb") as f:
            f.write(junk)
        r = self.audit(toml, "--db", db, expect=2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("is damaged", r.stderr)
        self.assertNotIn("cell 1/", r.stderr)  # failed before any cell ran
        self.assertEqual(open(db, "rb").read(), junk)

    def test_a_locked_database_is_one_line(self):
        toml, db = self.write_audit(), self.path("h.sqlite")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            r = self.audit(toml, "--db", db, expect=2)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        self.assertIn("is locked by another process", r.stderr)
        self.assertNotIn("cell 1/", r.stderr)

    def test_an_error_in_the_file_names_line_and_column(self):
        bad = self.write_audit("bad.toml", text='[defaults]\nsteps = 1\nthread = 2\n')
        r = self.audit(bad, "--db", self.path("h.sqlite"), expect=2)
        self.assertIn("bad.toml:3:1: unknown setting 'thread'", r.stderr)
        self.assertFalse(os.path.exists(self.path("h.sqlite")))

    def test_a_crashed_cell_is_failed_and_the_audit_goes_on(self):
        text = f"""
[defaults]
steps = 1
[[model]]
name = "crash"
path = "{FIX}/crash_net.pt"
args = ["--load-library", "{OPS}"]
[[model]]
name = "fine"
path = "{FIX}/dropout_mlp.pt"
"""
        toml = self.write_audit(text=text)
        r = self.audit(toml, "--db", self.path("h.sqlite"), "--json", self.path("r.json"), "--junit",
                       self.path("r.xml"), expect=1)
        cells = {c["model"]: c for c in self.load("r.json")["cells"]}
        self.assertEqual(cells["crash"]["verdict"], "failed")
        self.assertTrue(cells["crash"]["error"])
        self.assertEqual(cells["fine"]["verdict"], "reproducible")
        self.assertEqual(etree.parse(self.path("r.xml")).getroot().get("errors"), "1")

    def test_a_failed_cell_keeps_its_reason_in_every_format(self):
        text = f"""
[defaults]
steps = 2
timeout = 1
[[model]]
name = "slow"
path = "{FIX}/resnet18.pt"
"""
        toml = self.write_audit(text=text)
        r = self.audit(toml, "--db", self.path("h.sqlite"), "--json", self.path("r.json"), "--junit",
                       self.path("r.xml"), "--markdown", self.path("r.md"), "--html", self.path("r.html"), expect=1)
        why = "run 1 of 2 failed: timed out after 1 s"
        cell = self.load("r.json")["cells"][0]
        self.assertEqual(cell["verdict"], "failed")
        self.assertIn(why, cell["error"])
        self.assertNotIn("(none)", cell["error"])
        self.assertFalse(cell["error"].removesuffix(" (exit code 3)").endswith("its last output:"), cell["error"])
        self.assertIn(why, r.stdout)
        self.assertIn(why, r.stderr)  # the progress line
        error = etree.parse(self.path("r.xml")).getroot().find(".//error")
        self.assertIn(why, error.get("message"))
        self.assertIn(why, self.load("r.md"))
        self.assertIn(why, self.load("r.html"))

    def test_ctrl_c_stops_cleanly_and_keeps_the_finished_cells(self):
        toml, db = self.write_audit(), self.path("h.sqlite")
        p = subprocess.Popen([BIN, "audit", toml, "--db", db, "--jobs", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env)
        for line in p.stderr:
            if line.startswith("cell 1/6"):
                break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 130, out + err)
        self.assertIn("interrupted", err)
        self.assertEqual(self.rows(db, "SELECT status FROM audit_ends"), [("interrupted",)])
        finished = self.rows(db, "SELECT count(*) FROM cells")[0][0]
        self.assertGreaterEqual(finished, 1)
        self.assertLess(finished, 6)
        self.assertEqual(self.rows(db, "PRAGMA integrity_check"), [("ok",)])
        self.assertIn("(exit 130)", out)  # the summary states the process's exit code
        self.assertEqual(sorted(os.listdir(self.tmp.name)), ["audit.toml", "h.sqlite"])  # no temp files left
        # The next audit compares with the finished cells and runs normally.
        self.audit(toml, "--db", db)


class Example(AuditCase):
    def test_the_bundled_example_audit_runs_as_documented(self):
        example = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "audit", "nightly.toml")
        root = os.path.realpath(os.path.join(os.path.dirname(example), "..", ".."))
        if os.path.realpath(FIX) != os.path.join(root, "build", "fixtures"):
            self.skipTest("the example names the models of build/; this build is elsewhere")
        r = self.audit(example, "--db", self.path("n.sqlite"), "--json", self.path("n.json"))
        self.assertIn("audit: 16 of 16 cells as expected, no regressions (exit 0)", r.stdout)
        report = self.load("n.json")
        self.assertEqual(len(report["models"]), 4)
        self.assertEqual(sum(c["verdict"] == "divergent" for c in report["cells"]), 4)  # the control
        self.assertTrue(report["audit"]["provenance"]["libtorch"])


if __name__ == "__main__":
    unittest.main()
