import Foundation
import GeoIO
import GeoSAM2Server
import GeoSegment
import Hummingbird
import HummingbirdTesting
import SAM2
import XCTest

/// A small encoded scene shared by the server tests: `geosam2 sample` pixels (1800 × 900, two
/// tiles) encoded with the micro SAM2 of the unit-test fixture, and its segmenter.
struct ServerFixture: Sendable {
    let directory: URL
    let raster: String
    let storeURL: URL
    let segmenter: Segmenter

    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let microDirectory = packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/tiny/micro")
    static let width = 1800, height = 900
    /// A point well inside the first tile, in the store's CRS (EPSG:32633).
    static let inside = (x: 410_500.0, y: 5_809_500.0)

    /// Built once per test process.
    static let shared: Result<ServerFixture, any Error> = Result { try ServerFixture() }

    static func get() throws -> ServerFixture { try shared.get() }

    static func microModel() throws -> EncoderModel {
        let checkpoint = microDirectory.appendingPathComponent("model.pt")
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: microDirectory.appendingPathComponent("config.json")))
        return EncoderModel(model: try SAM2Model.load(contentsOf: checkpoint, configuration: config),
                            checkpointSHA256: try FileDigest.sha256(of: checkpoint), preset: nil)
    }

    private init() throws {
        directory = try Self.temporaryDirectory()
        raster = directory.appendingPathComponent("scene.tif").path
        var options = SampleScene.Options()
        options.width = Self.width
        options.height = Self.height
        try SampleScene.write(to: raster, options: options)
        storeURL = directory.appendingPathComponent("scene.geosam2", isDirectory: true)
        let model = try Self.microModel()
        _ = try RasterEncoder.run(raster: raster, store: storeURL, model: model, options: EncodeOptions())
        segmenter = try Segmenter(store: try FeatureStore.open(storeURL), model: model.model, checkpointSHA256: model.checkpointSHA256)
    }

    /// A new empty directory inside this process's own folder under the system's temporary
    /// directory, which is removed with all in it when the test process exits.
    static func temporaryDirectory() throws -> URL {
        let url = testRoot.appendingPathComponent(UUID().uuidString, isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private static let testRoot: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("geosam2-server-tests-\(getpid())", isDirectory: true)
        atexit { try? FileManager.default.removeItem(at: ServerFixture.testRoot) }
        return root
    }()

    /// A fresh output GeoPackage path.
    func newOutput() -> String {
        directory.appendingPathComponent("objects-\(UUID().uuidString).gpkg").path
    }

    func configuration(output: String) -> ServerConfiguration {
        var configuration = ServerConfiguration(outputPath: output)
        configuration.port = 0
        configuration.prepareMapOverviews = false
        return configuration
    }

    func app(output: String) throws -> some ApplicationProtocol {
        try buildApplication(segmenter: segmenter, configuration: configuration(output: output))
    }
}

// MARK: - Requests

extension TestClientProtocol {
    /// Sends a request and returns the status, headers and body.
    func call(_ method: HTTPRequest.Method, _ uri: String, json: String? = nil, body: Data? = nil) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        var buffer: ByteBuffer?
        if let json {
            headers[.contentType] = "application/json"
            buffer = ByteBuffer(string: json)
        } else if let body {
            buffer = ByteBuffer(bytes: body)
        }
        return try await executeRequest(uri: uri, method: method, headers: headers, body: buffer)
    }
}

extension TestResponse {
    var data: Data { Data(body.readableBytesView) }
    var text: String { String(decoding: data, as: UTF8.self) }

    func json(file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            XCTFail("not a JSON object: \(text.prefix(200))", file: file, line: line)
            return [:]
        }
        return object
    }

    /// The `error` of a `{"error": "…"}` body.
    var errorMessage: String? {
        (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["error"] as? String
    }
}

/// Asserts a 4xx answer with a JSON error naming the problem.
func assertError(_ response: TestResponse, _ status: HTTPResponse.Status, contains fragment: String? = nil,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(response.status, status, "body: \(response.text.prefix(300))", file: file, line: line)
    XCTAssertEqual(response.headers[.contentType], "application/json; charset=utf-8", file: file, line: line)
    guard let message = response.errorMessage else {
        XCTFail("no {\"error\": …} body: \(response.text.prefix(300))", file: file, line: line)
        return
    }
    if let fragment {
        XCTAssertTrue(message.contains(fragment), "\"\(message)\" does not mention \"\(fragment)\"", file: file, line: line)
    }
}

/// A segment request body for points in the store's CRS.
func promptJSON(points: [(Double, Double, Int)], box: [Double]? = nil, extra: String = "") -> String {
    let p = points.map { "[\($0.0), \($0.1), \($0.2)]" }.joined(separator: ",")
    let b = box.map { "[\($0.map { "\($0)" }.joined(separator: ","))]" } ?? "null"
    return "{\"points\": [\(p)], \"box\": \(b)\(extra.isEmpty ? "" : ", " + extra)}"
}

/// The `geosam2` executable built beside the test bundle.
enum Executable {
    static var url: URL {
        var candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent()]
        candidates.append(Bundle(for: Marker.self).bundleURL.deletingLastPathComponent())
        for dir in candidates {
            let url = dir.appendingPathComponent("geosam2")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return candidates[candidates.count - 1].appendingPathComponent("geosam2")
    }

    final class Marker {}

    static var microArguments: [String] {
        ["--model", ServerFixture.microDirectory.appendingPathComponent("model.pt").path,
         "--config", ServerFixture.microDirectory.appendingPathComponent("config.json").path]
    }
}
