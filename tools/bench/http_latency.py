#!/usr/bin/env python3
"""HTTP round-trip latency of `POST /api/segment` of `geosam2 serve` (p50, p95), as the web UI
sees it: one keep-alive connection, one foreground click per request (the UI's default
min_area of 10 pixels), the time from sending the request to having read the whole answer.

    tools/bench/http_latency.py --model CHECKPOINT [--binary .build/release/geosam2]
        [--raster RASTER] [--requests 100] [--warmup 5] [--json]

Without --raster it makes a 2048 x 1024 scene with `geosam2 sample` (two tiles). The raster is
encoded once with CHECKPOINT (a Hiera-T, e.g. sam2.1_hiera_tiny.pt or the parity suite's
random-weight tiny/model.pt) into a store cached under --work (default .build/bench-http).
"""
import argparse
import hashlib
import http.client
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def percentile(values, p):
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[rank]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint (.pt/.safetensors) or preset name in the model cache")
    parser.add_argument("--config", help="architecture JSON for a custom checkpoint")
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/release/geosam2"))
    parser.add_argument("--raster", help="raster to serve (default: a generated sample scene)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", default=os.path.join(ROOT, ".build/bench-http"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    os.makedirs(args.work, exist_ok=True)
    model_args = ["--model", args.model] + (["--config", args.config] if args.config else [])
    raster = args.raster
    if raster is None:
        raster = os.path.join(args.work, "scene.tif")
        if not os.path.exists(raster):
            subprocess.run([args.binary, "sample", raster, "--width", "2048", "--height", "1024"], check=True, stdout=subprocess.DEVNULL)
    tag = hashlib.sha256((os.path.abspath(raster) + "|" + args.model).encode()).hexdigest()[:12]
    store = os.path.join(args.work, "store-%s.geosam2" % tag)
    log("encoding %s into %s (once)" % (raster, store))
    started = time.perf_counter()
    subprocess.run([args.binary, "encode", raster, "--out", store, "--quiet"] + model_args, check=True)
    log("  %.1f s" % (time.perf_counter() - started))

    output = os.path.join(args.work, "objects-%d.gpkg" % os.getpid())
    server = subprocess.Popen([args.binary, "serve", store, "--port", "0", "--quiet", "--out", output] + model_args,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        if not url.startswith("http://"):
            raise SystemExit("serve printed no URL (%r)" % url)
        parsed = urllib.parse.urlparse(url)
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)

        def get(path):
            connection.request("GET", path)
            response = connection.getresponse()
            return json.loads(response.read())

        info = get("/api/store")
        minx, miny, maxx, maxy = info["bounds"]
        rng = random.Random(args.seed)
        margin = 0.02

        def body():
            x = minx + (maxx - minx) * rng.uniform(margin, 1 - margin)
            y = miny + (maxy - miny) * rng.uniform(margin, 1 - margin)
            return json.dumps({"points": [[x, y, 1]], "min_area": 10})

        round_trips, server_ms, decode_ms, polygons, sizes, failures = [], [], [], [], [], 0
        for i in range(args.warmup + args.requests):
            payload = body()
            t0 = time.perf_counter()
            connection.request("POST", "/api/segment", body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            elapsed = (time.perf_counter() - t0) * 1000
            if i < args.warmup:
                continue
            if response.status != 200:
                failures += 1
                continue
            answer = json.loads(data)
            round_trips.append(elapsed)
            server_ms.append(answer["server_ms"])
            decode_ms.append(answer["decode_ms"])
            polygons.append(len(answer["features"]))
            sizes.append(len(data))
        connection.close()
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        if os.path.exists(output):
            os.remove(output)

    if not round_trips:
        raise SystemExit("every request failed")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    result = {
        "cpu": cpu, "cores": os.cpu_count(), "model": args.model, "preset": info["model"]["preset"],
        "raster": [info["raster"]["width"], info["raster"]["height"]], "requests": len(round_trips), "failures": failures,
        "http_p50_ms": percentile(round_trips, 50), "http_p95_ms": percentile(round_trips, 95),
        "http_mean_ms": statistics.fmean(round_trips),
        "server_p50_ms": percentile(server_ms, 50), "server_p95_ms": percentile(server_ms, 95),
        "decode_p50_ms": percentile(decode_ms, 50),
        "polygons_median": statistics.median(polygons), "response_kib_median": statistics.median(sizes) / 1024,
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print("POST /api/segment on %s (%s), %dx%d raster, %d requests (%d failed), %s, %d cores"
              % (os.path.basename(args.model), result["preset"] or "custom", result["raster"][0], result["raster"][1],
                 result["requests"], failures, cpu, result["cores"]))
        print("  HTTP round trip  p50 %7.1f ms   p95 %7.1f ms   mean %7.1f ms"
              % (result["http_p50_ms"], result["http_p95_ms"], result["http_mean_ms"]))
        print("  in the server    p50 %7.1f ms   p95 %7.1f ms   (decoder p50 %.1f ms)"
              % (result["server_p50_ms"], result["server_p95_ms"], result["decode_p50_ms"]))
        print("  answer: median %d polygons, %.1f KiB" % (result["polygons_median"], result["response_kib_median"]))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
