import Foundation
import GeoIO
import GeoSAM2Server
import GeoSegment
import Hummingbird
import HummingbirdTesting
import XCTest

/// Every endpoint and every error path, through Hummingbird's in-process router client and again
/// over a real loopback socket.
final class APITests: XCTestCase {
    func testEndpointsThroughTheRouter() async throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        try await fixture.app(output: output).test(.router) { client in
            try await Self.exercise(client, fixture: fixture, output: output)
        }
    }

    func testEndpointsOverALoopbackSocket() async throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        try await fixture.app(output: output).test(.live) { client in
            XCTAssertNotNil(client.port)
            try await Self.exercise(client, fixture: fixture, output: output)
        }
    }

    /// The whole API, in the order a session uses it.
    static func exercise(_ client: any TestClientProtocol, fixture: ServerFixture, output: String) async throws {
        try await store(client)
        try await ui(client)
        try await mapTiles(client)
        try await segment(client)
        try await segmentErrors(client)
        try await objects(client, output: output)
        try await exports(client)
        try await generate(client)
        try await pathTricks(client)
    }

    // MARK: Store, UI, map

    static func store(_ client: any TestClientProtocol) async throws {
        let response = try await client.call(.get, "/api/store")
        XCTAssertEqual(response.status, .ok)
        let store = try response.json()
        XCTAssertEqual(store["epsg"] as? Int, 32633)
        XCTAssertTrue((store["crs"] as? String)?.contains("UTM zone 33N") ?? false)
        XCTAssertEqual(store["bounds"] as? [Double], [410_000, 5_809_100, 411_800, 5_810_000])
        XCTAssertEqual(store["tiles"] as? Int, 2)
        XCTAssertEqual(store["tiles_done"] as? Int, 2)
        XCTAssertEqual(store["complete"] as? Bool, true)
        XCTAssertEqual(store["units"] as? String, "metre")
        let map = try XCTUnwrap(store["map"] as? [String: Any])
        XCTAssertEqual(map["native_zoom"] as? Int, 3)
        XCTAssertEqual(map["tile_size"] as? Int, 256)
        XCTAssertEqual(map["geotransform"] as? [Double], [410_000, 1, 0, 5_810_000, 0, -1])
        XCTAssertNotNil(map["inverse"] as? [Double])

        let health = try await client.call(.get, "/health")
        XCTAssertEqual(try health.json()["status"] as? String, "ok")

        let grid = try await client.call(.get, "/api/tiles")
        XCTAssertEqual(grid.status, .ok)
        XCTAssertEqual(grid.headers[.contentType], "application/geo+json")
        let features = try XCTUnwrap(try grid.json()["features"] as? [[String: Any]])
        XCTAssertEqual(features.count, 3, "two level-0 tiles and the level-1 tile over both")
        let first = try XCTUnwrap(features.first?["properties"] as? [String: Any])
        XCTAssertEqual(first["id"] as? String, "r0000_c0000")
        XCTAssertEqual(first["level"] as? Int, 0)
        let last = try XCTUnwrap(features.last?["properties"] as? [String: Any])
        XCTAssertEqual(last["id"] as? String, "l1_r0000_c0000")
        XCTAssertEqual(last["level"] as? Int, 1)
        XCTAssertEqual(first["state"] as? String, "done")
        let ring = try XCTUnwrap(((features.first?["geometry"] as? [String: Any])?["coordinates"] as? [[[Double]]])?.first)
        XCTAssertEqual(ring.first, [410_000, 5_810_000])
        XCTAssertTrue(ring.contains([411_024, 5_809_100]))

        let wrongMethod = try await client.call(.put, "/api/store")
        assertError(wrongMethod, .methodNotAllowed, contains: "use GET")
        XCTAssertEqual(wrongMethod.headers[.allow], "GET")
        let head = try await client.call(.head, "/api/store")
        XCTAssertEqual(head.status, .ok)
    }

    static func ui(_ client: any TestClientProtocol) async throws {
        let page = try await client.call(.get, "/")
        XCTAssertEqual(page.status, .ok)
        XCTAssertTrue(page.headers[.contentType]?.hasPrefix("text/html") ?? false)
        XCTAssertTrue(page.text.contains("<title>GeoSAM2</title>"))
        XCTAssertTrue(page.text.contains("/vendor/leaflet/leaflet.js"))
        XCTAssertNotNil(page.headers[.contentSecurityPolicy])
        XCTAssertEqual(page.headers[.xContentTypeOptions], "nosniff")
        for (path, type) in [("/app.js", "javascript"), ("/app.css", "text/css")] {
            let file = try await client.call(.get, path)
            XCTAssertEqual(file.status, .ok, path)
            XCTAssertTrue(file.headers[.contentType]?.contains(type) ?? false, "\(path): \(file.headers[.contentType] ?? "-")")
        }
        let leaflet = try await client.call(.get, "/vendor/leaflet/leaflet.js")
        if FileManager.default.fileExists(atPath: "/usr/share/javascript/leaflet/leaflet.js") {
            XCTAssertEqual(leaflet.status, .ok)
            XCTAssertTrue(leaflet.text.contains("Leaflet"))
            let css = try await client.call(.get, "/vendor/leaflet/leaflet.css")
            XCTAssertEqual(css.status, .ok)
        } else {
            assertError(leaflet, .notFound)
        }
        assertError(try await client.call(.get, "/nothing-here.html"), .notFound, contains: "not found")
        assertError(try await client.call(.get, "/api/nope"), .notFound)
    }

    static func mapTiles(_ client: any TestClientProtocol) async throws {
        // Zoom 0: the whole 1800 × 900 raster in one tile, 225 × 113 pixels of it.
        let overview = try await client.call(.get, "/tiles/0/0/0.png")
        XCTAssertEqual(overview.status, .ok)
        XCTAssertEqual(overview.headers[.contentType], "image/png")
        let (alpha, size) = try pngAlpha(overview.data)
        XCTAssertEqual(size.width, 256)
        XCTAssertEqual(size.height, 256)
        XCTAssertEqual(alpha(10, 10), 255, "raster pixels are opaque")
        XCTAssertEqual(alpha(200, 100), 255)
        XCTAssertEqual(alpha(250, 20), 0, "outside the raster is transparent")
        XCTAssertEqual(alpha(20, 250), 0)
        // Native zoom 3: 8 × 4 tiles; the last column holds the raster's last 8 pixels.
        let corner = try await client.call(.get, "/tiles/3/7/3.png")
        XCTAssertEqual(corner.status, .ok)
        let (cornerAlpha, _) = try pngAlpha(corner.data)
        XCTAssertEqual(cornerAlpha(3, 3), 255)
        XCTAssertEqual(cornerAlpha(10, 3), 0)

        assertError(try await client.call(.get, "/tiles/3/8/0.png"), .notFound, contains: "8×4 tiles")
        assertError(try await client.call(.get, "/tiles/3/0/4.png"), .notFound)
        assertError(try await client.call(.get, "/tiles/4/0/0.png"), .notFound, contains: "zoom levels are 0–3")
        assertError(try await client.call(.get, "/tiles/-1/0/0.png"), .notFound)
        assertError(try await client.call(.get, "/tiles/a/0/0.png"), .badRequest, contains: "integer")
        assertError(try await client.call(.get, "/tiles/0/0/99999999999999.png"), .badRequest)
        assertError(try await client.call(.get, "/tiles/0/0/0.jpg"), .notFound)
    }

    /// Decodes a PNG with GDAL: its alpha channel as a lookup and its size.
    static func pngAlpha(_ png: Data) throws -> ((Int, Int) -> UInt8, (width: Int, height: Int)) {
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tile-\(UUID().uuidString).png")
        try png.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let dataset = try RasterDataset.open(file.path)
        XCTAssertEqual(dataset.bandCount, 4)
        let alpha = try dataset.band(4).read(as: UInt8.self)
        let width = dataset.width
        return ({ x, y in alpha[y * width + x] }, (dataset.width, dataset.height))
    }

    // MARK: Segmenting

    static func segment(_ client: any TestClientProtocol) async throws {
        let (x, y) = ServerFixture.inside
        let response = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1)]))
        XCTAssertEqual(response.status, .ok, response.text)
        XCTAssertEqual(response.headers[.contentType], "application/geo+json")
        let collection = try response.json()
        XCTAssertEqual(collection["type"] as? String, "FeatureCollection")
        XCTAssertEqual(((collection["crs"] as? [String: Any])?["properties"] as? [String: Any])?["name"] as? String, "urn:ogc:def:crs:EPSG::32633")
        XCTAssertEqual(collection["tile"] as? String, "r0000_c0000")
        XCTAssertEqual((collection["candidate_scores"] as? [Double])?.count, 1)
        XCTAssertNotNil(collection["decode_ms"] as? Double)
        XCTAssertNotNil(collection["server_ms"] as? Double)
        let features = try XCTUnwrap(collection["features"] as? [[String: Any]])
        XCTAssertFalse(features.isEmpty, "the micro model's mask is not empty at this point")
        let properties = try XCTUnwrap(features.first?["properties"] as? [String: Any])
        XCTAssertEqual(Set(properties.keys), Set(VectorExporter.fields.map(\.name)), "the segment command's attributes")
        XCTAssertTrue(properties["object_id"] is NSNull, "a preview is not an object yet")
        XCTAssertEqual(properties["n_fg"] as? Int, 1)
        XCTAssertEqual(properties["n_bg"] as? Int, 0)
        XCTAssertEqual(properties["has_box"] as? Int, 0)
        XCTAssertEqual(properties["tile"] as? String, "r0000_c0000")
        XCTAssertGreaterThan(properties["area"] as? Double ?? 0, 0)
        XCTAssertEqual(properties["area_m2"] as? Double, properties["area"] as? Double, "1 m pixels in metres")
        let geometry = try XCTUnwrap(features.first?["geometry"] as? [String: Any])
        XCTAssertEqual(geometry["type"] as? String, "Polygon")
        let ring = try XCTUnwrap((geometry["coordinates"] as? [[[Double]]])?.first)
        for point in ring {
            XCTAssertTrue((410_000...411_800).contains(point[0]) && (5_809_100...5_810_000).contains(point[1]), "\(point) is in the store CRS")
        }
        // Largest first, as the segment command writes them.
        let areas = features.compactMap { ($0["properties"] as? [String: Any])?["area"] as? Double }
        XCTAssertEqual(areas, areas.sorted(by: >))

        // Polygon options.
        let largest = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true"))
        XCTAssertEqual((try largest.json()["features"] as? [[String: Any]])?.count, 1)
        let filtered = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1)], extra: "\"min_area\": 1e9"))
        XCTAssertEqual((try filtered.json()["features"] as? [[String: Any]])?.count, 0)

        // Multimask with a chosen candidate.
        let multi = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1), (x + 40, y, 0)], extra: "\"multimask\": true, \"candidate\": 2"))
        XCTAssertEqual(multi.status, .ok, multi.text)
        let multiJSON = try multi.json()
        XCTAssertEqual(multiJSON["candidate"] as? Int, 2)
        XCTAssertEqual((multiJSON["candidate_scores"] as? [Double])?.count, 3)
        XCTAssertEqual(((multiJSON["features"] as? [[String: Any]])?.first?["properties"] as? [String: Any])?["n_bg"] as? Int, 1)

        // A box, and a box with a point.
        let box = try await client.call(.post, "/api/segment", json: promptJSON(points: [], box: [x - 100, y - 80, x + 100, y + 80]))
        XCTAssertEqual(box.status, .ok, box.text)
        XCTAssertEqual(((try box.json()["features"] as? [[String: Any]])?.first?["properties"] as? [String: Any])?["has_box"] as? Int, 1)
        let both = try await client.call(.post, "/api/segment", json: promptJSON(points: [(x, y, 1)], box: [x - 100, y - 80, x + 100, y + 80]))
        XCTAssertEqual(both.status, .ok, both.text)

        // The same click in WGS 84 gives the same mask.
        let transform = try CoordinateTransformation(from: try SpatialReference(epsg: 32633), to: try SpatialReference("EPSG:4326"))
        let lonLat = try transform.transform(x: x, y: y)
        let traditional = abs(lonLat.x) > 40  // GDAL's EPSG:4326 axis order is latitude first
        let (lon, lat) = traditional ? (lonLat.y, lonLat.x) : (lonLat.x, lonLat.y)
        let wgs84 = try await client.call(.post, "/api/segment", json: "{\"points\": [[\(lon), \(lat), 1]], \"crs\": \"OGC:CRS84\"}")
        XCTAssertEqual(wgs84.status, .ok, wgs84.text)
        XCTAssertEqual((try wgs84.json()["features"] as? [[String: Any]])?.count, features.count)
    }

    static func segmentErrors(_ client: any TestClientProtocol) async throws {
        let (x, y) = ServerFixture.inside
        let bad: [(String, String)] = [
            (#"{"points": [[1, 2, 1]"#, "not valid JSON"),
            ("", "not valid JSON"),
            ("[1, 2, 3]", "JSON object"),
            ("{}", "no prompt"),
            (#"{"points": []}"#, "no prompt"),
            (#"{"points": [[1, 2]]}"#, "points[0]"),
            (#"{"points": [["a", 2, 1]]}"#, "points[0]"),
            (#"{"points": [[1, 2, 2]]}"#, "label"),
            (#"{"points": [[1, 2, 0.5]]}"#, "label"),
            (#"{"points": "here"}"#, "points"),
            (#"{"points": [{"x": 1, "y": 2}]}"#, "points[0]"),
            (#"{"box": [3, 4, 1, 2]}"#, "minx ≤ maxx"),
            (#"{"box": [1, 2, 3]}"#, "box"),
            (#"{"box": "1,2,3,4"}"#, "box"),
            ("{\"point\": [[\(x), \(y), 1]]}", "unknown key \"point\""),
            ("{\"points\": [[\(x), \(y), 1]], \"candidate\": 1}", "multimask"),
            ("{\"points\": [[\(x), \(y), 1]], \"multimask\": true, \"candidate\": 3}", "candidate"),
            ("{\"points\": [[\(x), \(y), 1]], \"multimask\": \"yes\"}", "multimask"),
            ("{\"points\": [[\(x), \(y), 1]], \"min_area\": -1}", "min_area"),
            ("{\"points\": [[\(x), \(y), 1]], \"simplify\": \"a\"}", "simplify"),
            ("{\"points\": [[\(x), \(y), 1]], \"crs\": 4326}", "crs"),
            ("{\"points\": [[\(x), \(y), 1]], \"crs\": \"\"}", "crs"),
            ("{\"points\": [\(Array(repeating: "[\(x), \(y), 1]", count: 201).joined(separator: ","))]}", "at most 200 points"),
        ]
        for (body, fragment) in bad {
            assertError(try await client.call(.post, "/api/segment", json: body), .badRequest, contains: fragment)
        }
        // Well-formed, but the data cannot answer.
        let refused: [(String, String)] = [
            (promptJSON(points: [(0, 0, 1)]), "outside the raster"),
            (promptJSON(points: [(x, 5_900_000, 1)]), "outside the raster"),
            (promptJSON(points: [], box: [x, y, 420_000, y + 10]), "outside the raster"),
            ("{\"points\": [[\(x), \(y), 1]], \"crs\": \"EPSG:999999\"}", "EPSG:999999"),
            ("{\"points\": [[\(x), \(y), 1]], \"crs\": \"not a crs\"}", "not a crs"),
        ]
        for (body, fragment) in refused {
            assertError(try await client.call(.post, "/api/segment", json: body), .unprocessableContent, contains: fragment)
        }
        // Prompts no level-0 tile holds together are answered on the pyramid level that does.
        let apart = try await client.call(.post, "/api/segment", json: promptJSON(points: [(410_100, y, 1), (411_700, y, 1)]))
        XCTAssertEqual(apart.status, .ok)
        XCTAssertEqual(try apart.json()["level"] as? Int, 1)
        XCTAssertEqual(try apart.json()["tile"] as? String, "l1_r0000_c0000")
        // Oversized bodies are refused before they are read whole.
        let huge = "{\"points\": [[\(x), \(y), 1]], \"crs\": \"" + String(repeating: "x", count: 1 << 20) + "\"}"
        assertError(try await client.call(.post, "/api/segment", json: huge), .contentTooLarge, contains: "larger than")
        assertError(try await client.call(.get, "/api/segment"), .methodNotAllowed)
    }

    // MARK: Objects

    static func objects(_ client: any TestClientProtocol, output: String) async throws {
        let (x, y) = ServerFixture.inside
        let empty = try await client.call(.get, "/api/objects")
        XCTAssertEqual(empty.status, .ok)
        XCTAssertEqual(try empty.json()["objects"] as? Int, 0)
        XCTAssertEqual((try empty.json()["features"] as? [Any])?.count, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output), "nothing written before the first save")

        let first = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x, y, 1)]))
        XCTAssertEqual(first.status, .created, first.text)
        let firstJSON = try first.json()
        XCTAssertEqual(firstJSON["object_id"] as? Int, 1)
        let firstFeatures = try XCTUnwrap(firstJSON["features"] as? [[String: Any]])
        XCTAssertFalse(firstFeatures.isEmpty)
        XCTAssertEqual((firstFeatures.first?["properties"] as? [String: Any])?["object_id"] as? Int, 1)
        // Written at once: the file holds the object.
        let saved = try VectorExporter.read(output)
        XCTAssertEqual(saved.count, firstFeatures.count)
        XCTAssertEqual(Set(saved.compactMap { $0.attributes["object_id"]?.intValue }), [1])

        let second = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x + 300, y - 100, 1)], extra: "\"largest_only\": true"))
        XCTAssertEqual(second.status, .created, second.text)
        XCTAssertEqual(try second.json()["object_id"] as? Int, 2)

        let all = try await client.call(.get, "/api/objects")
        let allJSON = try all.json()
        XCTAssertEqual(allJSON["objects"] as? Int, 2)
        XCTAssertEqual(allJSON["next_object_id"] as? Int, 3)
        XCTAssertEqual((allJSON["features"] as? [Any])?.count, firstFeatures.count + 1)

        let one = try await client.call(.get, "/api/objects/2")
        XCTAssertEqual(one.status, .ok)
        XCTAssertEqual((try one.json()["features"] as? [Any])?.count, 1)

        // Nothing is saved when the request or the mask is wrong.
        assertError(try await client.call(.post, "/api/objects", json: "{"), .badRequest)
        assertError(try await client.call(.post, "/api/objects", json: promptJSON(points: [(0, 0, 1)])), .unprocessableContent, contains: "outside")
        assertError(try await client.call(.post, "/api/objects", json: promptJSON(points: [(x, y, 1)], extra: "\"min_area\": 1e9")),
                    .unprocessableContent, contains: "empty")
        XCTAssertEqual(Set(try VectorExporter.read(output).compactMap { $0.attributes["object_id"]?.intValue }), [1, 2])

        assertError(try await client.call(.get, "/api/objects/99"), .notFound, contains: "no object 99")
        assertError(try await client.call(.get, "/api/objects/abc"), .badRequest, contains: "positive integer")
        assertError(try await client.call(.get, "/api/objects/0"), .badRequest)
        assertError(try await client.call(.get, "/api/objects/-2"), .badRequest)
        assertError(try await client.call(.delete, "/api/objects/99"), .notFound)
        assertError(try await client.call(.delete, "/api/objects/1.5"), .badRequest)
        assertError(try await client.call(.put, "/api/objects"), .methodNotAllowed)

        // Delete by id, then undo the last: each removes the object from the file.
        let deleted = try await client.call(.delete, "/api/objects/1")
        XCTAssertEqual(deleted.status, .ok)
        XCTAssertEqual(try deleted.json()["deleted"] as? Int, 1)
        XCTAssertEqual(Set(try VectorExporter.read(output).compactMap { $0.attributes["object_id"]?.intValue }), [2])
        let undone = try await client.call(.delete, "/api/objects/last")
        XCTAssertEqual(try undone.json()["deleted"] as? Int, 2)
        XCTAssertEqual(try VectorExporter.read(output).count, 0)
        assertError(try await client.call(.delete, "/api/objects/last"), .notFound, contains: "no saved object")
        let none = try await client.call(.get, "/api/objects")
        XCTAssertEqual(try none.json()["objects"] as? Int, 0)
    }

    static func exports(_ client: any TestClientProtocol) async throws {
        // Before anything is saved: a valid, empty GeoPackage.
        let (x, y) = ServerFixture.inside
        let emptyExport = try await client.call(.get, "/api/export.gpkg")
        XCTAssertEqual(emptyExport.status, .ok)
        XCTAssertEqual(try features(inGeoPackage: emptyExport.data).count, 0)

        let saved = try await client.call(.post, "/api/objects", json: promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true"))
        XCTAssertEqual(saved.status, .created, saved.text)
        let id = try XCTUnwrap(try saved.json()["object_id"] as? Int)

        let gpkg = try await client.call(.get, "/api/export.gpkg")
        XCTAssertEqual(gpkg.status, .ok)
        XCTAssertEqual(gpkg.headers[.contentType], "application/geopackage+sqlite3")
        XCTAssertTrue(gpkg.headers[.contentDisposition]?.hasPrefix("attachment; filename=") ?? false)
        XCTAssertEqual(Array(gpkg.data.prefix(16)), Array("SQLite format 3\0".utf8))
        let exported = try features(inGeoPackage: gpkg.data)
        XCTAssertEqual(exported.map { $0.attributes["object_id"]?.intValue }, [id])
        XCTAssertEqual(exported.first?.attributes["n_fg"]?.intValue, 1)

        let geojson = try await client.call(.get, "/api/export.geojson")
        XCTAssertEqual(geojson.status, .ok)
        XCTAssertEqual(geojson.headers[.contentType], "application/geo+json")
        let collection = try geojson.json()
        let feature = try XCTUnwrap((collection["features"] as? [[String: Any]])?.first)
        XCTAssertEqual((feature["properties"] as? [String: Any])?["object_id"] as? Int, id)
        let ring = try XCTUnwrap(((feature["geometry"] as? [String: Any])?["coordinates"] as? [[[Double]]])?.first)
        // RFC 7946: WGS 84 longitude, latitude (the scene is in Brandenburg).
        XCTAssertTrue(ring.allSatisfy { (13...14.5).contains($0[0]) && (52...53).contains($0[1]) }, "\(ring.prefix(2))")
        let undone = try await client.call(.delete, "/api/objects/last")
        XCTAssertEqual(undone.status, .ok)
    }

    // MARK: Segment everything

    /// A job over the store's box: bad bodies are 400s, a box off the raster 422, then the job
    /// runs to done, lists its objects and saves them all as new objects.
    static func generate(_ client: any TestClientProtocol) async throws {
        for (body, fragment) in [
            ("{}", "bbox"), (#"{"bbox": [1, 2, 3]}"#, "bbox"), (#"{"bbox": [3, 2, 1, 4]}"#, "minx ≤ maxx"),
            (#"{"bbox": [0, 0, 0, 0]}"#, "area"), (#"{"bbox": [0, 0, 1, 1], "points_per_side": 0}"#, "points_per_side"),
            (#"{"bbox": [0, 0, 1, 1], "points_per_side": 2.5}"#, "points_per_side"),
            (#"{"bbox": [0, 0, 1, 1], "box_nms_thresh": 2}"#, "NMS"), (#"{"bbox": [0, 0, 1, 1], "use_m2m": 1}"#, "use_m2m"),
            (#"{"bbox": [0, 0, 1, 1], "crop_n_layers": 1}"#, "unknown key"), ("[]", "JSON object"),
        ] {
            assertError(try await client.call(.post, "/api/generate", json: body), .badRequest, contains: fragment)
        }
        assertError(try await client.call(.post, "/api/generate", json: #"{"bbox": [0, 0, 10, 10]}"#), .unprocessableContent,
                    contains: "no tile")
        assertError(try await client.call(.get, "/api/generate/999"), .notFound)
        assertError(try await client.call(.get, "/api/generate/abc"), .badRequest)
        let body = #"{"bbox": [410000, 5809100, 411800, 5810000], "points_per_side": 3, "pred_iou_thresh": 0, "stability_score_thresh": 0, "min_area": 5}"#
        let started = try await client.call(.post, "/api/generate", json: body)
        XCTAssertEqual(started.status, .accepted, started.text)
        let id = try XCTUnwrap(try started.json()["id"] as? Int)
        XCTAssertEqual(try started.json()["total"] as? Int, 3, "the two tiles of level 0 and the one of level 1")
        // One job at a time.
        let second = try await client.call(.post, "/api/generate", json: body)
        if second.status != .accepted { assertError(second, .conflict, contains: "running") }
        var report: [String: Any] = [:]
        for _ in 0..<600 {
            report = try await client.call(.get, "/api/generate/\(id)").json()
            if report["status"] as? String != "running" { break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        XCTAssertEqual(report["status"] as? String, "done", "\(report)")
        let count = try XCTUnwrap(report["objects"] as? Int)
        XCTAssertGreaterThan(count, 0)
        let listed = try await client.call(.get, "/api/generate/\(id)/objects")
        XCTAssertEqual(listed.status, .ok)
        let collection = try listed.json()
        let features = try XCTUnwrap(collection["features"] as? [[String: Any]])
        let properties = features.compactMap { $0["properties"] as? [String: Any] }
        XCTAssertEqual(Set(properties.compactMap { $0["generated_id"] as? Int }), Set(1...count))
        XCTAssertTrue(properties.allSatisfy { $0["stability"] is Double && $0["level"] is Int })
        assertError(try await client.call(.post, "/api/generate/\(id)/save", json: #"{"ids": [0]}"#), .badRequest, contains: "ids")
        let before = try await client.call(.get, "/api/objects").json()["objects"] as? Int ?? 0
        let saved = try await client.call(.post, "/api/generate/\(id)/save", json: #"{"ids": [1]}"#)
        XCTAssertEqual(saved.status, .created, saved.text)
        let rest = try await client.call(.post, "/api/generate/\(id)/save", json: "{}")
        let savedCount = ((try saved.json()["saved"] as? [Any])?.count ?? 0) + ((try rest.json()["saved"] as? [Any])?.count ?? 0)
        XCTAssertEqual(savedCount, count, "each found object saved once")
        let after = try await client.call(.get, "/api/objects").json()["objects"] as? Int ?? 0
        XCTAssertEqual(after, before + count)
        // Saving again saves nothing more; forgetting the job makes it a 404.
        let again = try await client.call(.post, "/api/generate/\(id)/save", json: "{}")
        XCTAssertEqual((try again.json()["saved"] as? [Any])?.count, 0)
        let forgotten = try await client.call(.delete, "/api/generate/\(id)")
        XCTAssertEqual(forgotten.status, .ok)
        assertError(try await client.call(.get, "/api/generate/\(id)"), .notFound)
        assertError(try await client.call(.put, "/api/generate"), .methodNotAllowed)
        // Leave the objects as the tests after this one expect them: remove what was saved.
        for _ in 0..<count { _ = try await client.call(.delete, "/api/objects/last") }
    }

    static func features(inGeoPackage data: Data) throws -> [Feature] {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("export-\(UUID().uuidString).gpkg")
        try data.write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let dataset = try VectorDataset.open(file.path)
        let layer = try dataset.layer(named: "objects")
        XCTAssertEqual(layer.spatialReference?.epsgCode, 32633)
        XCTAssertTrue(Set(layer.fields.map(\.name)).isSuperset(of: VectorExporter.fields.map(\.name)))
        return try layer.features()
    }

    // MARK: Nothing else can be read

    static func pathTricks(_ client: any TestClientProtocol) async throws {
        let tricks = [
            "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd",
            "/vendor/leaflet/../../../../etc/passwd", "/vendor/leaflet/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/app.js/../../../etc/passwd", "/etc/passwd", "/manifest.json", "/tiles/r0000_c0000.safetensors",
            "/vendor/leaflet/..%2f..%2f..%2f..%2fetc%2fpasswd", "/%ZZ", "/vendor/", "/vendor/leaflet/../leaflet/leaflet.js",
        ]
        for path in tricks {
            let response = try await client.call(.get, path)
            XCTAssertTrue((400..<500).contains(response.status.code), "\(path): \(response.status)")
            XCTAssertNotNil(response.errorMessage, "\(path): \(response.text.prefix(100))")
            XCTAssertFalse(response.text.contains("root:"), path)
        }
    }
}
