"""Running one problem: its plan (stages, target GPU, LLM settings), its proposers, its loop settings, and
`run_one`, the one path from a plan to a finished run.

`ncu-agent run`, each problem of a batch (agent/batch/job.py) and each unit of an experiment
(agent/experiment/units.py) run through `run_one` from the same `RunOptions`, so a batch's problem
runs exactly as `ncu-agent run` would with the same flags.
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import LoopPolicy, RunOptions
from agent.evaluation.worker_pool import WorkerPool
from agent.llm.settings import LLMConfigError, LLMSettings, load_llm_settings
from agent.loop import LoopHooks, LoopSettings, Reporter, StartingKernelRejected
from agent.pipeline import PipelineOutcome, run_pipeline
from agent.problem import ProblemSpec
from agent.prompt.gpus import TARGET_ENV, GpuSpec, find_gpu, resolve_gpu
from agent.prompt.stages import Stage, default_pipeline, load_stage
from agent.proposers.base import Proposer, proposer_class
from agent.proposers.search import SearchProposer
from agent.start.first import NoFirstVersion
from agent.store import Store

if TYPE_CHECKING:
    from agent.llm.client import ChatClient


def _llm_budget_errors() -> tuple[type[BaseException], ...]:
    from agent.llm.client import BudgetExhausted  # imports openai: only a run that starts needs it

    return (BudgetExhausted,)


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
        llm_settings = load_llm_settings(options.llm_config, options.llm_overrides, api_key=api_key)
        if options.llm:
            llm_settings.require_endpoint()  # the model may still come from the preflight
        if options.search not in SearchProposer.STRATEGIES:
            raise ValueError(
                f"--search {options.search!r}: choose one of {', '.join(SearchProposer.STRATEGIES)}"
            )
    except (KeyError, ValueError, LLMConfigError) as e:
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

    try:
        found = preflight(plan.llm_settings, notify)
    except LLMConfigError as e:
        raise RunSetupError(str(e)) from None
    if plan.llm_settings.model != found.model:
        sources = plan.llm_settings._sources
        plan.llm_settings.model = found.model
        plan.llm_settings._sources = {**sources, "model": "the endpoint's only model"}
    return found.note


def proposer_for(plan: RunPlan, llm_proposer: Proposer | None) -> Callable[[Stage], Proposer | str]:
    """The proposer of each stage: the LLM when the run uses one, else the search where it can."""
    search = proposer_class("search")

    def pick(stage: Stage) -> Proposer | str:
        if llm_proposer is not None:
            return llm_proposer
        if SearchProposer.can_search(stage):
            return search(stage, plan.options.search)  # type: ignore[call-arg]
        return (
            "its parameters are not searchable by the built-in search (docs/stages.md says why): "
            "it needs the LLM proposer (--llm)"
        )

    return pick


def loop_settings(plan: RunPlan, device: str, run_dir: Path, hooks: LoopHooks) -> LoopSettings:
    """The loop's settings for the first stage (the pipeline swaps stages)."""
    first = plan.stages[0]
    policy = LoopPolicy.model_validate(plan.options.model_dump(include=set(LoopPolicy.model_fields)))
    return LoopSettings(first, plan.target, device, run_dir, first.metric_set, policy, hooks)


NEEDS_LLM = "no starting Triton kernel: a first version needs the LLM (--llm, the first stage)"
NOTHING_RAN = "no stage ran: nothing could propose candidates"
REJECTED = "the starting kernel was rejected"


@dataclass
class ProblemRun:
    """One problem to run through the plan's stages, and what surrounds the loop where it runs."""

    plan: RunPlan
    spec: ProblemSpec
    start: Path | None  # the kernel the first stage starts from; None: the first stage writes one
    store: Store
    run_dir: Path  # where best_kernel.py and profiles go
    device: str
    reporter: Reporter
    problem: str  # the problem as the user named it, for the run's record
    record: dict[str, Any] = field(default_factory=dict)  # more fields of the run's record
    run_id: int | None = None  # continue this run (a killed batch job or `run --resume`), else start one
    # The evaluator and profiler hooks, made once the run's id is known (a batch's lock and budget).
    hooks: Callable[[int], LoopHooks] = lambda run_id: LoopHooks()
    client: ChatClient | None = None  # the LLM proposer's client (None: one from the plan's settings)
    # Exceptions that end the run as "budget" with its best so far (an LLM budget; a batch's time limit).
    budget_errors: tuple[type[BaseException], ...] = field(default_factory=_llm_budget_errors)
    # Called with the end before the run's row is finished (a batch writes its outcome file first).
    before_finish: Callable[[RunEnd], None] = lambda end: None


@dataclass
class RunEnd:
    """How a run ended: status "done", "budget", "failed" (the starting kernel was rejected,
    or the LLM endpoint cannot serve the run) or "error"."""

    run_id: int
    status: str
    reason: str
    outcome: PipelineOutcome | None = None


def run_one(job: ProblemRun) -> RunEnd:
    """Start (or continue) the run, run the plan's stages over the start kernel with every evaluation in
    one pool of warm workers, and finish the run: the one path of `ncu-agent run`, a batch's job and an
    experiment's unit. An interrupt finishes the run as "interrupted" and propagates; any other error
    ends it as "error" (the traceback goes to the reporter)."""
    from agent.llm.client import EndpointFailed  # openai: loaded when a run starts, not for its flags

    plan, store = job.plan, job.store
    run_id = job.run_id
    if run_id is None:
        record = {**run_record(plan, job.problem, job.start), **job.record}
        llm_line = plan.describe_proposer()[1]
        run_id = store.start_run(
            job.spec.name, job.device, plan.target.name, plan.proposer_label, llm_line, record
        )
    end = RunEnd(run_id, "error", "")
    llm = (
        proposer_class("llm")(plan.llm_settings, store, client=job.client, notify=job.reporter.info)  # type: ignore[call-arg]
        if plan.options.llm
        else None
    )
    try:
        with WorkerPool() as pool:
            settings = loop_settings(plan, job.device, job.run_dir, replace(job.hooks(run_id), pool=pool))
            end.outcome = run_pipeline(
                job.spec,
                (job.start or job.spec.reference_path).read_text(),
                plan.stages,
                proposer_for(plan, llm),
                store,
                run_id,
                settings,
                job.reporter,
                plan.options.metric_set,
            )
        last = end.outcome.last
        end.status = "budget" if last is not None and last.stopped_by == "budget" else "done"
        end.reason = "; ".join(outcome_notes(end.outcome)) if last is not None else NOTHING_RAN
    except NoFirstVersion as e:
        end.status, end.reason = "failed", str(e)
    except StartingKernelRejected as e:
        end.status, end.reason = "failed", f"{REJECTED}: {e}"
    except EndpointFailed as e:  # what no retry fixes: the endpoint's own words
        end.status, end.reason = "failed", str(e)
    except job.budget_errors as e:
        end.status, end.reason = "budget", str(e)
    except KeyboardInterrupt:
        store.finish_run(run_id, "interrupted")
        raise
    except Exception as e:  # a bug or a broken environment: recorded, the caller decides what follows
        job.reporter.info(traceback.format_exc())
        end.reason = f"{type(e).__name__}: {e}"
    finally:
        if llm is not None:
            llm.close()
    job.before_finish(end)
    store.finish_run(run_id, end.status, end.reason)
    return end


def run_record(plan: RunPlan, problem: str, start: Path | None) -> dict[str, Any]:
    """The `settings` of the run's row in the store."""
    from agent.evaluation.confine import isolation

    return {
        "stages": [s.name for s in plan.stages],
        "metric_set": plan.options.metric_set,
        "problem": problem,
        "start": str(start) if start else None,  # None: the first stage writes one from the reference
        "min_gain": plan.options.min_gain,
        "no_gain_tries": plan.options.no_gain_tries,
        "roofline_target": plan.options.roofline_target,
        "llm": plan.llm_settings.safe_dict() if plan.options.llm else None,
        "isolation": isolation().label,
        # What `ncu-agent run --resume` needs to continue the run as it was started
        # (agent/commands/resume.py).
        "options": plan.options.model_dump(mode="json"),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }


def outcome_notes(outcome: PipelineOutcome) -> list[str]:
    """Skipped stages and each stage's notes, for the run's row and the terminal."""
    notes = [f"{name}: skipped ({why})" for name, o, why in outcome.stages if o is None]
    notes += [f"{name}: {n}" for name, o, _ in outcome.stages if o is not None for n in o.notes]
    return notes
