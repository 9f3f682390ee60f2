import Foundation
import GeoIO
import Kernels
import SAM2
import XCTest
@testable import GeoSegment

/// `generate` across tiles: objects over seams and corners come out once and whole; resuming,
/// shards and boxes on a real store.
final class GenerateTests: XCTestCase {
    /// An object of the synthetic scene, in encoded-grid pixels.
    enum Shape {
        case rectangle(x0: Double, y0: Double, x1: Double, y1: Double)
        case disc(cx: Double, cy: Double, r: Double)

        func contains(_ x: Double, _ y: Double) -> Bool {
            switch self {
            case .rectangle(let x0, let y0, let x1, let y1): return x >= x0 && x < x1 && y >= y0 && y < y1
            case .disc(let cx, let cy, let r): return (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r
            }
        }

        var box: PixelBox {
            switch self {
            case .rectangle(let x0, let y0, let x1, let y1): return PixelBox(minX: x0, minY: y0, maxX: x1, maxY: y1)
            case .disc(let cx, let cy, let r): return PixelBox(minX: cx - r, minY: cy - r, maxX: cx + r, maxY: cy + r)
            }
        }

        var area: Double {
            switch self {
            case .rectangle(let x0, let y0, let x1, let y1): return (x1 - x0) * (y1 - y0)
            case .disc(_, _, let r): return Double.pi * r * r
            }
        }
    }

    /// What an ideal model would give on each tile: every object's part inside the tile's window,
    /// at the tile's level (a level pixel is in when the encoded-grid point at its centre is).
    struct IdealMasks: TileMaskSource {
        let shapes: [Shape]
        let tileSize: Int

        func masks(of tile: StoreManifest.TileEntry, on level: PyramidLevel) throws -> [TileMask] {
            let f = Double(level.factor)
            return shapes.enumerated().compactMap { k, shape in
                var mask = [UInt8](repeating: 0, count: tileSize * tileSize)
                for y in 0..<tile.window[3] {
                    for x in 0..<tile.window[2] where shape.contains((Double(tile.window[0] + x) + 0.5) * f, (Double(tile.window[1] + y) + 0.5) * f) {
                        mask[y * tileSize + x] = 1
                    }
                }
                let runs = mask.withUnsafeBufferPointer { RowRuns($0, width: tileSize, height: tileSize) }
                // Scores differ per object so that nothing ties.
                return TileMask.clipped(runs: runs, to: tile, validity: nil, on: level, score: 0.9 - Float(k) * 0.01, stability: 0.97,
                                        point: Coordinate(x: 10, y: 10), edgeTolerance: 20)
            }
        }
    }

    /// A 3 × 3-tile raster (2816² with the 128 px overlap) planned as a store (nothing encoded:
    /// the ideal masks need no features).
    func plannedGrid() throws -> (dir: URL, segmenter: Segmenter) {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("grid.tif").path, width: 2816, height: 2816) { b, x, y in
            Double((x / 64 + y / 64 + b) % 200)
        }
        let model = try TestSupport.microModel()
        let (store, _) = try RasterEncoder.prepare(raster: raster, store: dir.appendingPathComponent("grid.geosam2"), model: model,
                                                   options: EncodeOptions())
        XCTAssertEqual(store.manifest.tiles.count, 9, "the test wants a 3 × 3 grid")
        return (dir, try Segmenter(store: store, model: model.model, checkpointSHA256: nil))
    }

    /// Objects over vertical and horizontal seams, over a four-tile corner, longer than a tile,
    /// on the raster's edge, and inside one tile.
    let shapes: [Shape] = [
        .disc(cx: 960, cy: 400, r: 40),                                // inside the overlap of two tiles: seen whole by both
        .rectangle(x0: 700, y0: 1300, x1: 1300, y1: 1420),             // over a seam, no tile holds it whole
        .disc(cx: 960, cy: 960, r: 190),                               // over the corner of four tiles
        .rectangle(x0: 300, y0: 2200, x1: 2400, y1: 2330),             // across three tiles
        .rectangle(x0: 0, y0: 600, x1: 150, y1: 700),                  // on the raster's edge
        .disc(cx: 2300, cy: 300, r: 100),                              // inside one tile
        .rectangle(x0: 1850, y0: 1850, x1: 2000, y1: 2000),            // in the overlap of four tiles
    ]

    func testEveryObjectComesOutOnceAndWholeAcrossSeamsAndCorners() throws {
        let (dir, segmenter) = try plannedGrid()
        defer { try? FileManager.default.removeItem(at: dir) }
        let levelCount = segmenter.levels.count
        XCTAssertGreaterThan(levelCount, 1, "the store should have pyramid levels")
        for levels in [[0], nil] as [[Int]?] {
            var options = GenerateOptions()
            options.levels = levels
            let generator = try RasterMaskGenerator(segmenter: segmenter, options: options,
                                                    source: IdealMasks(shapes: shapes, tileSize: segmenter.tileSize))
            let out = dir.appendingPathComponent("objects-\(levels?.count ?? levelCount).gpkg").path
            let summary = try generator.run(output: out)
            let features = try VectorExporter.read(out)
            let label = levels == nil ? "all levels" : "level 0 only"
            XCTAssertEqual(summary.objects, shapes.count, label)
            XCTAssertEqual(Set(features.compactMap { $0.attributes["object_id"]?.intValue }).count, shapes.count, label)
            let t = segmenter.levels[0].transform
            for (k, shape) in shapes.enumerated() {
                // Each object once: exactly one output whose envelope is the shape's box.
                let matches = features.filter { f in
                    guard let e = f.geometry?.envelope else { return false }
                    let lo = t.pixelToMap(x: shape.box.minX, y: shape.box.maxY), hi = t.pixelToMap(x: shape.box.maxX, y: shape.box.minY)
                    let slack = 2 * 2.0 * 4  // pixels of 2 m, up to a level-2 pixel
                    return abs(e.minX - lo.x) <= slack && abs(e.maxX - hi.x) <= slack && abs(e.minY - lo.y) <= slack && abs(e.maxY - hi.y) <= slack
                }
                XCTAssertEqual(matches.count, 1, "\(label): shape \(k) \(shape) came out \(matches.count) times")
                guard let match = matches.first else { continue }
                // Whole: its area is the shape's (4 m² per pixel).
                let area = matches.reduce(0) { $0 + ($1.geometry?.area ?? 0) } / 4
                XCTAssertEqual(area, shape.area, accuracy: 0.03 * shape.area, "\(label): shape \(k) is not whole")
                let tiles = match.attributes["tiles"]?.stringValue ?? ""
                if levels == [0], k == 2 { XCTAssertEqual(tiles.split(separator: ",").count, 4, "the corner disc merges four pieces") }
                if levels == [0], k == 1 { XCTAssertEqual(tiles.split(separator: ",").count, 2, "the seam rectangle merges two pieces") }
                XCTAssertNotNil(match.attributes["stability"]?.doubleValue)
            }
            if levels == nil {
                // Finer levels win where they hold an object whole; the long rectangle needs a coarser one.
                let levelsUsed = features.compactMap { $0.attributes["level"]?.intValue }
                XCTAssertTrue(levelsUsed.contains(0))
                XCTAssertTrue(levelsUsed.contains { $0 > 0 })
            }
        }
    }

    func testPartsResumeAndShardsMergeToTheSameResult() throws {
        let (dir, segmenter) = try plannedGrid()
        defer { try? FileManager.default.removeItem(at: dir) }
        var options = GenerateOptions()
        options.levels = [0]
        let generator = try RasterMaskGenerator(segmenter: segmenter, options: options,
                                                source: IdealMasks(shapes: shapes, tileSize: segmenter.tileSize))
        let single = dir.appendingPathComponent("single.gpkg").path
        let first = try generator.run(output: single)
        XCTAssertEqual(first.segmented, 9)
        let again = try generator.run(output: single)
        XCTAssertEqual(again.segmented, 0)
        XCTAssertEqual(again.resumed, 9)
        XCTAssertEqual(again.objects, first.objects)
        // A damaged part is segmented again.
        let parts = RasterMaskGenerator.workDirectory(for: single)
        let part = try XCTUnwrap(try FileManager.default.contentsOfDirectory(atPath: parts.path).first { $0.hasSuffix(".masks") })
        var bytes = try Data(contentsOf: parts.appendingPathComponent(part))
        bytes[bytes.count / 2] ^= 0xFF
        try bytes.write(to: parts.appendingPathComponent(part))
        XCTAssertEqual(try generator.run(output: single).segmented, 1)
        // Shards in any order, then the merge: the same objects.
        let sharded = dir.appendingPathComponent("sharded.gpkg").path
        XCTAssertNil(try generator.run(output: sharded, shard: (1, 2)).objects)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sharded))
        _ = try generator.run(output: sharded, shard: (0, 2))
        let merged = try generator.run(output: sharded)
        XCTAssertEqual(merged.segmented, 0)
        func signature(_ path: String) throws -> [String] {
            try VectorExporter.read(path).map { f in
                "\(f.attributes["object_id"]?.intValue ?? -1) \(f.attributes["tiles"]?.stringValue ?? "") \(f.geometry?.wkt ?? "")"
            }.sorted()
        }
        XCTAssertEqual(try signature(sharded), try signature(single))
        // Other parameters refuse the parts, unless asked to start over.
        var other = options
        other.cropNMSThreshold = 0.5
        let changed = try RasterMaskGenerator(segmenter: segmenter, options: other, source: IdealMasks(shapes: shapes, tileSize: segmenter.tileSize))
        XCTAssertThrowsError(try changed.run(output: single)) { XCTAssertTrue("\($0)".contains("--fresh"), "\($0)") }
        XCTAssertEqual(try changed.run(output: single, fresh: true).segmented, 9)
        // A box: only the tiles and objects meeting it (the top-right disc's tile).
        let t = segmenter.levels[0].transform
        let (a, b) = (t.pixelToMap(x: 2200, y: 400), t.pixelToMap(x: 2400, y: 200))
        let boxed = dir.appendingPathComponent("boxed.gpkg").path
        let inBox = try generator.run(output: boxed, bbox: MapBox(minX: a.x, minY: a.y, maxX: b.x, maxY: b.y))
        XCTAssertEqual(inBox.tiles, 1)
        XCTAssertEqual(inBox.objects, 1)
    }

    /// The real pipeline on a small encoded store: SAM2's generator on every tile, polygons with
    /// the attributes `segment` writes.
    func testGenerateOnAnEncodedStoreWritesObjectsWithTheirAttributes() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("scene.tif").path, width: 1500, height: 900,
                                                value: TestSupport.scene)
        let model = try TestSupport.microModel()
        var encode = EncodeOptions()
        encode.levels = 0
        let url = dir.appendingPathComponent("scene.geosam2")
        _ = try RasterEncoder.run(raster: raster, store: url, model: model, options: encode)
        let store = try FeatureStore.open(url)
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: nil)
        var options = GenerateOptions()
        options.masks.pointsPerSide = 4
        options.masks.predictedIoUThreshold = 0
        options.masks.stabilityScoreThreshold = 0
        let out = dir.appendingPathComponent("all.gpkg").path
        let summary = try RasterMaskGenerator(segmenter: segmenter, options: options).run(output: out)
        XCTAssertEqual(summary.tiles, store.manifest.tiles.count)
        let features = try VectorExporter.read(out)
        XCTAssertFalse(features.isEmpty)
        XCTAssertEqual(summary.objects, Set(features.compactMap { $0.attributes["object_id"]?.intValue }).count)
        for f in features {
            for key in ["object_id", "score", "stability", "level", "tile", "tiles", "area_m2", "source", "model", "created", "prompts"] {
                XCTAssertNotNil(f.attributes[key].flatMap { $0 == .null ? nil : $0 }, "attribute \(key)")
            }
            XCTAssertEqual(f.geometry?.isValid, true)
        }
    }

    /// The command: progress as JSON lines, the objects written, a rerun resuming, and bad input
    /// as one-line errors with a non-zero exit.
    func testGenerateCommandReportsProgressResumesAndRefusesBadInput() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("scene.tif").path, width: 900, height: 700,
                                                value: TestSupport.scene)
        let store = dir.appendingPathComponent("scene.geosam2").path
        XCTAssertEqual(try TestSupport.run(["encode", raster, "--out", store, "--quiet"] + TestSupport.microModelArguments).status, 0)
        let out = dir.appendingPathComponent("everything.gpkg").path
        let args = ["generate", store, "--out", out, "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
                    "--progress", "json"] + TestSupport.microModelArguments
        let run = try TestSupport.run(args)
        XCTAssertEqual(run.status, 0, run.stderr)
        let events = run.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        XCTAssertEqual(events.first?["event"] as? String, "progress")
        XCTAssertTrue(events.contains { $0["event"] as? String == "merging" })
        let done = try XCTUnwrap(events.last)
        XCTAssertEqual(done["event"] as? String, "done")
        XCTAssertEqual(done["segmented"] as? Int, 1)
        let objects = try XCTUnwrap(done["objects"] as? Int)
        XCTAssertEqual(Set(try VectorExporter.read(out).compactMap { $0.attributes["object_id"]?.intValue }).count, objects)
        let again = try TestSupport.run(args)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertTrue(again.stdout.contains(#""resumed":1"#), again.stdout)
        for (bad, fragment) in [
            (["--bbox", "1,2,3"], "--bbox"), (["--bbox", "5,5,1,1"], "min must be below max"), (["--shard", "3/2"], "--shard"),
            (["--levels", "7"], "no level 7"), (["--box-nms-thresh", "2"], "NMS"), (["--points-per-side", "0"], "points per side"),
            (["--progress", "loud"], "--progress"),
        ] {
            let r = try TestSupport.run(args + bad + ["--fresh"])
            XCTAssertNotEqual(r.status, 0, "\(bad)")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(bad): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(fragment), "\(bad): \(r.stderr)")
        }
        let missing = try TestSupport.run(["generate", dir.appendingPathComponent("nothing").path, "--out", out] + TestSupport.microModelArguments)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertEqual(missing.stderr.split(separator: "\n").count, 1, missing.stderr)
        // The earlier output survived every refused run.
        XCTAssertEqual(Set(try VectorExporter.read(out).compactMap { $0.attributes["object_id"]?.intValue }).count, objects)
    }
}
