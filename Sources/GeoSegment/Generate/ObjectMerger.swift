import GeoIO
import SAM2

// Objects across tiles and levels (a GeoSAM2 extension of the official crop semantics; the
// research note amg-spec.md §13.3 and large-objects.md describe the approach):
//
// 1. Whole masks (not near an interior edge of their tile) are deduplicated by box NMS in
//    encoded-grid pixels with `crop_nms_thresh`. The official cross-crop score (1/crop area,
//    "prefer smaller crops") becomes: the finer level first, then the tile whose centre is
//    nearest the mask's box centre, then the predicted IoU, then tile and mask order — a
//    deterministic order with no ties.
// 2. A cut mask (near an interior edge) that lies inside a kept whole mask of another tile or
//    level is that object's piece and is dropped.
// 3. The remaining cut masks of one level are pieces of objects no tile holds whole: pieces of
//    neighbouring tiles that agree inside the tiles' shared overlap are joined (union-find), and
//    each group becomes one object, the union of its pieces.

/// A mask's place on the pyramid: its runs over its tile's window and where that window lies.
struct PlacedMask {
    let runs: RowRuns
    /// The window's origin in level pixels.
    let x: Int
    let y: Int
    /// Encoded-grid pixels per level pixel.
    let factor: Int

    /// Encoded-grid pixels set in both masks (any levels).
    func intersection(_ other: PlacedMask) -> Int {
        let f = min(factor, other.factor)
        let (ra, rb) = (factor / f, other.factor / f)
        // Rows of the finer frame where both masks have rows.
        let lo = max(y * ra, other.y * rb), hi = min((y + runs.height) * ra, (other.y + other.runs.height) * rb)
        guard hi > lo else { return 0 }
        var total = 0
        for row in lo..<hi {
            let (a, b) = (runs.row(row / ra - y), other.runs.row(row / rb - other.y))
            var (i, j) = (a.lowerBound, b.lowerBound)
            while i < a.upperBound, j < b.upperBound {
                let (s0, e0) = ((Int(runs.start[i]) + x) * ra, (Int(runs.end[i]) + x) * ra)
                let (s1, e1) = ((Int(other.runs.start[j]) + other.x) * rb, (Int(other.runs.end[j]) + other.x) * rb)
                if min(e0, e1) > max(s0, s1) { total += min(e0, e1) - max(s0, s1) }
                if e0 < e1 { i += 1 } else { j += 1 }
            }
        }
        return total * f * f
    }

    /// Encoded-grid pixels of the mask inside a window `[x, y, width, height]` of its own level.
    func pixels(inside window: [Int]) -> Int {
        var total = 0
        let (wx0, wy0, wx1, wy1) = (window[0], window[1], window[0] + window[2], window[1] + window[3])
        for row in max(wy0, y)..<max(max(wy0, y), min(wy1, y + runs.height)) {
            for r in runs.row(row - y) {
                let (s, e) = (max(Int(runs.start[r]) + x, wx0), min(Int(runs.end[r]) + x, wx1))
                if e > s { total += e - s }
            }
        }
        return total * factor * factor
    }

    /// Encoded-grid pixels set.
    var area: Int { runs.area * factor * factor }
}

/// What the merge knows of each mask without its runs.
struct MaskSummary: Sendable {
    /// Index of the mask's tile in the run's tile list, and of the mask in its tile.
    let tile: Int
    let mask: Int
    let level: Int
    let factor: Int
    /// The box on the encoded grid (continuous pixels).
    let box: PixelBox
    let score: Float
    let cut: Bool
    /// The distance from the tile's centre to the box's centre, in encoded-grid pixels.
    let centreDistance: Double
}

/// One object of the result: one whole mask, or the union of pieces of one level.
struct MergedObject: Sendable {
    /// (tile index, mask index) of its masks.
    let parts: [(tile: Int, mask: Int)]
    let level: Int
    /// No tile held it whole and no neighbouring piece completed it.
    let clipped: Bool
}

enum ObjectMerger {
    /// The objects, in the order of their first mask (level, tile, mask).
    /// - Parameters:
    ///   - masks: every tile's masks after the per-tile NMS.
    ///   - windows: each tile's window on its level.
    ///   - placed: a mask's runs and place (loaded on demand).
    static func merge(_ masks: [MaskSummary], windows: [[Int]], options: GenerateOptions,
                      placed: (Int, Int) throws -> PlacedMask) throws -> [MergedObject] {
        let index = BoxIndex(masks)
        // 1. Whole masks: NMS across tiles and levels.
        let wholes = masks.indices.filter { !masks[$0].cut }.sorted { a, b in
            let (x, y) = (masks[a], masks[b])
            if x.level != y.level { return x.level < y.level }
            if x.centreDistance != y.centreDistance { return x.centreDistance < y.centreDistance }
            if x.score != y.score { return x.score > y.score }
            return (x.tile, x.mask) < (y.tile, y.mask)
        }
        var keptWhole = Set<Int>(), suppressed = Set<Int>()
        for i in wholes where !suppressed.contains(i) {
            keptWhole.insert(i)
            for j in index.overlapping(masks[i].box) where j != i && !masks[j].cut && !keptWhole.contains(j) {
                if Double(masks[i].box.iou(masks[j].box)) > options.cropNMSThreshold { suppressed.insert(j) }
            }
        }
        // 2. Cut masks inside a kept whole mask of another tile are its pieces.
        var pieces: [Int] = []
        for p in masks.indices where masks[p].cut {
            let wholes = index.overlapping(masks[p].box).filter { keptWhole.contains($0) && masks[$0].tile != masks[p].tile }
            // The piece's runs are read only when a whole mask of another tile is near.
            let piece = wholes.isEmpty ? nil : try placed(masks[p].tile, masks[p].mask)
            let area = Double(piece?.area ?? 0)
            let covered = try area > 0 && wholes.contains { w in
                Double(piece?.intersection(try placed(masks[w].tile, masks[w].mask)) ?? 0) >= options.containment * area
            }
            if !covered { pieces.append(p) }
        }
        // 3. Pieces of neighbouring tiles that agree in the tiles' overlap are one object.
        var parent = Dictionary(uniqueKeysWithValues: pieces.map { ($0, $0) })
        func root(_ i: Int) -> Int {
            var r = i
            while let p = parent[r], p != r { r = p }
            parent[i] = r
            return r
        }
        let isPiece = Set(pieces)
        for p in pieces {
            for q in index.overlapping(masks[p].box) where q > p && isPiece.contains(q) && masks[q].level == masks[p].level
                && masks[q].tile != masks[p].tile {
                guard let shared = windows[masks[p].tile].intersection(windows[masks[q].tile]) else { continue }
                let (a, b) = (try placed(masks[p].tile, masks[p].mask), try placed(masks[q].tile, masks[q].mask))
                let smaller = min(a.pixels(inside: shared), b.pixels(inside: shared))
                guard smaller > 0 else { continue }
                if Double(a.intersection(b)) >= options.pieceAgreement * Double(smaller) { parent[root(q)] = root(p) }
            }
        }
        var groups: [Int: [Int]] = [:]
        for p in pieces { groups[root(p), default: []].append(p) }

        var objects: [(key: (Int, Int, Int), object: MergedObject)] = []
        for w in keptWhole {
            let m = masks[w]
            objects.append(((m.level, m.tile, m.mask), MergedObject(parts: [(m.tile, m.mask)], level: m.level, clipped: false)))
        }
        for (_, members) in groups {
            let sorted = members.sorted { (masks[$0].tile, masks[$0].mask) < (masks[$1].tile, masks[$1].mask) }
            let first = masks[sorted[0]]
            objects.append(((first.level, first.tile, first.mask),
                            MergedObject(parts: sorted.map { (masks[$0].tile, masks[$0].mask) }, level: first.level,
                                         clipped: sorted.count == 1)))
        }
        return objects.sorted { $0.key < $1.key }.map(\.object)
    }
}

/// Boxes bucketed on a coarse grid of the encoded grid, for finding the masks near a box.
struct BoxIndex {
    static let cell = 512.0
    private var buckets: [[Int]: [Int]] = [:]
    private let boxes: [PixelBox]

    init(_ masks: [MaskSummary]) {
        boxes = masks.map(\.box)
        for (i, b) in boxes.enumerated() {
            for key in Self.cells(b) { buckets[key, default: []].append(i) }
        }
    }

    static func cells(_ b: PixelBox) -> [[Int]] {
        let (x0, x1) = (Int((b.minX / cell).rounded(.down)), Int((b.maxX / cell).rounded(.down)))
        let (y0, y1) = (Int((b.minY / cell).rounded(.down)), Int((b.maxY / cell).rounded(.down)))
        return (y0...y1).flatMap { y in (x0...x1).map { [$0, y] } }
    }

    /// The masks whose boxes meet `box` (ascending).
    func overlapping(_ box: PixelBox) -> [Int] {
        var found = Set<Int>()
        for key in Self.cells(box) {
            for i in buckets[key] ?? [] where boxes[i].intersects(box) { found.insert(i) }
        }
        return found.sorted()
    }
}

extension PixelBox {
    func intersects(_ o: PixelBox) -> Bool { minX < o.maxX && o.minX < maxX && minY < o.maxY && o.minY < maxY }

    /// The inclusive integer box `batched_mask_to_box` gives for this pixel-edge box (max = last pixel).
    var inclusiveBox: MaskBox { MaskBox(x0: Int(minX), y0: Int(minY), x1: Int(maxX) - 1, y1: Int(maxY) - 1) }

    /// Box IoU as the official NMS computes it, on the inclusive boxes.
    func iou(_ o: PixelBox) -> Float { BoxNMS.iou(inclusiveBox, o.inclusiveBox) }
}

extension Array where Element == Int {
    /// The intersection of two windows `[x, y, width, height]`, nil when they do not overlap.
    func intersection(_ o: [Int]) -> [Int]? {
        let (x0, y0) = (Swift.max(self[0], o[0]), Swift.max(self[1], o[1]))
        let (x1, y1) = (Swift.min(self[0] + self[2], o[0] + o[2]), Swift.min(self[1] + self[3], o[1] + o[3]))
        return x1 > x0 && y1 > y0 ? [x0, y0, x1 - x0, y1 - y0] : nil
    }
}
