#!/usr/bin/env python3
"""GeoSAM2's encoder and decoder against the runtimes a user could pick instead, on one graph.

    .venv-peers/bin/python tools/bench/peers.py --checkpoint tiny/model.pt --binary geosam2
                                                [--preset tiny] [--rounds 3] [--work DIR] [--json]

The official code (sam2 1.1.0) builds the model from the random-weight checkpoint; two wrappers
give exactly what `SAM2ImagePredictor` computes: `set_image`'s three maps from a normalised 1024²
image (conv_s0/conv_s1 applied, no_mem_embed added) and `_predict` for one point (the prompt
encoder pads it, multimask_output=False with the stability fallback, logits clamped to ±32 and
resized to 1024² as the predictor does). Those wrappers run as PyTorch, are exported to ONNX
(opset 17, constant folding) for ONNX Runtime (all graph optimisations) and converted to OpenVINO
IR (fp32 weights), compiled once with the CPU plugin's defaults (which pick bf16 on a CPU with
AVX512_BF16 or AMX) and once with INFERENCE_PRECISION_HINT=f32. GeoSAM2 runs as its CLI
(`geosam2 bench --json`, default precision and `--precision fp32`).

Hiera's position embedding (a bicubic resize of one table plus the tiled window table) traces into
ONNX `If` nodes that make every shape dynamic (OpenVINO then compiles for minutes); it depends only
on the weights and the fixed input size, so the export takes it as a constant computed by the same
torch ops: the values are those PyTorch uses.

Before any timing, each runtime's outputs on the same image and point are held against PyTorch
fp32: the fp32 runtimes must agree (features within 1e-3 of the map's std, ≤ 0.1 % of mask pixels
differing) or the script stops; the fidelity columns report every runtime's image_embed rms error
(× the map's std), differing mask pixels of the 1024² mask, and the IoU prediction's error.

Timing: every runtime on 2 threads (this machine's cores; GeoSAM2 takes the process's CPUs),
rounds alternate the runtimes in turn and the table reports medians over rounds of per-round
medians. The CPU (model name, family/model, flags used), date and versions head the output.
"""
import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

# The tracer's notes on Python control flow in the official code: the shapes are fixed here.
warnings.filterwarnings("ignore")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "parity"))
from ab import cpu_description, default_precision  # noqa: E402
from bench_torch import CONFIGS, scene  # noqa: E402

SIDE = 1024
POINT = (500.0, 420.0)  # on the scene's disc, as `geosam2 bench` prompts
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def normalised(image):
    """The predictor's input for a 1024² uint8 image (its resize is the identity at 1024²)."""
    x = (image.astype(np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def build_wrappers(config, checkpoint):
    import torch
    import torch.nn.functional as F
    from sam2.build_sam import build_sam2

    model = build_sam2(config, checkpoint, device="cpu").eval()
    trunk = model.image_encoder.trunk
    tokens = SIDE // 4  # Hiera's patch embedding is stride 4
    with torch.no_grad():
        pos_embed = trunk._get_pos_embed((tokens, tokens)).detach().clone()
    trunk._get_pos_embed = lambda hw: pos_embed
    sizes = [(256, 256), (128, 128), (64, 64)]

    class Encoder(torch.nn.Module):
        """`SAM2ImagePredictor.set_image` after the transforms."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image):
            backbone = self.model.forward_image(image)
            _, feats, _, _ = self.model._prepare_backbone_features(backbone)
            if self.model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + self.model.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats[::-1], sizes[::-1])][::-1]
            return maps[2], maps[0], maps[1]  # image_embed, high_res_feat_s0, high_res_feat_s1

    class Decoder(torch.nn.Module):
        """`SAM2ImagePredictor._predict` for point prompts, multimask_output=False."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, image_embed, s0, s1, coords, labels):
            sparse, dense = self.model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=image_embed, image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False,
                repeat_image=False, high_res_features=[s0, s1])
            low_res = torch.clamp(low_res, -32.0, 32.0)
            masks = F.interpolate(low_res, (SIDE, SIDE), mode="bilinear", align_corners=False)
            return masks, iou

    return Encoder().eval(), Decoder().eval()


def export(encoder, decoder, work, key):
    import torch

    paths = {"encoder": os.path.join(work, f"encoder-{key}.onnx"), "decoder": os.path.join(work, f"decoder-{key}.onnx")}
    x = torch.zeros(1, 3, SIDE, SIDE)
    with torch.no_grad():
        feats = encoder(x)
        coords = torch.tensor([[POINT]], dtype=torch.float32)
        labels = torch.ones(1, 1, dtype=torch.int32)
        jobs = [("encoder", encoder, (x,), ["image"], ["image_embed", "high_res_feat_s0", "high_res_feat_s1"]),
                ("decoder", decoder, (*feats, coords, labels), ["image_embed", "high_res_feat_s0", "high_res_feat_s1",
                                                                  "point_coords", "point_labels"], ["masks", "iou"])]
        for name, module, inputs, input_names, output_names in jobs:
            if os.path.exists(paths[name]):
                continue
            partial = paths[name] + ".partial"
            torch.onnx.export(module, inputs, partial, dynamo=False, opset_version=17, do_constant_folding=True,
                              input_names=input_names, output_names=output_names)
            os.replace(partial, paths[name])
    return paths


class TorchRuntime:
    def __init__(self, encoder, decoder):
        import torch
        self.torch, self.encoder, self.decoder = torch, encoder, decoder

    def encode(self, x):
        with self.torch.inference_mode():
            return [t.numpy() for t in self.encoder(self.torch.from_numpy(x))]

    def decode(self, feats, coords, labels):
        t = self.torch
        with t.inference_mode():
            masks, iou = self.decoder(*(t.from_numpy(f) for f in feats), t.from_numpy(coords), t.from_numpy(labels))
        return masks.numpy(), iou.numpy()


class OnnxRuntime:
    def __init__(self, paths, threads):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(paths["encoder"], options, providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(paths["decoder"], options, providers=["CPUExecutionProvider"])

    def encode(self, x):
        return self.encoder.run(None, {"image": x})

    def decode(self, feats, coords, labels):
        names = ["image_embed", "high_res_feat_s0", "high_res_feat_s1"]
        return self.decoder.run(None, {**dict(zip(names, feats)), "point_coords": coords, "point_labels": labels})


class OpenVINORuntime:
    def __init__(self, paths, threads, work, key, precision=None):
        import openvino as ov
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        self.models = {}
        for name, onnx_path in paths.items():
            xml = os.path.join(work, f"{name}-{key}.xml")
            if not os.path.exists(xml):
                ov.save_model(ov.convert_model(onnx_path), xml, compress_to_fp16=False)
            self.models[name] = core.compile_model(xml, "CPU", config)
        hints = {n: m.get_property("INFERENCE_PRECISION_HINT") for n, m in self.models.items()}
        self.precision = {n: h.get_type_name() if hasattr(h, "get_type_name") else str(h) for n, h in hints.items()}

    def encode(self, x):
        out = self.models["encoder"]({"image": x})
        return [out[o] for o in self.models["encoder"].outputs]

    def decode(self, feats, coords, labels):
        names = ["image_embed", "high_res_feat_s0", "high_res_feat_s1"]
        out = self.models["decoder"]({**dict(zip(names, feats)), "point_coords": coords, "point_labels": labels})
        return [out[o] for o in self.models["decoder"].outputs]


def median_time(fn, runs):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fidelity(reference, feats, masks, iou):
    """image_embed rms error × std, differing 1024² mask pixels, |IoU prediction error|."""
    ref_feats, ref_masks, ref_iou = reference
    e, r = np.asarray(feats[0], np.float64), np.asarray(ref_feats[0], np.float64)
    worst_feature = max(float(np.abs(np.asarray(f, np.float64) - g).max() / max(float(g.std()), 1e-12))
                        for f, g in zip(feats, ref_feats))
    return {"embed_rms_rel": float(np.sqrt(np.mean((e - r) ** 2)) / max(float(r.std()), 1e-12)),
            "feature_max_rel": worst_feature,
            "mask_pixels_differing": int(np.count_nonzero((np.asarray(masks).reshape(-1) > 0) != (ref_masks.reshape(-1) > 0))),
            "mask_pixels": int(ref_masks.size),
            "iou_error": float(np.abs(np.asarray(iou, np.float64).reshape(-1) - ref_iou.reshape(-1)).max())}


def geosam2_outputs(binary, checkpoint, image_png, precision, out):
    subprocess.run([binary, "predict", "--model", checkpoint, "--image", image_png, "--precision", precision,
                    "--point", f"{POINT[0]:g},{POINT[1]:g},1", "--features", "--out", out],
                   check=True, capture_output=True, text=True)
    feats = [np.load(os.path.join(out, f"{n}.npy")) for n in ("image_embed", "high_res_feat_s0", "high_res_feat_s1")]
    masks = np.load(os.path.join(out, "masks.npy")).astype(np.float32) - 0.5  # 0/1 → sign of a logit
    with open(os.path.join(out, "scores.json")) as f:
        iou = np.array(json.load(f)["iou"], np.float32)
    return feats, masks, iou


def geosam2_bench(binary, checkpoint, precision):
    out = subprocess.run([binary, "bench", "--model", checkpoint, "--precision", precision, "--encode-runs", "3",
                          "--decode-runs", "40", "--json"], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["encode_median_s"], r["decode_p50_ms"] / 1000


def versions():
    import importlib.metadata as m
    names = ["torch", "sam2", "onnxruntime", "openvino"]
    return {n: m.version(n) for n in names}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a random-weight checkpoint (make_reference.py)")
    ap.add_argument("--preset", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--binary", required=True, help="geosam2 executable")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--encode-runs", type=int, default=3, help="encodes per runtime per round")
    ap.add_argument("--decode-runs", type=int, default=20, help="decodes per runtime per round")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", help="cache of the exported graphs (default: a temporary directory)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    work = args.work or tempfile.mkdtemp(prefix="geosam2-peers-")
    os.makedirs(work, exist_ok=True)
    with open(args.checkpoint, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:12] + f"-{args.preset}"
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    log("peers: building the official model and exporting its graphs")
    encoder, decoder = build_wrappers(CONFIGS[args.preset], args.checkpoint)
    paths = export(encoder, decoder, work, key)
    image = scene()
    image_png = os.path.join(work, "scene1024.png")
    from PIL import Image
    Image.fromarray(image).save(image_png)
    x = normalised(image)
    coords = np.array([[POINT]], np.float32)
    labels = np.ones((1, 1), np.int32)

    log("peers: compiling ONNX Runtime and OpenVINO")
    runtimes = {
        "PyTorch (official sam2)": ("fp32", TorchRuntime(encoder, decoder)),
        "ONNX Runtime, all graph optimisations": ("fp32", OnnxRuntime(paths, args.threads)),
        "OpenVINO, defaults": (None, OpenVINORuntime(paths, args.threads, work, key)),
        "OpenVINO, INFERENCE_PRECISION_HINT=f32": ("fp32", OpenVINORuntime(paths, args.threads, work, key, "f32")),
    }
    ov_default = runtimes["OpenVINO, defaults"][1]
    runtimes["OpenVINO, defaults"] = (f"{ov_default.precision['encoder']} (its own choice)", ov_default)

    ref_feats = runtimes["PyTorch (official sam2)"][1].encode(x)
    ref_masks, ref_iou = runtimes["PyTorch (official sam2)"][1].decode(ref_feats, coords, labels)
    reference = (ref_feats, ref_masks, ref_iou)
    rows = {}
    for name, (precision, runtime) in runtimes.items():
        feats = runtime.encode(x)
        masks, iou = runtime.decode(feats, coords, labels)
        rows[name] = {"runtime": name, "precision": precision, "fidelity": fidelity(reference, feats, masks, iou)}
        fid = rows[name]["fidelity"]
        if precision == "fp32" and (fid["feature_max_rel"] > 1e-3 or fid["mask_pixels_differing"] > fid["mask_pixels"] * 1e-3):
            sys.exit(f"peers: {name} does not reproduce PyTorch (features off by {fid['feature_max_rel']:.2e} × std, "
                     f"{fid['mask_pixels_differing']} mask pixels differ): not timing a different computation")
    ours = {"GeoSAM2, default": "auto", "GeoSAM2, --precision fp32": "fp32"}
    for name, precision in ours.items():
        feats, masks, iou = geosam2_outputs(args.binary, args.checkpoint, image_png, precision, os.path.join(work, f"out-{precision}"))
        label = "fp32" if precision == "fp32" else None
        rows[name] = {"runtime": name, "precision": label, "fidelity": fidelity(reference, feats, masks, iou)}
    # `--precision auto`: bf16 where the CPU has AVX512_BF16, int16 on AVX2 without AVX-512.
    rows["GeoSAM2, default"]["precision"] = f"{default_precision()} (its own choice)"

    samples = {name: {"encode": [], "decode": []} for name in rows}
    order = list(rows)
    for round_index in range(args.rounds):
        log(f"peers: round {round_index + 1}/{args.rounds}")
        # Alternate the order so that a slow phase of a shared machine falls on every runtime.
        for name in (order if round_index % 2 == 0 else order[::-1]):
            if name in ours:
                encode_s, decode_s = geosam2_bench(args.binary, args.checkpoint, ours[name])
            else:
                runtime = runtimes[name][1]
                runtime.encode(x)  # warm-up
                encode_s = median_time(lambda: runtime.encode(x), args.encode_runs)
                runtime.decode(ref_feats, coords, labels)
                decode_s = median_time(lambda: runtime.decode(ref_feats, coords, labels), args.decode_runs)
            samples[name]["encode"].append(encode_s)
            samples[name]["decode"].append(decode_s)
    for name, row in rows.items():
        row["encode_s"] = statistics.median(samples[name]["encode"])
        row["decode_ms"] = statistics.median(samples[name]["decode"]) * 1000
        row["encode_samples_s"] = samples[name]["encode"]
    default = rows["GeoSAM2, default"]
    for row in rows.values():
        row["geosam2_default_encode_ratio"] = default["encode_s"] / row["encode_s"]
        row["geosam2_default_decode_ratio"] = default["decode_ms"] / row["decode_ms"]

    header = {"cpu": cpu_description(), "date": str(datetime.date.today()), "preset": args.preset,
              "threads": args.threads, "rounds": args.rounds, "versions": versions()}
    if args.json:
        print(json.dumps({**header, "rows": list(rows.values())}, indent=1))
        return
    print(f"CPU: {header['cpu']}; {header['date']}")
    print(f"SAM2 {args.preset} (random weights), 1024² input, {args.threads} threads each; medians of {args.rounds} "
          f"alternating rounds; " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()))
    print("fidelity against PyTorch fp32 on one image and point: image_embed rms error (× std), differing pixels of the "
          "1024² mask, IoU prediction error; ratio = GeoSAM2 default's time ÷ the runtime's")
    print(f"{'runtime':40} {'precision':22} {'encode s':>9} {'ratio':>6} {'decode ms':>10} {'ratio':>6} "
          f"{'embed rms':>10} {'mask px':>8} {'IoU err':>8}")
    for row in rows.values():
        fid = row["fidelity"]
        print(f"{row['runtime']:40} {row['precision'] or '?':22} {row['encode_s']:9.3f} {row['geosam2_default_encode_ratio']:6.2f} "
              f"{row['decode_ms']:10.1f} {row['geosam2_default_decode_ratio']:6.2f} {fid['embed_rms_rel']:10.2e} "
              f"{fid['mask_pixels_differing']:8d} {fid['iou_error']:8.1e}")
    fp32 = rows["GeoSAM2, --precision fp32"]
    for peer in ("OpenVINO, INFERENCE_PRECISION_HINT=f32", "ONNX Runtime, all graph optimisations"):
        print(f"GeoSAM2 fp32 ÷ {peer}: encode {fp32['encode_s'] / rows[peer]['encode_s']:.2f}, "
              f"decode {fp32['decode_ms'] / rows[peer]['decode_ms']:.2f}")


if __name__ == "__main__":
    main()
