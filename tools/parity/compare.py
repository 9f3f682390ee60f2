#!/usr/bin/env python3
"""Compare the geosam2 binary against reference fixtures from make_reference.py.

    python3 tools/parity/compare.py --reference DIR --binary PATH/TO/geosam2 [options]

For every case in DIR/manifest.json this runs

    geosam2 predict --model M.pt --image IMG --precision fp32 [--point X,Y,LABEL]... [--box X0,Y0,X1,Y1]
                    [--mask-input NPY] [--multimask] [--config CONFIG.json] --features --out TMP

(--config only for custom models, i.e. the unit-test fixture), loads TMP/{low_res_logits,
masks,image_embed,high_res_feat_s0,high_res_feat_s1}.npy and TMP/scores.json, and checks:

    low-res logits   max |diff|                  <= --tolerance          (1e-3)
    masks            pixel agreement             >= --mask-agreement %   (99.9)
    IoU scores       max |diff|                  <= --tolerance          (1e-3)
    each feature map max |diff| / std(reference) <= --feature-tolerance  (1e-3)

Each image is encoded once, by its first case (the one that checks the features); its other
cases decode from those features (--features-from, exact float32 arrays) instead of --features,
so every case still checks the decoder while the suite encodes each (model, image) once.
--encode-every-case encodes for every case as before.

Prints one row per case, then exactly "N passed, M failed"; exits 1 on any failure.
Needs only numpy (no torch/sam2).
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

FEATURES = ["image_embed", "high_res_feat_s0", "high_res_feat_s1"]


def fmt_num(x):
    """Shortest exact positional text for a coordinate (no exponent)."""
    return np.format_float_positional(float(x), trim="-")


def build_command(binary, ref, model, case_dir, case):
    cmd = list(binary) + [
        "predict",
        "--model", os.path.join(ref, model["checkpoint"]),
        "--image", os.path.join(ref, case["image"]),
        # Parity is the fp32 encoder's (the default picks bf16 or int16 on CPUs that have them); a later
        # --precision (--extra) overrides this one.
        "--precision", "fp32",
    ]
    for x, y, label in case["points"]:
        cmd += ["--point", f"{fmt_num(x)},{fmt_num(y)},{int(label)}"]
    if case.get("box") is not None:
        cmd += ["--box", ",".join(fmt_num(v) for v in case["box"])]
    if case.get("maskInput"):
        cmd += ["--mask-input", os.path.join(os.path.dirname(case_dir), case["maskInput"])]
    if case["multimask"]:
        cmd += ["--multimask"]
    if model.get("custom"):
        cmd += ["--config", os.path.join(ref, model["config"])]
    return cmd


def max_abs_diff(a, b, what):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"{what}: shape {list(a.shape)} != reference {list(b.shape)}")
    if a.size == 0:
        return 0.0
    d = np.abs(a - b)
    return float("nan") if np.isnan(d).any() else float(d.max())


def check_case(out_dir, ref_case_dir, ref_feats):
    """Returns (metrics, errors); a metric is missing when its output could not be compared or
    (features, with ref_feats None) was checked by the case that encoded the image."""
    m, errors = {}, []

    def attempt(key, fn):
        try:
            m[key] = fn()
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
            errors.append(f"{type(e).__name__}: {e}")

    def logit():
        return max_abs_diff(np.load(os.path.join(out_dir, "low_res_logits.npy")),
                            np.load(os.path.join(ref_case_dir, "low_res_logits.npy")),
                            "low_res_logits")

    def mask():
        masks = np.load(os.path.join(out_dir, "masks.npy"))
        ref_masks = np.load(os.path.join(ref_case_dir, "masks.npy"))
        if masks.shape != ref_masks.shape:
            raise ValueError(f"masks: shape {list(masks.shape)} != reference {list(ref_masks.shape)}")
        return 100.0 * float(np.mean((masks != 0) == (ref_masks != 0))) if masks.size else 100.0

    def iou():
        with open(os.path.join(out_dir, "scores.json")) as f:
            got = json.load(f)["iou"]
        with open(os.path.join(ref_case_dir, "scores.json")) as f:
            want = json.load(f)["iou"]
        return max_abs_diff(got, want, "iou")

    def feat():
        worst = 0.0
        for name in FEATURES:
            ref = ref_feats[name]
            d = max_abs_diff(np.load(os.path.join(out_dir, f"{name}.npy")), ref, name)
            rel = d / max(float(ref.std()), 1e-12)
            if np.isnan(rel) or rel > worst:
                worst = rel
            if np.isnan(worst):
                break
        return worst

    attempt("logit", logit)
    attempt("mask", mask)
    attempt("iou", iou)
    if ref_feats is not None:  # None: the case decoded from an earlier case's features
        attempt("feat", feat)
    return m, errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="directory written by make_reference.py")
    ap.add_argument("--binary", required=True,
                    help="geosam2 executable (may include leading arguments, shell-quoted)")
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="max abs diff for low-res logits and IoU scores (default 1e-3)")
    ap.add_argument("--feature-tolerance", type=float, default=1e-3,
                    help="max abs diff of each feature map, in units of the reference map's std "
                         "(default 1e-3)")
    ap.add_argument("--mask-agreement", type=float, default=99.9,
                    help="min %% of mask pixels that must agree (default 99.9)")
    ap.add_argument("--models", help="comma-separated subset of models")
    ap.add_argument("--cases", help="comma-separated substrings; run cases whose dir contains one")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per binary run")
    ap.add_argument("--keep", help="keep the binary's outputs under this directory")
    ap.add_argument("--verbose", "-v", action="store_true", help="print each command line")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--extra", default="",
                    help="arguments appended to every predict command (shell-quoted), e.g. '--precision bf16'")
    ap.add_argument("--encode-every-case", action="store_true",
                    help="encode the image for every case instead of once per (model, image)")
    ap.add_argument("--summary-json", help="also write each case's measures to this JSON file")
    args = ap.parse_args()

    ref = args.reference
    with open(os.path.join(ref, "manifest.json")) as f:
        manifest = json.load(f)
    models = {m["name"]: m for m in manifest["models"]}
    binary = shlex.split(args.binary)
    selected = [c for c in manifest["cases"]
                if (not args.models or c["model"] in args.models.split(","))
                and (not args.cases or any(s in c["dir"] for s in args.cases.split(",")))]
    if not selected:
        print("no cases selected")
        print("0 passed, 0 failed")
        return 1

    if args.dry_run:
        tmp_root = args.keep or "OUT"
    else:
        tmp_root = args.keep or tempfile.mkdtemp(prefix="geosam2-parity-")
    header = (f"{'model':<10} {'image':<11} {'case':<20} {'logit':>9} {'mask%':>8} "
              f"{'iou':>9} {'feat/std':>9}  result")
    if not args.dry_run:
        print(f"reference {ref} (sam2 {manifest['versions'].get('sam2')}, "
              f"torch {manifest['versions'].get('torch')}); tolerances: logits/IoU "
              f"{args.tolerance:g}, masks >= {args.mask_agreement:g}%, features "
              f"{args.feature_tolerance:g}*std"
              + ("" if args.encode_every_case else
                 " (on each image's first case; its other cases decode from those features)"))
        print(header)
        print("-" * len(header))
    passed = failed = 0
    summary = []
    feat_cache = {}
    encoded = {}  # features key -> the output directory of the case that encoded it
    t_start = time.perf_counter()
    for c in selected:
        model = models[c["model"]]
        case_dir = os.path.join(ref, c["dir"])
        with open(os.path.join(case_dir, "case.json")) as f:
            case = json.load(f)
        out_dir = os.path.join(tmp_root, c["dir"])
        fkey = c["features"]
        reuse = None if args.encode_every_case else encoded.get(fkey)
        source = ["--features-from", reuse] if reuse else ["--features"]
        cmd = build_command(binary, ref, model, case_dir, case) + shlex.split(args.extra) + source + ["--out", out_dir]
        if args.dry_run:
            print(shlex.join(cmd))
            continue
        os.makedirs(out_dir, exist_ok=True)
        if args.verbose:
            print("  $ " + shlex.join(cmd), flush=True)
        problems = []
        m = {}
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            if r.returncode != 0:
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                problems.append(f"exit {r.returncode}: " + " | ".join(tail))
            else:
                if not reuse and fkey not in feat_cache:
                    feat_cache = {fkey: {n: np.load(os.path.join(ref, fkey, f"{n}.npy"))
                                         for n in FEATURES}}
                m, errors = check_case(out_dir, case_dir, None if reuse else feat_cache[fkey])
                problems += errors
                if not reuse and not errors:
                    encoded[fkey] = out_dir
        except subprocess.TimeoutExpired:
            problems.append(f"timeout after {args.timeout:g}s")
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{type(e).__name__}: {e}")
        dt = time.perf_counter() - t0

        def ok(key, tol):
            return key not in m or (not np.isnan(m[key]) and m[key] <= tol)

        if not ok("logit", args.tolerance):
            problems.append("logits")
        if "mask" in m and not (m["mask"] >= args.mask_agreement):
            problems.append("masks")
        if not ok("iou", args.tolerance):
            problems.append("iou")
        if not ok("feat", args.feature_tolerance):
            problems.append("features")
        status = "PASS" if not problems else "FAIL"
        summary.append({"model": c["model"], "image": c["image"], "case": c["case"], "status": status,
                        **{k: float(v) for k, v in m.items()}})
        passed += status == "PASS"
        failed += status == "FAIL"
        def g(k, f):
            return format(m[k], f) if k in m else "-".rjust(int(f.split(".")[0]))

        image = c["image"]
        print(f"{c['model']:<10} {image:<11} {c['case']:<20} {g('logit', '9.2e')} "
              f"{g('mask', '8.3f')} {g('iou', '9.2e')} {g('feat', '9.2e')}  {status}"
              f" ({dt:.1f}s){'' if not problems else ' ' + '; '.join(problems)}", flush=True)

    if args.dry_run:
        return 0
    if not args.keep:
        import shutil
        shutil.rmtree(tmp_root, ignore_errors=True)
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"total {time.perf_counter() - t_start:.1f}s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
