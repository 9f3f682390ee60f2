"""`geosam2` automatic masks on one tile against the official SAM2AutomaticMaskGenerator, same run.

Both sides use the official defaults (points_per_side 32 → 1024 points, points_per_batch 64) on the
same 1024² tile and random-weight checkpoint, 2 threads each, alternating rounds, medians. The
official `generate` starts with `set_image` (the encoder); that pass is timed on its own and taken
off, since `geosam2 generate` reads stored features. Also reports the batched decoder's points per
second (ours) against decoding the points one by one.

    python3 tools/bench/generate.py --binary .build/release/geosam2 --model MODEL.pt [--rounds 3] [--json]
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "parity"))
from amg_parity import scene  # noqa: E402


def cpu_name():
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k, v = k.strip(), v.strip()
            if k in ("model name", "cpu family", "model") and k not in info:
                info[k] = v
    except OSError:
        pass
    return f"{info.get('model name', platform.processor())} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch
    from sam2.build_sam import build_sam2
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    torch.set_num_threads(2)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", args.model, device="cpu")
    img = scene(11)
    ours_s, official_s, encoder_s, batched, single = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        png = os.path.join(tmp, "tile.png")
        Image.fromarray(img).save(png)
        generator = SAM2AutomaticMaskGenerator(model, points_per_side=args.points_per_side)
        for r in range(args.rounds):
            out = subprocess.run([args.binary, "bench", "--automatic", "--model", args.model, "--image", png, "--generate-runs", "1",
                                  "--points-per-side", str(args.points_per_side), "--json"], capture_output=True, text=True, check=True)
            o = json.loads(out.stdout)
            ours_s.append(o["generate_median_s"]); batched.append(o["batched_points_per_s"]); single.append(o["single_points_per_s"])
            start = time.perf_counter()
            generator.predictor.set_image(img)
            encoder_s.append(time.perf_counter() - start)
            generator.predictor.reset_predictor()
            start = time.perf_counter()
            masks = generator.generate(img)
            official_s.append(time.perf_counter() - start)
            print(f"round {r + 1}: ours {ours_s[-1]:.2f} s, official {official_s[-1]:.2f} s (encoder {encoder_s[-1]:.2f} s), "
                  f"{len(masks)} official masks", file=sys.stderr)
    official = statistics.median(official_s) - statistics.median(encoder_s)
    ours = statistics.median(ours_s)
    result = {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d"), "points": args.points_per_side ** 2,
              "ours_generate_s": round(ours, 2), "official_generate_without_encoder_s": round(official, 2),
              "ratio": round(ours / official, 3), "batched_points_per_s": round(statistics.median(batched), 1),
              "one_by_one_points_per_s": round(statistics.median(single), 1)}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"CPU: {result['cpu']}, {result['date']}, 2 threads each, medians of {args.rounds} alternating rounds")
        print(f"automatic masks, one 1024² tile, {result['points']} points (official defaults), Hiera-T random weights")
        print(f"  geosam2                      {ours:8.2f} s")
        print(f"  official (PyTorch, CPU)      {official:8.2f} s  (generate minus its set_image)")
        print(f"  ratio                        {result['ratio']:8.3f}×  (goal ≤ 0.25×)")
        print(f"batched decoder: {result['batched_points_per_s']} points/s (one by one: {result['one_by_one_points_per_s']} points/s)")


if __name__ == "__main__":
    main()
