#!/usr/bin/env python3
"""Browser test of `geosam2 serve` in headless Chromium (Debian `chromium` + `chromium-driver`,
driven by Selenium).

Builds a small scene with `geosam2 sample`, encodes it with the micro SAM2 of the unit-test
fixture, serves it on a free loopback port, and in the page: waits for the map, adds a foreground
point and sees a mask drawn, saves it and checks that the GeoPackage holds the polygon with its
attributes (ogrinfo), tries right click, undo, box, preview, the tile grid and undo-save, and keeps
screenshots under --artifacts.

    tools/browser/ui_test.py [--binary .build/debug/geosam2] [--artifacts .build/artifacts]

Prints one line per check and a closing "N passed, M failed"; exits non-zero on any failure.
Needs: pip install selenium; scripts/setup --browser.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MICRO = os.path.join(ROOT, "Tests/SAM2Tests/Fixtures/tiny/micro")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default=os.path.join(ROOT, ".build/debug/geosam2"))
    p.add_argument("--artifacts", default=os.path.join(ROOT, ".build/artifacts"))
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    p.add_argument("--chromedriver", default=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    return p.parse_args()


class Server:
    """`geosam2 serve` on a free port; the URL is read from its first line of output."""

    def __init__(self, binary, store, out):
        self.process = subprocess.Popen(
            [binary, "serve", store, "--port", "0", "--out", out, "--quiet",
             "--model", os.path.join(MICRO, "model.pt"), "--config", os.path.join(MICRO, "config.json")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError("serve did not print its URL: %r %s" % (line, self.process.stderr.read()))
        self.url = line

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def ogr_features(path):
    """Features of the GeoPackage's `objects` layer, via ogrinfo (GDAL's own reader)."""
    if not os.path.exists(path):
        return []
    out = subprocess.run(["ogrinfo", "-ro", "-al", "-q", path], check=True, capture_output=True, text=True).stdout
    features = []
    for block in re.split(r"\n(?=\s*OGRFeature\()", out):
        if "OGRFeature(" not in block:
            continue
        attributes = dict(re.findall(r"^\s+(\w+) \(\w+\) = (.*)$", block, re.M))
        attributes["_geometry"] = "POLYGON" in block or "MULTIPOLYGON" in block
        features.append(attributes)
    return features


class UITest:
    def __init__(self, args):
        self.args = args
        self.passed = 0
        self.failed = 0

    def check(self, name, condition, detail=""):
        if condition:
            self.passed += 1
            print("PASS %s" % name)
        else:
            self.failed += 1
            print("FAIL %s %s" % (name, detail))
        sys.stdout.flush()
        return condition

    def wait(self, script, timeout=30, interval=0.2):
        """Polls a JavaScript expression until it is truthy; returns its last value."""
        deadline = time.time() + timeout
        value = None
        while time.time() < deadline:
            value = self.driver.execute_script("return " + script)
            if value:
                return value
            time.sleep(interval)
        return value

    def state(self, key):
        return self.driver.execute_script("return window.geosam2.state[arguments[0]]", key)

    def click_map(self, fx, fy, button="left", shift=False):
        """Clicks the map at a fraction of its size."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        element = self.driver.find_element("id", "map")
        size = element.size
        dx, dy = int(size["width"] * (fx - 0.5)), int(size["height"] * (fy - 0.5))
        actions = ActionChains(self.driver).move_to_element_with_offset(element, dx, dy)
        if button == "right":
            actions.context_click()
        else:
            actions.click()
        actions.perform()

    def key(self, *keys):
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        names = {"ctrl": Keys.CONTROL, "tab": Keys.TAB, "shift": Keys.SHIFT}
        actions = ActionChains(self.driver)
        mods = [names[k] for k in keys[:-1]]
        for m in mods:
            actions.key_down(m)
        last = names.get(keys[-1], keys[-1])
        actions.send_keys(last)
        for m in reversed(mods):
            actions.key_up(m)
        actions.perform()

    def screenshot(self, name):
        os.makedirs(self.args.artifacts, exist_ok=True)
        path = os.path.join(self.args.artifacts, name)
        self.driver.save_screenshot(path)
        print("  screenshot: %s" % path)
        return path

    def run(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        work = tempfile.mkdtemp(prefix="geosam2-ui-")
        server = None
        try:
            raster = os.path.join(work, "scene.tif")
            store = os.path.join(work, "scene.geosam2")
            out = os.path.join(work, "objects.gpkg")
            subprocess.run([self.args.binary, "sample", raster, "--width", "1800", "--height", "900"], check=True, capture_output=True)
            subprocess.run([self.args.binary, "encode", raster, "--out", store, "--quiet",
                            "--model", os.path.join(MICRO, "model.pt"), "--config", os.path.join(MICRO, "config.json")],
                           check=True, capture_output=True)
            server = Server(self.args.binary, store, out)
            print("server: %s" % server.url)

            options = Options()
            options.binary_location = self.args.chromium
            for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,900"]:
                options.add_argument(flag)
            options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            self.driver = webdriver.Chrome(service=Service(self.args.chromedriver), options=options)
            try:
                self.scenario(server.url, out)
                server.stop()
                # A raster never encoded: served at once, encoded while the page is open.
                big = os.path.join(work, "big.tif")
                subprocess.run([self.args.binary, "sample", big, "--width", "3000", "--height", "2000"], check=True, capture_output=True)
                server = Server(self.args.binary, big, os.path.join(work, "big_objects.gpkg"))
                print("server (raster, encoded on demand): %s" % server.url)
                self.on_demand_scenario(server.url)
            finally:
                try:
                    errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                              and "Failed to load resource" not in e["message"]]
                    self.check("no JavaScript errors", not errors, json.dumps(errors)[:500])
                except Exception as error:  # get_log is a Chromium extension
                    print("  (browser log unavailable: %s)" % error)
                self.driver.quit()
        except Exception:
            self.failed += 1
            print("FAIL scenario aborted")
            traceback.print_exc()
        finally:
            if server:
                server.stop()
            if self.args.keep:
                print("kept %s" % work)
            else:
                shutil.rmtree(work, ignore_errors=True)
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 0 if self.failed == 0 and self.passed > 0 else 1

    def scenario(self, url, out):
        d = self.driver
        d.get(url)
        self.check("page title", d.title == "GeoSAM2", d.title)
        self.check("map ready", self.wait("window.geosam2 && window.geosam2.state.ready"))
        self.check("Leaflet loaded", d.execute_script("return typeof L !== 'undefined' && !!L.version"))
        tiles = self.wait("document.querySelectorAll('img.leaflet-tile-loaded').length")
        self.check("raster tiles shown", (tiles or 0) > 0, "tiles=%s" % tiles)
        self.check("status line", "Objects: 0" in d.find_element("id", "status").text, d.find_element("id", "status").text)

        # A foreground point: a mask appears.
        self.click_map(0.3, 0.4)
        self.check("left click adds a foreground point", self.wait("window.geosam2.state.points.length === 1"))
        mask = self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length")
        self.check("mask drawn after a foreground point", (mask or 0) > 0, "features=%s" % mask)
        self.check("mask on the map", self.wait("window.geosam2.layers.mask.getLayers().length > 0"))
        latency = d.find_element("id", "status-latency").text
        self.check("latency in the status line", re.search(r"\d+ ms", latency) is not None, latency)

        # Right click: a background point; Z removes it.
        self.click_map(0.35, 0.45, button="right")
        self.check("right click adds a background point",
                   self.wait("window.geosam2.state.points.filter(p => p.label === 0).length === 1"))
        self.key("z")
        self.check("Z undoes the last prompt", self.wait("window.geosam2.state.points.length === 1"))
        self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length")
        self.screenshot("ui-mask.png")

        # S saves: the GeoPackage holds the polygon with its attributes and the class label.
        d.execute_script("document.getElementById('class-label').value = 'building'")
        self.key("s")
        self.check("S saves the object", self.wait("window.geosam2.state.objects === 1"))
        self.check("prompts cleared after saving", self.wait("window.geosam2.state.points.length === 0"))
        features = ogr_features(out)
        self.check("GeoPackage holds the object's polygons", len(features) > 0 and all(f["_geometry"] for f in features),
                   "features=%d" % len(features))
        if features:
            f = features[0]
            expected = {"object_id": "1", "n_fg": "1", "n_bg": "0", "has_box": "0", "class": "building"}
            self.check("attributes written", all(f.get(k) == v for k, v in expected.items())
                       and float(f.get("score", "nan")) > 0 and float(f.get("area", "0")) > 0 and f.get("tile", "").startswith("r"),
                       json.dumps(f)[:400])
        self.check("saved polygons on the map", self.wait("window.geosam2.layers.objects.getLayers().length > 0"))

        # Tab cycles the modes; a drag in box mode draws a box.
        self.key("tab")
        self.check("Tab: background mode", self.state("mode") == "bg")
        self.key("tab")
        self.check("Tab: box mode", self.state("mode") == "box")
        from selenium.webdriver.common.action_chains import ActionChains
        element = d.find_element("id", "map")
        w, h = element.size["width"], element.size["height"]
        ActionChains(d).move_to_element_with_offset(element, int(w * 0.1), int(h * 0.05)).click_and_hold() \
            .move_by_offset(40, 30).move_by_offset(40, 30).release().perform()
        self.check("drag in box mode sets a box", self.wait("window.geosam2.state.box !== null"))
        mask = self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features !== undefined")
        self.check("box gives a mask answer", bool(mask))
        self.key("c")
        self.check("C clears the prompts", self.wait("window.geosam2.state.box === null && !window.geosam2.state.mask"))
        self.key("tab")
        self.check("Tab: back to foreground", self.state("mode") == "fg")

        # Preview: the mask follows the mouse.
        self.key("p")
        self.check("P turns preview on", self.state("preview") is True)
        before = self.state("requests")
        ActionChains(d).move_to_element_with_offset(element, -int(w * 0.2), 0).move_by_offset(15, 10).move_by_offset(15, 10).perform()
        self.check("preview requests follow the mouse", self.wait("window.geosam2.state.requests > %d" % before))
        self.check("preview mask drawn", self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length > 0"))
        self.key("p")

        # Patch boundaries.
        d.find_element("id", "show-grid").click()
        self.check("patch boundaries shown", self.wait("window.geosam2.map.hasLayer(window.geosam2.layers.grid) && window.geosam2.layers.grid.getLayers().length === 2"))

        # A second object, then Ctrl+Z removes it from the file.
        self.click_map(0.7, 0.6)
        self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length")
        self.key("s")
        self.check("second object saved", self.wait("window.geosam2.state.objects === 2"))
        self.click_map(0.55, 0.3)
        self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length")
        time.sleep(0.5)
        self.screenshot("ui.png")
        self.key("ctrl", "z")
        self.check("Ctrl+Z undoes the last save", self.wait("window.geosam2.state.objects === 1"))
        ids = {f.get("object_id") for f in ogr_features(out)}
        self.check("undone object removed from the GeoPackage", ids == {"1"}, str(ids))

        # Export links download real files.
        d.execute_script("window.__export = null; fetch('/api/export.geojson').then(r => r.json()).then(j => window.__export = j)")
        exported = self.wait("window.__export")
        self.check("GeoJSON export", bool(exported) and exported.get("type") == "FeatureCollection"
                   and len(exported.get("features", [])) > 0, str(exported)[:200])

        # Segment everything in view: a job on the tiles in view, its objects shown as a layer of
        # their own, then saved all at once (thresholds off: random micro weights).
        d.execute_script("document.getElementById('generate-points').value = 4;"
                         "document.getElementById('generate-iou').value = 0;"
                         "document.getElementById('generate-stability').value = 0;")
        saved_before = self.state("objects")
        d.find_element("id", "generate").click()
        self.check("segment everything starts a job", self.wait("window.geosam2.state.generate && window.geosam2.state.generate.id > 0"))
        done = self.wait("window.geosam2.state.generate.status !== 'running' && window.geosam2.state.generated", timeout=300)
        self.check("segment everything in view finishes", bool(done), str(self.state("generate"))[:300])
        shown = self.wait("window.geosam2.layers.generated.getLayers().length")
        self.check("the objects found are shown as a layer", (shown or 0) > 0, "layers=%s" % shown)
        status = d.find_element("id", "generate-status").text
        self.check("the panel says what was found", status.startswith("Found "), status)
        self.check("no cancel button once done", not d.find_element("id", "generate-cancel").is_displayed())
        self.screenshot("ui-generate.png")
        found = (self.state("generate") or {}).get("objects", 0)
        d.find_element("id", "generate-save").click()
        self.check("save all adds the objects found", self.wait("window.geosam2.state.objects === %d" % (saved_before + found)),
                   "objects=%s, expected %d" % (self.state("objects"), saved_before + found))
        self.check("the layer of found objects is cleared after saving", self.wait("window.geosam2.layers.generated.getLayers().length === 0"))
        stabilities = [f.get("stability") for f in ogr_features(out)]
        self.check("saved found objects carry their stability", any(v not in (None, "(null)") for v in stabilities), str(stabilities)[:200])

        # After a reload the saved object is still there (read back from the file).
        d.refresh()
        self.wait("window.geosam2 && window.geosam2.state.ready")
        self.check("saved objects shown after reload", self.wait("window.geosam2.state.objects === %d" % (saved_before + found)))

    def on_demand_scenario(self, url):
        d = self.driver
        d.get(url)
        self.check("raster page ready at once", self.wait("window.geosam2 && window.geosam2.state.ready"))
        self.check("the page knows the store is encoded on demand",
                   self.wait("window.geosam2.state.encoding && window.geosam2.state.encoding.on_demand === true"))
        text = d.find_element("id", "status-encoding").text
        self.check("the status line shows the encoding", text.startswith("Encoding:") or text.startswith("Encoded: all"), text)
        d.find_element("id", "show-grid").click()
        colours = self.wait("(() => { const c = new Set(); window.geosam2.layers.grid.eachLayer(l => c.add(l.options.color));"
                            " return c.size ? [...c] : null; })()")
        self.check("the grid is drawn with tile states", bool(colours), str(colours))
        # Pan a little: the view goes to the server (moveend), then a click far from the centre.
        d.execute_script("window.geosam2.map.panBy([200, 100], {animate: false}); window.geosam2.map.panBy([-200, -100], {animate: false})")
        self.click_map(0.85, 0.85)
        mask = self.wait("window.geosam2.state.mask && window.geosam2.state.mask.features.length", timeout=120)
        self.check("a click on a tile not encoded yet is answered", (mask or 0) > 0, "features=%s" % mask)
        self.screenshot("ui-on-demand.png")
        done = self.wait("document.getElementById('status-encoding').textContent.startsWith('Encoded: all')", timeout=300)
        self.check("the status line reports every tile encoded", bool(done), d.find_element("id", "status-encoding").text)
        white = self.wait("(() => { let all = true; window.geosam2.layers.grid.eachLayer(l => { all = all && l.options.color === '#ffffff'; });"
                          " return all; })()")
        self.check("the grid shows every tile done", bool(white))


if __name__ == "__main__":
    sys.exit(UITest(parse_args()).run())
