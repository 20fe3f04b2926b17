"""A stage that starts from a kernel already within the roofline target spends no evaluation on it."""

import pytest

import agent.loop as loop
from agent.problem import load_problem
from agent.profiling.step import ProfileOutcome
from agent.prompt.gpus import find_gpu
from agent.prompt.stages import load_stage
from agent.proposers.search import SearchProposer
from agent.records import EvalResult, Status, Timings, TimingStats
from agent.store import Store


class Quiet:
    def info(self, message): ...
    def begin(self, what, total): ...
    def candidate(self, cand_id, label, result, best_ms): ...
    def end(self): ...


def micro_stage(spec, source: str, run_dir, start: loop.Best | None = None) -> loop.LoopOutcome:
    """The micro stage of l1_norm with the coordinate search, from `source` (or from `start`)."""
    stage = load_stage("micro")
    store = Store.open_dir(run_dir)
    settings = loop.LoopSettings(
        stage=stage, gpu=find_gpu("h200"), device="cuda", run_dir=run_dir, metric_set="seed"
    )
    run_id = store.start_run("l1_norm", "cuda", "H200", "search", None, {})
    proposer = SearchProposer(stage, "coordinate")
    return loop.run_stage(spec, source, proposer, store, run_id, settings, Quiet(), start=start)


@pytest.fixture
def stage_from(monkeypatch, tmp_path):
    spec = load_problem("kernels/l1_norm")
    start = spec.kernel_path.read_text()
    calls: list[str] = []

    def run(pct_of_roofline: float):
        def fake_evaluate(problem, source, device, **kw):
            calls.append(source)
            ms = 7.2 if source == start else 7.3  # no variant beats the start
            return EvalResult(
                status=Status.ACCEPTED,
                kernels_launched={"l1_norm_kernel_autotune": 1},
                timings=Timings(
                    candidate=TimingStats(times_ms=[ms] * 10), roofline_ms=7.2 * pct_of_roofline / 100
                ),
            )

        monkeypatch.setattr(loop, "evaluate", fake_evaluate)
        monkeypatch.setattr(
            loop,
            "profile_step",
            lambda problem, items, settings, store: [ProfileOutcome(metrics={})] * len(items),
        )
        return micro_stage(spec, start, tmp_path), list(calls)

    return run


def test_a_start_at_the_roofline_target_ends_the_stage_before_any_try(stage_from):
    out, calls = stage_from(92.0)
    assert len(calls) == 1  # the starting kernel's own evaluation, nothing else
    assert out.evaluations == 1 and out.best.cand_id == out.start.cand_id
    assert out.notes == [
        "stage not searched: the kernel it starts from is at 92.0% of the roofline (target 90%)"
    ]


def test_a_start_below_the_target_is_searched(stage_from):
    out, calls = stage_from(80.0)
    assert len(calls) > 1
    assert not any(n.startswith("stage not searched") for n in out.notes)


def test_a_stage_entered_at_the_target_neither_evaluates_nor_profiles_again(monkeypatch, tmp_path):
    """From a previous stage's best already within the target: no evaluation and no ncu run; the previous
    profile stays with the kernel."""
    spec = load_problem("kernels/l1_norm")
    source = spec.kernel_path.read_text()
    work = []
    monkeypatch.setattr(loop, "evaluate", lambda *a, **k: work.append("evaluate"))
    monkeypatch.setattr(loop, "profile_step", lambda *a, **k: work.append("profile") or [])
    result = EvalResult(
        status=Status.ACCEPTED,
        timings=Timings(candidate=TimingStats(times_ms=[7.2] * 10), roofline_ms=7.2 * 0.95),
    )
    earlier = ProfileOutcome(metrics={"k": [{"m": 1.0}]})
    start = loop.Best(cand_id=3, source=source, result=result, profile=earlier)
    out = micro_stage(spec, source, tmp_path, start=start)
    assert work == [] and out.evaluations == 0
    assert out.best.profile is earlier and out.notes[0].startswith("stage not searched: ")
