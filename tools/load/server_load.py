#!/usr/bin/env python3
"""Load, crash and shutdown test of `geosam2 serve` as a real process over real HTTP.

1. Load: 8 concurrent clients save, delete, preview, list, export and fetch map tiles for
   --seconds (60 by default). No answer may be a 5xx or a dropped connection. The p50/p95 of
   POST /api/segment (the preview) under that load are printed and written to --report.
2. Shutdown: a save whose body is still being uploaded when SIGTERM arrives must be answered and
   saved, and the server must exit 0.
3. Crash: --crash-rounds times, clients save and delete while the server is SIGKILLed at a
   random moment. After each kill the GeoPackage must pass SQLite's integrity check, hold every
   acknowledged save that was not acknowledged deleted, and none of the acknowledged deletes;
   no id may ever be given twice, across all the restarts.

The GeoPackage is read with Python's own sqlite3, not through the tool. Seeded and bounded in
time. Standard library only.
"""
import argparse
import http.client
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"


class Failure(Exception):
    pass


class Server:
    """`geosam2 serve STORE --port 0 --quiet`: the first stdout line is the URL."""

    def __init__(self, binary, store, output):
        self.process = subprocess.Popen(
            [binary, "serve", store, "--port", "0", "--quiet", "--out", output,
             "--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.process.kill()
            raise Failure(f"serve printed no URL: {line!r}; stderr: {self.process.stderr.read()}")
        host, port = line[len("http://"):].rstrip("/").split(":")
        self.host, self.port = host, int(port)

    def connection(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise Failure(f"server did not exit within {timeout} s of {sig.name}")
        return code, self.process.stderr.read()


def request(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    payload = response.read()
    return response.status, payload


class Ledger:
    """What the server acknowledged, across restarts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.saved = []          # every acknowledged save id, in order
        self.deleted = set()     # every acknowledged delete
        self.attempted = set()   # every delete sent (it may have been applied without an answer)

    def save(self, object_id):
        with self.lock:
            self.saved.append(object_id)

    def delete(self, object_id):
        with self.lock:
            self.deleted.add(object_id)

    def attempt_delete(self, object_id):
        with self.lock:
            self.attempted.add(object_id)

    def check(self, gpkg):
        with self.lock:
            saved, deleted, attempted = list(self.saved), set(self.deleted), set(self.attempted)
        if len(saved) != len(set(saved)):
            repeated = sorted({i for i in saved if saved.count(i) > 1})
            raise Failure(f"ids given twice: {repeated}")
        # Read-write: after a kill mid-transaction SQLite must roll the hot journal back first,
        # as the next server start would.
        db = sqlite3.connect(gpkg)
        try:
            status = db.execute("PRAGMA integrity_check").fetchone()[0]
            if status != "ok":
                raise Failure(f"{gpkg}: integrity check says {status}")
            present = {row[0] for row in db.execute("SELECT object_id FROM objects")}
        finally:
            db.close()
        # A delete cut off by a kill may have been applied: its object may be gone.
        lost = sorted(set(saved) - deleted - attempted - present)
        revived = sorted(deleted & present)
        if lost:
            raise Failure(f"acknowledged saves lost: {lost}")
        if revived:
            raise Failure(f"acknowledged deletes undone: {revived}")
        return len(present)


def store_info(server):
    conn = server.connection()
    status, payload = request(conn, "GET", "/api/store")
    conn.close()
    if status != 200:
        raise Failure(f"GET /api/store: {status}")
    return json.loads(payload)


def random_point(info, rng):
    minx, miny, maxx, maxy = info["bounds"]
    return [minx + (maxx - minx) * rng.uniform(0.05, 0.95), miny + (maxy - miny) * rng.uniform(0.05, 0.95), 1]


def tile_path(info, rng):
    m = info["map"]
    z = rng.randint(0, m["native_zoom"])
    scale = 2 ** (m["native_zoom"] - z)
    columns = max(1, -(-m["width"] // (m["tile_size"] * scale)))
    rows = max(1, -(-m["height"] // (m["tile_size"] * scale)))
    return f"/tiles/{z}/{rng.randrange(columns)}/{rng.randrange(rows)}.png"


def client(server, info, ledger, seed, until, errors, previews, mix, own, timings):
    rng = random.Random(seed)
    conn = server.connection()
    operations, weights = zip(*mix)
    while time.monotonic() < until and not errors:
        op = rng.choices(operations, weights)[0]
        began = time.perf_counter()
        try:
            if op == "preview":
                start = time.perf_counter()
                status, payload = request(conn, "POST", "/api/segment", {"points": [random_point(info, rng)], "largest_only": True})
                if status == 200:
                    previews.append((time.perf_counter() - start) * 1000)
            elif op == "save":
                # Outlines of a realistic size: random weights give speckled masks whose largest
                # polygon has thousands of holes; a real object's outline has a few hundred vertices.
                status, payload = request(conn, "POST", "/api/objects", {"points": [random_point(info, rng)], "largest_only": True,
                                                                         "fill_holes": True, "simplify": 1.0})
                if status == 201:
                    object_id = json.loads(payload)["object_id"]
                    ledger.save(object_id)
                    own.append(object_id)
            elif op == "delete" and own:
                object_id = own.pop(rng.randrange(len(own)))
                ledger.attempt_delete(object_id)
                status, payload = request(conn, "DELETE", f"/api/objects/{object_id}")
                if status == 200:
                    ledger.delete(object_id)
            elif op == "undo":
                status, payload = request(conn, "DELETE", "/api/objects/last")
                if status == 200:
                    ledger.delete(json.loads(payload)["deleted"])
            elif op == "list":
                status, payload = request(conn, "GET", "/api/objects")
            elif op == "get" and own:
                status, payload = request(conn, "GET", f"/api/objects/{rng.choice(own)}")
                status = 200 if status == 404 else status  # deleted meanwhile by an undo
            elif op == "tile":
                status, payload = request(conn, "GET", tile_path(info, rng))
            elif op == "export":
                status, payload = request(conn, "GET", rng.choice(["/api/export.geojson", "/api/export.gpkg"]))
            else:
                continue
        except (OSError, http.client.HTTPException) as error:
            if time.monotonic() >= until:
                break
            errors.append(f"{op}: connection failed: {error!r}")
            break
        if status >= 500:
            errors.append(f"{op}: {status} {payload[:200]!r}")
        timings.setdefault(op, []).append((time.perf_counter() - began) * 1000)
    conn.close()


LOAD_MIX = [("preview", 30), ("save", 18), ("delete", 8), ("undo", 2), ("list", 12), ("get", 5), ("tile", 20), ("export", 5)]
# No undo here: an undo cut off by a kill deletes an id the ledger cannot know.
CRASH_MIX = [("save", 50), ("delete", 25), ("preview", 20)]


def run_clients(server, info, ledger, count, seconds, mix, seed, timings=None):
    errors, previews = [], []
    timings = {} if timings is None else timings
    until = time.monotonic() + seconds
    threads = [threading.Thread(target=client, args=(server, info, ledger, seed * 100 + i, until, errors, previews, mix, [], timings))
               for i in range(count)]
    for t in threads:
        t.start()
    return threads, errors, previews


def load_phase(binary, store, output, ledger, seconds, seed):
    server = Server(binary, store, output)
    info = store_info(server)
    timings = {}
    threads, errors, previews = run_clients(server, info, ledger, 8, seconds, LOAD_MIX, seed, timings)
    for t in threads:
        t.join()
    if errors:
        server.stop()
        raise Failure("under load: " + "; ".join(errors[:5]))
    for op, values in sorted(timings.items()):
        if len(values) >= 2:
            print(f"  {op:8s} n={len(values):4d}  p50 {statistics.median(values):7.1f} ms  p95 {statistics.quantiles(values, n=20)[-1]:7.1f} ms")
    return server, info, previews


def shutdown_phase(server, info, ledger, output):
    """A save still uploading its body when SIGTERM arrives is answered, saved, and exit is 0."""
    body = json.dumps({"points": [random_point(info, random.Random(7))], "largest_only": True}).encode()
    conn = server.connection()
    conn.putrequest("POST", "/api/objects")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    conn.send(body[: len(body) // 2])
    time.sleep(0.3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    conn.send(body[len(body) // 2:])
    response = conn.getresponse()
    payload = response.read()
    if response.status != 201:
        raise Failure(f"the request in flight at SIGTERM got {response.status} {payload[:200]!r}")
    ledger.save(json.loads(payload)["object_id"])
    code, stderr = server.stop(signal.SIGTERM)
    if code != 0:
        raise Failure(f"exit status {code} after SIGTERM; stderr: {stderr[-500:]}")
    return ledger.check(output)


def crash_phase(binary, store, output, ledger, rounds, seed):
    rng = random.Random(seed)
    for round_ in range(rounds):
        server = Server(binary, store, output)
        info = store_info(server)
        threads, errors, _ = run_clients(server, info, ledger, 4, 30, CRASH_MIX, seed + round_)
        time.sleep(rng.uniform(0.3, 2.5))
        server.process.kill()
        server.process.wait()
        for t in threads:
            t.join()
        # Connections cut by the kill are expected; anything else the clients saw is not.
        real = [e for e in errors if "connection failed" not in e]
        if real:
            raise Failure(f"crash round {round_}: " + "; ".join(real[:5]))
        objects = ledger.check(output)
        print(f"crash round {round_ + 1}/{rounds}: {len(ledger.saved)} saves and {len(ledger.deleted)} deletes acknowledged so far, "
              f"{objects} objects in the file, all accounted for")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--crash-rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", help="write the preview latencies as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="geosam2-load-") as tmp:
        raster, store, output = f"{tmp}/scene.tif", f"{tmp}/scene.geosam2", f"{tmp}/objects.gpkg"
        subprocess.run([args.binary, "sample", raster, "--width", "1800", "--height", "1200"], check=True, capture_output=True)
        subprocess.run([args.binary, "encode", raster, "--out", store, "--quiet",
                        "--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")], check=True)
        ledger = Ledger()
        try:
            server, info, previews = load_phase(args.binary, store, output, ledger, args.seconds, args.seed)
            if len(previews) < 20:
                raise Failure(f"only {len(previews)} previews answered in {args.seconds} s")
            p50 = statistics.median(previews)
            p95 = statistics.quantiles(previews, n=20)[-1]
            print(f"load: 8 clients for {args.seconds:.0f} s, no 5xx; {len(ledger.saved)} saves, {len(ledger.deleted)} deletes acknowledged; "
                  f"POST /api/segment p50 {p50:.1f} ms, p95 {p95:.1f} ms over {len(previews)} previews")
            objects = shutdown_phase(server, info, ledger, output)
            print(f"shutdown: the save uploading at SIGTERM was answered and kept, exit 0; {objects} objects in the file")
            crash_phase(args.binary, store, output, ledger, args.crash_rounds, args.seed)
        except (Failure, sqlite3.Error) as failure:
            print(f"server load test failed: {failure}", file=sys.stderr)
            sys.exit(1)
        if args.report:
            Path(args.report).write_text(json.dumps({
                "clients": 8, "seconds": args.seconds, "previews": len(previews),
                "preview_p50_ms": round(p50, 2), "preview_p95_ms": round(p95, 2),
                "saves": len(ledger.saved), "deletes": len(ledger.deleted)}, indent=2) + "\n")
    print("server load test passed")


if __name__ == "__main__":
    main()
