import Foundation
import GeoSegment
import Hummingbird
import HummingbirdTesting
import SAM2
import XCTest

/// `ModelCatalog.download` against a loopback HTTP server standing in for Meta's: a complete
/// checkpoint is kept, a truncated or wrong one is refused and leaves nothing behind, and a server
/// that cannot be reached gets advice on `--model PATH`.
final class ModelDownloadTests: XCTestCase {
    /// Serves `good/`, `truncated/` and (when the random-weight Hiera-T exists) `real/`, each with
    /// a `sam2.1_hiera_tiny.pt`, and runs `body` with the server's base URL.
    func withCheckpointServer(_ body: @Sendable (String) async throws -> Void) async throws {
        let root = try ServerFixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: root) }
        let fm = FileManager.default
        let micro = try Data(contentsOf: ServerFixture.microDirectory.appendingPathComponent("model.pt"))
        for (folder, data) in [("good", micro), ("truncated", micro.prefix(micro.count / 2))] {
            try fm.createDirectory(at: root.appendingPathComponent(folder), withIntermediateDirectories: true)
            try Data(data).write(to: root.appendingPathComponent("\(folder)/sam2.1_hiera_tiny.pt"))
        }
        if fm.fileExists(atPath: Self.realTiny) {
            try fm.createDirectory(at: root.appendingPathComponent("real"), withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: root.appendingPathComponent("real/sam2.1_hiera_tiny.pt").path, withDestinationPath: Self.realTiny)
        }
        let router = Router()
        router.add(middleware: FileMiddleware(root.path))
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            try await body("http://127.0.0.1:\(port)")
        }
    }

    /// A random-weight Hiera-T in Meta's format: `$GEOSAM2_TINY_CHECKPOINT`, else the parity
    /// reference's (`scripts/test` makes it before the Swift tests).
    static let realTiny: String = {
        if let path = ProcessInfo.processInfo.environment["GEOSAM2_TINY_CHECKPOINT"], !path.isEmpty { return path }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build-parity/reference/tiny/model.pt").path
    }()

    /// The micro model is no preset: check it by loading it with its configuration.
    static let loadsAsMicro: @Sendable (URL) throws -> Void = { url in
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: ServerFixture.microDirectory.appendingPathComponent("config.json")))
        _ = try SAM2Model.load(contentsOf: url, configuration: config)
    }

    func testDownloadsAndValidatesACheckpoint() async throws {
        try await withCheckpointServer { base in
            let cache = try ServerFixture.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: cache) }
            let seen = Progress()
            let url = try await ModelCatalog.download(.tiny, baseURL: base + "/good/", into: cache, validate: Self.loadsAsMicro) { received, total in
                seen.record(received, total)
            }
            XCTAssertEqual(url, cache.appendingPathComponent("sam2.1_hiera_tiny.pt"))
            let expected = try Data(contentsOf: ServerFixture.microDirectory.appendingPathComponent("model.pt"))
            XCTAssertEqual(try Data(contentsOf: url), expected)
            let last = seen.last
            XCTAssertEqual(last?.received, Int64(expected.count))
            XCTAssertEqual(last?.total, Int64(expected.count))
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.path), ["sam2.1_hiera_tiny.pt"], "no partial files left")
        }
    }

    func testRefusesATruncatedCheckpoint() async throws {
        try await withCheckpointServer { base in
            let cache = try ServerFixture.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: cache) }
            do {
                _ = try await ModelCatalog.download(.tiny, baseURL: base + "/truncated", into: cache, validate: Self.loadsAsMicro)
                XCTFail("a truncated checkpoint was accepted")
            } catch let error as GeoSegmentError {
                XCTAssertTrue(error.description.contains("--model"), error.description)
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.path), [], "nothing left behind")
            // The default check (a SAM2 checkpoint of the tiny preset) refuses it too.
            do {
                _ = try await ModelCatalog.download(.tiny, baseURL: base + "/truncated", into: cache)
                XCTFail("a truncated checkpoint was accepted")
            } catch let error as GeoSegmentError {
                XCTAssertTrue(error.description.contains("not a valid SAM2 checkpoint"), error.description)
            }
        }
    }

    func testRefusesACheckpointOfAnotherModel() async throws {
        try await withCheckpointServer { base in
            let cache = try ServerFixture.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: cache) }
            do {
                _ = try await ModelCatalog.download(.tiny, baseURL: base + "/good", into: cache)
                XCTFail("the micro model was accepted as SAM 2.1 tiny")
            } catch let error as GeoSegmentError {
                XCTAssertTrue(error.description.contains("matches no SAM2 preset") || error.description.contains("not tiny"), error.description)
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: cache.appendingPathComponent("sam2.1_hiera_tiny.pt").path))
        }
    }

    func testDownloadsARealTinyCheckpointWithTheDefaultCheck() async throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: Self.realTiny), "\(Self.realTiny) (a random-weight Hiera-T) is not on this machine")
        try await withCheckpointServer { base in
            let cache = try ServerFixture.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: cache) }
            let url = try await ModelCatalog.download(.tiny, baseURL: base + "/real", into: cache)
            XCTAssertEqual(try SAM2Model.inspect(contentsOf: url).preset, .tiny)
        }
    }

    func testMissingFileAndUnreachableServerSayHowToSupplyTheModel() async throws {
        try await withCheckpointServer { base in
            let cache = try ServerFixture.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: cache) }
            do {
                _ = try await ModelCatalog.download(.small, baseURL: base + "/good", into: cache)
                XCTFail("a missing file was accepted")
            } catch let error as GeoSegmentError {
                XCTAssertTrue(error.description.contains("HTTP 404"), error.description)
                XCTAssertTrue(error.description.contains("--model /path/to/sam2.1_hiera_small.pt"), error.description)
            }
        }
        let cache = try ServerFixture.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: cache) }
        do {
            _ = try await ModelCatalog.download(.tiny, baseURL: "http://127.0.0.1:1", into: cache)
            XCTFail("an unreachable server did not fail")
        } catch let error as GeoSegmentError {
            XCTAssertTrue(error.description.contains("cannot download sam2.1_hiera_tiny.pt"), error.description)
            XCTAssertTrue(error.description.contains("--model /path/to/sam2.1_hiera_tiny.pt"), error.description)
            XCTAssertTrue(error.description.contains(SAM2Preset.tiny.downloadURL), error.description)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: cache.path), [])
    }

    func testBaseURLComesFromTheEnvironment() throws {
        XCTAssertEqual(try ModelCatalog.downloadURL(for: .tiny, baseURL: "http://mirror.example/models/").absoluteString,
                       "http://mirror.example/models/sam2.1_hiera_tiny.pt")
        setenv(ModelCatalog.baseURLVariable, "http://127.0.0.1:9/m", 1)
        defer { unsetenv(ModelCatalog.baseURLVariable) }
        XCTAssertEqual(try ModelCatalog.downloadURL(for: .large20).absoluteString, "http://127.0.0.1:9/m/sam2_hiera_large.pt")
        unsetenv(ModelCatalog.baseURLVariable)
        XCTAssertEqual(try ModelCatalog.downloadURL(for: .tiny).absoluteString, SAM2Preset.tiny.downloadURL)
        XCTAssertThrowsError(try ModelCatalog.downloadURL(for: .tiny, baseURL: "file:///etc"))
    }
}

/// Progress callbacks, recorded from URLSession's thread.
final class Progress: @unchecked Sendable {
    private let lock = NSLock()
    private var values: [(received: Int64, total: Int64?)] = []
    func record(_ received: Int64, _ total: Int64?) {
        lock.lock()
        values.append((received, total))
        lock.unlock()
    }
    var last: (received: Int64, total: Int64?)? {
        lock.lock()
        defer { lock.unlock() }
        return values.last
    }
}
