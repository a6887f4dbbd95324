"""The capture's own time per training step of `reprocheck run`, timed inside the process around its
entry points (the module hooks, the gradient hooks, the backward wrapper, the optimizer hook, the
batch and the step's end), outermost call only, in a captured run of bench/resnet_script.py (pass 1:
hashes only). No second process to compare with, so far less noise than a ratio of step times:
the figure for a change to the capture's own code. Each process gives the median of its steps'
capture time (the first and last steps left out); printed: the median over the processes (min-max),
with hashing on, with it off (as capture_no_hash.py), and their difference, what the hashes cost.

    .venv/bin/python bench/capture_self_time.py [REPEATS=5] [STEPS=14] [MODEL=resnet18 ...]

$BENCH_LAYERS: the --layers of the capture (default "default"); $BENCH_PIXELS: the image size.
"""
import atexit
import json
import os
import runpy
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ENTRY_POINTS = ("_pre_forward", "_post_forward", "_on_backward", "_after_backward", "_on_param_grad",
                "on_optimizer_step", "_write", "_next_iteration", "_on_batch", "mark_step")


def child(out, no_hash, argv):
    """In the captured process: time the session's entry points per step, then run the script."""
    from reprocheck import _autostart, _capture, _core, _records

    session = _autostart.session()
    if session is None:
        sys.exit("capture_self_time.py: no capture started (REPROCHECK_CAPTURE)")
    per_step, depth = {}, [0]

    def timed(f):
        def wrapper(self, *args, **kwargs):
            if depth[0]:
                return f(self, *args, **kwargs)
            depth[0], step, t0 = 1, self.step, time.perf_counter()
            try:
                return f(self, *args, **kwargs)
            finally:
                depth[0] = 0
                per_step[step] = per_step.get(step, 0.0) + time.perf_counter() - t0
        return wrapper

    def save():  # at exit: the capture ends the script with SystemExit after its steps
        with open(out, "w") as f:
            json.dump(per_step, f)

    atexit.register(save)

    for name in ENTRY_POINTS:
        setattr(_capture.Session, name, timed(getattr(_capture.Session, name)))
    if no_hash:
        class NoHash:
            def __getattr__(self, name):
                return getattr(_core, name)

            hash_bytes = staticmethod(lambda data: 0)
            hash_many = staticmethod(lambda arrays, threads: [0] * len(arrays))

        _records._core = NoHash()
    session.uninstall()  # the hooks were bound before the patch: bind them again
    session.install()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


def process_median(model, steps, no_hash, d, i):
    out = os.path.join(d, f"times-{i}.json")
    options = {"steps": steps, "hashes_only": True, "layers": os.environ.get("BENCH_LAYERS", "default")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPROCHECK_")}
    env.update(REPROCHECK_CAPTURE=os.path.join(d, f"run-{i}.h5"), REPROCHECK_RUN_OPTIONS=json.dumps(options))
    subprocess.run([sys.executable, os.path.abspath(__file__), "--child", out, str(int(no_hash)),
                    os.path.join(HERE, "resnet_script.py"), model, str(steps)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    with open(out) as f:
        per_step = {int(k): v for k, v in json.load(f).items()}
    return statistics.median(per_step[s] for s in range(1, steps - 1))


def ms(values):
    return f"{statistics.median(values) * 1e3:.2f} ({min(values) * 1e3:.2f}-{max(values) * 1e3:.2f})"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2], sys.argv[3] == "1", sys.argv[4:])
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 14
    models = sys.argv[3:] or ["resnet18"]
    print(f"the capture's own time per step, {steps} steps, {repeats} processes each, median (min-max), ms\n")
    print("| model | layers | capture | capture without hashing | hashing |")
    print("|---|---|---:|---:|---:|")
    for model in models:
        with tempfile.TemporaryDirectory() as d:
            on, off = [], []
            for i in range(repeats):  # alternating, so that a slow spell of the machine hits both
                on.append(process_median(model, steps, False, d, 2 * i))
                off.append(process_median(model, steps, True, d, 2 * i + 1))
        layers = os.environ.get("BENCH_LAYERS", "default")
        hashing = (statistics.median(on) - statistics.median(off)) * 1e3
        print(f"| {model} | {layers} | {ms(on)} | {ms(off)} | {hashing:.2f} |", flush=True)


if __name__ == "__main__":
    main()
