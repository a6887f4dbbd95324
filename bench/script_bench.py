"""Capture overhead of the Python front end: a fixture training script run plainly and with
reprocheck's capture on (as `reprocheck run` starts it), whole processes, median of N.

    .venv/bin/python bench/script_bench.py [REPEATS] [STEPS] [SCRIPT ...]
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "..", "fixtures", "scripts")


def timed(cmd, env):
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=SCRIPTS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    scripts = sys.argv[3:] or ["cnn_augment", "adamw_mlp", "bf16_autocast", "text_classifier"]
    print(f"capture overhead of `reprocheck run`, {steps} steps, median of {repeats} processes each\n")
    print("| script | layers | plain s | captured s | ratio | dump MB |")
    print("|---|---|---:|---:|---:|---:|")
    base = {k: v for k, v in os.environ.items() if not k.startswith("REPROCHECK_")}
    for name in scripts:
        cmd = [sys.executable, os.path.join(SCRIPTS, name + ".py"), "--max-steps", str(steps)]
        for layers in ("default", "all"):
            plain, captured, size = [], [], 0
            with tempfile.TemporaryDirectory() as d:
                for i in range(repeats):
                    plain.append(timed(cmd, base))
                    dump = os.path.join(d, f"run-{i}.h5")
                    env = dict(base, REPROCHECK_CAPTURE=dump,
                               REPROCHECK_RUN_OPTIONS=f'{{"steps": {steps}, "layers": "{layers}"}}')
                    captured.append(timed(cmd, env))
                    size = os.path.getsize(dump)
            p, c = statistics.median(plain), statistics.median(captured)
            print(f"| {name} | {layers} | {p:.2f} | {c:.2f} | {c / p:.2f}x | {size / 1e6:.1f} |")


if __name__ == "__main__":
    main()
