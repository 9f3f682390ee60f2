"""The canvas side: one map tool for foreground, background and box prompts, with Geo-SAM2's keys."""
from __future__ import annotations

from qgis.core import QgsPointXY, QgsRectangle, QgsWkbTypes
from qgis.gui import QgsMapTool, QgsRubberBand
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QColor

FOREGROUND, BACKGROUND, BOX = "foreground", "background", "box"
MODES = (FOREGROUND, BACKGROUND, BOX)


class PromptTool(QgsMapTool):
    """Left click adds a point of the current kind (or drags a box in box mode), right click saves;
    moving the mouse previews when preview is on. Keys (while the tool is active): Z undo the
    last prompt, C clear, S save, Ctrl+Z undo the last save, Tab cycle foreground → background →
    box, P toggle preview."""

    def __init__(self, canvas, controller):
        super().__init__(canvas)
        self.controller = controller
        self.mode = FOREGROUND
        self.box_start = None
        self.box_band = QgsRubberBand(canvas, QgsWkbTypes.GeometryType.PolygonGeometry)
        self.box_band.setColor(QColor(255, 200, 0, 200))
        self.box_band.setFillColor(QColor(255, 200, 0, 40))
        self.box_band.setWidth(2)

    def set_mode(self, mode: str):
        self.mode = mode
        self.controller.mode_changed(mode)

    def cycle_mode(self):
        self.set_mode(MODES[(MODES.index(self.mode) + 1) % len(MODES)])

    # --- mouse ------------------------------------------------------------------------------

    def canvasPressEvent(self, event):  # noqa: N802 (Qt's name)
        if event.button() == Qt.MouseButton.RightButton:
            self.controller.save()
            return
        if event.button() != Qt.MouseButton.LeftButton:
            return
        point = event.mapPoint()
        if self.mode == BOX:
            self.box_start = QgsPointXY(point)
            self.box_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        else:
            self.controller.add_point(point, 1 if self.mode == FOREGROUND else 0)

    def canvasMoveEvent(self, event):  # noqa: N802
        point = event.mapPoint()
        if self.box_start is not None:
            rectangle = QgsRectangle(self.box_start, point)
            self.box_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
            for corner in (QgsPointXY(rectangle.xMinimum(), rectangle.yMinimum()), QgsPointXY(rectangle.xMaximum(), rectangle.yMinimum()),
                           QgsPointXY(rectangle.xMaximum(), rectangle.yMaximum()), QgsPointXY(rectangle.xMinimum(), rectangle.yMaximum())):
                self.box_band.addPoint(corner, False)
            self.box_band.closePoints(True)
            self.controller.preview_box(rectangle)
        else:
            self.controller.hover(point, 1 if self.mode != BACKGROUND else 0)

    def canvasReleaseEvent(self, event):  # noqa: N802
        if self.box_start is None or event.button() != Qt.MouseButton.LeftButton:
            return
        rectangle = QgsRectangle(self.box_start, event.mapPoint())
        self.box_start = None
        self.box_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        if rectangle.width() > 0 and rectangle.height() > 0:
            self.controller.set_box(rectangle)

    # --- keys -------------------------------------------------------------------------------

    def keyPressEvent(self, event):  # noqa: N802
        key, modifiers = event.key(), event.modifiers()
        control = bool(modifiers & Qt.KeyboardModifier.ControlModifier)
        if key == Qt.Key.Key_Z and control:
            self.controller.undo_save()
        elif key == Qt.Key.Key_Z:
            self.controller.undo_prompt()
        elif key == Qt.Key.Key_C:
            self.controller.clear()
        elif key == Qt.Key.Key_S:
            self.controller.save()
        elif key == Qt.Key.Key_Tab:
            self.cycle_mode()
        elif key == Qt.Key.Key_P:
            self.controller.toggle_preview()
        else:
            event.ignore()
            return
        event.accept()

    def deactivate(self):
        self.box_start = None
        self.box_band.reset(QgsWkbTypes.GeometryType.PolygonGeometry)
        self.controller.tool_deactivated()
        super().deactivate()
