import GeoIO
import Kernels

// Prompts on a feature pyramid (docs: ../shared/research/large-objects.md §3, followed here):
// a prompt goes to the finest level with a tile that holds its extent with a margin; a
// points-only prompt whose mask reaches an interior tile edge climbs one level at a time while the
// answers stay consistent; the chosen level's logits are upsampled straight to the encoded grid.

/// One level of a store's pyramid, as prompts are routed on it.
struct PyramidLevel: Sendable {
    /// 0 for the encoded grid.
    let level: Int
    /// Encoded-grid pixels per level pixel along each axis (2^level).
    let factor: Int
    let width: Int
    let height: Int
    /// Level pixel → map, and back.
    let transform: GeoTransform
    let inverse: GeoTransform
    let tiles: [StoreManifest.TileEntry]

    /// The levels of a store, level 0 first.
    static func levels(of m: StoreManifest) throws -> [PyramidLevel] {
        var result: [PyramidLevel] = []
        let grids = [(0, m.encoding.width, m.encoding.height, m.encoding.geoTransform, m.tiles)]
            + (m.levels ?? []).map { ($0.level, $0.width, $0.height, $0.geoTransform, $0.tiles) }
        for (level, width, height, coefficients, tiles) in grids {
            guard let transform = GeoTransform(coefficients: coefficients), let inverse = transform.inverse else {
                throw GeoSegmentError("the store's level \(level) geotransform cannot be inverted")
            }
            result.append(PyramidLevel(level: level, factor: 1 << level, width: width, height: height, transform: transform,
                                       inverse: inverse, tiles: tiles))
        }
        return result
    }

    /// Continuous level-pixel position (pixel edges at integers) of a map coordinate.
    func pixel(_ c: Coordinate) -> Coordinate { inverse.pixelToMap(x: c.x, y: c.y) }

    /// The level-pixel box of map coordinates (all corners, so a rotated grid is covered).
    func pixelBox(_ points: [Coordinate]) -> PixelBox? {
        let p = points.map(pixel)
        guard let minX = p.map(\.x).min(), let maxX = p.map(\.x).max(), let minY = p.map(\.y).min(), let maxY = p.map(\.y).max()
        else { return nil }
        return PixelBox(minX: minX, minY: minY, maxX: maxX, maxY: maxY)
    }
}

/// An axis-aligned box in continuous pixel coordinates.
struct PixelBox: Sendable, Equatable {
    var minX: Double, minY: Double, maxX: Double, maxY: Double

    var width: Double { maxX - minX }
    var height: Double { maxY - minY }

    func inflated(by m: Double) -> PixelBox { PixelBox(minX: minX - m, minY: minY - m, maxX: maxX + m, maxY: maxY + m) }

    func clipped(width w: Int, height h: Int) -> PixelBox {
        PixelBox(minX: max(0, minX), minY: max(0, minY), maxX: min(Double(w), maxX), maxY: min(Double(h), maxY))
    }

    func lies(in t: StoreManifest.TileEntry) -> Bool {
        minX >= Double(t.window[0]) && minY >= Double(t.window[1])
            && maxX <= Double(t.window[0] + t.window[2]) && maxY <= Double(t.window[1] + t.window[3])
    }

    var centre: Coordinate { Coordinate(x: (minX + maxX) / 2, y: (minY + maxY) / 2) }
}

extension PixelBox {
    /// A tile's window `[x, y, width, height]` as a box.
    init(window w: [Int]) {
        self.init(minX: Double(w[0]), minY: Double(w[1]), maxX: Double(w[0] + w[2]), maxY: Double(w[1] + w[3]))
    }
}

/// The rules of routing and escalation, in one place.
enum Routing {
    /// The margin around a prompt's extent, in level pixels: SAM's masks reach a little past a
    /// tight box, and 32 px keeps the extent clear of SAM2's 20-px crop-edge tolerance.
    static func margin(for box: PixelBox) -> Double { max(0.1 * max(box.width, box.height), 32) }
    /// A mask whose box comes this close (level pixels) to an interior tile edge was cut by it
    /// (`is_box_near_crop_edge`'s atol in the official automatic mask generator).
    static let edgeTolerance = 20.0
    /// Escalation keeps the coarser answer only if it agrees with the finer one inside the finer
    /// tile (IoU), does not grow by more than this factor, and its score does not drop by more.
    static let consistencyIoU = 0.6
    static let maximumGrowth = 4.0
    static let maximumScoreDrop: Float = 0.1
}

/// Where a prompt is answered.
struct Route {
    let level: PyramidLevel
    let tile: StoreManifest.TileEntry
    /// True when no tile of any level holds the prompt's extent: the answer is cut by the tile.
    let clipped: Bool
    /// True when the tile was pending and was encoded for this prompt.
    var encodedOnDemand = false
}

extension PyramidLevel {
    /// Among this level's usable tiles whose window holds `box`, the one whose centre is nearest
    /// `box`'s centre.
    func bestTile(holding box: PixelBox, usable: (StoreManifest.TileEntry) -> Bool) -> StoreManifest.TileEntry? {
        let c = box.centre
        func distance(_ t: StoreManifest.TileEntry) -> Double {
            let tc = PixelBox(window: t.window).centre
            return (tc.x - c.x) * (tc.x - c.x) + (tc.y - c.y) * (tc.y - c.y)
        }
        return tiles.filter { box.lies(in: $0) && usable($0) }.min { distance($0) < distance($1) }
    }

    /// Whether a mask box (level pixels, on `tile`'s window) comes within the edge tolerance of
    /// one of the tile's interior edges — an edge that is not the raster's.
    func touchesInteriorEdge(_ mask: PixelBox, of tile: StoreManifest.TileEntry, tolerance tol: Double = Routing.edgeTolerance) -> Bool {
        let (x0, y0, w, h) = (Double(tile.window[0]), Double(tile.window[1]), Double(tile.window[2]), Double(tile.window[3]))
        return (x0 > 0 && mask.minX <= x0 + tol) || (y0 > 0 && mask.minY <= y0 + tol)
            || (x0 + w < Double(width) && mask.maxX >= x0 + w - tol) || (y0 + h < Double(height) && mask.maxY >= y0 + h - tol)
    }
}

extension RowRuns {
    /// Pixels set.
    var area: Int {
        var total = 0
        for r in 0..<start.count { total += Int(end[r] - start[r]) }
        return total
    }

    /// The box of the set pixels (pixel edges, `[minX, maxX)` as continuous coordinates), nil when empty.
    var boundingBox: PixelBox? {
        var (minX, minY, maxX, maxY) = (Int.max, Int.max, Int.min, Int.min)
        for y in 0..<height where !row(y).isEmpty {
            minY = min(minY, y)
            maxY = max(maxY, y + 1)
            minX = min(minX, Int(start[row(y).lowerBound]))
            maxX = max(maxX, Int(end[row(y).upperBound - 1]))
        }
        return minY == Int.max ? nil : PixelBox(minX: Double(minX), minY: Double(minY), maxX: Double(maxX), maxY: Double(maxY))
    }

    /// Pixels set in both `self` (first pixel at `origin` of a common grid) and `other` (at
    /// `otherOrigin`), and the pixels of `self` inside `other`'s `width × height` window.
    func overlap(at origin: (x: Int, y: Int), with other: RowRuns, at otherOrigin: (x: Int, y: Int), otherWidth: Int)
        -> (both: Int, selfInside: Int) {
        var (both, inside) = (0, 0)
        let (dx, dy) = (origin.x - otherOrigin.x, origin.y - otherOrigin.y)
        for y in 0..<height {
            let oy = y + dy
            guard oy >= 0, oy < other.height else { continue }
            let (a, b) = (row(y), other.row(oy))
            for r in a {
                let lo = max(Int(start[r]) + dx, 0), hi = min(Int(end[r]) + dx, otherWidth)
                if hi > lo { inside += hi - lo }
            }
            var (i, j) = (a.lowerBound, b.lowerBound)
            while i < a.upperBound, j < b.upperBound {
                let (s0, e0) = (Int(start[i]) + dx, Int(end[i]) + dx)
                let (s1, e1) = (Int(other.start[j]), Int(other.end[j]))
                if min(e0, e1) > max(s0, s1) { both += min(e0, e1) - max(s0, s1) }
                if e0 < e1 { i += 1 } else { j += 1 }
            }
        }
        return (both, inside)
    }

    /// Runs from a builder that appends runs row by row, in order, merging touching runs.
    struct Builder {
        private var starts: [Int32] = [], ends: [Int32] = [], offsets: [Int] = [0]

        mutating func append(_ lo: Int, _ hi: Int) {
            guard hi > lo else { return }
            if starts.count > offsets[offsets.count - 1], let last = ends.last, Int(last) >= lo {
                ends[ends.count - 1] = Int32(max(Int(last), hi))
            } else {
                starts.append(Int32(lo))
                ends.append(Int32(hi))
            }
        }

        mutating func endRow() { offsets.append(starts.count) }

        var runs: RowRuns { RowRuns(starts: starts, ends: ends, rowOffsets: offsets) }
    }
}

/// One decode of a prompt on a routed tile, traced on the encoded grid.
struct LevelAnswer {
    let route: Route
    let scores: [Float]
    let chosen: Int
    /// The mask on the tile's footprint on the encoded grid: `width × height` pixels from `origin`.
    let runs: RowRuns
    let origin: (x: Int, y: Int)
    let width: Int
    let height: Int
    /// Footprint pixel → map.
    let transform: GeoTransform
    /// The mask reaches an interior edge of its tile (it may be cut).
    let touchesInteriorEdge: Bool

    /// The corners of the mask's box in map coordinates (nil when the mask is empty).
    var maskEnvelope: [Coordinate]? {
        guard let b = runs.boundingBox else { return nil }
        return [(b.minX, b.minY), (b.maxX, b.minY), (b.minX, b.maxY), (b.maxX, b.maxY)].map {
            let c = transform.pixelToMap(x: $0.0, y: $0.1)
            return Coordinate(x: c.x, y: c.y)
        }
    }

    /// Whether `coarser` (from a higher level) is the same object grown past this tile's edge:
    /// inside this answer's footprint they agree, it grows by at most ``Routing/maximumGrowth``,
    /// and its score does not drop by more than ``Routing/maximumScoreDrop``.
    func agrees(with coarser: LevelAnswer) -> Bool {
        let area = runs.area
        guard area > 0 else { return false }
        let (both, inside) = coarser.runs.overlap(at: coarser.origin, with: runs, at: origin, otherWidth: width)
        let union = inside + area - both
        let iou = union > 0 ? Double(both) / Double(union) : 0
        return iou >= Routing.consistencyIoU && Double(coarser.runs.area) <= Routing.maximumGrowth * Double(area)
            && coarser.scores[coarser.chosen] >= scores[chosen] - Routing.maximumScoreDrop
    }
}

extension MapBox {
    /// The four corners.
    var corners: [Coordinate] {
        [Coordinate(x: minX, y: minY), Coordinate(x: maxX, y: minY), Coordinate(x: minX, y: maxY), Coordinate(x: maxX, y: maxY)]
    }

    /// The envelope of some points (all zero when there are none).
    init(envelopeOf points: some Collection<Coordinate>) {
        self.init(minX: points.map(\.x).min() ?? 0, minY: points.map(\.y).min() ?? 0,
                  maxX: points.map(\.x).max() ?? 0, maxY: points.map(\.y).max() ?? 0)
    }
}
