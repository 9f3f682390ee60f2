#!/usr/bin/env python3
"""Generate the TensorIO test fixtures with the real PyTorch / safetensors / numpy writers.

Usage: python3 tools/parity/make_tensorio_fixtures.py [OUT_DIR]
(default OUT_DIR: Tests/TensorIOTests/Fixtures). Writes small .pt/.safetensors/.npy files plus
expected.json, which holds, for every tensor, its dtype, shape and row-major values converted to
float32, so the Swift tests can compare every element without Python at test time.
"""
import json
import os
import sys
from collections import OrderedDict

import numpy as np
import torch

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "..", "Tests", "TensorIOTests", "Fixtures")
os.makedirs(OUT, exist_ok=True)

expected = {}


def describe(t):
    """dtype name, shape and float32 row-major values of a tensor (views are materialized)."""
    name = str(t.dtype).replace("torch.", "")
    vals = t.detach().contiguous().to(torch.float32).reshape(-1).tolist()
    return {"dtype": name, "shape": list(t.shape), "values": vals}


def record_pt(filename, tensors):
    expected[filename] = {"names": list(tensors.keys()),
                          "tensors": OrderedDict((k, describe(v)) for k, v in tensors.items())}


torch.manual_seed(1234)

# 1. Meta's layout: {"model": OrderedDict state_dict} of a small module, float32 (with an int64
#    0-d buffer from BatchNorm).
class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.norm = torch.nn.LayerNorm(3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.head = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.GELU(), torch.nn.Linear(5, 2))


net = Small()
with torch.no_grad():
    net.bn.running_mean.uniform_(-1, 1)
    net.bn.running_var.uniform_(0.5, 2)
    net.bn.num_batches_tracked.fill_(7)
sd = net.state_dict()
torch.save({"model": sd}, os.path.join(OUT, "state_dict_f32.pt"))
record_pt("state_dict_f32.pt", sd)
expected["state_dict_f32.pt"]["prefix"] = "state_dict_f32"

# 2. Other element types in a plain top-level dict (no "model" key).
mixed = OrderedDict()
mixed["half"] = (torch.randn(3, 4) * 10).to(torch.float16)
mixed["half"][0, 0] = 65504.0          # largest half
mixed["half"][0, 1] = 6e-8             # subnormal half
mixed["half"][0, 2] = -0.0
mixed["bf16"] = (torch.randn(2, 3) * 1000).to(torch.bfloat16)
mixed["double"] = torch.randn(5, dtype=torch.float64)
mixed["long"] = torch.tensor([[-3, 0, 2**40], [7, -2**33, 1]], dtype=torch.int64)
mixed["int"] = torch.tensor([-2**31, 2**31 - 1, 0], dtype=torch.int32)
mixed["short"] = torch.tensor([-32768, 32767], dtype=torch.int16)
mixed["char"] = torch.tensor([-128, 127, 0], dtype=torch.int8)
mixed["byte"] = torch.tensor([0, 255, 128], dtype=torch.uint8)
mixed["bool"] = torch.tensor([True, False, True])
torch.save(mixed, os.path.join(OUT, "mixed_dtypes.pt"))
record_pt("mixed_dtypes.pt", mixed)

# 3. Views sharing one storage, saved as is: nonzero storage_offset, non-contiguous strides,
#    a transpose, a stride-0 expand, and an nn.Parameter (pickled via _rebuild_parameter).
base = torch.arange(40, dtype=torch.float32).reshape(5, 8)
views = OrderedDict()
views["base"] = base
views["window"] = base[2:, 1:3]        # offset 17, stride (8, 1)
views["transposed"] = base.t()         # stride (1, 8)
views["row"] = base[3]                 # offset 24
views["every_other"] = base[1, ::2]    # offset 8, stride (2,)
views["expanded"] = torch.tensor([1.5, -2.0, 3.25]).expand(4, 3)   # stride (0, 1)
views["param"] = torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(2, 3))
torch.save(views, os.path.join(OUT, "views.pt"))
record_pt("views.pt", views)
assert views["window"].storage_offset() == 17

# 4. Unusual basename: the zip prefix becomes "my.weird_name-v2" (not "archive", not "data").
weird = OrderedDict(w=torch.randn(2, 2), b=torch.randn(2))
torch.save({"model": weird}, os.path.join(OUT, "my.weird_name-v2.pt"), _use_new_zipfile_serialization=True)
record_pt("my.weird_name-v2.pt", weird)
expected["my.weird_name-v2.pt"]["prefix"] = "my.weird_name-v2"

# 5. safetensors written by the reference implementation (if installed).
try:
    from safetensors.torch import save_file
    st = OrderedDict()
    st["weight"] = torch.randn(3, 4)
    st["half"] = torch.randn(2, 2).to(torch.float16)
    st["bf16"] = torch.randn(5).to(torch.bfloat16)
    st["index"] = torch.tensor([1, -5, 9], dtype=torch.int64)
    st["mask"] = torch.tensor([[0, 1], [255, 7]], dtype=torch.uint8)
    st["scalar"] = torch.tensor(2.5)
    save_file(st, os.path.join(OUT, "from_python.safetensors"), metadata={"format": "pt", "note": "fixture"})
    expected["from_python.safetensors"] = {
        "names": list(st.keys()),
        "tensors": OrderedDict((k, describe(v)) for k, v in st.items()),
        "metadata": {"format": "pt", "note": "fixture"},
    }
except ImportError:
    print("safetensors not installed: skipping from_python.safetensors", file=sys.stderr)

# 6. NumPy files written by numpy itself.
rng = np.random.default_rng(7)
arrays = OrderedDict()
arrays["np_f4.npy"] = rng.standard_normal((3, 4, 5)).astype("<f4")
arrays["np_f2.npy"] = rng.standard_normal(5).astype("<f2")
arrays["np_f8_scalar.npy"] = np.array(3.141592653589793, dtype="<f8")
arrays["np_u1.npy"] = rng.integers(0, 256, (4, 6), dtype=np.uint8)
arrays["np_b1.npy"] = np.array([[True, False], [False, True]])
arrays["np_i4.npy"] = np.array([-7, 0, 123456], dtype="<i4")
arrays["np_i8.npy"] = np.array([[-(2**40)], [5]], dtype="<i8")
arrays["np_empty.npy"] = np.zeros((0, 3), dtype="<f4")
for fname, a in arrays.items():
    np.save(os.path.join(OUT, fname), a)
    expected[fname] = {"dtype": str(a.dtype), "shape": list(a.shape),
                       "values": a.astype(np.float32).reshape(-1).tolist()}
v2 = rng.standard_normal((2, 3)).astype("<f4")
with open(os.path.join(OUT, "np_v2.npy"), "wb") as f:
    np.lib.format.write_array(f, v2, version=(2, 0))
expected["np_v2.npy"] = {"dtype": "float32", "shape": [2, 3], "values": v2.reshape(-1).tolist()}
np.save(os.path.join(OUT, "np_fortran.npy"), np.asfortranarray(rng.standard_normal((3, 2)).astype("<f4")))

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1)
    f.write("\n")
print("wrote fixtures to", os.path.abspath(OUT))
