import Foundation
import GeoIO

/// Web map tiles (XYZ / TMS URL templates, WMS and WMTS through GDAL's WMS driver) as a raster
/// to encode: the part of the map inside a box, at a zoom level or resolution, fetched once into
/// a local GeoTIFF beside the store, which then encodes like any raster (and resumes without
/// fetching again).
public struct WebMapRequest: Sendable, Equatable, Codable {
    /// An XYZ template with `{z}`, `{x}` and `{y}` (e.g. `https://tile.example.org/{z}/{x}/{y}.png`),
    /// a GDAL WMS service description (`<GDAL_WMS>…`), or a `WMS:`/`WMTS:` connection string.
    public var source: String
    /// The area, in `crs` (nil: EPSG:3857 for an XYZ template, else the service's).
    public var box: MapBox
    public var crs: String?
    /// The XYZ zoom level; or, for any source, the output resolution in the service's CRS units.
    public var zoom: Int?
    public var resolution: Double?

    public init(source: String, box: MapBox, crs: String? = nil, zoom: Int? = nil, resolution: Double? = nil) {
        (self.source, self.box, self.crs, self.zoom, self.resolution) = (source, box, crs, zoom, resolution)
    }

    /// Whether a raster argument names a web map rather than a file.
    public static func isWebMap(_ source: String) -> Bool {
        isTemplate(source) || source.hasPrefix("<GDAL_WMS") || source.hasPrefix("WMS:") || source.hasPrefix("WMTS:")
    }

    static func isTemplate(_ source: String) -> Bool { ["{z}", "{x}", "{y}"].allSatisfy(source.contains) }

    /// The GDAL dataset description: an XYZ template becomes a TMS service on the Web Mercator
    /// tile pyramid at `zoom`.
    func datasetDescription() throws -> String {
        guard Self.isTemplate(source) else { return source }
        guard let zoom, (0...24).contains(zoom) else { throw GeoSegmentError("an XYZ template needs --zoom from 0 to 24") }
        let url = source.replacingOccurrences(of: "{z}", with: "${z}").replacingOccurrences(of: "{x}", with: "${x}")
            .replacingOccurrences(of: "{y}", with: "${y}").replacingOccurrences(of: "&", with: "&amp;")
        let edge = 20_037_508.342789244
        return """
            <GDAL_WMS><Service name="TMS"><ServerUrl>\(url)</ServerUrl></Service>\
            <DataWindow><UpperLeftX>\(-edge)</UpperLeftX><UpperLeftY>\(edge)</UpperLeftY><LowerRightX>\(edge)</LowerRightX>\
            <LowerRightY>\(-edge)</LowerRightY><TileLevel>\(zoom)</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>\
            <YOrigin>top</YOrigin></DataWindow><Projection>EPSG:3857</Projection><BlockSizeX>256</BlockSizeX>\
            <BlockSizeY>256</BlockSizeY><BandsCount>3</BandsCount><ZeroBlockHttpCodes>204,404</ZeroBlockHttpCodes></GDAL_WMS>
            """
    }

    /// Fetches the area into a tiled GeoTIFF at `path` (replaced only once complete) and records
    /// the request beside it (`path.json`); a second call with the same request keeps the file.
    /// - Returns: true when it fetched, false when the file was already there.
    @discardableResult
    public func materialize(to path: String) throws -> Bool {
        guard box.maxX > box.minX, box.maxY > box.minY else { throw GeoSegmentError("--bbox must have minx < maxx and miny < maxy") }
        if let resolution { guard resolution.isFinite, resolution > 0 else { throw GeoSegmentError("--resolution must be positive") } }
        guard zoom != nil || resolution != nil || !Self.isTemplate(source) else {
            throw GeoSegmentError("an XYZ template needs --zoom (or --resolution)")
        }
        let record = URL(fileURLWithPath: path + ".json")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let wanted = try encoder.encode(self)
        let fm = FileManager.default
        if fm.fileExists(atPath: path), let existing = try? Data(contentsOf: record), existing == wanted { return false }
        var request = self
        if Self.isTemplate(source), request.zoom == nil, let r = resolution {
            // The coarsest zoom whose pixels are no larger than the resolution asked for.
            request.zoom = max(0, min(24, Int((log2(40_075_016.685578488 / 256 / r)).rounded(.up))))
        }
        let description = try request.datasetDescription()
        let dataset = try rethrowing("cannot open the web map") { try RasterDataset.open(description) }
        var arguments = ["-of", "GTiff", "-co", "TILED=YES", "-co", "COMPRESS=DEFLATE",
                         "-projwin", "\(box.minX)", "\(box.maxY)", "\(box.maxX)", "\(box.minY)"]
        if let crs { arguments += ["-projwin_srs", crs] }
        if let resolution { arguments += ["-tr", "\(resolution)", "\(resolution)"] }
        if dataset.bandCount > 3 { arguments += ["-b", "1", "-b", "2", "-b", "3"] }  // no alpha in the store
        let partial = path + ".partial.tif"
        try? fm.removeItem(atPath: partial)
        try rethrowing("cannot fetch the web map's tiles") {
            let fetched = try dataset.translate(to: partial, arguments: arguments)
            try fetched.flush()
        }
        if rename(partial, path) != 0 { throw GeoSegmentError("cannot move \(partial) to \(path): \(String(cString: strerror(errno)))") }
        try FeatureStore.atomicWrite(wanted, to: record)
        return true
    }
}
