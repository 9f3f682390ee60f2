import Foundation
import GeoIO

/// A mask on a pixel grid turned into polygons in map coordinates.
public enum MaskVectorizer {
    /// Every connected component (4-connected) of the mask as a polygon with its holes, in the
    /// grid's CRS, filtered and simplified as `options` says, largest first.
    public static func polygons(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform,
                                options: PolygonOptions) throws -> [Geometry] {
        precondition(mask.count == width * height, "mask has \(mask.count) values for \(width)×\(height)")
        let runs = mask.withUnsafeBufferPointer { RowRuns($0, width: width, height: height) }
        return try polygons(runs: runs, width: width, geoTransform: geoTransform, options: options)
    }

    /// `polygons` of a mask given by its row runs.
    static func polygons(runs: RowRuns, width: Int, geoTransform: GeoTransform, options: PolygonOptions) throws -> [Geometry] {
        try options.validate()
        // Areas come from the tracer's pixel counts: asking GDAL for each polygon's area (once per
        // comparison when sorting) cost more than the tracing on masks with many parts.
        var parts = MaskPolygonizer.components(runs: runs, width: width, geoTransform: geoTransform)
        if options.fillHoles {
            parts = parts.map { p in
                guard let shell = p.polygon.polygonRings.first?.first else { return p }
                return .init(polygon: .polygon(rings: [shell]), pixels: p.outerPixels, outerPixels: p.outerPixels)
            }
        }
        if options.minArea > 0 {
            parts = parts.filter { Double($0.pixels) >= options.minArea }
        }
        // Largest first; ties keep the tracer's (raster) order.
        parts = parts.enumerated().sorted { ($0.element.pixels, $1.offset) > ($1.element.pixels, $0.offset) }.map(\.element)
        if options.largestOnly { parts = Array(parts.prefix(1)) }
        var polygons = parts.map(\.polygon)
        if options.regularize {
            let c = geoTransform.coefficients
            let pixel = max((c[1] * c[1] + c[4] * c[4]).squareRoot(), (c[2] * c[2] + c[5] * c[5]).squareRoot())
            let tolerance = max(options.simplify, 1.5 * pixel)
            return polygons.map { OutlineRegularizer.regularize($0, tolerance: tolerance) }.filter { !$0.isEmpty }
        }
        if options.simplify > 0 {
            polygons = try polygons.map { p in try rethrowing("cannot simplify") { try p.simplifiedPreserveTopology(tolerance: options.simplify) } }
                .filter { !$0.isEmpty }
        }
        return polygons
    }
}
