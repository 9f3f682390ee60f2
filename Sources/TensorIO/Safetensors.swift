import Foundation
import Kernels

/// A memory-mapped safetensors file: `u64` little-endian header length, a JSON header, then raw
/// little-endian row-major tensor data addressed by `data_offsets` relative to the header's end.
public final class SafetensorsFile: TensorArchive {
    /// The file this archive maps.
    public let url: URL
    /// Tensor names in header order.
    public let tensorNames: [String]
    /// The header's `__metadata__` (string to string), empty if absent.
    public let metadata: [String: String]

    private struct Stored: Sendable {
        let info: TensorInfo
        /// Absolute file offset of the first element.
        let offset: Int
    }

    private let file: MappedFile
    private let tensors: [String: Stored]
    private let dataStart: Int

    /// The largest header accepted; far above any real model's and a guard against absurd lengths.
    static let maxHeaderLength = 100 << 20

    /// Opens and validates a safetensors file; throws `TensorIOError` on any inconsistency.
    public convenience init(contentsOf url: URL) throws {
        try self.init(file: MappedFile(url: url), url: url)
    }

    static func dtype(code: String) -> DType? {
        switch code {
        case "F32": .float32
        case "F16": .float16
        case "BF16": .bfloat16
        case "F64": .float64
        case "I64": .int64
        case "I32": .int32
        case "I16": .int16
        case "I8": .int8
        case "U8": .uint8
        case "BOOL": .bool
        default: nil
        }
    }

    static func code(for dtype: DType) -> String {
        switch dtype {
        case .float32: "F32"
        case .float16: "F16"
        case .bfloat16: "BF16"
        case .float64: "F64"
        case .int64: "I64"
        case .int32: "I32"
        case .int16: "I16"
        case .int8: "I8"
        case .uint8: "U8"
        case .bool: "BOOL"
        }
    }

    /// Cheap sniff used for format detection: a sane header length followed by `{`.
    static func looksLikeSafetensors(_ r: ByteReader) -> Bool {
        guard r.contains(0, 9), let n = try? r.u64(0, "header length"),
              n >= 2, n <= UInt64(maxHeaderLength), n <= UInt64(r.count - 8),
              let brace = try? r.u8(8, "header") else { return false }
        return brace == UInt8(ascii: "{")
    }

    init(file: MappedFile, url: URL) throws {
        self.file = file
        self.url = url
        let name = file.name
        let r = file.reader
        guard r.count >= 8 else {
            throw TensorIOError("\(name): truncated: \(r.count) bytes is too short for a safetensors header length")
        }
        let rawLength = try r.u64(0, "header length")
        guard rawLength <= UInt64(r.count - 8) else {
            throw TensorIOError("\(name): truncated: safetensors header claims \(rawLength) bytes but the file has \(r.count - 8) after the length")
        }
        guard rawLength <= UInt64(Self.maxHeaderLength) else {
            throw TensorIOError("\(name): safetensors header of \(rawLength) bytes exceeds the \(Self.maxHeaderLength)-byte limit")
        }
        let headerLength = Int(rawLength)
        let dataStart = 8 + headerLength
        let dataSize = r.count - dataStart

        let header: JSONValue
        do {
            header = try JSONParser.parse(try r.bytes(8, headerLength, "safetensors header"))
        } catch let e as JSONParser.Failure {
            throw TensorIOError("\(name): corrupt safetensors header: \(e.message)")
        }
        guard case .object(let members) = header else {
            throw TensorIOError("\(name): corrupt safetensors header: top level is a \(header.typeName), expected an object")
        }

        var names: [String] = []
        var tensors: [String: Stored] = [:]
        var metadata: [String: String] = [:]
        for (key, value) in members {
            guard case .object(let fields) = value else {
                throw TensorIOError("\(name): safetensors entry '\(key)' is a \(value.typeName), expected an object")
            }
            if key == "__metadata__" {
                for (mk, mv) in fields {
                    guard case .string(let s) = mv else {
                        throw TensorIOError("\(name): safetensors metadata '\(mk)' is a \(mv.typeName), expected a string")
                    }
                    metadata[mk] = s
                }
                continue
            }
            guard tensors[key] == nil else {
                throw TensorIOError("\(name): safetensors header lists tensor '\(key)' twice")
            }
            func field(_ f: String) -> JSONValue? { fields.first { $0.0 == f }?.1 }
            guard case .string(let code)? = field("dtype") else {
                throw TensorIOError("\(name): tensor '\(key)': missing or non-string 'dtype'")
            }
            guard let dtype = Self.dtype(code: code) else {
                throw TensorIOError("\(name): tensor '\(key)': unsupported dtype '\(code)'")
            }
            guard case .array(let shapeValues)? = field("shape") else {
                throw TensorIOError("\(name): tensor '\(key)': missing or non-array 'shape'")
            }
            let shape = try shapeValues.map { v -> Int in
                guard let d = v.nonNegativeInt else {
                    throw TensorIOError("\(name): tensor '\(key)': shape entry is not a non-negative integer")
                }
                return d
            }
            guard case .array(let offsets)? = field("data_offsets"), offsets.count == 2,
                  let begin = offsets[0].nonNegativeInt, let end = offsets[1].nonNegativeInt else {
                throw TensorIOError("\(name): tensor '\(key)': 'data_offsets' is not [begin, end] of non-negative integers")
            }
            guard begin <= end, end <= dataSize else {
                throw TensorIOError("\(name): tensor '\(key)': data_offsets [\(begin), \(end)] lie outside the \(dataSize)-byte data section")
            }
            guard let count = checkedProduct(shape) else {
                throw TensorIOError("\(name): tensor '\(key)': element count of shape \(shape) overflows")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, end - begin == bytes else {
                throw TensorIOError("\(name): tensor '\(key)': data_offsets span \(end - begin) bytes but shape \(shape) of \(code) needs \(overflow ? "more" : String(bytes))")
            }
            names.append(key)
            tensors[key] = Stored(info: TensorInfo(name: key, dtype: dtype, shape: shape), offset: dataStart + begin)
        }
        self.tensorNames = names
        self.tensors = tensors
        self.metadata = metadata
        self.dataStart = dataStart
    }

    /// Calls `body` with every byte of the file (length prefix, header and data), straight from
    /// the mapping: for checksums over the whole file.
    public func withFileBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: file.base, count: file.count))
    }

    /// Bytes of the length prefix and the JSON header: where the data section starts.
    public var headerEnd: Int { dataStart }

    /// Dtype and shape of `name` from the header, or `nil` if absent.
    public func info(_ name: String) -> TensorInfo? {
        tensors[name]?.info
    }

    /// Calls `body` with the stored bytes of `name` (little-endian, row-major, as on disk), read
    /// straight from the mapping: for callers that convert a dtype themselves.
    public func withRawBytes<R>(of name: String, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard let s = tensors[name] else {
            throw TensorIOError("\(file.name): no tensor named '\(name)'")
        }
        let count = s.info.shape.reduce(1, *) * s.info.dtype.byteSize
        // Validated at open: the tensor's bytes lie inside the file.
        return try body(UnsafeRawBufferPointer(start: file.base.map { $0 + s.offset }, count: count))
    }

    /// Decodes `name` to Float32 straight from the mapping (a memcpy for F32 data).
    public func tensor(named name: String) throws -> Tensor {
        guard let s = tensors[name] else {
            throw TensorIOError("\(file.name): no tensor named '\(name)'")
        }
        let shape = s.info.shape
        let layout = StridedLayout(dtype: s.info.dtype, offset: 0, shape: shape,
                                   strides: StridedLayout.contiguousStrides(shape))
        // Validated at open: the tensor's bytes lie inside the file.
        return decodeTensor(shape: shape, storage: file.base.map { $0 + s.offset }, layout: layout)
    }
}

/// Writes safetensors files deterministically: the same input always yields the same bytes.
public enum SafetensorsWriter {
    /// Serializes `tensors` (in the given order) as `dtype` (`.float32` or `.float16`).
    ///
    /// The header lists `__metadata__` first (keys sorted, omitted when empty), then each tensor as
    /// `{"dtype":…,"shape":[…],"data_offsets":[b,e]}` in input order, padded with spaces to a
    /// multiple of 8 bytes so the data section is 8-byte aligned. Float16 uses round-to-nearest-even.
    public static func data(_ tensors: [(name: String, tensor: Tensor)], dtype: DType = .float32,
                            metadata: [String: String] = [:]) throws -> Data {
        guard dtype == .float32 || dtype == .float16 else {
            throw TensorIOError("safetensors writer: unsupported dtype \(dtype.rawValue) (use float32 or float16)")
        }
        return try data(entries: tensors.map { ($0.name, $0.tensor, dtype) }, metadata: metadata)
    }

    /// Like ``data(_:dtype:metadata:)`` with a dtype per tensor: `.float32`, `.float16`, or `.int16`
    /// / `.uint8` for tensors whose values are whole numbers in that type's range (quantised data,
    /// masks).
    public static func data(entries tensors: [(name: String, tensor: Tensor, dtype: DType)],
                            metadata: [String: String] = [:]) throws -> Data {
        try data(entries: tensors.map { Entry(name: $0.name, tensor: $0.tensor, dtype: $0.dtype) }, metadata: metadata)
    }

    /// One tensor to write: float values to convert to `dtype`, or bytes already laid out as
    /// `dtype` stores them (little-endian, row-major) — for codes and blobs made elsewhere.
    public struct Entry: Sendable {
        public enum Payload: Sendable {
            case values(Tensor)
            case bytes([UInt8])
        }

        public let name: String
        public let dtype: DType
        public let shape: [Int]
        public let payload: Payload

        /// `tensor`'s values, converted to `dtype` (`.float32`, `.float16`, `.int16` or `.uint8`).
        public init(name: String, tensor: Tensor, dtype: DType) {
            (self.name, self.dtype, self.shape, self.payload) = (name, dtype, tensor.shape, .values(tensor))
        }

        /// Bytes stored as they are; their count must match `shape` and `dtype`.
        public init(name: String, bytes: [UInt8], dtype: DType, shape: [Int]) {
            (self.name, self.dtype, self.shape, self.payload) = (name, dtype, shape, .bytes(bytes))
        }

        var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
    }

    /// Serializes `entries` (in the given order) with `metadata`.
    public static func data(entries: [Entry], metadata: [String: String] = [:]) throws -> Data {
        var seen = Set<String>()
        for entry in entries {
            let name = entry.name
            switch entry.payload {
            case .values(let tensor):
                let dtype = entry.dtype
                guard [.float32, .float16, .int16, .uint8].contains(dtype) else {
                    throw TensorIOError("safetensors writer: unsupported dtype \(dtype.rawValue) for '\(name)' (use float32, float16, int16 or uint8)")
                }
                let range: ClosedRange<Float>? = dtype == .int16 ? -32768...32767 : dtype == .uint8 ? 0...255 : nil
                if let range, let bad = tensor.withElements({ $0.first { !($0 == $0.rounded() && range.contains($0)) } }) {
                    throw TensorIOError("safetensors writer: '\(name)' holds \(bad), which is not a \(dtype.rawValue) value")
                }
            case .bytes(let bytes):
                guard bytes.count == entry.byteCount else {
                    throw TensorIOError("safetensors writer: '\(name)' has \(bytes.count) bytes, its shape \(entry.shape) and \(entry.dtype.rawValue) need \(entry.byteCount)")
                }
            }
            guard name != "__metadata__" else {
                throw TensorIOError("safetensors writer: '__metadata__' is reserved and cannot name a tensor")
            }
            guard seen.insert(name).inserted else {
                throw TensorIOError("safetensors writer: duplicate tensor name '\(name)'")
            }
        }

        var header: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        if !metadata.isEmpty {
            header.append(contentsOf: Array("\"__metadata__\":{".utf8))
            for (i, key) in metadata.keys.sorted().enumerated() {
                if i > 0 { header.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &header)
                header.append(UInt8(ascii: ":"))
                appendJSONString(metadata[key] ?? "", to: &header)
            }
            header.append(UInt8(ascii: "}"))
            first = false
        }
        var offset = 0
        for entry in entries {
            if !first { header.append(UInt8(ascii: ",")) }
            first = false
            let code = SafetensorsFile.code(for: entry.dtype)
            let bytes = entry.byteCount
            appendJSONString(entry.name, to: &header)
            let shape = entry.shape.map(String.init).joined(separator: ",")
            header.append(contentsOf: Array(":{\"dtype\":\"\(code)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + bytes)]}".utf8))
            offset += bytes
        }
        header.append(UInt8(ascii: "}"))
        while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }

        var out = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for entry in entries {
            switch entry.payload {
            case .bytes(let bytes): out.append(contentsOf: bytes)
            case .values(let tensor): append(tensor, as: entry.dtype, to: &out)
            }
        }
        return out
    }

    /// Appends `tensor`'s values converted to `dtype`, little-endian.
    private static func append(_ tensor: Tensor, as dtype: DType, to out: inout Data) {
        switch dtype {
        case .int16:
            let words = tensor.withElements { $0.map { Int16($0).littleEndian } }
            words.withUnsafeBytes { out.append(contentsOf: $0) }
        case .uint8:
            out.append(contentsOf: tensor.withElements { $0.map { UInt8($0) } })
        case .float16:
            let halves = tensor.withElements { $0.map { floatToHalfBits($0).littleEndian } }
            halves.withUnsafeBytes { out.append(contentsOf: $0) }
        default:
            #if _endian(little)
            tensor.withElements { out.append(contentsOf: UnsafeRawBufferPointer($0)) }
            #else
            let words = tensor.withElements { $0.map { $0.bitPattern.littleEndian } }
            words.withUnsafeBytes { out.append(contentsOf: $0) }
            #endif
        }
    }

    /// Writes `data(tensors, dtype:metadata:)` to `url` atomically.
    public static func write(_ tensors: [(name: String, tensor: Tensor)], dtype: DType = .float32,
                             metadata: [String: String] = [:], to url: URL) throws {
        let bytes = try data(tensors, dtype: dtype, metadata: metadata)
        do {
            try bytes.write(to: url, options: .atomic)
        } catch {
            throw TensorIOError("\(url.lastPathComponent): cannot write: \(error.localizedDescription)")
        }
    }
}
