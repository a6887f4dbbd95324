#!/usr/bin/env bash
# The wheel alone: installs dist/reprocheck-*.whl (ci/wheel) into a fresh venv with torch==2.11.0 and numpy,
# and runs there, away from this checkout (no PYTHONPATH, no build tree on any path):
#   reprocheck --version; a check of a fixture model; reprocheck run -- python on a fixture script;
#   reprocheck audit of the workflows' example (fixtures/audit/github.toml, its files copied);
#   a test through the pytest plugin; every binary's ldd: the wheel's own libraries, the torch package and the C/C++ runtime only;
#   a torch of another release: one line naming both versions, exit 2.
# torch comes from pip's cache where ci/setup's download left it there.
#
#   tests/wheel/fresh_venv_test.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

wheel=$(ls "$root"/dist/reprocheck-*manylinux*.whl)
log() { printf 'wheel test: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venv=$work/venv
log "fresh venv $venv: torch==2.11.0 and $(basename "$wheel")"
/usr/bin/python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q torch==2.11.0 numpy==2.4.6
"$venv/bin/python" -m pip install -q "$wheel"

# Everything the tests use, copied into a folder laid out as the checkout: the models scripted by
# fixtures/export.py, the scripts and the workflows' audit file (fixtures/audit/github.toml).
t=$work/t
mkdir -p "$t/fixtures/audit" "$t/fixtures/scripts/zoo"
cp "$root/fixtures/audit/github.toml" "$t/fixtures/audit/"
cp "$root"/fixtures/scripts/{adamw_mlp,fixture_report}.py "$t/fixtures/scripts/"
cp "$root"/fixtures/scripts/zoo/{unseeded_shuffle,common}.py "$t/fixtures/scripts/zoo/"
cd "$t"
run() { env -i HOME="$HOME" PATH="$venv/bin:/usr/bin:/bin" LANG=C.UTF-8 "$@"; }

command_path=$(run bash -c 'command -v reprocheck')
[ "$command_path" = "$venv/bin/reprocheck" ] || fail "reprocheck on PATH is '$command_path'"
run python "$root/fixtures/export.py" models > /dev/null
run reprocheck --version | tee version.txt
grep -q "^reprocheck " version.txt && grep -q "2.11" version.txt || fail "--version: $(cat version.txt)"

log "a check of a fixture model"
run reprocheck models/resnet_mini.pt --steps 2 > model.txt || fail "check of resnet_mini.pt: $(tail -5 model.txt)"
grep -q "REPRODUCIBLE" model.txt || fail "no verdict: $(cat model.txt)"

log "reprocheck run -- python on a fixture script"
run reprocheck run --steps 2 -- python fixtures/scripts/adamw_mlp.py > script.txt || fail "run: $(tail -5 script.txt)"
grep -q "REPRODUCIBLE" script.txt || fail "no verdict: $(cat script.txt)"

log "reprocheck audit of the workflows' example (fixtures/audit/github.toml)"
set +e
run reprocheck audit fixtures/audit/github.toml --db nightly.sqlite --json audit.json > audit.txt 2>&1
code=$?
set -e
[ "$code" -eq 0 ] || fail "audit exit $code: $(tail -20 audit.txt)"
run python - <<'PY' || fail "audit report: $(tail -20 audit.txt)"
import json
cells = json.load(open("audit.json"))["cells"]
wrong = [(c["model"], c["verdict"], c.get("error")) for c in cells if not c["meets_expectation"]]
assert len(cells) == 16 and not wrong, (len(cells), wrong)
assert {c["verdict"] for c in cells if c["expect"] == "divergent"} == {"divergent"}
PY

log "the pytest plugin (entry point pytest11) from the wheel"
"$venv/bin/python" -m pip install -q pytest==8.4.2
cat > test_wheel_plugin.py <<'PY'
import sys


def test_reproducible(reprocheck):
    reprocheck.assert_reproducible([sys.executable, "fixtures/scripts/adamw_mlp.py"], "--steps", "1")
PY
run python -m pytest -q -p no:cacheprovider test_wheel_plugin.py > plugin.txt 2>&1 || fail "plugin: $(tail -20 plugin.txt)"
grep -q "1 passed" plugin.txt || fail "plugin: $(tail -5 plugin.txt)"

log "ldd of every binary in the wheel"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
# Allowed: the wheel's own libraries, torch's (and the CUDA libraries torch brings), and the system
# libraries every manylinux wheel may use (glibc's, libstdc++, libgcc_s, libz).
"$venv/bin/python" - "$site" > ldd.txt <<'PY' && bad=0 || bad=1
import os, re, subprocess, sys
site = os.path.realpath(sys.argv[1])
inside = [os.path.join(site, d) for d in ("reprocheck.libs", "torch", "nvidia", "cuda")]
system = re.compile(r"lib(c|m|stdc\+\+|gcc_s|pthread|dl|rt|resolv|util|z)\.so\.\d+$")
ok, listing = True, {}
for top in (os.path.join(site, "reprocheck"), os.path.join(site, "reprocheck.libs")):
    for d, _, files in os.walk(top):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                if fh.read(4) != b"\x7fELF":
                    continue
            for line in subprocess.run(["ldd", path], capture_output=True, text=True).stdout.splitlines():
                name, _, where = line.strip().partition(" => ")
                where = where.split(" (0x")[0]
                if not where or "ld-linux" in name:
                    continue
                real = os.path.realpath(where) if where != "not found" else where
                good = any(real.startswith(p + os.sep) for p in inside) or (
                    real.startswith(("/lib/", "/usr/lib/")) and system.search(os.path.basename(where)))
                if not good:
                    print(f"{os.path.relpath(path, site)} needs {name} => {real}", file=sys.stderr)
                    ok = False
                if os.sep + "_bin" + os.sep in path:
                    listing[name] = os.path.relpath(real, site) if real.startswith(site) else real
for name in sorted(listing):
    print(f"  {name} => {listing[name]}")
sys.exit(0 if ok else 1)
PY
cat ldd.txt
[ "$bad" -eq 0 ] || fail "a binary of the wheel needs a library from outside the wheel, torch or the C/C++ runtime"

log "a torch of another release: one line"
ver=$site/torch/version.py
cp "$ver" "$work/version.py.bak"
sed -i "s/^__version__ = .*/__version__ = '2.10.0+cpu'/" "$ver"
set +e
run reprocheck models/resnet_mini.pt > mismatch.txt 2>&1
code=$?
set -e
cp "$work/version.py.bak" "$ver"
[ "$code" -eq 2 ] || fail "torch mismatch exit $code: $(cat mismatch.txt)"
[ "$(wc -l < mismatch.txt)" -eq 1 ] && grep -q "2.11" mismatch.txt && grep -q "2.10.0" mismatch.txt ||
  fail "torch mismatch: $(cat mismatch.txt)"
cat mismatch.txt
log "ok: $(basename "$wheel") works from a fresh venv"
