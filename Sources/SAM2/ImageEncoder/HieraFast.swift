import Kernels

// `MultiScaleBlock` on the packed kernels, AVX-512 or AVX2 (the plain version in Hiera.swift stays
// the portable path and the reference).
//
// Written as in PyTorch, a block materialises several token-sized tensors (the windows, the fused
// qkv — 150 MB in stage 1 — the attention output, its projection, the unpartitioned copy, the MLP
// hidden layer) and each one costs page faults and a round trip through memory. Here the windowed
// attention runs group by group of windows (gather → qkv → attention → projection → add into the
// residual) and the MLP chunk by chunk of rows (norm → fc1+GELU → fc2 added into the residual),
// with small per-worker buffers that stay in cache.
//
// Padded window tokens (stage 3 and 4 at 1024²: 64² padded to 70², 32² to 35²) are zeros after the
// norm, so their q, k and v are just the qkv bias: they skip the qkv GEMM, and padded query rows
// (discarded by window_unpartition) skip the output projection.

/// The encoder's arithmetic precision.
public enum EncoderPrecision: String, Sendable, CaseIterable, Codable {
    /// fp32 everywhere, matching PyTorch within the parity tolerances.
    case float32 = "fp32"
    /// bf16 products with fp32 accumulation (AVX512_BF16) in the Hiera blocks' matrix work —
    /// qkv, attention, projections, MLPs — except where the error comes from
    /// (`ReducedPrecisionPlan.bfloat16`); norms, softmax, residuals and the neck stay fp32. On the
    /// random-weight parity cases masks agree with fp32 on ≥ 99.90 % of pixels with Hiera-T and
    /// ≥ 99.63 % with every preset, IoU predictions within 1.4e-3 (docs/performance.md,
    /// "Reduced precision"). Needs a CPU with AVX512_BF16.
    case bfloat16 = "bf16"
    /// 16-bit fixed-point products with exact int32 sums in the Hiera blocks' linear layers — qkv,
    /// projections, MLPs (`gs_gemm_i16_avx2`) — and the global blocks' attention
    /// (`gs_attention_head_i16_avx2`; `ReducedPrecisionPlan.fixed16`); windowed attention, norms,
    /// softmax, residuals and the neck stay fp32. Each row of x is rounded to ±4095 steps of its
    /// largest magnitude and each output feature's weights to ±2047, an error a quarter to a third
    /// of bf16's: masks agree with fp32 on ≥ 99.9 % of pixels on every preset's parity cases. The
    /// default on CPUs with AVX2 and no AVX-512; runs on any CPU with AVX2 (docs/performance.md,
    /// "The int16 encoder").
    case fixed16 = "int16"

    /// The precision to use when none is asked for: bf16 where the CPU has it, else int16 where
    /// the fp32 products run on AVX2 (on AVX-512 they are as fast as int16 on AVX2), else fp32
    /// (`Accelerated.defaultReduced`).
    public static var automatic: EncoderPrecision {
        switch Accelerated.defaultReduced {
        case .bfloat16: .bfloat16
        case .fixed16: .fixed16
        case nil: .float32
        }
    }

    /// The reduced arithmetic of the precision; nil for fp32.
    public var reduced: ReducedPrecision? { plan?.precision }

    /// Whether this CPU can run the precision.
    public var isAvailable: Bool { reduced?.isAvailable ?? true }

    /// What a CPU needs to run the precision, for error messages.
    public var requirement: String {
        switch self {
        case .float32: "nothing"
        case .bfloat16: "a CPU with AVX512_BF16"
        case .fixed16: "a CPU with AVX2 and FMA"
        }
    }

    /// The reduced products per block; nil for fp32.
    public var plan: ReducedPrecisionPlan? {
        switch self {
        case .float32: nil
        case .bfloat16: .bfloat16
        case .fixed16: .fixed16
        }
    }
}

/// Which products of one Hiera block take reduced-precision operands, bf16 or 16-bit fixed point
/// (the rest of the block stays fp32).
public struct ReducedOperations: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }
    /// The fused qkv projection.
    public static let qkv = ReducedOperations(rawValue: 1)
    /// q·kᵀ and p·v inside attention (int16's plan takes it in the global blocks only: the
    /// fixed-point kernel packs its operands with scalar code, too slow for small windows).
    public static let attention = ReducedOperations(rawValue: 2)
    /// The attention's output projection, and a stage change's projection of its residual.
    public static let projection = ReducedOperations(rawValue: 4)
    /// The two MLP layers.
    public static let mlp = ReducedOperations(rawValue: 8)
    public static let all: ReducedOperations = [.qkv, .attention, .projection, .mlp]
}

/// A per-block choice of reduced-precision products for the trunk, and their arithmetic: what
/// `EncoderPrecision.bfloat16` and `.fixed16` run.
public struct ReducedPrecisionPlan: Sendable, Hashable {
    /// Rules in order; the first whose blocks contain a block decides its operations. A block no
    /// rule names runs in fp32.
    public var rules: [(blocks: BlockSet, operations: ReducedOperations)]
    /// The arithmetic of the reduced products.
    public var precision: ReducedPrecision

    /// Blocks a rule applies to.
    public enum BlockSet: Sendable, Hashable {
        case every
        case indices(Set<Int>)
        /// Blocks with global attention.
        case global
        /// The first block of each of these stages (1-based), where the trunk changes scale.
        case stageStarts(Set<Int>)
    }

    public init(rules: [(blocks: BlockSet, operations: ReducedOperations)], precision: ReducedPrecision) {
        self.rules = rules
        self.precision = precision
    }

    /// The operations of block `index` (global attention when `windowSize` is 0; `startsStage`
    /// is the 1-based stage the block opens, if it is the first block of one).
    public func operations(block index: Int, windowSize: Int, startsStage: Int? = nil) -> ReducedOperations {
        for rule in rules {
            switch rule.blocks {
            case .every: return rule.operations
            case .indices(let set) where set.contains(index): return rule.operations
            case .global where windowSize == 0: return rule.operations
            case .stageStarts(let stages) where startsStage.map(stages.contains) == true: return rule.operations
            default: continue
            }
        }
        return []
    }

    /// Every product reduced, in `precision`.
    public static func everything(in precision: ReducedPrecision) -> ReducedPrecisionPlan {
        ReducedPrecisionPlan(rules: [(.every, .all)], precision: precision)
    }

    /// The plan of `EncoderPrecision.bfloat16`, chosen from measurement
    /// (tools/parity/precision_fidelity.py, docs/performance.md "Reduced precision"): the error
    /// of each bf16 product adds up over the blocks and is largest in the first ones, so the
    /// first blocks of stages 1 and 3 keep their qkv and output projections in fp32, and every
    /// other block keeps only its output projection (which adds as much error as the qkv for a
    /// third of its work). Costs ~5 % of the all-bf16 encode on Hiera-T.
    public static let bfloat16 = ReducedPrecisionPlan(rules: [
        (.stageStarts([1, 3]), [.attention, .mlp]),
        (.every, [.qkv, .attention, .mlp]),
    ], precision: .bfloat16)

    /// The plan of `EncoderPrecision.fixed16`: every linear layer of every block, and the global
    /// blocks' attention (windowed attention stays fp32: see `ReducedOperations.attention`).
    /// Measured with tools/parity/precision_fidelity.py (docs/performance.md "The int16 encoder"):
    /// no layer needs keeping exact.
    public static let fixed16 = ReducedPrecisionPlan(rules: [(.global, .all), (.every, [.qkv, .projection, .mlp])],
                                                     precision: .fixed16)

    /// Parses the study syntax `BLOCKS:OPS[;BLOCKS:OPS…]`: BLOCKS is `*`, `global`,
    /// comma-separated block indices, or `start` and comma-separated stages (their first
    /// blocks); OPS letters q (qkv), a (attention), p (projection), m (MLP), or nothing for fp32.
    /// E.g. `0:;*:qapm` keeps block 0 exact; `start1,3:am;*:qam` in bf16 is `bfloat16`.
    public init?(parsing text: String, precision: ReducedPrecision) {
        var rules: [(BlockSet, ReducedOperations)] = []
        for item in text.split(separator: ";") {
            let parts = item.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { return nil }
            let blocks: BlockSet
            switch parts[0] {
            case "*": blocks = .every
            case "global": blocks = .global
            default:
                let stages = parts[0].hasPrefix("start")
                let list = parts[0].dropFirst(stages ? 5 : 0).split(separator: ",", omittingEmptySubsequences: false)
                let indices = list.compactMap { Int($0) }
                guard !indices.isEmpty, indices.count == list.count else { return nil }
                blocks = stages ? .stageStarts(Set(indices)) : .indices(Set(indices))
            }
            var ops: ReducedOperations = []
            for letter in parts[1] {
                switch letter {
                case "q": ops.insert(.qkv)
                case "a": ops.insert(.attention)
                case "p": ops.insert(.projection)
                case "m": ops.insert(.mlp)
                default: return nil
                }
            }
            rules.append((blocks, ops))
        }
        guard !rules.isEmpty else { return nil }
        self.rules = rules
        self.precision = precision
    }

    public static func == (a: ReducedPrecisionPlan, b: ReducedPrecisionPlan) -> Bool {
        a.precision == b.precision && a.rules.count == b.rules.count && zip(a.rules, b.rules).allSatisfy { $0.blocks == $1.blocks && $0.operations == $1.operations }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(precision)
        for rule in rules {
            hasher.combine(rule.blocks)
            hasher.combine(rule.operations)
        }
    }
}

extension Linear {
    /// The layer's GEMM on the calling thread: packed fp32, or `reduced` when given and the layer
    /// keeps reduced copies.
    func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>,
        yStride: Int, accumulate: Bool = false, gelu: Bool = false, reduced: ReducedPrecision?
    ) {
        if let reduced, let w = reducedPrecision?.packed(reduced) {
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        } else if let w = packed {
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        } else {
            preconditionFailure("fast path without packed weights")
        }
    }
}

/// The arithmetic of each product of one block (nil: fp32), from the block's reduced operations
/// and the plan's precision; a precision the CPU does not run leaves them all fp32.
private struct BlockArithmetic {
    let qkv, attention, projection, mlp: ReducedPrecision?

    init(_ operations: ReducedOperations, in precision: ReducedPrecision?) {
        let kind = precision?.isAvailable == true ? precision : nil
        func of(_ operation: ReducedOperations) -> ReducedPrecision? { operations.contains(operation) ? kind : nil }
        (qkv, attention, projection, mlp) = (of(.qkv), of(.attention), of(.projection), of(.mlp))
    }
}

extension MultiScaleBlock {
    /// Runs the block in place: `x` `[H, W, dim]` becomes `[H', W', dimOut]`.
    /// - Parameters:
    ///   - reduced: the products that take reduced-precision operands (none: exact fp32).
    ///   - precision: their arithmetic; a precision the CPU does not run leaves the block fp32.
    func fast(_ x: inout Tensor, reduced: ReducedOperations = [], in precision: ReducedPrecision? = nil) {
        let arithmetic = BlockArithmetic(reduced, in: precision)
        let normed = norm1(x)
        var y: Tensor
        if let proj {
            // Parity: the residual of a stage-change block is the pooled projection of the
            // *normalised* input, not of x.
            y = poolsQueries ? pooledProjection(normed, proj, reduced: arithmetic.projection) : proj(normed)
        } else {
            y = x
        }
        x = Tensor(shape: [0])  // y is now the only reference: it is updated in place
        if windowSize > 0 {
            windowedAttention(normed, into: &y, arithmetic: arithmetic)
        } else {
            globalAttention(normed, into: &y, arithmetic: arithmetic)
        }
        mlpResidual(&y, reduced: arithmetic.mlp)
        x = y
    }

    /// `maxPool2x2(proj(normed))` two token rows at a time: each pair of rows goes through the
    /// projection into a small buffer and is pooled straight into the output, so the
    /// full-resolution projection (50 MB at the first stage change) is never materialised. The
    /// same products as one `proj(normed)`: the GEMM's result does not depend on the row split.
    private func pooledProjection(_ normed: Tensor, _ proj: Linear, reduced: ReducedPrecision?) -> Tensor {
        let (h, w, c, d) = (normed.shape[0], normed.shape[1], normed.shape[2], proj.outFeatures)
        let (oh, ow) = (h / 2, w / 2)
        var out = Tensor(unsafeUninitializedShape: [oh, ow, d])  // every pooled element is written
        let (src, dst, bias) = (normed.pointer, out.mutablePointer, proj.bias?.pointer)
        // Output rows claimed a few at a time (a few hundred product rows a piece).
        Parallel.share(oh, piece: max(1, 384 / max(2 * w, 1))) { pieces in
            let band = UnsafeMutablePointer<Float>.allocate(capacity: 2 * w * d)
            defer { band.deallocate() }
            while let rows = pieces.next() {
                for oy in rows {
                    proj.applySingleThreaded(src + 2 * oy * w * c, rows: 2 * w, xStride: c, bias: bias, into: band,
                                             yStride: d, reduced: reduced)
                    Pooling.maxPool2x2(band, height: 2, width: w, channels: d, tokenStride: d, into: dst + oy * ow * d)
                }
            }
        }
        return out
    }

    /// `y += proj(attn(window_partition(normed)))` cropped by `window_unpartition`.
    private func windowedAttention(_ normed: Tensor, into y: inout Tensor, arithmetic: BlockArithmetic) {
        let (h, w, c) = (normed.shape[0], normed.shape[1], normed.shape[2])
        let ws = windowSize
        let ph = h + (ws - h % ws) % ws, pw = w + (ws - w % ws) % ws
        let cols = pw / ws
        let windows = (ph / ws) * cols
        let tokens = ws * ws
        // Parity: after query pooling the window halves and the output grid is the pooled one.
        let outWs = poolsQueries ? ws / 2 : ws
        let queries = outWs * outWs
        let (oh, ow) = (y.shape[0], y.shape[1])
        let d = dimOut, heads = attn.heads, hd = dimOut / attn.heads, fused = 3 * dimOut
        let (qkvLayer, projLayer) = (attn.qkv, attn.proj)
        let group = max(1, 384 / tokens)  // windows per GEMM: a few hundred rows
        let qkvBias = attn.qkv.bias ?? Tensor(shape: [fused])
        let (src, out, qkvB, projBias) = (normed.pointer, y.mutablePointer, qkvBias.pointer, attn.proj.bias?.pointer)
        let scratchCount = AcceleratedOps.attentionScratchCount(queryCount: queries, keyCount: tokens, headDim: hd,
                                                                reduced: arithmetic.attention)
        // Groups of windows claimed one at a time (each window's result is its own).
        Parallel.share(windows, piece: group) { pieces in
            // Per-worker buffers, small enough to stay in cache.
            let rowsBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * tokens * c)
            let qkvBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * tokens * fused)
            let qBuf = UnsafeMutablePointer<Float>.allocate(capacity: poolsQueries ? group * queries * d : 1)
            let attBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * queries * d)
            let outBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * queries * d)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: scratchCount)
            defer {
                rowsBuf.deallocate(); qkvBuf.deallocate(); qBuf.deallocate()
                attBuf.deallocate(); outBuf.deallocate(); scratch.deallocate()
            }
            var valid = [Bool](repeating: false, count: group * tokens)
            var targets = [Int](repeating: 0, count: group * queries)
            while let range = pieces.next() {
                let (w0, g) = (range.lowerBound, range.count)
                // 1. Gather the image tokens of the windows, compactly (no padding rows).
                var count = 0
                for wi in 0..<g {
                    let (wy, wx) = ((w0 + wi) / cols, (w0 + wi) % cols)
                    for ty in 0..<ws {
                        for tx in 0..<ws {
                            let (yy, xx) = (wy * ws + ty, wx * ws + tx)
                            let inside = yy < h && xx < w
                            valid[wi * tokens + ty * ws + tx] = inside
                            if inside {
                                (rowsBuf + count * c).update(from: src + (yy * w + xx) * c, count: c)
                                count += 1
                            }
                        }
                    }
                }
                // 2. qkv of the real tokens; padding tokens get the bias alone.
                let full = g * tokens
                if count == full {
                    qkvLayer.applySingleThreaded(rowsBuf, rows: count, xStride: c, bias: qkvB, into: qkvBuf, yStride: fused,
                                                 reduced: arithmetic.qkv)
                } else {
                    // Compute into the tail, then spread forward (sources never lag behind targets).
                    let offset = full - count
                    qkvLayer.applySingleThreaded(rowsBuf, rows: count, xStride: c, bias: qkvB,
                                                 into: qkvBuf + offset * fused, yStride: fused, reduced: arithmetic.qkv)
                    var next = offset
                    for t in 0..<full {
                        let dst = qkvBuf + t * fused
                        if valid[t] {
                            if next != t { dst.update(from: qkvBuf + next * fused, count: fused) }
                            next += 1
                        } else {
                            dst.update(from: qkvB, count: fused)
                        }
                    }
                }
                // 3. Queries: pooled 2×2 within each window when the block pools (q only).
                var q = UnsafePointer(qkvBuf), qStride = fused
                if poolsQueries {
                    for wi in 0..<g {
                        Pooling.maxPool2x2(qkvBuf + wi * tokens * fused, height: ws, width: ws, channels: d,
                                           tokenStride: fused, into: qBuf + wi * queries * d)
                    }
                    q = UnsafePointer(qBuf)
                    qStride = d
                }
                // 4. Attention per window and head.
                for wi in 0..<g {
                    for head in 0..<heads {
                        let o = head * hd
                        let kv = qkvBuf + wi * tokens * fused
                        AcceleratedOps.attentionHead(
                            q: q + wi * queries * qStride + o, qStride: qStride, k: kv + d + o, kStride: fused,
                            v: kv + 2 * d + o, vStride: fused, into: attBuf + wi * queries * d + o, outStride: d,
                            queryCount: queries, keyCount: tokens, headDim: hd, scratch: scratch, reduced: arithmetic.attention)
                    }
                }
                // 5. Output projection of the queries that survive the crop, added into y.
                var kept = 0
                for wi in 0..<g {
                    let (wy, wx) = ((w0 + wi) / cols, (w0 + wi) % cols)
                    for ty in 0..<outWs {
                        for tx in 0..<outWs {
                            let (yy, xx) = (wy * outWs + ty, wx * outWs + tx)
                            guard yy < oh, xx < ow else { continue }
                            let row = wi * queries + ty * outWs + tx
                            if kept != row { (attBuf + kept * d).update(from: attBuf + row * d, count: d) }
                            targets[kept] = yy * ow + xx
                            kept += 1
                        }
                    }
                }
                projLayer.applySingleThreaded(attBuf, rows: kept, xStride: d, bias: projBias,
                                              into: outBuf, yStride: d, reduced: arithmetic.projection)
                // Parity: shortcut + proj(attn), the projection's bias included first.
                for r in 0..<kept {
                    let (o, s) = (out + targets[r] * d, outBuf + r * d)
                    for ch in 0..<d { o[ch] += s[ch] }
                }
            }
        }
    }

    /// Global attention over all tokens: `y += proj(attn(normed))`.
    private func globalAttention(_ normed: Tensor, into y: inout Tensor, arithmetic: BlockArithmetic) {
        precondition(!poolsQueries, "no q-pool block uses global attention")
        let tokens = normed.count / dim
        let (d, fused) = (dimOut, 3 * dimOut)
        guard let projWeight = attn.proj.packed else { preconditionFailure("fast path without packed weights") }
        var qkv: Tensor
        if let kind = arithmetic.qkv, let w = attn.qkv.reducedPrecision?.packed(kind) {
            qkv = Tensor(unsafeUninitializedShape: [tokens, fused])
            let bias = attn.qkv.bias ?? Tensor(shape: [fused])
            w.apply(normed.pointer, rows: tokens, xStride: dim, bias: bias.pointer, into: qkv.mutablePointer, yStride: fused)
        } else {
            qkv = attn.qkv(normed.reshaped([tokens, dim]))
        }
        // q, k and v are column blocks of the fused projection.
        let fusedRows = qkv.matrix
        var att = Tensor(unsafeUninitializedShape: [tokens, d])  // attention writes every element
        Attention.scaledDotProduct(q: fusedRows.columnBlock(0, size: d), k: fusedRows.columnBlock(1, size: d),
                                   v: fusedRows.columnBlock(2, size: d), into: att.mutableMatrix(), heads: attn.heads,
                                   reduced: arithmetic.attention)
        if let kind = arithmetic.projection, let w = attn.proj.reducedPrecision?.packed(kind) {
            let bias = attn.proj.bias ?? Tensor(shape: [d])
            w.apply(att.pointer, rows: tokens, xStride: d, bias: bias.pointer, into: y.mutablePointer, yStride: d, accumulate: true)
        } else {
            projWeight.apply(att.matrix, bias: attn.proj.bias, into: y.mutableMatrix(), accumulate: true)
        }
    }

    /// `y += mlp(norm2(y))`, chunk by chunk of rows, with GELU fused into the first layer.
    private func mlpResidual(_ y: inout Tensor, reduced: ReducedPrecision?) {
        let d = dimOut
        let tokens = y.count / d
        let (fc1, fc2) = (mlp.layers[0], mlp.layers[1])
        let hidden = fc1.outFeatures
        guard let b1 = fc1.bias, let b2 = fc2.bias else { preconditionFailure("Hiera MLP layers have biases") }
        // A few hundred rows: the hidden chunk stays in cache; at least one 192-row GEMM block.
        let chunkRows = max(192, (262_144 / hidden) / 12 * 12)
        let (base, b1p, b2p, gp, bp) = (y.mutablePointer, b1.pointer, b2.pointer, norm2.weight.pointer, norm2.bias.pointer)
        // Chunks of rows claimed one at a time: the rows' results do not depend on who computes them.
        Parallel.share(tokens, piece: chunkRows) { pieces in
            let normedRows = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * d)
            let hiddenRows = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * hidden)
            defer { normedRows.deallocate(); hiddenRows.deallocate() }
            while let range = pieces.next() {
                let (r0, rows) = (range.lowerBound, range.count)
                normedRows.update(from: base + r0 * d, count: rows * d)
                AcceleratedOps.layerNorm(normedRows, rows: rows, channels: d, weight: gp,
                                         bias: bp, eps: norm2.eps)
                fc1.applySingleThreaded(normedRows, rows: rows, xStride: d, bias: b1p,
                                        into: hiddenRows, yStride: hidden, gelu: true, reduced: reduced)
                fc2.applySingleThreaded(hiddenRows, rows: rows, xStride: hidden, bias: b2p,
                                        into: base + r0 * d, yStride: d, accumulate: true, reduced: reduced)
            }
        }
    }
}
