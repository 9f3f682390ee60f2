import Foundation
import GeoIO
import Kernels
import TensorIO
import XCTest
@testable import GeoSegment

/// Every byte of a store file is covered by its checksum: a flipped byte anywhere, in any
/// feature dtype, is caught by `verify` and refused by the loader; old stores still open;
/// `repair` writes the bad tiles again, byte for byte as first written.
final class IntegrityTests: XCTestCase {
    func encodeStore(width: Int = 600, height: Int = 500, dtype: String? = nil, in dir: URL) throws -> (FeatureStore, String) {
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: width, height: height, nodata: 0) { b, x, y in
            // A nodata corner: the tile gets a validity mask, a tensor the checksum must cover too.
            x < 40 && y < 30 ? 0 : TestSupport.scene(b, x, y)
        }
        var options = EncodeOptions()
        options.featureDType = dtype
        let url = dir.appendingPathComponent("\(dtype ?? "default").geosam2")
        _ = try RasterEncoder.run(raster: raster, store: url, model: try TestSupport.microModel(), options: options)
        return (try FeatureStore.open(url), raster)
    }

    /// Byte ranges of a safetensors file: the length prefix, the header, each tensor's data.
    func regions(of file: URL) throws -> [(String, Range<Int>)] {
        let bytes = [UInt8](try Data(contentsOf: file))
        let headerLength = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        var result: [(String, Range<Int>)] = [("length prefix", 0..<8), ("header", 8..<(8 + headerLength))]
        for (name, value) in header where name != "__metadata__" {
            let offsets = try XCTUnwrap((value as? [String: Any])?["data_offsets"] as? [Int])
            result.append((name, (8 + headerLength + offsets[0])..<(8 + headerLength + offsets[1])))
        }
        return result
    }

    func testAFlippedByteAnywhereInAnyDTypeIsCaught() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var seed = SplitMix64(state: 2026)
        let model = try TestSupport.microModel().model
        for dtype in ["q16z", "q16", "f16", "f32"] {
            let (store, _) = try encodeStore(dtype: dtype, in: dir)
            XCTAssertEqual(store.manifest.tileChecksum, "crc32c")
            XCTAssertTrue(try store.verify().isComplete)
            let tile = store.manifest.tiles[0]
            let file = store.featuresURL(tile)
            let original = try Data(contentsOf: file)
            let areas = try regions(of: file)
            if dtype == "q16z" {
                XCTAssertTrue(areas.contains { $0.0.hasSuffix(".low") }, "q16z keeps raw low-byte planes: \(areas.map(\.0))")
            }
            // Every region, at its first and last byte and a few seeded places inside.
            var positions: [(String, Int)] = []
            for (name, range) in areas where !range.isEmpty {
                positions += [(name, range.lowerBound), (name, range.upperBound - 1)]
                for _ in 0..<(dtype == "q16z" ? 6 : 2) { positions.append((name, range.lowerBound + Int(seed.next() % UInt64(range.count)))) }
            }
            for (name, position) in positions {
                var damaged = original
                damaged[position] ^= UInt8(1 + seed.next() % 255)
                try damaged.write(to: file)
                let report = try store.verify(readValues: false)
                XCTAssertEqual(report.problems.map(\.tile), [tile.id], "\(dtype): byte \(position) (\(name)) flipped, verify saw \(report.problems)")
                XCTAssertThrowsError(try store.loadTile(tile, for: model), "\(dtype) \(name)") { error in
                    XCTAssertTrue("\(error)".hasPrefix("tile \(tile.id) is corrupt"), "\(error)")
                    XCTAssertFalse("\(error)".contains("\n"))
                }
            }
            // Truncated and extended files.
            for damaged in [original.prefix(original.count - 1), original + Data([0])] {
                try Data(damaged).write(to: file)
                XCTAssertEqual(try store.verify(readValues: false).problems.map(\.tile), [tile.id], dtype)
            }
            try original.write(to: file)
            XCTAssertTrue(try store.verify().isComplete, dtype)
        }
    }

    func testEmptyTileMarkersAndTheManifestsTileEntriesAreChecked() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // 2100 wide: the right tile holds nodata only and is recorded empty.
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 2100, height: 500, nodata: 0) { b, x, y in
            x >= 1050 ? 0 : TestSupport.scene(b, x, y)
        }
        let url = dir.appendingPathComponent("s.geosam2")
        _ = try RasterEncoder.run(raster: raster, store: url, model: try TestSupport.microModel(), options: EncodeOptions())
        let store = try FeatureStore.open(url)
        let report = try store.verify()
        XCTAssertTrue(report.isComplete)
        let empty = try XCTUnwrap(store.tile(id: try XCTUnwrap(report.empty.first)))
        let marker = store.emptyMarkerURL(empty)
        let original = try Data(contentsOf: marker)
        for position in [0, original.count / 2, original.count - 2] {
            var damaged = original
            damaged[position] ^= 0x01
            try damaged.write(to: marker)
            XCTAssertEqual(try store.verify().problems.map(\.tile), [empty.id], "byte \(position) of the empty marker")
        }
        try original.write(to: marker)

        // A damaged manifest entry (one digit of a tile's window) no longer matches its file.
        var manifest = store.manifest
        manifest.tiles[0].window[2] -= 1
        let altered = FeatureStore(url: url, manifest: manifest)
        let problems = try altered.verify().problems
        XCTAssertEqual(problems.map(\.tile), [manifest.tiles[0].id])
        XCTAssertTrue(problems.first?.reason.contains("window") ?? false, "\(problems)")
    }

    func testStoresFromBeforeChecksumsOpenAndAreNoted() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (store, _) = try encodeStore(in: dir)
        let tile = store.manifest.tiles[0]
        // Rewrite the tile as 0.1 wrote it: the same tensors, no checksum in the metadata.
        let archive = try SafetensorsFile(contentsOf: store.featuresURL(tile))
        var entries: [SafetensorsWriter.Entry] = []
        for name in archive.tensorNames {
            let info = try XCTUnwrap(archive.info(name))
            let bytes = try archive.withRawBytes(of: name) { [UInt8]($0) }
            entries.append(.init(name: name, bytes: bytes, dtype: info.dtype, shape: info.shape))
        }
        var metadata = archive.metadata
        metadata[ContentChecksum.key] = nil
        try SafetensorsWriter.data(entries: entries, metadata: metadata).write(to: store.featuresURL(tile))

        // In a store whose manifest records checksums, a tile without one is refused ...
        XCTAssertEqual(try store.verify().problems.map(\.tile), [tile.id])
        XCTAssertThrowsError(try store.loadFeatures(tile))
        // ... in an old store (no `tileChecksum` in its manifest) it opens, and verify notes it.
        let manifestURL = store.url.appendingPathComponent(FeatureStore.manifestName)
        var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: manifestURL)) as? [String: Any])
        json["tileChecksum"] = nil
        try JSONSerialization.data(withJSONObject: json).write(to: manifestURL)
        let old = try FeatureStore.open(store.url)
        XCTAssertNil(old.manifest.tileChecksum)
        let report = try old.verify()
        XCTAssertTrue(report.isComplete, "\(report.problems)")
        XCTAssertEqual(report.unchecked, [tile.id])
        XCTAssertNoThrow(try old.loadFeatures(tile))
    }

    func testRepairWritesTheBadTilesAgainByteForByte() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (store, raster) = try encodeStore(width: 1900, height: 500, in: dir)
        XCTAssertEqual(store.manifest.tiles.count, 2)
        let (bad, good) = (store.manifest.tiles[0], store.manifest.tiles[1])
        let original = try Data(contentsOf: store.featuresURL(bad))
        let untouched = try Data(contentsOf: store.featuresURL(good))
        var damaged = original
        damaged[damaged.count / 3] ^= 0x10
        try damaged.write(to: store.featuresURL(bad))
        let report = try store.verify()
        XCTAssertEqual(report.problems.map(\.tile), [bad.id])

        let model = try TestSupport.microModel()
        let summary = try RasterEncoder.repair([bad.id], in: store, model: model)
        XCTAssertEqual(summary.encoded, 1)
        XCTAssertTrue(summary.complete)
        XCTAssertEqual(try Data(contentsOf: store.featuresURL(bad)), original, "the repaired tile is the tile first written")
        XCTAssertEqual(try Data(contentsOf: store.featuresURL(good)), untouched, "sound tiles are left alone")
        XCTAssertEqual(try Data(contentsOf: store.featuresURL(bad).appendingPathExtension("corrupt")), damaged, "the bad file is kept aside")
        XCTAssertTrue(try store.verify().isComplete)

        // A changed raster cannot repair the store it no longer matches.
        try TestSupport.makeRaster(at: raster, width: 1900, height: 500) { b, x, y in TestSupport.scene(b, x, y) + 1 }
        XCTAssertThrowsError(try RasterEncoder.repair([bad.id], in: store, model: model)) { error in
            XCTAssertTrue("\(error)".contains("changed since the store was encoded"), "\(error)")
        }
        XCTAssertEqual(try Data(contentsOf: store.featuresURL(bad)), original, "a refused repair leaves the tile alone")
    }
}
