import Foundation
import Kernels

/// Reading and writing NumPy `.npy` files, for exchanging test vectors with Python.
public enum NumPy {
    private static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)

    /// Writes `tensor` as a C-order little-endian float32 (`<f4`) array.
    public static func write(_ tensor: Tensor, to url: URL) throws {
        var out = header(descr: "<f4", shape: tensor.shape)
        #if _endian(little)
        tensor.withElements { out.append(contentsOf: UnsafeRawBufferPointer($0)) }
        #else
        tensor.withElements { $0.map { $0.bitPattern.littleEndian } }.withUnsafeBytes { out.append(contentsOf: $0) }
        #endif
        try save(out, to: url)
    }

    /// Writes bytes (e.g. a mask) as a C-order `|u1` array of the given shape.
    public static func writeUInt8(_ values: [UInt8], shape: [Int], to url: URL) throws {
        guard let n = checkedProduct(shape), n == values.count else {
            throw TensorIOError("\(url.lastPathComponent): shape \(shape) does not match \(values.count) values")
        }
        var out = header(descr: "|u1", shape: shape)
        out.append(contentsOf: values)
        try save(out, to: url)
    }

    /// Reads a C-order `.npy` file (format 1.0, 2.0 or 3.0) of `<f4`, `<f2`, `<f8`, `|u1`, `|b1`,
    /// `|i1`, `<i2`, `<i4` or `<i8` elements, converted to Float32.
    public static func read(_ url: URL) throws -> Tensor {
        let file = try MappedFile(url: url)
        let name = file.name
        let r = file.reader
        guard r.contains(0, 10), try r.bytes(0, 6, "magic") == magic else {
            throw TensorIOError("\(name): not a NumPy .npy file (bad magic)")
        }
        let major = try r.u8(6, "version")
        let minor = try r.u8(7, "version")
        let headerLength: Int
        let headerStart: Int
        switch (major, minor) {
        case (1, 0):
            headerLength = Int(try r.u16(8, "header length")); headerStart = 10
        case (2, 0), (3, 0):
            headerLength = Int(try r.u32(8, "header length")); headerStart = 12
        default:
            throw TensorIOError("\(name): unsupported .npy format version \(major).\(minor)")
        }
        let text = try r.bytes(headerStart, headerLength, ".npy header")
        let dict: [String: PyLiteral]
        do {
            dict = try PyLiteralParser.parseDict(text)
        } catch let e as PyLiteralParser.Failure {
            throw TensorIOError("\(name): corrupt .npy header: \(e.message)")
        }
        guard case .string(let descr)? = dict["descr"] else {
            throw TensorIOError("\(name): .npy header has no string 'descr' (structured dtypes are not supported)")
        }
        guard case .bool(let fortran)? = dict["fortran_order"] else {
            throw TensorIOError("\(name): .npy header has no boolean 'fortran_order'")
        }
        guard !fortran else {
            throw TensorIOError("\(name): Fortran-order .npy arrays are not supported; save with np.ascontiguousarray")
        }
        guard case .tuple(let shape)? = dict["shape"] else {
            throw TensorIOError("\(name): .npy header has no tuple 'shape'")
        }
        guard shape.allSatisfy({ $0 >= 0 }), let count = checkedProduct(shape) else {
            throw TensorIOError("\(name): invalid .npy shape \(shape)")
        }
        let dtype = try dtype(descr: descr, file: name)
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        let dataStart = headerStart + headerLength
        guard !overflow, r.contains(dataStart, bytes) else {
            throw TensorIOError("\(name): truncated: shape \(shape) of '\(descr)' needs \(overflow ? "more" : String(bytes)) data bytes, file has \(max(0, r.count - dataStart))")
        }
        let layout = StridedLayout(dtype: dtype, offset: 0, shape: shape, strides: StridedLayout.contiguousStrides(shape))
        return decodeTensor(shape: shape, storage: try r.pointer(dataStart, bytes, "data"), layout: layout)
    }

    private static func dtype(descr: String, file: String) throws -> DType {
        var chars = Array(descr)
        guard chars.count >= 2 else { throw TensorIOError("\(file): unsupported .npy dtype '\(descr)'") }
        var order: Character = "="
        if "<>|=".contains(chars[0]) { order = chars.removeFirst() }
        let type: DType
        switch String(chars) {
        case "f4": type = .float32
        case "f2": type = .float16
        case "f8": type = .float64
        case "u1": type = .uint8
        case "b1": type = .bool
        case "i1": type = .int8
        case "i2": type = .int16
        case "i4": type = .int32
        case "i8": type = .int64
        default: throw TensorIOError("\(file): unsupported .npy dtype '\(descr)'")
        }
        if order == ">" && type.byteSize > 1 {
            throw TensorIOError("\(file): big-endian .npy dtype '\(descr)' is not supported")
        }
        return type
    }

    /// Builds magic, version, length and the padded header dict exactly as numpy lays it out:
    /// the data starts at a multiple of 64 bytes and the header ends with `\n`.
    private static func header(descr: String, shape: [Int]) -> Data {
        let shapeText: String
        switch shape.count {
        case 0: shapeText = "()"
        case 1: shapeText = "(\(shape[0]),)"
        default: shapeText = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var dict = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        // Version 1.0 stores the length in 2 bytes; longer headers (huge rank) need 2.0.
        let v1 = 10 + dict.count + 1 <= 0xFFFF
        let prefix = v1 ? 10 : 12
        let total = (prefix + dict.count + 1 + 63) / 64 * 64
        dict.append(contentsOf: [UInt8](repeating: 0x20, count: total - prefix - dict.count - 1))
        dict.append(0x0A)
        var out = Data(magic)
        out.append(contentsOf: v1 ? [1, 0] : [2, 0])
        if v1 {
            withUnsafeBytes(of: UInt16(dict.count).littleEndian) { out.append(contentsOf: $0) }
        } else {
            withUnsafeBytes(of: UInt32(dict.count).littleEndian) { out.append(contentsOf: $0) }
        }
        out.append(contentsOf: dict)
        return out
    }

    private static func save(_ data: Data, to url: URL) throws {
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw TensorIOError("\(url.lastPathComponent): cannot write: \(error.localizedDescription)")
        }
    }
}

/// The few Python literal forms a `.npy` header uses.
enum PyLiteral: Equatable {
    case string(String)
    case bool(Bool)
    case int(Int)
    case none
    case tuple([Int])
}

/// Parses the `repr` of a dict such as `{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }`,
/// tolerating any whitespace, trailing commas, either quote style and Python 2 `L` suffixes.
enum PyLiteralParser {
    struct Failure: Error { let message: String }

    static func parseDict(_ bytes: [UInt8]) throws -> [String: PyLiteral] {
        var i = 0
        func skip() { while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 } }
        func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }
        func expect(_ c: Character) throws {
            skip()
            guard let b = peek(), b == c.asciiValue else { throw Failure(message: "expected '\(c)' at byte \(i)") }
            i += 1
        }
        func string() throws -> String {
            guard let q = peek(), q == 0x27 || q == 0x22 else { throw Failure(message: "expected a string at byte \(i)") }
            i += 1
            var out: [UInt8] = []
            while true {
                guard let b = peek() else { throw Failure(message: "unterminated string") }
                i += 1
                if b == q { break }
                if b == 0x5C {  // Backslash: take the next byte literally.
                    guard let e = peek() else { throw Failure(message: "unterminated string") }
                    out.append(e); i += 1
                } else {
                    out.append(b)
                }
            }
            return String(decoding: out, as: UTF8.self)
        }
        func integer() throws -> Int {
            skip()
            let start = i
            if peek() == UInt8(ascii: "-") { i += 1 }
            while let b = peek(), b >= 0x30, b <= 0x39 { i += 1 }
            guard let v = Int(String(decoding: bytes[start..<i], as: UTF8.self)) else {
                throw Failure(message: "expected an integer at byte \(start)")
            }
            if peek() == UInt8(ascii: "L") { i += 1 }
            return v
        }
        func value() throws -> PyLiteral {
            skip()
            guard let b = peek() else { throw Failure(message: "unexpected end of header") }
            switch b {
            case 0x27, 0x22: return .string(try string())
            case UInt8(ascii: "("):
                i += 1
                var items: [Int] = []
                while true {
                    skip()
                    if peek() == UInt8(ascii: ")") { i += 1; break }
                    items.append(try integer())
                    skip()
                    if peek() == UInt8(ascii: ",") { i += 1; continue }
                    try expect(")")
                    break
                }
                return .tuple(items)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                return .int(try integer())
            default:
                let start = i
                while let c = peek(), (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) { i += 1 }
                switch String(decoding: bytes[start..<i], as: UTF8.self) {
                case "True": return .bool(true)
                case "False": return .bool(false)
                case "None": return .none
                default: throw Failure(message: "unsupported value at byte \(start)")
                }
            }
        }

        var dict: [String: PyLiteral] = [:]
        try expect("{")
        while true {
            skip()
            if peek() == UInt8(ascii: "}") { i += 1; break }
            let key = try string()
            try expect(":")
            dict[key] = try value()
            skip()
            if peek() == UInt8(ascii: ",") { i += 1; continue }
            try expect("}")
            break
        }
        skip()
        guard i == bytes.count else { throw Failure(message: "unexpected text after the header dict at byte \(i)") }
        return dict
    }
}
