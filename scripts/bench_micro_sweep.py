"""Independent check of the micro stage's pick: sweep its whole space with triton.testing.do_bench.

Run on a GPU:  python scripts/bench_micro_sweep.py kernels/l1_norm --pick RUN/best_kernel.py --out sweep.json

Every variant of the space (num_warps x num_stages within ±1, per launched kernel) is timed in this one
process with do_bench (median, L2 flushed by do_bench), in several interleaved rounds; the tool's pick
(the run's best_kernel.py) is timed in the same rounds, so "within noise of the sweep's best" compares
numbers from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import triton.testing

from agent import triton_hooks
from agent.candidate import load_candidate
from agent.problem import build, load_problem, load_reference
from agent.stages import load_stage
from agent.variants import apply_move, site_stages, stage_moves


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("--pick", type=Path, help="the tool's best_kernel.py")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    triton_hooks.install()
    spec = load_problem(args.problem)
    module = load_reference(spec, small=False)
    model, inputs = build(module, spec.reference_path, "cuda", seed=0)
    start_source = spec.kernel_path.read_text()
    stage = load_stage("micro")
    params = {p.name: [int(v) for v in p.values] for p in stage.parameters}
    workdir = Path(tempfile.mkdtemp())

    def instantiate(source: str):
        mod = load_candidate(source, workdir)
        torch.manual_seed(0)
        with torch.device("cuda"):
            new = mod.ModelNew(*module.get_init_inputs())
        if new.state_dict().keys() == model.state_dict().keys():
            new.load_state_dict(model.state_dict())
        return new

    start = instantiate(start_source)
    triton_hooks.start_recording()
    start(*inputs)
    torch.cuda.synchronize()
    launched = triton_hooks.stop_recording()
    variants: dict[str, str] = {"start": start_source}
    for kernel in launched:
        stages_now = set(site_stages(start_source, kernel))
        for move in stage_moves(start_source, kernel, params["num_warps"], params["num_stages"]):
            variants[move.label(kernel, stages_now)] = apply_move(start_source, kernel, move)
    if args.pick:
        variants["tool pick"] = args.pick.read_text()
    fns = {name: instantiate(src) for name, src in variants.items()}
    fns["eager"] = model
    fns["torch.compile"] = torch.compile(model)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            times[name].append(
                triton.testing.do_bench(lambda fn=fn: fn(*inputs), warmup=100, rep=500, return_mode="median")
            )
    summary = {name: {"median_ms": statistics.median(t), "rounds_ms": t} for name, t in times.items()}
    space = [n for n in variants if n not in ("start", "tool pick")]
    best = min(space, key=lambda n: summary[n]["median_ms"])
    result = {
        "problem": spec.name,
        "device": torch.cuda.get_device_name(),
        "launched": launched,
        "space_size": len(space),
        "best": best,
        "times": summary,
    }
    if args.pick:
        pick, best_ms = summary["tool pick"]["median_ms"], summary[best]["median_ms"]
        spread = max((max(t["rounds_ms"]) - min(t["rounds_ms"])) / t["median_ms"] for t in summary.values())
        result["pick_vs_best"] = pick / best_ms - 1.0
        result["max_round_spread"] = spread
    args.out.write_text(json.dumps(result, indent=2))
    width = max(len(n) for n in summary)
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["median_ms"]):
        print(f"{name:<{width}}  {s['median_ms']:8.3f} ms")
    if args.pick:
        print(
            f"tool pick vs sweep best ({best}): {result['pick_vs_best']:+.2%} "
            f"(largest spread over rounds {result['max_round_spread']:.2%})"
        )


if __name__ == "__main__":
    main()
