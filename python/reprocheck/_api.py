"""The explicit API: a context manager around the training loop, and manual step marks."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


def active() -> bool:
    """True when this process records for reprocheck (it was started by `reprocheck run`)."""
    from . import _autostart

    return _autostart.session() is not None


@contextlib.contextmanager
def capture() -> Iterator[None]:
    """Records only inside this block: tensors produced outside it (set-up, evaluation after
    training) are not recorded. A no-op when reprocheck did not launch the script.

        with reprocheck.capture():
            for x, y in loader:
                ...
    """
    from . import _autostart

    session = _autostart.session()
    if session is None:
        yield
        return
    session.enter_block()
    try:
        yield
    finally:
        session.leave_block()


def mark_step() -> None:
    """Ends a training step by hand, for loops that never call `optimizer.step()` on a
    `torch.optim` optimizer. A no-op when reprocheck did not launch the script."""
    from . import _autostart

    session = _autostart.session()
    if session is not None:
        session.mark_step()
