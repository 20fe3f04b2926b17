"""Do the two evaluation layouts time alike? The split layout (the judge times eager and torch.compile in its
own process, the candidate is timed in its sandboxed worker, in turns) against the one-process layout
(all three in one worker), on the same GPU in one run.

python scripts/bench_layouts.py kernels/softmax kernels/matmul_fp16 --rounds 3 --out layouts.json

For each problem's starting kernel, the layouts alternate (split, one-process, split, ...) with warm workers
(a pool per layout, so each keeps its compiled baseline), and each evaluation's candidate, eager and
compiled medians and speedups are kept. Reports, per problem and layout, the median of the speedups over
the rounds and the relative difference between the layouts, plus the wall time of each evaluation and of
its timing phase (the turns cost messages over the worker's pipe). Then, for reference, do_bench of each
candidate in this process (scripts/bench_stability.py's `do_bench_median`).
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


def one(spec, source: str, split: bool, pool: WorkerPool) -> dict:
    start = time.perf_counter()
    r = evaluate(spec, source, "cuda", seeds=(0,), split=split, pool=pool, timeout_s=600)
    wall = time.perf_counter() - start
    t = r.timings
    row = {"status": r.status.value, "reason": r.reason[:300], "wall_s": round(wall, 2)}
    if t is not None and t.candidate is not None:
        row.update(
            layout=t.layout,
            candidate_ms=t.candidate.median_ms,
            eager_ms=t.eager.median_ms if t.eager else None,
            compiled_ms=t.compiled.median_ms if t.compiled else None,
            speedup_eager=t.speedup_eager,
            speedup_compiled=t.speedup_compiled,
            n=t.candidate.n,
            noisy=t.noisy,
            timing_s=r.phases_s.get("timing"),
            retuned={n.kernel: n.chosen for n in t.retuned},
            timed_launches=next((c.detail for c in r.checks if c.name == "timed-launches"), ""),
            transport=next((c.detail for c in r.checks if c.name == "transport"), ""),
        )
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problems", nargs="+")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("layouts.json"))
    args = ap.parse_args()
    pools = {True: WorkerPool(), False: WorkerPool()}
    out: dict = {}
    try:
        for p in args.problems:
            spec = load_problem(p)
            source = spec.kernel_path.read_text()
            rows: dict[str, list] = {"split": [], "one-process": []}
            for i in range(args.rounds):
                for split in (True, False) if i % 2 == 0 else (False, True):
                    row = one(spec, source, split, pools[split])
                    rows["split" if split else "one-process"].append(row)
                    print(spec.name, "split" if split else "one-process", json.dumps(row), flush=True)
            summary = {}
            for layout, rs in rows.items():
                ok = [r for r in rs if r.get("speedup_eager")]
                summary[layout] = {
                    "speedup_eager": statistics.median(r["speedup_eager"] for r in ok) if ok else None,
                    "speedup_compiled": statistics.median(
                        r["speedup_compiled"] for r in ok if r.get("speedup_compiled")
                    )
                    if any(r.get("speedup_compiled") for r in ok)
                    else None,
                    "candidate_ms": statistics.median(r["candidate_ms"] for r in ok) if ok else None,
                    "eager_ms": statistics.median(r["eager_ms"] for r in ok) if ok else None,
                    "wall_s": statistics.median(r["wall_s"] for r in rs),
                    "timing_s": statistics.median(r["timing_s"] or 0 for r in ok) if ok else None,
                }
            a, b = summary["split"]["speedup_eager"], summary["one-process"]["speedup_eager"]
            summary["speedup_eager_split_vs_one_process"] = (a / b - 1) if a and b else None
            out[spec.name] = {"rows": rows, "summary": summary}
            print(spec.name, json.dumps(summary), flush=True)
    finally:
        for pool in pools.values():
            pool.close()
    # An independent measurement of each candidate after every evaluation: do_bench in this process, the
    # autotuned kernels pinned to the split layout's last pick (the Triton hooks go in only now, so the
    # evaluations above ran without them in this process).
    from bench_stability import do_bench_median

    from agent.evaluation import triton_hooks

    triton_hooks.install()
    tmp = args.out.parent / "layouts_tmp"
    tmp.mkdir(exist_ok=True)
    for p in args.problems:
        spec = load_problem(p)
        if spec.name not in out:
            continue
        rows = [r for r in out[spec.name]["rows"]["split"] if r.get("retuned") is not None]
        pinned = rows[-1]["retuned"] if rows else {}
        try:
            ms = do_bench_median(spec, spec.kernel_path.read_text(), tmp, pinned)
        except Exception as e:  # a problem too big for a third copy on this card
            print(spec.name, "do_bench failed:", type(e).__name__, str(e)[:200], flush=True)
            continue
        summary = out[spec.name]["summary"]
        summary["do_bench_ms"] = ms
        for layout in ("split", "one-process"):
            got = summary[layout]["candidate_ms"]
            summary[layout]["vs_do_bench"] = got / ms - 1 if got else None
        print(spec.name, "do_bench", json.dumps(summary), flush=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
