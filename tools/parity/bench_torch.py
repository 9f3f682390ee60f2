"""Times the official SAM2 (PyTorch, CPU, fp32) the way `geosam2 bench` times GeoSAM2:
checkpoint load, `set_image` on a 1024×1024 image, and `predict` per prompt.

    python3 tools/parity/bench_torch.py --checkpoint model.pt --preset tiny [--encode-runs 3] [--decode-runs 50] [--json]
"""
import argparse, json, statistics, sys, time
import numpy as np
import torch

CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml", "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml", "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "tiny_2.0": "configs/sam2/sam2_hiera_t.yaml",
}


def scene(w=1024, h=1024):
    # The same synthetic scene as geosam2's bench (fields, a disc, a little texture).
    y, x = np.mgrid[0:h, 0:w]
    field = ((x // 128) + (y // 96)) % 3
    colors = np.array([(90, 140, 60), (160, 150, 90), (60, 90, 140)])
    img = colors[field]
    disc = (x - 500) ** 2 + (y - 420) ** 2 < 90 ** 2
    img[disc] = (200, 60, 50)
    n = (x * 73 + y * 151) % 17
    return np.clip(img + n[..., None], 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--preset", required=True, choices=list(CONFIGS))
    ap.add_argument("--encode-runs", type=int, default=3)
    ap.add_argument("--decode-runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from sam2.build_sam import build_sam2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    t0 = time.perf_counter()
    model = build_sam2(CONFIGS[args.preset], args.checkpoint, device="cpu")
    load = time.perf_counter() - t0
    predictor = SAM2ImagePredictor(model)
    image = scene()
    encodes = []
    for _ in range(max(args.encode_runs, 1)):
        t0 = time.perf_counter()
        predictor.set_image(image)
        encodes.append(time.perf_counter() - t0)
    prompts = [
        dict(point_coords=np.array([[500, 420]]), point_labels=np.array([1])),
        dict(point_coords=np.array([[300, 300], [340, 310]]), point_labels=np.array([1, 0])),
        dict(box=np.array([200, 150, 600, 500])),
    ]
    predictor.predict(**prompts[0], multimask_output=False)  # warm-up, as geosam2 bench does
    decodes = []
    for i in range(max(args.decode_runs, 1)):
        t0 = time.perf_counter()
        predictor.predict(**prompts[i % len(prompts)], multimask_output=False)
        decodes.append(time.perf_counter() - t0)
    decodes.sort()
    result = {
        "load_s": load, "encode_median_s": statistics.median(encodes),
        "decode_p50_ms": 1000 * decodes[round(0.5 * (len(decodes) - 1))],
        "decode_p95_ms": 1000 * decodes[round(0.95 * (len(decodes) - 1))],
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for k, v in sorted(result.items()):
            print(f"{k}\t{v:.4f}")


if __name__ == "__main__":
    sys.exit(main())
