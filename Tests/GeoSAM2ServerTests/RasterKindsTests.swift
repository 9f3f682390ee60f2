import Foundation
import GeoIO
import GeoSAM2Server
import GeoSegment
import Hummingbird
import HummingbirdTesting
import XCTest

/// Rasters unlike the sample: a plain image without georeferencing (pixel coordinates, y down),
/// with no overviews — the map builds display overviews into the store when the raster is large.
final class RasterKindsTests: XCTestCase {
    /// A 700 × 500 RGB GeoTIFF without geotransform, CRS or overviews, encoded with the micro model.
    func plainStore() throws -> (directory: URL, segmenter: Segmenter) {
        let directory = try ServerFixture.temporaryDirectory()
        let path = directory.appendingPathComponent("photo.tif").path
        var options = SampleScene.Options()
        options.width = 700
        options.height = 500
        let pixels = SampleScene.render(options)
        try {
            let ds = try RasterDataset.create(driver: "GTiff", path: path, width: 700, height: 500, bandCount: 3, dataType: .byte)
            let plane = 700 * 500
            for b in 0..<3 { try ds.band(b + 1).write(values: Array(pixels[(b * plane)..<((b + 1) * plane)])) }
        }()
        let model = try ServerFixture.microModel()
        let store = directory.appendingPathComponent("photo.geosam2")
        _ = try RasterEncoder.run(raster: path, store: store, model: model, options: EncodeOptions())
        return (directory, try Segmenter(store: try FeatureStore.open(store), model: model.model, checkpointSHA256: model.checkpointSHA256))
    }

    func testPlainImageInPixelCoordinates() async throws {
        let (directory, segmenter) = try plainStore()
        defer { try? FileManager.default.removeItem(at: directory) }
        var configuration = ServerConfiguration(outputPath: directory.appendingPathComponent("objects.gpkg").path)
        configuration.port = 0
        try await buildApplication(segmenter: segmenter, configuration: configuration).test(.router) { client in
            let store = try (try await client.call(.get, "/api/store")).json()
            XCTAssertTrue(store["crs"] is NSNull)
            XCTAssertTrue(store["epsg"] is NSNull)
            XCTAssertEqual(store["units"] as? String, "pixel")
            XCTAssertEqual((store["map"] as? [String: Any])?["geotransform"] as? [Double], [0, 1, 0, 0, 0, 1])
            let tile = try await client.call(.get, "/tiles/0/0/0.png")
            XCTAssertEqual(tile.status, .ok)

            // Pixel coordinates: x right, y down.
            let saved = try await client.call(.post, "/api/objects", json: promptJSON(points: [(350, 250, 1)], extra: "\"largest_only\": true"))
            XCTAssertEqual(saved.status, .created, saved.text)
            let feature = try XCTUnwrap((try saved.json()["features"] as? [[String: Any]])?.first)
            XCTAssertTrue((feature["properties"] as? [String: Any])?["area_m2"] is NSNull, "no metres without a CRS")
            let ring = try XCTUnwrap(((feature["geometry"] as? [String: Any])?["coordinates"] as? [[[Double]]])?.first)
            XCTAssertTrue(ring.allSatisfy { (0...700).contains($0[0]) && (0...500).contains($0[1]) }, "\(ring.prefix(2))")
            assertError(try await client.call(.post, "/api/segment", json: promptJSON(points: [(350, 600, 1)])), .unprocessableContent, contains: "outside")
            assertError(try await client.call(.post, "/api/segment", json: "{\"points\": [[13, 52, 1]], \"crs\": \"EPSG:4326\"}"),
                        .unprocessableContent, contains: "no CRS")

            let geojson = try (try await client.call(.get, "/api/export.geojson")).json()
            XCTAssertEqual((geojson["features"] as? [Any])?.count, 1)
            let gpkg = try await client.call(.get, "/api/export.gpkg")
            XCTAssertEqual(gpkg.status, .ok)
        }
    }

    func testLargeRasterWithoutOverviewsGetsDisplayOverviews() throws {
        let (directory, segmenter) = try plainStore()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = segmenter.store
        let plain = try MapTileRenderer(store: store, prepareOverviews: false, overviewThreshold: 256)
        XCTAssertEqual(plain.path, store.manifest.source.path, "no overviews asked for")
        let messages = Messages()
        let renderer = try MapTileRenderer(store: store, overviewThreshold: 256) { messages.append($0) }
        XCTAssertEqual(renderer.path, store.url.appendingPathComponent("display.vrt").path)
        XCTAssertTrue(FileManager.default.fileExists(atPath: renderer.path + ".ovr"))
        XCTAssertEqual(messages.count, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.url.appendingPathComponent(".display.vrt.partial.vrt").path))
        XCTAssertGreaterThan(try RasterDataset.open(renderer.path).band(1).overviewCount, 0)
        // Zoomed out and native tiles agree with the raster's own.
        for (z, x, y) in [(0, 0, 0), (2, 1, 1), (2, 2, 1)] {
            let a = try XCTUnwrap(try renderer.png(zoom: z, column: x, row: y)), b = try XCTUnwrap(try plain.png(zoom: z, column: x, row: y))
            XCTAssertEqual(a.prefix(8), b.prefix(8))
            if z == 2 { XCTAssertEqual(a, b, "native tiles read full resolution either way") }
        }
        XCTAssertNil(try renderer.png(zoom: 3, column: 0, row: 0))
        // Built once: a second renderer reuses them.
        messages.removeAll()
        _ = try MapTileRenderer(store: store, overviewThreshold: 256) { messages.append($0) }
        XCTAssertEqual(messages.count, 0)

        // The server builds them in the background: it reads the raster until they are ready.
        for name in ["display.vrt", "display.vrt.ovr"] { try FileManager.default.removeItem(at: store.url.appendingPathComponent(name)) }
        let background = try MapTileRenderer(store: store, overviewThreshold: 256, inBackground: true)
        XCTAssertNotNil(try background.png(zoom: 0, column: 0, row: 0), "tiles are served while the overviews are built")
        let deadline = Date().addingTimeInterval(60)
        while background.path != renderer.path, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertEqual(background.path, renderer.path)
        XCTAssertEqual(try background.png(zoom: 0, column: 0, row: 0), try renderer.png(zoom: 0, column: 0, row: 0))
    }
}

/// Log lines collected from another thread.
final class Messages: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    func removeAll() { lock.withLock { lines.removeAll() } }
    var count: Int { lock.withLock { lines.count } }
}
