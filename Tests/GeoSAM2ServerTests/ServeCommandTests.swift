import Foundation
import GeoIO
import GeoSAM2Server
import GeoSegment
import XCTest

/// `geosam2 serve` and `geosam2 sample` as a user runs them: a real process on a loopback port.
final class ServeCommandTests: XCTestCase {
    /// A running `geosam2 serve`, stopped with SIGINT.
    final class Server {
        let process = Process()
        let url: String
        /// The first line of `--machine-readable`, decoded.
        var announcement: [String: Any] = [:]
        private let stderr = Pipe()

        init(_ arguments: [String], timeout: TimeInterval = 180) throws {
            let stdout = Pipe()
            process.executableURL = Executable.url
            process.arguments = ["serve"] + arguments
            process.standardOutput = stdout
            process.standardError = stderr
            try process.run()
            // The URL is the first http:// word on stdout.
            let found = LineBox()
            let reader = stdout.fileHandleForReading
            let done = DispatchSemaphore(value: 0)
            DispatchQueue.global().async {
                var buffer = Data()
                while true {
                    let chunk = reader.availableData
                    if chunk.isEmpty { break }
                    buffer.append(chunk)
                    let text = String(decoding: buffer, as: UTF8.self)
                    // --machine-readable: the first line is a JSON object with the URL.
                    if text.hasPrefix("{"), text.hasSuffix("\n") {
                        found.set(text.trimmingCharacters(in: .whitespacesAndNewlines))
                        break
                    }
                    if let url = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).first(where: { $0.hasPrefix("http://") }),
                       text.hasSuffix("\n") {
                        found.set(String(url))
                        break
                    }
                }
                done.signal()
            }
            _ = done.wait(timeout: .now() + timeout)
            if let line = found.value, line.hasPrefix("{"),
               let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let announced = object["url"] as? String {
                announcement = object
                url = announced
                return
            }
            guard let line = found.value, line.hasPrefix("http://") else {
                process.interrupt()
                process.waitUntilExit()
                let message = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw GeoSegmentError("serve printed no URL: \(found.value ?? "-"); stderr: \(message)")
            }
            url = line
        }

        /// Stops the server; returns its exit status and stderr.
        func stop() -> (Int32, String) {
            if process.isRunning { process.interrupt() }
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
    }

    final class LineBox: @unchecked Sendable {
        private let lock = NSLock()
        private var line: String?
        func set(_ value: String) { lock.lock(); line = value; lock.unlock() }
        var value: String? { lock.lock(); defer { lock.unlock() }; return line }
    }

    /// `curl` (status and body), so that the Host header can be forged.
    func curl(_ arguments: [String]) throws -> (status: Int, body: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["curl", "-s", "-w", "\n%{http_code}"] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    func testServesAStoreOnLoopback() throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        let server = try Server([fixture.storeURL.path, "--port", "0", "--out", output, "--quiet"] + Executable.microArguments)
        XCTAssertTrue(server.url.hasPrefix("http://127.0.0.1:"), server.url)
        let store = try curl([server.url + "api/store"])
        XCTAssertEqual(store.status, 200)
        XCTAssertTrue(store.body.contains("\"epsg\":32633"), store.body.prefix(200).description)
        let (x, y) = ServerFixture.inside
        let saved = try curl(["-X", "POST", "-d", promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true"), server.url + "api/objects"])
        XCTAssertEqual(saved.status, 201, saved.body)
        XCTAssertEqual(try VectorExporter.read(output).count, 1)
        // A page elsewhere cannot reach the API through DNS rebinding.
        let rebound = try curl(["-H", "Host: attacker.example:8080", server.url + "api/objects"])
        XCTAssertEqual(rebound.status, 403)
        XCTAssertTrue(rebound.body.contains("localhost"), rebound.body)
        XCTAssertEqual(try curl(["-H", "Host: localhost", server.url + "health"]).status, 200)
        let (status, stderr) = server.stop()
        XCTAssertEqual(status, 0, stderr)
    }

    /// What the QGIS plugin reads: a JSON first line, then saves with a class label.
    func testMachineReadableFirstLineAndClassLabels() throws {
        let fixture = try ServerFixture.get()
        let output = fixture.newOutput()
        let server = try Server([fixture.storeURL.path, "--port", "0", "--out", output, "--machine-readable"] + Executable.microArguments)
        XCTAssertEqual(server.announcement["event"] as? String, "listening")
        XCTAssertEqual(server.announcement["geosam2"] as? String, GeoSAM2Version.current)
        XCTAssertEqual(server.announcement["output"] as? String, URL(fileURLWithPath: output).standardizedFileURL.path)
        XCTAssertEqual(server.announcement["store"] as? String, fixture.storeURL.standardizedFileURL.path)
        let port = try XCTUnwrap(server.announcement["port"] as? Int)
        XCTAssertTrue(port > 0 && server.url.hasPrefix("http://127.0.0.1:\(port)"), server.url)
        let (x, y) = ServerFixture.inside
        let saved = try curl(["-X", "POST", "-d", promptJSON(points: [(x, y, 1)], extra: "\"largest_only\": true, \"class\": \" building \""), server.url + "api/objects"])
        XCTAssertEqual(saved.status, 201, saved.body)
        XCTAssertEqual(Set(try VectorExporter.read(output).map { $0.attributes["class"]?.stringValue }), ["building"])
        let refused = try curl(["-X", "POST", "-d", promptJSON(points: [(x, y, 1)], extra: "\"class\": 3"), server.url + "api/objects"])
        XCTAssertEqual(refused.status, 400, refused.body)
        XCTAssertTrue(refused.body.contains("class must be a string"), refused.body)
        let (status, stderr) = server.stop()
        XCTAssertEqual(status, 0, stderr)
    }

    /// A `geosam2 sample` scene `small.tif` in `directory` with no store beside it, and its geotransform.
    func sampleRaster(width: Int, height: Int, in directory: URL) throws -> (path: String, transform: GeoTransform) {
        let raster = directory.appendingPathComponent("small.tif").path
        var options = SampleScene.Options()
        options.width = width
        options.height = height
        try SampleScene.write(to: raster, options: options)
        return (raster, try XCTUnwrap(try RasterDataset.open(raster).geoTransform))
    }

    func testServesARasterAtOnceAndEncodesItWhileServing() throws {
        let directory = try ServerFixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (raster, transform) = try sampleRaster(width: 2100, height: 1100, in: directory)
        func mapPoint(_ c: Double, _ r: Double) -> (Double, Double) {
            let p = transform.pixelToMap(x: c, y: r)
            return (p.x, p.y)
        }
        let server = try Server([raster, "--port", "0", "--machine-readable"] + Executable.microArguments)
        let store = directory.appendingPathComponent("small.geosam2")
        XCTAssertTrue(FeatureStore.exists(at: store), "the store is planned into STEM.geosam2 beside the raster")
        XCTAssertEqual(try FeatureStore.open(store).manifest.allTiles.count, 6 + 2 + 1)

        let encoding = try curl([server.url + "api/encoding"])
        XCTAssertEqual(encoding.status, 200, encoding.body)
        XCTAssertTrue(encoding.body.contains("\"on_demand\":true"), encoding.body)
        let (vx0, vy0) = mapPoint(1500, 900), (vx1, vy1) = mapPoint(2000, 600)
        let view = try curl(["-X", "PUT", "-H", "Content-Type: application/json", "-d", "{\"bbox\": [\(vx0), \(vy0), \(vx1), \(vy1)]}",
                             server.url + "api/view"])
        XCTAssertEqual(view.status, 200, view.body)
        let badView = try curl(["-X", "PUT", "-d", "{\"bbox\": [3, 2, 1]}", server.url + "api/view"])
        XCTAssertEqual(badView.status, 400, badView.body)
        XCTAssertTrue(badView.body.contains("bbox must be"), badView.body)
        XCTAssertEqual(try curl(["-X", "POST", "-d", "{}", server.url + "api/view"]).status, 405)

        // A click anywhere is answered, whatever the background has reached.
        let (x, y) = mapPoint(300, 300)
        let answer = try curl(["-X", "POST", "-d", promptJSON(points: [(x, y, 1)]), server.url + "api/segment"])
        XCTAssertEqual(answer.status, 200, answer.body)
        XCTAssertTrue(answer.body.contains("\"encoded_on_demand\":["), answer.body.prefix(300).description)

        // The background finishes the store; /api/store and /api/tiles follow it.
        let deadline = Date().addingTimeInterval(300)
        var report = try curl([server.url + "api/encoding"]).body
        while !report.contains("\"complete\":true"), Date() < deadline {
            Thread.sleep(forTimeInterval: 0.2)
            report = try curl([server.url + "api/encoding"]).body
        }
        XCTAssertTrue(report.contains("\"complete\":true") && report.contains("\"finished\":9"), report)
        let info = try curl([server.url + "api/store"]).body
        XCTAssertTrue(info.contains("\"complete\":true") && info.contains("\"tiles_done\":6"), info.prefix(400).description)
        let tiles = try curl([server.url + "api/tiles"]).body
        XCTAssertFalse(tiles.contains("\"state\":\"pending\""), "every tile done")
        XCTAssertEqual(try curl([server.url + "tiles/0/0/0.png", "-o", "/dev/null"]).status, 200)
        let (status, stderr) = server.stop()
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(try FeatureStore.open(store).manifest.complete, "the manifest is finalized once every tile is encoded")
        XCTAssertTrue(try FeatureStore.open(store).verify().isComplete)
        XCTAssertEqual(ServerConfiguration.defaultOutputPath(forStore: store), directory.appendingPathComponent("small_objects.gpkg").path)
    }

    func testNoEncodeRefusesPromptsOnPendingTiles() throws {
        let directory = try ServerFixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (raster, transform) = try sampleRaster(width: 1500, height: 600, in: directory)
        let server = try Server([raster, "--port", "0", "--no-encode"] + Executable.microArguments)
        let p = transform.pixelToMap(x: 300, y: 300)
        let refused = try curl(["-X", "POST", "-d", promptJSON(points: [(p.x, p.y, 1)]), server.url + "api/segment"])
        XCTAssertTrue((400..<500).contains(refused.status), refused.body)
        XCTAssertTrue(refused.body.contains("not encoded yet"), refused.body)
        let report = try curl([server.url + "api/encoding"]).body
        XCTAssertTrue(report.contains("\"on_demand\":false") && report.contains("\"finished\":0"), report)
        let (status, stderr) = server.stop()
        XCTAssertEqual(status, 0, stderr)
        XCTAssertTrue(stderr.contains("--no-encode"), stderr)
    }

    func testRefusesBadArguments() throws {
        for (arguments, fragment) in [
            (["/nonexistent/raster.tif"], "no such feature store or raster"),
            ([NSTemporaryDirectory()], "not a feature store"),
            (["x.tif", "--port", "70000"], "--port"),
            (["x.tif", "--out", "objects.shp"], "GeoPackage"),
        ] {
            let process = Process()
            process.executableURL = Executable.url
            process.arguments = ["serve"] + arguments
            let err = Pipe()
            process.standardError = err
            process.standardOutput = Pipe()
            try process.run()
            let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertNotEqual(process.terminationStatus, 0, "\(arguments)")
            XCTAssertTrue(message.contains(fragment), "\(arguments): \(message)")
        }
    }

    func testSampleCommandWritesAGeoreferencedScene() throws {
        let directory = try ServerFixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("sample.tif").path
        let process = Process()
        process.executableURL = Executable.url
        process.arguments = ["sample", path, "--width", "640", "--height", "480"]
        process.standardOutput = Pipe()
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let dataset = try RasterDataset.open(path)
        XCTAssertEqual(dataset.width, 640)
        XCTAssertEqual(dataset.height, 480)
        XCTAssertEqual(dataset.bandCount, 3)
        XCTAssertEqual(dataset.spatialReference?.epsgCode, 32633)
        XCTAssertEqual(dataset.geoTransform?.coefficients, [410_000, 1, 0, 5_810_000, 0, -1])
        XCTAssertGreaterThan(try dataset.band(1).overviewCount, 0)
        XCTAssertEqual(try dataset.band(1).colorInterpretation, .red)
    }
}

/// Pure pieces: the map's tiling, request parsing, loopback names, the sample scene.
final class ServerUnitTests: XCTestCase {
    func testMapGrid() {
        let grid = MapGrid(width: 1800, height: 900)
        XCTAssertEqual(grid.nativeZoom, 3)
        XCTAssertEqual(grid.factor(zoom: 0), 8)
        XCTAssertEqual(grid.tileCount(zoom: 3).columns, 8)
        XCTAssertEqual(grid.tileCount(zoom: 3).rows, 4)
        XCTAssertEqual(grid.tileCount(zoom: 0).columns, 1)
        let corner = grid.window(zoom: 3, column: 7, row: 3)
        XCTAssertEqual(corner?.window, PixelWindow(x: 1792, y: 768, width: 8, height: 132))
        XCTAssertEqual(corner?.imageWidth, 8)
        let whole = grid.window(zoom: 0, column: 0, row: 0)
        XCTAssertEqual(whole?.window, PixelWindow(x: 0, y: 0, width: 1800, height: 900))
        XCTAssertEqual(whole?.imageWidth, 225)
        XCTAssertEqual(whole?.imageHeight, 113)
        XCTAssertNil(grid.window(zoom: 4, column: 0, row: 0))
        XCTAssertNil(grid.window(zoom: 3, column: 8, row: 0))
        XCTAssertNil(grid.window(zoom: -1, column: 0, row: 0))
        XCTAssertEqual(MapGrid(width: 100, height: 50).nativeZoom, 0)
        XCTAssertEqual(MapGrid(width: 256, height: 256).nativeZoom, 0)
        XCTAssertEqual(MapGrid(width: 257, height: 10).nativeZoom, 1)
        XCTAssertEqual(MapGrid(width: 100_000, height: 80_000).nativeZoom, 9)
    }

    func testSegmentRequestParsing() throws {
        let parsed = try SegmentRequest.parse(Data(#"{"points": [[1.5, 2, 1], [3, 4, 0]], "box": [0, 0, 10, 10], "crs": " EPSG:4326 ", "multimask": true, "candidate": 1, "min_area": 5, "largest_only": true, "simplify": 0.5, "fill_holes": true}"#.utf8))
        XCTAssertEqual(parsed.prompt.points, [MapPoint(x: 1.5, y: 2, label: 1), MapPoint(x: 3, y: 4, label: 0)])
        XCTAssertEqual(parsed.prompt.box, MapBox(minX: 0, minY: 0, maxX: 10, maxY: 10))
        XCTAssertEqual(parsed.prompt.crs, "EPSG:4326")
        XCTAssertEqual(parsed.candidate, 1)
        XCTAssertTrue(parsed.multimask)
        XCTAssertEqual(parsed.options, PolygonOptions(minArea: 5, largestOnly: true, simplify: 0.5, fillHoles: true))
        let minimal = try SegmentRequest.parse(Data(#"{"box": [1, 2, 3, 4], "points": null, "crs": null}"#.utf8))
        XCTAssertEqual(minimal.prompt.points, [])
        XCTAssertNil(minimal.prompt.crs)
        XCTAssertEqual(minimal.options, PolygonOptions())
        XCTAssertThrowsError(try SegmentRequest.parse(Data(#"{"points": [[1e400, 2, 1]]}"#.utf8)))
    }

    func testLoopbackNames() {
        for host in ["127.0.0.1", "localhost", "::1", "127.1.2.3", "app.localhost"] { XCTAssertTrue(Loopback.isLoopback(host: host), host) }
        for host in ["0.0.0.0", "192.168.1.2", "example.com", "127.0.0.1.example.com", "::", "localhost.example"] {
            XCTAssertFalse(Loopback.isLoopback(host: host), host)
        }
        XCTAssertTrue(Loopback.isLoopback(authority: "localhost:8080"))
        XCTAssertTrue(Loopback.isLoopback(authority: "[::1]:8080"))
        XCTAssertTrue(Loopback.isLoopback(authority: "127.0.0.1"))
        XCTAssertFalse(Loopback.isLoopback(authority: "evil.example:80"))
        var configuration = ServerConfiguration(outputPath: "x.gpkg")
        XCTAssertTrue(configuration.isLoopback)
        configuration.host = "0.0.0.0"
        XCTAssertFalse(configuration.isLoopback)
    }

    func testJSONSerialization() throws {
        let value = JSONValue.object([
            "b": .array([.integer(-3), .number(1.5), .number(410_000), .number(.nan), .bool(true), .null]),
            "a": .string("quote \" backslash \\ newline \n tab \t bell \u{7} é 🛰"),
            "geometry": .raw(#"{"type":"Point","coordinates":[1,2]}"#),
        ])
        let text = value.serialized()
        XCTAssertTrue(text.hasPrefix(#"{"a":"#), "keys sorted: \(text)")
        XCTAssertTrue(text.contains(#"[-3,1.5,410000,null,true,null]"#), text)
        XCTAssertTrue(text.contains("\\u0007"), text)
        let parsed = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertEqual(parsed["a"] as? String, "quote \" backslash \\ newline \n tab \t bell \u{7} é 🛰")
        XCTAssertEqual(((parsed["geometry"] as? [String: Any])?["coordinates"] as? [Int]), [1, 2])
        // The Codable path agrees.
        let decoded = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
        XCTAssertEqual(decoded["a"], value["a"])
    }

    func testSampleSceneIsDeterministic() {
        var options = SampleScene.Options()
        options.width = 300
        options.height = 200
        let a = SampleScene.render(options), b = SampleScene.render(options)
        XCTAssertEqual(a, b)
        XCTAssertEqual(a.count, 300 * 200 * 3)
        options.seed = 2
        XCTAssertNotEqual(SampleScene.render(options), a)
        // Not a flat image: SAM2 needs structure.
        XCTAssertGreaterThan(Set(a).count, 100)
    }
}
