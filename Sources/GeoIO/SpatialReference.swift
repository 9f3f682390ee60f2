import CGDAL
import Foundation

/// A coordinate reference system (owns an `OGRSpatialReferenceH`).
///
/// Axis order is always the traditional GIS order (`OAMS_TRADITIONAL_GIS_ORDER`): `x` is
/// easting or longitude and `y` is northing or latitude, whatever the authority says (EPSG:4326
/// is officially latitude first). All coordinates in this module follow that convention.
///
/// **Sendable:** the object is never modified after `init`, and every use of the C handle
/// (including GDAL's internal caches touched by const methods) is serialised by a private lock,
/// so one instance may be shared between tasks.
public final class SpatialReference: @unchecked Sendable, CustomStringConvertible {
    private let handle: OGRSpatialReferenceH
    private let lock = NSLock()

    /// Takes ownership of `handle` and fixes its axis order.
    private init(taking handle: OGRSpatialReferenceH) {
        OSRSetAxisMappingStrategy(handle, OAMS_TRADITIONAL_GIS_ORDER)
        self.handle = handle
    }

    deinit { OSRRelease(handle) }

    /// Parses any definition GDAL understands (`OSRSetFromUserInput`): `"EPSG:32633"`,
    /// `"OGC:CRS84"`, `"WGS84"`, WKT, PROJJSON, a PROJ string, or `"urn:ogc:def:crs:EPSG::4326"`.
    public convenience init(_ definition: String) throws {
        let handle = try withQuietGDAL { () throws -> OGRSpatialReferenceH in
            guard let handle = OSRNewSpatialReference(nil) else {
                throw GeoIOError.gdal("cannot create a spatial reference")
            }
            guard OSRSetFromUserInput(handle, definition) == OGRERR_NONE else {
                OSRRelease(handle)
                throw GeoIOError.gdal("invalid spatial reference \"\(definition.prefix(80))\"")
            }
            return handle
        }
        self.init(taking: handle)
    }

    /// Parses a WKT (1 or 2) definition.
    public convenience init(wkt: String) throws {
        let handle = try withQuietGDAL { () throws -> OGRSpatialReferenceH in
            guard let handle = OSRNewSpatialReference(nil) else {
                throw GeoIOError.gdal("cannot create a spatial reference")
            }
            var text = Array(wkt.utf8CString)
            let error = text.withUnsafeMutableBufferPointer { buffer -> OGRErr in
                var cursor = buffer.baseAddress
                return OSRImportFromWkt(handle, &cursor)
            }
            guard error == OGRERR_NONE else {
                OSRRelease(handle)
                throw GeoIOError.gdal("invalid WKT \"\(wkt.prefix(60))…\"")
            }
            return handle
        }
        self.init(taking: handle)
    }

    /// The CRS with this EPSG code, e.g. `4326` or `32633`.
    public convenience init(epsg code: Int) throws {
        let handle = try withQuietGDAL { () throws -> OGRSpatialReferenceH in
            guard let handle = OSRNewSpatialReference(nil) else {
                throw GeoIOError.gdal("cannot create a spatial reference")
            }
            guard let code32 = Int32(exactly: code), OSRImportFromEPSG(handle, code32) == OGRERR_NONE else {
                OSRRelease(handle)
                throw GeoIOError.gdal("unknown EPSG code \(code)")
            }
            return handle
        }
        self.init(taking: handle)
    }

    /// Copies a handle owned by GDAL (e.g. a dataset's or layer's CRS); `nil` if `handle` is `nil`.
    convenience init?(copying handle: OGRSpatialReferenceH?) {
        guard let handle, let clone = OSRClone(handle) else { return nil }
        self.init(taking: clone)
    }

    /// WGS 84 / UTM in the zone containing a longitude/latitude (EPSG 326xx north, 327xx south).
    public static func utm(containingLongitude longitude: Double, latitude: Double) throws -> SpatialReference {
        guard longitude.isFinite, latitude.isFinite, abs(latitude) <= 90 else {
            throw GeoIOError("invalid longitude/latitude (\(longitude), \(latitude))")
        }
        var normalized = (longitude + 180).truncatingRemainder(dividingBy: 360)
        if normalized < 0 { normalized += 360 }
        let zone = min(Int(normalized / 6) + 1, 60)
        return try SpatialReference(epsg: (latitude >= 0 ? 32600 : 32700) + zone)
    }

    // MARK: Handle access

    /// Runs `body` with exclusive access to the C handle.
    func withHandle<T>(_ body: (OGRSpatialReferenceH) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(handle)
    }

    /// A private copy of the handle for C calls that need two CRS at once (avoids taking two locks).
    /// The caller must `OSRRelease` it.
    func cloneHandle() -> OGRSpatialReferenceH? {
        withHandle { handle in
            let clone = OSRClone(handle)
            if let clone { OSRSetAxisMappingStrategy(clone, OAMS_TRADITIONAL_GIS_ORDER) }
            return clone
        }
    }

    // MARK: Properties

    /// The definition as single-line WKT2 (ISO 19162:2019), GDAL's lossless native format.
    public var wkt: String {
        get throws {
            try withHandle { handle in
                try withQuietGDAL {
                    var result: UnsafeMutablePointer<CChar>?
                    let options = StringList(["FORMAT=WKT2_2019", "MULTILINE=NO"])
                    let error = options.withConstCSL { OSRExportToWktEx(handle, &result, $0) }
                    let text = takeCPLString(result)
                    guard error == OGRERR_NONE, let text else {
                        throw GeoIOError.gdal("cannot export spatial reference as WKT")
                    }
                    return text
                }
            }
        }
    }

    /// The EPSG code: the one the CRS carries, else one GDAL identifies (`OSRAutoIdentifyEPSG`,
    /// then the best `OSRFindMatches` match with confidence ≥ 90 %), else `nil`.
    public var epsgCode: Int? {
        withHandle { handle in
            withQuietGDAL {
                if let code = Self.epsgAuthorityCode(handle) { return code }
                if let clone = OSRClone(handle) {
                    defer { OSRRelease(clone) }
                    if OSRAutoIdentifyEPSG(clone) == OGRERR_NONE, let code = Self.epsgAuthorityCode(clone) {
                        return code
                    }
                }
                return Self.bestEPSGMatch(handle)
            }
        }
    }

    private static func bestEPSGMatch(_ handle: OGRSpatialReferenceH) -> Int? {
        var count: Int32 = 0
        var confidences: UnsafeMutablePointer<Int32>?
        guard let matches = OSRFindMatches(handle, nil, &count, &confidences) else { return nil }
        defer {
            OSRFreeSRSArray(matches)
            VSIFree(confidences)
        }
        for index in 0..<Int(count) {
            guard let confidence = confidences?[index], confidence >= 90, let match = matches[index],
                  let code = epsgAuthorityCode(match) else { continue }
            return code
        }
        return nil
    }

    private static func epsgAuthorityCode(_ handle: OGRSpatialReferenceH) -> Int? {
        guard let name = OSRGetAuthorityName(handle, nil), String(cString: name).uppercased() == "EPSG",
              let code = OSRGetAuthorityCode(handle, nil) else { return nil }
        return Int(String(cString: code))
    }

    /// The CRS name, e.g. `"WGS 84 / UTM zone 33N"`.
    public var name: String? {
        withHandle { handle in
            guard let name = OSRGetName(handle) else { return nil }
            return String(cString: name)
        }
    }

    /// Whether coordinates are longitude/latitude angles.
    public var isGeographic: Bool { withHandle { OSRIsGeographic($0) != 0 } }

    /// Whether coordinates are projected (planar) easting/northing.
    public var isProjected: Bool { withHandle { OSRIsProjected($0) != 0 } }

    /// The linear unit of a projected CRS: its name (e.g. `"metre"`) and length in metres.
    /// For geographic CRS GDAL reports `("degree", 1)`-like values that are not lengths; check ``isProjected``.
    public var linearUnits: (name: String, metersPerUnit: Double) {
        withHandle { handle in
            var name: UnsafeMutablePointer<CChar>?
            let factor = OSRGetLinearUnits(handle, &name)
            // `name` points into the SRS object: do not free.
            return (name.map { String(cString: $0) } ?? "unknown", factor)
        }
    }

    /// Whether both describe the same CRS (`OSRIsSame`; names and axis order do not matter).
    public func isSame(_ other: SpatialReference) -> Bool {
        if other === self { return true }
        guard let otherHandle = other.cloneHandle() else { return false }
        defer { OSRRelease(otherHandle) }
        return withHandle { OSRIsSame($0, otherHandle) != 0 }
    }

    public var description: String {
        let code = epsgCode.map { "EPSG:\($0)" }
        switch (name, code) {
        case let (name?, code?): return "\(name) (\(code))"
        case let (name?, nil): return name
        case let (nil, code?): return code
        case (nil, nil): return "unnamed CRS"
        }
    }
}

/// Converts coordinates between two CRS (owns an `OGRCoordinateTransformationH`).
///
/// **Sendable:** immutable after `init`; every use of the C handle is serialised by a private
/// lock, so one instance may be shared between tasks (calls from several tasks run one at a time).
public final class CoordinateTransformation: @unchecked Sendable {
    /// The CRS input coordinates are in.
    public let source: SpatialReference
    /// The CRS output coordinates are in.
    public let target: SpatialReference
    private let handle: OGRCoordinateTransformationH
    private let lock = NSLock()

    /// A transformation from `source` to `target`, both in traditional GIS (x, y) axis order.
    public init(from source: SpatialReference, to target: SpatialReference) throws {
        guard let sourceHandle = source.cloneHandle(), let targetHandle = target.cloneHandle() else {
            throw GeoIOError("cannot copy spatial references for a transformation")
        }
        defer {
            OSRRelease(sourceHandle)
            OSRRelease(targetHandle)
        }
        let made = withQuietGDAL { () -> OGRCoordinateTransformationH? in
            OCTNewCoordinateTransformation(sourceHandle, targetHandle)
        }
        guard let made else {
            throw GeoIOError.gdal("cannot transform from \(source) to \(target)")
        }
        self.source = source
        self.target = target
        self.handle = made
    }

    deinit { OCTDestroyCoordinateTransformation(handle) }

    /// Runs `body` with exclusive access to the C handle.
    func withHandle<T>(_ body: (OGRCoordinateTransformationH) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(handle)
    }

    /// Transforms one point.
    public func transform(x: Double, y: Double) throws -> Coordinate {
        guard let point = try transform(points: [Coordinate(x: x, y: y)]).first else {
            throw GeoIOError("coordinate transformation returned no point")
        }
        return point
    }

    /// Transforms many points at once; throws if any point cannot be transformed.
    public func transform(points: [Coordinate]) throws -> [Coordinate] {
        guard !points.isEmpty else { return [] }
        guard let count = Int32(exactly: points.count) else {
            throw GeoIOError("too many points (\(points.count)) for one transformation call")
        }
        var xs = points.map(\.x), ys = points.map(\.y)
        var success = [Int32](repeating: 0, count: points.count)
        try withHandle { handle in
            try withQuietGDAL {
                _ = OCTTransformEx(handle, count, &xs, &ys, nil, &success)
                if let bad = success.firstIndex(of: 0) {
                    throw GeoIOError.gdal(
                        "cannot transform point \(bad) (\(points[bad].x), \(points[bad].y)) from \(source) to \(target)")
                }
            }
        }
        return (0..<points.count).map { Coordinate(x: xs[$0], y: ys[$0]) }
    }

    /// The bounding box, in the target CRS, of `bounds` given in the source CRS.
    ///
    /// Edges are densified with `densifyPoints` points each (`OCTTransformBounds`) so curved edges
    /// and antimeridian crossings are handled; for a geographic target crossing the antimeridian
    /// `minX` may be greater than `maxX`.
    public func transformBounds(_ bounds: Envelope, densifyPoints: Int = 21) throws -> Envelope {
        var out = Envelope(minX: 0, minY: 0, maxX: 0, maxY: 0)
        let densify = Int32(clamping: max(densifyPoints, 0))
        try withHandle { handle in
            try withQuietGDAL {
                let ok = OCTTransformBounds(handle, bounds.minX, bounds.minY, bounds.maxX, bounds.maxY,
                                            &out.minX, &out.minY, &out.maxX, &out.maxY, densify)
                guard ok != 0 else {
                    throw GeoIOError.gdal("cannot transform bounds from \(source) to \(target)")
                }
            }
        }
        return out
    }
}
