import Kernels

/// The image features of one image: what the encoder computes once and every prompt reuses.
///
/// Layouts are PyTorch's (`[C, H, W]`), so the maps can be compared with or exchanged with the
/// official implementation's `_features`.
public struct ImageFeatures: Sendable, Equatable {
    /// `image_embed`, `[D, 64, 64]` (with `no_mem_embed` already added).
    public var imageEmbedding: Tensor
    /// `high_res_feats[0]`, `[D/8, 256, 256]`.
    public var highResolutionS0: Tensor
    /// `high_res_feats[1]`, `[D/4, 128, 128]`.
    public var highResolutionS1: Tensor
    /// Size of the image the features were computed from, needed to map prompts and masks.
    public var originalWidth: Int
    public var originalHeight: Int

    public init(imageEmbedding: Tensor, highResolutionS0: Tensor, highResolutionS1: Tensor,
                originalWidth: Int, originalHeight: Int) throws {
        let d = imageEmbedding.shape.first ?? 0
        let g = SAM2Configuration.embeddingSize
        guard imageEmbedding.shape == [d, g, g], d >= 8,
              highResolutionS0.shape == [d / 8, 4 * g, 4 * g],
              highResolutionS1.shape == [d / 4, 2 * g, 2 * g] else {
            throw SAM2Error("image features have inconsistent shapes \(imageEmbedding.shape), \(highResolutionS0.shape), \(highResolutionS1.shape)")
        }
        guard originalWidth > 0, originalHeight > 0 else { throw SAM2Error("image features need a positive original size") }
        self.imageEmbedding = imageEmbedding
        self.highResolutionS0 = highResolutionS0
        self.highResolutionS1 = highResolutionS1
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
    }

    /// The model width `D`.
    public var dimension: Int { imageEmbedding.shape[0] }
}

/// SAM2 for single images (`sam2/modeling/sam2_base.py`, image path only: no memory).
public struct SAM2Model: Sendable {
    public let configuration: SAM2Configuration
    let imageEncoder: ImageEncoder
    let promptEncoder: PromptEncoder
    let maskDecoder: MaskDecoder
    /// `no_mem_embed`, added to the 64×64 embedding (`directly_add_no_mem_embed`).
    let noMemoryEmbedding: Tensor
    /// The prompt encoder's dense positional encoding, input-independent.
    let densePositionalEncoding: Tensor
    /// `conv_s0 ∘ neck.convs[3]` and `conv_s1 ∘ neck.convs[2]` folded into single maps (fast path only).
    let foldedS0: Linear?
    let foldedS1: Linear?

    /// Builds the model from weights with official key names.
    /// - Parameter configuration: the architecture; inferred from the tensor shapes when nil.
    public init(weights: any WeightProvider, configuration: SAM2Configuration? = nil) throws {
        let c = try configuration ?? CheckpointInspector.inferConfiguration(weights)
        try c.validate()
        self.configuration = c
        let reader = WeightReader(weights)
        let d = c.modelDimension
        imageEncoder = try ImageEncoder(reader.scoped("image_encoder"), configuration: c)
        promptEncoder = try PromptEncoder(reader.scoped("sam_prompt_encoder"), dimension: d)
        maskDecoder = try MaskDecoder(reader.scoped("sam_mask_decoder"), dimension: d)
        noMemoryEmbedding = try reader.load("no_mem_embed", [1, 1, d])
        densePositionalEncoding = promptEncoder.positionEmbedding.dense(size: SAM2Configuration.embeddingSize)
        if Accelerated.hasPackedKernels {  // the fast encoder's; the portable path stays the reference
            foldedS0 = imageEncoder.neck.composed(level: 0, with: maskDecoder.convS0)
            foldedS1 = imageEncoder.neck.composed(level: 1, with: maskDecoder.convS1)
        } else {
            (foldedS0, foldedS1) = (nil, nil)
        }
    }

    /// `set_image`: preprocesses the image, runs the image encoder, applies `conv_s0`/`conv_s1`
    /// and adds `no_mem_embed`.
    public func encode(_ image: RGBImage) throws -> ImageFeatures {
        try encode(image, precision: .float32)
    }

    /// `encode` with a choice of arithmetic precision for the image encoder (see
    /// `EncoderPrecision`); a reduced precision the CPU cannot run falls back to fp32 (callers
    /// check `isAvailable` first).
    public func encode(_ image: RGBImage, precision: EncoderPrecision) throws -> ImageFeatures {
        try encode(image, reducedPlan: precision.isAvailable ? precision.plan : nil)
    }

    /// `encode` with an explicit choice of reduced-precision products per trunk block (nil:
    /// fp32), for measuring where a reduced precision's error comes from.
    public func encode(_ image: RGBImage, reducedPlan plan: ReducedPrecisionPlan?) throws -> ImageFeatures {
        let s0: Tensor, s1: Tensor
        var embedding: Tensor
        if let foldedS0, let foldedS1 {
            // Levels 0 and 1 of the pyramid only feed conv_s0/conv_s1 in the image predictor.
            let stages = imageEncoder.trunk(Transforms.preprocess(image), plan: plan)
            s0 = foldedS0(stages[0])
            s1 = foldedS1(stages[1])
            embedding = imageEncoder.neck.level2(stages)
        } else {
            let levels = imageEncoder(Transforms.preprocess(image))
            s0 = maskDecoder.convS0(levels[0])
            s1 = maskDecoder.convS1(levels[1])
            embedding = levels[2]
        }
        // Parity: no_mem_embed goes to the 64×64 embedding only, not to the high-res maps.
        embedding.addRowVector(noMemoryEmbedding.reshaped([configuration.modelDimension]))
        return try ImageFeatures(
            imageEmbedding: embedding.channelsFirst(), highResolutionS0: s0.channelsFirst(),
            highResolutionS1: s1.channelsFirst(), originalWidth: image.width, originalHeight: image.height)
    }
}
