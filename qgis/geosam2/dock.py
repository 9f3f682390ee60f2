"""The GeoSAM2 dock on the right: engine, prompts, options — built in code (no .ui files)."""
from __future__ import annotations

import os

from qgis.core import QgsSettings
from qgis.gui import QgsDockWidget, QgsFileWidget
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .engine import SETTINGS_BINARY
from .maptool import BACKGROUND, BOX, FOREGROUND

SETTINGS_STORE = "geosam2/last_store"
SETTINGS_MODEL = "geosam2/model"


class SegmentDock(QgsDockWidget):
    """Geo-SAM2's panel: enable, the three prompt tools, preview, undo/clear/save/undo save, the
    polygon options, multimask candidates, class label, patch boundaries."""

    def __init__(self, plugin, parent=None):
        super().__init__("GeoSAM2", parent)
        self.setObjectName("GeoSAM2Dock")
        self.plugin = plugin
        self.controller = plugin.controller
        root = QWidget()
        layout = QVBoxLayout(root)

        # Engine
        engine = QGroupBox("Engine")
        form = QFormLayout(engine)
        self.binary = QgsFileWidget()
        self.binary.setFilePath(QgsSettings().value(SETTINGS_BINARY, "", type=str))
        self.binary.setToolTip("The geosam2 binary (empty: found on PATH, then beside the plugin)")
        self.binary.fileChanged.connect(lambda path: QgsSettings().setValue(SETTINGS_BINARY, path))
        form.addRow("geosam2 binary", self.binary)
        self.store = QgsFileWidget()
        self.store.setStorageMode(QgsFileWidget.StorageMode.GetDirectory)
        self.store.setFilePath(QgsSettings().value(SETTINGS_STORE, "", type=str))
        form.addRow("Feature store", self.store)
        start = QPushButton("Start engine on store")
        start.clicked.connect(lambda: self.plugin.start_engine(self.store.filePath()))
        form.addRow(start)
        self.model = QLineEdit(QgsSettings().value(SETTINGS_MODEL, "", type=str))
        self.model.setPlaceholderText("tiny")
        self.model.setToolTip("For a raster without a store: a checkpoint file or a preset (tiny, small, base_plus, large); empty: tiny")
        self.model.editingFinished.connect(lambda: QgsSettings().setValue(SETTINGS_MODEL, self.model.text().strip()))
        form.addRow("Model", self.model)
        self.config = QgsFileWidget()
        self.config.setFilter("JSON (*.json)")
        self.config.setToolTip("Architecture JSON, for a custom checkpoint only")
        form.addRow("Architecture JSON", self.config)
        on_raster = QPushButton("Start on the active raster layer (no encoding first)")
        on_raster.setToolTip("The engine opens at once and encodes while you work: the coarsest level first, "
                             "then the tiles in view, a clicked tile at once. Everything lands in a store beside the raster.")
        on_raster.clicked.connect(lambda: self.plugin.start_on_raster())
        form.addRow(on_raster)
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://127.0.0.1:8080")
        attach = QPushButton("Attach")
        attach.clicked.connect(lambda: self.plugin.attach(self.url.text().strip()))
        row = QHBoxLayout()
        row.addWidget(self.url)
        row.addWidget(attach)
        form.addRow("Running engine", row)
        layout.addWidget(engine)

        # Prompts
        prompts = QGroupBox("Prompts")
        grid = QVBoxLayout(prompts)
        self.enable = QCheckBox("Enable segmentation (map tool)")
        self.enable.toggled.connect(self.plugin.set_tool_enabled)
        grid.addWidget(self.enable)
        tools = QHBoxLayout()
        self.mode_group = QButtonGroup(self)
        self.mode_buttons = {}
        for mode, label in ((FOREGROUND, "Foreground"), (BACKGROUND, "Background"), (BOX, "Box")):
            button = QPushButton(label)
            button.setCheckable(True)
            button.clicked.connect(lambda _checked, m=mode: self.plugin.tool.set_mode(m))
            self.mode_group.addButton(button)
            self.mode_buttons[mode] = button
            tools.addWidget(button)
        self.mode_buttons[FOREGROUND].setChecked(True)
        grid.addLayout(tools)
        self.preview = QCheckBox("Preview under the mouse (P)")
        self.preview.toggled.connect(self._preview_toggled)
        grid.addWidget(self.preview)
        actions = QHBoxLayout()
        for label, slot, tip in (("Undo (Z)", self.controller.undo_prompt, "undo the last prompt"),
                                 ("Clear (C)", self.controller.clear, "clear the prompts"),
                                 ("Save (S)", self.controller.save, "save the object (also: right click)"),
                                 ("Undo save (Ctrl+Z)", self.controller.undo_save, "remove the last saved object")):
            button = QPushButton(label)
            button.setToolTip(tip)
            button.clicked.connect(slot)
            actions.addWidget(button)
        grid.addLayout(actions)
        layout.addWidget(prompts)

        # Options
        options = QGroupBox("Objects")
        form = QFormLayout(options)
        self.class_label = QComboBox()
        self.class_label.setEditable(True)
        self.class_label.addItems([""] + self.controller.recent_classes())
        self.class_label.setToolTip("A class label saved with every object (the `class` attribute)")
        self.class_label.currentTextChanged.connect(lambda text: setattr(self.controller, "class_label", text.strip()))
        form.addRow("Class", self.class_label)
        self.min_area = QSpinBox()
        self.min_area.setRange(0, 10_000_000)
        self.min_area.setSuffix(" px")
        form.addRow("Min area", self.min_area)
        self.simplify = QDoubleSpinBox()
        self.simplify.setRange(0, 1000)
        self.simplify.setDecimals(2)
        form.addRow("Simplify (map units)", self.simplify)
        self.largest = QCheckBox("Largest polygon only")
        self.holes = QCheckBox("Fill holes")
        self.regularize = QCheckBox("Regularize (right angles: buildings, parcels)")
        self.multimask = QCheckBox("Multimask (three candidates)")
        for widget in (self.largest, self.holes, self.regularize, self.multimask):
            form.addRow(widget)
        self.candidates = QComboBox()
        self.candidates.setEnabled(False)
        self.candidates.activated.connect(lambda index: self.controller.choose_candidate(index) if index >= 0 else None)
        form.addRow("Candidate", self.candidates)
        self.patches = QCheckBox("Show patch boundaries")
        self.patches.toggled.connect(self.controller.show_patches)
        form.addRow(self.patches)
        for widget, signal in ((self.min_area, self.min_area.valueChanged), (self.simplify, self.simplify.valueChanged),
                               (self.largest, self.largest.toggled), (self.holes, self.holes.toggled),
                               (self.regularize, self.regularize.toggled),
                               (self.multimask, self.multimask.toggled)):
            signal.connect(self._options_changed)
        layout.addWidget(options)

        # Segment everything in view
        everything = QGroupBox("Segment everything")
        form = QFormLayout(everything)
        self.points_per_side = QSpinBox()
        self.points_per_side.setRange(1, 128)
        self.points_per_side.setValue(32)
        self.points_per_side.setToolTip("grid points per side of each tile (the official points_per_side)")
        form.addRow("Points per side", self.points_per_side)
        self.iou_threshold = QDoubleSpinBox()
        self.iou_threshold.setRange(0, 1)
        self.iou_threshold.setDecimals(2)
        self.iou_threshold.setSingleStep(0.05)
        self.iou_threshold.setValue(0.8)
        form.addRow("Predicted IoU above", self.iou_threshold)
        self.stability_threshold = QDoubleSpinBox()
        self.stability_threshold.setRange(0, 1)
        self.stability_threshold.setDecimals(2)
        self.stability_threshold.setSingleStep(0.05)
        self.stability_threshold.setValue(0.95)
        form.addRow("Stability at least", self.stability_threshold)
        buttons = QHBoxLayout()
        generate = QPushButton("Segment everything in view")
        generate.setToolTip("SAM2's automatic masks on the tiles in the map view, merged across tiles, as a layer")
        generate.clicked.connect(lambda: self.controller.generate_in_view(
            self.points_per_side.value(), self.iou_threshold.value(), self.stability_threshold.value()))
        save_found = QPushButton("Save all found")
        save_found.clicked.connect(self.controller.save_generated)
        buttons.addWidget(generate)
        buttons.addWidget(save_found)
        form.addRow(buttons)
        layout.addWidget(everything)

        self.status_line = QLabel("no engine")
        self.status_line.setWordWrap(True)
        layout.addWidget(self.status_line)
        layout.addStretch(1)
        self.setWidget(root)

        self.controller.status.connect(self.status_line.setText)
        self.controller.candidates.connect(self._show_candidates)

    def _preview_toggled(self, on):
        if self.controller.preview_enabled != on:
            self.controller.toggle_preview()

    def _options_changed(self, *_):
        self.controller.set_options(min_area=self.min_area.value(), simplify=self.simplify.value(),
                                    largest_only=self.largest.isChecked(), fill_holes=self.holes.isChecked(),
                                    regularize=self.regularize.isChecked(),
                                    multimask=self.multimask.isChecked())
        self.candidates.setEnabled(self.multimask.isChecked())

    def _show_candidates(self, scores):
        self.candidates.clear()
        self.candidates.addItems([f"{i + 1}: score {score:.3f}" for i, score in enumerate(scores)])
        if self.controller.candidate is not None:
            self.candidates.setCurrentIndex(self.controller.candidate)

    def mode_changed(self, mode):
        button = self.mode_buttons.get(mode)
        if button:
            button.setChecked(True)

    def remember_store(self, path):
        if path and os.path.isdir(path):
            QgsSettings().setValue(SETTINGS_STORE, path)
