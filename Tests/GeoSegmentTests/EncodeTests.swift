import Foundation
import GeoIO
import Kernels
import SAM2
import TensorIO
import XCTest
@testable import GeoSegment

final class BandAndStretchTests: XCTestCase {
    func testDefaultBandsFollowColourInterpretationAndSkipAlpha() throws {
        let dir = try TestSupport.temporaryDirectory()
        let path = try TestSupport.makeRaster(at: dir.appendingPathComponent("bgra.tif").path, width: 20, height: 10, bands: 4, type: .uint16,
                                              interpretations: [.blue, .green, .red, .alpha]) { b, x, _ in Double(b * 1000 + x) }
        let ds = try RasterDataset.open(path)
        XCTAssertEqual(try BandSelection.resolve(nil, in: ds).rgb, [3, 2, 1])
        XCTAssertEqual(try BandSelection.resolve([2], in: ds).rgb, [2, 2, 2])
        XCTAssertEqual(try BandSelection.resolve([3, 1], in: ds).rgb, [3, 1, 3])
        XCTAssertThrowsError(try BandSelection.resolve([4], in: ds)) { XCTAssertTrue("\($0)".contains("alpha")) }
        XCTAssertThrowsError(try BandSelection.resolve([5], in: ds)) { XCTAssertTrue("\($0)".contains("band 5 does not exist")) }
    }

    func testPercentileStretchIgnoresNodataAndNaN() throws {
        let dir = try TestSupport.temporaryDirectory()
        // Values 0…99 in a ramp, with a nodata border (-9999) and NaN holes.
        let path = try TestSupport.makeRaster(at: dir.appendingPathComponent("f.tif").path, width: 110, height: 100, bands: 1, type: .float32, nodata: -9999) { _, x, y in
            if x >= 100 { return -9999 }
            if x == 50 && y % 10 == 0 { return .nan }
            return Double(x)
        }
        let source = try RasterSource(path: path, bands: nil)
        let stretch = try source.computeStretch(.default)
        let range = try XCTUnwrap(stretch.range(of: 1))
        XCTAssertEqual(range.low, 2, accuracy: 0.6)
        XCTAssertEqual(range.high, 97, accuracy: 0.6)
        let minMax = try XCTUnwrap(try source.computeStretch(.minMax).range(of: 1))
        XCTAssertEqual(minMax.low, 0)
        XCTAssertEqual(minMax.high, 99)
        XCTAssertEqual(stretch.apply(Float(range.low), range: range), 0)
        XCTAssertEqual(stretch.apply(Float(range.high), range: range), 255)
        XCTAssertEqual(stretch.apply(1e9, range: range), 255)
    }

    func testAllNodataRasterIsAClearError() throws {
        let dir = try TestSupport.temporaryDirectory()
        let path = try TestSupport.makeRaster(at: dir.appendingPathComponent("empty.tif").path, width: 30, height: 30, nodata: 0) { _, _, _ in 0 }
        XCTAssertThrowsError(try RasterSource(path: path, bands: nil).computeStretch(.default)) {
            XCTAssertTrue("\($0)".contains("no valid pixels"), "\($0)")
        }
    }
}

final class EncodeTests: XCTestCase {
    /// Encodes with one level unless `configure` asks for more: these tests are about level 0
    /// (PyramidTests has the levels).
    func encode(_ raster: String, into store: URL, _ configure: (inout EncodeOptions) -> Void = { _ in }) throws -> EncodeSummary {
        // The grid these tests pin down: one level, no overlap (the defaults have tests of their own).
        var options = EncodeOptions()
        options.levels = 0
        options.overlap = 0
        configure(&options)
        return try RasterEncoder.run(raster: raster, store: store, model: try TestSupport.microModel(), options: options)
    }

    func testMultiTileRasterWithNodataAreaAndGeoreferencing() throws {
        let dir = try TestSupport.temporaryDirectory()
        // 2100×1100: 3×2 tiles; the right third is nodata, so tiles of the last column are empty.
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("scene.tif").path, width: 2100, height: 1100, nodata: 0) { b, x, y in
            x >= 1050 ? 0 : TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("scene.geosam2")
        let summary = try encode(raster, into: storeURL)
        XCTAssertTrue(summary.complete)
        XCTAssertEqual(summary.encoded + summary.empty, 6)
        XCTAssertEqual(summary.empty, 2, "the column at x ≥ 1076 holds only nodata")

        let store = try FeatureStore.open(storeURL)
        let m = store.manifest
        XCTAssertTrue(m.complete)
        XCTAssertEqual(m.source.epsg, 32633)
        XCTAssertEqual(m.tiles.map(\.state).filter { $0 == .empty }.count, 2)
        // Tile r0000_c0001 starts at pixel 1024: its transform starts 2048 m east of the origin.
        let tile = try XCTUnwrap(store.tile(id: "r0000_c0001"))
        XCTAssertEqual(tile.window, [1024, 0, 1024, 1024])
        XCTAssertEqual(tile.geoTransform, [502_048, 2, 0, 5_000_000, 0, -2])
        XCTAssertEqual(tile.bounds, [502_048, 4_997_952, 504_096, 5_000_000])
        let features = try store.loadFeatures(tile)
        XCTAssertEqual(features.imageEmbedding.shape, [16, 64, 64])
        let report = try store.verify()
        XCTAssertTrue(report.isComplete)
        XCTAssertEqual(report.done.count, 4)
        // Tiles straddling the nodata edge record which pixels are valid; whole tiles don't.
        XCTAssertNil(try store.loadValidity(try XCTUnwrap(store.tile(id: "r0000_c0000"))))
        let straddling = try XCTUnwrap(try store.loadValidity(tile))
        XCTAssertTrue(straddling[0 * 1024 + 25], "x = 1049 is data")
        XCTAssertFalse(straddling[0 * 1024 + 26], "x = 1050 is nodata")
        XCTAssertFalse(straddling[1023 * 1024 + 1023])

        // The stored features are what the model computes for the tile image.
        let source = try RasterSource(path: raster, bands: nil)
        let (pixels, _, _) = try source.readTile(Tile(row: 0, column: 1, x: 1024, y: 0, width: 1024, height: 1024), size: 1024, stretch: m.encoding.stretch)
        let direct = try TestSupport.microModel().model.encode(try RGBImage(width: 1024, height: 1024, pixels: pixels),
                                                               precision: m.model.precision)
        let relative = features.imageEmbedding.maxAbsDifference(direct.imageEmbedding) / direct.imageEmbedding.standardDeviation()
        XCTAssertLessThan(relative, 1e-3, "16-bit storage keeps features within 1e-3·std")
    }

    func testSamePixelGetsTheSameValueInOverlappingTiles() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1500, height: 1024, type: .uint16) { b, x, y in
            TestSupport.scene(b, x, y) * 40
        }
        let source = try RasterSource(path: raster, bands: nil)
        let stretch = try source.computeStretch(.default)
        let grid = try TileGrid(rasterWidth: 1500, rasterHeight: 1024)
        let a = try source.readTile(grid.tiles[0], size: 1024, stretch: stretch).pixels
        let b = try source.readTile(grid.tiles[1], size: 1024, stretch: stretch).pixels
        // Raster pixel (1000, 700) is (1000, 700) in tile 0 and (1000 − 476, 700) in tile 1.
        let offset = grid.tiles[1].x
        for (x, y) in [(1000, 700), (600, 10), (1023, 1023)] {
            let i = (y * 1024 + x) * 3, j = (y * 1024 + x - offset) * 3
            XCTAssertEqual(Array(a[i..<(i + 3)]), Array(b[j..<(j + 3)]))
        }
    }

    func testSmallRasterIsPaddedNotStretched() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("small.tif").path, width: 300, height: 200) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("small.geosam2")
        XCTAssertTrue(try encode(raster, into: storeURL).complete)
        let store = try FeatureStore.open(storeURL)
        XCTAssertEqual(store.manifest.tiles.count, 1)
        XCTAssertEqual(store.manifest.tiles[0].window, [0, 0, 300, 200])
        XCTAssertEqual(store.manifest.tiles[0].bounds, [500_000, 4_999_600, 500_600, 5_000_000])
    }

    func testScaleHalvesTheGridAndKeepsCoordinates() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("big.tif").path, width: 2000, height: 1200) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("half.geosam2")
        XCTAssertTrue(try encode(raster, into: storeURL) { $0.scale = 0.5 }.complete)
        let m = try FeatureStore.open(storeURL).manifest
        XCTAssertEqual([m.encoding.width, m.encoding.height], [1000, 600])
        XCTAssertEqual(m.encoding.geoTransform, [500_000, 4, 0, 5_000_000, 0, -4])
        XCTAssertEqual(m.tiles.count, 1)
        XCTAssertEqual(m.tiles[0].bounds, [500_000, 4_997_600, 504_000, 5_000_000], "the half-resolution tile covers the whole raster")
    }

    func testResumeRefusesOtherParametersAndKeepsTiles() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1100, height: 900) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("r.geosam2")
        let first = try encode(raster, into: storeURL) { $0.shard = (0, 2) }
        XCTAssertFalse(first.complete)
        XCTAssertEqual(first.encoded, 1)
        let before = try TestSupport.contents(of: storeURL)

        XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.bands = [3, 2, 1] }) { error in
            XCTAssertTrue("\(error)".contains("differ from this encode in the bands"), "\(error)")
        }
        XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.stretch = .minMax })
        XCTAssertEqual(try TestSupport.contents(of: storeURL), before, "a refused run must not touch the store")

        let resumed = try encode(raster, into: storeURL)
        XCTAssertEqual(resumed.skipped, 1)
        XCTAssertEqual(resumed.encoded, 1)
        XCTAssertTrue(resumed.complete)

        let forced = try encode(raster, into: storeURL) { $0.bands = [3, 2, 1]; $0.force = true }
        XCTAssertEqual(forced.encoded, 2)
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.encoding.bands.rgb, [3, 2, 1])
    }

    func testShardsTogetherAreByteIdenticalToOneRun() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 2200, height: 1100) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let single = dir.appendingPathComponent("single.geosam2"), sharded = dir.appendingPathComponent("sharded.geosam2")
        XCTAssertTrue(try encode(raster, into: single).complete)
        var completions: [Bool] = []
        for k in [2, 0, 1] { completions.append(try encode(raster, into: sharded) { $0.shard = (k, 3) }.complete) }
        XCTAssertEqual(completions, [false, false, true])
        let a = try TestSupport.contents(of: single), b = try TestSupport.contents(of: sharded)
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted())
        XCTAssertEqual(a.count, 8, "manifest, the writers' lock and 6 tiles")
        for key in a.keys { XCTAssertEqual(a[key], b[key], "\(key) differs") }
    }

    func testAutomaticConcurrencyRunsATilePerCoreWithinMemory() throws {
        let gib = 1 << 30
        func split(_ cores: Int, tiles: Int? = nil, dim: Int = 96, memory: Int? = 64 * gib) throws -> [Int] {
            let c = try EncodeConcurrency.automatic(cores: cores, tilesInFlight: tiles, embedDim: dim, availableMemory: memory)
            return [c.tilesInFlight, c.coresPerTile]
        }
        XCTAssertEqual(try split(1), [1, 1])
        XCTAssertEqual(try split(2), [2, 1])
        XCTAssertEqual(try split(12), [12, 1])
        XCTAssertEqual(try split(64), [16, 4], "at most 16 tiles; the cores shared out")
        XCTAssertEqual(try split(2, tiles: 1), [1, 2])
        XCTAssertEqual(try split(32, memory: 2 * gib), [3, 10], "half of 2 GiB at 320 MiB a tile")
        XCTAssertEqual(try split(32, dim: 144, memory: 2 * gib), [2, 16], "a wider trunk needs more per tile")
        XCTAssertEqual(try split(8, memory: 100 << 20), [1, 8], "always one tile")
        XCTAssertEqual(try split(8, memory: nil), [8, 1])
        XCTAssertThrowsError(try EncodeConcurrency(tilesInFlight: 0, coresPerTile: 1))
    }

    /// Tiles in flight (each on a share of the cores) and one tile at a time on one or all cores
    /// write the same bytes: every tile's arithmetic is the same whatever runs beside it.
    func testTilesInFlightWriteTheSameBytesAsOneTileAtATime() throws {
        let dir = try TestSupport.temporaryDirectory()
        // 3×2 tiles, the middle column without valid pixels (empty tiles come from the reader).
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 3072, height: 1100, nodata: 0) { b, x, y in
            (1024..<2048).contains(x) ? 0 : TestSupport.scene(b, x, y)
        }
        var stores: [[String: Data]] = []
        for (tiles, cores) in [(1, 1), (1, 2), (3, 1), (2, 2), (5, 1)] {  // 5 in flight: two readers
            let store = dir.appendingPathComponent("\(tiles)x\(cores).geosam2")
            var options = EncodeOptions()
            (options.levels, options.overlap) = (0, 0)
            options.concurrency = try EncodeConcurrency(tilesInFlight: tiles, coresPerTile: cores)
            var seen: [EncodeProgress] = []
            let summary = try RasterEncoder.run(raster: raster, store: store, model: try TestSupport.microModel(), options: options) { seen.append($0) }
            XCTAssertTrue(summary.complete)
            XCTAssertEqual([summary.encoded, summary.empty], [4, 2], "\(tiles)×\(cores)")
            XCTAssertEqual(seen.map(\.finished), Array(0...6), "one report per tile, on the calling thread")
            XCTAssertEqual(Set(seen.compactMap(\.lastTile)).count, 6)
            stores.append(try TestSupport.contents(of: store))
        }
        for other in stores.dropFirst() {
            XCTAssertEqual(other.keys.sorted(), stores[0].keys.sorted())
            for key in other.keys where key != "manifest.json" { XCTAssertEqual(other[key], stores[0][key], "\(key) differs") }
        }
    }

    /// Pixels that cannot be read stop the run with a one-line error (a mosaic whose right-hand
    /// source went missing, as a network share or a bucket can); the tiles finished before stay,
    /// byte for byte what a clean run writes, and once the source is back a rerun completes the store.
    func testAReadErrorStopsTheRunAndKeepsFinishedTiles() throws {
        let dir = try TestSupport.temporaryDirectory()
        let transform = GeoTransform(originX: 500_000, pixelWidth: 2, originY: 5_000_000, pixelHeight: -2)
        let left = try TestSupport.makeRaster(at: dir.appendingPathComponent("left.tif").path, width: 2048, height: 1100,
                                              geoTransform: transform) { b, x, y in TestSupport.scene(b, x, y) }
        let right = try TestSupport.makeRaster(at: dir.appendingPathComponent("right.tif").path, width: 152, height: 1100,
                                               geoTransform: transform.translated(byPixelsX: 2048, y: 0)) { b, x, y in TestSupport.scene(b, x + 2048, y) }
        let mosaic = dir.appendingPathComponent("mosaic.vrt").path
        _ = try RasterDataset.buildVRT(at: mosaic, sources: [left, right])
        // 8-bit as is: planning reads no pixel, so the run meets the missing source at its third tile.
        let reference = dir.appendingPathComponent("reference.geosam2"), store = dir.appendingPathComponent("mosaic.geosam2")
        _ = try encode(mosaic, into: reference) { $0.stretch = .none }
        let aside = right + ".aside"
        try FileManager.default.moveItem(atPath: right, toPath: aside)
        XCTAssertThrowsError(try encode(mosaic, into: store) {
            $0.stretch = .none
            $0.concurrency = try? EncodeConcurrency(tilesInFlight: 2, coresPerTile: 1)
        }) { error in
            XCTAssertEqual("\(error)".split(separator: "\n").count, 1, "\(error)")
            XCTAssertTrue("\(error)".contains("right.tif"), "\(error)")
        }
        let expected = try TestSupport.contents(of: reference)
        let partial = try TestSupport.contents(of: store).filter { $0.key.hasPrefix("/tiles/") }
        XCTAssertFalse(partial.keys.contains("/tiles/r0000_c0002.safetensors"), "the tile over the missing source")
        XCTAssertTrue(partial.keys.allSatisfy { $0.contains("_c0000") || $0.contains("_c0001") }, "\(partial.keys.sorted())")
        for (key, data) in partial { XCTAssertEqual(data, expected[key], "\(key) differs from a clean run") }

        try FileManager.default.moveItem(atPath: aside, toPath: right)
        let summary = try encode(mosaic, into: store) { $0.stretch = .none }
        XCTAssertTrue(summary.complete)
        XCTAssertEqual(summary.skipped, partial.count)
        let resumed = try TestSupport.contents(of: store)
        for (key, data) in expected where key.hasPrefix("/tiles/") { XCTAssertEqual(resumed[key], data, "\(key) differs") }
    }

    /// A scene raster encoded twice: with the default feature dtype, and with `dtype`.
    func encodeTwice(width: Int, height: Int, defaultAnd dtype: String) throws -> (FeatureStore, FeatureStore) {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: width, height: height) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let first = dir.appendingPathComponent("default.geosam2"), second = dir.appendingPathComponent("\(dtype).geosam2")
        _ = try encode(raster, into: first)
        _ = try encode(raster, into: second) { $0.featureDType = dtype }
        return (try FeatureStore.open(first), try FeatureStore.open(second))
    }

    func fileSize(_ url: URL) throws -> Int { try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int ?? 0 }

    func testSixteenBitFeaturesKeepDecoderOutputsWithinParityTolerance() throws {
        let (h, f) = try encodeTwice(width: 800, height: 700, defaultAnd: "f32")
        XCTAssertLessThan(try fileSize(h.featuresURL(h.manifest.tiles[0])), try fileSize(f.featuresURL(f.manifest.tiles[0])))
        let model = try TestSupport.microModel().model
        let fh = try h.loadFeatures(h.manifest.tiles[0]), ff = try f.loadFeatures(f.manifest.tiles[0])
        for prompt in [Prompt(points: [PointPrompt(x: 700, y: 500, label: 1)]),
                       Prompt(points: [PointPrompt(x: 100, y: 100, label: 1), PointPrompt(x: 400, y: 300, label: 0)]),
                       Prompt(box: BoxPrompt(x0: 550, y0: 350, x1: 850, y1: 650))] {
            let a = try model.predict(fh, prompt: prompt, multimask: true), b = try model.predict(ff, prompt: prompt, multimask: true)
            XCTAssertLessThanOrEqual(a.lowResolutionLogits.maxAbsDifference(b.lowResolutionLogits), 1e-3)
            for (x, y) in zip(a.scores, b.scores) { XCTAssertEqual(x, y, accuracy: 1e-3) }
        }
    }

    func testCompressedCodesDecodeExactlyAsPlainQ16AndDamageIsAClearError() throws {
        let (compressed, plain) = try encodeTwice(width: 600, height: 500, defaultAnd: "q16")
        XCTAssertEqual(compressed.manifest.encoding.featureDType, "q16z", "q16z is the default for a new store")
        let tile = compressed.manifest.tiles[0]
        XCTAssertLessThan(try fileSize(compressed.featuresURL(tile)), try fileSize(plain.featuresURL(tile)))

        // Same codes, same arithmetic: the values are identical, channels-first and channels-last.
        let a = try SafetensorsFile(contentsOf: compressed.featuresURL(tile)), b = try SafetensorsFile(contentsOf: plain.featuresURL(tile))
        XCTAssertNil(a.info(FeatureStore.imageEmbeddingName), "q16z keeps no plain int16 tensor")
        for name in [FeatureStore.imageEmbeddingName] + FeatureStore.highResolutionNames {
            XCTAssertEqual(try FeatureDType.decode(name: name, from: a).toArray(), try FeatureDType.decode(name: name, from: b).toArray(), name)
            let lastA = try FeatureDType.decodeChannelsLast(name: name, from: a), lastB = try FeatureDType.decodeChannelsLast(name: name, from: b)
            XCTAssertEqual(lastA.shape, lastB.shape)
            XCTAssertEqual(lastA.toArray(), lastB.toArray(), name)
        }
        XCTAssertTrue(try compressed.verify().isComplete)

        // Flip bytes inside the zstd stream of the high bytes: a clear error naming the tensor.
        let file = compressed.featuresURL(tile)
        var bytes = [UInt8](try Data(contentsOf: file))
        let headerLength = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        let entry = try XCTUnwrap(header["high_res_feats_0.high"] as? [String: Any])
        let offsets = try XCTUnwrap(entry["data_offsets"] as? [Int])
        let middle = 8 + headerLength + (offsets[0] + offsets[1]) / 2
        for i in middle..<(middle + 64) { bytes[i] ^= 0x5A }
        try Data(bytes).write(to: file)
        // The loader refuses the tile on its checksum, before decoding; decoding regardless, zstd's
        // own frame checks name the tensor.
        XCTAssertThrowsError(try compressed.loadFeatures(tile)) { error in
            XCTAssertTrue("\(error)".hasPrefix("tile \(tile.id) is corrupt: CRC-32C"), "\(error)")
        }
        XCTAssertThrowsError(try FeatureDType.decode(name: "high_res_feats_0", from: try SafetensorsFile(contentsOf: file))) { error in
            XCTAssertTrue("\(error)".contains("high_res_feats_0.high: corrupt zstd stream"), "\(error)")
        }
        let report = try compressed.verify()
        XCTAssertFalse(report.isComplete)
        XCTAssertEqual(report.problems.count, 1, "\(report.problems)")

        // A stream that holds fewer bytes than the map: refused before decompressing.
        let short = try FeatureDType.compressFrames([UInt8](repeating: 7, count: 100), frames: 2)
        XCTAssertThrowsError(try short.withUnsafeBytes { try FeatureDType.decompressFrames($0, count: 101, name: "x") }) { error in
            XCTAssertTrue("\(error)".contains("holds 100 bytes, the map needs 101"), "\(error)")
        }
        XCTAssertEqual(try short.withUnsafeBytes { try FeatureDType.decompressFrames($0, count: 100, name: "x") }, [UInt8](repeating: 7, count: 100))
    }

    func testResumingWithoutADTypeKeepsTheStoresOwn() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1100, height: 500) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("r.geosam2")
        XCTAssertFalse(try encode(raster, into: storeURL) { $0.featureDType = "q16"; $0.shard = (0, 2) }.complete)
        let resumed = try encode(raster, into: storeURL)
        XCTAssertEqual(resumed.skipped, 1)
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.encoding.featureDType, "q16")
        XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.featureDType = "q16z" }) { error in
            XCTAssertTrue("\(error)".contains("differ from this encode in the feature dtype"), "\(error)")
        }
        XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.featureDType = "q12" }) { error in
            XCTAssertTrue("\(error)".contains("--dtype must be one of q16z, q16, f16, f32"), "\(error)")
        }
    }

    /// A new store records the precision chosen for this CPU; a resumed one keeps its own unless
    /// another is asked for, which is refused like any other parameter; tiles follow the store's
    /// precision; stores from before the field read as fp32.
    func testStoresRecordTheirEncoderPrecision() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1100, height: 500) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("r.geosam2")
        XCTAssertFalse(try encode(raster, into: storeURL) { $0.shard = (0, 2) }.complete)
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.model.encoderPrecision, EncoderPrecision.automatic)
        XCTAssertEqual(EncoderPrecision.automatic,
                       Accelerated.hasBFloat16 ? .bfloat16 : (Accelerated.hasFixed16 && !Accelerated.isAvailable ? .fixed16 : .float32))
        let other: EncoderPrecision = EncoderPrecision.automatic == .float32 ? .bfloat16 : .float32
        if other.isAvailable {
            XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.precision = other }) { error in
                XCTAssertTrue("\(error)".contains("differ from this encode in the encoder precision"), "\(error)")
            }
        }
        XCTAssertTrue(try encode(raster, into: storeURL).complete)

        // Both tiles are what the model computes at the store's precision.
        let store = try FeatureStore.open(storeURL)
        let source = try RasterSource(path: raster, bands: nil)
        for entry in store.manifest.tiles {
            let tile = Tile(row: entry.row, column: entry.column, x: entry.window[0], y: entry.window[1], width: entry.window[2],
                            height: entry.window[3])
            let (pixels, _, _) = try source.readTile(tile, size: 1024, stretch: store.manifest.encoding.stretch)
            let model = try TestSupport.microModel().model
            let image = try RGBImage(width: 1024, height: 1024, pixels: pixels)
            let stored = try store.loadFeatures(entry)
            let (same, fp32) = (try model.encode(image, precision: .automatic), try model.encode(image, precision: .float32))
            let spread = same.imageEmbedding.standardDeviation()
            XCTAssertLessThan(stored.imageEmbedding.maxAbsDifference(same.imageEmbedding) / spread, 1e-3, entry.id)
            if EncoderPrecision.automatic != .float32 {
                XCTAssertGreaterThan(same.imageEmbedding.maxAbsDifference(fp32.imageEmbedding) / spread, 1e-5,
                                     "\(EncoderPrecision.automatic.rawValue) is not fp32")
            }
        }

        // A manifest without the field (before 0.4) is an fp32 store.
        let text = try String(contentsOf: storeURL.appendingPathComponent("manifest.json"), encoding: .utf8)
        let old = text.split(separator: "\n").filter { !$0.contains("\"encoderPrecision\"") }.joined(separator: "\n")
        XCTAssertNotEqual(old, text)
        let manifest = try StoreManifest.decode(Data(old.utf8), from: "manifest.json")
        XCTAssertNil(manifest.model.encoderPrecision)
        XCTAssertEqual(manifest.model.precision, .float32)
    }

    func testNewStoresOverlapBy128AndResumedStoresKeepTheirOverlap() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 2000, height: 600) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        var options = EncodeOptions()
        options.levels = 0
        options.shard = (0, 2)
        let fresh = dir.appendingPathComponent("fresh.geosam2")
        _ = try RasterEncoder.run(raster: raster, store: fresh, model: model, options: options)
        let planned = try FeatureStore.open(fresh).manifest
        XCTAssertEqual(planned.encoding.overlap, EncodeOptions.defaultOverlap)
        XCTAssertEqual(EncodeOptions.defaultOverlap, 128)
        // Stride 896: origins 0, 896 and 976 (the last one ends at the raster's edge).
        XCTAssertEqual(planned.tiles.map { $0.window[0] }, [0, 896, 976])

        // A store made with no overlap (as every store before 0.3) resumes with its own grid.
        let old = dir.appendingPathComponent("old.geosam2")
        options.overlap = 0
        _ = try RasterEncoder.run(raster: raster, store: old, model: model, options: options)
        options.overlap = nil
        options.shard = nil
        let resumed = try RasterEncoder.run(raster: raster, store: old, model: model, options: options)
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(resumed.skipped, 1)
        XCTAssertEqual(try FeatureStore.open(old).manifest.encoding.overlap, 0)
        options.overlap = 128
        XCTAssertThrowsError(try RasterEncoder.run(raster: raster, store: old, model: model, options: options)) { error in
            XCTAssertTrue("\(error)".contains("tile grid"), "\(error)")
        }
    }

    func testForceIsRefusedWhileAnotherProcessWritesTheStore() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1100, height: 500) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("r.geosam2")
        XCTAssertTrue(try encode(raster, into: storeURL).complete)
        let before = try FeatureStore.open(storeURL)
        let files = try FileManager.default.contentsOfDirectory(atPath: before.tilesURL.path).sorted()
        do {
            // A server filling the store (or another encode) holds the writers' lock, shared.
            let serving = try before.lockForWriting()
            XCTAssertNoThrow(try before.lockForWriting(), "writers share the store")
            XCTAssertThrowsError(try encode(raster, into: storeURL) { $0.overlap = 128; $0.force = true }) { error in
                XCTAssertTrue("\(error)".contains("another geosam2"), "\(error)")
            }
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: before.tilesURL.path).sorted(), files, "no tile removed")
            withExtendedLifetime(serving) {}
        }
        // Once the writer is gone, --force replaces the tiles.
        XCTAssertTrue(try encode(raster, into: storeURL) { $0.overlap = 128; $0.force = true }.complete)
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.encoding.overlap, 128)
        // A writer that opened the store before it was replaced cannot write into the new one.
        XCTAssertThrowsError(try before.lockForWriting()) { error in
            XCTAssertTrue("\(error)".contains("was replaced"), "\(error)")
        }
        XCTAssertNoThrow(try FeatureStore.open(storeURL).lockForWriting())
    }

    func testFinalizingNeverWritesAnOlderManifestOverANewerOne() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 2100, height: 500) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let storeURL = dir.appendingPathComponent("r.geosam2")
        XCTAssertFalse(try encode(raster, into: storeURL) { $0.shard = (0, 2) }.complete)
        let stale = try FeatureStore.open(storeURL)  // e.g. a server's view of the store
        // Another process finishes level 0 and adds a pyramid level.
        XCTAssertFalse(try encode(raster, into: storeURL) { $0.levels = 1; $0.shard = (1, 2) }.complete)
        // Level 0 is complete, so the stale view would finalize it, dropping the new level.
        XCTAssertTrue(stale.manifest.tiles.allSatisfy { stale.state(of: $0) != .pending })
        XCTAssertFalse(try stale.finalizeIfComplete())
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.levelCount, 1, "the level added by the other process is kept")
        XCTAssertTrue(try encode(raster, into: storeURL) { $0.levels = nil }.complete)
        XCTAssertEqual(try FeatureStore.open(storeURL).manifest.levelCount, 1)
    }
}

