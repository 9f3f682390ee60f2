import Kernels

/// `MaskDecoder` (`sam2/modeling/sam/mask_decoder.py`) with high-resolution features, sigmoid IoU
/// head and object-score token, as every SAM2 config builds it.
struct MaskDecoder: Sendable {
    let dimension: Int
    let transformer: TwoWayTransformer
    let iouToken: Tensor
    let maskTokens: Tensor
    let objectScoreToken: Tensor
    let upscaleConv1Weight: Tensor, upscaleConv1Bias: Tensor
    let upscaleNorm: LayerNorm
    let upscaleConv2Weight: Tensor, upscaleConv2Bias: Tensor
    /// The transposed-conv weights as linear weights `[(dy, dx, o), in]` (and packed), built at load.
    let upscaleConv1Matrix: Tensor, upscaleConv2Matrix: Tensor
    let upscaleConv1Packed: PackedWeight?, upscaleConv2Packed: PackedWeight?
    let convS0: Linear
    let convS1: Linear
    let hypernetworks: [MLP]
    let iouHead: MLP
    /// Loaded so that a checkpoint missing it is rejected; the image predictor ignores its output.
    let objectScoreHead: MLP

    static let maskTokenCount = 4  // num_multimask_outputs + 1
    // The single-mask stability fallback that build_sam2's postprocessing overrides switch on.
    static let stabilityDelta: Float = 0.05
    static let stabilityThreshold: Float = 0.98

    init(_ weights: WeightReader, dimension d: Int) throws {
        dimension = d
        transformer = try TwoWayTransformer(weights.scoped("transformer"), dimension: d)
        iouToken = try weights.load("iou_token.weight", [1, d])
        maskTokens = try weights.load("mask_tokens.weight", [Self.maskTokenCount, d])
        objectScoreToken = try weights.load("obj_score_token.weight", [1, d])
        upscaleConv1Weight = try weights.load("output_upscaling.0.weight", [d, d / 4, 2, 2])
        upscaleConv1Bias = try weights.load("output_upscaling.0.bias", [d / 4])
        upscaleNorm = try LayerNorm(weights, "output_upscaling.1", channels: d / 4, eps: 1e-6)
        upscaleConv2Weight = try weights.load("output_upscaling.3.weight", [d / 4, d / 8, 2, 2])
        upscaleConv2Bias = try weights.load("output_upscaling.3.bias", [d / 8])
        upscaleConv1Matrix = Convolution.transposedConv2x2Matrix(upscaleConv1Weight)
        upscaleConv2Matrix = Convolution.transposedConv2x2Matrix(upscaleConv2Weight)
        upscaleConv1Packed = Accelerated.hasPackedKernels ? PackedWeight(upscaleConv1Matrix) : nil
        upscaleConv2Packed = Accelerated.hasPackedKernels ? PackedWeight(upscaleConv2Matrix) : nil
        convS0 = try Linear(conv1x1: weights, "conv_s0", inChannels: d, outChannels: d / 8)
        convS1 = try Linear(conv1x1: weights, "conv_s1", inChannels: d, outChannels: d / 4)
        hypernetworks = try (0..<Self.maskTokenCount).map {
            try MLP(weights, "output_hypernetworks_mlps.\($0)", dimensions: [d, d, d, d / 8], activation: .relu)
        }
        iouHead = try MLP(weights, "iou_prediction_head", dimensions: [d, 256, 256, Self.maskTokenCount],
                          activation: .relu, sigmoidOutput: true)
        objectScoreHead = try MLP(weights, "pred_obj_score_head", dimensions: [d, d, d, 1], activation: .relu)
    }

    /// `predict_masks`: all four mask logits `[4, 256, 256]` and their IoU predictions.
    /// - Parameters:
    ///   - image: image embedding, channels-last `[4096, D]`.
    ///   - imagePE: dense positional encoding `[4096, D]`.
    ///   - sparse: sparse prompt embeddings `[N, D]`.
    ///   - dense: dense prompt embedding `[4096, D]`.
    ///   - highResolution: `conv_s0` and `conv_s1` features, channels-last `[256, 256, D/8]` and `[128, 128, D/4]`.
    func predictMasks(image: Tensor, imagePE: Tensor, sparse: Tensor, dense: Tensor,
                      highResolution: (s0: Tensor, s1: Tensor)) -> (logits: Tensor, iou: [Float]) {
        // Parity: token order [obj_score, iou, mask0…3, sparse…]; iou is token 1, masks 2…5.
        let tokens = Tensor(concatenatingRows: [objectScoreToken, iouToken, maskTokens, sparse])
        let (hs, keys) = transformer(image: image + dense, imagePE: imagePE, tokens: tokens)
        return head(hs: hs, keys: keys, s0: highResolution.s0, s1: highResolution.s1)
    }

    /// The upscaling, hypernetworks and IoU head after the transformer: all four mask logits
    /// `[4, 256, 256]` and their IoU predictions.
    func head(hs: Tensor, keys: Tensor, s0: Tensor, s1: Tensor) -> (logits: Tensor, iou: [Float]) {
        let d = dimension
        let grid = SAM2Configuration.embeddingSize
        // Parity: the high-res maps are added before the LayerNorm (stage 1) and before the GELU (stage 2).
        var upscaled = Convolution.transposedConv2x2(keys.reshaped([grid, grid, d]), matrix: upscaleConv1Matrix,
                                                     packed: upscaleConv1Packed, bias: upscaleConv1Bias, adding: s1)
        upscaleNorm.apply(&upscaled)
        Activations.gelu(&upscaled)
        upscaled = Convolution.transposedConv2x2(upscaled, matrix: upscaleConv2Matrix, packed: upscaleConv2Packed,
                                                 bias: upscaleConv2Bias, adding: s0)
        Activations.gelu(&upscaled)

        let hyper = Tensor(concatenatingRows: (0..<Self.maskTokenCount).map { k in hypernetworks[k](hs.copyingRows((2 + k)..<(3 + k))) })
        // masks = hyper [4, D/8] @ upscaled [D/8, 65536]: upscaled is channels-last, so use its transpose.
        let side = SAM2Configuration.lowResolutionMaskSize
        var logits = Tensor(shape: [Self.maskTokenCount, side * side])
        GEMM.multiply(hyper.matrix, upscaled.matrix.transposed, into: logits.mutableMatrix())
        logits.reshape([Self.maskTokenCount, side, side])
        return (logits, iouHead(hs.copyingRows(1..<2)).toArray())
    }

    /// `forward`: the three multimask candidates, or one mask chosen by the stability fallback.
    func selectMasks(logits: Tensor, iou: [Float], multimask: Bool) -> (logits: Tensor, iou: [Float]) {
        let plane = logits.count / Self.maskTokenCount
        func masks(_ indices: [Int]) -> Tensor {
            var scalars: [Float] = []
            scalars.reserveCapacity(indices.count * plane)
            for i in indices { scalars += logits.toArray((i * plane)..<((i + 1) * plane)) }
            return Tensor(shape: [indices.count] + Array(logits.shape.dropFirst()), scalars: scalars)
        }
        if multimask { return (masks([1, 2, 3]), Array(iou[1...3])) }
        // `_dynamic_multimask_via_stability`: keep mask 0 when its logits are stable under ±0.05,
        // else take the multimask output with the highest predicted IoU (first on ties).
        var intersection = 0, union = 0
        for i in 0..<plane {
            let v = logits[flat: i]
            if v > Self.stabilityDelta { intersection += 1 }
            if v > -Self.stabilityDelta { union += 1 }
        }
        let stability: Float = union > 0 ? Float(intersection) / Float(union) : 1
        if stability >= Self.stabilityThreshold { return (masks([0]), [iou[0]]) }
        var best = 1
        for i in 2...3 where iou[i] > iou[best] { best = i }
        return (masks([best]), [iou[best]])
    }
}
