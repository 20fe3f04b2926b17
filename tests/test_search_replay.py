"""The built-in search replayed on times measured on the H200 (Kernel Tuner's "simulation mode").

tests/fixtures/sweeps/l1_norm_h200.json holds every point of the micro space of kernels/l1_norm, timed
with do_bench in one process on an H200 (2026-11-26, scripts/bench_micro_sweep.py). Here the real loop and
the real search run with evaluation and profiling replaced by those numbers, so CI checks on a CPU that the
search reaches the sweep's best with fewer evaluations than the sweep.
"""

import json
from pathlib import Path

import pytest

import agent.loop as loop
from agent.gpus import find_gpu
from agent.models import EvalResult, Status, Timings, TimingStats
from agent.problem import load_problem
from agent.profiling_step import ProfileOutcome
from agent.proposers.search import SearchProposer
from agent.stages import load_stage
from agent.store import Store
from agent.variants import site_stages

SWEEP = json.loads((Path(__file__).parent / "fixtures" / "sweeps" / "l1_norm_h200.json").read_text())
KERNEL = "l1_norm_kernel_autotune"
START_METRICS = {KERNEL: [{"sm__warps_active.avg.pct_of_peak_sustained_active": 61.08}]}


class Quiet:
    def info(self, message): ...
    def begin(self, what, total): ...
    def candidate(self, cand_id, label, result, best_ms): ...
    def end(self): ...


def _label(source: str, start: str) -> str:
    if source == start:
        return "start"
    import re

    warps = set(re.findall(r"num_warps=(\d+)", source.split("@triton.jit", 2)[1]))
    (stages,) = set(site_stages(source, KERNEL))
    (w,) = warps
    return f"{KERNEL}: num_warps={w} num_stages={stages}"


@pytest.fixture
def replay(monkeypatch, tmp_path):
    spec = load_problem("kernels/l1_norm")
    start = spec.kernel_path.read_text()
    calls: list[str] = []

    def fake_evaluate(problem, source, device, **kw):
        label = _label(source, start)
        calls.append(label)
        t = SWEEP["times"]
        return EvalResult(
            status=Status.ACCEPTED,
            kernels_launched={KERNEL: 1},
            timings=Timings(
                candidate=TimingStats(times_ms=t[label]["rounds_ms"]),
                eager=TimingStats(times_ms=t["eager"]["rounds_ms"]),
                compiled=TimingStats(times_ms=t["torch.compile"]["rounds_ms"]),
                roofline_ms=4.02,
            ),
        )

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    monkeypatch.setattr(
        loop,
        "profile_step",
        lambda problem, items, settings, store: [ProfileOutcome(metrics=START_METRICS)] * len(items),
    )

    def run(strategy: str):
        stage = load_stage("micro")
        store = Store.open_dir(tmp_path)
        settings = loop.LoopSettings(
            stage=stage, gpu=find_gpu("h200"), device="cuda", run_dir=tmp_path, metric_set="seed"
        )
        run_id = store.start_run("l1_norm", "cuda", "H200", "search", None, {})
        out = loop.run_stage(spec, start, SearchProposer(stage, strategy), store, run_id, settings, Quiet())
        return out, list(calls)

    return run


def test_coordinate_search_finds_the_sweeps_best_with_half_the_evaluations(replay):
    out, calls = replay("coordinate")
    best_ms = SWEEP["times"][SWEEP["best"]]["median_ms"]
    assert out.best.median_ms == pytest.approx(best_ms, rel=0.005)  # within noise of the sweep's best
    assert out.best.median_ms < SWEEP["times"]["start"]["median_ms"] * 0.95
    assert len(calls) - 1 <= SWEEP["space_size"] // 2  # 6 tries (4 warps + 2 stages) against 12


def test_exhaustive_search_tries_the_whole_space(replay):
    out, calls = replay("exhaustive")
    assert len(calls) - 1 == SWEEP["space_size"]
    assert out.best.median_ms == pytest.approx(SWEEP["times"][SWEEP["best"]]["median_ms"], rel=0.005)
