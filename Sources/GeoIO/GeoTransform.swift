/// A 2-D point in map (or pixel) coordinates: `x` is easting/longitude, `y` northing/latitude.
public struct Coordinate: Sendable, Hashable {
    public var x: Double
    public var y: Double

    public init(x: Double, y: Double) {
        self.x = x
        self.y = y
    }
}

/// An axis-aligned rectangle in map coordinates.
public struct Envelope: Sendable, Hashable {
    public var minX: Double
    public var minY: Double
    public var maxX: Double
    public var maxY: Double

    public init(minX: Double, minY: Double, maxX: Double, maxY: Double) {
        self.minX = minX
        self.minY = minY
        self.maxX = maxX
        self.maxY = maxY
    }

    /// The smallest envelope holding all `points`, or `nil` for an empty list.
    public init?(covering points: [Coordinate]) {
        guard let first = points.first else { return nil }
        self.init(minX: first.x, minY: first.y, maxX: first.x, maxY: first.y)
        for point in points.dropFirst() {
            minX = Swift.min(minX, point.x)
            minY = Swift.min(minY, point.y)
            maxX = Swift.max(maxX, point.x)
            maxY = Swift.max(maxY, point.y)
        }
    }

    public var width: Double { maxX - minX }
    public var height: Double { maxY - minY }
}

/// A rectangle of whole pixels: column `x`, row `y` of its top-left pixel, and its size.
public struct PixelWindow: Sendable, Hashable, CustomStringConvertible {
    public var x: Int
    public var y: Int
    public var width: Int
    public var height: Int

    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }

    /// The window covering a whole `width` × `height` raster.
    public init(width: Int, height: Int) {
        self.init(x: 0, y: 0, width: width, height: height)
    }

    /// Number of pixels in the window.
    public var pixelCount: Int { width * height }

    /// Whether the window is non-empty and lies entirely inside a `width` × `height` raster.
    public func fits(inWidth rasterWidth: Int, height rasterHeight: Int) -> Bool {
        width > 0 && height > 0 && x >= 0 && y >= 0
            && x <= rasterWidth - width && y <= rasterHeight - height
    }

    /// The part of this window inside a `width` × `height` raster (possibly empty: width or height 0).
    public func clamped(toWidth rasterWidth: Int, height rasterHeight: Int) -> PixelWindow {
        let x0 = min(max(x, 0), rasterWidth), y0 = min(max(y, 0), rasterHeight)
        let x1 = min(max(x + width, x0), rasterWidth), y1 = min(max(y + height, y0), rasterHeight)
        return PixelWindow(x: x0, y: y0, width: x1 - x0, height: y1 - y0)
    }

    public var description: String { "(x: \(x), y: \(y), width: \(width), height: \(height))" }
}

/// GDAL's affine pixel-to-map transform.
///
/// For pixel column `p` and row `l` (pixel edges at integers, so `(0.5, 0.5)` is the centre of
/// the top-left pixel):
///
///     mapX = originX + p * pixelWidth     + l * rowRotation
///     mapY = originY + p * columnRotation + l * pixelHeight
///
/// The six coefficients in GDAL order are
/// `[originX, pixelWidth, rowRotation, originY, columnRotation, pixelHeight]`.
/// North-up rasters have zero rotations and a negative `pixelHeight`.
public struct GeoTransform: Sendable, Hashable, CustomStringConvertible {
    public var originX: Double
    public var pixelWidth: Double
    public var rowRotation: Double
    public var originY: Double
    public var columnRotation: Double
    public var pixelHeight: Double

    public init(originX: Double, pixelWidth: Double, rowRotation: Double = 0,
                originY: Double, columnRotation: Double = 0, pixelHeight: Double) {
        self.originX = originX
        self.pixelWidth = pixelWidth
        self.rowRotation = rowRotation
        self.originY = originY
        self.columnRotation = columnRotation
        self.pixelHeight = pixelHeight
    }

    /// Builds a transform from the six GDAL coefficients; `nil` unless exactly six are given.
    public init?(coefficients c: [Double]) {
        guard c.count == 6 else { return nil }
        self.init(originX: c[0], pixelWidth: c[1], rowRotation: c[2],
                  originY: c[3], columnRotation: c[4], pixelHeight: c[5])
    }

    /// The transform GDAL reports for rasters without georeferencing: map = pixel coordinates.
    public static let identity = GeoTransform(originX: 0, pixelWidth: 1, originY: 0, pixelHeight: 1)

    /// The six coefficients in GDAL order.
    public var coefficients: [Double] {
        [originX, pixelWidth, rowRotation, originY, columnRotation, pixelHeight]
    }

    /// Whether the transform has no rotation, columns run east and rows run south.
    public var isNorthUp: Bool {
        rowRotation == 0 && columnRotation == 0 && pixelWidth > 0 && pixelHeight < 0
    }

    /// Map coordinates of pixel position (`x` = column, `y` = row).
    public func pixelToMap(x: Double, y: Double) -> Coordinate {
        Coordinate(x: originX + x * pixelWidth + y * rowRotation,
                   y: originY + x * columnRotation + y * pixelHeight)
    }

    /// The inverse transform (map → pixel), or `nil` if this one is degenerate (zero determinant).
    public var inverse: GeoTransform? {
        let det = pixelWidth * pixelHeight - rowRotation * columnRotation
        guard det != 0, det.isFinite else { return nil }
        let a = pixelHeight / det, b = -rowRotation / det
        let d = -columnRotation / det, e = pixelWidth / det
        return GeoTransform(originX: -(a * originX + b * originY), pixelWidth: a, rowRotation: b,
                            originY: -(d * originX + e * originY), columnRotation: d, pixelHeight: e)
    }

    /// Fractional pixel position (column, row) of a map coordinate, or `nil` if the transform is degenerate.
    public func mapToPixel(x: Double, y: Double) -> Coordinate? {
        inverse?.pixelToMap(x: x, y: y)
    }

    /// The transform of the same area sampled on a grid `factor` times coarser
    /// (pixel sizes and rotations multiplied by `factor`; the origin stays).
    public func scaled(by factor: Double) -> GeoTransform {
        scaled(x: factor, y: factor)
    }

    /// Like ``scaled(by:)`` with separate factors for columns (`x`) and rows (`y`).
    public func scaled(x: Double, y: Double) -> GeoTransform {
        GeoTransform(originX: originX, pixelWidth: pixelWidth * x, rowRotation: rowRotation * y,
                     originY: originY, columnRotation: columnRotation * x, pixelHeight: pixelHeight * y)
    }

    /// The transform whose pixel (0, 0) is this transform's pixel (`x`, `y`).
    public func translated(byPixelsX x: Double, y: Double) -> GeoTransform {
        let origin = pixelToMap(x: x, y: y)
        var result = self
        result.originX = origin.x
        result.originY = origin.y
        return result
    }

    /// The transform of `window` read into a `bufferWidth` × `bufferHeight` buffer
    /// (what ``RasterBand/read(window:bufferWidth:bufferHeight:resampling:)`` returns).
    public func forWindow(_ window: PixelWindow, bufferWidth: Int, bufferHeight: Int) -> GeoTransform {
        translated(byPixelsX: Double(window.x), y: Double(window.y))
            .scaled(x: Double(window.width) / Double(bufferWidth),
                    y: Double(window.height) / Double(bufferHeight))
    }

    /// Map bounds of a `width` × `height` raster (all four corners, so also right for rotated transforms).
    public func bounds(width: Int, height: Int) -> Envelope {
        let w = Double(width), h = Double(height)
        let corners = [pixelToMap(x: 0, y: 0), pixelToMap(x: w, y: 0),
                       pixelToMap(x: 0, y: h), pixelToMap(x: w, y: h)]
        // Four corners are never empty.
        return Envelope(covering: corners) ?? Envelope(minX: 0, minY: 0, maxX: 0, maxY: 0)
    }

    public var description: String {
        "GeoTransform(\(coefficients.map { "\($0)" }.joined(separator: ", ")))"
    }
}
