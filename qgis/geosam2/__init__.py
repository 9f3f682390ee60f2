"""GeoSAM2 for QGIS: the Geo-SAM2 side panel, driven by the native geosam2 engine."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    from .plugin import GeoSAM2Plugin

    return GeoSAM2Plugin(iface)
