"""What profiling costs per candidate: one candidate per ncu process, and a search step's candidates in one.

python scripts/bench_profile_cost.py kernels/l1_norm --out profcost.json [--sets seed full] [--n 12]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from agent.problem import load_problem
from agent.profiling.metric_sets import load_metric_set
from agent.profiling.ncu import profile_candidates
from agent.profiling.read import read_report
from agent.profiling.target import ProfileCandidate
from agent.prompt.stages import load_stage
from agent.source.variants import apply_move, current_config, stage_moves


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("--sets", nargs="+", default=["seed", "full"])
    ap.add_argument("--n", type=int, default=12, help="candidates in the amortized step")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    spec = load_problem(args.problem)
    start = spec.kernel_path.read_text()
    stage = load_stage("micro")
    params = {p.name: [int(v) for v in p.values] for p in stage.parameters}
    kernel = "l1_norm_kernel_autotune"
    variants = [
        apply_move(start, kernel, m)
        for m in stage_moves(start, kernel, params["num_warps"], params["num_stages"])
    ]
    variants = (variants * ((args.n + len(variants) - 1) // len(variants)))[: args.n]
    pinned = {kernel: {"BLOCK_SIZE_D": 1024}}
    out_dir = Path(tempfile.mkdtemp())
    results = []
    for set_name in args.sets:
        mset = load_metric_set(set_name)
        for label, sources in (("alone", [start]), (f"step of {len(variants)}", variants)):
            t0 = time.perf_counter()
            res = profile_candidates(
                spec,
                [
                    ProfileCandidate(source=s, pinned_configs={kernel: {**pinned[kernel], **_cfg(s, kernel)}})
                    for s in sources
                ],
                mset,
                out_dir,
                name=f"{set_name}_{len(sources)}",
                timeout_s=580,
            )
            wall = time.perf_counter() - t0
            ok = sum(r.ok for r in res)
            passes = None
            if res and res[0].report_path:
                prof = read_report(res[0].report_path, ["profiler__replayer_passes"])
                passes = [launch.metrics.get("profiler__replayer_passes") for launch in prof.launches][:1]
            row = {
                "set": set_name,
                "mode": label,
                "candidates": len(sources),
                "ok": ok,
                "wall_s": wall,
                "per_candidate_s": wall / len(sources),
                "passes_per_launch": passes,
                "errors": [r.error for r in res if not r.ok][:3],
            }
            results.append(row)
            print(
                f"{set_name:>5} {label:>12}: {wall:6.1f} s wall, {row['per_candidate_s']:5.2f} s/candidate, "
                f"{ok}/{len(sources)} ok, passes {passes}"
            )
    args.out.write_text(json.dumps(results, indent=2))


def _cfg(source: str, kernel: str) -> dict[str, int]:
    c = current_config(source, kernel)
    return {"num_warps": c.num_warps, "num_stages": c.num_stages}


if __name__ == "__main__":
    main()
