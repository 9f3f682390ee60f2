import Kernels

// The mask decoder restructured for speed (AVX-512 kernels only; `predictMasks` in
// MaskDecoder.swift stays the plain reference and the portable path).
//
// The two-way transformer attends between a few tokens (N ≈ 7–10) and the 4096 image positions.
// Written as in PyTorch, every cross-attention projects all 4096 positions (4096×256×128 MACs per
// projection). Re-associating the products moves the projections to the token side, which is
// exact in real arithmetic (only the rounding order changes):
//
// - token→image: scores_h = (q_h·W_k,h)·Xᵀ and out_h = (P_h·keys)·W_v,hᵀ + b_v,h, with
//   X = keys + PE. The key bias adds the same q_h·b_k,h to a whole softmax row: it cancels.
// - image→token: scores_h = X·(W_q,hᵀ·k_hᵀ) + b_q,h·k_hᵀ, and the output projection folds into
//   the values, V'_h = v_h·W_o,hᵀ, so y = Σ_h P_h·V'_h + b_o.
//
// That halves the transformer's work. Without a mask input, the first layer's image side is
// also input-independent (keys = image + no_mask_embed), so `prepare` caches its projections.
//
// The first upscaling convolution is linear per pixel, and (without a mask input, depth 2) its
// input is the cached keys `a` changed only by two image→token updates of rank heads·N, each
// followed by a LayerNorm. Writing LN(x) = s·(x − μ)∘g + β with per-pixel s and μ:
//
//   keys₂·W = s₁s₀·(a∘g₀g₁)W + [s₁s₀P₀ | s₁P₁ | s₁s₀ | −s₁s₀μ₀ | s₁ | −s₁μ₁ | 1]·R
//
// where (a∘g₀g₁)W is cached per tile and R stacks (V'₀∘g₀g₁)W, (V'₁∘g₁)W and five constant rows.
// The 4096×256×256 product becomes 4096×(heads·(N₀+N₁)+5)×256, about half.

/// Image features laid out for fast repeated decoding: channels-last copies of the maps, and
/// for prompts without a mask input, the first decoder layer's image-side projections.
///
/// Build it once per image with `SAM2Model.prepare(_:)` and pass it to `predict` or
/// `decodeLogits` for every prompt.
public struct PreparedFeatures: Sendable {
    /// The size of the image the features were computed from, in pixels.
    public let originalWidth: Int
    public let originalHeight: Int
    /// `image_embed` channels-last, `[4096, D]`.
    let image: Tensor
    /// `high_res_feats` channels-last: `[256, 256, D/8]` and `[128, 128, D/4]`.
    let s0: Tensor
    let s1: Tensor
    /// Input-independent first-layer state for prompts without a mask input.
    let layer0: DecoderLayer0Cache?
}

/// The first two-way layer's image side when the dense prompt is `no_mask_embed`.
struct DecoderLayer0Cache: Sendable {
    /// `image_embed + no_mask_embed`, `[4096, D]`.
    let keys: Tensor
    /// Per head h, the token→image keys K_h packed as a weight `[4096, hd]` (applied to the
    /// queries: q_h·K_hᵀ) and the values V_h packed as the right operand `[4096, hd]` (applied to
    /// the probabilities: P_h·V_h).
    let tokenToImageKeys: [PackedWeight]
    let tokenToImageValues: [PackedWeight]
    /// Per head, the image→token queries Q_h packed as a weight `[4096, hd]` (k_h·Q_hᵀ).
    let imageToTokenQueries: [PackedWeight]
    /// `(keys ∘ g₀ ∘ g₁)·W` for the low-rank first upscaling (`[4096, 4·D/4]`), nil when the
    /// decoder's shape does not allow it.
    var upscaleBase: Tensor? = nil
}

/// Where the image→token attention gets its queries (the image positions with PE) from.
enum ImageQueries {
    /// `keys + PE`, `[T, D]`: projected on the fly (re-associated).
    case keysWithPE(Tensor)
    /// `qProj(keys + PE)` per head, packed (`DecoderLayer0Cache`).
    case projected([PackedWeight])
}

/// What an image→token update leaves for the low-rank upscaling: `keys ← LN(keys + P·V' + b)`.
struct ImageUpdate {
    /// Attention probabilities, transposed: `[heads·N, T]`.
    let probabilitiesT: Tensor
    /// Values folded through the output projection, `[heads·N, D]`.
    let projectedValues: Tensor
    /// The LayerNorm's per-position mean and 1/sqrt(σ² + eps), `[T]` each.
    let means: Tensor
    let inverses: Tensor
}

extension DecoderAttention {
    var inner: Int { qProj.outFeatures }
    var headDim: Int { inner / heads }

    /// Per head h, `x_h · B_h` stacked by rows: row h·N + j of the `[heads·N, D]` result is
    /// `alpha · x[j, h·hd ..< (h+1)·hd] · B_h`, with `x` `[N, inner]` and `B_h` `[hd, D]` given by
    /// `headOperand` (a block of a projection weight, possibly transposed).
    func stackedHeadProducts(_ x: Tensor, alpha: Float = 1, headOperand: (Int) -> MatrixView) -> Tensor {
        let (n, hd) = (x.shape[0], headDim)
        let d = headOperand(0).columns
        var out = Tensor(shape: [heads * n, d])
        let (xm, om) = (x.matrix, out.mutableMatrix())
        for h in 0..<heads {
            GEMM.multiply(xm.columnBlock(h, size: hd), headOperand(h), into: om.rowBlock(h, size: n), alpha: alpha)
        }
        return out
    }

    /// `self(q: q, k: x, v: keys)` for few queries and many keys (token→image), re-associated.
    /// - Parameters: q `[N, D]` (with PE), x `[T, D]` (keys with PE), keys `[T, D]`.
    func tokenToImage(_ q: Tensor, keysWithPE x: Tensor, keys: Tensor) -> Tensor {
        let (n, t, hd) = (q.shape[0], x.shape[0], headDim)
        // Q' [heads·N, D]: row h·N + j = scale · q_h[j] · W_k,h.
        let wk = kProj.weight.matrix
        let qPrime = stackedHeadProducts(qProj(q), alpha: 1 / Float(hd).squareRoot()) { wk.rowBlock($0, size: hd) }
        // Scoresᵀ [T, heads·N], written packed as the right operand of the next product; softmax
        // down the columns (over the image positions).
        let probabilities = PackedWeight(qPrime).applyPacked(x.matrix) { block, columns in
            AcceleratedOps.softmaxColumns(block, rows: t, columns: columns, ld: PackedWeight.panelWidth)
        }
        // Gᵀ [D, heads·N] = keysᵀ · Pᵀ.
        var gT = Tensor(unsafeUninitializedShape: [x.shape[1], heads * n])
        probabilities.apply(keys.matrix.transposed, into: gT.mutableMatrix())
        // o[j, h·hd + e] = Σ_c G[h·N + j, c] · W_v[h·hd + e, c] + b_v (rows of P sum to 1).
        var o = Tensor(shape: [n, inner])
        let (g, wv, om) = (gT.matrix, vProj.weight.matrix, o.mutableMatrix())
        for h in 0..<heads {
            GEMM.multiply(g.columnBlock(h, size: n).transposed, wv.rowBlock(h, size: hd).transposed, into: om.columnBlock(h, size: hd))
        }
        if let b = vProj.bias { o.addRowVector(b) }
        return outProj(o)
    }

    /// token→image with the image side cached per head (`DecoderLayer0Cache`): per head, the
    /// scores q_h·K_hᵀ `[N, T]`, a softmax along each row, and P_h·V_h — thin products on packed
    /// operands, where the flash-attention kernel would repack all T keys for a few queries.
    func tokenToImage(_ q: Tensor, keys: [PackedWeight], values: [PackedWeight]) -> Tensor {
        let (n, hd) = (q.shape[0], headDim)
        let t = keys.first?.outFeatures ?? 0
        var qp = qProj(q)
        qp.scale(by: 1 / Float(hd).squareRoot())
        var scores = Tensor(unsafeUninitializedShape: [heads * n, t])
        var o = Tensor(unsafeUninitializedShape: [n, inner])
        let (queries, scoresOut, out) = (qp.matrix, scores.mutableMatrix(), o.mutableMatrix())
        // Each head writes its own rows of the scores and its own columns of o.
        Parallel.forEachChunk(heads, minimumChunk: 1) { range in
            for h in range {
                // The key bias is inside K_h, as in PyTorch (it shifts each row of scores).
                keys[h].applySingleThreaded(queries.columnBlock(h, size: hd), into: scoresOut.rowBlock(h, size: n))
            }
        }
        AcceleratedOps.softmaxRows(scoresOut)
        Parallel.forEachChunk(heads, minimumChunk: 1) { range in
            for h in range {
                values[h].applySingleThreaded(scoresOut.readOnly.rowBlock(h, size: n), into: out.columnBlock(h, size: hd))
            }
        }
        return outProj(o)
    }

    /// `keys = norm(keys + self(q: x, k: kIn, v: vIn))` for many queries and few keys
    /// (image→token), re-associated; also returns `keys + pe` for the next attention.
    ///
    /// The output projection, residual, LayerNorm and positional encoding run band by band over
    /// the image positions, so each band is still in cache for the next step.
    /// - Parameters: queries: the image positions with PE, or their cached projections; kIn
    ///   `[N, D]` (tokens with PE), vIn `[N, D]`; image: the keys `[T, D]`, updated.
    func imageToToken(_ queries: ImageQueries, keys kIn: Tensor, values vIn: Tensor,
                      updating image: inout Tensor, norm: LayerNorm, positionalEncoding pe: Tensor) -> (withPE: Tensor, update: ImageUpdate) {
        let (n, d, t) = (kIn.shape[0], image.shape[1], image.shape[0])
        let (hd, hn) = (headDim, heads * kIn.shape[0])
        var kp = kProj(kIn)
        let scale = 1 / Float(hd).squareRoot()
        // Scores are computed transposed, [heads·N, T], so the softmax over the N tokens of each
        // head runs down short columns with one lane per image position.
        var scoresT = Tensor(unsafeUninitializedShape: [hn, t])
        let scoresOut = scoresT.mutableMatrix()
        switch queries {
        case .projected(let projectedQueries):
            // scoresᵀ[h·N + j, :] = scale · k_h[j] · Q_hᵀ: one thin product per head (as one GEMM,
            // the block-diagonal right operand would be 7/8 zeros).
            kp.scale(by: scale)
            let k = kp.matrix
            Parallel.forEachChunk(heads, minimumChunk: 1) { range in
                for h in range {  // disjoint rows per head
                    projectedQueries[h].applySingleThreaded(k.columnBlock(h, size: hd), into: scoresOut.rowBlock(h, size: n))
                }
            }
        case .keysWithPE(let x):
            // Kq [heads·N, D]: row h·N + j = scale · k_h[j] · W_q,h, and the q bias becomes a
            // per-column constant c[h·N + j] = scale · b_q,h · k_h[j].
            let wq = qProj.weight.matrix
            let kq = stackedHeadProducts(kp, alpha: scale) { wq.rowBlock($0, size: hd) }
            var c = Tensor(shape: [hn])
            if let bq = qProj.bias {
                let (b, k, constants) = (bq.pointer, kp.pointer, c.mutablePointer)
                for h in 0..<heads {
                    for j in 0..<n {
                        var acc: Float = 0
                        for e in 0..<hd { acc += b[h * hd + e] * k[j * inner + h * hd + e] }
                        constants[h * n + j] = scale * acc
                    }
                }
            }
            PackedWeight(kq).apply(x.matrix, bias: c, into: scoresOut.transposed)
        }
        AcceleratedOps.softmaxRowGroups(scoresOut, groups: heads)
        // V' [heads·N, D]: row h·N + j = v_h[j] · W_o,hᵀ, then y = P · V' + b_o.
        let wo = outProj.weight.matrix
        let vPrime = stackedHeadProducts(vProj(vIn)) { wo.columnBlock($0, size: hd).transposed }
        let projection = PackedWeight(rightOperand: vPrime.matrix)
        let bias = outProj.bias ?? Tensor(shape: [d])
        var withPE = Tensor(unsafeUninitializedShape: [t, d])
        var means = Tensor(shape: [t]), inverses = Tensor(shape: [t])
        // P is read through its transpose: element (i, h·N + j) at scoresT[(h·N + j)·T + i].
        let probabilities = scoresT.matrix.transposed
        let (keysOut, sums, positional) = (image.mutableMatrix(), withPE.mutablePointer, pe.pointer)
        let (meansOut, inversesOut) = (means.mutablePointer, inverses.mutablePointer)
        Parallel.forEachChunk(t, minimumChunk: 256) { rows in  // disjoint bands of rows
            for band in stride(from: rows.lowerBound, to: rows.upperBound, by: 64) {
                let bandRows = band..<min(band + 64, rows.upperBound)
                let keysBand = keysOut.rows(bandRows)
                // Parity: keys + (P·V' + b_o), then norm4, as `keys = norm4(keys + attn_out)`.
                projection.applySingleThreaded(probabilities.rows(bandRows), bias: bias, into: keysBand, accumulate: true)
                norm.applySingleThreaded(keysBand, means: meansOut + band, inverses: inversesOut + band)
                for i in (band * d)..<(bandRows.upperBound * d) { sums[i] = keysOut.base[i] + positional[i] }
            }
        }
        return (withPE, ImageUpdate(probabilitiesT: scoresT, projectedValues: vPrime, means: means, inverses: inverses))
    }
}

extension TwoWayAttentionBlock {
    /// The block with the re-associated cross-attentions; `cache` for layer 0 without a mask input.
    /// - Parameter keysWithPE: `keys + keyPE` on entry (nil: computed here) and on return.
    @discardableResult
    func fast(queries: inout Tensor, keys: inout Tensor, keysWithPE: inout Tensor?, queryPE: Tensor, keyPE: Tensor,
              cache: DecoderLayer0Cache?) -> ImageUpdate {
        if skipFirstLayerPositionEmbedding {
            // Parity: the first layer's self-attention *replaces* the queries (no residual, no PE).
            queries = selfAttention(q: queries, k: queries, v: queries)
        } else {
            let q = queries + queryPE
            queries += selfAttention(q: q, k: q, v: queries)
        }
        norm1.apply(&queries)

        let imageQueries: ImageQueries
        if let cache {
            queries += crossAttentionTokenToImage.tokenToImage(queries + queryPE, keys: cache.tokenToImageKeys,
                                                               values: cache.tokenToImageValues)
            imageQueries = .projected(cache.imageToTokenQueries)
        } else {
            let imageWithPE = keysWithPE ?? keys + keyPE
            queries += crossAttentionTokenToImage.tokenToImage(queries + queryPE, keysWithPE: imageWithPE, keys: keys)
            imageQueries = .keysWithPE(imageWithPE)
        }
        norm2.apply(&queries)

        queries += mlp(queries)
        norm3.apply(&queries)

        let (withPE, update) = crossAttentionImageToToken.imageToToken(
            imageQueries, keys: queries + queryPE, values: queries, updating: &keys, norm: norm4, positionalEncoding: keyPE)
        keysWithPE = withPE
        return update
    }
}

extension TwoWayTransformer {
    /// `callAsFunction` with the re-associated attentions.
    /// - Parameters:
    ///   - image: image embedding plus dense prompt `[4096, D]` (ignored when `cache` is given).
    ///   - outputs: how many leading queries the caller reads. The final token→image attention
    ///     runs for these only: each query's row is independent there, and the decoder never
    ///     reads the prompt tokens' outputs.
    /// - Returns: the first `outputs` queries, the keys, and each layer's image→token update (for
    ///   the low-rank upscaling).
    func fast(image: Tensor, imagePE: Tensor, tokens: Tensor, cache: DecoderLayer0Cache?, outputs: Int)
        -> (queries: Tensor, keys: Tensor, updates: [ImageUpdate]) {
        var queries = tokens
        var keys = cache?.keys ?? image
        var keysWithPE: Tensor? = nil
        var updates: [ImageUpdate] = []
        for (i, layer) in layers.enumerated() {
            updates.append(layer.fast(queries: &queries, keys: &keys, keysWithPE: &keysWithPE, queryPE: tokens, keyPE: imagePE,
                                      cache: i == 0 ? cache : nil))
        }
        let kept = 0..<min(outputs, tokens.shape[0])
        queries = queries.copyingRows(kept)
        let queryPE = tokens.copyingRows(kept)
        queries += finalAttentionTokenToImage.tokenToImage(queries + queryPE, keysWithPE: keysWithPE ?? keys + imagePE, keys: keys)
        normFinalAttention.apply(&queries)
        return (queries, keys, updates)
    }

    /// The layer-0 image-side state for `keys = image + no_mask_embed`.
    func layer0Cache(keys: Tensor, imagePE: Tensor) -> DecoderLayer0Cache {
        let layer = layers[0]
        let keysWithPE = keys + imagePE
        let t2i = layer.crossAttentionTokenToImage, i2t = layer.crossAttentionImageToToken
        return DecoderLayer0Cache(
            keys: keys,
            tokenToImageKeys: Self.perHead(t2i.kProj(keysWithPE), heads: t2i.heads, asRightOperand: false),
            tokenToImageValues: Self.perHead(t2i.vProj(keys), heads: t2i.heads, asRightOperand: true),
            imageToTokenQueries: Self.perHead(i2t.qProj(keysWithPE), heads: i2t.heads, asRightOperand: false))
    }

    /// Each head's columns of a projection `[T, inner]`, packed as a weight `[T, hd]` (products
    /// with its transpose) or as a right operand (products with it).
    static func perHead(_ projection: Tensor, heads: Int, asRightOperand: Bool) -> [PackedWeight] {
        let (p, hd) = (projection.matrix, projection.shape[1] / heads)
        return (0..<heads).map { h in
            asRightOperand ? PackedWeight(rightOperand: p.columnBlock(h, size: hd)) : PackedWeight(weight: p.columnBlock(h, size: hd))
        }
    }
}

extension MaskDecoder {
    /// `predict_masks` on prepared features with the fast transformer.
    /// - Parameter dense: the dense prompt embedding `[4096, D]`, or nil for `no_mask_embed` (then
    ///   `prepared.layer0` is used when present).
    func predictMasksFast(prepared: PreparedFeatures, imagePE: Tensor, sparse: Tensor, dense: Tensor?,
                          noMaskEmbedding: Tensor) -> (logits: Tensor, iou: [Float]) {
        let tokens = Tensor(concatenatingRows: [objectScoreToken, iouToken, maskTokens, sparse])
        let cache = dense == nil ? prepared.layer0 : nil
        var image = Tensor(shape: [0])
        if cache == nil {
            if let dense {
                image = prepared.image + dense
            } else {
                image = prepared.image
                image.addRowVector(noMaskEmbedding)
            }
        }
        // Parity: only the output tokens (object score, IoU, masks) are read after the transformer.
        let (hs, keys, updates) = transformer.fast(image: image, imagePE: imagePE, tokens: tokens, cache: cache,
                                                   outputs: 2 + Self.maskTokenCount)
        let lowRank = cache?.upscaleBase.flatMap { lowRankUpscale(base: $0, updates: updates) }
        return headFast(hs: hs, keys: keys, s0: prepared.s0, s1: prepared.s1, lowRank: lowRank)
    }

    /// `head` with the transposed convolutions' epilogues fused: (bias + high-res map + LayerNorm2d
    /// + GELU) in one pass for the first, (bias + map + GELU + the hypernetwork dot products) for
    /// the second, so the 256×256×32 upscaled map is never stored.
    ///
    /// The two upscaling GEMMs and their epilogues run band by band — one row of the 64×64 grid,
    /// then the two 128-wide rows it becomes — so their products (48 MB in all) stay in the
    /// cache instead of going through memory, which bounded this step before.
    /// - Parameter lowRank: computes the first convolution's products from the cached base instead of `keys`.
    func headFast(hs: Tensor, keys: Tensor, s0: Tensor, s1: Tensor, lowRank: LowRankUpscale? = nil) -> (logits: Tensor, iou: [Float]) {
        let grid = SAM2Configuration.embeddingSize
        let (c1, c2) = (upscaleConv1Bias.count, upscaleConv2Bias.count)
        let hyper = Tensor(concatenatingRows: (0..<Self.maskTokenCount).map { k in hypernetworks[k](hs.copyingRows((2 + k)..<(3 + k))) })
        guard let conv1 = upscaleConv1Packed, let conv2 = upscaleConv2Packed else {
            preconditionFailure("headFast needs the packed upscaling weights (Accelerated.hasPackedKernels)")
        }
        let side = SAM2Configuration.lowResolutionMaskSize
        var logits = Tensor(unsafeUninitializedShape: [Self.maskTokenCount, side, side])
        let (keyRows, highRes1, highRes0, logitsOut) = (keys.matrix, s1.pointer, s0.pointer, logits.mutablePointer)
        let norm = (weight: upscaleNorm.weight.pointer, bias: upscaleNorm.bias.pointer, eps: upscaleNorm.eps)
        Parallel.forEachChunk(grid, minimumChunk: 1) { band in  // bands write disjoint rows
            // Per-worker scratch: one grid row's products, its upscaled rows, their products.
            var products1 = Tensor(shape: [grid, 4 * c1])
            var upscaled = Tensor(shape: [2 * (2 * grid), c1])
            var products2 = Tensor(shape: [2 * (2 * grid), 4 * c2])
            let (p1, u, p2) = (products1.mutableMatrix(), upscaled.mutableMatrix(), products2.mutableMatrix())
            for y in band {
                let gridRow = (y * grid)..<((y + 1) * grid)
                if let lowRank {
                    lowRank.products(rows: gridRow, into: p1.base)
                } else {
                    conv1.applySingleThreaded(keyRows.rows(gridRow), into: p1)
                }
                // Parity: the high-res map is added before the LayerNorm, then GELU.
                AcceleratedOps.transposedConvEpilogueBand(
                    products: p1.base, rows: 1, width: grid, channels: c1, bias: upscaleConv1Bias.pointer,
                    adding: highRes1 + 2 * y * (2 * grid) * c1, norm: norm, gelu: true,
                    into: u.base, hyper: nil, masks: 0, logits: nil, logitsPlane: 0)
                conv2.applySingleThreaded(u.readOnly, into: p2)
                // Parity: the high-res map is added before the GELU; masks = hyper · upscaled.
                AcceleratedOps.transposedConvEpilogueBand(
                    products: p2.base, rows: 2, width: 2 * grid, channels: c2, bias: upscaleConv2Bias.pointer,
                    adding: highRes0 + 4 * y * side * c2, norm: nil, gelu: true, into: nil,
                    hyper: hyper.pointer, masks: Self.maskTokenCount, logits: logitsOut + 4 * y * side,
                    logitsPlane: side * side)
            }
        }
        return (logits, iouHead(hs.copyingRows(1..<2)).toArray())
    }
}

/// The first upscaling convolution's products from the cached base and the two image→token
/// updates (see the note at the top of this file).
struct LowRankUpscale {
    let base: Tensor          // (a ∘ g₀ ∘ g₁)·W, [T, O]
    let right: PackedWeight   // R, [K, O] packed
    let updates: [ImageUpdate]
    let outputs: Int

    /// Products of rows `rows` (`[rows.count, O]`) into `out`.
    func products(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let (p0, p1) = (updates[0].probabilitiesT.matrix, updates[1].probabilitiesT.matrix)
        let (n0, n1) = (p0.rows, p1.rows)
        let (k, count, first) = (n0 + n1 + 5, rows.count, rows.lowerBound)
        let (s0, m0) = (updates[0].inverses.pointer, updates[0].means.pointer)
        let (s1, m1) = (updates[1].inverses.pointer, updates[1].means.pointer)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: count * k) { left in
            // The left matrix is built transposed, [k, count], column j of it contiguous like the
            // band's probabilities in Pᵀ (vectorised copies, not stores k floats apart); the GEMM
            // reads it through its strides, and each element's value and sum are unchanged.
            let l = left.baseAddress.unsafelyUnwrapped
            for j in 0..<n0 {
                let (src, column) = (p0.base + j * p0.rowStride + first, l + j * count)
                for r in 0..<count { column[r] = s1[first + r] * s0[first + r] * src[r] }
            }
            for j in 0..<n1 {
                let (src, column) = (p1.base + j * p1.rowStride + first, l + (n0 + j) * count)
                for r in 0..<count { column[r] = s1[first + r] * src[r] }
            }
            let (tail, b) = (l + (n0 + n1) * count, base.pointer)
            for r in 0..<count {
                let i = first + r
                let (a, c) = (s1[i] * s0[i], s1[i])
                tail[r] = a
                tail[count + r] = -a * m0[i]
                tail[2 * count + r] = c
                tail[3 * count + r] = -c * m1[i]
                tail[4 * count + r] = 1
                let (row, o) = (b + i * outputs, out + r * outputs)
                for e in 0..<outputs { o[e] = a * row[e] }
            }
            right.applySingleThreaded(l, rows: count, xStride: 1, xInnerStride: count, bias: nil, into: out, yStride: outputs,
                                      accumulate: true)
        }
    }
}

extension MaskDecoder {
    /// Whether the low-rank first upscaling applies: two two-way layers.
    var allowsLowRankUpscale: Bool { transformer.layers.count == 2 && upscaleConv1Packed != nil }

    /// `(keys ∘ g₀ ∘ g₁)·W` for a tile: the cached part of the low-rank first upscaling.
    func upscaleBase(layer0Keys keys: Tensor) -> Tensor? {
        guard allowsLowRankUpscale else { return nil }
        let g = zip(transformer.layers[0].norm4.weight.toArray(), transformer.layers[1].norm4.weight.toArray()).map { $0 * $1 }
        var scaled = keys
        scaled.multiplyRowVector(Tensor(shape: [g.count], scalars: g))
        return GEMM.linear(scaled, weight: upscaleConv1Matrix, bias: nil, packed: upscaleConv1Packed)
    }

    /// The per-prompt right-hand side R for the low-rank first upscaling.
    func lowRankUpscale(base: Tensor, updates: [ImageUpdate]) -> LowRankUpscale? {
        guard allowsLowRankUpscale, updates.count == 2 else { return nil }
        let d = dimension
        let (l0, l1) = (transformer.layers[0], transformer.layers[1])
        let (g0, g1) = (l0.norm4.weight.toArray(), l1.norm4.weight.toArray())
        let g01 = zip(g0, g1).map { $0 * $1 }
        let b0 = l0.crossAttentionImageToToken.outProj.bias?.toArray() ?? [Float](repeating: 0, count: d)
        let b1 = l1.crossAttentionImageToToken.outProj.bias?.toArray() ?? [Float](repeating: 0, count: d)
        let beta0 = l0.norm4.bias.toArray()
        func scaled(_ rows: [Float], _ g: [Float]) -> [Float] {
            var out = rows
            for i in 0..<out.count { out[i] *= g[i % d] }
            return out
        }
        // Rows of Z (R = Z·Wᵀ), matching the columns of the left matrix built in `products`.
        var z = scaled(updates[0].projectedValues.toArray(), g01)
        z += scaled(updates[1].projectedValues.toArray(), g1)
        z += scaled(b0, g01)                                   // × s₁s₀
        z += g01                                               // × −s₁s₀μ₀
        z += scaled(zip(beta0, b1).map { $0 + $1 }, g1)        // × s₁
        z += g1                                                // × −s₁μ₁
        z += l1.norm4.bias.toArray()                           // × 1
        let k = z.count / d
        let r = GEMM.linear(Tensor(shape: [k, d], scalars: z), weight: upscaleConv1Matrix, bias: nil, packed: upscaleConv1Packed)
        return LowRankUpscale(base: base, right: PackedWeight(rightOperand: r.matrix), updates: updates,
                              outputs: upscaleConv1Matrix.shape[0])
    }
}
