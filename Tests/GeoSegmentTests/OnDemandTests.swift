import Foundation
import GeoIO
import SAM2
import XCTest
@testable import GeoSegment

/// Encoding while serving: the order of the background work, prompts on pending tiles, stopping
/// and resuming, and a raster that breaks under the encoder.
final class OnDemandTests: XCTestCase {
    /// 2100×300 px (2 m pixels): 3 tiles at level 0, 2 at level 1, 1 at level 2.
    func makeRaster(in dir: URL) throws -> String {
        try TestSupport.makeRaster(at: dir.appendingPathComponent("strip.tif").path, width: 2100, height: 300) { b, x, y in
            TestSupport.scene(b, x, y)
        }
    }

    /// The strip raster in a fresh directory and a store `name` planned for it (nothing encoded).
    func plannedStore(_ name: String = "strip") throws
        -> (dir: URL, raster: String, model: EncoderModel, url: URL, store: FeatureStore, source: RasterSource) {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try makeRaster(in: dir)
        let model = try TestSupport.microModel()
        let url = dir.appendingPathComponent("\(name).geosam2")
        let (store, source) = try RasterEncoder.prepare(raster: raster, store: url, model: model, options: EncodeOptions())
        return (dir, raster, model, url, store, source)
    }

    func map(_ c: Double, _ r: Double) -> (x: Double, y: Double) { (500_000 + c * 2, 5_000_000 - r * 2) }

    func click(_ c: Double, _ r: Double) -> ObjectPrompt {
        let p = map(c, r)
        return ObjectPrompt(points: [MapPoint(x: p.x, y: p.y, label: 1)])
    }

    func tileBytes(_ store: FeatureStore) throws -> [String: Data] {
        var files: [String: Data] = [:]
        for tile in store.manifest.allTiles where store.state(of: tile) == .done {
            files[tile.id] = try Data(contentsOf: store.featuresURL(tile))
        }
        return files
    }

    func waitUntilComplete(_ encoder: OnDemandEncoder, seconds: Double = 300) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while !encoder.isComplete {
            guard Date() < deadline else { throw GeoSegmentError("the on-demand encoder did not finish in \(seconds) s") }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    func testBackgroundOrderIsCoarsestLevelThenNearestTheFocusFinerFirst() {
        func box(_ x: Double, _ w: Double) -> PixelBox { PixelBox(minX: x, minY: 0, maxX: x + w, maxY: 100) }
        let tiles: [(id: String, level: Int, footprint: PixelBox)] = [
            ("top", 2, box(0, 4000)), ("l1a", 1, box(0, 2000)), ("l1b", 1, box(1500, 2000)),
            ("a", 0, box(0, 1000)), ("b", 0, box(1000, 1000)), ("c", 0, box(2000, 1000)), ("d", 0, box(3000, 1000)),
        ]
        var pending = Set(tiles.map(\.id))
        var order: [String] = []
        while let (i, reason) = OnDemandEncoder.nextTile(among: tiles, pending: pending, failed: [], requested: [], focus: (3500, 50)) {
            XCTAssertEqual(reason, .background)
            order.append(tiles[i].id)
            pending.remove(tiles[i].id)
        }
        // The focus lies in d and l1b: both at distance 0, the finer first; then c (500 px from
        // the focus), then b and l1a (both 1500 px: the finer first), then a.
        XCTAssertEqual(order, ["top", "d", "l1b", "c", "b", "l1a", "a"])

        // A prompt's tile comes first, even over the coarsest level; failed tiles wait.
        let all = Set(tiles.map(\.id))
        let first = OnDemandEncoder.nextTile(among: tiles, pending: all, failed: [], requested: ["b", "a"], focus: (0, 0))
        XCTAssertEqual(first.map { tiles[$0.0].id }, "b")
        XCTAssertEqual(first?.1, .prompt)
        let skipping = OnDemandEncoder.nextTile(among: tiles, pending: all, failed: ["top", "b"], requested: ["b"], focus: (0, 0))
        XCTAssertEqual(skipping.map { tiles[$0.0].id }, "a", "a failed tile is not retried in the background")
        XCTAssertNil(OnDemandEncoder.nextTile(among: tiles, pending: [], failed: [], requested: ["a"], focus: (0, 0)))
    }

    func testAPromptOnAPendingTileIsAnsweredAsFromAFinishedStoreAndTheStoreEqualsAnEncodeRun() throws {
        let (dir, raster, model, url, store, source) = try plannedStore("served")

        // The reference: `geosam2 encode` all the way.
        let referenceURL = dir.appendingPathComponent("reference.geosam2")
        XCTAssertTrue(try RasterEncoder.run(raster: raster, store: referenceURL, model: model, options: EncodeOptions()).complete)
        let reference = try FeatureStore.open(referenceURL)
        let expected = try Segmenter(store: reference, model: model.model, checkpointSHA256: model.checkpointSHA256)
            .segment(click(1900, 150))

        XCTAssertEqual(store.manifest.allTiles.filter { store.state(of: $0) == .pending }.count, 6, "prepare encodes nothing")
        let encoder = try OnDemandEncoder(store: store, source: source, model: model)
        defer { encoder.stop() }
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256, onDemand: encoder)
        // The click's tile (the last level-0 tile) is the last the background would reach.
        let answer = try segmenter.segment(click(1900, 150))
        XCTAssertEqual(answer.tile, expected.tile)
        XCTAssertEqual(answer.tiles, expected.tiles)
        XCTAssertEqual(answer.score, expected.score)
        XCTAssertEqual(answer.mask, expected.mask)
        XCTAssertEqual(answer.polygons.map(\.wkt), expected.polygons.map(\.wkt))
        XCTAssertEqual(answer.tiles.first?.hasPrefix("r0000_"), true, "a click starts at level 0: \(answer.tiles)")
        XCTAssertTrue(answer.encodedOnDemand.contains(answer.tiles[0]), "the click's level-0 tile was encoded for it: \(answer.encodedOnDemand)")
        XCTAssertEqual(expected.encodedOnDemand, [])

        try waitUntilComplete(encoder)
        let status = encoder.status()
        XCTAssertTrue(status.complete)
        XCTAssertEqual(status.finished, 6)
        XCTAssertEqual(status.levels.map(\.tiles), [3, 2, 1])
        XCTAssertNil(status.current)
        // Finalized like an encode run, and tile for tile the same bytes.
        let deadline = Date().addingTimeInterval(30)
        while !(try FeatureStore.open(url).manifest.complete), Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertTrue(try FeatureStore.open(url).manifest.complete)
        XCTAssertEqual(try tileBytes(store), try tileBytes(reference))
        XCTAssertTrue(try store.verify().isComplete)
        let again = try RasterEncoder.run(raster: raster, store: url, model: model, options: EncodeOptions())
        XCTAssertEqual(again.encoded, 0)
        XCTAssertEqual(again.skipped, 6)
    }

    func testStoppingKeepsWhatWasEncodedAndEncodeResumes() throws {
        let (_, raster, model, url, store, source) = try plannedStore()
        let encoder = try OnDemandEncoder(store: store, source: source, model: model)
        let deadline = Date().addingTimeInterval(120)
        while encoder.status().finished < 2, Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        encoder.stop()
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256, onDemand: encoder)
        // Let the tile in progress land (the encoder stops after it).
        while encoder.status().current != nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        XCTAssertNil(encoder.status().current)
        let kept = try tileBytes(store)
        XCTAssertGreaterThanOrEqual(kept.count, 2)
        XCTAssertTrue(kept.keys.contains("l2_r0000_c0000"), "the coarsest level comes first: \(kept.keys.sorted())")
        if let pendingTile = store.manifest.tiles.first(where: { store.state(of: $0) == .pending && $0.window[2] == 1024 }) {
            // A prompt on a tile still pending is refused now, with why.
            let column = Double(pendingTile.window[0] + 512)
            XCTAssertThrowsError(try segmenter.segment(click(column, 150))) { error in
                XCTAssertTrue("\(error)".contains("stopping"), "\(error)")
            }
        }
        let resumed = try RasterEncoder.run(raster: raster, store: url, model: model, options: EncodeOptions())
        XCTAssertTrue(resumed.complete)
        XCTAssertEqual(resumed.skipped, kept.count, "encode skips every tile encoded while serving")
        XCTAssertEqual(resumed.encoded + resumed.skipped, 6)
        let final = try tileBytes(try FeatureStore.open(url))
        for (id, data) in kept { XCTAssertEqual(final[id], data, "tile \(id) untouched") }
    }

    func testARasterThatBreaksIsAnErrorForThePromptNotACrash() throws {
        let (_, raster, model, _, store, _) = try plannedStore()
        // The raster is truncated after the store was planned: every read past its header fails.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: raster))
        try bytes.prefix(4096).write(to: URL(fileURLWithPath: raster))
        let broken: RasterSource
        do {
            broken = try RasterSource(path: raster, bands: nil, scale: 1, crs: nil)
        } catch {
            // GDAL may already refuse to open it: that is the one-line error `serve` reports.
            XCTAssertFalse("\(error)".isEmpty)
            return
        }
        let encoder = try OnDemandEncoder(store: store, source: broken, model: model)
        defer { encoder.stop() }
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256, onDemand: encoder)
        XCTAssertThrowsError(try segmenter.segment(click(100, 150))) { error in
            XCTAssertTrue("\(error)".contains("could not be encoded"), "\(error)")
        }
        XCTAssertFalse(encoder.status().failed.isEmpty)
        XCTAssertEqual(try tileBytes(store).count, 0)
    }

    func testACoarseAnswerIsCutByNodataWhileLevelZeroIsPending() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("strip.tif").path, width: 2100, height: 300, nodata: 0) { b, x, y in
            (1501...1600).contains(x) ? 0 : TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        let (store, source) = try RasterEncoder.prepare(raster: raster, store: dir.appendingPathComponent("strip.geosam2"), model: model,
                                                        options: EncodeOptions())
        // Only the coarser levels are encoded, as early in a server's on-demand work.
        for entry in store.manifest.levels?.flatMap(\.tiles) ?? [] {
            _ = try RasterEncoder.encode(entry, from: source, into: store, model: model)
        }
        XCTAssertTrue(store.manifest.tiles.allSatisfy { store.state(of: $0) == .pending })
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256)
        let (a, b) = (map(200, 260), map(1500, 40))
        let wide = try segmenter.segment(ObjectPrompt(points: [], box: MapBox(minX: a.x, minY: a.y, maxX: b.x, maxY: b.y)))
        XCTAssertEqual(wide.level, 1)
        let mask = wide.mask
        XCTAssertGreaterThan(mask.reduce(0) { $0 + Int($1) }, 0)
        // Level-1 pixels 751…799 hold only nodata (native 1502…1599): cut at full resolution by
        // the level-1 tile's own validity, since no level-0 tile is there to say better.
        for y in 0..<wide.maskHeight { for x in 1502...1599 { XCTAssertEqual(mask[y * wide.maskWidth + x], 0, "x = \(x)") } }
    }
}
