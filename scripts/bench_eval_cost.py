"""What one evaluation costs (compile, correctness with every check, timing with both baselines): cold
workers against a warm one, on the problem's starting kernel and its micro-stage variants.

python scripts/bench_eval_cost.py kernels/l1_norm --n 4 --out evalcost.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from agent.evaluate import evaluate
from agent.problem import load_problem
from agent.sandbox import WorkerPool
from agent.variants import LaunchMove, apply_move


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problem")
    ap.add_argument("--kernel", default="l1_norm_kernel_autotune")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    spec = load_problem(args.problem)
    start = spec.kernel_path.read_text()
    sources = [apply_move(start, args.kernel, LaunchMove(num_warps=w, stage_delta=0)) for w in (2, 4, 8, 16)]
    sources = (sources * args.n)[: args.n]
    rows: dict[str, list[float]] = {"cold": [], "warm": []}
    statuses = []
    for mode in ("cold", "warm"):
        pool = WorkerPool() if mode == "warm" else None
        for src in sources:
            t0 = time.perf_counter()
            r = evaluate(spec, src, "cuda", pool=pool)
            rows[mode].append(time.perf_counter() - t0)
            statuses.append((mode, r.status.value, r.rule, round(r.wall_s, 2)))
        if pool is not None:
            stats = {"started": pool.started, "reused": pool.reused, "replaced": pool.replaced}
            pool.close()
    out = {
        "problem": spec.name,
        "cold_s": rows["cold"],
        "warm_s": rows["warm"],
        "cold_median_s": statistics.median(rows["cold"]),
        "warm_median_s": statistics.median(rows["warm"]),
        "warm_per_minute": 60 / statistics.median(rows["warm"]),
        "pool": stats,
        "statuses": statuses,
    }
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "statuses"}, indent=1))
    print(statuses)


if __name__ == "__main__":
    main()
