import XCTest
@testable import GeoIO

final class PolygonizeTests: XCTestCase {
    /// 12×8 mask: a 6×6 ring (with a 2×2 hole) and, separately, a 3×2 block.
    /// Also a pixel touching the ring only diagonally (joins it with 8-connectedness).
    let width = 12, height = 8
    lazy var mask: [UInt8] = {
        var mask = [UInt8](repeating: 0, count: width * height)
        func set(_ x: Int, _ y: Int) { mask[y * width + x] = 1 }
        for y in 1..<7 { for x in 1..<7 where !(3..<5).contains(x) || !(3..<5).contains(y) { set(x, y) } }
        for y in 2..<4 { for x in 8..<11 { set(x, y) } }
        set(7, 7)  // touches (6, 6) at a corner only
        return mask
    }()

    func testPolygonizeComponentsAndHoles() throws {
        let polygons = try polygonize(mask: mask, width: width, height: height)
        XCTAssertEqual(polygons.count, 3)
        XCTAssertTrue(polygons.allSatisfy { $0.type == .polygon && $0.isValid })
        let areas = polygons.map(\.area).sorted()
        XCTAssertEqual(areas, [1, 6, 32])
        let ring = try XCTUnwrap(polygons.first { $0.area == 32 })
        XCTAssertEqual(ring.polygonRings[0].count, 2, "exterior plus one hole")
        XCTAssertEqual(ring.envelope, Envelope(minX: 1, minY: 1, maxX: 7, maxY: 7))

        let joined = try polygonize(mask: mask, width: width, height: height, connectedness8: true)
        XCTAssertEqual(joined.map(\.area).sorted(), [6, 33])
    }

    func testRoundTripThroughRasterize() throws {
        let transform = GeoTransform(originX: 300_000, pixelWidth: 0.5, originY: 5_000_000, pixelHeight: -0.5)
        let srs = try SpatialReference(epsg: 32633)
        let polygons = try polygonize(mask: mask.map { $0 * 255 }, width: width, height: height,
                                      geoTransform: transform, srs: srs)
        XCTAssertEqual(polygons.map(\.area).reduce(0, +), 39 * 0.25)
        let back = try rasterize(geometries: polygons, width: width, height: height, geoTransform: transform)
        XCTAssertEqual(back, mask)

        // Also through a multipolygon.
        let union = try Geometry.multiPolygon(polygons)
        XCTAssertEqual(try rasterize(geometries: [union], width: width, height: height, geoTransform: transform), mask)
    }

    func testEmptyAndFullMasks() throws {
        XCTAssertEqual(try polygonize(mask: [0, 0, 0, 0], width: 2, height: 2), [])
        let full = try polygonize(mask: [1, 1, 1, 1], width: 2, height: 2)
        XCTAssertEqual(full.map(\.area), [4])
        XCTAssertEqual(try rasterize(geometries: [], width: 2, height: 2), [0, 0, 0, 0])
        assertGeoIOError(["mask has 3 values, expected 2×2"]) { try polygonize(mask: [1, 1, 1], width: 2, height: 2) }
    }

    func testRasterizeAllTouched() throws {
        // A thin diagonal triangle misses most pixel centres but touches many pixels.
        let sliver = Geometry.polygon(rings: [[Coordinate(x: 0, y: 0), Coordinate(x: 4, y: 4), Coordinate(x: 0, y: 0.2)]])
        let centres = try rasterize(geometries: [sliver], width: 4, height: 4)
        let touched = try rasterize(geometries: [sliver], width: 4, height: 4, allTouched: true)
        XCTAssertLessThan(centres.reduce(0) { $0 + Int($1) }, touched.reduce(0) { $0 + Int($1) })
        XCTAssertEqual(touched[0], 1)
    }
}
