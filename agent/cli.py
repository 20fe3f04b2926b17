"""The `ncu-agent` command line."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agent import options as opt
from agent.config import RunOptions
from agent.evaluation.evaluate import evaluate
from agent.pipeline import PipelineError, PipelineOutcome, resume_point
from agent.problem import ProblemError, load_problem
from agent.profiling.ncu import MetricSetError, load_metric_set, profile_candidates, profile_report_table
from agent.profiling.read import ranked_rules, read_report, seed_json
from agent.profiling.target import ProfileCandidate
from agent.prompt.gpus import find_gpu, resolve_gpu
from agent.prompt.render import PromptContext, render_prompt
from agent.prompt.stages import load_stage
from agent.records import EvalResult
from agent.report.batch import batch_run_dirs, is_batch_dir
from agent.report.data import is_run_dir, load_run_dir
from agent.report.export import (
    batch_table,
    compare_table,
    diff_text,
    export_rows,
    find_candidate,
    to_csv,
    to_json,
)
from agent.report.tables import HEADERS, history_table, result_cells
from agent.run_setup import NOTHING_RAN, ProblemRun, RunSetupError, outcome_notes, plan_run, run_one
from agent.store import Store

app = typer.Typer(
    help="Make Triton kernels faster, and prove it: prompt, propose, verify, time, profile with ncu.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


@app.callback()
def _start(
    ctx: typer.Context,
    require_sandbox: Annotated[
        bool,
        typer.Option(
            "--require-sandbox",
            envvar="NCU_AGENT_REQUIRE_SANDBOX",
            help="Refuse to run candidates without bubblewrap's sandbox (see docs/anticheat.md).",
        ),
    ] = False,
) -> None:
    """Before any command: the LLM key out of reach of what runs later (agent.secrets), the boxes of
    workers of dead runs swept, and, before evaluating, the sandbox and the project's bytecode checked."""
    import os

    from agent.evaluation import confine
    from agent.secrets import protect_process

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
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _load(problem: str):
    try:
        return load_problem(problem)
    except ProblemError as e:
        raise _fail(str(e)) from None


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RichReporter:
    """Progress bars and one line per evaluated candidate."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task = None

    def info(self, message: str) -> None:
        console.print(f"[dim]{message}[/dim]")

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
        reason = "" if result.accepted else f": {result.reason[:100]}"
        console.print(
            f"  #{cand_id} {label}: [{colour}]{result.status.value}[/{colour}]{reason} ({timing}, "
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
    console.print(f"  LLM: {llm}")
    from agent.evaluation.confine import isolation

    console.print(f"  isolation: {isolation().label}")


@app.command()
@opt.run_options_command()
def run(
    problem: ProblemArg,
    from_stage: Annotated[
        str | None, typer.Option(help="Resume the pipeline at this stage (with --run-dir of an earlier run).")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Where records go (default runs/PROBLEM-TIME).")
    ] = None,
    *,
    options: RunOptions,
) -> None:
    """Optimize a problem's starting kernel stage by stage, and write the best kernel."""
    spec = _load(problem)
    if spec.kernel_path is None:
        raise _fail(
            f"{spec.reference_path}: no starting Triton kernel; a first version needs the LLM proposer"
        )
    run_dir = run_dir or Path("runs") / f"{spec.name}-{datetime.now():%Y%m%d-%H%M%S}"
    try:
        plan = plan_run(options)
        plan.stages, resume_from = resume_point(run_dir, plan.stages, from_stage)
    except (RunSetupError, PipelineError) as e:
        raise _fail(str(e)) from None
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
    run_dir.mkdir(parents=True, exist_ok=True)
    store = Store.open_dir(run_dir)
    start_path = resume_from or spec.kernel_path
    console.print(f"  records: {run_dir / Store.FILENAME}; starting from {start_path}")
    end = run_one(
        ProblemRun(plan, spec, start_path, store, run_dir, device, RichReporter(), problem=str(problem))
    )
    if end.outcome is None:
        raise _fail(end.reason, 1)
    _summary(
        f"{spec.name}: {' -> '.join(s.name for s in plan.stages)}", store, end.run_id, end.outcome, device
    )
    console.print(f"best kernel: {run_dir / 'best_kernel.py'}")


def _summary(title: str, store: Store, run_id: int, outcome: PipelineOutcome, device: str) -> None:
    """The run's history table, its notes, and the best kernel against the start."""
    last, first = outcome.last, outcome.first
    notes = outcome_notes(outcome)
    console.print(history_table(store.history(run_id), title, last.best.cand_id if last else None))
    if device == "cpu":
        notes.append(
            "no GPU: candidates were checked for correctness in Triton's interpreter but cannot be timed, "
            "so they cannot be ranked; the starting kernel stays the best"
        )
    for note in notes:
        console.print(f"[yellow]note:[/yellow] {note}")
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
) -> None:
    """Check one candidate: exit 0 when accepted, 1 when rejected, 2 for bad usage or a bad problem, 3 when
    the CPU cannot decide (a GPU-only branch)."""
    from agent.evaluation.verdicts import exit_code

    spec = _load(problem)
    result = evaluate(spec, candidate.read_text(), _device(), seeds=tuple(range(seeds)), timeout_s=timeout)
    if as_json:
        console.print_json(result.model_dump_json())
    else:
        colour = "green" if result.accepted else "red"
        console.print(f"[{colour}]{result.status.value}[/{colour}] {result.reason}")
        for c in result.checks:
            if not c.passed or c.detail:
                console.print(f"  {'ok ' if c.passed else 'FAIL'} {c.name}: {c.detail}")
        if result.timings and result.timings.skipped_reason:
            console.print(f"  timing: {result.timings.skipped_reason}")
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
    metrics: Annotated[Path | None, typer.Option(help="ncu metrics as JSON (the seed's form).")] = None,
    code: Annotated[
        Path | None, typer.Option(help="Kernel source (default: the problem's starting kernel).")
    ] = None,
) -> None:
    """Print the prompt a stage would send for a problem."""

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

    try:
        mset = load_metric_set(metric_set)
    except MetricSetError as e:
        raise _fail(str(e)) from None
    if report is None:
        if candidate is None or problem is None:
            raise _fail("give a CANDIDATE and --problem, or --report FILE.ncu-rep")
        spec = _load(problem)
        out_dir.mkdir(parents=True, exist_ok=True)
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
        console.print(f"  - {line}")
    console.print(f"report: {report}")


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", exists=True, file_okay=False)],
) -> None:
    """Print a run's history table."""

    if not (run_dir / Store.FILENAME).exists():
        raise _fail(f"{run_dir}: no {Store.FILENAME} (not a run directory)")
    store = Store.open_dir(run_dir)
    for r in store.runs():
        console.print(
            f"run {r['id']}: {r['problem']} on {r['device']} ({r['gpu']}), proposer {r['proposer']}, "
            f"{r['status']}, started {r['started_at']}"
        )
        console.print(history_table(store.history(r["id"]), f"run {r['id']}"))


ReportPath = Annotated[
    Path,
    typer.Argument(
        help="A run directory, or a batch directory (a folder of run directories).",
        exists=True,
        file_okay=False,
    ),
]


@app.command()
def report(
    path: ReportPath,
    out: Annotated[Path | None, typer.Option(help="Where the page goes (default: PATH/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report of a run, or of a batch.

    A run's page: plots per stage, roofline, accepted steps (ncu metrics side by side, code diff), final
    kernel, every candidate, prompts and replies. A batch's page: the summary table, linking each problem's
    page (written too). Open it in any browser: no scripts, no network.
    """
    import sqlite3

    from rich.progress import TimeRemainingColumn

    from agent.report.page import write_batch_report, write_run_report  # matplotlib: heavy

    try:
        if is_run_dir(path):
            page = write_run_report(path, out)
        elif is_batch_dir(path):
            dirs = batch_run_dirs(path)
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            eta = (TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
            with Progress(*columns, *eta, console=console) as progress:
                task = progress.add_task("problem pages", total=len(dirs))
                page, data = write_batch_report(path, out, on_page=lambda d: progress.update(task, advance=1))
            console.print(batch_table(data))
        else:
            raise _fail(f"{path}: neither a run directory (records.sqlite) nor a batch of run directories")
    except (sqlite3.Error, OSError) as e:
        raise _fail(f"{path}: cannot write the report: {e}") from None
    console.print(f"report: {page}")


@app.command()
def diff(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.", exists=True, file_okay=False)],
    a: Annotated[int, typer.Argument(help="Candidate id (the old side).")],
    b: Annotated[int, typer.Argument(help="Candidate id (the new side).")],
    context: Annotated[int, typer.Option(help="Lines of context around each change.")] = 3,
) -> None:
    """Show the code diff of candidate A vs B, and their evaluations and ncu metrics side by side."""
    from rich.syntax import Syntax

    if not is_run_dir(run_dir):
        raise _fail(f"{run_dir}: no records.sqlite (not a run directory)")
    data = load_run_dir(run_dir)
    try:
        ca, cb = find_candidate(data, a), find_candidate(data, b)
    except KeyError as e:
        raise _fail(str(e.args[0])) from None
    text = diff_text(ca, cb, context)
    if text:
        console.print(Syntax(text, "diff", theme="ansi_dark", background_color="default"))
    else:
        console.print(f"#{a} and #{b} have the same source")
    console.print(compare_table(ca, cb))


@app.command()
def export(
    path: ReportPath,
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
    source: Annotated[bool, typer.Option("--source", help="Include each candidate's source.")] = False,
) -> None:
    """Export every candidate with its evaluation and ncu metrics (flattened) as CSV or JSON."""

    if fmt not in ("csv", "json"):
        raise _fail(f"--format {fmt!r}: choose csv or json")
    if not is_run_dir(path) and not batch_run_dirs(path):
        raise _fail(f"{path}: neither a run directory (records.sqlite) nor a batch of run directories")
    rows = export_rows(path, include_source=source)
    text = to_csv(rows) if fmt == "csv" else to_json(rows)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"{len(rows)} candidates -> {out}")


# `ncu-agent batch`: many problems, every GPU, resumable (its options and body live in agent/batch/cli.py).
from agent.batch.cli import batch  # noqa: E402

app.command()(batch)

# `ncu-agent experiment`: arms x problems x samples, paired statistics (agent/experiment/cli.py).
from agent.experiment.cli import experiment  # noqa: E402

app.command()(experiment)


def main() -> None:  # pragma: no cover
    app()
