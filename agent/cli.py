"""The `ncu-agent` command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent.commands import options as opt
from agent.commands.checks import checked, fail, new_dir, output_dir
from agent.config import RunOptions
from agent.evaluation.torch_policy import describe as describe_policy
from agent.evaluation.torch_policy import merged

# The modules below import torch, triton, openai or matplotlib (seconds on a small machine): each command
# imports them after checking its flags, so help pages and refusals answer at once.
if TYPE_CHECKING:
    from agent.pipeline import PipelineOutcome
    from agent.records import EvalResult
    from agent.store import Store

app = typer.Typer(
    help="Make Triton kernels faster, and prove it: prompt, propose, verify, time, profile with ncu.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts name [llm] tables and [x, y] lists: print them as written
)
# Logs and CI are not terminals: give tables room instead of rich's 80-column default there.
console = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

ProblemArg = Annotated[
    str,
    typer.Argument(
        help="A problem folder (see kernels/README.md), a KernelBench .py "
        "file, or the name of a bundled problem."
    ),
]


_EVALUATING = {"run", "check", "batch", "experiment"}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"ncu-agent {version('ncu-agent')}")
        except PackageNotFoundError:  # run from a checkout that was never installed
            typer.echo("ncu-agent (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _start(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    require_sandbox: Annotated[
        bool,
        typer.Option(
            "--require-sandbox",
            envvar="NCU_AGENT_REQUIRE_SANDBOX",
            help="Refuse to run candidates without bubblewrap's sandbox (see docs/anticheat.md).",
        ),
    ] = False,
) -> None:
    """Before any command: the LLM key out of reach of what runs later (agent.evaluation.secrets), the
    boxes of workers of dead runs swept, and, before evaluating, the sandbox and the project's bytecode
    checked."""
    import os

    from agent.evaluation import confine
    from agent.evaluation.secrets import protect_process

    protect_process()
    confine.sweep()
    if ctx.invoked_subcommand not in _EVALUATING:
        return
    from agent.evaluation.lockdown import planted_bytecode

    for pyc in planted_bytecode():
        pyc.unlink(missing_ok=True)
        err.print(f"[yellow]warning:[/yellow] removed {pyc}: bytecode that does not come from its source")
    if require_sandbox:
        os.environ["NCU_AGENT_REQUIRE_SANDBOX"] = "1"  # a batch's jobs are this tool again
        isolation = confine.isolation()
        if not isolation.full:
            raise _fail(f"--require-sandbox: isolation is {isolation.label}")


def _fail(message: str, code: int = 2) -> typer.Exit:
    return fail(message, code)


def _load(problem: str, small_shapes: str | None = None):
    from agent.problem import ProblemError, load_problem
    from agent.start.small_shapes import parse_shapes_flag

    try:
        return load_problem(problem, parse_shapes_flag(small_shapes) if small_shapes else None)
    except ValueError as e:
        raise _fail(str(e)) from None
    except ProblemError as e:
        raise _fail(str(e)) from None


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _status(message: str) -> None:
    """A retry or a wait, shown as it happens (LLM requests can wait minutes)."""
    console.print(f"[yellow]{message}[/yellow]")


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


def _banner(
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


@app.command()
@opt.run_options_command()
def run(
    problem: Annotated[
        str | None,
        typer.Argument(
            help="A problem folder (see kernels/README.md), a KernelBench .py file, or the name of a "
            "bundled problem (not with --resume)."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the killed or interrupted run of this run directory, with the options it was "
            "started with (nothing it recorded is evaluated, profiled or asked again).",
            file_okay=False,
        ),
    ] = None,
    from_stage: Annotated[
        str | None, typer.Option(help="Resume the pipeline at this stage (with --run-dir of an earlier run).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where records go (default runs/PROBLEM-TIME).")
    ] = None,
    start: Annotated[
        Path | None,
        typer.Option(
            help="Start from this ModelNew file instead of the problem's kernel.py (a bare reference too).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    small_shapes: opt.SmallShapes = None,
    *,
    options: RunOptions,
) -> None:
    """Optimize a problem's starting kernel stage by stage, and write the best kernel. A problem with no
    starting kernel (and no --start) begins with the first stage, which needs --llm."""
    checked(new_dir, run_dir, "--run-dir")  # before plan_run: finding the GPU imports torch
    from agent.commands.resume import ResumeError, find_resumable

    found = None
    if resume is not None:
        if problem is not None:
            raise _fail("give either PROBLEM (a new run) or --resume RUN_DIR, not both")
        try:
            found = find_resumable(resume)
        except ResumeError as e:
            raise _fail(str(e)) from None
        options, problem, run_dir = found.options, found.problem, resume
    elif problem is None:
        raise _fail("give the PROBLEM to run, or --resume RUN_DIR")
    from agent.commands.run_setup import ProblemRun, RunSetupError, check_llm, plan_run, run_one

    try:
        plan_run(options)  # the flags alone, refused before the problem's reference loads torch
    except RunSetupError as e:
        raise _fail(str(e)) from None
    from agent.llm.client import EndpointFailed
    from agent.pipeline import PipelineError, resume_point
    from agent.problem import describe_shapes
    from agent.store import Store

    spec = _load(problem, small_shapes)
    spec.allow_torch = merged(spec.allow_torch, options.allow_torch)
    if start is not None:
        spec.kernel_path = start.resolve()
    run_dir = run_dir or Path("runs") / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        plan = plan_run(options, has_kernel=spec.kernel_path is not None)
        if found is None:
            plan.stages, resume_from = resume_point(run_dir, plan.stages, from_stage)
        llm_note = check_llm(plan, _status)
    except (RunSetupError, PipelineError) as e:
        raise _fail(str(e)) from None
    except EndpointFailed as e:
        raise _fail(str(e), 1) from None
    checked(output_dir, run_dir, "--run-dir")
    device = _device()
    proposer_line, llm_line = plan.describe_proposer()
    _banner(
        spec.name,
        " -> ".join(s.name for s in plan.stages),
        plan.target.name,
        plan.gpu_note,
        device,
        proposer_line,
        llm_line,
    )
    if found is not None:
        from agent.batch.hooks import replay_hooks
        from agent.batch.resume import ReplayStore

        store: Store = ReplayStore(run_dir / Store.FILENAME, found.run_id)
        start_path, extra = found.start, {"hooks": replay_hooks(store), "run_id": found.run_id}
        console.print(f"  continuing run #{found.run_id}: what it recorded is replayed, not run again")
    else:
        store, start_path, extra = Store.open_dir(run_dir), resume_from or spec.kernel_path, {}
    reporter = RichReporter()
    job = ProblemRun(plan, spec, start_path, store, run_dir, device, reporter, str(problem), **extra)
    if llm_note:
        console.print(f"  LLM preflight: {escape(llm_note)}")
    console.print(
        f"  records: {run_dir / Store.FILENAME}; starting from "
        f"{start_path or 'the reference (the first stage writes a first version)'}"
    )
    console.print(f"  shapes: {describe_shapes(spec, device == 'cpu')}")
    try:
        end = run_one(job)
    except KeyboardInterrupt:
        from agent.commands.interrupt import save_interrupted

        reporter.end()
        runs = store.runs()  # run_one started the run and marked it interrupted
        lines = save_interrupted(store, runs[-1]["id"], run_dir) if runs else ["interrupted before the start"]
        for line in lines:
            console.print(line, markup=False, highlight=False)
        raise typer.Exit(130) from None
    if end.outcome is None:
        raise _fail(end.reason, 1)
    _summary(
        f"{spec.name}: {' -> '.join(s.name for s in plan.stages)}", store, end.run_id, end.outcome, device
    )
    console.print(f"best kernel: {run_dir / 'best_kernel.py'}")


def _summary(title: str, store: Store, run_id: int, outcome: PipelineOutcome, device: str) -> None:
    """The run's history table, its notes, and the best kernel against the start."""
    from agent.commands.run_setup import NOTHING_RAN, outcome_notes
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
        raise _fail(NOTHING_RAN, 1)
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


@app.command()
def check(
    candidate: Annotated[
        Path, typer.Argument(help="A Python file defining ModelNew.", exists=True, dir_okay=False)
    ],
    problem: Annotated[str, typer.Option("--problem", help="The problem to check against.")],
    seeds: Annotated[int, typer.Option(help="How many fresh input draws.")] = 3,
    timeout: Annotated[float | None, typer.Option(help="Seconds the check may take.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print only the result, no progress lines.")] = False,
    small_shapes: opt.SmallShapes = None,
    allow_torch: opt.AllowTorch = None,
) -> None:
    """Check one candidate: exit 0 when accepted, 1 when rejected, 2 for bad usage or a bad problem, 3 when
    the CPU cannot decide (a GPU-only branch)."""
    from agent.commands.progress import PhaseLog
    from agent.evaluation.verdicts import exit_code

    allowed = opt.allow_torch_flag(allow_torch)
    phase = PhaseLog(quiet)
    phase(f"loading the problem {problem} (imports torch and its reference)")
    spec = _load(problem, small_shapes)
    spec.allow_torch = merged(spec.allow_torch, allowed)
    from agent.evaluation.evaluate import evaluate
    from agent.problem import describe_shapes
    from agent.report.tables import HEADERS, result_cells

    device = _device()
    where = "on the GPU, then timing" if device == "cuda" else "in Triton's interpreter (CPU: not timed)"
    phase(f"static checks, then a worker: compile and compare on {seeds} input draws {where}")
    result = evaluate(spec, candidate.read_text(), device, seeds=tuple(range(seeds)), timeout_s=timeout)
    phase(f"done: {result.status.value} in {result.wall_s:.1f} s of evaluation")
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        colour = "green" if result.accepted else "red"
        console.print(f"  shapes: {describe_shapes(spec, device == 'cpu')}")
        console.print(f"  torch ops allowed: {describe_policy(spec.allow_torch)}")
        console.print(f"[{colour}]{result.status.value}[/{colour}] {escape(result.reason)}")
        for c in result.checks:
            if not c.passed or c.detail:
                console.print(f"  {'ok ' if c.passed else 'FAIL'} {c.name}: {escape(c.detail)}")
        if result.timings and result.timings.skipped_reason:
            console.print(f"  timing: {escape(result.timings.skipped_reason)}")
        elif result.timings:
            console.print(
                "  " + "  ".join(f"{h}={v}" for h, v in zip(HEADERS[5:], result_cells(result), strict=True))
            )
    raise typer.Exit(exit_code(result.status))


@app.command()
def render(
    problem: ProblemArg,
    stage: Annotated[str, typer.Option(help="The stage whose prompt to render.")] = "micro",
    gpu: opt.Gpu = None,
    metrics: Annotated[
        Path | None,
        typer.Option(
            help="ncu metrics as JSON (the seed's form): `ncu-agent profile --report FILE --json` makes one.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    code: Annotated[
        Path | None,
        typer.Option(
            help="Kernel source (default: the problem's starting kernel).", exists=True, dir_okay=False
        ),
    ] = None,
) -> None:
    """Print the prompt a stage would send for a problem."""
    from agent.prompt.gpus import find_gpu, resolve_gpu
    from agent.prompt.render import PromptContext, render_prompt
    from agent.prompt.stages import load_stage

    spec = _load(problem)
    source_path = code or spec.kernel_path
    if source_path is None:
        raise _fail("the problem has no starting kernel: give --code")
    try:
        target = resolve_gpu(gpu) or find_gpu("h200")
        stage_spec = load_stage(stage)
        metrics_data = json.loads(metrics.read_text()) if metrics else None
    except (KeyError, ValueError, OSError) as e:
        raise _fail(str(e)) from None
    ctx = PromptContext(
        gpu=target,
        stage=stage_spec,
        code=source_path.read_text(),
        metrics=metrics_data,
        metrics_unavailable_reason=None if metrics else "no metrics given (--metrics)",
    )
    typer.echo(render_prompt(ctx), nl=False)


@app.command()
def profile(
    candidate: Annotated[
        Path | None,
        typer.Argument(
            help="A candidate file to profile (needs a GPU and ncu).", exists=True, dir_okay=False
        ),
    ] = None,
    problem: Annotated[
        str | None, typer.Option("--problem", help="The problem the candidate solves.")
    ] = None,
    metric_set: Annotated[str, typer.Option("--set", help="ncu metric set (see profiles/).")] = "seed",
    report: Annotated[
        Path | None,
        typer.Option(help="Read an existing .ncu-rep instead of profiling.", exists=True, dir_okay=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the seed's JSON form.")] = False,
    out_dir: Annotated[Path, typer.Option(help="Where the report goes.")] = Path("runs/profiles"),
) -> None:
    """Profile one candidate with ncu, or print the metrics of an existing report (works without a GPU)."""
    from agent.profiling.ncu import MetricSetError, load_metric_set, profile_candidates, profile_report_table
    from agent.profiling.read import ranked_rules, read_report, seed_json
    from agent.profiling.target import ProfileCandidate

    try:
        mset = load_metric_set(metric_set)
    except MetricSetError as e:
        raise _fail(str(e)) from None
    if report is None:
        if candidate is None or problem is None:
            raise _fail("give a CANDIDATE and --problem, or --report FILE.ncu-rep")
        checked(output_dir, out_dir, "--out-dir")
        spec = _load(problem)
        (result,) = profile_candidates(
            spec,
            [ProfileCandidate(source=candidate.read_text(), pinned_configs={})],
            mset,
            out_dir,
            name=candidate.stem,
        )
        if not result.ok or result.report_path is None:
            raise _fail(f"profiling failed ({result.error_kind}): {result.error}", 1)
        report = result.report_path
    try:
        prof = read_report(report)
    except Exception as e:  # a report we cannot read is the user's input error, not a crash
        raise _fail(f"{report}: cannot read the report: {e}") from None
    present = {m for launch in prof.launches for m in launch.metrics}
    shown = [m for m in mset.display_metrics if m in present] or None  # the set's metrics, else all
    if as_json:
        typer.echo(json.dumps(seed_json(prof, shown), indent=2))
        return
    console.print(profile_report_table(prof, shown))
    for line in ranked_rules(prof):
        console.print(f"  - {escape(line)}")
    console.print(f"report: {report}")


# `ncu-agent show`, `report`, `diff`, `export`: reading a run's records (agent/report/cli.py).
from agent.report.cli import diff, export, report, show  # noqa: E402

for _reading in (show, report, diff, export):
    app.command()(_reading)


# `ncu-agent batch`: many problems, every GPU, resumable (its options and body live in agent/batch/cli.py).
from agent.batch.cli import batch  # noqa: E402

app.command()(batch)

# `ncu-agent experiment`: arms x problems x samples, paired statistics (agent/experiment/cli.py).
from agent.experiment.cli import experiment  # noqa: E402

app.command()(experiment)


def main() -> None:  # pragma: no cover
    app()
