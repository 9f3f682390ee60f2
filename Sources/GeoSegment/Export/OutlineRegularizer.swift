import Foundation
import GeoIO

/// Right-angled outlines for buildings and parcels: a traced mask outline becomes a polygon whose
/// edges all run along the object's dominant direction or across it.
///
/// 1. The dominant direction: the length-weighted mean of the directions of the simplified
///    outline's edges modulo 90° (taken on the angle times four, so that edges at 0°, 90°, 180° and
///    270° all agree).
/// 2. In that frame, each ring is simplified (Douglas–Peucker with `tolerance`), each edge called
///    along or across by its larger extent, and consecutive edges of the same kind merged: the
///    near-collinear ones snap into one straight edge at their length-weighted mean position.
/// 3. The corners are the crossings of consecutive along and across edges; rotated back.
///
/// The result is checked: it must be a valid polygon, and every vertex of it must lie within
/// ``maximumDeviation(tolerance:)`` of the traced outline and every traced vertex that close to
/// it. An outline that cannot be squared within that distance (a round pond, a curved field) is
/// only simplified, so the option never returns a shape far from the mask.
public enum OutlineRegularizer {
    /// How far a regularised outline may be from the traced one.
    public static func maximumDeviation(tolerance: Double) -> Double { 3 * tolerance }

    /// The regularised polygon, or the outline simplified with `tolerance` when squaring it
    /// would move it further than ``maximumDeviation(tolerance:)``.
    public static func regularize(_ polygon: Geometry, tolerance: Double) -> Geometry {
        guard tolerance > 0, tolerance.isFinite, let rings = polygon.polygonRings.first, let shell = rings.first,
              // On the simplified outline: the traced one is a staircase of pixel edges, whose
              // directions are the grid's, not the object's.
              let angle = dominantAngle(simplifyClosed(open(shell), tolerance: tolerance)) else { return polygon }
        let (c, s) = (cos(angle), sin(angle))
        let toFrame = { (p: Coordinate) in Coordinate(x: p.x * c + p.y * s, y: -p.x * s + p.y * c) }
        let fromFrame = { (p: Coordinate) in Coordinate(x: p.x * c - p.y * s, y: p.x * s + p.y * c) }
        var squared: [[Coordinate]] = []
        for (index, ring) in rings.enumerated() {
            let framed = open(ring).map(toFrame)
            guard let result = square(framed, tolerance: tolerance) else {
                if index == 0 { return fallback(polygon, tolerance: tolerance) }
                continue  // a hole too small to square: dropped, the deviation check below decides
            }
            squared.append(result.map(fromFrame))
        }
        let candidate = Geometry.polygon(rings: squared)
        let limit = maximumDeviation(tolerance: tolerance)
        guard candidate.isValid, deviation(rings, squared) <= limit else { return fallback(polygon, tolerance: tolerance) }
        return candidate
    }

    static func fallback(_ polygon: Geometry, tolerance: Double) -> Geometry {
        (try? polygon.simplifiedPreserveTopology(tolerance: tolerance)).flatMap { $0.isEmpty ? nil : $0 } ?? polygon
    }

    /// A ring without its closing point.
    static func open(_ ring: [Coordinate]) -> [Coordinate] {
        guard ring.count > 1, let first = ring.first, let last = ring.last, first.x == last.x, first.y == last.y else { return ring }
        return Array(ring.dropLast())
    }

    /// The direction (radians, in [−π/4, π/4)) that the ring's edges run along or across, weighted
    /// by length; nil for a degenerate ring.
    static func dominantAngle(_ ring: [Coordinate]) -> Double? {
        let points = open(ring)
        guard points.count >= 3 else { return nil }
        var (sumC, sumS) = (0.0, 0.0)
        for i in points.indices {
            let (a, b) = (points[i], points[(i + 1) % points.count])
            let (dx, dy) = (b.x - a.x, b.y - a.y)
            let length = (dx * dx + dy * dy).squareRoot()
            guard length > 0 else { continue }
            let theta = atan2(dy, dx)
            sumC += length * cos(4 * theta)
            sumS += length * sin(4 * theta)
        }
        guard sumC != 0 || sumS != 0 else { return nil }
        return atan2(sumS, sumC) / 4
    }

    /// Squares an open ring already rotated into the dominant frame; nil when fewer than four
    /// straight sides remain.
    static func square(_ ring: [Coordinate], tolerance: Double) -> [Coordinate]? {
        let simplified = simplifyClosed(ring, tolerance: tolerance)
        guard simplified.count >= 4 else { return nil }
        // Edges as (horizontal?, position, length).
        var edges: [(horizontal: Bool, position: Double, length: Double)] = []
        for i in simplified.indices {
            let (a, b) = (simplified[i], simplified[(i + 1) % simplified.count])
            let (dx, dy) = (abs(b.x - a.x), abs(b.y - a.y))
            let horizontal = dx >= dy
            edges.append((horizontal, horizontal ? (a.y + b.y) / 2 : (a.x + b.x) / 2, max(dx, dy)))
        }
        // Start at a change of kind, so that merging runs need not wrap around.
        guard let start = edges.indices.first(where: { edges[$0].horizontal != edges[(($0 - 1) + edges.count) % edges.count].horizontal }) else {
            return nil
        }
        // Runs of edges of one kind, each at the length-weighted mean position of its edges.
        var runs: [(horizontal: Bool, position: Double)] = []
        var (kind, weighted, total) = (edges[start].horizontal, 0.0, 0.0)
        for k in 0..<edges.count {
            let edge = edges[(start + k) % edges.count]
            if edge.horizontal != kind {
                runs.append((kind, weighted / total))
                (kind, weighted, total) = (edge.horizontal, 0, 0)
            }
            let weight = max(edge.length, 1e-12)
            weighted += edge.position * weight
            total += weight
        }
        runs.append((kind, weighted / total))
        guard runs.count >= 4, runs.count % 2 == 0 else { return nil }
        // Corners: where each run meets the next.
        var corners: [Coordinate] = []
        for i in runs.indices {
            let (a, b) = (runs[i], runs[(i + 1) % runs.count])
            corners.append(a.horizontal ? Coordinate(x: b.position, y: a.position) : Coordinate(x: a.position, y: b.position))
        }
        // Drop corners that coincide with their predecessor (a run that collapsed).
        var result: [Coordinate] = []
        for p in corners where !(result.last.map { abs($0.x - p.x) < 1e-9 && abs($0.y - p.y) < 1e-9 } ?? false) { result.append(p) }
        return result.count >= 4 ? result : nil
    }

    /// Douglas–Peucker on a closed ring, split at its two mutually farthest vertices.
    static func simplifyClosed(_ ring: [Coordinate], tolerance: Double) -> [Coordinate] {
        guard ring.count > 4 else { return ring }
        let far = ring.indices.max { distanceSquared(ring[0], ring[$0]) < distanceSquared(ring[0], ring[$1]) } ?? 0
        guard far > 0 else { return ring }
        let a = douglasPeucker(Array(ring[0...far]), tolerance: tolerance)
        let b = douglasPeucker(Array(ring[far...]) + [ring[0]], tolerance: tolerance)
        return Array(a.dropLast()) + Array(b.dropLast())
    }

    static func douglasPeucker(_ points: [Coordinate], tolerance: Double) -> [Coordinate] {
        guard points.count > 2 else { return points }
        var keep = [Bool](repeating: false, count: points.count)
        keep[0] = true
        keep[points.count - 1] = true
        var stack = [(0, points.count - 1)]
        while let (lo, hi) = stack.popLast() {
            guard hi > lo + 1 else { continue }
            var (best, index) = (-1.0, lo)
            for i in (lo + 1)..<hi {
                let d = segmentDistance(points[i], points[lo], points[hi])
                if d > best { (best, index) = (d, i) }
            }
            if best > tolerance {
                keep[index] = true
                stack.append((lo, index))
                stack.append((index, hi))
            }
        }
        return points.indices.filter { keep[$0] }.map { points[$0] }
    }

    /// The larger of the two directed discrete Hausdorff distances between the traced and the
    /// regularised rings (vertices of one to the segments of the other), over all rings.
    static func deviation(_ traced: [[Coordinate]], _ squared: [[Coordinate]]) -> Double {
        let tracedRings = traced.map(open), squaredRings = squared.map(open)
        func farthest(_ from: [[Coordinate]], _ to: [[Coordinate]]) -> Double {
            var worst = 0.0
            for ring in from {
                for p in ring {
                    var nearest = Double.infinity
                    for other in to where other.count >= 2 {
                        for i in other.indices {
                            nearest = min(nearest, segmentDistance(p, other[i], other[(i + 1) % other.count]))
                        }
                    }
                    worst = max(worst, nearest)
                }
            }
            return worst
        }
        return max(farthest(tracedRings, squaredRings), farthest(squaredRings, tracedRings))
    }

    static func distanceSquared(_ a: Coordinate, _ b: Coordinate) -> Double {
        (a.x - b.x) * (a.x - b.x) + (a.y - b.y) * (a.y - b.y)
    }

    static func segmentDistance(_ p: Coordinate, _ a: Coordinate, _ b: Coordinate) -> Double {
        let (dx, dy) = (b.x - a.x, b.y - a.y)
        let lengthSquared = dx * dx + dy * dy
        guard lengthSquared > 0 else { return distanceSquared(p, a).squareRoot() }
        let t = max(0, min(1, ((p.x - a.x) * dx + (p.y - a.y) * dy) / lengthSquared))
        return distanceSquared(p, Coordinate(x: a.x + t * dx, y: a.y + t * dy)).squareRoot()
    }
}
