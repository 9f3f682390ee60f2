import Foundation
import Kernels
import XCTest
@testable import TensorIO

final class NumPyTests: TempDirTestCase {
    func testFloat32RoundTripAndHeaderLayout() throws {
        let t = Tensor(shape: [3, 2, 2], scalars: (0..<12).map { Float($0) * 0.5 - 1 })
        let url = tmp.appendingPathComponent("t.npy")
        try NumPy.write(t, to: url)
        XCTAssertEqual(try NumPy.read(url), t)
        let bytes = try Data(contentsOf: url)
        XCTAssertEqual([UInt8](bytes.prefix(8)), [0x93] + Array("NUMPY".utf8) + [1, 0])
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        XCTAssertEqual((10 + headerLength) % 64, 0)
        XCTAssertEqual(bytes.count, 10 + headerLength + 48)
        let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2, 2), }"), header)
        XCTAssertTrue(header.hasSuffix(" \n"))
    }

    func testShapesOneDimensionalAndScalar() throws {
        for t in [Tensor(shape: [5], scalars: [1, 2, 3, 4, 5]), Tensor(shape: [], scalars: [7]), Tensor(shape: [2, 0], scalars: [])] {
            let url = tmp.appendingPathComponent("s.npy")
            try NumPy.write(t, to: url)
            XCTAssertEqual(try NumPy.read(url), t)
        }
        let url = tmp.appendingPathComponent("s.npy")
        try NumPy.write(Tensor(shape: [5], scalars: [1, 2, 3, 4, 5]), to: url)
        XCTAssertTrue(String(decoding: try Data(contentsOf: url), as: UTF8.self).contains("'shape': (5,), }"))
    }

    func testUInt8RoundTrip() throws {
        let url = tmp.appendingPathComponent("m.npy")
        try NumPy.writeUInt8([0, 1, 255, 128, 7, 9], shape: [2, 3], to: url)
        XCTAssertEqual(try NumPy.read(url), Tensor(shape: [2, 3], scalars: [0, 1, 255, 128, 7, 9]))
        XCTAssertTrue(String(decoding: try Data(contentsOf: url), as: UTF8.self).contains("'descr': '|u1'"))
        assertThrows(try NumPy.writeUInt8([1, 2], shape: [3], to: url), containing: ["m.npy", "[3]"])
    }

    func header(_ dict: String, version: UInt8 = 1) -> Data {
        var d = Data([0x93] + Array("NUMPY".utf8) + [version, 0])
        if version == 1 { d.u16(UInt16(dict.utf8.count)) } else { d.u32(UInt32(dict.utf8.count)) }
        d.append(Data(dict.utf8))
        return d
    }

    func testHeaderParserTolerance() throws {
        // Other spacing, double quotes, key order, Python 2 long suffixes, version 2.0.
        var d = header("{\"shape\":(2L,),\"fortran_order\":False,\"descr\":\"<i4\"}\n", version: 2)
        d.u32(UInt32(bitPattern: -3)); d.u32(4)
        XCTAssertEqual(try NumPy.read(write(d, "a.npy")), Tensor(shape: [2], scalars: [-3, 4]))
        var e = header("{'descr': '<f8', 'fortran_order': False, 'shape': (), }          \n")
        e.u64(2.5.bitPattern)
        XCTAssertEqual(try NumPy.read(write(e, "b.npy")), Tensor(shape: [], scalars: [2.5]))
    }

    func testRejectsBadFiles() throws {
        var f = header("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n"); f.u32(0)
        var big = header("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n"); big.u32(0)
        var cplx = header("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }\n"); cplx.u64(0)
        let short = header("{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n") + floatBytes([1, 2])
        let huge = header("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n")
        let neg = header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }\n")
        let junk = header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } x\n")
        let cases: [(String, Data, [String])] = [
            ("fortran.npy", f, ["Fortran"]),
            ("big.npy", big, ["big-endian"]),
            ("complex.npy", cplx, ["'<c8'"]),
            ("short.npy", short, ["truncated"]),
            ("huge.npy", huge, ["huge.npy"]),
            ("neg.npy", neg, ["shape"]),
            ("junk.npy", junk, ["corrupt .npy header"]),
            ("magic.npy", Data("NUMPY nope".utf8), ["not a NumPy"]),
            ("version.npy", Data([0x93] + Array("NUMPY".utf8) + [9, 0, 0, 0]), ["version 9.0"]),
        ]
        for (name, data, fragments) in cases {
            assertThrows(try NumPy.read(write(data, name)), containing: [name] + fragments)
        }
        let full = try Data(contentsOf: {
            let u = tmp.appendingPathComponent("ok.npy"); try NumPy.write(Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]), to: u); return u
        }())
        for cut in 0..<full.count {
            XCTAssertThrowsError(try NumPy.read(write(full.prefix(cut), "cut.npy")), "cut at \(cut)")
        }
    }
}
