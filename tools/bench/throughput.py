#!/usr/bin/env python3
"""Encoding throughput: tiles per second against cores, memory per tile in flight, and a 20000² raster.

    tools/bench/throughput.py --model CHECKPOINT [--binary .build/release/geosam2] [--rounds 3] [--json]

1. A 16-tile raster (3712², NAIP imagery of ../shared/data resampled, level 0 only) is encoded into a
   fresh store with each split of the cores: 1 core; 2 cores on one tile; 2 tiles in flight on one
   core each (and so on up to the machine's cores). Rounds alternate the splits; medians reported.
   Tiles/s counts the encoding phase (`--progress json`'s elapsed time at the last tile: after the
   model is loaded and the store planned); the process's wall time and peak RSS are reported too.
   Before timing, the stores of every split are checked to be byte-identical tile for tile.
2. A 20000×20000 raster (deflate, tiled): time and peak RSS to encode two of its level-0 tiles
   (`--levels 0 --shard 0/265`), and four tiles of a default store (`--shard 0/200`: a level-3 tile,
   whose window is 8192² pixels, a level-1 tile and two of level 0).

The CPU (model name, family/model, flags) and the date head the output.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import cpu_description  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, ".build-parity", "bench")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))


def ensure_rasters():
    os.makedirs(BENCH, exist_ok=True)
    r16 = os.path.join(BENCH, "r16.tif")
    if not os.path.exists(r16):
        subprocess.run(["gdal_translate", "-q", "-b", "1", "-b", "2", "-b", "3", "-outsize", "3712", "3712", "-r", "bilinear",
                        "-co", "TILED=YES", "-co", "COMPRESS=DEFLATE", os.path.join(SHARED, "naip_2020_4band_utm14n.tif"), r16],
                       check=True)
    big = os.path.join(BENCH, "big.tif")
    if not os.path.exists(big):
        subprocess.run(["gdal_create", "-q", "-of", "GTiff", "-outsize", "20000", "20000", "-bands", "3", "-ot", "Byte",
                        "-burn", "90", "-burn", "120", "-burn", "60", "-co", "COMPRESS=DEFLATE", "-co", "TILED=YES",
                        "-a_srs", "EPSG:32633", "-a_ullr", "400000", "5300000", "410000", "5290000", big], check=True)
    return r16, big


def encode(binary, model, raster, store, args):
    """Runs one encode into a fresh store; returns (encoding seconds, wall seconds, peak RSS MiB, tiles encoded)."""
    shutil.rmtree(store, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "%e %M", binary, "encode", raster, "--model", model, "--out", store, "--progress", "json", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"encode failed: {' '.join(cmd)}\n{r.stderr}")
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    tiles = [e for e in events if e.get("event") == "progress"]
    wall, rss = r.stderr.strip().splitlines()[-1].split()
    return (tiles[-1]["elapsed_s"] if tiles else float("nan"), float(wall), int(rss) / 1024,
            events[-1].get("encoded", 0))


def tile_files(store):
    d = os.path.join(store, "tiles")
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--binary", default=os.path.join(ROOT, ".build", "release", "geosam2"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    r16, big = ensure_rasters()
    cores = os.cpu_count() or 1
    splits = [(1, 1)]
    c = 2
    while c <= cores:
        splits += [(1, c)] + ([(c // 4, 4)] if c >= 8 else []) + [(c, 1)]
        c *= 2
    splits = list(dict.fromkeys(splits))
    work = tempfile.mkdtemp(prefix="geosam2-throughput-")
    try:
        results = {s: [] for s in splits}
        reference = None
        for round_index in range(a.rounds):
            for tiles, per_tile in splits:
                store = os.path.join(work, f"{tiles}x{per_tile}.geosam2")
                results[(tiles, per_tile)].append(
                    encode(a.binary, a.model, r16, store, ["--levels", "0", "--threads", str(tiles * per_tile),
                                                           "--tiles-in-flight", str(tiles)]))
                if round_index == 0:
                    files = tile_files(store)
                    if reference is None:
                        reference = files
                    elif files != reference:
                        raise SystemExit(f"{tiles}×{per_tile}: the store differs from 1 core's")
        rows = []
        for (tiles, per_tile), runs in results.items():
            encoding = statistics.median(r[0] for r in runs)
            rows.append({"tiles_in_flight": tiles, "cores_per_tile": per_tile, "cores": tiles * per_tile,
                         "tiles": runs[0][3], "encode_phase_s": encoding, "tiles_per_s": runs[0][3] / encoding,
                         "wall_s": statistics.median(r[1] for r in runs), "peak_rss_mib": max(r[2] for r in runs)})
        one = rows[0]["tiles_per_s"]
        for r in rows:
            r["speedup_vs_1_core"] = r["tiles_per_s"] / one
            r["efficiency"] = r["speedup_vs_1_core"] / r["cores"]
        singles = {r["tiles_in_flight"]: r["peak_rss_mib"] for r in rows if r["cores_per_tile"] == 1}
        per_tile_mib = (singles[max(singles)] - singles[1]) / (max(singles) - 1) if len(singles) > 1 else None
        big_runs = {}
        for name, args in [("two_level0_tiles", ["--levels", "0", "--shard", "0/265"]),
                           ("default_store_four_tiles", ["--shard", "0/200"])]:
            runs = [encode(a.binary, a.model, big, os.path.join(work, "big.geosam2"), args) for _ in range(2)]
            big_runs[name] = {"tiles": runs[0][3], "wall_s": statistics.median(r[1] for r in runs),
                              "peak_rss_mib": max(r[2] for r in runs)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cpu = cpu_description()
    out = {"cpu": cpu, "date": str(datetime.date.today()), "rounds": a.rounds, "raster": "3712×3712, 16 tiles, level 0",
           "splits": rows, "peak_rss_per_extra_tile_in_flight_mib": per_tile_mib, "raster_20000": big_runs}
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"CPU: {cpu}; {out['date']}; Hiera-T (random weights); medians of {a.rounds} alternating rounds")
    print(f"16-tile raster (3712², level 0): tiles/s in the encoding phase; the same bytes from every split")
    print(f"{'tiles in flight × cores':>24} {'cores':>5} {'tiles/s':>8} {'×1 core':>8} {'efficiency':>10} {'wall s':>7} {'peak RSS MiB':>12}")
    for r in rows:
        print(f"{str(r['tiles_in_flight']) + ' × ' + str(r['cores_per_tile']):>24} {r['cores']:5} {r['tiles_per_s']:8.3f} "
              f"{r['speedup_vs_1_core']:8.2f} {r['efficiency']:10.2f} {r['wall_s']:7.1f} {r['peak_rss_mib']:12.0f}")
    if per_tile_mib is not None:
        print(f"peak RSS per extra tile in flight: {per_tile_mib:.0f} MiB")
    for name, r in big_runs.items():
        label = "two level-0 tiles" if name == "two_level0_tiles" else "four tiles of a default store (levels 3, 1, 0, 0)"
        print(f"20000×20000 raster, {label}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB ({r['tiles']} tiles)")


if __name__ == "__main__":
    main()
