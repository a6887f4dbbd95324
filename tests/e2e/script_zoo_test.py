"""Runs the zoo of training-script mistakes (fixtures/scripts/zoo/cases.py) through `reprocheck run`
and checks each exit code, first divergent record and hint; and that every fixed twin is
reproducible in 10 runs.

    python script_zoo_test.py cases|twins|ladder|gpu

`ladder` runs CPU cases again with --full: the default check (hashes first) must name the same
first divergent record and cause.

With REPROCHECK_LONG=1 (ci/long), `twins` checks each fixed twin with 10 runs and `ladder` takes
every CPU case; otherwise a sample of twins with 2 runs, and the ladder a case of each kind of first
record.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ZOO = os.path.join(HERE, "..", "..", "fixtures", "scripts", "zoo")
sys.path.insert(0, ZOO)
from cases import CASES  # noqa: E402

LONG = os.environ.get("REPROCHECK_LONG") == "1"
TWIN_RUNS = 10 if LONG else 2
# A case of each kind of first record (indices, batch, RNG, initial weights, model input, parameter
# gradient, op output) for the ladder against --full in every CI run; all of them in ci/long.
LADDER_SAMPLE = {"unseeded_shuffle", "numpy_augment", "clock_reseed", "init_before_seed", "mixup", "threads",
                 "private_generator"}
# The fixed twins every CI run checks (2 runs each): the ladder's sample and a distributed one; all of
# them, with 10 runs each, in ci/long.
TWIN_SAMPLE = LADDER_SAMPLE | {"ddp_rank1_order"}
BIN = os.environ["REPROCHECK_BINARY"]
PY = os.environ["REPROCHECK_PYTHON"]
TORCHRUN = os.path.join(os.path.dirname(PY), "torchrun")
LAUNCHERS = {s["script"]: s.get("launcher") for s in CASES}


def command(script):
    path = os.path.join(ZOO, script + ".py")
    if LAUNCHERS.get(script) == "torchrun":
        return [TORCHRUN, "--nproc_per_node", "2", path]
    return [PY, path]


def run(flags, script, *script_args):
    with tempfile.TemporaryDirectory() as d:
        report = os.path.join(d, "report.json")
        start = time.perf_counter()
        r = subprocess.run([BIN, "run", "--jobs", "2", "--json", report, *flags, "--", *command(script),
                            *script_args],
                           capture_output=True, text=True, timeout=600, cwd=ZOO)
        seconds = time.perf_counter() - start
        data = json.load(open(report)) if os.path.exists(report) else None
        return r, data, seconds


def has_cuda():
    probe = subprocess.run([PY, "-c", "import torch; print(torch.cuda.is_available())"], capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def drill_problems(case, report):
    """The drill-down's problems against the case's "drill", or none if it matches one of the
    alternatives in "drill_also" (another true source a run may reach first)."""
    problems = single_drill_problems(case.get("drill"), case, report)
    for other in case.get("drill_also", []):
        if problems and not single_drill_problems(other, case, report):
            return []
    return problems


def single_drill_problems(want, case, report):
    """The drill-down (pass 3) the case expects: the op, output, module, source line and whether the
    op's inputs were identical; or none."""
    dd = report["drill_down"]
    if want == "any":
        return []
    if want is None:
        return [] if dd is None else [f"pass 3 ran: {dd}"]
    note = (dd or {}).get("note") or ""
    if dd is not None and not dd["found"] and case.get("arrival_order") and (
            "did not diverge" in note or "diverged earlier" in note):
        return []  # an op that adds in arrival order agreed, or raced elsewhere, in pass 3: said so, not invented
    if dd is None or not dd["found"]:
        return [f"pass 3 found no op: {dd}"]
    problems = [f"drill-down {key} {dd[key]!r}, expected {value!r}" for key, value in want.items()
                if key not in ("line", "inputs_identical") and dd[key] != value]
    # The op's own inputs (hashed as it was called): identical unless the case plants a value made
    # outside torch's ops.
    inputs = dd["tensor"]["inputs_identical"]
    if inputs != want.get("inputs_identical", True):
        problems.append(f"drill-down op inputs_identical {inputs}, expected {want.get('inputs_identical', True)}")
    where = f"{dd['file']}:{dd['line']}"
    if "line" in want and where != want["line"] and not where.endswith("/" + want["line"]):
        problems.append(f"drill-down line {dd['file']}:{dd['line']}, expected {want['line']}")
    return problems


def check_case(case):
    r, report, seconds = run(case["flags"], case["script"])
    name = case.get("name", case["script"])
    problems = []
    if r.returncode != 1:
        problems.append(f"exit {r.returncode}, expected 1: {r.stdout[-800:]}{r.stderr[-800:]}")
    elif report is None:
        problems.append("no JSON report")
    else:
        first = report["first_divergence"]
        step, phase, kind = case["first"]
        if (step is not None and first["step"] != step) or (phase and first["phase"] != phase) or (
                kind and first["kind"] != kind):
            problems.append(f"first divergence {first['step']} {first['phase']} {first['kind']}, expected {case['first']}")
        if "rank" in case and first["rank"] != case["rank"]:
            problems.append(f"first divergence on rank {first['rank']}, expected rank {case['rank']}")
        # Pass 2 kept the first divergence's data (a distributed run's ranks included): statistics,
        # unless the difference did not come back or has no values to compare (a shape, a presence).
        if (report["capture"]["pass2"] and first["stats"] is None and not report["capture"]["intermittent_runs"]
                and first["status"] == "values_differ"):
            problems.append("no statistics for the first divergence: pass 2 did not keep its data")
        hints = [h["cause"] for h in report["hints"]]
        if not hints or hints[0] != case["hint"]:
            problems.append(f"hints {hints}, expected {case['hint']} first")
        elif case.get("evidence", "") not in report["hints"][0]["evidence"]:
            problems.append(f"evidence {report['hints'][0]['evidence']!r} lacks {case['evidence']!r}")
        elif case.get("fix", "") not in report["hints"][0]["fix_python"]:
            problems.append(f"fix {report['hints'][0]['fix_python']!r} lacks {case['fix']!r}")
        elif "-- " not in report["hints"][0]["test_it"] or "reprocheck run" not in report["hints"][0]["test_it"]:
            problems.append(f"test it line is not a reprocheck run command: {report['hints'][0]['test_it']}")
        problems += drill_problems(case, report)
    status = "ok" if not problems else "FAILED"
    summary = ""
    if report and report["first_divergence"]:
        f = report["first_divergence"]
        summary = f"step {f['step']} {f['phase']} {f['tensor']} -> {report['hints'][0]['cause'] if report['hints'] else '-'}"
    print(f"{status:6} {name:22} {seconds:6.1f} s  {summary}")
    for p in problems:
        print(f"       {p}")
    return not problems


def check_ladder(case):
    name = case.get("name", case["script"])
    r1, ladder, s1 = run(case["flags"], case["script"])
    r2, full, s2 = run(case["flags"] + ["--full"], case["script"])
    problems = []
    if r1.returncode != 1 or r2.returncode != 1 or ladder is None or full is None:
        problems.append(f"exits {r1.returncode} and {r2.returncode}: {r1.stderr[-600:]}{r2.stderr[-600:]}")
    else:
        lf, ff = ladder["first_divergence"], full["first_divergence"]
        # A case whose first divergent step varies from run to run (case["first"][0] is None) is
        # compared on what does not vary: the record it names and the cause.
        keys = ("step", "phase", "layer", "kind", "name", "call") if case["first"][0] is not None \
            else ("phase", "layer", "kind", "name")
        for key in keys:
            if lf[key] != ff[key]:
                problems.append(f"{key}: {lf[key]!r} (ladder) vs {ff[key]!r} (--full)")
        if [h["cause"] for h in ladder["hints"]][:1] != [h["cause"] for h in full["hints"]][:1]:
            problems.append(f"causes {[h['cause'] for h in ladder['hints']]} vs {[h['cause'] for h in full['hints']]}")
        if ladder["capture"]["mode"] != "ladder" or not ladder["capture"]["pass2"]:
            problems.append(f"capture {ladder['capture']}")
        if lf["stats"] is None and not ladder["capture"]["intermittent_runs"]:
            problems.append("no statistics from the second pass")
    print(f"{'ok' if not problems else 'FAILED':6} {name:22} {s1:6.1f} s ladder, {s2:6.1f} s --full")
    for p in problems:
        print(f"       {p}")
    return not problems


def check_twin(script):
    r, report, seconds = run(["--runs", str(TWIN_RUNS)], script, "--fixed")
    ok = r.returncode == 0 and report is not None and report["verdict"] == "reproducible" and \
        report["drill_down"] is None  # a passing check never runs pass 3
    print(f"{'ok' if ok else 'FAILED':6} {script + ' --fixed':28} {seconds:6.1f} s  {TWIN_RUNS} runs "
          f"{'agree' if ok else 'differ'}")
    if not ok:
        print(r.stdout[-1500:], r.stderr[-1500:])
    return ok


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "cases"
    gpu = has_cuda() if which == "gpu" else False
    if which == "gpu" and not gpu:
        print("no CUDA device: the CUDA zoo case is skipped")
        return 77
    ok = True
    if which in ("cases", "gpu"):
        for case in CASES:
            if case.get("gpu", False) == (which == "gpu"):
                ok &= check_case(case)
    if which == "ladder":
        for case in CASES:
            if not case.get("gpu", False) and (LONG or case["script"] in LADDER_SAMPLE):
                ok &= check_ladder(case)
    if which in ("twins", "gpu"):
        scripts = sorted({c["script"] for c in CASES if c.get("gpu", False) == (which == "gpu")
                          and (LONG or which == "gpu" or c["script"] in TWIN_SAMPLE)})
        for script in scripts:
            ok &= check_twin(script)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
