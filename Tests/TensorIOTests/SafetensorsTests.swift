import Foundation
import Kernels
import XCTest
@testable import TensorIO

final class SafetensorsTests: TempDirTestCase {
    let sample: [(name: String, tensor: Tensor)] = [
        ("encoder.weight", Tensor(shape: [2, 3], scalars: [1, -2, 3.5, 0, 1e-3, -65504])),
        ("encoder.bias", Tensor(shape: [3], scalars: [0.25, 0.5, -0.75])),
        ("scalar", Tensor(shape: [], scalars: [42])),
        ("empty", Tensor(shape: [0, 4], scalars: [])),
    ]

    /// Builds a file from a raw header string and data bytes.
    func rawFile(_ header: String, _ data: Data) -> Data {
        var out = Data()
        out.u64(UInt64(header.utf8.count))
        out.append(Data(header.utf8))
        out.append(data)
        return out
    }

    func testRoundTripFloat32() throws {
        let url = tmp.appendingPathComponent("rt.safetensors")
        try SafetensorsWriter.write(sample, dtype: .float32, metadata: ["format": "pt", "α": "β \"q\""], to: url)
        let f = try SafetensorsFile(contentsOf: url)
        XCTAssertEqual(f.tensorNames, sample.map(\.name))  // Given order is kept.
        XCTAssertEqual(f.metadata, ["format": "pt", "α": "β \"q\""])
        for (name, t) in sample {
            XCTAssertEqual(f.info(name), TensorInfo(name: name, dtype: .float32, shape: t.shape))
            XCTAssertEqual(try f.tensor(named: name), t)
        }
    }

    func testRoundTripFloat16RoundsToNearestEven() throws {
        let values: [Float] = [1, 1 + 0x1p-11, 1 + 3 * 0x1p-11, 65504, 65520, 1e-8, -0x1p-24, 0.1, -0.0]
        let expected: [Float] = [1, 1, 1 + 0x1p-9, 65504, .infinity, 0, -0x1p-24, Float(Float16(0.1)), -0.0]
        let url = tmp.appendingPathComponent("h.safetensors")
        try SafetensorsWriter.write([("h", Tensor(shape: [values.count], scalars: values))], dtype: .float16, metadata: [:], to: url)
        let f = try SafetensorsFile(contentsOf: url)
        XCTAssertEqual(f.info("h")?.dtype, .float16)
        let back = try f.tensor(named: "h").toArray()
        XCTAssertEqual(back, expected)
        XCTAssertEqual(back.map { $0.sign }, expected.map { $0.sign })
        // Half values survive a second round trip exactly.
        try SafetensorsWriter.write([("h", Tensor(shape: [back.count], scalars: back))], dtype: .float16, metadata: [:], to: url)
        XCTAssertEqual(try SafetensorsFile(contentsOf: url).tensor(named: "h").toArray(), back)
    }

    func testWriterIsDeterministicAndAligned() throws {
        let meta = ["z": "1", "a": "2", "m": "3", "format": "pt"]
        let a = try SafetensorsWriter.data(sample, dtype: .float32, metadata: meta)
        let b = try SafetensorsWriter.data(sample, dtype: .float32, metadata: meta)
        XCTAssertEqual(a, b)
        let headerLength = a.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        XCTAssertEqual(headerLength % 8, 0)
        let header = String(decoding: a[8..<(8 + Int(headerLength))], as: UTF8.self)
        XCTAssertEqual(header.trimmingCharacters(in: .whitespaces),
                       #"{"__metadata__":{"a":"2","format":"pt","m":"3","z":"1"},"encoder.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"encoder.bias":{"dtype":"F32","shape":[3],"data_offsets":[24,36]},"scalar":{"dtype":"F32","shape":[],"data_offsets":[36,40]},"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[40,40]}}"#)
        XCTAssertEqual(a.count, 8 + Int(headerLength) + 40)
        // Written through a file: byte-identical as well.
        let u1 = tmp.appendingPathComponent("1.safetensors"), u2 = tmp.appendingPathComponent("2.safetensors")
        try SafetensorsWriter.write(sample, dtype: .float16, metadata: meta, to: u1)
        try SafetensorsWriter.write(sample, dtype: .float16, metadata: meta, to: u2)
        XCTAssertEqual(try Data(contentsOf: u1), try Data(contentsOf: u2))
    }

    func testWriterRejectsBadInput() {
        assertThrows(try SafetensorsWriter.data(sample, dtype: .bfloat16, metadata: [:]), containing: ["bfloat16"])
        assertThrows(try SafetensorsWriter.data([("a", sample[0].tensor), ("a", sample[1].tensor)], dtype: .float32, metadata: [:]),
                     containing: ["duplicate", "'a'"])
        assertThrows(try SafetensorsWriter.data([("__metadata__", sample[0].tensor)], dtype: .float32, metadata: [:]),
                     containing: ["__metadata__"])
    }

    func testReaderValidation() throws {
        let four = floatBytes([1, 2, 3, 4])
        let cases: [(String, Data, [String])] = [
            ("beyond.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,20]}}"#, four), ["'w'", "outside"]),
            ("size.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#, four), ["'w'", "16 bytes"]),
            ("reversed.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, four), ["'w'"]),
            ("dtype.safetensors", rawFile(#"{"w":{"dtype":"C64","shape":[2],"data_offsets":[0,16]}}"#, four), ["'w'", "C64"]),
            ("shape.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#, four), ["'w'", "shape"]),
            ("overflow.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#, four), ["'w'", "overflow"]),
            ("huge.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,99999999999999999999999]}}"#, four), ["'w'", "data_offsets"]),
            ("json.safetensors", rawFile(#"{"w":{"dtype":"F32",}"#, four), ["corrupt safetensors header"]),
            ("meta.safetensors", rawFile(#"{"__metadata__":{"k":1}}"#, Data()), ["metadata", "'k'"]),
            ("twice.safetensors", rawFile(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, four), ["'w'", "twice"]),
            ("deep.safetensors", rawFile(String(repeating: "[", count: 10000), Data()), ["nesting"]),
            ("len.safetensors", { var d = Data(); d.u64(.max); d.append(Data("{}".utf8)); return d }(), ["truncated"]),
            ("tiny.safetensors", Data([1, 2, 3]), ["truncated"]),
        ]
        for (name, data, fragments) in cases {
            assertThrows(try SafetensorsFile(contentsOf: write(data, name)), containing: [name] + fragments)
        }
    }

    func testTruncatedCopiesNeverCrash() throws {
        let full = try SafetensorsWriter.data(sample, dtype: .float16, metadata: ["k": "v"])
        for cut in 0..<full.count {
            let url = try write(full.prefix(cut), "cut.safetensors")
            XCTAssertThrowsError(try SafetensorsFile(contentsOf: url), "cut at \(cut)")
        }
        var bytes = [UInt8](full)
        for i in 0..<bytes.count {
            bytes[i] ^= 0xA5
            if let f = try? SafetensorsFile(contentsOf: write(Data(bytes), "flip.safetensors")) {
                for n in f.tensorNames { _ = try f.tensor(named: n) }
            }
            bytes[i] ^= 0xA5
        }
    }

    func testJSONEscapesAndUnicodeNames() throws {
        let names = ["quote\"d", "back\\slash", "tab\tnew\nline", "ünïcødé.权重", "ctl\u{01}"]
        let tensors = names.map { (name: $0, tensor: Tensor(shape: [1], scalars: [1])) }
        let url = tmp.appendingPathComponent("esc.safetensors")
        try SafetensorsWriter.write(tensors, dtype: .float32, metadata: [:], to: url)
        XCTAssertEqual(try SafetensorsFile(contentsOf: url).tensorNames, names)
        // \u escapes including a surrogate pair, as other writers may emit.
        let raw = rawFile(#"{"\u00e9\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, Data([9]))
        let f = try SafetensorsFile(contentsOf: write(raw, "u.safetensors"))
        XCTAssertEqual(f.tensorNames, ["é😀"])
        XCTAssertEqual(try f.tensor(named: "é😀").toArray(), [9])
    }

    func testLargeFloat32ConversionIsFast() throws {
        let n = 16_000_000
        var scalars = [Float](repeating: 0, count: n)
        for i in stride(from: 0, to: n, by: 4099) { scalars[i] = Float(i) }
        let url = tmp.appendingPathComponent("big.safetensors")
        try SafetensorsWriter.write([("big", Tensor(shape: [4000, 4000], scalars: scalars))], dtype: .float32, metadata: [:], to: url)
        let f = try SafetensorsFile(contentsOf: url)
        let start = Date()
        let t = try f.tensor(named: "big")
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(t.toArray(), scalars)
        XCTAssertLessThan(elapsed, 1.0, "decoding 64 MB of float32 took \(elapsed) s")
    }
}
