import CKernels

/// Layer normalisation over the last (channel) dimension.
public enum Normalization {
    /// Normalises each row of a `[rows, channels]` matrix in place:
    /// `(x − μ) / sqrt(σ² + eps) · γ + β`, with the biased variance as PyTorch's `nn.LayerNorm`.
    ///
    /// The same function serves SAM2's `LayerNorm2d` on channels-last data, which normalises
    /// over channels per pixel.
    public static func layerNorm(
        _ x: UnsafeMutablePointer<Float>, rows: Int, channels: Int,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float
    ) {
        if let kernel = Accelerated.elementwise(avx512: gs_layer_norm, avx2: gs_layer_norm_avx2) {
            Parallel.forEachChunk(rows, minimumChunk: max(64, 16384 / max(channels, 1))) { range in
                kernel(x + range.lowerBound * channels, range.count, channels, weight, bias, eps)
            }
            return
        }
        Parallel.forEachChunk(rows, minimumChunk: 64) { range in
            for r in range {
                let row = x + r * channels
                // Two passes in Float as PyTorch's CPU kernel does (mean, then centred squares).
                var mean: Float = 0
                for c in 0..<channels { mean += row[c] }
                mean /= Float(channels)
                var variance: Float = 0
                for c in 0..<channels {
                    let d = row[c] - mean
                    variance += d * d
                }
                variance /= Float(channels)
                let inverse = 1 / (variance + eps).squareRoot()
                for c in 0..<channels { row[c] = (row[c] - mean) * inverse * weight[c] + bias[c] }
            }
        }
    }

    /// `layerNorm` on the calling thread, for callers that split the rows themselves.
    /// - Parameters: means, inverses: if given, receive each row's mean and 1/sqrt(σ² + eps).
    public static func layerNormSingleThreaded(
        _ x: UnsafeMutablePointer<Float>, rows: Int, channels: Int,
        weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float,
        means: UnsafeMutablePointer<Float>? = nil, inverses: UnsafeMutablePointer<Float>? = nil
    ) {
        if Accelerated.hasPackedKernels {
            Accelerated.packed(avx512: gs_layer_norm_stats, avx2: gs_layer_norm_stats_avx2)(x, rows, channels, weight, bias, eps, means, inverses)
        } else {
            precondition(means == nil && inverses == nil, "layerNorm statistics need the accelerated kernels")
            layerNorm(x, rows: rows, channels: channels, weight: weight, bias: bias, eps: eps)
        }
    }

    /// Tensor form: normalises over the last dimension of `x`.
    public static func layerNorm(_ x: inout Tensor, weight: Tensor, bias: Tensor, eps: Float) {
        let channels = weight.count
        precondition(x.shape.last == channels, "layerNorm: \(x.shape) does not end in \(channels)")
        let rows = x.count / max(channels, 1)
        layerNorm(x.mutablePointer, rows: rows, channels: channels, weight: weight.pointer, bias: bias.pointer, eps: eps)
    }
}
