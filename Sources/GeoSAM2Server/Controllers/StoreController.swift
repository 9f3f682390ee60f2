import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// `GET /api/store` (what is served), `GET /api/tiles` (the encoding tiles of every pyramid
/// level, for "show patch boundaries") and `GET /health`. While the store is encoded on demand,
/// both report the tiles' states as they are at the request.
struct StoreController<Context: RequestContext> {
    let store: FeatureStore
    let onDemand: OnDemandEncoder?
    let info: StoreInfo
    /// Each tile with its outline, in the store's CRS.
    let outlines: [(tile: StoreManifest.TileEntry, geometry: Geometry)]

    init(store: FeatureStore, onDemand: OnDemandEncoder?, map: MapGrid, mapError: String?, configuration: ServerConfiguration) throws {
        self.store = store
        self.onDemand = onDemand
        info = StoreInfo(store: store, map: map, mapError: mapError, configuration: configuration)
        outlines = try store.manifest.allTiles.map { tile in
            guard let transform = GeoTransform(coefficients: tile.geoTransform) else {
                throw GeoSAM2ServerError(.internalServerError, "tile \(tile.id) has an invalid geotransform")
            }
            let (w, h) = (Double(tile.window[2]), Double(tile.window[3]))
            let ring = [(0.0, 0.0), (w, 0), (w, h), (0, h), (0, 0)].map { transform.pixelToMap(x: $0.0, y: $0.1) }
            return (tile, Geometry.polygon(rings: [ring]))
        }
    }

    /// Every tile with its state, and what the on-demand encoder does with it (`activity`:
    /// `encoding`, `queued` for a prompt, `failed`, or null).
    func tiles() -> JSONValue {
        let status = onDemand?.status()
        return GeoJSON.collection(outlines.map { tile, geometry in
            var activity = JSONValue.null
            if let status {
                if status.current?.tile == tile.id { activity = .string("encoding") }
                else if status.queued.contains(tile.id) { activity = .string("queued") }
                else if status.failed[tile.id] != nil { activity = .string("failed") }
            }
            return GeoJSON.feature(id: nil, geometry: geometry, properties: [
                "id": .string(tile.id), "level": .integer(tile.levelIndex), "row": .integer(tile.row), "column": .integer(tile.column),
                "state": .string(store.state(of: tile).rawValue), "activity": activity,
                "window": .array(tile.window.map { .integer($0) }),
            ])
        }, epsg: store.manifest.source.epsg)
    }

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/store", allowed: [.get])
        refuseOtherMethods(on: router, "/api/tiles", allowed: [.get])
        refuseOtherMethods(on: router, "/health", allowed: [.get])
        router.get("/api/store") { _, _ in
            guard onDemand != nil else { return try jsonResponse(info) }
            var live = info
            live.refreshStates(of: store)
            return try jsonResponse(live)
        }
        router.get("/api/tiles") { _, _ in jsonResponse(tiles(), contentType: "application/geo+json") }
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
        crs = m.source.crsWKT
        epsg = m.source.epsg
        crsName = srs?.name
        units = srs.map { $0.isGeographic ? "degree" : $0.linearUnits.name } ?? "pixel"
        bounds = [b.minX, b.minY, b.maxX, b.maxY]
        tiles = m.tiles.count
        levels = 1 + m.levelCount
        tilesDone = 0
        tilesEmpty = 0
        tileSize = m.encoding.tileSize
        complete = false
        raster = Raster(name: URL(fileURLWithPath: m.source.path).lastPathComponent, width: m.source.width, height: m.source.height,
                        geotransform: transform.coefficients, bands: m.encoding.bands.rgb, stretch: m.encoding.stretch.mode.description)
        model = Model(preset: m.model.preset, sha256: m.model.checkpointSHA256)
        map = Map(tileSize: MapGrid.tileSize, nativeZoom: grid.nativeZoom, maxZoom: grid.nativeZoom + MapGrid.overZoom,
                  width: grid.width, height: grid.height, geotransform: transform.coefficients,
                  inverse: (transform.inverse ?? .identity).coefficients, error: mapError)
        output = URL(fileURLWithPath: configuration.outputPath).lastPathComponent
        maxBodyBytes = configuration.maxBodyBytes
        refreshStates(of: store)
    }

    /// The tile counts and completeness, from the tiles' files now.
    mutating func refreshStates(of store: FeatureStore) {
        let m = store.manifest
        var done = 0, empty = 0
        for tile in m.tiles {
            switch store.state(of: tile) {
            case .done: done += 1
            case .empty: empty += 1
            case .pending: break
            }
        }
        tilesDone = done
        tilesEmpty = empty
        // Level 0 was just counted: only the levels above it are looked at again.
        complete = done + empty == m.tiles.count && (m.levels ?? []).allSatisfy { $0.tiles.allSatisfy { store.state(of: $0) != .pending } }
    }
}
