"""The HTML reports in a real browser (headless Chromium, tests/browser/cdp.py): an audit's page
(heatmap, regressions, per-layer charts, trend) and a single check's page, from `reprocheck audit`,
`reprocheck MODEL.pt`, `reprocheck run` and `reprocheck diff` with --html. Asserts what renders,
from the DOM and computed styles; no console errors and no network requests; saves screenshots
into $REPROCHECK_ARTIFACTS."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cdp import Browser, find_chromium  # noqa: E402

BIN = os.environ["REPROCHECK_BINARY"]
FIX = os.environ["REPROCHECK_FIXTURE_DIR"]
PY = os.environ["REPROCHECK_PYTHON"]
ARTIFACTS = os.environ.get("REPROCHECK_ARTIFACTS", os.path.join(tempfile.gettempdir(), "reprocheck-artifacts"))
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

GREEN, RED, AMBER = "rgb(47, 158, 91)", "rgb(214, 69, 65)", "rgb(184, 110, 0)"
PURPLE, MAGENTA = "rgb(125, 95, 178)", "rgb(194, 24, 91)"

AUDIT = """
[audit]
name = "browser"
jobs = 2
timing = "info"
[defaults]
steps = 2
[matrix]
threads = [1, 2]
[[model]]
name = "seed_convnet"
path = "{fix}/seed_convnet.pt"
{extra}
[[model]]
name = "dropout_mlp"
path = "{fix}/dropout_mlp.pt"
[[model]]
name = "racy_net (control)"
path = "{fix}/racy_net.pt"
args = ["--load-library", "{fix}/libreprocheck_zoo_ops.so"]
expect = "divergent"
[model.matrix]
threads = [2]
"""

# Seven cells of one model that fail at once (a library that is not there): a matrix wider than a page.
WIDE = """
[audit]
name = "wide"
jobs = 2
[defaults]
steps = 1
[matrix]
threads = [1, 2, 3, 4, 5, 6, 7]
[[model]]
name = "wide"
path = "{fix}/seed_convnet.pt"
args = ["--load-library", "{missing}"]
"""

FACTS = """JSON.stringify({
  cells: [...document.querySelectorAll('td.cell')].map(td => ({
    verdict: td.dataset.verdict, model: td.dataset.model, column: td.dataset.column, meets: td.dataset.meets,
    background: getComputedStyle(td).backgroundColor, outline: getComputedStyle(td).boxShadow,
    regressed: getComputedStyle(td).outlineStyle, regressions: td.dataset.regressions,
    text: td.innerText, width: td.getBoundingClientRect().width,
    right: td.getBoundingClientRect().right})),
  heatmaps: [...document.querySelectorAll('table.heatmap')].map(t => ({columns: +t.dataset.columns,
    right: t.getBoundingClientRect().right})),
  causes: [...document.querySelectorAll('.cell-detail .hint.cause')].map(h => ({cause: h.dataset.cause,
    evidence: (h.querySelector('.evidence') || {}).innerText || '', fix: (h.querySelector('.fix') || {}).innerText || '',
    test_it: (h.querySelector('.test-it') || {}).innerText || ''})),
  failures: [...document.querySelectorAll('.failure-reason')].map(x => x.innerText),
  regression_marks: [...document.querySelectorAll('svg.trend .regression-mark')].map(m => ({audit: +m.dataset.audit,
    count: +m.dataset.count, fill: getComputedStyle(m).fill})),
  charts: [...document.querySelectorAll('svg.layer-chart')].map(s => ({
    points: s.querySelectorAll('.pt').length, first: s.querySelectorAll('.pt.first').length,
    label: (s.querySelector('.first-label') || {}).textContent || '', width: s.getBoundingClientRect().width,
    height: s.getBoundingClientRect().height, fill: s.querySelector('.pt.first') ?
      getComputedStyle(s.querySelector('.pt.first')).fill : ''})),
  trend: [...document.querySelectorAll('svg.trend')].map(s => ({audits: +s.dataset.audits,
    bars: s.querySelectorAll('rect.bar').length, width: s.getBoundingClientRect().width})),
  regressions: [...document.querySelectorAll('#regressions li.regression')].map(li => li.dataset.kind),
  regressions_top: (document.querySelector('#regressions') || {offsetTop: -1}).offsetTop,
  heatmap_top: (document.querySelector('table.heatmap') || {offsetTop: -1}).offsetTop,
  verdict: (document.querySelector('#verdict, #audit-verdict') || {}).textContent,
  verdict_background: document.querySelector('.verdict') ? getComputedStyle(document.querySelector('.verdict')).backgroundColor : '',
  first: (document.querySelector('#first-divergence') || {}).innerText || '',
  drill: (document.querySelector('#drill-down + .card') || {}).innerText || '',
  drill_link: !!document.querySelector('#first-divergence a[href="#drill-down"]'),
  scripts: document.scripts.length,
  overflow: document.documentElement.scrollWidth > window.innerWidth + 1,
})"""


def run(*args, expect=(0, 1), cwd=None):
    r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert r.returncode in expect, r.stdout + r.stderr
    return r


class Html(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not find_chromium():
            raise unittest.SkipTest("no chromium")
        os.makedirs(ARTIFACTS, exist_ok=True)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.browser = Browser(width=1280, height=900)

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def facts(self, page, screenshot):
        problems = self.browser.load(page)
        self.assertEqual(problems, [], page)
        facts = json.loads(self.browser.evaluate(FACTS))
        self.browser.screenshot(os.path.join(ARTIFACTS, screenshot))
        with open(os.path.join(ARTIFACTS, screenshot), "rb") as f:
            png = f.read()
        self.assertTrue(png.startswith(b"\x89PNG") and len(png) > 10000, screenshot)
        self.assertEqual(facts["scripts"], 0)
        self.assertFalse(facts["overflow"], "the page scrolls sideways")
        return facts

    def test_audit_report(self):
        toml, db = self.path("audit.toml"), self.path("h.sqlite")
        with open(toml, "w") as f:
            f.write(AUDIT.format(fix=FIX, extra=""))
        run("audit", toml, "--db", db, expect=(0,))
        # The second night, seed_convnet's runs use 1 and 2 threads: it diverges, a regression.
        with open(toml, "w") as f:
            f.write(AUDIT.format(fix=FIX, extra='args = ["--vary", "threads=1,2"]'))
        run("audit", toml, "--db", db, "--html", self.path("audit.html"), "--json", self.path("audit.json"),
            expect=(1,))
        with open(self.path("audit.json")) as f:
            report = json.load(f)
        facts = self.facts(self.path("audit.html"), "audit-report.png")
        cells = facts["cells"]
        self.assertEqual(len(cells), 5)
        by = {(c["model"], c["column"]): c for c in cells}
        blocking = {r["key"] for r in report["regressions"] if r["blocking"]}
        for c in report["cells"]:
            shown = by[(c["model"], c["column"])]
            self.assertEqual(shown["verdict"], c["verdict"])
            control = c["expect"] == "divergent" and c["verdict"] == "divergent"
            colour = PURPLE if control else RED if c["verdict"] == "divergent" else GREEN
            self.assertEqual(shown["background"], colour, c["model"])
            self.assertEqual(shown["meets"], "true" if c["meets_expectation"] else "false")
            self.assertGreater(shown["width"], 100)
            # A blocking regression outlines its cell (dashed), the others have no outline.
            self.assertEqual(shown["regressed"], "dashed" if c["key"] in blocking else "none", c["key"])
            if c["verdict"] == "divergent" and not control:
                self.assertIn("features.0", shown["text"])  # the first divergent layer, in the cell
                self.assertNotEqual(shown["outline"], "none")  # breaks its expectation
                self.assertIn("newly_divergent", shown["regressions"])
        self.assertEqual(len(blocking), 2)
        self.assertEqual(len(facts["charts"]), 3)  # one per divergent cell, the control's too
        for chart in facts["charts"]:
            self.assertGreaterEqual(chart["points"], 1)
            self.assertEqual(chart["first"], 1)
            self.assertEqual(chart["fill"], RED)
            self.assertGreater(chart["width"], 600)
            self.assertGreater(chart["height"], 150)
        # The full cause of each divergent cell: title, evidence, fix and the command that tests it.
        causes = [c for c in facts["causes"] if c["cause"] == "thread_reduction"]
        self.assertEqual(len(causes), 2)
        for c in causes:
            self.assertIn("threads", c["evidence"])
            self.assertIn("torch.set_num_threads", c["fix"])
            self.assertIn("--threads 1", c["test_it"])
        self.assertEqual(facts["trend"][0]["audits"], 2)
        self.assertGreaterEqual(facts["trend"][0]["bars"], 3)  # green, then green and red
        # The regressions of the second audit, plotted on the trend in their own colour.
        self.assertEqual([(m["audit"], m["count"]) for m in facts["regression_marks"]],
                         [(report["audit"]["id"], len(report["regressions"]))])
        self.assertEqual(facts["regression_marks"][0]["fill"], MAGENTA)
        self.assertEqual(sorted(facts["regressions"]), ["newly_divergent", "newly_divergent"])
        self.assertLess(facts["regressions_top"], facts["heatmap_top"])  # regressions at the top
        self.assertEqual(facts["verdict"], "NEEDS ATTENTION")

    def test_a_wide_audit_fits_the_page(self):
        toml, db = self.path("wide.toml"), self.path("wide.sqlite")
        with open(toml, "w") as f:
            f.write(WIDE.format(fix=FIX, missing=self.path("missing.so")))
        run("audit", toml, "--db", db, "--html", self.path("wide.html"), expect=(1,))
        facts = self.facts(self.path("wide.html"), "audit-wide.png")  # asserts no sideways scroll
        self.assertEqual(len(facts["cells"]), 7)
        self.assertEqual([t["columns"] for t in facts["heatmaps"]], [5, 2])  # the columns wrap
        for cell in facts["cells"]:
            self.assertLessEqual(cell["right"], 1280)
            self.assertIn("cannot load library", cell["text"])  # each failure keeps its reason
        self.assertEqual(len(facts["failures"]), 7)
        self.assertTrue(all("cannot load library" in f for f in facts["failures"]))

    def test_single_check_reports(self):
        keep = self.path("runs")
        run(os.path.join(FIX, "seed_convnet.pt"), "--vary", "threads=1,2", "--steps", "2", "--keep", keep,
            "--html", self.path("check.html"), expect=(1,))
        facts = self.facts(self.path("check.html"), "check-report.png")
        self.assertEqual(facts["verdict"], "DIVERGENT")
        self.assertEqual(facts["verdict_background"], RED)
        self.assertIn("features.0.weight", facts["first"])
        self.assertIn("thread count", facts["first"])  # the likely cause
        # The main chart, then pass 3's op series of the divergent layer, opened from the first divergence.
        self.assertEqual(len(facts["charts"]), 2)
        self.assertTrue(facts["drill_link"])
        self.assertIn("aten::conv2d -> grad_weight in features.0", facts["drill"])
        ops = facts["charts"][1]
        self.assertGreaterEqual(ops["points"], 1)
        self.assertEqual(ops["first"], 1)
        self.assertIn("aten::conv2d", ops["label"])
        chart = facts["charts"][0]
        self.assertGreater(chart["points"], 1)
        self.assertEqual(chart["first"], 1)
        self.assertIn("features.0.weight", chart["label"])
        # diff of the kept dumps renders the same chart.
        run("diff", os.path.join(keep, "run-0.h5"), os.path.join(keep, "run-1.h5"), "--html", self.path("diff.html"),
            expect=(1,))
        diff = self.facts(self.path("diff.html"), "diff-report.png")
        self.assertEqual(diff["charts"][0]["points"], chart["points"])
        self.assertIn("features.0.weight", diff["charts"][0]["label"])
        # A reproducible training script through `reprocheck run`: green, no chart.
        run("run", "--steps", "1", "--html", self.path("run.html"), "--", PY,
            os.path.join(ROOT, "fixtures", "scripts", "adamw_mlp.py"), expect=(0,))
        ok = self.facts(self.path("run.html"), "run-report.png")
        self.assertEqual(ok["verdict"], "REPRODUCIBLE")
        self.assertEqual(ok["verdict_background"], GREEN)
        self.assertEqual(ok["charts"], [])


if __name__ == "__main__":
    unittest.main()
