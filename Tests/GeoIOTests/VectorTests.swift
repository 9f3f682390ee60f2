import XCTest
@testable import GeoIO

final class VectorTests: XCTestCase {
    let fields = [
        FieldDefinition("name", type: .string, width: 32),
        FieldDefinition("count", type: .integer),
        FieldDefinition("score", type: .real),
    ]

    func parcel(_ index: Int) -> Feature {
        let x = 500_000 + Double(index) * 100
        return Feature(geometry: .rectangle(Envelope(minX: x, minY: 0, maxX: x + 50, maxY: 50)),
                       attributes: ["name": .string("parcel \(index)"), "count": .integer(index),
                                    "score": .real(Double(index) / 4)])
    }

    /// Writes two features, reopens, appends a third, checks what comes back, deletes one, reopens.
    func roundTrip(driver: String, file: String) throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent(file).path
        let utm = try SpatialReference(epsg: 32633)
        do {
            let dataset = try VectorDataset.create(driver: driver, path: path)
            XCTAssertEqual(dataset.driverName, driver)
            let layer = try dataset.createLayer(name: "parcels", srs: utm, geometryType: .polygon, fields: fields)
            XCTAssertEqual(layer.fields.map(\.name), ["name", "count", "score"])
            for index in 0..<2 { try layer.add(parcel(index)) }
        }

        do {
            let dataset = try VectorDataset.open(path, access: .update)
            XCTAssertEqual(dataset.layerCount, 1)
            let layer = try dataset.layer(at: 0)
            XCTAssertEqual(layer.featureCount, 2, driver)
            XCTAssertTrue(layer.spatialReference?.isSame(utm) ?? false, driver)
            XCTAssertEqual(layer.spatialReference?.epsgCode, 32633, driver)
            XCTAssertEqual(layer.fields.map(\.type), [.string, .integer, .real], driver)
            try layer.add(parcel(2))
        }

        let dataset = try VectorDataset.open(path)
        let layer = try dataset.layer(at: 0)
        let features = try layer.features()
        let expectedCount = 3
        XCTAssertEqual(features.count, expectedCount, driver)
        let byCount = features.sorted {
            ($0.attributes["count"]?.intValue ?? 0) < ($1.attributes["count"]?.intValue ?? 0)
        }
        for (index, feature) in byCount.enumerated() {
            let expected = parcel(index)
            XCTAssertEqual(feature.attributes, expected.attributes, driver)
            XCTAssertEqual(feature.geometry?.area, 2500, driver)
            XCTAssertEqual(feature.geometry?.envelope, expected.geometry?.envelope, driver)
            XCTAssertNotNil(feature.fid, driver)
        }
        XCTAssertEqual(layer.extent, Envelope(minX: 500_000, minY: 0, maxX: 500_050 + Double(expectedCount - 1) * 100,
                                              maxY: 50), driver)

        do {
            let update = try VectorDataset.open(path, access: .update)
            let layer = try update.layer(at: 0)
            let first = try XCTUnwrap(features.first?.fid)
            try layer.delete(fid: first)
            // Read first: the Shapefile driver's count includes just-deleted records until the layer is read.
            XCTAssertEqual(try layer.features().count, expectedCount - 1, driver)
            XCTAssertEqual(layer.featureCount, expectedCount - 1, driver)
        }
        XCTAssertEqual(try VectorDataset.open(path).layer(at: 0).featureCount, expectedCount - 1, driver)
    }

    func testGeoPackage() throws { try roundTrip(driver: "GPKG", file: "parcels.gpkg") }

    func testShapefile() throws { try roundTrip(driver: "ESRI Shapefile", file: "parcels.shp") }

    func testGeoJSON() throws { try roundTrip(driver: "GeoJSON", file: "parcels.geojson") }

    func testFlatGeobuf() throws { try roundTrip(driver: "FlatGeobuf", file: "parcels.fgb") }

    func testTransactionRollbackKeepsEarlierFeatures() throws {
        struct Abort: Error {}
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("tx.gpkg").path
        let dataset = try VectorDataset.create(driver: "GPKG", path: path)
        let layer = try dataset.createLayer(name: "parcels", srs: try SpatialReference(epsg: 32633),
                                            geometryType: .polygon, fields: fields)
        try dataset.withTransaction {
            try layer.add(parcel(0))
            try layer.add(parcel(1))
        }
        XCTAssertEqual(layer.featureCount, 2)

        XCTAssertThrowsError(try dataset.withTransaction {
            try layer.add(parcel(2))
            XCTAssertEqual(layer.featureCount, 3)
            throw Abort()
        }) { XCTAssertTrue($0 is Abort) }
        XCTAssertEqual(layer.featureCount, 2)

        // A GeoIOError mid-way (unknown field) rolls back the feature added before it.
        assertGeoIOError(["layer parcels has no field named \"colour\""]) {
            try dataset.withTransaction {
                try layer.add(parcel(3))
                try layer.add(Feature(geometry: nil, attributes: ["colour": "red"]))
            }
        }
        XCTAssertEqual(try layer.features().compactMap { $0.attributes["count"]?.intValue }, [0, 1])

        // Returns the body's value on commit.
        let fid = try dataset.withTransaction { try layer.add(parcel(4)) }
        XCTAssertEqual(try layer.feature(fid: fid)?.attributes["count"], .integer(4))
    }

    func testTransactionsUnsupported() throws {
        let directory = try makeTemporaryDirectory(self)
        let dataset = try VectorDataset.create(driver: "ESRI Shapefile",
                                               path: directory.appendingPathComponent("a.shp").path)
        var ran = false
        assertGeoIOError(["does not support transactions"]) { try dataset.withTransaction { ran = true } }
        XCTAssertFalse(ran)
    }

    func testFeatureValuesNullsDatesAndUpdates() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("values.gpkg").path
        let when = FieldDateTime(year: 2024, month: 6, day: 30, hour: 12, minute: 34, second: 56, utcOffsetMinutes: 0)
        let fid: Int64
        do {
            let dataset = try VectorDataset.create(driver: "GPKG", path: path)
            let layer = try dataset.createLayer(
                name: "values", srs: try SpatialReference(epsg: 4326), geometryType: .point,
                fields: [FieldDefinition("big", type: .integer64), FieldDefinition("when", type: .dateTime),
                         FieldDefinition("note", type: .string)])
            fid = try layer.add(Feature(geometry: .point(x: 15, y: 45),
                                        attributes: ["big": .integer(1 << 40), "when": .dateTime(when), "note": nil]))
            try layer.add(Feature(geometry: nil, attributes: ["note": "no geometry"]))
        }
        let dataset = try VectorDataset.open(path, access: .update)
        let layer = try dataset.layer(named: "values")
        XCTAssertEqual(layer.geometryType, .point)
        XCTAssertEqual(layer.spatialReference?.epsgCode, 4326)
        var feature = try XCTUnwrap(try layer.feature(fid: fid))
        XCTAssertEqual(feature.attributes["big"], .integer(1 << 40))
        XCTAssertEqual(feature.attributes["when"], .dateTime(when))
        XCTAssertEqual(feature.attributes["note"], .null)
        XCTAssertEqual(feature.geometry, .point(x: 15, y: 45))
        XCTAssertNil(try layer.feature(fid: 999))

        feature.attributes["note"] = "updated"
        try layer.update(feature)
        XCTAssertEqual(try layer.feature(fid: fid)?.attributes["note"], "updated")

        let all = try layer.features()
        XCTAssertEqual(all.count, 2)
        XCTAssertNil(all[1].geometry)

        assertGeoIOError(["no feature with fid 999"]) { try layer.delete(fid: 999) }
        assertGeoIOError(["no layer named \"nope\" (layers: values)"]) { try dataset.layer(named: "nope") }
        assertGeoIOError(["layer 3 does not exist"]) { try dataset.layer(at: 3) }
    }

    func testOpenErrors() throws {
        assertGeoIOError(["cannot open vector dataset", "/nonexistent/missing.gpkg"]) {
            try VectorDataset.open("/nonexistent/missing.gpkg")
        }
        // A raster-only file is not a vector dataset.
        let raster = try sharedDataPath("float_nan.tif")
        assertGeoIOError(["cannot open vector dataset"]) { try VectorDataset.open(raster) }
        assertGeoIOError(["unknown GDAL driver"]) { try VectorDataset.create(driver: "Nope", path: "/tmp/x") }
    }

    func testMemoryLayersAndDeleteLayer() throws {
        let dataset = try VectorDataset.create(driver: "Memory", path: "")
        try dataset.createLayer(name: "a", srs: nil, geometryType: .polygon)
        try dataset.createLayer(name: "b", srs: nil, geometryType: .none, fields: [FieldDefinition("x", type: .real)])
        XCTAssertEqual(dataset.layers.map(\.name), ["a", "b"])
        XCTAssertEqual(try dataset.layer(named: "b").geometryType, .none)
        XCTAssertNil(try dataset.layer(named: "a").extent)
        try dataset.deleteLayer(named: "a")
        XCTAssertEqual(dataset.layers.map(\.name), ["b"])
    }
}
