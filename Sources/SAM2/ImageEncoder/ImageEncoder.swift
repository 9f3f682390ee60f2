import Kernels

// `FpnNeck` and `ImageEncoder` (`sam2/modeling/backbones/image_encoder.py`).

/// The feature pyramid neck: a 1×1 lateral convolution per trunk stage, with a nearest ×2
/// top-down path into the 64×64 level only (`fpn_top_down_levels=[2, 3]`, fuse "sum").
struct FPNNeck: Sendable {
    /// `convs[j]` is applied to trunk stage `3 − j` (convs[0] ↔ the lowest resolution).
    let convs: [Linear]

    init(_ weights: WeightReader, stageChannels: [Int], modelDimension: Int) throws {
        let channelList = Array(stageChannels.reversed())  // backbone_channel_list: lowest resolution first
        convs = try channelList.indices.map { j in
            try Linear(conv1x1: weights, "convs.\(j).conv", inChannels: channelList[j], outChannels: modelDimension)
        }
    }

    /// - Parameter stages: trunk outputs, channels-last, highest resolution first.
    /// - Returns: the pyramid levels 0…2 (`scalp=1` drops the 32×32 level), channels-last.
    func callAsFunction(_ stages: [Tensor]) -> [Tensor] {
        let n = stages.count - 1
        var out = [Tensor](repeating: Tensor(shape: [0]), count: stages.count)
        var previous: Tensor? = nil
        for i in stride(from: n, through: 0, by: -1) {
            var lateral = convs[n - i](stages[i])
            if i >= 2, let previous {  // top-down fusion only into levels 2 and 3
                lateral += Resize.nearestTimesTwo(previous)
            }
            previous = lateral
            out[i] = lateral
        }
        return Array(out.prefix(3))
    }

    /// Level 2 alone (the 64×64 embedding: lateral of stage 3 plus the nearest ×2 top-down path
    /// from stage 4), for callers that fold levels 0 and 1 into `conv_s0`/`conv_s1`.
    func level2(_ stages: [Tensor]) -> Tensor {
        let n = stages.count - 1
        var out = convs[n - 2](stages[2])
        out += Resize.nearestTimesTwo(convs[0](stages[n]))
        return out
    }

    /// `conv(lateral(x))` for a pyramid level without top-down input, as one linear map:
    /// W = W_conv·W_lateral, b = W_conv·b_lateral + b_conv (composed in Double). Exact in real
    /// arithmetic; saves the 256-channel intermediate (≈2.7 GMACs for the two high-res levels).
    func composed(level: Int, with conv: Linear) -> Linear {
        let lateral = convs[convs.count - 1 - level]
        let (mid, inner, out) = (lateral.outFeatures, lateral.inFeatures, conv.outFeatures)
        precondition(conv.inFeatures == mid, "composed: \(conv.inFeatures) vs \(mid)")
        var weight = [Float](repeating: 0, count: out * inner)
        var bias = [Float](repeating: 0, count: out)
        for o in 0..<out {
            var b = Double(conv.bias?[flat: o] ?? 0)
            for m in 0..<mid { b += Double(conv.weight[flat: o * mid + m]) * Double(lateral.bias?[flat: m] ?? 0) }
            bias[o] = Float(b)
            for i in 0..<inner {
                var acc = 0.0
                for m in 0..<mid { acc += Double(conv.weight[flat: o * mid + m]) * Double(lateral.weight[flat: m * inner + i]) }
                weight[o * inner + i] = Float(acc)
            }
        }
        return Linear(weight: Tensor(shape: [out, inner], scalars: weight), bias: Tensor(shape: [out], scalars: bias))
    }
}

/// `ImageEncoder`: the Hiera trunk followed by the FPN neck.
struct ImageEncoder: Sendable {
    let trunk: Hiera
    let neck: FPNNeck

    init(_ weights: WeightReader, configuration: SAM2Configuration) throws {
        trunk = try Hiera(weights.scoped("trunk"), configuration: configuration)
        neck = try FPNNeck(weights.scoped("neck"), stageChannels: configuration.stageChannels,
                           modelDimension: configuration.modelDimension)
    }

    /// - Returns: `backbone_fpn`, the three pyramid levels (256², 128², 64²), channels-last.
    func callAsFunction(_ image: Tensor) -> [Tensor] { neck(trunk(image)) }
}
