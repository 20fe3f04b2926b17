"""Independent check of a stage's pick: sweep the search's whole space with triton.testing.do_bench.

Run on a GPU:
  python scripts/bench_micro_sweep.py kernels/l1_norm --pick RUN/best_kernel.py --out sweep.json
  python scripts/bench_micro_sweep.py kernels/l1_norm --stage tiling \
      --out tests/fixtures/sweeps/l1_norm_tiling_h200.json

Every variant of the space is timed in this one process with do_bench (median, L2 flushed by do_bench), in
several interleaved rounds; the tool's pick (the run's best_kernel.py) is timed in the same rounds, so
"within noise of the sweep's best" compares numbers from one run. The space, per launched kernel:
- micro (default): num_warps x num_stages within ±1 (agent.source.variants.stage_moves);
- tiling: every point of the kernel's tiling space (agent.source.tiling_space: BLOCK sizes, grid multipliers,
num_warps),
  keyed by `TilingSpace.label`. Each variant is run once first (its autotuner tunes then) and checked
  against the reference; one that fails to compile or computes wrong values is listed under "failed" with
  the reason, and not timed.
tests/test_search_replay.py replays the search on the JSON this writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
import triton.testing

from agent.evaluation import triton_hooks
from agent.evaluation.candidate import load_candidate
from agent.evaluation.compare import compare_outputs
from agent.problem import build, load_problem, load_reference
from agent.prompt.stages import load_stage
from agent.proposers.tiling_search import TilingSearch
from agent.source.variants import apply_move, site_stages, stage_moves


def space_variants(stage_name: str, source: str, launched: dict[str, int]) -> dict[str, str]:
    """label -> source of every point of the stage's space, per launched kernel (the start left out)."""
    stage = load_stage(stage_name)
    variants: dict[str, str] = {}
    if stage_name == "tiling":
        search = TilingSearch(stage)
        for kernel in launched:
            space = search.space(source, kernel)
            if not space.searchable:
                print(f"{kernel}: not searchable: {space.why_not()}")
            variants.update(space.variants())
        return variants
    params = {p.name: [int(v) for v in p.values] for p in stage.parameters}
    for kernel in launched:
        stages_now = set(site_stages(source, kernel))
        for move in stage_moves(source, kernel, params["num_warps"], params["num_stages"]):
            variants[move.label(kernel, stages_now)] = apply_move(source, kernel, move)
    return variants


def _outputs(out) -> list:
    return list(out) if isinstance(out, list | tuple) else [out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("--stage", choices=("micro", "tiling"), default="micro", help="whose space to sweep")
    ap.add_argument("--pick", type=Path, help="the tool's best_kernel.py")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    triton_hooks.install()
    spec = load_problem(args.problem)
    module = load_reference(spec, small=False)
    model, inputs = build(module, spec.reference_path, "cuda", seed=0)
    start_source = spec.kernel_path.read_text()
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
    variants: dict[str, str] = {"start": start_source, **space_variants(args.stage, start_source, launched)}
    if args.pick:
        variants["tool pick"] = args.pick.read_text()
    with torch.no_grad():
        ref = _outputs(model(*inputs))
    fns, failed = {}, {}
    for name, src in variants.items():
        try:
            fn = instantiate(src)
            with torch.no_grad():
                outs = _outputs(fn(*inputs))  # compiles, and autotunes an autotuned kernel
            torch.cuda.synchronize()
            check = compare_outputs(outs, ref, spec.atol, spec.rtol)
            del outs
        except Exception as e:  # a variant that does not compile or crashes: a result, not the sweep's end
            failed[name] = f"{type(e).__name__}: {e}"[:500]
            continue
        if not check.passed:
            failed[name] = "; ".join(c.detail for c in check.checks if not c.passed)[:500]
            continue
        fns[name] = fn
    del ref
    for name, why in failed.items():
        print(f"failed: {name}: {why}")
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
    best = min((n for n in space if n in summary), key=lambda n: summary[n]["median_ms"])
    result = {
        "problem": spec.name,
        "stage": args.stage,
        "device": torch.cuda.get_device_name(),
        "launched": launched,
        "space_size": len(space),
        "best": best,
        "times": summary,
        "failed": failed,
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
