import XCTest
@testable import GeoIO

/// Rasters built with GDAL inside the tests (MEM and GTiff in a temporary directory).
final class RasterTests: XCTestCase {
    func testCreateMEMAndReadBack() throws {
        let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 7, height: 5, bandCount: 2,
                                               dataType: .float32)
        XCTAssertEqual(dataset.width, 7)
        XCTAssertEqual(dataset.height, 5)
        XCTAssertEqual(dataset.bandCount, 2)
        XCTAssertEqual(dataset.driverName, "MEM")
        XCTAssertNil(dataset.geoTransform)
        XCTAssertNil(dataset.spatialReference)
        XCTAssertNil(dataset.bounds)

        let values = (0..<35).map { Float($0) * 0.5 - 3 }
        let band = try dataset.band(2)
        XCTAssertEqual(band.dataType, .float32)
        try band.write(values: values)
        XCTAssertEqual(try band.read(), values)
        XCTAssertEqual(try band.read(as: Double.self), values.map(Double.init))

        // A sub-window, row-major.
        let window = PixelWindow(x: 2, y: 1, width: 3, height: 2)
        XCTAssertEqual(try band.read(window: window), [9, 10, 11, 16, 17, 18].map { values[$0] })
        // Writing a window leaves the rest alone.
        try band.write(window: window, values: [Float](repeating: 100, count: 6))
        let after = try band.read()
        XCTAssertEqual(after[9], 100)
        XCTAssertEqual(after[18], 100)
        XCTAssertEqual(after[12], values[12])
        XCTAssertEqual(after[0], values[0])
    }

    func testDataTypes() throws {
        for type in [RasterDataType.byte, .uint16, .int16, .uint32, .int32, .float32, .float64] {
            let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 4, height: 3, bandCount: 1,
                                                   dataType: type)
            let band = try dataset.band(1)
            XCTAssertEqual(band.dataType, type)
            XCTAssertEqual(type.byteSize, [.byte: 1, .uint16: 2, .int16: 2, .uint32: 4, .int32: 4,
                                           .float32: 4, .float64: 8][type])
            let values: [Float] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map { $0 * 20 }
            try band.write(values: values)
            XCTAssertEqual(try band.read(), values, type.gdalName)
        }
        // GDAL clamps on conversion: 300 into Byte stays 255, -5 becomes 0.
        let bytes = try RasterDataset.create(driver: "MEM", path: "", width: 2, height: 1, bandCount: 1, dataType: .byte)
        try bytes.band(1).write(values: [Float(300), -5])
        XCTAssertEqual(try bytes.band(1).read(as: UInt8.self), [255, 0])
    }

    func testResampledReads() throws {
        let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 4, height: 4, bandCount: 1,
                                               dataType: .float32)
        let band = try dataset.band(1)
        try band.write(values: (0..<16).map(Float.init))
        // 2×2 average of each quadrant.
        XCTAssertEqual(try band.read(bufferWidth: 2, bufferHeight: 2, resampling: .average),
                       [2.5, 4.5, 10.5, 12.5])
        let nearest = try band.read(bufferWidth: 2, bufferHeight: 2, resampling: .nearest)
        XCTAssertEqual(nearest.count, 4)
        XCTAssertTrue(Set([0, 1, 4, 5].map(Float.init)).contains(nearest[0]))
        // Upsampling 2×1 → 4×1 with bilinear interpolates between pixel centres; like GDAL, it
        // uses the pixel right of the window (value 2) as context and clamps at the raster edge.
        let up = try band.read(window: PixelWindow(x: 0, y: 0, width: 2, height: 1), bufferWidth: 4,
                               bufferHeight: 1, resampling: .bilinear)
        XCTAssertEqual(up, [0, 0.25, 0.75, 1.25])
    }

    func testWindowAndBandErrors() throws {
        let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 10, height: 10, bandCount: 3,
                                               dataType: .byte)
        assertGeoIOError(["band 5 does not exist (raster has 3 bands)"]) { try dataset.band(5) }
        assertGeoIOError(["band 0 does not exist"]) { try dataset.band(0) }
        let band = try dataset.band(1)
        assertGeoIOError(["not inside the 10×10 raster"]) {
            try band.read(window: PixelWindow(x: 5, y: 5, width: 6, height: 2))
        }
        assertGeoIOError(["buffer size 0×3 is invalid"]) { try band.read(bufferWidth: 0, bufferHeight: 3) }
        assertGeoIOError(["3 values given", "100 expected"]) { try band.write(values: [Float(1), 2, 3]) }
        assertGeoIOError(["overview 0 of band 1 does not exist"]) { try band.overview(0) }
        assertGeoIOError(["band 4 does not exist"]) { try dataset.read(bands: [1, 4], as: UInt8.self) }
        let single = try RasterDataset.create(driver: "MEM", path: "", width: 1, height: 1, bandCount: 1, dataType: .byte)
        assertGeoIOError(["band 2 does not exist (raster has 1 band)"]) { try single.band(2) }
    }

    func testUnknownDriverAndMissingFile() {
        assertGeoIOError(["unknown GDAL driver \"NoSuchDriver\""]) {
            try RasterDataset.create(driver: "NoSuchDriver", path: "/tmp/x", width: 1, height: 1, bandCount: 1,
                                     dataType: .byte)
        }
        let message = assertGeoIOError(["cannot open raster", "/nonexistent/missing.tif", "No such file or directory"]) {
            try RasterDataset.open("/nonexistent/missing.tif")
        }
        XCTAssertEqual(message, "cannot open raster: /nonexistent/missing.tif: No such file or directory")
    }

    func testNotARaster() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("notes.txt").path
        try "just text".write(toFile: path, atomically: true, encoding: .utf8)
        assertGeoIOError(["cannot open raster", "not recognized as a supported file format"]) {
            try RasterDataset.open(path)
        }
    }

    func testGeoTIFFRoundTripUTM33() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("utm33.tif").path
        let transform = GeoTransform(originX: 400_000, pixelWidth: 10, originY: 5_000_000, pixelHeight: -10)
        let values = (0..<(64 * 48)).map { UInt16($0 % 1000) }
        do {
            let dataset = try RasterDataset.create(driver: "GTiff", path: path, width: 64, height: 48, bandCount: 3,
                                                   dataType: .uint16,
                                                   options: ["COMPRESS=DEFLATE", "TILED=YES", "BLOCKXSIZE=32",
                                                             "BLOCKYSIZE=16", "PHOTOMETRIC=RGB"])
            try dataset.setGeoTransform(transform)
            try dataset.setSpatialReference(try SpatialReference(epsg: 32633))
            for index in 1...3 {
                let band = try dataset.band(index)
                try band.write(values: values.map { $0 + UInt16(index) })
                try band.setNoDataValue(0)
            }
            try dataset.flush()
        }
        let dataset = try RasterDataset.open(path)
        XCTAssertEqual(dataset.driverName, "GTiff")
        XCTAssertEqual(dataset.geoTransform, transform)
        XCTAssertEqual(dataset.spatialReference?.epsgCode, 32633)
        XCTAssertEqual(dataset.bounds, Envelope(minX: 400_000, minY: 4_999_520, maxX: 400_640, maxY: 5_000_000))
        let band = try dataset.band(2)
        XCTAssertEqual(band.dataType, .uint16)
        XCTAssertEqual(band.noDataValue, 0)
        XCTAssertEqual(band.blockSize.width, 32)
        XCTAssertEqual(band.blockSize.height, 16)
        XCTAssertEqual(try dataset.band(1).colorInterpretation, .red)
        XCTAssertEqual(band.colorInterpretation, .green)
        XCTAssertEqual(try band.read(as: UInt16.self), values.map { $0 + 2 })
        XCTAssertTrue(band.maskFlags.contains(.noData))

        // Read-only datasets refuse writes with GDAL's message.
        assertGeoIOError(["cannot write band 1", "read-only"]) {
            try dataset.band(1).write(window: PixelWindow(x: 0, y: 0, width: 1, height: 1), values: [UInt16(1)])
        }

        // Band-sequential and pixel-interleaved multi-band reads.
        let window = PixelWindow(x: 10, y: 0, width: 2, height: 1)
        XCTAssertEqual(try dataset.read(bands: [1, 3], window: window, as: UInt16.self), [11, 12, 13, 14])
        XCTAssertEqual(try dataset.read(bands: [1, 3], window: window, layout: .pixelInterleaved, as: UInt16.self),
                       [11, 13, 12, 14])
    }

    func testGeographicAndNonNorthUp() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("rotated4326.tif").path
        let rotated = GeoTransform(originX: 10, pixelWidth: 0.001, rowRotation: 0.0005,
                                   originY: 50, columnRotation: 0.0005, pixelHeight: -0.001)
        do {
            let dataset = try RasterDataset.create(driver: "GTiff", path: path, width: 20, height: 10, bandCount: 1,
                                                   dataType: .int16)
            try dataset.setGeoTransform(rotated)
            try dataset.setSpatialReference(try SpatialReference("EPSG:4326"))
            try dataset.band(1).fill(-7)
        }
        let dataset = try RasterDataset.open(path)
        let transform = try XCTUnwrap(dataset.geoTransform)
        XCTAssertFalse(transform.isNorthUp)
        for (a, b) in zip(transform.coefficients, rotated.coefficients) { assertClose(a, b, tolerance: 1e-12) }
        let srs = try XCTUnwrap(dataset.spatialReference)
        XCTAssertEqual(srs.epsgCode, 4326)
        XCTAssertTrue(srs.isGeographic)
        XCTAssertEqual(Set(try dataset.band(1).read()), [-7])
        XCTAssertEqual(try dataset.band(1).computeMinMax().min, -7)
    }

    func testUpdateModeAndClearingSRS() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("update.tif").path
        do {
            let dataset = try RasterDataset.create(driver: "GTiff", path: path, width: 8, height: 8, bandCount: 1,
                                                   dataType: .byte)
            try dataset.setSpatialReference(try SpatialReference(epsg: 32633))
            try dataset.setGeoTransform(GeoTransform(originX: 0, pixelWidth: 1, originY: 8, pixelHeight: -1))
        }
        do {
            let dataset = try RasterDataset.open(path, access: .update)
            try dataset.band(1).fill(9)
            try dataset.band(1).setColorInterpretation(.gray)
            try dataset.setSpatialReference(nil)
        }
        let dataset = try RasterDataset.open(path)
        XCTAssertEqual(Set(try dataset.band(1).read(as: UInt8.self)), [9])
        XCTAssertNil(dataset.spatialReference)
    }

    func testNoDataMaskAndStatistics() throws {
        let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 4, height: 2, bandCount: 1,
                                               dataType: .float32)
        let band = try dataset.band(1)
        XCTAssertNil(band.noDataValue)
        try band.write(values: [-9999, 1, 2, 3, 4, 5, 6, -9999] as [Float])
        try band.setNoDataValue(-9999)
        XCTAssertEqual(band.noDataValue, -9999)
        XCTAssertEqual(band.maskFlags, .noData)
        XCTAssertEqual(try band.readMask(), [0, 255, 255, 255, 255, 255, 255, 0])

        let minMax = try band.computeMinMax()
        XCTAssertEqual(minMax.min, 1)
        XCTAssertEqual(minMax.max, 6)
        let stats = try band.statistics()
        XCTAssertEqual(stats.mean, 3.5, accuracy: 1e-9)
        XCTAssertEqual(stats.standardDeviation, (35.0 / 12).squareRoot(), accuracy: 1e-9)
        XCTAssertEqual(try band.histogram(min: 0.5, max: 6.5, bucketCount: 3), [2, 2, 2])

        try band.setNoDataValue(nil)
        XCTAssertNil(band.noDataValue)

        // NaN as nodata.
        try band.setNoDataValue(.nan)
        XCTAssertEqual(band.noDataValue.map { $0.isNaN }, true)

        // All pixels nodata: statistics fail with GDAL's reason.
        try band.fill(42)
        try band.setNoDataValue(42)
        assertGeoIOError(["cannot compute"]) { try band.statistics() }
    }

    func testAlphaMask() throws {
        let dataset = try RasterDataset.create(driver: "MEM", path: "", width: 3, height: 1, bandCount: 2,
                                               dataType: .byte)
        try dataset.band(2).setColorInterpretation(.alpha)
        try dataset.band(2).write(values: [0, 128, 255] as [UInt8])
        let band = try dataset.band(1)
        XCTAssertEqual(band.maskFlags, [.alpha, .perDataset])
        XCTAssertEqual(try band.readMask(), [0, 128, 255])
    }

    func testOverviews() throws {
        let directory = try makeTemporaryDirectory(self)
        let path = directory.appendingPathComponent("ovr.tif").path
        do {
            let dataset = try RasterDataset.create(driver: "GTiff", path: path, width: 64, height: 32, bandCount: 1,
                                                   dataType: .byte)
            try dataset.band(1).write(values: (0..<(64 * 32)).map { UInt8(($0 % 64) < 32 ? 10 : 30) })
            try dataset.buildOverviews(factors: [2, 4], resampling: .average)
        }
        let dataset = try RasterDataset.open(path)
        let band = try dataset.band(1)
        XCTAssertEqual(band.overviewCount, 2)
        let overview = try band.overview(1)
        XCTAssertEqual(overview.width, 16)
        XCTAssertEqual(overview.height, 8)
        let row = Array(try overview.read(as: UInt8.self).prefix(16))
        XCTAssertEqual(row, [UInt8](repeating: 10, count: 8) + [UInt8](repeating: 30, count: 8))
        assertGeoIOError(["invalid overview factor 1"]) { try dataset.buildOverviews(factors: [1]) }
    }

    func testReadRGB8() throws {
        let rgb = try RasterDataset.create(driver: "MEM", path: "", width: 2, height: 2, bandCount: 3, dataType: .byte)
        for index in 1...3 { try rgb.band(index).fill(Double(index * 10)) }
        let image = try rgb.readRGB8()
        XCTAssertEqual(image.width, 2)
        XCTAssertEqual(image.height, 2)
        XCTAssertEqual(image.pixels, [UInt8]([10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30]))
        XCTAssertEqual(try rgb.readRGB8(bands: [3, 2, 1]).pixels.prefix(3), [30, 20, 10])
        let half = try rgb.readRGB8(bufferWidth: 1, bufferHeight: 1, resampling: .average)
        XCTAssertEqual(half.pixels, [10, 20, 30])

        let gray = try RasterDataset.create(driver: "MEM", path: "", width: 2, height: 1, bandCount: 1, dataType: .byte)
        try gray.band(1).write(values: [5, 7] as [UInt8])
        XCTAssertEqual(try gray.readRGB8().pixels, [5, 5, 5, 7, 7, 7])

        let wide = try RasterDataset.create(driver: "MEM", path: "", width: 1, height: 1, bandCount: 1, dataType: .uint16)
        assertGeoIOError(["band 1 is UInt16, not Byte"]) { try wide.readRGB8() }
        assertGeoIOError(["needs 3 bands"]) { try rgb.readRGB8(bands: [1, 2]) }
    }

    func testVSIMemAndVSIZip() throws {
        // /vsimem/: an in-memory file system understood by every GDAL path.
        let path = "/vsimem/geoio-test-\(UInt32.random(in: 0...UInt32.max)).tif"
        do {
            let dataset = try RasterDataset.create(driver: "GTiff", path: path, width: 3, height: 3, bandCount: 1,
                                                   dataType: .byte)
            try dataset.band(1).fill(4)
        }
        XCTAssertEqual(Set(try RasterDataset.open(path).band(1).read(as: UInt8.self)), [4])

        // /vsizip/: a GeoTIFF inside a zip archive written with GDAL's own zip writer.
        let directory = try makeTemporaryDirectory(self)
        let zip = directory.appendingPathComponent("archive.zip").path
        try GDAL.copyFile(from: path, to: "/vsizip/\(zip)/inner.tif")
        try GDAL.deleteFile(path)
        assertGeoIOError(["cannot open raster", path]) { try RasterDataset.open(path) }
        let zipped = try RasterDataset.open("/vsizip/\(zip)/inner.tif")
        XCTAssertEqual(zipped.width, 3)
        XCTAssertEqual(Set(try zipped.band(1).read(as: UInt8.self)), [4])
    }

    func testCopyToPNG() throws {
        let directory = try makeTemporaryDirectory(self)
        let source = try RasterDataset.create(driver: "MEM", path: "", width: 3, height: 2, bandCount: 1, dataType: .byte)
        try source.band(1).write(values: [1, 2, 3, 4, 5, 6] as [UInt8])
        let path = directory.appendingPathComponent("copy.png").path
        do { _ = try source.copy(driver: "PNG", path: path) }
        let copy = try RasterDataset.open(path)
        XCTAssertEqual(copy.driverName, "PNG")
        XCTAssertEqual(try copy.band(1).read(as: UInt8.self), [1, 2, 3, 4, 5, 6])
    }
}
