import CKernels

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
    /// - Parameter scores: scratch of at least `queryCount · keyCount` floats (unused by the
    ///   flash kernels, which need no score matrix).
    public static func scaledDotProduct(
        q: UnsafePointer<Float>, qStride: Int,
        k: UnsafePointer<Float>, kStride: Int,
        v: UnsafePointer<Float>, vStride: Int,
        into out: UnsafeMutablePointer<Float>, outStride: Int,
        queryCount: Int, keyCount: Int, heads: Int, headDim: Int,
        scores: UnsafeMutablePointer<Float>
    ) {
        let scale = 1 / Float(headDim).squareRoot()
        if Accelerated.hasPackedKernels {
            batched(q: q, qStride: qStride, qBatchStride: 0, k: k, kStride: kStride, kBatchStride: 0,
                    v: v, vStride: vStride, vBatchStride: 0, into: out, outStride: outStride, outBatchStride: 0,
                    batches: 1, queryCount: queryCount, keyCount: keyCount, heads: heads, headDim: headDim)
            return
        }
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

    /// `batched` for one group on views: q `[queries, heads·headDim]`, k and v `[keys, heads·headDim]`
    /// (column blocks of a fused projection, say) into out `[queries, heads·headDim]`.
    /// `reduced` as for `batched`.
    public static func scaledDotProduct(q: MatrixView, k: MatrixView, v: MatrixView, into out: MutableMatrixView, heads: Int,
                                        reduced: ReducedPrecision? = nil) {
        precondition([q.columnStride, k.columnStride, v.columnStride, out.columnStride].allSatisfy { $0 == 1 },
                      "attention: views must be row-major")
        precondition(q.columns == k.columns && k.columns == v.columns && out.columns == q.columns && out.rows == q.rows
                        && k.rows == v.rows && heads > 0 && q.columns % heads == 0, "attention: shapes do not match")
        batched(q: q.base, qStride: q.rowStride, qBatchStride: 0, k: k.base, kStride: k.rowStride, kBatchStride: 0,
                v: v.base, vStride: v.rowStride, vBatchStride: 0, into: out.base, outStride: out.rowStride, outBatchStride: 0,
                batches: 1, queryCount: q.rows, keyCount: k.rows, heads: heads, headDim: q.columns / heads, reduced: reduced)
    }

    /// Attention for `batches` independent groups (windows) of `queryCount` queries and
    /// `keyCount` keys, every head, with the groups `…BatchStride` floats apart. Runs the
    /// (group, head) pairs in parallel; uses the flash-style kernel (AVX-512 or AVX2) when
    /// available, with reduced-precision products (bf16 or 16-bit fixed point:
    /// `AcceleratedOps.attentionHead`) when `reduced` names one the CPU runs.
    public static func batched(
        q: UnsafePointer<Float>, qStride: Int, qBatchStride: Int,
        k: UnsafePointer<Float>, kStride: Int, kBatchStride: Int,
        v: UnsafePointer<Float>, vStride: Int, vBatchStride: Int,
        into out: UnsafeMutablePointer<Float>, outStride: Int, outBatchStride: Int,
        batches: Int, queryCount: Int, keyCount: Int, heads: Int, headDim: Int, reduced: ReducedPrecision? = nil
    ) {
        guard batches > 0, heads > 0, queryCount > 0 else { return }
        let scale = 1 / Float(headDim).squareRoot()
        let pairs = batches * heads
        // Tiny problems (the decoder's few tokens) are not worth waking a second core.
        let work = pairs * queryCount * keyCount * headDim
        let minimumChunk = work < 400_000 ? pairs : 1
        if !Accelerated.hasPackedKernels {
            // Split over (group, head) pairs, not groups alone: global attention is one group, and
            // its heads would all run on one core. Each pair's arithmetic is the same either way.
            Parallel.forEachChunk(pairs, minimumChunk: minimumChunk) { range in
                let scores = UnsafeMutablePointer<Float>.allocate(capacity: max(queryCount * keyCount, 1))
                defer { scores.deallocate() }
                for pair in range {
                    let (b, offset) = (pair / heads, pair % heads * headDim)
                    let (qb, kb, vb) = (q + b * qBatchStride + offset, k + b * kBatchStride + offset, v + b * vBatchStride + offset)
                    let ob = out + b * outBatchStride + offset
                    GEMM.sgemm(qb, false, qStride, kb, true, kStride, scores, keyCount, queryCount, keyCount, headDim, scale, 0)
                    softmaxRows(scores, rows: queryCount, columns: keyCount)
                    GEMM.sgemm(scores, false, keyCount, vb, false, vStride, ob, outStride, queryCount, headDim, keyCount, 1, 0)
                }
            }
            return
        }
        let reduced = reduced?.isAvailable == true ? reduced : nil
        Parallel.forEachChunk(pairs, minimumChunk: minimumChunk) { range in
            let count = AcceleratedOps.attentionScratchCount(queryCount: queryCount, keyCount: keyCount, headDim: headDim,
                                                             reduced: reduced)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { scratch.deallocate() }
            for pair in range {
                let (b, h) = (pair / heads, pair % heads)
                let offset = h * headDim
                AcceleratedOps.attentionHead(
                    q: q + b * qBatchStride + offset, qStride: qStride, k: k + b * kBatchStride + offset, kStride: kStride,
                    v: v + b * vBatchStride + offset, vStride: vStride, into: out + b * outBatchStride + offset,
                    outStride: outStride, queryCount: queryCount, keyCount: keyCount, headDim: headDim, scratch: scratch,
                    reduced: reduced)
            }
        }
    }

    /// Softmax over each row of a `[rows, columns]` matrix, in place.
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int) {
        if let kernel = Accelerated.elementwise(avx512: gs_softmax_rows, avx2: gs_softmax_rows_avx2) {
            kernel(x, rows, columns, columns)
            return
        }
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
