"""Runs a script under `reprocheck run`'s capture with hashing switched off (every hash is 0): what
the capture costs besides hashing (its hooks, rows and writes). For `script_step_bench.py SPLIT=1`;
a measurement aid only, the dumps it writes compare nothing.

    REPROCHECK_CAPTURE=out.h5 python bench/capture_no_hash.py SCRIPT [ARG ...]

The start-up hook has started the capture before this file runs (REPROCHECK_CAPTURE is set); the
recorder looks its hashers up in reprocheck._core at each call, so replacing them here is enough.
"""
import runpy
import sys

from reprocheck import _autostart, _core, _records


class NoHash:
    """reprocheck._core as the recorder sees it, with hash_bytes and hash_many doing nothing."""

    def __getattr__(self, name):
        return getattr(_core, name)

    @staticmethod
    def hash_bytes(data):
        return 0

    @staticmethod
    def hash_many(arrays, threads):
        return [0] * len(arrays)


if _autostart.session() is None:
    sys.exit("capture_no_hash.py: no capture started: set REPROCHECK_CAPTURE (and install the capture package)")
_records._core = NoHash()
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
