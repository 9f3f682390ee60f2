import Foundation
import GeoIO
import SAM2
import XCTest
@testable import GeoSegment

/// Paths and builders shared by the domain tests.
enum TestSupport {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let sharedData = packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data")
    static let microModelDirectory = packageRoot.appendingPathComponent("Tests/SAM2Tests/Fixtures/tiny/micro")

    /// The micro SAM2 of the parity fixture: real architecture, tiny widths, so encoding takes
    /// a fraction of a second per tile.
    static func microModel() throws -> EncoderModel {
        let checkpoint = microModelDirectory.appendingPathComponent("model.pt")
        let config = try JSONDecoder().decode(SAM2Configuration.self, from: Data(contentsOf: microModelDirectory.appendingPathComponent("config.json")))
        return EncoderModel(model: try SAM2Model.load(contentsOf: checkpoint, configuration: config),
                            checkpointSHA256: try FileDigest.sha256(of: checkpoint), preset: nil)
    }

    /// A new empty directory for one test, inside this process's own folder under the system's
    /// temporary directory; the folder and all in it are removed when the test process exits
    /// (a suite run wrote some 360 MB of stores and rasters there and left them).
    static func temporaryDirectory() throws -> URL {
        let url = testRoot.appendingPathComponent(UUID().uuidString, isDirectory: true)
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    private static let testRoot: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("geosam2-tests-\(getpid())", isDirectory: true)
        atexit { try? FileManager.default.removeItem(at: TestSupport.testRoot) }
        return root
    }()

    /// Writes a GeoTIFF whose pixel values come from `value(band, x, y)`.
    @discardableResult
    static func makeRaster(
        at path: String, width: Int, height: Int, bands: Int = 3, type: RasterDataType = .byte,
        epsg: Int? = 32633, geoTransform: GeoTransform? = GeoTransform(originX: 500_000, pixelWidth: 2, originY: 5_000_000, pixelHeight: -2),
        nodata: Double? = nil, interpretations: [ColorInterpretation]? = nil,
        value: (Int, Int, Int) -> Double
    ) throws -> String {
        let ds = try RasterDataset.create(driver: "GTiff", path: path, width: width, height: height, bandCount: bands,
                                          dataType: type, options: ["TILED=YES"])
        if let geoTransform { try ds.setGeoTransform(geoTransform) }
        if let epsg { try ds.setSpatialReference(try SpatialReference(epsg: epsg)) }
        for b in 1...bands {
            let band = try ds.band(b)
            if let nodata { try band.setNoDataValue(nodata) }
            if let interpretations { try band.setColorInterpretation(interpretations[b - 1]) }
            var values = [Double](repeating: 0, count: width * height)
            for y in 0..<height { for x in 0..<width { values[y * width + x] = value(b, x, y) } }
            try band.write(values: values)
        }
        try ds.flush()
        return path
    }

    /// A smooth scene with structure (fields and a disc), 8-bit.
    static func scene(_ band: Int, _ x: Int, _ y: Int) -> Double {
        let field = ((x / 300) + (y / 250)) % 3
        let disc = (x - 700) * (x - 700) + (y - 500) * (y - 500) < 150 * 150
        let base = disc ? [220.0, 60, 40][band - 1] : [[80.0, 140, 60], [170, 150, 90], [60, 90, 150]][field][band - 1]
        return base + Double((x * 7 + y * 13 + band * 5) % 9)
    }

    /// Every file under a directory, relative path → bytes.
    static func contents(of directory: URL) throws -> [String: Data] {
        var result: [String: Data] = [:]
        let fm = FileManager.default
        guard let enumerator = fm.enumerator(at: directory, includingPropertiesForKeys: [.isRegularFileKey]) else { return result }
        for case let url as URL in enumerator {
            guard (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true else { continue }
            result[String(url.path.dropFirst(directory.path.count))] = try Data(contentsOf: url)
        }
        return result
    }

    /// The `geosam2` executable built beside the test bundle.
    static var executable: URL {
        var dir = Bundle.main.bundleURL
        for candidate in [dir, dir.deletingLastPathComponent()] {
            let url = candidate.appendingPathComponent("geosam2")
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        dir = Bundle(for: Marker.self).bundleURL.deletingLastPathComponent()
        return dir.appendingPathComponent("geosam2")
    }

    final class Marker {}

    /// Runs the tool; returns exit status, stdout and stderr.
    static func run(_ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    static var microModelArguments: [String] {
        ["--model", microModelDirectory.appendingPathComponent("model.pt").path,
         "--config", microModelDirectory.appendingPathComponent("config.json").path]
    }
}
