"""What one evaluation costs (compile, correctness with every check, re-tuning, timing with both
baselines): cold (new, then closed) workers against a warm one, on a problem's starting kernel and its
micro-stage variants (each a new source, so Triton compiles it), plus the same source again (Triton's
cache hit).

python scripts/bench_eval_cost.py kernels/l1_norm --n 4 --out evalcost.json

Per evaluation: wall time seen by the caller, the worker's phases (load, each seed, extra draws,
re-tuning, baselines, timing), whether a warm worker served it; for the pool, how many workers it started,
reused and replaced, and why each replaced one was not kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from agent.evaluation.evaluate import evaluate
from agent.evaluation.worker_pool import WorkerPool
from agent.problem import load_problem
from agent.source.variants import LaunchMove, apply_move


def run(spec, sources: list[str], pool: WorkerPool | None) -> list[dict]:
    rows = []
    for src in sources:
        t0 = time.perf_counter()
        r = evaluate(spec, src, "cuda", pool=pool)
        wall = time.perf_counter() - t0
        t = r.timings
        rows.append(
            {
                "wall_s": round(wall, 3),
                "status": r.status.value,
                "rule": r.rule,
                "reused": r.worker_reused,
                "phases_s": r.phases_s,
                "median_ms": t.candidate.median_ms if t and t.candidate else None,
                "speedup_eager": t.speedup_eager if t else None,
                "speedup_compiled": t.speedup_compiled if t else None,
                "retuned": [n.model_dump() for n in t.retuned] if t else [],
                "reason": r.reason[:300],
            }
        )
        print(json.dumps({k: rows[-1][k] for k in ("wall_s", "status", "reused", "phases_s")}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("--kernel", default="l1_norm_kernel_autotune")
    ap.add_argument("--n", type=int, default=4, help="evaluations per mode")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    spec = load_problem(args.problem)
    start = spec.kernel_path.read_text()
    moves = [LaunchMove(num_warps=w, stage_delta=d) for d in (0, 1) for w in (2, 4, 8, 16)]
    variants = [apply_move(start, args.kernel, m) for m in moves]
    out: dict = {"problem": spec.name}
    out["cold"] = run(spec, variants[: args.n], None)
    with WorkerPool() as pool:
        out["warm_first"] = run(spec, [start], pool)  # starts the worker
        out["warm_new_sources"] = run(spec, variants[-args.n :], pool)
        out["warm_same_source"] = run(spec, [start] * 2, pool)
        out["pool"] = {
            "started": pool.started,
            "reused": pool.reused,
            "replaced": pool.replaced,
            "replaced_why": pool.replaced_why,
        }
    for mode in ("cold", "warm_new_sources", "warm_same_source"):
        walls = [r["wall_s"] for r in out[mode]]
        out[f"{mode}_median_s"] = statistics.median(walls)
        out[f"{mode}_per_minute"] = 60 / statistics.median(walls)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if not isinstance(v, list)}, indent=1))


if __name__ == "__main__":
    main()
