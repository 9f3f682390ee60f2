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
    /// The tile whose features were used.
    public var tile: String
    /// The mask over the tile's raster window (`maskWidth × maskHeight`, 0/1), on `maskTransform`;
    /// built on demand from the runs the polygons were traced from.
    public var mask: [UInt8] { runs.rasterized(width: maskWidth) }
    let runs: RowRuns
    public var maskWidth: Int
    public var maskHeight: Int
    public var maskTransform: GeoTransform
    /// The prompts, transformed to the store's CRS.
    public var prompt: ObjectPrompt
    /// Time spent decoding and vectorising, in milliseconds.
    public var decodeMilliseconds: Double
    public var polygonizeMilliseconds: Double
}

/// Prompts in map coordinates → the right tile → SAM2 prompt encoder and mask decoder → polygons.
///
/// Thread-safe: the server calls it from concurrent requests. Tiles are loaded lazily and kept in
/// a small LRU cache.
public final class Segmenter: @unchecked Sendable {
    // @unchecked: mutable state (the caches) is guarded by `lock`; the rest is immutable.
    public let store: FeatureStore
    public let model: SAM2Model
    /// The store's CRS (nil for a store of a plain image: pixel coordinates).
    public let spatialReference: SpatialReference?
    let gridTransform: GeoTransform
    let inverseTransform: GeoTransform
    let tileSize: Int
    public let cacheCapacity: Int

    private let lock = NSLock()
    /// Tiles ready for the decoder: channels-last maps and the image-side projections computed
    /// once per tile, so that a click costs only the prompt-dependent work.
    private var cache: [(id: String, features: PreparedFeatures, validity: RowRuns?)] = []
    private var transformations: [String: CoordinateTransformation] = [:]

    /// - Parameter checkpointSHA256: the SHA-256 of the model's checkpoint, checked against the store's.
    public init(store: FeatureStore, model: SAM2Model, checkpointSHA256: String?, cacheCapacity: Int = 4) throws {
        let m = store.manifest
        if let checkpointSHA256, checkpointSHA256 != m.model.checkpointSHA256 {
            throw GeoSegmentError("the store was encoded with another checkpoint (SHA-256 \(m.model.checkpointSHA256.prefix(12))…); use the same model to segment")
        }
        guard model.configuration == m.model.configuration else {
            throw GeoSegmentError("the model's architecture differs from the one the store was encoded with")
        }
        self.store = store
        self.model = model
        spatialReference = try m.source.crsWKT.map { wkt in try rethrowing("store CRS") { try SpatialReference(wkt: wkt) } }
        guard let transform = GeoTransform(coefficients: m.encoding.geoTransform), let inverse = transform.inverse else {
            throw GeoSegmentError("the store's geotransform cannot be inverted")
        }
        gridTransform = transform
        inverseTransform = inverse
        tileSize = m.encoding.tileSize
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

    /// The prompt with every coordinate in the store's CRS.
    public func inStoreCRS(_ prompt: ObjectPrompt) throws -> ObjectPrompt {
        var corners: [Coordinate] = prompt.points.map { Coordinate(x: $0.x, y: $0.y) }
        if let b = prompt.box {
            // All four corners: the box stays a box in the target CRS only as their envelope.
            corners += [Coordinate(x: b.minX, y: b.minY), Coordinate(x: b.maxX, y: b.minY),
                        Coordinate(x: b.minX, y: b.maxY), Coordinate(x: b.maxX, y: b.maxY)]
        }
        for c in corners where !(c.x.isFinite && c.y.isFinite) { throw GeoSegmentError("prompt coordinates must be finite numbers") }
        let moved = try toStoreCRS(corners, from: prompt.crs)
        var result = ObjectPrompt(points: zip(prompt.points, moved).map { MapPoint(x: $1.x, y: $1.y, label: $0.label) }, box: nil, crs: nil)
        if prompt.box != nil {
            let c = moved.suffix(4)
            result.box = MapBox(minX: c.map(\.x).min() ?? 0, minY: c.map(\.y).min() ?? 0,
                                maxX: c.map(\.x).max() ?? 0, maxY: c.map(\.y).max() ?? 0)
        }
        return result
    }

    /// Continuous pixel coordinates on the encoded grid (pixel edges at integers).
    func gridPixel(_ c: Coordinate) -> Coordinate { inverseTransform.pixelToMap(x: c.x, y: c.y) }

    // MARK: Segmenting

    /// Segments one object.
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

        // Pixel positions (pixel edges at integers) of every point and box corner.
        var pixels = mapPrompt.points.map { gridPixel(Coordinate(x: $0.x, y: $0.y)) }
        var boxPixels: (Coordinate, Coordinate)? = nil
        if let b = mapPrompt.box {
            let corners = [Coordinate(x: b.minX, y: b.minY), Coordinate(x: b.maxX, y: b.minY),
                           Coordinate(x: b.minX, y: b.maxY), Coordinate(x: b.maxX, y: b.maxY)].map(gridPixel)
            let lo = Coordinate(x: corners.map(\.x).min() ?? 0, y: corners.map(\.y).min() ?? 0)
            let hi = Coordinate(x: corners.map(\.x).max() ?? 0, y: corners.map(\.y).max() ?? 0)
            boxPixels = (lo, hi)
            pixels += [lo, hi]
        }
        let tile = try chooseTile(for: pixels, pointCount: mapPrompt.points.count)

        // SAM2's pixel convention: the centre of pixel (c, r) is x = c, y = r.
        let ox = Double(tile.window[0]), oy = Double(tile.window[1])
        var samPrompt = Prompt(points: zip(mapPrompt.points, pixels).map { p, px in
            PointPrompt(x: Float(px.x - ox - 0.5), y: Float(px.y - oy - 0.5), label: p.label)
        })
        if let (lo, hi) = boxPixels {
            samPrompt.box = BoxPrompt(x0: Float(lo.x - ox - 0.5), y0: Float(lo.y - oy - 0.5),
                                      x1: Float(hi.x - ox - 0.5), y1: Float(hi.y - oy - 0.5))
        }

        let start = DispatchTime.now().uptimeNanoseconds
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
        // The raster part of the tile, without nodata, as row runs: the kernel upsamples and
        // thresholds the chosen logits row by row and keeps only where the mask changes, so no
        // 1024² mask is built (the portable path builds it and reads the runs off it).
        let (width, height) = (tile.window[2], tile.window[3])
        let side = logits.shape[1], plane = logits.shape[1] * logits.shape[2]
        var runs: RowRuns
        if Accelerated.isAvailable, let r = AcceleratedOps.upsampleThresholdRuns(
            logits.pointer + chosen * plane, height: side, width: logits.shape[2], outputHeight: tileSize, outputWidth: tileSize,
            rows: height, columns: width) {
            runs = RowRuns(starts: r.starts, ends: r.ends, rowOffsets: r.rowOffsets)
        } else {
            let chosenLogits = Tensor(shape: [1, side, logits.shape[2]], scalars: logits.toArray((chosen * plane)..<((chosen + 1) * plane)))
            let upsampled = Transforms.upsample(chosenLogits, height: tileSize, width: tileSize)
            var mask = [UInt8](repeating: 0, count: width * height)
            for y in 0..<height {
                for x in 0..<width where upsampled[flat: y * tileSize + x] > 0 { mask[y * width + x] = 1 }  // Parity: strict `>`
            }
            runs = mask.withUnsafeBufferPointer { RowRuns($0, width: width, height: height) }
        }
        if let validity { runs = runs.intersection(validity) }
        let decoded = DispatchTime.now().uptimeNanoseconds
        guard let transform = GeoTransform(coefficients: tile.geoTransform) else { throw GeoSegmentError("tile \(tile.id) has no valid transform") }
        let polygons = try MaskVectorizer.polygons(runs: runs, width: width, geoTransform: transform, options: options)
        let done = DispatchTime.now().uptimeNanoseconds
        return SegmentedObject(
            polygons: polygons, score: scores[chosen], candidateScores: scores, candidate: chosen,
            tile: tile.id, runs: runs, maskWidth: width, maskHeight: height, maskTransform: transform, prompt: mapPrompt,
            decodeMilliseconds: Double(decoded - start) / 1e6, polygonizeMilliseconds: Double(done - decoded) / 1e6)
    }

    /// Among the tiles that contain every prompt, the one whose centre is nearest to the centre of
    /// the prompts' bounding box.
    func chooseTile(for pixels: [Coordinate], pointCount: Int) throws -> StoreManifest.TileEntry {
        let m = store.manifest
        let (w, h) = (Double(m.encoding.width), Double(m.encoding.height))
        for (i, p) in pixels.enumerated() where !(p.x >= 0 && p.y >= 0 && p.x <= w && p.y <= h && (i >= pointCount || (p.x < w && p.y < h))) {
            throw GeoSegmentError(i < pointCount ? "point \(i + 1) lies outside the raster" : "the box reaches outside the raster")
        }
        func contains(_ t: StoreManifest.TileEntry, _ p: Coordinate, _ isPoint: Bool) -> Bool {
            let (x0, y0, x1, y1) = (Double(t.window[0]), Double(t.window[1]), Double(t.window[0] + t.window[2]), Double(t.window[1] + t.window[3]))
            return isPoint ? (p.x >= x0 && p.x < x1 && p.y >= y0 && p.y < y1) : (p.x >= x0 && p.x <= x1 && p.y >= y0 && p.y <= y1)
        }
        let candidates = m.tiles.filter { t in pixels.enumerated().allSatisfy { contains(t, $1, $0 < pointCount) } }
        guard !candidates.isEmpty else {
            throw GeoSegmentError("the prompts span more than one tile (a tile is \(tileSize) pixels); segment the object in parts or encode with --scale 0.5")
        }
        let cx = ((pixels.map(\.x).min() ?? 0) + (pixels.map(\.x).max() ?? 0)) / 2
        let cy = ((pixels.map(\.y).min() ?? 0) + (pixels.map(\.y).max() ?? 0)) / 2
        func distance(_ t: StoreManifest.TileEntry) -> Double {
            let tx = Double(t.window[0]) + Double(t.window[2]) / 2, ty = Double(t.window[1]) + Double(t.window[3]) / 2
            return (tx - cx) * (tx - cx) + (ty - cy) * (ty - cy)
        }
        let best = candidates.min { distance($0) < distance($1) }
        guard let best else { throw GeoSegmentError("no tile holds the prompts") }
        switch store.state(of: best) {
        case .done: return best
        case .empty: throw GeoSegmentError("the prompts fall on tile \(best.id), which holds only nodata")
        case .pending: throw GeoSegmentError("tile \(best.id) is not encoded yet; run `geosam2 encode` to finish the store")
        }
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
