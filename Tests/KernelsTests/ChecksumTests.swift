import XCTest
@testable import Kernels

/// CRC-32C: the hardware three-lane path, the table path and the bit-by-bit definition agree on
/// every length around the lane split, at every alignment, and on the standard check value.
final class ChecksumTests: XCTestCase {
    func crc(_ bytes: [UInt8], continuing c: UInt32 = 0) -> UInt32 { bytes.withUnsafeBytes { CRC32C.checksum($0, continuing: c) } }
    func portable(_ bytes: [UInt8], continuing c: UInt32 = 0) -> UInt32 { bytes.withUnsafeBytes { CRC32C.portableChecksum($0, continuing: c) } }

    func testStandardCheckValue() {
        let check = Array("123456789".utf8)
        XCTAssertEqual(crc(check), 0xE306_9283)
        XCTAssertEqual(portable(check), 0xE306_9283)
        XCTAssertEqual(ReferenceKernels.crc32c(check), 0xE306_9283)
        XCTAssertEqual(crc([]), 0)
        // 32 zero bytes: RFC 3720 B.4.
        XCTAssertEqual(crc([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(crc([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
    }

    func testAllPathsAgreeAcrossLengthsAndAlignments() {
        var generator = SplitMix64(state: 11)
        let buffer = (0..<(3 * 4096 * 3 + 64)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let lengths = [0, 1, 7, 8, 9, 63, 4095, 3 * 4096 - 1, 3 * 4096, 3 * 4096 + 1, 3 * 4096 + 23, 3 * 4096 * 3 + 5]
        for length in lengths {
            for offset in 0..<9 where offset + length <= buffer.count {
                let slice = Array(buffer[offset..<(offset + length)])
                let expected = length <= 4096 * 3 + 23 ? ReferenceKernels.crc32c(slice) : portable(slice)
                XCTAssertEqual(crc(slice), expected, "length \(length), offset \(offset)")
                XCTAssertEqual(portable(slice), expected, "length \(length), offset \(offset)")
            }
        }
        XCTAssertEqual(portable(Array(buffer.prefix(4096))), ReferenceKernels.crc32c(Array(buffer.prefix(4096))))
    }

    func testContinuingAndCombiningEqualsOnePass() {
        var generator = SplitMix64(state: 5)
        let data = (0..<50_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let whole = crc(data)
        for cut in [0, 1, 17, 12_288, 30_001, 50_000] {
            let (a, b) = (Array(data[..<cut]), Array(data[cut...]))
            XCTAssertEqual(crc(b, continuing: crc(a)), whole, "cut \(cut)")
            XCTAssertEqual(CRC32C.combine(crc(a), crc(b), secondLength: b.count), whole, "cut \(cut)")
        }
    }

    func testEverySingleBitFlipChangesTheChecksum() {
        var generator = SplitMix64(state: 3)
        var data = (0..<20_000).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        let original = crc(data)
        for _ in 0..<500 {
            let index = Int(generator.next() % UInt64(data.count)), bit = UInt8(1) << UInt8(generator.next() % 8)
            data[index] ^= bit
            XCTAssertNotEqual(crc(data), original)
            data[index] ^= bit
        }
    }
}
