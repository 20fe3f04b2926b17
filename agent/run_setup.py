"""Setting up a run of one problem: stages, target GPU, LLM settings, proposers, loop settings.

`ncu-agent run` and each problem of a batch (agent/batch/job.py) build their run from the same
`RunOptions`, so a batch's problem runs exactly as `ncu-agent run` would with the same flags.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agent.llm.settings import LLMSettings
from agent.problem import ProblemSpec
from agent.prompt.gpus import GpuSpec
from agent.prompt.stages import Stage
from agent.proposers.base import Proposer

if TYPE_CHECKING:  # the loop imports the LLM client (openai): only a run that starts needs it
    from agent.loop import LoopSettings
    from agent.pipeline import PipelineOutcome


class RunSetupError(ValueError):
    """Options that cannot make a run (unknown stage or GPU, bad LLM settings, unknown strategy)."""


class RunOptions(BaseModel):
    """The flags of `ncu-agent run` that shape a run (a batch stores them in batch.json)."""

    stages: list[str] | None = Field(default=None, description="None: the default pipeline.")
    gpu: str | None = Field(default=None, description="Target GPU for prompts; None: the detected one.")
    metric_set: str | None = Field(default=None, description="ncu metric set; None: each stage's.")
    profile: bool = True
    search: str = "coordinate"
    eval_timeout: float | None = None
    max_iterations: int | None = None
    min_gain: float = 0.01
    no_gain_tries: int = 16
    roofline_target: float = 90.0
    llm: bool = False
    llm_config: Path | None = None
    llm_overrides: dict[str, Any] = Field(
        default_factory=dict, description="LLM settings given as flags (None values: not given)."
    )

    @classmethod
    def from_flags(
        cls, *, stages: str | None, llm_config: Path | None, no_cache: bool, **flags: Any
    ) -> RunOptions:
        """Options from command-line flags: `--stages a,b`, the LLM flags (`LLM_FLAGS`), the rest as is."""
        llm = {LLM_FLAGS[k]: flags.pop(k) for k in list(flags) if k in LLM_FLAGS}
        return cls(
            stages=[s.strip() for s in stages.split(",") if s.strip()] if stages else None,
            llm_config=llm_config,
            llm_overrides={**llm, "use_cache": False if no_cache else None},
            **flags,
        )


# Command-line flag -> LLMSettings field, for the flags `run` and `batch` share.
LLM_FLAGS = {
    "model": "model",
    "base_url": "base_url",
    "samples": "samples",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "timeout": "timeout_s",
    "max_requests": "max_requests",
    "max_tokens_total": "max_tokens_total",
}


@dataclass
class RunPlan:
    options: RunOptions
    stages: list[Stage]
    target: GpuSpec
    gpu_note: str  # why the target is what it is, when it was not detected
    llm_settings: LLMSettings

    @property
    def proposer_label(self) -> str:
        return "llm" if self.options.llm else f"search:{self.options.search}"

    def describe_proposer(self) -> tuple[str, str]:
        """(who proposes, what the LLM does) for banners and the run record."""
        s = self.llm_settings
        if self.options.llm:
            return "LLM", f"{s.describe()}: proposes the candidates"
        known = any(s.source_of(f) != "default" for f in ("api_key", "base_url", "model"))
        llm_line = (
            f"{s.describe()} (configured, not used without --llm)"
            if known
            else "none configured (OPENAI_API_KEY / OPENAI_BASE_URL unset): the built-in search proposes"
        )
        from agent.proposers.search import SearchProposer

        knobs = "; ".join(f"{s.name}: {k}" for s in self.stages if (k := SearchProposer.knobs(s)))
        return f"built-in search ({self.options.search}) over {knobs or 'nothing in these stages'}", llm_line


def plan_run(options: RunOptions) -> RunPlan:
    """Check the options; resolve stages, target GPU and LLM settings. RunSetupError says what is wrong."""
    from agent.llm.settings import LLMConfigError, load_llm_settings
    from agent.prompt.gpus import find_gpu, resolve_gpu
    from agent.prompt.stages import default_pipeline, load_stage
    from agent.proposers.search import SearchProposer

    try:
        names = options.stages or default_pipeline()
        stages = [load_stage(n) for n in names]
        target = resolve_gpu(options.gpu)
        gpu_note = "" if target is not None else " (no GPU detected and no --gpu: prompts target the H200)"
        llm_settings = load_llm_settings(options.llm_config, options.llm_overrides)
        if options.llm:
            llm_settings.require_model()
        if options.search not in SearchProposer.STRATEGIES:
            raise ValueError(
                f"--search {options.search!r}: choose one of {', '.join(SearchProposer.STRATEGIES)}"
            )
    except (KeyError, ValueError, LLMConfigError) as e:
        raise RunSetupError(str(e)) from None
    return RunPlan(options, stages, target or find_gpu("h200"), gpu_note, llm_settings)


def proposer_for(plan: RunPlan, llm_proposer: Proposer | None) -> Callable[[Stage], Proposer | str]:
    """The proposer of each stage: the LLM when the run uses one, else the search where it can."""
    from agent.proposers.search import SearchProposer

    def pick(stage: Stage) -> Proposer | str:
        if llm_proposer is not None:
            return llm_proposer
        if SearchProposer.can_search(stage):
            return SearchProposer(stage, plan.options.search)
        return (
            "its parameters are not searchable by the built-in search (docs/stages.md says why): "
            "it needs the LLM proposer (--llm)"
        )

    return pick


def loop_settings(plan: RunPlan, device: str, run_dir: Path, **hooks: Any) -> LoopSettings:
    """The loop's settings for the first stage (the pipeline swaps stages); `hooks`: evaluator, profiler."""
    from agent.loop import LoopSettings

    o, first = plan.options, plan.stages[0]
    return LoopSettings(
        stage=first,
        gpu=plan.target,
        device=device,
        run_dir=run_dir,
        metric_set=first.metric_set,
        profile=o.profile,
        timeout_s=o.eval_timeout,
        max_iterations=o.max_iterations,
        min_gain=o.min_gain,
        no_gain_tries=o.no_gain_tries,
        roofline_target=o.roofline_target,
        **hooks,
    )


def run_planned(
    plan: RunPlan,
    spec: ProblemSpec,
    start_source: str,
    llm_proposer: Proposer | None,
    store: Any,
    run_id: int,
    settings: LoopSettings,
    reporter: Any,
) -> PipelineOutcome:
    """The plan's stages over `start_source`, every evaluation in one pool of warm workers (closed at the
    end): what `ncu-agent run`, a batch's job and an experiment's unit each run."""
    from agent.evaluation.sandbox import WorkerPool
    from agent.pipeline import run_pipeline

    with WorkerPool() as pool:
        settings.pool = pool
        return run_pipeline(
            spec,
            start_source,
            plan.stages,
            proposer_for(plan, llm_proposer),
            store,
            run_id,
            settings,
            reporter,
            plan.options.metric_set,
        )


def run_record(plan: RunPlan, problem: str, start: Path) -> dict[str, Any]:
    """The `settings` of the run's row in the store."""
    return {
        "stages": [s.name for s in plan.stages],
        "metric_set": plan.options.metric_set,
        "problem": problem,
        "start": str(start),
        "min_gain": plan.options.min_gain,
        "no_gain_tries": plan.options.no_gain_tries,
        "roofline_target": plan.options.roofline_target,
        "llm": plan.llm_settings.safe_dict() if plan.options.llm else None,
    }


def outcome_notes(outcome: PipelineOutcome) -> list[str]:
    """Skipped stages and each stage's notes, for the run's row and the terminal."""
    notes = [f"{name}: skipped ({why})" for name, o, why in outcome.stages if o is None]
    notes += [f"{name}: {n}" for name, o, _ in outcome.stages if o is not None for n in o.notes]
    return notes
