#!/usr/bin/env python3
"""How far the reduced-precision encoder is from GeoSAM2's own fp32, on every parity case.

    python3 tools/parity/precision_fidelity.py --reference DIR --binary PATH/TO/geosam2
                                               [--precision auto|bf16|int16] [--models tiny,small]

For each (model, image) of DIR/manifest.json (make_reference.py) the image is encoded twice,
`--precision fp32` and `--precision P`; every case's prompt is then decoded against both
encodings (`predict --features-from`). Per case it reports the masks' pixel agreement, the
largest IoU-prediction difference and the low-res logits' difference, and per encoding the
features' rms and max error relative to the fp32 map's std. The default precision must keep
masks >= --mask-agreement % equal and IoU predictions within --iou-tolerance on every case.

Prints one row per case and exactly "N passed, M failed"; exits 1 on any failure. numpy only.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import FEATURES, build_command  # noqa: E402  (one definition of the predict command)


def run(cmd, timeout):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {r.returncode}: {' | '.join(tail)}: {shlex.join(cmd)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="directory written by make_reference.py")
    ap.add_argument("--binary", required=True, help="geosam2 executable")
    ap.add_argument("--precision", default="auto", help="the precision to hold against fp32 (default auto: the CPU's)")
    ap.add_argument("--plan", help="study a plan of the CPU's reduced precision (predict's hidden --reduced-plan BLOCKS:OPS;…) instead of --precision")
    ap.add_argument("--models", help="comma-separated subset of models")
    ap.add_argument("--mask-agreement", type=float, default=99.9, help="min %% of equal mask pixels (default 99.9)")
    ap.add_argument("--iou-tolerance", type=float, default=5e-3, help="max |IoU prediction difference| (default 5e-3)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per binary run")
    ap.add_argument("--keep", help="keep the outputs under this directory")
    ap.add_argument("--summary-json", help="also write the measures to this JSON file")
    args = ap.parse_args()

    ref = args.reference
    with open(os.path.join(ref, "manifest.json")) as f:
        manifest = json.load(f)
    models = {m["name"]: m for m in manifest["models"]}
    cases = [c for c in manifest["cases"] if not args.models or c["model"] in args.models.split(",")]
    if not cases:
        print("no cases selected\n0 passed, 0 failed")
        return 1
    root = args.keep or tempfile.mkdtemp(prefix="geosam2-fidelity-")
    binary = shlex.split(args.binary)
    reduced = ["--reduced-plan", args.plan] if args.plan else ["--precision", args.precision]
    if args.plan:
        args.precision = f"plan {args.plan}"
    precisions = ["fp32", args.precision]
    print(f"{args.precision} against fp32 (reference {ref}); masks >= {args.mask_agreement:g} % equal, "
          f"IoU predictions within {args.iou_tolerance:g}")
    header = f"{'model':<10} {'image':<11} {'case':<20} {'mask%':>8} {'px':>6} {'iou':>9} {'logit':>8}  result"
    print(header)
    print("-" * len(header))
    passed = failed = 0
    summary = {"precision": args.precision, "features": [], "cases": []}
    encoded = set()
    for c in cases:
        model = models[c["model"]]
        case_dir = os.path.join(ref, c["dir"])
        with open(os.path.join(case_dir, "case.json")) as f:
            case = json.load(f)
        outputs = {}
        try:
            for p in precisions:
                feats = os.path.join(root, p.replace(" ", "_").replace(";", "+"), c["features"], "features")
                if (p, c["features"]) not in encoded:
                    # The first case of an image encodes it and keeps the features.
                    run(build_command(binary, ref, model, case_dir, case) + (reduced if p != "fp32" else ["--precision", "fp32"])
                        + ["--features", "--out", feats],
                        args.timeout)
                    encoded.add((p, c["features"]))
                out = os.path.join(root, p.replace(" ", "_").replace(";", "+"), c["dir"])
                run(build_command(binary, ref, model, case_dir, case) + ["--features-from", feats, "--out", out], args.timeout)
                outputs[p] = (out, feats)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            print(f"{c['model']:<10} {c['image']:<11} {c['case']:<20} FAIL {e}")
            failed += 1
            continue
        (a_out, a_feats), (b_out, b_feats) = outputs["fp32"], outputs[args.precision]
        if not any(f["features"] == c["features"] for f in summary["features"]):
            entry = {"features": c["features"]}
            for name in FEATURES:
                a, b = np.load(os.path.join(a_feats, f"{name}.npy")), np.load(os.path.join(b_feats, f"{name}.npy"))
                std = max(float(a.std()), 1e-12)
                entry[name] = {"rms_over_std": float(np.sqrt(np.mean((a - b) ** 2.0)) / std),
                               "max_over_std": float(np.abs(a - b).max() / std)}
            summary["features"].append(entry)
        ma, mb = np.load(os.path.join(a_out, "masks.npy")), np.load(os.path.join(b_out, "masks.npy"))
        differing = int(np.count_nonzero((ma != 0) != (mb != 0)))
        agreement = 100.0 * (1 - differing / max(ma.size, 1))
        with open(os.path.join(a_out, "scores.json")) as f:
            ia = json.load(f)["iou"]
        with open(os.path.join(b_out, "scores.json")) as f:
            ib = json.load(f)["iou"]
        iou = float(np.max(np.abs(np.asarray(ia) - np.asarray(ib))))
        la, lb = np.load(os.path.join(a_out, "low_res_logits.npy")), np.load(os.path.join(b_out, "low_res_logits.npy"))
        logit = float(np.abs(la - lb).max())
        ok = agreement >= args.mask_agreement and iou <= args.iou_tolerance
        passed += ok
        failed += not ok
        summary["cases"].append({"model": c["model"], "image": c["image"], "case": c["case"], "mask_agreement": agreement,
                                 "differing_pixels": differing, "iou": iou, "logit": logit, "ok": ok})
        print(f"{c['model']:<10} {c['image']:<11} {c['case']:<20} {agreement:8.4f} {differing:6d} {iou:9.2e} {logit:8.2e}  "
              f"{'PASS' if ok else 'FAIL'}", flush=True)
    for f in summary["features"]:
        cells = ", ".join(f"{n} rms {f[n]['rms_over_std']:.2e} max {f[n]['max_over_std']:.2e}" for n in FEATURES)
        print(f"features {f['features']}: {cells} (× fp32 std)")
    if summary["cases"]:
        worst = min(summary["cases"], key=lambda x: x["mask_agreement"])
        print(f"worst mask agreement {worst['mask_agreement']:.4f} % ({worst['model']} {worst['image']} {worst['case']}); "
              f"largest IoU difference {max(x['iou'] for x in summary['cases']):.2e}")
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
