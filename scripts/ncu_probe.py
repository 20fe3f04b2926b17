"""Standalone ncu target used to record fixtures: warm up outside NVTX, then N forward calls in NVTX ranges.

python scripts/ncu_probe.py kernels/l1_norm [N]
"""

import importlib.util
import sys

import torch

folder, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ref = load(f"{folder}/reference.py", "ref")
cand = load(f"{folder}/kernel.py", "cand")
torch.manual_seed(0)
with torch.device("cuda"):
    inputs = ref.get_inputs()
    model = cand.ModelNew(*ref.get_init_inputs())
for _ in range(3):
    model(*inputs)
torch.cuda.synchronize()
for i in range(n):
    torch.cuda.nvtx.range_push(f"ncu_agent_c{i}")
    model(*inputs)
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
print("probe done", flush=True)
