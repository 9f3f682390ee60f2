import Foundation
import GeoIO
import XCTest
@testable import GeoSegment

/// Squared outlines: rotated rectangles and an L-shaped building come back with right angles,
/// close to the mask; a round shape is not forced into a square.
final class OutlineRegularizerTests: XCTestCase {
    let transform = GeoTransform(originX: 500_000, pixelWidth: 0.5, originY: 5_000_000, pixelHeight: -0.5)

    /// A mask of the pixels whose centres fall inside `inside(u, v)`, `(u, v)` being the pixel
    /// centre rotated by `degrees` about the grid's centre.
    func mask(size: Int = 200, degrees: Double, _ inside: (Double, Double) -> Bool) -> [UInt8] {
        let (c, s) = (cos(degrees * .pi / 180), sin(degrees * .pi / 180))
        var values = [UInt8](repeating: 0, count: size * size)
        for y in 0..<size {
            for x in 0..<size {
                let (px, py) = (Double(x) + 0.5 - Double(size) / 2, Double(y) + 0.5 - Double(size) / 2)
                if inside(px * c + py * s, -px * s + py * c) { values[y * size + x] = 1 }
            }
        }
        return values
    }

    func outline(_ values: [UInt8], regularize: Bool, size: Int = 200) throws -> Geometry {
        let polygons = try MaskVectorizer.polygons(mask: values, width: size, height: size, geoTransform: transform,
                                                   options: PolygonOptions(largestOnly: true, regularize: regularize))
        return try XCTUnwrap(polygons.first)
    }

    /// Interior angles of a ring, in degrees.
    func angles(_ ring: [Coordinate]) -> [Double] {
        let points = OutlineRegularizer.open(ring)
        return points.indices.map { i in
            let (a, b, c) = (points[(i + points.count - 1) % points.count], points[i], points[(i + 1) % points.count])
            let (ux, uy, vx, vy) = (a.x - b.x, a.y - b.y, c.x - b.x, c.y - b.y)
            return abs(atan2(ux * vy - uy * vx, ux * vx + uy * vy)) * 180 / .pi
        }
    }

    func testRotatedRectanglesComeBackSquare() throws {
        for degrees in [0.0, 12, 20, 37, 45, 71] {
            let values = mask(degrees: degrees) { u, v in abs(u) < 60 && abs(v) < 25 }
            let traced = try outline(values, regularize: false), squared = try outline(values, regularize: true)
            let ring = try XCTUnwrap(squared.polygonRings.first?.first)
            XCTAssertEqual(OutlineRegularizer.open(ring).count, 4, "\(degrees)°: \(ring.count) vertices")
            for angle in angles(ring) { XCTAssertEqual(angle, 90, accuracy: 0.5, "\(degrees)°") }
            XCTAssertTrue(squared.isValid)
            // 120 × 50 pixels of 0.5 m: 1500 m².
            XCTAssertEqual(squared.area, 1500, accuracy: 1500 * 0.03, "\(degrees)°")
            let deviation = OutlineRegularizer.deviation(traced.polygonRings[0], squared.polygonRings[0])
            XCTAssertLessThanOrEqual(deviation, OutlineRegularizer.maximumDeviation(tolerance: 0.75), "\(degrees)°")
        }
    }

    func testAnLShapedBuildingKeepsItsSixCorners() throws {
        let values = mask(degrees: 28) { u, v in (abs(u) < 60 && v > -40 && v < 0) || (u > 10 && u < 60 && v >= 0 && v < 40) }
        let squared = try outline(values, regularize: true)
        let ring = try XCTUnwrap(squared.polygonRings.first?.first)
        let corners = angles(ring)
        XCTAssertEqual(corners.count, 6, "\(ring)")
        for angle in corners { XCTAssertEqual(angle, 90, accuracy: 0.5) }
        XCTAssertTrue(squared.isValid)
    }

    func testARoundShapeIsNotForcedIntoASquare() throws {
        let values = mask(degrees: 0) { u, v in u * u + v * v < 70 * 70 }
        let traced = try outline(values, regularize: false), result = try outline(values, regularize: true)
        XCTAssertTrue(result.isValid)
        let deviation = OutlineRegularizer.deviation(traced.polygonRings[0], result.polygonRings[0])
        XCTAssertLessThanOrEqual(deviation, OutlineRegularizer.maximumDeviation(tolerance: 0.75))
        XCTAssertGreaterThan(OutlineRegularizer.open(result.polygonRings[0][0]).count, 8, "a disc stays round")
        XCTAssertEqual(result.area, traced.area, accuracy: traced.area * 0.02)
    }
}
