import Foundation
import GeoIO
import XCTest
@testable import GeoSegment

/// `geosam2 segment` as a user runs it: prompts from a vector file, polygons to another.
final class SegmentCommandTests: XCTestCase {
    func testBatchPromptsFromAVectorFile() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 1500, height: 900) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let store = dir.appendingPathComponent("r.geosam2").path
        let encoded = try TestSupport.run(["encode", raster, "--out", store, "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(encoded.status, 0, encoded.stderr)

        // Prompts in WGS 84 (a GeoPackage), grouped by `object`; one ungrouped box; one object outside.
        let toWGS84 = try CoordinateTransformation(from: try SpatialReference(epsg: 32633), to: try SpatialReference(epsg: 4326))
        func lonLat(_ c: Double, _ r: Double) throws -> Coordinate { try toWGS84.transform(x: 500_000 + (c + 0.5) * 2, y: 5_000_000 - (r + 0.5) * 2) }
        let prompts = dir.appendingPathComponent("prompts.gpkg").path
        let vector = try VectorDataset.create(driver: "GPKG", path: prompts)
        let layer = try vector.createLayer(name: "clicks", srs: try SpatialReference(epsg: 4326), geometryType: .unknown,
                                           fields: [FieldDefinition("object", type: .string), FieldDefinition("label", type: .integer)])
        for (object, c, r, label) in [("house", 700.0, 500.0, 1), ("house", 760.0, 520.0, 0), ("field", 1300.0, 200.0, 1), ("far", -500.0, 100.0, 1)] {
            let p = try lonLat(c, r)
            _ = try layer.add(Feature(geometry: .point(x: p.x, y: p.y), attributes: ["object": .string(object), "label": .integer(label)]))
        }
        let lo = try lonLat(100, 700), hi = try lonLat(300, 600)
        _ = try layer.add(Feature(geometry: .rectangle(Envelope(minX: lo.x, minY: lo.y, maxX: hi.x, maxY: hi.y)), attributes: [:]))
        try vector.flush()

        let out = dir.appendingPathComponent("objects.shp").path
        let result = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out, "--min-area", "4"] + TestSupport.microModelArguments)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertTrue(result.stdout.contains("object house: id 1"), result.stdout)
        XCTAssertTrue(result.stdout.contains("object field: id 2"), result.stdout)
        XCTAssertTrue(result.stdout.contains("id 3"), result.stdout)
        XCTAssertTrue(result.stdout.contains("3 objects written"), result.stdout)
        XCTAssertTrue(result.stderr.contains("object far: skipped: point 1 lies outside the raster"), result.stderr)
        let saved = try VectorExporter.read(out)
        let house = saved.filter { $0.attributes["object_id"]?.intValue == 1 }
        XCTAssertFalse(house.isEmpty)
        XCTAssertEqual(house.first?.attributes["n_fg"]?.intValue, 1)
        XCTAssertEqual(house.first?.attributes["n_bg"]?.intValue, 1)
        XCTAssertEqual(saved.first { $0.attributes["object_id"]?.intValue == 3 }?.attributes["has_box"]?.intValue, 1)
        XCTAssertTrue(saved.allSatisfy { ($0.geometry?.area ?? 0) >= 4 * 4 }, "--min-area 4 pixels of 2 m")

        // Appending keeps what was there and continues the ids; --mask-out writes GeoTIFFs.
        let again = try TestSupport.run(["segment", store, "--prompts", prompts, "--out", out, "--largest-only", "--mask-out",
                                         dir.appendingPathComponent("mask.tif").path, "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(again.status, 0, again.stderr)
        let after = try VectorExporter.read(out)
        XCTAssertEqual(Set(after.compactMap { $0.attributes["object_id"]?.intValue }), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(after.filter { ($0.attributes["object_id"]?.intValue ?? 0) > 3 }.count, 3, "--largest-only: one polygon per object")
        let mask = try RasterDataset.open(dir.appendingPathComponent("mask_4.tif").path)
        XCTAssertEqual(mask.geoTransform?.coefficients, [500_000, 2, 0, 5_000_000, 0, -2])
        XCTAssertEqual(mask.spatialReference?.epsgCode, 32633)

        // Bad input: one line, non-zero.
        for (arguments, expected) in [
            (["segment", store, "--prompts", dir.appendingPathComponent("none.geojson").path, "--out", out], "none.geojson"),
            (["segment", dir.path, "--prompts", prompts, "--out", out], "not a feature store"),
            (["segment", store, "--prompts", prompts, "--out", out, "--simplify", "-1"], "simplify"),
        ] {
            let r = try TestSupport.run(arguments + TestSupport.microModelArguments)
            XCTAssertNotEqual(r.status, 0, "\(arguments)")
            XCTAssertTrue(r.stderr.contains(expected), r.stderr)
        }
    }
}
