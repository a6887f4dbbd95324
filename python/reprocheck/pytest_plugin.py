"""The pytest plugin: reproducibility checks and numerics goldens inside a team's own test suite.

Registered through the ``pytest11`` entry point of the ``reprocheck`` package. The ``reprocheck``
fixture runs the ``reprocheck`` command (from ``--reprocheck-binary``, ``$REPROCHECK_BINARY`` or
``PATH``) and returns its JSON report as a :class:`Report`::

    def test_training_is_reproducible(reprocheck):
        reprocheck.assert_reproducible(["python", "train.py"], "--steps", "2")

    def test_numerics_unchanged(reprocheck):
        reprocheck.assert_matches_golden("model.pt", "--threads", "1")

A golden lives beside the test (``goldens/<test name>.h5``); a missing one is recorded and the test
fails once, like pytest-regressions; ``pytest --reprocheck-regen`` records them all again. A failure's
message is the report's first divergence and its likely cause, so JUnit from pytest carries it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import pytest

Target = Union[str, "os.PathLike[str]", Sequence[str]]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("reprocheck", "reproducibility checks (reprocheck)")
    group.addoption("--reprocheck-regen", action="store_true", default=False,
                    help="record the tests' reprocheck goldens again, replacing them, instead of comparing with them")
    group.addoption("--reprocheck-binary", default=None,
                    help="the reprocheck command (default: $REPROCHECK_BINARY, else reprocheck on PATH)")


@dataclass
class Report:
    """A check's outcome: its exit code, its JSON report (docs/report-json.md) and its text."""

    exit_code: int
    data: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    stderr: str = ""

    @property
    def verdict(self) -> str:
        """reproducible, divergent, inconclusive; "failed" when the check could not decide."""
        return str(self.data.get("verdict", "failed"))

    @property
    def first_divergence(self) -> dict[str, Any] | None:
        fd = self.data.get("first_divergence")
        return fd if isinstance(fd, dict) else None

    @property
    def hints(self) -> list[dict[str, Any]]:
        return list(self.data.get("hints") or [])

    def summary(self) -> str:
        """The first divergence and the likely cause, as the failure message of a test."""
        if not self.data:
            lines = [line for line in self.stderr.splitlines() if line.strip()]
            return f"the check failed (exit {self.exit_code}): {lines[-1] if lines else 'no output'}"
        fd = self.first_divergence
        if fd is None:
            return f"{self.verdict} (exit {self.exit_code})"
        where = "before step 0" if fd.get("step", 0) < 0 else f"step {fd.get('step')}"
        stats = fd.get("stats") or {}
        size = f", max abs diff {stats['max_abs']:.3g}" if isinstance(stats.get("max_abs"), (int, float)) else ""
        word = "numerics changed" if self.data.get("baseline") else self.verdict
        out = [f"{word}: first divergence {where} · {fd.get('phase')} · {fd.get('tensor')}{size}"]
        for i, h in enumerate(self.hints[:2]):
            out.append(f"{'likely cause' if i == 0 else 'also possible'}: {h.get('title')}")
            for key, label in (("evidence", "evidence"), ("fix_python", "fix"), ("test_it", "test it")):
                if h.get(key) and h.get(key) != "-":
                    out.append(f"  {label}: {h[key]}")
        return "\n".join(out)


class Reprocheck:
    """Runs checks for one test (the ``reprocheck`` fixture)."""

    def __init__(self, binary: str, workdir: Path, golden_dir: Path, test_name: str, regen: bool) -> None:
        self.binary = binary
        self.workdir = workdir
        self.golden_dir = golden_dir
        self.test_name = test_name
        self.regen = regen
        self._reports = 0

    def _argv(self, target: Target, flags: Sequence[str]) -> list[str]:
        if isinstance(target, (str, os.PathLike)):
            return [self.binary, os.fspath(target), *flags]
        command = [os.fspath(a) for a in target]
        if not command:
            raise ValueError("reprocheck: an empty command; pass a model path or a command such as ['python', 't.py']")
        return [self.binary, "run", *flags, "--", *command]

    def check(self, target: Target, *flags: str, env: dict[str, str] | None = None,
              timeout: float | None = None) -> Report:
        """Runs ``reprocheck MODEL.pt FLAGS`` (a path) or ``reprocheck run FLAGS -- COMMAND`` (a list)."""
        self._reports += 1
        json_path = self.workdir / f"reprocheck-{self._reports}.json"
        argv = self._argv(target, [*flags, "--json", str(json_path)])
        run_env = dict(os.environ, NO_COLOR="1")
        run_env.update(env or {})
        p = subprocess.run(argv, capture_output=True, text=True, env=run_env, timeout=timeout)
        data: dict[str, Any] = {}
        if json_path.exists():
            with open(json_path) as f:
                data = json.load(f)
        return Report(p.returncode, data, p.stdout, p.stderr)

    def assert_reproducible(self, target: Target, *flags: str, **kwargs: Any) -> Report:
        report = self.check(target, *flags, **kwargs)
        if report.exit_code != 0 or report.verdict != "reproducible":
            pytest.fail(report.summary(), pytrace=False)
        return report

    def golden_path(self, golden: str | os.PathLike[str] | None = None) -> Path:
        if golden is not None:
            return Path(golden)
        return self.golden_dir / (re.sub(r"[^A-Za-z0-9_.-]+", "_", self.test_name).strip("_") + ".h5")

    def assert_matches_golden(self, target: Target, *flags: str,
                              golden: str | os.PathLike[str] | None = None, **kwargs: Any) -> Report:
        """Compares fresh runs with the test's golden; records it when missing or with --reprocheck-regen."""
        path = self.golden_path(golden)
        if self.regen or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            report = self.check(target, *flags, "--save-baseline", str(path), "--force", **kwargs)
            if report.exit_code != 0:
                pytest.fail(f"recording the golden {path} failed: {report.summary()}", pytrace=False)
            why = "recorded again (--reprocheck-regen)" if self.regen else "was missing and is recorded now"
            pytest.fail(f"the golden {path} {why}; run the test again to compare with it", pytrace=False)
        report = self.check(target, *flags, "--baseline", str(path), **kwargs)
        if report.exit_code != 0 or report.verdict != "reproducible":
            pytest.fail(f"the numerics changed against {path}\n{report.summary()}", pytrace=False)
        return report


def _binary(config: pytest.Config) -> str:
    given = config.getoption("--reprocheck-binary") or os.environ.get("REPROCHECK_BINARY")
    found = given or shutil.which("reprocheck")
    if not found:
        pytest.fail("the reprocheck command was not found: put it on PATH, set REPROCHECK_BINARY, or pass "
                    "--reprocheck-binary", pytrace=False)
    return found


@pytest.fixture
def reprocheck(request: pytest.FixtureRequest, tmp_path: Path) -> Reprocheck:
    """Runs reprocheck checks for this test; goldens live in ``goldens/`` beside the test file."""
    test_file = Path(str(request.node.path))
    return Reprocheck(_binary(request.config), tmp_path, test_file.parent / "goldens", request.node.name,
                      bool(request.config.getoption("--reprocheck-regen")))
