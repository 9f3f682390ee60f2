import Foundation
import TensorIO
import XCTest
@testable import GeoSegment

/// `docs/store-format.md` is what other tools rely on: the Python reader in `tools/store` loads
/// tiles the Swift writer wrote, in every dtype, to exactly the values the Swift reader gets, and
/// refuses a corrupt one.
final class StoreFormatTests: XCTestCase {
    static let reader = TestSupport.packageRoot.appendingPathComponent("tools/store/geosam2_store.py").path

    func python(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testThePythonReaderGetsTheSwiftValuesInEveryDType() throws {
        let probe = try python(["-c", "import numpy"])
        try XCTSkipIf(probe.status != 0, "python3 with NumPy is not installed (scripts/setup --parity installs it)")
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 600, height: 500, nodata: 0) { b, x, y in
            x < 50 && y < 20 ? 0 : TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        for dtype in FeatureDType.allCases {
            var options = EncodeOptions()
            options.featureDType = dtype.rawValue
            let url = dir.appendingPathComponent("\(dtype.rawValue).geosam2")
            _ = try RasterEncoder.run(raster: raster, store: url, model: model, options: options)
            let store = try FeatureStore.open(url)
            let tile = store.manifest.tiles[0]
            let features = try store.loadFeatures(tile)
            let expected = dir.appendingPathComponent("\(dtype.rawValue)-expected", isDirectory: true)
            try FileManager.default.createDirectory(at: expected, withIntermediateDirectories: true)
            try NumPy.write(features.imageEmbedding, to: expected.appendingPathComponent("image_embed.npy"))
            try NumPy.write(features.highResolutionS0, to: expected.appendingPathComponent("high_res_feats_0.npy"))
            try NumPy.write(features.highResolutionS1, to: expected.appendingPathComponent("high_res_feats_1.npy"))
            let valid = try XCTUnwrap(try store.loadValidity(tile))
            try NumPy.writeUInt8(valid.map { $0 ? 1 : 0 }, shape: [tile.window[3], tile.window[2]], to: expected.appendingPathComponent("valid_mask.npy"))

            let script = """
                import sys, numpy as np
                sys.path.insert(0, sys.argv[1])
                import geosam2_store as g
                tile = g.Store(sys.argv[2]).load_tile(sys.argv[3])
                for name in g.FEATURE_MAPS + ["valid_mask"]:
                    want = np.load(f"{sys.argv[4]}/{name}.npy")
                    got = tile[name]
                    assert got.shape == want.shape, (name, got.shape, want.shape)
                    assert np.array_equal(got.astype(want.dtype), want), (name, float(np.abs(got.astype(np.float64) - want).max()))
                print("equal")
                """
            let result = try python(["-c", script, URL(fileURLWithPath: Self.reader).deletingLastPathComponent().path, url.path, tile.id, expected.path])
            XCTAssertEqual(result.status, 0, "\(dtype): \(result.output)")
            XCTAssertTrue(result.output.contains("equal"), "\(dtype): \(result.output)")

            // One flipped byte: the Python reader refuses the tile too.
            let file = store.featuresURL(tile)
            var bytes = try Data(contentsOf: file)
            bytes[bytes.count / 2] ^= 0x40
            try bytes.write(to: file)
            let refused = try python([Self.reader, url.path, tile.id])
            XCTAssertEqual(refused.status, 1, refused.output)
            XCTAssertTrue(refused.output.contains("does not match"), refused.output)
        }
    }
}
