import Foundation
import GeoIO

/// A mask on a pixel grid turned into polygons in map coordinates.
public enum MaskVectorizer {
    /// Every connected component (4-connected) of the mask as a polygon with its holes, in the
    /// grid's CRS, filtered and simplified as `options` says, largest first.
    public static func polygons(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform,
                                options: PolygonOptions) throws -> [Geometry] {
        try options.validate()
        var polygons = MaskPolygonizer.polygons(mask: mask, width: width, height: height, geoTransform: geoTransform)
        let pixelArea = abs(geoTransform.pixelWidth * geoTransform.pixelHeight - geoTransform.rowRotation * geoTransform.columnRotation)
        if options.fillHoles {
            polygons = polygons.map { p in p.polygonRings.first.flatMap { $0.first }.map { Geometry.polygon(rings: [$0]) } ?? p }
        }
        if options.minArea > 0 {
            polygons = polygons.filter { $0.area / pixelArea >= options.minArea }
        }
        polygons.sort { $0.area > $1.area }
        if options.largestOnly { polygons = Array(polygons.prefix(1)) }
        if options.simplify > 0 {
            polygons = try polygons.map { p in try rethrowing("cannot simplify") { try p.simplifiedPreserveTopology(tolerance: options.simplify) } }
                .filter { !$0.isEmpty }
        }
        return polygons
    }
}
