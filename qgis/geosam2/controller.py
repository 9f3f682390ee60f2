"""The segmenting session in QGIS: prompts in the canvas CRS → the engine → rubber bands, saves
to the engine's GeoPackage (shown as a layer), undo, patch boundaries."""
from __future__ import annotations

import json
import os

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsFields,
    QgsFillSymbol,
    QgsJsonUtils,
    QgsPointXY,
    QgsProject,
    QgsSettings,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.gui import QgsRubberBand, QgsVertexMarker
from qgis.PyQt.QtCore import QObject, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QColor

from .api import ApiClient, LatestWins

SETTINGS_CLASSES = "geosam2/recent_classes"
OUTPUT_LAYER_NAME = "GeoSAM2 objects"
PATCH_LAYER_NAME = "GeoSAM2 patches"
GENERATED_LAYER_NAME = "GeoSAM2 everything in view"


def geometries_of(collection) -> list:
    """QgsGeometry of every feature of a GeoJSON FeatureCollection (holes and multipolygons kept)."""
    features = [{"type": "Feature", "properties": {}, "geometry": f.get("geometry")}
                for f in (collection or {}).get("features", []) if f.get("geometry")]
    if not features:
        return []
    text = json.dumps({"type": "FeatureCollection", "features": features})
    parsed = QgsJsonUtils.stringToFeatureList(text, QgsFields())
    return [f.geometry() for f in parsed if f.hasGeometry() and not f.geometry().isEmpty()]


class SegmentController(QObject):
    """One user's prompts on one engine. Every request is asynchronous; answers are drawn in the
    canvas CRS from the store's."""

    status = pyqtSignal(str)           # the status line
    error = pyqtSignal(str)            # a one-line error for the message bar
    answered = pyqtSignal(object)      # the last drawn answer (a dict), for the dock and tests
    saved = pyqtSignal(int)            # an object id
    undone = pyqtSignal(int)
    candidates = pyqtSignal(list)      # multimask scores
    mode = pyqtSignal(str)             # the prompt tool's mode
    generated = pyqtSignal(int)        # objects found by "segment everything in view", once shown

    def __init__(self, canvas, parent=None):
        super().__init__(parent)
        self.canvas = canvas
        self.client = None
        self.preview = None
        self.store = None
        self.store_crs = None
        self.output_path = None
        self.points = []               # [(QgsPointXY in canvas CRS, label)]
        self.box = None                # QgsRectangle in canvas CRS
        self.markers = []
        self.preview_enabled = False
        self.options = {"min_area": 0, "largest_only": False, "simplify": 0, "fill_holes": False, "regularize": False, "multimask": False}
        self.candidate = None
        self.class_label = ""
        self.last_answer = None
        self.band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.band.setColor(QColor(0, 160, 255, 230))
        self.band.setFillColor(QColor(0, 160, 255, 70))
        self.band.setWidth(2)
        self.patch_layer_id = None
        self.output_layer_id = None
        self.encoding = None           # the last /api/encoding report, while the engine fills its store
        self.encoding_timer = QTimer(self)
        self.encoding_timer.setInterval(1500)
        self.encoding_timer.timeout.connect(self._poll_encoding)
        self.view_timer = QTimer(self)
        self.view_timer.setSingleShot(True)
        self.view_timer.setInterval(400)
        self.view_timer.timeout.connect(self._send_view)
        canvas.extentsChanged.connect(self.view_timer.start)
        self.generate_job = None       # the last /api/generate report
        self.generated_layer_id = None
        self.generate_timer = QTimer(self)
        self.generate_timer.setSingleShot(True)
        self.generate_timer.setInterval(1000)
        self.generate_timer.timeout.connect(self._poll_generate)

    # --- connecting -------------------------------------------------------------------------

    def attach(self, url: str, output_path: str | None = None, on_ready=None):
        """Talk to the engine at `url`; `output_path` is its GeoPackage when known (the plugin
        started it), else the saved objects are mirrored from `GET /api/objects`."""
        self.detach()
        self.client = ApiClient(url, self)
        self.preview = LatestWins(self.client, self._draw, parent=self)
        self.output_path = output_path

        def stored(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            self.store = answer.data
            crs = QgsCoordinateReferenceSystem(f"EPSG:{self.store['epsg']}") if self.store.get("epsg") else QgsCoordinateReferenceSystem.fromWkt(self.store.get("crs") or "")
            self.store_crs = crs
            self.status.emit(f"engine at {url}: {self.store['tiles_done']}/{self.store['tiles']} tiles encoded, {self.store.get('crs_name') or 'pixel coordinates'}")
            if not self.store.get("complete"):
                # The engine may be filling its store while serving: follow it (its first report
                # sends it the view).
                self._poll_encoding()
                self.encoding_timer.start()
            if on_ready:
                on_ready()

        self.client.request("GET", "/api/store", callback=stored)

    # --- encoding while serving --------------------------------------------------------------

    def _poll_encoding(self):
        if not self.client:
            self.encoding_timer.stop()
            return

        def report(answer):
            if not answer.ok or not isinstance(answer.data, dict):
                return  # a busy engine: the next tick asks again
            first = self.encoding is None
            r = self.encoding = answer.data
            if first:
                self._send_view()
            if not r.get("on_demand") or r.get("complete") or r.get("idle"):
                self.encoding_timer.stop()
            if r.get("on_demand"):
                self.status.emit(encoding_text(r))

        self.client.request("GET", "/api/encoding", callback=report)

    def _send_view(self):
        if not self.client or not self.encoding or not self.encoding.get("on_demand") or self.encoding.get("complete"):
            return
        e = self.canvas.extent()
        crs = self.canvas_crs()
        if not crs or e.isEmpty():
            return
        self.client.request("PUT", "/api/view", {"bbox": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()], "crs": crs},
                            callback=lambda answer: None)

    def detach(self):
        self.encoding_timer.stop()
        self.generate_timer.stop()
        self.generate_job = None
        self.encoding = None
        if self.preview:
            self.preview.invalidate()
        if self.client:
            self.client.abort_all()
        self.client = None
        self.preview = None
        self.store = None
        self.clear()

    @property
    def connected(self) -> bool:
        return self.client is not None and self.store is not None

    # --- prompts ----------------------------------------------------------------------------

    def canvas_crs(self) -> str:
        crs = self.canvas.mapSettings().destinationCrs()
        return crs.authid() or crs.toWkt()

    def body(self, extra_point=None, box=None) -> dict:
        points = [[p.x(), p.y(), label] for p, label in self.points]
        if extra_point is not None:
            points.append([extra_point[0].x(), extra_point[0].y(), extra_point[1]])
        box = box or self.box
        body = {"points": points, "crs": self.canvas_crs(), **self.options}
        if box is not None:
            body["box"] = [box.xMinimum(), box.yMinimum(), box.xMaximum(), box.yMaximum()]
        if self.options.get("multimask") and self.candidate is not None:
            body["candidate"] = self.candidate
        if not self.options.get("multimask"):
            body.pop("multimask", None)
        return body

    def has_prompts(self) -> bool:
        return bool(self.points) or self.box is not None

    def add_point(self, point, label: int):
        self.points.append((QgsPointXY(point), label))
        marker = QgsVertexMarker(self.canvas)
        marker.setCenter(QgsPointXY(point))
        marker.setIconType(QgsVertexMarker.IconType.ICON_CIRCLE if label == 1 else QgsVertexMarker.IconType.ICON_X)
        marker.setColor(QColor(40, 200, 40) if label == 1 else QColor(230, 40, 40))
        marker.setIconSize(12)
        marker.setPenWidth(3)
        self.markers.append(marker)
        self.candidate = None
        self._segment()

    def set_box(self, rectangle):
        self.box = rectangle
        self.candidate = None
        self._segment()

    def hover(self, point, label: int):
        if self.preview_enabled and self.connected:
            self.preview.ask(self.body(extra_point=(QgsPointXY(point), label)))

    def preview_box(self, rectangle):
        if self.preview_enabled and self.connected:
            self.preview.ask(self.body(box=rectangle))

    def toggle_preview(self):
        self.preview_enabled = not self.preview_enabled
        if not self.preview_enabled and self.preview:
            self.preview.invalidate()
            self._redraw_current()
        self.status.emit(f"preview {'on' if self.preview_enabled else 'off'}")

    def undo_prompt(self):
        if self.points:
            self.points.pop()
            self.canvas.scene().removeItem(self.markers.pop())
        elif self.box is not None:
            self.box = None
        self._redraw_current()

    def clear(self):
        self.points = []
        self.box = None
        for marker in self.markers:
            self.canvas.scene().removeItem(marker)
        self.markers = []
        self.candidate = None
        self.last_answer = None
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        if self.preview:
            self.preview.invalidate()

    def choose_candidate(self, index):
        self.candidate = index
        self._segment()

    def set_options(self, **options):
        self.options.update(options)
        if self.has_prompts():
            self._segment()

    def _redraw_current(self):
        if self.has_prompts():
            self._segment()
        else:
            self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
            self.last_answer = None

    def _segment(self):
        if not self.connected:
            self.error.emit("GeoSAM2: no engine yet; start one on a store or attach to a running one")
            return
        # A new prompt: whatever the preview had in flight is out of date.
        self.preview.invalidate()
        self.preview.ask(self.body())

    def _draw(self, answer):
        if not answer.ok:
            self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
            self.error.emit(answer.error)
            return
        self.last_answer = answer.data
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        for geometry in geometries_of(answer.data):
            self.band.addGeometry(geometry, self.store_crs)
        scores = answer.data.get("candidate_scores") or []
        if len(scores) > 1:
            self.candidates.emit(scores)
        if self.encoding and self.encoding.get("idle") and not self.encoding_timer.isActive():
            self.encoding_timer.start()  # the prompt may have retried a failed tile
        level = answer.data.get("level", 0)
        clipped = ", may be cut by the raster's coarsest tile" if answer.data.get("clipped") else ""
        self.status.emit(f"score {answer.data.get('score', 0):.3f}, tile {answer.data.get('tile')} (level {level}{clipped}), "
                         f"{answer.data.get('server_ms', 0):.0f} ms in the engine")
        self.answered.emit(answer.data)

    # --- saving -----------------------------------------------------------------------------

    def save(self):
        if not self.connected:
            self.error.emit("GeoSAM2: no engine to save to")
            return
        if not self.has_prompts():
            self.status.emit("nothing to save: add a point or a box first")
            return
        body = self.body()
        if self.class_label:
            body["class"] = self.class_label
        self.preview.invalidate()

        def done(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            object_id = answer.data.get("object_id")
            self._remember_class(self.class_label)
            self.clear()
            self.refresh_output()
            self.status.emit(f"saved object {object_id}")
            self.saved.emit(object_id)

        self.client.request("POST", "/api/objects", body, done)

    def undo_save(self):
        if not self.connected:
            return

        def done(answer):
            if answer.status == 404:
                self.status.emit("no saved object to undo")
                return
            if not answer.ok:
                self.error.emit(answer.error)
                return
            self.refresh_output()
            self.status.emit(f"removed object {answer.data.get('deleted')}")
            self.undone.emit(answer.data.get("deleted"))

        self.client.request("DELETE", "/api/objects/last", callback=done)

    def _remember_class(self, label):
        if not label:
            return
        settings = QgsSettings()
        recent = [c for c in (settings.value(SETTINGS_CLASSES, [], type=list) or []) if c != label]
        settings.setValue(SETTINGS_CLASSES, ([label] + recent)[:20])

    @staticmethod
    def recent_classes() -> list:
        return QgsSettings().value(SETTINGS_CLASSES, [], type=list) or []

    # --- layers -----------------------------------------------------------------------------

    def output_layer(self):
        layer = QgsProject.instance().mapLayer(self.output_layer_id) if self.output_layer_id else None
        return layer

    def refresh_output(self):
        """Adds the saved objects to the project (once) and reloads them."""
        layer = self.output_layer()
        if self.output_path and os.path.exists(self.output_path):
            if layer is None:
                layer = QgsVectorLayer(f"{self.output_path}|layername=objects", OUTPUT_LAYER_NAME, "ogr")
                if not layer.isValid():
                    self.error.emit(f"GeoSAM2: cannot open {self.output_path}")
                    return
                layer.setRenderer(layer.renderer().clone())
                symbol = QgsFillSymbol.createSimple({"color": "255,140,0,70", "outline_color": "255,110,0,255", "outline_width": "0.6"})
                layer.renderer().setSymbol(symbol)
                QgsProject.instance().addMapLayer(layer)
                self.output_layer_id = layer.id()
            else:
                layer.dataProvider().reloadData()
                layer.triggerRepaint()
            return
        # Attached to an engine whose file is not ours to open: mirror its objects.
        self.client.request("GET", "/api/objects", callback=self._mirror)

    def _mirror(self, answer):
        if not answer.ok:
            self.error.emit(answer.error)
            return
        text = json.dumps(answer.data)
        fields = QgsJsonUtils.stringToFields(text)
        layer = self.output_layer()
        if layer is None:
            layer = QgsVectorLayer("MultiPolygon", OUTPUT_LAYER_NAME, "memory")
            layer.setCrs(self.store_crs)
            layer.dataProvider().addAttributes(fields.toList())
            layer.updateFields()
            QgsProject.instance().addMapLayer(layer)
            self.output_layer_id = layer.id()
        provider = layer.dataProvider()
        provider.truncate()
        provider.addFeatures(QgsJsonUtils.stringToFeatureList(text, layer.fields()))
        layer.updateExtents()
        layer.triggerRepaint()

    def show_patches(self, visible: bool):
        project = QgsProject.instance()
        if self.patch_layer_id and project.mapLayer(self.patch_layer_id):
            project.removeMapLayer(self.patch_layer_id)
        self.patch_layer_id = None
        if not visible or not self.connected:
            return

        def tiles(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            # Fields declared in the URI: no QVariant/QMetaType type names (they differ on Qt6).
            layer = QgsVectorLayer("Polygon?field=id:string&field=state:string&field=level:integer", PATCH_LAYER_NAME, "memory")
            layer.setCrs(self.store_crs)
            provider = layer.dataProvider()
            features = []
            for item in answer.data.get("features", []):
                # The encoding grid is level 0; coarser pyramid levels overlap it everywhere and
                # would bury it, so they are left out (as in the web UI).
                if item.get("properties", {}).get("level", 0) != 0:
                    continue
                feature = QgsFeature(layer.fields())
                geometries = geometries_of({"features": [item]})
                if geometries:
                    feature.setGeometry(geometries[0])
                properties = item.get("properties", {})
                feature.setAttributes([properties.get("id"), properties.get("state"), properties.get("level", 0)])
                features.append(feature)
            provider.addFeatures(features)
            symbol = QgsFillSymbol.createSimple({"color": "0,0,0,0", "outline_color": "220,0,220,200", "outline_width": "0.4",
                                                 "outline_style": "dash"})
            layer.renderer().setSymbol(symbol)
            project.addMapLayer(layer)
            self.patch_layer_id = layer.id()

        self.client.request("GET", "/api/tiles", callback=tiles)

    # --- segment everything in view -------------------------------------------------------

    def generate_in_view(self, points_per_side=32, pred_iou_thresh=0.8, stability_score_thresh=0.95):
        """SAM2's automatic masks on the engine's tiles in the canvas extent (`POST /api/generate`),
        merged across tiles; the objects found become a layer of their own (save them with
        `save_generated`)."""
        if not self.connected:
            self.error.emit("GeoSAM2: no engine to segment with")
            return
        e = self.canvas.extent()
        body = {"bbox": [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()], "crs": self.canvas_crs(),
                "points_per_side": int(points_per_side), "pred_iou_thresh": float(pred_iou_thresh),
                "stability_score_thresh": float(stability_score_thresh)}
        for key in ("min_area", "simplify", "fill_holes", "regularize"):
            if self.options.get(key):
                body[key] = self.options[key]

        def started(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            self.generate_job = answer.data
            self.status.emit(f"segmenting everything in view: 0/{answer.data.get('total')} tiles")
            self.generate_timer.start()

        self.client.request("POST", "/api/generate", body, started)

    def _poll_generate(self):
        job = self.generate_job
        if not self.client or not job:
            return

        def report(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            r = self.generate_job = answer.data
            if r.get("status") == "running":
                eta = f", ETA {round(r['eta_s'])} s" if r.get("eta_s") is not None else ""
                self.status.emit(f"segmenting everything in view: {r.get('done')}/{r.get('total')} tiles{eta}")
                self.generate_timer.start()
            elif r.get("status") == "done":
                self.client.request("GET", r["objects_url"], callback=self._show_generated)
            else:
                self.error.emit(f"GeoSAM2: segment everything {r.get('status')}: {r.get('error', '')}")

        self.client.request("GET", job["url"], callback=report)

    def _show_generated(self, answer):
        if not answer.ok:
            self.error.emit(answer.error)
            return
        text = json.dumps(answer.data)
        project = QgsProject.instance()
        if self.generated_layer_id and project.mapLayer(self.generated_layer_id):
            project.removeMapLayer(self.generated_layer_id)
        layer = QgsVectorLayer("MultiPolygon", GENERATED_LAYER_NAME, "memory")
        layer.setCrs(self.store_crs)
        layer.dataProvider().addAttributes(QgsJsonUtils.stringToFields(text).toList())
        layer.updateFields()
        layer.dataProvider().addFeatures(QgsJsonUtils.stringToFeatureList(text, layer.fields()))
        layer.updateExtents()
        symbol = QgsFillSymbol.createSimple({"color": "199,125,255,50", "outline_color": "160,80,230,230", "outline_width": "0.4"})
        layer.renderer().setSymbol(symbol)
        project.addMapLayer(layer)
        self.generated_layer_id = layer.id()
        count = answer.data.get("objects", 0)
        self.status.emit(f"found {count} object{'s' if count != 1 else ''} in view (layer “{GENERATED_LAYER_NAME}”; Save all found to keep them)")
        self.generated.emit(count)

    def generated_layer(self):
        return QgsProject.instance().mapLayer(self.generated_layer_id) if self.generated_layer_id else None

    def save_generated(self):
        """Saves every object found in view to the engine's output, as new objects."""
        job = self.generate_job
        if not self.connected or not job or job.get("status") != "done":
            self.status.emit("nothing found to save: segment everything in view first")
            return

        def done(answer):
            if not answer.ok:
                self.error.emit(answer.error)
                return
            saved = answer.data.get("saved", [])
            if self.generated_layer():
                QgsProject.instance().removeMapLayer(self.generated_layer_id)
            self.generated_layer_id = None
            self.refresh_output()
            self.status.emit(f"saved {len(saved)} object{'s' if len(saved) != 1 else ''} found in view")

        self.client.request("POST", job["url"] + "/save", {}, done)

    def tool_deactivated(self):
        if self.preview:
            self.preview.invalidate()

    def mode_changed(self, mode):
        self.mode.emit(mode)
        self.status.emit(f"{mode} prompts")

    def unload(self):
        self.view_timer.stop()
        self.generate_timer.stop()
        try:
            self.canvas.extentsChanged.disconnect(self.view_timer.start)
        except (TypeError, RuntimeError):
            pass
        self.detach()
        self.band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        self.canvas.scene().removeItem(self.band)


def encoding_text(report):
    """One status line for an `/api/encoding` report."""
    if report.get("complete"):
        return f"encoded: all {report['tiles']} tiles"
    text = f"encoding while you work: {report['finished']}/{report['tiles']} tiles"
    current = report.get("current")
    if current:
        text += f", tile {current['tile']}" + (" for your prompt" if current.get("reason") == "prompt" else "")
        if current.get("progress") is not None:
            text += f" {round(current['progress'] * 100)} %"
    failed = len(report.get("failed") or {})
    if failed:
        text += f", {failed} failed"
    return text
