import Foundation
import GeoIO
import Kernels
import SAM2
import XCTest
@testable import GeoSegment

/// The feature pyramid: levels in the store, their pixels, routing by extent, escalation and the
/// full-resolution answer.
final class PyramidTests: XCTestCase {
    nonisolated(unsafe) static var fixture: (dir: URL, raster: String, store: FeatureStore, segmenter: Segmenter)?

    /// 2100×300 px (2 m pixels): level 0 has 3 tiles, level 1 (1050×150) 2, level 2 (525×75) 1.
    /// A nodata block at x 1501…1600 (odd start, so it does not fall on level-1 block edges).
    func setUpStore() throws -> (URL, String, FeatureStore, Segmenter) {
        if let f = Self.fixture { return f }
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("strip.tif").path, width: 2100, height: 300, nodata: 0) { b, x, y in
            (1501...1600).contains(x) ? 0 : TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        let url = dir.appendingPathComponent("strip.geosam2")
        var options = EncodeOptions()
        options.shard = (0, 2)
        _ = try RasterEncoder.run(raster: raster, store: url, model: model, options: options)
        options.shard = (1, 2)
        let summary = try RasterEncoder.run(raster: raster, store: url, model: model, options: options)
        XCTAssertTrue(summary.complete, "two shards encode every tile of every level")
        let store = try FeatureStore.open(url)
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256)
        Self.fixture = (dir, raster, store, segmenter)
        return (dir, raster, store, segmenter)
    }

    /// Map coordinates of continuous pixel position (c, r) of the encoded grid.
    func map(_ c: Double, _ r: Double) -> (x: Double, y: Double) { (500_000 + c * 2, 5_000_000 - r * 2) }

    func box(_ c0: Double, _ r0: Double, _ c1: Double, _ r1: Double) -> ObjectPrompt {
        let (a, b) = (map(c0, r1), map(c1, r0))
        return ObjectPrompt(points: [], box: MapBox(minX: a.x, minY: a.y, maxX: b.x, maxY: b.y))
    }

    func testLevelsArePlannedUntilOneTileHoldsTheRaster() throws {
        let (_, _, store, _) = try setUpStore()
        let m = store.manifest
        let levels = try XCTUnwrap(m.levels)
        XCTAssertEqual(levels.map(\.level), [1, 2])
        XCTAssertEqual(levels.map(\.width), [1050, 525])
        XCTAssertEqual(levels.map(\.height), [150, 75])
        XCTAssertEqual(levels.map(\.overlap), [256, 256])
        XCTAssertEqual(levels.map(\.tiles.count), [2, 1], "level 1: origins 0 and 26; level 2 fits one tile, so it is the last")
        XCTAssertEqual(levels[0].tiles.map(\.id), ["l1_r0000_c0000", "l1_r0000_c0001"])
        XCTAssertEqual(levels[0].tiles[1].window, [26, 0, 1024, 150])
        // Level pixels are 2^L times larger; the origin stays.
        XCTAssertEqual(levels[1].geoTransform, [500_000, 8, 0, 5_000_000, 0, -8])
        // Bounds stop at the raster's edge even where a level's last pixel reaches past it.
        XCTAssertEqual(levels[1].tiles[0].bounds, [500_000, 4_999_400, 504_200, 5_000_000])
        XCTAssertEqual(m.allTiles.count, 6)
        XCTAssertTrue(m.complete)
        XCTAssertTrue(try store.verify().isComplete)

        // A raster that fits one tile gets no level; --levels bounds the count; a bad count is refused.
        let dir = try TestSupport.temporaryDirectory()
        let small = try TestSupport.makeRaster(at: dir.appendingPathComponent("small.tif").path, width: 500, height: 400) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        var options = EncodeOptions()
        XCTAssertNil(try RasterEncoder.plan(source: try RasterSource(path: small, bands: nil), options: options, model: model).levels)
        options.levels = 1
        let source = try RasterSource(path: try XCTUnwrap(Self.fixture?.raster), bands: nil)
        XCTAssertEqual(try RasterEncoder.plan(source: source, options: options, model: model).levels?.count, 1)
        options.levels = 9
        XCTAssertThrowsError(try RasterEncoder.plan(source: source, options: options, model: model)) {
            XCTAssertTrue("\($0)".contains("--levels must be between 0 and 8"), "\($0)")
        }
    }

    /// Level pixels average their 2^L block with nodata left out (in the raster's own type: GDAL
    /// rounds for integer rasters); blocks cut by the raster edge average what is inside; a block
    /// of nodata only is invalid.
    func testLevelPixelsAverageTheirBlockLeavingNodataOut() throws {
        let dir = try TestSupport.temporaryDirectory()
        // 7×5, one band of x + 10·y, nodata (255) at (0, 0), (1, 0) and the whole block (4…5, 2…3).
        let path = try TestSupport.makeRaster(at: dir.appendingPathComponent("blocks.tif").path, width: 7, height: 5, bands: 1,
                                              nodata: 255) { _, x, y in
            (y == 0 && x < 2) || ((4...5).contains(x) && (2...3).contains(y)) ? 255 : Double(x + 10 * y)
        }
        let source = try RasterSource(path: path, bands: nil)
        let (values, valid) = try source.readLevelWindow(PixelWindow(x: 0, y: 0, width: 4, height: 3), level: 1)
        let v = try XCTUnwrap(values[1])
        func mean(_ xs: [(Int, Int)]) -> Float { Float((xs.map { Double($0.0 + 10 * $0.1) }.reduce(0, +) / Double(xs.count)).rounded()) }
        XCTAssertEqual(v[0], mean([(0, 1), (1, 1)]), accuracy: 1e-4, "nodata left out of the average")
        XCTAssertEqual(v[1], mean([(2, 0), (3, 0), (2, 1), (3, 1)]), accuracy: 1e-4)
        XCTAssertEqual(v[3], mean([(6, 0), (6, 1)]), accuracy: 1e-4, "the last column block holds one column")
        XCTAssertEqual(v[8], mean([(0, 4), (1, 4)]), accuracy: 1e-4, "the last row block holds one row")
        XCTAssertEqual(v[11], mean([(6, 4)]), accuracy: 1e-4, "the corner block holds one pixel")
        XCTAssertEqual(valid, [true, true, true, true, true, true, false, true, true, true, true, true], "block (4…5, 2…3) is all nodata")
        // Level 2: one block of 4×4 and the cut ones.
        let (v2, _) = try source.readLevelWindow(PixelWindow(x: 0, y: 0, width: 2, height: 2), level: 2)
        var inside: [(Int, Int)] = []
        for y in 0..<4 {
            for x in 0..<4 where !(y == 0 && x < 2) && !((4...5).contains(x) && (2...3).contains(y)) { inside.append((x, y)) }
        }
        XCTAssertEqual(try XCTUnwrap(v2[1])[0], mean(inside), accuracy: 1e-4)
        XCTAssertThrowsError(try source.readLevelWindow(PixelWindow(x: 0, y: 0, width: 5, height: 3), level: 1))
    }

    func testBoxesGoToTheFinestLevelThatHoldsThemAndAnswerAtFullResolution() throws {
        let (_, _, store, segmenter) = try setUpStore()
        // Inside one level-0 tile.
        let small = try segmenter.segment(box(100, 50, 400, 250))
        XCTAssertEqual([small.level], [0])
        XCTAssertFalse(small.clipped)
        // 1300 px wide: no level-0 tile holds it with its margin; a level-1 tile (2048 px) does.
        let wide = try segmenter.segment(box(200, 40, 1500, 260))
        XCTAssertEqual(wide.level, 1)
        XCTAssertEqual(wide.tile, "l1_r0000_c0000")
        XCTAssertEqual(wide.tiles, ["l1_r0000_c0000"])
        XCTAssertFalse(wide.clipped)
        // The answer is on the encoded grid: the tile's full-resolution footprint, 2 m pixels.
        XCTAssertEqual(wide.maskWidth, 2048)
        XCTAssertEqual(wide.maskHeight, 300)
        XCTAssertEqual(wide.maskTransform.coefficients, [500_000, 2, 0, 5_000_000, 0, -2])
        // Nodata is cut at full resolution: columns 1501…1600 are out, 1500 and 1601 may be in.
        let mask = wide.mask
        for y in 0..<wide.maskHeight { for x in 1501...1600 { XCTAssertEqual(mask[y * 2048 + x], 0) } }
        // The mask is the level-1 logits upsampled straight to 2048² and thresholded (then nodata cut).
        let tile = try XCTUnwrap(store.tile(id: wide.tile))
        let prepared = try segmenter.model.prepare(try store.loadFeatures(tile))
        let prompt = Prompt(points: [], box: BoxPrompt(x0: 100 - 0.5, y0: 20 - 0.5, x1: 750 - 0.5, y1: 130 - 0.5))
        let (logits, _) = try segmenter.model.decodeLogits(prepared, prompt: prompt, multimask: false)
        let upsampled = Transforms.upsample(logits, height: 2048, width: 2048)
        var expected = [UInt8](repeating: 0, count: 2048 * 300)
        for y in 0..<300 {
            for x in 0..<2048 where upsampled[flat: y * 2048 + x] > 0 && !(1501...1600).contains(x) && x < 2100 { expected[y * 2048 + x] = 1 }
        }
        XCTAssertEqual(mask, expected)
        // Polygons trace the same pixels.
        let back = try rasterize(geometries: wide.polygons, width: 2048, height: 300, geoTransform: wide.maskTransform)
        XCTAssertEqual(back, mask)

        // Nearly the whole raster: level 2.
        let whole = try segmenter.segment(box(20, 10, 2080, 290))
        XCTAssertEqual(whole.level, 2)
        XCTAssertEqual(whole.maskWidth, 2100)
        XCTAssertFalse(whole.clipped)
    }

    func testStoresWithoutLevelsAnswerClippedAndGainLevelsOnRequest() throws {
        let (dir, raster, _, _) = try setUpStore()
        let model = try TestSupport.microModel()
        let url = dir.appendingPathComponent("flat.geosam2")
        var options = EncodeOptions()
        options.levels = 0
        _ = try RasterEncoder.run(raster: raster, store: url, model: model, options: options)
        var store = try FeatureStore.open(url)
        XCTAssertNil(store.manifest.levels)
        let flat = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256)
        let wide = try flat.segment(box(200, 40, 1500, 260))
        XCTAssertEqual(wide.level, 0)
        XCTAssertTrue(wide.clipped, "no tile holds the box: answered by the nearest one, marked clipped")
        // Resuming without --levels keeps the store as it is; --levels 2 adds the levels and keeps
        // every level-0 file as it was.
        let before = try TestSupport.contents(of: url.appendingPathComponent("tiles"))
        let resumed = try RasterEncoder.run(raster: raster, store: url, model: model, options: EncodeOptions())
        XCTAssertEqual(resumed.encoded, 0)
        options.levels = 2
        let grown = try RasterEncoder.run(raster: raster, store: url, model: model, options: options)
        XCTAssertEqual(grown.encoded, 3)
        XCTAssertTrue(grown.complete)
        let after = try TestSupport.contents(of: url.appendingPathComponent("tiles"))
        for (name, data) in before { XCTAssertEqual(after[name], data, name) }
        store = try FeatureStore.open(url)
        XCTAssertEqual(store.manifest.levelCount, 2)
        // The same levels as a store made with them at once.
        let (_, _, reference, _) = try setUpStore()
        XCTAssertEqual(store.manifest.levels, reference.manifest.levels)
        // Fewer levels than the store has is refused.
        options.levels = 1
        XCTAssertThrowsError(try RasterEncoder.run(raster: raster, store: url, model: model, options: options)) {
            XCTAssertTrue("\($0)".contains("pyramid levels (2 vs 1)"), "\($0)")
        }
    }

    /// A click whose mask reaches an interior tile edge climbs while the coarser answer agrees.
    func testEscalationRules() throws {
        let level = PyramidLevel(level: 0, factor: 1, width: 2100, height: 300, transform: .identity, inverse: .identity, tiles: [])
        var tile = StoreManifest.TileEntry(id: "t", level: nil, row: 0, column: 1, window: [1024, 0, 1024, 300], bounds: [], geoTransform: [],
                                           state: .done, file: "")
        XCTAssertTrue(level.touchesInteriorEdge(PixelBox(minX: 1040, minY: 100, maxX: 1200, maxY: 200), of: tile), "near the left edge, x > 0")
        XCTAssertFalse(level.touchesInteriorEdge(PixelBox(minX: 1100, minY: 0, maxX: 1200, maxY: 300), of: tile), "raster edges don't count")
        XCTAssertTrue(level.touchesInteriorEdge(PixelBox(minX: 1100, minY: 10, maxX: 2030, maxY: 200), of: tile), "near the right edge")
        tile.window = [1076, 0, 1024, 300]
        XCTAssertFalse(level.touchesInteriorEdge(PixelBox(minX: 1100, minY: 10, maxX: 2099, maxY: 200), of: tile), "the right edge is the raster's")

        func answer(_ rows: [[(Int, Int)]], origin: (Int, Int), width: Int, score: Float) -> LevelAnswer {
            var b = RowRuns.Builder()
            for row in rows {
                for (lo, hi) in row { b.append(lo, hi) }
                b.endRow()
            }
            return LevelAnswer(route: Route(level: level, tile: tile, clipped: false), scores: [score], chosen: 0, runs: b.runs,
                               origin: origin, width: width, height: rows.count, transform: .identity, touchesInteriorEdge: true)
        }
        // Fine: 10 px on each of 2 rows in a 20-px-wide footprint at (100, 0); coarse: the same
        // plus 15 px beyond the fine footprint.
        let fine = answer([[(10, 20)], [(10, 20)]], origin: (100, 0), width: 20, score: 0.8)
        let coarse = answer([[(110, 135)], [(110, 120)]], origin: (0, 0), width: 300, score: 0.75)
        XCTAssertTrue(fine.agrees(with: coarse))
        XCTAssertFalse(fine.agrees(with: answer([[(110, 135)], [(110, 120)]], origin: (0, 0), width: 300, score: 0.6)), "score fell by 0.2")
        XCTAssertFalse(fine.agrees(with: answer([[(0, 100)], [(0, 100)]], origin: (0, 0), width: 300, score: 0.8)), "grew tenfold")
        XCTAssertFalse(fine.agrees(with: answer([[(110, 112)], [(110, 112)]], origin: (0, 0), width: 300, score: 0.8)), "IoU 0.2 inside the fine tile")
    }

    /// A click on the pyramid store: one object, never an error, and every tile it climbed through.
    func testClicksClimbOnlyWhileTheirMasksReachATileEdge() throws {
        let (_, _, _, segmenter) = try setUpStore()
        let (x, y) = map(1030.5, 150.5)
        let result = try segmenter.segment(ObjectPrompt(points: [MapPoint(x: x, y: y, label: 1)]))
        XCTAssertTrue(result.tiles.contains(result.tile), "the answering tile is one of those decoded")
        XCTAssertEqual(result.tiles.count, Set(result.tiles).count)
        XCTAssertTrue(result.tiles.count >= 1 && result.tiles.count <= 3)
        // Each tile of the path is on a coarser level than the one before.
        let levels = result.tiles.map { id in segmenter.store.tile(id: id)?.levelIndex ?? -1 }
        XCTAssertEqual(levels, levels.sorted())
        XCTAssertEqual(Set(levels).count, levels.count)
    }

    /// The plain upsampling (portable path, any level) gives the kernel's runs exactly.
    func testPlainUpsamplingMatchesTheKernel() throws {
        try XCTSkipUnless(Accelerated.hasPackedKernels, "no AVX-512 or AVX2 kernels")
        var rng = SplitMix64(state: 9)
        let logits = Tensor(shape: [256, 256], scalars: (0..<65536).map { i in Float(rng.range(-3, 3)) + Float(i % 256) / 256 - 0.5 })
        for (out, rows, columns) in [(1024, 1024, 1024), (2048, 300, 2048), (4096, 75, 2100)] {
            let kernel = try XCTUnwrap(AcceleratedOps.upsampleThresholdRuns(logits.pointer, height: 256, width: 256, outputHeight: out,
                                                                            outputWidth: out, rows: rows, columns: columns))
            let plain = MaskUpsampling.plainThresholdRuns(logits.pointer, height: 256, width: 256, outputHeight: out, outputWidth: out,
                                                          rows: rows, columns: columns)
            XCTAssertEqual(plain.starts, kernel.starts, "output \(out), \(rows) × \(columns)")
            XCTAssertEqual(plain.ends, kernel.ends)
            XCTAssertEqual(plain.rowOffsets, kernel.rowOffsets)
        }
    }

    func testSampleSceneHasObjectsOfThreeSizes() {
        var options = SampleScene.Options()
        options.width = 4000
        options.height = 3600
        let landmarks = SampleScene.landmarks(options)
        XCTAssertEqual(landmarks.map(\.name), ["lake", "forest", "field complex"])
        XCTAssertEqual(landmarks.map { $0.box[2] - $0.box[0] }, [300, 1500, 3000])
        for l in landmarks {
            XCTAssertTrue(l.box[0] >= 0 && l.box[1] >= 0 && l.box[2] <= 4000 && l.box[3] <= 3600, l.name)
        }
        // Boxes apart: no object lies on another's nominal box.
        for (i, a) in landmarks.enumerated() {
            for b in landmarks[(i + 1)...] {
                XCTAssertTrue(a.box[2] <= b.box[0] || b.box[2] <= a.box[0] || a.box[3] <= b.box[1] || b.box[3] <= a.box[1], "\(a.name) / \(b.name)")
            }
        }
        XCTAssertEqual(SampleScene.landmarks(SampleScene.Options()).map(\.name), ["lake", "forest"])
    }
}
