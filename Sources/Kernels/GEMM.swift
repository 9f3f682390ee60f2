import CBLAS

/// Matrix products through OpenBLAS. All matrices are row-major.
public enum GEMM {
    /// `C = alpha · op(A) · op(B) + beta · C` with explicit leading dimensions, so that strided
    /// views (one head of a fused qkv matrix, say) need no copy.
    ///
    /// Large products are split by rows of `C` over the cores, each part a single-threaded OpenBLAS
    /// call: OpenBLAS's own threads busy-wait between calls and fight the other kernels' workers,
    /// which cost more than a third of the encoder's time when they were left on.
    ///
    /// The parts are fixed row blocks (`rowBlock`), whatever the number of cores: OpenBLAS's
    /// result for a row depends on the rows of its call (its edge kernels accumulate in another
    /// order), so splitting by core count made the features depend on the cores — a store encoded
    /// by shards or tiles in flight on different shares of a machine differed from one run's.
    public static func multiply(
        _ a: UnsafePointer<Float>, transposeA: Bool = false, lda: Int,
        _ b: UnsafePointer<Float>, transposeB: Bool = false, ldb: Int,
        into c: UnsafeMutablePointer<Float>, ldc: Int,
        m: Int, n: Int, k: Int, alpha: Float = 1, beta: Float = 0
    ) {
        guard m > 0, n > 0 else { return }
        let rows = rowBlock(m: m, n: n, k: k)
        if rows >= m {
            sgemm(a, transposeA, lda, b, transposeB, ldb, c, ldc, m, n, k, alpha, beta)
            return
        }
        Parallel.forEachItem((m + rows - 1) / rows) { block in
            let lower = block * rows, count = min(rows, m - lower)
            // Row block of op(A): rows of A, or columns when A is transposed.
            let aBlock = transposeA ? a + lower : a + lower * lda
            sgemm(aBlock, transposeA, lda, b, transposeB, ldb, c + lower * ldc, ldc, count, n, k, alpha, beta)
        }
    }

    /// The rows of `C` per OpenBLAS call in `multiply`: a function of the shape alone, so that
    /// every row is computed by the same call on one core or many. At least ~4 MFLOP a call (below
    /// that a split costs more in synchronisation than it gains), a multiple of 16 rows, and at
    /// most 64 calls; `m` (one call) for smaller products.
    static func rowBlock(m: Int, n: Int, k: Int) -> Int {
        let minimumRows = max(8, 2_000_000 / max(n * max(k, 1), 1))
        if m * n * max(k, 1) < 2_000_000 || m < 2 * minimumRows { return m }
        let roundedUp = { (rows: Int) in (rows + 15) / 16 * 16 }
        return max(roundedUp(minimumRows), roundedUp((m + 63) / 64))
    }

    @inline(__always)
    static func sgemm(
        _ a: UnsafePointer<Float>, _ transposeA: Bool, _ lda: Int, _ b: UnsafePointer<Float>, _ transposeB: Bool, _ ldb: Int,
        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float, _ beta: Float
    ) {
        _ = singleThreadedBLAS
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            blasint(m), blasint(n), blasint(k), alpha, a, blasint(lda), b, blasint(ldb), beta, c, blasint(ldc))
    }

    /// Parallelism is ours (see `multiply`): OpenBLAS runs one thread per call. Set by `sgemm`,
    /// which every OpenBLAS product passes through, callers that split work themselves included.
    static let singleThreadedBLAS: Void = openblas_set_num_threads(1)

    /// A fully connected layer on a row-major `[rows, inFeatures]` matrix:
    /// `y = x · Wᵀ + b` with `W` stored `[outFeatures, inFeatures]` as in PyTorch's `nn.Linear`.
    public static func linear(
        _ x: UnsafePointer<Float>, rows: Int, inFeatures: Int, xStride: Int? = nil,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?, outFeatures: Int,
        into y: UnsafeMutablePointer<Float>, yStride: Int? = nil
    ) {
        let ldy = yStride ?? outFeatures
        if let bias {
            for r in 0..<rows { (y + r * ldy).update(from: bias, count: outFeatures) }
        }
        multiply(
            x, lda: xStride ?? inFeatures, weight, transposeB: true, ldb: inFeatures, into: y, ldc: ldy,
            m: rows, n: outFeatures, k: inFeatures, beta: bias == nil ? 0 : 1)
    }

    /// `c = alpha · a · b + beta · c` on views: transposes are views (`transposed`), and m, n, k
    /// come from the shapes. Each operand needs unit stride along its rows or its columns (BLAS).
    public static func multiply(_ a: MatrixView, _ b: MatrixView, into c: MutableMatrixView, alpha: Float = 1, beta: Float = 0) {
        precondition(a.rows == c.rows && b.columns == c.columns && a.columns == b.rows,
                     "multiply: [\(a.rows), \(a.columns)]·[\(b.rows), \(b.columns)] into [\(c.rows), \(c.columns)]")
        precondition(c.columnStride == 1, "multiply: the output must be row-major")
        let (ta, lda) = blasLayout(a), (tb, ldb) = blasLayout(b)
        multiply(a.base, transposeA: ta, lda: lda, b.base, transposeB: tb, ldb: ldb, into: c.base, ldc: c.rowStride,
                 m: c.rows, n: c.columns, k: a.columns, alpha: alpha, beta: beta)
    }

    /// A view as BLAS sees it: (transposed, leading dimension).
    static func blasLayout(_ v: MatrixView) -> (Bool, Int) {
        if v.columnStride == 1 { return (false, v.rowStride) }
        precondition(v.rowStride == 1, "multiply: an operand needs unit stride along rows or columns")
        return (true, v.columnStride)
    }

    /// `y = x · Wᵀ + b` on tensors: `x` is `[..., in]`, `weight` `[out, in]`, `bias` `[out]`.
    /// - Parameter packed: `weight` packed for the packed GEMM; used when given and available.
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, packed: PackedWeight? = nil) -> Tensor {
        let inFeatures = weight.shape[1], outFeatures = weight.shape[0]
        precondition(x.shape.last == inFeatures, "linear: input \(x.shape) does not end in \(inFeatures)")
        let rows = x.count / max(inFeatures, 1)
        // Every element is written below (bias copy or beta = 0), so no zero-fill.
        var out = Tensor(unsafeUninitializedShape: Array(x.shape.dropLast()) + [outFeatures])
        if let packed, Accelerated.hasPackedKernels {
            precondition(packed.outFeatures == outFeatures && packed.inFeatures == inFeatures, "linear: packed weight mismatch")
            packed.apply(x.pointer, rows: rows, xStride: inFeatures, bias: bias?.pointer, into: out.mutablePointer, yStride: outFeatures)
        } else {
            linear(x.pointer, rows: rows, inFeatures: inFeatures, weight: weight.pointer, bias: bias?.pointer,
                   outFeatures: outFeatures, into: out.mutablePointer)
        }
        return out
    }
}
