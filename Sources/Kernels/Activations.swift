import CKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Elementwise activations, in place.
public enum Activations {
    /// Exact GELU, `0.5·x·(1 + erf(x/√2))`, as `nn.GELU()` with `approximate='none'`.
    public static func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        // Vectorised table-driven erf, within 6e-8 of erf (`gs_erf512`, and `gs_erf256` on eight
        // lanes: the same bits).
        if let kernel = Accelerated.elementwise(avx512: gs_gelu, avx2: gs_gelu_avx2) {
            Parallel.forEachChunk(count, minimumChunk: 65536) { range in
                kernel(x + range.lowerBound, range.count)
            }
            return
        }
        Parallel.forEachChunk(count, minimumChunk: 16384) { range in
            for i in range {
                let v = x[i]
                x[i] = 0.5 * v * (1 + erff(v * 0.70710678118654752440))
            }
        }
    }

    /// `max(x, 0)`.
    public static func relu(_ x: UnsafeMutablePointer<Float>, count: Int) {
        // A select rather than a branch, so it vectorises; NaN stays NaN as in PyTorch.
        for i in 0..<count { x[i] = x[i] < 0 ? 0 : x[i] }
    }

    /// `1 / (1 + exp(−x))`.
    public static func sigmoid(_ x: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { x[i] = 1 / (1 + expf(-x[i])) }
    }

    public static func gelu(_ x: inout Tensor) {
        gelu(x.mutablePointer, count: x.count)
    }

    public static func relu(_ x: inout Tensor) {
        relu(x.mutablePointer, count: x.count)
    }

    public static func sigmoid(_ x: inout Tensor) {
        sigmoid(x.mutablePointer, count: x.count)
    }
}

/// Elementwise arithmetic on tensors of equal shape.
extension Tensor {
    /// Adds `other` elementwise.
    public static func += (lhs: inout Tensor, rhs: Tensor) {
        precondition(lhs.shape == rhs.shape, "+=: \(lhs.shape) vs \(rhs.shape)")
        let (a, b) = (lhs.mutablePointer, rhs.pointer)
        for i in 0..<lhs.count { a[i] += b[i] }
    }

    public static func + (lhs: Tensor, rhs: Tensor) -> Tensor {
        precondition(lhs.shape == rhs.shape, "+: \(lhs.shape) vs \(rhs.shape)")
        // One pass into a fresh buffer (copying lhs first would read and write it twice).
        var out = Tensor(unsafeUninitializedShape: lhs.shape)
        let (a, b, o) = (lhs.pointer, rhs.pointer, out.mutablePointer)
        for i in 0..<out.count { o[i] = a[i] + b[i] }
        return out
    }

    /// Multiplies every element by `factor`.
    public mutating func scale(by factor: Float) {
        let a = mutablePointer
        for i in 0..<count { a[i] *= factor }
    }

    /// Adds a `[channels]` vector to every row of a channels-last tensor.
    public mutating func addRowVector(_ v: Tensor) { combineRows(with: v, "addRowVector", +) }

    /// Multiplies every row of a channels-last tensor by a `[channels]` vector, elementwise.
    public mutating func multiplyRowVector(_ v: Tensor) { combineRows(with: v, "multiplyRowVector", *) }

    @inline(__always)
    private mutating func combineRows(with v: Tensor, _ name: String, _ op: (Float, Float) -> Float) {
        let c = v.count
        precondition(shape.last == c, "\(name): \(shape) does not end in \(c)")
        let (a, b, n) = (mutablePointer, v.pointer, count)
        var i = 0
        while i < n {
            for j in 0..<c { a[i + j] = op(a[i + j], b[j]) }
            i += c
        }
    }
}
