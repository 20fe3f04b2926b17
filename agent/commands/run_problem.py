"""Running one problem from its plan (agent/commands/run_setup.py): its proposers, its loop settings, and
`run_one`, the one path from a plan to a finished run, used by `ncu-agent run`, each problem of a batch
(agent/batch/job.py) and each unit of an experiment (agent/experiment/units.py).
"""

from __future__ import annotations

import os
import socket
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.commands.run_setup import RunPlan
from agent.config import LoopPolicy
from agent.evaluation.worker_pool import WorkerPool
from agent.loop import LoopHooks, LoopSettings, Reporter, StartingKernelRejected
from agent.pipeline import PipelineOutcome, run_pipeline
from agent.problem import ProblemSpec
from agent.prompt.stages import Stage
from agent.proposers.base import Proposer, proposer_class
from agent.proposers.search import SearchProposer
from agent.start.first import NoFirstVersion
from agent.store import Store

if TYPE_CHECKING:
    from agent.llm.client import ChatClient


def _llm_budget_errors() -> tuple[type[BaseException], ...]:
    from agent.llm.client import BudgetExhausted  # imports openai: only a run that starts needs it

    return (BudgetExhausted,)


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
