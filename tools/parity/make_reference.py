#!/usr/bin/env python3
"""Reference fixtures for GeoSAM2 <-> official SAM2 (sam2==1.1.0) numerical parity.

Builds SAM2 models with the official code, replaces every state_dict tensor with
seeded random values (no real weights are needed, and non-trivial values expose
bugs that default init's zeros/ones would hide), saves the checkpoint in Meta's
format ({"model": state_dict}), renders synthetic RGB images, and records the
outputs of SAM2ImagePredictor (features, low-res logits, masks, IoU scores) for a
fixed set of prompt cases. CPU, fp32, no autocast.

    python3 tools/parity/make_reference.py --out DIR [--models tiny,small,...] [--seed N]
    python3 tools/parity/make_reference.py --out DIR --fixture [--seed N]

Layout written under DIR (see tools/parity/README.md):
    manifest.json
    images/<image>.png
    <model>/model.pt, <model>/config.json
    <model>/<image>/{image_embed,high_res_feat_s0,high_res_feat_s1,mask_input}.npy
    <model>/<image>/<case>/{case.json,low_res_logits.npy,masks.npy,scores.json}
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import platform
import sys
import time
import zlib

PINNED_SAM2_VERSION = "1.1.0"


def check_sam2_version():
    try:
        import sam2  # noqa: F401
    except ImportError as e:
        sys.exit(
            f"error: cannot import sam2 ({e}). Install the pinned official implementation:\n"
            f"  SAM2_BUILD_CUDA=0 pip install torch sam2=={PINNED_SAM2_VERSION} pillow"
        )
    version = getattr(sam2, "__version__", None)
    if version is None:
        try:
            version = importlib.metadata.version("sam2")
        except importlib.metadata.PackageNotFoundError:
            version = None
    if version != PINNED_SAM2_VERSION:
        sys.exit(
            f"error: sam2 version is {version!r}, but the parity references are pinned to "
            f"sam2=={PINNED_SAM2_VERSION}. Install it with:\n"
            f"  SAM2_BUILD_CUDA=0 pip install sam2=={PINNED_SAM2_VERSION}"
        )
    return version


SAM2_VERSION = check_sam2_version()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from hydra import compose  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from sam2.build_sam import build_sam2  # noqa: E402
from sam2.modeling.sam2_utils import LayerNorm2d  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

PRESETS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "tiny_2.0": "configs/sam2/sam2_hiera_t.yaml",
}

# Same overrides as sam2/build_sam.py::build_sam2(apply_postprocessing=True).
POSTPROCESSING_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
]

# The custom micro model for the committed Swift unit-test fixture: the sam2.1 tiny
# config, shrunk. Image path: Hiera embed 4 (dims 4/8/16/32, heads 1/2/4/8), stages [1,2,3,2] (q-pool blocks 1,3,6;
# block 4 global; block 5 windowed 14 on 64x64 -> pads to 70; block 7 windowed 7 on
# 32x32 -> pads to 35), neck/decoder width 16. The video-only modules shrink with it
# (mem_dim 8) so the checkpoint stays small yet loads strictly into a model built
# from the same config (saved next to it as model.yaml).
FIXTURE_MODEL_NAME = "micro"
FIXTURE_BASE_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"
FIXTURE_OVERRIDES = [
    "model.image_encoder.trunk.embed_dim=4",
    "model.image_encoder.trunk.num_heads=1",
    "model.image_encoder.trunk.stages=[1,2,3,2]",
    "model.image_encoder.trunk.global_att_blocks=[4]",
    "++model.image_encoder.trunk.window_spec=[8,4,14,7]",
    "model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[7,7]",
    "model.image_encoder.neck.d_model=16",
    "model.image_encoder.neck.backbone_channel_list=[32,16,8,4]",
    "model.image_encoder.neck.position_encoding.num_pos_feats=16",
    "model.memory_attention.d_model=16",
    "model.memory_attention.layer.d_model=16",
    "model.memory_attention.layer.dim_feedforward=32",
    "model.memory_attention.layer.self_attention.embedding_dim=16",
    "model.memory_attention.layer.cross_attention.embedding_dim=16",
    "model.memory_attention.layer.cross_attention.kv_in_dim=8",
    "model.memory_attention.num_layers=2",
    "model.memory_encoder.out_dim=8",
    "++model.memory_encoder.in_dim=16",
    "model.memory_encoder.position_encoding.num_pos_feats=8",
    "++model.memory_encoder.mask_downsampler.embed_dim=16",
    "model.memory_encoder.mask_downsampler.kernel_size=1",
    "model.memory_encoder.mask_downsampler.stride=4",
    "model.memory_encoder.mask_downsampler.padding=0",
    "model.memory_encoder.fuser.layer.dim=16",
]

# name -> (width, height)
# name -> (width, height, layout variant); the variants differ so that the two images
# are not near-identical after the (aspect-squashing) resize to 1024x1024
PRESET_IMAGES = {"img1280x960": (1280, 960, 0), "img700x500": (700, 500, 1)}
# 320x240 does not fit the 4 MB fixture budget (see README)
FIXTURE_IMAGES = {"img160x120": (160, 120, 0)}

ALL_CASES = ["a_point_multi", "b_point_single", "c_points_fg_bg", "d_box",
             "e_box_point_multi", "f_point_mask_input"]
# b_point_single is left out of the fixture for size: d_box and f_point_mask_input
# already exercise the single-mask (stability) path.
FIXTURE_CASES = ["a_point_multi", "d_box", "f_point_mask_input"]
# (the mask decoder's hard-coded widths -- transformer MLP 2048, IoU head 256 -- and the
# 64x64/128x128/256x256 feature maps dominate the fixture size; see README)


# --------------------------------------------------------------------------------------
# Random weights


def _tensor_generator(seed, model_name, key):
    h = zlib.crc32(f"{model_name}/{key}".encode())
    return torch.Generator().manual_seed((seed * 4_294_967_311 + h) % (2**63))


def _randn(shape, g):
    return torch.randn(shape, generator=g, dtype=torch.float32)


def randomize_state_dict(model, seed, model_name):
    """Deterministically replace every floating tensor of model.state_dict().

    Each tensor has its own generator seeded from (seed, model name, key), so values
    do not depend on key order and differ between models (tiny vs tiny_2.0 too).
    Returns {rule: count}.
    """
    modules = dict(model.named_modules())
    sd = model.state_dict()
    new_sd = {}
    counts = {}
    for name, t in sd.items():
        if not torch.is_floating_point(t):
            new_sd[name] = t.clone()
            counts["kept(non-float)"] = counts.get("kept(non-float)", 0) + 1
            continue
        mod_name, _, leaf = name.rpartition(".")
        mod = modules.get(mod_name)
        g = _tensor_generator(seed, model_name, name)
        shape = t.shape
        if isinstance(mod, (torch.nn.LayerNorm, LayerNorm2d)):
            if leaf == "weight":
                rule, v = "norm.weight 1+0.1N", 1.0 + 0.1 * _randn(shape, g)
            else:
                rule, v = "norm.bias 0.1N", 0.1 * _randn(shape, g)
        elif leaf == "bias":
            rule, v = "bias 0.1N", 0.1 * _randn(shape, g)
        elif isinstance(mod, torch.nn.Embedding):
            rule, v = "embedding N(0,1)", _randn(shape, g)
        elif isinstance(mod, torch.nn.ConvTranspose2d) and leaf == "weight":
            # [in, out, kh, kw]; with kernel == stride each output pixel sees `in` terms
            k = shape[2] * shape[3]
            s = mod.stride[0] * mod.stride[1]
            fan_in = shape[0] * max(1, k // s)
            rule, v = "convT.weight N(0,1/fan_in)", _randn(shape, g) / fan_in**0.5
        elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)) and leaf == "weight":
            fan_in = int(np.prod(shape[1:]))
            rule, v = "weight N(0,1/fan_in)", _randn(shape, g) / fan_in**0.5
        elif leaf in ("pos_embed", "pos_embed_window"):
            # random plus a smooth spatial ramp so position actually matters
            c, h, w = shape[1], shape[2], shape[3]
            yy = torch.linspace(-1, 1, h)[:, None]
            xx = torch.linspace(-1, 1, w)[None, :]
            fx = _randn((1, c, 1, 1), g)
            fy = _randn((1, c, 1, 1), g)
            ramp = torch.sin(2.0 * fx * xx + 2.0 * fy * yy + _randn((1, c, 1, 1), g))
            rule, v = "pos_embed 0.5N+0.3ramp", 0.5 * _randn(shape, g) + 0.3 * ramp
        elif leaf == "positional_encoding_gaussian_matrix":
            rule, v = "gaussian matrix N(0,1)", _randn(shape, g)  # PositionEmbeddingRandom, scale 1
        elif leaf in ("no_mem_embed", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial",
                      "maskmem_tpos_enc"):
            rule, v = "embedding param 0.5N", 0.5 * _randn(shape, g)
        elif leaf == "gamma":  # CXBlock layer scale (video path)
            rule, v = "layer scale 0.1N", 0.1 * _randn(shape, g)
        else:
            raise RuntimeError(f"no randomisation rule for {name} {tuple(shape)} ({type(mod)})")
        new_sd[name] = v.to(t.dtype).reshape(shape).contiguous()
        counts[rule] = counts.get(rule, 0) + 1
    model.load_state_dict(new_sd, strict=True)
    return counts


# --------------------------------------------------------------------------------------
# Models


def build_preset(name):
    return build_sam2(PRESETS[name], None, device="cpu", mode="eval", apply_postprocessing=True)


def fixture_cfg():
    cfg = compose(config_name=FIXTURE_BASE_CONFIG,
                  overrides=FIXTURE_OVERRIDES + POSTPROCESSING_OVERRIDES)
    OmegaConf.resolve(cfg)
    return cfg


def build_fixture():
    cfg = fixture_cfg()
    model = instantiate(cfg.model, _recursive_=True).to("cpu")
    model.eval()
    return model, cfg


def model_config_json(model):
    trunk = model.image_encoder.trunk
    stage_ends = list(trunk.stage_ends)
    stages = [stage_ends[0] + 1] + [b - a for a, b in zip(stage_ends, stage_ends[1:])]
    window_spec = [int(x) for x in trunk.window_spec]
    global_blocks = [int(x) for x in trunk.global_att_blocks]
    # cross-check the per-block window sizes against (stages, windowSpec, global blocks);
    # the first (q-pool) block of a stage still uses the previous stage's window size
    cur = 0
    for i, blk in enumerate(trunk.blocks):
        expected = 0 if i in global_blocks else window_spec[cur]
        assert blk.window_size == expected, (i, blk.window_size, expected)
        if i - 1 in stage_ends:
            cur += 1
    decoder = model.sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability
    assert decoder.dynamic_multimask_stability_delta == 0.05
    assert decoder.dynamic_multimask_stability_thresh == 0.98
    return {
        "embedDim": int(trunk.patch_embed.proj.out_channels),
        "numHeads": int(trunk.blocks[0].attn.num_heads),
        "stages": [int(s) for s in stages],
        "globalAttentionBlocks": global_blocks,
        "windowSpec": window_spec,
        "windowPositionEmbeddingBackgroundSize": [int(x) for x in trunk.window_pos_embed_bkg_spatial_size],
        "modelDimension": int(model.image_encoder.neck.d_model),
        "version": "2.1" if model.no_obj_embed_spatial is not None else "2.0",
    }


# --------------------------------------------------------------------------------------
# Images and prompts


def _q(x):
    """Round to a multiple of 0.25 (exact in float32 and in decimal text)."""
    return float(round(x * 4) / 4)


def image_layout(w, h, variant):
    m = min(w, h)
    if variant == 0:
        return {
            "disc1": (0.30 * w, 0.35 * h, 0.15 * m),
            "disc2": (0.70 * w, 0.62 * h, 0.20 * m),
            "stripes": (0.55 * w, 0.08 * h, 0.92 * w, 0.32 * h),
            "stripes_vertical": True,
            "rect": (0.10 * w, 0.66 * h, 0.36 * w, 0.90 * h),
        }
    return {
        "disc1": (0.68 * w, 0.60 * h, 0.18 * m),
        "disc2": (0.26 * w, 0.30 * h, 0.14 * m),
        "stripes": (0.08 * w, 0.62 * h, 0.45 * w, 0.90 * h),
        "stripes_vertical": False,
        "rect": (0.58 * w, 0.08 * h, 0.90 * w, 0.36 * h),
    }


def synth_image(w, h, variant, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    u, v = xx / w, yy / h
    img = np.stack([
        70 + 60 * u + 20 * np.sin(6.0 * v),
        100 + 50 * v + 15 * np.cos(5.0 * u),
        130 + 30 * np.sin(3.0 * u + 2.0 * v + 1.7 * variant),
    ], axis=-1)
    lay = image_layout(w, h, variant)

    def paint(alpha, color):
        nonlocal img
        a = np.clip(alpha, 0.0, 1.0)[..., None]
        col = np.stack(np.broadcast_arrays(*[np.asarray(c, dtype=np.float64) for c in color]), axis=-1)
        img = img * (1 - a) + a * col

    cx, cy, r = lay["disc1"]
    paint(r - np.hypot(xx - cx, yy - cy) + 0.5, (215, 60, 50))
    cx, cy, r = lay["disc2"]
    d = np.hypot(xx - cx, yy - cy)
    paint(r - d + 0.5, (40 + 60 * (d / r), 165, 80))  # radial shading
    x0, y0, x1, y1 = lay["stripes"]
    inside = ((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float64)
    if lay["stripes_vertical"]:
        stripe = 0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * np.pi * (xx - x0) / (0.035 * w)))
    else:
        stripe = 0.5 + 0.5 * np.tanh(4.0 * np.sin(2 * np.pi * (yy - y0) / (0.05 * h)))
    paint(inside * stripe, (240, 215, 60))
    paint(inside * (1 - stripe), (35, 35, 120))
    x0, y0, x1, y1 = lay["rect"]
    paint(((xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)).astype(np.float64), (205, 205, 215))
    img = img + rng.normal(0.0, 3.0, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), "RGB")


def make_cases(w, h, variant, names):
    lay = image_layout(w, h, variant)
    m = min(w, h)
    d1x, d1y, _ = lay["disc1"]
    d2x, d2y, _ = lay["disc2"]
    # non-integer coordinates on purpose
    p_fg = [_q(d1x + 0.5), _q(d1y + 0.25), 1]
    sx0, sy0, sx1, sy1 = lay["stripes"]
    rx0, ry0, rx1, ry1 = lay["rect"]
    all_cases = {
        "a_point_multi": dict(points=[p_fg], box=None, mask=False, multimask=True),
        "b_point_single": dict(points=[p_fg], box=None, mask=False, multimask=False),
        "c_points_fg_bg": dict(points=[
            [_q(d2x), _q(d2y), 1],
            [_q(d2x + 0.08 * m), _q(d2y - 0.06 * m + 0.75), 1],
            [_q(d1x), _q(d1y), 0],
            [_q(0.45 * w), _q(0.50 * h), 0],
        ], box=None, mask=False, multimask=False),
        "d_box": dict(points=[], box=[_q(rx0 - 0.02 * m + 0.5), _q(ry0 - 0.02 * m + 0.25),
                                      _q(rx1 + 0.02 * m - 0.75), _q(ry1 + 0.02 * m + 0.5)],
                      mask=False, multimask=False),
        "e_box_point_multi": dict(points=[[_q(0.5 * (sx0 + sx1) + 0.25), _q(0.5 * (sy0 + sy1)), 1]],
                                  box=[_q(sx0 - 4), _q(sy0 - 3.5), _q(sx1 + 4.25), _q(sy1 + 3)],
                                  mask=False, multimask=True),
        "f_point_mask_input": dict(points=[[_q(d1x - 0.05 * m + 0.5), _q(d1y + 0.03 * m), 1]],
                                   box=None, mask=True, multimask=False),
    }
    return {k: all_cases[k] for k in names}


# --------------------------------------------------------------------------------------
# Running the predictor


class StabilityProbe:
    """Records the single-mask stability decision of the mask decoder."""

    def __init__(self, decoder):
        self.last = None
        orig = decoder._dynamic_multimask_via_stability

        def wrapped(all_mask_logits, all_iou_scores):
            s = decoder._get_stability_scores(all_mask_logits[:, 0:1])
            self.last = [float(x) for x in s.flatten()]
            return orig(all_mask_logits, all_iou_scores)

        decoder._dynamic_multimask_via_stability = wrapped


def stats(a):
    a = np.asarray(a, dtype=np.float64)
    return f"mean {a.mean():+.3f} std {a.std():.3f} min {a.min():+.2f} max {a.max():+.2f}"


def save_npy(path, a, dtype):
    np.save(path, np.ascontiguousarray(np.asarray(a).astype(dtype)))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def run_model(out, name, model, image_entries, case_names, custom, hydra_config, cfg, timings):
    mdir = os.path.join(out, name)
    os.makedirs(mdir, exist_ok=True)
    t0 = time.perf_counter()
    torch.save({"model": model.state_dict()}, os.path.join(mdir, "model.pt"))
    # round-trip check: Meta's loader path (weights_only, strict)
    sd = torch.load(os.path.join(mdir, "model.pt"), map_location="cpu", weights_only=True)["model"]
    missing, unexpected = model.load_state_dict(sd, strict=True)
    assert not missing and not unexpected
    config = model_config_json(model)
    write_json(os.path.join(mdir, "config.json"), config)
    if cfg is not None:
        with open(os.path.join(mdir, "model.yaml"), "w") as f:
            f.write("# Resolved Hydra config of this custom model (sam2 1.1.0).\n")
            f.write("# Rebuild: hydra.utils.instantiate(OmegaConf.load(path).model), then load model.pt strictly.\n")
            f.write(OmegaConf.to_yaml(cfg))
    timings[f"{name}: save"] = time.perf_counter() - t0
    print(f"  config.json: {json.dumps(config)}")

    predictor = SAM2ImagePredictor(model)
    probe = StabilityProbe(model.sam_mask_decoder)
    case_entries = []
    for img in image_entries:
        idir = os.path.join(mdir, img["name"])
        os.makedirs(idir, exist_ok=True)
        pixels = np.array(Image.open(os.path.join(out, img["path"])).convert("RGB"))
        t0 = time.perf_counter()
        predictor.set_image(pixels)
        dt = time.perf_counter() - t0
        timings[f"{name}/{img['name']}: set_image"] = dt
        feats = {
            "image_embed": predictor._features["image_embed"][0],
            "high_res_feat_s0": predictor._features["high_res_feats"][0][0],
            "high_res_feat_s1": predictor._features["high_res_feats"][1][0],
        }
        print(f"  [{img['name']} {img['width']}x{img['height']}] set_image {dt:.2f}s")
        for k, v in feats.items():
            v = v.float().numpy()
            save_npy(os.path.join(idir, f"{k}.npy"), v, np.float32)
            print(f"    {k:18s} {list(v.shape)} {stats(v)}")

        cases = make_cases(img["width"], img["height"], img["layout"], case_names)
        best_logits_a = None
        t0 = time.perf_counter()
        for cname, c in cases.items():
            cdir = os.path.join(idir, cname)
            os.makedirs(cdir, exist_ok=True)
            pts = np.array([p[:2] for p in c["points"]], dtype=np.float32) if c["points"] else None
            lbl = np.array([p[2] for p in c["points"]], dtype=np.int32) if c["points"] else None
            box = np.array(c["box"], dtype=np.float32) if c["box"] is not None else None
            mask_input = None
            if c["mask"]:
                if best_logits_a is None:
                    raise RuntimeError("mask_input case needs case a_point_multi first")
                mask_input = best_logits_a
                save_npy(os.path.join(idir, "mask_input.npy"), mask_input, np.float32)
            probe.last = None
            masks, scores, logits = predictor.predict(
                point_coords=pts, point_labels=lbl, box=box, mask_input=mask_input,
                multimask_output=c["multimask"], return_logits=False, normalize_coords=True)
            if cname == "a_point_multi":
                best_logits_a = logits[np.argmax(scores)][None].astype(np.float32)
            assert masks.shape[1:] == (img["height"], img["width"]), masks.shape
            assert logits.shape[1:] == (256, 256), logits.shape
            save_npy(os.path.join(cdir, "low_res_logits.npy"), logits, np.float32)
            save_npy(os.path.join(cdir, "masks.npy"), masks > 0.5, np.uint8)
            write_json(os.path.join(cdir, "scores.json"), {"iou": [float(s) for s in scores]})
            case_json = {
                "image": img["path"],
                "points": [[float(p[0]), float(p[1]), int(p[2])] for p in c["points"]],
                "box": [float(x) for x in c["box"]] if c["box"] is not None else None,
                "maskInput": "mask_input.npy" if c["mask"] else None,
                "multimask": bool(c["multimask"]),
            }
            info = {}
            if probe.last is not None:
                info = {"stabilityScore": probe.last[0],
                        "singleMaskFallbackToMultimask": probe.last[0] < 0.98}
                case_json["info"] = info
            write_json(os.path.join(cdir, "case.json"), case_json)
            fg = [float((m > 0.5).mean()) for m in masks]
            extra = (f" stability {info['stabilityScore']:.4f}"
                     f"{' -> FALLBACK' if info['singleMaskFallbackToMultimask'] else ' -> mask0'}"
                     if info else "")
            print(f"    {cname:20s} C={len(scores)} iou {[round(float(x), 3) for x in scores]} "
                  f"fg% {[round(100 * x, 1) for x in fg]} logits {stats(logits)}{extra}")
            case_entries.append({"model": name, "image": img["name"], "case": cname,
                                 "dir": f"{name}/{img['name']}/{cname}",
                                 "features": f"{name}/{img['name']}"})
        timings[f"{name}/{img['name']}: {len(cases)} predicts"] = time.perf_counter() - t0
    entry = {"name": name, "checkpoint": f"{name}/model.pt", "config": f"{name}/config.json",
             "hydraConfig": hydra_config, "custom": custom,
             "parameters": int(sum(p.numel() for p in model.state_dict().values()))}
    if custom:
        entry["hydraOverrides"] = FIXTURE_OVERRIDES + POSTPROCESSING_OVERRIDES
        entry["resolvedConfig"] = f"{name}/model.yaml"
    return entry, case_entries


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--models", default="tiny,small,base_plus,large,tiny_2.0",
                   help="comma-separated presets: " + ",".join(PRESETS))
    g.add_argument("--fixture", action="store_true",
                   help="one micro custom model, one 160x120 image, 3 cases (Swift unit-test fixture)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="skip models whose references this very script version already wrote to --out")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(args.seed)
    out = args.out
    os.makedirs(os.path.join(out, "images"), exist_ok=True)

    if args.fixture:
        model_names = [FIXTURE_MODEL_NAME]
        images, case_names = FIXTURE_IMAGES, FIXTURE_CASES
    else:
        model_names = [m.strip() for m in args.models.split(",") if m.strip()]
        bad = [m for m in model_names if m not in PRESETS]
        if bad:
            sys.exit(f"error: unknown model(s) {bad}; choose from {list(PRESETS)}")
        images, case_names = PRESET_IMAGES, ALL_CASES

    versions = {"sam2": SAM2_VERSION, "torch": torch.__version__, "numpy": np.__version__,
                "pillow": importlib.metadata.version("pillow"), "python": platform.python_version()}

    image_entries = []
    for i, (iname, (w, h, variant)) in enumerate(images.items()):
        path = f"images/{iname}.png"
        picture = synth_image(w, h, variant, seed=args.seed * 1000 + i)
        picture.save(os.path.join(out, path))
        # The decoded pixels beside the PNG, so that tests without an image codec get the same input.
        save_npy(os.path.join(out, f"images/{iname}.rgb.npy"),
                 np.array(Image.open(os.path.join(out, path)).convert("RGB")), np.uint8)
        image_entries.append({"name": iname, "path": path, "width": w, "height": h, "layout": variant})

    # merge with an existing manifest (e.g. models generated in separate runs)
    manifest_path = os.path.join(out, "manifest.json")
    manifest = None
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            old = json.load(f)
        if old.get("seed") == args.seed and old.get("versions") == versions and old.get("images") == image_entries:
            manifest = old
        else:
            print("note: existing manifest.json has another seed/versions/images; replacing it")
    with open(os.path.abspath(__file__), "rb") as f:
        generator_sha = hashlib.sha256(f.read()).hexdigest()
    if manifest is not None and manifest.get("generatorSHA256") != generator_sha:
        print("note: existing manifest.json was written by another version of this script; replacing it")
        manifest = None
    if manifest is None:
        manifest = {"generator": "tools/parity/make_reference.py", "generatorSHA256": generator_sha, "versions": versions,
                    "seed": args.seed, "device": "cpu", "dtype": "float32",
                    "images": image_entries, "models": [], "cases": []}

    timings = {}
    for name in model_names:
        if args.reuse and any(m["name"] == name for m in manifest["models"]) \
                and all(os.path.exists(os.path.join(out, c["dir"], "low_res_logits.npy"))
                        for c in manifest["cases"] if c["model"] == name):
            print(f"== {name}: reusing the references already in {out}")
            continue
        print(f"== {name}")
        t0 = time.perf_counter()
        if name == FIXTURE_MODEL_NAME and args.fixture:
            model, cfg = build_fixture()
            hydra_config, custom = FIXTURE_BASE_CONFIG, True
        else:
            model, cfg = build_preset(name), None
            hydra_config, custom = PRESETS[name], False
        timings[f"{name}: build"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = randomize_state_dict(model, args.seed, name)
        timings[f"{name}: randomize"] = time.perf_counter() - t0
        nparams = sum(p.numel() for p in model.state_dict().values())
        print(f"  {len(model.state_dict())} tensors, {nparams:,} values; randomised: {counts}")
        entry, cases = run_model(out, name, model, image_entries, case_names, custom,
                                 hydra_config, cfg, timings)
        manifest["models"] = [m for m in manifest["models"] if m["name"] != name] + [entry]
        manifest["cases"] = [c for c in manifest["cases"] if c["model"] != name] + cases
        write_json(manifest_path, manifest)  # after each model, so partial runs are usable
        del model

    print("timings (s):")
    for k, v in timings.items():
        print(f"  {k:40s} {v:8.2f}")
    print(f"wrote {manifest_path}: {len(manifest['models'])} model(s), {len(manifest['cases'])} case(s)")


if __name__ == "__main__":
    main()
