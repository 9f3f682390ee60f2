/// Recognises the model in a checkpoint from its tensor names and shapes.
public enum CheckpointInspector {
    /// A key present only in SAM 2.1 checkpoints (a video-path flag, but a reliable marker).
    static let version21Marker = "no_obj_embed_spatial"

    /// The preset whose architecture the checkpoint holds, if it is one of Meta's.
    public static func inferPreset(_ weights: any WeightProvider) throws -> SAM2Preset {
        let (embedDim, blocks) = try trunkShape(weights)
        let v20 = weights.shape(of: version21Marker) == nil
        guard let preset = SAM2Preset.matching(embedDim: embedDim, blockCount: blocks, version20: v20) else {
            throw SAM2Error("checkpoint holds a Hiera trunk of width \(embedDim) and \(blocks) blocks, which matches no SAM2 preset; pass its configuration explicitly")
        }
        return preset
    }

    /// The architecture of the checkpoint's preset.
    public static func inferConfiguration(_ weights: any WeightProvider) throws -> SAM2Configuration {
        try inferPreset(weights).configuration
    }

    static func trunkShape(_ weights: any WeightProvider) throws -> (embedDim: Int, blocks: Int) {
        let key = "image_encoder.trunk.patch_embed.proj.weight"
        guard let shape = weights.shape(of: key), shape.count == 4 else {
            throw SAM2Error("not a SAM2 checkpoint: no tensor \(key)")
        }
        let prefix = "image_encoder.trunk.blocks."
        var indices = Set<Int>()
        for name in weights.tensorNames where name.hasPrefix(prefix) {
            if let i = Int(name.dropFirst(prefix.count).prefix { $0 != "." }) { indices.insert(i) }
        }
        return (shape[0], indices.count)
    }
}
