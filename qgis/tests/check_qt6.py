#!/usr/bin/env python3
"""Every Qt class and enum the plugin names exists in PyQt6 (QGIS 4 is Qt6-only).

Reads the plugin's sources (without importing QGIS), collects each name imported from
`qgis.PyQt.<module>` and every attribute chain on it (`Qt.MouseButton.LeftButton`,
`QNetworkRequest.KnownHeaders.ContentTypeHeader`, …), and resolves them in PyQt6. QGIS's own
shim is honoured: on Qt6 it re-exports QAction, QActionGroup and QShortcut (moved to QtGui) from
`qgis.PyQt.QtWidgets`. Needs PyQt6 from PyPI (Qt is not started).
"""
import ast
import importlib
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "geosam2"
MOVED_TO_QTGUI = {"QAction", "QActionGroup", "QShortcut"}


def chains(tree, roots):
    """(root, [attr, …], line) for every attribute chain starting at an imported Qt name."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "parent", None), ast.Attribute):
            parts, current = [], node
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name) and current.id in roots:
                found.append((current.id, list(reversed(parts)), node.lineno))
    return found


def main():
    problems, checked = [], 0
    for path in sorted(PLUGIN.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                child.parent = node
        roots = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qgis.PyQt"):
                module = node.module.split(".", 2)[-1] if node.module != "qgis.PyQt" else None
                for alias in node.names:
                    if module is None:
                        continue
                    roots[alias.asname or alias.name] = (module, alias.name)
                    if node.module.startswith("qgis.PyQt.") and module.startswith("Qt"):
                        target = "QtGui" if module == "QtWidgets" and alias.name in MOVED_TO_QTGUI else module
                        try:
                            qt6 = importlib.import_module(f"PyQt6.{target}")
                        except ImportError as error:
                            problems.append(f"{path.name}:{node.lineno}: PyQt6.{target} missing ({error})")
                            continue
                        checked += 1
                        if not hasattr(qt6, alias.name):
                            problems.append(f"{path.name}:{node.lineno}: {module}.{alias.name} does not exist in PyQt6")
        for root, attributes, line in chains(tree, roots):
            module, name = roots[root]
            target = "QtGui" if module == "QtWidgets" and name in MOVED_TO_QTGUI else module
            value = getattr(importlib.import_module(f"PyQt6.{target}"), name, None)
            for depth, attribute in enumerate(attributes):
                if value is None:
                    break
                if not hasattr(value, attribute):
                    # Capitalised names are classes and enum members; lower-case ones are methods
                    # of instances, which this check does not follow.
                    if attribute[:1].isupper():
                        problems.append(f"{path.name}:{line}: {root}.{'.'.join(attributes[:depth + 1])} does not exist in PyQt6")
                    break
                value = getattr(value, attribute)
                checked += 1
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"Qt6 check: {checked} Qt names used by the plugin all exist in PyQt6")


if __name__ == "__main__":
    main()
