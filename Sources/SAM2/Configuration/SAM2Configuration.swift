/// The architecture of a SAM2 model: what differs between Meta's presets (`configs/sam2.1/*.yaml`).
///
/// Everything not listed here is common to all of them and fixed in the code: 1024×1024 input,
/// q-pooling in the first block of stages 2–4 with stride 2, channel and head doubling per stage,
/// MLP ratio 4, an FPN neck with top-down fusion into the 64×64 level only, high-resolution
/// features for the decoder, and a two-way transformer of depth 2 with 8 heads and an MLP of 2048.
public struct SAM2Configuration: Codable, Sendable, Equatable {
    /// Channels of the first Hiera stage (`trunk.embed_dim`).
    public var embedDim: Int
    /// Attention heads of the first Hiera stage (`trunk.num_heads`).
    public var numHeads: Int
    /// Blocks per Hiera stage (`trunk.stages`).
    public var stages: [Int]
    /// Blocks that attend globally instead of in windows (`trunk.global_att_blocks`).
    public var globalAttentionBlocks: [Int]
    /// Window size per stage (`trunk.window_spec`).
    public var windowSpec: [Int]
    /// Spatial size of the background position embedding (`trunk.window_pos_embed_bkg_spatial_size`).
    public var windowPositionEmbeddingBackgroundSize: [Int]
    /// Width of the neck and of the SAM heads (`neck.d_model`, 256 in every preset).
    public var modelDimension: Int
    /// "2.1" or "2.0": the image path is identical, only the weights and video keys differ.
    public var version: String

    public init(
        embedDim: Int, numHeads: Int, stages: [Int], globalAttentionBlocks: [Int], windowSpec: [Int],
        windowPositionEmbeddingBackgroundSize: [Int], modelDimension: Int = 256, version: String = "2.1"
    ) {
        self.embedDim = embedDim
        self.numHeads = numHeads
        self.stages = stages
        self.globalAttentionBlocks = globalAttentionBlocks
        self.windowSpec = windowSpec
        self.windowPositionEmbeddingBackgroundSize = windowPositionEmbeddingBackgroundSize
        self.modelDimension = modelDimension
        self.version = version
    }

    /// The input resolution. `SAM2ImagePredictor` hard-codes its feature sizes for 1024.
    public static let imageSize = 1024
    /// Size of the image embedding grid (1024 / 16).
    public static let embeddingSize = 64
    /// Size of the low-resolution mask logits (4 × the embedding grid).
    public static let lowResolutionMaskSize = 256

    /// The total number of trunk blocks.
    public var blockCount: Int { stages.reduce(0, +) }

    /// Index of the last block of each stage (`stage_ends`).
    public var stageEnds: [Int] {
        var ends: [Int] = []
        var total = 0
        for s in stages {
            total += s
            ends.append(total - 1)
        }
        return ends
    }

    /// Channels of each stage's output, first stage first.
    public var stageChannels: [Int] { (0..<stages.count).map { embedDim << $0 } }

    /// Checks the values a checkpoint or a JSON file could get wrong.
    public func validate() throws {
        guard embedDim > 0, numHeads > 0, embedDim % numHeads == 0 else {
            throw SAM2Error("configuration: embedDim \(embedDim) must be a positive multiple of numHeads \(numHeads)")
        }
        guard stages.count == 4, stages.allSatisfy({ $0 > 0 }) else {
            throw SAM2Error("configuration: stages must be four positive block counts, got \(stages)")
        }
        guard windowSpec.count == 4, windowSpec.allSatisfy({ $0 > 0 }) else {
            throw SAM2Error("configuration: windowSpec must be four positive sizes, got \(windowSpec)")
        }
        guard windowPositionEmbeddingBackgroundSize.count == 2,
              windowPositionEmbeddingBackgroundSize.allSatisfy({ $0 > 0 }) else {
            throw SAM2Error("configuration: windowPositionEmbeddingBackgroundSize must be two positive sizes")
        }
        guard globalAttentionBlocks.allSatisfy({ (0..<blockCount).contains($0) }) else {
            throw SAM2Error("configuration: globalAttentionBlocks \(globalAttentionBlocks) outside 0..<\(blockCount)")
        }
        guard modelDimension >= 8, modelDimension % 8 == 0 else {
            throw SAM2Error("configuration: modelDimension must be a positive multiple of 8, got \(modelDimension)")
        }
        // A q-pool halves the window; windows must stay whole.
        for stage in 1..<4 where windowSpec[stage - 1] % 2 != 0 {
            throw SAM2Error("configuration: window \(windowSpec[stage - 1]) of stage \(stage) is pooled and must be even")
        }
    }
}

/// Meta's released models.
public enum SAM2Preset: String, CaseIterable, Sendable {
    case tiny, small, basePlus = "base_plus", large
    case tiny20 = "tiny_2.0", small20 = "small_2.0", basePlus20 = "base_plus_2.0", large20 = "large_2.0"

    /// The architecture of this preset.
    public var configuration: SAM2Configuration {
        let version = isVersion20 ? "2.0" : "2.1"
        switch self {
        case .tiny, .tiny20:
            return SAM2Configuration(embedDim: 96, numHeads: 1, stages: [1, 2, 7, 2], globalAttentionBlocks: [5, 7, 9],
                                     windowSpec: [8, 4, 14, 7], windowPositionEmbeddingBackgroundSize: [7, 7], version: version)
        case .small, .small20:
            return SAM2Configuration(embedDim: 96, numHeads: 1, stages: [1, 2, 11, 2], globalAttentionBlocks: [7, 10, 13],
                                     windowSpec: [8, 4, 14, 7], windowPositionEmbeddingBackgroundSize: [7, 7], version: version)
        case .basePlus, .basePlus20:
            return SAM2Configuration(embedDim: 112, numHeads: 2, stages: [2, 3, 16, 3], globalAttentionBlocks: [12, 16, 20],
                                     windowSpec: [8, 4, 14, 7], windowPositionEmbeddingBackgroundSize: [14, 14], version: version)
        case .large, .large20:
            return SAM2Configuration(embedDim: 144, numHeads: 2, stages: [2, 6, 36, 4], globalAttentionBlocks: [23, 33, 43],
                                     windowSpec: [8, 4, 16, 8], windowPositionEmbeddingBackgroundSize: [7, 7], version: version)
        }
    }

    /// Whether this is a SAM 2.0 (July 2024) release.
    public var isVersion20: Bool { rawValue.hasSuffix("_2.0") }

    /// The checkpoint file name Meta publishes.
    public var checkpointFileName: String {
        let size: String
        switch self {
        case .tiny, .tiny20: size = "tiny"
        case .small, .small20: size = "small"
        case .basePlus, .basePlus20: size = "base_plus"
        case .large, .large20: size = "large"
        }
        return isVersion20 ? "sam2_hiera_\(size).pt" : "sam2.1_hiera_\(size).pt"
    }

    /// Meta's public download address for the checkpoint.
    public var downloadURL: String {
        let folder = isVersion20 ? "072824" : "092824"
        return "https://dl.fbaipublicfiles.com/segment_anything_2/\(folder)/\(checkpointFileName)"
    }

    /// Recognises a preset from the trunk width and depth found in a checkpoint.
    public static func matching(embedDim: Int, blockCount: Int, version20: Bool) -> SAM2Preset? {
        allCases.first {
            let c = $0.configuration
            return c.embedDim == embedDim && c.blockCount == blockCount && $0.isVersion20 == version20
        }
    }
}
