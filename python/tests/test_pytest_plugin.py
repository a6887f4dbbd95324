"""The pytest plugin (reprocheck.pytest_plugin), through pytester: a golden recorded beside the test
on first use, compared on the next run, its failure message in the terminal and in JUnit, refreshed
with --reprocheck-regen; a reproducibility assertion; and a missing command as one usage error."""
from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

import pytest

pytest_plugins = ["pytester"]

TRAIN = """
import os, torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
opt = torch.optim.SGD(model.parameters(), lr=float(os.environ.get("LR", "0.1")))
x, y = torch.randn(16, 4), torch.randn(16, 1)
for _ in range(2):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
"""

TESTS = f"""
import sys

def test_numerics(reprocheck):
    reprocheck.assert_matches_golden([{sys.executable!r}, "train.py"], "--steps", "2")

def test_reproducible(reprocheck):
    report = reprocheck.assert_reproducible([{sys.executable!r}, "train.py"], "--steps", "2")
    assert report.verdict == "reproducible" and report.first_divergence is None
"""

needs_binary = pytest.mark.skipif(not os.environ.get("REPROCHECK_BINARY"), reason="needs REPROCHECK_BINARY")


@needs_binary
def test_goldens_are_recorded_compared_and_refreshed(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makefile(".py", train=TRAIN)
    pytester.makepyfile(test_model=TESTS)
    monkeypatch.delenv("LR", raising=False)
    # First run: the golden is missing, so it is recorded beside the test and the test fails once.
    r = pytester.runpytest("-k", "numerics")
    r.assert_outcomes(failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*goldens/test_numerics.h5 was missing and is recorded now*"])
    golden = pytester.path / "goldens" / "test_numerics.h5"
    assert golden.exists()
    # Then it compares: the same numerics pass, and the plain reproducibility test passes.
    pytester.runpytest().assert_outcomes(passed=2)
    # Changed numerics fail with the first divergence and its cause, in the terminal and in JUnit.
    monkeypatch.setenv("LR", "0.2")
    junit = pytester.path / "junit.xml"
    r = pytester.runpytest("-k", "numerics", f"--junitxml={junit}")
    r.assert_outcomes(failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*the numerics changed against*", "*first divergence step 0 · after_step*",
                            "*likely cause: *"])
    failure = ET.parse(junit).getroot().find(".//failure")
    assert failure is not None
    assert "first divergence step 0" in failure.get("message", "")
    # --reprocheck-regen records the golden again (the new numerics), and then they pass.
    before = golden.read_bytes()
    r = pytester.runpytest("-k", "numerics", "--reprocheck-regen")
    r.assert_outcomes(failed=1, deselected=1)
    r.stdout.fnmatch_lines(["*recorded again (--reprocheck-regen)*"])
    assert golden.read_bytes() != before
    pytester.runpytest("-k", "numerics").assert_outcomes(passed=1, deselected=1)


def test_a_missing_command_is_one_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_x="def test_x(reprocheck):\n    pass\n")
    monkeypatch.delenv("REPROCHECK_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(pytester.path))
    r = pytester.runpytest()
    r.assert_outcomes(errors=1)
    r.stdout.fnmatch_lines(["*the reprocheck command was not found*"])


def test_the_plugin_registers_its_option(pytester: pytest.Pytester) -> None:
    r = pytester.runpytest("--help")
    r.stdout.fnmatch_lines(["*--reprocheck-regen*"])
    assert r.ret == 0
