import XCTest
@testable import TensorIO

final class HalfPrecisionTests: XCTestCase {
    func testDecodeMatchesFloat16ForEveryBitPattern() {
        for bits in 0...UInt16.max {
            let reference = Float(Float16(bitPattern: bits))
            let mine = halfBitsToFloat(bits)
            if reference.isNaN {
                XCTAssertTrue(mine.isNaN, "bits \(bits)")
            } else {
                XCTAssertEqual(mine.bitPattern, reference.bitPattern, "bits \(bits)")
            }
        }
    }

    func testSoftwareEncodeMatchesFloat16() {
        // Every half value, every midpoint between neighbours (ties) and its float neighbours, plus
        // overflow and underflow edges.
        var probes: [Float] = [0, -0, .infinity, -.infinity, 65504, 65519.996, 65520, 1e10, 0x1p-24, 0x1p-25,
                               0x1.000002p-25, 0x1p-26, 5.9604645e-08, 1e-10, .leastNonzeroMagnitude, .greatestFiniteMagnitude]
        for bits in UInt16(0)...UInt16(0x7BFF) {
            let a = Float(Float16(bitPattern: bits)), b = Float(Float16(bitPattern: bits + 1))
            let mid = (a + b) / 2
            probes += [a, mid, mid.nextUp, mid.nextDown, -mid]
        }
        for x in probes {
            XCTAssertEqual(softwareFloatToHalfBits(x), Float16(x).bitPattern, "x = \(x)")
            XCTAssertEqual(floatToHalfBits(x), Float16(x).bitPattern, "x = \(x)")
        }
        XCTAssertTrue(Float16(bitPattern: softwareFloatToHalfBits(.nan)).isNaN)
    }

    func testRoundToNearestEven() {
        XCTAssertEqual(floatToHalfBits(1 + 0x1p-11), Float16(1).bitPattern)          // tie → even (down)
        XCTAssertEqual(floatToHalfBits(1 + 3 * 0x1p-11), Float16(1 + 0x1p-9).bitPattern)  // tie → even (up)
        XCTAssertEqual(floatToHalfBits(65520), 0x7C00)                               // rounds to +inf
        XCTAssertEqual(floatToHalfBits(0x1p-25), 0)                                  // tie to even zero
        XCTAssertEqual(floatToHalfBits(0x1.8p-24), 2)                                // 1.5 ulp → 2
    }

    func testDTypeSizes() {
        XCTAssertEqual(DType.allCases.map(\.byteSize), [4, 2, 2, 8, 8, 4, 2, 1, 1, 1])
    }
}
