"""`reprocheck run`'s cost per training step, inside the process: bench/resnet_script.py run plainly
and with the capture on, as `reprocheck run` starts it (pass 1: hashes only; the default layers, and
--layers all), paired (plain, captured, plain, captured, ...). Each process's steps after the first
(the first pays for allocation and warm-up) give its median and mean step time; a pair's ratios
are captured / plain. Prints the median over the pairs of each ratio and its min-max: the ratio of
medians is the typical step, the ratio of means also counts the occasional slow one (a full garbage
collection). With SPLIT=1 each pair also runs the capture with hashing switched off
(bench/capture_no_hash.py): what the hooks and rows cost without the hashes.

With BASELINE=1 it compares, per step, the capture written by hand (Python forward and tensor hooks
writing every conv, batch-norm and dropout output and gradient and every parameter and gradient
with h5py: the script's $BENCH_H5PY mode) with reprocheck's capture of the same layers, in full
and hashes only: how many times less time per step the capture adds.

    .venv/bin/python bench/script_step_bench.py [REPEATS=5] [STEPS=8] [MODEL ...]

$BENCH_PIXELS sets the image size of the script's batches (default 64).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def step_times(cmd, env, times):
    """A process's step times after its first (which pays for allocation and warm-up)."""
    if os.path.exists(times):
        os.remove(times)
    subprocess.run(cmd, check=True, env=dict(env, BENCH_STEP_TIMES=times), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(times) as f:
        values = [float(line) for line in f if line.strip()]
    return values[1:]


def step_median(cmd, env, times):
    return statistics.median(step_times(cmd, env, times))


def baseline(repeats, steps, models, base):
    print(f"capture cost per step against Python hooks + h5py, {steps} steps, {repeats} rounds\n")
    print("| model | plain (ms) | hooks + h5py (ms) | reprocheck full (ms) | reprocheck hashes (ms) | "
          "added: h5py / full | added: h5py / hashes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in models:
        cmd = [sys.executable, os.path.join(HERE, "resnet_script.py"), name, str(steps)]
        got = {k: [] for k in ("plain", "h5py", "full", "hashes")}
        with tempfile.TemporaryDirectory() as d:
            times = os.path.join(d, "times")
            for i in range(repeats):
                got["plain"].append(step_median(cmd, base, times))
                got["h5py"].append(step_median(cmd, dict(base, BENCH_H5PY=os.path.join(d, f"h-{i}.h5")), times))
                for key, hashes in (("full", False), ("hashes", True)):
                    env = dict(base, REPROCHECK_CAPTURE=os.path.join(d, f"{key}-{i}.h5"),
                               REPROCHECK_RUN_OPTIONS=json.dumps({"steps": steps, "hashes_only": hashes}))
                    got[key].append(step_median(cmd, env, times))
        m = {k: statistics.median(v) for k, v in got.items()}
        added = {k: m[k] - m["plain"] for k in m}
        print(f"| {name} | {m['plain'] * 1e3:.1f} | {m['h5py'] * 1e3:.1f} | {m['full'] * 1e3:.1f} | "
              f"{m['hashes'] * 1e3:.1f} | {added['h5py'] / added['full']:.1f}x | {added['h5py'] / added['hashes']:.1f}x |",
              flush=True)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    models = sys.argv[3:] or ["resnet18", "resnet50"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("REPROCHECK_")}
    if os.environ.get("BASELINE"):
        return baseline(repeats, steps, models, base)
    split = bool(os.environ.get("SPLIT"))
    print(f"`reprocheck run` per step inside the process, {steps} steps (the first not counted), {repeats} pairs\n")
    print("| model | layers | plain step (ms) | captured step (ms) | ratio of medians (min-max) | ratio of means (min-max) |"
          + (" no hashing: ratio of medians (min-max) |" if split else ""))
    print("|---|---|---:|---:|---:|---:|" + ("---:|" if split else ""))

    def ratio(values):
        return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"

    for name in models:
        script = os.path.join(HERE, "resnet_script.py")
        for layers in ("default", "all"):
            plain, captured, medians, means, bare = [], [], [], [], []
            with tempfile.TemporaryDirectory() as d:
                times = os.path.join(d, "times")
                for i in range(repeats):
                    p = step_times([sys.executable, script, name, str(steps)], base, times)
                    options = {"steps": steps, "layers": layers, "hashes_only": True}
                    env = dict(base, REPROCHECK_CAPTURE=os.path.join(d, f"run-{i}.h5"),
                               REPROCHECK_RUN_OPTIONS=json.dumps(options))
                    c = step_times([sys.executable, script, name, str(steps)], env, times)
                    plain.append(statistics.median(p))
                    captured.append(statistics.median(c))
                    medians.append(captured[-1] / plain[-1])
                    means.append(statistics.mean(c) / statistics.mean(p))
                    if split:
                        env["REPROCHECK_CAPTURE"] = os.path.join(d, f"bare-{i}.h5")
                        wrapped = [sys.executable, os.path.join(HERE, "capture_no_hash.py"), script, name, str(steps)]
                        bare.append(step_median(wrapped, env, times) / plain[-1])
            print(f"| {name} | {layers} | {statistics.median(plain) * 1e3:.1f} | {statistics.median(captured) * 1e3:.1f} | "
                  f"{ratio(medians)} | {ratio(means)} |" + (f" {ratio(bare)} |" if split else ""), flush=True)


if __name__ == "__main__":
    main()
