"""`geosam2 encode` of a cloud-optimised GeoTIFF over HTTP (GDAL's /vsicurl/) against the local file.

A loopback HTTP server that honours Range requests (and logs every range it sends) serves a COG made
with GDAL's COG driver; `geosam2 encode /vsicurl/http://127.0.0.1:PORT/scene.tif` must give a store
whose tile files equal, byte for byte, those of `geosam2 encode scene.tif`, and it must read the
file in ranges: no request without a Range header, and no more bytes in all than the file holds
(GDAL's block cache keeps what the stretch and the pyramid levels read again). The same file as
an S3 object (`/vsis3/bucket/scene.tif`, path-style, at AWS_S3_ENDPOINT on loopback, signed with
test credentials) must give the same tiles, every request signed (AWS SigV4) and ranged.

    python3 tools/cloud/cog_http.py --binary .build/release/geosam2
"""
import argparse, hashlib, http.server, os, re, subprocess, sys, tempfile, threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file (as /scene.tif, and as the object /bucket/scene.tif) with Range support;
    records (method, range, path, Authorization) of every request."""
    path_on_disk = None
    log = []
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def _send(self, head):
        header = self.headers.get("Range")
        with self.lock:
            self.log.append((self.command, header, self.path.split("?")[0], self.headers.get("Authorization")))
        if self.path.split("?")[0] not in ("/scene.tif", "/bucket/scene.tif"):
            self.send_error(404)
            return
        data = Path(self.path_on_disk).read_bytes()
        size = len(data)
        if header:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", header.strip())
            if not m:
                self.send_error(416)
                return
            start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
            end = min(end, size - 1)
            if start > end:
                self.send_error(416)
                return
            body = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "image/tiff")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_GET(self):
        self._send(head=False)

    def do_HEAD(self):
        self._send(head=True)


def tile_digests(store):
    tiles = Path(store) / "tiles"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(tiles.iterdir()) if p.is_file()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True)
    args = ap.parse_args()
    model = ["--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")]
    passed = failed = 0

    def check(name, ok, detail=""):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""))
        passed, failed = (passed + 1, failed) if ok else (passed, failed + 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw = tmp / "raw.tif"
        cog = tmp / "scene.tif"
        subprocess.run([args.binary, "sample", str(raw), "--width", "2300", "--height", "1700"], check=True, capture_output=True)
        subprocess.run(["gdal_translate", "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE", "-co", "BLOCKSIZE=512", str(raw), str(cog)],
                       check=True)
        RangeHandler.path_on_disk = str(cog)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"/vsicurl/http://127.0.0.1:{server.server_address[1]}/scene.tif"
        try:
            local = subprocess.run([args.binary, "encode", str(cog), "--out", str(tmp / "local.geosam2"), "--quiet"] + model,
                                   capture_output=True, text=True)
            check("encode of the local COG", local.returncode == 0, local.stderr.strip()[-300:])
            env = dict(os.environ, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tif")
            remote = subprocess.run([args.binary, "encode", url, "--out", str(tmp / "remote.geosam2"), "--quiet"] + model,
                                    capture_output=True, text=True, env=env)
            check("encode over /vsicurl/ (HTTP Range)", remote.returncode == 0, remote.stderr.strip()[-300:])
            if local.returncode == 0 and remote.returncode == 0:
                a, b = tile_digests(tmp / "local.geosam2"), tile_digests(tmp / "remote.geosam2")
                check("the same tiles, byte for byte", a == b and len(a) > 1, f"{len(a)} local, {len(b)} remote tile files")
            gets = [r for m, r, _, _ in RangeHandler.log if m == "GET"]
            check("every read is a range request", gets and all(r is not None for r in gets),
                  f"{sum(r is None for r in gets)} of {len(gets)} without Range")
            sent = 0
            for r in gets:
                if r:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", r.strip())
                    end = int(m.group(2)) if m.group(2) else cog.stat().st_size - 1
                    sent += min(end, cog.stat().st_size - 1) - int(m.group(1)) + 1
            size = cog.stat().st_size
            check("no more bytes read than the file holds", 0 < sent <= size, f"{sent} bytes in {len(gets)} requests, file {size}")
            # A second run resumes: nothing to encode, and it does not read the pixels again.
            before = len(RangeHandler.log)
            again = subprocess.run([args.binary, "encode", url, "--out", str(tmp / "remote.geosam2"), "--quiet"] + model,
                                   capture_output=True, text=True, env=env)
            check("a rerun over HTTP resumes the finished store", again.returncode == 0, again.stderr.strip()[-300:])
            print(f"     (rerun: {len(RangeHandler.log) - before} requests)")
            # The same COG as an S3 object, through GDAL's usual settings for an S3-compatible store.
            s3_env = dict(env, AWS_S3_ENDPOINT=f"127.0.0.1:{server.server_address[1]}", AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE",
                          AWS_ACCESS_KEY_ID="GEOSAM2TESTKEY", AWS_SECRET_ACCESS_KEY="geosam2-test-secret", AWS_REGION="us-east-1")
            before = len(RangeHandler.log)
            s3 = subprocess.run([args.binary, "encode", "/vsis3/bucket/scene.tif", "--out", str(tmp / "s3.geosam2"), "--quiet"] + model,
                                capture_output=True, text=True, env=s3_env)
            check("encode over /vsis3/ (an S3-compatible endpoint)", s3.returncode == 0, s3.stderr.strip()[-300:])
            if local.returncode == 0 and s3.returncode == 0:
                a, b = tile_digests(tmp / "local.geosam2"), tile_digests(tmp / "s3.geosam2")
                check("the S3 store has the same tiles, byte for byte", a == b, f"{len(b)} tile files")
            s3_requests = RangeHandler.log[before:]
            s3_gets = [r for r in s3_requests if r[0] == "GET"]
            check("every S3 request is signed and every read ranged",
                  s3_gets and all((auth or "").startswith("AWS4-HMAC-SHA256 Credential=GEOSAM2TESTKEY/") for _, _, _, auth in s3_requests)
                  and all(rng for _, rng, _, _ in s3_gets) and all(path == "/bucket/scene.tif" for _, _, path, _ in s3_gets),
                  f"{len(s3_requests)} requests")
            # A URL that does not exist: one line, non-zero.
            missing = subprocess.run([args.binary, "encode", url.replace("scene.tif", "none.tif"), "--out", str(tmp / "x.geosam2"),
                                      "--quiet"] + model, capture_output=True, text=True, env=env)
            check("a missing remote raster is a one-line error", missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1,
                  missing.stderr.strip()[:200])
        finally:
            server.shutdown()
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
