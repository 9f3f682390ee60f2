import Kernels

/// Element types that may appear in weight files. Every one is converted to `Float` on load,
/// because the kernels compute in Float32 only.
public enum DType: String, Sendable, CaseIterable {
    /// IEEE binary32 / binary16, Google brain float, IEEE binary64.
    case float32, float16, bfloat16, float64
    /// Signed two's-complement integers and unsigned bytes.
    case int64, int32, int16, int8, uint8
    /// One byte per element; any nonzero byte reads as 1.
    case bool

    /// Bytes per element on disk.
    public var byteSize: Int {
        switch self {
        case .float64, .int64: 8
        case .float32, .int32: 4
        case .float16, .bfloat16, .int16: 2
        case .int8, .uint8, .bool: 1
        }
    }
}

// MARK: - Half-precision helpers

/// Decodes IEEE 754 binary16 bits exactly (every half is representable as a float).
///
/// Written out by hand rather than via `Float16` so it also works where `Float16` is unavailable
/// (macOS on Intel); it is exhaustively checked against `Float16` by the tests.
@inline(__always)
func halfBitsToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = UInt32(h >> 10) & 0x1F
    let man = UInt32(h & 0x3FF)
    if exp == 0x1F {  // Inf / NaN: keep the payload's top bits.
        return Float(bitPattern: sign | 0x7F80_0000 | (man << 13))
    }
    if exp == 0 {
        // Zero or subnormal: value = man · 2^-24, exact in Float.
        let magnitude = Float(man) * 0x1p-24
        return sign == 0 ? magnitude : -magnitude
    }
    return Float(bitPattern: sign | ((exp + 112) << 23) | (man << 13))
}

/// Encodes a float as binary16 with round-to-nearest-even, overflow to infinity, and gradual
/// underflow — the same result as `Float16(x)`, which is used where available.
@inline(__always)
func floatToHalfBits(_ x: Float) -> UInt16 {
    #if !(os(macOS) && arch(x86_64))
    return Float16(x).bitPattern
    #else
    return softwareFloatToHalfBits(x)
    #endif
}

/// Portable round-to-nearest-even float → half conversion (the fallback for `Float16(x)`).
func softwareFloatToHalfBits(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    let sign = UInt16((bits >> 16) & 0x8000)
    let exp = Int((bits >> 23) & 0xFF)
    let man = bits & 0x7F_FFFF
    if exp == 0xFF {  // Inf or NaN (force a quiet NaN bit so NaN stays NaN).
        return sign | 0x7C00 | (man == 0 ? 0 : UInt16(0x200 | (man >> 13)))
    }
    let e = exp - 127 + 15  // Re-biased exponent.
    if e >= 0x1F { return sign | 0x7C00 }  // Overflow → ±inf.
    if e <= 0 {
        // Subnormal half (or zero): shift the full significand right, rounding to nearest even.
        if e < -10 { return sign }  // Below half the smallest subnormal → ±0.
        let full = man | 0x80_0000
        let shift = UInt32(14 - e)
        var h = full >> shift
        let rem = full & ((1 << shift) - 1)
        let halfway = UInt32(1) << (shift - 1)
        if rem > halfway || (rem == halfway && (h & 1) == 1) { h += 1 }
        return sign | UInt16(h)
    }
    var h = UInt32(e) << 10 | (man >> 13)
    let rem = man & 0x1FFF
    if rem > 0x1000 || (rem == 0x1000 && (h & 1) == 1) { h += 1 }  // May carry into exponent: correct.
    return sign | UInt16(h)
}

// MARK: - Bulk conversion

/// Describes where a strided view's elements live inside a raw little-endian storage.
struct StridedLayout {
    var dtype: DType
    /// Element index of `[0, 0, …]` inside the storage.
    var offset: Int
    var shape: [Int]
    /// Strides in elements.
    var strides: [Int]

    /// Number of elements the view has.
    var count: Int { shape.reduce(1, *) }

    /// Row-major contiguous strides for `shape`.
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var s = [Int](repeating: 1, count: shape.count)
        var acc = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            s[i] = acc
            acc &*= shape[i]
        }
        return s
    }

    /// True if the view is one dense run starting at `offset` (size-1 dimensions may have any stride).
    var isContiguous: Bool {
        var expected = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) where shape[i] != 1 {
            if strides[i] != expected { return false }
            expected &*= shape[i]
        }
        return true
    }
}

/// Decodes a (possibly strided) view of raw little-endian elements into a new `Float` tensor of `shape`.
///
/// Preconditions, all established by the archive readers before calling: every element index the
/// view touches lies inside the storage that `storage` points to, and the element count fits.
func decodeTensor(shape: [Int], storage: UnsafeRawPointer?, layout: StridedLayout) -> Tensor {
    var tensor = Tensor(unsafeUninitializedShape: shape)
    let n = layout.count
    precondition(n == tensor.count, "decodeTensor: \(n) elements for shape \(shape)")
    guard n > 0, let storage else { return tensor }
    let dst = tensor.mutablePointer
    if layout.isContiguous {
        decodeRun(layout.dtype, storage, start: layout.offset, count: n, stride: 1, into: dst)
    } else if layout.shape.isEmpty {
        decodeRun(layout.dtype, storage, start: layout.offset, count: 1, stride: 1, into: dst)
    } else {
        // Odometer over all but the last dimension; the last dimension is one strided run.
        let rank = layout.shape.count
        let inner = layout.shape[rank - 1]
        let innerStride = layout.strides[rank - 1]
        var index = [Int](repeating: 0, count: rank - 1)
        var base = layout.offset
        var written = 0
        while written < n {
            decodeRun(layout.dtype, storage, start: base, count: inner, stride: innerStride, into: dst + written)
            written += inner
            var d = rank - 2
            while d >= 0 {
                index[d] += 1
                base += layout.strides[d]
                if index[d] < layout.shape[d] { break }
                base -= layout.strides[d] * layout.shape[d]
                index[d] = 0
                d -= 1
            }
        }
    }
    return tensor
}

/// Decodes `count` elements at element indices `start, start+stride, …` into `dst`.
/// One switch per run keeps the inner loops monomorphic and fast.
@inline(__always)
private func decodeRun(_ dtype: DType, _ src: UnsafeRawPointer, start: Int, count: Int, stride: Int,
                       into dst: UnsafeMutablePointer<Float>) {
    let size = dtype.byteSize
    switch dtype {
    case .float32:
        #if _endian(little)
        if stride == 1 {
            // The common case (every SAM2 weight): a straight memcpy.
            UnsafeMutableRawPointer(dst).copyMemory(from: src + start * 4, byteCount: count * 4)
            return
        }
        #endif
        for i in 0..<count {
            let bits = UInt32(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: UInt32.self))
            dst[i] = Float(bitPattern: bits)
        }
    case .float16:
        for i in 0..<count {
            dst[i] = halfBitsToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: UInt16.self)))
        }
    case .bfloat16:
        for i in 0..<count {
            let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: UInt16.self))
            dst[i] = Float(bitPattern: UInt32(bits) << 16)
        }
    case .float64:
        for i in 0..<count {
            let bits = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: UInt64.self))
            dst[i] = Float(Double(bitPattern: bits))
        }
    case .int64:
        for i in 0..<count {
            dst[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: Int64.self)))
        }
    case .int32:
        for i in 0..<count {
            dst[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: Int32.self)))
        }
    case .int16:
        for i in 0..<count {
            dst[i] = Float(Int16(littleEndian: src.loadUnaligned(fromByteOffset: (start + i * stride) * size, as: Int16.self)))
        }
    case .int8:
        for i in 0..<count {
            dst[i] = Float(src.load(fromByteOffset: start + i * stride, as: Int8.self))
        }
    case .uint8:
        for i in 0..<count {
            dst[i] = Float(src.load(fromByteOffset: start + i * stride, as: UInt8.self))
        }
    case .bool:
        for i in 0..<count {
            dst[i] = src.load(fromByteOffset: start + i * stride, as: UInt8.self) != 0 ? 1 : 0
        }
    }
}

/// Validates a strided view against a storage of `storageCount` elements and returns its element
/// count. Throws (never traps) on negative sizes/strides/offsets, overflow, or out-of-bounds access.
///
/// Views with more elements than their storage (stride-0 broadcasts) are capped, because a hostile
/// file could otherwise request a multi-terabyte allocation from a one-element storage.
func validateView(_ layout: StridedLayout, storageCount: Int, file: String, key: String) throws -> Int {
    guard layout.shape.count == layout.strides.count else {
        throw TensorIOError("\(file): tensor '\(key)': size has \(layout.shape.count) dimensions but stride has \(layout.strides.count)")
    }
    guard layout.offset >= 0 else {
        throw TensorIOError("\(file): tensor '\(key)': negative storage offset \(layout.offset)")
    }
    guard layout.shape.allSatisfy({ $0 >= 0 }), layout.strides.allSatisfy({ $0 >= 0 }) else {
        throw TensorIOError("\(file): tensor '\(key)': negative size or stride (size \(layout.shape), stride \(layout.strides))")
    }
    guard let n = checkedProduct(layout.shape) else {
        throw TensorIOError("\(file): tensor '\(key)': element count of size \(layout.shape) overflows")
    }
    if n == 0 { return 0 }
    // Highest element index touched: offset + Σ (size_k − 1)·stride_k.
    var last = layout.offset
    for (s, st) in zip(layout.shape, layout.strides) {
        let (m, o1) = (s - 1).multipliedReportingOverflow(by: st)
        let (sum, o2) = last.addingReportingOverflow(m)
        guard !o1, !o2 else {
            throw TensorIOError("\(file): tensor '\(key)': view extent overflows (size \(layout.shape), stride \(layout.strides))")
        }
        last = sum
    }
    guard last < storageCount else {
        throw TensorIOError("\(file): tensor '\(key)': view (offset \(layout.offset), size \(layout.shape), stride \(layout.strides)) reaches element \(last) but its storage has only \(storageCount) elements")
    }
    let maxBroadcast = 1 << 28
    guard n <= storageCount || n <= maxBroadcast else {
        throw TensorIOError("\(file): tensor '\(key)': broadcast view of \(n) elements from a storage of \(storageCount) is implausibly large")
    }
    return n
}
