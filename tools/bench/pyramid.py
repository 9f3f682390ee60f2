#!/usr/bin/env python3
"""What the feature pyramid costs and how fast it answers, per level.

    tools/bench/pyramid.py --model CHECKPOINT [--binary .build/release/geosam2] [--requests 60] [--json]

1. Encode cost: a 4000 x 3600 sample scene is encoded with `--levels 0` (level 0 alone), then the
   same store is given the default pyramid (`encode --levels 3` encodes only the new levels): time
   and bytes of the pyramid against level 0 alone.
2. Prompt -> polygons per level: `geosam2 serve` on the pyramid store, boxes sized for each level
   (300, 1400 and 2600 px), bucketed by the level that answered; p50/p95 of the time in the server
   (tile load when the tile was not cached, decode, full-resolution tracing, polygons) and of the
   HTTP round trip, with the ratio to level 0.
The CPU (model name, family/model, flags) and the date head the output.
"""
import argparse
import datetime
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import cpu_description  # noqa: E402


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))]


def size_of(directory):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(directory) for f in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--config")
    ap.add_argument("--binary", default=".build/release/geosam2")
    ap.add_argument("--requests", type=int, default=60, help="boxes per level")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = ["--model", args.model] + (["--config", args.config] if args.config else [])
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    work = tempfile.mkdtemp(prefix="geosam2-pyramid-bench-")
    raster, store = os.path.join(work, "scene.tif"), os.path.join(work, "scene.geosam2")
    subprocess.run([args.binary, "sample", raster, "--width", "4000", "--height", "3600"], check=True, stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    subprocess.run([args.binary, "encode", raster, "--levels", "0", "--out", store, "--quiet"] + model, check=True)
    level0_s = time.perf_counter() - t0
    level0_bytes = size_of(store)
    t0 = time.perf_counter()
    subprocess.run([args.binary, "encode", raster, "--levels", "3", "--out", store, "--quiet"] + model, check=True)
    extra_s = time.perf_counter() - t0
    pyramid_bytes = size_of(store)
    manifest = json.load(open(os.path.join(store, "manifest.json")))
    tiles = [len(manifest["tiles"])] + [len(l["tiles"]) for l in manifest.get("levels", [])]
    log(f"encode: level 0 {level0_s:.1f} s, pyramid levels {extra_s:.1f} s more; tiles per level {tiles}")

    output = os.path.join(work, "objects.gpkg")
    server = subprocess.Popen([args.binary, "serve", store, "--port", "0", "--quiet", "--out", output] + model,
                              stdout=subprocess.PIPE, text=True)
    per_level = {}
    try:
        url = server.stdout.readline().strip()
        parsed = urllib.parse.urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=300)
        connection.request("GET", "/api/store")
        info = json.loads(connection.getresponse().read())
        minx, miny, maxx, maxy = info["bounds"]
        rng = random.Random(1)
        for side in (300, 1400, 2600):
            for i in range(args.requests + 3):
                x0 = minx + rng.uniform(0, (maxx - minx) - side)
                y0 = miny + rng.uniform(0, (maxy - miny) - side)
                body = json.dumps({"box": [x0, y0, x0 + side, y0 + side], "min_area": 10})
                started = time.perf_counter()
                connection.request("POST", "/api/segment", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                data = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.status != 200 or i < 3:  # the first ones warm the server
                    continue
                answer = json.loads(data)
                bucket = per_level.setdefault(answer["level"], {"http": [], "server": [], "decode": []})
                bucket["http"].append(elapsed)
                bucket["server"].append(answer["server_ms"])
                bucket["decode"].append(answer["decode_ms"])
        connection.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    base = per_level.get(0)
    for level in sorted(per_level):
        b = per_level[level]
        row = {"level": level, "prompts": len(b["http"]),
               "server_p50_ms": percentile(b["server"], 50), "server_p95_ms": percentile(b["server"], 95),
               "http_p50_ms": percentile(b["http"], 50), "http_p95_ms": percentile(b["http"], 95),
               "decode_p50_ms": percentile(b["decode"], 50)}
        if base:
            row["server_p50_ratio"] = row["server_p50_ms"] / percentile(base["server"], 50)
        rows.append(row)
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_description(), "model": args.model,
              "tiles_per_level": tiles, "level0_encode_s": level0_s, "pyramid_extra_encode_s": extra_s,
              "encode_ratio": (level0_s + extra_s) / level0_s, "level0_bytes": level0_bytes, "pyramid_bytes": pyramid_bytes,
              "bytes_ratio": pyramid_bytes / level0_bytes, "levels": rows}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['date']}, {result['cpu']}")
    print(f"4000x3600 sample, {os.path.basename(args.model)}: tiles per level {tiles}")
    print(f"encode: level 0 alone {level0_s:.1f} s, with the pyramid {level0_s + extra_s:.1f} s ({result['encode_ratio']:.2f}x); "
          f"bytes {level0_bytes / 2**20:.0f} MiB -> {pyramid_bytes / 2**20:.0f} MiB ({result['bytes_ratio']:.2f}x)")
    print(f"{'level':>5} {'prompts':>7} {'server p50/p95 ms':>18} {'ratio':>6} {'HTTP p50/p95 ms':>16} {'decode p50':>10}")
    for r in rows:
        print(f"{r['level']:>5} {r['prompts']:>7} {r['server_p50_ms']:8.1f} / {r['server_p95_ms']:6.1f} "
              f"{r.get('server_p50_ratio', float('nan')):6.2f} {r['http_p50_ms']:7.1f} / {r['http_p95_ms']:6.1f} {r['decode_p50_ms']:10.1f}")


if __name__ == "__main__":
    main()
