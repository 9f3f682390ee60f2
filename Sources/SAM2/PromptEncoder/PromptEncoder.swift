import Kernels

/// A point prompt in the model's 1024×1024 input frame.
struct ModelPoint: Sendable {
    var x: Float
    var y: Float
    /// 1 foreground, 0 background, 2 box top-left, 3 box bottom-right, −1 padding.
    var label: Int
}

/// `PromptEncoder` (`sam2/modeling/sam/prompt_encoder.py`).
struct PromptEncoder: Sendable {
    let dimension: Int
    let positionEmbedding: PositionEmbeddingRandom
    /// `point_embeddings.{0…3}`: negative, positive, box corner 1, box corner 2.
    let pointEmbeddings: [Tensor]
    let notAPointEmbedding: Tensor
    let noMaskEmbedding: Tensor
    // mask_downscaling: Conv(1→4, k2 s2) LN2d GELU Conv(4→16, k2 s2) LN2d GELU Conv(16→D, k1)
    let maskConv0Weight: Tensor, maskConv0Bias: Tensor
    let maskNorm1: LayerNorm
    let maskConv3Weight: Tensor, maskConv3Bias: Tensor
    let maskNorm4: LayerNorm
    let maskConv6: Linear

    init(_ weights: WeightReader, dimension d: Int) throws {
        dimension = d
        positionEmbedding = try PositionEmbeddingRandom(weights.scoped("pe_layer"), dimension: d)
        pointEmbeddings = try (0..<4).map { try weights.load("point_embeddings.\($0).weight", [1, d]) }
        notAPointEmbedding = try weights.load("not_a_point_embed.weight", [1, d])
        noMaskEmbedding = try weights.load("no_mask_embed.weight", [1, d])
        let inner = 16  // mask_in_chans
        maskConv0Weight = try weights.load("mask_downscaling.0.weight", [inner / 4, 1, 2, 2])
        maskConv0Bias = try weights.load("mask_downscaling.0.bias", [inner / 4])
        maskNorm1 = try LayerNorm(weights, "mask_downscaling.1", channels: inner / 4, eps: 1e-6)
        maskConv3Weight = try weights.load("mask_downscaling.3.weight", [inner, inner / 4, 2, 2])
        maskConv3Bias = try weights.load("mask_downscaling.3.bias", [inner])
        maskNorm4 = try LayerNorm(weights, "mask_downscaling.4", channels: inner, eps: 1e-6)
        maskConv6 = try Linear(conv1x1: weights, "mask_downscaling.6", inChannels: inner, outChannels: d)
    }

    /// `_embed_points`: the sparse embeddings `[N, D]` of points in the 1024 frame, with the
    /// label −1 padding point appended when `pad` is set.
    func embedPoints(_ points: [ModelPoint], pad: Bool) -> Tensor {
        let all = pad ? points + [ModelPoint(x: 0, y: 0, label: -1)] : points
        var out = Tensor(shape: [all.count, dimension])
        let size = Float(SAM2Configuration.imageSize)
        let o = out.mutablePointer
        for (i, p) in all.enumerated() {
            let row = o + i * dimension
            // Parity: +0.5 moves to the pixel centre, then forward_with_coords divides by 1024.
            positionEmbedding.encode(x: (p.x + 0.5) / size, y: (p.y + 0.5) / size, into: row)
            switch p.label {
            case -1:
                // The padding point's encoding is replaced, not added to.
                for c in 0..<dimension { row[c] = notAPointEmbedding[flat: c] }
            case 0...3:
                let e = pointEmbeddings[p.label].toArray()
                for c in 0..<dimension { row[c] += e[c] }
            default:
                break
            }
        }
        return out
    }

    /// The dense prompt embedding, channels-last `[64·64, D]`: `mask_downscaling(mask)` for a
    /// `[256, 256]` low-resolution mask, else `no_mask_embed` at every position.
    func embedMask(_ mask: Tensor?) -> Tensor {
        let size = SAM2Configuration.embeddingSize
        guard let mask else {
            var out = Tensor(shape: [size * size, dimension])
            out.addRowVector(noMaskEmbedding.reshaped([dimension]))
            return out
        }
        let side = mask.shape[mask.rank - 1]
        var x = Convolution.conv2d(mask, layout: .channelsFirst(channels: 1, height: side, width: side),
                                   weight: maskConv0Weight, bias: maskConv0Bias, stride: 2, padding: 0)
        maskNorm1.apply(&x)
        Activations.gelu(&x)
        x = Convolution.conv2d(x, layout: .channelsLast(channels: x.shape[2], height: x.shape[0], width: x.shape[1]),
                               weight: maskConv3Weight, bias: maskConv3Bias, stride: 2, padding: 0)
        maskNorm4.apply(&x)
        Activations.gelu(&x)
        return maskConv6(x).reshaped([size * size, dimension])
    }
}
