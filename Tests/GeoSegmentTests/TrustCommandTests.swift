import Foundation
import GeoIO
import XCTest
@testable import GeoSegment

/// The trust guarantees as a user meets them on the command line: a corrupt tile is named and
/// refused, `verify --repair` mends it, the store remembers its checkpoint, and a box drawn in
/// another CRS keeps its size.
final class TrustCommandTests: XCTestCase {
    func makeStore(in dir: URL, width: Int = 1500, height: Int = 900) throws -> (raster: String, store: String) {
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: width, height: height) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let store = dir.appendingPathComponent("r.geosam2").path
        let encoded = try TestSupport.run(["encode", raster, "--out", store, "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(encoded.status, 0, encoded.stderr)
        return (raster, store)
    }

    /// A GeoJSON of one click at pixel (column, row) of the test raster, in the store's CRS.
    func clickFile(in dir: URL, column: Double, row: Double) throws -> String {
        let path = dir.appendingPathComponent("click.geojson").path
        let x = 500_000 + (column + 0.5) * 2, y = 5_000_000 - (row + 0.5) * 2
        try Data("""
            {"type":"FeatureCollection","crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::32633"}},
             "features":[{"type":"Feature","properties":{"label":1},"geometry":{"type":"Point","coordinates":[\(x),\(y)]}}]}
            """.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func testACorruptTileIsNamedRefusedAndRepaired() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, store) = try makeStore(in: dir)
        let tileFile = URL(fileURLWithPath: store).appendingPathComponent("tiles/r0000_c0000.safetensors")
        let original = try Data(contentsOf: tileFile)
        var damaged = original
        damaged[damaged.count - 100] ^= 0x01  // one bit of the raw low-byte plane's data
        try damaged.write(to: tileFile)

        let verified = try TestSupport.run(["verify", store])
        XCTAssertEqual(verified.status, 1)
        XCTAssertTrue(verified.stdout.contains("1 bad"), verified.stdout)
        XCTAssertTrue(verified.stdout.contains("bad tile r0000_c0000: CRC-32C"), verified.stdout)

        let prompts = try clickFile(in: dir, column: 300, row: 300)
        let out = dir.appendingPathComponent("o.gpkg").path
        let segmented = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out])
        XCTAssertEqual(segmented.status, 1)
        let lines = segmented.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, segmented.stderr)
        XCTAssertTrue(segmented.stderr.contains("tile r0000_c0000 is corrupt"), segmented.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "nothing is written from a corrupt tile")

        // The store remembers its checkpoint and architecture: no --model, no --config.
        let repaired = try TestSupport.run(["verify", "--repair", "--quiet", store])
        XCTAssertEqual(repaired.status, 0, repaired.stdout + repaired.stderr)
        XCTAssertEqual(try Data(contentsOf: tileFile), original, "the tile is written again as it first was")
        XCTAssertEqual(try TestSupport.run(["verify", store]).status, 0)
        let again = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out])
        XCTAssertEqual(again.status, 0, again.stderr)
    }

    func testTheStoreRemembersItsCheckpointWhileItIsUnchanged() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A private copy of the checkpoint, to move and change.
        let checkpoint = dir.appendingPathComponent("custom.pt")
        try FileManager.default.copyItem(at: TestSupport.microModelDirectory.appendingPathComponent("model.pt"), to: checkpoint)
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 700, height: 600) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let store = dir.appendingPathComponent("r.geosam2").path
        let config = TestSupport.microModelDirectory.appendingPathComponent("config.json").path
        XCTAssertEqual(try TestSupport.run(["encode", raster, "--out", store, "--quiet", "--model", checkpoint.path, "--config", config]).status, 0)
        let manifest = try FeatureStore.open(URL(fileURLWithPath: store)).manifest
        XCTAssertEqual(manifest.model.checkpointPath, checkpoint.standardizedFileURL.path)

        let prompts = try clickFile(in: dir, column: 300, row: 300)
        let out = dir.appendingPathComponent("o.gpkg").path
        let first = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out, "--quiet"])
        XCTAssertEqual(first.status, 0, first.stderr)

        // Moved: a clear one-line error naming the file.
        let moved = dir.appendingPathComponent("elsewhere.pt")
        try FileManager.default.moveItem(at: checkpoint, to: moved)
        let missing = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("\(checkpoint.path), which no longer exists"), missing.stderr)
        XCTAssertTrue(missing.stderr.contains("--model"), missing.stderr)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)

        // Back in place but changed (one byte appended): refused, and the SHA-256 says why.
        try FileManager.default.copyItem(at: moved, to: checkpoint)
        let handle = try FileHandle(forWritingTo: checkpoint)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data([0]))
        try handle.close()
        let changed = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out])
        XCTAssertNotEqual(changed.status, 0)
        XCTAssertTrue(changed.stderr.contains("which has changed since"), changed.stderr)

        // Given explicitly, the moved file works.
        let explicit = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out, "--quiet", "--model", moved.path, "--config", config])
        XCTAssertEqual(explicit.status, 0, explicit.stderr)
    }

    func testAPolygonInAnotherCRSIsReprojectedBeforeItsEnvelope() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // A box drawn in the store's CRS (UTM 33N), stored as a polygon in WGS 84: in degrees it
        // is a slanted quadrilateral whose own envelope is larger than the box.
        let utm = try SpatialReference(epsg: 32633), wgs84 = try SpatialReference(epsg: 4326)
        let toWGS84 = try CoordinateTransformation(from: utm, to: wgs84)
        // 200 km east of the zone's central meridian, where grid north and true north part by about 2°.
        let box = Envelope(minX: 700_200, minY: 4_998_800, maxX: 700_900, maxY: 4_999_500)
        let corners = try [(box.minX, box.minY), (box.maxX, box.minY), (box.maxX, box.maxY), (box.minX, box.maxY)]
            .map { try toWGS84.transform(x: $0.0, y: $0.1) }
        let path = dir.appendingPathComponent("box.geojson").path
        let ring = (corners + [corners[0]]).map { "[\($0.x),\($0.y)]" }.joined(separator: ",")
        try Data("""
            {"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"Polygon","coordinates":[[\(ring)]]}}]}
            """.utf8).write(to: URL(fileURLWithPath: path))

        let objects = try PromptReader.read(path, target: utm)
        let read = try XCTUnwrap(objects.first?.prompt.box)
        XCTAssertNil(objects.first?.prompt.crs, "already in the store's CRS")
        for (got, want) in [(read.minX, box.minX), (read.minY, box.minY), (read.maxX, box.maxX), (read.maxY, box.maxY)] {
            XCTAssertEqual(got, want, accuracy: 1e-3, "the box SAM2 gets is the one drawn")
        }
        // What the envelope-first order gave: a larger box.
        let untransformed = try XCTUnwrap(try PromptReader.read(path).first?.prompt)
        let segmenterBox = try XCTUnwrap(untransformed.box)
        let grown = try [(segmenterBox.minX, segmenterBox.minY), (segmenterBox.maxX, segmenterBox.minY),
                         (segmenterBox.minX, segmenterBox.maxY), (segmenterBox.maxX, segmenterBox.maxY)]
            .map { try CoordinateTransformation(from: wgs84, to: utm).transform(x: $0.0, y: $0.1) }
        let grownWidth = (grown.map(\.x).max() ?? 0) - (grown.map(\.x).min() ?? 0)
        XCTAssertGreaterThan(grownWidth, box.maxX - box.minX + 5, "the test would not tell the two orders apart")
    }
}
