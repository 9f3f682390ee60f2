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
    /// The LayerNorm's per-position mean and 1/sqrt(σ² + eps).
    let means: [Float]
    let inverses: [Float]
}

extension DecoderAttention {
    var inner: Int { qProj.outFeatures }
    var headDim: Int { inner / heads }

    /// `self(q: q, k: x, v: keys)` for few queries and many keys (token→image), re-associated.
    /// - Parameters: q `[N, D]` (with PE), x `[T, D]` (keys with PE), keys `[T, D]`.
    func tokenToImage(_ q: Tensor, keysWithPE x: Tensor, keys: Tensor) -> Tensor {
        let (n, d, t) = (q.shape[0], x.shape[1], x.shape[0])
        let (inner, hd, hn) = (self.inner, headDim, heads * q.shape[0])
        let qp = qProj(q)
        let scale = 1 / Float(hd).squareRoot()
        // Q' [heads·N, D]: row h·N + j = scale · q_h[j] · W_k,h.
        var qPrime = Tensor(unsafeUninitializedShape: [hn, d])
        qp.scalars.withUnsafeBufferPointer { a in
            kProj.weight.scalars.withUnsafeBufferPointer { w in
                qPrime.scalars.withUnsafeMutableBufferPointer { o in
                    for h in 0..<heads {
                        GEMM.multiply(a.baseAddress! + h * hd, lda: inner, w.baseAddress! + h * hd * d, ldb: d,
                                      into: o.baseAddress! + h * n * d, ldc: d, m: n, n: d, k: hd, alpha: scale)
                    }
                }
            }
        }
        // Scoresᵀ [T, heads·N], written packed as the right operand of the next product; softmax
        // down the columns (over the image positions).
        let packedQ = PackedWeight(qPrime)
        let packedP = x.scalars.withUnsafeBufferPointer { xp in
            packedQ.applyPacked(xp.baseAddress!, rows: t, xStride: d) { block, columns in
                AcceleratedOps.softmaxColumns(block, rows: t, columns: columns, ld: PackedWeight.panelWidth)
            }
        }
        // Gᵀ [D, heads·N] = keysᵀ · Pᵀ.
        var gT = Tensor(unsafeUninitializedShape: [d, hn])
        keys.scalars.withUnsafeBufferPointer { kp in
            gT.scalars.withUnsafeMutableBufferPointer { gp in
                packedP.apply(kp.baseAddress!, rows: d, xStride: 1, xInnerStride: d, bias: nil, into: gp.baseAddress!, yStride: hn)
            }
        }
        // o[j, h·hd + e] = Σ_c G[h·N + j, c] · W_v[h·hd + e, c] + b_v (rows of P sum to 1).
        var o = Tensor(shape: [n, inner])
        gT.scalars.withUnsafeBufferPointer { gp in
            vProj.weight.scalars.withUnsafeBufferPointer { w in
                o.scalars.withUnsafeMutableBufferPointer { op in
                    for h in 0..<heads {
                        GEMM.multiply(gp.baseAddress! + h * n, transposeA: true, lda: hn, w.baseAddress! + h * hd * d,
                                      transposeB: true, ldb: d, into: op.baseAddress! + h * hd, ldc: inner, m: n, n: hd, k: d)
                    }
                }
            }
        }
        if let b = vProj.bias { o.addRowVector(b) }
        return outProj(o)
    }

    /// token→image with the image side cached per head (`DecoderLayer0Cache`): per head, the
    /// scores q_h·K_hᵀ `[N, T]`, a softmax along each row, and P_h·V_h — thin products on packed
    /// operands, where the flash-attention kernel would repack all T keys for a few queries.
    func tokenToImage(_ q: Tensor, keys: [PackedWeight], values: [PackedWeight]) -> Tensor {
        let (n, inner, hd) = (q.shape[0], self.inner, headDim)
        let t = keys.first?.outFeatures ?? 0
        var qp = qProj(q)
        qp.scale(by: 1 / Float(hd).squareRoot())
        var scores = Tensor(unsafeUninitializedShape: [heads * n, t])
        var o = Tensor(unsafeUninitializedShape: [n, inner])
        qp.scalars.withUnsafeBufferPointer { qb in
            scores.scalars.withUnsafeMutableBufferPointer { sb in
                o.scalars.withUnsafeMutableBufferPointer { ob in
                    // Each head writes its own rows of the scores and its own columns of o.
                    nonisolated(unsafe) let (qs, ss, os) = (qb.baseAddress!, sb.baseAddress!, ob.baseAddress!)
                    Parallel.forEachChunk(heads, minimumChunk: 1) { range in
                        for h in range {
                            // The key bias is inside K_h, as in PyTorch (it shifts each row of scores).
                            keys[h].applySingleThreaded(qs + h * hd, rows: n, xStride: inner, bias: nil, into: ss + h * n * t, yStride: t)
                        }
                    }
                    AcceleratedOps.softmaxRows(ss, rows: heads * n, columns: t, ld: t)
                    Parallel.forEachChunk(heads, minimumChunk: 1) { range in
                        for h in range {
                            values[h].applySingleThreaded(ss + h * n * t, rows: n, xStride: t, bias: nil, into: os + h * hd, yStride: inner)
                        }
                    }
                }
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
        let (inner, hd, hn) = (self.inner, headDim, heads * kIn.shape[0])
        var kp = kProj(kIn)
        let vp = vProj(vIn)
        let scale = 1 / Float(hd).squareRoot()
        // Scores are computed transposed, [heads·N, T], so the softmax over the N tokens of each
        // head runs down short columns with one lane per image position.
        var scoresT = Tensor(unsafeUninitializedShape: [hn, t])
        switch queries {
        case .projected(let projectedQueries):
            // scoresᵀ[h·N + j, :] = scale · k_h[j] · Q_hᵀ: one thin product per head (as one GEMM,
            // the block-diagonal right operand would be 7/8 zeros).
            kp.scale(by: scale)
            kp.scalars.withUnsafeBufferPointer { kb in
                scoresT.scalars.withUnsafeMutableBufferPointer { sp in
                    nonisolated(unsafe) let (k, out) = (kb.baseAddress!, sp.baseAddress!)  // disjoint rows per head
                    Parallel.forEachChunk(heads, minimumChunk: 1) { range in
                        for h in range {
                            projectedQueries[h].applySingleThreaded(k + h * hd, rows: n, xStride: inner, bias: nil, into: out + h * n * t, yStride: t)
                        }
                    }
                }
            }
        case .keysWithPE(let x):
            // Kq [heads·N, D]: row h·N + j = scale · k_h[j] · W_q,h, and the q bias becomes a
            // per-column constant c[h·N + j] = scale · b_q,h · k_h[j].
            var kq = Tensor(shape: [hn, d])
            var c = [Float](repeating: 0, count: hn)
            kp.scalars.withUnsafeBufferPointer { a in
                qProj.weight.scalars.withUnsafeBufferPointer { w in
                    kq.scalars.withUnsafeMutableBufferPointer { o in
                        for h in 0..<heads {
                            GEMM.multiply(a.baseAddress! + h * hd, lda: inner, w.baseAddress! + h * hd * d, ldb: d,
                                          into: o.baseAddress! + h * n * d, ldc: d, m: n, n: d, k: hd, alpha: scale)
                        }
                    }
                }
            }
            if let bq = qProj.bias {
                for h in 0..<heads {
                    for j in 0..<n {
                        var acc: Float = 0
                        for e in 0..<hd { acc += bq.scalars[h * hd + e] * kp.scalars[j * inner + h * hd + e] }
                        c[h * n + j] = scale * acc
                    }
                }
            }
            let packed = PackedWeight(kq)
            x.scalars.withUnsafeBufferPointer { xp in
                c.withUnsafeBufferPointer { cb in
                    scoresT.scalars.withUnsafeMutableBufferPointer { sp in
                        packed.applyTransposed(xp.baseAddress!, rows: t, xStride: d, bias: cb.baseAddress!, into: sp.baseAddress!, yStride: t)
                    }
                }
            }
        }
        scoresT.scalars.withUnsafeMutableBufferPointer { sp in
            AcceleratedOps.softmaxRowGroups(sp.baseAddress!, groups: heads, group: n, columns: t, ld: t)
        }
        // V' [heads·N, D]: row h·N + j = v_h[j] · W_o,hᵀ, then y = P · V' + b_o.
        var vPrime = Tensor(shape: [hn, d])
        vp.scalars.withUnsafeBufferPointer { a in
            outProj.weight.scalars.withUnsafeBufferPointer { w in
                vPrime.scalars.withUnsafeMutableBufferPointer { o in
                    for h in 0..<heads {
                        GEMM.multiply(a.baseAddress! + h * hd, lda: inner, w.baseAddress! + h * hd, transposeB: true, ldb: inner,
                                      into: o.baseAddress! + h * n * d, ldc: d, m: n, n: d, k: hd)
                    }
                }
            }
        }
        var withPE = Tensor(unsafeUninitializedShape: [t, d])
        var means = [Float](repeating: 0, count: t), inverses = [Float](repeating: 0, count: t)
        let packed = vPrime.scalars.withUnsafeBufferPointer { vb in PackedWeight(kn: vb.baseAddress!, ldb: d, k: hn, n: d) }
        let bias = outProj.bias ?? Tensor(shape: [d])
        scoresT.scalars.withUnsafeBufferPointer { sp in
            image.scalars.withUnsafeMutableBufferPointer { ip in
                withPE.scalars.withUnsafeMutableBufferPointer { wp in
                    pe.scalars.withUnsafeBufferPointer { pp in
                        bias.scalars.withUnsafeBufferPointer { bb in
                            norm.weight.scalars.withUnsafeBufferPointer { nw in
                                norm.bias.scalars.withUnsafeBufferPointer { nb in
                                    means.withUnsafeMutableBufferPointer { mp in
                                        inverses.withUnsafeMutableBufferPointer { vp in
                                            // Disjoint bands of rows.
                                            nonisolated(unsafe) let (ib, wb, mb, vb) = (ip.baseAddress!, wp.baseAddress!, mp.baseAddress!, vp.baseAddress!)
                                            Parallel.forEachChunk(t, minimumChunk: 256) { rows in
                                                for band in stride(from: rows.lowerBound, to: rows.upperBound, by: 64) {
                                                    let count = min(64, rows.upperBound - band)
                                                    // P is read through its transpose: element (i, h·N + j) at sp[(h·N + j)·T + i].
                                                    // Parity: keys + (P·V' + b_o), then norm4, as `keys = norm4(keys + attn_out)`.
                                                    packed.applySingleThreaded(sp.baseAddress! + band, rows: count, xStride: 1, xInnerStride: t,
                                                                               bias: bb.baseAddress!, into: ib + band * d, yStride: d, accumulate: true)
                                                    Normalization.layerNormSingleThreaded(ib + band * d, rows: count, channels: d, weight: nw.baseAddress!,
                                                                                          bias: nb.baseAddress!, eps: norm.eps,
                                                                                          means: mb + band, inverses: vb + band)
                                                    for i in (band * d)..<((band + count) * d) { wb[i] = ib[i] + pp[i] }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
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
        let d = tokens.shape[1], kept = min(outputs, tokens.shape[0])
        queries = Tensor(shape: [kept, d], scalars: Array(queries.scalars.prefix(kept * d)))
        let queryPE = Tensor(shape: [kept, d], scalars: Array(tokens.scalars.prefix(kept * d)))
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
        let (t, inner) = (projection.shape[0], projection.shape[1])
        let hd = inner / heads
        return projection.scalars.withUnsafeBufferPointer { p in
            (0..<heads).map { h in
                asRightOperand
                    ? PackedWeight(kn: p.baseAddress! + h * hd, ldb: inner, k: t, n: hd)
                    : PackedWeight(rows: p.baseAddress! + h * hd, ldw: inner, outFeatures: t, inFeatures: hd)
            }
        }
    }
}

extension MaskDecoder {
    /// `predict_masks` on prepared features with the fast transformer.
    /// - Parameter dense: the dense prompt embedding `[4096, D]`, or nil for `no_mask_embed` (then
    ///   `prepared.layer0` is used when present).
    func predictMasksFast(prepared: PreparedFeatures, imagePE: Tensor, sparse: Tensor, dense: Tensor?,
                          noMaskEmbedding: Tensor) -> (logits: Tensor, iou: [Float]) {
        let d = dimension
        let tokens = Tensor(shape: [6 + sparse.shape[0], d],
                            scalars: objectScoreToken.scalars + iouToken.scalars + maskTokens.scalars + sparse.scalars)
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
        let d = dimension
        let grid = SAM2Configuration.embeddingSize
        let (c1, c2) = (upscaleConv1Bias.count, upscaleConv2Bias.count)
        var hyper = [Float]()
        hyper.reserveCapacity(Self.maskTokenCount * c2)
        for k in 0..<Self.maskTokenCount {
            let token = Tensor(shape: [1, d], scalars: Array(hs.scalars[((2 + k) * d)..<((3 + k) * d)]))
            hyper += hypernetworks[k](token).scalars
        }
        guard let conv1 = upscaleConv1Packed, let conv2 = upscaleConv2Packed else {
            preconditionFailure("headFast needs the packed upscaling weights (Accelerated.isAvailable)")
        }
        let side = SAM2Configuration.lowResolutionMaskSize
        var logits = Tensor(unsafeUninitializedShape: [Self.maskTokenCount, side, side])
        keys.scalars.withUnsafeBufferPointer { kp in
            s1.scalars.withUnsafeBufferPointer { a1 in
                s0.scalars.withUnsafeBufferPointer { a0 in
                    upscaleConv1Bias.scalars.withUnsafeBufferPointer { b1 in
                        upscaleConv2Bias.scalars.withUnsafeBufferPointer { b2 in
                            upscaleNorm.weight.scalars.withUnsafeBufferPointer { lw in
                                upscaleNorm.bias.scalars.withUnsafeBufferPointer { lb in
                                    hyper.withUnsafeBufferPointer { hp in
                                        logits.scalars.withUnsafeMutableBufferPointer { l in
                                            nonisolated(unsafe) let logitsBase = l.baseAddress!  // bands write disjoint rows
                                            Parallel.forEachChunk(grid, minimumChunk: 1) { band in
                                                // Per-worker scratch: one grid row's products, its upscaled rows, their products.
                                                var products1 = [Float](repeating: 0, count: grid * 4 * c1)
                                                var upscaled = [Float](repeating: 0, count: 2 * (2 * grid) * c1)
                                                var products2 = [Float](repeating: 0, count: 2 * (2 * grid) * 4 * c2)
                                                for y in band {
                                                    products1.withUnsafeMutableBufferPointer { p1 in
                                                        if let lowRank {
                                                            lowRank.products(rows: (y * grid)..<((y + 1) * grid), into: p1.baseAddress!)
                                                        } else {
                                                            conv1.applySingleThreaded(kp.baseAddress! + y * grid * d, rows: grid, xStride: d, bias: nil,
                                                                                      into: p1.baseAddress!, yStride: 4 * c1)
                                                        }
                                                        upscaled.withUnsafeMutableBufferPointer { u in
                                                            // Parity: the high-res map is added before the LayerNorm, then GELU.
                                                            AcceleratedOps.transposedConvEpilogueBand(
                                                                products: p1.baseAddress!, rows: 1, width: grid, channels: c1, bias: b1.baseAddress!,
                                                                adding: a1.baseAddress! + 2 * y * (2 * grid) * c1,
                                                                norm: (lw.baseAddress!, lb.baseAddress!, upscaleNorm.eps), gelu: true,
                                                                into: u.baseAddress!, hyper: nil, masks: 0, logits: nil, logitsPlane: 0)
                                                        }
                                                    }
                                                    products2.withUnsafeMutableBufferPointer { p2 in
                                                        upscaled.withUnsafeBufferPointer { u in
                                                            conv2.applySingleThreaded(u.baseAddress!, rows: 2 * (2 * grid), xStride: c1, bias: nil,
                                                                                      into: p2.baseAddress!, yStride: 4 * c2)
                                                        }
                                                        // Parity: the high-res map is added before the GELU; masks = hyper · upscaled.
                                                        AcceleratedOps.transposedConvEpilogueBand(
                                                            products: p2.baseAddress!, rows: 2, width: 2 * grid, channels: c2, bias: b2.baseAddress!,
                                                            adding: a0.baseAddress! + 4 * y * side * c2, norm: nil, gelu: true, into: nil,
                                                            hyper: hp.baseAddress!, masks: Self.maskTokenCount, logits: logitsBase + 4 * y * side,
                                                            logitsPlane: side * side)
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let iouToken = Tensor(shape: [1, d], scalars: Array(hs.scalars[d..<(2 * d)]))
        return (logits, iouHead(iouToken).scalars)
    }
}

/// The first upscaling convolution's products from the cached base and the two image→token
/// updates (see the note at the top of this file).
struct LowRankUpscale {
    let base: Tensor          // (a ∘ g₀ ∘ g₁)·W, [T, O]
    let right: PackedWeight   // R, [K, O] packed
    let probabilities: [Tensor]  // P₀ᵀ, P₁ᵀ: [heads·N, T]
    let updates: [ImageUpdate]
    let outputs: Int

    /// Products of rows `rows` (`[rows.count, O]`) into `out`.
    func products(rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let (n0, n1) = (updates[0].probabilitiesT.shape[0], updates[1].probabilitiesT.shape[0])
        let t = updates[0].probabilitiesT.shape[1]
        let (k, count, first) = (n0 + n1 + 5, rows.count, rows.lowerBound)
        let (s0, m0, s1, m1) = (updates[0].inverses, updates[0].means, updates[1].inverses, updates[1].means)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: count * k) { left in
            let l = left.baseAddress!
            updates[0].probabilitiesT.scalars.withUnsafeBufferPointer { p0 in
                updates[1].probabilitiesT.scalars.withUnsafeBufferPointer { p1 in
                    // Column by column: the probabilities of a band are contiguous in Pᵀ.
                    for j in 0..<n0 {
                        let src = p0.baseAddress! + j * t + first
                        for r in 0..<count { l[r * k + j] = s1[first + r] * s0[first + r] * src[r] }
                    }
                    for j in 0..<n1 {
                        let src = p1.baseAddress! + j * t + first
                        for r in 0..<count { l[r * k + n0 + j] = s1[first + r] * src[r] }
                    }
                }
            }
            base.scalars.withUnsafeBufferPointer { b in
                for r in 0..<count {
                    let i = first + r
                    let (a, c) = (s1[i] * s0[i], s1[i])
                    let tail = l + r * k + n0 + n1
                    tail[0] = a
                    tail[1] = -a * m0[i]
                    tail[2] = c
                    tail[3] = -c * m1[i]
                    tail[4] = 1
                    let row = b.baseAddress! + i * outputs, o = out + r * outputs
                    for e in 0..<outputs { o[e] = a * row[e] }
                }
            }
            right.applySingleThreaded(l, rows: count, xStride: k, bias: nil, into: out, yStride: outputs, accumulate: true)
        }
    }
}

extension MaskDecoder {
    /// Whether the low-rank first upscaling applies: two two-way layers.
    var allowsLowRankUpscale: Bool { transformer.layers.count == 2 && upscaleConv1Packed != nil }

    /// `(keys ∘ g₀ ∘ g₁)·W` for a tile: the cached part of the low-rank first upscaling.
    func upscaleBase(layer0Keys keys: Tensor) -> Tensor? {
        guard allowsLowRankUpscale else { return nil }
        let g = zip(transformer.layers[0].norm4.weight.scalars, transformer.layers[1].norm4.weight.scalars).map { $0 * $1 }
        var scaled = keys
        scaled.multiplyRowVector(Tensor(shape: [g.count], scalars: g))
        return GEMM.linear(scaled, weight: upscaleConv1Matrix, bias: nil, packed: upscaleConv1Packed)
    }

    /// The per-prompt right-hand side R for the low-rank first upscaling.
    func lowRankUpscale(base: Tensor, updates: [ImageUpdate]) -> LowRankUpscale? {
        guard allowsLowRankUpscale, updates.count == 2 else { return nil }
        let d = dimension
        let (l0, l1) = (transformer.layers[0], transformer.layers[1])
        let (g0, g1) = (l0.norm4.weight.scalars, l1.norm4.weight.scalars)
        let g01 = zip(g0, g1).map { $0 * $1 }
        let b0 = l0.crossAttentionImageToToken.outProj.bias?.scalars ?? [Float](repeating: 0, count: d)
        let b1 = l1.crossAttentionImageToToken.outProj.bias?.scalars ?? [Float](repeating: 0, count: d)
        let beta0 = l0.norm4.bias.scalars
        func scaled(_ rows: [Float], _ g: [Float]) -> [Float] {
            var out = rows
            for i in 0..<out.count { out[i] *= g[i % d] }
            return out
        }
        // Rows of Z (R = Z·Wᵀ), matching the columns of the left matrix built in `products`.
        var z = scaled(updates[0].projectedValues.scalars, g01)
        z += scaled(updates[1].projectedValues.scalars, g1)
        z += scaled(b0, g01)                                   // × s₁s₀
        z += g01                                               // × −s₁s₀μ₀
        z += scaled(zip(beta0, b1).map { $0 + $1 }, g1)        // × s₁
        z += g1                                                // × −s₁μ₁
        z += l1.norm4.bias.scalars                             // × 1
        let k = z.count / d
        let r = GEMM.linear(Tensor(shape: [k, d], scalars: z), weight: upscaleConv1Matrix, bias: nil, packed: upscaleConv1Packed)
        let outputs = upscaleConv1Matrix.shape[0]
        let packed = r.scalars.withUnsafeBufferPointer { PackedWeight(kn: $0.baseAddress!, ldb: outputs, k: k, n: outputs) }
        return LowRankUpscale(base: base, right: packed, probabilities: updates.map(\.probabilitiesT), updates: updates, outputs: outputs)
    }
}
