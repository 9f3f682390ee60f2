#!/usr/bin/env python3
"""Same-run A/B of two geosam2 binaries: encode, decode and store tile load.

    tools/bench/ab.py --a OLD/geosam2 --b NEW/geosam2 --model tiny.pt [--rounds 5] [--json]

Rounds alternate A, B, B, A, … so that drift of a shared machine falls on both sides; the table
reports medians over rounds of each binary's own medians (`geosam2 bench --json`), and B/A ratios.
The CPU (model name, family/model, the AVX-512 flags used) and the date head the output.
"""
import argparse
import atexit
import datetime
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile


def cpu_description():
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if ":" not in line:
                if info:
                    break
                continue
            key, value = (s.strip() for s in line.split(":", 1))
            info.setdefault(key, value)
    flags = set(info.get("flags", "").split())
    used = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx2", "fma") if f in flags]
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model {info.get('model', '?')}), "
            f"{os.cpu_count()} logical CPUs, flags used: {' '.join(used) or 'none'}")


def default_precision():
    """What `--precision auto` resolves to on this CPU (EncoderPrecision.automatic)."""
    with open("/proc/cpuinfo") as f:
        flags = set(next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "").split())
    if "avx512_bf16" in flags and "avx512f" in flags:
        return "bf16"
    if "avx2" in flags and "fma" in flags and "avx512f" not in flags:
        return "int16"
    return "fp32"


def bench(binary, args):
    out = subprocess.run([binary, "bench", *args, "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


METRICS = [
    ("encode", "encode_median_s", 1000, "ms"),
    ("decode p50 (prompt → masks, prepared)", "decode_p50_ms", 1, "ms"),
    ("decode p95", "decode_p95_ms", 1, "ms"),
    ("prepare features", "prepare_ms", 1, "ms"),
    ("one-shot decode p50", "unprepared_decode_p50_ms", 1, "ms"),
    ("tile load p50 (store)", "store.tile_load_p50_ms", 1, "ms"),
    ("tile load p95 (store)", "store.tile_load_p95_ms", 1, "ms"),
    ("prompt → polygons p50 (store)", "store.segment_p50_ms", 1, "ms"),
    ("prompt → polygons p95 (store)", "store.segment_p95_ms", 1, "ms"),
]


def value(run, key):
    if key.startswith("store."):
        return run["store"].get(key[6:])
    return run.get(key)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="baseline binary")
    p.add_argument("--b", required=True, help="candidate binary")
    p.add_argument("--model", required=True, help="checkpoint (.pt)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--store", help="feature store made with --model (default: an 8-tile sample store made here, more tiles than the segmenter caches)")
    p.add_argument("--a-args", default="", help="extra `geosam2 bench` arguments for A (e.g. '--precision fp32' for a build from before --precision auto)")
    p.add_argument("--b-args", default="", help="extra `geosam2 bench` arguments for B")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="geosam2-ab-")
    atexit.register(shutil.rmtree, work, True)  # the sample raster and its store
    store = args.store
    if store is None:
        raster = os.path.join(work, "sample.tif")
        store = os.path.join(work, "sample.geosam2")
        subprocess.run([args.a, "sample", raster, "--width", "3600", "--height", "2000"], check=True, capture_output=True)
        subprocess.run([args.a, "encode", raster, "--model", args.model, "--out", store, "--quiet"], check=True, capture_output=True)

    runs = {"a": [], "b": []}
    order = []
    for r in range(args.rounds):
        order += ["a", "b"] if r % 2 == 0 else ["b", "a"]
    for side in order:
        binary = args.a if side == "a" else args.b
        extra = shlex.split(args.a_args if side == "a" else args.b_args)
        run = bench(binary, ["--model", args.model, "--encode-runs", "3", "--decode-runs", "60", *extra])
        run["store"] = bench(binary, ["--model", args.model, "--store", store, "--encode-runs", "1", "--decode-runs", "60"])
        runs[side].append(run)
        print(f"  {side}: encode {run['encode_median_s'] * 1000:.0f} ms, decode p50 {run['decode_p50_ms']:.2f} ms, "
              f"tile load p50 {run['store']['tile_load_p50_ms']:.1f} ms", file=sys.stderr)

    rows = []
    for label, key, factor, unit in METRICS:
        a = [value(r, key) for r in runs["a"]]
        b = [value(r, key) for r in runs["b"]]
        if any(v is None for v in a + b):
            continue
        ma, mb = statistics.median(a) * factor, statistics.median(b) * factor
        rows.append({"metric": label, "unit": unit, "a": ma, "b": mb, "ratio": mb / ma if ma else None})
    header = {"date": datetime.date.today().isoformat(), "cpu": cpu_description(), "rounds": args.rounds,
              "a": f"{args.a} {args.a_args}".strip(), "b": f"{args.b} {args.b_args}".strip(), "model": args.model}
    if args.json:
        print(json.dumps({**header, "rows": rows}, indent=1))
        return
    print(f"{header['date']}, {header['cpu']}")
    print(f"A = {header['a']}\nB = {header['b']}\nmedians of {args.rounds} alternating rounds (A B, B A, …), each a median of its own runs")
    print(f"{'metric':40} {'A':>10} {'B':>10} {'B/A':>6}")
    for row in rows:
        print(f"{row['metric']:40} {row['a']:8.2f} {row['unit']} {row['b']:8.2f} {row['unit']} {row['ratio']:6.3f}")


if __name__ == "__main__":
    main()
