import Foundation
import GeoSAM2Server
import GeoIO
import GeoSegment
import Hummingbird
import HummingbirdTesting
import XCTest

/// Saved objects live in the GeoPackage: a new server on the same store and output sees them,
/// undoes them from the file, and numbers new ones after every id ever given (never reusing the
/// id of an undone object: the counter lives in the file).
final class PersistenceTests: XCTestCase {
    func testObjectsSurviveARestart() async throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        let (x, y) = ServerFixture.inside

        // First run: two objects.
        try await fixture.app(output: output).test(.router) { client in
            for (dx, dy) in [(0.0, 0.0), (300.0, -100.0)] {
                let saved = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x + dx, y + dy, 1)], extra: "\"largest_only\": true"))
                XCTAssertEqual(saved.status, .created, saved.text)
            }
        }

        // Second run (a new application and repository): both are loaded back; undo removes the last from the file.
        try await fixture.app(output: output).test(.live) { client in
            let objects = try (try await client.call(.get, "/api/objects")).json()
            XCTAssertEqual(objects["objects"] as? Int, 2)
            let ids = (objects["features"] as? [[String: Any]])?.compactMap { ($0["properties"] as? [String: Any])?["object_id"] as? Int }
            XCTAssertEqual(ids.map(Set.init), [1, 2])
            let undone = try await client.call(.delete, "/api/objects/last")
            XCTAssertEqual(try undone.json()["deleted"] as? Int, 2)
        }
        XCTAssertEqual(Set(try VectorExporter.read(output).compactMap { $0.attributes["object_id"]?.intValue }), [1])

        // Third run: one object left; the next save gets a new id, not the undone object's 2.
        try await fixture.app(output: output).test(.router) { client in
            let left = try await client.call(.get, "/api/objects")
            XCTAssertEqual(try left.json()["objects"] as? Int, 1)
            XCTAssertEqual(try left.json()["next_object_id"] as? Int, 3)
            let saved = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true"))
            XCTAssertEqual(try saved.json()["object_id"] as? Int, 3)
            // Undo, then save again: still a new id.
            let undone = try await client.call(.delete, "/api/objects/last")
            XCTAssertEqual(try undone.json()["deleted"] as? Int, 3)
            let next = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true"))
            XCTAssertEqual(try next.json()["object_id"] as? Int, 4)
            // The export keeps the ids and the counter.
            let gpkg = try await client.call(.get, "/api/export.gpkg")
            XCTAssertEqual(Set(try APITests.features(inGeoPackage: gpkg.data).compactMap { $0.attributes["object_id"]?.intValue }), [1, 4])
            let copy = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString).gpkg").path
            defer { try? FileManager.default.removeItem(atPath: copy) }
            try gpkg.data.write(to: URL(fileURLWithPath: copy))
            XCTAssertEqual(try VectorExporter.nextObjectID(in: copy), 5)
        }
        XCTAssertEqual(try VectorExporter.nextObjectID(in: output), 5)
        XCTAssertEqual(try VectorDataset.open(output).layerCount, 1, "the counter table is not a layer for GDAL (nor QGIS)")
        // Deleting the highest object with another tool's help (here the exporter) does not lower the counter either.
        try VectorExporter.delete(objectID: 4, from: output)
        XCTAssertEqual(try VectorExporter.nextObjectID(in: output), 5)
    }

    /// Objects saved by another tool (the segment command, here in WGS 84) are shown in the store's CRS.
    func testObjectsInAnotherCRSAreShownInTheStoreCRS() async throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        let (x, y) = ServerFixture.inside
        let result = try fixture.segmenter.segment(ObjectPrompt(points: [MapPoint(x: x, y: y, label: 1)]), options: PolygonOptions(largestOnly: true))
        let record = ObjectRecord(objectID: 7, result: result, source: "elsewhere", model: "micro")
        // A layer in WGS 84 made first, then the record appended to it (reprojected on write).
        try {
            let dataset = try VectorDataset.create(driver: "GPKG", path: output)
            try dataset.createLayer(name: "objects", srs: try SpatialReference("OGC:CRS84"), geometryType: .polygon, fields: VectorExporter.fields)
        }()
        try VectorExporter.append([record], to: output, srs: fixture.segmenter.spatialReference)
        try await fixture.app(output: output).test(.router) { client in
            let objects = try (try await client.call(.get, "/api/objects")).json()
            let ring = try XCTUnwrap((((objects["features"] as? [[String: Any]])?.first?["geometry"] as? [String: Any])?["coordinates"] as? [[[Double]]])?.first)
            XCTAssertTrue(ring.allSatisfy { (409_999.99...411_800.01).contains($0[0]) && (5_809_099.99...5_810_000.01).contains($0[1]) },
                          "\(ring.prefix(2))")
            // Within a millimetre of what the store-CRS polygon says.
            let original = try XCTUnwrap(result.polygons.first?.polygonRings.first?.first?.first)
            XCTAssertEqual(ring[0][0], original.x, accuracy: 1e-3)
            XCTAssertEqual(ring[0][1], original.y, accuracy: 1e-3)
        }
    }

    /// A tile corrupted under a running server: the request that needs it gets a one-line 422
    /// naming the tile, and the server goes on answering (other requests, the next prompt).
    func testACorruptTileIsRefusedAndTheServerStaysUp() async throws {
        let fixture = try ServerFixture.get()
        let copy = FileManager.default.temporaryDirectory.appendingPathComponent("corrupt-\(UUID().uuidString).geosam2", isDirectory: true)
        try FileManager.default.copyItem(at: fixture.storeURL, to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let store = try FeatureStore.open(copy)
        let tile = try XCTUnwrap(store.tile(id: "r0000_c0000"))
        var bytes = try Data(contentsOf: store.featuresURL(tile))
        bytes[bytes.count / 2] ^= 0x08
        try bytes.write(to: store.featuresURL(tile))
        let segmenter = try Segmenter(store: store, model: fixture.segmenter.model, checkpointSHA256: nil)
        let app = try buildApplication(segmenter: segmenter, configuration: fixture.configuration(output: fixture.newOutput()))
        try await app.test(.router) { client in
            let (x, y) = ServerFixture.inside
            for _ in 0..<2 {
                let refused = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1)]))
                XCTAssertEqual(refused.status, .unprocessableContent, refused.text)
                let message = try XCTUnwrap(try refused.json()["error"] as? String)
                XCTAssertTrue(message.hasPrefix("tile r0000_c0000 is corrupt"), message)
                XCTAssertFalse(message.contains("\n"))
            }
            let health = try await client.call(.get, "/health")
            XCTAssertEqual(health.status, .ok)
        }
    }
}
