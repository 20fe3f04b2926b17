"""The optimization loop: read this file first.

One stage of one problem:

    evaluate the starting kernel -> profile it -> render the stage prompt (code + metrics + history)
    repeat until the stage's budget, until the proposer has nothing new, or until the LLM budget ends:
        proposer -> candidates -> stage constraints -> evaluate each (worker process), repair failures
        -> profile the accepted ones (one ncu process) -> keep the fastest correct one if it beats the
        best by more than noise -> render the next prompt from the best kernel and its new metrics

Everything is written to the run's store as it happens; the best kernel is written as a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import LoopPolicy
from agent.evaluation.evaluate import evaluate
from agent.profiling.step import ProfileOutcome, profile_step
from agent.prompt.facts import change_summary, problem_facts, standing
from agent.prompt.gpus import GpuSpec
from agent.prompt.render import HistoryEntry, PromptContext, render_prompt
from agent.prompt.stages import Stage
from agent.prompt.text import clip_sentences
from agent.proposers.base import ProposalContext, Proposer
from agent.records import Candidate, EvalResult, ProblemSpec, Status
from agent.source.stage_rules import check_constraints, violations_text
from agent.store import Store

if TYPE_CHECKING:
    from agent.evaluation.worker_pool import WorkerPool

HISTORY_IN_PROMPT = 12  # most recent attempts shown to the proposer
HISTORY_DETAIL_CHARS = 600  # of an attempt's reason, cut at a sentence end (two rule messages fit)
REPAIRABLE = {Status.COMPILE_ERROR, Status.CRASHED, Status.INCORRECT, Status.CONSTRAINT}


class Reporter(Protocol):
    def info(self, message: str) -> None: ...
    def begin(self, what: str, total: int) -> None: ...
    def candidate(self, cand_id: int, label: str, result: EvalResult, best_ms: float | None) -> None: ...
    def end(self) -> None: ...


@dataclass
class LoopHooks:
    """Plumbing, not policy: what evaluates a candidate and what profiles a step (None:
    agent.evaluation.evaluate.evaluate and agent.profiling.ncu.profile_candidates; a batch wraps them with
    its GPU lock, its budgets and the reuse of a killed job's records, agent/batch/hooks.py), and the warm
    worker processes kept between candidates (None: one process per candidate)."""

    evaluator: Callable[..., EvalResult] | None = None
    profiler: Callable[..., list[Any]] | None = None
    pool: WorkerPool | None = None


@dataclass
class LoopSettings:
    """One stage's run: where and for what it runs, its policy, its hooks."""

    stage: Stage
    gpu: GpuSpec
    device: str  # "cuda" or "cpu"
    run_dir: Path
    metric_set: str
    policy: LoopPolicy = field(default_factory=LoopPolicy)
    hooks: LoopHooks = field(default_factory=LoopHooks)

    def evaluate(self, problem: ProblemSpec, source: str) -> EvalResult:
        """One candidate, through the evaluator hook (a batch's lock and budget) and the pool if any."""
        extra = {"pool": self.hooks.pool} if self.hooks.pool is not None else {}
        return (self.hooks.evaluator or evaluate)(
            problem, source, self.device, seeds=self.policy.seeds, timeout_s=self.policy.eval_timeout, **extra
        )


@dataclass
class Best:
    cand_id: int
    source: str
    result: EvalResult
    profile: ProfileOutcome

    @property
    def median_ms(self) -> float | None:
        t = self.result.timings
        return t.candidate.median_ms if t and t.candidate else None


@dataclass
class LoopOutcome:
    run_id: int
    start: Best
    best: Best
    evaluations: int
    stopped_by: str = "done"
    notes: list[str] = field(default_factory=list)


class StartingKernelRejected(Exception):
    """The problem's own starting kernel failed its check: nothing to optimize from."""


def beats(new: EvalResult, best: Best, min_gain: float) -> bool:
    """Faster by more than noise: at least `min_gain`, and more than both runs' spreads (IQR) together."""
    if not new.accepted or best.median_ms is None or new.timings is None or new.timings.candidate is None:
        return False
    old_t = best.result.timings.candidate if best.result.timings else None
    spread = (new.timings.candidate.iqr_ms + (old_t.iqr_ms if old_t else 0.0)) / best.median_ms
    return new.timings.candidate.median_ms < best.median_ms * (1.0 - max(min_gain, spread))


class StageRun:
    """The state of one stage: the store rows it writes, the best so far, what was tried."""

    def __init__(
        self,
        problem: ProblemSpec,
        proposer: Proposer,
        store: Store,
        run_id: int,
        settings: LoopSettings,
        reporter: Reporter,
    ):
        self.problem, self.proposer, self.store, self.run_id = problem, proposer, store, run_id
        self.settings, self.reporter = settings, reporter
        self.history: list[HistoryEntry] = []  # shared across a pipeline's stages (run_stage's `history`)
        self.tried: set[str] = set()
        self.evaluations = 0
        self.last_prompt = ""
        self.facts = problem_facts(problem, small=settings.device == "cpu")

    def prompt(self, best: Best) -> str:
        self.last_prompt = render_prompt(
            PromptContext(
                gpu=self.settings.gpu,
                stage=self.settings.stage,
                code=best.source,
                metrics=best.profile.metrics,
                metrics_unavailable_reason=best.profile.unavailable_reason,
                ncu_rules=best.profile.rules,
                history=self.history[-HISTORY_IN_PROMPT:],
                problem=self.facts,
                standing=standing(best.result, self.settings.device) if self.facts else None,
            )
        )
        return self.last_prompt

    def record(
        self,
        iteration: int,
        cand: Candidate,
        result: EvalResult,
        best_ms: float | None,
        parent_source: str = "",
    ) -> int:
        cand_id = self.store.add_candidate(self.run_id, iteration, cand)
        self.store.add_evaluation(cand_id, result)
        self.reporter.candidate(cand_id, cand.label, result, best_ms)
        t = result.timings
        self.history.append(
            HistoryEntry(
                label=cand.label or f"candidate {cand_id}",
                outcome=result.status.value,
                detail=clip_sentences(result.reason, HISTORY_DETAIL_CHARS),
                time_ms=t.candidate.median_ms if t and t.candidate else None,
                iteration=iteration,
                stage=cand.stage,
                change=change_summary(parent_source, cand.source),
            )
        )
        return cand_id

    def check(self, cand: Candidate, parent: ProposalContext) -> EvalResult:
        """Stage rules first (no GPU time for a candidate that breaks them), then the worker."""
        self.tried.add(cand.source)
        exempt = self.proposer.exempt_rules
        violations = [
            v
            for v in check_constraints(
                self.settings.stage,
                parent.parent_source,
                cand.source,
                parent_launched=parent.parent_result.kernels_launched or None,
                parent_chosen=parent.parent_result.chosen_configs or None,
            )
            if v.rule.split(".")[-1] not in exempt
        ]
        if violations:
            return EvalResult(status=Status.CONSTRAINT, reason=violations_text(violations))
        self.evaluations += 1
        return self.settings.evaluate(self.problem, cand.source)

    def evaluate_step(
        self, ctx: ProposalContext, candidates: list[Candidate], best_ms: float | None
    ) -> list[tuple[int, str, EvalResult]]:
        accepted = []
        queue = list(candidates)
        while queue:
            cand = queue.pop(0)
            result = self.check(cand, ctx)
            cand_id = self.record(ctx.iteration, cand, result, best_ms, ctx.parent_source)
            if result.accepted:
                accepted.append((cand_id, cand.source, result))
            elif result.status in REPAIRABLE:
                fixed = self.proposer.repair(ctx, cand.source, result.reason or result.log_tail)
                self._record_proposer_failures(ctx)
                if fixed is not None and fixed.source not in self.tried:
                    queue.insert(0, fixed.model_copy(update={"parent_id": cand_id}))
        return accepted

    def _record_proposer_failures(self, ctx: ProposalContext) -> list[str]:
        """Record what the proposer rejected; the reasons, for saying why a step gave nothing."""
        reasons = []
        for cand, result in self.proposer.rejected(ctx):
            self.record(ctx.iteration, cand, result, None, ctx.parent_source)
            reasons.append(result.reason)
        for error in self.proposer.errors():
            self.reporter.info(f"endpoint error: {error}")
        return reasons


def run_stage(
    problem: ProblemSpec,
    start_source: str,
    proposer: Proposer,
    store: Store,
    run_id: int,
    settings: LoopSettings,
    reporter: Reporter,
    start: Best | None = None,
    tried: set[str] | None = None,
    history: list[HistoryEntry] | None = None,
) -> LoopOutcome:
    """One stage from `start_source` (or from `start`, the previous stage's best, already measured).
    `tried`: sources evaluated before (earlier stages of a pipeline), not proposed again; `history`: their
    attempts, which the prompts go on showing."""
    stage = settings.stage.name
    sr = StageRun(problem, proposer, store, run_id, settings, reporter)
    if tried is not None:
        sr.tried = tried
    if history is not None:
        sr.history = history
    if start is not None:  # measured by the previous stage; profiled again with this stage's metric set
        sr.tried.add(start.source)
        if _close_enough(start, settings):  # the stage will not search: the previous profile will do
            return _iterate(sr, start)
        (profile,) = profile_step(problem, [(start.cand_id, start.source, start.result)], settings, store)
        return _iterate(sr, Best(start.cand_id, start.source, start.result, profile))

    reporter.begin("starting kernel", 1)
    start_cand = Candidate(source=start_source, proposer="start", stage=stage, label="starting kernel")
    sr.tried.add(start_source)
    sr.evaluations += 1
    start_result = settings.evaluate(problem, start_source)
    start_id = sr.record(0, start_cand, start_result, None)
    reporter.end()
    if not start_result.accepted:
        raise StartingKernelRejected(f"{start_result.status.value}: {start_result.reason}")
    (start_profile,) = profile_step(problem, [(start_id, start_source, start_result)], settings, store)
    return _iterate(sr, Best(start_id, start_source, start_result, start_profile))


def _pct_roofline(best: Best) -> float | None:
    return best.result.timings.pct_roofline if best.result.timings else None


def _close_enough(best: Best, settings: LoopSettings) -> bool:
    pct = _pct_roofline(best)
    return pct is not None and pct >= settings.policy.roofline_target


def _iterate(sr: StageRun, start: Best) -> LoopOutcome:
    from agent.llm.client import BudgetExhausted  # imports openai: only a stage that runs needs it

    proposer, settings = sr.proposer, sr.settings
    best = start
    outcome = LoopOutcome(run_id=sr.run_id, start=start, best=best, evaluations=0)
    budget = _search_budget(start, settings, outcome)
    iteration, empty_steps, tries_without_gain = 0, 0, 0
    try:
        while iteration < budget:
            iteration += 1
            ctx = _context(sr, best, iteration)
            proposer.observe_profile(best.profile.metrics)
            candidates = proposer.propose(ctx)
            rejected = sr._record_proposer_failures(ctx)
            if not candidates and not rejected and proposer.errors():
                # The endpoint failed, not the model: the step is asked again and costs no iteration (the
                # proposer ends the run after max_endpoint_errors such failures in a row).
                iteration -= 1
                continue
            if not candidates:
                empty_steps += 1
                if _empty_step_ends_stage(sr, outcome, iteration, budget, empty_steps, rejected):
                    break
                continue
            empty_steps = 0
            best, improved = _evaluate_and_profile(sr, ctx, candidates, best)
            tries_without_gain = 0 if improved else tries_without_gain + len(candidates)
            if note := _stop_note(best, tries_without_gain, settings):
                outcome.notes.append(note)
                break
    except BudgetExhausted as e:
        outcome.stopped_by = "budget"
        outcome.notes.append(f"a budget ended the stage: {e}")
    _keep_best(sr, best, iteration)
    outcome.best, outcome.evaluations = best, sr.evaluations
    return outcome


def _search_budget(start: Best, settings: LoopSettings, outcome: LoopOutcome) -> int:
    """The stage's iterations: none when the kernel it starts from is at the roofline target already."""
    if _close_enough(start, settings):  # no try is spent
        outcome.notes.append(
            f"stage not searched: the kernel it starts from is at {_pct_roofline(start):.1f}% of the "
            f"roofline (target {settings.policy.roofline_target:g}%)"
        )
        return 0
    return settings.policy.max_iterations or settings.stage.budget


def _empty_step_ends_stage(
    sr: StageRun, outcome: LoopOutcome, iteration: int, budget: int, empty_steps: int, rejected: list[str]
) -> bool:
    """A step that gave no new candidate, said; the stage ends when the proposer has no more to give or
    `patience` steps in a row were empty."""
    proposer, reporter = sr.proposer, sr.reporter
    why = f" (last: {rejected[-1][:200]})" if rejected else ""
    reporter.info(f"iteration {iteration}: no new candidate from the {proposer.name} proposer{why}")
    if proposer.ends_when_empty or empty_steps >= sr.settings.policy.patience:
        outcome.notes.append(
            f"stage ended at iteration {iteration} of {budget}: {empty_steps} step"
            f"{'s' if empty_steps > 1 else ''} in a row gave no new candidate{why}"
        )
        reporter.info(f"stage {sr.settings.stage.name}: {outcome.notes[-1]}")
        return True
    return False


def _evaluate_and_profile(
    sr: StageRun, ctx: ProposalContext, candidates: list[Candidate], best: Best
) -> tuple[Best, bool]:
    """The step's candidates evaluated and the accepted ones profiled; the best kernel after the step, and
    whether it is a new one."""
    sr.reporter.begin(f"iteration {ctx.iteration}", len(candidates))
    accepted = sr.evaluate_step(ctx, candidates, best.median_ms)
    sr.reporter.end()
    improved = False
    for (cand_id, source, result), prof in zip(
        accepted, profile_step(sr.problem, accepted, sr.settings, sr.store), strict=True
    ):
        if beats(result, best, sr.settings.policy.min_gain):
            best, improved = Best(cand_id, source, result, prof), True
    return best, improved


def _stop_note(best: Best, tries_without_gain: int, settings: LoopSettings) -> str | None:
    """Why the stage ends after a step, if it does: the best kernel reached the roofline target, or too
    many tries in a row gave no gain."""
    if _close_enough(best, settings):
        return f"stage ended: the best kernel is at {_pct_roofline(best):.1f}% of the roofline"
    if tries_without_gain >= settings.policy.no_gain_tries:
        return (
            f"stage ended: {tries_without_gain} tries in a row without a gain above "
            f"{settings.policy.min_gain:.0%}"
        )
    return None


def _context(sr: StageRun, best: Best, iteration: int) -> ProposalContext:
    """What the proposer is asked with at `iteration`: the prompt from the best kernel so far, recorded."""
    stage = sr.settings.stage.name
    prompt_text = sr.prompt(best)
    return ProposalContext(
        problem=sr.problem,
        stage=stage,
        iteration=iteration,
        parent_id=best.cand_id,
        parent_source=best.source,
        parent_result=best.result,
        prompt_text=prompt_text,
        prompt_id=sr.store.add_prompt(sr.run_id, stage, iteration, prompt_text),
        tried_sources=sr.tried,
    )


def _keep_best(sr: StageRun, best: Best, iteration: int) -> None:
    """The next stage (or the next turn) starts from the best kernel and its metrics: its prompt recorded
    when it changed, and best_kernel.py (and best_kernel.STAGE.py) written."""
    stage = sr.settings.stage.name
    final_prompt = sr.prompt(best)
    if final_prompt != sr.last_prompt:
        sr.store.add_prompt(sr.run_id, stage, iteration + 1, final_prompt)
    (sr.settings.run_dir / f"best_kernel.{stage}.py").write_text(best.source)
    (sr.settings.run_dir / "best_kernel.py").write_text(best.source)
