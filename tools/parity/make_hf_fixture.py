"""Writes the micro fixture model under Hugging Face transformers' Sam2Model key names.

The renaming here is checked against transformers itself: the official Hiera-T state dict,
renamed, must load strictly into `transformers.Sam2Model(Sam2Config())`. The Swift loader's own
mapping (Sources/SAM2/Weights/HuggingFaceNaming.swift) is then tested on the file written here.

    python3 tools/parity/make_hf_fixture.py  # needs torch, sam2==1.1.0, transformers, safetensors
"""
import re, sys
import torch

VIDEO = re.compile(r"^(memory_|maskmem|no_mem_pos|no_obj|mask_downsample|obj_ptr)")


def to_hf(official):
    out = {}
    points = {}
    for k, v in official.items():
        if VIDEO.match(k):
            continue
        m = re.match(r"sam_prompt_encoder\.point_embeddings\.(\d)\.weight$", k)
        if m:
            points[int(m.group(1))] = v
            continue
        rules = [
            (r"^no_mem_embed$", "no_memory_embedding"),
            (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
            (r"patch_embed\.proj\.", "patch_embed.projection."),
            (r"^(vision_encoder\.backbone\.blocks\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
            (r"^(vision_encoder\.backbone\.blocks\.\d+\.mlp)\.layers\.0\.", r"\1.proj_in."),
            (r"^(vision_encoder\.backbone\.blocks\.\d+\.mlp)\.layers\.1\.", r"\1.proj_out."),
            (r"^image_encoder\.neck\.convs\.(\d)\.conv\.", r"vision_encoder.neck.convs.\1."),
            (r"^sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$", "prompt_encoder.shared_embedding.positional_embedding"),
            (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
            (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
            (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
            (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
            (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
            (r"^sam_prompt_encoder\.", "prompt_encoder."),
            (r"^sam_mask_decoder\.", "mask_decoder."),
            (r"\.out_proj\.", ".o_proj."),
            (r"transformer\.norm_final_attn\.", "transformer.layer_norm_final_attn."),
            (r"(transformer\.layers\.\d)\.norm(\d)\.", r"\1.layer_norm\2."),
            (r"(transformer\.layers\.\d\.mlp)\.layers\.0\.", r"\1.proj_in."),
            (r"(transformer\.layers\.\d\.mlp)\.layers\.1\.", r"\1.proj_out."),
            (r"output_upscaling\.0\.", "upscale_conv1."),
            (r"output_upscaling\.1\.", "upscale_layer_norm."),
            (r"output_upscaling\.3\.", "upscale_conv2."),
            (r"((?:output_hypernetworks_mlps\.\d|iou_prediction_head|pred_obj_score_head))\.layers\.0\.", r"\1.proj_in."),
            (r"((?:output_hypernetworks_mlps\.\d|iou_prediction_head|pred_obj_score_head))\.layers\.2\.", r"\1.proj_out."),
            (r"((?:output_hypernetworks_mlps\.\d|iou_prediction_head|pred_obj_score_head))\.layers\.1\.", r"\1.layers.0."),
        ]
        name = k
        for pattern, repl in rules:
            name = re.sub(pattern, repl, name)
        out[name] = v
    out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in range(4)], 0)
    return out


def main():
    from sam2.build_sam import build_sam2
    from transformers import Sam2Config, Sam2Model
    from safetensors.torch import save_file
    official = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu").state_dict()
    hf = Sam2Model(Sam2Config())
    expected = hf.state_dict()
    renamed = to_hf(official)
    # transformers ties shared_image_embedding to the prompt encoder's matrix.
    renamed["shared_image_embedding.positional_embedding"] = renamed["prompt_encoder.shared_embedding.positional_embedding"]
    missing, unexpected = set(expected) - set(renamed), set(renamed) - set(expected)
    if missing or unexpected:
        sys.exit(f"mapping disagrees with transformers: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    bad = [k for k in expected if tuple(expected[k].shape) != tuple(renamed[k].shape)]
    if bad:
        sys.exit(f"shapes differ for {bad[:5]}")
    hf.load_state_dict(renamed, strict=True)
    print(f"mapping checked against transformers: {len(expected)} keys")

    micro = torch.load("Tests/SAM2Tests/Fixtures/tiny/micro/model.pt", map_location="cpu", weights_only=True)["model"]
    out = {k: v.contiguous() for k, v in to_hf(micro).items()}
    save_file(out, "Tests/SAM2Tests/Fixtures/tiny/micro/model_hf.safetensors", metadata={"format": "pt"})
    print(f"wrote Tests/SAM2Tests/Fixtures/tiny/micro/model_hf.safetensors ({len(out)} tensors)")


if __name__ == "__main__":
    main()
