import CGDAL
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The kind of a geometry (2-D; Z/M variants are reported as their 2-D kind).
public enum GeometryType: String, Sendable, CaseIterable {
    case unknown, point, lineString, polygon, multiPoint, multiLineString, multiPolygon, geometryCollection
    /// No geometry at all (attribute-only layers).
    case none

    init(_ type: OGRwkbGeometryType) {
        switch OGR_GT_Flatten(type) {
        case wkbPoint: self = .point
        case wkbLineString: self = .lineString
        case wkbPolygon: self = .polygon
        case wkbMultiPoint: self = .multiPoint
        case wkbMultiLineString: self = .multiLineString
        case wkbMultiPolygon: self = .multiPolygon
        case wkbGeometryCollection: self = .geometryCollection
        case wkbNone: self = .none
        default: self = .unknown
        }
    }

    var ogr: OGRwkbGeometryType {
        switch self {
        case .unknown: wkbUnknown
        case .point: wkbPoint
        case .lineString: wkbLineString
        case .polygon: wkbPolygon
        case .multiPoint: wkbMultiPoint
        case .multiLineString: wkbMultiLineString
        case .multiPolygon: wkbMultiPolygon
        case .geometryCollection: wkbGeometryCollection
        case .none: wkbNone
        }
    }
}

/// A geometry as a Swift value: its ISO well-known binary (WKB) encoding.
///
/// The value carries no CRS; the layer or raster it belongs to does. Operations parse the WKB
/// into a temporary OGR geometry, so they cost a copy but need no shared state (the type is
/// `Sendable`). Operations needing GEOS (``isValid``, ``simplifiedPreserveTopology(tolerance:)``)
/// use the GEOS library GDAL was built with.
public struct Geometry: Sendable, Hashable, CustomStringConvertible {
    /// The ISO WKB bytes, little-endian.
    public let wkb: [UInt8]

    /// Wraps WKB bytes that GDAL produced or that were built by the WKB writer below.
    init(trustedWKB: [UInt8]) { self.wkb = trustedWKB }

    /// Parses WKB (ISO or PostGIS-extended, either byte order) and stores it normalised to
    /// little-endian ISO WKB, so equal shapes compare equal whatever encoding they came in.
    public init(wkb: [UInt8]) throws {
        self = try OGRGeometry(wkb: wkb).toGeometry()
    }

    /// Parses well-known text, e.g. `"POLYGON ((0 0, 1 0, 1 1, 0 0))"`.
    public init(wkt: String) throws {
        var text = Array(wkt.utf8CString)
        let geometry = try withQuietGDAL { () throws -> OGRGeometry in
            var handle: OGRGeometryH?
            let error = text.withUnsafeMutableBufferPointer { buffer -> OGRErr in
                var cursor = buffer.baseAddress
                return OGR_G_CreateFromWkt(&cursor, nil, &handle)
            }
            guard error == OGRERR_NONE, let handle else {
                throw GeoIOError.gdal("invalid WKT \"\(wkt.prefix(60))\"")
            }
            return OGRGeometry(taking: handle)
        }
        self = try geometry.toGeometry()
    }

    /// Parses a GeoJSON geometry object (not a Feature), e.g. `{"type":"Point","coordinates":[1,2]}`.
    public init(geoJSON: String) throws {
        let geometry = try withQuietGDAL { () throws -> OGRGeometry in
            guard let handle = OGR_G_CreateGeometryFromJson(geoJSON) else {
                throw GeoIOError.gdal("invalid GeoJSON geometry \"\(geoJSON.prefix(60))\"")
            }
            return OGRGeometry(taking: handle)
        }
        self = try geometry.toGeometry()
    }

    // MARK: Construction

    /// A point.
    public static func point(x: Double, y: Double) -> Geometry {
        var writer = WKBWriter(type: 1)
        writer.append(Coordinate(x: x, y: y))
        return Geometry(trustedWKB: writer.bytes)
    }

    /// A line string through `points`.
    public static func lineString(_ points: [Coordinate]) -> Geometry {
        var writer = WKBWriter(type: 2)
        writer.append(points: points)
        return Geometry(trustedWKB: writer.bytes)
    }

    /// A polygon: the first ring is the exterior, the others are holes. Rings are closed
    /// automatically (the first point is repeated at the end if it is not already).
    public static func polygon(rings: [[Coordinate]]) -> Geometry {
        var writer = WKBWriter(type: 3)
        writer.appendPolygonBody(rings)
        return Geometry(trustedWKB: writer.bytes)
    }

    /// The rectangle covering `envelope`, as a polygon.
    public static func rectangle(_ envelope: Envelope) -> Geometry {
        polygon(rings: [[
            Coordinate(x: envelope.minX, y: envelope.minY), Coordinate(x: envelope.maxX, y: envelope.minY),
            Coordinate(x: envelope.maxX, y: envelope.maxY), Coordinate(x: envelope.minX, y: envelope.maxY),
        ]])
    }

    /// A multipolygon; each element is a polygon's rings as in ``polygon(rings:)``.
    public static func multiPolygon(_ polygons: [[[Coordinate]]]) -> Geometry {
        var writer = WKBWriter(type: 6)
        writer.append(count: polygons.count)
        for rings in polygons {
            writer.appendHeader(type: 3)
            writer.appendPolygonBody(rings)
        }
        return Geometry(trustedWKB: writer.bytes)
    }

    /// A multipolygon collecting polygons and the parts of multipolygons (no dissolving).
    public static func multiPolygon(_ parts: [Geometry]) throws -> Geometry {
        try withQuietGDAL {
            guard let handle = OGR_G_CreateGeometry(wkbMultiPolygon) else {
                throw GeoIOError.gdal("cannot create a multipolygon")
            }
            let result = OGRGeometry(taking: handle)
            for (index, part) in parts.enumerated() {
                let geometry = try OGRGeometry(wkb: part.wkb)
                switch part.type {
                case .polygon:
                    guard OGR_G_AddGeometry(handle, geometry.handle) == OGRERR_NONE else {
                        throw GeoIOError.gdal("cannot add polygon \(index) to a multipolygon")
                    }
                case .multiPolygon:
                    for child in 0..<OGR_G_GetGeometryCount(geometry.handle) {
                        guard let childHandle = OGR_G_GetGeometryRef(geometry.handle, child),
                              OGR_G_AddGeometry(handle, childHandle) == OGRERR_NONE else {
                            throw GeoIOError.gdal("cannot add part \(index) to a multipolygon")
                        }
                    }
                default:
                    throw GeoIOError("part \(index) of a multipolygon is a \(part.type.rawValue), not a polygon")
                }
            }
            return try result.toGeometry()
        }
    }

    // MARK: Properties

    /// Runs `body` on a temporary OGR copy of the geometry.
    func withOGR<T>(_ body: (OGRGeometryH) throws -> T) throws -> T {
        let geometry = try OGRGeometry(wkb: wkb)
        return try withExtendedLifetime(geometry) { try body(geometry.handle) }
    }

    /// The kind of geometry.
    public var type: GeometryType {
        (try? withOGR { GeometryType(OGR_G_GetGeometryType($0)) }) ?? .unknown
    }

    /// Whether the geometry has no points.
    public var isEmpty: Bool { (try? withOGR { OGR_G_IsEmpty($0) != 0 }) ?? true }

    /// The bounding box.
    public var envelope: Envelope {
        var envelope = OGREnvelope()
        _ = try? withOGR { OGR_G_GetEnvelope($0, &envelope) }
        return Envelope(minX: envelope.MinX, minY: envelope.MinY, maxX: envelope.MaxX, maxY: envelope.MaxY)
    }

    /// Planar area in squared CRS units (holes subtracted; 0 for points and lines).
    public var area: Double { (try? withOGR { OGR_G_Area($0) }) ?? 0 }

    /// Planar length in CRS units: the length of lines, or the perimeter (all rings) of polygons.
    public var length: Double {
        (try? withOGR { handle -> Double in
            switch GeometryType(OGR_G_GetGeometryType(handle)) {
            case .polygon, .multiPolygon:
                return withQuietGDAL {
                    guard let boundary = OGR_G_Boundary(handle) else { return 0 }
                    defer { OGR_G_DestroyGeometry(boundary) }
                    return OGR_G_Length(boundary)
                }
            default:
                return OGR_G_Length(handle)
            }
        }) ?? 0
    }

    /// The centroid, or `nil` for empty geometries.
    public var centroid: Coordinate? {
        try? withOGR { handle -> Coordinate? in
            withQuietGDAL {
                guard let point = OGR_G_CreateGeometry(wkbPoint) else { return nil }
                defer { OGR_G_DestroyGeometry(point) }
                guard OGR_G_Centroid(handle, point) == OGRERR_NONE, OGR_G_IsEmpty(point) == 0 else { return nil }
                return Coordinate(x: OGR_G_GetX(point, 0), y: OGR_G_GetY(point, 0))
            }
        } ?? nil
    }

    /// Whether the geometry is valid in the OGC Simple Features sense (GEOS `isValid`).
    public var isValid: Bool { (try? withOGR { h in withQuietGDAL { OGR_G_IsValid(h) != 0 } }) ?? false }

    /// Well-known text (ISO flavour).
    public var wkt: String {
        let text = try? withOGR { handle -> String? in
            var text: UnsafeMutablePointer<CChar>?
            let error = OGR_G_ExportToIsoWkt(handle, &text)
            let result = takeCPLString(text)
            return error == OGRERR_NONE ? result : nil
        }
        return text.flatMap { $0 } ?? "INVALID"
    }

    /// A GeoJSON geometry object, without spaces. Points, lines, polygons and multipolygons are
    /// written straight from the WKB with the shortest digits that read back to the same
    /// doubles (GDAL's `OGR_G_ExportToJson`, used for other types, formats every number through
    /// printf and took most of a segmentation request's time on masks with many parts).
    public var geoJSON: String {
        if let text = WKBGeoJSON.write(wkb) { return text }
        let text = try? withOGR { takeCPLString(OGR_G_ExportToJson($0)) }
        return text.flatMap { $0 } ?? "null"
    }

    public var description: String { wkt }

    /// Rings of each polygon: `[polygon][ring][point]`, exterior ring first. One polygon for a
    /// polygon, one per part for a multipolygon, none for other types.
    public var polygonRings: [[[Coordinate]]] {
        (try? withOGR { handle -> [[[Coordinate]]] in
            switch GeometryType(OGR_G_GetGeometryType(handle)) {
            case .polygon:
                return [Self.rings(of: handle)]
            case .multiPolygon:
                return (0..<OGR_G_GetGeometryCount(handle)).compactMap { index in
                    OGR_G_GetGeometryRef(handle, index).map(Self.rings)
                }
            default:
                return []
            }
        }) ?? []
    }

    private static func rings(of polygon: OGRGeometryH) -> [[Coordinate]] {
        (0..<OGR_G_GetGeometryCount(polygon)).compactMap { index in
            guard let ring = OGR_G_GetGeometryRef(polygon, index) else { return nil }
            return (0..<OGR_G_GetPointCount(ring)).map {
                Coordinate(x: OGR_G_GetX(ring, $0), y: OGR_G_GetY(ring, $0))
            }
        }
    }

    // MARK: Operations

    /// The geometry with its coordinates transformed (`OGR_G_Transform`).
    public func transformed(with transformation: CoordinateTransformation) throws -> Geometry {
        let geometry = try OGRGeometry(wkb: wkb)
        try transformation.withHandle { transform in
            try withQuietGDAL {
                guard OGR_G_Transform(geometry.handle, transform) == OGRERR_NONE else {
                    throw GeoIOError.gdal("cannot transform geometry from \(transformation.source) to \(transformation.target)")
                }
            }
        }
        return try geometry.toGeometry()
    }

    /// A simplified geometry (Douglas–Peucker with `tolerance` in CRS units) that keeps polygons
    /// valid and rings from crossing (`OGR_G_SimplifyPreserveTopology`, needs GEOS).
    public func simplifiedPreserveTopology(tolerance: Double) throws -> Geometry {
        try withOGR { handle in
            try withQuietGDAL {
                guard let simplified = OGR_G_SimplifyPreserveTopology(handle, tolerance) else {
                    throw GeoIOError.gdal("cannot simplify geometry")
                }
                return try OGRGeometry(taking: simplified).toGeometry()
            }
        }
    }

    /// Area on the ellipsoid in square metres, for a geometry in CRS `srs`
    /// (`OGR_G_GeodesicArea`, GDAL ≥ 3.9).
    ///
    /// Returns `nil` when the linked GDAL is older than 3.9 and lacks the function (the symbol is
    /// looked up at run time); a planar alternative is ``area`` in an equal-area projection.
    public func geodesicArea(in srs: SpatialReference) throws -> Double? {
        guard let function = geodesicAreaFunction else { return nil }
        return try withOGR { handle in
            try withQuietGDAL {
                srs.withHandle { OGR_G_AssignSpatialReference(handle, $0) }
                let area = function(handle)
                OGR_G_AssignSpatialReference(handle, nil)
                guard area >= 0 else { throw GeoIOError.gdal("cannot compute geodesic area") }
                return area
            }
        }
    }
}

/// `OGR_G_GeodesicArea` if the linked GDAL has it (≥ 3.9), looked up once (lazy global).
private let geodesicAreaFunction: (@convention(c) (OGRGeometryH?) -> Double)? = {
    guard let process = dlopen(nil, RTLD_NOW), let symbol = dlsym(process, "OGR_G_GeodesicArea") else {
        return nil
    }
    return unsafeBitCast(symbol, to: (@convention(c) (OGRGeometryH?) -> Double).self)
}()

// MARK: - OGR geometry handle

/// Owns an `OGRGeometryH` and destroys it in `deinit`. Internal: geometries travel as ``Geometry`` values.
final class OGRGeometry {
    let handle: OGRGeometryH

    init(taking handle: OGRGeometryH) { self.handle = handle }

    /// Parses WKB (ISO or extended, either byte order).
    convenience init(wkb: [UInt8]) throws {
        let handle = try withQuietGDAL { () throws -> OGRGeometryH in
            var handle: OGRGeometryH?
            let error = wkb.withUnsafeBytes { bytes in
                OGR_G_CreateFromWkbEx(bytes.baseAddress, nil, &handle, bytes.count)
            }
            guard error == OGRERR_NONE, let handle else {
                throw GeoIOError.gdal("invalid WKB geometry (\(wkb.count) bytes)")
            }
            return handle
        }
        self.init(taking: handle)
    }

    deinit { OGR_G_DestroyGeometry(handle) }

    /// Exports ISO WKB, little-endian.
    func toGeometry() throws -> Geometry {
        var bytes = [UInt8](repeating: 0, count: OGR_G_WkbSizeEx(handle))
        let error = bytes.withUnsafeMutableBufferPointer { OGR_G_ExportToIsoWkb(handle, wkbNDR, $0.baseAddress) }
        guard error == OGRERR_NONE else { throw GeoIOError.gdal("cannot export geometry as WKB") }
        return Geometry(trustedWKB: bytes)
    }
}

// MARK: - WKB writer

/// Writes 2-D ISO WKB, little-endian.
private struct WKBWriter {
    var bytes: [UInt8] = []

    init(type: UInt32) { appendHeader(type: type) }

    mutating func appendHeader(type: UInt32) {
        bytes.append(1)  // little-endian (NDR)
        append(uint32: type)
    }

    mutating func append(uint32 value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(count: Int) { append(uint32: UInt32(clamping: count)) }

    mutating func append(_ point: Coordinate) {
        withUnsafeBytes(of: point.x.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: point.y.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func append(points: [Coordinate]) {
        append(count: points.count)
        for point in points { append(point) }
    }

    mutating func appendPolygonBody(_ rings: [[Coordinate]]) {
        append(count: rings.count)
        for ring in rings {
            if let first = ring.first, let last = ring.last, first != last {
                append(points: ring + [first])
            } else {
                append(points: ring)
            }
        }
    }
}

/// GeoJSON text from 2-D little-endian ISO WKB of the common types; nil for anything else.
private enum WKBGeoJSON {
    static func write(_ wkb: [UInt8]) -> String? {
        var reader = Reader(bytes: wkb)
        var out = ""
        out.reserveCapacity(wkb.count * 2)
        guard reader.geometry(into: &out), reader.offset == wkb.count else { return nil }
        return out
    }

    struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func uint32() -> UInt32? {
            guard offset + 4 <= bytes.count else { return nil }
            defer { offset += 4 }
            return bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
        }

        mutating func double() -> Double? {
            guard offset + 8 <= bytes.count else { return nil }
            defer { offset += 8 }
            return bytes.withUnsafeBytes { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self))) }
        }

        /// Byte order and type of the next geometry (little-endian only).
        mutating func header() -> UInt32? {
            guard offset < bytes.count, bytes[offset] == 1 else { return nil }
            offset += 1
            return uint32()
        }

        mutating func point(into out: inout String) -> Bool {
            guard let x = double(), let y = double(), x.isFinite, y.isFinite else { return false }
            out += "[\(x),\(y)]"  // Double's description: shortest round-trip digits, valid JSON
            return true
        }

        mutating func points(into out: inout String) -> Bool {
            guard let count = uint32(), Int(count) * 16 <= bytes.count - offset else { return false }
            out += "["
            for i in 0..<Int(count) {
                if i > 0 { out += "," }
                guard point(into: &out) else { return false }
            }
            out += "]"
            return true
        }

        mutating func rings(into out: inout String) -> Bool {
            guard let count = uint32(), Int(count) * 4 <= bytes.count - offset else { return false }
            out += "["
            for i in 0..<Int(count) {
                if i > 0 { out += "," }
                guard points(into: &out) else { return false }
            }
            out += "]"
            return true
        }

        mutating func geometry(into out: inout String) -> Bool {
            switch header() {
            case 1?:
                out += #"{"type":"Point","coordinates":"#
                guard point(into: &out) else { return false }
            case 2?:
                out += #"{"type":"LineString","coordinates":"#
                guard points(into: &out) else { return false }
            case 3?:
                out += #"{"type":"Polygon","coordinates":"#
                guard rings(into: &out) else { return false }
            case 6?:
                out += #"{"type":"MultiPolygon","coordinates":["#
                guard let count = uint32(), Int(count) * 9 <= bytes.count - offset else { return false }
                for i in 0..<Int(count) {
                    if i > 0 { out += "," }
                    guard header() == 3, rings(into: &out) else { return false }
                }
                out += "]"
            default:
                return false
            }
            out += "}"
            return true
        }
    }
}
