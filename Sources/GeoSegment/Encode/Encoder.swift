import Foundation
import GeoIO
import Kernels
import SAM2

/// Options of `geosam2 encode`.
public struct EncodeOptions: Sendable {
    /// `--bands`: 1-based source bands for R, G, B (nil: by colour interpretation, else the first three).
    public var bands: [Int]?
    public var stretch: StretchMode = .default
    /// Resampling factor (0.5 encodes at half resolution).
    public var scale: Double = 1
    /// Overlap of neighbouring tiles in pixels at level 0; nil: the store's own when resuming,
    /// else ``defaultOverlap``.
    public var overlap: Int?
    /// `--levels K`: pyramid levels above level 0 (at scale 2^−L, L = 1…K; a level is made only
    /// while the level below it needs more than one tile). nil: the store's own when resuming,
    /// else ``defaultLevels``.
    public var levels: Int?
    /// How features are stored: `q16z`, `q16`, `f16` or `f32` (see ``FeatureDType``); nil keeps
    /// the dtype of the store being resumed, and picks `q16z` for a new one.
    public var featureDType: String?
    /// Encode only shard `index` of `count` (0-based).
    public var shard: (index: Int, count: Int)?
    /// Replace a store made with other parameters instead of refusing.
    public var force = false
    /// A CRS to assume when the raster has a geotransform but no CRS.
    public var crs: String?
    /// Tiles in flight and cores per tile; nil: ``EncodeConcurrency/automatic(cores:tilesInFlight:embedDim:availableMemory:)``
    /// for the cores and memory this process may use.
    public var concurrency: EncodeConcurrency?
    /// The image encoder's precision; nil: the store's own when resuming, else
    /// `EncoderPrecision.automatic` (bf16 where the CPU has AVX512_BF16, int16 on AVX2 without AVX-512).
    public var precision: EncoderPrecision?

    public init() {}
}

extension EncodeOptions {
    /// Overlap of a new store's level-0 tiles: an extent of up to 128 px (plus the routing margin)
    /// always fits one tile, and a 100-px building fits one with its margin at 92 % of positions
    /// (70 % without overlap), for 1.31× the tiles of no overlap; what does not fit is answered
    /// by level 1 (docs/performance.md weighs 0, 128 and 256).
    public static let defaultOverlap = 128
    /// Levels a new store gets: objects up to about 2,000 pixels always fit one tile of some level.
    public static let defaultLevels = 3
    /// Overlap of the tiles of levels ≥ 1: an extent of up to 257 level pixels always fits one tile.
    public static let levelOverlap = 256
    /// The most levels `--levels` accepts (2^8 = 256× coarser than the encoded grid).
    public static let maximumLevels = 8
}

/// The model used to encode, with what identifies it in a store.
public struct EncoderModel: Sendable {
    public let model: SAM2Model
    public let checkpointSHA256: String
    public let preset: String?
    /// The checkpoint file (absolute), recorded in new stores.
    public let checkpointPath: String?

    public init(model: SAM2Model, checkpointSHA256: String, preset: String?, checkpointPath: String? = nil) {
        self.model = model
        self.checkpointSHA256 = checkpointSHA256
        self.preset = preset
        self.checkpointPath = checkpointPath
    }
}

/// Progress of an encode run.
public struct EncodeProgress: Sendable {
    /// Tiles of this run (this shard), and how many of them are finished (encoded, empty or found done).
    public var total: Int
    public var finished: Int
    /// Tiles encoded by this run (the ones that cost time).
    public var encoded: Int
    public var skipped: Int
    public var empty: Int
    public var lastTile: String?
    public var elapsed: Double
}

/// What an encode run did.
public struct EncodeSummary: Sendable {
    public var storeURL: URL
    public var encoded: Int
    public var skipped: Int
    public var empty: Int
    public var complete: Bool
}

/// `geosam2 encode`: a raster → a feature store of SAM2 features per 1024×1024 tile.
public enum RasterEncoder {
    /// The default store beside the raster: `STEM.geosam2/`.
    public static func defaultStoreURL(for raster: String) -> URL {
        let url = URL(fileURLWithPath: raster)
        return url.deletingLastPathComponent().appendingPathComponent(url.deletingPathExtension().lastPathComponent + ".geosam2", isDirectory: true)
    }

    /// Plans the store for a raster: the manifest a run with these inputs writes.
    public static func plan(source: RasterSource, options: EncodeOptions, model: EncoderModel) throws -> StoreManifest {
        let size = SAM2Configuration.imageSize
        let overlap = options.overlap ?? EncodeOptions.defaultOverlap
        let grid = try TileGrid(rasterWidth: source.width, rasterHeight: source.height, size: size, overlap: overlap)
        let stretch = try source.computeStretch(options.stretch)
        let transform = source.geoTransform
        var nodata: [String?] = []
        for b in 1...source.original.bandCount {
            let value = try rethrowing { try source.original.band(b).noDataValue }
            nodata.append(value.map { $0.isNaN ? "nan" : "\($0)" })
        }
        let crs = source.spatialReference
        let wkt: String? = try crs.map { srs in try rethrowing { try srs.wkt } }
        let tiles = grid.tiles.map { tileEntry($0, level: 0, transform: transform, nativeWidth: source.width, nativeHeight: source.height) }
        let levels = try planLevels(count: options.levels ?? EncodeOptions.defaultLevels, levelZero: grid, transform: transform)
        let path = source.path.hasPrefix("/vsi") ? source.path : URL(fileURLWithPath: source.path).standardizedFileURL.path
        return StoreManifest(
            formatVersion: StoreManifest.currentFormatVersion,
            tool: "geosam2 \(GeoSAM2Version.current)",
            source: .init(path: path, fingerprint: try FileDigest.fingerprint(of: source.path),
                          width: source.original.width, height: source.original.height, bandCount: source.original.bandCount,
                          crsWKT: wkt, epsg: crs?.epsgCode,
                          geoTransform: (source.original.geoTransform ?? .identity).coefficients, nodata: nodata),
            encoding: .init(bands: source.bands, stretch: stretch, nodataFill: 0, scale: source.scale,
                            width: source.width, height: source.height, geoTransform: transform.coefficients,
                            tileSize: size, overlap: overlap,
                            featureDType: options.featureDType ?? FeatureDType.q16z.rawValue),
            model: .init(preset: model.preset, checkpointSHA256: model.checkpointSHA256, configuration: model.model.configuration,
                         checkpointPath: model.checkpointPath, encoderPrecision: options.precision ?? .automatic),
            tiles: tiles, levels: levels.isEmpty ? nil : levels, complete: false, tileChecksum: StoreManifest.currentTileChecksum)
    }

    /// The manifest entry of a tile of level `level` (transform: that level's pixel → map).
    /// Bounds are cut at the raster's edge, which a level's last pixels may reach past.
    static func tileEntry(_ t: Tile, level: Int, transform: GeoTransform, nativeWidth: Int, nativeHeight: Int) -> StoreManifest.TileEntry {
        let tileTransform = transform.translated(byPixelsX: Double(t.x), y: Double(t.y))
        let f = 1 << level
        let b = transform.scaled(x: 1 / Double(f), y: 1 / Double(f))
            .translated(byPixelsX: Double(t.x * f), y: Double(t.y * f))
            .bounds(width: min(t.width * f, nativeWidth - t.x * f), height: min(t.height * f, nativeHeight - t.y * f))
        let id = level == 0 ? t.id : "l\(level)_\(t.id)"
        return StoreManifest.TileEntry(
            id: id, level: level == 0 ? nil : level, row: t.row, column: t.column, window: [t.x, t.y, t.width, t.height],
            bounds: [b.minX, b.minY, b.maxX, b.maxY], geoTransform: tileTransform.coefficients,
            state: .pending, file: "\(FeatureStore.tilesDirectory)/\(id).safetensors")
    }

    /// Levels 1…`count` over the level-0 grid: each ⌈size / 2^L⌉ pixels with 2^L-times larger
    /// pixels, tiled with ``EncodeOptions/levelOverlap``; stops once a level fits one tile.
    static func planLevels(count: Int, levelZero: TileGrid, transform: GeoTransform) throws -> [StoreManifest.Level] {
        guard (0...EncodeOptions.maximumLevels).contains(count) else {
            throw GeoSegmentError("--levels must be between 0 and \(EncodeOptions.maximumLevels), got \(count)")
        }
        let (width, height, size) = (levelZero.rasterWidth, levelZero.rasterHeight, levelZero.size)
        var levels: [StoreManifest.Level] = []
        var below = levelZero
        var level = 1
        while level <= count, below.count > 1 {
            let f = 1 << level
            let (w, h) = ((width + f - 1) / f, (height + f - 1) / f)
            let grid = try TileGrid(rasterWidth: w, rasterHeight: h, size: size, overlap: EncodeOptions.levelOverlap)
            let levelTransform = transform.scaled(x: Double(f), y: Double(f))
            levels.append(StoreManifest.Level(
                level: level, width: w, height: h, geoTransform: levelTransform.coefficients, overlap: grid.overlap,
                tiles: grid.tiles.map { tileEntry($0, level: level, transform: levelTransform, nativeWidth: width, nativeHeight: height) }))
            below = grid
            level += 1
        }
        return levels
    }

    /// Encodes a raster into a store, resuming a store made with the same inputs.
    public static func run(raster: String, store storeURL: URL, model: EncoderModel, options: EncodeOptions,
                           progress: (EncodeProgress) -> Void = { _ in }) throws -> EncodeSummary {
        let (store, source) = try prepare(raster: raster, store: storeURL, model: model, options: options)
        let writerLock = try store.lockForWriting()
        defer { withExtendedLifetime(writerLock) {} }
        let ordered = encodingOrder(of: store.manifest)
        let tiles = Shard.share(of: ordered, options.shard)
        let status = try encodeTiles(tiles, from: source, into: store, model: model, concurrency: options.concurrency, progress: progress)
        let complete = try store.finalizeIfComplete()
        return EncodeSummary(storeURL: storeURL, encoded: status.encoded, skipped: status.skipped, empty: status.empty, complete: complete)
    }

    /// The order `encode` takes the tiles in: coarsest level first (a few tiles that cover the
    /// whole raster, useful before the rest), level 0 last.
    public static func encodingOrder(of manifest: StoreManifest) -> [StoreManifest.TileEntry] {
        (manifest.levels ?? []).reversed().flatMap(\.tiles) + manifest.tiles
    }

    /// The precision a run encodes `storeURL` in: `options.precision`, else the existing store's,
    /// else `EncoderPrecision.automatic`; an error when this CPU cannot run it.
    public static func precision(for storeURL: URL, options: EncodeOptions) throws -> EncoderPrecision {
        var precision = options.precision ?? .automatic
        if options.precision == nil, FeatureStore.exists(at: storeURL), let existing = try? FeatureStore.open(storeURL) {
            precision = existing.manifest.model.precision
            guard precision.isAvailable else { _ = try existing.precision(); return precision }
        }
        guard precision.isAvailable else {
            throw GeoSegmentError("--precision \(precision.rawValue) needs \(precision.requirement), which this one is not (use auto or fp32)")
        }
        return precision
    }

    /// Opens the store for a raster (resuming one made with the same inputs, adding levels when
    /// asked, replacing it with `force`) or creates it, without encoding anything; returns it with
    /// the raster opened as the store reads it.
    public static func prepare(raster: String, store storeURL: URL, model: EncoderModel,
                               options: EncodeOptions) throws -> (store: FeatureStore, source: RasterSource) {
        var options = options
        if let dtype = options.featureDType, FeatureDType(rawValue: dtype) == nil {
            throw GeoSegmentError("--dtype must be one of \(FeatureDType.allCases.map(\.rawValue).joined(separator: ", ")), got \(dtype)")
        }
        if FeatureStore.exists(at: storeURL) {
            // Resuming without --dtype, --levels or --overlap continues the store as it was made
            // (stores from before q16z became the default are q16; stores from before 0.3 have one
            // level and no overlap).
            let existing = try FeatureStore.open(storeURL).manifest
            if options.featureDType == nil { options.featureDType = existing.encoding.featureDType }
            if options.levels == nil { options.levels = existing.levelCount }
            if options.overlap == nil { options.overlap = existing.encoding.overlap }
        }
        options.precision = try precision(for: storeURL, options: options)
        try Shard.validate(options.shard)
        let source = try RasterSource(path: raster, bands: options.bands, scale: options.scale, crs: options.crs)
        let planned = try plan(source: source, options: options, model: model)

        let store: FeatureStore
        if FeatureStore.exists(at: storeURL) {
            let existing = try FeatureStore.open(storeURL)
            var differences = planned.differences(from: existing.manifest)
            let (had, wanted) = (existing.manifest.levelIdentities, planned.levelIdentities)
            let gainsLevels = wanted.count > had.count && Array(wanted.prefix(had.count)) == had
            if wanted != had && !gainsLevels { differences.append("pyramid levels (\(had.count) vs \(wanted.count))") }
            if differences.isEmpty {
                store = existing
                if gainsLevels {
                    // More levels over the same level-0 tiles: keep every tile, add the new levels.
                    var manifest = existing.manifest
                    manifest.levels = (manifest.levels ?? []) + (planned.levels ?? []).dropFirst(had.count)
                    manifest.complete = false
                    try store.replaceManifest(manifest)
                }
            } else if options.force {
                let replacing = try existing.lockForWriting(exclusive: true)
                defer { withExtendedLifetime(replacing) {} }
                try rethrowing("cannot clear \(storeURL.path)") {
                    try FileManager.default.removeItem(at: storeURL.appendingPathComponent(FeatureStore.tilesDirectory))
                }
                store = try FeatureStore.create(at: storeURL, manifest: planned)
            } else {
                throw GeoSegmentError("\(storeURL.path) holds features that differ from this encode in \(differences.joined(separator: ", ")); use --force to replace them or --out for another store")
            }
        } else {
            store = try FeatureStore.create(at: storeURL, manifest: planned)
        }
        store.removeLeftovers()
        return (store, source)
    }
}

extension RasterEncoder {
    /// The store's raster opened as it was encoded (bands, scale, CRS), refusing a raster that
    /// changed since.
    public static func openSource(of store: FeatureStore) throws -> RasterSource {
        let m = store.manifest
        let fingerprint = try rethrowing("the store's raster \(m.source.path) is not at hand") { try FileDigest.fingerprint(of: m.source.path) }
        guard fingerprint == m.source.fingerprint else {
            throw GeoSegmentError("\(m.source.path) changed since the store was encoded; re-encode it with `geosam2 encode --force`")
        }
        let source = try RasterSource(path: m.source.path, bands: m.encoding.bands.rgb, scale: m.encoding.scale, crs: m.source.crsWKT)
        guard source.width == m.encoding.width, source.height == m.encoding.height else {
            throw GeoSegmentError("\(m.source.path) now reads as \(source.width)×\(source.height), the store was encoded at \(m.encoding.width)×\(m.encoding.height)")
        }
        return source
    }

    /// The 8-bit RGB image (`tileSize²`, row-major, padding and invalid pixels 0) the encoder was
    /// given for tile `id` of any level, read again from the store's raster: what the model saw.
    public static func tileImage(_ id: String, of store: FeatureStore) throws -> (pixels: [UInt8], size: Int) {
        guard let entry = store.tile(id: id) else { throw GeoSegmentError("no tile \(id) in \(store.url.path)") }
        let source = try openSource(of: store)
        let size = store.manifest.encoding.tileSize
        let tile = Tile(row: entry.row, column: entry.column, x: entry.window[0], y: entry.window[1],
                        width: entry.window[2], height: entry.window[3])
        return (try source.readTile(tile, size: size, stretch: store.manifest.encoding.stretch, level: entry.levelIndex).pixels, size)
    }

    /// Re-encodes the given tiles of a store from its raster, with the parameters its manifest
    /// records (bands, stretch, scale, grid, dtype): for `verify --repair`. The bad files are
    /// moved aside first (`.corrupt`), so an interrupted repair leaves them pending, never lost
    /// in place. Refuses when the raster changed since the store was made or the model differs.
    public static func repair(_ tiles: [String], in store: FeatureStore, model: EncoderModel,
                              progress: (EncodeProgress) -> Void = { _ in }) throws -> EncodeSummary {
        let m = store.manifest
        guard model.checkpointSHA256 == m.model.checkpointSHA256 else {
            throw GeoSegmentError("the model is not the checkpoint the store was encoded with (SHA-256 \(m.model.checkpointSHA256.prefix(12))…)")
        }
        let source = try openSource(of: store)
        let writerLock = try store.lockForWriting()
        defer { withExtendedLifetime(writerLock) {} }
        try store.setAside(tiles)
        let entries = try tiles.map { id in
            guard let entry = store.tile(id: id) else { throw GeoSegmentError("no tile \(id) in \(store.url.path)") }
            return entry
        }
        let status = try encodeTiles(entries, from: source, into: store, model: model, concurrency: nil, progress: progress)
        return EncodeSummary(storeURL: store.url, encoded: status.encoded, skipped: 0, empty: status.empty,
                             complete: try store.finalizeIfComplete())
    }
}

extension RasterEncoder {
    /// Encodes (or skips, when done or empty) `tiles` through ``TilePipeline``, reporting after
    /// each tile; returns the final counts.
    static func encodeTiles(_ tiles: [StoreManifest.TileEntry], from source: RasterSource, into store: FeatureStore,
                            model: EncoderModel, concurrency: EncodeConcurrency?,
                            progress: (EncodeProgress) -> Void) throws -> EncodeProgress {
        var status = EncodeProgress(total: tiles.count, finished: 0, encoded: 0, skipped: 0, empty: 0, lastTile: nil, elapsed: 0)
        let start = DispatchTime.now().uptimeNanoseconds
        progress(status)
        try TilePipeline.run(tiles, from: source, openSource: source.reopened, into: store, model: model, concurrency: concurrency ?? .automatic(embedDim: model.model.configuration.embedDim)) { id, outcome in
            switch outcome {
            case .encoded: status.encoded += 1
            case .empty: status.empty += 1
            case .skipped: status.skipped += 1
            }
            status.finished += 1
            status.lastTile = id
            status.elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            progress(status)
        }
        return status
    }

    /// Encodes one tile of any level with the store's stretch and tile size (or marks it empty
    /// when no pixel is valid); returns whether features were written.
    static func encode(_ entry: StoreManifest.TileEntry, from source: RasterSource, into store: FeatureStore,
                       model: EncoderModel) throws -> Bool {
        let size = store.manifest.encoding.tileSize
        let tile = Tile(row: entry.row, column: entry.column, x: entry.window[0], y: entry.window[1],
                        width: entry.window[2], height: entry.window[3])
        let (pixels, validCount, valid) = try source.readTile(tile, size: size, stretch: store.manifest.encoding.stretch,
                                                              level: entry.levelIndex)
        guard validCount > 0 else {
            try store.markEmpty(entry)
            return false
        }
        let image = try rethrowing { try RGBImage(width: size, height: size, pixels: pixels) }
        let features = try rethrowing("tile \(entry.id)") { try model.model.encode(image, precision: try store.precision()) }
        try store.writeFeatures(features, validity: validCount < valid.count ? valid : nil, for: entry)
        return true
    }
}

/// The tool's version, recorded in stores.
public enum GeoSAM2Version {
    public static let current = "0.3.0"
}
