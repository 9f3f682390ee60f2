"""QGIS plugin tests: Debian's QGIS under /usr/bin/python3, offscreen, against the real engine.

GEOSAM2_BINARY names the engine; a small store (synthetic scene, the micro SAM2 of the Swift
fixtures) is encoded once per session.
"""
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "Tests/SAM2Tests/Fixtures/tiny/micro"
ARTIFACTS = Path(os.environ.get("GEOSAM2_ARTIFACTS", ROOT / ".build/artifacts"))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
runtime = Path(tempfile.gettempdir()) / f"geosam2-qgis-runtime-{os.getuid()}"
runtime.mkdir(mode=0o700, exist_ok=True)
os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
sys.path.insert(0, str(ROOT / "qgis"))
sys.path.insert(0, "/usr/share/qgis/python/plugins")


@pytest.fixture(scope="session")
def binary():
    path = os.environ.get("GEOSAM2_BINARY", str(ROOT / ".build/debug/geosam2"))
    assert os.access(path, os.X_OK), f"no engine at {path} (set GEOSAM2_BINARY)"
    return path


@pytest.fixture(scope="session")
def qgis_app():
    from qgis.testing import start_app

    app = start_app()
    from processing.core.Processing import Processing

    Processing.initialize()
    return app


@pytest.fixture(scope="session")
def scene(binary, tmp_path_factory):
    """A UTM raster of 1800×1200 px and its store (two tiles)."""
    directory = tmp_path_factory.mktemp("scene")
    raster = directory / "scene.tif"
    subprocess.run([binary, "sample", str(raster), "--width", "1800", "--height", "1200"], check=True, capture_output=True)
    store = directory / "scene.geosam2"
    subprocess.run([binary, "encode", str(raster), "--out", str(store), "--quiet",
                    "--model", str(MICRO / "model.pt"), "--config", str(MICRO / "config.json")], check=True)
    return raster, store


@pytest.fixture()
def iface(qgis_app):
    from qgis.core import QgsProject
    from qgis.testing.mocked import get_iface

    QgsProject.instance().clear()
    interface = get_iface()
    canvas = interface.mapCanvas()
    canvas.resize(800, 600)
    # The canvas lives in the main window: it is shown (and takes its size into its map
    # settings) only when the window is.
    interface.mainWindow().show()
    canvas.show()
    return interface


@pytest.fixture()
def plugin(iface, binary):
    from qgis.core import QgsSettings

    QgsSettings().setValue("geosam2/binary", binary)
    import geosam2

    instance = geosam2.classFactory(iface)
    instance.initGui()
    yield instance
    instance.unload()


def wait_until(condition, timeout=60.0, what="condition"):
    from qgis.core import QgsApplication

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QgsApplication.processEvents()
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
