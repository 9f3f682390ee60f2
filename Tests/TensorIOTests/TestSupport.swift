import Foundation
import Kernels
import XCTest
@testable import TensorIO

// MARK: - Byte helpers

extension Data {
    mutating func u16(_ v: UInt16) { Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) } }
}

func floatBytes(_ values: [Float]) -> Data {
    var d = Data()
    for v in values { d.u32(v.bitPattern) }
    return d
}

// MARK: - Zip builder (STORED entries, optionally ZIP64), as torch/miniz lays them out.

struct ZipBuilder {
    struct Entry {
        var name: String
        var data: Data
        /// Method written in both headers (0 = stored, 8 = deflate).
        var method: UInt16 = 0
    }

    var entries: [Entry] = []
    /// Emit ZIP64 records and saturate the 32-bit fields, forcing readers onto the ZIP64 path.
    var zip64 = false
    /// Pad each local header's extra field so data starts on a 64-byte boundary (like torch).
    var align64 = true

    mutating func add(_ name: String, _ data: Data, method: UInt16 = 0) {
        entries.append(Entry(name: name, data: data, method: method))
    }

    func build() -> Data {
        var out = Data()
        var offsets: [Int] = []
        for e in entries {
            offsets.append(out.count)
            let name = Data(e.name.utf8)
            var extra = Data()
            if align64 {
                let unpadded = out.count + 30 + name.count + 4
                let pad = (64 - unpadded % 64) % 64
                extra.u16(0x4246)  // "FB"
                extra.u16(UInt16(pad))
                extra.append(Data(repeating: 0x5A, count: pad))
            }
            out.u32(0x0403_4b50)
            out.u16(20); out.u16(0); out.u16(e.method); out.u16(0); out.u16(0)
            out.u32(0)  // crc (not checked by readers of stored torch files)
            out.u32(UInt32(e.data.count)); out.u32(UInt32(e.data.count))
            out.u16(UInt16(name.count)); out.u16(UInt16(extra.count))
            out.append(name); out.append(extra); out.append(e.data)
        }
        let cdStart = out.count
        for (e, off) in zip(entries, offsets) {
            let name = Data(e.name.utf8)
            var extra = Data()
            if zip64 {
                extra.u16(0x0001); extra.u16(24)
                extra.u64(UInt64(e.data.count)); extra.u64(UInt64(e.data.count)); extra.u64(UInt64(off))
            }
            out.u32(0x0201_4b50)
            out.u16(45); out.u16(45); out.u16(0); out.u16(e.method); out.u16(0); out.u16(0)
            out.u32(0)
            let sat: UInt32 = 0xFFFF_FFFF
            out.u32(zip64 ? sat : UInt32(e.data.count)); out.u32(zip64 ? sat : UInt32(e.data.count))
            out.u16(UInt16(name.count)); out.u16(UInt16(extra.count)); out.u16(0)
            out.u16(0); out.u16(0); out.u32(0)
            out.u32(zip64 ? sat : UInt32(off))
            out.append(name); out.append(extra)
        }
        let cdSize = out.count - cdStart
        if zip64 {
            let z64 = out.count
            out.u32(0x0606_4b50); out.u64(44); out.u16(45); out.u16(45); out.u32(0); out.u32(0)
            out.u64(UInt64(entries.count)); out.u64(UInt64(entries.count))
            out.u64(UInt64(cdSize)); out.u64(UInt64(cdStart))
            out.u32(0x0706_4b50); out.u32(0); out.u64(UInt64(z64)); out.u32(1)
        }
        out.u32(0x0605_4b50); out.u16(0); out.u16(0)
        out.u16(zip64 ? 0xFFFF : UInt16(entries.count)); out.u16(zip64 ? 0xFFFF : UInt16(entries.count))
        out.u32(zip64 ? 0xFFFF_FFFF : UInt32(cdSize)); out.u32(zip64 ? 0xFFFF_FFFF : UInt32(cdStart))
        out.u16(0)
        return out
    }
}

// MARK: - Pickle builder (protocol 2 opcodes, as torch.save emits them)

struct PickleBuilder {
    var bytes = Data([0x80, 0x02])

    mutating func op(_ b: UInt8) { bytes.append(b) }
    mutating func raw(_ d: [UInt8]) { bytes.append(contentsOf: d) }
    mutating func mark() { op(0x28) }
    mutating func emptyDict() { op(0x7D) }
    mutating func emptyTuple() { op(0x29) }
    mutating func tuple() { op(0x74) }
    mutating func tuple(_ n: Int) { op(UInt8(0x84 + n)) }
    mutating func setItem() { op(0x73) }
    mutating func setItems() { op(0x75) }
    mutating func reduce() { op(0x52) }
    mutating func build() { op(0x62) }
    mutating func persid() { op(0x51) }
    mutating func newFalse() { op(0x89) }
    mutating func stop() { op(0x2E) }
    mutating func binput(_ i: UInt8) { raw([0x71, i]) }
    mutating func binget(_ i: UInt8) { raw([0x68, i]) }

    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        op(0x58)
        bytes.u32(UInt32(u.count))
        raw(u)
    }

    mutating func global(_ module: String, _ name: String) {
        op(0x63)
        raw(Array("\(module)\n\(name)\n".utf8))
    }

    /// Picks the smallest integer opcode, as pickle does (LONG1 beyond 32-bit signed).
    mutating func int(_ v: Int) {
        if v >= 0 && v < 256 { raw([0x4B, UInt8(v)]) }
        else if v >= 0 && v < 65536 { op(0x4D); bytes.u16(UInt16(v)) }
        else if v >= Int(Int32.min) && v <= Int(Int32.max) { op(0x4A); bytes.u32(UInt32(bitPattern: Int32(v))) }
        else {
            var b = withUnsafeBytes(of: Int64(v).littleEndian) { Array($0) }
            // Trim redundant sign bytes like Python's encode_long.
            while b.count > 1 {
                let last = b[b.count - 1], prev = b[b.count - 2]
                if (last == 0 && prev & 0x80 == 0) || (last == 0xFF && prev & 0x80 != 0) { b.removeLast() } else { break }
            }
            raw([0x8A, UInt8(b.count)] + b)
        }
    }

    mutating func intTuple(_ values: [Int]) {
        if values.isEmpty { emptyTuple(); return }
        if values.count <= 3 {
            for v in values { int(v) }
            tuple(values.count)
        } else {
            mark(); for v in values { int(v) }; tuple()
        }
    }

    /// `_rebuild_tensor_v2((storage pid), offset, size, stride, False, OrderedDict())`.
    mutating func tensor(storage: String = "FloatStorage", key: String, numel: Int, offset: Int = 0,
                         shape: [Int], stride: [Int]? = nil) {
        global("torch._utils", "_rebuild_tensor_v2")
        mark()
        mark(); string("storage"); global("torch", storage); string(key); string("cpu"); int(numel); tuple()
        persid()
        int(offset)
        intTuple(shape)
        intTuple(stride ?? StridedLayout.contiguousStrides(shape))
        newFalse()
        global("collections", "OrderedDict"); emptyTuple(); reduce()
        tuple()
        reduce()
    }
}

/// One tensor of a synthetic checkpoint.
struct SyntheticTensor {
    var name: String
    var storage = "FloatStorage"
    var key: String
    var numel: Int
    var offset = 0
    var shape: [Int]
    var stride: [Int]? = nil
}

/// Pickles `{"model": OrderedDict(tensors…)}` (with the `_metadata` BUILD) or a plain top-level dict.
func stateDictPickle(_ tensors: [SyntheticTensor], wrapInModel: Bool = true) -> Data {
    var p = PickleBuilder()
    p.emptyDict()
    if wrapInModel {
        p.string("model")
        p.global("collections", "OrderedDict"); p.emptyTuple(); p.reduce()
    }
    p.mark()
    for t in tensors {
        p.string(t.name)
        p.tensor(storage: t.storage, key: t.key, numel: t.numel, offset: t.offset, shape: t.shape, stride: t.stride)
    }
    p.setItems()
    if wrapInModel {
        p.emptyDict(); p.string("_metadata")
        p.global("collections", "OrderedDict"); p.emptyTuple(); p.reduce()
        p.string(""); p.emptyDict(); p.string("version"); p.int(1); p.setItem(); p.setItem()
        p.setItem()
        p.build()
        p.setItem()
    }
    p.stop()
    return p.bytes
}

/// A torch-style zip: `<prefix>/data.pkl`, `byteorder`, `data/<key>` storages, `version`.
func checkpointData(pickle: Data, storages: [(String, Data)], prefix: String = "archive", zip64: Bool = false) -> Data {
    var z = ZipBuilder()
    z.zip64 = zip64
    z.add("\(prefix)/data.pkl", pickle)
    z.add("\(prefix)/byteorder", Data("little".utf8))
    for (k, d) in storages { z.add("\(prefix)/data/\(k)", d) }
    z.add("\(prefix)/version", Data("3\n".utf8))
    return z.build()
}

// MARK: - Temporary files and fixtures

class TempDirTestCase: XCTestCase {
    var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("tensorio-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: tmp)
    }

    func write(_ data: Data, _ name: String) throws -> URL {
        let url = tmp.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    /// Asserts that `body` throws a `TensorIOError` whose message contains every fragment.
    func assertThrows<T>(_ body: @autoclosure () throws -> T, containing fragments: [String],
                         file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try body()
            XCTFail("expected a TensorIOError containing \(fragments)", file: file, line: line)
        } catch let e as TensorIOError {
            for f in fragments {
                XCTAssertTrue(e.description.contains(f), "'\(e.description)' lacks '\(f)'", file: file, line: line)
            }
            XCTAssertFalse(e.description.contains("\n"), "error message is not one line: \(e.description)", file: file, line: line)
        } catch {
            XCTFail("unexpected error type \(type(of: error)): \(error)", file: file, line: line)
        }
    }
}

enum Fixtures {
    static func url(_ name: String) throws -> URL {
        guard let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw TensorIOError("Fixtures folder missing from the test bundle")
        }
        return dir.appendingPathComponent(name)
    }

    struct ExpectedTensor: Decodable {
        let dtype: String
        let shape: [Int]
        let values: [Double]
    }

    struct ExpectedFile: Decodable {
        let names: [String]?
        let tensors: [String: ExpectedTensor]?
        let prefix: String?
        let metadata: [String: String]?
        // NumPy entries.
        let dtype: String?
        let shape: [Int]?
        let values: [Double]?
    }

    static func expected() throws -> [String: ExpectedFile] {
        try JSONDecoder().decode([String: ExpectedFile].self, from: Data(contentsOf: url("expected.json")))
    }
}
