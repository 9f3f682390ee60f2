"""Reference outputs of PyTorch's resampling kernels for the Swift kernel tests.

Writes Tests/KernelsTests/Fixtures/resize.json: small deterministic inputs and what
torch.nn.functional.interpolate returns for them (the modes SAM2 uses)."""
import json, math, pathlib, sys
import torch
import torch.nn.functional as F

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "Tests/KernelsTests/Fixtures/resize.json")

def field(c, h, w):
    vals = [[[math.sin(0.7 * y + 0.3 * c) * math.cos(0.45 * x) + 0.05 * ((x * 7 + y * 13 + c * 5) % 11)
              for x in range(w)] for y in range(h)] for c in range(c)]
    return torch.tensor(vals, dtype=torch.float32)

cases = []
def add(name, x, size, **kw):
    y = F.interpolate(x[None], size=size, **kw)[0]
    cases.append({"name": name, "inputShape": list(x.shape), "input": x.flatten().tolist(),
                  "outputShape": list(y.shape), "output": y.flatten().tolist()})

add("antialiased_down", field(2, 23, 31), (10, 7), mode="bilinear", align_corners=False, antialias=True)
add("antialiased_up", field(2, 5, 6), (13, 11), mode="bilinear", align_corners=False, antialias=True)
add("antialiased_mixed", field(1, 9, 40), (17, 12), mode="bilinear", align_corners=False, antialias=True)
add("bicubic_up", field(3, 7, 7), (32, 32), mode="bicubic", align_corners=False)
add("bilinear_up", field(2, 8, 8), (19, 27), mode="bilinear", align_corners=False)
add("bilinear_down", field(1, 16, 16), (5, 7), mode="bilinear", align_corners=False)
out.write_text(json.dumps({"torch": torch.__version__, "cases": cases}))
print(f"wrote {out}")
