import XCTest
@testable import GeoIO

/// Integration tests on the real rasters in `../shared/data` (skipped when that folder is absent).
final class RealDataTests: XCTestCase {
    func testRGBByte() throws {
        let dataset = try RasterDataset.open(try sharedDataPath("RGB.byte.tif"))
        XCTAssertEqual(dataset.driverName, "GTiff")
        XCTAssertEqual(dataset.width, 791)
        XCTAssertEqual(dataset.height, 718)
        XCTAssertEqual(dataset.bandCount, 3)
        let srs = try XCTUnwrap(dataset.spatialReference)
        XCTAssertEqual(srs.epsgCode, 32618)
        XCTAssertEqual(srs.name, "WGS 84 / UTM zone 18N")
        let transform = try XCTUnwrap(dataset.geoTransform)
        XCTAssertTrue(transform.isNorthUp)
        assertClose(transform.originX, 101_985, tolerance: 1e-6)
        assertClose(transform.originY, 2_826_915, tolerance: 1e-6)
        assertClose(transform.pixelWidth, 300.0379266750948, tolerance: 1e-9)

        let bands = dataset.bands
        XCTAssertEqual(bands.map(\.colorInterpretation), [.red, .green, .blue])
        for band in bands {
            XCTAssertEqual(band.dataType, .byte)
            XCTAssertEqual(band.noDataValue, 0)
            XCTAssertTrue(band.maskFlags.contains(.noData))
        }

        // The collar is nodata: the top-left corner is invalid, the centre valid.
        let band = try dataset.band(1)
        XCTAssertEqual(try band.readMask(window: PixelWindow(x: 0, y: 0, width: 1, height: 1)), [0])
        XCTAssertEqual(try band.readMask(window: PixelWindow(x: 395, y: 359, width: 1, height: 1)), [255])
        let mask = try band.readMask()
        let valid = mask.filter { $0 != 0 }.count
        XCTAssertGreaterThan(valid, mask.count / 3)
        XCTAssertLessThan(valid, mask.count)

        let image = try dataset.readRGB8()
        XCTAssertEqual(image.pixels.count, 791 * 718 * 3)
        // HWC layout agrees with per-band reads.
        let center = PixelWindow(x: 400, y: 300, width: 1, height: 1)
        let expected = try bands.map { try $0.read(window: center, as: UInt8.self)[0] }
        let offset = (300 * 791 + 400) * 3
        XCTAssertEqual(Array(image.pixels[offset..<offset + 3]), expected)

        // Downsampled read for a thumbnail.
        let thumbnail = try dataset.readRGB8(bufferWidth: 79, bufferHeight: 72, resampling: .average)
        XCTAssertEqual(thumbnail.pixels.count, 79 * 72 * 3)

        // Georeferencing of the centre pixel in longitude/latitude (gdalinfo: 77°45'28"W, 24°33'42"N).
        let centerMap = transform.pixelToMap(x: 395.5, y: 359)
        let toGeographic = try CoordinateTransformation(from: srs, to: try SpatialReference(epsg: 4326))
        let lonLat = try toGeographic.transform(x: centerMap.x, y: centerMap.y)
        assertClose(lonLat.x, -(77 + 45 / 60.0 + 28.46 / 3600), tolerance: 1e-3)
        assertClose(lonLat.y, 24 + 33 / 60.0 + 41.70 / 3600, tolerance: 1e-3)
    }

    func testNAIPFourBands() throws {
        let dataset = try RasterDataset.open(try sharedDataPath("naip_2020_4band_utm14n.tif"))
        XCTAssertEqual(dataset.width, 934)
        XCTAssertEqual(dataset.height, 723)
        XCTAssertEqual(dataset.bandCount, 4)
        let srs = try XCTUnwrap(dataset.spatialReference)
        XCTAssertEqual(srs.epsgCode, 26914)
        XCTAssertTrue(srs.isProjected)
        XCTAssertEqual(srs.linearUnits.metersPerUnit, 1)
        XCTAssertEqual(dataset.geoTransform, GeoTransform(originX: 485_899, pixelWidth: 5, originY: 5_209_246,
                                                          pixelHeight: -5))
        let band = try dataset.band(4)
        XCTAssertEqual(band.dataType, .byte)
        XCTAssertEqual(band.noDataValue, 0)
        XCTAssertEqual(band.blockSize.width, 512)
        XCTAssertEqual(band.overviewCount, 1)
        let overview = try band.overview(0)
        XCTAssertEqual(overview.width, 467)
        XCTAssertEqual(overview.height, 362)
        XCTAssertEqual(try overview.read().count, 467 * 362)
        // readRGB8 picks bands 1–3 of the four.
        let image = try dataset.readRGB8(window: PixelWindow(x: 100, y: 100, width: 64, height: 32))
        XCTAssertEqual(image.width, 64)
        XCTAssertEqual(image.pixels.count, 64 * 32 * 3)
        assertGeoIOError(["band 5 does not exist (raster has 4 bands)"]) { try dataset.band(5) }
    }

    func testRGBAUInt16() throws {
        let dataset = try RasterDataset.open(try sharedDataPath("RGBA.uint16.tif"))
        XCTAssertEqual(dataset.width, 634)
        XCTAssertEqual(dataset.height, 411)
        XCTAssertEqual(dataset.bands.map(\.colorInterpretation), [.blue, .green, .red, .alpha])
        XCTAssertEqual(dataset.bands.map(\.dataType), [.uint16, .uint16, .uint16, .uint16])
        XCTAssertEqual(dataset.spatialReference?.epsgCode, 32612)
        let band = try dataset.band(1)
        XCTAssertEqual(band.maskFlags, [.alpha, .perDataset])
        let mask = try band.readMask()
        XCTAssertEqual(mask.count, 634 * 411)
        XCTAssertTrue(mask.contains(0))
        // 16-bit values survive a Float read (they exceed 255).
        let values = try band.read()
        XCTAssertGreaterThan(values.max() ?? 0, 255)
        XCTAssertEqual(try band.read(as: UInt16.self).map(Float.init), values)
        // readRGB8 refuses to silently clamp 16-bit data.
        assertGeoIOError(["RGBA.uint16.tif", "band 1 is UInt16, not Byte"]) { try dataset.readRGB8() }
    }

    func testFloatNaN() throws {
        let dataset = try RasterDataset.open(try sharedDataPath("float_nan.tif"))
        XCTAssertEqual(dataset.width, 3)
        XCTAssertEqual(dataset.height, 2)
        XCTAssertNil(dataset.spatialReference)
        XCTAssertEqual(dataset.geoTransform, GeoTransform(originX: 0, pixelWidth: 100, originY: 0, pixelHeight: 100))
        let band = try dataset.band(1)
        XCTAssertEqual(band.dataType, .float32)
        XCTAssertEqual(band.noDataValue?.isNaN, true)
        let values = try band.read()
        XCTAssertEqual(values.count, 6)
        let mask = try band.readMask()
        // The mask marks exactly the NaN pixels invalid.
        XCTAssertEqual(mask.map { $0 == 0 }, values.map(\.isNaN))
        XCTAssertTrue(values.contains { $0.isNaN })
        let minMax = try band.computeMinMax()
        XCTAssertTrue(minMax.min.isFinite && minMax.max.isFinite)
    }

    func testRotatedHasNoCRS() throws {
        // README: "no georeferencing at all" — there is no CRS; GDAL does report a rotated geotransform.
        let dataset = try RasterDataset.open(try sharedDataPath("rotated.tif"))
        XCTAssertEqual(dataset.width, 10)
        XCTAssertEqual(dataset.height, 15)
        XCTAssertNil(dataset.spatialReference)
        if let transform = dataset.geoTransform {
            XCTAssertFalse(transform.isNorthUp)
            XCTAssertNotNil(transform.inverse)
            let upperRight = transform.pixelToMap(x: 10, y: 0)
            assertClose(upperRight.x, 273.205, tolerance: 1e-3)
            assertClose(upperRight.y, 300, tolerance: 1e-3)
        }
        let band = try dataset.band(1)
        XCTAssertEqual(band.dataType, .byte)
        XCTAssertEqual(band.colorInterpretation, .gray)
        XCTAssertEqual(try band.read(as: UInt8.self).count, 150)
        XCTAssertEqual(try dataset.readRGB8().pixels.count, 450)
    }

    func testCorruptReadThrowsGDALMessage() throws {
        let path = try sharedDataPath("corrupt.tif")
        // The header is fine…
        let dataset = try RasterDataset.open(path)
        XCTAssertEqual(dataset.width, 1024)
        XCTAssertEqual(dataset.bandCount, 3)
        XCTAssertEqual(dataset.spatialReference?.epsgCode, 3857)
        // …the first tile too…
        XCTAssertEqual(try dataset.band(1).read(window: PixelWindow(x: 0, y: 0, width: 16, height: 16)).count, 256)
        // …but reading the damaged tiles fails with GDAL's own message, not a crash.
        let message = assertGeoIOError(["cannot read band 1 window", "corrupt.tif, band 1: IReadBlock failed", "TIFFReadEncodedTile() failed"]) {
            try dataset.band(1).read()
        }
        XCTAssertNotNil(message)
        assertGeoIOError(["corrupt.tif", "TIFFReadEncodedTile() failed"]) { try dataset.readRGB8() }
        // The dataset stays usable after the failure.
        XCTAssertEqual(try dataset.band(2).read(window: PixelWindow(x: 0, y: 0, width: 4, height: 4)).count, 16)
    }
}
