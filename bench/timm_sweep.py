"""Sweeps timm models through `reprocheck MODEL.pt --ops`: each model is traced in training mode with
a fixed seed and checked for false divergences. Needs timm and torchvision on PYTHONPATH (not
installed by ci/setup; no weights are downloaded).

    python bench/timm_sweep.py REPROCHECK_BINARY OUTDIR [--models a,b,...] [--repeats N] [--full]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

MODELS = [
    "resnet18", "resnet26d", "efficientnet_b0", "mobilenetv2_050", "mobilenetv3_small_050",
    "mobilenetv3_large_075", "ghostnet_050", "lcnet_050", "regnetx_002", "regnety_002",
    "densenet121", "dla34", "dpn48b", "hrnet_w18_small", "mixnet_s", "mnasnet_050",
    "rexnet_100", "semnasnet_050", "tinynet_e", "fbnetc_100", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "convnext_atto", "levit_128s",
    "mobilevit_xxs", "efficientformer_l1", "poolformer_s12", "resmlp_12_224", "cait_xxs24_224",
]


def export(name, out):
    import timm
    torch.manual_seed(0)
    kwargs = {"num_classes": 10}
    if name.startswith(("vit", "deit", "swin", "cait", "resmlp", "levit", "efficientformer")):
        size = 224
    else:
        size = 64
    try:
        model = timm.create_model(name, pretrained=False, drop_rate=0.1, drop_path_rate=0.1, **kwargs)
    except TypeError:  # a family without stochastic depth
        model = timm.create_model(name, pretrained=False, drop_rate=0.1, **kwargs)
    model.train()
    example = torch.randn(2, 3, size, size)
    traced = torch.jit.trace(model, example, check_trace=False)
    meta = {"input_shape": [2, 3, size, size], "dtype": "float32", "loss": "cross_entropy",
            "num_classes": 10}
    path = os.path.join(out, name + ".pt")
    traced.save(path, _extra_files={"reprocheck.json": json.dumps(meta)})
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("out")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--full", action="store_true", help="one pass with full dumps (default: the capture ladder)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        try:
            path = export(name, args.out)
        except Exception as e:  # a model timm cannot build or trace here: reported, not counted
            rows.append((name, "export failed", str(e).splitlines()[0][:80], 0.0))
            print(f"{name:32} {'export failed':14}           {rows[-1][2]}", flush=True)
            continue
        for rep in range(args.repeats):
            t0 = time.monotonic()
            r = subprocess.run([args.binary, path, "--ops", "--device", "cpu", "--steps", "1",
                                *(["--full"] if args.full else [])],
                               capture_output=True, text=True, timeout=1800)
            dt = time.monotonic() - t0
            verdict = {0: "REPRODUCIBLE", 1: "DIVERGENT"}.get(r.returncode, f"exit {r.returncode}")
            detail = ""
            if r.returncode != 0:
                detail = (r.stdout + r.stderr).strip().splitlines()
                detail = next((l for l in detail if "first divergen" in l.lower() or "error" in l), detail[0] if detail else "")
            notes = [l.strip() for l in r.stdout.splitlines() if l.strip().startswith("note")]
            rows.append((name, verdict, detail or "; ".join(notes)[:100], dt))
            print(f"{name:32} {verdict:14} {dt:7.1f}s  {rows[-1][2]}", flush=True)
    ok = sum(1 for r in rows if r[1] == "REPRODUCIBLE")
    print(f"\n{ok} of {len(rows)} checks reproducible")
    return 0 if ok == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
