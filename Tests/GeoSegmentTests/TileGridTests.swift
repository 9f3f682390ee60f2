import XCTest
@testable import GeoSegment

final class TileGridTests: XCTestCase {
    func testLastColumnAndRowAreShiftedBackToTheEdge() throws {
        let grid = try TileGrid(rasterWidth: 2500, rasterHeight: 1300)
        XCTAssertEqual(grid.columnOrigins, [0, 1024, 1476])
        XCTAssertEqual(grid.rowOrigins, [0, 276])
        XCTAssertEqual(grid.count, 6)
        XCTAssertTrue(grid.tiles.allSatisfy { $0.width == 1024 && $0.height == 1024 })
    }

    func testExactAndOnePixelOverSizes() throws {
        XCTAssertEqual(try TileGrid(rasterWidth: 1024, rasterHeight: 1024).columnOrigins, [0])
        XCTAssertEqual(try TileGrid(rasterWidth: 1025, rasterHeight: 1024).columnOrigins, [0, 1])
        XCTAssertEqual(try TileGrid(rasterWidth: 2048, rasterHeight: 1024).columnOrigins, [0, 1024])
    }

    func testSmallDimensionsGiveOnePaddedWindow() throws {
        let grid = try TileGrid(rasterWidth: 600, rasterHeight: 3000)
        XCTAssertEqual(grid.columnOrigins, [0])
        XCTAssertEqual(grid.rowOrigins, [0, 1024, 1976])
        XCTAssertTrue(grid.tiles.allSatisfy { $0.width == 600 && $0.height == 1024 })
    }

    func testOverlapShortensTheStride() throws {
        let grid = try TileGrid(rasterWidth: 2500, rasterHeight: 900, overlap: 100)
        XCTAssertEqual(grid.columnOrigins, [0, 924, 1476])
        XCTAssertThrowsError(try TileGrid(rasterWidth: 100, rasterHeight: 100, overlap: 1024))
        XCTAssertThrowsError(try TileGrid(rasterWidth: 0, rasterHeight: 100))
    }

    func testTilesCoverEveryPixel() throws {
        for (w, h, overlap) in [(3333, 1100, 0), (5000, 2049, 256), (1023, 777, 0)] {
            let grid = try TileGrid(rasterWidth: w, rasterHeight: h, overlap: overlap)
            var covered = [Bool](repeating: false, count: w)
            for x in grid.columnOrigins { for i in x..<min(w, x + 1024) { covered[i] = true } }
            XCTAssertTrue(covered.allSatisfy { $0 }, "\(w) columns not covered")
            XCTAssertEqual(grid.columnOrigins.last.map { $0 + min(1024, w) }, w, "last tile must end at the edge")
        }
    }

    func testShardsPartitionTheTiles() throws {
        let grid = try TileGrid(rasterWidth: 5000, rasterHeight: 3000)
        var seen: [String] = []
        for k in 0..<4 { seen += grid.tiles(shard: k, of: 4).map(\.id) }
        XCTAssertEqual(seen.sorted(), grid.tiles.map(\.id).sorted())
        XCTAssertEqual(Set(seen).count, seen.count)
    }
}
