"""The `reprocheck` entry point of the wheel (reprocheck._cli): it runs the executable in the
package, and says in one line when the package holds none (the capture package alone)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from reprocheck import _cli


def test_without_the_executable_it_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(SystemExit) as e:
        _cli.main()
    message = str(e.value.code)
    assert message.startswith("reprocheck: error: no reprocheck executable at ")
    assert "install the reprocheck wheel" in message and "\n" not in message


def test_it_runs_the_packaged_executable_with_the_arguments(tmp_path: pathlib.Path) -> None:
    # A package laid out as the wheel's, whose _bin/reprocheck prints what it was given.
    pkg = os.path.join(str(tmp_path), "pkg")
    os.makedirs(os.path.join(pkg, "_bin"))
    exe = os.path.join(pkg, "_bin", "reprocheck")
    with open(exe, "w") as f:
        f.write('#!/bin/sh\necho "$0|$*"\n')
    os.chmod(exe, 0o755)
    with open(_cli.__file__) as f:
        source = f.read()
    with open(os.path.join(pkg, "_cli.py"), "w") as f:
        f.write(source)
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {pkg!r}); sys.argv = ["reprocheck", "run", "--", "python", "a b.py"]
        import _cli; _cli.main()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{exe}|run -- python a b.py"
