import Foundation
import XCTest
@testable import GeoIO

final class GeometryTests: XCTestCase {
    let square = Geometry.polygon(rings: [[
        Coordinate(x: 0, y: 0), Coordinate(x: 10, y: 0), Coordinate(x: 10, y: 10), Coordinate(x: 0, y: 10),
    ]])

    func testPointAndWKT() throws {
        let point = Geometry.point(x: 1.5, y: -2)
        XCTAssertEqual(point.type, .point)
        XCTAssertEqual(point.wkt, "POINT (1.5 -2)")
        XCTAssertEqual(point.wkb.count, 21)
        XCTAssertEqual(try Geometry(wkt: "POINT (1.5 -2)"), point)
        XCTAssertEqual(try Geometry(wkb: point.wkb), point)
        // Big-endian WKB of the same point is normalised to the same value.
        let bigEndian: [UInt8] = [0, 0, 0, 0, 1]
            + withUnsafeBytes(of: (1.5).bitPattern.bigEndian, Array.init)
            + withUnsafeBytes(of: (-2.0).bitPattern.bigEndian, Array.init)
        XCTAssertEqual(try Geometry(wkb: bigEndian), point)
        XCTAssertEqual(point.area, 0)
        XCTAssertEqual(point.centroid, Coordinate(x: 1.5, y: -2))
    }

    func testPolygonMeasures() {
        XCTAssertEqual(square.type, .polygon)
        XCTAssertEqual(square.wkt, "POLYGON ((0 0,10 0,10 10,0 10,0 0))")  // closed automatically
        XCTAssertEqual(square.area, 100)
        XCTAssertEqual(square.length, 40)
        XCTAssertEqual(square.envelope, Envelope(minX: 0, minY: 0, maxX: 10, maxY: 10))
        XCTAssertTrue(square.isValid)
        XCTAssertFalse(square.isEmpty)
        XCTAssertEqual(square.centroid, Coordinate(x: 5, y: 5))

        let withHole = Geometry.polygon(rings: [
            square.polygonRings[0][0],
            [Coordinate(x: 2, y: 2), Coordinate(x: 4, y: 2), Coordinate(x: 4, y: 4), Coordinate(x: 2, y: 4)],
        ])
        XCTAssertEqual(withHole.area, 96)
        XCTAssertEqual(withHole.length, 48)
        XCTAssertEqual(withHole.polygonRings.first?.count, 2)

        let line = Geometry.lineString([Coordinate(x: 0, y: 0), Coordinate(x: 3, y: 4)])
        XCTAssertEqual(line.type, .lineString)
        XCTAssertEqual(line.length, 5)
    }

    func testMultiPolygon() throws {
        let other = Geometry.rectangle(Envelope(minX: 20, minY: 0, maxX: 21, maxY: 1))
        let multi = try Geometry.multiPolygon([square, other])
        XCTAssertEqual(multi.type, .multiPolygon)
        XCTAssertEqual(multi.area, 101)
        XCTAssertEqual(multi.polygonRings.count, 2)
        // Nested multipolygons are flattened; the Swift-built variant gives the same WKB.
        XCTAssertEqual(try Geometry.multiPolygon([multi]), multi)
        XCTAssertEqual(Geometry.multiPolygon([square.polygonRings[0], other.polygonRings[0]]), multi)
        assertGeoIOError(["part 0 of a multipolygon is a point"]) {
            try Geometry.multiPolygon([Geometry.point(x: 0, y: 0)])
        }
    }

    func testInvalidInputs() {
        assertGeoIOError(["invalid WKT"]) { try Geometry(wkt: "POLYGON ((0 0, 1") }
        assertGeoIOError(["invalid WKB geometry (3 bytes)"]) { try Geometry(wkb: [1, 2, 3]) }
        assertGeoIOError(["invalid GeoJSON"]) { try Geometry(geoJSON: "{\"type\": \"Nope\"}") }
        // A bow-tie polygon parses but is not valid.
        let bowTie = Geometry.polygon(rings: [[
            Coordinate(x: 0, y: 0), Coordinate(x: 1, y: 1), Coordinate(x: 1, y: 0), Coordinate(x: 0, y: 1),
        ]])
        XCTAssertFalse(bowTie.isValid)
    }

    func testGeoJSONRoundTrip() throws {
        let json = square.geoJSON
        XCTAssertTrue(json.hasPrefix(#"{"type":"Polygon","coordinates":[[["#), json)
        XCTAssertEqual(try Geometry(geoJSON: json), square)
        // Every written type reads back to the same WKB, digits included (shortest round-trip).
        let odd = Coordinate(x: 401234.56789012345, y: -5.0e-7)
        for geometry in [Geometry.point(x: odd.x, y: odd.y), .lineString([odd, Coordinate(x: 1e16, y: 3)]),
                         .polygon(rings: [[odd, Coordinate(x: 2, y: 0), Coordinate(x: 2, y: 2), odd]]),
                         .multiPolygon([[[Coordinate(x: 0, y: 0), Coordinate(x: 1, y: 0), Coordinate(x: 1, y: 1), Coordinate(x: 0, y: 0)]],
                                        [[odd, Coordinate(x: 5, y: 5), Coordinate(x: 5, y: 6), odd]]])] {
            let text = geometry.geoJSON
            XCTAssertFalse(text.contains(" "), text)
            XCTAssertNotNil(try? JSONSerialization.jsonObject(with: Data(text.utf8)), "not JSON: \(text)")
            XCTAssertEqual(try Geometry(geoJSON: text), geometry, text)
        }
        // Other types go through GDAL.
        let collection = try Geometry(wkt: "GEOMETRYCOLLECTION (POINT (1 2))")
        XCTAssertTrue(collection.geoJSON.contains("GeometryCollection"), collection.geoJSON)
        XCTAssertEqual(try Geometry(geoJSON: #"{"type":"Point","coordinates":[7,8]}"#), .point(x: 7, y: 8))
    }

    func testTransformed() throws {
        let toUTM = try CoordinateTransformation(from: try SpatialReference(epsg: 4326),
                                                 to: try SpatialReference(epsg: 32633))
        let point = try Geometry.point(x: 15, y: 0).transformed(with: toUTM)
        let coordinate = try XCTUnwrap(point.centroid)
        assertClose(coordinate.x, 500_000, tolerance: 1e-6)
        assertClose(coordinate.y, 0, tolerance: 1e-6)

        // A 0.01° square at the equator is about 1113 m × 1106 m.
        let cell = Geometry.rectangle(Envelope(minX: 15, minY: 0, maxX: 15.01, maxY: 0.01))
        let projected = try cell.transformed(with: toUTM)
        XCTAssertEqual(projected.area, 1_113.2 * 1_105.7, accuracy: 1_113.2 * 1_105.7 * 0.01)
    }

    func testSimplifyPreserveTopology() throws {
        // A zig-zag edge with 1-unit bumps.
        var ring = [Coordinate(x: 0, y: 0)]
        for x in stride(from: 1, through: 99, by: 2) {
            ring.append(Coordinate(x: Double(x), y: -0.4))
            ring.append(Coordinate(x: Double(x + 1), y: 0))
        }
        ring += [Coordinate(x: 100, y: 50), Coordinate(x: 0, y: 50)]
        let jagged = Geometry.polygon(rings: [ring])
        let simple = try jagged.simplifiedPreserveTopology(tolerance: 1)
        XCTAssertTrue(simple.isValid)
        XCTAssertLessThan(simple.polygonRings[0][0].count, 10)
        XCTAssertEqual(simple.area, jagged.area, accuracy: 50)
    }

    func testGeodesicAreaWhenAvailable() throws {
        let wgs84 = try SpatialReference(epsg: 4326)
        let cell = Geometry.rectangle(Envelope(minX: 15, minY: 0, maxX: 16, maxY: 1))
        let area = try cell.geodesicArea(in: wgs84)
        if GDAL.versionNumber >= 3_090_000 {
            // 1°×1° at the equator ≈ 12 308 km².
            XCTAssertEqual(try XCTUnwrap(area), 1.2308e10, accuracy: 1e8)
        } else {
            XCTAssertNil(area, "OGR_G_GeodesicArea only exists in GDAL ≥ 3.9")
        }
    }
}
