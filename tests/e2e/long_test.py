"""Repeat checks too long for every CI run (ci/long): each training-loop shape in
fixtures/scripts/loops, and each distributed fixture (FSDP2, tensor parallelism; torchrun, 2 ranks
over Gloo), checked 10 times, each check 2 fresh runs; all 10 must be REPRODUCIBLE.

    python long_test.py [CHECKS] [loops|distributed|all]
"""
import os
import subprocess
import sys
import time

BIN = os.environ["REPROCHECK_BINARY"]
PY = os.environ["REPROCHECK_PYTHON"]
LOOPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "fixtures", "scripts", "loops")
SCRIPTS = os.path.dirname(LOOPS)
TORCHRUN = [os.path.join(os.path.dirname(PY), "torchrun"), "--nproc_per_node", "2"]
SHAPES = ["grad_accum", "gan", "two_loaders", "two_optimizers", "lbfgs", "eval_between", "set_to_none", "probed"]
# name: (command, working directory)
LOOP_CHECKS = {shape: ([PY, os.path.join(LOOPS, shape + ".py")], LOOPS) for shape in SHAPES}
DISTRIBUTED_CHECKS = {
    "fsdp2_train": (TORCHRUN + [os.path.join(SCRIPTS, "fsdp2_train.py")], SCRIPTS),
    **{name + " --fixed": (TORCHRUN + [os.path.join(SCRIPTS, "zoo", name + ".py"), "--fixed"],
                           os.path.join(SCRIPTS, "zoo"))
       for name in ("fsdp2_dropout", "tp_mlp", "fsdp2_accum")},
}


def main():
    checks = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    which = sys.argv[2] if len(sys.argv) > 2 else "all"
    todo = {**(LOOP_CHECKS if which in ("loops", "all") else {}),
            **(DISTRIBUTED_CHECKS if which in ("distributed", "all") else {})}
    failed = 0
    for shape, (command, cwd) in todo.items():
        passed, start = 0, time.perf_counter()
        for _ in range(checks):
            r = subprocess.run([BIN, "run", "--jobs", "2", "--", *command],
                               capture_output=True, text=True, timeout=600, cwd=cwd)
            if r.returncode == 0 and "verdict: REPRODUCIBLE" in r.stdout:
                passed += 1
            else:
                print(r.stdout[-1500:], r.stderr[-1500:])
        failed += passed != checks
        print(f"{shape:22} {passed} of {checks} checks reproducible ({time.perf_counter() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
