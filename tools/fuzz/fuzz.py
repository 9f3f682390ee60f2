#!/usr/bin/env python3
"""Seeded, time-bounded fuzzing of every input GeoSAM2 reads from a user, against the real binary.

Targets (each gets its share of --seconds):
  checkpoint  mutated .pt (zip + pickle) and .safetensors checkpoints -> `inspect`, `predict`
  tile        mutated tile files of a feature store -> `verify` must name the tile, `segment` must refuse it
  manifest    mutated manifest.json -> `verify`, `info`, `segment`
  prompts     mutated GeoJSON and GeoPackage prompt files -> `segment`
  http        mutated JSON bodies, raw bytes, odd paths and methods -> `serve` must answer below 500 and stay up

A run fails on a crash (death by a signal), a hang (--timeout), a Swift runtime error or stack
trace on stderr, an exit status other than 0 or 1, a corrupt tile that `verify` passes, or a 5xx.
Failing inputs are kept in --keep. Standard library only.
"""
import argparse
import copy
import http.client
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"
CRASH_MARKERS = ("Fatal error", "Current stack trace", "Stack dump", "Segmentation fault", "💣", "Illegal instruction")


class Fuzzer:
    def __init__(self, args, work):
        self.args, self.work = args, Path(work)
        self.rng = random.Random(args.seed)
        self.failures, self.cases = [], {}
        self.keep = Path(args.keep)

    # --- running ----------------------------------------------------------------------------

    def run(self, target, argv, inputs=(), expect=None):
        """Runs the binary; records a failure for a crash, hang, trace or odd exit status."""
        self.cases[target] = self.cases.get(target, 0) + 1

        def limit():
            # A hostile size must not take the machine: 6 GiB of address space per run.
            resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))

        try:
            done = subprocess.run([self.args.binary] + argv, capture_output=True, text=True, errors="replace",
                                  timeout=self.args.timeout, preexec_fn=limit)
        except subprocess.TimeoutExpired:
            return self.fail(target, f"hang (> {self.args.timeout} s): {' '.join(argv)}", inputs)
        problem = None
        if done.returncode < 0:
            problem = f"killed by signal {-done.returncode}"
        elif done.returncode not in (0, 1):
            problem = f"exit status {done.returncode}"
        elif any(m in done.stderr for m in CRASH_MARKERS):
            problem = "runtime error or stack trace on stderr"
        elif expect is not None:
            problem = expect(done)
        if problem:
            self.fail(target, f"{problem}: {' '.join(argv)}\n  stdout: {done.stdout[-400:]!r}\n  stderr: {done.stderr[-400:]!r}", inputs)
        return done

    def fail(self, target, message, inputs):
        index = len(self.failures)
        kept = []
        for path in inputs:
            path = Path(path)
            if path.exists():
                destination = self.keep / f"{target}-{index}-{path.name}"
                self.keep.mkdir(parents=True, exist_ok=True)
                (shutil.copytree if path.is_dir() else shutil.copy)(path, destination)
                kept.append(str(destination))
        self.failures.append(f"[{target}] {message}" + (f"\n  kept: {', '.join(kept)}" if kept else ""))

    # --- mutators ---------------------------------------------------------------------------

    def mutate_bytes(self, data: bytes) -> bytes:
        b = bytearray(data)
        for _ in range(self.rng.choice([1, 1, 1, 2, 4])):
            kind = self.rng.randrange(7)
            if not b:
                b = bytearray(self.rng.randbytes(8))
            at = self.rng.randrange(len(b))
            if kind == 0:
                b[at] ^= 1 << self.rng.randrange(8)
            elif kind == 1:
                b[at] = self.rng.choice([0, 0xFF, 0x7F, 0x80, self.rng.randrange(256)])
            elif kind == 2:
                del b[at:]
            elif kind == 3:
                b[at:at] = self.rng.randbytes(self.rng.randrange(1, 64))
            elif kind == 4:
                n = self.rng.randrange(1, 256)
                b[at:at + n] = self.rng.randbytes(min(n, len(b) - at))
            elif kind == 5:
                # A little-endian integer field made huge or negative.
                value = self.rng.choice([2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1, 0])
                width = self.rng.choice([4, 8])
                b[at:at + width] = value.to_bytes(8, "little")[:width]
            else:
                n = self.rng.randrange(1, 512)
                b[at:at] = b[at:at + n]
        if bytes(b) == data:
            b.append(0)
        return bytes(b)

    WEIRD = [None, True, 0, -1, 1e308, -1e308, 2**63, -(2**63), 1.5, "", "x" * 5000, "NaN", "EPSG:99999",
             [], {}, [[[[[]]]]], {"a": {"b": {}}}, [1, 2], [1e308, -1e308, 1], ["a", "b", "c"]]

    def mutate_json(self, value, depth=0):
        """A structure-aware mutation: replace, drop or add members and elements."""
        if isinstance(value, (dict, list)) and value and self.rng.random() < 0.8:
            # A member of an object or an element of an array: dropped, joined by another,
            # mutated in turn, or replaced.
            key = self.rng.choice(list(value)) if isinstance(value, dict) else self.rng.randrange(len(value))
            roll = self.rng.random()
            if roll < 0.2:
                del value[key]
            elif roll < 0.3:
                if isinstance(value, dict):
                    value[self.rng.choice(["unknown", "extra", key + "_"])] = copy.deepcopy(self.rng.choice(self.WEIRD))
                else:
                    value.append(copy.deepcopy(value[key]) if self.rng.random() < 0.5 else copy.deepcopy(self.rng.choice(self.WEIRD)))
            elif roll < 0.7 and depth < 6:
                value[key] = self.mutate_json(value[key], depth + 1)
            else:
                value[key] = copy.deepcopy(self.rng.choice(self.WEIRD))
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.rng.random() < 0.5:
            return self.rng.choice([value * -1, value * 1e6, value + 1, float("nan"), float("inf"), 0])
        return copy.deepcopy(self.rng.choice(self.WEIRD))

    def json_text(self, value):
        text = json.dumps(value, allow_nan=True)
        if self.rng.random() < 0.1:
            return self.mutate_bytes(text.encode()).decode("utf-8", "replace")
        return text

    # --- targets ----------------------------------------------------------------------------

    def checkpoint(self, until):
        sources = [MICRO / "model.pt", MICRO / "model_hf.safetensors"]
        image = self.work / "image.png"
        config = str(MICRO / "config.json")
        while time.monotonic() < until:
            source = self.rng.choice(sources)
            mutated = self.work / f"mutated{source.suffix}"
            mutated.write_bytes(self.mutate_bytes(source.read_bytes()))
            if self.rng.random() < 0.6:
                self.run("checkpoint", ["inspect", str(mutated)], [mutated])
            else:
                self.run("checkpoint", ["predict", "--model", str(mutated), "--config", config, "--image", str(image),
                                        "--point", "40,30,1", "--out", str(self.work / "predict")], [mutated])

    def tile(self, until):
        store = self.work / "store"
        tile = next((store / "tiles").glob("*.safetensors"))
        original = tile.read_bytes()
        while time.monotonic() < until:
            tile.write_bytes(self.mutate_bytes(original))
            tile_id = tile.name.split(".")[0]
            self.run("tile", ["verify", "--quick", str(store)], [tile],
                     expect=lambda d: None if d.returncode == 1 and f"bad tile {tile_id}" in d.stdout
                     else "verify did not report the corrupt tile")
            if self.rng.random() < 0.2:
                self.run("tile", ["segment", str(store), "--prompts", str(self.work / "prompts.geojson"),
                                  "--out", str(self.work / "out.gpkg"), "--quiet"], [tile],
                         expect=lambda d: None if d.returncode == 1 and "corrupt" in d.stderr else "segment used a corrupt tile")
        tile.write_bytes(original)

    def manifest(self, until):
        store = self.work / "store"
        path = store / "manifest.json"
        original = path.read_bytes()
        parsed = json.loads(original)
        while time.monotonic() < until:
            if self.rng.random() < 0.5:
                path.write_bytes(self.mutate_bytes(original))
            else:
                path.write_text(self.json_text(self.mutate_json(copy.deepcopy(parsed))))
            command = self.rng.choice([["verify", "--quick", str(store)], ["info", str(store)],
                                       ["segment", str(store), "--prompts", str(self.work / "prompts.geojson"),
                                        "--out", str(self.work / "out.gpkg"), "--quiet"]])
            self.run("manifest", command, [path])
            path.write_bytes(original)

    def prompts(self, until):
        store = self.work / "store"
        geojson = json.loads((self.work / "prompts.geojson").read_text())
        gpkg = (self.work / "prompts.gpkg").read_bytes()
        while time.monotonic() < until:
            if self.rng.random() < 0.6:
                mutated = self.work / "mutated.geojson"
                mutated.write_text(self.json_text(self.mutate_json(copy.deepcopy(geojson))))
            else:
                mutated = self.work / "mutated.gpkg"
                mutated.write_bytes(self.mutate_bytes(gpkg))
            out = self.work / "fuzz-out.gpkg"
            self.run("prompts", ["segment", str(store), "--prompts", str(mutated), "--out", str(out), "--quiet"], [mutated])

    def http(self, until):
        store = self.work / "store"
        server = subprocess.Popen([self.args.binary, "serve", str(store), "--port", "0", "--quiet",
                                   "--out", str(self.work / "served.gpkg")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = server.stdout.readline().strip()
        if not line.startswith("http://"):
            server.kill()
            self.fail("http", f"serve printed no URL: {line!r}", [])
            return
        host, port = line[len("http://"):].rstrip("/").split(":")
        info = json.loads(self.request(host, port, "GET", "/api/store")[1])
        minx, miny, maxx, maxy = info["bounds"]
        valid = {"points": [[(minx + maxx) / 2, (miny + maxy) / 2, 1]], "box": [minx + 10, miny + 10, minx + 200, miny + 200],
                 "crs": None, "multimask": False, "min_area": 0, "largest_only": True, "simplify": 0, "fill_holes": False}
        paths = ["/api/segment", "/api/objects", "/api/objects/1", "/api/objects/last", "/api/objects/-1",
                 "/api/objects/99999999999999999999", "/api/objects/%00", "/tiles/0/0/0.png", "/tiles/99/1/1.png",
                 "/tiles/-1/0/0.png", "/tiles/1/999999999999/0.png", "/api/export.geojson", "/api/store", "/%2e%2e/etc/passwd",
                 "/api/tiles", "/api/encoding", "/api/view", "/api/generate", "/api/generate/1", "/api/generate/1/objects",
                 "/api/generate/1/save", "/api/generate/0", "/api/generate/99999999999999"]
        view = {"bbox": [minx, miny, maxx, maxy], "crs": None}
        generate = {"bbox": [minx, miny, maxx, maxy], "crs": None, "points_per_side": 2, "pred_iou_thresh": 0.0,
                    "stability_score_thresh": 0.0, "use_m2m": False, "min_area": 0}
        while time.monotonic() < until and server.poll() is None:
            roll = self.rng.random()
            if roll < 0.5:
                body = self.json_text(self.mutate_json(copy.deepcopy(valid))).encode("utf-8", "replace")
                method, path = "POST", self.rng.choice(["/api/segment", "/api/objects"])
            elif roll < 0.6:
                body = self.json_text(self.mutate_json(copy.deepcopy(view))).encode("utf-8", "replace")
                method, path = "PUT", "/api/view"
            elif roll < 0.66:
                # Segment everything: mutated jobs (one runs at a time; the others get 409), and saves.
                body = self.json_text(self.mutate_json(copy.deepcopy(generate))).encode("utf-8", "replace")
                method, path = "POST", self.rng.choice(["/api/generate", "/api/generate/1/save"])
            elif roll < 0.75:
                body = self.rng.choice([self.rng.randbytes(self.rng.randrange(1, 2000)), b"[" * 100000, b'{"points":' * 5000,
                                        b"\xff\xfe\x00", b'{"points": [[1e999, 1, 1]]}', b""])
                method, path = "POST", self.rng.choice(["/api/segment", "/api/objects"])
            else:
                body = None
                method, path = self.rng.choice(["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]), self.rng.choice(paths)
            self.cases["http"] = self.cases.get("http", 0) + 1
            try:
                status, payload = self.request(host, port, method, path, body)
            except (OSError, http.client.HTTPException) as error:
                self.fail("http", f"{method} {path}: connection failed: {error!r} (body {body[:200] if body else b''!r})", [])
                break
            if status >= 500:
                self.fail("http", f"{method} {path}: {status} {payload[:200]!r} (body {body[:200] if body else b''!r})", [])
        alive = server.poll() is None
        server.terminate()
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            code = None
        stderr = server.stderr.read()
        if not alive or code != 0 or any(m in stderr for m in CRASH_MARKERS):
            self.fail("http", f"server died or exited badly (alive {alive}, exit {code}): {stderr[-500:]!r}", [])

    @staticmethod
    def request(host, port, method, path, body=None):
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body is not None else {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def prepare(binary, work):
    """A small store (micro model), prompts as GeoJSON and GeoPackage, and an image."""
    raster = work / "scene.tif"
    subprocess.run([binary, "sample", str(raster), "--width", "900", "--height", "700"], check=True, capture_output=True)
    subprocess.run([binary, "encode", str(raster), "--out", str(work / "store"), "--quiet",
                    "--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")], check=True)
    manifest = json.loads((work / "store/manifest.json").read_text())
    minx, miny, maxx, maxy = manifest["tiles"][0]["bounds"]
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    prompts = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
               "features": [
                   {"type": "Feature", "properties": {"object": "a", "label": 1}, "geometry": {"type": "Point", "coordinates": [cx, cy]}},
                   {"type": "Feature", "properties": {"object": "a", "label": 0}, "geometry": {"type": "Point", "coordinates": [cx + 30, cy]}},
                   {"type": "Feature", "properties": {"object": "b"}, "geometry": {"type": "Polygon", "coordinates": [[
                       [minx + 10, miny + 10], [minx + 200, miny + 10], [minx + 200, miny + 200], [minx + 10, miny + 200], [minx + 10, miny + 10]]]}}]}
    (work / "prompts.geojson").write_text(json.dumps(prompts))
    subprocess.run(["ogr2ogr", "-f", "GPKG", str(work / "prompts.gpkg"), str(work / "prompts.geojson")], check=True)
    subprocess.run(["gdal_translate", "-q", "-of", "PNG", "-srcwin", "0", "0", "160", "120", str(raster), str(work / "image.png")], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--seconds", type=float, default=150, help="total time budget")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=60, help="per run")
    parser.add_argument("--targets", default="checkpoint,tile,manifest,prompts,http")
    parser.add_argument("--keep", default=".build/artifacts/fuzz-failures")
    args = parser.parse_args()
    shares = {"checkpoint": 0.25, "tile": 0.2, "manifest": 0.15, "prompts": 0.15, "http": 0.25}
    targets = [t for t in args.targets.split(",") if t]
    total = sum(shares[t] for t in targets)
    with tempfile.TemporaryDirectory(prefix="geosam2-fuzz-") as work:
        prepare(args.binary, Path(work))
        fuzzer = Fuzzer(args, work)
        for target in targets:
            getattr(fuzzer, target)(time.monotonic() + args.seconds * shares[target] / total)
    summary = ", ".join(f"{t} {fuzzer.cases.get(t, 0)}" for t in targets)
    if fuzzer.failures:
        print(f"fuzz (seed {args.seed}): {len(fuzzer.failures)} failures in {summary} cases", file=sys.stderr)
        for failure in fuzzer.failures[:20]:
            print(failure, file=sys.stderr)
        sys.exit(1)
    print(f"fuzz (seed {args.seed}): no crash, hang, trace or 5xx; every corrupt tile caught; cases: {summary}")


if __name__ == "__main__":
    main()
