#!/usr/bin/env python3
"""From `geosam2 serve RASTER` on a raster never encoded to the first answered click.

    tools/bench/first_click.py --model CHECKPOINT [--binary .build/release/geosam2] [--side 20000] [--clicks 4] [--json]

A `geosam2 sample` scene of SIDE x SIDE pixels (made once, kept in .build/bench/) is served with no
store beside it. The clock starts when `serve` is started; the first click is sent as soon as the
server listens (at a place the background work has not reached: a quarter of the way in from the
top-left corner), then a few more clicks at other places. Reported: time to listening, time to the
first answer (and what the answer needed: its level, the tiles encoded for it), each later click,
the store's progress by then, and the server's peak resident memory (VmHWM) over the run.
The CPU (model name, family/model, flags) and the date head the output.
"""
import argparse
import datetime
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import cpu_description  # noqa: E402


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--config")
    ap.add_argument("--binary", default=".build/release/geosam2")
    ap.add_argument("--side", type=int, default=20000)
    ap.add_argument("--clicks", type=int, default=4, help="clicks in all, the first included")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = ["--model", args.model] + (["--config", args.config] if args.config else [])
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    cache = os.path.join(".build", "bench")
    os.makedirs(cache, exist_ok=True)
    raster = os.path.join(cache, f"sample-{args.side}.tif")
    if not os.path.exists(raster):
        log(f"writing a {args.side}x{args.side} sample scene to {raster} (once)…")
        partial = raster + ".partial.tif"
        subprocess.run([args.binary, "sample", partial, "--width", str(args.side), "--height", str(args.side)],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(partial, raster)
    info = json.loads(subprocess.run(["gdalinfo", "-json", raster], check=True, capture_output=True, text=True).stdout)
    gt = info["geoTransform"]

    def map_point(column, row):
        return gt[0] + column * gt[1] + row * gt[2], gt[3] + column * gt[4] + row * gt[5]

    work = tempfile.mkdtemp(prefix="geosam2-first-click-")
    store = os.path.join(work, "scene.geosam2")
    output = os.path.join(work, "objects.gpkg")
    started = time.perf_counter()
    server = subprocess.Popen([args.binary, "serve", raster, "--store", store, "--out", output, "--port", "0", "--machine-readable"]
                              + model, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    clicks = []
    try:
        announcement = json.loads(server.stdout.readline())
        listening_s = time.perf_counter() - started
        parsed = urllib.parse.urlparse(announcement["url"])
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
        side = args.side
        places = [(side * 0.25, side * 0.25), (side * 0.7, side * 0.3), (side * 0.5, side * 0.8), (side * 0.9, side * 0.9)]
        for i in range(args.clicks):
            column, row = places[i % len(places)]
            x, y = map_point(column + 37 * (i // len(places)), row)
            body = json.dumps({"points": [[x, y, 1]]})
            sent = time.perf_counter()
            connection.request("POST", "/api/segment", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
            answered = time.perf_counter()
            if response.status != 200:
                raise SystemExit(f"click {i + 1} failed: {response.status} {data[:300]!r}")
            answer = json.loads(data)
            clicks.append({"pixel": [column, row], "since_start_s": answered - started, "request_s": answered - sent,
                           "level": answer["level"], "tiles": answer["tiles"], "encoded_on_demand": answer["encoded_on_demand"]})
        connection.request("GET", "/api/encoding")
        encoding = json.loads(connection.getresponse().read())
        connection.close()
        peak = peak_rss_mib(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)

    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_description(), "model": args.model, "side": args.side,
              "tiles": encoding["tiles"], "listening_s": listening_s, "first_click_s": clicks[0]["since_start_s"],
              "clicks": clicks, "finished_by_then": encoding["finished"], "peak_rss_mib": peak}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['date']}, {result['cpu']}")
    print(f"serve RASTER, {args.side}x{args.side} sample never encoded ({encoding['tiles']} tiles in the pyramid), "
          f"{os.path.basename(args.model)}")
    print(f"listening after {listening_s:.2f} s; first click answered {clicks[0]['since_start_s']:.2f} s after start "
          f"(goal < 10 s); peak RSS {peak:.0f} MiB (goal < 1536)")
    for i, c in enumerate(clicks):
        print(f"  click {i + 1} at pixel ({c['pixel'][0]:.0f}, {c['pixel'][1]:.0f}): {c['request_s']:.2f} s, level {c['level']}, "
              f"encoded for it: {', '.join(c['encoded_on_demand']) or 'none'}")
    print(f"tiles finished by the last click: {encoding['finished']} of {encoding['tiles']}")


if __name__ == "__main__":
    main()
