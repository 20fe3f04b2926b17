"""A pipeline: stages one after another, each starting from the previous stage's best kernel.

Each stage gets the proposer that can serve it: the LLM when the run uses one, else the built-in search
where the stage's parameters are searchable; a stage nobody can serve is skipped, and the run says why.
`from_stage` resumes a run directory: the stage before it left `best_kernel.<stage>.py` there. A stage
that starts from the reference (`first`) at the head of the stages writes a first version from the PyTorch
reference (agent/start/first.py); anywhere else it is given the previous stage's best like any stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent.loop import Best, LoopOutcome, LoopSettings, Reporter, run_stage
from agent.prompt.render import HistoryEntry
from agent.prompt.stages import Stage
from agent.proposers.base import Proposer
from agent.records import ProblemSpec
from agent.start.first import run_first
from agent.store import Store


class PipelineError(ValueError):
    """The stages asked for cannot run as a pipeline (unknown stage, nothing to resume from...)."""


@dataclass
class PipelineOutcome:
    stages: list[tuple[str, LoopOutcome | None, str]] = field(default_factory=list)  # (stage, outcome, note)

    @property
    def first(self) -> LoopOutcome | None:
        return next((o for _, o, _ in self.stages if o is not None), None)

    @property
    def last(self) -> LoopOutcome | None:
        return next((o for _, o, _ in reversed(self.stages) if o is not None), None)


def resume_point(
    run_dir: Path, stages: list[Stage], from_stage: str | None
) -> tuple[list[Stage], Path | None]:
    """The stages left to run and the kernel to start them from (None: the problem's starting kernel)."""
    if from_stage is None:
        return stages, None
    names = [s.name for s in stages]
    if from_stage not in names:
        raise PipelineError(f"--from-stage {from_stage!r} is not in the pipeline ({', '.join(names)})")
    i = names.index(from_stage)
    for earlier in reversed(names[:i]):
        path = run_dir / f"best_kernel.{earlier}.py"
        if path.exists():
            return stages[i:], path
    return stages[i:], None


def run_pipeline(
    problem: ProblemSpec,
    start_source: str,
    stages: list[Stage],
    proposer_for: Callable[[Stage], Proposer | str],
    store: Store,
    run_id: int,
    settings: LoopSettings,
    reporter: Reporter,
    metric_set_override: str | None = None,
) -> PipelineOutcome:
    """Run `stages` in order; `proposer_for(stage)` gives a proposer, or a reason the stage is skipped."""
    outcome = PipelineOutcome()
    previous: Best | None = None
    tried: set[str] = set()  # shared: a variant evaluated by one stage is not proposed again by the next
    history: list[HistoryEntry] = []  # shared: the next stage's prompts show what the earlier ones tried
    for stage in stages:
        proposer = proposer_for(stage)
        if isinstance(proposer, str):
            reporter.info(f"stage {stage.name}: skipped ({proposer})")
            outcome.stages.append((stage.name, None, proposer))
            continue
        reporter.info(f"stage {stage.name} ({stage.title}) with the {proposer.name} proposer")
        stage_settings = replace(settings, stage=stage, metric_set=metric_set_override or stage.metric_set)
        if stage.starts_from == "reference" and previous is None:
            result = run_first(problem, proposer, store, run_id, stage_settings, reporter, tried, history)
        else:
            result = run_stage(
                problem,
                start_source,
                proposer,
                store,
                run_id,
                stage_settings,
                reporter,
                previous,
                tried,
                history,
            )
        for note in proposer.notes:  # what the search could not vary, and why
            reporter.info(f"stage {stage.name}: {note}")
            result.notes.append(note)
        outcome.stages.append((stage.name, result, ""))
        previous = result.best
    return outcome
