"""Do the tool's times hold up? The same kernel timed in N fresh worker processes, against do_bench.

python scripts/bench_stability.py kernels/l1_norm kernels/matmul_fp16 --runs 5 --out stability.json

For each problem's starting kernel: N evaluations, each in a fresh worker process (the tool's protocol:
CUDA events, L2 flushed before every call, median), then one independent measurement with
`triton.testing.do_bench(return_mode="median")` in this process, with each autotuned kernel pinned to the
config the tool's processes settled on (the judge re-tunes autotuned kernels: agent/evaluation/retune.py).
Reports the
spread (max - min over the median of the N medians), the relative difference to do_bench, and per process
the autotuner's own pick, the re-tuned one, and the GPU's SM clock, temperature and power sampled by
`nvidia-smi -lms 200` while that process ran (clocks are left as found: a compute-bound kernel's time
follows them). `--baselines`: eager PyTorch timed in each process too, and the spread of the speedup.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
from pathlib import Path

import torch
import triton.testing

from agent.evaluation import triton_hooks
from agent.evaluation.candidate import load_candidate
from agent.evaluation.evaluate import evaluate
from agent.problem import build, load_problem, load_reference
from agent.profiling.target import pin_configs

CLOCK_FIELDS = "clocks.sm,temperature.gpu,power.draw,clocks_event_reasons.active"


def gpu_id() -> str:
    """This process's GPU as nvidia-smi names it (its UUID: CUDA_VISIBLE_DEVICES may renumber)."""
    with contextlib.suppress(AttributeError, AssertionError, RuntimeError):
        return f"GPU-{torch.cuda.get_device_properties(0).uuid}"
    return os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]


@contextlib.contextmanager
def clock_log(samples: list):
    """Appends {sm_mhz: [min, median, max], temp_c: [...], power_w: [...], reasons: [...]} of the samples
    taken while the block ran; nothing when nvidia-smi is missing."""
    cmd = ["nvidia-smi", "-i", gpu_id(), f"--query-gpu={CLOCK_FIELDS}", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.Popen([*cmd, "-lms", "200"], stdout=subprocess.PIPE, text=True)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
        rows = [line.split(", ") for line in out.splitlines() if line.count(",") == 3]
        cols = {}
        for key, i in (("sm_mhz", 0), ("temp_c", 1), ("power_w", 2)):
            vals = sorted(float(r[i]) for r in rows if r[i].replace(".", "", 1).isdigit())
            cols[key] = [vals[0], statistics.median(vals), vals[-1]] if vals else None
        cols["reasons"] = sorted({r[3].strip() for r in rows})
        cols["samples"] = len(rows)
        samples.append(cols)


def tool_median(spec, source: str, picks: list, eager: list, baselines: bool) -> float:
    # a new worker process each time (no pool): the spread between fresh processes is what is measured
    result = evaluate(spec, source, "cuda", seeds=(0,), timeout_s=600, split=False, baselines=baselines)
    assert result.timings and result.timings.candidate, result.reason
    picks.append(
        {n.kernel: {"autotuner": n.autotuner_choice, "retuned": n.chosen} for n in result.timings.retuned}
    )
    if result.timings.eager is not None:
        eager.append(result.timings.eager.median_ms)
    return result.timings.candidate.median_ms


def do_bench_median(spec, source: str, tmp: Path, pinned: dict) -> float:
    """do_bench of the candidate in this process, each autotuned kernel pinned to `pinned` (the config the
    tool's processes settled on), so both time the same kernel."""
    module = load_reference(spec, small=False)
    model, inputs = build(module, spec.reference_path, "cuda", seed=0)
    triton_hooks.STATE.autotuners.clear()
    mod = load_candidate(source, tmp)
    pin_configs(list(triton_hooks.STATE.autotuners), pinned)
    torch.manual_seed(0)
    with torch.device("cuda"):
        new = mod.ModelNew(*module.get_init_inputs())
    if new.state_dict().keys() == model.state_dict().keys():
        new.load_state_dict(model.state_dict())
    return triton.testing.do_bench(lambda: new(*inputs), warmup=100, rep=1000, return_mode="median")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("problems", nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--baselines",
        action="store_true",
        help="Time eager PyTorch in each process too (interleaved, as every evaluation does) and report the "
        "spread of the speedup: a ratio of two kernels timed at the same clocks.",
    )
    args = ap.parse_args()
    triton_hooks.install()
    rows = []
    tmp = args.out.parent / "stability_tmp"
    tmp.mkdir(exist_ok=True)
    for name in args.problems:
        spec = load_problem(name)
        source = spec.kernel_path.read_text()
        picks: list = []
        clocks: list = []
        eager: list = []
        medians = []
        for _ in range(args.runs):
            with clock_log(clocks):
                medians.append(tool_median(spec, source, picks, eager, args.baselines))
        mid = statistics.median(medians)
        pinned = {}
        for kernel in {k for p in picks for k in p}:
            chosen = [json.dumps(p[kernel]["retuned"], sort_keys=True) for p in picks if kernel in p]
            pinned[kernel] = json.loads(max(set(chosen), key=chosen.count))
        bench = do_bench_median(spec, source, tmp, pinned)
        torch.cuda.empty_cache()  # the problem's tensors are gone with do_bench_median's frame
        row = {
            "problem": spec.name,
            "tool_medians_ms": medians,
            "median_ms": mid,
            "spread": (max(medians) - min(medians)) / mid,
            "do_bench_ms": bench,
            "vs_do_bench": mid / bench - 1,
            "autotune_picks": picks,
            "clocks": clocks,
        }
        if eager:
            ratios = [e / m for e, m in zip(eager, medians, strict=True)]
            row["eager_medians_ms"] = eager
            row["speedups_vs_eager"] = ratios
            row["speedup_spread"] = (max(ratios) - min(ratios)) / statistics.median(ratios)
        rows.append(row)
        print(
            f"{spec.name:>18}: {args.runs} processes {min(medians):.4f}-{max(medians):.4f} ms "
            f"(spread {row['spread']:.2%}), do_bench {bench:.4f} ms ({row['vs_do_bench']:+.2%})",
            flush=True,
        )
        if eager:
            print(
                f"{'':>20}speedup vs eager {min(ratios):.4f}-{max(ratios):.4f} "
                f"(spread {row['speedup_spread']:.2%})"
            )
        for ms, c in zip(medians, clocks, strict=False):
            print(
                f"{'':>20}{ms:.4f} ms: "
                f"SM MHz {c['sm_mhz']}, C {c['temp_c']}, W {c['power_w']}, {c['reasons']}"
            )
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
