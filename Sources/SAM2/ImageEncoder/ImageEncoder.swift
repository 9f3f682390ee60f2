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
