import XCTest
@testable import GeoIO

final class SpatialReferenceTests: XCTestCase {
    func testVersionAndDrivers() {
        XCTAssertTrue(GDAL.version.first?.isNumber ?? false, GDAL.version)
        XCTAssertGreaterThanOrEqual(GDAL.versionNumber, 3_000_000)
        for driver in ["GTiff", "MEM", "GPKG", "ESRI Shapefile", "GeoJSON", "FlatGeobuf", "Memory"] {
            XCTAssertTrue(GDAL.hasDriver(driver), driver)
        }
        XCTAssertFalse(GDAL.hasDriver("NoSuchDriver"))
    }

    func testConfigOption() {
        GDAL.setConfigOption("GEOIO_TEST_OPTION", "42")
        XCTAssertEqual(GDAL.configOption("GEOIO_TEST_OPTION"), "42")
        GDAL.setConfigOption("GEOIO_TEST_OPTION", nil)
        XCTAssertNil(GDAL.configOption("GEOIO_TEST_OPTION"))
    }

    func testFromEPSGAndUserInput() throws {
        let wgs84 = try SpatialReference(epsg: 4326)
        XCTAssertEqual(wgs84.epsgCode, 4326)
        XCTAssertTrue(wgs84.isGeographic)
        XCTAssertFalse(wgs84.isProjected)
        XCTAssertEqual(wgs84.name, "WGS 84")

        let utm = try SpatialReference("EPSG:32633")
        XCTAssertEqual(utm.epsgCode, 32633)
        XCTAssertTrue(utm.isProjected)
        XCTAssertEqual(utm.name, "WGS 84 / UTM zone 33N")
        XCTAssertEqual(utm.linearUnits.metersPerUnit, 1)
        XCTAssertFalse(utm.isSame(wgs84))
        XCTAssertTrue(utm.isSame(try SpatialReference(epsg: 32633)))
        XCTAssertEqual(utm.description, "WGS 84 / UTM zone 33N (EPSG:32633)")
    }

    func testWKTRoundTripAndIdentification() throws {
        let utm = try SpatialReference(epsg: 32618)
        let wkt = try utm.wkt
        XCTAssertTrue(wkt.hasPrefix("PROJCRS[\"WGS 84 / UTM zone 18N\""), wkt)
        XCTAssertFalse(wkt.contains("\n"))
        let parsed = try SpatialReference(wkt: wkt)
        XCTAssertTrue(parsed.isSame(utm))
        XCTAssertEqual(parsed.epsgCode, 32618)

        // A WKT1 definition without AUTHORITY nodes is identified by OSRAutoIdentifyEPSG.
        let bare = """
            GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],\
            PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]
            """
        XCTAssertEqual(try SpatialReference(wkt: bare).epsgCode, 4326)
    }

    func testInvalidDefinitions() {
        assertGeoIOError(["invalid spatial reference", "not a crs"]) { try SpatialReference("not a crs") }
        assertGeoIOError(["unknown EPSG code 999999"]) { try SpatialReference(epsg: 999_999) }
        assertGeoIOError(["invalid WKT"]) { try SpatialReference(wkt: "PROJCRS[garbage") }
    }

    func testUTMZoneLookup() throws {
        XCTAssertEqual(try SpatialReference.utm(containingLongitude: 15, latitude: 45).epsgCode, 32633)
        XCTAssertEqual(try SpatialReference.utm(containingLongitude: -77.7, latitude: 24.5).epsgCode, 32618)
        XCTAssertEqual(try SpatialReference.utm(containingLongitude: 151.2, latitude: -33.9).epsgCode, 32756)
        XCTAssertEqual(try SpatialReference.utm(containingLongitude: 180, latitude: 0).epsgCode, 32601)
        assertGeoIOError(["invalid longitude/latitude"]) { try SpatialReference.utm(containingLongitude: 0, latitude: 91) }
    }

    func testTransformKnownValues() throws {
        let wgs84 = try SpatialReference(epsg: 4326)
        let utm33 = try SpatialReference(epsg: 32633)
        let toUTM = try CoordinateTransformation(from: wgs84, to: utm33)
        // Longitude first, whatever EPSG:4326's official axis order is.
        let origin = try toUTM.transform(x: 15, y: 0)
        assertClose(origin.x, 500_000, tolerance: 1e-6)
        assertClose(origin.y, 0, tolerance: 1e-6)

        // Batch, plus a textbook value: (16°E, 45°N) on UTM 33N.
        let points = try toUTM.transform(points: [Coordinate(x: 15, y: 0), Coordinate(x: 16, y: 45)])
        XCTAssertEqual(points.count, 2)
        assertClose(points[1].x, 578_815.302, tolerance: 0.01)
        assertClose(points[1].y, 4_983_436.768, tolerance: 0.01)

        let back = try CoordinateTransformation(from: utm33, to: wgs84).transform(points: points)
        assertClose(back[1].x, 16, tolerance: 1e-9)
        assertClose(back[1].y, 45, tolerance: 1e-9)
    }

    func testWebMercator() throws {
        let toMercator = try CoordinateTransformation(from: try SpatialReference(epsg: 4326),
                                                      to: try SpatialReference(epsg: 3857))
        let point = try toMercator.transform(x: 180, y: 0)
        assertClose(point.x, 20_037_508.342789244, tolerance: 1e-6)
        assertClose(point.y, 0, tolerance: 1e-6)
    }

    func testTransformBounds() throws {
        let utm33 = try SpatialReference(epsg: 32633)
        let toGeographic = try CoordinateTransformation(from: utm33, to: try SpatialReference(epsg: 4326))
        let bounds = try toGeographic.transformBounds(
            Envelope(minX: 400_000, minY: 4_900_000, maxX: 600_000, maxY: 5_100_000))
        // Longitude/latitude order; the box straddles the central meridian (15°E) around 45°N.
        XCTAssertLessThan(bounds.minX, 15)
        XCTAssertGreaterThan(bounds.maxX, 15)
        XCTAssertEqual(bounds.minY, 44.2, accuracy: 0.1)
        XCTAssertEqual(bounds.maxY, 46.1, accuracy: 0.1)
        XCTAssertEqual(bounds.minX + bounds.maxX, 30, accuracy: 1e-6)  // symmetric about 15°E
    }

    func testFailingTransformThrows() throws {
        let toUTM = try CoordinateTransformation(from: try SpatialReference(epsg: 4326),
                                                 to: try SpatialReference(epsg: 32633))
        assertGeoIOError(["cannot transform point 1 (15.0, 200.0) from WGS 84 (EPSG:4326) to WGS 84 / UTM zone 33N (EPSG:32633): Invalid coordinate"]) {
            try toUTM.transform(points: [Coordinate(x: 15, y: 0), Coordinate(x: 15, y: 200)])
        }
    }

    func testSharedAcrossTasks() async throws {
        let wgs84 = try SpatialReference(epsg: 4326)
        let transformation = try CoordinateTransformation(from: wgs84, to: try SpatialReference(epsg: 32633))
        try await withThrowingTaskGroup(of: Double.self) { group in
            for index in 0..<8 {
                group.addTask {
                    _ = wgs84.epsgCode
                    return try transformation.transform(x: 15, y: Double(index)).x
                }
            }
            for try await x in group { assertClose(x, 500_000, tolerance: 1e-6) }
        }
    }
}
