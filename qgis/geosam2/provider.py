"""Processing: “GeoSAM2: Encode raster”, running `geosam2 encode` with its JSON progress."""
from __future__ import annotations

import json
import os
import selectors
import subprocess

from qgis.core import (
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingProvider,
)
from qgis.PyQt.QtGui import QIcon

from .engine import EngineError, find_engine

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")
STRETCHES = ["percentile", "minmax", "none"]


class GeoSAM2Provider(QgsProcessingProvider):
    def id(self):
        return "geosam2"

    def name(self):
        return "GeoSAM2"

    def icon(self):
        return QIcon(ICON)

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(EncodeRasterAlgorithm())


class EncodeRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT, BANDS, STRETCH, SCALE, OVERLAP, MODEL, CONFIG, OUTPUT = "INPUT", "BANDS", "STRETCH", "SCALE", "OVERLAP", "MODEL", "CONFIG", "OUTPUT"

    def name(self):
        return "encode"

    def displayName(self):  # noqa: N802
        return "GeoSAM2: Encode raster"

    def shortHelpString(self):  # noqa: N802
        return ("Runs the SAM2 image encoder once over a raster, tile by tile, into a feature store (a folder) "
                "that the GeoSAM2 dock segments from. Cancelling keeps the finished tiles: run it again with the "
                "same parameters and it resumes.")

    def createInstance(self):  # noqa: N802
        return EncodeRasterAlgorithm()

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Raster"))
        self.addParameter(QgsProcessingParameterString(self.BANDS, "Bands as R,G,B (1-based; empty: by colour interpretation)",
                                                       optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.STRETCH, "Stretch", options=STRETCHES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber(self.SCALE, "Resolution factor (0.5 = half resolution)",
                                                       type=QgsProcessingParameterNumber.Type.Double, defaultValue=1.0,
                                                       minValue=0.05, maxValue=8.0))
        # -1: the engine's choice (128 px for a new store, a resumed store's own), so that
        # running the algorithm again on an older store resumes it instead of refusing its grid.
        self.addParameter(QgsProcessingParameterNumber(self.OVERLAP, "Tile overlap (pixels; -1: 128 for a new store, a resumed store's own)",
                                                       type=QgsProcessingParameterNumber.Type.Integer, defaultValue=-1,
                                                       minValue=-1, maxValue=512))
        self.addParameter(QgsProcessingParameterString(self.MODEL, "Model: a checkpoint file or a preset (tiny, small, base_plus, large)",
                                                       defaultValue="tiny"))
        self.addParameter(QgsProcessingParameterFile(self.CONFIG, "Architecture JSON (custom checkpoints only)", optional=True,
                                                     extension="json"))
        self.addParameter(QgsProcessingParameterFolderDestination(self.OUTPUT, "Feature store"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        try:
            binary, _ = find_engine()
        except EngineError as error:
            raise QgsProcessingException(str(error)) from None
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException("no raster layer")
        source = layer.source().split("|")[0]
        output = self.parameterAsString(parameters, self.OUTPUT, context)
        arguments = [binary, "encode", source, "--out", output, "--progress", "json",
                     "--stretch", STRETCHES[self.parameterAsEnum(parameters, self.STRETCH, context)],
                     "--scale", repr(self.parameterAsDouble(parameters, self.SCALE, context)),
                     "--model", self.parameterAsString(parameters, self.MODEL, context) or "tiny"]
        overlap = self.parameterAsInt(parameters, self.OVERLAP, context)
        if overlap >= 0:
            arguments += ["--overlap", str(overlap)]
        bands = (self.parameterAsString(parameters, self.BANDS, context) or "").strip()
        if bands:
            arguments += ["--bands", bands]
        config = self.parameterAsFile(parameters, self.CONFIG, context)
        if config:
            arguments += ["--config", config]
        feedback.pushCommandInfo(" ".join(arguments))
        process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        canceled = False
        while True:
            if feedback.isCanceled():
                canceled = True
                process.terminate()
                break
            if not selector.select(timeout=0.25):
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("total"):
                feedback.setProgress(100.0 * event.get("done", 0) / event["total"])
            if event.get("event") == "progress" and event.get("tile"):
                eta = event.get("eta_s")
                feedback.pushInfo(f"tile {event['tile']}: {event['done']}/{event['total']}"
                                  + (f", about {eta:.0f} s left" if isinstance(eta, (int, float)) else ""))
        process.wait()
        stderr = process.stderr.read().strip()
        if canceled:
            raise QgsProcessingException("encoding cancelled; the finished tiles are kept: run it again to resume")
        if process.returncode != 0:
            last = stderr.splitlines()[-1] if stderr else f"exit status {process.returncode}"
            raise QgsProcessingException(last.removeprefix("Error: "))
        return {self.OUTPUT: output}
