"""Imported by the start-up hook (reprocheck-capture.pth) when REPROCHECK_CAPTURE is set: switches
capture on for this process before the user's script runs."""
from __future__ import annotations

import gc
import os
import sys
from typing import Any

_session: Any | None = None


def session() -> Any | None:
    return _session


def _start() -> None:
    global _session
    if not os.environ.get("REPROCHECK_CAPTURE") or _session is not None:
        return
    try:
        from ._capture import Session

        _session = Session.from_environment()
        # What is alive now (the interpreter, torch, the capture) lives as long as the process: kept
        # out of the collector's full passes, which the step's records would otherwise set off
        # about every 20 steps, each as long as a step.
        gc.freeze()
    except Exception as e:  # a check that silently records nothing would pass: stop instead
        message = str(e) if type(e).__name__ == "UnsupportedTorch" else (
            f"reprocheck's capture could not start in this Python: {type(e).__name__}: {e}")
        sys.stderr.write(f"reprocheck: error: {message}\n")
        if os.environ.get("REPROCHECK_ERROR_FILE"):
            with open(os.environ["REPROCHECK_ERROR_FILE"], "w") as f:
                f.write(message)
        os._exit(2)


_start()
