"""The first stage: a first correct Triton version written from the PyTorch reference.

A problem with no starting kernel (a bare KernelBench file, or a folder without kernel.py) starts here
when the run has an LLM. Each iteration renders the stage's prompt with the reference where the current
code would be (with the [PROBLEM] block: input and output shapes and dtypes), evaluates every reply
through the same checks as any candidate, and sends each failure back for repair with its details. The
first iteration that yields a correct version ends the stage: its fastest correct version (on the CPU,
where nothing is timed, the first one) is profiled and becomes the start of the tuning stages.
"""

from __future__ import annotations

from agent.loop import (
    HISTORY_IN_PROMPT,
    Best,
    LoopOutcome,
    LoopSettings,
    Reporter,
    StageRun,
    StartingKernelRejected,
)
from agent.profiling.step import profile_step
from agent.prompt.render import HistoryEntry, PromptContext, render_prompt
from agent.proposers.base import ProposalContext, Proposer
from agent.records import EvalResult, ProblemSpec, Status
from agent.store import Store

REFERENCE_PARENT = EvalResult(status=Status.ACCEPTED, reason="the PyTorch reference")


class NoFirstVersion(StartingKernelRejected):
    """No reply of the first stage was correct within its budget: nothing to tune."""


def run_first(
    problem: ProblemSpec,
    proposer: Proposer,
    store: Store,
    run_id: int,
    settings: LoopSettings,
    reporter: Reporter,
    tried: set[str] | None = None,
    history: list[HistoryEntry] | None = None,
) -> LoopOutcome:
    """The stage's iterations until a correct version; NoFirstVersion when the budget ends without one."""
    sr = StageRun(problem, proposer, store, run_id, settings, reporter)
    if tried is not None:
        sr.tried = tried
    if history is not None:
        sr.history = history
    reference = problem.reference_path.read_text()
    stage = settings.stage.name
    budget = settings.policy.max_iterations or settings.stage.budget
    for iteration in range(1, budget + 1):
        prompt_text = render_prompt(
            PromptContext(
                gpu=settings.gpu,
                stage=settings.stage,
                code=reference,
                history=sr.history[-HISTORY_IN_PROMPT:],
                problem=sr.facts,
            )
        )
        ctx = ProposalContext(
            problem=problem,
            stage=stage,
            iteration=iteration,
            parent_id=None,
            parent_source=reference,
            parent_result=REFERENCE_PARENT,
            prompt_text=prompt_text,
            prompt_id=store.add_prompt(run_id, stage, iteration, prompt_text),
            tried_sources=sr.tried,
        )
        candidates = proposer.propose(ctx)
        sr._record_proposer_failures(ctx)
        if not candidates:
            reporter.info(f"iteration {iteration}: no new candidate from the {proposer.name} proposer")
            continue
        reporter.begin(f"iteration {iteration}", len(candidates))
        accepted = sr.evaluate_step(ctx, candidates, None)
        reporter.end()
        if accepted:
            return _chosen(sr, accepted, iteration)
    last = sr.history[-1] if sr.history else None
    raise NoFirstVersion(
        f"no correct first version in {budget} iterations ({sr.evaluations} evaluations)"
        + (f"; the last: {last.outcome}: {last.detail}" if last else "")
    )


def _chosen(sr: StageRun, accepted: list[tuple[int, str, EvalResult]], iteration: int) -> LoopOutcome:
    """The fastest correct version (the first where nothing is timed), profiled, as the stage's outcome."""

    def ms(item: tuple[int, str, EvalResult]) -> float:
        t = item[2].timings
        return t.candidate.median_ms if t and t.candidate else float("inf")

    cand_id, source, result = min(accepted, key=ms)  # min keeps the first of equals
    settings = sr.settings
    (profile,) = profile_step(sr.problem, [(cand_id, source, result)], settings, sr.store)
    best = Best(cand_id, source, result, profile)
    (settings.run_dir / f"best_kernel.{settings.stage.name}.py").write_text(source)
    (settings.run_dir / "best_kernel.py").write_text(source)
    outcome = LoopOutcome(run_id=sr.run_id, start=best, best=best, evaluations=sr.evaluations)
    outcome.notes.append(f"first correct version: #{cand_id} at iteration {iteration}")
    return outcome
