import GeoIO

/// The web map's tiling of a raster, in the raster's own pixel grid (no reprojection, so it works
/// in any CRS): 256-pixel tiles; at zoom `nativeZoom` one tile pixel is one raster pixel, and
/// every zoom level below halves the resolution, down to zoom 0 where the whole raster fits in
/// one tile. Leaflet maps it with a CRS whose projection is the raster's geotransform.
public struct MapGrid: Sendable, Equatable {
    public static let tileSize = 256
    /// Zoom levels Leaflet may show above the native one (tiles scaled up in the browser).
    public static let overZoom = 3

    public let width: Int
    public let height: Int
    public let nativeZoom: Int

    public init(width: Int, height: Int) {
        self.width = max(1, width)
        self.height = max(1, height)
        var zoom = 0
        while (Self.tileSize << zoom) < max(self.width, self.height) { zoom += 1 }
        nativeZoom = zoom
    }

    /// Raster pixels per tile pixel at a zoom level.
    public func factor(zoom: Int) -> Int { 1 << (nativeZoom - zoom) }

    /// Columns and rows of tiles at a zoom level.
    public func tileCount(zoom: Int) -> (columns: Int, rows: Int) {
        let span = Self.tileSize * factor(zoom: zoom)
        return ((width + span - 1) / span, (height + span - 1) / span)
    }

    /// The raster window a tile covers and the size it has in the tile image (smaller than
    /// 256 × 256 at the raster's right and bottom edges); nil for a tile outside the raster.
    public func window(zoom: Int, column: Int, row: Int) -> (window: PixelWindow, imageWidth: Int, imageHeight: Int)? {
        guard (0...nativeZoom).contains(zoom), column >= 0, row >= 0 else { return nil }
        let (columns, rows) = tileCount(zoom: zoom)
        guard column < columns, row < rows else { return nil }
        let f = factor(zoom: zoom), span = Self.tileSize * f
        let x = column * span, y = row * span
        let w = min(span, width - x), h = min(span, height - y)
        let imageWidth = max(1, min(Self.tileSize, (w + f / 2) / f)), imageHeight = max(1, min(Self.tileSize, (h + f / 2) / f))
        return (PixelWindow(x: x, y: y, width: w, height: h), imageWidth, imageHeight)
    }
}
