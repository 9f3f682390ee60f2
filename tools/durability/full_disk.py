#!/usr/bin/env python3
"""A full disk, for real: a small tmpfs is mounted and filled while GeoSAM2 writes to it.

1. `encode` into a tmpfs too small for the store: a one-line error naming the file and the
   reason, exit 1; the tiles written before are intact (`verify` finds none bad, only missing
   ones) and no temporary file is left; with space again, the same command resumes and the store
   verifies complete.
2. `serve` with its output GeoPackage on a tmpfs that fills up: saves that do not fit get a
   one-line error (507), every acknowledged save is still in the file, SQLite's integrity check
   passes, and saving works again once there is space.
3. `segment` appending to that GeoPackage on the full disk: a one-line error, exit 1, and the file
   keeps what it held.

Needs root (mount); where mounting is refused it says so and exits 0 (skipped).
"""
import argparse
import http.client
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"
MODEL = ["--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")]


class Failure(Exception):
    pass


def mount(point, size):
    point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True)
    return done.returncode == 0, done.stderr.strip()


def remount(point, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", str(point)], check=True)


def one_line(text, what):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    if len(lines) != 1:
        raise Failure(f"{what}: expected a one-line error, got {len(lines)} lines: {text[-600:]!r}")
    return lines[0]


def fill(point, leave):
    """Fills the file system but `leave` bytes."""
    st = os.statvfs(point)
    free = st.f_bavail * st.f_frsize
    filler = point / "filler"
    with open(filler, "ab") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


def encode_phase(binary, work, point):
    raster = work / "scene.tif"
    subprocess.run([binary, "sample", str(raster), "--width", "3000", "--height", "2000"], check=True, capture_output=True)
    store = point / "scene.geosam2"
    command = [binary, "encode", str(raster), "--out", str(store), "--quiet"] + MODEL
    first = subprocess.run(command, capture_output=True, text=True)
    if first.returncode != 1:
        raise Failure(f"encode on a full disk: exit {first.returncode}, stderr {first.stderr[-400:]!r}")
    line = one_line(first.stderr, "encode on a full disk")
    if "No space left on device" not in line:
        raise Failure(f"encode on a full disk does not say why: {line!r}")
    leftovers = [p.name for p in store.rglob(".*.tmp")]
    if leftovers:
        raise Failure(f"temporary files left behind: {leftovers}")
    verified = subprocess.run([binary, "verify", str(store)], capture_output=True, text=True)
    summary = verified.stdout.splitlines()[0] if verified.stdout else ""
    if " 0 bad" not in summary or " 0 done" in summary:
        raise Failure(f"after a full disk the store is not intact: {verified.stdout[-400:]!r}")
    remount(point, "64m")
    second = subprocess.run(command, capture_output=True, text=True)
    if second.returncode != 0:
        raise Failure(f"resume after freeing space failed: {second.stderr[-400:]!r}")
    if subprocess.run([binary, "verify", str(store)], capture_output=True).returncode != 0:
        raise Failure("the resumed store does not verify")
    print(f"encode: full disk → {line!r}; {summary.split(': ', 1)[-1]}; resumed and complete once there was space")
    return store


def request(port, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def objects_in(gpkg):
    db = sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)
    try:
        if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise Failure(f"{gpkg} fails SQLite's integrity check")
        return {row[0] for row in db.execute("SELECT object_id FROM objects")}
    finally:
        db.close()


def serve_phase(binary, store, point):
    output = point / "objects.gpkg"
    server = subprocess.Popen([binary, "serve", str(store), "--port", "0", "--quiet", "--out", str(output)] + MODEL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline().strip().rsplit(":", 1)[1].rstrip("/"))
        _, payload = request(port, "GET", "/api/store")
        minx, miny, maxx, maxy = json.loads(payload)["bounds"]
        saved, refused = [], None

        def save(i):
            body = {"points": [[minx + (maxx - minx) * (0.1 + 0.08 * (i % 10)), miny + (maxy - miny) * (0.1 + 0.08 * (i // 10 % 10)), 1]],
                    "largest_only": False}
            return request(port, "POST", "/api/objects", body)

        for i in range(3):
            status, payload = save(i)
            if status != 201:
                raise Failure(f"save with space: {status} {payload[:300]!r}")
            saved.append(json.loads(payload)["object_id"])
        filler = fill(point, 16 << 10)
        for i in range(3, 60):
            status, payload = save(i)
            if status == 201:
                saved.append(json.loads(payload)["object_id"])
                continue
            refused = (status, json.loads(payload).get("error", ""))
            break
        if refused is None:
            raise Failure("the disk never filled up")
        if refused[0] != 507 or "\n" in refused[1]:
            raise Failure(f"a save on a full disk got {refused[0]} {refused[1]!r}, expected a one-line 507")
        present = objects_in(output)
        if not set(saved) <= present:
            raise Failure(f"acknowledged saves lost on a full disk: {sorted(set(saved) - present)}")

        # The segment command on the same full disk.
        prompts = point.parent / "prompt.geojson"
        prompts.write_text(json.dumps({"type": "FeatureCollection",
                                       "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                                       "features": [{"type": "Feature", "properties": {},
                           "geometry": {"type": "Point", "coordinates": [(minx + maxx) / 2, (miny + maxy) / 2]}}]}))
        segment = subprocess.run([binary, "segment", str(store), "--prompts", str(prompts), "--out", str(output), "--quiet"] + MODEL,
                                 capture_output=True, text=True)
        if segment.returncode != 1:
            raise Failure(f"segment on a full disk: exit {segment.returncode}, stderr {segment.stderr[-300:]!r}")
        segment_line = one_line(segment.stderr, "segment on a full disk")
        if "disk is full" not in segment_line and "No space left" not in segment_line:
            raise Failure(f"segment on a full disk failed for another reason: {segment_line!r}")
        if objects_in(output) != present:
            raise Failure("segment on a full disk changed the GeoPackage")

        filler.unlink()
        status, payload = save(99)
        if status != 201:
            raise Failure(f"save after freeing space: {status} {payload[:300]!r}")
        if json.loads(payload)["object_id"] in saved:
            raise Failure("an id was given twice")
        print(f"serve: {len(saved)} saves acknowledged before the disk filled, then {refused[0]} {refused[1]!r}; "
              f"all kept, integrity ok, saving resumed once there was space")
        print(f"segment: full disk → {segment_line!r}; the GeoPackage unchanged")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="geosam2-full-") as tmp:
        work = Path(tmp)
        point = work / "disk"
        ok, reason = mount(point, "1200k")
        if not ok:
            print(f"full-disk test skipped: cannot mount a tmpfs here ({reason or 'refused'})")
            return
        try:
            store = encode_phase(args.binary, work, point)
            serve_phase(args.binary, store, point)
        except Failure as failure:
            print(f"full-disk test failed: {failure}", file=sys.stderr)
            sys.exit(1)
        finally:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)
    print("full-disk test passed")


if __name__ == "__main__":
    main()
