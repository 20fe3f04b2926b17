"""The output comparison's cost on the GPU: the fused Triton kernel (agent/evaluation/compare_kernel.py)
against the
PyTorch path, on l1_norm-sized fp32 outputs, and whether the fused one is in use (its first-use cross-check
agreed).

    python scripts/bench_compare.py [--elements N] [--reps 5] [--out compare.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from agent.evaluation import compare as verify


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def seconds(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--elements", type=int, default=32768 * 65535)  # l1_norm's output
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run (both paths are PyTorch's there)")
    args = ap.parse_args()
    ref = torch.randn(args.elements, device=args.device)
    out = ref + 1e-7 * torch.randn_like(ref)
    bad = out.clone()
    bad[12345] += 1.0
    result: dict[str, object] = {
        "device": str(ref.device),
        "elements": args.elements,
        "gb_per_tensor": ref.numel() * 4 / 1e9,
    }
    verdicts = {}
    for label in ("fused", "pytorch"):
        verify._FUSED["ok"] = None if label == "fused" else False
        ok = verify.compare_outputs([out], [ref])
        wrong = verify.compare_outputs([bad], [ref])
        verdicts[label] = (ok.passed, wrong.passed, [c.detail for c in wrong.checks if not c.passed])
        if label == "fused":  # used (CUDA), and its first-use cross-check agreed
            result["fused_in_use"] = verify._FUSED["ok"] is True
        result[f"{label}_s"] = seconds(lambda: verify.compare_outputs([out], [ref]), args.reps)
    result["verdicts"] = verdicts
    result["same_verdicts"] = verdicts["fused"][:2] == verdicts["pytorch"][:2] == (True, False)
    result["speedup"] = result["pytorch_s"] / result["fused_s"]
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
