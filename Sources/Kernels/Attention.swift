#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Scaled dot-product attention, `softmax(q·kᵀ/√d)·v`, as `F.scaled_dot_product_attention` without
/// a mask.
///
/// Heads are interleaved along the channel axis (channel `h·headDim + d`), the layout PyTorch gets
/// from `reshape(…, heads, headDim)`. Every matrix carries its own row stride, so q, k and v can be
/// column slices of one fused qkv projection.
public enum Attention {
    /// One attention over `queryCount` queries and `keyCount` keys, for every head.
    /// - Parameter scores: scratch of at least `queryCount · keyCount` floats.
    public static func scaledDotProduct(
        q: UnsafePointer<Float>, qStride: Int,
        k: UnsafePointer<Float>, kStride: Int,
        v: UnsafePointer<Float>, vStride: Int,
        into out: UnsafeMutablePointer<Float>, outStride: Int,
        queryCount: Int, keyCount: Int, heads: Int, headDim: Int,
        scores: UnsafeMutablePointer<Float>
    ) {
        let scale = 1 / Float(headDim).squareRoot()
        for h in 0..<heads {
            let offset = h * headDim
            GEMM.multiply(
                q + offset, lda: qStride, k + offset, transposeB: true, ldb: kStride, into: scores, ldc: keyCount,
                m: queryCount, n: keyCount, k: headDim, alpha: scale)
            softmaxRows(scores, rows: queryCount, columns: keyCount)
            GEMM.multiply(
                scores, lda: keyCount, v + offset, ldb: vStride, into: out + offset, ldc: outStride,
                m: queryCount, n: headDim, k: keyCount)
        }
    }

    /// Softmax over each row of a `[rows, columns]` matrix, in place.
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        for r in 0..<rows {
            let row = x + r * columns
            var maximum = -Float.infinity
            for c in 0..<columns where row[c] > maximum { maximum = row[c] }
            var sum: Float = 0
            for c in 0..<columns {
                let e = expf(row[c] - maximum)
                row[c] = e
                sum += e
            }
            let inverse = 1 / sum
            for c in 0..<columns { row[c] *= inverse }
        }
    }
}
