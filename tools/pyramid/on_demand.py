#!/usr/bin/env python3
"""`geosam2 serve RASTER` encodes while it serves, and a kill loses nothing.

    python3 tools/pyramid/on_demand.py --binary .build/release/geosam2 --checkpoint MODEL.pt [--config CONFIG.json]

1. A 3000×2000 sample scene is served with no store beside it: the server answers at once, a
   click on a tile the background has not reached is answered (and names the tiles encoded for
   it), and `/api/encoding` reports the coarsest level first.
2. The server is killed (SIGKILL) while tiles are still pending; every tile file it left verifies.
3. `serve` again resumes (the kept tiles count as finished from the start) and is stopped with
   SIGINT part-way; `geosam2 encode` then finishes the store, skipping every kept tile.
4. The store equals one made by `geosam2 encode` alone, tile file for tile file, and verifies.
Prints one line per check and closes with `N passed, M failed`; exit status 1 on any failure.
"""
import argparse
import hashlib
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

results = []


def check(ok, what):
    results.append(bool(ok))
    print(("PASS " if ok else "FAIL ") + what)
    return ok


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def tile_digests(store):
    tiles = os.path.join(store, "tiles")
    return {name: hashlib.sha256(open(os.path.join(tiles, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(tiles)) if not name.startswith(".")}


class Server:
    def __init__(self, binary, raster, store, model):
        self.process = subprocess.Popen([binary, "serve", raster, "--store", store, "--port", "0", "--machine-readable"] + model,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("serve printed nothing: " + self.process.stderr.read())
        url = urllib.parse.urlparse(json.loads(line)["url"])
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=300)

    def call(self, method, path, body=None):
        self.connection.request(method, path, body=None if body is None else json.dumps(body),
                                headers={"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def wait_for(self, predicate, seconds=600):
        deadline = time.time() + seconds
        while time.time() < deadline:
            _, report = self.call("GET", "/api/encoding")
            if predicate(report):
                return report
            time.sleep(0.1)
        raise RuntimeError("timed out waiting for the encoder: " + json.dumps(report))

    def stop(self, sig):
        self.connection.close()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.read()
        return self.process.returncode


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config")
    args = ap.parse_args()
    model = ["--model", args.checkpoint] + (["--config", args.config] if args.config else [])
    work = tempfile.mkdtemp(prefix="geosam2-on-demand-")
    try:
        raster = os.path.join(work, "scene.tif")
        run([args.binary, "sample", raster, "--width", "3000", "--height", "2000"])
        reference = os.path.join(work, "reference.geosam2")
        run([args.binary, "encode", raster, "--out", reference, "--quiet"] + model)
        expected = tile_digests(reference)
        store = os.path.join(work, "scene.geosam2")

        # 1. Served at once; a click far from where the background starts is answered.
        started = time.perf_counter()
        server = Server(args.binary, raster, store, model)
        status, report = server.call("GET", "/api/encoding")
        check(status == 200 and report["on_demand"] and report["tiles"] == len(expected),
              f"serve listens after {time.perf_counter() - started:.1f} s with the store planned ({report['tiles']} tiles, "
              f"{report['finished']} finished)")
        # 1 m pixels from (410000, 5810000): the bottom-right level-0 tile.
        status, answer = server.call("POST", "/api/segment", {"points": [[410000 + 2600.5, 5810000 - 1700.5, 1]]})
        check(status == 200 and answer["features"], f"a click on the bottom-right tile is answered (level {answer.get('level')}, "
              f"encoded for it: {answer.get('encoded_on_demand')})")
        check(status == 200 and answer["tiles"][0].startswith("r") and set(answer["encoded_on_demand"]) <= set(answer["tiles"]),
              f"the click starts at level 0 ({answer.get('tiles')}); the tiles encoded for it are among those decoded")
        report = server.wait_for(lambda r: r["finished"] >= 3)
        top = max(l["level"] for l in report["levels"])
        check(next(l for l in report["levels"] if l["level"] == top)["finished"] == 1,
              "the coarsest level (one tile) is among the first finished")
        _, tiles = server.call("GET", "/api/tiles")
        states = {f["properties"]["state"] for f in tiles["features"]}
        check("done" in states, f"/api/tiles reports tile states {sorted(states)}")

        # 2. Killed while tiles are pending: what it wrote is sound.
        server.stop(signal.SIGKILL)
        kept = tile_digests(store)
        check(0 < len(kept) and all(expected.get(name) == digest for name, digest in kept.items()),
              f"after SIGKILL, the {len(kept)} tile files written equal the reference's")

        # 3. Served again: resumes; then stopped part-way with SIGINT.
        server = Server(args.binary, raster, store, model)
        _, report = server.call("GET", "/api/encoding")
        check(report["finished"] >= len(kept), f"a second serve starts from {report['finished']} finished tiles")
        server.wait_for(lambda r: r["finished"] >= min(len(expected) - 1, len(kept) + 1))
        code = server.stop(signal.SIGINT)
        check(code == 0, f"SIGINT stops serve cleanly (exit {code})")
        kept = tile_digests(store)
        out = run([args.binary, "encode", raster, "--out", store, "--progress", "json"] + model)
        last = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
        check(last.get("skipped", -1) == len(kept), f"encode resumes: {last.get('skipped')} tiles skipped, {last.get('encoded')} encoded")

        # 4. The same store as encode alone.
        check(tile_digests(store) == expected, "every tile file equals the store `encode` makes alone")
        verify = subprocess.run([args.binary, "verify", store], capture_output=True, text=True)
        check(verify.returncode == 0, f"verify passes (exit {verify.returncode})")
        manifest = json.load(open(os.path.join(store, "manifest.json")))
        check(manifest["complete"], "the manifest is complete")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    failed = results.count(False)
    print(f"{results.count(True)} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
