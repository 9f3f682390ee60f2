import Kernels

extension SAM2Model {
    /// `decodeLogits` for a batch of prompts on one prepared image (the automatic mask
    /// generator's `points_per_batch` single-point prompts, say).
    ///
    /// Everything prompt-independent is shared: the channels-last maps, the first decoder layer's
    /// image-side projections and the low-rank upscaling base in `prepared`, the dense positional
    /// encoding. The prompts are spread over the cores, one prompt per worker at a time with its
    /// kernels unsplit (``Parallel/serially(_:)``): a decode is some forty short products, and
    /// splitting each of them over two cores costs a synchronisation per product. Each prompt runs
    /// exactly the arithmetic of a decode on its own, so the logits equal `decodeLogits` one by one.
    /// - Returns: one result per prompt, in order.
    public func decodeLogits(_ prepared: PreparedFeatures, prompts: [Prompt], multimask: Bool) throws
        -> [(logits: Tensor, scores: [Float])] {
        var results = [Result<(logits: Tensor, scores: [Float]), any Error>?](repeating: nil, count: prompts.count)
        results.withUnsafeMutableBufferPointer { out in
            let slots = out.baseAddress.unsafelyUnwrapped  // each worker writes its own indices
            Parallel.forEachItem(prompts.count) { i in
                slots[i] = Result { try decodeLogits(prepared, prompt: prompts[i], multimask: multimask) }
            }
        }
        return try results.map { result in
            guard let result else { throw SAM2Error("a prompt of the batch was not decoded") }
            return try result.get()
        }
    }
}
