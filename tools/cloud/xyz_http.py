"""`geosam2 encode` from XYZ web map tiles served on loopback, against the same pixels as a file.

A loopback HTTP server draws 256² PNG tiles of a synthetic Web Mercator map at any zoom (each
global pixel's colour is a function of its position, so any tile can be drawn). `geosam2 encode
'http://127.0.0.1:PORT/{z}/{x}/{y}.png' --bbox … --zoom Z` must fetch exactly the tiles the box
needs, once, and give a store whose tile tensors equal, byte for byte, those of a local GeoTIFF in
EPSG:3857 holding the same pixels (and the same tile metadata, geotransforms to 1e-12); a rerun fetches nothing; a box in another CRS (EPSG:4326) works;
a missing --bbox or --zoom is a one-line error.

    python3 tools/cloud/xyz_http.py --binary .build/release/geosam2
"""
import argparse, hashlib, http.server, io, json, os, re, shutil, struct, subprocess, sys, tempfile, threading
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"
EDGE = 20037508.342789244
ZOOM = 17
ORIGIN_TILE = (70400, 42980)  # a tile at zoom 17 (central Europe)


def pixels(x0, y0, w, h):
    """The map's RGB at global pixels [x0, x0+w) × [y0, y0+h) of zoom ZOOM: fields, discs, noise."""
    y, x = np.mgrid[y0:y0 + h, x0:x0 + w]
    fields = ((x // 300) * 7 + (y // 220) * 13) % 5
    palette = np.array([[90, 140, 60], [170, 150, 90], [60, 90, 150], [200, 200, 190], [120, 80, 60]], np.int64)
    img = palette[fields]
    for cx, cy, r, c in [(ORIGIN_TILE[0] * 256 + 600, ORIGIN_TILE[1] * 256 + 500, 140, (220, 60, 40)),
                         (ORIGIN_TILE[0] * 256 + 1500, ORIGIN_TILE[1] * 256 + 900, 220, (30, 30, 30))]:
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = c
    img = img + ((x * 7 + y * 13) % 9)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


class TileHandler(http.server.BaseHTTPRequestHandler):
    fetched = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def do_GET(self):
        m = re.fullmatch(r"/(\d+)/(\d+)/(\d+)\.png", self.path)
        if not m or int(m.group(1)) != ZOOM:
            self.send_error(404)
            return
        z, tx, ty = map(int, m.groups())
        with self.lock:
            self.fetched.append((z, tx, ty))
        buffer = io.BytesIO()
        Image.fromarray(pixels(tx * 256, ty * 256, 256, 256)).save(buffer, "PNG")
        data = buffer.getvalue()
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def tiles(store):
    """Per tile file: the digest of its tensor bytes and its header metadata."""
    out = {}
    for p in sorted((Path(store) / "tiles").iterdir()):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.suffix != ".safetensors":
            out[p.name] = (hashlib.sha256(data).hexdigest(), {})
            continue
        n = struct.unpack("<Q", data[:8])[0]
        out[p.name] = (hashlib.sha256(data[8 + n:]).hexdigest(), json.loads(data[8:8 + n]).get("__metadata__", {}))
    return out


def same_tiles(a, b):
    """Equal tensors and metadata; geotransforms within 1e-12 relative (the reference file's
    corners, given to gdal_translate -a_ullr, round its pixel size in the last bits)."""
    if a.keys() != b.keys():
        return False
    for name in a:
        (da, ma), (db, mb) = a[name], b[name]
        if da != db:
            return False
        for key in set(ma) | set(mb):
            if key == "content_crc32c":
                continue
            if key == "geotransform":
                ga, gb = [float(v) for v in ma[key].split(",")], [float(v) for v in mb[key].split(",")]
                if any(abs(x - y) > 1e-12 * max(1.0, abs(x)) for x, y in zip(ga, gb)):
                    return False
            elif ma.get(key) != mb.get(key):
                return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True)
    args = ap.parse_args()
    model = ["--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")]
    results = []

    def check(ok, what, detail=""):
        results.append(bool(ok))
        print(("ok   " if ok else "FAIL ") + what + (f" ({detail})" if detail and not ok else ""))

    res = 2 * EDGE / (256 * 2 ** ZOOM)
    # A box of 1500 × 1100 global pixels starting 100 pixels into the origin tile: 7 × 5 tiles.
    px0, py0, w, h = ORIGIN_TILE[0] * 256 + 100, ORIGIN_TILE[1] * 256 + 100, 1500, 1100
    minx, maxy = -EDGE + px0 * res, EDGE - py0 * res
    maxx, miny = minx + w * res, maxy - h * res
    work = Path(tempfile.mkdtemp(prefix="geosam2-xyz-"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TileHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    template = f"http://127.0.0.1:{server.server_address[1]}/{{z}}/{{x}}/{{y}}.png"
    try:
        # The same pixels as a local GeoTIFF in EPSG:3857.
        local = work / "local.tif"
        Image.fromarray(pixels(px0, py0, w, h)).save(work / "local.png")
        subprocess.run(["gdal_translate", "-q", "-a_srs", "EPSG:3857", "-a_ullr", repr(minx), repr(maxy), repr(maxx), repr(miny),
                        "-co", "TILED=YES", str(work / "local.png"), str(local)], check=True)
        subprocess.run([args.binary, "encode", str(local), "--out", str(work / "local.geosam2"), "--quiet"] + model, check=True,
                       capture_output=True)
        env = dict(os.environ, GDAL_HTTP_MAX_RETRY="0")
        bbox = f"{minx!r},{miny!r},{maxx!r},{maxy!r}"
        r = subprocess.run([args.binary, "encode", template, "--bbox", bbox, "--zoom", str(ZOOM), "--out", str(work / "xyz.geosam2"),
                            "--quiet"] + model, capture_output=True, text=True, env=env)
        check(r.returncode == 0, "encode from the XYZ template", r.stderr.strip()[-400:])
        needed = {(ZOOM, tx, ty) for tx in range(px0 // 256, (px0 + w - 1) // 256 + 1) for ty in range(py0 // 256, (py0 + h - 1) // 256 + 1)}
        got = TileHandler.fetched
        check(set(got) == needed, "exactly the tiles the box needs were fetched", f"{len(set(got))} fetched, {len(needed)} needed")
        check(len(got) == len(set(got)), "each tile once", f"{len(got)} requests for {len(set(got))} tiles")
        if r.returncode == 0:
            a, b = tiles(work / "local.geosam2"), tiles(work / "xyz.geosam2")
            check(same_tiles(a, b) and len(a) > 1, "the store's features equal the local file's byte for byte (tile tensors and metadata)",
                  f"{len(a)} vs {len(b)} files")
        before = len(got)
        again = subprocess.run([args.binary, "encode", template, "--bbox", bbox, "--zoom", str(ZOOM), "--out", str(work / "xyz.geosam2"),
                                "--quiet"] + model, capture_output=True, text=True, env=env)
        check(again.returncode == 0 and len(TileHandler.fetched) == before, "a rerun resumes without fetching",
              f"{len(TileHandler.fetched) - before} requests; {again.stderr.strip()[-200:]}")
        # The box in longitude/latitude.
        out = subprocess.run(["gdaltransform", "-s_srs", "EPSG:3857", "-t_srs", "EPSG:4326", "-output_xy"],
                             input=f"{minx + 300 * res} {maxy - 300 * res}\n{maxx - 300 * res} {miny + 300 * res}\n",
                             capture_output=True, text=True, check=True).stdout.split()
        lon0, lat0, lon1, lat1 = map(float, out)
        geo = subprocess.run([args.binary, "encode", template, "--bbox", f"{lon0},{lat1},{lon1},{lat0}", "--crs", "EPSG:4326",
                              "--zoom", str(ZOOM), "--out", str(work / "geo.geosam2"), "--quiet"] + model, capture_output=True, text=True, env=env)
        check(geo.returncode == 0 and (work / "geo.geosam2/manifest.json").exists(), "a box in EPSG:4326", geo.stderr.strip()[-300:])
        for bad, fragment in [(["--zoom", str(ZOOM)], "--bbox"), (["--bbox", bbox], "--zoom")]:
            e = subprocess.run([args.binary, "encode", template, "--out", str(work / "bad.geosam2")] + bad + model,
                               capture_output=True, text=True, env=env)
            check(e.returncode != 0 and len(e.stderr.strip().splitlines()) == 1 and fragment in e.stderr,
                  f"without {fragment}: a one-line error", e.stderr.strip()[:200])
    except Exception as error:
        check(False, "aborted", repr(error)[-500:])
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{results.count(True)} passed, {results.count(False)} failed")
    sys.exit(1 if results.count(False) else 0)


if __name__ == "__main__":
    main()
