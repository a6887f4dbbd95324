"""The performance table: each row a paired comparison, whole processes, on the CPU.

    .venv/bin/python bench/perf_table.py BUILD_DIR [REPEATS=5] [MODEL ...]
    PERF_BEFORE=OLD_BUILD_DIR .venv/bin/python bench/perf_table.py BUILD_DIR ...

With PERF_BEFORE (a build of an earlier commit, its fixtures from BUILD_DIR), every pair of the
earlier build runs right before the pair of this one, and the table has both.

For each model (default: resnet18 and resnet50 from BUILD_DIR/fixtures, at 8x3x64x64) and each
row, the two sides run alternately REPEATS times (A, B, A, B, ...), so that the machine's drift
falls on both; each pair gives a ratio B / A. Printed: the median ratio with its min-max over the
pairs, for wall time and for CPU time (the processes' user + system time, children included).

  passing     `reprocheck MODEL` (N = 2, reproducible)       against 2 plain runs (`record --plain`)
  divergent   `reprocheck MODEL --data-seed random`, one thread everywhere   against 2 plain runs
  threads     `reprocheck MODEL --vary threads=1,2`          against a plain run at 1 and one at 2 threads
  hash-only   `record --hashes-only` (one process)           against one `record --plain`

Targets (docs/capture-ladder.md, bench/README.md): passing <= 1.10x, divergent <= 2.0x (N + 2 runs),
threads <= 2.0x, hash-only <= 1.10x.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd, env, code=0):
    """Wall and CPU seconds of one command (and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode not in ((0, 1) if code is None else (code,)):
        sys.exit(f"{' '.join(cmd)}: exit {r.returncode} (expected {code})\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def add(a, b):
    return a[0] + b[0], a[1] + b[1]


def rows(binary, model, shape, tmp):
    base = [model, "--device", "cpu", "--steps", "2", "--input-shape", shape]
    plain = [binary, "record", *base, "--plain"]
    dump = os.path.join(tmp, "hashes.h5")

    def record_hashes(env):
        if os.path.exists(dump):
            os.remove(dump)
        return timed([binary, "record", *base, "--hashes-only", "-o", dump], env)

    return {
        "passing": (lambda env: add(timed(plain, env), timed(plain, env)),
                    lambda env: timed([binary, *base], env, 0), 1.10),
        "divergent": (lambda env: add(timed(plain + ["--threads", "1"], env), timed(plain + ["--threads", "1"], env)),
                      lambda env: timed([binary, *base, "--threads", "1", "--data-seed", "random"], env, 1), 2.0),
        "threads": (lambda env: add(timed(plain + ["--threads", "1"], env), timed(plain + ["--threads", "2"], env)),
                    lambda env: timed([binary, *base, "--vary", "threads=1,2"], env, None), 2.0),
        "hash-only": (lambda env: timed(plain, env), record_hashes, 1.10),
    }


def spread(values):
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def measure(binary, model, shape, tmp, env, row):
    a, b, _ = rows(binary, model, shape, tmp)[row]
    wa, ca = a(env)
    wb, cb = b(env)
    return wa, wb, wb / wa, cb / ca


def main():
    build = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    models = sys.argv[3:] or ["resnet18", "resnet50"]
    builds = [("after", os.path.join(build, "reprocheck"))]
    if os.environ.get("PERF_BEFORE"):
        builds.insert(0, ("before", os.path.join(os.environ["PERF_BEFORE"], "reprocheck")))
    shape = os.environ.get("PERF_SHAPE", "8,3,64,64")
    print(f"paired runs (A, B alternating), {repeats} pairs, input {shape}, 2 steps, CPU; median ratio (min-max)\n")
    print("| model | row | build | A median (s) | B median (s) | wall B/A | CPU B/A | target |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in models:
        model = os.path.join(build, "fixtures", name + ".pt")
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, TMPDIR=tmp)
            for row, (_, _, target) in rows("", model, shape, tmp).items():
                got = {label: [] for label, _ in builds}
                for _ in range(repeats):
                    for label, binary in builds:
                        got[label].append(measure(binary, model, shape, tmp, env, row))
                for label, _ in builds:
                    wa, wb, wall, cpu = zip(*got[label])
                    print(f"| {name} | {row} | {label} | {statistics.median(wa):.2f} | {statistics.median(wb):.2f} | "
                          f"{spread(wall)} | {spread(cpu)} | <= {target:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
