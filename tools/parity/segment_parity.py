"""End-to-end check of `geosam2 encode` + `geosam2 segment` against the official SAM2.

For an 8-bit RGB GeoTIFF encoded with `--stretch none`, the polygons `segment` writes must
rasterize back to the mask the official `SAM2ImagePredictor.predict` gives on the same tile
(IoU >= 0.999 with random weights), for prompts on a single-tile and a multi-tile raster.

On a pyramid store (a 2600² raster: levels 1 and 2), prompts that the routing sends to levels 1
and 2 (boxes larger than a tile, clicks that climb) must match the official predictor run on that
level's tile image (`geosam2 tile-image`: the same averaged pixels), its low-resolution logits
upsampled the same way (bilinear, align_corners=False, one step) straight to the full-resolution
footprint of the tile and thresholded at 0.

    python3 tools/parity/segment_parity.py --binary .build/release/geosam2 --checkpoint MODEL.pt --preset tiny

Needs gdal-bin (gdal_translate, gdal_rasterize, ogr2ogr) and the reference environment
(torch, sam2==1.1.0, pillow). Prints one line per object and closes with `N passed, M failed`.
"""
import argparse, atexit, json, os, shutil, subprocess, sys, tempfile
import numpy as np
from PIL import Image

CONFIGS = {"tiny": "configs/sam2.1/sam2.1_hiera_t.yaml", "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
           "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml", "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
           "tiny_2.0": "configs/sam2/sam2_hiera_t.yaml"}
RES = 0.5            # metres per pixel
ORIGIN = (400000.0, 5300000.0)  # upper-left corner, EPSG:32633


def scene(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    img[...] = (95, 130, 70)
    for _ in range(14):  # fields
        x0, y0 = rng.integers(0, w - 200), rng.integers(0, h - 200)
        img[y0:y0 + rng.integers(120, 400), x0:x0 + rng.integers(120, 400)] = rng.integers(40, 220, 3)
    for _ in range(6):  # round things
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(25, 90)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.integers(30, 240, 3)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def write_prompts(path, objects, ulx, uly):
    """Objects as a GeoJSON of points (x, y, label at continuous pixel positions) and boxes."""
    features = []
    for k, o in enumerate(objects):
        for (px, py, label) in o["points"]:
            features.append({"type": "Feature", "properties": {"object": k, "label": label},
                             "geometry": {"type": "Point", "coordinates": [ulx + px * RES, uly - py * RES]}})
        if o["box"]:
            x0, y0, x1, y1 = o["box"]
            X0, X1, Y0, Y1 = ulx + x0 * RES, ulx + x1 * RES, uly - y1 * RES, uly - y0 * RES
            features.append({"type": "Feature", "properties": {"object": k},
                             "geometry": {"type": "Polygon", "coordinates": [[[X0, Y0], [X1, Y0], [X1, Y1], [X0, Y1], [X0, Y0]]]}})
    json.dump({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
               "features": features}, open(path, "w"))


def pyramid_cases(args, predictor, work):
    """Objects answered on levels 1 and 2 of a pyramid store against the official predictor."""
    import torch
    import torch.nn.functional as F
    w = h = 2600
    pixels = scene(w, h, 5)
    png, tif = os.path.join(work, "pyramid.png"), os.path.join(work, "pyramid.tif")
    Image.fromarray(pixels).save(png)
    ulx, uly = ORIGIN
    run(["gdal_translate", "-q", "-a_srs", "EPSG:32633", "-a_ullr", str(ulx), str(uly), str(ulx + w * RES), str(uly - h * RES), png, tif])
    store = os.path.join(work, "pyramid.geosam2")
    run([args.binary, "encode", tif, "--model", args.checkpoint, "--precision", "fp32", "--stretch", "none", "--levels", "2", "--out", store, "--quiet"])
    manifest = json.load(open(os.path.join(store, "manifest.json")))
    tiles = {t["id"]: t for level in manifest.get("levels", []) for t in level["tiles"]}
    tiles.update({t["id"]: t for t in manifest["tiles"]})
    # Boxes larger than a level-0 tile (level 1) and than a level-1 tile (level 2), a box across a
    # level-0 seam, a box with a point, and clicks, which climb while their masks reach tile edges.
    objects = [
        {"points": [], "box": (400.0, 380.0, 1620.0, 1550.0), "level": 1},
        {"points": [], "box": (150.0, 160.0, 2440.0, 2420.0), "level": 2},
        # Level-0 tiles start at 0, 896 and 1576 (overlap 128): with its margin, no tile holds x 850…1100.
        {"points": [], "box": (850.0, 1800.0, 1100.0, 1950.0), "level": 1},
        {"points": [(1900.5, 900.5, 1)], "box": (1300.0, 400.0, 2500.0, 1700.0), "level": 1},
        {"points": [(700.5, 1900.5, 1)], "box": None, "level": None},
        {"points": [(2000.25, 2100.75, 1), (2060.5, 2150.5, 1)], "box": None, "level": None},
    ]
    prompts = os.path.join(work, "pyramid_prompts.geojson")
    write_prompts(prompts, objects, ulx, uly)
    out = os.path.join(work, "pyramid_objects.gpkg")
    run([args.binary, "segment", store, "--prompts", prompts, "--out", out, "--model", args.checkpoint, "--quiet"])
    dump = os.path.join(work, "pyramid_objects.geojson")
    run(["ogr2ogr", "-f", "GeoJSON", dump, out, "objects"])
    written = json.load(open(dump))["features"]

    # The official decoder's logits before `predict` clamps them to ±32 (the masks come from these).
    captured = {}
    original = predictor._transforms.postprocess_masks
    def capture(masks, orig_hw):
        captured["logits"] = masks.detach().clone()
        return original(masks, orig_hw)
    predictor._transforms.postprocess_masks = capture

    passed = failed = 0
    levels_seen = set()
    try:
        for k, o in enumerate(objects):
            mine = [f for f in written if f["properties"]["object_id"] == k + 1]
            if not mine:
                print(f"pyramid object {k}: FAIL (no polygons written)")
                failed += 1
                continue
            props = mine[0]["properties"]
            level, tile = props["level"], tiles[props["tile"]]
            levels_seen.add(level)
            factor = 2 ** level
            tx, ty, tw, th = tile["window"]
            image_png = os.path.join(work, f"pyramid_tile_{k}.png")
            run([args.binary, "tile-image", store, props["tile"], "--out", image_png])
            predictor.set_image(np.array(Image.open(image_png).convert("RGB")))
            kw = {}
            if o["points"]:
                kw["point_coords"] = np.array([[px / factor - tx - 0.5, py / factor - ty - 0.5] for px, py, _ in o["points"]], np.float32)
                kw["point_labels"] = np.array([l for _, _, l in o["points"]])
            if o["box"]:
                x0, y0, x1, y1 = o["box"]
                kw["box"] = np.array([x0 / factor - tx - 0.5, y0 / factor - ty - 0.5, x1 / factor - tx - 0.5, y1 / factor - ty - 0.5],
                                     np.float32)
            _, scores, _ = predictor.predict(multimask_output=False, **kw)
            side = 1024 * factor
            up = F.interpolate(captured["logits"][:, :1].float(), size=(side, side), mode="bilinear", align_corners=False)[0, 0]
            nx, ny = tx * factor, ty * factor
            nw, nh = min(tw * factor, w - nx), min(th * factor, h - ny)
            official = (up[:nh, :nw] > 0).numpy()
            raster = os.path.join(work, f"pyramid_{k}.tif")
            gx, gy = ulx + nx * RES, uly - ny * RES
            run(["gdal_rasterize", "-q", "-burn", "1", "-where", f"object_id={k + 1}", "-l", "objects", "-ot", "Byte",
                 "-te", str(gx), str(gy - nh * RES), str(gx + nw * RES), str(gy), "-ts", str(nw), str(nh), out, raster])
            ours = np.array(Image.open(raster)) > 0
            union = np.logical_or(ours, official).sum()
            iou = np.logical_and(ours, official).sum() / union if union else 1.0
            level_ok = o["level"] is None or o["level"] == level
            ok = iou >= args.min_iou and abs(props["score"] - float(scores[0])) <= 1e-3 and level_ok
            print(f"pyramid object {k} level {level} tile {props['tile']} (tiles {props['tiles']}, clipped {props['clipped']}): "
                  f"IoU {iou:.5f}, score {props['score']:.4f} vs {float(scores[0]):.4f}, {official.sum()} px"
                  f"{'' if level_ok else ', expected level ' + str(o['level'])}: {'PASS' if ok else 'FAIL'}")
            passed += ok
            failed += not ok
    finally:
        predictor._transforms.postprocess_masks = original
    for level in (1, 2):
        if level not in levels_seen:
            print(f"pyramid: no object was answered at level {level}: FAIL")
            failed += 1
    return passed, failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--preset", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--min-iou", type=float, default=0.999)
    args = ap.parse_args()

    import torch
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor
    torch.set_grad_enabled(False)
    predictor = SAM2ImagePredictor(build_sam2(CONFIGS[args.preset], args.checkpoint, device="cpu"))

    passed = failed = 0
    work = tempfile.mkdtemp(prefix="geosam2-segment-parity-")
    atexit.register(shutil.rmtree, work, True)  # its rasters and stores: some 250 MB a run
    p, f = pyramid_cases(args, predictor, work)
    passed, failed = passed + p, failed + f
    for name, (w, h), seed in [("single", (900, 700), 1), ("multi", (1800, 1300), 2)]:
        pixels = scene(w, h, seed)
        png, tif = os.path.join(work, f"{name}.png"), os.path.join(work, f"{name}.tif")
        Image.fromarray(pixels).save(png)
        ulx, uly = ORIGIN
        run(["gdal_translate", "-q", "-a_srs", "EPSG:32633", "-a_ullr", str(ulx), str(uly), str(ulx + w * RES), str(uly - h * RES), png, tif])
        store = os.path.join(work, f"{name}.geosam2")
        run([args.binary, "encode", tif, "--model", args.checkpoint, "--precision", "fp32", "--stretch", "none", "--levels", "0", "--out", store, "--quiet"])
        manifest = json.load(open(os.path.join(store, "manifest.json")))

        # Objects: points at pixel centres and in between, foreground and background, a box, a box
        # with a point; on the multi-tile raster also near tile edges.
        rng = np.random.default_rng(seed + 10)
        objects = []
        for i in range(5):
            cx, cy = rng.uniform(60, w - 60), rng.uniform(60, h - 60)
            pts = [(cx, cy, 1)]
            if i % 2 == 1:
                pts.append((cx + rng.uniform(-40, 40), cy + rng.uniform(-40, 40), 0))
            box = (cx - 50, cy - 40, cx + 60, cy + 45) if i >= 3 else None
            objects.append({"points": pts if i != 3 else [], "box": box})
        features = []
        for k, o in enumerate(objects):
            for (px, py, label) in o["points"]:
                X, Y = ulx + px * RES, uly - py * RES
                features.append({"type": "Feature", "properties": {"object": k, "label": label},
                                 "geometry": {"type": "Point", "coordinates": [X, Y]}})
            if o["box"]:
                x0, y0, x1, y1 = o["box"]
                X0, X1, Y0, Y1 = ulx + x0 * RES, ulx + x1 * RES, uly - y1 * RES, uly - y0 * RES
                features.append({"type": "Feature", "properties": {"object": k},
                                 "geometry": {"type": "Polygon", "coordinates": [[[X0, Y0], [X1, Y0], [X1, Y1], [X0, Y1], [X0, Y0]]]}})
        prompts = os.path.join(work, f"{name}_prompts.geojson")
        json.dump({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
                   "features": features}, open(prompts, "w"))
        out = os.path.join(work, f"{name}_objects.gpkg")
        run([args.binary, "segment", store, "--prompts", prompts, "--out", out, "--model", args.checkpoint, "--quiet"])
        dump = os.path.join(work, f"{name}_objects.geojson")
        run(["ogr2ogr", "-f", "GeoJSON", dump, out, "objects"])
        written = json.load(open(dump))["features"]

        for k, o in enumerate(objects):
            mine = [f for f in written if f["properties"]["object_id"] == k + 1]
            if not mine:
                print(f"{name} object {k}: FAIL (no polygons written)")
                failed += 1
                continue
            tile_id = mine[0]["properties"]["tile"]
            tile = next(t for t in manifest["tiles"] if t["id"] == tile_id)
            tx, ty, tw, th = tile["window"]
            # The official predictor on the same tile image (padded to 1024 with zeros).
            image = np.zeros((1024, 1024, 3), np.uint8)
            image[:th, :tw] = pixels[ty:ty + th, tx:tx + tw]
            predictor.set_image(image)
            kw = {}
            if o["points"]:
                # Map → continuous pixel position p (pixel edges at integers) → SAM2's x = p − 0.5,
                # so that the centre of pixel (c, r) is (c, r), exactly as `geosam2 segment` does.
                kw["point_coords"] = np.array([[px - tx - 0.5, py - ty - 0.5] for px, py, _ in o["points"]], np.float32)
                kw["point_labels"] = np.array([l for _, _, l in o["points"]])
            if o["box"]:
                x0, y0, x1, y1 = o["box"]
                kw["box"] = np.array([x0 - tx - 0.5, y0 - ty - 0.5, x1 - tx - 0.5, y1 - ty - 0.5], np.float32)
            masks, scores, _ = predictor.predict(multimask_output=False, **kw)
            official = masks[0][:th, :tw] > 0
            # Our polygons rasterized on the tile grid.
            raster = os.path.join(work, f"{name}_{k}.tif")
            gt = tile["geoTransform"]
            run(["gdal_rasterize", "-q", "-burn", "1", "-where", f"object_id={k + 1}", "-l", "objects", "-ot", "Byte",
                 "-te", str(gt[0]), str(gt[3] + th * gt[5]), str(gt[0] + tw * gt[1]), str(gt[3]), "-ts", str(tw), str(th), out, raster])
            ours = np.array(Image.open(raster)) > 0
            union = np.logical_or(ours, official).sum()
            iou = np.logical_and(ours, official).sum() / union if union else 1.0
            ok = iou >= args.min_iou and abs(mine[0]["properties"]["score"] - float(scores[0])) <= 1e-3
            print(f"{name} object {k} tile {tile_id}: IoU {iou:.5f}, score {mine[0]['properties']['score']:.4f} vs {float(scores[0]):.4f}, "
                  f"{len(mine)} polygons, {official.sum()} px: {'PASS' if ok else 'FAIL'}")
            passed += ok
            failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
