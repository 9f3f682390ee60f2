#!/usr/bin/env python3
"""Objects of 300, 1500 and 3000 px on `geosam2 sample`: one box or one click each gives one object.

    python3 tools/pyramid/sample_objects.py --binary .build/release/geosam2 --checkpoint MODEL.pt

A 4000×3600 sample scene (a lake about 300 px across, a forest about 1500 px, a field complex
3000 px wide) is encoded with the default pyramid. A box on each object's nominal extent must come
back as one object from the level the routing owes it (lake 0, forest 1, field complex 2), not
clipped; a click inside each must come back as one object (any level: with random weights the
masks do not follow the objects), and no prompt may fail. Prints one line per prompt and closes
with `N passed, M failed`; exit status 1 on any failure.
"""
import argparse, atexit, json, os, shutil, subprocess, sys, tempfile

EXPECTED_BOX_LEVEL = {"lake": 0, "forest": 1, "field complex": 2}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", help="architecture JSON for a checkpoint that is not a preset")
    args = ap.parse_args()
    model = ["--model", args.checkpoint] + (["--config", args.config] if args.config else [])

    work = tempfile.mkdtemp(prefix="geosam2-pyramid-")
    atexit.register(shutil.rmtree, work, True)  # its rasters and stores: some 250 MB a run
    raster = os.path.join(work, "sample.tif")
    out = run([args.binary, "sample", raster, "--width", "4000", "--height", "3600", "--landmarks"])
    landmarks = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [l["name"] for l in landmarks] == ["lake", "forest", "field complex"], landmarks
    store = os.path.join(work, "sample.geosam2")
    run([args.binary, "encode", raster] + model + ["--out", store, "--quiet"])
    manifest = json.load(open(os.path.join(store, "manifest.json")))
    print(f"store: level 0 {len(manifest['tiles'])} tiles, " +
          ", ".join(f"level {l['level']} {len(l['tiles'])}" for l in manifest.get("levels", [])))

    # 1 m pixels from (410000, 5810000), EPSG:32633.
    ox, oy = 410000.0, 5810000.0
    features, prompts = [], []
    for l in landmarks:
        x0, y0, x1, y1 = l["box"]
        k = len(prompts)
        features.append({"type": "Feature", "properties": {"object": k}, "geometry": {"type": "Polygon", "coordinates": [[
            [ox + x0, oy - y1], [ox + x1, oy - y1], [ox + x1, oy - y0], [ox + x0, oy - y0], [ox + x0, oy - y1]]]}})
        prompts.append((l["name"], "box"))
        cx, cy = l["inside"]
        features.append({"type": "Feature", "properties": {"object": k + 1, "label": 1},
                         "geometry": {"type": "Point", "coordinates": [ox + cx + 0.5, oy - cy - 0.5]}})
        prompts.append((l["name"], "click"))
    prompt_file = os.path.join(work, "prompts.geojson")
    json.dump({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
               "features": features}, open(prompt_file, "w"))
    objects = os.path.join(work, "objects.gpkg")
    run([args.binary, "segment", store, "--prompts", prompt_file, "--out", objects, "--quiet"] + model)
    dump = os.path.join(work, "objects.geojson")
    run(["ogr2ogr", "-f", "GeoJSON", dump, objects, "objects"])
    written = json.load(open(dump))["features"]

    passed = failed = 0
    for k, (name, kind) in enumerate(prompts):
        mine = [f["properties"] for f in written if f["properties"]["object_id"] == k + 1]
        ids = {p["object_id"] for p in mine}
        if not mine or len(ids) != 1 or len({(p["level"], p["tile"]) for p in mine}) != 1:
            print(f"{name} {kind}: FAIL (expected one object, got {len(ids)})")
            failed += 1
            continue
        p = mine[0]
        ok = True
        if kind == "box":
            ok = p["level"] == EXPECTED_BOX_LEVEL[name] and p["clipped"] == 0
        print(f"{name} {kind}: level {p['level']}, tile {p['tile']}, tiles {p['tiles']}, clipped {p['clipped']}, "
              f"{len(mine)} polygons{'' if ok else ', expected level ' + str(EXPECTED_BOX_LEVEL[name]) + ' unclipped'}: "
              f"{'PASS' if ok else 'FAIL'}")
        passed += ok
        failed += not ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
