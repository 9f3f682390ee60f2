import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// `GET /api/store` (what is served), `GET /api/tiles` (the encoding tiles of every pyramid
/// level, for "show patch boundaries") and `GET /health`.
struct StoreController<Context: RequestContext> {
    let info: StoreInfo
    let tiles: JSONValue

    init(store: FeatureStore, map: MapGrid, mapError: String?, configuration: ServerConfiguration) throws {
        info = StoreInfo(store: store, map: map, mapError: mapError, configuration: configuration)
        let m = store.manifest
        tiles = GeoJSON.collection(try m.allTiles.map { tile in
            guard let transform = GeoTransform(coefficients: tile.geoTransform) else {
                throw GeoSAM2ServerError(.internalServerError, "tile \(tile.id) has an invalid geotransform")
            }
            let (w, h) = (Double(tile.window[2]), Double(tile.window[3]))
            let ring = [(0.0, 0.0), (w, 0), (w, h), (0, h), (0, 0)].map { transform.pixelToMap(x: $0.0, y: $0.1) }
            return GeoJSON.feature(id: nil, geometry: .polygon(rings: [ring]), properties: [
                "id": .string(tile.id), "level": .integer(tile.levelIndex), "row": .integer(tile.row), "column": .integer(tile.column),
                "state": .string(store.state(of: tile).rawValue), "window": .array(tile.window.map { .integer($0) }),
            ])
        }, epsg: m.source.epsg)
    }

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/store", allowed: [.get])
        refuseOtherMethods(on: router, "/api/tiles", allowed: [.get])
        refuseOtherMethods(on: router, "/health", allowed: [.get])
        router.get("/api/store") { _, _ in try jsonResponse(info) }
        router.get("/api/tiles") { _, _ in jsonResponse(tiles, contentType: "application/geo+json") }
        router.get("/health") { _, _ in try jsonResponse(["status": "ok"]) }
    }
}

/// The answer of `GET /api/store`.
struct StoreInfo: Codable, Sendable {
    struct Raster: Codable, Sendable {
        var name: String
        var width: Int
        var height: Int
        var geotransform: [Double]
        var bands: [Int]
        var stretch: String
    }
    struct Model: Codable, Sendable {
        var preset: String?
        var sha256: String

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(preset, forKey: .preset)
            try c.encode(sha256, forKey: .sha256)
        }
    }
    /// What the web map needs: the raster's pixel grid and its zoom levels (see ``MapGrid``).
    struct Map: Codable, Sendable {
        var tileSize: Int
        var nativeZoom: Int
        var maxZoom: Int
        var width: Int
        var height: Int
        /// Pixel → map (GDAL order) and map → pixel.
        var geotransform: [Double]
        var inverse: [Double]
        /// Why the map cannot show the raster, if it cannot.
        var error: String?

        enum CodingKeys: String, CodingKey {
            case tileSize = "tile_size", nativeZoom = "native_zoom", maxZoom = "max_zoom", width, height, geotransform, inverse, error
        }
    }

    var crs: String?
    var epsg: Int?
    var crsName: String?
    var units: String?
    var bounds: [Double]
    /// Level-0 tiles, and how many are done and empty.
    var tiles: Int
    /// Pyramid levels, level 0 included.
    var levels: Int
    var tilesDone: Int
    var tilesEmpty: Int
    var tileSize: Int
    var complete: Bool
    var raster: Raster
    var model: Model
    var map: Map
    var output: String
    var maxBodyBytes: Int

    enum CodingKeys: String, CodingKey {
        case crs, epsg, crsName = "crs_name", units, bounds, tiles, levels, tilesDone = "tiles_done", tilesEmpty = "tiles_empty"
        case tileSize = "tile_size", complete, raster, model, map, output, maxBodyBytes = "max_body_bytes"
    }

    /// Optional members are written as `null` (the synthesized encoder would leave them out).
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(crs, forKey: .crs)
        try c.encode(epsg, forKey: .epsg)
        try c.encode(crsName, forKey: .crsName)
        try c.encode(units, forKey: .units)
        try c.encode(bounds, forKey: .bounds)
        try c.encode(tiles, forKey: .tiles)
        try c.encode(levels, forKey: .levels)
        try c.encode(tilesDone, forKey: .tilesDone)
        try c.encode(tilesEmpty, forKey: .tilesEmpty)
        try c.encode(tileSize, forKey: .tileSize)
        try c.encode(complete, forKey: .complete)
        try c.encode(raster, forKey: .raster)
        try c.encode(model, forKey: .model)
        try c.encode(map, forKey: .map)
        try c.encode(output, forKey: .output)
        try c.encode(maxBodyBytes, forKey: .maxBodyBytes)
    }

    init(store: FeatureStore, map grid: MapGrid, mapError: String?, configuration: ServerConfiguration) {
        let m = store.manifest
        let transform = GeoTransform(coefficients: m.source.geoTransform) ?? .identity
        let b = transform.bounds(width: m.source.width, height: m.source.height)
        let srs = m.source.crsWKT.flatMap { try? SpatialReference(wkt: $0) }
        var done = 0, empty = 0
        for tile in m.tiles {
            switch store.state(of: tile) {
            case .done: done += 1
            case .empty: empty += 1
            case .pending: break
            }
        }
        crs = m.source.crsWKT
        epsg = m.source.epsg
        crsName = srs?.name
        units = srs.map { $0.isGeographic ? "degree" : $0.linearUnits.name } ?? "pixel"
        bounds = [b.minX, b.minY, b.maxX, b.maxY]
        tiles = m.tiles.count
        levels = 1 + m.levelCount
        tilesDone = done
        tilesEmpty = empty
        tileSize = m.encoding.tileSize
        complete = m.allTiles.allSatisfy { store.state(of: $0) != .pending }
        raster = Raster(name: URL(fileURLWithPath: m.source.path).lastPathComponent, width: m.source.width, height: m.source.height,
                        geotransform: transform.coefficients, bands: m.encoding.bands.rgb, stretch: m.encoding.stretch.mode.description)
        model = Model(preset: m.model.preset, sha256: m.model.checkpointSHA256)
        map = Map(tileSize: MapGrid.tileSize, nativeZoom: grid.nativeZoom, maxZoom: grid.nativeZoom + MapGrid.overZoom,
                  width: grid.width, height: grid.height, geotransform: transform.coefficients,
                  inverse: (transform.inverse ?? .identity).coefficients, error: mapError)
        output = URL(fileURLWithPath: configuration.outputPath).lastPathComponent
        maxBodyBytes = configuration.maxBodyBytes
    }
}
