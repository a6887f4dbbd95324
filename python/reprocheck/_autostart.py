"""Imported by the start-up hook (reprocheck-capture.pth) when REPROCHECK_CAPTURE is set: switches
capture on for this process before the user's script runs."""
import os

_session = None


def session():
    return _session


def _start():
    global _session
    if not os.environ.get("REPROCHECK_CAPTURE") or _session is not None:
        return
    try:
        from ._capture import Session

        _session = Session.from_environment()
    except Exception as e:  # a check that silently records nothing would pass: stop instead
        message = f"reprocheck's capture could not start in this Python: {type(e).__name__}: {e}"
        os.sys.stderr.write(f"reprocheck: error: {message}\n")
        if os.environ.get("REPROCHECK_ERROR_FILE"):
            with open(os.environ["REPROCHECK_ERROR_FILE"], "w") as f:
                f.write(message)
        os._exit(2)


_start()
