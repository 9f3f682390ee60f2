import Foundation
import GeoIO
import SAM2
import XCTest
@testable import GeoSegment

/// Masks → polygons → rasterized back must give the same pixels.
final class MaskRoundTripTests: XCTestCase {
    /// A mask with a ring (hole), several components, and pixels on every edge of the grid.
    func sampleMask(width: Int, height: Int) -> [UInt8] {
        var m = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let ring = (x - 40) * (x - 40) + (y - 30) * (y - 30)
                if ring < 20 * 20 && ring >= 8 * 8 { m[y * width + x] = 1 }    // annulus: a hole
                if x >= 70 && x < 90 && y >= 5 && y < 15 { m[y * width + x] = 1 }  // a rectangle
                if x < 3 || y == height - 1 { m[y * width + x] = 1 }              // touching the edges
                if x == width - 1 && y < 10 { m[y * width + x] = 1 }
                if (x * 7 + y * 3) % 29 == 0 && x > 100 { m[y * width + x] = 1 }  // speckle
            }
        }
        return m
    }

    func roundTrip(_ transform: GeoTransform, srs: SpatialReference) throws {
        let (w, h) = (130, 64)
        let mask = sampleMask(width: w, height: h)
        let polygons = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: transform, options: PolygonOptions())
        XCTAssertGreaterThan(polygons.count, 5)
        XCTAssertTrue(polygons.contains { $0.polygonRings.first?.count ?? 0 > 1 }, "the annulus keeps its hole")
        let back = try rasterize(geometries: polygons, width: w, height: h, geoTransform: transform)
        XCTAssertEqual(back.map { $0 > 0 ? 1 : 0 }, mask.map { Int($0) }, "rasterized polygons differ from the mask")
        _ = srs
    }

    func testRoundTripInProjectedCRS() throws {
        try roundTrip(GeoTransform(originX: 500_000, pixelWidth: 0.5, originY: 4_000_000, pixelHeight: -0.5), srs: try SpatialReference(epsg: 32633))
    }

    func testRoundTripInGeographicCRS() throws {
        try roundTrip(GeoTransform(originX: 12.5, pixelWidth: 1e-5, originY: 41.9, pixelHeight: -1e-5), srs: try SpatialReference(epsg: 4326))
    }

    func testOptionsFilterSimplifyAndFillHoles() throws {
        let (w, h) = (130, 64)
        let mask = sampleMask(width: w, height: h)
        let t = GeoTransform(originX: 0, pixelWidth: 1, originY: 64, pixelHeight: -1)
        let all = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions())
        let big = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions(minArea: 50))
        XCTAssertTrue(big.allSatisfy { $0.area >= 50 })
        XCTAssertLessThan(big.count, all.count)
        let largest = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions(largestOnly: true))
        XCTAssertEqual(largest.count, 1)
        XCTAssertEqual(largest[0].area, all.map(\.area).max() ?? 0)
        let filled = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions(fillHoles: true))
        XCTAssertTrue(filled.allSatisfy { $0.polygonRings.first?.count == 1 })
        let simple = try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions(largestOnly: true, simplify: 2))
        XCTAssertLessThan(simple[0].wkb.count, largest[0].wkb.count)
        XCTAssertTrue(simple[0].isValid)
        XCTAssertThrowsError(try MaskVectorizer.polygons(mask: mask, width: w, height: h, geoTransform: t, options: PolygonOptions(minArea: -1)))
    }
}

/// Prompts in map coordinates through a real store (micro model).
final class SegmenterTests: XCTestCase {
    nonisolated(unsafe) static var fixture: (dir: URL, store: FeatureStore, segmenter: Segmenter)?

    /// A 1800×1100 raster (2×2 tiles) with a nodata strip on the left, encoded once for all tests.
    func setUpStore() throws -> (URL, FeatureStore, Segmenter) {
        if let f = Self.fixture { return f }
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("scene.tif").path, width: 1800, height: 1100, nodata: 0) { b, x, y in
            x < 40 ? 0 : TestSupport.scene(b, x, y)
        }
        let model = try TestSupport.microModel()
        let storeURL = dir.appendingPathComponent("scene.geosam2")
        // One level: these tests are about level 0 (PyramidTests has the levels).
        var options = EncodeOptions()
        options.levels = 0
        _ = try RasterEncoder.run(raster: raster, store: storeURL, model: model, options: options)
        let store = try FeatureStore.open(storeURL)
        let segmenter = try Segmenter(store: store, model: model.model, checkpointSHA256: model.checkpointSHA256)
        Self.fixture = (dir, store, segmenter)
        return (dir, store, segmenter)
    }

    /// Map coordinates of the centre of raster pixel (c, r): origin (500000, 5000000), 2 m pixels.
    func map(_ c: Double, _ r: Double) -> (Double, Double) { (500_000 + (c + 0.5) * 2, 5_000_000 - (r + 0.5) * 2) }

    func testPointReachesTheModelAtThePixelCentreOfTheChosenTile() throws {
        let (_, store, segmenter) = try setUpStore()
        let (x, y) = map(700, 500)
        let result = try segmenter.segment(ObjectPrompt(points: [MapPoint(x: x, y: y, label: 1)]))
        XCTAssertEqual(result.tile, "r0000_c0000")
        // The same prompt straight through SAM2 in tile pixels gives the same mask.
        let tile = try XCTUnwrap(store.tile(id: result.tile))
        let prepared = try segmenter.model.prepare(try store.loadFeatures(tile))
        let direct = try segmenter.model.predict(prepared, prompt: Prompt(points: [PointPrompt(x: 700, y: 500, label: 1)]), multimask: false)
        var expected = [UInt8](repeating: 0, count: 1024 * 1024)
        for i in 0..<expected.count where direct.masks[i] != 0 && i % 1024 >= 40 { expected[i] = 1 }
        XCTAssertEqual(result.mask, expected, "nodata pixels (x < 40) removed, the rest as SAM2 predicts")
        XCTAssertEqual(result.score, direct.scores[0])
        let back = try rasterize(geometries: result.polygons, width: 1024, height: 1024, geoTransform: result.maskTransform)
        XCTAssertEqual(back, result.mask, "polygons rasterize to the mask")
    }

    func testTileChoiceAndErrors() throws {
        let (_, _, segmenter) = try setUpStore()
        // Near the right edge only the last column's tile (x ≥ 776) holds the point.
        let (ex, ey) = map(1700, 100)
        XCTAssertEqual(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: ex, y: ey, label: 1)])).tile, "r0000_c0001")
        // In the overlap, the tile whose centre is nearest to the prompts wins.
        let (ox, oy) = map(1000, 300)
        XCTAssertEqual(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: ox, y: oy, label: 1)])).tile, "r0000_c0001")
        let (ax, ay) = map(800, 300)
        XCTAssertEqual(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: ax, y: ay, label: 1)])).tile, "r0000_c0000")
        // Prompts no single tile covers, on a store without levels: the nearest tile answers, clipped.
        let (p1, q1) = map(10, 10), (p2, q2) = map(1790, 1090)
        let apart = try segmenter.segment(ObjectPrompt(points: [MapPoint(x: p1, y: q1, label: 1), MapPoint(x: p2, y: q2, label: 1)]))
        XCTAssertTrue(apart.clipped)
        XCTAssertEqual(apart.level, 0)
        XCTAssertThrowsError(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: 400_000, y: 5_000_000, label: 1)]))) {
            XCTAssertTrue("\($0)".contains("outside the raster"), "\($0)")
        }
        XCTAssertThrowsError(try segmenter.segment(ObjectPrompt())) { XCTAssertTrue("\($0)".contains("empty prompt")) }
        XCTAssertThrowsError(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: ex, y: ey, label: 2)])))
        XCTAssertThrowsError(try segmenter.segment(ObjectPrompt(points: [MapPoint(x: .nan, y: ey, label: 1)])))
    }

    func testPromptsInAnotherCRSGiveTheSameObject() throws {
        let (_, store, segmenter) = try setUpStore()
        let (x, y) = map(300, 600), (bx0, by0) = map(250, 700), (bx1, by1) = map(420, 520)
        let native = try segmenter.segment(ObjectPrompt(points: [MapPoint(x: x, y: y, label: 1)],
                                                        box: MapBox(minX: bx0, minY: by0, maxX: bx1, maxY: by1)))
        let toWGS84 = try CoordinateTransformation(from: try SpatialReference(epsg: 32633), to: try SpatialReference(epsg: 4326))
        let p = try toWGS84.transform(x: x, y: y)
        let corners = try toWGS84.transform(points: [Coordinate(x: bx0, y: by0), Coordinate(x: bx1, y: by1)])
        // A box given in WGS 84 is its envelope in the store CRS: nearly the same box for a small area.
        let geographic = try segmenter.segment(ObjectPrompt(points: [MapPoint(x: p.x, y: p.y, label: 1)],
                                                            box: MapBox(minX: corners[0].x, minY: corners[0].y, maxX: corners[1].x, maxY: corners[1].y),
                                                            crs: "EPSG:4326"))
        XCTAssertEqual(geographic.tile, native.tile)
        XCTAssertEqual(geographic.prompt.points[0].x, x, accuracy: 1e-3)
        XCTAssertEqual(geographic.prompt.points[0].y, y, accuracy: 1e-3)
        let differing = zip(geographic.mask, native.mask).filter { $0 != $1 }.count
        XCTAssertLessThan(Double(differing) / Double(native.mask.count), 0.001)
        _ = store
    }

    func testSessionCommitsUndoesAndPersistsInEveryFormat() throws {
        let (dir, _, segmenter) = try setUpStore()
        for ext in ["gpkg", "shp", "geojson", "fgb"] {
            let output = dir.appendingPathComponent("objects-\(UUID().uuidString.prefix(6)).\(ext)").path
            let session = try SegmentationSession(segmenter: segmenter, outputPath: output, options: PolygonOptions(minArea: 10))
            let (x, y) = map(700, 500), (bx, by) = map(650, 450)
            session.add(MapPoint(x: x, y: y, label: 1))
            session.add(MapPoint(x: bx, y: by, label: 0))
            session.undoPrompt()
            XCTAssertEqual(session.prompt.points.count, 1)
            let first = try session.commit()
            XCTAssertEqual(first.objectID, 1)
            XCTAssertTrue(session.prompt.isEmpty, "commit starts a new object")
            let (x2, y2) = map(1500, 900)
            session.add(MapPoint(x: x2, y: y2, label: 1))
            let second = try session.commit()
            XCTAssertEqual(second.objectID, 2)

            var saved = try VectorExporter.read(output)
            XCTAssertEqual(Set(saved.compactMap { $0.attributes["object_id"]?.intValue }), [1, 2], ext)
            let attributes = try XCTUnwrap(saved.first?.attributes)
            for name in ["score", "area", "area_m2", "perimeter", "n_fg", "n_bg", "has_box", "tile", "source", "model", "created", "prompts"] {
                XCTAssertNotNil(attributes[name], "\(ext): attribute \(name) missing")
            }
            XCTAssertEqual(attributes["n_fg"]?.intValue, 1)
            XCTAssertTrue(attributes["model"]?.stringValue?.contains(segmenter.store.manifest.model.checkpointSHA256) ?? false)

            XCTAssertEqual(try session.undoCommit(), 2)
            saved = try VectorExporter.read(output)
            XCTAssertEqual(Set(saved.compactMap { $0.attributes["object_id"]?.intValue }), [1], "\(ext): undo removes only the last object")

            // A new session on the same file continues the numbering and keeps what is there. A
            // GeoPackage remembers that id 2 was given (its counter); the other formats only know
            // the ids they hold.
            let again = try SegmentationSession(segmenter: segmenter, outputPath: output)
            again.add(MapPoint(x: x2, y: y2, label: 1))
            let expected = ext == "gpkg" ? 3 : 2
            XCTAssertEqual(try again.commit().objectID, expected, ext)
            XCTAssertEqual(Set(try VectorExporter.read(output).compactMap { $0.attributes["object_id"]?.intValue }), [1, expected], ext)
        }
    }

    func testGeoJSONIsWGS84AndAreasAreMetric() throws {
        let (dir, _, segmenter) = try setUpStore()
        let output = dir.appendingPathComponent("wgs84.geojson").path
        let session = try SegmentationSession(segmenter: segmenter, outputPath: output, options: PolygonOptions(largestOnly: true))
        let (x, y) = map(700, 500)
        session.add(MapPoint(x: x, y: y, label: 1))
        let record = try session.commit()
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: output))) as? [String: Any]
        let feature = try XCTUnwrap((json?["features"] as? [[String: Any]])?.first)
        let ring = try XCTUnwrap(((feature["geometry"] as? [String: Any])?["coordinates"] as? [[[Double]]])?.first)
        XCTAssertTrue(ring.allSatisfy { (14.9...15.1).contains($0[0]) && (45.0...45.2).contains($0[1]) }, "lon/lat of UTM 33N near (500 km, 5000 km)")
        let props = try XCTUnwrap(feature["properties"] as? [String: Any])
        let area = try XCTUnwrap(props["area"] as? Double), areaM2 = try XCTUnwrap(props["area_m2"] as? Double)
        XCTAssertEqual(area, areaM2, "UTM units are metres")
        XCTAssertEqual(area, record.result.polygons[0].area)
        XCTAssertEqual(area.truncatingRemainder(dividingBy: 4), 0, "areas are whole 2 m × 2 m pixels")
    }

    func testFailedRewriteKeepsTheOriginalFile() throws {
        let (dir, _, segmenter) = try setUpStore()
        let output = dir.appendingPathComponent("keep.geojson").path
        let session = try SegmentationSession(segmenter: segmenter, outputPath: output)
        let (x, y) = map(700, 500)
        session.add(MapPoint(x: x, y: y, label: 1))
        try session.commit()
        let before = try Data(contentsOf: URL(fileURLWithPath: output))
        XCTAssertThrowsError(try VectorExporter.modify(path: output, format: .geojson) { _ in throw GeoSegmentError("simulated failure") })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)), before)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }, [], "no scratch left")
    }
}
