import Foundation
import GeoIO
import SAM2

/// What a `generate` run did.
public struct GenerateSummary: Sendable {
    /// Tiles of this run, segmented now, and found done by an earlier run.
    public var tiles: Int
    public var segmented: Int
    public var resumed: Int
    /// Objects written (nil when this run only segmented its shard).
    public var objects: Int?
    /// Masks kept by the tiles' own NMS, before merging across tiles.
    public var tileMasks: Int?
}

/// Segment everything on a store: SAM2's automatic mask generator on every tile (or those meeting
/// a box), with each tile treated as one official crop, and objects merged across tiles and
/// pyramid levels (``ObjectMerger``) into one vector file.
///
/// A run is resumable and can be split: each tile's masks go to a part file in a work directory
/// beside the output (`OUT.parts/`, one checksummed file per tile, written atomically), a rerun
/// skips the tiles whose part is there, `shard` segments a share of the tiles only, and the merge
/// (the run without a shard) reads the parts through a small cache, so memory is bounded by the
/// masks near a tile, not by the raster. The output is written to a scratch file and renamed over
/// `OUT` once complete.
public final class RasterMaskGenerator: @unchecked Sendable {
    // @unchecked: immutable after init; the segmenter is thread-safe.
    public let segmenter: Segmenter
    public let options: GenerateOptions
    let source: any TileMaskSource
    let levels: [PyramidLevel]

    public convenience init(segmenter: Segmenter, options: GenerateOptions = GenerateOptions()) throws {
        try options.validate()
        let generator = try rethrowing { try AutomaticMaskGenerator(model: segmenter.model, options: options.masks) }
        try self.init(segmenter: segmenter, options: options,
                      source: AutomaticTileMasks(segmenter: segmenter, generator: generator, edgeTolerance: options.edgeTolerance))
    }

    init(segmenter: Segmenter, options: GenerateOptions, source: any TileMaskSource) throws {
        try options.validate()
        self.segmenter = segmenter
        self.options = options
        self.source = source
        let all = segmenter.levels
        if let wanted = options.levels {
            for l in wanted where !all.indices.contains(l) {
                throw GeoSegmentError("the store has no level \(l) (levels 0–\(all.count - 1))")
            }
            levels = all.filter { wanted.contains($0.level) }
        } else {
            levels = all
        }
    }

    /// The tiles a run covers: every tile of the chosen levels, or those meeting `bbox` (in `crs`,
    /// nil: the store's), coarsest level last; tiles holding only nodata are left out.
    public func tiles(meeting bbox: MapBox? = nil, crs: String? = nil) throws -> [StoreManifest.TileEntry] {
        let box = try bbox.map { try segmenter.toStoreCRS($0, from: crs) }
        var result: [StoreManifest.TileEntry] = []
        for level in levels {
            let pixels = box.flatMap { level.pixelBox($0.corners) }
            if box != nil, pixels == nil { continue }
            for t in level.tiles where segmenter.store.state(of: t) != .empty {
                if let p = pixels, !PixelBox(window: t.window).intersects(p) { continue }
                result.append(t)
            }
        }
        return result
    }

    /// The work directory of an output file.
    public static func workDirectory(for output: String) -> URL { URL(fileURLWithPath: output + ".parts", isDirectory: true) }

    /// What a run's parts depend on: the store's grid and model, and the options.
    struct RunIdentity: Codable, Equatable {
        var format = 1
        var store: String
        var options: GenerateOptions
    }

    var runIdentity: RunIdentity {
        let m = segmenter.store.manifest
        let store = [m.source.fingerprint, m.model.checkpointSHA256, "\(m.encoding.width)x\(m.encoding.height)",
                     m.encoding.geoTransform.map { "\($0)" }.joined(separator: ","), "\(m.encoding.tileSize)",
                     "\(m.tiles.count)", "\((m.levels ?? []).map { "\($0.level):\($0.tiles.count)" })"].joined(separator: "|")
        var o = options
        o.levels = nil  // the level choice selects tiles; a tile's masks do not depend on it
        return RunIdentity(store: store, options: o)
    }

    /// A short key of what the parts depend on, to keep the parts of several parameter sets apart
    /// (FNV-1a of the identity's JSON).
    public var identityKey: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = (try? encoder.encode(runIdentity)) ?? Data()
        let hash = bytes.reduce(UInt64(0xcbf2_9ce4_8422_2325)) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
        return String(hash, radix: 16)
    }

    /// Opens (creating) the work directory, checking that its parts belong to this store and options.
    func prepareWorkDirectory(_ dir: URL, fresh: Bool) throws {
        let fm = FileManager.default
        if fresh, fm.fileExists(atPath: dir.path) {
            try rethrowing("cannot remove \(dir.path)") { try fm.removeItem(at: dir) }
        }
        try rethrowing("cannot create \(dir.path)") { try fm.createDirectory(at: dir, withIntermediateDirectories: true) }
        let file = dir.appendingPathComponent("run.json")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        if let data = try? Data(contentsOf: file) {
            guard let existing = try? JSONDecoder().decode(RunIdentity.self, from: data), existing == runIdentity else {
                throw GeoSegmentError("\(dir.path) holds tiles segmented from another store or with other parameters; pass --fresh to start over")
            }
            return
        }
        try FeatureStore.atomicWrite(try encoder.encode(runIdentity), to: file)
    }

    func partURL(_ tile: StoreManifest.TileEntry, in dir: URL) -> URL { dir.appendingPathComponent("\(tile.id).masks") }

    /// Segments everything and writes the objects to `output` (or, with a shard, only segments
    /// that shard's tiles). The parts go to ``workDirectory(for:)``.
    /// - Parameters:
    ///   - bbox: only the tiles meeting this box, and the objects meeting it (in `crs`; nil: the store's).
    ///   - shard: segment only share `index` of `count` of the tiles (0-based); nothing is merged.
    ///   - fresh: discard the parts of an earlier run.
    public func run(output: String, bbox: MapBox? = nil, crs: String? = nil, shard: (index: Int, count: Int)? = nil,
                    fresh: Bool = false, polygonOptions: PolygonOptions = PolygonOptions(), layer: String? = nil,
                    progress: ((GenerateProgress) -> Void)? = nil) throws -> GenerateSummary {
        let m = segmenter.store.manifest
        let modelName = "\(m.model.preset ?? "custom") sha256:\(m.model.checkpointSHA256)"
        let dir = Self.workDirectory(for: output)
        guard shard == nil else {
            return try generate(workDirectory: dir, bbox: bbox, crs: crs, shard: shard, fresh: fresh, polygonOptions: polygonOptions,
                                progress: progress) { _ in }
        }
        var summary: GenerateSummary?
        var written = 0
        try VectorExporter.writeNew(to: output, layer: layer, srs: segmenter.spatialReference) { add in
            summary = try generate(workDirectory: dir, bbox: bbox, crs: crs, fresh: fresh, polygonOptions: polygonOptions,
                                   progress: progress) { object in
                written += 1
                try add(ObjectRecord(objectID: written, result: object, source: m.source.path, model: modelName))
            }
        }
        return summary ?? GenerateSummary(tiles: 0, segmented: 0, resumed: 0)
    }

    /// The core of ``run(output:bbox:crs:shard:fresh:polygonOptions:layer:progress:)``: segments
    /// the tiles (parts in `workDirectory`), then, without a shard, merges them and hands each
    /// object to `emit` in order.
    /// - Parameter isCancelled: checked between tiles; a cancelled run throws.
    public func generate(workDirectory dir: URL, bbox: MapBox? = nil, crs: String? = nil, shard: (index: Int, count: Int)? = nil,
                         fresh: Bool = false, polygonOptions: PolygonOptions = PolygonOptions(),
                         progress: ((GenerateProgress) -> Void)? = nil, isCancelled: () -> Bool = { false },
                         emit: (SegmentedObject) throws -> Void) throws -> GenerateSummary {
        try polygonOptions.validate()
        try Shard.validate(shard)
        let all = try tiles(meeting: bbox, crs: crs)
        try prepareWorkDirectory(dir, fresh: fresh)
        let mine = Shard.share(of: all, shard)
        var summary = GenerateSummary(tiles: mine.count, segmented: 0, resumed: 0)
        let start = Date()
        func report(_ finished: Int, _ last: String?, merging: Bool = false) {
            progress?(GenerateProgress(finished: finished, total: mine.count, segmented: summary.segmented, lastTile: last,
                                       elapsed: Date().timeIntervalSince(start), merging: merging))
        }
        report(0, nil)
        for (i, tile) in mine.enumerated() {
            guard !isCancelled() else { throw GeoSegmentError("cancelled") }
            let url = partURL(tile, in: dir)
            if let data = try? Data(contentsOf: url), (try? TileMasks(decoding: data)) != nil {
                summary.resumed += 1
            } else {
                try FeatureStore.atomicWrite(try segment(tile).encoded(), to: url)
                summary.segmented += 1
            }
            report(i + 1, tile.id)
        }
        guard shard == nil else { return summary }
        report(mine.count, nil, merging: true)
        let merged = try merge(all, from: dir, bbox: bbox, crs: crs, polygonOptions: polygonOptions, emit: emit)
        summary.objects = merged.objects
        summary.tileMasks = merged.masks
        return summary
    }

    /// One tile's masks after its own NMS: whole and cut masks apart, as the official crop
    /// semantics drop the cut ones before NMS, so a cut mask never suppresses a whole one.
    func segment(_ tile: StoreManifest.TileEntry) throws -> TileMasks {
        guard let level = segmenter.levels.first(where: { $0.level == tile.levelIndex }) else {
            throw GeoSegmentError("tile \(tile.id) is on no level of the store")
        }
        let masks = try source.masks(of: tile, on: level)
        var kept: [TileMask] = []
        for cut in [false, true] {
            let group = masks.filter { $0.cut == cut }
            kept += BoxNMS.keep(boxes: group.map(\.box.inclusiveBox), scores: group.map(\.score),
                                threshold: options.masks.boxNMSThreshold).map { group[$0] }
        }
        return TileMasks(tile: tile.id, level: tile.levelIndex, window: tile.window, masks: kept)
    }

    /// Reads every part, merges across tiles and emits the objects meeting `bbox`.
    func merge(_ tiles: [StoreManifest.TileEntry], from dir: URL, bbox: MapBox?, crs: String?, polygonOptions: PolygonOptions,
               emit: (SegmentedObject) throws -> Void) throws -> (objects: Int, masks: Int) {
        let cache = PartCache(urls: tiles.map { partURL($0, in: dir) }, capacity: 32)
        var summaries: [MaskSummary] = []
        for (t, tile) in tiles.enumerated() {
            let part = try cache.part(t)
            guard part.tile == tile.id, part.window == tile.window else {
                throw GeoSegmentError("part file of tile \(tile.id) describes another tile; pass --fresh to start over")
            }
            let f = 1 << part.level
            let c = PixelBox(window: tile.window).centre
            for (i, m) in part.masks.enumerated() {
                let b = m.box.centre
                summaries.append(MaskSummary(
                    tile: t, mask: i, level: part.level, factor: f,
                    box: PixelBox(minX: m.box.minX * Double(f), minY: m.box.minY * Double(f), maxX: m.box.maxX * Double(f),
                                  maxY: m.box.maxY * Double(f)),
                    score: m.score, cut: m.cut, centreDistance: ((b.x - c.x) * (b.x - c.x) + (b.y - c.y) * (b.y - c.y)).squareRoot() * Double(f)))
            }
        }
        let windows = tiles.map(\.window)
        let objects = try ObjectMerger.merge(summaries, windows: windows, options: options) { t, i in
            let part = try cache.part(t)
            return PlacedMask(runs: part.masks[i].runs, x: part.window[0], y: part.window[1], factor: 1 << part.level)
        }
        let wanted = try bbox.map { try segmenter.toStoreCRS($0, from: crs) }.flatMap { segmenter.levels[0].pixelBox($0.corners) }
        var written = 0
        for object in objects {
            guard let result = try self.object(object, tiles: tiles, cache: cache, polygonOptions: polygonOptions) else { continue }
            if let wanted, let box = result.gridBox, !box.intersects(wanted) { continue }
            written += 1
            try emit(result.object)
        }
        return (written, summaries.count)
    }

    /// An object's polygons and attributes; nil when its polygons vanish (polygon options).
    func object(_ object: MergedObject, tiles: [StoreManifest.TileEntry], cache: PartCache, polygonOptions: PolygonOptions) throws
        -> (object: SegmentedObject, gridBox: PixelBox?)? {
        guard let level = segmenter.levels.first(where: { $0.level == object.level }) else { return nil }
        let parts = try object.parts.map { (tile: tiles[$0.tile], mask: try cache.part($0.tile).masks[$0.mask]) }
        // The union of the parts over their joint box, in level pixels.
        let (x0, y0) = (parts.map { Int($0.mask.box.minX) }.min() ?? 0, parts.map { Int($0.mask.box.minY) }.min() ?? 0)
        let (x1, y1) = (parts.map { Int($0.mask.box.maxX) }.max() ?? 0, parts.map { Int($0.mask.box.maxY) }.max() ?? 0)
        let (width, height) = (x1 - x0, y1 - y0)
        guard width > 0, height > 0 else { return nil }
        let runs: RowRuns
        if parts.count == 1 {
            runs = parts[0].mask.runs.shifted(x: parts[0].tile.window[0] - x0, y: parts[0].tile.window[1] - y0, width: width, height: height)
        } else {
            var mask = [UInt8](repeating: 0, count: width * height)
            for p in parts {
                let (dx, dy) = (p.tile.window[0] - x0, p.tile.window[1] - y0)
                for y in 0..<p.mask.runs.height where y + dy >= 0 && y + dy < height {
                    for r in p.mask.runs.row(y) {
                        for x in max(Int(p.mask.runs.start[r]) + dx, 0)..<min(Int(p.mask.runs.end[r]) + dx, width) { mask[(y + dy) * width + x] = 1 }
                    }
                }
            }
            runs = mask.withUnsafeBufferPointer { RowRuns($0, width: width, height: height) }
        }
        let transform = level.transform.translated(byPixelsX: Double(x0), y: Double(y0))
        let polygons = try MaskVectorizer.polygons(runs: runs, width: width, geoTransform: transform, options: polygonOptions)
        guard !polygons.isEmpty else { return nil }
        let areas = parts.map { Double($0.mask.runs.area) }
        let total = max(areas.reduce(0, +), 1)
        let score = zip(parts, areas).reduce(0.0) { $0 + Double($1.0.mask.score) * $1.1 } / total
        let stability = zip(parts, areas).reduce(0.0) { $0 + Double($1.0.mask.stability) * $1.1 } / total
        let first = parts[0]
        let point = level.transform.pixelToMap(x: first.mask.point.x, y: first.mask.point.y)
        var result = SegmentedObject(
            polygons: polygons, score: Float(score), candidateScores: parts.map(\.mask.score), candidate: 0, tile: first.tile.id,
            level: object.level, tiles: parts.map(\.tile.id), clipped: object.clipped, runs: runs, maskWidth: width, maskHeight: height,
            maskTransform: transform, prompt: ObjectPrompt(points: [MapPoint(x: point.x, y: point.y, label: 1)]),
            decodeMilliseconds: 0, polygonizeMilliseconds: 0)
        result.stability = Float(stability)
        let f = Double(level.factor)
        return (result, PixelBox(minX: Double(x0) * f, minY: Double(y0) * f, maxX: Double(x1) * f, maxY: Double(y1) * f))
    }
}

/// Part files read back through a small LRU cache (the merge visits them tile by tile).
final class PartCache: @unchecked Sendable {
    // @unchecked: used from the one thread that merges.
    let urls: [URL]
    let capacity: Int
    private var entries: [(index: Int, part: TileMasks)] = []

    init(urls: [URL], capacity: Int) {
        self.urls = urls
        self.capacity = max(1, capacity)
    }

    func part(_ index: Int) throws -> TileMasks {
        if let i = entries.firstIndex(where: { $0.index == index }) {
            let e = entries.remove(at: i)
            entries.append(e)
            return e.part
        }
        let url = urls[index]
        let data = try rethrowing("cannot read \(url.path)") { try Data(contentsOf: url) }
        let part = try rethrowing("\(url.lastPathComponent)") { try TileMasks(decoding: data) }
        entries.append((index, part))
        if entries.count > capacity { entries.removeFirst() }
        return part
    }
}

extension RowRuns {
    /// The runs moved by (x, y) into a `width × height` frame (cut at its edges).
    func shifted(x dx: Int, y dy: Int, width: Int, height: Int) -> RowRuns {
        var builder = Builder()
        for y in 0..<height {
            let source = y - dy
            if source >= 0, source < self.height {
                for r in row(source) { builder.append(max(Int(start[r]) + dx, 0), min(Int(end[r]) + dx, width)) }
            }
            builder.endRow()
        }
        return builder.runs
    }
}
