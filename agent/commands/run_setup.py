"""A run's plan: its stages, target GPU and LLM settings from the run options (`plan_run`), checked before
anything heavy is imported, and the LLM preflight (`check_llm`). agent/commands/run_problem.py runs a plan.

`ncu-agent run`, each problem of a batch (agent/batch/job.py) and each unit of an experiment
(agent/experiment/units.py) plan from the same `RunOptions`, so a batch's problem runs exactly as
`ncu-agent run` would with the same flags. A bad flag is refused here, before torch, the loop or the
pipeline load (the 1 s start-up of docs/measurements.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.config import RunOptions
from agent.prompt.gpus import TARGET_ENV, GpuSpec, find_gpu, resolve_gpu
from agent.prompt.stages import Stage, default_pipeline, load_stage
from agent.proposers.search import SearchProposer

if TYPE_CHECKING:
    from agent.llm.settings import LLMSettings

NEEDS_LLM = "no starting Triton kernel: a first version needs the LLM (--llm, the first stage)"


class RunSetupError(ValueError):
    """Options that cannot make a run (unknown stage or GPU, bad LLM settings, unknown strategy)."""


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
        knobs = "; ".join(f"{s.name}: {k}" for s in self.stages if (k := SearchProposer.knobs(s)))
        return f"built-in search ({self.options.search}) over {knobs or 'nothing in these stages'}", llm_line


def plan_run(options: RunOptions, api_key: str | None = None, *, has_kernel: bool = True) -> RunPlan:
    """Check the options; resolve stages, target GPU and LLM settings. RunSetupError says what is wrong.

    `has_kernel=False` (a problem with no starting kernel): the run needs the LLM, and starts with a stage
    that writes a first version from the reference (`first`), put in front of named stages that lack one.
    """
    try:
        if not has_kernel and not options.llm:
            raise ValueError(NEEDS_LLM)
        names = options.stages or default_pipeline(has_kernel)
        stages = [load_stage(n) for n in names]
        if not has_kernel and stages[0].starts_from != "reference":
            stages.insert(0, load_stage(default_pipeline(has_kernel=False)[0]))
        target = resolve_gpu(options.gpu)
        gpu_note = "" if target is not None else " (no GPU detected and no --gpu: prompts target the H200)"
        # imported once the stages and the GPU are known to be good (pydantic-settings, ~0.1 s)
        from agent.llm.settings import load_llm_settings

        llm_settings = load_llm_settings(options.llm_config, options.llm_overrides, api_key=api_key)
        if options.llm:
            llm_settings.require_endpoint()  # the model may still come from the preflight
        if options.search not in SearchProposer.STRATEGIES:
            raise ValueError(
                f"--search {options.search!r}: choose one of {', '.join(SearchProposer.STRATEGIES)}"
            )
    except (KeyError, ValueError) as e:  # LLMConfigError is a ValueError
        raise RunSetupError(str(e)) from None
    target = target or find_gpu("h200")
    # CPU workers answer Triton's device queries with this GPU's table (agent/evaluation/interpreter_shims.py)
    os.environ[TARGET_ENV] = target.name
    return RunPlan(options, stages, target, gpu_note, llm_settings)


def check_llm(plan: RunPlan, notify: Callable[[str], None] | None = None) -> str | None:
    """The preflight of a run that uses the LLM (endpoint, key, model: agent/llm/preflight.py); the model
    it found is the plan's from then on. Returns what was checked, for the console; raises EndpointFailed
    (the endpoint refused) or RunSetupError (nothing to ask with)."""
    if not plan.options.llm:
        return None
    from agent.llm.preflight import preflight
    from agent.llm.settings import LLMConfigError

    try:
        found = preflight(plan.llm_settings, notify)
    except LLMConfigError as e:
        raise RunSetupError(str(e)) from None
    if plan.llm_settings.model != found.model:
        sources = plan.llm_settings._sources
        plan.llm_settings.model = found.model
        plan.llm_settings._sources = {**sources, "model": "the endpoint's only model"}
    return found.note
