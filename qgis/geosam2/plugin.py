"""The plugin object QGIS loads: toolbar and menu actions, the dock, the map tool, the
Processing provider, and the engine process it starts."""
from __future__ import annotations

import os

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from .controller import SegmentController
from .dock import SegmentDock
from .engine import EngineError, EngineProcess, find_engine
from .maptool import PromptTool
from .provider import GeoSAM2Provider

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")
MENU = "&GeoSAM2"


class GeoSAM2Plugin:
    def __init__(self, iface):
        self.iface = iface
        self.canvas = iface.mapCanvas()
        self.controller = None
        self.tool = None
        self.dock = None
        self.engine = None
        self.provider = None
        self.actions = []

    # --- QGIS life cycle --------------------------------------------------------------------

    def initProcessing(self):  # noqa: N802 (QGIS's name)
        self.provider = GeoSAM2Provider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self):  # noqa: N802
        self.initProcessing()
        self.controller = SegmentController(self.canvas)
        self.controller.error.connect(self.show_error)
        self.tool = PromptTool(self.canvas, self.controller)
        self.dock = SegmentDock(self)
        self.controller.mode.connect(self.dock.mode_changed)
        self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
        self.dock.hide()

        segment = QAction(QIcon(ICON), "GeoSAM2 segmentation", self.iface.mainWindow())
        segment.setCheckable(True)
        segment.toggled.connect(self.dock.setVisible)
        self.dock.visibilityChanged.connect(segment.setChecked)
        encode = QAction(QIcon(ICON), "GeoSAM2: Encode raster…", self.iface.mainWindow())
        encode.triggered.connect(self.open_encoder)
        for action in (segment, encode):
            self.iface.addPluginToRasterMenu(MENU, action)
            self.iface.addRasterToolBarIcon(action)
            self.actions.append(action)
        try:
            find_engine()
        except EngineError as error:
            self.show_error(str(error), level=Qgis.MessageLevel.Warning)

    def unload(self):
        self.stop_engine()
        if self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            self.iface.removeRasterToolBarIcon(action)
        self.actions = []
        if self.dock:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.controller:
            self.controller.unload()
        if self.provider:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # --- actions ----------------------------------------------------------------------------

    def show_error(self, text, level=None):
        level = Qgis.MessageLevel.Critical if level is None else level
        self.iface.messageBar().pushMessage("GeoSAM2", text, level=level, duration=10)

    def open_encoder(self):
        import processing

        processing.execAlgorithmDialog("geosam2:encode")

    def set_tool_enabled(self, enabled):
        if enabled:
            self.canvas.setMapTool(self.tool)
        elif self.canvas.mapTool() is self.tool:
            self.canvas.unsetMapTool(self.tool)

    def start_engine(self, store, model=None):
        """Starts `geosam2 serve STORE` on loopback (stopping the one before) and attaches."""
        if not store:
            self.show_error("choose a feature store (a folder made by “GeoSAM2: Encode raster”) first")
            return
        if self.dock.store.filePath() != store:
            self.dock.store.setFilePath(store)
        self._launch(store, model=model)

    def start_on_raster(self, layer=None, model=None, config=None):
        """Starts `geosam2 serve RASTER` on a raster layer's file: no encoding first; the engine
        fills the store beside the raster while the user works (the dock shows the progress)."""
        from qgis.core import QgsProviderRegistry, QgsRasterLayer

        layer = layer if layer is not None else self.iface.activeLayer()
        if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
            self.show_error("select a raster layer read from a file (GDAL) first")
            return
        parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
        path = parts.get("path") or ""
        if parts.get("layerName") or parts.get("openOptions") or not os.path.isfile(path):
            self.show_error(f"{layer.name()} is not read from a plain raster file; encode it with “GeoSAM2: Encode raster” first")
            return
        beside = os.path.join(os.path.dirname(path), os.path.splitext(os.path.basename(path))[0] + ".geosam2")
        if os.path.isfile(os.path.join(beside, "manifest.json")):
            # Its store exists: the engine serves it with the parameters and model it records.
            self.start_engine(beside)
            return
        self._launch(path, model=model or self.dock.model.text().strip() or None,
                     config=config or self.dock.config.filePath() or None, note=" (encoded while you work)")

    def _launch(self, target, model=None, config=None, note=""):
        """`geosam2 serve TARGET` (a store or a raster), attached once it listens, at the store it announces."""
        try:
            binary, _ = find_engine()
        except EngineError as error:
            self.show_error(str(error))
            return
        self.stop_engine()
        self.engine = EngineProcess(binary)
        self.engine.failed.connect(self.show_error)
        self.engine.ready.connect(lambda url: self._engine_ready(url, (self.engine.info or {}).get("store") or target))
        self.engine.start(target, model=model, config=config)
        self.dock.status_line.setText(f"starting the engine on {target}{note} …")

    def _engine_ready(self, url, store):
        output = (self.engine.info or {}).get("output") if self.engine else None
        if self.dock.store.filePath() != store:
            self.dock.store.setFilePath(store)
        self.dock.remember_store(store)
        self.dock.url.setText(url)
        self.controller.attach(url, output_path=output)

    def attach(self, url):
        if not url:
            self.show_error("give the address of a running engine, e.g. http://127.0.0.1:8080")
            return
        self.stop_engine()
        self.controller.attach(url)

    def stop_engine(self):
        if self.controller:
            self.controller.detach()
        if self.engine:
            self.engine.stop()
            self.engine.deleteLater()
            self.engine = None
