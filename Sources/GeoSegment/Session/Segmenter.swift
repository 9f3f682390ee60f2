import Dispatch
import Foundation
import GeoIO
import Kernels
import SAM2

/// The result of segmenting one object.
public struct SegmentedObject: Sendable {
    /// Polygons in the store's CRS, largest first.
    public var polygons: [Geometry]
    /// Predicted IoU of the chosen mask.
    public var score: Float
    /// Predicted IoU of every candidate (three with multimask output, else one).
    public var candidateScores: [Float]
    /// Which candidate was used.
    public var candidate: Int
    /// The tile whose features gave the answer.
    public var tile: String
    /// The pyramid level of that tile (0: the encoded grid).
    public var level: Int
    /// Every tile decoded for this object, in order (more than one when a click climbed levels).
    public var tiles: [String]
    /// True when the object may be cut: no tile of any level held the prompt's extent, or the mask
    /// still reached an interior tile edge at the coarsest level it could climb to.
    public var clipped: Bool
    /// The mask over the answering tile's footprint on the encoded grid (`maskWidth × maskHeight`,
    /// 0/1, at full resolution whatever the level), on `maskTransform`; built on demand from the runs
    /// the polygons were traced from.
    public var mask: [UInt8] { runs.rasterized(width: maskWidth) }
    let runs: RowRuns
    public var maskWidth: Int
    public var maskHeight: Int
    public var maskTransform: GeoTransform
    /// The prompts, transformed to the store's CRS.
    public var prompt: ObjectPrompt
    /// Time spent decoding and vectorising, in milliseconds (decoding includes waiting for
    /// tiles encoded on demand).
    public var decodeMilliseconds: Double
    public var polygonizeMilliseconds: Double
    /// Tiles that were not encoded yet and were encoded for this prompt (see ``OnDemandEncoder``).
    public var encodedOnDemand: [String] = []
    /// The stability score of an object found by ``RasterMaskGenerator`` (nil for prompted objects).
    public var stability: Float? = nil
}

/// Prompts in map coordinates → the right tile → SAM2 prompt encoder and mask decoder → polygons.
///
/// Thread-safe: the server calls it from concurrent requests. Tiles are loaded lazily and kept in
/// a small LRU cache.
public final class Segmenter: @unchecked Sendable {
    // @unchecked: mutable state (the caches) is guarded by `lock`; the rest is immutable.
    public let store: FeatureStore
    public let model: SAM2Model
    /// Encodes pending tiles that prompts fall on (nil: such prompts are refused).
    public let onDemand: OnDemandEncoder?
    /// The store's CRS (nil for a store of a plain image: pixel coordinates).
    public let spatialReference: SpatialReference?
    let gridTransform: GeoTransform
    let inverseTransform: GeoTransform
    let tileSize: Int
    /// The pyramid, level 0 first.
    let levels: [PyramidLevel]
    public let cacheCapacity: Int

    private let lock = NSLock()
    /// Tiles ready for the decoder: channels-last maps and the image-side projections computed
    /// once per tile, so that a click costs only the prompt-dependent work.
    private var cache: [(id: String, features: PreparedFeatures, validity: RowRuns?)] = []
    private var transformations: [String: CoordinateTransformation] = [:]
    /// Level-0 tiles' validity (nil: all valid), for cutting coarser answers by nodata at full resolution.
    private var levelZeroValidity: [String: RowRuns?] = [:]

    /// - Parameters:
    ///   - checkpointSHA256: the SHA-256 of the model's checkpoint, checked against the store's.
    ///   - onDemand: the encoder filling this store, when it is being filled while served.
    public init(store: FeatureStore, model: SAM2Model, checkpointSHA256: String?, cacheCapacity: Int = 4,
                onDemand: OnDemandEncoder? = nil) throws {
        let m = store.manifest
        if let checkpointSHA256, checkpointSHA256 != m.model.checkpointSHA256 {
            throw GeoSegmentError("the store was encoded with another checkpoint (SHA-256 \(m.model.checkpointSHA256.prefix(12))…); use the same model to segment")
        }
        guard model.configuration == m.model.configuration else {
            throw GeoSegmentError("the model's architecture differs from the one the store was encoded with")
        }
        if let onDemand, onDemand.store !== store {
            throw GeoSegmentError("the on-demand encoder fills another store than the one segmented")
        }
        self.store = store
        self.model = model
        self.onDemand = onDemand
        spatialReference = try m.source.crsWKT.map { wkt in try rethrowing("store CRS") { try SpatialReference(wkt: wkt) } }
        guard let transform = GeoTransform(coefficients: m.encoding.geoTransform), let inverse = transform.inverse else {
            throw GeoSegmentError("the store's geotransform cannot be inverted")
        }
        gridTransform = transform
        inverseTransform = inverse
        tileSize = m.encoding.tileSize
        levels = try PyramidLevel.levels(of: m)
        self.cacheCapacity = max(1, cacheCapacity)
    }

    // MARK: Coordinates

    /// Transforms map coordinates from `crs` (nil: the store's) to the store's CRS.
    public func toStoreCRS(_ points: [Coordinate], from crs: String?) throws -> [Coordinate] {
        guard let crs, !crs.isEmpty else { return points }
        guard let target = spatialReference else {
            throw GeoSegmentError("the store has no CRS (pixel coordinates); prompts cannot be given in \(crs)")
        }
        let transformation: CoordinateTransformation = try {
            lock.lock()
            defer { lock.unlock() }
            if let t = transformations[crs] { return t }
            let source = try rethrowing("prompt CRS \(crs)") { try SpatialReference(crs) }
            let t = try rethrowing("cannot transform \(crs) to the store's CRS") { try CoordinateTransformation(from: source, to: target) }
            transformations[crs] = t
            return t
        }()
        return try rethrowing("cannot transform prompts from \(crs)") { try transformation.transform(points: points) }
    }

    /// A box in `crs` (nil: the store's) as the envelope of its four corners in the store's CRS.
    public func toStoreCRS(_ box: MapBox, from crs: String?) throws -> MapBox {
        MapBox(envelopeOf: try toStoreCRS(box.corners, from: crs))
    }

    /// The prompt with every coordinate in the store's CRS.
    public func inStoreCRS(_ prompt: ObjectPrompt) throws -> ObjectPrompt {
        var corners: [Coordinate] = prompt.points.map { Coordinate(x: $0.x, y: $0.y) }
        // All four corners: the box stays a box in the target CRS only as their envelope.
        corners += prompt.box?.corners ?? []
        for c in corners where !(c.x.isFinite && c.y.isFinite) { throw GeoSegmentError("prompt coordinates must be finite numbers") }
        let moved = try toStoreCRS(corners, from: prompt.crs)
        var result = ObjectPrompt(points: zip(prompt.points, moved).map { MapPoint(x: $1.x, y: $1.y, label: $0.label) }, box: nil, crs: nil)
        if prompt.box != nil { result.box = MapBox(envelopeOf: moved.suffix(4)) }
        return result
    }

    /// Continuous pixel coordinates on the encoded grid (pixel edges at integers).
    func gridPixel(_ c: Coordinate) -> Coordinate { inverseTransform.pixelToMap(x: c.x, y: c.y) }

    // MARK: Segmenting

    /// Segments one object: routes the prompt to a tile of the finest level that holds it, lets a
    /// click whose mask reaches an interior tile edge climb the pyramid, and traces the answer at
    /// full resolution.
    /// - Parameters:
    ///   - multimask: ask for three candidates; `candidate` picks one (default: the best-scoring).
    public func segment(_ prompt: ObjectPrompt, options: PolygonOptions = PolygonOptions(), multimask: Bool = false,
                        candidate: Int? = nil) throws -> SegmentedObject {
        guard !prompt.isEmpty else { throw GeoSegmentError("empty prompt: give at least one point or a box") }
        for p in prompt.points where p.label != 0 && p.label != 1 {
            throw GeoSegmentError("point label must be 1 (foreground) or 0 (background), got \(p.label)")
        }
        try options.validate()
        let mapPrompt = try inStoreCRS(prompt)
        try checkInsideRaster(mapPrompt)

        let start = DispatchTime.now().uptimeNanoseconds
        var answer = try decode(mapPrompt, on: try route(mapPrompt, extent: nil, from: 0), multimask: multimask, candidate: candidate)
        var tilesUsed = [answer.route.tile.id]
        var encoded = answer.route.encodedOnDemand ? [answer.route.tile.id] : []
        var clipped = answer.route.clipped
        if mapPrompt.box == nil {
            // A click does not say how big its object is: while the mask reaches an interior edge
            // of its tile, ask the next level with the mask's extent, and keep the coarser answer
            // only while it agrees with the finer one.
            while answer.touchesInteriorEdge {
                guard answer.route.level.level < levels.count - 1,
                      let next = try? route(mapPrompt, extent: answer.maskEnvelope, from: answer.route.level.level + 1), !next.clipped
                else {
                    clipped = true
                    break
                }
                let coarser = try decode(mapPrompt, on: next, multimask: multimask, candidate: candidate)
                tilesUsed.append(next.tile.id)
                if next.encodedOnDemand { encoded.append(next.tile.id) }
                guard answer.agrees(with: coarser) else {
                    clipped = true
                    break
                }
                answer = coarser
            }
        }
        let decoded = DispatchTime.now().uptimeNanoseconds
        let polygons = try MaskVectorizer.polygons(runs: answer.runs, width: answer.width, geoTransform: answer.transform, options: options)
        let done = DispatchTime.now().uptimeNanoseconds
        return SegmentedObject(
            polygons: polygons, score: answer.scores[answer.chosen], candidateScores: answer.scores, candidate: answer.chosen,
            tile: answer.route.tile.id, level: answer.route.level.level, tiles: tilesUsed, clipped: clipped,
            runs: answer.runs, maskWidth: answer.width, maskHeight: answer.height, maskTransform: answer.transform, prompt: mapPrompt,
            decodeMilliseconds: Double(decoded - start) / 1e6, polygonizeMilliseconds: Double(done - decoded) / 1e6,
            encodedOnDemand: encoded)
    }

    /// Every point inside the raster, and the box not reaching outside it.
    func checkInsideRaster(_ prompt: ObjectPrompt) throws {
        let (w, h) = (Double(levels[0].width), Double(levels[0].height))
        for (i, p) in prompt.points.enumerated() {
            let q = levels[0].pixel(Coordinate(x: p.x, y: p.y))
            guard q.x >= 0, q.y >= 0, q.x < w, q.y < h else { throw GeoSegmentError("point \(i + 1) lies outside the raster") }
        }
        if let b = prompt.box, let q = levels[0].pixelBox(b.corners) {
            guard q.minX >= 0, q.minY >= 0, q.maxX <= w, q.maxY <= h else { throw GeoSegmentError("the box reaches outside the raster") }
        }
    }

    /// The tile that answers a prompt: on the finest level from `first` up, the tile (nearest its
    /// centre) that holds the extent of the box, the positive points and `extent` (map
    /// coordinates), with a margin; failing that, the finest tile that holds the extent without
    /// the margin; failing that, the coarsest level's tile nearest the extent, marked clipped.
    func route(_ prompt: ObjectPrompt, extent: [Coordinate]?, from first: Int) throws -> Route {
        // A pending tile encoded on demand may turn out to hold only nodata: route again, without it.
        for _ in 0..<8 {
            var chosen = try candidateRoute(prompt, extent: extent, from: first)
            chosen.encodedOnDemand = try encodeIfPending(chosen.tile)
            switch store.state(of: chosen.tile) {
            case .done: return chosen
            case .empty where chosen.encodedOnDemand: continue
            case .empty: throw GeoSegmentError("the prompts fall on tile \(chosen.tile.id), which holds only nodata")
            case .pending: throw GeoSegmentError("tile \(chosen.tile.id) is not encoded yet (its file was moved away while serving)")
            }
        }
        throw GeoSegmentError("the prompts fall on tiles that hold only nodata")
    }

    /// Encodes a pending tile with the on-demand encoder (waiting for it); true when it did.
    /// Throws for a pending tile when nothing fills the store, or when it stays pending.
    func encodeIfPending(_ tile: StoreManifest.TileEntry) throws -> Bool {
        guard store.state(of: tile) == .pending else { return false }
        guard let onDemand else {
            throw GeoSegmentError("tile \(tile.id) is not encoded yet; run `geosam2 encode` to finish the store")
        }
        try onDemand.ensureEncoded(tile)
        guard store.state(of: tile) != .pending else {
            throw GeoSegmentError("tile \(tile.id) is not encoded yet (its file was moved away while serving)")
        }
        return true
    }

    /// The tile `route` wants, encoded or not.
    private func candidateRoute(_ prompt: ObjectPrompt, extent: [Coordinate]?, from first: Int) throws -> Route {
        let positive = prompt.points.filter { $0.label == 1 }
        var drivers = (positive.isEmpty && prompt.box == nil ? prompt.points : positive).map { Coordinate(x: $0.x, y: $0.y) }
        drivers += prompt.box?.corners ?? []
        drivers += extent ?? []
        let usable: (StoreManifest.TileEntry) -> Bool = { [store] in store.state(of: $0) != .empty }
        let candidates = levels.dropFirst(first)
        for level in candidates {
            guard let box = level.pixelBox(drivers) else { break }
            let wanted = box.inflated(by: Routing.margin(for: box)).clipped(width: level.width, height: level.height)
            if let tile = level.bestTile(holding: wanted, usable: usable) { return Route(level: level, tile: tile, clipped: false) }
        }
        for level in candidates {
            guard let box = level.pixelBox(drivers) else { break }
            if let tile = level.bestTile(holding: box, usable: usable) { return Route(level: level, tile: tile, clipped: false) }
        }
        guard let top = candidates.last, let box = top.pixelBox(drivers) else { throw GeoSegmentError("no tile holds the prompts") }
        let centre = PixelBox(minX: box.centre.x, minY: box.centre.y, maxX: box.centre.x, maxY: box.centre.y)
        guard let tile = top.bestTile(holding: centre, usable: usable) ?? top.bestTile(holding: centre, usable: { _ in true }) else {
            throw GeoSegmentError("no tile holds the prompts")
        }
        return Route(level: top, tile: tile, clipped: true)
    }

    /// One decode of a prompt on a routed tile, traced at full resolution.
    func decode(_ prompt: ObjectPrompt, on route: Route, multimask: Bool, candidate: Int?) throws -> LevelAnswer {
        let (level, tile) = (route.level, route.tile)
        let (tx, ty, tw, th) = (Double(tile.window[0]), Double(tile.window[1]), Double(tile.window[2]), Double(tile.window[3]))
        // SAM2's pixel convention: the centre of pixel (c, r) is x = c, y = r. Points off the tile
        // (background points, or any point of a clipped answer) cannot be given to it.
        var samPrompt = Prompt(points: prompt.points.compactMap { p in
            let q = level.pixel(Coordinate(x: p.x, y: p.y))
            guard q.x >= tx, q.y >= ty, q.x < tx + tw, q.y < ty + th else { return nil }
            return PointPrompt(x: Float(q.x - tx - 0.5), y: Float(q.y - ty - 0.5), label: p.label)
        })
        if let b = prompt.box, var q = level.pixelBox(b.corners) {
            if route.clipped { q = PixelBox(minX: max(q.minX, tx), minY: max(q.minY, ty), maxX: min(q.maxX, tx + tw), maxY: min(q.maxY, ty + th)) }
            samPrompt.box = BoxPrompt(x0: Float(q.minX - tx - 0.5), y0: Float(q.minY - ty - 0.5),
                                      x1: Float(q.maxX - tx - 0.5), y1: Float(q.maxY - ty - 0.5))
        }
        guard samPrompt.box != nil || samPrompt.points.contains(where: { $0.label == 1 }) else {
            throw GeoSegmentError("no foreground point or box falls on tile \(tile.id)")
        }
        let (features, validity) = try loadTile(tile)
        let (logits, scores) = try rethrowing { try model.decodeLogits(features, prompt: samPrompt, multimask: multimask) }
        let chosen: Int
        if let candidate {
            guard (0..<scores.count).contains(candidate) else {
                throw GeoSegmentError("candidate \(candidate) does not exist (\(scores.count) mask\(scores.count == 1 ? "" : "s"))")
            }
            chosen = candidate
        } else {
            chosen = scores.indices.max { scores[$0] < scores[$1] } ?? 0
        }
        // The tile's footprint on the encoded grid: the level's logits are upsampled straight to
        // it (SAM2's own bilinear, one step) and thresholded row by row into runs, so a coarse
        // level still gives outlines on the full-resolution pixel grid.
        let f = level.factor
        let (x0, y0) = (tile.window[0] * f, tile.window[1] * f)
        let (width, height) = (min(tile.window[2] * f, levels[0].width - x0), min(tile.window[3] * f, levels[0].height - y0))
        let (side, columns) = (logits.shape[1], logits.shape[2])
        let plane = logits.pointer + chosen * side * columns
        let r = MaskUpsampling.thresholdRuns(plane, height: side, width: columns, outputHeight: tileSize * f, outputWidth: tileSize * f,
                                             rows: height, columns: width)
        var runs = RowRuns(starts: r.starts, ends: r.ends, rowOffsets: r.rowOffsets)
        let valid = f == 1 ? validity : try fullResolutionValidity(
            x: x0, y: y0, width: width, height: height,
            coarse: validity.map { (runs: $0, x: tile.window[0], y: tile.window[1], factor: f) })
        if let valid { runs = runs.intersection(valid) }
        let transform = levels[0].transform.translated(byPixelsX: Double(x0), y: Double(y0))
        // The mask's box in level pixels, for the crop-edge test.
        let touches = runs.boundingBox.map { b in
            level.touchesInteriorEdge(PixelBox(minX: (b.minX + Double(x0)) / Double(f), minY: (b.minY + Double(y0)) / Double(f),
                                               maxX: (b.maxX + Double(x0)) / Double(f), maxY: (b.maxY + Double(y0)) / Double(f)), of: tile)
        } ?? false
        return LevelAnswer(route: route, scores: scores, chosen: chosen, runs: runs, origin: (x0, y0), width: width, height: height,
                           transform: transform, touchesInteriorEdge: touches)
    }

    /// Which pixels of an encoded-grid window are valid, from the level-0 tiles that cover it
    /// (nil: all of them): a coarser level's own mask is coarser than its outlines. Where a
    /// level-0 tile is not encoded yet (a store filled on demand), the answering tile's own
    /// validity (`coarse`: its runs, window origin and level factor) stands in for it.
    func fullResolutionValidity(x: Int, y: Int, width: Int, height: Int,
                                coarse: (runs: RowRuns, x: Int, y: Int, factor: Int)? = nil) throws -> RowRuns? {
        enum Cell { case allValid, noneValid, runs(RowRuns), coarse }
        let level = levels[0]
        // Each pixel is read from the last tile row and column starting at or before it: the
        // grid's tiles cover the raster, and overlapping tiles agree on validity.
        let rowOrigins = Array(Set(level.tiles.map { $0.window[1] })).sorted()
        let columnOrigins = Array(Set(level.tiles.map { $0.window[0] })).sorted()
        var cells: [[Int]: Cell] = [:]
        var anyInvalid = false
        for t in level.tiles where t.window[1] < y + height && t.window[1] + t.window[3] > y && t.window[0] < x + width
            && t.window[0] + t.window[2] > x {
            let cell: Cell
            switch store.state(of: t) {
            case .empty: cell = .noneValid
            case .pending: cell = coarse == nil ? .allValid : .coarse
            case .done: cell = try validity(of: t).map { .runs($0) } ?? .allValid
            }
            if case .allValid = cell {} else { anyInvalid = true }
            cells[[t.window[0], t.window[1]]] = cell
        }
        guard anyInvalid else { return nil }
        func origin(_ v: Int, in origins: [Int]) -> Int { origins.last { $0 <= v } ?? origins[0] }
        var builder = RowRuns.Builder()
        for row in y..<(y + height) {
            let oy = origin(row, in: rowOrigins)
            var column = x
            while column < x + width {
                let ox = origin(column, in: columnOrigins)
                let next = min(columnOrigins.first { $0 > column } ?? x + width, x + width)
                switch cells[[ox, oy]] ?? .allValid {
                case .runs(let runs):
                    for r in runs.row(row - oy) {
                        builder.append(max(Int(runs.start[r]) + ox, column) - x, min(Int(runs.end[r]) + ox, next) - x)
                    }
                case .allValid: builder.append(column - x, next - x)
                case .noneValid: break
                case .coarse:
                    guard let c = coarse else { break }
                    let levelRow = row / c.factor - c.y
                    guard levelRow >= 0, levelRow < c.runs.height else {
                        builder.append(column - x, next - x)
                        break
                    }
                    for r in c.runs.row(levelRow) {
                        builder.append(max((Int(c.runs.start[r]) + c.x) * c.factor, column) - x,
                                       min((Int(c.runs.end[r]) + c.x) * c.factor, next) - x)
                    }
                }
                column = next
            }
            builder.endRow()
        }
        return builder.runs
    }

    /// A level-0 tile's validity as runs (nil: all valid), cached.
    private func validity(of tile: StoreManifest.TileEntry) throws -> RowRuns? {
        lock.lock()
        if let cached = levelZeroValidity[tile.id] {
            lock.unlock()
            return cached
        }
        lock.unlock()
        let runs = try store.loadValidity(tile).map { valid in
            valid.withUnsafeBytes { RowRuns($0.bindMemory(to: UInt8.self), width: tile.window[2], height: tile.window[3]) }
        }
        lock.lock()
        levelZeroValidity[tile.id] = .some(runs)
        lock.unlock()
        return runs
    }

    /// Loads and prepares a tile ahead of its first prompt (a no-op when it is cached), so that
    /// the click that follows costs only the prompt-dependent work.
    public func warm(_ tile: StoreManifest.TileEntry) throws {
        guard store.state(of: tile) == .done else { throw GeoSegmentError("tile \(tile.id) is not encoded") }
        _ = try loadTile(tile)
    }

    /// A tile's prepared features and validity, from the cache or the store.
    func loadTile(_ tile: StoreManifest.TileEntry) throws -> (PreparedFeatures, RowRuns?) {
        lock.lock()
        if let i = cache.firstIndex(where: { $0.id == tile.id }) {
            let entry = cache.remove(at: i)
            cache.append(entry)
            lock.unlock()
            return (entry.features, entry.validity)
        }
        lock.unlock()
        let (features, valid) = try store.loadTile(tile, for: model)
        let validity = valid.map { valid in
            valid.withUnsafeBytes { RowRuns($0.bindMemory(to: UInt8.self), width: tile.window[2], height: tile.window[3]) }  // Bool is one byte, 0 or 1
        }
        lock.lock()
        defer { lock.unlock() }
        cache.removeAll { $0.id == tile.id }
        cache.append((tile.id, features, validity))
        if cache.count > cacheCapacity { cache.removeFirst(cache.count - cacheCapacity) }
        return (features, validity)
    }
}
