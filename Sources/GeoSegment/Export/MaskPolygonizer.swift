import GeoIO

/// Turns a binary mask into polygons by tracing pixel edges, without going through GDAL.
///
/// Same result as `GDALPolygonize` with 4-connectedness, keeping the regions of value 1: one
/// polygon per 4-connected component, with a hole for every 4-connected region of 0s it encloses;
/// every polygon rasterizes back to exactly its pixels. `GeoIO.polygonize` stays the reference
/// (the tests compare the two). This one works straight on the mask's row runs — no raster, layer
/// or feature objects — so its cost follows the mask's boundary, not its area: 0.17 ms for a
/// 1024² mask of a few blobs, where GDAL took 6 ms.
public enum MaskPolygonizer {
    // Directions on the pixel-corner grid (y down): east, south, west, north.
    private static let dx = [1, 0, -1, 0]
    private static let dy = [0, 1, 0, -1]

    /// Polygons of the 1-pixels of `mask` (`width × height`, row-major, non-zero = 1), with
    /// coordinates through `geoTransform`; exterior rings counter-clockwise and holes clockwise in
    /// map coordinates (the OGC and RFC 7946 convention, for a north-up transform).
    public static func polygons(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform) -> [Geometry] {
        components(mask: mask, width: width, height: height, geoTransform: geoTransform).map(\.polygon)
    }

    /// A polygon with the pixel counts it covers: `pixels` (holes excluded) and `outerPixels`
    /// (inside its exterior ring), known from tracing, so that callers need not ask GDAL.
    public struct Component: Sendable {
        public var polygon: Geometry
        public var pixels: Int
        public var outerPixels: Int
    }

    /// `polygons` with each polygon's pixel counts, in the same order.
    public static func components(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform) -> [Component] {
        precondition(mask.count == width * height, "mask has \(mask.count) values for \(width)×\(height)")
        let runs = mask.withUnsafeBufferPointer { RowRuns($0, width: width, height: height) }
        return components(runs: runs, width: width, geoTransform: geoTransform)
    }

    /// `components` of a mask given by its row runs (`width` wide, `runs.height` high).
    static func components(runs unlabelled: RowRuns, width: Int, geoTransform: GeoTransform) -> [Component] {
        let runs = unlabelled.labelled()
        let height = runs.height
        guard runs.componentCount > 0 else { return [] }

        // Boundary edges keep the 1-pixel on their right (walking clockwise around each pixel on
        // screen). outgoing[v] holds a bit per direction leaving corner v = y·(width+1) + x. They
        // come from the runs: a run's ends give its vertical edges, and the parts of a row not
        // covered by the row above (below) give its top (bottom) edges.
        let stride = width + 1
        var outgoing = [UInt8](repeating: 0, count: stride * (height + 1))
        outgoing.withUnsafeMutableBufferPointer { o in
            for y in 0..<height {
                let row = runs.row(y)
                for r in row {
                    o[(y + 1) * stride + Int(runs.start[r])] |= 8   // left: north
                    o[y * stride + Int(runs.end[r])] |= 2           // right: south
                }
                runs.uncovered(row, by: y > 0 ? runs.row(y - 1) : 0..<0) { x0, x1 in
                    for x in x0..<x1 { o[y * stride + x] |= 1 }     // top: east
                }
                runs.uncovered(row, by: y + 1 < height ? runs.row(y + 1) : 0..<0) { x0, x1 in
                    for x in x0..<x1 { o[(y + 1) * stride + x + 1] |= 4 }  // bottom: west
                }
            }
        }

        // Walk the edges into rings, starting in raster order at corners with one outgoing edge.
        // A corner with two outgoing edges is a saddle (two 1-pixels touching diagonally). When
        // they belong to different components, turning right keeps to the current pixel, so the
        // components stay apart. When they are one component (joined elsewhere), turning left
        // keeps the exterior from touching itself there: the region the contact closes off
        // becomes a hole touching the shell at that corner, which is valid.
        var ringsByComponent = [[[Coordinate]]](repeating: [], count: runs.componentCount)
        var areasByComponent = [[Double]](repeating: [], count: runs.componentCount)
        outgoing.withUnsafeMutableBufferPointer { o in
            let count = o.count
            var start = 0
            while start < count {
                // Most corners have no edge: skip them eight at a time.
                if start & 7 == 0, start + 8 <= count,
                   UnsafeRawPointer(o.baseAddress! + start).loadUnaligned(as: UInt64.self) == 0 {
                    start += 8
                    continue
                }
                let bits = o[start]
                defer { start += 1 }
                guard bits != 0, bits.nonzeroBitCount == 1 else { continue }  // start on a plain corner
                var direction = bits.trailingZeroBitCount
                let (sx, sy) = (start % stride, start / stride)
                var (x, y) = (sx, sy)
                // The 1-pixel on the right of the first edge names the component.
                let pixel: (Int, Int) = [(sx, sy), (sx - 1, sy), (sx - 1, sy - 1), (sx, sy - 1)][direction]
                let component = Int(runs.label(x: pixel.0, y: pixel.1))
                var corners: [(Int, Int)] = []
                var previous = -1
                var area2 = 0  // twice the signed area, in pixel units
                while true {
                    if direction != previous { corners.append((x, y)) }
                    o[y * stride + x] &= ~UInt8(1 << direction)
                    let (nx, ny) = (x + dx[direction], y + dy[direction])
                    area2 += x * ny - nx * y
                    (x, y) = (nx, ny)
                    previous = direction
                    let next = o[y * stride + x]
                    if next == 0 { break }  // back at the start
                    if next.nonzeroBitCount == 1 {
                        direction = next.trailingZeroBitCount
                    } else {
                        let nw = runs.label(x: x - 1, y: y - 1), se = runs.label(x: x, y: y)
                        let ne = runs.label(x: x, y: y - 1), sw = runs.label(x: x - 1, y: y)
                        let joined = nw >= 0 ? nw == se : ne == sw
                        direction = joined ? (direction + 3) % 4 : (direction + 1) % 4
                    }
                }
                // The start corner is a corner of the ring unless the walk arrives going straight.
                if corners.count > 1, previous == bits.trailingZeroBitCount { corners.removeFirst() }
                let ring = corners.map { geoTransform.pixelToMap(x: Double($0.0), y: Double($0.1)) }
                ringsByComponent[component].append(ring)
                areasByComponent[component].append(abs(Double(area2)) / 2)
            }
        }

        // Largest ring of a component is its exterior; the others are its holes.
        var result: [Component] = []
        result.reserveCapacity(runs.componentCount)
        for c in 0..<runs.componentCount where !ringsByComponent[c].isEmpty {
            let areas = areasByComponent[c]
            let outer = areas.indices.max { areas[$0] < areas[$1] } ?? 0
            var rings = [oriented(ringsByComponent[c][outer], counterClockwise: true)]
            for (i, ring) in ringsByComponent[c].enumerated() where i != outer {
                rings.append(oriented(ring, counterClockwise: false))
            }
            let holes = areas.reduce(0, +) - areas[outer]
            result.append(Component(polygon: .polygon(rings: rings), pixels: Int(areas[outer] - holes), outerPixels: Int(areas[outer])))
        }
        return result
    }

    /// The ring in the wanted orientation (closing point not included).
    static func oriented(_ ring: [Coordinate], counterClockwise: Bool) -> [Coordinate] {
        var area2 = 0.0
        for i in 0..<ring.count {
            let a = ring[i], b = ring[(i + 1) % ring.count]
            area2 += a.x * b.y - b.x * a.y
        }
        return (area2 > 0) == counterClockwise ? ring : ring.reversed()
    }
}

/// The runs of non-zero pixels of each row of a mask, and once `labelled()`, their 4-connected
/// components.
///
/// Working on runs instead of pixels makes labelling and edge finding cost in proportion to the
/// mask's boundary, not its area: a 1024² mask of a few blobs has a few thousand runs.
struct RowRuns: Sendable {
    /// Run r covers pixels start[r]..<end[r] of its row.
    private(set) var start: [Int32] = []
    private(set) var end: [Int32] = []
    /// Component of each run, numbered in raster order of the components' first pixels (empty
    /// until `labelled()`).
    private(set) var component: [Int32] = []
    /// Runs of row y: rowOffset[y]..<rowOffset[y + 1].
    private(set) var rowOffset: [Int] = []
    private(set) var componentCount = 0

    init(_ mask: UnsafeBufferPointer<UInt8>, width: Int, height: Int) {
        rowOffset.reserveCapacity(height + 1)
        rowOffset.append(0)
        guard let base = mask.baseAddress else {
            rowOffset += [Int](repeating: 0, count: height)
            return
        }
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        for y in 0..<height {
            let p = base + y * width
            var x = 0
            while x < width {
                // Zeros, then non-zeros, eight bytes at a time where the word is all one kind.
                while x + 8 <= width, UnsafeRawPointer(p + x).loadUnaligned(as: UInt64.self) == 0 { x += 8 }
                while x < width, p[x] == 0 { x += 1 }
                guard x < width else { break }
                let first = x
                while x + 8 <= width {
                    let v = UnsafeRawPointer(p + x).loadUnaligned(as: UInt64.self)
                    if (v &- ones) & ~v & highs != 0 { break }  // some byte is zero
                    x += 8
                }
                while x < width, p[x] != 0 { x += 1 }
                start.append(Int32(first))
                end.append(Int32(x))
            }
            rowOffset.append(start.count)
        }
    }

    /// Runs given directly (`rowOffsets` has height + 1 entries, runs sorted and disjoint in each row).
    init(starts: [Int32], ends: [Int32], rowOffsets: [Int]) {
        precondition(starts.count == ends.count && rowOffsets.first == 0 && rowOffsets.last == starts.count, "inconsistent runs")
        start = starts
        end = ends
        rowOffset = rowOffsets
    }

    var height: Int { rowOffset.count - 1 }

    func row(_ y: Int) -> Range<Int> { rowOffset[y]..<rowOffset[y + 1] }

    /// The pixels in both `self` and `other` (same height).
    func intersection(_ other: RowRuns) -> RowRuns {
        precondition(other.height == height, "intersecting runs of \(height) and \(other.height) rows")
        var (starts, ends, offsets) = ([Int32](), [Int32](), [0])
        for y in 0..<height {
            let (a, b) = (row(y), other.row(y))
            var (i, j) = (a.lowerBound, b.lowerBound)
            while i < a.upperBound, j < b.upperBound {
                let (lo, hi) = (max(start[i], other.start[j]), min(end[i], other.end[j]))
                if lo < hi {
                    starts.append(lo)
                    ends.append(hi)
                }
                if end[i] < other.end[j] { i += 1 } else { j += 1 }
            }
            offsets.append(starts.count)
        }
        return RowRuns(starts: starts, ends: ends, rowOffsets: offsets)
    }

    /// The mask the runs describe, 0/1 bytes, `width × height`.
    func rasterized(width: Int) -> [UInt8] {
        var mask = [UInt8](repeating: 0, count: width * height)
        mask.withUnsafeMutableBufferPointer { m in
            for y in 0..<height {
                for r in row(y) {
                    (m.baseAddress! + y * width + Int(start[r])).update(repeating: 1, count: Int(end[r] - start[r]))
                }
            }
        }
        return mask
    }

    /// Component of pixel (x, y) (after `labelled()`), or −1 for a 0-pixel or a position outside the mask.
    func label(x: Int, y: Int) -> Int32 {
        guard y >= 0, y + 1 < rowOffset.count else { return -1 }
        var (lo, hi) = (rowOffset[y], rowOffset[y + 1])
        while lo < hi {  // the first run ending after x
            let mid = (lo + hi) / 2
            if Int(end[mid]) <= x { lo = mid + 1 } else { hi = mid }
        }
        return lo < rowOffset[y + 1] && Int(start[lo]) <= x ? component[lo] : -1
    }

    /// Calls `body(x0, x1)` for each stretch of the runs `row` that the runs `other` do not cover.
    func uncovered(_ row: Range<Int>, by other: Range<Int>, _ body: (Int, Int) -> Void) {
        var i = other.lowerBound
        for r in row {
            var x = Int(start[r])
            let stop = Int(end[r])
            while i < other.upperBound, Int(end[i]) <= x { i += 1 }
            var k = i
            while x < stop {
                if k < other.upperBound, Int(start[k]) < stop {
                    if Int(start[k]) > x { body(x, Int(start[k])) }
                    x = max(x, Int(end[k]))
                    k += 1
                } else {
                    body(x, stop)
                    x = stop
                }
            }
        }
    }

    /// The runs with their components: union-find over runs that share a column with a run of
    /// the row above.
    func labelled() -> RowRuns {
        var copy = self
        copy.labelComponents()
        return copy
    }

    private mutating func labelComponents() {
        var parent = [Int32](0..<Int32(start.count))
        func root(_ r: Int) -> Int {
            var r = r
            while Int(parent[r]) != r {
                parent[r] = parent[Int(parent[r])]  // path halving
                r = Int(parent[r])
            }
            return r
        }
        for y in 1..<max(height, 1) {
            let above = row(y - 1), here = row(y)
            var (i, j) = (above.lowerBound, here.lowerBound)
            while i < above.upperBound, j < here.upperBound {
                if start[i] < end[j], start[j] < end[i] {
                    let (a, b) = (root(i), root(j))
                    if a != b { parent[max(a, b)] = Int32(min(a, b)) }  // the earlier run stays the root
                }
                if end[i] < end[j] { i += 1 } else { j += 1 }
            }
        }
        // Roots are each component's first run in raster order, so numbering them in run order
        // numbers components by their first pixel, as a flood fill in raster order would.
        component = [Int32](repeating: -1, count: start.count)
        var next: Int32 = 0
        for r in 0..<start.count {
            let top = root(r)
            if top == r {
                component[r] = next
                next += 1
            } else {
                component[r] = component[top]
            }
        }
        componentCount = Int(next)
    }
}
