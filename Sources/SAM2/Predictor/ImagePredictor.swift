import Kernels

/// A click: a point in original-image pixel coordinates (x right, y down).
public struct PointPrompt: Sendable, Equatable, Codable {
    public var x: Float
    public var y: Float
    /// 1 = foreground, 0 = background.
    public var label: Int

    public init(x: Float, y: Float, label: Int) {
        self.x = x
        self.y = y
        self.label = label
    }
}

/// A box in original-image pixel coordinates (`x0, y0` top-left, `x1, y1` bottom-right).
public struct BoxPrompt: Sendable, Equatable, Codable {
    public var x0: Float, y0: Float, x1: Float, y1: Float

    public init(x0: Float, y0: Float, x1: Float, y1: Float) {
        (self.x0, self.y0, self.x1, self.y1) = (x0, y0, x1, y1)
    }
}

/// Everything SAM2 can be prompted with for one object.
public struct Prompt: Sendable, Equatable {
    public var points: [PointPrompt]
    public var box: BoxPrompt?
    /// Low-resolution logits `[256, 256]` (or `[1, 256, 256]`) from an earlier prediction.
    public var maskInput: Tensor?

    public init(points: [PointPrompt] = [], box: BoxPrompt? = nil, maskInput: Tensor? = nil) {
        self.points = points
        self.box = box
        self.maskInput = maskInput
    }

    public var isEmpty: Bool { points.isEmpty && box == nil && maskInput == nil }
}

/// The result of one prediction, in the order `SAM2ImagePredictor.predict` returns it.
public struct Prediction: Sendable {
    /// Binary masks `[C, H, W]` (0 or 1) at the original image size.
    public var masks: [UInt8]
    /// Predicted IoU per mask, `[C]`.
    public var scores: [Float]
    /// Low-resolution logits `[C, 256, 256]`, clamped to ±32.
    public var lowResolutionLogits: Tensor
    public var width: Int
    public var height: Int

    /// The number of masks `C` (3 with multimask output, else 1).
    public var count: Int { scores.count }
}

extension SAM2Model {
    /// `SAM2ImagePredictor.predict` on features computed by `encode`.
    ///
    /// For several prompts on the same image, `prepare` the features once and use
    /// `predict(_: PreparedFeatures, …)`, which skips the per-call layout work.
    /// - Parameter multimask: three candidates (true) or one (false, with the stability fallback).
    public func predict(_ features: ImageFeatures, prompt: Prompt, multimask: Bool) throws -> Prediction {
        let (logits, scores) = try decodeLogits(features, prompt: prompt, multimask: multimask)
        return Self.postprocess(logits: logits, scores: scores, width: features.originalWidth, height: features.originalHeight)
    }

    /// `predict` on prepared features.
    public func predict(_ prepared: PreparedFeatures, prompt: Prompt, multimask: Bool) throws -> Prediction {
        let (logits, scores) = try decodeLogits(prepared, prompt: prompt, multimask: multimask)
        return Self.postprocess(logits: logits, scores: scores, width: prepared.originalWidth, height: prepared.originalHeight)
    }

    /// `postprocess_masks` and the threshold: masks at the original size from the logits.
    static func postprocess(logits: Tensor, scores: [Float], width w: Int, height h: Int) -> Prediction {
        // Parity: the masks come from the *unclamped* logits; the clamp applies to the returned
        // low-resolution logits only.
        var masks: [UInt8]? = nil
        if Accelerated.hasPackedKernels {
            let (count, side) = (logits.shape[0], logits.shape[1])
            var ok = true
            let fast = [UInt8](unsafeUninitializedCapacity: count * h * w) { buffer, initialized in
                let l = logits.pointer
                for c in 0..<count where ok {
                    ok = AcceleratedOps.upsampleThreshold(l + c * side * side, height: side, width: side,
                                                          into: buffer.baseAddress! + c * h * w, height: h, width: w)
                }
                if !ok { buffer.initialize(repeating: 0) }
                initialized = count * h * w
            }
            if ok { masks = fast }
        }
        let finalMasks = masks ?? Transforms.upsample(logits, height: h, width: w).toArray().map { $0 > 0 ? UInt8(1) : 0 }  // strict `>`
        return Prediction(masks: finalMasks, scores: scores, lowResolutionLogits: clampedLowResolution(logits), width: w, height: h)
    }

    /// The low-resolution logits as the predictor returns them (`low_res_masks`): clamped to ±32.
    static func clampedLowResolution(_ logits: Tensor) -> Tensor {
        var clamped = logits
        let c = clamped.mutablePointer
        for i in 0..<clamped.count { c[i] = min(max(c[i], -32), 32) }
        return clamped
    }

    /// Lays the features out for fast repeated decoding and precomputes the first decoder
    /// layer's image side for prompts without a mask input (a few milliseconds for Hiera-T,
    /// saved on every such prompt afterwards).
    public func prepare(_ features: ImageFeatures) throws -> PreparedFeatures {
        try prepare(features, cachingFirstLayer: true)
    }

    /// `prepare` from maps already laid out channels-last — `image_embed` `[64, 64, D]` and
    /// `high_res_feats` `[256, 256, D/8]` and `[128, 128, D/4]` — as a feature store can read them,
    /// which saves the transpositions and keeps no channels-first copy.
    public func prepare(channelsLastImageEmbedding image: Tensor, highResolutionS0 s0: Tensor, highResolutionS1 s1: Tensor,
                        originalWidth: Int, originalHeight: Int) throws -> PreparedFeatures {
        let d = configuration.modelDimension, g = SAM2Configuration.embeddingSize
        for (name, tensor, expected) in [("image_embed", image, [g, g, d]), ("high_res_feats_0", s0, [4 * g, 4 * g, d / 8]),
                                         ("high_res_feats_1", s1, [2 * g, 2 * g, d / 4])] where tensor.shape != expected {
            throw SAM2Error("\(name) has shape \(tensor.shape) (channels-last), expected \(expected) for this model")
        }
        guard originalWidth > 0, originalHeight > 0 else { throw SAM2Error("image size \(originalWidth)×\(originalHeight) is empty") }
        return prepared(image: image.reshaped([g * g, d]), s0: s0, s1: s1, width: originalWidth, height: originalHeight,
                        cachingFirstLayer: true)
    }

    func prepare(_ features: ImageFeatures, cachingFirstLayer: Bool) throws -> PreparedFeatures {
        let d = configuration.modelDimension
        guard features.dimension == d else {
            throw SAM2Error("features have \(features.dimension) channels but the model has \(d)")
        }
        let g = SAM2Configuration.embeddingSize
        return prepared(image: features.imageEmbedding.channelsLast().reshaped([g * g, d]), s0: features.highResolutionS0.channelsLast(),
                        s1: features.highResolutionS1.channelsLast(), width: features.originalWidth, height: features.originalHeight,
                        cachingFirstLayer: cachingFirstLayer)
    }

    private func prepared(image: Tensor, s0: Tensor, s1: Tensor, width: Int, height: Int, cachingFirstLayer: Bool) -> PreparedFeatures {
        var layer0: DecoderLayer0Cache? = nil
        if cachingFirstLayer, Accelerated.hasPackedKernels {
            var keys = image
            keys.addRowVector(promptEncoder.noMaskEmbedding.reshaped([configuration.modelDimension]))
            layer0 = maskDecoder.transformer.layer0Cache(keys: keys, imagePE: densePositionalEncoding)
            layer0?.upscaleBase = maskDecoder.upscaleBase(layer0Keys: keys)
        }
        return PreparedFeatures(originalWidth: width, originalHeight: height, image: image, s0: s0, s1: s1, layer0: layer0)
    }

    /// The prompt encoder and mask decoder: unclamped low-resolution logits `[C, 256, 256]` and
    /// the IoU predictions, without upsampling.
    public func decodeLogits(_ features: ImageFeatures, prompt: Prompt, multimask: Bool) throws -> (logits: Tensor, scores: [Float]) {
        if Accelerated.hasPackedKernels {
            // One prompt: the layout work is needed anyway, the first-layer cache would not pay off.
            return try decodeLogits(prepare(features, cachingFirstLayer: false), prompt: prompt, multimask: multimask)
        }
        let (sparse, mask) = try encodePrompt(prompt, width: features.originalWidth, height: features.originalHeight)
        let d = configuration.modelDimension
        guard features.dimension == d else {
            throw SAM2Error("features have \(features.dimension) channels but the model has \(d)")
        }
        let dense = promptEncoder.embedMask(mask)
        let g = SAM2Configuration.embeddingSize
        let image = features.imageEmbedding.channelsLast().reshaped([g * g, d])
        let s0 = features.highResolutionS0.channelsLast()
        let s1 = features.highResolutionS1.channelsLast()
        let all = maskDecoder.predictMasks(image: image, imagePE: densePositionalEncoding, sparse: sparse, dense: dense,
                                           highResolution: (s0, s1))
        let selected = maskDecoder.selectMasks(logits: all.logits, iou: all.iou, multimask: multimask)
        return (selected.logits, selected.iou)
    }

    /// `decodeLogits` on prepared features.
    public func decodeLogits(_ prepared: PreparedFeatures, prompt: Prompt, multimask: Bool) throws -> (logits: Tensor, scores: [Float]) {
        let (sparse, mask) = try encodePrompt(prompt, width: prepared.originalWidth, height: prepared.originalHeight)
        let all: (logits: Tensor, iou: [Float])
        if Accelerated.hasPackedKernels {
            let dense = mask.map { promptEncoder.embedMask($0) }
            all = maskDecoder.predictMasksFast(prepared: prepared, imagePE: densePositionalEncoding, sparse: sparse, dense: dense,
                                               noMaskEmbedding: promptEncoder.noMaskEmbedding.reshaped([configuration.modelDimension]))
        } else {
            all = maskDecoder.predictMasks(image: prepared.image, imagePE: densePositionalEncoding, sparse: sparse,
                                           dense: promptEncoder.embedMask(mask), highResolution: (prepared.s0, prepared.s1))
        }
        let selected = maskDecoder.selectMasks(logits: all.logits, iou: all.iou, multimask: multimask)
        return (selected.logits, selected.iou)
    }

    /// `_prep_prompts` and the sparse half of the prompt encoder: the sparse embeddings `[N, D]`
    /// and the validated mask input `[1, 256, 256]`, if any.
    func encodePrompt(_ prompt: Prompt, width w: Int, height h: Int) throws -> (sparse: Tensor, mask: Tensor?) {
        let d = configuration.modelDimension
        guard !prompt.isEmpty else { throw SAM2Error("empty prompt: give at least one point, a box or a mask input") }

        // `_prep_prompts` / `_predict`: a box becomes two points labelled 2 and 3, placed first.
        var points: [ModelPoint] = []
        if let box = prompt.box {
            for v in [box.x0, box.y0, box.x1, box.y1] where !v.isFinite { throw SAM2Error("box coordinates must be finite numbers") }
            let tl = Transforms.toModelFrame(x: box.x0, y: box.y0, width: w, height: h)
            let br = Transforms.toModelFrame(x: box.x1, y: box.y1, width: w, height: h)
            points.append(ModelPoint(x: tl.x, y: tl.y, label: 2))
            points.append(ModelPoint(x: br.x, y: br.y, label: 3))
        }
        for p in prompt.points {
            guard p.x.isFinite, p.y.isFinite else { throw SAM2Error("point coordinates must be finite numbers") }
            guard p.label == 0 || p.label == 1 else { throw SAM2Error("point label must be 1 (foreground) or 0 (background), got \(p.label)") }
            let m = Transforms.toModelFrame(x: p.x, y: p.y, width: w, height: h)
            points.append(ModelPoint(x: m.x, y: m.y, label: p.label))
        }
        // Parity: the predictor calls the prompt encoder with boxes=None, so the padding point is
        // appended even when a box is given.
        let sparse = points.isEmpty ? Tensor(shape: [0, d]) : promptEncoder.embedPoints(points, pad: true)

        var mask: Tensor? = nil
        if let input = prompt.maskInput {
            let side = SAM2Configuration.lowResolutionMaskSize
            guard input.count == side * side, input.shape.suffix(2) == [side, side] else {
                throw SAM2Error("mask input must be \(side)×\(side) low-resolution logits, got shape \(input.shape)")
            }
            mask = input.reshaped([1, side, side])
        }
        return (sparse, mask)
    }
}
