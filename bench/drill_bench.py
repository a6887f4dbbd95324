"""What pass 3 (the drill-down) adds to a divergent check, and that a passing check is unchanged.

    .venv/bin/python bench/drill_bench.py BUILD_DIR [REPEATS=3]

For each divergent fixture, REPEATS paired rounds of the same check with `--drill none` and with
the default `--drill auto`, alternating; medians of each, the median of the paired differences and
the share of it pass 3 reports (its `seconds`). For passing fixtures, the same pairs: pass 3 never
runs, and the times agree within the machine's noise. Prints Markdown tables.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PY = os.path.join(ROOT, ".venv", "bin", "python")
ZOO = os.path.join(ROOT, "fixtures", "scripts", "zoo")


def cases(build):
    fx = os.path.join(build, "fixtures")
    ops = ["--load-library", os.path.join(fx, "libreprocheck_zoo_ops.so")]
    model = lambda name, *args: [os.path.join(fx, name + ".pt"), "--device", "cpu", *args]  # noqa: E731
    script = lambda name, *args: ["run", *args, "--", PY, os.path.join(ZOO, name + ".py")]  # noqa: E731
    divergent = [
        ("seed_convnet --vary threads=1,2", model("seed_convnet", "--vary", "threads=1,2")),
        ("racy_net (custom op)", model("racy_net", *ops)),
        ("dropout_mlp --seed random", model("dropout_mlp", "--seed", "random")),
        ("functional_random_net --seed random", model("functional_random_net", "--seed", "random")),
        ("bn_net --vary mode=train,eval", model("bn_net", "--vary", "mode=train,eval")),
        ("threads.py --vary threads=1,2", script("threads", "--vary", "threads=1,2")),
        ("dropout_block.py", script("dropout_block")),
        ("private_generator.py", script("private_generator")),
        ("noisy_backward.py", script("noisy_backward")),
        ("scatter_pool.py --vary threads=1,2", script("scatter_pool", "--vary", "threads=1,2")),
    ]
    passing = [
        ("resnet_mini", model("resnet_mini")),
        ("seed_convnet", model("seed_convnet")),
        ("threads.py --fixed", script("threads") + ["--fixed"]),
    ]
    return divergent, passing


def check(binary, args, drill, report):
    # The flag goes before "--" for `run`, anywhere for a model.
    args = list(args)
    at = args.index("--") if "--" in args else len(args)
    cmd = [binary, *args[:at], "--drill", drill, "--json", report, *args[at:]]
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - t
    with open(report) as f:
        return seconds, r.returncode, json.load(f)


def pairs(binary, args, repeats, tmp):
    rows = {"none": [], "auto": [], "pass3": [], "diff": []}
    found = None
    for _ in range(repeats):
        s_none, code_none, _ = check(binary, args, "none", os.path.join(tmp, "a.json"))
        s_auto, code_auto, rep = check(binary, args, "auto", os.path.join(tmp, "b.json"))
        if code_none != code_auto:
            sys.exit(f"{args}: exit {code_none} with --drill none, {code_auto} with auto")
        rows["none"].append(s_none)
        rows["auto"].append(s_auto)
        rows["diff"].append(s_auto - s_none)
        dd = rep["drill_down"]
        rows["pass3"].append(dd["seconds"] if dd else 0.0)
        found = dd
    return {k: statistics.median(v) for k, v in rows.items()}, found


def main():
    build = sys.argv[1]
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    binary = os.path.join(build, "reprocheck")
    divergent, passing = cases(build)
    print(f"CPU, 2 runs of 2 steps, median of {repeats} paired rounds (--drill none, then auto)\n")
    print("| divergent check | --drill none (s) | auto (s) | paired difference (s) | pass 3 reports (s) | "
          "ratio | first divergent op |")
    print("|---|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in divergent:
            m, dd = pairs(binary, args, repeats, tmp)
            op = f"{dd['op']} -> {dd['output']}" if dd and dd["found"] else (dd["note"] if dd else "-")
            print(f"| {name} | {m['none']:.2f} | {m['auto']:.2f} | {m['diff']:+.2f} | {m['pass3']:.2f} | "
                  f"{m['auto'] / m['none']:.2f}x | `{op}` |", flush=True)
        print("\n| passing check | --drill none (s) | auto (s) | paired difference (s) | pass 3 ran |")
        print("|---|---:|---:|---:|---|")
        for name, args in passing:
            m, dd = pairs(binary, args, repeats, tmp)
            print(f"| {name} | {m['none']:.2f} | {m['auto']:.2f} | {m['diff']:+.2f} | {'yes' if dd else 'no'} |",
                  flush=True)


if __name__ == "__main__":
    main()
