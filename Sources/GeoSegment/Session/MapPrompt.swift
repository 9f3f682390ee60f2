/// A click in map coordinates.
public struct MapPoint: Sendable, Equatable, Codable {
    public var x: Double
    public var y: Double
    /// 1 = foreground, 0 = background.
    public var label: Int

    public init(x: Double, y: Double, label: Int) {
        self.x = x
        self.y = y
        self.label = label
    }
}

/// A box in map coordinates.
public struct MapBox: Sendable, Equatable, Codable {
    public var minX: Double, minY: Double, maxX: Double, maxY: Double

    public init(minX: Double, minY: Double, maxX: Double, maxY: Double) {
        (self.minX, self.minY, self.maxX, self.maxY) = (minX, minY, maxX, maxY)
    }
}

/// The prompts of one object, in a CRS (the store's when nil).
public struct ObjectPrompt: Sendable, Equatable, Codable {
    public var points: [MapPoint]
    public var box: MapBox?
    /// Any CRS GDAL understands ("EPSG:4326", WKT, PROJ); nil = the store's CRS.
    public var crs: String?

    public init(points: [MapPoint] = [], box: MapBox? = nil, crs: String? = nil) {
        self.points = points
        self.box = box
        self.crs = crs
    }

    public var isEmpty: Bool { points.isEmpty && box == nil }
}

/// How a mask becomes polygons.
public struct PolygonOptions: Sendable, Equatable, Codable {
    /// Drop polygons smaller than this many pixels.
    public var minArea: Double = 0
    /// Keep only the largest polygon.
    public var largestOnly = false
    /// Douglas–Peucker tolerance in map units, topology-preserving (0 = none).
    public var simplify: Double = 0
    /// Drop interior rings.
    public var fillHoles = false
    /// Square the outlines (right angles along the object's dominant direction; see
    /// ``OutlineRegularizer``), with `simplify` as the tolerance, at least 1.5 pixels.
    public var regularize = false

    public init(minArea: Double = 0, largestOnly: Bool = false, simplify: Double = 0, fillHoles: Bool = false, regularize: Bool = false) {
        self.minArea = minArea
        self.largestOnly = largestOnly
        self.simplify = simplify
        self.fillHoles = fillHoles
        self.regularize = regularize
    }

    /// Throws for negative or non-finite values.
    public func validate() throws {
        guard minArea >= 0, minArea.isFinite else { throw GeoSegmentError("min-area must be a non-negative number of pixels") }
        guard simplify >= 0, simplify.isFinite else { throw GeoSegmentError("simplify must be a non-negative tolerance in map units") }
    }
}
