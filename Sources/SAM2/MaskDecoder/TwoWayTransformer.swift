import Kernels

// `TwoWayTransformer`, `TwoWayAttentionBlock` and `Attention` (`sam2/modeling/sam/transformer.py`).

/// `Attention`: separate q/k/v projections to an internal width (`embedding / downsample`),
/// multi-head scaled dot-product attention, output projection. No RoPE in the SAM heads.
struct DecoderAttention: Sendable {
    let heads: Int
    let qProj: Linear, kProj: Linear, vProj: Linear, outProj: Linear

    init(_ weights: WeightReader, dimension: Int, heads: Int, downsample: Int) throws {
        let inner = dimension / downsample
        self.heads = heads
        qProj = try Linear(weights, "q_proj", inFeatures: dimension, outFeatures: inner)
        kProj = try Linear(weights, "k_proj", inFeatures: dimension, outFeatures: inner)
        vProj = try Linear(weights, "v_proj", inFeatures: dimension, outFeatures: inner)
        outProj = try Linear(weights, "out_proj", inFeatures: inner, outFeatures: dimension)
    }

    /// q `[Nq, D]`, k and v `[Nk, D]` → `[Nq, D]`.
    func callAsFunction(q: Tensor, k: Tensor, v: Tensor) -> Tensor {
        let (queries, keys, values) = (qProj(q), kProj(k), vProj(v))
        let inner = queries.shape[1]
        let (nq, nk) = (queries.shape[0], keys.shape[0])
        var out = Tensor(shape: [nq, inner])
        var scores = [Float](repeating: 0, count: nq * nk)
        let qp = queries.pointer
        let kp = keys.pointer
        let vp = values.pointer
        let op = out.mutablePointer
        scores.withUnsafeMutableBufferPointer { sp in
            Attention.scaledDotProduct(
                q: qp, qStride: inner, k: kp, kStride: inner,
                v: vp, vStride: inner, into: op, outStride: inner,
                queryCount: nq, keyCount: nk, heads: heads, headDim: inner / heads,
                scores: sp.baseAddress!)
        }
        return outProj(out)
    }
}

/// `TwoWayAttentionBlock`: token self-attention, token→image cross-attention, MLP, and
/// image→token cross-attention.
struct TwoWayAttentionBlock: Sendable {
    let skipFirstLayerPositionEmbedding: Bool
    let selfAttention: DecoderAttention
    let norm1: LayerNorm
    let crossAttentionTokenToImage: DecoderAttention
    let norm2: LayerNorm
    let mlp: MLP
    let norm3: LayerNorm
    let norm4: LayerNorm
    let crossAttentionImageToToken: DecoderAttention

    init(_ weights: WeightReader, dimension d: Int, heads: Int, mlpDimension: Int, skipFirstLayerPositionEmbedding: Bool) throws {
        self.skipFirstLayerPositionEmbedding = skipFirstLayerPositionEmbedding
        selfAttention = try DecoderAttention(weights.scoped("self_attn"), dimension: d, heads: heads, downsample: 1)
        // Parity: every LayerNorm of the two-way transformer uses PyTorch's default eps 1e-5.
        norm1 = try LayerNorm(weights, "norm1", channels: d, eps: 1e-5)
        crossAttentionTokenToImage = try DecoderAttention(weights.scoped("cross_attn_token_to_image"), dimension: d, heads: heads, downsample: 2)
        norm2 = try LayerNorm(weights, "norm2", channels: d, eps: 1e-5)
        mlp = try MLP(weights, "mlp", dimensions: [d, mlpDimension, d], activation: .relu)
        norm3 = try LayerNorm(weights, "norm3", channels: d, eps: 1e-5)
        norm4 = try LayerNorm(weights, "norm4", channels: d, eps: 1e-5)
        crossAttentionImageToToken = try DecoderAttention(weights.scoped("cross_attn_image_to_token"), dimension: d, heads: heads, downsample: 2)
    }

    func callAsFunction(queries: inout Tensor, keys: inout Tensor, queryPE: Tensor, keyPE: Tensor) {
        if skipFirstLayerPositionEmbedding {
            // Parity: the first layer's self-attention *replaces* the queries (no residual, no PE).
            queries = selfAttention(q: queries, k: queries, v: queries)
        } else {
            let q = queries + queryPE
            queries += selfAttention(q: q, k: q, v: queries)
        }
        norm1.apply(&queries)

        let keysWithPE = keys + keyPE
        queries += crossAttentionTokenToImage(q: queries + queryPE, k: keysWithPE, v: keys)
        norm2.apply(&queries)

        queries += mlp(queries)
        norm3.apply(&queries)

        keys += crossAttentionImageToToken(q: keysWithPE, k: queries + queryPE, v: queries)
        norm4.apply(&keys)
    }
}

/// `TwoWayTransformer` of depth 2.
struct TwoWayTransformer: Sendable {
    let layers: [TwoWayAttentionBlock]
    let finalAttentionTokenToImage: DecoderAttention
    let normFinalAttention: LayerNorm

    static let depth = 2, heads = 8, mlpDimension = 2048

    init(_ weights: WeightReader, dimension d: Int) throws {
        layers = try (0..<Self.depth).map {
            try TwoWayAttentionBlock(weights.scoped("layers.\($0)"), dimension: d, heads: Self.heads,
                                     mlpDimension: Self.mlpDimension, skipFirstLayerPositionEmbedding: $0 == 0)
        }
        finalAttentionTokenToImage = try DecoderAttention(weights.scoped("final_attn_token_to_image"), dimension: d, heads: Self.heads, downsample: 2)
        normFinalAttention = try LayerNorm(weights, "norm_final_attn", channels: d, eps: 1e-5)
    }

    /// - Parameters:
    ///   - image: the image embedding plus dense prompt, channels-last `[4096, D]`.
    ///   - imagePE: the dense positional encoding `[4096, D]`.
    ///   - tokens: output tokens and sparse prompts `[N, D]`; they also serve as their own PE.
    /// - Returns: the updated tokens and image keys.
    func callAsFunction(image: Tensor, imagePE: Tensor, tokens: Tensor) -> (queries: Tensor, keys: Tensor) {
        var queries = tokens
        var keys = image
        for layer in layers {
            layer(queries: &queries, keys: &keys, queryPE: tokens, keyPE: imagePE)
        }
        queries += finalAttentionTokenToImage(q: queries + tokens, k: keys + imagePE, v: keys)
        normFinalAttention.apply(&queries)
        return (queries, keys)
    }
}
