"""Fixtures for the capture package's unit tests: a Session switched on for one test, in this process,
and what it wrote."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import torch

from reprocheck import _core
from reprocheck._capture import Session


class Captured:
    """A session's dump once it has ended: its rows and attributes."""

    def __init__(self, path: str) -> None:
        reader = _core.DumpReader(path)
        self.rows: list[dict[str, Any]] = reader.index()
        self.attributes = reader.attributes

    def keys(self) -> list[tuple]:
        return [(r["step"], r["phase"], r["layer"], r["kind"], r["name"], r["call"]) for r in self.rows]

    def where(self, **fields: Any) -> list[dict[str, Any]]:
        return [r for r in self.rows if all(r[k] == v for k, v in fields.items())]


@pytest.fixture
def capture(tmp_path: Any) -> Iterator[Callable[..., Captured]]:
    """capture(loop, steps=2, **options): runs `loop()` with a session on; returns its dump."""
    sessions: list[Session] = []

    def run(loop: Callable[[], None], steps: int = 2, **options: Any) -> Captured:
        path = os.path.join(str(tmp_path), f"run-{len(sessions)}.h5")
        torch.manual_seed(0)
        session = Session(path, {"steps": steps, **options})
        sessions.append(session)
        session.install()
        try:
            loop()
        except SystemExit:
            pass  # the session ends the script after its steps
        finally:
            if not session.finished:
                session._at_exit()
            session.uninstall()
        return Captured(path)

    yield run
    for s in sessions:
        s.uninstall()
