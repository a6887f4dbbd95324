"""Repeat checks too long for every CI run (ci/long): each training-loop shape in
fixtures/scripts/loops checked 10 times, each check 2 fresh runs; all 10 must be REPRODUCIBLE.

    python long_test.py [CHECKS]
"""
import os
import subprocess
import sys
import time

BIN = os.environ["REPROCHECK_BINARY"]
PY = os.environ["REPROCHECK_PYTHON"]
LOOPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "scripts", "loops")
SHAPES = ["grad_accum", "gan", "two_loaders", "two_optimizers", "lbfgs", "eval_between", "set_to_none"]


def main():
    checks = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    failed = 0
    for shape in SHAPES:
        passed, start = 0, time.perf_counter()
        for _ in range(checks):
            r = subprocess.run([BIN, "run", "--jobs", "2", "--", PY, os.path.join(LOOPS, shape + ".py")],
                               capture_output=True, text=True, timeout=600, cwd=LOOPS)
            if r.returncode == 0 and "verdict: REPRODUCIBLE" in r.stdout:
                passed += 1
            else:
                print(r.stdout[-1500:], r.stderr[-1500:])
        failed += passed != checks
        print(f"{shape:16} {passed} of {checks} checks reproducible ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
