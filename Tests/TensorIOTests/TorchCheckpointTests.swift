import Foundation
import Kernels
import XCTest
@testable import TensorIO

final class TorchCheckpointTests: TempDirTestCase {
    /// A valid two-tensor checkpoint: w [2,3] and b [3] in separate storages.
    func simpleCheckpoint(prefix: String = "archive", zip64: Bool = false) -> Data {
        let pickle = stateDictPickle([
            SyntheticTensor(name: "layer.weight", key: "0", numel: 6, shape: [2, 3]),
            SyntheticTensor(name: "layer.bias", key: "1", numel: 3, shape: [3]),
        ])
        return checkpointData(pickle: pickle, storages: [
            ("0", floatBytes([1, 2, 3, 4, 5, 6])),
            ("1", floatBytes([-1, 0.5, 1e-30])),
        ], prefix: prefix, zip64: zip64)
    }

    func testReadsMetaStyleStateDict() throws {
        let url = try write(simpleCheckpoint(), "ck.pt")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(ck.prefix, "archive")
        XCTAssertEqual(ck.tensorNames, ["layer.weight", "layer.bias"])
        XCTAssertEqual(ck.info("layer.weight"), TensorInfo(name: "layer.weight", dtype: .float32, shape: [2, 3]))
        XCTAssertNil(ck.info("missing"))
        XCTAssertEqual(try ck.tensor(named: "layer.weight"), Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]))
        XCTAssertEqual(try ck.tensor(named: "layer.bias").toArray(), [-1, 0.5, 1e-30])
        assertThrows(try ck.tensor(named: "nope"), containing: ["ck.pt", "nope"])
    }

    func testTopLevelDictWithoutModelKey() throws {
        let pickle = stateDictPickle([SyntheticTensor(name: "x", key: "0", numel: 2, shape: [2])], wrapInModel: false)
        let url = try write(checkpointData(pickle: pickle, storages: [("0", floatBytes([7, 8]))]), "plain.pt")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(ck.tensorNames, ["x"])
        XCTAssertEqual(try ck.tensor(named: "x").toArray(), [7, 8])
    }

    func testPrefixComesFromFirstEntry() throws {
        let url = try write(simpleCheckpoint(prefix: "some.odd name-v3"), "renamed.bin")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(ck.prefix, "some.odd name-v3")
        XCTAssertEqual(try ck.tensor(named: "layer.bias").toArray(), [-1, 0.5, 1e-30])
    }

    func testZip64() throws {
        let url = try write(simpleCheckpoint(zip64: true), "z64.pt")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(try ck.tensor(named: "layer.weight").toArray(), [1, 2, 3, 4, 5, 6])
        // Saturated fields without a ZIP64 locator must be rejected, not trusted.
        var data = simpleCheckpoint(zip64: true)
        let locator = data.count - 22 - 20
        data.replaceSubrange(locator..<(locator + 4), with: [0, 0, 0, 0])
        assertThrows(try TorchCheckpoint(contentsOf: write(data, "nolocator.pt")), containing: ["nolocator.pt", "ZIP64"])
    }

    func testSharedStorageOffsetAndStrides() throws {
        // Storage holds 0..<20 as a 4x5 matrix; views into it with offsets and strides.
        let pickle = stateDictPickle([
            SyntheticTensor(name: "full", key: "0", numel: 20, shape: [4, 5]),
            SyntheticTensor(name: "window", key: "0", numel: 20, offset: 6, shape: [2, 3], stride: [5, 1]),
            SyntheticTensor(name: "transposed", key: "0", numel: 20, shape: [5, 4], stride: [1, 5]),
            SyntheticTensor(name: "column", key: "0", numel: 20, offset: 3, shape: [4], stride: [5]),
            SyntheticTensor(name: "broadcast", key: "0", numel: 20, offset: 2, shape: [3, 2], stride: [0, 1]),
            SyntheticTensor(name: "scalar", key: "0", numel: 20, offset: 19, shape: [], stride: []),
            SyntheticTensor(name: "empty", key: "0", numel: 20, offset: 0, shape: [0, 5]),
        ])
        let url = try write(checkpointData(pickle: pickle, storages: [("0", floatBytes((0..<20).map(Float.init)))]), "views.pt")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(try ck.tensor(named: "full").toArray(), (0..<20).map(Float.init))
        XCTAssertEqual(try ck.tensor(named: "window").toArray(), [6, 7, 8, 11, 12, 13])
        XCTAssertEqual(try ck.tensor(named: "transposed").toArray(), [0, 5, 10, 15, 1, 6, 11, 16, 2, 7, 12, 17, 3, 8, 13, 18, 4, 9, 14, 19])
        XCTAssertEqual(try ck.tensor(named: "column").toArray(), [3, 8, 13, 18])
        XCTAssertEqual(try ck.tensor(named: "broadcast").toArray(), [2, 3, 2, 3, 2, 3])
        XCTAssertEqual(try ck.tensor(named: "scalar"), Tensor(shape: [], scalars: [19]))
        XCTAssertEqual(try ck.tensor(named: "empty").shape, [0, 5])
    }

    func testViewOutOfBoundsIsRejected() throws {
        for (offset, shape, stride) in [(15, [2, 3], [5, 1]), (0, [5, 4], [1, 6]), (-1, [1], [1]), (0, [2], [-1]), (0, [Int.max, 2], [Int.max, 1])] {
            let pickle = stateDictPickle([SyntheticTensor(name: "bad.view", key: "0", numel: 20, offset: offset, shape: shape, stride: stride)])
            let url = try write(checkpointData(pickle: pickle, storages: [("0", floatBytes((0..<20).map(Float.init)))]), "oob.pt")
            assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["oob.pt", "bad.view"])
        }
    }

    func testStorageShorterThanNumel() throws {
        let pickle = stateDictPickle([SyntheticTensor(name: "w", key: "0", numel: 10, shape: [10])])
        let url = try write(checkpointData(pickle: pickle, storages: [("0", floatBytes([1, 2, 3]))]), "short.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["short.pt", "archive/data/0", "12 bytes"])
    }

    func testMissingStorageEntry() throws {
        let pickle = stateDictPickle([SyntheticTensor(name: "w", key: "7", numel: 1, shape: [1])])
        let url = try write(checkpointData(pickle: pickle, storages: [("0", floatBytes([1]))]), "missing.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["missing.pt", "archive/data/7"])
    }

    func testCompressedEntryIsRejected() throws {
        var z = ZipBuilder()
        z.add("archive/data.pkl", stateDictPickle([SyntheticTensor(name: "w", key: "0", numel: 1, shape: [1])]), method: 8)
        z.add("archive/data/0", floatBytes([1]))
        let url = try write(z.build(), "deflated.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["deflated.pt", "archive/data.pkl", "compressed"])
    }

    func testHostileGlobalsAreRefused() throws {
        for (module, name) in [("os", "system"), ("builtins", "eval"), ("posix", "system"), ("subprocess", "Popen"),
                               ("torch", "load"), ("collections", "defaultdict"), ("torch._utils", "_rebuild_tensor")] {
            // Classic exploit shape: GLOBAL, args tuple, REDUCE.
            var p = PickleBuilder()
            p.global(module, name); p.string("echo pwned"); p.tuple(1); p.reduce(); p.stop()
            let url = try write(checkpointData(pickle: p.bytes, storages: []), "evil.pt")
            assertThrows(try TorchCheckpoint(contentsOf: url),
                         containing: ["evil.pt", "refusing to load", "\(module).\(name)", "state_dict never needs"])
            // Same via the protocol-4 STACK_GLOBAL form.
            var q = PickleBuilder()
            q.raw([0x8C, UInt8(module.utf8.count)] + Array(module.utf8))
            q.raw([0x8C, UInt8(name.utf8.count)] + Array(name.utf8))
            q.op(0x93); q.emptyTuple(); q.reduce(); q.stop()
            let url2 = try write(checkpointData(pickle: q.bytes, storages: []), "evil4.pt")
            assertThrows(try TorchCheckpoint(contentsOf: url2), containing: ["refusing to load", "\(module).\(name)"])
        }
    }

    func testUnknownOpcodeIsRejected() throws {
        var p = PickleBuilder()
        p.emptyDict(); p.op(0x69)  // INST: not supported
        p.raw(Array("os\nsystem\n".utf8)); p.stop()
        let url = try write(checkpointData(pickle: p.bytes, storages: []), "inst.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["inst.pt", "unsupported pickle opcode 0x69"])
    }

    func testMalformedPickles() throws {
        let cases: [(String, [UInt8])] = [
            ("STOP with 0 values", [0x80, 0x02, 0x2E]),
            ("memo", [0x80, 0x02, 0x68, 0x05, 0x2E]),
            ("MARK", [0x80, 0x02, 0x74, 0x2E]),
            ("past the end", [0x80, 0x02, 0x58, 0xFF, 0xFF, 0xFF, 0x7F]),
            ("past the end", [0x80, 0x02, 0x8D] + [UInt8](repeating: 0xFF, count: 8)),
            ("top-level object is a list, expected a dict", [0x80, 0x02, 0x5D, 0x2E]),
            ("SETITEM", [0x80, 0x02, 0x5D, 0x4B, 1, 0x4B, 2, 0x73, 0x2E]),
            ("persistent id", [0x80, 0x02, 0x7D, 0x4B, 1, 0x51, 0x2E]),
            ("REDUCE", [0x80, 0x02, 0x4B, 1, 0x29, 0x52, 0x2E]),
            ("STOP", [0x80, 0x02, 0x7D, 0x7D, 0x2E]),
        ]
        for (fragment, bytes) in cases {
            let url = try write(checkpointData(pickle: Data(bytes), storages: []), "bad.pt")
            assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["bad.pt", fragment])
        }
    }

    func testLong1AndOtherIntegerEncodings() throws {
        XCTAssertEqual(intValue(Unpickler.decodeLong([])), 0)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0xFF])), -1)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0x00, 0x80])), -32768)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0x00, 0x80, 0x00])), 32768)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0x00, 0x00, 0x00, 0x00, 0x01])), 1 << 32)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF])), Int.min)
        XCTAssertEqual(intValue(Unpickler.decodeLong([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 0x00])), Int.max)
        if case .bigInt = Unpickler.decodeLong([0, 0, 0, 0, 0, 0, 0, 0, 1]) {} else { XCTFail("2^64 must not fit") }

        // A checkpoint whose storage numel and offset are LONG1-encoded (large values) must round-trip
        // through the VM. Use BININT2 / BININT / LONG1 explicitly.
        var p = PickleBuilder()
        p.emptyDict(); p.mark(); p.string("t")
        p.global("torch._utils", "_rebuild_tensor_v2"); p.mark()
        p.mark(); p.string("storage"); p.global("torch", "FloatStorage"); p.string("0"); p.string("cpu")
        p.raw([0x8A, 0x01, 0x06]); p.tuple()  // numel 6 via LONG1
        p.persid()
        p.raw([0x8A, 0x02, 0x02, 0x00])       // offset 2 via LONG1 with a redundant byte
        p.raw([0x4D, 0x02, 0x00]); p.tuple(1) // size (2,) via BININT2
        p.raw([0x4A, 0x03, 0, 0, 0]); p.tuple(1) // stride (3,) via BININT
        p.newFalse(); p.op(0x4E); p.tuple(); p.reduce()
        p.setItems(); p.stop()
        let url = try write(checkpointData(pickle: p.bytes, storages: [("0", floatBytes([0, 1, 2, 3, 4, 5]))]), "long.pt")
        XCTAssertEqual(try TorchCheckpoint(contentsOf: url).tensor(named: "t").toArray(), [2, 5])

        // A 2^64 size must be refused, not truncated.
        var q = PickleBuilder()
        q.emptyDict(); q.mark(); q.string("t")
        q.tensor(key: "0", numel: 1, shape: [1]); q.setItems(); q.stop()
        var bytes = [UInt8](q.bytes)
        // Replace the size tuple's BININT1 1 (first "K\x01\x85") with LONG1 2^64.
        if let i = (0..<(bytes.count - 2)).first(where: { bytes[$0] == 0x4B && bytes[$0 + 1] == 1 && bytes[$0 + 2] == 0x85 }) {
            bytes.replaceSubrange(i..<(i + 2), with: [0x8A, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        } else { XCTFail("pattern not found") }
        let url2 = try write(checkpointData(pickle: Data(bytes), storages: [("0", floatBytes([1]))]), "huge.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url2), containing: ["huge.pt", "size"])
    }

    private func intValue(_ v: PickleValue) -> Int? {
        if case .int(let i) = v { return i }
        return nil
    }

    func testProtocol4OpcodesAndFloats() throws {
        // FRAME, SHORT_BINUNICODE, MEMOIZE, BINGET of memoized values, BINUNICODE8, EMPTY_SET/ADDITEMS,
        // BINFLOAT, NONE, LONG_BINPUT/LONG_BINGET, APPENDS — the non-tensor values are simply skipped.
        var p = Data([0x80, 0x04, 0x95]); p.u64(0)
        p.append(0x7D); p.append(0x94)                       // {} memo0
        p.append(contentsOf: [0x28])                          // MARK
        p.append(contentsOf: [0x8C, 3] + Array("set".utf8)); p.append(0x94)
        p.append(contentsOf: [0x8F, 0x94, 0x28, 0x4B, 1, 0x4B, 2, 0x90])  // set {1, 2}
        p.append(contentsOf: [0x8D]); p.u64(5); p.append(contentsOf: Array("float".utf8))
        p.append(0x47); p.u64(UInt64(1.5.bitPattern).byteSwapped)       // BINFLOAT 1.5 (big-endian)
        p.append(contentsOf: [0x8C, 4] + Array("list".utf8))
        p.append(contentsOf: [0x5D, 0x72]); p.u32(1000)                  // [] LONG_BINPUT 1000
        p.append(contentsOf: [0x28, 0x4E, 0x88, 0x65])                   // APPENDS None, True
        p.append(contentsOf: [0x8C, 5] + Array("again".utf8))
        p.append(0x6A); p.u32(1000)                                      // LONG_BINGET 1000
        // The tensor, with protocol-4 string/global opcodes.
        p.append(contentsOf: [0x8C, 1] + Array("t".utf8))
        p.append(contentsOf: [0x8C, 12] + Array("torch._utils".utf8) + [0x8C, 18] + Array("_rebuild_tensor_v2".utf8) + [0x93])
        p.append(contentsOf: [0x28, 0x28, 0x8C, 7] + Array("storage".utf8))
        p.append(contentsOf: [0x8C, 5] + Array("torch".utf8) + [0x8C, 11] + Array("HalfStorage".utf8) + [0x93])
        p.append(contentsOf: [0x8C, 1, 0x30, 0x8C, 3] + Array("cpu".utf8) + [0x4B, 2, 0x74, 0x51])
        p.append(contentsOf: [0x4B, 0, 0x4B, 2, 0x85, 0x4B, 1, 0x85, 0x89, 0x29, 0x74, 0x52])
        p.append(contentsOf: [0x75, 0x2E])
        var half = Data(); half.u16(Float16(0.5).bitPattern); half.u16(Float16(-3).bitPattern)
        let url = try write(checkpointData(pickle: p, storages: [("0", half)]), "p4.pt")
        let ck = try TorchCheckpoint(contentsOf: url)
        XCTAssertEqual(ck.tensorNames, ["t"])
        XCTAssertEqual(ck.info("t")?.dtype, .float16)
        XCTAssertEqual(try ck.tensor(named: "t").toArray(), [0.5, -3])
    }

    func testParameterWrapperAndAllStorageTypes() throws {
        let types: [(String, DType, Data, [Float])] = [
            ("HalfStorage", .float16, { var d = Data(); for v: Float16 in [1, -2.5, 65504] { d.u16(v.bitPattern) }; return d }(), [1, -2.5, 65504]),
            ("BFloat16Storage", .bfloat16, { var d = Data(); for v: Float in [1, -3, 1e30] { d.u16(UInt16(v.bitPattern >> 16)) }; return d }(),
             [1, -3, Float(bitPattern: (Float(1e30).bitPattern >> 16) << 16)]),
            ("DoubleStorage", .float64, { var d = Data(); for v in [0.1, -1e10, 3.0] { d.u64(v.bitPattern) }; return d }(), [Float(0.1), -1e10, 3]),
            ("LongStorage", .int64, { var d = Data(); for v: Int64 in [-5, 1 << 40, 7] { d.u64(UInt64(bitPattern: v)) }; return d }(), [-5, Float(1 << 40), 7]),
            ("IntStorage", .int32, { var d = Data(); for v: Int32 in [-5, .max, 7] { d.u32(UInt32(bitPattern: v)) }; return d }(), [-5, Float(Int32.max), 7]),
            ("ShortStorage", .int16, { var d = Data(); for v: Int16 in [-5, .min, 7] { d.u16(UInt16(bitPattern: v)) }; return d }(), [-5, -32768, 7]),
            ("CharStorage", .int8, Data([0xFF, 0x80, 0x7F]), [-1, -128, 127]),
            ("ByteStorage", .uint8, Data([0xFF, 0x80, 0x7F]), [255, 128, 127]),
            ("BoolStorage", .bool, Data([0, 1, 2]), [0, 1, 1]),
        ]
        for (storage, dtype, bytes, expected) in types {
            var p = PickleBuilder()
            p.emptyDict(); p.mark(); p.string("p")
            p.global("torch._utils", "_rebuild_parameter")
            p.tensor(storage: storage, key: "0", numel: 3, shape: [3])
            p.op(0x88); p.global("collections", "OrderedDict"); p.emptyTuple(); p.reduce(); p.tuple(3); p.reduce()
            p.setItems(); p.stop()
            let url = try write(checkpointData(pickle: p.bytes, storages: [("0", bytes)]), "\(storage).pt")
            let ck = try TorchCheckpoint(contentsOf: url)
            XCTAssertEqual(ck.info("p")?.dtype, dtype, storage)
            XCTAssertEqual(try ck.tensor(named: "p").toArray(), expected, storage)
            // Strided path of the same element type: every other element reversed? Use stride 2.
            var q = PickleBuilder()
            q.emptyDict(); q.mark(); q.string("s")
            q.tensor(storage: storage, key: "0", numel: 3, shape: [2], stride: [2])
            q.setItems(); q.stop()
            let url2 = try write(checkpointData(pickle: q.bytes, storages: [("0", bytes)]), "\(storage)-strided.pt")
            XCTAssertEqual(try TorchCheckpoint(contentsOf: url2).tensor(named: "s").toArray(), [expected[0], expected[2]], storage)
        }
    }

    func testTruncatedCopiesThrow() throws {
        let full = simpleCheckpoint()
        XCTAssertNoThrow(try TorchCheckpoint(contentsOf: write(full, "full.pt")))
        for cut in 0..<full.count {
            let url = try write(full.prefix(cut), "cut.pt")
            XCTAssertThrowsError(try TorchCheckpoint(contentsOf: url), "cut at \(cut) did not throw")
        }
    }

    func testCorruptedBytesNeverCrash() throws {
        // Flip each byte in turn; opening may succeed or throw but must never trap, and every tensor
        // of an archive that opens must decode.
        let full = [UInt8](simpleCheckpoint())
        var opened = 0
        for i in 0..<full.count {
            for pattern: UInt8 in [0xFF, 0x80] {
                var bytes = full
                bytes[i] ^= pattern
                let url = try write(Data(bytes), "flip.pt")
                guard let ck = try? TorchCheckpoint(contentsOf: url) else { continue }
                opened += 1
                for name in ck.tensorNames {
                    let t = try ck.tensor(named: name)
                    XCTAssertEqual(t.count, t.shape.reduce(1, *))
                }
            }
        }
        XCTAssertGreaterThan(opened, 0)  // Flips in padding/CRC fields are harmless.
    }

    func testDeeplyNestedPickleDoesNotOverflowTheStack() throws {
        // 200k nested 1-tuples, then a list appended into itself: teardown must not recurse.
        var p = PickleBuilder()
        p.emptyDict()
        p.mark(); p.string("deep"); p.op(0x4E)
        p.raw([UInt8](repeating: 0x85, count: 200_000))
        p.string("cycle"); p.op(0x5D); p.binput(1); p.binget(1); p.op(0x61)
        p.setItems(); p.stop()
        let url = try write(checkpointData(pickle: p.bytes, storages: []), "deep.pt")
        assertThrows(try TorchCheckpoint(contentsOf: url), containing: ["deep.pt", "no tensors found (keys: deep, cycle)"])
    }

    func testFormatDetection() throws {
        let pt = try TensorArchives.open(write(simpleCheckpoint(), "a.bin"))
        XCTAssertTrue(pt is TorchCheckpoint)
        XCTAssertEqual(pt.tensorNames, ["layer.weight", "layer.bias"])
        let st = try TensorArchives.open(write(SafetensorsWriter.data([("x", Tensor(shape: [1], scalars: [2]))]), "b.pt"))
        XCTAssertTrue(st is SafetensorsFile)
        XCTAssertEqual(try st.tensor(named: "x").toArray(), [2])
        assertThrows(try TensorArchives.open(write(Data("hello world, not weights".utf8), "c.pt")),
                     containing: ["c.pt", "not a PyTorch checkpoint or safetensors file"])
        assertThrows(try TensorArchives.open(write(Data(), "empty.pt")), containing: ["empty.pt", "not a PyTorch"])
        assertThrows(try TensorArchives.open(write(Data([0x80, 0x02, 0x8A, 0x0A]), "legacy.pt")), containing: ["legacy.pt", "legacy"])
        assertThrows(try TensorArchives.open(tmp.appendingPathComponent("absent.pt")), containing: ["absent.pt", "cannot open"])
    }
}
