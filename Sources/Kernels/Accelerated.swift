import CKernels
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Which hand-written kernels (`CKernels`) are used.
///
/// The AVX-512 kernels run when the CPU has AVX-512 F/DQ/BW/VL. Without them, a CPU with AVX2 and
/// FMA runs the fast encoder and decoder on AVX2 versions of those kernels (the packed GEMM, the
/// flash attention, layer norm, the softmaxes, GELU, the upscaling epilogue, mask upsampling and
/// the feature tiles' dequantisation: the same arithmetic, so the same features and masks); older
/// CPUs run the portable paths (OpenBLAS, plain Swift). The environment variable
/// `GEOSAM2_PORTABLE_KERNELS` overrides the choice, which the tests use to check every path: `avx2`
/// for what CPUs with AVX2 but no AVX-512 run, `1` for plain Swift and OpenBLAS.
public enum Accelerated {
    /// Whether the AVX-512 kernels are used.
    public static let isAvailable: Bool = portableOverride != "1" && portableOverride != "avx2" && gs_has_avx512() != 0

    /// Whether the AVX2 kernels (`gs_…_avx2`) are there for what has no AVX-512 kernel to run.
    /// Read only where `isAvailable` is false: the AVX-512 kernels come first.
    public static let hasAVX2: Bool = portableOverride != "1" && gs_has_avx2_fma() != 0

    /// Whether the packed-weight GEMM (`PackedWeight`), the flash attention and the fast decoder's
    /// kernels run, on AVX-512 or on AVX2: what `MultiScaleBlock.fast` and `FastDecoder` need.
    /// Both give the same bits.
    public static let hasPackedKernels: Bool = isAvailable || hasAVX2

    private static let portableOverride: String? = getenv("GEOSAM2_PORTABLE_KERNELS").map { String(cString: $0) }

    /// The vectorised kernel of an elementwise operation for this process: `avx512` where the
    /// AVX-512 kernels run, else `avx2` where the portable paths have it, else nil (plain Swift).
    public static func elementwise<Kernel>(avx512: Kernel, avx2: Kernel) -> Kernel? {
        isAvailable ? avx512 : (hasAVX2 ? avx2 : nil)
    }

    /// The kernel of an operation whose AVX-512 and AVX2 versions give the same bits, for callers
    /// that require `hasPackedKernels`.
    static func packed<Kernel>(avx512: Kernel, avx2: Kernel) -> Kernel {
        precondition(hasPackedKernels, "a packed-path kernel without AVX-512 or AVX2")
        return isAvailable ? avx512 : avx2
    }
}

/// The GEMM kernels' epilogue flags (`GS_ACC`, `GS_GELU`).
func gemmFlags(accumulate: Bool, gelu: Bool) -> Int32 { Int32(accumulate ? GS_ACC : 0) | Int32(gelu ? GS_GELU : 0) }

/// An `nn.Linear` weight `[out, in]` repacked once into the k-major 32-column panels the packed
/// GEMM streams through (`gs_pack_weight`). Its products need `Accelerated.hasPackedKernels`.
public struct PackedWeight: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let panels: [Float]

    /// Packs `weight` (`[out, in]`, row-major).
    public init(_ weight: Tensor) {
        precondition(weight.rank == 2, "PackedWeight expects [out, in], got \(weight.shape)")
        self.init(weight: weight.matrix)
    }

    /// Packs a weight `[out, in]` given as a view with unit column stride — e.g. one head's
    /// columns of a wider matrix.
    public init(weight w: MatrixView) {
        precondition(w.columnStride == 1, "PackedWeight(weight:) needs unit column stride")
        self.init(rows: w.base, ldw: w.rowStride, outFeatures: w.rows, inFeatures: w.columns)
    }

    /// Packs the right operand `b` (`[k, n]`, unit column stride) of products `x · b`: the result
    /// acts as a weight `[n, k]`, i.e. `apply` computes `x · b`.
    public init(rightOperand b: MatrixView) {
        precondition(b.columnStride == 1, "PackedWeight(rightOperand:) needs unit column stride")
        self.init(kn: b.base, ldb: b.rowStride, k: b.rows, n: b.columns)
    }

    /// Packs a weight `[outFeatures, inFeatures]` whose rows are `ldw` apart — e.g. one head's
    /// columns of a wider matrix.
    public init(rows w: UnsafePointer<Float>, ldw: Int, outFeatures n: Int, inFeatures k: Int) {
        self.init(outFeatures: n, inFeatures: k) { gs_pack_weight(w, ldw, n, k, $0) }
    }

    /// Packs the right operand of `x · B` given as a row-major `[k, n]` matrix `b` (row stride
    /// `ldb`): the result acts as a weight `[n, k]`, i.e. `apply` computes `x · b`.
    public init(kn b: UnsafePointer<Float>, ldb: Int, k: Int, n: Int) {
        self.init(outFeatures: n, inFeatures: k) { gs_pack_kn(b, ldb, k, n, $0) }
    }

    private init(outFeatures n: Int, inFeatures k: Int, pack: (UnsafeMutablePointer<Float>) -> Void) {
        outFeatures = n
        inFeatures = k
        var panels = [Float](repeating: 0, count: gs_packed_count(n, k))
        panels.withUnsafeMutableBufferPointer { p in
            if let pb = p.baseAddress { pack(pb) }
        }
        self.panels = panels
    }

    var panelCount: Int { (outFeatures + Self.panelWidth - 1) / Self.panelWidth }

    /// The packed GEMM of this CPU: AVX-512, or its AVX2 version (the same bits).
    private static let gemm = Accelerated.packed(avx512: gs_gemm_packed, avx2: gs_gemm_packed_avx2)
    private static let gemmTransposed = Accelerated.packed(avx512: gs_gemm_packed_transposed, avx2: gs_gemm_packed_transposed_avx2)

    /// Output features per packed panel: the row stride of the blocks `applyPacked` hands out.
    public static let panelWidth = Int(GS_PANEL)

    /// `x·Wᵀ` for `rows` rows, written straight in the packed layout of a right operand
    /// `[rows, outFeatures]` (what `init(kn:…)` would make of it), so a following product can
    /// take it without a packing pass. The same arithmetic as `apply`; split over the cores by rows.
    /// - Parameter finish: called on each panel's `[rows, 32]` block (row stride 32) once the
    ///   product is complete, with the number of real columns in it — e.g. a column softmax.
    public func applyPacked(_ x: UnsafePointer<Float>, rows: Int, xStride: Int,
                            finish: (UnsafeMutablePointer<Float>, _ columns: Int) -> Void = { _, _ in }) -> PackedWeight {
        let (n, k) = (outFeatures, inFeatures)
        let (panel, count) = (Self.panelWidth, panelCount)
        return PackedWeight(outFeatures: n, inFeatures: rows) { out in
            // Lanes past the last output feature stay zero, as `gs_pack_kn` leaves them.
            if n % panel != 0 { out.initialize(repeating: 0, count: gs_packed_count(n, rows)) }
            nonisolated(unsafe) let y = out  // disjoint rows of every panel per chunk
            panels.withUnsafeBufferPointer { p in
                guard let pb = p.baseAddress else { return }
                Parallel.forEachChunk(rows, minimumChunk: 48) { r in
                    for q in 0..<count {
                        // Panel q is a [rows, 32] block and the kernel writes feature j of row i at
                        // y[i·ldy + j]: point it 32·q floats before the block.
                        let block = y + q * rows * panel - q * panel
                        Self.gemm(x + r.lowerBound * xStride, xStride, 1, pb, nil, block + r.lowerBound * panel, panel,
                                       r.count, n, k, q, q + 1, 0)
                    }
                }
            }
            for q in 0..<count { finish(out + q * rows * panel, min(panel, n - q * panel)) }
        }
    }

    /// `apply` on the calling thread only, for callers that split the work themselves.
    public func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, xInnerStride: Int = 1, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false, gelu: Bool = false
    ) {
        guard rows > 0 else { return }
        let flags = gemmFlags(accumulate: accumulate, gelu: gelu)
        panels.withUnsafeBufferPointer { p in
            guard let pb = p.baseAddress else { return }
            Self.gemm(x, xStride, xInnerStride, pb, bias, y, yStride, rows, outFeatures, inFeatures, 0, panelCount, flags)
        }
    }

    /// `yᵀ = (x·Wᵀ + b)ᵀ`: writes output feature j of row r at `y[j·yStride + r]`. Split over the
    /// cores by rows of x (columns of y).
    public func applyTransposed(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, xInnerStride: Int = 1, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int
    ) {
        guard rows > 0 else { return }
        let (n, k) = (outFeatures, inFeatures)
        panels.withUnsafeBufferPointer { p in
            guard let pb = p.baseAddress else { return }
            let minimum = rows * n * max(k, 1) < 1_000_000 ? rows : 96
            Parallel.forEachChunk(rows, minimumChunk: minimum) { r in
                // Chunks start on multiples of 12 rows except possibly the first, which is fine:
                // the kernel handles any row offset.
                Self.gemmTransposed(x + r.lowerBound * xStride, xStride, xInnerStride, pb, bias, y + r.lowerBound, yStride,
                                          r.count, n, k, 0, panelCount)
            }
        }
    }

    /// `y = x·Wᵀ (+ b) (+ y when accumulating)` on `rows` rows, split over the cores by rows when
    /// there are many, else by panels of output features.
    /// - Parameters:
    ///   - xStride: distance between rows of `x`.
    ///   - xInnerStride: distance between consecutive elements of a row of `x` (1 unless `x` is
    ///     a transposed view).
    ///   - accumulate: add the result (bias included) to `y`.
    ///   - gelu: apply exact GELU to the result.
    public func apply(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, xInnerStride: Int = 1, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false, gelu: Bool = false
    ) {
        guard rows > 0 else { return }
        let (n, k) = (outFeatures, inFeatures)
        let add = gemmFlags(accumulate: accumulate, gelu: gelu)
        panels.withUnsafeBufferPointer { p in
            guard let pb = p.baseAddress else { return }
            let work = rows * n * max(k, 1)
            if work < 1_000_000 {
                Self.gemm(x, xStride, xInnerStride, pb, bias, y, yStride, rows, n, k, 0, panelCount, add)
            } else if rows >= 96 {
                // Row blocks: each worker streams all panels over its own rows, claiming pieces as
                // it goes — the kernels' 192-row blocks, or one share per worker (at least 48 rows)
                // when the shares are at most two such blocks.
                let workers = max(1, Parallel.availableWorkers)
                let share = (rows + workers - 1) / workers
                let piece = share <= 2 * 192 ? max(48, share) : 192
                Parallel.forEachPiece(rows, piece: piece) { r in
                    Self.gemm(x + r.lowerBound * xStride, xStride, xInnerStride, pb, bias, y + r.lowerBound * yStride,
                                   yStride, r.count, n, k, 0, panelCount, add)
                }
            } else {
                Parallel.forEachChunk(panelCount, minimumChunk: 1) { panels in
                    Self.gemm(x, xStride, xInnerStride, pb, bias, y, yStride, rows, n, k,
                                   panels.lowerBound, panels.upperBound, add)
                }
            }
        }
    }
}

extension PackedWeight {
    /// `y = x·Wᵀ (+ bias) (+ y when accumulating)` on views, split over the cores. `x` may be a
    /// transposed view; `y` row-major (`apply`) or transposed (`applyTransposed`).
    public func apply(_ x: MatrixView, bias: Tensor? = nil, into y: MutableMatrixView, accumulate: Bool = false, gelu: Bool = false) {
        checkShapes(x, y)
        if y.columnStride == 1 {
            apply(x.base, rows: x.rows, xStride: x.rowStride, xInnerStride: x.columnStride, bias: bias?.pointer, into: y.base,
                  yStride: y.rowStride, accumulate: accumulate, gelu: gelu)
        } else {
            precondition(y.rowStride == 1 && !accumulate && !gelu, "apply: output needs unit stride along rows or columns")
            applyTransposed(x.base, rows: x.rows, xStride: x.rowStride, xInnerStride: x.columnStride, bias: bias?.pointer,
                            into: y.base, yStride: y.columnStride)
        }
    }

    /// `apply` on the calling thread, for callers that split the work themselves.
    public func applySingleThreaded(_ x: MatrixView, bias: Tensor? = nil, into y: MutableMatrixView, accumulate: Bool = false,
                                    gelu: Bool = false) {
        checkShapes(x, y)
        precondition(y.columnStride == 1, "applySingleThreaded: the output must be row-major")
        applySingleThreaded(x.base, rows: x.rows, xStride: x.rowStride, xInnerStride: x.columnStride, bias: bias?.pointer,
                            into: y.base, yStride: y.rowStride, accumulate: accumulate, gelu: gelu)
    }

    /// `applyPacked` on a view with unit column stride.
    public func applyPacked(_ x: MatrixView, finish: (UnsafeMutablePointer<Float>, _ columns: Int) -> Void = { _, _ in }) -> PackedWeight {
        precondition(x.columns == inFeatures && x.columnStride == 1, "applyPacked: x [\(x.rows), \(x.columns)] for in \(inFeatures)")
        return applyPacked(x.base, rows: x.rows, xStride: x.rowStride, finish: finish)
    }

    private func checkShapes(_ x: MatrixView, _ y: MutableMatrixView) {
        precondition(x.columns == inFeatures && y.columns == outFeatures && x.rows == y.rows,
                     "packed [\(outFeatures), \(inFeatures)]: x [\(x.rows), \(x.columns)] into [\(y.rows), \(y.columns)]")
    }
}

/// Small entry points into the AVX-512 kernels for callers outside this module. Each requires
/// `Accelerated.isAvailable`, except where it says `Accelerated.hasPackedKernels` (AVX2 as well).
public enum AcceleratedOps {
    /// Whether `dequantizeTranspose` has a kernel here (AVX-512 or AVX2).
    public static let hasDequantizeTranspose: Bool = dequantizeTransposeKernel != nil

    private static let dequantizeTransposeKernel = Accelerated.elementwise(avx512: gs_dequantize_transpose,
                                                                           avx2: gs_dequantize_transpose_avx2)

    /// Dequantises 16-bit codes stored channel-major (`[channels][plane]`) into `out`, laid out
    /// channels-last (`out[p·channels + c]`), for the pixels `pixels`: value = Float(q)·scale[c] +
    /// offset[c], a multiply then an add, as the plain loop. The codes are signed little-endian
    /// int16 at `signed` (any alignment), or byte planes, q = high·256 + low − 32768.
    /// Requires `hasDequantizeTranspose`.
    public static func dequantizeTranspose(signed: UnsafeRawPointer?, high: UnsafePointer<UInt8>?, low: UnsafePointer<UInt8>?,
                                           channels: Int, plane: Int, pixels: Range<Int>, scale: UnsafePointer<Float>,
                                           offset: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
        guard let kernel = dequantizeTransposeKernel, signed != nil || (high != nil && low != nil) else {
            preconditionFailure("dequantizeTranspose without a kernel or without codes")
        }
        // An opaque conversion: the C kernel loads the int16 codes unaligned.
        kernel(signed.map { UnsafePointer<Int16>(OpaquePointer($0)) }, high, low, channels, plane,
               pixels.lowerBound, pixels.upperBound, scale, offset, out)
    }

    /// Softmax down each column of a `[rows, columns]` matrix (row stride `ld`), in place.
    /// Requires `Accelerated.hasPackedKernels`.
    public static func softmaxColumns(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ld: Int) {
        let kernel = Accelerated.packed(avx512: gs_softmax_columns, avx2: gs_softmax_columns_avx2)
        // Columns are independent: split them over the cores in 16-lane groups.
        let groups = (columns + 15) / 16
        Parallel.forEachChunk(groups, minimumChunk: rows * 16 >= 32768 ? 1 : groups) { g in
            let c0 = g.lowerBound * 16, c1 = min(columns, g.upperBound * 16)
            kernel(x + c0, rows, c1 - c0, ld)
        }
    }

    /// Softmax along each row of a `[rows, columns]` matrix (row stride `ld`), in place.
    /// Requires `Accelerated.hasPackedKernels`.
    public static func softmaxRows(_ x: UnsafeMutablePointer<Float>, rows: Int, columns: Int, ld: Int) {
        let kernel = Accelerated.packed(avx512: gs_softmax_rows, avx2: gs_softmax_rows_avx2)
        Parallel.forEachChunk(rows, minimumChunk: max(1, 65536 / max(columns, 1))) { r in
            kernel(x + r.lowerBound * ld, r.count, columns, ld)
        }
    }

    /// Softmax along each row of a row-major matrix view, in place.
    public static func softmaxRows(_ x: MutableMatrixView) {
        precondition(x.columnStride == 1, "softmaxRows: the view must be row-major")
        softmaxRows(x.base, rows: x.rows, columns: x.columns, ld: x.rowStride)
    }

    /// Softmax over each of `groups` equal groups of consecutive rows of a row-major view, column
    /// by column, in place.
    public static func softmaxRowGroups(_ x: MutableMatrixView, groups: Int) {
        precondition(x.columnStride == 1 && groups > 0 && x.rows % groups == 0, "softmaxRowGroups: bad view or groups")
        softmaxRowGroups(x.base, groups: groups, group: x.rows / groups, columns: x.columns, ld: x.rowStride)
    }

    /// Softmax over each group of `group` consecutive rows of `[groups·group, columns]` (row
    /// stride `ld`), column by column, in place. Requires `Accelerated.hasPackedKernels`.
    public static func softmaxRowGroups(_ x: UnsafeMutablePointer<Float>, groups: Int, group: Int, columns: Int, ld: Int) {
        let kernel = Accelerated.packed(avx512: gs_softmax_row_groups, avx2: gs_softmax_row_groups_avx2)
        let lanes = (columns + 15) / 16
        Parallel.forEachChunk(lanes, minimumChunk: groups * group * 16 >= 16384 ? 1 : lanes) { g in
            let c0 = g.lowerBound * 16, c1 = min(columns, g.upperBound * 16)
            kernel(x + c0, groups, group, c1 - c0, ld)
        }
    }

    /// One head of attention on the calling thread (`gs_attention_head`, or its AVX2 version with
    /// the same bits; requires `Accelerated.hasPackedKernels`); `scratch` holds
    /// `attentionScratchCount` floats.
    /// With `reduced`, the two products take that precision's operands: bf16 with fp32
    /// accumulation (`gs_attention_head_bf16`, requires `Accelerated.hasBFloat16`) or 16-bit fixed
    /// point with exact int32 sums (`gs_attention_head_i16_avx2`, requires `Accelerated.hasFixed16`;
    /// head dimensions past 256 fall back to the exact kernel); `scratch` must then be sized for it
    /// (`attentionScratchCount(…, reduced:)`).
    public static func attentionHead(
        q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, kStride: Int, v: UnsafePointer<Float>, vStride: Int,
        into out: UnsafeMutablePointer<Float>, outStride: Int, queryCount: Int, keyCount: Int, headDim: Int,
        scratch: UnsafeMutablePointer<Float>, reduced: ReducedPrecision? = nil
    ) {
        let scale = 1 / Float(headDim).squareRoot()
        if reduced == .bfloat16 {
            gs_attention_head_bf16(q, qStride, k, kStride, v, vStride, out, outStride, queryCount, keyCount, headDim, scale, scratch)
        } else if reduced == .fixed16,
                  gs_attention_head_i16_avx2(q, qStride, k, kStride, v, vStride, out, outStride, queryCount, keyCount, headDim, scale,
                                             scratch) == 0 {
            return
        } else if Accelerated.isAvailable {
            gs_attention_head(q, qStride, k, kStride, v, vStride, out, outStride, queryCount, keyCount, headDim, scale, scratch)
        } else {
            gs_attention_head_avx2(q, qStride, k, kStride, v, vStride, out, outStride, queryCount, keyCount, headDim, scale, scratch)
        }
    }

    /// Floats of scratch `attentionHead` needs (for the reduced-precision kernel when `reduced`).
    public static func attentionScratchCount(queryCount: Int, keyCount: Int, headDim: Int, reduced: ReducedPrecision? = nil) -> Int {
        if reduced == .bfloat16 { return gs_attention_bf16_scratch_count(queryCount, keyCount, headDim) }
        let exact = Accelerated.isAvailable ? gs_attention_scratch_count(queryCount, keyCount, headDim)
            : gs_attention_avx2_scratch_count(queryCount, keyCount, headDim)
        // The fixed-point kernel falls back to the exact one for head dimensions past 256.
        return reduced == .fixed16 ? max(exact, gs_attention_i16_avx2_scratch_count(queryCount, keyCount, headDim)) : exact
    }

    /// Layer norm of `rows` rows on the calling thread (AVX-512, or AVX2 with the same bits).
    /// Requires `Accelerated.hasPackedKernels`.
    public static func layerNorm(_ x: UnsafeMutablePointer<Float>, rows: Int, channels: Int,
                                 weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float) {
        Accelerated.packed(avx512: gs_layer_norm, avx2: gs_layer_norm_avx2)(x, rows, channels, weight, bias, eps)
    }

    /// The tail of `Convolution.transposedConv2x2` done as one GEMM (`gs_convt2x2_epilogue`):
    /// scatter of the sub-pixel products of an `h × w` input, `+ bias + addend`, optional
    /// LayerNorm2d and GELU; the result goes to `out` and/or, as dot products with the rows of
    /// `hyper` (`[masks, channels]`), to `logits` (`[masks, 2h, 2w]`). Split over the cores by rows.
    /// Requires `Accelerated.hasPackedKernels`.
    public static func transposedConvEpilogue(
        products: UnsafePointer<Float>, height h: Int, width w: Int, channels: Int, bias: UnsafePointer<Float>,
        adding addend: UnsafePointer<Float>, norm: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float)?,
        gelu: Bool, into out: UnsafeMutablePointer<Float>?, hyper: UnsafePointer<Float>?, masks: Int,
        logits: UnsafeMutablePointer<Float>?
    ) {
        precondition(channels <= 128)
        let outputRow = 2 * w * channels  // floats per output row, channels-last
        Parallel.forEachChunk(h, minimumChunk: 8) { rows in
            let y = rows.lowerBound
            transposedConvEpilogueBand(
                products: products + y * w * 4 * channels, rows: rows.count, width: w, channels: channels, bias: bias,
                adding: addend + 2 * y * outputRow, norm: norm, gelu: gelu, into: out.map { $0 + 2 * y * outputRow },
                hyper: hyper, masks: masks, logits: logits.map { $0 + 2 * y * 2 * w }, logitsPlane: 4 * h * w)
        }
    }

    /// `transposedConvEpilogue` for a band of `rows` input rows, on the calling thread: `products`
    /// holds the band's products, and `addend`, `out` and `logits` point at its first output row
    /// (output row 2·y for input row y); mask k's logits start `logitsPlane` floats after mask
    /// k − 1's. For callers that compute the products band by band to keep them in cache.
    /// Requires `Accelerated.hasPackedKernels`.
    public static func transposedConvEpilogueBand(
        products: UnsafePointer<Float>, rows: Int, width w: Int, channels: Int, bias: UnsafePointer<Float>,
        adding addend: UnsafePointer<Float>, norm: (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float)?,
        gelu: Bool, into out: UnsafeMutablePointer<Float>?, hyper: UnsafePointer<Float>?, masks: Int,
        logits: UnsafeMutablePointer<Float>?, logitsPlane: Int
    ) {
        precondition(channels <= 128)
        Accelerated.packed(avx512: gs_convt2x2_epilogue, avx2: gs_convt2x2_epilogue_avx2)(products, rows, w, channels, bias, addend, norm?.weight, norm?.bias, norm?.eps ?? 0, gelu ? 1 : 0,
                             out, hyper, masks, logits, logitsPlane)
    }

    /// Bilinear upsampling (align_corners=False) of a `[h, w]` logit map to `[oh, ow]` followed by
    /// `> 0`, as 0/1 bytes.
    /// Requires `Accelerated.hasPackedKernels`.
    /// - Returns: false (mask untouched) when the kernel could not allocate its scratch memory.
    public static func upsampleThreshold(_ logits: UnsafePointer<Float>, height h: Int, width w: Int,
                                         into mask: UnsafeMutablePointer<UInt8>, height oh: Int, width ow: Int) -> Bool {
        Accelerated.packed(avx512: gs_upsample_threshold, avx2: gs_upsample_threshold_avx2)(logits, h, w, mask, oh, ow) == 0
    }

    /// The runs of 1s of `upsampleThreshold`'s mask (`> threshold`) over its top-left `rows × columns`, without
    /// the mask: run r covers pixels `starts[r]..<ends[r]` of its row, and row y's runs are
    /// `rowOffsets[y]..<rowOffsets[y + 1]`. Nil when the kernel could not allocate its scratch.
    /// Requires `Accelerated.hasPackedKernels`.
    public static func upsampleThresholdRuns(_ logits: UnsafePointer<Float>, height h: Int, width w: Int, outputHeight oh: Int,
                                             outputWidth ow: Int, rows: Int, columns: Int, threshold: Float = 0)
        -> (starts: [Int32], ends: [Int32], rowOffsets: [Int])? {
        precondition(rows <= oh && columns <= ow)
        let kernel = Accelerated.packed(avx512: gs_upsample_threshold_runs, avx2: gs_upsample_threshold_runs_avx2)
        var capacity = max(16, rows * 8)
        while true {
            var starts = [Int32](repeating: 0, count: capacity), ends = [Int32](repeating: 0, count: capacity)
            var offsets = [Int](repeating: 0, count: rows + 1)
            let count = starts.withUnsafeMutableBufferPointer { sp in
                ends.withUnsafeMutableBufferPointer { ep in
                    offsets.withUnsafeMutableBufferPointer { op in
                        kernel(logits, h, w, oh, ow, rows, columns, threshold, sp.baseAddress!, ep.baseAddress!, capacity,
                                                   op.baseAddress!)
                    }
                }
            }
            if count == -2 { return nil }
            if count == -1 {
                capacity *= 4  // a row holds at most (columns + 1) / 2 runs, so this ends
                continue
            }
            starts.removeLast(capacity - count)
            ends.removeLast(capacity - count)
            return (starts, ends, offsets)
        }
    }

    /// ``MaskUpsampling/statistics(_:height:width:outputHeight:outputWidth:high:low:threshold:)`` with the AVX-512 kernel
    /// or its AVX2 version; nil when the kernel could not allocate its scratch. Requires `Accelerated.hasPackedKernels`.
    public static func upsampleStatistics(_ logits: UnsafePointer<Float>, height h: Int, width w: Int, outputHeight oh: Int,
                                          outputWidth ow: Int, high: Float, low: Float, threshold: Float) -> MaskUpsampling.Statistics? {
        let kernel = Accelerated.packed(avx512: gs_upsample_statistics, avx2: gs_upsample_statistics_avx2)
        var counts = [Int](repeating: 0, count: 3), box = [Int](repeating: 0, count: 4)
        let status = counts.withUnsafeMutableBufferPointer { c in
            box.withUnsafeMutableBufferPointer { b in kernel(logits, h, w, oh, ow, high, low, threshold, c.baseAddress!, b.baseAddress!) }
        }
        guard status == 0 else { return nil }
        return MaskUpsampling.Statistics(aboveHigh: counts[0], aboveLow: counts[1], above: counts[2],
                                         box: counts[2] > 0 ? (box[0], box[1], box[2], box[3]) : nil)
    }
}

extension Accelerated {
    /// Whether the CPU has AVX512_BF16, needed by the bf16 encoder.
    public static let hasBFloat16: Bool = isAvailable && gs_has_avx512_bf16() != 0

    /// Whether the 16-bit fixed-point encoder runs (`gs_gemm_i16_avx2`, `gs_attention_head_i16_avx2`):
    /// any CPU with AVX2 and FMA, AVX-512 ones included (so that an int16 store can be resumed
    /// anywhere it can be made).
    public static let hasFixed16: Bool = hasAVX2

    /// The reduced precision this CPU runs by default: bf16 where it has AVX512_BF16, else int16
    /// where the fp32 products run on AVX2 (on AVX-512 they are as fast as int16 on AVX2), else
    /// none (fp32).
    public static let defaultReduced: ReducedPrecision? =
        hasBFloat16 ? .bfloat16 : (hasFixed16 && !isAvailable ? .fixed16 : nil)
}

/// A reduced arithmetic for the encoder's products.
public enum ReducedPrecision: Sendable, Hashable {
    /// bf16 operands, fp32 accumulation (AVX512_BF16).
    case bfloat16
    /// 16-bit fixed-point operands, exact int32 sums (AVX2).
    case fixed16

    /// Whether this CPU runs it.
    public var isAvailable: Bool { self == .bfloat16 ? Accelerated.hasBFloat16 : Accelerated.hasFixed16 }
}

/// A linear layer's weight packed in one reduced precision.
public enum ReducedPrecisionWeight: Sendable {
    case bfloat16(PackedWeightBF16)
    case fixed16(PackedWeightFixed16)

    /// Packs `weight` (`[out, in]`) in `precision`; nil where the CPU does not run it.
    public init?(_ weight: Tensor, precision: ReducedPrecision) {
        guard precision.isAvailable else { return nil }
        switch precision {
        case .bfloat16: self = .bfloat16(PackedWeightBF16(weight))
        case .fixed16: self = .fixed16(PackedWeightFixed16(weight))
        }
    }

    /// `y = x·Wᵀ (+ b) (+ y)` (then GELU) on the calling thread.
    public func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false, gelu: Bool = false
    ) {
        switch self {
        case .bfloat16(let w):
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        case .fixed16(let w):
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        }
    }

    /// `applySingleThreaded` split over the cores by rows.
    public func apply(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false
    ) {
        Parallel.forEachChunk(rows, minimumChunk: 96) { r in
            applySingleThreaded(x + r.lowerBound * xStride, rows: r.count, xStride: xStride, bias: bias,
                                into: y + r.lowerBound * yStride, yStride: yStride, accumulate: accumulate)
        }
    }
}

/// A linear layer's reduced-precision copies: the CPU's default one packed at load, any other the
/// first time it is asked for (a CPU keeps only what it uses: about 2 bytes a weight each).
public final class ReducedPrecisionWeights: Sendable {
    private let weight: Tensor
    private let copies: Mutex<[ReducedPrecision: ReducedPrecisionWeight]>

    /// Keeps `weight` (`[out, in]`) and packs it at once in `Accelerated.defaultReduced`.
    public init(_ weight: Tensor) {
        self.weight = weight
        var copies: [ReducedPrecision: ReducedPrecisionWeight] = [:]
        if let kind = Accelerated.defaultReduced { copies[kind] = ReducedPrecisionWeight(weight, precision: kind) }
        self.copies = Mutex(copies)
    }

    /// The weight in `precision`, packed on first use; nil where the CPU does not run it.
    public func packed(_ precision: ReducedPrecision) -> ReducedPrecisionWeight? {
        copies.withLock { copies in
            if let copy = copies[precision] { return copy }
            let copy = ReducedPrecisionWeight(weight, precision: precision)
            copies[precision] = copy
            return copy
        }
    }
}

/// An `nn.Linear` weight in 16-bit fixed point for `gs_gemm_i16_avx2`: each output feature's
/// weights rounded to ±2047 steps of its largest magnitude / 2047. At every call each row of x is
/// rounded the same way to ±4095 steps, and the products are summed exactly in int32 (k blocks of
/// 256), then scaled back to fp32. Requires `Accelerated.hasFixed16`.
public struct PackedWeightFixed16: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let panels: [Int16]
    /// The step of each output feature.
    let scales: [Float]

    /// Quantises and packs `weight` (`[out, in]`). Requires `Accelerated.hasFixed16`.
    public init(_ weight: Tensor) {
        precondition(gs_has_avx2_fma() != 0, "the fixed-point GEMM needs AVX2 and FMA")
        precondition(weight.rank == 2, "PackedWeightFixed16 expects [out, in], got \(weight.shape)")
        let (n, k) = (weight.shape[0], weight.shape[1])
        outFeatures = n
        inFeatures = k
        var panels = [Int16](repeating: 0, count: gs_packed_i16_count(n, k))
        var scales = [Float](repeating: 0, count: n)
        panels.withUnsafeMutableBufferPointer { p in
            scales.withUnsafeMutableBufferPointer { s in
                if let pb = p.baseAddress, let sb = s.baseAddress { gs_pack_weight_i16(weight.pointer, k, n, k, pb, sb) }
            }
        }
        self.panels = panels
        self.scales = scales
    }

    /// `y = x·Wᵀ (+ b) (+ y)` (then GELU) on the calling thread, x quantised per row.
    public func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false, gelu: Bool = false
    ) {
        guard rows > 0 else { return }
        let flags = gemmFlags(accumulate: accumulate, gelu: gelu)
        panels.withUnsafeBufferPointer { p in
            scales.withUnsafeBufferPointer { s in
                guard let pb = p.baseAddress, let sb = s.baseAddress else { return }
                gs_gemm_i16_avx2(x, xStride, pb, sb, bias, y, yStride, rows, outFeatures, inFeatures, flags)
            }
        }
    }
}

/// An `nn.Linear` weight rounded to bfloat16 (nearest even) and packed for `gs_gemm_bf16`, for the
/// bf16 encoder. Products accumulate in fp32.
public struct PackedWeightBF16: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let panels: [UInt16]

    /// Packs `weight` (`[out, in]`). Requires `Accelerated.hasBFloat16`.
    public init(_ weight: Tensor) {
        precondition(weight.rank == 2, "PackedWeightBF16 expects [out, in], got \(weight.shape)")
        let (n, k) = (weight.shape[0], weight.shape[1])
        outFeatures = n
        inFeatures = k
        var panels = [UInt16](repeating: 0, count: gs_packed_bf16_count(n, k))
        panels.withUnsafeMutableBufferPointer { p in
            if let pb = p.baseAddress { gs_pack_weight_bf16(weight.pointer, k, n, k, pb) }
        }
        self.panels = panels
    }

    /// `y = x·Wᵀ (+ b) (+ y)` (then GELU) on the calling thread, x rounded to bf16.
    public func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false, gelu: Bool = false
    ) {
        guard rows > 0 else { return }
        let flags = gemmFlags(accumulate: accumulate, gelu: gelu)
        panels.withUnsafeBufferPointer { p in
            guard let pb = p.baseAddress else { return }
            gs_gemm_bf16(x, xStride, pb, bias, y, yStride, rows, outFeatures, inFeatures, flags)
        }
    }
}
