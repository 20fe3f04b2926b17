"""Fakes the loop's tests share: a silent reporter, an evaluator and a profiler for the loop's hooks (no
worker, no ncu), and the settings of one stage that uses them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.config import LoopPolicy
from agent.loop import LoopHooks, LoopSettings
from agent.profiling.ncu import ProfileProvenance, ProfileResult
from agent.prompt.gpus import find_gpu
from agent.prompt.stages import Stage
from agent.records import EvalResult, NcuMetrics, Status, Timings, TimingStats


class Quiet:
    """A reporter that shows nothing; `infos` keeps the lines the loop reported."""

    def __init__(self) -> None:
        self.infos: list[str] = []

    def info(self, message: str) -> None:
        self.infos.append(message)

    def begin(self, what: str, total: int) -> None: ...

    def candidate(self, cand_id: int, label: str, result: EvalResult, best_ms: float | None) -> None: ...

    def end(self) -> None: ...


def timed(ms: float, roofline_ms: float | None = None, iqr: float = 0.0, **kw: object) -> EvalResult:
    """An accepted result timed at a median of `ms` (spread `iqr`), as a GPU evaluation gives it."""
    times = [ms - iqr / 2] * 5 + [ms + iqr / 2] * 5 if iqr else [ms] * 10
    return EvalResult(
        status=Status.ACCEPTED,
        device="cuda",
        timings=Timings(candidate=TimingStats(times_ms=times), roofline_ms=roofline_ms),
        **kw,  # type: ignore[arg-type]
    )


class FakeEvaluator:
    """The evaluator hook: each source's verdict from `verdicts` (a result, or a function of the source),
    `default` for the others; `calls` lists the sources in the order they were evaluated."""

    def __init__(
        self,
        verdicts: dict[str, EvalResult] | None = None,
        default: EvalResult | Callable[[str], EvalResult] | None = None,
    ):
        self.verdicts = dict(verdicts or {})
        self.default = default if default is not None else timed(10.0)
        self.calls: list[str] = []

    def __call__(self, problem: object, source: str, device: str | None = None, **kw: object) -> EvalResult:
        self.calls.append(source)
        found = self.verdicts.get(source, self.default)
        result = found(source) if callable(found) else found
        return result.model_copy(deep=True)


class FakeProfiler:
    """The profiler hook (ncu's place): every candidate gets `metrics`; `calls` counts ncu processes."""

    def __init__(self, metrics: NcuMetrics | None = None):
        self.metrics: NcuMetrics = metrics if metrics is not None else {"k": [{"m": 1.0}]}
        self.calls = 0

    def __call__(self, problem: object, candidates: list, metric_set, out_dir: Path, **kw: object):
        self.calls += 1
        prov = ProfileProvenance(metric_set=metric_set.name)
        return [
            ProfileResult(index=i, ok=True, metrics=self.metrics, provenance=prov)
            for i in range(len(candidates))
        ]


def fake_settings(
    stage: Stage,
    run_dir: Path,
    evaluator: Callable[..., EvalResult],
    profiler: FakeProfiler | None = None,
    **policy: object,
) -> LoopSettings:
    """One stage on a pretend GPU ("cuda", so the profiling step runs, through the fake profiler)."""
    return LoopSettings(
        stage=stage,
        gpu=find_gpu("h200"),
        device="cuda",
        run_dir=run_dir,
        metric_set=stage.metric_set,
        policy=LoopPolicy(**policy),  # type: ignore[arg-type]
        hooks=LoopHooks(evaluator=evaluator, profiler=profiler or FakeProfiler()),
    )
