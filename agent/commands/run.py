"""The body of `ncu-agent run` (its flags are in agent/cli.py): a new run or one to resume, its plan
checked before torch loads, the banner, the store (a replay store when resuming), the run itself with what
Ctrl-C leaves, and the summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.commands.checks import checked, fail, load_spec, output_dir
from agent.commands.console import console, status
from agent.config import RunOptions
from agent.evaluation.torch_policy import merged

# The modules below import torch, triton or openai: the run imports them after checking its flags.
if TYPE_CHECKING:
    from agent.commands.resume import Resumable
    from agent.commands.run_setup import RunPlan
    from agent.pipeline import PipelineOutcome
    from agent.records import EvalResult, ProblemSpec
    from agent.store import Store


def eval_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RichReporter:
    """Progress bars and one line per evaluated candidate."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

    def info(self, message: str) -> None:
        console.print(f"[dim]{escape(message)}[/dim]")

    def begin(self, what: str, total: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(what, total=total)

    def candidate(self, cand_id: int, label: str, result: EvalResult, best_ms: float | None) -> None:
        t = result.timings
        timing = f"{t.candidate.median_ms:.3f} ms" if t and t.candidate else "not timed"
        colour = "green" if result.accepted else "red"
        reason = "" if result.accepted else f": {escape(result.reason[:100])}"
        console.print(
            f"  #{cand_id} {escape(label)}: [{colour}]{result.status.value}[/{colour}]{reason} ({timing}, "
            f"{result.wall_s:.1f} s)"
        )
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)

    def end(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@dataclass
class RunRequest:
    """What the command line asked for: a new run of `problem`, or the run `found` to resume."""

    problem: str
    options: RunOptions
    run_dir: Path | None
    found: Resumable | None = None


@dataclass
class PreparedRun:
    """A run checked and ready: its problem, plan, records' folder and first kernel."""

    spec: ProblemSpec
    plan: RunPlan
    run_dir: Path
    resume_from: Path | None
    llm_note: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def run_request(
    problem: str | None, resume: Path | None, options: RunOptions, run_dir: Path | None
) -> RunRequest:
    """A new run of PROBLEM, or the run of `--resume RUN_DIR` with the options it was started with."""
    from agent.commands.resume import ResumeError, find_resumable

    if resume is None:
        if problem is None:
            raise fail("give the PROBLEM to run, or --resume RUN_DIR")
        return RunRequest(problem, options, run_dir)
    if problem is not None:
        raise fail("give either PROBLEM (a new run) or --resume RUN_DIR, not both")
    try:
        found = find_resumable(resume)
    except ResumeError as e:
        raise fail(str(e)) from None
    return RunRequest(found.problem, found.options, resume, found)


def prepare_run(
    req: RunRequest, from_stage: str | None, start: Path | None, small_shapes: str | None
) -> PreparedRun:
    """The flags checked before the problem's reference loads torch, then the problem, the plan and the
    LLM's preflight; every refusal is an `error: ...`."""
    from agent.commands.run_setup import RunSetupError, check_llm, plan_run

    try:
        # the flags alone, refused before the problem's reference loads torch
        flags_plan = plan_run(req.options)
    except RunSetupError as e:
        raise fail(str(e)) from None
    from agent.llm.client import EndpointFailed
    from agent.pipeline import PipelineError, resume_point

    spec = load_spec(req.problem, small_shapes)
    spec.allow_torch = merged(spec.allow_torch, req.options.allow_torch)
    if start is not None:
        spec.kernel_path = start.resolve()
    run_dir = req.run_dir or Path("runs") / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"
    resume_from = None
    try:
        # without a starting kernel the plan puts the first stage in front: planned again for that
        plan = flags_plan if spec.kernel_path is not None else plan_run(req.options, has_kernel=False)
        if req.found is None:
            plan.stages, resume_from = resume_point(run_dir, plan.stages, from_stage)
        llm_note = check_llm(plan, status)
    except (RunSetupError, PipelineError) as e:
        raise fail(str(e)) from None
    except EndpointFailed as e:
        raise fail(str(e), 1) from None
    checked(output_dir, run_dir, "--run-dir")
    return PreparedRun(spec, plan, run_dir, resume_from, llm_note)


def banner(
    spec_name: str,
    stage_name: str,
    target_name: str,
    gpu_note: str,
    device: str,
    proposer: str,
    llm: str | None,
) -> None:
    console.print(f"[bold]ncu-agent[/bold] {spec_name}: stage [bold]{stage_name}[/bold]")
    where = "the GPU" if device == "cuda" else "the CPU (no GPU: Triton interpreter, correctness only)"
    console.print(f"  GPU: {target_name}{gpu_note}; evaluation on {where}")
    console.print(f"  proposer: {proposer}")
    console.print(f"  LLM: {escape(str(llm))}")
    from agent.evaluation.confine import isolation

    console.print(f"  isolation: {isolation().label}")


def open_store(req: RunRequest, run: PreparedRun) -> tuple[Store, Path | None]:
    """The run's store and start kernel: a replay of the recorded run when resuming (what it recorded is
    not run again; its hooks and row go to `run.extra`), else a new store."""
    from agent.store import Store

    found = req.found
    if found is None:
        return Store.open_dir(run.run_dir), run.resume_from or run.spec.kernel_path
    from agent.batch.hooks import replay_hooks
    from agent.batch.resume import ReplayStore

    store: Store = ReplayStore(run.run_dir / Store.FILENAME, found.run_id)
    run.extra = {"hooks": replay_hooks(store), "run_id": found.run_id}
    console.print(f"  continuing run #{found.run_id}: what it recorded is replayed, not run again")
    return store, found.start


def run_command(
    problem: str | None,
    resume: Path | None,
    from_stage: str | None,
    run_dir: Path | None,
    start: Path | None,
    small_shapes: str | None,
    options: RunOptions,
) -> None:
    """`ncu-agent run` after its flags: plan, banner, the run, and its summary (or what Ctrl-C left)."""
    req = run_request(problem, resume, options, run_dir)
    run = prepare_run(req, from_stage, start, small_shapes)
    # The run's modules (the loop, the pipeline, torch) load once its flags are known to be good.
    from agent.commands.run_problem import ProblemRun, run_one
    from agent.problem import describe_shapes
    from agent.store import Store

    spec, plan = run.spec, run.plan
    device = eval_device()
    proposer_line, llm_line = plan.describe_proposer()
    stages = " -> ".join(s.name for s in plan.stages)
    banner(spec.name, stages, plan.target.name, plan.gpu_note, device, proposer_line, llm_line)
    store, start_path = open_store(req, run)
    reporter = RichReporter()
    job = ProblemRun(
        plan, spec, start_path, store, run.run_dir, device, reporter, str(req.problem), **run.extra
    )
    if run.llm_note:
        console.print(f"  LLM preflight: {escape(run.llm_note)}")
    console.print(
        f"  records: {run.run_dir / Store.FILENAME}; starting from "
        f"{start_path or 'the reference (the first stage writes a first version)'}"
    )
    console.print(f"  shapes: {describe_shapes(spec, device == 'cpu')}")
    try:
        end = run_one(job)
    except KeyboardInterrupt:
        interrupted(store, run.run_dir, reporter)
    if end.outcome is None:
        raise fail(end.reason, 1)
    summary(f"{spec.name}: {stages}", store, end.run_id, end.outcome, device)
    console.print(f"best kernel: {run.run_dir / 'best_kernel.py'}")


def interrupted(store: Store, run_dir: Path, reporter: RichReporter) -> NoReturn:
    """Ctrl-C: the run marked interrupted (run_one did), its best kernel saved, and how to go on."""
    from agent.commands.interrupt import save_interrupted

    reporter.end()
    runs = store.runs()  # run_one started the run and marked it interrupted
    lines = save_interrupted(store, runs[-1]["id"], run_dir) if runs else ["interrupted before the start"]
    for line in lines:
        console.print(line, markup=False, highlight=False)
    raise typer.Exit(130) from None


def summary(title: str, store: Store, run_id: int, outcome: PipelineOutcome, device: str) -> None:
    """The run's history table, its notes, and the best kernel against the start."""
    from agent.commands.run_problem import NOTHING_RAN, outcome_notes
    from agent.report.tables import history_table

    last, first = outcome.last, outcome.first
    notes = outcome_notes(outcome)
    console.print(history_table(store.history(run_id), title, last.best.cand_id if last else None))
    if device == "cpu":
        notes.append(
            "no GPU: candidates were checked for correctness in Triton's interpreter but cannot be timed, "
            "so they cannot be ranked; the starting kernel stays the best"
        )
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")
    if last is None or first is None:
        raise fail(NOTHING_RAN, 1)
    evaluations = sum(o.evaluations for _, o, _ in outcome.stages if o is not None)
    if last.best.median_ms is not None and first.start.median_ms is not None:
        t = last.best.result.timings
        ratios = ", ".join(
            f"{v:.2f}x {name}"
            for name, v in (("eager", t.speedup_eager), ("torch.compile", t.speedup_compiled))
            if v is not None
        )
        roof = f"; {t.pct_roofline:.1f}% of roofline" if t.pct_roofline is not None else ""
        console.print(
            f"best: #{last.best.cand_id} {last.best.median_ms:.3f} ms (start {first.start.median_ms:.3f} ms; "
            f"{ratios} in its own run{roof}) after {evaluations} evaluations"
        )
