import Foundation
import XCTest
@testable import GeoIO

/// `../shared/data` relative to the package root, found from this file's location.
let sharedDataDirectory: URL = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()  // GeoIOTests
    .deletingLastPathComponent()  // Tests
    .deletingLastPathComponent()  // package root
    .appendingPathComponent("../shared/data")
    .standardizedFileURL

/// The path of a shared real-world test file, or an `XCTSkip` when the folder or file is absent.
func sharedDataPath(_ name: String) throws -> String {
    let url = sharedDataDirectory.appendingPathComponent(name)
    guard FileManager.default.fileExists(atPath: url.path) else {
        throw XCTSkip("../shared/data not present: \(url.path) is missing")
    }
    return url.path
}

/// A fresh temporary directory, removed when the test case finishes.
func makeTemporaryDirectory(_ testCase: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("geoio-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// Asserts that `body` throws a ``GeoIOError`` whose message contains every string in `fragments`;
/// returns the message.
@discardableResult
func assertGeoIOError<T>(_ fragments: [String], file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> T) -> String? {
    do {
        _ = try body()
        XCTFail("expected a GeoIOError containing \(fragments)", file: file, line: line)
        return nil
    } catch let error as GeoIOError {
        for fragment in fragments {
            XCTAssertTrue(error.description.contains(fragment),
                          "\"\(error.description)\" does not contain \"\(fragment)\"", file: file, line: line)
        }
        XCTAssertFalse(error.description.contains("\n"), "multi-line error: \(error)", file: file, line: line)
        return error.description
    } catch {
        XCTFail("expected a GeoIOError, got \(error)", file: file, line: line)
        return nil
    }
}

func assertClose(_ a: Double, _ b: Double, tolerance: Double, _ message: String = "",
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a, b, accuracy: tolerance, message, file: file, line: line)
}
