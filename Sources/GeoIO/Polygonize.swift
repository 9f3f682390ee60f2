import CGDAL

/// One polygon (with holes) per connected region of non-zero pixels of a binary mask
/// (`GDALPolygonize` on an in-memory raster, masked by itself so zero pixels produce nothing).
///
/// - Parameters:
///   - mask: `width` × `height` values, row-major; any non-zero value counts as foreground.
///   - geoTransform: maps pixel corners to map coordinates (``GeoTransform/identity``: pixel coordinates).
///   - srs: the CRS of the output (only passed through to the temporary layer).
///   - connectedness8: join pixels touching at corners (8-connectedness) instead of only at edges.
/// - Returns: polygons in GDAL's output order (by the scan line where a region first appears).
///   Their edges follow pixel boundaries.
public func polygonize(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform = .identity,
                       srs: SpatialReference? = nil, connectedness8: Bool = false) throws -> [Geometry] {
    let (count, overflow) = width.multipliedReportingOverflow(by: height)
    guard width > 0, height > 0, !overflow, mask.count == count else {
        throw GeoIOError("mask has \(mask.count) values, expected \(width)×\(height)")
    }
    let raster = try RasterDataset.create(driver: "MEM", path: "", width: width, height: height,
                                          bandCount: 1, dataType: .byte)
    try raster.setGeoTransform(geoTransform)
    let band = try raster.band(1)
    try band.write(values: mask.map { $0 == 0 ? UInt8(0) : 1 })

    let vectors = try VectorDataset.create(driver: "Memory", path: "")
    let layer = try vectors.createLayer(name: "regions", srs: srs, geometryType: .polygon,
                                        fields: [FieldDefinition("value", type: .integer)])
    let options = StringList(connectedness8 ? ["8CONNECTED=8"] : [])
    try withQuietGDAL {
        let error = options.withCSL { GDALPolygonize(band.handle, band.handle, layer.handle, 0, $0, nil, nil) }
        guard error == CE_None else { throw GeoIOError.gdal("cannot polygonize mask") }
    }
    return try layer.features().compactMap(\.geometry)
}

/// Burns `geometries` (value 1) into a `width` × `height` byte mask (`GDALRasterizeGeometries`).
///
/// - Parameters:
///   - geoTransform: maps pixel corners to the geometries' map coordinates.
///   - allTouched: burn every pixel a geometry touches, instead of only pixels whose centre is inside.
/// - Returns: `width` × `height` values, row-major: 1 inside a geometry, 0 elsewhere.
public func rasterize(geometries: [Geometry], width: Int, height: Int,
                      geoTransform: GeoTransform = .identity, allTouched: Bool = false) throws -> [UInt8] {
    let raster = try RasterDataset.create(driver: "MEM", path: "", width: width, height: height,
                                          bandCount: 1, dataType: .byte)
    try raster.setGeoTransform(geoTransform)
    if !geometries.isEmpty {
        let ogr = try geometries.map { try OGRGeometry(wkb: $0.wkb) }
        let handles: [OGRGeometryH?] = ogr.map(\.handle)
        let burn = [Double](repeating: 1, count: geometries.count)
        var bands: [Int32] = [1]
        let options = StringList(allTouched ? ["ALL_TOUCHED=TRUE"] : [])
        guard let count = Int32(exactly: geometries.count) else {
            throw GeoIOError("too many geometries to rasterize (\(geometries.count))")
        }
        try withExtendedLifetime(ogr) {
            try withQuietGDAL {
                let error = options.withCSL {
                    GDALRasterizeGeometries(raster.handle, 1, &bands, count, handles, nil, nil, burn, $0, nil, nil)
                }
                guard error == CE_None else { throw GeoIOError.gdal("cannot rasterize geometries") }
            }
        }
    }
    return try raster.band(1).read(as: UInt8.self)
}
