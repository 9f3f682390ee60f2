import XCTest
@testable import GeoIO

final class GeoTransformTests: XCTestCase {
    let northUp = GeoTransform(originX: 500_000, pixelWidth: 10, originY: 4_000_000, pixelHeight: -10)

    func testPixelToMapAndBack() throws {
        let corner = northUp.pixelToMap(x: 0, y: 0)
        XCTAssertEqual(corner, Coordinate(x: 500_000, y: 4_000_000))
        let center = northUp.pixelToMap(x: 0.5, y: 2.5)
        XCTAssertEqual(center, Coordinate(x: 500_005, y: 3_999_975))
        let pixel = try XCTUnwrap(northUp.mapToPixel(x: 500_005, y: 3_999_975))
        assertClose(pixel.x, 0.5, tolerance: 1e-9)
        assertClose(pixel.y, 2.5, tolerance: 1e-9)
        XCTAssertTrue(northUp.isNorthUp)
    }

    func testCoefficientsRoundTrip() throws {
        let transform = try XCTUnwrap(GeoTransform(coefficients: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(transform.coefficients, [1, 2, 3, 4, 5, 6])
        XCTAssertNil(GeoTransform(coefficients: [1, 2, 3]))
    }

    func testRotatedInverse() throws {
        // 30° rotation, 2-unit pixels.
        let c = cos(Double.pi / 6) * 2, s = sin(Double.pi / 6) * 2
        let rotated = GeoTransform(originX: 100, pixelWidth: c, rowRotation: s,
                                   originY: 200, columnRotation: s, pixelHeight: -c)
        XCTAssertFalse(rotated.isNorthUp)
        let inverse = try XCTUnwrap(rotated.inverse)
        for (px, py) in [(0.0, 0.0), (3.5, 7.25), (-2.0, 10.0)] {
            let map = rotated.pixelToMap(x: px, y: py)
            let back = inverse.pixelToMap(x: map.x, y: map.y)
            assertClose(back.x, px, tolerance: 1e-9)
            assertClose(back.y, py, tolerance: 1e-9)
        }
    }

    func testDegenerateHasNoInverse() {
        let degenerate = GeoTransform(originX: 0, pixelWidth: 1, rowRotation: 2,
                                      originY: 0, columnRotation: 1, pixelHeight: 2)
        XCTAssertNil(degenerate.inverse)
        XCTAssertNil(degenerate.mapToPixel(x: 1, y: 1))
    }

    func testIdentity() {
        XCTAssertEqual(GeoTransform.identity.pixelToMap(x: 3, y: 4), Coordinate(x: 3, y: 4))
        XCTAssertFalse(GeoTransform.identity.isNorthUp)  // rows run "down" in y: not a map convention
    }

    func testScaledTranslatedAndWindow() {
        let shifted = northUp.translated(byPixelsX: 100, y: 50)
        XCTAssertEqual(shifted.pixelToMap(x: 0, y: 0), northUp.pixelToMap(x: 100, y: 50))
        let coarse = northUp.scaled(by: 4)
        XCTAssertEqual(coarse.pixelWidth, 40)
        XCTAssertEqual(coarse.pixelHeight, -40)
        XCTAssertEqual(coarse.pixelToMap(x: 1, y: 1), northUp.pixelToMap(x: 4, y: 4))

        // A 1024×512 window read into a 256×128 buffer.
        let window = PixelWindow(x: 2048, y: 1024, width: 1024, height: 512)
        let windowed = northUp.forWindow(window, bufferWidth: 256, bufferHeight: 128)
        XCTAssertEqual(windowed.pixelToMap(x: 0, y: 0), northUp.pixelToMap(x: 2048, y: 1024))
        XCTAssertEqual(windowed.pixelToMap(x: 256, y: 128), northUp.pixelToMap(x: 3072, y: 1536))
    }

    func testBounds() {
        let bounds = northUp.bounds(width: 100, height: 50)
        XCTAssertEqual(bounds, Envelope(minX: 500_000, minY: 3_999_500, maxX: 501_000, maxY: 4_000_000))
    }

    func testPixelWindow() {
        let window = PixelWindow(x: -5, y: 10, width: 20, height: 100)
        XCTAssertFalse(window.fits(inWidth: 50, height: 50))
        XCTAssertEqual(window.clamped(toWidth: 50, height: 50), PixelWindow(x: 0, y: 10, width: 15, height: 40))
        XCTAssertTrue(PixelWindow(width: 50, height: 50).fits(inWidth: 50, height: 50))
        XCTAssertFalse(PixelWindow(x: 0, y: 0, width: 0, height: 5).fits(inWidth: 50, height: 50))
        XCTAssertEqual(PixelWindow(x: 60, y: 0, width: 5, height: 5).clamped(toWidth: 50, height: 50).pixelCount, 0)
    }
}
