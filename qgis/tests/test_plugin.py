"""The plugin end to end: a real `geosam2 serve` started by the plugin, a canvas in EPSG:3857 over
a UTM store, mouse and key events through the plugin's map tool."""
import json
import subprocess
import urllib.request

import pytest
from conftest import ARTIFACTS, MICRO, wait_until
from qgis.core import (
    QgsVectorLayer,
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.gui import QgsMapMouseEvent
from qgis.PyQt.QtCore import QEvent, QPoint, Qt
from qgis.PyQt.QtGui import QKeyEvent

WEB_MERCATOR = QgsCoordinateReferenceSystem("EPSG:3857")


def show_scene(iface, raster):
    """The raster on a canvas in Web Mercator (the store is UTM 33N)."""
    canvas = iface.mapCanvas()
    # The canvas takes its widget size into its map settings on a resize event.
    wait_until(lambda: canvas.mapSettings().outputSize().width() > 400, timeout=10, what="the canvas size")
    layer = QgsRasterLayer(str(raster), "scene")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    canvas.setDestinationCrs(WEB_MERCATOR)
    canvas.setLayers([layer])
    to_canvas = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance())
    canvas.setExtent(to_canvas.transformBoundingBox(layer.extent()))
    QgsApplication.processEvents()
    canvas.refresh()
    canvas.waitWhileRendering()
    return canvas, layer


def pixel(canvas, layer, fx, fy):
    """The canvas pixel of the point at fractions (fx, fy) of the raster's extent (y down)."""
    e = layer.extent()
    point = QgsPointXY(e.xMinimum() + fx * e.width(), e.yMaximum() - fy * e.height())
    point = QgsCoordinateTransform(layer.crs(), WEB_MERCATOR, QgsProject.instance()).transform(point)
    p = canvas.getCoordinateTransform().transform(point)
    return p.x(), p.y()


def mouse(canvas, kind, x, y, button=Qt.MouseButton.LeftButton):
    buttons = button if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
    return QgsMapMouseEvent(canvas, kind, QPoint(int(x), int(y)), button if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton,
                            buttons, Qt.KeyboardModifier.NoModifier)


def key(code, modifiers=Qt.KeyboardModifier.NoModifier):
    return QKeyEvent(QEvent.Type.KeyPress, code, modifiers)


def start(plugin, store):
    plugin.start_engine(str(store))
    wait_until(lambda: plugin.controller.connected, what="the engine to start")
    plugin.dock.enable.setChecked(True)
    assert plugin.canvas.mapTool() is plugin.tool
    return plugin.controller


def api(controller, path, body):
    request = urllib.request.Request(controller.client.base_url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def union_in(collection, source, target):
    from geosam2.controller import geometries_of

    transform = QgsCoordinateTransform(source, target, QgsProject.instance())
    parts = []
    for geometry in geometries_of(collection):
        geometry = QgsGeometry(geometry)
        geometry.transform(transform)
        parts.append(geometry)
    return QgsGeometry.unaryUnion(parts)


def iou(a, b):
    return a.intersection(b).area() / a.combine(b).area()


def messages(iface):
    return [str(call.args[1]) if len(call.args) > 1 else str(call.kwargs) for call in iface.messageBar().pushMessage.call_args_list]


def test_a_click_draws_the_mask_the_api_gives(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    statuses = []
    controller.status.connect(statuses.append)
    x, y = pixel(canvas, layer, 0.4, 0.45)
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, x, y))
    wait_until(lambda: controller.last_answer is not None and controller.preview.idle(), what="the mask")
    drawn = controller.band.asGeometry()
    assert not drawn.isEmpty()
    # The status line names the pyramid level that answered.
    assert f"(level {controller.last_answer['level']}" in statuses[-1], statuses

    point = controller.points[0][0]
    answer = api(controller, "/api/segment", {"points": [[point.x(), point.y(), 1]], "crs": "EPSG:3857"})
    expected = union_in(answer, controller.store_crs, WEB_MERCATOR)
    assert iou(drawn, expected) >= 0.99
    # The request went in the canvas CRS and came back in the store's.
    assert controller.store_crs.authid() == "EPSG:32633"

    # A background click and a box refine it; the markers follow the prompts.
    plugin.tool.set_mode("background")
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, x + 40, y + 10))
    wait_until(lambda: controller.preview.idle(), what="the refined mask")
    assert [label for _, label in controller.points] == [1, 0]
    assert len(controller.markers) == 2
    assert controller.band.numberOfVertices() > 0, messages(iface)
    for marker in controller.markers:
        marker.updatePosition()
    canvas.refresh()
    canvas.waitWhileRendering()
    for _ in range(20):
        QgsApplication.processEvents()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    assert canvas.grab().save(str(ARTIFACTS / "qgis-canvas.png"), "PNG")
    # The window with the dock beside the canvas (the mocked iface does not place docks itself).
    window = iface.mainWindow()
    window.setCentralWidget(canvas)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, plugin.dock)
    plugin.dock.show()
    window.resize(1280, 720)
    window.resizeDocks([plugin.dock], [400], Qt.Orientation.Horizontal)
    for _ in range(20):
        QgsApplication.processEvents()
    assert window.grab().save(str(ARTIFACTS / "qgis-window.png"), "PNG")


def test_save_with_a_class_and_undo(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    plugin.dock.class_label.setEditText("building")
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, *pixel(canvas, layer, 0.6, 0.5)))
    wait_until(lambda: controller.preview.idle() and controller.last_answer is not None, what="the mask")
    saved = []
    controller.saved.connect(saved.append)
    plugin.tool.keyPressEvent(key(Qt.Key.Key_S))
    wait_until(lambda: saved, what="the save")
    layer = controller.output_layer()
    assert layer is not None and layer.isValid()
    features = list(layer.getFeatures())
    assert features and {f["object_id"] for f in features} == {saved[0]}
    assert all(f["class"] == "building" for f in features)
    for name in ("score", "area", "tile", "model", "prompts"):
        assert name in layer.fields().names()
    assert not controller.has_prompts(), "a save starts a new object"
    assert "building" in controller.recent_classes()

    undone = []
    controller.undone.connect(undone.append)
    plugin.tool.keyPressEvent(key(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier))
    wait_until(lambda: undone, what="the undo")
    assert undone == saved
    assert layer.featureCount() == 0 or not list(layer.getFeatures())


def test_quick_previews_leave_only_the_last_answer(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    plugin.tool.keyPressEvent(key(Qt.Key.Key_P))
    assert controller.preview_enabled
    moves = [pixel(canvas, layer, 0.2 + 0.02 * i, 0.3 + 0.01 * i) for i in range(30)]
    for x, y in moves:
        plugin.tool.canvasMoveEvent(mouse(canvas, QEvent.Type.MouseMove, x, y))
        QgsApplication.processEvents()
    wait_until(lambda: controller.preview.idle(), what="the previews to settle")
    preview = controller.preview
    assert 1 <= preview.sent < len(moves), f"{preview.sent} requests for {len(moves)} moves: not coalesced"
    assert preview.drawn >= 1
    # What is drawn is the answer for the last position (the prompts it was made from say so).
    last = canvas.getCoordinateTransform().toMapCoordinates(int(moves[-1][0]), int(moves[-1][1]))
    to_store = QgsCoordinateTransform(WEB_MERCATOR, controller.store_crs, QgsProject.instance())
    expected = to_store.transform(QgsPointXY(last))
    prompts = json.loads(controller.last_answer["features"][0]["properties"]["prompts"])
    drawn_point = prompts["points"][-1]
    assert abs(drawn_point["x"] - expected.x()) < 0.01 and abs(drawn_point["y"] - expected.y()) < 0.01
    # Tab cycles the tool; Z and C edit the prompts.
    plugin.tool.keyPressEvent(key(Qt.Key.Key_Tab))
    assert plugin.tool.mode == "background"
    plugin.tool.keyPressEvent(key(Qt.Key.Key_Tab))
    plugin.tool.keyPressEvent(key(Qt.Key.Key_Tab))
    assert plugin.tool.mode == "foreground"


def test_encode_algorithm_reports_progress_cancels_and_resumes(qgis_app, plugin, scene, tmp_path, binary):
    import processing

    raster, _ = scene
    out = tmp_path / "encoded.geosam2"
    parameters = {"INPUT": str(raster), "MODEL": str(MICRO / "model.pt"), "CONFIG": str(MICRO / "config.json"),
                  "STRETCH": 0, "SCALE": 1.0, "OVERLAP": 0, "OUTPUT": str(out)}

    # Cancelled after the first tile: an error, the finished tiles stay.
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(lambda value: feedback.cancel() if value > 0 else None)
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run("geosam2:encode", parameters, feedback=feedback)

    values = []
    feedback = QgsProcessingFeedback()
    feedback.progressChanged.connect(values.append)
    result = processing.run("geosam2:encode", parameters, feedback=feedback)
    assert result["OUTPUT"] == str(out)
    assert values and values == sorted(values) and values[-1] == 100
    verified = subprocess.run([binary, "verify", str(out)], capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout

    # Run again with the overlap left at its default (the engine's choice): the store made with
    # no overlap resumes instead of being refused for another tile grid.
    again = {k: v for k, v in parameters.items() if k != "OVERLAP"}
    assert processing.run("geosam2:encode", again)["OUTPUT"] == str(out)
    assert json.loads((out / "manifest.json").read_text())["encoding"]["overlap"] == 0


def test_a_missing_engine_is_a_message_not_a_traceback(iface, plugin, scene):
    _, store = scene
    QgsSettings().setValue("geosam2/binary", "/nonexistent/geosam2")
    plugin.start_engine(str(store))
    assert any("does not exist" in m for m in messages(iface)), messages(iface)
    assert not plugin.controller.connected


def test_a_dead_engine_is_a_message_not_a_traceback(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    plugin.engine.process.kill()
    wait_until(lambda: any("stopped" in m for m in messages(iface)), what="the message about the engine")
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, *pixel(canvas, layer, 0.5, 0.5)))
    wait_until(lambda: any("does not answer" in m for m in messages(iface)), what="the message about the request")


def test_the_zip_holds_one_loadable_plugin(iface, tmp_path):
    import importlib.util
    import zipfile

    from conftest import ROOT

    built = subprocess.run([str(ROOT / "scripts/package-qgis"), "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    archive = zipfile.ZipFile(built.stdout.strip())
    assert {name.split("/")[0] for name in archive.namelist()} == {"geosam2"}
    assert "geosam2/metadata.txt" in archive.namelist() and "geosam2/LICENSE" in archive.namelist()
    assert not [n for n in archive.namelist() if "__pycache__" in n or n.endswith((".pyc", "geosam2/geosam2"))]
    archive.extractall(tmp_path / "plugins")
    spec = importlib.util.spec_from_file_location("geosam2_from_zip", tmp_path / "plugins/geosam2/__init__.py",
                                                  submodule_search_locations=[str(tmp_path / "plugins/geosam2")])
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module  # for the package's relative imports
    spec.loader.exec_module(module)
    loaded = module.classFactory(iface)
    loaded.initGui()
    loaded.unload()


def test_multimask_candidates_and_patch_boundaries(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    scores = []
    controller.candidates.connect(scores.append)
    plugin.dock.multimask.setChecked(True)
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, *pixel(canvas, layer, 0.3, 0.3)))
    wait_until(lambda: controller.preview.idle() and controller.last_answer is not None, what="the multimask answer")
    assert scores and len(scores[-1]) == 3
    assert plugin.dock.candidates.count() == 3 and plugin.dock.candidates.isEnabled()
    controller.choose_candidate(2)
    wait_until(lambda: controller.preview.idle() and controller.last_answer.get("candidate") == 2, what="candidate 2")

    plugin.dock.patches.setChecked(True)
    wait_until(lambda: controller.patch_layer_id and QgsProject.instance().mapLayer(controller.patch_layer_id), what="the patch layer")
    patches = QgsProject.instance().mapLayer(controller.patch_layer_id)
    assert patches.featureCount() == controller.store["tiles"] >= 2
    assert {f["state"] for f in patches.getFeatures()} == {"done"}
    assert {f["level"] for f in patches.getFeatures()} == {0}
    plugin.dock.patches.setChecked(False)
    assert controller.patch_layer_id is None


def test_start_on_a_raster_layer_answers_at_once_and_fills_the_store(iface, plugin, scene, tmp_path):
    import shutil

    raster, _ = scene
    fresh = tmp_path / "fresh.tif"
    shutil.copy(raster, fresh)  # no store beside it
    canvas, layer = show_scene(iface, fresh)
    statuses = []
    plugin.controller.status.connect(statuses.append)
    plugin.start_on_raster(layer, model=str(MICRO / "model.pt"), config=str(MICRO / "config.json"))
    wait_until(lambda: plugin.controller.connected, what="the engine on the raster")
    controller = plugin.controller
    assert controller.store["complete"] is False
    assert plugin.dock.store.filePath() == str(tmp_path / "fresh.geosam2")
    plugin.dock.enable.setChecked(True)
    plugin.tool.canvasPressEvent(mouse(canvas, QEvent.Type.MouseButtonPress, *pixel(canvas, layer, 0.8, 0.8)))
    wait_until(lambda: controller.last_answer is not None and controller.preview.idle(), timeout=300, what="the first answer")
    assert controller.last_answer["features"]
    wait_until(lambda: controller.encoding and controller.encoding.get("complete"), timeout=300, what="the store to fill")
    assert any(s.startswith("encoding while you work") for s in statuses), statuses
    assert any(s.startswith("encoded: all") for s in statuses), statuses[-3:]
    manifest = json.loads((tmp_path / "fresh.geosam2" / "manifest.json").read_text())
    assert manifest["complete"]
    plugin.stop_engine()


def test_start_on_raster_refuses_a_layer_that_is_not_a_raster_file(iface, plugin):
    errors = []
    plugin.show_error = errors.append
    plugin.start_on_raster(QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory"))
    assert errors and "raster layer" in errors[0]
    assert plugin.engine is None or not plugin.controller.connected


def test_segment_everything_in_view_shows_a_layer_and_saves_it(iface, plugin, scene):
    raster, store = scene
    canvas, layer = show_scene(iface, raster)
    controller = start(plugin, store)
    found = []
    controller.generated.connect(found.append)
    # Thresholds off: the micro model's random weights give low scores.
    plugin.dock.points_per_side.setValue(4)
    plugin.dock.iou_threshold.setValue(0)
    plugin.dock.stability_threshold.setValue(0)
    controller.generate_in_view(plugin.dock.points_per_side.value(), plugin.dock.iou_threshold.value(),
                                plugin.dock.stability_threshold.value())
    wait_until(lambda: found or any("segment everything" in m for m in messages(iface)), timeout=300, what="the objects found")
    assert found and found[0] > 0, messages(iface)
    generated = controller.generated_layer()
    assert generated is not None and generated.featureCount() > 0
    for name in ("generated_id", "score", "stability", "level", "tiles", "area_m2"):
        assert name in generated.fields().names()
    # Reprojected on the canvas: the layer lies inside the raster's extent.
    assert generated.crs().authid() == "EPSG:32633"
    assert layer.extent().buffered(1).contains(generated.extent())
    job = controller.generate_job
    controller.save_generated()
    wait_until(lambda: controller.generated_layer() is None, timeout=60, what="the save")
    output = controller.output_layer()
    assert output is not None
    output.dataProvider().reloadData()
    ids = {f["object_id"] for f in output.getFeatures()}
    assert len(ids) >= found[0], (ids, job)
    # The job's objects now carry the ids they were saved under.
    listed = json.loads(urllib.request.urlopen(controller.client.base_url + job["url"] + "/objects", timeout=60).read())
    assert all(f["properties"]["saved_as"] in ids for f in listed["features"])
