import GeoIO
import XCTest
@testable import GeoSegment

/// The edge tracer against GDAL's polygonize (the reference) and against rasterization.
final class MaskPolygonizerTests: XCTestCase {
    func check(_ mask: [UInt8], _ w: Int, _ h: Int, _ label: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let t = GeoTransform(originX: 300_000, pixelWidth: 0.5, originY: 6_000_000, pixelHeight: -0.5)
        let ours = MaskPolygonizer.polygons(mask: mask, width: w, height: h, geoTransform: t)
        let reference = try polygonize(mask: mask, width: w, height: h, geoTransform: t)
        XCTAssertEqual(ours.count, reference.count, "\(label): polygon count", file: file, line: line)
        XCTAssertEqual(ours.map(\.area).sorted(), reference.map(\.area).sorted(), "\(label): areas", file: file, line: line)
        XCTAssertEqual(ours.map { $0.polygonRings.first?.count ?? 0 }.sorted(), reference.map { $0.polygonRings.first?.count ?? 0 }.sorted(),
                       "\(label): ring counts", file: file, line: line)
        let back = try rasterize(geometries: ours, width: w, height: h, geoTransform: t)
        XCTAssertEqual(back.map { $0 != 0 }, mask.map { $0 != 0 }, "\(label): rasterized polygons differ", file: file, line: line)
        for p in ours {
            XCTAssertTrue(p.isValid, "\(label): invalid polygon \(p.wkt.prefix(200))", file: file, line: line)
            XCTAssertGreaterThan(p.area, 0, file: file, line: line)
        }
    }

    func testShapesWithHolesSaddlesAndEdges() throws {
        // 0 = background; a ring with a hole, a diagonal pair (two components under 4-connectedness),
        // a U whose arms touch diagonally (an enclosed pocket), pixels on every border.
        let art = [
            "1.......1",
            "..111....",
            "..1.1..1.",
            "..111.1..",
            ".........",
            "1111...11",
            "1..1...1.",
            "1.1.....1",
            "11.....11",
        ]
        let mask = art.flatMap { $0.map { $0 == "1" ? UInt8(1) : 0 } }
        try check(mask, 9, 9, "art")
    }

    func testRandomMasks() throws {
        var state: UInt64 = 7
        func next() -> UInt64 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return state >> 33
        }
        for (w, h, density) in [(1, 1, 50), (7, 3, 50), (40, 31, 30), (64, 64, 55), (128, 90, 70)] {
            let mask = (0..<(w * h)).map { _ in next() % 100 < UInt64(density) ? UInt8(1) : 0 }
            try check(mask, w, h, "random \(w)×\(h) at \(density) %")
        }
    }

    func testLongRunsAndNonUnitValues() throws {
        // Runs longer than the eight-byte scan steps, starting and ending at every offset, with
        // values other than 1 (non-zero counts as 1).
        var state: UInt64 = 11
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(state >> 33)
        }
        let (w, h) = (83, 40)
        var mask = [UInt8](repeating: 0, count: w * h)
        for y in 0..<h {
            var x = next() % 9
            while x < w {
                let length = 1 + next() % 30
                for i in x..<min(w, x + length) { mask[y * w + i] = UInt8(1 + next() % 255) }
                x += length + 1 + next() % 12
            }
        }
        try check(mask, w, h, "long runs")
    }

    func testEmptyAndFullMasks() throws {
        XCTAssertTrue(MaskPolygonizer.polygons(mask: [0, 0, 0, 0], width: 2, height: 2, geoTransform: .identity).isEmpty)
        try check([UInt8](repeating: 1, count: 12), 4, 3, "full")
    }
}
