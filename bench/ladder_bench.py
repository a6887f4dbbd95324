"""End-to-end cost of a check with the capture ladder, against plain runs of the same steps.

    .venv/bin/python bench/ladder_bench.py BUILD_DIR [REPEATS=5] [MODEL ...]

For each model (default: resnet_mini, resnet18, resnet_wide64 from BUILD_DIR/fixtures; resnet18
and resnet_wide64 come with the benchmark build): medians over REPEATS of
  - one `record --plain` process (the steps without capture or dump);
  - `reprocheck MODEL` on the reproducible model (N = 2 runs), against N plain runs;
  - a divergent check (`--vary data-seed=0,1`: the batches differ from step 0), against N plain runs, and the bytes it wrote;
  - the same two checks with `--full`, and their dump bytes (disk use before the ladder).
Prints a Markdown table.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd, env=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, r


def main():
    build = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    models = sys.argv[3:] or ["resnet_mini", "resnet18", "resnet_wide64"]
    binary = os.path.join(build, "reprocheck")
    print(f"end to end, N = 2 runs, 2 steps, CPU, median of {repeats}\n")
    print("| model | plain run (s) | check, reproducible (s) | ratio to 2 plain | --full (s) | ratio | "
          "check, divergent (s) | ratio to 2 plain | bytes written | --full divergent (s) | --full bytes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in models:
        model = os.path.join(build, "fixtures", name + ".pt")
        base = [model, "--device", "cpu", "--steps", "2"]
        rows = {k: [] for k in ("plain", "ok", "ok_full", "div", "div_full")}
        written = {}
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, TMPDIR=tmp)
            for _ in range(repeats):
                rows["plain"].append(timed([binary, "record", *base, "--plain"], env)[0])
                for key, extra, code in (("ok", [], 0), ("ok_full", ["--full"], 0),
                                         ("div", ["--vary", "data-seed=0,1"], 1),
                                         ("div_full", ["--vary", "data-seed=0,1", "--full"], 1)):
                    report = os.path.join(tmp, "r.json")
                    seconds, r = timed([binary, *base, *extra, "--json", report], env)
                    if r.returncode != code:
                        sys.exit(f"{name} {extra}: exit {r.returncode}\n{r.stdout}{r.stderr}")
                    with open(report) as f:
                        cap = json.load(f)["capture"]
                    rows[key].append(seconds)
                    written[key] = cap["pass1_bytes"] + cap["pass2_bytes"]
        m = {k: statistics.median(v) for k, v in rows.items()}
        p2 = 2 * m["plain"]
        print(f"| {name} | {m['plain']:.2f} | {m['ok']:.2f} | {m['ok'] / p2:.2f}x | {m['ok_full']:.2f} | "
              f"{m['ok_full'] / p2:.2f}x | {m['div']:.2f} | {m['div'] / p2:.2f}x | {written['div'] / 1e6:.1f} MB | "
              f"{m['div_full']:.2f} | {written['div_full'] / 1e6:.1f} MB |", flush=True)
        print(f"<!-- {name}: reproducible check wrote {written['ok'] / 1e3:.0f} KB, --full {written['ok_full'] / 1e6:.1f} MB -->")


if __name__ == "__main__":
    main()
