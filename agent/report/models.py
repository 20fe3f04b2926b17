"""The report's view of a run directory: candidates with their evaluations and profiles, the steps where
the best changed, the prompts and replies. Filled by agent/report/data.py; read by the pages, plots and
exports (the templates call these properties, so a template never digs into the JSON of a record)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from agent.records import EvalResult, Status

# Rejections decided before the worker ran: not counted as evaluations (the loop does not count them).
NOT_EVALUATED = {Status.CONSTRAINT.value, Status.NO_CODE.value}

Metrics = dict[str, list[dict[str, Any]]]  # the seed's form: {kernel name: [one dict per launch]}


class ProfileRow(BaseModel):
    """The latest ncu profile of one candidate."""

    ok: bool
    error: str | None = None
    metric_set: str | None = None
    report_path: str | None = None
    report_link: str | None = Field(default=None, description="The .ncu-rep inside the run dir, if there.")
    metrics: Metrics | None = None
    rules: list[str] = Field(default_factory=list)
    provenance: str = ""


class CandidateRow(BaseModel):
    """One candidate with its latest evaluation and profile."""

    id: int
    run_id: int
    stage: str
    iteration: int
    proposer: str
    label: str = ""
    parent_id: int | None = None
    prompt_id: int | None = None
    reply_id: int | None = None
    created_at: str = ""
    source: str = ""
    status: str | None = Field(default=None, description="None: never evaluated (a run killed mid-step).")
    reason: str = ""
    result: EvalResult | None = None
    profiles: list[ProfileRow] = Field(default_factory=list, description="Oldest first.")
    new_best: bool = Field(default=False, description="It became the best when it was evaluated.")
    final_best: bool = False

    @property
    def name(self) -> str:
        return self.label or self.proposer

    @property
    def profile(self) -> ProfileRow | None:
        return self.profiles[-1] if self.profiles else None

    def profile_in(self, metric_set: str | None) -> ProfileRow | None:
        """The latest profile taken with `metric_set` (a later stage may profile a kernel again), else the
        latest one."""
        same = [p for p in self.profiles if p.metric_set == metric_set]
        return same[-1] if same else self.profile

    @property
    def rule(self) -> str | None:
        """The rule or check that rejected it, where the evaluation names one."""
        return getattr(self.result, "rule", None) if self.result else None

    @property
    def accepted(self) -> bool:
        return self.status == Status.ACCEPTED.value

    def _stat(self, which: str) -> float | None:
        t = self.result.timings if self.result else None
        stats = getattr(t, which) if t else None
        return stats.median_ms if stats else None

    @property
    def median_ms(self) -> float | None:
        return self._stat("candidate")

    @property
    def eager_ms(self) -> float | None:
        return self._stat("eager")

    @property
    def compiled_ms(self) -> float | None:
        return self._stat("compiled")

    @property
    def timed(self) -> bool:
        return self.median_ms is not None

    @property
    def speedup_eager(self) -> float | None:
        return self.result.timings.speedup_eager if self.result and self.result.timings else None

    @property
    def speedup_compiled(self) -> float | None:
        return self.result.timings.speedup_compiled if self.result and self.result.timings else None

    @property
    def roofline_ms(self) -> float | None:
        return self.result.timings.roofline_ms if self.result and self.result.timings else None

    @property
    def pct_roofline(self) -> float | None:
        return self.result.timings.pct_roofline if self.result and self.result.timings else None

    @property
    def copy_bandwidth_gbps(self) -> float | None:
        return self.result.timings.copy_bandwidth_gbps if self.result and self.result.timings else None

    @property
    def achieved_gbps(self) -> float | None:
        """Bytes a kernel must move (inputs read once, outputs written once) over its median time."""
        t = self.result.timings if self.result else None
        if t is None or not t.bytes_moved or self.median_ms is None:
            return None
        return t.bytes_moved / (self.median_ms * 1e-3) / 1e9

    @property
    def skipped_reason(self) -> str | None:
        return self.result.timings.skipped_reason if self.result and self.result.timings else None


class Step(BaseModel):
    """A candidate that became the best, and the best it replaced (None for the starting kernel)."""

    parent: CandidateRow | None
    child: CandidateRow

    @property
    def gain_pct(self) -> float | None:
        if self.parent is None or self.parent.median_ms is None or self.child.median_ms is None:
            return None
        return 100.0 * (1.0 - self.child.median_ms / self.parent.median_ms)


class ReplyRow(BaseModel):
    id: int
    model: str | None = None
    text: str | None = None
    usage: dict[str, Any] | None = None
    latency_s: float | None = None
    error: str | None = None


class PromptRow(BaseModel):
    id: int
    stage: str
    iteration: int
    text: str
    created_at: str
    replies: list[ReplyRow] = Field(default_factory=list)


class RunInfo(BaseModel):
    id: int
    problem: str
    started_at: str
    finished_at: str | None = None
    device: str | None = None
    gpu: str | None = None
    proposer: str | None = None
    llm: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    status: str | None = None
    note: str | None = None


class StageData(BaseModel):
    """The candidates and prompts of one stage of one run."""

    run_id: int
    name: str
    candidates: list[CandidateRow]
    prompts: list[PromptRow]
    steps: list[Step]


class RunDirData(BaseModel):
    path: Path
    runs: list[RunInfo]
    stages: list[StageData]
    start: CandidateRow | None = None
    best: CandidateRow | None = None
    final_source: str | None = Field(default=None, description="best_kernel.py, else the best's source.")
    notes: list[str] = Field(default_factory=list)

    @property
    def candidates(self) -> list[CandidateRow]:
        return [c for s in self.stages for c in s.candidates]

    @property
    def steps(self) -> list[Step]:
        return [st for s in self.stages for st in s.steps]

    @property
    def problem(self) -> str:
        return ", ".join(dict.fromkeys(r.problem for r in self.runs)) or self.path.name

    @property
    def timed(self) -> bool:
        return any(c.timed for c in self.candidates)

    @property
    def evaluations(self) -> int:
        return sum(1 for c in self.candidates if c.status and c.status not in NOT_EVALUATED)

    @property
    def status(self) -> str:
        return ", ".join(dict.fromkeys(r.status or "unknown" for r in self.runs)) or "empty"
