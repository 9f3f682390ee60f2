import Kernels

/// Presents a checkpoint saved with Hugging Face transformers' `Sam2Model` key names
/// (`vision_encoder.backbone.…`, `mask_decoder.…o_proj`, one `point_embed` matrix) under Meta's
/// official names, which the model code reads. The mapping follows transformers'
/// `convert_sam2_to_hf.py`; every other key passes through unchanged.
///
/// Transformers checkpoints hold no video keys, so the SAM 2.0/2.1 marker is missing: they are
/// presented as 2.1 (the only release transformers ships).
struct HuggingFaceNaming: WeightProvider {
    let base: any WeightProvider

    /// A key only transformers checkpoints have.
    static let marker = "vision_encoder.backbone.patch_embed.projection.weight"

    static func applies(to weights: any WeightProvider) -> Bool { weights.shape(of: marker) != nil }

    /// Official key → (transformers key, row of a stacked matrix).
    static func huggingFaceName(_ official: String) -> (name: String, row: Int?) {
        var k = official
        func replacePrefix(_ old: String, _ new: String) -> Bool {
            guard k.hasPrefix(old) else { return false }
            k = new + k.dropFirst(old.count)
            return true
        }
        func replace(_ old: String, _ new: String) { k = k.replacingOccurrences(of: old, with: new) }

        if k == "no_mem_embed" { return ("no_memory_embedding", nil) }
        if replacePrefix("image_encoder.trunk.", "vision_encoder.backbone.") {
            replace("patch_embed.proj.", "patch_embed.projection.")
            replace(".norm1.", ".layer_norm1.")
            replace(".norm2.", ".layer_norm2.")
            replace(".mlp.layers.0.", ".mlp.proj_in.")
            replace(".mlp.layers.1.", ".mlp.proj_out.")
            return (k, nil)
        }
        if replacePrefix("image_encoder.neck.", "vision_encoder.neck.") {
            replace(".conv.", ".")
            return (k, nil)
        }
        if k == "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" {
            return ("prompt_encoder.shared_embedding.positional_embedding", nil)
        }
        if k.hasPrefix("sam_prompt_encoder.point_embeddings."), let row = Int(k.split(separator: ".")[2]) {
            return ("prompt_encoder.point_embed.weight", row)
        }
        if replacePrefix("sam_prompt_encoder.", "prompt_encoder.") {
            for (old, new) in [("0", "conv1"), ("1", "layer_norm1"), ("3", "conv2"), ("4", "layer_norm2"), ("6", "conv3")] {
                replace("mask_downscaling.\(old).", "mask_embed.\(new).")
            }
            return (k, nil)
        }
        if replacePrefix("sam_mask_decoder.", "mask_decoder.") {
            replace(".out_proj.", ".o_proj.")
            replace("transformer.norm_final_attn.", "transformer.layer_norm_final_attn.")
            for n in 1...4 { replace(".norm\(n).", ".layer_norm\(n).") }
            replace(".mlp.layers.0.", ".mlp.proj_in.")
            replace(".mlp.layers.1.", ".mlp.proj_out.")
            replace("output_upscaling.0.", "upscale_conv1.")
            replace("output_upscaling.1.", "upscale_layer_norm.")
            replace("output_upscaling.3.", "upscale_conv2.")
            // The three-layer heads: layers.0 → proj_in, layers.1 → layers.0, layers.2 → proj_out.
            if k.contains("output_hypernetworks_mlps.") || k.contains("iou_prediction_head.") || k.contains("pred_obj_score_head.") {
                replace(".layers.0.", ".proj_in.")
                replace(".layers.1.", ".layers.0.")
                replace(".layers.2.", ".proj_out.")
            }
            return (k, nil)
        }
        return (k, nil)
    }

    /// Official names of the image-path tensors the file holds, for preset recognition.
    var tensorNames: [String] {
        var names: [String] = []
        for name in base.tensorNames where name.hasPrefix("vision_encoder.backbone.blocks.") {
            names.append("image_encoder.trunk." + name.dropFirst("vision_encoder.backbone.".count))
        }
        names.append("image_encoder.trunk.patch_embed.proj.weight")
        names.append(CheckpointInspector.version21Marker)
        return names
    }

    /// The transformers key, falling back to the tied copy of the positional matrix (a saved
    /// file may hold only one of the two).
    func resolve(_ official: String) -> (name: String, row: Int?) {
        let (hf, row) = Self.huggingFaceName(official)
        if base.shape(of: hf) == nil, hf == "prompt_encoder.shared_embedding.positional_embedding" {
            return ("shared_image_embedding.positional_embedding", row)
        }
        return (hf, row)
    }

    func shape(of name: String) -> [Int]? {
        if name == CheckpointInspector.version21Marker { return [1, 64] }
        let (hf, row) = resolve(name)
        guard let shape = base.shape(of: hf) else { return nil }
        guard row != nil else { return shape }
        return shape.count == 2 ? [1, shape[1]] : nil
    }

    func tensor(named name: String) throws -> Tensor {
        let (hf, row) = resolve(name)
        let t = try base.tensor(named: hf)
        guard let row else { return t }
        guard t.rank == 2, row < t.shape[0] else { throw SAM2Error("\(hf) has no row \(row)") }
        let width = t.shape[1]
        return Tensor(shape: [1, width], scalars: t.toArray((row * width)..<((row + 1) * width)))
    }
}
