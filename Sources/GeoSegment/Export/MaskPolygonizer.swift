import GeoIO

/// Turns a binary mask into polygons by tracing pixel edges, without going through GDAL.
///
/// Same result as `GDALPolygonize` with 4-connectedness, keeping the regions of value 1: one
/// polygon per 4-connected component, with a hole for every 4-connected region of 0s it encloses;
/// every polygon rasterizes back to exactly its pixels. `GeoIO.polygonize` stays the reference
/// (the tests compare the two). This one works straight on the mask — no raster, layer or feature
/// objects — which makes it ~20× faster on the speckled masks random weights give.
public enum MaskPolygonizer {
    // Directions on the pixel-corner grid (y down): east, south, west, north.
    private static let dx = [1, 0, -1, 0]
    private static let dy = [0, 1, 0, -1]

    /// Polygons of the 1-pixels of `mask` (`width × height`, row-major, non-zero = 1), with
    /// coordinates through `geoTransform`; exterior rings counter-clockwise and holes clockwise in
    /// map coordinates (the OGC and RFC 7946 convention, for a north-up transform).
    public static func polygons(mask: [UInt8], width: Int, height: Int, geoTransform: GeoTransform) -> [Geometry] {
        precondition(mask.count == width * height, "mask has \(mask.count) values for \(width)×\(height)")
        let labels = componentLabels(mask, width, height)
        guard labels.count > 0 else { return [] }

        // Boundary edges keep the 1-pixel on their right (walking clockwise around each pixel on
        // screen). outgoing[v] holds a bit per direction leaving corner v = y·(width+1) + x.
        let stride = width + 1
        var outgoing = [UInt8](repeating: 0, count: stride * (height + 1))
        mask.withUnsafeBufferPointer { m in
            func on(_ x: Int, _ y: Int) -> Bool { x >= 0 && y >= 0 && x < width && y < height && m[y * width + x] != 0 }
            for y in 0..<height {
                for x in 0..<width where m[y * width + x] != 0 {
                    if !on(x, y - 1) { outgoing[y * stride + x] |= 1 }              // top: east
                    if !on(x + 1, y) { outgoing[y * stride + x + 1] |= 2 }          // right: south
                    if !on(x, y + 1) { outgoing[(y + 1) * stride + x + 1] |= 4 }    // bottom: west
                    if !on(x - 1, y) { outgoing[(y + 1) * stride + x] |= 8 }        // left: north
                }
            }
        }

        // Walk the edges into rings. A corner with two outgoing edges is a saddle (two 1-pixels
        // touching diagonally). When they belong to different components, turning right keeps to
        // the current pixel, so the components stay apart. When they are one component (joined
        // elsewhere), turning left keeps the exterior from touching itself there: the region the
        // contact closes off becomes a hole touching the shell at that corner, which is valid.
        var ringsByComponent = [[[Coordinate]]](repeating: [], count: labels.count)
        var areasByComponent = [[Double]](repeating: [], count: labels.count)
        for start in 0..<outgoing.count {
            let bits = outgoing[start]
            guard bits != 0, bits.nonzeroBitCount == 1 else { continue }  // start on a plain corner
            var vertex = start
            var direction = bits.trailingZeroBitCount
            let (sx, sy) = (start % stride, start / stride)
            // The 1-pixel on the right of the first edge names the component.
            let pixel: (Int, Int) = [(sx, sy), (sx - 1, sy), (sx - 1, sy - 1), (sx, sy - 1)][direction]
            let component = Int(labels.label[pixel.1 * width + pixel.0])
            var corners: [(Int, Int)] = []
            var previous = -1
            var area2 = 0  // twice the signed area, in pixel units
            while true {
                let (x, y) = (vertex % stride, vertex / stride)
                if direction != previous { corners.append((x, y)) }
                outgoing[vertex] &= ~UInt8(1 << direction)
                let (nx, ny) = (x + dx[direction], y + dy[direction])
                area2 += x * ny - nx * y
                vertex = ny * stride + nx
                previous = direction
                let next = outgoing[vertex]
                if next == 0 { break }  // back at the start
                if next.nonzeroBitCount == 1 {
                    direction = next.trailingZeroBitCount
                } else {
                    let (cx, cy) = (vertex % stride, vertex / stride)
                    let nw = labels.label[(cy - 1) * width + cx - 1], se = labels.label[cy * width + cx]
                    let ne = labels.label[(cy - 1) * width + cx], sw = labels.label[cy * width + cx - 1]
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

        // Largest ring of a component is its exterior; the others are its holes.
        var result: [Geometry] = []
        result.reserveCapacity(labels.count)
        for c in 0..<labels.count where !ringsByComponent[c].isEmpty {
            let areas = areasByComponent[c]
            let outer = areas.indices.max { areas[$0] < areas[$1] } ?? 0
            var rings = [oriented(ringsByComponent[c][outer], counterClockwise: true)]
            for (i, ring) in ringsByComponent[c].enumerated() where i != outer {
                rings.append(oriented(ring, counterClockwise: false))
            }
            result.append(.polygon(rings: rings))
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

    /// 4-connected component labels of the 1-pixels (−1 elsewhere) and their count.
    static func componentLabels(_ mask: [UInt8], _ width: Int, _ height: Int) -> (label: [Int32], count: Int) {
        var label = [Int32](repeating: -1, count: mask.count)
        var count: Int32 = 0
        var stack: [Int] = []
        mask.withUnsafeBufferPointer { m in
            label.withUnsafeMutableBufferPointer { l in
                for seed in 0..<m.count where m[seed] != 0 && l[seed] < 0 {
                    l[seed] = count
                    stack.append(seed)
                    while let p = stack.popLast() {
                        let (x, y) = (p % width, p / width)
                        if x > 0, m[p - 1] != 0, l[p - 1] < 0 { l[p - 1] = count; stack.append(p - 1) }
                        if x + 1 < width, m[p + 1] != 0, l[p + 1] < 0 { l[p + 1] = count; stack.append(p + 1) }
                        if y > 0, m[p - width] != 0, l[p - width] < 0 { l[p - width] = count; stack.append(p - width) }
                        if y + 1 < height, m[p + width] != 0, l[p + width] < 0 { l[p + width] = count; stack.append(p + width) }
                    }
                    count += 1
                }
            }
        }
        return (label, Int(count))
    }
}
